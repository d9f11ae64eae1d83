/*
 * lease-scale: what leases cost with many services on several replicas.
 *
 * For each store (PostgreSQL, Redis), N services that share their names
 * run on each of three replicas. Replica 1 is a child process, forked
 * before this process made any thread, that starts first and so takes
 * every lease; replicas 2 and 3 are lease objects in this process, whose
 * services find every lease held and skip their runs. Then, over one
 * window:
 *  - the server's connections per replica (PostgreSQL: pg_stat_activity
 *    by application_name, which the bench sets per replica; Redis: CLIENT
 *    LIST, the lease's connections by name, told apart by the replica
 *    process's own sockets);
 *  - round trips per second at the store (PostgreSQL: xact_commit +
 *    xact_rollback of the database; Redis: EVAL calls, and every command,
 *    total_commands_processed), less the bench's own queries; also before
 *    replica 1 starts (what is not this run's), and with replica 1 alone;
 *  - lateness in replica 1 (run start minus due time, lsvc_get_run_info)
 *    of its N leased services next to N services without a lease, all at
 *    once in that process, 2N due points spread over the interval and dealt
 *    to the two sets at random;
 * then kill -9 of replica 1, and for each service the time from the kill
 * to its first run in replica 2 or 3.
 *
 * The two sets of the lateness comparison run at the same time rather
 * than in alternating blocks: a holder that stopped would give its
 * leases up, and one paused would not be the holder at work that this
 * measures; with their due points mixed every change of the machine hits
 * both alike, which is what the A B A B rule of the other benches is for.
 * Dealt at random, not alternately: everything else in a run here is
 * periodic with the same interval (the other replicas' asks, the store's
 * rounds), and a fixed offset between the sets would meet it at
 * different phases.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if HAVE_LOOPSVC_PG
#include "loopsvc-pg.h"
#include <libpq-fe.h>
#endif
#if HAVE_LOOPSVC_REDIS
#include "loopsvc-redis.h"
#include <hiredis.h>
#endif

#define SCALE_SERVICES 1000
#define SCALE_SERVICES_QUICK 100
#define SCALE_WINDOW_LOOPS 20      /* intervals in the window */
#define SCALE_WINDOW_QUICK 3
#define SCALE_STACK (64 * 1024)
#define POLL_STEP_NS (20 * NS_PER_MS)
#define TARGET_LATENESS_RATIO 1.10 /* PostgreSQL: p50 with a lease / without */
#define TARGET_HANDOVER_PG 2.0     /* intervals */
#define LEASE_CLIENT_PREFIX "loopsvc-lease:"

enum { ST_PG, ST_REDIS, NSTORES };

/* A store's time to live at the default timeout, which bounds a handover
 * when the store cannot tell that the holder died. */
#if HAVE_LOOPSVC_PG
#define PG_TTL_NS \
    ((int64_t)(LSVC_PG_LEASE_TTL_TIMEOUTS * LSVC_PG_DEFAULT_TIMEOUT * 1e9))
#else
#define PG_TTL_NS ((int64_t)0)
#endif
#if HAVE_LOOPSVC_REDIS
#define REDIS_TTL_NS \
    ((int64_t)(LSVC_REDIS_LEASE_TTL_TIMEOUTS * LSVC_REDIS_DEFAULT_TIMEOUT * 1e9))
#else
#define REDIS_TTL_NS ((int64_t)0)
#endif

static const struct store_def {
    const char *key, *title, *env, *impl;
    bool built;
} store_defs[NSTORES] = {
    { "pg", "PostgreSQL", "LOOPSVC_BENCH_PG", "loopsvc+pg", HAVE_LOOPSVC_PG },
    { "redis", "Redis", "LOOPSVC_BENCH_REDIS", "loopsvc+redis", HAVE_LOOPSVC_REDIS },
};

static int64_t store_ttl_ns(int store, int64_t interval)
{
    (void)interval;
    return store == ST_PG ? PG_TTL_NS : REDIS_TTL_NS;
}

/* --- what the run is: fixed before the fork, so both sides know it ------ */

struct scale_params {
    size_t n;              /* services per replica */
    int64_t interval_ns;
    uint64_t window_loops; /* intervals in the window */
    pid_t parent;
    char ns[64];           /* the leases' namespace: this run's own */
};

static struct scale_params params;

struct child {
    bool enabled;
    pid_t pid;
    int ctl;               /* commands to the child */
    int res;               /* its answers */
    int64_t *last;         /* shared: each leased service's last start in
                            * replica 1 (CLOCK_MONOTONIC, system-wide) */
};

static struct child children[NSTORES];

static bool store_enabled(int s)
{
    return store_defs[s].built && getenv(store_defs[s].env) != NULL;
}

/* The application_name of replica r (1..3), or of the bench's own
 * session (r = 0). */
static void app_name(char *buf, size_t size, int r)
{
    if (r == 0)
        snprintf(buf, size, "lsvc-bench-%ld-stats", (long)params.parent);
    else
        snprintf(buf, size, "lsvc-bench-%ld-r%d", (long)params.parent, r);
}

/* conninfo with key=value added, as a URI parameter when it is a URI,
 * else as one more keyword (libpq takes the last of a keyword given
 * twice). malloc'd. */
static char *conninfo_with(const char *base, const char *key, const char *value)
{
    bool uri = strncmp(base, "postgresql://", 13) == 0 ||
               strncmp(base, "postgres://", 11) == 0;
    size_t len = strlen(base) + strlen(key) + strlen(value) + 4;
    char *s = malloc(len);

    if (s == NULL)
        return NULL;
    if (uri)
        snprintf(s, len, "%s%c%s=%s", base, strchr(base, '?') ? '&' : '?', key, value);
    else
        snprintf(s, len, "%s %s=%s", base, key, value);
    return s;
}

