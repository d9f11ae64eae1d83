/*
 * An adaptive maintainer, in the shape of a cache's LRU maintainer thread:
 * each pass does the work it finds, at most a batch, and picks its own
 * next delay with lsvc_next_run_in: 1 ms while it finds work, doubling up
 * to 1 s while it finds none. A producer thread adds work a few times and
 * wakes it with lsvc_wake, so that new work does not wait out the
 * back-off.
 *
 * Outcome, checked: every item is done; each burst of work is picked up
 * well within the 1 s back-off it arrives in (under 0.5 s); and idle, once
 * backed off, the maintainer wakes at most twice a second over 5 s,
 * counted in runs.
 */
#include "loopsvc.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BURSTS 4
#define BURST_ITEMS 200
#define BATCH 16             /* items per pass at most */
#define MIN_DELAY 0.001
#define MAX_DELAY 1.0
#define IDLE_SECONDS 5.0

struct cache {
    pthread_mutex_t lock;
    pthread_cond_t changed;  /* broadcast at the end of every pass */
    unsigned pending, done;
    double pushed_at;        /* when the pending work arrived; 0: none */
    double max_pickup;       /* longest wait of a burst for its first pass */
    double delay;            /* the maintainer's current back-off */
    uint64_t passes, busy_passes;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int maintain(lsvc *svc, void *arg)
{
    struct cache *c = arg;

    pthread_mutex_lock(&c->lock);
    unsigned take = c->pending < BATCH ? c->pending : BATCH;
    if (take > 0 && c->pushed_at > 0) {
        double waited = now_s() - c->pushed_at;
        if (waited > c->max_pickup)
            c->max_pickup = waited;
        c->pushed_at = 0;
    }
    c->pending -= take;
    c->done += take; /* the work itself: evicting `take` entries */
    c->passes++;
    c->busy_passes += take > 0;
    c->delay = take > 0 ? MIN_DELAY
               : c->delay * 2 < MAX_DELAY ? c->delay * 2 : MAX_DELAY;
    double delay = c->delay;
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
    return lsvc_next_run_in(svc, delay);
}

/* Waits until the maintainer has drained the work and backed off fully. */
static void wait_backed_off(struct cache *c)
{
    pthread_mutex_lock(&c->lock);
    while (c->pending > 0 || c->delay < MAX_DELAY)
        pthread_cond_wait(&c->changed, &c->lock);
    pthread_mutex_unlock(&c->lock);
}

struct producer {
    struct cache *cache;
    lsvc *svc;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    struct cache *c = p->cache;

    for (int b = 0; b < BURSTS; b++) {
        wait_backed_off(c);
        pthread_mutex_lock(&c->lock);
        c->pending += BURST_ITEMS;
        c->pushed_at = now_s();
        pthread_mutex_unlock(&c->lock);
        lsvc_wake(p->svc);
    }
    return NULL;
}

int main(void)
{
    static const lsvc_class cls = {
        .name = "lru-maintainer", .loop_seconds = MAX_DELAY,
        .run_once = maintain,
    };
    struct cache c = {.delay = MIN_DELAY};
    lsvc *svc;
    pthread_t producer;

    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.changed, NULL);
    lsvc_set_log_level(LSVC_LOG_WARNING);
    if (lsvc_create(&svc, &cls, &c, NULL) != 0 || lsvc_start(svc, 0) != 0)
        return EXIT_FAILURE;
    struct producer p = {&c, svc};
    if (pthread_create(&producer, NULL, produce, &p) != 0)
        return EXIT_FAILURE;
    pthread_join(producer, NULL);

    /* Idle from here: count the maintainer's wake-ups over 5 s. */
    wait_backed_off(&c);
    pthread_mutex_lock(&c.lock);
    uint64_t before = c.passes;
    pthread_mutex_unlock(&c.lock);
    struct timespec idle = {(time_t)IDLE_SECONDS, 0};
    while (nanosleep(&idle, &idle) != 0) {
    }
    pthread_mutex_lock(&c.lock);
    uint64_t idle_passes = c.passes - before;
    pthread_mutex_unlock(&c.lock);

    int stop_rc = lsvc_stop(svc, true);
    lsvc_stats st;
    lsvc_get_stats(svc, &st);
    printf("adaptive: %u of %u items done in %llu passes (%llu with work), "
           "%llu of them woken\n",
           c.done, BURSTS * BURST_ITEMS, (unsigned long long)c.passes,
           (unsigned long long)c.busy_passes, (unsigned long long)st.wakes);
    printf("adaptive: longest wait of a burst for its first pass %.1f ms "
           "(back-off 1 s); %llu wake-ups in %.0f s idle (at most %.0f)\n",
           c.max_pickup * 1e3, (unsigned long long)idle_passes, IDLE_SECONDS,
           2 * IDLE_SECONDS);
    bool ok = stop_rc == 0 && c.done == BURSTS * BURST_ITEMS &&
              c.max_pickup < 0.5 && idle_passes <= 2 * IDLE_SECONDS &&
              idle_passes >= 1;
    lsvc_destroy(svc);
    puts(ok ? "adaptive: outcome held" : "adaptive: OUTCOME FAILED");
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
