/*
 * Signals under pressure: a storm of SIGTERM and SIGINT across a group's
 * start, run and stop; signals pending before the start, for the process
 * or raised in the starting thread; signals while runs are in progress; a
 * second group after a first in one process; and new threads given the
 * ids of the group's ended starter or joined signal thread.
 *
 * Each scenario runs in a child process of its own, which a real
 * kill(getpid(), ...) reaches and may terminate, so the parent checks that
 * the child survived to exit 0. SIGINT and SIGTERM have their default
 * action (termination) there, as in a real program: any thread that took
 * one by mistake would end the child.
 */
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A child that has not exited by then is taken as hung: SIGALRM's default
 * action ends it, and the parent reports the signal. */
#define CHILD_LIMIT_S 40

/* Bounds on a stop, wide for sanitizers on loaded cores. */
#define STOP_LIMIT_S 10.0

/* Runs body in a child process forked for it, with SIGALRM as its hang
 * limit, and checks that the child exited 0. A failed check inside the
 * child reports its own message through Check and exits nonzero. */
static void run_in_child(void (*body)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm_after(CHILD_LIMIT_S);
        body();
        /* The fixtures' teardown, which Check runs only in its own child. */
        run_teardowns();
        /* exit, not _exit: LeakSanitizer checks the child at exit. */
        exit(EXIT_SUCCESS);
    }
    int status = 0;
    pid_t got;
    while ((got = waitpid(pid, &status, 0)) == -1 && errno == EINTR) {
    }
    ck_assert_int_eq(got, pid);
    ck_assert_msg(!WIFSIGNALED(status), "the child was killed by signal %d (%s)",
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0,
                  WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "");
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the child exited with status %d",
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

/* Threads of this process named like the library's signal thread. */
static int signal_threads(void)
{
    DIR *dir = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue; /* the thread ended meanwhile */
        if (fgets(comm, sizeof(comm), f) != NULL &&
            strncmp(comm, "lsvc-signals", strlen("lsvc-signals")) == 0)
            n++;
        fclose(f);
    }
    closedir(dir);
    return n;
}

#ifdef SIGRTMAX
#define LAST_SIGNAL SIGRTMAX
#else
#define LAST_SIGNAL 64
#endif

/* Polls, as wait_threads_back_to does: the signal thread names itself
 * once it runs, which nothing signals. */
static bool wait_signal_threads(int n, double seconds)
{
    int64_t start = now_ns();
    while (signal_threads() != n) {
        if (seconds_since(start) > seconds)
            return false;
        sched_yield();
    }
    return true;
}

static bool same_mask(const sigset_t *a, const sigset_t *b, int *differs)
{
    for (int sig = 1; sig <= LAST_SIGNAL; sig++) {
        if (sigismember(a, sig) != sigismember(b, sig)) {
            *differs = sig;
            return false;
        }
    }
    return true;
}

static bool pending(int sig)
{
    sigset_t set;
    sigemptyset(&set);
    ck_assert_int_eq(sigpending(&set), 0);
    return sigismember(&set, sig) == 1;
}

/* The service ran its on_start and, last, its on_stop. */
static void check_started_and_stopped(const struct probe *p, const char *name)
{
    size_t n = strlen(p->events);
    ck_assert_msg(n >= 2 && p->events[0] == 'S' && p->events[n - 1] == 'T',
                  "%s's hooks ran as \"%s\"", name, p->events);
}

/* Records that are the first-signal line: "received SIG...: stopping". */
static size_t stop_lines(void)
{
    return log_count(LSVC_LOG_INFO, ": stopping ");
}

/* However many signals came, one stopped the group. */
static void check_one_stop_line(void)
{
    ck_assert_msg(stop_lines() == 1, "%zu \"received\" lines at INFO",
                  stop_lines());
}

/* Every member of the group ended, having run on_start and on_stop. */
static void check_all_started_and_stopped(const struct gfx *g)
{
    for (int i = 0; i < g->n; i++) {
        ck_assert(!lsvc_is_running(g->m[i].svc));
        check_started_and_stopped(&g->m[i].p, g->m[i].cls.name);
    }
}

/* The process as a program with a group sets it up: signals with their
 * default action, blocked before any thread, and the log captured. */
static void block_as_a_program_does(void)
{
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    log_capture_info();
}

/* An empty group whose waits are bounded by STOP_LIMIT_S. */
static struct gfx *group_new(void)
{
    struct gfx *g = gfx_new();
    g->limit = STOP_LIMIT_S;
    return g;
}

