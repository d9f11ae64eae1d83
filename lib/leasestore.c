/*
 * The lease store (leasestore.h): one thread per store owns the store's
 * connection, and leases are entries that services and that thread share
 * under the store's mutex.
 *
 * A holding is valid here until `valid_until`, counted on CLOCK_MONOTONIC
 * from before the request that took or renewed it was sent, a little short
 * of the store's own expiry (which the store counts from when it got the
 * request, later). The thread renews each held lease every interval of
 * its service, from 100 ms up to a third of the time to live, all that
 * are nearly due in one round trip, so a failed renewal still leaves time
 * for one more try before the holding lapses here, and a holder never
 * waits for the store before a run. A service that does not hold its
 * lease asks the thread to take it and waits for the round trip; those
 * that ask within a twentieth of an interval (at most 2 ms) share it.
 *
 * The store also keeps when the service last succeeded on any replica:
 * the holder's successes go with its renewals (hence their period, which
 * bounds how stale that record is), and every take, held or not, reads
 * it back.
 *
 * When the connection is lost every holding ends here at once: the store
 * may hand a lease to another replica as soon as this one's session is
 * gone.
 *
 * A new holding does not run the due point it was taken for when the
 * previous holding ended less than half an interval before, by the
 * store's clock: its holder may have started that point, which on
 * replicas whose clocks agree within half an interval is this one. The
 * next point is safe, since the previous holder started nothing after its
 * holding ended. A holding given up ends, for the next holder, when its
 * last run began.
 */
#include "leasestore.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_SEC INT64_C(1000000000)
#define NS_PER_MS INT64_C(1000000)
#define BACKOFF_FIRST_NS (100 * NS_PER_MS)
#define BACKOFF_MAX_NS (30 * NS_PER_SEC)
#define REASON_MAX 256
#define BUCKETS 1024
#define OUTBOX 8
/* A take waits this long, at most a twentieth of its interval, for the
 * takes of other services to share its round trip. Longer would make
 * fewer round trips, but wakes the waiting services in bursts, which the
 * other threads of the machine feel. */
#define COALESCE_MAX_NS (2 * NS_PER_MS)
/* How often a service waiting for its ask looks whether it is asked to
 * stop: the longest a stop waits for an ask in progress. */
#define STOP_LOOK_NS (20 * NS_PER_MS)

struct entry {
    struct entry *next;     /* in its bucket */
    char *name;             /* the service's name */
    char *id;               /* the driver's name for the lease */
    const lsvc *svc;        /* the service that last asked; compared only */
    bool held;              /* valid here until valid_until */
    uint64_t token;         /* of the holding (kept for its release) */
    uint64_t token_max;     /* the highest it was given */
    int64_t valid_until;
    int64_t renew_at;
    bool want_take;         /* a service waits for a take */
    int64_t want_by;        /* and the take goes out by then */
    int64_t asked_ns;       /* when the service asked for it */
    bool want_release;      /* given up here; the store does not know yet */
    bool skip_point;        /* a new holding: leave the point it was taken
                             * for (see above) */
    int64_t tolerance_ms;   /* half the service's interval, 0 for none */
    int64_t last_run_ns;    /* when a run was last let go ahead */
    int64_t renew_every_ns; /* the interval, from 100 ms to a third of the
                             * time to live */
    int64_t success_ns;     /* a run last succeeded here */
    bool success_news;      /* the store has not been told yet */
    int64_t cluster_success_ns; /* on any replica, as last heard */
    bool stored;            /* the store keeps a record of it */
    int64_t asked_last_ns;  /* the service's last ask */
    int64_t keep_ns;        /* held without an ask for longer, the lease
                             * is given up: a paused service's, a stopped
                             * one's that was told "not held" */
    bool in_run;            /* told "held", and not yet told how it ran */
};

struct lsvc__store {
    const struct lsvc__store_driver *driver;
    void *drv;
    const char *label;
    int64_t timeout_ns;
    int64_t ttl_ns;

