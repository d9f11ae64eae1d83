/*
 * replica: one replica of a server, for the lease tests (lease_test.py).
 *
 * It runs one service under a lease held in PostgreSQL or Redis, inside a
 * group, so that SIGTERM stops it as it would stop a real server, and
 * records every run it makes in a store the test reads: the replica's id,
 * the run's due point, when the run began and ended, its fencing token
 * (lsvc_lease_token; 0 when it had none), which holding of this replica it
 * ran in (lsvc_stats.lease_changes), and what a fenced sink said of its
 * write. Several of these processes on one machine play the replicas of
 * one deployment.
 *
 * The sink is the pattern of doc/replicas.md, "Fencing tokens": each run
 * writes its token, replica and point into one row (PostgreSQL, table
 * lsvc_lease_sink) or hash (Redis, "lsvc-test:sink:<ns>") per namespace,
 * which refuses a token lower than the one it holds. The record says "ok"
 * (written), "stale" (refused), "error" (the sink could not be asked),
 * "none" (no token to write with) or "failed" (a run made to fail, which
 * writes nothing).
 *
 * Due points: every replica runs on the library's own wall-clock grid
 * (lsvc_options.align_to_clock, LSVC_MISSED_SKIP): a run is due at
 * n * interval + offset on CLOCK_REALTIME, which all processes of a
 * machine share. The point of a run is its scheduled start
 * (lsvc_scheduled_start, on CLOCK_MONOTONIC) turned into CLOCK_REALTIME
 * by the two clocks' difference read at the run's start, less the
 * replica's --offset, over the interval, rounded: the logical point, the
 * same in every replica whatever its offset. Two records with one point
 * mean that point ran twice. --offset S plays a replica whose clock is
 * behind by S: its point n is due S after the others' point n. A run
 * whose due time is off its grid by more than a quarter interval says so
 * on stderr ("off the grid"), since its point would be ambiguous; by more
 * than 1 ms, "strays from the grid"; the largest deviation of any run
 * goes into the stats line (grid_off_us).
 * The record also keeps the due time on CLOCK_MONOTONIC, the clock of the
 * other times.
 *
 * usage: replica --backend pg|redis --address ADDRESS --ns NS --id N
 *                [--seconds S] [--interval I] [--record STORE]
 *                [--timeout T] [--name NAME] [--work W]
 *                [--slow-file PATH] [--slow-work W] [--services N]
 *                [--offset S] [--fail N] [--fail-file PATH]
 *   --seconds   run for S seconds, then stop; 0 (the default): until SIGTERM
 *   --record    the conninfo (pg) or address (redis) to record runs in;
 *               nothing is recorded without it
 *   --timeout   the lease's timeout; 0 (the default): the backend's
 *   --work      how long a run takes, in seconds (default 0.01)
 *   --slow-file a run that finds PATH and removes it (one run of one
 *               replica at most, however many share PATH) takes
 *               --slow-work seconds instead of --work (default 1), and
 *               says so on stderr: "replica N: slow run of point P began
 *               with token T", then, before its write, "replica N: slow run
 *               of point P: lease valid for S s" (or "...: valid_for:
 *               <error>"), from lsvc_lease_valid_for. It writes to the sink
 *               whatever that says: it is there to meet the fence.
 *   --services  run N services, "NAME-0" .. "NAME-<N-1>", on ONE lease
 *               object (default 1, a service named NAME). Service i
 *               records in namespace "NS/i" of the store.
 *   --offset    lsvc_options.offset_seconds, in [0, interval): the grid of
 *               a replica whose clock is off by S (default 0)
 *   --fail      1: every run fails (run_once returns 1) and writes nothing
 *               to the sink; its record says "failed" (default 0)
 *   --fail-file runs fail, as with --fail 1, while PATH exists
 * At the start it says on stderr "replica N: lease ttl S s, MODEL": how
 * long the store keeps a lease past its last renewal, and whether that is
 * renewed in the background (store) or before each run (per-run).
 * The recording session is named "lsvc-record-<id>-<pid>" (pg:
 * application_name; redis: CLIENT SETNAME), so that the connections of a
 * replica can be counted.
 * stdout: "lease-create: <ERRNO NAME>" when the lease cannot be created
 * (exit 3); otherwise one line of counters at the end (exit 0), summed
 * over the services (held: how many were held; grid_off_us: see above).
 */