/* A group of the services a and b, due after a minute at the earliest:
 * the group can end sooner only by a signal, and then before any run. */
static struct gfx *two_late(const char *a, const char *b)
{
    static const lsvc_options late = {.initial_delay = 60};
    struct gfx *g = group_new();
    gfx_add(g, a, 60, &late);
    gfx_add(g, b, 60, &late);
    return g;
}

/* Neither service of two_late ran, and the stop was logged once. */
static void check_stopped_before_any_run(const struct gfx *g)
{
    ck_assert_str_eq(g->m[0].p.events, "ST");
    ck_assert_str_eq(g->m[1].p.events, "ST");
    ck_assert_uint_eq(g->m[0].p.runs + g->m[1].p.runs, 0);
    check_one_stop_line();
}

/* --- A storm across start, run and stop ----------------------------------- */

#define STORM_SIGNALS 1000
/* Enough services that the start takes a while, so that the storm, which
 * begins at the first service's first run, tends to meet the start of the
 * others. */
#define STORM_SERVICES 16

struct storm {
    sem_t *first_run; /* posted as the first service's first run begins */
    sem_t started;    /* posted once lsvc_group_start has returned */
    sem_t most_sent;  /* posted after three quarters of the storm */
    int failed_kills;
    bool saw_first_run;
    int64_t first_ns, last_ns;
};

/* Sends the storm in three parts: from the first run on, while the group
 * is still starting its other services; once the start has returned,
 * while that run is still held; and while the group stops. */
static void *storm_main(void *arg)
{
    struct storm *st = arg;
    st->saw_first_run = sem_wait_for(st->first_run, STOP_LIMIT_S);
    st->first_ns = now_ns();
    for (int i = 0; i < STORM_SIGNALS; i++) {
        if (i == STORM_SIGNALS / 2)
            while (sem_wait(&st->started) == -1 && errno == EINTR) {
            }
        if (i == STORM_SIGNALS * 3 / 4)
            sem_post(&st->most_sent);
        if (kill(getpid(), i % 2 ? SIGINT : SIGTERM) != 0)
            st->failed_kills++;
    }
    st->last_ns = now_ns();
    return NULL;
}

static void signal_storm(void)
{
    static char names[STORM_SERVICES][16];
    block_as_a_program_does();
    struct threads before;
    threads_baseline(&before);

    struct gfx *g = group_new();
    for (int i = 0; i < STORM_SERVICES; i++) {
        snprintf(names[i], sizeof(names[i]), "Storm%02d", i);
        /* 10-50 ms: runs happen, but few enough that the probe's event
         * record (64 entries) still holds the final on_stop. */
        gfx_add(g, names[i], 0.01 * (1 + i % 5), NULL);
    }
    /* Wide, so that only a stop that never happens makes the wait fail. */
    ck_assert_int_eq(lsvc_group_set_stop_timeout(g->g, STOP_LIMIT_S), 0);
    /* The first run of the first service started is held until most of
     * the storm has come, so that signals meet a run in progress. */
    struct fx *first = &g->m[0];
    probe_hold(&first->p);

    /* Created after lsvc_block_signals, so it blocks them too. */
    struct storm st = {.first_run = &first->p.entered};
    sems_init(2, &st.started, &st.most_sent);
    pthread_t storm;
    ck_assert_int_eq(pthread_create(&storm, NULL, storm_main, &st), 0);

    int64_t t0 = now_ns();
    gfx_start(g);
    int64_t started_ns = now_ns();
    sem_post(&st.started);
    ck_assert(sem_wait_for(&st.most_sent, STOP_LIMIT_S));
    ck_assert(log_wait(0, LSVC_LOG_INFO, "received", STOP_LIMIT_S, NULL));
    /* Stopping, and the held run still in progress. */
    ck_assert(lsvc_is_running(first->svc));
    ck_assert_uint_eq(probe_runs(&first->p), 1);
    probe_release(&first->p);
    ck_assert_int_eq(lsvc_group_wait(g->g), 0);
    int64_t stopped_ns = now_ns();
    double took = seconds_since(t0);
    ck_assert_int_eq(pthread_join(storm, NULL), 0);
    unsigned ran = 0;
    for (int i = 0; i < STORM_SERVICES; i++)
        ran += g->m[i].p.runs > 0;
    printf("storm: signals sent from %+.3f to %+.3f ms; the group's start "
           "returned at %+.3f ms and its wait at %+.3f ms; %u of %d services "
           "ran\n",
           (double)(st.first_ns - t0) / 1e6, (double)(st.last_ns - t0) / 1e6,
           (double)(started_ns - t0) / 1e6, (double)(stopped_ns - t0) / 1e6,
           ran, STORM_SERVICES);

    ck_assert(st.saw_first_run);
    ck_assert_int_eq(st.failed_kills, 0);
    ck_assert_msg(took < STOP_LIMIT_S, "the group took %.3f s to stop", took);
    check_one_stop_line();
    char stop_line[64];
    snprintf(stop_line, sizeof(stop_line), "stopping %d services",
             STORM_SERVICES);
    ck_assert_msg(log_find(0, LSVC_LOG_INFO, stop_line, NULL),
                  "nothing logged \"%s\"", stop_line);
    /* The other signals are taken while stopping, or stay pending once
     * the signal thread has ended; neither is an error. */
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, NULL), 0);
    /* The held run was not cut short, and no run followed it. */
    ck_assert_uint_eq(first->p.completed, 1);
    ck_assert_str_eq(first->p.events, "SRT");
    check_all_started_and_stopped(g);
    ck_assert(signal_blocked(SIGINT));
    ck_assert(signal_blocked(SIGTERM));
    ck_assert_msg(wait_threads_back_to(&before, 5), "%d thread(s) left",
                  threads_added(&before));
    ck_assert_int_eq(signal_threads(), 0);
    sems_destroy(2, &st.started, &st.most_sent);
}

