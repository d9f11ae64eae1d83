/*
 * Internal interfaces shared by the files of lib/. Nothing here is
 * exported: every symbol is hidden, and named lsvc__* to keep it apart
 * from the public lsvc_* names.
 *
 * Time inside the library is int64_t nanoseconds of CLOCK_MONOTONIC, which
 * does not jump when the wall clock is set; seconds as double exist only
 * at the public edge.
 */
#ifndef LOOPSVC_INTERNAL_H
#define LOOPSVC_INTERNAL_H

#include "config.h" /* the layout of struct lsvc depends on it */
#include "loopsvc.h"

#include <assert.h>
#include <locale.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>

#define LSVC_HIDDEN __attribute__((visibility("hidden")))

#define LSVC_NS_PER_SEC INT64_C(1000000000)
#define LSVC_FOREVER INT64_MAX

/* A blocking stop waits at least this long, so that scheduling noise does
 * not report a short-interval service as stuck. */
#define LSVC_STOP_MIN_WAIT_NS (100 * INT64_C(1000000))

/* Longest single clock_nanosleep() step in precise mode: the bound on how
 * long a stop request can go unnoticed there. */
#define LSVC_PRECISE_STEP_NS (100 * INT64_C(1000000))

/* Under LSVC_MISSED_DELAY, a run that starts later than the smaller of
 * this and half the interval re-bases the schedule on its actual start. */
#define LSVC_DELAY_TOLERANCE_NS (5 * INT64_C(1000000))

/* Overrun warnings per service: the first at once, then at most one per
 * this period. */
#define LSVC_OVERRUN_WARN_PERIOD_NS (60 * LSVC_NS_PER_SEC)

/* Likewise for a lease that cannot tell whether it is held. */
#define LSVC_LEASE_WARN_PERIOD_NS (60 * LSVC_NS_PER_SEC)

LSVC_HIDDEN uint64_t lsvc__thread_token(void);

/*
 * A mutex that, in debug builds (NDEBUG unset), knows which thread holds
 * it: a function that must be called with it held asserts so with
 * lsvc__assert_held(), as the kernel's lockdep_assert_held() does.
 */
struct lsvc_lock {
    pthread_mutex_t mutex;
#ifndef NDEBUG
    _Atomic uint64_t holder;  /* LSVC_SELF() of the holder; 0 = none */
#endif
};

/* Which thread this is, among the live ones, for the holder: pthread_self()
 * where pthread_t is a number or a pointer, which costs a register read
 * where the thread token costs a call into the dynamic linker for its
 * thread-local storage, on every lock of every run. */
#if HAVE_SCALAR_PTHREAD_T
#define LSVC_SELF() ((uint64_t)(uintptr_t)pthread_self())
#else
#define LSVC_SELF() lsvc__thread_token()
#endif

#ifndef NDEBUG
#define LSVC_LOCK_HOLDER(l, token) \
    atomic_store_explicit(&(l)->holder, (token), memory_order_relaxed)
#define lsvc__assert_held(l)                                                \
    assert(atomic_load_explicit(&(l)->holder, memory_order_relaxed) ==      \
           LSVC_SELF())
#else
#define LSVC_LOCK_HOLDER(l, token) ((void)(l))
#define lsvc__assert_held(l) ((void)(l))
#endif

static inline int lsvc__lock_init(struct lsvc_lock *l)
{
    LSVC_LOCK_HOLDER(l, 0);
    return pthread_mutex_init(&l->mutex, NULL);
}

static inline void lsvc__lock(struct lsvc_lock *l)
{
    pthread_mutex_lock(&l->mutex);
    LSVC_LOCK_HOLDER(l, LSVC_SELF());
}

static inline void lsvc__unlock(struct lsvc_lock *l)
{
    LSVC_LOCK_HOLDER(l, 0);
    pthread_mutex_unlock(&l->mutex);
}

/* pthread_cond_wait and _timedwait on l, which the wait gives up while it
 * waits. */
