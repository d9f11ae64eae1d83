/*
 * The wrappers behind faults.h. The linker sends each call to X from the
 * objects of the fault suite to __wrap_X, and __real_X is X itself.
 */
#define _GNU_SOURCE /* cpu_set_t, for pthread_attr_setaffinity_np */
#include "faults.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* X itself, as the linker names it, and what it calls in its place. */
#define DECLARE_WRAPPED(RET, NAME, PARAMS)                                  \
    RET __real_##NAME PARAMS;                                               \
    RET __wrap_##NAME PARAMS

DECLARE_WRAPPED(void *, realloc, (void *ptr, size_t size));
DECLARE_WRAPPED(void, free, (void *ptr));
DECLARE_WRAPPED(int, pthread_sigmask,
                (int how, const sigset_t *set, sigset_t *old));
DECLARE_WRAPPED(int, sem_init, (sem_t *sem, int pshared, unsigned value));

/* --- The armed window -------------------------------------------------- */

static atomic_bool armed;
static atomic_ulong target;     /* which call fails; 0: none */
static _Atomic(const char *) every; /* a function whose calls all fail */
static atomic_int chosen_error; /* 0: the function's usual error */
static atomic_ulong calls;
static atomic_bool fired;
static atomic_int fired_error;
static _Atomic(const char *) trace[FAULTS_TRACE_MAX];
static _Thread_local int exempt;

/* Blocks allocated in the window and not yet freed. A spinlock rather
 * than a mutex, so that the bookkeeping calls nothing that is wrapped or
 * that a sanitizer would see as a second lock order. */
#define LIVE_MAX 512
static atomic_flag live_lock = ATOMIC_FLAG_INIT;
static void *live[LIVE_MAX];
static atomic_size_t live_count; /* includes blocks that found no slot */

static void live_lock_take(void)
{
    while (atomic_flag_test_and_set_explicit(&live_lock, memory_order_acquire)) {
    }
}

static void live_lock_give(void)
{
    atomic_flag_clear_explicit(&live_lock, memory_order_release);
}

/* Records a block; one that finds no free slot still counts as live, so
 * an overflow shows up as a leak rather than going unseen. */
static void track(void *p)
{
    live_lock_take();
    for (size_t i = 0; i < LIVE_MAX; i++) {
        if (live[i] == NULL) {
            live[i] = p;
            break;
        }
    }
    atomic_fetch_add(&live_count, 1);
    live_lock_give();
}

static void track_new(void *p)
{
    if (p != NULL && exempt == 0 && atomic_load(&armed))
        track(p);
}

/* Forgets a block; true when it was tracked. */
static bool untrack(void *p)
{
    bool found = false;

    if (p == NULL || atomic_load(&live_count) == 0)
        return false;
    live_lock_take();
    for (size_t i = 0; i < LIVE_MAX && !found; i++) {
        if (live[i] == p) {
            live[i] = NULL;
            found = true;
        }
    }
    if (found)
        atomic_fetch_sub(&live_count, 1);
    live_lock_give();
    return found;
}

static void arm(unsigned long k, int error)
{
    atomic_store(&armed, false);
    atomic_store(&target, k);
    atomic_store(&every, NULL);
    atomic_store(&chosen_error, error);
    atomic_store(&calls, 0);
    atomic_store(&fired, false);
    atomic_store(&fired_error, 0);
    for (size_t i = 0; i < FAULTS_TRACE_MAX; i++)
        atomic_store(&trace[i], NULL);
    live_lock_take();
    memset(live, 0, sizeof live);
    atomic_store(&live_count, 0);
    live_lock_give();
    atomic_store(&armed, true);
}

void faults_arm(unsigned long k)
{
    arm(k, 0);
}

void faults_arm_with(unsigned long k, int error)
{
    arm(k, error);
}

void faults_fail_every(const char *name)
{
    arm(0, 0);
    atomic_store(&every, name);
}

void faults_disarm(void)
{
    atomic_store(&armed, false);
}

unsigned long faults_count(void)
{
    return atomic_load(&calls);
}

const char *faults_call(unsigned long i)
{
    if (i == 0 || i > FAULTS_TRACE_MAX || i > atomic_load(&calls))
        return NULL;
    return atomic_load(&trace[i - 1]);
}

bool faults_fired(void)
{
    return atomic_load(&fired);
}

int faults_error(void)
{
    return atomic_load(&fired_error);
}

size_t faults_live(void)
{
    return atomic_load(&live_count);
}

void faults_exempt_begin(void)
{
    exempt++;
}

void faults_exempt_end(void)
{
    exempt--;
}

/* Counts one wrapped call; true when it is the one that must fail, with
 * the error it gives in *error. */
static bool take_fault(const char *name, int usual, int *error)
{
    if (exempt > 0 || !atomic_load(&armed))
        return false;
    unsigned long n = atomic_fetch_add(&calls, 1) + 1;
    if (n <= FAULTS_TRACE_MAX)
        atomic_store(&trace[n - 1], name);
    const char *all = atomic_load(&every);
    if (n != atomic_load(&target) && (all == NULL || strcmp(all, name) != 0))
        return false;
    int chosen = atomic_load(&chosen_error);
    *error = chosen != 0 ? chosen : usual;
    atomic_store(&fired_error, *error);
    atomic_store(&fired, true);
    return true;
}

