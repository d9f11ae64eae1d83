/*
 * Settings from the environment: LOOPSVC_<NAME>_ENABLED and
 * LOOPSVC_<NAME>_LOOP_SECONDS, read at every group start. How a service's
 * name becomes NAME; which values disable, enable or set the interval;
 * that every other value is refused with a WARNING naming the variable
 * and leaves the code's setting alone; that the override ends with the
 * group's wait; and that lsvc_group_set_environment(g, false) turns all of
 * it off.
 *
 * Each test runs in its own forked child before any thread exists there,
 * so setenv() is safe in it.
 */
#include "helpers.h"

#include <errno.h>
#include <math.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The class interval of most services here. Not the library's default
 * (60 s), so that a value wrongly taken as "0 = default" shows. */
#define CODE_SECONDS 20.0

/* Bounds for events that should take milliseconds, wide for sanitizers
 * and valgrind on loaded cores. */
#define EVENT_LIMIT_S 5.0

/* --- Environment and log checks ------------------------------------------- */

/* The variable a test expects warnings about. Set before any library
 * thread exists and only read afterwards. */
static const char *watched_var;
static sem_t watched_warned; /* posted for each WARNING naming it */
static atomic_int watched_warnings;
static atomic_int messages_with_newline;

/* Looks at each message in full: the capture keeps only its first 511
 * bytes, and a message quoting a 10 KB value may name the variable after
 * that. */
static void checking_sink(int level, const char *logger, const char *message,
                          void *ctx)
{
    if (strchr(message, '\n') != NULL)
        atomic_fetch_add(&messages_with_newline, 1);
    if (level == LSVC_LOG_WARNING && watched_var != NULL &&
        strstr(message, watched_var) != NULL) {
        atomic_fetch_add(&watched_warnings, 1);
        sem_post(&watched_warned);
    }
    log_capture_sink(level, logger, message, ctx);
}

/* A known start: nothing inherited from the shell that runs the suite
 * (a systemd NOTIFY_SOCKET would add warnings of its own, a
 * LOOPSVC_LOG_LEVEL would hide records), and every message recorded. */
static void env_setup(const char *var)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    watched_var = var;
    sem_init(&watched_warned, 0, 0);
    log_capture();
    lsvc_set_logger(checking_sink, NULL);
    lsvc_set_log_level(LSVC_LOG_INFO);
}

static void set_var(const char *name, const char *value)
{
    ck_assert_int_eq(setenv(name, value, 1), 0);
}

/* An INFO record whose message names the service or its variable. */
static bool info_names(const char *name, const char *var)
{
    return log_find(0, LSVC_LOG_INFO, name, NULL) ||
           log_find(0, LSVC_LOG_INFO, var, NULL);
}

static bool ended_with_on_stop(const char *events)
{
    size_t n = strlen(events);
    return n > 0 && events[n - 1] == 'T';
}

/* --- Fixture: services in one group ---------------------------------------- */

#define MAX_SERVICES 3

struct fixture {
    int n;
    lsvc_class cls[MAX_SERVICES];
    struct probe p[MAX_SERVICES];
    lsvc *svc[MAX_SERVICES];
    lsvc_group *g;
};

static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    ck_assert_int_eq(lsvc_group_create(&f->g), 0);
}

/* Adds a probe service; name must outlive the fixture. */
static int fixture_add(struct fixture *f, const char *name, double seconds,
                       const lsvc_options *opts)
{
    ck_assert_int_lt(f->n, MAX_SERVICES);
    int i = f->n++;
    f->cls[i] = (lsvc_class)PROBE_CLASS(name, seconds);
    probe_init(&f->p[i]);
    f->svc[i] = make_service(&f->cls[i], &f->p[i], opts);
    ck_assert_int_eq(lsvc_group_add(f->g, f->svc[i]), 0);
    return i;
}

static void fixture_stop(struct fixture *f)
{
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_stop(f->g), 0);
    ck_assert_int_eq(lsvc_group_wait(f->g), 0);
    ck_assert_msg(seconds_since(t0) < EVENT_LIMIT_S,
                  "the group took %.3f s to stop", seconds_since(t0));
    for (int i = 0; i < f->n; i++)
        ck_assert(!lsvc_is_running(f->svc[i]));
}

