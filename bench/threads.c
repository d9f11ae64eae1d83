/*
 * The threads and processes of the bench that are not the library's:
 * measured baseline threads (given the same priority, affinity, stack and
 * slack as a service), the --load burners, child processes (cyclictest,
 * the RSS probe), the latch that every wait for them goes through, and a
 * watchdog that ends the program if a subcommand overruns its budget, so
 * that no wait anywhere can hang it.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

void die(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs("loopsvc-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    _exit(1);
}

/* A thread as a service's is made: the system's default stack, the
 * priority and the CPU, so that baselines pay the same. */
int thread_attr_for(pthread_attr_t *attr, int prio, int cpu)
{
    int rc = pthread_attr_init(attr);

    if (rc != 0)
        return rc;
    if (prio > 0) {
        struct sched_param param = { .sched_priority = prio };

        rc = pthread_attr_setinheritsched(attr, PTHREAD_EXPLICIT_SCHED);
        if (rc == 0)
            rc = pthread_attr_setschedpolicy(attr, SCHED_FIFO);
        if (rc == 0)
            rc = pthread_attr_setschedparam(attr, &param);
    }
    if (rc == 0 && cpu >= 0) {
        cpu_set_t set;

        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        rc = pthread_attr_setaffinity_np(attr, sizeof set, &set);
    }
    if (rc != 0)
        pthread_attr_destroy(attr);
    return rc;
}

int thread_spawn(pthread_t *t, const struct block_spec *spec,
                 void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    int rc = thread_attr_for(&attr, spec->prio, spec->cpu);

    if (rc != 0)
        return rc;
    rc = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
}

/* --- latch: a count that a thread can wait on until a deadline ----------- */

void latch_init(struct latch *l)
{
    pthread_condattr_t attr;

    pthread_mutex_init(&l->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cond, &attr);
    pthread_condattr_destroy(&attr);
    l->count = 0;
}

void latch_destroy(struct latch *l)
{
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
}

void latch_add(struct latch *l)
{
    pthread_mutex_lock(&l->lock);
    l->count++;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
}

int latch_wait(struct latch *l, size_t count, int64_t deadline_ns)
{
    struct timespec until = ns_to_ts(deadline_ns);
    int rc = 0;

    pthread_mutex_lock(&l->lock);
    while (l->count < count && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&l->cond, &l->lock, &until);
    rc = l->count >= count ? 0 : ETIMEDOUT;
    pthread_mutex_unlock(&l->lock);
    return rc;
}

long slack_current(void)
{
    return (long)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
}

/* Without --slack-ns a baseline keeps the slack it inherited, which is
 * the system's default unless someone changed it. */
long slack_apply(long slack_ns)
{
    if (slack_ns > 0)
        prctl(PR_SET_TIMERSLACK, (unsigned long)slack_ns, 0, 0, 0);
    return slack_current();
}

static void *probe_main(void *arg)
{
    return arg;
}

int check_sched(const struct bench_opts *o)
{
    struct block_spec spec = { .prio = o->prio, .cpu = o->cpu };
    pthread_t t;
    int rc;

    if (o->prio == 0 && o->cpu < 0)
        return 0;
    rc = thread_spawn(&t, &spec, probe_main, NULL);
    if (rc == EPERM)
        fprintf(stderr,
                "loopsvc-bench: --prio %d needs permission for SCHED_FIFO: run as "
                "root, with CAP_SYS_NICE, or raise RLIMIT_RTPRIO (ulimit -r).\n",
                o->prio);
    else if (rc != 0)
        fprintf(stderr, "loopsvc-bench: cannot make a thread with --prio %d --cpu %d: %s\n",
                o->prio, o->cpu, strerror(rc));
    else
        pthread_join(t, NULL);
    return rc;
}

/* --- load ---------------------------------------------------------------- */

static atomic_bool load_quit;
static pthread_t *load_threads;
static int load_count;

static void *load_main(void *arg)
{
    volatile uint64_t x = 0;

    (void)arg;
    while (!atomic_load_explicit(&load_quit, memory_order_relaxed))
        x = x * 6364136223846793005u + 1;
    return NULL;
}

int load_start(int count)
{
    load_threads = calloc((size_t)(count > 0 ? count : 1), sizeof *load_threads);
    if (load_threads == NULL)
        return ENOMEM;
    atomic_store(&load_quit, false);
    for (load_count = 0; load_count < count; load_count++) {
        int rc = pthread_create(&load_threads[load_count], NULL, load_main, NULL);
        if (rc != 0) {
            load_stop();
            return rc;
        }
    }
    return 0;
}

