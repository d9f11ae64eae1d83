/*
 * Groups and signals. Each test runs in its own forked child, so a real
 * kill(getpid(), ...) reaches only that child: that it survives to finish
 * the test is part of what is checked.
 */
#include "helpers.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Two services in one group: `a` (of interval a_seconds), and Beta, due
 * every minute. */
static struct gfx *two_named(const char *a, double a_seconds)
{
    struct gfx *t = gfx_new();
    gfx_add(t, a, a_seconds, NULL);
    gfx_add(t, "Beta", 60, NULL);
    return t;
}

/* Alpha and Beta, both due every minute. */
static struct gfx *two(void)
{
    return two_named("Alpha", 60);
}

/* Waits for the group, which must end within 5 s, and checks that both
 * services ended after their on_stop. */
static void two_wait_stopped(struct gfx *t)
{
    gfx_wait(t);
    for (int i = 0; i < 2; i++)
        ck_assert_msg(ended_with_on_stop(t->m[i].p.events), "%s",
                      t->m[i].p.events);
}

/* Stops the group, then two_wait_stopped. */
static void two_stop(struct gfx *t)
{
    ck_assert_int_eq(lsvc_group_stop(t->g), 0);
    two_wait_stopped(t);
}

/* Starts the group and waits for both first runs. */
static void two_start(struct gfx *t)
{
    gfx_start(t);
    gfx_wait_first_runs(t);
}

/* What a run saw of the call it made on the group. */
static int inside_rc = -1;

/* --- Signals ------------------------------------------------------------ */

/* The process as a program with a group would set it up: signals with
 * their default action, blocked before any thread. */
static void block_as_a_program_does(void)
{
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
}

static void check_signal_stops_group(int sig, const char *logged)
{
    block_as_a_program_does();
    log_capture_info();
    struct gfx *t = two();
    two_start(t);
    ck_assert_int_eq(kill(getpid(), sig), 0);
    two_wait_stopped(t);
    ck_assert_msg(log_find(0, 0, logged, NULL), "nothing logged \"%s\"",
                  logged);
}

/* A sink that waits for the group from the signal thread, which logs the
 * stop: the wait would block the thread that stops the group. */
static lsvc_group *sink_group;

static void waiting_sink(int level, const char *logger, const char *message,
                         void *ctx)
{
    if (strstr(message, "received SIGTERM") != NULL)
        inside_rc = lsvc_group_wait(sink_group);
    log_capture_sink(level, logger, message, ctx);
}