    pthread_mutex_t mutex;
    pthread_cond_t round_done;  /* rounds_done moved */
    struct entry *buckets[BUCKETS];
    uint64_t rounds_begun;      /* rounds the thread has built */
    uint64_t rounds_done;       /* and answered (or failed) */
    unsigned callers;           /* services inside a call */
    bool connected;
    int64_t retry_at;           /* no connect before this */
    bool thread_started;
    bool quit;
    pthread_t thread;
    int wake[2];                /* a byte in wake[1] wakes the thread */

    /* The thread's alone. */
    struct said {
        int level;
        char text[512];
    } outbox[OUTBOX];       /* log lines made with the mutex held */
    unsigned said, unsaid;  /* lines in it; lines it had no room for */
    unsigned failures;
    int64_t backoff_ns;
    char reason[REASON_MAX];
    struct lsvc__lease_item *items;
    struct entry **item_entries;
    size_t items_cap;
};

int64_t lsvc__store_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static int64_t now_ns(void)
{
    return lsvc__store_now_ns();
}

void lsvc__one_line(char *out, size_t size, const char *text)
{
    size_t n = 0;
    bool blank = false, line_break = false;

    for (const unsigned char *p = (const unsigned char *)text;
         *p != '\0' && n + 3 < size; p++) {
        if (*p == '\n' || *p == '\r') {
            line_break = n > 0;
            continue;
        }
        if (*p <= ' ' || *p == 0x7f) {
            blank = n > 0;
            continue;
        }
        if (line_break && strchr(".?!:;", out[n - 1]) == NULL)
            out[n++] = '.';
        if (line_break || blank)
            out[n++] = ' ';
        line_break = blank = false;
        out[n++] = (char)*p;
    }
    while (n > 0 && out[n - 1] == '.')
        n--;
    out[n] = '\0';
}

const char *lsvc__stop_after(const char *text)
{
    size_t n = strlen(text);

    return n > 0 && (text[n - 1] == '?' || text[n - 1] == '!') ? "" : ".";
}

/* A log line, kept until the thread lets go of the mutex: the logger is
 * the user's code. */
LSVC_PRINTF(3, 4)
static void say(struct lsvc__store *st, int level, const char *fmt, ...)
{
    va_list ap;

    if (st->said == OUTBOX) {
        st->unsaid++;
        return;
    }
    struct said *line = &st->outbox[st->said++];
    line->level = level;
    va_start(ap, fmt);
    vsnprintf(line->text, sizeof line->text, fmt, ap);
    va_end(ap);
}

/* Lets go of the mutex, then logs what was said meanwhile. */
static void unlock_and_say(struct lsvc__store *st)
{
    unsigned n = st->said, more = st->unsaid;

    pthread_mutex_unlock(&st->mutex);
    for (unsigned i = 0; i < n; i++)
        lsvc_log(NULL, st->outbox[i].level, "%s", st->outbox[i].text);
    if (more > 0)
        lsvc_log(NULL, LSVC_LOG_WARNING, "%u more such lines about the "
                 "leases in %s were left out.", more, st->label);
    st->said = st->unsaid = 0;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void random_bytes(unsigned char *buf, size_t len)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    size_t got = 0;

    while (fd >= 0 && got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
        if (n > 0)
            got += (size_t)n;
    }
    if (fd >= 0)
        close(fd);
    if (got == len)
        return;
    /* No /dev/urandom (a chroot): the clock, the process and an address
     * still make two stores of one machine differ. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t state = (uint64_t)ts.tv_sec * UINT64_C(1000000007) ^
                     (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
                     (uint64_t)(uintptr_t)buf;
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)splitmix64(&state);
}

void lsvc__store_name_holder(char *buf, size_t size)
{
    char host[32] = "";
    unsigned char r[8];

    if (gethostname(host, sizeof host) != 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';
    random_bytes(r, sizeof r);
    snprintf(buf, size, "%s:%ld:%02x%02x%02x%02x%02x%02x%02x%02x", host,
             (long)getpid(), r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
}

static size_t bucket_of(const char *name)
{
    uint32_t h = 2166136261u;

    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % BUCKETS;
}

static struct entry *find(struct lsvc__store *st, const char *name)
{
    for (struct entry *e = st->buckets[bucket_of(name)]; e; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

static struct entry *find_or_add(struct lsvc__store *st, const char *name)
{
    struct entry *e = find(st, name);

    if (e != NULL)
        return e;
    e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->name = strdup(name);
    e->id = e->name != NULL ? st->driver->make_id(st->drv, name) : NULL;
    if (e->id == NULL) {
        free(e->name);
        free(e);
        return NULL;
    }
    size_t b = bucket_of(name);
    e->next = st->buckets[b];
    st->buckets[b] = e;
    return e;
}

static void wake_thread(struct lsvc__store *st)
{
    char c = 1;

    /* A full pipe already holds a wake-up. */
    while (write(st->wake[1], &c, 1) < 0 && errno == EINTR)
        ;
}

