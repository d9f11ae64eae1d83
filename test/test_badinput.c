/*
 * Bad input: every NULL argument and out-of-range value gets its
 * documented error, never a crash, and leaves nothing behind: no thread
 * (checked here) and no allocation (checked by LeakSanitizer when the
 * suite is built with -Db_sanitize=address).
 *
 * One table per kind of call (lsvc_create, the calls on a service, the
 * calls on a group), each row naming the call, its input and what it must
 * return; one loop per table makes the calls.
 */
#include "helpers.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Out-of-range seconds for an interval, a delay or a group's bound. */
static const double bad_seconds[] = {
    NAN, INFINITY, -INFINITY, -1.0, -1e-9, LSVC_MAX_SECONDS * 1.000001, 1e300,
};
#define N_BAD_SECONDS (sizeof(bad_seconds) / sizeof(bad_seconds[0]))
#define ROWS(t) (sizeof(t) / sizeof((t)[0]))

/* --- lsvc_create ---------------------------------------------------------- */

/* Which setting of a row takes each of bad_seconds in turn, or each
 * real-time policy. */
enum sweep {
    ONCE,
    EACH_CLASS_SECONDS,
    EACH_LOOP_SECONDS,
    EACH_INITIAL_DELAY,
    EACH_POLICY,
};

/* A priority that stands for one above the policy's maximum. */
#define ABOVE_MAX INT_MIN

struct create_row {
    const char *what;          /* the input, for messages */
    lsvc_class cls;            /* a probe's class, but for what is changed */
    const lsvc_options *opts;  /* NULL: none */
    enum sweep sweep;
    int want;
    double seconds;            /* when want is 0: the interval it gets */
};

/* Marks *out as untouched by a failed create. */
static lsvc *const SENTINEL = (lsvc *)bad_seconds;

/* Makes the row's call (with `bad` in place of the swept setting) and
 * checks what it returned, and that a failed call left *out alone. */
static void check_create(const struct create_row *row, double bad)
{
    lsvc_class cls = row->cls;
    lsvc_options opts = row->opts != NULL ? *row->opts : (lsvc_options){0};
    const lsvc_options *o = row->opts != NULL ? &opts : NULL;
    if (row->sweep == EACH_CLASS_SECONDS)
        cls.loop_seconds = bad;
    else if (row->sweep == EACH_LOOP_SECONDS)
        opts.loop_seconds = bad;
    else if (row->sweep == EACH_INITIAL_DELAY)
        opts.initial_delay = bad;
    else if (row->sweep == EACH_POLICY)
        opts.sched_policy = (int)bad;
    if (opts.sched_priority == ABOVE_MAX)
        opts.sched_priority = sched_get_priority_max(opts.sched_policy) + 1;
    struct probe p;
    probe_init(&p);
    lsvc *out = SENTINEL;
    int rc = lsvc_create(&out, &cls, &p, o);
    ck_assert_msg(rc == row->want, "lsvc_create, %s (%g): returned %d, want %d",
                  row->what, bad, rc, row->want);
    if (rc != 0) {
        ck_assert_msg(out == SENTINEL, "%s (%g): *out was changed", row->what,
                      bad);
    } else {
        ck_assert_str_eq(lsvc_name(out), cls.name);
        ck_assert_double_eq(lsvc_loop_seconds(out), row->seconds);
        ck_assert_int_eq(lsvc_destroy(out), 0);
    }
    probe_destroy(&p);
}

#define GOOD PROBE_CLASS("Good", 1)

