/*
 * loopsvc-pg: leases kept as rows of a PostgreSQL table (the contract is
 * in include/loopsvc-pg.h), driven by the lease store (leasestore.c),
 * whose thread alone uses the connection.
 *
 * A row says which store holds the lease (a random name per lease
 * object), its fencing token, the backend pid of the holder's session,
 * and when the holding expires by the server's clock. Taking a lease is
 * one INSERT .. ON CONFLICT DO UPDATE whose condition is the whole rule:
 * free, expired, already ours, or held by a session that no longer
 * exists. Every exchange uses libpq's non-blocking calls, waited for with
 * poll() against a deadline on CLOCK_MONOTONIC, so no server, however dead
 * or hung, holds the store's thread for longer than the timeout per
 * exchange. The one exception is host name resolution, which libpq does
 * synchronously inside PQconnectPoll(): give `hostaddr` to bound that too.
 *
 * This file is its own shared library on top of libloopsvc, so it uses the
 * public API only, lsvc_log() included, and the lease store compiled in.
 */
#include "loopsvc-pg.h"
#include "leasestore.h"

#include <errno.h>
#include <libpq-fe.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TIMEOUT_SECONDS 3600.0
#define REASON_MAX 256

#define TABLE "loopsvc_lease"
#define OLD_TABLE "loopsvc_lease_token"

/* One statement for a whole round: $1 the keys, ascending, $2 what to do
 * with each (0 take, 1 renew, 2 release), $3 the token of each holding,
 * $4 the time to live in ms, $5 this object's name, $6 for each release
 * how many ms ago the holding's last run began, $7 for each renewal or
 * release how many ms ago a run last succeeded here (-1: no news). It
 * answers a row per lease: its key and op; the token when it was taken,
 * renewed or released (else NULL); how many ms before now the previous
 * holding ended (NULL: there was none); whether a holding taken is new;
 * and how many ms before now a run last succeeded on any replica.
 *
 * Every existing row of the round is locked first, in key order, so that
 * two replicas whose rounds share leases never wait for each other in a
 * cycle; only new rows are inserted after that, in key order too; the
 * locked rows, read before any change, give the previous holding. In
 * READ COMMITTED, ON CONFLICT DO UPDATE judges the latest committed row,
 * so two takers of a lapsed lease are serialised by its row lock, and the
 * second finds it held. A take that finds the lease still this object's
 * (a reply lost, then asked again) keeps its token; any other take bumps
 * it. A session listed in no pg_stat_activity row has ended, and with it
 * its process or its connection: its leases are free at once. A release
 * sets the end of the holding to when its last run began, which tells the
 * next holder whether a due point may have run. */
static const char sql_round[] =
    "WITH r AS (SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[],"
    " $6::bigint[], $7::bigint[]) AS r(key, op, token, ago, success)),"
    " locked AS (SELECT l.key, l.token, l.expires, l.last_success FROM "
    TABLE " l WHERE l.key = ANY($1::bigint[]) ORDER BY l.key FOR UPDATE),"
    " taken AS (INSERT INTO " TABLE " AS l (key, token, holder, pid, expires)"
    " SELECT r.key, 1, $5, pg_backend_pid(), now() + $4::bigint * interval"
    " '1 ms' FROM r WHERE r.op = 0 AND (SELECT count(*) FROM locked) >= 0"
    " ORDER BY r.key"
    " ON CONFLICT (key) DO UPDATE SET token = CASE WHEN l.holder ="
    " excluded.holder AND l.expires > now() THEN l.token ELSE l.token + 1"
    " END, holder = excluded.holder, pid = excluded.pid,"
    " expires = excluded.expires"
    " WHERE l.expires IS NULL OR l.expires <= now()"
    " OR l.holder = excluded.holder OR NOT EXISTS (SELECT 1 FROM"
    " pg_stat_activity a WHERE a.pid = l.pid)"
    " RETURNING l.key, l.token),"
    " renewed AS (UPDATE " TABLE " l SET expires = now() + $4::bigint *"
    " interval '1 ms', pid = pg_backend_pid(), last_success = CASE WHEN"
    " r.success >= 0 THEN now() - r.success * interval '1 ms'"
    " ELSE l.last_success END FROM r WHERE r.op = 1"
    " AND l.key = r.key AND l.key IN (SELECT key FROM locked)"
    " AND l.holder = $5 AND l.token = r.token RETURNING l.key, l.token),"
    " released AS (UPDATE " TABLE " l SET expires = now() - r.ago *"
    " interval '1 ms', pid = NULL, last_success = CASE WHEN r.success >= 0"
    " THEN now() - r.success * interval '1 ms' ELSE l.last_success END"
    " FROM r WHERE r.op = 2 AND l.key = r.key"
    " AND l.key IN (SELECT key FROM locked)"
    " AND l.holder = $5 AND l.token = r.token RETURNING l.key, l.token)"
    " SELECT r.key, r.op, coalesce(t.token, n.token, d.token),"
    " (extract(epoch FROM now() - k.expires) * 1000)::bigint,"
    " t.token IS DISTINCT FROM k.token,"
    " (extract(epoch FROM now() - k.last_success) * 1000)::bigint"
    " FROM r LEFT JOIN locked k USING (key) LEFT JOIN taken t USING (key)"
    " LEFT JOIN renewed n USING (key) LEFT JOIN released d USING (key)";

