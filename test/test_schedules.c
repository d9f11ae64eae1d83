/*
 * Schedules for servers: jitter, alignment to the wall clock, backoff
 * after failed runs, quiet overruns and a gap between woken runs; and the
 * options they refuse. Lower bounds of time are exact; upper bounds are
 * wide, for sanitizers on loaded cores.
 */
#include "helpers.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS NS_PER_MS

/* Slack for wake-up lateness on a loaded core or under a sanitizer. */
#define LATE_NS (60 * MS)
/* How far a probe's own timestamps may sit after the library's. */
#define PROBE_NS (1 * MS)

static double ms(int64_t ns)
{
    return (double)ns / 1e6;
}

/* Runs a probe service of `seconds` with opts for exactly `loops` runs,
 * each working `work_ns`, and returns it (ended, not freed). */
static struct fx *run_loops(const char *name, double seconds,
                            const lsvc_options *opts, uint64_t loops,
                            int64_t work_ns)
{
    struct fx *f = fx_new(name, seconds, opts);
    f->p.slow_ns = work_ns;
    f->p.slow_runs = loops;
    fx_run(f, loops);
    ck_assert_uint_eq(f->p.runs, loops);
    return f;
}

/* --- Options refused --------------------------------------------------------- */

static const struct {
    const char *what;
    double seconds; /* the class's interval */
    lsvc_options o;
} refused[] = {
    {"jitter above the interval", 0.1, {.jitter_seconds = 0.2}},
    {"negative jitter", 0.1, {.jitter_seconds = -0.01}},
    {"NaN jitter", 0.1, {.jitter_seconds = NAN}},
    {"an offset equal to the interval", 0.2,
     {.align_to_clock = true, .offset_seconds = 0.2}},
    {"an offset above the interval", 0.2,
     {.align_to_clock = true, .offset_seconds = 0.3}},
    {"a negative offset", 0.2, {.align_to_clock = true, .offset_seconds = -0.01}},
    {"an offset without align_to_clock", 0.2, {.offset_seconds = 0.05}},
    {"align_to_clock with LSVC_NEVER", LSVC_NEVER, {.align_to_clock = true}},
    {"align_to_clock with fixed_delay", 0.2,
     {.align_to_clock = true, .fixed_delay = true}},
    {"a backoff maximum below the interval", 0.1,
     {.error_backoff_max_seconds = 0.05}},
    {"a negative backoff maximum", 0.1, {.error_backoff_max_seconds = -1}},
    {"a NaN backoff maximum", 0.1, {.error_backoff_max_seconds = NAN}},
    {"a NaN wake gap", 0.1, {.min_wake_gap_seconds = NAN}},
    {"a negative wake gap", 0.1, {.min_wake_gap_seconds = -0.01}},
    {"a wake gap above LSVC_MAX_SECONDS", 0.1,
     {.min_wake_gap_seconds = 2 * LSVC_MAX_SECONDS}},
};

START_TEST(test_create_refuses_bad_schedule_options)
{
    const lsvc_class cls = PROBE_CLASS("Refused", refused[_i].seconds);
    struct probe p;
    probe_init(&p);
    lsvc *svc = NULL;
    ck_assert_msg(lsvc_create(&svc, &cls, &p, &refused[_i].o) == EINVAL,
                  "%s was not EINVAL", refused[_i].what);
    ck_assert_ptr_null(svc);
    probe_destroy(&p);
}
END_TEST

