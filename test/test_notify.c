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

static void listener_close(void *arg)
{
    struct listener *l = arg;
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

/* An empty group that speaks the notify protocol, which is off by
 * default. */
static struct gfx *notifying_gfx(void)
{
    struct gfx *g = gfx_new();
    ck_assert_int_eq(lsvc_group_set_notify(g->g, true), 0);
    return g;
}

/* First and Second, both due every minute: they run once and then only
 * sleep, so every datagram comes from the group itself. */
static struct gfx *first_and_second(void)
{
    struct gfx *g = notifying_gfx();
    gfx_add(g, "First", 60, NULL);
    gfx_add(g, "Second", 60, NULL);
    return g;
}

/* A group of one service, `name`, of interval `seconds`, whose runs are
 * held, and whose stuck WARNING the sink times. */
static struct gfx *one_held(const char *name, double seconds)
{
    watched_name = name;
    struct gfx *g = notifying_gfx();
    gfx_add(g, name, seconds, NULL);
    probe_hold(&g->m[0].p);
    return g;
}

static bool probe_started(struct probe *p)
{
    pthread_mutex_lock(&p->lock);
    bool started = strchr(p->events, 'S') != NULL;
    pthread_mutex_unlock(&p->lock);
    return started;
}

/* A known start, and a socket at a path listening as NOTIFY_SOCKET. */
static struct listener *listening(void)
{
    notify_setup();
    struct listener *l = test_alloc(sizeof(*l));
    listen_on_path(l);
    at_teardown(listener_close, l);
    return l;
}

/* Waits for the group's READY=1. */
static void wait_ready(struct listener *l)
{
    ck_assert_msg(wait_count(l, &l->ready, 1, EVENT_LIMIT_S),
                  "no READY=1 in %d datagram(s)", l->datagrams);
}

/* --- READY=1 ----------------------------------------------------------------- */

START_TEST(test_ready_is_sent_once_group_start_returns)
{
    struct listener *l = listening();
    struct gfx *g = first_and_second();
    gfx_start(g);
    wait_ready(l);
    check_well_formed(l);
    gfx_stop(g);
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

/* lsvc_group_start on a thread of its own: it returns only once every
 * on_start has returned. */
static void *group_start_in_thread(void *arg)
{
    return (void *)(intptr_t)lsvc_group_start(arg);
}

/* READY=1 tells systemd that every service has started and its on_start
 * has returned: lsvc_group_start waits for them, then sends it. */
START_TEST(test_ready_waits_for_every_on_start)
{
    static const lsvc_class gated_class = {
        .name = "Gated", .loop_seconds = 60, .run_once = probe_run_once,
        .on_start = gated_on_start, .on_stop = probe_on_stop,
    };
    struct listener *l = listening();
    struct gate gate;
    sems_init(2, &gate.entered, &gate.open);
    struct gfx *g = notifying_gfx();
    gfx_add(g, "First", 60, NULL);
    struct probe *gated = &g->m[gfx_add_class(g, &gated_class, NULL)].p;
    gated->user = &gate;

    pthread_t starter;
    ck_assert_int_eq(pthread_create(&starter, NULL, group_start_in_thread,
                                    g->g), 0);
    ck_assert(sem_wait_for(&gate.entered, EVENT_LIMIT_S));
    /* Time is the point: nothing while the on_start is held. */
    bool early = wait_count(l, &l->ready, 1, 0.3);
    sem_post(&gate.open);
    void *rc;
    ck_assert_int_eq(pthread_join(starter, &rc), 0);
    ck_assert_int_eq((int)(intptr_t)rc, 0);
    ck_assert_msg(!early, "READY=1 came while an on_start was running");
    ck_assert(probe_started(gated));
    ck_assert_msg(wait_count(l, &l->ready, 1, EVENT_LIMIT_S),
                  "no READY=1 once the on_start returned");
    gfx_stop(g);
    sems_destroy(2, &gate.entered, &gate.open);
}
END_TEST

START_TEST(test_ready_reaches_an_abstract_socket)
{
    notify_setup();
    struct listener l;
    listen_on_abstract_name(&l);
    struct gfx *g = first_and_second();
    gfx_start(g);
    ck_assert_msg(wait_count(&l, &l.ready, 1, EVENT_LIMIT_S),
                  "no READY=1 on the abstract socket");
    gfx_wait_first_runs(g);
    gfx_stop(g);
    drain(&l);
    ck_assert_int_eq(l.stopping, 1);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    listener_close(&l);
}
END_TEST

START_TEST(test_ready_is_sent_when_a_service_is_disabled)
{
    struct listener *l = listening();
    set_var("LOOPSVC_SWITCHEDOFF_ENABLED", "0");
    struct gfx *g = notifying_gfx();
    int off = gfx_add(g, "SwitchedOff", 60, NULL);
    gfx_add(g, "First", 60, NULL);
    gfx_start(g);
    ck_assert_msg(wait_count(l, &l->ready, 1, EVENT_LIMIT_S),
                  "no READY=1 with a disabled service in the group");
    gfx_stop(g);
    ck_assert_str_eq(g->m[off].p.events, "");
}
END_TEST

START_TEST(test_no_ready_when_group_start_fails)
{
    /* First: the socket's owner must be the user that sends to it. */
    drop_realtime_permission();
    struct listener *l = listening();
    const lsvc_options rt = {.sched_priority = 10};
    struct gfx *g = notifying_gfx();
    gfx_add(g, "First", 60, NULL);
    gfx_add(g, "Realtime", 60, &rt);
    ck_assert_int_eq(lsvc_group_start(g->g), EPERM);
    listen_for(l, 0.3);
    ck_assert_msg(l->ready == 0, "READY=1 for a group that failed to start");
}
END_TEST

/* --- STOPPING=1 -------------------------------------------------------------- */

/* Starts the group, waits for READY=1 and the first runs, and checks that
 * nothing said STOPPING=1 so far. */
static void start_ready(struct listener *l, struct gfx *g)
{
    gfx_start(g);
    ck_assert(wait_count(l, &l->ready, 1, EVENT_LIMIT_S));
    gfx_wait_first_runs(g);
    drain(l);
    ck_assert_msg(l->stopping == 0, "STOPPING=1 before any stop");
}

/* systemd should hear of the stop when it begins, not once the slowest
 * run has ended: a held run keeps the group from ending meanwhile. */
START_TEST(test_stopping_is_sent_when_group_stop_begins)
{
    struct listener *l = listening();
    struct gfx *g = first_and_second();
    probe_hold(&g->m[0].p);
    start_ready(l, g);
    ck_assert_int_eq(lsvc_group_stop(g->g), 0);
    bool told = wait_count(l, &l->stopping, 1, EVENT_LIMIT_S);
    bool held = lsvc_is_running(g->m[0].svc);
    /* Released before the checks, so that a failure leaves no run held. */
    probe_release(&g->m[0].p);
    ck_assert_int_eq(lsvc_group_wait(g->g), 0);
    ck_assert_msg(told, "no STOPPING=1 while the group was stopping");
    ck_assert(held);
    check_well_formed(l);
}
END_TEST

START_TEST(test_stopping_is_sent_once_before_group_wait_returns)
{
    struct listener *l = listening();
    struct gfx *g = first_and_second();
    start_ready(l, g);
    ck_assert_int_eq(lsvc_group_stop(g->g), 0);
    ck_assert_int_eq(lsvc_group_stop(g->g), 0);
    ck_assert_int_eq(lsvc_group_wait(g->g), 0);
    drain(l);
    /* One start, one stop: one of each, in that order. */
    ck_assert_str_eq(l->order, "RS");
}
END_TEST

START_TEST(test_stopping_is_sent_on_sigterm)
{
    struct listener *l = listening();
    default_signal_actions();
    ck_assert_int_eq(lsvc_block_signals(), 0);
    struct gfx *g = first_and_second();
    start_ready(l, g);
    ck_assert_int_eq(kill(getpid(), SIGTERM), 0);
    /* Before any wait: the signal alone must tell systemd. */
    ck_assert_msg(wait_count(l, &l->stopping, 1, EVENT_LIMIT_S),
                  "no STOPPING=1 after SIGTERM");
    gfx_wait(g);
    drain(l);
    ck_assert_str_eq(l->order, "RS");
    ck_assert(log_find(0, LSVC_LOG_INFO, "received SIGTERM", NULL));
}
END_TEST

/* systemd takes STOPPING=1 as the whole process going down: services
 * that end by themselves do not say that. */
START_TEST(test_no_stopping_when_services_end_on_their_own)
{
    struct listener *l = listening();
    struct gfx *g = notifying_gfx();
    int a = gfx_add(g, "SelfA", 0.01, NULL);
    int b = gfx_add(g, "SelfB", 0.01, NULL);
    g->m[a].p.during = g->m[b].p.during = stop_at_second_run;
    gfx_start(g);
    ck_assert(wait_not_running(g->m[a].svc, EVENT_LIMIT_S));
    ck_assert(wait_not_running(g->m[b].svc, EVENT_LIMIT_S));
    ck_assert_int_eq(lsvc_group_wait(g->g), 0);
    drain(l);
    ck_assert_str_eq(l->order, "R");
}
END_TEST

/* --- Nothing sent ------------------------------------------------------------ */

/* Runs the group's services with a watchdog set, and checks that the
 * socket got nothing. */
static void check_silent_run(struct listener *l, struct gfx *g)
{
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    gfx_start(g);
    gfx_wait_first_runs(g);
    listen_for(l, SILENCE_S);
    gfx_stop(g);
    drain(l);
    ck_assert_msg(l->datagrams == 0, "%d datagram(s) came: %s", l->datagrams,
                  l->order);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
}

START_TEST(test_nothing_is_sent_when_notify_is_off)
{
    struct listener *l = listening();
    struct gfx *g = first_and_second();
    ck_assert_int_eq(lsvc_group_set_notify(g->g, false), 0);
    check_silent_run(l, g);
}
END_TEST

/* Off unless turned on: a library must not speak for the server. */
START_TEST(test_notify_is_off_by_default)
{
    struct listener *l = listening();
    struct gfx *g = gfx_new();
    gfx_add(g, "First", 60, NULL);
    check_silent_run(l, g);
}
END_TEST

START_TEST(test_nothing_is_sent_without_notify_socket)
{
    struct listener *l = listening();
    ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
    check_silent_run(l, first_and_second());
}
END_TEST

/* --- WATCHDOG=1 -------------------------------------------------------------- */

/* A listener and WATCHDOG_USEC set, and WATCHDOG_PID to `pid` unless it
 * is 0. */
static struct listener *watchdog_listening(long pid)
{
    struct listener *l = listening();
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    if (pid != 0) {
        char text[32];
        snprintf(text, sizeof(text), "%ld", pid);
        set_var("WATCHDOG_PID", text);
    }
    return l;
}

/* Starts the two services and checks that pings come, about every 50 ms:
 * at least three, and no flood. */
static void check_pings(struct listener *l)
{
    struct gfx *g = first_and_second();
    gfx_start(g);
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
    gfx_stop(g);
}

START_TEST(test_watchdog_pings_every_half_watchdog_usec)
{
    check_pings(watchdog_listening(0));
}
END_TEST

START_TEST(test_watchdog_pings_when_watchdog_pid_is_this_process)
{
    check_pings(watchdog_listening((long)getpid()));
}
END_TEST

START_TEST(test_no_pings_when_watchdog_pid_is_another_process)
{
    struct listener *l = watchdog_listening((long)getppid());
    struct gfx *g = first_and_second();
    gfx_start(g);
    /* The watchdog is for the other process; readiness is still ours. */
    ck_assert(wait_count(l, &l->ready, 1, EVENT_LIMIT_S));
    listen_for(l, 2 * SILENCE_S);
    ck_assert_msg(l->watchdog == 0, "%d WATCHDOG=1 for another pid's watchdog",
                  l->watchdog);
    gfx_stop(g);
}
END_TEST

START_TEST(test_no_thread_left_after_group_wait_with_watchdog)
{
    struct listener *l = watchdog_listening(0);
    struct threads before;
    threads_baseline(&before);
    struct gfx *g = first_and_second();
    gfx_start(g);
    ck_assert(wait_count(l, &l->watchdog, 1, EVENT_LIMIT_S));
    gfx_stop(g);
    ck_assert_msg(wait_threads_back_to(&before, EVENT_LIMIT_S),
                  "%d thread(s) left", threads_added(&before));
    /* And the pings end with it. */
    drain(l);
    int pings = l->watchdog;
    listen_for(l, SILENCE_S);
    ck_assert_int_eq(l->watchdog, pings);
}
END_TEST

/* --- Stuck services ---------------------------------------------------------- */

START_TEST(test_stuck_service_stops_the_pings_until_its_run_ends)
{
    struct listener *l = watchdog_listening(0);
    struct gfx *g = one_held("Hung-Chore", 0.02);
    struct fx *hung = &g->m[0];
    /* Stuck once a run has lasted 5 intervals: 100 ms. */
    ck_assert_int_eq(lsvc_group_set_stuck_after(g->g, 5), 0);
    gfx_start(g);
    ck_assert(sem_wait_for(&hung->p.entered, EVENT_LIMIT_S));
    ck_assert_msg(log_wait(0, LSVC_LOG_WARNING, "Hung-Chore", EVENT_LIMIT_S,
                           NULL),
                  "no WARNING names the stuck service");
    /* A ping decided on just before the run became stuck may still come;
     * ten ping periods are for it. */
    listen_for(l, 0.5);
    int pings = l->watchdog;
    listen_for(l, SILENCE_S);
    ck_assert_msg(l->watchdog == pings,
                  "%d WATCHDOG=1 in %.1f s while a run was stuck",
                  l->watchdog - pings, SILENCE_S);
    /* Once per stuck run, however long it stays stuck. */
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "Hung-Chore"), 1);
    ck_assert(lsvc_is_running(hung->svc));
    ck_assert_uint_eq(probe_runs(&hung->p), 1);

    probe_release(&hung->p);
    ck_assert_msg(wait_count(l, &l->watchdog, pings + 2, EVENT_LIMIT_S),
                  "the pings did not resume once the run ended");
    gfx_stop(g);
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
    watchdog_listening(0);
    lsvc_set_logger(waiting_sink, NULL);
    struct gfx *g = one_held("Hung-Chore", 0.02);
    waiting_group = g->g;
    ck_assert_int_eq(lsvc_group_set_stuck_after(g->g, 1), 0);
    gfx_start(g);
    ck_assert(log_wait(0, LSVC_LOG_WARNING, "counts as stuck", EVENT_LIMIT_S, NULL));
    ck_assert_int_eq(atomic_load(&wait_rc), EDEADLK);
    probe_release(&g->m[0].p);
    gfx_stop(g);
}
END_TEST