/* The rows of leases never seen, made free (no holder, token 0) in a
 * statement of their own before the round, in key order: the round then
 * locks every row it touches in key order, and never waits, with rows
 * locked, for a row another replica is inserting. */
static const char sql_make_rows[] =
    "INSERT INTO " TABLE " (key, token) SELECT k, 0 FROM unnest($1::bigint[])"
    " AS k ORDER BY k ON CONFLICT (key) DO NOTHING";

/* Once per session: whether it is a standby, and whether the tables are
 * there (to_regclass needs no privilege on them). The settings come with
 * it: a statement that waits on the server for a lock (another round
 * holding a row, an ALTER TABLE) ends within the timeout as the client
 * does; and a token bump is durable when its commit returns, so that a
 * crash cannot hand the next holder the same token. */
#define SQL_SESSION_FORMAT                                                  \
    "SELECT pg_is_in_recovery(), to_regclass('" TABLE "') IS NOT NULL,"      \
    " to_regclass('" OLD_TABLE "') IS NOT NULL,"                             \
    " set_config('lock_timeout', '%lldms', false) <> '',"                    \
    " set_config('statement_timeout', '%lldms', false) <> '',"               \
    " set_config('synchronous_commit', 'on', false) <> ''"
#define SESSION_ANSWERS 6

/* The table, with the tokens of the advisory-lock leases of loopsvc 0.5
 * where their table is there, in one transaction: a carry that failed
 * leaves no table, and the next session tries again; no replica takes a
 * lease before the tokens are in. */
static const char sql_create_table[] =
    "DO $$BEGIN"
    " CREATE TABLE " TABLE " (key bigint PRIMARY KEY, token bigint NOT NULL,"
    " holder text, pid integer, expires timestamptz,"
    " last_success timestamptz);"
    " IF to_regclass('" OLD_TABLE "') IS NOT NULL THEN"
    " INSERT INTO " TABLE " (key, token) SELECT key, token FROM " OLD_TABLE ";"
    " END IF; END$$";

/* An item of a round and its key, to sort by. */
struct keyed {
    long long key;
    size_t item;
};

struct lsvc_pg_lease {
    struct lsvc__store *store;

    /* Set by create and never changed. */
    char *conninfo;
    char *ns;
    int64_t timeout_ns;
    char holder[64];          /* this object's name in the table */
    char sql_session[sizeof SQL_SESSION_FORMAT + 40]; /* with its timeout */

    /* The store's thread's alone. */
    PGconn *conn;             /* an open session, or NULL */
    char sqlstate[6];         /* of the last query that the server failed,
                               * "" when it was not the server's error */
    char *buf;                /* the arrays of a round, as text */
    size_t buf_cap;
    struct keyed *order;      /* the round's items by key */
    size_t order_cap;
};


/* Server notices would go to stderr by default; the library writes only
 * through its logger. */
static void on_notice(void *arg, const PGresult *res)
{
    (void)arg;
    const char *severity =
        PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    int level = severity != NULL && strcmp(severity, "WARNING") == 0
                ? LSVC_LOG_WARNING : LSVC_LOG_DEBUG;
    char text[REASON_MAX];

    lsvc__one_line(text, sizeof text, PQresultErrorMessage(res));
    lsvc_log(NULL, level, "PostgreSQL said on the lease connection: %s%s",
             text, lsvc__stop_after(text));
}

