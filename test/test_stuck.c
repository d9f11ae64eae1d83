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

START_TEST(test_stop_timeout_on_a_stuck_run_times_out_within_each_bound)
{
    log_capture();
    struct fx *f = fx_new("StuckRun", 60, NULL);
    fx_start_held(f);
    /* The first timeout must leave nothing that shortens or lengthens
     * the next one. */
    const double bounds[] = {0.2, 0.5};
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
        size_t from = log_size();
        int64_t t0 = now_ns();
        ck_assert_int_eq(lsvc_stop_timeout(f->svc, bounds[i]), ETIMEDOUT);
        double took = seconds_since(t0);
        ck_assert_msg(took >= bounds[i] && took < bounds[i] + 5.0,
                      "a %.1f s bound returned after %.3f s", bounds[i], took);
        struct log_record r;
        ck_assert_msg(log_find(from, LSVC_LOG_WARNING, "StuckRun", &r),
                      "no WARNING named the service after a %.1f s bound",
                      bounds[i]);
        ck_assert_str_eq(r.logger, "loopsvc.stuckrun");
        ck_assert(lsvc_is_running(f->svc));
    }
    ck_assert_uint_eq(probe_runs(&f->p), 1);
    fx_release_and_join(f);
}
END_TEST

START_TEST(test_destroy_of_a_stuck_service_is_ebusy)
{
    struct threads before;
    threads_baseline(&before);
    struct fx *f = fx_new("BusyStuck", 60, NULL);
    fx_start_held(f);
    ck_assert_int_eq(lsvc_destroy(f->svc), EBUSY);
    /* A stop that was requested but has not taken effect changes
     * nothing: the thread still runs user code. */
    ck_assert_int_eq(lsvc_stop(f->svc, false), 0);
    ck_assert_int_eq(lsvc_destroy(f->svc), EBUSY);
    /* Refused, not freed: the object is still whole. */
    ck_assert_str_eq(lsvc_name(f->svc), "BusyStuck");
    ck_assert(lsvc_is_running(f->svc));
    ck_assert_int_eq(threads_added(&before), 1);
    fx_release_and_join(f);
    fx_free(f);
    ck_assert(wait_threads_back_to(&before, 5));
}
END_TEST

/* No lock is held while user code runs, so nothing but a stop or a join
 * that asks to wait may wait for a stuck run. */
START_TEST(test_calls_on_a_stuck_service_do_not_wait_for_its_run)
{
    struct fx *f = fx_new("Blocker", 60, NULL);
    fx_start_held(f);
    lsvc *svc = f->svc;
    int64_t t0 = now_ns();

    ck_assert(lsvc_is_running(svc));
    lsvc_stats st = stats_of(svc);
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
    fx_release_and_join(f);
}
END_TEST

/* --- A group with stuck services ------------------------------------------ */

/* Services in one group, and what their runs saw for the test thread to
 * check once the run has ended (the probe's `ran` orders the two). */
struct crew {
    struct gfx *g;
    int rc[GFX_MAX];      /* what the call made in a run returned */
    double took[GFX_MAX]; /* how long that call took */
    bool peer_running;
    lsvc_stats peer_stats;
    char peer_events[PROBE_MAX_EVENTS + 1];
    pthread_barrier_t both_in_run;
};

/* A crew of the services named, all due every minute but the first,
 * whose interval is `first_seconds`. */
static struct crew *crew_new(const char *const names[], int n,
                             double first_seconds)
{
    struct crew *c = test_alloc(sizeof(*c));
    c->g = gfx_new();
    for (int i = 0; i < n; i++) {
        gfx_add(c->g, names[i], i == 0 ? first_seconds : 60, NULL);
        c->g->m[i].p.user = c;
        c->rc[i] = -1;
    }
    return c;
}

/* The member i of the crew. */
static struct fx *mate(struct crew *c, int i)
{
    return &c->g->m[i];
}

/* Which member a probe belongs to. */
static int member(const struct crew *c, const struct probe *p)
{
    for (int i = 0; i < c->g->n; i++)
        if (&c->g->m[i].p == p)
            return i;
    ck_abort_msg("not a member's probe");
    return 0;
}

/* Starts the group, waits for the first run of every member, stops the
 * group and checks that its wait timed out after `bound` seconds (and
 * before `limit`), with a WARNING naming each member that `stuck` says.
 * Returns where the log stood at the stop. */
