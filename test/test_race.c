/*
 * Race stress: eight threads call the public API in random order on a
 * shared set of services, some in a group and some on their own, for a
 * bounded time (LSVC_STRESS_SECONDS, default 2; LSVC_STRESS_SEED varies the
 * random sequences): the lifecycle calls, and the runtime-control ones
 * (wakes, requests, next runs, new intervals, pauses, sleeps, run info),
 * which the runs also make on themselves, and an operator's: health,
 * histograms, the group's metrics, and clients of its control socket
 * sending every command while the group starts and stops. Every result is checked against
 * the contract, the callbacks check that a service never runs twice at
 * once, and a watchdog turns a hang into a failure that names what each
 * thread was doing.
 *
 * Thread scheduling is not reproducible, so a seed does not replay a
 * failure; it is printed so that a run can be repeated with the same call
 * mix. meson test stops a suite after 300 s: give longer runs
 * --timeout-multiplier 0, or run test-race directly.
 */
#include "helpers.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define WORKERS 8
#define SERVICES 6
#define GROUPED 3 /* services [0, GROUPED) belong to the group */

/* Slack on top of a bound before a wait counts as a hang of its own; wide,
 * since TSan on two loaded cores stalls threads for long stretches. */
#define SLACK_S 10.0

/* lsvc_stop's bound for every service here (and lsvc_pause's): the
 * intervals are 1-5 ms or LSVC_NEVER, both of which it leaves out, and the
 * bound is never less than 100 ms. */
#define STOP_BOUND_S 0.1

/* What lsvc_set_loop_seconds sets: intervals that keep that bound. The
 * last, LSVC_NEVER, is left out for a precise service: with no due time it
 * sleeps in 100 ms steps, after which it sees a stop, and the stops and
 * joins of it, so slowed, would leave time for a tenth of the calls. A
 * precise service is kept out of every long sleep for that reason. */
/* The service whose every other run fails (it has a backoff). */
#define FAILING_RACER 1

static const double new_intervals[] = {0.001, 0.002, 0.005, LSVC_NEVER};
#define N_NEW_INTERVALS (sizeof(new_intervals) / sizeof(new_intervals[0]))

enum op {
    OP_START,
    OP_STOP_NOWAIT,
    OP_STOP_WAIT,
    OP_STOP_TIMEOUT,
    OP_JOIN,
    OP_STATS,
    OP_IS_RUNNING,
    OP_SCHEDULED,
    OP_WAKE,
    OP_WAKE_BITS,
    OP_RUN_WITHIN,
    OP_NEXT_RUN_IN,
    OP_SET_LOOP_SECONDS,
    OP_PAUSE,
    OP_RESUME,
    OP_SHOULD_STOP,
    OP_RUN_INFO,
    OP_SLEEP,
    OP_HEALTH,     /* lsvc_healthy, a histogram, lsvc_group_healthy */
    OP_GROUP_STOP, /* the group's calls last: they have no target */
    OP_GROUP_WAIT,
    OP_GROUP_START,
    OP_METRICS,    /* lsvc_group_metrics */
    OP_CONTROL,    /* one command on the control socket */
    OP_COUNT,
    OP_IDLE = OP_COUNT, /* between calls, or finished */
};

static const char *const op_names[] = {
    "lsvc_start",       "lsvc_stop(false)", "lsvc_stop(true)",
    "lsvc_stop_timeout", "lsvc_join",       "lsvc_get_stats",
    "lsvc_is_running",  "lsvc_scheduled_start", "lsvc_wake",
    "lsvc_wake_bits",   "lsvc_run_within",  "lsvc_next_run_in",
    "lsvc_set_loop_seconds", "lsvc_pause",  "lsvc_resume",
    "lsvc_should_stop", "lsvc_get_run_info", "lsvc_sleep",
    "health",
    "lsvc_group_stop",  "lsvc_group_wait",  "lsvc_group_start",
    "lsvc_group_metrics", "control socket",
    "(between calls)",
};

/* Relative frequencies; the lifecycle calls dominate, since they are
 * where the races are. */
static const unsigned op_weights[OP_COUNT] = {
    [OP_START] = 20,     [OP_STOP_NOWAIT] = 12, [OP_STOP_WAIT] = 8,
    [OP_STOP_TIMEOUT] = 8, [OP_JOIN] = 8,       [OP_STATS] = 14,
    [OP_IS_RUNNING] = 8, [OP_SCHEDULED] = 10,   [OP_WAKE] = 6,
    [OP_WAKE_BITS] = 4,  [OP_RUN_WITHIN] = 4,   [OP_NEXT_RUN_IN] = 4,
    [OP_SET_LOOP_SECONDS] = 3, [OP_PAUSE] = 4,  [OP_RESUME] = 4,
    [OP_SHOULD_STOP] = 3, [OP_RUN_INFO] = 6,    [OP_SLEEP] = 3,
    [OP_GROUP_STOP] = 4, [OP_GROUP_WAIT] = 4,   [OP_GROUP_START] = 4,
    [OP_HEALTH] = 4,     [OP_METRICS] = 2,      [OP_CONTROL] = 4,
};

/* One shared service and what its callbacks observed. */
struct racer {
    lsvc *svc;
    char name[16];
    atomic_int in_run;        /* run_once calls in progress */
    atomic_int alive;         /* threads between on_start and on_stop */
    atomic_uint_fast64_t completed; /* run_once calls that returned */
    atomic_uint_fast64_t starts;    /* on_start calls */
    atomic_uint_fast64_t begun;     /* run_once calls: picks what a run does */
    bool precise;                   /* kept out of long sleeps */
};