START_TEST(test_signal_storm_across_start_run_and_stop_is_survived)
{
    run_in_child(signal_storm);
}
END_TEST

/* --- Signals pending before the start ---------------------------------------- */

static void pending_before_start(void)
{
    block_as_a_program_does();
    struct gfx *g = two_late("PendingA", "PendingB");

    ck_assert_int_eq(kill(getpid(), SIGINT), 0);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    ck_assert(pending(SIGINT));
    ck_assert(pending(SIGTERM));

    int64_t t0 = now_ns();
    gfx_start(g);
    ck_assert_int_eq(lsvc_group_wait(g->g), 0);
    double took = seconds_since(t0);
    ck_assert_msg(took < STOP_LIMIT_S, "the group took %.3f s to stop", took);
    /* Two signals, one stop: the second is only a note while stopping. */
    check_stopped_before_any_run(g);
}

START_TEST(test_signals_pending_before_start_stop_group_before_any_run)
{
    run_in_child(pending_before_start);
}
END_TEST

/* --- Signals while runs are in progress ------------------------------------------ */

#define MIDRUN_SLEEP_NS (200 * NS_PER_MS)

/* A run that blocks in sem_wait and then sleeps, the two calls a signal
 * would interrupt with EINTR if it reached the service's thread. */
struct midrun {
    sem_t entered;  /* posted as the run begins */
    sem_t release;  /* what the run waits for */
    sem_t sleeping; /* posted just before the run's sleep */
    atomic_int runs;
    atomic_bool done;
    int wait_rc, wait_errno;
    int sleep_rc, sleep_errno;
    int64_t slept_ns;
};

static int midrun_run_once(lsvc *svc, void *arg)
{
    struct midrun *m = arg;
    (void)svc;
    atomic_fetch_add(&m->runs, 1);
    sem_post(&m->entered);
    errno = 0;
    m->wait_rc = sem_wait(&m->release);
    m->wait_errno = errno;
    sem_post(&m->sleeping);
    const struct timespec nap = {.tv_sec = 0,
                                 .tv_nsec = (long)MIDRUN_SLEEP_NS};
    int64_t t0 = now_ns();
    errno = 0;
    m->sleep_rc = nanosleep(&nap, NULL);
    m->sleep_errno = errno;
    m->slept_ns = now_ns() - t0;
    atomic_store(&m->done, true);
    return 0;
}

static void midrun_init(struct midrun *m)
{
    memset(m, 0, sizeof(*m));
    sems_init(3, &m->entered, &m->release, &m->sleeping);
}

static void midrun_destroy(struct midrun *m)
{
    sems_destroy(3, &m->entered, &m->release, &m->sleeping);
}

/* SIGUSR1 stands for the signals a program handles itself: its handler
 * is installed without SA_RESTART, so a service thread that did not block
 * it would see its sem_wait or nanosleep fail with EINTR. */
