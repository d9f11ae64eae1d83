/*
 * The wake-up a sleeping service thread waits on: a post that ends its
 * sleep to an absolute CLOCK_MONOTONIC time at once.
 *
 * On 64-bit Linux it is a futex word: one system call per sleep, and one
 * per post. The C library's semaphore does the same work with more
 * around it (a waiter count, cancellation points), which costs about
 * 0.4 us more CPU per wake with a thousand services (measured).
 * Elsewhere it is that semaphore, and where sem_clockwait is missing
 * too, nothing waits on it (loop.c sleeps on the service's condvar; a
 * stop still posts, and the next start drains it). Either way a wait
 * returns when posted, at the due time, or on a signal: the caller looks
 * at the clock and at its flags again in every case, and a post that
 * comes while nobody waits ends the next wait at once.
 */
#define _GNU_SOURCE /* only takes effect for the extensions config.h found */
#include "config.h"
#include "internal.h"

#include <errno.h>
#if HAVE_LINUX_FUTEX
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if HAVE_LINUX_FUTEX

int lsvc__wakeup_init(struct lsvc_wakeup *w)
{
    atomic_init(&w->word, 0);
    return 0;
}

void lsvc__wakeup_destroy(struct lsvc_wakeup *w)
{
    (void)w;
}

void lsvc__wakeup_mark(struct lsvc_wakeup *w)
{
    atomic_store(&w->word, 1);
}

void lsvc__wakeup_wake(uintptr_t w)
{
    struct lsvc_wakeup *at = (struct lsvc_wakeup *)w;

    syscall(SYS_futex, &at->word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

bool lsvc__wakeup_pending(struct lsvc_wakeup *w)
{
    return atomic_load(&w->word) != 0;
}

void lsvc__wakeup_drain(struct lsvc_wakeup *w)
{
    atomic_store(&w->word, 0);
}

/* Takes a post, if there is one. The word is only read when there is
 * none, as at the end of most sleeps: a locked write would wait for a
 * cache line that went cold while the thread slept. What a post tells is
 * read under the lock its poster held, so no order is needed here. */
static bool take(struct lsvc_wakeup *w)
{
    if (atomic_load_explicit(&w->word, memory_order_relaxed) == 0)
        return false;
    atomic_store_explicit(&w->word, 0, memory_order_relaxed);
    return true;
}

void lsvc__wakeup_wait(struct lsvc_wakeup *w, int64_t due_ns)
{
    const struct timespec ts = lsvc__timespec(due_ns);

    if (take(w))
        return; /* posted since the last wait */
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time; it
     * returns at once when a post set the word meanwhile. */
    syscall(SYS_futex, &w->word, FUTEX_WAIT_BITSET_PRIVATE, 0, &ts, NULL,
            FUTEX_BITSET_MATCH_ANY);
    /* A post that ended this wait is taken; one that came after it
     * follows a change the caller is about to read under its lock. */
    take(w);
}

#else /* sem_clockwait */

int lsvc__wakeup_init(struct lsvc_wakeup *w)
{
    return sem_init(&w->sem, 0, 0) == 0 ? 0 : errno;
}

void lsvc__wakeup_destroy(struct lsvc_wakeup *w)
{
    sem_destroy(&w->sem);
}

void lsvc__wakeup_mark(struct lsvc_wakeup *w)
{
    sem_post(&w->sem);
}

void lsvc__wakeup_wake(uintptr_t w)
{
    (void)w;
}

/* The mark is the post itself: no wake is ever left to come. */
bool lsvc__wakeup_pending(struct lsvc_wakeup *w)
{
    (void)w;
    return false;
}

void lsvc__wakeup_drain(struct lsvc_wakeup *w)
{
    while (sem_trywait(&w->sem) == 0)
        ;
}

#if HAVE_SEM_CLOCKWAIT
void lsvc__wakeup_wait(struct lsvc_wakeup *w, int64_t due_ns)
{
    const struct timespec ts = lsvc__timespec(due_ns);

    sem_clockwait(&w->sem, CLOCK_MONOTONIC, &ts);
}
#endif

#endif

/* Every post wakes, as sem_post does with a waiter: one that left the
 * waking to an earlier poster would wait for that poster to get the CPU
 * back. Posts are rare (a stop). */
void lsvc__wakeup_post(struct lsvc_wakeup *w)
{
    lsvc__wakeup_mark(w);
    lsvc__wakeup_wake((uintptr_t)w);
}
