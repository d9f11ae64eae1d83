/*
 * Bad input: every NULL argument and out-of-range value gets its
 * documented error, never a crash, and leaves nothing behind: no thread
 * (checked here) and no allocation (checked by LeakSanitizer when the
 * suite is built with -Db_sanitize=address).
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

static const lsvc_class good_class = PROBE_CLASS("Good", 1);

/* Marks *out as untouched by a failed create. */
static lsvc *const SENTINEL = (lsvc *)&good_class;

/* lsvc_create must fail with EINVAL and leave *out alone. */
static void check_create_einval(const lsvc_class *cls,
                                const lsvc_options *opts, const char *what)
{
    struct probe p;
    probe_init(&p);
    lsvc *out = SENTINEL;
    int rc = lsvc_create(&out, cls, &p, opts);
    ck_assert_msg(rc == EINVAL, "%s: lsvc_create returned %d", what, rc);
    ck_assert_msg(out == SENTINEL, "%s: *out was changed", what);
    probe_destroy(&p);
}

/* Out-of-range seconds for an interval or a delay. */
static const double bad_seconds[] = {
    NAN, INFINITY, -INFINITY, -1.0, -1e-9, LSVC_MAX_SECONDS * 1.000001, 1e300,
};
#define N_BAD_SECONDS (sizeof(bad_seconds) / sizeof(bad_seconds[0]))

/* --- lsvc_create ---------------------------------------------------------- */

START_TEST(test_create_null_out_is_einval)
{
    struct probe p;
    probe_init(&p);
    ck_assert_int_eq(lsvc_create(NULL, &good_class, &p, NULL), EINVAL);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_create_null_class_is_einval)
{
    check_create_einval(NULL, NULL, "NULL class");
}
END_TEST

START_TEST(test_create_without_run_once_is_einval)
{
    lsvc_class cls = PROBE_CLASS("NoRun", 1);
    cls.run_once = NULL;
    check_create_einval(&cls, NULL, "no run_once");
}
END_TEST

START_TEST(test_create_null_or_empty_name_is_einval)
{
    lsvc_class cls = PROBE_CLASS(NULL, 1);
    check_create_einval(&cls, NULL, "NULL name");
    cls.name = "";
    check_create_einval(&cls, NULL, "empty name");
}
END_TEST

/* Names with a control character, which would break a log line in two,
 * forge one, or colour a terminal: the name goes into every line. */
static const struct {
    const char *name;
    const char *shown; /* for messages */
} control_names[] = {
    {"evil\nname", "\"evil\\nname\""}, {"a\rb", "\"a\\rb\""},
    {"tab\there", "\"tab\\there\""},   {"\x1b[31m", "\"\\x1b[31m\""},
    {"del\x7f", "\"del\\x7f\""},
};
#define N_CONTROL_NAMES (sizeof(control_names) / sizeof(control_names[0]))

START_TEST(test_create_name_with_control_character_is_einval)
{
    lsvc_class cls = PROBE_CLASS(control_names[_i].name, 1);
    check_create_einval(&cls, NULL, control_names[_i].shown);
}
END_TEST

/* Every control byte, 0x01 to 0x1f and 0x7f, is refused wherever it is in
 * the name; every other byte is taken, those from 0x80 up (UTF-8 names,
 * and any other 8-bit bytes) included. */