/* Waits until the connection's socket is ready for `events` or the
 * deadline passes. POLLERR and POLLHUP count as ready: the libpq call that
 * follows reports them. */
static int wait_socket(PGconn *conn, short events, int64_t deadline_ns)
{
    int fd = PQsocket(conn);

    if (fd < 0)
        return EBADF;
    for (;;) {
        int64_t left = deadline_ns - lsvc__store_now_ns();
        struct pollfd p = { .fd = fd, .events = events };

        if (left <= 0)
            return ETIMEDOUT;
        /* Rounded up, so that a wake-up is never before the deadline. */
        int n = poll(&p, 1, (int)((left + 999999) / 1000000));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return errno;
    }
}

static void describe_errno(char *why, size_t size, const char *doing, int rc)
{
    char text[128];

    if (strerror_r(rc, text, sizeof text) != 0)
        snprintf(text, sizeof text, "error %d", rc);
    snprintf(why, size, "%s: %s", doing, text);
}

static void timed_out(char *why, size_t size, const struct lsvc_pg_lease *l,
                      const char *doing)
{
    snprintf(why, size, "no answer within %g s while %s",
             (double)l->timeout_ns / 1e9, doing);
}

static void libpq_reason(char *why, size_t size, PGconn *conn,
                         const char *fallback)
{
    lsvc__one_line(why, size, conn != NULL ? PQerrorMessage(conn) : "");
    if (why[0] == '\0')
        snprintf(why, size, "%s", fallback);
}

/* Makes a session, or says why not in `why`. */
static PGconn *open_session(const struct lsvc_pg_lease *l, char *why,
                            size_t size)
{
    /* The conninfo is expanded in place of dbname; entries after it
     * would override it, and fallback_application_name only fills in an
     * application_name that it does not set. */
    static const char *const keys[] = {
        "dbname", "fallback_application_name", NULL,
    };
    const char *const values[] = { l->conninfo, "loopsvc-lease", NULL };
    int64_t deadline = lsvc__store_now_ns() + l->timeout_ns;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    PGconn *conn = PQconnectStartParams(keys, values, 1);

    if (conn == NULL) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    /* Before any exchange: a server may send notices while the session
     * starts (a collation version mismatch, for one). */
    PQsetNoticeReceiver(conn, on_notice, (void *)l);
    if (PQstatus(conn) == CONNECTION_BAD)
        st = PGRES_POLLING_FAILED;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        short events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        int rc = wait_socket(conn, events, deadline);
        if (rc == ETIMEDOUT) {
            timed_out(why, size, l, "connecting");
            PQfinish(conn);
            return NULL;
        }
        if (rc != 0) {
            describe_errno(why, size, "waiting for the connection", rc);
            PQfinish(conn);
            return NULL;
        }
        st = PQconnectPoll(conn);
    }
    if (st == PGRES_POLLING_FAILED) {
        libpq_reason(why, size, conn, "the connection failed");
        PQfinish(conn);
        return NULL;
    }
    /* Non-blocking sends, so that a full socket buffer cannot block a
     * query, nor the Terminate message that PQfinish sends. */
    if (PQsetnonblocking(conn, 1) != 0) {
        libpq_reason(why, size, conn,
                     "could not make the connection non-blocking");
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* Sends sql with params[0..nparams) and waits until the
 * connection is idle again, with the statement's one result in *out (the
 * caller clears it), or NULL for a statement that returns none. Any
 * failure, timeout included, is reported in `why` and leaves a session
 * that must be dropped: a reply may still be on its way. An error of the
 * server's leaves its SQLSTATE in l->sqlstate. */
