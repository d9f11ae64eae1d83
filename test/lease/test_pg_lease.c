/*
 * loopsvc-pg in one process: the key, the arguments, the conninfo check
 * at create, and what services see when the server refuses connections or
 * never answers; then, against a real server (LSVC_TEST_PG, else those
 * tests skip), the lease object as a store: many services over one
 * session, holders that run without waiting for the server, the local
 * deadline (lsvc_lease_valid_for), a session the server ends, rows that
 * another holder keeps or lets expire, the release at a stop and at the
 * destroy, and two services of one name. Replicas in several processes
 * are lease_test.py's.
 *
 * The "servers" of the first tests are sockets of the test's own on
 * 127.0.0.1: one closed again (connections are refused), one that listens
 * but never accepts, so that the kernel completes the handshake and libpq
 * then waits for an answer that never comes.
 *
 * The server tests use a database of their own (TEST_DB, made when
 * missing), a namespace of their own per test (so that tests running at
 * once never share a key, nor find rows of an earlier run), and look at
 * the rows of table loopsvc_lease and at pg_stat_activity through a
 * connection of the test's. Where a test counts the lease object's
 * sessions, it names them with an application_name of its own.
 */
#include "../helpers.h"
#include "loopsvc-pg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Bound of the waits for what should take milliseconds, wide for loaded
 * machines, sanitizers and valgrind. */
#define LIMIT 10.0

/* A socket listening on a free loopback port that it never accepts on. */
static int listen_silent(int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A loopback port where nothing listens (until someone else takes it). */
static int refused_port(void)
{
    int port;

    close(listen_silent(&port));
    return port;
}

/* A lease of namespace ns on 127.0.0.1:port with that timeout. */
static lsvc_pg_lease *lease_on(int port, const char *ns, double timeout)
{
    char conninfo[128];
    lsvc_pg_lease *l;

    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d "
             "dbname=nothing user=nobody sslmode=disable", port);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, conninfo, ns, timeout), 0);
    return l;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Polls until cond holds, for at most `seconds`; ok tells whether it
 * held. For states that no event tells of (a row, a counter). */
#define POLL_UNTIL(ok, cond, seconds)                                      \
    do {                                                                   \
        int64_t poll_until_ = now_ns() + (int64_t)((seconds) * 1e9);       \
        while (!((ok) = (cond)) && now_ns() < poll_until_)                 \
            sleep_ms(5);                                                   \
    } while (0)

/* Polls the stats until n due runs were skipped: there is no event to
 * wait on for a run that did not happen. */
static bool wait_skipped(const lsvc *svc, uint64_t n, double seconds)
{
    bool ok;

    POLL_UNTIL(ok, stats_of(svc).skipped_not_leader >= n, seconds);
    return ok;
}

static int dummy_run(lsvc *svc, void *arg)
{
    (void)svc;
    (void)arg;
    return 0;
}

static const lsvc_class cls_a = { .name = "pgprobe", .loop_seconds = 0.02,
                                  .run_once = dummy_run };
static const lsvc_class cls_b = { .name = "otherprobe", .loop_seconds = 0.02,
                                  .run_once = dummy_run };

static void destroy_lease(void *lease)
{
    ck_assert_int_eq(lsvc_pg_lease_destroy(lease), 0);
}

static void destroy_service(void *svc)
{
    ck_assert_int_eq(lsvc_destroy(svc), 0);
}

/* lease_on with the log captured; the teardown destroys the lease, after
 * the services that use it. */
static lsvc_pg_lease *test_lease(int port, const char *ns, double timeout)
{
    log_capture();
    lsvc_pg_lease *l = lease_on(port, ns, timeout);
    at_teardown(destroy_lease, l);
    return l;
}

/* A service of cls behind the lease, destroyed by the teardown. */
static lsvc *service_with(const lsvc_class *cls, lsvc_pg_lease *lease)
{
    lsvc_options opts = { 0 };
    lsvc *svc = NULL;

    ck_assert_int_eq(lsvc_pg_lease_options(lease, &opts), 0);
    ck_assert_int_eq(lsvc_create(&svc, cls, NULL, &opts), 0);
    at_teardown(destroy_service, svc);
    return svc;
}

/* --- What runs saw ----------------------------------------------------------- */

#define SEEN_MAX 1024

/* What the runs of a probe service asked about their lease, from inside
 * run_once (the probe's `during` hook); read by the test under the lock. */
struct seen {
    pthread_mutex_t lock;
    uint64_t runs;
    uint64_t last_token;     /* of the last run that had one */
    int token_rc[SEEN_MAX];  /* lsvc_lease_token */
    uint64_t token[SEEN_MAX];
    int valid_rc[SEEN_MAX];  /* lsvc_lease_valid_for */
    double valid[SEEN_MAX];
    int null_svc_rc, null_out_rc; /* lsvc_lease_valid_for with a NULL */
};

static void record_run(lsvc *svc, struct probe *p, uint64_t run)
{
    struct seen *s = p->user;
    uint64_t token = 0;
    double left = -1;
    int token_rc = lsvc_lease_token(svc, &token);
    int valid_rc = lsvc_lease_valid_for(svc, &left);
    int null_svc_rc = lsvc_lease_valid_for(NULL, &left);
    int null_out_rc = lsvc_lease_valid_for(svc, NULL);

    pthread_mutex_lock(&s->lock);
    if (run < SEEN_MAX) {
        s->token_rc[run] = token_rc;
        s->token[run] = token;
        s->valid_rc[run] = valid_rc;
        s->valid[run] = left;
    }
    if (token_rc == 0)
        s->last_token = token;
    s->null_svc_rc = null_svc_rc;
    s->null_out_rc = null_out_rc;
    s->runs = run + 1;
    pthread_mutex_unlock(&s->lock);
}

static struct seen *seen_of(struct fx *f)
{
    return f->p.user;
}

static uint64_t last_token(struct fx *f)
{
    struct seen *s = seen_of(f);

    pthread_mutex_lock(&s->lock);
    uint64_t token = s->last_token;
    pthread_mutex_unlock(&s->lock);
    return token;
}

/* A probe service of `name` every `seconds` with the options, recording
 * what its runs see. The record is made first, so that the teardown,
 * which ends the service first, frees it last. */
static struct fx *recorded(const char *name, double seconds,
                           const lsvc_options *opts)
{
    struct seen *s = test_alloc(sizeof *s);

    pthread_mutex_init(&s->lock, NULL);
    struct fx *f = fx_new(name, seconds, opts);
    f->p.during = record_run;
    f->p.user = s;
    return f;
}

/* A recorded probe service behind the lease object l. */
static struct fx *leased(lsvc_pg_lease *l, const char *name, double seconds)
{
    lsvc_options opts = { 0 };

    ck_assert_int_eq(lsvc_pg_lease_options(l, &opts), 0);
    /* Runs of milliseconds every 10 or 20: under valgrind some overrun,
     * which is no concern here and would add WARNINGs. */
    opts.quiet_overruns = true;
    return recorded(name, seconds, &opts);
}

