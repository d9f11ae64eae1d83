/*
 * What a service tells those who operate it: its histograms of run
 * durations and lateness (lsvc_histogram_bound, lsvc_get_histogram),
 * lsvc_stats.last_success_ns and consecutive_failures, its health
 * (lsvc_healthy, lsvc_group_set_health, lsvc_group_healthy: failing,
 * stuck, stale, and what is healthy by rule), the run observer
 * (lsvc_set_run_observer), a group's metrics in Prometheus's text format
 * (lsvc_group_metrics, also checked by promtool when it is on PATH), and
 * the reserved space of the structs a caller fills, which lsvc_create
 * refuses unless it is zero.
 *
 * Health changes with no event to wait for, so it is polled, every 1 ms
 * and for at most EVENT_S. Where time is the point the bounds are wide,
 * and a lower bound counts from a time no later than the library's (its
 * own run start or due time, or a time taken before the start).
 */
#include "helpers.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MS NS_PER_MS

/* Bound on waiting for an event, or a state, that must come. */
#define EVENT_S 10.0

/* The first run a new service makes; runs count from it. */
#define FIRST_RUN 1

/* Lets 1 ms pass between two looks at a state that changes without an
 * event to wait for. */
static void nap(void)
{
    const struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
}

/* Polls until the library has counted n runs of svc: it does so as the
 * run ends, a little after the probe's `ran`. */
static void wait_loops(const lsvc *svc, uint64_t n)
{
    int64_t t0 = now_ns();
    while (stats_of(svc).loops < n) {
        ck_assert_msg(seconds_since(t0) < EVENT_S, "%s did not reach %llu runs",
                      lsvc_name(svc), (unsigned long long)n);
        nap();
    }
}

static bool all_zero(const uint64_t *words, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (words[i] != 0)
            return false;
    return true;
}

#define RESERVED_ZERO(s) \
    all_zero((s).reserved, sizeof((s).reserved) / sizeof((s).reserved[0]))

/* A lease that gives one answer every time: held here, held elsewhere,
 * or none, its store out of reach. */
struct answer {
    bool held;
    int rc;
};
static struct answer held_here = {true, 0}, held_elsewhere = {false, 0},
                     store_lost = {false, EIO};

static int answer(void *ctx, lsvc *svc, bool *held)
{
    const struct answer *a = ctx;
    (void)svc;
    *held = a->held;
    return a->rc;
}

static const lsvc_lease_ops fixed_lease = {.acquire = answer};

/* Options with the lease that gives answer a. */
static lsvc_options leased(struct answer *a)
{
    return (lsvc_options){.lease = &fixed_lease, .lease_ctx = a};
}

/* Adds a probe member of PROBE_CLASS(name, seconds) to g; returns it. */
static struct fx *add_member(struct gfx *g, const char *name, double seconds,
                             const lsvc_options *o)
{
    return &g->m[gfx_add(g, name, seconds, o)];
}

/* --- Histograms ------------------------------------------------------------ */

static const double want_bounds[LSVC_HISTOGRAM_BUCKETS] = {
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, /* us */
    1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1,  0.2,  0.5,  /* ms */
    1,    2,    5,    10,   20,   50,   100,  200,  500,  /* s */
    1000, 2000, 3600, INFINITY};

/* Whether a and b are the same number, to a relative `tolerance`. */
static bool same(double a, double b, double tolerance)
{
    if (isinf(a) || isinf(b))
        return a == b;
    return fabs(a - b) <= tolerance * fmax(1e-300, fabs(b));
}

/* The bucket that holds an observation of `seconds`. */
static unsigned bucket_of(double seconds)
{
    unsigned i = 0;
    while (seconds > lsvc_histogram_bound(i))
        i++;
    return i;
}

static lsvc_histogram histogram_of(const lsvc *svc, lsvc_histogram_kind kind)
{
    lsvc_histogram h;
    memset(&h, 0xff, sizeof(h));
    ck_assert_int_eq(lsvc_get_histogram(svc, kind, &h), 0);
    ck_assert(RESERVED_ZERO(h));
    uint64_t total = 0;
    for (unsigned i = 0; i < LSVC_HISTOGRAM_BUCKETS; i++)
        total += h.buckets[i];
    ck_assert_uint_eq(h.count, total);
    return h;
}

/* The highest bucket that holds an observation. */
static unsigned top_bucket(const lsvc_histogram *h)
{
    unsigned top = 0;
    for (unsigned i = 0; i < LSVC_HISTOGRAM_BUCKETS; i++)
        if (h->buckets[i] != 0)
            top = i;
    return top;
}

START_TEST(test_histogram_bounds_step_1_2_5_to_an_hour_then_inf)
{
    for (unsigned i = 0; i < LSVC_HISTOGRAM_BUCKETS; i++) {
        double b = lsvc_histogram_bound(i);
        ck_assert_msg(same(b, want_bounds[i], 1e-12),
                      "bound(%u) is %.17g, not %g", i, b, want_bounds[i]);
    }
    ck_assert(isinf(lsvc_histogram_bound(LSVC_HISTOGRAM_BUCKETS - 1)));
    ck_assert(isnan(lsvc_histogram_bound(LSVC_HISTOGRAM_BUCKETS)));
    ck_assert(isnan(lsvc_histogram_bound(UINT_MAX)));
}
END_TEST

START_TEST(test_histograms_of_a_new_service_are_empty)
{
    struct fx *f = fx_new("Unrun", 60, NULL);
    const lsvc_histogram_kind kinds[] = {LSVC_HISTOGRAM_DURATION,
                                         LSVC_HISTOGRAM_LATENESS};
    for (size_t k = 0; k < 2; k++) {
        lsvc_histogram h = histogram_of(f->svc, kinds[k]);
        ck_assert_uint_eq(h.count, 0);
        ck_assert(h.sum == 0);
    }
}
END_TEST

/* How long each run works: three in (20, 50] ms, one in (100, 200] ms. */
static const int64_t plan_ns[] = {25 * MS, 120 * MS, 25 * MS, 25 * MS};
#define PLAN_RUNS (sizeof(plan_ns) / sizeof(plan_ns[0]))

static void work_by_plan(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    (void)p;
    work_for_ns(plan_ns[run % PLAN_RUNS]);
}

START_TEST(test_duration_histogram_puts_each_run_in_its_bucket)
{
    log_capture();
    struct fx *f = fx_new("Planned", 0.01, NULL);
    f->p.during = work_by_plan;
    fx_run(f, PLAN_RUNS);
    lsvc_histogram h = histogram_of(f->svc, LSVC_HISTOGRAM_DURATION);
    ck_assert_uint_eq(h.count, PLAN_RUNS);
    for (unsigned i = 0; i < LSVC_HISTOGRAM_BUCKETS; i++) {
        uint64_t want = i == bucket_of(0.025) ? 3 : i == bucket_of(0.12) ? 1 : 0;
        ck_assert_msg(h.buckets[i] == want, "bucket %u (le %g) holds %llu, "
                      "not %llu", i, lsvc_histogram_bound(i),
                      (unsigned long long)h.buckets[i],
                      (unsigned long long)want);
    }
    /* 195 ms of work, and each run within its bucket. */
    ck_assert_msg(h.sum >= 0.195 && h.sum <= 0.35, "sum %.6f s", h.sum);
    ck_assert_uint_eq(top_bucket(&h), bucket_of(stats_of(f->svc).max_run_ns / 1e9));
    ck_assert_uint_eq(histogram_of(f->svc, LSVC_HISTOGRAM_LATENESS).count,
                      PLAN_RUNS);
    /* Kept across starts. */
    fx_run(f, 2);
    ck_assert_uint_eq(histogram_of(f->svc, LSVC_HISTOGRAM_DURATION).count,
                      PLAN_RUNS + 2);
    ck_assert_uint_eq(histogram_of(f->svc, LSVC_HISTOGRAM_LATENESS).count,
                      PLAN_RUNS + 2);
}
END_TEST