static int query(struct lsvc_pg_lease *l, const char *sql, int nparams,
                 const char *const *params, PGresult **out, char *why,
                 size_t size)
{
    int64_t deadline = lsvc__store_now_ns() + l->timeout_ns;
    PGconn *conn = l->conn;
    PGresult *kept = NULL;
    int rc, flushed;

    *out = NULL;
    l->sqlstate[0] = '\0';
    if (!PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0)) {
        libpq_reason(why, size, conn, "could not send a query");
        return EIO;
    }
    /* A send can stall on a full socket buffer until the server reads,
     * and the server may be writing to us meanwhile: read while waiting. */
    while ((flushed = PQflush(conn)) == 1) {
        rc = wait_socket(conn, POLLIN | POLLOUT, deadline);
        if (rc == 0 && !PQconsumeInput(conn))
            rc = EIO;
        if (rc != 0)
            goto failed;
    }
    if (flushed < 0) {
        rc = EIO;
        goto failed;
    }
    /* Every result up to the end: rows come before the commit, and an
     * error after them (the commit's) makes the statement a failure. */
    for (;;) {
        while (PQisBusy(conn)) {
            rc = wait_socket(conn, POLLIN, deadline);
            if (rc == 0 && !PQconsumeInput(conn))
                rc = EIO;
            if (rc != 0)
                goto failed;
        }
        PGresult *res = PQgetResult(conn);
        if (res == NULL)
            break;
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);

            snprintf(l->sqlstate, sizeof l->sqlstate, "%s",
                     code != NULL ? code : "");
            const char *primary =
                PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

            /* The message alone: the full one quotes the statement. */
            lsvc__one_line(why, size, primary != NULL ? primary
                                                : PQresultErrorMessage(res));
            if (why[0] == '\0')
                snprintf(why, size, "the query failed: %s", PQresStatus(st));
            PQclear(res);
            rc = EIO;
            goto failed_server;
        }
        PQclear(kept);
        kept = res;
    }
    if (kept == NULL) {
        snprintf(why, size, "no answer to \"%s\"", sql);
        return EIO;
    }
    *out = kept;
    return 0;

failed:
    if (rc == ETIMEDOUT)
        timed_out(why, size, l, "waiting for a reply");
    else if (rc == EIO)
        libpq_reason(why, size, conn, "the connection failed");
    else
        describe_errno(why, size, "waiting for a reply", rc);
failed_server:
    PQclear(kept);
    return rc;
}

/* A query whose answer is one row of n booleans. */
static int query_bools(struct lsvc_pg_lease *l, const char *sql, bool *out,
                       int n, char *why, size_t size)
{
    PGresult *res;
    int rc = query(l, sql, 0, NULL, &res, why, size);

    if (rc != 0)
        return rc;
    if (PQntuples(res) != 1 || PQnfields(res) != n) {
        snprintf(why, size, "an unexpected answer to \"%s\"", sql);
        PQclear(res);
        return EIO;
    }
    for (int i = 0; i < n; i++)
        out[i] = strcmp(PQgetvalue(res, 0, i), "t") == 0;
    PQclear(res);
    return 0;
}


static void drop_session(struct lsvc_pg_lease *l)
{
    PQfinish(l->conn);
    l->conn = NULL;
}

/* The server refused a statement on the table itself (SQLSTATE class 42:
 * no such table, no privilege), not the session. */
static bool table_refused(const struct lsvc_pg_lease *l)
{
    return strncmp(l->sqlstate, "42", 2) == 0;
}

/* Adds the privileges the table takes to a reason that is about them. */
static void explain_table(const struct lsvc_pg_lease *l, char *why,
                          size_t size)
{
    size_t n = strlen(why);

    if (table_refused(l) && n + 1 < size)
        snprintf(why + n, size - n, "%s The leases are rows of table "
                 TABLE ", which needs SELECT, INSERT and UPDATE, and CREATE "
                 "where it is made", lsvc__stop_after(why));
}

/* A new session: refused when it is a standby, and the table is made when
 * it is missing. */
static int prepare_session(struct lsvc_pg_lease *l, char *why, size_t size)
{
    bool answer[SESSION_ANSWERS] = { false };
    PGresult *res = NULL;

    /* A standby's table is its primary's, read-only: every take fails. */
    if (query_bools(l, l->sql_session, answer, SESSION_ANSWERS, why,
                    size) != 0)
        return EIO;
    if (answer[0]) {
        snprintf(why, size, "the server is a standby (in recovery), which "
                 "cannot keep leases");
        return EIO;
    }
    if (answer[1])
        return 0;
    /* Replicas that start together may race to make it: the loser's
     * unique violation on the catalog means it is there now. */
    if (query(l, sql_create_table, 0, NULL, &res, why, size) != 0 &&
        strcmp(l->sqlstate, "23505") != 0 &&
        strcmp(l->sqlstate, "42P07") != 0) {
        explain_table(l, why, size);
        return EIO;
    }
    PQclear(res);
    if (l->sqlstate[0] != '\0')
        return EAGAIN; /* its transaction failed; the next round starts
                        * afresh and finds the table */
    lsvc_log(NULL, LSVC_LOG_INFO, "Created table " TABLE " for the leases "
             "of namespace \"%s\"%s.", l->ns, answer[2]
             ? ", with the fencing tokens of table " OLD_TABLE : "");
    return 0;
}

