/*
 * Schedule maths: turning the public edge's seconds into nanoseconds, and
 * deciding when the next run is due.
 *
 * Every due time is an absolute CLOCK_MONOTONIC time derived from the
 * previous due time, never from when a run happened to start, so wake-up
 * lateness does not accumulate into the schedule. CLOCK_MONOTONIC does not
 * move when the wall clock is set, so neither does the schedule.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>

int lsvc__seconds_to_ns(double seconds, bool zero_ok, int64_t *out)
{
    if (!isfinite(seconds) || seconds < 0 || seconds > LSVC_MAX_SECONDS)
        return EINVAL;
    int64_t ns = (int64_t)llround(seconds * 1e9);
    if (ns == 0 && !zero_ok)
        return EINVAL; /* below 1 ns rounds to nothing */
    *out = ns;
    return 0;
}

int lsvc__interval_to_ns(double seconds, int64_t *out)
{
    if (seconds == INFINITY) {
        *out = LSVC_FOREVER;
        return 0;
    }
    return lsvc__seconds_to_ns(seconds, false, out);
}

/* Saturates instead of overflowing, so "forever" stays forever. */
int64_t lsvc__add_ns(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    return a + b;
}

/* What the next due time counts from: the run's due time, except under
 * DELAY for a run that started more than the tolerance late (a slow
 * lease, a stalled machine), whose actual start is the new base. Lateness
 * within the tolerance never moves the grid, and two starts are never
 * closer than the interval minus the tolerance: without the re-base, the
 * run after a late one would be due at once. */
int64_t lsvc__run_base(lsvc_missed policy, int64_t due_ns, int64_t begin_ns,
                       int64_t interval_ns)
{
    int64_t tolerance = interval_ns / 2;

    if (tolerance > LSVC_DELAY_TOLERANCE_NS)
        tolerance = LSVC_DELAY_TOLERANCE_NS;
    if (policy == LSVC_MISSED_DELAY && begin_ns - due_ns > tolerance)
        return begin_ns;
    return due_ns;
}

/* The first point of the grid due_ns + k * interval_ns (k >= 0) at or
 * after at_ns. */
int64_t lsvc__grid_point(int64_t due_ns, int64_t interval_ns, int64_t at_ns)
{
    if (due_ns >= at_ns)
        return due_ns;
    uint64_t behind = (uint64_t)(at_ns - due_ns);
    uint64_t step = (uint64_t)interval_ns;
    uint64_t steps = (behind + step - 1) / step;
    return lsvc__add_ns(due_ns, (int64_t)(steps * step));
}

int64_t lsvc__next_due(lsvc_missed policy, int64_t due_ns,
                       int64_t interval_ns, int64_t now_ns, uint64_t *skipped)
{
    int64_t next = lsvc__add_ns(due_ns, interval_ns);

    *skipped = 0;
    switch (policy) {
    case LSVC_MISSED_BURST:
        return next;
    case LSVC_MISSED_SKIP: {
        int64_t at = lsvc__grid_point(next, interval_ns, now_ns);
        *skipped = (uint64_t)((at - next) / interval_ns);
        return at;
    }
    case LSVC_MISSED_DELAY:
    default:
        return next > now_ns ? next : now_ns;
    }
}

/* --- A service thread's schedule ------------------------------------------ */

static int64_t wall_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * LSVC_NS_PER_SEC + ts.tv_nsec;
}

/* The first point n * interval + offset (on CLOCK_REALTIME) at or after
 * at_ns. */
static int64_t aligned_point(const lsvc *svc, int64_t at_ns)
{
    int64_t interval = svc->interval_ns;
    int64_t k = (at_ns - svc->offset_ns) / interval;
    int64_t point = k * interval + svc->offset_ns;

    return point < at_ns ? point + interval : point;
}

