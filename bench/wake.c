/*
 * wake: how long a wake takes to reach run_once.
 *
 * One service of LSVC_NEVER sleeps until woken. After its last run and a
 * random 0..2 ms, the bench reads the clock and calls lsvc_wake(svc); the
 * sample is the time run_once is entered minus that reading. The
 * baseline, raw-cond-signal, is how a hand-written on-demand thread is
 * woken: a thread in pthread_cond_timedwait on CLOCK_MONOTONIC, signalled
 * by another under the mutex after it set a flag. Both run in
 * alternating blocks (A B A B), with the same priority, affinity and
 * slack.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define WAKE_BLOCKS 10

/* The clock reading before a wake, and the service's answer to it. */
struct wake_arg {
    _Atomic int64_t woken_at;
    _Atomic int64_t entered;
    _Atomic long slack_ns;
    struct latch ran;
};

static int wake_run_once(lsvc *svc, void *arg)
{
    struct wake_arg *a = arg;

    (void)svc;
    atomic_store(&a->entered, now_ns());
    a->slack_ns = slack_current();
    latch_add(&a->ran);
    return 0;
}

static const lsvc_class wake_class = {
    .name = "wakebench",
    .loop_seconds = LSVC_NEVER,
    .run_once = wake_run_once,
};

/* A random 0..2 ms, so that the sleeper is asleep and no phase repeats. */
static void pause_a_little(uint64_t *rng)
{
    struct timespec d = random_delay(rng);

    nanosleep(&d, NULL);
}

static int ours_samples(const struct block_spec *spec, size_t n,
                        struct pool *out, long *slack, uint64_t *rng)
{
    lsvc_options opts = ours_options(spec);
    struct wake_arg a;
    lsvc *svc;
    int rc;

    memset(&a, 0, sizeof a);
    latch_init(&a.ran);
    opts.loop_seconds = LSVC_NEVER;
    if ((rc = lsvc_create(&svc, &wake_class, &a, &opts)) != 0 ||
        (rc = lsvc_start(svc, 0)) != 0) {
        latch_destroy(&a.ran);
        return rc;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        pause_a_little(rng);
        int64_t t0 = now_ns();
        lsvc_wake(svc);
        rc = latch_wait(&a.ran, i + 1, now_ns() + 10 * NS_PER_SEC);
        int64_t took = atomic_load(&a.entered) - t0;
        if (rc == 0)
            rc = pool_add(out, &took, 1);
    }
    *slack = a.slack_ns;
    lsvc_stop(svc, true);
    lsvc_destroy(svc);
    latch_destroy(&a.ran);
    return rc;
}

/* The baseline's waiting thread. */
struct raw_waiter {
    pthread_mutex_t lock; /* protects every field below */
    pthread_cond_t cond;
    bool wanted, quit;
    int64_t entered;
    long slack_ns;
    struct latch ran;
};

static void *raw_waiter_main(void *arg)
{
    struct raw_waiter *w = arg;
    struct timespec far = ns_to_ts(now_ns() + 3600 * NS_PER_SEC);

    pthread_mutex_lock(&w->lock);
    w->slack_ns = slack_current();
    while (!w->quit) {
        if (!w->wanted) {
            pthread_cond_timedwait(&w->cond, &w->lock, &far);
            continue;
        }
        w->wanted = false;
        w->entered = now_ns();
        latch_add(&w->ran);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static int raw_samples(const struct block_spec *spec, size_t n,
                       struct pool *out, long *slack, uint64_t *rng)
{
    struct raw_waiter w = { .wanted = false, .quit = false };
    pthread_condattr_t ca;
    pthread_t t;
    int rc;

    pthread_mutex_init(&w.lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cond, &ca);
    pthread_condattr_destroy(&ca);
    latch_init(&w.ran);
    rc = thread_spawn(&t, spec, raw_waiter_main, &w);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        pause_a_little(rng);
        int64_t t0 = now_ns();
        pthread_mutex_lock(&w.lock);
        w.wanted = true;
        pthread_cond_signal(&w.cond);
        pthread_mutex_unlock(&w.lock);
        rc = latch_wait(&w.ran, i + 1, now_ns() + 10 * NS_PER_SEC);
        pthread_mutex_lock(&w.lock);
        int64_t took = w.entered - t0;
        pthread_mutex_unlock(&w.lock);
        if (rc == 0)
            rc = pool_add(out, &took, 1);
    }
    if (rc == 0 || rc == ETIMEDOUT) {
        pthread_mutex_lock(&w.lock);
        w.quit = true;
        *slack = w.slack_ns;
        pthread_cond_signal(&w.cond);
        pthread_mutex_unlock(&w.lock);
        pthread_join(t, NULL);
    }
    latch_destroy(&w.ran);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
    return rc;
}

int bench_wake(const struct bench_opts *o)
{
    size_t samples = o->loops ? o->loops : o->quick ? 200 : 2000;
    struct block_spec spec = spec_from(o, NS_PER_SEC, 0, 1, 0);
    struct pool pool = { 0 }, raw_pool = { 0 };
    uint64_t rng = (uint64_t)now_ns() | 1;
    long slack = 0, raw_slack = 0;
    struct result res[2];
    int rc = 0;

    watchdog_arm("wake", (double)samples * 0.01 + 60);
    for (size_t b = 0; rc == 0 && b < WAKE_BLOCKS; b++) {
        size_t n = samples / WAKE_BLOCKS + (b < samples % WAKE_BLOCKS);

        rc = ours_samples(&spec, n, &pool, &slack, &rng);
        if (rc == 0)
            rc = raw_samples(&spec, n, &raw_pool, &raw_slack, &rng);
    }
    if (rc != 0) {
        fprintf(stderr, "loopsvc-bench: wake: %s\n", strerror(rc));
        pool_free(&pool);
        pool_free(&raw_pool);
        return 1;
    }
    result_from_pool(&res[0], IMPL_CONDVAR.name, 1, slack, &pool);
    result_from_pool(&res[1], "raw-cond-signal", 1, raw_slack, &raw_pool);
    pool_free(&pool);
    pool_free(&raw_pool);
    if (o->json) {
        json_begin("wake", o, 0, 1);
        json_results(res, 2);
        printf(", \"ratios\": {\"%s\": {\"p50\": %.4f, \"p99\": %.4f}}",
               res[0].impl, (double)res[0].lat.p50 / (double)res[1].lat.p50,
               (double)res[0].lat.p99 / (double)res[1].lat.p99);
        json_end();
        return 0;
    }
    print_title("wake", o, 0, "lsvc_wake(svc) on a sleeping LSVC_NEVER "
                "service, after a random 0..2 ms; lateness columns are the "
                "time from the call to run_once");
    print_results(res, 2, 0);
    printf("   ours / raw-cond-signal, same run: p50 x%.2f  p99 x%.2f\n",
           (double)res[0].lat.p50 / (double)res[1].lat.p50,
           (double)res[0].lat.p99 / (double)res[1].lat.p99);
    return 0;
}