#include "loopsvc.h"
#if LSVC_TEST_PG
#include "loopsvc-pg.h"
#include <libpq-fe.h>
#endif
#if LSVC_TEST_REDIS
#include "loopsvc-redis.h"
#include <hiredis.h>
#endif

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_SEC INT64_C(1000000000)
/* Failed recording connections are retried at most this often, so that a
 * store that is down does not slow every run. */
#define RECORD_RETRY_NS (200 * INT64_C(1000000))

struct args {
    const char *backend, *address, *ns, *record, *name, *slow_file,
        *fail_file;
    long id, services, fail;
    double seconds, interval, timeout, work, slow_work, offset;
};

/* One service of the replica: its name, and the namespace its runs are
 * recorded in. */
struct probe {
    const struct args *args;
    char name[128];
    char rec_ns[256];
    lsvc_class cls;
    lsvc *svc;
};

struct record {
    const char *ns;            /* the record namespace (its probe's) */
    long long point;           /* the logical point (see above) */
    long long due_ns, start_ns, end_ns; /* CLOCK_MONOTONIC */
    unsigned long long token;  /* 0: none */
    unsigned long long holding; /* lease_changes at the run */
    const char *sink;          /* "ok", "stale", "error", "none" or
                                * "failed" (a failing run writes nothing) */
};

/* Runs not yet stored, and the connection to store them. Used by run_once
 * on the service threads, under `lock`, and by main once they have ended. */
static struct recorder {
    pthread_mutex_t lock;
    const struct args *args;
    struct record *pending;
    size_t count, cap;
    int64_t retry_ns;
    long long grid_off_max; /* the largest |due - its grid point|, ns */
#if LSVC_TEST_PG
    PGconn *pg;
#endif
#if LSVC_TEST_REDIS
    redisContext *redis;
#endif
} rec = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = { .tv_sec = (time_t)(ns / NS_PER_SEC),
                           .tv_nsec = (long)(ns % NS_PER_SEC) };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

#if LSVC_TEST_PG
static bool pg_connect(void)
{
    /* Keywords after dbname override the conninfo: no connect and no
     * statement waits for ever. */
    static const char *const keys[] = { "dbname", "connect_timeout",
                                        "options", "application_name",
                                        NULL };
    char app[64];
    const char *const values[] = { rec.args->record, "2",
                                   "-c statement_timeout=2000", app, NULL };

    if (rec.pg != NULL)
        return true;
    snprintf(app, sizeof app, "lsvc-record-%ld-%ld", rec.args->id,
             (long)getpid());
    rec.pg = PQconnectdbParams(keys, values, 1);
    if (PQstatus(rec.pg) == CONNECTION_OK) {
        /* The sink rows of every service: ns, or ns/0 .. ns/N-1. */
        char count[24];
        const char *params[] = { rec.args->ns, count };
        PGresult *res;

        snprintf(count, sizeof count, "%ld", rec.args->services);
        res = PQexecParams(rec.pg,
            "INSERT INTO lsvc_lease_sink (ns, fence) SELECT CASE WHEN "
            "$2::int = 1 THEN $1 ELSE $1 || '/' || i END, 0 FROM "
            "generate_series(0, $2::int - 1) i ON CONFLICT (ns) DO NOTHING",
            2, NULL, params, NULL, NULL, 0);
        bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;

        PQclear(res);
        if (ok)
            return true;
    }
    fprintf(stderr, "replica %ld: cannot connect to record: %s",
            rec.args->id, PQerrorMessage(rec.pg));
    PQfinish(rec.pg);
    rec.pg = NULL;
    return false;
}

/* One statement with n text parameters; *rows gets the rows it changed.
 * A failure drops the connection, for the next call to make again. */
