/*
 * stop: how long a stop takes.
 *
 * One service sleeps on an hour-long interval; after its first run and a
 * random 0..2 ms, lsvc_stop(svc, true) is timed from call to return. Then
 * groups of N services (groups.c) are started (timed: lsvc_group_start)
 * and stopped the way a server is, with SIGTERM to the process, timed
 * until lsvc_group_wait returns. The watchdog bounds the hour-long stop
 * bound.
 *
 * The baseline, raw-wake-join, is the least any bounded stop of a sleeping
 * thread can cost: a plain thread in a timed condvar wait, woken by a flag
 * and a signal, then joined. Both run in alternating blocks.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIZES 4
#define SLEEP_SECONDS 3600.0

/* What a stop-bench service tells the bench: that it ran, and the slack
 * its thread got. */
struct stop_arg {
    struct latch ran;
    _Atomic long slack_ns;
};

static int stop_run_once(lsvc *svc, void *arg)
{
    struct stop_arg *a = arg;

    (void)svc;
    a->slack_ns = slack_current();
    latch_add(&a->ran);
    return 0;
}

static const lsvc_class stop_class = {
    .name = "stopbench",
    .loop_seconds = SLEEP_SECONDS,
    .run_once = stop_run_once,
};

/* Waits until `ran` has counted `runs` runs. */
static int wait_runs(struct latch *ran, size_t runs)
{
    return latch_wait(ran, runs, now_ns() + 10 * NS_PER_SEC);
}

static int stop_samples(const struct block_spec *spec, size_t samples, struct pool *out,
                        long *slack_ns, uint64_t *rng)
{
    lsvc_options opts = ours_options(spec);
    struct stop_arg arg = { .slack_ns = 0 };
    lsvc *svc;
    int rc;

    latch_init(&arg.ran);
    if ((rc = lsvc_create(&svc, &stop_class, &arg, &opts)) != 0) {
        latch_destroy(&arg.ran);
        return rc;
    }
    for (size_t i = 0; rc == 0 && i < samples; i++) {
        struct timespec delay = random_delay(rng);

        if ((rc = lsvc_start(svc, 0)) != 0 || (rc = wait_runs(&arg.ran, i + 1)) != 0)
            break;
        nanosleep(&delay, NULL);
        int64_t t0 = now_ns();
        rc = lsvc_stop(svc, true);
        int64_t took = now_ns() - t0;
        if (rc == 0)
            rc = pool_add(out, &took, 1);
    }
    if (rc != 0) {
        fprintf(stderr, "loopsvc-bench: stop: %s\n", strerror(rc));
        lsvc_stop_timeout(svc, 5.0);
    }
    *slack_ns = arg.slack_ns;
    lsvc_destroy(svc);
    latch_destroy(&arg.ran);
    return rc;
}

struct raw_sleeper {
    pthread_mutex_t lock; /* protects stop */
    pthread_cond_t cond;  /* CLOCK_MONOTONIC */
    bool stop;
    struct latch ready;
};

