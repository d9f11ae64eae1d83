/*
 * Logging: the default stderr sink's line, logger names, levels and
 * LOOPSVC_LOG_LEVEL, names with % in them, a sink that calls back into the
 * library, and the rate limiter behind the overrun warning.
 *
 * LOOPSVC_LOG_LEVEL is read at the library's first use; each test runs in
 * a fresh child of a runner that never calls the library, so setting it
 * first thing in a test is early enough.
 */
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MS NS_PER_MS

/* --- stderr ------------------------------------------------------------- */

/* stderr sent to a pipe, read back once the writers are done. */
struct stderr_pipe {
    int saved;
    int rd;
};

static void stderr_to_pipe(struct stderr_pipe *sp)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    sp->saved = dup(STDERR_FILENO);
    ck_assert_int_ge(sp->saved, 0);
    ck_assert_int_ge(dup2(fds[1], STDERR_FILENO), 0);
    close(fds[1]);
    sp->rd = fds[0];
    fcntl(sp->rd, F_SETFL, O_NONBLOCK);
}

/* Restores stderr and returns what was written to it. */
static size_t stderr_restore(struct stderr_pipe *sp, char *buf, size_t cap)
{
    dup2(sp->saved, STDERR_FILENO);
    close(sp->saved);
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(sp->rd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(sp->rd);
    return len;
}

static bool line_matches(const char *line, const char *pattern)
{
    regex_t re;
    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&re, line, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

#define STAMP "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}"

static bool stamped_today(const char *line)
{
    time_t now = time(NULL);
    struct tm local, utc;
    char a[16], b[16];
    localtime_r(&now, &local);
    gmtime_r(&now, &utc);
    strftime(a, sizeof(a), "%Y-%m-%d ", &local);
    strftime(b, sizeof(b), "%Y-%m-%d ", &utc);
    return strncmp(line, a, 11) == 0 || strncmp(line, b, 11) == 0;
}

/* Runs a service whose every run fails, `loops` times. */
static void run_failing(const char *name, uint64_t loops)
{
    lsvc_class cls = PROBE_CLASS(name, 0.01);
    struct probe p;
    probe_init(&p);
    p.run_code = 5;
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, loops), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}

START_TEST(test_default_sink_writes_the_documented_line)
{
    struct stderr_pipe sp;
    stderr_to_pipe(&sp);
    lsvc_set_logger(NULL, NULL);
    run_failing("CachePruner", 1);
    char out[4096];
    stderr_restore(&sp, out, sizeof(out));
    char *line = strstr(out, "| ERROR |");
    ck_assert_msg(line != NULL, "no ERROR line on stderr: %s", out);
    while (line > out && line[-1] != '\n')
        line--;
    char *nl = strchr(line, '\n');
    ck_assert_msg(nl != NULL, "the line does not end in a newline: %s", line);
    *nl = '\0';
    ck_assert_msg(line_matches(line, STAMP " \\| ERROR \\| "
                                     "loopsvc\\.cachepruner - [^\n]*CachePruner"),
                  "unexpected line: %s", line);
    ck_assert_msg(stamped_today(line), "not today's date: %s", line);
}
END_TEST

enum { WRITERS = 4, WRITER_LOOPS = 15 };

START_TEST(test_default_sink_lines_never_interleave)
{
    static const char *names[WRITERS] = {"WriterA", "WriterB", "WriterC",
                                         "WriterD"};
    struct stderr_pipe sp;
    stderr_to_pipe(&sp);
    struct probe p[WRITERS];
    lsvc_class cls[WRITERS];
    lsvc *svc[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        cls[i] = (lsvc_class)PROBE_CLASS(names[i], 0.01);
        probe_init(&p[i]);
        p[i].run_code = 1;
        svc[i] = make_service(&cls[i], &p[i], NULL);
    }
    for (int i = 0; i < WRITERS; i++)
        ck_assert_int_eq(lsvc_start(svc[i], WRITER_LOOPS), 0);
    for (int i = 0; i < WRITERS; i++) {
        ck_assert_int_eq(lsvc_join(svc[i], 10), 0);
        ck_assert_int_eq(lsvc_destroy(svc[i]), 0);
        probe_destroy(&p[i]);
    }
    static char out[60000];
    stderr_restore(&sp, out, sizeof(out));
    int errors = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        ck_assert_msg(line_matches(line, STAMP " \\| (DEBUG|INFO|WARNING|"
                                         "ERROR) \\| loopsvc(\\.[a-z]+)? - "),
                      "broken line: %s", line);
        errors += strstr(line, "| ERROR | loopsvc.writer") != NULL;
    }
    ck_assert_int_eq(errors, WRITERS * WRITER_LOOPS);
}
END_TEST