struct worker {
    int index;
    uint64_t seed, rng;
    pthread_t thread;
    /* Read by the watchdog while the worker runs. */
    atomic_int op;
    atomic_int target;
    atomic_uint_fast64_t calls;
    /* What this thread saw last, per service. */
    uint64_t last_loops[SERVICES];
    int64_t last_sched_ns[SERVICES];
    bool saw_run[SERVICES];
};

static struct {
    struct racer svcs[SERVICES];
    lsvc_group *g;
    char dir[64];          /* holds the group's control socket */
    char socket_path[96];
    struct worker workers[WORKERS];
    uint64_t base_seed;
    int64_t deadline_ns;
    sem_t exited;   /* posted by each worker as it ends */
    sem_t finished; /* posted when the test is over: the watchdog ends */
    double watchdog_s;

    /* Results that break the contract, kept for the failure message. */
    pthread_mutex_t lock;
    unsigned bad_count;
    char bad[12][256];

    /* Counted by the workers, and compared with the log at the end. */
    atomic_uint stop_timeouts;      /* blocking stops that gave ETIMEDOUT */
    atomic_uint group_timeouts;     /* lsvc_group_wait that gave ETIMEDOUT */
    atomic_uint group_start_busy;   /* lsvc_group_start that gave EBUSY */
    /* Counted by the workers, and only reported. */
    atomic_uint restarted_timeouts; /* stop_timeouts during a restart */
    atomic_uint full_bound_timeouts; /* lsvc_stop(true) that gave ETIMEDOUT */
    atomic_uint full_bound_unexplained; /* ... with no restart seen */
    atomic_uint group_starts;       /* lsvc_group_start that gave 0 */
    atomic_uint group_waits;        /* lsvc_group_wait that gave 0 */
    atomic_uint control_replies;    /* control socket replies read whole */
    atomic_uint_fast64_t op_calls[OP_COUNT];

    /* Counted by the log sink. */
    atomic_uint log_stop_warnings;   /* "A blocking stop was called" */
    atomic_uint log_group_warnings;  /* "did not stop within" */
    atomic_uint log_start_errors;    /* "Could not start" */
    atomic_uint log_other_errors;
    atomic_uint log_run_failures;    /* FAILING_RACER's failed runs */
    atomic_uint log_malformed;
} race = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void complain(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&race.lock);
    unsigned n = race.bad_count++;
    if (n < sizeof(race.bad) / sizeof(race.bad[0])) {
        va_start(ap, fmt);
        vsnprintf(race.bad[n], sizeof(race.bad[n]), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&race.lock);
}

/* xorshift64*: small, and good enough to mix calls. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(0x2545F4914F6CDD1D);
}

/* splitmix64, so that neighbouring thread indexes give unrelated seeds,
 * never 0 (a fixed point of xorshift). */
static uint64_t seed_for(uint64_t base, int index)
{
    uint64_t z = base + (uint64_t)(index + 1) * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    z ^= z >> 31;
    return z != 0 ? z : 1;
}

/* LSVC_STRESS_SECONDS, 2 when unset; -1 when it is not a duration. */
static double stress_seconds(void)
{
    const char *text = getenv("LSVC_STRESS_SECONDS");
    if (text == NULL || *text == '\0')
        return 2.0;
    char *end;
    double v = strtod(text, &end);
    return *end == '\0' && v > 0 && v < 24 * 3600 ? v : -1.0;
}

static uint64_t env_seed(void)
{
    const char *text = getenv("LSVC_STRESS_SEED");
    if (text == NULL || *text == '\0')
        return UINT64_C(0x10095C);
    return strtoull(text, NULL, 0);
}

/* --- The services ----------------------------------------------------------- */

static void complain_info(const struct racer *r, const lsvc_run_info *info,
                          const char *where, const char *what)
{
    complain("%s: run info %s: %s (run %llu, reasons 0x%x, due %lld, start "
             "%lld, prev_start %lld)",
             r->name, where, what, (unsigned long long)info->run,
             info->reasons, (long long)timespec_ns(&info->due),
             (long long)timespec_ns(&info->start),
             (long long)timespec_ns(&info->prev_start));
}

/* A run happens for a reason, due no later than it began, and after the
 * run before it. */
static void check_run_info(const struct racer *r, const lsvc_run_info *info,
                           const char *where)
{
    const unsigned known = LSVC_RUN_TIMER | LSVC_RUN_WOKEN | LSVC_RUN_FIRST |
                           LSVC_RUN_RESUMED;
    int64_t due = timespec_ns(&info->due), start = timespec_ns(&info->start);
    if (info->run == 0)
        complain_info(r, info, where, "run number 0");
    else if ((info->reasons & (LSVC_RUN_TIMER | LSVC_RUN_WOKEN)) == 0 ||
             (info->reasons & ~known) != 0)
        complain_info(r, info, where, "no reason, or an unknown one");
    else if (due > start || start > now_ns())
        complain_info(r, info, where, "due after its start, or started in "
                      "the future");
    else if (timespec_ns(&info->prev_start) > start)
        complain_info(r, info, where, "the run before began after it");
}

/* What a run learns about itself: its run info, which must be there;
 * and, one run in a few, a call on its own service, which must return 0
 * at once (a pause from a run must not wait for that run). */
static void check_own_run(lsvc *svc, struct racer *r)
{
    lsvc_run_info info;
    int rc = lsvc_get_run_info(svc, &info);
    if (rc != 0)
        complain("%s: lsvc_get_run_info inside a run returned %d", r->name,
                 rc);
    else
        check_run_info(r, &info, "inside the run");
    (void)lsvc_should_stop(svc);

    uint64_t n = atomic_fetch_add(&r->begun, 1);
    int64_t t0 = now_ns();
    const char *what;
    if (n % 7 == 3) {
        what = "lsvc_next_run_in(0.002)";
        rc = lsvc_next_run_in(svc, 0.002);
    } else if (n % 29 == 5 && !r->precise) {
        what = "lsvc_pause";
        rc = lsvc_pause(svc);
    } else if (n % 13 == 7) {
        what = "lsvc_wake_bits";
        rc = lsvc_wake_bits(svc, 1u << (n % 32));
    } else {
        return;
    }
    double took = seconds_since(t0);
    if (rc != 0 || took > SLACK_S)
        complain("%s: %s on itself inside a run returned %d after %.3f s",
                 r->name, what, rc, took);
}

