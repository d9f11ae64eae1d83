/*
 * loopsvc-pg: leases held in PostgreSQL, so that of several replicas of a
 * server only one at a time runs a given service. Link with
 * `pkg-config --libs loopsvc-pg` (built when libpq is found).
 *
 * One lease object serves every service of the process that uses it:
 * call lsvc_pg_lease_options for each. Their leases share one connection,
 * which only the object's own thread uses (started at the first run that
 * asks); however many services there are, a replica holds one session
 * per lease object. Each service's lease is a row of the table
 *
 *   CREATE TABLE loopsvc_lease (key bigint PRIMARY KEY,
 *       token bigint NOT NULL, holder text, pid integer,
 *       expires timestamptz, last_success timestamptz);
 *
 * in the schema the session's search_path resolves (the same for every
 * replica). key = lsvc_pg_lease_key(namespace, service name); holder
 * names the lease object ("host:pid:random"), pid is the backend pid of
 * its session, and expires is when the holding ends by the server's
 * clock (for one given up: when its last run began); last_success is
 * when a run last succeeded on any replica, which the holder's renewals
 * carry and every replica reads when it asks for the lease
 * (lsvc_lease_ops.last_success: the "orphaned" rule of lsvc_healthy).
 * The first session that finds the table missing creates it, which needs
 * CREATE on the schema once (PostgreSQL 15 grants it on public to the
 * owner only: create the table beforehand as above otherwise); every
 * lease needs SELECT, INSERT and UPDATE on it. Without them no lease is
 * held: a WARNING names the table, and runs are skipped.
 * Where the table of the advisory-lock leases of loopsvc 0.5,
 * loopsvc_lease_token, exists when the table is made, its tokens are
 * carried over. Stop every replica of 0.5 before one of this version
 * starts: the two do not see each other's leases.
 *
 * A lease is taken when its row is free, expired by the server's clock,
 * or held by a session that no longer exists (no row of pg_stat_activity
 * has its pid): a holder whose process dies, or whose session the server
 * ends, loses its leases at once, and another replica takes them at its
 * next due run. A holder that is alive but does not answer (stopped by
 * SIGSTOP or a debugger, a paused VM) keeps its session but not its
 * leases: they expire LSVC_PG_LEASE_TTL_TIMEOUTS timeouts after its last
 * renewal, and another replica takes them then. Expiry is by the
 * server's wall clock (now()): slew it, never step it, or a step forward
 * frees every lease early.
 *
 * A lease is kept while its service asks for it (or runs): one whose
 * service has not asked for two of its intervals, or for the time to live
 * if that is longer, and is not in a run, is given up, so that a paused
 * service (lsvc_pause) or a stopped one that never heard it held the
 * lease leaves it to the other replicas. A run that hangs keeps it: the
 * service is "stuck" (lsvc_healthy), and the watchdog's to restart.
 *
 * A new holder does not run the due point it took the lease at when the
 * previous holding ended (expired, or had its last run begin) less than
 * half an interval before, by the server's clock, or had not ended (its
 * session gone): that holder may have started the point. It runs the
 * next one. So no due point runs on two replicas whose clocks agree
 * within half an interval, as long as each replica's grid is the wall
 * clock's (lsvc_options.align_to_clock) and a due run asks the lease
 * within half an interval of its due time.
 *
 * The holder renews its leases on the object's thread, each every
 * interval of its service (from 100 ms up to a third of that time to
 * live), in one statement for all that are nearly due. A run
 * does not wait for the server: it goes ahead when the lease is held here,
 * which lasts until 98% of the time to live after the request that took
 * or renewed it was sent, by CLOCK_MONOTONIC (lsvc_lease_valid_for tells
 * a run what is left). A service that does not hold its lease asks the
 * thread to take it before its due run and waits for that round trip;
 * the thread waits up to a twentieth of the interval (at most 2 ms) for
 * other services' takes to share it. When the
 * connection fails (a round trip fails or times out, or the server closes
 * it between round trips), every lease held through it ends here at once,
 * since the server may give them to another replica as soon as the
 * session is gone; the thread connects again after a backoff of 100 ms
 * that doubles per failure up to 30 s. The first failure of an outage is
 * logged at WARNING, and so is every failure whose reason changed; the
 * reconnection at INFO (logger "loopsvc").
 *
 * Every connect and round trip is bounded by the object's timeout, except
 * a host name lookup, which libpq makes synchronously: give hostaddr= or
 * a Unix socket where a slow resolver is possible.
 * A service that asks for its lease waits at most two timeouts and 0.1 s
 * (a connect, then the round trip; and up to 2 ms to share it); with no
 * answer by then the ask counts as one that could not tell (ETIMEDOUT:
 * the run is skipped, with a rate-limited WARNING) and the take goes on.
 * A stop ends that wait within 20 ms (a take already on its way is given
 * up once answered). As it stops, a service that holds its lease waits
 * up to one timeout and 0.1 s for its release: give its group a stop
 * timeout above that (lsvc_group_set_stop_timeout). The session sets
 * lock_timeout and statement_timeout to the timeout, so that a
 * statement stuck behind another transaction gives up on the server as
 * the client does, and synchronous_commit on, so that a token bump is
 * durable once the lease is granted.
 *
 * Fencing tokens (lsvc_lease_ops.token, lsvc_lease_token): the row's
 * token, bumped by the statement that takes the lease from any other
 * holder (the first is 1) and kept while this object holds it. Tokens
 * stay increasing as long as the table does: a row deleted or a table
 * dropped starts the lease's tokens again at 1, which sinks refuse until
 * they pass the highest they saw. A failover to an asynchronous standby
 * can lose the last bump, and then hand the next holder the token of the
 * last.
 *
 * What this needs of the server: every replica reaches the same one (a
 * standby is refused: its table is read-only), directly, not through a
 * pooler in transaction mode (pg_backend_pid must name the session), with
 * no idle timeout shorter than a third of the time to live
 * (idle_session_timeout, a proxy's). A replica whose machine dies or
 * whose network splits loses its leases when they expire, or sooner when
 * the server notices the dead connection; the server must not end a
 * session it can still reach only because the client is slow, and its TCP
 * keepalive and tcp_user_timeout limits must exceed the time to live, so
 * that a holder cut off learns of it (its renewals fail) before the
 * server frees its leases. doc/replicas.md tells the whole guarantee.
 *
 * Two services of one name on one lease object would share one lease:
 * while one holds it or asks for it, acquire from the other is EINVAL.
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

/* How long the server keeps a lease past the request that took or renewed
 * it, in timeouts of the lease object. */