/* Under BURST, the run due while a 120 ms run worked starts 70 ms late or
 * more; no lateness exceeds the largest the stats report. */
START_TEST(test_lateness_histogram_counts_every_run_up_to_the_largest)
{
    log_capture();
    const lsvc_options o = {.missed = LSVC_MISSED_BURST};
    struct fx *f = fx_new("Behind", 0.05, &o);
    f->p.slow_ns = 120 * MS;
    f->p.slow_runs = 1;
    fx_run(f, 3);
    lsvc_stats st = stats_of(f->svc);
    lsvc_histogram h = histogram_of(f->svc, LSVC_HISTOGRAM_LATENESS);
    ck_assert_uint_eq(h.count, st.loops);
    ck_assert_int_ge(st.max_lateness_ns, 70 * MS);
    double max_s = (double)st.max_lateness_ns / 1e9;
    ck_assert_uint_eq(top_bucket(&h), bucket_of(max_s));
    ck_assert_msg(h.sum >= max_s * (1 - 1e-9) && h.sum <= 3 * max_s * (1 + 1e-9),
                  "sum %.6f s, largest %.6f s", h.sum, max_s);
}
END_TEST

START_TEST(test_no_histograms_keeps_them_empty)
{
    const lsvc_options o = {.no_histograms = true};
    struct fx *f = fx_new("Unmeasured", 0.01, &o);
    fx_run(f, 3);
    ck_assert_uint_eq(stats_of(f->svc).loops, 3);
    ck_assert_uint_eq(histogram_of(f->svc, LSVC_HISTOGRAM_DURATION).count, 0);
    ck_assert_uint_eq(histogram_of(f->svc, LSVC_HISTOGRAM_LATENESS).count, 0);
}
END_TEST

START_TEST(test_get_histogram_rejects_bad_arguments)
{
    struct fx *f = fx_new("Asked", 60, NULL);
    lsvc_histogram h;
    ck_assert_int_eq(lsvc_get_histogram(NULL, LSVC_HISTOGRAM_DURATION, &h),
                     EINVAL);
    ck_assert_int_eq(lsvc_get_histogram(f->svc, LSVC_HISTOGRAM_DURATION, NULL),
                     EINVAL);
    const int kinds[] = {2, 99, -1};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        ck_assert_msg(lsvc_get_histogram(f->svc, (lsvc_histogram_kind)kinds[i],
                                         &h) == EINVAL,
                      "kind %d accepted", kinds[i]);
}
END_TEST

/* --- Last success and failures in a row -------------------------------------- */

START_TEST(test_last_success_is_when_the_last_good_run_ended)
{
    log_capture();
    struct fx *f = fx_new("Succeeding", 0.01, NULL);
    lsvc_stats st;
    memset(&st, 0xff, sizeof(st));
    ck_assert_int_eq(lsvc_get_stats(f->svc, &st), 0);
    ck_assert_int_eq(st.last_success_ns, 0);
    ck_assert(RESERVED_ZERO(st));

    fx_run(f, 1);
    st = stats_of(f->svc);
    ck_assert_int_ge(st.last_success_ns, f->p.end_ns[0]);
    ck_assert_int_le(st.last_success_ns, now_ns());

    f->p.run_code = 3;
    fx_run(f, 2);
    lsvc_stats failed = stats_of(f->svc);
    ck_assert_int_eq(failed.last_success_ns, st.last_success_ns);
    ck_assert_uint_eq(failed.consecutive_failures, 2);

    f->p.run_code = 0;
    fx_run(f, 1);
    st = stats_of(f->svc);
    ck_assert_int_ge(st.last_success_ns, f->p.end_ns[3]);
    ck_assert_uint_eq(st.consecutive_failures, 0);
}
END_TEST

START_TEST(test_last_success_stays_0_while_every_run_fails)
{
    log_capture();
    struct fx *f = fx_new("NeverGood", 0.01, NULL);
    f->p.run_code = 1;
    fx_run(f, 3);
    lsvc_stats st = stats_of(f->svc);
    ck_assert_int_eq(st.last_success_ns, 0);
    ck_assert_uint_eq(st.consecutive_failures, 3);
    ck_assert_uint_eq(st.errors, 3);
}
END_TEST

/* --- Health ------------------------------------------------------------------ */

/* A reading of health: one service's or a group's, and when it was made. */
struct health {
    bool ok;
    const lsvc *which;
    const char *why;
    int64_t at_ns; /* just after the reading */
};

/* Reads svc's health, or g's when svc is NULL, and checks that the answer
 * and its reasons agree. */
static struct health read_health(const lsvc *svc, lsvc_group *g)
{
    static const char unset[] = "unset";
    struct health h = {.which = (const lsvc *)(const void *)unset,
                       .why = unset};
    if (svc != NULL) {
        h.ok = lsvc_healthy(svc, &h.why);
        h.which = h.ok ? NULL : svc;
    } else {
        h.ok = lsvc_group_healthy(g, &h.which, &h.why);
    }
    h.at_ns = now_ns();
    ck_assert_msg(h.ok == (h.why == NULL) && h.ok == (h.which == NULL),
                  "healthy %d, which %p, why \"%s\"", h.ok,
                  (const void *)h.which, h.why ? h.why : "(null)");
    return h;
}

/* svc (g when svc is NULL) reads healthy now; `when` says in what
 * state. */
static void check_healthy(const lsvc *svc, lsvc_group *g, const char *when)
{
    struct health h = read_health(svc, g);
    if (svc != NULL)
        ck_assert_msg(h.ok, "%s reads \"%s\" %s", lsvc_name(svc), h.why, when);
    else
        ck_assert_msg(h.ok, "the group reads \"%s\" for %s %s", h.why,
                      lsvc_name(h.which), when);
}

/* Whether a reason reads as want (NULL: healthy). */
static bool why_is(const char *why, const char *want)
{
    return want == NULL ? why == NULL : why != NULL && strcmp(why, want) == 0;
}

/* Polls svc's health (g's when svc is NULL) until it reads as want
 * (NULL: healthy), at most EVENT_S. */
static struct health await_health(const lsvc *svc, lsvc_group *g,
                                  const char *want)
{
    int64_t t0 = now_ns();
    struct health h;
    while (!why_is((h = read_health(svc, g)).why, want) &&
           seconds_since(t0) < EVENT_S)
        nap();
    ck_assert_msg(why_is(h.why, want), "%s still reads \"%s\", not \"%s\"",
                  svc != NULL ? lsvc_name(svc) : "the group",
                  h.why ? h.why : "healthy", want ? want : "healthy");
    return h;
}

/* The group reads unhealthy, naming svc for `why`. */
static void check_group_names(lsvc_group *g, const lsvc *svc, const char *why)
{
    struct health h = read_health(NULL, g);
    ck_assert_msg(h.which == svc, "the group names %s, not %s",
                  h.which ? lsvc_name(h.which) : "nobody", lsvc_name(svc));
    ck_assert_str_eq(h.why, why);
}

/* f, started and due every minute, its first run due at once: makes its
 * runs fail `failures` times in a row, woken one by one, and checks that
 * it is healthy until the last, then "failing" (in its group g too, when
 * g is not NULL). */
static void drive_to_failing(struct fx *f, lsvc_group *g, unsigned failures)
{
    for (unsigned k = 1; k <= failures; k++) {
        if (k > 1)
            ck_assert_int_eq(lsvc_wake(f->svc), 0);
        wait_loops(f->svc, k);
        if (k < failures)
            check_healthy(f->svc, NULL, "before its last failure");
    }
    await_health(f->svc, NULL, "failing");
    ck_assert_uint_eq(stats_of(f->svc).consecutive_failures, failures);
    if (g != NULL)
        check_group_names(g, f->svc, "failing");
}

