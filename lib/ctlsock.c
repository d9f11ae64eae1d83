/*
 * The control socket: a Unix stream socket on which an operator (or
 * loopsvcctl) looks at a started group and steers its services, one
 * command per line, each reply ending with an empty line.
 *
 * One thread serves every client with poll(). It never blocks on a client
 * (every socket is non-blocking, and a client that does not read its reply
 * is not read from until it has) nor on a service (a pause does not wait
 * for the run in progress), so no client can delay a run, or another
 * client, for longer than the text of one reply takes to make.
 *
 * What protects the socket is the peer's credentials, checked at accept:
 * the file's mode (0600) is only the first fence, and an operator may open
 * it up.
 */
#define _GNU_SOURCE /* only takes effect for the extensions config.h found */
#include "config.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096   /* without its newline */
#define IN_MAX (LINE_MAX_BYTES + 1)
#define MAX_CLIENTS 16
#define CLIENT_TIMEOUT_NS (10 * LSVC_NS_PER_SEC)
#define REFUSED_WARN_PERIOD_NS (60 * LSVC_NS_PER_SEC)
#define ACCEPT_RETRY_NS (100 * INT64_C(1000000))

struct client {
    int fd;                   /* -1: a free slot */
    char in[IN_MAX];          /* a line and its newline, at most */
    size_t in_len;
    char *out;                /* the reply being sent */
    size_t out_len, out_sent;
    bool hang_up;             /* close once the reply is sent */
    int64_t deadline_ns;      /* dropped then, unless it made progress */
};

/* --- Replies ------------------------------------------------------------ */

/* A reply under construction. On allocation failure `failed` is set and
 * the client is hung up on. */
struct reply {
    char *text;
    size_t len, cap;
    bool failed;
};

