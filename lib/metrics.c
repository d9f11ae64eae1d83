/*
 * Metrics: a group's counters, gauges and histograms in Prometheus's text
 * exposition format (version 0.0.4).
 *
 * The members are read first, each at one instant, then written family by
 * family: the format wants every sample of a family together, after its
 * HELP and TYPE lines.
 */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include "internal.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One member, read at one instant. */
struct sample {
    const lsvc *svc;
    lsvc_stats stats;
    bool healthy;
    double interval;
    lsvc_histogram hist[2];
};

enum family_type { COUNTER, GAUGE };

/* A family whose value is one number per member. */
struct family {
    const char *name;
    enum family_type type;
    const char *help;
    double (*value)(const struct sample *s, double wall_offset);
};

#define COUNT_OF(field)                                                      \
    static double field(const struct sample *s, double off)                  \
    {                                                                        \
        (void)off;                                                           \
        return (double)s->stats.field;                                       \
    }
COUNT_OF(loops)
COUNT_OF(errors)
COUNT_OF(overruns)
COUNT_OF(missed)
COUNT_OF(skipped_not_leader)
COUNT_OF(wakes)
COUNT_OF(running)
COUNT_OF(paused)
COUNT_OF(lease_held)
COUNT_OF(consecutive_failures)

static double healthy(const struct sample *s, double off)
{
    (void)off;
    return s->healthy;
}

static double interval(const struct sample *s, double off)
{
    (void)off;
    return s->interval;
}

/* CLOCK_MONOTONIC to Unix time, by the offset between the two clocks. */
static double last_success(const struct sample *s, double off)
{
    if (s->stats.last_success_ns == 0)
        return 0;
    return (double)s->stats.last_success_ns / 1e9 + off;
}

static double cluster_success(const struct sample *s, double off)
{
    if (s->stats.cluster_success_ns == 0)
        return 0;
    return (double)s->stats.cluster_success_ns / 1e9 + off;
}

static const struct family families[] = {
    {"loopsvc_runs_total", COUNTER, "Runs completed.", loops},
    {"loopsvc_errors_total", COUNTER,
     "Runs (and on_start calls) that returned nonzero.", errors},
    {"loopsvc_overruns_total", COUNTER,
     "Runs that took longer than the interval.", overruns},
    {"loopsvc_missed_total", COUNTER,
     "Due points skipped because a run ended after them.", missed},
    {"loopsvc_skipped_not_leader_total", COUNTER,
     "Due runs skipped because this replica did not hold the lease.",
     skipped_not_leader},
    {"loopsvc_wakes_total", COUNTER, "Runs that a wake caused.", wakes},
    {"loopsvc_running", GAUGE, "1 while the service thread runs.", running},
    {"loopsvc_paused", GAUGE, "1 while the service is paused.", paused},
    {"loopsvc_healthy", GAUGE,
     "1 while the service makes progress (not stuck, failing, stale or "
     "orphaned).",
     healthy},
    {"loopsvc_lease_held", GAUGE,
     "1 while this replica holds the service's lease.", lease_held},
    {"loopsvc_last_success_timestamp_seconds", GAUGE,
     "Unix time of the end of the last successful run; 0 for none.",
     last_success},
    {"loopsvc_cluster_last_success_timestamp_seconds", GAUGE,
     "Unix time of the last successful run on any replica, as the lease's "
     "store last told; 0 when unknown.", cluster_success},
    {"loopsvc_consecutive_failures", GAUGE,
     "Runs that failed in a row, up to the last run.", consecutive_failures},
    {"loopsvc_interval_seconds", GAUGE,
     "Interval between scheduled runs; +Inf when the service runs only "
     "when woken.", interval},
};

static const struct {
    const char *name;
    const char *help;
} histograms[] = {
    [LSVC_HISTOGRAM_DURATION] = {"loopsvc_run_duration_seconds",
                                 "How long runs took."},
    [LSVC_HISTOGRAM_LATENESS] = {"loopsvc_lateness_seconds",
                                 "How late runs began after their "
                                 "scheduled start."},
};

/* A label value, escaped as the format asks. */
static void put_label(FILE *f, const char *value)
{
    fputs("{service=\"", f);
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '\\' || *p == '"')
            fputc('\\', f);
        if (*p == '\n')
            fputs("\\n", f);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* A sample value: Prometheus writes infinities as +Inf and -Inf. */
static void put_value(FILE *f, double v)
{
    if (isinf(v))
        fputs(v > 0 ? " +Inf\n" : " -Inf\n", f);
    else
        fprintf(f, " %.17g\n", v);
}

