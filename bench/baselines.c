/*
 * The baselines and peers, each run in the block shape of block.c.
 *
 * clock_nanosleep is cyclictest's method, and so the limit for a thread on
 * this machine: sleep to an absolute CLOCK_MONOTONIC time, then read the
 * clock. It misses ticks by the library's default rule (next due =
 * max(due + interval, now)) so that only the way of sleeping differs.
 * rebase-on-start is the same loop with next = actual start + interval,
 * which lets every wake-up's lateness move the schedule.
 * timerfd, posix_timer and libuv keep their own schedules; each wake is
 * measured against the due time that timer itself had for it.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>
#ifdef HAVE_LIBUV
#include <uv.h>
#endif

/* One baseline thread. */
struct raw_inst {
    const struct block_spec *spec;
    struct lane *lane;
    void (*body)(struct raw_inst *in);
    struct latch *done;
    long slack_ns;
    int rc;
    size_t tick;   /* libuv: the next tick */
    int64_t due;   /* libuv: when that tick is due */
};

static void *raw_main(void *arg)
{
    struct raw_inst *in = arg;

    in->body(in);
    latch_add(in->done);
    return NULL;
}

/* Every thread-per-instance baseline: spawn, wait, report. A thread that
 * does not end after its ticks is a hang, and the program says so. */
static int run_threads(const struct block_spec *spec, struct lane *lanes,
                       struct block_info *info, void (*body)(struct raw_inst *))
{
    size_t k = spec->instances, started = 0;
    struct raw_inst *insts = calloc(k, sizeof *insts);
    pthread_t *threads = calloc(k, sizeof *threads);
    struct latch done;
    int rc = (insts && threads) ? 0 : ENOMEM;

    latch_init(&done);
    int64_t t0 = now_ns();
    for (; rc == 0 && started < k; started++) {
        insts[started] = (struct raw_inst){ .spec = spec, .lane = &lanes[started],
                                            .body = body, .done = &done };
        if ((rc = thread_spawn(&threads[started], spec, raw_main, &insts[started])) != 0)
            break;
    }
    info->start_ns = now_ns() - t0;
    if (spec->started != NULL)
        latch_add(spec->started);
    if (rc != 0)
        fprintf(stderr, "loopsvc-bench: starting thread %zu of %zu failed: %s\n",
                started + 1, k, strerror(rc));
    if (latch_wait(&done, started, block_deadline(spec)) != 0)
        die("a measured thread did not end in time; giving up");
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    for (size_t i = 0; rc == 0 && i < started; i++)
        rc = insts[i].rc;
    info->slack_ns = k ? insts[0].slack_ns : 0;
    latch_destroy(&done);
    free(insts);
    free(threads);
    return rc;
}

/* --- clock_nanosleep and rebase-on-start --------------------------------- */

/* Keeps the CPU busy for ns, reading the clock as it goes. */
static void spend_cpu(int64_t ns)
{
    int64_t until = now_ns() + ns;

    while (now_ns() < until)
        ;
}

static void nanosleep_body(struct raw_inst *in)
{
    const struct block_spec *s = in->spec;
    int64_t due = now_ns() + s->interval_ns;

    in->slack_ns = slack_apply(s->slack_ns);
    for (size_t wake = 0; wake <= s->ticks + 2 * s->settle; wake++) {
        struct timespec ts = ns_to_ts(due);

        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        int64_t start = now_ns();
        lane_put(in->lane, settled_tick(s, wake), due, start);
        if (s->variant & VAR_WORK)
            spend_cpu(s->work_ns);
        if (s->variant & VAR_REBASE) {
            due = start + s->interval_ns;
        } else {
            int64_t now = now_ns();
            due += s->interval_ns;
            if (due < now)
                due = now;
        }
    }
}

int nanosleep_run(const struct block_spec *spec, struct lane *lanes,
                  struct block_info *info)
{
    return run_threads(spec, lanes, info, nanosleep_body);
}

/* --- timerfd ------------------------------------------------------------- */

/* Expirations that piled up while the thread was away all count as woken
 * at the same moment, so every tick gives one sample. */
