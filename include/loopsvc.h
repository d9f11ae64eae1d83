/*
 * loopsvc: periodic maintenance services for multithreaded POSIX servers.
 *
 * A service is a run_once() callback and an interval. Each service runs on
 * its own pthread; its runs are due at absolute CLOCK_MONOTONIC times, so
 * the schedule neither drifts nor bursts. A group of services shares one
 * signal thread that sigwait()s for SIGINT and SIGTERM and stops them all.
 *
 * Conventions, for every function below unless it says otherwise:
 *  - It returns 0 on success or a positive errno value, as pthread_*() do.
 *    NULL or otherwise invalid arguments give EINVAL, never a crash.
 *  - It may be called from any thread, including a service's own run_once().
 *  - Times are seconds as double at this edge: finite, and for intervals
 *    at least 1 ns (after rounding to whole ns) and at most
 *    LSVC_MAX_SECONDS.
 *  - The library writes nothing except through the logger (lsvc_set_logger)
 *    and, for a group under systemd, to NOTIFY_SOCKET
 *    (lsvc_group_set_notify); it installs no signal handler and never
 *    exits the process.
 *  - The layout of the public structs is part of the ABI. Each ends in
 *    reserved space, and a struct grows only into it: a new field takes
 *    the first reserved bytes, so the struct's size and every earlier
 *    field's offset stay, and a program built against an older header
 *    keeps working. In the structs the caller fills (lsvc_class,
 *    lsvc_options, lsvc_lease_ops) the reserved space must be zero,
 *    which zero-initialising gives: a later field then reads as its
 *    default, and lsvc_create refuses nonzero reserved bytes with
 *    EINVAL. Only a change that cannot fit (a field removed or moved, a
 *    struct out of room) changes the soname; while the major version is
 *    0 the soname carries major.minor: libloopsvc.so.0.6.
 */
#ifndef LOOPSVC_H
#define LOOPSVC_H

#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the exported functions, the library hiding every other symbol,
 * and the printf-like ones, for the compiler to check their arguments. */
#if defined(__GNUC__) || defined(__clang__)
#define LSVC_API __attribute__((visibility("default")))
#define LSVC_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define LSVC_API
#define LSVC_PRINTF(fmt, args)
#endif

/* The version of this header; the library's soname follows it (see the
 * conventions above). */
#define LSVC_VERSION_MAJOR 0
#define LSVC_VERSION_MINOR 6
#define LSVC_VERSION_PATCH 0

/* The longest interval, initial delay or wait accepted: 365 days. */
#define LSVC_MAX_SECONDS (365.0 * 24 * 3600)

/* The interval of a class that sets none. */
#define LSVC_DEFAULT_LOOP_SECONDS 60.0

/* An interval of "never": a service that runs only when woken (lsvc_wake)
 * or asked to (lsvc_run_within, lsvc_next_run_in); its first run waits for
 * that too. Accepted by lsvc_class.loop_seconds, lsvc_options.loop_seconds
 * and lsvc_set_loop_seconds. */
#define LSVC_NEVER ((double)INFINITY)

typedef struct lsvc lsvc;             /* one service */
typedef struct lsvc_group lsvc_group; /* services that stop together */

/*
 * What a service does. Usually a static const object shared by every
 * service of that kind; the library keeps a pointer to it, so it must
 * outlive the services created from it.
 */
typedef struct lsvc_class {
    /* Required, non-empty, with no control character (no byte below 0x20,
     * nor 0x7f), so that it cannot break or forge a log line. Used in log
     * lines ("loopsvc.<name in lower case>") and as the thread name, cut to
     * 15 bytes. Copied at create. */
    const char *name;
    /* Interval between scheduled starts, in seconds, or LSVC_NEVER; 0
     * means LSVC_DEFAULT_LOOP_SECONDS. lsvc_options.loop_seconds overrides
     * it. */
    double loop_seconds;
    /* Required. One run of the service, on the service thread. A nonzero
     * return marks the run as failed: it is logged at ERROR and counted in
     * lsvc_stats.errors, and the loop goes on. */
    int (*run_once)(lsvc *svc, void *arg);
    /* Optional. Runs on the service thread once per start, before the
     * first run; lsvc_start returns once it has returned. A nonzero return
     * is logged at ERROR and counted in lsvc_stats.errors; then no run
     * happens, on_stop does not run, the thread ends, and lsvc_start (or
     * lsvc_group_start) returns ECANCELED. So a hanging on_start holds up
     * the start: slow initialisation belongs in the first run, which
     * lsvc_get_run_info tells by LSVC_RUN_FIRST. */
    int (*on_start)(lsvc *svc, void *arg);
    /* Optional. Runs on the service thread once per start whose on_start
     * succeeded, after the last run, also when the service was stopped
     * before its first run. */
    void (*on_stop)(lsvc *svc, void *arg);
    void *reserved[4];  /* zero (see the conventions above) */
} lsvc_class;

/*
 * What happens when a run ends after the next one was due.
 * Timeline for an interval of 10 with runs due at 0, 10, 20, ... and a run
 * that starts at 10 and takes 25 (it ends at 35):
 *
 *   LSVC_MISSED_DELAY  next run at 35, then 45, 55, ...  The grid moves:
 *                      next = max(base + interval, now), where base is
 *                      the run's scheduled start, or its actual start
 *                      when it started more than the tolerance late.
 *                      No burst, and no drift while runs keep time.
 *   LSVC_MISSED_SKIP   next run at 40, then 50, 60, ...  The grid stays;
 *                      the points already past (20, 30) are skipped and
 *                      counted in lsvc_stats.missed.
 *   LSVC_MISSED_BURST  runs at 35 (for 20), 35 (for 30), 40, 50, ...  The
 *                      grid stays; missed points run back to back until
 *                      the service has caught up.
 */
typedef enum lsvc_missed {
    LSVC_MISSED_DELAY = 0,
    LSVC_MISSED_SKIP,
    LSVC_MISSED_BURST,
} lsvc_missed;

/*
 * LSVC_MISSED_DELAY's tolerance is the smaller of 5 ms and half the
 * interval. Lateness within it (ordinary wake-up lateness) never moves
 * the grid; a run that starts later than that (a slow lease, a stalled
 * machine) re-bases the schedule on its actual start, so that the next
 * run is not due at once. Under DELAY, two run starts are never closer
 * than the interval minus the tolerance.
 */

/*
 * A lease: when a server runs as several replicas, it lets one replica at
 * a time run a service, so that a chore runs once, not once per replica.
 * loopsvc-pg (loopsvc-pg.h) and loopsvc-redis (loopsvc-redis.h) provide
 * leases held in PostgreSQL and Redis; any other store can be plugged in
 * through these callbacks. ctx is lsvc_options.lease_ctx.
 */
