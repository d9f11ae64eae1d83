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

START_TEST(test_sleeping_service_stops_at_once)
{
    static const lsvc_class cls = PROBE_CLASS("Sleeper", 60);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    double took = seconds_since(t0);
    ck_assert_msg(took < 1.0, "stopping a sleeping service took %.3f s",
                  took);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_uint_eq(p.runs, 1);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_stop_without_block_returns_at_once)
{
    static const lsvc_class cls = PROBE_CLASS("NoBlock", 60);
    struct probe p;
    probe_init(&p);
    probe_hold(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(sem_wait_for(&p.entered, 5));
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_stop(svc, false), 0);
    ck_assert_msg(seconds_since(t0) < 1.0, "lsvc_stop(false) blocked");
    /* The run is held, so the service cannot have ended yet. */
    ck_assert(lsvc_is_running(svc));
    probe_release(&p);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_uint_eq(p.runs, 1);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_run_in_progress_finishes_before_stop_returns)
{
    static const lsvc_class cls = PROBE_CLASS("Worker", 5);
    struct probe p;
    probe_init(&p);
    p.slow_ns = 200 * NS_PER_MS;
    p.slow_runs = 1;
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(sem_wait_for(&p.entered, 5));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_uint_eq(p.completed, 1);
    ck_assert_str_eq(p.events, "SRT");
    ck_assert(!lsvc_is_running(svc));
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* Holds a run, stops the service with stop(), and checks that the stop
 * timed out no sooner than `at_least` seconds, warned with the name, and
 * left a service that can still be joined. */
static void check_stop_times_out(const lsvc_class *cls, double at_least,
                                 int (*stop)(lsvc *svc))
{
    struct probe p;
    probe_init(&p);
    probe_hold(&p);
    log_capture();
    lsvc *svc = make_service(cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(sem_wait_for(&p.entered, 5));
    int64_t t0 = now_ns();
    ck_assert_int_eq(stop(svc), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= at_least && took < 5.0,
                  "timed out after %.3f s, want %.3f s or a little more",
                  took, at_least);
    ck_assert(log_find(0, LSVC_LOG_WARNING, cls->name, NULL));
    ck_assert(lsvc_is_running(svc));
    probe_release(&p);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_str_eq(p.events, "SRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}

static int stop_blocking(lsvc *svc)
{
    return lsvc_stop(svc, true);
}

static int stop_within_0_3_s(lsvc *svc)
{
    return lsvc_stop_timeout(svc, 0.3);
}

START_TEST(test_blocking_stop_waits_one_interval_then_times_out)
{
    static const lsvc_class cls = PROBE_CLASS("StuckStop", 0.3);
    check_stop_times_out(&cls, 0.3, stop_blocking);
}
END_TEST

START_TEST(test_blocking_stop_waits_at_least_100_ms)
{
    static const lsvc_class cls = PROBE_CLASS("ShortStuck", 0.01);
    check_stop_times_out(&cls, 0.1, stop_blocking);
}
END_TEST

START_TEST(test_stop_timeout_uses_its_own_bound)
{
    static const lsvc_class cls = PROBE_CLASS("LongStuck", 60);
    check_stop_times_out(&cls, 0.3, stop_within_0_3_s);
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

/* Starts a service whose first run takes first_run_ns and whose second
 * is held, stops it with lsvc_stop(svc, true) once that second run has
 * begun, and checks that the stop timed out no sooner than `at_least`
 * seconds and left a service that can still be joined. */
static void check_stop_after_a_long_run_times_out(const lsvc_class *cls,
                                                  const lsvc_options *opts,
                                                  int64_t first_run_ns,
                                                  double at_least)
{
    struct probe p;
    probe_init(&p);
    p.slow_ns = first_run_ns;
    p.slow_runs = 1;
    p.during = hold_later_runs;
    log_capture();
    lsvc *svc = make_service(cls, &p, opts);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    ck_assert(sem_wait_for(&p.entered, 5)); /* the first run */
    ck_assert(sem_wait_for(&p.entered, 5)); /* the second, held */
    int64_t t0 = now_ns();
    int rc = lsvc_stop(svc, true);
    double took = seconds_since(t0);
    probe_release(&p);
    ck_assert_msg(rc == ETIMEDOUT, "lsvc_stop returned %d after %.3f s", rc,
                  took);
    ck_assert_msg(took >= at_least && took < 5.0,
                  "timed out after %.3f s, want %.3f s or a little more",
                  took, at_least);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_str_eq(p.events, "SRRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}

/* A run may take twice as long as the longest one seen before a blocking
 * stop gives up on it: on a 1 ms interval, a service whose first run took
 * 150 ms is waited for 300 ms. */
START_TEST(test_stop_bound_is_twice_the_longest_run)
{
    static const lsvc_class cls = PROBE_CLASS("LongRuns", 0.001);
    check_stop_after_a_long_run_times_out(&cls, NULL, 150 * NS_PER_MS, 0.29);
}
END_TEST

/* So a run as long as the ones before it is waited for: the second
 * 150 ms run of a 1 ms service, stopped as it begins, ends the stop with
 * 0 (with a 100 ms bound it timed out). */
START_TEST(test_stop_waits_for_a_run_as_long_as_the_ones_before)
{
    static const lsvc_class cls = PROBE_CLASS("SteadyLong", 0.001);
    struct probe p;
    probe_init(&p);
    p.slow_ns = 150 * NS_PER_MS;
    p.slow_runs = 2;
    log_capture();
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(sem_wait_for(&p.entered, 5)); /* the first run */
    ck_assert(probe_wait_runs(&p, 1, 5));   /* ...has ended */
    ck_assert(sem_wait_for(&p.entered, 5)); /* the second has begun */
    int64_t t0 = now_ns();
    int rc = lsvc_stop(svc, true);
    double took = seconds_since(t0);
    ck_assert_msg(rc == 0, "lsvc_stop returned %d after %.3f s, in the "
                  "second 150 ms run", rc, took);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_uint_eq(p.completed, 2);
    ck_assert_str_eq(p.events, "SRRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* In precise mode a stop may go unseen for one sleep step (100 ms): the
 * bound is 100 ms longer there. */
START_TEST(test_precise_stop_bound_adds_one_sleep_step)
{
    static const lsvc_class cls = PROBE_CLASS("PreciseStuck", 0.1);
    static const lsvc_options precise = {.precise = true};
    struct probe p;
    probe_init(&p);
    probe_hold(&p);
    log_capture();
    lsvc *svc = make_service(&cls, &p, &precise);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(sem_wait_for(&p.entered, 5));
    int64_t t0 = now_ns();
    int rc = lsvc_stop(svc, true);
    double took = seconds_since(t0);
    probe_release(&p);
    ck_assert_msg(rc == ETIMEDOUT, "lsvc_stop returned %d after %.3f s", rc,
                  took);
    ck_assert_msg(took >= 0.19 && took < 5.0,
                  "timed out after %.3f s, want 0.2 s or a little more",
                  took);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_str_eq(p.events, "SRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* on_stop that takes 10 ms, as closing a file or a connection may. */
static void slow_on_stop(lsvc *svc, void *arg)
{
    probe_on_stop(svc, arg);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += 10 * NS_PER_MS;
    until.tv_sec += until.tv_nsec / NS_PER_S;
    until.tv_nsec %= NS_PER_S;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) ==
           EINTR) {
    }
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
    struct probe p;
    probe_init(&p);
    log_capture();
    lsvc_set_log_level(LSVC_LOG_DEBUG);
    lsvc *svc = make_service(&cls, &p, &precise);
    for (int i = 0; i < TIMES; i++) {
        size_t from = log_size();
        ck_assert_int_eq(lsvc_start(svc, 0), 0);
        ck_assert(log_wait(from, LSVC_LOG_DEBUG,
                           "Finished running PreciseSleeper", 5, NULL));
        int64_t t0 = now_ns();
        int rc = lsvc_stop(svc, true);
        ck_assert_msg(rc == 0, "stop %d of %d returned %d after %.3f s", i + 1,
                      TIMES, rc, seconds_since(t0));
        ck_assert(!lsvc_is_running(svc));
    }
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
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
    static const lsvc_class cls = PROBE_CLASS("Unbounded", 0.01);
    struct probe p;
    probe_init(&p);
    probe_hold(&p);
    log_capture();
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(sem_wait_for(&p.entered, 5));
    ck_assert_int_eq(lsvc_stop_timeout(svc, NAN), EINVAL);
    ck_assert(lsvc_is_running(svc));

    struct bounded_stop b = {.svc = svc, .seconds = -1, .rc = -1};
    sem_init(&b.calling, 0, 0);
    sem_init(&b.done, 0, 0);
    pthread_t stopper;
    ck_assert_int_eq(pthread_create(&stopper, NULL, stop_with_timeout, &b), 0);
    ck_assert(sem_wait_for(&b.calling, 5));
    /* Well past the 100 ms any bound of this service would be. */
    bool returned = sem_wait_for(&b.done, 0.5);
    probe_release(&p);
    if (!returned)
        ck_assert(sem_wait_for(&b.done, 10));
    pthread_join(stopper, NULL);
    ck_assert_msg(!returned, "lsvc_stop_timeout(-1) returned %d while the "
                  "run was still held", b.rc);
    ck_assert_int_eq(b.rc, 0);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_str_eq(p.events, "SRT");
    sem_destroy(&b.calling);
    sem_destroy(&b.done);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_stop_timeout_zero_only_checks)
{
    static const lsvc_class cls = PROBE_CLASS("Checked", 60);
    struct probe p;
    probe_init(&p);
    probe_hold(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(sem_wait_for(&p.entered, 5));
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_stop_timeout(svc, 0), ETIMEDOUT);
    ck_assert_msg(seconds_since(t0) < 1.0, "a 0 s bound waited %.3f s",
                  seconds_since(t0));
    /* The stop was still requested: released, the service ends. */
    probe_release(&p);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_uint_eq(p.runs, 1);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_stop_is_idempotent)
{
    static const lsvc_class cls = PROBE_CLASS("Twice", 60);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    ck_assert_int_eq(lsvc_stop(svc, false), 0);
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_stop(svc, false), 0);
    ck_assert_int_eq(lsvc_stop_timeout(svc, 1), 0);
    ck_assert_str_eq(p.events, "SRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_stop_on_never_started_service_returns_0)
{
    static const lsvc_class cls = PROBE_CLASS("Idle", 60);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_stop(svc, false), 0);
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_stop_timeout(svc, 1), 0);
    ck_assert_int_eq(lsvc_join(svc, 1), 0);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_str_eq(p.events, "");
    /* A stop before the start does not stick to the next start. */
    ck_assert_int_eq(lsvc_start(svc, 1), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_uint_eq(p.runs, 1);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
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
    static const lsvc_class cls = PROBE_CLASS("Raced", 60);
    enum { N = 4 };
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    struct racer racers[N];
    pthread_t threads[N];
    for (int i = 0; i < N; i++) {
        racers[i] = (struct racer){.svc = svc, .go = &go, .rc = -1};
        ck_assert_int_eq(
            pthread_create(&threads[i], NULL, stop_racer, &racers[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_msg(racers[i].rc == 0, "stop %d returned %d", i,
                      racers[i].rc);
    }
    pthread_barrier_destroy(&go);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_str_eq(p.events, "SRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* --- From inside a run ---------------------------------------------------- */

struct inside {
    int (*call)(lsvc *svc);
    int rc;
};

static void call_inside(lsvc *svc, struct probe *p, uint64_t run)
{
    struct inside *in = p->user;
    if (run == 0)
        in->rc = in->call(svc);
}

static int stop_from_inside_blocking(lsvc *svc)
{
    return lsvc_stop(svc, true);
}

static int stop_from_inside_timeout(lsvc *svc)
{
    return lsvc_stop_timeout(svc, 5);
}

static int stop_from_inside_no_block(lsvc *svc)
{
    return lsvc_stop(svc, false);
}

/* Runs call() in the first run of a 10 ms service and returns its result;
 * the service must have ended after that run, as the stop asked. */
static int call_from_first_run(const lsvc_class *cls, int (*call)(lsvc *))
{
    struct probe p;
    probe_init(&p);
    struct inside in = {.call = call, .rc = -1};
    p.during = call_inside;
    p.user = &in;
    lsvc *svc = make_service(cls, &p, NULL);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_msg(seconds_since(t0) < 5.0, "the stop from inside hung");
    ck_assert_uint_eq(p.runs, 1);
    ck_assert_str_eq(p.events, "SRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
    return in.rc;
}

START_TEST(test_blocking_stop_from_inside_is_edeadlk)
{
    static const lsvc_class cls = PROBE_CLASS("SelfStop", 0.01);
    log_capture();
    ck_assert_int_eq(call_from_first_run(&cls, stop_from_inside_blocking),
                     EDEADLK);
    ck_assert(log_find(0, LSVC_LOG_WARNING, "SelfStop", NULL));
}
END_TEST

START_TEST(test_stop_timeout_from_inside_is_edeadlk)
{
    static const lsvc_class cls = PROBE_CLASS("SelfTimeout", 0.01);
    log_capture();
    ck_assert_int_eq(call_from_first_run(&cls, stop_from_inside_timeout),
                     EDEADLK);
    ck_assert(log_find(0, LSVC_LOG_WARNING, "SelfTimeout", NULL));
}
END_TEST

START_TEST(test_stop_without_block_from_inside_ends_after_the_run)
{
    static const lsvc_class cls = PROBE_CLASS("SelfEnd", 0.01);
    ck_assert_int_eq(call_from_first_run(&cls, stop_from_inside_no_block), 0);
}
END_TEST

static void join_inside(lsvc *svc, struct probe *p, uint64_t run)
{
    struct inside *in = p->user;
    if (run == 0)
        in->rc = lsvc_join(svc, 1);
}

START_TEST(test_join_from_inside_is_edeadlk)
{
    static const lsvc_class cls = PROBE_CLASS("SelfJoin", 60);
    struct probe p;
    probe_init(&p);
    struct inside in = {.rc = -1};
    p.during = join_inside;
    p.user = &in;
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    ck_assert_int_eq(in.rc, EDEADLK);
    ck_assert(lsvc_is_running(svc));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* --- Join and destroy ---------------------------------------------------- */

START_TEST(test_join_times_out_while_running)
{
    static const lsvc_class cls = PROBE_CLASS("Joined", 60);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_join(svc, 0.1), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= 0.1 && took < 5.0, "join waited %.3f s", took);
    /* Nothing changed: no stop was requested. */
    ck_assert(lsvc_is_running(svc));
    ck_assert_str_eq(p.events, "SR");
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_join_without_thread_returns_at_once)
{
    static const lsvc_class cls = PROBE_CLASS("Unstarted", 60);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_join(svc, -1), 0);
    ck_assert_int_eq(lsvc_join(svc, 5), 0);
    ck_assert_msg(seconds_since(t0) < 1.0, "join waited for no thread");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_restart_after_stop)
{
    static const lsvc_class cls = PROBE_CLASS("Again", 60);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    ck_assert(lsvc_is_running(svc));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_str_eq(p.events, "SRTSRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_start_reaps_an_ended_thread)
{
    static const lsvc_class cls = PROBE_CLASS("Reaped", 60);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 1), 0);
    ck_assert(wait_not_running(svc, 10));
    /* Not joined: lsvc_start reaps the ended thread itself. */
    ck_assert_int_eq(lsvc_start(svc, 1), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_str_eq(p.events, "SRTSRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_destroy_reaps_an_ended_thread)
{
    static const lsvc_class cls = PROBE_CLASS("Freed", 60);
    struct probe p;
    probe_init(&p);
    struct threads before;
    threads_baseline(&before);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 1), 0);
    ck_assert(wait_not_running(svc, 10));
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    ck_assert(wait_threads_back_to(&before, 5));
    ck_assert_str_eq(p.events, "SRT");
    probe_destroy(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stop");
    TCase *stop = timed_tcase("stop");
    tcase_add_test(stop, test_sleeping_service_stops_at_once);
    tcase_add_test(stop, test_stop_without_block_returns_at_once);
    tcase_add_test(stop, test_run_in_progress_finishes_before_stop_returns);
    tcase_add_test(stop, test_blocking_stop_waits_one_interval_then_times_out);
    tcase_add_test(stop, test_blocking_stop_waits_at_least_100_ms);
    tcase_add_test(stop, test_stop_timeout_uses_its_own_bound);
    tcase_add_test(stop, test_stop_bound_is_twice_the_longest_run);
    tcase_add_test(stop, test_stop_waits_for_a_run_as_long_as_the_ones_before);
    tcase_add_test(stop, test_precise_stop_bound_adds_one_sleep_step);
    tcase_add_test(stop, test_precise_stop_between_runs_returns_0_every_time);
    tcase_add_test(stop, test_negative_stop_timeout_waits_without_bound);
    tcase_add_test(stop, test_stop_timeout_zero_only_checks);
    tcase_add_test(stop, test_stop_is_idempotent);
    tcase_add_test(stop, test_stop_on_never_started_service_returns_0);
    tcase_add_test(stop, test_concurrent_stops_all_succeed);
    suite_add_tcase(s, stop);

    TCase *inside = timed_tcase("inside");
    tcase_add_test(inside, test_blocking_stop_from_inside_is_edeadlk);
    tcase_add_test(inside, test_stop_timeout_from_inside_is_edeadlk);
    tcase_add_test(inside, test_stop_without_block_from_inside_ends_after_the_run);
    tcase_add_test(inside, test_join_from_inside_is_edeadlk);
    suite_add_tcase(s, inside);

    TCase *reap = timed_tcase("join and destroy");
    tcase_add_test(reap, test_join_times_out_while_running);
    tcase_add_test(reap, test_join_without_thread_returns_at_once);
    tcase_add_test(reap, test_restart_after_stop);
    tcase_add_test(reap, test_start_reaps_an_ended_thread);
    tcase_add_test(reap, test_destroy_reaps_an_ended_thread);
    suite_add_tcase(s, reap);
    return run_suite(s);
}
