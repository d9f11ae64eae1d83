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

/* Runs a service of 10 ms whose every run fails with run_code, `loops`
 * times, and frees it. */
static void run_failing_with(const char *name, int run_code, uint64_t loops)
{
    struct fx *f = fx_new(name, 0.01, NULL);
    f->p.run_code = run_code;
    fx_run(f, loops);
    fx_free(f);
}

/* The same with run_code 5. */
static void run_failing(const char *name, uint64_t loops)
{
    run_failing_with(name, 5, loops);
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
    struct fx *f[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        f[i] = fx_new(names[i], 0.01, NULL);
        f[i]->p.run_code = 1;
    }
    for (int i = 0; i < WRITERS; i++)
        fx_start(f[i], WRITER_LOOPS);
    for (int i = 0; i < WRITERS; i++) {
        ck_assert_int_eq(lsvc_join(f[i]->svc, 10), 0);
        fx_free(f[i]);
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

/* A group of one service, `name`, with signals blocked as a program
 * blocks them, stopped by a SIGTERM once it runs. Calls before(g, ctx)
 * once the group is made. */
static void stop_group_by_sigterm(const char *name,
                                  void (*before)(lsvc_group *g, lsvc *svc,
                                                 void *ctx),
                                  void *ctx)
{
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    log_capture_info(); /* "received SIGTERM" is an INFO line */
    struct gfx *g = gfx_new();
    gfx_add(g, name, 60, NULL);
    if (before != NULL)
        before(g->g, g->m[0].svc, ctx);
    gfx_start(g);
    gfx_wait_first_runs(g);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    ck_assert_int_eq(lsvc_group_wait(g->g), 0);
}

START_TEST(test_group_messages_use_the_loopsvc_logger)
{
    stop_group_by_sigterm("Grouped", NULL, NULL);
    struct log_record r;
    ck_assert(log_find(0, 0, "received SIGTERM", &r));
    ck_assert_str_eq(r.logger, "loopsvc");
}
END_TEST

/* --- Levels ----------------------------------------------------------------- */

/* A service of 20 ms whose runs fail with run_code and whose first run
 * takes 50 ms: an overrun. */
static struct fx *noisy(const char *name, int run_code)
{
    struct fx *f = fx_new(name, 0.02, NULL);
    f->p.run_code = run_code;
    f->p.slow_ns = 50 * MS;
    f->p.slow_runs = 1;
    return f;
}

/* Runs a noisy service twice, so that it logs at DEBUG (when enabled),
 * WARNING and ERROR, and frees it. */
static void run_noisy(const char *name)
{
    struct fx *f = noisy(name, 9);
    fx_run(f, 2);
    fx_free(f);
}

START_TEST(test_debug_lines_mirror_the_seed)
{
    lsvc_set_log_level(LSVC_LOG_DEBUG);
    log_capture();
    run_failing_with("DbgSvc", 0, 2);
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
}
END_TEST

/* What reaches the sink, by LOOPSVC_LOG_LEVEL (NULL: unset) and a call of
 * lsvc_set_log_level before the library's first use (0: none): every
 * level from `lowest` on, and none below. */
static const struct {
    const char *what;
    const char *env;
    int set;
    const char *name;
    int lowest;
} levels[] = {
    {"the level defaults to WARNING", NULL, 0, "Quiet", LSVC_LOG_WARNING},
    {"LOOPSVC_LOG_LEVEL=INFO raises it", "INFO", 0, "EnvInfo", LSVC_LOG_INFO},
    {"LOOPSVC_LOG_LEVEL is read in any case", "dEbUg", 0, "EnvDebug",
     LSVC_LOG_DEBUG},
    {"LOOPSVC_LOG_LEVEL drops the lower levels", "ERROR", 0, "EnvError",
     LSVC_LOG_ERROR},
    {"lsvc_set_log_level before the first use overrides LOOPSVC_LOG_LEVEL",
     "DEBUG", LSVC_LOG_WARNING, "SetFirst", LSVC_LOG_WARNING},
};

/* The line a run of the service `name` logs at DEBUG. */
static size_t about_to_run_lines(const char *name)
{
    char line[64];
    snprintf(line, sizeof(line), "About to run %s...", name);
    return log_count(LSVC_LOG_DEBUG, line);
}

START_TEST(test_log_level_decides_what_reaches_the_sink)
{
    const char *name = levels[_i].name;
    if (levels[_i].env != NULL)
        setenv("LOOPSVC_LOG_LEVEL", levels[_i].env, 1);
    else
        unsetenv("LOOPSVC_LOG_LEVEL");
    if (levels[_i].set != 0)
        lsvc_set_log_level(levels[_i].set);
    log_capture();
    run_noisy(name);
    for (int level = LSVC_LOG_DEBUG; level < LSVC_LOG_ERROR; level += 10) {
        if (level >= levels[_i].lowest)
            ck_assert_msg(log_count(level, name) >= 1,
                          "%s: no record of %s at level %d", levels[_i].what,
                          name, level);
        else
            ck_assert_msg(log_count(level, NULL) == 0,
                          "%s: %zu records at level %d", levels[_i].what,
                          log_count(level, NULL), level);
    }
    ck_assert_uint_eq(about_to_run_lines(name),
                      levels[_i].lowest == LSVC_LOG_DEBUG ? 2 : 0);
    /* Its two runs fail. */
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, name), 2);
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
    ck_assert_uint_eq(about_to_run_lines("SetLater"), 2);
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
    static struct reentry re;
    lsvc_set_log_level(LSVC_LOG_DEBUG);
    log_capture();
    lsvc_set_logger(reentrant_sink, &re);
    struct fx *f = noisy("Reentry", 3);
    f->p.during = stop_inside;
    re.svc = f->svc;
    fx_run(f, 0);
    ck_assert_uint_ge(log_count(LSVC_LOG_DEBUG, "Reentry"), 1);
    ck_assert_uint_ge(log_count(LSVC_LOG_WARNING, "Reentry"), 2);
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, "Reentry"), 2);

    /* A blocking stop that times out logs from the stopping thread. */
    f->p.during = NULL;
    sem_drain(&f->p.entered);
    fx_start_held(f);
    size_t from = log_size();
    ck_assert_int_eq(lsvc_stop_timeout(re.svc, 0.05), ETIMEDOUT);
    ck_assert(log_find(from, LSVC_LOG_WARNING, "Reentry", NULL));
    probe_release(&f->p);
    ck_assert_int_eq(lsvc_join(re.svc, 10), 0);
    fx_free(f);
}
END_TEST