typedef struct lsvc_lease_ops {
    /* Required. Called on the service thread before every run, with no
     * library lock held: sets *held to whether this replica holds the
     * lease for this run, acquiring it when it is free and confirming it
     * when this replica already held it (with a round trip, or against a
     * deadline that renewals in the background keep, as loopsvc-pg and
     * loopsvc-redis do). It must return in bounded time (a hung call holds up the
     * service, and a stop waits for it like a run). A nonzero return (a
     * positive errno value) means the store could not tell: the run is
     * skipped as if not held, and a WARNING is logged, rate-limited. A
     * store that reports its own outages may answer "not held" with 0
     * instead, as loopsvc-pg and loopsvc-redis do. One that waits for
     * the store should look at lsvc_should_stop(svc) as it waits and
     * return ECANCELED once it is true: the service then stops at once,
     * with no WARNING and no run counted as skipped, as it does with
     * loopsvc-pg and loopsvc-redis, which look every 20 ms. */
    int (*acquire)(void *ctx, lsvc *svc, bool *held);
    /* Optional. Called on the service thread as it stops, after its last
     * run and before on_stop, when the last answer was "held": gives
     * it up, so that another replica takes over at its next run instead
     * of waiting for the lease to lapse. */
    void (*release)(void *ctx, lsvc *svc);
    /* Optional. Called on the service thread right after acquire said
     * "held", with no library lock held: sets *token to the fencing token
     * of this holding of the lease, a number strictly greater than every
     * token that any earlier holder of the lease was given, and the same
     * for as long as this replica holds it. The run reads it with
     * lsvc_lease_token and hands it to what it writes, which refuses a
     * token lower than one it has seen: a holder that lost the lease
     * without knowing it (paused, cut off) cannot overwrite its
     * successor's work. A nonzero return (a positive errno value) skips
     * the run, as an acquire that could not tell, and gives the lease up
     * (release), since this replica cannot use it. */
    int (*token)(void *ctx, lsvc *svc, uint64_t *token);
    /* Optional. Called by lsvc_lease_valid_for, on any thread, while a run
     * that holds the lease is in progress: sets *mono_ns to the
     * CLOCK_MONOTONIC time until which this replica may count on the
     * holding, or 0 once it knows the holding is lost. Must not block on
     * the store. A nonzero return is passed on. */
    int (*deadline)(void *ctx, lsvc *svc, int64_t *mono_ns);
    /* Optional. Called on the service thread after each run the lease
     * allowed, with no library lock held: result is what run_once
     * returned, or ECANCELED when a pause came while the lease was asked
     * and the run was not made. A store that keeps when the service last
     * succeeded, for every replica to read, records a 0 here; one that
     * renews in the background learns that the run is over. */
    void (*ran)(void *ctx, lsvc *svc, int result);
    /* Optional. Called on the service thread after each acquire, with no
     * library lock held: sets *mono_ns to the CLOCK_MONOTONIC time (of
     * this process) at which the service last ran successfully on any
     * replica, as far as the store has told this one, or 0 when it knows
     * of none. Must not block on the store. A nonzero return leaves it
     * unknown. It feeds lsvc_stats.cluster_success_ns and the "orphaned"
     * rule of lsvc_healthy. */
    int (*last_success)(void *ctx, lsvc *svc, int64_t *mono_ns);
    void *reserved[4];  /* zero (see the conventions above) */
} lsvc_lease_ops;

/*
 * Per-service options. Zero-initialise it and set what you need: every
 * zero field means the default. Copied at create.
 */
typedef struct lsvc_options {
    /* Interval in seconds, or LSVC_NEVER; 0 = the class's. */
    double loop_seconds;
    /* Seconds from the start of the thread (after on_start) to the first
     * run; 0 = run at once. At most LSVC_MAX_SECONDS. */
    double initial_delay;
    /* See lsvc_missed; 0 = LSVC_MISSED_DELAY. */
    lsvc_missed missed;
    /* false: sleep in a wait that a stop ends at once (a futex on 64-bit
     * Linux, else a semaphore where sem_clockwait exists, else a
     * condition variable; all on CLOCK_MONOTONIC). true: sleep with clock_nanosleep() to the
     * absolute due time, as cyclictest does, in steps of at most 100 ms;
     * a stop then takes effect within 100 ms. */
    bool precise;
    /* Thread stack size in bytes; 0 = the size the system gives a new
     * thread (RLIMIT_STACK on Linux, often 8 MiB of address space, of which
     * only the pages touched take memory). Must be at least
     * PTHREAD_STACK_MIN. For thousands of services, 64 to 256 KiB each
     * keeps the address space small, if run_once needs no more. */
    size_t stack_size;
    /* 0 = inherit the creating thread's scheduling. 1..99 (the range
     * sched_get_priority_min/max give): real-time priority under
     * sched_policy. lsvc_start fails with EPERM when not permitted. */
    int sched_priority;
    /* SCHED_FIFO (also when 0) or SCHED_RR; any other value is EINVAL at
     * create, whatever the priority. Applied only when sched_priority > 0. */
    int sched_policy;
    /* Bit n pins the thread to CPU n; 0 = no pinning. Needs
     * pthread_attr_setaffinity_np: ENOTSUP at create where it is missing. */
    uint64_t cpu_mask;
    /* Timer slack of the thread in ns (Linux PR_SET_TIMERSLACK): how late
     * the kernel may wake it to batch wake-ups. 0 = automatic, and it
     * follows how often the process's other services wake: the larger
     * of interval / 1000 (0.1 %) and S * R / 100000, where R is their
     * wake-ups per second and S the slack the thread inherits (50 us by
     * default); at least 1 ns and at most S. A paused service, or one
     * waiting to be woken, adds nothing to R. Looked at again before each
     * sleep. Ignored where unsupported. */
    long timer_slack_ns;
    /* A lease, or NULL for none: then every due run runs here. With one,
     * a run whose lease is not held is skipped (counted in
     * lsvc_stats.skipped_not_leader) and the service sleeps to its next
     * due time as usual; `loops` in lsvc_start counts only runs made. A
     * run begins once the lease allows it (its lateness includes the
     * asking), and a stop that comes while the lease is asked ends the
     * service with no run. */
    const lsvc_lease_ops *lease;
    void *lease_ctx;
    /* false: runs are due on a grid, every interval from the first (see
     * lsvc_missed). true: the next run is due one interval after the
     * previous run ended, whatever its length, and lsvc_missed does not
     * apply. A grid shortens the gap after a long run (a 9 s run of a
     * 10 s service is followed 1 s later); choose fixed_delay when the
     * gap itself matters, such as a grace period that must pass between
     * two passes, or a chore that must leave the resource alone for a
     * while. */
    bool fixed_delay;
    /* Seconds, 0 to the interval: each run due by the interval starts a
     * uniformly random 0..jitter_seconds after its due point, so that
     * replicas or services due together spread out. The grid stays on the
     * unjittered points (lsvc_scheduled_start reports them), under every
     * missed policy; a run's lateness (in the stats, and for DELAY's
     * tolerance) is measured from its jittered start. 0 = none. */
    double jitter_seconds;
    /* true: due points are n * interval + offset_seconds after the Unix
     * epoch on CLOCK_REALTIME (an hourly service with offset 0 runs at
     * every :00, with offset 90 at every :01:30), the same on every
     * replica whose clock is right. Each point is turned into a
     * CLOCK_MONOTONIC deadline when it is computed, and the service looks
     * at the wall clock again at least once a second while it sleeps, so
     * that a step of the wall clock moves the next point within 1 s. A
     * run that ends past its next point goes on at the first point after
     * now, under every policy (SKIP counts the points passed as missed):
     * a step of the wall clock is no work missed. DELAY's re-base does
     * not apply. Needs a finite interval and no fixed_delay;
     * offset_seconds must be in [0, interval). */
    bool align_to_clock;
    double offset_seconds;
    /* Seconds; 0 = off, else at least the interval. After k consecutive
     * failed runs (run_once returned nonzero, k counting the one just
     * ended), the next run is due min(interval * 2^k, this) after the
     * failed run's start; the first success returns to the interval,
     * counted from that run. A wake still runs at once. */
    double error_backoff_max_seconds;
    /* true: no WARNING when a run takes longer than the interval (the run
     * is still counted in lsvc_stats.overruns). */
    bool quiet_overruns;
    /* Seconds, 0 to LSVC_MAX_SECONDS: a run caused by a wake or by
     * lsvc_run_within starts no sooner than this after the previous run
     * began (the wake is kept, not dropped), so that a storm of requests
     * cannot make the service run back to back. 0 = none. */
    double min_wake_gap_seconds;
    /* true: the service keeps no histograms (lsvc_get_histogram and the
     * metrics show them empty), saving their two updates per run. */
    bool no_histograms;
    uint64_t reserved[8]; /* zero (see the conventions above) */
} lsvc_options;