START_TEST(test_group_wait_from_the_signal_thread_is_edeadlk)
{
    block_as_a_program_does();
    log_capture_info();
    struct gfx *t = two();
    sink_group = t->g;
    lsvc_set_logger(waiting_sink, NULL);
    two_start(t);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    two_wait_stopped(t);
    ck_assert_int_eq(inside_rc, EDEADLK);
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

/* Whether the calling thread blocks SIGINT and SIGTERM: both, or neither. */
static void check_stop_signals_blocked(bool blocked)
{
    ck_assert(signal_blocked(SIGINT) == blocked);
    ck_assert(signal_blocked(SIGTERM) == blocked);
}

START_TEST(test_group_start_blocks_signals_in_caller)
{
    default_signal_actions();
    unblock_stop_signals();
    struct gfx *t = two();
    gfx_start(t);
    check_stop_signals_blocked(true);
    gfx_wait_first_runs(t);
    /* Without lsvc_block_signals(): the caller's mask set by the group is
     * what keeps this process alive. */
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    two_wait_stopped(t);
}
END_TEST

START_TEST(test_group_wait_restores_caller_mask)
{
    unblock_stop_signals();
    struct gfx *t = two();
    two_start(t);
    two_stop(t);
    check_stop_signals_blocked(false);
}
END_TEST

START_TEST(test_no_thread_left_after_group_wait)
{
    block_as_a_program_does();
    struct threads before;
    threads_baseline(&before);
    struct gfx *t = two();
    two_start(t);
    /* Two services and the signal thread. */
    ck_assert_int_eq(threads_added(&before), 3);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    two_wait_stopped(t);
    ck_assert_msg(wait_threads_back_to(&before, 5), "%d threads left",
                  threads_added(&before));
}
END_TEST

START_TEST(test_pending_signal_stops_group_at_once)
{
    block_as_a_program_does();
    log_capture_info();
    struct gfx *t = two();
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    gfx_start(t);
    two_wait_stopped(t);
    ck_assert(log_find(0, 0, "received SIGTERM", NULL));
}
END_TEST

START_TEST(test_second_signal_logs_services_still_running)
{
    block_as_a_program_does();
    log_capture_info();
    struct gfx *t = two_named("StuckSvc", 30);
    probe_hold(&t->m[0].p);
    two_start(t);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    ck_assert(log_wait(0, 0, "received SIGTERM", 5, NULL));
    size_t from = log_size();
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    struct log_record r;
    ck_assert_msg(log_wait(from, 0, "StuckSvc", 5, &r),
                  "the second signal did not name the running service");
    ck_assert_str_eq(r.logger, "loopsvc");
    probe_release(&t->m[0].p);
    two_wait_stopped(t);
}
END_TEST

START_TEST(test_group_handles_the_signals_it_is_given)
{
    default_signal_actions();
    const sigset_t usr1 = signal_set_of(SIGUSR1);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &usr1, NULL), 0);
    unblock_stop_signals();
    log_capture_info();
    struct gfx *t = two();
    ck_assert_int_eq(lsvc_group_set_signals(t->g, &usr1), 0);
    gfx_start(t);
    ck_assert(!signal_blocked(SIGTERM));
    gfx_wait_first_runs(t);
    ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
    two_wait_stopped(t);
    ck_assert(log_find(0, 0, "received SIGUSR1", NULL));
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
        struct gfx *t = two();
        ck_assert_int_eq(lsvc_group_set_signals(t->g, sets[i]), 0);
        gfx_start(t);
        check_stop_signals_blocked(false);
        gfx_wait_first_runs(t);
        ck_assert_int_eq(threads_added(&before), 2);
        two_stop(t);
        gfx_free(t);
        ck_assert(wait_threads_back_to(&before, 5));
    }
}
END_TEST

/* --- Stopping from inside and on their own -------------------------------- */

/* The call on the group that the first run of a member makes. */
static int (*inside_call)(lsvc_group *g);

static void call_group_inside(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    struct gfx *t = p->user;
    if (run == 0)
        inside_rc = inside_call(t->g);
}

/* Makes the first run of member 0 call `call` on the group. */
static void call_from_first_run(struct gfx *t, int (*call)(lsvc_group *g))
{
    inside_call = call;
    t->m[0].p.during = call_group_inside;
    t->m[0].p.user = t;
}

/* Stopper, of 10 ms, whose first run stops the group, and Beta. */
static struct gfx *two_with_a_stopper(void)
{
    struct gfx *t = two_named("Stopper", 0.01);
    call_from_first_run(t, lsvc_group_stop);
    return t;
}

START_TEST(test_group_stop_from_inside_a_run)
{
    struct gfx *t = two_with_a_stopper();
    gfx_start(t);
    two_wait_stopped(t);
    ck_assert_int_eq(inside_rc, 0);
    ck_assert_uint_eq(t->m[0].p.runs, 1);
}
END_TEST

START_TEST(test_group_run_returns_when_stopped_from_a_run)
{
    struct gfx *t = two_with_a_stopper();
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_run(t->g), 0);
    ck_assert_msg(seconds_since(t0) < 5.0, "lsvc_group_run took %.3f s",
                  seconds_since(t0));
    ck_assert_int_eq(inside_rc, 0);
    ck_assert(!lsvc_is_running(t->m[0].svc));
    ck_assert(!lsvc_is_running(t->m[1].svc));
}
END_TEST

