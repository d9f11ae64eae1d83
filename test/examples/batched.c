/*
 * A long run in batches, in the shape of a nightly compaction: one run
 * works through 200 batches, looking for a stop with lsvc_should_stop
 * before each and resting 50 ms after each with lsvc_sleep, which a stop
 * (or a pause) ends at once. A stop never interrupts a run, so this is
 * what lets a blocking lsvc_stop from another thread return within about
 * one batch, where the whole run would take 10 s and more.
 *
 * Outcome, checked: the stop, made once three batches are done, returns
 * 0 in under 1 s, and the run ended early, its sleep cancelled.
 */
#include "loopsvc.h"

#include <errno.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BATCHES 200
#define REST_SECONDS 0.05

struct compaction {
    atomic_uint batches;     /* done so far */
    atomic_int last_sleep;   /* what the last lsvc_sleep returned */
    atomic_bool saw_stop;    /* lsvc_should_stop ended the run */
    sem_t three_done;        /* posted once three batches are done */
};

/* CLOCK_MONOTONIC in ms. */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One batch: 5 ms of work, merging a few segments. */
static void compact_batch(void)
{
    int64_t until = mono_ms() + 5;
    volatile unsigned spin = 0;
    while (mono_ms() < until)
        spin++;
}

static int compact(lsvc *svc, void *arg)
{
    struct compaction *c = arg;

    for (unsigned b = 0; b < BATCHES; b++) {
        if (lsvc_should_stop(svc)) {
            atomic_store(&c->saw_stop, true);
            break;
        }
        compact_batch();
        if (atomic_fetch_add(&c->batches, 1) + 1 == 3)
            sem_post(&c->three_done);
        int rc = lsvc_sleep(svc, REST_SECONDS);
        atomic_store(&c->last_sleep, rc);
        if (rc == ECANCELED)
            break;
    }
    return 0;
}

int main(void)
{
    /* Hourly: its stop bound is then an hour, and only the batches make
     * the stop quick. */
    static const lsvc_class cls = {
        .name = "compaction", .loop_seconds = 3600, .run_once = compact,
    };
    static struct compaction c;
    lsvc *svc;

    sem_init(&c.three_done, 0, 0);
    lsvc_set_log_level(LSVC_LOG_WARNING);
    if (lsvc_create(&svc, &cls, &c, NULL) != 0 || lsvc_start(svc, 0) != 0)
        return EXIT_FAILURE;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    if (sem_timedwait(&c.three_done, &until) != 0)
        return EXIT_FAILURE;

    int64_t t0 = mono_ms();
    int rc = lsvc_stop(svc, true);
    double took = (double)(mono_ms() - t0) / 1e3;
    unsigned done = atomic_load(&c.batches);
    int last_sleep = atomic_load(&c.last_sleep);
    printf("batched: stopped after %u of %u batches; lsvc_stop returned %d "
           "in %.0f ms (the whole run: %.0f s or more)\n",
           done, BATCHES, rc, took * 1e3, BATCHES * REST_SECONDS);
    printf("batched: the last lsvc_sleep returned %s; lsvc_should_stop "
           "ended the run: %s\n",
           last_sleep == ECANCELED ? "ECANCELED" : last_sleep == 0 ? "0"
                                                                  : "?",
           atomic_load(&c.saw_stop) ? "yes" : "no");
    bool ok = rc == 0 && took < 1.0 && done < BATCHES &&
              (last_sleep == ECANCELED || atomic_load(&c.saw_stop));
    lsvc_destroy(svc);
    sem_destroy(&c.three_done);
    puts(ok ? "batched: outcome held" : "batched: OUTCOME FAILED");
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