static size_t check_wait_times_out(struct crew *c, double bound, double limit,
                                   const bool *stuck)
{
    ck_assert_int_eq(lsvc_group_set_stop_timeout(c->g->g, bound), 0);
    gfx_start(c->g);
    gfx_wait_first_runs(c->g);

    size_t from = log_size();
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_stop(c->g->g), 0);
    ck_assert_int_eq(lsvc_group_wait(c->g->g), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= bound && took < limit,
                  "gave up after %.3f s, with a bound of %.1f s", took, bound);
    for (int i = 0; i < c->g->n; i++) {
        struct log_record r;
        const char *name = mate(c, i)->cls.name;
        bool named = log_find(from, LSVC_LOG_WARNING, name, &r);
        ck_assert_msg(named == stuck[i], "%s: %s", name,
                      named ? r.message : "no WARNING named it");
        ck_assert(lsvc_is_running(mate(c, i)->svc) == stuck[i]);
    }
    return from;
}

START_TEST(test_group_wait_warns_about_the_stuck_service_only)
{
    static const char *const names[] = {"StuckOne", "FreeOne"};
    static const bool stuck[] = {true, false};
    log_capture();
    struct crew *c = crew_new(names, 2, 60);
    probe_hold(&mate(c, 0)->p);
    size_t from = check_wait_times_out(c, 0.2, 5.0, stuck);
    struct log_record r;
    ck_assert(log_find(from, LSVC_LOG_WARNING, "StuckOne", &r));
    ck_assert_str_eq(r.logger, "loopsvc.stuckone");
    /* Its run may still stop the group: the group stays until it ends. */
    ck_assert_int_eq(lsvc_group_destroy(c->g->g), EBUSY);

    fx_release_and_join(mate(c, 0));
    /* The timed-out wait left the group idle: it starts and stops again. */
    gfx_start(c->g);
    gfx_wait_first_runs(c->g);
    gfx_stop(c->g);
    ck_assert_str_eq(mate(c, 0)->p.events, "SRTSRT");
    ck_assert_str_eq(mate(c, 1)->p.events, "SRTSRT");
}
END_TEST

/* The group's bound runs from the stop for every service at once: three
 * stuck services give up after one bound, not three in a row. */
START_TEST(test_group_stop_timeout_counts_from_the_stop_for_every_service)
{
    static const char *const names[] = {"StuckA", "StuckB", "StuckC"};
    static const bool stuck[] = {true, true, true};
    log_capture();
    struct crew *c = crew_new(names, 3, 60);
    for (int i = 0; i < 3; i++)
        probe_hold(&mate(c, i)->p);
    check_wait_times_out(c, 1.0, 2.5, stuck);
    for (int i = 0; i < 3; i++)
        fx_release_and_join(mate(c, i));
}
END_TEST

/* Member 1 stops the group once member 0 is stuck in its run. */
static void group_stop_once_peer_is_stuck(lsvc *svc, struct probe *p,
                                          uint64_t run)
{
    (void)svc;
    struct crew *c = p->user;
    int me = member(c, p);
    if (run != 0)
        return;
    if (!sem_wait_for(&mate(c, 0)->p.entered, 5))
        return;
    int64_t t0 = now_ns();
    c->rc[me] = lsvc_group_stop(c->g->g);
    c->took[me] = seconds_since(t0);
}

START_TEST(test_group_stop_from_a_run_returns_at_once_while_another_is_stuck)
{
    static const char *const names[] = {"Wedged", "Stopper"};
    log_capture();
    struct crew *c = crew_new(names, 2, 60);
    probe_hold(&mate(c, 0)->p);
    mate(c, 1)->p.during = group_stop_once_peer_is_stuck;
    ck_assert_int_eq(lsvc_group_set_stop_timeout(c->g->g, 0.3), 0);

    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_run(c->g->g), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= 0.3 && took < 5.0, "lsvc_group_run took %.3f s",
                  took);
    ck_assert_int_eq(c->rc[1], 0);
    ck_assert_msg(c->took[1] < 1.0, "lsvc_group_stop in a run took %.3f s",
                  c->took[1]);
    ck_assert(log_find(0, LSVC_LOG_WARNING, "Wedged", NULL));
    ck_assert(lsvc_is_running(mate(c, 0)->svc));
    ck_assert(!lsvc_is_running(mate(c, 1)->svc));
    ck_assert_str_eq(mate(c, 1)->p.events, "SRT");
    fx_release_and_join(mate(c, 0));
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
    struct fx *f = fx_new("SelfReader", 0.01, NULL);
    struct self_stats s;
    memset(&s, 0, sizeof(s));
    f->p.during = read_own_stats;
    f->p.user = &s;
    f->p.run_code = 1;
    fx_run(f, 3);
    for (uint64_t i = 0; i < 3; i++) {
        ck_assert_int_eq(s.rc[i], 0);
        /* The run in progress is not counted yet, in any counter. */
        ck_assert_uint_eq(s.seen[i].loops, i);
        ck_assert_uint_eq(s.seen[i].errors, i);
        ck_assert(s.seen[i].running);
        ck_assert(s.running[i]);
    }
    lsvc_stats end = stats_of(f->svc);
    ck_assert_uint_eq(end.loops, 3);
    ck_assert_uint_eq(end.errors, 3);
}
END_TEST