static int racer_run_once(lsvc *svc, void *arg)
{
    struct racer *r = arg;
    int before = atomic_fetch_add(&r->in_run, 1);
    if (before != 0)
        complain("%s: run_once entered while %d run(s) were in progress",
                 r->name, before);
    if (atomic_load(&r->alive) != 1)
        complain("%s: run_once outside on_start..on_stop (alive %d)",
                 r->name, atomic_load(&r->alive));
    /* Calls on itself from its own run see a running service with a run
     * in progress. */
    if (!lsvc_is_running(svc))
        complain("%s: lsvc_is_running is false inside its own run", r->name);
    struct timespec sched;
    int rc = lsvc_scheduled_start(svc, &sched);
    if (rc != 0)
        complain("%s: lsvc_scheduled_start inside a run returned %d", r->name,
                 rc);
    else if (timespec_ns(&sched) > now_ns())
        complain("%s: the run in progress is scheduled in the future",
                 r->name);
    check_own_run(svc, r);
    /* A moment in which other threads act while the run is in progress. */
    sched_yield();
    bool fail = r == &race.svcs[FAILING_RACER] &&
                atomic_load(&r->completed) % 2 == 1;
    atomic_fetch_add(&r->completed, 1);
    atomic_fetch_sub(&r->in_run, 1);
    return fail ? 1 : 0;
}

static int racer_on_start(lsvc *svc, void *arg)
{
    struct racer *r = arg;
    (void)svc;
    int before = atomic_fetch_add(&r->alive, 1);
    if (before != 0)
        complain("%s: on_start while %d other thread(s) of it were alive",
                 r->name, before);
    atomic_fetch_add(&r->starts, 1);
    return 0;
}

static void racer_on_stop(lsvc *svc, void *arg)
{
    struct racer *r = arg;
    (void)svc;
    if (atomic_load(&r->in_run) != 0)
        complain("%s: on_stop while a run was in progress", r->name);
    int before = atomic_fetch_sub(&r->alive, 1);
    if (before != 1)
        complain("%s: on_stop with %d thread(s) alive", r->name, before);
}

static const lsvc_class racer_classes[SERVICES] = {
#define RACER_CLASS(NAME, SECONDS)                                           \
    {.name = (NAME), .loop_seconds = (SECONDS), .run_once = racer_run_once, \
     .on_start = racer_on_start, .on_stop = racer_on_stop}
    RACER_CLASS("race0", 0.001), RACER_CLASS("race1", 0.002),
    RACER_CLASS("race2", 0.003), RACER_CLASS("race3", 0.004),
    RACER_CLASS("race4", 0.005), RACER_CLASS("race5", 0.001),
#undef RACER_CLASS
};

/* Every sleep mode and missed-run policy takes part, and the schedules
 * for servers: jitter, backoff (race1's runs fail every other time) and a
 * gap between woken runs. */
static const lsvc_options racer_options[SERVICES] = {
    {.missed = LSVC_MISSED_DELAY},
    {.missed = LSVC_MISSED_SKIP, .error_backoff_max_seconds = 0.004},
    {.precise = true},
    {.missed = LSVC_MISSED_BURST, .jitter_seconds = 0.001},
    {.missed = LSVC_MISSED_DELAY, .min_wake_gap_seconds = 0.002},
    {.precise = true, .missed = LSVC_MISSED_SKIP,
     .min_wake_gap_seconds = 0.001},
};

/* What lsvc_set_loop_seconds must return for service i: an interval above
 * its backoff maximum, or below its jitter, is EINVAL. */
static int set_loop_seconds_rc(int i, double seconds)
{
    const lsvc_options *o = &racer_options[i];
    if (o->error_backoff_max_seconds > 0 && seconds > o->error_backoff_max_seconds)
        return EINVAL;
    if (seconds < o->jitter_seconds)
        return EINVAL;
    return 0;
}

/* --- The log -------------------------------------------------------------- */

/* Counts what the library says, and checks that it says it with no lock
 * of the service held: the calls below would deadlock (or, under TSan,
 * report a double lock) if it did. */
static void race_sink(int level, const char *logger, const char *message,
                      void *ctx)
{
    (void)ctx;
    if (message == NULL || *message == '\0' || strchr(message, '\n') ||
        logger == NULL || !starts_with(logger, "loopsvc"))
        atomic_fetch_add(&race.log_malformed, 1);
    if (logger != NULL && starts_with(logger, "loopsvc.race")) {
        int i = logger[strlen("loopsvc.race")] - '0';
        if (i >= 0 && i < SERVICES)
            (void)lsvc_is_running(race.svcs[i].svc);
    } else {
        for (int i = 0; i < SERVICES; i++)
            (void)lsvc_is_running(race.svcs[i].svc);
    }
    if (message == NULL)
        return;
    if (level == LSVC_LOG_WARNING && strstr(message, "A blocking stop was called"))
        atomic_fetch_add(&race.log_stop_warnings, 1);
    else if (level == LSVC_LOG_WARNING && strstr(message, "did not stop within"))
        atomic_fetch_add(&race.log_group_warnings, 1);
    else if (level == LSVC_LOG_ERROR && strstr(message, "Could not start"))
        atomic_fetch_add(&race.log_start_errors, 1);
    else if (level == LSVC_LOG_ERROR && strstr(message, "run_once returned") &&
             logger != NULL && strcmp(logger, "loopsvc.race1") == 0)
        atomic_fetch_add(&race.log_run_failures, 1);
    else if (level >= LSVC_LOG_ERROR)
        atomic_fetch_add(&race.log_other_errors, 1);
}

