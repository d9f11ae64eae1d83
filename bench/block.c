/*
 * Blocks, lanes and pools: the one shape in which every impl is measured.
 *
 * A runner stores each wake with lane_put(); the subcommand then pours the
 * lanes of a block into the impl's pool, so that blocks of different impls
 * can alternate (A B A B) and still be summarised per impl at the end.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Every measured wake of every impl, for CPU time per wake (scale). */
static atomic_uint_fast64_t wakes;

static void lanes_free(struct lane *lanes, size_t count)
{
    if (lanes == NULL)
        return;
    for (size_t i = 0; i < count; i++) {
        free(lanes[i].late);
        free(lanes[i].cpu);
    }
    free(lanes);
}

static int lanes_alloc(struct lane **lanes, size_t count, size_t cap,
                       int64_t close_ns, bool cpu)
{
    struct lane *l = calloc(count, sizeof *l);

    if (l == NULL)
        return ENOMEM;
    for (size_t i = 0; i < count; i++) {
        l[i].cap = cap;
        l[i].close_ns = close_ns;
        l[i].late = malloc((cap ? cap : 1) * sizeof *l[i].late);
        if (cpu)
            l[i].cpu = malloc((cap ? cap : 1) * sizeof *l[i].cpu);
        if (l[i].late == NULL || (cpu && l[i].cpu == NULL)) {
            lanes_free(l, count);
            return ENOMEM;
        }
    }
    *lanes = l;
    return 0;
}

void lane_put(struct lane *l, size_t tick, int64_t due, int64_t start)
{
    if (tick == 0 || tick > l->cap)
        return;
    size_t i = tick - 1;

    l->late[i] = start - due;
    if (i > 0) {
        int64_t gap = start - l->prev_start;
        if (i == 1 || gap < l->min_gap)
            l->min_gap = gap;
        l->close += gap < l->close_ns;
    }
    l->prev_start = start;
    if (i == 0) {
        l->first_due = due;
        l->first_start = start;
    }
    if (i + 1 >= l->n) {
        l->n = i + 1;
        l->last_due = due;
        l->last_start = start;
    }
    atomic_fetch_add_explicit(&wakes, 1, memory_order_relaxed);
}

/* Called by the waking thread at each tick, before lane_put: the thread's
 * CPU time since the previous tick. The read is a system call, the same
 * for every impl that makes it. */
void lane_put_cpu(struct lane *l, size_t tick)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    if (tick > 0 && tick <= l->cap)
        l->cpu[l->cpu_n++] = ts_to_ns(&ts) - l->prev_cpu;
    l->prev_cpu = ts_to_ns(&ts);
}

uint64_t wakes_total(void)
{
    return atomic_load_explicit(&wakes, memory_order_relaxed);
}

int pool_add(struct pool *p, const int64_t *v, size_t n)
{
    if (p->n + n > p->cap) {
        size_t cap = p->cap ? p->cap : 1024;
        while (cap < p->n + n)
            cap *= 2;
        int64_t *bigger = realloc(p->v, cap * sizeof *bigger);
        if (bigger == NULL)
            return ENOMEM;
        p->v = bigger;
        p->cap = cap;
    }
    memcpy(p->v + p->n, v, n * sizeof *v);
    p->n += n;
    return 0;
}

void pool_free(struct pool *p)
{
    free(p->v);
    p->v = NULL;
    p->n = p->cap = 0;
}

struct block_spec spec_from(const struct bench_opts *o, int64_t interval_ns,
                            size_t ticks, size_t instances, int variant)
{
    struct block_spec s = {
        .interval_ns = interval_ns,
        .ticks = ticks,
        .instances = instances,
        .prio = o->prio,
        .cpu = o->cpu,
        .slack_ns = o->slack_ns,
        .variant = variant,
        .work_ns = o->raw_work_ns,
    };
    return s;
}

