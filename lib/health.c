/*
 * Health: whether a service makes progress, by three rules over a
 * snapshot of its state (stats.c takes the snapshot under the service's
 * lock; the rules need no lock).
 *
 *  - stuck:   one run has lasted more than stuck_after intervals;
 *  - failing: the last `failures` runs failed in a row;
 *  - stale:   between runs, not paused, and nothing has shown progress
 *             for stale_after intervals, and at least LSVC_STALE_MIN_NS
 *             (so that scheduling noise on a busy machine does not make
 *             a short-interval service unhealthy); a run put off on
 *             purpose after progress moves the count's start, and a
 *             service that waits for a wake is never stale;
 *  - orphaned: leased, not held here, and no replica has succeeded for
 *             orphaned_after intervals, and at least LSVC_STALE_MIN_NS,
 *             by what the lease tells (cluster_ns).
 *
 * A service that is not running, or is paused, is not judged.
 */
#include "internal.h"

#include <errno.h>

const struct lsvc_health_limits lsvc__health_defaults = {
    .stuck_after = 10,
    .failures = 3,
    .stale_after = 3,
    .orphaned_after = 5,
};

/* Whether `elapsed` is more than `times` intervals. */
static bool longer_than(int64_t elapsed, double times, int64_t interval_ns)
{
    return interval_ns != LSVC_FOREVER &&
           (double)elapsed > times * (double)interval_ns;
}

static bool orphaned(const struct lsvc_health_view *v)
{
    int64_t unrun = v->now_ns - v->cluster_ns;

    return v->cluster_ns != 0 && unrun > LSVC_STALE_MIN_NS &&
           longer_than(unrun, v->limits.orphaned_after, v->interval_ns);
}

const char *lsvc__health(const struct lsvc_health_view *v)
{
    const struct lsvc_health_limits *l = &v->limits;

    if (!v->running || v->paused)
        return NULL;
    if (v->run_begin_ns != 0 &&
        longer_than(v->now_ns - v->run_begin_ns, l->stuck_after,
                    v->interval_ns))
        return "stuck";
    if (v->consecutive_failures >= l->failures)
        return "failing";
    /* Judged whatever this replica is doing, the asking of its lease
     * included. */
    if (v->run_begin_ns != 0 || v->next_due_ns == LSVC_FOREVER)
        return orphaned(v) ? "orphaned" : NULL;
    /* A run put off on purpose after progress (lsvc_next_run_in after a
     * success) is not overdue: the count starts an interval before it
     * is due. After a failure it is not moved, or a service whose every
     * run fails would never be stale. */
    int64_t since = v->progress_ns;
    if (v->progressed && v->next_due_ns != 0 &&
        v->interval_ns != LSVC_FOREVER &&
        v->next_due_ns - v->interval_ns > since)
        since = v->next_due_ns - v->interval_ns;
    int64_t idle = v->now_ns - since;
    if (idle > LSVC_STALE_MIN_NS &&
        longer_than(idle, l->stale_after, v->interval_ns))
        return "stale";
    return orphaned(v) ? "orphaned" : NULL;
}

bool lsvc_healthy(const lsvc *svc, const char **why)
{
    struct lsvc_health_view v;
    const char *reason = "invalid";

    if (svc != NULL) {
        lsvc__stats_health_view(svc, &v);
        reason = lsvc__health(&v);
    }
    if (why != NULL)
        *why = reason;
    return reason == NULL;
}