/* Makes the group's messages go through the reentrant sink. */
static void sink_reenters(lsvc_group *g, lsvc *svc, void *ctx)
{
    struct reentry *re = ctx;
    re->svc = svc;
    re->g = g;
    lsvc_set_logger(reentrant_sink, re);
}

START_TEST(test_sink_may_call_back_into_a_group)
{
    static struct reentry re;
    stop_group_by_sigterm("GroupReentry", sink_reenters, &re);
    ck_assert(log_find(0, 0, "received SIGTERM", NULL));
    lsvc_set_logger(NULL, NULL);
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
    add_tests(s, "sinks", (const TTest *[]){
        test_default_sink_writes_the_documented_line,
        test_default_sink_lines_never_interleave,
        test_set_logger_null_restores_default_sink,
        test_very_long_name_gives_whole_lines,
        test_logger_is_loopsvc_dot_lower_case_name,
        test_group_messages_use_the_loopsvc_logger,
        test_percent_in_name_reaches_the_sink_verbatim,
        test_percent_in_name_reaches_stderr_verbatim,
        test_sink_may_call_back_into_a_service,
        test_sink_may_call_back_into_a_group, NULL});
    TCase *lv = add_tests(s, "levels", (const TTest *[]){
        test_debug_lines_mirror_the_seed,
        test_set_log_level_overrides_env_after_first_use, NULL});
    tcase_add_loop_test(lv, test_log_level_decides_what_reaches_the_sink, 0,
                        (int)(sizeof(levels) / sizeof(levels[0])));
    add_tests(s, "rate limiter", (const TTest *[]){
        test_ratelimit_admits_the_first_event,
        test_ratelimit_admits_one_per_period_and_counts_the_rest, NULL});
    return run_suite(s);
}