/* What member 1 does to member 0 from its first run, once 0 is in its
 * own; the time it takes is recorded. */
static int read_stuck_peer(struct crew *c, lsvc *peer)
{
    int rc = lsvc_get_stats(peer, &c->peer_stats);
    c->peer_running = lsvc_is_running(peer);
    return rc;
}

static int stop_peer_blocking(struct crew *c, lsvc *peer)
{
    (void)c;
    return lsvc_stop(peer, true);
}

static int stop_peer_without_block(struct crew *c, lsvc *peer)
{
    (void)c;
    return lsvc_stop(peer, false);
}

/* The call member 1 makes; set before the group starts. */
static int (*peer_call)(struct crew *c, lsvc *peer);

/* Makes the call, then records what member 1 sees of member 0 after it. */
static void call_on_peer(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    struct crew *c = p->user;
    struct fx *peer = mate(c, 0);
    if (run != 0 || !sem_wait_for(&peer->p.entered, 5))
        return;
    int64_t t0 = now_ns();
    c->rc[1] = peer_call(c, peer->svc);
    c->took[1] = seconds_since(t0);
    c->peer_running = lsvc_is_running(peer->svc);
    pthread_mutex_lock(&peer->p.lock);
    memcpy(c->peer_events, peer->p.events, sizeof(c->peer_events));
    pthread_mutex_unlock(&peer->p.lock);
}

/* A crew of `stuck` (held, of `seconds`) and `caller`, whose first run
 * makes `call` on it; returns once that run has ended. */
static struct crew *call_stuck_peer(const char *stuck, double seconds,
                                    const char *caller,
                                    int (*call)(struct crew *c, lsvc *peer))
{
    const char *const names[] = {stuck, caller};
    struct crew *c = crew_new(names, 2, seconds);
    probe_hold(&mate(c, 0)->p);
    peer_call = call;
    mate(c, 1)->p.during = call_on_peer;
    gfx_start(c->g);
    ck_assert(probe_wait_runs(&mate(c, 1)->p, 1, 10));
    return c;
}

START_TEST(test_get_stats_on_a_stuck_group_peer_from_a_run_returns_at_once)
{
    struct crew *c = call_stuck_peer("Stalled", 60, "Reader", read_stuck_peer);
    ck_assert_int_eq(c->rc[1], 0);
    ck_assert_msg(c->took[1] < 1.0, "reading a stuck peer took %.3f s",
                  c->took[1]);
    ck_assert(c->peer_stats.running);
    ck_assert(c->peer_running);
    ck_assert_uint_eq(c->peer_stats.loops, 0);

    probe_release(&mate(c, 0)->p);
    gfx_stop(c->g);
}
END_TEST

START_TEST(test_blocking_stop_of_a_group_peer_from_a_run_waits_for_its_end)
{
    static const char *const names[] = {"Target", "PeerStopper"};
    struct crew *c = crew_new(names, 2, 60);
    /* A slow first run: the stop must wait for it to end. */
    mate(c, 0)->p.slow_ns = 200 * NS_PER_MS;
    mate(c, 0)->p.slow_runs = 1;
    peer_call = stop_peer_blocking;
    mate(c, 1)->p.during = call_on_peer;
    gfx_start(c->g);
    ck_assert(probe_wait_runs(&mate(c, 1)->p, 1, 10));
    ck_assert_int_eq(c->rc[1], 0);
    ck_assert_msg(!c->peer_running, "the peer still ran after the stop");
    ck_assert_str_eq(c->peer_events, "SRT");
    ck_assert_uint_eq(mate(c, 0)->p.completed, 1);
    /* The stopper itself goes on. */
    ck_assert(lsvc_is_running(mate(c, 1)->svc));

    gfx_stop(c->g);
    ck_assert_str_eq(mate(c, 1)->p.events, "SRT");
}
END_TEST

