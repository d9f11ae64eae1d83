/*
 * Fault injection. Every call the library makes to a wrapped allocator or
 * pthread function (test/meson.build lists them, faults.h tells how they
 * fail) is made to fail in turn, through each public call that makes any:
 * first the call runs once to see how many wrapped calls a success makes
 * (n), then for k = 1..n the k-th of them fails. Each time the call must
 * give back the error that failed, which must be one its doc comment
 * lists; nothing may be left running (threads, lsvc_is_running, a started
 * group) or allocated (the blocks of the window, and LeakSanitizer in the
 * ASan build); the caller's signal mask must be as it was; and the same
 * call without the fault must then succeed.
 */
#define _GNU_SOURCE /* sched_getaffinity, to pin to a CPU this test may use */
#include "faults.h"
#include "helpers.h"
#include "fakestore.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- The log ------------------------------------------------------------- */

/* The capture sink with its own allocations kept out of the window: the
 * library logs from inside the calls under test, and what the test does
 * to store a message is not the library's to count or to fail. */
static void exempt_capture_sink(int level, const char *logger,
                                const char *message, void *ctx)
{
    faults_exempt_begin();
    log_capture_sink(level, logger, message, ctx);
    faults_exempt_end();
}

static void capture_log_outside_faults(void)
{
    log_capture();
    lsvc_set_logger(exempt_capture_sink, NULL);
}

/* --- Signal masks -------------------------------------------------------- */

static sigset_t current_mask(void)
{
    sigset_t set;
    sigemptyset(&set);
    pthread_sigmask(SIG_BLOCK, NULL, &set);
    return set;
}

/* The first signal whose state differs, or 0. */
static int mask_difference(const sigset_t *a, const sigset_t *b)
{
    for (int sig = 1; sig <= SIGRTMAX; sig++)
        if (sigismember(a, sig) != sigismember(b, sig))
            return sig;
    return 0;
}

/* --- One call under every fault ------------------------------------------ */

/* The wrapped calls of one window, by name. */
struct trace {
    unsigned long n;
    const char *name[FAULTS_TRACE_MAX];
};

static void save_trace(struct trace *t)
{
    t->n = faults_count();
    ck_assert_msg(t->n <= FAULTS_TRACE_MAX, "%lu wrapped calls: raise "
                  "FAULTS_TRACE_MAX", t->n);
    for (unsigned long i = 0; i < t->n; i++)
        t->name[i] = faults_call(i + 1);
}

static unsigned long trace_count(const struct trace *t, const char *name)
{
    unsigned long n = 0;

    for (unsigned long i = 0; i < t->n; i++)
        n += strcmp(t->name[i], name) == 0;
    return n;
}

static bool trace_has(const struct trace *t, const char *name)
{
    return trace_count(t, name) > 0;
}

/*
 * A failure the library cannot report, and need not: pthread_sigmask
 * putting the caller's mask back after pthread_create made the thread (the
 * thread runs; POSIX lets this call fail only for a bad `how`), and the
 * unblock with which lsvc_group_wait gives the starter its mask back after
 * everything has ended. The call succeeds and the caller keeps the mask
 * the failed call did not restore. And one it works around: the signal
 * thread's wake-up (pthread_kill), after which the call still succeeds.
 */
static bool unreportable(const struct trace *t, unsigned long k)
{
    const char *name = t->name[k - 1];
    if (strcmp(name, "pthread_sigmask(SIG_UNBLOCK)") == 0)
        return true;
    /* The wake-up lsvc_group_wait sends its signal thread: when it cannot
     * be sent, the thread is cancelled instead, and the wait goes on. */
    if (strcmp(name, "pthread_kill") == 0)
        return true;
    return strcmp(name, "pthread_sigmask(SIG_SETMASK)") == 0 && k > 1 &&
           strcmp(t->name[k - 2], "pthread_create") == 0;
}

/* A public call, what it works on, and what must hold around it. */
struct fault_case {
    const char *what;   /* the call, for messages */
    int (*call)(void *ctx);
    void *ctx;
    const int *errors;  /* the errors its doc comment lists, 0-ended */
    /* Optional: brings ctx to the state each call starts from. */
    void (*prepare)(void *ctx);
    /* Undoes a successful call (stop, join, destroy what it made). */
    void (*undo)(void *ctx);
    /* Checks what a failed call left behind; `at` names the fault. */
    void (*check_failed)(void *ctx, const char *at);
};

