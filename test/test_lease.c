/*
 * The lease interface (lsvc_lease_ops): a due run happens only when the
 * lease says this replica holds it; acquire and release are called on the
 * service thread with no library lock held; gains, losses, errors and the
 * release at stop show in the log and the stats; `loops` counts only runs
 * made; a slow lease holds up only its own service; two services
 * sharing one store hand the lease over when the holder stops; and each
 * run reads the fencing token of its holding (lsvc_lease_token), which
 * a new holder always has higher.
 *
 * The leases here are fakes kept in memory, answering what the test says.
 */
#include "helpers.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
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
    sems_init(4, &f->acquired, &f->released, &f->blocked, &f->gate);
    pthread_mutex_init(&f->lock, NULL);
    f->held = held;
    f->stats_rc = -1;
}

static void fake_destroy(struct fake_lease *f)
{
    sems_destroy(4, &f->acquired, &f->released, &f->blocked, &f->gate);
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
    if (f->probe != NULL)
        probe_note(f->probe, 'L');
    sem_post(&f->released);
}

static const lsvc_lease_ops fake_ops = {
    .acquire = fake_acquire, .release = fake_release};
static const lsvc_lease_ops fake_ops_no_release = {.acquire = fake_acquire};

/* Changes what the next acquire answers: held, or the error it gives. */
static void fake_answer(struct fake_lease *f, bool held, int error)
{
    pthread_mutex_lock(&f->lock);
    f->held = held;
    f->error = error;
    pthread_mutex_unlock(&f->lock);
}

/* A counter of f, read under its lock. */
static uint64_t fake_read(struct fake_lease *f, const uint64_t *counter)
{
    pthread_mutex_lock(&f->lock);
    uint64_t n = *counter;
    pthread_mutex_unlock(&f->lock);
    return n;
}

static lsvc_options lease_options(const lsvc_lease_ops *ops, void *ctx)
{
    lsvc_options o = {.lease = ops, .lease_ctx = ctx};
    return o;
}

/* --- Fixture: a probe service behind a fake lease -------------------------- */

struct leased {
    struct fx *x;        /* the service and its probe */
    struct fake_lease f; /* its lease */
    lsvc_options o;
};

static void leased_teardown(void *arg)
{
    struct leased *t = arg;
    fake_destroy(&t->f);
}

/* Captures the log and creates the service `name` behind a fake lease
 * that answers `held`; nothing is started. The teardown ends the service,
 * then the lease. */
static struct leased *leased_new(const char *name, double seconds, bool held,
                                 const lsvc_lease_ops *ops)
{
    struct leased *t = test_alloc(sizeof(*t));
    log_capture_info();
    fake_init(&t->f, held);
    at_teardown(leased_teardown, t);
    t->o = lease_options(ops, &t->f);
    t->x = fx_new(name, seconds, &t->o);
    return t;
}

/* leased_new with the usual lease, started. */
static struct leased *leased_start(const char *name, double seconds,
                                   bool held)
{
    struct leased *t = leased_new(name, seconds, held, &fake_ops);
    fx_start(t->x, 0);
    return t;
}

/* Stops the service, which must have given the lease `releases` times. */
static void leased_stop(struct leased *t, uint64_t releases)
{
    fx_stop(t->x);
    ck_assert_uint_eq(t->f.releases, releases);
}

/* Waits for n more acquire calls to return. */
static bool leased_wait_acquires(struct leased *t, uint64_t n)
{
    return sem_wait_n(&t->f.acquired, n, 10);
}

/* The service does not hold the lease, and shows no time it was gained. */
static void check_not_held(const lsvc *svc)
{
    lsvc_stats st = stats_of(svc);
    ck_assert(!st.lease_held);
    ck_assert_int_eq(st.lease_since_ns, 0);
}

/* The next INFO record from `from` on says `what` of the service `name`. */
static void check_lease_logged(size_t from, const char *what,
                               const char *name, const char *logger)
{
    struct log_record rec;
    ck_assert(log_wait(from, LSVC_LOG_INFO, what, 10, &rec));
    ck_assert_ptr_nonnull(strstr(rec.message, name));
    ck_assert_str_eq(rec.logger, logger);
}

/* --- Runs only while held ------------------------------------------------ */

START_TEST(test_run_happens_only_when_held)
{
    struct leased *t = leased_start("Follower", 0.02, false);
    ck_assert(leased_wait_acquires(t, 5));
    ck_assert_uint_eq(probe_runs(&t->x->p), 0);

    fake_answer(&t->f, true, 0);
    ck_assert(probe_wait_runs(&t->x->p, 2, 10));
    fx_stop(t->x);
    lsvc_stats st = stats_of(t->x->svc);
    ck_assert_uint_eq(st.loops, t->x->p.runs);
    ck_assert_uint_eq(st.loops + st.skipped_not_leader, t->f.acquires);
    ck_assert_uint_ge(st.skipped_not_leader, 5);
}
END_TEST