/* --- The workers ------------------------------------------------------------- */

static void unexpected(const struct worker *w, enum op op, int target,
                       const char *args, int rc, double took)
{
    complain("thread %d (seed 0x%llx): %s(%s%s%s) returned %d (%s) after "
             "%.3f s",
             w->index, (unsigned long long)w->seed, op_names[op],
             target >= 0 ? race.svcs[target].name : "group",
             *args ? ", " : "", args, rc, strerror(rc), took);
}

/* A blocking stop waits only for the thread it stopped (another thread's
 * restart ends the wait), but under TSan on two loaded cores a service
 * thread can go unscheduled for the whole 100 ms bound. ETIMEDOUT is
 * therefore accepted, but only once the full bound has passed (an early
 * one breaks the contract), with a WARNING for each (compared with the
 * log at the end); the ones during a restart are counted apart, since a
 * restart should have ended the wait instead. */
static void check_blocking_stop(struct worker *w, enum op op, int target,
                                const char *args, int rc, double bound,
                                double took, uint64_t starts_before)
{
    if (rc == 0 && took <= bound + SLACK_S)
        return;
    if (rc == ETIMEDOUT && took >= bound - 1e-6 && took <= bound + SLACK_S) {
        atomic_fetch_add(&race.stop_timeouts, 1);
        bool restarted = atomic_load(&race.svcs[target].starts) != starts_before;
        if (restarted)
            atomic_fetch_add(&race.restarted_timeouts, 1);
        if (op == OP_STOP_WAIT) {
            atomic_fetch_add(&race.full_bound_timeouts, 1);
            if (!restarted)
                atomic_fetch_add(&race.full_bound_unexplained, 1);
        }
        return;
    }
    unexpected(w, op, target, args, rc, took);
}

/* A bounded wait that may time out: 0 at any time, ETIMEDOUT only after
 * the bound. */
static void check_bounded_wait(struct worker *w, enum op op, int target,
                               const char *args, int rc, double bound,
                               double took)
{
    bool ok = rc == 0 || (rc == ETIMEDOUT && bound >= 0 && took >= bound - 1e-6);
    if (!ok || took > (bound >= 0 ? bound : 0) + SLACK_S)
        unexpected(w, op, target, args, rc, took);
}

static void check_stats(struct worker *w, int i)
{
    struct racer *r = &race.svcs[i];
    lsvc_stats st;
    uint64_t done_before = atomic_load(&r->completed);
    int rc = lsvc_get_stats(r->svc, &st);
    uint64_t done_after = atomic_load(&r->completed);
    if (rc != 0) {
        unexpected(w, OP_STATS, i, "", rc, 0);
        return;
    }
    /* Runs are counted after run_once returns, one at a time, so `loops`
     * may lag the callback's own count by the one run that just ended. */
    if (st.loops + 1 < done_before || st.loops > done_after)
        complain("thread %d (seed 0x%llx): %s: loops %llu, but %llu..%llu "
                 "runs had returned",
                 w->index, (unsigned long long)w->seed, r->name,
                 (unsigned long long)st.loops, (unsigned long long)done_before,
                 (unsigned long long)done_after);
    if (st.loops < w->last_loops[i])
        complain("thread %d (seed 0x%llx): %s: loops went back from %llu "
                 "to %llu",
                 w->index, (unsigned long long)w->seed, r->name,
                 (unsigned long long)w->last_loops[i],
                 (unsigned long long)st.loops);
    bool may_fail = i == FAILING_RACER;
    if ((st.errors != 0 && !may_fail) || st.errors > st.loops ||
        st.consecutive_failures > st.errors ||
        (!may_fail && st.consecutive_failures != 0) ||
        st.overruns > st.loops ||
        st.max_run_ns < st.last_run_ns ||
        st.max_lateness_ns < st.last_lateness_ns)
        complain("thread %d: %s: inconsistent snapshot: loops %llu errors "
                 "%llu overruns %llu run %lld/%lld ns lateness %lld/%lld ns",
                 w->index, r->name, (unsigned long long)st.loops,
                 (unsigned long long)st.errors,
                 (unsigned long long)st.overruns, (long long)st.last_run_ns,
                 (long long)st.max_run_ns, (long long)st.last_lateness_ns,
                 (long long)st.max_lateness_ns);
    w->last_loops[i] = st.loops;
    if (st.loops > 0)
        w->saw_run[i] = true;
}

static void check_scheduled(struct worker *w, int i)
{
    struct racer *r = &race.svcs[i];
    struct timespec ts;
    int rc = lsvc_scheduled_start(r->svc, &ts);
    int64_t now = now_ns();
    if (rc == EAGAIN && !w->saw_run[i])
        return;
    if (rc != 0) {
        unexpected(w, OP_SCHEDULED, i, "", rc, 0);
        return;
    }
    /* Runs are due one after the other on a grid that only moves
     * forward, and a run begins no sooner than it is due. */
    int64_t sched = timespec_ns(&ts);
    if (sched > now || sched < w->last_sched_ns[i])
        complain("thread %d (seed 0x%llx): %s: scheduled start %lld ns, "
                 "after %lld ns, now %lld ns",
                 w->index, (unsigned long long)w->seed, r->name,
                 (long long)sched, (long long)w->last_sched_ns[i],
                 (long long)now);
    w->last_sched_ns[i] = sched;
    w->saw_run[i] = true;
}