/* --- The server ------------------------------------------------------------- */

#define TEST_DB "lsvc_pg_api_test"

/* A server test's setting. */
struct pgt {
    char conninfo[1024];  /* of TEST_DB, for lease objects */
    char app[64];         /* the application_name in it, "" for none */
    char ns[64];          /* the test's namespace */
    char db_info[1024];   /* of TEST_DB, for the test's own connections */
    PGconn *admin;        /* the test's connection, autocommit */
    int nkeys;
    long long keys[64];   /* of the leases used, deleted at the end */
};

static bool is_uri(const char *conninfo)
{
    return starts_with(conninfo, "postgresql://") ||
           starts_with(conninfo, "postgres://");
}

/* conninfo with key=value added, which overrides an earlier one. */
static void with_param(char *out, size_t size, const char *conninfo,
                       const char *key, const char *value)
{
    char copy[1024];
    int n;

    snprintf(copy, sizeof copy, "%s", conninfo);
    if (is_uri(copy))
        n = snprintf(out, size, "%s%c%s=%s", copy,
                     strchr(copy, '?') != NULL ? '&' : '?', key, value);
    else
        n = snprintf(out, size, "%s %s='%s'", copy, key, value);
    ck_assert(n > 0 && (size_t)n < size);
}

static PGconn *pg_open(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);

    ck_assert_ptr_nonnull(c);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "cannot connect with %s: %s",
                  conninfo, PQerrorMessage(c));
    return c;
}

static void pg_close(void *c)
{
    PQfinish(c);
}

/* Runs sql, which must succeed; the caller clears the result. */
static PGresult *vsql(PGconn *c, const char *fmt, va_list ap)
{
    char q[4096];
    int n = vsnprintf(q, sizeof q, fmt, ap);

    ck_assert(n > 0 && (size_t)n < sizeof q);
    PGresult *r = PQexec(c, q);
    ExecStatusType st = PQresultStatus(r);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK,
                  "%s failed: %s", q, PQerrorMessage(c));
    return r;
}

static PGresult *sql(PGconn *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    PGresult *r = vsql(c, fmt, ap);
    va_end(ap);
    return r;
}

/* The one value of a query as an integer. */
static long long sql_ll(PGconn *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    PGresult *r = vsql(c, fmt, ap);
    va_end(ap);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert(!PQgetisnull(r, 0, 0));
    long long v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* Makes TEST_DB when it is missing. Two suites may race to make it, and
 * CREATE DATABASE fails while another one copies the template. */
static void ensure_db(const char *server)
{
    PGconn *c = pg_open(server);

    for (int tries = 0;; tries++) {
        PGresult *r = sql(c, "SELECT 1 FROM pg_database WHERE datname = '"
                          TEST_DB "'");
        bool exists = PQntuples(r) > 0;
        PQclear(r);
        if (exists)
            break;
        r = PQexec(c, "CREATE DATABASE " TEST_DB);
        bool made = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (made)
            break;
        ck_assert_msg(tries < 50, "cannot create database " TEST_DB ": %s",
                      PQerrorMessage(c));
        sleep_ms(100);
    }
    PQfinish(c);
}

static void delete_rows(void *arg)
{
    struct pgt *t = arg;
    char q[2048] = "DELETE FROM loopsvc_lease WHERE key IN (0";
    size_t n = strlen(q);

    for (int i = 0; i < t->nkeys; i++)
        n += (size_t)snprintf(q + n, sizeof q - n, ",%lld", t->keys[i]);
    snprintf(q + n, sizeof q - n, ")");
    PQclear(PQexec(t->admin, q)); /* whatever the table's state */
}

/* The setting of a server test, or NULL (and a note) when there is no
 * server. own_app: the lease objects' sessions get an application_name of
 * the test's own. Captures the log from INFO up. */
static struct pgt *pg_setup(bool own_app, const char *test)
{
    const char *server = getenv("LSVC_TEST_PG");
    char admin[1024], tmp[1024];
    static unsigned apps;

    if (server == NULL || server[0] == '\0') {
        /* Check names the function of test X X_fn. */
        size_t len = strlen(test);
        if (len > 3 && strcmp(test + len - 3, "_fn") == 0)
            len -= 3;
        fprintf(stderr, "%.*s: skipped: LSVC_TEST_PG is not set\n",
                (int)len, test);
        return NULL;
    }
    log_capture_info();
    struct pgt *t = test_alloc(sizeof *t);
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    snprintf(t->ns, sizeof t->ns, "api-%ld-%llx", (long)getpid(),
             (unsigned long long)wall.tv_sec * 1000000000ull +
             (unsigned long long)wall.tv_nsec);
    with_param(tmp, sizeof tmp, server, "connect_timeout", "10");
    with_param(admin, sizeof admin, tmp, "application_name", "lsvc-api-test");
    ensure_db(admin);
    with_param(t->db_info, sizeof t->db_info, admin, "dbname", TEST_DB);
    with_param(t->conninfo, sizeof t->conninfo, server, "dbname", TEST_DB);
    if (own_app) {
        snprintf(t->app, sizeof t->app, "lsvc-api-%ld-%u", (long)getpid(),
                 apps++);
        snprintf(tmp, sizeof tmp, "%s", t->conninfo);
        with_param(t->conninfo, sizeof t->conninfo, tmp, "application_name",
                   t->app);
    }
    t->admin = pg_open(t->db_info);
    at_teardown(pg_close, t->admin);
    PQclear(sql(t->admin, "SET client_min_messages = warning"));
    at_teardown(delete_rows, t);
    return t;
}

#define PG_SETUP(t, own_app)                                               \
    struct pgt *t = pg_setup(own_app, __func__);                           \
    if (t == NULL)                                                         \
    return

/* A lease object of the test's namespace, destroyed by the teardown. */
static lsvc_pg_lease *pg_lease(struct pgt *t, double timeout)
{
    lsvc_pg_lease *l = NULL;

    ck_assert_int_eq(lsvc_pg_lease_create(&l, t->conninfo, t->ns, timeout), 0);
    at_teardown(destroy_lease, l);
    return l;
}

/* The key of service `name`, kept for the clean-up. */
static long long key_of(struct pgt *t, const char *name)
{
    long long key = lsvc_pg_lease_key(t->ns, name);

    for (int i = 0; i < t->nkeys; i++)
        if (t->keys[i] == key)
            return key;
    ck_assert_int_lt(t->nkeys, 64);
    t->keys[t->nkeys++] = key;
    return key;
}

/* Makes sure that the table is there, made as the library makes it (a
 * table of the test's own could lack a column of the library's): a
 * service of the test's on l runs once. */
static void table_made(struct pgt *t, lsvc_pg_lease *l)
{
    struct fx *f = leased(l, "table-maker", 60);

    key_of(t, "table-maker");
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, LIMIT));
}

/* A lease's row, as the test's connection sees it. */
struct row {
    bool exists;
    long long token;
    char holder[128];
    int pid;           /* 0: NULL */
    bool free;         /* expires IS NULL */
    double expires;    /* epoch seconds */
    double left;       /* expires - now(), by the server's clock */
};