static bool pg_exec(const char *what, const char *sql, int n,
                    const char *const *params, long *rows)
{
    if (!pg_connect())
        return false;
    PGresult *res = PQexecParams(rec.pg, sql, n, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;

    if (ok && rows != NULL)
        *rows = atol(PQcmdTuples(res));
    if (!ok) {
        fprintf(stderr, "replica %ld: cannot %s: %s", rec.args->id, what,
                PQerrorMessage(rec.pg));
        PQfinish(rec.pg);
        rec.pg = NULL;
    }
    PQclear(res);
    return ok;
}

static bool pg_store(const struct record *r)
{
    char id[24], point[24], due[24], start[24], end[24], token[24],
        holding[24];
    const char *params[] = { r->ns, id, point, start, end, token,
                             holding, r->sink, due };

    snprintf(id, sizeof id, "%ld", rec.args->id);
    snprintf(point, sizeof point, "%lld", r->point);
    snprintf(due, sizeof due, "%lld", r->due_ns);
    snprintf(start, sizeof start, "%lld", r->start_ns);
    snprintf(end, sizeof end, "%lld", r->end_ns);
    snprintf(token, sizeof token, "%llu", r->token);
    snprintf(holding, sizeof holding, "%llu", r->holding);
    return pg_exec("record a run",
        "INSERT INTO lsvc_lease_runs (ns, replica, point, start_ns, end_ns, "
        "token, holding, sink, due_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, "
        "$8, $9)", 9, params, NULL);
}

/* doc/replicas.md's fenced write: 0 rows is a stale token. */
static const char *pg_sink(const struct record *r)
{
    char id[24], point[24], token[24];
    const char *params[] = { r->ns, token, id, point };
    long rows = 0;

    snprintf(id, sizeof id, "%ld", rec.args->id);
    snprintf(point, sizeof point, "%lld", r->point);
    snprintf(token, sizeof token, "%llu", r->token);
    if (!pg_exec("write to the sink",
                 "UPDATE lsvc_lease_sink SET replica = $3, point = $4, "
                 "fence = $2 WHERE ns = $1 AND fence <= $2", 4, params, &rows))
        return "error";
    return rows == 1 ? "ok" : "stale";
}
#endif

#if LSVC_TEST_REDIS
/* The address forms of loopsvc-redis.h: [redis://[:password@]]host[:port]
 * or [redis://[:password@]]unix:/path. */
static redisContext *redis_open(const char *address)
{
    const struct timeval tv = { .tv_sec = 2 };
    char buf[512], *host, *password = NULL, *at;
    redisContext *c;

    snprintf(buf, sizeof buf, "%s", address);
    host = buf;
    if (strncmp(host, "redis://", 8) == 0)
        host += 8;
    at = strrchr(host, '@');
    if (at != NULL) {
        *at = '\0';
        password = strchr(host, ':') != NULL ? strchr(host, ':') + 1 : host;
        host = at + 1;
    }
    if (strncmp(host, "unix:", 5) == 0) {
        c = redisConnectUnixWithTimeout(host + 5, tv);
    } else {
        char *colon = strrchr(host, ':');
        int port = 6379;

        if (colon != NULL) {
            *colon = '\0';
            port = atoi(colon + 1);
        }
        c = redisConnectWithTimeout(host, port, tv);
    }
    if (c == NULL)
        return NULL;
    if (c->err == 0)
        redisSetTimeout(c, tv);
    if (c->err == 0 && password != NULL && *password != '\0') {
        redisReply *r = redisCommand(c, "AUTH %s", password);

        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "replica: AUTH for recording failed\n");
            if (r != NULL)
                freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    return c;
}

static bool redis_connect(void)
{
    if (rec.redis != NULL)
        return true;
    rec.redis = redis_open(rec.args->record);
    if (rec.redis == NULL || rec.redis->err != 0) {
        fprintf(stderr, "replica %ld: cannot connect to record: %s\n",
                rec.args->id, rec.redis != NULL ? rec.redis->errstr : "?");
        if (rec.redis != NULL)
            redisFree(rec.redis);
        rec.redis = NULL;
        return false;
    }
    redisReply *n = redisCommand(rec.redis,
                                 "CLIENT SETNAME lsvc-record-%ld-%ld",
                                 rec.args->id, (long)getpid());
    if (n != NULL)
        freeReplyObject(n);
    return true;
}

/* The integer that reply is, or -1 when it is none: the failure is said
 * and the connection dropped, for the next call to make again. Frees the
 * reply. */
static long long redis_integer(redisReply *reply, const char *what)
{
    long long v = -1;

    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
        v = reply->integer;
    } else {
        fprintf(stderr, "replica %ld: cannot %s: %s\n", rec.args->id, what,
                reply != NULL ? reply->str : rec.redis->errstr);
        redisFree(rec.redis);
        rec.redis = NULL;
    }
    if (reply != NULL)
        freeReplyObject(reply);
    return v;
}