START_TEST(test_not_held_skips_every_due_run_and_keeps_the_schedule)
{
    const int64_t interval = 20 * NS_PER_MS;
    struct leased *t = leased_new("Standby", 0.02, false, &fake_ops);
    int64_t t0 = now_ns();
    fx_start(t->x, 0);
    /* Calls keep coming: a skipped run does not end or stall the loop. */
    ck_assert(sem_wait_n(&t->f.acquired, 12, 20));
    fx_stop(t->x);

    lsvc_stats st = stats_of(t->x->svc);
    ck_assert_uint_eq(t->x->p.runs, 0);
    ck_assert_uint_eq(st.loops, 0);
    ck_assert_uint_eq(st.skipped_not_leader, t->f.acquires);
    /* A skipped run is no run: nothing of it shows as one. */
    struct timespec due;
    ck_assert_int_eq(lsvc_scheduled_start(t->x->svc, &due), EAGAIN);
    ck_assert_int_eq(st.max_lateness_ns, 0);
    ck_assert_int_eq(st.max_run_ns, 0);
    ck_assert_uint_ge(t->f.acquires, 12);
    /* Due times lie on a grid from the start, so the k-th call cannot
     * come before t0 + (k - 1) intervals: a loop that asked again at once
     * after a skip would break this. */
    int64_t span = t->f.last_acquire_ns - t0;
    ck_assert_msg(span >= (int64_t)(t->f.acquires - 1) * interval,
                  "%llu acquire calls in %.3f s at a 20 ms interval",
                  (unsigned long long)t->f.acquires, (double)span / 1e9);
}
END_TEST

/* --- Where and how the lease is called ----------------------------------- */

START_TEST(test_acquire_and_release_run_on_the_service_thread)
{
    struct leased *t = leased_start("OnThread", 0.01, true);
    ck_assert(probe_wait_runs(&t->x->p, 2, 10));
    leased_stop(t, 1);
    const struct probe *p = &t->x->p;
    ck_assert(pthread_equal(t->f.acquire_thread, p->start_thread));
    ck_assert(pthread_equal(t->f.acquire_thread, p->run_thread));
    ck_assert(pthread_equal(t->f.release_thread, p->start_thread));
    ck_assert(!pthread_equal(t->f.acquire_thread, pthread_self()));
    ck_assert_ptr_eq(t->f.acquire_svc, t->x->svc);
    ck_assert_ptr_eq(t->f.release_svc, t->x->svc);
}
END_TEST

START_TEST(test_lease_is_called_with_no_library_lock_held)
{
    struct leased *t = leased_new("Unlocked", 0.01, true, &fake_ops);
    t->f.probe_locks = true;
    fx_start(t->x, 0);
    /* A lock held around the call would hang the getters, and with them
     * the acquire: the bound turns that into a failure. */
    ck_assert_msg(leased_wait_acquires(t, 2),
                  "acquire did not return: a library lock is held around it");
    pthread_mutex_lock(&t->f.lock);
    ck_assert_int_eq(t->f.stats_rc, 0);
    ck_assert(t->f.running_seen);
    t->f.stats_rc = -1;
    pthread_mutex_unlock(&t->f.lock);

    ck_assert_int_eq(lsvc_stop(t->x->svc, false), 0);
    ck_assert_msg(sem_wait_for(&t->f.released, 10),
                  "release did not return: a library lock is held around it");
    ck_assert_int_eq(lsvc_join(t->x->svc, 10), 0);
    ck_assert_int_eq(t->f.stats_rc, 0);
    ck_assert(t->f.running_seen);
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
    static const lsvc_lease_ops ops = {.acquire = null_ctx_acquire};
    lsvc_options o = lease_options(&ops, NULL);
    struct fx *f = fx_new("NullCtx", 0.01, &o);
    /* Not NULL before the call, so that a NULL seen later was passed. */
    null_ctx_seen.ctx = f;
    fx_run(f, 2);
    ck_assert_uint_eq(f->p.runs, 2);
    ck_assert(null_ctx_seen.called);
    ck_assert_ptr_null(null_ctx_seen.ctx);
    ck_assert_ptr_eq(null_ctx_seen.svc, f->svc);
}
END_TEST

/* --- What gains, losses and errors show ---------------------------------- */

START_TEST(test_gain_and_loss_are_logged_once_each)
{
    struct leased *t = leased_start("Flipper", 0.01, true);
    check_lease_logged(0, "now holds the lease", "Flipper", "loopsvc.flipper");
    /* Confirmations of a lease already held say nothing. */
    sem_drain(&t->f.acquired);
    ck_assert(leased_wait_acquires(t, 5));
    ck_assert_uint_eq(log_count(LSVC_LOG_INFO, "now holds the lease"), 1);
    ck_assert_uint_eq(log_count(0, "lost the lease"), 0);

    size_t mark = log_size();
    fake_answer(&t->f, false, 0);
    check_lease_logged(mark, "lost the lease", "Flipper", "loopsvc.flipper");
    sem_drain(&t->f.acquired);
    ck_assert(leased_wait_acquires(t, 5));
    ck_assert_uint_eq(log_count(LSVC_LOG_INFO, "lost the lease"), 1);
    ck_assert_uint_eq(log_count(LSVC_LOG_INFO, "now holds the lease"), 1);
}
END_TEST

/* Makes the lease answer "held" (after which the service starts, when
 * `start`), and checks that the service then says it holds it, since a
 * time within the change, the lease having changed hands `changes` times. */