static void fixture_free(struct fixture *f)
{
    ck_assert_int_eq(lsvc_group_destroy(f->g), 0);
    for (int i = 0; i < f->n; i++) {
        ck_assert_int_eq(lsvc_destroy(f->svc[i]), 0);
        probe_destroy(&f->p[i]);
    }
}

/* Starts the group and waits for the first run of service i. */
static void start_and_wait_first_run(struct fixture *f, int i)
{
    ck_assert_int_eq(lsvc_group_start(f->g), 0);
    ck_assert_msg(sem_wait_for(&f->p[i].entered, EVENT_LIMIT_S),
                  "%s did not run", f->cls[i].name);
}

/*
 * Runs a group of the service `name`, with the given variable set to
 * "0", next to a witness service, and checks that the service was left
 * out: the mapping of name to variable is what this exercises.
 */
static void check_disabled_by(const char *name, const char *var)
{
    env_setup(var);
    set_var(var, "0");
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, name, CODE_SECONDS, NULL);
    int w = fixture_add(&f, "Witness", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, w);
    ck_assert_msg(!lsvc_is_running(f.svc[s]), "%s runs despite %s=0", name,
                  var);
    fixture_stop(&f);
    /* A service the group started, however briefly, ran its on_start. */
    ck_assert_msg(strcmp(f.p[s].events, "") == 0,
                  "%s was started despite %s=0: its hooks ran as \"%s\"",
                  name, var, f.p[s].events);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    fixture_free(&f);
}

/* --- Name mapping ------------------------------------------------------------ */

START_TEST(test_punctuation_in_name_becomes_underscore)
{
    check_disabled_by("cache-expiry.v2", "LOOPSVC_CACHE_EXPIRY_V2_ENABLED");
}
END_TEST

START_TEST(test_lower_case_letters_are_upper_cased)
{
    check_disabled_by("nightlyVacuum", "LOOPSVC_NIGHTLYVACUUM_ENABLED");
}
END_TEST

START_TEST(test_each_non_ascii_byte_becomes_underscore)
{
    /* "café-sweep" in UTF-8: é is two bytes, each its own '_'. */
    check_disabled_by("caf\xc3\xa9-sweep", "LOOPSVC_CAF___SWEEP_ENABLED");
}
END_TEST

/* The thread name is cut to 15 bytes; the variable must use the whole
 * name, or services that share their first 15 bytes would share it. */
START_TEST(test_long_name_is_mapped_in_full)
{
    char name[301], var[400];
    memset(name, 'q', 296);
    strcpy(name + 296, "Tail");
    strcpy(var, "LOOPSVC_");
    memset(var + 8, 'Q', 296);
    strcpy(var + 8 + 296, "TAIL_ENABLED");
    check_disabled_by(name, var);
}
END_TEST

START_TEST(test_loop_seconds_variable_uses_the_mapped_name)
{
    env_setup("LOOPSVC_MIXED_CASE_NAME_LOOP_SECONDS");
    set_var("LOOPSVC_MIXED_CASE_NAME_LOOP_SECONDS", "0.05");
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Mixed.case-Name", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, s);
    ck_assert_double_eq_tol(lsvc_loop_seconds(f.svc[s]), 0.05, 1e-9);
    fixture_stop(&f);
    fixture_free(&f);
}
END_TEST

/* --- ENABLED ----------------------------------------------------------------- */

static const char *const false_values[] = {"0", "false", "FALSE", "fAlSe"};
static const char *const true_values[] = {"1", "true", "True", "TRUE"};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

START_TEST(test_false_values_disable_the_service)
{
    const char *var = "LOOPSVC_SWITCHED_ENABLED";
    env_setup(var);
    set_var(var, false_values[_i]);
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Switched", CODE_SECONDS, NULL);
    int w = fixture_add(&f, "Witness", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, w);
    ck_assert_msg(!lsvc_is_running(f.svc[s]), "running with %s=\"%s\"", var,
                  false_values[_i]);
    ck_assert_msg(info_names("Switched", var),
                  "no INFO record names the disabled service");
    fixture_stop(&f);
    ck_assert_str_eq(f.p[s].events, "");
    ck_assert_uint_eq(probe_runs(&f.p[s]), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    fixture_free(&f);
}
END_TEST

/* A typo in the interval shows before someone turns the service back on. */
START_TEST(test_bad_loop_seconds_of_a_disabled_service_warns)
{
    env_setup("LOOPSVC_SWITCHED_ENABLED");
    set_var("LOOPSVC_SWITCHED_ENABLED", "0");
    set_var("LOOPSVC_SWITCHED_LOOP_SECONDS", "5s");
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Switched", CODE_SECONDS, NULL);
    int w = fixture_add(&f, "Witness", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, w);
    ck_assert(!lsvc_is_running(f.svc[s]));
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "LOOPSVC_SWITCHED_LOOP_SECONDS"), 1);
    fixture_stop(&f);
    unsetenv("LOOPSVC_SWITCHED_LOOP_SECONDS");
    fixture_free(&f);
}
END_TEST