static struct row row_of(struct pgt *t, const char *name)
{
    struct row w = { .exists = false };
    PGresult *r = sql(t->admin, "SELECT token, coalesce(holder, ''),"
                      " coalesce(pid, 0), expires IS NULL,"
                      " coalesce(extract(epoch FROM expires), 0),"
                      " coalesce(extract(epoch FROM expires - now()), 0)"
                      " FROM loopsvc_lease WHERE key = %lld",
                      key_of(t, name));

    if (PQntuples(r) == 1) {
        w.exists = true;
        w.token = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        snprintf(w.holder, sizeof w.holder, "%s", PQgetvalue(r, 0, 1));
        w.pid = atoi(PQgetvalue(r, 0, 2));
        w.free = strcmp(PQgetvalue(r, 0, 3), "t") == 0;
        w.expires = strtod(PQgetvalue(r, 0, 4), NULL);
        w.left = strtod(PQgetvalue(r, 0, 5), NULL);
    }
    PQclear(r);
    return w;
}

/* Whether the row's holding was given up: no session, and an expiry
 * that is gone (NULL) or not in the future (a release may end the holding
 * at its own time, so that the next holder knows when it ended). */
/* Starts f, waits for `runs` of its runs, and returns the row of its
 * lease, `name`, which must be held. */
static struct row start_holding(struct pgt *t, struct fx *f, const char *name,
                                uint64_t runs)
{
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, runs, LIMIT));
    struct row w = row_of(t, name);
    ck_assert(w.exists && !w.free);
    return w;
}

static bool given_up(const struct row *w)
{
    return w->exists && w->pid == 0 && (w->free || w->left <= 0);
}

/* Whether holder names a lease object of this process:
 * "<host>:<pid>:<16 hex digits>". */
static bool holder_is_ours(const char *holder)
{
    char mid[32];
    const char *at;

    snprintf(mid, sizeof mid, ":%ld:", (long)getpid());
    at = strstr(holder, mid);
    if (at == NULL)
        return false;
    at += strlen(mid);
    if (strlen(at) != 16)
        return false;
    return strspn(at, "0123456789abcdef") == 16;
}

/* The sessions named t->app. */
static long long sessions_of(struct pgt *t)
{
    return sql_ll(t->admin, "SELECT count(*) FROM pg_stat_activity"
                  " WHERE application_name = '%s'", t->app);
}

static bool session_alive(struct pgt *t, int pid)
{
    return sql_ll(t->admin, "SELECT count(*) FROM pg_stat_activity"
                  " WHERE pid = %d", pid) > 0;
}

/* Ends session pid as an operator would. */
static void terminate(struct pgt *t, int pid)
{
    PGresult *r = sql(t->admin, "SELECT pg_terminate_backend(%d)", pid);

    ck_assert_str_eq(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
}

/* Polls until the row's expires is no longer `expires`; its new value. */
static bool wait_expires_moved(struct pgt *t, const char *name,
                               double expires, double seconds,
                               struct row *now)
{
    bool moved;

    POLL_UNTIL(moved, (*now = row_of(t, name)).expires != expires, seconds);
    return moved;
}

/* The log record's logger must be `logger`. */
static void check_logger(const struct log_record *r, const char *logger)
{
    ck_assert_msg(strcmp(r->logger, logger) == 0, "\"%s\" was logged on %s, "
                  "not %s", r->message, r->logger, logger);
}

/* The WARNING of the health rule "orphaned" (lsvc_healthy): a service
 * that has not run anywhere for 5 intervals and 1 s is told of, which the
 * skips of these tests reach on a loaded machine. Not a lease error. */
static bool orphan_news(const struct log_record *r)
{
    return starts_with(r->message, "No replica has run ");
}

/* Exactly n WARNINGs so far, leaving out orphan_news; else they are
 * named. */
static void check_warnings(size_t n)
{
    size_t count = 0, len = 0;
    char all[2048] = "";
    struct log_record r;

    /* Every record matches level 0: record i is the first at i. */
    for (size_t i = 0; log_find(i, 0, NULL, &r); i++)
        if (r.level == LSVC_LOG_WARNING && !orphan_news(&r)) {
            count++;
            if (len < sizeof all)
                len += (size_t)snprintf(all + len, sizeof all - len,
                                        " [%s] %s", r.logger, r.message);
        }
    ck_assert_msg(count == n, "%zu WARNINGs, not %zu:%s", count, n, all);
}

/* --- Without a server -------------------------------------------------------- */

START_TEST(key_is_fnv1a_64_of_ns_zero_name)
{
    ck_assert(lsvc_pg_lease_key("", "") == INT64_C(-5808590958014384161));
    ck_assert(lsvc_pg_lease_key("prod", "cachepruner") ==
              INT64_C(7869406848213085072));
    ck_assert(lsvc_pg_lease_key("", "lease-probe") == INT64_C(272194892920979140));
    /* The zero byte keeps namespace and name apart. */
    ck_assert(lsvc_pg_lease_key("ab", "c") == INT64_C(-188658036487747481));
    ck_assert(lsvc_pg_lease_key("a", "bc") == INT64_C(-6106610056285866717));
    ck_assert(lsvc_pg_lease_key(NULL, "x") == 0);
    ck_assert(lsvc_pg_lease_key("x", NULL) == 0);
}
END_TEST

START_TEST(create_rejects_bad_arguments)
{
    lsvc_pg_lease *l = (lsvc_pg_lease *)&l; /* untouched on failure */
    const char *ok = "host=127.0.0.1";

    ck_assert_int_eq(lsvc_pg_lease_create(NULL, ok, "", 0), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, NULL, "", 0), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, NULL, 0), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", NAN), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", -1), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", 3600.5), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", INFINITY), EINVAL);
    ck_assert_ptr_eq(l, (lsvc_pg_lease *)&l);

    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", 3600), 0);
    ck_assert_int_eq(lsvc_pg_lease_destroy(l), 0);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, "", "", 0), 0);
    ck_assert_int_eq(lsvc_pg_lease_destroy(l), 0);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, "postgresql://u@h:5/db", "ns", 0.5), 0);
    ck_assert_int_eq(lsvc_pg_lease_destroy(l), 0);

    ck_assert_int_eq(lsvc_pg_lease_destroy(NULL), EINVAL);
    lsvc_options opts = { 0 };
    ck_assert_int_eq(lsvc_pg_lease_options(NULL, &opts), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", 0), 0);
    ck_assert_int_eq(lsvc_pg_lease_options(l, NULL), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_options(l, &opts), 0);
    ck_assert_ptr_nonnull(opts.lease);
    ck_assert(opts.lease->acquire != NULL);
    ck_assert(opts.lease->release != NULL);
    ck_assert(opts.lease->deadline != NULL);
    /* The context is the object's store, the same for every service. */
    void *ctx = opts.lease_ctx;
    ck_assert_ptr_nonnull(ctx);
    lsvc_options again = { 0 };
    ck_assert_int_eq(lsvc_pg_lease_options(l, &again), 0);
    ck_assert_ptr_eq(again.lease, opts.lease);
    ck_assert_ptr_eq(again.lease_ctx, ctx);
    /* Fencing tokens and deadlines: asked only after a "held", which no
     * lease here has been told; never either without a holding. */
    ck_assert(opts.lease->token != NULL);
    uint64_t token = 42;
    int64_t until = 42;
    ck_assert_int_eq(opts.lease->token(NULL, NULL, &token), EINVAL);
    ck_assert_int_eq(opts.lease->token(ctx, NULL, &token), EINVAL);
    ck_assert_int_eq(opts.lease->deadline(NULL, NULL, &until), EINVAL);
    ck_assert_int_eq(opts.lease->deadline(ctx, NULL, &until), EINVAL);
    lsvc *svc = NULL;
    const lsvc_class cls = { .name = "token-probe", .run_once = dummy_run };
    ck_assert_int_eq(lsvc_create(&svc, &cls, NULL, &opts), 0);
    ck_assert_int_eq(opts.lease->token(ctx, svc, NULL), EINVAL);
    ck_assert_int_eq(opts.lease->token(ctx, svc, &token), EAGAIN);
    ck_assert(token == 42);
    ck_assert_int_eq(opts.lease->deadline(ctx, svc, NULL), EINVAL);
    ck_assert_int_eq(opts.lease->deadline(ctx, svc, &until), EAGAIN);
    ck_assert(until == 42);
    /* Not in a run: nothing to count on. */
    double left = 42;
    ck_assert_int_eq(lsvc_lease_valid_for(svc, &left), EAGAIN);
    ck_assert_int_eq(lsvc_lease_valid_for(NULL, &left), EINVAL);
    ck_assert_int_eq(lsvc_lease_valid_for(svc, NULL), EINVAL);
    ck_assert(left == 42);
    lsvc_destroy(svc);
    ck_assert_int_eq(lsvc_pg_lease_destroy(l), 0);
}
END_TEST