/* --- pipes between the bench and replica 1 ----------------------------- */

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* 0, ETIMEDOUT, EPIPE at end of file, or an errno value. */
static int read_exact(int fd, void *buf, size_t len, int64_t deadline_ns)
{
    char *p = buf;

    while (len > 0) {
        int64_t left = deadline_ns - now_ns();
        struct pollfd pfd = { .fd = fd, .events = POLLIN };

        if (left <= 0)
            return ETIMEDOUT;
        int ms = left > 1000 * NS_PER_MS ? 1000 : (int)(left / NS_PER_MS) + 1;
        int r = poll(&pfd, 1, ms);
        if (r < 0 && errno != EINTR)
            return errno;
        if (r <= 0)
            continue;
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void sleep_until_ns(int64_t t)
{
    struct timespec ts = ns_to_ts(t);

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* --- lease objects of one replica ------------------------------------- */

struct leases {
    int store;
    size_t count;          /* 1: one object serves every service */
    void **obj;
};

static int leases_make(struct leases *ls, int store, int replica, size_t services)
{
    const char *env = getenv(store_defs[store].env);
    char name[64];
    int rc = 0;

    memset(ls, 0, sizeof *ls);
    ls->store = store;
    (void)services;
    ls->count = 1;
    ls->obj = calloc(ls->count, sizeof *ls->obj);
    if (ls->obj == NULL)
        return ENOMEM;
    app_name(name, sizeof name, replica);
#if HAVE_LOOPSVC_PG
    if (store == ST_PG) {
        char *conninfo = conninfo_with(env, "application_name", name);
        if (conninfo == NULL)
            return ENOMEM;
        for (size_t i = 0; rc == 0 && i < ls->count; i++)
            rc = lsvc_pg_lease_create((lsvc_pg_lease **)&ls->obj[i], conninfo,
                                      params.ns, 0);
        free(conninfo);
    }
#endif
#if HAVE_LOOPSVC_REDIS
    if (store == ST_REDIS)
        for (size_t i = 0; rc == 0 && i < ls->count; i++)
            rc = lsvc_redis_lease_create((lsvc_redis_lease **)&ls->obj[i], env,
                                         params.ns, 0);
#endif
    (void)env;
    return rc;
}

static int leases_attach(struct leases *ls, size_t service, lsvc_options *opts)
{
    void *l = ls->obj[ls->count == 1 ? 0 : service];

#if HAVE_LOOPSVC_PG
    if (ls->store == ST_PG)
        return lsvc_pg_lease_options(l, opts);
#endif
#if HAVE_LOOPSVC_REDIS
    if (ls->store == ST_REDIS)
        return lsvc_redis_lease_options(l, opts);
#endif
    (void)l;
    (void)opts;
    return ENOTSUP;
}

/* Once every service that uses them has ended. */
static void leases_free(struct leases *ls)
{
    for (size_t i = 0; ls->obj != NULL && i < ls->count; i++) {
        int rc = 0;

        if (ls->obj[i] == NULL)
            continue;
#if HAVE_LOOPSVC_PG
        if (ls->store == ST_PG)
            rc = lsvc_pg_lease_destroy(ls->obj[i]);
#endif
#if HAVE_LOOPSVC_REDIS
        if (ls->store == ST_REDIS)
            rc = lsvc_redis_lease_destroy(ls->obj[i]);
#endif
        if (rc != 0)
            fprintf(stderr, "loopsvc-bench: lease-scale: destroying a lease object: %s\n",
                    strerror(rc));
    }
    free(ls->obj);
    ls->obj = NULL;
}

/* --- a replica's services ----------------------------------------------- */

struct svcset {
    size_t n;
    lsvc **svcs;
    lsvc_class *classes;
};

/* n services of class cls named "<name>-<i>", with arg(i), the first run
 * of service i due phase[i] of an interval after its start (phase NULL:
 * i / n), and service i's lease from ls (NULL: none). */
static int svcset_make(struct svcset *set, const struct bench_opts *o, size_t n,
                       const lsvc_class *cls, void *(*arg)(void *, size_t), void *ctx,
                       const double *phase, struct leases *ls)
{
    struct block_spec spec = spec_from(o, params.interval_ns, 0, 1, 0);
    int rc = 0;

    memset(set, 0, sizeof *set);
    set->svcs = calloc(n, sizeof *set->svcs);
    set->classes = classes_numbered(cls, n);
    if (set->svcs == NULL || set->classes == NULL)
        return ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        lsvc_options opts = ours_options(&spec);

        opts.stack_size = SCALE_STACK;
        opts.initial_delay = (phase != NULL ? phase[i] : (double)i / (double)n) *
                             (double)params.interval_ns / 1e9;
        if (ls != NULL)
            rc = leases_attach(ls, i, &opts);
        if (rc == 0)
            rc = lsvc_create(&set->svcs[i], &set->classes[i], arg(ctx, i), &opts);
        if (rc == 0)
            set->n++;
    }
    return rc;
}

static int svcset_start(struct svcset *set)
{
    for (size_t i = 0; i < set->n; i++) {
        int rc = lsvc_start(set->svcs[i], 0);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Stops every service at once (their releases share round trips), then
 * reaps and frees them. */
static void svcset_free(struct svcset *set)
{
    int64_t deadline = now_ns() + 30 * NS_PER_SEC;

    for (size_t i = 0; i < set->n; i++)
        lsvc_stop(set->svcs[i], false);
    for (size_t i = 0; i < set->n; i++) {
        double left = (double)(deadline - now_ns()) / 1e9;
        if (lsvc_join(set->svcs[i], left > 0 ? left : 0) == ETIMEDOUT)
            die("lease-scale: a service did not stop within 30 s; giving up");
        lsvc_destroy(set->svcs[i]);
    }
    free(set->svcs);
    free(set->classes);
    memset(set, 0, sizeof *set);
}

/* --- replica 1: the child process ------------------------------------- */

/* The lateness samples of one service, written by its thread alone. */
struct rec {
    int64_t *late;
    size_t cap;
    _Atomic size_t n;      /* published with release after each sample */
    atomic_ulong dropped;
    _Atomic long slack_ns; /* of its thread, at its first run; -1 before */
    int64_t *shared_last;  /* leased: its last start, for the bench to read */
};

static atomic_bool recording;

static int rec_run_once(lsvc *svc, void *arg)
{
    struct rec *r = arg;
    lsvc_run_info info;

    if (atomic_load_explicit(&r->slack_ns, memory_order_relaxed) < 0)
        atomic_store_explicit(&r->slack_ns, slack_current(), memory_order_relaxed);
    if (lsvc_get_run_info(svc, &info) != 0)
        return 1;
    if (r->shared_last != NULL)
        __atomic_store_n(r->shared_last, ts_to_ns(&info.start), __ATOMIC_RELAXED);
    if (!atomic_load_explicit(&recording, memory_order_relaxed))
        return 0;
    if (info.reasons & LSVC_RUN_FIRST)
        return 0;
    size_t n = atomic_load_explicit(&r->n, memory_order_relaxed);
    if (n >= r->cap) {
        atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
        return 0;
    }
    r->late[n] = ts_to_ns(&info.start) - ts_to_ns(&info.due);
    atomic_store_explicit(&r->n, n + 1, memory_order_release);
    return 0;
}

static const lsvc_class leased_class = { .name = "scale", .run_once = rec_run_once };
static const lsvc_class free_class = { .name = "free", .run_once = rec_run_once };

static void *rec_arg(void *ctx, size_t i)
{
    return &((struct rec *)ctx)[i];
}

/* What replica 1 answers. */
struct held_msg {
    int32_t rc;
    uint32_t held;
    int64_t took_ns;       /* from its start until every lease was held */
};

struct samples_msg {
    uint64_t n[2];         /* samples without a lease, with one */
    uint64_t dropped;
    int64_t slack_ns[2];
    uint64_t not_held;     /* leased services not holding at the end */
    uint64_t skipped;      /* their runs skipped: the lease not held */
    uint64_t changes;      /* their lease changes (N: each gained it once) */
};

static uint64_t held_count(const struct svcset *set)
{
    uint64_t held = 0;

    for (size_t i = 0; i < set->n; i++) {
        lsvc_stats st;
        if (lsvc_get_stats(set->svcs[i], &st) == 0 && st.lease_held)
            held++;
    }
    return held;
}

static int child_send_samples(int res, struct rec *recs[2], const struct svcset *leased,
                              size_t n)
{
    struct samples_msg m;
    int rc;

    memset(&m, 0, sizeof m);
    for (int k = 0; k < 2; k++) {
        m.slack_ns[k] = atomic_load(&recs[k][0].slack_ns);
        for (size_t i = 0; i < n; i++) {
            m.n[k] += atomic_load_explicit(&recs[k][i].n, memory_order_acquire);
            m.dropped += atomic_load(&recs[k][i].dropped);
        }
    }
    for (size_t i = 0; i < leased->n; i++) {
        lsvc_stats st;
        if (lsvc_get_stats(leased->svcs[i], &st) != 0)
            continue;
        m.not_held += !st.lease_held;
        m.skipped += st.skipped_not_leader;
        m.changes += st.lease_changes;
    }
    if ((rc = write_all(res, &m, sizeof m)) != 0)
        return rc;
    /* Each set's samples in service order, as many as counted above: a
     * sample published later is not sent. */
    for (int k = 0; k < 2; k++) {
        uint64_t left = m.n[k];
        for (size_t i = 0; i < n && left > 0; i++) {
            size_t c = atomic_load_explicit(&recs[k][i].n, memory_order_acquire);
            if (c > left)
                c = left;
            if ((rc = write_all(res, recs[k][i].late, c * sizeof(int64_t))) != 0)
                return rc;
            left -= c;
        }
    }
    return 0;
}

/* Replica 1's life: waits for 'g', takes every lease, then records while
 * told to ('r' .. 's'), sends its samples, and waits to be killed. Its
 * leases are never given up: the bench kills it with SIGKILL. */
static int replica1_main(int store, const struct bench_opts *o, int ctl, int res,
                         int64_t *last)
{
    size_t n = params.n;
    char cmd;
    struct held_msg h = { 0 };
    struct leases ls;
    struct svcset leased, unleased;
    struct rec *recs[2];

    if (read_exact(ctl, &cmd, 1, INT64_MAX) != 0 || cmd != 'g')
        return 0;
    ours_logs_quiet();
    size_t cap = (size_t)params.window_loops + 8;
    for (int k = 0; k < 2; k++) {
        recs[k] = calloc(n, sizeof *recs[k]);
        if (recs[k] == NULL)
            return 1;
        for (size_t i = 0; i < n; i++) {
            recs[k][i].cap = cap;
            recs[k][i].late = malloc(cap * sizeof(int64_t));
            recs[k][i].shared_last = k == 1 ? &last[i] : NULL;
            atomic_init(&recs[k][i].slack_ns, -1);
            if (recs[k][i].late == NULL)
                return 1;
        }
    }
    /* 2N due points evenly over the interval, dealt at random to the two
     * sets: each set meets whatever else happens at some phase of the
     * interval (replicas 2 and 3 asking, the store's thread) alike. */
    double *phase = malloc(2 * n * sizeof *phase);
    if (phase == NULL)
        return 1;
    uint64_t rng = UINT64_C(0x9e3779b97f4a7c15);
    for (size_t i = 0; i < 2 * n; i++)
        phase[i] = (double)i / (double)(2 * n);
    for (size_t i = 2 * n - 1; i > 0; i--) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        size_t j = (size_t)(rng % (i + 1));
        double t = phase[i];
        phase[i] = phase[j];
        phase[j] = t;
    }
    int64_t t0 = now_ns();
    h.rc = leases_make(&ls, store, 1, n);
    if (h.rc == 0)
        h.rc = svcset_make(&leased, o, n, &leased_class, rec_arg, recs[1], phase, &ls);
    if (h.rc == 0)
        h.rc = svcset_make(&unleased, o, n, &free_class, rec_arg, recs[0], phase + n, NULL);
    free(phase);
    for (size_t i = 0; h.rc == 0 && i < n; i++)
        if ((h.rc = lsvc_start(leased.svcs[i], 0)) == 0)
            h.rc = lsvc_start(unleased.svcs[i], 0);
    /* The first run of the last service is due an interval after the
     * start, and a take may wait for a connect and a round trip. */
    int64_t deadline = now_ns() + 3 * params.interval_ns + 10 * NS_PER_SEC;
    while (h.rc == 0 && (h.held = (uint32_t)held_count(&leased)) < n && now_ns() < deadline)
        sleep_until_ns(now_ns() + POLL_STEP_NS);
    h.took_ns = now_ns() - t0;
    if (write_all(res, &h, sizeof h) != 0 || h.rc != 0)
        return 1;
    for (;;) {
        if (read_exact(ctl, &cmd, 1, INT64_MAX) != 0)
            return 0;
        if (cmd == 'r')
            atomic_store(&recording, true);
        else if (cmd == 's') {
            atomic_store(&recording, false);
            ours_logs_report(store == ST_PG ? "lease-scale (pg, replica 1)"
                                            : "lease-scale (redis, replica 1)");
            if (child_send_samples(res, recs, &leased, n) != 0)
                return 1;
        }
    }
}

/* --- forking the replicas ---------------------------------------------- */

/* More descriptors: with a lease object per service a replica holds a
 * connection per service. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int lease_scale_fork(const struct bench_opts *o)
{
    params.n = o->services ? (size_t)o->services
                           : o->quick ? SCALE_SERVICES_QUICK : SCALE_SERVICES;
    params.interval_ns = o->interval_ns ? o->interval_ns : NS_PER_SEC;
    params.window_loops = opt_loops(o, params.interval_ns, SCALE_WINDOW_LOOPS,
                                    SCALE_WINDOW_QUICK);
    params.parent = getpid();
    snprintf(params.ns, sizeof params.ns, "loopsvc-bench-scale-%ld", (long)params.parent);
    raise_nofile();
    /* A replica that died must not kill the bench that writes to it. */
    signal(SIGPIPE, SIG_IGN);
    fflush(stdout);
    fflush(stderr);
    for (int s = 0; s < NSTORES; s++) {
        int ctl[2], res[2];

        if (!store_enabled(s))
            continue;
        int64_t *last = mmap(NULL, params.n * sizeof *last, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (last == MAP_FAILED)
            return errno;
        if (pipe2(ctl, O_CLOEXEC) != 0)
            return errno;
        if (pipe2(res, O_CLOEXEC) != 0) {
            close(ctl[0]);
            close(ctl[1]);
            return errno;
        }
        pid_t pid = fork();
        if (pid < 0)
            return errno;
        if (pid == 0) {
            /* The other replicas' pipes are not this one's: their ends
             * here would keep them open after the bench ended. */
            for (int t = 0; t < s; t++)
                if (children[t].enabled) {
                    close(children[t].ctl);
                    close(children[t].res);
                }
            close(ctl[1]);
            close(res[0]);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != params.parent)
                _exit(0);
            _exit(replica1_main(s, o, ctl[0], res[1], last));
        }
        close(ctl[0]);
        close(res[1]);
        children[s] = (struct child){ .enabled = true, .pid = pid, .ctl = ctl[1],
                                      .res = res[0], .last = last };
    }
    return 0;
}

/* --- replicas 2 and 3: this process ---------------------------------- */

/* Who ran each service first after replica 1 was killed, and whether
 * replicas 2 and 3 ever ran one due point both. */
struct standby {
    _Atomic int64_t kill_ns;    /* 0 until the kill */
    _Atomic int *by;            /* per service: 0; -r while replica r claims
                                 * it; r once first[] holds its first run */
    int64_t *first;
    _Atomic int64_t *last[2];   /* per service: its last start in 2, in 3 */
    int64_t close_ns;           /* two starts closer than this: one point */
    atomic_ulong early;         /* runs before the kill */
    atomic_ulong taken;         /* services claimed */
    atomic_ulong moved;         /* services that ran in 2 and in 3 */
    atomic_ulong doubled;       /* runs within close_ns of the other's */
};

struct standby_arg {
    struct standby *sb;
    size_t i;
    int replica;
    bool counted_moved;         /* its thread's alone */
};

static int standby_run_once(lsvc *svc, void *arg)
{
    struct standby_arg *a = arg;
    struct standby *sb = a->sb;
    lsvc_run_info info;

    if (lsvc_get_run_info(svc, &info) != 0)
        return 1;
    int64_t start = ts_to_ns(&info.start), kill_ns = atomic_load(&sb->kill_ns);
    int me = a->replica - 2;
    atomic_store(&sb->last[me][a->i], start);
    int64_t other = atomic_load(&sb->last[!me][a->i]);
    if (other != 0 && (other > start ? other - start : start - other) < sb->close_ns)
        atomic_fetch_add(&sb->doubled, 1);
    if (kill_ns == 0 || start < kill_ns) {
        atomic_fetch_add(&sb->early, 1);
        return 0;
    }
    int expect = 0;
    if (atomic_compare_exchange_strong(&sb->by[a->i], &expect, -a->replica)) {
        sb->first[a->i] = start;
        atomic_store_explicit(&sb->by[a->i], a->replica, memory_order_release);
        atomic_fetch_add(&sb->taken, 1);
    } else if (expect != a->replica && expect != -a->replica && !a->counted_moved) {
        a->counted_moved = true;
        atomic_fetch_add(&sb->moved, 1);
    }
    return 0;
}

static const lsvc_class standby_class = { .name = "scale", .run_once = standby_run_once };

static void *standby_argp(void *ctx, size_t i)
{
    return &((struct standby_arg *)ctx)[i];
}

/* Every service of set has asked for its lease at least once (a run
 * skipped, or made), or the deadline passed. */
static bool all_asked(const struct svcset *set, int64_t deadline)
{
    for (;;) {
        size_t asked = 0;

        for (size_t i = 0; i < set->n; i++) {
            lsvc_stats st;
            if (lsvc_get_stats(set->svcs[i], &st) == 0 &&
                st.skipped_not_leader + st.loops > 0)
                asked++;
        }
        if (asked == set->n)
            return true;
        if (now_ns() >= deadline)
            return false;
        sleep_until_ns(now_ns() + POLL_STEP_NS);
    }
}

static uint64_t skipped_total(const struct svcset *set)
{
    uint64_t n = 0;

    for (size_t i = 0; i < set->n; i++) {
        lsvc_stats st;
        if (lsvc_get_stats(set->svcs[i], &st) == 0)
            n += st.skipped_not_leader;
    }
    return n;
}

/* --- sockets of a process, for the Redis connections --------------- */

struct sock {
    unsigned long inode;
    int lport;
};

static int cmp_inode(const void *a, const void *b)
{
    unsigned long x = ((const struct sock *)a)->inode, y = ((const struct sock *)b)->inode;

    return (x > y) - (x < y);
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;

    return (x > y) - (x < y);
}

/* The local ports of process pid's TCP connections to remote port rport,
 * sorted, into *out (malloc'd); their count, or 0. */
static size_t proc_ports(pid_t pid, int rport, int **out)
{
    static const char *const tables[] = { "/proc/net/tcp", "/proc/net/tcp6" };
    struct sock *socks = NULL;
    size_t nsocks = 0, cap = 0, nports = 0;
    int *ports = NULL;
    char line[512], path[64];

    *out = NULL;
    for (size_t t = 0; t < 2; t++) {
        FILE *f = fopen(tables[t], "r");
        if (f == NULL)
            continue;
        while (fgets(line, sizeof line, f) != NULL) {
            unsigned lport, rp, st;
            unsigned long inode;
            if (sscanf(line, " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%x %x %*s %*s %*s %*s %*s %lu",
                       &lport, &rp, &st, &inode) != 4 || (int)rp != rport || inode == 0)
                continue;
            if (nsocks == cap) {
                cap = cap ? 2 * cap : 256;
                struct sock *bigger = realloc(socks, cap * sizeof *socks);
                if (bigger == NULL)
                    break;
                socks = bigger;
            }
            socks[nsocks++] = (struct sock){ inode, (int)lport };
        }
        fclose(f);
    }
    if (nsocks == 0)
        return 0;
    qsort(socks, nsocks, sizeof *socks, cmp_inode);
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(path);
    struct dirent *de;
    if (d != NULL && (ports = malloc(nsocks * sizeof *ports)) != NULL)
        while ((de = readdir(d)) != NULL && nports < nsocks) {
            char fdpath[320], target[64];
            struct sock key;
            snprintf(fdpath, sizeof fdpath, "%s/%s", path, de->d_name);
            ssize_t len = readlink(fdpath, target, sizeof target - 1);
            if (len <= 0)
                continue;
            target[len] = '\0';
            if (sscanf(target, "socket:[%lu]", &key.inode) != 1)
                continue;
            struct sock *s = bsearch(&key, socks, nsocks, sizeof *socks, cmp_inode);
            if (s != NULL)
                ports[nports++] = s->lport;
        }
    if (d != NULL)
        closedir(d);
    free(socks);
    if (ports != NULL)
        qsort(ports, nports, sizeof *ports, cmp_int);
    *out = ports;
    return nports;
}

static bool has_port(const int *ports, size_t n, int port)
{
    return ports != NULL && bsearch(&port, ports, n, sizeof *ports, cmp_int) != NULL;
}

/* --- the bench's own session with the store ------------------------------ */

struct probe {
    int store;
#if HAVE_LOOPSVC_PG
    PGconn *pg;
#endif
#if HAVE_LOOPSVC_REDIS
    redisContext *redis;
#endif
    bool force_flush;      /* pg_stat_force_next_flush() exists (15 and up) */
    int redis_port;        /* 0 for a Unix socket */
    int *r2_ports;         /* replica 2's connections to Redis */
    size_t r2_nports;
};

#if HAVE_LOOPSVC_REDIS
struct redis_addr {
    char host[256], path[256], password[256];
    int port;
    bool unix_socket;
};

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The forms loopsvc-redis.h takes: host[:port], unix:/path, either as
 * redis://[[user]:password@]... (the password may be %-encoded). */
static int redis_addr_parse(const char *s, struct redis_addr *a)
{
    memset(a, 0, sizeof *a);
    a->port = 6379;
    if (strncmp(s, "redis://", 8) == 0) {
        s += 8;
        const char *at = strrchr(s, '@');
        if (at != NULL) {
            const char *colon = memchr(s, ':', (size_t)(at - s));
            const char *pw = colon != NULL ? colon + 1 : s;
            size_t n = 0;
            for (const char *p = pw; p < at && n + 1 < sizeof a->password; p++) {
                if (*p == '%' && p + 2 < at && hex_digit(p[1]) >= 0 && hex_digit(p[2]) >= 0) {
                    a->password[n++] = (char)(hex_digit(p[1]) * 16 + hex_digit(p[2]));
                    p += 2;
                } else
                    a->password[n++] = *p;
            }
            s = at + 1;
        }
    }
    if (strncmp(s, "unix:", 5) == 0) {
        a->unix_socket = true;
        snprintf(a->path, sizeof a->path, "%s", s + 5);
        return a->path[0] ? 0 : EINVAL;
    }
    const char *end = s + strcspn(s, "/");
    const char *colon = NULL;
    if (*s == '[') {
        const char *close = memchr(s, ']', (size_t)(end - s));
        if (close == NULL)
            return EINVAL;
        snprintf(a->host, sizeof a->host, "%.*s", (int)(close - s - 1), s + 1);
        colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
    } else {
        for (const char *p = s; p < end; p++)
            if (*p == ':')
                colon = p;
        snprintf(a->host, sizeof a->host, "%.*s", (int)((colon ? colon : end) - s), s);
    }
    if (colon != NULL)
        a->port = atoi(colon + 1);
    return a->host[0] && a->port > 0 ? 0 : EINVAL;
}
#endif

static int probe_open(struct probe *p, int store)
{
    char name[64];

    memset(p, 0, sizeof *p);
    p->store = store;
    app_name(name, sizeof name, 0);
#if HAVE_LOOPSVC_PG
    if (store == ST_PG) {
        char *ci = conninfo_with(getenv(store_defs[store].env), "application_name", name);
        if (ci == NULL)
            return ENOMEM;
        p->pg = PQconnectdb(ci);
        free(ci);
        if (PQstatus(p->pg) != CONNECTION_OK) {
            fprintf(stderr, "loopsvc-bench: lease-scale: cannot connect to PostgreSQL: %s",
                    PQerrorMessage(p->pg));
            return EIO;
        }
        p->force_flush = PQserverVersion(p->pg) >= 150000;
        return 0;
    }
#endif
#if HAVE_LOOPSVC_REDIS
    if (store == ST_REDIS) {
        struct redis_addr a;
        struct timeval tv = { .tv_sec = 5 };
        if (redis_addr_parse(getenv(store_defs[store].env), &a) != 0) {
            fprintf(stderr, "loopsvc-bench: lease-scale: cannot parse LOOPSVC_BENCH_REDIS\n");
            return EINVAL;
        }
        p->redis = a.unix_socket ? redisConnectUnixWithTimeout(a.path, tv)
                                 : redisConnectWithTimeout(a.host, a.port, tv);
        p->redis_port = a.unix_socket ? 0 : a.port;
        if (p->redis == NULL || p->redis->err) {
            fprintf(stderr, "loopsvc-bench: lease-scale: cannot connect to Redis: %s\n",
                    p->redis ? p->redis->errstr : "out of memory");
            return EIO;
        }
        redisSetTimeout(p->redis, tv);
        redisReply *r;
        if (a.password[0]) {
            r = redisCommand(p->redis, "AUTH %s", a.password);
            bool ok = r != NULL && r->type != REDIS_REPLY_ERROR;
            freeReplyObject(r);
            if (!ok) {
                fprintf(stderr, "loopsvc-bench: lease-scale: Redis refused AUTH\n");
                return EIO;
            }
        }
        freeReplyObject(redisCommand(p->redis, "CLIENT SETNAME %s", name));
        return 0;
    }
#endif
    (void)name;
    return ENOTSUP;
}

static void probe_close(struct probe *p)
{
#if HAVE_LOOPSVC_PG
    if (p->pg != NULL)
        PQfinish(p->pg);
#endif
#if HAVE_LOOPSVC_REDIS
    if (p->redis != NULL)
        redisFree(p->redis);
#endif
    free(p->r2_ports);
    memset(p, 0, sizeof *p);
}

/* Replica 2's connections, told before replica 3 makes any (Redis). */
static void probe_note_r2(struct probe *p)
{
    if (p->store == ST_REDIS && p->redis_port > 0)
        p->r2_nports = proc_ports(getpid(), p->redis_port, &p->r2_ports);
}

#if HAVE_LOOPSVC_REDIS
/* A field of an INFO reply: "key:value\r\n". */
static bool info_u64(const char *info, const char *key, uint64_t *out)
{
    size_t len = strlen(key);

    for (const char *p = info; (p = strstr(p, key)) != NULL; p += len)
        if ((p == info || p[-1] == '\n') && p[len] == ':') {
            *out = strtoull(p + len + 1, NULL, 10);
            return true;
        }
    return false;
}

/* The calls of a command in INFO commandstats, 0 when absent. */
static uint64_t info_calls(const char *info, const char *cmd)
{
    char key[64];
    const char *p;

    snprintf(key, sizeof key, "\ncmdstat_%s:calls=", cmd);
    p = strstr(info, key);
    return p != NULL ? strtoull(p + strlen(key), NULL, 10) : 0;
}
#endif

/* The store's round trips so far (PostgreSQL: transactions of the
 * database; Redis: EVAL calls) and, for Redis, its commands. Each call
 * is itself one transaction, or one command, counted by the next. */
static int probe_counters(struct probe *p, uint64_t *trips, uint64_t *commands)
{
    *trips = *commands = 0;
#if HAVE_LOOPSVC_PG
    if (p->store == ST_PG) {
        /* A session's counts reach pg_stat_database when it flushes them,
         * at most once a second; this one's own reading is flushed at
         * once, so that the next reading counts it exactly. */
        PGresult *r = PQexec(p->pg, p->force_flush
                                        ? "SELECT xact_commit + xact_rollback,"
                                          " pg_stat_force_next_flush() FROM pg_stat_database"
                                          " WHERE datname = current_database()"
                                        : "SELECT xact_commit + xact_rollback FROM"
                                          " pg_stat_database WHERE datname = current_database()");
        if (p->force_flush && PQresultStatus(r) != PGRES_TUPLES_OK) {
            PQclear(r);
            p->force_flush = false;
            return probe_counters(p, trips, commands);
        }
        int rc = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? 0 : EIO;
        if (rc == 0)
            *trips = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
        else
            fprintf(stderr, "loopsvc-bench: lease-scale: pg_stat_database: %s",
                    PQerrorMessage(p->pg));
        PQclear(r);
        return rc;
    }
#endif
#if HAVE_LOOPSVC_REDIS
    if (p->store == ST_REDIS) {
        redisReply *r = redisCommand(p->redis, "INFO all");
        int rc = r != NULL && r->type == REDIS_REPLY_STRING &&
                 info_u64(r->str, "total_commands_processed", commands) ? 0 : EIO;
        if (rc == 0)
            *trips = info_calls(r->str, "eval") + info_calls(r->str, "evalsha") +
                     info_calls(r->str, "eval_ro") + info_calls(r->str, "evalsha_ro");
        else
            fprintf(stderr, "loopsvc-bench: lease-scale: Redis INFO failed\n");
        freeReplyObject(r);
        return rc;
    }
#endif
    return ENOTSUP;
}

/* Server connections of replicas 1..3 into conns[1..3], -1 where the
 * store cannot tell them apart; conns[0]: the lease's connections of no
 * replica of this run (Redis), or -1. */
static int probe_connections(struct probe *p, pid_t r1, int conns[4])
{
    for (int i = 0; i < 4; i++)
        conns[i] = -1;
#if HAVE_LOOPSVC_PG
    if (p->store == ST_PG) {
        char like[64];
        app_name(like, sizeof like, 0);
        snprintf(strrchr(like, '-'), 4, "-r%%");
        const char *values[1] = { like };
        PGresult *r = PQexecParams(p->pg, "SELECT application_name, count(*) FROM"
                                          " pg_stat_activity WHERE application_name LIKE $1"
                                          " GROUP BY 1", 1, NULL, values, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "loopsvc-bench: lease-scale: pg_stat_activity: %s",
                    PQerrorMessage(p->pg));
            PQclear(r);
            return EIO;
        }
        for (int i = 1; i <= 3; i++)
            conns[i] = 0;
        for (int row = 0; row < PQntuples(r); row++) {
            const char *name = PQgetvalue(r, row, 0);
            int rep = atoi(strrchr(name, 'r') + 1);
            if (rep >= 1 && rep <= 3)
                conns[rep] = atoi(PQgetvalue(r, row, 1));
        }
        PQclear(r);
        return 0;
    }
#endif
#if HAVE_LOOPSVC_REDIS
    if (p->store == ST_REDIS) {
        redisReply *r = redisCommand(p->redis, "CLIENT LIST");
        if (r == NULL || r->type != REDIS_REPLY_STRING) {
            fprintf(stderr, "loopsvc-bench: lease-scale: Redis CLIENT LIST failed\n");
            freeReplyObject(r);
            return EIO;
        }
        int *ports[2] = { NULL, NULL };
        size_t nports[2] = { 0, 0 };
        if (p->redis_port > 0) {
            nports[0] = proc_ports(r1, p->redis_port, &ports[0]);
            nports[1] = proc_ports(getpid(), p->redis_port, &ports[1]);
            for (int i = 0; i < 4; i++)
                conns[i] = 0;
        } else
            conns[0] = 0;
        for (char *line = r->str; line != NULL && *line != '\0';) {
            char *next = strchr(line, '\n');
            if (next != NULL)
                *next++ = '\0';
            char *name = strstr(line, " name=");
            char *addr = strncmp(line, "addr=", 5) == 0 ? line + 5 : strstr(line, " addr=");
            if (addr != NULL && addr != line + 5)
                addr += 6;
            if (name != NULL && strncmp(name + 6, LEASE_CLIENT_PREFIX,
                                        strlen(LEASE_CLIENT_PREFIX)) == 0) {
                char *end = addr != NULL ? strchr(addr, ' ') : NULL;
                int port = -1;
                if (end != NULL) {
                    *end = '\0';
                    char *colon = strrchr(addr, ':');
                    port = colon != NULL ? atoi(colon + 1) : -1;
                }
                if (p->redis_port == 0)
                    conns[0]++;
                else if (has_port(ports[0], nports[0], port))
                    conns[1]++;
                else if (has_port(p->r2_ports, p->r2_nports, port))
                    conns[2]++;
                else if (has_port(ports[1], nports[1], port))
                    conns[3]++;
                else
                    conns[0]++;
            }
            line = next;
        }
        free(ports[0]);
        free(ports[1]);
        freeReplyObject(r);
        return 0;
    }
#endif
    (void)r1;
    return ENOTSUP;
}

/* Removes the leases of this run from the store: their rows, or every
 * key of the namespace, which would otherwise stay forever. */
static void probe_cleanup(struct probe *p, size_t n)
{
#if HAVE_LOOPSVC_PG
    if (p->store == ST_PG) {
        size_t cap = n * 24 + 4, used = 0;
        char *arr = malloc(cap);
        if (arr == NULL)
            return;
        for (size_t i = 0; i < n; i++) {
            char name[32];
            snprintf(name, sizeof name, "%s-%zu", leased_class.name, i);
            used += (size_t)snprintf(arr + used, cap - used, "%c%lld", i ? ',' : '{',
                                     (long long)lsvc_pg_lease_key(params.ns, name));
        }
        snprintf(arr + used, cap - used, "}");
        const char *values[1] = { arr };
        PQclear(PQexecParams(p->pg, "DELETE FROM loopsvc_lease WHERE key = ANY($1::bigint[])",
                             1, NULL, values, NULL, NULL, 0));
        free(arr);
        return;
    }
#endif
#if HAVE_LOOPSVC_REDIS
    /* Every key of the namespace, whatever the lease keeps there (the
     * lease, its token counter, its record of runs). */
    if (p->store == ST_REDIS) {
        char match[128];
        unsigned long long cursor = 0;
        snprintf(match, sizeof match, "loopsvc:*:%s:*", params.ns);
        do {
            redisReply *r = redisCommand(p->redis, "SCAN %llu MATCH %s COUNT 1000", cursor,
                                         match);
            if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
                r->element[0]->type != REDIS_REPLY_STRING) {
                freeReplyObject(r);
                break;
            }
            cursor = strtoull(r->element[0]->str, NULL, 10);
            const redisReply *keys = r->element[1];
            for (size_t i = 0; keys->type == REDIS_REPLY_ARRAY && i < keys->elements; i++)
                freeReplyObject(redisCommand(p->redis, "DEL %s", keys->element[i]->str));
            freeReplyObject(r);
        } while (cursor != 0);
    }
#endif
    (void)n;
}