START_TEST(test_create_refuses_bad_input)
{
    lsvc_class no_run = GOOD;
    no_run.run_once = NULL;
    const struct create_row rows[] = {
        {"no run_once", no_run, NULL, ONCE, EINVAL, 0},
        {"NULL name", PROBE_CLASS(NULL, 1), NULL, ONCE, EINVAL, 0},
        {"empty name", PROBE_CLASS("", 1), NULL, ONCE, EINVAL, 0},
        /* Names with a control character, which would break a log line
         * in two, forge one, or colour a terminal. */
        {"name \"evil\\nname\"", PROBE_CLASS("evil\nname", 1), NULL, ONCE,
         EINVAL, 0},
        {"name \"a\\rb\"", PROBE_CLASS("a\rb", 1), NULL, ONCE, EINVAL, 0},
        {"name \"tab\\there\"", PROBE_CLASS("tab\there", 1), NULL, ONCE,
         EINVAL, 0},
        {"name \"\\x1b[31m\"", PROBE_CLASS("\x1b[31m", 1), NULL, ONCE, EINVAL,
         0},
        {"name \"del\\x7f\"", PROBE_CLASS("del\x7f", 1), NULL, ONCE, EINVAL,
         0},
        /* A class's 0 means "the default", but a positive interval too
         * small to be a whole nanosecond is a mistake, not 60 s. */
        {"class interval of 0.1 ns", PROBE_CLASS("Tiny", 1e-10), NULL, ONCE,
         EINVAL, 0},
        {"class interval", PROBE_CLASS("BadClass", 1), NULL,
         EACH_CLASS_SECONDS, EINVAL, 0},
        {"option interval", GOOD, &(lsvc_options){0}, EACH_LOOP_SECONDS,
         EINVAL, 0},
        {"initial delay", GOOD, &(lsvc_options){0}, EACH_INITIAL_DELAY,
         EINVAL, 0},
        {"the longest class interval", PROBE_CLASS("Longest", LSVC_MAX_SECONDS),
         NULL, ONCE, 0, LSVC_MAX_SECONDS},
        {"the longest option interval and delay", GOOD,
         &(lsvc_options){.loop_seconds = LSVC_MAX_SECONDS,
                         .initial_delay = LSVC_MAX_SECONDS},
         ONCE, 0, LSVC_MAX_SECONDS},
        {"missed policy past the last", GOOD,
         &(lsvc_options){.missed = (lsvc_missed)(LSVC_MISSED_BURST + 1)},
         ONCE, EINVAL, 0},
        {"negative missed policy", GOOD,
         &(lsvc_options){.missed = (lsvc_missed)-1}, ONCE, EINVAL, 0},
        {"1-byte stack", GOOD, &(lsvc_options){.stack_size = 1}, ONCE,
         EINVAL, 0},
        {"stack below PTHREAD_STACK_MIN", GOOD,
         &(lsvc_options){.stack_size = PTHREAD_STACK_MIN - 1}, ONCE, EINVAL,
         0},
        {"priority above the maximum", GOOD,
         &(lsvc_options){.sched_priority = ABOVE_MAX}, EACH_POLICY, EINVAL, 0},
        {"negative priority", GOOD, &(lsvc_options){.sched_priority = -1},
         EACH_POLICY, EINVAL, 0},
        {"huge priority", GOOD, &(lsvc_options){.sched_priority = INT_MAX},
         EACH_POLICY, EINVAL, 0},
        {"unknown policy", GOOD,
         &(lsvc_options){.sched_policy = 12345, .sched_priority = 10}, ONCE,
         EINVAL, 0},
        {"negative slack", GOOD, &(lsvc_options){.timer_slack_ns = -1}, ONCE,
         EINVAL, 0},
    };
    static const double policies[] = {SCHED_FIFO, SCHED_RR};
    for (size_t i = 0; i < ROWS(rows); i++) {
        enum sweep sweep = rows[i].sweep;
        const double *values = sweep == EACH_POLICY ? policies : bad_seconds;
        size_t n = sweep == ONCE          ? 1
                   : sweep == EACH_POLICY ? ROWS(policies)
                                          : N_BAD_SECONDS;
        for (size_t k = 0; k < n; k++) {
            /* +infinity is LSVC_NEVER as an interval (test_control.c). */
            bool interval = sweep == EACH_CLASS_SECONDS ||
                            sweep == EACH_LOOP_SECONDS;
            if (interval && values[k] == LSVC_NEVER)
                continue;
            check_create(&rows[i], values[k]);
        }
    }

    /* No class, or no place for the service. */
    static const lsvc_class good = GOOD;
    struct probe p;
    probe_init(&p);
    lsvc *out = SENTINEL;
    ck_assert_int_eq(lsvc_create(&out, NULL, &p, NULL), EINVAL);
    ck_assert_msg(out == SENTINEL, "NULL class: *out was changed");
    ck_assert_int_eq(lsvc_create(NULL, &good, &p, NULL), EINVAL);
    probe_destroy(&p);
}
END_TEST

/* Every control byte, 0x01 to 0x1f and 0x7f, is refused wherever it is in
 * the name; every other byte is taken, those from 0x80 up (UTF-8 names,
 * and any other 8-bit bytes) included. */
