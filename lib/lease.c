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

#include <stdio.h>
#include <string.h>

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
    if (held == svc->stats.lease_held)
        return answer;
    lsvc__stats_lease_change(svc, held, now);
    if (held)
        lsvc__log(LSVC_LOG_INFO, svc->logger,
                  "This replica now holds the lease of %s: it runs here.",
                  svc->name);
    else
        lsvc__log(LSVC_LOG_INFO, svc->logger,
                  "This replica lost the lease of %s: another replica may run "
                  "it now.", svc->name);
    return answer;
}

void lsvc__lease_release(lsvc *svc)
{
    if (svc->opts.lease == NULL || !svc->stats.lease_held)
        return;
    if (svc->opts.lease->release != NULL)
        svc->opts.lease->release(svc->opts.lease_ctx, svc);
    lsvc__stats_lease_change(svc, false, 0);
    lsvc__log(LSVC_LOG_INFO, svc->logger,
              "Released the lease of %s as it stops.", svc->name);
}
