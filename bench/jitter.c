/*
 * jitter: how late each wake-up is, ours next to the baselines.
 *
 * The impls run in alternating blocks (A B C ... A B C ...), so that a
 * change in machine speed during the run hits every impl alike; their
 * samples are pooled per impl. cyclictest, a separate process, runs as
 * one block of its own at the end.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_IMPLS 8

/* The impls jitter compares, in the order their blocks run. */
static size_t jitter_impls(const struct bench_opts *o, int64_t interval_ns,
                           const struct impl **out)
{
    const char *why;
    size_t n = 0;

    if (o->modes & MODE_CONDVAR)
        out[n++] = &IMPL_CONDVAR;
    if (o->modes & MODE_PRECISE)
        out[n++] = &IMPL_PRECISE;
    out[n++] = &IMPL_NANOSLEEP;
    out[n++] = &IMPL_TIMERFD;
    if (posix_timer_usable(&why))
        out[n++] = &IMPL_POSIX_TIMER;
    else if (!o->json)
        printf("   posix_timer: left out (%s)\n", why);
    if (libuv_usable(interval_ns, &why))
        out[n++] = &IMPL_LIBUV;
    else if (!o->json)
        printf("   libuv: left out (%s)\n", why);
    return n;
}

/* Runs one block of impl into its pool. A baseline that fails is left
 * out with a message; ours failing fails the bench. */
static int jitter_block(const struct impl *impl, const struct block_spec *spec,
                        struct pool *pool, long *slack, char *note, size_t note_len)
{
    struct block_info info;
    int rc = run_block(impl, spec, pool, &info);

    if (rc != 0) {
        fprintf(stderr, "loopsvc-bench: jitter: %s failed; left out\n", impl->name);
        return rc;
    }
    *slack = info.slack_ns;
    if (info.note[0] != '\0')
        snprintf(note, note_len, "%s", info.note);
    return 0;
}

int bench_jitter(const struct bench_opts *o)
{
    int64_t interval = o->interval_ns ? o->interval_ns : NS_PER_MS;
    uint64_t loops = opt_loops(o, interval, 2000, 500);
    int blocks = opt_blocks(o, 10, 5, loops);
    size_t k = o->services ? (size_t)o->services : 1;
    const struct impl *impls[MAX_IMPLS];
    struct pool pools[MAX_IMPLS];
    struct result results[MAX_IMPLS];
    long slack[MAX_IMPLS];
    bool failed[MAX_IMPLS] = { false };
    char note[160] = "";
    int rc = 0;

    if (!o->json) {
        char what[160];
        snprintf(what, sizeof what, "wake-up lateness, %zu service(s) per impl, %llu "
                 "wakes each in %d alternating blocks", k, (unsigned long long)loops,
                 blocks);
        print_title("jitter", o, interval, what);
        print_slack_note(o);
    }
    size_t n = jitter_impls(o, interval, impls);
    bool cyclictest = cyclictest_found();
    if (cyclictest)
        impls[n] = &IMPL_CYCLICTEST;
    else if (!o->json)
        printf("   cyclictest: left out (not found on PATH; it is in rt-tests)\n");
    memset(pools, 0, sizeof pools);
    memset(slack, 0, sizeof slack);
    double nominal = (double)(n + cyclictest) * (double)loops * (double)interval / 1e9;
    watchdog_arm("jitter", 3 * nominal + 60);
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "jitter: about %.0f s\n", nominal * 1.1 + 1);

    for (int b = 0; b < blocks; b++) {
        size_t ticks = loops / (uint64_t)blocks + ((uint64_t)b < loops % (uint64_t)blocks);
        struct block_spec spec = spec_from(o, interval, ticks, k, 0);

        for (size_t i = 0; i < n; i++)
            if (!failed[i])
                failed[i] = jitter_block(impls[i], &spec, &pools[i], &slack[i],
                                         note, sizeof note) != 0;
    }
    if (cyclictest) {
        struct block_spec spec = spec_from(o, interval, loops, k, 0);
        failed[n] = jitter_block(impls[n], &spec, &pools[n], &slack[n], note,
                                 sizeof note) != 0;
        n++;
    }

    size_t shown = 0;
    struct pool *shown_pools[MAX_IMPLS];
    for (size_t i = 0; i < n; i++) {
        if (failed[i]) {
            if (strncmp(impls[i]->name, "loopsvc-", 8) == 0 ||
                impls[i] == &IMPL_NANOSLEEP)
                rc = 1;
            continue;
        }
        result_from_pool(&results[shown], impls[i]->name, (int)k, slack[i], &pools[i]);
        shown_pools[shown++] = &pools[i];
    }
    if (o->json) {
        json_begin("jitter", o, interval, (int)k);
        json_results(results, shown);
        json_ratios(results, shown, false);
        json_end();
    } else {
        print_results(results, shown, 0);
        if (note[0] != '\0')
            printf("   %s\n", note);
        print_ratios(results, shown);
    }
    if (o->svg != NULL) {
        char title[160];
        snprintf(title, sizeof title, "Wake-up lateness at %.0f us, %zu service(s), "
                 "load %d%s", (double)interval / 1e3, k, o->load,
                 o->prio > 0 ? ", SCHED_FIFO" : "");
        if (svg_write(o->svg, title, results, shown_pools, shown) != 0)
            rc = 1;
    }
    for (size_t i = 0; i < n; i++)
        pool_free(&pools[i]);
    return rc;
}