START_TEST(test_stop_without_block_of_a_stuck_group_peer_from_a_run_returns_at_once)
{
    struct crew *c = call_stuck_peer("Held", 60, "Asker",
                                     stop_peer_without_block);
    ck_assert_int_eq(c->rc[1], 0);
    ck_assert_msg(c->took[1] < 1.0, "the stop took %.3f s", c->took[1]);
    ck_assert(c->peer_running);

    /* Released, the peer ends after that run: the stop stuck. */
    fx_release_and_join(mate(c, 0));
    ck_assert(lsvc_is_running(mate(c, 1)->svc));
    gfx_stop(c->g);
}
END_TEST

START_TEST(test_blocking_stop_of_a_stuck_group_peer_from_a_run_times_out)
{
    /* A blocking stop waits one interval of the service it stops. */
    log_capture();
    struct crew *c = call_stuck_peer("Jammed", 0.25, "Impatient",
                                     stop_peer_blocking);
    ck_assert_int_eq(c->rc[1], ETIMEDOUT);
    ck_assert_msg(c->took[1] >= 0.25 && c->took[1] < 5.0,
                  "the stop gave up after %.3f s", c->took[1]);
    ck_assert(c->peer_running);
    ck_assert(log_find(0, LSVC_LOG_WARNING, "Jammed", NULL));
    ck_assert(lsvc_is_running(mate(c, 1)->svc));

    fx_release_and_join(mate(c, 0));
    gfx_stop(c->g);
}
END_TEST

/* Members 0 and 1 each stop the other with a blocking stop, both from
 * inside a run: neither can end before its own stop returns. */
static void stop_each_other(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    struct crew *c = p->user;
    int me = member(c, p);
    if (run != 0)
        return;
    pthread_barrier_wait(&c->both_in_run);
    int64_t t0 = now_ns();
    c->rc[me] = lsvc_stop_timeout(mate(c, 1 - me)->svc, 0.5);
    c->took[me] = seconds_since(t0);
}

START_TEST(test_mutual_blocking_stops_from_two_runs_end_both_services)
{
    static const char *const names[] = {"Left", "Right"};
    log_capture();
    struct crew *c = crew_new(names, 2, 60);
    ck_assert_int_eq(pthread_barrier_init(&c->both_in_run, NULL, 2), 0);
    mate(c, 0)->p.during = mate(c, 1)->p.during = stop_each_other;
    gfx_start(c->g);

    /* Both end on their own: each had a stop requested. */
    gfx_wait(c->g);
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(c->rc[i] == 0 || c->rc[i] == ETIMEDOUT,
                      "stop %d returned %d", i, c->rc[i]);
        ck_assert_msg(c->took[i] < 5.0, "stop %d took %.3f s", i, c->took[i]);
        ck_assert_str_eq(mate(c, i)->p.events, "SRT");
    }
    /* The first stop to return cannot have seen its peer end. */
    ck_assert_msg(c->rc[0] == ETIMEDOUT || c->rc[1] == ETIMEDOUT,
                  "both stops saw their peer end");
    ck_assert_int_eq(pthread_barrier_destroy(&c->both_in_run), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stuck");
    add_tests(s, "stuck service", (const TTest *[]){
        test_stop_timeout_on_a_stuck_run_times_out_within_each_bound,
        test_destroy_of_a_stuck_service_is_ebusy,
        test_calls_on_a_stuck_service_do_not_wait_for_its_run, NULL});
    add_tests(s, "stuck group", (const TTest *[]){
        test_group_wait_warns_about_the_stuck_service_only,
        test_group_stop_timeout_counts_from_the_stop_for_every_service,
        test_group_stop_from_a_run_returns_at_once_while_another_is_stuck,
        NULL});
    add_tests(s, "from inside a run", (const TTest *[]){
        test_get_stats_on_itself_from_a_run_counts_the_runs_before_it,
        test_get_stats_on_a_stuck_group_peer_from_a_run_returns_at_once,
        test_blocking_stop_of_a_group_peer_from_a_run_waits_for_its_end,
        test_stop_without_block_of_a_stuck_group_peer_from_a_run_returns_at_once,
        test_blocking_stop_of_a_stuck_group_peer_from_a_run_times_out,
        test_mutual_blocking_stops_from_two_runs_end_both_services, NULL});
    return run_suite(s);
}
