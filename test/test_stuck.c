/*
 * Stuck services: a run_once that blocks until the test releases it (the
 * probe's hold, a semaphore), what the other calls do meanwhile, and what
 * is left to do after the release. Then runs that call lsvc_stop (both
 * kinds), lsvc_group_stop or lsvc_get_stats on their own service or on
 * another service of their group.
 *
 * test_stop.c already covers a blocking stop's bound and the stops a run
 * makes on itself; test_group.c a group wait that times out and a run that
 * stops its group. This file covers what they leave out.
 */
#include "helpers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* --- One stuck service ------------------------------------------------- */

/* Starts svc with its probe held, and returns once its first run is in
 * progress and blocked. */
static lsvc *start_stuck(const lsvc_class *cls, struct probe *p)
{
    probe_init(p);
    probe_hold(p);
    lsvc *svc = make_service(cls, p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(sem_wait_for(&p->entered, 5));
    return svc;
}

/* Releases the run; the stop requested before makes it the last. */
static void release_and_reap(lsvc *svc, struct probe *p)
{
    probe_release(p);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_str_eq(p->events, "SRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(p);
}

START_TEST(test_stop_timeout_on_a_stuck_run_times_out_within_each_bound)
{
    static const lsvc_class cls = PROBE_CLASS("StuckRun", 60);
    log_capture();
    struct probe p;
    lsvc *svc = start_stuck(&cls, &p);
    /* The first timeout must leave nothing that shortens or lengthens
     * the next one. */
    const double bounds[] = {0.2, 0.5};
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
        size_t from = log_size();
        int64_t t0 = now_ns();
        ck_assert_int_eq(lsvc_stop_timeout(svc, bounds[i]), ETIMEDOUT);
        double took = seconds_since(t0);
        ck_assert_msg(took >= bounds[i] && took < bounds[i] + 5.0,
                      "a %.1f s bound returned after %.3f s", bounds[i], took);
        struct log_record r;
        ck_assert_msg(log_find(from, LSVC_LOG_WARNING, "StuckRun", &r),
                      "no WARNING named the service after a %.1f s bound",
                      bounds[i]);
        ck_assert_str_eq(r.logger, "loopsvc.stuckrun");
        ck_assert(lsvc_is_running(svc));
    }
    ck_assert_uint_eq(probe_runs(&p), 1);
    release_and_reap(svc, &p);
}
END_TEST

START_TEST(test_destroy_of_a_stuck_service_is_ebusy)
{
    static const lsvc_class cls = PROBE_CLASS("BusyStuck", 60);
    struct threads before;
    threads_baseline(&before);
    struct probe p;
    lsvc *svc = start_stuck(&cls, &p);
    ck_assert_int_eq(lsvc_destroy(svc), EBUSY);
    /* A stop that was requested but has not taken effect changes
     * nothing: the thread still runs user code. */
    ck_assert_int_eq(lsvc_stop(svc, false), 0);
    ck_assert_int_eq(lsvc_destroy(svc), EBUSY);
    /* Refused, not freed: the object is still whole. */
    ck_assert_str_eq(lsvc_name(svc), "BusyStuck");
    ck_assert(lsvc_is_running(svc));
    ck_assert_int_eq(threads_added(&before), 1);
    release_and_reap(svc, &p);
    ck_assert(wait_threads_back_to(&before, 5));
}
END_TEST

/* No lock is held while user code runs, so nothing but a stop or a join
 * that asks to wait may wait for a stuck run. */
START_TEST(test_calls_on_a_stuck_service_do_not_wait_for_its_run)
{
    static const lsvc_class cls = PROBE_CLASS("Blocker", 60);
    struct probe p;
    lsvc *svc = start_stuck(&cls, &p);
    int64_t t0 = now_ns();

    ck_assert(lsvc_is_running(svc));
    lsvc_stats st;
    ck_assert_int_eq(lsvc_get_stats(svc, &st), 0);
    ck_assert(st.running);
    ck_assert_uint_eq(st.loops, 0);
    struct timespec sched;
    ck_assert_int_eq(lsvc_scheduled_start(svc, &sched), 0);
    ck_assert_double_eq(lsvc_loop_seconds(svc), 60.0);
    ck_assert_int_eq(lsvc_start(svc, 0), EBUSY);
    ck_assert_int_eq(lsvc_join(svc, 0), ETIMEDOUT);
    ck_assert_int_eq(lsvc_stop_timeout(svc, 0), ETIMEDOUT);
    ck_assert_int_eq(lsvc_stop(svc, false), 0);

    double took = seconds_since(t0);
    ck_assert_msg(took < 2.0, "the calls took %.3f s", took);
    ck_assert(lsvc_is_running(svc));
    release_and_reap(svc, &p);
}
END_TEST

/* --- A group with stuck services ------------------------------------------ */

#define CREW_MAX 3

/* Services in one group, and what their runs saw for the test thread to
 * check once the run has ended (the probe's `ran` orders the two). */
struct crew {
    lsvc_group *g;
    size_t n;
    struct probe p[CREW_MAX];
    lsvc *svc[CREW_MAX];

    int rc[CREW_MAX];       /* what the call made in a run returned */
    double took[CREW_MAX];  /* how long that call took */
    bool peer_running;
    lsvc_stats peer_stats;
    char peer_events[PROBE_MAX_EVENTS + 1];
    pthread_barrier_t both_in_run;
};

static void crew_init(struct crew *c, const lsvc_class *const classes[],
                      size_t n)
{
    ck_assert_uint_le(n, CREW_MAX);
    memset(c, 0, sizeof(*c));
    c->n = n;
    ck_assert_int_eq(lsvc_group_create(&c->g), 0);
    for (size_t i = 0; i < n; i++) {
        probe_init(&c->p[i]);
        c->p[i].user = c;
        c->rc[i] = -1;
        c->svc[i] = make_service(classes[i], &c->p[i], NULL);
        ck_assert_int_eq(lsvc_group_add(c->g, c->svc[i]), 0);
    }
}

static void crew_free(struct crew *c)
{
    ck_assert_int_eq(lsvc_group_destroy(c->g), 0);
    for (size_t i = 0; i < c->n; i++) {
        ck_assert_int_eq(lsvc_destroy(c->svc[i]), 0);
        probe_destroy(&c->p[i]);
    }
}

/* Which member a probe belongs to. */
static size_t member(const struct crew *c, const struct probe *p)
{
    for (size_t i = 0; i < c->n; i++)
        if (&c->p[i] == p)
            return i;
    ck_abort_msg("not a member's probe");
    return 0;
}

START_TEST(test_group_wait_warns_about_the_stuck_service_only)
{
    static const lsvc_class stuck = PROBE_CLASS("StuckOne", 60);
    static const lsvc_class free_cls = PROBE_CLASS("FreeOne", 60);
    static const lsvc_class *const classes[] = {&stuck, &free_cls};
    log_capture();
    struct crew c;
    crew_init(&c, classes, 2);
    probe_hold(&c.p[0]);
    ck_assert_int_eq(lsvc_group_set_stop_timeout(c.g, 0.2), 0);
    ck_assert_int_eq(lsvc_group_start(c.g), 0);
    ck_assert(sem_wait_for(&c.p[0].entered, 5));
    ck_assert(sem_wait_for(&c.p[1].entered, 5));

    size_t from = log_size();
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_stop(c.g), 0);
    ck_assert_int_eq(lsvc_group_wait(c.g), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= 0.2 && took < 5.0, "gave up after %.3f s", took);
    struct log_record r;
    ck_assert_msg(log_find(from, LSVC_LOG_WARNING, "StuckOne", &r),
                  "no WARNING named the stuck service");
    ck_assert_str_eq(r.logger, "loopsvc.stuckone");
    ck_assert_msg(!log_find(from, LSVC_LOG_WARNING, "FreeOne", &r),
                  "a WARNING named the service that stopped: %s", r.message);
    ck_assert(lsvc_is_running(c.svc[0]));
    ck_assert(!lsvc_is_running(c.svc[1]));
    /* Its run may still stop the group: the group stays until it ends. */
    ck_assert_int_eq(lsvc_group_destroy(c.g), EBUSY);

    probe_release(&c.p[0]);
    ck_assert_int_eq(lsvc_join(c.svc[0], 10), 0);
    ck_assert_str_eq(c.p[0].events, "SRT");
    /* The timed-out wait left the group idle: it starts and stops again. */
    ck_assert_int_eq(lsvc_group_start(c.g), 0);
    ck_assert(sem_wait_for(&c.p[0].entered, 5));
    ck_assert(sem_wait_for(&c.p[1].entered, 5));
    ck_assert_int_eq(lsvc_group_stop(c.g), 0);
    ck_assert_int_eq(lsvc_group_wait(c.g), 0);
    ck_assert_str_eq(c.p[0].events, "SRTSRT");
    ck_assert_str_eq(c.p[1].events, "SRTSRT");
    crew_free(&c);
}
END_TEST