static volatile sig_atomic_t usr1_taken;

static void take_usr1(int sig)
{
    (void)sig;
    usr1_taken = 1;
}

static void burst(int n)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGUSR1};
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(kill(getpid(), sigs[i % 3]), 0);
}

static void signals_mid_run(void)
{
    /* A minute's interval: the stop bound is a minute too, so the wait
     * can only end by the runs ending. */
    static const lsvc_class classes[2] = {
        {.name = "MidRunA", .loop_seconds = 60, .run_once = midrun_run_once},
        {.name = "MidRunB", .loop_seconds = 60, .run_once = midrun_run_once},
    };
    default_signal_actions();
    struct sigaction usr1;
    memset(&usr1, 0, sizeof(usr1));
    usr1.sa_handler = take_usr1;
    sigemptyset(&usr1.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &usr1, NULL), 0);
    const sigset_t usr1_set = signal_set_of(SIGUSR1);
    /* Deliverable while the services are created, so that they block it
     * only if the library blocks it for them. */
    ck_assert_int_eq(pthread_sigmask(SIG_UNBLOCK, &usr1_set, NULL), 0);
    ck_assert_int_eq(lsvc_block_signals(), 0);
    log_capture_info();
    struct midrun m[2];
    lsvc *svc[2];
    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    for (int i = 0; i < 2; i++) {
        midrun_init(&m[i]);
        ck_assert_int_eq(lsvc_create(&svc[i], &classes[i], &m[i], NULL), 0);
        ck_assert_int_eq(lsvc_group_add(g, svc[i]), 0);
    }
    ck_assert_int_eq(lsvc_group_start(g), 0);
    /* From now on no thread should take SIGUSR1: it stays pending. */
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &usr1_set, NULL), 0);
    for (int i = 0; i < 2; i++)
        ck_assert(sem_wait_for(&m[i].entered, STOP_LIMIT_S));

    /* While both runs block in sem_wait. */
    burst(20);
    ck_assert(log_wait(0, LSVC_LOG_INFO, "received", STOP_LIMIT_S, NULL));
    for (int i = 0; i < 2; i++) {
        ck_assert(lsvc_is_running(svc[i]));
        ck_assert(!atomic_load(&m[i].done));
        sem_post(&m[i].release);
    }
    /* While both runs sleep. */
    for (int i = 0; i < 2; i++)
        ck_assert(sem_wait_for(&m[i].sleeping, STOP_LIMIT_S));
    burst(20);

    ck_assert_int_eq(lsvc_group_wait(g), 0);
    for (int i = 0; i < 2; i++) {
        const char *name = classes[i].name;
        ck_assert_msg(m[i].wait_rc == 0, "%s: sem_wait gave errno %d", name,
                      m[i].wait_errno);
        ck_assert_msg(m[i].sleep_rc == 0, "%s: nanosleep gave errno %d", name,
                      m[i].sleep_errno);
        ck_assert_msg(m[i].slept_ns >= MIDRUN_SLEEP_NS,
                      "%s: slept %lld ns of %lld", name,
                      (long long)m[i].slept_ns, (long long)MIDRUN_SLEEP_NS);
        ck_assert(atomic_load(&m[i].done));
        /* The stop came during the first run: it ended, and no other ran. */
        ck_assert_int_eq(atomic_load(&m[i].runs), 1);
        lsvc_stats stats;
        ck_assert_int_eq(lsvc_get_stats(svc[i], &stats), 0);
        ck_assert_uint_eq(stats.loops, 1);
        ck_assert_uint_eq(stats.errors, 0);
        ck_assert(!stats.running);
    }
    check_one_stop_line();
    ck_assert_msg(!usr1_taken, "a thread took SIGUSR1");
    ck_assert(pending(SIGUSR1));

    ck_assert_int_eq(lsvc_group_destroy(g), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(lsvc_destroy(svc[i]), 0);
        midrun_destroy(&m[i]);
    }
}

START_TEST(test_signals_during_runs_do_not_interrupt_them)
{
    run_in_child(signals_mid_run);
}
END_TEST

/* --- A second group after the first ----------------------------------------- */