static inline void lsvc__cond_wait(pthread_cond_t *c, struct lsvc_lock *l)
{
    LSVC_LOCK_HOLDER(l, 0);
    pthread_cond_wait(c, &l->mutex);
    LSVC_LOCK_HOLDER(l, LSVC_SELF());
}

static inline void lsvc__cond_timedwait(pthread_cond_t *c, struct lsvc_lock *l,
                                        const struct timespec *ts)
{
    LSVC_LOCK_HOLDER(l, 0);
    pthread_cond_timedwait(c, &l->mutex, ts);
    LSVC_LOCK_HOLDER(l, LSVC_SELF());
}

enum lsvc_thread_state {
    LSVC_THREAD_NONE,     /* no thread, or one whose join is claimed */
    LSVC_THREAD_RUNNING,  /* created and not yet finished */
    LSVC_THREAD_FINISHED, /* past on_stop; waiting to be joined */
};

/* Admits one event per period and counts the ones it turned away. */
struct lsvc_ratelimit {
    int64_t period_ns;
    int64_t last_ns;      /* when the last admitted event happened */
    uint64_t suppressed;  /* turned away since then */
    bool primed;          /* an event was admitted before */
};

/* histogram.c: one histogram; only the service thread writes it. */
struct lsvc_hist {
    /* The sum first: next to it, the first buckets (up to 50 us), where
     * most runs' observations land, often share its cache line. */
    _Atomic uint64_t sum_ns;
    _Atomic uint64_t buckets[LSVC_HISTOGRAM_BUCKETS];
};
LSVC_HIDDEN void lsvc__hist_observe(struct lsvc_hist *h, int64_t ns);

/* health.c: when a service counts as unhealthy (lsvc_healthy). */
struct lsvc_health_limits {
    double stuck_after;   /* intervals of one run */
    uint64_t failures;    /* failed runs in a row */
    double stale_after;   /* intervals with no progress */
    double orphaned_after; /* intervals with no success on any replica */
};
LSVC_HIDDEN extern const struct lsvc_health_limits lsvc__health_defaults;

/* A service is never stale sooner than this. */
#define LSVC_STALE_MIN_NS LSVC_NS_PER_SEC

/* What to judge a service's health by, read at one instant. */
struct lsvc_health_view {
    bool running, paused;
    int64_t now_ns;
    int64_t run_begin_ns;     /* 0 = between runs */
    int64_t interval_ns;
    int64_t progress_ns;      /* the last sign of progress */
    bool progressed;          /* the last due point was progress */
    int64_t next_due_ns;      /* when the sleeping thread runs next;
                               * LSVC_FOREVER: when woken; 0: unknown */
    uint64_t consecutive_failures;
    int64_t cluster_ns;       /* leased, not held here, and the lease tells
                               * of other replicas: the last success on
                               * any, or when this one began to ask; else
                               * 0 */
    struct lsvc_health_limits limits;
};
/* NULL when healthy, else "stuck", "failing", "stale" or "orphaned". */
LSVC_HIDDEN const char *lsvc__health(const struct lsvc_health_view *v);

/* wakeup.c: what a sleeping service thread waits on, where the system
 * offers a futex or sem_clockwait (LSVC_HAVE_WAKEUP); elsewhere loop.c
 * sleeps on the service's condvar, and posts go unread until drained. */
#define LSVC_HAVE_WAKEUP (HAVE_LINUX_FUTEX || HAVE_SEM_CLOCKWAIT)
struct lsvc_wakeup {
#if HAVE_LINUX_FUTEX
    _Atomic uint32_t word; /* 1: posted */
#else
    sem_t sem;
#endif
};