#define LSVC_PG_LEASE_TTL_TIMEOUTS 3

/*
 * Creates a lease object on the PostgreSQL server that conninfo names (a
 * libpq connection string or URI, as for PQconnectdb), for services in
 * namespace ns (any string, "" included; replicas of one deployment use
 * the same). No connection is made here: the object's thread makes it
 * when a service first asks for its lease. timeout is in seconds, 0 for
 * LSVC_PG_DEFAULT_TIMEOUT, at most 3600: it bounds a connect and a round
 * trip, and sets the time to live (LSVC_PG_LEASE_TTL_TIMEOUTS timeouts),
 * so a lower timeout hands the leases of a paused replica over sooner.
 * Any thread. Returns EINVAL (out, conninfo or ns NULL; conninfo that
 * libpq cannot parse: the reason is logged at ERROR; timeout NaN,
 * negative or too large), ENOMEM, or an error of pipe() or
 * pthread_mutex_init() or pthread_cond_init().
 */
LSVC_API int lsvc_pg_lease_create(lsvc_pg_lease **out, const char *conninfo,
                                  const char *ns, double timeout);

/*
 * Points opts->lease and opts->lease_ctx at the lease object, for
 * lsvc_create; call it for each service that uses the object. Any thread.
 * Returns EINVAL (a NULL argument).
 */
LSVC_API int lsvc_pg_lease_options(lsvc_pg_lease *lease, lsvc_options *opts);

/*
 * Gives up the leases held through the object (one round trip, bounded by
 * the timeout), closes its connection, ends its thread and frees it. Call
 * it only once every service that uses it has ended (a stop that returned
 * ETIMEDOUT has not). Any thread but the object's services'. Returns
 * EINVAL (NULL), or EBUSY while a service is inside a call on it (and
 * nothing is freed).
 */
LSVC_API int lsvc_pg_lease_destroy(lsvc_pg_lease *lease);

/*
 * The key of the row of service `name` in namespace ns: FNV-1a 64 over
 * the bytes of ns, one zero byte, and the bytes of name, as a signed
 * bigint. Stable across versions and platforms. 0 for a NULL argument.
 */
LSVC_API int64_t lsvc_pg_lease_key(const char *ns, const char *name);

#ifdef __cplusplus
}
#endif

#endif /* LOOPSVC_PG_H */
