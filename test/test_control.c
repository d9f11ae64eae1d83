/*
 * Runtime control: wakes and their bits, lsvc_run_within, lsvc_next_run_in
 * and hibernation, LSVC_NEVER, lsvc_sleep and lsvc_should_stop, pause and
 * resume, fixed_delay, lsvc_set_loop_seconds, lsvc_get_run_info and
 * stats.wakes; then these calls on services that do not run, and with bad
 * arguments.
 *
 * Each test takes the form that catches the classic bug of its rule: a
 * wake lost to the run's own lsvc_next_run_in, a later request postponing
 * an earlier one, a woken run moving the grid, a pause that does not wait
 * for the run in progress, a stop bound made endless by LSVC_NEVER. Times
 * are checked against the due times that the library reports
 * (lsvc_get_run_info, lsvc_scheduled_start), which are exact; elapsed time
 * only against wide bounds.
 */
#include "helpers.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MS NS_PER_MS

/* Bound on what should happen at once. */
#define AT_ONCE_S 1.0
/* Bound on waiting for an event that must come. */
#define EVENT_S 10.0
/* How long a test watches for a run that must not begin. */
#define QUIET_S 0.3

/* --- The fixture ---------------------------------------------------------- */

struct ctl;
/* Something a run does on its own service. */
typedef int act_fn(struct ctl *c);

/* A probe service that keeps what each run learnt about itself, and whose
 * run number act_run calls act. */
struct ctl {
    struct probe p;
    lsvc *svc;
    act_fn *act;      /* NULL: nothing */
    uint64_t act_run;
    double seconds;   /* the argument of act */
    void *user;       /* the test's own */
    /* Under p.lock: */
    int act_rc;       /* what act returned */
    int64_t act_ns;   /* how long it took */
    int info_rc[PROBE_MAX_RUNS];
    lsvc_run_info info[PROBE_MAX_RUNS];
    int64_t lateness_ns[PROBE_MAX_RUNS]; /* stats.last_lateness_ns */
    bool should_stop[PROBE_MAX_RUNS];
};

/* One run as the service saw it. */
struct seen {
    lsvc_run_info info;
    int info_rc;
    int64_t due, start; /* info's, in ns */
    int64_t sched;      /* lsvc_scheduled_start */
    int64_t begin, end; /* by the probe's clock, inside the run */
    int64_t lateness;
    bool should_stop;
    int act_rc;
    int64_t act_ns;
};

static void record_run(lsvc *svc, struct probe *p, uint64_t run)
{
    struct ctl *c = p->user;
    lsvc_run_info info;
    lsvc_stats st;

    memset(&info, 0, sizeof(info));
    memset(&st, 0, sizeof(st));
    int info_rc = lsvc_get_run_info(svc, &info);
    lsvc_get_stats(svc, &st);
    bool stop = lsvc_should_stop(svc);
    bool acting = c->act != NULL && run == c->act_run;
    int act_rc = 0;
    int64_t t0 = now_ns();
    if (acting)
        act_rc = c->act(c);
    int64_t act_ns = now_ns() - t0;

    pthread_mutex_lock(&p->lock);
    if (run < PROBE_MAX_RUNS) {
        c->info_rc[run] = info_rc;
        c->info[run] = info;
        c->lateness_ns[run] = st.last_lateness_ns;
        c->should_stop[run] = stop;
    }
    if (acting) {
        c->act_rc = act_rc;
        c->act_ns = act_ns;
    }
    pthread_mutex_unlock(&p->lock);
}

static void ctl_init(struct ctl *c, const lsvc_class *cls,
                     const lsvc_options *opts)
{
    memset(c, 0, sizeof(*c));
    probe_init(&c->p);
    c->p.during = record_run;
    c->p.user = c;
    c->svc = make_service(cls, &c->p, opts);
}

/* Stops the service, which must work in whatever state a test left it,
 * and frees it. */
static void ctl_end(struct ctl *c)
{
    ck_assert_int_eq(lsvc_stop(c->svc, true), 0);
    ck_assert_int_eq(lsvc_destroy(c->svc), 0);
    probe_destroy(&c->p);
}

static struct seen seen(struct ctl *c, uint64_t run)
{
    struct seen s;
    ck_assert_uint_lt(run, PROBE_MAX_RUNS);
    pthread_mutex_lock(&c->p.lock);
    s.info = c->info[run];
    s.info_rc = c->info_rc[run];
    s.sched = c->p.sched_ns[run];
    s.begin = c->p.begin_ns[run];
    s.end = c->p.end_ns[run];
    s.lateness = c->lateness_ns[run];
    s.should_stop = c->should_stop[run];
    s.act_rc = c->act_rc;
    s.act_ns = c->act_ns;
    pthread_mutex_unlock(&c->p.lock);
    s.due = timespec_ns(&s.info.due);
    s.start = timespec_ns(&s.info.start);
    return s;
}

static uint64_t locked(struct ctl *c, const uint64_t *count)
{
    pthread_mutex_lock(&c->p.lock);
    uint64_t n = *count;
    pthread_mutex_unlock(&c->p.lock);
    return n;
}

/* Waits at most `seconds` until *count, which each post of sem follows,
 * reaches n. */
static bool wait_count(struct ctl *c, sem_t *sem, const uint64_t *count,
                       uint64_t n, double seconds)
{
    int64_t deadline = now_ns() + (int64_t)(seconds * 1e9);
    while (locked(c, count) < n) {
        double left = (double)(deadline - now_ns()) / 1e9;
        if (left <= 0)
            return false;
        sem_wait_for(sem, left);
    }
    return true;
}

/* Until n runs in all have begun, or ended. */
static bool wait_begun(struct ctl *c, uint64_t n)
{
    return wait_count(c, &c->p.entered, &c->p.runs, n, EVENT_S);
}

/* A run has ended for the library once its stats count it, in the
 * critical section that ends it: a little after the probe's `ran`. Polls
 * that last step, as wait_not_running does. */
static bool wait_ended(struct ctl *c, uint64_t n)
{
    int64_t start = now_ns();
    lsvc_stats st;
    if (!wait_count(c, &c->p.ran, &c->p.completed, n, EVENT_S))
        return false;
    while (lsvc_get_stats(c->svc, &st) == 0 && st.loops < n) {
        if (seconds_since(start) > EVENT_S)
            return false;
        sched_yield();
    }
    return true;
}

/* Starts the service until stopped, and waits for its first run to have
 * begun, held by the probe until probe_release. */
static void start_holding_first_run(struct ctl *c)
{
    probe_hold(&c->p);
    ck_assert_int_eq(lsvc_start(c->svc, 0), 0);
    ck_assert(wait_begun(c, 1));
}

/* Starts the service until stopped, and waits for its first run to end. */
static void start_past_first_run(struct ctl *c)
{
    ck_assert_int_eq(lsvc_start(c->svc, 0), 0);
    ck_assert(wait_ended(c, 1));
}

/* No run begins for `seconds`: here the time that passes is the point. */
static void check_no_run_for(struct ctl *c, double seconds,
                             const char *while_what)
{
    uint64_t n = locked(c, &c->p.runs);
    ck_assert_msg(!wait_count(c, &c->p.entered, &c->p.runs, n + 1, seconds),
                  "a run began %s", while_what);
}

static double ms(int64_t ns)
{
    return (double)ns / 1e6;
}

/* What runs do, through act. */
static int next_run_in(struct ctl *c)
{
    return lsvc_next_run_in(c->svc, c->seconds);
}

static int set_interval(struct ctl *c)
{
    return lsvc_set_loop_seconds(c->svc, c->seconds);
}

static int pause_own(struct ctl *c)
{
    return lsvc_pause(c->svc);
}

static int stop_blocking(lsvc *svc)
{
    return lsvc_stop(svc, true);
}

static int stop_no_block(lsvc *svc)
{
    return lsvc_stop(svc, false);
}

/* --- A call on a thread of its own ---------------------------------------- */

struct async {
    lsvc *svc;
    int (*fn)(lsvc *svc);
    pthread_t thread;
    sem_t calling; /* posted just before the call */
    sem_t done;    /* posted once it has returned */
    bool returned;
    int rc;
    int64_t called_ns, returned_ns;
};

static void *async_main(void *arg)
{
    struct async *a = arg;
    a->called_ns = now_ns();
    sem_post(&a->calling);
    a->rc = a->fn(a->svc);
    a->returned_ns = now_ns();
    sem_post(&a->done);
    return NULL;
}

static void async_call(struct async *a, lsvc *svc, int (*fn)(lsvc *svc))
{
    memset(a, 0, sizeof(*a));
    a->svc = svc;
    a->fn = fn;
    sem_init(&a->calling, 0, 0);
    sem_init(&a->done, 0, 0);
    ck_assert_int_eq(pthread_create(&a->thread, NULL, async_main, a), 0);
    ck_assert(sem_wait_for(&a->calling, EVENT_S));
}

/* Whether the call has returned, waiting at most `seconds` for it. */
static bool async_returned(struct async *a, double seconds)
{
    if (!a->returned)
        a->returned = sem_wait_for(&a->done, seconds);
    return a->returned;
}

static int async_join(struct async *a)
{
    ck_assert_msg(async_returned(a, 30), "the call never returned");
    pthread_join(a->thread, NULL);
    sem_destroy(&a->calling);
    sem_destroy(&a->done);
    return a->rc;
}

