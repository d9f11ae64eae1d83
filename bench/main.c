/*
 * loopsvc-bench: the command line, and which subcommand runs.
 *
 * Signals come first: the stop bench sends SIGTERM to this process, and
 * the library's rule is that every thread must block it, so the mask is
 * set before any thread exists and every later thread inherits it.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* In parts: ISO C caps a string literal at 4095 bytes. */
static const char *const usage[] = {
"Usage: loopsvc-bench SUBCOMMAND [OPTIONS]\n"
"\n"
"Measures loopsvc services next to baselines measured in the same run. Every\n"
"figure is a distribution or a ratio over a baseline, never one absolute time.\n"
"\n"
"Subcommands:\n"
"  jitter  Wake-up lateness of K services at interval I. A wake's lateness is\n"
"          CLOCK_MONOTONIC read first thing in run_once minus the scheduled\n"
"          start (lsvc_scheduled_start); for a baseline, now minus the absolute\n"
"          time that tick was due. Impls run in alternating blocks (A B A B) so\n"
"          that machine drift hits all alike; the first wake of each block is a\n"
"          warm-up and is dropped. Defaults: 1000 us, 2000 wakes per impl in\n"
"          10 blocks, 1 service (--quick: 500 wakes, 5 blocks).\n"
"  stop    lsvc_stop(svc, true) on a service sleeping on a 3600 s interval,\n"
"          called after its first run and a random 0..2 ms: 1000 samples\n"
"          (--quick: 200). Then groups of 1, 10, 100, 1000 services with the\n"
"          default signals: time for lsvc_group_start, and from\n"
"          kill(getpid(), SIGTERM) until lsvc_group_wait returns (median of 5;\n"
"          --quick: 3). Condvar mode unless --mode precise (100 samples).\n"
"  scale   N = 1, 10, 100, 1000, 10000 services next to N raw threads.\n"
"          Lateness, CPU time per wake (getrusage user+sys over a window of\n"
"          each block in which all N run, less the --load threads) and start\n"
"          time, next to N raw clock_nanosleep threads: interval 10 ms, 100\n"
"          wakes each x 2 alternating blocks (--quick: 50 x 1); N = 10000 at\n"
"          100 ms (above 1000, the interval is at least N x 10 us), 30 wakes\n"
"          (--quick: 10), measured between 2 + N x 25 us / interval\n"
"          unmeasured wakes at each end, so that none meets the start or the\n"
"          exit of other threads. The raw loop runs twice, as\n"
"          clock_nanosleep and clock_nanosleep-b: the second's ratios over\n"
"          the first are the run's noise floor, printed next to the targets\n"
"          of the default options (p50 <= 1.05x and p99 <= 1.2x for N <=\n"
"          1000 at 10 ms, CPU per wake <= 1.2x at N = 1000), each met or\n"
"          MISSED.\n"
"          Then, per N, one lsvc_group of N idle services (1 s,\n"
"          default options) next to N raw threads in sem_clockwait (1 s,\n"
"          default stack): start (lsvc_group_start; pthread_create of all N)\n"
"          and stop, from kill(getpid(), SIGTERM) until lsvc_group_wait\n"
"          returns or a sigwait thread has joined the last thread (median of\n"
"          3; --quick: 1), and RSS per idle service or thread (statm, fresh\n"
"          process). The system's limits on threads (threads-max, pid_max,\n"
"          RLIMIT_NPROC, cgroup pids.max, vm.max_map_count, RLIMIT_AS, the\n"
"          commit limit) are printed, and an N they would not allow is\n"
"          skipped. With N = 10000: the 10,000-service check, one group of\n"
"          10000 (targets: start <= 1000 ms, SIGTERM stop <= 500 ms, RSS <=\n"
"          16 KiB per service), threads and descriptors before and after,\n"
"          and 10 cycles (--quick: 2) of start and stop of the same group,\n"
"          to show whether threads, descriptors or RSS (> 1 MiB) are left.\n"
"  drift   One timer at 1000 us for 2000 wakes (--quick: 1000): period error\n"
"          in ppm from scheduled and from actual starts, and final lateness\n"
"          against the grid t0 + k*I, and how many wakes came more than I\n"
"          late (each moves the grid under LSVC_MISSED_DELAY, the default).\n"
"          Ours at L and 2L, also as loopsvc-burst (LSVC_MISSED_BURST, which\n"
"          keeps the grid) and as loopsvc-stalled (late wakes injected);\n"
"          clock_nanosleep, rebase-on-start (next = actual start + I) and\n"
"          libuv at L.\n"
"  wake    lsvc_wake(svc) on a sleeping LSVC_NEVER service, after a random\n"
"          0..2 ms: from the call to run_once entered, 2000 samples in 10\n"
"          alternating blocks (--quick: 200), next to raw-cond-signal, a\n"
"          thread in pthread_cond_timedwait signalled under its mutex.\n",
"  observe One service at 1000 us three ways, 10000 wakes each (--quick:\n"
"          1000) in alternating blocks of 40: loopsvc-nohist\n"
"          (lsvc_options.no_histograms, no run observer: the baseline),\n"
"          loopsvc (the default: its histograms updated on every run) and\n"
"          loopsvc-observed (the histograms and a run observer that only\n"
"          records). CPU per wake (the median of the service thread's CPU\n"
"          time from one run_once to the next, CLOCK_THREAD_CPUTIME_ID) and\n"
"          lateness, each over the baseline's; the target is <= 1.05x CPU\n"
"          per wake.\n"
"  all     jitter, stop, scale, drift, wake and observe in turn (about\n"
"          130 s; with --quick about 40 s). With --json: JSON Lines, one\n"
"          object per subcommand in that order.\n"
"  soak    --services N (default 100) services at --interval-us (default\n"
"          1000) for --duration S (default 600; --quick: 10) seconds in a\n"
"          group: RSS after the start and at the end, runs against due\n"
"          points (missed), overruns, max lateness, and descriptors and\n"
"          threads before, while running and after. Not part of all.\n"
"  lease   One service at --interval-us (default 10000) without a lease, with\n"
"          one held in PostgreSQL (LOOPSVC_BENCH_PG, a libpq conninfo) and\n"
"          one in Redis (LOOPSVC_BENCH_REDIS, an address), in alternating\n"
"          blocks, 1000 runs each (--quick: 200): lateness at run_once,\n"
"          which includes the lease's round trip, and the cost as ratios\n"
"          and added microseconds. A backend not built or not configured is\n"
"          left out. Not part of all.\n",
"  lease-scale  --services N (default 1000; --quick: 100) leased services\n"
"          at --interval-us (default 1 s) on each of 3 replicas, per store\n"
"          (LOOPSVC_BENCH_PG, a conninfo, key=value or URI, to which the\n"
"          bench adds application_name; LOOPSVC_BENCH_REDIS, host:port for\n"
"          per-replica counts): replica 1, a child process, takes the leases;\n"
"          replicas 2 and 3 are lease objects in this process. Over a window\n"
"          of --loops intervals (default 20; --quick: 3) or --duration S:\n"
"          server connections per replica, round trips per second at the\n"
"          store, and lateness in replica 1 (run start - due) of its N leased\n"
"          services next to N without a lease, at once; then kill -9 of\n"
"          replica 1 and each service's time to its first run in replica 2\n"
"          or 3, in intervals. About 40 s per store (Redis: plus its\n"
"          TTL). Not part of all.\n"
"  rss-probe[-raw|-group]  internal, for scale: prints the resident bytes\n"
"          per idle service of --services N services (-raw: raw threads;\n"
"          -group: services of one group) started in this fresh process.\n"
"\n",
"Options (all subcommands):\n"
"  --interval-us N   interval in microseconds (default per subcommand)\n"
"  --loops N         wakes per impl (jitter, drift, observe), per instance and\n"
"                    block (scale), samples (stop)\n"
"  --duration S      instead of --loops: S seconds' worth of wakes\n"
"  --services N      services per impl (jitter, observe; default 1); only N\n"
"                    (scale, and stop's groups)\n"
"  --blocks N        alternating blocks per impl (jitter, scale, observe)\n"
"  --prio N          SCHED_FIFO priority 1..99 for every measured thread\n"
"                    (lsvc_options.sched_priority, pthread attrs for baselines,\n"
"                    cyclictest -p); exits 2 if not permitted\n"
"  --cpu N           pin every measured thread to CPU N (lsvc_options.cpu_mask,\n"
"                    pthread affinity, cyclictest -a)\n"
"  --slack-ns N      timer slack (N >= 1) for every impl (lsvc_options.\n"
"                    timer_slack_ns, PR_SET_TIMERSLACK); without it loopsvc\n"
"                    uses its automatic slack and baselines the system's\n"
"  --mode M          condvar, precise or both (default both; stop: condvar)\n"
"  --load N          N busy-looping threads during the measurement\n"
"  --raw-work-ns N   scale: also clock_nanosleep+work, the raw loop spending\n"
"                    N ns of CPU after each wake (1..1000000), to show what\n"
"                    that much more CPU per wake does to lateness\n"
"  --quick           smaller runs, a few seconds per subcommand\n"
"  --json            one JSON object per subcommand on stdout, nothing else\n"
"  --svg FILE        write an SVG: jitter, a log-log latency histogram;\n"
"                    scale, log-log start, stop, CPU per wake and RSS per\n"
"                    service against N, ours next to raw threads\n"
"  --help            this text\n"
"\n",
"Impls: loopsvc-condvar, loopsvc-precise (ours, by lsvc_options.precise);\n"
"clock_nanosleep (raw TIMER_ABSTIME loop: the kernel's limit for a thread);\n"
"cyclictest (rt-tests, if on PATH: -v -N samples, run as one block); timerfd;\n"
"posix_timer (SIGEV_THREAD); libuv (repeating uv_timer, if built with libuv;\n"
"measured against the due time libuv set for each tick); rebase-on-start,\n"
"loopsvc-burst and loopsvc-stalled (drift only); loopsvc-nohist, loopsvc and\n"
"loopsvc-observed (observe only).\n"
"Expiries of timerfd and posix_timer are not subject to timer slack; sleeping\n"
"calls (ours, clock_nanosleep, libuv's epoll_wait) are.\n"
"\n",
"JSON (one line per subcommand; times in ns):\n"
"  {\"bench\", \"interval_ns\", \"services\", \"prio\", \"load\", \"cpu\", \"quick\",\n"
"   \"results\": [{\"impl\", \"services\", \"slack_ns\", \"samples\", \"min_ns\",\n"
"                \"mean_ns\", \"p50_ns\", \"p90_ns\", \"p99_ns\", \"p999_ns\",\n"
"                \"max_ns\", ...}],\n"
"   \"ratios\": {\"loopsvc-condvar\": {\"p50\", \"p99\"}, ...}, ...}\n"
"  ratios are ours over clock_nanosleep measured in the same run.\n"
"  stop:  results hold the stop durations; \"stop_p50_ns\", \"stop_p99_ns\",\n"
"         \"group_stop_ns\" and \"start_ns\" keyed by group size, \"group_reps\".\n"
"  scale: each result also has \"cpu_ns_per_wake\" (null: no window in\n"
"         which all N ran) and \"start_ns\"; ratios are keyed by N ({\"p50\",\n"
"         \"p99\", \"cpu\"}); \"start_ns\" and \"cpu_ns_per_wake\" keyed by impl\n"
"         then N; \"rss_bytes_per_service\" (ours) keyed by N; \"group_reps\";\n"
"         \"sweep\" keyed by N: \"interval_ns\", \"wakes\", and \"ours\" and\n"
"         \"raw\", each {\"impl\", \"group_start_ns\", \"group_stop_ns\",\n"
"         \"rss_bytes_per_service\", \"cpu_impl\", \"cpu_ns_per_wake\"};\n"
"         \"skipped\" (N: why); \"limits\" (each null when unlimited or not\n"
"         known, \"stack_size\", \"overcommit_memory\", \"room_threads\",\n"
"         \"tightest\");\n"
"         \"group_10k\" (null without N = 10000): \"start_ns\", \"stop_ns\",\n"
"         \"rss_bytes_per_service\", threads and fds before, running and\n"
"         after, \"cycles\" [{\"start_ns\", \"stop_ns\", \"threads\", \"fds\",\n"
"         \"rss_bytes\"}], \"rss_growth_bytes\", \"targets\" and \"met\"\n"
"         {\"start\", \"stop\", \"rss\", \"no_leak\"}; \"targets_met\" keyed by\n"
"         N <= 1000: {\"p50\", \"p99\", \"cpu\"}, booleans (cpu: null but at\n"
"         N = 1000).\n"
"  drift: each result also has \"loops\", \"period_error_ppm\",\n"
"         \"period_error_measured_ppm\", \"final_lateness_ns\",\n"
"         \"wakes_late_over_interval\", \"min_gap_ns\" (closest two starts),\n"
"         \"close_starts\" (starts closer than the interval minus the\n"
"         default rule's tolerance, min(interval / 2, 5 ms)).\n"
"  observe: each result also has \"cpu_ns_per_wake\" (a median, as above);\n"
"         ratios are over loopsvc-nohist ({\"p50\", \"p99\", \"cpu\"}), with\n"
"         \"baseline\", \"target_cpu_ratio\", \"target_met\" and\n"
"         \"observer_calls\".\n"
"  lease-scale: each result also has \"store\" (pg, redis): loopsvc-condvar\n"
"         and loopsvc+<store> per store; ratios keyed by loopsvc+<store>,\n"
"         over that store's loopsvc-condvar; \"window_ns\", \"stack_size\", and\n"
"         \"stores\" keyed by store: \"connections\" {\"r1\", \"r2\", \"r3\"}\n"
"         (null: not told apart), \"connections_other\", \"round_trips_per_s\"\n"
"         and \"commands_per_s\" (redis), each also _replica1_alone and\n"
"         _before, \"standby_skips_per_s\",\n"
"         \"runs_elsewhere\", \"ttl_ns\", \"held\", \"handover\" {\"p50_ns\",\n"
"         \"max_ns\", \"p50_intervals\", \"max_intervals\", \"target_intervals\",\n"
"         \"target_met\", ...}, and for pg \"lateness_target_met\".\n"
"  Every result has \"slack_ns\": the timer slack its waiting thread had.\n"
"\n"
"Exit status: 0 success, 1 a measurement failed, 2 bad usage or --prio not\n"
"permitted, 130 interrupted (SIGINT). SIGINT and SIGTERM are blocked in every\n"
"thread, as the library asks; SIGTERM is the stop bench's, sent to itself.\n",
};