static void drain_wake(struct lsvc__store *st)
{
    char buf[64];

    while (read(st->wake[0], buf, sizeof buf) > 0)
        ;
}

/* Waits, with the mutex held, until a round that began after this call
 * has been answered, or the deadline passes, or (with asker) a stop of
 * the asking service is requested, which it looks for every STOP_LOOK_NS
 * (whatever else wakes it meanwhile) with the mutex let go:
 * lsvc_should_stop takes the service's lock, and nothing takes that lock
 * inside this one. Returns 0 when the round was answered, ETIMEDOUT or
 * ECANCELED. */
static int wait_round(struct lsvc__store *st, int64_t deadline,
                      const lsvc *asker)
{
    uint64_t target = st->rounds_begun + 1;
    int64_t look = asker != NULL ? now_ns() + STOP_LOOK_NS : deadline;

    wake_thread(st);
    while (st->rounds_done < target && !st->quit) {
        int64_t until = look < deadline ? look : deadline;
        struct timespec ts = { .tv_sec = until / NS_PER_SEC,
                               .tv_nsec = until % NS_PER_SEC };
        if (pthread_cond_timedwait(&st->round_done, &st->mutex, &ts) !=
            ETIMEDOUT)
            continue;
        if (until == deadline)
            break;
        pthread_mutex_unlock(&st->mutex);
        bool stop = lsvc_should_stop(asker);
        pthread_mutex_lock(&st->mutex);
        if (stop && st->rounds_done < target)
            return ECANCELED;
        look += STOP_LOOK_NS;
    }
    return st->rounds_done >= target ? 0 : ETIMEDOUT;
}

/* ---- the thread ------------------------------------------------------ */

static void note_failure(struct lsvc__store *st, const char *verb,
                         const char *why, unsigned lost)
{
    st->backoff_ns = st->failures == 0 ? BACKOFF_FIRST_NS
                     : st->backoff_ns >= BACKOFF_MAX_NS / 2 ? BACKOFF_MAX_NS
                     : 2 * st->backoff_ns;
    st->failures++;
    st->retry_at = now_ns() + st->backoff_ns;
    if (st->failures > 1 && strcmp(why, st->reason) == 0 && lost == 0)
        return;
    snprintf(st->reason, sizeof st->reason, "%s", why);
    char held[96] = "";
    if (lost > 0)
        snprintf(held, sizeof held, " The %u lease%s held here %s given up "
                 "here.", lost, lost == 1 ? "" : "s",
                 lost == 1 ? "is" : "are");
    say(st, LSVC_LOG_WARNING,
             "%s %s for the leases: %s%s%s No service that uses them runs "
             "here until a connection takes its lease; trying again in %g s, "
             "then with a backoff up to %d s.", verb, st->label, why,
             lsvc__stop_after(why), held, (double)st->backoff_ns / 1e9,
             (int)(BACKOFF_MAX_NS / NS_PER_SEC));
}

static void note_success(struct lsvc__store *st)
{
    if (st->failures == 0)
        return;
    say(st, LSVC_LOG_INFO, "Connected to %s again for the leases, "
             "after %u failed attempt%s.", st->label, st->failures,
             st->failures == 1 ? "" : "s");
    st->failures = 0;
    st->backoff_ns = 0;
    st->reason[0] = '\0';
}

