/*
 * systemd's notify protocol, seen from the receiving end: each test binds
 * its own AF_UNIX datagram socket (a path in a fresh temporary directory,
 * or an abstract name), points NOTIFY_SOCKET at it, and reads what the
 * group sends: READY=1 after every enabled service's on_start, STOPPING=1
 * when the group begins to stop, WATCHDOG=1 every WATCHDOG_USEC / 2 while
 * no run is stuck. Then what happens without a usable socket, and the
 * argument checks of lsvc_group_set_notify and lsvc_group_set_stuck_after.
 *
 * Each test runs in its own forked child, and sets the environment before
 * it creates any thread there, so setenv() is safe.
 */
#include "helpers.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

/* Bound for events that should take milliseconds, wide for sanitizers
 * and valgrind on loaded cores. */
#define EVENT_LIMIT_S 5.0

/* WATCHDOG_USEC of the watchdog tests: a ping is due every 50 ms. */
#define WATCHDOG_USEC_TEXT "100000"

/* A window with no ping in it: twelve ping periods, so that silence there
 * cannot be a late ping. */
#define SILENCE_S 0.6

/* --- The receiving socket ---------------------------------------------------- */

#define ORDER_MAX 256

struct listener {
    int fd;
    char dir[32];  /* temporary directory of a path socket; "" otherwise */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int datagrams;
    int ready, stopping, watchdog; /* lines READY=1, STOPPING=1, WATCHDOG=1 */
    char order[ORDER_MAX + 1];     /* 'R', 'S' and 'W', as they came */
    char bad[128];                 /* the first line that is not KEY=VALUE */
};

static int bind_datagram_socket(const struct sockaddr_un *addr, socklen_t len)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    ck_assert_msg(bind(fd, (const struct sockaddr *)addr, len) == 0,
                  "bind: %s", strerror(errno));
    return fd;
}

/* Binds a socket at a path in a new temporary directory, and names it in
 * NOTIFY_SOCKET. */
static void listen_on_path(struct listener *l)
{
    memset(l, 0, sizeof(*l));
    strcpy(l->dir, "/tmp/lsvc-notify-XXXXXX");
    ck_assert_msg(mkdtemp(l->dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(l->path, sizeof(l->path), "%s/notify", l->dir);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, l->path);
    l->fd = bind_datagram_socket(&addr, sizeof(addr));
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", l->path, 1), 0);
}

/* Binds a socket to an abstract name, which has no file and is named
 * "@name" in NOTIFY_SOCKET. Its address is exactly the name's bytes after
 * a NUL: no terminator, no padding. */
static void listen_on_abstract_name(struct listener *l)
{
    memset(l, 0, sizeof(*l));
    char name[64], env[72];
    snprintf(name, sizeof(name), "lsvc-notify-test-%ld-%lld", (long)getpid(),
             (long long)now_ns());
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path + 1, name, strlen(name));
    socklen_t len =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
    l->fd = bind_datagram_socket(&addr, len);
    snprintf(env, sizeof(env), "@%s", name);
    ck_assert_int_eq(setenv("NOTIFY_SOCKET", env, 1), 0);
}

static void listener_close(struct listener *l)
{
    close(l->fd);
    if (l->dir[0] != '\0') {
        unlink(l->path);
        rmdir(l->dir);
    }
}

static bool line_is(const char *line, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(line, want, len) == 0;
}

static void take_line(struct listener *l, const char *line, size_t len)
{
    char kind = 0;
    if (len == 0)
        return;
    if (line_is(line, len, "READY=1")) {
        l->ready++;
        kind = 'R';
    } else if (line_is(line, len, "STOPPING=1")) {
        l->stopping++;
        kind = 'S';
    } else if (line_is(line, len, "WATCHDOG=1")) {
        l->watchdog++;
        kind = 'W';
    }
    size_t n = strlen(l->order);
    if (kind != 0 && n < ORDER_MAX)
        l->order[n] = kind;
    if (memchr(line, '=', len) == NULL && l->bad[0] == '\0')
        snprintf(l->bad, sizeof(l->bad), "%.*s", (int)len, line);
}

/* A datagram may carry several lines (STATUS=... and the like). */
static void take_datagram(struct listener *l, const char *buf, size_t n)
{
    l->datagrams++;
    const char *p = buf, *end = buf + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        take_line(l, p, len);
        p += len + 1;
    }
}