/* --- Allocation ---------------------------------------------------------- */

/* An allocator that fails as malloc does: NULL, with errno. The blocks it
 * gives in the window are tracked. */
#define WRAP_ALLOCATOR(RET, NAME, PARAMS, ARGS)                             \
    DECLARE_WRAPPED(RET, NAME, PARAMS);                                     \
    RET __wrap_##NAME PARAMS                                                \
    {                                                                       \
        int error;                                                          \
        if (take_fault(#NAME, ENOMEM, &error)) {                            \
            errno = error;                                                  \
            return NULL;                                                    \
        }                                                                   \
        RET p = __real_##NAME ARGS;                                         \
        track_new(p);                                                       \
        return p;                                                           \
    }

WRAP_ALLOCATOR(void *, malloc, (size_t size), (size))
WRAP_ALLOCATOR(void *, calloc, (size_t n, size_t size), (n, size))
WRAP_ALLOCATOR(char *, strdup, (const char *s), (s))

/* A failed realloc leaves the old block as it was. A successful one may
 * move it: a block tracked before stays tracked under its new address. */
void *__wrap_realloc(void *ptr, size_t size)
{
    int error;
    if (take_fault("realloc", ENOMEM, &error)) {
        errno = error;
        return NULL;
    }
    void *p = __real_realloc(ptr, size);
    if (p == NULL)
        return NULL;
    if (untrack(ptr))
        track(p);
    else
        track_new(p);
    return p;
}

/* Never fails: wrapped only to see which blocks of the window are freed. */
void __wrap_free(void *ptr)
{
    untrack(ptr);
    __real_free(ptr);
}

/* --- Threads and synchronisation ------------------------------------------- */

/* A call that returns an error number, `USUAL` when it fails here. */
#define WRAP_RETURNING_ERROR(NAME, USUAL, PARAMS, ARGS)                     \
    DECLARE_WRAPPED(int, NAME, PARAMS);                                     \
    int __wrap_##NAME PARAMS                                                \
    {                                                                       \
        int error;                                                          \
        if (take_fault(#NAME, USUAL, &error))                               \
            return error;                                                   \
        return __real_##NAME ARGS;                                          \
    }

WRAP_RETURNING_ERROR(pthread_create, EAGAIN,
                     (pthread_t *thread, const pthread_attr_t *attr,
                      void *(*start)(void *), void *arg),
                     (thread, attr, start, arg))
WRAP_RETURNING_ERROR(pthread_attr_init, ENOMEM, (pthread_attr_t *attr),
                     (attr))
WRAP_RETURNING_ERROR(pthread_attr_setstacksize, EINVAL,
                     (pthread_attr_t *attr, size_t size), (attr, size))
WRAP_RETURNING_ERROR(pthread_attr_setinheritsched, EINVAL,
                     (pthread_attr_t *attr, int inherit), (attr, inherit))
WRAP_RETURNING_ERROR(pthread_attr_setschedpolicy, EINVAL,
                     (pthread_attr_t *attr, int policy), (attr, policy))
WRAP_RETURNING_ERROR(pthread_attr_setschedparam, EINVAL,
                     (pthread_attr_t *attr, const struct sched_param *param),
                     (attr, param))
WRAP_RETURNING_ERROR(pthread_attr_setaffinity_np, EINVAL,
                     (pthread_attr_t *attr, size_t size, const cpu_set_t *set),
                     (attr, size, set))
WRAP_RETURNING_ERROR(pthread_mutex_init, ENOMEM,
                     (pthread_mutex_t *m, const pthread_mutexattr_t *attr),
                     (m, attr))
WRAP_RETURNING_ERROR(pthread_cond_init, ENOMEM,
                     (pthread_cond_t *c, const pthread_condattr_t *attr),
                     (c, attr))
WRAP_RETURNING_ERROR(pthread_condattr_init, ENOMEM, (pthread_condattr_t *attr),
                     (attr))
WRAP_RETURNING_ERROR(pthread_condattr_setclock, EINVAL,
                     (pthread_condattr_t *attr, clockid_t clock),
                     (attr, clock))
/* EINVAL is the error POSIX gives pthread_kill (a signal it cannot send). */
WRAP_RETURNING_ERROR(pthread_kill, EINVAL, (pthread_t thread, int sig),
                     (thread, sig))

/* Named with `how`, which tells a block from a restore in a trace. */
int __wrap_pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
    const char *name = how == SIG_BLOCK     ? "pthread_sigmask(SIG_BLOCK)"
                       : how == SIG_UNBLOCK ? "pthread_sigmask(SIG_UNBLOCK)"
                       : how == SIG_SETMASK ? "pthread_sigmask(SIG_SETMASK)"
                                            : "pthread_sigmask";
    int error;
    if (take_fault(name, EINVAL, &error))
        return error;
    return __real_pthread_sigmask(how, set, old);
}

/* The one error glibc's sem_init has; it reports it through errno. */
int __wrap_sem_init(sem_t *sem, int pshared, unsigned value)
{
    int error;
    if (take_fault("sem_init", EINVAL, &error)) {
        errno = error;
        return -1;
    }
    return __real_sem_init(sem, pshared, value);
}
