/*
 * Stats: the counters a service keeps across its starts, and the
 * consistent snapshot of them that other threads read.
 *
 * Every counter changes under the service's lock, in one critical section
 * per run end, so a snapshot never shows a run counted in `loops` but not
 * yet in `errors` or `overruns`.
 */
#include "internal.h"

#include <errno.h>

/* Called with the lock held, just before run_once. */
void lsvc__stats_begin_run(lsvc *svc, int64_t due_ns, int64_t late_from_ns,
                           int64_t begin_ns, bool woken)
{
    int64_t late = begin_ns - late_from_ns;

    lsvc__assert_held(&svc->lock);
    if (woken)
        svc->stats.wakes++;
    atomic_store_explicit(&svc->due_ns, due_ns, memory_order_relaxed);
    svc->run_begin_ns = begin_ns;
    svc->counts.last_lateness_ns = late;
    if (late > svc->counts.max_lateness_ns)
        svc->counts.max_lateness_ns = late;
    if (svc->histograms)
        lsvc__hist_observe(&svc->hist[LSVC_HISTOGRAM_LATENESS], late);
}

/* Called with the lock held, as run_once has returned at end_ns. */
void lsvc__stats_end_run(lsvc *svc, int64_t end_ns, int64_t run_ns,
                         bool failed, bool overrun, uint64_t skipped)
{
    lsvc__assert_held(&svc->lock);
    if (svc->histograms)
        lsvc__hist_observe(&svc->hist[LSVC_HISTOGRAM_DURATION], run_ns);
    svc->run_begin_ns = 0;
    svc->progressed = !failed;
    if (!failed)
        svc->counts.last_success_ns = svc->progress_ns = end_ns;
    svc->counts.loops++;
    svc->counts.consecutive_failures =
        failed ? svc->counts.consecutive_failures + 1 : 0;
    svc->counts.last_run_ns = run_ns;
    if (run_ns > svc->counts.max_run_ns)
        svc->counts.max_run_ns = run_ns;
    /* The rest of stats is written only when it changes: most runs
     * leave its cache lines alone. */
    if (failed)
        svc->stats.errors++;
    if (overrun)
        svc->stats.overruns++;
    if (skipped != 0)
        svc->stats.missed += skipped;
}

/* A due run not made: the lease is not held here, by another replica
 * (elsewhere, which is progress: the chore is that replica's), or as far
 * as this one can tell. Lock held. */
void lsvc__stats_skip_run(lsvc *svc, uint64_t missed, bool elsewhere)
{
    lsvc__assert_held(&svc->lock);
    svc->progressed = elsewhere;
    if (elsewhere)
        svc->progress_ns = lsvc__now_ns();
    svc->run_begin_ns = 0;
    svc->stats.skipped_not_leader++;
    svc->stats.missed += missed;
}

/* This replica gained (held) or lost the lease at now_ns. */
void lsvc__stats_lease_change(lsvc *svc, bool held, int64_t now_ns)
{
    lsvc__lock(&svc->lock);
    svc->stats.lease_held = held;
    svc->stats.lease_since_ns = held ? now_ns : 0;
    svc->stats.lease_changes++;
    lsvc__unlock(&svc->lock);
}

void lsvc__stats_cluster(lsvc *svc, int64_t success_ns, int64_t now_ns)
{
    lsvc__lock(&svc->lock);
    svc->stats.cluster_success_ns = success_ns;
    if (svc->cluster_since_ns == 0)
        svc->cluster_since_ns = now_ns;
    lsvc__unlock(&svc->lock);
}

/* Lock held. */
static void snapshot(const lsvc *svc, lsvc_stats *out)
{
    lsvc__assert_held(&svc->lock);
    const struct lsvc_run_counts *c = &svc->counts;

    *out = svc->stats;
    out->loops = c->loops;
    out->consecutive_failures = c->consecutive_failures;
    out->last_run_ns = c->last_run_ns;
    out->max_run_ns = c->max_run_ns;
    out->last_lateness_ns = c->last_lateness_ns;
    out->max_lateness_ns = c->max_lateness_ns;
    out->last_success_ns = c->last_success_ns;
    out->running = svc->state == LSVC_THREAD_RUNNING;
    out->paused = out->running && svc->paused;
}

/* Lock held. */
static void health_view(const lsvc *svc, struct lsvc_health_view *out)
{
    lsvc__assert_held(&svc->lock);
    *out = (struct lsvc_health_view){
        .running = svc->state == LSVC_THREAD_RUNNING,
        .paused = svc->paused,
        .now_ns = lsvc__now_ns(),
        .run_begin_ns = svc->run_begin_ns,
        .interval_ns = svc->interval_ns,
        .progress_ns = svc->progress_ns,
        .progressed = svc->progressed,
        .next_due_ns = svc->next_due_ns,
        .consecutive_failures = svc->counts.consecutive_failures,
        .limits = svc->health,
    };
    if (svc->cluster_since_ns != 0 && !svc->stats.lease_held)
        out->cluster_ns = svc->stats.cluster_success_ns != 0
                          ? svc->stats.cluster_success_ns
                          : svc->cluster_since_ns;
}

void lsvc__stats_health_view(const lsvc *svc, struct lsvc_health_view *out)
{
    lsvc *s = (lsvc *)svc; /* the lock is not part of the value */

    lsvc__lock(&s->lock);
    health_view(s, out);
    lsvc__unlock(&s->lock);
}

void lsvc__stats_status(const lsvc *svc, struct lsvc_status *out)
{
    lsvc *s = (lsvc *)svc;
    struct lsvc_health_view view;

    lsvc__lock(&s->lock);
    snapshot(s, &out->stats);
    health_view(s, &view);
    out->interval_ns = s->interval_ns;
    out->in_run = s->run_begin_ns != 0;
    out->next_due_ns = out->in_run ? 0 : s->next_due_ns;
    out->last_start_ns = s->last_start_ns;
    lsvc__unlock(&s->lock);
    out->health = lsvc__health(&view);
}

void lsvc__stats_start_failed(lsvc *svc)
{
    lsvc__lock(&svc->lock);
    svc->stats.errors++;
    lsvc__unlock(&svc->lock);
}

int lsvc_get_stats(const lsvc *svc, lsvc_stats *out)
{
    lsvc *s = (lsvc *)svc; /* the lock is not part of the value */

    if (s == NULL || out == NULL)
        return EINVAL;
    lsvc__lock(&s->lock);
    snapshot(s, out);
    lsvc__unlock(&s->lock);
    return 0;
}

int lsvc_scheduled_start(const lsvc *svc, struct timespec *out)
{
    int64_t due;

    if (svc == NULL || out == NULL)
        return EINVAL;
    /* One value, read without the lock: a run_once that reads its own
     * due time, as many do, pays no lock round for it. */
    due = atomic_load_explicit(&((lsvc *)svc)->due_ns, memory_order_relaxed);
    if (due == 0)
        return EAGAIN;
    *out = lsvc__timespec(due);
    return 0;
}
