/*
 * kvserver: an in-memory key-value store over TCP, and the worked example
 * of linking loopsvc into a multithreaded server.
 *
 * What it shows:
 *  - the one ordering rule for signals: lsvc_block_signals() before any
 *    thread exists, so that SIGINT and SIGTERM reach only the group's
 *    signal thread, and lsvc_group_run() returns instead of the process
 *    dying;
 *  - chores as services beside the server's own threads: "kv-expiry"
 *    removes expired keys every 100 ms, "kv-stats" reports every second;
 *  - a shutdown that leaves nothing behind: every thread blocked in
 *    accept(), recv() or send() is woken with shutdown() and joined, and
 *    the server checks that main is its last thread;
 *  - the chores made visible to operators: the group's metrics for
 *    Prometheus and its health for a load balancer, over HTTP, and its
 *    control socket for loopsvcctl (status, wake, pause, resume,
 *    interval).
 *
 * Protocol: one request per line, at most MAX_LINE bytes before the '\n'
 * (a '\r' just before it is ignored), and one reply line to each.
 *   SET <key> <ttl_ms> <value>  OK             (ttl_ms 0: never expires)
 *   GET <key>                   VALUE <value> | NOTFOUND
 *   DEL <key>                   DELETED | NOTFOUND
 *   STATS                       STATS keys=<n> expired=<n> connections=<n>
 *   anything else               ERR <reason>
 * STATS counts the keys stored, those the sweep removed so far, and the
 * connections open.
 * A key is 1 to MAX_KEY bytes without spaces; the value is the rest of the
 * line, spaces included. No request may hold a control character. A key
 * past its TTL is never returned, though it stays stored (and counted in
 * keys=) until the next sweep.
 *
 * HTTP, with -m: GET /metrics answers the group's metrics in Prometheus's
 * text format; GET /healthz answers 200 "ok" while every chore makes
 * progress, else 503 and which one does not, and why; anything else 404.
 *
 * Usage: kvserver [-m HTTP_PORT] [-c CONTROL_SOCKET] PORT
 *   PORT        the key-value port on 127.0.0.1 (0: any free port)
 *   -m          also serve HTTP on 127.0.0.1:HTTP_PORT (0: any free port)
 *   -c          serve loopsvcctl's control socket at this path
 * Once it serves, it prints "listening on 127.0.0.1:<port>" and, with -m,
 * "http on 127.0.0.1:<port>", each on a line of its own.
 */
#include <loopsvc.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE 4096                   /* request bytes before the '\n' */
#define MAX_KEY 250                     /* bytes */
#define MAX_KEYS 100000                 /* a full table refuses new keys */
#define MAX_TTL_MS INT64_C(31536000000) /* 365 days */
#define MAX_CONNS 64                    /* connections served at once */
#define BUCKETS 4096
/* How long a stop waits for a sweep in progress. The default, one
 * interval, is only 100 ms for kv-expiry: too tight on a loaded machine. */
#define STOP_SECONDS 5.0

#define NS_PER_MS INT64_C(1000000)

/* --- Logging ------------------------------------------------------------ */

/* One write() per line, as loopsvc's default sink does, so that the
 * server's lines and the library's never interleave on stderr. */
static void kv_log(const char *fmt, ...)
{
    char line[512] = "kvserver: ";
    size_t len = strlen(line);
    size_t room = sizeof line - len - 1; /* for the text and its NUL */
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(line + len, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    len += (size_t)n < room ? (size_t)n : room - 1;
    line[len++] = '\n';
    if (write(STDERR_FILENO, line, len) < 0) {
        /* Nowhere left to report it. */
    }
}

static const char *describe(int err, char *buf, size_t size)
{
    if (strerror_r(err, buf, size) != 0)
        snprintf(buf, size, "error %d", err);
    return buf;
}

/* CLOCK_MONOTONIC: TTLs must not move when someone sets the wall clock. */
static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 * NS_PER_MS + ts.tv_nsec;
}

/* --- The table ---------------------------------------------------------- */

struct entry {
    struct entry *next;
    int64_t expires_ns; /* 0: never */
    size_t key_len, value_len;
    char data[];        /* the key, then the value; no terminators */
};

struct table {
    /* Protects every field below. GET and STATS share it; SET, DEL and the
     * sweep take it alone. */
    pthread_rwlock_t lock;
    struct entry *buckets[BUCKETS];
    size_t count;      /* entries stored, expired or not */
    uint64_t expired;  /* entries the sweep removed */
};

static bool is_live(const struct entry *e, int64_t now)
{
    return e->expires_ns == 0 || now < e->expires_ns;
}

/* FNV-1a: short, and good enough for keys chosen by clients. */
static size_t bucket_of(const char *key, size_t len)
{
    uint64_t h = UINT64_C(14695981039346656037);

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * UINT64_C(1099511628211);
    return (size_t)(h % BUCKETS);
}