START_TEST(unparsable_conninfo_is_einval_with_libpq_reason)
{
    static const char *const bad[] = {
        "host=127.0.0.1 port", "nosuchkey=1", "host='unterminated",
        "postgresql://[::1",
    };
    lsvc_pg_lease *l = NULL;
    struct log_record r;

    log_capture();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t from = log_size();

        ck_assert_int_eq(lsvc_pg_lease_create(&l, bad[i], "", 0), EINVAL);
        ck_assert_ptr_null(l);
        ck_assert_msg(log_find(from, LSVC_LOG_ERROR, "connection string", &r),
                      "no ERROR for %s", bad[i]);
        ck_assert_str_eq(r.logger, "loopsvc");
        ck_assert_ptr_null(strchr(r.message, '\n'));
    }
    ck_assert(log_find(0, LSVC_LOG_ERROR, "missing \"=\" after \"port\"", NULL));
    ck_assert(log_find(0, LSVC_LOG_ERROR, "invalid connection option \"nosuchkey\"", NULL));
}
END_TEST

START_TEST(create_and_destroy_make_no_connection)
{
    int port, fd = listen_silent(&port);

    ck_assert_int_eq(lsvc_pg_lease_destroy(lease_on(port, "", 0)), 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    ck_assert_int_lt(accept(fd, NULL, NULL), 0);
    ck_assert_int_eq(errno, EAGAIN);
    close(fd);
}
END_TEST

START_TEST(refused_connection_skips_runs_and_warns_once)
{
    lsvc *svc = service_with(&cls_a, test_lease(refused_port(), "t", 1.0));
    struct log_record r;

    /* 40 due runs at 20 ms take 0.8 s: attempts at 0, 0.1, 0.3 and 0.7 s,
     * four refusals, one WARNING, on the library's logger: the store's
     * connection is every service's. */
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(wait_skipped(svc, 40, 10));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    lsvc_stats st = stats_of(svc);
    ck_assert_uint_eq(st.loops, 0);
    ck_assert_uint_gt(st.skipped_not_leader, 20);
    ck_assert(!st.lease_held);
    check_warnings(1);
    ck_assert(log_find(0, LSVC_LOG_WARNING, "Could not connect to PostgreSQL "
                       "for the leases: ", &r));
    check_logger(&r, "loopsvc");
    ck_assert_ptr_nonnull(strstr(r.message, "Connection refused"));
    ck_assert_ptr_nonnull(strstr(r.message, "trying again in 0.1 s"));
    ck_assert_ptr_null(strchr(r.message, '\n'));
}
END_TEST

START_TEST(silent_server_is_bounded_by_the_timeout)
{
    int port, fd = listen_silent(&port);
    struct log_record r;

    lsvc *svc = service_with(&cls_a, test_lease(port, "", 0.2));

    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(log_wait(0, LSVC_LOG_WARNING, "no answer within 0.2 s", 5.0, &r));
    ck_assert_ptr_nonnull(strstr(r.message, "while connecting"));
    /* Whatever the lease is doing now, it gives up within its timeout. */
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_stop_timeout(svc, 2.0), 0);
    ck_assert_msg(seconds_since(t0) < 1.0, "the stop took %.2f s", seconds_since(t0));
    close(fd);
}
END_TEST

/* Services of different names share the object and its connection: no
 * error for either, and one WARNING for the outage, not one per service. */
START_TEST(services_of_different_names_share_one_lease_object)
{
    lsvc_pg_lease *l = test_lease(refused_port(), "", 0);
    lsvc *a = service_with(&cls_a, l);
    lsvc *b = service_with(&cls_b, l);

    ck_assert_int_eq(lsvc_start(a, 0), 0);
    ck_assert(log_wait(0, LSVC_LOG_WARNING, "Could not connect", 5.0, NULL));
    ck_assert_int_eq(lsvc_start(b, 0), 0);
    ck_assert(wait_skipped(b, 10, 10));
    ck_assert(wait_skipped(a, 10, 10));
    ck_assert_int_eq(lsvc_stop(a, true), 0);
    ck_assert_int_eq(lsvc_stop(b, true), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, NULL), 0);
    check_warnings(1);
    ck_assert_uint_eq(log_count(0, "Invalid argument"), 0);
    ck_assert_uint_eq(stats_of(a).loops, 0);
    ck_assert_uint_eq(stats_of(b).loops, 0);
}
END_TEST

static int always_held(void *ctx, lsvc *svc, bool *held)
{
    (void)ctx;
    (void)svc;
    *held = true;
    return 0;
}

