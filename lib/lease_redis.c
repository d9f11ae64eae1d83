/*
 * loopsvc-redis: a lease held in Redis, so that of several replicas of a
 * server only one at a time runs a given service. include/loopsvc-redis.h
 * is the contract; this file is its only implementation.
 *
 * The lease is a key whose value is this replica's random token, with a
 * TTL of LSVC_REDIS_TTL_INTERVALS intervals. What keeps two replicas from
 * running at once is the holder's own count on CLOCK_MONOTONIC, started
 * before it sent the request that set or extended the key: Redis starts
 * its TTL later than that, so the key outlives the holder's belief that it
 * holds it. A step of the wall clock changes neither count.
 *
 * Everything but create and destroy runs on the service thread, over one
 * blocking hiredis connection whose every connect and round trip is bounded
 * by the lease's timeout. A connection that fails is dropped at once and
 * made again at a later due run, after a backoff.
 */
#include "loopsvc-redis.h"

#include <hiredis.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_SEC INT64_C(1000000000)
#define NS_PER_MS INT64_C(1000000)
#define BACKOFF_MIN_NS (100 * NS_PER_MS)
#define BACKOFF_MAX_NS (30 * NS_PER_SEC)
#define MAX_TIMEOUT 3600.0
#define DEFAULT_PORT 6379
#define TOKEN_BYTES 16

/* KEYS[1] the lease, KEYS[2] its fencing-token counter; ARGV[1] this
 * replica's value, ARGV[2] the TTL in ms. A key taken is a new holding,
 * and the counter goes up with it, in the same script: only a free key
 * bumps it, so while the key holds our value the counter holds our
 * token. The counter goes up first: a counter that cannot (not a number)
 * ends the script before the key is set, so that no key is held without
 * a token. Tokens come back as strings: Lua numbers are doubles. */
static const char take_script[] =
    "if redis.call('exists', KEYS[1]) == 1 then return false end "
    "redis.call('incr', KEYS[2]) "
    "redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
    "return redis.call('get', KEYS[2])";

/* Extends our key and says its token, which also tells a replica whose
 * reply to take_script was lost what token it got. A counter gone from
 * under a held key (deleted, evicted), or no longer a number, gives the
 * key up: the next take makes a new holding, and a new count. */
static const char extend_script[] =
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end "
    "local t = redis.call('get', KEYS[2]) "
    "if not t or not tonumber(t) then redis.call('del', KEYS[1]) return 0 end "
    "redis.call('pexpire', KEYS[1], ARGV[2]) return t";

static const char release_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end";

/* Whose token the key holds, as far as this replica knows. */
enum ownership {
    MINE_NO,    /* another's, or none, at the last reply */
    MINE_MAYBE, /* perhaps ours: a request went out and its reply was lost
                 * or late, or we held it when the connection went */
    MINE_YES,   /* ours, by a timely reply */
};

/* Why a request failed, for the log line and to tell outages apart. */
struct failure {
    const char *verb;  /* how the log line starts */
    char kind[32];     /* failures of one kind are one reason */
    char detail[192];
};

struct lsvc_redis_lease {
    /* Set by create and never changed. */
    char *host;        /* NULL for a Unix socket */
    int port;
    char *path;        /* NULL for TCP */
    char *password;    /* NULL: no AUTH */
    char *where;       /* the address without its password, for log lines */
    char *ns;
    struct timeval timeout;
    double timeout_s;
    char token[2 * TOKEN_BYTES + 1];

    /* True while a call is in acquire or release: a second service calling
     * at the same time is turned away instead of racing on the
     * connection. */
    atomic_bool busy;

    /* Everything below is touched only inside acquire and release, that
     * is, by the service thread. */
    char *name;        /* the service the lease serves, fixed at first use */
    char *key;
    char *token_key;   /* the counter of fencing tokens */
    char *client_name;
    bool misuse_logged;