/* --- one store ------------------------------------------------------- */

struct store_result {
    bool measured;
    uint32_t held;
    int64_t held_ns;
    int conns[4];               /* [0] others (or -1), [1..3] replicas */
    int64_t window_ns;
    /* Per second: over the window; before replica 1 started (the store's
     * other traffic); with replica 1 alone, holding its leases. */
    double trips_per_s, commands_per_s, asks_per_s;
    double base_trips_per_s, base_commands_per_s;
    double r1_trips_per_s, r1_commands_per_s;
    uint64_t early, moved, doubled, taken, taken_by[2];
    int64_t min_gap_ns;         /* replica 1's last start to the first after */
    struct summary handover;
    struct result lat[2];       /* without a lease, with one */
    uint64_t r1_not_held, r1_skipped, r1_changes, dropped;
    bool lat_target_met, handover_met;
    double handover_target;     /* intervals */
};

static void print_window(int s, const struct store_result *r);
static void print_handover(int s, const struct store_result *r);

static int fail(const char *store, const char *what, int rc)
{
    fprintf(stderr, "loopsvc-bench: lease-scale: %s: %s: %s\n", store, what,
            rc == EPIPE ? "replica 1 ended" : strerror(rc));
    return rc ? rc : EIO;
}

static int receive_samples(int fd, const char *impl, struct store_result *out)
{
    struct samples_msg m;
    struct pool pools[2] = { { 0 }, { 0 } };
    int64_t deadline = now_ns() + 30 * NS_PER_SEC;
    int rc = read_exact(fd, &m, sizeof m, deadline);

    for (int k = 0; rc == 0 && k < 2; k++) {
        pools[k].v = malloc((m.n[k] ? m.n[k] : 1) * sizeof(int64_t));
        pools[k].n = pools[k].cap = m.n[k];
        rc = pools[k].v == NULL ? ENOMEM
             : read_exact(fd, pools[k].v, m.n[k] * sizeof(int64_t), deadline);
    }
    if (rc == 0) {
        result_from_pool(&out->lat[0], "loopsvc-condvar", (int)params.n, (long)m.slack_ns[0],
                         &pools[0]);
        result_from_pool(&out->lat[1], impl, (int)params.n, (long)m.slack_ns[1], &pools[1]);
        out->r1_not_held = m.not_held;
        out->r1_skipped = m.skipped;
        out->r1_changes = m.changes;
        out->dropped = m.dropped;
    }
    pool_free(&pools[0]);
    pool_free(&pools[1]);
    return rc;
}

