/*
 * drift: does the schedule stay on its grid?
 *
 * One timer at interval I for L wakes. t0 is the first measured wake's
 * scheduled time and the grid is t0 + k*I. Reported per impl:
 *  - period error from the scheduled times, (last - first) / (L - 1)
 *    against I, in ppm; and the same from the actual start times;
 *  - final lateness: the last actual start minus t0 + (L - 1) * I;
 *  - how many wakes came more than I late: under the library's default
 *    missed-run rule (LSVC_MISSED_DELAY) each of those moves the grid.
 * Ours runs at L and at 2L: its final lateness must not grow with L,
 * while a timer that re-arms from "now" (libuv's repeating uv_timer,
 * rebase-on-start's next = actual start + I) falls behind by every wake's
 * lateness.
 * loopsvc-burst (condvar mode, LSVC_MISSED_BURST) runs every grid point,
 * so it shows the schedule itself apart from the default rule's moves.
 * loopsvc-stalled is the default rule with late wakes injected: a lease
 * that is always held, but whose every 50th answer takes 3.5 intervals.
 * Each impl also reports the closest two consecutive starts and how many
 * were closer than the interval minus the default rule's tolerance,
 * which under that rule must be none, late wakes or not.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_RUNS 10

struct drift_run {
    const struct impl *impl;
    uint64_t loops;
};

static double ppm(int64_t span_ns, uint64_t loops, int64_t interval_ns)
{
    double period = (double)span_ns / (double)(loops - 1);

    return (period - (double)interval_ns) / (double)interval_ns * 1e6;
}

static int drift_one(const struct bench_opts *o, const struct drift_run *run,
                     int64_t interval, struct result *r)
{
    struct block_spec spec = spec_from(o, interval, run->loops, 1, 0);
    struct block_info info;
    struct pool pool = { 0 };
    const struct lane *l = &info.first;
    uint64_t over = 0;
    int rc = run_block(run->impl, &spec, &pool, &info);

    if (rc == 0 && l->n < 2)
        rc = EIO;
    if (rc != 0) {
        pool_free(&pool);
        return rc;
    }
    for (size_t i = 0; i < pool.n; i++)
        over += pool.v[i] > interval;
    result_from_pool(r, run->impl->name, 1, info.slack_ns, &pool);
    r->has = HAS_DRIFT;
    r->loops = l->n;
    r->late_over_interval = over;
    r->min_gap_ns = l->min_gap;
    r->close_starts = l->close;
    r->period_error_ppm = ppm(l->last_due - l->first_due, l->n, interval);
    r->period_error_measured_ppm = ppm(l->last_start - l->first_start, l->n, interval);
    r->final_lateness_ns = l->last_start - (l->first_due + (int64_t)(l->n - 1) * interval);
    pool_free(&pool);
    return 0;
}

int bench_drift(const struct bench_opts *o)
{
    int64_t interval = o->interval_ns ? o->interval_ns : NS_PER_MS;
    uint64_t loops = opt_loops(o, interval, 2000, 1000);
    struct drift_run runs[MAX_RUNS];
    struct result results[MAX_RUNS];
    size_t nruns = 0, shown = 0;
    uint64_t total = 0;
    const char *why;
    int rc = 0;

    if (loops < 2)
        loops = 2;
    if (o->modes & MODE_CONDVAR) {
        runs[nruns++] = (struct drift_run){ &IMPL_CONDVAR, loops };
        runs[nruns++] = (struct drift_run){ &IMPL_CONDVAR, 2 * loops };
        runs[nruns++] = (struct drift_run){ &IMPL_BURST, loops };
        runs[nruns++] = (struct drift_run){ &IMPL_BURST, 2 * loops };
        runs[nruns++] = (struct drift_run){ &IMPL_STALLED, loops };
    }
    if (o->modes & MODE_PRECISE) {
        runs[nruns++] = (struct drift_run){ &IMPL_PRECISE, loops };
        runs[nruns++] = (struct drift_run){ &IMPL_PRECISE, 2 * loops };
    }
    runs[nruns++] = (struct drift_run){ &IMPL_NANOSLEEP, loops };
    runs[nruns++] = (struct drift_run){ &IMPL_REBASE, loops };
    bool uv = libuv_usable(interval, &why);
    if (uv)
        runs[nruns++] = (struct drift_run){ &IMPL_LIBUV, loops };
    for (size_t i = 0; i < nruns; i++)
        total += runs[i].loops + 1;
    watchdog_arm("drift", 3 * (double)total * (double)interval / 1e9 + 60);
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "drift: about %.0f s\n", 1.1 * (double)total * (double)interval / 1e9);

    for (size_t i = 0; i < nruns; i++) {
        if (drift_one(o, &runs[i], interval, &results[shown]) == 0) {
            shown++;
            continue;
        }
        fprintf(stderr, "loopsvc-bench: drift: %s failed\n", runs[i].impl->name);
        if (runs[i].impl->run == ours_run)
            rc = 1;
    }
    if (o->json) {
        json_begin("drift", o, interval, 1);
        json_results(results, shown);
        json_ratios(results, shown, false);
        json_end();
        return rc;
    }
    char what[160];
    snprintf(what, sizeof what, "one timer for %llu wakes (ours also %llu): period "
             "error and lateness against the grid t0 + k*I",
             (unsigned long long)loops, (unsigned long long)(2 * loops));
    print_title("drift", o, interval, what);
    if (!uv)
        printf("   libuv: left out (%s)\n", why);
    print_results(results, shown, HAS_DRIFT);
    return rc;
}
