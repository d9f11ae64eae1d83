/*
 * The README's example program, run as a user runs it: started, stopped
 * with a signal once its services are up, and expected to exit 0 having
 * logged the stop. LSVC_EXAMPLE names the binary.
 */
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Whether some line of text holds both words of ctx. */
static bool has_line_with(const char *text, const void *ctx)
{
    const char *const *words = ctx;
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof(buf), "%.*s", (int)n, line);
        if (strstr(buf, words[0]) && strstr(buf, words[1]))
            return true;
        line += n + (end != NULL);
    }
    return false;
}

static void check_signal_stops_example(int sig, const char *logged)
{
    static const char *const started[] = {"CacheExpirer", "started"};
    const char *path = getenv("LSVC_EXAMPLE");
    ck_assert_msg(path != NULL && *path, "LSVC_EXAMPLE is not set");
    struct child *ex = test_alloc(sizeof(*ex));
    child_spawn(ex, path, NULL, STDERR_FILENO);
    if (!child_read_until(ex, has_line_with, started, 10)) {
        kill(ex->pid, SIGKILL);
        waitpid(ex->pid, NULL, 0);
        ck_abort_msg("the example did not start its services: %s", ex->text);
    }
    ck_assert_int_eq(kill(ex->pid, sig), 0);
    bool ended = child_read_until(ex, NULL, NULL, 10);
    if (!ended)
        kill(ex->pid, SIGKILL);
    int status = 0;
    ck_assert_int_eq(waitpid(ex->pid, &status, 0), ex->pid);
    close(ex->fd);
    ck_assert_msg(ended, "the example still ran 10 s after the signal: %s",
                  ex->text);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the example ended with status 0x%x: %s", status, ex->text);
    ck_assert_msg(strstr(ex->text, logged) != NULL, "no \"%s\" in: %s",
                  logged, ex->text);
}

START_TEST(test_example_stops_on_sigterm)
{
    check_signal_stops_example(SIGTERM,
                               "received SIGTERM: stopping 2 services");
}
END_TEST

START_TEST(test_example_stops_on_sigint)
{
    check_signal_stops_example(SIGINT, "received SIGINT: stopping 2 services");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("example");
    add_tests(s, "example", (const TTest *[]){
        test_example_stops_on_sigterm, test_example_stops_on_sigint, NULL});
    return run_suite(s);
}