/* The store's round trips and commands per second over `ns` from now,
 * less the bench's own reading. */
static int measure_rate(struct probe *p, int64_t ns, double *trips, double *commands)
{
    uint64_t t0, c0, t1, c1;
    int rc = probe_counters(p, &t0, &c0);
    int64_t start = now_ns();

    if (rc != 0)
        return rc;
    sleep_until_ns(start + ns);
    if ((rc = probe_counters(p, &t1, &c1)) != 0)
        return rc;
    double secs = (double)(now_ns() - start) / 1e9;
    *trips = ((double)t1 - (double)t0 - (p->store == ST_PG)) / secs;
    *commands = ((double)c1 - (double)c0 - 1) / secs;
    return 0;
}

static int run_store(int s, const struct bench_opts *o, struct store_result *out)
{
    const struct store_def *def = &store_defs[s];
    struct child *ch = &children[s];
    size_t n = params.n;
    int64_t interval = params.interval_ns;
    struct held_msg h;
    struct probe probe;
    struct leases ls[2];
    struct svcset sets[2];
    struct standby sb;
    struct standby_arg *args = NULL;
    int rc;

    memset(out, 0, sizeof *out);
    memset(ls, 0, sizeof ls);
    memset(sets, 0, sizeof sets);
    memset(&sb, 0, sizeof sb);
    memset(&probe, 0, sizeof probe);
    probe.store = -1;
    if ((rc = probe_open(&probe, s)) != 0) {
        fail(def->key, "the bench's own session", rc);
        probe.store = -1;
        goto out;
    }
    /* The store's traffic that is not this run's. */
    if ((rc = measure_rate(&probe, (o->quick ? 1 : 2) * NS_PER_SEC, &out->base_trips_per_s,
                           &out->base_commands_per_s)) != 0) {
        fail(def->key, "the store's counters", rc);
        goto out;
    }
    if ((rc = write_all(ch->ctl, "g", 1)) == 0)
        rc = read_exact(ch->res, &h, sizeof h,
                        now_ns() + 6 * params.interval_ns + 60 * NS_PER_SEC);
    if (rc == 0 && h.rc != 0)
        rc = h.rc;
    if (rc != 0) {
        fail(def->key, "replica 1", rc);
        goto out;
    }
    out->held = h.held;
    out->held_ns = h.took_ns;
    /* Two renewal periods (the interval, at most a third of the TTL), for
     * the renewals of leases taken at different times to bunch, and 2 s
     * more: PostgreSQL counts a session's transactions when the session
     * flushes its counts, at most once a second, and the takes must be
     * counted before the window opens, not in it. */
    int64_t period = store_ttl_ns(s, interval) / 3;
    if (period <= 0 || period > interval)
        period = interval;
    sleep_until_ns(now_ns() + 2 * period + 2 * NS_PER_SEC);
    /* Replica 1 alone, holding its leases: its renewals. */
    if ((rc = measure_rate(&probe, (o->quick ? 2 : 5) * interval, &out->r1_trips_per_s,
                           &out->r1_commands_per_s)) != 0) {
        fail(def->key, "the store's counters", rc);
        goto out;
    }

    sb.by = calloc(n, sizeof *sb.by);
    sb.first = calloc(n, sizeof *sb.first);
    sb.last[0] = calloc(n, sizeof *sb.last[0]);
    sb.last[1] = calloc(n, sizeof *sb.last[1]);
    sb.close_ns = interval / 2;
    args = calloc(2 * n, sizeof *args);
    if (sb.by == NULL || sb.first == NULL || sb.last[0] == NULL || sb.last[1] == NULL ||
        args == NULL)
        rc = ENOMEM;
    for (size_t i = 0; rc == 0 && i < 2 * n; i++)
        args[i] = (struct standby_arg){ .sb = &sb, .i = i % n, .replica = 2 + (int)(i / n) };
    /* Replica 2, then 3: each asks for every lease once before the next
     * starts, so that replica 2's connections are known apart. */
    for (int r = 0; rc == 0 && r < 2; r++) {
        if ((rc = leases_make(&ls[r], s, 2 + r, n)) != 0 ||
            (rc = svcset_make(&sets[r], o, n, &standby_class, standby_argp, args + r * n,
                              NULL, &ls[r])) != 0 ||
            (rc = svcset_start(&sets[r])) != 0)
            break;
        if (!all_asked(&sets[r], now_ns() + 3 * interval + 20 * NS_PER_SEC)) {
            fprintf(stderr, "loopsvc-bench: lease-scale: %s: replica %d: not every service "
                    "asked for its lease within 3 intervals and 20 s\n", def->key, 2 + r);
            rc = ETIMEDOUT;
        }
        if (r == 0)
            probe_note_r2(&probe);
    }
    if (rc != 0) {
        fail(def->key, "replicas 2 and 3", rc);
        goto out;
    }

    /* The window. */
    uint64_t trips0, cmds0, trips1, cmds1;
    if ((rc = probe_connections(&probe, ch->pid, out->conns)) != 0 ||
        (rc = write_all(ch->ctl, "r", 1)) != 0 ||
        (rc = probe_counters(&probe, &trips0, &cmds0)) != 0) {
        fail(def->key, "the window", rc);
        goto out;
    }
    uint64_t asks0 = skipped_total(&sets[0]) + skipped_total(&sets[1]);
    int64_t t0 = now_ns();
    sleep_until_ns(t0 + (int64_t)params.window_loops * interval);
    rc = probe_counters(&probe, &trips1, &cmds1);
    int64_t t1 = now_ns();
    uint64_t asks1 = skipped_total(&sets[0]) + skipped_total(&sets[1]);
    if (rc == 0)
        rc = write_all(ch->ctl, "s", 1);
    if (rc == 0)
        rc = receive_samples(ch->res, def->impl, out);
    if (rc != 0) {
        fail(def->key, "the window", rc);
        goto out;
    }
    out->window_ns = t1 - t0;
    double secs = (double)out->window_ns / 1e9;
    /* Less the bench's own: the first reading (a transaction, a command). */
    out->trips_per_s = ((double)trips1 - (double)trips0 - (s == ST_PG)) / secs;
    out->commands_per_s = ((double)cmds1 - (double)cmds0 - 1) / secs;
    out->asks_per_s = (double)(asks1 - asks0) / secs;
    out->lat_target_met = out->lat[0].lat.p50 > 0 &&
                          (double)out->lat[1].lat.p50 <=
                              TARGET_LATENESS_RATIO * (double)out->lat[0].lat.p50;
    if (!o->json) {
        print_window(s, out);
        fflush(stdout);
    }

    /* The handover. */
    int64_t ttl = store_ttl_ns(s, interval);
    atomic_store(&sb.kill_ns, now_ns());
    kill(ch->pid, SIGKILL);
    waitpid(ch->pid, NULL, 0);
    ch->enabled = false;
    int64_t deadline = atomic_load(&sb.kill_ns) + ttl + 4 * interval + 10 * NS_PER_SEC;
    while (atomic_load(&sb.taken) < n && now_ns() < deadline)
        sleep_until_ns(now_ns() + 5 * NS_PER_MS);
    sleep_until_ns(now_ns() + 10 * NS_PER_MS); /* a claim in progress lands */
    int64_t *times = malloc(n * sizeof *times);
    size_t nt = 0;
    out->min_gap_ns = INT64_MAX;
    for (size_t i = 0; times != NULL && i < n; i++) {
        int by = atomic_load_explicit(&sb.by[i], memory_order_acquire);
        if (by > 0) {
            int64_t r1_last = __atomic_load_n(&ch->last[i], __ATOMIC_RELAXED);
            times[nt++] = sb.first[i] - atomic_load(&sb.kill_ns);
            out->taken_by[by - 2]++;
            if (r1_last != 0 && sb.first[i] - r1_last < out->min_gap_ns)
                out->min_gap_ns = sb.first[i] - r1_last;
            out->doubled += r1_last != 0 && sb.first[i] - r1_last < sb.close_ns;
        }
    }
    if (out->min_gap_ns == INT64_MAX)
        out->min_gap_ns = 0;
    summarize(times, nt, &out->handover);
    free(times);
    out->taken = nt;
    out->early = atomic_load(&sb.early);
    out->moved = atomic_load(&sb.moved);
    out->doubled += atomic_load(&sb.doubled);
    out->handover_target = s == ST_PG ? TARGET_HANDOVER_PG
                                      : (double)(ttl + interval) / (double)interval;
    out->handover_met = nt == n &&
                        (double)out->handover.max <= out->handover_target * (double)interval;
    out->measured = true;
    if (!o->json) {
        print_handover(s, out);
        fflush(stdout);
    }

out:
    for (int r = 0; r < 2; r++)
        if (sets[r].svcs != NULL)
            svcset_free(&sets[r]);
    for (int r = 0; r < 2; r++)
        leases_free(&ls[r]);
    if (ch->enabled) {
        kill(ch->pid, SIGKILL);
        waitpid(ch->pid, NULL, 0);
        ch->enabled = false;
    }
    if (probe.store == s)
        probe_cleanup(&probe, n);
    probe_close(&probe);
    free(sb.by);
    free(sb.first);
    free(sb.last[0]);
    free(sb.last[1]);
    free(args);
    return rc;
}