/* One run of f that succeeds makes it (and g) healthy again. */
static void check_recovers(struct fx *f, lsvc_group *g)
{
    uint64_t loops = stats_of(f->svc).loops;
    f->p.run_code = 0;
    ck_assert_int_eq(lsvc_wake(f->svc), 0);
    wait_loops(f->svc, loops + 1);
    await_health(f->svc, NULL, NULL);
    if (g != NULL)
        await_health(NULL, g, NULL);
}

/* A service that fails every run, due every minute. */
static struct fx *lone_failer(const char *name)
{
    struct fx *f = fx_new(name, 60, NULL);
    f->p.run_code = 1;
    fx_start(f, 0);
    return f;
}

START_TEST(test_a_service_fails_after_3_failures_by_default)
{
    log_capture();
    struct fx *f = lone_failer("LoneFailer");
    drive_to_failing(f, NULL, 3);
    check_recovers(f, NULL);
}
END_TEST

START_TEST(test_a_member_fails_after_the_failures_its_group_sets)
{
    log_capture();
    struct gfx *g = gfx_new();
    struct fx *fine = add_member(g, "Fine", 60, NULL);
    struct fx *failer = add_member(g, "Failer", 60, NULL);
    failer->p.run_code = 1;
    ck_assert_int_eq(lsvc_group_set_health(g->g, 2, 3), 0);
    gfx_start(g);
    wait_loops(fine->svc, 1);
    drive_to_failing(failer, g->g, 2);
    check_healthy(fine->svc, NULL, "beside a failing member");
    check_recovers(failer, g->g);
    gfx_stop(g);
}
END_TEST

/* Paused or not running, a service is healthy whatever its runs did. */
START_TEST(test_a_failing_service_is_healthy_while_paused)
{
    log_capture();
    struct fx *f = lone_failer("PausedFailer");
    drive_to_failing(f, NULL, 3);
    ck_assert_int_eq(lsvc_pause(f->svc), 0);
    ck_assert(stats_of(f->svc).paused);
    check_healthy(f->svc, NULL, "while paused");
    ck_assert_int_eq(lsvc_resume(f->svc), 0);
    await_health(f->svc, NULL, "failing");
}
END_TEST

START_TEST(test_a_failing_service_is_healthy_once_stopped)
{
    log_capture();
    struct fx *f = lone_failer("StoppedFailer");
    drive_to_failing(f, NULL, 3);
    fx_stop(f);
    check_healthy(f->svc, NULL, "once stopped");
}
END_TEST

/* Holds f's first run (f started by the caller, with probe_hold first)
 * and checks that it reads "stuck" once the run has lasted more than
 * limit_ns, not before, and healthy again once the run is let go. */
static void check_stuck_after(struct fx *f, lsvc_group *g, int64_t limit_ns)
{
    fx_wait_entered(f);
    lsvc_run_info info;
    ck_assert_int_eq(lsvc_get_run_info(f->svc, &info), 0);
    struct health h = await_health(f->svc, NULL, "stuck");
    int64_t lasted = h.at_ns - timespec_ns(&info.start);
    ck_assert_msg(lasted > limit_ns, "stuck once the run had lasted %.1f ms, "
                  "under the %.1f ms limit", lasted / 1e6, limit_ns / 1e6);
    if (g != NULL)
        check_group_names(g, f->svc, "stuck");
    probe_release(&f->p);
    await_health(f->svc, NULL, NULL);
}

START_TEST(test_a_run_longer_than_stuck_after_intervals_is_stuck)
{
    log_capture();
    struct gfx *g = gfx_new();
    struct fx *hung = add_member(g, "Hung", 0.01, NULL);
    ck_assert_int_eq(lsvc_group_set_stuck_after(g->g, 2), 0);
    probe_hold(&hung->p);
    gfx_start(g);
    check_stuck_after(hung, g->g, 20 * MS);
    gfx_stop(g);
}
END_TEST

START_TEST(test_a_service_in_no_group_is_stuck_after_10_intervals)
{
    log_capture();
    struct fx *f = fx_new("LoneHung", 0.01, NULL);
    probe_hold(&f->p);
    fx_start(f, 0);
    check_stuck_after(f, NULL, 100 * MS);
}
END_TEST

/* A failures limit no test reaches: a member whose runs all fail then
 * reads "stale", not "failing". */
#define NO_FAILING 1000000

/* What the runs of add_fruitless's members return; the test changes it
 * while they run. */
static atomic_int fruitless_rc = 1;

static void result_of_fruitless_rc(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    (void)run;
    p->run_code = atomic_load(&fruitless_rc);
}

/* Adds a member of interval `seconds` whose runs fail, and so show no
 * progress, until fruitless_rc says otherwise. */
static struct fx *add_fruitless(struct gfx *g, double seconds)
{
    struct fx *f = add_member(g, "Fruitless", seconds, NULL);
    f->p.during = result_of_fruitless_rc;
    return f;
}

/* A `during` hook: the first run puts the next one off by the seconds
 * of the double at p->user. */
static void put_off_after_first_run(lsvc *svc, struct probe *p, uint64_t run)
{
    if (run == 0)
        lsvc_next_run_in(svc, *(const double *)p->user);
}

/* Adds a member of 10 ms whose first run puts the next off by `seconds`. */
static struct fx *add_put_off(struct gfx *g, const char *name, double seconds)
{
    struct fx *f = add_member(g, name, 0.01, NULL);
    double *put_off = test_alloc(sizeof(*put_off));
    *put_off = seconds;
    f->p.during = put_off_after_first_run;
    f->p.user = put_off;
    return f;
}

/* A run observer that holds the service thread up after the service's
 * first run has ended (and been counted), until the test opens the gate
 * at ctx, a sem_t that stays open once opened. */
static void hold_after_first_run(const lsvc_run_event *e, void *ctx)
{
    sem_t *gate = ctx;
    if (e->ended && e->run == FIRST_RUN) {
        while (sem_wait(gate) == -1 && errno == EINTR) {
        }
        sem_post(gate);
    }
}

/* Stale after `stale` intervals of `interval`, and at least 1 s. */
static const struct stale_case {
    double interval, stale, limit_s;
} stale_cases[] = {{0.01, 4, 1.0}, {0.4, 4, 1.6}};

/* A service held up between runs (by its run observer): stale once the
 * limit has passed since its last progress, not before; healthy again
 * after a run. */
START_TEST(test_a_service_held_up_between_runs_goes_stale)
{
    const struct stale_case *k = &stale_cases[_i];
    sem_t *gate = test_alloc(sizeof(*gate));
    sems_init(1, gate);
    lsvc_set_run_observer(hold_after_first_run, gate);
    struct gfx *g = gfx_new();
    struct fx *f = add_member(g, "HeldUp", k->interval, NULL);
    ck_assert_int_eq(lsvc_group_set_health(g->g, 3, k->stale), 0);
    gfx_start(g);
    wait_loops(f->svc, 1);
    struct health h = await_health(f->svc, NULL, "stale");
    double quiet = (double)(h.at_ns - f->p.sched_ns[0]) / 1e9;
    ck_assert_msg(quiet >= k->limit_s, "stale %.3f s after its last progress, "
                  "under the %.1f s limit", quiet, k->limit_s);
    check_group_names(g->g, f->svc, "stale");
    sem_post(gate);
    await_health(f->svc, NULL, NULL);
    ck_assert_uint_ge(stats_of(f->svc).loops, 2);
    gfx_stop(g);
    sems_destroy(1, gate);
}
END_TEST

/* svc reads "stale" from now on: in 9 of 10 looks over 0.3 s at least,
 * the others allowed to fall in one of its short runs, when a service
 * is never stale. */
static void check_stays_stale(const lsvc *svc)
{
    await_health(svc, NULL, "stale");
    unsigned looks = 0, stale = 0;
    for (int64_t t0 = now_ns(); seconds_since(t0) < 0.3; nap()) {
        looks++;
        stale += why_is(read_health(svc, NULL).why, "stale");
    }
    ck_assert_msg(stale * 10 >= looks * 9, "%s read \"stale\" in %u of %u "
                  "looks", lsvc_name(svc), stale, looks);
}

