/*
 * loopsvc-redis: leases held in Redis, so that of several replicas of a
 * server only one at a time runs a given service. Link with
 * `pkg-config --libs loopsvc-redis` (built when hiredis is found).
 *
 * A lease is the key "loopsvc:lease:<namespace>:<service name>", whose
 * value is a random token of the holder, set with a time to live of
 * LSVC_REDIS_TTL_INTERVALS intervals of the service. Before each run the
 * lease is asked (on the service thread):
 *  - not held: a script runs SET key token NX PX ttl, and when the key was
 *    set, INCR of the token counter (below); held when the key was set;
 *  - held: a script extends the TTL only if the key still holds this
 *    replica's token; held when it did. The holder counts its TTL from
 *    before it sent the request, and runs only when the reply came within
 *    one interval, so that a run of up to (LSVC_REDIS_TTL_INTERVALS - 1)
 *    intervals ends before its own count says the key lapses. A late reply
 *    gives the key up, so that a replica too slow to run does not keep
 *    it from the others; after a lost reply it tries to extend its own
 *    key first, and takes it anew when it is free;
 *  - no connection: as loopsvc-pg.h says (skipped at once, backoff from
 *    100 ms doubling to 30 s, WARNING at the first failure of an outage).
 * A run that holds the lease may count on it until the key lapses by the
 * holder's count: its TTL after the extension before the run was sent
 * (lsvc_lease_valid_for tells the run what is left). The key is not
 * renewed during a run.
 * When the service stops, a script deletes the key only if it still holds
 * this replica's token (if the last answer was "held"; otherwise the key
 * lapses within its TTL). A replica that dies leaves its key to lapse:
 * another replica takes over at its first due run after the TTL.
 *
 * Fencing tokens (lsvc_lease_ops.token, lsvc_lease_token) come from the
 * counter "loopsvc:token:<namespace>:<service name>", which the script
 * that takes a free key increments in the same round trip (the first
 * token is 1); the extend script keeps the key and returns the token of
 * the holding (so a replica whose reply was lost, and that takes its own
 * key back, keeps its token). The counter has no TTL and must outlive
 * every token a sink has seen: an instance without persistence (save ""
 * and appendonly no), a failover to a replica that had not got the last
 * INCR, eviction or a DEL lose it, and tokens start again at 1. A sink
 * then refuses every write of the new holders (their tokens are below its
 * fence) until the counter climbs past it, and then takes tokens equal to
 * ones it saw before, which no longer tell an old holder from a new one:
 * give Redis appendonly yes (appendfsync everysec can lose the last second
 * of INCRs) and noeviction, or after a loss SET the counter above the
 * highest token any sink holds. A replica that sees its tokens go back
 * logs a WARNING. Both keys must be on one instance (EVAL with two keys:
 * not Redis Cluster, where they are in different slots).
 *
 * The key must not vanish before its TTL, or another replica runs beside
 * the holder: use an instance that does not evict it (maxmemory-policy
 * noeviction, or one of its own), keeps it across a restart and a
 * failover, and whose wall clock is slewed, never stepped (Redis keeps
 * expiry times as wall-clock times). One lease serves one service at a
 * time: while it is held, acquire from any other service is EINVAL.
 *
 * No two replicas run at once as long as a run ends within
 * (LSVC_REDIS_TTL_INTERVALS - 1) intervals and the clocks of the replicas
 * run at the same rate as the server's; doc/replicas.md tells the whole
 * guarantee. Like loopsvc-pg, the lease logs an outage itself and
 * answers "not held" meanwhile, rather than returning an error per run.
 * Host names are resolved with getaddrinfo(), which the timeout does not
 * bound: give an address or a Unix socket where a slow resolver is
 * possible. A lease call can take a few timeouts after a failure
 * (connect, AUTH, extend, SET), so give the service's group a stop
 * timeout above that (lsvc_group_set_stop_timeout).
 */
#ifndef LOOPSVC_REDIS_H
#define LOOPSVC_REDIS_H

#include "loopsvc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lsvc_redis_lease lsvc_redis_lease;

/* The key's time to live, in intervals of the service it serves. */
#define LSVC_REDIS_TTL_INTERVALS 3

/* How long a connect or a round trip may take when the lease's timeout is
 * 0. */
#define LSVC_REDIS_DEFAULT_TIMEOUT 2.0

/*
 * Creates a lease on the Redis server at address, "host:port" (port 6379
 * when left out), "unix:/path/to/socket", or either form as a
 * "redis://[:password@]host[:port]" URL, for services in namespace ns. No
 * connection is made here: the first one is made on the service thread,
 * before the first run. ns may not contain ':'. timeout is in seconds, 0
 * for LSVC_REDIS_DEFAULT_TIMEOUT, at most 3600. Any thread.
 * Returns EINVAL (a NULL argument, an address that does not parse, a ':'
 * in ns, or a timeout NaN, negative or too large) or ENOMEM.
 */
LSVC_API int lsvc_redis_lease_create(lsvc_redis_lease **out,
                                     const char *address, const char *ns,
                                     double timeout);

/*
 * Points opts->lease and opts->lease_ctx at the lease, for lsvc_create.
 * Returns EINVAL (a NULL argument).
 */
LSVC_API int lsvc_redis_lease_options(lsvc_redis_lease *lease,
                                      lsvc_options *opts);

/*
 * Closes the lease's connection and frees it; a key still held lapses
 * with its TTL. Call it only once the service that uses it has ended (a
 * stop that returned ETIMEDOUT has not). Returns EINVAL, or EBUSY while a
 * call of the service on it is in progress (and nothing is freed).
 */
LSVC_API int lsvc_redis_lease_destroy(lsvc_redis_lease *lease);

#ifdef __cplusplus
}
#endif

#endif /* LOOPSVC_REDIS_H */