/* --- report ------------------------------------------------------------ */

static double in_intervals(int64_t ns)
{
    return (double)ns / (double)params.interval_ns;
}

static void print_conn(int c)
{
    if (c < 0)
        printf("  n/a");
    else
        printf("  %d", c);
}

/* What the window showed: printed before the handover, whose kill and
 * takes could still end the bench. */
static void print_window(int s, const struct store_result *r)
{
    const struct store_def *def = &store_defs[s];
    int64_t ttl = store_ttl_ns(s, params.interval_ns);

    printf("-- %s (%s): one lease object per replica, TTL %.3g s (%.2f intervals)\n",
           def->title, def->impl, (double)ttl / 1e9, in_intervals(ttl));
    printf("   replica 1 held %u of %zu leases %.2f s after its start\n", r->held, params.n,
           (double)r->held_ns / 1e9);
    printf("   server connections   r1");
    print_conn(r->conns[1]);
    printf("   r2");
    print_conn(r->conns[2]);
    printf("   r3");
    print_conn(r->conns[3]);
    if (s == ST_PG)
        printf("   (pg_stat_activity by application_name)\n");
    else {
        printf("   others");
        print_conn(r->conns[0]);
        printf("   (CLIENT LIST named %s*, by the replicas' sockets)\n", LEASE_CLIENT_PREFIX);
    }
    if (s == ST_PG)
        printf("   round trips at the store (xact_commit + xact_rollback of the database, "
               "less the bench's own), per second:\n"
               "     %10.1f  all 3 replicas, over the window of %.1f s\n"
               "     %10.1f  replica 1 alone, holding its leases, before 2 and 3 started\n"
               "     %10.1f  before replica 1 started (not this run's)\n",
               r->trips_per_s, (double)r->window_ns / 1e9, r->r1_trips_per_s,
               r->base_trips_per_s);
    else
        printf("   round trips at the store (EVAL calls), and commands "
               "(total_commands_processed, with those of the scripts), less the bench's "
               "own, per second:\n"
               "     %10.1f %10.1f  all 3 replicas, over the window of %.1f s\n"
               "     %10.1f %10.1f  replica 1 alone, holding its leases, before 2 and 3 "
               "started\n"
               "     %10.1f %10.1f  before replica 1 started (not this run's)\n",
               r->trips_per_s, r->commands_per_s, (double)r->window_ns / 1e9,
               r->r1_trips_per_s, r->r1_commands_per_s, r->base_trips_per_s,
               r->base_commands_per_s);
    printf("   runs of replicas 2 and 3 skipped, the lease held elsewhere %10.1f/s; "
           "runs there while replica 1 held: %llu\n", r->asks_per_s,
           (unsigned long long)r->early);
    printf("   replica 1 at the end: %llu of its leases not held, %llu runs skipped, "
           "%llu lease changes%s\n", (unsigned long long)r->r1_not_held,
           (unsigned long long)r->r1_skipped, (unsigned long long)r->r1_changes,
           r->dropped ? " (samples dropped: more runs than expected)" : "");
    printf("   lateness in replica 1 (run start - due, lsvc_get_run_info): %zu services "
           "with a lease and %zu without, at once, due points mixed\n",
           params.n, params.n);
    print_results(r->lat, 2, 0);
    print_costs(r->lat, 2, "with a lease / without, same run:");
    if (s == ST_PG)
        printf("   target: p50 <= x%.2f of the services without a lease: %s\n",
               TARGET_LATENESS_RATIO, r->lat_target_met ? "met" : "missed");
}