static bool listed(int rc, const int *errors)
{
    for (; *errors != 0; errors++)
        if (rc == *errors)
            return true;
    return false;
}

static int call_armed(const struct fault_case *fc, unsigned long k)
{
    if (fc->prepare != NULL)
        fc->prepare(fc->ctx);
    faults_arm(k);
    int rc = fc->call(fc->ctx);
    faults_disarm();
    return rc;
}

/* The calls of this window must be those of the success up to the k-th:
 * otherwise a fault would not be testing the path it names. */
static void check_same_calls(const struct fault_case *fc,
                             const struct trace *ok, unsigned long k)
{
    ck_assert_msg(faults_fired(), "%s, fault %lu of %lu (%s): that call was "
                  "not made this time", fc->what, k, ok->n, ok->name[k - 1]);
    for (unsigned long i = 1; i <= k; i++)
        ck_assert_msg(strcmp(faults_call(i), ok->name[i - 1]) == 0,
                      "%s, fault %lu: call %lu was %s, in the success %s",
                      fc->what, k, i, faults_call(i), ok->name[i - 1]);
}

/* The caller's signal mask is `mask` again, and no thread is left that
 * was not there `before`. */
static void check_as_before(const sigset_t *mask, const struct threads *before,
                            const char *at)
{
    sigset_t now = current_mask();
    ck_assert_msg(mask_difference(mask, &now) == 0, "%s: the caller's mask "
                  "of signal %d changed", at, mask_difference(mask, &now));
    ck_assert_msg(wait_threads_back_to(before, 5), "%s: %d threads left", at,
                  threads_added(before));
}

/*
 * Runs fc without a fault, then with each of its wrapped calls failing in
 * turn, then without a fault again after each. `ok_rc` is what the call
 * returns without a fault. Returns the trace of the success.
 */
static struct trace every_fault(const struct fault_case *fc, int ok_rc)
{
    struct threads before;
    threads_baseline(&before);
    sigset_t mask = current_mask();

    struct trace ok;
    int rc = call_armed(fc, 0);
    save_trace(&ok);
    ck_assert_msg(rc == ok_rc, "%s without a fault returned %d", fc->what, rc);
    ck_assert_msg(ok.n > 0, "%s made no wrapped call", fc->what);
    fc->undo(fc->ctx);

    for (unsigned long k = 1; k <= ok.n; k++) {
        char at[160];
        snprintf(at, sizeof(at), "%s, fault %lu of %lu (%s)", fc->what, k,
                 ok.n, ok.name[k - 1]);
        rc = call_armed(fc, k);
        check_same_calls(fc, &ok, k);
        if (unreportable(&ok, k)) {
            ck_assert_msg(rc == ok_rc, "%s: returned %d", at, rc);
            fc->undo(fc->ctx);
            pthread_sigmask(SIG_SETMASK, &mask, NULL);
        } else {
            ck_assert_msg(rc == faults_error(), "%s: returned %d, the "
                          "failed call gave %d", at, rc, faults_error());
            ck_assert_msg(listed(rc, fc->errors), "%s: returned %d, which "
                          "its doc comment does not list", at, rc);
            ck_assert_msg(faults_live() == 0, "%s: %zu blocks left "
                          "allocated", at, faults_live());
            check_as_before(&mask, &before, at);
            fc->check_failed(fc->ctx, at);
        }

        rc = call_armed(fc, 0);
        ck_assert_msg(rc == ok_rc, "%s, retried without it: returned %d",
                      at, rc);
        fc->undo(fc->ctx);
        size_t len = strlen(at);
        snprintf(at + len, sizeof(at) - len, ", retried");
        check_as_before(&mask, &before, at);
    }
    return ok;
}

/* --- The seam itself ----------------------------------------------------- */

/* Called through pointers, so that the compiler cannot fold a malloc with
 * its free and skip the wrapper this test is about. */
static void *(*volatile test_malloc)(size_t) = malloc;
static char *(*volatile test_strdup)(const char *) = strdup;

