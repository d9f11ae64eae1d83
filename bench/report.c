/*
 * Figures and their presentation: the one summary routine every impl goes
 * through, the tables, the JSON envelope of the stable schema, and the
 * SVG histogram. Tables show microseconds; JSON keeps nanoseconds.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least q of them at or below. */
static int64_t rank(const int64_t *sorted, size_t n, double q)
{
    size_t i = (size_t)ceil(q * (double)n);

    return sorted[i > 0 ? i - 1 : 0];
}

void summarize(int64_t *v, size_t n, struct summary *out)
{
    memset(out, 0, sizeof *out);
    if (n == 0)
        return;
    qsort(v, n, sizeof *v, cmp_i64);
    long double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    out->samples = n;
    out->min = v[0];
    out->mean = (int64_t)llroundl(sum / n);
    out->p50 = rank(v, n, 0.50);
    out->p90 = rank(v, n, 0.90);
    out->p99 = rank(v, n, 0.99);
    out->p999 = rank(v, n, 0.999);
    out->max = v[n - 1];
}

/* The median of v (sorted in place). */
int64_t median(int64_t *v, size_t n)
{
    struct summary s;

    summarize(v, n, &s);
    return s.p50;
}

void result_from_pool(struct result *r, const char *impl, int services,
                      long slack_ns, struct pool *p)
{
    memset(r, 0, sizeof *r);
    r->impl = impl;
    r->services = services;
    r->slack_ns = slack_ns;
    summarize(p->v, p->n, &r->lat);
}

/* --- tables -------------------------------------------------------------- */

static const char *sched_name(const struct bench_opts *o, char *buf, size_t len)
{
    if (o->prio > 0)
        snprintf(buf, len, "SCHED_FIFO %d", o->prio);
    else
        snprintf(buf, len, "SCHED_OTHER");
    return buf;
}

void print_title(const char *bench, const struct bench_opts *o,
                 int64_t interval_ns, const char *what)
{
    char sched[32], cpu[16];

    snprintf(cpu, sizeof cpu, o->cpu >= 0 ? "cpu %d" : "no pinning", o->cpu);
    printf("== %s: %s\n", bench, what);
    printf("   ");
    if (interval_ns > 0)
        printf("interval %.0f %s, ", interval_ns >= NS_PER_SEC
                                         ? (double)interval_ns / 1e9
                                         : (double)interval_ns / 1e3,
               interval_ns >= NS_PER_SEC ? "s" : "us");
    printf("%s, %s, load %d busy thread%s\n",
           sched_name(o, sched, sizeof sched), cpu, o->load,
           o->load == 1 ? "" : "s");
}

void print_slack_note(const struct bench_opts *o)
{
    if (o->slack_ns > 0)
        printf("   timer slack: %ld ns for every impl (--slack-ns)\n", o->slack_ns);
    else
        printf("   timer slack: loopsvc automatic, baselines the system's default "
               "(%ld ns here)%s\n", slack_current(),
               o->prio > 0 ? "; real-time threads get none from the kernel" : "");
}

static double us(int64_t ns)
{
    return (double)ns / 1e3;
}

