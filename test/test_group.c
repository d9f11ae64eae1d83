/*
 * Groups and signals. Each test runs in its own forked child, so a real
 * kill(getpid(), ...) reaches only that child: that it survives to finish
 * the test is part of what is checked.
 */
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const lsvc_class alpha_class = PROBE_CLASS("Alpha", 60);
static const lsvc_class beta_class = PROBE_CLASS("Beta", 60);

/* Two services, Alpha and Beta, in one group. */
struct two {
    struct probe pa, pb;
    lsvc *a, *b;
    lsvc_group *g;
    int rc; /* what a call made from inside a run returned */
};

static void two_init(struct two *t, const lsvc_class *a_cls,
                     const lsvc_class *b_cls)
{
    memset(t, 0, sizeof(*t));
    t->rc = -1;
    probe_init(&t->pa);
    probe_init(&t->pb);
    t->pa.user = t->pb.user = t;
    t->a = make_service(a_cls ? a_cls : &alpha_class, &t->pa, NULL);
    t->b = make_service(b_cls ? b_cls : &beta_class, &t->pb, NULL);
    ck_assert_int_eq(lsvc_group_create(&t->g), 0);
    ck_assert_int_eq(lsvc_group_add(t->g, t->a), 0);
    ck_assert_int_eq(lsvc_group_add(t->g, t->b), 0);
}

static void two_free(struct two *t)
{
    ck_assert_int_eq(lsvc_group_destroy(t->g), 0);
    ck_assert_int_eq(lsvc_destroy(t->a), 0);
    ck_assert_int_eq(lsvc_destroy(t->b), 0);
    probe_destroy(&t->pa);
    probe_destroy(&t->pb);
}

static void two_wait_first_runs(struct two *t)
{
    ck_assert(sem_wait_for(&t->pa.entered, 5));
    ck_assert(sem_wait_for(&t->pb.entered, 5));
}

static bool ended_with_on_stop(const char *events)
{
    size_t n = strlen(events);
    return n > 0 && events[n - 1] == 'T';
}

/* Waits for the group, which must end within 5 s, and checks that both
 * services ended after their on_stop. */
static void two_wait_stopped(struct two *t)
{
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_wait(t->g), 0);
    ck_assert_msg(seconds_since(t0) < 5.0, "the group took %.3f s to stop",
                  seconds_since(t0));
    ck_assert(!lsvc_is_running(t->a));
    ck_assert(!lsvc_is_running(t->b));
    ck_assert_msg(ended_with_on_stop(t->pa.events), "%s", t->pa.events);
    ck_assert_msg(ended_with_on_stop(t->pb.events), "%s", t->pb.events);
}

/* --- Signals ------------------------------------------------------------ */

static void check_signal_stops_group(int sig, const char *logged)
{
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    log_capture();
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_first_runs(&t);
    ck_assert_int_eq(kill(getpid(), sig), 0);
    two_wait_stopped(&t);
    ck_assert_msg(log_find(0, 0, logged, NULL), "nothing logged \"%s\"",
                  logged);
    two_free(&t);
}

/* A sink that waits for the group from the signal thread, which logs the
 * stop: the wait would block the thread that stops the group. */
static lsvc_group *sink_group;
static int sink_wait_rc = -1;

static void waiting_sink(int level, const char *logger, const char *message,
                         void *ctx)
{
    if (strstr(message, "received SIGTERM") != NULL)
        sink_wait_rc = lsvc_group_wait(sink_group);
    log_capture_sink(level, logger, message, ctx);
}

START_TEST(test_group_wait_from_the_signal_thread_is_edeadlk)
{
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    log_capture();
    struct two t;
    two_init(&t, NULL, NULL);
    sink_group = t.g;
    lsvc_set_logger(waiting_sink, NULL);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_first_runs(&t);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    two_wait_stopped(&t);
    ck_assert_int_eq(sink_wait_rc, EDEADLK);
    two_free(&t);
}
END_TEST

START_TEST(test_sigterm_stops_group_and_process_survives)
{
    check_signal_stops_group(SIGTERM, "received SIGTERM: stopping 2 services");
}
END_TEST