/* Reads one datagram, waiting at most timeout_ms; false when none came. */
static bool receive_one(struct listener *l, int timeout_ms)
{
    struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
    int rc;
    while ((rc = poll(&pfd, 1, timeout_ms)) == -1 && errno == EINTR) {
    }
    ck_assert_msg(rc >= 0, "poll: %s", strerror(errno));
    if (rc == 0)
        return false;
    char buf[4096];
    ssize_t n;
    while ((n = recv(l->fd, buf, sizeof(buf), 0)) == -1 && errno == EINTR) {
    }
    ck_assert_msg(n >= 0, "recv: %s", strerror(errno));
    take_datagram(l, buf, (size_t)n);
    return true;
}

static int ms_until(int64_t deadline)
{
    int64_t left = deadline - now_ns();
    return left <= 0 ? 0 : (int)((left + NS_PER_MS - 1) / NS_PER_MS);
}

/* Reads until *count reaches want, at most `seconds`. */
static bool wait_count(struct listener *l, const int *count, int want,
                       double seconds)
{
    int64_t deadline = now_ns() + (int64_t)(seconds * 1e9);
    while (*count < want) {
        if (now_ns() >= deadline)
            return false;
        receive_one(l, ms_until(deadline));
    }
    return true;
}

/* Reads everything that comes for `seconds`. */
static void listen_for(struct listener *l, double seconds)
{
    int64_t deadline = now_ns() + (int64_t)(seconds * 1e9);
    while (now_ns() < deadline)
        receive_one(l, ms_until(deadline));
}

/* Reads what is already queued. A datagram sent is queued before its
 * sendto() returns, so this sees everything sent so far. */
static void drain(struct listener *l)
{
    while (receive_one(l, 0)) {
    }
}

static void check_well_formed(const struct listener *l)
{
    ck_assert_msg(l->bad[0] == '\0', "a line is not KEY=VALUE: \"%s\"", l->bad);
}

/* --- Environment and log ------------------------------------------------------ */

/* The service whose stuck WARNING a test times. Set before any library
 * thread exists and only read afterwards. */
static const char *watched_name;
static atomic_llong watched_warning_ns; /* first WARNING naming it; 0 = none */

static void stamping_sink(int level, const char *logger, const char *message,
                          void *ctx)
{
    if (level == LSVC_LOG_WARNING && watched_name != NULL &&
        strstr(message, watched_name) != NULL) {
        long long none = 0;
        atomic_compare_exchange_strong(&watched_warning_ns, &none,
                                       (long long)now_ns());
    }
    log_capture_sink(level, logger, message, ctx);
}

/* A known start: nothing inherited from the shell that runs the suite,
 * where a real systemd may have set these, and every message recorded. */
static void notify_setup(void)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    log_capture();
    lsvc_set_logger(stamping_sink, NULL);
    lsvc_set_log_level(LSVC_LOG_INFO);
}

static void set_var(const char *name, const char *value)
{
    ck_assert_int_eq(setenv(name, value, 1), 0);
}

/* --- Fixture: services in one group ---------------------------------------- */

#define MAX_SERVICES 3

static const lsvc_class first_class = PROBE_CLASS("First", 60);
static const lsvc_class second_class = PROBE_CLASS("Second", 60);

struct fixture {
    int n;
    struct probe p[MAX_SERVICES];
    lsvc *svc[MAX_SERVICES];
    lsvc_group *g;
};

static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    ck_assert_int_eq(lsvc_group_create(&f->g), 0);
}

static int fixture_add(struct fixture *f, const lsvc_class *cls)
{
    ck_assert_int_lt(f->n, MAX_SERVICES);
    int i = f->n++;
    probe_init(&f->p[i]);
    f->svc[i] = make_service(cls, &f->p[i], NULL);
    ck_assert_int_eq(lsvc_group_add(f->g, f->svc[i]), 0);
    return i;
}

/* First and Second, both due every minute: they run once and then only
 * sleep, so every datagram comes from the group itself. */
static void fixture_two(struct fixture *f)
{
    fixture_init(f);
    fixture_add(f, &first_class);
    fixture_add(f, &second_class);
}

static void wait_first_runs(struct fixture *f)
{
    for (int i = 0; i < f->n; i++)
        ck_assert_msg(sem_wait_for(&f->p[i].entered, EVENT_LIMIT_S),
                      "service %d did not run", i);
}

static void fixture_stop(struct fixture *f)
{
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_stop(f->g), 0);
    ck_assert_int_eq(lsvc_group_wait(f->g), 0);
    ck_assert_msg(seconds_since(t0) < EVENT_LIMIT_S,
                  "the group took %.3f s to stop", seconds_since(t0));
}

