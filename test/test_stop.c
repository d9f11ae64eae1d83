/*
 * Stopping and reaping a service: lsvc_stop with and without block, its
 * bound, lsvc_stop_timeout, lsvc_join, stops from inside a run, and
 * lsvc_destroy's reaping.
 */
#include "helpers.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

/* Runs `stop` on f and returns how long it took; its result in *rc. */
static double timed(int (*stop)(lsvc *svc), struct fx *f, int *rc)
{
    int64_t t0 = now_ns();
    *rc = stop(f->svc);
    return seconds_since(t0);
}

static int stop_blocking(lsvc *svc)
{
    return lsvc_stop(svc, true);
}

static int stop_no_block(lsvc *svc)
{
    return lsvc_stop(svc, false);
}

START_TEST(test_sleeping_service_stops_at_once)
{
    struct fx *f = fx_new("Sleeper", 60, NULL);
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, 5));
    int rc;
    double took = timed(stop_blocking, f, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(took < 1.0, "stopping a sleeping service took %.3f s",
                  took);
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert_uint_eq(f->p.runs, 1);
}
END_TEST

START_TEST(test_stop_without_block_returns_at_once)
{
    struct fx *f = fx_new("NoBlock", 60, NULL);
    fx_start_held(f);
    int rc;
    ck_assert_msg(timed(stop_no_block, f, &rc) < 1.0, "lsvc_stop(false) blocked");
    ck_assert_int_eq(rc, 0);
    /* The run is held, so the service cannot have ended yet. */
    ck_assert(lsvc_is_running(f->svc));
    fx_release_and_join(f);
    ck_assert_uint_eq(f->p.runs, 1);
}
END_TEST

START_TEST(test_run_in_progress_finishes_before_stop_returns)
{
    struct fx *f = fx_new("Worker", 5, NULL);
    f->p.slow_ns = 200 * NS_PER_MS;
    f->p.slow_runs = 1;
    fx_start(f, 0);
    fx_wait_entered(f);
    fx_stop(f);
    ck_assert_uint_eq(f->p.completed, 1);
    ck_assert_str_eq(f->p.events, "SRT");
    ck_assert(!lsvc_is_running(f->svc));
}
END_TEST

/* Checks that a stop of f returned ETIMEDOUT (rc) after `took` seconds, no
 * sooner than `at_least`, and left a service that can still be joined:
 * its held run is released here. */
static void check_timed_out(struct fx *f, int rc, double took,
                            double at_least)
{
    probe_release(&f->p);
    ck_assert_msg(rc == ETIMEDOUT, "the stop returned %d after %.3f s", rc,
                  took);
    ck_assert_msg(took >= at_least && took < 5.0,
                  "timed out after %.3f s, want %.3f s or a little more",
                  took, at_least);
    ck_assert_int_eq(lsvc_join(f->svc, 10), 0);
    ck_assert(!lsvc_is_running(f->svc));
}

static int stop_within_0_3_s(lsvc *svc)
{
    return lsvc_stop_timeout(svc, 0.3);
}

/* A stop of a held run of a service of `seconds`, made by `stop`, times
 * out no sooner than `at_least` seconds and warns with the name. */
static const struct {
    const char *name;
    double seconds;
    int (*stop)(lsvc *svc);
    double at_least;
} stuck_stops[] = {
    {"StuckStop", 0.3, stop_blocking, 0.3},       /* one interval */
    {"ShortStuck", 0.01, stop_blocking, 0.1},     /* at least 100 ms */
    {"LongStuck", 60, stop_within_0_3_s, 0.3},    /* its own bound */
};

static void check_stop_times_out(int i)
{
    log_capture();
    struct fx *f = fx_new(stuck_stops[i].name, stuck_stops[i].seconds, NULL);
    fx_start_held(f);
    int rc;
    double took = timed(stuck_stops[i].stop, f, &rc);
    ck_assert(log_find(0, LSVC_LOG_WARNING, stuck_stops[i].name, NULL));
    ck_assert(lsvc_is_running(f->svc));
    check_timed_out(f, rc, took, stuck_stops[i].at_least);
    ck_assert_str_eq(f->p.events, "SRT");
}