START_TEST(test_armed_fault_fails_only_the_kth_wrapped_call)
{
    faults_arm(2);
    void *first = test_malloc(16);
    errno = 0;
    void *second = test_malloc(16);
    int second_errno = errno;
    char *third = test_strdup("x");
    faults_disarm();
    void *after = test_malloc(16);

    ck_assert_ptr_nonnull(first);
    ck_assert_ptr_null(second);
    ck_assert_int_eq(second_errno, ENOMEM);
    ck_assert_ptr_nonnull(third);
    ck_assert_ptr_nonnull(after);
    ck_assert_uint_eq(faults_count(), 3);
    ck_assert(faults_fired());
    ck_assert_int_eq(faults_error(), ENOMEM);
    ck_assert_str_eq(faults_call(1), "malloc");
    ck_assert_str_eq(faults_call(2), "malloc");
    ck_assert_str_eq(faults_call(3), "strdup");
    ck_assert_ptr_null(faults_call(4));
    ck_assert_uint_eq(faults_live(), 2);
    free(first);
    free(third);
    ck_assert_uint_eq(faults_live(), 0);
    free(after);
}
END_TEST

static void *nothing(void *arg)
{
    return arg;
}

START_TEST(test_failed_pthread_create_is_eagain_and_makes_no_thread)
{
    struct threads before;
    threads_baseline(&before);
    pthread_t t;
    faults_arm(1);
    int rc = pthread_create(&t, NULL, nothing, NULL);
    faults_disarm();
    ck_assert_int_eq(rc, EAGAIN);
    ck_assert_int_eq(threads_added(&before), 0);
    faults_arm_with(1, EPERM);
    rc = pthread_create(&t, NULL, nothing, NULL);
    faults_disarm();
    ck_assert_int_eq(rc, EPERM);
    ck_assert_int_eq(pthread_create(&t, NULL, nothing, NULL), 0);
    pthread_join(t, NULL);
}
END_TEST

START_TEST(test_exempt_calls_are_neither_counted_nor_failed)
{
    faults_arm(1);
    faults_exempt_begin();
    void *mine = test_malloc(16);
    faults_exempt_end();
    void *counted = test_malloc(16);
    faults_disarm();
    ck_assert_ptr_nonnull(mine);
    ck_assert_ptr_null(counted);
    ck_assert_uint_eq(faults_count(), 1);
    ck_assert_uint_eq(faults_live(), 0);
    free(mine);
}
END_TEST

/* --- Services -------------------------------------------------------------- */

static const int create_errors[] = {EINVAL, ENOTSUP, ENOMEM, 0};
static const int start_errors[] = {EINVAL, EBUSY, EPERM, EAGAIN, ENOMEM, 0};

/* Marks *out as untouched by a failed create. */
static void *const SENTINEL = (void *)&create_errors;

struct one {
    const lsvc_class *cls;
    lsvc_options opts;
    struct probe p;
    lsvc *svc;
};

static int call_create(void *ctx)
{
    struct one *o = ctx;
    o->svc = SENTINEL;
    return lsvc_create(&o->svc, o->cls, &o->p, &o->opts);
}

static void undo_create(void *ctx)
{
    struct one *o = ctx;
    ck_assert_int_eq(lsvc_destroy(o->svc), 0);
    o->svc = NULL;
}

static void check_create_failed(void *ctx, const char *at)
{
    struct one *o = ctx;
    ck_assert_msg(o->svc == SENTINEL, "%s: *out was changed", at);
}

START_TEST(test_create_fails_cleanly_at_every_wrapped_call)
{
    static const lsvc_class cls = PROBE_CLASS("Faulty", 60);
    struct one o = {.cls = &cls};
    probe_init(&o.p);
    struct fault_case fc = {
        .what = "lsvc_create", .call = call_create, .ctx = &o,
        .errors = create_errors, .undo = undo_create,
        .check_failed = check_create_failed,
    };
    struct trace ok = every_fault(&fc, 0);
    ck_assert(trace_has(&ok, "calloc") || trace_has(&ok, "malloc"));
    ck_assert(trace_has(&ok, "pthread_mutex_init"));
    ck_assert_str_eq(o.p.events, "");
    probe_destroy(&o.p);
}
END_TEST

static void reset_events(struct probe *p)
{
    pthread_mutex_lock(&p->lock);
    p->events[0] = '\0';
    pthread_mutex_unlock(&p->lock);
}

static void prepare_start(void *ctx)
{
    struct fx *f = ctx;
    reset_events(&f->p);
}

static int call_start(void *ctx)
{
    struct fx *f = ctx;
    return lsvc_start(f->svc, 1);
}