LSVC_HIDDEN int lsvc__wakeup_init(struct lsvc_wakeup *w);
LSVC_HIDDEN void lsvc__wakeup_destroy(struct lsvc_wakeup *w);
LSVC_HIDDEN void lsvc__wakeup_post(struct lsvc_wakeup *w);
/* lsvc__wakeup_post in two halves, for a poster that holds the lock of
 * the service that w is part of: the mark under the lock, the wake after
 * it, so that the woken thread does not wake to a lock still held. The
 * wake takes w's address, read while w was alive, and reads nothing
 * there: the kernel only hashes the address. It is safe once w is freed;
 * what waits at that address by then takes it as a spurious wake-up,
 * which futex(2) tells every waiter to expect (valgrind's memcheck, which
 * checks the address, is told so in test/valgrind.supp). Where there is
 * no futex, the mark posts and the wake does nothing. */
LSVC_HIDDEN void lsvc__wakeup_mark(struct lsvc_wakeup *w);
LSVC_HIDDEN void lsvc__wakeup_wake(uintptr_t w);
/* Whether a mark has not yet been taken by a wait: its wake may still be
 * to come, from a poster that lost the CPU after the mark. */
LSVC_HIDDEN bool lsvc__wakeup_pending(struct lsvc_wakeup *w);
/* Forgets a post nobody waited for. */
LSVC_HIDDEN void lsvc__wakeup_drain(struct lsvc_wakeup *w);
/* Returns when posted (taking the post), at due_ns on CLOCK_MONOTONIC,
 * or on a signal. Only where LSVC_HAVE_WAKEUP. */
LSVC_HIDDEN void lsvc__wakeup_wait(struct lsvc_wakeup *w, int64_t due_ns);

/* A cache line (64 bytes on x86-64 and on most arm64): struct lsvc
 * aligns the fields of a run's work to it. */
#define LSVC_CACHE_LINE 64

/* stats.c: the counters of lsvc_stats that every run changes, kept with
 * the rest of what a run touches. */
struct lsvc_run_counts {
    uint64_t loops;
    uint64_t consecutive_failures;
    int64_t last_run_ns;
    int64_t max_run_ns;
    int64_t last_lateness_ns;
    int64_t max_lateness_ns;
    int64_t last_success_ns;
};

/* What on_start returned, for the lsvc_start that waits for it. */
struct lsvc_start_result {
    bool done;
    int rc;
};

struct lsvc {
    /* What a service thread touches at every run comes first, in as few
     * cache lines as it fits: with many services, each wake-up finds its
     * service out of the cache, and each line is one more miss. What
     * other threads read of a run (lsvc_get_run_info, lsvc_get_stats) is
     * made from these fields when they ask. */

    /* Posted when a stop is requested, and by a change that must wake
     * the sleeping thread: what it sleeps on, where the system has one
     * (wakeup.c). Needs no lock. First on a line: lsvc_create aligns
     * svc. */
    _Alignas(LSVC_CACHE_LINE) struct lsvc_wakeup wake;
    /* Protected by the lock, as are the fields from wake_bits to health
     * that are not marked otherwise: */
    bool stop_requested;
    bool has_next;            /* lsvc_next_run_in: next_ns replaces the
                               * next due point */
    bool rescheduled;         /* lsvc_set_loop_seconds between runs */
    bool paused;
    bool sleeping;            /* the thread sleeps, or is about to: a
                               * change must wake it (lsvc__unlock_kick) */
    bool in_run;              /* run_once is in progress */
    bool run_has_token;       /* the run holds a lease with a token, */
    bool progressed;          /* the last run, or skipped run, was one */
    /* Only service.c, loop.c, control.c and stats.c take it; the cond
     * waits on it. Next to the wake-up, which is read just before. */
    struct lsvc_lock lock;

    /* Set by lsvc_create and never changed: read without the lock. */
    const lsvc_class *cls;
    void *arg;
    int64_t wake_gap_ns;
    int64_t jitter_ns;        /* the options' seconds, in ns */
    /* The options every run reads, copied here from opts. */
    lsvc_missed missed;
    bool leased;              /* opts.lease is set */
    bool precise;
    bool fixed_delay;
    bool align_to_clock;
    bool quiet_overruns;
    bool histograms;          /* !opts.no_histograms */

