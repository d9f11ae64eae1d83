/*
 * Fault injection for the fault suite. test/meson.build links that suite
 * with -Wl,--wrap= for a list of C and POSIX functions, so every call the
 * static library (and the test itself) makes to one of them lands in
 * faults.c first. Disarmed, each wrapper simply calls the real function.
 * Armed with faults_arm(k), the wrappers count calls, and the k-th one
 * fails the way that function fails: NULL with errno ENOMEM for the
 * allocators, EAGAIN for pthread_create, an errno-style result the
 * function documents for the others.
 *
 * Check is linked statically into the same program, so its own malloc
 * goes through the wrappers too: arm only around the library call under
 * test. Counters are atomics, since library threads may call a wrapped
 * function while the fault is armed.
 */
#ifndef LSVC_TEST_FAULTS_H
#define LSVC_TEST_FAULTS_H

#include <stdbool.h>
#include <stddef.h>

/* How many wrapped calls per armed window faults_call() can name. */
#define FAULTS_TRACE_MAX 256

/* Counts wrapped calls from now on and makes the k-th fail with that
 * function's usual error; k = 0 only counts. Forgets any earlier window. */
void faults_arm(unsigned long k);
/* faults_arm with the error the k-th call gives chosen by the caller
 * (an errno value); 0 means that function's usual error. */
void faults_arm_with(unsigned long k, int error);
/* Counts wrapped calls from now on, as faults_arm(0) does, and makes
 * every call of the wrapped function `name` (e.g. "realloc") fail with
 * its usual error, from whichever thread, until faults_disarm: memory
 * that stays short, for a thread that would try again and again. */
void faults_fail_every(const char *name);
/* Stops counting and failing; every wrapped call is real again. */
void faults_disarm(void);

/* Wrapped calls made since faults_arm. */
unsigned long faults_count(void);
/* The i-th of them (from 1), e.g. "malloc" or "pthread_sigmask(SIG_BLOCK)";
 * NULL past the end or past FAULTS_TRACE_MAX. */
const char *faults_call(unsigned long i);
/* Whether the armed call happened (and so failed) in this window. */
bool faults_fired(void);
/* The errno value the failed call gave; 0 before it fired. */
int faults_error(void);

/* Blocks that malloc, calloc, realloc or strdup returned in this window
 * and that were not freed since: after a failed call, what it leaked. */
size_t faults_live(void);

/* Between these, the calling thread's wrapped calls are neither counted
 * nor failed nor tracked: for the test's own work inside an armed window,
 * such as a log sink that stores messages. They nest. */
void faults_exempt_begin(void);
void faults_exempt_end(void);

#endif /* LSVC_TEST_FAULTS_H */
