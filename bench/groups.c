/*
 * Groups of idle threads, started and stopped the way a server is.
 *
 * Ours is one lsvc_group of N services; raw is N plain threads, each
 * waiting in sem_clockwait on a 1 s period, and a sigwait thread that
 * ends them. Each start is timed (lsvc_group_start; pthread_create of all
 * N), then waits, untimed, until every member has run or begun once, so
 * that the stop finds each of them asleep. The stop is kill(getpid(),
 * SIGTERM), timed until lsvc_group_wait returns or the last thread is
 * joined. stop and scale time them; scale's RSS probe starts them in a
 * fresh process and reads its memory in between.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A start of thousands of threads on a loaded machine is slow, not hung:
 * the bound on the wait for their first runs grows with their number. */
static int64_t first_runs_deadline(size_t n)
{
    return now_ns() + 10 * NS_PER_SEC + (int64_t)n * 100 * NS_PER_US;
}

lsvc_options idle_options(void)
{
    lsvc_options opts;

    memset(&opts, 0, sizeof opts);
    opts.loop_seconds = 1.0;
    return opts;
}

/* --- ours ---------------------------------------------------------------- */

struct idle_member {
    struct latch *ran;
    atomic_bool seen; /* ran since the last start */
};

/* Counts each member's first run after a start only: at 1 s a member may
 * run again before the last one has run once. */
static int idle_run_once(lsvc *svc, void *arg)
{
    struct idle_member *m = arg;

    (void)svc;
    if (!atomic_exchange(&m->seen, true))
        latch_add(m->ran);
    return 0;
}

static const lsvc_class idle_class = {
    .name = "idle",
    .loop_seconds = 3600.0,
    .run_once = idle_run_once,
};

int ours_group_make(struct ours_group *og, size_t n, const lsvc_options *opts,
                    bool grouped)
{
    memset(og, 0, sizeof *og);
    latch_init(&og->ran);
    og->n = n;
    og->svcs = calloc(n, sizeof *og->svcs);
    og->members = calloc(n, sizeof *og->members);
    /* A group's services need names of their own (lsvc_group_add). */
    og->classes = classes_numbered(&idle_class, n);
    int rc = og->svcs && og->members && og->classes ? 0 : ENOMEM;

    if (rc == 0 && grouped && (rc = lsvc_group_create(&og->g)) == 0)
        rc = lsvc_group_set_stop_timeout(og->g, 5.0);
    for (; rc == 0 && og->made < n; og->made++) {
        og->members[og->made].ran = &og->ran;
        rc = lsvc_create(&og->svcs[og->made], &og->classes[og->made],
                         &og->members[og->made], opts);
        if (rc != 0)
            break;
        if (grouped && (rc = lsvc_group_add(og->g, og->svcs[og->made])) != 0) {
            og->made++;
            break;
        }
    }
    if (rc != 0)
        ours_group_free(og);
    return rc;
}

/* Starts every member (timed), then waits for each one's first run. On
 * failure nothing is left running. */
int ours_group_start(struct ours_group *og, int64_t *start_ns)
{
    size_t started = 0;
    int rc = 0;

    pthread_mutex_lock(&og->ran.lock);
    og->ran.count = 0;
    pthread_mutex_unlock(&og->ran.lock);
    for (size_t i = 0; i < og->n; i++)
        atomic_store(&og->members[i].seen, false);
    int64_t t0 = now_ns();
    if (og->g != NULL)
        rc = lsvc_group_start(og->g);
    else
        for (; rc == 0 && started < og->n; started++)
            if ((rc = lsvc_start(og->svcs[started], 0)) != 0)
                break;
    *start_ns = now_ns() - t0;
    if (rc != 0 && og->g == NULL) {
        for (size_t i = 0; i < started; i++)
            lsvc_stop_timeout(og->svcs[i], 5.0);
        return rc;
    }
    if (rc == 0 && (rc = latch_wait(&og->ran, og->n, first_runs_deadline(og->n))) != 0)
        ours_group_end(og);
    return rc;
}

/* A server's stop: SIGTERM to the process, which the group's signal
 * thread takes; timed until lsvc_group_wait returns. */
int ours_group_sigterm(struct ours_group *og, int64_t *stop_ns)
{
    int64_t t1 = now_ns();

    kill(getpid(), SIGTERM);
    int rc = lsvc_group_wait(og->g);
    *stop_ns = now_ns() - t1;
    return rc;
}

/* Stops a started set, untimed. */
void ours_group_end(struct ours_group *og)
{
    if (og->g != NULL) {
        lsvc_group_stop(og->g);
        lsvc_group_wait(og->g);
        return;
    }
    for (size_t i = 0; i < og->made; i++)
        lsvc_stop(og->svcs[i], false);
    for (size_t i = 0; i < og->made; i++)
        lsvc_stop_timeout(og->svcs[i], 5.0);
}

void ours_group_free(struct ours_group *og)
{
    if (og->g != NULL)
        lsvc_group_destroy(og->g);
    for (size_t i = 0; i < og->made; i++)
        lsvc_destroy(og->svcs[i]);
    free(og->svcs);
    free(og->members);
    free(og->classes);
    latch_destroy(&og->ran);
    memset(og, 0, sizeof *og);
}

