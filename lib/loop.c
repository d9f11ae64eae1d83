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
    if (svc->sleeping && !svc->stop_requested)
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

/* Unlocks svc, which the caller locked to change its schedule
 * (control.c), and with `changed` wakes the service thread to look at it
 * again. Only a thread that sleeps, or is about to, is woken, so that a
 * storm of requests during a run leaves no pile of posts behind; and the
 * semaphore is posted after the unlock, so that the thread does not wake
 * to a lock still held. A precise sleep is never woken: it looks again
 * after its step, within 100 ms. */
void lsvc__unlock_kick(lsvc *svc, bool changed)
{
    bool kick = changed && svc->sleeping;

    if (kick)
        svc->sleeping = false;
#if HAVE_SEM_CLOCKWAIT
    lsvc__unlock(&svc->lock);
    if (kick)
        sem_post(&svc->wake);
#else
    if (kick)
        pthread_cond_broadcast(&svc->cond);
    lsvc__unlock(&svc->lock);
#endif
}

/* The service thread's own view of its schedule. */
struct sched {
    int64_t due;        /* the next point by the interval; LSVC_FOREVER:
                         * none, only a wake or a request runs it */
    unsigned reasons;   /* LSVC_RUN_FIRST and _RESUMED for the next run */
};

/* The run about to begin. */
struct run {
    int64_t due;        /* its point on the schedule, or when it was asked
                         * for */
    int64_t begin;
    unsigned reasons;   /* LSVC_RUN_* */
    unsigned bits;      /* the wake bits it took */
};

/* Applies what other threads asked of the schedule since the service
 * last looked. Lock held. */
static void take_requests(lsvc *svc, struct sched *sc, int64_t now)
{
    int64_t interval = svc->interval_ns;

    if (svc->resumed_ns != 0) {
        /* Points passed while paused are not missed: DELAY runs at once,
         * SKIP and BURST go on at their next grid point. */
        if (sc->due < svc->resumed_ns)
            sc->due = svc->opts.fixed_delay ||
                              svc->opts.missed == LSVC_MISSED_DELAY
                          ? svc->resumed_ns
                          : lsvc__grid_point(sc->due, interval,
                                             svc->resumed_ns);
        svc->resumed_ns = 0;
        sc->reasons |= LSVC_RUN_RESUMED;
    }
    if (svc->rescheduled) {
        svc->rescheduled = false;
        if (interval == LSVC_FOREVER) {
            sc->due = LSVC_FOREVER;
        } else if (sc->reasons & LSVC_RUN_FIRST) {
            if (sc->due == LSVC_FOREVER)
                sc->due = lsvc__add_ns(now, interval);
        } else {
            /* The new interval after the last run; at once if that is
             * past, with no missed point counted or run: the points of
             * the old interval were never on this schedule. */
            int64_t base = svc->opts.fixed_delay ? svc->last_end_ns
                                                 : svc->last_start_ns;
            int64_t next = lsvc__add_ns(base, interval);
            sc->due = next > now ? next : now;
        }
    }
    if (svc->has_next) {
        svc->has_next = false;
        sc->due = svc->next_ns;
    }
}

/* Begins a run at `now`, taking every request made so far. Lock held. */
static void claim_run(lsvc *svc, struct sched *sc, struct run *run,
                      int64_t now)
{
    run->reasons = sc->reasons;
    sc->reasons = 0;
    run->due = svc->asked_ns;
    if (now >= sc->due) {
        run->reasons |= LSVC_RUN_TIMER;
        run->due = sc->due;
    }
    if (now >= svc->asked_ns)
        run->reasons |= LSVC_RUN_WOKEN;
    run->bits = svc->wake_bits;
    run->begin = now;
    svc->wake_bits = 0;
    svc->asked_ns = LSVC_FOREVER;
}