/* The group's bound runs from the stop for every service at once: three
 * stuck services give up after one bound, not three in a row. */
START_TEST(test_group_stop_timeout_counts_from_the_stop_for_every_service)
{
    static const lsvc_class a = PROBE_CLASS("StuckA", 60);
    static const lsvc_class b = PROBE_CLASS("StuckB", 60);
    static const lsvc_class d = PROBE_CLASS("StuckC", 60);
    static const lsvc_class *const classes[] = {&a, &b, &d};
    log_capture();
    struct crew c;
    crew_init(&c, classes, 3);
    for (size_t i = 0; i < 3; i++)
        probe_hold(&c.p[i]);
    ck_assert_int_eq(lsvc_group_set_stop_timeout(c.g, 1.0), 0);
    ck_assert_int_eq(lsvc_group_start(c.g), 0);
    for (size_t i = 0; i < 3; i++)
        ck_assert(sem_wait_for(&c.p[i].entered, 5));

    size_t from = log_size();
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_stop(c.g), 0);
    ck_assert_int_eq(lsvc_group_wait(c.g), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= 1.0 && took < 2.5,
                  "three stuck services with a 1 s bound took %.3f s", took);
    for (size_t i = 0; i < 3; i++) {
        const char *name = lsvc_name(c.svc[i]);
        ck_assert_msg(log_find(from, LSVC_LOG_WARNING, name, NULL),
                      "no WARNING named %s", name);
        ck_assert(lsvc_is_running(c.svc[i]));
    }
    for (size_t i = 0; i < 3; i++) {
        probe_release(&c.p[i]);
        ck_assert_int_eq(lsvc_join(c.svc[i], 10), 0);
        ck_assert_str_eq(c.p[i].events, "SRT");
    }
    crew_free(&c);
}
END_TEST