START_TEST(test_sigint_stops_group_and_process_survives)
{
    check_signal_stops_group(SIGINT, "received SIGINT");
}
END_TEST

START_TEST(test_group_start_blocks_signals_in_caller)
{
    default_signal_actions();
    unblock_stop_signals();
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    ck_assert(signal_blocked(SIGINT));
    ck_assert(signal_blocked(SIGTERM));
    two_wait_first_runs(&t);
    /* Without lsvc_block_signals(): the caller's mask set by the group is
     * what keeps this process alive. */
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    two_wait_stopped(&t);
    two_free(&t);
}
END_TEST

START_TEST(test_group_wait_restores_caller_mask)
{
    unblock_stop_signals();
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_first_runs(&t);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    two_wait_stopped(&t);
    ck_assert(!signal_blocked(SIGINT));
    ck_assert(!signal_blocked(SIGTERM));
    two_free(&t);
}
END_TEST

START_TEST(test_no_thread_left_after_group_wait)
{
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    struct threads before;
    threads_baseline(&before);
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_first_runs(&t);
    /* Two services and the signal thread. */
    ck_assert_int_eq(threads_added(&before), 3);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    two_wait_stopped(&t);
    ck_assert_msg(wait_threads_back_to(&before, 5), "%d threads left",
                  threads_added(&before));
    two_free(&t);
}
END_TEST

START_TEST(test_pending_signal_stops_group_at_once)
{
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    log_capture();
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_stopped(&t);
    ck_assert(log_find(0, 0, "received SIGTERM", NULL));
    two_free(&t);
}
END_TEST

START_TEST(test_second_signal_logs_services_still_running)
{
    static const lsvc_class stuck_class = PROBE_CLASS("StuckSvc", 30);
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    log_capture();
    struct two t;
    two_init(&t, &stuck_class, NULL);
    probe_hold(&t.pa);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_first_runs(&t);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    ck_assert(log_wait(0, 0, "received SIGTERM", 5, NULL));
    size_t from = log_size();
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    struct log_record r;
    ck_assert_msg(log_wait(from, 0, "StuckSvc", 5, &r),
                  "the second signal did not name the running service");
    ck_assert_str_eq(r.logger, "loopsvc");
    probe_release(&t.pa);
    two_wait_stopped(&t);
    two_free(&t);
}
END_TEST

START_TEST(test_group_handles_the_signals_it_is_given)
{
    default_signal_actions();
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &usr1, NULL), 0);
    unblock_stop_signals();
    log_capture();
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_set_signals(t.g, &usr1), 0);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    ck_assert(!signal_blocked(SIGTERM));
    two_wait_first_runs(&t);
    ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
    two_wait_stopped(&t);
    ck_assert(log_find(0, 0, "received SIGUSR1", NULL));
    two_free(&t);
}
END_TEST

START_TEST(test_group_without_signals_has_no_signal_thread)
{
    unblock_stop_signals();
    struct threads before;
    threads_baseline(&before);
    sigset_t empty;
    sigemptyset(&empty);
    /* NULL and an empty set both mean: handle no signal. */
    const sigset_t *sets[] = {NULL, &empty};
    for (int i = 0; i < 2; i++) {
        struct two t;
        two_init(&t, NULL, NULL);
        ck_assert_int_eq(lsvc_group_set_signals(t.g, sets[i]), 0);
        ck_assert_int_eq(lsvc_group_start(t.g), 0);
        ck_assert(!signal_blocked(SIGINT));
        ck_assert(!signal_blocked(SIGTERM));
        two_wait_first_runs(&t);
        ck_assert_int_eq(threads_added(&before), 2);
        ck_assert_int_eq(lsvc_group_stop(t.g), 0);
        two_wait_stopped(&t);
        two_free(&t);
        ck_assert(wait_threads_back_to(&before, 5));
    }
}
END_TEST

/* --- Stopping from inside and on their own -------------------------------- */

static void group_stop_inside(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    struct two *t = p->user;
    if (run == 0)
        t->rc = lsvc_group_stop(t->g);
}

