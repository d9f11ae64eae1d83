/*
 * Groups: services that start and stop together, and the one signal
 * thread per group that turns SIGINT/SIGTERM into a group stop. A group
 * start also reads its services' settings from the environment and tells
 * systemd how the group is doing (settings.c, notify.c, watchdog.c).
 *
 * The signal thread waits in sigwait(), so no handler is installed and no
 * async-signal-safety rules apply to what it does. It only requests stops;
 * the bounded waiting is lsvc_group_wait's, so the signal thread stays free
 * to take a second signal while the group is stopping.
 *
 * Lock order: a group's lock, then a service's. No service code takes a
 * group's lock.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct lsvc_group {
    /* Protects every field below. The service list, the signal set and
     * the stop timeout change only while the group is idle, so the
     * group's own threads read them without the lock while it is not. */
    struct lsvc_lock lock;
    struct lsvc_member *members;
    size_t count, cap;
    /* The members by name, so that adding thousands is not quadratic:
     * open addressing over 2 * cap slots, each a member's index + 1, or
     * 0 for none. */
    size_t *by_name;
    sigset_t signals;         /* the stop signals */
    struct wake_on_signal *wakes; /* signals that wake a service */
    size_t nwakes;
    sigset_t waited;          /* signals and the wakes' signals, at start */
    int quit_signal;          /* a member of `waited` that ends the signal
                               * thread; 0 = no signal thread */
    int64_t stop_timeout_ns;  /* 0 = each service's lsvc_stop bound */
    bool use_environment;     /* read LOOPSVC_<NAME>_* at start */
    bool use_notify;          /* speak NOTIFY_SOCKET's protocol */
    struct lsvc_health_limits health; /* its members' */
    char *control_path;       /* the control socket's; NULL = none */

    enum { GROUP_IDLE, GROUP_STARTING, GROUP_STARTED } state;
    bool stopping, waiting;
    /* Stages are ints; these are wider, so that no stage is mistaken for
     * "none" (NO_STAGE) or "no more" (AFTER_ALL). */
    int64_t stage_asked;      /* the stages up to this one are asked to
                               * stop; NO_STAGE: none */
    int64_t stage_at_ns;      /* when the last was asked */
    int64_t stage_reached;    /* lsvc_group_wait waits for this stage: the
                               * ones before it have ended */
    bool quit;                /* tells the signal thread to end */
    bool has_signal_thread;
    pthread_t signal_thread;
    /* lsvc__thread_token() of the signal thread, written by that thread
     * as it begins; compared with the caller's to refuse a wait from it. */
    _Atomic uint64_t signal_token;
    uint64_t starter;         /* token of the thread whose mask start changed */
    sigset_t unblock_at_end;  /* what start blocked there that was not */
    size_t enabled;           /* services the environment left enabled */
    /* Written by the starter while STARTING, and read by others only once
     * the group is STARTED: no STOPPING=1 goes out before READY=1. */
    struct lsvc_notifier notifier;
    bool stopping_sent;
    bool has_watchdog;
    struct lsvc_watchdog watchdog;
    bool has_control;
    struct lsvc_ctlsock control;
};

/* A signal that wakes a service instead of stopping the group. */
struct wake_on_signal {
    int signo;
    lsvc *svc;
    unsigned bits;
};

#ifdef SIGRTMAX
#define LSVC_SIG_LAST SIGRTMAX
#else
#define LSVC_SIG_LAST 64
#endif

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    case SIGQUIT: return "SIGQUIT";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "a signal";
    }
}

int lsvc_group_create(lsvc_group **out)
{
    lsvc_group *g;
    int rc;

    if (out == NULL)
        return EINVAL;
    g = calloc(1, sizeof *g);
    if (g == NULL)
        return ENOMEM;
    rc = lsvc__lock_init(&g->lock);
    if (rc != 0) {
        free(g);
        return rc;
    }
    sigemptyset(&g->signals);
    sigaddset(&g->signals, SIGINT);
    sigaddset(&g->signals, SIGTERM);
    g->use_environment = true;
    g->use_notify = false;
    g->health = lsvc__health_defaults;
    g->notifier.fd = -1;
    *out = g;
    return 0;
}

