/*
 * Logging: the one sink every message of the library goes through, its
 * level, and the rate limiter that keeps a misbehaving service from
 * flooding it.
 *
 * The sink is called with no library lock held, so it may take its own
 * locks, or even call back into the library.
 */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define LSVC_LOG_MAX 1024 /* longer messages are cut */

static void stderr_sink(int level, const char *logger, const char *message,
                        void *ctx);

/* Protects sink_fn and sink_ctx, which must change together. */
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static lsvc_log_fn sink_fn = stderr_sink;
static void *sink_ctx;

static atomic_int log_level = LSVC_LOG_WARNING;
static pthread_once_t level_once = PTHREAD_ONCE_INIT;
static int env_level_rejected; /* set once by read_env_level */

static const char *level_name(int level)
{
    switch (level) {
    case LSVC_LOG_DEBUG: return "DEBUG";
    case LSVC_LOG_INFO: return "INFO";
    case LSVC_LOG_WARNING: return "WARNING";
    case LSVC_LOG_ERROR: return "ERROR";
    default: return "LEVEL";
    }
}

/* Runs once, before the first message and before lsvc_set_log_level, so
 * that an explicit call always wins over the environment. */
static void read_env_level(void)
{
    static const int levels[] = {
        LSVC_LOG_DEBUG, LSVC_LOG_INFO, LSVC_LOG_WARNING, LSVC_LOG_ERROR,
    };
    const char *env = getenv("LOOPSVC_LOG_LEVEL");

    if (env == NULL || *env == '\0')
        return;
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (strcasecmp(env, level_name(levels[i])) == 0) {
            atomic_store(&log_level, levels[i]);
            return;
        }
    }
    env_level_rejected = 1;
}

bool lsvc__log_enabled(int level)
{
    pthread_once(&level_once, read_env_level);
    return level >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

static void emit(int level, const char *logger, const char *message)
{
    pthread_mutex_lock(&sink_lock);
    lsvc_log_fn fn = sink_fn;
    void *ctx = sink_ctx;
    pthread_mutex_unlock(&sink_lock);
    fn(level, logger, message, ctx);
}

/* The body of lsvc__log and lsvc_log. */
static void vlog(int level, const char *logger, const char *fmt, va_list ap)
{
    static atomic_flag env_warned = ATOMIC_FLAG_INIT;
    char message[LSVC_LOG_MAX];

    if (!lsvc__log_enabled(level))
        return;
    if (env_level_rejected && !atomic_flag_test_and_set(&env_warned))
        emit(LSVC_LOG_WARNING, "loopsvc",
             "LOOPSVC_LOG_LEVEL is not DEBUG, INFO, WARNING or ERROR; "
             "it was ignored.");
    vsnprintf(message, sizeof message, fmt, ap);
    emit(level, logger, message);
}

void lsvc__log(int level, const char *logger, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, logger, fmt, ap);
    va_end(ap);
}

void lsvc_log(const lsvc *svc, int level, const char *fmt, ...)
{
    va_list ap;

    if (fmt == NULL)
        return;
    va_start(ap, fmt);
    vlog(level, svc != NULL ? svc->logger : "loopsvc", fmt, ap);
    va_end(ap);
}

/* One write() per line: the kernel keeps a write to a pipe or terminal of
 * up to PIPE_BUF bytes in one piece, so lines of concurrent threads do not
 * interleave. */
static void stderr_sink(int level, const char *logger, const char *message,
                        void *ctx)
{
    char line[LSVC_LOG_MAX + 128];
    struct timespec ts;
    struct tm tm;
    size_t len;
    int n;

    (void)ctx;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    len = strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S", &tm);
    n = snprintf(line + len, sizeof line - len, ".%03ld | %s | %s - %s\n",
                 ts.tv_nsec / 1000000, level_name(level), logger, message);
    if (n < 0)
        return;
    len += (size_t)n < sizeof line - len ? (size_t)n : sizeof line - len - 1;
    line[len - 1] = '\n';
    for (size_t off = 0; off < len;) {
        ssize_t w = write(STDERR_FILENO, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

void lsvc_set_logger(lsvc_log_fn fn, void *ctx)
{
    pthread_mutex_lock(&sink_lock);
    sink_fn = fn != NULL ? fn : stderr_sink;
    sink_ctx = fn != NULL ? ctx : NULL;
    pthread_mutex_unlock(&sink_lock);
}

void lsvc_set_log_level(int level)
{
    pthread_once(&level_once, read_env_level);
    atomic_store(&log_level, level);
}

void lsvc__strerror(int err, char *out, size_t size)
{
    if (strerror_r(err, out, size) != 0)
        snprintf(out, size, "error %d", err);
}

void lsvc__ratelimit_init(struct lsvc_ratelimit *rl, int64_t period_ns)
{
    *rl = (struct lsvc_ratelimit){ .period_ns = period_ns };
}

bool lsvc__ratelimit_admit(struct lsvc_ratelimit *rl, int64_t now_ns,
                           uint64_t *suppressed)
{
    if (rl->primed && now_ns - rl->last_ns < rl->period_ns) {
        rl->suppressed++;
        return false;
    }
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    rl->last_ns = now_ns;
    rl->primed = true;
    return true;
}

/* The value as it may be shown in a log line: at most size - 1 bytes, with
 * anything unprintable as '?', so that a hostile value cannot forge lines
 * or flood the log. */
void lsvc__log_value(char *out, size_t size, const char *value)
{
    size_t i = 0;

    for (; value[i] != '\0' && i + 4 < size; i++)
        out[i] = value[i] >= 0x20 && value[i] < 0x7f ? value[i] : '?';
    out[i] = '\0';
    if (value[i] != '\0')
        strcat(out, "...");
}