/* Member 1 stops the group once member 0 is stuck in its run. */
static void group_stop_once_peer_is_stuck(lsvc *svc, struct probe *p,
                                          uint64_t run)
{
    (void)svc;
    struct crew *c = p->user;
    size_t me = member(c, p);
    if (run != 0)
        return;
    if (!sem_wait_for(&c->p[0].entered, 5))
        return;
    int64_t t0 = now_ns();
    c->rc[me] = lsvc_group_stop(c->g);
    c->took[me] = seconds_since(t0);
}

START_TEST(test_group_stop_from_a_run_returns_at_once_while_another_is_stuck)
{
    static const lsvc_class stuck = PROBE_CLASS("Wedged", 60);
    static const lsvc_class stopper = PROBE_CLASS("Stopper", 60);
    static const lsvc_class *const classes[] = {&stuck, &stopper};
    log_capture();
    struct crew c;
    crew_init(&c, classes, 2);
    probe_hold(&c.p[0]);
    c.p[1].during = group_stop_once_peer_is_stuck;
    ck_assert_int_eq(lsvc_group_set_stop_timeout(c.g, 0.3), 0);

    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_run(c.g), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= 0.3 && took < 5.0, "lsvc_group_run took %.3f s",
                  took);
    ck_assert_int_eq(c.rc[1], 0);
    ck_assert_msg(c.took[1] < 1.0, "lsvc_group_stop in a run took %.3f s",
                  c.took[1]);
    ck_assert(log_find(0, LSVC_LOG_WARNING, "Wedged", NULL));
    ck_assert(lsvc_is_running(c.svc[0]));
    ck_assert(!lsvc_is_running(c.svc[1]));
    ck_assert_str_eq(c.p[1].events, "SRT");

    probe_release(&c.p[0]);
    ck_assert_int_eq(lsvc_join(c.svc[0], 10), 0);
    ck_assert_str_eq(c.p[0].events, "SRT");
    crew_free(&c);
}
END_TEST

