/*
 * The service thread and lsvc_options: thread name and signal mask, one
 * thread per service, intervals, and the thread options (real-time
 * priority, affinity, stack size, timer slack), each checked from inside
 * a run with the platform's own calls.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/* What a run saw of its own thread. */
struct seen {
    char comm[32];
    sigset_t mask;
    int policy;
    struct sched_param param;
    cpu_set_t cpus;
    int cpu;
    size_t stack;
    long slack;
};

static void look_at_thread(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)svc;
    (void)run;
    struct seen *s = p->user;
    FILE *f = fopen("/proc/thread-self/comm", "r");
    if (f != NULL) {
        if (fgets(s->comm, sizeof(s->comm), f) != NULL)
            s->comm[strcspn(s->comm, "\n")] = '\0';
        fclose(f);
    }
    pthread_sigmask(SIG_BLOCK, NULL, &s->mask);
    pthread_getschedparam(pthread_self(), &s->policy, &s->param);
    pthread_getaffinity_np(pthread_self(), sizeof(s->cpus), &s->cpus);
    s->cpu = sched_getcpu();
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstacksize(&attr, &s->stack);
        pthread_attr_destroy(&attr);
    }
    s->slack = (long)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
}

/* Runs one loop of a service and returns what its thread looked like. */
static struct seen seen_by(const char *name, double seconds,
                           const lsvc_options *opts)
{
    struct fx *f = fx_new(name, seconds, opts);
    struct seen s;
    memset(&s, 0, sizeof(s));
    s.cpu = -1;
    f->p.during = look_at_thread;
    f->p.user = &s;
    fx_run(f, 1);
    ck_assert_uint_eq(f->p.runs, 1);
    fx_free(f);
    return s;
}

/* --- The service thread --------------------------------------------------- */

START_TEST(test_thread_is_named_after_service)
{
    ck_assert_str_eq(seen_by("Short", 1, NULL).comm, "Short");
    /* The kernel keeps 15 bytes of a thread name. */
    ck_assert_str_eq(seen_by("CacheExpirerOfDoom", 1, NULL).comm,
                     "CacheExpirerOfD");
}
END_TEST

START_TEST(test_thread_blocks_async_signals)
{
    sigset_t none;
    sigemptyset(&none);
    ck_assert_int_eq(pthread_sigmask(SIG_SETMASK, &none, NULL), 0);
    struct seen s = seen_by("Masked", 1, NULL);
    const int sigs[] = {SIGINT, SIGTERM, SIGUSR1, SIGUSR2, SIGHUP};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        ck_assert_msg(sigismember(&s.mask, sigs[i]) == 1,
                      "signal %d is not blocked in the service thread",
                      sigs[i]);
}
END_TEST

START_TEST(test_slow_service_does_not_delay_another)
{
    struct fx *slow = fx_new("Slow", 0.01, NULL);
    struct fx *quick = fx_new("Quick", 0.01, NULL);
    fx_start_held(slow);
    /* Quick does all its runs while Slow's first is still held. */
    fx_run(quick, 5);
    ck_assert_uint_eq(quick->p.runs, 5);
    ck_assert_uint_eq(probe_runs(&slow->p), 1);
    ck_assert(!pthread_equal(slow->p.run_thread, quick->p.run_thread));
    ck_assert(!pthread_equal(quick->p.run_thread, pthread_self()));
    ck_assert_int_eq(lsvc_stop(slow->svc, false), 0);
    fx_release_and_join(slow);
}
END_TEST

/* --- Intervals ---------------------------------------------------------------- */

START_TEST(test_interval_comes_from_options_then_class_then_default)
{
    const lsvc_options half = {.loop_seconds = 0.5};
    /* The class's interval (2 s, or 0: the default) and the options'. */
    const struct {
        double class_seconds;
        const lsvc_options *opts;
        double want;
    } cases[] = {
        {2, &half, 0.5},
        {2, NULL, 2.0},
        {0, NULL, LSVC_DEFAULT_LOOP_SECONDS},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fx *f = fx_new(cases[i].class_seconds ? "Two" : "Unset",
                              cases[i].class_seconds, cases[i].opts);
        ck_assert_double_eq(lsvc_loop_seconds(f->svc), cases[i].want);
        ck_assert_str_eq(lsvc_name(f->svc), f->cls.name);
    }
}
END_TEST

