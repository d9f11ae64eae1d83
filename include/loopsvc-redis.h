/*
 * loopsvc-redis: leases held in Redis, so that of several replicas of a
 * server only one at a time runs a given service. Link with
 * `pkg-config --libs loopsvc-redis` (built when hiredis is found).
 *
 * One lease object serves every service of the process that uses it:
 * call lsvc_redis_lease_options for each. Their leases share one
 * connection, which only the object's own thread uses (started at the
 * first run that asks); however many services there are, a replica holds
 * one connection per lease object, named "loopsvc-lease:<holder>" (CLIENT
 * SETNAME). Each service's lease is the key
 * "loopsvc:lease:<namespace>:<service name>", whose value names the lease
 * object that holds it ("host:pid:random"), with a time to live of
 * LSVC_REDIS_LEASE_TTL_TIMEOUTS timeouts of the object.
 *
 * One script takes, renews and gives up every lease of a round, in one
 * command: a key is taken when it is missing (free, or lapsed); a key
 * that names this object is renewed. The holder renews its leases on the
 * object's thread, each every interval of its service (from 100 ms up to
 * a third of the time to live), all that are nearly due in one round. A
 * run does not wait for Redis: it goes ahead when the lease is held here,
 * which lasts until 98% of the time to live after the request that took
 * or renewed it was sent, by CLOCK_MONOTONIC, since Redis counts the TTL
 * from later (lsvc_lease_valid_for tells a run what is left). A service
 * that does not hold its lease asks the thread to take it before its due
 * run and waits for that round trip; the thread waits up to a twentieth
 * of the interval (at most 2 ms) for other services' takes to share it.
 * A replica that dies, is stopped (SIGSTOP, a debugger, a paused VM) or
 * hangs loses its leases when their keys lapse, one time to live after
 * its last renewal; one that stops gives them up (DEL, if the key still
 * names it).
 *
 * The hash "loopsvc:state:<namespace>:<service name>" keeps, in ms by the
 * server's clock, when the last holding ends or ended ("ended"; for one
 * given up: when its last run began) and when a run last succeeded on
 * any replica ("success", carried by the holder's renewals and read by
 * every replica when it asks: the "orphaned" rule of lsvc_healthy). It
 * has no TTL. A new holder does not run the due point it
 * took the lease at when that was less than half an interval before: the
 * previous holder may have started the point. It runs the next one. So
 * no due point runs on two replicas whose clocks agree within half an
 * interval, as long as each replica's grid is the wall clock's
 * (lsvc_options.align_to_clock) and a due run asks the lease within half
 * an interval of its due time.
 *
 * When the connection fails (a round trip fails or times out, or Redis
 * closes it between round trips), every lease held through it ends here
 * at once; the thread connects again after a backoff of 100 ms that
 * doubles per failure up to 30 s, and finds the keys that still name it
 * its own, with their tokens. The first failure of an outage is logged at
 * WARNING, and so is every failure whose reason changed; the
 * reconnection at INFO (logger "loopsvc").
 *
 * Fencing tokens (lsvc_lease_ops.token, lsvc_lease_token) come from the
 * counter "loopsvc:token:<namespace>:<service name>", which the script
 * increments when it takes a free key (the first token is 1), and which
 * a holding keeps. The counter has no TTL and must outlive every token a
 * sink has seen: an instance without persistence (save "" and appendonly
 * no), a failover to a replica that had not got the last INCR, eviction
 * or a DEL lose it, and tokens start again at 1. A sink then refuses
 * every write of the new holders (their tokens are below its fence) until
 * the counter climbs past it, and then takes tokens equal to ones it saw
 * before, which no longer tell an old holder from a new one: give Redis
 * appendonly yes (appendfsync everysec can lose the last second of INCRs)
 * and noeviction, or after a loss SET the counter above the highest token
 * any sink holds. A replica that sees a lease's tokens go back logs a
 * WARNING. A key held while its counter is gone is given up. Every key
 * must be on one instance (EVAL with many keys: not Redis Cluster, where
 * they are in different slots).
 *
 * The key must not vanish before its TTL, or another replica runs beside
 * the holder: use an instance that does not evict it (maxmemory-policy
 * noeviction, or one of its own), keeps it across a restart and a
 * failover, and whose wall clock is slewed, never stepped (Redis keeps
 * expiry times as wall-clock times). No two replicas start runs while the
 * other may count on the lease as long as the clocks of the replicas run
 * at the same rate as the server's; doc/replicas.md tells the whole
 * guarantee. Host names are resolved with getaddrinfo(), which the
 * timeout does not bound: give an address or a Unix socket where a slow
 * resolver is possible.
 * A service that asks for its lease waits at most two timeouts and 0.1 s
 * (a connect, then the round trip; and up to 2 ms to share it); with no
 * answer by then the ask counts as one that could not tell (ETIMEDOUT:
 * the run is skipped, with a rate-limited WARNING) and the take goes on.
 * A stop ends that wait within 20 ms (a take already on its way is given
 * up once answered). As it stops, a service that holds its lease waits
 * up to one timeout and 0.1 s for its release: give its group a stop
 * timeout above that (lsvc_group_set_stop_timeout).
 *
 * A lease is kept while its service asks for it (or runs): one whose
 * service has not asked for two of its intervals, or for the time to live
 * if that is longer, and is not in a run, is given up, so that a paused
 * service (lsvc_pause) or a stopped one that never heard it held the
 * lease leaves it to the other replicas. A run that hangs keeps it: the
 * service is "stuck" (lsvc_healthy), and the watchdog's to restart.
 *
 * Two services of one name on one lease object would share one lease:
 * while one holds it or asks for it, acquire from the other is EINVAL.
 */