START_TEST(test_create_refuses_every_control_byte_and_only_those)
{
    for (int c = 1; c <= 0xff; c++) {
        bool control = c < 0x20 || c == 0x7f;
        char first[] = {(char)c, 'x', '\0'};
        char middle[] = {'a', (char)c, 'b', '\0'};
        char last[] = {'x', 'y', (char)c, '\0'};
        const char *names[] = {first, middle, last};
        for (size_t i = 0; i < 3; i++) {
            char what[48];
            snprintf(what, sizeof(what), "byte 0x%02x at %zu", (unsigned)c, i);
            struct create_row row = {what, PROBE_CLASS(names[i], 1), NULL,
                                     ONCE, control ? EINVAL : 0, 1};
            check_create(&row, NAN);
        }
    }
    static const char *const utf8[] = {
        "cach\xc3\xa9", "\xe6\xb8\x85\xe7\x90\x86", "Caf\xc3\xa9 sweep",
    };
    for (size_t i = 0; i < sizeof(utf8) / sizeof(utf8[0]); i++)
        ck_assert_str_eq(lsvc_name(fx_new(utf8[i], 1, NULL)->svc), utf8[i]);
}
END_TEST

/* --- Calls on services and groups ------------------------------------------ */

/* What a row's call is made on: a service, a group, or NULL. */
enum subject {
    NO_SERVICE,        /* svc is NULL */
    IDLE,              /* svc is created, never started */
    RUNNING,           /* svc is started, its first run done; every refused
                        * call must leave it running as it was */
    NO_GROUP,          /* g is NULL; svc is idle */
    EMPTY,             /* g is empty */
    WITH_SERVICE,      /* svc is in g, which is not started */
    SERVICE_ELSEWHERE, /* g is empty; svc is in another group */
};

/* The calls; x is the argument that varies. The getters that return no
 * error give whether they returned anything. */
enum call {
    START,            /* lsvc_start(svc, x) */
    STOP,             /* lsvc_stop(svc, x != 0) */
    STOP_TIMEOUT,     /* lsvc_stop_timeout(svc, x) */
    JOIN,             /* lsvc_join(svc, x) */
    DESTROY,          /* lsvc_destroy(svc) */
    GET_STATS,        /* lsvc_get_stats(svc, x != 0 ? &st : NULL) */
    SCHEDULED_START,  /* lsvc_scheduled_start(svc, x != 0 ? &ts : NULL) */
    NAME,             /* lsvc_name(svc) != NULL */
    LOOP_SECONDS,     /* lsvc_loop_seconds(svc) != 0 */
    IS_RUNNING,       /* lsvc_is_running(svc) */
    CREATE,           /* lsvc_group_create(NULL) */
    ADD,              /* lsvc_group_add(g, x != 0 ? svc : NULL) */
    SET_SIGNALS,      /* lsvc_group_set_signals(g, set): x > 0, the set of
                       * SIGTERM and x; x < 0, of -x alone; 0: empty */
    SET_INTERNAL,     /* the same with a signal glibc keeps for itself,
                       * alone (x > 0) or with SIGTERM (x < 0) */
    SET_STOP_TIMEOUT, /* lsvc_group_set_stop_timeout(g, x) */
    SET_ENVIRONMENT,  /* lsvc_group_set_environment(g, x != 0) */
    SET_NOTIFY,       /* lsvc_group_set_notify(g, x != 0) */
    GROUP_START,      /* lsvc_group_start(g) */
    GROUP_WAIT,       /* lsvc_group_wait(g) */
    GROUP_RUN,        /* lsvc_group_run(g) */
    GROUP_STOP,       /* lsvc_group_stop(g) */
    GROUP_DESTROY,    /* lsvc_group_destroy(g) */
};

struct call_row {
    const char *what; /* the call and its input */
    enum subject on;
    enum call call;
    double x;
    int want;
};

/* What a row's call is made on. */
struct subject_of {
    struct fx *f;      /* the service, whatever the subject */
    lsvc *svc;         /* f->svc, or NULL */
    lsvc_group *g;     /* NULL, empty, or with svc in it */
    lsvc_group *other; /* a group svc is in, when it is in another */
};

#ifdef __GLIBC__
/* Sets sig in set bit by bit, as sigaddset would: glibc's sigaddset
 * refuses the signals it keeps for itself, but a set can still hold them. */
static void add_signal_bit(sigset_t *set, int sig)
{
    const size_t bits = 8 * sizeof(unsigned long);
    unsigned long word;
    memcpy(&word, (char *)set + (size_t)(sig - 1) / bits * sizeof(word),
           sizeof(word));
    word |= 1UL << ((size_t)(sig - 1) % bits);
    memcpy((char *)set + (size_t)(sig - 1) / bits * sizeof(word), &word,
           sizeof(word));
    ck_assert_int_eq(sigismember(set, sig), 1);
}
#endif