static void put(struct reply *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(struct reply *r, const char *fmt, ...)
{
    va_list ap;

    for (;;) {
        size_t room = r->cap - r->len;
        char *at = r->text != NULL ? r->text + r->len : NULL;
        va_start(ap, fmt);
        int n = r->failed ? 0 : vsnprintf(at, room, fmt, ap);
        va_end(ap);
        if (r->failed || n < 0) {
            r->failed = true;
            return;
        }
        if ((size_t)n < room) {
            r->len += (size_t)n;
            return;
        }
        size_t cap = r->cap * 2 + (size_t)n + 64;
        char *text = realloc(r->text, cap);
        if (text == NULL) {
            r->failed = true;
            return;
        }
        r->text = text;
        r->cap = cap;
    }
}

/* A span of time for people: 850ms, 2.5s, 12m, 3.0h. */
static void span(char *out, size_t size, const char *before, int64_t ns,
                 const char *after)
{
    double s = (double)ns / 1e9;

    if (s < 1)
        snprintf(out, size, "%s%.0fms%s", before, s * 1e3, after);
    else if (s < 120)
        snprintf(out, size, "%s%.1fs%s", before, s, after);
    else if (s < 7200)
        snprintf(out, size, "%s%.1fm%s", before, s / 60, after);
    else
        snprintf(out, size, "%s%.1fh%s", before, s / 3600, after);
}

static const char *state_of(const struct lsvc_member *m,
                            const struct lsvc_status *st)
{
    if (m->skip)
        return "disabled";
    if (!st->stats.running)
        return "stopped";
    return st->stats.paused ? "paused" : "running";
}

/* When a running service between runs runs next. */
static void next_run(char *out, size_t size, const struct lsvc_status *st,
                     int64_t now)
{
    if (st->stats.paused)
        snprintf(out, size, "paused");
    else if (st->next_due_ns == LSVC_FOREVER)
        snprintf(out, size, "on wake");
    else if (st->next_due_ns <= now)
        snprintf(out, size, "due");
    else
        span(out, size, "in ", st->next_due_ns - now, "");
}

/* The columns of a status reply. */
enum { SERVICE, STATE, INTERVAL, RUNS, ERRORS, LAST_RUN, NEXT_RUN, HEALTH,
       LEASE, COLUMNS };

static const char *const headers[COLUMNS] = {
    "SERVICE", "STATE", "INTERVAL", "RUNS", "ERRORS", "LAST-RUN",
    "NEXT-RUN", "HEALTH", "LEASE",
};

/* Widths that the usual cells fit, so that a table watched over time
 * keeps its shape; a wider cell widens its column. */
static const size_t min_width[COLUMNS] = { 7, 8, 8, 8, 6, 10, 9, 7, 5 };

/* One member's row: its cells, taken from one snapshot of its state. */
struct status_row {
    const char *cell[COLUMNS];
    char interval[32], runs[24], errors[24], last[32], next[32];
};

static void fill_row(struct status_row *row, const struct lsvc_member *m,
                     int64_t now)
{
    struct lsvc_status st;

    lsvc__stats_status(m->svc, &st);
    snprintf(row->interval, sizeof row->interval, "never");
    if (st.interval_ns != LSVC_FOREVER)
        span(row->interval, sizeof row->interval, "", st.interval_ns, "");
    snprintf(row->runs, sizeof row->runs, "%llu",
             (unsigned long long)st.stats.loops);
    snprintf(row->errors, sizeof row->errors, "%llu",
             (unsigned long long)st.stats.errors);
    snprintf(row->last, sizeof row->last, "-");
    if (st.in_run)
        snprintf(row->last, sizeof row->last, "running");
    else if (st.last_start_ns != 0)
        span(row->last, sizeof row->last, "", now - st.last_start_ns, " ago");
    snprintf(row->next, sizeof row->next, "-");
    if (st.stats.running && !st.in_run)
        next_run(row->next, sizeof row->next, &st, now);
    const char *const cells[COLUMNS] = {
        lsvc_name(m->svc), state_of(m, &st), row->interval, row->runs,
        row->errors, row->last, row->next,
        !st.stats.running ? "-" : st.health ? st.health : "ok",
        !m->svc->leased       ? "-"
        : st.stats.lease_held ? "held"
                              : "not-held",
    };
    memcpy(row->cell, cells, sizeof cells);
}

static void put_row(struct reply *r, const char *const cell[COLUMNS],
                    const size_t width[COLUMNS])
{
    for (int i = 0; i < COLUMNS - 1; i++)
        put(r, "%-*s ", (int)width[i], cell[i]);
    put(r, "%s\n", cell[COLUMNS - 1]);
}

/* A header row, then a row per member, each column as wide as its widest
 * cell, and at least its usual width. */
static void do_status(struct lsvc_ctlsock *c, struct reply *r)
{
    struct status_row *rows = calloc(c->count ? c->count : 1, sizeof *rows);
    size_t width[COLUMNS];
    int64_t now = lsvc__now_ns();

    if (rows == NULL) {
        put(r, "error: out of memory\n");
        return;
    }
    for (int i = 0; i < COLUMNS; i++)
        width[i] = min_width[i];
    for (size_t k = 0; k < c->count; k++) {
        fill_row(&rows[k], &c->members[k], now);
        for (int i = 0; i < COLUMNS; i++) {
            size_t len = strlen(rows[k].cell[i]);
            if (len > width[i])
                width[i] = len;
        }
    }
    put_row(r, headers, width);
    for (size_t k = 0; k < c->count; k++)
        put_row(r, rows[k].cell, width);
    free(rows);
}

static void do_metrics(struct lsvc_ctlsock *c, struct reply *r)
{
    char *text;
    size_t len;

    if (lsvc__metrics_text(c->group, &text, &len) != 0) {
        put(r, "error: out of memory\n");
        return;
    }
    put(r, "%s", text);
    free(text);
}

static lsvc *find(struct lsvc_ctlsock *c, const char *name)
{
    for (size_t i = 0; i < c->count; i++)
        if (strcmp(lsvc_name(c->members[i].svc), name) == 0)
            return c->members[i].svc;
    return NULL;
}

static void put_result(struct reply *r, int rc, const char *done,
                       const char *name)
{
    char why[128];

    if (rc == 0) {
        put(r, "ok: %s %s\n", done, name);
        return;
    }
    lsvc__strerror(rc, why, sizeof why);
    put(r, "error: %s: %s\n", name, why);
}

/* interval NAME SECONDS: the name is everything before the last space. */
static void do_interval(struct lsvc_ctlsock *c, struct reply *r, char *args)
{
    char *space = strrchr(args, ' ');

    if (space == NULL) {
        put(r, "error: usage: interval NAME SECONDS\n");
        return;
    }
    *space = '\0';
    lsvc *svc = find(c, args);
    const char *value = space + 1;
    double seconds = LSVC_NEVER;
    if (svc == NULL) {
        put(r, "error: no service named \"%s\"\n", args);
    } else if (strcmp(value, "never") != 0 &&
               lsvc__parse_decimal(value, &seconds) != 0) {
        put(r, "error: not a number of seconds, nor never: \"%s\"\n",
            value);
    } else {
        int rc = lsvc_set_loop_seconds(svc, seconds);
        double in_force = lsvc_loop_seconds(svc);
        if (rc != 0)
            put_result(r, rc, "", args);
        else if (in_force != seconds)
            put(r, "error: %s keeps the interval of %g s that the "
                   "environment gives it while the group runs\n",
                args, in_force);
        else
            put(r, isinf(seconds) ? "ok: %s runs only when woken\n"
                                  : "ok: %s runs every %g s\n",
                args, seconds);
    }
}

static const char help_text[] =
    "status               one row per service\n"
    "metrics              the metrics, in Prometheus's text format\n"
    "wake NAME            run NAME now\n"
    "pause NAME           start no run of NAME until resumed\n"
    "resume NAME          let NAME run again\n"
    "interval NAME SECS   run NAME every SECS seconds (never: when woken)\n"
    "help                 this text\n";

static int pause_now(lsvc *svc)
{
    lsvc__pause_nowait(svc);
    return 0;
}

/* The commands that act on one service, named by the rest of the line. */
static const struct {
    const char *command;
    int (*act)(lsvc *svc);
    const char *done;
} actions[] = {
    {"wake", lsvc_wake, "woke"},
    {"pause", pause_now, "paused"},
    {"resume", lsvc_resume, "resumed"},
};

static bool act(struct lsvc_ctlsock *c, struct reply *r, const char *command,
                const char *name)
{
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        if (strcmp(command, actions[i].command) != 0)
            continue;
        lsvc *svc = find(c, name);
        if (svc == NULL)
            put(r, "error: no service named \"%s\"\n", name);
        else if (!lsvc_is_running(svc))
            put(r, "error: %s is not running\n", name);
        else
            put_result(r, actions[i].act(svc), actions[i].done, name);
        return true;
    }
    return false;
}

