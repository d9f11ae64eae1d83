#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* --- Time ----------------------------------------------------------------- */

int64_t timespec_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * NS_PER_S + ts->tv_nsec;
}

int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return timespec_ns(&ts);
}

double seconds_since(int64_t start_ns)
{
    return (double)(now_ns() - start_ns) / 1e9;
}

static struct timespec ns_timespec(int64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / NS_PER_S),
                          .tv_nsec = (long)(ns % NS_PER_S)};
    return ts;
}

void work_for_ns(int64_t ns)
{
    struct timespec until = ns_timespec(now_ns() + ns);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) ==
           EINTR) {
    }
}

bool starts_with(const char *text, const char *prefix)
{
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

bool sem_wait_for(sem_t *sem, double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts = ns_timespec(timespec_ns(&ts) + (int64_t)(seconds * 1e9));
    int rc;
    while ((rc = sem_timedwait(sem, &ts)) == -1 && errno == EINTR) {
    }
    return rc == 0;
}

/* --- Log capture ------------------------------------------------------------ */

static struct {
    pthread_mutex_t lock; /* protects the fields below */
    pthread_cond_t added; /* CLOCK_MONOTONIC; broadcast on each record */
    struct log_record *records;
    size_t count, cap;
} logs = {.lock = PTHREAD_MUTEX_INITIALIZER};

void log_capture_sink(int level, const char *logger, const char *message,
                      void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&logs.lock);
    if (logs.count == logs.cap) {
        size_t cap = logs.cap ? 2 * logs.cap : 64;
        struct log_record *r = realloc(logs.records, cap * sizeof(*r));
        if (r == NULL) {
            pthread_mutex_unlock(&logs.lock);
            abort();
        }
        logs.records = r;
        logs.cap = cap;
    }
    struct log_record *rec = &logs.records[logs.count++];
    rec->level = level;
    snprintf(rec->logger, sizeof(rec->logger), "%s", logger ? logger : "");
    snprintf(rec->message, sizeof(rec->message), "%s", message ? message : "");
    pthread_cond_broadcast(&logs.added);
    pthread_mutex_unlock(&logs.lock);
}

void log_capture(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&logs.added, &attr);
    pthread_condattr_destroy(&attr);
    lsvc_set_logger(log_capture_sink, NULL);
}

size_t log_size(void)
{
    pthread_mutex_lock(&logs.lock);
    size_t n = logs.count;
    pthread_mutex_unlock(&logs.lock);
    return n;
}

static bool matches(const struct log_record *r, int level, const char *text)
{
    return (level == 0 || r->level == level) &&
           (text == NULL || strstr(r->message, text) != NULL);
}

/* Caller holds logs.lock. */
static bool find_locked(size_t from, int level, const char *text,
                        struct log_record *out)
{
    for (size_t i = from; i < logs.count; i++) {
        if (matches(&logs.records[i], level, text)) {
            if (out != NULL)
                *out = logs.records[i];
            return true;
        }
    }
    return false;
}

size_t log_count(int level, const char *text)
{
    size_t n = 0;
    pthread_mutex_lock(&logs.lock);
    for (size_t i = 0; i < logs.count; i++)
        n += matches(&logs.records[i], level, text);
    pthread_mutex_unlock(&logs.lock);
    return n;
}

bool log_find(size_t from, int level, const char *text,
              struct log_record *out)
{
    pthread_mutex_lock(&logs.lock);
    bool found = find_locked(from, level, text, out);
    pthread_mutex_unlock(&logs.lock);
    return found;
}

bool log_wait(size_t from, int level, const char *text, double seconds,
              struct log_record *out)
{
    struct timespec until = ns_timespec(now_ns() + (int64_t)(seconds * 1e9));
    pthread_mutex_lock(&logs.lock);
    bool found;
    while (!(found = find_locked(from, level, text, out))) {
        if (pthread_cond_timedwait(&logs.added, &logs.lock, &until) ==
            ETIMEDOUT) {
            found = find_locked(from, level, text, out);
            break;
        }
    }
    pthread_mutex_unlock(&logs.lock);
    return found;
}

/* --- Probe service ------------------------------------------------------- */

void probe_init(struct probe *p)
{
    memset(p, 0, sizeof(*p));
    sem_init(&p->entered, 0, 0);
    sem_init(&p->ran, 0, 0);
    sem_init(&p->started, 0, 0);
    sem_init(&p->release, 0, 0);
    pthread_mutex_init(&p->lock, NULL);
}

void probe_destroy(struct probe *p)
{
    sem_destroy(&p->entered);
    sem_destroy(&p->ran);
    sem_destroy(&p->started);
    sem_destroy(&p->release);
    pthread_mutex_destroy(&p->lock);
}

/* Caller holds p->lock. */
static void add_event(struct probe *p, char event)
{
    size_t n = strlen(p->events);
    if (n < PROBE_MAX_EVENTS)
        p->events[n] = event;
}