/* A consistent snapshot of a service's counters, across all its starts. */
typedef struct lsvc_stats {
    uint64_t loops;          /* runs completed */
    uint64_t errors;         /* runs (and on_start calls) that returned
                              * nonzero */
    uint64_t overruns;       /* runs that took longer than the interval */
    uint64_t missed;         /* due points skipped by LSVC_MISSED_SKIP */
    int64_t last_run_ns;     /* duration of the last run */
    int64_t max_run_ns;      /* longest run */
    int64_t last_lateness_ns; /* last run's actual start minus its
                               * scheduled start */
    int64_t max_lateness_ns;  /* largest such lateness */
    bool running;            /* the service thread is alive (lsvc_is_running) */
    /* With a lease (lsvc_options.lease): */
    uint64_t skipped_not_leader; /* due runs skipped: the lease was not held
                                  * here (another replica held it, or the
                                  * store could not be reached) */
    uint64_t lease_changes;  /* times this replica gained or lost the lease */
    bool lease_held;         /* held at its last due run; false once a stop
                              * released it (which lease_changes counts) */
    int64_t lease_since_ns;  /* CLOCK_MONOTONIC time it gained it; 0 = not
                              * held */
    uint64_t wakes;          /* runs that a wake or lsvc_run_within caused */
    uint64_t consecutive_failures; /* runs that failed in a row, up to the
                                    * last run; 0 after a success */
    bool paused;             /* paused (lsvc_pause), and running */
    int64_t last_success_ns; /* CLOCK_MONOTONIC time the last run that
                              * returned 0 ended; 0 = none yet */
    int64_t cluster_success_ns; /* with a lease that tells it
                              * (lsvc_lease_ops.last_success): when a run
                              * last succeeded on any replica, as this one
                              * last heard; 0 = unknown */
    uint64_t reserved[7];    /* zero */
} lsvc_stats;

/* Why a run happens: lsvc_run_info.reasons, any of them at once. */
enum {
    LSVC_RUN_TIMER = 1,   /* due by the interval or by lsvc_next_run_in */
    LSVC_RUN_WOKEN = 2,   /* asked for by lsvc_wake(_bits) or
                           * lsvc_run_within */
    LSVC_RUN_FIRST = 4,   /* the first run since lsvc_start */
    LSVC_RUN_RESUMED = 8, /* the first run since lsvc_resume */
};

/* What lsvc_get_run_info tells a run about itself. Times are
 * CLOCK_MONOTONIC. */
typedef struct lsvc_run_info {
    unsigned reasons;          /* LSVC_RUN_* bits */
    unsigned wake_bits;        /* lsvc_wake_bits' bits, OR-merged, that
                                * this run received; 0 for none */
    struct timespec due;       /* when it was due: its point on the
                                * schedule, or for a run only asked for,
                                * when it was asked for */
    struct timespec start;     /* when it began */
    struct timespec prev_start; /* when the run before it began; zero for
                                 * the service's first run */
    uint64_t run;              /* its number: 1 for the service's first
                                * run, counting across starts */
    uint64_t reserved[4];      /* zero */
} lsvc_run_info;

/* --- Services ----------------------------------------------------------- */

/*
 * Creates a stopped service of class cls, passing arg to its callbacks.
 * opts may be NULL for the defaults. On success *out holds the service;
 * on failure *out is left untouched and nothing is allocated.
 * Returns EINVAL (out, cls or cls->run_once NULL; name NULL, empty or
 * holding a control character; an interval that is NaN, -infinity,
 * negative, under 1 ns or finite and above LSVC_MAX_SECONDS, in the class
 * or the options; an initial delay NaN, infinite, negative or above
 * LSVC_MAX_SECONDS; an unknown missed policy; a stack below
 * PTHREAD_STACK_MIN; a priority out of the policy's range or an unknown
 * policy; a negative slack; a lease without acquire; jitter negative, NaN
 * or above the interval; align_to_clock with LSVC_NEVER or fixed_delay,
 * or an
 * offset_seconds outside [0, interval) or set without align_to_clock; a
 * backoff maximum NaN, negative, above LSVC_MAX_SECONDS or below the
 * interval; a wake gap NaN, negative or above LSVC_MAX_SECONDS),
 * ENOTSUP (cpu_mask on a platform without affinity), or ENOMEM, EAGAIN
 * or ENOSPC when the system is out of memory, locks or semaphores.
 */
LSVC_API int lsvc_create(lsvc **out, const lsvc_class *cls, void *arg,
                const lsvc_options *opts);

/*
 * Starts the service on a new thread and returns once its on_start has
 * returned (at once without one); then it runs until stopped, or exactly
 * `loops` runs when loops > 0, after which the thread ends by itself
 * (reap it with lsvc_join). The thread blocks every asynchronous signal
 * and is named after the service. The first run is due at once, or after
 * the initial delay. A service that ended or was stopped can be started
 * again; its stats go on counting. A thread that ended but was not yet
 * joined is reaped here. Not from the service's own thread.
 * Returns EINVAL, EBUSY (its thread is still running, or its group is
 * started: the group then starts and stops it), ECANCELED (on_start
 * returned nonzero: the thread has ended and been reaped), EPERM (the
 * real-time priority is not permitted), ENOTSUP (real-time scheduling
 * unsupported) or EAGAIN/ENOMEM (no thread could be made). On failure no
 * thread is left behind and the service can be started again.
 */
LSVC_API int lsvc_start(lsvc *svc, uint64_t loops);