    /* The interval in ns in force; LSVC_FOREVER is LSVC_NEVER. Read by
     * any thread: atomic. It is the code's (code_interval_ns), or the
     * environment's while a group runs the service (set by a group start
     * before the thread starts, and reset when the group releases the
     * service or, for a thread still running then, when that thread
     * ends). */
    _Atomic int64_t interval_ns;
    /* Scheduled start of the current run; 0 = none yet. Written under
     * the lock by the service thread, read by any without it. */
    _Atomic int64_t due_ns;
    /* From here to progress_ns: what other threads ask of the schedule
     * (control.c), and what the service thread tells them; the asks are
     * reset at each start, the rest kept across starts. */
    unsigned wake_bits;       /* OR of the bits of those wakes */
    unsigned pausers;         /* threads in lsvc_pause, waiting for the
                               * run in progress to end */
    int64_t asked_ns;         /* earliest run asked for by a wake or
                               * lsvc_run_within; LSVC_FOREVER = none */
    int64_t next_ns;
    int64_t resumed_ns;       /* when a pause ended; 0 = no resume to
                               * apply */
    uint64_t run_token;       /* the run's token, with run_has_token */
    int64_t run_begin_ns;     /* when the run in progress began; 0 = none */
    uint64_t runs_begun;      /* across starts: the next run's number - 1 */
    int64_t last_start_ns;    /* start of the last run; 0 = none */
    int64_t last_end_ns;      /* end of the last run; 0 = none */
    int64_t next_due_ns;      /* when the sleeping thread runs next;
                               * LSVC_FOREVER: when woken; 0: unknown */
    int64_t progress_ns;      /* the last sign of progress (health.c) */
    /* The run in progress, with due_ns, run_begin_ns and runs_begun: */
    unsigned run_reasons;     /* LSVC_RUN_* */
    unsigned run_wake_bits;   /* the wake bits it took */
    int64_t prev_start_ns;    /* when the run before it began; 0 = none */
    /* The counters every run changes; stats keeps the others. */
    struct lsvc_run_counts counts;

    /* By lsvc_histogram_kind. Written by the service thread alone, read
     * by any: atomic. */
    _Alignas(LSVC_CACHE_LINE) struct lsvc_hist hist[2];

    /* Less often: */
    lsvc_stats stats;         /* but for the fields in counts */
    lsvc_options opts;        /* as given to lsvc_create; never changed */
    enum lsvc_thread_state state;
    bool joining;             /* a waiter is in a timed join of `thread` */
    bool group_owned;         /* its group is started: only it starts svc */
    bool started_never;       /* LSVC_NEVER when this thread was started:
                               * its first run waits for a wake */
    /* CLOCK_MONOTONIC. Broadcast when a stop is requested (it makes
     * waiters re-read their deadline, and wakes a service sleeping on it)
     * and when the thread finishes. */
    pthread_cond_t cond;
    pthread_t thread;
    uint64_t generation;      /* threads started so far: the current one */
    int64_t stop_deadline_ns; /* when a group stop gives up on it */
    uint64_t loops_wanted;    /* 0 = until stopped */
    lsvc_group *group;        /* NULL when in no group */
    /* Where the thread starting now tells its starter, who waits for it,
     * what on_start returned; NULL once told. */
    struct lsvc_start_result *start_result;
    int64_t cluster_since_ns; /* this thread's first word from a lease
                               * that tells of other replicas; 0 = none */
    struct lsvc_health_limits health; /* its group's, or the defaults */

    /* The class's or the options' interval, until lsvc_set_loop_seconds
     * sets it; read by any thread: atomic. */
    _Atomic int64_t code_interval_ns;

    /* Set by lsvc_create and never changed: read without the lock. */
    void *block;          /* what svc was allocated in, for free() */
    char *name;
    char *logger;         /* "loopsvc." + name in lower case */
    char *env_enabled;    /* "LOOPSVC_<NAME>_ENABLED" */
    char *env_loop_seconds; /* "LOOPSVC_<NAME>_LOOP_SECONDS", same block */
    int64_t initial_delay_ns;
    int64_t offset_ns;
    int64_t backoff_max_ns;

