/*
 * loopsvc-bench: what the files of bench/ share.
 *
 * Every measured timer, ours or a baseline, runs the same way: a "block"
 * of `instances` timers at one interval, each for one warm-up wake and
 * then `ticks` measured wakes, and each wake's lateness (when the thread
 * got the CPU minus when that wake was due) lands in a lane. The
 * subcommands differ only in which blocks they run and what they report.
 *
 * Time is int64_t nanoseconds of CLOCK_MONOTONIC, as inside the library.
 */
#ifndef LOOPSVC_BENCH_H
#define LOOPSVC_BENCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "loopsvc.h"

#define NS_PER_US INT64_C(1000)
#define NS_PER_MS INT64_C(1000000)
#define NS_PER_SEC INT64_C(1000000000)

/* Which loopsvc sleep modes to measure (--mode). */
enum { MODE_CONDVAR = 1, MODE_PRECISE = 2 };

/* The command line; 0 or -1 in a field means "the subcommand's default". */
struct bench_opts {
    int64_t interval_ns;  /* --interval-us; 0 = default */
    uint64_t loops;       /* --loops, or --duration over the interval; 0 = default */
    double duration_s;    /* --duration; 0 = not given */
    int services;         /* --services; 0 = default */
    int prio;             /* --prio; 0 = SCHED_OTHER */
    int cpu;              /* --cpu; -1 = not pinned */
    long slack_ns;        /* --slack-ns; -1 = each impl's default */
    unsigned modes;       /* --mode: MODE_* bits */
    int load;             /* --load */
    int blocks;           /* --blocks; 0 = default */
    int64_t raw_work_ns;  /* --raw-work-ns; 0 = none */
    bool quick;
    bool json;
    const char *svg;      /* --svg FILE, or NULL */
};

/* Wake-ups of one timer instance. Tick 0 is the warm-up and is dropped;
 * tick k (k >= 1) is stored at late[k - 1]. */
struct lane {
    int64_t *late;
    size_t cap, n;
    int64_t first_due, last_due;     /* of the first and last stored tick */
    int64_t first_start, last_start;
    /* Consecutive starts closer than close_ns: under the default missed
     * run rule, none may be (interval minus its tolerance). */
    int64_t close_ns, prev_start, min_gap;
    uint64_t close;
    /* run_block_cpu: the waking thread's CPU time from one wake to the
     * next (lane_put_cpu), cpu_n of them; NULL otherwise. */
    int64_t *cpu, prev_cpu;
    size_t cpu_n;
};

/* Variants of one runner, chosen by the impl table. */
enum { VAR_PRECISE = 1, VAR_REBASE = 2, VAR_BURST = 4, VAR_LEASE_PG = 8,
       VAR_LEASE_REDIS = 16, VAR_STALL = 32, VAR_NO_HIST = 64, VAR_OBSERVED = 128,
       VAR_WORK = 256 };

/* One block: what every runner is given. */
struct block_spec {
    int64_t interval_ns;
    size_t ticks;       /* measured wakes per instance, after the warm-up */
    size_t instances;
    int prio, cpu;
    long slack_ns;      /* -1 = the impl's default */
    int variant;        /* VAR_* bits */
    int64_t work_ns;    /* VAR_WORK: CPU time spent after each wake */
    /* Wake-ups run but not measured, both after the warm-up tick and
     * after the last measured one (ours_run and nanosleep_run; scale
     * sets it), so that no measured wake-up of many instances overlaps
     * the start or the end of the others: their thread creations and
     * exits are not the steady state. */
    size_t settle;
    /* When not NULL: counted once every instance has started (ours_run,
     * run_threads), so that a sampler can wait for the steady state. */
    struct latch *started;
};

/* What a block reports besides its samples. */
struct block_info {
    long slack_ns;      /* timer slack in force in the waiting thread(s) */
    int64_t start_ns;   /* time taken to start every instance */
    struct lane first;  /* the first instance's lane, without its samples */
    char note[160];     /* a remark for the table, or empty */
    /* ours: runs in the first instance's duration histogram, and calls of
     * the run observer (VAR_OBSERVED) during the block. */
    uint64_t histogram_runs, observer_calls;
};

/* The lane's tick of wake-up `wake` (0 first) of a runner that honours
 * spec->settle: 0, the warm-up, for the settling wake-ups at the start,
 * and past the lane's capacity for those at the end, so that lane_put
 * drops both. */