/* The set of signals SET_SIGNALS or SET_INTERNAL with x stands for. */
static sigset_t signal_set(enum call call, int x)
{
    sigset_t set;
    sigemptyset(&set);
#ifdef __GLIBC__
    if (call == SET_INTERNAL)
        add_signal_bit(&set, abs(x));
#endif
    if (call == SET_SIGNALS && x != 0)
        ck_assert_int_eq(sigaddset(&set, abs(x)), 0);
    if (x > 0 ? call == SET_SIGNALS : call == SET_INTERNAL)
        ck_assert_int_eq(sigaddset(&set, SIGTERM), 0);
    return set;
}

static int make_call(enum call call, struct subject_of *c, double x)
{
    lsvc_stats st;
    struct timespec ts;
    sigset_t set = signal_set(call, (int)x);
    int rc;
    switch (call) {
    case START:
        return lsvc_start(c->svc, (uint64_t)x);
    case STOP:
        return lsvc_stop(c->svc, x != 0);
    case STOP_TIMEOUT:
        return lsvc_stop_timeout(c->svc, x);
    case JOIN:
        return lsvc_join(c->svc, x);
    case DESTROY:
        return lsvc_destroy(c->svc);
    case GET_STATS:
        return lsvc_get_stats(c->svc, x != 0 ? &st : NULL);
    case SCHEDULED_START:
        return lsvc_scheduled_start(c->svc, x != 0 ? &ts : NULL);
    case NAME:
        return lsvc_name(c->svc) != NULL;
    case LOOP_SECONDS:
        return lsvc_loop_seconds(c->svc) != 0;
    case IS_RUNNING:
        return lsvc_is_running(c->svc);
    case CREATE:
        return lsvc_group_create(NULL);
    case ADD:
        return lsvc_group_add(c->g, x != 0 ? c->svc : NULL);
    case SET_SIGNALS:
    case SET_INTERNAL:
        return lsvc_group_set_signals(c->g, &set);
    case SET_STOP_TIMEOUT:
        return lsvc_group_set_stop_timeout(c->g, x);
    case SET_ENVIRONMENT:
        return lsvc_group_set_environment(c->g, x != 0);
    case SET_NOTIFY:
        return lsvc_group_set_notify(c->g, x != 0);
    case GROUP_START:
        return lsvc_group_start(c->g);
    case GROUP_WAIT:
        return lsvc_group_wait(c->g);
    case GROUP_RUN:
        return lsvc_group_run(c->g);
    case GROUP_STOP:
        return lsvc_group_stop(c->g);
    case GROUP_DESTROY:
        rc = lsvc_group_destroy(c->g);
        if (rc == 0)
            c->g = NULL;
        return rc;
    }
    ck_abort_msg("no call %d", (int)call);
    return -1;
}

static void subject_init(struct subject_of *c, enum subject on)
{
    memset(c, 0, sizeof(*c));
    c->f = fx_new("Good", 1, NULL);
    c->svc = on == NO_SERVICE ? NULL : c->f->svc;
    if (on == RUNNING) {
        fx_start(c->f, 0);
        ck_assert(probe_wait_runs(&c->f->p, 1, 5));
    }
    if (on >= EMPTY)
        ck_assert_int_eq(lsvc_group_create(&c->g), 0);
    if (on == WITH_SERVICE)
        ck_assert_int_eq(lsvc_group_add(c->g, c->svc), 0);
    if (on == SERVICE_ELSEWHERE) {
        ck_assert_int_eq(lsvc_group_create(&c->other), 0);
        ck_assert_int_eq(lsvc_group_add(c->other, c->svc), 0);
    }
}

/* What every refused call leaves: a running service running as it was,
 * and a group that refused a service or a NULL not holding it (an empty
 * group cannot start). The teardown checks that no group took the
 * service: it destroys it. */