/* systemd keeps one state per process; a second speaker is a mistake the
 * log should point at. */
START_TEST(test_second_notifying_group_warns)
{
    listening();
    struct gfx *g1 = notifying_gfx(), *g2 = notifying_gfx();
    gfx_add(g1, "First", 60, NULL);
    gfx_add(g2, "Second", 60, NULL);
    gfx_start(g1);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "Another group"), 0);
    gfx_start(g2);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "Another group"), 1);
    gfx_stop(g2);
    gfx_stop(g1);

    /* One at a time is fine, and so is a second one with notify off. */
    ck_assert_int_eq(lsvc_group_set_notify(g2->g, false), 0);
    gfx_start(g1);
    gfx_start(g2);
    gfx_stop(g2);
    gfx_stop(g1);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "Another group"), 1);
}
END_TEST

START_TEST(test_run_under_the_stuck_bound_keeps_the_pings)
{
    /* The default bound is 10 intervals: 20 s. */
    struct listener *l = watchdog_listening(0);
    struct gfx *g = one_held("LongRun", 2);
    struct fx *lr = &g->m[0];
    gfx_start(g);
    ck_assert(sem_wait_for(&lr->p.entered, EVENT_LIMIT_S));
    drain(l);
    int pings = l->watchdog;
    ck_assert_msg(wait_count(l, &l->watchdog, pings + 3, EVENT_LIMIT_S),
                  "the pings stopped during a run shorter than the bound");
    ck_assert_uint_eq(probe_runs(&lr->p), 1);
    ck_assert_int_eq(atomic_load(&watched_warning_ns), 0);
    probe_release(&lr->p);
    gfx_stop(g);
}
END_TEST