/* The link that points at the key's entry, or the NULL link at the end of
 * its chain. Caller holds the lock. */
static struct entry **find(struct table *t, const char *key, size_t len)
{
    struct entry **link = &t->buckets[bucket_of(key, len)];

    while (*link != NULL && ((*link)->key_len != len ||
                             memcmp((*link)->data, key, len) != 0))
        link = &(*link)->next;
    return link;
}

static int table_init(struct table *t)
{
    memset(t, 0, sizeof *t);
    return pthread_rwlock_init(&t->lock, NULL);
}

/* Returns 0, ENOMEM, or ENOSPC when the key is new and the table full. */
static int table_set(struct table *t, const char *key, size_t key_len,
                     const char *value, size_t value_len, int64_t ttl_ms)
{
    struct entry *e = malloc(sizeof *e + key_len + value_len);
    struct entry *old = NULL;
    int rc = 0;

    if (e == NULL)
        return ENOMEM;
    e->expires_ns = ttl_ms == 0 ? 0 : now_ns() + ttl_ms * NS_PER_MS;
    e->key_len = key_len;
    e->value_len = value_len;
    memcpy(e->data, key, key_len);
    memcpy(e->data + key_len, value, value_len);

    pthread_rwlock_wrlock(&t->lock);
    struct entry **link = find(t, key, key_len);
    if (*link != NULL) {
        old = *link;
        e->next = old->next;
        *link = e;
    } else if (t->count >= MAX_KEYS) {
        rc = ENOSPC;
    } else {
        e->next = NULL;
        *link = e;
        t->count++;
    }
    pthread_rwlock_unlock(&t->lock);
    free(rc == 0 ? old : e);
    return rc;
}

/* Copies a live key's value to out (at least MAX_LINE bytes, which no
 * value exceeds) and returns its length, or -1 when there is none. */
static long table_get(struct table *t, const char *key, size_t key_len,
                      char *out)
{
    int64_t now = now_ns();
    long len = -1;

    pthread_rwlock_rdlock(&t->lock);
    const struct entry *e = *find(t, key, key_len);
    if (e != NULL && is_live(e, now)) {
        memcpy(out, e->data + e->key_len, e->value_len);
        len = (long)e->value_len;
    }
    pthread_rwlock_unlock(&t->lock);
    return len;
}

/* Removes the key; true when it was live. */
static bool table_del(struct table *t, const char *key, size_t key_len)
{
    int64_t now = now_ns();
    struct entry *e;

    pthread_rwlock_wrlock(&t->lock);
    struct entry **link = find(t, key, key_len);
    e = *link;
    if (e != NULL) {
        *link = e->next;
        t->count--;
    }
    pthread_rwlock_unlock(&t->lock);
    bool live = e != NULL && is_live(e, now);
    free(e);
    return live;
}

/* Unlinks every expired entry under the lock and frees them after it, so
 * that readers wait for pointer moves only. */
static void table_sweep(struct table *t, int64_t now)
{
    struct entry *dead = NULL;

    pthread_rwlock_wrlock(&t->lock);
    for (size_t b = 0; b < BUCKETS; b++) {
        struct entry **link = &t->buckets[b];
        while (*link != NULL) {
            struct entry *e = *link;
            if (is_live(e, now)) {
                link = &e->next;
                continue;
            }
            *link = e->next;
            e->next = dead;
            dead = e;
            t->count--;
            t->expired++;
        }
    }
    pthread_rwlock_unlock(&t->lock);
    while (dead != NULL) {
        struct entry *next = dead->next;
        free(dead);
        dead = next;
    }
}

static void table_stats(struct table *t, size_t *count, uint64_t *expired)
{
    pthread_rwlock_rdlock(&t->lock);
    *count = t->count;
    *expired = t->expired;
    pthread_rwlock_unlock(&t->lock);
}

static void table_destroy(struct table *t)
{
    for (size_t b = 0; b < BUCKETS; b++) {
        while (t->buckets[b] != NULL) {
            struct entry *e = t->buckets[b];
            t->buckets[b] = e->next;
            free(e);
        }
    }
    pthread_rwlock_destroy(&t->lock);
}

/* --- The server --------------------------------------------------------- */

/*
 * A connection slot. FREE, then OPEN once the accept thread gives it a
 * socket and a thread, then DONE when that thread has closed the socket
 * and is about to end; a DONE slot's thread is joined before the slot is
 * used again, or at shutdown.
 */
struct conn {
    struct server *srv;
    enum { SLOT_FREE, SLOT_OPEN, SLOT_DONE } state;
    int fd;
    pthread_t thread;
};

struct server {
    struct table table;
    int listen_fd;
    pthread_t accept_thread;