/*
 * Stops the service, in the steps kthread_stop() names: set "should stop",
 * wake the thread (a sleeping service wakes at once; in precise mode
 * within 100 ms), and with block, wait for it to end and reap it. A run in
 * progress is never interrupted: the service finishes it, runs on_stop, and
 * ends. The wait is bounded by the largest of: the interval (left out for
 * LSVC_NEVER); 100 ms (200 ms in precise mode, where a sleeping service
 * takes up to 100 ms to see the stop); and twice the longest run seen so
 * far (lsvc_stats.max_run_ns).
 * When it passes, a WARNING is logged, ETIMEDOUT is returned, and the
 * service can still be joined later.
 * Without block it requests the stop and returns 0 at once: the way a
 * run_once ends its own service. Idempotent, safe from several threads at
 * once, and 0 on a service that never started.
 * Returns EINVAL, ETIMEDOUT, or EDEADLK when block is true and the caller
 * is the service's own thread (the stop is still requested, and a WARNING
 * logged).
 */
LSVC_API int lsvc_stop(lsvc *svc, bool block);

/*
 * lsvc_stop(svc, true) with a bound of `seconds` (0 to LSVC_MAX_SECONDS;
 * less than 0: no bound) in place of lsvc_stop's; 0 only checks. Returns
 * EINVAL (NaN, +infinity or above LSVC_MAX_SECONDS), ETIMEDOUT (with a
 * WARNING) or EDEADLK, as lsvc_stop does.
 */
LSVC_API int lsvc_stop_timeout(lsvc *svc, double seconds);

/*
 * Waits at most `seconds` (< 0: no bound) for the service's thread to end
 * by itself or after a stop, then reaps it. 0 at once when no thread is
 * there to reap. Returns EINVAL (NaN or above LSVC_MAX_SECONDS), ETIMEDOUT
 * (the thread is still running; nothing changed) or EDEADLK (called from
 * the service's own thread).
 */
LSVC_API int lsvc_join(lsvc *svc, double seconds);

/*
 * Frees the service, reaping its thread if it has ended. Returns EINVAL,
 * or EBUSY when its thread is still running or it belongs to a group
 * (destroy the group first). No other thread may use svc during or after
 * the call.
 */
LSVC_API int lsvc_destroy(lsvc *svc);

/* The service's name, or NULL for a NULL svc. Valid until lsvc_destroy. */
LSVC_API const char *lsvc_name(const lsvc *svc);

/* The effective interval in seconds (LSVC_NEVER for never), or 0 for a
 * NULL svc. */
LSVC_API double lsvc_loop_seconds(const lsvc *svc);

/* Whether the service's thread is alive: started, and not yet past
 * on_stop. false for a NULL svc. */
LSVC_API bool lsvc_is_running(const lsvc *svc);

/* Copies a consistent snapshot of the service's counters into *out.
 * Returns EINVAL. */
LSVC_API int lsvc_get_stats(const lsvc *svc, lsvc_stats *out);

/*
 * The scheduled start (CLOCK_MONOTONIC) of the run in progress, or of the
 * last run when none is in progress: from run_once, now minus this is the
 * run's wake-up lateness (with jitter_seconds, plus the run's jitter: the
 * scheduled start is the unjittered point). Returns EINVAL, or EAGAIN when
 * no run has started yet.
 */
LSVC_API int lsvc_scheduled_start(const lsvc *svc, struct timespec *out);

/* --- Runtime control ------------------------------------------------------
 *
 * For loops that are not a fixed period: a run that picks its next delay,
 * other threads that ask for a run, a long run that looks for a stop, a
 * chore paused while someone else touches what it touches. Every call
 * here may be made from any thread, run_once included. On a service that
 * is stopped or was never started, a call that asks something of the
 * schedule returns 0 and changes nothing (lsvc_set_loop_seconds aside,
 * which sets the interval for later starts); lsvc_should_stop and
 * lsvc_sleep answer as they say, a stop staying requested until the next
 * start.
 */

/*
 * Whether a stop of the service was requested: for a long run_once, which
 * a stop never interrupts, to finish early, and for a lease's acquire
 * that waits. false for a NULL svc, and again once the service is started
 * anew. Any thread.
 */
LSVC_API bool lsvc_should_stop(const lsvc *svc);

/*
 * Sleeps `seconds` (0 to LSVC_MAX_SECONDS) on the calling thread, meant
 * for a pause between the batches of one run: returns 0 after the full
 * time, or ECANCELED as soon as a stop or a pause of svc is requested
 * (already requested: at once). A wake does not end it, so that a sleep
 * that paces the work is not cut short by the very wakes it paces.
 * Returns EINVAL (svc NULL; seconds NaN, negative or too large).
 */
LSVC_API int lsvc_sleep(lsvc *svc, double seconds);

/*
 * Wakes the service: a run is due now. It cuts short any delay the
 * service is in: its interval, lsvc_next_run_in, a hibernation or
 * LSVC_NEVER. The wake is remembered until a run begins, and every run
 * that begins takes all the wakes remembered so far: several wakes before
 * a run give one run, and a wake during a run gives exactly one more run
 * right after it, even when that run set a later next run. A wake while
 * paused is kept, for one run at lsvc_resume. Such a run is not late:
 * its lateness counts from the wake. On a periodic service it does not
 * move the grid: the run after it is due where it was due before, unless
 * the run set its own next time (lsvc_next_run_in) or the service has
 * fixed_delay. In precise mode a wake takes effect within the 100 ms
 * precise step, as a stop does. With a lease, a run the lease refuses
 * (another replica holds it) takes the wakes remembered so far, as a run
 * would: they are not asked of the lease again. lsvc_wake(svc) is
 * lsvc_run_within(svc, 0). Returns EINVAL (svc NULL).
 */
LSVC_API int lsvc_wake(lsvc *svc);

/*
 * lsvc_wake, which also hands `bits` to the run it causes
 * (lsvc_run_info.wake_bits), OR-merged with those of every other wake
 * that run takes: a reason, for a run that serves several kinds of
 * request. Returns EINVAL (svc NULL).
 */
LSVC_API int lsvc_wake_bits(lsvc *svc, unsigned bits);

/*
 * Asks for a run no later than `seconds` from now (0 to
 * LSVC_MAX_SECONDS), as a wake that takes effect then: the earliest
 * request wins, a later one never postpones it, and a request made
 * during a run survives that run (the run's own lsvc_next_run_in cannot
 * push it later). Any run that begins before then fulfils it. For other
 * threads that want the work done "soon": a deferred collection, an
 * earlier expiry. The run it causes is a woken run (LSVC_RUN_WOKEN), with
 * the rules of lsvc_wake. Returns EINVAL (svc NULL; seconds NaN,
 * negative, infinite or too large).
 */
LSVC_API int lsvc_run_within(lsvc *svc, double seconds);

