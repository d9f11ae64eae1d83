/*
 * loopsvc-redis: leases held in Redis (the contract is in
 * include/loopsvc-redis.h), driven by the lease store (leasestore.c),
 * whose thread alone uses the connection.
 *
 * A lease is a key whose value names the lease object that holds it,
 * with a time to live; its fencing token is a counter beside it, bumped
 * when the key is taken. One script carries a whole round of takes,
 * renewals and releases, so a round is one command and one reply, and
 * atomic. What keeps two replicas from running at once is the holder's
 * own count on CLOCK_MONOTONIC, started before it sent the request that
 * set or extended the key: Redis starts its TTL later than that, so the
 * key outlives the holder's belief that it holds it. A step of the wall
 * clock changes neither count.
 *
 * The connection is one blocking hiredis context whose every connect and
 * round trip is bounded by the object's timeout.
 */
#include "loopsvc-redis.h"
#include "leasestore.h"

#include <hiredis.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#define MAX_TIMEOUT 3600.0
#define DEFAULT_PORT 6379

/* A round: KEYS are, per lease, its key, its token counter, and a hash
 * of its past: "ended", when its last holding ends or ended, and
 * "success", when a run last succeeded on any replica (ms on the
 * server's clock). ARGV[1] names this object, ARGV[2] is the TTL in ms,
 * then per lease "<op> <ago> <success>": op 0 take, 1 renew or 2
 * release; ago, for a release, how many ms ago the holding's last run
 * began, which becomes its end; success, how many ms ago a run last
 * succeeded here (-1: no news). The answer is a string per lease:
 * "<token> <new> <gap> <age>": the token of the holding taken, renewed or
 * released (0: none); 1 when a take made a new holding; how many ms before
 * now the previous holding ended, and a run last succeeded anywhere ("-":
 * unknown); and " !" after them when a free key could not be taken
 * because its counter is not a number.
 *
 * A key that holds our name is ours: taking or renewing it extends it and
 * keeps its token, the counter's value, since only a take of a free key
 * bumps the counter. A counter gone from under a held key (deleted,
 * evicted), or no longer a number, gives the key up: the next take makes
 * a new holding, and a new count. A free key is taken only when its
 * counter goes up, so that no key is held without a token. Numbers go
 * back as strings: Lua numbers are doubles, exact for milliseconds since
 * 1970 and for tokens below 2^53. */
static const char round_script[] =
    "local me, ttl, out = ARGV[1], tonumber(ARGV[2]), {} "
    "local t = redis.call('time') "
    "local now = t[1] * 1000 + math.floor(t[2] / 1000) "
    "local function age(h, f) "
    "  local v = tonumber(redis.call('hget', h, f)) "
    "  if v then return string.format('%d', now - v) end return '-' "
    "end "
    "for i = 1, #KEYS / 3 do "
    "  local k, c, h = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i] "
    "  local op, ago, ok = string.match(ARGV[2 + i], '(%d) (%d+) (-?%d+)') "
    "  ago, ok = tonumber(ago), tonumber(ok) "
    "  local v, token, new, gap, bad = redis.call('get', k), '0', '0', '-', '' "
    "  if v == me then "
    "    local n = redis.call('get', c) "
    "    if not (n and tonumber(n)) then redis.call('del', k) "
    "    elseif op == '2' then "
    "      redis.call('del', k) redis.call('hset', h, 'ended', now - ago) "
    "      token = n "
    "    else "
    "      redis.call('pexpire', k, ttl) "
    "      redis.call('hset', h, 'ended', now + ttl) token = n "
    "    end "
    "    if ok >= 0 then redis.call('hset', h, 'success', now - ok) end "
    "  elseif not v and op == '0' then "
    "    local n = redis.pcall('incr', c) "
    "    if type(n) == 'number' then "
    "      gap = age(h, 'ended') "
    "      redis.call('set', k, me, 'PX', ttl) "
    "      redis.call('hset', h, 'ended', now + ttl) "
    "      token, new = string.format('%d', n), '1' "
    "    else bad = ' !' end "
    "  end "
    "  out[i] = token .. ' ' .. new .. ' ' .. gap .. ' ' .. age(h, 'success')"
    "           .. bad "
    "end "
    "return out";

struct lsvc_redis_lease {
    struct lsvc__store *store;