static void check_gained(struct leased *t, bool start, uint64_t changes)
{
    size_t mark = log_size();
    if (start)
        fake_answer(&t->f, true, 0);
    int64_t before = now_ns();
    if (start)
        fx_start(t->x, 0);
    else
        fake_answer(&t->f, true, 0);
    ck_assert(log_wait(mark, LSVC_LOG_INFO, "now holds the lease", 10, NULL));
    int64_t after = now_ns();
    lsvc_stats st = stats_of(t->x->svc);
    ck_assert(st.lease_held);
    ck_assert_int_ge(st.lease_since_ns, before);
    ck_assert_int_le(st.lease_since_ns, after);
    ck_assert_uint_eq(st.lease_changes, changes);
}

START_TEST(test_stats_follow_the_lease)
{
    struct leased *t = leased_new("Tracked", 0.01, false, &fake_ops);
    check_not_held(t->x->svc);
    ck_assert_uint_eq(stats_of(t->x->svc).lease_changes, 0);

    check_gained(t, true, 1);
    /* Confirming it does not move the time it was gained. */
    int64_t gained = stats_of(t->x->svc).lease_since_ns;
    sem_drain(&t->x->p.ran);
    ck_assert(probe_wait_runs(&t->x->p, 3, 10));
    lsvc_stats st = stats_of(t->x->svc);
    ck_assert_int_eq(st.lease_since_ns, gained);
    ck_assert_uint_eq(st.lease_changes, 1);

    size_t mark = log_size();
    fake_answer(&t->f, false, 0);
    ck_assert(log_wait(mark, LSVC_LOG_INFO, "lost the lease", 10, NULL));
    check_not_held(t->x->svc);
    ck_assert_uint_eq(stats_of(t->x->svc).lease_changes, 2);

    check_gained(t, false, 3);
}
END_TEST

START_TEST(test_acquire_error_skips_the_run_and_warns)
{
    /* *held says yes, but an error means the store could not tell. */
    struct leased *t = leased_new("Unsure", 0.01, true, &fake_ops);
    t->f.error = EIO;
    fx_start(t->x, 0);
    struct log_record rec;
    ck_assert(log_wait(0, LSVC_LOG_WARNING, NULL, 10, &rec));
    ck_assert_ptr_nonnull(strstr(rec.message, "Unsure"));
    ck_assert_str_eq(rec.logger, "loopsvc.unsure");
    ck_assert(leased_wait_acquires(t, 3));
    leased_stop(t, 0);

    lsvc_stats st = stats_of(t->x->svc);
    ck_assert_uint_eq(t->x->p.runs, 0);
    ck_assert_uint_eq(st.loops, 0);
    ck_assert_uint_eq(st.skipped_not_leader, t->f.acquires);
    ck_assert(!st.lease_held);
    ck_assert_uint_eq(st.lease_changes, 0);
    ck_assert_uint_eq(log_count(0, "now holds the lease"), 0);
}
END_TEST

START_TEST(test_acquire_errors_are_rate_limited)
{
    struct leased *t = leased_new("Flaky", 0.005, false, &fake_ops);
    t->f.error = EIO;
    fx_start(t->x, 0);
    ck_assert(sem_wait_n(&t->f.acquired, 30, 20));
    fx_stop(t->x);
    ck_assert_uint_ge(stats_of(t->x->svc).skipped_not_leader, 30);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 1);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "Flaky"), 1);
}
END_TEST

START_TEST(test_acquire_error_while_held_loses_the_lease)
{
    struct leased *t = leased_start("Shaken", 0.01, true);
    ck_assert(probe_wait_runs(&t->x->p, 1, 10));

    size_t mark = log_size();
    fake_answer(&t->f, true, EIO);
    ck_assert(log_wait(mark, LSVC_LOG_INFO, "lost the lease", 10, NULL));
    ck_assert(log_find(mark, LSVC_LOG_WARNING, "Shaken", NULL));
    uint64_t runs = probe_runs(&t->x->p);
    sem_drain(&t->f.acquired);
    ck_assert(leased_wait_acquires(t, 3));
    ck_assert_uint_eq(probe_runs(&t->x->p), runs);
    check_not_held(t->x->svc);
    /* Lost already: nothing to give back. */
    leased_stop(t, 0);
}
END_TEST

/* --- Stopping --------------------------------------------------------------- */

START_TEST(test_stop_releases_a_held_lease)
{
    struct leased *t = leased_start("Giver", 0.01, true);
    ck_assert(probe_wait_runs(&t->x->p, 2, 10));
    ck_assert_uint_eq(fake_read(&t->f, &t->f.releases), 0);
    leased_stop(t, 1);
    check_not_held(t->x->svc);
    struct log_record rec;
    ck_assert(log_find(0, LSVC_LOG_INFO, "Released the lease", &rec));
    ck_assert_ptr_nonnull(strstr(rec.message, "Giver"));
    ck_assert_uint_eq(log_count(0, "Released the lease"), 1);
}
END_TEST

START_TEST(test_stop_does_not_release_a_lease_not_held)
{
    struct leased *t = leased_start("NeverHeld", 0.01, false);
    ck_assert(leased_wait_acquires(t, 3));
    leased_stop(t, 0);
    ck_assert(!stats_of(t->x->svc).lease_held);
    ck_assert_uint_eq(log_count(0, "Released the lease"), 0);
}
END_TEST

