/*
 * Life cycle edge cases: many start/stop cycles in a tight loop (10000,
 * or LSVC_TEST_CYCLES), a run that does nothing, intervals at both ends of
 * the range (1 us and days), loops = 1 and loops = UINT64_MAX, and fork()
 * while services run.
 */
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* --- A service that only counts ----------------------------------------- */

/* Counts hooks and runs with atomics: cheap enough for thousands of
 * cycles and for runs every microsecond, where the probe's event string
 * would overflow. */
struct counter {
    atomic_uint_fast64_t starts, runs, stops;
    uint64_t target; /* `reached` is posted when runs gets here */
    sem_t reached;
};

/* A counted service of `cls` and its counters, which must be created: the
 * teardown ends them after the test. */
struct counted {
    struct counter c;
    lsvc *svc; /* NULL once destroyed */
};

static void counted_teardown(void *arg)
{
    struct counted *t = arg;
    if (t->svc != NULL)
        ck_assert_int_eq(lsvc_destroy(t->svc), 0);
    sem_destroy(&t->c.reached);
}

static struct counted *counted_new(const lsvc_class *cls, uint64_t target,
                                   const lsvc_options *opts)
{
    struct counted *t = test_alloc(sizeof(*t));
    atomic_init(&t->c.starts, 0);
    atomic_init(&t->c.runs, 0);
    atomic_init(&t->c.stops, 0);
    t->c.target = target;
    sem_init(&t->c.reached, 0, 0);
    at_teardown(counted_teardown, t);
    ck_assert_int_eq(lsvc_create(&t->svc, cls, &t->c, opts), 0);
    return t;
}

static int count_start(lsvc *svc, void *arg)
{
    (void)svc;
    struct counter *c = arg;
    atomic_fetch_add(&c->starts, 1);
    return 0;
}

static int count_run(lsvc *svc, void *arg)
{
    (void)svc;
    struct counter *c = arg;
    if (atomic_fetch_add(&c->runs, 1) + 1 == c->target)
        sem_post(&c->reached);
    return 0;
}

static void count_stop(lsvc *svc, void *arg)
{
    (void)svc;
    struct counter *c = arg;
    atomic_fetch_add(&c->stops, 1);
}

#define COUNTER_CLASS(NAME, SECONDS)                                        \
    {                                                                       \
        .name = (NAME), .loop_seconds = (SECONDS), .run_once = count_run,   \
        .on_start = count_start, .on_stop = count_stop,                     \
    }

/* Counters that must agree once the service has ended. */
static void check_counts_agree(lsvc *svc, struct counter *c)
{
    lsvc_stats st = stats_of(svc);
    ck_assert(!st.running);
    ck_assert_uint_eq(st.loops, atomic_load(&c->runs));
    ck_assert_uint_eq(st.errors, 0);
    ck_assert_uint_le(st.overruns, st.loops);
    ck_assert_int_ge(st.last_run_ns, 0);
    ck_assert_int_le(st.last_run_ns, st.max_run_ns);
    ck_assert_int_ge(st.last_lateness_ns, 0);
    ck_assert_int_le(st.last_lateness_ns, st.max_lateness_ns);
    ck_assert_uint_eq(atomic_load(&c->starts), atomic_load(&c->stops));
}

/* --- Start and stop ------------------------------------------------------ */

/* LSVC_TEST_CYCLES, or 10000. */
static uint64_t cycles_wanted(void)
{
    const char *env = getenv("LSVC_TEST_CYCLES");
    if (env == NULL || *env == '\0')
        return 10000;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(env, &end, 10);
    ck_assert_msg(errno == 0 && *end == '\0' && n > 0,
                  "LSVC_TEST_CYCLES=%s is not a positive number", env);
    return n;
}

