/*
 * The systemd watchdog of a group: WATCHDOG=1 every WATCHDOG_USEC / 2
 * while every service of the group is healthy (lsvc_healthy).
 *
 * A ping from a thread of its own proves only that this thread lives;
 * what systemd needs to know is whether the chores still make progress.
 * So a ping is withheld while any service is stuck in one run, failing
 * run after run, or stale, and WatchdogSec= restarts a process whose
 * chores no longer make progress. An orphaned service (run by no
 * replica) is the holder's to fix, not this process's.
 *
 * Pings are due on a CLOCK_MONOTONIC grid; a late one moves the grid
 * rather than sending a burst.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

static const char *explain(const char *why)
{
    if (strcmp(why, "stuck") == 0)
        return "it counts as stuck, in one run for longer than its stuck "
               "limit";
    if (strcmp(why, "failing") == 0)
        return "it counts as failing, its last runs having failed in a row";
    return "it counts as stale, with no progress for longer than its stale "
           "limit";
}

/* Whether svc is healthy now, logging when that changes. */
static bool check_health(struct lsvc_member *m)
{
    lsvc *svc = m->svc;
    const char *why;
    bool healthy = lsvc_healthy(svc, &why);

    /* Restarting a replica that does not hold the lease would not make
     * the one that does run. */
    if (!healthy && strcmp(why, "orphaned") == 0) {
        healthy = true;
        why = NULL;
    }

    if (!healthy && m->unhealthy != why)
        lsvc__log(LSVC_LOG_WARNING, svc->logger,
                  "%s is unhealthy: %s. The systemd watchdog is not pinged "
                  "until it is healthy again.", svc->name, explain(why));
    else if (healthy && m->unhealthy != NULL)
        lsvc__log(LSVC_LOG_INFO, svc->logger,
                  "%s is healthy again: pinging the systemd watchdog.",
                  svc->name);
    m->unhealthy = why;
    return healthy;
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
        bool healthy = true;
        for (size_t i = 0; i < w->count; i++)
            healthy &= check_health(&w->members[i]);
        if (healthy)
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
        w->members[i].unhealthy = NULL;
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
