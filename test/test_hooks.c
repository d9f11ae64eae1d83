/*
 * on_start and on_stop: once per start, in order around the runs, on the
 * service thread; and what a failing on_start does.
 */
#include "helpers.h"

#include <stdlib.h>

START_TEST(test_hooks_run_once_per_start_around_the_runs)
{
    struct fx *f = fx_new("Hooked", 0.01, NULL);
    fx_run(f, 2);
    ck_assert_str_eq(f->p.events, "SRRT");
    fx_run(f, 1);
    ck_assert_str_eq(f->p.events, "SRRTSRT");
}
END_TEST

START_TEST(test_hooks_run_on_the_service_thread)
{
    struct fx *f = fx_new("Threaded", 0.01, NULL);
    fx_run(f, 1);
    ck_assert_str_eq(f->p.events, "SRT");
    ck_assert(pthread_equal(f->p.start_thread, f->p.run_thread));
    ck_assert(pthread_equal(f->p.stop_thread, f->p.run_thread));
    ck_assert(!pthread_equal(f->p.run_thread, pthread_self()));
}
END_TEST

START_TEST(test_on_stop_runs_when_stopped_before_first_run)
{
    lsvc_options o = {.initial_delay = 60};
    struct fx *f = fx_new("Early", 60, &o);
    fx_start(f, 0);
    ck_assert(sem_wait_for(&f->p.started, 5));
    int64_t t0 = now_ns();
    fx_stop(f);
    ck_assert_msg(seconds_since(t0) < 1.0,
                  "stopping during the initial delay took %.3f s",
                  seconds_since(t0));
    ck_assert_str_eq(f->p.events, "ST");
}
END_TEST

START_TEST(test_failed_on_start_skips_runs_and_on_stop)
{
    log_capture();
    struct fx *f = fx_new("BadStart", 0.01, NULL);
    f->p.start_code = 7;
    /* It ends by itself, without a stop. */
    fx_run(f, 0);
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert_str_eq(f->p.events, "S");
    lsvc_stats st = stats_of(f->svc);
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_uint_eq(st.loops, 0);
    ck_assert(log_find(0, LSVC_LOG_ERROR, "BadStart", NULL));
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
    struct fx *f = fx_new_class(&cls, NULL);
    fx_run(f, 2);
    ck_assert(sem_trywait(&f->p.ran) == 0 && sem_trywait(&f->p.ran) == 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hooks");
    add_tests(s, "hooks", (const TTest *[]){
        test_hooks_run_once_per_start_around_the_runs,
        test_hooks_run_on_the_service_thread,
        test_on_stop_runs_when_stopped_before_first_run,
        test_failed_on_start_skips_runs_and_on_stop,
        test_hooks_are_optional, NULL});
    return run_suite(s);
}