/* Failed runs are no progress: with the failures limit out of reach, a
 * service of 0.1 s whose every run fails is stale 1 s after its start,
 * and healthy again after a run that succeeds. */
START_TEST(test_a_service_whose_runs_all_fail_goes_stale)
{
    log_capture();
    struct gfx *g = gfx_new();
    struct fx *f = add_fruitless(g, 0.1);
    ck_assert_int_eq(lsvc_group_set_health(g->g, NO_FAILING, 3), 0);
    int64_t t0 = now_ns();
    gfx_start(g);
    check_stays_stale(f->svc);
    ck_assert_int_ge(now_ns() - t0, NS_PER_S);
    atomic_store(&fruitless_rc, 0);
    await_health(f->svc, NULL, NULL);
    gfx_stop(g);
}
END_TEST

/* A due run left to the replica that holds the lease is progress; one
 * skipped because the store could not tell is not. */
START_TEST(test_a_lease_held_elsewhere_is_progress_and_a_lost_store_is_not)
{
    log_capture();
    const lsvc_options d = leased(&store_lost), e = leased(&held_elsewhere);
    struct gfx *g = gfx_new();
    struct fx *cut_off = add_member(g, "CutOff", 0.1, &d);
    struct fx *follower = add_member(g, "Follower", 0.1, &e);
    gfx_start(g);
    check_stays_stale(cut_off->svc);
    check_healthy(follower->svc, NULL, "with the lease held elsewhere");
    gfx_stop(g);
}
END_TEST

/* Services with no run due stay healthy, looked at every 1 ms for 1.5 s
 * from their start: longer than the 1 s floor of staleness. */
START_TEST(test_services_with_no_run_due_do_not_go_stale)
{
    struct gfx *g = gfx_new();
    const lsvc_options late = {.initial_delay = 60};
    struct fx *calm[] = {
        add_put_off(g, "PutOff", 60),
        add_put_off(g, "Hibernating", INFINITY),
        add_member(g, "OnlyWoken", LSVC_NEVER, NULL),
        add_member(g, "Delayed", 0.01, &late),
        add_member(g, "Paused", 0.01, NULL),
    };
    ck_assert_int_eq(lsvc_group_set_health(g->g, 3, 1), 0);
    int64_t t0 = now_ns();
    gfx_start(g);
    wait_loops(calm[4]->svc, 1);
    ck_assert_int_eq(lsvc_pause(calm[4]->svc), 0);
    while (seconds_since(t0) < 1.5) {
        for (size_t i = 0; i < sizeof(calm) / sizeof(calm[0]); i++)
            check_healthy(calm[i]->svc, NULL, "with no run due");
        nap();
    }
    ck_assert_uint_eq(stats_of(calm[0]->svc).loops, 1);
    ck_assert_uint_eq(stats_of(calm[1]->svc).loops, 1);
    gfx_stop(g);
}
END_TEST

START_TEST(test_group_names_a_member_whose_thread_ended_as_stopped)
{
    struct gfx *g = gfx_new();
    gfx_add(g, "Stayer", 60, NULL);
    struct fx *quitter = add_member(g, "Quitter", 0.01, NULL);
    quitter->p.during = stop_at_second_run;
    check_healthy(NULL, g->g, "before its start");
    gfx_start(g);
    ck_assert(wait_not_running(quitter->svc, EVENT_S));
    check_group_names(g->g, quitter->svc, "stopped");
    /* By the rules of one service, one that does not run is healthy. */
    check_healthy(quitter->svc, NULL, "once its thread ended");
    gfx_stop(g);
    check_healthy(NULL, g->g, "once stopped");
}
END_TEST

/* Once the group is stopping, a member that has ended is no fault. */
START_TEST(test_a_stopping_group_does_not_count_ended_members)
{
    struct gfx *g = gfx_new();
    struct fx *quick = add_member(g, "QuickToEnd", 60, NULL);
    struct fx *slow = add_member(g, "SlowToEnd", 60, NULL);
    probe_hold(&slow->p);
    gfx_start(g);
    fx_wait_entered(slow);
    wait_loops(quick->svc, 1);
    ck_assert_int_eq(lsvc_group_stop(g->g), 0);
    ck_assert(wait_not_running(quick->svc, EVENT_S));
    check_healthy(NULL, g->g, "while stopping");
    probe_release(&slow->p);
    gfx_wait(g);
}
END_TEST

START_TEST(test_group_health_leaves_out_members_the_environment_disabled)
{
    ck_assert_int_eq(setenv("LOOPSVC_SWITCHED_OFF_ENABLED", "0", 1), 0);
    struct gfx *g = gfx_new();
    struct fx *off = add_member(g, "Switched-Off", 60, NULL);
    struct fx *on = add_member(g, "SwitchedOn", 60, NULL);
    gfx_start(g);
    wait_loops(on->svc, 1);
    ck_assert(!lsvc_is_running(off->svc));
    check_healthy(NULL, g->g, "with a member switched off");
    gfx_stop(g);
}
END_TEST

START_TEST(test_healthy_of_null_is_false_and_invalid)
{
    const char *why = NULL;
    ck_assert(!lsvc_healthy(NULL, &why));
    ck_assert_ptr_nonnull(why);
    ck_assert_str_eq(why, "invalid");
    ck_assert(!lsvc_healthy(NULL, NULL));
}
END_TEST

START_TEST(test_set_health_rejects_values_out_of_range)
{
    struct gfx *g = gfx_new();
    ck_assert_int_eq(lsvc_group_set_health(NULL, 3, 3), EINVAL);
    ck_assert_int_eq(lsvc_group_set_health(g->g, 0, 3), EINVAL);
    ck_assert_int_eq(lsvc_group_set_health(g->g, 1000001, 3), EINVAL);
    const double bad[] = {NAN, -NAN, 0, 0.5, 0.999999, -1, INFINITY,
                          -INFINITY, 1e7, 1000000.5};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(lsvc_group_set_health(g->g, 3, bad[i]) == EINVAL,
                      "stale after %g intervals accepted", bad[i]);
    ck_assert_int_eq(lsvc_group_set_health(g->g, 1, 1), 0);
    ck_assert_int_eq(lsvc_group_set_health(g->g, 1000000, 1e6), 0);
    ck_assert_int_eq(lsvc_group_set_health(g->g, 3, 1.5), 0);
}
END_TEST

START_TEST(test_set_health_while_started_is_ebusy)
{
    struct gfx *g = gfx_new();
    gfx_add(g, "Running", 60, NULL);
    gfx_start(g);
    ck_assert_int_eq(lsvc_group_set_health(g->g, 5, 5), EBUSY);
    gfx_stop(g);
    ck_assert_int_eq(lsvc_group_set_health(g->g, 5, 5), 0);
}
END_TEST

/* --- Run observer -------------------------------------------------------------- */

#define TRACE_RUNS 8
#define TRACE_EVENTS 64
#define TRACE_WORK_NS (5 * MS)

/* What the observer was told, and what it saw around it. */
struct traced {
    lsvc_run_event e;
    pthread_t thread;
    int stats_rc;   /* lsvc_get_stats from inside the observer */
    uint64_t loops; /* and the runs it counted */
};

struct trace {
    pthread_mutex_t lock; /* protects the fields below */
    size_t n;
    struct traced ev[TRACE_EVENTS];
};

static struct trace traces[2] = {{.lock = PTHREAD_MUTEX_INITIALIZER},
                                 {.lock = PTHREAD_MUTEX_INITIALIZER}};

/* The observer: ctx is a struct trace. */
static void trace_event(const lsvc_run_event *e, void *ctx)
{
    struct trace *t = ctx;
    lsvc_stats st;
    /* With no lock of ours held: a library lock held by the caller would
     * make this block or fail. */
    int rc = lsvc_get_stats(e->svc, &st);
    pthread_mutex_lock(&t->lock);
    if (t->n < TRACE_EVENTS)
        t->ev[t->n] = (struct traced){*e, pthread_self(), rc, st.loops};
    t->n++;
    pthread_mutex_unlock(&t->lock);
}