static void timerfd_body(struct raw_inst *in)
{
    const struct block_spec *s = in->spec;
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);

    in->slack_ns = slack_apply(s->slack_ns);
    if (fd < 0) {
        in->rc = errno;
        return;
    }
    int64_t t0 = now_ns() + s->interval_ns;
    struct itimerspec its = { .it_value = ns_to_ts(t0),
                              .it_interval = ns_to_ts(s->interval_ns) };
    if (timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL) != 0) {
        in->rc = errno;
        close(fd);
        return;
    }
    for (size_t tick = 0; tick <= s->ticks;) {
        uint64_t expired;
        ssize_t got = read(fd, &expired, sizeof expired);
        int64_t start = now_ns();

        if (got != (ssize_t)sizeof expired) {
            if (got < 0 && errno == EINTR)
                continue;
            in->rc = got < 0 ? errno : EIO;
            break;
        }
        for (uint64_t j = 0; j < expired && tick <= s->ticks; j++, tick++)
            lane_put(in->lane, tick, t0 + (int64_t)tick * s->interval_ns, start);
    }
    close(fd);
}

int timerfd_run(const struct block_spec *spec, struct lane *lanes,
                struct block_info *info)
{
    return run_threads(spec, lanes, info, timerfd_body);
}

/* --- posix_timer (SIGEV_THREAD) ------------------------------------------ */

struct ptimer {
    struct latch *finished;
    const struct block_spec *spec;
    struct lane *lane;
    timer_t timer;
    bool armed;
    int64_t t0;
    /* Protects tick, done, slack_ns and the lane: glibc may run two
     * notifications of one timer on two threads at once. */
    pthread_mutex_t lock;
    size_t tick;
    bool done;
    long slack_ns;
    atomic_int inflight;
};

static void ptimer_fire(union sigval v)
{
    int64_t start = now_ns();
    struct ptimer *p = v.sival_ptr;
    const struct block_spec *s = p->spec;

    atomic_fetch_add(&p->inflight, 1);
    pthread_mutex_lock(&p->lock);
    if (!p->done) {
        int over = timer_getoverrun(p->timer);

        if (p->tick == 0)
            p->slack_ns = slack_current();
        for (int j = 0; j <= (over > 0 ? over : 0) && p->tick <= s->ticks; j++, p->tick++)
            lane_put(p->lane, p->tick, p->t0 + (int64_t)p->tick * s->interval_ns, start);
        if (p->tick > s->ticks) {
            p->done = true;
            latch_add(p->finished);
        }
    }
    pthread_mutex_unlock(&p->lock);
    atomic_fetch_sub(&p->inflight, 1);
}

bool posix_timer_usable(const char **why)
{
#if defined(__SANITIZE_THREAD__)
    *why = "glibc's SIGEV_THREAD helper thread crashes under ThreadSanitizer";
    return false;
#else
    (void)why;
    return true;
#endif
}

static int ptimer_arm(struct ptimer *p, pthread_attr_t *attr)
{
    struct sigevent sev;

    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD;
    sev.sigev_notify_function = ptimer_fire;
    sev.sigev_notify_attributes = attr;
    sev.sigev_value.sival_ptr = p;
    if (timer_create(CLOCK_MONOTONIC, &sev, &p->timer) != 0)
        return errno;
    p->armed = true;
    p->t0 = now_ns() + p->spec->interval_ns;
    struct itimerspec its = { .it_value = ns_to_ts(p->t0),
                              .it_interval = ns_to_ts(p->spec->interval_ns) };
    return timer_settime(p->timer, TIMER_ABSTIME, &its, NULL) == 0 ? 0 : errno;
}

/* A notification thread that glibc created just before timer_delete may
 * not have entered ptimer_fire yet: give it a moment, then wait for the
 * ones inside to leave before the state goes away. */