#ifndef LOOPSVC_REDIS_H
#define LOOPSVC_REDIS_H

#include "loopsvc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lsvc_redis_lease lsvc_redis_lease;

/* How long Redis keeps a lease past the request that took or renewed it,
 * in timeouts of the lease object. */
#define LSVC_REDIS_LEASE_TTL_TIMEOUTS 3

/* How long a connect or a round trip may take when the lease's timeout is
 * 0. */
#define LSVC_REDIS_DEFAULT_TIMEOUT 2.0

/*
 * Creates a lease object on the Redis server at address, "host:port"
 * (port 6379 when left out), "unix:/path/to/socket", or either form as a
 * "redis://[:password@]host[:port]" URL, for services in namespace ns. No
 * connection is made here: the object's thread makes it when a service
 * first asks for its lease. ns may not contain ':'. timeout is in
 * seconds, 0 for LSVC_REDIS_DEFAULT_TIMEOUT, at most 3600: it bounds a
 * connect and a round trip, and sets the time to live
 * (LSVC_REDIS_LEASE_TTL_TIMEOUTS timeouts), so a lower timeout hands the
 * leases of a dead or paused replica over sooner. Any thread.
 * Returns EINVAL (a NULL argument, an address that does not parse, a ':'
 * in ns, or a timeout NaN, negative or too large), ENOMEM, or an error
 * of pipe(), pthread_mutex_init() or pthread_cond_init().
 */
LSVC_API int lsvc_redis_lease_create(lsvc_redis_lease **out,
                                     const char *address, const char *ns,
                                     double timeout);

/*
 * Points opts->lease and opts->lease_ctx at the lease object, for
 * lsvc_create; call it for each service that uses the object. Any thread.
 * Returns EINVAL (a NULL argument).
 */
LSVC_API int lsvc_redis_lease_options(lsvc_redis_lease *lease,
                                      lsvc_options *opts);

/*
 * Gives up the leases held through the object (one round trip, bounded by
 * the timeout), closes its connection, ends its thread and frees it. Call
 * it only once every service that uses it has ended (a stop that returned
 * ETIMEDOUT has not). Any thread but the object's services'. Returns
 * EINVAL (NULL), or EBUSY while a service is inside a call on it (and
 * nothing is freed).
 */
LSVC_API int lsvc_redis_lease_destroy(lsvc_redis_lease *lease);

#ifdef __cplusplus
}
#endif

#endif /* LOOPSVC_REDIS_H */
