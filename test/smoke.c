/*
 * A test with no dependency but the library and libc, so that it also
 * runs against builds where Check is not available (musl, other libcs):
 * counted runs, a blocking stop, and a group stopped from inside a run.
 */
#include "loopsvc.h"

#include <errno.h>
#include <stdio.h>

static int count(lsvc *svc, void *arg)
{
    (void)svc;
    ++*(unsigned *)arg;
    return 0;
}

static int stop_group(lsvc *svc, void *arg)
{
    (void)svc;
    return lsvc_group_stop(arg);
}

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "smoke: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            return 1;                                                      \
        }                                                                  \
    } while (0)

int main(void)
{
    static const lsvc_class counter = { .name = "Counter", .loop_seconds = 0.001,
                                        .run_once = count };
    static const lsvc_class stopper = { .name = "Stopper", .loop_seconds = 0.001,
                                        .run_once = stop_group };
    static const lsvc_class sleeper = { .name = "Sleeper", .loop_seconds = 3600,
                                        .run_once = count };
    unsigned runs = 0, sleeps = 0;
    lsvc *a, *b, *c;
    lsvc_group *g;
    lsvc_stats st;

    lsvc_block_signals();
    CHECK(lsvc_create(&a, &counter, &runs, NULL) == 0);
    CHECK(lsvc_start(a, 3) == 0);
    CHECK(lsvc_join(a, 10) == 0);
    CHECK(runs == 3);
    CHECK(lsvc_get_stats(a, &st) == 0 && st.loops == 3 && !st.running);

    CHECK(lsvc_create(&c, &sleeper, &sleeps, NULL) == 0);
    CHECK(lsvc_start(c, 0) == 0);
    CHECK(lsvc_stop(c, true) == 0); /* a sleeping service stops at once */

    CHECK(lsvc_group_create(&g) == 0);
    CHECK(lsvc_create(&b, &stopper, g, NULL) == 0);
    CHECK(lsvc_group_add(g, a) == 0 && lsvc_group_add(g, b) == 0);
    CHECK(lsvc_group_add(g, b) == EBUSY);
    CHECK(lsvc_group_run(g) == 0);
    CHECK(!lsvc_is_running(a) && !lsvc_is_running(b));
    CHECK(lsvc_destroy(a) == EBUSY); /* still in the group */
    CHECK(lsvc_group_destroy(g) == 0);
    CHECK(lsvc_destroy(a) == 0 && lsvc_destroy(b) == 0 && lsvc_destroy(c) == 0);
    puts("1 passed, 0 failed");
    return 0;
}
