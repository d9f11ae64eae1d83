/*
 * Runtime control: what other threads, or a run itself, ask of a service's
 * schedule while it runs. Wake it, ask for a run within a time, set the
 * next run or the interval, pause and resume it; and, for a long run,
 * whether a stop is wanted, a sleep that a stop or a pause ends, and what
 * the run knows about itself.
 *
 * Each request is recorded under the service's lock and the sleeping
 * service thread is woken (lsvc__unlock_kick) to look at it; the schedule
 * itself is computed on that thread alone (loop.c). A request is taken by the
 * run that begins after it, in the same critical section that begins the
 * run, so none is lost and none counts twice.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>

/* Called with the lock held, as a thread is created for the service. */
void lsvc__control_reset(lsvc *svc)
{
    lsvc__assert_held(&svc->lock);
    svc->asked_ns = LSVC_FOREVER;
    svc->wake_bits = 0;
    svc->has_next = false;
    svc->rescheduled = false;
    svc->paused = false;
    svc->resumed_ns = 0;
    svc->sleeping = false;
    svc->in_run = false;
    svc->next_due_ns = 0;
    /* The thread's start counts as progress; on_start's end again. */
    svc->progress_ns = lsvc__add_ns(lsvc__now_ns(), svc->initial_delay_ns);
    svc->progressed = true;
}

/* Locks svc when its thread runs; false, unlocked, when it does not. */
static bool lock_running(lsvc *svc)
{
    lsvc__lock(&svc->lock);
    if (svc->state == LSVC_THREAD_RUNNING)
        return true;
    lsvc__unlock(&svc->lock);
    return false;
}

bool lsvc_should_stop(const lsvc *svc)
{
    lsvc *s = (lsvc *)svc; /* the lock is not part of the value */

    if (s == NULL)
        return false;
    lsvc__lock(&s->lock);
    bool stop = s->stop_requested;
    lsvc__unlock(&s->lock);
    return stop;
}

int lsvc_sleep(lsvc *svc, double seconds)
{
    int64_t ns;

    if (svc == NULL || lsvc__seconds_to_ns(seconds, true, &ns) != 0)
        return EINVAL;
    int64_t until = lsvc__add_ns(lsvc__now_ns(), ns);
    struct timespec ts = lsvc__timespec(until);

    /* A stop and a pause broadcast the condition variable; a wake does
     * not end this sleep, though it may wake it to look again. */
    lsvc__lock(&svc->lock);
    while (!svc->stop_requested && !svc->paused && lsvc__now_ns() < until)
        lsvc__cond_timedwait(&svc->cond, &svc->lock, &ts);
    bool cancelled = svc->stop_requested || svc->paused;
    lsvc__unlock(&svc->lock);
    return cancelled ? ECANCELED : 0;
}

/* Asks for a run at `at`, with `bits`, and unlocks. Lock held. */
static void ask(lsvc *svc, int64_t at, unsigned bits)
{
    bool earlier = at < svc->asked_ns;

    svc->wake_bits |= bits;
    if (earlier)
        svc->asked_ns = at;
    lsvc__unlock_kick(svc, earlier);
}

int lsvc_wake_bits(lsvc *svc, unsigned bits)
{
    if (svc == NULL)
        return EINVAL;
    if (lock_running(svc))
        ask(svc, lsvc__now_ns(), bits);
    return 0;
}

int lsvc_wake(lsvc *svc)
{
    return lsvc_wake_bits(svc, 0);
}

int lsvc_run_within(lsvc *svc, double seconds)
{
    int64_t ns;

    if (svc == NULL || lsvc__seconds_to_ns(seconds, true, &ns) != 0)
        return EINVAL;
    if (lock_running(svc))
        ask(svc, lsvc__add_ns(lsvc__now_ns(), ns), 0);
    return 0;
}

int lsvc_next_run_in(lsvc *svc, double seconds)
{
    int64_t ns = LSVC_FOREVER;

    if (svc == NULL || isnan(seconds) ||
        (seconds != INFINITY && lsvc__seconds_to_ns(seconds, true, &ns) != 0))
        return EINVAL;
    if (lock_running(svc)) {
        svc->has_next = true;
        svc->next_ns = lsvc__add_ns(lsvc__now_ns(), ns);
        lsvc__unlock_kick(svc, true);
    }
    return 0;
}