/*
 * Makes the next run, and only it, due `seconds` from now: 0 at once,
 * up to LSVC_MAX_SECONDS, or INFINITY for not until woken (a
 * hibernation). It replaces the next due point, earlier or later; the
 * schedule then goes on from that run (its grid counts from it). Meant
 * for a run that sets its own pace: called during a run, it applies to
 * the next. A wake, or lsvc_run_within, still comes first. The run it
 * makes due is a timer run (LSVC_RUN_TIMER). Returns EINVAL (svc NULL;
 * seconds NaN, negative, or finite and too large).
 */
LSVC_API int lsvc_next_run_in(lsvc *svc, double seconds);

/*
 * Sets the service's interval for good, as if the code had said so:
 * `seconds` as lsvc_create takes it, LSVC_NEVER included; lsvc_loop_seconds
 * returns it. On a running service the next run is then due the new
 * interval after the last run began (with fixed_delay: after it ended;
 * for a run in progress, once it has ended), or at once if that is past:
 * no point of the old interval is counted as missed or run. With no run
 * yet, the first run keeps its time, unless it waited for a wake (the
 * service was started with LSVC_NEVER): it is then due one interval from
 * now; and LSVC_NEVER cancels a first run not yet made, which then waits
 * for a wake. The interval the service already has changes nothing. The
 * environment's LOOPSVC_<NAME>_LOOP_SECONDS (lsvc_group_set_environment),
 * read at each group start, overrides this value for that run of the
 * group, as it overrides the code's: while it is in force, the new value
 * takes effect when the group has ended. With align_to_clock, the next
 * point is the first of the new interval on the wall clock. Returns
 * EINVAL (svc NULL; seconds NaN, not positive, or finite and above
 * LSVC_MAX_SECONDS; or an interval the service's jitter, clock alignment
 * or backoff maximum does not allow, as at lsvc_create).
 */
LSVC_API int lsvc_set_loop_seconds(lsvc *svc, double seconds);

/*
 * Pauses the service: it keeps its thread and starts no run until
 * lsvc_resume. Returns once no run is in progress, so that the caller may
 * touch what the service touches; the wait is bounded by the service's
 * stop bound (lsvc_stop), after which it returns ETIMEDOUT with the pause
 * still in force. Called from the service's own run it returns 0 at once
 * and takes effect when the run ends. Due points that pass while paused
 * are not missed: they are not counted, and at resume at most one run
 * makes up for them (lsvc_resume says when).
 * A stop works while paused, and ends the pause. Idempotent. Returns
 * EINVAL or ETIMEDOUT.
 */
LSVC_API int lsvc_pause(lsvc *svc);

/*
 * Ends a pause. Wakes that came while paused run at once; otherwise, under
 * LSVC_MISSED_DELAY (and with fixed_delay), a run runs at once if a due
 * point passed during the pause, and under LSVC_MISSED_SKIP and
 * LSVC_MISSED_BURST the service goes on at its next grid point. That
 * first run carries LSVC_RUN_RESUMED. 0 when not paused. Returns EINVAL.
 */
LSVC_API int lsvc_resume(lsvc *svc);

/*
 * Copies what the run in progress knows about itself into *out: why it
 * happens, the wake bits it received, when it was due, when it and the
 * run before it began, and its number. Meant for run_once; another
 * thread gets the same while a run is in progress. Returns EINVAL, or
 * EAGAIN when no run is in progress.
 */
LSVC_API int lsvc_get_run_info(const lsvc *svc, lsvc_run_info *out);

/*
 * The fencing token of the lease the run in progress holds
 * (lsvc_lease_ops.token): give it to every write the run makes to a
 * shared resource, which keeps the highest token it has seen and refuses
 * a write with a lower one (doc/replicas.md shows it for PostgreSQL and
 * Redis). Meant for run_once; any thread may ask. Returns EINVAL (NULL),
 * EAGAIN (no run is in progress, or it holds no lease) or ENOTSUP (its
 * lease gives no tokens).
 */
LSVC_API int lsvc_lease_token(const lsvc *svc, uint64_t *token);

/*
 * How long the run in progress may still count on its lease
 * (lsvc_lease_ops.deadline), in seconds: 0 once the lease is known to be
 * lost or has lapsed. A long run checks it before each write it could not
 * take back, and stops when what is left is shorter than the write, since
 * past it another replica may hold the lease (the fencing token still
 * refuses the late write). Meant for run_once; any thread may ask.
 * Returns EINVAL (NULL), EAGAIN (no run is in progress, or it holds no
 * lease), ENOTSUP (its lease cannot tell), or the lease's own error.
 */
LSVC_API int lsvc_lease_valid_for(const lsvc *svc, double *seconds);

/* --- Histograms, health and run observers ------------------------------ */

/*
 * Each service keeps two histograms across its starts: how long its runs
 * took, and how late they began (actual start minus scheduled start, as
 * lsvc_stats.last_lateness_ns; never negative). Both share one set of
 * fixed buckets on a log scale, 1, 2 and 5 times each power of ten from
 * 1 us to 2000 s, then 3600 s, then +Inf: bucket i holds the
 * observations above lsvc_histogram_bound(i - 1) and at most
 * lsvc_histogram_bound(i). Only the service thread writes them, with
 * atomic stores, and a reader takes no lock, so reading them never delays
 * a run.
 */
#define LSVC_HISTOGRAM_BUCKETS 31

typedef enum lsvc_histogram_kind {
    LSVC_HISTOGRAM_DURATION = 0, /* run_once's duration */
    LSVC_HISTOGRAM_LATENESS,     /* a run's start minus its scheduled start */
} lsvc_histogram_kind;

typedef struct lsvc_histogram {
    uint64_t count;        /* observations: the sum of buckets[] */
    double sum;            /* their sum, in seconds */
    uint64_t buckets[LSVC_HISTOGRAM_BUCKETS]; /* per bucket, not cumulative */
    uint64_t reserved[4];  /* zero */
} lsvc_histogram;

/*
 * The upper bound, in seconds, of bucket i of every histogram: 1e-6 for
 * i = 0, up to 3600 for i = LSVC_HISTOGRAM_BUCKETS - 2, and INFINITY for
 * the last; NAN when i is out of range. Any thread.
 */
LSVC_API double lsvc_histogram_bound(unsigned i);

/*
 * Copies one histogram of svc into *out. Each bucket is read atomically
 * and count is the sum of the buckets read; a run ending during the call
 * may be in the buckets but not yet in sum (or the other way round), so
 * sum is within one observation of the buckets. Returns EINVAL (NULL, or
 * an unknown kind).
 */
LSVC_API int lsvc_get_histogram(const lsvc *svc, lsvc_histogram_kind kind,
                                lsvc_histogram *out);

