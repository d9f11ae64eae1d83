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

/* --- Fixture: services in one group ---------------------------------------- */

/* Starts the group and waits for the first run of member i. */
static void start_and_wait_first_run(struct gfx *g, int i)
{
    gfx_start(g);
    ck_assert_msg(sem_wait_for(&g->m[i].p.entered, EVENT_LIMIT_S),
                  "%s did not run", g->m[i].cls.name);
}

/* env_setup(var), the variable set to `value`, and a group with the
 * service `name` in it at CODE_SECONDS, started: its index in *s. */
static struct gfx *run_with(const char *var, const char *value,
                            const char *name, int *s)
{
    env_setup(var);
    set_var(var, value);
    struct gfx *g = gfx_new();
    *s = gfx_add(g, name, CODE_SECONDS, NULL);
    start_and_wait_first_run(g, *s);
    return g;
}

/* The service's interval is `seconds`. */
static void check_interval(const struct fx *f, double seconds)
{
    ck_assert_msg(fabs(lsvc_loop_seconds(f->svc) - seconds) < 1e-9,
                  "%s runs every %.9g s, want %.9g s", f->cls.name,
                  lsvc_loop_seconds(f->svc), seconds);
}

/*
 * Runs a group of the service `name`, disabled by the variable `var` set
 * to `value`, next to a witness service, and checks that the service was
 * left out. Returns the group, stopped, with the service first.
 */
static struct gfx *run_disabled(const char *name, const char *var,
                                const char *value)
{
    env_setup(var);
    set_var(var, value);
    struct gfx *g = gfx_new();
    gfx_add(g, name, CODE_SECONDS, NULL);
    int w = gfx_add(g, "Witness", CODE_SECONDS, NULL);
    start_and_wait_first_run(g, w);
    ck_assert_msg(!lsvc_is_running(g->m[0].svc), "%s runs despite %s=\"%s\"",
                  name, var, value);
    gfx_stop(g);
    /* A service the group started, however briefly, ran its on_start. */
    ck_assert_msg(strcmp(g->m[0].p.events, "") == 0,
                  "%s was started despite %s=\"%s\": its hooks ran as \"%s\"",
                  name, var, value, g->m[0].p.events);
    ck_assert_uint_eq(probe_runs(&g->m[0].p), 0);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    return g;
}

/* A group of the service `name`, disabled by its variable, and a
 * witness. */
static struct gfx *disabled_and_witness(const char *name, const char *var)
{
    env_setup(NULL);
    set_var(var, "0");
    struct gfx *g = gfx_new();
    gfx_add(g, name, CODE_SECONDS, NULL);
    gfx_add(g, "Witness", CODE_SECONDS, NULL);
    return g;
}

/* --- Name mapping ------------------------------------------------------------ */

/* The mapping of name to variable is what these exercise. */
START_TEST(test_punctuation_in_name_becomes_underscore)
{
    run_disabled("cache-expiry.v2", "LOOPSVC_CACHE_EXPIRY_V2_ENABLED", "0");
}
END_TEST

START_TEST(test_lower_case_letters_are_upper_cased)
{
    run_disabled("nightlyVacuum", "LOOPSVC_NIGHTLYVACUUM_ENABLED", "0");
}
END_TEST

START_TEST(test_each_non_ascii_byte_becomes_underscore)
{
    /* "café-sweep" in UTF-8: é is two bytes, each its own '_'. */
    run_disabled("caf\xc3\xa9-sweep", "LOOPSVC_CAF___SWEEP_ENABLED", "0");
}
END_TEST

/* The thread name is cut to 15 bytes; the variable must use the whole
 * name, or services that share their first 15 bytes would share it. */
START_TEST(test_long_name_is_mapped_in_full)
{
    static char name[301], var[400];
    memset(name, 'q', 296);
    strcpy(name + 296, "Tail");
    strcpy(var, "LOOPSVC_");
    memset(var + 8, 'Q', 296);
    strcpy(var + 8 + 296, "TAIL_ENABLED");
    run_disabled(name, var, "0");
}
END_TEST