    /* Touched only by the service thread. */
    struct lsvc_ratelimit overrun_rl;
    struct lsvc_ratelimit lease_rl;
    bool orphan_told;     /* a WARNING said the service is orphaned */
    uint64_t lease_token; /* the fencing token of the last holding */
};
_Static_assert(_Alignof(struct lsvc) == LSVC_CACHE_LINE,
               "a service's first field begins a cache line");

static inline int64_t lsvc__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * LSVC_NS_PER_SEC + ts.tv_nsec;
}

static inline struct timespec lsvc__timespec(int64_t ns)
{
    struct timespec ts = {
        .tv_sec = (time_t)(ns / LSVC_NS_PER_SEC),
        .tv_nsec = (long)(ns % LSVC_NS_PER_SEC),
    };
    return ts;
}

/* schedule.c: seconds at the edge, and when the next run is due. */
LSVC_HIDDEN int lsvc__seconds_to_ns(double seconds, bool zero_ok, int64_t *out);
/* An interval: seconds_to_ns's range without 0, or INFINITY (LSVC_NEVER)
 * as LSVC_FOREVER. */
LSVC_HIDDEN int lsvc__interval_to_ns(double seconds, int64_t *out);
LSVC_HIDDEN int64_t lsvc__next_due(lsvc_missed policy, int64_t due_ns,
                                   int64_t interval_ns, int64_t now_ns,
                                   uint64_t *skipped);
LSVC_HIDDEN int64_t lsvc__run_base(lsvc_missed policy, int64_t due_ns,
                                   int64_t begin_ns, int64_t interval_ns);
LSVC_HIDDEN int64_t lsvc__add_ns(int64_t a, int64_t b);
LSVC_HIDDEN int64_t lsvc__grid_point(int64_t due_ns, int64_t interval_ns,
                                     int64_t at_ns);

/* With align_to_clock, the service looks at the wall clock at least this
 * often while it sleeps, so that a step of the clock moves its next point
 * within this time. */
#define LSVC_WALL_CHECK_NS LSVC_NS_PER_SEC

/* schedule.c: a service thread's schedule, which only that thread
 * touches: its next point by the interval, the jitter of that point's
 * run, and what the options make of failures and of the wall clock. */
struct lsvc_sched {
    int64_t due;        /* the next point, CLOCK_MONOTONIC; LSVC_FOREVER:
                         * none, only a wake or a request runs it */
    int64_t wall;       /* with align_to_clock, that point on
                         * CLOCK_REALTIME; 0: due is no wall point */
    int64_t jitter;     /* how long after due its run starts */
    uint64_t rng;       /* the jitter's generator */
    uint64_t failures;  /* runs failed in a row */
    unsigned reasons;   /* LSVC_RUN_FIRST and _RESUMED for the next run */
};
/* A run as the schedule sees it. */
struct lsvc_point {
    unsigned reasons;   /* LSVC_RUN_* */
    int64_t due;        /* its point, or when it was asked for */
    int64_t jitter;     /* its jitter, when due by the interval */
    int64_t begin;
};
LSVC_HIDDEN void lsvc__sched_init(const lsvc *svc, struct lsvc_sched *sc,
                                  int64_t now_ns);
LSVC_HIDDEN int64_t lsvc__sched_target(struct lsvc_sched *sc, int64_t now_ns);
LSVC_HIDDEN void lsvc__sched_set(struct lsvc_sched *sc, int64_t due_ns);
LSVC_HIDDEN void lsvc__sched_resume(const lsvc *svc, struct lsvc_sched *sc,
                                    int64_t resumed_ns);