/*
 * Whether svc makes progress. A running service that is not paused is
 * unhealthy while:
 *  - "stuck": one run has lasted more than the stuck limit
 *    (lsvc_group_set_stuck_after, 10 intervals by default);
 *  - "failing": its last `failures` runs failed in a row
 *    (lsvc_group_set_health, 3 by default);
 *  - "stale": it is between runs, not paused, and nothing has shown
 *    progress for `stale` intervals (lsvc_group_set_health, 3 by
 *    default), and at least 1 s: progress is a run that returned 0, a due
 *    run left to the replica that holds the lease, the start of the
 *    thread (plus the initial delay), or a resume. After such progress, a
 *    next run put off on purpose (lsvc_next_run_in) starts the count one
 *    interval before it is due; after a failed run or a lease that could
 *    not tell, nothing moves it. A service that waits for a wake
 *    (LSVC_NEVER, or lsvc_next_run_in(INFINITY)) is never stale.
 *  - "orphaned": it has a lease that tells when the service last ran
 *    successfully on any replica (lsvc_lease_ops.last_success), this
 *    replica does not hold it, and no replica has run it successfully
 *    for `orphaned` intervals (lsvc_group_set_orphaned_after, 5 by
 *    default), and at least 1 s, counted from this service's first
 *    asking when the store knows of no success. The holder is judged by
 *    its own runs instead; a WARNING says when a replica finds the
 *    service orphaned, and an INFO when it runs again somewhere.
 * A run includes the lease's asking before it, so a hung acquire is
 * "stuck". When several apply, the first of stuck, failing, stale and
 * orphaned is the reason.
 * A service in no group uses the defaults. A service that is not running
 * or is paused is healthy by these rules; lsvc_group_healthy also asks
 * that every member of a started group runs. *why, when why is not NULL,
 * is set to "stuck", "failing", "stale" or "orphaned", or to NULL when
 * healthy (static strings). Returns false for NULL svc, with *why
 * "invalid". Any thread.
 */
LSVC_API bool lsvc_healthy(const lsvc *svc, const char **why);

/* What lsvc_set_run_observer's function is told of a run. Times are
 * CLOCK_MONOTONIC, as in lsvc_run_info. */
typedef struct lsvc_run_event {
    const lsvc *svc;
    bool ended;            /* false: the run begins; true: it has ended */
    unsigned reasons;      /* LSVC_RUN_* bits */
    uint64_t run;          /* its number, as lsvc_run_info.run */
    struct timespec due;   /* its scheduled start */
    struct timespec start; /* when it began */
    int64_t lateness_ns;   /* start minus scheduled start, never negative */
    int64_t duration_ns;   /* once ended: how long run_once took; else 0 */
    int result;            /* once ended: what run_once returned; else 0 */
    bool lease_held;       /* the run holds a lease (lsvc_options.lease) */
    uint64_t reserved[4];  /* zero */
} lsvc_run_event;

typedef void (*lsvc_run_observer_fn)(const lsvc_run_event *event, void *ctx);

/*
 * Calls fn(event, ctx) on the service thread as each run of every service
 * begins (just before run_once) and as it ends (just after, once the
 * run is counted in lsvc_get_stats), with no library lock held: for
 * tracing, one span per run. fn delays the service by the time it takes
 * (which is not counted in the run's duration), so it should only
 * record. NULL (the
 * default) removes the observer. As with lsvc_set_logger, a run in
 * progress at the time of the call may still reach the previous fn, so
 * keep its ctx valid until the services are stopped. Any thread.
 */
LSVC_API void lsvc_set_run_observer(lsvc_run_observer_fn fn, void *ctx);

/* --- Groups and signals ------------------------------------------------- */

/*
 * Creates an empty group that handles SIGINT and SIGTERM. On failure *out
 * is untouched. Returns EINVAL, ENOMEM or EAGAIN.
 */
LSVC_API int lsvc_group_create(lsvc_group **out);

/*
 * Adds a service to the group. A group does not own its services: it never
 * destroys them. The names of a group's services are unique, since its
 * metrics and control socket tell them apart by name. Returns EINVAL,
 * EBUSY (the service is already in a group, this one included, or the
 * group is started), EEXIST (another service of the group has its name)
 * or ENOMEM.
 */
LSVC_API int lsvc_group_add(lsvc_group *g, lsvc *svc);

/*
 * Sets the signals the group's signal thread waits for; NULL or an empty
 * set means none, and no signal thread.
 * The default is SIGINT and SIGTERM. Returns EINVAL (the set holds SIGKILL,
 * SIGSTOP, a signal that faults raise in the faulting thread: SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT, or one the C library
 * keeps for itself and sigaddset refuses, such as glibc's 32 and 33) or
 * EBUSY (the group is started: every lsvc_group_set_* call needs a group
 * that is not).
 */
LSVC_API int lsvc_group_set_signals(lsvc_group *g, const sigset_t *set);

/*
 * Bounds how long lsvc_group_wait waits for each service once the group is
 * stopping: `seconds` from the stop, or, with 0 (the default), each
 * service's own lsvc_stop bound. Returns EINVAL (seconds NaN, infinite,
 * negative or above LSVC_MAX_SECONDS) or EBUSY (started).
 */
LSVC_API int lsvc_group_set_stop_timeout(lsvc_group *g, double seconds);

/*
 * Whether lsvc_group_start reads each service's settings from the
 * environment (the default) or not. With `enable`, at every group start,
 * for a service named `name`, with NAME being name in upper case and every
 * byte other than an ASCII letter or digit turned into '_':
 *   LOOPSVC_<NAME>_ENABLED       0, 1, false or true, in any case. A
 *                                disabled service is not started; an INFO
 *                                line says so.
 *   LOOPSVC_<NAME>_LOOP_SECONDS  the interval in seconds, a decimal number
 *                                (exponent allowed, no sign, no spaces) in
 *                                the range lsvc_create accepts for this
 *                                service's options. It overrides
 *                                the class's and the options' interval for
 *                                that start of the group, and an INFO line
 *                                says so.
 * A value that does not parse in full, or is out of range (empty, "nan",
 * "1e999", "-5", "5s"), logs a WARNING naming the variable and keeps the
 * code's value. The values are read with getenv(): no thread may change
 * the environment while the group starts. The override ends when
 * lsvc_group_wait returns: lsvc_loop_seconds then gives the code's value
 * again; for a service it left running (stuck past its bound), when that
 * service's thread ends. Two names that map to the same NAME ("a-b",
 * "a_b") read the same variables. Returns EINVAL or EBUSY (started).
 */
LSVC_API int lsvc_group_set_environment(lsvc_group *g, bool enable);

/*
 * Whether the group speaks systemd's notify protocol or not (the
 * default: a library must not tell systemd that the process is ready
 * before the server's own listeners are). With `enable`, and
 * NOTIFY_SOCKET set in the environment to an absolute path or an abstract
 * socket ("@name"), lsvc_group_start sends READY=1 once every enabled
 * service has started and its on_start has returned, just before it
 * returns 0; the
 * group sends STOPPING=1 when a signal or lsvc_group_stop stops it (a stop
 * during lsvc_group_start is told after READY=1), and not when its
 * services merely end by themselves: systemd takes STOPPING=1 as the
 * process shutting down. systemd keeps one state per process, so let one
 * group notify (a second one logs a WARNING). When WATCHDOG_USEC is
 * also set (and WATCHDOG_PID, if set, is this process), a watchdog thread
 * sends WATCHDOG=1 every WATCHDOG_USEC / 2 while every service is
 * healthy (lsvc_healthy: not stuck in one run, not failing run after run,
 * not stale; "orphaned" does not count, since restarting a replica that
 * does not hold the lease would not make the holder run). A service that
 * becomes unhealthy is logged at WARNING with its reason, and the pings
 * stop until it is healthy again, so that systemd's WatchdogSec= restarts
 * a process whose chores no longer make progress.
 * An unusable NOTIFY_SOCKET, WATCHDOG_USEC or WATCHDOG_PID is logged at
 * WARNING at group start and the group runs without it. Returns EINVAL or
 * EBUSY (started).
 */