static enum op pick_op(struct worker *w)
{
    unsigned total = 0;
    for (int op = 0; op < OP_COUNT; op++)
        total += op_weights[op];
    unsigned roll = (unsigned)(next_random(&w->rng) % total);
    for (int op = 0; op < OP_COUNT; op++) {
        if (roll < op_weights[op])
            return (enum op)op;
        roll -= op_weights[op];
    }
    return OP_STATS;
}

/* 0 to 50 ms in whole ms, 0 one time in four: "only check". */
static double pick_bound(struct worker *w)
{
    uint64_t x = next_random(&w->rng);
    return x % 4 == 0 ? 0.0 : (double)((x >> 8) % 51) / 1000.0;
}

/* The seconds of a runtime-control call: for lsvc_next_run_in 0 to 50 ms,
 * or now and then INFINITY (a hibernation); for lsvc_set_loop_seconds one
 * of new_intervals. `brief`: nothing that sleeps longer than 5 ms. */
static double pick_control_seconds(struct worker *w, enum op op, bool brief)
{
    uint64_t x = next_random(&w->rng);
    if (op == OP_SET_LOOP_SECONDS)
        return new_intervals[x % (brief ? N_NEW_INTERVALS - 1
                                        : N_NEW_INTERVALS)];
    if (op == OP_NEXT_RUN_IN && brief)
        return (double)(x % 6) / 1000.0;
    if (op == OP_NEXT_RUN_IN && x % 8 == 0)
        return INFINITY;
    return pick_bound(w);
}

/* The runtime-control calls. With valid arguments the requests return 0
 * whatever the service's state; a pause waits at most the stop bound for
 * the run in progress; a sleep is ended early only by ECANCELED. A pause
 * is mostly followed by a resume, as a thread that pauses a chore to touch
 * what it touches does, and always for a precise service. */
static void do_control(struct worker *w, enum op op, int i)
{
    struct racer *r = &race.svcs[i];
    uint64_t x = next_random(&w->rng);
    bool brief = r->precise;
    double seconds = pick_control_seconds(w, op, brief);
    char args[32] = "";
    lsvc_run_info info;
    int rc = 0;
    int64_t t0 = now_ns();

    if (op == OP_RUN_WITHIN || op == OP_NEXT_RUN_IN ||
        op == OP_SET_LOOP_SECONDS || op == OP_SLEEP)
        snprintf(args, sizeof(args), "%g", seconds);
    else if (op == OP_WAKE_BITS)
        snprintf(args, sizeof(args), "0x%x", (unsigned)x);

    switch (op) {
    case OP_WAKE:
        rc = lsvc_wake(r->svc);
        break;
    case OP_WAKE_BITS:
        rc = lsvc_wake_bits(r->svc, (unsigned)x);
        break;
    case OP_RUN_WITHIN:
        rc = lsvc_run_within(r->svc, seconds);
        break;
    case OP_NEXT_RUN_IN:
        rc = lsvc_next_run_in(r->svc, seconds);
        break;
    case OP_SET_LOOP_SECONDS:
        rc = lsvc_set_loop_seconds(r->svc, seconds);
        if (rc == set_loop_seconds_rc(i, seconds))
            return;
        break;
    case OP_RESUME:
        rc = lsvc_resume(r->svc);
        break;
    case OP_SHOULD_STOP:
        (void)lsvc_should_stop(r->svc);
        break;
    case OP_PAUSE:
        rc = lsvc_pause(r->svc);
        check_bounded_wait(w, op, i, args, rc, STOP_BOUND_S,
                           seconds_since(t0));
        rc = brief || x % 4 != 0 ? lsvc_resume(r->svc) : 0;
        break;
    case OP_RUN_INFO:
        rc = lsvc_get_run_info(r->svc, &info);
        if (rc == 0)
            check_run_info(r, &info, "from another thread");
        else if (rc != EAGAIN)
            unexpected(w, op, i, args, rc, seconds_since(t0));
        return;
    case OP_SLEEP: {
        rc = lsvc_sleep(r->svc, seconds);
        double took = seconds_since(t0);
        if ((rc != 0 && rc != ECANCELED) || (rc == 0 && took < seconds) ||
            took > seconds + SLACK_S)
            unexpected(w, op, i, args, rc, took);
        return;
    }
    default:
        return;
    }
    if (rc != 0)
        unexpected(w, op, i, args, rc, seconds_since(t0));
}

/* Counts a group call's result: in *as_rc when it is rc_counted, in
 * *as_zero when 0. Whether it was either. */
static bool counted(int rc, int rc_counted, atomic_uint *as_rc,
                    atomic_uint *as_zero)
{
    if (rc != rc_counted && rc != 0)
        return false;
    atomic_fetch_add(rc == 0 ? as_zero : as_rc, 1);
    return true;
}

/* Health and histograms: any answer may be right; asking must be safe,
 * and the answer well formed. */
static void check_health(struct worker *w, int i)
{
    const char *why = "unset";
    const lsvc *which;
    lsvc_histogram h;

    if (lsvc_healthy(race.svcs[i].svc, &why) != (why == NULL))
        complain("thread %d: lsvc_healthy(%s) and its reason disagree",
                 w->index, race.svcs[i].name);
    int rc = lsvc_get_histogram(race.svcs[i].svc, LSVC_HISTOGRAM_DURATION, &h);
    if (rc != 0)
        unexpected(w, OP_HEALTH, i, "histogram", rc, 0);
    (void)lsvc_group_healthy(race.g, &which, &why);
}