    /* Protects every field below. While it is held a socket of an OPEN
     * slot stays open, so shutdown() never hits a reused descriptor. */
    pthread_mutex_t lock;
    bool stopping;
    unsigned long long accepted;
    struct conn conns[MAX_CONNS];
};

static bool send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        /* MSG_NOSIGNAL: a client that went away costs its connection,
         * not the process (SIGPIPE). */
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

static void open_connections(struct server *srv, size_t *open,
                             unsigned long long *accepted)
{
    *open = 0;
    pthread_mutex_lock(&srv->lock);
    for (size_t i = 0; i < MAX_CONNS; i++)
        *open += srv->conns[i].state == SLOT_OPEN;
    *accepted = srv->accepted;
    pthread_mutex_unlock(&srv->lock);
}

/* --- Requests ----------------------------------------------------------- */

struct span {
    const char *p;
    size_t n;
};

/* A space, then a word of one or more bytes up to the next space or the
 * end, cut from the front of *rest. */
static bool next_word(struct span *rest, struct span *word)
{
    size_t n = 0;

    *word = (struct span){rest->p, 0};
    if (rest->n == 0 || rest->p[0] != ' ')
        return false;
    while (1 + n < rest->n && rest->p[1 + n] != ' ')
        n++;
    *word = (struct span){rest->p + 1, n};
    rest->p += 1 + n;
    rest->n -= 1 + n;
    return n > 0;
}

static bool span_is(struct span s, const char *word)
{
    return s.n == strlen(word) && memcmp(s.p, word, s.n) == 0;
}

/* Digits only: no sign, no spaces, no exponent, nothing after. */
static bool parse_ttl(struct span s, int64_t *ms)
{
    int64_t v = 0;

    if (s.n == 0)
        return false;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        v = v * 10 + (s.p[i] - '0');
        if (v > MAX_TTL_MS)
            return false;
    }
    *ms = v;
    return true;
}

/* Writes fmt and a '\n' to reply (of `size` bytes, enough for any reply)
 * and returns the length. */