static double async_seconds(const struct async *a)
{
    return (double)(a->returned_ns - a->called_ns) / 1e9;
}

/* --- Wakes ---------------------------------------------------------------- */

/* Wakes made while the first run of a 60 s service is held. */
struct wakes_case {
    unsigned bits[6]; /* lsvc_wake_bits' bits; 0: lsvc_wake */
    size_t n;
    bool sets_next_60; /* the run then calls lsvc_next_run_in(60) */
    unsigned want_bits;
};

static void check_wakes_during_a_run(const struct wakes_case *k)
{
    static const lsvc_class cls = PROBE_CLASS("WokenInRun", 60);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    if (k->sets_next_60) {
        c.act = next_run_in;
        c.seconds = 60;
    }
    start_holding_first_run(&c);
    for (size_t i = 0; i < k->n; i++)
        ck_assert_int_eq(k->bits[i] != 0 ? lsvc_wake_bits(c.svc, k->bits[i])
                                         : lsvc_wake(c.svc),
                         0);
    probe_release(&c.p);
    ck_assert_msg(wait_ended(&c, 2), "no run came after %zu wake(s) during "
                  "the first", k->n);
    struct seen first = seen(&c, 0), woken = seen(&c, 1);
    ck_assert_int_eq(first.act_rc, 0);
    ck_assert_uint_eq(woken.info.reasons, LSVC_RUN_WOKEN);
    ck_assert_uint_eq(woken.info.wake_bits, k->want_bits);
    ck_assert_msg(woken.begin - first.end < (int64_t)(AT_ONCE_S * 1e9),
                  "the woken run came %.3f ms after the first ended",
                  ms(woken.begin - first.end));
    check_no_run_for(&c, QUIET_S, "after the one run the wakes asked for");
    /* The bits went to that run alone. */
    ck_assert_int_eq(lsvc_wake(c.svc), 0);
    ck_assert(wait_ended(&c, 3));
    ck_assert_uint_eq(seen(&c, 2).info.wake_bits, 0);
    ck_assert_uint_eq(stats_of(c.svc).wakes, 2);
    ctl_end(&c);
}

START_TEST(test_wake_during_a_run_that_sets_60_s_gives_one_run_right_after)
{
    static const struct wakes_case k = {{0}, 1, true, 0};
    check_wakes_during_a_run(&k);
}
END_TEST

START_TEST(test_several_wakes_during_one_run_give_one_run)
{
    static const struct wakes_case k = {{0, 0, 0, 0, 0}, 5, false, 0};
    check_wakes_during_a_run(&k);
}
END_TEST

START_TEST(test_wake_bits_are_or_merged_and_handed_to_the_run)
{
    static const struct wakes_case k = {
        {0x1, 0, 0x4, 0x1, 0x100}, 5, true, 0x105};
    check_wakes_during_a_run(&k);
}
END_TEST

/* Wakes the service and checks that run number `run` follows at once. */
static void check_woken_at_once(struct ctl *c, uint64_t run, unsigned reasons)
{
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_wake(c->svc), 0);
    ck_assert_msg(wait_ended(c, run + 1), "the wake did not run the service");
    struct seen r = seen(c, run);
    ck_assert_uint_eq(r.info.reasons, reasons);
    ck_assert_msg(r.begin - t0 < (int64_t)(AT_ONCE_S * 1e9),
                  "the woken run began %.3f ms after the wake",
                  ms(r.begin - t0));
}

/* A run that called lsvc_next_run_in(INFINITY) sleeps until woken; the
 * wake cuts that short, in either sleep mode (_i: precise). */
START_TEST(test_wake_ends_a_hibernation_at_once)
{
    static const lsvc_class cls = PROBE_CLASS("Hibernating", 60);
    const lsvc_options o = {.precise = _i};
    struct ctl c;
    ctl_init(&c, &cls, &o);
    c.act = next_run_in;
    c.seconds = INFINITY;
    start_past_first_run(&c);
    ck_assert_int_eq(seen(&c, 0).act_rc, 0);
    check_woken_at_once(&c, 1, LSVC_RUN_WOKEN);
    ctl_end(&c);
}
END_TEST

/* A LSVC_NEVER service: its first run waits for a wake, and every wake
 * runs it at once, in either sleep mode (_i: precise). */
START_TEST(test_never_service_runs_only_and_at_once_when_woken)
{
    static const lsvc_class cls = PROBE_CLASS("OnDemand", LSVC_NEVER);
    const lsvc_options o = {.precise = _i};
    struct ctl c;
    ctl_init(&c, &cls, &o);
    ck_assert_double_eq(lsvc_loop_seconds(c.svc), INFINITY);
    ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
    ck_assert(sem_wait_for(&c.p.started, EVENT_S));
    check_no_run_for(&c, QUIET_S, "in a LSVC_NEVER service nobody woke");
    check_woken_at_once(&c, 0, LSVC_RUN_FIRST | LSVC_RUN_WOKEN);
    check_no_run_for(&c, QUIET_S, "after the run of the wake");
    check_woken_at_once(&c, 1, LSVC_RUN_WOKEN);
    ck_assert_double_eq(lsvc_loop_seconds(c.svc), INFINITY);
    ctl_end(&c);
}
END_TEST

/* LSVC_NEVER is an interval for the class and for the options, and the
 * options still override the class. (-infinity and NaN: test_badinput.c.)
 */
START_TEST(test_create_accepts_never_as_class_and_option_interval)
{
    static const lsvc_class never = PROBE_CLASS("Never", LSVC_NEVER);
    static const lsvc_class second = PROBE_CLASS("EverySecond", 1);
    static const lsvc_options as_option = {.loop_seconds = LSVC_NEVER};
    static const lsvc_options one_second = {.loop_seconds = 1};
    static const struct {
        const lsvc_class *cls;
        const lsvc_options *opts;
        double want;
    } cases[] = {
        {&never, NULL, INFINITY},
        {&second, &as_option, INFINITY},
        {&never, &one_second, 1},
    };
    struct probe p;
    probe_init(&p);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lsvc *svc = make_service(cases[i].cls, &p, cases[i].opts);
        ck_assert_double_eq(lsvc_loop_seconds(svc), cases[i].want);
        ck_assert_int_eq(lsvc_destroy(svc), 0);
    }
    probe_destroy(&p);
}
END_TEST

/* --- Requests ------------------------------------------------------------- */

/* The run that a request for `after_s` made between t0 and t1 caused. */
static void check_requested_run(const struct seen *r, int64_t t0, int64_t t1,
                                double after_s)
{
    int64_t after = (int64_t)(after_s * 1e9);
    ck_assert_uint_eq(r->info.reasons, LSVC_RUN_WOKEN);
    ck_assert_msg(r->due >= t0 + after && r->due <= t1 + after,
                  "the run was due %.3f ms after the request, want %.3f ms",
                  ms(r->due - t0), ms(after));
    ck_assert_int_ge(r->begin, r->due);
    ck_assert_msg(r->begin - t1 < after + (int64_t)(AT_ONCE_S * 1e9),
                  "the run began %.3f ms after the request", ms(r->begin - t1));
}

/* Two requests back to back between the runs of a 60 s service: the run
 * comes at the earlier, in either order (_i). */
START_TEST(test_earlier_run_within_is_not_postponed_by_a_later_one)
{
    static const double order[][2] = {{0.2, 30}, {30, 0.2}};
    static const lsvc_class cls = PROBE_CLASS("Requested", 60);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    start_past_first_run(&c);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_run_within(c.svc, order[_i][0]), 0);
    ck_assert_int_eq(lsvc_run_within(c.svc, order[_i][1]), 0);
    int64_t t1 = now_ns();
    ck_assert_msg(wait_ended(&c, 2), "no run within 0.2 s of the requests");
    struct seen r = seen(&c, 1);
    check_requested_run(&r, t0, t1, 0.2);
    ctl_end(&c);
}
END_TEST

START_TEST(test_run_within_during_a_run_survives_its_next_run_in_60)
{
    static const lsvc_class cls = PROBE_CLASS("RequestedInRun", 60);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    c.act = next_run_in;
    c.seconds = 60;
    start_holding_first_run(&c);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_run_within(c.svc, 0.2), 0);
    int64_t t1 = now_ns();
    probe_release(&c.p);
    ck_assert_msg(wait_ended(&c, 2), "the request made during the run was "
                  "lost to the run's lsvc_next_run_in(60)");
    ck_assert_int_eq(seen(&c, 0).act_rc, 0);
    struct seen r = seen(&c, 1);
    check_requested_run(&r, t0, t1, 0.2);
    ctl_end(&c);
}
END_TEST

/* --- lsvc_next_run_in ----------------------------------------------------- */

/* From the run itself (_i = 0), or from another thread while the 60 s
 * service sleeps (_i = 1). */
START_TEST(test_next_run_in_0_runs_at_once)
{
    static const lsvc_class cls = PROBE_CLASS("NextAtOnce", 60);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    c.act = _i == 0 ? next_run_in : NULL;
    start_past_first_run(&c);
    int64_t t0 = now_ns();
    if (_i == 1)
        ck_assert_int_eq(lsvc_next_run_in(c.svc, 0), 0);
    ck_assert_msg(wait_ended(&c, 2), "lsvc_next_run_in(0) ran nothing");
    struct seen r = seen(&c, 1);
    ck_assert_uint_eq(r.info.reasons, LSVC_RUN_TIMER);
    ck_assert_msg(r.begin - t0 < (int64_t)(AT_ONCE_S * 1e9),
                  "the run began %.3f ms after the call", ms(r.begin - t0));
    ck_assert_int_eq(seen(&c, 0).act_rc, 0);
    ctl_end(&c);
}
END_TEST