static void subject_end(struct subject_of *c, enum subject on,
                        const char *what)
{
    if (on == RUNNING) {
        ck_assert_msg(lsvc_is_running(c->svc), "%s stopped it", what);
        ck_assert_str_eq(lsvc_name(c->svc), "Good");
        ck_assert_msg(strcmp(c->f->p.events, "SR") == 0,
                      "%s: the hooks ran as %s", what, c->f->p.events);
        fx_stop(c->f);
        ck_assert_str_eq(c->f->p.events, "SRT");
    }
    if (on == EMPTY || on == SERVICE_ELSEWHERE)
        ck_assert_msg(lsvc_group_start(c->g) == EINVAL,
                      "%s: the group is not empty", what);
    if (c->g != NULL)
        ck_assert_int_eq(lsvc_group_destroy(c->g), 0);
    if (c->other != NULL)
        ck_assert_int_eq(lsvc_group_destroy(c->other), 0);
}

/* Makes the row's call with x in a new subject, and checks what it
 * returned and what it left. */
static void check_call(const struct call_row *row, double x,
                       const struct threads *before)
{
    struct subject_of c;
    subject_init(&c, row->on);
    int rc = make_call(row->call, &c, x);
    ck_assert_msg(rc == row->want, "%s (%g) returned %d, want %d", row->what,
                  x, rc, row->want);
    subject_end(&c, row->on, row->what);
    /* Nothing started, nothing blocked. */
    ck_assert(!signal_blocked(SIGTERM));
    ck_assert(wait_threads_back_to(before, 5));
}

/* A bound of lsvc_stop_timeout and lsvc_join above the longest. */
#define TOO_LONG (LSVC_MAX_SECONDS * 1.000001)