START_TEST(test_name_is_copied_at_create)
{
    static char name[] = "Mutable";
    struct fx *f = fx_new(name, 1, NULL);
    name[0] = 'X';
    ck_assert_str_eq(lsvc_name(f->svc), "Mutable");
}
END_TEST

/* --- Real-time priority ---------------------------------------------------- */

static void *nothing(void *arg)
{
    return arg;
}

/* Whether this process may make a SCHED_FIFO thread at all. */
static bool realtime_permitted(void)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
    pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
    struct sched_param sp = {.sched_priority = 1};
    pthread_attr_setschedparam(&attr, &sp);
    pthread_t t;
    int rc = pthread_create(&t, &attr, nothing, NULL);
    pthread_attr_destroy(&attr);
    if (rc == 0)
        pthread_join(t, NULL);
    return rc == 0;
}

START_TEST(test_realtime_priority_not_permitted_is_eperm)
{
    drop_realtime_permission();
    ck_assert(!realtime_permitted());

    lsvc_options o = {.sched_priority = 10, .sched_policy = SCHED_FIFO};
    struct fx *f = fx_new("Realtime", 1, &o);
    struct threads before;
    threads_baseline(&before);
    ck_assert_int_eq(lsvc_start(f->svc, 0), EPERM);
    ck_assert(!lsvc_is_running(f->svc));
    ck_assert(wait_threads_back_to(&before, 5));
    /* Nothing half-started: a second try fails the same way. */
    ck_assert_int_eq(lsvc_start(f->svc, 0), EPERM);
    ck_assert_str_eq(f->p.events, "");
}
END_TEST

START_TEST(test_realtime_priority_is_applied_when_permitted)
{
    bool permitted = realtime_permitted();
    const struct {
        int policy, want_policy, priority;
    } cases[] = {{0, SCHED_FIFO, 3}, {SCHED_FIFO, SCHED_FIFO, 4},
                 {SCHED_RR, SCHED_RR, 5}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lsvc_options o = {.sched_priority = cases[i].priority,
                          .sched_policy = cases[i].policy};
        if (!permitted) {
            struct fx *f = fx_new("Realtime", 1, &o);
            ck_assert_int_eq(lsvc_start(f->svc, 1), EPERM);
            fx_free(f);
            continue;
        }
        struct seen s = seen_by("Realtime", 1, &o);
        ck_assert_int_eq(s.policy, cases[i].want_policy);
        ck_assert_int_eq(s.param.sched_priority, cases[i].priority);
    }
}
END_TEST

/* --- Affinity, stack, slack ------------------------------------------------- */

START_TEST(test_cpu_mask_pins_the_thread)
{
    cpu_set_t allowed;
    ck_assert_int_eq(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
    int cpu = 0;
    while (cpu < 64 && !CPU_ISSET(cpu, &allowed))
        cpu++;
    ck_assert_int_lt(cpu, 64);
    lsvc_options o = {.cpu_mask = UINT64_C(1) << cpu};
    struct seen s = seen_by("Pinned", 1, &o);
    ck_assert_int_eq(CPU_COUNT(&s.cpus), 1);
    ck_assert(CPU_ISSET(cpu, &s.cpus));
    ck_assert_int_eq(s.cpu, cpu);
}
END_TEST

static void *own_stack_size(void *arg)
{
    size_t *size = arg;
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstacksize(&attr, size);
        pthread_attr_destroy(&attr);
    }
    return NULL;
}

/* The stack a thread made with this size gets here: the requested size,
 * except where a sanitizer raises small stacks to fit its own data. */
static size_t stack_given_for(size_t requested)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    ck_assert_int_eq(pthread_attr_setstacksize(&attr, requested), 0);
    size_t size = 0;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, &attr, own_stack_size, &size), 0);
    pthread_join(t, NULL);
    pthread_attr_destroy(&attr);
    return size;
}

