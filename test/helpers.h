/*
 * Shared pieces of the Check suites: a clock, a log capture sink, a probe
 * service that records what the library did to it, the fixtures that
 * create, start, stop and destroy probe services and groups of them,
 * child processes, and the suite runner.
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
#include <sys/types.h>

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
/* sem_init(sem, 0, 0) of each of the n semaphores (sem_t *) that follow,
 * and sem_destroy of each. */
void sems_init(int n, ...);
void sems_destroy(int n, ...);
/* Waits for n more posts of sem, all within `seconds`. */
bool sem_wait_n(sem_t *sem, uint64_t n, double seconds);
/* Forgets earlier posts, so that the next wait counts only new ones. */
void sem_drain(sem_t *sem);
/* Stands in for the work of a run (or a slow store); never used to wait
 * for an event. */
void work_for_ns(int64_t ns);

/* --- Log capture ------------------------------------------------------------ */

struct log_record {
    int level;
    char logger[64];
    char message[512];
};

/* Installs the capture sink; every later message is recorded. */
void log_capture(void);
/* log_capture, with the level raised to LSVC_LOG_INFO (it is WARNING by
 * default): for a test that looks for the INFO lines of starts, stops,
 * signals and leases. */
void log_capture_info(void);
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
/* Adds an event of the test's own to the probe's record. */
void probe_note(struct probe *p, char event);
/* Makes the probe hold each run until probe_release. */
void probe_hold(struct probe *p);
/* Lets the held run go on, and every later run too. */
void probe_release(struct probe *p);
/* A `during` hook: the second run stops its own service, which then ends
 * by itself. */
void stop_at_second_run(lsvc *svc, struct probe *p, uint64_t run);
uint64_t probe_runs(struct probe *p);
/* Waits for n more runs to end. */
bool probe_wait_runs(struct probe *p, uint64_t n, double seconds);

/* lsvc_create that must succeed. */
lsvc *make_service(const lsvc_class *cls, struct probe *p,
                   const lsvc_options *opts);
/* lsvc_get_stats that must succeed. */
lsvc_stats stats_of(const lsvc *svc);
/* Whether the last hook that ran was on_stop. */
bool ended_with_on_stop(const char *events);

/* --- Fixtures ----------------------------------------------------------------- */

/*
 * The scaffold every test of a service needs, written once: a probe
 * service (struct fx) or a group of them (struct gfx), made by fx_new or
 * gfx_new and ended by the test's teardown (Check's checked fixture,
 * which timed_tcase installs) unless the test ends it itself. Each step
 * asserts what it must, so a test body holds only the behaviour it checks:
 *
 *     struct fx *f = fx_new("Sleeper", 60, NULL);
 *     fx_start(f, 0);
 *     ck_assert(probe_wait_runs(&f->p, 1, 5));
 *     ...                  and the teardown stops and destroys it.
 *
 * Set the probe's behaviour (hold, slow_ns, during...) before the start.
 */
struct fx {
    lsvc_class cls;
    struct probe p;
    lsvc *svc; /* NULL once ended */
};

/* Registers fn(arg) for the teardown, which runs the last one first. */
void at_teardown(void (*fn)(void *arg), void *arg);
/* The teardown: runs what was registered and forgets it. */
void run_teardowns(void);
/* Zeroed memory that must be had, freed by the teardown. */
void *test_alloc(size_t size);

/* A probe service of PROBE_CLASS(name, seconds) with opts (may be NULL),
 * created and not started; name must outlive it. The teardown ends it
 * with fx_end. */
struct fx *fx_new(const char *name, double seconds, const lsvc_options *opts);
/* The same with a class of the test's own, copied; its callbacks get
 * &f->p. */
struct fx *fx_new_class(const lsvc_class *cls, const lsvc_options *opts);
/* lsvc_start(svc, loops), which must return 0. */
void fx_start(struct fx *f, uint64_t loops);
/* Holds every run, starts the service and returns once its first run is
 * in progress (and blocked there until probe_release). */
void fx_start_held(struct fx *f);
/* fx_start(loops), then lsvc_join within 10 s: `loops` runs and the end. */
void fx_run(struct fx *f, uint64_t loops);
/* Waits at most 5 s for the next run to begin. */
void fx_wait_entered(struct fx *f);
/* lsvc_stop(svc, true), which must return 0. */
void fx_stop(struct fx *f);
/* Releases a held run and reaps the service, whose stop was requested
 * before: it must end after that run, having run on_stop. */