/* --- Calls from inside a run ------------------------------------------------ */

struct self_stats {
    int rc[3];
    lsvc_stats seen[3];
    bool running[3];
};

static void read_own_stats(lsvc *svc, struct probe *p, uint64_t run)
{
    struct self_stats *s = p->user;
    if (run < 3) {
        s->rc[run] = lsvc_get_stats(svc, &s->seen[run]);
        s->running[run] = lsvc_is_running(svc);
    }
}

START_TEST(test_get_stats_on_itself_from_a_run_counts_the_runs_before_it)
{
    static const lsvc_class cls = PROBE_CLASS("SelfReader", 0.01);
    struct probe p;
    probe_init(&p);
    struct self_stats s;
    memset(&s, 0, sizeof(s));
    p.during = read_own_stats;
    p.user = &s;
    p.run_code = 1;
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 3), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    for (uint64_t i = 0; i < 3; i++) {
        ck_assert_int_eq(s.rc[i], 0);
        /* The run in progress is not counted yet, in any counter. */
        ck_assert_uint_eq(s.seen[i].loops, i);
        ck_assert_uint_eq(s.seen[i].errors, i);
        ck_assert(s.seen[i].running);
        ck_assert(s.running[i]);
    }
    lsvc_stats end;
    ck_assert_int_eq(lsvc_get_stats(svc, &end), 0);
    ck_assert_uint_eq(end.loops, 3);
    ck_assert_uint_eq(end.errors, 3);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* Member 1 reads member 0, which is stuck in its run. */
static void read_stuck_peer(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    struct crew *c = p->user;
    size_t me = member(c, p);
    if (run != 0 || !sem_wait_for(&c->p[0].entered, 5))
        return;
    int64_t t0 = now_ns();
    c->rc[me] = lsvc_get_stats(c->svc[0], &c->peer_stats);
    c->peer_running = lsvc_is_running(c->svc[0]);
    c->took[me] = seconds_since(t0);
}

START_TEST(test_get_stats_on_a_stuck_group_peer_from_a_run_returns_at_once)
{
    static const lsvc_class stuck = PROBE_CLASS("Stalled", 60);
    static const lsvc_class reader = PROBE_CLASS("Reader", 60);
    static const lsvc_class *const classes[] = {&stuck, &reader};
    struct crew c;
    crew_init(&c, classes, 2);
    probe_hold(&c.p[0]);
    c.p[1].during = read_stuck_peer;
    ck_assert_int_eq(lsvc_group_start(c.g), 0);
    ck_assert(probe_wait_runs(&c.p[1], 1, 10));
    ck_assert_int_eq(c.rc[1], 0);
    ck_assert_msg(c.took[1] < 1.0, "reading a stuck peer took %.3f s",
                  c.took[1]);
    ck_assert(c.peer_stats.running);
    ck_assert(c.peer_running);
    ck_assert_uint_eq(c.peer_stats.loops, 0);

    probe_release(&c.p[0]);
    ck_assert_int_eq(lsvc_group_stop(c.g), 0);
    ck_assert_int_eq(lsvc_group_wait(c.g), 0);
    crew_free(&c);
}
END_TEST

/* Member 1 stops member 0 with lsvc_stop(block) once 0 is in its run, and
 * records what it sees of 0 right after. */
static void stop_peer_blocking(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    struct crew *c = p->user;
    size_t me = member(c, p);
    if (run != 0 || !sem_wait_for(&c->p[0].entered, 5))
        return;
    int64_t t0 = now_ns();
    c->rc[me] = lsvc_stop(c->svc[0], true);
    c->took[me] = seconds_since(t0);
    c->peer_running = lsvc_is_running(c->svc[0]);
    pthread_mutex_lock(&c->p[0].lock);
    memcpy(c->peer_events, c->p[0].events, sizeof(c->peer_events));
    pthread_mutex_unlock(&c->p[0].lock);
}

