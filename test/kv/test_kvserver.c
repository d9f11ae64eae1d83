/*
 * kvserver run as its users run it: started on a free port, driven over
 * loopback by concurrent clients and by hostile ones, stopped with a
 * signal, and expected to exit 0 with main as its last thread; and as
 * its operators run it: status, wakes, pauses, resumes and intervals
 * through loopsvcctl and the control socket, whose effects show in the
 * metrics, and /metrics and /healthz over HTTP. KVSERVER and LOOPSVCCTL
 * name the binaries.
 *
 * Bounds on time are wide (seconds where milliseconds are expected), for
 * loaded machines and for valgrind, which runs this file but not the
 * server it starts.
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The server's limits, as kvserver.c sets them. */
#define MAX_LINE 4096
#define MAX_KEY 250
#define MAX_CONNS 64
#define SWEEP_SECONDS 0.1 /* kv-expiry's interval */
#define HTTP_MAX_REQUEST 4096
#define METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
/* Bytes of a long text (metrics) that a failure shows: Check refuses a
 * message of 4 KiB or more. */
#define SHOWN 2048

#define REPLY_SECONDS 10.0 /* the longest a reply may take */
#define STOP_SECONDS 20.0  /* from the signal to the server's exit */
#define SLACK_SECONDS 2.0  /* on top of when something is due */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* --- The server process ------------------------------------------------- */

struct server {
    struct child c; /* its stdout */
    unsigned port;
    /* With operations (server_start_with(s, true)): */
    unsigned http_port;
    char dir[32];     /* a directory of its own, for... */
    char socket[64];  /* ...its control socket; "" without operations */
    struct child out; /* the last loopsvcctl run's or HTTP answer's text */
};

/* Whether text holds a whole line that begins with prefix. */
static bool has_line(const char *text, const void *prefix)
{
    const char *line = strstr(text, prefix);

    return line != NULL && strchr(line, '\n') != NULL;
}

/* Reads the port printed after `prefix` on a line of the server's. */
static bool read_port(const struct server *s, const char *prefix,
                      unsigned *port)
{
    const char *line = strstr(s->c.text, prefix);

    return line != NULL && sscanf(line + strlen(prefix), "%u\n", port) == 1 &&
           *port != 0;
}

/* Starts the server on a free port and reads which one it took; with
 * `ops`, also the free port it took for HTTP, and a control socket in a
 * directory of its own. */
static void server_start_with(struct server *s, bool ops)
{
    const char *path = getenv("KVSERVER");
    const char *argv[8] = {path};
    int argc = 1;

    ck_assert_msg(path != NULL && *path, "KVSERVER is not set");
    /* The library speaks to systemd when these are set: not for a server
     * started by a test. This test runs in its own process. */
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    s->port = s->http_port = 0;
    s->dir[0] = s->socket[0] = '\0';
    if (ops) {
        snprintf(s->dir, sizeof s->dir, "/tmp/kvserver-test.XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(s->dir));
        snprintf(s->socket, sizeof s->socket, "%s/control.sock", s->dir);
        argv[argc++] = "-m";
        argv[argc++] = "0";
        argv[argc++] = "-c";
        argv[argc++] = s->socket;
    }
    argv[argc++] = "0";
    argv[argc] = NULL;
    child_spawn_argv(&s->c, argv, STDOUT_FILENO);

    /* Its last line, once every door is open. */
    const char *last = ops ? "http on 127.0.0.1:" : "listening on 127.0.0.1:";
    if (!child_read_until(&s->c, has_line, last, REPLY_SECONDS) ||
        !read_port(s, "listening on 127.0.0.1:", &s->port) ||
        (ops && !read_port(s, "http on 127.0.0.1:", &s->http_port))) {
        kill(s->c.pid, SIGKILL);
        waitpid(s->c.pid, NULL, 0);
        ck_abort_msg("the server did not print \"%s<port>\": \"%s\"", last,
                     s->c.text);
    }
}

static void server_start(struct server *s)
{
    server_start_with(s, false);
}

/* Threads of the server process (Linux: /proc/<pid>/task). */
static int server_threads(const struct server *s)
{
    char path[64];
    int n = 0;

    snprintf(path, sizeof path, "/proc/%ld/task", (long)s->c.pid);
    DIR *dir = opendir(path);
    ck_assert_ptr_nonnull(dir);
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n;
}

/* Polls: the services start as the server begins to listen. */
static void wait_server_threads(const struct server *s, int n)
{
    int64_t start = now_ns();
    int now;

    while ((now = server_threads(s)) < n &&
           seconds_since(start) < REPLY_SECONDS)
        sleep_ms(5);
    ck_assert_msg(now >= n, "the server has %d threads, not at least %d", now,
                  n);
}

/* Sends sig and expects a clean exit: status 0 and no thread left but
 * main. Gives up after STOP_SECONDS, with SIGKILL. */
static void server_stop(struct server *s, int sig)
{
    int64_t start = now_ns();
    int status = 0;
    pid_t got;

    ck_assert_int_eq(kill(s->c.pid, sig), 0);
    child_read_until(&s->c, NULL, NULL, STOP_SECONDS);
    while ((got = waitpid(s->c.pid, &status, WNOHANG)) == 0 &&
           seconds_since(start) < STOP_SECONDS)
        sleep_ms(10);
    if (got == 0) {
        kill(s->c.pid, SIGKILL);
        waitpid(s->c.pid, &status, 0);
    }
    close(s->c.fd);
    /* The server removes its control socket as it ends; the directory is
     * the test's to remove, whatever happened. */
    bool socket_left = s->dir[0] != '\0' && access(s->socket, F_OK) == 0;
    if (s->dir[0] != '\0') {
        unlink(s->socket);
        rmdir(s->dir);
    }
    ck_assert_msg(got == s->c.pid, "the server still ran %g s after signal %d",
                  STOP_SECONDS, sig);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the server ended with status 0x%x; its output: %s", status,
                  s->c.text);
    ck_assert_msg(strstr(s->c.text, "\nthreads at exit: 1\n") != NULL,
                  "no \"threads at exit: 1\" in: %s", s->c.text);
    ck_assert_msg(!socket_left, "the control socket %s was still there",
                  s->socket);
}

