/*
 * systemd's notify protocol, as sd_notify(3) documents it: each state
 * change is one datagram of "KEY=VALUE" lines sent to the AF_UNIX socket
 * named by NOTIFY_SOCKET, a path or, with a leading '@', an abstract name.
 * The protocol is small and stable, so it is spoken here rather than
 * linking libsystemd into every user of the library.
 *
 * Sends never block (MSG_DONTWAIT): a state change may be sent under a
 * group's lock, and a full queue at systemd must not stall a stop. The
 * first send that fails in a group's run is remembered and logged later,
 * outside any lock; the rest would only repeat it every ping.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Groups whose notifier is open, in the whole process. */
static atomic_int speakers;

static void warn_env(const char *var, const char *value, const char *why)
{
    char shown[48];

    lsvc__log_value(shown, sizeof shown, value);
    lsvc__log(LSVC_LOG_WARNING, "loopsvc",
              "Ignoring %s=\"%s\": %s. The group runs without it.",
              var, shown, why);
}

/* Fills n->addr from NOTIFY_SOCKET; false (and a WARNING) when unusable. */
static bool parse_socket(struct lsvc_notifier *n, const char *value)
{
    size_t len = strlen(value);
    size_t room = sizeof n->addr.sun_path;

    if (value[0] != '/' && value[0] != '@') {
        warn_env("NOTIFY_SOCKET", value,
                 "only an absolute path or an abstract socket (\"@name\") "
                 "is supported");
        return false;
    }
    /* A path needs its terminating NUL; an abstract name has none, its
     * '@' becoming the leading NUL. */
    if (len > room - (value[0] == '/') || len < 2) {
        warn_env("NOTIFY_SOCKET", value,
                 len < 2 ? "the name is empty" : "the name is too long");
        return false;
    }
    memset(&n->addr, 0, sizeof n->addr);
    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, value, len);
    if (value[0] == '@')
        n->addr.sun_path[0] = '\0';
    n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                              (value[0] == '/'));
    return true;
}

/* Whole decimal digits only, as systemd writes them. */
static bool parse_unsigned(const char *s, unsigned long long max,
                           unsigned long long *out)
{
    unsigned long long v = 0;

    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || v > (max - (unsigned)(*s - '0')) / 10)
            return false;
        v = v * 10 + (unsigned)(*s - '0');
    }
    *out = v;
    return true;
}

/* The ping period: half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
 * advises, when the watchdog is meant for this process. */
static int64_t watchdog_period(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    unsigned long long v;

    if (usec == NULL)
        return 0;
    /* Under 2 ms the pings would come faster than once a millisecond,
     * which no service manager asks for; a typo is likelier. */
    if (!parse_unsigned(usec, (unsigned long long)(INT64_MAX / 1000), &v) ||
        v < 2000) {
        warn_env("WATCHDOG_USEC", usec, "it is not a whole number of "
                 "microseconds from 2000 up");
        return 0;
    }
    if (pid != NULL) {
        unsigned long long p;

        if (!parse_unsigned(pid, (unsigned long long)INT64_MAX, &p) || p == 0) {
            warn_env("WATCHDOG_PID", pid, "it is not a process id");
            return 0;
        }
        /* Set for another process: a parent that kept the watchdog. */
        if (p != (unsigned long long)getpid())
            return 0;
    }
    return (int64_t)v * 1000 / 2;
}

void lsvc__notifier_open(struct lsvc_notifier *n)
{
    const char *value = getenv("NOTIFY_SOCKET");
    int fd;

    n->fd = -1;
    n->watchdog_ns = 0;
    atomic_store(&n->failed, false);
    atomic_store(&n->send_errno, 0);
    if (value == NULL || !parse_socket(n, value))
        return;
    /* Not passed on to programs the server runs: atomically where the
     * system can, since another thread may fork and exec meanwhile. */
#ifdef SOCK_CLOEXEC
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
#else
    fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd >= 0)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    if (fd < 0) {
        char why[64];

        snprintf(why, sizeof why, "no socket could be made (errno %d)", errno);
        warn_env("NOTIFY_SOCKET", value, why);
        return;
    }
    n->fd = fd;
    n->watchdog_ns = watchdog_period();
    /* systemd keeps one state per process: a second group would mask a
     * stuck service of the first with its own pings. */
    if (atomic_fetch_add(&speakers, 1) > 0)
        lsvc__log(LSVC_LOG_WARNING, "loopsvc",
                  "Another group already notifies systemd; its READY=1, "
                  "STOPPING=1 and watchdog pings mix with this one's. Turn "
                  "notify off (lsvc_group_set_notify) in all groups but one.");
}

void lsvc__notify(struct lsvc_notifier *n, const char *state)
{
    if (n->fd < 0)
        return;
    if (sendto(n->fd, state, strlen(state), MSG_DONTWAIT | MSG_NOSIGNAL,
               (const struct sockaddr *)&n->addr, n->addr_len) < 0 &&
        !atomic_exchange(&n->failed, true))
        atomic_store(&n->send_errno, errno);
}

void lsvc__notifier_log_errors(struct lsvc_notifier *n)
{
    int err = atomic_exchange(&n->send_errno, 0);
    char why[128];

    if (err == 0)
        return;
    lsvc__strerror(err, why, sizeof why);
    lsvc__log(LSVC_LOG_WARNING, "loopsvc",
              "Could not notify systemd through NOTIFY_SOCKET: %s.", why);
}

void lsvc__notifier_close(struct lsvc_notifier *n)
{
    if (n->fd >= 0) {
        close(n->fd);
        atomic_fetch_sub(&speakers, 1);
    }
    n->fd = -1;
    n->watchdog_ns = 0;
}
