/*
 * A service's life: create, start, stop, join and destroy.
 *
 * POSIX has no timed pthread_join, so a bounded wait is built from the
 * service's condition variable: the thread's last act under the lock is to
 * mark itself FINISHED and broadcast, after which it touches the service no
 * more. A waiter that sees FINISHED claims the join (state back to NONE)
 * under the lock and joins outside it; the claim makes sure exactly one
 * caller joins, however many wait. Where the C library has a timed join,
 * one waiter with a deadline claims the thread while it still runs
 * (`joining`) and waits in that join, which saves a wake-up per stop; the
 * others wait on the condition variable for it.
 */
#include "config.h"
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ThreadSanitizer does not know pthread_clockjoin_np and would report each
 * thread joined by it as leaked, so its builds take the portable path. */
#if defined(__SANITIZE_THREAD__)
#define LSVC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LSVC_TSAN 1
#endif
#endif
#if HAVE_PTHREAD_CLOCKJOIN_NP && !defined(LSVC_TSAN)
#define LSVC_TIMED_JOIN 1
#else
#define LSVC_TIMED_JOIN 0
#endif

static int resolve_interval(const lsvc_class *cls, const lsvc_options *opts,
                            int64_t *out)
{
    int64_t cls_ns = (int64_t)(LSVC_DEFAULT_LOOP_SECONDS * 1e9);
    int rc;

    /* The class's value is checked even when the options override it: a
     * class is shared, and a bad one should be found at its first use.
     * Under 1 ns is an error, not the same as 0 ("unset"). */
    if (cls->loop_seconds != 0 &&
        (rc = lsvc__interval_to_ns(cls->loop_seconds, &cls_ns)) != 0)
        return rc;
    if (opts->loop_seconds != 0)
        return lsvc__interval_to_ns(opts->loop_seconds, out);
    *out = cls_ns;
    return 0;
}

static int init_sync(lsvc *svc)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);

    if (rc != 0)
        return rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&svc->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        return rc;
    rc = lsvc__lock_init(&svc->lock);
    if (rc != 0) {
        pthread_cond_destroy(&svc->cond);
        return rc;
    }
    if ((rc = lsvc__wakeup_init(&svc->wake)) != 0) {
        pthread_mutex_destroy(&svc->lock.mutex);
        pthread_cond_destroy(&svc->cond);
    }
    return rc;
}

/* A name goes into log lines and thread names: a control character in it
 * could end a log line early or forge one. */
static bool name_ok(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return false;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return false;
    return true;
}

/* The schedule's options, in ns, checked against the interval. */
struct timing {
    int64_t jitter, offset, backoff_max, wake_gap;
};

static int resolve_timing(const lsvc_options *opts, int64_t interval_ns,
                          struct timing *t)
{
    if (lsvc__seconds_to_ns(opts->jitter_seconds, true, &t->jitter) != 0 ||
        lsvc__seconds_to_ns(opts->offset_seconds, true, &t->offset) != 0 ||
        lsvc__seconds_to_ns(opts->error_backoff_max_seconds, true,
                            &t->backoff_max) != 0 ||
        lsvc__seconds_to_ns(opts->min_wake_gap_seconds, true,
                            &t->wake_gap) != 0)
        return EINVAL;
    if (t->jitter > interval_ns)
        return EINVAL;
    if (t->backoff_max != 0 && t->backoff_max < interval_ns)
        return EINVAL;
    if (opts->align_to_clock ? interval_ns == LSVC_FOREVER ||
                                   t->offset >= interval_ns ||
                                   opts->fixed_delay
                             : t->offset != 0)
        return EINVAL;
    return 0;
}

/* Whether the n bytes at p are all zero: the reserved space of a struct
 * the caller filled. */