static void check_metrics(struct worker *w)
{
    char text[64 * 1024];
    size_t needed;
    int rc = lsvc_group_metrics(race.g, text, sizeof text, &needed);

    if (rc != 0 || strncmp(text, "# HELP ", 7) != 0 ||
        strstr(text, race.svcs[0].name) == NULL)
        unexpected(w, OP_METRICS, -1, "", rc, 0);
}

/* One command on the group's control socket, answered in full or not at
 * all: the group may be stopped (no socket), or stop while it answers
 * (the connection closes). A reply that comes must be well formed. */
static void control_call(struct worker *w, char *args, size_t size)
{
    static const char *const verbs[] = {"status", "metrics", "wake",
                                        "pause", "resume", "interval"};
    unsigned verb = (unsigned)(next_random(&w->rng) % 6);
    const char *name = race.svcs[next_random(&w->rng) % GROUPED].name;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    char line[64], reply[256];
    size_t len = 0;

    snprintf(line, sizeof line, "%s%s%s%s\n", verbs[verb],
             verb < 2 ? "" : " ", verb < 2 ? "" : name,
             verb == 5 ? " 0.002" : "");
    snprintf(args, size, "%s", verbs[verb]);
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", race.socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        send(fd, line, strlen(line), MSG_NOSIGNAL) != (ssize_t)strlen(line)) {
        if (fd >= 0)
            close(fd);
        return;
    }
    /* The first bytes tell the kind of reply; the rest is read and
     * dropped, up to the close or the empty line that ends it. */
    int64_t deadline = now_ns() + (int64_t)(SLACK_S * 1e9);
    bool ended = false;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - now_ns();
        if (left <= 0 || poll(&p, 1, (int)(left / 1000000) + 1) <= 0)
            break;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        size_t take = (size_t)n < sizeof reply - 1 - len
                          ? (size_t)n : sizeof reply - 1 - len;
        memcpy(reply + len, buf, take);
        len += take;
        reply[len] = '\0';
        if (n >= 2 && buf[n - 1] == '\n' && buf[n - 2] == '\n') {
            ended = true;
            break;
        }
    }
    close(fd);
    atomic_fetch_add(&race.control_replies, ended);
    if (ended && strncmp(reply, "ok: ", 4) != 0 &&
        strncmp(reply, "error: ", 7) != 0 &&
        strncmp(reply, "SERVICE ", 8) != 0 &&
        strncmp(reply, "# HELP ", 7) != 0)
        complain("thread %d: the control socket answered \"%s\" with "
                 "\"%.60s\"", w->index, args, reply);
    if (!ended && len == 0 && now_ns() >= deadline)
        complain("thread %d: no reply to \"%s\" within %.0f s", w->index,
                 args, SLACK_S);
}

static void do_one(struct worker *w)
{
    enum op op = pick_op(w);
    int i = (int)(next_random(&w->rng) % SERVICES);
    struct racer *r = &race.svcs[i];
    char args[32] = "";
    int rc;

    atomic_store(&w->target, op >= OP_GROUP_STOP ? -1 : i);
    atomic_store(&w->op, op);
    int64_t t0 = now_ns();
    uint64_t starts = atomic_load(&r->starts);

    switch (op) {
    case OP_START: {
        /* Mostly until stopped; sometimes a few runs, after which the
         * thread ends by itself and is left for someone to reap. */
        uint64_t x = next_random(&w->rng) % 8;
        uint64_t loops = x < 5 ? 0 : x - 4;
        snprintf(args, sizeof(args), "%llu", (unsigned long long)loops);
        rc = lsvc_start(r->svc, loops);
        /* EAGAIN, ENOMEM and EPERM are documented too, but with a dozen
         * threads and no real-time priority they would mean a leak. */
        if (rc != 0 && rc != EBUSY)
            unexpected(w, op, i, args, rc, seconds_since(t0));
        break;
    }
    case OP_STOP_NOWAIT:
        rc = lsvc_stop(r->svc, false);
        if (rc != 0)
            unexpected(w, op, i, args, rc, seconds_since(t0));
        break;
    case OP_STOP_WAIT:
        rc = lsvc_stop(r->svc, true);
        check_blocking_stop(w, op, i, args, rc, STOP_BOUND_S,
                            seconds_since(t0), starts);
        break;
    case OP_STOP_TIMEOUT: {
        double bound = pick_bound(w);
        snprintf(args, sizeof(args), "%.3f", bound);
        rc = lsvc_stop_timeout(r->svc, bound);
        check_blocking_stop(w, op, i, args, rc, bound, seconds_since(t0),
                            starts);
        break;
    }
    case OP_JOIN: {
        /* Now and then with no bound: it returns once some other thread
         * stops the service. */
        double bound = next_random(&w->rng) % 8 == 0 ? -1.0 : pick_bound(w);
        snprintf(args, sizeof(args), "%.3f", bound);
        rc = lsvc_join(r->svc, bound);
        check_bounded_wait(w, op, i, args, rc, bound, seconds_since(t0));
        break;
    }
    case OP_STATS:
        check_stats(w, i);
        break;
    case OP_IS_RUNNING:
        /* Any answer may be right at the moment it is given; what is
         * checked is that asking is safe. */
        (void)lsvc_is_running(r->svc);
        break;
    case OP_SCHEDULED:
        check_scheduled(w, i);
        break;
    case OP_WAKE:
    case OP_WAKE_BITS:
    case OP_RUN_WITHIN:
    case OP_NEXT_RUN_IN:
    case OP_SET_LOOP_SECONDS:
    case OP_PAUSE:
    case OP_RESUME:
    case OP_SHOULD_STOP:
    case OP_RUN_INFO:
    case OP_SLEEP:
        do_control(w, op, i);
        break;
    case OP_GROUP_STOP:
        rc = lsvc_group_stop(race.g);
        if (rc != 0)
            unexpected(w, op, -1, args, rc, seconds_since(t0));
        break;
    case OP_GROUP_WAIT:
        /* EINVAL: not started (or its start is still in progress); EBUSY:
         * another thread waits. ETIMEDOUT: a member outlived its bound
         * after a stop, as an unscheduled thread under TSan can. Members
         * cannot be restarted by other threads while the group is started
         * (lsvc_start is EBUSY then), so the group's bound holds. */
        rc = lsvc_group_wait(race.g);
        if (!counted(rc, ETIMEDOUT, &race.group_timeouts, &race.group_waits) &&
            rc != EINVAL && rc != EBUSY)
            unexpected(w, op, -1, args, rc, seconds_since(t0));
        break;
    case OP_GROUP_START:
        /* EBUSY: already started, or a member was running (then the start
         * is undone, with an ERROR naming the member). */
        rc = lsvc_group_start(race.g);
        if (!counted(rc, EBUSY, &race.group_start_busy, &race.group_starts))
            unexpected(w, op, -1, args, rc, seconds_since(t0));
        break;
    case OP_HEALTH:
        check_health(w, i);
        break;
    case OP_METRICS:
        check_metrics(w);
        break;
    case OP_CONTROL:
        control_call(w, args, sizeof args);
        break;
    default:
        break;
    }
    atomic_store(&w->op, OP_IDLE);
    atomic_fetch_add(&w->calls, 1);
    atomic_fetch_add(&race.op_calls[op], 1);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    while (now_ns() < race.deadline_ns)
        do_one(w);
    sem_post(&race.exited);
    return NULL;
}