static void print_handover(int s, const struct store_result *r)
{
    printf("   handover after kill -9 of replica 1: %llu of %zu services ran in replica 2 "
           "(%llu) or 3 (%llu); moved on to the other since: %llu\n"
           "   due points run twice (two replicas' starts of a service < 1/2 interval "
           "apart): %llu\n", (unsigned long long)r->taken, params.n,
           (unsigned long long)r->taken_by[0], (unsigned long long)r->taken_by[1],
           (unsigned long long)r->moved, (unsigned long long)r->doubled);
    printf("   from the kill to the first run there: p50 %.2f intervals (%.1f ms), "
           "max %.2f intervals (%.1f ms)\n", in_intervals(r->handover.p50),
           (double)r->handover.p50 / 1e6, in_intervals(r->handover.max),
           (double)r->handover.max / 1e6);
    printf("   closest first run there to the service's last run in replica 1: %.2f "
           "intervals\n", in_intervals(r->min_gap_ns));
    printf("   target: every service, max <= %.2f intervals%s: %s\n", r->handover_target,
           s == ST_PG ? "" : " (TTL + 1 interval)", r->handover_met ? "met" : "missed");
}

static void json_lat(const struct result *x, const char *store, bool first)
{
    const struct summary *s = &x->lat;

    printf("%s{\"impl\": \"%s\", \"store\": \"%s\", \"services\": %d, \"slack_ns\": %ld, "
           "\"samples\": %zu, \"min_ns\": %lld, \"mean_ns\": %lld, \"p50_ns\": %lld, "
           "\"p90_ns\": %lld, \"p99_ns\": %lld, \"p999_ns\": %lld, \"max_ns\": %lld}",
           first ? "" : ", ", x->impl, store, x->services, x->slack_ns, s->samples,
           (long long)s->min, (long long)s->mean, (long long)s->p50, (long long)s->p90,
           (long long)s->p99, (long long)s->p999, (long long)s->max);
}