static size_t say(char *reply, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(reply, size - 1, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < size - 1 ? (size_t)n : size - 2;
    reply[len++] = '\n';
    return len;
}

/* Each command gets the rest of its line, from the space after its name. */
static size_t do_set(struct server *srv, struct span args, char *reply,
                     size_t size)
{
    struct span key, ttl;
    int64_t ttl_ms;

    if (!next_word(&args, &key) || !next_word(&args, &ttl) || args.n < 2 ||
        args.p[0] != ' ')
        return say(reply, size, "ERR usage: SET <key> <ttl_ms> <value>");
    if (key.n > MAX_KEY)
        return say(reply, size, "ERR key longer than %d bytes", MAX_KEY);
    if (!parse_ttl(ttl, &ttl_ms))
        return say(reply, size,
                   "ERR ttl_ms must be a whole number from 0 to %lld",
                   (long long)MAX_TTL_MS);
    switch (table_set(&srv->table, key.p, key.n, args.p + 1, args.n - 1,
                      ttl_ms)) {
    case 0: return say(reply, size, "OK");
    case ENOSPC: return say(reply, size, "ERR table full (%d keys)", MAX_KEYS);
    default: return say(reply, size, "ERR out of memory");
    }
}

/* GET and DEL take one key and nothing else. */
static bool one_key(struct span args, struct span *key)
{
    return next_word(&args, key) && args.n == 0;
}

static size_t do_get(struct server *srv, struct span args, char *reply,
                     size_t size)
{
    static const char prefix[] = "VALUE ";
    struct span key;

    if (!one_key(args, &key))
        return say(reply, size, "ERR usage: GET <key>");
    if (key.n > MAX_KEY)
        return say(reply, size, "ERR key longer than %d bytes", MAX_KEY);
    long len = table_get(&srv->table, key.p, key.n, reply + strlen(prefix));
    if (len < 0)
        return say(reply, size, "NOTFOUND");
    memcpy(reply, prefix, strlen(prefix));
    reply[strlen(prefix) + (size_t)len] = '\n';
    return strlen(prefix) + (size_t)len + 1;
}

static size_t do_del(struct server *srv, struct span args, char *reply,
                     size_t size)
{
    struct span key;

    if (!one_key(args, &key))
        return say(reply, size, "ERR usage: DEL <key>");
    if (key.n > MAX_KEY)
        return say(reply, size, "ERR key longer than %d bytes", MAX_KEY);
    return say(reply, size,
               table_del(&srv->table, key.p, key.n) ? "DELETED" : "NOTFOUND");
}

static size_t do_stats(struct server *srv, struct span args, char *reply,
                       size_t size)
{
    size_t keys, open;
    uint64_t expired;
    unsigned long long accepted;

    if (args.n != 0)
        return say(reply, size, "ERR usage: STATS");
    table_stats(&srv->table, &keys, &expired);
    open_connections(srv, &open, &accepted);
    return say(reply, size, "STATS keys=%zu expired=%llu connections=%zu",
               keys, (unsigned long long)expired, open);
}

/* Fills reply (MAX_LINE + 64 bytes) for one request line, without its
 * '\n', and returns the reply's length. */
static size_t handle_request(struct server *srv, struct span line,
                             char *reply, size_t size)
{
    if (line.n > 0 && line.p[line.n - 1] == '\r')
        line.n--;
    for (size_t i = 0; i < line.n; i++) {
        unsigned char c = (unsigned char)line.p[i];
        if (c < 0x20 || c == 0x7f)
            return say(reply, size, "ERR control character in request");
    }
    if (line.n == 0)
        return say(reply, size, "ERR empty request");
    struct span cmd = {line.p, 0};
    while (cmd.n < line.n && line.p[cmd.n] != ' ')
        cmd.n++;
    line.p += cmd.n;
    line.n -= cmd.n;
    if (span_is(cmd, "SET"))
        return do_set(srv, line, reply, size);
    if (span_is(cmd, "GET"))
        return do_get(srv, line, reply, size);
    if (span_is(cmd, "DEL"))
        return do_del(srv, line, reply, size);
    if (span_is(cmd, "STATS"))
        return do_stats(srv, line, reply, size);
    return say(reply, size, "ERR unknown command (SET, GET, DEL, STATS)");
}

/* --- Connections -------------------------------------------------------- */

static void *serve_connection(void *arg)
{
    struct conn *c = arg;
    struct server *srv = c->srv;
    char in[MAX_LINE + 1]; /* one request and its '\n' */
    char out[MAX_LINE + 64];
    size_t len = 0;
    bool skipping = false; /* inside a line too long to serve */
    bool ok = true;

    while (ok) {
        ssize_t n = recv(c->fd, in + len, sizeof in - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the client left, or the shutdown woke us */
        len += (size_t)n;

        size_t start = 0;
        const char *nl;
        while (ok && (nl = memchr(in + start, '\n', len - start)) != NULL) {
            struct span line = {in + start, (size_t)(nl - in) - start};
            if (!skipping)
                ok = send_all(c->fd, out,
                              handle_request(srv, line, out, sizeof out));
            skipping = false;
            start += line.n + 1;
        }
        memmove(in, in + start, len - start);
        len -= start;
        if (ok && len == sizeof in) {
            /* Refuse the line once, then drop the rest of it as it comes:
             * the next line is served as usual. */
            if (!skipping)
                ok = send_all(c->fd, out,
                              say(out, sizeof out,
                                  "ERR line too long (limit %d bytes)",
                                  MAX_LINE));
            skipping = true;
            len = 0;
        }
    }

    pthread_mutex_lock(&srv->lock);
    close(c->fd);
    c->fd = -1;
    c->state = SLOT_DONE;
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

/* Gives a new connection a slot and a thread, or refuses it. */
static void admit(struct server *srv, int fd)
{
    static const char busy[] = "ERR too many connections\n";
    struct conn *c = NULL;
    bool reap = false;
    pthread_t ended;
    char why[128];

    pthread_mutex_lock(&srv->lock);
    bool stopping = srv->stopping;
    for (size_t i = 0; i < MAX_CONNS && c == NULL && !stopping; i++)
        if (srv->conns[i].state != SLOT_OPEN)
            c = &srv->conns[i];
    if (c != NULL) {
        reap = c->state == SLOT_DONE;
        ended = c->thread;
        c->state = SLOT_OPEN;
        c->fd = fd;
        srv->accepted++;
    }
    pthread_mutex_unlock(&srv->lock);
    if (c == NULL) {
        if (!stopping)
            send_all(fd, busy, strlen(busy));
        close(fd);
        return;
    }

    /* Its thread has closed its socket and is ending, if not gone. */
    if (reap)
        pthread_join(ended, NULL);
    int rc = pthread_create(&c->thread, NULL, serve_connection, c);
    if (rc != 0) {
        kv_log("cannot start a connection thread: %s; refused a client.",
               describe(rc, why, sizeof why));
        pthread_mutex_lock(&srv->lock);
        c->state = SLOT_FREE;
        c->fd = -1;
        pthread_mutex_unlock(&srv->lock);
        send_all(fd, busy, strlen(busy));
        close(fd);
    }
}

static bool is_stopping(struct server *srv)
{
    pthread_mutex_lock(&srv->lock);
    bool stopping = srv->stopping;
    pthread_mutex_unlock(&srv->lock);
    return stopping;
}

static void *accept_connections(void *arg)
{
    struct server *srv = arg;
    char why[128];

    for (;;) {
        int fd = accept(srv->listen_fd, NULL, NULL);
        if (fd >= 0) {
            admit(srv, fd);
            continue;
        }
        int err = errno;
        if (is_stopping(srv))
            break;
        if (err == EINTR || err == ECONNABORTED)
            continue;
        kv_log("accept() failed: %s.", describe(err, why, sizeof why));
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
            /* Out of descriptors or memory: wait for some to be freed
             * rather than spin on the pending connection. */
            nanosleep(&(struct timespec){.tv_nsec = 100 * NS_PER_MS}, NULL);
            continue;
        }
        /* Sent to the process, not raised in this thread: it stays pending
         * until the group's signal thread takes it, even if the group has
         * not started yet, whereas lsvc_group_stop() would be lost then. */
        kv_log("stopping.");
        kill(getpid(), SIGTERM);
        break;
    }
    return NULL;
}

/* --- Services ----------------------------------------------------------- */

static int expire_keys(lsvc *svc, void *arg)
{
    struct server *srv = arg;

    (void)svc;
    table_sweep(&srv->table, now_ns());
    return 0;
}

static int report_stats(lsvc *svc, void *arg)
{
    struct server *srv = arg;
    size_t keys, open;
    uint64_t expired;
    unsigned long long accepted;

    table_stats(&srv->table, &keys, &expired);
    open_connections(srv, &open, &accepted);
    /* Through the library's sink, as loopsvc.kv-stats: where a custom
     * sink (lsvc_set_logger) sends the service's lines, this goes too. */
    lsvc_log(svc, LSVC_LOG_INFO, "Keys stored: %zu, expired so far: %llu, "
             "connections open: %zu (accepted: %llu).",
             keys, (unsigned long long)expired, open, accepted);
    return 0;
}

static const lsvc_class expiry_class = {
    .name = "kv-expiry", .loop_seconds = 0.1, .run_once = expire_keys,
};
static const lsvc_class stats_class = {
    .name = "kv-stats", .loop_seconds = 1, .run_once = report_stats,
};

/* --- Metrics and health over HTTP --------------------------------------- */

/*
 * GET /metrics for Prometheus and GET /healthz for a load balancer, on a
 * port of their own so that the key-value protocol stays as it is. One
 * thread answers one client at a time: a request is a few hundred bytes and
 * its answer is ready at once, and a client gets HTTP_SECONDS for the
 * whole exchange and HTTP_MAX_REQUEST bytes for its request, so a silent,
 * slow or endless one holds up the next client by that much at most. The
 * thread waits only in poll(), on the socket at hand and on a pipe whose
 * write end the shutdown closes.
 */
#define HTTP_MAX_REQUEST 4096 /* bytes up to the empty line ending the head */
#define HTTP_SECONDS 2        /* per client, from accept() to close() */

struct http {
    lsvc_group *group; /* what the answers tell of */
    int listen_fd;
    int stop_pipe[2]; /* the shutdown closes [1]; [0] then reads as ended */
    pthread_t thread;
};

/* Waits until fd (-1: none) has one of `events`, and returns true; false
 * when the shutdown comes first, or the deadline (a now_ns() time; -1:
 * none) passes. */
static bool http_wait(struct http *h, int fd, short events, int64_t deadline)
{
    struct pollfd fds[2] = {{.fd = fd, .events = events},
                            {.fd = h->stop_pipe[0], .events = POLLIN}};

    for (;;) {
        int timeout_ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0)
                return false;
            timeout_ms = (int)((left + NS_PER_MS - 1) / NS_PER_MS);
        }
        int rc = poll(fds, 2, timeout_ms);
        if (rc < 0 && errno == EINTR)
            continue;
        return rc > 0 && fds[1].revents == 0;
    }
}