/* The connection is gone: so is every holding, since the store may give
 * each to another replica now. Called with the mutex held. */
static unsigned drop_holdings(struct lsvc__store *st)
{
    unsigned n = 0;

    st->connected = false;
    for (size_t b = 0; b < BUCKETS; b++)
        for (struct entry *e = st->buckets[b]; e; e = e->next) {
            n += e->held;
            e->held = false;
            e->want_release = false;
        }
    return n;
}

/* Held, but its service has not asked for longer than it would if it
 * used it, and is not in a run. */
static bool unused(const struct entry *e, int64_t now)
{
    return e->held && !e->in_run && now - e->asked_last_ns > e->keep_ns;
}

/* Whether e calls for a round at now (urgent), or goes into one that
 * happens anyway: renewals due within half their period go along, so
 * that they bunch. */
static bool due(const struct lsvc__store *st, const struct entry *e,
                int64_t now, bool urgent)
{
    if (st->quit) /* the last round gives up what is held, no more */
        return e->held || e->want_release;
    int64_t early = urgent ? 0 : e->renew_every_ns / 2;
    return (e->want_take && (!urgent || e->want_by <= now)) ||
           e->want_release || (e->held && e->renew_at - early <= now) ||
           unused(e, now);
}

static int grow_items(struct lsvc__store *st, size_t n)
{
    if (n <= st->items_cap)
        return 0;
    size_t cap = st->items_cap ? st->items_cap : 16;
    while (cap < n)
        cap *= 2;
    struct lsvc__lease_item *items = realloc(st->items, cap * sizeof *items);
    if (items == NULL)
        return ENOMEM;
    st->items = items;
    struct entry **ents = realloc(st->item_entries, cap * sizeof *ents);
    if (ents == NULL)
        return ENOMEM;
    st->item_entries = ents;
    st->items_cap = cap;
    return 0;
}

/* Builds the round that begins at now into st->items; returns its size,
 * 0 for none, or SIZE_MAX when there was no memory for one that was due.
 * Called with the mutex held. */
static size_t build_round(struct lsvc__store *st, int64_t now)
{
    size_t n = 0;
    bool urgent = false;

    for (size_t b = 0; b < BUCKETS; b++)
        for (struct entry *e = st->buckets[b]; e; e = e->next) {
            urgent = urgent || due(st, e, now, true);
            n += due(st, e, now, false);
        }
    if (!urgent)
        return 0;
    if (grow_items(st, n) != 0)
        return SIZE_MAX;
    n = 0;
    for (size_t b = 0; b < BUCKETS; b++)
        for (struct entry *e = st->buckets[b]; e; e = e->next) {
            if (!due(st, e, now, false))
                continue;
            if (unused(e, now)) {
                e->held = false;
                e->want_release = true;
            }
            struct lsvc__lease_item *it = &st->items[n];
            *it = (struct lsvc__lease_item){
                .id = e->id,
                .op = e->want_release || st->quit ? LSVC__RELEASE
                      : e->held                   ? LSVC__RENEW
                                                  : LSVC__TAKE,
                .token = e->token,
                .ttl_ms = (st->ttl_ns + NS_PER_MS - 1) / NS_PER_MS,
                .ago_ms = e->last_run_ns > 0
                          ? (now - e->last_run_ns) / NS_PER_MS : 0,
                .stored = e->stored,
            };
            /* A take carries no news: its holding is new. */
            if (it->op != LSVC__TAKE && e->success_news) {
                it->success_ago_ms = (now - e->success_ns) / NS_PER_MS;
                e->success_news = false;
            } else {
                it->success_ago_ms = -1;
            }
            st->item_entries[n++] = e;
            e->want_take = false;
            e->want_release = false;
        }
    return n;
}

/* Tokens only go up, unless the store lost them: say so, since every
 * sink refuses this holder's writes until they pass its fence. */