/* Room for twice as many services. Group lock held. */
/* FNV-1a. */
static size_t name_hash(const char *name)
{
    size_t h = (size_t)2166136261u;

    for (; *name != '\0'; name++)
        h = (h ^ (unsigned char)*name) * 16777619u;
    return h;
}

/* The slot of `name` in by_name: its member's, or the empty one where it
 * would go. Group lock held. */
static size_t *name_slot(const lsvc_group *g, const char *name)
{
    size_t mask = 2 * g->cap - 1;
    size_t i = name_hash(name) & mask;

    while (g->by_name[i] != 0 &&
           strcmp(lsvc_name(g->members[g->by_name[i] - 1].svc), name) != 0)
        i = (i + 1) & mask;
    return &g->by_name[i];
}

static int grow(lsvc_group *g)
{
    size_t cap = g->cap ? 2 * g->cap : 8;

    lsvc__assert_held(&g->lock);
    size_t *by_name = calloc(2 * cap, sizeof *by_name);
    if (by_name == NULL)
        return ENOMEM;
    struct lsvc_member *members = realloc(g->members, cap * sizeof *members);
    if (members == NULL) {
        free(by_name);
        return ENOMEM;
    }
    free(g->by_name);
    g->members = members;
    g->by_name = by_name;
    g->cap = cap;
    for (size_t i = 0; i < g->count; i++)
        *name_slot(g, lsvc_name(members[i].svc)) = i + 1;
    return 0;
}

int lsvc_group_add(lsvc_group *g, lsvc *svc)
{
    int rc = 0;

    if (g == NULL || svc == NULL)
        return EINVAL;
    lsvc__lock(&g->lock);
    if (g->state != GROUP_IDLE)
        rc = EBUSY;
    /* The name is looked up before any growth: a refused add changes
     * nothing and needs no memory. */
    size_t *slot = rc == 0 && g->cap > 0 ? name_slot(g, lsvc_name(svc))
                                          : NULL;
    if (slot != NULL && *slot != 0)
        rc = g->members[*slot - 1].svc == svc ? EBUSY : EEXIST;
    if (rc == 0 && g->count == g->cap && (rc = grow(g)) == 0)
        slot = name_slot(g, lsvc_name(svc));
    if (rc == 0)
        rc = lsvc__group_join(svc, g);
    if (rc == 0) {
        g->members[g->count] = (struct lsvc_member){ .svc = svc };
        *slot = ++g->count;
        lsvc__set_health_limits(svc, &g->health);
    }
    lsvc__unlock(&g->lock);
    return rc;
}

/* Locks an idle group; EBUSY, and unlocked, when it is not idle. */
static int lock_idle(lsvc_group *g)
{
    lsvc__lock(&g->lock);
    if (g->state == GROUP_IDLE)
        return 0;
    lsvc__unlock(&g->lock);
    return EBUSY;
}

/* Whether a group may wait for sig at all. */
static bool waitable(int sig)
{
    return sig != SIGKILL && sig != SIGSTOP && !lsvc__is_fault_signal(sig) &&
           lsvc__is_usable_signal(sig);
}

/* The entry of a signal that wakes a service; NULL when none. Group lock
 * held. */
static struct wake_on_signal *wake_entry(const lsvc_group *g, int sig)
{
    for (size_t i = 0; i < g->nwakes; i++)
        if (g->wakes[i].signo == sig)
            return &g->wakes[i];
    return NULL;
}

int lsvc_group_set_signals(lsvc_group *g, const sigset_t *set)
{
    sigset_t none;
    int rc;

    if (g == NULL)
        return EINVAL;
    if (set == NULL) {
        sigemptyset(&none);
        set = &none;
    }
    for (int sig = 1; sig <= LSVC_SIG_LAST; sig++)
        if (sigismember(set, sig) == 1 && !waitable(sig))
            return EINVAL;
    if ((rc = lock_idle(g)) != 0)
        return rc;
    for (size_t i = 0; i < g->nwakes; i++)
        if (sigismember(set, g->wakes[i].signo) == 1)
            rc = EINVAL;
    if (rc == 0)
        g->signals = *set;
    lsvc__unlock(&g->lock);
    return rc;
}