/* Reads the request's head, up to its empty line, into buf (a string
 * then); false when it is longer than size - 1 bytes, or does not come
 * whole by the deadline. */
static bool http_read_head(struct http *h, int fd, char *buf, size_t size,
                           int64_t deadline)
{
    size_t len = 0;

    buf[0] = '\0';
    while (strstr(buf, "\r\n\r\n") == NULL && strstr(buf, "\n\n") == NULL) {
        if (len == size - 1 || !http_wait(h, fd, POLLIN, deadline))
            return false;
        ssize_t n = recv(fd, buf + len, size - 1 - len, 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return false;
        len += n > 0 ? (size_t)n : 0;
        /* A NUL byte in the request hides what follows it: such a request
         * ends as one too long. */
        buf[len] = '\0';
    }
    return true;
}

static bool http_send(struct http *h, int fd, const char *data, size_t len,
                      int64_t deadline)
{
    while (len > 0) {
        if (!http_wait(h, fd, POLLOUT, deadline))
            return false;
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return false;
        data += n > 0 ? n : 0;
        len -= n > 0 ? (size_t)n : 0;
    }
    return true;
}

/* HTTP/1.0: one answer, its length said, then the connection closes. */
static void http_answer(struct http *h, int fd, int64_t deadline,
                        const char *status, const char *type,
                        const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.0 %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, type, len);

    if (http_send(h, fd, head, (size_t)n, deadline))
        http_send(h, fd, body, len, deadline);
}