void print_results(const struct result *r, size_t count, unsigned has)
{
    /* The N and start columns are scale's: its results span several N. */
    bool drift = has & HAS_DRIFT, cpu = has & HAS_CPU, scale = has & HAS_START;

    printf("   %-20s", "impl");
    if (scale)
        printf(" %5s", "N");
    printf(" %9s %8s", "slack ns", "samples");
    if (drift)
        printf(" %9s %9s %9s %6s %11s %11s %11s %9s %6s\n", "p50 us", "p99 us",
               "max us", "> I", "ppm sched", "ppm actual", "final us",
               "gap us", "close");
    else
        printf(" %8s %8s %8s %8s %8s %8s %9s%s%s\n", "min us", "mean", "p50", "p90",
               "p99", "p99.9", "max", cpu ? "  cpu/wake us" : "",
               scale ? "  start ms" : "");
    for (size_t i = 0; i < count; i++) {
        const struct result *x = &r[i];
        const struct summary *s = &x->lat;

        printf("   %-20s", x->impl);
        if (scale)
            printf(" %5d", x->services);
        printf(" %9ld %8zu", x->slack_ns, s->samples);
        if (drift) {
            printf(" %9.1f %9.1f %9.1f %6llu %11.2f %11.2f %11.1f %9.1f %6llu\n",
                   us(s->p50), us(s->p99), us(s->max),
                   (unsigned long long)x->late_over_interval,
                   x->period_error_ppm, x->period_error_measured_ppm,
                   us(x->final_lateness_ns), us(x->min_gap_ns),
                   (unsigned long long)x->close_starts);
            continue;
        }
        printf(" %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %9.1f", us(s->min), us(s->mean),
               us(s->p50), us(s->p90), us(s->p99), us(s->p999), us(s->max));
        if (cpu && isnan(x->cpu_ns_per_wake))
            printf("  %11s", "-");
        else if (cpu)
            printf("  %11.2f", x->cpu_ns_per_wake / 1e3);
        if (scale)
            printf("  %8.2f", (double)x->start_ns / 1e6);
        putchar('\n');
    }
}

/* The clock_nanosleep result measured alongside r: same instance count
 * and, in drift, the same loop count. */
static const struct result *baseline_for(const struct result *r, size_t count,
                                         const struct result *x)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(r[i].impl, "clock_nanosleep") == 0 &&
            r[i].services == x->services && r[i].loops == x->loops)
            return &r[i];
    return NULL;
}

static double ratio(int64_t ours, int64_t base)
{
    return base > 0 ? (double)ours / (double)base : 0.0;
}

/* scale's CPU per wake is NaN where no window of the block had every
 * instance running. */
static bool cpu_ratio_known(const struct result *x, const struct result *b)
{
    return (x->has & HAS_CPU) && x->cpu_ns_per_wake > 0 && b->cpu_ns_per_wake > 0;
}

/* Ours, and the raw loop's other impls in scale: the second, whose ratio
 * over the first is the noise floor of every ratio of that run, and the
 * one that spends CPU after each wake. */
static bool is_ours(const struct result *x)
{
    return strncmp(x->impl, "loopsvc-", 8) == 0 ||
           strcmp(x->impl, IMPL_NANOSLEEP_B.name) == 0 ||
           strcmp(x->impl, IMPL_NANOSLEEP_WORK.name) == 0;
}

void print_ratios(const struct result *r, size_t count)
{
    bool any = false;

    for (size_t i = 0; i < count; i++) {
        const struct result *b = baseline_for(r, count, &r[i]);

        if (!is_ours(&r[i]) || b == NULL)
            continue;
        if (!any)
            printf("   ours / clock_nanosleep, same run:\n");
        any = true;
        printf("   %-20s", r[i].impl);
        if (r[i].has & HAS_CPU)
            printf(" N=%-5d", r[i].services);
        printf(" p50 x%.2f  p99 x%.2f", ratio(r[i].lat.p50, b->lat.p50),
               ratio(r[i].lat.p99, b->lat.p99));
        if (cpu_ratio_known(&r[i], b))
            printf("  cpu/wake x%.2f", r[i].cpu_ns_per_wake / b->cpu_ns_per_wake);
        else if (r[i].has & HAS_CPU)
            printf("  cpu/wake -");
        putchar('\n');
    }
}

/* Each result after the first over the first, measured in the same run:
 * ratio and difference at p50 and p99, and of CPU per wake where measured. */
void print_costs(const struct result *r, size_t count, const char *what)
{
    if (count > 1)
        printf("   %s\n", what);
    for (size_t i = 1; i < count; i++) {
        printf("   %-20s p50 x%.2f (%+.1f us)  p99 x%.2f (%+.1f us)", r[i].impl,
               ratio(r[i].lat.p50, r[0].lat.p50), us(r[i].lat.p50 - r[0].lat.p50),
               ratio(r[i].lat.p99, r[0].lat.p99), us(r[i].lat.p99 - r[0].lat.p99));
        if ((r[i].has & HAS_CPU) && r[0].cpu_ns_per_wake > 0)
            printf("  cpu/wake x%.3f (%+.0f ns)",
                   r[i].cpu_ns_per_wake / r[0].cpu_ns_per_wake,
                   r[i].cpu_ns_per_wake - r[0].cpu_ns_per_wake);
        putchar('\n');
    }
}