static void fixture_free(struct fixture *f)
{
    ck_assert_int_eq(lsvc_group_destroy(f->g), 0);
    for (int i = 0; i < f->n; i++) {
        ck_assert_int_eq(lsvc_destroy(f->svc[i]), 0);
        probe_destroy(&f->p[i]);
    }
}

static bool probe_started(struct probe *p)
{
    pthread_mutex_lock(&p->lock);
    bool started = strchr(p->events, 'S') != NULL;
    pthread_mutex_unlock(&p->lock);
    return started;
}

/* --- READY=1 ----------------------------------------------------------------- */

START_TEST(test_ready_is_sent_once_group_start_returns)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert_msg(wait_count(&l, &l.ready, 1, EVENT_LIMIT_S),
                  "no READY=1 in %d datagram(s)", l.datagrams);
    check_well_formed(&l);
    fixture_stop(&f);
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

/* An on_start that waits for the test to open its gate. */
struct gate {
    sem_t entered; /* posted as on_start begins */
    sem_t open;    /* what on_start waits for */
};

static int gated_on_start(lsvc *svc, void *arg)
{
    struct probe *p = arg;
    struct gate *gate = p->user;
    sem_post(&gate->entered);
    while (sem_wait(&gate->open) == -1 && errno == EINTR) {
    }
    return probe_on_start(svc, arg);
}

/* READY=1 tells systemd that the group's threads are up, not that every
 * on_start has finished: lsvc_group_start does not wait on user code. */
START_TEST(test_ready_does_not_wait_for_on_start)
{
    static const lsvc_class gated_class = {
        .name = "Gated", .loop_seconds = 60, .run_once = probe_run_once,
        .on_start = gated_on_start, .on_stop = probe_on_stop,
    };
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    struct gate gate;
    sem_init(&gate.entered, 0, 0);
    sem_init(&gate.open, 0, 0);
    struct fixture f;
    fixture_init(&f);
    fixture_add(&f, &first_class);
    int gated = fixture_add(&f, &gated_class);
    f.p[gated].user = &gate;

    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(sem_wait_for(&gate.entered, EVENT_LIMIT_S));
    bool ready = wait_count(&l, &l.ready, 1, EVENT_LIMIT_S);
    bool started = probe_started(&f.p[gated]);
    /* Checked once the gate is open, so that a failure leaves no thread
     * blocked behind it. */
    sem_post(&gate.open);
    ck_assert_msg(ready, "no READY=1 while an on_start was running");
    ck_assert_msg(!started, "the gated on_start finished before the gate opened");
    fixture_stop(&f);
    fixture_free(&f);
    sem_destroy(&gate.entered);
    sem_destroy(&gate.open);
    listener_close(&l);
}
END_TEST

