/* The lease store driver of fakestore.h. */
#include "fakestore.h"

#include <string.h>
#include <time.h>

static char *make_id(void *drv, const char *name)
{
    (void)drv;
    return strdup(name);
}

static int connect_to(void *drv, char *why, size_t size)
{
    (void)drv, (void)why, (void)size;
    return 0;
}

static int socket_of(void *drv)
{
    (void)drv;
    return -1; /* nothing to watch: poll passes it over */
}

static int idle_input(void *drv, char *why, size_t size)
{
    (void)drv, (void)why, (void)size;
    return 0;
}

static void wait_let_go(struct fake_store *f)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&f->lock);
    while (f->held_up &&
           pthread_cond_timedwait(&f->let_go, &f->lock, &until) == 0)
        ;
    pthread_mutex_unlock(&f->lock);
}

static int exchange(void *drv, struct lsvc__lease_item *items, size_t n,
                    char *why, size_t size)
{
    struct fake_store *f = drv;

    (void)why, (void)size;
    atomic_fetch_add(&f->exchanges, 1);
    sem_post(&f->entered);
    wait_let_go(f);
    for (size_t i = 0; i < n; i++) {
        struct lsvc__lease_item *it = &items[i];

        it->ok = true;
        it->new_token = it->op == LSVC__TAKE ? ++f->token : it->token;
        it->fresh = false;
        it->gap_ms = LSVC__NO_GAP;
        it->success_age_ms = LSVC__NO_GAP;
        if (it->op == LSVC__RELEASE)
            atomic_fetch_add(&f->releases, 1);
    }
    sem_post(&f->answered);
    return 0;
}

static void disconnect(void *drv)
{
    (void)drv;
}

const struct lsvc__store_driver fake_store_driver = {
    .make_id = make_id,
    .connect = connect_to,
    .socket = socket_of,
    .idle_input = idle_input,
    .exchange = exchange,
    .disconnect = disconnect,
};

void fake_store_init(struct fake_store *f)
{
    memset(f, 0, sizeof *f);
    atomic_init(&f->exchanges, 0);
    atomic_init(&f->releases, 0);
    sem_init(&f->entered, 0, 0);
    sem_init(&f->answered, 0, 0);
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->let_go, NULL);
}

void fake_store_destroy(struct fake_store *f)
{
    sem_destroy(&f->entered);
    sem_destroy(&f->answered);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->let_go);
}

void fake_store_hold_up(struct fake_store *f, bool held_up)
{
    pthread_mutex_lock(&f->lock);
    f->held_up = held_up;
    pthread_cond_broadcast(&f->let_go);
    pthread_mutex_unlock(&f->lock);
}
