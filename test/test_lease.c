/*
 * The lease interface (lsvc_lease_ops): a due run happens only when the
 * lease says this replica holds it; acquire and release are called on the
 * service thread with no library lock held; gains, losses, errors and the
 * release at stop show in the log and the stats; `loops` counts only runs
 * made; a slow lease holds up only its own service; and two services
 * sharing one store hand the lease over when the holder stops.
 *
 * The leases here are fakes kept in memory, answering what the test says.
 */
#include "helpers.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

/* --- A lease the test controls ------------------------------------------ */

struct fake_lease {
    sem_t acquired; /* posted as each acquire returns */
    sem_t released; /* posted as each release returns */
    sem_t blocked;  /* posted when an acquire begins to wait on `gate` */
    sem_t gate;     /* what a blocking acquire waits for */
    struct probe *probe; /* when set, release adds 'L' to its events */
    bool probe_locks;    /* acquire and release call the service's getters */

    /* Protects every field below. */
    pthread_mutex_t lock;
    bool held;   /* the answer */
    int error;   /* what acquire returns; *held is still set to `held` */
    bool block;  /* acquire waits for a post on `gate` */
    uint64_t acquires, releases;
    pthread_t acquire_thread, release_thread;
    lsvc *acquire_svc, *release_svc;
    int64_t last_acquire_ns;
    /* What the getters gave inside the calls (probe_locks). */
    int stats_rc;
    bool running_seen;
};

static void fake_init(struct fake_lease *f, bool held)
{
    memset(f, 0, sizeof(*f));
    sem_init(&f->acquired, 0, 0);
    sem_init(&f->released, 0, 0);
    sem_init(&f->blocked, 0, 0);
    sem_init(&f->gate, 0, 0);
    pthread_mutex_init(&f->lock, NULL);
    f->held = held;
    f->stats_rc = -1;
}

static void fake_destroy(struct fake_lease *f)
{
    sem_destroy(&f->acquired);
    sem_destroy(&f->released);
    sem_destroy(&f->blocked);
    sem_destroy(&f->gate);
    pthread_mutex_destroy(&f->lock);
}

/* With no lock of our own held, so that a library lock taken by the
 * caller would make these block forever. */
static void call_getters(struct fake_lease *f, lsvc *svc)
{
    lsvc_stats st;
    int rc = lsvc_get_stats(svc, &st);
    bool running = lsvc_is_running(svc);
    pthread_mutex_lock(&f->lock);
    f->stats_rc = rc;
    f->running_seen = running;
    pthread_mutex_unlock(&f->lock);
}

static int fake_acquire(void *ctx, lsvc *svc, bool *held)
{
    struct fake_lease *f = ctx;
    pthread_mutex_lock(&f->lock);
    f->acquires++;
    f->acquire_thread = pthread_self();
    f->acquire_svc = svc;
    f->last_acquire_ns = now_ns();
    bool block = f->block;
    pthread_mutex_unlock(&f->lock);

    if (f->probe_locks)
        call_getters(f, svc);
    if (block) {
        sem_post(&f->blocked);
        while (sem_wait(&f->gate) == -1 && errno == EINTR) {
        }
    }
    pthread_mutex_lock(&f->lock);
    *held = f->held;
    int error = f->error;
    pthread_mutex_unlock(&f->lock);
    sem_post(&f->acquired);
    return error;
}

/* Caller holds p->lock. */
static void add_probe_event(struct probe *p, char event)
{
    size_t n = strlen(p->events);
    if (n < PROBE_MAX_EVENTS)
        p->events[n] = event;
}

static void fake_release(void *ctx, lsvc *svc)
{
    struct fake_lease *f = ctx;
    if (f->probe_locks)
        call_getters(f, svc);
    pthread_mutex_lock(&f->lock);
    f->releases++;
    f->release_thread = pthread_self();
    f->release_svc = svc;
    pthread_mutex_unlock(&f->lock);
    if (f->probe != NULL) {
        pthread_mutex_lock(&f->probe->lock);
        add_probe_event(f->probe, 'L');
        pthread_mutex_unlock(&f->probe->lock);
    }
    sem_post(&f->released);
}

static const lsvc_lease_ops fake_ops = {
    .acquire = fake_acquire, .release = fake_release};
static const lsvc_lease_ops fake_ops_no_release = {.acquire = fake_acquire};