/* --- JSON ---------------------------------------------------------------- */

void json_begin(const char *bench, const struct bench_opts *o,
                int64_t interval_ns, int services)
{
    printf("{\"bench\": \"%s\", \"interval_ns\": %lld, \"services\": %d, "
           "\"prio\": %d, \"load\": %d, \"cpu\": %d, \"quick\": %s",
           bench, (long long)interval_ns, services, o->prio, o->load, o->cpu,
           o->quick ? "true" : "false");
}

void json_results(const struct result *r, size_t count)
{
    printf(", \"results\": [");
    for (size_t i = 0; i < count; i++) {
        const struct result *x = &r[i];
        const struct summary *s = &x->lat;

        printf("%s{\"impl\": \"%s\", \"services\": %d, \"slack_ns\": %ld, "
               "\"samples\": %zu, \"min_ns\": %lld, \"mean_ns\": %lld, "
               "\"p50_ns\": %lld, \"p90_ns\": %lld, \"p99_ns\": %lld, "
               "\"p999_ns\": %lld, \"max_ns\": %lld",
               i ? ", " : "", x->impl, x->services, x->slack_ns, s->samples,
               (long long)s->min, (long long)s->mean, (long long)s->p50,
               (long long)s->p90, (long long)s->p99, (long long)s->p999,
               (long long)s->max);
        if ((x->has & HAS_CPU) && isnan(x->cpu_ns_per_wake))
            printf(", \"cpu_ns_per_wake\": null");
        else if (x->has & HAS_CPU)
            printf(", \"cpu_ns_per_wake\": %.1f", x->cpu_ns_per_wake);
        if (x->has & HAS_START)
            printf(", \"start_ns\": %lld", (long long)x->start_ns);
        if (x->has & HAS_DRIFT)
            printf(", \"loops\": %llu, \"period_error_ppm\": %.3f, "
                   "\"period_error_measured_ppm\": %.3f, \"final_lateness_ns\": %lld, "
                   "\"wakes_late_over_interval\": %llu, \"min_gap_ns\": %lld, "
                   "\"close_starts\": %llu",
                   (unsigned long long)x->loops, x->period_error_ppm,
                   x->period_error_measured_ppm, (long long)x->final_lateness_ns,
                   (unsigned long long)x->late_over_interval,
                   (long long)x->min_gap_ns, (unsigned long long)x->close_starts);
        putchar('}');
    }
    putchar(']');
}

/* {"loopsvc-condvar": {"p50": r, "p99": r}, ...}; with `nested` (scale),
 * one level more, keyed by the instance count, also when there is only
 * one (--services N). */
void json_ratios(const struct result *r, size_t count, bool nested)
{
    bool first_impl = true;

    printf(", \"ratios\": {");
    for (size_t i = 0; i < count; i++) {
        const struct result *x = &r[i];
        bool seen = false;

        if (!is_ours(x))
            continue;
        for (size_t j = 0; j < i; j++)
            seen |= strcmp(r[j].impl, x->impl) == 0;
        if (seen)
            continue;
        printf("%s\"%s\": {", first_impl ? "" : ", ", x->impl);
        first_impl = false;
        bool first = true;
        for (size_t j = i; j < count; j++) {
            const struct result *b = baseline_for(r, count, &r[j]);

            if (strcmp(r[j].impl, x->impl) != 0 || b == NULL)
                continue;
            if (nested)
                printf("%s\"%d\": {", first ? "" : ", ", r[j].services);
            printf("\"p50\": %.4f, \"p99\": %.4f", ratio(r[j].lat.p50, b->lat.p50),
                   ratio(r[j].lat.p99, b->lat.p99));
            if (cpu_ratio_known(&r[j], b))
                printf(", \"cpu\": %.4f", r[j].cpu_ns_per_wake / b->cpu_ns_per_wake);
            if (nested)
                putchar('}');
            first = false;
            if (!nested)
                break;
        }
        putchar('}');
    }
    putchar('}');
}