/* Answers one line. */
static void answer(struct lsvc_ctlsock *c, struct reply *r, char *line)
{
    size_t len = strlen(line);
    char *args;

    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    args = strchr(line, ' ');
    if (args != NULL)
        *args++ = '\0';

    if (strcmp(line, "status") == 0 && args == NULL)
        do_status(c, r);
    else if (strcmp(line, "metrics") == 0 && args == NULL)
        do_metrics(c, r);
    else if (strcmp(line, "help") == 0 && args == NULL)
        put(r, "%s", help_text);
    else if (strcmp(line, "interval") == 0 && args != NULL)
        do_interval(c, r, args);
    else if (args != NULL && act(c, r, line, args))
        ;
    else if (*line == '\0')
        put(r, "error: empty command; try help\n");
    else
        put(r, "error: unknown command or arguments: \"%s\"; try help\n",
            line);
    put(r, "\n");
}

/* --- Clients ------------------------------------------------------------ */

/* Non-blocking, and closed in a child that execs. */
static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return -1;
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static void drop(struct client *cl)
{
    close(cl->fd);
    free(cl->out);
    *cl = (struct client){.fd = -1};
}

/* Queues text and, with hang_up, closes once it is sent. */
static void queue(struct client *cl, char *text, size_t len, bool hang_up)
{
    cl->out = text;
    cl->out_len = len;
    cl->out_sent = 0;
    cl->hang_up |= hang_up;
}

