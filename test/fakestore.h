/*
 * A lease store driver for the tests of the lease store itself: it keeps
 * no connection, answers each round trip at once (or once the test lets
 * it), and gives every lease asked for, as one this replica takes back,
 * so that the first ask is told "held".
 */
#ifndef LSVC_TEST_FAKESTORE_H
#define LSVC_TEST_FAKESTORE_H

#include "leasestore.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>

struct fake_store {
    atomic_uint exchanges; /* round trips begun */
    atomic_uint releases;  /* RELEASE items answered */
    sem_t entered;         /* posted as a round trip begins */
    sem_t answered;        /* and as it ends */
    pthread_mutex_t lock;
    pthread_cond_t let_go;
    bool held_up;          /* round trips wait while set */
    uint64_t token;        /* the store thread's alone */
};

extern const struct lsvc__store_driver fake_store_driver;

void fake_store_init(struct fake_store *f);
void fake_store_destroy(struct fake_store *f);
/* While held up, each round trip waits (up to 30 s) before it answers. */
void fake_store_hold_up(struct fake_store *f, bool held_up);

#endif
