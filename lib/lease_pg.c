/*
 * loopsvc-pg: a lease held as a PostgreSQL session-level advisory lock
 * (the contract is in include/loopsvc-pg.h).
 *
 * The lock lives exactly as long as the session of the lease's own
 * connection, so the whole design is about that connection: it is made
 * lazily on the service thread, asked once before every due run, and
 * dropped at the first sign of trouble, because a session we can no longer
 * talk to may already have lost its lock to another replica. Every exchange
 * uses libpq's non-blocking calls, waited for with poll() against a
 * deadline on CLOCK_MONOTONIC (which does not jump with the wall clock),
 * so no server, however dead or hung, holds the service thread for longer
 * than the lease's timeout per exchange. The one exception is host name
 * resolution, which libpq does synchronously inside PQconnectPoll(): give
 * `hostaddr` to bound that too.
 *
 * This file is its own shared library on top of libloopsvc, so it uses the
 * public API only, lsvc_log() included.
 */
#include "loopsvc-pg.h"

#include <errno.h>
#include <stdatomic.h>
#include <libpq-fe.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PER_SEC INT64_C(1000000000)
#define MAX_TIMEOUT_SECONDS 3600.0
#define BACKOFF_FIRST_NS (100 * INT64_C(1000000))
#define BACKOFF_MAX_NS (30 * NS_PER_SEC)
#define REASON_MAX 256

/* The lock is taken at most once per session, never re-entered: a second
 * pg_try_advisory_lock would stack a second hold that one unlock does not
 * end. While held, any round trip proves the session, and so the lock, is
 * still there.
 *
 * The fencing token is bumped by the statement that takes the lock, in its
 * transaction, and only when the lock was gained: a session that did not
 * get it inserts no row and so returns none. Two sessions never both get
 * the lock, and the row lock that ON CONFLICT DO UPDATE takes orders the
 * bumps of successive holders even if one's commit were still in flight;
 * in READ COMMITTED the update reads the latest committed token. The
 * result arrives before the commit, so a token counts only once the
 * statement has succeeded as a whole (query() waits for that). A lock taken
 * in a statement that then failed stays held (session advisory locks
 * ignore rollbacks): every failure drops the session, which ends it. */
#define TOKEN_TABLE "loopsvc_lease_token"
static const char sql_lock[] =
    "WITH l AS (SELECT pg_try_advisory_lock($1::bigint) AS got) "
    "INSERT INTO " TOKEN_TABLE " AS t (key, token) "
    "SELECT $1::bigint, 1 FROM l WHERE got "
    "ON CONFLICT (key) DO UPDATE SET token = t.token + 1 "
    "RETURNING t.token";
/* Once per session: whether it is a standby, and whether the token table
 * is there (to_regclass needs no privilege on it). */
/* The session's settings come with it: a statement that waits on the
 * server for a lock (someone holding the token row, an ALTER TABLE) ends
 * within the lease's timeout instead of keeping the advisory lock it took
 * after the client gave up; and a token bump is durable when its commit
 * returns, so that a crash cannot hand the next holder the same token. */
#define SQL_SESSION_FORMAT                                                  \
    "SELECT pg_is_in_recovery(), to_regclass('" TOKEN_TABLE "') IS NOT NULL," \
    " set_config('lock_timeout', '%lldms', false) <> '',"                    \
    " set_config('statement_timeout', '%lldms', false) <> '',"               \
    " set_config('synchronous_commit', 'on', false) <> ''"
static const char sql_create_table[] =
    "CREATE TABLE IF NOT EXISTS " TOKEN_TABLE
    " (key bigint PRIMARY KEY, token bigint NOT NULL)";
static const char sql_confirm[] = "SELECT true";
static const char sql_unlock[] = "SELECT pg_advisory_unlock($1::bigint)";

struct lsvc_pg_lease {
    /* A call is in progress: a second service on this lease, on another
     * thread, is refused instead of sharing the session; destroy waits
     * for no one and refuses instead. */
    atomic_bool busy;

    /* Set by create and never changed. */
    char *conninfo;
    char *ns;
    int64_t timeout_ns;
    char sql_session[sizeof SQL_SESSION_FORMAT + 40]; /* with its timeout */