    /* Set by create and never changed. */
    char *host;        /* NULL for a Unix socket */
    int port;
    char *path;        /* NULL for TCP */
    char *password;    /* NULL: no AUTH */
    char *where;       /* the address without its password, for log lines */
    char *label;       /* "Redis at <where>" */
    char *ns;
    struct timeval timeout;
    double timeout_s;
    char holder[64];   /* this object's name, the value of its keys */
    char client_name[96];

    /* The store's thread's alone. */
    redisContext *conn;
    bool counter_told; /* a WARNING said a counter is not a number */
    const char **argv; /* a round's command */
    size_t *argvlen;
    size_t argv_cap;
};

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

/* --- Why a request failed ------------------------------------------------ */

/* The reason goes mid-sentence: without the full stop Redis may end it
 * with. */
static void set_why(char *why, size_t size, const char *s)
{
    size_t n;

    snprintf(why, size, "%s", s);
    n = strlen(why);
    while (n > 0 && (why[n - 1] == '.' || why[n - 1] == ' '))
        why[--n] = '\0';
}

static void io_failure(char *why, size_t size, const redisContext *c,
                       int err, double timeout_s)
{
    if (c == NULL || c->err == REDIS_ERR_OOM)
        snprintf(why, size, "out of memory");
    else if (c->err == REDIS_ERR_IO &&
             (err == EAGAIN || err == EWOULDBLOCK || err == ETIMEDOUT ||
              err == EINPROGRESS))
        /* A socket timeout shows as EAGAIN, which reads as nonsense. */
        snprintf(why, size, "no answer within %g s", timeout_s);
    else
        set_why(why, size, c->errstr[0] != '\0' ? c->errstr
                                                  : "the connection failed");
}

/* An error reply (NOAUTH, READONLY, NOSCRIPT, ...), or one of a shape
 * the script never gives. */
static void reply_failure(char *why, size_t size, const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR)
        set_why(why, size, r->str != NULL ? r->str : "an error");
    else
        snprintf(why, size, "an unexpected reply (type %d)", r->type);
}

/* hiredis sends with write(), and a write to a peer that has gone raises
 * SIGPIPE in the writing thread, whose default action ends the process.
 * Only the store's thread writes, and it blocks every signal: there the
 * signal stays pending, harmless, and goes with the thread. */

/* AUTH and CLIENT SETNAME, sent together: one round trip. */
static int introduce(struct lsvc_redis_lease *l, char *why, size_t size)
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
            io_failure(why, size, l->conn, errno, l->timeout_s);
            return EIO;
        }
        r = reply;
        /* The name is for operators only: a user whose ACL forbids CLIENT
         * still gets its leases. A failed AUTH is fatal. */
        if (r->type == REDIS_REPLY_ERROR && i + 1 < sent) {
            reply_failure(why, size, r);
            freeReplyObject(r);
            return EIO;
        }
        freeReplyObject(r);
    }
    return 0;

io_error:
    io_failure(why, size, l->conn, 0, l->timeout_s);
    return EIO;
}

/* --- The driver --------------------------------------------------------- */

static void redis_disconnect(void *drv)
{
    struct lsvc_redis_lease *l = drv;

    redisFree(l->conn);
    l->conn = NULL;
}

static int redis_connect(void *drv, char *why, size_t size)
{
    struct lsvc_redis_lease *l = drv;
    int err, flags, rc = 0;

    errno = 0;
    if (l->path != NULL)
        l->conn = redisConnectUnixWithTimeout(l->path, l->timeout);
    else
        l->conn = redisConnectWithTimeout(l->host, l->port, l->timeout);
    err = errno;
    if (l->conn == NULL || l->conn->err != 0) {
        io_failure(why, size, l->conn, err, l->timeout_s);
        redis_disconnect(l);
        return EIO;
    }
    /* The connect timeout covers the connect alone: without this, a server
     * that stops answering would hold the thread for good. */
    if (redisSetTimeout(l->conn, l->timeout) != REDIS_OK) {
        io_failure(why, size, l->conn, errno, l->timeout_s);
        redis_disconnect(l);
        return EIO;
    }
    /* hiredis opens its socket without close-on-exec; a child the server
     * spawns should not carry the leases' connection. */
    flags = fcntl(l->conn->fd, F_GETFD);
    if (flags >= 0)
        fcntl(l->conn->fd, F_SETFD, flags | FD_CLOEXEC);
    rc = introduce(l, why, size);
    if (rc != 0) {
        redis_disconnect(l);
        return rc;
    }
    l->counter_told = false;
    lsvc_log(NULL, LSVC_LOG_DEBUG, "Connected to %s for the leases of "
             "namespace \"%s\" as %s.", l->label, l->ns, l->holder);
    return 0;
}

