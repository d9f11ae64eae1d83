/*
 * The lease store shared by loopsvc-pg and loopsvc-redis (lib/leasestore.c),
 * compiled in with a fake driver (fakestore.h), so that what depends on
 * time and on the store's answers can be made to happen: here, a stop
 * that comes while a service waits for its ask, or before it asks.
 */
#include "fakestore.h"
#include "helpers.h"

#include <errno.h>

/* A store made for the test, and destroyed after the test's services. */
static void store_teardown(void *arg)
{
    struct lsvc__store *st = arg;

    ck_assert_int_eq(lsvc__store_destroy(st), 0);
}

static void fake_teardown(void *arg)
{
    struct fake_store *f = arg;

    fake_store_hold_up(f, false);
    fake_store_destroy(f);
}

/* A store over a fake, with a timeout of 2 s and a time to live of 6 s. */
static struct lsvc__store *store_new(struct fake_store *f)
{
    const int64_t second = INT64_C(1000000000);
    struct lsvc__store *st;

    fake_store_init(f);
    at_teardown(fake_teardown, f);
    ck_assert_int_eq(lsvc__store_create(&st, &fake_store_driver, f,
                                        "the store", 2 * second, 6 * second),
                     0);
    at_teardown(store_teardown, st);
    return st;
}

/* A stop ends the wait of an ask in progress within a look (20 ms), not
 * at the ask's own bound (two timeouts and 0.1 s, 4.1 s here). The take
 * that was on its way is given up once it is answered. */
START_TEST(test_stop_ends_an_ask_in_progress)
{
    struct fake_store *f = test_alloc(sizeof *f);
    struct lsvc__store *st = store_new(f);
    lsvc_options o = { .lease = &lsvc__store_ops, .lease_ctx = st };
    struct fx *x = fx_new("Asking", 60, &o);
    log_capture();

    fake_store_hold_up(f, true);
    fx_start(x, 0);
    ck_assert(sem_wait_for(&f->entered, 10)); /* the take is out */
    int64_t asked = now_ns();
    ck_assert_int_eq(lsvc_stop_timeout(x->svc, 10), 0);
    double took = seconds_since(asked);
    ck_assert_msg(took < 1.0, "the stop took %.3f s: it waited for the ask",
                  took);
    lsvc_stats stats = stats_of(x->svc);
    ck_assert_uint_eq(probe_runs(&x->p), 0);
    ck_assert_uint_eq(stats.skipped_not_leader, 0);
    ck_assert(!stats.lease_held);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);

    /* The take lands after the stop, and the next round trip gives back
     * what it gained. */
    ck_assert_uint_eq(atomic_load(&f->releases), 0);
    fake_store_hold_up(f, false);
    ck_assert(sem_wait_n(&f->answered, 2, 10));
    ck_assert_uint_eq(atomic_load(&f->releases), 1);
}
END_TEST

/* A service already asked to stop asks for no take: the lease would only
 * be given back, after another replica asking meanwhile was told "not
 * held". */
START_TEST(test_a_stopping_service_asks_for_no_take)
{
    struct fake_store *f = test_alloc(sizeof *f);
    struct lsvc__store *st = store_new(f);
    struct fx *x = fx_new("Stopping", 60, NULL);
    fx_start_held(x);
    ck_assert_int_eq(lsvc_stop(x->svc, false), 0);

    bool held = true;
    ck_assert_int_eq(lsvc__store_ops.acquire(st, x->svc, &held), ECANCELED);
    ck_assert(!held);
    ck_assert_uint_eq(atomic_load(&f->exchanges), 0);
    probe_release(&x->p);
    ck_assert_int_eq(lsvc_join(x->svc, 10), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("leasestore");
    add_tests(s, "stop", (const TTest *[]){
        test_stop_ends_an_ask_in_progress,
        test_a_stopping_service_asks_for_no_take, NULL});
    return run_suite(s);
}