LSVC_API int lsvc_group_set_notify(lsvc_group *g, bool enable);

/*
 * Sets after how many intervals of one run a member counts as stuck
 * (lsvc_healthy, and through it the systemd watchdog of
 * lsvc_group_set_notify): a finite number from 1 to 1e6; the default is
 * 10. Returns EINVAL or EBUSY (started).
 */
LSVC_API int lsvc_group_set_stuck_after(lsvc_group *g, double intervals);

/*
 * Sets when a member counts as unhealthy (lsvc_healthy): after `failures`
 * consecutive failed runs (1 to 1e6; default 3), or with no progress for
 * `stale_intervals` of its intervals (a finite number from 1 to 1e6;
 * default 3). Returns EINVAL or EBUSY (started).
 */
LSVC_API int lsvc_group_set_health(lsvc_group *g, unsigned failures,
                                   double stale_intervals);

/*
 * Sets after how many of its intervals with no successful run on any
 * replica a leased member that does not hold its lease counts as
 * "orphaned" (lsvc_healthy): a finite number from 1 to 1e6; the default
 * is 5. Returns EINVAL or EBUSY (started).
 */
LSVC_API int lsvc_group_set_orphaned_after(lsvc_group *g, double intervals);

/*
 * Whether the group makes progress: false when a member is unhealthy
 * (lsvc_healthy), or, while the group is started and not stopping, a
 * member the environment did not disable is not running ("stopped").
 * *which and *why (each may be NULL) name the first such member and its
 * reason; both NULL when healthy. An idle group is healthy. Any thread
 * but not concurrently with lsvc_group_destroy.
 */
LSVC_API bool lsvc_group_healthy(lsvc_group *g, const lsvc **which,
                                 const char **why);

/*
 * Writes the group's metrics into buf in Prometheus's text exposition
 * format (version 0.0.4): for each family, one sample per member (a
 * histogram's buckets, sum and count per member), each with a label
 * service="<name>" escaped as the format asks (\\, \" and \n):
 *   counters   loopsvc_runs_total, loopsvc_errors_total,
 *              loopsvc_overruns_total, loopsvc_missed_total,
 *              loopsvc_skipped_not_leader_total, loopsvc_wakes_total
 *   gauges     loopsvc_running, loopsvc_paused, loopsvc_healthy,
 *              loopsvc_lease_held (0 or 1), loopsvc_consecutive_failures,
 *              loopsvc_last_success_timestamp_seconds (Unix time; 0 for
 *              none), loopsvc_cluster_last_success_timestamp_seconds
 *              (the same for any replica, lsvc_stats.cluster_success_ns;
 *              0 when unknown), loopsvc_interval_seconds (+Inf for
 *              LSVC_NEVER)
 *   histograms loopsvc_run_duration_seconds, loopsvc_lateness_seconds
 * Every family has its HELP and TYPE lines. The text is NUL-terminated;
 * *needed (when not NULL) is set to its length plus the NUL. The text of
 * a later call may be longer (counters grow): leave room, or call again
 * while ENOSPC. buf may be
 * NULL when size is 0, to learn the size. Returns EINVAL (g NULL; buf
 * NULL with size > 0), ENOSPC (size < *needed: buf holds as much as fits,
 * NUL-terminated, when size > 0) or ENOMEM. Any thread but not
 * concurrently with lsvc_group_destroy.
 */
LSVC_API int lsvc_group_metrics(lsvc_group *g, char *buf, size_t size,
                                size_t *needed);

/*
 * Makes the group serve a control socket at `path` while it is started,
 * for operators and the loopsvcctl program: a Unix stream socket made
 * at lsvc_group_start, mode 0600, removed when lsvc_group_wait ends the
 * group. NULL (the default) turns it off. One command per line, each
 * answered by lines that end with an empty line:
 *   status               a header row, then one row per service, in
 *                        columns aligned with spaces, each as wide as
 *                        its widest cell: SERVICE, STATE (running,
 *                        paused, stopped or disabled), INTERVAL, RUNS,
 *                        ERRORS, LAST-RUN (since the last run began),
 *                        NEXT-RUN, HEALTH (ok, stuck, failing, stale,
 *                        orphaned, or - when not running) and LEASE
 *                        (held, not-held, or - without one)
 *   metrics              lsvc_group_metrics' text
 *   wake NAME            lsvc_wake
 *   pause NAME           lsvc_pause, without waiting for a run in
 *                        progress
 *   resume NAME          lsvc_resume
 *   interval NAME SECS   lsvc_set_loop_seconds; SECS is decimal
 *                        (digits[.digits][e[+|-]digits]) or "never"
 *   help                 the commands
 * A reply to a command that fails is one line "error: <why>"; one that
 * acts answers "ok: <what>". Only a peer of the process's effective uid
 * or root is served, whatever the file's mode (checked with the peer's
 * credentials; where the system cannot tell them, nobody is served);
 * others are refused and logged at WARNING, at most once a minute. A line
 * longer than 4 KiB gets an error and the connection is closed; at most
 * 16 clients are served at once (a 17th is told so and closed); a client
 * idle for 10 s (with half a line, nothing sent, or a reply it does not
 * read) is dropped. A last line without its newline is answered as the client
 * closes its side. Numbers are read and written in the C locale. One
 * thread serves the socket and never waits for a service, so no client
 * delays a run.
 * lsvc_group_start then fails with EEXIST (path exists and is not a
 * socket), EADDRINUSE (a live process serves it; a socket nobody serves
 * is replaced), or what socket(2), connect(2) (probing an existing
 * socket), bind(2), listen(2) or chmod(2) return. Returns EINVAL (g NULL,
 * or path empty), ENAMETOOLONG (longer than a socket address holds),
 * EBUSY (started) or ENOMEM.
 */
LSVC_API int lsvc_group_set_control_socket(lsvc_group *g, const char *path);

/*
 * Puts svc, a service of the group, in stop stage `stage` (any int; 0 by
 * default). When the group stops, its stages stop in increasing order:
 * every service of a stage is asked to stop and waited for (within the
 * group's bound, lsvc_group_set_stop_timeout, counted from when that
 * stage was asked) before the next stage is asked; the services of one
 * stage stop together. lsvc_group_stop asks the first stage at once; each
 * later stage is asked by lsvc_group_wait as the one before it ends, so a
 * staged group needs a waiter, as every group does. For chores that must
 * stop in an order: one that pauses the others first, collectors before
 * the thread they feed. Returns EINVAL (svc not in the group) or EBUSY
 * (started).
 */
