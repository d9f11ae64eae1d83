/*
 * loopsvc-pg without a server: the key, the arguments, the conninfo check
 * at create, and what a service sees when the server refuses connections,
 * never answers, or one lease is handed to two services. The behaviours
 * that need a real server are lease_test.py's.
 *
 * The "servers" here are sockets of the test's own on 127.0.0.1: one
 * closed again (connections are refused), one that listens but never
 * accepts, so that the kernel completes the handshake and libpq then waits
 * for an answer that never comes.
 */
#include "../helpers.h"
#include "loopsvc-pg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A socket listening on a free loopback port that it never accepts on. */
static int listen_silent(int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A loopback port where nothing listens (until someone else takes it). */
static int refused_port(void)
{
    int port;

    close(listen_silent(&port));
    return port;
}

/* A lease of namespace ns on 127.0.0.1:port with that timeout. */
static lsvc_pg_lease *lease_on(int port, const char *ns, double timeout)
{
    char conninfo[128];
    lsvc_pg_lease *l;

    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d "
             "dbname=nothing user=nobody sslmode=disable", port);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, conninfo, ns, timeout), 0);
    return l;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Polls the stats until n due runs were skipped: there is no event to
 * wait on for a run that did not happen. */
static bool wait_skipped(const lsvc *svc, uint64_t n, double seconds)
{
    int64_t give_up = now_ns() + (int64_t)(seconds * 1e9);
    lsvc_stats st;

    while (lsvc_get_stats(svc, &st) == 0 && st.skipped_not_leader < n) {
        if (now_ns() > give_up)
            return false;
        sleep_ms(5);
    }
    return true;
}

static int dummy_run(lsvc *svc, void *arg)
{
    (void)svc;
    (void)arg;
    return 0;
}

static const lsvc_class cls_a = { .name = "pgprobe", .loop_seconds = 0.02,
                                  .run_once = dummy_run };
static const lsvc_class cls_b = { .name = "otherprobe", .loop_seconds = 0.02,
                                  .run_once = dummy_run };

static void destroy_lease(void *lease)
{
    ck_assert_int_eq(lsvc_pg_lease_destroy(lease), 0);
}

static void destroy_service(void *svc)
{
    ck_assert_int_eq(lsvc_destroy(svc), 0);
}

/* lease_on with the log captured; the teardown destroys the lease, after
 * the services that use it. */
static lsvc_pg_lease *test_lease(int port, const char *ns, double timeout)
{
    log_capture();
    lsvc_pg_lease *l = lease_on(port, ns, timeout);
    at_teardown(destroy_lease, l);
    return l;
}

/* A service of cls behind the lease, destroyed by the teardown. */
static lsvc *service_with(const lsvc_class *cls, lsvc_pg_lease *lease)
{
    lsvc_options opts = { 0 };
    lsvc *svc = NULL;

    ck_assert_int_eq(lsvc_pg_lease_options(lease, &opts), 0);
    ck_assert_int_eq(lsvc_create(&svc, cls, NULL, &opts), 0);
    at_teardown(destroy_service, svc);
    return svc;
}

START_TEST(key_is_fnv1a_64_of_ns_zero_name)
{
    ck_assert(lsvc_pg_lease_key("", "") == INT64_C(-5808590958014384161));
    ck_assert(lsvc_pg_lease_key("prod", "cachepruner") ==
              INT64_C(7869406848213085072));
    ck_assert(lsvc_pg_lease_key("", "lease-probe") == INT64_C(272194892920979140));
    /* The zero byte keeps namespace and name apart. */
    ck_assert(lsvc_pg_lease_key("ab", "c") == INT64_C(-188658036487747481));
    ck_assert(lsvc_pg_lease_key("a", "bc") == INT64_C(-6106610056285866717));
    ck_assert(lsvc_pg_lease_key(NULL, "x") == 0);
    ck_assert(lsvc_pg_lease_key("x", NULL) == 0);
}
END_TEST

START_TEST(create_rejects_bad_arguments)
{
    lsvc_pg_lease *l = (lsvc_pg_lease *)&l; /* untouched on failure */
    const char *ok = "host=127.0.0.1";

    ck_assert_int_eq(lsvc_pg_lease_create(NULL, ok, "", 0), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, NULL, "", 0), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, NULL, 0), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", NAN), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", -1), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", 3600.5), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", INFINITY), EINVAL);
    ck_assert_ptr_eq(l, (lsvc_pg_lease *)&l);

    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", 3600), 0);
    ck_assert_int_eq(lsvc_pg_lease_destroy(l), 0);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, "", "", 0), 0);
    ck_assert_int_eq(lsvc_pg_lease_destroy(l), 0);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, "postgresql://u@h:5/db", "ns", 0.5), 0);
    ck_assert_int_eq(lsvc_pg_lease_destroy(l), 0);

    ck_assert_int_eq(lsvc_pg_lease_destroy(NULL), EINVAL);
    lsvc_options opts = { 0 };
    ck_assert_int_eq(lsvc_pg_lease_options(NULL, &opts), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_create(&l, ok, "", 0), 0);
    ck_assert_int_eq(lsvc_pg_lease_options(l, NULL), EINVAL);
    ck_assert_int_eq(lsvc_pg_lease_options(l, &opts), 0);
    ck_assert_ptr_nonnull(opts.lease);
    ck_assert(opts.lease->acquire != NULL);
    ck_assert(opts.lease->release != NULL);
    ck_assert_ptr_eq(opts.lease_ctx, l);
    /* Fencing tokens: asked only after a "held", which no lease here
     * has been told; never a token without a holding. */
    ck_assert(opts.lease->token != NULL);
    uint64_t token = 42;
    ck_assert_int_eq(opts.lease->token(NULL, NULL, &token), EINVAL);
    ck_assert_int_eq(opts.lease->token(l, NULL, &token), EINVAL);
    lsvc *svc = NULL;
    const lsvc_class cls = { .name = "token-probe", .run_once = dummy_run };
    ck_assert_int_eq(lsvc_create(&svc, &cls, NULL, &opts), 0);
    ck_assert_int_eq(opts.lease->token(l, svc, NULL), EINVAL);
    ck_assert_int_eq(opts.lease->token(l, svc, &token), EAGAIN);
    ck_assert(token == 42);
    lsvc_destroy(svc);
    ck_assert_int_eq(lsvc_pg_lease_destroy(l), 0);
}
END_TEST