/* The first run sets its next, sooner or later than the interval (_i);
 * the run after that counts from it. BURST keeps a grid whatever the
 * lateness, so the steps are exact. */
START_TEST(test_next_run_in_replaces_the_due_point_and_the_grid_counts_from_it)
{
    static const struct {
        double interval, next;
    } cases[] = {{0.5, 0.05}, {0.05, 0.25}};
    static const lsvc_class cls = PROBE_CLASS("OwnPace", 60);
    const lsvc_options o = {.loop_seconds = cases[_i].interval,
                            .missed = LSVC_MISSED_BURST};
    int64_t interval = (int64_t)(cases[_i].interval * 1e9);
    int64_t next = (int64_t)(cases[_i].next * 1e9);
    struct ctl c;
    ctl_init(&c, &cls, &o);
    c.act = next_run_in;
    c.seconds = cases[_i].next;
    ck_assert_int_eq(lsvc_start(c.svc, 3), 0);
    ck_assert_int_eq(lsvc_join(c.svc, EVENT_S), 0);
    struct seen r0 = seen(&c, 0), r1 = seen(&c, 1), r2 = seen(&c, 2);
    ck_assert_int_eq(r0.act_rc, 0);
    ck_assert_msg(r1.sched >= r0.begin + next && r1.sched <= r0.end + next,
                  "the second run was due %.3f ms after the first began, "
                  "want %.3f ms",
                  ms(r1.sched - r0.begin), ms(next));
    ck_assert_uint_eq(r1.info.reasons, LSVC_RUN_TIMER);
    ck_assert_msg(r2.sched == r1.sched + interval,
                  "the third run was due %.3f ms after the second, want %.3f",
                  ms(r2.sched - r1.sched), ms(interval));
    ctl_end(&c);
}
END_TEST

/* --- Woken runs and the grid ---------------------------------------------- */

/* The next timer run after `prev`: one interval later, except under DELAY
 * after a run that began more than its tolerance late (later then). */
static void check_grid_step(const struct seen *prev, const struct seen *next,
                            int64_t interval, lsvc_missed missed)
{
    int64_t tolerance = interval / 2 < 5 * MS ? interval / 2 : 5 * MS;
    if (missed == LSVC_MISSED_DELAY && prev->begin - prev->sched > tolerance)
        ck_assert_int_ge(next->sched, prev->sched + interval);
    else
        ck_assert_msg(next->sched == prev->sched + interval,
                      "a timer run was due %.3f ms after the one before, "
                      "want %.3f ms",
                      ms(next->sched - prev->sched), ms(interval));
}

/* A wake between the timer runs of a 0.3 s service (_i: the missed
 * policy): the woken run is due at the wake, so not late, and the timer
 * runs stay on the grid of the first. */
START_TEST(test_woken_run_keeps_the_grid_and_its_lateness_counts_from_the_wake)
{
    static const lsvc_class cls = PROBE_CLASS("GridKeeper", 0.3);
    const lsvc_options o = {.missed = (lsvc_missed)_i};
    const int64_t interval = 300 * MS;
    struct ctl c;
    ctl_init(&c, &cls, &o);
    ck_assert_int_eq(lsvc_start(c.svc, 4), 0);
    ck_assert(wait_ended(&c, 1));
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_wake(c.svc), 0);
    int64_t t1 = now_ns();
    ck_assert_int_eq(lsvc_join(c.svc, EVENT_S), 0);

    uint64_t woken = 0;
    struct seen last = seen(&c, 0);
    for (uint64_t k = 1; k < 4; k++) {
        struct seen r = seen(&c, k);
        if (r.info.reasons == LSVC_RUN_WOKEN) {
            woken++;
            ck_assert_msg(r.sched >= t0 && r.sched <= t1,
                          "the woken run was due %.3f ms from the wake",
                          ms(r.sched - t0));
            ck_assert_msg(r.lateness >= 0 && r.lateness <= r.begin - t0,
                          "the woken run was %.3f ms late, and began %.3f ms "
                          "after the wake",
                          ms(r.lateness), ms(r.begin - t0));
            continue;
        }
        ck_assert_uint_eq(r.info.reasons, LSVC_RUN_TIMER);
        check_grid_step(&last, &r, interval, o.missed);
        last = r;
    }
    ck_assert_uint_eq(woken, 1);
    ctl_end(&c);
}
END_TEST

/* --- lsvc_sleep and lsvc_should_stop -------------------------------------- */

/* The first run of a 60 s service started for one run calls `before`, then
 * sleeps; meanwhile another thread does `meanwhile`. */
struct sleep_case {
    double seconds;
    int (*before)(lsvc *svc);
    int (*meanwhile)(struct ctl *c);
    int want;               /* what lsvc_sleep returns */
    double at_least, below; /* how long it sleeps */
};

struct sleeper {
    const struct sleep_case *k;
    sem_t sleeping, slept;
    int before_rc, rc;
    bool stop_before, stop_after; /* lsvc_should_stop around `before` */
    int64_t slept_ns;
};

static int sleep_in_run(struct ctl *c)
{
    struct sleeper *s = c->user;
    s->stop_before = lsvc_should_stop(c->svc);
    s->before_rc = s->k->before != NULL ? s->k->before(c->svc) : 0;
    s->stop_after = lsvc_should_stop(c->svc);
    sem_post(&s->sleeping);
    int64_t t0 = now_ns();
    s->rc = lsvc_sleep(c->svc, s->k->seconds);
    s->slept_ns = now_ns() - t0;
    sem_post(&s->slept);
    return s->rc;
}

/* Wakes the service every millisecond until its sleep is over. */
static int wake_all_along(struct ctl *c)
{
    struct sleeper *s = c->user;
    int rc = 0;
    while (rc == 0 && sem_trywait(&s->slept) != 0) {
        rc = lsvc_wake(c->svc);
        work_for_ns(MS);
    }
    return rc;
}

static int pause_from_outside(struct ctl *c)
{
    return lsvc_pause(c->svc);
}

static int stop_from_outside(struct ctl *c)
{
    return stop_blocking(c->svc);
}

static void check_sleep(const struct sleep_case *k, struct sleeper *s)
{
    static const lsvc_class cls = PROBE_CLASS("Sleepy", 60);
    struct ctl c;
    memset(s, 0, sizeof(*s));
    s->k = k;
    sem_init(&s->sleeping, 0, 0);
    sem_init(&s->slept, 0, 0);
    ctl_init(&c, &cls, NULL);
    c.act = sleep_in_run;
    c.user = s;
    ck_assert_int_eq(lsvc_start(c.svc, 1), 0);
    ck_assert(sem_wait_for(&s->sleeping, EVENT_S));
    if (k->meanwhile != NULL)
        ck_assert_int_eq(k->meanwhile(&c), 0);
    ck_assert_int_eq(lsvc_join(c.svc, 30), 0);
    double slept = (double)s->slept_ns / 1e9;
    ck_assert_int_eq(s->before_rc, 0);
    ck_assert_msg(s->rc == k->want, "lsvc_sleep(%g) returned %d after %.3f s, "
                  "want %d", k->seconds, s->rc, slept, k->want);
    ck_assert_msg(slept >= k->at_least && slept < k->below,
                  "lsvc_sleep(%g) took %.3f s, want %g s to %g s", k->seconds,
                  slept, k->at_least, k->below);
    ctl_end(&c);
    sem_destroy(&s->sleeping);
    sem_destroy(&s->slept);
}

START_TEST(test_sleep_returns_0_after_the_full_time)
{
    static const struct sleep_case k = {0.2, NULL, NULL, 0, 0.2, 5};
    struct sleeper s;
    check_sleep(&k, &s);
}
END_TEST

START_TEST(test_sleep_is_not_ended_by_wakes)
{
    static const struct sleep_case k = {0.3, NULL, wake_all_along, 0, 0.3, 5};
    struct sleeper s;
    check_sleep(&k, &s);
}
END_TEST

START_TEST(test_sleep_is_ended_by_a_pause)
{
    static const struct sleep_case k = {
        30, NULL, pause_from_outside, ECANCELED, 0, 5};
    struct sleeper s;
    check_sleep(&k, &s);
}
END_TEST

START_TEST(test_sleep_is_ended_by_a_stop)
{
    static const struct sleep_case k = {
        30, NULL, stop_from_outside, ECANCELED, 0, 5};
    struct sleeper s;
    check_sleep(&k, &s);
}
END_TEST

START_TEST(test_sleep_after_a_stop_request_is_ecanceled_at_once)
{
    static const struct sleep_case k = {
        30, stop_no_block, NULL, ECANCELED, 0, AT_ONCE_S};
    struct sleeper s;
    check_sleep(&k, &s);
    ck_assert_msg(!s.stop_before, "lsvc_should_stop was true before the stop");
    ck_assert_msg(s.stop_after, "lsvc_should_stop was false after the stop");
}
END_TEST