LSVC_HIDDEN void lsvc__sched_interval_changed(const lsvc *svc,
                                              struct lsvc_sched *sc,
                                              int64_t last_start_ns,
                                              int64_t last_end_ns,
                                              int64_t now_ns);
LSVC_HIDDEN uint64_t lsvc__sched_after_run(const lsvc *svc,
                                           struct lsvc_sched *sc,
                                           const struct lsvc_point *run,
                                           int64_t end_ns, bool failed);
LSVC_HIDDEN uint64_t lsvc__sched_skip(const lsvc *svc, struct lsvc_sched *sc,
                                      const struct lsvc_point *run,
                                      int64_t now_ns);

/* loop.c: the body of a service thread, and its sleep. */
LSVC_HIDDEN void *lsvc__service_main(void *arg);
LSVC_HIDDEN void lsvc__unlock_kick(lsvc *svc, bool changed);

/* control.c: what other threads ask of a running service. */
LSVC_HIDDEN void lsvc__control_reset(lsvc *svc);
/* lsvc_pause without waiting for the run in progress to end. */
LSVC_HIDDEN void lsvc__pause_nowait(lsvc *svc);

/* service.c: stop requests and waits, shared with the group. */
LSVC_HIDDEN int lsvc__start(lsvc *svc, uint64_t loops, bool by_group);
LSVC_HIDDEN uint64_t lsvc__request_stop(lsvc *svc, int64_t deadline_ns);
LSVC_HIDDEN int lsvc__wait_and_reap(lsvc *svc, uint64_t generation,
                                    int64_t deadline_ns, bool follow_stop);
LSVC_HIDDEN int64_t lsvc__stop_bound_ns(lsvc *svc);
/* Whether the service's jitter, offset and backoff allow this interval. */
LSVC_HIDDEN bool lsvc__interval_fits(const lsvc *svc, int64_t interval_ns);
LSVC_HIDDEN bool lsvc__is_own_thread(lsvc *svc);
LSVC_HIDDEN void lsvc__thread_finished(lsvc *svc);

/* service.c: what a group does to its services, through these alone.
 * join: EBUSY when svc is in a group already. claim: false when its
 * thread runs; else only the group may start it until release, which
 * also ends an interval override (at the latest when a thread still
 * running then ends). */
LSVC_HIDDEN int lsvc__group_join(lsvc *svc, lsvc_group *g);
LSVC_HIDDEN void lsvc__group_leave(lsvc *svc);
LSVC_HIDDEN bool lsvc__group_claim(lsvc *svc);
LSVC_HIDDEN void lsvc__group_release(lsvc *svc);
LSVC_HIDDEN void lsvc__override_interval(lsvc *svc, int64_t interval_ns);
LSVC_HIDDEN void lsvc__set_health_limits(lsvc *svc,
                                         const struct lsvc_health_limits *l);

/* lease.c: whether this replica runs a due run. Service thread. */
enum lsvc_lease_answer {
    LSVC_LEASE_HELD,      /* held here: run */
    LSVC_LEASE_ELSEWHERE, /* the lease said "not held" */
    LSVC_LEASE_UNKNOWN,   /* the lease could not tell */
    LSVC_LEASE_CANCELED,  /* a stop ended the ask */
};
LSVC_HIDDEN enum lsvc_lease_answer lsvc__lease_acquire(lsvc *svc,
                                                      uint64_t *token,
                                                      bool *has_token);
LSVC_HIDDEN void lsvc__lease_release(lsvc *svc);
/* After a run the lease allowed, with what run_once returned. */
LSVC_HIDDEN void lsvc__lease_ran(lsvc *svc, int result);

/* stats.c: what a run leaves in the counters. */
LSVC_HIDDEN void lsvc__stats_begin_run(lsvc *svc, int64_t due_ns,
                                       int64_t late_from_ns, int64_t begin_ns,
                                       bool woken);
LSVC_HIDDEN void lsvc__stats_end_run(lsvc *svc, int64_t end_ns,
                                     int64_t run_ns, bool failed,
                                     bool overrun, uint64_t skipped);