static void fake_set_held(struct fake_lease *f, bool held)
{
    pthread_mutex_lock(&f->lock);
    f->held = held;
    pthread_mutex_unlock(&f->lock);
}

static uint64_t fake_acquires(struct fake_lease *f)
{
    pthread_mutex_lock(&f->lock);
    uint64_t n = f->acquires;
    pthread_mutex_unlock(&f->lock);
    return n;
}

static uint64_t fake_releases(struct fake_lease *f)
{
    pthread_mutex_lock(&f->lock);
    uint64_t n = f->releases;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* Waits for n more acquire calls to return. */
static bool fake_wait_acquires(struct fake_lease *f, uint64_t n,
                               double seconds)
{
    int64_t deadline = now_ns() + (int64_t)(seconds * 1e9);
    for (uint64_t i = 0; i < n; i++) {
        double left = (double)(deadline - now_ns()) / 1e9;
        if (left < 0 || !sem_wait_for(&f->acquired, left))
            return false;
    }
    return true;
}

/* Forgets earlier posts, so that the next wait counts only new events. */
static void drain(sem_t *sem)
{
    while (sem_trywait(sem) == 0) {
    }
}

static lsvc_options lease_options(const lsvc_lease_ops *ops, void *ctx)
{
    lsvc_options o = {.lease = ops, .lease_ctx = ctx};
    return o;
}

static lsvc_stats stats_of(const lsvc *svc)
{
    lsvc_stats st;
    ck_assert_int_eq(lsvc_get_stats(svc, &st), 0);
    return st;
}

/* --- Runs only while held ------------------------------------------------ */

START_TEST(test_run_happens_only_when_held)
{
    static const lsvc_class cls = PROBE_CLASS("Follower", 0.02);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, false);
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(fake_wait_acquires(&f, 5, 10));
    ck_assert_uint_eq(probe_runs(&p), 0);

    fake_set_held(&f, true);
    ck_assert(probe_wait_runs(&p, 2, 10));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    lsvc_stats st = stats_of(svc);
    ck_assert_uint_eq(st.loops, p.runs);
    ck_assert_uint_eq(st.loops + st.skipped_not_leader, f.acquires);
    ck_assert_uint_ge(st.skipped_not_leader, 5);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_not_held_skips_every_due_run_and_keeps_the_schedule)
{
    static const lsvc_class cls = PROBE_CLASS("Standby", 0.02);
    const int64_t interval = 20 * NS_PER_MS;
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, false);
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    /* Calls keep coming: a skipped run does not end or stall the loop. */
    ck_assert(fake_wait_acquires(&f, 12, 20));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);

    lsvc_stats st = stats_of(svc);
    ck_assert_uint_eq(p.runs, 0);
    ck_assert_uint_eq(st.loops, 0);
    ck_assert_uint_eq(st.skipped_not_leader, f.acquires);
    /* A skipped run is no run: nothing of it shows as one. */
    struct timespec due;
    ck_assert_int_eq(lsvc_scheduled_start(svc, &due), EAGAIN);
    ck_assert_int_eq(st.max_lateness_ns, 0);
    ck_assert_int_eq(st.max_run_ns, 0);
    ck_assert_uint_ge(f.acquires, 12);
    /* Due times lie on a grid from the start, so the k-th call cannot
     * come before t0 + (k - 1) intervals: a loop that asked again at once
     * after a skip would break this. */
    int64_t span = f.last_acquire_ns - t0;
    ck_assert_msg(span >= (int64_t)(f.acquires - 1) * interval,
                  "%llu acquire calls in %.3f s at a 20 ms interval",
                  (unsigned long long)f.acquires, (double)span / 1e9);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

/* --- Where and how the lease is called ----------------------------------- */