static bool redis_store(const struct record *r)
{
    if (!redis_connect())
        return false;
    redisReply *reply = redisCommand(rec.redis,
        "RPUSH lsvc-test:runs:%s %ld:%lld:%lld:%lld:%lld:%llu:%llu:%s",
        r->ns, rec.args->id, r->point, r->due_ns, r->start_ns, r->end_ns,
        r->token, r->holding, r->sink);

    return redis_integer(reply, "record a run") >= 0;
}
#endif

#if LSVC_TEST_REDIS
/* doc/replicas.md's fenced write: the script refuses a lower token. */
static const char redis_sink_script[] =
    "local fence = tonumber(redis.call('hget', KEYS[1], 'fence') or '0') "
    "if tonumber(ARGV[1]) < fence then return 0 end "
    "redis.call('hset', KEYS[1], 'fence', ARGV[1], 'replica', ARGV[2], "
    "'point', ARGV[3]) "
    "return 1";

static const char *redis_sink(const struct record *r)
{
    if (!redis_connect())
        return "error";
    redisReply *reply = redisCommand(rec.redis,
        "EVAL %s 1 lsvc-test:sink:%s %llu %ld %lld", redis_sink_script,
        r->ns, r->token, rec.args->id, r->point);
    long long v = redis_integer(reply, "write to the sink");

    return v < 0 ? "error" : v == 1 ? "ok" : "stale";
}
#endif

/* Writes the run to the fenced sink, with its token: what it said. */
static const char *sink_locked(const struct record *r)
{
    if (rec.args->record == NULL || r->token == 0)
        return "none";
#if LSVC_TEST_PG
    if (strcmp(rec.args->backend, "pg") == 0)
        return pg_sink(r);
#endif
#if LSVC_TEST_REDIS
    if (strcmp(rec.args->backend, "redis") == 0)
        return redis_sink(r);
#endif
    return "none";
}

static const char *sink(const struct record *r)
{
    pthread_mutex_lock(&rec.lock);
    const char *said = sink_locked(r);
    pthread_mutex_unlock(&rec.lock);
    return said;
}

/* Connects before the service starts, so that the first run does not pay
 * for it; a failure here is retried at the runs. */
static void open_recorder(void)
{
    if (rec.args->record == NULL)
        return;
#if LSVC_TEST_PG
    if (strcmp(rec.args->backend, "pg") == 0)
        pg_connect();
#endif
#if LSVC_TEST_REDIS
    if (strcmp(rec.args->backend, "redis") == 0)
        redis_connect();
#endif
}

static bool store(const struct record *r)
{
#if LSVC_TEST_PG
    if (strcmp(rec.args->backend, "pg") == 0)
        return pg_store(r);
#endif
#if LSVC_TEST_REDIS
    if (strcmp(rec.args->backend, "redis") == 0)
        return redis_store(r);
#endif
    (void)r;
    return false;
}

/* Stores what is pending, oldest first; what fails stays for later. */
static void flush_records(bool force)
{
    size_t done = 0;

    if (rec.args->record == NULL || rec.count == 0)
        return;
    if (!force && now_ns() < rec.retry_ns)
        return;
    while (done < rec.count && store(&rec.pending[done]))
        done++;
    memmove(rec.pending, rec.pending + done,
            (rec.count - done) * sizeof rec.pending[0]);
    rec.count -= done;
    if (rec.count > 0)
        rec.retry_ns = now_ns() + RECORD_RETRY_NS;
}

static void add_record(const struct record *r)
{
    if (rec.count == rec.cap) {
        size_t cap = rec.cap ? 2 * rec.cap : 64;
        struct record *p = realloc(rec.pending, cap * sizeof *p);

        if (p == NULL) {
            fprintf(stderr, "replica %ld: out of memory; a run is not recorded\n",
                    rec.args->id);
            return;
        }
        rec.pending = p;
        rec.cap = cap;
    }
    rec.pending[rec.count++] = *r;
}