static int redis_socket(void *drv)
{
    struct lsvc_redis_lease *l = drv;

    return l->conn != NULL ? l->conn->fd : -1;
}

/* Redis says nothing unasked: a readable socket between rounds is a
 * closed connection (CLIENT KILL, a restart, a timeout of the server's). */
static int redis_idle_input(void *drv, char *why, size_t size)
{
    struct lsvc_redis_lease *l = drv;

    if (redisBufferRead(l->conn) != REDIS_OK)
        io_failure(why, size, l->conn, errno, l->timeout_s);
    else
        snprintf(why, size, "Redis sent what was not asked for");
    redis_disconnect(l);
    return EIO;
}

static int grow_argv(struct lsvc_redis_lease *l, size_t n)
{
    if (n <= l->argv_cap)
        return 0;
    size_t cap = l->argv_cap ? l->argv_cap : 64;
    while (cap < n)
        cap *= 2;
    const char **argv = realloc(l->argv, cap * sizeof *argv);
    if (argv == NULL)
        return ENOMEM;
    l->argv = argv;
    size_t *argvlen = realloc(l->argvlen, cap * sizeof *argvlen);
    if (argvlen == NULL)
        return ENOMEM;
    l->argvlen = argvlen;
    l->argv_cap = cap;
    return 0;
}

/* A number of an answer, or LSVC__NO_GAP for "-". */
static bool parse_number(const char **p, int64_t *v)
{
    char *end = NULL;

    if (**p == '-' && ((*p)[1] == ' ' || (*p)[1] == '\0')) {
        *v = LSVC__NO_GAP;
        *p += 1;
        return true;
    }
    errno = 0;
    *v = strtoll(*p, &end, 10);
    if (errno != 0 || end == *p)
        return false;
    *p = end;
    return true;
}

/* An answer of the script: "<token> <new> <gap> <age>[ !]"; *bad for the
 * " !". */
static bool parse_answer(const redisReply *r, struct lsvc__lease_item *it,
                         bool *bad)
{
    int64_t token, fresh;
    const char *p;

    if (r->type != REDIS_REPLY_STRING || strlen(r->str) != r->len)
        return false;
    p = r->str;
    if (!parse_number(&p, &token) || token < 0 || *p++ != ' ' ||
        !parse_number(&p, &fresh) || *p++ != ' ' ||
        !parse_number(&p, &it->gap_ms) || *p++ != ' ' ||
        !parse_number(&p, &it->success_age_ms))
        return false;
    *bad = strcmp(p, " !") == 0;
    if (*p != '\0' && !*bad)
        return false;
    it->ok = token > 0;
    it->new_token = (uint64_t)token;
    it->fresh = fresh == 1;
    return true;
}

/* The key of a lease is its id, "loopsvc:lease:<ns>:<name>"; its token
 * counter and the hash of its past are the id under other prefixes of
 * the same length. */
#define LEASE_PREFIX "loopsvc:lease:"
#define TOKEN_PREFIX "loopsvc:token:"
#define PAST_PREFIX "loopsvc:state:"
_Static_assert(sizeof TOKEN_PREFIX == sizeof LEASE_PREFIX &&
               sizeof PAST_PREFIX == sizeof LEASE_PREFIX,
               "a lease's three names are as long as each other");

#define OP_SIZE 48 /* "2 <ms> <ms>" */

