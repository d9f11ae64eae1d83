/*
 * The control socket (lsvc_group_set_control_socket) and loopsvcctl:
 *  - the protocol: status, metrics, wake, pause, resume, interval and
 *    help; unknown commands and names; names with spaces; commands sent
 *    together; commands that never wait for a run in progress;
 *  - the socket file: its mode, its removal, what a start does when the
 *    path is taken (a file, a directory, a live group, a stale socket),
 *    too long a path, and setting it while started;
 *  - hostile clients: another uid, a thousand connects, lines over 4 KiB
 *    and of 1 MiB, a client that never reads, the 16-client limit, half a
 *    line; while each goes on, a service of 10 ms keeps running;
 *  - loopsvcctl (LOOPSVCCTL names it): its exit statuses, -s, -t and
 *    LOOPSVC_CONTROL_SOCKET;
 *  - a storm of clients and loopsvcctl processes while the group runs and
 *    is stopped (this suite runs under ThreadSanitizer too).
 *
 * Each test serves a socket in a directory of its own under /tmp. Bounds
 * on time are wide, except where promptness is the point: a reply within
 * 1 s while other clients misbehave.
 */
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SOCK_CLOEXEC
#define SOCK_CLOEXEC 0
#endif

/* The server's limits, as the header gives them. */
#define MAX_CLIENTS 16
#define MAX_LINE 4096

#define REPLY_S 10.0  /* the longest a reply (or a loopsvcctl run) may take */
#define PROMPT_S 1.0  /* a reply that no other client may delay */
#define DROP_S 15.0   /* a stalled client is dropped after 10 s */
#define BUF_SIZE (256 * 1024)

/* --- The directory and the group ------------------------------------------ */

static char dir[64];        /* this test's directory */
static char sock_path[128]; /* the socket in it */

/* Removes path, and everything in it when it is a directory. */
static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        unlink(path);
        return;
    }
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char sub[1024];
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            remove_tree(sub);
        }
    }
    closedir(d);
    rmdir(path);
}

/* Removes the test's directory with everything in it. */
static void remove_dir(void *arg)
{
    (void)arg;
    remove_tree(dir);
}

/* The checked fixture: a fresh directory, and the log captured. */
static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/lsvc-ctl-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(sock_path, sizeof sock_path, "%s/ctl.sock", dir);
    at_teardown(remove_dir, NULL);
    log_capture();
}

/* dir/name, in a buffer of the caller's. */
static const char *in_dir(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", dir, name);
    return buf;
}

enum { FAST, IDLE, SPACED, MEMBERS };
static const char *const member_names[MEMBERS] = {"Fast", "Idle",
                                                  "Two Words"};

/* Ends the group if the test left it started: the teardown's first step. */
static void stop_if_started(void *arg)
{
    struct gfx *t = arg;
    lsvc_group_stop(t->g);
    lsvc_group_wait(t->g);
}

/* Fast (every 10 ms: its runs show that nothing holds the services up),
 * Idle and "Two Words" (every minute), not started; the socket not set. */
static struct gfx *members(void)
{
    struct gfx *t = gfx_new();
    t->limit = REPLY_S;
    gfx_add(t, member_names[FAST], 0.01, NULL);
    gfx_add(t, member_names[IDLE], 60, NULL);
    gfx_add(t, member_names[SPACED], 60, NULL);
    at_teardown(stop_if_started, t);
    return t;
}

/* members() with the socket at sock_path. */
static struct gfx *served(void)
{
    struct gfx *t = members();
    ck_assert_int_eq(lsvc_group_set_control_socket(t->g, sock_path), 0);
    return t;
}

/* served(), started, with each member's first run over. */
static struct gfx *serving(void)
{
    struct gfx *t = served();
    gfx_start(t);
    for (int i = 0; i < t->n; i++)
        ck_assert_msg(probe_wait_runs(&t->m[i].p, 1, REPLY_S),
                      "%s did not run", t->m[i].cls.name);
    return t;
}

/* The 10 ms service goes on running: 5 more runs within REPLY_S. */
static void check_fast_runs(struct gfx *t)
{
    struct probe *p = &t->m[FAST].p;
    sem_drain(&p->ran);
    ck_assert_msg(probe_wait_runs(p, 5, REPLY_S),
                  "the 10 ms service stopped running (%llu runs)",
                  (unsigned long long)probe_runs(p));
}

/* After a failed start: no member was left running. */
static void check_none_running(const struct gfx *t)
{
    for (int i = 0; i < t->n; i++)
        ck_assert_msg(!lsvc_is_running(t->m[i].svc), "%s runs",
                      t->m[i].cls.name);
}

static bool path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* --- Clients -------------------------------------------------------------- */

/* The address of the socket at path, which must fit. */
static struct sockaddr_un address_of(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof addr.sun_path);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    return addr;
}

