/*
 * What goes wrong in a run: a nonzero run_once result and a run longer
 * than the interval. Both are logged and counted, and the loop goes on.
 */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>

#define OVERRUN_TEXT "which is longer than its loop interval of"

START_TEST(test_failed_run_is_logged_with_name_and_code)
{
    static const lsvc_class cls = PROBE_CLASS("FailSvc", 0.01);
    struct probe p;
    probe_init(&p);
    p.run_code = 173;
    log_capture();
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 1), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    struct log_record r;
    ck_assert_msg(log_find(0, LSVC_LOG_ERROR, "FailSvc", &r),
                  "no ERROR naming the service");
    ck_assert_str_eq(r.logger, "loopsvc.failsvc");
    ck_assert_msg(strstr(r.message, "173") != NULL,
                  "the ERROR does not give the code: %s", r.message);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_failed_runs_are_counted_and_the_loop_goes_on)
{
    static const lsvc_class cls = PROBE_CLASS("FailsOften", 0.01);
    struct probe p;
    probe_init(&p);
    p.run_code = -1;
    log_capture();
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 3), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_uint_eq(p.runs, 3);
    lsvc_stats st;
    ck_assert_int_eq(lsvc_get_stats(svc, &st), 0);
    ck_assert_uint_eq(st.errors, 3);
    ck_assert_uint_eq(st.loops, 3);
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, "FailsOften"), 3);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* The number that follows `prefix` in `text`, or -1. */
static double number_after(const char *text, const char *prefix,
                           const char **rest)
{
    const char *at = strstr(text, prefix);
    if (at == NULL)
        return -1;
    char *end;
    double v = strtod(at + strlen(prefix), &end);
    *rest = end;
    return end == at + strlen(prefix) ? -1 : v;
}

START_TEST(test_overrun_logs_warning_with_both_durations)
{
    static const lsvc_class cls = PROBE_CLASS("OverSvc", 0.05);
    struct probe p;
    probe_init(&p);
    p.slow_ns = 120 * NS_PER_MS;
    p.slow_runs = 1;
    log_capture();
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 2), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    struct log_record r;
    ck_assert_msg(log_find(0, LSVC_LOG_WARNING, OVERRUN_TEXT, &r),
                  "no overrun WARNING");
    ck_assert_str_eq(r.logger, "loopsvc.oversvc");
    const char *rest;
    ck_assert_msg(starts_with(r.message, "OverSvc took "),
                  "unexpected wording: %s", r.message);
    double took = number_after(r.message, "OverSvc took ", &rest);
    ck_assert_msg(took >= 0.12 && took < 10,
                  "run took %g s by the message: %s", took, r.message);
    ck_assert_msg(starts_with(rest, " seconds to run, " OVERRUN_TEXT " "),
                  "unexpected wording: %s", r.message);
    double interval = number_after(r.message, OVERRUN_TEXT " ", &rest);
    ck_assert_msg(interval > 0.0499 && interval < 0.0501,
                  "interval %g s by the message: %s", interval, r.message);
    ck_assert_msg(starts_with(rest, " seconds."),
                  "unexpected wording: %s", r.message);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_overrun_warning_is_rate_limited)
{
    static const lsvc_class cls = PROBE_CLASS("OverOften", 0.01);
    struct probe p;
    probe_init(&p);
    p.slow_ns = 25 * NS_PER_MS;
    p.slow_runs = UINT64_MAX;
    log_capture();
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 5), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    lsvc_stats st;
    ck_assert_int_eq(lsvc_get_stats(svc, &st), 0);
    ck_assert_uint_eq(st.overruns, 5);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, OVERRUN_TEXT), 1);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = timed_tcase("errors");
    tcase_add_test(tc, test_failed_run_is_logged_with_name_and_code);
    tcase_add_test(tc, test_failed_runs_are_counted_and_the_loop_goes_on);
    tcase_add_test(tc, test_overrun_logs_warning_with_both_durations);
    tcase_add_test(tc, test_overrun_warning_is_rate_limited);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