/* A lease whose ops have no deadline cannot tell a run what is left. */
START_TEST(valid_for_is_enotsup_without_a_deadline_callback)
{
    static const lsvc_lease_ops ops = { .acquire = always_held };
    lsvc_options opts = { .lease = &ops };
    struct fx *f = recorded("nodeadline", 0.02, &opts);
    double left = 42;

    ck_assert_int_eq(lsvc_lease_valid_for(f->svc, &left), EAGAIN);
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 2, LIMIT));
    fx_stop(f);
    struct seen *s = seen_of(f);
    ck_assert_int_eq(s->valid_rc[0], ENOTSUP);
    ck_assert_int_eq(s->valid_rc[1], ENOTSUP);
    ck_assert_int_eq(s->null_svc_rc, EINVAL);
    ck_assert_int_eq(s->null_out_rc, EINVAL);
    ck_assert_int_eq(lsvc_lease_valid_for(f->svc, &left), EAGAIN);
    ck_assert(left == 42);
}
END_TEST

/* --- With a server ------------------------------------------------------------ */

/* 20 services, one object: one session, 20 rows of one holder. */
START_TEST(one_lease_object_serves_many_services_over_one_session)
{
    enum { N = 20 };
    PG_SETUP(t, true);
    char (*names)[16] = test_alloc(N * sizeof *names);
    lsvc_pg_lease *l = pg_lease(t, 0);
    struct fx *f[N];
    char keys[N * 24] = "";
    size_t len = 0;

    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "many-%02d", i);
        f[i] = leased(l, names[i], 0.02);
        len += (size_t)snprintf(keys + len, sizeof keys - len, "%s%lld",
                                i ? "," : "", key_of(t, names[i]));
    }
    for (int i = 0; i < N; i++)
        fx_start(f[i], 0);
    for (int i = 0; i < N; i++)
        ck_assert_msg(probe_wait_runs(&f[i]->p, 1, LIMIT), "%s did not run",
                      names[i]);

    /* One session of the object's, named as the conninfo says ... */
    ck_assert_int_eq(sessions_of(t), 1);
    PGresult *r = sql(t->admin, "SELECT count(*), count(DISTINCT holder),"
                      " count(DISTINCT pid), min(holder), min(pid),"
                      " count(*) FILTER (WHERE expires > now()), max(token)"
                      " FROM loopsvc_lease WHERE key IN (%s)", keys);
    /* ... and a row per service, all of this object, through it. */
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "20");
    ck_assert_str_eq(PQgetvalue(r, 0, 1), "1");
    ck_assert_str_eq(PQgetvalue(r, 0, 2), "1");
    ck_assert_msg(holder_is_ours(PQgetvalue(r, 0, 3)), "holder %s",
                  PQgetvalue(r, 0, 3));
    int pid = atoi(PQgetvalue(r, 0, 4));
    ck_assert_str_eq(PQgetvalue(r, 0, 5), "20");
    ck_assert_str_eq(PQgetvalue(r, 0, 6), "1"); /* fresh keys */
    PQclear(r);
    ck_assert_int_eq(sql_ll(t->admin, "SELECT count(*) FROM pg_stat_activity"
                            " WHERE pid = %d AND application_name = '%s'",
                            pid, t->app), 1);

    /* Every service goes on, each with the lease taken once. */
    for (int i = 0; i < N; i++) {
        ck_assert_msg(probe_wait_runs(&f[i]->p, 3, LIMIT), "%s stopped",
                      names[i]);
        lsvc_stats st = stats_of(f[i]->svc);
        ck_assert(st.lease_held);
        ck_assert_uint_eq(st.lease_changes, 1);
        ck_assert_uint_eq(last_token(f[i]), 1);
    }
    ck_assert_int_eq(sessions_of(t), 1);
    check_warnings(0);
}
END_TEST

/* The holder's runs do not wait for the server: while the round trip of
 * the renewal is stuck behind a row lock, runs go on at their interval. */
START_TEST(a_holder_runs_on_while_its_renewal_waits)
{
    PG_SETUP(t, false);
    lsvc_pg_lease *l = pg_lease(t, 2.0); /* TTL 6 s */
    struct fx *f = leased(l, "stuckrenewal", 0.01);
    bool waiting;

    struct row before = start_holding(t, f, "stuckrenewal", 3);

    /* The next renewal, at most a third of the TTL away, waits for this
     * lock until the lock is let go, well within the timeout. */
    PGconn *locker = pg_open(t->db_info);
    at_teardown(pg_close, locker);
    PQclear(sql(locker, "BEGIN"));
    PQclear(sql(locker, "SELECT 1 FROM loopsvc_lease WHERE key = %lld"
                " FOR UPDATE", key_of(t, "stuckrenewal")));
    POLL_UNTIL(waiting, sql_ll(t->admin, "SELECT count(*) FROM"
                               " pg_stat_activity WHERE pid = %d AND"
                               " wait_event_type = 'Lock'", before.pid) > 0,
               LIMIT);
    ck_assert_msg(waiting, "the renewal did not come");

    uint64_t runs = probe_runs(&f->p);
    work_for_ns(300 * NS_PER_MS);
    runs = probe_runs(&f->p) - runs;
    ck_assert_int_eq(sql_ll(t->admin, "SELECT count(*) FROM pg_stat_activity"
                            " WHERE pid = %d AND wait_event_type = 'Lock'",
                            before.pid), 1);
    ck_assert_msg(runs >= 10, "%llu runs in 300 ms of a 10 ms service while "
                  "its renewal waited", (unsigned long long)runs);
    ck_assert(stats_of(f->svc).lease_held);

    PQclear(sql(locker, "ROLLBACK"));
    struct row after;
    ck_assert(wait_expires_moved(t, "stuckrenewal", before.expires, LIMIT,
                                 &after));
    ck_assert_int_eq(after.token, before.token);
    ck_assert_int_eq(after.pid, before.pid);
    ck_assert(probe_wait_runs(&f->p, 3, LIMIT));
    ck_assert_uint_eq(stats_of(f->svc).lease_changes, 1);
    check_warnings(0);
}
END_TEST

/* Samples the row of `name` every 5 ms for `seconds`: how often its
 * expires moved, the longest time between two moves (or since the start),
 * and the least time it had left. */
struct renewals {
    int moves;
    double longest_gap; /* s, by the server's expires */
    double least_left;  /* s */
    struct row first, last;
};

static struct renewals watch_renewals(struct pgt *t, const char *name,
                                      double seconds)
{
    struct renewals w = { .least_left = 1e9 };
    int64_t end = now_ns() + (int64_t)(seconds * 1e9);
    double since;

    w.first = w.last = row_of(t, name);
    since = w.first.expires;
    while (now_ns() < end) {
        struct row r = row_of(t, name);

        ck_assert(r.exists && !r.free);
        if (r.left < w.least_left)
            w.least_left = r.left;
        if (r.expires != w.last.expires) {
            w.moves++;
            if (r.expires - since > w.longest_gap)
                w.longest_gap = r.expires - since;
            since = r.expires;
        }
        w.last = r;
        sleep_ms(5);
    }
    return w;
}

/* The row's expires moves with the renewals of the object's thread, not
 * with the runs: a 10 ms service makes many more runs than renewals, and
 * its lease never comes near its end. */