START_TEST(test_blocking_stop_waits_one_interval_then_times_out)
{
    check_stop_times_out(0);
}
END_TEST

START_TEST(test_blocking_stop_waits_at_least_100_ms)
{
    check_stop_times_out(1);
}
END_TEST

START_TEST(test_stop_timeout_uses_its_own_bound)
{
    check_stop_times_out(2);
}
END_TEST

/* --- The default bound ------------------------------------------------------ */

/* From inside the first run: every later run is held. */
static void hold_later_runs(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    if (run == 0) {
        pthread_mutex_lock(&p->lock);
        p->hold = true;
        pthread_mutex_unlock(&p->lock);
    }
}

/* A run may take twice as long as the longest one seen before a blocking
 * stop gives up on it: on a 1 ms interval, a service whose first run took
 * 150 ms is waited for 300 ms. Its second run is held, and stopped once
 * it has begun. */
START_TEST(test_stop_bound_is_twice_the_longest_run)
{
    log_capture();
    struct fx *f = fx_new("LongRuns", 0.001, NULL);
    f->p.slow_ns = 150 * NS_PER_MS;
    f->p.slow_runs = 1;
    f->p.during = hold_later_runs;
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, 5));
    fx_wait_entered(f); /* the first run */
    fx_wait_entered(f); /* the second, held */
    int rc;
    double took = timed(stop_blocking, f, &rc);
    check_timed_out(f, rc, took, 0.29);
    ck_assert_str_eq(f->p.events, "SRRT");
}
END_TEST

/* So a run as long as the ones before it is waited for: the second
 * 150 ms run of a 1 ms service, stopped as it begins, ends the stop with
 * 0 (with a 100 ms bound it timed out). */
START_TEST(test_stop_waits_for_a_run_as_long_as_the_ones_before)
{
    log_capture();
    struct fx *f = fx_new("SteadyLong", 0.001, NULL);
    f->p.slow_ns = 150 * NS_PER_MS;
    f->p.slow_runs = 2;
    fx_start(f, 0);
    fx_wait_entered(f);                       /* the first run */
    ck_assert(probe_wait_runs(&f->p, 1, 5)); /* ...has ended */
    fx_wait_entered(f);                       /* the second has begun */
    int rc;
    double took = timed(stop_blocking, f, &rc);
    ck_assert_msg(rc == 0, "lsvc_stop returned %d after %.3f s, in the "
                  "second 150 ms run", rc, took);
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert_uint_eq(f->p.completed, 2);
    ck_assert_str_eq(f->p.events, "SRRT");
}
END_TEST

/* In precise mode a stop may go unseen for one sleep step (100 ms): the
 * bound is 100 ms longer there. */
START_TEST(test_precise_stop_bound_adds_one_sleep_step)
{
    static const lsvc_options precise = {.precise = true};
    log_capture();
    struct fx *f = fx_new("PreciseStuck", 0.1, &precise);
    fx_start_held(f);
    int rc;
    double took = timed(stop_blocking, f, &rc);
    check_timed_out(f, rc, took, 0.19);
    ck_assert_str_eq(f->p.events, "SRT");
}
END_TEST

/* on_stop that takes 10 ms, as closing a file or a connection may. */
static void slow_on_stop(lsvc *svc, void *arg)
{
    probe_on_stop(svc, arg);
    work_for_ns(10 * NS_PER_MS);
}

/* A precise service sleeping toward its next run, 100 ms away, sees a
 * stop only when it wakes there, and then still has to end: a bound of
 * one interval (100 ms) left no room for that, and timed out whenever the
 * ending (here a 10 ms on_stop) took longer than the stop came after the
 * run. The stop comes as the service goes to sleep: at its DEBUG line
 * "Finished running ...", which it logs just before. */