START_TEST(test_ready_reaches_an_abstract_socket)
{
    notify_setup();
    struct listener l;
    listen_on_abstract_name(&l);
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert_msg(wait_count(&l, &l.ready, 1, EVENT_LIMIT_S),
                  "no READY=1 on the abstract socket");
    wait_first_runs(&f);
    fixture_stop(&f);
    drain(&l);
    ck_assert_int_eq(l.stopping, 1);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

START_TEST(test_ready_is_sent_when_a_service_is_disabled)
{
    static const lsvc_class off_class = PROBE_CLASS("SwitchedOff", 60);
    notify_setup();
    set_var("LOOPSVC_SWITCHEDOFF_ENABLED", "0");
    struct listener l;
    listen_on_path(&l);
    struct fixture f;
    fixture_init(&f);
    int off = fixture_add(&f, &off_class);
    fixture_add(&f, &first_class);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert_msg(wait_count(&l, &l.ready, 1, EVENT_LIMIT_S),
                  "no READY=1 with a disabled service in the group");
    fixture_stop(&f);
    ck_assert_str_eq(f.p[off].events, "");
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

START_TEST(test_no_ready_when_group_start_fails)
{
    static const lsvc_class rt_class = PROBE_CLASS("Realtime", 60);
    /* First: the socket's owner must be the user that sends to it. */
    drop_realtime_permission();
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    struct fixture f;
    fixture_init(&f);
    fixture_add(&f, &first_class);
    struct probe rp;
    probe_init(&rp);
    const lsvc_options rt = {.sched_priority = 10};
    lsvc *realtime = make_service(&rt_class, &rp, &rt);
    ck_assert_int_eq(lsvc_group_add(f.g, realtime), 0);
    ck_assert_int_eq(lsvc_group_start(f.g), EPERM);
    listen_for(&l, 0.3);
    ck_assert_msg(l.ready == 0, "READY=1 for a group that failed to start");
    fixture_free(&f);
    ck_assert_int_eq(lsvc_destroy(realtime), 0);
    probe_destroy(&rp);
    listener_close(&l);
}
END_TEST

/* --- STOPPING=1 -------------------------------------------------------------- */

/* systemd should hear of the stop when it begins, not once the slowest
 * run has ended: a held run keeps the group from ending meanwhile. */
START_TEST(test_stopping_is_sent_when_group_stop_begins)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    struct fixture f;
    fixture_two(&f);
    probe_hold(&f.p[0]);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(wait_count(&l, &l.ready, 1, EVENT_LIMIT_S));
    wait_first_runs(&f);
    drain(&l);
    ck_assert_msg(l.stopping == 0, "STOPPING=1 before any stop");
    ck_assert_int_eq(lsvc_group_stop(f.g), 0);
    bool told = wait_count(&l, &l.stopping, 1, EVENT_LIMIT_S);
    bool held = lsvc_is_running(f.svc[0]);
    /* Released before the checks, so that a failure leaves no run held. */
    probe_release(&f.p[0]);
    ck_assert_int_eq(lsvc_group_wait(f.g), 0);
    ck_assert_msg(told, "no STOPPING=1 while the group was stopping");
    ck_assert(held);
    check_well_formed(&l);
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

START_TEST(test_stopping_is_sent_once_before_group_wait_returns)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(wait_count(&l, &l.ready, 1, EVENT_LIMIT_S));
    wait_first_runs(&f);
    ck_assert_int_eq(lsvc_group_stop(f.g), 0);
    ck_assert_int_eq(lsvc_group_stop(f.g), 0);
    ck_assert_int_eq(lsvc_group_wait(f.g), 0);
    drain(&l);
    /* One start, one stop: one of each, in that order. */
    ck_assert_str_eq(l.order, "RS");
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

START_TEST(test_stopping_is_sent_on_sigterm)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(wait_count(&l, &l.ready, 1, EVENT_LIMIT_S));
    wait_first_runs(&f);
    drain(&l);
    ck_assert_int_eq(l.stopping, 0);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    /* Before any wait: the signal alone must tell systemd. */
    ck_assert_msg(wait_count(&l, &l.stopping, 1, EVENT_LIMIT_S),
                  "no STOPPING=1 after SIGTERM");
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_wait(f.g), 0);
    ck_assert_msg(seconds_since(t0) < EVENT_LIMIT_S,
                  "the group took %.3f s to stop", seconds_since(t0));
    drain(&l);
    ck_assert_str_eq(l.order, "RS");
    ck_assert(log_find(0, LSVC_LOG_INFO, "received SIGTERM", NULL));
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

static void stop_self_at_second_run(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)p;
    if (run == 1)
        lsvc_stop(svc, false);
}

/* systemd takes STOPPING=1 as the whole process going down: services
 * that end by themselves do not say that. */
START_TEST(test_no_stopping_when_services_end_on_their_own)
{
    static const lsvc_class a_cls = PROBE_CLASS("SelfA", 0.01);
    static const lsvc_class b_cls = PROBE_CLASS("SelfB", 0.01);
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    struct fixture f;
    fixture_init(&f);
    int a = fixture_add(&f, &a_cls);
    int b = fixture_add(&f, &b_cls);
    f.p[a].during = f.p[b].during = stop_self_at_second_run;
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(wait_not_running(f.svc[a], EVENT_LIMIT_S));
    ck_assert(wait_not_running(f.svc[b], EVENT_LIMIT_S));
    ck_assert_int_eq(lsvc_group_wait(f.g), 0);
    drain(&l);
    ck_assert_str_eq(l.order, "R");
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

/* --- Nothing sent ------------------------------------------------------------ */

/* Runs the two services with a watchdog set, and checks that the socket
 * got nothing. */
static void check_silent_run(struct listener *l, bool notify)
{
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    struct fixture f;
    fixture_two(&f);
    if (!notify)
        ck_assert_int_eq(lsvc_group_set_notify(f.g, false), 0);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    wait_first_runs(&f);
    listen_for(l, SILENCE_S);
    fixture_stop(&f);
    drain(l);
    ck_assert_msg(l->datagrams == 0, "%d datagram(s) came: %s", l->datagrams,
                  l->order);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    fixture_free(&f);
}

START_TEST(test_nothing_is_sent_when_notify_is_off)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    check_silent_run(&l, false);
    listener_close(&l);
}
END_TEST