/* The edges that are allowed, next to those refused. */
START_TEST(test_create_accepts_the_edges)
{
    const lsvc_options ok[] = {
        {.jitter_seconds = 0.1},
        {.align_to_clock = true},
        {.align_to_clock = true, .offset_seconds = 0.0999},
        {.error_backoff_max_seconds = 0.1},
        {.min_wake_gap_seconds = LSVC_MAX_SECONDS},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        fx_free(fx_new("Edge", 0.1, &ok[i]));
}
END_TEST

/* --- Jitter ------------------------------------------------------------------ */

static const lsvc_missed policies[] = {LSVC_MISSED_DELAY, LSVC_MISSED_SKIP,
                                       LSVC_MISSED_BURST};

/* 20 runs of 50 ms with 20 ms of jitter, each working 10 ms: every run
 * starts within [point, point + jitter] of its point (plus wake-up
 * lateness), the points stay on the grid t0 + k * I, and the jitter is
 * really drawn (some run starts well after its point). Under DELAY a run
 * that a loaded core woke more than the tolerance (5 ms) after its
 * jittered start re-bases the grid, as it should; jitter that moved the
 * grid would move most steps, so a couple are allowed, and only forward
 * by less than the jitter and lateness. */
START_TEST(test_jitter_keeps_the_grid_and_starts_within_the_jitter)
{
    const int64_t interval = 50 * MS, jitter = 20 * MS;
    const uint64_t n = 20;
    const int rebases_allowed = policies[_i] == LSVC_MISSED_DELAY ? 2 : 0;
    lsvc_options o = {.jitter_seconds = 0.02, .missed = policies[_i]};
    struct fx *f = run_loops("Jittery", 0.05, &o, n, 10 * MS);
    int64_t latest = 0;
    int rebases = 0;
    for (uint64_t k = 0; k < n; k++) {
        int64_t late = f->p.begin_ns[k] - f->p.sched_ns[k];
        ck_assert_msg(late >= 0 && late <= jitter + LATE_NS,
                      "policy %d: run %lu began %.3f ms after its point", _i,
                      (unsigned long)k, ms(late));
        if (late > latest)
            latest = late;
        if (k == 0)
            continue;
        int64_t step = f->p.sched_ns[k] - f->p.sched_ns[k - 1];
        if (step == interval)
            continue;
        rebases++;
        ck_assert_msg(rebases <= rebases_allowed && step > interval &&
                          step <= interval + jitter + LATE_NS,
                      "policy %d: run %lu was due %.3f ms after the one "
                      "before, want %.3f", _i, (unsigned long)k, ms(step),
                      ms(interval));
    }
    /* All 20 within 3 ms of their points: jitter of 20 ms would make that
     * a chance of (3/20)^20. */
    ck_assert_msg(latest > 3 * MS, "no run was jittered (latest %.3f ms)",
                  ms(latest));
}
END_TEST

/* --- Alignment to the wall clock --------------------------------------------- */

struct wall {
    pthread_mutex_t lock;
    int n;
    int64_t at[8];
};

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return timespec_ns(&ts);
}

/* A `during` hook that notes the wall clock at each run. */
static void note_wall_clock(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    (void)run;
    int64_t now = realtime_ns();
    struct wall *w = p->user;
    pthread_mutex_lock(&w->lock);
    if (w->n < 8)
        w->at[w->n++] = now;
    pthread_mutex_unlock(&w->lock);
}

/* I = 0.2 s, offset 0.05 s: every run starts at a wall-clock time whose
 * remainder modulo 0.2 s is 0.05 s, give or take wake-up lateness. */
START_TEST(test_aligned_runs_start_at_wall_clock_points)
{
    struct wall w = {.lock = PTHREAD_MUTEX_INITIALIZER};
    lsvc_options o = {.align_to_clock = true, .offset_seconds = 0.05};
    struct fx *f = fx_new("Aligned", 0.2, &o);
    f->p.during = note_wall_clock;
    f->p.user = &w;
    fx_run(f, 4);
    ck_assert_int_eq(w.n, 4);
    for (int k = 0; k < w.n; k++) {
        int64_t phase = w.at[k] % (200 * MS);
        /* A little before the point only by the clocks' rates, which a
         * point converted to CLOCK_MONOTONIC can pick up. */
        ck_assert_msg(phase >= 50 * MS - PROBE_NS &&
                          phase <= 50 * MS + LATE_NS,
                      "run %d began at %.3f ms past a 200 ms boundary, want "
                      "50", k, ms(phase));
    }
}
END_TEST

/* --- Backoff ------------------------------------------------------------------ */

struct failures {
    uint64_t fail_first; /* runs that fail before the first success */
    uint64_t seen[16];   /* consecutive_failures as each run began */
    int64_t start[16];   /* each run's start, as lsvc_run_info has it */
};

/* A `during` hook: the first fail_first runs fail, the rest succeed; each
 * notes the count of failures in a row before it. */
static void fail_first_runs(lsvc *svc, struct probe *p, uint64_t run)
{
    struct failures *fl = p->user;
    lsvc_run_info info;
    if (run < 16 && lsvc_get_run_info(svc, &info) == 0) {
        fl->seen[run] = stats_of(svc).consecutive_failures;
        fl->start[run] = timespec_ns(&info.start);
    }
    p->run_code = run < fl->fail_first ? 1 : 0; /* this thread reads it */
}

/* Interval 50 ms, maximum 0.4 s, five failures then successes: the gaps
 * between starts (the library's, in lsvc_run_info) double from 100 ms up
 * to the maximum, and the first success returns to 50 ms. A run that
 * began within DELAY's tolerance (5 ms) of its point counts from the
 * point, so a gap may be that much shorter. */