int lsvc_set_loop_seconds(lsvc *svc, double seconds)
{
    int64_t ns;

    if (svc == NULL || lsvc__interval_to_ns(seconds, &ns) != 0 ||
        !lsvc__interval_fits(svc, ns))
        return EINVAL;
    lsvc__lock(&svc->lock);
    int64_t code = atomic_exchange(&svc->code_interval_ns, ns);
    int64_t now_in_force = atomic_load(&svc->interval_ns);
    /* While a group runs the service on the environment's interval, that
     * one stays in force; the new value is the code's, for later. The
     * same interval again changes nothing, and moves no point. */
    bool overridden = svc->group_owned && now_in_force != code;
    bool changed = !overridden && ns != now_in_force;
    if (changed)
        atomic_store(&svc->interval_ns, ns);
    changed = changed && svc->state == LSVC_THREAD_RUNNING;
    svc->rescheduled |= changed;
    lsvc__unlock_kick(svc, changed);
    return 0;
}

/* Pauses svc; with `wait`, until the run in progress has ended. */
static int pause_service(lsvc *svc, bool wait)
{
    /* A run cannot wait for its own end. */
    bool nowait = !wait || lsvc__is_own_thread(svc);
    int64_t until = lsvc__add_ns(lsvc__now_ns(), lsvc__stop_bound_ns(svc));
    struct timespec ts = lsvc__timespec(until);
    uint64_t generation;
    int rc = 0;

    if (!lock_running(svc))
        return 0;
    svc->paused = true;
    svc->resumed_ns = 0;
    /* Ends an lsvc_sleep. */
    pthread_cond_broadcast(&svc->cond);
    generation = svc->generation;
    svc->pausers++;
    /* The run in progress, or the lease's asking before it. */
    while (!nowait && svc->run_begin_ns != 0 && svc->generation == generation &&
           svc->state == LSVC_THREAD_RUNNING) {
        if (lsvc__now_ns() >= until) {
            rc = ETIMEDOUT;
            break;
        }
        lsvc__cond_timedwait(&svc->cond, &svc->lock, &ts);
    }
    svc->pausers--;
    /* A sleeping service wakes once, to sleep again until the resume: a
     * paused one is due at no time (lsvc_healthy, the control socket) and
     * wakes no timer (its timer slack's share of the process's rate). */
    lsvc__unlock_kick(svc, true);
    return rc;
}

int lsvc_pause(lsvc *svc)
{
    return svc == NULL ? EINVAL : pause_service(svc, true);
}

void lsvc__pause_nowait(lsvc *svc)
{
    pause_service(svc, false);
}

int lsvc_resume(lsvc *svc)
{
    if (svc == NULL)
        return EINVAL;
    if (lock_running(svc)) {
        bool paused = svc->paused;
        if (paused) {
            svc->paused = false;
            svc->resumed_ns = svc->progress_ns = lsvc__now_ns();
            svc->progressed = true;
        }
        lsvc__unlock_kick(svc, paused);
    }
    return 0;
}

int lsvc_get_run_info(const lsvc *svc, lsvc_run_info *out)
{
    lsvc *s = (lsvc *)svc; /* the lock is not part of the value */

    if (s == NULL || out == NULL)
        return EINVAL;
    lsvc__lock(&s->lock);
    bool in_run = s->in_run;
    if (in_run)
        *out = (lsvc_run_info){
            .reasons = s->run_reasons,
            .wake_bits = s->run_wake_bits,
            .due = lsvc__timespec(atomic_load(&s->due_ns)),
            .start = lsvc__timespec(s->run_begin_ns),
            .prev_start = lsvc__timespec(s->prev_start_ns),
            .run = s->runs_begun,
        };
    lsvc__unlock(&s->lock);
    return in_run ? 0 : EAGAIN;
}

int lsvc_lease_token(const lsvc *svc, uint64_t *token)
{
    lsvc *s = (lsvc *)svc; /* the lock is not part of the value */
    int rc;

    if (s == NULL || token == NULL)
        return EINVAL;
    lsvc__lock(&s->lock);
    if (!s->in_run || !s->leased)
        rc = EAGAIN;
    else if (!s->run_has_token)
        rc = ENOTSUP;
    else
        rc = 0;
    if (rc == 0)
        *token = s->run_token;
    lsvc__unlock(&s->lock);
    return rc;
}

int lsvc_lease_valid_for(const lsvc *svc, double *seconds)
{
    lsvc *s = (lsvc *)svc; /* the lock is not part of the value */
    int64_t until = 0;

    if (s == NULL || seconds == NULL)
        return EINVAL;
    lsvc__lock(&s->lock);
    bool leased = s->in_run && s->leased;
    lsvc__unlock(&s->lock);
    if (!leased)
        return EAGAIN;
    if (s->opts.lease->deadline == NULL)
        return ENOTSUP;
    /* The lease's own lock, not ours: a run may ask while its thread
     * renews. */
    int rc = s->opts.lease->deadline(s->opts.lease_ctx, s, &until);
    if (rc != 0)
        return rc;
    int64_t left = until - lsvc__now_ns();
    *seconds = left > 0 ? (double)left / 1e9 : 0;
    return 0;
}