/* Holds the first run of a service of interval 0.05 s and returns how long
 * after the group's start the stuck WARNING came. The run begins after
 * that, so this is never shorter than the time the run had lasted. */
static double seconds_to_stuck_warning(double stuck_after)
{
    watchdog_listening(0);
    struct gfx *g = one_held("Timed-Hang", 0.05);
    if (stuck_after > 0)
        ck_assert_int_eq(lsvc_group_set_stuck_after(g->g, stuck_after), 0);
    int64_t t0 = now_ns();
    gfx_start(g);
    ck_assert(sem_wait_for(&g->m[0].p.entered, EVENT_LIMIT_S));
    ck_assert_msg(log_wait(0, LSVC_LOG_WARNING, "Timed-Hang",
                           EVENT_LIMIT_S + 1.0, NULL),
                  "no WARNING names the stuck service");
    double after = (double)(atomic_load(&watched_warning_ns) - t0) / 1e9;
    probe_release(&g->m[0].p);
    gfx_stop(g);
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
    struct gfx *g = first_and_second();
    gfx_start(g);
    /* At the start, from the value itself: not later, from a send that
     * failed (a relative path would be tried against the working
     * directory). */
    ck_assert_msg(log_find(0, LSVC_LOG_WARNING, "NOTIFY_SOCKET", NULL),
                  "no WARNING names NOTIFY_SOCKET=\"%.40s\" once "
                  "lsvc_group_start has returned",
                  unusable_socket(_i));
    gfx_wait_first_runs(g);
    gfx_stop(g);
    for (int i = 0; i < 2; i++)
        ck_assert_str_eq(g->m[i].p.events, "SRT");
}
END_TEST