START_TEST(test_release_is_optional)
{
    struct leased *t = leased_new("Keeper", 0.01, true, &fake_ops_no_release);
    fx_start(t->x, 0);
    ck_assert(probe_wait_runs(&t->x->p, 2, 10));
    ck_assert(stats_of(t->x->svc).lease_held);
    fx_stop(t->x);
    check_not_held(t->x->svc);
    ck_assert(log_find(0, LSVC_LOG_INFO, "Released the lease", NULL));
    ck_assert_str_eq(t->x->p.events + strlen(t->x->p.events) - 1, "T");
}
END_TEST

START_TEST(test_release_comes_after_the_last_run_and_before_on_stop)
{
    struct leased *t = leased_new("Ordered", 0.01, true, &fake_ops);
    struct probe *p = &t->x->p;
    t->f.probe = p;
    fx_run(t->x, 3);
    ck_assert_str_eq(p->events, "SRRRLT");
    /* A stop from outside, as well as the end of `loops`. */
    sem_drain(&p->ran);
    fx_start(t->x, 0);
    ck_assert(probe_wait_runs(p, 2, 10));
    leased_stop(t, 2);
    size_t n = strlen(p->events);
    ck_assert_uint_ge(n, 11);
    ck_assert(starts_with(p->events, "SRRRLTSRR"));
    ck_assert_str_eq(p->events + n - 3, "RLT");
}
END_TEST

/* --- loops ------------------------------------------------------------------- */

START_TEST(test_loops_count_only_runs_made)
{
    struct leased *t = leased_new("Counted", 0.01, false, &fake_ops);
    fx_start(t->x, 3);
    /* More skipped due runs than `loops`: they must not count. */
    ck_assert(leased_wait_acquires(t, 5));
    ck_assert(lsvc_is_running(t->x->svc));
    ck_assert_uint_eq(probe_runs(&t->x->p), 0);
    fake_answer(&t->f, true, 0);
    /* No stop: the thread ends by itself after its third run. */
    ck_assert_int_eq(lsvc_join(t->x->svc, 10), 0);
    ck_assert(!lsvc_is_running(t->x->svc));
    ck_assert_uint_eq(t->x->p.runs, 3);
    lsvc_stats st = stats_of(t->x->svc);
    ck_assert_uint_eq(st.loops, 3);
    ck_assert_uint_ge(st.skipped_not_leader, 5);
    ck_assert_uint_eq(st.skipped_not_leader + 3, t->f.acquires);
}
END_TEST

/* --- A lease that blocks --------------------------------------------------- */

START_TEST(test_blocked_acquire_delays_only_its_service)
{
    struct leased *t = leased_new("Waiting", 0.02, true, &fake_ops);
    struct fx *free_svc = fx_new("Free", 0.01, NULL);
    t->f.block = true;
    fx_start(t->x, 0);
    fx_start(free_svc, 0);
    ck_assert(sem_wait_for(&t->f.blocked, 10));
    ck_assert(probe_wait_runs(&free_svc->p, 5, 10));
    ck_assert_uint_eq(probe_runs(&t->x->p), 0);
    ck_assert_uint_eq(fake_read(&t->f, &t->f.acquires), 1);

    /* A hung acquire is waited for like a run: the bound passes. */
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_stop_timeout(t->x->svc, 0.2), ETIMEDOUT);
    double took = seconds_since(t0);
    ck_assert_msg(took >= 0.2, "ETIMEDOUT after %.3f s", took);
    ck_assert(lsvc_is_running(t->x->svc));
    ck_assert(lsvc_is_running(free_svc->svc));
    sem_drain(&free_svc->p.ran);
    ck_assert(probe_wait_runs(&free_svc->p, 2, 10));

    pthread_mutex_lock(&t->f.lock);
    t->f.block = false;
    pthread_mutex_unlock(&t->f.lock);
    sem_post(&t->f.gate);
    ck_assert_int_eq(lsvc_join(t->x->svc, 10), 0);
    ck_assert(!lsvc_is_running(t->x->svc));
    ck_assert(lsvc_is_running(free_svc->svc));
    /* The stop came while the lease was asked: no run follows it. */
    ck_assert_uint_eq(probe_runs(&t->x->p), 0);
    ck_assert_str_eq(t->x->p.events, "ST");
    fx_stop(free_svc);
}
END_TEST

/* An acquire that waits may end its wait for a stop with ECANCELED: the
 * service stops with no WARNING and nothing counted; the same answer
 * without a stop is an error like any other. */
