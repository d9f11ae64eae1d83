/*
 * Stopping and reaping a service: lsvc_stop with and without block, its
 * bound, lsvc_stop_timeout, lsvc_join, stops from inside a run, and
 * lsvc_destroy's reaping.
 */
#include "helpers.h"

#include <errno.h>
#include <stdlib.h>

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