START_TEST(test_sleep_after_its_own_pause_is_ecanceled_at_once)
{
    static const struct sleep_case k = {
        30, lsvc_pause, NULL, ECANCELED, 0, AT_ONCE_S};
    struct sleeper s;
    check_sleep(&k, &s);
    ck_assert(!s.stop_after);
}
END_TEST

/* Seen from outside and from the runs: false until a stop is requested,
 * true from then on, and false again once the service is started anew. */
START_TEST(test_should_stop_is_true_from_a_stop_request_until_the_next_start)
{
    static const lsvc_class cls = PROBE_CLASS("StopAsker", 60);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    ck_assert(!lsvc_should_stop(NULL));
    ck_assert(!lsvc_should_stop(c.svc));
    start_holding_first_run(&c);
    ck_assert(!lsvc_should_stop(c.svc));
    ck_assert_int_eq(lsvc_stop(c.svc, false), 0);
    ck_assert(lsvc_should_stop(c.svc));
    probe_release(&c.p);
    ck_assert_int_eq(lsvc_join(c.svc, EVENT_S), 0);
    ck_assert_msg(seen(&c, 0).should_stop, "the run did not see the stop");
    ck_assert(lsvc_should_stop(c.svc));
    ck_assert_int_eq(lsvc_start(c.svc, 1), 0);
    ck_assert_int_eq(lsvc_join(c.svc, EVENT_S), 0);
    ck_assert_msg(!seen(&c, 1).should_stop, "a stop outlived its start");
    ck_assert(!lsvc_should_stop(c.svc));
    ctl_end(&c);
}
END_TEST

/* --- Pause ---------------------------------------------------------------- */

START_TEST(test_pause_returns_only_after_the_run_in_progress_ended)
{
    static const lsvc_class cls = PROBE_CLASS("PausedInRun", 60);
    struct ctl c;
    struct async a;
    ctl_init(&c, &cls, NULL);
    start_holding_first_run(&c);
    async_call(&a, c.svc, lsvc_pause);
    bool early = async_returned(&a, QUIET_S);
    probe_release(&c.p);
    int rc = async_join(&a);
    ck_assert_msg(!early, "lsvc_pause returned %d while the run was held", rc);
    ck_assert_int_eq(rc, 0);
    ck_assert(wait_ended(&c, 1));
    ck_assert_int_le(seen(&c, 0).end, a.returned_ns);
    ck_assert(stats_of(c.svc).paused);
    ctl_end(&c);
}
END_TEST

/* From its own run lsvc_pause returns at once, where a wait for the run
 * would last the 60 s stop bound; the run goes on to its end, and then
 * nothing that is asked starts a run until lsvc_resume. */
START_TEST(test_pause_from_its_own_run_returns_at_once_and_takes_effect_after_it)
{
    static const lsvc_class cls = PROBE_CLASS("PausesItself", 60);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    c.act = pause_own;
    start_past_first_run(&c);
    struct seen r = seen(&c, 0);
    ck_assert_int_eq(r.act_rc, 0);
    ck_assert_msg(r.act_ns < (int64_t)(AT_ONCE_S * 1e9),
                  "lsvc_pause from its own run took %.3f ms", ms(r.act_ns));
    ck_assert(stats_of(c.svc).paused);
    ck_assert_int_eq(lsvc_wake(c.svc), 0);
    ck_assert_int_eq(lsvc_next_run_in(c.svc, 0), 0);
    check_no_run_for(&c, QUIET_S, "in a service its own run paused");
    ck_assert_int_eq(lsvc_resume(c.svc), 0);
    ck_assert_msg(wait_ended(&c, 2), "no run after lsvc_resume");
    unsigned want = LSVC_RUN_WOKEN | LSVC_RUN_RESUMED;
    ck_assert_uint_eq(seen(&c, 1).info.reasons & want, want);
    ctl_end(&c);
}
END_TEST

/* Wakes, a request and due points (every 50 ms) pass while paused: no run,
 * nothing counted as missed (SKIP would count it); at resume the kept
 * wake runs. Pause and resume are idempotent. */
START_TEST(test_paused_service_starts_no_run)
{
    static const lsvc_class cls = PROBE_CLASS("Paused", 0.05);
    const lsvc_options o = {.missed = LSVC_MISSED_SKIP};
    struct ctl c;
    ctl_init(&c, &cls, &o);
    start_past_first_run(&c);
    ck_assert_int_eq(lsvc_pause(c.svc), 0);
    ck_assert_int_eq(lsvc_pause(c.svc), 0);
    lsvc_stats before = stats_of(c.svc);
    ck_assert(before.paused);
    ck_assert_int_eq(lsvc_wake(c.svc), 0);
    ck_assert_int_eq(lsvc_wake_bits(c.svc, 0x2), 0);
    ck_assert_int_eq(lsvc_run_within(c.svc, 0), 0);
    check_no_run_for(&c, QUIET_S, "in a paused service");
    lsvc_stats after = stats_of(c.svc);
    ck_assert(after.paused);
    ck_assert_uint_eq(after.loops, before.loops);
    ck_assert_uint_eq(after.missed, before.missed);
    ck_assert_int_eq(lsvc_resume(c.svc), 0);
    ck_assert_int_eq(lsvc_resume(c.svc), 0);
    uint64_t n = after.loops;
    ck_assert_msg(wait_ended(&c, n + 1), "no run after lsvc_resume");
    struct seen r = seen(&c, n);
    ck_assert_uint_eq(r.info.reasons & LSVC_RUN_RESUMED, LSVC_RUN_RESUMED);
    ck_assert_uint_eq(r.info.reasons & LSVC_RUN_WOKEN, LSVC_RUN_WOKEN);
    ck_assert_uint_eq(r.info.wake_bits, 0x2);
    ck_assert(!stats_of(c.svc).paused);
    ctl_end(&c);
}
END_TEST

/* A 10 ms service's stop bound is 100 ms: a pause waits that long for a
 * held run, then gives up with the pause in force. */
START_TEST(test_pause_times_out_after_the_stop_bound_and_stays_in_force)
{
    static const lsvc_class cls = PROBE_CLASS("PauseStuck", 0.01);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    start_holding_first_run(&c);
    int64_t t0 = now_ns();
    int rc = lsvc_pause(c.svc);
    double took = seconds_since(t0);
    ck_assert_msg(rc == ETIMEDOUT, "lsvc_pause returned %d after %.3f s", rc,
                  took);
    ck_assert_msg(took >= 0.1 && took < 5.0,
                  "lsvc_pause timed out after %.3f s, want 0.1 s or a little "
                  "more", took);
    ck_assert(stats_of(c.svc).paused);
    probe_release(&c.p);
    ck_assert(wait_ended(&c, 1));
    check_no_run_for(&c, QUIET_S, "after a pause that timed out");
    ck_assert(stats_of(c.svc).paused);
    ck_assert_int_eq(lsvc_resume(c.svc), 0);
    ck_assert_msg(wait_ended(&c, 2), "no run after lsvc_resume");
    ck_assert(seen(&c, 1).info.reasons & LSVC_RUN_RESUMED);
    ctl_end(&c);
}
END_TEST

START_TEST(test_stop_works_while_paused_and_ends_the_pause)
{
    static const lsvc_class cls = PROBE_CLASS("PausedStop", 0.05);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    start_past_first_run(&c);
    ck_assert_int_eq(lsvc_pause(c.svc), 0);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_stop(c.svc, true), 0);
    ck_assert_msg(seconds_since(t0) < AT_ONCE_S,
                  "stopping a paused service took %.3f s", seconds_since(t0));
    ck_assert(!lsvc_is_running(c.svc));
    ck_assert(!stats_of(c.svc).paused);
    pthread_mutex_lock(&c.p.lock);
    ck_assert_int_eq(c.p.events[strlen(c.p.events) - 1], 'T');
    pthread_mutex_unlock(&c.p.lock);
    /* The next start is not paused. */
    uint64_t n = locked(&c, &c.p.runs);
    ck_assert_int_eq(lsvc_start(c.svc, 1), 0);
    ck_assert_int_eq(lsvc_join(c.svc, EVENT_S), 0);
    ck_assert_uint_eq(seen(&c, n).info.reasons,
                      LSVC_RUN_FIRST | LSVC_RUN_TIMER);
    ctl_end(&c);
}
END_TEST

START_TEST(test_resume_runs_a_wake_kept_during_the_pause_at_once)
{
    static const lsvc_class cls = PROBE_CLASS("WokenPaused", 60);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    start_past_first_run(&c);
    ck_assert_int_eq(lsvc_pause(c.svc), 0);
    ck_assert_int_eq(lsvc_wake_bits(c.svc, 0x8), 0);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_resume(c.svc), 0);
    ck_assert_msg(wait_ended(&c, 2), "the wake kept during the pause did not "
                  "run at lsvc_resume");
    struct seen r = seen(&c, 1);
    ck_assert_uint_eq(r.info.reasons, LSVC_RUN_WOKEN | LSVC_RUN_RESUMED);
    ck_assert_uint_eq(r.info.wake_bits, 0x8);
    ck_assert_msg(r.begin >= t0 && r.begin - t0 < (int64_t)(AT_ONCE_S * 1e9),
                  "the run began %.3f ms after lsvc_resume", ms(r.begin - t0));
    ctl_end(&c);
}
END_TEST

