/*
 * The library under test, driven like every baseline: one service per
 * instance, started for a warm-up run plus `ticks` runs (and spec->settle
 * unmeasured ones at each end of those). A run's lateness
 * is CLOCK_MONOTONIC read first thing in run_once minus the scheduled
 * start the library reports for that run.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct ours_inst {
    struct lane *lane;
    const struct block_spec *spec;
    size_t wake;   /* wake-ups so far */
    long slack_ns;
};

static int ours_run_once(lsvc *svc, void *arg)
{
    int64_t now = now_ns();
    struct ours_inst *in = arg;
    struct timespec due;

    if (lsvc_scheduled_start(svc, &due) != 0)
        return 1;
    /* At the last run: the automatic slack follows the other services,
     * which are all running by then. */
    size_t tick = settled_tick(in->spec, in->wake++);
    if (tick == in->lane->cap)
        in->slack_ns = slack_current();
    if (in->lane->cpu != NULL)
        lane_put_cpu(in->lane, tick);
    lane_put(in->lane, tick, ts_to_ns(&due), now);
    return 0;
}

static const lsvc_class bench_class = {
    .name = "bench",
    .run_once = ours_run_once,
};

/* The run observer of VAR_OBSERVED: it only records, as a tracer would. */
struct observed {
    atomic_uint_fast64_t calls;
    _Atomic int64_t last_duration_ns;
};

static struct observed observed;

static void observe_run(const lsvc_run_event *event, void *ctx)
{
    struct observed *o = ctx;

    atomic_fetch_add_explicit(&o->calls, 1, memory_order_relaxed);
    if (event->ended)
        atomic_store_explicit(&o->last_duration_ns, event->duration_ns,
                              memory_order_relaxed);
}

lsvc_options ours_options(const struct block_spec *spec)
{
    lsvc_options opts;

    memset(&opts, 0, sizeof opts);
    opts.loop_seconds = (double)spec->interval_ns / 1e9;
    opts.precise = (spec->variant & VAR_PRECISE) != 0;
    opts.missed = (spec->variant & VAR_BURST) ? LSVC_MISSED_BURST : LSVC_MISSED_DELAY;
    opts.sched_priority = spec->prio;
    opts.cpu_mask = spec->cpu >= 0 ? UINT64_C(1) << spec->cpu : 0;
    opts.timer_slack_ns = spec->slack_ns > 0 ? spec->slack_ns : 0;
    opts.no_histograms = (spec->variant & VAR_NO_HIST) != 0;
    return opts;
}

int ours_run(const struct block_spec *spec, struct lane *lanes,
             struct block_info *info)
{
    size_t k = spec->instances, created = 0, started = 0;
    lsvc **svcs = calloc(k, sizeof *svcs);
    struct ours_inst *insts = calloc(k, sizeof *insts);
    void **leases = calloc(k, sizeof *leases);
    lsvc_options opts = ours_options(spec);
    int rc = (svcs && insts && leases) ? 0 : ENOMEM;

    for (; rc == 0 && created < k; created++) {
        insts[created].lane = &lanes[created];
        insts[created].spec = spec;
        rc = bench_lease_attach(spec->variant, &opts, &leases[created]);
        if (rc == 0)
            rc = lsvc_create(&svcs[created], &bench_class, &insts[created], &opts);
        if (rc != 0) {
            bench_lease_free(spec->variant, leases[created]);
            break;
        }
    }
    /* The observer is the process's: set for this block's services only. */
    atomic_store(&observed.calls, 0);
    if (spec->variant & VAR_OBSERVED)
        lsvc_set_run_observer(observe_run, &observed);
    int64_t t0 = now_ns();
    for (; rc == 0 && started < k; started++)
        if ((rc = lsvc_start(svcs[started], spec->ticks + 1 + 2 * spec->settle)) != 0)
            break;
    info->start_ns = now_ns() - t0;
    if (spec->started != NULL)
        latch_add(spec->started);
    if (rc != 0)
        fprintf(stderr, "loopsvc-bench: starting service %zu of %zu failed: %s\n",
                started + 1, k, strerror(rc));

    int64_t deadline = block_deadline(spec);
    for (size_t i = 0; i < started; i++) {
        if (rc != 0) {
            lsvc_stop(svcs[i], true);
            continue;
        }
        double left = (double)(deadline - now_ns()) / 1e9;
        if (lsvc_join(svcs[i], left > 0 ? left : 0) == ETIMEDOUT)
            die("a loopsvc service did not end after its runs; giving up");
    }
    if (spec->variant & VAR_OBSERVED)
        lsvc_set_run_observer(NULL, NULL);
    info->observer_calls = atomic_load(&observed.calls);
    info->slack_ns = k ? insts[0].slack_ns : 0;
    lsvc_histogram h;
    if (created > 0 && lsvc_get_histogram(svcs[0], LSVC_HISTOGRAM_DURATION, &h) == 0)
        info->histogram_runs = h.count;
    for (size_t i = 0; i < created; i++) {
        lsvc_destroy(svcs[i]);
        bench_lease_free(spec->variant, leases[i]);
    }
    free(svcs);
    free(insts);
    free(leases);
    return rc;
}

/* n copies of cls named "<name>-<i>", in one block for free(): the
 * services of a group need names of their own (lsvc_group_add), and a
 * class must outlive the services made from it. */
lsvc_class *classes_numbered(const lsvc_class *cls, size_t n)
{
    size_t len = strlen(cls->name) + 24;
    lsvc_class *c = malloc(n * (sizeof *c + len) + 1);

    if (c == NULL)
        return NULL;
    char *names = (char *)(c + n);
    for (size_t i = 0; i < n; i++) {
        c[i] = *cls;
        snprintf(names + i * len, len, "%s-%zu", cls->name, i);
        c[i].name = names + i * len;
    }
    return c;
}

/* --- the library's log --------------------------------------------------- */

/* A thousand services that overrun on a saturated machine would each log
 * a warning: counted here and summed up once per subcommand, so that
 * stderr stays readable and no timing includes a write to it. */
static atomic_ulong logged;
static pthread_mutex_t first_lock = PTHREAD_MUTEX_INITIALIZER; /* protects `first` */
static char first[256];

static void count_log(int level, const char *logger, const char *message, void *ctx)
{
    (void)ctx;
    if (atomic_fetch_add(&logged, 1) == 0) {
        pthread_mutex_lock(&first_lock);
        snprintf(first, sizeof first, "%s %s: %s",
                 level >= LSVC_LOG_ERROR ? "ERROR" : "WARNING", logger, message);
        pthread_mutex_unlock(&first_lock);
    }
}

void ours_logs_quiet(void)
{
    lsvc_set_log_level(LSVC_LOG_WARNING);
    lsvc_set_logger(count_log, NULL);
}

void ours_logs_report(const char *bench)
{
    unsigned long n = atomic_exchange(&logged, 0);

    if (n == 0)
        return;
    pthread_mutex_lock(&first_lock);
    fprintf(stderr, "loopsvc-bench: %s: the library logged %lu warning(s); the first: %s\n",
            bench, n, first);
    pthread_mutex_unlock(&first_lock);
}