START_TEST(unparsable_conninfo_is_einval_with_libpq_reason)
{
    static const char *const bad[] = {
        "host=127.0.0.1 port", "nosuchkey=1", "host='unterminated",
        "postgresql://[::1",
    };
    lsvc_pg_lease *l = NULL;
    struct log_record r;

    log_capture();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t from = log_size();

        ck_assert_int_eq(lsvc_pg_lease_create(&l, bad[i], "", 0), EINVAL);
        ck_assert_ptr_null(l);
        ck_assert_msg(log_find(from, LSVC_LOG_ERROR, "connection string", &r),
                      "no ERROR for %s", bad[i]);
        ck_assert_str_eq(r.logger, "loopsvc");
        ck_assert_ptr_null(strchr(r.message, '\n'));
    }
    ck_assert(log_find(0, LSVC_LOG_ERROR, "missing \"=\" after \"port\"", NULL));
    ck_assert(log_find(0, LSVC_LOG_ERROR, "invalid connection option \"nosuchkey\"", NULL));
}
END_TEST

START_TEST(create_and_destroy_make_no_connection)
{
    int port, fd = listen_silent(&port);

    ck_assert_int_eq(lsvc_pg_lease_destroy(lease_on(port, "", 0)), 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    ck_assert_int_lt(accept(fd, NULL, NULL), 0);
    ck_assert_int_eq(errno, EAGAIN);
    close(fd);
}
END_TEST

START_TEST(refused_connection_skips_runs_and_warns_once)
{
    lsvc *svc = service_with(&cls_a, test_lease(refused_port(), "t", 1.0));

    /* 40 due runs at 20 ms take 0.8 s: attempts at 0, 0.1, 0.3 and 0.7 s,
     * four refusals, one WARNING. */
    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(wait_skipped(svc, 40, 10));
    ck_assert_int_eq(lsvc_stop(svc, true), 0);
    lsvc_stats st = stats_of(svc);
    ck_assert_uint_eq(st.loops, 0);
    ck_assert_uint_gt(st.skipped_not_leader, 20);
    ck_assert(!st.lease_held);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 1);
    ck_assert(log_find(0, LSVC_LOG_WARNING, "Could not connect to PostgreSQL "
                       "for the lease of pgprobe", NULL));
    ck_assert(log_find(0, LSVC_LOG_WARNING, "Connection refused", NULL));
}
END_TEST

START_TEST(silent_server_is_bounded_by_the_timeout)
{
    int port, fd = listen_silent(&port);
    struct log_record r;

    lsvc *svc = service_with(&cls_a, test_lease(port, "", 0.2));

    ck_assert_int_eq(lsvc_start(svc, 0), 0);
    ck_assert(log_wait(0, LSVC_LOG_WARNING, "no answer within 0.2 s", 5.0, &r));
    ck_assert_ptr_nonnull(strstr(r.message, "while connecting"));
    /* Whatever the lease is doing now, it gives up within its timeout. */
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_stop_timeout(svc, 2.0), 0);
    ck_assert_msg(seconds_since(t0) < 1.0, "the stop took %.2f s", seconds_since(t0));
    close(fd);
}
END_TEST

START_TEST(second_service_on_one_lease_is_einval)
{
    lsvc_pg_lease *l = test_lease(refused_port(), "", 0);
    lsvc *a = service_with(&cls_a, l);
    lsvc *b = service_with(&cls_b, l);

    size_t from = log_size();
    ck_assert_int_eq(lsvc_start(a, 0), 0);
    ck_assert(log_wait(from, LSVC_LOG_WARNING, "Could not connect", 5.0, NULL));
    ck_assert_int_eq(lsvc_start(b, 0), 0);
    ck_assert(log_wait(from, LSVC_LOG_ERROR, "one lease serves one service", 5.0, NULL));
    ck_assert(wait_skipped(b, 10, 10));
    ck_assert_int_eq(lsvc_stop(a, true), 0);
    ck_assert_int_eq(lsvc_stop(b, true), 0);
    /* Once, though every run of b asks. */
    ck_assert_uint_eq(log_count(LSVC_LOG_ERROR, "one lease serves one service"), 1);
    ck_assert(log_find(from, LSVC_LOG_ERROR, "otherprobe asked for the "
                       "PostgreSQL lease of another service", NULL));
    ck_assert_uint_eq(stats_of(b).loops, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lease-pg-api");
    add_tests(s, "api", (const TTest *[]){
        key_is_fnv1a_64_of_ns_zero_name,
        create_rejects_bad_arguments,
        unparsable_conninfo_is_einval_with_libpq_reason,
        create_and_destroy_make_no_connection,
        refused_connection_skips_runs_and_warns_once,
        silent_server_is_bounded_by_the_timeout,
        second_service_on_one_lease_is_einval, NULL});
    return run_suite(s);
}