LSVC_API int lsvc_group_set_stage(lsvc_group *g, lsvc *svc, int stage);

/*
 * Makes the group's signal thread also wait for `signo` and, when it
 * comes, wake svc, a service of the group, with `bits` (lsvc_wake_bits)
 * instead of stopping anything: a configuration reload as a service, on
 * SIGHUP. The group's signal rule applies to signo too: it must be
 * blocked in every thread (lsvc_block_signals blocks only SIGINT and
 * SIGTERM; block signo likewise, first in main()); lsvc_group_start
 * blocks it in the calling thread. Several signals may wake one service,
 * but a signal wakes one service only: a second call for the same signo
 * replaces the first. Returns EINVAL (svc not in the group; signo one of
 * the group's stop signals, or one that lsvc_group_set_signals refuses)
 * or EBUSY (started). lsvc_group_set_signals in turn refuses a set that
 * holds a signal given here.
 */
LSVC_API int lsvc_group_wake_on_signal(lsvc_group *g, int signo, lsvc *svc,
                                       unsigned bits);

/*
 * Starts the group without blocking: reads each service's settings from
 * the environment (lsvc_group_set_environment), blocks the group's signals
 * in the calling thread, starts the signal thread, and the watchdog thread
 * when systemd asks for one (lsvc_group_set_notify), then starts every
 * service the environment did not disable, in the order they were added,
 * to run until stopped. With every service disabled the group starts with
 * nothing to run, and lsvc_group_wait returns at once. The first signal logs
 * "received SIGTERM: stopping N services." at INFO and stops the group
 * with lsvc_group_stop; a later one, or any once the group is stopping,
 * logs which services are still running. A group signal already pending
 * stops the group at once, whether it was sent to the process (kill) or,
 * while blocked, raise()d in the calling thread.
 *
 * Signal rule: a signal is delivered to any thread that does not block it,
 * so every thread of the process must block the group's signals, or one of
 * them may take the signal with its default action (termination). Call
 * lsvc_block_signals() first thing in main(), before any thread exists:
 * threads inherit the mask. A signal is taken by one thread only, so two
 * groups started at the same time should not share a signal: one SIGTERM
 * would stop only one of them.
 *
 * Until lsvc_group_wait returns, the group owns its services: lsvc_start
 * on one of them is EBUSY (lsvc_stop, lsvc_join and the rest still work).
 *
 * Returns EINVAL (g NULL, or the group is empty), EBUSY (already started, or
 * a service is running), ECANCELED (a service's on_start returned
 * nonzero), or what lsvc_start or pthread_create returned; on
 * failure every service started is stopped again and waited for, each at
 * most its stop bound as in lsvc_group_wait (a stuck one is left running
 * and logged), the group's threads ended and the caller's mask restored.
 */
LSVC_API int lsvc_group_start(lsvc_group *g);

/*
 * Waits until every service of the started group has ended (by a signal,
 * lsvc_group_stop, or on its own), reaps each, ends the signal and
 * watchdog threads, and,
 * when called from the thread that started the group (that very thread,
 * not a later one given the same pthread_t), restores that thread's
 * signal mask. Once the group is stopping, each service is waited
 * for at most its bound (lsvc_group_set_stop_timeout); one still running
 * then is logged by name and left running, to be joined with lsvc_join.
 * The group is then no longer started.
 * Returns EINVAL (g NULL, or not started: lsvc_group_start has not
 * returned 0), EBUSY (another thread is already waiting), EDEADLK (called
 * from one of its services' threads, or from the group's signal or
 * watchdog thread, as a log sink would be; whatever the group's state) or
 * ETIMEDOUT (a service did not end within its bound).
 */
LSVC_API int lsvc_group_wait(lsvc_group *g);

/* lsvc_group_start, then lsvc_group_wait: runs the group until it ends.
 * Returns what they return. */
LSVC_API int lsvc_group_run(lsvc_group *g);

/*
 * Requests a stop of every service of the group and returns at once; the
 * waiting is lsvc_group_wait's. Safe from any thread, a run_once of the
 * group included, and idempotent; 0 on a group that is not started.
 * Returns EINVAL.
 */
LSVC_API int lsvc_group_stop(lsvc_group *g);

/*
 * Frees the group and releases its services, which are left as they are.
 * Returns EINVAL, or EBUSY while the group is started or one of its
 * services still runs (one left running after a timed-out wait: join it
 * first, since its run_once may still stop the group).
 */
LSVC_API int lsvc_group_destroy(lsvc_group *g);

/*
 * Blocks SIGINT and SIGTERM in the calling thread. Call it first in main(),
 * before any thread is created, so that every thread inherits the mask and
 * only a group's signal thread takes these signals. Returns what
 * pthread_sigmask returns.
 */
LSVC_API int lsvc_block_signals(void);

/* --- Logging ------------------------------------------------------------ */

/* Message levels, the numbers of Python's logging module. */
enum {
    LSVC_LOG_DEBUG = 10,
    LSVC_LOG_INFO = 20,
    LSVC_LOG_WARNING = 30,
    LSVC_LOG_ERROR = 40,
};

/*
 * A log sink. level is one of LSVC_LOG_*; logger is "loopsvc" or
 * "loopsvc.<service name in lower case>"; message is one complete sentence
 * with no newline. Called from
 * any library or service thread, never with a library lock held; it must
 * be thread-safe.
 */
typedef void (*lsvc_log_fn)(int level, const char *logger,
                            const char *message, void *ctx);

/*
 * Sends every later message to fn(level, logger, message, ctx); NULL
 * restores the default sink, which writes each message to stderr as one
 * line with a single write():
 *   2026-11-27 17:19:25.123 | WARNING | loopsvc.cachepruner - <message>
 * A message being logged at the time of the call may still reach the
 * previous sink, so keep the previous ctx valid until no library thread
 * can be logging (for example, until the services are stopped).
 */
LSVC_API void lsvc_set_logger(lsvc_log_fn fn, void *ctx);

/*
 * Drops messages below `level`, any int (above LSVC_LOG_ERROR: no
 * message). The default is LSVC_LOG_WARNING, so that a library inside a
 * server says nothing while all is well (the INFO lines at each start and
 * stop are the application's choice), or the environment's
 * LOOPSVC_LOG_LEVEL (DEBUG, INFO, WARNING or ERROR, in any case) when it
 * is set, read once, at the first message or call here; any other value
 * is ignored with one WARNING. This call overrides both.
 */
LSVC_API void lsvc_set_log_level(int level);

/*
 * Logs one message through the library's sink, as the library's own
 * messages go: logger "loopsvc.<name in lower case>" of svc, or "loopsvc"
 * when svc is NULL; level as for lsvc_set_log_level; fmt as for printf,
 * the result cut at 1023 bytes. For run_once and lease implementations,
 * so that their lines land where the service's do. Any thread.
 */
LSVC_API void lsvc_log(const lsvc *svc, int level, const char *fmt, ...)
    LSVC_PRINTF(3, 4);

#ifdef __cplusplus
}
#endif

#endif /* LOOPSVC_H */
