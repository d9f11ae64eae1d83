/*
 * The 10,000-service check of scale: one lsvc_group of 10000 idle
 * services (1 s, the default options), started and stopped by SIGTERM as
 * a server is, against the library's targets (start <= 1 s, stop <=
 * 500 ms, <= 16 KiB resident per idle service), then started and stopped
 * again, 10 times (2 with --quick), to show whether a cycle leaves
 * anything behind: a thread or a descriptor more than before the group
 * was made, or memory that goes on growing. The first cycle may still
 * grow the heap to its working size, so RSS is read from the second on.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK_N 10000
#define MAX_CYCLES 10
#define TARGET_START_NS (1000 * NS_PER_MS)
#define TARGET_STOP_NS (500 * NS_PER_MS)
#define TARGET_RSS_BYTES (16 * 1024)
#define LEAK_RSS_BYTES (1024 * 1024)

struct cycle {
    int64_t start_ns, stop_ns, rss_bytes;
    int threads, fds;
};

struct check_10k {
    int64_t start_ns, stop_ns, rss_per_service;
    int threads_before, threads_running, threads_after, fds_before, fds_after;
    int cycles;
    struct cycle cycle[MAX_CYCLES];
    int growth_from;    /* the cycle (from 1) whose RSS the growth counts from */
    int64_t rss_growth; /* from it to the last */
    bool start_met, stop_met, rss_met, no_leak;
};

/* The first start and stop, then the cycles, on one group. */
static int check_cycles(struct check_10k *c)
{
    lsvc_options opts = idle_options();
    struct ours_group og;
    int rc = ours_group_make(&og, CHECK_N, &opts, true);

    if (rc != 0)
        return rc;
    if ((rc = ours_group_start(&og, &c->start_ns)) == 0) {
        c->threads_running = proc_threads();
        rc = ours_group_sigterm(&og, &c->stop_ns);
    }
    c->threads_after = proc_threads();
    c->fds_after = proc_fds();
    for (int k = 0; rc == 0 && k < c->cycles; k++) {
        struct cycle *y = &c->cycle[k];

        if ((rc = ours_group_start(&og, &y->start_ns)) == 0)
            rc = ours_group_sigterm(&og, &y->stop_ns);
        y->threads = proc_threads();
        y->fds = proc_fds();
        y->rss_bytes = statm_resident_pages() * sysconf(_SC_PAGESIZE);
    }
    ours_group_free(&og);
    return rc;
}

static void check_verdicts(struct check_10k *c)
{
    const struct cycle *last = &c->cycle[c->cycles - 1];

    c->start_met = c->start_ns <= TARGET_START_NS;
    c->stop_met = c->stop_ns <= TARGET_STOP_NS;
    c->rss_met = c->rss_per_service <= TARGET_RSS_BYTES;
    c->growth_from = c->cycles >= 3 ? 2 : 1;
    c->rss_growth = last->rss_bytes - c->cycle[c->growth_from - 1].rss_bytes;
    c->no_leak = c->threads_after <= c->threads_before && c->fds_after <= c->fds_before &&
                 c->rss_growth <= LEAK_RSS_BYTES;
    for (int k = 0; k < c->cycles; k++)
        c->no_leak &= c->cycle[k].threads <= c->threads_before &&
                      c->cycle[k].fds <= c->fds_before;
}

int check_10k_run(const struct bench_opts *o, struct check_10k **out)
{
    struct check_10k *c = calloc(1, sizeof *c);
    int rc;

    *out = NULL;
    if (c == NULL)
        return ENOMEM;
    c->cycles = o->quick ? 2 : MAX_CYCLES;
    c->threads_before = proc_threads();
    c->fds_before = proc_fds();
    rc = check_cycles(c);
    if (rc == 0)
        rc = rss_per_service("rss-probe-group", CHECK_N, &c->rss_per_service);
    if (rc != 0) {
        limits_blame(rc, "scale: the 10,000-service check");
        fprintf(stderr, "loopsvc-bench: scale: the 10,000-service check failed: %s\n",
                strerror(rc));
        free(c);
        return rc;
    }
    check_verdicts(c);
    *out = c;
    return 0;
}

void check_10k_free(struct check_10k *c)
{
    free(c);
}

static const char *met(bool yes)
{
    return yes ? "met" : "MISSED";
}