    redisContext *conn;
    enum ownership mine;
    const lsvc *holder;  /* the service told "held" last, until told not */
    uint64_t fence;    /* the fencing token of our holding, while MINE_YES */
    uint64_t fence_max; /* the highest this lease was given */
    bool late_warned;  /* a late reply was logged, and none was timely since */
    int64_t held_until; /* the key lapses after this, by our count */
    /* held_until while the service holds the lease, else 0: read by
     * lsvc_lease_valid_for from any thread during a run. */
    _Atomic int64_t valid_until;

    bool failing;      /* in an outage: the last request failed */
    char failure_kind[32];
    int64_t failing_since_ns;
    unsigned failed_tries;
    int64_t backoff_ns;
    int64_t retry_at_ns;
};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* --- Parsing the address ------------------------------------------------ */

static bool is_alnum(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z');
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The password of a URL, which carries '@', ':' and the like as %XX. */
static int decode_password(char **out, const char *s, size_t len)
{
    char *p = malloc(len + 1);
    size_t n = 0;

    if (p == NULL)
        return ENOMEM;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            p[n++] = s[i];
            continue;
        }
        int hi = i + 2 < len ? hex_value(s[i + 1]) : -1;
        int lo = i + 2 < len ? hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(p);
            return EINVAL;
        }
        p[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    p[n] = '\0';
    *out = p;
    return 0;
}

static int parse_unix(struct lsvc_redis_lease *l, const char *path)
{
    struct sockaddr_un sa;
    size_t len = strlen(path);

    /* hiredis would cut a longer path short and connect elsewhere. */
    if (path[0] != '/' || len >= sizeof sa.sun_path)
        return EINVAL;
    l->path = strdup(path);
    l->where = malloc(len + sizeof "unix:");
    if (l->path == NULL || l->where == NULL)
        return ENOMEM;
    snprintf(l->where, len + sizeof "unix:", "unix:%s", path);
    return 0;
}

static int parse_port(const char *s, int *port)
{
    long v = 0;
    size_t n = 0;

    for (; s[n] >= '0' && s[n] <= '9' && n < 5; n++)
        v = v * 10 + (s[n] - '0');
    if (n == 0 || s[n] != '\0' || v < 1 || v > 65535)
        return EINVAL;
    *port = (int)v;
    return 0;
}

/* host, host:port, [v6 address] or [v6 address]:port. */
static int parse_tcp(struct lsvc_redis_lease *l, const char *s)
{
    const char *host = s, *after;
    size_t len;
    bool bracketed = s[0] == '[';

    if (bracketed) {
        const char *close = strchr(s, ']');
        if (close == NULL)
            return EINVAL;
        host = s + 1;
        len = (size_t)(close - host);
        after = close + 1;
    } else {
        len = strcspn(s, ":");
        after = s + len;
    }
    if (len == 0)
        return EINVAL;
    for (size_t i = 0; i < len; i++) {
        char c = host[i];
        bool ok = is_alnum(c) || c == '.' ||
                  (bracketed ? c == ':' || c == '%' : c == '-' || c == '_');
        if (!ok)
            return EINVAL;
    }
    l->port = DEFAULT_PORT;
    if (*after == ':') {
        if (parse_port(after + 1, &l->port) != 0)
            return EINVAL;
    } else if (*after != '\0') {
        return EINVAL;
    }

    size_t size = len + sizeof "[]:65535";
    l->host = strndup(host, len);
    l->where = malloc(size);
    if (l->host == NULL || l->where == NULL)
        return ENOMEM;
    snprintf(l->where, size, bracketed ? "[%s]:%d" : "%s:%d", l->host, l->port);
    return 0;
}

static int parse_address(struct lsvc_redis_lease *l, const char *address)
{
    const char *rest = address;

    if (strncmp(rest, "redis://", strlen("redis://")) == 0) {
        rest += strlen("redis://");
        /* No host starts with ':', so one that does opens a password. A
         * '@' inside the password must be written %40. */
        if (rest[0] == ':') {
            const char *at = strchr(rest, '@');
            if (at == NULL || at == rest + 1)
                return EINVAL;
            int rc = decode_password(&l->password, rest + 1,
                                     (size_t)(at - rest - 1));
            if (rc != 0)
                return rc;
            rest = at + 1;
        }
    }
    if (strncmp(rest, "unix:", strlen("unix:")) == 0)
        return parse_unix(l, rest + strlen("unix:"));
    return parse_tcp(l, rest);
}