static void ptimer_drain(struct ptimer *p, size_t k, int64_t interval_ns)
{
    int64_t grace = 2 * interval_ns + 5 * NS_PER_MS;
    struct timespec ts = ns_to_ts(grace < 100 * NS_PER_MS ? grace : 100 * NS_PER_MS);

    nanosleep(&ts, NULL);
    for (size_t i = 0; i < k; i++) {
        int64_t until = now_ns() + NS_PER_SEC;
        while (atomic_load(&p[i].inflight) > 0 && now_ns() < until)
            sched_yield();
    }
}

int posix_timer_run(const struct block_spec *spec, struct lane *lanes,
                    struct block_info *info)
{
    size_t k = spec->instances, made = 0;
    struct ptimer *p = calloc(k, sizeof *p);
    struct latch finished;
    pthread_attr_t attr;
    int rc;

    if (p == NULL)
        return ENOMEM;
    if ((rc = thread_attr_for(&attr, spec->prio, spec->cpu)) != 0) {
        free(p);
        return rc;
    }
    latch_init(&finished);
    int64_t t0 = now_ns();
    for (; rc == 0 && made < k; made++) {
        p[made].finished = &finished;
        p[made].spec = spec;
        p[made].lane = &lanes[made];
        pthread_mutex_init(&p[made].lock, NULL);
        rc = ptimer_arm(&p[made], &attr);
    }
    info->start_ns = now_ns() - t0;
    if (rc == 0 && latch_wait(&finished, made, block_deadline(spec)) != 0)
        die("a posix_timer did not fire its ticks in time; giving up");
    if (rc != 0)
        fprintf(stderr, "loopsvc-bench: posix_timer: %s\n", strerror(rc));
    for (size_t i = 0; i < made; i++) {
        pthread_mutex_lock(&p[i].lock);
        p[i].done = true;
        pthread_mutex_unlock(&p[i].lock);
        if (p[i].armed)
            timer_delete(p[i].timer);
    }
    ptimer_drain(p, made, spec->interval_ns);
    info->slack_ns = k ? p[0].slack_ns : 0;
    for (size_t i = 0; i < made; i++)
        pthread_mutex_destroy(&p[i].lock);
    latch_destroy(&finished);
    pthread_attr_destroy(&attr);
    free(p);
    return rc;
}

/* --- libuv --------------------------------------------------------------- */

bool libuv_usable(int64_t interval_ns, const char **why)
{
#ifdef HAVE_LIBUV
    if (interval_ns % NS_PER_MS != 0) {
        *why = "libuv timers count whole milliseconds";
        return false;
    }
    return true;
#else
    (void)interval_ns;
    *why = "built without libuv";
    return false;
#endif
}

#ifdef HAVE_LIBUV
/* Where libuv itself put the next expiry: loop time (ms, cached, on the
 * CLOCK_MONOTONIC timeline) plus what is left. A repeating timer is
 * re-armed from the loop time before its callback runs. */
static int64_t uv_due_ns(const uv_timer_t *t)
{
    return (int64_t)(uv_now(t->loop) + uv_timer_get_due_in(t)) * NS_PER_MS;
}

static void uv_tick(uv_timer_t *t)
{
    int64_t start = now_ns();
    struct raw_inst *in = t->data;

    lane_put(in->lane, in->tick, in->due, start);
    if (++in->tick > in->spec->ticks) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        return;
    }
    in->due = uv_due_ns(t);
}

static void libuv_body(struct raw_inst *in)
{
    uint64_t ms = (uint64_t)(in->spec->interval_ns / NS_PER_MS);
    uv_loop_t loop;
    uv_timer_t timer;

    in->slack_ns = slack_apply(in->spec->slack_ns);
    if ((in->rc = -uv_loop_init(&loop)) != 0)
        return;
    uv_timer_init(&loop, &timer);
    timer.data = in;
    uv_timer_start(&timer, uv_tick, ms, ms);
    in->due = uv_due_ns(&timer);
    uv_run(&loop, UV_RUN_DEFAULT);
    in->rc = -uv_loop_close(&loop);
}
#endif

int libuv_run(const struct block_spec *spec, struct lane *lanes,
              struct block_info *info)
{
#ifdef HAVE_LIBUV
    return run_threads(spec, lanes, info, libuv_body);
#else
    (void)spec;
    (void)lanes;
    (void)info;
    return ENOTSUP;
#endif
}