START_TEST(test_loop_seconds_variable_uses_the_mapped_name)
{
    int s;
    struct gfx *g = run_with("LOOPSVC_MIXED_CASE_NAME_LOOP_SECONDS", "0.05",
                             "Mixed.case-Name", &s);
    check_interval(&g->m[s], 0.05);
    gfx_stop(g);
}
END_TEST

/* --- ENABLED ----------------------------------------------------------------- */

static const char *const false_values[] = {"0", "false", "FALSE", "fAlSe"};
static const char *const true_values[] = {"1", "true", "True", "TRUE"};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

START_TEST(test_false_values_disable_the_service)
{
    const char *var = "LOOPSVC_SWITCHED_ENABLED";
    run_disabled("Switched", var, false_values[_i]);
    ck_assert_msg(log_find(0, LSVC_LOG_INFO, "Switched", NULL) ||
                      log_find(0, LSVC_LOG_INFO, var, NULL),
                  "no INFO record names the disabled service");
}
END_TEST

/* A typo in the interval shows before someone turns the service back on. */
START_TEST(test_bad_loop_seconds_of_a_disabled_service_warns)
{
    struct gfx *g = disabled_and_witness("Switched", "LOOPSVC_SWITCHED_ENABLED");
    set_var("LOOPSVC_SWITCHED_LOOP_SECONDS", "5s");
    start_and_wait_first_run(g, 1);
    ck_assert(!lsvc_is_running(g->m[0].svc));
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, "LOOPSVC_SWITCHED_LOOP_SECONDS"), 1);
    gfx_stop(g);
    unsetenv("LOOPSVC_SWITCHED_LOOP_SECONDS");
}
END_TEST

/* The service runs and ends as usual, and nothing is warned about. */
static void check_kept_without_warning(struct gfx *g, int s, const char *var,
                                       const char *value)
{
    ck_assert(lsvc_is_running(g->m[s].svc));
    gfx_stop(g);
    ck_assert_str_eq(g->m[s].p.events, "SRT");
    /* What tells a valid value from an ignored one. */
    ck_assert_msg(log_count(LSVC_LOG_WARNING, NULL) == 0,
                  "%s=\"%s\" was warned about", var, value);
}

START_TEST(test_true_values_keep_the_service_without_warning)
{
    const char *var = "LOOPSVC_SWITCHED_ENABLED";
    int s;
    struct gfx *g = run_with(var, true_values[_i], "Switched", &s);
    check_kept_without_warning(g, s, var, true_values[_i]);
}
END_TEST

/* A group whose first service, Skipped, LOOPSVC_SKIPPED_ENABLED=value
 * disables: where a start or a wait in order of addition would meet it. */
static struct gfx *skipped_first(const char *value)
{
    env_setup(NULL);
    set_var("LOOPSVC_SKIPPED_ENABLED", value);
    struct gfx *g = gfx_new();
    gfx_add(g, "Skipped", CODE_SECONDS, NULL);
    return g;
}

START_TEST(test_disabled_service_does_not_hold_up_the_others)
{
    struct gfx *g = skipped_first("false");
    /* And in the middle. */
    int a = 0;
    gfx_add(g, "Busy1", 0.01, NULL);
    gfx_add(g, "Busy2", 0.01, NULL);
    gfx_start(g);
    for (int i = 1; i <= 2; i++)
        ck_assert(probe_wait_runs(&g->m[i].p, 3, EVENT_LIMIT_S));
    gfx_stop(g);
    ck_assert_str_eq(g->m[a].p.events, "");
    for (int i = 1; i <= 2; i++)
        ck_assert_msg(ended_with_on_stop(g->m[i].p.events), "%s",
                      g->m[i].p.events);
}
END_TEST

START_TEST(test_group_wait_returns_when_the_enabled_services_end)
{
    struct gfx *g = skipped_first("0");
    int a = 0;
    int b = gfx_add(g, "SelfEnding", 0.01, NULL);
    g->m[b].p.during = stop_at_second_run;
    gfx_start(g);
    gfx_wait(g);
    ck_assert_str_eq(g->m[a].p.events, "");
    ck_assert_uint_eq(probe_runs(&g->m[b].p), 2);
}
END_TEST