START_TEST(test_group_stop_from_inside_a_run)
{
    static const lsvc_class stopper = PROBE_CLASS("Stopper", 0.01);
    struct two t;
    two_init(&t, &stopper, NULL);
    t.pa.during = group_stop_inside;
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_stopped(&t);
    ck_assert_int_eq(t.rc, 0);
    ck_assert_uint_eq(t.pa.runs, 1);
    two_free(&t);
}
END_TEST

START_TEST(test_group_run_returns_when_stopped_from_a_run)
{
    static const lsvc_class stopper = PROBE_CLASS("Stopper", 0.01);
    struct two t;
    two_init(&t, &stopper, NULL);
    t.pa.during = group_stop_inside;
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_run(t.g), 0);
    ck_assert_msg(seconds_since(t0) < 5.0, "lsvc_group_run took %.3f s",
                  seconds_since(t0));
    ck_assert_int_eq(t.rc, 0);
    ck_assert(!lsvc_is_running(t.a));
    ck_assert(!lsvc_is_running(t.b));
    two_free(&t);
}
END_TEST

static void stop_self(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)p;
    if (run == 1)
        lsvc_stop(svc, false);
}

START_TEST(test_group_wait_returns_when_services_end_on_their_own)
{
    static const lsvc_class a_cls = PROBE_CLASS("SelfA", 0.01);
    static const lsvc_class b_cls = PROBE_CLASS("SelfB", 0.01);
    struct two t;
    two_init(&t, &a_cls, &b_cls);
    t.pa.during = t.pb.during = stop_self;
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_stopped(&t);
    ck_assert_uint_eq(t.pa.runs, 2);
    ck_assert_uint_eq(t.pb.runs, 2);
    two_free(&t);
}
END_TEST

static void group_wait_inside(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    struct two *t = p->user;
    if (run == 0)
        t->rc = lsvc_group_wait(t->g);
}

START_TEST(test_group_wait_from_a_service_is_edeadlk)
{
    struct two t;
    two_init(&t, NULL, NULL);
    t.pa.during = group_wait_inside;
    /* Held until lsvc_group_start has returned, so that the group is
     * started when the run calls lsvc_group_wait. */
    probe_hold(&t.pa);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    probe_release(&t.pa);
    ck_assert(probe_wait_runs(&t.pa, 1, 5));
    ck_assert_int_eq(t.rc, EDEADLK);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    two_wait_stopped(&t);
    two_free(&t);
}
END_TEST

START_TEST(test_group_stop_is_idempotent_and_0_when_not_started)
{
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    ck_assert(!lsvc_is_running(t.a));
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_first_runs(&t);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    two_wait_stopped(&t);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    two_free(&t);
}
END_TEST

START_TEST(test_stuck_service_makes_group_wait_time_out)
{
    static const lsvc_class stuck_class = PROBE_CLASS("StuckSvc", 60);
    log_capture();
    struct two t;
    two_init(&t, &stuck_class, NULL);
    probe_hold(&t.pa);
    ck_assert_int_eq(lsvc_group_set_stop_timeout(t.g, 0.2), 0);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_first_runs(&t);
    size_t from = log_size();
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    ck_assert_int_eq(lsvc_group_wait(t.g), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= 0.2 && took < 5.0, "gave up after %.3f s", took);
    ck_assert_msg(log_find(from, LSVC_LOG_WARNING, "StuckSvc", NULL) ||
                      log_find(from, LSVC_LOG_ERROR, "StuckSvc", NULL),
                  "the stuck service was not named");
    ck_assert(lsvc_is_running(t.a));
    ck_assert(!lsvc_is_running(t.b));
    probe_release(&t.pa);
    ck_assert_int_eq(lsvc_join(t.a, 10), 0);
    ck_assert_str_eq(t.pa.events, "SRT");
    two_free(&t);
}
END_TEST

/* --- Life cycle ----------------------------------------------------------- */