static long parse_long(const char *opt, const char *arg, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);

    if (errno != 0 || end == arg || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "loopsvc-bench: %s wants a whole number from %ld to %ld, "
                "not '%s'\n", opt, lo, hi, arg);
        exit(2);
    }
    return v;
}

static int parse_args(int argc, char **argv, struct bench_opts *o, const char **cmd)
{
    enum { O_INTERVAL = 256, O_LOOPS, O_DURATION, O_SERVICES, O_PRIO, O_CPU,
           O_SLACK, O_MODE, O_LOAD, O_QUICK, O_JSON, O_SVG, O_BLOCKS, O_WORK, O_HELP };
    static const struct option longopts[] = {
        { "interval-us", required_argument, NULL, O_INTERVAL },
        { "loops", required_argument, NULL, O_LOOPS },
        { "duration", required_argument, NULL, O_DURATION },
        { "services", required_argument, NULL, O_SERVICES },
        { "blocks", required_argument, NULL, O_BLOCKS },
        { "prio", required_argument, NULL, O_PRIO },
        { "cpu", required_argument, NULL, O_CPU },
        { "slack-ns", required_argument, NULL, O_SLACK },
        { "mode", required_argument, NULL, O_MODE },
        { "load", required_argument, NULL, O_LOAD },
        { "quick", no_argument, NULL, O_QUICK },
        { "json", no_argument, NULL, O_JSON },
        { "svg", required_argument, NULL, O_SVG },
        { "raw-work-ns", required_argument, NULL, O_WORK },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int c;

    memset(o, 0, sizeof *o);
    o->cpu = -1;
    o->slack_ns = -1;
    o->modes = MODE_CONDVAR | MODE_PRECISE;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_INTERVAL:
            o->interval_ns = parse_long("--interval-us", optarg, 1, 3600L * 1000000) * NS_PER_US;
            break;
        case O_LOOPS:
            o->loops = (uint64_t)parse_long("--loops", optarg, 1, 100000000);
            break;
        case O_DURATION: {
            char *end;
            o->duration_s = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(o->duration_s > 0 && o->duration_s < 1e6)) {
                fprintf(stderr, "loopsvc-bench: --duration wants seconds > 0, not '%s'\n", optarg);
                return 2;
            }
            break;
        }
        case O_SERVICES:
            o->services = (int)parse_long("--services", optarg, 1, 10000);
            break;
        case O_BLOCKS:
            o->blocks = (int)parse_long("--blocks", optarg, 1, 1000);
            break;
        case O_PRIO:
            o->prio = (int)parse_long("--prio", optarg, 1, 99);
            break;
        case O_CPU:
            o->cpu = (int)parse_long("--cpu", optarg, 0, (ncpu > 0 ? ncpu : 64) - 1);
            break;
        case O_SLACK:
            o->slack_ns = parse_long("--slack-ns", optarg, 1, 1000000000);
            break;
        case O_MODE:
            if (strcmp(optarg, "condvar") == 0)
                o->modes = MODE_CONDVAR;
            else if (strcmp(optarg, "precise") == 0)
                o->modes = MODE_PRECISE;
            else if (strcmp(optarg, "both") == 0)
                o->modes = MODE_CONDVAR | MODE_PRECISE;
            else {
                fprintf(stderr, "loopsvc-bench: --mode is condvar, precise or both\n");
                return 2;
            }
            break;
        case O_LOAD:
            o->load = (int)parse_long("--load", optarg, 0, 256);
            break;
        case O_QUICK:
            o->quick = true;
            break;
        case O_JSON:
            o->json = true;
            break;
        case O_SVG:
            o->svg = optarg;
            break;
        case O_WORK:
            o->raw_work_ns = parse_long("--raw-work-ns", optarg, 1, 1000000);
            break;
        case O_HELP:
        case 'h':
            for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++)
                fputs(usage[i], stdout);
            exit(0);
        default:
            fputs("Try 'loopsvc-bench --help'.\n", stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "loopsvc-bench: %s\nTry 'loopsvc-bench --help'.\n",
                optind >= argc ? "which subcommand? jitter, stop, scale, drift, wake, "
                                 "observe or all"
                               : "one subcommand at a time");
        return 2;
    }
    *cmd = argv[optind];
    return 0;
}