START_TEST(test_acquire_and_release_run_on_the_service_thread)
{
    static const lsvc_class cls = PROBE_CLASS("OnThread", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, true);
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 2, 10));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_uint_eq(f.releases, 1);
    ck_assert(pthread_equal(f.acquire_thread, p.start_thread));
    ck_assert(pthread_equal(f.acquire_thread, p.run_thread));
    ck_assert(pthread_equal(f.release_thread, p.start_thread));
    ck_assert(!pthread_equal(f.acquire_thread, pthread_self()));
    ck_assert_ptr_eq(f.acquire_svc, svc);
    ck_assert_ptr_eq(f.release_svc, svc);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_lease_is_called_with_no_library_lock_held)
{
    static const lsvc_class cls = PROBE_CLASS("Unlocked", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, true);
    f.probe_locks = true;
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    /* A lock held around the call would hang the getters, and with them
     * the acquire: the bound turns that into a failure. */
    ck_assert_msg(fake_wait_acquires(&f, 2, 10),
                  "acquire did not return: a library lock is held around it");
    pthread_mutex_lock(&f.lock);
    ck_assert_int_eq(f.stats_rc, 0);
    ck_assert(f.running_seen);
    f.stats_rc = -1;
    pthread_mutex_unlock(&f.lock);

    ck_assert_int_eq(lsvc_stop(svc, false), 0);
    ck_assert_msg(sem_wait_for(&f.released, 10),
                  "release did not return: a library lock is held around it");
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_int_eq(f.stats_rc, 0);
    ck_assert(f.running_seen);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_lease_without_acquire_is_einval)
{
    static const lsvc_class cls = PROBE_CLASS("NoAcquire", 1);
    static const lsvc_lease_ops release_only = {.release = fake_release};
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, true);
    lsvc_options o = lease_options(&release_only, &f);
    lsvc *sentinel = (lsvc *)&p;
    lsvc *svc = sentinel;
    ck_assert_int_eq(lsvc_create(&svc, &cls, &p, &o), EINVAL);
    ck_assert_ptr_eq(svc, sentinel);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

/* What the NULL-context lease saw; set up afresh in each forked test. */
static struct {
    pthread_mutex_t lock; /* protects the fields below */
    bool called;
    void *ctx;
    lsvc *svc;
} null_ctx_seen = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int null_ctx_acquire(void *ctx, lsvc *svc, bool *held)
{
    pthread_mutex_lock(&null_ctx_seen.lock);
    null_ctx_seen.called = true;
    null_ctx_seen.ctx = ctx;
    null_ctx_seen.svc = svc;
    pthread_mutex_unlock(&null_ctx_seen.lock);
    *held = true;
    return 0;
}

START_TEST(test_lease_with_null_ctx_gets_null)
{
    static const lsvc_class cls = PROBE_CLASS("NullCtx", 0.01);
    static const lsvc_lease_ops ops = {.acquire = null_ctx_acquire};
    struct probe p;
    probe_init(&p);
    /* Not NULL before the call, so that a NULL seen later was passed. */
    null_ctx_seen.ctx = &p;
    lsvc_options o = lease_options(&ops, NULL);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 2), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_uint_eq(p.runs, 2);
    ck_assert(null_ctx_seen.called);
    ck_assert_ptr_null(null_ctx_seen.ctx);
    ck_assert_ptr_eq(null_ctx_seen.svc, svc);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* --- What gains, losses and errors show ---------------------------------- */