/* print_costs' ratios: {"impl": {"p50": r, "p99": r[, "cpu": r]}, ...}. */
void json_costs(const struct result *r, size_t count)
{
    printf(", \"ratios\": {");
    for (size_t i = 1; i < count; i++) {
        printf("%s\"%s\": {\"p50\": %.4f, \"p99\": %.4f", i > 1 ? ", " : "",
               r[i].impl, ratio(r[i].lat.p50, r[0].lat.p50),
               ratio(r[i].lat.p99, r[0].lat.p99));
        if ((r[i].has & HAS_CPU) && r[0].cpu_ns_per_wake > 0)
            printf(", \"cpu\": %.4f", r[i].cpu_ns_per_wake / r[0].cpu_ns_per_wake);
        putchar('}');
    }
    putchar('}');
}

void json_end(void)
{
    printf("}\n");
    fflush(stdout);
}

/* --- SVG ----------------------------------------------------------------- */

#define SVG_W 1010
#define SVG_H 520
#define PLOT_L 80
#define PLOT_R 700
#define PLOT_T 50
#define PLOT_B 450
#define BINS_PER_DECADE 20

static const char *const colours[] = {
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
    "#17becf",
};

const char *svg_colour(size_t i)
{
    return colours[i % (sizeof colours / sizeof colours[0])];
}

double svg_fx(const struct svg_frame *fr, double log_x)
{
    return fr->l + (log_x - fr->xlo) / (fr->xhi - fr->xlo) * (fr->r - fr->l);
}

double svg_fy(const struct svg_frame *fr, double log_y)
{
    return fr->b - (log_y - fr->ylo) / (fr->yhi - fr->ylo) * (fr->b - fr->t);
}

/* The frame, a grid line and a label at each decade on both axes, and
 * the axes' names (either may be NULL). */
void svg_axes(FILE *f, const struct svg_frame *fr, const char *xlabel, const char *ylabel)
{
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
               "stroke=\"#444\"/>\n", fr->l, fr->t, fr->r - fr->l, fr->b - fr->t);
    for (int d = (int)ceil(fr->xlo); d <= (int)floor(fr->xhi); d++) {
        double x = svg_fx(fr, d);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>\n"
                   "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n",
                x, fr->t, x, fr->b, x, fr->b + 18, pow(10, d));
    }
    for (int d = (int)floor(fr->ylo); fr->minor && d < (int)ceil(fr->yhi); d++)
        for (int m = 2; m < 10; m++) {
            double v = d + log10(m);

            if (v > fr->ylo && v < fr->yhi)
                fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" "
                           "stroke=\"#eee\"/>\n", fr->l, svg_fy(fr, v), fr->r,
                        svg_fy(fr, v));
        }
    for (int d = (int)ceil(fr->ylo); d <= (int)floor(fr->yhi); d++) {
        double y = svg_fy(fr, d);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                   "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                fr->l, y, fr->r, y, fr->l - 6, y + 4, pow(10, d));
    }
    if (xlabel != NULL)
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n",
                (fr->l + fr->r) / 2, fr->b + 42, xlabel);
    if (ylabel != NULL)
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" "
                   "transform=\"rotate(-90 %.0f %.0f)\">%s</text>\n",
                fr->l - 60, (fr->t + fr->b) / 2, fr->l - 60, (fr->t + fr->b) / 2, ylabel);
}

/* A self-contained SVG: no scripts, no fonts of its own, and a white
 * ground, so that it reads the same in a light and a dark page. */
FILE *svg_open(const char *path, int width, int height, const char *title, double title_x)
{
    FILE *f = fopen(path, "w");

    if (f == NULL) {
        fprintf(stderr, "loopsvc-bench: cannot write %s: %s\n", path, strerror(errno));
        return NULL;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"%.0f\" y=\"28\" text-anchor=\"middle\" font-size=\"15\">%s</text>\n",
            width, height, width, height, title_x, title);
    return f;
}

int svg_close(FILE *f, const char *path)
{
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "loopsvc-bench: cannot write %s: %s\n", path, strerror(errno));
        return EIO;
    }
    return 0;
}

/* The y axis starts at half a wake, so that a bin of one stands clear of
 * the empty ones on the axis. */