/* One run, then the thread ends by itself and is reaped here. Also what
 * is left after an unarmed start that was not permitted (EPERM): then
 * there is no thread to join. */
static void undo_start(void *ctx)
{
    struct fx *f = ctx;
    ck_assert_int_eq(lsvc_join(f->svc, 10), 0);
    ck_assert(!lsvc_is_running(f->svc));
}

static void check_not_started(void *ctx, const char *at)
{
    struct fx *f = ctx;
    ck_assert_msg(!lsvc_is_running(f->svc), "%s: reported running", at);
    ck_assert_msg(!stats_of(f->svc).running, "%s: stats say running", at);
    ck_assert_msg(f->p.events[0] == '\0', "%s: hooks ran: %s", at,
                  f->p.events);
}

/* Runs lsvc_start(svc, 1) of the service `name` under every fault, each
 * start prepared by `prepare`; it returns ok_rc without a fault. */
static struct trace check_start_faults(const char *what, struct fx *f,
                                       void (*prepare)(void *ctx), int ok_rc)
{
    struct fault_case fc = {
        .what = what, .call = call_start, .ctx = f, .errors = start_errors,
        .prepare = prepare, .undo = undo_start,
        .check_failed = check_not_started,
    };
    return every_fault(&fc, ok_rc);
}

START_TEST(test_start_fails_cleanly_at_every_wrapped_call)
{
    capture_log_outside_faults();
    struct fx *f = fx_new("Faulty", 60, NULL);
    struct trace ok = check_start_faults("lsvc_start", f, prepare_start, 0);
    ck_assert(trace_has(&ok, "pthread_create"));
}
END_TEST

/* A start that is refused must still reap the thread that had ended and
 * was not joined; ThreadSanitizer reports a thread never joined. */
static void prepare_ended(void *ctx)
{
    struct fx *f = ctx;
    fx_start(f, 1);
    ck_assert(wait_not_running(f->svc, 10));
    reset_events(&f->p);
}

START_TEST(test_failed_restart_leaves_the_ended_thread_reapable)
{
    capture_log_outside_faults();
    struct fx *f = fx_new("Restarted", 60, NULL);
    check_start_faults("lsvc_start of an ended service", f, prepare_ended, 0);
}
END_TEST

/* The first CPU this process may run on. */
static int first_allowed_cpu(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    ck_assert_int_eq(sched_getaffinity(0, sizeof(set), &set), 0);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &set))
            return cpu;
    ck_abort_msg("no CPU allowed");
    return -1;
}

/* Priority and pinning add their own attribute calls. Where real-time
 * threads are not permitted, a start is EPERM with or without a fault
 * after the attributes, and that is what the retries must give. */
START_TEST(test_start_with_thread_options_fails_cleanly_at_every_wrapped_call)
{
    capture_log_outside_faults();
    int cpu = first_allowed_cpu();
    ck_assert_int_lt(cpu, 64);
    const lsvc_options opts = {
        .sched_priority = 1, .sched_policy = SCHED_FIFO,
        .cpu_mask = UINT64_C(1) << cpu,
        .stack_size = 512u * 1024u};
    struct fx *f = fx_new("Pinned", 60, &opts);
    int ok_rc = lsvc_start(f->svc, 1);
    ck_assert_msg(ok_rc == 0 || ok_rc == EPERM, "lsvc_start returned %d",
                  ok_rc);
    undo_start(f);
    struct trace ok = check_start_faults(
        "lsvc_start with priority and CPU mask", f, prepare_start, ok_rc);
    ck_assert(trace_has(&ok, "pthread_attr_setschedparam"));
    ck_assert(trace_has(&ok, "pthread_attr_setaffinity_np"));
}
END_TEST

/* --- Groups ---------------------------------------------------------------- */

static const int group_create_errors[] = {EINVAL, ENOMEM, 0};
static const int group_add_errors[] = {EINVAL, EBUSY, ENOMEM, 0};
/* lsvc_group_start's own, and what lsvc_start or pthread_create return. */
static const int group_start_errors[] = {EINVAL, EBUSY, EPERM, EAGAIN,
                                         ENOMEM, 0};

/* A group and a service to add to it. */
struct group_case {
    lsvc_group *g;
    struct fx *a;
};

static int call_group_create(void *ctx)
{
    struct group_case *c = ctx;
    c->g = SENTINEL;
    return lsvc_group_create(&c->g);
}