static void json_conn(const char *key, int c, bool first)
{
    printf(first ? "\"%s\": " : ", \"%s\": ", key);
    if (c < 0)
        printf("null");
    else
        printf("%d", c);
}

static double ratio_of(int64_t a, int64_t b)
{
    return b > 0 ? (double)a / (double)b : 0.0;
}

static void json_report(const struct bench_opts *o, const struct store_result *res)
{
    bool first = true;

    json_begin("lease-scale", o, params.interval_ns, (int)params.n);
    printf(", \"window_ns\": %lld, \"stack_size\": %d, \"results\": [",
           (long long)params.window_loops * params.interval_ns, SCALE_STACK);
    for (int s = 0; s < NSTORES; s++)
        for (int k = 0; res[s].measured && k < 2; k++) {
            json_lat(&res[s].lat[k], store_defs[s].key, first);
            first = false;
        }
    printf("], \"ratios\": {");
    first = true;
    for (int s = 0; s < NSTORES; s++) {
        const struct store_result *r = &res[s];
        if (!r->measured)
            continue;
        printf("%s\"%s\": {\"p50\": %.4f, \"p99\": %.4f}", first ? "" : ", ", store_defs[s].impl,
               ratio_of(r->lat[1].lat.p50, r->lat[0].lat.p50),
               ratio_of(r->lat[1].lat.p99, r->lat[0].lat.p99));
        first = false;
    }
    printf("}, \"stores\": {");
    first = true;
    for (int s = 0; s < NSTORES; s++) {
        const struct store_result *r = &res[s];
        if (!r->measured)
            continue;
        int64_t ttl = store_ttl_ns(s, params.interval_ns);
        printf("%s\"%s\": {\"impl\": \"%s\", \"lease_objects_per_replica\": %zu, "
               "\"ttl_ns\": %lld, \"held\": %u, \"held_after_ns\": %lld, \"connections\": {",
               first ? "" : ", ", store_defs[s].key, store_defs[s].impl,
               (size_t)1, (long long)ttl, r->held,
               (long long)r->held_ns);
        json_conn("r1", r->conns[1], true);
        json_conn("r2", r->conns[2], false);
        json_conn("r3", r->conns[3], false);
        printf("}, ");
        json_conn("connections_other", r->conns[0], true);
        printf(", \"window_ns\": %lld, \"round_trips_per_s\": %.1f", (long long)r->window_ns,
               r->trips_per_s);
        printf(", \"round_trips_per_s_replica1_alone\": %.1f, "
               "\"round_trips_per_s_before\": %.1f", r->r1_trips_per_s, r->base_trips_per_s);
        if (s == ST_REDIS)
            printf(", \"commands_per_s\": %.1f, \"commands_per_s_replica1_alone\": %.1f, "
                   "\"commands_per_s_before\": %.1f", r->commands_per_s,
                   r->r1_commands_per_s, r->base_commands_per_s);
        printf(", \"standby_skips_per_s\": %.1f, \"runs_elsewhere\": %llu, "
               "\"replica1\": {\"not_held\": %llu, \"skipped\": %llu, \"lease_changes\": %llu}",
               r->asks_per_s, (unsigned long long)r->early,
               (unsigned long long)r->r1_not_held, (unsigned long long)r->r1_skipped,
               (unsigned long long)r->r1_changes);
        if (s == ST_PG)
            printf(", \"lateness_target_p50_ratio\": %.2f, \"lateness_target_met\": %s",
                   TARGET_LATENESS_RATIO, r->lat_target_met ? "true" : "false");
        printf(", \"handover\": {\"services\": %zu, \"taken\": %llu, \"by_r2\": %llu, "
               "\"by_r3\": %llu, \"moved\": %llu, \"double_runs\": %llu, "
               "\"min_gap_from_r1_ns\": %lld, "
               "\"p50_ns\": %lld, \"max_ns\": %lld, "
               "\"p50_intervals\": %.3f, \"max_intervals\": %.3f, \"target_intervals\": %.2f, "
               "\"target_met\": %s}}",
               params.n, (unsigned long long)r->taken, (unsigned long long)r->taken_by[0],
               (unsigned long long)r->taken_by[1], (unsigned long long)r->moved,
               (unsigned long long)r->doubled, (long long)r->min_gap_ns,
               (long long)r->handover.p50, (long long)r->handover.max,
               in_intervals(r->handover.p50), in_intervals(r->handover.max),
               r->handover_target, r->handover_met ? "true" : "false");
        first = false;
    }
    printf("}");
    json_end();
}