START_TEST(the_row_is_renewed_by_the_store_not_by_the_runs)
{
    PG_SETUP(t, false);
    lsvc_pg_lease *l = pg_lease(t, 1.0); /* TTL 3 s */
    struct fx *f = leased(l, "renewals", 0.01);

    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 3, LIMIT));
    uint64_t runs = probe_runs(&f->p);
    struct renewals w = watch_renewals(t, "renewals", 0.6);
    runs = probe_runs(&f->p) - runs;
    fprintf(stderr, "%s: %llu runs, %d renewals, longest gap %.3f s, "
            "least left %.3f s\n", __func__, (unsigned long long)runs,
            w.moves, w.longest_gap, w.least_left);
    ck_assert_msg(runs >= 20, "%llu runs in 0.6 s", (unsigned long long)runs);
    ck_assert_msg(w.moves >= 1, "no renewal in 0.6 s");
    ck_assert_msg(w.moves * 2 <= (int)runs, "%d renewals for %llu runs",
                  w.moves, (unsigned long long)runs);
    ck_assert_msg(w.least_left > 1.5, "only %.3f s left", w.least_left);
    ck_assert_int_eq(w.last.token, w.first.token);
    ck_assert_int_eq(w.last.pid, w.first.pid);
    ck_assert_uint_eq(stats_of(f->svc).lease_changes, 1);
    check_warnings(0);
}
END_TEST

/* A holder keeps its lease between rare runs: with one run a minute, the
 * thread renews the row about every third of the TTL (not all the time),
 * over more than a TTL. */
START_TEST(a_lease_is_renewed_between_rare_runs)
{
    PG_SETUP(t, false);
    lsvc_pg_lease *l = pg_lease(t, 1.0); /* TTL 3 s */
    struct fx *f = leased(l, "rare", 60);

    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, LIMIT));
    struct renewals w = watch_renewals(t, "rare", 4.0);
    fprintf(stderr, "%s: %d renewals, longest gap %.3f s, least left "
            "%.3f s\n", __func__, w.moves, w.longest_gap, w.least_left);
    ck_assert_uint_eq(probe_runs(&f->p), 1);
    ck_assert_msg(w.moves >= 3, "%d renewals in 4 s", w.moves);
    ck_assert_msg(w.moves <= 16, "%d renewals in 4 s", w.moves);
    ck_assert_msg(w.longest_gap <= 1.5, "%.3f s between renewals",
                  w.longest_gap);
    ck_assert_msg(w.least_left > 1.0, "only %.3f s left", w.least_left);
    ck_assert_int_eq(w.last.token, w.first.token);
    ck_assert(stats_of(f->svc).lease_held);
    check_warnings(0);
}
END_TEST

/* lsvc_lease_valid_for: in a run, what is left of the local deadline,
 * within the TTL; EAGAIN out of a run; 0 once the session is lost. */
START_TEST(valid_for_tells_a_run_what_is_left_of_its_holding)
{
    PG_SETUP(t, false);
    lsvc_pg_lease *l = pg_lease(t, 1.0); /* TTL 3 s */
    struct fx *f = leased(l, "validity", 0.02);
    struct seen *s = seen_of(f);
    double left = 42;

    ck_assert_int_eq(lsvc_lease_valid_for(f->svc, &left), EAGAIN);
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 8, LIMIT));
    /* Between runs, a paused service holds no run. */
    ck_assert_int_eq(lsvc_pause(f->svc), 0);
    ck_assert_int_eq(lsvc_lease_valid_for(f->svc, &left), EAGAIN);
    ck_assert(left == 42);
    ck_assert_int_eq(lsvc_resume(f->svc), 0);

    pthread_mutex_lock(&s->lock);
    ck_assert_uint_ge(s->runs, 8);
    for (int i = 0; i < 8; i++) {
        ck_assert_int_eq(s->valid_rc[i], 0);
        /* Renewed every third of the TTL at most: more than half left. */
        ck_assert_msg(s->valid[i] > 1.5 && s->valid[i] <= 3.0,
                      "run %d: %.3f s left", i, s->valid[i]);
        ck_assert_int_eq(s->token_rc[i], 0);
    }
    ck_assert_int_eq(s->null_svc_rc, EINVAL);
    ck_assert_int_eq(s->null_out_rc, EINVAL);
    pthread_mutex_unlock(&s->lock);

    /* Without an application_name of its own, the session is named so. */
    struct row w = row_of(t, "validity");
    PGresult *r = sql(t->admin, "SELECT application_name FROM"
                      " pg_stat_activity WHERE pid = %d", w.pid);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "loopsvc-lease");
    PQclear(r);

    /* A run in progress: any thread may ask. */
    probe_hold(&f->p);
    sem_drain(&f->p.entered);
    fx_wait_entered(f);
    ck_assert_int_eq(lsvc_lease_valid_for(f->svc, &left), 0);
    ck_assert_msg(left > 1.5 && left <= 3.0, "%.3f s left", left);

    /* The session ends under it: nothing is left to count on. */
    size_t from = log_size();
    terminate(t, w.pid);
    ck_assert(log_wait(from, LSVC_LOG_WARNING, "Lost the session with "
                       "PostgreSQL", LIMIT, NULL));
    ck_assert_int_eq(lsvc_lease_valid_for(f->svc, &left), 0);
    ck_assert_msg(left == 0, "%.3f s left after the session ended", left);
    probe_release(&f->p);
}
END_TEST

/* The server ends the holder's session: the store sees it at once, gives
 * up every holding, skips the due runs, connects again after its backoff
 * and takes the lease back (the row still names it: token kept). */
START_TEST(a_killed_session_stops_runs_until_a_new_one_holds)
{
    PG_SETUP(t, true);
    lsvc_pg_lease *l = pg_lease(t, 1.0); /* TTL 3 s */
    struct fx *f = leased(l, "killed", 0.02);
    struct log_record r;
    bool ok;

    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 3, LIMIT));
    uint64_t token = last_token(f);
    struct row before = row_of(t, "killed");
    ck_assert_int_eq(before.token, (long long)token);
    ck_assert(session_alive(t, before.pid));
    lsvc_stats st0 = stats_of(f->svc);
    ck_assert(st0.lease_held);
    size_t from = log_size();

    terminate(t, before.pid);
    int64_t killed = now_ns();
    ck_assert(log_wait(from, LSVC_LOG_WARNING, "Lost the session with "
                       "PostgreSQL for the leases: ", LIMIT, &r));
    /* Long before the row would have expired. */
    ck_assert_msg(seconds_since(killed) < 1.0, "noticed after %.3f s",
                  seconds_since(killed));
    check_logger(&r, "loopsvc");
    ck_assert_ptr_nonnull(strstr(r.message, "The 1 lease held here is given "
                                 "up here."));
    ck_assert_ptr_null(strchr(r.message, '\n'));
    POLL_UNTIL(ok, stats_of(f->svc).skipped_not_leader >
                   st0.skipped_not_leader, LIMIT);
    ck_assert_msg(ok, "no due run was skipped");
    ck_assert(log_find(from, LSVC_LOG_INFO, "This replica lost the lease of "
                       "killed", &r));
    check_logger(&r, "loopsvc.killed");

    ck_assert(log_wait(from, LSVC_LOG_INFO, "Connected to PostgreSQL again "
                       "for the leases, after 1 failed attempt.", LIMIT, &r));
    check_logger(&r, "loopsvc");
    ck_assert(log_wait(from, LSVC_LOG_INFO, "This replica now holds the "
                       "lease of killed", LIMIT, NULL));
    ck_assert(probe_wait_runs(&f->p, 3, LIMIT));
    struct row after = row_of(t, "killed");
    ck_assert(after.pid != before.pid);
    ck_assert(session_alive(t, after.pid));
    ck_assert_str_eq(after.holder, before.holder);
    /* No other holder came between: the row is still this object's
     * holding, and its token stays. */
    ck_assert_int_eq(after.token, before.token);
    ck_assert_uint_eq(last_token(f), token);
    ck_assert_int_eq(sessions_of(t), 1);
    lsvc_stats st = stats_of(f->svc);
    ck_assert(st.lease_held);
    ck_assert_uint_eq(st.lease_changes, st0.lease_changes + 2);
    check_warnings(1);
}
END_TEST