/* A uniformly random 0..jitter_ns for the run of a new point. */
static void pick_jitter(const lsvc *svc, struct lsvc_sched *sc)
{
    sc->jitter = 0;
    if (svc->jitter_ns == 0 || sc->due == LSVC_FOREVER)
        return;
    sc->rng ^= sc->rng << 13; /* xorshift64 */
    sc->rng ^= sc->rng >> 7;
    sc->rng ^= sc->rng << 17;
    sc->jitter = (int64_t)(sc->rng % ((uint64_t)svc->jitter_ns + 1));
}

/* The next point, on CLOCK_MONOTONIC, jittered or not. */
static void set_point(const lsvc *svc, struct lsvc_sched *sc, int64_t due_ns,
                      bool jittered)
{
    sc->due = due_ns;
    sc->wall = 0;
    if (jittered)
        pick_jitter(svc, sc);
    else
        sc->jitter = 0;
}

/* The next point, on the wall clock. */
static void set_wall_point(const lsvc *svc, struct lsvc_sched *sc,
                           int64_t wall_ns)
{
    sc->wall = wall_ns;
    sc->due = lsvc__now_ns() + (wall_ns - wall_now_ns());
    pick_jitter(svc, sc);
}

void lsvc__sched_init(const lsvc *svc, struct lsvc_sched *sc, int64_t now_ns)
{
    *sc = (struct lsvc_sched){
        .rng = (lsvc__thread_token() * UINT64_C(0x9E3779B97F4A7C15)) ^
               (uint64_t)now_ns,
        .reasons = LSVC_RUN_FIRST,
    };
    sc->rng |= 1;
    /* What the start made of the first run: an interval set since then
     * is a change that lsvc__sched_interval_changed applies. */
    if (svc->started_never)
        set_point(svc, sc, LSVC_FOREVER, false);
    else if (svc->align_to_clock)
        set_wall_point(svc, sc, aligned_point(svc, lsvc__add_ns(
                                    wall_now_ns(), svc->initial_delay_ns)));
    else
        set_point(svc, sc, lsvc__add_ns(now_ns, svc->initial_delay_ns), true);
}

/* When the next point's run is due, after a step of the wall clock has
 * moved a wall point. */
int64_t lsvc__sched_target(struct lsvc_sched *sc, int64_t now_ns)
{
    if (sc->wall != 0)
        sc->due = now_ns + (sc->wall - wall_now_ns());
    return lsvc__add_ns(sc->due, sc->jitter);
}

/* lsvc_next_run_in: exactly then, with no jitter. */
void lsvc__sched_set(struct lsvc_sched *sc, int64_t due_ns)
{
    sc->due = due_ns;
    sc->wall = 0;
    sc->jitter = 0;
}

/* Points passed while paused are not missed: DELAY (and a fixed delay)
 * runs at once, SKIP and BURST go on at their next point. */
void lsvc__sched_resume(const lsvc *svc, struct lsvc_sched *sc,
                        int64_t resumed_ns)
{
    sc->reasons |= LSVC_RUN_RESUMED;
    if (sc->due >= resumed_ns)
        return;
    if (svc->fixed_delay || svc->missed == LSVC_MISSED_DELAY)
        set_point(svc, sc, resumed_ns, false);
    else if (sc->wall != 0)
        set_wall_point(svc, sc, aligned_point(svc, wall_now_ns()));
    else
        set_point(svc, sc, lsvc__grid_point(sc->due, svc->interval_ns,
                                            resumed_ns), true);
}

/* lsvc_set_loop_seconds: the next point is the new interval after the
 * last run began (with a fixed delay, ended), or now. */
void lsvc__sched_interval_changed(const lsvc *svc, struct lsvc_sched *sc,
                                  int64_t last_start_ns, int64_t last_end_ns,
                                  int64_t now_ns)
{
    int64_t interval = svc->interval_ns;

    if (interval == LSVC_FOREVER)
        set_point(svc, sc, LSVC_FOREVER, false);
    else if (sc->reasons & LSVC_RUN_FIRST)
        /* No run yet: the first keeps its time, unless it had none. */
        set_point(svc, sc, sc->due != LSVC_FOREVER
                               ? sc->due
                               : lsvc__add_ns(now_ns, interval), true);
    else if (svc->align_to_clock)
        set_wall_point(svc, sc, aligned_point(svc, wall_now_ns()));
    else {
        /* The new interval after the last run; at once if that is past,
         * with no missed point counted or run: the points of the old
         * interval were never on this schedule. */
        int64_t next = lsvc__add_ns(svc->fixed_delay ? last_end_ns
                                                     : last_start_ns,
                                    interval);
        set_point(svc, sc, next > now_ns ? next : now_ns, true);
    }
}