START_TEST(test_notify_socket_without_listener_does_not_stop_the_group)
{
    notify_setup();
    char dir[] = "/tmp/lsvc-notify-XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/nobody", dir);
    set_var("NOTIFY_SOCKET", path);
    set_var("WATCHDOG_USEC", WATCHDOG_USEC_TEXT);
    struct gfx *g = notifying_gfx();
    struct fx *busy = &g->m[gfx_add(g, "Busy", 0.02, NULL)];
    gfx_start(g);
    /* Long enough for several pings to fail. */
    ck_assert(probe_wait_runs(&busy->p, 10, EVENT_LIMIT_S));
    ck_assert(lsvc_is_running(busy->svc));
    gfx_stop(g);
    ck_assert_msg(log_count(LSVC_LOG_ERROR, NULL) == 0,
                  "a missing listener was logged as an error");
    rmdir(dir);
}
END_TEST

static const char *const unusable_watchdog[] = {
    "", "abc", "0", "1", "1999", "-100000", "100000us", "99999999999999999999999",
};

START_TEST(test_unusable_watchdog_usec_warns_and_sends_no_pings)
{
    struct listener *l = listening();
    set_var("WATCHDOG_USEC", unusable_watchdog[_i]);
    struct gfx *g = first_and_second();
    gfx_start(g);
    ck_assert_msg(wait_count(l, &l->ready, 1, EVENT_LIMIT_S),
                  "no READY=1: the socket itself is fine");
    ck_assert_msg(log_find(0, LSVC_LOG_WARNING, "WATCHDOG_USEC", NULL),
                  "no WARNING names WATCHDOG_USEC=\"%s\" once "
                  "lsvc_group_start has returned",
                  unusable_watchdog[_i]);
    listen_for(l, SILENCE_S);
    ck_assert_msg(l->watchdog == 0, "%d WATCHDOG=1 with WATCHDOG_USEC=\"%s\"",
                  l->watchdog, unusable_watchdog[_i]);
    gfx_stop(g);
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
    struct gfx *g = first_and_second();
    gfx_start(g);
    ck_assert_int_eq(lsvc_group_set_stuck_after(g->g, 5), EBUSY);
    gfx_wait_first_runs(g);
    gfx_stop(g);
    ck_assert_int_eq(lsvc_group_set_stuck_after(g->g, 5), 0);
}
END_TEST