static int pg_connect(void *drv, char *why, size_t size)
{
    struct lsvc_pg_lease *l = drv;

    l->conn = open_session(l, why, size);
    if (l->conn == NULL)
        return EIO;
    int rc = prepare_session(l, why, size);
    if (rc != 0) {
        if (rc == EAGAIN)
            snprintf(why, size, "another replica was creating table " TABLE);
        drop_session(l);
        return rc;
    }
    lsvc_log(NULL, LSVC_LOG_DEBUG, "Connected to PostgreSQL for the leases "
             "of namespace \"%s\" as %s.", l->ns, l->holder);
    return 0;
}

static int pg_socket(void *drv)
{
    struct lsvc_pg_lease *l = drv;

    return l->conn != NULL ? PQsocket(l->conn) : -1;
}

/* Between rounds the server speaks only to end the session (a FATAL
 * message, then EOF) or with a notice. */
static int pg_idle_input(void *drv, char *why, size_t size)
{
    struct lsvc_pg_lease *l = drv;

    if (PQconsumeInput(l->conn) && PQstatus(l->conn) == CONNECTION_OK) {
        PGresult *res;
        bool unasked = false;

        while (!PQisBusy(l->conn) && (res = PQgetResult(l->conn)) != NULL) {
            unasked = true;
            PQclear(res);
        }
        if (!unasked)
            return 0;
    }
    libpq_reason(why, size, l->conn, "the server closed the connection");
    drop_session(l);
    return EIO;
}

static void pg_disconnect(void *drv)
{
    struct lsvc_pg_lease *l = drv;

    if (l->conn != NULL)
        drop_session(l);
}

/* Appends len bytes of s to the round's buffer, grown as needed. */
static int append(struct lsvc_pg_lease *l, size_t *used, const char *s,
                  size_t len)
{
    if (l->buf_cap - *used < len) {
        size_t cap = l->buf_cap ? l->buf_cap : 4096;
        while (cap - *used < len)
            cap *= 2;
        char *buf = realloc(l->buf, cap);
        if (buf == NULL)
            return ENOMEM;
        l->buf = buf;
        l->buf_cap = cap;
    }
    memcpy(l->buf + *used, s, len);
    *used += len;
    return 0;
}

static long long item_key(const struct lsvc__lease_item *it)
{
    return strtoll(it->id, NULL, 10);
}

static int by_key(const void *a, const void *b)
{
    long long x = ((const struct keyed *)a)->key;
    long long y = ((const struct keyed *)b)->key;

    return (x > y) - (x < y);
}

/* The five arrays of the round ($1..$3, $6 and $7), in key order, each a
 * string in l->buf at offs[i]. */
#define ARRAYS 5
static int build_arrays(struct lsvc_pg_lease *l,
                        const struct lsvc__lease_item *items, size_t n,
                        size_t offs[ARRAYS], size_t *end)
{
    size_t used = 0;
    int rc = 0;

    if (n > l->order_cap) {
        struct keyed *order = realloc(l->order, n * sizeof *order);
        if (order == NULL)
            return ENOMEM;
        l->order = order;
        l->order_cap = n;
    }
    for (size_t i = 0; i < n; i++)
        l->order[i] = (struct keyed){ item_key(&items[i]), i };
    qsort(l->order, n, sizeof *l->order, by_key);
    for (int a = 0; a < ARRAYS && rc == 0; a++) {
        offs[a] = used;
        for (size_t i = 0; i < n && rc == 0; i++) {
            const struct lsvc__lease_item *it = &items[l->order[i].item];
            long long v = a == 0   ? item_key(it)
                          : a == 1 ? (long long)it->op
                          : a == 2 ? (long long)it->token
                          : a == 3 ? (long long)it->ago_ms
                                   : (long long)it->success_ago_ms;
            char num[32];
            int len = snprintf(num, sizeof num, "%c%lld", i == 0 ? '{' : ',',
                               v);
            rc = append(l, &used, num, (size_t)len);
        }
        if (rc == 0)
            rc = append(l, &used, n == 0 ? "{}" : "}", n == 0 ? 3 : 2);
    }
    *end = used;
    return rc;
}