static void undo_group_create(void *ctx)
{
    struct group_case *c = ctx;
    ck_assert_int_eq(lsvc_group_destroy(c->g), 0);
}

static void check_group_create_failed(void *ctx, const char *at)
{
    struct group_case *c = ctx;
    ck_assert_msg(c->g == SENTINEL, "%s: *out was changed", at);
}

START_TEST(test_group_create_fails_cleanly_at_every_wrapped_call)
{
    struct group_case c = {0};
    struct fault_case fc = {
        .what = "lsvc_group_create", .call = call_group_create, .ctx = &c,
        .errors = group_create_errors, .undo = undo_group_create,
        .check_failed = check_group_create_failed,
    };
    every_fault(&fc, 0);
}
END_TEST

static int call_group_add(void *ctx)
{
    struct group_case *c = ctx;
    return lsvc_group_add(c->g, c->a->svc);
}

/* Out of the group again, by the only way there is: a new group. */
static void undo_group_add(void *ctx)
{
    struct group_case *c = ctx;
    ck_assert_int_eq(lsvc_destroy(c->a->svc), EBUSY);
    ck_assert_int_eq(lsvc_group_destroy(c->g), 0);
    ck_assert_int_eq(lsvc_group_create(&c->g), 0);
}

static void check_not_added(void *ctx, const char *at)
{
    struct group_case *c = ctx;
    /* Not in the group: another group may take it. */
    lsvc_group *other;
    ck_assert_int_eq(lsvc_group_create(&other), 0);
    ck_assert_msg(lsvc_group_add(other, c->a->svc) == 0, "%s: the service "
                  "was left in a group", at);
    ck_assert_int_eq(lsvc_group_destroy(other), 0);
    ck_assert_msg(lsvc_group_start(c->g) == EINVAL, "%s: the group is not "
                  "empty", at);
}

START_TEST(test_group_add_fails_cleanly_at_every_wrapped_call)
{
    struct group_case c = {.a = fx_new("Alpha", 60, NULL)};
    ck_assert_int_eq(lsvc_group_create(&c.g), 0);
    struct fault_case fc = {
        .what = "lsvc_group_add", .call = call_group_add, .ctx = &c,
        .errors = group_add_errors, .undo = undo_group_add,
        .check_failed = check_not_added,
    };
    struct trace ok = every_fault(&fc, 0);
    ck_assert(trace_has(&ok, "realloc"));
    ck_assert_int_eq(lsvc_group_destroy(c.g), 0);
}
END_TEST

/* A group outgrows its first list at the ninth service: a failed growth
 * must keep the eight it has. */
START_TEST(test_group_add_that_cannot_grow_keeps_the_members)
{
    enum { N = 9 };
    static const char *const names[N] = {"M0", "M1", "M2", "M3", "M4",
                                         "M5", "M6", "M7", "M8"};
    struct gfx *g = gfx_new();
    lsvc *svcs[N];
    for (int i = 0; i < N; i++)
        svcs[i] = fx_new(names[i], 60, NULL)->svc;
    for (int i = 0; i < N - 2; i++)
        ck_assert_int_eq(lsvc_group_add(g->g, svcs[i]), 0);

    /* Within its capacity an add needs no memory. */
    faults_arm(0);
    int rc = lsvc_group_add(g->g, svcs[N - 2]);
    faults_disarm();
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(faults_count() == 0, "an add that does not grow made %lu "
                  "wrapped calls", faults_count());

    /* Growing takes two calls, the name index's and the members': the
     * failure of either keeps what the group had. */
    for (unsigned long k = 1; k <= 2; k++) {
        faults_arm(k);
        rc = lsvc_group_add(g->g, svcs[N - 1]);
        faults_disarm();
        ck_assert_str_eq(faults_call(k), k == 1 ? "calloc" : "realloc");
        ck_assert_int_eq(rc, ENOMEM);
        ck_assert_uint_eq(faults_live(), 0);
        for (int i = 0; i < N - 1; i++)
            ck_assert_msg(lsvc_destroy(svcs[i]) == EBUSY, "member %d was "
                          "dropped", i);
    }
    ck_assert_int_eq(lsvc_group_add(g->g, svcs[N - 1]), 0);
    ck_assert_int_eq(lsvc_group_add(g->g, svcs[N - 1]), EBUSY);
    /* The group goes first: then the services are free to go. */
    ck_assert_int_eq(lsvc_group_destroy(g->g), 0);
    g->g = NULL;
}
END_TEST