START_TEST(test_true_values_keep_the_service_without_warning)
{
    const char *var = "LOOPSVC_SWITCHED_ENABLED";
    env_setup(var);
    set_var(var, true_values[_i]);
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Switched", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, s);
    ck_assert(lsvc_is_running(f.svc[s]));
    fixture_stop(&f);
    ck_assert_str_eq(f.p[s].events, "SRT");
    /* What tells a valid value from an ignored one. */
    ck_assert_msg(log_count(LSVC_LOG_WARNING, NULL) == 0,
                  "%s=\"%s\" was warned about", var, true_values[_i]);
    fixture_free(&f);
}
END_TEST

START_TEST(test_disabled_service_does_not_hold_up_the_others)
{
    env_setup(NULL);
    set_var("LOOPSVC_SKIPPED_ENABLED", "false");
    struct fixture f;
    fixture_init(&f);
    /* First and in the middle: where a start or a wait in order of
     * addition would meet it. */
    int a = fixture_add(&f, "Skipped", CODE_SECONDS, NULL);
    int b = fixture_add(&f, "Busy1", 0.01, NULL);
    int c = fixture_add(&f, "Busy2", 0.01, NULL);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert(probe_wait_runs(&f.p[b], 3, EVENT_LIMIT_S));
    ck_assert(probe_wait_runs(&f.p[c], 3, EVENT_LIMIT_S));
    fixture_stop(&f);
    ck_assert_str_eq(f.p[a].events, "");
    ck_assert_msg(ended_with_on_stop(f.p[b].events), "%s", f.p[b].events);
    ck_assert_msg(ended_with_on_stop(f.p[c].events), "%s", f.p[c].events);
    fixture_free(&f);
}
END_TEST

static void stop_self_at_second_run(lsvc *svc, struct probe *p, uint64_t run)
{
    (void)p;
    if (run == 1)
        lsvc_stop(svc, false);
}

START_TEST(test_group_wait_returns_when_the_enabled_services_end)
{
    env_setup(NULL);
    set_var("LOOPSVC_SKIPPED_ENABLED", "0");
    struct fixture f;
    fixture_init(&f);
    int a = fixture_add(&f, "Skipped", CODE_SECONDS, NULL);
    int b = fixture_add(&f, "SelfEnding", 0.01, NULL);
    f.p[b].during = stop_self_at_second_run;
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    int64_t t0 = now_ns();
    ck_assert_int_eq(lsvc_group_wait(f.g), 0);
    ck_assert_msg(seconds_since(t0) < EVENT_LIMIT_S,
                  "lsvc_group_wait took %.3f s", seconds_since(t0));
    ck_assert_str_eq(f.p[a].events, "");
    ck_assert_uint_eq(probe_runs(&f.p[b]), 2);
    fixture_free(&f);
}
END_TEST

/* Not 0, 1, false or true in any case. */
static const char *const hostile_enabled[] = {
    "yes", "no", "2", "", "truee", "tru", "falsee", "on", " 1", "1 ",
    "0x0", "-0", "+1", "01", "1\n", "\x1b[0m",
};

START_TEST(test_hostile_enabled_values_warn_and_keep_the_service)
{
    const char *var = "LOOPSVC_HOSTILE_ENABLED";
    env_setup(var);
    set_var(var, hostile_enabled[_i]);
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Hostile", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, s);
    ck_assert_msg(sem_wait_for(&watched_warned, EVENT_LIMIT_S),
                  "no WARNING names %s for the value at index %d", var, _i);
    ck_assert(lsvc_is_running(f.svc[s]));
    fixture_stop(&f);
    ck_assert_str_eq(f.p[s].events, "SRT");
    ck_assert_int_eq(atomic_load(&messages_with_newline), 0);
    fixture_free(&f);
}
END_TEST