/* The index of svc in the group, or -1. Group lock held. */
static long member_index(const lsvc_group *g, const lsvc *svc)
{
    for (size_t i = 0; i < g->count; i++)
        if (g->members[i].svc == svc)
            return (long)i;
    return -1;
}

int lsvc_group_wake_on_signal(lsvc_group *g, int signo, lsvc *svc,
                              unsigned bits)
{
    int rc;

    if (g == NULL || svc == NULL || signo < 1 || signo > LSVC_SIG_LAST ||
        !waitable(signo))
        return EINVAL;
    if ((rc = lock_idle(g)) != 0)
        return rc;
    struct wake_on_signal *w = wake_entry(g, signo);
    if (member_index(g, svc) < 0 || sigismember(&g->signals, signo) == 1) {
        rc = EINVAL;
    } else if (w == NULL) {
        w = realloc(g->wakes, (g->nwakes + 1) * sizeof *w);
        if (w == NULL) {
            rc = ENOMEM;
        } else {
            g->wakes = w;
            w = &g->wakes[g->nwakes++];
        }
    }
    if (rc == 0)
        *w = (struct wake_on_signal){ signo, svc, bits };
    lsvc__unlock(&g->lock);
    return rc;
}

int lsvc_group_set_stage(lsvc_group *g, lsvc *svc, int stage)
{
    int rc;

    if (g == NULL || svc == NULL)
        return EINVAL;
    if ((rc = lock_idle(g)) != 0)
        return rc;
    long i = member_index(g, svc);
    if (i < 0)
        rc = EINVAL;
    else
        g->members[i].stage = stage;
    lsvc__unlock(&g->lock);
    return rc;
}

int lsvc_group_set_stop_timeout(lsvc_group *g, double seconds)
{
    int64_t ns;
    int rc;

    if (g == NULL || lsvc__seconds_to_ns(seconds, true, &ns) != 0)
        return EINVAL;
    if ((rc = lock_idle(g)) != 0)
        return rc;
    g->stop_timeout_ns = ns;
    lsvc__unlock(&g->lock);
    return 0;
}

int lsvc_group_set_environment(lsvc_group *g, bool enable)
{
    int rc;

    if (g == NULL)
        return EINVAL;
    if ((rc = lock_idle(g)) != 0)
        return rc;
    g->use_environment = enable;
    lsvc__unlock(&g->lock);
    return 0;
}

int lsvc_group_set_notify(lsvc_group *g, bool enable)
{
    int rc;

    if (g == NULL)
        return EINVAL;
    if ((rc = lock_idle(g)) != 0)
        return rc;
    g->use_notify = enable;
    lsvc__unlock(&g->lock);
    return 0;
}

/* Gives the members of a group, locked, its health limits, and unlocks
 * it. */
static int push_health(lsvc_group *g)
{
    lsvc__assert_held(&g->lock);
    for (size_t i = 0; i < g->count; i++)
        lsvc__set_health_limits(g->members[i].svc, &g->health);
    lsvc__unlock(&g->lock);
    return 0;
}

static bool times_ok(double intervals)
{
    return !isnan(intervals) && intervals >= 1 && intervals <= 1e6;
}

int lsvc_group_set_stuck_after(lsvc_group *g, double intervals)
{
    int rc;

    if (g == NULL || !times_ok(intervals))
        return EINVAL;
    if ((rc = lock_idle(g)) != 0)
        return rc;
    g->health.stuck_after = intervals;
    return push_health(g);
}

int lsvc_group_set_health(lsvc_group *g, unsigned failures,
                          double stale_intervals)
{
    int rc;

    if (g == NULL || failures < 1 || failures > 1000000 ||
        !times_ok(stale_intervals))
        return EINVAL;
    if ((rc = lock_idle(g)) != 0)
        return rc;
    g->health.failures = failures;
    g->health.stale_after = stale_intervals;
    return push_health(g);
}

int lsvc_group_set_orphaned_after(lsvc_group *g, double intervals)
{
    int rc;

    if (g == NULL || !times_ok(intervals))
        return EINVAL;
    if ((rc = lock_idle(g)) != 0)
        return rc;
    g->health.orphaned_after = intervals;
    return push_health(g);
}

