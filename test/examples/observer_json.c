/*
 * A run observer as a tracer, in the shape of a server that ships one
 * span per maintenance run to its log pipeline: lsvc_set_run_observer's
 * function writes one JSON line per ended run to stdout (service, run
 * number, due and start times, lateness, duration, result, lease), and
 * only records: it does the writing on the service thread, as the run
 * ends. The service here is a report compactor due every 20 ms whose
 * every third run fails, so that the lines show a result other than 0.
 * stdout holds only the JSON lines (JSON Lines, for jq and the like);
 * the figures go to stderr.
 *
 * Outcome, checked: exactly one line per ended run: as many lines as the
 * service counts runs, and as run_once was called; every begin had its
 * end; the lines are numbered 1, 2, 3... in order; and as many say a
 * nonzero result as the service counts errors.
 */
#include "loopsvc.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RUNS 6
#define INTERVAL 0.02

/* What the tracer saw. Only the service thread writes it until lsvc_join
 * has returned, which orders the reads in main after it. */
struct tracer {
    FILE *out;
    uint64_t begins, ends, lines, failed_lines;
    uint64_t next_run;  /* the run number the next line must carry */
    bool in_order;
};

static int64_t ns_of(struct timespec ts)
{
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Writes s as a JSON string. */
static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void trace_run(const lsvc_run_event *e, void *ctx)
{
    struct tracer *t = ctx;
    if (!e->ended) {
        t->begins++;
        return;
    }
    t->ends++;
    t->in_order = t->in_order && e->run == t->next_run;
    t->next_run = e->run + 1;
    fputs("{\"service\":", t->out);
    json_string(t->out, lsvc_name(e->svc));
    int n = fprintf(t->out,
                    ",\"run\":%" PRIu64 ",\"due_ns\":%" PRId64
                    ",\"start_ns\":%" PRId64 ",\"lateness_ns\":%" PRId64
                    ",\"duration_ns\":%" PRId64 ",\"result\":%d"
                    ",\"lease_held\":%s}\n",
                    e->run, ns_of(e->due), ns_of(e->start), e->lateness_ns,
                    e->duration_ns, e->result,
                    e->lease_held ? "true" : "false");
    if (n > 0) {
        t->lines++;
        t->failed_lines += e->result != 0;
    }
}

/* One pass of the compactor: 2 ms of merging; every third pass finds a
 * segment it cannot merge and fails. */
static int compact(lsvc *svc, void *arg)
{
    uint64_t *calls = arg;
    (void)svc;
    (*calls)++;
    struct timespec work = {0, 2000000};
    while (nanosleep(&work, &work) != 0) {
    }
    return *calls % 3 == 0 ? 1 : 0;
}

int main(void)
{
    static const lsvc_class cls = {
        .name = "report-compactor", .loop_seconds = INTERVAL,
        .run_once = compact,
    };
    struct tracer t = {.out = stdout, .next_run = 1, .in_order = true};
    uint64_t calls = 0;
    lsvc *svc;

    /* The failed runs are meant; their ERROR lines would only repeat what
     * the trace says. */
    lsvc_set_log_level(LSVC_LOG_ERROR + 1);
    lsvc_set_run_observer(trace_run, &t);
    if (lsvc_create(&svc, &cls, &calls, NULL) != 0 || lsvc_start(svc, RUNS) != 0)
        return EXIT_FAILURE;
    int join_rc = lsvc_join(svc, 10);
    lsvc_set_run_observer(NULL, NULL);
    fflush(t.out);

    lsvc_stats st;
    lsvc_get_stats(svc, &st);
    fprintf(stderr, "observer_json: %" PRIu64 " lines for %" PRIu64
            " runs (%" PRIu64 " calls of run_once, %" PRIu64 " begins, %"
            PRIu64 " ends); %" PRIu64 " failed, %" PRIu64 " errors counted; "
            "numbered in order: %s\n",
            t.lines, st.loops, calls, t.begins, t.ends, t.failed_lines,
            st.errors, t.in_order ? "yes" : "no");
    bool ok = join_rc == 0 && st.loops == RUNS && t.lines == st.loops &&
              calls == st.loops && t.begins == t.ends &&
              t.ends == t.lines && t.in_order &&
              t.failed_lines == st.errors && st.errors == RUNS / 3;
    lsvc_destroy(svc);
    fputs(ok ? "observer_json: outcome held\n"
             : "observer_json: OUTCOME FAILED\n", stderr);
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