/* Runs the service "Hostile" with `var` set to a value it must refuse,
 * and checks the WARNING that names the variable; returns the group,
 * still running, and the service's index in *s. */
static struct gfx *run_refused(const char *var, const char *value, int *s)
{
    struct gfx *g = run_with(var, value, "Hostile", s);
    ck_assert_msg(sem_wait_for(&watched_warned, EVENT_LIMIT_S),
                  "no WARNING names %s for the value \"%.40s\"", var, value);
    return g;
}

/* Not 0, 1, false or true in any case. */
static const char *const hostile_enabled[] = {
    "yes", "no", "2", "", "truee", "tru", "falsee", "on", " 1", "1 ",
    "0x0", "-0", "+1", "01", "1\n", "\x1b[0m",
};

START_TEST(test_hostile_enabled_values_warn_and_keep_the_service)
{
    int s;
    struct gfx *g = run_refused("LOOPSVC_HOSTILE_ENABLED", hostile_enabled[_i],
                                &s);
    ck_assert(lsvc_is_running(g->m[s].svc));
    gfx_stop(g);
    ck_assert_str_eq(g->m[s].p.events, "SRT");
    ck_assert_int_eq(atomic_load(&messages_with_newline), 0);
}
END_TEST

/* A 10 KB value, read in full or cut, must still be refused. */
START_TEST(test_10_kb_enabled_value_warns_and_keeps_the_service)
{
    static char value[10 * 1024 + 1];
    memset(value, '1', sizeof(value) - 1);
    int s;
    struct gfx *g = run_refused("LOOPSVC_HOSTILE_ENABLED", value, &s);
    gfx_stop(g);
    ck_assert_str_eq(g->m[s].p.events, "SRT");
}
END_TEST

/* --- LOOP_SECONDS ------------------------------------------------------------ */

/* env_setup(var), var set to 0.05, and a group with the service "Fast" of
 * options {.loop_seconds = 30} and class interval 60 s: its index in *s. */
static struct gfx *fast_group(const char *var, int *s)
{
    static const lsvc_options opts = {.loop_seconds = 30};
    env_setup(var);
    set_var(var, "0.05");
    struct gfx *g = gfx_new();
    *s = gfx_add(g, "Fast", 60, &opts);
    return g;
}

START_TEST(test_loop_seconds_overrides_class_and_options_interval)
{
    int s;
    struct gfx *g = fast_group("LOOPSVC_FAST_LOOP_SECONDS", &s);
    struct probe *p = &g->m[s].p;
    gfx_start(g);
    check_interval(&g->m[s], 0.05);
    /* With the code's 30 s only the first run would come. */
    ck_assert_msg(probe_wait_runs(p, 5, 10.0), "%llu runs in 10 s",
                  (unsigned long long)probe_runs(p));
    /* Each run is due at least one interval after the one before, however
     * late the runs themselves start on a loaded machine. */
    double spread = (double)(p->sched_ns[4] - p->sched_ns[0]) / 1e9;
    ck_assert_msg(spread >= 0.2 - 1e-6, "five runs due within %.3f s", spread);
    gfx_stop(g);
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
}
END_TEST

START_TEST(test_loop_seconds_override_is_logged_at_info)
{
    const char *var = "LOOPSVC_FAST_LOOP_SECONDS";
    int s;
    struct gfx *g = run_with(var, "0.05", "Fast", &s);
    gfx_stop(g);
    /* The usual "Fast started: runs every 0.05 s." line says neither. */
    struct log_record r;
    bool named = log_find(0, LSVC_LOG_INFO, var, &r);
    for (size_t from = 0; !named && log_find(from, LSVC_LOG_INFO, "Fast", &r);
         from++)
        named = strstr(r.message, "environment") != NULL;
    ck_assert_msg(named, "no INFO record says that %s set the interval", var);
}
END_TEST