/* A socket of the test's own listening at path, which never accepts. */
static int listen_at(const char *path)
{
    struct sockaddr_un addr = address_of(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    return fd;
}

/* A connected socket, or -1 with errno set. */
static int connect_fd(const char *path)
{
    struct sockaddr_un addr = address_of(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

struct client {
    int fd;
    size_t len;          /* bytes in buf */
    char buf[BUF_SIZE];  /* received and not yet taken, NUL-terminated */
    char reply[BUF_SIZE]; /* the last reply, its empty line included */
};

/* Connects c to path: 0 or an errno value. */
static int client_connect(struct client *c, const char *path)
{
    c->len = 0;
    c->buf[0] = '\0';
    c->fd = connect_fd(path);
    return c->fd < 0 ? errno : 0;
}

static void client_close(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void client_teardown(void *arg)
{
    client_close(arg);
}

/* A client connected to sock_path; the teardown closes it. */
static struct client *client_new(void)
{
    struct client *c = test_alloc(sizeof *c);
    int rc = client_connect(c, sock_path);
    ck_assert_msg(rc == 0, "cannot connect to %s: %s", sock_path,
                  strerror(rc));
    at_teardown(client_teardown, c);
    return c;
}

static bool client_send(struct client *c, const char *data, size_t len)
{
    for (size_t sent = 0; sent < len;) {
        ssize_t n = send(c->fd, data + sent, len - sent, MSG_NOSIGNAL);
        if (n > 0)
            sent += (size_t)n;
        else if (n == 0 || errno != EINTR)
            return false;
    }
    return true;
}

/* poll of one descriptor until `seconds` after start: what poll
 * returned, but never EINTR. */
static int poll_until(struct pollfd *pfd, int64_t start, double seconds)
{
    int rc;
    do {
        double left = seconds - seconds_since(start);
        rc = poll(pfd, 1, left > 0 ? (int)(left * 1000) + 1 : 0);
    } while (rc < 0 && errno == EINTR);
    return rc;
}

/* Waits until start + seconds for bytes: > 0 read, 0 end of stream (or
 * a reset: the server hung up), -1 time out or a full buffer. */
static ssize_t client_recv(struct client *c, int64_t start, double seconds)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (poll_until(&pfd, start, seconds) <= 0 || c->len + 1 >= sizeof c->buf)
        return -1;
    ssize_t n;
    while ((n = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0)) <
               0 &&
           errno == EINTR) {
    }
    if (n < 0)
        return errno == ECONNRESET ? 0 : -1;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    return n;
}

/* Where the reply at the start of buf ends (after its empty line), or 0
 * when it has not all come. */
static size_t reply_end(const char *buf, size_t len)
{
    if (len >= 1 && buf[0] == '\n')
        return 1;
    for (size_t i = 1; i < len; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\n')
            return i + 1;
    return 0;
}

/* Reads one whole reply, for at most `seconds`: c->reply, or NULL when it
 * did not come (time out, end of stream). */
static const char *client_reply(struct client *c, double seconds)
{
    int64_t start = now_ns();
    size_t end;
    while ((end = reply_end(c->buf, c->len)) == 0)
        if (client_recv(c, start, seconds) <= 0)
            return NULL;
    memcpy(c->reply, c->buf, end);
    c->reply[end] = '\0';
    c->len -= end;
    memmove(c->buf, c->buf + end, c->len + 1);
    return c->reply;
}

/* Reads everything until the server hangs up, for at most `seconds`:
 * whether it did. c->buf holds what came. */
static bool client_read_to_end(struct client *c, double seconds)
{
    int64_t start = now_ns();
    ssize_t n;
    while ((n = client_recv(c, start, seconds)) > 0) {
    }
    return n == 0;
}

/* Sends one command (a line without its '\n') and returns its reply
 * within `seconds`, or NULL. */
static const char *call_within(struct client *c, const char *command,
                               double seconds)
{
    char line[MAX_LINE + 2];
    int n = snprintf(line, sizeof line, "%s\n", command);
    if (n < 0 || (size_t)n >= sizeof line ||
        !client_send(c, line, (size_t)n))
        return NULL;
    return client_reply(c, seconds);
}

/* The same within REPLY_S, failing the test when no reply comes. */
static const char *call(struct client *c, const char *command)
{
    const char *reply = call_within(c, command, REPLY_S);
    ck_assert_msg(reply != NULL, "no reply to \"%s\"", command);
    return reply;
}

/* The next reply to what was sent before, within REPLY_S. */
static const char *call_reply(struct client *c)
{
    const char *reply = client_reply(c, REPLY_S);
    ck_assert_msg(reply != NULL, "no reply; received \"%s\"", c->buf);
    return reply;
}

/* Waits for the server to hang up on fd without reading from it: whether
 * it did within `seconds`. */
static bool hung_up_within(int fd, double seconds)
{
    struct pollfd pfd = {.fd = fd, .events = 0};
    return poll_until(&pfd, now_ns(), seconds) > 0;
}

/* --- Replies -------------------------------------------------------------- */

/* Lines of a reply before its empty line (or its end). */
static int reply_lines(const char *reply)
{
    int n = 0;
    for (const char *p = reply; p != NULL && *p != '\0' && *p != '\n';
         p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        n++;
    return n;
}

/* A reply of one line that begins with prefix ("ok: " or "error: "). */
static void check_one_line(const char *reply, const char *prefix)
{
    ck_assert_msg(reply != NULL, "no reply");
    ck_assert_msg(starts_with(reply, prefix) && reply_lines(reply) == 1,
                  "not one line \"%s...\": \"%s\"", prefix, reply);
}

static void check_ok(const char *reply)
{
    check_one_line(reply, "ok: ");
}

static void check_error(const char *reply)
{
    check_one_line(reply, "error: ");
}

/* Each command of a NULL-ended list gets a one-line error. */
static void check_errors(struct client *c, const char *const commands[])
{
    for (; *commands != NULL; commands++) {
        const char *r = call(c, *commands);
        ck_assert_msg(starts_with(r, "error: ") && reply_lines(r) == 1,
                      "\"%s\" answered \"%s\"", *commands, r);
    }
}

/* Line n (0 first) of text, without its '\n', into out. */
static bool line_of(const char *text, int n, char *out, size_t size)
{
    for (; n > 0 && text != NULL; n--) {
        text = strchr(text, '\n');
        if (text != NULL)
            text++;
    }
    if (text == NULL || *text == '\0')
        return false;
    size_t len = strcspn(text, "\n");
    snprintf(out, size, "%.*s", (int)(len < size ? len : size - 1), text);
    return true;
}

/* The columns of a status reply, in order. */
enum { SERVICE, STATE, INTERVAL, RUNS, ERRORS, LAST_RUN, NEXT_RUN, HEALTH,
       LEASE, COLUMNS };
static const char *const column_names[COLUMNS] = {
    "SERVICE", "STATE", "INTERVAL", "RUNS", "ERRORS", "LAST-RUN",
    "NEXT-RUN", "HEALTH", "LEASE"};

/* Where each column begins in a status reply's header row, which must
 * name them all, in order. */
static void column_offsets(const char *reply, size_t off[COLUMNS])
{
    char header[512];
    ck_assert_msg(line_of(reply, 0, header, sizeof header), "empty status");
    size_t at = 0;
    for (int i = 0; i < COLUMNS; i++) {
        at += strspn(header + at, " ");
        size_t len = strcspn(header + at, " ");
        ck_assert_msg(len == strlen(column_names[i]) &&
                          strncmp(header + at, column_names[i], len) == 0,
                      "column %d of \"%s\" is not %s", i + 1, header,
                      column_names[i]);
        off[i] = at;
        at += len;
    }
    ck_assert_msg(header[at] == '\0', "more columns in \"%s\"", header);
}

/* The row of a status reply that begins with name and a space: a static
 * copy. */
static const char *row_of(const char *reply, const char *name)
{
    static char row[512];
    size_t len = strlen(name);
    for (int i = 1; line_of(reply, i, row, sizeof row); i++)
        if (strncmp(row, name, len) == 0 && row[len] == ' ')
            return row;
    ck_abort_msg("no row for \"%s\" in:\n%s", name, reply);
    return NULL;
}

/* The word that begins in `column` of name's row: a static copy. */
static const char *cell(const char *reply, const char *name, int column)
{
    static char word[64];
    size_t off[COLUMNS];
    column_offsets(reply, off);
    const char *row = row_of(reply, name);
    ck_assert_msg(strlen(row) > off[column] && row[off[column] - 1] == ' ' &&
                      row[off[column]] != ' ',
                  "%s of \"%s\" is not under its header:\n%s",
                  column_names[column], name, reply);
    size_t len = strcspn(row + off[column], " ");
    snprintf(word, sizeof word, "%.*s", (int)len, row + off[column]);
    return word;
}

/* Whether word is one of a NULL-ended list. */
static bool one_of(const char *word, const char *const words[])
{
    for (; *words != NULL; words++)
        if (strcmp(word, *words) == 0)
            return true;
    return false;
}

/* A status reply: the header row, then one row per member, its cells
 * under their headers; STATE, HEALTH and LEASE hold the words the header
 * lists (no member has a lease). */
static void check_status(const char *reply, const struct gfx *t)
{
    size_t off[COLUMNS];
    column_offsets(reply, off);
    ck_assert_msg(reply_lines(reply) == 1 + t->n,
                  "%d lines, not a header and %d rows:\n%s",
                  reply_lines(reply), t->n, reply);
    for (int i = 0; i < t->n; i++) {
        const char *name = t->m[i].cls.name;
        for (int col = STATE; col < COLUMNS; col++)
            cell(reply, name, col);
        ck_assert_msg(one_of(cell(reply, name, STATE),
                             (const char *const[]){"running", "paused",
                                                   "stopped", "disabled",
                                                   NULL}),
                      "STATE of %s:\n%s", name, reply);
        ck_assert_msg(one_of(cell(reply, name, HEALTH),
                             (const char *const[]){"ok", "stuck", "failing",
                                                   "stale", "-", NULL}),
                      "HEALTH of %s:\n%s", name, reply);
        ck_assert_msg(strcmp(cell(reply, name, LEASE), "-") == 0,
                      "LEASE of %s:\n%s", name, reply);
    }
}

/* --- The protocol --------------------------------------------------------- */

START_TEST(test_status_has_a_header_and_a_row_per_service)
{
    struct gfx *t = serving();
    struct client *c = client_new();
    const char *r = call(c, "status");
    check_status(r, t);
    for (int i = 0; i < t->n; i++) {
        const char *name = t->m[i].cls.name;
        ck_assert_str_eq(cell(r, name, STATE), "running");
        ck_assert_str_eq(cell(r, name, HEALTH), "ok");
        const char *runs = cell(r, name, RUNS);
        ck_assert_msg(strspn(runs, "0123456789") == strlen(runs), "%s", r);
    }
    /* Nothing but the replies: the connection is clean for another. */
    check_status(call(c, "status"), t);
}
END_TEST

START_TEST(test_status_shows_a_paused_service_as_paused)
{
    struct gfx *t = serving();
    struct client *c = client_new();
    ck_assert_int_eq(lsvc_pause(t->m[IDLE].svc), 0);
    const char *r = call(c, "status");
    check_status(r, t);
    ck_assert_str_eq(cell(r, "Idle", STATE), "paused");
    ck_assert_str_eq(cell(r, "Fast", STATE), "running");
    ck_assert_str_eq(cell(r, "Two Words", STATE), "running");
    ck_assert_int_eq(lsvc_resume(t->m[IDLE].svc), 0);
    ck_assert_str_eq(cell(call(c, "status"), "Idle", STATE), "running");
}
END_TEST

START_TEST(test_status_health_column_shows_a_failing_service)
{
    struct gfx *t = members();
    int broken = gfx_add(t, "Broken", 0.01, NULL);
    t->m[broken].p.run_code = 1;
    ck_assert_int_eq(lsvc_group_set_control_socket(t->g, sock_path), 0);
    gfx_start(t);
    /* Four runs ended: the first three are counted, failed. */
    ck_assert(probe_wait_runs(&t->m[broken].p, 4, REPLY_S));
    const char *why = NULL;
    ck_assert(!lsvc_healthy(t->m[broken].svc, &why));
    ck_assert_str_eq(why, "failing");

    struct client *c = client_new();
    const char *r = call(c, "status");
    check_status(r, t);
    ck_assert_str_eq(cell(r, "Broken", HEALTH), "failing");
    ck_assert_str_eq(cell(r, "Fast", HEALTH), "ok");
}
END_TEST

/* Each column is as wide as its widest cell: a service of a year's
 * interval, due "in 8760.0h", leaves the cells after it under their
 * headers. */
START_TEST(test_status_columns_fit_their_widest_cell)
{
    struct gfx *t = members();
    int yearly = gfx_add(t, "Yearly", LSVC_MAX_SECONDS, NULL);
    ck_assert_int_eq(lsvc_group_set_control_socket(t->g, sock_path), 0);
    gfx_start(t);
    ck_assert(probe_wait_runs(&t->m[yearly].p, 1, REPLY_S));

    struct client *c = client_new();
    const char *r = call(c, "status");
    check_status(r, t);
    ck_assert_str_eq(cell(r, "Yearly", NEXT_RUN), "in");
    ck_assert_str_eq(cell(r, "Yearly", HEALTH), "ok");
    ck_assert_str_eq(cell(r, "Fast", HEALTH), "ok");
}
END_TEST

/* Whether two lines of metrics agree: the same, but for the value of a
 * last-success timestamp, computed at each call from the monotonic clock,
 * which may differ in the last digits. */
static bool same_sample(const char *a, const char *b)
{
    static const char stamp[] = "loopsvc_last_success_timestamp_seconds{";
    const char *va = strrchr(a, ' '), *vb = strrchr(b, ' ');
    return strcmp(a, b) == 0 ||
           (starts_with(a, stamp) && va != NULL && vb != NULL &&
            va - a == vb - b && strncmp(a, b, (size_t)(va - a)) == 0 &&
            fabs(strtod(va, NULL) - strtod(vb, NULL)) <= 1.0);
}

/* Checks that two metrics texts agree line for line (same_sample). */
static void check_same_metrics(const char *a, const char *b)
{
    for (int i = 0;; i++) {
        char la[1024] = "", lb[1024] = "";
        bool in_a = line_of(a, i, la, sizeof la);
        bool in_b = line_of(b, i, lb, sizeof lb);
        if (!in_a && !in_b)
            return;
        ck_assert_msg(same_sample(la, lb), "line %d: \"%s\" and \"%s\"",
                      i + 1, la, lb);
    }
}

START_TEST(test_metrics_is_the_text_of_lsvc_group_metrics)
{
    struct gfx *t = serving();
    struct client *c = client_new();
    /* Paused, the services change no counter between the two reads. */
    for (int i = 0; i < t->n; i++)
        ck_assert_int_eq(lsvc_pause(t->m[i].svc), 0);
    const char *r = call(c, "metrics");
    size_t needed = 0;
    lsvc_group_metrics(t->g, NULL, 0, &needed);
    char *text = test_alloc(needed + 4096);
    ck_assert_int_eq(lsvc_group_metrics(t->g, text, needed + 4096, NULL), 0);

    size_t len = strlen(r);
    ck_assert_msg(len >= 2 && strcmp(r + len - 2, "\n\n") == 0,
                  "the reply does not end with an empty line");
    ck_assert_ptr_nonnull(
        strstr(r, "loopsvc_runs_total{service=\"Two Words\"}"));
    /* The text, then the empty line. */
    char *sent = test_alloc(len);
    memcpy(sent, r, len - 1);
    check_same_metrics(sent, text);
}
END_TEST

START_TEST(test_wake_runs_the_service_and_counts_a_wake)
{
    struct gfx *t = serving();
    struct fx *idle = &t->m[IDLE];
    struct client *c = client_new();
    uint64_t wakes = stats_of(idle->svc).wakes;
    check_ok(call(c, "wake Idle"));
    /* Idle's next timer run is a minute away: this one is the wake's. */
    ck_assert(probe_wait_runs(&idle->p, 1, REPLY_S));
    ck_assert_uint_eq(stats_of(idle->svc).wakes, wakes + 1);
}
END_TEST

START_TEST(test_pause_and_resume_set_paused_in_the_stats)
{
    struct gfx *t = serving();
    struct client *c = client_new();
    check_ok(call(c, "pause Idle"));
    ck_assert(stats_of(t->m[IDLE].svc).paused);
    ck_assert(!stats_of(t->m[FAST].svc).paused);
    check_ok(call(c, "pause Idle")); /* idempotent, as lsvc_pause */
    check_ok(call(c, "resume Idle"));
    ck_assert(!stats_of(t->m[IDLE].svc).paused);
}
END_TEST

START_TEST(test_interval_sets_the_loop_seconds_and_refuses_bad_values)
{
    struct gfx *t = serving();
    struct client *c = client_new();
    check_ok(call(c, "interval Idle 2.5"));
    ck_assert_double_eq(lsvc_loop_seconds(t->m[IDLE].svc), 2.5);
    check_ok(call(c, "interval Idle 1e1"));
    ck_assert_double_eq(lsvc_loop_seconds(t->m[IDLE].svc), 10);
    check_errors(c, (const char *const[]){
        "interval Idle 0", "interval Idle -1", "interval Idle 5s",
        "interval Idle nan", "interval Idle", "interval Idle abc",
        "interval", NULL});
    ck_assert_double_eq(lsvc_loop_seconds(t->m[IDLE].svc), 10);
}
END_TEST

START_TEST(test_help_names_every_command)
{
    serving();
    struct client *c = client_new();
    const char *r = call(c, "help");
    static const char *const commands[] = {"status", "metrics", "wake",
                                           "pause", "resume", "interval",
                                           "help"};
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        ck_assert_msg(strstr(r, commands[i]) != NULL, "no \"%s\" in:\n%s",
                      commands[i], r);
}
END_TEST

START_TEST(test_unknown_command_is_an_error_and_the_connection_stays)
{
    struct gfx *t = serving();
    struct client *c = client_new();
    check_error(call(c, "frobnicate"));
    check_error(call(c, "status please"));
    check_status(call(c, "status"), t);
}
END_TEST

START_TEST(test_unknown_service_is_an_error_and_the_connection_stays)
{
    struct gfx *t = serving();
    struct client *c = client_new();
    check_errors(c, (const char *const[]){
        "wake Nobody", "pause Nobody", "resume Nobody", "interval Nobody 5",
        "wake idle", "wake Two", "wake", "pause", NULL});
    check_status(call(c, "status"), t);
    ck_assert(!stats_of(t->m[IDLE].svc).paused);
}
END_TEST

START_TEST(test_a_name_with_spaces_is_the_rest_of_the_line)
{
    struct gfx *t = serving();
    struct fx *two = &t->m[SPACED];
    struct client *c = client_new();
    check_ok(call(c, "pause Two Words"));
    ck_assert(stats_of(two->svc).paused);
    ck_assert_str_eq(cell(call(c, "status"), "Two Words", STATE), "paused");
    check_ok(call(c, "resume Two Words"));
    ck_assert(!stats_of(two->svc).paused);
    check_ok(call(c, "interval Two Words 30"));
    ck_assert_double_eq(lsvc_loop_seconds(two->svc), 30);
    uint64_t wakes = stats_of(two->svc).wakes;
    check_ok(call(c, "wake Two Words"));
    ck_assert(probe_wait_runs(&two->p, 1, REPLY_S));
    ck_assert_uint_eq(stats_of(two->svc).wakes, wakes + 1);
    /* One space after the command; the rest, all of it, is the name. */
    check_error(call(c, "pause  Two Words"));
    check_error(call(c, "pause Two Words "));
    ck_assert(!stats_of(two->svc).paused);
}
END_TEST

START_TEST(test_commands_sent_together_are_answered_in_order)
{
    struct gfx *t = serving();
    struct client *c = client_new();
    static const char lines[] = "pause Idle\nstatus\nfrobnicate\nresume Idle\n";
    ck_assert(client_send(c, lines, strlen(lines)));
    check_ok(call_reply(c));
    const char *r = call_reply(c);
    check_status(r, t);
    ck_assert_str_eq(cell(r, "Idle", STATE), "paused");
    check_error(call_reply(c));
    check_ok(call_reply(c));
    ck_assert(!stats_of(t->m[IDLE].svc).paused);
}
END_TEST

static void release_probe(void *arg)
{
    probe_release(arg);
}

START_TEST(test_a_last_line_without_its_newline_is_answered_at_shutdown)
{
    struct gfx *t = serving();
    struct client *c = client_new();
    ck_assert(client_send(c, "help\nstatus", 11));
    ck_assert_int_eq(shutdown(c->fd, SHUT_WR), 0);
    ck_assert_ptr_nonnull(strstr(call_reply(c), "interval"));
    check_status(call_reply(c), t);
    ck_assert_msg(client_read_to_end(c, REPLY_S), "not closed: \"%s\"",
                  c->buf);
    ck_assert_uint_eq(c->len, 0);
}
END_TEST

/* Makes LC_NUMERIC a locale whose decimal point is a comma, built with
 * localedef in the test's directory: false when the system cannot. To
 * be called before the process has threads. */
static bool comma_locale(void)
{
    char where[256];
    const char *const argv[] = {"/usr/bin/localedef", "-i", "de_DE", "-f",
                                "UTF-8", in_dir(where, sizeof where,
                                                "de_DE.UTF-8"), NULL};
    if (access(argv[0], X_OK) != 0)
        return false;
    struct child *c = test_alloc(sizeof *c);
    child_spawn_argv(c, argv, STDERR_FILENO);
    child_read_until(c, NULL, NULL, 60);
    close(c->fd);
    waitpid(c->pid, NULL, 0);
    setenv("LOCPATH", dir, 1);
    return setlocale(LC_NUMERIC, "de_DE.UTF-8") != NULL &&
           strcmp(localeconv()->decimal_point, ",") == 0;
}

START_TEST(test_numbers_are_read_and_written_in_the_c_locale)
{
    if (!comma_locale()) {
        fputs("test_numbers_are_read_and_written_in_the_c_locale: skipped: "
              "no locale with a decimal comma\n", stderr);
        return;
    }
    struct gfx *t = serving();
    struct client *c = client_new();
    const char *r = call(c, "interval Idle 2.5");
    check_ok(r);
    ck_assert_ptr_nonnull(strstr(r, "2.5"));
    ck_assert_double_eq(lsvc_loop_seconds(t->m[IDLE].svc), 2.5);
    check_error(call(c, "interval Idle 3,5"));
    ck_assert_ptr_nonnull(strstr(cell(call(c, "status"), "Idle", INTERVAL),
                                 "2.5"));
    ck_assert_ptr_nonnull(strstr(call(c, "metrics"),
                                 "loopsvc_interval_seconds{service=\"Idle\"} "
                                 "2.5\n"));
    setlocale(LC_NUMERIC, "C");
}
END_TEST

START_TEST(test_commands_never_wait_for_a_run_in_progress)
{
    struct gfx *t = served();
    struct fx *idle = &t->m[IDLE];
    probe_hold(&idle->p);
    at_teardown(release_probe, &idle->p);
    gfx_start(t);
    fx_wait_entered(idle);
    struct client *c = client_new();
    static const char *const commands[] = {"pause Idle", "status",
                                           "metrics", "wake Idle",
                                           "interval Idle 30", "resume Idle"};
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        ck_assert_msg(call_within(c, commands[i], PROMPT_S) != NULL,
                      "\"%s\" waited for Idle's run", commands[i]);
    check_fast_runs(t);
}
END_TEST

/* --- The socket file ------------------------------------------------------ */

START_TEST(test_socket_is_mode_0600_whatever_the_umask)
{
    umask(0);
    serving();
    struct stat st;
    ck_assert_int_eq(lstat(sock_path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_msg((st.st_mode & 07777) == 0600, "mode %o",
                  (unsigned)(st.st_mode & 07777));
}
END_TEST

START_TEST(test_socket_is_removed_when_the_wait_ends_and_made_again)
{
    struct gfx *t = serving();
    ck_assert(path_exists(sock_path));
    gfx_stop(t);
    ck_assert_msg(!path_exists(sock_path), "%s is left", sock_path);
    /* A later start serves it again. */
    gfx_start(t);
    check_status(call(client_new(), "status"), t);
}
END_TEST

START_TEST(test_failed_start_leaves_no_socket)
{
    struct gfx *t = served();
    t->m[SPACED].p.start_code = 1;
    ck_assert_int_eq(lsvc_group_start(t->g), ECANCELED);
    ck_assert_msg(!path_exists(sock_path), "%s is left", sock_path);
}
END_TEST

START_TEST(test_null_path_turns_the_socket_off)
{
    struct gfx *t = served();
    ck_assert_int_eq(lsvc_group_set_control_socket(t->g, NULL), 0);
    gfx_start(t);
    gfx_wait_first_runs(t);
    ck_assert(!path_exists(sock_path));
}
END_TEST

/* Makes sock_path a regular file (_i 0) or a directory (_i 1). */
static void occupy_path(int kind)
{
    if (kind == 0) {
        FILE *f = fopen(sock_path, "w");
        ck_assert_ptr_nonnull(f);
        fputs("keep\n", f);
        ck_assert_int_eq(fclose(f), 0);
    } else {
        ck_assert_int_eq(mkdir(sock_path, 0700), 0);
    }
}

START_TEST(test_start_is_eexist_on_a_path_that_is_not_a_socket)
{
    occupy_path(_i);
    struct gfx *t = served();
    ck_assert_int_eq(lsvc_group_start(t->g), EEXIST);
    check_none_running(t);
    struct stat st;
    ck_assert_int_eq(lstat(sock_path, &st), 0);
    ck_assert(_i == 0 ? S_ISREG(st.st_mode) : S_ISDIR(st.st_mode));
    if (_i == 0)
        ck_assert_int_eq(st.st_size, 5);
}
END_TEST

START_TEST(test_start_is_eaddrinuse_while_another_group_serves_the_path)
{
    struct gfx *t = serving();
    struct gfx *other = gfx_new();
    gfx_add(other, "Other", 60, NULL);
    at_teardown(stop_if_started, other);
    ck_assert_int_eq(lsvc_group_set_control_socket(other->g, sock_path), 0);
    ck_assert_int_eq(lsvc_group_start(other->g), EADDRINUSE);
    check_none_running(other);
    /* The first group still serves the path. */
    check_status(call(client_new(), "status"), t);
    /* Once it has ended, the path is free for the other. */
    gfx_stop(t);
    gfx_start(other);
    check_status(call(client_new(), "status"), other);
}
END_TEST

START_TEST(test_start_fails_with_what_bind_returns)
{
    char missing[256];
    struct gfx *t = members();
    in_dir(missing, sizeof missing, "no/such.sock");
    ck_assert_int_eq(lsvc_group_set_control_socket(t->g, missing), 0);
    ck_assert_int_eq(lsvc_group_start(t->g), ENOENT);
    check_none_running(t);
}
END_TEST

START_TEST(test_a_stale_socket_is_replaced)
{
    close(listen_at(sock_path));
    ck_assert(path_exists(sock_path));

    struct gfx *t = serving();
    check_status(call(client_new(), "status"), t);
}
END_TEST

/* A path of exactly `len` bytes in the test's directory. */
static void path_of_length(char *out, size_t len)
{
    size_t used = (size_t)snprintf(out, len + 1, "%s/", dir);
    ck_assert_uint_lt(used, len);
    memset(out + used, 'p', len - used);
    out[len] = '\0';
}

START_TEST(test_a_path_longer_than_a_socket_address_is_enametoolong)
{
    const size_t room = sizeof(((struct sockaddr_un *)0)->sun_path);
    char path[512];
    struct gfx *t = members();
    path_of_length(path, 300);
    ck_assert_int_eq(lsvc_group_set_control_socket(t->g, path), ENAMETOOLONG);
    path_of_length(path, room + 1);
    ck_assert_int_eq(lsvc_group_set_control_socket(t->g, path), ENAMETOOLONG);
    /* The longest that fits with its NUL is served. */
    path_of_length(path, room - 1);
    ck_assert_int_eq(lsvc_group_set_control_socket(t->g, path), 0);
    gfx_start(t);
    struct client *c = test_alloc(sizeof *c);
    ck_assert_int_eq(client_connect(c, path), 0);
    at_teardown(client_teardown, c);
    check_status(call(c, "status"), t);
}
END_TEST

START_TEST(test_setting_the_socket_while_started_is_ebusy)
{
    struct gfx *t = serving();
    char other[256];
    ck_assert_int_eq(lsvc_group_set_control_socket(
                         t->g, in_dir(other, sizeof other, "other.sock")),
                     EBUSY);
    ck_assert_int_eq(lsvc_group_set_control_socket(t->g, NULL), EBUSY);
    ck_assert_int_eq(lsvc_group_set_control_socket(NULL, sock_path), EINVAL);
    ck_assert(!path_exists(other));
    check_status(call(client_new(), "status"), t);
}
END_TEST

/* --- Hostile clients ------------------------------------------------------ */

/* The body of a child of uid and gid 65534: once a byte comes on `go`,
 * connects to addr, asks for the status, and copies what it reads to
 * `out` until the server hangs up (exit 0) or 5 s passed (3). */
static void nobody_client(const struct sockaddr_un *addr, int go, int out)
{
    static const char status[] = "status\n";
    char buf[4096];

    if (setgid(65534) != 0 || setuid(65534) != 0)
        _exit(2);
    if (read(go, buf, 1) != 1)
        _exit(5); /* the test ended first */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0)
        _exit(1);
    send(fd, status, sizeof status - 1, MSG_NOSIGNAL);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    for (int polls = 0; polls < 50; polls++) {
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            _exit(0);
        if (write(out, buf, (size_t)n) != n)
            _exit(4);
    }
    _exit(3);
}

/* Forks nobody_client while this process has no other thread (a child
 * forked from threads may deadlock under ThreadSanitizer); its output
 * goes to c. Returns the write end of its `go` pipe. */
static int fork_nobody_client(struct child *c)
{
    const struct sockaddr_un addr = address_of(sock_path);
    int go[2], out[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(out), 0);
    fflush(NULL);
    c->pid = fork();
    ck_assert_int_ge(c->pid, 0);
    if (c->pid == 0) {
        close(go[1]);
        close(out[0]);
        nobody_client(&addr, go[0], out[1]);
    }
    close(go[0]);
    close(out[1]);
    c->fd = out[0];
    return go[1];
}

START_TEST(test_a_peer_of_another_uid_is_refused_and_logged)
{
    if (geteuid() != 0) {
        fputs("test_a_peer_of_another_uid_is_refused_and_logged: skipped: "
              "needs root, to connect as uid 65534\n", stderr);
        return;
    }
    struct child *c = test_alloc(sizeof *c);
    int go = fork_nobody_client(c);
    struct gfx *t = serving();
    /* Open to all, so that only the peer's credentials can refuse it. */
    ck_assert_int_eq(chmod(dir, 0711), 0);
    ck_assert_int_eq(chmod(sock_path, 0666), 0);
    size_t from = log_size();
    ck_assert_int_eq(write(go, "g", 1), 1);
    close(go);

    ck_assert(child_read_until(c, NULL, NULL, REPLY_S));
    close(c->fd);
    int status = 0;
    ck_assert_int_eq(waitpid(c->pid, &status, 0), c->pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the client of uid 65534 ended with status 0x%x (1: no "
                  "connection, 3: not hung up on); it read: \"%s\"",
                  (unsigned)status, c->text);
    for (int i = 0; i < t->n; i++)
        ck_assert_msg(strstr(c->text, t->m[i].cls.name) == NULL,
                      "uid 65534 was served: \"%s\"", c->text);
    ck_assert_msg(log_wait(from, LSVC_LOG_WARNING, NULL, REPLY_S, NULL),
                  "no WARNING about the refused peer");
    check_fast_runs(t);
    check_status(call(client_new(), "status"), t);
}
END_TEST

/* Descriptors open in this process (the server's among them). */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

START_TEST(test_a_thousand_connects_leave_the_server_serving)
{
    struct gfx *t = serving();
    int before = open_fds();
    for (int i = 0; i < 1000; i++) {
        int fd = connect_fd(sock_path);
        ck_assert_msg(fd >= 0, "connect %d: %s", i, strerror(errno));
        close(fd);
    }
    check_fast_runs(t);
    struct client *c = client_new();
    check_status(call(c, "status"), t);
    client_close(c);
    /* The server closes each connection it saw end. */
    int64_t start = now_ns();
    while (open_fds() > before && seconds_since(start) < REPLY_S)
        sched_yield();
    ck_assert_int_eq(open_fds(), before);
}
END_TEST

START_TEST(test_a_line_over_4_kib_gets_an_error_and_is_closed)
{
    struct gfx *t = serving();
    char line[MAX_LINE + 2];
    /* 4 KiB and its '\n', an unknown name: an error, and it goes on. */
    struct client *c = client_new();
    snprintf(line, sizeof line, "wake %0*d", MAX_LINE - 5, 0);
    check_error(call(c, line));
    check_status(call(c, "status"), t);
    /* A byte more. */
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    ck_assert(client_send(c, line, sizeof line));
    ck_assert_msg(client_read_to_end(c, REPLY_S), "not closed: \"%s\"", c->buf);
    check_error(c->buf);
    check_status(call(client_new(), "status"), t);
}
END_TEST

/* Sends what the server takes of `len` bytes of data within REPLY_S; it
 * may hang up meanwhile. Whether it took them all. */
static bool send_what_is_taken(struct client *c, const char *data, size_t len)
{
    int64_t start = now_ns();
    size_t sent = 0;
    while (sent < len) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
        if (poll_until(&pfd, start, REPLY_S) <= 0 ||
            (pfd.revents & (POLLHUP | POLLERR)))
            break;
        ssize_t n = send(c->fd, data + sent, len - sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            break;
        sent += n > 0 ? (size_t)n : 0;
    }
    return sent == len;
}

START_TEST(test_a_line_of_1_mib_gets_an_error_or_a_hang_up)
{
    struct gfx *t = serving();
    struct client *c = client_new();
    size_t len = 1024 * 1024;
    char *line = test_alloc(len);
    memset(line, 'y', len - 1);
    line[len - 1] = '\n';
    send_what_is_taken(c, line, len);
    ck_assert_msg(client_read_to_end(c, REPLY_S),
                  "the server did not hang up; it said \"%.200s\"", c->buf);
    ck_assert_msg(c->len == 0 || starts_with(c->buf, "error: "),
                  "\"%.200s\"", c->buf);
    check_fast_runs(t);
    check_status(call(client_new(), "status"), t);
}
END_TEST

/* Sends many "metrics" to c, which never reads, and waits until the
 * server has filled c's receive queue: its replies wait on c. */
static void fill_unread(struct client *c)
{
    static char lines[64 * 1024];
    for (size_t i = 0; i + 8 <= sizeof lines; i += 8)
        memcpy(lines + i, "metrics\n", 8);
    send_what_is_taken(c, lines, sizeof lines);
    int64_t start = now_ns();
    int queued = 0;
    while (ioctl(c->fd, FIONREAD, &queued) == 0 && queued < 32 * 1024 &&
           seconds_since(start) < REPLY_S)
        sched_yield();
    ck_assert_msg(queued >= 32 * 1024, "only %d bytes of replies came",
                  queued);
}

/* Another client's status is answered within PROMPT_S. */
static void check_prompt_status(struct gfx *t)
{
    struct client *c = client_new();
    int64_t start = now_ns();
    const char *r = call_within(c, "status", PROMPT_S);
    ck_assert_msg(r != NULL, "no status within %.1f s (%.3f s)", PROMPT_S,
                  seconds_since(start));
    check_status(r, t);
    client_close(c);
}

START_TEST(test_a_client_that_never_reads_delays_no_other)
{
    struct gfx *t = serving();
    struct client *hog = client_new();
    fill_unread(hog);
    check_prompt_status(t);
    check_fast_runs(t);
    check_prompt_status(t);
}
END_TEST

START_TEST(test_a_17th_client_is_told_so_and_closed)
{
    struct gfx *t = serving();
    struct client *idle[MAX_CLIENTS];
    for (int i = 0; i < MAX_CLIENTS; i++)
        idle[i] = client_new();
    struct client *extra = client_new();
    ck_assert_msg(client_read_to_end(extra, REPLY_S),
                  "the 17th was not closed: \"%s\"", extra->buf);
    ck_assert_msg(starts_with(extra->buf, "error: "),
                  "the 17th was told \"%s\"", extra->buf);

    int64_t start = now_ns();
    const char *r = call_within(idle[0], "status", PROMPT_S);
    ck_assert_msg(r != NULL, "no status within %.1f s (%.3f s)", PROMPT_S,
                  seconds_since(start));
    check_status(r, t);
    check_status(call(idle[MAX_CLIENTS - 1], "status"), t);
    check_fast_runs(t);

    /* A place freed is a place for another. */
    client_close(idle[3]);
    start = now_ns();
    struct client *next = client_new();
    while (((r = call_within(next, "status", REPLY_S)) == NULL ||
            starts_with(r, "error: ")) &&
           seconds_since(start) < REPLY_S) {
        client_close(next);
        ck_assert_int_eq(client_connect(next, sock_path), 0);
    }
    ck_assert_msg(r != NULL && !starts_with(r, "error: "),
                  "no new client served after one left");
    check_status(r, t);
}
END_TEST

/* The server hangs up on c within DROP_S of start, and not before 5 s
 * (the header's 10 s, with a wide margin). */
static void check_dropped(struct client *c, int64_t start, const char *what)
{
    ck_assert_msg(hung_up_within(c->fd, DROP_S - seconds_since(start)),
                  "%s was kept %.0f s", what, DROP_S);
    ck_assert_msg(seconds_since(start) > 5, "%s was dropped after %.3f s",
                  what, seconds_since(start));
}

START_TEST(test_idle_clients_are_dropped_after_10_s)
{
    struct gfx *t = serving();
    int64_t start = now_ns();
    struct client *silent = client_new();
    struct client *half = client_new();
    ck_assert(client_send(half, "stat", 4));
    struct client *done = client_new();
    ck_assert_ptr_nonnull(call(done, "help"));
    struct client *hog = client_new();
    fill_unread(hog);
    check_prompt_status(t);
    check_fast_runs(t);

    check_dropped(silent, start, "a client that sent nothing");
    check_dropped(half, start, "a client with half a line");
    check_dropped(done, start, "a client idle after its reply");
    check_dropped(hog, start, "a client that does not read");
    check_status(call(client_new(), "status"), t);
}
END_TEST

/* --- loopsvcctl ----------------------------------------------------------- */

static const char *ctl_program(void)
{
    const char *path = getenv("LOOPSVCCTL");
    ck_assert_msg(path != NULL && *path, "LOOPSVCCTL is not set");
    return path;
}

/* Runs argv (NULL-ended), its descriptor `out` read into c, and reaps
 * it: its exit status, 128 + the signal that killed it (as a shell
 * says), or -1 when it did not end within REPLY_S (then killed). From
 * any thread. */
static int ctl_exec(struct child *c, const char *const argv[], int out)
{
    child_spawn_argv(c, argv, out);
    bool ended = child_read_until(c, NULL, NULL, REPLY_S);
    if (!ended)
        kill(c->pid, SIGKILL);
    close(c->fd);
    int status = 0;
    while (waitpid(c->pid, &status, 0) == -1 && errno == EINTR) {
    }
    if (!ended)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ctl_exec of loopsvcctl with args (NULL-ended). */
static int ctl_run(struct child *c, int out, const char *const args[])
{
    const char *argv[16] = {ctl_program()};
    for (int i = 0; args[i] != NULL; i++) {
        ck_assert_int_lt(i + 2, 16);
        argv[i + 1] = args[i];
    }
    return ctl_exec(c, argv, out);
}

#define CTL(c, out, ...)                                                    \
    ctl_run((c), (out), (const char *const[]){__VA_ARGS__, NULL})
/* loopsvcctl -s sock_path ARGS, its stdout read into c. */
#define CTL_S(c, ...) CTL((c), STDOUT_FILENO, "-s", sock_path, __VA_ARGS__)

/* What a reply prints as: without its empty line. */
static void check_printed(const char *printed, const char *reply)
{
    size_t len = strlen(reply);
    ck_assert_msg(strlen(printed) == len - 1 &&
                      strncmp(printed, reply, len - 1) == 0,
                  "printed:\n\"%s\"\nnot the reply:\n\"%s\"", printed, reply);
}

START_TEST(test_ctl_status_and_help_exit_0_without_the_empty_line)
{
    struct gfx *t = serving();
    struct child *c = test_alloc(sizeof *c);
    ck_assert_int_eq(CTL_S(c, "status"), 0);
    size_t len = strlen(c->text);
    ck_assert_msg(len >= 2 && c->text[len - 1] == '\n' &&
                      c->text[len - 2] != '\n',
                  "\"%s\"", c->text);
    /* check_status counts lines up to an empty one: give it one. */
    char *reply = test_alloc(len + 2);
    snprintf(reply, len + 2, "%s\n", c->text);
    check_status(reply, t);

    ck_assert_int_eq(CTL_S(c, "help"), 0);
    check_printed(c->text, call(client_new(), "help"));
    ck_assert_int_eq(CTL_S(c, "metrics"), 0);
    ck_assert_ptr_nonnull(
        strstr(c->text, "loopsvc_runs_total{service=\"Idle\"}"));
}
END_TEST

START_TEST(test_ctl_exits_1_on_an_unknown_service)
{
    struct gfx *t = serving();
    struct child *c = test_alloc(sizeof *c);
    ck_assert_int_eq(CTL_S(c, "wake", "Nobody"), 1);
    ck_assert_msg(starts_with(c->text, "error: "), "\"%s\"", c->text);
    ck_assert_int_eq(CTL_S(c, "interval", "Idle", "0"), 1);
    ck_assert_double_eq(lsvc_loop_seconds(t->m[IDLE].svc), 60);
}
END_TEST

START_TEST(test_ctl_joins_a_name_of_several_args)
{
    struct gfx *t = serving();
    lsvc *two = t->m[SPACED].svc;
    struct child *c = test_alloc(sizeof *c);
    ck_assert_int_eq(CTL_S(c, "pause", "Two", "Words"), 0);
    ck_assert_msg(starts_with(c->text, "ok: "), "\"%s\"", c->text);
    ck_assert(stats_of(two).paused);
    ck_assert_int_eq(CTL_S(c, "resume", "Two", "Words"), 0);
    ck_assert(!stats_of(two).paused);
    ck_assert_int_eq(CTL_S(c, "interval", "Two", "Words", "4"), 0);
    ck_assert_double_eq(lsvc_loop_seconds(two), 4);
}
END_TEST

START_TEST(test_ctl_exits_2_on_usage_errors)
{
    serving();
    const char *const *const cases[] = {
        (const char *const[]){"-s", sock_path, NULL},
        (const char *const[]){"-s", sock_path, "wake", NULL},
        (const char *const[]){"-s", sock_path, "interval", "Idle", NULL},
        (const char *const[]){"-t", "abc", "-s", sock_path, "status", NULL},
        (const char *const[]){"-s", NULL},
    };
    struct child *c = test_alloc(sizeof *c);
    int rc = ctl_run(c, STDERR_FILENO, cases[_i]);
    ck_assert_msg(rc == 2, "case %d exited %d", _i, rc);
    ck_assert_msg(c->len > 0, "case %d: nothing on stderr", _i);
}
END_TEST

START_TEST(test_ctl_exits_2_without_a_socket)
{
    char none[256];
    in_dir(none, sizeof none, "none.sock");
    struct child *c = test_alloc(sizeof *c);
    ck_assert_int_eq(CTL(c, STDERR_FILENO, "-s", none, "status"), 2);
    ck_assert_msg(c->len > 0, "nothing on stderr");
    /* Nor -s nor LOOPSVC_CONTROL_SOCKET. */
    unsetenv("LOOPSVC_CONTROL_SOCKET");
    ck_assert_int_eq(CTL(c, STDERR_FILENO, "status"), 2);
    ck_assert_msg(c->len > 0, "nothing on stderr");
}
END_TEST

START_TEST(test_ctl_takes_the_path_from_the_environment_and_s_first)
{
    char none[256];
    /* Set before the group's threads exist. */
    setenv("LOOPSVC_CONTROL_SOCKET", sock_path, 1);
    serving();
    struct child *c = test_alloc(sizeof *c);
    ck_assert_int_eq(CTL(c, STDOUT_FILENO, "status"), 0);
    ck_assert_ptr_nonnull(strstr(c->text, "Two Words"));
    ck_assert_int_eq(CTL(c, STDOUT_FILENO, "-s",
                         in_dir(none, sizeof none, "none.sock"), "status"),
                     2);
    ck_assert_int_eq(CTL(c, STDOUT_FILENO, "wake", "Idle"), 0);
}
END_TEST

START_TEST(test_ctl_t_bounds_a_server_that_does_not_answer)
{
    char silent[256];
    int fd = listen_at(in_dir(silent, sizeof silent, "silent.sock"));
    struct child *c = test_alloc(sizeof *c);
    int64_t start = now_ns();
    ck_assert_int_eq(CTL(c, STDERR_FILENO, "-t", "1", "-s", silent, "status"),
                     2);
    double took = seconds_since(start);
    ck_assert_msg(took > 0.5 && took < 5, "gave up after %.3f s", took);
    ck_assert_msg(c->len > 0, "nothing on stderr");
    close(fd);
}
END_TEST

/* --- A storm -------------------------------------------------------------- */

#define STORMERS 4
#define STORM_REPLIES 2000 /* replies to the clients before the stop */
#define STORM_CTL_RUNS 5    /* loopsvcctl runs before the stop */

struct storm {
    atomic_bool stopping; /* set before the group is stopped */
    sem_t replies;        /* posted at each reply to a client */
    sem_t ctl_runs;       /* posted at each loopsvcctl run */
    const struct gfx *t;
};

struct stormer {
    pthread_t thread;
    struct storm *s;
    int id;
    char error[512]; /* the first thing that went wrong; empty if none */
};

static const char *const storm_commands[] = {
    "status",       "metrics",     "wake Fast",
    "pause Idle",   "resume Idle", "interval Two Words 30",
    "wake Two Words", "pause Two Words", "interval Two Words 60",
    "resume Two Words", "help",    "wake Idle",
};
#define STORM_COMMANDS (sizeof storm_commands / sizeof *storm_commands)

/* Why a reply to a command is wrong before the stop; NULL if right. */
static const char *storm_wrong(const char *command, const char *reply,
                               const struct gfx *t)
{
    if (strcmp(command, "status") == 0)
        return reply_lines(reply) == 1 + t->n ? NULL : "not 1 + 3 lines";
    if (strcmp(command, "metrics") == 0)
        return strstr(reply, "loopsvc_runs_total{service=\"Fast\"}") != NULL
                   ? NULL
                   : "no loopsvc_runs_total";
    if (strcmp(command, "help") == 0)
        return reply_lines(reply) > 1 ? NULL : "not the commands";
    return starts_with(reply, "ok: ") && reply_lines(reply) == 1 ? NULL
                                                                 : "not ok";
}

/* Connections of 20 commands each until the stop; a failure before the
 * stop is an error. */
static void *storm_client(void *arg)
{
    struct stormer *w = arg;
    struct client *c = malloc(sizeof *c);
    bool done = c == NULL;
    for (unsigned n = (unsigned)w->id; !done;) {
        if (client_connect(c, sock_path) != 0) {
            if (!atomic_load(&w->s->stopping))
                snprintf(w->error, sizeof w->error, "client %d: connect: %s",
                         w->id, strerror(errno));
            break;
        }
        for (int i = 0; i < 20 && !done; i++, n++) {
            const char *command = storm_commands[n % STORM_COMMANDS];
            const char *reply = call_within(c, command, REPLY_S);
            bool stopping = atomic_load(&w->s->stopping);
            const char *wrong = reply == NULL ? "no reply"
                                              : storm_wrong(command, reply,
                                                            w->s->t);
            if (stopping) {
                done = reply == NULL;
            } else if (wrong != NULL) {
                snprintf(w->error, sizeof w->error,
                         "client %d: \"%s\": %s: \"%.200s\"", w->id, command,
                         wrong, reply ? reply : "");
                done = true;
            } else {
                sem_post(&w->s->replies);
            }
        }
        client_close(c);
        done = done || atomic_load(&w->s->stopping);
    }
    free(c);
    return NULL;
}

/* loopsvcctl processes, one after the other, until the stop. */
static void *storm_ctl(void *arg)
{
    struct stormer *w = arg;
    struct child *c = malloc(sizeof *c);
    static const char *const commands[][3] = {
        {"status"}, {"wake", "Fast"}, {"interval", "Idle", "30"},
        {"pause", "Idle"}, {"resume", "Idle"}, {"metrics"},
    };
    for (unsigned n = 0; c != NULL && !atomic_load(&w->s->stopping); n++) {
        const char *const *cmd = commands[n % 6];
        const char *argv[] = {getenv("LOOPSVCCTL"), "-s", sock_path, cmd[0],
                              cmd[1], cmd[2], NULL};
        int rc = ctl_exec(c, argv, STDOUT_FILENO);
        bool stopping = atomic_load(&w->s->stopping);
        if (!stopping && rc != 0) {
            snprintf(w->error, sizeof w->error,
                     "loopsvcctl %s: exit %d: \"%.200s\"", cmd[0], rc,
                     c->text);
            break;
        }
        if (!stopping)
            sem_post(&w->s->ctl_runs);
    }
    free(c);
    return NULL;
}

START_TEST(test_storm_of_clients_while_the_group_runs_and_stops)
{
    ctl_program();
    struct gfx *t = serving();
    struct storm s = {.t = t};
    struct stormer w[STORMERS + 1];
    atomic_init(&s.stopping, false);
    sems_init(2, &s.replies, &s.ctl_runs);
    for (int i = 0; i <= STORMERS; i++) {
        w[i] = (struct stormer){.s = &s, .id = i};
        ck_assert_int_eq(pthread_create(&w[i].thread, NULL,
                                        i < STORMERS ? storm_client
                                                     : storm_ctl,
                                        &w[i]),
                         0);
    }
    bool stormed = sem_wait_n(&s.replies, STORM_REPLIES, 30) &&
                   sem_wait_n(&s.ctl_runs, STORM_CTL_RUNS, 10);
    check_fast_runs(t);
    atomic_store(&s.stopping, true);
    gfx_stop(t);
    for (int i = 0; i <= STORMERS; i++)
        pthread_join(w[i].thread, NULL);
    sems_destroy(2, &s.replies, &s.ctl_runs);
    for (int i = 0; i <= STORMERS; i++)
        ck_assert_msg(w[i].error[0] == '\0', "%s", w[i].error);
    ck_assert_msg(stormed, "fewer than %d replies or %d loopsvcctl runs",
                  STORM_REPLIES, STORM_CTL_RUNS);
    ck_assert(!path_exists(sock_path));
}
END_TEST

/* --- The suite ------------------------------------------------------------ */

static TCase *add_case(Suite *s, const char *name, const TTest *const *tests)
{
    TCase *tc = add_tests(s, name, tests);
    tcase_add_checked_fixture(tc, setup, NULL);
    return tc;
}

int main(void)
{
    Suite *s = suite_create("ctlsock");
    add_case(s, "protocol", (const TTest *[]){
        test_status_has_a_header_and_a_row_per_service,
        test_status_shows_a_paused_service_as_paused,
        test_status_health_column_shows_a_failing_service,
        test_status_columns_fit_their_widest_cell,
        test_metrics_is_the_text_of_lsvc_group_metrics,
        test_wake_runs_the_service_and_counts_a_wake,
        test_pause_and_resume_set_paused_in_the_stats,
        test_interval_sets_the_loop_seconds_and_refuses_bad_values,
        test_help_names_every_command,
        test_unknown_command_is_an_error_and_the_connection_stays,
        test_unknown_service_is_an_error_and_the_connection_stays,
        test_a_name_with_spaces_is_the_rest_of_the_line,
        test_commands_sent_together_are_answered_in_order,
        test_commands_never_wait_for_a_run_in_progress,
        test_a_last_line_without_its_newline_is_answered_at_shutdown,
        test_numbers_are_read_and_written_in_the_c_locale, NULL});
    TCase *file = add_case(s, "socket file", (const TTest *[]){
        test_socket_is_mode_0600_whatever_the_umask,
        test_socket_is_removed_when_the_wait_ends_and_made_again,
        test_failed_start_leaves_no_socket,
        test_null_path_turns_the_socket_off,
        test_start_is_eaddrinuse_while_another_group_serves_the_path,
        test_start_fails_with_what_bind_returns,
        test_a_stale_socket_is_replaced,
        test_a_path_longer_than_a_socket_address_is_enametoolong,
        test_setting_the_socket_while_started_is_ebusy, NULL});
    tcase_add_loop_test(
        file, test_start_is_eexist_on_a_path_that_is_not_a_socket, 0, 2);
    add_case(s, "hostile", (const TTest *[]){
        test_a_peer_of_another_uid_is_refused_and_logged,
        test_a_thousand_connects_leave_the_server_serving,
        test_a_line_over_4_kib_gets_an_error_and_is_closed,
        test_a_line_of_1_mib_gets_an_error_or_a_hang_up,
        test_a_client_that_never_reads_delays_no_other,
        test_a_17th_client_is_told_so_and_closed,
        test_idle_clients_are_dropped_after_10_s, NULL});
    TCase *ctl = add_case(s, "loopsvcctl", (const TTest *[]){
        test_ctl_status_and_help_exit_0_without_the_empty_line,
        test_ctl_exits_1_on_an_unknown_service,
        test_ctl_joins_a_name_of_several_args,
        test_ctl_exits_2_without_a_socket,
        test_ctl_takes_the_path_from_the_environment_and_s_first,
        test_ctl_t_bounds_a_server_that_does_not_answer, NULL});
    tcase_add_loop_test(ctl, test_ctl_exits_2_on_usage_errors, 0, 5);
    add_case(s, "storm", (const TTest *[]){
        test_storm_of_clients_while_the_group_runs_and_stops, NULL});
    return run_suite(s);
}
