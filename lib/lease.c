/*
 * The lease step of a run: before each due run of a service that has a
 * lease, ask it whether this replica holds it, and run only if so.
 *
 * Everything here happens on the service thread and calls the lease with
 * no library lock held, so a slow store delays this service alone. The
 * service thread is the only writer of the lease fields of its stats,
 * which is why it may read them without the lock.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* What the lease tells of the other replicas: the last success on any,
 * and a WARNING when this replica, not holding the lease, finds that none
 * has run the service for its orphaned limit (health.c judges), with an
 * INFO once one has again. */
static void follow_cluster(lsvc *svc, bool held, int64_t now)
{
    const lsvc_lease_ops *ops = svc->opts.lease;
    int64_t success = 0;
    const char *why = NULL;

    if (ops->last_success == NULL)
        return;
    if (ops->last_success(svc->opts.lease_ctx, svc, &success) != 0)
        success = 0;
    lsvc__stats_cluster(svc, success, now);
    bool orphaned = !held && !lsvc_healthy(svc, &why) &&
                    strcmp(why, "orphaned") == 0;
    if (orphaned && !svc->orphan_told)
        lsvc__log(LSVC_LOG_WARNING, svc->logger,
                  "No replica has run %s successfully for %.1f s, more than "
                  "%g of its intervals: the replica that holds its lease does "
                  "not run it, its runs fail, or no replica holds it.",
                  svc->name,
                  (double)(now - (success != 0 ? success
                                  : svc->cluster_since_ns)) / 1e9,
                  svc->health.orphaned_after);
    else if (!orphaned && svc->orphan_told)
        lsvc__log(LSVC_LOG_INFO, svc->logger,
                  "%s runs again: %s.", svc->name,
                  held ? "this replica holds its lease now"
                       : "a replica ran it successfully");
    svc->orphan_told = orphaned;
}

/* what: what could not be learnt, the object of "Could not ...". */
static void warn_error(lsvc *svc, const char *what, int rc, int64_t now_ns)
{
    uint64_t suppressed;
    char why[128];

    if (!lsvc__ratelimit_admit(&svc->lease_rl, now_ns, &suppressed))
        return;
    lsvc__strerror(rc, why, sizeof why);
    lsvc__log(LSVC_LOG_WARNING, svc->logger,
              "Could not %s of %s: %s. Skipping its run.%s", what,
              svc->name, why, suppressed ? " Later such warnings are "
              "suppressed for a minute at a time." : "");
}

/* Asks the lease, and for a holding its fencing token (*has_token when
 * the lease gives tokens). */
enum lsvc_lease_answer lsvc__lease_acquire(lsvc *svc, uint64_t *token,
                                           bool *has_token)
{
    const lsvc_lease_ops *ops = svc->opts.lease;
    bool held = false;
    int rc = ops->acquire(svc->opts.lease_ctx, svc, &held);

    /* An ask that a stop ended tells nothing, and the service stops. */
    if (rc == ECANCELED && lsvc_should_stop(svc))
        return LSVC_LEASE_CANCELED;
    const char *what = "learn whether this replica holds the lease";

    *has_token = held && rc == 0 && ops->token != NULL;
    if (*has_token && (rc = ops->token(svc->opts.lease_ctx, svc, token)) != 0) {
        /* Held, but no run may go unfenced: the lease is given up, so
         * that another replica can take it rather than wait for it. */
        *has_token = false;
        what = "get the fencing token of the lease";
        if (ops->release != NULL)
            ops->release(svc->opts.lease_ctx, svc);
    }
    int64_t now = lsvc__now_ns();

    if (rc != 0) {
        held = false;
        warn_error(svc, what, rc, now);
    }
    enum lsvc_lease_answer answer = held      ? LSVC_LEASE_HELD
                                    : rc == 0 ? LSVC_LEASE_ELSEWHERE
                                              : LSVC_LEASE_UNKNOWN;
    /* Held before and now, but with another token: another holding came
     * between (the lease was lost and taken again between two asks). */
    if (held && svc->stats.lease_held && *has_token &&
        *token != svc->lease_token) {
        lsvc__stats_lease_change(svc, false, now);
        lsvc__stats_lease_change(svc, true, now);
        lsvc__log(LSVC_LOG_INFO, svc->logger,
                  "This replica holds the lease of %s anew, with fencing "
                  "token %llu (it had %llu): another holding came between.",
                  svc->name, (unsigned long long)*token,
                  (unsigned long long)svc->lease_token);
    }
    if (*has_token)
        svc->lease_token = *token;
    if (held != svc->stats.lease_held) {
        lsvc__stats_lease_change(svc, held, now);
        if (held)
            lsvc__log(LSVC_LOG_INFO, svc->logger,
                      "This replica now holds the lease of %s: it runs here.",
                      svc->name);
        else
            lsvc__log(LSVC_LOG_INFO, svc->logger,
                      "This replica lost the lease of %s: another replica "
                      "may run it now.", svc->name);
    }
    follow_cluster(svc, held, now);
    return answer;
}

void lsvc__lease_release(lsvc *svc)
{
    if (!svc->leased || !svc->stats.lease_held)
        return;
    if (svc->opts.lease->release != NULL)
        svc->opts.lease->release(svc->opts.lease_ctx, svc);
    lsvc__stats_lease_change(svc, false, 0);
    lsvc__log(LSVC_LOG_INFO, svc->logger,
              "Released the lease of %s as it stops.", svc->name);
}

void lsvc__lease_ran(lsvc *svc, int result)
{
    if (svc->opts.lease->ran != NULL)
        svc->opts.lease->ran(svc->opts.lease_ctx, svc, result);
}