static void close_recorder(void)
{
#if LSVC_TEST_PG
    if (rec.pg != NULL)
        PQfinish(rec.pg);
#endif
#if LSVC_TEST_REDIS
    if (rec.redis != NULL)
        redisFree(rec.redis);
#endif
    free(rec.pending);
}

static int64_t interval_ns(const struct args *a)
{
    return (int64_t)(a->interval * 1e9 + 0.5);
}

/* The difference CLOCK_REALTIME - CLOCK_MONOTONIC now, read between two
 * readings of CLOCK_MONOTONIC so that a preemption between the two clocks
 * shows (and is tried again); *gap: the time between those two readings,
 * twice the largest error. */
static int64_t wall_minus_mono(int64_t *gap)
{
    int64_t best = 0, best_gap = INT64_MAX;

    for (int i = 0; i < 5; i++) {
        struct timespec w;
        int64_t m0 = now_ns();
        clock_gettime(CLOCK_REALTIME, &w);
        int64_t m1 = now_ns();
        int64_t wall = (int64_t)w.tv_sec * NS_PER_SEC + w.tv_nsec;

        if (m1 - m0 < best_gap) {
            best_gap = m1 - m0;
            best = wall - (m0 + (m1 - m0) / 2);
        }
        if (best_gap < 20000)
            break;
    }
    *gap = best_gap;
    return best;
}

/* Whether this run fails on purpose: --fail, or --fail-file present. */
static bool failing(const struct args *a)
{
    return a->fail != 0 ||
           (a->fail_file != NULL && access(a->fail_file, F_OK) == 0);
}

/* Whether this run is the slow one: the one that removes --slow-file. */
static bool slow_run(const struct args *a)
{
    return a->slow_file != NULL && unlink(a->slow_file) == 0;
}