START_TEST(test_gain_and_loss_are_logged_once_each)
{
    static const lsvc_class cls = PROBE_CLASS("Flipper", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, true);
    log_capture();
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    struct log_record rec;
    ck_assert(log_wait(0, LSVC_LOG_INFO, "now holds the lease", 10, &rec));
    ck_assert_ptr_nonnull(strstr(rec.message, "Flipper"));
    ck_assert_str_eq(rec.logger, "loopsvc.flipper");
    /* Confirmations of a lease already held say nothing. */
    drain(&f.acquired);
    ck_assert(fake_wait_acquires(&f, 5, 10));
    ck_assert_uint_eq(log_count(LSVC_LOG_INFO, "now holds the lease"), 1);
    ck_assert_uint_eq(log_count(0, "lost the lease"), 0);

    size_t mark = log_size();
    fake_set_held(&f, false);
    ck_assert(log_wait(mark, LSVC_LOG_INFO, "lost the lease", 10, &rec));
    ck_assert_ptr_nonnull(strstr(rec.message, "Flipper"));
    ck_assert_str_eq(rec.logger, "loopsvc.flipper");
    drain(&f.acquired);
    ck_assert(fake_wait_acquires(&f, 5, 10));
    ck_assert_uint_eq(log_count(LSVC_LOG_INFO, "lost the lease"), 1);
    ck_assert_uint_eq(log_count(LSVC_LOG_INFO, "now holds the lease"), 1);

    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_stats_follow_the_lease)
{
    static const lsvc_class cls = PROBE_CLASS("Tracked", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, true);
    log_capture();
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    lsvc_stats st = stats_of(svc);
    ck_assert(!st.lease_held);
    ck_assert_int_eq(st.lease_since_ns, 0);
    ck_assert_uint_eq(st.lease_changes, 0);

    int64_t before = now_ns();
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(log_wait(0, LSVC_LOG_INFO, "now holds the lease", 10, NULL));
    int64_t after = now_ns();
    st = stats_of(svc);
    ck_assert(st.lease_held);
    ck_assert_int_ge(st.lease_since_ns, before);
    ck_assert_int_le(st.lease_since_ns, after);
    ck_assert_uint_eq(st.lease_changes, 1);
    /* Confirming it does not move the time it was gained. */
    int64_t gained = st.lease_since_ns;
    drain(&p.ran);
    ck_assert(probe_wait_runs(&p, 3, 10));
    st = stats_of(svc);
    ck_assert_int_eq(st.lease_since_ns, gained);
    ck_assert_uint_eq(st.lease_changes, 1);

    size_t mark = log_size();
    fake_set_held(&f, false);
    ck_assert(log_wait(mark, LSVC_LOG_INFO, "lost the lease", 10, NULL));
    st = stats_of(svc);
    ck_assert(!st.lease_held);
    ck_assert_int_eq(st.lease_since_ns, 0);
    ck_assert_uint_eq(st.lease_changes, 2);

    mark = log_size();
    before = now_ns();
    fake_set_held(&f, true);
    ck_assert(log_wait(mark, LSVC_LOG_INFO, "now holds the lease", 10, NULL));
    after = now_ns();
    st = stats_of(svc);
    ck_assert(st.lease_held);
    ck_assert_int_ge(st.lease_since_ns, before);
    ck_assert_int_le(st.lease_since_ns, after);
    ck_assert_uint_eq(st.lease_changes, 3);

    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_acquire_error_skips_the_run_and_warns)
{
    static const lsvc_class cls = PROBE_CLASS("Unsure", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    /* *held says yes, but an error means the store could not tell. */
    fake_init(&f, true);
    f.error = EIO;
    log_capture();
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    struct log_record rec;
    ck_assert(log_wait(0, LSVC_LOG_WARNING, NULL, 10, &rec));
    ck_assert_ptr_nonnull(strstr(rec.message, "Unsure"));
    ck_assert_str_eq(rec.logger, "loopsvc.unsure");
    ck_assert(fake_wait_acquires(&f, 3, 10));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);

    lsvc_stats st = stats_of(svc);
    ck_assert_uint_eq(p.runs, 0);
    ck_assert_uint_eq(st.loops, 0);
    ck_assert_uint_eq(st.skipped_not_leader, f.acquires);
    ck_assert(!st.lease_held);
    ck_assert_uint_eq(st.lease_changes, 0);
    ck_assert_uint_eq(log_count(0, "now holds the lease"), 0);
    ck_assert_uint_eq(f.releases, 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_acquire_errors_are_rate_limited)
{
    static const lsvc_class cls = PROBE_CLASS("Flaky", 0.005);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, false);
    f.error = EIO;
    log_capture();
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(fake_wait_acquires(&f, 30, 20));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_uint_ge(stats_of(svc).skipped_not_leader, 30);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 1);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "Flaky"), 1);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_acquire_error_while_held_loses_the_lease)
{
    static const lsvc_class cls = PROBE_CLASS("Shaken", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, true);
    log_capture();
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 10));

    size_t mark = log_size();
    pthread_mutex_lock(&f.lock);
    f.error = EIO;
    pthread_mutex_unlock(&f.lock);
    ck_assert(log_wait(mark, LSVC_LOG_INFO, "lost the lease", 10, NULL));
    ck_assert(log_find(mark, LSVC_LOG_WARNING, "Shaken", NULL));
    uint64_t runs = probe_runs(&p);
    drain(&f.acquired);
    ck_assert(fake_wait_acquires(&f, 3, 10));
    ck_assert_uint_eq(probe_runs(&p), runs);
    lsvc_stats st = stats_of(svc);
    ck_assert(!st.lease_held);
    ck_assert_int_eq(st.lease_since_ns, 0);
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    /* Lost already: nothing to give back. */
    ck_assert_uint_eq(f.releases, 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

/* --- Stopping --------------------------------------------------------------- */

START_TEST(test_stop_releases_a_held_lease)
{
    static const lsvc_class cls = PROBE_CLASS("Giver", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, true);
    log_capture();
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 2, 10));
    ck_assert_uint_eq(fake_releases(&f), 0);
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_uint_eq(f.releases, 1);
    lsvc_stats st = stats_of(svc);
    ck_assert(!st.lease_held);
    ck_assert_int_eq(st.lease_since_ns, 0);
    struct log_record rec;
    ck_assert(log_find(0, LSVC_LOG_INFO, "Released the lease", &rec));
    ck_assert_ptr_nonnull(strstr(rec.message, "Giver"));
    ck_assert_uint_eq(log_count(0, "Released the lease"), 1);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_stop_does_not_release_a_lease_not_held)
{
    static const lsvc_class cls = PROBE_CLASS("NeverHeld", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, false);
    log_capture();
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(fake_wait_acquires(&f, 3, 10));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_uint_eq(f.releases, 0);
    ck_assert(!stats_of(svc).lease_held);
    ck_assert_uint_eq(log_count(0, "Released the lease"), 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_release_is_optional)
{
    static const lsvc_class cls = PROBE_CLASS("Keeper", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, true);
    log_capture();
    lsvc_options o = lease_options(&fake_ops_no_release, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 2, 10));
    ck_assert(stats_of(svc).lease_held);
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    lsvc_stats st = stats_of(svc);
    ck_assert(!st.lease_held);
    ck_assert_int_eq(st.lease_since_ns, 0);
    ck_assert(log_find(0, LSVC_LOG_INFO, "Released the lease", NULL));
    ck_assert_str_eq(p.events + strlen(p.events) - 1, "T");
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_release_comes_after_the_last_run_and_before_on_stop)
{
    static const lsvc_class cls = PROBE_CLASS("Ordered", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, true);
    f.probe = &p;
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 3), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_str_eq(p.events, "SRRRLT");
    /* A stop from outside, as well as the end of `loops`. */
    drain(&p.ran);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 2, 10));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    size_t n = strlen(p.events);
    ck_assert_uint_ge(n, 11);
    ck_assert(starts_with(p.events, "SRRRLTSRR"));
    ck_assert_str_eq(p.events + n - 3, "RLT");
    ck_assert_uint_eq(f.releases, 2);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