static const struct {
    const char *name;
    int (*run)(const struct bench_opts *o);
} commands[] = {
    { "jitter", bench_jitter },
    { "stop", bench_stop },
    { "scale", bench_scale },
    { "drift", bench_drift },
    { "wake", bench_wake },
    { "observe", bench_observe },
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static int run_one(size_t i, const struct bench_opts *o)
{
    int rc = commands[i].run(o);

    fflush(stdout);
    ours_logs_report(commands[i].name);
    return rc;
}

static int run_all(const struct bench_opts *o)
{
    int rc = 0;

    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (i > 0 && !o->json)
            putchar('\n');
        if (run_one(i, o) != 0)
            rc = 1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    const char *cmd = NULL;
    size_t which = NCOMMANDS;
    int rc = lsvc_block_signals();

    if (rc != 0) {
        fprintf(stderr, "loopsvc-bench: cannot block SIGINT/SIGTERM: %s\n", strerror(rc));
        return 1;
    }
    if ((rc = parse_args(argc, argv, &o, &cmd)) != 0)
        return rc;
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(cmd, commands[i].name) == 0)
            which = i;
    /* Before the bench's own logger: the probe measures a service as a
     * server runs it, with the library's default logging. */
    if (strncmp(cmd, "rss-probe", 9) == 0)
        return rss_probe(&o, cmd);
    if (which == NCOMMANDS && strcmp(cmd, "all") != 0 && strcmp(cmd, "soak") != 0 &&
        strcmp(cmd, "lease") != 0 && strcmp(cmd, "lease-scale") != 0) {
        fprintf(stderr, "loopsvc-bench: no subcommand '%s'; try --help\n", cmd);
        return 2;
    }
    /* Its replica processes are forked before this process has a thread. */
    if (strcmp(cmd, "lease-scale") == 0 && (rc = lease_scale_fork(&o)) != 0) {
        fprintf(stderr, "loopsvc-bench: cannot fork the replicas: %s\n", strerror(rc));
        return 1;
    }
    ours_logs_quiet();
    if ((rc = interrupt_start()) != 0) {
        fprintf(stderr, "loopsvc-bench: cannot start a thread: %s\n", strerror(rc));
        return 1;
    }
    if (check_sched(&o) != 0)
        return 2;
    if (o.load > 0 && (rc = load_start(o.load)) != 0) {
        fprintf(stderr, "loopsvc-bench: cannot start --load threads: %s\n", strerror(rc));
        return 1;
    }
    if (strcmp(cmd, "soak") == 0)
        rc = bench_soak(&o);
    else if (strcmp(cmd, "lease") == 0)
        rc = bench_lease(&o);
    else if (strcmp(cmd, "lease-scale") == 0)
        rc = bench_lease_scale(&o);
    else
        rc = which < NCOMMANDS ? run_one(which, &o) : run_all(&o);
    load_stop();
    return rc;
}
