/*
 * Timer slack: how late the kernel may wake a service thread so that it
 * can serve several wake-ups with one timer interrupt.
 *
 * A small slack keeps one service near the kernel's limit; many services
 * need a larger one, or each wake-up costs an interrupt of its own and the
 * machine's CPU goes to them. So the automatic slack follows the rate at
 * which the process's services wake: 0.1 % of the interval while that
 * rate is low, growing with it, and the slack the thread inherited (the
 * system's 50 us) from LSVC_SLACK_FULL_RATE wakes per second up. Each
 * service thread adds its rate to one process-wide sum while it runs
 * (none while paused or waiting to be woken) and looks at the sum again
 * before every sleep; a change costs one prctl.
 */
#define _GNU_SOURCE /* only takes effect for the extensions config.h found */
#include "config.h"
#include "internal.h"

#include <limits.h>
#include <stdatomic.h>
#if HAVE_PR_SET_TIMERSLACK
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* Wake-ups per second of all services at which every automatic slack is
 * the inherited one: 1000 services of 10 ms. */
#define LSVC_SLACK_FULL_RATE INT64_C(100000)

/* Rates are kept in wake-ups per 1000 s, so that services of long
 * intervals still count. */
#define MILLI INT64_C(1000)

/* The sum of the rates of the running service threads. */
static _Atomic int64_t process_rate;

static int64_t rate_of(int64_t interval_ns)
{
    if (interval_ns <= 0 || interval_ns == LSVC_FOREVER)
        return 0;
    return LSVC_NS_PER_SEC * MILLI / interval_ns;
}

/* The automatic slack of a thread at interval_ns while the process's
 * other services wake `rate` times per 1000 s (a thread's own wake-ups
 * come one after the other: no slack batches them); cap is the slack the
 * thread inherited. */
static long auto_slack(int64_t interval_ns, int64_t rate, long cap)
{
    int64_t per_s = rate / MILLI;
    int64_t own = interval_ns / 1000;

    if (per_s > LSVC_SLACK_FULL_RATE)
        per_s = LSVC_SLACK_FULL_RATE; /* and no overflow below */
    int64_t shared = (int64_t)cap * per_s / LSVC_SLACK_FULL_RATE;
    int64_t ns = own > shared ? own : shared;

    if (ns < 1)
        ns = 1;
    if (cap > 0 && ns > cap)
        ns = cap;
    return ns > LONG_MAX ? LONG_MAX : (long)ns;
}

void lsvc__slack_join(struct lsvc_slack *s, long fixed_ns, int64_t interval_ns)
{
    s->fixed_ns = fixed_ns;
    s->interval_ns = interval_ns;
    s->rate = rate_of(interval_ns);
    s->applied_ns = -1;
    s->cap_ns = 0;
#if HAVE_PR_SET_TIMERSLACK
    /* The system call returns a long; the C library's prctl() an int,
     * which a slack of 2^31 ns or more would not fit. */
    if (fixed_ns == 0)
        s->cap_ns = syscall(SYS_prctl, PR_GET_TIMERSLACK, 0, 0, 0, 0);
#endif
    atomic_fetch_add_explicit(&process_rate, s->rate, memory_order_relaxed);
    lsvc__slack_follow(s, interval_ns);
}

void lsvc__slack_follow(struct lsvc_slack *s, int64_t interval_ns)
{
    long want = s->fixed_ns;

    if (interval_ns != s->interval_ns) {
        int64_t rate = rate_of(interval_ns);

        atomic_fetch_add_explicit(&process_rate, rate - s->rate,
                                  memory_order_relaxed);
        s->interval_ns = interval_ns;
        s->rate = rate;
    }
    if (want == 0)
        want = auto_slack(interval_ns,
                          atomic_load_explicit(&process_rate,
                                               memory_order_relaxed) -
                              s->rate,
                          s->cap_ns);
    if (want == s->applied_ns)
        return;
    s->applied_ns = want;
#if HAVE_PR_SET_TIMERSLACK
    prctl(PR_SET_TIMERSLACK, (unsigned long)want, 0, 0, 0);
#endif
}

void lsvc__slack_leave(struct lsvc_slack *s)
{
    atomic_fetch_sub_explicit(&process_rate, s->rate, memory_order_relaxed);
    s->rate = 0;
}