/* Pauses a 0.2 s service between runs until two due points have passed,
 * then resumes it between *t0 and *t1; returns the number of runs before
 * the resume, once two more have ended. */
static uint64_t pause_past_two_points(struct ctl *c, int64_t *t0, int64_t *t1,
                                      lsvc_stats *before)
{
    ck_assert(wait_ended(c, 1));
    ck_assert_int_eq(lsvc_pause(c->svc), 0);
    uint64_t n = locked(c, &c->p.runs);
    struct seen last = seen(c, n - 1);
    *before = stats_of(c->svc);
    work_for_ns(500 * MS);
    ck_assert_int_gt(now_ns(), last.end + 2 * 200 * MS);
    *t0 = now_ns();
    ck_assert_int_eq(lsvc_resume(c->svc), 0);
    *t1 = now_ns();
    ck_assert_msg(wait_ended(c, n + 2), "the service did not go on after "
                  "lsvc_resume");
    return n;
}

/* Under DELAY, and with fixed_delay (_i), the point passed during the
 * pause runs at once: it is due at the resume. */
START_TEST(test_resume_under_delay_runs_a_point_passed_during_the_pause)
{
    static const lsvc_options opts[] = {
        {.missed = LSVC_MISSED_DELAY},
        {.missed = LSVC_MISSED_SKIP, .fixed_delay = true},
    };
    static const lsvc_class cls = PROBE_CLASS("ResumedLate", 0.2);
    struct ctl c;
    int64_t t0, t1;
    lsvc_stats before;
    ctl_init(&c, &cls, &opts[_i]);
    ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
    uint64_t n = pause_past_two_points(&c, &t0, &t1, &before);
    struct seen r = seen(&c, n);
    ck_assert_uint_eq(r.info.reasons, LSVC_RUN_TIMER | LSVC_RUN_RESUMED);
    ck_assert_msg(r.sched >= t0 && r.sched <= t1,
                  "the run after the resume was due %.3f ms after it",
                  ms(r.sched - t0));
    ck_assert_uint_eq(stats_of(c.svc).missed, before.missed);
    ctl_end(&c);
}
END_TEST

/* Under SKIP and BURST (_i) the service goes on at the first grid point
 * after the resume: none of the points passed is run or counted missed. */
START_TEST(test_resume_under_skip_and_burst_goes_on_at_the_next_grid_point)
{
    static const lsvc_class cls = PROBE_CLASS("ResumedOnGrid", 0.2);
    const lsvc_options o = {.missed = _i == 0 ? LSVC_MISSED_SKIP
                                              : LSVC_MISSED_BURST};
    const int64_t interval = 200 * MS;
    struct ctl c;
    int64_t t0, t1;
    lsvc_stats before;
    ctl_init(&c, &cls, &o);
    ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
    uint64_t n = pause_past_two_points(&c, &t0, &t1, &before);
    struct seen last = seen(&c, n - 1), r = seen(&c, n), next = seen(&c, n + 1);
    ck_assert_uint_eq(r.info.reasons, LSVC_RUN_TIMER | LSVC_RUN_RESUMED);
    ck_assert_msg((r.sched - last.sched) % interval == 0,
                  "the run after the resume is %.3f ms off the grid",
                  ms((r.sched - last.sched) % interval));
    ck_assert_msg(r.sched >= t0 && r.sched - interval < t1,
                  "the run after the resume was due %.3f ms after it, want "
                  "the next grid point", ms(r.sched - t0));
    check_grid_step(&r, &next, interval, o.missed);
    ck_assert_int_ge(next.begin, next.sched);
    ck_assert_uint_eq(stats_of(c.svc).missed, before.missed);
    ctl_end(&c);
}
END_TEST

/* --- fixed_delay ---------------------------------------------------------- */

/* 50 ms runs every 100 ms: on a grid they would start 100 ms apart. */
START_TEST(test_fixed_delay_counts_the_interval_from_the_end_of_a_run)
{
    static const lsvc_class cls = PROBE_CLASS("FixedDelay", 0.1);
    const lsvc_options o = {.fixed_delay = true};
    struct ctl c;
    ctl_init(&c, &cls, &o);
    c.p.slow_ns = 50 * MS;
    c.p.slow_runs = 4;
    ck_assert_int_eq(lsvc_start(c.svc, 4), 0);
    ck_assert_int_eq(lsvc_join(c.svc, EVENT_S), 0);
    for (uint64_t k = 1; k < 4; k++) {
        struct seen prev = seen(&c, k - 1), r = seen(&c, k);
        ck_assert_msg(r.begin - prev.begin >= 150 * MS,
                      "run %llu began %.3f ms after the one before, want "
                      "150 ms or more",
                      (unsigned long long)k + 1, ms(r.begin - prev.begin));
        ck_assert_int_ge(r.sched, prev.end + 100 * MS);
    }
    ctl_end(&c);
}
END_TEST

/* --- lsvc_set_loop_seconds ---------------------------------------------- */

/* Sets 0.2 s on a service of interval `old`, from the run `at` (inside)
 * or from another thread once it ended, where `at` is the first run, or
 * with `woken`, the first woken one. The next run is due 0.2 s after that
 * run began, a timer run, and the one after it 0.2 s later. */
struct interval_case {
    double old;
    bool woken;
    bool inside;
};

static void check_new_interval(const struct interval_case *k)
{
    const lsvc_class cls = PROBE_CLASS("Retimed", k->old);
    const int64_t interval = 200 * MS;
    uint64_t at = k->woken && k->old != LSVC_NEVER ? 1 : 0;
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    if (k->inside) {
        c.act = set_interval;
        c.act_run = at;
        c.seconds = 0.2;
    }
    ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
    if (at == 1)
        ck_assert(wait_ended(&c, 1));
    if (k->woken)
        ck_assert_int_eq(lsvc_wake(c.svc), 0);
    ck_assert(wait_ended(&c, at + 1));
    int64_t set_ns = seen(&c, at).end;
    if (!k->inside) {
        ck_assert_int_eq(lsvc_set_loop_seconds(c.svc, 0.2), 0);
        set_ns = now_ns();
    }
    ck_assert_double_eq(lsvc_loop_seconds(c.svc), 0.2);
    ck_assert_msg(wait_ended(&c, at + 3), "the new interval of 0.2 s did not "
                  "take effect");
    struct seen r = seen(&c, at), n1 = seen(&c, at + 1), n2 = seen(&c, at + 2);
    ck_assert_int_eq(r.act_rc, 0);
    int64_t want = r.start + interval;
    /* A point already past when it was set is due at once (DELAY). */
    if (set_ns <= want)
        ck_assert_msg(n1.sched == want,
                      "the next run was due %.3f ms after the last began, "
                      "want 200 ms", ms(n1.sched - r.start));
    else
        ck_assert_int_ge(n1.sched, want);
    ck_assert_uint_eq(n1.info.reasons, LSVC_RUN_TIMER);
    check_grid_step(&n1, &n2, interval, LSVC_MISSED_DELAY);
    ctl_end(&c);
}

/* After a timer run of a 60 s service, or a woken run of a LSVC_NEVER one
 * (_i). */
START_TEST(test_set_loop_seconds_between_runs_counts_from_the_last_start)
{
    static const struct interval_case cases[] = {
        {60, false, false},
        {LSVC_NEVER, true, false},
    };
    check_new_interval(&cases[_i]);
}
END_TEST

/* In a timer run, a woken run of a 60 s service, and a woken run of a
 * LSVC_NEVER service (_i): the next counts from that run's start, not
 * from the old grid (which a woken run leaves in place). */
START_TEST(test_set_loop_seconds_in_a_run_counts_from_its_start)
{
    static const struct interval_case cases[] = {
        {60, false, true},
        {60, true, true},
        {LSVC_NEVER, true, true},
    };
    check_new_interval(&cases[_i]);
}
END_TEST

START_TEST(test_set_loop_seconds_persists_across_a_stop_and_a_start)
{
    static const lsvc_class cls = PROBE_CLASS("Persistent", 60);
    const lsvc_options o = {.missed = LSVC_MISSED_SKIP};
    const int64_t interval = 100 * MS;
    struct ctl c;
    ctl_init(&c, &cls, &o);
    start_past_first_run(&c);
    ck_assert_int_eq(lsvc_set_loop_seconds(c.svc, 0.1), 0);
    ck_assert_int_eq(lsvc_stop(c.svc, true), 0);
    ck_assert_double_eq(lsvc_loop_seconds(c.svc), 0.1);
    uint64_t n = locked(&c, &c.p.runs);
    ck_assert_int_eq(lsvc_start(c.svc, 3), 0);
    ck_assert_int_eq(lsvc_join(c.svc, EVENT_S), 0);
    ck_assert_double_eq(lsvc_loop_seconds(c.svc), 0.1);
    for (uint64_t k = n + 1; k < n + 3; k++) {
        struct seen prev = seen(&c, k - 1), r = seen(&c, k);
        check_grid_step(&prev, &r, interval, o.missed);
    }
    ctl_end(&c);
}
END_TEST

