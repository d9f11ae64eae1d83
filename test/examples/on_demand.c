/*
 * An on-demand worker, in the shape of a server's deferred-free thread:
 * its interval is LSVC_NEVER, so it runs only when woken. A producer
 * thread pushes items onto a mutex-protected queue and calls lsvc_wake
 * after each push; each run takes what the queue holds as it begins and
 * processes it. Freeing every hundredth item frees its parent too, which
 * the run pushes onto the same queue, with a wake, as the producer does.
 * An item pushed during a run, by the producer or by the run itself, is
 * not in that run's take: the wake that came with it gives the one more
 * run that takes it.
 *
 * Outcome, checked: every item is processed exactly once, none is lost
 * (those pushed during a run included: every parent is), and the worker
 * never runs without a reason: each run was woken, none came by a timer.
 */
#include "loopsvc.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ITEMS 20000
#define PARENTS (ITEMS / 100)  /* item ITEMS + k is the parent of the
                                * items 100k to 100k + 99 */
#define ALL (ITEMS + PARENTS)

struct queue {
    pthread_mutex_t lock;
    pthread_cond_t drained;  /* broadcast when a run has processed items */
    unsigned items[ALL];     /* pushed, not yet taken */
    unsigned len;
    bool in_run;             /* the worker is between its take and its end */
    unsigned pushed_in_run;  /* items the producer pushed while it was */
    unsigned processed;
    uint64_t runs, empty_runs, unreasoned_runs;
    unsigned char times[ALL]; /* how often each item was processed */
};

static void push(struct queue *q, lsvc *svc, unsigned item)
{
    pthread_mutex_lock(&q->lock);
    q->items[q->len++] = item;
    q->pushed_in_run += q->in_run && item < ITEMS;
    pthread_mutex_unlock(&q->lock);
    lsvc_wake(svc);
}

/* Work on one item: freeing what it stands for, and with the last child of
 * a parent, queueing the parent. */
static volatile unsigned work_done; /* what the work makes: kept */

static void process(struct queue *q, lsvc *svc, unsigned item)
{
    for (int i = 0; i < 2000; i++)
        work_done += (unsigned)i;
    q->times[item]++;
    if (item < ITEMS && item % 100 == 99)
        push(q, svc, ITEMS + item / 100);
}

static int work(lsvc *svc, void *arg)
{
    static unsigned batch[ALL];
    struct queue *q = arg;
    lsvc_run_info info;
    bool woken = lsvc_get_run_info(svc, &info) == 0 &&
                 (info.reasons & LSVC_RUN_WOKEN) &&
                 !(info.reasons & LSVC_RUN_TIMER);

    pthread_mutex_lock(&q->lock);
    unsigned n = q->len;
    memcpy(batch, q->items, n * sizeof(batch[0]));
    q->len = 0;
    q->in_run = true;
    pthread_mutex_unlock(&q->lock);

    for (unsigned i = 0; i < n; i++)
        process(q, svc, batch[i]);

    pthread_mutex_lock(&q->lock);
    q->in_run = false;
    q->processed += n;
    q->runs++;
    q->empty_runs += n == 0;
    q->unreasoned_runs += !woken;
    pthread_cond_broadcast(&q->drained);
    pthread_mutex_unlock(&q->lock);
    return 0;
}

struct producer {
    struct queue *q;
    lsvc *svc;
};

static void *produce(void *arg)
{
    struct producer *p = arg;

    for (unsigned i = 0; i < ITEMS; i++)
        push(p->q, p->svc, i);
    return NULL;
}

int main(void)
{
    static const lsvc_class cls = {
        .name = "deferred-free", .loop_seconds = LSVC_NEVER, .run_once = work,
    };
    static struct queue q;
    lsvc *svc;
    pthread_t producer;

    pthread_mutex_init(&q.lock, NULL);
    pthread_cond_init(&q.drained, NULL);
    lsvc_set_log_level(LSVC_LOG_WARNING);
    if (lsvc_create(&svc, &cls, &q, NULL) != 0 || lsvc_start(svc, 0) != 0)
        return EXIT_FAILURE;
    struct producer p = {&q, svc};
    if (pthread_create(&producer, NULL, produce, &p) != 0)
        return EXIT_FAILURE;
    pthread_join(producer, NULL);

    /* Nothing but the wakes makes it run: wait for them to drain it all,
     * for at most 60 s. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    pthread_mutex_lock(&q.lock);
    while (q.processed < ALL &&
           pthread_cond_timedwait(&q.drained, &q.lock, &until) == 0) {
    }
    pthread_mutex_unlock(&q.lock);

    int stop_rc = lsvc_stop(svc, true);
    unsigned once = 0, twice = 0;
    for (unsigned i = 0; i < ALL; i++) {
        once += q.times[i] == 1;
        twice += q.times[i] > 1;
    }
    lsvc_stats st;
    lsvc_get_stats(svc, &st);
    printf("on_demand: %u items and %u parents pushed with a wake each; %u "
           "processed once, %u more than once, %u never\n",
           ITEMS, PARENTS, once, twice, ALL - once - twice);
    printf("on_demand: %llu runs (%llu woken, %llu found nothing, %llu "
           "without a reason); pushed during a run: %u parents, and %u "
           "items by the producer\n",
           (unsigned long long)q.runs, (unsigned long long)st.wakes,
           (unsigned long long)q.empty_runs,
           (unsigned long long)q.unreasoned_runs, PARENTS, q.pushed_in_run);
    bool ok = stop_rc == 0 && once == ALL && q.unreasoned_runs == 0 &&
              st.wakes == q.runs && q.runs <= ALL;
    lsvc_destroy(svc);
    puts(ok ? "on_demand: outcome held" : "on_demand: OUTCOME FAILED");
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