/* The item of the answer row's key, by binary search of the order. */
static struct lsvc__lease_item *answered_item(struct lsvc_pg_lease *l,
                                              struct lsvc__lease_item *items,
                                              size_t n, long long key)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        long long k = l->order[mid].key;

        if (k == key)
            return &items[l->order[mid].item];
        if (k < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* A bigint of the answer, or `none` for NULL. */
static int64_t number_or(const PGresult *res, int row, int col, int64_t none)
{
    if (PQgetisnull(res, row, col))
        return none;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* Makes the rows of the takes of leases not known to be stored, if
 * any; the keys in order, after the round's arrays in l->buf. */
static int make_rows(struct lsvc_pg_lease *l,
                     const struct lsvc__lease_item *items, size_t n,
                     size_t used, char *why, size_t size)
{
    size_t start = used, count = 0;
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct lsvc__lease_item *it = &items[l->order[i].item];
        char num[32];

        if (it->op != LSVC__TAKE || it->stored)
            continue;
        int len = snprintf(num, sizeof num, "%c%lld", count++ ? ',' : '{',
                           item_key(it));
        rc = append(l, &used, num, (size_t)len);
    }
    if (count == 0)
        return 0;
    if (rc == 0)
        rc = append(l, &used, "}", 2);
    if (rc != 0) {
        snprintf(why, size, "out of memory");
        return rc;
    }
    const char *params[1] = { l->buf + start };
    PGresult *res;
    rc = query(l, sql_make_rows, 1, params, &res, why, size);
    if (rc != 0) {
        explain_table(l, why, size);
        return rc;
    }
    PQclear(res);
    return 0;
}

static int pg_exchange(void *drv, struct lsvc__lease_item *items, size_t n,
                       char *why, size_t size)
{
    struct lsvc_pg_lease *l = drv;
    size_t offs[ARRAYS];
    char ttl[32];
    PGresult *res;

    size_t used;
    if (build_arrays(l, items, n, offs, &used) != 0) {
        snprintf(why, size, "out of memory");
        drop_session(l);
        return ENOMEM;
    }
    int rc = make_rows(l, items, n, used, why, size);
    if (rc != 0) {
        drop_session(l);
        return rc;
    }
    snprintf(ttl, sizeof ttl, "%lld", (long long)items[0].ttl_ms);
    const char *params[7] = {
        l->buf + offs[0], l->buf + offs[1], l->buf + offs[2], ttl, l->holder,
        l->buf + offs[3], l->buf + offs[4],
    };
    rc = query(l, sql_round, 7, params, &res, why, size);
    if (rc != 0) {
        explain_table(l, why, size);
        drop_session(l);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        items[i].ok = false;
        items[i].stored = true; /* made above, if it was not */
    }
    if (PQntuples(res) != (int)n || PQnfields(res) != 6)
        rc = EIO;
    for (int r = 0; r < PQntuples(res) && rc == 0; r++) {
        long long key = strtoll(PQgetvalue(res, r, 0), NULL, 10);
        struct lsvc__lease_item *it = answered_item(l, items, n, key);

        if (it == NULL || atoi(PQgetvalue(res, r, 1)) != (int)it->op) {
            rc = EIO;
            continue;
        }
        it->success_age_ms = number_or(res, r, 5, LSVC__NO_GAP);
        it->gap_ms = number_or(res, r, 3, LSVC__NO_GAP);
        it->fresh = strcmp(PQgetvalue(res, r, 4), "t") == 0;
        if (PQgetisnull(res, r, 2))
            continue;
        it->new_token = strtoull(PQgetvalue(res, r, 2), NULL, 10);
        it->ok = it->new_token > 0;
        if (!it->ok)
            rc = EIO;
    }
    PQclear(res);
    if (rc != 0) {
        snprintf(why, size, "an unexpected answer to the lease statement");
        drop_session(l);
    }
    return rc;
}

static char *pg_make_id(void *drv, const char *name)
{
    struct lsvc_pg_lease *l = drv;
    char id[24];

    snprintf(id, sizeof id, "%lld", (long long)lsvc_pg_lease_key(l->ns, name));
    return strdup(id);
}

static const struct lsvc__store_driver pg_driver = {
    .make_id = pg_make_id,
    .connect = pg_connect,
    .socket = pg_socket,
    .idle_input = pg_idle_input,
    .exchange = pg_exchange,
    .disconnect = pg_disconnect,
};

int64_t lsvc_pg_lease_key(const char *ns, const char *name)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    if (ns == NULL || name == NULL)
        return 0;
    for (const unsigned char *p = (const unsigned char *)ns; *p; p++)
        h = (h ^ *p) * UINT64_C(0x100000001b3);
    h *= UINT64_C(0x100000001b3); /* the zero byte between: h ^ 0 == h */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * UINT64_C(0x100000001b3);
    /* Two's complement without relying on the implementation-defined
     * conversion of an out-of-range unsigned value. */
    return h <= (uint64_t)INT64_MAX ? (int64_t)h
                                    : -(int64_t)(UINT64_MAX - h) - 1;
}