#define TOLERANCE_NS (5 * MS)
START_TEST(test_failed_runs_back_off_up_to_the_maximum)
{
    static const int64_t gap_ms[] = {100, 200, 400, 400, 400, 50, 50};
    const uint64_t n = sizeof(gap_ms) / sizeof(gap_ms[0]) + 1;
    struct failures fl = {.fail_first = 5};
    lsvc_options o = {.error_backoff_max_seconds = 0.4};
    struct fx *f = fx_new("Backoff", 0.05, &o);
    f->p.during = fail_first_runs;
    f->p.user = &fl;
    log_capture(); /* the failures' ERROR lines, kept off stderr */
    fx_run(f, n);
    for (uint64_t k = 0; k + 1 < n; k++) {
        int64_t gap = fl.start[k + 1] - fl.start[k];
        ck_assert_msg(gap >= gap_ms[k] * MS - TOLERANCE_NS &&
                          gap <= gap_ms[k] * MS + LATE_NS,
                      "gap %lu was %.3f ms, want %lld", (unsigned long)k,
                      ms(gap), (long long)gap_ms[k]);
    }
    static const uint64_t want_seen[] = {0, 1, 2, 3, 4, 5, 0, 0};
    for (uint64_t k = 0; k < n; k++)
        ck_assert_msg(fl.seen[k] == want_seen[k],
                      "consecutive_failures %lu before run %lu, want %lu",
                      (unsigned long)fl.seen[k], (unsigned long)k,
                      (unsigned long)want_seen[k]);
    lsvc_stats st = stats_of(f->svc);
    ck_assert_uint_eq(st.consecutive_failures, 0);
    ck_assert_uint_eq(st.errors, 5);
}
END_TEST

/* The stats once `loops` runs have been counted, which happens just after
 * run_once returns: polled, within 5 s. */
static lsvc_stats stats_after(const lsvc *svc, uint64_t loops)
{
    int64_t start = now_ns();
    lsvc_stats st = stats_of(svc);
    while (st.loops < loops && seconds_since(start) < 5) {
        work_for_ns(MS);
        st = stats_of(svc);
    }
    ck_assert_uint_ge(st.loops, loops);
    return st;
}

/* After a failure the next run is due 2 s later; a wake runs it at once. */
START_TEST(test_wake_during_a_backoff_runs_at_once)
{
    lsvc_options o = {.error_backoff_max_seconds = 60};
    struct fx *f = fx_new("BackoffWake", 1, &o);
    f->p.run_code = 1;
    log_capture();
    fx_start(f, 0);
    ck_assert_uint_eq(stats_after(f->svc, 1).consecutive_failures, 1);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_wake(f->svc), 0);
    fx_wait_entered(f);
    ck_assert_msg(seconds_since(t0) < 0.5, "the woken run came %.3f s after "
                  "the wake", seconds_since(t0));
    ck_assert_uint_eq(stats_after(f->svc, 2).consecutive_failures, 2);
}
END_TEST

/* --- Quiet overruns ----------------------------------------------------------- */

/* A run of 60 ms in a 20 ms interval: counted either way, and a WARNING
 * unless quiet_overruns. */
START_TEST(test_quiet_overruns_drops_only_the_warning)
{
    const bool quiet = _i == 1;
    log_capture();
    lsvc_set_log_level(LSVC_LOG_WARNING);
    lsvc_options o = {.quiet_overruns = quiet};
    struct fx *f = run_loops("Overrunner", 0.02, &o, 2, 60 * MS);
    ck_assert_uint_eq(stats_of(f->svc).overruns, 2);
    size_t warnings = log_count(LSVC_LOG_WARNING, "longer than its loop");
    if (quiet)
        ck_assert_msg(warnings == 0, "%zu overrun WARNINGs", warnings);
    else
        ck_assert_msg(warnings >= 1, "no overrun WARNING");
}
END_TEST

/* --- A gap between woken runs -------------------------------------------------- */

/* The latest run's start, and how many runs began. */
static int64_t last_begin(struct probe *p, uint64_t *runs)
{
    pthread_mutex_lock(&p->lock);
    *runs = p->runs;
    int64_t at = p->runs > 0 ? p->begin_ns[p->runs - 1] : 0;
    pthread_mutex_unlock(&p->lock);
    return at;
}

/* Each run's start as the library took it (lsvc_run_info.start): the
 * gap is between those, which the probe's clock, read a little later
 * inside the run, only approaches. */
static int64_t storm_starts[PROBE_MAX_RUNS];