int lsvc_group_set_control_socket(lsvc_group *g, const char *path)
{
    char *copy = NULL;
    int rc;

    if (g == NULL || (path != NULL && *path == '\0'))
        return EINVAL;
    if (path != NULL &&
        strlen(path) >= sizeof ((struct sockaddr_un *)0)->sun_path)
        return ENAMETOOLONG;
    if (path != NULL && (copy = strdup(path)) == NULL)
        return ENOMEM;
    if ((rc = lock_idle(g)) != 0) {
        free(copy);
        return rc;
    }
    free(g->control_path);
    g->control_path = copy;
    lsvc__unlock(&g->lock);
    return 0;
}

int lsvc__group_members(lsvc_group *g, struct lsvc_member **out, size_t *count)
{
    lsvc__lock(&g->lock);
    size_t n = g->count;
    struct lsvc_member *copy = malloc((n ? n : 1) * sizeof *copy);
    /* Field by field: the watchdog thread writes `unhealthy` unlocked. */
    for (size_t i = 0; copy != NULL && i < n; i++)
        copy[i] = (struct lsvc_member){.svc = g->members[i].svc,
                                       .stage = g->members[i].stage,
                                       .skip = g->members[i].skip};
    lsvc__unlock(&g->lock);
    if (copy == NULL)
        return ENOMEM;
    *out = copy;
    *count = n;
    return 0;
}

bool lsvc_group_healthy(lsvc_group *g, const lsvc **which, const char **why)
{
    const lsvc *bad = NULL;
    const char *reason = "invalid";

    if (g != NULL) {
        reason = NULL;
        lsvc__lock(&g->lock);
        bool all_run = g->state == GROUP_STARTED && !g->stopping;
        for (size_t i = 0; reason == NULL && i < g->count; i++) {
            const struct lsvc_member *m = &g->members[i];

            if (!lsvc_healthy(m->svc, &reason))
                bad = m->svc;
            else if (all_run && !m->skip && !lsvc_is_running(m->svc))
                bad = m->svc, reason = "stopped";
        }
        lsvc__unlock(&g->lock);
    }
    if (which != NULL)
        *which = bad;
    if (why != NULL)
        *why = reason;
    return reason == NULL;
}

/* While the group is started its services are its own: lsvc_start on one
 * is EBUSY, so no other caller can start one the group then stops, nor
 * restart one the group is waiting for. Takes every service, or none when
 * one is running. Group lock held. */
static bool take_services(lsvc_group *g)
{
    lsvc__assert_held(&g->lock);
    for (size_t i = 0; i < g->count; i++) {
        if (lsvc__group_claim(g->members[i].svc))
            continue;
        while (i-- > 0)
            lsvc__group_release(g->members[i].svc);
        return false;
    }
    return true;
}

static int64_t stop_bound_ns(const lsvc_group *g, lsvc *svc)
{
    return g->stop_timeout_ns ? g->stop_timeout_ns : lsvc__stop_bound_ns(svc);
}

/* Group lock held. Non-blocking, so it may be sent under the lock. */
static void send_stopping(lsvc_group *g)
{
    char state[64];

    lsvc__assert_held(&g->lock);
    if (g->stopping_sent)
        return;
    g->stopping_sent = true;
    snprintf(state, sizeof state, "STOPPING=1\nSTATUS=Stopping %zu service%s.",
             g->enabled, g->enabled == 1 ? "" : "s");
    lsvc__notify(&g->notifier, state);
}

#define NO_STAGE INT64_MIN
#define AFTER_ALL INT64_MAX

/* The lowest stop stage above `above` among the members; AFTER_ALL when
 * there is none. */
static int64_t stage_after(const lsvc_group *g, int64_t above)
{
    int64_t next = AFTER_ALL;

    for (size_t i = 0; i < g->count; i++)
        if (g->members[i].stage > above && g->members[i].stage < next)
            next = g->members[i].stage;
    return next;
}

/* Asks every member of the stages up to `stage` to stop, each within its
 * bound from now. Group lock held: a caller from any thread must not see
 * the group end and be freed halfway through; requests take only each
 * service's lock, briefly. */
