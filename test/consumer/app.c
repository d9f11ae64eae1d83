/*
 * The program every build snippet of the README builds: a service that
 * must run exactly three times. It exits 0 only if it did, and prints the
 * version of the header it was compiled with.
 */
#include <loopsvc.h>
#include <stdio.h>
#include <string.h>

static int tick(lsvc *svc, void *arg)
{
    unsigned *runs = arg;

    (void)svc;
    *runs += 1;
    return 0;
}

static const lsvc_class ticker = {
    .name = "Ticker", .loop_seconds = 0.01, .run_once = tick,
};

static int fail(const char *what, int rc)
{
    fprintf(stderr, "app: %s: %s\n", what, strerror(rc));
    return 1;
}

int main(void)
{
    unsigned runs = 0;
    lsvc_stats stats;
    lsvc *svc;
    int rc;

    if ((rc = lsvc_create(&svc, &ticker, &runs, NULL)) != 0)
        return fail("lsvc_create", rc);
    if ((rc = lsvc_start(svc, 3)) != 0)
        return fail("lsvc_start", rc);
    if ((rc = lsvc_join(svc, 30)) != 0)
        return fail("lsvc_join", rc);
    if ((rc = lsvc_get_stats(svc, &stats)) != 0)
        return fail("lsvc_get_stats", rc);
    if (runs != 3 || stats.loops != 3 || stats.errors != 0 || stats.running) {
        fprintf(stderr, "app: ran %u times, stats say %llu loops, %llu errors, %s\n",
                runs, (unsigned long long)stats.loops,
                (unsigned long long)stats.errors,
                stats.running ? "running" : "ended");
        return 1;
    }
    if ((rc = lsvc_destroy(svc)) != 0)
        return fail("lsvc_destroy", rc);
    printf("loopsvc %d.%d.%d: %s ran %u times\n", LSVC_VERSION_MAJOR,
           LSVC_VERSION_MINOR, LSVC_VERSION_PATCH, ticker.name, runs);
    return 0;
}