static void take_token(struct lsvc__store *st, struct entry *e,
                       uint64_t token)
{
    if (token < e->token_max)
        say(st, LSVC_LOG_WARNING,
                 "The fencing token of the lease of %s went back from %llu "
                 "to %llu: %s lost it (a row or counter deleted, a restart "
                 "without persistence, a failover, eviction). Sinks that saw "
                 "the higher tokens refuse this replica's writes until the "
                 "tokens pass them: set the store's token above the highest "
                 "any sink holds.", e->name,
                 (unsigned long long)e->token_max, (unsigned long long)token,
                 st->label);
    else
        e->token_max = token;
    e->token = token;
}

/* Whether the previous holding ended at least half an interval before
 * the service asked: the store measured the gap to its own now, which
 * came after the ask by no more than the time since. */
static bool ended_before_ask(const struct entry *e,
                             const struct lsvc__lease_item *it, int64_t now)
{
    if (it->gap_ms == LSVC__NO_GAP)
        return true;
    int64_t gap_ns = it->gap_ms * NS_PER_MS - (now - e->asked_ns);
    return gap_ns >= e->tolerance_ms * NS_PER_MS;
}

/* The answers of a round sent at `sent`. Called with the mutex held. */
static void apply_round(struct lsvc__store *st, size_t n, int64_t sent)
{
    /* Valid a little short of the store's expiry: the store counts from
     * when it got the request, and clocks may run a little apart. */
    int64_t valid = st->ttl_ns - st->ttl_ns / 50;

    int64_t now = now_ns();

    for (size_t i = 0; i < n; i++) {
        const struct lsvc__lease_item *it = &st->items[i];
        struct entry *e = st->item_entries[i];

        e->stored = e->stored || it->stored;
        if (it->op == LSVC__TAKE && it->success_age_ms != LSVC__NO_GAP) {
            /* Older than this host's clock: as old as can be told. */
            int64_t at = now - it->success_age_ms * NS_PER_MS;
            if (at < 1)
                at = 1;
            if (at > e->cluster_success_ns)
                e->cluster_success_ns = at;
        }
        if (it->op == LSVC__RELEASE) {
            if (!e->held)
                continue;
        } else if (it->ok) {
            if (it->op == LSVC__TAKE) {
                take_token(st, e, it->new_token);
                e->skip_point = it->fresh && !ended_before_ask(e, it, now);
            }
            /* A renewal of a holding given up meanwhile does not revive
             * it: the release goes with the next round. One whose token
             * changed (the store's count was set anew) ends it: the next
             * take starts a holding with the new token. */
            if (it->op == LSVC__RENEW && it->new_token != e->token) {
                e->held = false;
                continue;
            }
            if (it->op == LSVC__TAKE || e->held) {
                e->held = true;
                e->valid_until = sent + valid;
                e->renew_at = sent + e->renew_every_ns;
            }
            continue;
        }
        e->held = false;
    }
}

/* The round failed: every holding ends with the connection, and the
 * backoff gates the next try. Mutex held. */
static void fail_round(struct lsvc__store *st, const char *verb,
                       const char *why)
{
    unsigned lost = drop_holdings(st);

    note_failure(st, verb, why, lost);
    st->driver->disconnect(st->drv);
}

/* One round: connects when needed, then sends what is due. Called with
 * the mutex held, which it lets go while it waits for the store. */
static void run_round(struct lsvc__store *st, int64_t now)
{
    char why[REASON_MAX];
    size_t n = build_round(st, now);

    if (n == 0)
        return;
    st->rounds_begun++;
    /* A round due but not built, for want of memory, fails as one the
     * store did not answer: at once, so that no asker waits out its
     * timeout, and with the backoff, so that the thread does not try
     * again and again while memory is short. The takes it was to carry
     * come again with the next asks. */
    if (n == SIZE_MAX) {
        for (size_t b = 0; b < BUCKETS; b++)
            for (struct entry *e = st->buckets[b]; e; e = e->next)
                e->want_take = false;
        fail_round(st, "Could not make a round trip to", "out of memory");
        goto answered;
    }
    if (!st->connected && now < st->retry_at) {
        drop_holdings(st);  /* nothing held without a connection */
        goto answered;
    }
    unlock_and_say(st);
    int rc = 0;
    const char *verb = "Could not connect to";
    if (!st->connected)
        rc = st->driver->connect(st->drv, why, sizeof why);
    int64_t sent = now_ns();
    if (rc == 0) {
        verb = st->connected ? "Lost the session with"
                             : "Could not use";
        rc = st->driver->exchange(st->drv, st->items, n, why, sizeof why);
    }
    pthread_mutex_lock(&st->mutex);
    if (rc != 0) {
        fail_round(st, verb, why);
        goto answered;
    }
    st->connected = true;
    note_success(st);
    apply_round(st, n, sent);
answered:
    st->rounds_done++;
    pthread_cond_broadcast(&st->round_done);
}