START_TEST(test_start_and_blocking_stop_in_a_tight_loop)
{
    static const lsvc_class cls = COUNTER_CLASS("Cycler", 60);
    /* Two lines per cycle at INFO would only fill the log. */
    lsvc_set_log_level(LSVC_LOG_WARNING);
    uint64_t cycles = cycles_wanted();
    struct threads before;
    threads_baseline(&before);
    struct counted *t = counted_new(&cls, 0, NULL);
    lsvc *svc = t->svc;
    struct counter *c = &t->c;

    /* Plain checks in the loop: each Check assertion that passes still
     * writes to Check's pipe. */
    for (uint64_t i = 0; i < cycles; i++) {
        int rc = lsvc_start(svc, 0);
        if (rc != 0)
            ck_abort_msg("cycle %llu: lsvc_start returned %d",
                         (unsigned long long)i, rc);
        rc = lsvc_stop(svc, true);
        if (rc != 0)
            ck_abort_msg("cycle %llu: lsvc_stop returned %d",
                         (unsigned long long)i, rc);
        if (lsvc_is_running(svc))
            ck_abort_msg("cycle %llu: still running after the stop",
                         (unsigned long long)i);
    }

    /* Every start ran on_start and on_stop once; a stop may come before
     * the first run, so there are at most as many runs as cycles. */
    ck_assert_uint_eq(atomic_load(&c->starts), cycles);
    ck_assert_uint_eq(atomic_load(&c->stops), cycles);
    ck_assert_uint_le(atomic_load(&c->runs), cycles);
    check_counts_agree(svc, c);
    ck_assert_msg(wait_threads_back_to(&before, 5), "%d threads left",
                  threads_added(&before));
}
END_TEST

/* --- Runs and intervals ---------------------------------------------------- */

static int run_nothing(lsvc *svc, void *arg)
{
    (void)svc;
    (void)arg;
    return 0;
}

/* A run that takes no time must not pull the next one in: the runs stay
 * an interval apart. */
START_TEST(test_zero_length_run_once_keeps_the_interval)
{
    static const lsvc_class cls = {
        .name = "Empty", .loop_seconds = 0.02, .run_once = run_nothing,
    };
    enum { RUNS = 10 };
    struct fx *f = fx_new_class(&cls, NULL);
    int64_t t0 = now_ns();
    fx_run(f, RUNS);
    double took = seconds_since(t0);
    ck_assert_msg(took >= (RUNS - 1) * 0.02,
                  "%d runs 20 ms apart ended after %.3f s", RUNS, took);
    lsvc_stats st = stats_of(f->svc);
    ck_assert_uint_eq(st.loops, RUNS);
    ck_assert_uint_eq(st.errors, 0);
    ck_assert_uint_eq(st.missed, 0);
    ck_assert_int_ge(st.last_run_ns, 0);
    ck_assert_int_le(st.last_run_ns, st.max_run_ns);
    ck_assert(!st.running);
}
END_TEST

/* With an interval of 1 us every run is due before the last one ends: the
 * service runs back to back, in both sleep modes, and still stops. */
START_TEST(test_interval_of_1_us_runs_many_times_and_stops_cleanly)
{
    static const lsvc_class cls = COUNTER_CLASS("Micro", 1e-6);
    enum { RUNS = 1000 };
    log_capture();
    for (int precise = 0; precise <= 1; precise++) {
        lsvc_options o = {.precise = precise};
        struct counted *t = counted_new(&cls, RUNS, &o);
        struct counter *c = &t->c;
        ck_assert_double_eq_tol(lsvc_loop_seconds(t->svc), 1e-6, 1e-12);
        ck_assert_int_eq(lsvc_start(t->svc, 0), 0);
        ck_assert_msg(sem_wait_for(&c->reached, 30), "precise=%d: %llu runs",
                      precise, (unsigned long long)atomic_load(&c->runs));
        /* A wide bound: what matters is that it stops, not how fast a
         * loaded sanitizer build gets there. */
        ck_assert_int_eq(lsvc_stop_timeout(t->svc, 10), 0);
        ck_assert_uint_ge(atomic_load(&c->runs), RUNS);
        ck_assert_uint_eq(atomic_load(&c->starts), 1);
        ck_assert_uint_eq(atomic_load(&c->stops), 1);
        check_counts_agree(t->svc, c);
        ck_assert_uint_eq(stats_of(t->svc).missed, 0);
    }
}
END_TEST

#define THREE_DAYS (3.0 * 24 * 3600)

/* A service that sleeps for days wakes for a stop at once: by its
 * condition variable, or in precise mode within its 100 ms step. */