START_TEST(test_precise_stop_between_runs_returns_0_every_time)
{
    static const lsvc_class cls = {
        .name = "PreciseSleeper", .loop_seconds = 0.1,
        .run_once = probe_run_once, .on_start = probe_on_start,
        .on_stop = slow_on_stop,
    };
    static const lsvc_options precise = {.precise = true};
    enum { TIMES = 20 };
    log_capture();
    lsvc_set_log_level(LSVC_LOG_DEBUG);
    struct fx *f = fx_new_class(&cls, &precise);
    for (int i = 0; i < TIMES; i++) {
        size_t from = log_size();
        fx_start(f, 0);
        ck_assert(log_wait(from, LSVC_LOG_DEBUG,
                           "Finished running PreciseSleeper", 5, NULL));
        int rc;
        double took = timed(stop_blocking, f, &rc);
        ck_assert_msg(rc == 0, "stop %d of %d returned %d after %.3f s", i + 1,
                      TIMES, rc, took);
        ck_assert(!lsvc_is_running(f->svc));
    }
}
END_TEST

struct bounded_stop {
    lsvc *svc;
    double seconds;
    sem_t calling; /* posted just before the call */
    sem_t done;    /* posted once it has returned */
    int rc;
};

static void *stop_with_timeout(void *arg)
{
    struct bounded_stop *b = arg;
    sem_post(&b->calling);
    b->rc = lsvc_stop_timeout(b->svc, b->seconds);
    sem_post(&b->done);
    return NULL;
}

/* A negative bound is none, as for lsvc_join: the stop waits for the run
 * however long it takes. NaN is still no bound at all, but an error. */
START_TEST(test_negative_stop_timeout_waits_without_bound)
{
    log_capture();
    struct fx *f = fx_new("Unbounded", 0.01, NULL);
    fx_start_held(f);
    ck_assert_int_eq(lsvc_stop_timeout(f->svc, NAN), EINVAL);
    ck_assert(lsvc_is_running(f->svc));

    struct bounded_stop b = {.svc = f->svc, .seconds = -1, .rc = -1};
    sems_init(2, &b.calling, &b.done);
    pthread_t stopper;
    ck_assert_int_eq(pthread_create(&stopper, NULL, stop_with_timeout, &b), 0);
    ck_assert(sem_wait_for(&b.calling, 5));
    /* Well past the 100 ms any bound of this service would be. */
    bool returned = sem_wait_for(&b.done, 0.5);
    probe_release(&f->p);
    if (!returned)
        ck_assert(sem_wait_for(&b.done, 10));
    pthread_join(stopper, NULL);
    ck_assert_msg(!returned, "lsvc_stop_timeout(-1) returned %d while the "
                  "run was still held", b.rc);
    ck_assert_int_eq(b.rc, 0);
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert_str_eq(f->p.events, "SRT");
    sems_destroy(2, &b.calling, &b.done);
}
END_TEST

static int stop_within_0_s(lsvc *svc)
{
    return lsvc_stop_timeout(svc, 0);
}

START_TEST(test_stop_timeout_zero_only_checks)
{
    struct fx *f = fx_new("Checked", 60, NULL);
    fx_start_held(f);
    int rc;
    double took = timed(stop_within_0_s, f, &rc);
    ck_assert_int_eq(rc, ETIMEDOUT);
    ck_assert_msg(took < 1.0, "a 0 s bound waited %.3f s", took);
    /* The stop was still requested: released, the service ends. */
    fx_release_and_join(f);
    ck_assert_uint_eq(f->p.runs, 1);
}
END_TEST

START_TEST(test_stop_is_idempotent)
{
    struct fx *f = fx_new("Twice", 60, NULL);
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, 5));
    ck_assert_int_eq(lsvc_stop(f->svc, false), 0);
    ck_assert_int_eq(lsvc_stop(f->svc, true), 0);
    ck_assert_int_eq(lsvc_stop(f->svc, true), 0);
    ck_assert_int_eq(lsvc_stop(f->svc, false), 0);
    ck_assert_int_eq(lsvc_stop_timeout(f->svc, 1), 0);
    ck_assert_str_eq(f->p.events, "SRT");
}
END_TEST