START_TEST(test_acquire_canceled_by_a_stop_ends_the_service_quietly)
{
    struct leased *t = leased_new("Asking", 0.02, true, &fake_ops);
    t->f.block = true;
    t->f.error = ECANCELED;
    fx_start(t->x, 0);
    ck_assert(sem_wait_for(&t->f.blocked, 10));
    ck_assert_int_eq(lsvc_stop(t->x->svc, false), 0);
    sem_post(&t->f.gate); /* the acquire sees the stop and gives up */
    ck_assert_int_eq(lsvc_join(t->x->svc, 10), 0);

    lsvc_stats st = stats_of(t->x->svc);
    ck_assert_uint_eq(probe_runs(&t->x->p), 0);
    ck_assert_uint_eq(st.skipped_not_leader, 0);
    ck_assert_uint_eq(st.lease_changes, 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    ck_assert_uint_eq(fake_read(&t->f, &t->f.releases), 0);
    ck_assert_str_eq(t->x->p.events, "ST");

    /* Without a stop, ECANCELED is one more error that could not tell. */
    t->f.block = false;
    sem_drain(&t->f.acquired);
    fx_start(t->x, 0);
    ck_assert(log_wait(0, LSVC_LOG_WARNING, "Operation canceled", 10, NULL));
    ck_assert(leased_wait_acquires(t, 3)); /* the first two are counted */
    leased_stop(t, 0);
    ck_assert_uint_ge(stats_of(t->x->svc).skipped_not_leader, 2);
    ck_assert_uint_eq(probe_runs(&t->x->p), 0);
}
END_TEST

/* --- Handover between two replicas ----------------------------------------- */

/* One lease store, as two replicas of a server would share in a database. */
struct store {
    pthread_mutex_t lock; /* protects the fields below */
    const void *owner;    /* the replica holding the lease, or NULL */
    int active;           /* runs in progress, of either replica */
    int violations;       /* runs made without the lease, or side by side */
    uint64_t tokens;      /* fencing tokens given so far: the last one */
    uint64_t fence;       /* the highest token a run wrote with */
    int stale_writes;     /* runs whose token was below the fence */
    int token_error;      /* what the token callback returns */
};

struct replica {
    struct store *store;
    struct fx *x;   /* the service and its probe */
    lsvc_options o; /* the store as its lease */
    sem_t acquired; /* posted as each acquire returns */
    /* Under store->lock: */
    uint64_t acquires;
    uint64_t first_held_call; /* index of the first call that gave the lease */
    uint64_t releases;
    uint64_t token;           /* of its holding; 0 = none */
    int token_mismatches;     /* runs whose lsvc_lease_token was not it */
};

static int store_acquire(void *ctx, lsvc *svc, bool *held)
{
    struct replica *r = ctx;
    (void)svc;
    pthread_mutex_lock(&r->store->lock);
    r->acquires++;
    *held = r->store->owner == NULL || r->store->owner == r;
    if (*held && r->store->owner == NULL)
        r->token = ++r->store->tokens; /* a new holding: a higher token */
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

static int store_token(void *ctx, lsvc *svc, uint64_t *token)
{
    struct replica *r = ctx;
    (void)svc;
    pthread_mutex_lock(&r->store->lock);
    int rc = r->store->token_error;
    *token = r->token;
    pthread_mutex_unlock(&r->store->lock);
    return rc;
}

static const lsvc_lease_ops store_ops = {
    .acquire = store_acquire, .release = store_release, .token = store_token};

/* Inside each run: the store must name this replica, and no run of the
 * other may be in progress. The yield gives an overlap room to show. */
static void check_exclusive(lsvc *svc, struct probe *p, uint64_t run)
{
    struct replica *r = p->user;
    uint64_t token = 0;
    (void)run;
    int rc = lsvc_lease_token(svc, &token);
    pthread_mutex_lock(&r->store->lock);
    r->store->violations += r->store->owner != r;
    r->store->violations += ++r->store->active > 1;
    /* The write a fenced sink would take or refuse. */
    r->token_mismatches += rc != 0 || token != r->token;
    if (token < r->store->fence)
        r->store->stale_writes++;
    else
        r->store->fence = token;
    pthread_mutex_unlock(&r->store->lock);
    sched_yield();
    pthread_mutex_lock(&r->store->lock);
    r->store->active--;
    pthread_mutex_unlock(&r->store->lock);
}

static void replica_teardown(void *arg)
{
    struct replica *r = arg;
    sem_destroy(&r->acquired);
}

/* A service `name` of 20 ms whose lease is the store s; the teardown ends
 * the service, then the replica. */
static struct replica *replica_new(struct store *s, const char *name)
{
    struct replica *r = test_alloc(sizeof(*r));
    r->store = s;
    sem_init(&r->acquired, 0, 0);
    at_teardown(replica_teardown, r);
    r->o = lease_options(&store_ops, r);
    r->x = fx_new(name, 0.02, &r->o);
    r->x->p.during = check_exclusive;
    r->x->p.user = r;
    return r;
}

/* Whether the replica's service says it holds the lease. */
static bool replica_holds(const struct replica *r)
{
    return stats_of(r->x->svc).lease_held;
}

START_TEST(test_stopped_holder_hands_over_to_the_other_replica)
{
    struct store s = {.lock = PTHREAD_MUTEX_INITIALIZER};
    log_capture_info();
    struct replica *a = replica_new(&s, "ReplicaA");
    struct replica *b = replica_new(&s, "ReplicaB");

    fx_start(a->x, 0);
    ck_assert(probe_wait_runs(&a->x->p, 1, 10));
    fx_start(b->x, 0);
    ck_assert(sem_wait_n(&b->acquired, 4, 10));
    ck_assert_uint_eq(probe_runs(&b->x->p), 0);
    ck_assert(replica_holds(a));
    ck_assert(!replica_holds(b));

    fx_stop(a->x);
    pthread_mutex_lock(&s.lock);
    uint64_t calls_at_stop = b->acquires;
    /* B may have taken it already; A must not keep it. */
    ck_assert(s.owner != a);
    ck_assert_uint_eq(a->releases, 1);
    pthread_mutex_unlock(&s.lock);
    int64_t stopped = now_ns();
    ck_assert(probe_wait_runs(&b->x->p, 1, 10));
    double took = seconds_since(stopped);
    /* Its next due run takes the lease: no waiting for it to lapse. Time
     * is shown only; the call count is the check that holds under load. */
    pthread_mutex_lock(&s.lock);
    ck_assert_msg(b->first_held_call <= calls_at_stop + 1,
                  "took over at call %llu, %llu calls after the release "
                  "(%.3f s)", (unsigned long long)b->first_held_call,
                  (unsigned long long)(b->first_held_call - calls_at_stop),
                  took);
    pthread_mutex_unlock(&s.lock);
    ck_assert(replica_holds(b));
    ck_assert(!replica_holds(a));

    /* And the other way: a restarted A now stands by. */
    uint64_t a_runs = probe_runs(&a->x->p);
    sem_drain(&a->acquired);
    sem_drain(&b->x->p.ran);
    fx_start(a->x, 0);
    ck_assert(sem_wait_n(&a->acquired, 4, 10));
    ck_assert_uint_eq(probe_runs(&a->x->p), a_runs);
    ck_assert(probe_wait_runs(&b->x->p, 2, 10));

    fx_stop(a->x);
    fx_stop(b->x);
    ck_assert_int_eq(s.violations, 0);
    ck_assert_uint_eq(a->releases, 1);
    ck_assert_uint_eq(b->releases, 1);
    ck_assert_ptr_null(s.owner);
    /* A's holding, then B's: two tokens, B's the higher, each run with
     * its holding's. */
    ck_assert_uint_eq(s.tokens, 2);
    ck_assert_uint_eq(b->token, 2);
    ck_assert_int_eq(a->token_mismatches + b->token_mismatches, 0);
    ck_assert_int_eq(s.stale_writes, 0);
}
END_TEST

/* Runs of a lease without tokens that were told ENOTSUP, token untouched. */
static atomic_int untokened_runs;

static void check_no_token(lsvc *svc, struct probe *p, uint64_t run)
{
    uint64_t token = 7;
    (void)p;
    (void)run;
    if (lsvc_lease_token(svc, &token) == ENOTSUP && token == 7)
        atomic_fetch_add(&untokened_runs, 1);
}

/* Outside a run, or in the run of a lease without tokens, there is no
 * token to give. */
START_TEST(test_lease_token_needs_a_leased_run_with_tokens)
{
    uint64_t token;
    struct leased *t = leased_new("Untokened", 0.02, true, &fake_ops);
    t->x->p.during = check_no_token;
    ck_assert_int_eq(lsvc_lease_token(t->x->svc, &token), EAGAIN);
    ck_assert_int_eq(lsvc_lease_token(NULL, &token), EINVAL);
    ck_assert_int_eq(lsvc_lease_token(t->x->svc, NULL), EINVAL);
    fx_start(t->x, 0);
    ck_assert(probe_wait_runs(&t->x->p, 2, 10));
    fx_stop(t->x);
    ck_assert_int_eq(atomic_load(&untokened_runs),
                     (int)probe_runs(&t->x->p));
    ck_assert_int_eq(lsvc_lease_token(t->x->svc, &token), EAGAIN);

    struct fx *plain = fx_new("Unleased", 60, NULL);
    ck_assert_int_eq(lsvc_lease_token(plain->svc, &token), EAGAIN);
}
END_TEST

/* A lease that says "held" but cannot give its token: the run would go
 * unfenced, so it is skipped, as for a lease that cannot tell. */
START_TEST(test_token_error_skips_the_run)
{
    struct store s = {.lock = PTHREAD_MUTEX_INITIALIZER, .token_error = EIO};
    log_capture();
    struct replica *a = replica_new(&s, "Unfenced");
    fx_start(a->x, 0);
    ck_assert(sem_wait_n(&a->acquired, 3, 10));
    ck_assert_uint_eq(probe_runs(&a->x->p), 0);
    struct log_record rec;
    ck_assert(log_wait(0, LSVC_LOG_WARNING, "Unfenced", 10, &rec));
    ck_assert_ptr_nonnull(strstr(rec.message, "fencing token"));

    /* Each holding it could not use it gave up at once, for another
     * replica to take: the two before the third ask, at least. */
    pthread_mutex_lock(&s.lock);
    ck_assert_uint_ge(a->releases, 2);
    s.token_error = 0;
    pthread_mutex_unlock(&s.lock);
    ck_assert(probe_wait_runs(&a->x->p, 2, 10));
    fx_stop(a->x);
    ck_assert_int_eq(a->token_mismatches, 0);
}
END_TEST

/* A lease whose holding lasts until a deadline the test sets. */
static _Atomic int64_t fake_deadline_ns;
static atomic_int deadline_calls;

static int fake_deadline(void *ctx, lsvc *svc, int64_t *mono_ns)
{
    (void)ctx;
    (void)svc;
    atomic_fetch_add(&deadline_calls, 1);
    *mono_ns = atomic_load(&fake_deadline_ns);
    return 0;
}

static const lsvc_lease_ops deadline_ops = {
    .acquire = fake_acquire, .release = fake_release,
    .deadline = fake_deadline};

/* What lsvc_lease_valid_for told the runs: the last answer, and runs
 * told something outside (0, 10] s or an error. */
static _Atomic double valid_seen;
static atomic_int valid_wrong;
static atomic_int valid_rc;

static void check_valid_for(lsvc *svc, struct probe *p, uint64_t run)
{
    double left = -1;
    (void)p;
    (void)run;
    int rc = lsvc_lease_valid_for(svc, &left);
    atomic_store(&valid_rc, rc);
    atomic_store(&valid_seen, left);
    if (rc != 0 || left < 0 || left > 10)
        atomic_fetch_add(&valid_wrong, 1);
}

/* A run learns how long it may count on its lease: what the lease's
 * deadline leaves, never negative; outside a leased run, or from a lease
 * that cannot tell, it gets an error. */
START_TEST(test_lease_valid_for_follows_the_deadline)
{
    double left = 5;
    struct leased *t = leased_new("Bounded", 0.02, true, &deadline_ops);
    t->x->p.during = check_valid_for;
    atomic_store(&fake_deadline_ns, now_ns() + 10 * NS_PER_S);
    ck_assert_int_eq(lsvc_lease_valid_for(t->x->svc, &left), EAGAIN);
    ck_assert_int_eq(lsvc_lease_valid_for(NULL, &left), EINVAL);
    ck_assert_int_eq(lsvc_lease_valid_for(t->x->svc, NULL), EINVAL);
    fx_start(t->x, 0);
    ck_assert(probe_wait_runs(&t->x->p, 2, 10));
    double seen = atomic_load(&valid_seen);
    ck_assert(seen > 5 && seen <= 10);
    ck_assert_int_eq(atomic_load(&valid_wrong), 0);

    /* A deadline in the past leaves 0, not a negative time. */
    atomic_store(&fake_deadline_ns, now_ns() - NS_PER_S);
    uint64_t runs = probe_runs(&t->x->p);
    ck_assert(probe_wait_runs(&t->x->p, runs + 2, 10));
    ck_assert(atomic_load(&valid_seen) == 0);
    ck_assert_int_eq(atomic_load(&valid_wrong), 0);
    fx_stop(t->x);
    ck_assert_int_ge(atomic_load(&deadline_calls), 4);
    ck_assert_int_eq(lsvc_lease_valid_for(t->x->svc, &left), EAGAIN);
    ck_assert(left == 5);

    /* A lease without the callback cannot tell. */
    struct leased *u = leased_new("Unbounded", 0.02, true, &fake_ops);
    u->x->p.during = check_valid_for;
    fx_start(u->x, 0);
    ck_assert(probe_wait_runs(&u->x->p, 2, 10));
    fx_stop(u->x);
    ck_assert_int_ge(atomic_load(&valid_wrong), 2);
    ck_assert_int_eq(atomic_load(&valid_rc), ENOTSUP);
}
END_TEST

/* A lease held elsewhere whose store says when the service last ran
 * successfully on any replica: what the test puts in cluster_ns. */
static _Atomic int64_t cluster_ns;
static atomic_int ran_calls, ran_failures;

static int cluster_success(void *ctx, lsvc *svc, int64_t *mono_ns)
{
    (void)ctx;
    (void)svc;
    *mono_ns = atomic_load(&cluster_ns);
    return 0;
}

static void count_ran(void *ctx, lsvc *svc, int result)
{
    (void)ctx;
    (void)svc;
    atomic_fetch_add(&ran_calls, 1);
    atomic_fetch_add(&ran_failures, result != 0);
}

static const lsvc_lease_ops cluster_ops = {
    .acquire = fake_acquire, .release = fake_release,
    .ran = count_ran, .last_success = cluster_success};

/* What lsvc_healthy says once two more acquires have returned: the
 * first one's news has been taken in by then. NULL: healthy. */
static const char *health_after_asks(struct leased *t)
{
    const char *why = "unset";
    ck_assert(leased_wait_acquires(t, 2));
    bool healthy = lsvc_healthy(t->x->svc, &why);
    ck_assert(healthy == (why == NULL));
    return why;
}

/* A replica that does not hold the lease sees when the service last ran
 * anywhere, and counts as orphaned once no replica has run it for its
 * limit (at least 1 s), with one WARNING, and an INFO when it runs
 * again; the holder is judged by its own runs, and told of each. */
START_TEST(test_orphaned_when_no_replica_runs)
{
    struct leased *t = leased_new("Orphan", 0.02, false, &cluster_ops);
    lsvc_stats st;
    int64_t recent = now_ns();
    atomic_store(&cluster_ns, recent);
    fx_start(t->x, 0);
    ck_assert_ptr_null(health_after_asks(t));
    ck_assert_int_eq(lsvc_get_stats(t->x->svc, &st), 0);
    ck_assert_int_eq(st.cluster_success_ns, recent);

    /* 2 s ago: beyond 5 intervals and 1 s. */
    size_t from = log_size();
    atomic_store(&cluster_ns, now_ns() - 2 * NS_PER_S);
    ck_assert_str_eq(health_after_asks(t), "orphaned");
    ck_assert(log_wait(from, LSVC_LOG_WARNING, "No replica has run Orphan",
                       10, NULL));
    ck_assert_str_eq(health_after_asks(t), "orphaned");
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "No replica"), 1);

    /* Another replica runs it: healthy again, said once. */
    atomic_store(&cluster_ns, now_ns());
    ck_assert_ptr_null(health_after_asks(t));
    ck_assert(log_wait(from, LSVC_LOG_INFO, "Orphan runs again", 10, NULL));

    /* Held here, the cluster's record does not judge it. */
    fake_answer(&t->f, true, 0);
    ck_assert(probe_wait_runs(&t->x->p, 1, 10));
    atomic_store(&cluster_ns, now_ns() - 60 * NS_PER_S);
    ck_assert(probe_wait_runs(&t->x->p, 3, 10));
    ck_assert_ptr_null(health_after_asks(t));
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "No replica"), 1);
    fx_stop(t->x);
    ck_assert_int_ge(atomic_load(&ran_calls), 3);
    ck_assert_int_eq(atomic_load(&ran_calls), (int)probe_runs(&t->x->p));
    ck_assert_int_eq(atomic_load(&ran_failures), 0);
}
END_TEST