/* Alpha and Beta in a group with these signals (NULL: the default). */
static struct gfx *alpha_and_beta(const sigset_t *signals, bool notify)
{
    struct gfx *g = gfx_new();
    ck_assert_int_eq(lsvc_group_set_notify(g->g, notify), 0);
    gfx_add(g, "Alpha", 60, NULL);
    gfx_add(g, "Beta", 60, NULL);
    g->m[0].p.user = g;
    if (signals != NULL)
        ck_assert_int_eq(lsvc_group_set_signals(g->g, signals), 0);
    return g;
}

static void prepare_group(void *ctx)
{
    struct gfx *g = ctx;
    reset_events(&g->m[0].p);
    reset_events(&g->m[1].p);
}

static int call_group_start(void *ctx)
{
    struct gfx *g = ctx;
    return lsvc_group_start(g->g);
}

static void undo_group_start(void *ctx)
{
    struct gfx *g = ctx;
    ck_assert_int_eq(lsvc_group_stop(g->g), 0);
    ck_assert_int_eq(lsvc_group_wait(g->g), 0);
    for (int i = 0; i < 2; i++)
        ck_assert(!lsvc_is_running(g->m[i].svc));
}

/* Never started, or started and stopped again: on_start and on_stop in
 * pairs, and the group not started. */
static void check_group_not_started(void *ctx, const char *at)
{
    struct gfx *g = ctx;
    for (int i = 0; i < 2; i++) {
        const struct fx *f = &g->m[i];
        const char *ev = f->p.events;
        size_t n = strlen(ev);
        ck_assert_msg(!lsvc_is_running(f->svc), "%s: %s runs", at,
                      f->cls.name);
        ck_assert_msg(n == 0 || (ev[0] == 'S' && ev[n - 1] == 'T'),
                      "%s: %s's hooks ran %s", at, f->cls.name, ev);
    }
    ck_assert_msg(lsvc_group_wait(g->g) == EINVAL, "%s: the group is still "
                  "started", at);
}

/* Returns the threads a successful start made. */
static unsigned long check_group_start_faults(const sigset_t *signals,
                                              bool notify)
{
    capture_log_outside_faults();
    unblock_stop_signals();
    struct gfx *g = alpha_and_beta(signals, notify);
    struct fault_case fc = {
        .what = "lsvc_group_start", .call = call_group_start, .ctx = g,
        .errors = group_start_errors, .prepare = prepare_group,
        .undo = undo_group_start, .check_failed = check_group_not_started,
    };
    struct trace ok = every_fault(&fc, 0);
    return trace_count(&ok, "pthread_create");
}

START_TEST(test_group_start_fails_cleanly_at_every_wrapped_call)
{
    /* The signal thread and two services. */
    ck_assert_uint_eq(check_group_start_faults(NULL, false), 3);
}
END_TEST

/* With notify on and systemd's watchdog asked for, a start makes one
 * thread more, with a lock and a condition variable of its own. Nobody listens on the
 * socket: the sends fail, which the group only logs. */
