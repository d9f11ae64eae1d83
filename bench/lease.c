/*
 * lease: what a lease costs per run. The same service runs without a
 * lease and with one held in PostgreSQL and in Redis, in alternating
 * blocks; each run's lateness (run_once entered minus scheduled start)
 * then includes the lease's round trip before the run, and the
 * difference to the run without a lease is that cost.
 *
 * The servers are the caller's: LOOPSVC_BENCH_PG (a libpq conninfo) and
 * LOOPSVC_BENCH_REDIS (an address as loopsvc-redis.h takes it). A backend
 * whose variable is unset, or that was not built, is left out.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if HAVE_LOOPSVC_PG
#include "loopsvc-pg.h"
#endif
#if HAVE_LOOPSVC_REDIS
#include "loopsvc-redis.h"
#endif

#define MAX_LEASE_IMPLS 3

const struct impl IMPL_LEASE_PG = { "loopsvc+pg", ours_run, VAR_LEASE_PG };
const struct impl IMPL_LEASE_REDIS = { "loopsvc+redis", ours_run,
                                       VAR_LEASE_REDIS };

/* A namespace of this process's own, so that a bench never waits for a
 * lease that a server or another bench holds. */
static char lease_ns[64];

/* The stalling lease of loopsvc-stalled (drift): always held, but every
 * STALL_EVERY-th answer takes STALL_INTERVALS intervals, as a slow store
 * or a stalled machine would make it; the run then starts that late. */
#define STALL_EVERY 50
#define STALL_INTERVALS 3.5

struct stall {
    uint64_t calls;    /* touched only by the service thread */
    int64_t stall_ns;
};

static int stall_acquire(void *ctx, lsvc *svc, bool *held)
{
    struct stall *st = ctx;

    (void)svc;
    if (++st->calls % STALL_EVERY == 0) {
        struct timespec ts = ns_to_ts(st->stall_ns);
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    *held = true;
    return 0;
}

static const lsvc_lease_ops stall_ops = { .acquire = stall_acquire };

int bench_lease_attach(int variant, lsvc_options *opts, void **lease)
{
    int rc = 0;

    *lease = NULL;
    if (variant & VAR_STALL) {
        struct stall *st = calloc(1, sizeof *st);
        if (st == NULL)
            return ENOMEM;
        st->stall_ns = (int64_t)(STALL_INTERVALS * opts->loop_seconds * 1e9);
        opts->lease = &stall_ops;
        opts->lease_ctx = st;
        *lease = st;
    }
#if HAVE_LOOPSVC_PG
    if (variant & VAR_LEASE_PG) {
        lsvc_pg_lease *l;
        rc = lsvc_pg_lease_create(&l, getenv("LOOPSVC_BENCH_PG"), lease_ns, 0);
        if (rc == 0 && (rc = lsvc_pg_lease_options(l, opts)) == 0)
            *lease = l;
    }
#endif
#if HAVE_LOOPSVC_REDIS
    if (variant & VAR_LEASE_REDIS) {
        lsvc_redis_lease *l;
        rc = lsvc_redis_lease_create(&l, getenv("LOOPSVC_BENCH_REDIS"), lease_ns, 0);
        if (rc == 0 && (rc = lsvc_redis_lease_options(l, opts)) == 0)
            *lease = l;
    }
#endif
    (void)variant;
    (void)opts;
    return rc;
}

void bench_lease_free(int variant, void *lease)
{
    if (lease == NULL)
        return;
    if (variant & VAR_STALL)
        free(lease);
#if HAVE_LOOPSVC_PG
    if (variant & VAR_LEASE_PG)
        lsvc_pg_lease_destroy(lease);
#endif
#if HAVE_LOOPSVC_REDIS
    if (variant & VAR_LEASE_REDIS)
        lsvc_redis_lease_destroy(lease);
#endif
    (void)variant;
}

/* Which backends this run can measure; a message for each left out. */
static size_t lease_impls(const struct bench_opts *o, const struct impl **out)
{
    static const struct {
        const struct impl *impl;
        const char *env;
        bool built;
    } backends[] = {
        { &IMPL_LEASE_PG, "LOOPSVC_BENCH_PG", HAVE_LOOPSVC_PG },
        { &IMPL_LEASE_REDIS, "LOOPSVC_BENCH_REDIS", HAVE_LOOPSVC_REDIS },
    };
    size_t n = 0;

    out[n++] = &IMPL_CONDVAR;
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        const char *why = !backends[i].built ? "not built"
                          : getenv(backends[i].env) == NULL ? "its variable is unset"
                                                            : NULL;
        if (why == NULL)
            out[n++] = backends[i].impl;
        else if (!o->json)
            printf("   %s: left out (%s: %s)\n", backends[i].impl->name,
                   backends[i].env, why);
    }
    return n;
}

int bench_lease(const struct bench_opts *o)
{
    int64_t interval = o->interval_ns ? o->interval_ns : 10 * NS_PER_MS;
    uint64_t loops = opt_loops(o, interval, 1000, 200);
    int blocks = opt_blocks(o, 10, 4, loops);
    const struct impl *impls[MAX_LEASE_IMPLS];
    struct pool pools[MAX_LEASE_IMPLS];
    struct result results[MAX_LEASE_IMPLS];
    long slack[MAX_LEASE_IMPLS] = { 0 };
    int rc = 0;

    snprintf(lease_ns, sizeof lease_ns, "loopsvc-bench-%ld", (long)getpid());
    if (!o->json) {
        char what[160];
        snprintf(what, sizeof what, "lateness of a run with and without a lease, "
                 "%llu runs each in %d alternating blocks",
                 (unsigned long long)loops, blocks);
        print_title("lease", o, interval, what);
    }
    size_t n = lease_impls(o, impls);
    memset(pools, 0, sizeof pools);
    watchdog_arm("lease", 3 * (double)n * (double)loops * (double)interval / 1e9 + 60);

    for (int b = 0; b < blocks && rc == 0; b++) {
        size_t ticks = loops / (uint64_t)blocks + ((uint64_t)b < loops % (uint64_t)blocks);
        struct block_spec spec = spec_from(o, interval, ticks, 1, 0);

        for (size_t i = 0; i < n && rc == 0; i++) {
            struct block_info info;

            if ((rc = run_block(impls[i], &spec, &pools[i], &info)) != 0)
                fprintf(stderr, "loopsvc-bench: lease: %s failed\n", impls[i]->name);
            slack[i] = info.slack_ns;
        }
    }
    for (size_t i = 0; i < n && rc == 0; i++)
        result_from_pool(&results[i], impls[i]->name, 1, slack[i], &pools[i]);
    if (rc == 0 && o->json) {
        json_begin("lease", o, interval, 1);
        json_results(results, n);
        json_end();
    } else if (rc == 0) {
        print_results(results, n, 0);
        print_costs(results, n, "with a lease / without, same run:");
    }
    for (size_t i = 0; i < n; i++)
        pool_free(&pools[i]);
    return rc;
}