/* The events t holds of svc, in order; how many. */
static size_t events_of(struct trace *t, const lsvc *svc, struct traced *out)
{
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->n && i < TRACE_EVENTS; i++)
        if (t->ev[i].e.svc == svc)
            out[n++] = t->ev[i];
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* What each run of a traced service knew of itself, inside run_once. */
struct inside {
    int codes[TRACE_RUNS]; /* what run k returns: set by the test */
    int info_rc[TRACE_RUNS];
    lsvc_run_info info[TRACE_RUNS];
    pthread_t thread[TRACE_RUNS];
};

static void note_inside(lsvc *svc, struct probe *p, uint64_t run)
{
    struct inside *in = p->user;
    if (run < TRACE_RUNS) {
        memset(&in->info[run], 0xff, sizeof(in->info[run]));
        in->info_rc[run] = lsvc_get_run_info(svc, &in->info[run]);
        in->thread[run] = pthread_self();
        p->run_code = in->codes[run];
    }
    work_for_ns(TRACE_WORK_NS);
}

/* A probe service of 10 ms whose runs note what they know in *in. */
static struct fx *traced_fx(const char *name, const lsvc_options *o,
                            struct inside **in)
{
    struct fx *f = fx_new(name, 0.01, o);
    *in = test_alloc(sizeof(**in));
    f->p.during = note_inside;
    f->p.user = *in;
    return f;
}

/* An event against what its run knew of itself. */
static void check_event_matches_run(const struct traced *x,
                                    const struct inside *in, uint64_t k,
                                    bool lease_held)
{
    const lsvc_run_info *info = &in->info[k];
    int64_t due = timespec_ns(&info->due), start = timespec_ns(&info->start);
    ck_assert_uint_eq(x->e.run, info->run);
    ck_assert_uint_eq(x->e.reasons, info->reasons);
    ck_assert_int_eq(timespec_ns(&x->e.due), due);
    ck_assert_int_eq(timespec_ns(&x->e.start), start);
    ck_assert_int_eq(x->e.lateness_ns, start > due ? start - due : 0);
    ck_assert_msg(pthread_equal(x->thread, in->thread[k]),
                  "run %llu: the observer ran on another thread than the run",
                  (unsigned long long)info->run);
    ck_assert_int_eq(x->stats_rc, 0);
    /* The run is counted once it has ended, before the end is told. */
    ck_assert_uint_eq(x->loops, x->e.ended ? x->e.run : x->e.run - 1);
    ck_assert(x->e.lease_held == lease_held);
    ck_assert(RESERVED_ZERO(x->e));
}

/* Checks what t holds of f: a begin and an end per run of its `runs`,
 * paired and in order, each as the run knew itself. */
static void check_spans(struct trace *t, struct fx *f, const struct inside *in,
                        uint64_t runs, bool lease_held)
{
    struct traced ev[TRACE_EVENTS];
    ck_assert_uint_eq(events_of(t, f->svc, ev), 2 * runs);
    for (uint64_t k = 0; k < runs; k++) {
        const struct traced *begin = &ev[2 * k], *end = &ev[2 * k + 1];
        ck_assert_int_eq(in->info_rc[k], 0);
        ck_assert(RESERVED_ZERO(in->info[k]));
        ck_assert_uint_eq(in->info[k].run, FIRST_RUN + k);
        ck_assert(!begin->e.ended);
        ck_assert(end->e.ended);
        check_event_matches_run(begin, in, k, lease_held);
        check_event_matches_run(end, in, k, lease_held);
        ck_assert_int_eq(begin->e.duration_ns, 0);
        ck_assert_int_eq(begin->e.result, 0);
        ck_assert_int_ge(end->e.duration_ns, TRACE_WORK_NS);
        ck_assert_int_ge(end->e.duration_ns, f->p.end_ns[k] - f->p.begin_ns[k]);
        ck_assert_int_lt(end->e.duration_ns, 10 * NS_PER_S);
        ck_assert_int_eq(end->e.result, in->codes[k]);
    }
}

/* Two services at once, each on its own thread. */
START_TEST(test_observer_sees_each_run_begin_and_end_on_its_thread)
{
    log_capture();
    struct inside *in_a, *in_b;
    struct fx *a = traced_fx("Traced-A", NULL, &in_a);
    struct fx *b = traced_fx("Traced-B", NULL, &in_b);
    in_a->codes[1] = 7;
    in_b->codes[0] = -2;
    in_b->codes[2] = 1;
    lsvc_set_run_observer(trace_event, &traces[0]);
    fx_start(a, 3);
    fx_start(b, 3);
    ck_assert_int_eq(lsvc_join(a->svc, EVENT_S), 0);
    ck_assert_int_eq(lsvc_join(b->svc, EVENT_S), 0);
    check_spans(&traces[0], a, in_a, 3, false);
    check_spans(&traces[0], b, in_b, 3, false);
    ck_assert(!pthread_equal(in_a->thread[0], in_b->thread[0]));
}
END_TEST

/* A run made under a lease says so; a run the lease refused is no run. */
START_TEST(test_observer_sees_the_lease_held_and_no_refused_run)
{
    log_capture();
    const lsvc_options lo = leased(&held_here), fo = leased(&held_elsewhere);
    struct inside *in, *unused;
    struct fx *held = traced_fx("Leader", &lo, &in);
    struct fx *refused = traced_fx("Follower", &fo, &unused);
    lsvc_set_run_observer(trace_event, &traces[0]);
    fx_run(held, 2);
    check_spans(&traces[0], held, in, 2, true);

    fx_start(refused, 0);
    int64_t t0 = now_ns();
    while (stats_of(refused->svc).skipped_not_leader < 3) {
        ck_assert_msg(seconds_since(t0) < EVENT_S, "no refused runs");
        nap();
    }
    fx_stop(refused);
    struct traced ev[TRACE_EVENTS];
    ck_assert_uint_eq(events_of(&traces[0], refused->svc, ev), 0);
}
END_TEST

/* An observer that takes its time at every event. */
#define SLOW_OBSERVER_NS (200 * MS)

static void slow_observer(const lsvc_run_event *e, void *ctx)
{
    work_for_ns(SLOW_OBSERVER_NS);
    trace_event(e, ctx);
}

/* The observer delays the service, but its time is not the run's. */
START_TEST(test_observer_time_is_not_in_the_run_duration)
{
    log_capture();
    struct inside *in;
    struct fx *f = traced_fx("SlowlyObserved", NULL, &in);
    lsvc_set_run_observer(slow_observer, &traces[0]);
    fx_run(f, 2);
    check_spans(&traces[0], f, in, 2, false);
    struct traced ev[TRACE_EVENTS];
    ck_assert_uint_eq(events_of(&traces[0], f->svc, ev), 4);
    for (size_t i = 1; i < 4; i += 2)
        ck_assert_int_lt(ev[i].e.duration_ns, SLOW_OBSERVER_NS);
    ck_assert_int_lt(stats_of(f->svc).max_run_ns, SLOW_OBSERVER_NS);
    lsvc_histogram h = histogram_of(f->svc, LSVC_HISTOGRAM_DURATION);
    ck_assert_uint_le(top_bucket(&h), bucket_of(SLOW_OBSERVER_NS / 1e9));
}
END_TEST

/* Each run goes to the observer set when it ran, and none once it is
 * removed; run numbers go on across starts. */