LSVC_HIDDEN void lsvc__stats_start_failed(lsvc *svc);
LSVC_HIDDEN void lsvc__stats_skip_run(lsvc *svc, uint64_t missed,
                                      bool elsewhere);
LSVC_HIDDEN void lsvc__stats_lease_change(lsvc *svc, bool held,
                                          int64_t now_ns);
/* What the lease says of the last success on any replica (0: none it
 * knows of), at now_ns. */
LSVC_HIDDEN void lsvc__stats_cluster(lsvc *svc, int64_t success_ns,
                                     int64_t now_ns);
LSVC_HIDDEN void lsvc__stats_health_view(const lsvc *svc,
                                         struct lsvc_health_view *out);
/* What the control socket's status shows of a service, read at once. */
struct lsvc_status {
    lsvc_stats stats;
    int64_t interval_ns;
    int64_t next_due_ns;      /* 0: unknown or in a run */
    int64_t last_start_ns;
    bool in_run;
    const char *health;       /* NULL: healthy */
};
LSVC_HIDDEN void lsvc__stats_status(const lsvc *svc, struct lsvc_status *out);

/* observer.c: the run observer. */
LSVC_HIDDEN bool lsvc__observing(void);
LSVC_HIDDEN void lsvc__observe(const lsvc_run_event *event);

/* settings.c: a service's settings from the environment. */
struct lsvc_settings {
    bool enabled;
    int64_t interval_ns;
};
LSVC_HIDDEN int lsvc__settings_names(lsvc *svc);
LSVC_HIDDEN void lsvc__settings_read(const lsvc *svc,
                                     struct lsvc_settings *out);
/* digits[.digits][e[+|-]digits] (or .digits...), as a double: EINVAL for
 * anything else, signs, hex, inf and nan included, and for a value out of
 * a double's range. Any locale. */
LSVC_HIDDEN int lsvc__parse_decimal(const char *s, double *out);

/* notify.c: systemd's notify protocol. fd is -1 when it is off. */
struct lsvc_notifier {
    int fd;
    struct sockaddr_un addr;
    socklen_t addr_len;
    int64_t watchdog_ns;      /* period of WATCHDOG=1; 0 = no watchdog */
    atomic_bool failed;       /* a send failed: only the first is logged */
    atomic_int send_errno;    /* of that send, until it is logged */
};
LSVC_HIDDEN void lsvc__notifier_open(struct lsvc_notifier *n);
LSVC_HIDDEN void lsvc__notify(struct lsvc_notifier *n, const char *state);
LSVC_HIDDEN void lsvc__notifier_log_errors(struct lsvc_notifier *n);
LSVC_HIDDEN void lsvc__notifier_close(struct lsvc_notifier *n);

/* A service as its group sees it. */
struct lsvc_member {
    lsvc *svc;
    int stage;                /* its stop stage (lsvc_group_set_stage) */
    bool skip;                /* disabled by the environment for this start */
    const char *unhealthy;    /* the watchdog's last verdict: NULL =
                               * healthy, else lsvc__health's reason */
};

/* group.c: a copy of the group's members, for its metrics and control
 * socket; the caller frees *out. ENOMEM, or 0. */
LSVC_HIDDEN int lsvc__group_members(lsvc_group *g, struct lsvc_member **out,
                                    size_t *count);

/* metrics.c: the group's metrics as a malloc'd string of *len bytes. */
LSVC_HIDDEN int lsvc__metrics_text(lsvc_group *g, char **text, size_t *len);
/* Numbers in the calling thread written and read as the formats want
 * them ("0.5", whatever the process's locale), until restored. */
LSVC_HIDDEN locale_t lsvc__use_c_locale(void);
LSVC_HIDDEN void lsvc__restore_locale(locale_t previous);

/* watchdog.c: WATCHDOG=1 while every service of a group is healthy. */
struct lsvc_watchdog {
    struct lsvc_member *members; /* the group's, fixed while it is started */
    size_t count;
    struct lsvc_notifier *notifier;