static bool zero(const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

bool lsvc__interval_fits(const lsvc *svc, int64_t interval_ns)
{
    struct timing t;

    return resolve_timing(&svc->opts, interval_ns, &t) == 0;
}

int lsvc_create(lsvc **out, const lsvc_class *cls, void *arg,
                const lsvc_options *opts)
{
    static const lsvc_options defaults;
    int64_t interval_ns, delay_ns;
    struct timing timing;
    lsvc *svc;
    int rc;

    if (out == NULL || cls == NULL || cls->run_once == NULL ||
        !name_ok(cls->name))
        return EINVAL;
    if (opts == NULL)
        opts = &defaults;
    if ((rc = resolve_interval(cls, opts, &interval_ns)) != 0 ||
        (rc = lsvc__seconds_to_ns(opts->initial_delay, true, &delay_ns)) != 0 ||
        (rc = lsvc__check_thread_options(opts)) != 0 ||
        (rc = resolve_timing(opts, interval_ns, &timing)) != 0)
        return rc;
    if (opts->missed != LSVC_MISSED_DELAY && opts->missed != LSVC_MISSED_SKIP &&
        opts->missed != LSVC_MISSED_BURST)
        return EINVAL;
    if (opts->lease != NULL && opts->lease->acquire == NULL)
        return EINVAL;
    if (!zero(cls->reserved, sizeof cls->reserved) ||
        !zero(opts->reserved, sizeof opts->reserved) ||
        (opts->lease != NULL &&
         !zero(opts->lease->reserved, sizeof opts->lease->reserved)))
        return EINVAL;

    size_t name_len = strlen(cls->name);
    /* Its first field on a cache line (internal.h), in a block of its
     * own: aligned_alloc splits the block it takes, and with the pieces
     * it left between services the heap kept 13 MiB more resident once
     * ten thousand services at a time had been made and destroyed
     * (measured). */
    void *block = calloc(1, sizeof *svc + _Alignof(lsvc) - 1);
    if (block == NULL)
        return ENOMEM;
    svc = (lsvc *)((char *)block +
                   (-(uintptr_t)block & (_Alignof(lsvc) - 1)));
    svc->block = block;
    svc->name = strdup(cls->name);
    svc->logger = malloc(sizeof "loopsvc." + name_len);
    if (svc->name == NULL || svc->logger == NULL) {
        rc = ENOMEM;
        goto fail;
    }
    if ((rc = lsvc__settings_names(svc)) != 0)
        goto fail;
    memcpy(svc->logger, "loopsvc.", sizeof "loopsvc." - 1);
    for (size_t i = 0; i <= name_len; i++)
        svc->logger[sizeof "loopsvc." - 1 + i] =
            (char)tolower((unsigned char)cls->name[i]);
    if ((rc = init_sync(svc)) != 0)
        goto fail;

    svc->cls = cls;
    svc->arg = arg;
    atomic_init(&svc->code_interval_ns, interval_ns);
    atomic_init(&svc->interval_ns, interval_ns);
    svc->initial_delay_ns = delay_ns;
    svc->jitter_ns = timing.jitter;
    svc->offset_ns = timing.offset;
    svc->backoff_max_ns = timing.backoff_max;
    svc->wake_gap_ns = timing.wake_gap;
    svc->opts = *opts;
    svc->missed = opts->missed;
    svc->leased = opts->lease != NULL;
    svc->precise = opts->precise;
    svc->fixed_delay = opts->fixed_delay;
    svc->align_to_clock = opts->align_to_clock;
    svc->quiet_overruns = opts->quiet_overruns;
    svc->histograms = !opts->no_histograms;
    svc->health = lsvc__health_defaults;
    svc->state = LSVC_THREAD_NONE;
    *out = svc;
    return 0;

fail:
    free(svc->env_enabled);
    free(svc->logger);
    free(svc->name);
    free(svc->block);
    return rc;
}

/* --- What a group does to its services ---------------------------------- */

int lsvc__group_join(lsvc *svc, lsvc_group *g)
{
    lsvc__lock(&svc->lock);
    bool taken = svc->group != NULL;
    if (!taken)
        svc->group = g;
    lsvc__unlock(&svc->lock);
    return taken ? EBUSY : 0;
}

void lsvc__group_leave(lsvc *svc)
{
    lsvc__lock(&svc->lock);
    svc->group = NULL;
    svc->health = lsvc__health_defaults;
    lsvc__unlock(&svc->lock);
}

void lsvc__set_health_limits(lsvc *svc, const struct lsvc_health_limits *l)
{
    lsvc__lock(&svc->lock);
    svc->health = *l;
    lsvc__unlock(&svc->lock);
}

bool lsvc__group_claim(lsvc *svc)
{
    lsvc__lock(&svc->lock);
    bool running = svc->state == LSVC_THREAD_RUNNING;
    svc->group_owned = !running;
    lsvc__unlock(&svc->lock);
    return !running;
}

void lsvc__override_interval(lsvc *svc, int64_t interval_ns)
{
    atomic_store(&svc->interval_ns, interval_ns);
}

/* The interval override ends with the group's claim; a thread still
 * running (one a group stop gave up on) keeps it until it ends, and
 * lsvc__service_main ends it then. */
void lsvc__group_release(lsvc *svc)
{
    lsvc__lock(&svc->lock);
    svc->group_owned = false;
    if (svc->state != LSVC_THREAD_RUNNING)
        atomic_store(&svc->interval_ns, svc->code_interval_ns);
    lsvc__unlock(&svc->lock);
}

/* Called by the service thread as it ends, with the lock held. */
void lsvc__thread_finished(lsvc *svc)
{
    lsvc__assert_held(&svc->lock);
    svc->state = LSVC_THREAD_FINISHED;
    if (!svc->group_owned)
        atomic_store(&svc->interval_ns, svc->code_interval_ns);
    pthread_cond_broadcast(&svc->cond);
}

bool lsvc__is_own_thread(lsvc *svc)
{
    lsvc__lock(&svc->lock);
    bool own = svc->state == LSVC_THREAD_RUNNING &&
               pthread_equal(svc->thread, pthread_self());
    lsvc__unlock(&svc->lock);
    return own;
}

/* Waits while another caller reaps a thread that has already ended, which
 * takes as long as the thread's exit; nobody else may join or replace the
 * thread meanwhile. Called with the lock held. */
static void await_reaper(lsvc *svc)
{
    lsvc__assert_held(&svc->lock);
    while (svc->joining && svc->state == LSVC_THREAD_FINISHED)
        lsvc__cond_wait(&svc->cond, &svc->lock);
}

/* Called with the lock held and state FINISHED: claims the join. */
static pthread_t claim_join(lsvc *svc)
{
    lsvc__assert_held(&svc->lock);
    assert(svc->state == LSVC_THREAD_FINISHED);
    svc->state = LSVC_THREAD_NONE;
    return svc->thread;
}

/* Waits until the thread of `generation` has told *result what on_start
 * returned: ECANCELED, with the thread reaped, when it failed. The result
 * is this start's own, so it holds also when other callers have reaped
 * the thread and started the service again meanwhile. No bound: the
 * header says that a hanging on_start holds up the start. */
static int await_on_start(lsvc *svc, uint64_t generation,
                          struct lsvc_start_result *result)
{
    lsvc__lock(&svc->lock);
    while (!result->done)
        lsvc__cond_wait(&svc->cond, &svc->lock);
    int rc = result->rc;
    lsvc__unlock(&svc->lock);
    if (rc == 0)
        return 0;
    lsvc__wait_and_reap(svc, generation, LSVC_FOREVER, false);
    return ECANCELED;
}

int lsvc_start(lsvc *svc, uint64_t loops)
{
    if (svc == NULL)
        return EINVAL;
    return lsvc__start(svc, loops, false);
}

int lsvc__start(lsvc *svc, uint64_t loops, bool by_group)
{
    struct lsvc_start_result result = { false, 0 };
    pthread_attr_t attr;
    pthread_t reap;
    bool must_reap = false;
    int rc;

    rc = lsvc__thread_attr(&attr, &svc->opts);
    if (rc != 0)
        return rc;

    lsvc__lock(&svc->lock);
    await_reaper(svc);
    if (svc->state == LSVC_THREAD_RUNNING || (svc->group_owned && !by_group)) {
        lsvc__unlock(&svc->lock);
        pthread_attr_destroy(&attr);
        return EBUSY;
    }
    if (svc->state == LSVC_THREAD_FINISHED) {
        reap = claim_join(svc);
        must_reap = true;
    }
    svc->stop_requested = false;
    svc->stop_deadline_ns = LSVC_FOREVER;
    svc->loops_wanted = loops;
    lsvc__control_reset(svc);
    /* Without on_start nothing can fail once the thread exists, and
     * nothing is worth a wait: thousands of services start without a
     * hand-off each. */
    bool await = svc->cls->on_start != NULL;
    svc->start_result = await ? &result : NULL;
    svc->started_never = atomic_load(&svc->interval_ns) == LSVC_FOREVER;
    rc = lsvc__spawn(&svc->thread, &attr, lsvc__service_main, svc);
    if (rc == 0) {
        svc->state = LSVC_THREAD_RUNNING;
        svc->generation++;
    } else {
        svc->start_result = NULL;
    }
    uint64_t generation = svc->generation;
    lsvc__unlock(&svc->lock);

    pthread_attr_destroy(&attr);
    if (must_reap)
        pthread_join(reap, NULL);
    if (rc != 0 || !await)
        return rc;
    return await_on_start(svc, generation, &result);
}

/* Returns the generation of the service's current or last thread; 0 when
 * it never had one. */
uint64_t lsvc__request_stop(lsvc *svc, int64_t deadline_ns)
{
    uint64_t generation;

    lsvc__lock(&svc->lock);
    if (svc->state == LSVC_THREAD_RUNNING) {
        svc->stop_requested = true;
        if (deadline_ns < svc->stop_deadline_ns)
            svc->stop_deadline_ns = deadline_ns;
        pthread_cond_broadcast(&svc->cond);
        /* Under the lock: once a stopper has unlocked, the service may
         * end, be joined and be destroyed by another thread. */
        lsvc__wakeup_post(&svc->wake);
    }
    generation = svc->generation;
    lsvc__unlock(&svc->lock);
    return generation;
}

/* Waits for the thread of `generation` (0: the current one). When another
 * caller restarts the service meanwhile, that start has reaped the thread
 * waited for, and the wait is over. */
int lsvc__wait_and_reap(lsvc *svc, uint64_t generation, int64_t deadline_ns,
                        bool follow_stop)
{
    pthread_t thread;

    lsvc__lock(&svc->lock);
    if (generation == 0)
        generation = svc->generation;
    bool timed_join = LSVC_TIMED_JOIN;

    while (svc->generation == generation &&
           (svc->state == LSVC_THREAD_RUNNING ||
            (svc->state == LSVC_THREAD_FINISHED && svc->joining))) {
        int64_t until = deadline_ns;

        if (follow_stop && svc->stop_requested && svc->stop_deadline_ns < until)
            until = svc->stop_deadline_ns;
        if (timed_join && !svc->joining && until != LSVC_FOREVER) {
            svc->joining = true;
            thread = svc->thread;
            lsvc__unlock(&svc->lock);
            int rc = lsvc__timed_join(thread, until);
            lsvc__lock(&svc->lock);
            svc->joining = false;
            pthread_cond_broadcast(&svc->cond); /* other waiters: it is over */
            if (rc == 0)
                svc->state = LSVC_THREAD_NONE;
            if (rc == 0 || rc == ETIMEDOUT)
                break; /* joined, or the deadline passed */
            timed_join = false; /* unexpected: the condvar serves */
            continue;
        }
        if (until == LSVC_FOREVER) {
            lsvc__cond_wait(&svc->cond, &svc->lock);
            continue;
        }
        if (lsvc__now_ns() >= until)
            break;
        struct timespec ts = lsvc__timespec(until);
        lsvc__cond_timedwait(&svc->cond, &svc->lock, &ts);
    }
    /* A thread that ended while another caller reaps it counts as ended. */
    if (svc->generation != generation || svc->state != LSVC_THREAD_FINISHED ||
        svc->joining) {
        bool running = svc->state == LSVC_THREAD_RUNNING &&
                       svc->generation == generation;
        lsvc__unlock(&svc->lock);
        return running ? ETIMEDOUT : 0;
    }
    thread = claim_join(svc);
    lsvc__unlock(&svc->lock);
    pthread_join(thread, NULL);
    return 0;
}

/* The largest of: the interval (unless never); 100 ms, plus a precise
 * step in precise mode, the longest a sleeping service may take to see
 * the stop; and
 * twice the longest run so far, which a stop may have to wait out. */
int64_t lsvc__stop_bound_ns(lsvc *svc)
{
    int64_t bound = LSVC_STOP_MIN_WAIT_NS;
    int64_t interval = atomic_load(&svc->interval_ns);

    if (svc->precise)
        bound += LSVC_PRECISE_STEP_NS;
    if (interval > bound && interval != LSVC_FOREVER)
        bound = interval;
    lsvc__lock(&svc->lock);
    int64_t runs = lsvc__add_ns(svc->counts.max_run_ns, svc->counts.max_run_ns);
    lsvc__unlock(&svc->lock);
    return runs > bound ? runs : bound;
}

static int stop_and_wait(lsvc *svc, int64_t bound_ns)
{
    bool own = lsvc__is_own_thread(svc);
    uint64_t generation = lsvc__request_stop(svc, LSVC_FOREVER);
    int rc;

    if (generation == 0)
        return 0; /* never started: no thread to wait for */
    if (own) {
        lsvc__log(LSVC_LOG_WARNING, svc->logger,
                  "A blocking stop was called on %s from inside the service "
                  "itself, which cannot wait for its own thread. The stop was "
                  "requested; use lsvc_stop(svc, false) from inside a service.",
                  svc->name);
        return EDEADLK;
    }
    rc = lsvc__wait_and_reap(svc, generation,
                             lsvc__add_ns(lsvc__now_ns(), bound_ns), false);
    if (rc == ETIMEDOUT)
        lsvc__log(LSVC_LOG_WARNING, svc->logger,
                  "A blocking stop was called on %s but more than %g seconds "
                  "have passed and it is still running. This usually means "
                  "something is wrong. If the stop was called from inside the "
                  "service, use lsvc_stop(svc, false) instead.",
                  svc->name, (double)bound_ns / 1e9);
    return rc;
}

int lsvc_stop(lsvc *svc, bool block)
{
    if (svc == NULL)
        return EINVAL;
    if (!block) {
        lsvc__request_stop(svc, LSVC_FOREVER);
        return 0;
    }
    return stop_and_wait(svc, lsvc__stop_bound_ns(svc));
}

int lsvc_stop_timeout(lsvc *svc, double seconds)
{
    int64_t bound_ns = LSVC_FOREVER;

    if (svc == NULL || isnan(seconds))
        return EINVAL;
    if (seconds >= 0 && lsvc__seconds_to_ns(seconds, true, &bound_ns) != 0)
        return EINVAL;
    return stop_and_wait(svc, bound_ns);
}

int lsvc_join(lsvc *svc, double seconds)
{
    int64_t deadline_ns = LSVC_FOREVER;
    int64_t bound_ns;

    if (svc == NULL || isnan(seconds))
        return EINVAL;
    if (seconds >= 0) {
        if (lsvc__seconds_to_ns(seconds, true, &bound_ns) != 0)
            return EINVAL;
        deadline_ns = lsvc__add_ns(lsvc__now_ns(), bound_ns);
    }
    if (lsvc__is_own_thread(svc))
        return EDEADLK;
    return lsvc__wait_and_reap(svc, 0, deadline_ns, false);
}

int lsvc_destroy(lsvc *svc)
{
    pthread_t thread;
    bool must_reap = false;

    if (svc == NULL)
        return EINVAL;
    lsvc__lock(&svc->lock);
    await_reaper(svc);
    if (svc->state == LSVC_THREAD_RUNNING || svc->group != NULL) {
        lsvc__unlock(&svc->lock);
        return EBUSY;
    }
    if (svc->state == LSVC_THREAD_FINISHED) {
        thread = claim_join(svc);
        must_reap = true;
    }
    lsvc__unlock(&svc->lock);
    if (must_reap)
        pthread_join(thread, NULL);

    lsvc__wakeup_destroy(&svc->wake);
    pthread_cond_destroy(&svc->cond);
    pthread_mutex_destroy(&svc->lock.mutex);
    free(svc->env_enabled);
    free(svc->logger);
    free(svc->name);
    free(svc->block);
    return 0;
}

const char *lsvc_name(const lsvc *svc)
{
    return svc != NULL ? svc->name : NULL;
}

double lsvc_loop_seconds(const lsvc *svc)
{
    if (svc == NULL)
        return 0.0;
    int64_t ns = atomic_load(&svc->interval_ns);
    return ns == LSVC_FOREVER ? LSVC_NEVER : (double)ns / 1e9;
}

bool lsvc_is_running(const lsvc *svc)
{
    lsvc *s = (lsvc *)svc; /* the lock is not part of the value */
    bool running;

    if (s == NULL)
        return false;
    lsvc__lock(&s->lock);
    running = s->state == LSVC_THREAD_RUNNING;
    lsvc__unlock(&s->lock);
    return running;
}