    /* Protects svc, name, key and mismatch_logged. Only a misuse, one
     * lease handed to two services, has two threads here; they are told
     * apart under the lock rather than raced. The service's own thread
     * reads them without it once it has set them: a service of another
     * name never changes them. */
    pthread_mutex_t bind_lock;
    const lsvc *svc;          /* the caller of the acquire or release in
                               * progress */
    char *name;               /* the service's name, fixed at the first
                               * acquire */
    char key[24];             /* lsvc_pg_lease_key() in decimal, the query
                               * parameter */
    bool mismatch_logged;

    /* Used by the bound service's thread alone while it runs, and by
     * destroy once it no longer does: the thread's start and end order
     * these accesses. */
    PGconn *conn;             /* an open session, or NULL */
    bool held;                /* the lock is held by conn's session */
    uint64_t token;           /* the fencing token of that holding */
    const lsvc *holder;       /* the service it is held for, while held */
    unsigned failures;        /* connects failed or sessions lost in a row */
    int64_t backoff_ns;
    int64_t retry_ns;         /* no connect before this */
    char reason[REASON_MAX];  /* of the last failure logged */
    char sqlstate[6];         /* of the last query that the server failed,
                               * "" when it was not the server's error */
};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* libpq's messages span lines (a reason, then a hint) and end in a
 * newline; a log message is one line. Lines become sentences, other
 * control characters and runs of blanks one space, and a final period goes
 * so that the text can sit inside a sentence of ours. */
static void one_line(char *out, size_t size, const char *text)
{
    size_t n = 0;
    bool blank = false, line_break = false;

    for (const unsigned char *p = (const unsigned char *)text;
         *p != '\0' && n + 3 < size; p++) {
        if (*p == '\n' || *p == '\r') {
            line_break = n > 0;
            continue;
        }
        if (*p <= ' ' || *p == 0x7f) {
            blank = n > 0;
            continue;
        }
        if (line_break && strchr(".?!:;", out[n - 1]) == NULL)
            out[n++] = '.';
        if (line_break || blank)
            out[n++] = ' ';
        line_break = blank = false;
        out[n++] = (char)*p;
    }
    while (n > 0 && out[n - 1] == '.')
        n--;
    out[n] = '\0';
}

/* What ends a sentence that ends with `text`. */
static const char *stop_after(const char *text)
{
    size_t n = strlen(text);

    return n > 0 && (text[n - 1] == '?' || text[n - 1] == '!') ? "" : ".";
}

static const char *svc_name(const struct lsvc_pg_lease *l)
{
    return l->name != NULL ? l->name : "(no service)";
}

/* Server notices would go to stderr by default; the library writes only
 * through its logger. */