uint64_t opt_loops(const struct bench_opts *o, int64_t interval_ns,
                   uint64_t normal, uint64_t quick)
{
    if (o->loops != 0)
        return o->loops;
    if (o->duration_s > 0) {
        uint64_t n = (uint64_t)(o->duration_s * 1e9 / (double)interval_ns);
        return n > 0 ? n : 1;
    }
    return o->quick ? quick : normal;
}

int opt_blocks(const struct bench_opts *o, int normal, int quick, uint64_t loops)
{
    int blocks = o->blocks ? o->blocks : o->quick ? quick : normal;

    return (uint64_t)blocks > loops ? (int)loops : blocks;
}

/* Generous: a block that needs three times its nominal length plus ten
 * seconds is not slow, it is stuck. */
int64_t block_deadline(const struct block_spec *spec)
{
    return now_ns() + 3 * (int64_t)(spec->ticks + 1 + 2 * spec->settle) *
                          spec->interval_ns +
           10 * NS_PER_SEC;
}

size_t settled_tick(const struct block_spec *spec, size_t wake)
{
    return wake > spec->settle ? wake - spec->settle : 0;
}

/* run_block, and into cpu (when not NULL) the CPU time the waking thread
 * took from each wake to the next, where the impl measures it (ours). */
int run_block_cpu(const struct impl *impl, const struct block_spec *spec,
                  struct pool *pool, struct pool *cpu, struct block_info *info)
{
    struct block_spec s = *spec;
    struct lane *lanes;
    int rc;

    s.variant |= impl->variant;
    memset(info, 0, sizeof *info);
    rc = lanes_alloc(&lanes, s.instances, s.ticks,
                     s.interval_ns - delay_tolerance_ns(s.interval_ns), cpu != NULL);
    if (rc != 0)
        return rc;
    rc = impl->run(&s, lanes, info);
    for (size_t i = 0; rc == 0 && i < s.instances; i++) {
        rc = pool_add(pool, lanes[i].late, lanes[i].n);
        if (rc == 0 && cpu != NULL)
            rc = pool_add(cpu, lanes[i].cpu, lanes[i].cpu_n);
    }
    info->first = lanes[0];
    info->first.late = NULL;
    lanes_free(lanes, s.instances);
    return rc;
}

int run_block(const struct impl *impl, const struct block_spec *spec,
              struct pool *pool, struct block_info *info)
{
    return run_block_cpu(impl, spec, pool, NULL, info);
}

const struct impl IMPL_CONDVAR = { "loopsvc-condvar", ours_run, 0 };
const struct impl IMPL_PRECISE = { "loopsvc-precise", ours_run, VAR_PRECISE };
const struct impl IMPL_BURST = { "loopsvc-burst", ours_run, VAR_BURST };
const struct impl IMPL_STALLED = { "loopsvc-stalled", ours_run, VAR_STALL };
const struct impl IMPL_NOHIST = { "loopsvc-nohist", ours_run, VAR_NO_HIST };
const struct impl IMPL_HIST = { "loopsvc", ours_run, 0 };
const struct impl IMPL_OBSERVED = { "loopsvc-observed", ours_run, VAR_OBSERVED };
const struct impl IMPL_NANOSLEEP = { "clock_nanosleep", nanosleep_run, 0 };
const struct impl IMPL_NANOSLEEP_B = { "clock_nanosleep-b", nanosleep_run, 0 };
const struct impl IMPL_NANOSLEEP_WORK = { "clock_nanosleep+work", nanosleep_run, VAR_WORK };
const struct impl IMPL_REBASE = { "rebase-on-start", nanosleep_run, VAR_REBASE };
const struct impl IMPL_TIMERFD = { "timerfd", timerfd_run, 0 };
const struct impl IMPL_POSIX_TIMER = { "posix_timer", posix_timer_run, 0 };
const struct impl IMPL_LIBUV = { "libuv", libuv_run, 0 };
const struct impl IMPL_CYCLICTEST = { "cyclictest", cyclictest_run, 0 };