START_TEST(test_nothing_is_sent_without_notify_socket)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
    check_silent_run(&l, true);
    listener_close(&l);
}
END_TEST

/* --- WATCHDOG=1 -------------------------------------------------------------- */

/* Starts the two services and checks that pings come, about every 50 ms:
 * at least three, and no flood. */
static void check_pings(struct listener *l)
{
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(wait_count(l, &l->ready, 1, EVENT_LIMIT_S));
    ck_assert_msg(wait_count(l, &l->watchdog, 3, EVENT_LIMIT_S),
                  "%d WATCHDOG=1 in %.0f s", l->watchdog, EVENT_LIMIT_S);
    int before = l->watchdog;
    listen_for(l, 1.0);
    int per_second = l->watchdog - before;
    /* 20 expected; a ping per run or per wake-up would be many more. */
    ck_assert_msg(per_second <= 60, "%d WATCHDOG=1 in one second",
                  per_second);
    check_well_formed(l);
    fixture_stop(&f);
    fixture_free(&f);
}

START_TEST(test_watchdog_pings_every_half_watchdog_usec)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    check_pings(&l);
    listener_close(&l);
}
END_TEST

START_TEST(test_watchdog_pings_when_watchdog_pid_is_this_process)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    set_var("WATCHDOG_PID", pid);
    check_pings(&l);
    listener_close(&l);
}
END_TEST

START_TEST(test_no_pings_when_watchdog_pid_is_another_process)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld", (long)getppid());
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    set_var("WATCHDOG_PID", pid);
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    /* The watchdog is for the other process; readiness is still ours. */
    ck_assert(wait_count(&l, &l.ready, 1, EVENT_LIMIT_S));
    listen_for(&l, 2 * SILENCE_S);
    ck_assert_msg(l.watchdog == 0, "%d WATCHDOG=1 for another pid's watchdog",
                  l.watchdog);
    fixture_stop(&f);
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

START_TEST(test_no_thread_left_after_group_wait_with_watchdog)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    struct threads before;
    threads_baseline(&before);
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(wait_count(&l, &l.watchdog, 1, EVENT_LIMIT_S));
    fixture_stop(&f);
    ck_assert_msg(wait_threads_back_to(&before, EVENT_LIMIT_S),
                  "%d thread(s) left", threads_added(&before));
    /* And the pings end with it. */
    drain(&l);
    int pings = l.watchdog;
    listen_for(&l, SILENCE_S);
    ck_assert_int_eq(l.watchdog, pings);
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

/* --- Stuck services ---------------------------------------------------------- */

START_TEST(test_stuck_service_stops_the_pings_until_its_run_ends)
{
    static const lsvc_class hung_class = PROBE_CLASS("Hung-Chore", 0.02);
    notify_setup();
    watched_name = "Hung-Chore";
    struct listener l;
    listen_on_path(&l);
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    struct fixture f;
    fixture_init(&f);
    int hung = fixture_add(&f, &hung_class);
    /* Stuck once a run has lasted 5 intervals: 100 ms. */
    ck_assert_int_eq(lsvc_group_set_stuck_after(f.g, 5), 0);
    probe_hold(&f.p[hung]);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(sem_wait_for(&f.p[hung].entered, EVENT_LIMIT_S));
    ck_assert_msg(log_wait(0, LSVC_LOG_WARNING, "Hung-Chore", EVENT_LIMIT_S,
                           NULL),
                  "no WARNING names the stuck service");
    /* A ping decided on just before the run became stuck may still come;
     * ten ping periods are for it. */
    listen_for(&l, 0.5);
    int pings = l.watchdog;
    listen_for(&l, SILENCE_S);
    ck_assert_msg(l.watchdog == pings,
                  "%d WATCHDOG=1 in %.1f s while a run was stuck",
                  l.watchdog - pings, SILENCE_S);
    /* Once per stuck run, however long it stays stuck. */
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "Hung-Chore"), 1);
    ck_assert(lsvc_is_running(f.svc[hung]));
    ck_assert_uint_eq(probe_runs(&f.p[hung]), 1);

    probe_release(&f.p[hung]);
    ck_assert_msg(wait_count(&l, &l.watchdog, pings + 2, EVENT_LIMIT_S),
                  "the pings did not resume once the run ended");
    fixture_stop(&f);
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

/* The stuck WARNING comes from the watchdog thread: a sink that answers
 * it by waiting for the group must be refused, not left to join itself. */
static lsvc_group *waiting_group;
static atomic_int wait_rc = -1;