static void note_start(lsvc *svc, struct probe *p, uint64_t run)
{
    lsvc_run_info info;

    (void)p;
    if (run < PROBE_MAX_RUNS && lsvc_get_run_info(svc, &info) == 0)
        storm_starts[run] = timespec_ns(&info.start);
}

/* 100 wakes in about 100 ms on a LSVC_NEVER service with a 50 ms gap:
 * its runs start at least 50 ms apart, and a run follows the last wake. */
START_TEST(test_wake_storm_gives_runs_a_gap_apart_and_keeps_the_wake)
{
    lsvc_options o = {.min_wake_gap_seconds = 0.05};
    struct fx *f = fx_new("Stormy", LSVC_NEVER, &o);
    f->p.during = note_start;
    fx_start(f, 0);
    int64_t storm = now_ns(), last_wake = 0;
    for (int i = 0; i < 100; i++) {
        last_wake = now_ns();
        ck_assert_int_eq(lsvc_wake(f->svc), 0);
        work_for_ns(MS);
    }
    uint64_t runs = 0;
    int64_t start = now_ns();
    while (last_begin(&f->p, &runs) < last_wake) {
        ck_assert_msg(seconds_since(start) < 5, "no run after the last wake");
        sem_wait_for(&f->p.entered, 0.1);
    }
    fx_stop(f);
    ck_assert_uint_ge(runs, 2);
    /* At one run per gap at most, over the storm and one gap after. */
    ck_assert_uint_le(runs, (uint64_t)((last_wake - storm) / (50 * MS)) + 2);
    for (uint64_t k = 0; k + 1 < runs; k++) {
        int64_t gap = storm_starts[k + 1] - storm_starts[k];
        ck_assert_msg(gap >= 50 * MS, "runs %lu and %lu began %.3f ms apart",
                      (unsigned long)k, (unsigned long)k + 1, ms(gap));
    }
    ck_assert_uint_eq(stats_of(f->svc).wakes, runs);
}
END_TEST

/* A wake that comes after a point is due but before its jittered start
 * is taken by the point's run, as it is without jitter (a run that begins
 * at or after its point is a timer run and takes every wake), not run
 * apart with the point's run after it, due before it: that would run the
 * service twice back to back, with lsvc_scheduled_start going back in
 * time. Interval 1 s, jitter 1 s, a wake 10 ms after the second point: a
 * jitter above 10 ms (99 %) shows it. */
START_TEST(test_wake_after_a_point_before_its_jittered_start_takes_the_point)
{
    lsvc_options o = {.jitter_seconds = 1};
    struct fx *f = fx_new("JitterWake", 1, &o);
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, 5));
    pthread_mutex_lock(&f->p.lock);
    int64_t point = f->p.sched_ns[0] + NS_PER_S;
    pthread_mutex_unlock(&f->p.lock);
    work_for_ns(point + 10 * MS - now_ns());
    ck_assert_int_eq(lsvc_wake(f->svc), 0);
    ck_assert(probe_wait_runs(&f->p, 1, 5));
    /* Whatever the next run is, it is not due before this one. */
    bool second = probe_wait_runs(&f->p, 1, 2.5);
    fx_stop(f);
    ck_assert(second);
    ck_assert_msg(f->p.sched_ns[2] >= f->p.sched_ns[1],
                  "run 3 was due %.3f ms before run 2 (the woken one)",
                  ms(f->p.sched_ns[1] - f->p.sched_ns[2]));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("schedules");
    TCase *opts = timed_tcase("options");
    tcase_add_loop_test(opts, test_create_refuses_bad_schedule_options, 0,
                        sizeof(refused) / sizeof(refused[0]));
    tcase_add_test(opts, test_create_accepts_the_edges);
    suite_add_tcase(s, opts);

    TCase *sched = timed_tcase("schedules");
    tcase_add_loop_test(sched, test_jitter_keeps_the_grid_and_starts_within_the_jitter,
                        0, 3);
    tcase_add_test(sched, test_aligned_runs_start_at_wall_clock_points);
    tcase_add_test(sched, test_failed_runs_back_off_up_to_the_maximum);
    tcase_add_test(sched, test_wake_during_a_backoff_runs_at_once);
    tcase_add_loop_test(sched, test_quiet_overruns_drops_only_the_warning, 0, 2);
    tcase_add_test(sched, test_wake_storm_gives_runs_a_gap_apart_and_keeps_the_wake);
    tcase_add_test(sched, test_wake_after_a_point_before_its_jittered_start_takes_the_point);
    suite_add_tcase(s, sched);
    return run_suite(s);
}
