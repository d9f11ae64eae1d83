/*
 * The schedule: the maths of lsvc__next_due and the seconds edge, then the
 * same rules seen end to end through lsvc_scheduled_start inside runs, the
 * `loops` count, the initial delay and precise mode.
 */
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define MS NS_PER_MS

/* --- lsvc__seconds_to_ns and lsvc__add_ns ---------------------------------- */

START_TEST(test_seconds_to_ns_rounds_to_nearest_ns)
{
    int64_t ns = -1;
    ck_assert_int_eq(lsvc__seconds_to_ns(1.5, false, &ns), 0);
    ck_assert_int_eq(ns, 1500 * MS);
    ck_assert_int_eq(lsvc__seconds_to_ns(0.01, false, &ns), 0);
    ck_assert_int_eq(ns, 10 * MS);
    ck_assert_int_eq(lsvc__seconds_to_ns(1e-9, false, &ns), 0);
    ck_assert_int_eq(ns, 1);
    ck_assert_int_eq(lsvc__seconds_to_ns(LSVC_MAX_SECONDS, false, &ns), 0);
    ck_assert_int_eq(ns, (int64_t)LSVC_MAX_SECONDS * NS_PER_S);
    ck_assert_int_eq(lsvc__seconds_to_ns(0, true, &ns), 0);
    ck_assert_int_eq(ns, 0);
}
END_TEST

START_TEST(test_seconds_to_ns_rejects_out_of_range)
{
    const double bad[] = {NAN, INFINITY, -INFINITY, -1.0, -1e-9,
                          LSVC_MAX_SECONDS * 2, LSVC_MAX_SECONDS + 1};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ns = 0;
        ck_assert_msg(lsvc__seconds_to_ns(bad[i], true, &ns) == EINVAL,
                      "%g accepted", bad[i]);
    }
    int64_t ns = 0;
    /* Zero, or less than a nanosecond, is no interval at all. */
    ck_assert_int_eq(lsvc__seconds_to_ns(0, false, &ns), EINVAL);
    ck_assert_int_eq(lsvc__seconds_to_ns(1e-12, false, &ns), EINVAL);
}
END_TEST

START_TEST(test_add_ns_saturates_instead_of_overflowing)
{
    ck_assert_int_eq(lsvc__add_ns(1, 2), 3);
    ck_assert_int_eq(lsvc__add_ns(10, -3), 7);
    ck_assert_int_eq(lsvc__add_ns(INT64_MAX - 5, 10), INT64_MAX);
    ck_assert_int_eq(lsvc__add_ns(INT64_MAX, LSVC_FOREVER), INT64_MAX);
}
END_TEST

/* --- lsvc__next_due ------------------------------------------------------- */

struct due_case {
    int64_t due, interval, now, next;
    uint64_t skipped;
};

static void check_next_due(lsvc_missed policy, const struct due_case *c,
                           size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t skipped = 12345;
        int64_t next = lsvc__next_due(policy, c[i].due, c[i].interval,
                                      c[i].now, &skipped);
        ck_assert_msg(next == c[i].next && skipped == c[i].skipped,
                      "policy %d, due %lld, interval %lld, now %lld: next "
                      "%lld skipped %llu, want %lld and %llu",
                      (int)policy, (long long)c[i].due,
                      (long long)c[i].interval, (long long)c[i].now,
                      (long long)next, (unsigned long long)skipped,
                      (long long)c[i].next, (unsigned long long)c[i].skipped);
    }
}

/* The header's timeline: interval 10, a run due at 10 ends at 35. */
START_TEST(test_next_due_delay_is_max_of_grid_and_now)
{
    static const struct due_case cases[] = {
        {0, 10, 3, 10, 0},   {0, 10, 10, 10, 0},  {0, 10, 11, 11, 0},
        {10, 10, 35, 35, 0}, {35, 10, 36, 45, 0}, {10, 10, 19, 20, 0},
        {1000 * MS, 20 * MS, 1001 * MS, 1020 * MS, 0},
    };
    check_next_due(LSVC_MISSED_DELAY, cases, sizeof(cases) / sizeof(*cases));
}
END_TEST

START_TEST(test_next_due_skip_keeps_grid_and_counts_skipped)
{
    static const struct due_case cases[] = {
        {0, 10, 3, 10, 0},   {0, 10, 10, 10, 0},  {10, 10, 20, 20, 0},
        {10, 10, 21, 30, 1}, {10, 10, 35, 40, 2}, {10, 10, 40, 40, 2},
        {10, 10, 41, 50, 3}, {0, 7, 100, 105, 14},
    };
    check_next_due(LSVC_MISSED_SKIP, cases, sizeof(cases) / sizeof(*cases));
}
END_TEST