/* --- loops ------------------------------------------------------------------- */

START_TEST(test_loops_count_only_runs_made)
{
    static const lsvc_class cls = PROBE_CLASS("Counted", 0.01);
    struct probe p;
    struct fake_lease f;
    probe_init(&p);
    fake_init(&f, false);
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 3), 0);
    /* More skipped due runs than `loops`: they must not count. */
    ck_assert(fake_wait_acquires(&f, 5, 10));
    ck_assert(lsvc_is_running(svc));
    ck_assert_uint_eq(probe_runs(&p), 0);
    fake_set_held(&f, true);
    /* No stop: the thread ends by itself after its third run. */
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_uint_eq(p.runs, 3);
    lsvc_stats st = stats_of(svc);
    ck_assert_uint_eq(st.loops, 3);
    ck_assert_uint_ge(st.skipped_not_leader, 5);
    ck_assert_uint_eq(st.skipped_not_leader + 3, f.acquires);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    fake_destroy(&f);
    probe_destroy(&p);
}
END_TEST

/* --- A lease that blocks --------------------------------------------------- */

START_TEST(test_blocked_acquire_delays_only_its_service)
{
    static const lsvc_class slow_cls = PROBE_CLASS("Waiting", 0.02);
    static const lsvc_class free_cls = PROBE_CLASS("Free", 0.01);
    struct probe ps, pf;
    struct fake_lease f;
    probe_init(&ps);
    probe_init(&pf);
    fake_init(&f, true);
    f.block = true;
    log_capture();
    lsvc_options o = lease_options(&fake_ops, &f);
    lsvc *slow = make_service(&slow_cls, &ps, &o);
    lsvc *free_svc = make_service(&free_cls, &pf, NULL);
    ck_assert_int_eq(lsvc_start(slow, 0), 0);
    ck_assert_int_eq(lsvc_start(free_svc, 0), 0);
    ck_assert(sem_wait_for(&f.blocked, 10));
    ck_assert(probe_wait_runs(&pf, 5, 10));
    ck_assert_uint_eq(probe_runs(&ps), 0);
    ck_assert_uint_eq(fake_acquires(&f), 1);

    /* A hung acquire is waited for like a run: the bound passes. */
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_stop_timeout(slow, 0.2), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= 0.2, "ETIMEDOUT after %.3f s", took);
    ck_assert(lsvc_is_running(slow));
    ck_assert(lsvc_is_running(free_svc));
    drain(&pf.ran);
    ck_assert(probe_wait_runs(&pf, 2, 10));

    pthread_mutex_lock(&f.lock);
    f.block = false;
    pthread_mutex_unlock(&f.lock);
    sem_post(&f.gate);
    ck_assert_int_eq(lsvc_join(slow, 10), 0);
    ck_assert(!lsvc_is_running(slow));
    ck_assert(lsvc_is_running(free_svc));
    /* The stop came while the lease was asked: no run follows it. */
    ck_assert_uint_eq(probe_runs(&ps), 0);
    ck_assert_str_eq(ps.events, "ST");
    ck_assert_int_eq(lsvc_stop(free_svc, true), 0);
    ck_assert_int_eq(lsvc_destroy(slow), 0);
    ck_assert_int_eq(lsvc_destroy(free_svc), 0);
    fake_destroy(&f);
    probe_destroy(&ps);
    probe_destroy(&pf);
}
END_TEST

