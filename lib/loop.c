/*
 * The service loop: the body of each service thread, and its sleep.
 *
 * Each run has an absolute due time on CLOCK_MONOTONIC. The thread sleeps
 * until then (or until a stop request), runs run_once, and derives the
 * next due time from this one's due time, never from when the run began,
 * so wake-up lateness does not drift the schedule. The lock is never held
 * while user code or the log sink runs.
 */
#define _GNU_SOURCE /* only takes effect for the extensions config.h found */
#include "config.h"
#include "internal.h"

#include <semaphore.h>

/* One step of sleep toward due_ns; it may return early. */
typedef void sleep_step_fn(lsvc *svc, int64_t now_ns, int64_t due_ns);

/* Default sleep: a wait that a stop request ends at once. On glibc a
 * condvar wait re-takes its mutex as contended, so every timed-out wait
 * pays a second futex call on unlock (about 1.5x the CPU of a plain sleep
 * per wake, measured); a semaphore wait costs one. The condvar, which the
 * stop also broadcasts, serves where sem_clockwait is missing. Either
 * returns when woken, at due_ns, or on a signal: the caller looks at the
 * clock and the stop flag again in every case. */
static void sleep_wakeable(lsvc *svc, int64_t now_ns, int64_t due_ns)
{
    (void)now_ns;
#if HAVE_SEM_CLOCKWAIT
    const struct timespec ts = lsvc__timespec(due_ns);

    sem_clockwait(&svc->wake, CLOCK_MONOTONIC, &ts);
#else
    const struct timespec ts = lsvc__timespec(due_ns);

    lsvc__lock(&svc->lock);
    if (!svc->stop_requested)
        lsvc__cond_timedwait(&svc->cond, &svc->lock, &ts);
    lsvc__unlock(&svc->lock);
#endif
}

/* Precise sleep: clock_nanosleep to the absolute due time, as cyclictest
 * does. Nothing can end it early, so a long sleep is cut into steps after
 * which the loop looks for a stop request. */
