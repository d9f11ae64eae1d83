/*
 * The systemd watchdog of a group: WATCHDOG=1 every WATCHDOG_USEC / 2
 * while no service of the group is stuck.
 *
 * A ping from a thread of its own proves only that this thread lives;
 * what systemd needs to know is whether the chores still make progress.
 * So a ping is withheld while any service has been in one run for more
 * than `stuck_after` of its intervals, and WatchdogSec= restarts a process
 * whose chores hang. A service asleep between runs is never stuck, however
 * long its interval.
 *
 * Pings are due on a CLOCK_MONOTONIC grid; a late one moves the grid
 * rather than sending a burst.
 */
#include "internal.h"

#include <errno.h>

/* Whether svc is stuck now, logging when it becomes stuck and when the
 * stuck run ends. */
static bool check_stuck(struct lsvc_watchdog *w, struct lsvc_member *m,
                        int64_t now)
{
    lsvc *svc = m->svc;
    int64_t begin = lsvc__stats_run_begin(svc);
    int64_t interval = svc->interval_ns;
    double limit = w->stuck_after * (double)interval;

    bool stuck = begin != 0 && (double)(now - begin) > limit;
    if (stuck && m->stuck_run_ns != begin) {
        m->stuck_run_ns = begin;
        lsvc__log(LSVC_LOG_WARNING, svc->logger,
                  "%s has been in one run for %.3g s, more than %g times its "
                  "interval of %g s: it counts as stuck, and the systemd "
                  "watchdog is not pinged until the run ends.",
                  svc->name, (double)(now - begin) / 1e9, w->stuck_after,
                  (double)interval / 1e9);
    } else if (!stuck && m->stuck_run_ns != 0 && m->stuck_run_ns != begin) {
        m->stuck_run_ns = 0;
        lsvc__log(LSVC_LOG_INFO, svc->logger,
                  "%s's stuck run has ended: pinging the systemd watchdog "
                  "again.",
                  svc->name);
    }
    return stuck;
}

static void *watchdog_main(void *arg)
{
    struct lsvc_watchdog *w = arg;
    int64_t period = w->notifier->watchdog_ns;
    int64_t due = lsvc__now_ns();

    lsvc__thread_name("lsvc-watchdog");
    atomic_store(&w->token, lsvc__thread_token());
    pthread_mutex_lock(&w->lock);
    while (!w->quit) {
        int64_t now = lsvc__now_ns();

        if (now < due) {
            struct timespec ts = lsvc__timespec(due);
            pthread_cond_timedwait(&w->cond, &w->lock, &ts);
            continue;
        }
        pthread_mutex_unlock(&w->lock);
        bool stuck = false;
        for (size_t i = 0; i < w->count; i++)
            stuck |= check_stuck(w, &w->members[i], now);
        if (!stuck)
            lsvc__notify(w->notifier, "WATCHDOG=1");
        lsvc__notifier_log_errors(w->notifier);
        due = lsvc__add_ns(due, period);
        if (due < now)
            due = now;
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int lsvc__watchdog_start(struct lsvc_watchdog *w)
{
    static const lsvc_options defaults;
    pthread_condattr_t cattr;
    pthread_attr_t attr;
    int rc;

    for (size_t i = 0; i < w->count; i++)
        w->members[i].stuck_run_ns = 0;
    w->quit = false;
    if ((rc = pthread_condattr_init(&cattr)) != 0)
        return rc;
    rc = pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&w->cond, &cattr);
    pthread_condattr_destroy(&cattr);
    if (rc != 0)
        return rc;
    if ((rc = pthread_mutex_init(&w->lock, NULL)) != 0)
        goto no_lock;
    if ((rc = lsvc__thread_attr(&attr, &defaults)) != 0)
        goto no_thread;
    rc = lsvc__spawn(&w->thread, &attr, watchdog_main, w);
    pthread_attr_destroy(&attr);
    if (rc == 0)
        return 0;
no_thread:
    pthread_mutex_destroy(&w->lock);
no_lock:
    pthread_cond_destroy(&w->cond);
    return rc;
}

void lsvc__watchdog_stop(struct lsvc_watchdog *w)
{
    pthread_mutex_lock(&w->lock);
    w->quit = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
}