START_TEST(test_next_due_burst_keeps_grid_without_skipping)
{
    static const struct due_case cases[] = {
        {0, 10, 3, 10, 0},
        {10, 10, 35, 20, 0},
        {20, 10, 35, 30, 0},
        {30, 10, 35, 40, 0},
    };
    check_next_due(LSVC_MISSED_BURST, cases, sizeof(cases) / sizeof(*cases));
}
END_TEST

/* --- End to end ----------------------------------------------------------- */

static lsvc_options interval_opts(double seconds, lsvc_missed missed)
{
    lsvc_options o = {.loop_seconds = seconds, .missed = missed};
    return o;
}

/* A probe service "Sched" with these options, whose first `slow_runs`
 * runs take `slow_ms`, run for `loops` runs and reaped. */
static struct fx *run_loops(const lsvc_options *opts,
                                     uint64_t loops, int64_t slow_ms,
                                     uint64_t slow_runs)
{
    struct fx *f = fx_new("Sched", 60, opts);
    f->p.slow_ns = slow_ms * MS;
    f->p.slow_runs = slow_runs;
    fx_start(f, loops);
    ck_assert_int_eq(lsvc_join(f->svc, 20), 0);
    ck_assert_uint_eq(f->p.runs, loops);
    return f;
}

/* Runs that took `bound` seconds at most since t0. */
static void check_quick(int64_t t0, double bound, const char *what)
{
    ck_assert_msg(seconds_since(t0) < bound, "%s took %.3f s", what,
                  seconds_since(t0));
}

START_TEST(test_first_run_is_at_once)
{
    struct fx *f = fx_new("FirstRun", 10, NULL);
    int64_t t0 = now_ns();
    fx_start(f, 0);
    fx_wait_entered(f);
    check_quick(t0, 1.0, "the first run");
}
END_TEST

START_TEST(test_initial_delay_postpones_first_run)
{
    lsvc_options o = {.initial_delay = 0.2};
    struct fx *f = fx_new("Delayed", 10, &o);
    int64_t t0 = now_ns();
    fx_start(f, 1);
    ck_assert_int_eq(lsvc_join(f->svc, 20), 0);
    ck_assert_uint_eq(f->p.runs, 1);
    ck_assert_msg(f->p.sched_ns[0] >= t0 + 200 * MS,
                  "first run scheduled %lld ns after start, want >= 0.2 s",
                  (long long)(f->p.sched_ns[0] - t0));
    ck_assert_int_ge(f->p.begin_ns[0], t0 + 200 * MS);
    ck_assert_int_lt(f->p.begin_ns[0], t0 + 5 * NS_PER_S);
}
END_TEST

/*
 * The runs are due at t0 + k * interval, exactly, as long as each starts
 * within DELAY's tolerance (the smaller of 5 ms and half the interval)
 * and ends before the next is due. A run that started or ended late (a
 * loaded machine) may move the grid, but only later; with the
 * rebase-on-start rule (next = actual start + interval) nearly every step
 * would be longer than the interval.
 */
static void check_grid(const struct probe *p, uint64_t runs, int64_t interval)
{
    int64_t tolerance = interval / 2 < 5 * MS ? interval / 2 : 5 * MS;
    uint64_t exact = 0;
    for (uint64_t k = 1; k < runs; k++) {
        int64_t step = p->sched_ns[k] - p->sched_ns[k - 1];
        bool kept_time = p->begin_ns[k - 1] - p->sched_ns[k - 1] <= tolerance &&
                         p->end_ns[k - 1] - p->sched_ns[k - 1] < interval;
        if (kept_time)
            ck_assert_msg(step == interval,
                          "run %llu scheduled %lld ns after the one before, "
                          "want exactly %lld",
                          (unsigned long long)k, (long long)step,
                          (long long)interval);
        else
            ck_assert_int_ge(step, interval);
        exact += step == interval;
    }
    ck_assert_msg(exact >= (runs - 1) / 2, "only %llu of %llu steps on grid",
                  (unsigned long long)exact, (unsigned long long)(runs - 1));
}

