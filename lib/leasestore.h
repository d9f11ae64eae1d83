/*
 * The lease store: what the store-backed leases (loopsvc-pg) share. One
 * store object serves every service of the process that uses it, over one
 * connection that only the store's own thread touches. That thread takes,
 * renews and gives up leases in batched round trips; a service asks it
 * only for a lease it does not hold, and a holder checks a local deadline
 * on CLOCK_MONOTONIC before each run instead of waiting for the store.
 *
 * A driver supplies the connection and the one round trip that carries a
 * batch; everything about when to send what lives here. Compiled into
 * each lease library, hidden.
 */
#ifndef LOOPSVC_LEASESTORE_H
#define LOOPSVC_LEASESTORE_H

#include "loopsvc.h"

#include <stddef.h>
#include <stdint.h>

enum lsvc__lease_op {
    LSVC__TAKE,    /* gain the lease when it is free or lapsed */
    LSVC__RENEW,   /* extend this holding (same token) */
    LSVC__RELEASE, /* give this holding up */
};

/* One lease in a round trip. */
struct lsvc__lease_item {
    const char *id;         /* the driver's name of the lease */
    enum lsvc__lease_op op;
    uint64_t token;         /* RENEW, RELEASE: the holding's token */
    int64_t ttl_ms;         /* TAKE, RENEW: how long the store keeps it */
    int64_t ago_ms;         /* RELEASE: how long ago the holding's last run
                             * began, which the store keeps as its end */
    int64_t success_ago_ms; /* RENEW, RELEASE: how long ago a run last
                             * succeeded here, for the store to keep; -1
                             * for no news */
    bool stored;            /* the store is known to keep a record of the
                             * lease; the driver sets it once it does */
    /* The answer, filled by the driver. */
    bool ok;                /* TAKE: held (gained, or still this store's);
                             * RENEW: extended; RELEASE: given up */
    uint64_t new_token;     /* TAKE, RENEW: the token of the holding */
    bool fresh;             /* TAKE: a new holding (not this store's own
                             * taken back) */
    int64_t gap_ms;         /* TAKE, fresh: how long before the take the
                             * previous holding ended, by the store's
                             * clock (negative: it had not);
                             * LSVC__NO_GAP: there was none */
    int64_t success_age_ms; /* TAKE, held or not: how long before now a run
                             * last succeeded on any replica, by the
                             * store's record; LSVC__NO_GAP: unknown */
};

#define LSVC__NO_GAP INT64_MAX

/* What a driver does, on the store's thread but for make_id. connect and
 * exchange, which wait for the store, are called with no lock held;
 * make_id, socket and disconnect, which do not, may be called with the
 * store's mutex held, and none of them may call back into the store or
 * into user code (lsvc_log is fine only without the mutex: connect,
 * exchange, idle_input). `why` takes a reason for the log when a call
 * fails. */
struct lsvc__store_driver {
    /* The id of the lease of service `name`, malloc'd (NULL: no memory).
     * Any thread. */
    char *(*make_id)(void *drv, const char *name);
    /* Makes the connection; 0 or a positive errno value. */
    int (*connect)(void *drv, char *why, size_t size);
    /* The descriptor to watch between round trips: readable means the
     * store said something unasked (an error, a closed session). */
    int (*socket)(void *drv);
    /* Reads what made the socket readable: 0 while the connection is
     * still good, else it is lost (and closed). */
    int (*idle_input)(void *drv, char *why, size_t size);
    /* One round trip for items[0..n). A nonzero return means the answers
     * are unknown; the store then calls disconnect. */
    int (*exchange)(void *drv, struct lsvc__lease_item *items, size_t n,
                    char *why, size_t size);
    /* Closes the connection, if there is one. */
    void (*disconnect)(void *drv);
};

struct lsvc__store;

/* label names the store in log lines ("PostgreSQL"), and must outlive
 * it; ttl_ns: how long the store keeps a lease past the request that took
 * or renewed it; timeout_ns bounds a connect and a round trip. */
int lsvc__store_create(struct lsvc__store **out,
                       const struct lsvc__store_driver *driver, void *drv,
                       const char *label, int64_t timeout_ns,
                       int64_t ttl_ns);
/* EBUSY while a service is inside a call on it. Gives up the leases held
 * (one round trip, bounded by the timeout) and closes the connection. */
int lsvc__store_destroy(struct lsvc__store *st);
/* The lease callbacks; ctx is the store. */
extern const lsvc_lease_ops lsvc__store_ops;

/* CLOCK_MONOTONIC, in ns. */
int64_t lsvc__store_now_ns(void);

/* A name for a lease object that no other has: the host and process, for
 * an operator who reads it, and 64 random bits. */
void lsvc__store_name_holder(char *buf, size_t size);

/* Writes text as one line of at most size - 1 bytes: line breaks become
 * sentence breaks, other control characters and runs of blanks one space,
 * and a final period goes. */
void lsvc__one_line(char *out, size_t size, const char *text);
/* What ends a sentence that ends with text: "" after ? and !, else ".". */
const char *lsvc__stop_after(const char *text);

#endif /* LOOPSVC_LEASESTORE_H */