/* --- Handover between two replicas ----------------------------------------- */

/* One lease store, as two replicas of a server would share in a database. */
struct store {
    pthread_mutex_t lock; /* protects the fields below */
    const void *owner;    /* the replica holding the lease, or NULL */
    int active;           /* runs in progress, of either replica */
    int violations;       /* runs made without the lease, or side by side */
};

struct replica {
    struct store *store;
    struct probe probe;
    sem_t acquired; /* posted as each acquire returns */
    /* Under store->lock: */
    uint64_t acquires;
    uint64_t first_held_call; /* index of the first call that gave the lease */
    uint64_t releases;
};

static int store_acquire(void *ctx, lsvc *svc, bool *held)
{
    struct replica *r = ctx;
    (void)svc;
    pthread_mutex_lock(&r->store->lock);
    r->acquires++;
    *held = r->store->owner == NULL || r->store->owner == r;
    if (*held) {
        r->store->owner = r;
        if (r->first_held_call == 0)
            r->first_held_call = r->acquires;
    }
    pthread_mutex_unlock(&r->store->lock);
    sem_post(&r->acquired);
    return 0;
}

static void store_release(void *ctx, lsvc *svc)
{
    struct replica *r = ctx;
    (void)svc;
    pthread_mutex_lock(&r->store->lock);
    if (r->store->owner == r)
        r->store->owner = NULL;
    r->releases++;
    pthread_mutex_unlock(&r->store->lock);
}

static const lsvc_lease_ops store_ops = {
    .acquire = store_acquire, .release = store_release};

/* Inside each run: the store must name this replica, and no run of the
 * other may be in progress. The yield gives an overlap room to show. */
static void check_exclusive(lsvc *svc, struct probe *p, uint64_t run)
{
    struct replica *r = p->user;
    (void)svc;
    (void)run;
    pthread_mutex_lock(&r->store->lock);
    r->store->violations += r->store->owner != r;
    r->store->violations += ++r->store->active > 1;
    pthread_mutex_unlock(&r->store->lock);
    sched_yield();
    pthread_mutex_lock(&r->store->lock);
    r->store->active--;
    pthread_mutex_unlock(&r->store->lock);
}

static void replica_init(struct replica *r, struct store *s)
{
    memset(r, 0, sizeof(*r));
    r->store = s;
    probe_init(&r->probe);
    r->probe.during = check_exclusive;
    r->probe.user = r;
    sem_init(&r->acquired, 0, 0);
}

static void replica_destroy(struct replica *r)
{
    sem_destroy(&r->acquired);
    probe_destroy(&r->probe);
}

static bool replica_wait_acquires(struct replica *r, int n, double seconds)
{
    int64_t deadline = now_ns() + (int64_t)(seconds * 1e9);
    for (int i = 0; i < n; i++) {
        double left = (double)(deadline - now_ns()) / 1e9;
        if (left < 0 || !sem_wait_for(&r->acquired, left))
            return false;
    }
    return true;
}