static void ask_stages(lsvc_group *g, int64_t stage)
{
    int64_t at = lsvc__now_ns();

    lsvc__assert_held(&g->lock);
    g->stage_asked = stage;
    g->stage_at_ns = at;
    for (size_t i = 0; i < g->count; i++) {
        lsvc *svc = g->members[i].svc;

        if (g->members[i].stage <= stage)
            lsvc__request_stop(svc, lsvc__add_ns(at, stop_bound_ns(g, svc)));
    }
}

int lsvc_group_stop(lsvc_group *g)
{
    if (g == NULL)
        return EINVAL;
    lsvc__lock(&g->lock);
    if (g->state == GROUP_IDLE || g->stopping) {
        lsvc__unlock(&g->lock);
        return 0;
    }
    g->stopping = true;
    /* The first stage, or the one a wait has reached, all at once, so
     * that the slowest of a stage bounds the stage; later stages are
     * asked by lsvc_group_wait as each one ends. */
    int64_t first = stage_after(g, NO_STAGE);
    ask_stages(g, g->stage_reached > first ? g->stage_reached : first);
    /* A stop while STARTING is told by lsvc_group_start, after READY=1. */
    if (g->state == GROUP_STARTED)
        send_stopping(g);
    lsvc__unlock(&g->lock);
    return 0;
}

static void log_still_running(lsvc_group *g, int sig)
{
    char names[512] = "";
    size_t len = 0;

    for (size_t i = 0; i < g->count && len < sizeof names; i++) {
        if (!lsvc_is_running(g->members[i].svc))
            continue;
        int n = snprintf(names + len, sizeof names - len, "%s%s",
                         len ? ", " : "", g->members[i].svc->name);
        len += n > 0 ? (size_t)n : 0;
    }
    if (len == 0)
        lsvc__log(LSVC_LOG_WARNING, "loopsvc",
                  "received %s while stopping; no service is still running.",
                  signal_name(sig));
    else
        lsvc__log(LSVC_LOG_WARNING, "loopsvc",
                  "received %s while stopping; still running: %s.",
                  signal_name(sig), names);
}

/* Whether the signal just taken was one sent to the process rather than
 * finish()'s wake-up. finish() sends the wake-up before `quit` can be seen,
 * and the kernel hands out a thread's own signals before the process's, so
 * the wake-up still pending means the one taken was not it. (siginfo
 * cannot tell: glibc's pthread_kill reports SI_USER, as kill does.) */
static bool taken_instead_of_wake_up(const lsvc_group *g, int sig)
{
    sigset_t pending;

    if (sig != g->quit_signal)
        return true;
    return sigpending(&pending) == 0 && sigismember(&pending, sig) == 1;
}

static void *signal_main(void *arg)
{
    lsvc_group *g = arg;

    lsvc__thread_name("lsvc-signals");
    atomic_store(&g->signal_token, lsvc__thread_token());
    /* Cancelled only in sigwait, and only when finish() cannot send the
     * wake-up: never while it holds a lock or runs the log sink. */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    for (;;) {
        int sig, rc;

        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
        rc = sigwait(&g->waited, &sig);
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
        if (rc != 0)
            continue;
        lsvc__lock(&g->lock);
        bool quit = g->quit;
        bool first = !g->stopping;
        size_t enabled = g->enabled;
        struct wake_on_signal *w = wake_entry(g, sig);
        struct wake_on_signal wake = { 0, NULL, 0 };
        if (w != NULL)
            wake = *w;
        lsvc__unlock(&g->lock);
        if (quit) {
            /* A stop signal meant for the process that came just before
             * the wake-up is handed back, pending, to whoever takes it
             * next, instead of being lost with this thread. Standard
             * signals do not queue, so handing back one still pending
             * adds none. A wake signal then has nothing left to wake. */
            if (w == NULL && taken_instead_of_wake_up(g, sig))
                kill(getpid(), sig);
            return NULL;
        }
        if (w != NULL) {
            lsvc__log(LSVC_LOG_INFO, wake.svc->logger,
                      "received %s: waking %s.", signal_name(sig),
                      wake.svc->name);
            lsvc_wake_bits(wake.svc, wake.bits);
            continue;
        }
        if (first) {
            lsvc__log(LSVC_LOG_INFO, "loopsvc",
                      "received %s: stopping %zu service%s.",
                      signal_name(sig), enabled, enabled == 1 ? "" : "s");
            lsvc_group_stop(g);
        } else {
            log_still_running(g, sig);
        }
    }
}