START_TEST(test_create_refuses_every_control_byte_and_only_those)
{
    struct probe p;
    probe_init(&p);
    for (int c = 1; c <= 0xff; c++) {
        bool control = c < 0x20 || c == 0x7f;
        char first[] = {(char)c, 'x', '\0'};
        char middle[] = {'a', (char)c, 'b', '\0'};
        char last[] = {'x', 'y', (char)c, '\0'};
        const char *names[] = {first, middle, last};
        for (size_t i = 0; i < 3; i++) {
            char what[48];
            snprintf(what, sizeof(what), "byte 0x%02x at %zu", (unsigned)c, i);
            lsvc_class cls = PROBE_CLASS(names[i], 1);
            if (control) {
                check_create_einval(&cls, NULL, what);
                continue;
            }
            lsvc *svc = NULL;
            int rc = lsvc_create(&svc, &cls, &p, NULL);
            ck_assert_msg(rc == 0, "%s: lsvc_create returned %d", what, rc);
            ck_assert_str_eq(lsvc_name(svc), names[i]);
            ck_assert_int_eq(lsvc_destroy(svc), 0);
        }
    }
    static const char *const utf8[] = {
        "cach\xc3\xa9", "\xe6\xb8\x85\xe7\x90\x86", "Caf\xc3\xa9 sweep",
    };
    for (size_t i = 0; i < sizeof(utf8) / sizeof(utf8[0]); i++) {
        lsvc_class cls = PROBE_CLASS(utf8[i], 1);
        lsvc *svc = make_service(&cls, &p, NULL);
        ck_assert_str_eq(lsvc_name(svc), utf8[i]);
        ck_assert_int_eq(lsvc_destroy(svc), 0);
    }
    probe_destroy(&p);
}
END_TEST

/* A class's 0 means "the default", but a positive interval too small to
 * be a whole nanosecond is a mistake, not a request for 60 s. */
START_TEST(test_create_class_interval_under_1_ns_is_einval)
{
    lsvc_class cls = PROBE_CLASS("Tiny", 1e-10);
    check_create_einval(&cls, NULL, "class interval of 0.1 ns");
}
END_TEST

/* +infinity, in bad_seconds, is LSVC_NEVER as an interval (see
 * test_control.c): every other value there is refused. */
static bool is_never(double seconds)
{
    return seconds == LSVC_NEVER;
}

START_TEST(test_create_bad_class_interval_is_einval)
{
    for (size_t i = 0; i < N_BAD_SECONDS; i++) {
        if (is_never(bad_seconds[i]))
            continue;
        lsvc_class cls = PROBE_CLASS("BadClass", bad_seconds[i]);
        check_create_einval(&cls, NULL, "class interval");
    }
}
END_TEST

START_TEST(test_create_bad_option_interval_is_einval)
{
    for (size_t i = 0; i < N_BAD_SECONDS; i++) {
        if (is_never(bad_seconds[i]))
            continue;
        lsvc_options o = {.loop_seconds = bad_seconds[i]};
        check_create_einval(&good_class, &o, "option interval");
    }
}
END_TEST

