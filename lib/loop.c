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

#include <errno.h>

/* One step of sleep toward due_ns; it may return early. */
typedef void sleep_step_fn(lsvc *svc, int64_t now_ns, int64_t due_ns);

/* Default sleep: a wait that a stop request ends at once. It is the
 * service's wake-up (wakeup.c): one system call per wake, where a
 * condvar wait on glibc re-takes its mutex as contended and pays a
 * second futex call on unlock (about 1.5x the CPU of a plain sleep per
 * wake, measured). The condvar, which the stop also broadcasts, serves
 * where the system has neither a futex nor sem_clockwait. Either returns
 * when woken, at due_ns, or on a signal: the caller looks at the clock
 * and the stop flag again in every case. */
static void sleep_wakeable(lsvc *svc, int64_t now_ns, int64_t due_ns)
{
    (void)now_ns;
#if LSVC_HAVE_WAKEUP
    lsvc__wakeup_wait(&svc->wake, due_ns);
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
 * storm of requests during a run leaves no pile of posts behind; and
 * one whose mark is not yet taken, since the waker that marked it may
 * not have made its wake yet. The post is marked before the unlock: once
 * the lock is free, the thread may see the change without it, run, and
 * be stopped and destroyed by a thread that saw the run. Only the wake
 * comes after the unlock, so that the thread does not wake to a lock
 * still held; it is safe on freed memory (lsvc__wakeup_wake). A precise
 * sleep is never woken: it looks again after its step, within 100 ms. */
void lsvc__unlock_kick(lsvc *svc, bool changed)
{
    uintptr_t kicked = 0;

    if (changed &&
        (svc->sleeping || lsvc__wakeup_pending(&svc->wake))) {
        svc->sleeping = false;
#if LSVC_HAVE_WAKEUP
        lsvc__wakeup_mark(&svc->wake);
        kicked = (uintptr_t)&svc->wake;
#else
        pthread_cond_broadcast(&svc->cond);
#endif
    }
    lsvc__unlock(&svc->lock);
    if (kicked != 0)
        lsvc__wakeup_wake(kicked);
}

/* The run about to begin. */
struct run {
    struct lsvc_point point; /* why, when due, its jitter, when it began */
    int64_t late_from;  /* what its lateness counts from: its jittered
                         * point, or when it was asked for */
    unsigned bits;      /* the wake bits it took */
    bool has_token;     /* its lease's fencing token, when it has one */
    uint64_t token;
};

/* Applies what other threads asked of the schedule since the service
 * last looked. Lock held. */
static void take_requests(lsvc *svc, struct lsvc_sched *sc, int64_t now)
{
    if (svc->resumed_ns != 0) {
        lsvc__sched_resume(svc, sc, svc->resumed_ns);
        svc->resumed_ns = 0;
    }
    if (svc->rescheduled) {
        svc->rescheduled = false;
        lsvc__sched_interval_changed(svc, sc, svc->last_start_ns,
                                     svc->last_end_ns, now);
    }
    if (svc->has_next) {
        svc->has_next = false;
        lsvc__sched_set(sc, svc->next_ns);
    }
}

/* When a run asked for may begin: not sooner than the wake gap after the
 * previous run began. Lock held. */
static int64_t asked_target(const lsvc *svc)
{
    int64_t gap_end = svc->last_start_ns != 0
                          ? lsvc__add_ns(svc->last_start_ns, svc->wake_gap_ns)
                          : 0;

    if (svc->asked_ns == LSVC_FOREVER || svc->asked_ns >= gap_end)
        return svc->asked_ns;
    return gap_end;
}

/* Begins a run at `now`, taking every request made so far. Lock held. */
static void claim_run(lsvc *svc, struct lsvc_sched *sc, struct run *run,
                      int64_t timer, int64_t asked, int64_t now)
{
    struct lsvc_point *p = &run->point;

    p->reasons = sc->reasons;
    sc->reasons = 0;
    p->due = svc->asked_ns;
    p->jitter = 0;
    run->late_from = asked;
    /* A run that begins at or after its point is that point's run, also
     * when a wake makes it begin before its jittered start. */
    if (now >= timer || (now >= asked && now >= sc->due)) {
        p->reasons |= LSVC_RUN_TIMER;
        p->due = sc->due;
        p->jitter = sc->jitter;
        /* Begun by a wake before its jittered start: late from the wake
         * or the point, whichever came last. */
        run->late_from = now >= timer ? timer
                                      : asked > sc->due ? asked : sc->due;
    }
    if (now >= asked)
        p->reasons |= LSVC_RUN_WOKEN;
    p->begin = now;
    run->has_token = false; /* until a lease gives one */
    run->bits = svc->wake_bits;
    svc->wake_bits = 0;
    svc->asked_ns = LSVC_FOREVER;
}

/* The run begins: what other threads may now read of it. Lock held. */
static void begin_run(lsvc *svc, const struct run *run)
{
    const struct lsvc_point *p = &run->point;

    lsvc__stats_begin_run(svc, p->due, run->late_from, p->begin,
                          (p->reasons & LSVC_RUN_WOKEN) != 0);
    svc->run_reasons = p->reasons;
    svc->run_wake_bits = run->bits;
    svc->prev_start_ns = svc->last_start_ns;
    svc->runs_begun++;
    svc->last_start_ns = p->begin;
    svc->in_run = true;
    svc->run_has_token = run->has_token;
    svc->run_token = run->token;
}

/* Sleeps until a run is due and returns true with it claimed, or returns
 * false as soon as a stop is requested. The flags are read under the lock
 * their writers take; a change made after that read still ends the sleep
 * step that follows: the wake-up keeps its post, the condvar wait
 * re-reads `sleeping` under the lock, and a precise step is at most
 * 100 ms. A point on the wall clock is looked at again every second.
 * With held_ns the caller holds the lock since it read the clock at
 * held_ns, and the first look takes that as now. */
static bool wait_for_run(lsvc *svc, struct lsvc_sched *sc, struct run *run,
                         struct lsvc_slack *slack, sleep_step_fn *sleep_step,
                         int64_t held_ns)
{
    for (;;) {
        int64_t now = held_ns;

        if (held_ns == 0) {
            lsvc__lock(&svc->lock);
            now = lsvc__now_ns();
        }
        held_ns = 0;
        int64_t until = LSVC_FOREVER;
        bool stop = svc->stop_requested;

        svc->sleeping = false; /* awake: a change needs no post now */

        if (!stop && !svc->paused) {
            take_requests(svc, sc, now);
            int64_t timer = lsvc__sched_target(sc, now);
            int64_t asked = asked_target(svc);
            until = timer < asked ? timer : asked;
            if (now >= until) {
                svc->next_due_ns = 0;
                claim_run(svc, sc, run, timer, asked, now);
                /* With a lease the run begins once the lease allows it;
                 * until then the asking is what a pause waits for and
                 * the watchdog sees as the run. */
                if (!svc->leased)
                    begin_run(svc, run);
                else
                    svc->run_begin_ns = now;
                lsvc__unlock(&svc->lock);
                return true;
            }
            svc->next_due_ns = until;
            if (sc->wall != 0 && until - now > LSVC_WALL_CHECK_NS)
                until = now + LSVC_WALL_CHECK_NS;
        } else {
            svc->next_due_ns = LSVC_FOREVER;
        }
        svc->sleeping = !stop && !svc->precise;
        /* A service paused, or waiting to be woken, wakes nobody's
         * timer: it counts for nothing in the process's rate. */
        int64_t rate_interval = svc->next_due_ns == LSVC_FOREVER
                                    ? LSVC_FOREVER
                                    : atomic_load(&svc->interval_ns);
        lsvc__unlock(&svc->lock);
        if (stop)
            return false;
        lsvc__slack_follow(slack, rate_interval);
        sleep_step(svc, now, until);
    }
}

/* The lease allowed the run: it begins now, unless a stop or a pause
 * came while the lease was being asked. A pause puts back what the run
 * took, for the run at resume. Returns false for a stop. */
static bool begin_leased_run(lsvc *svc, struct lsvc_sched *sc,
                             struct run *run, bool *paused)
{
    const struct lsvc_point *p = &run->point;

    lsvc__lock(&svc->lock);
    bool stop = svc->stop_requested;
    *paused = !stop && svc->paused;
    if (stop || *paused) {
        svc->run_begin_ns = 0;
        if (*paused && (p->reasons & LSVC_RUN_WOKEN)) {
            if (run->late_from < svc->asked_ns)
                svc->asked_ns = run->late_from;
            svc->wake_bits |= run->bits;
        }
        sc->reasons |= p->reasons & (LSVC_RUN_FIRST | LSVC_RUN_RESUMED);
        if (svc->pausers > 0)
            pthread_cond_broadcast(&svc->cond);
    } else {
        run->point.begin = lsvc__now_ns();
        begin_run(svc, run);
    }
    lsvc__unlock(&svc->lock);
    return !stop;
}

/* The run has ended: what other threads may now read of it. Lock held. */
static void end_run(lsvc *svc, int64_t end_ns, int64_t run_ns, int rc,
                    int64_t interval, uint64_t skipped)
{
    svc->in_run = false;
    svc->last_end_ns = end_ns;
    lsvc__stats_end_run(svc, end_ns, run_ns, rc != 0, run_ns > interval,
                        skipped);
    if (svc->pausers > 0)
        pthread_cond_broadcast(&svc->cond);
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
static void skip_run(lsvc *svc, struct lsvc_sched *sc, const struct run *run,
                     bool elsewhere)
{
    uint64_t skipped = lsvc__sched_skip(svc, sc, &run->point, lsvc__now_ns());

    /* The first run, or the first after a resume, is still to come; the
     * wakes the skipped run took are gone with it (kept, they would ask
     * the lease again at once, and again). */
    sc->reasons |= run->point.reasons & (LSVC_RUN_FIRST | LSVC_RUN_RESUMED);

    lsvc__lock(&svc->lock);
    lsvc__stats_skip_run(svc, skipped, elsewhere);
    if (svc->pausers > 0)
        pthread_cond_broadcast(&svc->cond);
    lsvc__unlock(&svc->lock);
}

/* A stop ended the lease's ask: the run claimed is not made, and a pause
 * that waits for it is told. */
static void drop_ask(lsvc *svc)
{
    lsvc__lock(&svc->lock);
    svc->run_begin_ns = 0;
    if (svc->pausers > 0)
        pthread_cond_broadcast(&svc->cond);
    lsvc__unlock(&svc->lock);
}

/* Tells the run observer that the run begins. Only this thread writes
 * the run's number and the lease's state, so it reads them unlocked. */
static void observe_begin(lsvc *svc, const struct run *run,
                          lsvc_run_event *ev)
{
    int64_t late = run->point.begin - run->late_from;

    *ev = (lsvc_run_event){
        .svc = svc,
        .reasons = run->point.reasons,
        .run = svc->runs_begun,
        .due = lsvc__timespec(run->point.due),
        .start = lsvc__timespec(run->point.begin),
        .lateness_ns = late > 0 ? late : 0,
        .lease_held = svc->leased && svc->stats.lease_held,
    };
    lsvc__observe(ev);
}

static void observe_end(lsvc_run_event *ev, int64_t run_ns, int rc)
{
    ev->ended = true;
    ev->duration_ns = run_ns;
    ev->result = rc;
    lsvc__observe(ev);
}

/* Runs until stopped or until `wanted` runs (0 = no limit) are done. */
static uint64_t run_loop(lsvc *svc, struct lsvc_slack *slack,
                         uint64_t wanted)
{
    sleep_step_fn *sleep_step =
        svc->precise ? sleep_precise : sleep_wakeable;
    struct lsvc_sched sc;
    struct run run;
    uint64_t done = 0;
    int64_t held_ns = 0; /* the lock is held since the run's end, then */

    lsvc__sched_init(svc, &sc, lsvc__now_ns());
    for (;;) {
        if (!wait_for_run(svc, &sc, &run, slack, sleep_step, held_ns))
            break;
        held_ns = 0;
        if (svc->leased) {
            bool paused;

            enum lsvc_lease_answer lease =
                lsvc__lease_acquire(svc, &run.token, &run.has_token);

            if (lease == LSVC_LEASE_CANCELED) {
                drop_ask(svc);
                break;
            }
            if (lease != LSVC_LEASE_HELD) {
                skip_run(svc, &sc, &run, lease == LSVC_LEASE_ELSEWHERE);
                continue;
            }
            if (!begin_leased_run(svc, &sc, &run, &paused))
                break;
            if (paused) {
                lsvc__lease_ran(svc, ECANCELED); /* put back, not made */
                continue;
            }
        }
        if (lsvc__log_enabled(LSVC_LOG_DEBUG))
            lsvc__log(LSVC_LOG_DEBUG, svc->logger, "About to run %s...",
                      svc->name);
        bool observed = lsvc__observing();
        lsvc_run_event event;
        int64_t called = run.point.begin;
        if (observed) {
            observe_begin(svc, &run, &event);
            called = lsvc__now_ns(); /* the observer's time is not the run's */
        }
        int rc = svc->cls->run_once(svc, svc->arg);
        int64_t end = lsvc__now_ns();
        int64_t interval = svc->interval_ns;
        int64_t run_ns = end - called;
        uint64_t skipped =
            lsvc__sched_after_run(svc, &sc, &run.point, end, rc != 0);
        bool overrun = run_ns > interval && !svc->quiet_overruns;
        /* A run after which no user code, lease or log line comes, as
         * most are, goes on to the next sleep in the same hold of the
         * lock, with its end as now. */
        bool quiet = !observed && !svc->leased && rc == 0 &&
                     !overrun && done + 1 != wanted &&
                     !lsvc__log_enabled(LSVC_LOG_DEBUG);

        lsvc__lock(&svc->lock);
        end_run(svc, end, run_ns, rc, interval, skipped);
        if (quiet) {
            done++;
            held_ns = end;
            continue;
        }
        lsvc__unlock(&svc->lock);
        if (observed)
            observe_end(&event, run_ns, rc);
        if (svc->leased)
            lsvc__lease_ran(svc, rc);
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
        log_next_run(svc, lsvc__sched_target(&sc, end), end);
    }
    return done;
}

void *lsvc__service_main(void *arg)
{
    lsvc *svc = arg;
    const lsvc_class *cls = svc->cls;
    struct lsvc_slack slack;
    uint64_t wanted, done = 0;
    int rc = 0;

    lsvc__thread_name(svc->name);
    lsvc__slack_join(&slack, svc->opts.timer_slack_ns,
                     atomic_load(&svc->interval_ns));
    lsvc__ratelimit_init(&svc->overrun_rl, LSVC_OVERRUN_WARN_PERIOD_NS);
    lsvc__ratelimit_init(&svc->lease_rl, LSVC_LEASE_WARN_PERIOD_NS);
    /* Posts of stops that came after the last thread stopped sleeping
     * would only cost spurious wake-ups; the stop flag is what counts. */
    lsvc__wakeup_drain(&svc->wake);
    lsvc__lock(&svc->lock);
    wanted = svc->loops_wanted;
    lsvc__unlock(&svc->lock);

    if (cls->on_start != NULL)
        rc = cls->on_start(svc, svc->arg);
    lsvc__lock(&svc->lock);
    svc->progress_ns = lsvc__add_ns(lsvc__now_ns(), svc->initial_delay_ns);
    svc->cluster_since_ns = 0;
    if (svc->start_result != NULL) {
        *svc->start_result = (struct lsvc_start_result){ true, rc };
        svc->start_result = NULL;
        pthread_cond_broadcast(&svc->cond);
    }
    lsvc__unlock(&svc->lock);
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
        done = run_loop(svc, &slack, wanted);
        lsvc__lease_release(svc);
        if (cls->on_stop != NULL)
            cls->on_stop(svc, svc->arg);
        lsvc__log(LSVC_LOG_INFO, svc->logger, "%s stopped after %llu loop(s).",
                  svc->name, (unsigned long long)done);
    }

    lsvc__slack_leave(&slack);
    /* The last touch of svc: once FINISHED is seen, it may be joined and
     * freed. */
    lsvc__lock(&svc->lock);
    lsvc__thread_finished(svc);
    lsvc__unlock(&svc->lock);
    return NULL;
}