/* A 50 ms service set to LSVC_NEVER runs no more until woken. */
START_TEST(test_set_loop_seconds_accepts_never)
{
    static const lsvc_class cls = PROBE_CLASS("GoesQuiet", 0.05);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    start_past_first_run(&c);
    ck_assert_int_eq(lsvc_set_loop_seconds(c.svc, LSVC_NEVER), 0);
    ck_assert_double_eq(lsvc_loop_seconds(c.svc), INFINITY);
    /* A run that began before the call ends. */
    uint64_t n = locked(&c, &c.p.runs);
    ck_assert(wait_ended(&c, n));
    check_no_run_for(&c, QUIET_S, "after the interval became LSVC_NEVER");
    check_woken_at_once(&c, n, LSVC_RUN_WOKEN);
    ctl_end(&c);
}
END_TEST

/* With no run yet, the first run keeps its time: here 0.3 s after the
 * start (the initial delay); the runs after it take the new interval. */
START_TEST(test_set_loop_seconds_before_the_first_run_keeps_its_time)
{
    static const lsvc_class cls = PROBE_CLASS("KeepsFirst", 60);
    const lsvc_options o = {.initial_delay = 0.3};
    struct ctl c;
    ctl_init(&c, &cls, &o);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
    ck_assert_int_eq(lsvc_set_loop_seconds(c.svc, 0.05), 0);
    ck_assert(wait_ended(&c, 2));
    struct seen r0 = seen(&c, 0), r1 = seen(&c, 1);
    ck_assert_msg(r0.sched >= t0 + 300 * MS,
                  "the first run was due %.3f ms after the start, want 300 ms",
                  ms(r0.sched - t0));
    check_grid_step(&r0, &r1, 50 * MS, LSVC_MISSED_DELAY);
    ctl_end(&c);
}
END_TEST

/* --- lsvc_get_run_info ---------------------------------------------------- */

static bool same_info(const lsvc_run_info *a, const lsvc_run_info *b)
{
    return a->reasons == b->reasons && a->wake_bits == b->wake_bits &&
           timespec_ns(&a->due) == timespec_ns(&b->due) &&
           timespec_ns(&a->start) == timespec_ns(&b->start) &&
           timespec_ns(&a->prev_start) == timespec_ns(&b->prev_start) &&
           a->run == b->run;
}

/* EAGAIN before the first run, between runs and after a stop; during a run
 * another thread gets what the run itself gets. */
START_TEST(test_run_info_is_eagain_outside_a_run)
{
    static const lsvc_class cls = PROBE_CLASS("InfoOutside", 60);
    lsvc_run_info info;
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    ck_assert_int_eq(lsvc_get_run_info(NULL, &info), EINVAL);
    ck_assert_int_eq(lsvc_get_run_info(c.svc, NULL), EINVAL);
    ck_assert_int_eq(lsvc_get_run_info(c.svc, &info), EAGAIN);
    start_holding_first_run(&c);
    ck_assert_int_eq(lsvc_get_run_info(c.svc, &info), 0);
    probe_release(&c.p);
    ck_assert(wait_ended(&c, 1));
    struct seen r = seen(&c, 0);
    ck_assert_int_eq(r.info_rc, 0);
    ck_assert_msg(same_info(&info, &r.info), "another thread was told other "
                  "than the run itself");
    ck_assert_int_eq(lsvc_get_run_info(c.svc, &info), EAGAIN);
    ck_assert_int_eq(lsvc_stop(c.svc, true), 0);
    ck_assert_int_eq(lsvc_get_run_info(c.svc, &info), EAGAIN);
    ctl_end(&c);
}
END_TEST

/* Three runs, a stop, two more: numbers 1 to 5, FIRST on the first of each
 * start, each prev_start the start before, each due what
 * lsvc_scheduled_start says, no later than the start. */
START_TEST(test_run_info_numbers_runs_across_starts_and_marks_each_first)
{
    static const lsvc_class cls = PROBE_CLASS("Numbered", 0.02);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    ck_assert_int_eq(lsvc_start(c.svc, 3), 0);
    ck_assert_int_eq(lsvc_join(c.svc, EVENT_S), 0);
    ck_assert_int_eq(lsvc_start(c.svc, 2), 0);
    ck_assert_int_eq(lsvc_join(c.svc, EVENT_S), 0);
    int64_t prev_start = 0;
    for (uint64_t k = 0; k < 5; k++) {
        struct seen r = seen(&c, k);
        unsigned first = k == 0 || k == 3 ? LSVC_RUN_FIRST : 0;
        ck_assert_int_eq(r.info_rc, 0);
        ck_assert_uint_eq(r.info.run, k + 1);
        ck_assert_uint_eq(r.info.reasons, LSVC_RUN_TIMER | first);
        ck_assert_uint_eq(r.info.wake_bits, 0);
        ck_assert_int_eq(timespec_ns(&r.info.prev_start), prev_start);
        ck_assert_int_eq(r.due, r.sched);
        ck_assert_int_le(r.due, r.start);
        ck_assert_int_le(r.start, r.begin);
        prev_start = r.start;
    }
    ctl_end(&c);
}
END_TEST

/* --- stats.wakes ---------------------------------------------------------- */

/* A timer run, three wakes during it (one run), a request (one run),
 * lsvc_next_run_in(0) (a timer run): two runs caused by wakes. */
START_TEST(test_wakes_counts_the_runs_that_wakes_caused)
{
    static const lsvc_class cls = PROBE_CLASS("WakeCounter", 60);
    static const unsigned reasons[] = {
        LSVC_RUN_FIRST | LSVC_RUN_TIMER, LSVC_RUN_WOKEN, LSVC_RUN_WOKEN,
        LSVC_RUN_TIMER,
    };
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    start_holding_first_run(&c);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(lsvc_wake(c.svc), 0);
    probe_release(&c.p);
    ck_assert(wait_ended(&c, 2));
    ck_assert_int_eq(lsvc_run_within(c.svc, 0.05), 0);
    ck_assert(wait_ended(&c, 3));
    ck_assert_int_eq(lsvc_next_run_in(c.svc, 0), 0);
    ck_assert(wait_ended(&c, 4));
    for (uint64_t k = 0; k < 4; k++)
        ck_assert_uint_eq(seen(&c, k).info.reasons, reasons[k]);
    lsvc_stats st = stats_of(c.svc);
    ck_assert_uint_eq(st.loops, 4);
    ck_assert_uint_eq(st.wakes, 2);
    ctl_end(&c);
}
END_TEST

/* --- The stop bound of LSVC_NEVER ----------------------------------------- */

/* A stuck run of a LSVC_NEVER service is waited for 100 ms, as for a
 * short-interval service, not for its endless interval: by a blocking
 * stop and by a pause (_i). */
START_TEST(test_stuck_never_service_is_waited_for_about_100_ms)
{
    static int (*const calls[])(lsvc *svc) = {stop_blocking, lsvc_pause};
    static const lsvc_class cls = PROBE_CLASS("StuckOnDemand", LSVC_NEVER);
    struct ctl c;
    struct async a;
    log_capture();
    ctl_init(&c, &cls, NULL);
    probe_hold(&c.p);
    ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
    ck_assert_int_eq(lsvc_wake(c.svc), 0);
    ck_assert(wait_begun(&c, 1));
    async_call(&a, c.svc, calls[_i]);
    bool returned = async_returned(&a, 5);
    probe_release(&c.p);
    int rc = async_join(&a);
    ck_assert_msg(returned, "a stuck LSVC_NEVER service held the call until "
                  "its run ended");
    ck_assert_int_eq(rc, ETIMEDOUT);
    ck_assert_msg(async_seconds(&a) >= 0.1 && async_seconds(&a) < 5.0,
                  "timed out after %.3f s, want 0.1 s or a little more",
                  async_seconds(&a));
    ctl_end(&c);
}
END_TEST

/* --- Services that do not run, and bad arguments ------------------------ */

/* Every control call on a service that never started (_i = 0) or was
 * stopped (_i = 1) returns 0, and leaves nothing for the next start: no
 * pause, no wake, no next time, no bits. */
START_TEST(test_control_calls_on_a_service_that_does_not_run_change_nothing)
{
    static const lsvc_class cls = PROBE_CLASS("NotRunning", 60);
    lsvc_run_info info;
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    if (_i == 1) {
        ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
        ck_assert(wait_ended(&c, 1));
        ck_assert_int_eq(lsvc_stop(c.svc, true), 0);
    }
    lsvc_stats before = stats_of(c.svc);
    ck_assert_int_eq(lsvc_wake(c.svc), 0);
    ck_assert_int_eq(lsvc_wake_bits(c.svc, 0x40), 0);
    ck_assert_int_eq(lsvc_run_within(c.svc, 0), 0);
    ck_assert_int_eq(lsvc_next_run_in(c.svc, 0), 0);
    ck_assert_int_eq(lsvc_resume(c.svc), 0);
    ck_assert_int_eq(lsvc_pause(c.svc), 0);
    ck_assert_int_eq(lsvc_get_run_info(c.svc, &info), EAGAIN);
    /* A stopped service's stop stays requested until it starts again. */
    ck_assert(lsvc_should_stop(c.svc) == (_i == 1));
    ck_assert_int_eq(lsvc_sleep(c.svc, 0.01), _i == 1 ? ECANCELED : 0);
    lsvc_stats after = stats_of(c.svc);
    ck_assert(!after.paused && !after.running);
    ck_assert_uint_eq(after.loops, before.loops);
    ck_assert_uint_eq(after.wakes, before.wakes);
    ck_assert_double_eq(lsvc_loop_seconds(c.svc), 60);

    uint64_t n = locked(&c, &c.p.runs);
    ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
    ck_assert_msg(wait_ended(&c, n + 1), "the first run did not come: a pause "
                  "stuck");
    struct seen r = seen(&c, n);
    ck_assert_uint_eq(r.info.reasons, LSVC_RUN_FIRST | LSVC_RUN_TIMER);
    ck_assert_uint_eq(r.info.wake_bits, 0);
    check_no_run_for(&c, QUIET_S, "after the first run of a start that "
                     "followed calls on a service that did not run");
    ck_assert_uint_eq(stats_of(c.svc).wakes, before.wakes);
    ctl_end(&c);
}
END_TEST