static void run_group_until_sigterm(const char *name_a, const char *name_b)
{
    struct gfx *g = group_new();
    gfx_add(g, name_a, 60, NULL);
    gfx_add(g, name_b, 60, NULL);

    size_t from = log_size();
    gfx_start(g);
    gfx_wait_first_runs(g);
    ck_assert_msg(wait_signal_threads(1, STOP_LIMIT_S),
                  "%d signal threads while the group runs", signal_threads());
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    gfx_wait(g);
    ck_assert_msg(log_find(from, LSVC_LOG_INFO,
                           "received SIGTERM: stopping 2 services", NULL),
                  "the group of %s and %s did not log the SIGTERM", name_a,
                  name_b);
    check_all_started_and_stopped(g);
    gfx_free(g);
}

static void second_group(void)
{
    default_signal_actions();
    /* The signals a group handles are left deliverable here, so a mask
     * or a pending signal left behind would show (or end the child);
     * SIGUSR2 is blocked only to make the mask not a trivial one. */
    unblock_stop_signals();
    const sigset_t usr2 = signal_set_of(SIGUSR2);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &usr2, NULL), 0);
    log_capture_info();
    sigset_t mask_before;
    sigemptyset(&mask_before);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &mask_before), 0);
    struct threads before;
    threads_baseline(&before);

    run_group_until_sigterm("FirstA", "FirstB");
    run_group_until_sigterm("SecondA", "SecondB");

    ck_assert_msg(wait_threads_back_to(&before, 5), "%d thread(s) left",
                  threads_added(&before));
    ck_assert_int_eq(signal_threads(), 0);
    sigset_t mask_after;
    sigemptyset(&mask_after);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &mask_after), 0);
    int differs = 0;
    ck_assert_msg(same_mask(&mask_before, &mask_after, &differs),
                  "signal %d (%s) is %s now", differs, strsignal(differs),
                  sigismember(&mask_after, differs) ? "blocked" : "unblocked");
    ck_assert(!pending(SIGTERM));
    ck_assert(!pending(SIGINT));
    ck_assert_uint_eq(stop_lines(), 2);
}

START_TEST(test_second_group_after_first_leaves_no_thread_or_mask_behind)
{
    run_in_child(second_group);
}
END_TEST

/* --- A signal raised in the starting thread ---------------------------------- */

/* raise() makes the signal pending in the calling thread only, where the
 * group's signal thread cannot take it: the start must take it itself and
 * stop the group, as it does one pending for the whole process. */
static void raised_before_start(void)
{
    block_as_a_program_does();
    struct gfx *g = two_late("RaisedA", "RaisedB");

    ck_assert_int_eq(raise(SIGTERM), 0);
    ck_assert(pending(SIGTERM));

    int64_t t0 = now_ns();
    gfx_start(g);
    /* Bounded, unlike lsvc_group_wait, which would wait for a stop that
     * never comes. */
    ck_assert_msg(wait_not_running(g->m[0].svc, STOP_LIMIT_S) &&
                      wait_not_running(g->m[1].svc, STOP_LIMIT_S),
                  "the group still runs %.3f s after it started with SIGTERM "
                  "pending in the starting thread", seconds_since(t0));
    ck_assert_int_eq(lsvc_group_wait(g->g), 0);
    ck_assert_msg(log_find(0, LSVC_LOG_INFO, "received SIGTERM", NULL),
                  "the stop was not logged as SIGTERM's");
    check_stopped_before_any_run(g);
    /* Taken, not left for later; and the starter's mask is as it was. */
    ck_assert(!pending(SIGTERM));
    ck_assert(signal_blocked(SIGTERM));
}

START_TEST(test_signal_raised_in_the_starting_thread_stops_the_group)
{
    run_in_child(raised_before_start);
}
END_TEST

/* --- Thread ids used again ------------------------------------------------- */

/* glibc gives a new thread the id (the descriptor at the top of its stack)
 * of the last thread joined whose stack has the same size. These tests
 * make threads until one has the id they are after, keeping the others
 * alive meanwhile, so that each try takes another cached stack. */
#define REUSE_TRIES 64

struct candidate {
    pthread_t thread;
    sem_t decided;          /* posted once `chosen` is set */
    bool chosen;
    void (*work)(void *ctx); /* what the chosen one does */
    void *ctx;
};

static void *candidate_main(void *arg)
{
    struct candidate *c = arg;
    while (sem_wait(&c->decided) == -1 && errno == EINTR) {
    }
    if (c->chosen)
        c->work(c->ctx);
    return NULL;
}

/* Makes threads with `attr` until one has the id `wanted`, which then runs
 * work(ctx); joins every one. Returns how many were made before it, or -1
 * when none had that id. */