/* A 10 KB value, read in full or cut, must still be refused. */
START_TEST(test_10_kb_enabled_value_warns_and_keeps_the_service)
{
    const char *var = "LOOPSVC_HOSTILE_ENABLED";
    static char value[10 * 1024 + 1];
    memset(value, '1', sizeof(value) - 1);
    env_setup(var);
    set_var(var, value);
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Hostile", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, s);
    ck_assert_msg(sem_wait_for(&watched_warned, EVENT_LIMIT_S),
                  "no WARNING names %s", var);
    fixture_stop(&f);
    ck_assert_str_eq(f.p[s].events, "SRT");
    fixture_free(&f);
}
END_TEST

/* --- LOOP_SECONDS ------------------------------------------------------------ */

START_TEST(test_loop_seconds_overrides_class_and_options_interval)
{
    const char *var = "LOOPSVC_FAST_LOOP_SECONDS";
    env_setup(var);
    set_var(var, "0.05");
    struct fixture f;
    fixture_init(&f);
    const lsvc_options opts = {.loop_seconds = 30};
    int s = fixture_add(&f, "Fast", 60, &opts);
    ck_assert_int_eq(lsvc_group_start(f.g), 0);
    ck_assert_double_eq_tol(lsvc_loop_seconds(f.svc[s]), 0.05, 1e-9);
    /* With the code's 30 s only the first run would come. */
    ck_assert_msg(probe_wait_runs(&f.p[s], 5, 10.0), "%llu runs in 10 s",
                  (unsigned long long)probe_runs(&f.p[s]));
    /* Each run is due at least one interval after the one before, however
     * late the runs themselves start on a loaded machine. */
    double spread = (double)(f.p[s].sched_ns[4] - f.p[s].sched_ns[0]) / 1e9;
    ck_assert_msg(spread >= 0.2 - 1e-6, "five runs due within %.3f s", spread);
    fixture_stop(&f);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    fixture_free(&f);
}
END_TEST

START_TEST(test_loop_seconds_override_is_logged_at_info)
{
    const char *var = "LOOPSVC_FAST_LOOP_SECONDS";
    env_setup(var);
    set_var(var, "0.05");
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Fast", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, s);
    fixture_stop(&f);
    /* The usual "Fast started: runs every 0.05 s." line says neither. */
    struct log_record r;
    bool named = log_find(0, LSVC_LOG_INFO, var, &r);
    for (size_t from = 0; !named && log_find(from, LSVC_LOG_INFO, "Fast", &r);
         from++)
        named = strstr(r.message, "environment") != NULL;
    ck_assert_msg(named, "no INFO record says that %s set the interval", var);
    fixture_free(&f);
}
END_TEST

START_TEST(test_code_interval_returns_after_group_wait)
{
    env_setup("LOOPSVC_FAST_LOOP_SECONDS");
    set_var("LOOPSVC_FAST_LOOP_SECONDS", "0.05");
    struct fixture f;
    fixture_init(&f);
    const lsvc_options opts = {.loop_seconds = 30};
    int s = fixture_add(&f, "Fast", 60, &opts);
    ck_assert_double_eq_tol(lsvc_loop_seconds(f.svc[s]), 30, 1e-9);
    start_and_wait_first_run(&f, s);
    ck_assert_double_eq_tol(lsvc_loop_seconds(f.svc[s]), 0.05, 1e-9);
    fixture_stop(&f);
    ck_assert_double_eq_tol(lsvc_loop_seconds(f.svc[s]), 30, 1e-9);
    fixture_free(&f);
}
END_TEST

/*
 * A wait that timed out leaves a stuck service running, on the
 * environment's interval while that run lasts. Once it has ended, the
 * group is over for it too: it has the code's interval again, and a
 * stand-alone start afterwards runs on that, not on the environment's.
 */
