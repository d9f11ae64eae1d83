/*
 * The README's example program, run as a user runs it: started, stopped
 * with a signal once its services are up, and expected to exit 0 having
 * logged the stop. LSVC_EXAMPLE names the binary.
 */
#include "helpers.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

struct example {
    pid_t pid;
    int err; /* read end of the example's stderr */
    bool eof;
    size_t len;
    char out[64 * 1024];
};

static void example_spawn(struct example *ex)
{
    const char *path = getenv("LSVC_EXAMPLE");
    ck_assert_msg(path != NULL && *path, "LSVC_EXAMPLE is not set");
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    memset(ex, 0, sizeof(*ex));
    ex->pid = fork();
    ck_assert_int_ge(ex->pid, 0);
    if (ex->pid == 0) {
        /* The example must set up its own signal mask, as a program
         * started from a shell would. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(path, path, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    ex->err = fds[0];
}

/* Whether some line of the output holds both words. */
static bool has_line_with(const struct example *ex, const char *a,
                          const char *b)
{
    const char *line = ex->out;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof(buf), "%.*s", (int)n, line);
        if (strstr(buf, a) && strstr(buf, b))
            return true;
        line += n + (end != NULL);
    }
    return false;
}

/* Reads the example's stderr until the line with both words shows up
 * (a == NULL: until end of file), for at most `seconds`. */
static bool example_read_until(struct example *ex, const char *a,
                               const char *b, double seconds)
{
    int64_t start = now_ns();
    for (;;) {
        if (a != NULL ? has_line_with(ex, a, b) : ex->eof)
            return true;
        if (ex->eof)
            return false;
        int left_ms = (int)((seconds - seconds_since(start)) * 1000);
        if (left_ms <= 0)
            return false;
        struct pollfd pfd = {.fd = ex->err, .events = POLLIN};
        int rc = poll(&pfd, 1, left_ms);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return false;
        ssize_t n = read(ex->err, ex->out + ex->len,
                         sizeof(ex->out) - 1 - ex->len);
        if (n <= 0) {
            ex->eof = true;
        } else {
            ex->len += (size_t)n;
            ex->out[ex->len] = '\0';
        }
    }
}

static void check_signal_stops_example(int sig, const char *logged)
{
    struct example ex;
    example_spawn(&ex);
    if (!example_read_until(&ex, "CacheExpirer", "started", 10)) {
        kill(ex.pid, SIGKILL);
        waitpid(ex.pid, NULL, 0);
        ck_abort_msg("the example did not start its services: %s", ex.out);
    }
    ck_assert_int_eq(kill(ex.pid, sig), 0);
    bool ended = example_read_until(&ex, NULL, NULL, 10);
    if (!ended)
        kill(ex.pid, SIGKILL);
    int status = 0;
    ck_assert_int_eq(waitpid(ex.pid, &status, 0), ex.pid);
    close(ex.err);
    ck_assert_msg(ended, "the example still ran 10 s after the signal: %s",
                  ex.out);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the example ended with status 0x%x: %s", status, ex.out);
    ck_assert_msg(strstr(ex.out, logged) != NULL, "no \"%s\" in: %s", logged,
                  ex.out);
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
    TCase *tc = timed_tcase("example");
    tcase_add_test(tc, test_example_stops_on_sigterm);
    tcase_add_test(tc, test_example_stops_on_sigint);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