/* Without a lease that tells of other replicas, a replica that does not
 * hold the lease is never orphaned, however long it waits. */
START_TEST(test_not_orphaned_without_cluster_news)
{
    struct leased *t = leased_start("Unknowing", 0.01, false);
    ck_assert(leased_wait_acquires(t, 150)); /* 1.5 s */
    ck_assert_ptr_null(health_after_asks(t));
    lsvc_stats st;
    ck_assert_int_eq(lsvc_get_stats(t->x->svc, &st), 0);
    ck_assert_int_eq(st.cluster_success_ns, 0);
    leased_stop(t, 0);

    lsvc_group *g;
    ck_assert_int_eq(lsvc_group_create(&g), 0);
    ck_assert_int_eq(lsvc_group_set_orphaned_after(g, 0.5), EINVAL);
    ck_assert_int_eq(lsvc_group_set_orphaned_after(g, NAN), EINVAL);
    ck_assert_int_eq(lsvc_group_set_orphaned_after(g, 2e6), EINVAL);
    ck_assert_int_eq(lsvc_group_set_orphaned_after(NULL, 5), EINVAL);
    ck_assert_int_eq(lsvc_group_set_orphaned_after(g, 20), 0);
    lsvc_group_destroy(g);
}
END_TEST

/* A held lease whose token the test changes between runs. */
static _Atomic uint64_t held_token = 5;