size_t settled_tick(const struct block_spec *spec, size_t wake);

/* Runs one block into lanes[0 .. spec->instances - 1], each with cap >=
 * spec->ticks. Returns 0 or an errno value. */
typedef int (*impl_run_fn)(const struct block_spec *spec, struct lane *lanes,
                           struct block_info *info);

struct impl {
    const char *name;
    impl_run_fn run;
    int variant;
};

/* Summary of one set of samples. */
struct summary {
    size_t samples;
    int64_t min, mean, p50, p90, p99, p999, max;
};

/* What one impl showed in one bench; the optional figures are flagged. */
enum { HAS_CPU = 1, HAS_START = 2, HAS_DRIFT = 4 };
struct result {
    const char *impl;
    int services;
    long slack_ns;
    struct summary lat;
    unsigned has;
    double cpu_ns_per_wake;           /* HAS_CPU */
    int64_t start_ns;                 /* HAS_START */
    uint64_t loops;                   /* HAS_DRIFT */
    double period_error_ppm;          /* from scheduled starts */
    double period_error_measured_ppm; /* from actual starts */
    int64_t final_lateness_ns;
    uint64_t late_over_interval;      /* wakes later than one interval */
    int64_t min_gap_ns;               /* closest two consecutive starts */
    uint64_t close_starts;            /* starts closer than lane.close_ns */
};

/* A growing pool of lateness samples for one impl, across blocks. */
struct pool {
    int64_t *v;
    size_t n, cap;
};

/* --- time ------------------------------------------------------------ */

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static inline int64_t ts_to_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * NS_PER_SEC + ts->tv_nsec;
}

/* A random 0..2 ms from the xorshift64 state *rng (never 0): what the stop
 * and wake benches wait before each sample, so that no phase repeats. */
static inline struct timespec random_delay(uint64_t *rng)
{
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    struct timespec d = { .tv_sec = 0,
                          .tv_nsec = (long)(*rng % (2 * NS_PER_MS)) };
    return d;
}

static inline struct timespec ns_to_ts(int64_t ns)
{
    struct timespec ts = { .tv_sec = (time_t)(ns / NS_PER_SEC),
                           .tv_nsec = (long)(ns % NS_PER_SEC) };
    return ts;
}

/* --- block.c: lanes, pools and the one way to run a block ------------- */
void lane_put(struct lane *l, size_t tick, int64_t due, int64_t start);
uint64_t wakes_total(void);
int pool_add(struct pool *p, const int64_t *v, size_t n);
void pool_free(struct pool *p);
int run_block(const struct impl *impl, const struct block_spec *spec,
              struct pool *pool, struct block_info *info);
int run_block_cpu(const struct impl *impl, const struct block_spec *spec,
                  struct pool *pool, struct pool *cpu, struct block_info *info);
void lane_put_cpu(struct lane *l, size_t tick);
int64_t block_deadline(const struct block_spec *spec);
uint64_t opt_loops(const struct bench_opts *o, int64_t interval_ns,
                   uint64_t normal, uint64_t quick);
int opt_blocks(const struct bench_opts *o, int normal, int quick, uint64_t loops);
struct block_spec spec_from(const struct bench_opts *o, int64_t interval_ns,
                            size_t ticks, size_t instances, int variant);

/* --- ours.c: the library under test ----------------------------------- */
int ours_run(const struct block_spec *spec, struct lane *lanes,
             struct block_info *info);
lsvc_options ours_options(const struct block_spec *spec);
lsvc_class *classes_numbered(const lsvc_class *cls, size_t n);
void ours_logs_quiet(void);
void ours_logs_report(const char *bench);

/* --- baselines.c: the raw loops and the peers ------------------------- */
int nanosleep_run(const struct block_spec *spec, struct lane *lanes,
                  struct block_info *info);
int timerfd_run(const struct block_spec *spec, struct lane *lanes,
                struct block_info *info);
int posix_timer_run(const struct block_spec *spec, struct lane *lanes,
                    struct block_info *info);
int libuv_run(const struct block_spec *spec, struct lane *lanes,
              struct block_info *info);
int cyclictest_run(const struct block_spec *spec, struct lane *lanes,
                   struct block_info *info);
bool libuv_usable(int64_t interval_ns, const char **why);
bool posix_timer_usable(const char **why);
bool cyclictest_found(void);

