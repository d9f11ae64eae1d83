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

START_TEST(test_stats_of_a_new_service_are_zero)
{
    struct fx *f = fx_new("Fresh", 60, NULL);
    lsvc_stats st = stats_of(f->svc);
    ck_assert_uint_eq(st.loops + st.errors + st.overruns + st.missed, 0);
    ck_assert_int_eq(st.last_run_ns, 0);
    ck_assert_int_eq(st.max_run_ns, 0);
    ck_assert_int_eq(st.last_lateness_ns, 0);
    ck_assert_int_eq(st.max_lateness_ns, 0);
    ck_assert(!st.running);
}
END_TEST

/* Runs f `loops` times and checks its counts of loops and errors then. */
static void check_counts_after(struct fx *f, uint64_t loops, uint64_t want_loops,
                               uint64_t want_errors)
{
    fx_run(f, loops);
    lsvc_stats st = stats_of(f->svc);
    ck_assert_uint_eq(st.loops, want_loops);
    ck_assert_uint_eq(st.errors, want_errors);
}

START_TEST(test_stats_count_loops_and_errors)
{
    struct fx *f = fx_new("Counting", 0.01, NULL);
    f->p.run_code = 2;
    check_counts_after(f, 4, 4, 4);
    f->p.run_code = 0;
    check_counts_after(f, 2, 6, 4);
}
END_TEST

/* Runs of 120 ms at a 50 ms interval: the first `slow_runs` of `loops`,
 * under the `missed` policy. */
static struct fx *run_slow(const char *name, uint64_t slow_runs,
                           lsvc_missed missed, uint64_t loops)
{
    lsvc_options o = {.missed = missed};
    struct fx *f = fx_new(name, 0.05, &o);
    f->p.slow_ns = 120 * MS;
    f->p.slow_runs = slow_runs;
    fx_run(f, loops);
    return f;
}

START_TEST(test_stats_count_overruns)
{
    /* Two runs of 120 ms, then two quick ones. */
    struct fx *f = run_slow("Slowish", 2, LSVC_MISSED_DELAY, 4);
    lsvc_stats st = stats_of(f->svc);
    ck_assert_uint_eq(st.loops, 4);
    ck_assert_uint_eq(st.overruns, 2);
    ck_assert_uint_eq(st.missed, 0);
}
END_TEST

START_TEST(test_stats_record_last_and_longest_run)
{
    struct fx *f = run_slow("Slowish", 2, LSVC_MISSED_DELAY, 4);
    lsvc_stats st = stats_of(f->svc);
    ck_assert_int_ge(st.max_run_ns, 120 * MS);
    ck_assert_int_lt(st.max_run_ns, 10 * NS_PER_S);
    ck_assert_int_ge(st.last_run_ns, 0);
    ck_assert_int_lt(st.last_run_ns, 120 * MS);
    /* The library times the whole call, so no less than the probe saw. */
    ck_assert_int_ge(st.last_run_ns, f->p.end_ns[3] - f->p.begin_ns[3]);
}
END_TEST

/* With BURST, a run due while a long one was working starts late by a
 * known amount. */
START_TEST(test_stats_record_lateness_from_scheduled_start)
{
    struct fx *f = run_slow("LateOnes", 1, LSVC_MISSED_BURST, 3);
    const struct probe *p = &f->p;
    lsvc_stats st = stats_of(f->svc);
    /* Run 2 was due at +50 ms and could start only after +120 ms. */
    ck_assert_int_ge(st.max_lateness_ns, p->end_ns[0] - p->sched_ns[1]);
    ck_assert_int_ge(st.max_lateness_ns, 70 * MS);
    /* The library takes its start before calling run_once. */
    ck_assert_int_ge(st.last_lateness_ns, p->end_ns[1] - p->sched_ns[2]);
    ck_assert_int_le(st.last_lateness_ns, p->begin_ns[2] - p->sched_ns[2]);
    ck_assert_int_ge(st.max_lateness_ns, st.last_lateness_ns);
}
END_TEST

START_TEST(test_stats_running_flag_follows_the_thread)
{
    struct fx *f = fx_new("Flagged", 60, NULL);
    ck_assert(!stats_of(f->svc).running);
    fx_start(f, 0);
    ck_assert(probe_wait_runs(&f->p, 1, 5));
    ck_assert(stats_of(f->svc).running);
    ck_assert(lsvc_is_running(f->svc));
    fx_stop(f);
    ck_assert(!stats_of(f->svc).running);
    ck_assert(!lsvc_is_running(f->svc));
}
END_TEST

/* Every run fails, so in any consistent snapshot errors == loops. */
START_TEST(test_stats_snapshot_is_consistent)
{
    struct fx *f = fx_new("Snapshot", 0.01, NULL);
    f->p.run_code = 1;
    fx_start(f, 30);
    uint64_t seen = 0;
    int64_t t0 = now_ns();
    lsvc_stats st;
    do {
        st = stats_of(f->svc);
        ck_assert_msg(st.errors == st.loops, "errors %llu, loops %llu",
                      (unsigned long long)st.errors,
                      (unsigned long long)st.loops);
        ck_assert_int_ge(st.max_run_ns, st.last_run_ns);
        ck_assert_int_ge(st.max_lateness_ns, st.last_lateness_ns);
        seen++;
        sched_yield();
    } while (st.running && seconds_since(t0) < 20);
    ck_assert_int_eq(lsvc_join(f->svc, 10), 0);
    st = stats_of(f->svc);
    ck_assert_uint_eq(st.loops, 30);
    ck_assert_uint_eq(st.errors, 30);
    ck_assert_uint_gt(seen, 30);
}
END_TEST

START_TEST(test_scheduled_start_is_eagain_before_any_run)
{
    lsvc_options o = {.initial_delay = 60};
    struct fx *f = fx_new("NotYet", 60, &o);
    struct timespec ts;
    ck_assert_int_eq(lsvc_scheduled_start(f->svc, &ts), EAGAIN);
    fx_start(f, 0);
    ck_assert(sem_wait_for(&f->p.started, 5));
    ck_assert_int_eq(lsvc_scheduled_start(f->svc, &ts), EAGAIN);
    fx_stop(f);
    ck_assert_int_eq(lsvc_scheduled_start(f->svc, &ts), EAGAIN);
}
END_TEST

START_TEST(test_scheduled_start_gives_the_last_run_after_it)
{
    struct fx *f = fx_new("Finished", 0.01, NULL);
    fx_run(f, 3);
    ck_assert_int_eq(f->p.sched_rc, 0);
    struct timespec ts;
    ck_assert_int_eq(lsvc_scheduled_start(f->svc, &ts), 0);
    ck_assert_int_eq(timespec_ns(&ts), f->p.sched_ns[2]);
    ck_assert_int_lt(f->p.sched_ns[1], f->p.sched_ns[2]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stats");
    add_tests(s, "stats", (const TTest *[]){
        test_stats_of_a_new_service_are_zero,
        test_stats_count_loops_and_errors,
        test_stats_count_overruns,
        test_stats_record_last_and_longest_run,
        test_stats_record_lateness_from_scheduled_start,
        test_stats_running_flag_follows_the_thread,
        test_stats_snapshot_is_consistent,
        test_scheduled_start_is_eagain_before_any_run,
        test_scheduled_start_gives_the_last_run_after_it, NULL});
    return run_suite(s);
}