START_TEST(test_environment_interval_ends_with_a_service_left_running)
{
    const char *var = "LOOPSVC_LINGERING_LOOP_SECONDS";
    env_setup(var);
    set_var(var, "0.2");
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Lingering", 5, NULL);
    ck_assert_int_eq(lsvc_group_set_stop_timeout(f.g, 0.05), 0);
    probe_hold(&f.p[s]);
    start_and_wait_first_run(&f, s);
    ck_assert_double_eq_tol(lsvc_loop_seconds(f.svc[s]), 0.2, 1e-9);
    ck_assert_int_eq(lsvc_group_stop(f.g), 0);
    ck_assert_int_eq(lsvc_group_wait(f.g), ETIMEDOUT);
    ck_assert(lsvc_is_running(f.svc[s]));
    probe_release(&f.p[s]);
    ck_assert_int_eq(lsvc_join(f.svc[s], EVENT_LIMIT_S), 0);
    ck_assert_msg(lsvc_loop_seconds(f.svc[s]) == 5.0,
                  "the ended service has an interval of %.9g s, its code "
                  "says 5 s", lsvc_loop_seconds(f.svc[s]));

    /* On its own now: no group, and no variable that one would read. */
    ck_assert_int_eq(unsetenv(var), 0);
    ck_assert_int_eq(lsvc_group_destroy(f.g), 0);
    f.g = NULL;
    ck_assert_int_eq(lsvc_start(f.svc[s], 0), 0);
    ck_assert(sem_wait_for(&f.p[s].entered, EVENT_LIMIT_S));
    ck_assert_msg(lsvc_loop_seconds(f.svc[s]) == 5.0,
                  "started alone, it runs every %.9g s",
                  lsvc_loop_seconds(f.svc[s]));
    /* Every 0.2 s, the second run would have come within 1 s. */
    ck_assert_msg(!sem_wait_for(&f.p[s].entered, 1.0),
                  "a second run came within 1 s of the first");
    ck_assert_int_eq(lsvc_stop(f.svc[s], true), 0);
    ck_assert_str_eq(f.p[s].events, "SRTSRT");
    ck_assert_int_eq(lsvc_destroy(f.svc[s]), 0);
    probe_destroy(&f.p[s]);
}
END_TEST

START_TEST(test_settings_are_read_again_at_every_group_start)
{
    env_setup(NULL);
    set_var("LOOPSVC_OFFNOW_ENABLED", "0");
    set_var("LOOPSVC_FASTNOW_LOOP_SECONDS", "0.05");
    struct fixture f;
    fixture_init(&f);
    int off = fixture_add(&f, "OffNow", CODE_SECONDS, NULL);
    int fast = fixture_add(&f, "FastNow", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, fast);
    ck_assert_double_eq_tol(lsvc_loop_seconds(f.svc[fast]), 0.05, 1e-9);
    fixture_stop(&f);
    ck_assert_str_eq(f.p[off].events, "");

    /* No thread of the library is left to read the environment. */
    ck_assert_int_eq(unsetenv("LOOPSVC_OFFNOW_ENABLED"), 0);
    ck_assert_int_eq(unsetenv("LOOPSVC_FASTNOW_LOOP_SECONDS"), 0);
    start_and_wait_first_run(&f, off);
    ck_assert_double_eq_tol(lsvc_loop_seconds(f.svc[fast]), CODE_SECONDS,
                            1e-9);
    fixture_stop(&f);
    ck_assert_str_eq(f.p[off].events, "SRT");
    fixture_free(&f);
}
END_TEST

struct valid_seconds {
    const char *text;
    double seconds;
};

static const struct valid_seconds valid_forms[] = {
    {"5e-2", 0.05},     {"5E-2", 0.05},  {"0.5e-1", 0.05},
    {"50e-3", 0.05},    {"5e-02", 0.05}, {"0.050", 0.05},
    {"3.1536e7", LSVC_MAX_SECONDS},
};

START_TEST(test_valid_exponent_forms_are_accepted)
{
    const char *var = "LOOPSVC_EXPONENT_LOOP_SECONDS";
    env_setup(var);
    set_var(var, valid_forms[_i].text);
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Exponent", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, s);
    ck_assert_msg(fabs(lsvc_loop_seconds(f.svc[s]) - valid_forms[_i].seconds) <
                      1e-9,
                  "%s=\"%s\" gave %.9g s", var, valid_forms[_i].text,
                  lsvc_loop_seconds(f.svc[s]));
    fixture_stop(&f);
    ck_assert_msg(log_count(LSVC_LOG_WARNING, NULL) == 0,
                  "%s=\"%s\" was warned about", var, valid_forms[_i].text);
    fixture_free(&f);
}
END_TEST