/* No run of the first n began before it was due. */
static void check_never_early(const struct probe *p, int n)
{
    for (int k = 0; k < n; k++)
        ck_assert_msg(p->begin_ns[k] >= p->sched_ns[k],
                      "run %d began %lld ns before it was due", k,
                      (long long)(p->sched_ns[k] - p->begin_ns[k]));
}

START_TEST(test_schedule_does_not_drift)
{
    lsvc_options o = interval_opts(0.05, LSVC_MISSED_DELAY);
    const struct fx *f = run_loops(&o, 12, 0, 0);
    const struct probe *p = &f->p;
    ck_assert_int_eq(p->sched_rc, 0);
    check_grid(p, 12, 50 * MS);
}
END_TEST

START_TEST(test_run_never_starts_before_scheduled_time)
{
    lsvc_options o = interval_opts(0.01, LSVC_MISSED_DELAY);
    check_never_early(&run_loops(&o, 25, 0, 0)->p, 25);
}
END_TEST

START_TEST(test_delay_overrun_starts_next_run_at_once)
{
    lsvc_options o = interval_opts(0.05, LSVC_MISSED_DELAY);
    const struct fx *f = run_loops(&o, 4, 120, 1);
    const struct probe *p = &f->p;
    /* The grid moved to when the long run ended... */
    ck_assert_int_ge(p->sched_ns[1], p->end_ns[0]);
    ck_assert_int_le(p->sched_ns[1], p->begin_ns[1]);
    ck_assert_msg(p->begin_ns[1] - p->end_ns[0] < NS_PER_S,
                  "the run after an overrun waited %lld ns",
                  (long long)(p->begin_ns[1] - p->end_ns[0]));
    /* ...and goes on from there one interval at a time. */
    check_grid(p, 4, 50 * MS);
}
END_TEST

START_TEST(test_skip_policy_keeps_grid_and_counts_missed)
{
    lsvc_options o = interval_opts(0.05, LSVC_MISSED_SKIP);
    const struct fx *f = run_loops(&o, 3, 120, 1);
    const struct probe *p = &f->p;
    int64_t interval = 50 * MS;
    int64_t offset = p->sched_ns[1] - p->sched_ns[0];
    ck_assert_msg(offset % interval == 0, "run 2 is %lld ns off the grid",
                  (long long)offset);
    /* The first grid point not yet past when the long run ended. */
    ck_assert_int_ge(p->sched_ns[1], p->end_ns[0]);
    ck_assert_int_lt(p->sched_ns[1] - interval, p->begin_ns[1]);
    uint64_t skipped = (uint64_t)(offset / interval) - 1;
    ck_assert_uint_ge(skipped, 2);
    ck_assert_uint_eq(stats_of(f->svc).missed, skipped);
}
END_TEST

START_TEST(test_burst_policy_runs_missed_points_back_to_back)
{
    lsvc_options o = interval_opts(0.05, LSVC_MISSED_BURST);
    const struct fx *f = run_loops(&o, 4, 120, 1);
    const struct probe *p = &f->p;
    /* Runs 2 and 3 were due while run 1 was still working. */
    for (int k = 1; k < 4; k++)
        ck_assert_int_eq(p->sched_ns[k], p->sched_ns[0] + k * 50 * MS);
    ck_assert_int_ge(p->begin_ns[1], p->end_ns[0]);
    ck_assert_int_ge(p->begin_ns[2], p->end_ns[1]);
    ck_assert_uint_eq(stats_of(f->svc).missed, 0);
}
END_TEST

/* --- A late start under LSVC_MISSED_DELAY ---------------------------------- */

/* A lease whose third answer takes 350 ms, as a slow store would: the run
 * it allows starts that late. Every answer is "held". */
static int slow_third_acquire(void *ctx, lsvc *svc, bool *held)
{
    atomic_int *acquires = ctx;
    (void)svc;
    /* The store's slowness itself, not a wait for an event. */
    if (atomic_fetch_add(acquires, 1) + 1 == 3)
        work_for_ns(350 * MS);
    *held = true;
    return 0;
}

/*
 * A run that starts late by more than min(interval / 2, 5 ms) moves the
 * grid to its actual start, so the run after it comes one interval later,
 * not at once: two starts are never closer than the interval less that
 * tolerance. (Keeping the old grid, the run after a 350 ms late one was due
 * before the late one even began, and followed it at the same instant.)
 */