/* The store watches its connection between round trips: a session ended
 * while no round trip is near (a long TTL, a service that runs once a
 * minute) is noticed at once, not at the next renewal; and another
 * lease object takes the lease over at its first due runs, since the
 * session named in the row is gone. */
START_TEST(a_lost_session_is_noticed_between_round_trips)
{
    PG_SETUP(t, false);
    lsvc_pg_lease *l = pg_lease(t, 5.0); /* TTL 15 s */
    struct fx *f = leased(l, "quiet", 60);
    struct log_record r;

    struct row before = start_holding(t, f, "quiet", 1);
    size_t from = log_size();
    terminate(t, before.pid);
    int64_t killed = now_ns();
    ck_assert(log_wait(from, LSVC_LOG_WARNING, "Lost the session with "
                       "PostgreSQL for the leases: ", LIMIT, &r));
    ck_assert_msg(seconds_since(killed) < 1.0, "noticed after %.3f s",
                  seconds_since(killed));
    check_logger(&r, "loopsvc");
    ck_assert_ptr_nonnull(strstr(r.message, "The 1 lease held here is given "
                                 "up here."));
    /* Its expiry is far, but its session is gone. */
    struct row orphan = row_of(t, "quiet");
    ck_assert(orphan.left > 10);
    ck_assert(!session_alive(t, orphan.pid));

    lsvc_pg_lease *other = pg_lease(t, 5.0);
    struct fx *g = leased(other, "quiet", 0.02);
    fx_start(g, 0);
    ck_assert(probe_wait_runs(&g->p, 2, LIMIT));
    ck_assert_uint_le(stats_of(g->svc).skipped_not_leader, 1);
    struct row after = row_of(t, "quiet");
    ck_assert_int_eq(after.token, before.token + 1);
    ck_assert_uint_eq(last_token(g), (uint64_t)after.token);
    ck_assert_str_ne(after.holder, before.holder);
    ck_assert_msg(holder_is_ours(after.holder), "holder %s", after.holder);
    check_warnings(1);
}
END_TEST

/* Another holder's row: no run here while it has not expired by the
 * server's clock and its session lives; once it expires, the lease moves
 * here with the next token. */
START_TEST(a_row_of_another_holder_keeps_the_lease_until_it_expires)
{
    PG_SETUP(t, false);
    lsvc_pg_lease *l = pg_lease(t, 1.0);
    long long key = key_of(t, "expiry");

    table_made(t, l);
    /* Its session is the test's own, alive. */
    PQclear(sql(t->admin, "INSERT INTO loopsvc_lease (key, token, holder,"
                " pid, expires) VALUES (%lld, 7, 'elsewhere:1:0123456789abcdef',"
                " pg_backend_pid(), now() + interval '1 hour')", key));
    struct fx *f = leased(l, "expiry", 0.02);

    fx_start(f, 0);
    ck_assert(wait_skipped(f->svc, 10, LIMIT));
    ck_assert_uint_eq(probe_runs(&f->p), 0);
    ck_assert(!stats_of(f->svc).lease_held);
    struct row w = row_of(t, "expiry");
    ck_assert_str_eq(w.holder, "elsewhere:1:0123456789abcdef");
    ck_assert_int_eq(w.token, 7);
    /* Not an error: another replica holds it. */
    check_warnings(0);

    PQclear(sql(t->admin, "UPDATE loopsvc_lease SET expires = now() -"
                " interval '1 s' WHERE key = %lld", key));
    ck_assert(probe_wait_runs(&f->p, 2, LIMIT));
    ck_assert_uint_eq(last_token(f), 8);
    w = row_of(t, "expiry");
    ck_assert_int_eq(w.token, 8);
    ck_assert_msg(holder_is_ours(w.holder), "holder %s", w.holder);
    ck_assert(!w.free && w.left > 1.0);
    ck_assert(session_alive(t, w.pid));
    ck_assert(stats_of(f->svc).lease_held);
}
END_TEST

/* A row whose holder's session is gone is free at once, however far its
 * expiry: its process died or the server ended it. */
START_TEST(a_row_whose_session_ended_is_free_at_once)
{
    PG_SETUP(t, false);
    lsvc_pg_lease *l = pg_lease(t, 1.0);
    long long key = key_of(t, "orphan");
    PGconn *gone = pg_open(t->db_info);
    long long pid = sql_ll(gone, "SELECT pg_backend_pid()");
    bool ended;

    table_made(t, l);
    PQfinish(gone);
    POLL_UNTIL(ended, !session_alive(t, (int)pid), LIMIT);
    ck_assert(ended);
    PQclear(sql(t->admin, "INSERT INTO loopsvc_lease (key, token, holder,"
                " pid, expires) VALUES (%lld, 41, 'elsewhere:2:0123456789abcdef',"
                " %lld, now() + interval '1 hour')", key, pid));
    struct fx *f = leased(l, "orphan", 0.02);

    /* Taken at the first due run; the point it was taken for may be left
     * out, since its expiry is to come: the holder that died may have
     * started it. */
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, LIMIT));
    ck_assert_uint_le(stats_of(f->svc).skipped_not_leader, 1);
    ck_assert_uint_eq(stats_of(f->svc).lease_changes, 1);
    ck_assert_uint_eq(last_token(f), 42);
    struct row w = row_of(t, "orphan");
    ck_assert_int_eq(w.token, 42);
    ck_assert_msg(holder_is_ours(w.holder), "holder %s", w.holder);
}
END_TEST

/* A stop gives the lease up (no session, no expiry to come; token and
 * holder kept), so that the destroy has nothing left to give up; a lease
 * still held at the destroy is given up by it; and the destroy ends the
 * session. */