/* --- cyclictest ---------------------------------------------------------- */

static char cyclictest_path[4096];

bool cyclictest_found(void)
{
    const char *path = getenv("PATH");

    if (cyclictest_path[0] != '\0')
        return true;
    while (path != NULL && *path != '\0') {
        size_t len = strcspn(path, ":");
        int n = snprintf(cyclictest_path, sizeof cyclictest_path, "%.*s/cyclictest",
                         (int)len, len ? path : ".");
        if (n > 0 && (size_t)n < sizeof cyclictest_path &&
            access(cyclictest_path, X_OK) == 0)
            return true;
        path += len + (path[len] == ':');
    }
    cyclictest_path[0] = '\0';
    return false;
}

/* With -v -N, cyclictest prints "thread: cycle: lateness-ns" per wake and
 * at the end its summary "T: 0 (pid) P:0 I:1000 C: n Min: a Act: b Avg: c
 * Max: d" per thread, here in ns too. */
static size_t parse_cyclictest(char *out, struct lane *lanes, size_t k,
                               struct block_info *info)
{
    size_t samples = 0;

    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        unsigned thread;
        unsigned long cycle;
        long long value;
        const char *min, *avg, *max;

        if (sscanf(line, " %u: %lu: %lld", &thread, &cycle, &value) == 3) {
            if (thread < k) {
                lane_put(&lanes[thread], cycle, 0, value);
                samples++;
            }
        } else if (strncmp(line, "T:", 2) == 0 && (min = strstr(line, "Min:")) &&
                   (avg = strstr(line, "Avg:")) && (max = strstr(line, "Max:")) &&
                   info->note[0] == '\0') {
            snprintf(info->note, sizeof info->note,
                     "cyclictest's own summary (thread 0): min %.1f, avg %.1f, max %.1f us",
                     atof(min + 4) / 1e3, atof(avg + 4) / 1e3, atof(max + 4) / 1e3);
        }
    }
    return samples;
}

int cyclictest_run(const struct block_spec *spec, struct lane *lanes,
                   struct block_info *info)
{
    char threads[24], interval[24], loops[24], prio[24], cpu[24];
    char *argv[20];
    int argc = 0;

    if (!cyclictest_found())
        return ENOENT;
    snprintf(threads, sizeof threads, "%zu", spec->instances);
    snprintf(interval, sizeof interval, "%lld", (long long)(spec->interval_ns / NS_PER_US));
    snprintf(loops, sizeof loops, "%zu", spec->ticks + 1);
    snprintf(prio, sizeof prio, "%d", spec->prio);
    snprintf(cpu, sizeof cpu, "%d", spec->cpu);
    argv[argc++] = "cyclictest";
    /* --laptop: leave /dev/cpu_dma_latency alone, as every other impl
     * does; -d 0: every thread at the same interval. */
    const char *fixed[] = { "-q", "-v", "-N", "--laptop", "-d", "0", "-t", threads,
                            "-i", interval, "-l", loops };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        argv[argc++] = (char *)fixed[i];
    if (spec->prio > 0) {
        argv[argc++] = "-p";
        argv[argc++] = prio;
    }
    if (spec->cpu >= 0) {
        argv[argc++] = "-a";
        argv[argc++] = cpu;
    }
    argv[argc] = NULL;

    info->slack_ns = spec->slack_ns > 0 ? spec->slack_ns : slack_current();
    bool timed_out;
    char *out;
    int status = child_run(cyclictest_path, argv, spec->slack_ns,
                           block_deadline(spec), &out, &timed_out);
    size_t samples = out != NULL ? parse_cyclictest(out, lanes, spec->instances, info) : 0;
    free(out);
    if (status != 0 || samples == 0) {
        fprintf(stderr, "loopsvc-bench: cyclictest %s; left out\n",
                timed_out ? "did not finish in time"
                : status == 0 ? "printed no samples" : "failed");
        return EIO;
    }
    return 0;
}
