#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
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

void sems_init(int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        sem_init(va_arg(ap, sem_t *), 0, 0);
    va_end(ap);
}

void sems_destroy(int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        sem_destroy(va_arg(ap, sem_t *));
    va_end(ap);
}

bool sem_wait_n(sem_t *sem, uint64_t n, double seconds)
{
    int64_t deadline = now_ns() + (int64_t)(seconds * 1e9);
    for (uint64_t i = 0; i < n; i++) {
        double left = (double)(deadline - now_ns()) / 1e9;
        if (left < 0 || !sem_wait_for(sem, left))
            return false;
    }
    return true;
}

void sem_drain(sem_t *sem)
{
    while (sem_trywait(sem) == 0) {
    }
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

void log_capture_info(void)
{
    log_capture();
    lsvc_set_log_level(LSVC_LOG_INFO);
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
    sems_init(4, &p->entered, &p->ran, &p->started, &p->release);
    pthread_mutex_init(&p->lock, NULL);
}

void probe_destroy(struct probe *p)
{
    sems_destroy(4, &p->entered, &p->ran, &p->started, &p->release);
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

/* Records a hook: which thread ran it, and its event. */
static void note_hook(struct probe *p, pthread_t *thread, char event)
{
    pthread_mutex_lock(&p->lock);
    *thread = pthread_self();
    add_event(p, event);
    pthread_mutex_unlock(&p->lock);
}

int probe_on_start(lsvc *svc, void *arg)
{
    struct probe *p = arg;
    (void)svc;
    note_hook(p, &p->start_thread, 'S');
    sem_post(&p->started);
    return p->start_code;
}

void probe_on_stop(lsvc *svc, void *arg)
{
    struct probe *p = arg;
    (void)svc;
    note_hook(p, &p->stop_thread, 'T');
}

void probe_note(struct probe *p, char event)
{
    pthread_mutex_lock(&p->lock);
    add_event(p, event);
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

void stop_at_second_run(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)p;
    if (run == 1)
        lsvc_stop(svc, false);
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
    return sem_wait_n(&p->ran, n, seconds);
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

lsvc_stats stats_of(const lsvc *svc)
{
    lsvc_stats st;
    ck_assert_int_eq(lsvc_get_stats(svc, &st), 0);
    return st;
}

bool ended_with_on_stop(const char *events)
{
    size_t n = strlen(events);
    return n > 0 && events[n - 1] == 'T';
}

/* --- Fixtures ----------------------------------------------------------------- */

#define TEARDOWNS_MAX 256

/* Fresh in each test's forked child. */
static struct {
    void (*fn)(void *arg);
    void *arg;
} teardowns[TEARDOWNS_MAX];
static int n_teardowns;

void at_teardown(void (*fn)(void *arg), void *arg)
{
    ck_assert_int_lt(n_teardowns, TEARDOWNS_MAX);
    teardowns[n_teardowns].fn = fn;
    teardowns[n_teardowns].arg = arg;
    n_teardowns++;
}

void run_teardowns(void)
{
    while (n_teardowns > 0) {
        n_teardowns--;
        teardowns[n_teardowns].fn(teardowns[n_teardowns].arg);
    }
}

static void *zalloc(size_t size)
{
    void *p = calloc(1, size);
    ck_assert_ptr_nonnull(p);
    return p;
}

void *test_alloc(size_t size)
{
    void *p = zalloc(size);
    at_teardown(free, p);
    return p;
}

/* Ends what the test left of f, then frees it. */
static void fx_teardown(void *arg)
{
    struct fx *f = arg;
    if (f->svc != NULL)
        fx_end(f);
    free(f);
}

static void fx_create(struct fx *f, const lsvc_class *cls,
                      const lsvc_options *opts)
{
    f->cls = *cls;
    probe_init(&f->p);
    f->svc = make_service(&f->cls, &f->p, opts);
}

struct fx *fx_new_class(const lsvc_class *cls, const lsvc_options *opts)
{
    struct fx *f = zalloc(sizeof(*f));
    fx_create(f, cls, opts);
    at_teardown(fx_teardown, f);
    return f;
}

struct fx *fx_new(const char *name, double seconds, const lsvc_options *opts)
{
    const lsvc_class cls = PROBE_CLASS(name, seconds);
    return fx_new_class(&cls, opts);
}

void fx_start(struct fx *f, uint64_t loops)
{
    int rc = lsvc_start(f->svc, loops);
    ck_assert_msg(rc == 0, "lsvc_start(%s, %llu) returned %d", f->cls.name,
                  (unsigned long long)loops, rc);
}

void fx_wait_entered(struct fx *f)
{
    ck_assert_msg(sem_wait_for(&f->p.entered, 5), "no run of %s began",
                  f->cls.name);
}

void fx_start_held(struct fx *f)
{
    probe_hold(&f->p);
    fx_start(f, 0);
    fx_wait_entered(f);
}

void fx_run(struct fx *f, uint64_t loops)
{
    fx_start(f, loops);
    ck_assert_int_eq(lsvc_join(f->svc, 10), 0);
}

void fx_stop(struct fx *f)
{
    int rc = lsvc_stop(f->svc, true);
    ck_assert_msg(rc == 0, "lsvc_stop(%s, true) returned %d", f->cls.name, rc);
}

void fx_release_and_join(struct fx *f)
{
    probe_release(&f->p);
    ck_assert_int_eq(lsvc_join(f->svc, 10), 0);
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert_str_eq(f->p.events, "SRT");
}

void fx_free(struct fx *f)
{
    int rc = lsvc_destroy(f->svc);
    ck_assert_msg(rc == 0, "lsvc_destroy(%s) returned %d", f->cls.name, rc);
    f->svc = NULL;
    probe_destroy(&f->p);
}

void fx_end(struct fx *f)
{
    fx_stop(f);
    fx_free(f);
}

static void gfx_teardown(void *arg)
{
    struct gfx *g = arg;
    if (g->g != NULL)
        gfx_free(g);
    free(g);
}

struct gfx *gfx_new(void)
{
    struct gfx *g = zalloc(sizeof(*g));
    g->limit = 5.0;
    ck_assert_int_eq(lsvc_group_create(&g->g), 0);
    at_teardown(gfx_teardown, g);
    return g;
}

int gfx_add_class(struct gfx *g, const lsvc_class *cls,
                  const lsvc_options *opts)
{
    ck_assert_int_lt(g->n, GFX_MAX);
    int i = g->n++;
    fx_create(&g->m[i], cls, opts);
    ck_assert_int_eq(lsvc_group_add(g->g, g->m[i].svc), 0);
    return i;
}

int gfx_add(struct gfx *g, const char *name, double seconds,
            const lsvc_options *opts)
{
    const lsvc_class cls = PROBE_CLASS(name, seconds);
    return gfx_add_class(g, &cls, opts);
}

void gfx_start(struct gfx *g)
{
    ck_assert_int_eq(lsvc_group_start(g->g), 0);
}

void gfx_wait_first_runs(struct gfx *g)
{
    for (int i = 0; i < g->n; i++)
        ck_assert_msg(sem_wait_for(&g->m[i].p.entered, g->limit),
                      "%s did not run", g->m[i].cls.name);
}

/* lsvc_group_wait, which must return 0 within g->limit of t0. */
static void gfx_wait_since(struct gfx *g, int64_t t0)
{
    ck_assert_int_eq(lsvc_group_wait(g->g), 0);
    ck_assert_msg(seconds_since(t0) < g->limit,
                  "the group took %.3f s to stop", seconds_since(t0));
    for (int i = 0; i < g->n; i++)
        ck_assert_msg(!lsvc_is_running(g->m[i].svc), "%s still runs",
                      g->m[i].cls.name);
}

void gfx_wait(struct gfx *g)
{
    gfx_wait_since(g, now_ns());
}

void gfx_stop(struct gfx *g)
{
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_stop(g->g), 0);
    gfx_wait_since(g, t0);
}

void gfx_free(struct gfx *g)
{
    ck_assert_int_eq(lsvc_group_destroy(g->g), 0);
    g->g = NULL;
    for (int i = 0; i < g->n; i++)
        if (g->m[i].svc != NULL)
            fx_free(&g->m[i]);
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

sigset_t signal_set_of(int sig)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    return set;
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

static void default_action(int sig)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
}

void default_signal_actions(void)
{
    default_action(SIGINT);
    default_action(SIGTERM);
    default_action(SIGUSR1);
}

void alarm_after(unsigned seconds)
{
    default_action(SIGALRM);
    const sigset_t alrm = signal_set_of(SIGALRM);
    pthread_sigmask(SIG_UNBLOCK, &alrm, NULL);
    alarm(seconds);
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

/* --- Child processes ------------------------------------------------------- */

void child_spawn(struct child *c, const char *path, const char *arg, int out)
{
    pid_t parent = getpid();
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    memset(c, 0, sizeof(*c));
    c->pid = fork();
    ck_assert_int_ge(c->pid, 0);
    if (c->pid == 0) {
        /* A failed test must not leave its child running. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        /* The program sets up its own mask, as one started from a shell
         * must. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(fds[1], out);
        close(fds[0]);
        close(fds[1]);
        execl(path, path, arg, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    c->fd = fds[0];
}

void child_spawn_argv(struct child *c, const char *const argv[], int out)
{
    extern char **environ;
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    /* Another thread's child must not hold the write end open. */
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    memset(c, 0, sizeof(*c));
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none;
    sigemptyset(&none);
    ck_assert_int_eq(posix_spawn_file_actions_init(&actions), 0);
    ck_assert_int_eq(
        posix_spawn_file_actions_adddup2(&actions, fds[1], out), 0);
    ck_assert_int_eq(posix_spawnattr_init(&attr), 0);
    ck_assert_int_eq(posix_spawnattr_setsigmask(&attr, &none), 0);
    ck_assert_int_eq(
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK), 0);
    int rc = posix_spawn(&c->pid, argv[0], &actions, &attr,
                         (char *const *)argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    ck_assert_msg(rc == 0, "posix_spawn(%s): %s", argv[0], strerror(rc));
    c->fd = fds[0];
}

bool child_read_until(struct child *c,
                      bool (*done)(const char *text, const void *ctx),
                      const void *ctx, double seconds)
{
    int64_t start = now_ns();
    for (;;) {
        if (done != NULL ? done(c->text, ctx) : c->eof)
            return true;
        int left_ms = (int)((seconds - seconds_since(start)) * 1000);
        if (c->eof || left_ms <= 0)
            return false;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int rc = poll(&pfd, 1, left_ms);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return false;
        ssize_t n = read(c->fd, c->text + c->len, sizeof(c->text) - 1 - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            c->eof = true;
        } else {
            c->len += (size_t)n;
            c->text[c->len] = '\0';
        }
    }
}

/* --- Suites ---------------------------------------------------------------- */

TCase *timed_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, NULL, run_teardowns);
    return tc;
}

TCase *add_tests(Suite *s, const char *name, const TTest *const *tests)
{
    TCase *tc = timed_tcase(name);
    for (; *tests != NULL; tests++)
        tcase_add_test(tc, *tests);
    suite_add_tcase(s, tc);
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
