/*
 * observe: what a service's histograms and a run observer cost per run.
 *
 * The same periodic service runs three ways in alternating blocks (A B C
 * A B C ...): loopsvc-nohist (lsvc_options.no_histograms, no observer:
 * the baseline), loopsvc (the default, its two histograms updated on
 * every run) and loopsvc-observed (the histograms, and a run observer
 * that only records, as a tracer's would: a count and the last duration).
 * CPU per wake is the service thread's own CPU time from one run_once
 * to the next (CLOCK_THREAD_CPUTIME_ID, read in run_once: run_block_cpu),
 * pooled per impl; the figure is its median, since on a virtual machine
 * single wakes range over several times that, and what is sought is a few
 * per cent. Lateness is as jitter's. Each block checks that what its impl
 * names was on: the duration histogram holds every run of the block or
 * none, and the observer was called twice per run or never.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <string.h>
#include <unistd.h>

#define OBSERVE_IMPLS 3
#define TARGET_CPU_RATIO 1.05
/* Short blocks, many of them: on a virtual machine one block's CPU per
 * wake (a new thread, another moment) can be tens of per cent off the
 * next's, and only many blocks average that out. */
#define BLOCK_WAKES 40

static const struct impl *const observe_impls[OBSERVE_IMPLS] = {
    &IMPL_NOHIST, &IMPL_HIST, &IMPL_OBSERVED,
};

static bool measured_as_named(const struct impl *impl, const struct block_spec *spec,
                              const struct block_info *info)
{
    uint64_t runs = spec->ticks + 1;
    uint64_t hist = (impl->variant & VAR_NO_HIST) ? 0 : runs;
    uint64_t calls = (impl->variant & VAR_OBSERVED) ? 2 * runs * spec->instances : 0;

    if (info->histogram_runs == hist && info->observer_calls == calls)
        return true;
    fprintf(stderr, "loopsvc-bench: observe: %s: %llu run(s) in the histogram "
            "(want %llu), %llu observer call(s) (want %llu)\n", impl->name,
            (unsigned long long)info->histogram_runs, (unsigned long long)hist,
            (unsigned long long)info->observer_calls, (unsigned long long)calls);
    return false;
}

int bench_observe(const struct bench_opts *o)
{
    int64_t interval = o->interval_ns ? o->interval_ns : NS_PER_MS;
    uint64_t loops = opt_loops(o, interval, 10000, 1000);
    int by_length = (int)((loops + BLOCK_WAKES - 1) / BLOCK_WAKES);
    int blocks = opt_blocks(o, by_length, by_length, loops);
    size_t k = o->services ? (size_t)o->services : 1;
    struct pool pools[OBSERVE_IMPLS];
    struct result res[OBSERVE_IMPLS];
    struct pool cpu[OBSERVE_IMPLS];
    uint64_t calls = 0;
    long slack[OBSERVE_IMPLS] = { 0 };
    bool ok = true;

    memset(pools, 0, sizeof pools);
    memset(cpu, 0, sizeof cpu);
    double nominal = OBSERVE_IMPLS * (double)(loops + (uint64_t)blocks) *
                     (double)interval / 1e9;
    watchdog_arm("observe", 3 * nominal + 60);
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "observe: about %.0f s\n", nominal * 1.1 + 1);

    for (int b = 0; ok && b < blocks; b++) {
        size_t ticks = loops / (uint64_t)blocks + ((uint64_t)b < loops % (uint64_t)blocks);
        struct block_spec spec = spec_from(o, interval, ticks, k, 0);

        for (size_t i = 0; ok && i < OBSERVE_IMPLS; i++) {
            const struct impl *impl = observe_impls[i];
            struct block_info info;
            int rc = run_block_cpu(impl, &spec, &pools[i], &cpu[i], &info);

            if (rc != 0)
                fprintf(stderr, "loopsvc-bench: observe: %s: %s\n", impl->name,
                        strerror(rc));
            if (!(ok = rc == 0 && measured_as_named(impl, &spec, &info)))
                break;
            slack[i] = info.slack_ns;
            calls += info.observer_calls;
        }
    }
    for (size_t i = 0; i < OBSERVE_IMPLS; i++) {
        struct summary per_wake;

        result_from_pool(&res[i], observe_impls[i]->name, (int)k, slack[i], &pools[i]);
        summarize(cpu[i].v, cpu[i].n, &per_wake);
        res[i].has = HAS_CPU;
        res[i].cpu_ns_per_wake = (double)per_wake.p50;
        pool_free(&pools[i]);
        pool_free(&cpu[i]);
    }
    if (!ok)
        return 1;

    bool met = res[0].cpu_ns_per_wake > 0;
    for (size_t i = 1; i < OBSERVE_IMPLS; i++)
        met &= res[i].cpu_ns_per_wake <= TARGET_CPU_RATIO * res[0].cpu_ns_per_wake;
    if (o->json) {
        json_begin("observe", o, interval, (int)k);
        json_results(res, OBSERVE_IMPLS);
        json_costs(res, OBSERVE_IMPLS);
        printf(", \"baseline\": \"%s\", \"target_cpu_ratio\": %.2f, \"target_met\": %s, "
               "\"observer_calls\": %llu", res[0].impl, TARGET_CPU_RATIO,
               met ? "true" : "false", (unsigned long long)calls);
        json_end();
        return 0;
    }
    char what[200];
    snprintf(what, sizeof what, "CPU per wake and lateness without histograms, with "
             "them, and with a run observer too, %zu service(s) per impl, %llu wakes "
             "each in %d alternating blocks", k, (unsigned long long)loops, blocks);
    print_title("observe", o, interval, what);
    printf("   cpu/wake: the median of the service thread's CPU time from one run "
           "to the next\n");
    print_results(res, OBSERVE_IMPLS, HAS_CPU);
    print_costs(res, OBSERVE_IMPLS, "over loopsvc-nohist (no histograms, no observer), "
                "same run:");
    printf("   checked: every run in the duration histogram but loopsvc-nohist's, "
           "%llu observer calls, 2 per run of loopsvc-observed\n",
           (unsigned long long)calls);
    printf("   target: cpu/wake <= x%.2f of loopsvc-nohist for loopsvc and "
           "loopsvc-observed: %s\n", TARGET_CPU_RATIO, met ? "met" : "missed");
    return 0;
}