/* --- The watchdog -------------------------------------------------------- */

static void print_bad_results(void);

static void *watchdog_main(void *arg)
{
    (void)arg;
    if (sem_wait_for(&race.finished, race.watchdog_s))
        return NULL;
    print_bad_results();
    fprintf(stderr, "race: not finished after %.0f s; base seed 0x%llx\n",
            race.watchdog_s, (unsigned long long)race.base_seed);
    for (int k = 0; k < WORKERS; k++) {
        struct worker *w = &race.workers[k];
        int op = atomic_load(&w->op);
        int target = atomic_load(&w->target);
        fprintf(stderr, "  thread %d (seed 0x%llx), %llu calls, %s%s%s%s\n",
                k, (unsigned long long)w->seed,
                (unsigned long long)atomic_load(&w->calls),
                op == OP_IDLE ? "between calls" : "in ",
                op == OP_IDLE ? "" : op_names[op], op == OP_IDLE ? "" : " on ",
                op == OP_IDLE ? ""
                : target >= 0 ? race.svcs[target].name
                              : "the group");
    }
    ck_abort_msg("race: not finished after %.0f s, a hang (base seed "
                 "0x%llx); stderr shows what each thread was doing",
                 race.watchdog_s, (unsigned long long)race.base_seed);
    return NULL;
}

/* --- The test ------------------------------------------------------------- */

/* To stderr: a Check message holds only the first. */
static void print_bad_results(void)
{
    pthread_mutex_lock(&race.lock);
    unsigned n = race.bad_count;
    if (n != 0) {
        fprintf(stderr, "race: %u result(s) broke the contract (base seed "
                        "0x%llx):\n",
                n, (unsigned long long)race.base_seed);
        for (unsigned k = 0; k < n && k < sizeof(race.bad) / sizeof(race.bad[0]);
             k++)
            fprintf(stderr, "  %s\n", race.bad[k]);
    }
    pthread_mutex_unlock(&race.lock);
}

static void report_bad_results(void)
{
    print_bad_results();
    pthread_mutex_lock(&race.lock);
    unsigned n = race.bad_count;
    pthread_mutex_unlock(&race.lock);
    ck_assert_msg(n == 0, "%u result(s) broke the contract, the first: %s", n,
                  race.bad[0]);
}

/* Ends every worker: one blocked in an unbounded lsvc_join or in
 * lsvc_group_wait returns only once its services end, and the others may
 * start services again until they see the deadline, so the stops are
 * repeated until the last worker is out. */
static void wait_for_workers(void)
{
    int out = 0;
    while (out < WORKERS) {
        double left = (double)(race.deadline_ns - now_ns()) / 1e9;
        if (left <= 0) {
            lsvc_group_stop(race.g);
            for (int i = 0; i < SERVICES; i++)
                lsvc_stop(race.svcs[i].svc, false);
        }
        if (sem_wait_for(&race.exited, left > 0 ? left : 0.01))
            out++;
    }
    for (int k = 0; k < WORKERS; k++)
        ck_assert_int_eq(pthread_join(race.workers[k].thread, NULL), 0);
}

static void tear_down(void)
{
    for (int i = 0; i < SERVICES; i++) {
        struct racer *r = &race.svcs[i];
        int rc = lsvc_stop_timeout(r->svc, 30);
        ck_assert_msg(rc == 0, "final stop of %s returned %d", r->name, rc);
        ck_assert(!lsvc_is_running(r->svc));
    }
    /* Started (0) or already waited for by a worker (EINVAL). */
    int rc = lsvc_group_wait(race.g);
    ck_assert_msg(rc == 0 || rc == EINVAL, "final group wait returned %d", rc);
    ck_assert_int_eq(lsvc_group_destroy(race.g), 0);
    /* The group removed its socket as it ended. */
    ck_assert_int_eq(rmdir(race.dir), 0);

    for (int i = 0; i < SERVICES; i++) {
        struct racer *r = &race.svcs[i];
        lsvc_stats st;
        ck_assert_int_eq(lsvc_get_stats(r->svc, &st), 0);
        ck_assert_msg(st.loops == atomic_load(&r->completed),
                      "%s: loops %llu, but %llu runs returned", r->name,
                      (unsigned long long)st.loops,
                      (unsigned long long)atomic_load(&r->completed));
        ck_assert(!st.running);
        ck_assert_int_eq(atomic_load(&r->alive), 0);
        ck_assert_int_eq(atomic_load(&r->in_run), 0);
        ck_assert_int_eq(lsvc_destroy(r->svc), 0);
    }
}