#define Y_FLOOR (-0.30103)

/* Bin b spans [lo + b/BPD, lo + (b+1)/BPD) decades of microseconds; a
 * lateness of 0 or less counts in the first bin. */
static size_t svg_bin(const struct pool *p, double lo, size_t *counts, int nbins)
{
    size_t most = 0;

    memset(counts, 0, (size_t)nbins * sizeof *counts);
    for (size_t i = 0; i < p->n; i++) {
        double v = p->v[i] > 0 ? log10((double)p->v[i] / 1e3) : lo;
        int b = (int)floor((v - lo) * BINS_PER_DECADE);

        b = b < 0 ? 0 : b >= nbins ? nbins - 1 : b;
        if (++counts[b] > most)
            most = counts[b];
    }
    return most;
}

/* One step line; an empty bin sits on the x axis. */
static void svg_series(FILE *f, const struct svg_frame *fr, const size_t *counts,
                       int nbins, const char *colour)
{
    fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" d=\"M%.1f %.0f",
            colour, svg_fx(fr, fr->xlo), fr->b);
    for (int b = 0; b < nbins; b++) {
        double y = counts[b] ? svg_fy(fr, log10((double)counts[b])) : fr->b;
        fprintf(f, " L%.1f %.1f L%.1f %.1f",
                svg_fx(fr, fr->xlo + (double)b / BINS_PER_DECADE), y,
                svg_fx(fr, fr->xlo + (double)(b + 1) / BINS_PER_DECADE), y);
    }
    fprintf(f, " L%.1f %.0f\"/>\n", svg_fx(fr, fr->xhi), fr->b);
}

int svg_write(const char *path, const char *title, const struct result *r,
              struct pool *const *pools, size_t count)
{
    int64_t min_pos = INT64_MAX, max = 1;
    size_t most = 1;

    for (size_t i = 0; i < count; i++)
        for (size_t j = 0; j < pools[i]->n; j++) {
            int64_t v = pools[i]->v[j];
            if (v > 0 && v < min_pos)
                min_pos = v;
            if (v > max)
                max = v;
        }
    if (min_pos == INT64_MAX)
        min_pos = 1;
    double lo = floor(log10((double)min_pos / 1e3));
    double hi = ceil(log10((double)max / 1e3));
    if (hi <= lo)
        hi = lo + 1;
    int nbins = (int)((hi - lo) * BINS_PER_DECADE);
    size_t *counts = calloc((size_t)nbins, sizeof *counts);
    if (counts == NULL) {
        fprintf(stderr, "loopsvc-bench: cannot write %s: %s\n", path, strerror(ENOMEM));
        return ENOMEM;
    }
    /* The y axis must reach the fullest bin of any series. */
    for (size_t i = 0; i < count; i++) {
        size_t m = svg_bin(pools[i], lo, counts, nbins);
        if (m > most)
            most = m;
    }
    double top = ceil(log10((double)most));
    if (top < 1)
        top = 1;
    struct svg_frame fr = { PLOT_L, PLOT_R, PLOT_T, PLOT_B, lo, hi, Y_FLOOR, top, false };
    FILE *f = svg_open(path, SVG_W, SVG_H, title, (PLOT_L + PLOT_R) / 2);
    if (f == NULL) {
        free(counts);
        return EIO;
    }
    svg_axes(f, &fr, "wake-up lateness (microseconds, log scale)",
             "wakes per bin (log scale)");
    for (size_t i = 0; i < count; i++) {
        const char *colour = svg_colour(i);
        int y = PLOT_T + 10 + 22 * (int)i;

        svg_bin(pools[i], lo, counts, nbins);
        svg_series(f, &fr, counts, nbins, colour);
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                   "stroke-width=\"3\"/>\n<text x=\"%d\" y=\"%d\">%s: p50 %.1f, "
                   "p99 %.1f us</text>\n",
                PLOT_R + 15, y, PLOT_R + 40, y, colour, PLOT_R + 46, y + 4, r[i].impl,
                us(r[i].lat.p50), us(r[i].lat.p99));
    }
    free(counts);
    return svg_close(f, path);
}