START_TEST(test_group_can_start_again_after_wait)
{
    struct two t;
    two_init(&t, NULL, NULL);
    for (int round = 0; round < 2; round++) {
        ck_assert_int_eq(lsvc_group_start(t.g), 0);
        two_wait_first_runs(&t);
        ck_assert_int_eq(lsvc_group_stop(t.g), 0);
        two_wait_stopped(&t);
    }
    ck_assert_str_eq(t.pa.events, "SRTSRT");
    two_free(&t);
}
END_TEST

START_TEST(test_group_start_twice_is_ebusy)
{
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    ck_assert_int_eq(lsvc_group_start(t.g), EBUSY);
    two_wait_first_runs(&t);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    two_wait_stopped(&t);
    ck_assert_str_eq(t.pa.events, "SRT");
    two_free(&t);
}
END_TEST

/* A member that another thread could restart would escape the group's
 * stop, and one it could start first would be stopped by the group's undo. */
START_TEST(test_members_of_a_started_group_cannot_be_started_alone)
{
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    two_wait_first_runs(&t);
    ck_assert_int_eq(lsvc_start(t.a, 0), EBUSY);
    ck_assert_int_eq(lsvc_stop(t.a, true), 0);
    ck_assert_int_eq(lsvc_start(t.a, 0), EBUSY);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    ck_assert_int_eq(lsvc_group_wait(t.g), 0);
    /* Once the group has ended, the services are the caller's again. */
    ck_assert_int_eq(lsvc_start(t.a, 1), 0);
    ck_assert_int_eq(lsvc_join(t.a, 10), 0);
    ck_assert_uint_eq(probe_runs(&t.pa), 2);
    two_free(&t);
}
END_TEST

START_TEST(test_group_start_with_a_running_service_is_undone)
{
    unblock_stop_signals();
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_start(t.b, 0), 0);
    ck_assert(sem_wait_for(&t.pb.entered, 5));
    ck_assert_int_eq(lsvc_group_start(t.g), EBUSY);
    ck_assert(!lsvc_is_running(t.a));
    ck_assert(!signal_blocked(SIGINT));
    ck_assert(!signal_blocked(SIGTERM));
    ck_assert_int_eq(lsvc_group_wait(t.g), EINVAL);
    ck_assert_int_eq(lsvc_stop(t.b, true), 0);
    two_free(&t);
}
END_TEST

/* A service that cannot start (here: EPERM for its priority) fails the
 * whole start, and what was started is undone. */
START_TEST(test_group_start_failure_is_undone)
{
    static const lsvc_class rt_class = PROBE_CLASS("Realtime", 60);
    drop_realtime_permission();
    unblock_stop_signals();
    struct threads before;
    threads_baseline(&before);
    struct two t;
    two_init(&t, NULL, NULL);
    struct probe rp;
    probe_init(&rp);
    lsvc_options rt = {.sched_priority = 10};
    lsvc *realtime = make_service(&rt_class, &rp, &rt);
    ck_assert_int_eq(lsvc_group_add(t.g, realtime), 0);
    ck_assert_int_eq(lsvc_group_start(t.g), EPERM);
    ck_assert(!lsvc_is_running(t.a));
    ck_assert(!lsvc_is_running(t.b));
    ck_assert(!signal_blocked(SIGINT));
    ck_assert(!signal_blocked(SIGTERM));
    ck_assert_msg(wait_threads_back_to(&before, 5), "%d threads left",
                  threads_added(&before));
    /* Started and stopped again, or never started. */
    const char *ev = t.pa.events;
    ck_assert_msg(!*ev || (ev[0] == 'S' && ended_with_on_stop(ev)),
                  "Alpha's hooks: %s", ev);
    ck_assert_str_eq(rp.events, "");
    ck_assert_int_eq(lsvc_group_wait(t.g), EINVAL);
    two_free(&t);
    ck_assert_int_eq(lsvc_destroy(realtime), 0);
    probe_destroy(&rp);
}
END_TEST