int bench_lease_scale(const struct bench_opts *o)
{
    struct store_result res[NSTORES];
    size_t enabled = 0;
    int rc = 0;

    memset(res, 0, sizeof res);
    for (int s = 0; s < NSTORES; s++)
        enabled += children[s].enabled;
    if (!o->json) {
        char what[200];
        snprintf(what, sizeof what, "%zu services on each of 3 replicas per store: "
                 "connections, round trips, lateness and handover", params.n);
        print_title("lease-scale", o, params.interval_ns, what);
        printf("   replica 1 is a child process and takes the leases first; replicas 2 and 3 "
               "are lease objects in this process\n");
        printf("   first runs spread evenly over the interval (replica 1: 2N points dealt at "
               "random to its two sets); stacks of %d KiB; window %llu intervals\n",
               SCALE_STACK / 1024, (unsigned long long)params.window_loops);
        for (int s = 0; s < NSTORES; s++)
            if (!children[s].enabled)
                printf("   %s: left out (%s: %s)\n", store_defs[s].impl, store_defs[s].env,
                       !store_defs[s].built ? "not built" : "its variable is unset");
        fflush(stdout);
    }
    if (enabled == 0) {
        fprintf(stderr, "loopsvc-bench: lease-scale: nothing to measure: set "
                "LOOPSVC_BENCH_PG and/or LOOPSVC_BENCH_REDIS\n");
        return 2;
    }
    /* Generous: three times each store's nominal time, and its bounded
     * waits (a take, a handover past the TTL, stops) on top. */
    double budget = 60, interval_s = (double)params.interval_ns / 1e9;
    for (int s = 0; s < NSTORES; s++)
        if (children[s].enabled)
            budget += 150 + 3 * ((double)params.window_loops + 12) * interval_s +
                      (double)store_ttl_ns(s, params.interval_ns) / 1e9;
    watchdog_arm("lease-scale", budget);
    if (!o->json && isatty(STDERR_FILENO)) {
        double about = 0;
        for (int s = 0; s < NSTORES; s++)
            if (children[s].enabled)
                about += (double)((int64_t)(params.window_loops + 12) * params.interval_ns +
                                  (s == ST_REDIS ? store_ttl_ns(s, params.interval_ns) : 0)) /
                             1e9 + 5;
        fprintf(stderr, "lease-scale: about %.0f s\n", about);
    }
    for (int s = 0; s < NSTORES; s++) {
        if (!children[s].enabled)
            continue;
        if (run_store(s, o, &res[s]) != 0)
            rc = 1;
        fflush(stdout);
        ours_logs_report(s == ST_PG ? "lease-scale (pg)" : "lease-scale (redis)");
    }
    if (o->json)
        json_report(o, res);
    return rc;
}