START_TEST(test_group_start_with_watchdog_fails_cleanly_at_every_wrapped_call)
{
    char dir[] = "/tmp/lsvc-faults-XXXXXX";
    char path[64];

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/notify", dir);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
    ck_assert_int_eq(setenv("WATCHDOG_USEC", "1000000", 1), 0);
    ck_assert_uint_eq(check_group_start_faults(NULL, true), 4);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* Without a signal thread the undoing takes another path. */
START_TEST(test_group_start_without_signals_fails_cleanly_at_every_wrapped_call)
{
    sigset_t none;
    sigemptyset(&none);
    ck_assert_uint_eq(check_group_start_faults(&none, false), 2);
}
END_TEST

/* Every run of Alpha stops the group, so that lsvc_group_run returns. */
static void stop_the_group(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    (void)run;
    struct gfx *g = p->user;
    lsvc_group_stop(g->g);
}

static int call_group_run(void *ctx)
{
    struct gfx *g = ctx;
    return lsvc_group_run(g->g);
}

static void undo_group_run(void *ctx)
{
    check_group_not_started(ctx, "lsvc_group_run");
}

START_TEST(test_group_run_fails_cleanly_at_every_wrapped_call)
{
    capture_log_outside_faults();
    unblock_stop_signals();
    struct gfx *g = alpha_and_beta(NULL, false);
    g->m[0].p.during = stop_the_group;
    struct fault_case fc = {
        .what = "lsvc_group_run", .call = call_group_run, .ctx = g,
        .errors = group_start_errors, .prepare = prepare_group,
        .undo = undo_group_run, .check_failed = check_group_not_started,
    };
    struct trace ok = every_fault(&fc, 0);
    ck_assert(trace_has(&ok, "pthread_create"));
    /* The wait gives the starter its mask back. */
    ck_assert_str_eq(ok.name[ok.n - 1], "pthread_sigmask(SIG_UNBLOCK)");
}
END_TEST

/* --- The signal thread's wake-up ---------------------------------------------- */

struct group_waiter {
    lsvc_group *g;
    sem_t done; /* posted once lsvc_group_wait has returned */
    int rc;
};

static void *wait_for_group(void *arg)
{
    struct group_waiter *w = arg;
    w->rc = lsvc_group_wait(w->g);
    sem_post(&w->done);
    return NULL;
}

/* Calls lsvc_group_wait on a thread of its own and waits at most `seconds`
 * for it to return: true, with its result in *rc, when it did. A wait that
 * hangs is left behind. The thread is made outside the armed window. */
static bool group_wait_within(lsvc_group *g, double seconds, int *rc)
{
    faults_exempt_begin();
    struct group_waiter *w = malloc(sizeof(*w));
    ck_assert_ptr_nonnull(w);
    w->g = g;
    w->rc = -1;
    ck_assert_int_eq(sem_init(&w->done, 0, 0), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, wait_for_group, w), 0);
    bool returned = sem_wait_for(&w->done, seconds);
    if (returned) {
        pthread_join(t, NULL);
        *rc = w->rc;
        sem_destroy(&w->done);
        free(w);
    } /* else w stays with the hung thread */
    faults_exempt_end();
    return returned;
}

/* Starts and stops the group, and lets both services end: a wait then has
 * nothing left to do but end the group's own threads. */
static void start_then_stop(struct gfx *g)
{
    gfx_start(g);
    ck_assert_int_eq(lsvc_group_stop(g->g), 0);
    for (int i = 0; i < 2; i++)
        ck_assert(wait_not_running(g->m[i].svc, 10));
}

/* lsvc_group_wait wakes its signal thread out of sigwait with a signal.
 * When that signal cannot be sent, the wait must still end the thread
 * (by cancelling it there) and return, not join it forever. */
START_TEST(test_group_wait_ends_the_signal_thread_when_its_wake_up_fails)
{
    capture_log_outside_faults();
    unblock_stop_signals();
    struct threads before;
    threads_baseline(&before);
    struct gfx *g = alpha_and_beta(NULL, false);

    /* Which wrapped call of such a wait is the wake-up. */
    start_then_stop(g);
    int rc = -1;
    faults_arm(0);
    bool returned = group_wait_within(g->g, 10, &rc);
    faults_disarm();
    ck_assert(returned);
    ck_assert_int_eq(rc, 0);
    struct trace ok;
    save_trace(&ok);
    unsigned long k = 0;
    for (unsigned long i = 0; i < ok.n && k == 0; i++)
        if (strcmp(ok.name[i], "pthread_kill") == 0)
            k = i + 1;
    ck_assert_msg(k > 0, "lsvc_group_wait made no pthread_kill");
    ck_assert(wait_threads_back_to(&before, 5));

    /* Now that wake-up fails. */
    start_then_stop(g);
    faults_arm(k);
    returned = group_wait_within(g->g, 5, &rc);
    faults_disarm();
    ck_assert_msg(returned, "lsvc_group_wait has not returned 5 s after its "
                  "pthread_kill failed: the signal thread was never woken");
    ck_assert(faults_fired());
    ck_assert_str_eq(faults_call(k), "pthread_kill");
    ck_assert_msg(rc == 0, "lsvc_group_wait returned %d", rc);
    ck_assert_msg(wait_threads_back_to(&before, 5), "%d thread(s) left: the "
                  "signal thread was not ended", threads_added(&before));
    check_group_not_started(g, "after the failed wake-up");

    /* And the group starts and stops as usual afterwards. */
    start_then_stop(g);
    ck_assert(group_wait_within(g->g, 10, &rc));
    ck_assert_int_eq(rc, 0);
    ck_assert(wait_threads_back_to(&before, 5));
}
END_TEST