/* --- The token ---------------------------------------------------------- */

static bool read_urandom(unsigned char *buf, size_t len)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    size_t got = 0;

    if (fd < 0)
        return false;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0 || errno != EINTR)
            break;
    }
    close(fd);
    return got == len;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* The token need not be secret, only different from every other
 * replica's: where /dev/urandom is missing (a bare chroot), the host name,
 * process, time and an address make it so. */
static void fallback_bytes(unsigned char *buf, size_t len, const void *addr)
{
    char host[256] = "";
    struct timespec rt, mono;
    uint64_t state = UINT64_C(0xcbf29ce484222325);

    gethostname(host, sizeof host - 1);
    for (const char *p = host; *p != '\0'; p++)
        state = (state ^ (unsigned char)*p) * UINT64_C(0x100000001b3);
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    state ^= (uint64_t)rt.tv_sec * UINT64_C(1000000007) ^ (uint64_t)rt.tv_nsec;
    state ^= ((uint64_t)getpid() << 32) ^ (uint64_t)mono.tv_nsec ^
             (uint64_t)(uintptr_t)addr;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = splitmix64(&state);
        for (size_t j = 0; j < 8 && i + j < len; j++)
            buf[i + j] = (unsigned char)(r >> (8 * j));
    }
}

static void make_token(struct lsvc_redis_lease *l)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char bytes[TOKEN_BYTES];

    if (!read_urandom(bytes, sizeof bytes))
        fallback_bytes(bytes, sizeof bytes, l);
    for (size_t i = 0; i < sizeof bytes; i++) {
        l->token[2 * i] = digits[bytes[i] >> 4];
        l->token[2 * i + 1] = digits[bytes[i] & 15];
    }
    l->token[2 * TOKEN_BYTES] = '\0';
}

/* --- Failures and the outage they make ---------------------------------- */

/* The detail goes mid-sentence: without the full stop Redis may end it
 * with. */
static void set_detail(struct failure *f, const char *s)
{
    size_t n;

    snprintf(f->detail, sizeof f->detail, "%s", s);
    n = strlen(f->detail);
    while (n > 0 && (f->detail[n - 1] == '.' || f->detail[n - 1] == ' '))
        f->detail[--n] = '\0';
}

static void io_failure(struct failure *f, const char *verb,
                       const redisContext *c, int err, double timeout_s)
{
    f->verb = verb;
    if (c == NULL || c->err == REDIS_ERR_OOM) {
        snprintf(f->kind, sizeof f->kind, "memory");
        snprintf(f->detail, sizeof f->detail, "out of memory");
    } else if (c->err == REDIS_ERR_IO &&
               (err == EAGAIN || err == EWOULDBLOCK || err == ETIMEDOUT ||
                err == EINPROGRESS)) {
        /* A socket timeout shows as EAGAIN, which reads as nonsense. */
        snprintf(f->kind, sizeof f->kind, "timeout");
        snprintf(f->detail, sizeof f->detail, "no answer within %g s",
                 timeout_s);
    } else {
        snprintf(f->kind, sizeof f->kind, "%s",
                 c->err == REDIS_ERR_PROTOCOL ? "protocol" : "unreachable");
        set_detail(f, c->errstr);
    }
}

/* An error reply: its first word (NOAUTH, READONLY, ...) is its kind. */
static void reply_failure(struct failure *f, const redisReply *r)
{
    const char *str = r->str != NULL ? r->str : "";
    int code = (int)strcspn(str, " ");

    f->verb = "Got an error from";
    snprintf(f->kind, sizeof f->kind, "reply %.*s", code, str);
    set_detail(f, str);
}