/* A value, or `fill` repeated 10 KB when fill is not '\0'. */
struct hostile {
    const char *text;
    char fill;
};

static const struct hostile hostile_seconds[] = {
    {"", 0},          {"nan", 0},     {"NaN", 0},       {"inf", 0},
    {"Infinity", 0},  {"-inf", 0},    {"1e999", 0},     {"-5", 0},
    {"+5", 0},        {"-0", 0},      {"0", 0},         {"0.0", 0},
    {"5s", 0},        {" 5", 0},      {"5 ", 0},        {"\t5", 0},
    {"0x10", 0},      {"0x1p-4", 0},  {"1e-999", 0},    {"1e-10", 0},
    {"1e12", 0},      {"31536000.5", 0}, {"5e", 0},     {"e5", 0},
    {".", 0},         {"5,0", 0},     {"1_000", 0},     {"0.05\n", 0},
    {"0.05\nLOOPSVC_OTHER=1", 0},     {"\x01\x02", 0},  {"\x1b[31m5", 0},
    {NULL, '1'},      {NULL, 'x'},
};

START_TEST(test_hostile_loop_seconds_warn_and_keep_the_code_interval)
{
    static char big[10 * 1024 + 1];
    const struct hostile *h = &hostile_seconds[_i];
    const char *value = h->text;
    if (value == NULL) {
        memset(big, h->fill, sizeof(big) - 1);
        value = big;
    }
    const char *var = "LOOPSVC_HOSTILE_LOOP_SECONDS";
    env_setup(var);
    set_var(var, value);
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Hostile", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, s);
    ck_assert_msg(sem_wait_for(&watched_warned, EVENT_LIMIT_S),
                  "no WARNING names %s for the value at index %d", var, _i);
    ck_assert_msg(lsvc_loop_seconds(f.svc[s]) == CODE_SECONDS,
                  "the value at index %d gave %.9g s", _i,
                  lsvc_loop_seconds(f.svc[s]));
    fixture_stop(&f);
    ck_assert_msg(!log_find(0, LSVC_LOG_INFO, var, NULL),
                  "a refused value was logged as taken");
    /* A log message is one line; a value with a newline must not split
     * it. */
    ck_assert_int_eq(atomic_load(&messages_with_newline), 0);
    fixture_free(&f);
}
END_TEST

/* --- Turning it off ---------------------------------------------------------- */

START_TEST(test_environment_off_ignores_every_variable)
{
    env_setup(NULL);
    set_var("LOOPSVC_IGNORED_ENABLED", "0");
    set_var("LOOPSVC_IGNORED_LOOP_SECONDS", "0.05");
    set_var("LOOPSVC_GARBLED_ENABLED", "yes");
    set_var("LOOPSVC_GARBLED_LOOP_SECONDS", "nan");
    struct fixture f;
    fixture_init(&f);
    int a = fixture_add(&f, "Ignored", CODE_SECONDS, NULL);
    int b = fixture_add(&f, "Garbled", CODE_SECONDS, NULL);
    ck_assert_int_eq(lsvc_group_set_environment(f.g, false), 0);
    start_and_wait_first_run(&f, a);
    ck_assert(sem_wait_for(&f.p[b].entered, EVENT_LIMIT_S));
    ck_assert_double_eq_tol(lsvc_loop_seconds(f.svc[a]), CODE_SECONDS, 1e-9);
    ck_assert_double_eq_tol(lsvc_loop_seconds(f.svc[b]), CODE_SECONDS, 1e-9);
    fixture_stop(&f);
    ck_assert_str_eq(f.p[a].events, "SRT");
    ck_assert_str_eq(f.p[b].events, "SRT");
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    ck_assert(!log_find(0, 0, "LOOPSVC_", NULL));
    fixture_free(&f);
}
END_TEST