static void sleep_precise(lsvc *svc, int64_t now_ns, int64_t due_ns)
{
    int64_t step = lsvc__add_ns(now_ns, LSVC_PRECISE_STEP_NS);
    struct timespec ts = lsvc__timespec(step < due_ns ? step : due_ns);

    (void)svc;
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/* Sleeps until due_ns and returns true with the run's start recorded, or
 * returns false as soon as a stop is requested. The flag is read under
 * the lock request_stop sets it under; a stop set after that read still
 * ends the sleep step that follows: the semaphore keeps its post, the
 * condvar wait re-reads the flag under the lock, and a precise step is at
 * most 100 ms. */
static bool wait_for_run(lsvc *svc, int64_t due_ns, int64_t *begin_ns,
                         sleep_step_fn *sleep_step)
{
    for (;;) {
        lsvc__lock(&svc->lock);
        bool stop = svc->stop_requested;
        int64_t now = lsvc__now_ns();

        if (!stop && now >= due_ns) {
            *begin_ns = now;
            /* With a lease the run begins once the lease allows it; until
             * then the asking is what the watchdog sees as the run. */
            if (svc->opts.lease == NULL)
                lsvc__stats_begin_run(svc, due_ns, now);
            else
                svc->run_begin_ns = now;
        }
        lsvc__unlock(&svc->lock);
        if (stop)
            return false;
        if (now >= due_ns)
            return true;
        sleep_step(svc, now, due_ns);
    }
}

/* The lease allowed the run: it begins now, unless a stop came while the
 * lease was being asked. */
static bool begin_leased_run(lsvc *svc, int64_t due_ns, int64_t *begin_ns)
{
    lsvc__lock(&svc->lock);
    bool stop = svc->stop_requested;
    if (stop) {
        svc->run_begin_ns = 0;
    } else {
        *begin_ns = lsvc__now_ns();
        lsvc__stats_begin_run(svc, due_ns, *begin_ns);
    }
    lsvc__unlock(&svc->lock);
    return !stop;
}

static void warn_overrun(lsvc *svc, int64_t end_ns, int64_t run_ns,
                         int64_t interval_ns)
{
    uint64_t suppressed;

    if (!lsvc__ratelimit_admit(&svc->overrun_rl, end_ns, &suppressed))
        return;
    if (suppressed == 0)
        lsvc__log(LSVC_LOG_WARNING, svc->logger,
                  "%s took %.6f seconds to run, which is longer than its loop "
                  "interval of %g seconds.",
                  svc->name, (double)run_ns / 1e9, (double)interval_ns / 1e9);
    else
        lsvc__log(LSVC_LOG_WARNING, svc->logger,
                  "%s took %.6f seconds to run, which is longer than its loop "
                  "interval of %g seconds. %llu more such warnings were "
                  "suppressed in the last %d seconds.",
                  svc->name, (double)run_ns / 1e9, (double)interval_ns / 1e9,
                  (unsigned long long)suppressed,
                  (int)(LSVC_OVERRUN_WARN_PERIOD_NS / LSVC_NS_PER_SEC));
}

static void log_next_run(lsvc *svc, int64_t due_ns, int64_t now_ns)
{
    struct timespec wall;
    struct tm tm;
    char when[32];

    if (!lsvc__log_enabled(LSVC_LOG_DEBUG))
        return;
    /* Shown as wall time, which is what a person compares it with. */
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t at = (int64_t)wall.tv_sec * LSVC_NS_PER_SEC + wall.tv_nsec +
                 (due_ns - now_ns);
    time_t secs = (time_t)(at / LSVC_NS_PER_SEC);
    localtime_r(&secs, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    lsvc__log(LSVC_LOG_DEBUG, svc->logger,
              "Finished running %s. Next run at %s.%03d.", svc->name, when,
              (int)(at % LSVC_NS_PER_SEC / 1000000));
}

/* Runs until stopped or until `wanted` runs (0 = no limit) are done. */
static uint64_t run_loop(lsvc *svc, uint64_t wanted)
{
    sleep_step_fn *sleep_step =
        svc->opts.precise ? sleep_precise : sleep_wakeable;
    int64_t due = lsvc__add_ns(lsvc__now_ns(), svc->initial_delay_ns);
    uint64_t done = 0;
    int64_t begin = 0;

    while (wait_for_run(svc, due, &begin, sleep_step)) {
        if (svc->opts.lease != NULL) {
            if (!lsvc__lease_acquire(svc)) {
                uint64_t skipped;

                due = lsvc__next_due(svc->opts.missed, due, svc->interval_ns,
                                     lsvc__now_ns(), &skipped);
                lsvc__stats_skip_run(svc, skipped);
                continue;
            }
            if (!begin_leased_run(svc, due, &begin))
                break;
        }
        lsvc__log(LSVC_LOG_DEBUG, svc->logger, "About to run %s...", svc->name);
        int rc = svc->cls->run_once(svc, svc->arg);
        int64_t end = lsvc__now_ns();
        int64_t run_ns = end - begin;
        int64_t interval = svc->interval_ns;
        bool overrun = run_ns > interval;
        uint64_t skipped;
        int64_t base = lsvc__run_base(svc->opts.missed, due, begin, interval);
        int64_t next = lsvc__next_due(svc->opts.missed, base, interval, end,
                                      &skipped);

        lsvc__stats_end_run(svc, run_ns, rc != 0, overrun, skipped);
        if (rc != 0)
            lsvc__log(LSVC_LOG_ERROR, svc->logger,
                      "Unexpected error in %s: run_once returned %d.",
                      svc->name, rc);
        if (overrun)
            warn_overrun(svc, end, run_ns, interval);
        if (++done == wanted) {
            lsvc__log(LSVC_LOG_DEBUG, svc->logger,
                      "%s exiting after %llu loop(s).", svc->name,
                      (unsigned long long)done);
            break;
        }
        due = next;
        log_next_run(svc, due, end);
    }
    return done;
}

void *lsvc__service_main(void *arg)
{
    lsvc *svc = arg;
    const lsvc_class *cls = svc->cls;
    uint64_t wanted, done = 0;
    int rc = 0;

    lsvc__thread_name(svc->name);
    lsvc__thread_slack(svc->opts.timer_slack_ns, svc->interval_ns);
    lsvc__ratelimit_init(&svc->overrun_rl, LSVC_OVERRUN_WARN_PERIOD_NS);
    lsvc__ratelimit_init(&svc->lease_rl, LSVC_LEASE_WARN_PERIOD_NS);
    /* Posts of stops that came after the last thread stopped sleeping
     * would only cost spurious wake-ups; the stop flag is what counts. */
    while (sem_trywait(&svc->wake) == 0)
        ;
    lsvc__lock(&svc->lock);
    wanted = svc->loops_wanted;
    lsvc__unlock(&svc->lock);

    if (cls->on_start != NULL)
        rc = cls->on_start(svc, svc->arg);
    if (rc != 0) {
        lsvc__stats_start_failed(svc);
        lsvc__log(LSVC_LOG_ERROR, svc->logger,
                  "%s failed to start: on_start returned %d. It will not run.",
                  svc->name, rc);
    } else {
        lsvc__log(LSVC_LOG_INFO, svc->logger, "%s started: runs every %g s.",
                  svc->name, (double)svc->interval_ns / 1e9);
        done = run_loop(svc, wanted);
        lsvc__lease_release(svc);
        if (cls->on_stop != NULL)
            cls->on_stop(svc, svc->arg);
        lsvc__log(LSVC_LOG_INFO, svc->logger, "%s stopped after %llu loop(s).",
                  svc->name, (unsigned long long)done);
    }

    /* The last touch of svc: once FINISHED is seen, it may be joined and
     * freed. */
    lsvc__lock(&svc->lock);
    lsvc__thread_finished(svc);
    lsvc__unlock(&svc->lock);
    return NULL;
}
