/*
 * soak: many services for a long time, to show what running for hours
 * would: memory that grows, runs that go missing, lateness that builds
 * up, descriptors or threads that leak.
 *
 * N services (default 100) at interval I (default 1 ms) run in a group
 * without signal handling for --duration seconds (default 600), then the
 * group is stopped. Missed runs are the due points that found no run:
 * under LSVC_MISSED_DELAY each wake more than I late moves the grid.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SOAK_SERVICES 100
#define SOAK_INTERVAL_NS NS_PER_MS
#define SOAK_SECONDS 600.0

struct soak_svc {
    atomic_int_fast64_t max_late_ns;
};

static int soak_run_once(lsvc *svc, void *arg)
{
    struct soak_svc *s = arg;
    struct timespec due;
    int64_t now = now_ns();

    if (lsvc_scheduled_start(svc, &due) == 0) {
        int64_t late = now - ts_to_ns(&due);
        int_fast64_t seen = atomic_load(&s->max_late_ns);
        while (late > seen && !atomic_compare_exchange_weak(&s->max_late_ns, &seen, late))
            ;
    }
    return 0;
}

static const lsvc_class soak_class = {
    .name = "soak",
    .run_once = soak_run_once,
};

struct soak_figures {
    int64_t rss_start, rss_end;
    uint64_t loops, expected, overruns, errors;
    int64_t max_late_ns;
    int fds_before, fds_end, threads_before, threads_running, threads_end;
};

static void soak_print(const struct bench_opts *o, int n, int64_t interval_ns,
                       double seconds, const struct soak_figures *f)
{
    if (o->json) {
        printf("{\"bench\": \"soak\", \"interval_ns\": %lld, \"services\": %d, "
               "\"duration_s\": %.1f, \"rss_start_bytes\": %lld, \"rss_end_bytes\": %lld, "
               "\"loops\": %llu, \"expected_loops\": %llu, \"missed\": %llu, "
               "\"overruns\": %llu, \"errors\": %llu, \"max_lateness_ns\": %lld, "
               "\"fds_before\": %d, \"fds_end\": %d, \"threads_before\": %d, "
               "\"threads_running\": %d, \"threads_end\": %d}\n",
               (long long)interval_ns, n, seconds, (long long)f->rss_start,
               (long long)f->rss_end, (unsigned long long)f->loops,
               (unsigned long long)f->expected,
               (unsigned long long)(f->expected > f->loops ? f->expected - f->loops : 0),
               (unsigned long long)f->overruns, (unsigned long long)f->errors,
               (long long)f->max_late_ns, f->fds_before, f->fds_end,
               f->threads_before, f->threads_running, f->threads_end);
        return;
    }
    printf("== soak: %d services at %lld us for %.0f s\n", n,
           (long long)(interval_ns / NS_PER_US), seconds);
    printf("   RSS            %.1f MiB after start, %.1f MiB at the end (%+.1f KiB)\n",
           f->rss_start / 1048576.0, f->rss_end / 1048576.0,
           (f->rss_end - f->rss_start) / 1024.0);
    printf("   runs           %llu of %llu due points (%.4f %% missed), %llu overruns, "
           "%llu errors\n", (unsigned long long)f->loops, (unsigned long long)f->expected,
           f->expected ? 100.0 * (double)(f->expected > f->loops ? f->expected - f->loops : 0) /
                             (double)f->expected : 0.0,
           (unsigned long long)f->overruns, (unsigned long long)f->errors);
    printf("   max lateness   %.1f us\n", f->max_late_ns / 1e3);
    printf("   descriptors    %d before, %d at the end\n", f->fds_before, f->fds_end);
    printf("   threads        %d before, %d running, %d at the end\n",
           f->threads_before, f->threads_running, f->threads_end);
}

int bench_soak(const struct bench_opts *o)
{
    int n = o->services > 0 ? o->services : SOAK_SERVICES;
    int64_t interval_ns = o->interval_ns > 0 ? o->interval_ns : SOAK_INTERVAL_NS;
    double seconds = o->duration_s > 0 ? o->duration_s : o->quick ? 10.0 : SOAK_SECONDS;
    struct block_spec spec = spec_from(o, interval_ns, 1, (size_t)n, 0);
    lsvc_options opts = ours_options(&spec);
    struct soak_figures f = { .rss_start = 0 };
    struct soak_svc *state = calloc((size_t)n, sizeof *state);
    lsvc **svcs = calloc((size_t)n, sizeof *svcs);
    lsvc_class *classes = classes_numbered(&soak_class, (size_t)n);
    lsvc_group *g = NULL;
    int rc = state && svcs && classes ? lsvc_group_create(&g) : ENOMEM;

    opts.loop_seconds = (double)interval_ns / 1e9;
    for (int i = 0; rc == 0 && i < n; i++)
        if ((rc = lsvc_create(&svcs[i], &classes[i], &state[i], &opts)) == 0)
            rc = lsvc_group_add(g, svcs[i]);
    if (rc == 0)
        rc = lsvc_group_set_signals(g, NULL);
    watchdog_arm("soak", seconds + 120);
    /* After the watchdog's thread, which outlives the soak. */
    f.fds_before = proc_fds();
    f.threads_before = proc_count_entries("/proc/self/task");
    int64_t t0 = now_ns();
    if (rc == 0 && (rc = lsvc_group_start(g)) == 0) {
        struct timespec settle = ns_to_ts(t0 + NS_PER_SEC);
        struct timespec end = ns_to_ts(t0 + (int64_t)(seconds * 1e9));

        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &settle, NULL);
        f.rss_start = statm_resident_pages() * sysconf(_SC_PAGESIZE);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &end, NULL) == EINTR)
            ;
        f.rss_end = statm_resident_pages() * sysconf(_SC_PAGESIZE);
        f.threads_running = proc_count_entries("/proc/self/task");
        lsvc_group_stop(g);
        rc = lsvc_group_wait(g);
    }
    double ran_s = (double)(now_ns() - t0) / 1e9;
    for (int i = 0; i < n && svcs[i] != NULL; i++) {
        lsvc_stats st;

        lsvc_get_stats(svcs[i], &st);
        f.loops += st.loops;
        f.overruns += st.overruns;
        f.errors += st.errors;
        if (state[i].max_late_ns > f.max_late_ns)
            f.max_late_ns = state[i].max_late_ns;
    }
    f.expected = (uint64_t)n * (uint64_t)(seconds * 1e9 / (double)interval_ns);
    if (g != NULL)
        lsvc_group_destroy(g);
    for (int i = 0; i < n && svcs[i] != NULL; i++)
        lsvc_destroy(svcs[i]);
    free(svcs);
    free(classes);
    free(state);
    f.fds_end = proc_fds();
    f.threads_end = proc_count_entries("/proc/self/task");
    if (rc != 0) {
        fprintf(stderr, "loopsvc-bench: soak: %s\n", strerror(rc));
        return 1;
    }
    soak_print(o, n, interval_ns, ran_s < seconds ? ran_s : seconds, &f);
    return 0;
}