/* A short refusal, sent once without waiting, before closing. */
static void refuse(int fd, const char *why)
{
    ssize_t n = send(fd, why, strlen(why), MSG_NOSIGNAL);
    (void)n;
    close(fd);
}

/* Whether the peer is this process's effective user or root. */
static bool peer_allowed(int fd, long *uid, long *pid)
{
    *uid = -1;
    *pid = -1;
#if HAVE_SO_PEERCRED
    struct ucred cred;
    socklen_t len = sizeof cred;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return false;
    *uid = (long)cred.uid;
    *pid = (long)cred.pid;
    return cred.uid == 0 || cred.uid == geteuid();
#elif HAVE_GETPEEREID
    uid_t u;
    gid_t gid;

    if (getpeereid(fd, &u, &gid) != 0)
        return false;
    *uid = (long)u;
    return u == 0 || u == geteuid();
#else
    (void)fd;
    return false;
#endif
}

static void accept_client(struct lsvc_ctlsock *c, struct client *clients,
                          int64_t now)
{
    int fd = accept(c->fd, NULL, NULL);
    long uid, pid;
    uint64_t suppressed;

    if (fd < 0) {
        /* Out of descriptors or memory: the connection stays queued, and
         * the listener is left alone for a while rather than polled in a
         * busy loop. */
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
            errno == ENOMEM)
            c->listen_again_ns = now + ACCEPT_RETRY_NS;
        return;
    }
    if (!peer_allowed(fd, &uid, &pid)) {
        refuse(fd, "error: permission denied\n\n");
        if (lsvc__ratelimit_admit(&c->refused_rl, now, &suppressed))
            lsvc__log(LSVC_LOG_WARNING, "loopsvc",
                      "Refused a connection to the control socket %s from "
                      "uid %ld (pid %ld): only uid %ld (and root) is "
                      "served.%s",
                      c->path, uid, pid, (long)geteuid(),
                      suppressed ? " Later refusals are logged once a minute."
                                 : "");
        return;
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (clients[i].fd != -1)
            continue;
        if (set_flags(fd) != 0)
            break;
        clients[i].fd = fd;
        clients[i].deadline_ns = now + CLIENT_TIMEOUT_NS;
        return;
    }
    refuse(fd, "error: too many clients\n\n");
}

/* Answers the first complete line in cl's input, if any. */
static void take_line(struct lsvc_ctlsock *c, struct client *cl, int64_t now)
{
    char *nl = memchr(cl->in, '\n', cl->in_len);

    if (nl == NULL) {
        if (cl->in_len == IN_MAX) {
            static const char too_long[] =
                "error: line longer than 4096 bytes\n\n";
            char *text = strdup(too_long);
            if (text == NULL) {
                drop(cl);
                return;
            }
            queue(cl, text, strlen(text), true);
        }
        return;
    }
    struct reply r = {0};
    *nl = '\0';
    locale_t previous = lsvc__use_c_locale();
    answer(c, &r, cl->in);
    lsvc__restore_locale(previous);
    size_t used = (size_t)(nl + 1 - cl->in);
    memmove(cl->in, nl + 1, cl->in_len - used);
    cl->in_len -= used;
    if (r.failed) {
        free(r.text);
        drop(cl);
        return;
    }
    queue(cl, r.text, r.len, false);
    cl->deadline_ns = now + CLIENT_TIMEOUT_NS;
}