static void waiting_sink(int level, const char *logger, const char *message,
                         void *ctx)
{
    if (level == LSVC_LOG_WARNING && strstr(message, "counts as stuck") != NULL)
        atomic_store(&wait_rc, lsvc_group_wait(waiting_group));
    log_capture_sink(level, logger, message, ctx);
}

START_TEST(test_group_wait_from_the_watchdog_thread_is_edeadlk)
{
    static const lsvc_class hung_class = PROBE_CLASS("Hung-Chore", 0.02);
    notify_setup();
    lsvc_set_logger(waiting_sink, NULL);
    struct listener l;
    listen_on_path(&l);
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    struct fixture f;
    fixture_init(&f);
    int hung = fixture_add(&f, &hung_class);
    waiting_group = f.g;
    ck_assert_int_eq(lsvc_group_set_stuck_after(f.g, 1), 0);
    probe_hold(&f.p[hung]);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(log_wait(0, LSVC_LOG_WARNING, "counts as stuck", EVENT_LIMIT_S, NULL));
    ck_assert_int_eq(atomic_load(&wait_rc), EDEADLK);
    probe_release(&f.p[hung]);
    fixture_stop(&f);
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

/* systemd keeps one state per process; a second speaker is a mistake the
 * log should point at. */
START_TEST(test_second_notifying_group_warns)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    struct fixture f1, f2;
    fixture_init(&f1);
    fixture_add(&f1, &first_class);
    fixture_init(&f2);
    fixture_add(&f2, &second_class);
    ck_assert_int_eq(lsvc_group_start(f1.g), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "Another group"), 0);
    ck_assert_int_eq(lsvc_group_start(f2.g), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "Another group"), 1);
    fixture_stop(&f2);
    fixture_stop(&f1);

    /* One at a time is fine, and so is a second one with notify off. */
    ck_assert_int_eq(lsvc_group_set_notify(f2.g, false), 0);
    ck_assert_int_eq(lsvc_group_start(f1.g), 0);
    ck_assert_int_eq(lsvc_group_start(f2.g), 0);
    fixture_stop(&f2);
    fixture_stop(&f1);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "Another group"), 1);
    fixture_free(&f1);
    fixture_free(&f2);
    listener_close(&l);
}
END_TEST

START_TEST(test_run_under_the_stuck_bound_keeps_the_pings)
{
    /* The default bound is 10 intervals: 20 s. */
    static const lsvc_class long_class = PROBE_CLASS("LongRun", 2);
    notify_setup();
    watched_name = "LongRun";
    struct listener l;
    listen_on_path(&l);
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    struct fixture f;
    fixture_init(&f);
    int lr = fixture_add(&f, &long_class);
    probe_hold(&f.p[lr]);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(sem_wait_for(&f.p[lr].entered, EVENT_LIMIT_S));
    drain(&l);
    int pings = l.watchdog;
    ck_assert_msg(wait_count(&l, &l.watchdog, pings + 3, EVENT_LIMIT_S),
                  "the pings stopped during a run shorter than the bound");
    ck_assert_uint_eq(probe_runs(&f.p[lr]), 1);
    ck_assert_int_eq(atomic_load(&watched_warning_ns), 0);
    probe_release(&f.p[lr]);
    fixture_stop(&f);
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

/* Holds the first run of a service of interval 0.05 s and returns how long
 * after the group's start the stuck WARNING came. The run begins after
 * that, so this is never shorter than the time the run had lasted. */
static double seconds_to_stuck_warning(double stuck_after)
{
    static const lsvc_class cls = PROBE_CLASS("Timed-Hang", 0.05);
    notify_setup();
    watched_name = "Timed-Hang";
    struct listener l;
    listen_on_path(&l);
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, &cls);
    if (stuck_after > 0)
        ck_assert_int_eq(lsvc_group_set_stuck_after(f.g, stuck_after), 0);
    probe_hold(&f.p[s]);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(sem_wait_for(&f.p[s].entered, EVENT_LIMIT_S));
    ck_assert_msg(log_wait(0, LSVC_LOG_WARNING, "Timed-Hang",
                           EVENT_LIMIT_S + 1.0, NULL),
                  "no WARNING names the stuck service");
    double after = (double)(atomic_load(&watched_warning_ns) - t0) / 1e9;
    probe_release(&f.p[s]);
    fixture_stop(&f);
    fixture_free(&f);
    listener_close(&l);
    return after;
}