/* --- threads.c: measured threads, load, watchdog ---------------------- */
int thread_attr_for(pthread_attr_t *attr, int prio, int cpu);
int thread_spawn(pthread_t *t, const struct block_spec *spec,
                 void *(*fn)(void *), void *arg);
/* A count that threads raise and another waits for, with a deadline on
 * CLOCK_MONOTONIC: every wait of the bench is bounded. */
struct latch {
    pthread_mutex_t lock; /* protects count */
    pthread_cond_t cond;
    size_t count;
};
void latch_init(struct latch *l);
void latch_destroy(struct latch *l);
void latch_add(struct latch *l);
int latch_wait(struct latch *l, size_t count, int64_t deadline_ns);
long slack_apply(long slack_ns);
long slack_current(void);
int check_sched(const struct bench_opts *o);
int load_start(int count);
void load_stop(void);
int64_t load_cpu_ns(void);
int64_t process_cpu_ns(void);
int child_run(const char *path, char *const argv[], long slack_ns, int64_t deadline_ns,
              char **out, bool *timed_out);
void watchdog_arm(const char *what, double seconds);
int interrupt_start(void);
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* --- report.c: figures, tables, JSON, SVG ----------------------------- */
void summarize(int64_t *v, size_t n, struct summary *out);
int64_t median(int64_t *v, size_t n);
void result_from_pool(struct result *r, const char *impl, int services,
                      long slack_ns, struct pool *p);
void print_title(const char *bench, const struct bench_opts *o,
                 int64_t interval_ns, const char *what);
void print_slack_note(const struct bench_opts *o);
void print_results(const struct result *r, size_t count, unsigned has);
void print_ratios(const struct result *r, size_t count);
void print_costs(const struct result *r, size_t count, const char *what);
void json_begin(const char *bench, const struct bench_opts *o,
                int64_t interval_ns, int services);
void json_results(const struct result *r, size_t count);
void json_ratios(const struct result *r, size_t count, bool by_services);
void json_costs(const struct result *r, size_t count);
void json_end(void);
int svg_write(const char *path, const char *title, const struct result *r,
              struct pool *const *pools, size_t count);
/* A plot area in SVG units and the decades of log10 it spans. */
struct svg_frame {
    double l, r, t, b;
    double xlo, xhi, ylo, yhi;
    bool minor;         /* lighter lines at 2 to 9 of each decade of y */
};
double svg_fx(const struct svg_frame *fr, double log_x);
double svg_fy(const struct svg_frame *fr, double log_y);
void svg_axes(FILE *f, const struct svg_frame *fr, const char *xlabel, const char *ylabel);
const char *svg_colour(size_t i);
FILE *svg_open(const char *path, int width, int height, const char *title, double title_x);
int svg_close(FILE *f, const char *path);

/* --- plot.c: log-log line plots in panels ------------------------------- */
#define PLOT_SERIES 2
struct plot_panel {
    const char *title, *unit;     /* unit: "ms", for the axis and the tooltips */
    const double *y[PLOT_SERIES]; /* y[s][i] at x[i]; NaN or <= 0: no point */
};
int plot_panels(const char *path, const char *title, const char *xlabel,
                const double *x, size_t nx, const struct plot_panel *panels,
                size_t npanels, const char *const *series); /* NULL-ended */

/* --- groups.c: N idle threads, started and stopped by SIGTERM ---------- */
/* Ours: N idle services made from one options, in one lsvc_group or
 * each on its own (grouped false: started with lsvc_start). */
struct idle_member;
struct ours_group {
    lsvc_group *g;
    lsvc **svcs;
    lsvc_class *classes;
    struct idle_member *members;
    size_t n, made;
    struct latch ran;     /* members that ran since the last start */
};
int ours_group_make(struct ours_group *og, size_t n, const lsvc_options *opts,
                    bool grouped);
int ours_group_start(struct ours_group *og, int64_t *start_ns);
int ours_group_sigterm(struct ours_group *og, int64_t *stop_ns);
void ours_group_end(struct ours_group *og);
void ours_group_free(struct ours_group *og);
int ours_group_once(size_t n, const lsvc_options *opts, int64_t *start_ns,
                    int64_t *stop_ns);
/* Raw: N threads with the system's default attributes, each waiting in
 * sem_clockwait on a 1 s period until its semaphore is posted. */