static void read_client(struct lsvc_ctlsock *c, struct client *cl, int64_t now)
{
    ssize_t n = recv(cl->fd, cl->in + cl->in_len, IN_MAX - cl->in_len, 0);

    if (n == 0 && cl->in_len > 0 && cl->in_len < IN_MAX) {
        /* The last line came without its newline: answered, then the
         * connection is closed. */
        cl->in[cl->in_len++] = '\n';
        cl->hang_up = true;
        take_line(c, cl, now);
        return;
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(cl);
        return;
    }
    if (n > 0)
        cl->in_len += (size_t)n;
    take_line(c, cl, now);
}

static void write_client(struct lsvc_ctlsock *c, struct client *cl,
                         int64_t now)
{
    ssize_t n = send(cl->fd, cl->out + cl->out_sent,
                     cl->out_len - cl->out_sent, MSG_NOSIGNAL);

    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        drop(cl);
        return;
    }
    if (n <= 0)
        return;
    cl->out_sent += (size_t)n;
    cl->deadline_ns = now + CLIENT_TIMEOUT_NS;
    if (cl->out_sent < cl->out_len)
        return;
    free(cl->out);
    cl->out = NULL;
    if (cl->hang_up)
        drop(cl);
    else
        take_line(c, cl, now); /* a command sent before this reply ended */
}

/* --- The thread --------------------------------------------------------- */

static void *control_main(void *arg)
{
    struct lsvc_ctlsock *c = arg;
    struct client clients[MAX_CLIENTS];
    struct pollfd fds[MAX_CLIENTS + 2];

    lsvc__thread_name("lsvc-control");
    for (int i = 0; i < MAX_CLIENTS; i++)
        clients[i] = (struct client){.fd = -1};
    for (;;) {
        int64_t now = lsvc__now_ns(), next = LSVC_FOREVER;
        nfds_t n = 0;

        fds[n++] = (struct pollfd){.fd = c->quit[0], .events = POLLIN};
        bool listening = now >= c->listen_again_ns;
        fds[n++] = (struct pollfd){.fd = listening ? c->fd : -1,
                                   .events = POLLIN};
        if (!listening)
            next = c->listen_again_ns;
        for (int i = 0; i < MAX_CLIENTS; i++) {
            struct client *cl = &clients[i];

            if (cl->fd != -1 && now >= cl->deadline_ns)
                drop(cl);
            if (cl->fd == -1) {
                fds[n++] = (struct pollfd){.fd = -1};
                continue;
            }
            if (cl->deadline_ns < next)
                next = cl->deadline_ns;
            fds[n++] = (struct pollfd){
                .fd = cl->fd, .events = cl->out ? POLLOUT : POLLIN};
        }
        int64_t wait_ms = next == LSVC_FOREVER
                              ? -1
                              : (next - now) / 1000000 + 1;
        if (poll(fds, n, (int)wait_ms) < 0 && errno != EINTR) {
            char why[128];

            lsvc__strerror(errno, why, sizeof why);
            lsvc__log(LSVC_LOG_ERROR, "loopsvc",
                      "The control socket %s is no longer served: poll "
                      "failed: %s.", c->path, why);
            break;
        }
        if (fds[0].revents != 0)
            break;
        now = lsvc__now_ns();
        for (int i = 0; i < MAX_CLIENTS; i++) {
            struct client *cl = &clients[i];
            short ev = fds[i + 2].revents;

            if (cl->fd == -1 || ev == 0)
                continue;
            if (cl->out != NULL)
                write_client(c, cl, now);
            else
                read_client(c, cl, now);
        }
        if (fds[1].revents != 0)
            accept_client(c, clients, now);
    }
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i].fd != -1)
            drop(&clients[i]);
    return NULL;
}

/* --- The socket file ---------------------------------------------------- */