static int probe_run(lsvc *svc, void *arg)
{
    const struct probe *p = arg;
    const struct args *a = p->args;
    int64_t start = now_ns(), due, interval = interval_ns(a);
    int64_t offset = (int64_t)(a->offset * 1e9 + 0.5);
    long long point;
    struct timespec ts;

    if (lsvc_scheduled_start(svc, &ts) != 0)
        return 1;
    due = (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
    /* On this replica's grid: n * interval + offset on CLOCK_REALTIME. */
    int64_t gap;
    int64_t logical = due + wall_minus_mono(&gap) - offset;
    point = (logical + interval / 2) / interval;
    long long off = llabs(logical - point * interval);
    pthread_mutex_lock(&rec.lock);
    if (off > rec.grid_off_max)
        rec.grid_off_max = off;
    pthread_mutex_unlock(&rec.lock);
    if (off > NS_PER_SEC / 1000)
        fprintf(stderr, "replica %ld: a run of %s due at %lld ns %s by %lld "
                "ns (clocks read within %lld ns; it began %lld ns after it "
                "was due)\n", a->id, p->name, (long long)due,
                off > interval / 4 ? "is off the grid" : "strays from the grid",
                (long long)(logical - point * interval), (long long)gap,
                (long long)(start - due));
    struct record r = { .ns = p->rec_ns, .point = point, .due_ns = due,
                        .start_ns = start };
    uint64_t token = 0;
    lsvc_stats st;
    int rc = lsvc_lease_token(svc, &token);

    if (rc != 0)
        fprintf(stderr, "replica %ld: a run without a fencing token: %s\n",
                a->id, strerror(rc));
    r.token = (unsigned long long)token;
    if (lsvc_get_stats(svc, &st) == 0)
        r.holding = (unsigned long long)st.lease_changes;
    if (slow_run(a)) {
        fprintf(stderr, "replica %ld: slow run of point %lld began with token "
                "%llu\n", a->id, point, r.token);
        sleep_ns((int64_t)(a->slow_work * 1e9));
        double left = -1;
        rc = lsvc_lease_valid_for(svc, &left);
        if (rc == 0)
            fprintf(stderr, "replica %ld: slow run of point %lld: lease valid "
                    "for %.3f s\n", a->id, point, left);
        else
            fprintf(stderr, "replica %ld: slow run of point %lld: valid_for: "
                    "%s\n", a->id, point, strerror(rc));
    } else {
        sleep_ns((int64_t)(a->work * 1e9));
    }
    bool failed = failing(a);
    r.sink = failed ? "failed" : sink(&r);
    r.end_ns = now_ns();
    pthread_mutex_lock(&rec.lock);
    add_record(&r);
    flush_records(false);
    pthread_mutex_unlock(&rec.lock);
    return failed ? 1 : 0;
}

/* Ends the group after --seconds, unless main says it ended first. */
static struct stopper {
    pthread_mutex_t lock; /* protects done */
    pthread_cond_t cond;
    bool done;
    double seconds;
    lsvc_group *group;
} stopper = { .lock = PTHREAD_MUTEX_INITIALIZER,
              .cond = PTHREAD_COND_INITIALIZER };

static void *stopper_main(void *arg)
{
    struct timespec until;

    (void)arg;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = (int64_t)until.tv_nsec + (int64_t)(stopper.seconds * 1e9);
    until.tv_sec += (time_t)(ns / NS_PER_SEC);
    until.tv_nsec = (long)(ns % NS_PER_SEC);
    pthread_mutex_lock(&stopper.lock);
    while (!stopper.done)
        if (pthread_cond_timedwait(&stopper.cond, &stopper.lock, &until) == ETIMEDOUT)
            break;
    bool stop = !stopper.done;
    pthread_mutex_unlock(&stopper.lock);
    if (stop)
        lsvc_group_stop(stopper.group);
    return NULL;
}

static const char *errno_name(int rc)
{
    switch (rc) {
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    default: return "other";
    }
}

static int usage(const char *why)
{
    fprintf(stderr, "replica: %s\nusage: replica --backend pg|redis --address A "
            "--ns NS --id N [--seconds S] [--interval I] [--record STORE] "
            "[--timeout T] [--name NAME] [--work W] [--slow-file PATH] "
            "[--slow-work W] [--services N] [--offset S] [--fail N] "
            "[--fail-file PATH]\n", why);
    return 2;
}

static int parse_args(int argc, char **argv, struct args *a)
{
    *a = (struct args){ .name = "lease-probe", .interval = 0.05, .work = 0.01,
                        .slow_work = 1.0, .id = -1, .services = 1 };
    for (int i = 1; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;

        if (v == NULL)
            return usage("an option without a value");
        if (strcmp(k, "--backend") == 0)
            a->backend = v;
        else if (strcmp(k, "--address") == 0)
            a->address = v;
        else if (strcmp(k, "--ns") == 0)
            a->ns = v;
        else if (strcmp(k, "--record") == 0)
            a->record = v;
        else if (strcmp(k, "--name") == 0)
            a->name = v;
        else if (strcmp(k, "--slow-file") == 0)
            a->slow_file = v;
        else if (strcmp(k, "--fail-file") == 0)
            a->fail_file = v;
        else if (strcmp(k, "--fail") == 0)
            a->fail = strtol(v, &end, 10);
        else if (strcmp(k, "--offset") == 0)
            a->offset = strtod(v, &end);
        else if (strcmp(k, "--id") == 0)
            a->id = strtol(v, &end, 10);
        else if (strcmp(k, "--services") == 0)
            a->services = strtol(v, &end, 10);
        else if (strcmp(k, "--seconds") == 0)
            a->seconds = strtod(v, &end);
        else if (strcmp(k, "--interval") == 0)
            a->interval = strtod(v, &end);
        else if (strcmp(k, "--timeout") == 0)
            a->timeout = strtod(v, &end);
        else if (strcmp(k, "--work") == 0)
            a->work = strtod(v, &end);
        else if (strcmp(k, "--slow-work") == 0)
            a->slow_work = strtod(v, &end);
        else
            return usage("an unknown option");
        if (end != NULL && (*end != '\0' || end == v))
            return usage("a value that is not a number");
    }
    if (a->backend == NULL || a->address == NULL || a->ns == NULL || a->id < 0)
        return usage("--backend, --address, --ns and --id are required");
    if (!(a->interval > 0) || !(a->seconds >= 0) || !(a->work >= 0) ||
        !(a->slow_work >= 0))
        return usage("an interval, duration or work out of range");
    if (a->services < 1 || a->services > 1000)
        return usage("--services out of range (1 to 1000)");
    if (!(a->offset >= 0) || !(a->offset < a->interval))
        return usage("--offset out of range (0 to the interval, not included)");
    return 0;
}

struct lease {
    void *handle;
    void (*destroy)(void *handle);
};

/* A backend: its name, and its calls with the handle as void *. */
struct backend {
    const char *name;
    int (*create)(void **handle, const struct args *a);
    int (*options)(void *handle, lsvc_options *opts);
    void (*destroy)(void *handle);
};

/* The calls of a backend whose functions are PREFIX_create, _options and
 * _destroy, on a handle of type PREFIX. */
#define BACKEND_CALLS(PREFIX)                                                \
    static int PREFIX##_create_any(void **handle, const struct args *a)      \
    {                                                                        \
        PREFIX *h = NULL;                                                    \
        int rc = PREFIX##_create(&h, a->address, a->ns, a->timeout);         \
        *handle = h;                                                         \
        return rc;                                                           \
    }                                                                        \
    static int PREFIX##_options_any(void *handle, lsvc_options *opts)        \
    {                                                                        \
        return PREFIX##_options(handle, opts);                               \
    }                                                                        \
    static void PREFIX##_destroy_any(void *handle)                           \
    {                                                                        \
        PREFIX##_destroy(handle);                                            \
    }

#if LSVC_TEST_PG
BACKEND_CALLS(lsvc_pg_lease)
#endif
#if LSVC_TEST_REDIS
BACKEND_CALLS(lsvc_redis_lease)
#endif

static const struct backend backends[] = {
#if LSVC_TEST_PG
    {"pg", lsvc_pg_lease_create_any, lsvc_pg_lease_options_any,
     lsvc_pg_lease_destroy_any},
#endif
#if LSVC_TEST_REDIS
    {"redis", lsvc_redis_lease_create_any, lsvc_redis_lease_options_any,
     lsvc_redis_lease_destroy_any},
#endif
};

/* How long the store keeps a lease past the request that took or renewed
 * it, as the backend's header defines it, and whether it is renewed in the
 * background ("store": runs do not wait for it) or before every run
 * ("per-run"); 0 and "session" for a lease that lasts as long as its
 * session. Said on stderr at the start, for lease_test.py's bounds. */
static double lease_ttl(const struct args *a, const char **model)
{
    *model = "session";
#if LSVC_TEST_PG && defined(LSVC_PG_LEASE_TTL_TIMEOUTS)
    if (strcmp(a->backend, "pg") == 0) {
        *model = "store";
        return LSVC_PG_LEASE_TTL_TIMEOUTS *
               (a->timeout > 0 ? a->timeout : LSVC_PG_DEFAULT_TIMEOUT);
    }
#endif
#if LSVC_TEST_REDIS && defined(LSVC_REDIS_LEASE_TTL_TIMEOUTS)
    if (strcmp(a->backend, "redis") == 0) {
        *model = "store";
        return LSVC_REDIS_LEASE_TTL_TIMEOUTS *
               (a->timeout > 0 ? a->timeout : LSVC_REDIS_DEFAULT_TIMEOUT);
    }
#endif
    (void)a;
    return 0;
}

static int make_lease(const struct args *a, struct lease *l, lsvc_options *opts)
{
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        const struct backend *b = &backends[i];
        if (strcmp(a->backend, b->name) != 0)
            continue;
        int rc = b->create(&l->handle, a);
        if (rc == 0)
            rc = b->options(l->handle, opts);
        l->destroy = b->destroy;
        return rc;
    }
    fprintf(stderr, "replica: backend %s is not built in\n", a->backend);
    return EINVAL;
}