START_TEST(test_create_accepts_the_longest_interval_and_delay)
{
    lsvc_class cls = PROBE_CLASS("Longest", LSVC_MAX_SECONDS);
    lsvc_options o = {.loop_seconds = LSVC_MAX_SECONDS,
                      .initial_delay = LSVC_MAX_SECONDS};
    struct probe p;
    probe_init(&p);
    lsvc *a = make_service(&cls, &p, NULL);
    lsvc *b = make_service(&good_class, &p, &o);
    ck_assert_double_eq(lsvc_loop_seconds(a), LSVC_MAX_SECONDS);
    ck_assert_double_eq(lsvc_loop_seconds(b), LSVC_MAX_SECONDS);
    ck_assert_int_eq(lsvc_destroy(a), 0);
    ck_assert_int_eq(lsvc_destroy(b), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_create_bad_initial_delay_is_einval)
{
    for (size_t i = 0; i < N_BAD_SECONDS; i++) {
        lsvc_options o = {.initial_delay = bad_seconds[i]};
        check_create_einval(&good_class, &o, "initial delay");
    }
}
END_TEST

START_TEST(test_create_unknown_missed_policy_is_einval)
{
    lsvc_options o = {.missed = (lsvc_missed)(LSVC_MISSED_BURST + 1)};
    check_create_einval(&good_class, &o, "missed policy past the last");
    o.missed = (lsvc_missed)-1;
    check_create_einval(&good_class, &o, "negative missed policy");
}
END_TEST

START_TEST(test_create_stack_below_minimum_is_einval)
{
    lsvc_options o = {.stack_size = 1};
    check_create_einval(&good_class, &o, "1-byte stack");
    o.stack_size = PTHREAD_STACK_MIN - 1;
    check_create_einval(&good_class, &o, "stack below PTHREAD_STACK_MIN");
}
END_TEST

START_TEST(test_create_priority_out_of_range_is_einval)
{
    const int policies[] = {SCHED_FIFO, SCHED_RR};
    for (size_t i = 0; i < 2; i++) {
        int max = sched_get_priority_max(policies[i]);
        lsvc_options o = {.sched_policy = policies[i],
                          .sched_priority = max + 1};
        check_create_einval(&good_class, &o, "priority above the maximum");
        o.sched_priority = -1;
        check_create_einval(&good_class, &o, "negative priority");
        o.sched_priority = INT_MAX;
        check_create_einval(&good_class, &o, "huge priority");
    }
    lsvc_options o = {.sched_policy = 12345, .sched_priority = 10};
    check_create_einval(&good_class, &o, "unknown policy");
}
END_TEST

START_TEST(test_create_negative_slack_is_einval)
{
    lsvc_options o = {.timer_slack_ns = -1};
    check_create_einval(&good_class, &o, "negative slack");
}
END_TEST

/* --- Services ----------------------------------------------------------- */

START_TEST(test_null_service_is_einval_everywhere)
{
    lsvc_stats st;
    struct timespec ts;
    ck_assert_int_eq(lsvc_start(NULL, 0), EINVAL);
    ck_assert_int_eq(lsvc_start(NULL, 3), EINVAL);
    ck_assert_int_eq(lsvc_stop(NULL, true), EINVAL);
    ck_assert_int_eq(lsvc_stop(NULL, false), EINVAL);
    ck_assert_int_eq(lsvc_stop_timeout(NULL, 1), EINVAL);
    ck_assert_int_eq(lsvc_join(NULL, 1), EINVAL);
    ck_assert_int_eq(lsvc_destroy(NULL), EINVAL);
    ck_assert_int_eq(lsvc_get_stats(NULL, &st), EINVAL);
    ck_assert_int_eq(lsvc_scheduled_start(NULL, &ts), EINVAL);
    ck_assert_ptr_null(lsvc_name(NULL));
    ck_assert_double_eq(lsvc_loop_seconds(NULL), 0);
    ck_assert(!lsvc_is_running(NULL));
}
END_TEST

START_TEST(test_null_output_pointers_are_einval)
{
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&good_class, &p, NULL);
    ck_assert_int_eq(lsvc_get_stats(svc, NULL), EINVAL);
    ck_assert_int_eq(lsvc_scheduled_start(svc, NULL), EINVAL);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_start_while_running_is_ebusy)
{
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&good_class, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    ck_assert_int_eq(lsvc_start(svc, 0), EBUSY);
    ck_assert_int_eq(lsvc_start(svc, 1), EBUSY);
    ck_assert(lsvc_is_running(svc));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    /* The refused starts started nothing. */
    ck_assert_str_eq(p.events, "SRT");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_destroy_while_running_is_ebusy)
{
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&good_class, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    ck_assert_int_eq(lsvc_destroy(svc), EBUSY);
    ck_assert(lsvc_is_running(svc));
    ck_assert_str_eq(lsvc_name(svc), "Good");
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_bad_stop_and_join_bounds_are_einval)
{
    /* Not a negative bound: for lsvc_stop_timeout as for lsvc_join, that
     * means none (test_stop.c). */
    const double bad[] = {NAN, INFINITY, LSVC_MAX_SECONDS * 1.000001};
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&good_class, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(lsvc_stop_timeout(svc, bad[i]) == EINVAL,
                      "lsvc_stop_timeout(%g) accepted", bad[i]);
    ck_assert_int_eq(lsvc_join(svc, NAN), EINVAL);
    ck_assert_int_eq(lsvc_join(svc, INFINITY), EINVAL);
    ck_assert_int_eq(lsvc_join(svc, LSVC_MAX_SECONDS * 1.000001), EINVAL);
    /* A refused call requested no stop. */
    ck_assert(lsvc_is_running(svc));
    ck_assert_str_eq(p.events, "SR");
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* --- Groups ------------------------------------------------------------------ */

START_TEST(test_null_group_is_einval_everywhere)
{
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&good_class, &p, NULL);
    sigset_t set;
    sigemptyset(&set);
    ck_assert_int_eq(lsvc_group_create(NULL), EINVAL);
    ck_assert_int_eq(lsvc_group_add(NULL, svc), EINVAL);
    ck_assert_int_eq(lsvc_group_set_signals(NULL, &set), EINVAL);
    ck_assert_int_eq(lsvc_group_set_stop_timeout(NULL, 1), EINVAL);
    ck_assert_int_eq(lsvc_group_start(NULL), EINVAL);
    ck_assert_int_eq(lsvc_group_wait(NULL), EINVAL);
    ck_assert_int_eq(lsvc_group_run(NULL), EINVAL);
    ck_assert_int_eq(lsvc_group_stop(NULL), EINVAL);
    ck_assert_int_eq(lsvc_group_destroy(NULL), EINVAL);
    /* The service was not taken by any of them. */
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_group_add_null_service_is_einval)
{
    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    ck_assert_int_eq(lsvc_group_add(g, NULL), EINVAL);
    ck_assert_int_eq(lsvc_group_start(g), EINVAL);
    ck_assert_int_eq(lsvc_group_destroy(g), 0);
}
END_TEST