START_TEST(test_random_concurrent_calls_keep_every_contract)
{
    double seconds = stress_seconds();
    ck_assert_msg(seconds > 0, "LSVC_STRESS_SECONDS=%s is not a duration",
                  getenv("LSVC_STRESS_SECONDS"));
    race.base_seed = env_seed();
    race.watchdog_s = seconds + 60;
    ck_assert_int_eq(lsvc_block_signals(), 0);
    lsvc_set_log_level(LSVC_LOG_INFO);
    lsvc_set_logger(race_sink, NULL);
    sem_init(&race.exited, 0, 0);
    sem_init(&race.finished, 0, 0);

    pthread_t watchdog;
    ck_assert_int_eq(pthread_create(&watchdog, NULL, watchdog_main, NULL), 0);
    struct threads before;
    threads_baseline(&before);

    ck_assert_int_eq(lsvc_group_create(&race.g), 0);
    snprintf(race.dir, sizeof race.dir, "/tmp/lsvc-race-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(race.dir));
    snprintf(race.socket_path, sizeof race.socket_path, "%s/ctl.sock",
             race.dir);
    ck_assert_int_eq(lsvc_group_set_control_socket(race.g, race.socket_path),
                     0);
    for (int i = 0; i < SERVICES; i++) {
        struct racer *r = &race.svcs[i];
        snprintf(r->name, sizeof(r->name), "%s", racer_classes[i].name);
        r->precise = racer_options[i].precise;
        ck_assert_int_eq(
            lsvc_create(&r->svc, &racer_classes[i], r, &racer_options[i]), 0);
        if (i < GROUPED)
            ck_assert_int_eq(lsvc_group_add(race.g, r->svc), 0);
    }
    ck_assert_int_eq(lsvc_group_start(race.g), 0);
    for (int i = GROUPED; i < SERVICES; i++)
        ck_assert_int_eq(lsvc_start(race.svcs[i].svc, 0), 0);

    int64_t t0 = now_ns();
    race.deadline_ns = t0 + (int64_t)(seconds * 1e9);
    for (int k = 0; k < WORKERS; k++) {
        struct worker *w = &race.workers[k];
        w->index = k;
        w->seed = w->rng = seed_for(race.base_seed, k);
        atomic_store(&w->op, OP_IDLE);
        ck_assert_int_eq(pthread_create(&w->thread, NULL, worker_main, w), 0);
    }
    wait_for_workers();
    double ran = seconds_since(t0);

    report_bad_results();
    tear_down();
    report_bad_results();
    ck_assert_msg(wait_threads_back_to(&before, 10), "%d thread(s) left",
                  threads_added(&before));

    /* Each ETIMEDOUT of a blocking stop logs one WARNING, and a group
     * wait's names at least one service; nothing else is an error. */
    unsigned stop_timeouts = atomic_load(&race.stop_timeouts);
    ck_assert_uint_eq(atomic_load(&race.log_stop_warnings), stop_timeouts);
    ck_assert_uint_ge(atomic_load(&race.log_group_warnings),
                      atomic_load(&race.group_timeouts));
    ck_assert_uint_le(atomic_load(&race.log_start_errors),
                      atomic_load(&race.group_start_busy));
    ck_assert_uint_eq(atomic_load(&race.log_other_errors), 0);
    /* Its failures were logged (rate-limited, so at least one). */
    if (atomic_load(&race.svcs[FAILING_RACER].completed) >= 2)
        ck_assert_uint_ge(atomic_load(&race.log_run_failures), 1);
    ck_assert_uint_eq(atomic_load(&race.log_malformed), 0);

    uint64_t calls = 0, loops = 0;
    for (int k = 0; k < WORKERS; k++)
        calls += atomic_load(&race.workers[k].calls);
    for (int i = 0; i < SERVICES; i++)
        loops += atomic_load(&race.svcs[i].completed);
    printf("race: %llu calls by %d threads in %.2f s (base seed 0x%llx); "
           "%llu runs; %u blocking stops timed out (%u during a restart), "
           "%u of them lsvc_stop(true) (%u with no restart seen); "
           "group started %u more times, waited for %u times, %u timed out\n",
           (unsigned long long)calls, WORKERS, ran,
           (unsigned long long)race.base_seed, (unsigned long long)loops,
           stop_timeouts, atomic_load(&race.restarted_timeouts),
           atomic_load(&race.full_bound_timeouts),
           atomic_load(&race.full_bound_unexplained),
           atomic_load(&race.group_starts), atomic_load(&race.group_waits),
           atomic_load(&race.group_timeouts));
    ck_assert_msg(atomic_load(&race.control_replies) > 0,
                  "the control socket answered no client in full");
    /* Every kind of call took part. */
    for (int op = 0; op < OP_COUNT; op++)
        ck_assert_msg(atomic_load(&race.op_calls[op]) > 0, "%s was never called",
                      op_names[op]);

    sem_post(&race.finished);
    ck_assert_int_eq(pthread_join(watchdog, NULL), 0);
    lsvc_set_logger(NULL, NULL);
    sem_destroy(&race.exited);
    sem_destroy(&race.finished);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("race");
    TCase *tc = add_tests(s, "stress", (const TTest *[]){
        test_random_concurrent_calls_keep_every_contract, NULL});
    double seconds = stress_seconds();
    tcase_set_timeout(tc, (seconds > 0 ? seconds : 0) + 90);
    return run_suite(s);
}