START_TEST(test_observer_can_be_replaced_and_removed)
{
    struct fx *f = fx_new("Observed", 0.01, NULL);
    struct traced ev[TRACE_EVENTS];
    lsvc_set_run_observer(trace_event, &traces[0]);
    fx_run(f, 1);
    lsvc_set_run_observer(trace_event, &traces[1]);
    fx_run(f, 1);
    lsvc_set_run_observer(NULL, NULL);
    fx_run(f, 2);
    ck_assert_uint_eq(stats_of(f->svc).loops, 4);
    for (size_t t = 0; t < 2; t++) {
        ck_assert_uint_eq(events_of(&traces[t], f->svc, ev), 2);
        ck_assert_uint_eq(ev[0].e.run, FIRST_RUN + t);
        ck_assert_uint_eq(ev[1].e.run, FIRST_RUN + t);
    }
}
END_TEST

/* --- Metrics ------------------------------------------------------------------ */

/* Every family, in the order the header lists them; the scalars first. */
static const struct family {
    const char *name, *type;
} families[] = {
    {"loopsvc_runs_total", "counter"},
    {"loopsvc_errors_total", "counter"},
    {"loopsvc_overruns_total", "counter"},
    {"loopsvc_missed_total", "counter"},
    {"loopsvc_skipped_not_leader_total", "counter"},
    {"loopsvc_wakes_total", "counter"},
    {"loopsvc_running", "gauge"},
    {"loopsvc_paused", "gauge"},
    {"loopsvc_healthy", "gauge"},
    {"loopsvc_lease_held", "gauge"},
    {"loopsvc_consecutive_failures", "gauge"},
    {"loopsvc_last_success_timestamp_seconds", "gauge"},
    {"loopsvc_cluster_last_success_timestamp_seconds", "gauge"},
    {"loopsvc_interval_seconds", "gauge"},
    {"loopsvc_run_duration_seconds", "histogram"},
    {"loopsvc_lateness_seconds", "histogram"},
};
#define N_FAMILIES (sizeof(families) / sizeof(families[0]))
#define N_SCALARS 14

/* The Unix time of a CLOCK_MONOTONIC time in ns; 0 for 0. */
static double unix_time_of(int64_t mono_ns)
{
    if (mono_ns == 0)
        return 0;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    return (double)timespec_ns(&wall) / 1e9 - (double)(now_ns() - mono_ns) / 1e9;
}

/* What the scalar families should say of svc, in the order of families. */
static void scalars_of(const lsvc *svc, double want[N_SCALARS])
{
    lsvc_stats st = stats_of(svc);
    const double v[N_SCALARS] = {
        (double)st.loops, (double)st.errors, (double)st.overruns,
        (double)st.missed, (double)st.skipped_not_leader, (double)st.wakes,
        st.running, st.paused, lsvc_healthy(svc, NULL), st.lease_held,
        (double)st.consecutive_failures, unix_time_of(st.last_success_ns),
        unix_time_of(st.cluster_success_ns), lsvc_loop_seconds(svc)};
    memcpy(want, v, sizeof(v));
}

/* One sample line of the text, its labels unescaped. */
struct sample {
    char name[64];
    char service[128];
    char le[32];
    double value;
};

/* The text split into lines, and its sample lines parsed. */
struct exposition {
    char **lines;
    size_t n_lines;
    struct sample *samples;
    size_t n_samples;
};

#define NAME_CHARS \
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:"

/* Reads the quoted label value at *s into out, undoing the escapes the
 * format has (\\, \" and \n); false on any other, or no closing quote. */
static bool read_label_value(const char **s, char *out, size_t size)
{
    const char *p = *s;
    size_t n = 0;
    if (*p++ != '"')
        return false;
    for (; *p != '"'; p++) {
        char c = *p;
        if (c == '\0')
            return false;
        if (c == '\\') {
            p++;
            c = *p == 'n' ? '\n' : (*p == '\\' || *p == '"') ? *p : '\0';
            if (c == '\0')
                return false;
        }
        if (n + 1 >= size)
            return false;
        out[n++] = c;
    }
    out[n] = '\0';
    *s = p + 1;
    return true;
}

/* Parses `name{label="value",...} value`; false when line is not that. */
static bool parse_sample(const char *line, struct sample *s)
{
    memset(s, 0, sizeof(*s));
    size_t n = strspn(line, NAME_CHARS);
    if (n == 0 || n >= sizeof(s->name) || (line[0] >= '0' && line[0] <= '9'))
        return false;
    memcpy(s->name, line, n);
    const char *p = line + n;
    if (*p == '{') {
        for (p++; *p != '}';) {
            char key[32], value[sizeof(s->service)];
            size_t k = strspn(p, NAME_CHARS);
            if (k == 0 || k >= sizeof(key) || p[k] != '=')
                return false;
            memcpy(key, p, k);
            key[k] = '\0';
            p += k + 1;
            if (!read_label_value(&p, value, sizeof(value)))
                return false;
            if (strcmp(key, "service") == 0)
                memcpy(s->service, value, sizeof(value));
            else if (strcmp(key, "le") == 0 && strlen(value) < sizeof(s->le))
                memcpy(s->le, value, strlen(value) + 1);
            if (*p == ',')
                p++;
            else if (*p != '}')
                return false;
        }
        p++;
    }
    if (*p++ != ' ')
        return false;
    char *end;
    s->value = strtod(p, &end);
    return end != p && (*end == '\0' || *end == ' ');
}

static struct exposition parse_exposition(const char *text)
{
    struct exposition x = {0};
    size_t len = strlen(text), n = 0;
    ck_assert_msg(len > 0 && text[len - 1] == '\n',
                  "the text does not end with a newline");
    for (size_t i = 0; i < len; i++)
        n += text[i] == '\n';
    char *copy = test_alloc(len + 1);
    memcpy(copy, text, len + 1);
    x.lines = test_alloc(n * sizeof(*x.lines));
    x.samples = test_alloc(n * sizeof(*x.samples));
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        x.lines[x.n_lines++] = line;
        if (line[0] == '#')
            continue;
        ck_assert_msg(parse_sample(line, &x.samples[x.n_samples]),
                      "not a sample line: %s", line);
        x.n_samples++;
    }
    return x;
}

/* The samples of `name` for `service`, in order: how many, the first
 * `max` pointed to from out. */
static size_t find_samples(const struct exposition *x, const char *name,
                           const char *service, const struct sample **out,
                           size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < x->n_samples; i++) {
        const struct sample *s = &x->samples[i];
        if (strcmp(s->name, name) == 0 && strcmp(s->service, service) == 0) {
            if (n < max)
                out[n] = s;
            n++;
        }
    }
    return n;
}

/* The value of the one sample of `name` for `service`. */
static double value_of(const struct exposition *x, const char *name,
                       const char *service)
{
    const struct sample *s = NULL;
    size_t n = find_samples(x, name, service, &s, 1);
    ck_assert_msg(n == 1, "%zu samples of %s for \"%s\"", n, name, service);
    return s->value;
}

/* The family has one HELP line with text, and one TYPE line. */
static void check_family_header(const struct exposition *x,
                                const struct family *f)
{
    char help[96], type[96];
    snprintf(help, sizeof(help), "# HELP %s ", f->name);
    snprintf(type, sizeof(type), "# TYPE %s %s", f->name, f->type);
    size_t helps = 0, types = 0;
    for (size_t i = 0; i < x->n_lines; i++) {
        helps += starts_with(x->lines[i], help) &&
                 strlen(x->lines[i]) > strlen(help);
        types += strcmp(x->lines[i], type) == 0;
    }
    ck_assert_msg(helps == 1 && types == 1, "%s: %zu HELP and %zu TYPE lines",
                  f->name, helps, types);
}

/* A histogram family of one service: 31 cumulative buckets on the
 * library's bounds, a sum and a count, as lsvc_get_histogram has them. */