/* The next time a held lease wants renewing or a take must go out, or
 * -1 for none. */
static int64_t next_renewal(const struct lsvc__store *st)
{
    int64_t next = -1;

    for (size_t b = 0; b < BUCKETS; b++)
        for (const struct entry *e = st->buckets[b]; e; e = e->next) {
            if (e->held && (next < 0 || e->renew_at < next))
                next = e->renew_at;
            if (e->want_take && (next < 0 || e->want_by < next))
                next = e->want_by;
        }
    return next;
}

/* Sleeps until a renewal is due, a service asks, or the store speaks. */
static void idle(struct lsvc__store *st, int64_t now)
{
    int64_t next = next_renewal(st);
    struct pollfd p[2] = {
        { .fd = st->wake[0], .events = POLLIN },
        { .fd = st->connected ? st->driver->socket(st->drv) : -1,
          .events = POLLIN },
    };
    int ms = next < 0     ? -1
             : next <= now ? 0
                           : (int)((next - now + NS_PER_MS - 1) / NS_PER_MS);

    unlock_and_say(st);
    int ready = poll(p, 2, ms);
    if (ready > 0 && (p[0].revents & POLLIN))
        drain_wake(st);
    char why[REASON_MAX];
    int rc = ready > 0 && p[1].revents != 0
             ? st->driver->idle_input(st->drv, why, sizeof why) : 0;
    pthread_mutex_lock(&st->mutex);
    if (rc != 0) {
        unsigned lost = drop_holdings(st);
        note_failure(st, "Lost the session with", why, lost);
    }
}

static void *store_thread(void *arg)
{
    struct lsvc__store *st = arg;

    pthread_mutex_lock(&st->mutex);
    for (;;) {
        int64_t now = now_ns();
        uint64_t before = st->rounds_begun;

        run_round(st, now);
        if (st->quit && (before == st->rounds_begun || !st->connected))
            break;
        if (before == st->rounds_begun)
            idle(st, now);
    }
    if (st->connected)
        st->driver->disconnect(st->drv);
    st->connected = false;
    drop_holdings(st);
    pthread_cond_broadcast(&st->round_done);
    unlock_and_say(st);
    return NULL;
}

/* Started at the first call, so that a store made and never used costs
 * no thread. It takes no signal: a group's signal thread must get them. */
static int start_thread(struct lsvc__store *st)
{
    sigset_t all, old;

    if (st->thread_started)
        return 0;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&st->thread, NULL, store_thread, st);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    st->thread_started = rc == 0;
    return rc;
}

/* ---- the lease callbacks -------------------------------------------- */

/* The entry of svc, with the mutex held and the caller counted; NULL with
 * *rc set when there is none to use. */
static struct entry *enter(struct lsvc__store *st, lsvc *svc, bool add,
                           int *rc)
{
    const char *name = lsvc_name(svc);
    struct entry *e;

    pthread_mutex_lock(&st->mutex);
    st->callers++;
    e = add ? find_or_add(st, name) : find(st, name);
    *rc = e == NULL ? (add ? ENOMEM : EAGAIN) : 0;
    /* Two services of one name on one store would share one lease. */
    if (e != NULL && e->svc != svc && e->svc != NULL &&
        (e->held || e->want_take)) {
        *rc = EINVAL;
        e = NULL;
    }
    return e;
}

static void leave(struct lsvc__store *st)
{
    st->callers--;
    pthread_mutex_unlock(&st->mutex);
}

