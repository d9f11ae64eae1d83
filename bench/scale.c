/*
 * scale: what N services cost next to N raw clock_nanosleep threads.
 *
 * For each N, the impls alternate blocks. During each block a sampler
 * thread reads the process's CPU time (getrusage, user + system, less what
 * the --load threads burnt) and the count of measured wakes at 25 % and at
 * 85 % of the block, when every instance has started and none has ended:
 * CPU per wake is the one difference over the other, so thread creation
 * and teardown stay out of it. RSS per idle service is /proc/self/statm
 * before and after starting N services that then sleep for an hour, in a
 * fresh process (this program's hidden rss-probe subcommand): here, glibc's
 * cache of the stacks of the threads that ran before would hide the cost.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SIZES 4
#define MAX_IMPLS 3

struct sampler {
    int64_t from_ns, to_ns;   /* the window */
    int64_t cpu_ns;           /* CPU time in it */
    uint64_t wakes;           /* measured wakes in it */
};

static void sleep_until(int64_t t)
{
    struct timespec ts = ns_to_ts(t);

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void *sampler_main(void *arg)
{
    struct sampler *s = arg;

    sleep_until(s->from_ns);
    int64_t cpu0 = process_cpu_ns() - load_cpu_ns();
    uint64_t w0 = wakes_total();
    sleep_until(s->to_ns);
    s->cpu_ns = process_cpu_ns() - load_cpu_ns() - cpu0;
    s->wakes = wakes_total() - w0;
    return NULL;
}

/* One block with the CPU window around its middle. */
static int scale_block(const struct impl *impl, const struct block_spec *spec,
                       struct pool *pool, struct block_info *info,
                       struct sampler *win)
{
    int64_t span = (int64_t)(spec->ticks + 1) * spec->interval_ns, t0 = now_ns();
    pthread_t t;
    int rc;

    win->from_ns = t0 + span / 4;
    win->to_ns = t0 + span * 85 / 100;
    if ((rc = pthread_create(&t, NULL, sampler_main, win)) != 0)
        return rc;
    rc = run_block(impl, spec, pool, info);
    pthread_join(t, NULL);
    return rc;
}

long statm_resident_pages(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident;
}

static int idle_run_once(lsvc *svc, void *arg)
{
    (void)svc;
    latch_add(arg);
    return 0;
}

static const lsvc_class idle_class = {
    .name = "idlebench",
    .loop_seconds = 3600.0,
    .run_once = idle_run_once,
};

/* Resident bytes that each of n idle, started services adds. */
static int rss_measure(size_t n, int64_t *out)
{
    lsvc_options opts;
    lsvc **svcs = calloc(n, sizeof *svcs);
    size_t made = 0, started = 0;
    struct latch ran;
    int rc = svcs ? 0 : ENOMEM;

    memset(&opts, 0, sizeof opts);
    latch_init(&ran);
    long before = statm_resident_pages();
    for (; rc == 0 && made < n; made++)
        if ((rc = lsvc_create(&svcs[made], &idle_class, &ran, &opts)) != 0)
            break;
    for (; rc == 0 && started < n; started++)
        if ((rc = lsvc_start(svcs[started], 0)) != 0)
            break;
    if (rc == 0)
        rc = latch_wait(&ran, started, now_ns() + 10 * NS_PER_SEC);
    long after = statm_resident_pages();
    *out = (after - before) * sysconf(_SC_PAGESIZE) / (long)(n ? n : 1);

    for (size_t i = 0; i < started; i++)
        lsvc_stop(svcs[i], false);
    for (size_t i = 0; i < started; i++)
        lsvc_stop_timeout(svcs[i], 5.0);
    for (size_t i = 0; i < made; i++)
        lsvc_destroy(svcs[i]);
    free(svcs);
    latch_destroy(&ran);
    if (rc != 0)
        fprintf(stderr, "loopsvc-bench: scale: idle services: %s\n", strerror(rc));
    return rc;
}

int rss_probe(const struct bench_opts *o)
{
    int64_t bytes;

    if (o->services < 1 || rss_measure((size_t)o->services, &bytes) != 0)
        return 1;
    printf("%lld\n", (long long)bytes);
    return 0;
}

static int rss_per_service(size_t n, int64_t *out)
{
    char services[24];
    char *argv[] = { "loopsvc-bench", "rss-probe", "--services", services, NULL };
    bool timed_out;
    char *text, *end;

    snprintf(services, sizeof services, "%zu", n);
    int status = child_run("/proc/self/exe", argv, 0, now_ns() + 30 * NS_PER_SEC,
                           &text, &timed_out);
    *out = text != NULL ? strtoll(text, &end, 10) : 0;
    if (status != 0 || text == NULL || end == text) {
        fprintf(stderr, "loopsvc-bench: scale: the RSS probe for %zu services failed\n", n);
        free(text);
        return EIO;
    }
    free(text);
    return 0;
}

static void print_keyed(const char *key, const size_t *sizes, const int64_t *v, size_t n)
{
    printf(", \"%s\": {", key);
    for (size_t i = 0; i < n; i++)
        printf("%s\"%zu\": %lld", i ? ", " : "", sizes[i], (long long)v[i]);
    putchar('}');
}

/* {"impl": {"N": value, ...}, ...} for one optional figure of the results. */
static void print_per_impl(const char *key, const struct result *r, size_t count,
                           bool cpu)
{
    printf(", \"%s\": {", key);
    for (size_t i = 0; i < count; i++) {
        bool first = i == 0 || strcmp(r[i - 1].impl, r[i].impl) != 0;
        bool last = i + 1 == count || strcmp(r[i + 1].impl, r[i].impl) != 0;

        if (first)
            printf("%s\"%s\": {", i ? ", " : "", r[i].impl);
        else
            printf(", ");
        if (cpu)
            printf("\"%d\": %.1f", r[i].services, r[i].cpu_ns_per_wake);
        else
            printf("\"%d\": %lld", r[i].services, (long long)r[i].start_ns);
        if (last)
            putchar('}');
    }
    putchar('}');
}

int bench_scale(const struct bench_opts *o)
{
    int64_t interval = o->interval_ns ? o->interval_ns : 10 * NS_PER_MS;
    uint64_t ticks = opt_loops(o, interval, 100, 50);
    int blocks = opt_blocks(o, 2, 1, ticks);
    size_t sizes[MAX_SIZES] = { 1, 10, 100, 1000 }, nsizes = MAX_SIZES;
    const struct impl *impls[MAX_IMPLS];
    size_t nimpls = 0;
    struct result results[MAX_IMPLS * MAX_SIZES];
    int64_t rss[MAX_SIZES];
    int rc = 0;

    if (o->services > 0) {
        sizes[0] = (size_t)o->services;
        nsizes = 1;
    }
    if (o->modes & MODE_CONDVAR)
        impls[nimpls++] = &IMPL_CONDVAR;
    if (o->modes & MODE_PRECISE)
        impls[nimpls++] = &IMPL_PRECISE;
    impls[nimpls++] = &IMPL_NANOSLEEP;
    double nominal = (double)(nsizes * nimpls * (size_t)blocks) * (double)(ticks + 1) *
                     (double)interval / 1e9;
    watchdog_arm("scale", 3 * nominal + 120);
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "scale: about %.0f s\n", nominal * 1.2 + 2);

    for (size_t s = 0; rc == 0 && s < nsizes; s++) {
        struct pool pools[MAX_IMPLS];
        int64_t cpu[MAX_IMPLS] = { 0 }, start[MAX_IMPLS] = { 0 };
        uint64_t wakes[MAX_IMPLS] = { 0 };
        long slack[MAX_IMPLS] = { 0 };
        struct block_spec spec = spec_from(o, interval, ticks, sizes[s], 0);

        memset(pools, 0, sizeof pools);
        for (int b = 0; rc == 0 && b < blocks; b++)
            for (size_t i = 0; rc == 0 && i < nimpls; i++) {
                struct block_info info;
                struct sampler win;

                rc = scale_block(impls[i], &spec, &pools[i], &info, &win);
                cpu[i] += win.cpu_ns;
                wakes[i] += win.wakes;
                start[i] += info.start_ns;
                slack[i] = info.slack_ns;
            }
        for (size_t i = 0; rc == 0 && i < nimpls; i++) {
            struct result *r = &results[i * nsizes + s];

            result_from_pool(r, impls[i]->name, (int)sizes[s], slack[i], &pools[i]);
            r->has = HAS_CPU | HAS_START;
            r->cpu_ns_per_wake = wakes[i] ? (double)cpu[i] / (double)wakes[i] : 0;
            r->start_ns = start[i] / blocks;
        }
        for (size_t i = 0; i < nimpls; i++)
            pool_free(&pools[i]);
        if (rc == 0)
            rc = rss_per_service(sizes[s], &rss[s]);
    }
    if (rc != 0) {
        fprintf(stderr, "loopsvc-bench: scale failed: %s\n", strerror(rc));
        return 1;
    }

    size_t count = nimpls * nsizes;
    if (o->json) {
        json_begin("scale", o, interval, (int)sizes[nsizes - 1]);
        json_results(results, count);
        json_ratios(results, count);
        print_per_impl("start_ns", results, count, false);
        print_per_impl("cpu_ns_per_wake", results, count, true);
        print_keyed("rss_bytes_per_service", sizes, rss, nsizes);
        json_end();
        return 0;
    }
    char what[160];
    snprintf(what, sizeof what, "N services next to N raw clock_nanosleep threads, "
             "%llu wakes each x %d block(s)", (unsigned long long)ticks, blocks);
    print_title("scale", o, interval, what);
    print_slack_note(o);
    print_results(results, count, HAS_CPU | HAS_START);
    print_ratios(results, count);
    printf("   RSS per idle started service (default stack, fresh process):");
    for (size_t s = 0; s < nsizes; s++)
        printf("  N=%zu %.1f KiB", sizes[s], (double)rss[s] / 1024);
    putchar('\n');
    return 0;
}