/* The group's metrics, in a buffer of the size the library asks for: a
 * counter may gain a digit between two calls, hence the loop. NULL, with
 * *err set, when they cannot be had. */
static char *metrics_text(lsvc_group *g, size_t *len, int *err)
{
    size_t size = 0, needed = 0;
    char *text = NULL;

    while ((*err = lsvc_group_metrics(g, text, size, &needed)) == ENOSPC) {
        char *bigger = realloc(text, needed);
        if (bigger == NULL) {
            *err = ENOMEM;
            break;
        }
        text = bigger;
        size = needed;
    }
    if (*err != 0) {
        free(text);
        return NULL;
    }
    *len = needed - 1; /* less its NUL */
    return text;
}

static void http_metrics(struct http *h, int fd, int64_t deadline)
{
    static const char type[] = "text/plain; version=0.0.4; charset=utf-8";
    char why[128], body[160];
    size_t len;
    int err;

    char *text = metrics_text(h->group, &len, &err);
    if (text == NULL) {
        int n = snprintf(body, sizeof body, "no metrics: %s\n",
                         describe(err, why, sizeof why));
        http_answer(h, fd, deadline, "500 Internal Server Error",
                    "text/plain", body, (size_t)n);
        return;
    }
    http_answer(h, fd, deadline, "200 OK", type, text, len);
    free(text);
}

static void http_health(struct http *h, int fd, int64_t deadline)
{
    const lsvc *which = NULL;
    const char *why = NULL;
    char body[128];

    if (lsvc_group_healthy(h->group, &which, &why)) {
        http_answer(h, fd, deadline, "200 OK", "text/plain", "ok\n", 3);
        return;
    }
    int n = snprintf(body, sizeof body, "%s: %s\n",
                     which != NULL ? lsvc_name(which) : "group",
                     why != NULL ? why : "?");
    http_answer(h, fd, deadline, "503 Service Unavailable", "text/plain",
                body, (size_t)n < sizeof body ? (size_t)n : sizeof body - 1);
}

/* Whether the request line asks for GET of path (a query string aside). */
static bool http_is_get(const char *head, const char *path)
{
    size_t n = strlen(path);

    return strncmp(head, "GET ", 4) == 0 && strncmp(head + 4, path, n) == 0 &&
           (head[4 + n] == ' ' || head[4 + n] == '?');
}

static void http_serve_client(struct http *h, int fd)
{
    static const char bad[] = "bad request\n", none[] = "not found\n";
    int64_t deadline = now_ns() + HTTP_SECONDS * 1000 * NS_PER_MS;
    char head[HTTP_MAX_REQUEST + 1];

    if (!http_read_head(h, fd, head, sizeof head, deadline))
        http_answer(h, fd, deadline, "400 Bad Request", "text/plain", bad,
                    strlen(bad));
    else if (http_is_get(head, "/metrics"))
        http_metrics(h, fd, deadline);
    else if (http_is_get(head, "/healthz"))
        http_health(h, fd, deadline);
    else
        http_answer(h, fd, deadline, "404 Not Found", "text/plain", none,
                    strlen(none));
}

static void *serve_http(void *arg)
{
    struct http *h = arg;
    char why[128];

    while (http_wait(h, h->listen_fd, POLLIN, -1)) {
        int fd = accept(h->listen_fd, NULL, NULL);
        if (fd >= 0) {
            /* Never blocks: every wait is http_wait's, with a deadline. */
            fcntl(fd, F_SETFL, O_NONBLOCK);
            http_serve_client(h, fd);
            close(fd);
        } else if (errno != EINTR && errno != EAGAIN &&
                   errno != ECONNABORTED) {
            /* Out of descriptors or memory: wait for some to be freed
             * rather than spin on the pending connection. */
            kv_log("http: accept() failed: %s.",
                   describe(errno, why, sizeof why));
            http_wait(h, -1, 0, now_ns() + 100 * NS_PER_MS);
        }
    }
    return NULL;
}

/* Serves listen_fd, a listening socket, from a thread of its own; on
 * failure closes nothing. */
static int http_start(struct http *h, lsvc_group *group, int listen_fd)
{
    h->group = group;
    h->listen_fd = listen_fd;
    if (pipe(h->stop_pipe) != 0)
        return errno;
    /* accept() must not block when a client left between poll and it. */
    fcntl(listen_fd, F_SETFL, O_NONBLOCK);
    int rc = pthread_create(&h->thread, NULL, serve_http, h);
    if (rc != 0) {
        close(h->stop_pipe[0]);
        close(h->stop_pipe[1]);
    }
    return rc;
}

/* Ends the thread, at once or after the client at hand, and closes the
 * sockets. */