/* A WARNING can come late on a loaded machine, never early. */
START_TEST(test_stuck_bound_defaults_to_ten_intervals)
{
    double after = seconds_to_stuck_warning(0);
    ck_assert_msg(after >= 0.5, "stuck after %.3f s, not 10 x 0.05 s", after);
}
END_TEST

START_TEST(test_stuck_after_sets_the_bound)
{
    double after = seconds_to_stuck_warning(20);
    ck_assert_msg(after >= 1.0, "stuck after %.3f s, not 20 x 0.05 s", after);
}
END_TEST

/* --- Unusable settings ------------------------------------------------------- */

/* A path one byte too long is enough; this one is far beyond. */
static const char *unusable_socket(int i)
{
    static char too_long[300];
    static const char *const values[] = {"relative/path", "", "./notify",
                                         "vsock:2:1234", "notify", NULL};
    if (values[i] != NULL)
        return values[i];
    strcpy(too_long, "/tmp/");
    memset(too_long + 5, 'n', sizeof(too_long) - 6);
    return too_long;
}
#define UNUSABLE_SOCKETS 6

START_TEST(test_unusable_notify_socket_warns_and_group_runs)
{
    notify_setup();
    set_var("NOTIFY_SOCKET", unusable_socket(_i));
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    /* At the start, from the value itself: not later, from a send that
     * failed (a relative path would be tried against the working
     * directory). */
    ck_assert_msg(log_find(0, LSVC_LOG_WARNING, "NOTIFY_SOCKET", NULL),
                  "no WARNING names NOTIFY_SOCKET=\"%.40s\" once "
                  "lsvc_group_start has returned",
                  unusable_socket(_i));
    wait_first_runs(&f);
    fixture_stop(&f);
    ck_assert_str_eq(f.p[0].events, "SRT");
    ck_assert_str_eq(f.p[1].events, "SRT");
    fixture_free(&f);
}
END_TEST

START_TEST(test_notify_socket_without_listener_does_not_stop_the_group)
{
    static const lsvc_class busy_class = PROBE_CLASS("Busy", 0.02);
    notify_setup();
    char dir[] = "/tmp/lsvc-notify-XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/nobody", dir);
    set_var("NOTIFY_SOCKET", path);
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    struct fixture f;
    fixture_init(&f);
    int busy = fixture_add(&f, &busy_class);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    /* Long enough for several pings to fail. */
    ck_assert(probe_wait_runs(&f.p[busy], 10, EVENT_LIMIT_S));
    ck_assert(lsvc_is_running(f.svc[busy]));
    fixture_stop(&f);
    ck_assert_msg(log_count(LSVC_LOG_ERROR, NULL) == 0,
                  "a missing listener was logged as an error");
    fixture_free(&f);
    rmdir(dir);
}
END_TEST

static const char *const unusable_watchdog[] = {
    "", "abc", "0", "1", "1999", "-100000", "100000us", "99999999999999999999999",
};

START_TEST(test_unusable_watchdog_usec_warns_and_sends_no_pings)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    set_var("WATCHDOG_USEC", unusable_watchdog[_i]);
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert_msg(wait_count(&l, &l.ready, 1, EVENT_LIMIT_S),
                  "no READY=1: the socket itself is fine");
    ck_assert_msg(log_find(0, LSVC_LOG_WARNING, "WATCHDOG_USEC", NULL),
                  "no WARNING names WATCHDOG_USEC=\"%s\" once "
                  "lsvc_group_start has returned",
                  unusable_watchdog[_i]);
    listen_for(&l, SILENCE_S);
    ck_assert_msg(l.watchdog == 0, "%d WATCHDOG=1 with WATCHDOG_USEC=\"%s\"",
                  l.watchdog, unusable_watchdog[_i]);
    fixture_stop(&f);
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

/* --- Arguments ---------------------------------------------------------------- */

START_TEST(test_set_stuck_after_rejects_values_out_of_range)
{
    ck_assert_int_eq(lsvc_group_set_stuck_after(NULL, 10), EINVAL);
    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    const double bad[] = {NAN, -NAN, 0, 0.5, 0.999999, -1, INFINITY,
                          -INFINITY, 1e7, 1000000.5};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(lsvc_group_set_stuck_after(g, bad[i]) == EINVAL,
                      "%g intervals accepted", bad[i]);
    const double good[] = {1, 1.5, 10, 1e6};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ck_assert_msg(lsvc_group_set_stuck_after(g, good[i]) == 0,
                      "%g intervals refused", good[i]);
    ck_assert_int_eq(lsvc_group_destroy(g), 0);
}
END_TEST