START_TEST(test_stack_size_is_applied)
{
    lsvc_options o = {.stack_size = 1024 * 1024};
    ck_assert_uint_eq(seen_by("BigStack", 1, &o).stack,
                      stack_given_for(1024 * 1024));
}
END_TEST

/* The stack a thread made with no attributes gets: the system's default. */
static size_t default_stack(void)
{
    size_t size = 0;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, own_stack_size, &size), 0);
    pthread_join(t, NULL);
    return size;
}

START_TEST(test_default_stack_size_is_the_systems)
{
    size_t want = default_stack();
    if (want == 0)
        return; /* pthread_getattr_np could not tell */
    ck_assert_uint_eq(seen_by("DefaultStack", 1, NULL).stack, want);
}
END_TEST

START_TEST(test_automatic_timer_slack_follows_the_services_rate)
{
    enum { BUSY = 20 };
    static const char *const names[BUSY] = {
        "B0", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9",
        "B10", "B11", "B12", "B13", "B14", "B15", "B16", "B17", "B18", "B19"};
    long inherited = (long)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    long own = inherited < 10000 ? inherited : 10000; /* 0.1 % of 10 ms */
    lsvc_options later = {.initial_delay = 3600};
    struct fx *busy[BUSY];

    /* 20 services of 100 us: 200,000 wake-ups a second between them once
     * they run (they do not here), past the rate at which every service
     * gets the inherited slack. */
    for (int i = 0; i < BUSY; i++) {
        busy[i] = fx_new(names[i], 1e-4, &later);
        fx_start(busy[i], 0);
    }
    ck_assert_int_eq(seen_by("Crowded", 0.01, NULL).slack, inherited);
    /* Paused, they wake no timer and count for nothing, once each has
     * looked at its pause: a few probes at most. */
    for (int i = 0; i < BUSY; i++)
        ck_assert_int_eq(lsvc_pause(busy[i]->svc), 0);
    long seen = inherited;
    for (int probe = 0; probe < 100 && seen != own; probe++)
        seen = seen_by("Quiet", 0.01, NULL).slack;
    ck_assert_int_eq(seen, own);
    for (int i = 0; i < BUSY; i++)
        fx_end(busy[i]);
    ck_assert_int_eq(seen_by("Alone", 0.01, NULL).slack, own);
}
END_TEST

START_TEST(test_timer_slack_is_applied)
{
    lsvc_options o = {.timer_slack_ns = 12345};
    ck_assert_int_eq(seen_by("Slack", 1, &o).slack, 12345);
}
END_TEST

START_TEST(test_automatic_timer_slack_follows_interval)
{
    long inherited = (long)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    ck_assert_int_gt(inherited, 1000);
    /* 0.1 % of the interval... */
    ck_assert_int_eq(seen_by("Slack1ms", 0.001, NULL).slack, 1000);
    /* ...at least 1 ns... */
    ck_assert_int_eq(seen_by("Slack1us", 1e-6, NULL).slack, 1);
    /* ...and at most what the thread inherits (60 ms would be 0.1 % of
     * 60 s). */
    ck_assert_int_eq(seen_by("Slack60s", 60, NULL).slack,
                     inherited < 60000000 ? inherited : 60000000);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("options");
    add_tests(s, "thread", (const TTest *[]){
        test_thread_is_named_after_service,
        test_thread_blocks_async_signals,
        test_slow_service_does_not_delay_another,
        test_interval_comes_from_options_then_class_then_default,
        test_name_is_copied_at_create, NULL});
    add_tests(s, "thread options", (const TTest *[]){
        test_realtime_priority_not_permitted_is_eperm,
        test_realtime_priority_is_applied_when_permitted,
        test_cpu_mask_pins_the_thread,
        test_stack_size_is_applied,
        test_default_stack_size_is_the_systems,
        test_timer_slack_is_applied,
        test_automatic_timer_slack_follows_interval,
        test_automatic_timer_slack_follows_the_services_rate, NULL});
    return run_suite(s);
}