START_TEST(test_set_logger_null_restores_default_sink)
{
    log_capture();
    lsvc_set_logger(NULL, NULL);
    struct stderr_pipe sp;
    stderr_to_pipe(&sp);
    run_failing("BackToStderr", 1);
    char out[4096];
    stderr_restore(&sp, out, sizeof(out));
    ck_assert_msg(strstr(out, "| ERROR | loopsvc.backtostderr - ") != NULL,
                  "nothing on stderr: %s", out);
    ck_assert_uint_eq(log_size(), 0);
}
END_TEST

/* Longer than any line buffer a logger would keep on its stack. */
START_TEST(test_very_long_name_gives_whole_lines)
{
    static char name[3000];
    memset(name, 'N', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    struct stderr_pipe sp;
    stderr_to_pipe(&sp);
    run_failing(name, 1);
    static char out[60000];
    stderr_restore(&sp, out, sizeof(out));
    ck_assert_msg(strlen(out) > 0 && out[strlen(out) - 1] == '\n',
                  "output does not end a line");
    int errors = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        ck_assert_msg(line_matches(line, STAMP " \\| [A-Z]+ \\| loopsvc\\.nnn"),
                      "broken line: %.200s", line);
        errors += strstr(line, "| ERROR |") != NULL;
    }
    ck_assert_int_eq(errors, 1);
}
END_TEST

/* --- Logger names ------------------------------------------------------- */

START_TEST(test_logger_is_loopsvc_dot_lower_case_name)
{
    log_capture();
    run_failing("CachePruner", 1);
    struct log_record r;
    ck_assert(log_find(0, LSVC_LOG_ERROR, "CachePruner", &r));
    ck_assert_str_eq(r.logger, "loopsvc.cachepruner");
}
END_TEST

START_TEST(test_group_messages_use_the_loopsvc_logger)
{
    static const lsvc_class cls = PROBE_CLASS("Grouped", 60);
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    log_capture();
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    ck_assert_int_eq(lsvc_group_add(g, svc), 0);
    ck_assert_int_eq(lsvc_group_start(g), 0);
    ck_assert(sem_wait_for(&p.entered, 5));
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    ck_assert_int_eq(lsvc_group_wait(g), 0);
    struct log_record r;
    ck_assert(log_find(0, 0, "received SIGTERM", &r));
    ck_assert_str_eq(r.logger, "loopsvc");
    ck_assert_int_eq(lsvc_group_destroy(g), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* --- Levels ----------------------------------------------------------------- */

/* Runs one service twice: its runs fail and the first overruns, so it logs
 * at DEBUG (when enabled), WARNING and ERROR. */
static void run_noisy(const char *name)
{
    lsvc_class cls = PROBE_CLASS(name, 0.02);
    struct probe p;
    probe_init(&p);
    p.run_code = 9;
    p.slow_ns = 50 * MS;
    p.slow_runs = 1;
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 2), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}

START_TEST(test_level_defaults_to_info)
{
    unsetenv("LOOPSVC_LOG_LEVEL");
    log_capture();
    run_noisy("Quiet");
    ck_assert_uint_eq(log_count(LSVC_LOG_DEBUG, NULL), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, "Quiet"), 2);
    ck_assert_uint_ge(log_count(LSVC_LOG_WARNING, "Quiet"), 1);
}
END_TEST