/* Parses the conninfo as libpq will, so that a typo fails at create, in
 * the caller's hands, rather than as a WARNING from the lease's thread. */
static int check_conninfo(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    char why[REASON_MAX];

    if (opts != NULL) {
        PQconninfoFree(opts);
        return 0;
    }
    if (err == NULL)
        return ENOMEM;
    lsvc__one_line(why, sizeof why, err);
    PQfreemem(err);
    lsvc_log(NULL, LSVC_LOG_ERROR,
             "Cannot create a PostgreSQL lease: its connection string is not "
             "valid: %s%s", why, lsvc__stop_after(why));
    return EINVAL;
}

static void free_lease(struct lsvc_pg_lease *l)
{
    free(l->conninfo);
    free(l->ns);
    free(l->buf);
    free(l->order);
    free(l);
}

int lsvc_pg_lease_create(lsvc_pg_lease **out, const char *conninfo,
                         const char *ns, double timeout)
{
    struct lsvc_pg_lease *l;
    int rc;

    if (out == NULL || conninfo == NULL || ns == NULL)
        return EINVAL;
    if (isnan(timeout) || timeout < 0 || timeout > MAX_TIMEOUT_SECONDS)
        return EINVAL;
    rc = check_conninfo(conninfo);
    if (rc != 0)
        return rc;
    l = calloc(1, sizeof *l);
    if (l == NULL)
        return ENOMEM;
    l->conninfo = strdup(conninfo);
    l->ns = strdup(ns);
    if (l->conninfo == NULL || l->ns == NULL) {
        free_lease(l);
        return ENOMEM;
    }
    if (timeout == 0)
        timeout = LSVC_PG_DEFAULT_TIMEOUT;
    l->timeout_ns = (int64_t)(timeout * 1e9 + 0.5);
    if (l->timeout_ns < 1)
        l->timeout_ns = 1;
    long long ms = (long long)((l->timeout_ns + 999999) / 1000000);
    snprintf(l->sql_session, sizeof l->sql_session, SQL_SESSION_FORMAT, ms,
             ms);
    lsvc__store_name_holder(l->holder, sizeof l->holder);
    rc = lsvc__store_create(&l->store, &pg_driver, l, "PostgreSQL",
                            l->timeout_ns,
                            LSVC_PG_LEASE_TTL_TIMEOUTS * l->timeout_ns);
    if (rc != 0) {
        free_lease(l);
        return rc;
    }
    *out = l;
    return 0;
}

int lsvc_pg_lease_options(lsvc_pg_lease *lease, lsvc_options *opts)
{
    if (lease == NULL || opts == NULL)
        return EINVAL;
    opts->lease = &lsvc__store_ops;
    opts->lease_ctx = lease->store;
    return 0;
}

int lsvc_pg_lease_destroy(lsvc_pg_lease *lease)
{
    if (lease == NULL)
        return EINVAL;
    int rc = lsvc__store_destroy(lease->store);
    if (rc != 0)
        return rc;
    if (lease->conn != NULL)
        PQfinish(lease->conn);
    free_lease(lease);
    return 0;
}