START_TEST(stop_and_destroy_give_the_leases_up)
{
    PG_SETUP(t, true);
    lsvc_pg_lease *l = NULL;
    lsvc_options opts = { 0 };
    bool gone;

    ck_assert_int_eq(lsvc_pg_lease_create(&l, t->conninfo, t->ns, 1.0), 0);
    ck_assert_int_eq(lsvc_pg_lease_options(l, &opts), 0);
    opts.quiet_overruns = true;
    struct fx *f = recorded("stopper", 0.02, &opts);
    struct row held = start_holding(t, f, "stopper", 2);
    fx_stop(f);
    /* The stop waited for the release. */
    struct row w = row_of(t, "stopper");
    ck_assert_msg(given_up(&w), "still held for %.3f s (pid %d) after the "
                  "stop", w.left, w.pid);
    ck_assert_int_eq(w.token, held.token);
    ck_assert_str_eq(w.holder, held.holder);
    ck_assert(log_find(0, LSVC_LOG_INFO, "Released the lease of stopper",
                       NULL));

    /* A holding that no stop gave up: asked for through the ops, by a
     * service that never ran. */
    const lsvc_class cls = { .name = "unstopped", .run_once = dummy_run };
    lsvc *svc = NULL;
    bool is_held = false;
    uint64_t token = 0;
    ck_assert_int_eq(lsvc_create(&svc, &cls, NULL, &opts), 0);
    ck_assert_int_eq(opts.lease->acquire(opts.lease_ctx, svc, &is_held), 0);
    ck_assert(is_held);
    ck_assert_int_eq(opts.lease->token(opts.lease_ctx, svc, &token), 0);
    ck_assert_uint_eq(token, 1);
    w = row_of(t, "unstopped");
    ck_assert(!w.free && w.left > 1.0);
    ck_assert_str_eq(w.holder, held.holder);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fx_free(f);

    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_pg_lease_destroy(l), 0);
    ck_assert_msg(seconds_since(t0) < 1.0, "the destroy took %.3f s",
                  seconds_since(t0));
    w = row_of(t, "unstopped");
    ck_assert_msg(given_up(&w), "still held for %.3f s (pid %d) after the "
                  "destroy", w.left, w.pid);
    ck_assert_int_eq(w.token, 1);
    w = row_of(t, "stopper");
    ck_assert(given_up(&w));
    POLL_UNTIL(gone, sessions_of(t) == 0, LIMIT);
    ck_assert_msg(gone, "the session outlived the destroy");
    check_warnings(0);
}
END_TEST

/* A paused holder stops asking for its lease: the store gives it up
 * after the longer of two intervals and the time to live, for the other
 * replicas; resumed, the service takes it again, with the next token. */
START_TEST(a_paused_holder_gives_its_lease_up)
{
    PG_SETUP(t, false);
    lsvc_pg_lease *l = pg_lease(t, 0.1); /* TTL 0.3 s */
    struct fx *f = leased(l, "pausable", 0.02);
    bool released;

    struct row held = start_holding(t, f, "pausable", 2);
    ck_assert_int_eq(lsvc_pause(f->svc), 0);
    int64_t t0 = now_ns();
    struct row w;
    POLL_UNTIL(released, (w = row_of(t, "pausable"), given_up(&w)), LIMIT);
    ck_assert_msg(released, "a paused holder kept its lease for %.1f s",
                  seconds_since(t0));
    ck_assert_msg(seconds_since(t0) < 1.5, "given up only after %.3f s",
                  seconds_since(t0));
    ck_assert_int_eq(w.token, held.token);
    uint64_t runs = probe_runs(&f->p);
    ck_assert_int_eq(lsvc_resume(f->svc), 0);
    ck_assert(probe_wait_runs(&f->p, runs + 2, LIMIT));
    w = row_of(t, "pausable");
    ck_assert(!w.free);
    ck_assert_int_eq(w.token, held.token + 1);
    check_warnings(0);
}
END_TEST

/* Two services of one name on one object, each in a group of its own:
 * while the first holds the lease, the second's acquire is EINVAL, which
 * skips its runs with one WARNING; once the first stops, the second
 * takes the lease, with the next token. */
START_TEST(two_services_of_one_name_on_one_object_never_both_hold)
{
    PG_SETUP(t, false);
    lsvc_pg_lease *l = pg_lease(t, 1.0);
    lsvc_options opts = { 0 };
    struct gfx *g1 = gfx_new(), *g2 = gfx_new();
    struct log_record r;

    ck_assert_int_eq(lsvc_pg_lease_options(l, &opts), 0);
    opts.quiet_overruns = true;
    ck_assert_int_eq(lsvc_group_set_signals(g1->g, NULL), 0);
    ck_assert_int_eq(lsvc_group_set_signals(g2->g, NULL), 0);
    struct fx *a = &g1->m[gfx_add(g1, "twin", 0.02, &opts)];
    struct fx *b = &g2->m[gfx_add(g2, "twin", 0.02, &opts)];

    gfx_start(g1);
    ck_assert(probe_wait_runs(&a->p, 2, LIMIT));
    size_t from = log_size();
    gfx_start(g2);
    ck_assert(wait_skipped(b->svc, 10, LIMIT));
    ck_assert(log_find(from, LSVC_LOG_WARNING, "Could not learn whether this "
                       "replica holds the lease of twin: Invalid argument",
                       &r));
    check_logger(&r, "loopsvc.twin");
    ck_assert_uint_eq(probe_runs(&b->p), 0);
    ck_assert(probe_wait_runs(&a->p, 2, LIMIT));
    ck_assert(stats_of(a->svc).lease_held);
    ck_assert_uint_eq(stats_of(a->svc).skipped_not_leader, 0);
    check_warnings(1);
    long long token = row_of(t, "twin").token;

    gfx_stop(g1);
    ck_assert(probe_wait_runs(&b->p, 2, LIMIT));
    ck_assert(stats_of(b->svc).lease_held);
    ck_assert_int_eq(row_of(t, "twin").token, token + 1);
    gfx_stop(g2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lease-pg-api");
    add_tests(s, "api", (const TTest *[]){
        key_is_fnv1a_64_of_ns_zero_name,
        create_rejects_bad_arguments,
        unparsable_conninfo_is_einval_with_libpq_reason,
        create_and_destroy_make_no_connection,
        refused_connection_skips_runs_and_warns_once,
        silent_server_is_bounded_by_the_timeout,
        services_of_different_names_share_one_lease_object,
        valid_for_is_enotsup_without_a_deadline_callback, NULL});
    add_tests(s, "server", (const TTest *[]){
        one_lease_object_serves_many_services_over_one_session,
        a_holder_runs_on_while_its_renewal_waits,
        the_row_is_renewed_by_the_store_not_by_the_runs,
        a_lease_is_renewed_between_rare_runs,
        valid_for_tells_a_run_what_is_left_of_its_holding,
        a_killed_session_stops_runs_until_a_new_one_holds,
        a_lost_session_is_noticed_between_round_trips,
        a_row_of_another_holder_keeps_the_lease_until_it_expires,
        a_row_whose_session_ended_is_free_at_once,
        stop_and_destroy_give_the_leases_up,
        a_paused_holder_gives_its_lease_up,
        two_services_of_one_name_on_one_object_never_both_hold, NULL});
    return run_suite(s);
}