START_TEST(test_set_stuck_after_while_started_is_ebusy)
{
    notify_setup();
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert_int_eq(lsvc_group_set_stuck_after(f.g, 5), EBUSY);
    wait_first_runs(&f);
    fixture_stop(&f);
    ck_assert_int_eq(lsvc_group_set_stuck_after(f.g, 5), 0);
    fixture_free(&f);
}
END_TEST

START_TEST(test_set_notify_on_null_group_is_einval)
{
    ck_assert_int_eq(lsvc_group_set_notify(NULL, true), EINVAL);
    ck_assert_int_eq(lsvc_group_set_notify(NULL, false), EINVAL);
}
END_TEST

START_TEST(test_set_notify_while_started_is_ebusy)
{
    notify_setup();
    struct listener l;
    listen_on_path(&l);
    struct fixture f;
    fixture_two(&f);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert_int_eq(lsvc_group_set_notify(f.g, false), EBUSY);
    ck_assert_int_eq(lsvc_group_set_notify(f.g, true), EBUSY);
    wait_first_runs(&f);
    fixture_stop(&f);
    /* Refused, so the group kept speaking the protocol. */
    drain(&l);
    ck_assert_str_eq(l.order, "RS");
    ck_assert_int_eq(lsvc_group_set_notify(f.g, false), 0);
    fixture_free(&f);
    listener_close(&l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("notify");

    TCase *ready = timed_tcase("ready");
    tcase_add_test(ready, test_ready_is_sent_once_group_start_returns);
    tcase_add_test(ready, test_ready_does_not_wait_for_on_start);
    tcase_add_test(ready, test_ready_reaches_an_abstract_socket);
    tcase_add_test(ready, test_ready_is_sent_when_a_service_is_disabled);
    tcase_add_test(ready, test_no_ready_when_group_start_fails);
    suite_add_tcase(s, ready);

    TCase *stopping = timed_tcase("stopping");
    tcase_add_test(stopping, test_stopping_is_sent_when_group_stop_begins);
    tcase_add_test(stopping, test_stopping_is_sent_once_before_group_wait_returns);
    tcase_add_test(stopping, test_stopping_is_sent_on_sigterm);
    tcase_add_test(stopping, test_no_stopping_when_services_end_on_their_own);
    tcase_add_test(stopping, test_nothing_is_sent_when_notify_is_off);
    tcase_add_test(stopping, test_nothing_is_sent_without_notify_socket);
    suite_add_tcase(s, stopping);

    TCase *watchdog = timed_tcase("watchdog");
    tcase_add_test(watchdog, test_watchdog_pings_every_half_watchdog_usec);
    tcase_add_test(watchdog, test_watchdog_pings_when_watchdog_pid_is_this_process);
    tcase_add_test(watchdog, test_no_pings_when_watchdog_pid_is_another_process);
    tcase_add_test(watchdog, test_no_thread_left_after_group_wait_with_watchdog);
    tcase_add_test(watchdog, test_stuck_service_stops_the_pings_until_its_run_ends);
    tcase_add_test(watchdog, test_run_under_the_stuck_bound_keeps_the_pings);
    tcase_add_test(watchdog, test_group_wait_from_the_watchdog_thread_is_edeadlk);
    tcase_add_test(watchdog, test_second_notifying_group_warns);
    tcase_add_test(watchdog, test_stuck_bound_defaults_to_ten_intervals);
    tcase_add_test(watchdog, test_stuck_after_sets_the_bound);
    suite_add_tcase(s, watchdog);

    TCase *unusable = timed_tcase("unusable settings");
    tcase_add_loop_test(unusable, test_unusable_notify_socket_warns_and_group_runs,
                        0, UNUSABLE_SOCKETS);
    tcase_add_test(unusable,
                   test_notify_socket_without_listener_does_not_stop_the_group);
    tcase_add_loop_test(unusable,
                        test_unusable_watchdog_usec_warns_and_sends_no_pings, 0,
                        (int)(sizeof(unusable_watchdog) /
                              sizeof(unusable_watchdog[0])));
    suite_add_tcase(s, unusable);

    TCase *args = timed_tcase("arguments");
    tcase_add_test(args, test_set_stuck_after_rejects_values_out_of_range);
    tcase_add_test(args, test_set_stuck_after_while_started_is_ebusy);
    tcase_add_test(args, test_set_notify_on_null_group_is_einval);
    tcase_add_test(args, test_set_notify_while_started_is_ebusy);
    suite_add_tcase(s, args);
    return run_suite(s);
}