int main(int argc, char **argv)
{
    lsvc_block_signals(); /* before any thread: they all inherit it */
    /* lease_test.py reads the INFO lines (a lease store's reconnection). */
    lsvc_set_log_level(LSVC_LOG_INFO);

    struct args a;
    struct lease lease = { 0 };
    lsvc_options opts = { .missed = LSVC_MISSED_SKIP, .align_to_clock = true };
    struct probe *probes;
    lsvc_group *g = NULL;
    pthread_t stop_thread;
    int rc;

    if (parse_args(argc, argv, &a) != 0)
        return 2;
    rec.args = &a;
    rc = make_lease(&a, &lease, &opts);
    if (rc != 0) {
        printf("lease-create: %s\n", errno_name(rc));
        return 3;
    }
    const char *model;
    double ttl = lease_ttl(&a, &model);
    fprintf(stderr, "replica %ld: lease ttl %.3f s, %s\n", a.id, ttl, model);
    probes = calloc((size_t)a.services, sizeof *probes);
    if (probes == NULL) {
        fprintf(stderr, "replica %ld: out of memory\n", a.id);
        return 1;
    }

    open_recorder();

    /* A lease call may take two timeouts (a connect, then a query); the
     * group waits that long before it gives up on the stop. */
    double stop_timeout = 2 * (a.timeout > 0 ? a.timeout : 2.0) + 1;

    opts.loop_seconds = a.interval;
    opts.offset_seconds = a.offset;
    rc = lsvc_group_create(&g);
    for (long i = 0; i < a.services && rc == 0; i++) {
        struct probe *p = &probes[i];

        p->args = &a;
        if (a.services == 1) {
            snprintf(p->name, sizeof p->name, "%s", a.name);
            snprintf(p->rec_ns, sizeof p->rec_ns, "%s", a.ns);
        } else {
            snprintf(p->name, sizeof p->name, "%s-%ld", a.name, i);
            snprintf(p->rec_ns, sizeof p->rec_ns, "%s/%ld", a.ns, i);
        }
        p->cls = (lsvc_class){ .name = p->name, .run_once = probe_run };
        if ((rc = lsvc_create(&p->svc, &p->cls, p, &opts)) == 0)
            rc = lsvc_group_add(g, p->svc);
    }
    if (rc != 0 ||
        (rc = lsvc_group_set_environment(g, false)) != 0 ||
        (rc = lsvc_group_set_notify(g, false)) != 0 ||
        (rc = lsvc_group_set_stop_timeout(g, stop_timeout)) != 0 ||
        (rc = lsvc_group_start(g)) != 0) {
        fprintf(stderr, "replica %ld: cannot start: %s\n", a.id, strerror(rc));
        return 1;
    }
    stopper.seconds = a.seconds;
    stopper.group = g;
    bool timed = a.seconds > 0 &&
                 pthread_create(&stop_thread, NULL, stopper_main, NULL) == 0;

    rc = lsvc_group_wait(g);
    if (rc == ETIMEDOUT) {
        /* A lease call in progress takes at most its timeouts. */
        rc = 0;
        for (long i = 0; i < a.services && rc == 0; i++)
            rc = lsvc_join(probes[i].svc, 60);
    }
    if (rc != 0) {
        /* Its thread may still use the lease: nothing can be freed. */
        fprintf(stderr, "replica %ld: the service did not end: %s\n", a.id,
                strerror(rc));
        _Exit(1);
    }
    if (timed) {
        pthread_mutex_lock(&stopper.lock);
        stopper.done = true;
        pthread_cond_signal(&stopper.cond);
        pthread_mutex_unlock(&stopper.lock);
        pthread_join(stop_thread, NULL);
    }
    unsigned long long loops = 0, skipped = 0, changes = 0, errors = 0;
    int held = 0;
    for (long i = 0; i < a.services; i++) {
        lsvc_stats st;

        if (lsvc_get_stats(probes[i].svc, &st) != 0)
            continue;
        loops += st.loops;
        skipped += st.skipped_not_leader;
        changes += st.lease_changes;
        errors += st.errors;
        held += st.lease_held ? 1 : 0;
    }
    pthread_mutex_lock(&rec.lock);
    long long grid_off_us = rec.grid_off_max / 1000;
    pthread_mutex_unlock(&rec.lock);
    printf("stats id=%ld loops=%llu skipped=%llu changes=%llu errors=%llu "
           "held=%d grid_off_us=%lld\n", a.id, loops, skipped, changes, errors,
           held, grid_off_us);
    fflush(stdout);
    lsvc_group_destroy(g);
    for (long i = 0; i < a.services; i++)
        lsvc_destroy(probes[i].svc);
    lease.destroy(lease.handle);
    flush_records(true);
    if (rec.count > 0)
        fprintf(stderr, "replica %ld: %zu runs could not be recorded\n", a.id,
                rec.count);
    close_recorder();
    free(probes);
    return 0;
}