START_TEST(test_stop_on_never_started_service_returns_0)
{
    struct fx *f = fx_new("Idle", 60, NULL);
    ck_assert_int_eq(lsvc_stop(f->svc, false), 0);
    ck_assert_int_eq(lsvc_stop(f->svc, true), 0);
    ck_assert_int_eq(lsvc_stop_timeout(f->svc, 1), 0);
    ck_assert_int_eq(lsvc_join(f->svc, 1), 0);
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert_str_eq(f->p.events, "");
    /* A stop before the start does not stick to the next start. */
    fx_run(f, 1);
    ck_assert_uint_eq(f->p.runs, 1);
}
END_TEST

struct racer {
    lsvc *svc;
    pthread_barrier_t *go;
    int rc;
};

static void *stop_racer(void *arg)
{
    struct racer *r = arg;
    pthread_barrier_wait(r->go);
    r->rc = lsvc_stop(r->svc, true);
    return NULL;
}

START_TEST(test_concurrent_stops_all_succeed)
{
    enum { N = 4 };
    struct fx *f = fx_new("Raced", 60, NULL);
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, 5));
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    struct racer racers[N];
    pthread_t threads[N];
    for (int i = 0; i < N; i++) {
        racers[i] = (struct racer){.svc = f->svc, .go = &go, .rc = -1};
        ck_assert_int_eq(
            pthread_create(&threads[i], NULL, stop_racer, &racers[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_msg(racers[i].rc == 0, "stop %d returned %d", i,
                      racers[i].rc);
    }
    pthread_barrier_destroy(&go);
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert_str_eq(f->p.events, "SRT");
}
END_TEST

/* --- From inside a run ---------------------------------------------------- */

/* The calls made from inside the first run, and what each must return. */
static int join_1_s(lsvc *svc)
{
    return lsvc_join(svc, 1);
}

static int stop_within_5_s(lsvc *svc)
{
    return lsvc_stop_timeout(svc, 5);
}

/* The call made from inside the first run, and what it returned. */
static struct {
    int (*call)(lsvc *svc);
    int rc;
} inside = {.rc = -1};

static void call_inside(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)p;
    if (run == 0)
        inside.rc = inside.call(svc);
}

/* Runs call() in the first run of f and returns its result once that run
 * has ended. */
static int call_from_first_run(struct fx *f, int (*call)(lsvc *))
{
    inside.call = call;
    f->p.during = call_inside;
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, 5));
    return inside.rc;
}

/* Runs call() in the first run of a 10 ms service: the service must have
 * ended after that run, as the stop asked, and the call returned `want`,
 * with a WARNING naming the service when `warns`. */
static void check_stop_from_inside(const char *name, int (*call)(lsvc *),
                                   int want, bool warns)
{
    log_capture();
    struct fx *f = fx_new(name, 0.01, NULL);
    int64_t t0 = now_ns();
    ck_assert_int_eq(call_from_first_run(f, call), want);
    ck_assert_int_eq(lsvc_join(f->svc, 10), 0);
    ck_assert_msg(seconds_since(t0) < 5.0, "the stop from inside hung");
    ck_assert_uint_eq(f->p.runs, 1);
    ck_assert_str_eq(f->p.events, "SRT");
    if (warns)
        ck_assert(log_find(0, LSVC_LOG_WARNING, name, NULL));
}

START_TEST(test_blocking_stop_from_inside_is_edeadlk)
{
    check_stop_from_inside("SelfStop", stop_blocking, EDEADLK, true);
}
END_TEST

START_TEST(test_stop_timeout_from_inside_is_edeadlk)
{
    check_stop_from_inside("SelfTimeout", stop_within_5_s, EDEADLK, true);
}
END_TEST

