/*
 * What goes wrong in a run: a nonzero run_once result and a run longer
 * than the interval. Both are logged and counted, and the loop goes on.
 */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>

#define OVERRUN_TEXT "which is longer than its loop interval of"

/* Captures the log and runs the service `name` `loops` times: every run
 * returns run_code, and the first `slow_runs` take slow_ms. */
static struct fx *run_faulty(const char *name, double seconds, int run_code,
                             int64_t slow_ms, uint64_t slow_runs,
                             uint64_t loops)
{
    log_capture();
    struct fx *f = fx_new(name, seconds, NULL);
    f->p.run_code = run_code;
    f->p.slow_ns = slow_ms * NS_PER_MS;
    f->p.slow_runs = slow_runs;
    fx_run(f, loops);
    return f;
}

/* The first record at `level` that contains `text`, which must be there,
 * from the logger `logger`. */
static struct log_record record_of(int level, const char *text,
                                   const char *logger)
{
    struct log_record r;
    ck_assert_msg(log_find(0, level, text, &r),
                  "no record at level %d says \"%s\"", level, text);
    ck_assert_str_eq(r.logger, logger);
    return r;
}

START_TEST(test_failed_run_is_logged_with_name_and_code)
{
    run_faulty("FailSvc", 0.01, 173, 0, 0, 1);
    struct log_record r = record_of(LSVC_LOG_ERROR, "FailSvc",
                                    "loopsvc.failsvc");
    ck_assert_msg(strstr(r.message, "173") != NULL,
                  "the ERROR does not give the code: %s", r.message);
}
END_TEST

START_TEST(test_failed_runs_are_counted_and_the_loop_goes_on)
{
    struct fx *f = run_faulty("FailsOften", 0.01, -1, 0, 0, 3);
    ck_assert_uint_eq(f->p.runs, 3);
    lsvc_stats st = stats_of(f->svc);
    ck_assert_uint_eq(st.errors, 3);
    ck_assert_uint_eq(st.loops, 3);
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, "FailsOften"), 3);
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
    run_faulty("OverSvc", 0.05, 0, 120, 1, 2);
    struct log_record r = record_of(LSVC_LOG_WARNING, OVERRUN_TEXT,
                                    "loopsvc.oversvc");
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
}
END_TEST

START_TEST(test_overrun_warning_is_rate_limited)
{
    struct fx *f = run_faulty("OverOften", 0.01, 0, 25, UINT64_MAX, 5);
    ck_assert_uint_eq(stats_of(f->svc).overruns, 5);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, OVERRUN_TEXT), 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("errors");
    add_tests(s, "errors", (const TTest *[]){
        test_failed_run_is_logged_with_name_and_code,
        test_failed_runs_are_counted_and_the_loop_goes_on,
        test_overrun_logs_warning_with_both_durations,
        test_overrun_warning_is_rate_limited, NULL});
    return run_suite(s);
}