START_TEST(test_interval_of_days_still_stops_at_once)
{
    static const lsvc_class cls = PROBE_CLASS("Patient", THREE_DAYS);
    const struct {
        bool precise;
        double initial_delay;
        uint64_t runs; /* before the stop */
    } cases[] = {
        {false, 0, 1},
        {true, 0, 1},
        {false, THREE_DAYS, 0},
        {true, THREE_DAYS, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lsvc_options o = {.precise = cases[i].precise,
                          .initial_delay = cases[i].initial_delay};
        struct fx *f = fx_new_class(&cls, &o);
        ck_assert_double_eq(lsvc_loop_seconds(f->svc), THREE_DAYS);
        fx_start(f, 0);
        if (cases[i].runs > 0)
            ck_assert(probe_wait_runs(&f->p, 1, 5));
        else
            ck_assert(sem_wait_for(&f->p.started, 5));
        int64_t t0 = now_ns();
        fx_stop(f);
        double took = seconds_since(t0);
        ck_assert_msg(took < 1.0, "case %zu: the stop took %.3f s", i, took);
        ck_assert_uint_eq(f->p.runs, cases[i].runs);
        ck_assert_str_eq(f->p.events, cases[i].runs ? "SRT" : "ST");
        fx_free(f);
    }
}
END_TEST

/* --- Loops ------------------------------------------------------------------ */

/* One run, then the thread ends without sleeping to the next due time,
 * three days away. */
START_TEST(test_one_loop_runs_once_and_ends_by_itself)
{
    struct fx *f = fx_new("Once", THREE_DAYS, NULL);
    int64_t t0 = now_ns();
    fx_run(f, 1);
    ck_assert_msg(seconds_since(t0) < 5.0, "one loop took %.3f s",
                  seconds_since(t0));
    ck_assert_uint_eq(f->p.runs, 1);
    ck_assert_str_eq(f->p.events, "SRT");
    lsvc_stats st = stats_of(f->svc);
    ck_assert_uint_eq(st.loops, 1);
    ck_assert(!st.running);
}
END_TEST

/* UINT64_MAX runs take forever: the service must behave as one with no
 * limit, not as one whose count wrapped to 0 runs or to -1. */
START_TEST(test_uint64_max_loops_runs_until_stopped)
{
    static const lsvc_class cls = COUNTER_CLASS("Endless", 0.001);
    enum { RUNS = 50 };
    struct counted *t = counted_new(&cls, RUNS, NULL);
    struct counter *c = &t->c;
    ck_assert_int_eq(lsvc_start(t->svc, UINT64_MAX), 0);
    ck_assert_msg(sem_wait_for(&c->reached, 30), "%llu runs",
                  (unsigned long long)atomic_load(&c->runs));
    ck_assert(lsvc_is_running(t->svc));
    ck_assert_int_eq(lsvc_join(t->svc, 0.05), ETIMEDOUT);
    ck_assert_int_eq(lsvc_stop(t->svc, true), 0);
    ck_assert_uint_ge(atomic_load(&c->runs), RUNS);
    ck_assert_uint_eq(atomic_load(&c->stops), 1);
    check_counts_agree(t->svc, c);
}
END_TEST

/* --- fork() ------------------------------------------------------------- */

/*
 * What a child forked while services run has, as observed on Linux/glibc:
 * only the thread that called fork() (/proc/self/task lists one thread),
 * and copies of the parent's service objects whose state still says
 * running and whose pthread_t names a thread that does not exist in the
 * child. On such a copy lsvc_is_running reports true, a blocking stop and
 * a bounded join time out (an unbounded join would never return), and
 * lsvc_start and lsvc_destroy are EBUSY for good; and if the service
 * thread held the service's lock at the moment of fork(), every call on
 * the copy blocks forever. So the child must not touch the parent's
 * services; only what is sound is checked here: the child has no service
 * thread, and it can create, run and destroy services of its own.
 */

/* Exit statuses of the child: 0, or the step that failed. */
enum {
    CHILD_OK = 0,
    CHILD_HAS_THREADS = 10,
    CHILD_CREATE_FAILED,
    CHILD_START_FAILED,
    CHILD_JOIN_FAILED,
    CHILD_RUNS_WRONG,
    CHILD_DESTROY_FAILED,
    CHILD_THREAD_LEFT,
};

/* How many threads the process has: all of them are "added" to an empty
 * snapshot. */
static int thread_count(void)
{
    static const struct threads none = {.n = 0};
    return threads_added(&none);
}

static int child_runs_its_own_service(void);

static int child_main(void)
{
    /* A child that hangs dies of SIGALRM, which the parent reports. */
    alarm_after(30);

    if (thread_count() != 1)
        return CHILD_HAS_THREADS;
    /* ThreadSanitizer keeps the parent's threads on its books in the
     * child, and glibc gives a new thread the stack of one of them, which
     * it then reports as a duplicate thread: it does not support a child
     * that makes threads after a multithreaded fork (by default it kills
     * such a child). Under it, only the first check is made. */
#if defined(__SANITIZE_THREAD__) /* GCC */
    const bool may_make_threads = false;
#elif defined(__has_feature) /* Clang */
#if __has_feature(thread_sanitizer)
    const bool may_make_threads = false;
#else
    const bool may_make_threads = true;
#endif
#else
    const bool may_make_threads = true;
#endif
    return may_make_threads ? child_runs_its_own_service() : CHILD_OK;
}

static int child_runs_its_own_service(void)
{
    static const lsvc_class cls = PROBE_CLASS("ChildSvc", 0.005);
    struct threads before;
    threads_baseline(&before);
    struct probe p;
    probe_init(&p);
    lsvc *svc = NULL;
    if (lsvc_create(&svc, &cls, &p, NULL) != 0)
        return CHILD_CREATE_FAILED;
    if (lsvc_start(svc, 3) != 0)
        return CHILD_START_FAILED;
    if (lsvc_join(svc, 10) != 0)
        return CHILD_JOIN_FAILED;
    if (p.runs != 3 || strcmp(p.events, "SRRRT") != 0)
        return CHILD_RUNS_WRONG;
    if (lsvc_destroy(svc) != 0)
        return CHILD_DESTROY_FAILED;
    probe_destroy(&p);
    if (!wait_threads_back_to(&before, 5))
        return CHILD_THREAD_LEFT;
    return CHILD_OK;
}

/* The child exits without freeing its copies of the parent's services,
 * which it must not touch; kept here, they stay reachable, and leak
 * checkers do not report them as lost. */
static lsvc *volatile inherited[2];

START_TEST(test_fork_while_services_run_leaves_the_child_its_own)
{
    /* Runs far shorter than the interval: the parent's services log
     * nothing while the fork happens, so no log lock is copied held. */
    struct fx *a = fx_new("ParentA", 0.02, NULL);
    struct fx *b = fx_new("ParentB", 0.02, NULL);
    inherited[0] = a->svc;
    inherited[1] = b->svc;
    fx_start(a, 0);
    fx_start(b, 0);
    ck_assert(probe_wait_runs(&a->p, 2, 5));
    ck_assert(probe_wait_runs(&b->p, 2, 5));
    ck_assert_int_ge(thread_count(), 3);

    uint64_t runs_at_fork = probe_runs(&a->p);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ne(pid, -1);
    if (pid == 0)
        _exit(child_main());
    int status;
    pid_t waited;
    while ((waited = waitpid(pid, &status, 0)) == -1 && errno == EINTR) {
    }
    ck_assert_int_eq(waited, pid);
    ck_assert_msg(!WIFSIGNALED(status), "the child died of signal %d",
                  WTERMSIG(status));
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK,
                  "the child exited with %d", WEXITSTATUS(status));

    /* The parent's services went on through the fork. */
    while (probe_runs(&a->p) < runs_at_fork + 3)
        ck_assert(sem_wait_for(&a->p.ran, 5));
    struct fx *both[] = {a, b};
    for (int i = 0; i < 2; i++) {
        ck_assert(lsvc_is_running(both[i]->svc));
        fx_stop(both[i]);
        ck_assert(!lsvc_is_running(both[i]->svc));
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lifecycle");
    add_tests(s, "cycles", (const TTest *[]){
        test_start_and_blocking_stop_in_a_tight_loop, NULL});
    add_tests(s, "edges", (const TTest *[]){
        test_zero_length_run_once_keeps_the_interval,
        test_interval_of_1_us_runs_many_times_and_stops_cleanly,
        test_interval_of_days_still_stops_at_once,
        test_one_loop_runs_once_and_ends_by_itself,
        test_uint64_max_loops_runs_until_stopped, NULL});
    add_tests(s, "fork", (const TTest *[]){
        test_fork_while_services_run_leaves_the_child_its_own, NULL});
    return run_suite(s);
}