static void *raw_sleeper_main(void *arg)
{
    struct raw_sleeper *r = arg;
    struct timespec far = ns_to_ts(now_ns() + (int64_t)(SLEEP_SECONDS * 1e9));

    pthread_mutex_lock(&r->lock);
    latch_add(&r->ready);
    while (!r->stop)
        if (pthread_cond_timedwait(&r->cond, &r->lock, &far) != 0)
            break;
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static int raw_samples(size_t samples, struct pool *out, uint64_t *rng)
{
    struct raw_sleeper r = { .stop = false };
    pthread_condattr_t ca;
    int rc = 0;

    pthread_mutex_init(&r.lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r.cond, &ca);
    pthread_condattr_destroy(&ca);
    latch_init(&r.ready);
    for (size_t i = 0; rc == 0 && i < samples; i++) {
        struct timespec delay = random_delay(rng);
        pthread_t t;

        r.stop = false;
        if ((rc = pthread_create(&t, NULL, raw_sleeper_main, &r)) != 0 ||
            (rc = latch_wait(&r.ready, i + 1, now_ns() + 10 * NS_PER_SEC)) != 0)
            break;
        nanosleep(&delay, NULL);
        int64_t t0 = now_ns();
        pthread_mutex_lock(&r.lock);
        r.stop = true;
        pthread_cond_signal(&r.cond);
        pthread_mutex_unlock(&r.lock);
        pthread_join(t, NULL);
        int64_t took = now_ns() - t0;
        rc = pool_add(out, &took, 1);
    }
    latch_destroy(&r.ready);
    pthread_cond_destroy(&r.cond);
    pthread_mutex_destroy(&r.lock);
    return rc;
}

int bench_stop(const struct bench_opts *o)
{
    /* Precise mode notices a stop only every 100 ms: measured only when
     * asked for, and with fewer samples. */
    int variant = o->modes == MODE_PRECISE ? VAR_PRECISE : 0;
    const char *impl = variant ? IMPL_PRECISE.name : IMPL_CONDVAR.name;
    size_t samples = o->loops ? o->loops : variant ? (o->quick ? 20 : 100)
                                                   : (o->quick ? 200 : 1000);
    int64_t interval = (int64_t)(SLEEP_SECONDS * 1e9);
    struct block_spec spec = spec_from(o, interval, 0, 1, variant);
    size_t sizes[MAX_SIZES] = { 1, 10, 100, 1000 }, nsizes = MAX_SIZES;
    int reps = o->quick ? 3 : 5;
    int64_t start[MAX_SIZES], stop[MAX_SIZES], stop_max[MAX_SIZES];
    struct pool pool = { 0 }, raw_pool = { 0 };
    struct result res[2];
    long slack = 0;
    int rc = 0;

    if (o->services > 0) {
        sizes[0] = (size_t)o->services;
        nsizes = 1;
    }
    watchdog_arm("stop", (double)samples * (variant ? 0.3 : 0.01) + 120);
    /* A B A B, so that machine drift hits both alike. */
    uint64_t rng = (uint64_t)now_ns() | 1;
    size_t blocks = samples >= 100 ? 10 : 1;
    for (size_t b = 0; rc == 0 && b < blocks; b++) {
        size_t n = samples / blocks + (b < samples % blocks);

        rc = stop_samples(&spec, n, &pool, &slack, &rng);
        if (rc == 0)
            rc = raw_samples(n, &raw_pool, &rng);
    }
    if (rc != 0) {
        pool_free(&pool);
        pool_free(&raw_pool);
        return 1;
    }
    result_from_pool(&res[0], impl, 1, slack, &pool);
    result_from_pool(&res[1], "raw-wake-join", 1, slack_current(), &raw_pool);
    pool_free(&pool);
    pool_free(&raw_pool);

    lsvc_options group_opts = ours_options(&spec);
    for (size_t i = 0; rc == 0 && i < nsizes; i++) {
        int64_t st[8], sp[8];

        for (int r = 0; rc == 0 && r < reps; r++)
            rc = ours_group_once(sizes[i], &group_opts, &st[r], &sp[r]);
        if (rc != 0) {
            fprintf(stderr, "loopsvc-bench: stop: group of %zu: %s\n", sizes[i],
                    strerror(rc));
            return 1;
        }
        start[i] = median(st, (size_t)reps);
        stop[i] = median(sp, (size_t)reps);
        stop_max[i] = sp[reps - 1]; /* median() sorted them */
    }

    if (o->json) {
        json_begin("stop", o, interval, 1);
        json_results(res, 2);
        printf(", \"ratios\": {\"%s\": {\"p50\": %.4f, \"p99\": %.4f}}"
               ", \"stop_p50_ns\": %lld, \"stop_p99_ns\": %lld",
               impl, (double)res[0].lat.p50 / (double)res[1].lat.p50,
               (double)res[0].lat.p99 / (double)res[1].lat.p99,
               (long long)res[0].lat.p50, (long long)res[0].lat.p99);
        const char *keys[] = { "group_stop_ns", "start_ns" };
        int64_t *vals[] = { stop, start };
        for (int k = 0; k < 2; k++) {
            printf(", \"%s\": {", keys[k]);
            for (size_t i = 0; i < nsizes; i++)
                printf("%s\"%zu\": %lld", i ? ", " : "", sizes[i], (long long)vals[k][i]);
            putchar('}');
        }
        printf(", \"group_reps\": %d", reps);
        json_end();
        return 0;
    }
    print_title("stop", o, interval, "lsvc_stop(svc, true) on a sleeping service, "
                "after a random 0..2 ms; lateness columns are the stop's duration");
    print_results(res, 2, 0);
    printf("   ours / raw-wake-join, same run: p50 x%.2f  p99 x%.2f\n",
           (double)res[0].lat.p50 / (double)res[1].lat.p50,
           (double)res[0].lat.p99 / (double)res[1].lat.p99);
    printf("   groups: lsvc_group_start, then kill(getpid(), SIGTERM) until "
           "lsvc_group_wait returns (median of %d)\n", reps);
    printf("   %8s %12s %12s %14s\n", "services", "start ms", "stop ms", "slowest stop ms");
    for (size_t i = 0; i < nsizes; i++)
        printf("   %8zu %12.2f %12.2f %14.2f\n", sizes[i], (double)start[i] / 1e6,
               (double)stop[i] / 1e6, (double)stop_max[i] / 1e6);
    return 0;
}