START_TEST(test_set_notify_while_started_is_ebusy)
{
    struct listener *l = listening();
    struct gfx *g = first_and_second();
    gfx_start(g);
    ck_assert_int_eq(lsvc_group_set_notify(g->g, false), EBUSY);
    ck_assert_int_eq(lsvc_group_set_notify(g->g, true), EBUSY);
    gfx_wait_first_runs(g);
    gfx_stop(g);
    /* Refused, so the group kept speaking the protocol. */
    drain(l);
    ck_assert_str_eq(l->order, "RS");
    ck_assert_int_eq(lsvc_group_set_notify(g->g, false), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("notify");
    add_tests(s, "ready", (const TTest *[]){
        test_ready_is_sent_once_group_start_returns,
        test_ready_waits_for_every_on_start,
        test_ready_reaches_an_abstract_socket,
        test_ready_is_sent_when_a_service_is_disabled,
        test_no_ready_when_group_start_fails, NULL});
    add_tests(s, "stopping", (const TTest *[]){
        test_stopping_is_sent_when_group_stop_begins,
        test_stopping_is_sent_once_before_group_wait_returns,
        test_stopping_is_sent_on_sigterm,
        test_no_stopping_when_services_end_on_their_own,
        test_nothing_is_sent_when_notify_is_off,
        test_notify_is_off_by_default,
        test_nothing_is_sent_without_notify_socket, NULL});
    add_tests(s, "watchdog", (const TTest *[]){
        test_watchdog_pings_every_half_watchdog_usec,
        test_watchdog_pings_when_watchdog_pid_is_this_process,
        test_no_pings_when_watchdog_pid_is_another_process,
        test_no_thread_left_after_group_wait_with_watchdog,
        test_stuck_service_stops_the_pings_until_its_run_ends,
        test_run_under_the_stuck_bound_keeps_the_pings,
        test_group_wait_from_the_watchdog_thread_is_edeadlk,
        test_second_notifying_group_warns,
        test_stuck_bound_defaults_to_ten_intervals,
        test_stuck_after_sets_the_bound, NULL});

    TCase *unusable = add_tests(s, "unusable settings", (const TTest *[]){
        test_notify_socket_without_listener_does_not_stop_the_group, NULL});
    tcase_add_loop_test(unusable, test_unusable_notify_socket_warns_and_group_runs,
                        0, UNUSABLE_SOCKETS);
    tcase_add_loop_test(unusable,
                        test_unusable_watchdog_usec_warns_and_sends_no_pings, 0,
                        (int)(sizeof(unusable_watchdog) /
                              sizeof(unusable_watchdog[0])));

    add_tests(s, "arguments", (const TTest *[]){
        test_set_stuck_after_rejects_values_out_of_range,
        test_set_stuck_after_while_started_is_ebusy,
        test_set_notify_while_started_is_ebusy, NULL});
    return run_suite(s);
}