void load_stop(void)
{
    atomic_store(&load_quit, true);
    for (int i = 0; i < load_count; i++)
        pthread_join(load_threads[i], NULL);
    free(load_threads);
    load_threads = NULL;
    load_count = 0;
}

/* CPU burnt by the load threads, to take out of the process's total. */
int64_t load_cpu_ns(void)
{
    int64_t sum = 0;

    for (int i = 0; i < load_count; i++) {
        clockid_t clock;
        struct timespec ts;

        if (pthread_getcpuclockid(load_threads[i], &clock) == 0 &&
            clock_gettime(clock, &ts) == 0)
            sum += ts_to_ns(&ts);
    }
    return sum;
}

int64_t process_cpu_ns(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * NS_PER_SEC +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * NS_PER_US;
}

/* --- child processes ----------------------------------------------------- */

/* Reads what the child writes to fd until EOF or the deadline. */
static char *read_all(int fd, int64_t deadline_ns, bool *timed_out)
{
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);

    *timed_out = false;
    while (buf != NULL) {
        int64_t left = deadline_ns - now_ns();
        struct pollfd pfd = { .fd = fd, .events = POLLIN };

        if (left <= 0) {
            *timed_out = true;
            break;
        }
        if (poll(&pfd, 1, (int)(left / NS_PER_MS) + 1) <= 0)
            continue;
        if (cap - len < 4096) {
            char *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL)
                break;
            buf = bigger;
        }
        ssize_t got = read(fd, buf + len, cap - len - 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

static int reap(pid_t pid, bool kill_now)
{
    int64_t until = now_ns() + 5 * NS_PER_SEC;
    int status = 0;

    if (kill_now)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, WNOHANG) == 0) {
        struct timespec ms = { .tv_nsec = NS_PER_MS };

        if (now_ns() > until) {
            kill(pid, SIGKILL);
            until = INT64_MAX;
        }
        nanosleep(&ms, NULL);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int child_run(const char *path, char *const argv[], long slack_ns, int64_t deadline_ns,
              char **out, bool *timed_out)
{
    int pipefd[2];

    *out = NULL;
    *timed_out = false;
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec. The child
         * must not keep the bench's blocked SIGINT/SIGTERM. */
        sigset_t none;
        int devnull = open("/dev/null", O_WRONLY);

        dup2(pipefd[1], STDOUT_FILENO);
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (slack_ns > 0)
            prctl(PR_SET_TIMERSLACK, (unsigned long)slack_ns, 0, 0, 0);
        execv(path, argv);
        _exit(127);
    }
    close(pipefd[1]);
    *out = read_all(pipefd[0], deadline_ns, timed_out);
    close(pipefd[0]);
    return reap(pid, *timed_out);
}

/* --- watchdog ------------------------------------------------------------ */

/* Protects `wd_deadline` and `wd_what`. */
static pthread_mutex_t wd_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cond;
static int64_t wd_deadline;
static const char *wd_what;
static bool wd_running;

static void *watchdog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&wd_lock);
    for (;;) {
        int64_t now = now_ns();

        if (wd_deadline != 0 && now >= wd_deadline)
            die("%s did not finish within its time budget; giving up", wd_what);
        struct timespec until = ns_to_ts(wd_deadline ? wd_deadline : now + NS_PER_SEC);
        pthread_cond_timedwait(&wd_cond, &wd_lock, &until);
    }
    return NULL;
}

/* SIGINT stays blocked in every thread for the library's signal rule, so
 * Ctrl-C would do nothing: this thread takes it and ends the program. The
 * stop bench's groups may take it instead while they run, which stops
 * them; that bench then goes on. SIGTERM is left to the groups. */
static void *interrupt_main(void *arg)
{
    sigset_t set;
    int sig;

    (void)arg;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    while (sigwait(&set, &sig) != 0)
        ;
    fflush(stdout);
    fputs("loopsvc-bench: interrupted\n", stderr);
    _exit(130);
}

int interrupt_start(void)
{
    pthread_t t;
    int rc = pthread_create(&t, NULL, interrupt_main, NULL);

    if (rc == 0)
        pthread_detach(t);
    return rc;
}

void watchdog_arm(const char *what, double seconds)
{
    pthread_mutex_lock(&wd_lock);
    if (!wd_running) {
        pthread_condattr_t attr;
        pthread_t t;

        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&wd_cond, &attr);
        pthread_condattr_destroy(&attr);
        if (pthread_create(&t, NULL, watchdog_main, NULL) == 0) {
            pthread_detach(t);
            wd_running = true;
        }
    }
    wd_what = what;
    wd_deadline = now_ns() + (int64_t)(seconds * 1e9);
    pthread_cond_signal(&wd_cond);
    pthread_mutex_unlock(&wd_lock);
}