/* The run begins: what other threads may now read of it. Lock held. */
static void begin_run(lsvc *svc, const struct run *run)
{
    lsvc_run_info *info = &svc->info;

    lsvc__stats_begin_run(svc, run->due, run->begin,
                          (run->reasons & LSVC_RUN_WOKEN) != 0);
    info->reasons = run->reasons;
    info->wake_bits = run->bits;
    info->due = lsvc__timespec(run->due);
    info->start = lsvc__timespec(run->begin);
    info->prev_start = lsvc__timespec(svc->last_start_ns);
    info->run = ++svc->runs_begun;
    svc->last_start_ns = run->begin;
    svc->in_run = true;
}

/* Sleeps until a run is due and returns true with it claimed, or returns
 * false as soon as a stop is requested. The flags are read under the lock
 * their writers take; a change made after that read still ends the sleep
 * step that follows: the semaphore keeps its post, the condvar wait
 * re-reads `sleeping` under the lock, and a precise step is at most
 * 100 ms. */
static bool wait_for_run(lsvc *svc, struct sched *sc, struct run *run,
                         sleep_step_fn *sleep_step)
{
    for (;;) {
        lsvc__lock(&svc->lock);
        int64_t now = lsvc__now_ns();
        int64_t until = LSVC_FOREVER;
        bool stop = svc->stop_requested;

        svc->sleeping = false; /* awake: a change needs no post now */

        if (!stop && !svc->paused) {
            take_requests(svc, sc, now);
            until = sc->due < svc->asked_ns ? sc->due : svc->asked_ns;
            if (now >= until) {
                claim_run(svc, sc, run, now);
                /* With a lease the run begins once the lease allows it;
                 * until then the asking is what a pause waits for and
                 * the watchdog sees as the run. */
                if (svc->opts.lease == NULL)
                    begin_run(svc, run);
                else
                    svc->run_begin_ns = now;
                lsvc__unlock(&svc->lock);
                return true;
            }
        }
        svc->sleeping = !stop && !svc->opts.precise;
        lsvc__unlock(&svc->lock);
        if (stop)
            return false;
        sleep_step(svc, now, until);
    }
}

/* The lease allowed the run: it begins now, unless a stop or a pause
 * came while the lease was being asked. A pause puts back what the run
 * took, for the run at resume. Returns false for a stop. */
static bool begin_leased_run(lsvc *svc, struct sched *sc, struct run *run,
                             bool *paused)
{
    lsvc__lock(&svc->lock);
    bool stop = svc->stop_requested;
    *paused = !stop && svc->paused;
    if (stop || *paused) {
        svc->run_begin_ns = 0;
        if (*paused && (run->reasons & LSVC_RUN_WOKEN)) {
            if (run->due < svc->asked_ns)
                svc->asked_ns = run->due;
            svc->wake_bits |= run->bits;
        }
        sc->reasons |= run->reasons & (LSVC_RUN_FIRST | LSVC_RUN_RESUMED);
        if (svc->pausers > 0)
            pthread_cond_broadcast(&svc->cond);
    } else {
        run->begin = lsvc__now_ns();
        begin_run(svc, run);
    }
    lsvc__unlock(&svc->lock);
    return !stop;
}

/* The next point by the interval after a run that began as `run` says
 * and ended at end_ns: a run only asked for leaves the grid where it
 * was. */
static int64_t next_point(const lsvc *svc, const struct sched *sc,
                          const struct run *run, int64_t interval,
                          int64_t end_ns, uint64_t *skipped)
{
    *skipped = 0;
    if (svc->opts.fixed_delay)
        return lsvc__add_ns(end_ns, interval);
    if (!(run->reasons & LSVC_RUN_TIMER))
        return sc->due;
    int64_t base = lsvc__run_base(svc->opts.missed, run->due, run->begin,
                                  interval);
    return lsvc__next_due(svc->opts.missed, base, interval, end_ns, skipped);
}