static int run_on_reused_id(pthread_t wanted, const pthread_attr_t *attr,
                            void (*work)(void *ctx), void *ctx)
{
    static struct candidate c[REUSE_TRIES];
    int made = 0, found = -1;
    for (; made < REUSE_TRIES && found < 0; made++) {
        c[made] = (struct candidate){.work = work, .ctx = ctx};
        sem_init(&c[made].decided, 0, 0);
        if (pthread_create(&c[made].thread, attr, candidate_main, &c[made]) !=
            0) {
            sem_destroy(&c[made].decided);
            break;
        }
        if (pthread_equal(c[made].thread, wanted)) {
            c[made].chosen = true;
            found = made;
        }
    }
    for (int i = 0; i < made; i++) {
        sem_post(&c[i].decided);
        pthread_join(c[i].thread, NULL);
        sem_destroy(&c[i].decided);
    }
    return found;
}

/* The starter of a group changes its mask (blocks the group's signals)
 * and lsvc_group_wait, called there, puts it back. A thread that merely
 * has the starter's id, the starter having ended, is another thread: its
 * mask is its own. */
struct starter_case {
    lsvc_group *g;
    int start_rc;
    int stop_rc, wait_rc;
    bool blocked_before, blocked_after;
};

static void *start_group_and_end(void *arg)
{
    struct starter_case *sc = arg;
    const sigset_t term = signal_set_of(SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &term, NULL);
    sc->start_rc = lsvc_group_start(sc->g);
    return NULL;
}