int probe_run_once(lsvc *svc, void *arg)
{
    struct probe *p = arg;
    int64_t begin = now_ns();
    struct timespec sched = {0, 0};
    int sched_rc = lsvc_scheduled_start(svc, &sched);

    pthread_mutex_lock(&p->lock);
    uint64_t run = p->runs++;
    if (run < PROBE_MAX_RUNS) {
        p->begin_ns[run] = begin;
        p->sched_ns[run] = timespec_ns(&sched);
    }
    p->sched_rc = sched_rc;
    p->run_thread = pthread_self();
    add_event(p, 'R');
    pthread_mutex_unlock(&p->lock);
    sem_post(&p->entered);

    pthread_mutex_lock(&p->lock);
    bool hold = p->hold;
    pthread_mutex_unlock(&p->lock);
    if (hold)
        while (sem_wait(&p->release) == -1 && errno == EINTR) {
        }

    if (p->during != NULL)
        p->during(svc, p, run);
    if (run < p->slow_runs)
        work_for_ns(p->slow_ns);

    pthread_mutex_lock(&p->lock);
    if (run < PROBE_MAX_RUNS)
        p->end_ns[run] = now_ns();
    p->completed++;
    pthread_mutex_unlock(&p->lock);
    sem_post(&p->ran);
    return p->run_code;
}

int probe_on_start(lsvc *svc, void *arg)
{
    struct probe *p = arg;
    (void)svc;
    pthread_mutex_lock(&p->lock);
    p->start_thread = pthread_self();
    add_event(p, 'S');
    pthread_mutex_unlock(&p->lock);
    sem_post(&p->started);
    return p->start_code;
}

void probe_on_stop(lsvc *svc, void *arg)
{
    struct probe *p = arg;
    (void)svc;
    pthread_mutex_lock(&p->lock);
    p->stop_thread = pthread_self();
    add_event(p, 'T');
    pthread_mutex_unlock(&p->lock);
}

void probe_hold(struct probe *p)
{
    pthread_mutex_lock(&p->lock);
    p->hold = true;
    pthread_mutex_unlock(&p->lock);
}

void probe_release(struct probe *p)
{
    pthread_mutex_lock(&p->lock);
    p->hold = false;
    pthread_mutex_unlock(&p->lock);
    sem_post(&p->release);
}

uint64_t probe_runs(struct probe *p)
{
    pthread_mutex_lock(&p->lock);
    uint64_t n = p->runs;
    pthread_mutex_unlock(&p->lock);
    return n;
}

bool probe_wait_runs(struct probe *p, uint64_t n, double seconds)
{
    int64_t deadline = now_ns() + (int64_t)(seconds * 1e9);
    for (uint64_t i = 0; i < n; i++) {
        double left = (double)(deadline - now_ns()) / 1e9;
        if (left < 0 || !sem_wait_for(&p->ran, left))
            return false;
    }
    return true;
}

lsvc *make_service(const lsvc_class *cls, struct probe *p,
                   const lsvc_options *opts)
{
    lsvc *svc = NULL;
    int rc = lsvc_create(&svc, cls, p, opts);
    ck_assert_msg(rc == 0, "lsvc_create(%s) returned %d", cls->name, rc);
    ck_assert_ptr_nonnull(svc);
    return svc;
}

/* --- Threads and signals ------------------------------------------------- */

static void threads_now(struct threads *t)
{
    t->n = 0;
    DIR *dir = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] != '.' && t->n < (int)(sizeof(t->id) / sizeof(long)))
            t->id[t->n++] = strtol(e->d_name, NULL, 10);
    }
    closedir(dir);
}

static void *nothing(void *arg)
{
    return arg;
}

void threads_baseline(struct threads *before)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, nothing, NULL), 0);
    pthread_join(t, NULL);
    threads_now(before);
}

int threads_added(const struct threads *before)
{
    struct threads now;
    threads_now(&now);
    int added = 0;
    for (int i = 0; i < now.n; i++) {
        bool known = false;
        for (int j = 0; j < before->n && !known; j++)
            known = now.id[i] == before->id[j];
        added += !known;
    }
    return added;
}

bool wait_threads_back_to(const struct threads *before, double seconds)
{
    int64_t start = now_ns();
    while (threads_added(before) != 0) {
        if (seconds_since(start) > seconds)
            return false;
        sched_yield();
    }
    return true;
}

bool wait_not_running(const lsvc *svc, double seconds)
{
    int64_t start = now_ns();
    while (lsvc_is_running(svc)) {
        if (seconds_since(start) > seconds)
            return false;
        sched_yield();
    }
    return true;
}

bool signal_blocked(int sig)
{
    sigset_t set;
    sigemptyset(&set);
    pthread_sigmask(SIG_BLOCK, NULL, &set);
    return sigismember(&set, sig) == 1;
}

void unblock_stop_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

void default_signal_actions(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGUSR1, &dfl, NULL);
}

void drop_realtime_permission(void)
{
    const struct rlimit none = {0, 0};
    ck_assert_int_eq(setrlimit(RLIMIT_RTPRIO, &none), 0);
    if (getuid() == 0) {
        ck_assert_int_eq(setuid(65534), 0);
        /* setuid cleared the dumpable flag, without which LeakSanitizer
         * cannot inspect this process when it exits. */
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
}

/* --- Suites ---------------------------------------------------------------- */

TCase *timed_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 60);
    return tc;
}

int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