START_TEST(test_blocking_stop_of_a_group_peer_from_a_run_waits_for_its_end)
{
    static const lsvc_class target = PROBE_CLASS("Target", 60);
    static const lsvc_class stopper = PROBE_CLASS("PeerStopper", 60);
    static const lsvc_class *const classes[] = {&target, &stopper};
    struct crew c;
    crew_init(&c, classes, 2);
    /* A slow first run: the stop must wait for it to end. */
    c.p[0].slow_ns = 200 * NS_PER_MS;
    c.p[0].slow_runs = 1;
    c.p[1].during = stop_peer_blocking;
    ck_assert_int_eq(lsvc_group_start(c.g), 0);
    ck_assert(probe_wait_runs(&c.p[1], 1, 10));
    ck_assert_int_eq(c.rc[1], 0);
    ck_assert_msg(!c.peer_running, "the peer still ran after the stop");
    ck_assert_str_eq(c.peer_events, "SRT");
    ck_assert_uint_eq(c.p[0].completed, 1);
    /* The stopper itself goes on. */
    ck_assert(lsvc_is_running(c.svc[1]));

    ck_assert_int_eq(lsvc_group_stop(c.g), 0);
    ck_assert_int_eq(lsvc_group_wait(c.g), 0);
    ck_assert_str_eq(c.p[1].events, "SRT");
    crew_free(&c);
}
END_TEST

static void stop_stuck_peer_without_block(lsvc *svc, struct probe *p,
                                          uint64_t run)
{
    (void)svc;
    struct crew *c = p->user;
    size_t me = member(c, p);
    if (run != 0 || !sem_wait_for(&c->p[0].entered, 5))
        return;
    int64_t t0 = now_ns();
    c->rc[me] = lsvc_stop(c->svc[0], false);
    c->took[me] = seconds_since(t0);
    c->peer_running = lsvc_is_running(c->svc[0]);
}

START_TEST(test_stop_without_block_of_a_stuck_group_peer_from_a_run_returns_at_once)
{
    static const lsvc_class stuck = PROBE_CLASS("Held", 60);
    static const lsvc_class stopper = PROBE_CLASS("Asker", 60);
    static const lsvc_class *const classes[] = {&stuck, &stopper};
    struct crew c;
    crew_init(&c, classes, 2);
    probe_hold(&c.p[0]);
    c.p[1].during = stop_stuck_peer_without_block;
    ck_assert_int_eq(lsvc_group_start(c.g), 0);
    ck_assert(probe_wait_runs(&c.p[1], 1, 10));
    ck_assert_int_eq(c.rc[1], 0);
    ck_assert_msg(c.took[1] < 1.0, "the stop took %.3f s", c.took[1]);
    ck_assert(c.peer_running);

    /* Released, the peer ends after that run: the stop stuck. */
    probe_release(&c.p[0]);
    ck_assert_int_eq(lsvc_join(c.svc[0], 10), 0);
    ck_assert_str_eq(c.p[0].events, "SRT");
    ck_assert(lsvc_is_running(c.svc[1]));
    ck_assert_int_eq(lsvc_group_stop(c.g), 0);
    ck_assert_int_eq(lsvc_group_wait(c.g), 0);
    crew_free(&c);
}
END_TEST

START_TEST(test_blocking_stop_of_a_stuck_group_peer_from_a_run_times_out)
{
    /* A blocking stop waits one interval of the service it stops. */
    static const lsvc_class stuck = PROBE_CLASS("Jammed", 0.25);
    static const lsvc_class stopper = PROBE_CLASS("Impatient", 60);
    static const lsvc_class *const classes[] = {&stuck, &stopper};
    log_capture();
    struct crew c;
    crew_init(&c, classes, 2);
    probe_hold(&c.p[0]);
    c.p[1].during = stop_peer_blocking;
    ck_assert_int_eq(lsvc_group_start(c.g), 0);
    ck_assert(probe_wait_runs(&c.p[1], 1, 10));
    ck_assert_int_eq(c.rc[1], ETIMEDOUT);
    ck_assert_msg(c.took[1] >= 0.25 && c.took[1] < 5.0,
                  "the stop gave up after %.3f s", c.took[1]);
    ck_assert(c.peer_running);
    ck_assert(log_find(0, LSVC_LOG_WARNING, "Jammed", NULL));
    ck_assert(lsvc_is_running(c.svc[1]));

    probe_release(&c.p[0]);
    ck_assert_int_eq(lsvc_join(c.svc[0], 10), 0);
    ck_assert_str_eq(c.p[0].events, "SRT");
    ck_assert_int_eq(lsvc_group_stop(c.g), 0);
    ck_assert_int_eq(lsvc_group_wait(c.g), 0);
    crew_free(&c);
}
END_TEST