static void put_header(FILE *f, const char *name, const char *type,
                       const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_histogram(FILE *f, const struct sample *s, size_t n,
                          lsvc_histogram_kind kind)
{
    const char *name = histograms[kind].name;

    put_header(f, name, "histogram", histograms[kind].help);
    for (size_t i = 0; i < n; i++) {
        const lsvc_histogram *h = &s[i].hist[kind];
        uint64_t cumulative = 0;

        for (unsigned b = 0; b < LSVC_HISTOGRAM_BUCKETS; b++) {
            double le = lsvc_histogram_bound(b);

            cumulative += h->buckets[b];
            fprintf(f, "%s_bucket", name);
            put_label(f, lsvc_name(s[i].svc));
            if (isinf(le))
                fputs(",le=\"+Inf\"}", f);
            else
                fprintf(f, ",le=\"%g\"}", le);
            fprintf(f, " %llu\n", (unsigned long long)cumulative);
        }
        fprintf(f, "%s_sum", name);
        put_label(f, lsvc_name(s[i].svc));
        fputc('}', f);
        put_value(f, h->sum);
        fprintf(f, "%s_count", name);
        put_label(f, lsvc_name(s[i].svc));
        fprintf(f, "} %llu\n", (unsigned long long)h->count);
    }
}

static void read_sample(struct sample *s, const lsvc *svc)
{
    s->svc = svc;
    lsvc_get_stats(svc, &s->stats);
    s->healthy = lsvc_healthy(svc, NULL);
    s->interval = lsvc_loop_seconds(svc);
    lsvc_get_histogram(svc, LSVC_HISTOGRAM_DURATION,
                       &s->hist[LSVC_HISTOGRAM_DURATION]);
    lsvc_get_histogram(svc, LSVC_HISTOGRAM_LATENESS,
                       &s->hist[LSVC_HISTOGRAM_LATENESS]);
}

/* Unix time minus CLOCK_MONOTONIC, in seconds. */
static double wall_offset(void)
{
    struct timespec wall;

    clock_gettime(CLOCK_REALTIME, &wall);
    return (double)wall.tv_sec + (double)wall.tv_nsec / 1e9 -
           (double)lsvc__now_ns() / 1e9;
}

static void write_text(FILE *f, const struct sample *s, size_t n)
{
    double off = wall_offset();

    for (size_t k = 0; k < sizeof families / sizeof families[0]; k++) {
        const struct family *fam = &families[k];

        put_header(f, fam->name, fam->type == COUNTER ? "counter" : "gauge",
                   fam->help);
        for (size_t i = 0; i < n; i++) {
            fputs(fam->name, f);
            put_label(f, lsvc_name(s[i].svc));
            fputc('}', f);
            put_value(f, fam->value(&s[i], off));
        }
    }
    put_histogram(f, s, n, LSVC_HISTOGRAM_DURATION);
    put_histogram(f, s, n, LSVC_HISTOGRAM_LATENESS);
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void make_c_locale(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

locale_t lsvc__use_c_locale(void)
{
    pthread_once(&c_locale_once, make_c_locale);
    return c_locale != (locale_t)0 ? uselocale(c_locale) : (locale_t)0;
}

void lsvc__restore_locale(locale_t previous)
{
    if (previous != (locale_t)0)
        uselocale(previous);
}

int lsvc__metrics_text(lsvc_group *g, char **text, size_t *len)
{
    struct lsvc_member *members;
    size_t n;
    int rc = lsvc__group_members(g, &members, &n);

    if (rc != 0)
        return rc;
    struct sample *s = calloc(n ? n : 1, sizeof *s);
    FILE *f = s != NULL ? open_memstream(text, len) : NULL;
    if (f == NULL) {
        free(s);
        free(members);
        return ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        read_sample(&s[i], members[i].svc);
    locale_t previous = lsvc__use_c_locale();
    write_text(f, s, n);
    lsvc__restore_locale(previous);
    rc = ferror(f) ? ENOMEM : 0;
    if (fclose(f) != 0)
        rc = ENOMEM;
    free(s);
    free(members);
    if (rc != 0) {
        free(*text);
        *text = NULL;
    }
    return rc;
}

int lsvc_group_metrics(lsvc_group *g, char *buf, size_t size, size_t *needed)
{
    char *text;
    size_t len;
    int rc;

    if (g == NULL || (buf == NULL && size > 0))
        return EINVAL;
    if ((rc = lsvc__metrics_text(g, &text, &len)) != 0)
        return rc;
    if (needed != NULL)
        *needed = len + 1;
    if (size > 0) {
        size_t n = len < size ? len : size - 1;
        memcpy(buf, text, n);
        buf[n] = '\0';
    }
    free(text);
    return len < size ? 0 : ENOSPC;
}