static void check_histogram_samples(const struct exposition *x,
                                    const char *family, const char *service,
                                    const lsvc *svc, lsvc_histogram_kind kind)
{
    lsvc_histogram h = histogram_of(svc, kind);
    char name[96];
    const struct sample *b[LSVC_HISTOGRAM_BUCKETS + 1];
    snprintf(name, sizeof(name), "%s_bucket", family);
    ck_assert_uint_eq(find_samples(x, name, service, b, LSVC_HISTOGRAM_BUCKETS + 1),
                      LSVC_HISTOGRAM_BUCKETS);
    uint64_t cumulative = 0;
    for (unsigned i = 0; i < LSVC_HISTOGRAM_BUCKETS; i++) {
        cumulative += h.buckets[i];
        ck_assert_msg(same(strtod(b[i]->le, NULL), lsvc_histogram_bound(i), 1e-9),
                      "%s{service=\"%s\"}: bucket %u has le=\"%s\"", name,
                      service, i, b[i]->le);
        ck_assert_msg(b[i]->value == (double)cumulative,
                      "%s{le=\"%s\"} is %g, not %llu", name, b[i]->le,
                      b[i]->value, (unsigned long long)cumulative);
    }
    snprintf(name, sizeof(name), "%s_count", family);
    ck_assert(value_of(x, name, service) == (double)h.count);
    snprintf(name, sizeof(name), "%s_sum", family);
    double sum = value_of(x, name, service);
    ck_assert_msg(fabs(sum - h.sum) <= 1e-9 + 1e-5 * h.sum, "%s is %g, not %g",
                  name, sum, h.sum);
}

/* The family a sample belongs to: its name, less a histogram's suffix. */
static const struct family *family_of(const struct sample *s)
{
    static const char *const suffixes[] = {"", "_bucket", "_sum", "_count"};
    for (size_t i = 0; i < N_FAMILIES; i++) {
        size_t n = strlen(families[i].name);
        size_t kinds = i < N_SCALARS ? 1 : 4;
        for (size_t k = 0; k < kinds; k++)
            if (strncmp(s->name, families[i].name, n) == 0 &&
                strcmp(s->name + n, suffixes[k]) == 0)
                return &families[i];
    }
    return NULL;
}

/* Everything the text must say of the group's members, who must not run
 * while it is checked, and nothing else. */
static void check_metrics(const struct gfx *g, const char *text)
{
    struct exposition x = parse_exposition(text);
    for (size_t i = 0; i < N_FAMILIES; i++)
        check_family_header(&x, &families[i]);
    for (int m = 0; m < g->n; m++) {
        const char *name = g->m[m].cls.name;
        const lsvc *svc = g->m[m].svc;
        double want[N_SCALARS];
        scalars_of(svc, want);
        for (size_t i = 0; i < N_SCALARS; i++) {
            double got = value_of(&x, families[i].name, name);
            /* The two timestamps: converted from CLOCK_MONOTONIC apart. */
            bool stamp = i == N_SCALARS - 3 || i == N_SCALARS - 2;
            double tolerance = stamp ? 2.0 / fmax(1, want[i]) : 1e-9;
            ck_assert_msg(same(got, want[i], tolerance),
                          "%s{service=\"%s\"} is %.17g, not %.17g",
                          families[i].name, name, got, want[i]);
        }
        check_histogram_samples(&x, "loopsvc_run_duration_seconds", name, svc,
                                LSVC_HISTOGRAM_DURATION);
        check_histogram_samples(&x, "loopsvc_lateness_seconds", name, svc,
                                LSVC_HISTOGRAM_LATENESS);
    }
    for (size_t i = 0; i < x.n_samples; i++) {
        const struct sample *s = &x.samples[i];
        bool member = false;
        for (int m = 0; m < g->n; m++)
            member = member || strcmp(s->service, g->m[m].cls.name) == 0;
        ck_assert_msg(family_of(s) != NULL && member,
                      "a sample of no family or member: %s{service=\"%s\"}",
                      s->name, s->service);
    }
}

/* lsvc_group_metrics into a buffer of the size it asks for. A little
 * more: the timestamps of last successes are worked out at each call,
 * from the clocks of that moment, so their digits may differ by a few
 * from one call to the next. */
static char *metrics_text(lsvc_group *g)
{
    const size_t slack = 64;
    size_t needed = 0, again = 0;
    ck_assert_int_eq(lsvc_group_metrics(g, NULL, 0, &needed), ENOSPC);
    ck_assert_uint_gt(needed, 1);
    char *text = test_alloc(needed + slack);
    ck_assert_int_eq(lsvc_group_metrics(g, text, needed + slack, &again), 0);
    ck_assert_uint_eq(strlen(text) + 1, again);
    ck_assert_uint_le(again, needed + slack);
    return text;
}

/* Whether prog is an executable file in a directory of PATH. */
static bool on_path(const char *prog)
{
    const char *path = getenv("PATH");
    char dir[4096];
    while (path != NULL && *path != '\0') {
        size_t n = strcspn(path, ":");
        if (n > 0 && n < sizeof(dir) - strlen(prog) - 2) {
            snprintf(dir, sizeof(dir), "%.*s/%s", (int)n, path, prog);
            if (access(dir, X_OK) == 0)
                return true;
        }
        path += n + (path[n] == ':');
    }
    return false;
}

/* promtool check metrics must pass the text, when promtool is there; CI
 * sets LSVC_REQUIRE_PROMETHEUS, so that it cannot pass without. */
static void check_with_promtool(const char *text)
{
    fflush(stdout);
    if (!on_path("promtool")) {
        ck_assert_msg(getenv("LSVC_REQUIRE_PROMETHEUS") == NULL,
                      "promtool is not on PATH, and LSVC_REQUIRE_PROMETHEUS "
                      "is set");
        printf("test_ops: promtool is not on PATH: the metrics were checked "
               "here only, not by promtool\n");
        fflush(stdout);
        return;
    }
    signal(SIGPIPE, SIG_IGN);
    FILE *p = popen("promtool check metrics 2>&1", "w");
    ck_assert_ptr_nonnull(p);
    fputs(text, p);
    int status = pclose(p);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "promtool check metrics failed (status %#x; its output is "
                  "above) on:\n%s", (unsigned)status, text);
}

/* A group in every state the gauges tell, its members idle while the
 * text is read: paused, failing, under a lease, without histograms, and
 * never run. */
START_TEST(test_metrics_tell_every_family_of_every_member)
{
    log_capture();
    const lsvc_options lo = leased(&held_here);
    struct gfx *g = gfx_new();
    struct fx *paused = add_member(g, "Steady", 60, NULL);
    struct fx *failing = add_member(g, "Failing", 60, NULL);
    struct fx *leader_fx = add_member(g, "Leader", 60, &lo);
    const lsvc_options unmeasured = {.no_histograms = true};
    struct fx *blind = add_member(g, "Unmeasured", 60, &unmeasured);
    gfx_add(g, "Idle", LSVC_NEVER, NULL);
    failing->p.run_code = 1;
    ck_assert_int_eq(lsvc_group_set_health(g->g, 1, 3), 0);
    gfx_start(g);
    wait_loops(paused->svc, 1);
    wait_loops(failing->svc, 1);
    wait_loops(leader_fx->svc, 1);
    wait_loops(blind->svc, 1);
    ck_assert_int_eq(lsvc_pause(paused->svc), 0);

    char *text = metrics_text(g->g);
    check_metrics(g, text);
    struct exposition x = parse_exposition(text);
    ck_assert(value_of(&x, "loopsvc_healthy", "Failing") == 0);
    ck_assert(value_of(&x, "loopsvc_paused", "Steady") == 1);
    ck_assert(value_of(&x, "loopsvc_lease_held", "Leader") == 1);
    ck_assert(isinf(value_of(&x, "loopsvc_interval_seconds", "Idle")));
    ck_assert(value_of(&x, "loopsvc_runs_total", "Unmeasured") == 1);
    ck_assert(value_of(&x, "loopsvc_run_duration_seconds_count", "Unmeasured") == 0);
    ck_assert(value_of(&x, "loopsvc_last_success_timestamp_seconds", "Steady") >
              1e9);
    check_with_promtool(text);
    gfx_stop(g);
}
END_TEST