START_TEST(test_debug_lines_mirror_the_seed)
{
    lsvc_set_log_level(LSVC_LOG_DEBUG);
    log_capture();
    static const lsvc_class cls = PROBE_CLASS("DbgSvc", 0.01);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 2), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_DEBUG, "About to run DbgSvc..."), 2);
    struct log_record r;
    ck_assert(log_find(0, LSVC_LOG_DEBUG, "About to run", &r));
    ck_assert_str_eq(r.message, "About to run DbgSvc...");
    ck_assert_str_eq(r.logger, "loopsvc.dbgsvc");
    ck_assert(log_find(0, LSVC_LOG_DEBUG, "Finished running", &r));
    ck_assert_msg(starts_with(r.message, "Finished running DbgSvc. Next run at "),
                  "unexpected wording: %s", r.message);
    ck_assert(log_find(0, LSVC_LOG_DEBUG, "exiting after", &r));
    ck_assert_str_eq(r.message, "DbgSvc exiting after 2 loop(s).");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_env_log_level_is_read_in_any_case)
{
    setenv("LOOPSVC_LOG_LEVEL", "dEbUg", 1);
    log_capture();
    run_noisy("EnvDebug");
    ck_assert_uint_eq(log_count(LSVC_LOG_DEBUG, "About to run EnvDebug..."),
                      2);
}
END_TEST

START_TEST(test_env_log_level_drops_lower_levels)
{
    setenv("LOOPSVC_LOG_LEVEL", "ERROR", 1);
    log_capture();
    run_noisy("EnvError");
    ck_assert_uint_eq(log_count(LSVC_LOG_DEBUG, NULL), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_INFO, NULL), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, "EnvError"), 2);
}
END_TEST

START_TEST(test_set_log_level_overrides_env_before_first_use)
{
    setenv("LOOPSVC_LOG_LEVEL", "DEBUG", 1);
    lsvc_set_log_level(LSVC_LOG_WARNING);
    log_capture();
    run_noisy("SetFirst");
    ck_assert_uint_eq(log_count(LSVC_LOG_DEBUG, NULL), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_INFO, NULL), 0);
    ck_assert_uint_ge(log_count(LSVC_LOG_WARNING, "SetFirst"), 1);
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, "SetFirst"), 2);
}
END_TEST

START_TEST(test_set_log_level_overrides_env_after_first_use)
{
    setenv("LOOPSVC_LOG_LEVEL", "ERROR", 1);
    log_capture();
    run_noisy("SetLater");
    ck_assert_uint_eq(log_count(LSVC_LOG_DEBUG, NULL), 0);
    lsvc_set_log_level(LSVC_LOG_DEBUG);
    run_noisy("SetLater");
    ck_assert_uint_eq(log_count(LSVC_LOG_DEBUG, "About to run SetLater..."),
                      2);
}
END_TEST

/* --- Names with % ----------------------------------------------------------- */

#define PERCENT_NAME "50%off%s%n"

START_TEST(test_percent_in_name_reaches_the_sink_verbatim)
{
    lsvc_set_log_level(LSVC_LOG_DEBUG);
    log_capture();
    run_failing(PERCENT_NAME, 1);
    struct log_record r;
    ck_assert(log_find(0, LSVC_LOG_ERROR, PERCENT_NAME, &r));
    ck_assert_str_eq(r.logger, "loopsvc." PERCENT_NAME);
    ck_assert(log_find(0, LSVC_LOG_DEBUG, "About to run", &r));
    ck_assert_str_eq(r.message, "About to run " PERCENT_NAME "...");
    ck_assert(log_find(0, LSVC_LOG_DEBUG, "exiting after", &r));
    ck_assert_str_eq(r.message, PERCENT_NAME " exiting after 1 loop(s).");
}
END_TEST