static int store_acquire(void *ctx, lsvc *svc, bool *held)
{
    struct lsvc__store *st = ctx;
    int rc;

    if (st == NULL || svc == NULL || held == NULL)
        return EINVAL;
    *held = false;
    /* Read before the store's lock is taken: they take the service's. */
    double interval = lsvc_loop_seconds(svc);
    bool stopping = lsvc_should_stop(svc);
    int64_t tolerance_ms = interval < 1e9 ? (int64_t)(interval * 500) : 0;
    int64_t every = interval < (double)st->ttl_ns / 3e9
                    ? (int64_t)(interval * 1e9) : st->ttl_ns / 3;
    int64_t gather = interval * 1e9 / 20 < (double)COALESCE_MAX_NS
                     ? (int64_t)(interval * 1e9) / 20
                     : interval < 1e9 ? COALESCE_MAX_NS
                                      : 0; /* woken: at once */
    struct entry *e = enter(st, svc, true, &rc);
    if (e == NULL)
        goto out;
    e->svc = svc;
    e->renew_every_ns = every < 100 * NS_PER_MS ? 100 * NS_PER_MS : every;
    if (e->renew_every_ns > st->ttl_ns / 3)
        e->renew_every_ns = st->ttl_ns / 3;
    if (e->renew_every_ns < NS_PER_MS)
        e->renew_every_ns = NS_PER_MS;
    e->keep_ns = interval < (double)st->ttl_ns / 2e9 || interval >= 1e9
                 ? st->ttl_ns : (int64_t)(interval * 2e9);
    int64_t now = now_ns();
    e->asked_last_ns = now;
    if (e->held && now < e->valid_until) {
        *held = true;
        e->last_run_ns = now;
        e->in_run = true;
        goto out;
    }
    /* Lapsed here: the thread could not renew it in time. */
    e->held = false;
    if (st->quit || (!st->connected && now < st->retry_at))
        goto out;
    /* A service that stops asks for no take: it would only be given up. */
    if (stopping) {
        rc = ECANCELED;
        goto out;
    }
    rc = start_thread(st);
    if (rc != 0)
        goto out;
    e->tolerance_ms = tolerance_ms;
    e->want_by = now + gather;
    e->asked_ns = now;
    e->want_take = true;
    /* No answer in time is "could not tell": the take goes on, and the
     * next ask finds what it gave. A stop ends the wait: the take is
     * called off, or if it is on its way, what it gains is given up in
     * the round after it. */
    rc = wait_round(st, now + gather + 2 * st->timeout_ns + 100 * NS_PER_MS,
                    svc);
    if (rc == ECANCELED) {
        if (e->svc == svc) {
            e->want_take = false;
            e->keep_ns = 0;
        }
        goto out;
    }
    if (rc == ETIMEDOUT && st->quit)
        rc = 0;
    now = now_ns();
    *held = rc == 0 && e->held && e->svc == svc && now < e->valid_until &&
            !e->skip_point;
    e->skip_point = false;
    if (*held) {
        e->last_run_ns = now;
        e->in_run = true;
    }
out:
    leave(st);
    return rc;
}

static void store_release(void *ctx, lsvc *svc)
{
    struct lsvc__store *st = ctx;
    int rc;

    if (st == NULL || svc == NULL)
        return;
    struct entry *e = enter(st, svc, false, &rc);
    if (e != NULL && e->held && e->svc == svc) {
        e->held = false;
        e->in_run = false;
        e->want_release = true;
        wait_round(st, now_ns() + st->timeout_ns + 100 * NS_PER_MS, NULL);
    }
    leave(st);
}

static int store_token(void *ctx, lsvc *svc, uint64_t *token)
{
    struct lsvc__store *st = ctx;
    int rc;

    if (st == NULL || svc == NULL || token == NULL)
        return EINVAL;
    struct entry *e = enter(st, svc, false, &rc);
    if (e != NULL && !(e->held && e->svc == svc))
        rc = EAGAIN;
    if (rc == 0)
        *token = e->token;
    leave(st);
    return rc;
}

/* A time the lease keeps for svc: the deadline of its holding (0 for
 * none), or the last success on any replica. */