/* Names that a label must escape, or must not: quotes, backslashes (one
 * before an n), spaces, UTF-8, and what delimits labels. */
static const char *const hostile[] = {
    "say \"cheese\"", "back\\slash", "lit\\nerally",
    "caf\xc3\xa9 \xe2\x98\x83", "{braces}", "k=v,k2=v2", "\\\"}",
};

START_TEST(test_metrics_escape_hostile_service_names)
{
    struct gfx *g = gfx_new();
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        int m = gfx_add(g, hostile[i], 0.01, NULL);
        fx_run(&g->m[m], 1);
    }
    char *text = metrics_text(g->g);
    check_metrics(g, text);
    ck_assert_ptr_nonnull(strstr(text, "service=\"say \\\"cheese\\\"\""));
    ck_assert_ptr_nonnull(strstr(text, "service=\"lit\\\\nerally\""));
    ck_assert_ptr_nonnull(strstr(text, "service=\"caf\xc3\xa9 \xe2\x98\x83\""));
    check_with_promtool(text);
}
END_TEST

START_TEST(test_metrics_fill_what_fits_and_say_what_is_needed)
{
    struct gfx *g = gfx_new();
    gfx_add(g, "Alpha", 60, NULL);
    gfx_add(g, "Beta", 60, NULL);
    const char *full = metrics_text(g->g);
    size_t needed = strlen(full) + 1;
    char *buf = test_alloc(needed);
    const size_t sizes[] = {1, 2, 10, needed - 1};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t size = sizes[i], told = 0;
        memset(buf, 'x', needed);
        ck_assert_int_eq(lsvc_group_metrics(g->g, buf, size, &told), ENOSPC);
        ck_assert_uint_eq(told, needed);
        ck_assert_msg(buf[size - 1] == '\0' && strlen(buf) == size - 1,
                      "%zu bytes: not NUL-terminated at the end", size);
        ck_assert_msg(strncmp(buf, full, size - 1) == 0,
                      "%zu bytes: not the start of the text", size);
        ck_assert_msg(buf[size] == 'x', "%zu bytes: written past them", size);
    }
    ck_assert_int_eq(lsvc_group_metrics(g->g, buf, needed, NULL), 0);
    ck_assert_str_eq(buf, full);
}
END_TEST

/* The metrics tell members apart by name, so a group's names are unique. */
START_TEST(test_group_refuses_a_second_service_of_a_name)
{
    struct gfx *g = gfx_new();
    gfx_add(g, "Twin", 60, NULL);
    struct fx *twin = fx_new("Twin", 60, NULL);
    ck_assert_int_eq(lsvc_group_add(g->g, twin->svc), EEXIST);
    /* Refused: in no group, so that its teardown can destroy it. */
}
END_TEST

START_TEST(test_metrics_reject_bad_arguments)
{
    struct gfx *g = gfx_new();
    char buf[16];
    size_t needed = 0;
    ck_assert_int_eq(lsvc_group_metrics(NULL, buf, sizeof(buf), &needed), EINVAL);
    ck_assert_int_eq(lsvc_group_metrics(NULL, NULL, 0, NULL), EINVAL);
    ck_assert_int_eq(lsvc_group_metrics(g->g, NULL, sizeof(buf), &needed),
                     EINVAL);
}
END_TEST

/* --- Reserved space ------------------------------------------------------------- */

/* lsvc_create must refuse cls and opts, and leave *out alone. */
static void check_create_refuses(const lsvc_class *cls, const lsvc_options *o,
                                 const char *what)
{
    static char marker;
    lsvc *const untouched = (lsvc *)(void *)&marker;
    lsvc *svc = untouched;
    struct probe p;
    probe_init(&p);
    ck_assert_msg(lsvc_create(&svc, cls, &p, o) == EINVAL, "%s accepted", what);
    ck_assert_ptr_eq(svc, untouched);
    probe_destroy(&p);
}

START_TEST(test_create_refuses_nonzero_reserved_options)
{
    static const lsvc_class cls = PROBE_CLASS("Reserved", 60);
    for (size_t i = 0; i < 8; i++) {
        lsvc_options o = {0};
        o.reserved[i] = UINT64_C(1) << (i * 8);
        check_create_refuses(&cls, &o, "a nonzero lsvc_options.reserved");
    }
    /* All zero, as zero-initialising gives: accepted. */
    fx_new_class(&cls, &(lsvc_options){0});
}
END_TEST

START_TEST(test_create_refuses_nonzero_reserved_class_or_lease_ops)
{
    static char nonzero;
    const lsvc_class ok = PROBE_CLASS("Reserved", 60);
    lsvc_lease_ops ops = {.acquire = answer};
    const size_t n_cls = sizeof ok.reserved / sizeof ok.reserved[0];
    const size_t n_ops = sizeof ops.reserved / sizeof ops.reserved[0];
    for (size_t i = 0; i < n_cls; i++) {
        lsvc_class cls = ok;
        cls.reserved[i] = &nonzero;
        check_create_refuses(&cls, NULL, "a nonzero lsvc_class.reserved");
    }
    for (size_t i = 0; i < n_ops; i++) {
        lsvc_lease_ops bad = ops;
        bad.reserved[i] = &nonzero;
        const lsvc_options o = {.lease = &bad};
        check_create_refuses(&ok, &o, "a nonzero lsvc_lease_ops.reserved");
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ops");
    add_tests(s, "histograms", (const TTest *[]){
        test_histogram_bounds_step_1_2_5_to_an_hour_then_inf,
        test_histograms_of_a_new_service_are_empty,
        test_duration_histogram_puts_each_run_in_its_bucket,
        test_lateness_histogram_counts_every_run_up_to_the_largest,
        test_no_histograms_keeps_them_empty,
        test_get_histogram_rejects_bad_arguments, NULL});
    add_tests(s, "stats", (const TTest *[]){
        test_last_success_is_when_the_last_good_run_ended,
        test_last_success_stays_0_while_every_run_fails, NULL});
    TCase *health = add_tests(s, "health", (const TTest *[]){
        test_a_service_fails_after_3_failures_by_default,
        test_a_member_fails_after_the_failures_its_group_sets,
        test_a_failing_service_is_healthy_while_paused,
        test_a_failing_service_is_healthy_once_stopped,
        test_a_run_longer_than_stuck_after_intervals_is_stuck,
        test_a_service_in_no_group_is_stuck_after_10_intervals,
        test_a_service_whose_runs_all_fail_goes_stale,
        test_a_lease_held_elsewhere_is_progress_and_a_lost_store_is_not,
        test_services_with_no_run_due_do_not_go_stale,
        test_group_names_a_member_whose_thread_ended_as_stopped,
        test_a_stopping_group_does_not_count_ended_members,
        test_group_health_leaves_out_members_the_environment_disabled,
        test_healthy_of_null_is_false_and_invalid,
        test_set_health_rejects_values_out_of_range,
        test_set_health_while_started_is_ebusy, NULL});
    tcase_add_loop_test(health, test_a_service_held_up_between_runs_goes_stale,
                        0, (int)(sizeof(stale_cases) / sizeof(stale_cases[0])));
    add_tests(s, "observer", (const TTest *[]){
        test_observer_sees_each_run_begin_and_end_on_its_thread,
        test_observer_sees_the_lease_held_and_no_refused_run,
        test_observer_time_is_not_in_the_run_duration,
        test_observer_can_be_replaced_and_removed, NULL});
    add_tests(s, "metrics", (const TTest *[]){
        test_metrics_tell_every_family_of_every_member,
        test_metrics_escape_hostile_service_names,
        test_metrics_fill_what_fits_and_say_what_is_needed,
        test_metrics_reject_bad_arguments,
        test_group_refuses_a_second_service_of_a_name, NULL});
    add_tests(s, "reserved", (const TTest *[]){
        test_create_refuses_nonzero_reserved_options,
        test_create_refuses_nonzero_reserved_class_or_lease_ops, NULL});
    return run_suite(s);
}