/* Ends a start or a run of the group: the services are the group's no
 * longer, and have their code's intervals again (one left running keeps
 * the environment's until its thread ends). */
static void release(lsvc_group *g)
{
    lsvc__notifier_log_errors(&g->notifier);
    lsvc__lock(&g->lock);
    lsvc__notifier_close(&g->notifier);
    g->has_signal_thread = g->has_watchdog = g->has_control = false;
    for (size_t i = 0; i < g->count; i++)
        lsvc__group_release(g->members[i].svc);
    g->state = GROUP_IDLE;
    g->stopping = g->waiting = false;
    lsvc__unlock(&g->lock);
}

/* The wake-up could not be sent: the thread is ended in its sigwait
 * instead, where it holds nothing. */
static void cancel_signal_thread(lsvc_group *g, int err)
{
    char why[128];

    lsvc__strerror(err, why, sizeof why);
    lsvc__log(LSVC_LOG_WARNING, "loopsvc",
              "Could not wake the group's signal thread with %s: %s. "
              "Cancelling it instead.", signal_name(g->quit_signal), why);
    pthread_cancel(g->signal_thread);
}

/* Waits for every service (each within its stop bound once the group is
 * stopping), ends the group's threads and gives the starter its mask
 * back. */
static int finish(lsvc_group *g)
{
    int rc = 0;

    for (int64_t stage = stage_after(g, NO_STAGE); stage != AFTER_ALL;
         stage = stage_after(g, stage)) {
        lsvc__lock(&g->lock);
        g->stage_reached = stage;
        if (g->stopping && stage > g->stage_asked)
            ask_stages(g, stage);
        lsvc__unlock(&g->lock);
        for (size_t i = 0; i < g->count; i++) {
            lsvc *svc = g->members[i].svc;

            if (g->members[i].stage != stage ||
                lsvc__wait_and_reap(svc, 0, LSVC_FOREVER, true) != ETIMEDOUT)
                continue;
            rc = ETIMEDOUT;
            lsvc__log(LSVC_LOG_WARNING, svc->logger,
                      "%s did not stop within %g seconds of the group's "
                      "stop. It is left running; join it later with "
                      "lsvc_join().",
                      svc->name, (double)stop_bound_ns(g, svc) / 1e9);
        }
    }
    if (g->has_watchdog)
        lsvc__watchdog_stop(&g->watchdog);
    if (g->has_control)
        lsvc__ctlsock_stop(&g->control);
    if (g->has_signal_thread) {
        /* Directed at the thread, so it is taken before any pending
         * process-wide signal; sent under the lock, so that it is pending
         * before the thread can see `quit`. */
        lsvc__lock(&g->lock);
        g->quit = true;
        int err = pthread_kill(g->signal_thread, g->quit_signal);
        lsvc__unlock(&g->lock);
        if (err != 0)
            cancel_signal_thread(g, err);
        pthread_join(g->signal_thread, NULL);
        if (g->starter == lsvc__thread_token())
            pthread_sigmask(SIG_UNBLOCK, &g->unblock_at_end, NULL);
    }
    release(g);
    return rc;
}

/* A group signal raise()d in this thread while it was blocked is pending
 * here, where the signal thread cannot take it: it is taken and sent to
 * the process instead, so that it stops the group as one sent with kill()
 * would. */
static void pass_pending_to_process(const sigset_t *signals)
{
#if defined(_POSIX_REALTIME_SIGNALS) && _POSIX_REALTIME_SIGNALS > 0
    static const struct timespec now;
    sigset_t pending;

    if (sigpending(&pending) != 0)
        return;
    for (int sig = 1; sig <= LSVC_SIG_LAST; sig++) {
        sigset_t one;

        if (sigismember(signals, sig) != 1 || sigismember(&pending, sig) != 1)
            continue;
        sigemptyset(&one);
        sigaddset(&one, sig);
        if (sigtimedwait(&one, NULL, &now) == sig)
            kill(getpid(), sig);
    }
#else
    (void)signals;
#endif
}

