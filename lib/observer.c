/*
 * The run observer: one process-wide function told as each run begins and
 * ends, for tracing.
 *
 * It is looked up on every run, so the common case, no observer, costs
 * one atomic load; with one, fn and ctx are read together under a mutex
 * (they must change together) and called after it is released.
 */
#include "internal.h"

static pthread_mutex_t observer_lock = PTHREAD_MUTEX_INITIALIZER;
static lsvc_run_observer_fn observer_fn;
static void *observer_ctx;
static atomic_bool observer_set;

void lsvc_set_run_observer(lsvc_run_observer_fn fn, void *ctx)
{
    pthread_mutex_lock(&observer_lock);
    observer_fn = fn;
    observer_ctx = ctx;
    atomic_store(&observer_set, fn != NULL);
    pthread_mutex_unlock(&observer_lock);
}

bool lsvc__observing(void)
{
    return atomic_load_explicit(&observer_set, memory_order_relaxed);
}

void lsvc__observe(const lsvc_run_event *event)
{
    pthread_mutex_lock(&observer_lock);
    lsvc_run_observer_fn fn = observer_fn;
    void *ctx = observer_ctx;
    pthread_mutex_unlock(&observer_lock);
    if (fn != NULL)
        fn(event, ctx);
}