START_TEST(test_group_wait_returns_when_services_end_on_their_own)
{
    struct gfx *t = gfx_new();
    gfx_add(t, "SelfA", 0.01, NULL);
    gfx_add(t, "SelfB", 0.01, NULL);
    t->m[0].p.during = t->m[1].p.during = stop_at_second_run;
    gfx_start(t);
    two_wait_stopped(t);
    ck_assert_uint_eq(t->m[0].p.runs, 2);
    ck_assert_uint_eq(t->m[1].p.runs, 2);
}
END_TEST

START_TEST(test_group_wait_from_a_service_is_edeadlk)
{
    struct gfx *t = two();
    call_from_first_run(t, lsvc_group_wait);
    /* Held until lsvc_group_start has returned, so that the group is
     * started when the run calls lsvc_group_wait. */
    probe_hold(&t->m[0].p);
    gfx_start(t);
    probe_release(&t->m[0].p);
    ck_assert(probe_wait_runs(&t->m[0].p, 1, 5));
    ck_assert_int_eq(inside_rc, EDEADLK);
    two_stop(t);
}
END_TEST

START_TEST(test_group_stop_is_idempotent_and_0_when_not_started)
{
    struct gfx *t = two();
    ck_assert_int_eq(lsvc_group_stop(t->g), 0);
    ck_assert_int_eq(lsvc_group_stop(t->g), 0);
    ck_assert(!lsvc_is_running(t->m[0].svc));
    two_start(t);
    ck_assert_int_eq(lsvc_group_stop(t->g), 0);
    two_stop(t);
    ck_assert_int_eq(lsvc_group_stop(t->g), 0);
}
END_TEST

START_TEST(test_stuck_service_makes_group_wait_time_out)
{
    log_capture_info();
    struct gfx *t = two_named("StuckSvc", 60);
    probe_hold(&t->m[0].p);
    ck_assert_int_eq(lsvc_group_set_stop_timeout(t->g, 0.2), 0);
    two_start(t);
    size_t from = log_size();
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_stop(t->g), 0);
    ck_assert_int_eq(lsvc_group_wait(t->g), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= 0.2 && took < 5.0, "gave up after %.3f s", took);
    ck_assert_msg(log_find(from, LSVC_LOG_WARNING, "StuckSvc", NULL) ||
                      log_find(from, LSVC_LOG_ERROR, "StuckSvc", NULL),
                  "the stuck service was not named");
    ck_assert(lsvc_is_running(t->m[0].svc));
    ck_assert(!lsvc_is_running(t->m[1].svc));
    fx_release_and_join(&t->m[0]);
}
END_TEST

/* --- Life cycle ----------------------------------------------------------- */

START_TEST(test_group_can_start_again_after_wait)
{
    struct gfx *t = two();
    for (int round = 0; round < 2; round++) {
        two_start(t);
        two_stop(t);
        ck_assert_str_eq(t->m[0].p.events, round == 0 ? "SRT" : "SRTSRT");
    }
}
END_TEST

/* Every call that needs an idle group, made on a started one: EBUSY, and
 * nothing changed. `late` is a service not in the group. */
static int start_again(lsvc_group *g, lsvc *late)
{
    (void)late;
    return lsvc_group_start(g);
}

static int destroy_group(lsvc_group *g, lsvc *late)
{
    (void)late;
    return lsvc_group_destroy(g);
}

static int set_no_signals(lsvc_group *g, lsvc *late)
{
    (void)late;
    sigset_t set;
    sigemptyset(&set);
    return lsvc_group_set_signals(g, &set);
}

static int set_stop_timeout_1_s(lsvc_group *g, lsvc *late)
{
    (void)late;
    return lsvc_group_set_stop_timeout(g, 1);
}

static int add_late(lsvc_group *g, lsvc *late)
{
    return lsvc_group_add(g, late);
}

static const struct {
    const char *what;
    int (*call)(lsvc_group *g, lsvc *late);
} idle_only[] = {
    {"lsvc_group_start", start_again},
    {"lsvc_group_destroy", destroy_group},
    {"lsvc_group_set_signals(empty)", set_no_signals},
    {"lsvc_group_set_stop_timeout(1)", set_stop_timeout_1_s},
    {"lsvc_group_add(another service)", add_late},
};