START_TEST(test_percent_in_name_reaches_stderr_verbatim)
{
    struct stderr_pipe sp;
    stderr_to_pipe(&sp);
    lsvc_set_logger(NULL, NULL);
    run_failing(PERCENT_NAME, 1);
    char out[4096];
    stderr_restore(&sp, out, sizeof(out));
    ck_assert_msg(strstr(out, "| ERROR | loopsvc." PERCENT_NAME " - ") != NULL,
                  "logger name changed: %s", out);
    char *msg = strstr(out, " - ");
    ck_assert(msg != NULL && strstr(msg, PERCENT_NAME) != NULL);
}
END_TEST

/* --- Sinks that call back into the library ------------------------------ */

/*
 * A sink that uses the library the way a real one might: stats for a
 * metrics line, and a group stop on a group message. A sink called with a
 * library lock held deadlocks here, and the test times out.
 */
struct reentry {
    lsvc *svc;
    lsvc_group *g;
};

static void reentrant_sink(int level, const char *logger, const char *message,
                           void *ctx)
{
    struct reentry *re = ctx;
    lsvc_stats st;
    struct timespec ts;
    lsvc_get_stats(re->svc, &st);
    (void)lsvc_is_running(re->svc);
    (void)lsvc_scheduled_start(re->svc, &ts);
    if (re->g != NULL && strcmp(logger, "loopsvc") == 0)
        lsvc_group_stop(re->g);
    log_capture_sink(level, logger, message, NULL);
}

static void stop_inside(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)p;
    if (run == 1)
        lsvc_stop(svc, true);
}