START_TEST(test_service_in_two_groups_is_ebusy)
{
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&good_class, &p, NULL);
    lsvc_group *g1, *g2;
    ck_assert_int_eq(lsvc_group_create(&g1), 0);
    ck_assert_int_eq(lsvc_group_create(&g2), 0);
    ck_assert_int_eq(lsvc_group_add(g1, svc), 0);
    ck_assert_int_eq(lsvc_group_add(g2, svc), EBUSY);
    ck_assert_int_eq(lsvc_group_add(g1, svc), EBUSY);
    /* g2 did not keep it: it is still empty. */
    ck_assert_int_eq(lsvc_group_start(g2), EINVAL);
    ck_assert_int_eq(lsvc_group_destroy(g2), 0);
    ck_assert_int_eq(lsvc_group_destroy(g1), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_empty_group_is_einval)
{
    unblock_stop_signals();
    struct threads before;
    threads_baseline(&before);
    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    ck_assert_int_eq(lsvc_group_start(g), EINVAL);
    ck_assert_int_eq(lsvc_group_run(g), EINVAL);
    ck_assert(!signal_blocked(SIGTERM));
    ck_assert(wait_threads_back_to(&before, 5));
    ck_assert_int_eq(lsvc_group_wait(g), EINVAL);
    ck_assert_int_eq(lsvc_group_destroy(g), 0);
}
END_TEST

START_TEST(test_group_wait_when_not_started_is_einval)
{
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&good_class, &p, NULL);
    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    ck_assert_int_eq(lsvc_group_add(g, svc), 0);
    ck_assert_int_eq(lsvc_group_wait(g), EINVAL);
    ck_assert_int_eq(lsvc_group_destroy(g), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_group_signals_that_cannot_be_waited_for_are_einval)
{
    const int bad[] = {SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, bad[i]);
        ck_assert_msg(lsvc_group_set_signals(g, &set) == EINVAL,
                      "signal %d accepted", bad[i]);
    }
    ck_assert_int_eq(lsvc_group_destroy(g), 0);
}
END_TEST

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
}
#endif

/* glibc uses signals 32 and 33 for thread cancellation and setxid: a
 * signal thread waiting for them would take them from the C library (and
 * a group woken by one would never be told to end). */