static int read_time(void *ctx, lsvc *svc, int64_t *mono_ns, bool deadline)
{
    struct lsvc__store *st = ctx;
    int rc;

    if (st == NULL || svc == NULL || mono_ns == NULL)
        return EINVAL;
    struct entry *e = enter(st, svc, false, &rc);
    if (e != NULL && deadline)
        *mono_ns = e->held && e->svc == svc ? e->valid_until : 0;
    else if (e != NULL)
        *mono_ns = e->cluster_success_ns;
    leave(st);
    return rc;
}

static int store_deadline(void *ctx, lsvc *svc, int64_t *mono_ns)
{
    return read_time(ctx, svc, mono_ns, true);
}

/* A success here is news for the store, told with the next renewal. */
static void store_ran(void *ctx, lsvc *svc, int result)
{
    struct lsvc__store *st = ctx;
    int rc;

    if (st == NULL || svc == NULL)
        return;
    struct entry *e = enter(st, svc, false, &rc);
    if (e != NULL && e->svc == svc) {
        e->in_run = false;
        if (result == 0) {
            e->success_ns = e->cluster_success_ns = now_ns();
            e->success_news = true;
        }
    }
    leave(st);
}

static int store_last_success(void *ctx, lsvc *svc, int64_t *mono_ns)
{
    return read_time(ctx, svc, mono_ns, false);
}

const lsvc_lease_ops lsvc__store_ops = {
    .acquire = store_acquire,
    .release = store_release,
    .token = store_token,
    .deadline = store_deadline,
    .ran = store_ran,
    .last_success = store_last_success,
};

/* ---- the object ------------------------------------------------------ */

static int make_pipe(int fds[2])
{
    if (pipe(fds) != 0)
        return errno;
    for (int i = 0; i < 2; i++)
        if (fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0 ||
            fcntl(fds[i], F_SETFL, O_NONBLOCK) != 0) {
            int rc = errno;
            close(fds[0]);
            close(fds[1]);
            return rc;
        }
    return 0;
}

int lsvc__store_create(struct lsvc__store **out,
                       const struct lsvc__store_driver *driver, void *drv,
                       const char *label, int64_t timeout_ns,
                       int64_t ttl_ns)
{
    struct lsvc__store *st = calloc(1, sizeof *st);
    pthread_condattr_t ca;
    int rc;

    if (st == NULL)
        return ENOMEM;
    st->driver = driver;
    st->drv = drv;
    st->label = label;
    st->timeout_ns = timeout_ns;
    st->ttl_ns = ttl_ns;
    rc = make_pipe(st->wake);
    if (rc != 0) {
        free(st);
        return rc;
    }
    rc = pthread_condattr_init(&ca);
    if (rc == 0) {
        rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (rc == 0)
            rc = pthread_cond_init(&st->round_done, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (rc == 0 && (rc = pthread_mutex_init(&st->mutex, NULL)) != 0)
        pthread_cond_destroy(&st->round_done);
    if (rc != 0) {
        close(st->wake[0]);
        close(st->wake[1]);
        free(st);
        return rc;
    }
    *out = st;
    return 0;
}

int lsvc__store_destroy(struct lsvc__store *st)
{
    pthread_mutex_lock(&st->mutex);
    if (st->callers > 0 || st->quit) {
        pthread_mutex_unlock(&st->mutex);
        return EBUSY;
    }
    st->quit = true;
    pthread_mutex_unlock(&st->mutex);
    if (st->thread_started) {
        wake_thread(st);
        pthread_join(st->thread, NULL);
    }
    for (size_t b = 0; b < BUCKETS; b++)
        while (st->buckets[b] != NULL) {
            struct entry *e = st->buckets[b];
            st->buckets[b] = e->next;
            free(e->name);
            free(e->id);
            free(e);
        }
    free(st->items);
    free(st->item_entries);
    pthread_cond_destroy(&st->round_done);
    pthread_mutex_destroy(&st->mutex);
    close(st->wake[0]);
    close(st->wake[1]);
    free(st);
    return 0;
}