START_TEST(test_sink_may_call_back_into_a_service)
{
    static const lsvc_class cls = PROBE_CLASS("Reentry", 0.02);
    struct reentry re = {0};
    lsvc_set_log_level(LSVC_LOG_DEBUG);
    log_capture();
    lsvc_set_logger(reentrant_sink, &re);
    struct probe p;
    probe_init(&p);
    p.run_code = 3;
    p.slow_ns = 50 * MS;
    p.slow_runs = 1;
    p.during = stop_inside;
    re.svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(re.svc, 0), 0);
    ck_assert_int_eq(lsvc_join(re.svc, 10), 0);
    ck_assert_uint_ge(log_count(LSVC_LOG_DEBUG, "Reentry"), 1);
    ck_assert_uint_ge(log_count(LSVC_LOG_WARNING, "Reentry"), 2);
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, "Reentry"), 2);

    /* A blocking stop that times out logs from the stopping thread. */
    p.during = NULL;
    probe_hold(&p);
    while (sem_trywait(&p.entered) == 0) {
    }
    ck_assert_int_eq(lsvc_start(re.svc, 0), 0);
    ck_assert(sem_wait_for(&p.entered, 5));
    size_t from = log_size();
    ck_assert_int_eq(lsvc_stop_timeout(re.svc, 0.05), ETIMEDOUT);
    ck_assert(log_find(from, LSVC_LOG_WARNING, "Reentry", NULL));
    probe_release(&p);
    ck_assert_int_eq(lsvc_join(re.svc, 10), 0);
    ck_assert_int_eq(lsvc_destroy(re.svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_sink_may_call_back_into_a_group)
{
    static const lsvc_class cls = PROBE_CLASS("GroupReentry", 60);
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    struct reentry re = {0};
    log_capture();
    struct probe p;
    probe_init(&p);
    re.svc = make_service(&cls, &p, NULL);
    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    ck_assert_int_eq(lsvc_group_add(g, re.svc), 0);
    re.g = g;
    lsvc_set_logger(reentrant_sink, &re);
    ck_assert_int_eq(lsvc_group_start(g), 0);
    ck_assert(sem_wait_for(&p.entered, 5));
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    ck_assert_int_eq(lsvc_group_wait(g), 0);
    ck_assert(log_find(0, 0, "received SIGTERM", NULL));
    lsvc_set_logger(NULL, NULL);
    ck_assert_int_eq(lsvc_group_destroy(g), 0);
    ck_assert_int_eq(lsvc_destroy(re.svc), 0);
    probe_destroy(&p);
}
END_TEST

/* --- Rate limiter --------------------------------------------------------- */

START_TEST(test_ratelimit_admits_the_first_event)
{
    struct lsvc_ratelimit rl;
    lsvc__ratelimit_init(&rl, 60 * NS_PER_S);
    uint64_t suppressed = 99;
    /* Even at time 0, which a "last event" timestamp alone cannot tell
     * from "never". */
    ck_assert(lsvc__ratelimit_admit(&rl, 0, &suppressed));
    ck_assert_uint_eq(suppressed, 0);
    ck_assert(!lsvc__ratelimit_admit(&rl, 1, &suppressed));
}
END_TEST

START_TEST(test_ratelimit_admits_one_per_period_and_counts_the_rest)
{
    const int64_t period = 60 * NS_PER_S, t0 = 5 * NS_PER_S;
    struct lsvc_ratelimit rl;
    lsvc__ratelimit_init(&rl, period);
    uint64_t suppressed = 99;
    ck_assert(lsvc__ratelimit_admit(&rl, t0, &suppressed));
    ck_assert_uint_eq(suppressed, 0);
    ck_assert(!lsvc__ratelimit_admit(&rl, t0 + 1, &suppressed));
    ck_assert(!lsvc__ratelimit_admit(&rl, t0 + 30 * NS_PER_S, &suppressed));
    ck_assert(!lsvc__ratelimit_admit(&rl, t0 + period - 1, &suppressed));
    ck_assert(lsvc__ratelimit_admit(&rl, t0 + period + 1, &suppressed));
    ck_assert_uint_eq(suppressed, 3);
    /* The period runs from the event admitted last. */
    const int64_t t1 = t0 + period + 1;
    ck_assert(!lsvc__ratelimit_admit(&rl, t1 + period - 1, &suppressed));
    ck_assert(lsvc__ratelimit_admit(&rl, t1 + period + 1, &suppressed));
    ck_assert_uint_eq(suppressed, 1);
    ck_assert(lsvc__ratelimit_admit(&rl, t1 + 10 * period, &suppressed));
    ck_assert_uint_eq(suppressed, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *sink = timed_tcase("sinks");
    tcase_add_test(sink, test_default_sink_writes_the_documented_line);
    tcase_add_test(sink, test_default_sink_lines_never_interleave);
    tcase_add_test(sink, test_set_logger_null_restores_default_sink);
    tcase_add_test(sink, test_very_long_name_gives_whole_lines);
    tcase_add_test(sink, test_logger_is_loopsvc_dot_lower_case_name);
    tcase_add_test(sink, test_group_messages_use_the_loopsvc_logger);
    tcase_add_test(sink, test_percent_in_name_reaches_the_sink_verbatim);
    tcase_add_test(sink, test_percent_in_name_reaches_stderr_verbatim);
    tcase_add_test(sink, test_sink_may_call_back_into_a_service);
    tcase_add_test(sink, test_sink_may_call_back_into_a_group);
    suite_add_tcase(s, sink);

    TCase *levels = timed_tcase("levels");
    tcase_add_test(levels, test_level_defaults_to_info);
    tcase_add_test(levels, test_debug_lines_mirror_the_seed);
    tcase_add_test(levels, test_env_log_level_is_read_in_any_case);
    tcase_add_test(levels, test_env_log_level_drops_lower_levels);
    tcase_add_test(levels, test_set_log_level_overrides_env_before_first_use);
    tcase_add_test(levels, test_set_log_level_overrides_env_after_first_use);
    suite_add_tcase(s, levels);

    TCase *rl = timed_tcase("rate limiter");
    tcase_add_test(rl, test_ratelimit_admits_the_first_event);
    tcase_add_test(rl, test_ratelimit_admits_one_per_period_and_counts_the_rest);
    suite_add_tcase(s, rl);
    return run_suite(s);
}