static int changing_token(void *ctx, lsvc *svc, uint64_t *token)
{
    (void)ctx;
    (void)svc;
    *token = atomic_load(&held_token);
    return 0;
}

static const lsvc_lease_ops changing_ops = {
    .acquire = fake_acquire, .release = fake_release,
    .token = changing_token};

/* Held at two asks in a row, but with another token: another holding came
 * between, which the stats count and the log says, once. */
START_TEST(test_a_new_token_is_a_new_holding)
{
    struct leased *t = leased_new("Retaken", 0.01, true, &changing_ops);
    fx_start(t->x, 0);
    ck_assert(probe_wait_runs(&t->x->p, 2, 10));
    lsvc_stats st = stats_of(t->x->svc);
    ck_assert_uint_eq(st.lease_changes, 1);
    size_t from = log_size();
    atomic_store(&held_token, 9);
    ck_assert(leased_wait_acquires(t, 3));
    ck_assert(log_wait(from, LSVC_LOG_INFO, "holds the lease of Retaken anew",
                       10, NULL));
    st = stats_of(t->x->svc);
    ck_assert_uint_eq(st.lease_changes, 3);
    ck_assert(st.lease_held);
    ck_assert_uint_eq(log_count(LSVC_LOG_INFO, "anew"), 1);
    leased_stop(t, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lease");
    add_tests(s, "lease", (const TTest *[]){
        test_run_happens_only_when_held,
        test_not_held_skips_every_due_run_and_keeps_the_schedule,
        test_acquire_and_release_run_on_the_service_thread,
        test_lease_is_called_with_no_library_lock_held,
        test_lease_without_acquire_is_einval,
        test_lease_with_null_ctx_gets_null,
        test_gain_and_loss_are_logged_once_each,
        test_stats_follow_the_lease,
        test_acquire_error_skips_the_run_and_warns,
        test_acquire_errors_are_rate_limited,
        test_acquire_error_while_held_loses_the_lease,
        test_stop_releases_a_held_lease,
        test_stop_does_not_release_a_lease_not_held,
        test_release_is_optional,
        test_release_comes_after_the_last_run_and_before_on_stop,
        test_loops_count_only_runs_made,
        test_blocked_acquire_delays_only_its_service,
        test_acquire_canceled_by_a_stop_ends_the_service_quietly,
        test_stopped_holder_hands_over_to_the_other_replica,
        test_lease_token_needs_a_leased_run_with_tokens,
        test_token_error_skips_the_run,
        test_lease_valid_for_follows_the_deadline,
        test_orphaned_when_no_replica_runs,
        test_a_new_token_is_a_new_holding,
        test_not_orphaned_without_cluster_news, NULL});
    return run_suite(s);
}