START_TEST(test_calls_that_need_an_idle_group_are_ebusy_while_started)
{
    struct fx *late = fx_new("Late", 60, NULL);
    struct gfx *t = two();
    gfx_start(t);
    int rc = idle_only[_i].call(t->g, late->svc);
    ck_assert_msg(rc == EBUSY, "%s on a started group returned %d",
                  idle_only[_i].what, rc);
    gfx_wait_first_runs(t);
    two_stop(t);
    /* Refused, so nothing was started, stopped or taken. */
    ck_assert_str_eq(t->m[0].p.events, "SRT");
    ck_assert(!lsvc_is_running(late->svc));
}
END_TEST

/* A member that another thread could restart would escape the group's
 * stop, and one it could start first would be stopped by the group's undo. */
START_TEST(test_members_of_a_started_group_cannot_be_started_alone)
{
    struct gfx *t = two();
    lsvc *a = t->m[0].svc;
    two_start(t);
    ck_assert_int_eq(lsvc_start(a, 0), EBUSY);
    ck_assert_int_eq(lsvc_stop(a, true), 0);
    ck_assert_int_eq(lsvc_start(a, 0), EBUSY);
    ck_assert_int_eq(lsvc_group_stop(t->g), 0);
    ck_assert_int_eq(lsvc_group_wait(t->g), 0);
    /* Once the group has ended, the services are the caller's again. */
    fx_run(&t->m[0], 1);
    ck_assert_uint_eq(probe_runs(&t->m[0].p), 2);
}
END_TEST

START_TEST(test_group_start_with_a_running_service_is_undone)
{
    unblock_stop_signals();
    struct gfx *t = two();
    struct fx *b = &t->m[1];
    fx_start(b, 0);
    fx_wait_entered(b);
    ck_assert_int_eq(lsvc_group_start(t->g), EBUSY);
    ck_assert(!lsvc_is_running(t->m[0].svc));
    check_stop_signals_blocked(false);
    ck_assert_int_eq(lsvc_group_wait(t->g), EINVAL);
    fx_stop(b);
}
END_TEST

/* A service that cannot start fails the whole start, and what was
 * started is undone: EPERM for its priority (it never ran on_start), or
 * ECANCELED for its on_start that failed (it ran on_start, and no
 * on_stop). */
static const struct {
    lsvc_options opts;
    int start_code;
    int want;
    const char *events; /* the failing service's hooks */
} start_failures[] = {
    {{.sched_priority = 10}, 0, EPERM, ""},
    {{.loop_seconds = 0}, 7, ECANCELED, "S"},
};

START_TEST(test_group_start_failure_is_undone)
{
    drop_realtime_permission();
    unblock_stop_signals();
    log_capture();
    struct threads before;
    threads_baseline(&before);
    struct gfx *t = two();
    int bad = gfx_add(t, "Failing", 60, &start_failures[_i].opts);
    t->m[bad].p.start_code = start_failures[_i].start_code;
    ck_assert_int_eq(lsvc_group_start(t->g), start_failures[_i].want);
    for (int i = 0; i < t->n; i++)
        ck_assert(!lsvc_is_running(t->m[i].svc));
    check_stop_signals_blocked(false);
    ck_assert_msg(wait_threads_back_to(&before, 5), "%d threads left",
                  threads_added(&before));
    /* Started and stopped again, or never started. */
    for (int i = 0; i < bad; i++) {
        const char *ev = t->m[i].p.events;
        ck_assert_msg(!*ev || (ev[0] == 'S' && ended_with_on_stop(ev)),
                      "%s's hooks: %s", t->m[i].cls.name, ev);
    }
    ck_assert_str_eq(t->m[bad].p.events, start_failures[_i].events);
    ck_assert_int_eq(lsvc_group_wait(t->g), EINVAL);
    /* Nothing is left half started: fixed, the group starts. */
    if (start_failures[_i].want == ECANCELED) {
        t->m[bad].p.start_code = 0;
        gfx_start(t);
        gfx_wait_first_runs(t);
        gfx_stop(t);
    }
}
END_TEST