START_TEST(test_environment_can_be_turned_on_again)
{
    env_setup(NULL);
    set_var("LOOPSVC_TOGGLED_ENABLED", "0");
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Toggled", CODE_SECONDS, NULL);
    int w = fixture_add(&f, "Witness", CODE_SECONDS, NULL);
    ck_assert_int_eq(lsvc_group_set_environment(f.g, false), 0);
    start_and_wait_first_run(&f, s);
    fixture_stop(&f);
    ck_assert_int_eq(lsvc_group_set_environment(f.g, true), 0);
    start_and_wait_first_run(&f, w);
    fixture_stop(&f);
    ck_assert_str_eq(f.p[s].events, "SRT");
    fixture_free(&f);
}
END_TEST

/* --- Errors ------------------------------------------------------------------ */

START_TEST(test_set_environment_on_null_group_is_einval)
{
    ck_assert_int_eq(lsvc_group_set_environment(NULL, true), EINVAL);
    ck_assert_int_eq(lsvc_group_set_environment(NULL, false), EINVAL);
}
END_TEST

START_TEST(test_set_environment_while_started_is_ebusy)
{
    env_setup(NULL);
    set_var("LOOPSVC_STEADY_ENABLED", "0");
    struct fixture f;
    fixture_init(&f);
    int s = fixture_add(&f, "Steady", CODE_SECONDS, NULL);
    int w = fixture_add(&f, "Witness", CODE_SECONDS, NULL);
    start_and_wait_first_run(&f, w);
    ck_assert_int_eq(lsvc_group_set_environment(f.g, false), EBUSY);
    ck_assert_int_eq(lsvc_group_set_environment(f.g, true), EBUSY);
    fixture_stop(&f);
    ck_assert_str_eq(f.p[s].events, "");
    /* Idle again once the wait has returned. */
    ck_assert_int_eq(lsvc_group_set_environment(f.g, false), 0);
    fixture_free(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("environment");

    TCase *names = timed_tcase("names");
    tcase_add_test(names, test_punctuation_in_name_becomes_underscore);
    tcase_add_test(names, test_lower_case_letters_are_upper_cased);
    tcase_add_test(names, test_each_non_ascii_byte_becomes_underscore);
    tcase_add_test(names, test_long_name_is_mapped_in_full);
    tcase_add_test(names, test_loop_seconds_variable_uses_the_mapped_name);
    suite_add_tcase(s, names);

    TCase *enabled = timed_tcase("enabled");
    tcase_add_loop_test(enabled, test_false_values_disable_the_service, 0,
                        COUNT(false_values));
    tcase_add_loop_test(enabled, test_true_values_keep_the_service_without_warning,
                        0, COUNT(true_values));
    tcase_add_test(enabled, test_bad_loop_seconds_of_a_disabled_service_warns);
    tcase_add_test(enabled, test_disabled_service_does_not_hold_up_the_others);
    tcase_add_test(enabled, test_group_wait_returns_when_the_enabled_services_end);
    tcase_add_loop_test(enabled,
                        test_hostile_enabled_values_warn_and_keep_the_service,
                        0, COUNT(hostile_enabled));
    tcase_add_test(enabled, test_10_kb_enabled_value_warns_and_keeps_the_service);
    suite_add_tcase(s, enabled);

    TCase *seconds = timed_tcase("loop seconds");
    tcase_add_test(seconds, test_loop_seconds_overrides_class_and_options_interval);
    tcase_add_test(seconds, test_loop_seconds_override_is_logged_at_info);
    tcase_add_test(seconds, test_code_interval_returns_after_group_wait);
    tcase_add_test(seconds, test_environment_interval_ends_with_a_service_left_running);
    tcase_add_test(seconds, test_settings_are_read_again_at_every_group_start);
    tcase_add_loop_test(seconds, test_valid_exponent_forms_are_accepted, 0,
                        COUNT(valid_forms));
    tcase_add_loop_test(seconds,
                        test_hostile_loop_seconds_warn_and_keep_the_code_interval,
                        0, COUNT(hostile_seconds));
    suite_add_tcase(s, seconds);

    TCase *off = timed_tcase("switch and errors");
    tcase_add_test(off, test_environment_off_ignores_every_variable);
    tcase_add_test(off, test_environment_can_be_turned_on_again);
    tcase_add_test(off, test_set_environment_on_null_group_is_einval);
    tcase_add_test(off, test_set_environment_while_started_is_ebusy);
    suite_add_tcase(s, off);
    return run_suite(s);
}