static void http_stop(struct http *h)
{
    close(h->stop_pipe[1]);
    pthread_join(h->thread, NULL);
    close(h->stop_pipe[0]);
    close(h->listen_fd);
}

/* --- Start and shutdown ------------------------------------------------- */

/* A listening socket on 127.0.0.1:port (0: any free port) in *fd, and
 * the port it took in *bound. */
static int listen_on(unsigned port, int *fd, unsigned *bound)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port)};
    socklen_t addr_len = sizeof addr;
    int one = 1;

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    if (*fd < 0)
        return errno;
    /* A restarted server may bind while old connections are in TIME_WAIT. */
    setsockopt(*fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(*fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(*fd, 64) != 0 ||
        getsockname(*fd, (struct sockaddr *)&addr, &addr_len) != 0) {
        int err = errno;
        close(*fd);
        return err;
    }
    *bound = ntohs(addr.sin_port);
    return 0;
}

/* Wakes every thread of the server and joins it: the accept thread first,
 * so that no connection is admitted behind the shutdown. */
static void stop_serving(struct server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (srv->conns[i].state == SLOT_OPEN)
            shutdown(srv->conns[i].fd, SHUT_RDWR); /* ends recv and send */
    pthread_mutex_unlock(&srv->lock);

    /* Linux ends an accept() blocked on a socket that is shut down. */
    shutdown(srv->listen_fd, SHUT_RDWR);
    pthread_join(srv->accept_thread, NULL);
    close(srv->listen_fd);

    /* Only connection threads change slots now, and only to DONE. */
    for (size_t i = 0; i < MAX_CONNS; i++) {
        pthread_mutex_lock(&srv->lock);
        bool has_thread = srv->conns[i].state != SLOT_FREE;
        pthread_mutex_unlock(&srv->lock);
        if (has_thread)
            pthread_join(srv->conns[i].thread, NULL);
    }
}

/* --- Counting threads --------------------------------------------------- */

/* Kernel ids of this process's threads (Linux: /proc/self/task). */
struct tids {
    size_t n;
    long id[64];
};

static bool read_tids(struct tids *t)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;

    if (dir == NULL)
        return false;
    t->n = 0;
    while ((e = readdir(dir)) != NULL && t->n < sizeof t->id / sizeof t->id[0])
        if (e->d_name[0] != '.')
            t->id[t->n++] = strtol(e->d_name, NULL, 10);
    closedir(dir);
    return true;
}

static void *do_nothing(void *arg)
{
    return arg;
}

/* Some runtimes (ThreadSanitizer) start a thread of their own when the
 * program makes its first one. Those are not the server's to join: they
 * are recorded here, after one thread was made and joined, and left out
 * of the count at exit. */
static bool note_runtime_threads(struct tids *runtime)
{
    pthread_t t;

    if (pthread_create(&t, NULL, do_nothing, NULL) != 0)
        return false;
    pthread_join(t, NULL);
    return read_tids(runtime);
}

/* Main plus every thread the server made that is still there; -1 when
 * they cannot be counted. */
static int count_threads(const struct tids *runtime)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;
    int n = 1;

    if (dir == NULL)
        return -1;
    while ((e = readdir(dir)) != NULL) {
        long id = strtol(e->d_name, NULL, 10);
        bool known = e->d_name[0] == '.';
        for (size_t i = 0; i < runtime->n && !known; i++)
            known = runtime->id[i] == id;
        n += !known;
    }
    closedir(dir);
    return n;
}

/* A joined thread leaves /proc a moment after pthread_join returns (the
 * kernel clears its id before it has quite gone), so a count above 1 is
 * taken again for up to a second. */
static int threads_at_exit(const struct tids *runtime)
{
    int64_t give_up = now_ns() + 1000 * NS_PER_MS;
    int n;

    while ((n = count_threads(runtime)) > 1 && now_ns() < give_up)
        nanosleep(&(struct timespec){.tv_nsec = 5 * NS_PER_MS}, NULL);
    return n;
}

/* --- main --------------------------------------------------------------- */

static bool parse_port(const char *s, unsigned *port)
{
    unsigned long v = 0;

    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (unsigned long)(*s - '0');
        if (v > 65535)
            return false;
    }
    *port = (unsigned)v;
    return true;
}

/* What the command line asks for. */
struct options {
    unsigned port;
    bool http;           /* -m: serve HTTP too, on http_port */
    unsigned http_port;
    const char *control; /* -c: the control socket's path; NULL: none */
};

static bool parse_options(int argc, char **argv, struct options *opt)
{
    int c;

    *opt = (struct options){.http = false};
    while ((c = getopt(argc, argv, "m:c:")) != -1) {
        if (c == 'm' && parse_port(optarg, &opt->http_port))
            opt->http = true;
        else if (c == 'c' && *optarg != '\0')
            opt->control = optarg;
        else
            return false;
    }
    return optind == argc - 1 && parse_port(argv[optind], &opt->port);
}

