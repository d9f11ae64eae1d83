/*
 * Making library threads: with every asynchronous signal blocked, with
 * the scheduling knobs that are GNU or Linux extensions (thread names,
 * CPU affinity), and joined with a deadline where the C
 * library can (pthread_clockjoin_np); and telling threads apart by a
 * token that is never reused. Each extension is compiled only where the
 * build found it.
 */
#define _GNU_SOURCE /* only takes effect for the extensions config.h found */
#include "config.h"
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <sched.h>
#include <signal.h>
#include <string.h>

#define LSVC_THREAD_NAME_MAX 15 /* Linux's limit, without the NUL */

/* Signals raised by a fault in the thread itself: blocking them is
 * undefined behaviour, so they stay deliverable, and no group waits for
 * them. */
static const int fault_signals[] = {
    SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT,
};

/* Whether a program may wait for sig: the C library keeps some signals
 * for itself (glibc 32 and 33, musl 32 to 34), and sigaddset refuses
 * them, although a set built with bit operations can hold them. */
bool lsvc__is_usable_signal(int sig)
{
    sigset_t set;

    sigemptyset(&set);
    return sigaddset(&set, sig) == 0;
}

bool lsvc__is_fault_signal(int sig)
{
    for (size_t i = 0; i < sizeof fault_signals / sizeof fault_signals[0]; i++)
        if (fault_signals[i] == sig)
            return true;
    return false;
}

/* A pthread_t may be given to a new thread once the old one is joined, so
 * "is this the thread that did X" compares tokens: numbers handed out
 * once per thread, at its first call, and never again while the process
 * lives. */
uint64_t lsvc__thread_token(void)
{
    static atomic_uint_fast64_t next = 1;
    static _Thread_local uint64_t token;

    if (token == 0)
        token = (uint64_t)atomic_fetch_add(&next, 1);
    return token;
}

/* The new thread inherits the creator's mask. Blocking everything around
 * pthread_create leaves no moment in which the new thread could take a
 * signal meant for the group's signal thread. */
int lsvc__spawn(pthread_t *thread, const pthread_attr_t *attr,
                void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    int rc;

    sigfillset(&all);
    for (size_t i = 0; i < sizeof fault_signals / sizeof fault_signals[0]; i++)
        sigdelset(&all, fault_signals[i]);
    rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc != 0)
        return rc;
    rc = pthread_create(thread, attr, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int lsvc__check_thread_options(const lsvc_options *opts)
{
    if (opts->stack_size != 0 && opts->stack_size < (size_t)PTHREAD_STACK_MIN)
        return EINVAL;
    if (opts->timer_slack_ns < 0)
        return EINVAL;
    if (opts->sched_priority != 0) {
        int policy = opts->sched_policy != 0 ? opts->sched_policy : SCHED_FIFO;
        if (policy != SCHED_FIFO && policy != SCHED_RR)
            return EINVAL;
        if (opts->sched_priority < sched_get_priority_min(policy) ||
            opts->sched_priority > sched_get_priority_max(policy))
            return EINVAL;
    } else if (opts->sched_policy != 0 && opts->sched_policy != SCHED_FIFO &&
               opts->sched_policy != SCHED_RR) {
        return EINVAL;
    }
#if !HAVE_PTHREAD_ATTR_SETAFFINITY_NP
    if (opts->cpu_mask != 0)
        return ENOTSUP;
#endif
    return 0;
}

int lsvc__thread_attr(pthread_attr_t *attr, const lsvc_options *opts)
{
    int rc = pthread_attr_init(attr);

    if (rc != 0)
        return rc;
    if (opts->stack_size != 0)
        rc = pthread_attr_setstacksize(attr, opts->stack_size);
    if (rc == 0 && opts->sched_priority > 0) {
        struct sched_param param = { .sched_priority = opts->sched_priority };
        int policy = opts->sched_policy != 0 ? opts->sched_policy : SCHED_FIFO;

        rc = pthread_attr_setinheritsched(attr, PTHREAD_EXPLICIT_SCHED);
        if (rc == 0)
            rc = pthread_attr_setschedpolicy(attr, policy);
        if (rc == 0)
            rc = pthread_attr_setschedparam(attr, &param);
    }
#if HAVE_PTHREAD_ATTR_SETAFFINITY_NP
    if (rc == 0 && opts->cpu_mask != 0) {
        cpu_set_t set;

        CPU_ZERO(&set);
        for (int cpu = 0; cpu < 64; cpu++)
            if (opts->cpu_mask & (UINT64_C(1) << cpu))
                CPU_SET(cpu, &set);
        rc = pthread_attr_setaffinity_np(attr, sizeof set, &set);
    }
#endif
    if (rc != 0)
        pthread_attr_destroy(attr);
    return rc;
}

/* Both run on the new thread: each applies to the calling thread. */
void lsvc__thread_name(const char *name)
{
#if HAVE_PTHREAD_SETNAME_NP
    char short_name[LSVC_THREAD_NAME_MAX + 1];

    strncpy(short_name, name, LSVC_THREAD_NAME_MAX);
    short_name[LSVC_THREAD_NAME_MAX] = '\0';
    pthread_setname_np(pthread_self(), short_name);
#else
    (void)name;
#endif
}

/* A join with a deadline: one wake-up when the thread exits, where waiting
 * for a "finished" broadcast and then joining costs two. Never called
 * where the C library has no timed join; ENOTSUP there keeps it linking. */
int lsvc__timed_join(pthread_t thread, int64_t deadline_ns)
{
#if HAVE_PTHREAD_CLOCKJOIN_NP
    struct timespec ts = lsvc__timespec(deadline_ns);

    return pthread_clockjoin_np(thread, NULL, CLOCK_MONOTONIC, &ts);
#else
    (void)thread;
    (void)deadline_ns;
    return ENOTSUP;
#endif
}