START_TEST(test_null_service_is_einval_for_every_control_call)
{
    lsvc_run_info info;
    ck_assert(!lsvc_should_stop(NULL));
    ck_assert_int_eq(lsvc_sleep(NULL, 0), EINVAL);
    ck_assert_int_eq(lsvc_wake(NULL), EINVAL);
    ck_assert_int_eq(lsvc_wake_bits(NULL, 1), EINVAL);
    ck_assert_int_eq(lsvc_run_within(NULL, 0), EINVAL);
    ck_assert_int_eq(lsvc_next_run_in(NULL, 0), EINVAL);
    ck_assert_int_eq(lsvc_set_loop_seconds(NULL, 1), EINVAL);
    ck_assert_int_eq(lsvc_pause(NULL), EINVAL);
    ck_assert_int_eq(lsvc_resume(NULL), EINVAL);
    ck_assert_int_eq(lsvc_get_run_info(NULL, &info), EINVAL);
}
END_TEST

#define TOO_LONG (LSVC_MAX_SECONDS * 1.000001)

/* What each call taking seconds refuses, and the edges it takes. */
static const struct {
    const char *name;
    int (*fn)(lsvc *svc, double seconds);
    double bad[8];
    size_t n_bad;
    double good[4];
    size_t n_good;
} seconds_rules[] = {
    {"lsvc_sleep", lsvc_sleep,
     {NAN, INFINITY, -INFINITY, -1, -1e-9, TOO_LONG, 1e300}, 7, {0}, 1},
    {"lsvc_run_within", lsvc_run_within,
     {NAN, INFINITY, -INFINITY, -1, -1e-9, TOO_LONG, 1e300}, 7,
     {0, LSVC_MAX_SECONDS}, 2},
    {"lsvc_next_run_in", lsvc_next_run_in,
     {NAN, -INFINITY, -1, -1e-9, TOO_LONG, 1e300}, 6,
     {0, LSVC_MAX_SECONDS, INFINITY}, 3},
    {"lsvc_set_loop_seconds", lsvc_set_loop_seconds,
     {NAN, -INFINITY, -1, 0, 1e-10, TOO_LONG, 1e300}, 7,
     {1e-9, LSVC_MAX_SECONDS, INFINITY}, 3},
};
#define N_SECONDS_RULES (sizeof(seconds_rules) / sizeof(seconds_rules[0]))

/* Refused on a running service and on one never started, with nothing
 * changed; the edges are taken (on the one never started, where they
 * change only its interval). */
START_TEST(test_bad_seconds_are_einval)
{
    static const lsvc_class cls = PROBE_CLASS("Refuser", 60);
    struct ctl c, idle;
    ctl_init(&c, &cls, NULL);
    ctl_init(&idle, &cls, NULL);
    start_past_first_run(&c);
    for (size_t i = 0; i < N_SECONDS_RULES; i++) {
        for (size_t j = 0; j < seconds_rules[i].n_bad; j++) {
            double s = seconds_rules[i].bad[j];
            ck_assert_msg(seconds_rules[i].fn(c.svc, s) == EINVAL &&
                              seconds_rules[i].fn(idle.svc, s) == EINVAL,
                          "%s(%g) accepted", seconds_rules[i].name, s);
        }
    }
    ck_assert_double_eq(lsvc_loop_seconds(c.svc), 60);
    ck_assert_double_eq(lsvc_loop_seconds(idle.svc), 60);
    check_no_run_for(&c, QUIET_S, "after refused calls");
    for (size_t i = 0; i < N_SECONDS_RULES; i++) {
        for (size_t j = 0; j < seconds_rules[i].n_good; j++) {
            double s = seconds_rules[i].good[j];
            ck_assert_msg(seconds_rules[i].fn(idle.svc, s) == 0,
                          "%s(%g) refused", seconds_rules[i].name, s);
        }
    }
    ck_assert_double_eq(lsvc_loop_seconds(idle.svc), INFINITY);
    ctl_end(&c);
    ctl_end(&idle);
}
END_TEST

/* --- The first run ------------------------------------------------------- */

/* A LSVC_NEVER service waiting for its first run, given an interval,
 * runs one interval later: its first run had no time to keep, whenever
 * its thread looks at the change. */
START_TEST(test_set_loop_seconds_on_a_waiting_never_service_counts_from_now)
{
    static const lsvc_class cls = PROBE_CLASS("FirstByTimer", LSVC_NEVER);
    struct ctl c;
    log_capture_info();
    ctl_init(&c, &cls, NULL);
    ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
    /* Logged on its way to its first wait. */
    ck_assert(log_wait(0, LSVC_LOG_INFO, "runs when woken", EVENT_S, NULL));
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_set_loop_seconds(c.svc, 0.2), 0);
    int64_t t1 = now_ns();
    ck_assert_msg(wait_ended(&c, 1), "no first run after the interval was "
                  "set");
    struct seen r = seen(&c, 0);
    ck_assert_uint_eq(r.info.reasons, LSVC_RUN_FIRST | LSVC_RUN_TIMER);
    /* From when the service thread saw the change: a little after t1. */
    ck_assert_msg(r.sched >= t0 + 200 * MS &&
                      r.sched - t1 < 200 * MS + (int64_t)(AT_ONCE_S * 1e9),
                  "the first run was due %.3f ms after the interval was set, "
                  "want 200 ms", ms(r.sched - t0));
    ctl_end(&c);
}
END_TEST

/* on_start that waits for a post on the sem in ctl.user. */
static int on_start_at_gate(lsvc *svc, void *arg)
{
    struct probe *p = arg;
    struct ctl *c = p->user;
    int rc = probe_on_start(svc, arg);
    while (sem_wait(c->user) == -1 && errno == EINTR) {
    }
    return rc;
}

/* lsvc_start on a thread of its own, since it returns only once on_start
 * has returned. */
static void *start_in_thread(void *arg)
{
    return (void *)(intptr_t)lsvc_start(arg, 0);
}

/* The same rule when the interval is set before the service thread gets
 * to its schedule, while on_start runs (held here, so lsvc_start is made
 * on another thread): a thread that took the new interval as if the
 * service had been created with it would run its first run at once, 0.5 s
 * early. */
START_TEST(test_never_service_given_an_interval_in_on_start_waits_it)
{
    static const lsvc_class cls = {
        .name = "GatedOnDemand", .loop_seconds = LSVC_NEVER,
        .run_once = probe_run_once, .on_start = on_start_at_gate,
        .on_stop = probe_on_stop,
    };
    sem_t gate;
    struct ctl c;
    sem_init(&gate, 0, 0);
    ctl_init(&c, &cls, NULL);
    c.user = &gate;
    pthread_t starter;
    ck_assert_int_eq(pthread_create(&starter, NULL, start_in_thread, c.svc), 0);
    ck_assert(sem_wait_for(&c.p.started, EVENT_S));
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_set_loop_seconds(c.svc, 0.5), 0);
    sem_post(&gate);
    void *start_rc;
    ck_assert_int_eq(pthread_join(starter, &start_rc), 0);
    ck_assert_int_eq((int)(intptr_t)start_rc, 0);
    ck_assert(wait_ended(&c, 1));
    struct seen r = seen(&c, 0);
    ck_assert_msg(r.sched >= t0 + 500 * MS,
                  "the first run was due %.3f ms after the interval was set, "
                  "want 500 ms", ms(r.sched - t0));
    ctl_end(&c);
    sem_destroy(&gate);
}
END_TEST

/* The header: LSVC_NEVER set before the first run cancels it. A service
 * whose first run is due 0.3 s after its start, set to LSVC_NEVER before
 * then, waits for a wake instead. */
START_TEST(test_never_before_the_first_run_cancels_it)
{
    static const lsvc_class cls = PROBE_CLASS("NeverFirst", 60);
    const lsvc_options o = {.initial_delay = 0.3};
    struct ctl c;
    ctl_init(&c, &cls, &o);
    ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
    ck_assert_int_eq(lsvc_set_loop_seconds(c.svc, LSVC_NEVER), 0);
    /* Time is the point: well past the 0.3 s the first run was due. */
    ck_assert_msg(!sem_wait_for(&c.p.entered, 0.8), "the first run came "
                  "although the interval became LSVC_NEVER before it");
    ck_assert_int_eq(lsvc_wake(c.svc), 0);
    ck_assert_msg(wait_ended(&c, 1), "no run after a wake");
    ck_assert(seen(&c, 0).info.reasons & LSVC_RUN_WOKEN);
    ctl_end(&c);
}
END_TEST

/* --- What the review of the schedule found ------------------------------- */

/* A shorter interval on a BURST service paused past many points of its
 * old one: those points were never on the new schedule, and none of them
 * runs at resume; the next run is at most one, then the new interval. */