struct raw_member;
struct raw_group {
    pthread_t *threads;
    struct raw_member *members;
    size_t n, made;
    struct latch ready;   /* threads that began */
    pthread_t stopper;    /* with sigterm: the sigwait thread that ends them */
    bool has_stopper;
    int64_t ended_ns;     /* when the last thread was joined */
};
int raw_group_start(struct raw_group *rg, size_t n, bool sigterm, int64_t *start_ns);
int64_t raw_group_end(struct raw_group *rg);
int raw_group_once(size_t n, int64_t *start_ns, int64_t *stop_ns);
/* What scale's groups run: 1 s, the library's defaults. */
lsvc_options idle_options(void);

/* --- limits.c: what the system allows, and what this process holds ----- */
enum { LIM_THREADS_MAX, LIM_PID_MAX, LIM_NPROC, LIM_PIDS_CGROUP, LIM_MAP_COUNT,
       LIM_AS, LIM_COMMIT, LIM_COUNT };
struct sys_limits {
    long long value[LIM_COUNT]; /* the limit; -1: none, or not known */
    long long room[LIM_COUNT];  /* about how many more threads it allows; -1: no bound */
    size_t stack_size;          /* a new thread's default stack */
    int overcommit;             /* vm.overcommit_memory */
    int threads;                /* of this process, when read */
};
void limits_read(struct sys_limits *l);
long long limits_room(const struct sys_limits *l, int *which);
bool limits_allow(const struct sys_limits *l, size_t threads, char *why, size_t len);
void limits_print(const struct sys_limits *l);
void limits_json(const struct sys_limits *l);
void limits_blame(int err, const char *what);
int proc_count_entries(const char *path);
int proc_threads(void);
int proc_fds(void);
long statm_resident_pages(void);

/* --- the subcommands -------------------------------------------------- */
int bench_jitter(const struct bench_opts *o);
int bench_stop(const struct bench_opts *o);
int bench_scale(const struct bench_opts *o);
/* scale_10k.c: the 10,000-service check of scale */
struct check_10k;
int check_10k_run(const struct bench_opts *o, struct check_10k **out);
void check_10k_print(const struct check_10k *c, bool json);
void check_10k_free(struct check_10k *c);
int rss_per_service(const char *cmd, size_t n, int64_t *out);
int bench_drift(const struct bench_opts *o);
int bench_wake(const struct bench_opts *o);
int bench_observe(const struct bench_opts *o);
int rss_probe(const struct bench_opts *o, const char *cmd);
int bench_soak(const struct bench_opts *o);
int bench_lease(const struct bench_opts *o);
int bench_lease_scale(const struct bench_opts *o);
/* lease-scale: forks its replica processes; call before any thread. */
int lease_scale_fork(const struct bench_opts *o);

/* --- lease.c: a lease for a service of ours_run, by variant ------------ */
int bench_lease_attach(int variant, lsvc_options *opts, void **lease);
void bench_lease_free(int variant, void *lease);

/* The impl table: every timer the bench knows, by the names of the
 * JSON schema. */
/* IMPL_NANOSLEEP_B is the raw loop again under another name: its ratio
 * over IMPL_NANOSLEEP in the same run is the run's noise floor.
 * IMPL_NANOSLEEP_WORK is the raw loop spending spec->work_ns of CPU after
 * each wake (scale --raw-work-ns): what that much more CPU per wake does
 * to a loop that is otherwise the raw one. */
extern const struct impl IMPL_CONDVAR, IMPL_PRECISE, IMPL_BURST, IMPL_NANOSLEEP,
    IMPL_NANOSLEEP_B, IMPL_NANOSLEEP_WORK, IMPL_REBASE, IMPL_TIMERFD, IMPL_POSIX_TIMER, IMPL_LIBUV, IMPL_CYCLICTEST,
    IMPL_LEASE_PG, IMPL_LEASE_REDIS, IMPL_STALLED, IMPL_NOHIST, IMPL_HIST,
    IMPL_OBSERVED;

/* The library's tolerance under LSVC_MISSED_DELAY (loopsvc.h): two run
 * starts are never closer than the interval minus this. */
static inline int64_t delay_tolerance_ns(int64_t interval_ns)
{
    return interval_ns / 2 < 5 * NS_PER_MS ? interval_ns / 2 : 5 * NS_PER_MS;
}

#endif /* LOOPSVC_BENCH_H */