/* The run has ended: what other threads may now read of it. */
static void end_run(lsvc *svc, const struct run *run, int64_t end_ns, int rc,
                    int64_t interval, uint64_t skipped)
{
    int64_t run_ns = end_ns - run->begin;

    lsvc__lock(&svc->lock);
    svc->in_run = false;
    svc->last_end_ns = end_ns;
    lsvc__stats_end_run(svc, run_ns, rc != 0, run_ns > interval, skipped);
    if (svc->pausers > 0)
        pthread_cond_broadcast(&svc->cond);
    lsvc__unlock(&svc->lock);
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
    if (due_ns == LSVC_FOREVER) {
        lsvc__log(LSVC_LOG_DEBUG, svc->logger,
                  "Finished running %s. Next run when woken.", svc->name);
        return;
    }
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

/* The lease does not let this replica run: the run is skipped, and a run
 * due by the interval moves on to its next point. */
static void skip_run(lsvc *svc, struct sched *sc, const struct run *run)
{
    uint64_t skipped = 0;

    /* The first run, or the first after a resume, is still to come; the
     * wakes the skipped run took are gone with it (kept, they would ask
     * the lease again at once, and again). */
    sc->reasons |= run->reasons & (LSVC_RUN_FIRST | LSVC_RUN_RESUMED);
    if (run->reasons & LSVC_RUN_TIMER)
        sc->due = lsvc__next_due(svc->opts.missed, run->due, svc->interval_ns,
                                 lsvc__now_ns(), &skipped);
    lsvc__lock(&svc->lock);
    lsvc__stats_skip_run(svc, skipped);
    if (svc->pausers > 0)
        pthread_cond_broadcast(&svc->cond);
    lsvc__unlock(&svc->lock);
}

/* Runs until stopped or until `wanted` runs (0 = no limit) are done. */
static uint64_t run_loop(lsvc *svc, uint64_t wanted)
{
    sleep_step_fn *sleep_step =
        svc->opts.precise ? sleep_precise : sleep_wakeable;
    int64_t interval;
    /* What the start made of the first run: an interval set since then
     * is a change for take_requests to apply. */
    struct sched sc = {
        .due = svc->started_never
                   ? LSVC_FOREVER
                   : lsvc__add_ns(lsvc__now_ns(), svc->initial_delay_ns),
        .reasons = LSVC_RUN_FIRST,
    };
    struct run run;
    uint64_t done = 0;

    while (wait_for_run(svc, &sc, &run, sleep_step)) {
        if (svc->opts.lease != NULL) {
            bool paused;

            if (!lsvc__lease_acquire(svc)) {
                skip_run(svc, &sc, &run);
                continue;
            }
            if (!begin_leased_run(svc, &sc, &run, &paused))
                break;
            if (paused)
                continue;
        }
        lsvc__log(LSVC_LOG_DEBUG, svc->logger, "About to run %s...", svc->name);
        int rc = svc->cls->run_once(svc, svc->arg);
        int64_t end = lsvc__now_ns();
        uint64_t skipped;

        interval = svc->interval_ns;
        sc.due = next_point(svc, &sc, &run, interval, end, &skipped);
        end_run(svc, &run, end, rc, interval, skipped);
        if (rc != 0)
            lsvc__log(LSVC_LOG_ERROR, svc->logger,
                      "Unexpected error in %s: run_once returned %d.",
                      svc->name, rc);
        if (end - run.begin > interval)
            warn_overrun(svc, end, end - run.begin, interval);
        if (++done == wanted) {
            lsvc__log(LSVC_LOG_DEBUG, svc->logger,
                      "%s exiting after %llu loop(s).", svc->name,
                      (unsigned long long)done);
            break;
        }
        log_next_run(svc, sc.due, end);
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
        if (svc->interval_ns == LSVC_FOREVER)
            lsvc__log(LSVC_LOG_INFO, svc->logger,
                      "%s started: runs when woken.", svc->name);
        else
            lsvc__log(LSVC_LOG_INFO, svc->logger,
                      "%s started: runs every %g s.", svc->name,
                      (double)svc->interval_ns / 1e9);
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