START_TEST(test_new_interval_after_a_pause_runs_no_points_back_to_back)
{
    static const lsvc_class cls = PROBE_CLASS("BurstPaused", 0.05);
    const lsvc_options o = {.missed = LSVC_MISSED_BURST};
    struct ctl c;
    ctl_init(&c, &cls, &o);
    start_past_first_run(&c);
    ck_assert_int_eq(lsvc_pause(c.svc), 0);
    /* Time is the point: ten points of the old interval pass. */
    check_no_run_for(&c, 0.5, "in a paused service");
    ck_assert_int_eq(lsvc_set_loop_seconds(c.svc, 0.1), 0);
    uint64_t before = locked(&c, &c.p.completed);
    ck_assert_int_eq(lsvc_resume(c.svc), 0);
    ck_assert(wait_ended(&c, before + 3));
    for (uint64_t k = before + 1; k < before + 3; k++) {
        int64_t gap = seen(&c, k).start - seen(&c, k - 1).start;
        ck_assert_msg(gap >= 95 * MS, "runs %llu and %llu after the resume "
                      "began %.3f ms apart, want the new 100 ms",
                      (unsigned long long)(k - 1), (unsigned long long)k,
                      ms(gap));
    }
    ck_assert_uint_eq(stats_of(c.svc).missed, 0);
    ctl_end(&c);
}
END_TEST

/* The interval a service already has, set again (a reload that re-applies
 * its configuration), moves no point: the next run after a woken one is
 * still on the grid. */
START_TEST(test_the_same_interval_again_moves_no_point)
{
    static const lsvc_class cls = PROBE_CLASS("SameAgain", 0.4);
    struct ctl c;
    ctl_init(&c, &cls, NULL);
    start_past_first_run(&c);
    ck_assert_int_eq(lsvc_wake(c.svc), 0);
    ck_assert(wait_ended(&c, 2));
    ck_assert_int_eq(lsvc_set_loop_seconds(c.svc, 0.4), 0);
    ck_assert(wait_ended(&c, 3));
    struct seen first = seen(&c, 0), third = seen(&c, 2);
    ck_assert_msg(third.due == first.due + 400 * MS, "the run after the wake "
                  "was due %.3f ms after the first, want 400 ms",
                  ms(third.due - first.due));
    ctl_end(&c);
}
END_TEST

/* A lease that refuses runs: the first run it lets happen is still
 * marked LSVC_RUN_FIRST, and the wakes a refused run took are gone with
 * it, not asked of the lease again and again. */
static atomic_int lease_calls;
static atomic_bool lease_grants;

static int counting_acquire(void *ctx, lsvc *svc, bool *held)
{
    (void)ctx;
    (void)svc;
    atomic_fetch_add(&lease_calls, 1);
    *held = atomic_load(&lease_grants);
    return 0;
}

START_TEST(test_a_refused_run_keeps_first_for_the_first_run_made)
{
    static const lsvc_lease_ops ops = {.acquire = counting_acquire};
    static const lsvc_class cls = PROBE_CLASS("Refused", LSVC_NEVER);
    const lsvc_options o = {.lease = &ops};
    struct ctl c;
    ctl_init(&c, &cls, &o);
    ck_assert_int_eq(lsvc_start(c.svc, 0), 0);
    ck_assert_int_eq(lsvc_wake_bits(c.svc, 4), 0);
    int64_t start = now_ns();
    while (stats_of(c.svc).skipped_not_leader < 1) {
        ck_assert_msg(seconds_since(start) < EVENT_S, "no refused run");
        sched_yield();
    }
    check_no_run_for(&c, QUIET_S, "after a refused run");
    ck_assert_msg(atomic_load(&lease_calls) == 1, "the lease was asked %d "
                  "times for one wake", atomic_load(&lease_calls));
    atomic_store(&lease_grants, true);
    ck_assert_int_eq(lsvc_wake(c.svc), 0);
    ck_assert(wait_ended(&c, 1));
    struct seen r = seen(&c, 0);
    ck_assert_uint_eq(r.info.reasons, LSVC_RUN_FIRST | LSVC_RUN_WOKEN);
    ck_assert_uint_eq(r.info.wake_bits, 0);
    ctl_end(&c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("control");

    TCase *wakes = timed_tcase("wakes");
    tcase_add_test(wakes, test_wake_during_a_run_that_sets_60_s_gives_one_run_right_after);
    tcase_add_test(wakes, test_several_wakes_during_one_run_give_one_run);
    tcase_add_test(wakes, test_wake_bits_are_or_merged_and_handed_to_the_run);
    tcase_add_loop_test(wakes, test_wake_ends_a_hibernation_at_once, 0, 2);
    tcase_add_loop_test(wakes, test_never_service_runs_only_and_at_once_when_woken, 0, 2);
    tcase_add_test(wakes, test_create_accepts_never_as_class_and_option_interval);
    tcase_add_loop_test(wakes, test_earlier_run_within_is_not_postponed_by_a_later_one, 0, 2);
    tcase_add_test(wakes, test_run_within_during_a_run_survives_its_next_run_in_60);
    tcase_add_loop_test(wakes, test_woken_run_keeps_the_grid_and_its_lateness_counts_from_the_wake, 0, 3);
    tcase_add_test(wakes, test_wakes_counts_the_runs_that_wakes_caused);
    suite_add_tcase(s, wakes);

    TCase *review = timed_tcase("review");
    tcase_add_test(review, test_new_interval_after_a_pause_runs_no_points_back_to_back);
    tcase_add_test(review, test_the_same_interval_again_moves_no_point);
    tcase_add_test(review, test_a_refused_run_keeps_first_for_the_first_run_made);
    suite_add_tcase(s, review);

    TCase *first = timed_tcase("first run");
    tcase_add_test(first, test_never_service_given_an_interval_in_on_start_waits_it);
    tcase_add_test(first, test_set_loop_seconds_on_a_waiting_never_service_counts_from_now);
    tcase_add_test(first, test_never_before_the_first_run_cancels_it);
    suite_add_tcase(s, first);

    TCase *pace = timed_tcase("pace");
    tcase_add_loop_test(pace, test_next_run_in_0_runs_at_once, 0, 2);
    tcase_add_loop_test(pace, test_next_run_in_replaces_the_due_point_and_the_grid_counts_from_it, 0, 2);
    tcase_add_test(pace, test_fixed_delay_counts_the_interval_from_the_end_of_a_run);
    tcase_add_loop_test(pace, test_set_loop_seconds_between_runs_counts_from_the_last_start, 0, 2);
    tcase_add_loop_test(pace, test_set_loop_seconds_in_a_run_counts_from_its_start, 0, 3);
    tcase_add_test(pace, test_set_loop_seconds_persists_across_a_stop_and_a_start);
    tcase_add_test(pace, test_set_loop_seconds_accepts_never);
    tcase_add_test(pace, test_set_loop_seconds_before_the_first_run_keeps_its_time);
    suite_add_tcase(s, pace);

    TCase *sleeps = timed_tcase("sleep");
    tcase_add_test(sleeps, test_sleep_returns_0_after_the_full_time);
    tcase_add_test(sleeps, test_sleep_is_not_ended_by_wakes);
    tcase_add_test(sleeps, test_sleep_is_ended_by_a_pause);
    tcase_add_test(sleeps, test_sleep_is_ended_by_a_stop);
    tcase_add_test(sleeps, test_sleep_after_a_stop_request_is_ecanceled_at_once);
    tcase_add_test(sleeps, test_sleep_after_its_own_pause_is_ecanceled_at_once);
    tcase_add_test(sleeps, test_should_stop_is_true_from_a_stop_request_until_the_next_start);
    suite_add_tcase(s, sleeps);

    TCase *pauses = timed_tcase("pause");
    tcase_add_test(pauses, test_pause_returns_only_after_the_run_in_progress_ended);
    tcase_add_test(pauses, test_pause_from_its_own_run_returns_at_once_and_takes_effect_after_it);
    tcase_add_test(pauses, test_paused_service_starts_no_run);
    tcase_add_test(pauses, test_pause_times_out_after_the_stop_bound_and_stays_in_force);
    tcase_add_test(pauses, test_stop_works_while_paused_and_ends_the_pause);
    tcase_add_test(pauses, test_resume_runs_a_wake_kept_during_the_pause_at_once);
    tcase_add_loop_test(pauses, test_resume_under_delay_runs_a_point_passed_during_the_pause, 0, 2);
    tcase_add_loop_test(pauses, test_resume_under_skip_and_burst_goes_on_at_the_next_grid_point, 0, 2);
    tcase_add_loop_test(pauses, test_stuck_never_service_is_waited_for_about_100_ms, 0, 2);
    suite_add_tcase(s, pauses);

    TCase *info = timed_tcase("run info");
    tcase_add_test(info, test_run_info_is_eagain_outside_a_run);
    tcase_add_test(info, test_run_info_numbers_runs_across_starts_and_marks_each_first);
    suite_add_tcase(s, info);

    TCase *edge = timed_tcase("edges");
    tcase_add_loop_test(edge, test_control_calls_on_a_service_that_does_not_run_change_nothing, 0, 2);
    tcase_add_test(edge, test_null_service_is_einval_for_every_control_call);
    tcase_add_test(edge, test_bad_seconds_are_einval);
    suite_add_tcase(s, edge);
    return run_suite(s);
}