START_TEST(test_group_settings_while_started_are_ebusy)
{
    static const lsvc_class cls = PROBE_CLASS("Late", 60);
    struct probe p;
    probe_init(&p);
    lsvc *late = make_service(&cls, &p, NULL);
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    sigset_t set;
    sigemptyset(&set);
    ck_assert_int_eq(lsvc_group_set_signals(t.g, &set), EBUSY);
    ck_assert_int_eq(lsvc_group_set_stop_timeout(t.g, 1), EBUSY);
    ck_assert_int_eq(lsvc_group_add(t.g, late), EBUSY);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    two_wait_stopped(&t);
    ck_assert(!lsvc_is_running(late));
    two_free(&t);
    ck_assert_int_eq(lsvc_destroy(late), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_group_destroy_while_started_is_ebusy)
{
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_start(t.g), 0);
    ck_assert_int_eq(lsvc_group_destroy(t.g), EBUSY);
    two_wait_first_runs(&t);
    ck_assert_int_eq(lsvc_group_stop(t.g), 0);
    two_wait_stopped(&t);
    two_free(&t);
}
END_TEST

START_TEST(test_destroy_of_a_service_in_a_group_is_ebusy)
{
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_destroy(t.a), EBUSY);
    ck_assert_str_eq(lsvc_name(t.a), "Alpha");
    two_free(&t);
}
END_TEST

START_TEST(test_group_destroy_leaves_services_alone)
{
    struct two t;
    two_init(&t, NULL, NULL);
    ck_assert_int_eq(lsvc_group_destroy(t.g), 0);
    /* Released: usable on their own, and free to join another group. */
    ck_assert_int_eq(lsvc_start(t.a, 1), 0);
    ck_assert_int_eq(lsvc_join(t.a, 10), 0);
    ck_assert_str_eq(t.pa.events, "SRT");
    ck_assert_int_eq(lsvc_group_create(&t.g), 0);
    ck_assert_int_eq(lsvc_group_add(t.g, t.a), 0);
    ck_assert_int_eq(lsvc_group_add(t.g, t.b), 0);
    two_free(&t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("group");
    TCase *sig = timed_tcase("signals");
    tcase_add_test(sig, test_sigterm_stops_group_and_process_survives);
    tcase_add_test(sig, test_group_wait_from_the_signal_thread_is_edeadlk);
    tcase_add_test(sig, test_sigint_stops_group_and_process_survives);
    tcase_add_test(sig, test_group_start_blocks_signals_in_caller);
    tcase_add_test(sig, test_group_wait_restores_caller_mask);
    tcase_add_test(sig, test_no_thread_left_after_group_wait);
    tcase_add_test(sig, test_pending_signal_stops_group_at_once);
    tcase_add_test(sig, test_second_signal_logs_services_still_running);
    tcase_add_test(sig, test_group_handles_the_signals_it_is_given);
    tcase_add_test(sig, test_group_without_signals_has_no_signal_thread);
    suite_add_tcase(s, sig);

    TCase *stop = timed_tcase("stopping");
    tcase_add_test(stop, test_group_stop_from_inside_a_run);
    tcase_add_test(stop, test_group_run_returns_when_stopped_from_a_run);
    tcase_add_test(stop, test_group_wait_returns_when_services_end_on_their_own);
    tcase_add_test(stop, test_group_wait_from_a_service_is_edeadlk);
    tcase_add_test(stop, test_group_stop_is_idempotent_and_0_when_not_started);
    tcase_add_test(stop, test_stuck_service_makes_group_wait_time_out);
    suite_add_tcase(s, stop);

    TCase *life = timed_tcase("life cycle");
    tcase_add_test(life, test_group_can_start_again_after_wait);
    tcase_add_test(life, test_group_start_twice_is_ebusy);
    tcase_add_test(life, test_members_of_a_started_group_cannot_be_started_alone);
    tcase_add_test(life, test_group_start_with_a_running_service_is_undone);
    tcase_add_test(life, test_group_start_failure_is_undone);
    tcase_add_test(life, test_group_settings_while_started_are_ebusy);
    tcase_add_test(life, test_group_destroy_while_started_is_ebusy);
    tcase_add_test(life, test_destroy_of_a_service_in_a_group_is_ebusy);
    tcase_add_test(life, test_group_destroy_leaves_services_alone);
    suite_add_tcase(s, life);
    return run_suite(s);
}