static void on_notice(void *arg, const PGresult *res)
{
    const struct lsvc_pg_lease *l = arg;
    const char *severity =
        PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    int level = severity != NULL && strcmp(severity, "WARNING") == 0
                ? LSVC_LOG_WARNING : LSVC_LOG_DEBUG;
    char text[REASON_MAX];

    one_line(text, sizeof text, PQresultErrorMessage(res));
    lsvc_log(l->svc, level, "PostgreSQL said on the lease connection of %s: "
             "%s%s", svc_name(l), text, stop_after(text));
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
        int64_t left = deadline_ns - now_ns();
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
    one_line(why, size, conn != NULL ? PQerrorMessage(conn) : "");
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
    int64_t deadline = now_ns() + l->timeout_ns;
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

/* Sends sql (with the key as $1 when nparams is 1) and waits until the
 * connection is idle again, with the statement's one result in *out (the
 * caller clears it), or NULL for a statement that returns none. Any
 * failure, timeout included, is reported in `why` and leaves a session
 * that must be dropped: a reply may still be on its way. An error of the
 * server's leaves its SQLSTATE in l->sqlstate. */
static int query(struct lsvc_pg_lease *l, const char *sql, int nparams,
                 PGresult **out, char *why, size_t size)
{
    const char *params[1] = { l->key };
    int64_t deadline = now_ns() + l->timeout_ns;
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
            one_line(why, size, primary != NULL ? primary
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
static int query_bools(struct lsvc_pg_lease *l, const char *sql, int nparams,
                       bool *out, int n, char *why, size_t size)
{
    PGresult *res;
    int rc = query(l, sql, nparams, &res, why, size);

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

/* The lock statement: *got says whether the lock was gained, and then
 * *token is the token it bumped. */
static int query_lock(struct lsvc_pg_lease *l, bool *got, uint64_t *token,
                      char *why, size_t size)
{
    PGresult *res;
    int rc = query(l, sql_lock, 1, &res, why, size);

    if (rc != 0)
        return rc;
    *got = PQntuples(res) == 1;
    if (PQntuples(res) > 1 || PQnfields(res) != 1) {
        rc = EIO;
    } else if (*got) {
        const char *v = PQgetvalue(res, 0, 0);
        char *end = NULL;

        errno = 0;
        *token = strtoull(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || *token == 0)
            rc = EIO;
    }
    if (rc != 0)
        snprintf(why, size, "an unexpected answer to the lock statement");
    PQclear(res);
    return rc;
}

static void drop_session(struct lsvc_pg_lease *l)
{
    PQfinish(l->conn);
    l->conn = NULL;
    l->held = false;
    l->holder = NULL;
}

/* A connect failed, or a session was lost: no connect before the backoff
 * has passed, and a WARNING at the first failure of an outage and at each
 * change of reason, so that an outage is a line or two, not one per
 * attempt. */
static void note_failure(struct lsvc_pg_lease *l, const char *verb,
                         bool was_held, const char *why)
{
    l->backoff_ns = l->failures == 0 ? BACKOFF_FIRST_NS
                    : l->backoff_ns >= BACKOFF_MAX_NS / 2 ? BACKOFF_MAX_NS
                    : 2 * l->backoff_ns;
    l->failures++;
    l->retry_ns = now_ns() + l->backoff_ns;
    if (l->failures > 1 && strcmp(why, l->reason) == 0)
        return;
    snprintf(l->reason, sizeof l->reason, "%s", why);
    lsvc_log(l->svc, LSVC_LOG_WARNING,
             "%s PostgreSQL for the lease of %s: %s%s%s It does not run here "
             "until a session gets the lease; trying again in %g s, then "
             "with a backoff up to %d s.",
             verb, svc_name(l), why, stop_after(why),
             was_held ? " This replica held the lease." : "",
             (double)l->backoff_ns / 1e9, (int)(BACKOFF_MAX_NS / NS_PER_SEC));
}

/* The first answer on a session after failures ends the outage. */
static void note_success(struct lsvc_pg_lease *l)
{
    if (l->failures == 0)
        return;
    lsvc_log(l->svc, LSVC_LOG_INFO,
             "Connected to PostgreSQL again for the lease of %s, after %u "
             "failed attempt%s.", svc_name(l), l->failures,
             l->failures == 1 ? "" : "s");
    l->failures = 0;
    l->backoff_ns = 0;
    l->reason[0] = '\0';
}

/* Ties the lease to its service at the first call: the key is derived from
 * the service's name, so a second service would silently share the lock.
 * The lsvc itself may change, for a service destroyed and made again under
 * the same name; it is kept for the log lines of this call. */
static int bind_service(struct lsvc_pg_lease *l, lsvc *svc, bool first_ok)
{
    const char *name = lsvc_name(svc);
    bool tell = false;
    int rc = 0;

    pthread_mutex_lock(&l->bind_lock);
    if (l->name == NULL && first_ok) {
        l->name = strdup(name);
        if (l->name == NULL)
            rc = ENOMEM;
        else
            snprintf(l->key, sizeof l->key, "%lld",
                     (long long)lsvc_pg_lease_key(l->ns, name));
    } else if (l->name == NULL || strcmp(l->name, name) != 0) {
        rc = EINVAL;
        tell = first_ok && !l->mismatch_logged;
        l->mismatch_logged = l->mismatch_logged || first_ok;
    }
    if (rc == 0)
        l->svc = svc;
    pthread_mutex_unlock(&l->bind_lock);
    if (tell)
        lsvc_log(svc, LSVC_LOG_ERROR,
                 "%s asked for the PostgreSQL lease of another service: one "
                 "lease serves one service, so %s never runs with it. Create "
                 "a lease per service.", name, name);
    return rc;
}

#define CONNECT_FAILED "Could not connect to"
#define SESSION_LOST "Lost the session with"
/* What the server refused about the token table, for the log line: the
 * privileges it takes, once the reason has been said. */
#define TOKEN_FAILED "Could not keep the fencing token (table " TOKEN_TABLE \
    ", which needs SELECT, INSERT and UPDATE, and CREATE where it is made) in"

/* The server refused a statement on the token table itself (SQLSTATE
 * class 42: no such table, no privilege), not the session. */
static bool token_refused(const struct lsvc_pg_lease *l)
{
    return strncmp(l->sqlstate, "42", 2) == 0;
}

/* A new session: refused when it is a standby, and the token table is
 * made when it is missing. Returns whether the session may be used;
 * otherwise it is dropped and the failure noted. */
static bool prepare_session(struct lsvc_pg_lease *l)
{
    char why[REASON_MAX];
    bool answer[5] = { false };
    PGresult *res = NULL;
    const char *verb = CONNECT_FAILED;

    /* A standby grants advisory locks of its own, which the primary's
     * holder never sees: two replicas would both hold "the" lock. */
    if (query_bools(l, l->sql_session, 0, answer, 5, why, sizeof why) != 0)
        goto failed;
    if (answer[0]) {
        snprintf(why, sizeof why, "the server is a standby (in recovery), "
                 "whose locks its primary does not see");
        goto failed;
    }
    if (answer[1])
        return true;
    /* Replicas that start together may race to make it: the loser's
     * unique violation on the catalog means it is there now. */
    if (query(l, sql_create_table, 0, &res, why, sizeof why) == 0 ||
        strcmp(l->sqlstate, "23505") == 0 || strcmp(l->sqlstate, "42P07") == 0) {
        PQclear(res);
        if (l->sqlstate[0] == '\0')
            lsvc_log(l->svc, LSVC_LOG_INFO, "Created table " TOKEN_TABLE
                     " for the fencing tokens of the PostgreSQL lease of %s.",
                     svc_name(l));
        else
            drop_session(l); /* its transaction failed; start afresh */
        return l->conn != NULL;
    }
    if (token_refused(l))
        verb = TOKEN_FAILED;
failed:
    drop_session(l);
    note_failure(l, verb, false, why);
    return false;
}

static int acquire_now(struct lsvc_pg_lease *l, lsvc *svc, bool *held)
{
    char why[REASON_MAX];
    bool fresh = false, answer = false;
    uint64_t token = 0;
    int rc;

    /* Held for one service, it is no one else's, whatever the name. */
    if (l->held && l->holder != svc)
        return EINVAL;
    rc = bind_service(l, svc, true);
    if (rc != 0)
        return rc;
    /* Without a session the answer is "not held", not an error: the
     * outage is logged here, once, rather than at every run. */
    if (l->conn == NULL) {
        if (now_ns() < l->retry_ns)
            return 0;
        l->conn = open_session(l, why, sizeof why);
        if (l->conn == NULL) {
            note_failure(l, CONNECT_FAILED, false, why);
            return 0;
        }
        fresh = true;
        lsvc_log(svc, LSVC_LOG_DEBUG,
                 "Connected to PostgreSQL for the lease of %s.", l->name);
        if (!prepare_session(l))
            return 0;
    }
    /* Held: any round trip confirms it, and the token stays. Not held:
     * the lock, and a new token with it when it is gained. */
    rc = l->held ? query_bools(l, sql_confirm, 0, &answer, 1, why, sizeof why)
                 : query_lock(l, &answer, &token, why, sizeof why);
    if (rc != 0) {
        bool was_held = l->held;
        const char *verb = token_refused(l) ? TOKEN_FAILED
                           : fresh ? CONNECT_FAILED : SESSION_LOST;

        drop_session(l);
        note_failure(l, verb, was_held, why);
        return 0;
    }
    note_success(l);
    if (!l->held)
        l->token = token;
    l->held = answer;
    l->holder = answer ? svc : NULL;
    *held = answer;
    return 0;
}

static int pg_acquire(void *ctx, lsvc *svc, bool *held)
{
    struct lsvc_pg_lease *l = ctx;
    int rc;

    if (l == NULL || svc == NULL || held == NULL)
        return EINVAL;
    *held = false;
    if (atomic_exchange(&l->busy, true))
        return EINVAL;
    rc = acquire_now(l, svc, held);
    atomic_store(&l->busy, false);
    return rc;
}

static void release_now(struct lsvc_pg_lease *l, lsvc *svc)
{
    char why[REASON_MAX];
    bool answer = false;

    if (l->holder != svc || bind_service(l, svc, false) != 0 ||
        l->conn == NULL || !l->held)
        return;
    l->held = false;
    l->holder = NULL;
    if (query_bools(l, sql_unlock, 1, &answer, 1, why, sizeof why) == 0) {
        if (answer)
            return;
        snprintf(why, sizeof why, "the server says it was not locked");
    }
    /* Closing the session ends the lock too, as soon as the server sees it
     * closed; the stop goes on without waiting for that. */
    lsvc_log(svc, LSVC_LOG_WARNING,
             "Could not unlock the PostgreSQL lease of %s: %s%s Closed its "
             "session instead, which ends the lock.", l->name, why,
             stop_after(why));
    drop_session(l);
}

static void pg_release(void *ctx, lsvc *svc)
{
    struct lsvc_pg_lease *l = ctx;

    if (l == NULL || svc == NULL || atomic_exchange(&l->busy, true))
        return;
    release_now(l, svc);
    atomic_store(&l->busy, false);
}

/* The token of the holding that the acquire just confirmed: the one its
 * lock statement returned, kept while the lock is. */
static int pg_token(void *ctx, lsvc *svc, uint64_t *token)
{
    struct lsvc_pg_lease *l = ctx;
    int rc = EAGAIN;

    if (l == NULL || svc == NULL || token == NULL)
        return EINVAL;
    if (atomic_exchange(&l->busy, true))
        return EINVAL;
    if (l->held && l->holder == svc) {
        *token = l->token;
        rc = 0;
    }
    atomic_store(&l->busy, false);
    return rc;
}

static const lsvc_lease_ops pg_ops = {
    .acquire = pg_acquire,
    .release = pg_release,
    .token = pg_token,
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
 * the caller's hands, rather than as a WARNING on the service thread. */
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
    one_line(why, sizeof why, err);
    PQfreemem(err);
    lsvc_log(NULL, LSVC_LOG_ERROR,
             "Cannot create a PostgreSQL lease: its connection string is not "
             "valid: %s%s", why, stop_after(why));
    return EINVAL;
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
    rc = l->conninfo == NULL || l->ns == NULL ? ENOMEM
         : pthread_mutex_init(&l->bind_lock, NULL);
    if (rc != 0) {
        free(l->conninfo);
        free(l->ns);
        free(l);
        return rc;
    }
    if (timeout == 0)
        timeout = LSVC_PG_DEFAULT_TIMEOUT;
    l->timeout_ns = (int64_t)(timeout * 1e9 + 0.5);
    if (l->timeout_ns < 1)
        l->timeout_ns = 1;
    long long ms = (long long)((l->timeout_ns + 999999) / 1000000);
    snprintf(l->sql_session, sizeof l->sql_session, SQL_SESSION_FORMAT, ms,
             ms);
    *out = l;
    return 0;
}

int lsvc_pg_lease_options(lsvc_pg_lease *lease, lsvc_options *opts)
{
    if (lease == NULL || opts == NULL)
        return EINVAL;
    opts->lease = &pg_ops;
    opts->lease_ctx = lease;
    return 0;
}

int lsvc_pg_lease_destroy(lsvc_pg_lease *lease)
{
    if (lease == NULL)
        return EINVAL;
    if (atomic_exchange(&lease->busy, true))
        return EBUSY;
    /* The service may be gone: a late notice must not log through it. */
    lease->svc = NULL;
    if (lease->conn != NULL)
        PQfinish(lease->conn);
    pthread_mutex_destroy(&lease->bind_lock);
    free(lease->conninfo);
    free(lease->ns);
    free(lease->name);
    free(lease);
    return 0;
}