int ours_group_once(size_t n, const lsvc_options *opts, int64_t *start_ns,
                    int64_t *stop_ns)
{
    struct ours_group og;
    int rc = ours_group_make(&og, n, opts, true);

    if (rc != 0)
        return rc;
    if ((rc = ours_group_start(&og, start_ns)) == 0)
        rc = ours_group_sigterm(&og, stop_ns);
    ours_group_free(&og);
    return rc;
}

/* --- raw ----------------------------------------------------------------- */

struct raw_member {
    sem_t sem;
    struct latch *ready;
};

/* sem_clockwait where the C library has it; else sem_timedwait, whose
 * deadline is on CLOCK_REALTIME. */
static int sem_wait_until(sem_t *sem, int64_t due_ns)
{
#if HAVE_SEM_CLOCKWAIT
    struct timespec until = ns_to_ts(due_ns);

    return sem_clockwait(sem, CLOCK_MONOTONIC, &until) == 0 ? 0 : errno;
#else
    struct timespec rt;

    clock_gettime(CLOCK_REALTIME, &rt);
    struct timespec until = ns_to_ts(ts_to_ns(&rt) + due_ns - now_ns());
    return sem_timedwait(sem, &until) == 0 ? 0 : errno;
#endif
}

/* What an idle service is without the library: wake every second until
 * told to stop. */
static void *raw_idle_main(void *arg)
{
    struct raw_member *m = arg;
    int64_t due = now_ns();

    latch_add(m->ready);
    for (;;) {
        int rc = sem_wait_until(&m->sem, due + NS_PER_SEC);

        if (rc == 0)
            return NULL;
        if (rc == ETIMEDOUT)
            due += NS_PER_SEC;
    }
}

/* Posts every semaphore, then joins every thread. `made` is read under
 * the ready latch's lock, which raw_group_start took after its last
 * write of it. */
static void raw_members_end(struct raw_group *rg)
{
    pthread_mutex_lock(&rg->ready.lock);
    size_t made = rg->made;
    pthread_mutex_unlock(&rg->ready.lock);

    for (size_t i = 0; i < made; i++)
        sem_post(&rg->members[i].sem);
    for (size_t i = 0; i < made; i++)
        pthread_join(rg->threads[i], NULL);
    rg->ended_ns = now_ns();
}

/* The raw server's SIGTERM handling, as the group's signal thread is
 * ours: sigwait, then end every thread. SIGTERM is blocked in every
 * thread of the bench (main.c). */
static void *stopper_main(void *arg)
{
    sigset_t set;
    int sig;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    while (sigwait(&set, &sig) != 0)
        ;
    raw_members_end(arg);
    return NULL;
}

static void raw_group_free(struct raw_group *rg)
{
    for (size_t i = 0; i < rg->n; i++)
        sem_destroy(&rg->members[i].sem);
    free(rg->members);
    free(rg->threads);
    latch_destroy(&rg->ready);
    memset(rg, 0, sizeof *rg);
}

/* Starts n threads (timed: pthread_create of all), with a stopper thread
 * made before them when sigterm is true, and waits until each has begun.
 * On failure nothing is left running. */
int raw_group_start(struct raw_group *rg, size_t n, bool sigterm, int64_t *start_ns)
{
    memset(rg, 0, sizeof *rg);
    latch_init(&rg->ready);
    rg->threads = calloc(n, sizeof *rg->threads);
    rg->members = calloc(n, sizeof *rg->members);
    int rc = rg->threads && rg->members ? 0 : ENOMEM;

    for (; rc == 0 && rg->n < n; rg->n++) {
        rg->members[rg->n].ready = &rg->ready;
        if (sem_init(&rg->members[rg->n].sem, 0, 0) != 0) {
            rc = errno;
            break;
        }
    }
    if (rc == 0 && sigterm &&
        (rc = pthread_create(&rg->stopper, NULL, stopper_main, rg)) == 0)
        rg->has_stopper = true;
    int64_t t0 = now_ns();
    while (rc == 0 && rg->made < n)
        if ((rc = pthread_create(&rg->threads[rg->made], NULL, raw_idle_main,
                                 &rg->members[rg->made])) == 0)
            rg->made++;
    *start_ns = now_ns() - t0;
    /* Also after a failure: the threads made have begun before they are
     * ended, and `made` is published to the stopper. */
    int wrc = latch_wait(&rg->ready, rg->made, first_runs_deadline(n));
    if (rc == 0)
        rc = wrc;
    if (rc != 0)
        raw_group_end(rg);
    return rc;
}

/* Ends the threads, by SIGTERM to the process when there is a stopper,
 * and frees rg. Returns the time from the call to the last join. */
int64_t raw_group_end(struct raw_group *rg)
{
    int64_t t1 = now_ns();

    if (rg->has_stopper) {
        kill(getpid(), SIGTERM);
        pthread_join(rg->stopper, NULL);
    } else {
        raw_members_end(rg);
    }
    int64_t took = rg->ended_ns - t1;
    raw_group_free(rg);
    return took;
}

int raw_group_once(size_t n, int64_t *start_ns, int64_t *stop_ns)
{
    struct raw_group rg;
    int rc = raw_group_start(&rg, n, true, start_ns);

    if (rc == 0)
        *stop_ns = raw_group_end(&rg);
    return rc;
}
