/*
 * loopsvc-pg: leases held in PostgreSQL, so that of several replicas of a
 * server only one at a time runs a given service. Link with
 * `pkg-config --libs loopsvc-pg` (built when libpq is found).
 *
 * A lease is a session-level advisory lock, pg_try_advisory_lock(key), on a
 * connection of the lease's own. key = lsvc_pg_lease_key(namespace,
 * service name); in pg_locks it is the row with locktype 'advisory' and
 * objsubid 1 whose high and low 32 bits, classid and objid, make the key:
 *
 *   SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
 *     AND ((classid::bigint << 32) | objid::bigint) = <key, signed>;
 *
 * Before each run the lease is asked (on the service thread):
 *  - not held: one pg_try_advisory_lock round trip; held when it says so;
 *  - held: one round trip confirms that the session is alive, since a lock
 *    whose session ended is gone, and its holder must not run on;
 *  - no connection (never made, lost, or its server gone): the run is
 *    skipped at once, and a connection is tried again at the first due run
 *    after a backoff of 100 ms that doubles per failure up to 30 s. The
 *    first failure of an outage is logged at WARNING, and so is every
 *    failure whose reason changed; the reconnection at INFO.
 * Every connect and round trip is bounded by the lease's timeout, except
 * a host name lookup, which libpq makes synchronously: give hostaddr= or
 * a Unix socket where a slow resolver is possible. A lease call can take
 * up to two timeouts (a connect, then a query), so give the service's
 * group a stop timeout above that (lsvc_group_set_stop_timeout).
 *
 * A replica whose process dies ends its session, and with it the lock:
 * another replica takes over at its next due run. A replica whose machine
 * dies or whose network splits keeps its lock until the server notices the
 * dead connection, which TCP keepalives decide (about 2 hours by default):
 * add options='-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5
 * -c tcp_keepalives_count=3 -c tcp_user_timeout=25000' to conninfo for a
 * bound of about 25 s.
 *
 * Every replica must reach the same server: advisory locks live in one
 * server's memory. A standby (in recovery) is refused, as a connect that
 * failed; give one host, not a list, unless target_session_attrs=read-write
 * makes every replica pick the primary. Session advisory locks need a
 * session of their own: connect directly, not through a pooler in
 * transaction mode, and let no idle timeout (idle_session_timeout, a
 * proxy's) end a session that waits one interval between round trips, or
 * the lease flaps. When the service stops, the lock is unlocked.
 *
 * Fencing tokens (lsvc_lease_ops.token, lsvc_lease_token): each lease's
 * last token is a row of the library's own table, in the schema that the
 * session's search_path resolves (the same for every replica):
 *
 *   CREATE TABLE loopsvc_lease_token (key bigint PRIMARY KEY,
 *                                     token bigint NOT NULL);
 *
 * The statement that takes the lock bumps the lease's row in the same
 * round trip, only when it gains the lock (the first token is 1); while
 * held, the confirm keeps the token. A session made when the table is
 * missing creates it (CREATE TABLE IF NOT EXISTS), which needs CREATE on
 * that schema once (PostgreSQL 15 grants it on public to the owner only:
 * create the table beforehand as above otherwise); every lock needs
 * SELECT, INSERT and UPDATE on it. Without them the lease is never held: a
 * WARNING names the table and the missing privilege, and runs are skipped
 * (never one without a token), retried with the backoff of an outage.
 * Tokens stay increasing as long as the table does: a row deleted or a
 * table dropped starts the lease's tokens again at 1, which sinks refuse
 * until they pass the highest they saw. The lease's session sets
 * synchronous_commit on, so a bump is durable once the lock is granted;
 * a failover to an asynchronous standby can still lose the last one, and
 * then hand the next holder the token of the last. The session also sets
 * lock_timeout and statement_timeout to the lease's timeout, so that a
 * lock statement stuck behind another transaction (one holding the token
 * row, an ALTER TABLE) gives up on the server as the client does, rather
 * than keep the advisory lock it took.
 *
 * One lease serves one service at a time: while it is held, acquire from
 * any other service is EINVAL.
 *
 * Create one lease per service that needs one.
 */
#ifndef LOOPSVC_PG_H
#define LOOPSVC_PG_H

#include "loopsvc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lsvc_pg_lease lsvc_pg_lease;

/* How long a connect or a round trip may take when the lease's timeout is
 * 0. */
#define LSVC_PG_DEFAULT_TIMEOUT 2.0

/*
 * Creates a lease on the PostgreSQL server that conninfo names (a libpq
 * connection string or URI, as for PQconnectdb), for services in namespace
 * ns (any string, "" included; replicas of one deployment use the same).
 * No connection is made here: the first one is made on the service
 * thread, before the first run. timeout is in seconds, 0 for
 * LSVC_PG_DEFAULT_TIMEOUT, at most 3600. Any thread.
 * Returns EINVAL (out, conninfo or ns NULL; conninfo that libpq cannot
 * parse: the reason is logged at ERROR; timeout NaN, negative or too
 * large) or ENOMEM.
 */
LSVC_API int lsvc_pg_lease_create(lsvc_pg_lease **out, const char *conninfo,
                                  const char *ns, double timeout);

/*
 * Points opts->lease and opts->lease_ctx at the lease, for lsvc_create.
 * Returns EINVAL (a NULL argument).
 */
LSVC_API int lsvc_pg_lease_options(lsvc_pg_lease *lease, lsvc_options *opts);

/*
 * Closes the lease's connection, which ends its lock if one is held, and
 * frees it. Call it only once the service that uses it has ended (a stop
 * that returned ETIMEDOUT has not). Returns EINVAL, or EBUSY while a call
 * of the service on it is in progress (and nothing is freed).
 */
LSVC_API int lsvc_pg_lease_destroy(lsvc_pg_lease *lease);

/*
 * The advisory lock key of service `name` in namespace ns: FNV-1a 64 over
 * the bytes of ns, one zero byte, and the bytes of name, as a signed
 * bigint. Stable across versions and platforms. 0 for a NULL argument.
 */
LSVC_API int64_t lsvc_pg_lease_key(const char *ns, const char *name);

#ifdef __cplusplus
}
#endif

#endif /* LOOPSVC_PG_H */
