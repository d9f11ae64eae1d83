/*
 * Settings from the environment: LOOPSVC_<NAME>_ENABLED and
 * LOOPSVC_<NAME>_LOOP_SECONDS, read at each group start. They let an
 * operator turn a chore off or change its interval without a rebuild.
 *
 * Parsing is strict: a value is used only when the whole of it is a valid
 * setting. Anything else ("5s", " 5", "nan", "1e999") is reported with the
 * variable's name and ignored, never half-used: a typo must not turn a 5 s
 * chore into a 0 s one.
 */
#include "internal.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ENABLED_SUFFIX "_ENABLED"
#define LOOP_SECONDS_SUFFIX "_LOOP_SECONDS"

/* Upper case, and every byte but an ASCII letter or digit an underscore,
 * whatever the locale: the name is part of a contract with the shell. */
static void env_name(char *out, const char *name)
{
    for (; *name != '\0'; name++, out++) {
        char c = *name;

        if (c >= 'a' && c <= 'z')
            *out = (char)(c - 'a' + 'A');
        else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            *out = c;
        else
            *out = '_';
    }
}

/* Both names in one block, made at create so that a group start, which
 * reads them, allocates nothing. */
int lsvc__settings_names(lsvc *svc)
{
    size_t len = strlen(svc->name);
    size_t prefix = sizeof "LOOPSVC_" - 1 + len;
    char *block = malloc(prefix + sizeof ENABLED_SUFFIX + prefix +
                         sizeof LOOP_SECONDS_SUFFIX);

    if (block == NULL)
        return ENOMEM;
    svc->env_enabled = block;
    svc->env_loop_seconds = block + prefix + sizeof ENABLED_SUFFIX;
    for (int i = 0; i < 2; i++) {
        char *p = i == 0 ? svc->env_enabled : svc->env_loop_seconds;

        memcpy(p, "LOOPSVC_", sizeof "LOOPSVC_" - 1);
        env_name(p + sizeof "LOOPSVC_" - 1, svc->name);
        strcpy(p + prefix, i == 0 ? ENABLED_SUFFIX : LOOP_SECONDS_SUFFIX);
    }
    return 0;
}

static void reject(const lsvc *svc, const char *var, const char *value,
                   const char *wanted, const char *kept)
{
    char shown[48];

    lsvc__log_value(shown, sizeof shown, value);
    lsvc__log(LSVC_LOG_WARNING, svc->logger,
              "Ignoring %s=\"%s\": it is not %s. Keeping %s.",
              var, shown, wanted, kept);
}

/* 0, 1, false or true, in any case. */
static int parse_bool(const char *s, bool *out)
{
    if (strcmp(s, "1") == 0 || strcasecmp(s, "true") == 0)
        *out = true;
    else if (strcmp(s, "0") == 0 || strcasecmp(s, "false") == 0)
        *out = false;
    else
        return EINVAL;
    return 0;
}

/* digits[.digits][e[+|-]digits], or .digits with the same tail. The
 * grammar is checked here because strtod() accepts more: leading blanks,
 * signs, hex, "inf" and "nan". */
static bool is_decimal(const char *s)
{
    size_t digits = 0;

    for (; *s >= '0' && *s <= '9'; s++)
        digits++;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++)
            digits++;
    if (digits == 0)
        return false;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
}

/* strtod() runs in the C locale: the server's LC_NUMERIC must not make
 * "2.5" mean 2. */
int lsvc__parse_decimal(const char *s, double *out)
{
    char *end;

    if (!is_decimal(s))
        return EINVAL;
    locale_t previous = lsvc__use_c_locale();
    errno = 0;
    double value = strtod(s, &end);
    int range = errno;
    lsvc__restore_locale(previous);
    /* ERANGE is an overflow to HUGE_VAL ("1e999") or an underflow to or
     * near 0 ("1e-999"): neither is what was written. */
    if (*end != '\0' || range != 0)
        return EINVAL;
    *out = value;
    return 0;
}

/* Seconds, in the range lsvc_create accepts. */
static int parse_seconds(const char *s, int64_t *out)
{
    double seconds;
    int rc = lsvc__parse_decimal(s, &seconds);

    return rc != 0 ? rc : lsvc__seconds_to_ns(seconds, false, out);
}

void lsvc__settings_read(const lsvc *svc, struct lsvc_settings *out)
{
    const char *enabled = getenv(svc->env_enabled);
    const char *seconds = getenv(svc->env_loop_seconds);
    char wanted[64], kept[64];

    out->enabled = true;
    out->interval_ns = svc->code_interval_ns;
    if (enabled != NULL && parse_bool(enabled, &out->enabled) != 0)
        reject(svc, svc->env_enabled, enabled, "0, 1, false or true",
               "the service enabled");
    /* Checked also for a disabled service: the typo should show before
     * someone turns the service back on. */
    if (seconds != NULL && (parse_seconds(seconds, &out->interval_ns) != 0 ||
                            !lsvc__interval_fits(svc, out->interval_ns))) {
        snprintf(wanted, sizeof wanted,
                 "a number of seconds from 1e-09 to %.0f", LSVC_MAX_SECONDS);
        snprintf(kept, sizeof kept, "its interval of %g s",
                 (double)svc->code_interval_ns / 1e9);
        reject(svc, svc->env_loop_seconds, seconds, wanted, kept);
        out->interval_ns = svc->code_interval_ns;
        seconds = NULL;
    }
    if (!out->enabled)
        lsvc__log(LSVC_LOG_INFO, svc->logger,
                  "%s is disabled by %s=%s: not starting it.",
                  svc->name, svc->env_enabled, enabled);
    else if (seconds != NULL)
        lsvc__log(LSVC_LOG_INFO, svc->logger,
                  "%s=%s sets the interval of %s to %g s (the code says %g s).",
                  svc->env_loop_seconds, seconds, svc->name,
                  (double)out->interval_ns / 1e9,
                  (double)svc->code_interval_ns / 1e9);
}
