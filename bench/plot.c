/*
 * Log-log line plots in panels, two to a row: one figure against the same
 * x in each, every series a line through its points, with markers (a
 * circle, then a square) and dashes that tell the series apart without
 * their colours. scale draws its sweep with it. The axes, the white
 * ground and the file are report.c's.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define PANEL_W 370
#define PANEL_H 240
#define PANEL_LEFT 90
#define PANEL_TOP 110
#define PANEL_DX 500
#define PANEL_DY 340
#define CANVAS_W 1000

static bool plotted(double v)
{
    return isfinite(v) && v > 0;
}

/* The decades [*lo, *hi] around every plotted value of v[0 .. n - 1] of
 * each of the `count` arrays; one decade each side of a lone value. */
static void decades(const double *const *v, size_t count, size_t n, double *lo, double *hi)
{
    double min = INFINITY, max = -INFINITY;

    for (size_t s = 0; s < count; s++)
        for (size_t i = 0; v[s] != NULL && i < n; i++)
            if (plotted(v[s][i])) {
                min = fmin(min, v[s][i]);
                max = fmax(max, v[s][i]);
            }
    if (!isfinite(min)) {
        *lo = 0;
        *hi = 1;
        return;
    }
    *lo = floor(log10(min));
    *hi = ceil(log10(max));
    if (*hi <= *lo) {
        *lo -= 0.5;
        *hi += 0.5;
    }
}

static void marker(FILE *f, size_t s, double x, double y, const char *colour)
{
    if (s % 2 == 0)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\">", x, y, colour);
    else
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"%s\">",
                x - 3.5, y - 3.5, colour);
}

static const char *dashes(size_t s)
{
    return s % 2 == 0 ? "" : " stroke-dasharray=\"6 4\"";
}

/* One series: a path through its points, broken where one is missing,
 * and a marker at each, with its value as a tooltip. */
static void series_draw(FILE *f, const struct svg_frame *fr, const double *x,
                        const double *y, size_t n, size_t s, const char *unit)
{
    const char *colour = svg_colour(s);
    bool pen = false;

    fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s d=\"", colour,
            dashes(s));
    for (size_t i = 0; i < n; i++) {
        if (!plotted(y[i])) {
            pen = false;
            continue;
        }
        fprintf(f, "%s%.1f %.1f ", pen ? "L" : "M", svg_fx(fr, log10(x[i])),
                svg_fy(fr, log10(y[i])));
        pen = true;
    }
    fprintf(f, "\"/>\n");
    for (size_t i = 0; i < n; i++)
        if (plotted(y[i])) {
            marker(f, s, svg_fx(fr, log10(x[i])), svg_fy(fr, log10(y[i])), colour);
            fprintf(f, "<title>%g: %.3g %s</title></%s>\n", x[i], y[i], unit,
                    s % 2 == 0 ? "circle" : "rect");
        }
}

/* In a row, each entry as wide as its name (about 7 units a letter). */
static void legend(FILE *f, const char *const *series, size_t nseries)
{
    double x = PANEL_LEFT, y = 62;

    for (size_t s = 0; s < nseries; x += 80 + 7.0 * (double)strlen(series[s]), s++) {

        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                   "stroke-width=\"1.8\"%s/>\n", x, y, x + 36, y, svg_colour(s), dashes(s));
        marker(f, s, x + 18, y, svg_colour(s));
        fprintf(f, "</%s>\n<text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
                s % 2 == 0 ? "circle" : "rect", x + 44, y + 4, series[s]);
    }
}

int plot_panels(const char *path, const char *title, const char *xlabel,
                const double *x, size_t nx, const struct plot_panel *panels,
                size_t npanels, const char *const *series)
{
    size_t nseries = 0;
    int rows = (int)(npanels + 1) / 2;
    int height = PANEL_TOP + (rows - 1) * PANEL_DY + PANEL_H + 60;
    const double *xs[1] = { x };
    struct svg_frame fr;

    while (nseries < PLOT_SERIES && series[nseries] != NULL)
        nseries++;
    FILE *f = svg_open(path, CANVAS_W, height, title, CANVAS_W / 2.0);
    if (f == NULL)
        return EIO;
    legend(f, series, nseries);
    decades(xs, 1, nx, &fr.xlo, &fr.xhi);
    for (size_t p = 0; p < npanels; p++) {
        fr.l = PANEL_LEFT + PANEL_DX * (double)(p % 2);
        fr.r = fr.l + PANEL_W;
        fr.t = PANEL_TOP + PANEL_DY * (double)(p / 2);
        fr.b = fr.t + PANEL_H;
        decades(panels[p].y, nseries, nx, &fr.ylo, &fr.yhi);
        fr.minor = true;
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" font-size=\"13\" "
                   "font-weight=\"bold\">%s</text>\n", (fr.l + fr.r) / 2, fr.t - 12,
                panels[p].title);
        char ylabel[64];
        snprintf(ylabel, sizeof ylabel, "%s (log scale)", panels[p].unit);
        svg_axes(f, &fr, xlabel, ylabel);
        for (size_t s = 0; s < nseries; s++)
            if (panels[p].y[s] != NULL)
                series_draw(f, &fr, x, panels[p].y[s], nx, s, panels[p].unit);
    }
    return svg_close(f, path);
}