START_TEST(test_stopped_holder_hands_over_to_the_other_replica)
{
    static const lsvc_class cls_a = PROBE_CLASS("ReplicaA", 0.02);
    static const lsvc_class cls_b = PROBE_CLASS("ReplicaB", 0.02);
    struct store s = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct replica a, b;
    replica_init(&a, &s);
    replica_init(&b, &s);
    log_capture();
    lsvc_options oa = lease_options(&store_ops, &a);
    lsvc_options ob = lease_options(&store_ops, &b);
    lsvc *sa = make_service(&cls_a, &a.probe, &oa);
    lsvc *sb = make_service(&cls_b, &b.probe, &ob);

    ck_assert_int_eq(lsvc_start(sa, 0), 0);
    ck_assert(probe_wait_runs(&a.probe, 1, 10));
    ck_assert_int_eq(lsvc_start(sb, 0), 0);
    ck_assert(replica_wait_acquires(&b, 4, 10));
    ck_assert_uint_eq(probe_runs(&b.probe), 0);
    ck_assert(stats_of(sa).lease_held);
    ck_assert(!stats_of(sb).lease_held);

    ck_assert_int_eq(lsvc_stop(sa, true), 0);
    pthread_mutex_lock(&s.lock);
    uint64_t calls_at_stop = b.acquires;
    /* B may have taken it already; A must not keep it. */
    ck_assert(s.owner != &a);
    ck_assert_uint_eq(a.releases, 1);
    pthread_mutex_unlock(&s.lock);
    int64_t stopped = now_ns();
    ck_assert(probe_wait_runs(&b.probe, 1, 10));
    double took = seconds_since(stopped);
    /* Its next due run takes the lease: no waiting for it to lapse. Time
     * is shown only; the call count is the check that holds under load. */
    pthread_mutex_lock(&s.lock);
    ck_assert_msg(b.first_held_call <= calls_at_stop + 1,
                  "took over at call %llu, %llu calls after the release "
                  "(%.3f s)", (unsigned long long)b.first_held_call,
                  (unsigned long long)(b.first_held_call - calls_at_stop),
                  took);
    pthread_mutex_unlock(&s.lock);
    ck_assert(stats_of(sb).lease_held);
    ck_assert(!stats_of(sa).lease_held);

    /* And the other way: a restarted A now stands by. */
    uint64_t a_runs = probe_runs(&a.probe);
    drain(&a.acquired);
    drain(&b.probe.ran);
    ck_assert_int_eq(lsvc_start(sa, 0), 0);
    ck_assert(replica_wait_acquires(&a, 4, 10));
    ck_assert_uint_eq(probe_runs(&a.probe), a_runs);
    ck_assert(probe_wait_runs(&b.probe, 2, 10));

    ck_assert_int_eq(lsvc_stop(sa, true), 0);
    ck_assert_int_eq(lsvc_stop(sb, true), 0);
    ck_assert_int_eq(s.violations, 0);
    ck_assert_uint_eq(a.releases, 1);
    ck_assert_uint_eq(b.releases, 1);
    ck_assert_ptr_null(s.owner);
    ck_assert_int_eq(lsvc_destroy(sa), 0);
    ck_assert_int_eq(lsvc_destroy(sb), 0);
    replica_destroy(&a);
    replica_destroy(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lease");
    TCase *tc = timed_tcase("lease");
    tcase_add_test(tc, test_run_happens_only_when_held);
    tcase_add_test(tc, test_not_held_skips_every_due_run_and_keeps_the_schedule);
    tcase_add_test(tc, test_acquire_and_release_run_on_the_service_thread);
    tcase_add_test(tc, test_lease_is_called_with_no_library_lock_held);
    tcase_add_test(tc, test_lease_without_acquire_is_einval);
    tcase_add_test(tc, test_lease_with_null_ctx_gets_null);
    tcase_add_test(tc, test_gain_and_loss_are_logged_once_each);
    tcase_add_test(tc, test_stats_follow_the_lease);
    tcase_add_test(tc, test_acquire_error_skips_the_run_and_warns);
    tcase_add_test(tc, test_acquire_errors_are_rate_limited);
    tcase_add_test(tc, test_acquire_error_while_held_loses_the_lease);
    tcase_add_test(tc, test_stop_releases_a_held_lease);
    tcase_add_test(tc, test_stop_does_not_release_a_lease_not_held);
    tcase_add_test(tc, test_release_is_optional);
    tcase_add_test(tc, test_release_comes_after_the_last_run_and_before_on_stop);
    tcase_add_test(tc, test_loops_count_only_runs_made);
    tcase_add_test(tc, test_blocked_acquire_delays_only_its_service);
    tcase_add_test(tc, test_stopped_holder_hands_over_to_the_other_replica);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