static void stop_and_wait_with_sigterm_blocked(void *ctx)
{
    struct starter_case *sc = ctx;
    const sigset_t term = signal_set_of(SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    sc->blocked_before = signal_blocked(SIGTERM);
    sc->stop_rc = lsvc_group_stop(sc->g);
    sc->wait_rc = lsvc_group_wait(sc->g);
    sc->blocked_after = signal_blocked(SIGTERM);
}

START_TEST(test_thread_reusing_the_starters_id_keeps_its_mask)
{
    log_capture_info();
    struct gfx *g = group_new();
    struct fx *f = &g->m[gfx_add(g, "MaskKept", 60, NULL)];
    struct starter_case sc = {
        .g = g->g, .start_rc = -1, .stop_rc = -1, .wait_rc = -1};

    pthread_t starter;
    ck_assert_int_eq(pthread_create(&starter, NULL, start_group_and_end, &sc),
                     0);
    ck_assert_int_eq(pthread_join(starter, NULL), 0);
    ck_assert_int_eq(sc.start_rc, 0);
    ck_assert(sem_wait_for(&f->p.entered, STOP_LIMIT_S));

    int tries = run_on_reused_id(starter, NULL,
                                 stop_and_wait_with_sigterm_blocked, &sc);
    ck_assert_msg(tries >= 0, "none of %d new threads had the id of the "
                  "ended starter", REUSE_TRIES);
    ck_assert_int_eq(sc.stop_rc, 0);
    ck_assert_int_eq(sc.wait_rc, 0);
    ck_assert(sc.blocked_before);
    ck_assert_msg(sc.blocked_after, "lsvc_group_wait unblocked SIGTERM in a "
                  "thread that only has the id of the group's starter");
    ck_assert(!lsvc_is_running(f->svc));
}
END_TEST

/* lsvc_group_wait is EDEADLK on the group's signal thread. Once that
 * thread has been joined, a new thread may get its id; the wait, still
 * under way, logs the notify error after the join, and a sink that makes
 * such a thread there lets it call lsvc_group_wait while the first wait
 * goes on: it is another thread waiting (EBUSY), not the signal thread. */
static struct {
    lsvc_group *g;
    pthread_t waiter; /* the thread in lsvc_group_wait */
    pthread_mutex_t lock; /* protects the fields below */
    bool have_signal_thread;
    pthread_t signal_thread; /* the one that logged "received SIGTERM" */
    bool tried;
    int tries;
    int rc; /* lsvc_group_wait's on the thread with the reused id */
} reuse = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void wait_on_reused_id(void *ctx)
{
    (void)ctx;
    int rc = lsvc_group_wait(reuse.g);
    pthread_mutex_lock(&reuse.lock);
    reuse.rc = rc;
    pthread_mutex_unlock(&reuse.lock);
}

/* Checks nothing itself: a sink runs inside the library. */
static void reusing_sink(int level, const char *logger, const char *message,
                         void *ctx)
{
    log_capture_sink(level, logger, message, ctx);
    if (level == LSVC_LOG_INFO && strstr(message, "received SIGTERM") != NULL) {
        pthread_mutex_lock(&reuse.lock);
        reuse.signal_thread = pthread_self();
        reuse.have_signal_thread = true;
        pthread_mutex_unlock(&reuse.lock);
        return;
    }
    if (level != LSVC_LOG_WARNING ||
        strstr(message, "Could not notify systemd") == NULL ||
        !pthread_equal(pthread_self(), reuse.waiter))
        return;
    pthread_mutex_lock(&reuse.lock);
    bool go = reuse.have_signal_thread && !reuse.tried;
    pthread_t wanted = reuse.signal_thread;
    reuse.tried = true;
    pthread_mutex_unlock(&reuse.lock);
    if (!go)
        return;
    /* The library's threads have the system's default stack. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    int tries = run_on_reused_id(wanted, &attr, wait_on_reused_id, NULL);
    pthread_attr_destroy(&attr);
    pthread_mutex_lock(&reuse.lock);
    reuse.tries = tries;
    pthread_mutex_unlock(&reuse.lock);
}

static void reused_signal_thread_id(void)
{
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    log_capture_info();
    lsvc_set_logger(reusing_sink, NULL);
    reuse.rc = -1;
    reuse.tries = -1;
    reuse.waiter = pthread_self();

    /* A notify socket that takes READY=1 and is gone by STOPPING=1. */
    char dir[] = "/tmp/lsvc-signals-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/notify", dir);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (const struct sockaddr *)&addr, sizeof(addr)), 0);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", addr.sun_path, 1), 0);

    struct gfx *g = group_new();
    gfx_add(g, "ReusedId", 60, NULL);
    ck_assert_int_eq(lsvc_group_set_notify(g->g, true), 0);
    reuse.g = g->g;
    gfx_start(g);
    gfx_wait_first_runs(g);
    char buf[256];
    ck_assert_int_gt(recv(fd, buf, sizeof(buf), 0), 0); /* READY=1 */
    close(fd);
    ck_assert_int_eq(unlink(addr.sun_path), 0);
    ck_assert_int_eq(rmdir(dir), 0);

    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_wait(reuse.g), 0);
    ck_assert_msg(seconds_since(t0) < STOP_LIMIT_S,
                  "the group took %.3f s to stop", seconds_since(t0));
    lsvc_set_logger(NULL, NULL);

    pthread_mutex_lock(&reuse.lock);
    bool have_signal_thread = reuse.have_signal_thread, tried = reuse.tried;
    int tries = reuse.tries, rc = reuse.rc;
    pthread_mutex_unlock(&reuse.lock);
    ck_assert_msg(have_signal_thread, "no \"received SIGTERM\" line");
    ck_assert_msg(tried, "the failed STOPPING=1 was not logged on the thread "
                  "in lsvc_group_wait");
    ck_assert_msg(tries >= 0, "none of %d new threads had the id of the "
                  "joined signal thread", REUSE_TRIES);
    ck_assert_msg(rc == EBUSY, "lsvc_group_wait on a new thread with the "
                  "joined signal thread's id returned %d (%s), want EBUSY",
                  rc, rc > 0 ? strerror(rc) : "?");
}

START_TEST(test_thread_reusing_the_signal_threads_id_gets_ebusy)
{
    run_in_child(reused_signal_thread_id);
}
END_TEST

/* --- Signals that wake a service ------------------------------------------ */

#define RELOAD_BITS 0x5u

/* A `during` hook: notes the wake bits of each run in p->user. */
static void note_wake_bits(lsvc *svc, struct probe *p, uint64_t run)
{
    lsvc_run_info info;
    ck_assert_int_eq(lsvc_get_run_info(svc, &info), 0);
    unsigned *bits = p->user;
    if (run < 4)
        bits[run] = (info.reasons & LSVC_RUN_WOKEN) ? info.wake_bits : ~0u;
}

/* SIGHUP, blocked in every thread and sent to the process, wakes the
 * reloader with its bits, twice, and stops nothing; SIGTERM still stops
 * the group. */