/* The two chores, in one group; partly made on failure. */
static int make_group(struct server *srv, const char *control,
                      lsvc_group **group, lsvc **expiry, lsvc **stats)
{
    int rc;

    if ((rc = lsvc_create(expiry, &expiry_class, srv, NULL)) != 0 ||
        (rc = lsvc_create(stats, &stats_class, srv, NULL)) != 0 ||
        (rc = lsvc_group_create(group)) != 0 ||
        (rc = lsvc_group_add(*group, *expiry)) != 0 ||
        (rc = lsvc_group_add(*group, *stats)) != 0 ||
        (rc = lsvc_group_set_stop_timeout(*group, STOP_SECONDS)) != 0)
        return rc;
    /* Made as the group starts, removed as it ends; NULL: none. */
    return lsvc_group_set_control_socket(*group, control);
}

/* Runs the server until SIGINT or SIGTERM stops the group, then winds it
 * down. Returns true when all went well. */
static bool serve(struct server *srv, const struct options *opt)
{
    lsvc *expiry = NULL, *stats = NULL;
    lsvc_group *group = NULL;
    struct http http = {.listen_fd = -1};
    unsigned bound = 0, http_bound = 0;
    bool accepting = false, serving_http = false;
    char why[128];
    int rc;

    if ((rc = listen_on(opt->port, &srv->listen_fd, &bound)) != 0) {
        kv_log("cannot listen on 127.0.0.1:%u: %s.", opt->port,
               describe(rc, why, sizeof why));
        return false;
    }
    if (opt->http &&
        (rc = listen_on(opt->http_port, &http.listen_fd, &http_bound)) != 0) {
        kv_log("cannot listen on 127.0.0.1:%u: %s.", opt->http_port,
               describe(rc, why, sizeof why));
        close(srv->listen_fd);
        return false;
    }

    /* The group starts last: once it has, every door is open, and the
     * lines below tell the world so. */
    rc = make_group(srv, opt->control, &group, &expiry, &stats);
    if (rc == 0 && (rc = pthread_create(&srv->accept_thread, NULL,
                                        accept_connections, srv)) == 0)
        accepting = true;
    if (rc == 0 && opt->http &&
        (rc = http_start(&http, group, http.listen_fd)) == 0)
        serving_http = true;
    if (rc == 0 && (rc = lsvc_group_start(group)) == 0) {
        printf("listening on 127.0.0.1:%u\n", bound);
        if (serving_http)
            printf("http on 127.0.0.1:%u\n", http_bound);
        fflush(stdout);
        /* Returns once SIGINT or SIGTERM stopped both services. */
        rc = lsvc_group_wait(group);
        if (rc != 0)
            kv_log("the services ended with: %s.",
                   describe(rc, why, sizeof why));
    } else {
        kv_log("cannot start: %s.", describe(rc, why, sizeof why));
    }

    if (accepting)
        stop_serving(srv);
    else
        close(srv->listen_fd);
    if (serving_http)
        http_stop(&http);
    else if (opt->http)
        close(http.listen_fd);
    /* First: a group does not own its services. A service that did not
     * stop in time cannot be freed; that is reported and counted below. */
    lsvc_group_destroy(group);
    int expiry_rc = lsvc_destroy(expiry);
    int stats_rc = lsvc_destroy(stats);
    return rc == 0 && expiry_rc == 0 && stats_rc == 0;
}

int main(int argc, char **argv)
{
    static struct server srv;
    struct tids runtime;
    struct options opt;

    /* First, before any thread exists: threads inherit the mask, so only
     * the group's signal thread can take SIGINT and SIGTERM. */
    lsvc_block_signals();
    /* The stats line, and a line as each chore starts and stops. */
    lsvc_set_log_level(LSVC_LOG_INFO);

    if (!parse_options(argc, argv, &opt)) {
        fprintf(stderr, "usage: kvserver [-m HTTP_PORT] [-c CONTROL_SOCKET] "
                        "PORT    (a port of 0: any free port)\n");
        return 2;
    }
    if (!note_runtime_threads(&runtime) || table_init(&srv.table) != 0 ||
        pthread_mutex_init(&srv.lock, NULL) != 0) {
        kv_log("cannot set up.");
        return 1;
    }
    for (size_t i = 0; i < MAX_CONNS; i++)
        srv.conns[i] = (struct conn){.srv = &srv, .state = SLOT_FREE, .fd = -1};

    bool ok = serve(&srv, &opt);
    table_destroy(&srv.table);
    pthread_mutex_destroy(&srv.lock);

    int threads = threads_at_exit(&runtime);
    printf("threads at exit: %d\n", threads);
    fflush(stdout);
    return ok && threads == 1 ? 0 : 1;
}
