/*
 * lsvc_get_stats and lsvc_scheduled_start: what the counters say after
 * known runs, and that a snapshot taken while the service runs is
 * consistent.
 */
#include "helpers.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#define MS NS_PER_MS

static lsvc_stats stats_of(const lsvc *svc)
{
    lsvc_stats st;
    ck_assert_int_eq(lsvc_get_stats(svc, &st), 0);
    return st;
}

START_TEST(test_stats_of_a_new_service_are_zero)
{
    static const lsvc_class cls = PROBE_CLASS("Fresh", 60);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    lsvc_stats st = stats_of(svc);
    ck_assert_uint_eq(st.loops + st.errors + st.overruns + st.missed, 0);
    ck_assert_int_eq(st.last_run_ns, 0);
    ck_assert_int_eq(st.max_run_ns, 0);
    ck_assert_int_eq(st.last_lateness_ns, 0);
    ck_assert_int_eq(st.max_lateness_ns, 0);
    ck_assert(!st.running);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_stats_count_loops_and_errors)
{
    static const lsvc_class cls = PROBE_CLASS("Counting", 0.01);
    struct probe p;
    probe_init(&p);
    p.run_code = 2;
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 4), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    lsvc_stats st = stats_of(svc);
    ck_assert_uint_eq(st.loops, 4);
    ck_assert_uint_eq(st.errors, 4);
    p.run_code = 0;
    ck_assert_int_eq(lsvc_start(svc, 2), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    st = stats_of(svc);
    ck_assert_uint_eq(st.loops, 6);
    ck_assert_uint_eq(st.errors, 4);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* Two runs of 120 ms, then two quick ones, at a 50 ms interval. */
static lsvc *run_two_slow(struct probe *p)
{
    static const lsvc_class cls = PROBE_CLASS("Slowish", 0.05);
    probe_init(p);
    p->slow_ns = 120 * MS;
    p->slow_runs = 2;
    lsvc *svc = make_service(&cls, p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 4), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    return svc;
}

START_TEST(test_stats_count_overruns)
{
    struct probe p;
    lsvc *svc = run_two_slow(&p);
    lsvc_stats st = stats_of(svc);
    ck_assert_uint_eq(st.loops, 4);
    ck_assert_uint_eq(st.overruns, 2);
    ck_assert_uint_eq(st.missed, 0);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_stats_record_last_and_longest_run)
{
    struct probe p;
    lsvc *svc = run_two_slow(&p);
    lsvc_stats st = stats_of(svc);
    ck_assert_int_ge(st.max_run_ns, 120 * MS);
    ck_assert_int_lt(st.max_run_ns, 10 * NS_PER_S);
    ck_assert_int_ge(st.last_run_ns, 0);
    ck_assert_int_lt(st.last_run_ns, 120 * MS);
    /* The library times the whole call, so no less than the probe saw. */
    ck_assert_int_ge(st.last_run_ns, p.end_ns[3] - p.begin_ns[3]);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* With BURST, a run due while a long one was working starts late by a
 * known amount. */
START_TEST(test_stats_record_lateness_from_scheduled_start)
{
    static const lsvc_class cls = PROBE_CLASS("LateOnes", 0.05);
    struct probe p;
    probe_init(&p);
    p.slow_ns = 120 * MS;
    p.slow_runs = 1;
    lsvc_options o = {.missed = LSVC_MISSED_BURST};
    lsvc *svc = make_service(&cls, &p, &o);
    ck_assert_int_eq(lsvc_start(svc, 3), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    lsvc_stats st = stats_of(svc);
    /* Run 2 was due at +50 ms and could start only after +120 ms. */
    ck_assert_int_ge(st.max_lateness_ns, p.end_ns[0] - p.sched_ns[1]);
    ck_assert_int_ge(st.max_lateness_ns, 70 * MS);
    /* The library takes its start before calling run_once. */
    ck_assert_int_ge(st.last_lateness_ns, p.end_ns[1] - p.sched_ns[2]);
    ck_assert_int_le(st.last_lateness_ns, p.begin_ns[2] - p.sched_ns[2]);
    ck_assert_int_ge(st.max_lateness_ns, st.last_lateness_ns);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_stats_running_flag_follows_the_thread)
{
    static const lsvc_class cls = PROBE_CLASS("Flagged", 60);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert(!stats_of(svc).running);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(probe_wait_runs(&p, 1, 5));
    ck_assert(stats_of(svc).running);
    ck_assert(lsvc_is_running(svc));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert(!stats_of(svc).running);
    ck_assert(!lsvc_is_running(svc));
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

/* Every run fails, so in any consistent snapshot errors == loops. */
START_TEST(test_stats_snapshot_is_consistent)
{
    static const lsvc_class cls = PROBE_CLASS("Snapshot", 0.01);
    struct probe p;
    probe_init(&p);
    p.run_code = 1;
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 30), 0);
    uint64_t seen = 0;
    int64_t t0 = now_ns();
    lsvc_stats st;
    do {
        st = stats_of(svc);
        ck_assert_msg(st.errors == st.loops, "errors %llu, loops %llu",
                      (unsigned long long)st.errors,
                      (unsigned long long)st.loops);
        ck_assert_int_ge(st.max_run_ns, st.last_run_ns);
        ck_assert_int_ge(st.max_lateness_ns, st.last_lateness_ns);
        seen++;
        sched_yield();
    } while (st.running && seconds_since(t0) < 20);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    st = stats_of(svc);
    ck_assert_uint_eq(st.loops, 30);
    ck_assert_uint_eq(st.errors, 30);
    ck_assert_uint_gt(seen, 30);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_scheduled_start_is_eagain_before_any_run)
{
    static const lsvc_class cls = PROBE_CLASS("NotYet", 60);
    struct probe p;
    probe_init(&p);
    lsvc_options o = {.initial_delay = 60};
    lsvc *svc = make_service(&cls, &p, &o);
    struct timespec ts;
    ck_assert_int_eq(lsvc_scheduled_start(svc, &ts), EAGAIN);
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(sem_wait_for(&p.started, 5));
    ck_assert_int_eq(lsvc_scheduled_start(svc, &ts), EAGAIN);
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    ck_assert_int_eq(lsvc_scheduled_start(svc, &ts), EAGAIN);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

START_TEST(test_scheduled_start_gives_the_last_run_after_it)
{
    static const lsvc_class cls = PROBE_CLASS("Finished", 0.01);
    struct probe p;
    probe_init(&p);
    lsvc *svc = make_service(&cls, &p, NULL);
    ck_assert_int_eq(lsvc_start(svc, 3), 0);
    ck_assert_int_eq(lsvc_join(svc, 10), 0);
    ck_assert_int_eq(p.sched_rc, 0);
    struct timespec ts;
    ck_assert_int_eq(lsvc_scheduled_start(svc, &ts), 0);
    ck_assert_int_eq(timespec_ns(&ts), p.sched_ns[2]);
    ck_assert_int_lt(p.sched_ns[1], p.sched_ns[2]);
    ck_assert_int_eq(lsvc_destroy(svc), 0);
    probe_destroy(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = timed_tcase("stats");
    tcase_add_test(tc, test_stats_of_a_new_service_are_zero);
    tcase_add_test(tc, test_stats_count_loops_and_errors);
    tcase_add_test(tc, test_stats_count_overruns);
    tcase_add_test(tc, test_stats_record_last_and_longest_run);
    tcase_add_test(tc, test_stats_record_lateness_from_scheduled_start);
    tcase_add_test(tc, test_stats_running_flag_follows_the_thread);
    tcase_add_test(tc, test_stats_snapshot_is_consistent);
    tcase_add_test(tc, test_scheduled_start_is_eagain_before_any_run);
    tcase_add_test(tc, test_scheduled_start_gives_the_last_run_after_it);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