/* Makes room for the socket at path: EEXIST when something else is
 * there, EADDRINUSE when a live process serves it; a socket nobody
 * serves is removed. The probe does not block, so a server that does not
 * accept (its backlog full) cannot hold up the start: it counts as
 * live. */
static int clear_path(const struct sockaddr_un *addr)
{
    struct stat st;

    if (lstat(addr->sun_path, &st) != 0)
        return errno == ENOENT ? 0 : errno;
    if (!S_ISSOCK(st.st_mode))
        return EEXIST;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return errno;
    int rc = set_flags(fd);
    if (rc == 0)
        rc = connect(fd, (const struct sockaddr *)addr, sizeof *addr);
    int err = errno;
    close(fd);
    if (rc == 0 || err == EAGAIN || err == EINPROGRESS)
        return EADDRINUSE;
    if (err != ECONNREFUSED)
        return err;
    return unlink(addr->sun_path) == 0 || errno == ENOENT ? 0 : errno;
}

/* Removes the socket file, if it is still the one this group made. */
static void remove_socket(struct lsvc_ctlsock *c)
{
    struct stat st;

    if (lstat(c->path, &st) == 0 && st.st_dev == c->dev &&
        st.st_ino == c->ino)
        unlink(c->path);
}

static int open_socket(struct lsvc_ctlsock *c)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct stat st;
    int rc;

    if (strlen(c->path) >= sizeof addr.sun_path)
        return ENAMETOOLONG;
    strcpy(addr.sun_path, c->path);
    if ((rc = clear_path(&addr)) != 0)
        return rc;
    c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (c->fd < 0)
        return errno;
    if (set_flags(c->fd) != 0) {
        rc = errno;
        goto fail;
    }
    if (bind(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        rc = errno;
        goto fail;
    }
    /* Listening at once, so that another starter's probe finds it live
     * and leaves it alone; a peer that connects before the chmod is
     * still checked by its credentials. */
    if (listen(c->fd, MAX_CLIENTS) != 0 || lstat(c->path, &st) != 0) {
        rc = errno;
        unlink(c->path);
        goto fail;
    }
    c->dev = st.st_dev;
    c->ino = st.st_ino;
    if (chmod(c->path, 0600) != 0) {
        rc = errno;
        remove_socket(c);
        goto fail;
    }
    return 0;
fail:
    close(c->fd);
    return rc;
}

int lsvc__ctlsock_start(struct lsvc_ctlsock *c, const char *path,
                        lsvc_group *g, struct lsvc_member *members,
                        size_t count)
{
    static const lsvc_options defaults;
    pthread_attr_t attr;
    int rc;

    *c = (struct lsvc_ctlsock){
        .group = g, .members = members, .count = count, .path = path};
    lsvc__ratelimit_init(&c->refused_rl, REFUSED_WARN_PERIOD_NS);
    if ((rc = open_socket(c)) != 0)
        return rc;
    if (pipe(c->quit) != 0) {
        rc = errno;
        goto no_pipe;
    }
    fcntl(c->quit[0], F_SETFD, FD_CLOEXEC);
    fcntl(c->quit[1], F_SETFD, FD_CLOEXEC);
    if ((rc = lsvc__thread_attr(&attr, &defaults)) != 0)
        goto no_thread;
    rc = lsvc__spawn(&c->thread, &attr, control_main, c);
    pthread_attr_destroy(&attr);
    if (rc == 0)
        return 0;
no_thread:
    close(c->quit[0]);
    close(c->quit[1]);
no_pipe:
    remove_socket(c);
    close(c->fd);
    return rc;
}

void lsvc__ctlsock_stop(struct lsvc_ctlsock *c)
{
    ssize_t n = write(c->quit[1], "", 1);

    (void)n;
    pthread_join(c->thread, NULL);
    remove_socket(c);
    close(c->fd);
    close(c->quit[0]);
    close(c->quit[1]);
}