static const char *boolean(bool yes)
{
    return yes ? "true" : "false";
}

static void check_json(const struct check_10k *c)
{
    printf(", \"group_10k\": {\"services\": %d, \"start_ns\": %lld, \"stop_ns\": %lld, "
           "\"rss_bytes_per_service\": %lld, \"threads_before\": %d, "
           "\"threads_running\": %d, \"threads_after\": %d, \"fds_before\": %d, "
           "\"fds_after\": %d, \"cycles\": [", CHECK_N, (long long)c->start_ns,
           (long long)c->stop_ns, (long long)c->rss_per_service, c->threads_before,
           c->threads_running, c->threads_after, c->fds_before, c->fds_after);
    for (int k = 0; k < c->cycles; k++) {
        const struct cycle *y = &c->cycle[k];

        printf("%s{\"start_ns\": %lld, \"stop_ns\": %lld, \"threads\": %d, \"fds\": %d, "
               "\"rss_bytes\": %lld}", k ? ", " : "", (long long)y->start_ns,
               (long long)y->stop_ns, y->threads, y->fds, (long long)y->rss_bytes);
    }
    printf("], \"rss_growth_from_cycle\": %d, \"rss_growth_bytes\": %lld, "
           "\"targets\": {\"start_ns\": %lld, \"stop_ns\": %lld, "
           "\"rss_bytes_per_service\": %d, \"leak_rss_bytes\": %d}, "
           "\"met\": {\"start\": %s, \"stop\": %s, \"rss\": %s, \"no_leak\": %s}}",
           c->growth_from, (long long)c->rss_growth, (long long)TARGET_START_NS,
           (long long)TARGET_STOP_NS, TARGET_RSS_BYTES, LEAK_RSS_BYTES,
           boolean(c->start_met), boolean(c->stop_met), boolean(c->rss_met),
           boolean(c->no_leak));
}

/* Its own section of scale's output, or the "group_10k" member of its
 * JSON object (null when there is no check). */
void check_10k_print(const struct check_10k *c, bool json)
{
    if (c == NULL) {
        if (json)
            printf(", \"group_10k\": null");
        return;
    }
    if (json) {
        check_json(c);
        return;
    }
    printf("-- the 10,000-service check: one lsvc_group of %d idle services "
           "(1 s, default options)\n", CHECK_N);
    printf("   start (lsvc_group_start)            %9.2f ms   target <= %lld ms: %s\n",
           (double)c->start_ns / 1e6, (long long)(TARGET_START_NS / NS_PER_MS),
           met(c->start_met));
    printf("   stop (SIGTERM to lsvc_group_wait)   %9.2f ms   target <= %lld ms: %s\n",
           (double)c->stop_ns / 1e6, (long long)(TARGET_STOP_NS / NS_PER_MS),
           met(c->stop_met));
    printf("   RSS per idle service (fresh process) %8.1f KiB  target <= %d KiB: %s\n",
           (double)c->rss_per_service / 1024, TARGET_RSS_BYTES / 1024, met(c->rss_met));
    printf("   threads %d before, %d running, %d after; descriptors %d before, %d after\n",
           c->threads_before, c->threads_running, c->threads_after, c->fds_before,
           c->fds_after);
    printf("   then %d cycles of lsvc_group_start and SIGTERM stop of the same group:\n",
           c->cycles);
    printf("   %5s %10s %10s %8s %12s %9s\n", "cycle", "start ms", "stop ms", "threads",
           "descriptors", "RSS MiB");
    for (int k = 0; k < c->cycles; k++) {
        const struct cycle *y = &c->cycle[k];

        printf("   %5d %10.2f %10.2f %8d %12d %9.2f\n", k + 1, (double)y->start_ns / 1e6,
               (double)y->stop_ns / 1e6, y->threads, y->fds,
               (double)y->rss_bytes / 1048576);
    }
    printf("   leak: threads and descriptors at most %d and %d after each stop, RSS from "
           "cycle %d to %d %+.2f MiB (tolerance %d MiB): %s\n", c->threads_before,
           c->fds_before, c->growth_from, c->cycles, (double)c->rss_growth / 1048576,
           LEAK_RSS_BYTES >> 20, c->no_leak ? "none, met" : "MISSED");
}