START_TEST(test_code_interval_returns_after_group_wait)
{
    int s;
    struct gfx *g = fast_group("LOOPSVC_FAST_LOOP_SECONDS", &s);
    check_interval(&g->m[s], 30);
    start_and_wait_first_run(g, s);
    check_interval(&g->m[s], 0.05);
    gfx_stop(g);
    check_interval(&g->m[s], 30);
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
    struct gfx *g = gfx_new();
    struct fx *f = &g->m[gfx_add(g, "Lingering", 5, NULL)];
    ck_assert_int_eq(lsvc_group_set_stop_timeout(g->g, 0.05), 0);
    probe_hold(&f->p);
    start_and_wait_first_run(g, 0);
    check_interval(f, 0.2);
    ck_assert_int_eq(lsvc_group_stop(g->g), 0);
    ck_assert_int_eq(lsvc_group_wait(g->g), ETIMEDOUT);
    ck_assert(lsvc_is_running(f->svc));
    probe_release(&f->p);
    ck_assert_int_eq(lsvc_join(f->svc, EVENT_LIMIT_S), 0);
    ck_assert_msg(lsvc_loop_seconds(f->svc) == 5.0,
                  "the ended service has an interval of %.9g s, its code "
                  "says 5 s", lsvc_loop_seconds(f->svc));

    /* On its own now: no group, and no variable that one would read. */
    ck_assert_int_eq(unsetenv(var), 0);
    ck_assert_int_eq(lsvc_group_destroy(g->g), 0);
    g->g = NULL;
    fx_start(f, 0);
    ck_assert(sem_wait_for(&f->p.entered, EVENT_LIMIT_S));
    ck_assert_msg(lsvc_loop_seconds(f->svc) == 5.0,
                  "started alone, it runs every %.9g s",
                  lsvc_loop_seconds(f->svc));
    /* Every 0.2 s, the second run would have come within 1 s. */
    ck_assert_msg(!sem_wait_for(&f->p.entered, 1.0),
                  "a second run came within 1 s of the first");
    fx_stop(f);
    ck_assert_str_eq(f->p.events, "SRTSRT");
    fx_free(f);
}
END_TEST

START_TEST(test_settings_are_read_again_at_every_group_start)
{
    env_setup(NULL);
    set_var("LOOPSVC_OFFNOW_ENABLED", "0");
    set_var("LOOPSVC_FASTNOW_LOOP_SECONDS", "0.05");
    struct gfx *g = gfx_new();
    int off = gfx_add(g, "OffNow", CODE_SECONDS, NULL);
    int fast = gfx_add(g, "FastNow", CODE_SECONDS, NULL);
    start_and_wait_first_run(g, fast);
    check_interval(&g->m[fast], 0.05);
    gfx_stop(g);
    ck_assert_str_eq(g->m[off].p.events, "");

    /* No thread of the library is left to read the environment. */
    ck_assert_int_eq(unsetenv("LOOPSVC_OFFNOW_ENABLED"), 0);
    ck_assert_int_eq(unsetenv("LOOPSVC_FASTNOW_LOOP_SECONDS"), 0);
    start_and_wait_first_run(g, off);
    check_interval(&g->m[fast], CODE_SECONDS);
    gfx_stop(g);
    ck_assert_str_eq(g->m[off].p.events, "SRT");
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
    int s;
    struct gfx *g = run_with(var, valid_forms[_i].text, "Exponent", &s);
    check_interval(&g->m[s], valid_forms[_i].seconds);
    check_kept_without_warning(g, s, var, valid_forms[_i].text);
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
    int s;
    struct gfx *g = run_refused(var, value, &s);
    ck_assert_msg(lsvc_loop_seconds(g->m[s].svc) == CODE_SECONDS,
                  "the value at index %d gave %.9g s", _i,
                  lsvc_loop_seconds(g->m[s].svc));
    gfx_stop(g);
    ck_assert_msg(!log_find(0, LSVC_LOG_INFO, var, NULL),
                  "a refused value was logged as taken");
    /* A log message is one line; a value with a newline must not split
     * it. */
    ck_assert_int_eq(atomic_load(&messages_with_newline), 0);
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
    struct gfx *g = gfx_new();
    gfx_add(g, "Ignored", CODE_SECONDS, NULL);
    gfx_add(g, "Garbled", CODE_SECONDS, NULL);
    ck_assert_int_eq(lsvc_group_set_environment(g->g, false), 0);
    gfx_start(g);
    gfx_wait_first_runs(g);
    for (int i = 0; i < 2; i++)
        check_interval(&g->m[i], CODE_SECONDS);
    gfx_stop(g);
    for (int i = 0; i < 2; i++)
        ck_assert_str_eq(g->m[i].p.events, "SRT");
    ck_assert_uint_eq(log_count(LSVC_LOG_WARNING, NULL), 0);
    ck_assert(!log_find(0, 0, "LOOPSVC_", NULL));
}
END_TEST