static void unexpected_failure(struct failure *f, const redisReply *r)
{
    f->verb = "Got an unexpected reply from";
    snprintf(f->kind, sizeof f->kind, "protocol");
    snprintf(f->detail, sizeof f->detail, "a reply of type %d", r->type);
}

/* Drops the connection and schedules the next try. Returns whether the
 * failure is worth a WARNING: the first of an outage, or one whose kind
 * differs from the one before. */
static bool note_failure(struct lsvc_redis_lease *l, const struct failure *f)
{
    int64_t now = now_ns();
    bool tell;

    redisFree(l->conn);
    l->conn = NULL;
    if (l->mine == MINE_YES)
        l->mine = MINE_MAYBE;
    if (!l->failing) {
        l->failing = true;
        l->failing_since_ns = now;
        l->failed_tries = 0;
        l->backoff_ns = BACKOFF_MIN_NS;
        tell = true;
    } else {
        l->backoff_ns = l->backoff_ns > BACKOFF_MAX_NS / 2 ? BACKOFF_MAX_NS
                                                           : 2 * l->backoff_ns;
        tell = strcmp(l->failure_kind, f->kind) != 0;
    }
    l->failed_tries++;
    l->retry_at_ns = now + l->backoff_ns;
    snprintf(l->failure_kind, sizeof l->failure_kind, "%s", f->kind);
    return tell;
}

static void fail(struct lsvc_redis_lease *l, lsvc *svc, const struct failure *f)
{
    if (note_failure(l, f))
        lsvc_log(svc, LSVC_LOG_WARNING,
                 "%s Redis at %s for the lease of %s: %s. %s does not run "
                 "on this replica until Redis answers; retrying at its due "
                 "runs, at most 30 s apart.",
                 f->verb, l->where, l->name, f->detail, l->name);
}

/* A reply came: whatever it said, the outage is over. */
static void note_success(struct lsvc_redis_lease *l, lsvc *svc)
{
    if (!l->failing)
        return;
    l->failing = false;
    lsvc_log(svc, LSVC_LOG_INFO,
             "Redis at %s answers again for the lease of %s, after %.1f s "
             "and %u failed attempt%s.", l->where, l->name,
             (double)(now_ns() - l->failing_since_ns) / 1e9, l->failed_tries,
             l->failed_tries == 1 ? "" : "s");
}

/* --- Talking to Redis --------------------------------------------------- */

/* hiredis sends with write(), and a write to a peer that has gone raises
 * SIGPIPE in the writing thread, whose default action ends the process.
 * Service threads block it already, so there it only stays pending and
 * goes with the thread; on a thread that does not, it is blocked around
 * the I/O, and one the I/O raised is taken back before it is unblocked. */
struct sigpipe_guard {
    bool unblock;
    bool was_pending;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
    sigset_t set, old, pending;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    g->unblock = pthread_sigmask(SIG_BLOCK, &set, &old) == 0 &&
                 !sigismember(&old, SIGPIPE);
    g->was_pending = sigpending(&pending) == 0 &&
                     sigismember(&pending, SIGPIPE) == 1;
}

