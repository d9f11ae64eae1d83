/*
 * on_start and on_stop: once per start, in order around the runs, on the
 * service thread; and what a failing on_start does.
 */
#include "helpers.h"

#include <stdlib.h>

START_TEST(test_hooks_run_once_per_start_around_the_runs)
{
    static const lsvc_class cls = PROBE_CLASS("Hooked", 0.01);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 2), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_str_eq(p.events, "SRRT");
    ck_assert_int_eq(lsvc_start(svc, 1), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_str_eq(p.events, "SRRTSRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_hooks_run_on_the_service_thread)
{
    static const lsvc_class cls = PROBE_CLASS("Threaded", 0.01);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 1), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_str_eq(p.events, "SRT");
    ck_assert(pthread_equal(p.start_thread, p.run_thread));
    ck_assert(pthread_equal(p.stop_thread, p.run_thread));
    ck_assert(!pthread_equal(p.run_thread, pthread_self()));
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_on_stop_runs_when_stopped_before_first_run)
{
    static const lsvc_class cls = PROBE_CLASS("Early", 60);
    struct probe p;
    probe_init(&p);
    lsvc_options o = {.initial_delay = 60};
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(sem_wait_for(&p.started, 5));
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_msg(seconds_since(t0) < 1.0,
                  "stopping during the initial delay took %.3f s",
                  seconds_since(t0));
    ck_assert_str_eq(p.events, "ST");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_failed_on_start_skips_runs_and_on_stop)
{
    static const lsvc_class cls = PROBE_CLASS("BadStart", 0.01);
    struct probe p;
    probe_init(&p);
    p.start_code = 7;
    log_capture();
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    /* It ends by itself, without a stop. */
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_str_eq(p.events, "S");
    lsvc_stats st;
    ck_assert_int_eq(lsvc_get_stats(svc, &st), 0);
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_uint_eq(st.loops, 0);
    ck_assert(log_find(0, LSVC_LOG_ERROR, "BadStart", NULL));
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

static int count_run(lsvc *svc, void *arg)
{
    (void)svc;
    struct probe *p = arg;
    sem_post(&p->ran);
    return 0;
}

START_TEST(test_hooks_are_optional)
{
    static const lsvc_class cls = {
        .name = "Bare", .loop_seconds = 0.01, .run_once = count_run};
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 2), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert(sem_trywait(&p.ran) == 0 && sem_trywait(&p.ran) == 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hooks");
    TCase *tc = timed_tcase("hooks");
    tcase_add_test(tc, test_hooks_run_once_per_start_around_the_runs);
    tcase_add_test(tc, test_hooks_run_on_the_service_thread);
    tcase_add_test(tc, test_on_stop_runs_when_stopped_before_first_run);
    tcase_add_test(tc, test_failed_on_start_skips_runs_and_on_stop);
    tcase_add_test(tc, test_hooks_are_optional);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