START_TEST(test_calls_refuse_bad_input)
{
    unblock_stop_signals();
    struct threads before;
    threads_baseline(&before);
    const struct call_row rows[] = {
        {"lsvc_start(NULL, 0)", NO_SERVICE, START, 0, EINVAL},
        {"lsvc_start(NULL, 3)", NO_SERVICE, START, 3, EINVAL},
        {"lsvc_stop(NULL, true)", NO_SERVICE, STOP, 1, EINVAL},
        {"lsvc_stop(NULL, false)", NO_SERVICE, STOP, 0, EINVAL},
        {"lsvc_stop_timeout(NULL, 1)", NO_SERVICE, STOP_TIMEOUT, 1, EINVAL},
        {"lsvc_join(NULL, 1)", NO_SERVICE, JOIN, 1, EINVAL},
        {"lsvc_destroy(NULL)", NO_SERVICE, DESTROY, .want = EINVAL},
        {"lsvc_get_stats(NULL, &st)", NO_SERVICE, GET_STATS, 1, EINVAL},
        {"lsvc_scheduled_start(NULL, &ts)", NO_SERVICE, SCHEDULED_START, 1,
         EINVAL},
        {"lsvc_name(NULL) is NULL", NO_SERVICE, NAME, .want = false},
        {"lsvc_loop_seconds(NULL) is 0", NO_SERVICE, LOOP_SECONDS,
         .want = false},
        {"lsvc_is_running(NULL) is false", NO_SERVICE, IS_RUNNING,
         .want = false},
        {"lsvc_get_stats(svc, NULL)", IDLE, GET_STATS, 0, EINVAL},
        {"lsvc_scheduled_start(svc, NULL)", IDLE, SCHEDULED_START, 0, EINVAL},
        {"lsvc_start(running, 0)", RUNNING, START, 0, EBUSY},
        {"lsvc_start(running, 1)", RUNNING, START, 1, EBUSY},
        {"lsvc_destroy(running)", RUNNING, DESTROY, .want = EBUSY},
        /* Not a negative bound: for lsvc_stop_timeout as for lsvc_join,
         * that means none (test_stop.c). */
        {"lsvc_stop_timeout(running, NaN)", RUNNING, STOP_TIMEOUT, NAN, EINVAL},
        {"lsvc_stop_timeout(running, inf)", RUNNING, STOP_TIMEOUT, INFINITY,
         EINVAL},
        {"lsvc_stop_timeout(running, too long)", RUNNING, STOP_TIMEOUT,
         TOO_LONG, EINVAL},
        {"lsvc_join(running, NaN)", RUNNING, JOIN, NAN, EINVAL},
        {"lsvc_join(running, inf)", RUNNING, JOIN, INFINITY, EINVAL},
        {"lsvc_join(running, too long)", RUNNING, JOIN, TOO_LONG, EINVAL},
        {"lsvc_group_create(NULL)", NO_GROUP, CREATE, .want = EINVAL},
        {"lsvc_group_add(NULL, svc)", NO_GROUP, ADD, 1, EINVAL},
        {"lsvc_group_start(NULL)", NO_GROUP, GROUP_START, .want = EINVAL},
        {"lsvc_group_set_signals(NULL, empty)", NO_GROUP, SET_SIGNALS, 0,
         EINVAL},
        {"lsvc_group_wait(NULL)", NO_GROUP, GROUP_WAIT, .want = EINVAL},
        {"lsvc_group_set_stop_timeout(NULL, 1)", NO_GROUP, SET_STOP_TIMEOUT,
         1, EINVAL},
        {"lsvc_group_run(NULL)", NO_GROUP, GROUP_RUN, .want = EINVAL},
        {"lsvc_group_set_environment(NULL, true)", NO_GROUP, SET_ENVIRONMENT,
         1, EINVAL},
        {"lsvc_group_set_environment(NULL, false)", NO_GROUP, SET_ENVIRONMENT,
         0, EINVAL},
        {"lsvc_group_stop(NULL)", NO_GROUP, GROUP_STOP, .want = EINVAL},
        {"lsvc_group_set_notify(NULL, true)", NO_GROUP, SET_NOTIFY, 1, EINVAL},
        {"lsvc_group_set_notify(NULL, false)", NO_GROUP, SET_NOTIFY, 0,
         EINVAL},
        {"lsvc_group_destroy(NULL)", NO_GROUP, GROUP_DESTROY, .want = EINVAL},
        {"lsvc_group_start(empty)", EMPTY, GROUP_START, .want = EINVAL},
        {"lsvc_group_add(g, NULL)", EMPTY, ADD, 0, EINVAL},
        {"lsvc_group_run(empty)", EMPTY, GROUP_RUN, .want = EINVAL},
        {"lsvc_group_add(g, svc of g)", WITH_SERVICE, ADD, 1, EBUSY},
        {"lsvc_group_wait(empty)", EMPTY, GROUP_WAIT, .want = EINVAL},
        {"lsvc_group_add(g, svc of another group)", SERVICE_ELSEWHERE, ADD, 1,
         EBUSY},
        {"lsvc_group_wait(not started)", WITH_SERVICE, GROUP_WAIT,
         .want = EINVAL},
#ifdef __GLIBC__
        /* glibc uses signals 32 and 33 for thread cancellation and
         * setxid: a signal thread waiting for them would take them from
         * the C library (and a group woken by one would never be told to
         * end). The first real-time signal a program may use is not one
         * of them. */
        {"lsvc_group_set_signals(32)", EMPTY, SET_INTERNAL, 32, EINVAL},
        {"lsvc_group_set_signals(32, SIGTERM)", EMPTY, SET_INTERNAL, -32,
         EINVAL},
        {"lsvc_group_set_signals(33)", EMPTY, SET_INTERNAL, 33, EINVAL},
        {"lsvc_group_set_signals(33, SIGTERM)", EMPTY, SET_INTERNAL, -33,
         EINVAL},
        {"lsvc_group_set_signals(SIGRTMIN)", EMPTY, SET_SIGNALS, -SIGRTMIN, 0},
#endif
        {"lsvc_group_set_stop_timeout(g, 0)", EMPTY, SET_STOP_TIMEOUT, 0, 0},
    };
    for (size_t i = 0; i < ROWS(rows); i++)
        check_call(&rows[i], rows[i].x, &before);

    /* Rows made with each value of a list in turn. */
    static const double uncatchable[] = {SIGKILL, SIGSTOP, SIGSEGV,
                                         SIGBUS,  SIGFPE,  SIGILL};
    const struct {
        struct call_row row;
        const double *each;
        size_t n;
    } sweeps[] = {
        /* Signals that cannot be waited for, with SIGTERM. */
        {{"lsvc_group_set_signals(SIGTERM, bad)", EMPTY, SET_SIGNALS,
          .want = EINVAL},
         uncatchable, ROWS(uncatchable)},
        {{"lsvc_group_set_stop_timeout(g, bad)", EMPTY, SET_STOP_TIMEOUT,
          .want = EINVAL},
         bad_seconds, N_BAD_SECONDS},
    };
    for (size_t i = 0; i < ROWS(sweeps); i++)
        for (size_t k = 0; k < sweeps[i].n; k++)
            check_call(&sweeps[i].row, sweeps[i].each[k], &before);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("badinput");
    add_tests(s, "create", (const TTest *[]){
        test_create_refuses_bad_input,
        test_create_refuses_every_control_byte_and_only_those, NULL});
    add_tests(s, "calls", (const TTest *[]){test_calls_refuse_bad_input, NULL});
    return run_suite(s);
}