START_TEST(test_stop_without_block_from_inside_ends_after_the_run)
{
    check_stop_from_inside("SelfEnd", stop_no_block, 0, false);
}
END_TEST

START_TEST(test_join_from_inside_is_edeadlk)
{
    struct fx *f = fx_new("SelfJoin", 60, NULL);
    ck_assert_int_eq(call_from_first_run(f, join_1_s), EDEADLK);
    ck_assert(lsvc_is_running(f->svc));
}
END_TEST

/* --- Join and destroy ---------------------------------------------------- */

START_TEST(test_join_times_out_while_running)
{
    struct fx *f = fx_new("Joined", 60, NULL);
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, 5));
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_join(f->svc, 0.1), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= 0.1 && took < 5.0, "join waited %.3f s", took);
    /* Nothing changed: no stop was requested. */
    ck_assert(lsvc_is_running(f->svc));
    ck_assert_str_eq(f->p.events, "SR");
}
END_TEST

START_TEST(test_join_without_thread_returns_at_once)
{
    struct fx *f = fx_new("Unstarted", 60, NULL);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_join(f->svc, -1), 0);
    ck_assert_int_eq(lsvc_join(f->svc, 5), 0);
    ck_assert_msg(seconds_since(t0) < 1.0, "join waited for no thread");
}
END_TEST

START_TEST(test_restart_after_stop)
{
    struct fx *f = fx_new("Again", 60, NULL);
    for (int round = 0; round < 2; round++) {
        fx_start(f, 0);
        ck_assert(probe_wait_runs(&f->p, 1, 5));
        ck_assert(lsvc_is_running(f->svc));
        fx_stop(f);
    }
    ck_assert_str_eq(f->p.events, "SRTSRT");
}
END_TEST

START_TEST(test_start_reaps_an_ended_thread)
{
    struct fx *f = fx_new("Reaped", 60, NULL);
    fx_start(f, 1);
    ck_assert(wait_not_running(f->svc, 10));
    /* Not joined: lsvc_start reaps the ended thread itself. */
    fx_run(f, 1);
    ck_assert_str_eq(f->p.events, "SRTSRT");
}
END_TEST

START_TEST(test_destroy_reaps_an_ended_thread)
{
    struct threads before;
    threads_baseline(&before);
    struct fx *f = fx_new("Freed", 60, NULL);
    fx_start(f, 1);
    ck_assert(wait_not_running(f->svc, 10));
    ck_assert_str_eq(f->p.events, "SRT");
    fx_free(f);
    ck_assert(wait_threads_back_to(&before, 5));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stop");
    add_tests(s, "stop", (const TTest *[]){
        test_sleeping_service_stops_at_once,
        test_stop_without_block_returns_at_once,
        test_run_in_progress_finishes_before_stop_returns,
        test_blocking_stop_waits_one_interval_then_times_out,
        test_blocking_stop_waits_at_least_100_ms,
        test_stop_timeout_uses_its_own_bound,
        test_stop_bound_is_twice_the_longest_run,
        test_stop_waits_for_a_run_as_long_as_the_ones_before,
        test_precise_stop_bound_adds_one_sleep_step,
        test_precise_stop_between_runs_returns_0_every_time,
        test_negative_stop_timeout_waits_without_bound,
        test_stop_timeout_zero_only_checks,
        test_stop_is_idempotent,
        test_stop_on_never_started_service_returns_0,
        test_concurrent_stops_all_succeed, NULL});
    add_tests(s, "inside", (const TTest *[]){
        test_blocking_stop_from_inside_is_edeadlk,
        test_stop_timeout_from_inside_is_edeadlk,
        test_stop_without_block_from_inside_ends_after_the_run,
        test_join_from_inside_is_edeadlk, NULL});
    add_tests(s, "join and destroy", (const TTest *[]){
        test_join_times_out_while_running,
        test_join_without_thread_returns_at_once,
        test_restart_after_stop,
        test_start_reaps_an_ended_thread,
        test_destroy_reaps_an_ended_thread, NULL});
    return run_suite(s);
}