/* The signals the signal thread waits for: the stop signals and those
 * that wake a service; and the one that ends the thread. Returns whether
 * there are any, that is whether the group needs a signal thread. */
static bool waited_signals(lsvc_group *g)
{
    g->waited = g->signals;
    for (size_t i = 0; i < g->nwakes; i++)
        sigaddset(&g->waited, g->wakes[i].signo);
    g->quit_signal = 0;
    for (int sig = LSVC_SIG_LAST; sig >= 1; sig--)
        if (sigismember(&g->waited, sig) == 1)
            g->quit_signal = sig;
    return g->quit_signal != 0;
}

static int start_signal_thread(lsvc_group *g)
{
    static const lsvc_options defaults;
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t old;
    int rc;

    rc = pthread_sigmask(SIG_BLOCK, &g->waited, &old);
    if (rc != 0)
        return rc;
    g->starter = lsvc__thread_token();
    pass_pending_to_process(&g->waited);
    sigemptyset(&g->unblock_at_end);
    for (int sig = 1; sig <= LSVC_SIG_LAST; sig++)
        if (sigismember(&g->waited, sig) == 1 && sigismember(&old, sig) == 0)
            sigaddset(&g->unblock_at_end, sig);

    rc = lsvc__thread_attr(&attr, &defaults);
    if (rc == 0) {
        rc = lsvc__spawn(&thread, &attr, signal_main, g);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return rc;
    }
    /* Under the lock: lsvc_group_wait in another thread reads these. */
    lsvc__lock(&g->lock);
    g->signal_thread = thread;
    g->has_signal_thread = true;
    lsvc__unlock(&g->lock);
    return 0;
}

/* This start's settings of each service: its interval, and whether it
 * runs at all. */
static void apply_settings(lsvc_group *g)
{
    for (size_t i = 0; i < g->count; i++) {
        lsvc *svc = g->members[i].svc;
        struct lsvc_settings set = {true, svc->code_interval_ns};

        if (g->use_environment)
            lsvc__settings_read(svc, &set);
        lsvc__override_interval(svc, set.interval_ns);
        lsvc__lock(&g->lock);
        g->members[i].skip = !set.enabled;
        g->enabled += set.enabled;
        lsvc__unlock(&g->lock);
    }
    if (g->enabled == 0)
        lsvc__log(LSVC_LOG_WARNING, "loopsvc",
                  "Every service of the group is disabled by the environment: "
                  "the group has nothing to run.");
}

static int start_control(lsvc_group *g)
{
    int rc = lsvc__ctlsock_start(&g->control, g->control_path, g,
                                 g->members, g->count);

    lsvc__lock(&g->lock);
    g->has_control = rc == 0;
    lsvc__unlock(&g->lock);
    return rc;
}

static int start_watchdog(lsvc_group *g)
{
    int rc;

    g->watchdog.members = g->members;
    g->watchdog.count = g->count;
    g->watchdog.notifier = &g->notifier;
    rc = lsvc__watchdog_start(&g->watchdog);
    lsvc__lock(&g->lock);
    g->has_watchdog = rc == 0;
    lsvc__unlock(&g->lock);
    return rc;
}

/* Undoes a start that got as far as its threads: stops what started. */
static int fail_start(lsvc_group *g, const char *what, int rc)
{
    char why[128];

    if (rc == ECANCELED)
        snprintf(why, sizeof why, "its on_start failed");
    else
        lsvc__strerror(rc, why, sizeof why);
    lsvc__log(LSVC_LOG_ERROR, "loopsvc",
              "Could not start %s: %s; stopping the group.", what, why);
    lsvc_group_stop(g);
    finish(g);
    return rc;
}