START_TEST(test_environment_can_be_turned_on_again)
{
    struct gfx *g = disabled_and_witness("Toggled", "LOOPSVC_TOGGLED_ENABLED");
    ck_assert_int_eq(lsvc_group_set_environment(g->g, false), 0);
    start_and_wait_first_run(g, 0);
    gfx_stop(g);
    ck_assert_int_eq(lsvc_group_set_environment(g->g, true), 0);
    start_and_wait_first_run(g, 1);
    gfx_stop(g);
    ck_assert_str_eq(g->m[0].p.events, "SRT");
}
END_TEST

/* --- Errors ------------------------------------------------------------------ */

START_TEST(test_set_environment_while_started_is_ebusy)
{
    struct gfx *g = disabled_and_witness("Steady", "LOOPSVC_STEADY_ENABLED");
    start_and_wait_first_run(g, 1);
    ck_assert_int_eq(lsvc_group_set_environment(g->g, false), EBUSY);
    ck_assert_int_eq(lsvc_group_set_environment(g->g, true), EBUSY);
    gfx_stop(g);
    ck_assert_str_eq(g->m[0].p.events, "");
    /* Idle again once the wait has returned. */
    ck_assert_int_eq(lsvc_group_set_environment(g->g, false), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("environment");
    add_tests(s, "names", (const TTest *[]){
        test_punctuation_in_name_becomes_underscore,
        test_lower_case_letters_are_upper_cased,
        test_each_non_ascii_byte_becomes_underscore,
        test_long_name_is_mapped_in_full,
        test_loop_seconds_variable_uses_the_mapped_name, NULL});

    TCase *enabled = add_tests(s, "enabled", (const TTest *[]){
        test_bad_loop_seconds_of_a_disabled_service_warns,
        test_disabled_service_does_not_hold_up_the_others,
        test_group_wait_returns_when_the_enabled_services_end,
        test_10_kb_enabled_value_warns_and_keeps_the_service, NULL});
    tcase_add_loop_test(enabled, test_false_values_disable_the_service, 0,
                        COUNT(false_values));
    tcase_add_loop_test(enabled, test_true_values_keep_the_service_without_warning,
                        0, COUNT(true_values));
    tcase_add_loop_test(enabled,
                        test_hostile_enabled_values_warn_and_keep_the_service,
                        0, COUNT(hostile_enabled));

    TCase *seconds = add_tests(s, "loop seconds", (const TTest *[]){
        test_loop_seconds_overrides_class_and_options_interval,
        test_loop_seconds_override_is_logged_at_info,
        test_code_interval_returns_after_group_wait,
        test_environment_interval_ends_with_a_service_left_running,
        test_settings_are_read_again_at_every_group_start, NULL});
    tcase_add_loop_test(seconds, test_valid_exponent_forms_are_accepted, 0,
                        COUNT(valid_forms));
    tcase_add_loop_test(seconds,
                        test_hostile_loop_seconds_warn_and_keep_the_code_interval,
                        0, COUNT(hostile_seconds));

    add_tests(s, "switch and errors", (const TTest *[]){
        test_environment_off_ignores_every_variable,
        test_environment_can_be_turned_on_again,
        test_set_environment_while_started_is_ebusy, NULL});
    return run_suite(s);
}