/* --- Stop stages ---------------------------------------------------------- */

/* What each on_stop saw, in one record for the whole group. */
static struct {
    pthread_mutex_t lock;
    char order[16];   /* the index of each on_stop as it began, then 'e' */
    int64_t began[4], ended[4];
    bool later_asked; /* a later stage was asked to stop during an on_stop */
    struct gfx *g;
    int stage[4];
} staged = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void staged_on_stop(lsvc *svc, void *arg)
{
    struct probe *p = arg;
    int me = 0;
    for (int i = 0; i < staged.g->n; i++)
        if (&staged.g->m[i].p == p)
            me = i;
    int64_t began = now_ns();
    /* The slow one: stage 0's first member. */
    if (me == 0)
        work_for_ns(300 * NS_PER_MS);
    bool later = false;
    for (int i = 0; i < staged.g->n; i++)
        if (staged.stage[i] > staged.stage[me] &&
            lsvc_should_stop(staged.g->m[i].svc))
            later = true;
    pthread_mutex_lock(&staged.lock);
    staged.began[me] = began;
    staged.ended[me] = now_ns();
    staged.later_asked |= later;
    pthread_mutex_unlock(&staged.lock);
    probe_on_stop(svc, arg);
}

/* Stages 0 (two services, one with an on_stop of 300 ms), 1 and 2: no
 * on_stop of a stage begins before every on_stop of the stages below it
 * has ended, and no later stage is even asked to stop before then. */
START_TEST(test_stages_stop_in_increasing_order)
{
#define STAGED(label)                                                      \
    {.name = label, .loop_seconds = 60, .run_once = probe_run_once,          \
     .on_start = probe_on_start, .on_stop = staged_on_stop}
    static const lsvc_class classes[] = {
        STAGED("Staged0"), STAGED("Staged1"), STAGED("Staged2"),
        STAGED("Staged3")};
#undef STAGED
    /* Any int is a stage, the extremes too. */
    static const int stage_sets[][4] = {
        {0, 0, 2, 1},
        {INT_MIN, INT_MIN, INT_MAX, 0},
    };
    const int *stages = stage_sets[_i];
    struct gfx *t = gfx_new();
    staged.g = t;
    for (int i = 0; i < 4; i++) {
        gfx_add_class(t, &classes[i], NULL);
        staged.stage[i] = stages[i];
        /* Stage 0 is the default: set only the others. */
        if (stages[i] != 0)
            ck_assert_int_eq(lsvc_group_set_stage(t->g, t->m[i].svc,
                                                  stages[i]), 0);
    }
    gfx_start(t);
    gfx_wait_first_runs(t);
    gfx_stop(t);
    ck_assert(!staged.later_asked);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            if (stages[i] < stages[j])
                ck_assert_msg(staged.ended[i] <= staged.began[j],
                              "stage %d's on_stop began %.3f ms before "
                              "stage %d's ended", stages[j],
                              (double)(staged.ended[i] - staged.began[j]) / 1e6,
                              stages[i]);
    /* The two of stage 0 stop together: the fast one does not wait for
     * the slow one to begin. */
    ck_assert(staged.began[1] < staged.ended[0]);
}
END_TEST

START_TEST(test_set_stage_needs_a_member_of_an_idle_group)
{
    struct fx *other = fx_new("Other", 60, NULL);
    struct gfx *t = two();
    ck_assert_int_eq(lsvc_group_set_stage(t->g, other->svc, 1), EINVAL);
    ck_assert_int_eq(lsvc_group_set_stage(NULL, t->m[0].svc, 1), EINVAL);
    ck_assert_int_eq(lsvc_group_set_stage(t->g, NULL, 1), EINVAL);
    ck_assert_int_eq(lsvc_group_set_stage(t->g, t->m[0].svc, -5), 0);
    two_start(t);
    ck_assert_int_eq(lsvc_group_set_stage(t->g, t->m[0].svc, 1), EBUSY);
    two_stop(t);
    ck_assert_int_eq(lsvc_group_set_stage(t->g, t->m[0].svc, 1), 0);
}
END_TEST

