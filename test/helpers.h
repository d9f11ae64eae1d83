/*
 * Shared pieces of the Check suites: a clock, a log capture sink, a probe
 * service that records what the library did to it, and the suite runner.
 *
 * Every test runs in its own forked child (Check's fork mode), so the
 * global state kept here starts fresh in each test.
 */
#ifndef LSVC_TEST_HELPERS_H
#define LSVC_TEST_HELPERS_H

#include "loopsvc.h"

#include <check.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S INT64_C(1000000000)

/* --- Time ----------------------------------------------------------------- */

/* CLOCK_MONOTONIC in ns, the library's clock. */
int64_t now_ns(void);
int64_t timespec_ns(const struct timespec *ts);
/* Seconds passed since a now_ns() value. */
double seconds_since(int64_t start_ns);
/* Whether text begins with prefix. */
bool starts_with(const char *text, const char *prefix);

/* Lets ns pass on the calling thread: it stands in for the work of a run,
 * or for time that must pass (due points during a pause); never used to
 * wait for an event. */
void work_for_ns(int64_t ns);

/* sem_wait with a bound; false when it passed. */
bool sem_wait_for(sem_t *sem, double seconds);

/* --- Log capture ------------------------------------------------------------ */

struct log_record {
    int level;
    char logger[64];
    char message[512];
};

/* Installs the capture sink; every later message is recorded. */
void log_capture(void);
/* The capture sink itself, for a test's own sink to pass messages on to
 * after log_capture() set up the record. */
void log_capture_sink(int level, const char *logger, const char *message,
                      void *ctx);
/* Number of records so far: a starting point for log_find and log_wait. */
size_t log_size(void);
/* Records whose level is `level` (0: any) and whose message contains
 * `text` (NULL: any). */
size_t log_count(int level, const char *text);
/* The first such record at index `from` or later; out may be NULL. */
bool log_find(size_t from, int level, const char *text,
              struct log_record *out);
/* log_find, waiting at most `seconds` for the record to arrive. */
bool log_wait(size_t from, int level, const char *text, double seconds,
              struct log_record *out);

/* --- Probe service ------------------------------------------------------- */

#define PROBE_MAX_RUNS 256
#define PROBE_MAX_EVENTS 64

/* A class whose callbacks are the probe's; arg must be a struct probe. */
#define PROBE_CLASS(NAME, SECONDS)                                          \
    {                                                                       \
        .name = (NAME), .loop_seconds = (SECONDS),                          \
        .run_once = probe_run_once, .on_start = probe_on_start,             \
        .on_stop = probe_on_stop,                                           \
    }

struct probe {
    /* Behaviour: set before lsvc_start. */
    int run_code;      /* what every run returns */
    int start_code;    /* what on_start returns */
    int64_t slow_ns;   /* how long each of the first `slow_runs` runs works */
    uint64_t slow_runs;
    /* Test-specific checks, called inside every run after any hold. */
    void (*during)(lsvc *svc, struct probe *p, uint64_t run);
    void *user;

    sem_t entered; /* posted as a run begins */
    sem_t ran;     /* posted as a run ends */
    sem_t started; /* posted by on_start */
    sem_t release; /* what a holding run waits for */

    /* Protects every field below. */
    pthread_mutex_t lock;
    bool hold; /* each run waits for a post on `release` */
    uint64_t runs;      /* runs begun */
    uint64_t completed; /* runs finished */
    /* S = on_start, R = run, T = on_stop, in the order they happened. */
    char events[PROBE_MAX_EVENTS + 1];
    pthread_t start_thread, run_thread, stop_thread;
    int sched_rc; /* lsvc_scheduled_start's result in the last run */
    int64_t sched_ns[PROBE_MAX_RUNS]; /* each run's scheduled start */
    int64_t begin_ns[PROBE_MAX_RUNS]; /* when each run began */
    int64_t end_ns[PROBE_MAX_RUNS];   /* when each run's work ended */
};

void probe_init(struct probe *p);
void probe_destroy(struct probe *p);
int probe_run_once(lsvc *svc, void *arg);
int probe_on_start(lsvc *svc, void *arg);
void probe_on_stop(lsvc *svc, void *arg);
/* Makes the probe hold each run until probe_release. */
void probe_hold(struct probe *p);
/* Lets the held run go on, and every later run too. */
void probe_release(struct probe *p);
uint64_t probe_runs(struct probe *p);
/* Waits for n more runs to end. */
bool probe_wait_runs(struct probe *p, uint64_t n, double seconds);

/* lsvc_create that must succeed. */
lsvc *make_service(const lsvc_class *cls, struct probe *p,
                   const lsvc_options *opts);

/* --- Threads and signals ------------------------------------------------- */

/* The threads of this process (Linux: /proc/self/task). */
struct threads {
    int n;
    long id[128];
};
/* Takes the snapshot after one thread was made and joined, since some
 * sanitizers start a helper thread at the first pthread_create. */
void threads_baseline(struct threads *before);
/* How many threads now alive are not in `before`. */
int threads_added(const struct threads *before);
/* Polls: an ended thread leaves /proc/self/task a little after its join
 * returns. */
bool wait_threads_back_to(const struct threads *before, double seconds);
/* Polls lsvc_is_running: the only way to see a thread end without
 * reaping it. */
bool wait_not_running(const lsvc *svc, double seconds);
/* Whether the calling thread blocks sig. */
bool signal_blocked(int sig);
/* Unblocks SIGINT and SIGTERM in the calling thread, for a known start. */
void unblock_stop_signals(void);
/* Gives SIGINT, SIGTERM and SIGUSR1 their default action (termination),
 * as in a real program, in place of the handlers Check's runner left. */
void default_signal_actions(void);
/* Leaves this process no way to make real-time threads (Linux: no
 * RLIMIT_RTPRIO, and no root, which keeps CAP_SYS_NICE). */
void drop_realtime_permission(void);

/* --- Suites ---------------------------------------------------------------- */

/* A TCase with the 60 s timeout that sanitizers need. */
TCase *timed_tcase(const char *name);
/* Runs the suite in Check's default fork mode; EXIT_SUCCESS if all pass. */
int run_suite(Suite *s);

#endif /* LSVC_TEST_HELPERS_H */