START_TEST(test_group_signals_internal_to_the_c_library_are_einval)
{
#ifdef __GLIBC__
    static const int internal[] = {32, 33};
    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    for (size_t i = 0; i < sizeof(internal) / sizeof(internal[0]); i++) {
        int sig = internal[i];
        sigset_t set;
        sigemptyset(&set);
        add_signal_bit(&set, sig);
        ck_assert_int_eq(sigismember(&set, sig), 1);
        ck_assert_msg(lsvc_group_set_signals(g, &set) == EINVAL,
                      "a set of signal %d alone accepted", sig);
        ck_assert_int_eq(sigaddset(&set, SIGTERM), 0);
        ck_assert_msg(lsvc_group_set_signals(g, &set) == EINVAL,
                      "SIGTERM with signal %d accepted", sig);
    }
    /* The first real-time signal a program may use is not one of them. */
    sigset_t rt;
    sigemptyset(&rt);
    ck_assert_int_eq(sigaddset(&rt, SIGRTMIN), 0);
    ck_assert_int_eq(lsvc_group_set_signals(g, &rt), 0);
    ck_assert_int_eq(lsvc_group_destroy(g), 0);
#endif
}
END_TEST

START_TEST(test_bad_group_stop_timeout_is_einval)
{
    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    for (size_t i = 0; i < N_BAD_SECONDS; i++)
        ck_assert_msg(lsvc_group_set_stop_timeout(g, bad_seconds[i]) == EINVAL,
                      "stop timeout %g accepted", bad_seconds[i]);
    ck_assert_int_eq(lsvc_group_set_stop_timeout(g, 0), 0);
    ck_assert_int_eq(lsvc_group_destroy(g), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("badinput");
    TCase *create = timed_tcase("create");
    tcase_add_test(create, test_create_null_out_is_einval);
    tcase_add_test(create, test_create_null_class_is_einval);
    tcase_add_test(create, test_create_without_run_once_is_einval);
    tcase_add_test(create, test_create_null_or_empty_name_is_einval);
    tcase_add_loop_test(create, test_create_name_with_control_character_is_einval,
                        0, (int)N_CONTROL_NAMES);
    tcase_add_test(create, test_create_refuses_every_control_byte_and_only_those);
    tcase_add_test(create, test_create_bad_class_interval_is_einval);
    tcase_add_test(create, test_create_class_interval_under_1_ns_is_einval);
    tcase_add_test(create, test_create_bad_option_interval_is_einval);
    tcase_add_test(create, test_create_accepts_the_longest_interval_and_delay);
    tcase_add_test(create, test_create_bad_initial_delay_is_einval);
    tcase_add_test(create, test_create_unknown_missed_policy_is_einval);
    tcase_add_test(create, test_create_stack_below_minimum_is_einval);
    tcase_add_test(create, test_create_priority_out_of_range_is_einval);
    tcase_add_test(create, test_create_negative_slack_is_einval);
    suite_add_tcase(s, create);

    TCase *svc = timed_tcase("services");
    tcase_add_test(svc, test_null_service_is_einval_everywhere);
    tcase_add_test(svc, test_null_output_pointers_are_einval);
    tcase_add_test(svc, test_start_while_running_is_ebusy);
    tcase_add_test(svc, test_destroy_while_running_is_ebusy);
    tcase_add_test(svc, test_bad_stop_and_join_bounds_are_einval);
    suite_add_tcase(s, svc);

    TCase *grp = timed_tcase("groups");
    tcase_add_test(grp, test_null_group_is_einval_everywhere);
    tcase_add_test(grp, test_group_add_null_service_is_einval);
    tcase_add_test(grp, test_service_in_two_groups_is_ebusy);
    tcase_add_test(grp, test_empty_group_is_einval);
    tcase_add_test(grp, test_group_wait_when_not_started_is_einval);
    tcase_add_test(grp, test_group_signals_that_cannot_be_waited_for_are_einval);
    tcase_add_test(grp, test_group_signals_internal_to_the_c_library_are_einval);
    tcase_add_test(grp, test_bad_group_stop_timeout_is_einval);
    suite_add_tcase(s, grp);
    return run_suite(s);
}