/* --- Clients ------------------------------------------------------------ */

struct client {
    int fd;
    size_t len;
    char in[2 * MAX_LINE]; /* received, not yet taken as replies */
    char reply[2 * MAX_LINE];
};

/* Returns 0 or an errno value. rcvbuf: the receive buffer's size, or 0
 * for the system's. */
static int client_open_with(struct client *c, unsigned port, int rcvbuf)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port)};

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return errno;
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int err = errno;
        close(c->fd);
        return err;
    }
    return 0;
}

static void client_open(struct client *c, unsigned port)
{
    int rc = client_open_with(c, port, 0);
    ck_assert_msg(rc == 0, "cannot connect to port %u: %s", port,
                  strerror(rc));
}

static void client_close(struct client *c)
{
    close(c->fd);
    c->fd = -1;
}

static bool client_send(struct client *c, const void *data, size_t len)
{
    for (size_t sent = 0; sent < len;) {
        ssize_t n = send(c->fd, (const char *)data + sent, len - sent,
                         MSG_NOSIGNAL);
        if (n > 0)
            sent += (size_t)n;
        else if (n == 0 || errno != EINTR)
            return false;
    }
    return true;
}

/* Reads bytes for at most REPLY_SECONDS: > 0 read, 0 end of stream,
 * -1 error or time out. */
static ssize_t client_recv(struct client *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int rc;

    while ((rc = poll(&pfd, 1, (int)(REPLY_SECONDS * 1000))) < 0 &&
           errno == EINTR) {
    }
    if (rc <= 0 || c->len == sizeof c->in)
        return -1;
    ssize_t n;
    while ((n = recv(c->fd, c->in + c->len, sizeof c->in - c->len, 0)) < 0 &&
           errno == EINTR) {
    }
    if (n > 0)
        c->len += (size_t)n;
    return n;
}

/* Takes the next reply line, without its '\n', into c->reply. */
static bool client_reply(struct client *c)
{
    char *nl;

    while ((nl = memchr(c->in, '\n', c->len)) == NULL)
        if (client_recv(c) <= 0)
            return false;
    size_t n = (size_t)(nl - c->in);
    memcpy(c->reply, c->in, n);
    c->reply[n] = '\0';
    c->len -= n + 1;
    memmove(c->in, nl + 1, c->len);
    return true;
}

/* Whether the server closed the connection, with nothing more said. */
static bool client_sees_end(struct client *c)
{
    return c->len == 0 && client_recv(c) == 0;
}

/* Sends one request line and returns its reply, or NULL when the
 * connection failed or the reply did not come in time. */
static const char *client_vcall(struct client *c, const char *fmt, va_list ap)
{
    char line[2 * MAX_LINE];
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);

    if (n < 0 || (size_t)n >= sizeof line - 1)
        return NULL;
    line[n++] = '\n';
    if (!client_send(c, line, (size_t)n) || !client_reply(c))
        return NULL;
    return c->reply;
}

static const char *call_or_null(struct client *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    const char *reply = client_vcall(c, fmt, ap);
    va_end(ap);
    return reply;
}

/* The same, failing the test when no reply comes. */
static const char *call(struct client *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    const char *reply = client_vcall(c, fmt, ap);
    va_end(ap);
    ck_assert_msg(reply != NULL, "no reply to \"%s\"", fmt);
    return reply;
}

/* Sends raw bytes, which may hold anything, and returns the next reply. */
static const char *call_raw(struct client *c, const void *data, size_t len)
{
    ck_assert(client_send(c, data, len));
    ck_assert_msg(client_reply(c), "no reply to a raw request of %zu bytes",
                  len);
    return c->reply;
}

struct stats {
    unsigned long long keys, expired, connections;
};

static struct stats server_stats(struct client *c)
{
    struct stats st;
    const char *r = call(c, "STATS");

    ck_assert_msg(sscanf(r, "STATS keys=%llu expired=%llu connections=%llu",
                         &st.keys, &st.expired, &st.connections) == 3,
                  "STATS replied \"%s\"", r);
    return st;
}

/* Polls STATS until connections == n: the server counts a connection out
 * once it saw the client leave. */