static void sighup_wakes_a_service(void)
{
    default_signal_actions();
    const sigset_t hup = signal_set_of(SIGHUP);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &hup, NULL), 0);
    ck_assert_int_eq(lsvc_block_signals(), 0);
    log_capture_info();
    static unsigned bits[4];
    struct gfx *g = group_new();
    struct fx *reloader = &g->m[gfx_add(g, "Reloader", LSVC_NEVER, NULL)];
    struct fx *other = &g->m[gfx_add(g, "Other", 60, NULL)];
    reloader->p.during = note_wake_bits;
    reloader->p.user = bits;
    ck_assert_int_eq(lsvc_group_wake_on_signal(g->g, SIGHUP, reloader->svc,
                                               RELOAD_BITS), 0);
    gfx_start(g);
    ck_assert(probe_wait_runs(&other->p, 1, STOP_LIMIT_S));
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(kill(getpid(), SIGHUP), 0);
        ck_assert_msg(probe_wait_runs(&reloader->p, 1, STOP_LIMIT_S),
                      "SIGHUP %d did not wake the reloader", i + 1);
        ck_assert_msg(bits[i] == RELOAD_BITS, "run %d got wake bits %#x", i,
                      bits[i]);
    }
    ck_assert(lsvc_is_running(reloader->svc) && lsvc_is_running(other->svc));
    ck_assert_uint_eq(stop_lines(), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_INFO, "received SIGHUP: waking "
                                               "Reloader"), 2);
    ck_assert_uint_eq(probe_runs(&other->p), 1);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    gfx_wait(g);
    check_one_stop_line();
    check_all_started_and_stopped(g);
}

START_TEST(test_sighup_wakes_a_service_and_stops_nothing)
{
    run_in_child(sighup_wakes_a_service);
}
END_TEST

/* The signals a group cannot wake a service with. */
static const int refused_wake_signals[] = {SIGTERM, SIGINT, SIGKILL, SIGSTOP,
                                           SIGSEGV, SIGABRT, 0};

START_TEST(test_wake_on_signal_refuses_what_it_cannot_take)
{
    struct fx *outsider = fx_new("Outsider", 60, NULL);
    struct gfx *g = group_new();
    lsvc *member = g->m[gfx_add(g, "Member", 60, NULL)].svc;
    for (const int *sig = refused_wake_signals; *sig != 0; sig++)
        ck_assert_msg(lsvc_group_wake_on_signal(g->g, *sig, member, 1) ==
                          EINVAL, "signal %d (%s) accepted", *sig,
                      strsignal(*sig));
    ck_assert_int_eq(lsvc_group_wake_on_signal(g->g, SIGHUP, outsider->svc, 1),
                     EINVAL);
    ck_assert_int_eq(lsvc_group_wake_on_signal(NULL, SIGHUP, member, 1),
                     EINVAL);
    ck_assert_int_eq(lsvc_group_wake_on_signal(g->g, SIGHUP, NULL, 1), EINVAL);
    ck_assert_int_eq(lsvc_group_wake_on_signal(g->g, SIGHUP, member, 1), 0);
    /* Now a wake signal, it cannot also be a stop signal. */
    const sigset_t hup = signal_set_of(SIGHUP);
    ck_assert_int_eq(lsvc_group_set_signals(g->g, &hup), EINVAL);
    const sigset_t usr1 = signal_set_of(SIGUSR1);
    ck_assert_int_eq(lsvc_group_set_signals(g->g, &usr1), 0);
    /* Started, the group takes no new signal. */
    default_signal_actions();
    sigset_t both = usr1;
    sigaddset(&both, SIGUSR2);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &both, NULL), 0);
    gfx_start(g);
    ck_assert_int_eq(lsvc_group_wake_on_signal(g->g, SIGUSR2, member, 1),
                     EBUSY);
    gfx_stop(g);
    ck_assert_int_eq(lsvc_group_wake_on_signal(g->g, SIGUSR2, member, 1), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("signals");
    add_tests(s, "signals", (const TTest *[]){
        test_signal_storm_across_start_run_and_stop_is_survived,
        test_signals_pending_before_start_stop_group_before_any_run,
        test_signals_during_runs_do_not_interrupt_them,
        test_second_group_after_first_leaves_no_thread_or_mask_behind,
        test_signal_raised_in_the_starting_thread_stops_the_group,
        test_thread_reusing_the_starters_id_keeps_its_mask,
        test_thread_reusing_the_signal_threads_id_gets_ebusy,
        test_sighup_wakes_a_service_and_stops_nothing,
        test_wake_on_signal_refuses_what_it_cannot_take, NULL});
    return run_suite(s);
}