/* Members 0 and 1 each stop the other with a blocking stop, both from
 * inside a run: neither can end before its own stop returns. */
static void stop_each_other(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    struct crew *c = p->user;
    size_t me = member(c, p);
    if (run != 0)
        return;
    pthread_barrier_wait(&c->both_in_run);
    int64_t t0 = now_ns();
    c->rc[me] = lsvc_stop_timeout(c->svc[1 - me], 0.5);
    c->took[me] = seconds_since(t0);
}

START_TEST(test_mutual_blocking_stops_from_two_runs_end_both_services)
{
    static const lsvc_class left = PROBE_CLASS("Left", 60);
    static const lsvc_class right = PROBE_CLASS("Right", 60);
    static const lsvc_class *const classes[] = {&left, &right};
    log_capture();
    struct crew c;
    crew_init(&c, classes, 2);
    ck_assert_int_eq(pthread_barrier_init(&c.both_in_run, NULL, 2), 0);
    c.p[0].during = c.p[1].during = stop_each_other;
    ck_assert_int_eq(lsvc_group_start(c.g), 0);

    /* Both end on their own: each had a stop requested. */
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_wait(c.g), 0);
    ck_assert_msg(seconds_since(t0) < 5.0, "the pair took %.3f s to end",
                  seconds_since(t0));
    for (size_t i = 0; i < 2; i++) {
        ck_assert_msg(c.rc[i] == 0 || c.rc[i] == ETIMEDOUT,
                      "stop %zu returned %d", i, c.rc[i]);
        ck_assert_msg(c.took[i] < 5.0, "stop %zu took %.3f s", i, c.took[i]);
        ck_assert_str_eq(c.p[i].events, "SRT");
        ck_assert(!lsvc_is_running(c.svc[i]));
    }
    /* The first stop to return cannot have seen its peer end. */
    ck_assert_msg(c.rc[0] == ETIMEDOUT || c.rc[1] == ETIMEDOUT,
                  "both stops saw their peer end");
    ck_assert_int_eq(pthread_barrier_destroy(&c.both_in_run), 0);
    crew_free(&c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stuck");
    TCase *one = timed_tcase("stuck service");
    tcase_add_test(one, test_stop_timeout_on_a_stuck_run_times_out_within_each_bound);
    tcase_add_test(one, test_destroy_of_a_stuck_service_is_ebusy);
    tcase_add_test(one, test_calls_on_a_stuck_service_do_not_wait_for_its_run);
    suite_add_tcase(s, one);

    TCase *group = timed_tcase("stuck group");
    tcase_add_test(group, test_group_wait_warns_about_the_stuck_service_only);
    tcase_add_test(group, test_group_stop_timeout_counts_from_the_stop_for_every_service);
    tcase_add_test(group, test_group_stop_from_a_run_returns_at_once_while_another_is_stuck);
    suite_add_tcase(s, group);

    TCase *inside = timed_tcase("from inside a run");
    tcase_add_test(inside, test_get_stats_on_itself_from_a_run_counts_the_runs_before_it);
    tcase_add_test(inside, test_get_stats_on_a_stuck_group_peer_from_a_run_returns_at_once);
    tcase_add_test(inside, test_blocking_stop_of_a_group_peer_from_a_run_waits_for_its_end);
    tcase_add_test(inside, test_stop_without_block_of_a_stuck_group_peer_from_a_run_returns_at_once);
    tcase_add_test(inside, test_blocking_stop_of_a_stuck_group_peer_from_a_run_times_out);
    tcase_add_test(inside, test_mutual_blocking_stops_from_two_runs_end_both_services);
    suite_add_tcase(s, inside);
    return run_suite(s);
}