int lsvc_group_start(lsvc_group *g)
{
    int rc = 0;

    if (g == NULL)
        return EINVAL;
    lsvc__lock(&g->lock);
    if (g->count == 0)
        rc = EINVAL;
    else if (g->state != GROUP_IDLE || !take_services(g))
        rc = EBUSY;
    if (rc == 0) {
        /* STARTING lets a signal or lsvc_group_stop in, but not a wait. */
        g->state = GROUP_STARTING;
        g->stopping = g->waiting = g->quit = g->stopping_sent = false;
        g->stage_asked = g->stage_reached = NO_STAGE;
        g->enabled = 0;
    }
    lsvc__unlock(&g->lock);
    if (rc != 0)
        return rc;

    apply_settings(g);
    if (g->use_notify)
        lsvc__notifier_open(&g->notifier);
    if (waited_signals(g) && (rc = start_signal_thread(g)) != 0) {
        release(g);
        return rc;
    }
    if (g->notifier.watchdog_ns > 0 && (rc = start_watchdog(g)) != 0)
        return fail_start(g, "the systemd watchdog thread", rc);
    if (g->control_path != NULL && (rc = start_control(g)) != 0)
        return fail_start(g, "the control socket", rc);
    for (size_t i = 0; i < g->count; i++) {
        lsvc *svc = g->members[i].svc;

        if (g->members[i].skip)
            continue;
        rc = lsvc__start(svc, 0, true);
        if (rc != 0)
            return fail_start(g, svc->name, rc);
        /* A stop that came while this one was not yet running missed it. */
        lsvc__lock(&g->lock);
        if (g->stopping && g->members[i].stage <= g->stage_asked)
            lsvc__request_stop(svc, lsvc__add_ns(g->stage_at_ns,
                                                 stop_bound_ns(g, svc)));
        lsvc__unlock(&g->lock);
    }
    char state[64];

    snprintf(state, sizeof state, "READY=1\nSTATUS=Running %zu service%s.",
             g->enabled, g->enabled == 1 ? "" : "s");
    lsvc__lock(&g->lock);
    g->state = GROUP_STARTED;
    lsvc__notify(&g->notifier, state);
    if (g->stopping)
        send_stopping(g);
    lsvc__unlock(&g->lock);
    return 0;
}

int lsvc_group_wait(lsvc_group *g)
{
    int rc = 0;

    if (g == NULL)
        return EINVAL;
    lsvc__lock(&g->lock);
    /* Waiting for itself is wrong in any state, so it is checked first:
     * from a service, or from a log sink on the signal or watchdog
     * thread. */
    uint64_t self = lsvc__thread_token();
    if (self == atomic_load(&g->signal_token) ||
        self == atomic_load(&g->watchdog.token))
        rc = EDEADLK;
    for (size_t i = 0; rc == 0 && i < g->count; i++)
        if (lsvc__is_own_thread(g->members[i].svc))
            rc = EDEADLK;
    if (rc == 0 && g->state != GROUP_STARTED)
        rc = EINVAL;
    else if (rc == 0 && g->waiting)
        rc = EBUSY;
    if (rc == 0)
        g->waiting = true;
    lsvc__unlock(&g->lock);
    return rc != 0 ? rc : finish(g);
}

int lsvc_group_run(lsvc_group *g)
{
    int rc = lsvc_group_start(g);

    return rc != 0 ? rc : lsvc_group_wait(g);
}

int lsvc_group_destroy(lsvc_group *g)
{
    if (g == NULL)
        return EINVAL;
    lsvc__lock(&g->lock);
    /* A member left running after a timed-out wait may still call
     * lsvc_group_stop on this group from its run_once. */
    bool busy = g->state != GROUP_IDLE;
    for (size_t i = 0; !busy && i < g->count; i++)
        busy = lsvc_is_running(g->members[i].svc);
    if (busy) {
        lsvc__unlock(&g->lock);
        return EBUSY;
    }
    for (size_t i = 0; i < g->count; i++)
        lsvc__group_leave(g->members[i].svc);
    lsvc__unlock(&g->lock);
    pthread_mutex_destroy(&g->lock.mutex);
    free(g->members);
    free(g->by_name);
    free(g->wakes);
    free(g->control_path);
    free(g);
    return 0;
}

int lsvc_block_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return pthread_sigmask(SIG_BLOCK, &set, NULL);
}