START_TEST(test_late_start_moves_the_delay_grid_to_the_actual_start)
{
    static const lsvc_lease_ops ops = {.acquire = slow_third_acquire};
    static atomic_int acquires;
    lsvc_options o = interval_opts(0.1, LSVC_MISSED_DELAY);
    o.lease = &ops;
    o.lease_ctx = &acquires;
    const struct fx *f = run_loops(&o, 6, 0, 0);
    const struct probe *p = &f->p;
    /* The third run did start late, by the lease's 350 ms. */
    ck_assert_msg(p->begin_ns[2] - p->sched_ns[2] >= 300 * MS,
                  "the third run began %lld ns after it was due",
                  (long long)(p->begin_ns[2] - p->sched_ns[2]));
    /* At least the interval less the 5 ms tolerance, less what lies
     * between the library's start of a run and the probe's clock read in
     * run_once (a few microseconds; 150 us and more under valgrind). */
    for (int k = 1; k < 6; k++) {
        int64_t gap = p->begin_ns[k] - p->begin_ns[k - 1];
        ck_assert_msg(gap >= 90 * MS,
                      "run %d began %.3f ms after run %d, want at least 90 ms",
                      k + 1, (double)gap / 1e6, k);
    }
}
END_TEST

/* --- loops ------------------------------------------------------------------ */

START_TEST(test_loops_runs_exactly_n_times_then_ends)
{
    struct fx *f = fx_new("Counted", 0.01, NULL);
    fx_start(f, 5);
    ck_assert_int_eq(lsvc_join(f->svc, 20), 0);
    ck_assert_uint_eq(f->p.runs, 5);
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert_uint_eq(stats_of(f->svc).loops, 5);
}
END_TEST

START_TEST(test_restart_adds_runs)
{
    struct fx *f = fx_new("Restarted", 0.01, NULL);
    const uint64_t loops[] = {3, 2};
    for (int i = 0; i < 2; i++) {
        fx_start(f, loops[i]);
        ck_assert_int_eq(lsvc_join(f->svc, 20), 0);
    }
    ck_assert_uint_eq(f->p.runs, 5);
    ck_assert_uint_eq(stats_of(f->svc).loops, 5);
}
END_TEST

START_TEST(test_last_loop_does_not_sleep)
{
    struct fx *f = fx_new("OneShot", 10, NULL);
    int64_t t0 = now_ns();
    fx_start(f, 1);
    ck_assert_int_eq(lsvc_join(f->svc, 20), 0);
    check_quick(t0, 1.0, "a 1-loop service with a 10 s interval");
    ck_assert_uint_eq(f->p.runs, 1);
}
END_TEST

/* --- precise mode ------------------------------------------------------- */

START_TEST(test_precise_mode_keeps_grid)
{
    lsvc_options o = interval_opts(0.05, LSVC_MISSED_DELAY);
    o.precise = true;
    const struct fx *f = run_loops(&o, 10, 0, 0);
    const struct probe *p = &f->p;
    check_never_early(p, 10);
    check_grid(p, 10, 50 * MS);
}
END_TEST

/* The sleep toward a due time 60 s away is taken in steps of 100 ms. */
START_TEST(test_precise_mode_stops_within_a_step)
{
    lsvc_options o = {.precise = true};
    struct fx *f = fx_new("PreciseLong", 60, &o);
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, 5));
    int64_t t0 = now_ns();
    fx_stop(f);
    check_quick(t0, 1.0, "the precise stop");
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert_uint_eq(f->p.runs, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("schedule");
    add_tests(s, "maths", (const TTest *[]){
        test_seconds_to_ns_rounds_to_nearest_ns,
        test_seconds_to_ns_rejects_out_of_range,
        test_add_ns_saturates_instead_of_overflowing,
        test_next_due_delay_is_max_of_grid_and_now,
        test_next_due_skip_keeps_grid_and_counts_skipped,
        test_next_due_burst_keeps_grid_without_skipping, NULL});
    add_tests(s, "runs", (const TTest *[]){
        test_first_run_is_at_once,
        test_initial_delay_postpones_first_run,
        test_schedule_does_not_drift,
        test_run_never_starts_before_scheduled_time,
        test_delay_overrun_starts_next_run_at_once,
        test_skip_policy_keeps_grid_and_counts_missed,
        test_burst_policy_runs_missed_points_back_to_back,
        test_late_start_moves_the_delay_grid_to_the_actual_start,
        test_loops_runs_exactly_n_times_then_ends,
        test_restart_adds_runs,
        test_last_loop_does_not_sleep,
        test_precise_mode_keeps_grid,
        test_precise_mode_stops_within_a_step, NULL});
    return run_suite(s);
}