/* interval * 2^failures, at most the backoff maximum. */
static int64_t backoff_ns(const lsvc *svc, int64_t interval,
                          uint64_t failures)
{
    int64_t backoff = interval;

    for (uint64_t k = 0; k < failures && backoff < svc->backoff_max_ns; k++)
        backoff = lsvc__add_ns(backoff, backoff);
    return backoff < svc->backoff_max_ns ? backoff : svc->backoff_max_ns;
}

/* With align_to_clock, the point after a run's: the next on the wall
 * clock, or when that is past already, the first after now, under every
 * policy: a step of the wall clock is no work missed. Returns the points
 * skipped, which SKIP counts. */
static uint64_t next_wall_point(const lsvc *svc, struct lsvc_sched *sc)
{
    int64_t interval = svc->interval_ns;
    int64_t now_wall = wall_now_ns();
    int64_t next = sc->wall != 0 ? lsvc__add_ns(sc->wall, interval)
                                 : aligned_point(svc, now_wall + 1);
    uint64_t skipped = 0;

    if (next < now_wall) {
        int64_t at = aligned_point(svc, now_wall);
        if (svc->missed == LSVC_MISSED_SKIP)
            skipped = (uint64_t)((at - next) / interval);
        next = at;
    }
    set_wall_point(svc, sc, next);
    return skipped;
}

/* The next point after a run that ended at end_ns. A run only asked for
 * leaves the point where it was; a failed one, with a backoff, puts it
 * interval * 2^k after its start. Returns the points skipped. */
uint64_t lsvc__sched_after_run(const lsvc *svc, struct lsvc_sched *sc,
                               const struct lsvc_point *run, int64_t end_ns,
                               bool failed)
{
    int64_t interval = svc->interval_ns;
    uint64_t skipped = 0;

    sc->failures = failed ? sc->failures + 1 : 0;
    if (interval == LSVC_FOREVER)
        return 0;
    if (failed && svc->backoff_max_ns != 0) {
        set_point(svc, sc, lsvc__add_ns(run->begin, backoff_ns(svc, interval,
                                                               sc->failures)),
                  false);
    } else if (svc->fixed_delay) {
        set_point(svc, sc, lsvc__add_ns(end_ns, interval), true);
    } else if (!(run->reasons & LSVC_RUN_TIMER)) {
        return 0;
    } else if (svc->align_to_clock) {
        skipped = next_wall_point(svc, sc);
    } else {
        /* Jitter never moves the grid: lateness counts from the jittered
         * start, and the base is the grid point under it. */
        int64_t base = lsvc__run_base(svc->missed, run->due + run->jitter,
                                      run->begin, interval) -
                       run->jitter;
        set_point(svc, sc, lsvc__next_due(svc->missed, base, interval,
                                          end_ns, &skipped), true);
    }
    return skipped;
}

/* The lease did not let the run happen: a run due by the interval moves
 * on to its next point. Returns the points skipped. */
uint64_t lsvc__sched_skip(const lsvc *svc, struct lsvc_sched *sc,
                          const struct lsvc_point *run, int64_t now_ns)
{
    uint64_t skipped = 0;

    if (!(run->reasons & LSVC_RUN_TIMER) || svc->interval_ns == LSVC_FOREVER)
        return 0;
    if (svc->align_to_clock)
        return next_wall_point(svc, sc);
    set_point(svc, sc, lsvc__next_due(svc->missed, run->due,
                                      svc->interval_ns, now_ns, &skipped),
              true);
    return skipped;
}