START_TEST(test_destroy_of_a_service_in_a_group_is_ebusy)
{
    struct gfx *t = two();
    ck_assert_int_eq(lsvc_destroy(t->m[0].svc), EBUSY);
    ck_assert_str_eq(lsvc_name(t->m[0].svc), "Alpha");
}
END_TEST

START_TEST(test_group_destroy_leaves_services_alone)
{
    struct gfx *t = two();
    ck_assert_int_eq(lsvc_group_destroy(t->g), 0);
    /* Released: usable on their own, and free to join another group. */
    fx_run(&t->m[0], 1);
    ck_assert_str_eq(t->m[0].p.events, "SRT");
    ck_assert_int_eq(lsvc_group_create(&t->g), 0);
    ck_assert_int_eq(lsvc_group_add(t->g, t->m[0].svc), 0);
    ck_assert_int_eq(lsvc_group_add(t->g, t->m[1].svc), 0);
}
END_TEST

/* The metrics and the control socket name a member by its name, so a
 * group refuses a second service of the same name, and keeps the first. */
START_TEST(test_a_second_service_of_one_name_is_eexist)
{
    struct gfx *t = two();
    struct fx *twin = fx_new("Alpha", 60, NULL);
    ck_assert_int_eq(lsvc_group_add(t->g, twin->svc), EEXIST);
    ck_assert_int_eq(lsvc_group_add(t->g, t->m[0].svc), EBUSY);
    /* Refused, the twin is in no group: free to be destroyed. */
    ck_assert_int_eq(lsvc_destroy(twin->svc), 0);
    twin->svc = NULL;
    size_t needed;
    ck_assert_int_eq(lsvc_group_metrics(t->g, NULL, 0, &needed), ENOSPC);
    char *text = malloc(needed);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(lsvc_group_metrics(t->g, text, needed, NULL), 0);
    const char *sample = "loopsvc_runs_total{service=\"Alpha\"}";
    const char *first = strstr(text, sample);
    ck_assert_ptr_nonnull(first);
    ck_assert_ptr_null(strstr(first + 1, sample));
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("group");
    add_tests(s, "signals", (const TTest *[]){
        test_sigterm_stops_group_and_process_survives,
        test_group_wait_from_the_signal_thread_is_edeadlk,
        test_sigint_stops_group_and_process_survives,
        test_group_start_blocks_signals_in_caller,
        test_group_wait_restores_caller_mask,
        test_no_thread_left_after_group_wait,
        test_pending_signal_stops_group_at_once,
        test_second_signal_logs_services_still_running,
        test_group_handles_the_signals_it_is_given,
        test_group_without_signals_has_no_signal_thread, NULL});
    add_tests(s, "stopping", (const TTest *[]){
        test_group_stop_from_inside_a_run,
        test_group_run_returns_when_stopped_from_a_run,
        test_group_wait_returns_when_services_end_on_their_own,
        test_group_wait_from_a_service_is_edeadlk,
        test_group_stop_is_idempotent_and_0_when_not_started,
        test_stuck_service_makes_group_wait_time_out, NULL});
    TCase *life = add_tests(s, "life cycle", (const TTest *[]){
        test_group_can_start_again_after_wait,
        test_members_of_a_started_group_cannot_be_started_alone,
        test_group_start_with_a_running_service_is_undone,
        test_set_stage_needs_a_member_of_an_idle_group,
        test_destroy_of_a_service_in_a_group_is_ebusy,
        test_a_second_service_of_one_name_is_eexist,
        test_group_destroy_leaves_services_alone, NULL});
    tcase_add_loop_test(life,
                        test_calls_that_need_an_idle_group_are_ebusy_while_started,
                        0, (int)(sizeof(idle_only) / sizeof(idle_only[0])));
    tcase_add_loop_test(life, test_stages_stop_in_increasing_order, 0, 2);
    tcase_add_loop_test(life, test_group_start_failure_is_undone, 0,
                        (int)(sizeof(start_failures) /
                              sizeof(start_failures[0])));
    return run_suite(s);
}
