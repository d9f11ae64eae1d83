/*
 * Histograms: run durations and wake-up lateness, on fixed log-scale
 * buckets (1, 2 and 5 times each power of ten from 1 us to 2000 s, then
 * one hour, then +Inf), so that every service, every replica and every
 * release bucket alike and Prometheus can sum them.
 *
 * Only the service thread writes a service's histograms, so a bucket is
 * bumped with a relaxed load and store, not a locked add, and a reader
 * takes no lock: it never delays a run, and a run never waits for it.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>

#define FINITE_BUCKETS (LSVC_HISTOGRAM_BUCKETS - 1)

#define US INT64_C(1000)
#define MS (1000 * US)
#define S (1000 * MS)

/* Upper bounds in ns. */
static const int64_t bounds_ns[FINITE_BUCKETS] = {
    1 * US,   2 * US,   5 * US,   10 * US,   20 * US,   50 * US,
    100 * US, 200 * US, 500 * US, 1 * MS,    2 * MS,    5 * MS,
    10 * MS,  20 * MS,  50 * MS,  100 * MS,  200 * MS,  500 * MS,
    1 * S,    2 * S,    5 * S,    10 * S,    20 * S,    50 * S,
    100 * S,  200 * S,  500 * S,  1000 * S,  2000 * S,  3600 * S,
};

double lsvc_histogram_bound(unsigned i)
{
    if (i < FINITE_BUCKETS)
        return (double)bounds_ns[i] / 1e9;
    return i == FINITE_BUCKETS ? INFINITY : NAN;
}

/* The first bucket whose bound is at least ns. */
static unsigned bucket_of(int64_t ns)
{
    unsigned lo = 0, hi = FINITE_BUCKETS;

    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (bounds_ns[mid] < ns)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void bump(_Atomic uint64_t *counter, uint64_t by)
{
    uint64_t v = atomic_load_explicit(counter, memory_order_relaxed);

    atomic_store_explicit(counter, v + by, memory_order_relaxed);
}

void lsvc__hist_observe(struct lsvc_hist *h, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    bump(&h->buckets[bucket_of(ns)], 1);
    bump(&h->sum_ns, (uint64_t)ns);
}

int lsvc_get_histogram(const lsvc *svc, lsvc_histogram_kind kind,
                       lsvc_histogram *out)
{
    if (svc == NULL || out == NULL ||
        (kind != LSVC_HISTOGRAM_DURATION && kind != LSVC_HISTOGRAM_LATENESS))
        return EINVAL;
    const struct lsvc_hist *h = &svc->hist[kind];

    *out = (lsvc_histogram){0};
    for (unsigned i = 0; i < LSVC_HISTOGRAM_BUCKETS; i++) {
        out->buckets[i] =
            atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        out->count += out->buckets[i];
    }
    out->sum = (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) /
               1e9;
    return 0;
}
