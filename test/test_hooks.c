/*
 * on_start and on_stop: once per start, in order around the runs, on the
 * service thread; and what a failing on_start does.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "helpers.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

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

/* A failing on_start: lsvc_start says so (ECANCELED) once the thread has
 * ended and been reaped, with no run and no on_stop; the service can be
 * started again. */
START_TEST(test_failed_on_start_is_ecanceled_with_no_thread_left)
{
    log_capture();
    struct threads before;
    threads_baseline(&before);
    struct fx *f = fx_new("BadStart", 0.01, NULL);
    f->p.start_code = 7;
    ck_assert_int_eq(lsvc_start(f->svc, 0), ECANCELED);
    /* Reaped already: nothing running, and no thread to join. */
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert_int_eq(lsvc_join(f->svc, 0), 0);
    ck_assert_msg(wait_threads_back_to(&before, 5), "%d threads left",
                  threads_added(&before));
    ck_assert_str_eq(f->p.events, "S");
    lsvc_stats st = stats_of(f->svc);
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_uint_eq(st.loops, 0);
    ck_assert(log_find(0, LSVC_LOG_ERROR, "BadStart", NULL));

    /* Started again, with an on_start that succeeds this time. */
    f->p.start_code = 0;
    fx_run(f, 1);
    ck_assert_str_eq(f->p.events, "SSRT");
}
END_TEST

/* An on_start held on a semaphore: lsvc_start does not return until it
 * has returned. */
static void *start_one_loop(void *arg)
{
    return (void *)(intptr_t)lsvc_start(arg, 1);
}

static int on_start_at_release(lsvc *svc, void *arg)
{
    struct probe *p = arg;
    int rc = probe_on_start(svc, arg);
    ck_assert(sem_wait_for(&p->release, 10));
    probe_note(p, 'G');
    return rc;
}

START_TEST(test_start_returns_once_on_start_has_returned)
{
    static const lsvc_class cls = {
        .name = "SlowStart", .loop_seconds = 60, .run_once = probe_run_once,
        .on_start = on_start_at_release, .on_stop = probe_on_stop};
    struct fx *f = fx_new_class(&cls, NULL);
    pthread_t starter;
    ck_assert_int_eq(pthread_create(&starter, NULL, start_one_loop, f->svc),
                     0);
    ck_assert(sem_wait_for(&f->p.started, 5));
    /* Time is the point: lsvc_start must still be waiting for on_start. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 300 * 1000 * 1000;
    if (until.tv_nsec >= NS_PER_S) {
        until.tv_sec++;
        until.tv_nsec -= NS_PER_S;
    }
    void *rc;
    ck_assert_msg(pthread_timedjoin_np(starter, &rc, &until) == ETIMEDOUT,
                  "lsvc_start returned while on_start was still running");
    sem_post(&f->p.release);
    ck_assert_int_eq(pthread_join(starter, &rc), 0);
    ck_assert_int_eq((int)(intptr_t)rc, 0);
    /* on_start had ended (G) by then; the run may or may not have begun. */
    pthread_mutex_lock(&f->p.lock);
    bool ended = starts_with(f->p.events, "SG");
    pthread_mutex_unlock(&f->p.lock);
    ck_assert(ended);
    ck_assert_int_eq(lsvc_join(f->svc, 10), 0);
    ck_assert_str_eq(f->p.events, "SGRT");
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
        test_failed_on_start_is_ecanceled_with_no_thread_left,
        test_start_returns_once_on_start_has_returned,
        test_hooks_are_optional, NULL});
    return run_suite(s);
}
