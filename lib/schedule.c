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