    pthread_mutex_t lock;     /* protects quit */
    pthread_cond_t cond;      /* CLOCK_MONOTONIC; signalled by quit */
    bool quit;
    pthread_t thread;
    _Atomic uint64_t token;   /* lsvc__thread_token() of `thread` */
};
LSVC_HIDDEN int lsvc__watchdog_start(struct lsvc_watchdog *w);
LSVC_HIDDEN void lsvc__watchdog_stop(struct lsvc_watchdog *w);

/* ctlsock.c: a group's control socket, served by a thread of its own.
 * The members are the group's, fixed while it is started. */
struct lsvc_ctlsock {
    lsvc_group *group;
    struct lsvc_member *members;
    size_t count;
    const char *path;
    int fd;                   /* listening */
    int quit[2];              /* a pipe: a byte in it ends the thread */
    int64_t listen_again_ns;  /* accept() ran out of descriptors: the
                               * listener rests until then */
    dev_t dev;                /* the socket file made, to remove only it */
    ino_t ino;
    pthread_t thread;
    struct lsvc_ratelimit refused_rl;
};
/* Makes the socket and starts serving it; ctlsock_stop ends it all and
 * removes the file. */
LSVC_HIDDEN int lsvc__ctlsock_start(struct lsvc_ctlsock *c, const char *path,
                                    lsvc_group *g, struct lsvc_member *members,
                                    size_t count);
LSVC_HIDDEN void lsvc__ctlsock_stop(struct lsvc_ctlsock *c);

/* thread.c: platform shims for library threads. */
LSVC_HIDDEN int lsvc__spawn(pthread_t *thread, const pthread_attr_t *attr,
                            void *(*fn)(void *), void *arg);
LSVC_HIDDEN int lsvc__thread_attr(pthread_attr_t *attr,
                                  const lsvc_options *opts);
LSVC_HIDDEN int lsvc__check_thread_options(const lsvc_options *opts);
LSVC_HIDDEN void lsvc__thread_name(const char *name);
LSVC_HIDDEN int lsvc__timed_join(pthread_t thread, int64_t deadline_ns);
LSVC_HIDDEN bool lsvc__is_fault_signal(int sig);
LSVC_HIDDEN bool lsvc__is_usable_signal(int sig);

/* slack.c: the service thread's timer slack, which follows the rate at
 * which the process's services wake. Only the thread itself uses its
 * lsvc_slack. */
struct lsvc_slack {
    long fixed_ns;       /* opts.timer_slack_ns; 0 = automatic */
    long cap_ns;         /* the slack the thread inherited */
    long applied_ns;     /* the slack set, or -1 */
    int64_t interval_ns; /* the interval its rate is counted at */
    int64_t rate;        /* its share of the process's rate */
};

LSVC_HIDDEN void lsvc__slack_join(struct lsvc_slack *s, long fixed_ns,
                                  int64_t interval_ns);
LSVC_HIDDEN void lsvc__slack_follow(struct lsvc_slack *s, int64_t interval_ns);
LSVC_HIDDEN void lsvc__slack_leave(struct lsvc_slack *s);

/* log.c: the one sink of the library. */
LSVC_HIDDEN bool lsvc__log_enabled(int level);
LSVC_HIDDEN void lsvc__log(int level, const char *logger, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
LSVC_HIDDEN void lsvc__log_value(char *out, size_t size, const char *value);
/* strerror_r's text for err, or "error <err>" when it has none. */
LSVC_HIDDEN void lsvc__strerror(int err, char *out, size_t size);
LSVC_HIDDEN void lsvc__ratelimit_init(struct lsvc_ratelimit *rl,
                                      int64_t period_ns);
LSVC_HIDDEN bool lsvc__ratelimit_admit(struct lsvc_ratelimit *rl,
                                       int64_t now_ns, uint64_t *suppressed);

#endif /* LOOPSVC_INTERNAL_H */