static void wait_connections(struct client *c, unsigned long long n)
{
    int64_t start = now_ns();
    struct stats st;

    while ((st = server_stats(c)).connections != n &&
           seconds_since(start) < REPLY_SECONDS)
        sleep_ms(5);
    ck_assert_msg(st.connections == n, "%llu connections open, not %llu",
                  st.connections, n);
}

/* --- Many clients at once ----------------------------------------------- */

#define WORKERS 8
#define ROUNDS 300
#define WORKER_KEYS 16

struct worker {
    pthread_t thread;
    unsigned port;
    int id;
    int live;        /* its keys still stored at the end */
    char error[512]; /* the first thing that went wrong; empty if none */
};

/* One request and the reply it must get; a miss is kept in w->error, as
 * Check's assertions belong to the test's own thread. */
static void expect(struct worker *w, struct client *c, const char *want,
                   const char *fmt, ...)
{
    char request[256];
    va_list ap;

    if (w->error[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(request, sizeof request, fmt, ap);
    va_end(ap);
    const char *reply = call_or_null(c, "%s", request);
    if (reply == NULL)
        snprintf(w->error, sizeof w->error,
                 "worker %d: no reply to \"%s\"", w->id, request);
    else if (strcmp(reply, want) != 0)
        snprintf(w->error, sizeof w->error,
                 "worker %d: \"%s\" got \"%s\", not \"%s\"", w->id, request,
                 reply, want);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    bool live[WORKER_KEYS] = {false};
    struct client c;

    if (client_open_with(&c, w->port, 0) != 0) {
        snprintf(w->error, sizeof w->error, "worker %d cannot connect", w->id);
        return NULL;
    }
    for (int i = 0; i < ROUNDS && w->error[0] == '\0'; i++) {
        int k = i % WORKER_KEYS;
        char value[64], want[80];

        snprintf(value, sizeof value, "value %d of worker %d", i, w->id);
        snprintf(want, sizeof want, "VALUE %s", value);
        expect(w, &c, "OK", "SET w%d-k%d 0 %s", w->id, k, value);
        expect(w, &c, want, "GET w%d-k%d", w->id, k);
        live[k] = true;
        if (i % 7 == 3) {
            expect(w, &c, "DELETED", "DEL w%d-k%d", w->id, k);
            expect(w, &c, "NOTFOUND", "GET w%d-k%d", w->id, k);
            live[k] = false;
        }
    }
    client_close(&c);
    for (int k = 0; k < WORKER_KEYS; k++)
        w->live += live[k];
    return NULL;
}

START_TEST(test_concurrent_clients_get_their_own_values)
{
    struct worker workers[WORKERS];
    struct server s;
    struct client c;
    unsigned long long live = 0;

    server_start(&s);
    client_open(&c, s.port);
    for (int i = 0; i < WORKERS; i++) {
        workers[i] = (struct worker){.port = s.port, .id = i};
        ck_assert_int_eq(
            pthread_create(&workers[i].thread, NULL, work, &workers[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(workers[i].thread, NULL);
    for (int i = 0; i < WORKERS; i++) {
        ck_assert_msg(workers[i].error[0] == '\0', "%s", workers[i].error);
        live += (unsigned long long)workers[i].live;
    }

    ck_assert_uint_eq(server_stats(&c).keys, live);
    wait_connections(&c, 1);
    client_close(&c);
    server_stop(&s, SIGTERM);
}
END_TEST

/* --- Expiry ------------------------------------------------------------- */

#define TTL_MS 300
#define TTL_KEYS 20

START_TEST(test_expired_keys_are_swept_on_schedule)
{
    const double ttl = TTL_MS / 1000.0;
    struct server s;
    struct client c;

    server_start(&s);
    client_open(&c, s.port);
    struct stats before = server_stats(&c);
    ck_assert_str_eq(call(&c, "SET forever 0 stays"), "OK");

    /* The SETs and a STATS in one send: the count is taken right after
     * the keys were stored, in one round trip however slow this side is. */
    char batch[TTL_KEYS * 32 + 8];
    size_t len = 0;
    for (int i = 0; i < TTL_KEYS; i++)
        len += (size_t)snprintf(batch + len, sizeof batch - len,
                                "SET ttl-%d %d value %d\n", i, TTL_MS, i);
    len += (size_t)snprintf(batch + len, sizeof batch - len, "STATS\n");
    int64_t first_set = now_ns();
    ck_assert(client_send(&c, batch, len));
    for (int i = 0; i < TTL_KEYS; i++) {
        ck_assert(client_reply(&c));
        ck_assert_str_eq(c.reply, "OK");
    }
    int64_t last_set = now_ns();
    ck_assert(client_reply(&c));
    double stored_for = seconds_since(first_set);
    struct stats st;
    ck_assert_msg(sscanf(c.reply, "STATS keys=%llu expired=%llu", &st.keys,
                         &st.expired) == 2,
                  "STATS replied \"%s\"", c.reply);
    ck_assert_msg(stored_for < ttl,
                  "storing %d keys took %.3f s, longer than their TTL",
                  TTL_KEYS, stored_for);
    ck_assert_uint_eq(st.keys, before.keys + 1 + TTL_KEYS);

    /* Every key is due at most TTL after last_set, and swept at most one
     * sweep interval later. */
    const double bound = ttl + SWEEP_SECONDS + SLACK_SECONDS;
    while ((st = server_stats(&c)).keys != before.keys + 1 &&
           seconds_since(last_set) < bound)
        sleep_ms(5);
    double gone_after = seconds_since(first_set);
    ck_assert_msg(st.keys == before.keys + 1,
                  "%llu keys still stored %.3f s after the last SET",
                  st.keys - before.keys - 1, seconds_since(last_set));
    ck_assert_msg(gone_after >= ttl,
                  "the keys were swept %.3f s after the first SET, before "
                  "their TTL of %.3f s",
                  gone_after, ttl);
    ck_assert_uint_eq(st.expired, before.expired + TTL_KEYS);

    for (int i = 0; i < TTL_KEYS; i++)
        ck_assert_str_eq(call(&c, "GET ttl-%d", i), "NOTFOUND");
    ck_assert_str_eq(call(&c, "GET forever"), "VALUE stays");
    client_close(&c);
    server_stop(&s, SIGTERM);
}
END_TEST

START_TEST(test_expired_key_is_hidden_before_the_sweep)
{
    const double ttl = 0.1;
    struct server s;
    struct client c;
    const char *reply;

    /* This test runs in its own process: the setting dies with it. */
    setenv("LOOPSVC_KV_EXPIRY_ENABLED", "0", 1);
    server_start(&s);
    client_open(&c, s.port);

    int64_t set_at = now_ns();
    ck_assert_str_eq(call(&c, "SET brief 100 soon gone"), "OK");
    double set_took = seconds_since(set_at);
    while (strcmp(reply = call(&c, "GET brief"), "VALUE soon gone") == 0 &&
           seconds_since(set_at) < ttl + set_took + SLACK_SECONDS)
        sleep_ms(5);
    double hidden_after = seconds_since(set_at);
    ck_assert_str_eq(reply, "NOTFOUND");
    ck_assert_msg(hidden_after >= ttl,
                  "the key was hidden %.3f s after its SET, before its TTL",
                  hidden_after);

    /* No sweep ran: the key is still stored, only hidden. */
    struct stats st = server_stats(&c);
    ck_assert_uint_eq(st.keys, 1);
    ck_assert_uint_eq(st.expired, 0);

    /* Deleting it removes it, but it was not there to delete. */
    ck_assert_str_eq(call(&c, "DEL brief"), "NOTFOUND");
    ck_assert_uint_eq(server_stats(&c).keys, 0);
    ck_assert_str_eq(call(&c, "SET brief 0 back"), "OK");
    ck_assert_str_eq(call(&c, "GET brief"), "VALUE back");
    client_close(&c);
    server_stop(&s, SIGTERM);
}
END_TEST

/* --- Bad input ---------------------------------------------------------- */

static const struct {
    const char *request, *reply;
} bad_requests[] = {
    {"", "ERR empty request"},
    {"\r", "ERR empty request"},
    {"FOO", "ERR unknown command (SET, GET, DEL, STATS)"},
    {"get a", "ERR unknown command (SET, GET, DEL, STATS)"},
    {" GET a", "ERR unknown command (SET, GET, DEL, STATS)"},
    {"GET", "ERR usage: GET <key>"},
    {"GET ", "ERR usage: GET <key>"},
    {"GET a b", "ERR usage: GET <key>"},
    {"GET  a", "ERR usage: GET <key>"},
    {"DEL", "ERR usage: DEL <key>"},
    {"STATS now", "ERR usage: STATS"},
    {"SET", "ERR usage: SET <key> <ttl_ms> <value>"},
    {"SET a", "ERR usage: SET <key> <ttl_ms> <value>"},
    {"SET a 10", "ERR usage: SET <key> <ttl_ms> <value>"},
    {"SET a 10 ", "ERR usage: SET <key> <ttl_ms> <value>"},
    {"SET a -5 v", "ERR ttl_ms must be a whole number from 0 to 31536000000"},
    {"SET a 1e3 v", "ERR ttl_ms must be a whole number from 0 to 31536000000"},
    {"SET a 31536000001 v",
     "ERR ttl_ms must be a whole number from 0 to 31536000000"},
    {"SET a 99999999999999999999999 v",
     "ERR ttl_ms must be a whole number from 0 to 31536000000"},
    {"GET a\tb", "ERR control character in request"},
    {"SET a 0 \x1b[2J", "ERR control character in request"},
    {"SET a 0 \x7f", "ERR control character in request"},
};

START_TEST(test_bad_requests_get_errors_and_the_connection_goes_on)
{
    static char line[3 * MAX_LINE];
    char key[MAX_KEY + 2];
    struct server s;
    struct client c;

    server_start(&s);
    client_open(&c, s.port);
    ck_assert_str_eq(call(&c, "SET a 0 before"), "OK");
    for (size_t i = 0; i < sizeof bad_requests / sizeof bad_requests[0]; i++) {
        const char *reply = call(&c, "%s", bad_requests[i].request);
        ck_assert_msg(strcmp(reply, bad_requests[i].reply) == 0,
                      "\"%s\" got \"%s\", not \"%s\"", bad_requests[i].request,
                      reply, bad_requests[i].reply);
        ck_assert_str_eq(call(&c, "GET a"), "VALUE before");
    }

    /* A NUL byte in the middle of a line. */
    ck_assert_str_eq(call_raw(&c, "GET a\0b\n", 8),
                     "ERR control character in request");

    /* Keys: MAX_KEY bytes is the limit. */
    memset(key, 'k', MAX_KEY + 1);
    key[MAX_KEY + 1] = '\0';
    ck_assert_str_eq(call(&c, "SET %s 0 v", key),
                     "ERR key longer than 250 bytes");
    ck_assert_str_eq(call(&c, "GET %s", key), "ERR key longer than 250 bytes");
    key[MAX_KEY] = '\0';
    ck_assert_str_eq(call(&c, "SET %s 0 long key", key), "OK");
    ck_assert_str_eq(call(&c, "GET %s", key), "VALUE long key");

    /* A line of exactly MAX_LINE bytes is served and its value comes back
     * whole; one byte more is refused once, and the next line served. */
    int head = snprintf(line, sizeof line, "SET big 0 ");
    memset(line + head, 'v', (size_t)(MAX_LINE - head));
    line[MAX_LINE] = '\n';
    ck_assert_str_eq(call_raw(&c, line, MAX_LINE + 1), "OK");
    const size_t value_len = (size_t)(MAX_LINE - head);
    const char *reply = call(&c, "GET big");
    ck_assert(starts_with(reply, "VALUE "));
    ck_assert_uint_eq(strlen(reply + 6), value_len);
    ck_assert_uint_eq(strspn(reply + 6, "v"), value_len);
    memset(line, 'x', sizeof line);
    line[sizeof line - 1] = '\n';
    ck_assert_str_eq(call_raw(&c, line, sizeof line),
                     "ERR line too long (limit 4096 bytes)");
    line[MAX_LINE + 1] = '\n';
    ck_assert_str_eq(call_raw(&c, line, MAX_LINE + 2),
                     "ERR line too long (limit 4096 bytes)");
    ck_assert_str_eq(call(&c, "GET a"), "VALUE before");

    /* Requests sent together are answered in order; a '\r' before the
     * '\n' is ignored. */
    static const char batch[] = "SET p 0 1\r\nGET p\nDEL p\nGET p\r\nDEL p\n";
    static const char *const answers[] = {"OK", "VALUE 1", "DELETED",
                                          "NOTFOUND", "NOTFOUND"};
    ck_assert(client_send(&c, batch, strlen(batch)));
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
        ck_assert(client_reply(&c));
        ck_assert_str_eq(c.reply, answers[i]);
    }

    /* Every byte value but '\n', in one line. */
    unsigned char noise[256];
    for (int i = 0; i < 255; i++)
        noise[i] = (unsigned char)(i + 1 == '\n' ? 'n' : i + 1);
    noise[255] = '\n';
    ck_assert(starts_with(call_raw(&c, noise, sizeof noise), "ERR "));

    /* Clients that leave in the middle of a line, or say nothing. */
    for (int i = 0; i < 4; i++) {
        struct client quitter;
        client_open(&quitter, s.port);
        if (i % 2 == 0)
            ck_assert(client_send(&quitter, "SET half 0 a", 12));
        client_close(&quitter);
    }
    ck_assert_str_eq(call(&c, "GET half"), "NOTFOUND");
    ck_assert_str_eq(call(&c, "GET a"), "VALUE before");
    wait_connections(&c, 1);
    client_close(&c);
    server_stop(&s, SIGTERM);
}
END_TEST

START_TEST(test_connections_beyond_the_limit_are_refused)
{
    static struct client clients[MAX_CONNS + 1];
    struct server s;

    server_start(&s);
    for (int i = 0; i < MAX_CONNS; i++) {
        client_open(&clients[i], s.port);
        ck_assert(starts_with(call(&clients[i], "STATS"), "STATS "));
    }
    struct client *extra = &clients[MAX_CONNS];
    client_open(extra, s.port);
    ck_assert(client_reply(extra));
    ck_assert_str_eq(extra->reply, "ERR too many connections");
    ck_assert(client_sees_end(extra));
    client_close(extra);

    /* A slot comes free once its client left. */
    client_close(&clients[0]);
    wait_connections(&clients[1], MAX_CONNS - 1);
    client_open(&clients[0], s.port);
    ck_assert(starts_with(call(&clients[0], "STATS"), "STATS "));
    for (int i = 0; i < MAX_CONNS; i++)
        client_close(&clients[i]);
    server_stop(&s, SIGTERM);
}
END_TEST

/* --- Stopping ----------------------------------------------------------- */

/* Makes the server's thread for this client block in send(): requests
 * whose replies are large, never read, until the server stops taking
 * requests (no room to send for a while). */
static void stop_reading(struct client *c)
{
    static char requests[64 * 1024];
    int64_t start = now_ns();

    for (size_t i = 0; i + 8 <= sizeof requests; i += 8)
        memcpy(requests + i, "GET big\n", 8);
    while (seconds_since(start) < REPLY_SECONDS) {
        ssize_t n = send(c->fd, requests, sizeof requests,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0 || errno == EINTR)
            continue;
        ck_assert_msg(errno == EAGAIN || errno == EWOULDBLOCK,
                      "send failed: %s", strerror(errno));
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
        if (poll(&pfd, 1, 200) == 0)
            return;
    }
    ck_abort_msg("the server read requests for %g s without a stop",
                 REPLY_SECONDS);
}

START_TEST(test_sigterm_wakes_and_joins_every_thread)
{
    char value[MAX_LINE - 16];
    struct client idle, partial, silent, c;
    struct server s;

    server_start(&s);
    /* main, accept, the group's signal thread and the two services. */
    wait_server_threads(&s, 5);

    client_open(&c, s.port);
    memset(value, 'v', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    ck_assert_str_eq(call(&c, "SET big 0 %s", value), "OK");

    /* Three connections whose threads block in recv() with nothing to
     * read, recv() in the middle of a line, and send(). */
    client_open(&idle, s.port);
    const char *reply = call(&idle, "GET big");
    ck_assert(starts_with(reply, "VALUE "));
    ck_assert_str_eq(reply + strlen("VALUE "), value);
    client_open(&partial, s.port);
    ck_assert_str_eq(call(&partial, "SET p 0 1"), "OK");
    ck_assert(client_send(&partial, "GET p", 5));
    ck_assert(client_open_with(&silent, s.port, 4096) == 0);
    stop_reading(&silent);
    ck_assert_uint_eq(server_stats(&c).connections, 4);
    wait_server_threads(&s, 5 + 4);

    server_stop(&s, SIGTERM);
    client_close(&idle);
    client_close(&partial);
    client_close(&silent);
    client_close(&c);
}
END_TEST

START_TEST(test_sigint_stops_the_server)
{
    struct server s;
    struct client c;

    server_start(&s);
    wait_server_threads(&s, 5);
    client_open(&c, s.port);
    ck_assert_str_eq(call(&c, "SET k 0 v"), "OK");
    server_stop(&s, SIGINT);
    ck_assert(client_sees_end(&c));
    client_close(&c);
}
END_TEST

/* --- Operations: loopsvcctl and HTTP ------------------------------------ */

/* Runs argv (argv[0] the program, then its arguments, then NULL) and reads
 * its stdout to the end into s->out; returns its exit status. */
static int run_program(struct server *s, const char *const argv[])
{
    int status = 0;

    child_spawn_argv(&s->out, argv, STDOUT_FILENO);
    bool ended = child_read_until(&s->out, NULL, NULL, REPLY_SECONDS);
    if (!ended)
        kill(s->out.pid, SIGKILL);
    waitpid(s->out.pid, &status, 0);
    close(s->out.fd);
    ck_assert_msg(ended && WIFEXITED(status),
                  "%s %s did not end by itself within %g s", argv[0],
                  argv[1], REPLY_SECONDS);
    return WEXITSTATUS(status);
}

static const char *loopsvcctl_path(void)
{
    const char *path = getenv("LOOPSVCCTL");

    ck_assert_msg(path != NULL && *path, "LOOPSVCCTL is not set");
    return path;
}

/* Runs loopsvcctl -s <the server's control socket> with the arguments that
 * follow, up to a NULL; returns its exit status, its output in
 * s->out.text. */
static int ctl(struct server *s, ...)
{
    const char *argv[8] = {loopsvcctl_path(), "-s", s->socket};
    int argc = 3;
    va_list ap;

    va_start(ap, s);
    while (argc < 7 && (argv[argc] = va_arg(ap, const char *)) != NULL)
        argc++;
    va_end(ap);
    argv[argc] = NULL;
    return run_program(s, argv);
}

/* The value of the sample of `family` for `service` in a text in
 * Prometheus's format; NAN when there is none. */
static double sample(const char *text, const char *family,
                     const char *service)
{
    char head[128];

    snprintf(head, sizeof head, "%s{service=\"%s\"} ", family, service);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (starts_with(line, head))
            return strtod(line + strlen(head), NULL);
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    return NAN;
}

/* A sample of the group's metrics, as `loopsvcctl metrics` tells them. */
static double metric(struct server *s, const char *family,
                     const char *service)
{
    ck_assert_int_eq(ctl(s, "metrics", NULL), 0);
    double value = sample(s->out.text, family, service);
    ck_assert_msg(!isnan(value), "no %s for %s in: %.*s", family, service,
                  SHOWN, s->out.text);
    return value;
}

/* Polls the metrics until the sample is at least `least`; returns it. */
static double wait_metric(struct server *s, const char *family,
                          const char *service, double least)
{
    int64_t start = now_ns();
    double value;

    while ((value = metric(s, family, service)) < least &&
           seconds_since(start) < REPLY_SECONDS)
        sleep_ms(20);
    ck_assert_msg(value >= least, "%s for %s is %g after %g s, not %g or more",
                  family, service, value, REPLY_SECONDS, least);
    return value;
}

/* Sends an HTTP request and reads the answer to its end (the server closes
 * the connection) into s->out.text; returns the status code, or 0 when
 * there is no answer, and the body in *body. */
static int http(struct server *s, const char *request, const char **body)
{
    struct client c;
    int code = 0;

    client_open(&c, s->http_port);
    ck_assert(client_send(&c, request, strlen(request)));
    /* A reader of one descriptor to its end, with a bound: what
     * child_read_until is, whatever is at the other end. */
    memset(&s->out, 0, sizeof s->out);
    s->out.fd = c.fd;
    ck_assert_msg(child_read_until(&s->out, NULL, NULL, REPLY_SECONDS),
                  "the answer to \"%.80s\" did not end", request);
    client_close(&c);
    const char *end = strstr(s->out.text, "\r\n\r\n");
    *body = end != NULL ? end + 4 : "";
    if (sscanf(s->out.text, "HTTP/1.0 %d ", &code) != 1)
        code = 0;
    return code;
}

/* kvserver's chores, in the order it adds them to its group: the order of
 * their rows and samples. */
static const char *const services[] = {"kv-expiry", "kv-stats"};

START_TEST(test_loopsvcctl_tells_status_and_refuses_bad_commands)
{
    enum { COLUMNS = 9 };
    static const char *const columns[COLUMNS] = {
        "SERVICE", "STATE", "INTERVAL", "RUNS", "ERRORS",
        "LAST-RUN", "NEXT-RUN", "HEALTH", "LEASE"};
    struct server s;

    server_start_with(&s, true);

    /* A header, then a row per service in the group's order, each cell
     * beginning where its column's name does. */
    ck_assert_int_eq(ctl(&s, "status", NULL), 0);
    const char *header = s.out.text, *row = header;
    size_t at[COLUMNS];
    for (size_t i = 0, from = 0; i < COLUMNS; i++) {
        const char *name = strstr(header + from, columns[i]);
        ck_assert_msg(name != NULL && name < strchr(header, '\n'),
                      "no column %s in: %s", columns[i], s.out.text);
        at[i] = (size_t)(name - header);
        from = at[i] + strlen(columns[i]);
    }
    for (size_t i = 0; i < sizeof services / sizeof services[0]; i++) {
        char name[64], state[64];
        const char *end = strchr(row, '\n');
        ck_assert_ptr_nonnull(end);
        row = end + 1;
        ck_assert_msg(strcspn(row, "\n") > at[COLUMNS - 1],
                      "no row for %s in: %s", services[i], s.out.text);
        for (size_t k = 1; k < COLUMNS; k++)
            ck_assert_msg(row[at[k] - 1] == ' ' && row[at[k]] != ' ',
                          "%s is not aligned under %s in: %s", services[i],
                          columns[k], s.out.text);
        ck_assert_int_eq(sscanf(row, "%63s %63s", name, state), 2);
        ck_assert_str_eq(name, services[i]);
        ck_assert_str_eq(state, "running");
    }
    const char *end = strchr(row, '\n');
    ck_assert_msg(end != NULL && end[1] == '\0', "more rows than services "
                  "in: %s", s.out.text);

    ck_assert_int_eq(ctl(&s, "help", NULL), 0);
    ck_assert_msg(strstr(s.out.text, "interval") != NULL, "help: %s",
                  s.out.text);

    /* Refused by the server: exit status 1 and its "error:" line. */
    static const char *const refused[][3] = {
        {"wake", "no-such-service", NULL},
        {"pause", "kv", NULL},
        {"interval", "kv-stats", "0"},
        {"interval", "kv-stats", "soon"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        int status = ctl(&s, refused[i][0], refused[i][1], refused[i][2],
                         NULL);
        ck_assert_msg(status == 1 && starts_with(s.out.text, "error: "),
                      "loopsvcctl %s %s: status %d, \"%s\"", refused[i][0],
                      refused[i][1] ? refused[i][1] : "", status, s.out.text);
    }

    /* Not sent at all, a usage or connection error: exit status 2. */
    ck_assert_int_eq(ctl(&s, NULL), 2);
    ck_assert_int_eq(ctl(&s, "frobnicate", NULL), 2);
    ck_assert_int_eq(ctl(&s, "wake", NULL), 2);
    const char *nowhere[] = {loopsvcctl_path(), "-s", "/nonexistent/kv.sock",
                             "status", NULL};
    ck_assert_int_eq(run_program(&s, nowhere), 2);

    server_stop(&s, SIGTERM);
}
END_TEST

START_TEST(test_loopsvcctl_wakes_pauses_resumes_and_sets_intervals)
{
    const int paused_points = 10; /* kv-expiry's due points while paused */
    struct server s;

    server_start_with(&s, true);

    /* kv-stats every hour: from now on it runs only when woken. */
    ck_assert_int_eq(ctl(&s, "interval", "kv-stats", "3600", NULL), 0);
    ck_assert(starts_with(s.out.text, "ok: "));
    ck_assert_double_eq(
        metric(&s, "loopsvc_interval_seconds", "kv-stats"), 3600);
    double runs = metric(&s, "loopsvc_runs_total", "kv-stats");
    double wakes = metric(&s, "loopsvc_wakes_total", "kv-stats");
    ck_assert_int_eq(ctl(&s, "wake", "kv-stats", NULL), 0);
    ck_assert(starts_with(s.out.text, "ok: "));
    ck_assert_double_eq(
        wait_metric(&s, "loopsvc_wakes_total", "kv-stats", wakes + 1),
        wakes + 1);
    wait_metric(&s, "loopsvc_runs_total", "kv-stats", runs + 1);

    /* Paused, kv-expiry lets its due points pass, a wake included. A run
     * in progress when the pause came may still end after it. */
    ck_assert_int_eq(ctl(&s, "pause", "kv-expiry", NULL), 0);
    ck_assert(starts_with(s.out.text, "ok: "));
    ck_assert_double_eq(metric(&s, "loopsvc_paused", "kv-expiry"), 1);
    runs = metric(&s, "loopsvc_runs_total", "kv-expiry");
    ck_assert_int_eq(ctl(&s, "wake", "kv-expiry", NULL), 0);
    work_for_ns(paused_points * (int64_t)(SWEEP_SECONDS * 1e9));
    double paused_runs = metric(&s, "loopsvc_runs_total", "kv-expiry");
    ck_assert_msg(paused_runs <= runs + 1,
                  "kv-expiry ran %g times while paused", paused_runs - runs);
    /* Paused is not unhealthy. */
    const char *body;
    ck_assert_int_eq(http(&s, "GET /healthz HTTP/1.0\r\n\r\n", &body), 200);

    ck_assert_int_eq(ctl(&s, "resume", "kv-expiry", NULL), 0);
    ck_assert(starts_with(s.out.text, "ok: "));
    ck_assert_double_eq(metric(&s, "loopsvc_paused", "kv-expiry"), 0);
    wait_metric(&s, "loopsvc_runs_total", "kv-expiry", paused_runs + 2);

    ck_assert_int_eq(ctl(&s, "interval", "kv-expiry", "0.25", NULL), 0);
    ck_assert_double_eq(
        metric(&s, "loopsvc_interval_seconds", "kv-expiry"), 0.25);
    server_stop(&s, SIGTERM);
}
END_TEST

START_TEST(test_http_serves_metrics_and_health)
{
    static char request[HTTP_MAX_REQUEST + 64];
    struct server s;
    struct client silent;
    const char *body;

    server_start_with(&s, true);
    ck_assert_int_eq(http(&s, "GET /healthz HTTP/1.0\r\n\r\n", &body), 200);
    ck_assert_str_eq(body, "ok\n");

    /* As Prometheus asks: HTTP/1.1, headers, and maybe a query. */
    ck_assert_int_eq(http(&s, "GET /metrics?x=1 HTTP/1.1\r\nHost: kv\r\n"
                              "Accept: text/plain\r\n\r\n", &body), 200);
    ck_assert_msg(strstr(s.out.text, "\r\nContent-Type: " METRICS_TYPE "\r\n"),
                  "not of type %s: %.*s", METRICS_TYPE, SHOWN, s.out.text);
    char length[64];
    snprintf(length, sizeof length, "\r\nContent-Length: %zu\r\n",
             strlen(body));
    ck_assert_msg(strstr(s.out.text, length), "no \"%s\" in: %.*s",
                  length + 2, SHOWN, s.out.text);
    ck_assert_msg(strstr(body, "# TYPE loopsvc_runs_total counter\n"),
                  "%.*s", SHOWN, body);
    for (size_t i = 0; i < sizeof services / sizeof services[0]; i++)
        ck_assert_msg(sample(body, "loopsvc_runs_total", services[i]) >= 0,
                      "no loopsvc_runs_total for %s in: %.*s", services[i],
                      SHOWN, body);

    static const struct {
        const char *request;
        int code;
    } others[] = {
        {"GET / HTTP/1.0\r\n\r\n", 404},
        {"GET /metricsz HTTP/1.0\r\n\r\n", 404},
        {"GET /healthz/x HTTP/1.0\r\n\r\n", 404},
        {"POST /metrics HTTP/1.0\r\n\r\n", 404},
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        ck_assert_int_eq(http(&s, others[i].request, &body), others[i].code);

    /* A head longer than the limit: refused, and the next one served. */
    memset(request, 'x', sizeof request - 1);
    request[sizeof request - 1] = '\0';
    ck_assert_int_eq(http(&s, request, &body), 400);

    /* A client that says nothing is dropped after its time, and holds up
     * the others at most that long. */
    client_open(&silent, s.http_port);
    ck_assert_int_eq(http(&s, "GET /healthz HTTP/1.0\r\n\r\n", &body), 200);
    ck_assert(client_sees_end(&silent));
    client_close(&silent);

    /* Nor does one still there keep the server from stopping. */
    client_open(&silent, s.http_port);
    server_stop(&s, SIGTERM);
    client_close(&silent);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kvserver");
    add_tests(s, "kvserver", (const TTest *[]){
        test_concurrent_clients_get_their_own_values,
        test_expired_keys_are_swept_on_schedule,
        test_expired_key_is_hidden_before_the_sweep,
        test_bad_requests_get_errors_and_the_connection_goes_on,
        test_connections_beyond_the_limit_are_refused,
        test_sigterm_wakes_and_joins_every_thread,
        test_sigint_stops_the_server,
        test_loopsvcctl_tells_status_and_refuses_bad_commands,
        test_loopsvcctl_wakes_pauses_resumes_and_sets_intervals,
        test_http_serves_metrics_and_health, NULL});
    return run_suite(s);
}