static void sigpipe_restore(const struct sigpipe_guard *g)
{
    static const struct timespec zero = {0, 0};
    sigset_t set, pending;

    if (!g->unblock)
        return;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (!g->was_pending && sigpending(&pending) == 0 &&
        sigismember(&pending, SIGPIPE) == 1)
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* One command, one reply. NULL with *f filled on a failure, an error
 * reply included. */
static redisReply *round_trip(struct lsvc_redis_lease *l, int argc,
                              const char **argv, struct failure *f)
{
    redisReply *r;
    int err;

    errno = 0;
    r = redisCommandArgv(l->conn, argc, argv, NULL);
    err = errno;
    if (r == NULL) {
        io_failure(f, "Lost the connection to", l->conn, err, l->timeout_s);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        reply_failure(f, r);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* AUTH and CLIENT SETNAME, sent together: one round trip. */
static bool introduce(struct lsvc_redis_lease *l, struct failure *f)
{
    const char *auth[] = {"AUTH", l->password};
    const char *setname[] = {"CLIENT", "SETNAME", l->client_name};
    int sent = 0;

    if (l->password != NULL) {
        if (redisAppendCommandArgv(l->conn, 2, auth, NULL) != REDIS_OK)
            goto io_error;
        sent++;
    }
    if (redisAppendCommandArgv(l->conn, 3, setname, NULL) != REDIS_OK)
        goto io_error;
    sent++;
    for (int i = 0; i < sent; i++) {
        void *reply = NULL;
        redisReply *r;

        errno = 0;
        if (redisGetReply(l->conn, &reply) != REDIS_OK) {
            io_failure(f, "Lost the connection to", l->conn, errno,
                       l->timeout_s);
            return false;
        }
        r = reply;
        /* The name is for operators only: a user whose ACL forbids CLIENT
         * still gets its lease. A failed AUTH is fatal. */
        if (r->type == REDIS_REPLY_ERROR && i + 1 < sent) {
            reply_failure(f, r);
            freeReplyObject(r);
            return false;
        }
        freeReplyObject(r);
    }
    return true;

io_error:
    io_failure(f, "Could not talk to", l->conn, 0, l->timeout_s);
    return false;
}

static bool open_connection(struct lsvc_redis_lease *l, lsvc *svc)
{
    struct failure f;
    int err, flags;

    errno = 0;
    if (l->path != NULL)
        l->conn = redisConnectUnixWithTimeout(l->path, l->timeout);
    else
        l->conn = redisConnectWithTimeout(l->host, l->port, l->timeout);
    err = errno;
    if (l->conn == NULL || l->conn->err != 0) {
        io_failure(&f, "Could not connect to", l->conn, err, l->timeout_s);
        fail(l, svc, &f);
        return false;
    }
    /* The connect timeout covers the connect alone: without this, a server
     * that stops answering would hold the service thread for good. */
    if (redisSetTimeout(l->conn, l->timeout) != REDIS_OK) {
        io_failure(&f, "Could not set a timeout on the connection to",
                   l->conn, errno, l->timeout_s);
        fail(l, svc, &f);
        return false;
    }
    /* hiredis opens its socket without close-on-exec; a child the server
     * spawns should not carry the lease's connection. */
    flags = fcntl(l->conn->fd, F_GETFD);
    if (flags >= 0)
        fcntl(l->conn->fd, F_SETFD, flags | FD_CLOEXEC);
    if (!introduce(l, &f)) {
        fail(l, svc, &f);
        return false;
    }
    lsvc_log(svc, LSVC_LOG_DEBUG,
             "Connected to Redis at %s for the lease of %s.", l->where,
             l->name);
    return true;
}

enum answer {
    ANSWER_FAILED,
    ANSWER_NOT_HELD,
    ANSWER_LATE,  /* the key is ours, but the reply came too late to run */
    ANSWER_HELD,
};

static void warn_late(struct lsvc_redis_lease *l, lsvc *svc, int64_t took_ns,
                      int64_t interval_ns)
{
    if (l->late_warned)
        return;
    l->late_warned = true;
    lsvc_log(svc, LSVC_LOG_WARNING,
             "Redis at %s took %.0f ms to answer for the lease of %s, more "
             "than its interval of %g s: the lease could lapse during a run, "
             "so this run is skipped.", l->where, (double)took_ns / 1e6,
             l->name, (double)interval_ns / 1e9);
}

/* Tokens only go up, unless Redis lost the counter: say so, once per
 * going back, since every sink refuses this holder's writes. */
static void check_fence(struct lsvc_redis_lease *l, lsvc *svc, uint64_t fence)
{
    if (fence <= l->fence_max && fence != l->fence)
        lsvc_log(svc, LSVC_LOG_WARNING,
                 "The fencing token of the lease of %s went back from %llu to "
                 "%llu: Redis at %s lost its counter, %s (restarted without "
                 "persistence, failed over, evicted or deleted). Sinks that saw "
                 "the higher tokens refuse this replica's writes until the "
                 "counter passes them: set it above the highest token given.",
                 l->name, (unsigned long long)l->fence_max,
                 (unsigned long long)fence, l->where, l->token_key);
    if (fence > l->fence_max)
        l->fence_max = fence;
    l->fence = fence;
}

/* A token as the scripts return it: decimal, positive. */
static bool parse_fence(const redisReply *r, uint64_t *fence)
{
    char *end = NULL;

    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->str[0] == '-')
        return false;
    errno = 0;
    *fence = strtoull(r->str, &end, 10);
    return errno == 0 && end == r->str + r->len && *fence > 0;
}

/* The take script (a free key, and a new token) or the extend script
 * (keep our own, and its token). */
static enum answer ask(struct lsvc_redis_lease *l, lsvc *svc, bool extend,
                       int64_t ttl_ms, int64_t interval_ns)
{
    char ttl[24];
    const char *argv[] = {"EVAL", extend ? extend_script : take_script, "2",
                          l->key, l->token_key, l->token, ttl};
    struct failure f;
    redisReply *r;
    int64_t t0, now, held_until;
    uint64_t fence = 0;
    bool ok;

    snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
    t0 = now_ns();
    r = round_trip(l, 7, argv, &f);
    now = now_ns();
    if (r == NULL) {
        /* The request may have reached Redis and set or kept the key. */
        l->mine = MINE_MAYBE;
        fail(l, svc, &f);
        return ANSWER_FAILED;
    }
    ok = parse_fence(r, &fence);
    if (!ok && (extend ? r->type != REDIS_REPLY_INTEGER || r->integer != 0
                       : r->type != REDIS_REPLY_NIL)) {
        unexpected_failure(&f, r);
        freeReplyObject(r);
        l->mine = MINE_MAYBE;
        fail(l, svc, &f);
        return ANSWER_FAILED;
    }
    freeReplyObject(r);
    note_success(l, svc);
    if (!ok) {
        l->mine = MINE_NO;
        return ANSWER_NOT_HELD;
    }
    check_fence(l, svc, fence);
    /* Redis counts the TTL from when it got the request, after t0. The run
     * that follows may last LSVC_REDIS_TTL_INTERVALS - 1 intervals (the
     * header's promise), so it must end before t0 + ttl by our count. */
    held_until = t0 + ttl_ms * NS_PER_MS;
    if (now + (LSVC_REDIS_TTL_INTERVALS - 1) * interval_ns >= held_until) {
        l->mine = MINE_MAYBE;
        warn_late(l, svc, now - t0, interval_ns);
        return ANSWER_LATE;
    }
    l->mine = MINE_YES;
    l->late_warned = false;
    l->held_until = held_until;
    return ANSWER_HELD;
}

/* A replica whose answers come too late to run on must not keep the key
 * alive for nothing: that would starve the replicas that could run. */
static void give_up(struct lsvc_redis_lease *l)
{
    const char *argv[] = {"EVAL", release_script, "1", l->key, l->token};
    struct failure f;
    redisReply *r = round_trip(l, 5, argv, &f);

    if (r != NULL) {
        freeReplyObject(r);
        l->mine = MINE_NO;
    } else if (l->conn->err != 0) {
        /* Lost as well: the next call reconnects; its log line will do. */
        redisFree(l->conn);
        l->conn = NULL;
    }
}

static bool refresh(struct lsvc_redis_lease *l, lsvc *svc)
{
    double interval = lsvc_loop_seconds(svc);
    int64_t interval_ns = (int64_t)(interval * 1e9 + 0.5);
    int64_t ttl_ms;

    if (interval_ns < 1)
        interval_ns = 1;
    ttl_ms = (LSVC_REDIS_TTL_INTERVALS * interval_ns + NS_PER_MS - 1) /
             NS_PER_MS;
    if (l->conn == NULL) {
        if (l->failing && now_ns() < l->retry_at_ns)
            return false;
        if (!open_connection(l, svc))
            return false;
    }
    /* While the key may still hold our token (we held it, or a reply was
     * lost), the extend script takes it back without waiting for it to
     * lapse; when it says the key is not ours, SET NX tries a free one. */
    if (l->mine != MINE_NO) {
        enum answer a = ask(l, svc, true, ttl_ms, interval_ns);
        if (a == ANSWER_LATE)
            give_up(l);
        if (a != ANSWER_NOT_HELD)
            return a == ANSWER_HELD;
    }
    enum answer a = ask(l, svc, false, ttl_ms, interval_ns);
    if (a == ANSWER_LATE)
        give_up(l);
    return a == ANSWER_HELD;
}

/* --- The lease ops ------------------------------------------------------ */

static char *join_name(const char *prefix, const char *ns, const char *name)
{
    size_t size = strlen(prefix) + strlen(ns) + strlen(name) + 2;
    char *s = malloc(size);

    if (s != NULL)
        snprintf(s, size, "%s%s:%s", prefix, ns, name);
    return s;
}

/* Fixes the service at first use; any other is turned away. */
static int bind_service(struct lsvc_redis_lease *l, lsvc *svc)
{
    const char *name = lsvc_name(svc);

    if (l->name != NULL) {
        if (strcmp(l->name, name) == 0)
            return 0;
        if (!l->misuse_logged)
            lsvc_log(svc, LSVC_LOG_ERROR,
                     "The Redis lease of %s cannot serve %s as well: create "
                     "one lease per service.", l->name, name);
        l->misuse_logged = true;
        return EINVAL;
    }
    l->name = strdup(name);
    l->key = join_name("loopsvc:lease:", l->ns, name);
    l->token_key = join_name("loopsvc:token:", l->ns, name);
    l->client_name = join_name("loopsvc-lease:", l->ns, name);
    if (l->name == NULL || l->key == NULL || l->token_key == NULL ||
        l->client_name == NULL) {
        free(l->name);
        free(l->key);
        free(l->token_key);
        free(l->client_name);
        l->name = l->key = l->token_key = l->client_name = NULL;
        return ENOMEM;
    }
    /* Redis takes a client name of printable ASCII without spaces only. */
    for (char *p = l->client_name; *p != '\0'; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p > '~')
            *p = '_';
    return 0;
}

static int redis_acquire(void *ctx, lsvc *svc, bool *held)
{
    struct lsvc_redis_lease *l = ctx;
    struct sigpipe_guard guard;
    int rc;

    if (held != NULL)
        *held = false;
    if (l == NULL || svc == NULL || held == NULL)
        return EINVAL;
    if (atomic_exchange(&l->busy, true))
        return EINVAL;
    rc = bind_service(l, svc);
    /* Held for one service, it is no one else's, whatever the name. */
    if (rc == 0 && l->holder != NULL && l->holder != svc)
        rc = EINVAL;
    if (rc == 0) {
        sigpipe_block(&guard);
        *held = refresh(l, svc);
        sigpipe_restore(&guard);
        l->holder = *held ? svc : NULL;
        atomic_store(&l->valid_until, *held ? l->held_until : 0);
    }
    atomic_store(&l->busy, false);
    return rc;
}

static void redis_release(void *ctx, lsvc *svc)
{
    struct lsvc_redis_lease *l = ctx;
    struct sigpipe_guard guard;
    struct failure f;
    redisReply *r;

    if (l == NULL || svc == NULL || atomic_exchange(&l->busy, true))
        return;
    if (l->holder != svc || l->conn == NULL) {
        atomic_store(&l->busy, false);
        return;
    }
    l->holder = NULL;
    atomic_store(&l->valid_until, 0);
    const char *argv[] = {"EVAL", release_script, "1", l->key, l->token};
    sigpipe_block(&guard);
    r = round_trip(l, 5, argv, &f);
    sigpipe_restore(&guard);
    if (r != NULL) {
        freeReplyObject(r);
        l->mine = MINE_NO;
    } else {
        l->mine = MINE_MAYBE;
        if (note_failure(l, &f))
            lsvc_log(svc, LSVC_LOG_WARNING,
                     "%s Redis at %s while releasing the lease of %s: %s. The "
                     "lease lapses by itself, within %d intervals.",
                     f.verb, l->where, l->name, f.detail,
                     LSVC_REDIS_TTL_INTERVALS);
    }
    atomic_store(&l->busy, false);
}

/* The token of the holding that the acquire just confirmed, which its
 * take or extend script returned. */
static int redis_token(void *ctx, lsvc *svc, uint64_t *token)
{
    struct lsvc_redis_lease *l = ctx;
    int rc = EAGAIN;

    if (l == NULL || svc == NULL || token == NULL)
        return EINVAL;
    if (atomic_exchange(&l->busy, true))
        return EINVAL;
    if (l->holder == svc && l->mine == MINE_YES) {
        *token = l->fence;
        rc = 0;
    }
    atomic_store(&l->busy, false);
    return rc;
}

/* The key lapses at the TTL counted from before the request that took
 * or extended it was sent; Redis counts from later. */
static int redis_deadline(void *ctx, lsvc *svc, int64_t *mono_ns)
{
    struct lsvc_redis_lease *l = ctx;

    if (l == NULL || svc == NULL || mono_ns == NULL)
        return EINVAL;
    *mono_ns = atomic_load(&l->valid_until);
    return 0;
}

static const lsvc_lease_ops redis_ops = {
    .acquire = redis_acquire,
    .release = redis_release,
    .token = redis_token,
    .deadline = redis_deadline,
};

/* --- Public functions --------------------------------------------------- */

static void free_lease(struct lsvc_redis_lease *l)
{
    redisFree(l->conn);
    free(l->host);
    free(l->path);
    free(l->password);
    free(l->where);
    free(l->ns);
    free(l->name);
    free(l->key);
    free(l->token_key);
    free(l->client_name);
    free(l);
}

int lsvc_redis_lease_create(lsvc_redis_lease **out, const char *address,
                            const char *ns, double timeout)
{
    struct lsvc_redis_lease *l;
    long long us;
    int rc;

    /* A ':' in the namespace would make "a:b" + "c" and "a" + "b:c" one
     * key; the service name, after the last separator, may hold any. */
    if (out == NULL || address == NULL || ns == NULL ||
        strchr(ns, ':') != NULL || isnan(timeout) || timeout < 0 ||
        timeout > MAX_TIMEOUT)
        return EINVAL;
    if (timeout == 0)
        timeout = LSVC_REDIS_DEFAULT_TIMEOUT;
    l = calloc(1, sizeof *l);
    if (l == NULL)
        return ENOMEM;
    rc = parse_address(l, address);
    if (rc == 0 && (l->ns = strdup(ns)) == NULL)
        rc = ENOMEM;
    if (rc != 0) {
        free_lease(l);
        return rc;
    }
    /* Rounded up, and at least 1 us: a zero timeval means no timeout at
     * all to the socket. */
    us = (long long)(timeout * 1e6);
    if ((double)us < timeout * 1e6)
        us++;
    if (us < 1)
        us = 1;
    l->timeout.tv_sec = (time_t)(us / 1000000);
    l->timeout.tv_usec = (suseconds_t)(us % 1000000);
    l->timeout_s = timeout;
    atomic_init(&l->busy, false);
    make_token(l);
    *out = l;
    return 0;
}

int lsvc_redis_lease_options(lsvc_redis_lease *lease, lsvc_options *opts)
{
    if (lease == NULL || opts == NULL)
        return EINVAL;
    opts->lease = &redis_ops;
    opts->lease_ctx = lease;
    return 0;
}

int lsvc_redis_lease_destroy(lsvc_redis_lease *lease)
{
    if (lease == NULL)
        return EINVAL;
    if (atomic_exchange(&lease->busy, true))
        return EBUSY;
    free_lease(lease);
    return 0;
}