/* --- The lease store ------------------------------------------------------ */

static int leased_run_once(lsvc *svc, void *arg)
{
    (void)svc, (void)arg;
    return 0;
}

/* With no memory for a round trip, the store's thread answers the ask at
 * once ("not held"), says why, and waits for the next ask instead of
 * trying again and again while memory stays short. Once memory is back,
 * an ask after the backoff takes the lease. */
START_TEST(test_store_without_memory_for_a_round_answers_and_waits)
{
    capture_log_outside_faults();
    struct fake_store fake;
    fake_store_init(&fake);
    const int64_t second = INT64_C(1000000000);
    struct lsvc__store *st;
    ck_assert_int_eq(lsvc__store_create(&st, &fake_store_driver, &fake,
                                        "the store",
                                        2 * second, 6 * second),
                     0);
    const lsvc_class cls = {
        .name = "leased", .loop_seconds = 60, .run_once = leased_run_once,
    };
    lsvc *svc;
    ck_assert_int_eq(lsvc_create(&svc, &cls, NULL, NULL), 0);

    bool held = true;
    faults_fail_every("realloc");
    int64_t asked = now_ns();
    int rc = lsvc__store_ops.acquire(st, svc, &held);
    double took = seconds_since(asked);
    unsigned long at_answer = faults_count();
    /* What a thread that tries again at once would make of 200 ms. */
    const struct timespec pause = { 0, 200 * 1000 * 1000 };
    nanosleep(&pause, NULL);
    unsigned long calls = faults_count() - at_answer;
    bool failed = faults_fired();
    faults_disarm();

    ck_assert(failed);
    ck_assert_msg(rc == 0 && !held, "rc %d, held %d", rc, held);
    ck_assert_msg(took < 1.0, "the ask took %.3f s: it waited for its "
                  "timeout, not for the round", took);
    ck_assert_msg(calls < 10, "%lu wrapped calls in the 200 ms after the "
                  "answer: the store's thread tries again and again", calls);
    ck_assert_uint_eq(atomic_load(&fake.exchanges), 0);
    ck_assert(log_find(0, LSVC_LOG_WARNING, "the store for the leases: out "
                       "of memory", NULL));

    /* Memory is back: within the backoff (0.1 s) an ask is told "not
     * held" at once, and after it one takes the lease. */
    for (int i = 0; i < 200 && !held; i++) {
        ck_assert_int_eq(lsvc__store_ops.acquire(st, svc, &held), 0);
        if (!held)
            nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    }
    ck_assert_msg(held, "no lease 2 s after memory came back");
    ck_assert_uint_ge(atomic_load(&fake.exchanges), 1);
    lsvc__store_ops.ran(st, svc, 0);
    ck_assert_int_eq(lsvc__store_destroy(st), 0);
    lsvc_destroy(svc);
    fake_store_destroy(&fake);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("faults");
    add_tests(s, "seam", (const TTest *[]){
        test_armed_fault_fails_only_the_kth_wrapped_call,
        test_failed_pthread_create_is_eagain_and_makes_no_thread,
        test_exempt_calls_are_neither_counted_nor_failed, NULL});
    add_tests(s, "services", (const TTest *[]){
        test_create_fails_cleanly_at_every_wrapped_call,
        test_start_fails_cleanly_at_every_wrapped_call,
        test_failed_restart_leaves_the_ended_thread_reapable,
        test_start_with_thread_options_fails_cleanly_at_every_wrapped_call,
        NULL});
    add_tests(s, "groups", (const TTest *[]){
        test_group_create_fails_cleanly_at_every_wrapped_call,
        test_group_add_fails_cleanly_at_every_wrapped_call,
        test_group_add_that_cannot_grow_keeps_the_members,
        test_group_start_fails_cleanly_at_every_wrapped_call,
        test_group_start_without_signals_fails_cleanly_at_every_wrapped_call,
        test_group_start_with_watchdog_fails_cleanly_at_every_wrapped_call,
        test_group_run_fails_cleanly_at_every_wrapped_call,
        test_group_wait_ends_the_signal_thread_when_its_wake_up_fails, NULL});
    add_tests(s, "lease store", (const TTest *[]){
        test_store_without_memory_for_a_round_answers_and_waits, NULL});
    return run_suite(s);
}