static int redis_exchange(void *drv, struct lsvc__lease_item *items,
                          size_t n, char *why, size_t size)
{
    struct lsvc_redis_lease *l = drv;
    char nkeys[24], ttl[24];
    size_t argc = 5 + 4 * n;
    int rc = 0;

    /* The counters' and ends' names and the ops, made in one block for
     * the round. */
    size_t names = 0;
    for (size_t i = 0; i < n; i++)
        names += 2 * (strlen(items[i].id) + 1) + OP_SIZE;
    char *block = malloc(names);
    if (block == NULL || grow_argv(l, argc) != 0) {
        free(block);
        snprintf(why, size, "out of memory");
        return ENOMEM;
    }
    snprintf(nkeys, sizeof nkeys, "%zu", 3 * n);
    snprintf(ttl, sizeof ttl, "%lld", (long long)items[0].ttl_ms);
    l->argv[0] = "EVAL";
    l->argv[1] = round_script;
    l->argv[2] = nkeys;
    char *c = block;
    for (size_t i = 0; i < n; i++) {
        const char *rest = items[i].id + strlen(LEASE_PREFIX);
        size_t len = strlen(items[i].id) + 1;

        l->argv[3 + 3 * i] = items[i].id;
        snprintf(c, len, TOKEN_PREFIX "%s", rest);
        l->argv[4 + 3 * i] = c;
        c += len;
        snprintf(c, len, PAST_PREFIX "%s", rest);
        l->argv[5 + 3 * i] = c;
        c += len;
        snprintf(c, OP_SIZE, "%d %lld %lld", (int)items[i].op,
                 (long long)items[i].ago_ms,
                 (long long)items[i].success_ago_ms);
        l->argv[5 + 3 * n + i] = c;
        c += OP_SIZE;
    }
    l->argv[3 + 3 * n] = l->holder;
    l->argv[4 + 3 * n] = ttl;
    for (size_t i = 0; i < argc; i++)
        l->argvlen[i] = strlen(l->argv[i]);

    errno = 0;
    redisReply *r = redisCommandArgv(l->conn, (int)argc, l->argv, l->argvlen);
    int err = errno;
    free(block);
    if (r == NULL) {
        io_failure(why, size, l->conn, err, l->timeout_s);
        return EIO;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        reply_failure(why, size, r);
        rc = EIO;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        const redisReply *e = r->element[i];

        bool bad = false;
        if (!parse_answer(e, &items[i], &bad)) {
            reply_failure(why, size, e);
            rc = EIO;
        } else if (bad && !l->counter_told) {
            /* Said once per connection: every round would say it again. */
            l->counter_told = true;
            lsvc_log(NULL, LSVC_LOG_WARNING, "The fencing token counter "
                     TOKEN_PREFIX "%s in %s is not a number, so no replica "
                     "can take that lease: DEL it, or SET it above the "
                     "highest token any sink holds.",
                     items[i].id + strlen(LEASE_PREFIX), l->label);
        }
    }
    freeReplyObject(r);
    return rc;
}

static char *redis_make_id(void *drv, const char *name)
{
    struct lsvc_redis_lease *l = drv;
    size_t size = strlen(LEASE_PREFIX) + strlen(l->ns) + strlen(name) + 2;
    char *id = malloc(size);

    if (id != NULL)
        snprintf(id, size, LEASE_PREFIX "%s:%s", l->ns, name);
    return id;
}

static const struct lsvc__store_driver redis_driver = {
    .make_id = redis_make_id,
    .connect = redis_connect,
    .socket = redis_socket,
    .idle_input = redis_idle_input,
    .exchange = redis_exchange,
    .disconnect = redis_disconnect,
};

/* --- Public functions --------------------------------------------------- */

static void free_lease(struct lsvc_redis_lease *l)
{
    redisFree(l->conn);
    free(l->host);
    free(l->path);
    free(l->password);
    free(l->where);
    free(l->label);
    free(l->ns);
    free(l->argv);
    free(l->argvlen);
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
    size_t size = l->where != NULL ? strlen(l->where) + sizeof "Redis at " : 0;
    if (rc == 0 && (l->label = malloc(size)) == NULL)
        rc = ENOMEM;
    if (rc != 0) {
        free_lease(l);
        return rc;
    }
    snprintf(l->label, size, "Redis at %s", l->where);
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
    lsvc__store_name_holder(l->holder, sizeof l->holder);
    snprintf(l->client_name, sizeof l->client_name, "loopsvc-lease:%s",
             l->holder);
    /* CLIENT SETNAME takes no spaces. */
    for (char *p = l->client_name; *p != '\0'; p++)
        if (*p == ' ')
            *p = '_';
    int64_t timeout_ns = (int64_t)us * 1000;
    rc = lsvc__store_create(&l->store, &redis_driver, l, l->label,
                            timeout_ns,
                            LSVC_REDIS_LEASE_TTL_TIMEOUTS * timeout_ns);
    if (rc != 0) {
        free_lease(l);
        return rc;
    }
    *out = l;
    return 0;
}

int lsvc_redis_lease_options(lsvc_redis_lease *lease, lsvc_options *opts)
{
    if (lease == NULL || opts == NULL)
        return EINVAL;
    opts->lease = &lsvc__store_ops;
    opts->lease_ctx = lease->store;
    return 0;
}

int lsvc_redis_lease_destroy(lsvc_redis_lease *lease)
{
    if (lease == NULL)
        return EINVAL;
    int rc = lsvc__store_destroy(lease->store);
    if (rc != 0)
        return rc;
    free_lease(lease);
    return 0;
}