void fx_release_and_join(struct fx *f);
/* lsvc_destroy, which must return 0, and the probe's end. No stop: a
 * thread that ended must be reaped by the destroy itself. */
void fx_free(struct fx *f);
/* The usual end: fx_stop, then fx_free. */
void fx_end(struct fx *f);

/* Services in one group, each a struct fx. */
#define GFX_MAX 16

struct gfx {
    lsvc_group *g; /* NULL once freed */
    double limit;  /* bound of the waits below: 5 s unless the test sets it */
    int n;
    struct fx m[GFX_MAX];
};

/* An empty group; the teardown frees it (gfx_free) with its members. */
struct gfx *gfx_new(void);
/* Adds a member of PROBE_CLASS(name, seconds); returns its index. */
int gfx_add(struct gfx *g, const char *name, double seconds,
            const lsvc_options *opts);
/* Adds a member of a class of the test's own; returns its index. */
int gfx_add_class(struct gfx *g, const lsvc_class *cls,
                  const lsvc_options *opts);
/* lsvc_group_start, which must return 0. */
void gfx_start(struct gfx *g);
/* Waits at most g->limit for the first run of every member. */
void gfx_wait_first_runs(struct gfx *g);
/* lsvc_group_wait, which must return 0 within g->limit and leave no
 * member running. */
void gfx_wait(struct gfx *g);
/* lsvc_group_stop, then gfx_wait, within g->limit of the stop. */
void gfx_stop(struct gfx *g);
/* lsvc_group_destroy, then fx_free of every member. */
void gfx_free(struct gfx *g);

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
/* The set of the one signal sig. */
sigset_t signal_set_of(int sig);
/* Whether the calling thread blocks sig. */
bool signal_blocked(int sig);
/* Unblocks SIGINT and SIGTERM in the calling thread, for a known start. */
void unblock_stop_signals(void);
/* Gives SIGINT, SIGTERM and SIGUSR1 their default action (termination),
 * as in a real program, in place of the handlers Check's runner left. */
void default_signal_actions(void);
/* Ends this process by SIGALRM (its default action, unblocked) once
 * `seconds` have passed: the limit of a child process that may hang. */
void alarm_after(unsigned seconds);
/* Leaves this process no way to make real-time threads (Linux: no
 * RLIMIT_RTPRIO, and no root, which keeps CAP_SYS_NICE). */
void drop_realtime_permission(void);

/* --- Child processes ------------------------------------------------------- */

/* A program started by a test, and what it wrote to the descriptor the
 * test reads. */
struct child {
    pid_t pid;
    int fd;   /* read end of its stdout or stderr */
    bool eof;
    size_t len;
    char text[64 * 1024]; /* what it wrote so far, NUL-terminated */
};

/* Starts `path arg` (arg may be NULL) as a shell would, with no signal
 * blocked, its descriptor `out` (STDOUT_FILENO or STDERR_FILENO) sent to
 * c->fd, and killed (SIGKILL) if the test process ends first. */
void child_spawn(struct child *c, const char *path, const char *arg, int out);
/* The same with an argument vector (argv[0] the path, a NULL at its end)
 * and posix_spawn: safe while other threads run, where a fork() may leave
 * the child deadlocked before its exec under ThreadSanitizer; but the
 * child is not killed when the test process ends first. */
void child_spawn_argv(struct child *c, const char *const argv[], int out);
/* Reads the child's output until done(c->text, ctx) holds (done NULL:
 * until the end of file), for at most `seconds`; whether it held. */
bool child_read_until(struct child *c,
                      bool (*done)(const char *text, const void *ctx),
                      const void *ctx, double seconds);

/* --- Suites ---------------------------------------------------------------- */

/* A TCase with the 60 s timeout that sanitizers need, and the teardown
 * of the fixtures as its checked fixture. */
TCase *timed_tcase(const char *name);
/* Adds a timed TCase named `name` to s with the tests of a NULL-ended
 * list, and returns it (for loop tests to join them). */
TCase *add_tests(Suite *s, const char *name, const TTest *const *tests);
/* Runs the suite in Check's default fork mode; EXIT_SUCCESS if all pass. */
int run_suite(Suite *s);

#endif /* LSVC_TEST_HELPERS_H */
