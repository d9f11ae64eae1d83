/*
 * What the system allows a process that makes thousands of threads, and
 * what this process holds: threads, descriptors.
 *
 * A thread is a task (kernel.threads-max, kernel.pid_max, RLIMIT_NPROC
 * and a cgroup's pids.max count it) and, with the default attributes, a
 * stack of RLIMIT_STACK (often 8 MiB) of address space in two mappings,
 * the stack and its guard page (vm.max_map_count, RLIMIT_AS, and the
 * commit limit when vm.overcommit_memory is 2). Each limit is read with
 * what is already used of it, so that its room, about how many more
 * threads it allows, can be compared with what a measurement needs.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Each limit's name in the output, and its key in the JSON. */
static const struct {
    const char *name, *key;
} lims[LIM_COUNT] = {
    [LIM_THREADS_MAX] = { "kernel.threads-max", "threads_max" },
    [LIM_PID_MAX] = { "kernel.pid_max", "pid_max" },
    [LIM_NPROC] = { "RLIMIT_NPROC", "rlimit_nproc" },
    [LIM_PIDS_CGROUP] = { "cgroup pids.max", "cgroup_pids_max" },
    [LIM_MAP_COUNT] = { "vm.max_map_count", "max_map_count" },
    [LIM_AS] = { "RLIMIT_AS", "rlimit_as_bytes" },
    [LIM_COMMIT] = { "CommitLimit", "commit_limit_bytes" },
};

/* fscanf on a file: how many fields it read; -1 when it cannot open it. */
__attribute__((format(scanf, 2, 3)))
static int scan_file(const char *path, const char *fmt, ...)
{
    FILE *f = fopen(path, "r");
    va_list ap;
    int n;

    if (f == NULL)
        return -1;
    va_start(ap, fmt);
    n = vfscanf(f, fmt, ap);
    va_end(ap);
    fclose(f);
    return n;
}

/* The first number in a file; -1 when it is missing or says "max". */
static long long read_number(const char *path)
{
    long long v;

    return scan_file(path, "%lld", &v) == 1 ? v : -1;
}

long statm_resident_pages(void)
{
    long size, resident;

    return scan_file("/proc/self/statm", "%ld %ld", &size, &resident) == 2 ? resident : -1;
}

/* The number after "key:" in a /proc file of "key: value" lines, or -1. */
static long long read_keyed(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    size_t len = strlen(key);
    char line[256];
    long long v = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, key, len) == 0 && line[len] == ':') {
            v = strtoll(line + len + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static long long lines_of(const char *path)
{
    FILE *f = fopen(path, "r");
    long long n = 0;
    int c;

    if (f == NULL)
        return -1;
    while ((c = getc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* Entries of a /proc/self directory, less "." and "..". */
int proc_count_entries(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;

    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - (strcmp(path, "/proc/self/fd") == 0); /* the DIR's own fd */
}

int proc_threads(void)
{
    return (int)read_keyed("/proc/self/status", "Threads");
}

int proc_fds(void)
{
    return proc_count_entries("/proc/self/fd");
}

/* Tasks on the system: the denominator of /proc/loadavg's fourth field. */
static long long system_tasks(void)
{
    long long running, total;

    return scan_file("/proc/loadavg", "%*f %*f %*f %lld/%lld", &running, &total) == 2
               ? total : -1;
}

/* This process's cgroup's pids.max and pids.current (v2, else v1's pids
 * controller); -1 for "max" or none. */
static void cgroup_pids(long long *max, long long *current)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[512], path[700];

    *max = *current = -1;
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL) {
        char *p = strchr(line, ':'), *q = p ? strchr(p + 1, ':') : NULL;

        if (q == NULL)
            continue;
        q[strcspn(q, "\n")] = '\0';
        if (strncmp(line, "0::", 3) == 0)
            snprintf(path, sizeof path, "/sys/fs/cgroup%s", q + 1);
        else if (strncmp(p, ":pids:", 6) == 0)
            snprintf(path, sizeof path, "/sys/fs/cgroup/pids%s", q + 1);
        else
            continue;
        size_t len = strlen(path);
        snprintf(path + len, sizeof path - len, "/pids.max");
        if ((*max = read_number(path)) < 0)
            continue;
        snprintf(path + len, sizeof path - len, "/pids.current");
        *current = read_number(path);
        break;
    }
    fclose(f);
}

static long long rlimit_value(int resource)
{
    struct rlimit rl;

    if (getrlimit(resource, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return -1;
    return (long long)rl.rlim_cur;
}

static long long room_of(long long limit, long long used, long long per_thread)
{
    if (limit < 0 || used < 0)
        return -1;
    return limit > used ? (limit - used) / per_thread : 0;
}

void limits_read(struct sys_limits *l)
{
    pthread_attr_t attr;
    long long tasks = system_tasks(), page = sysconf(_SC_PAGESIZE);
    long long pids_max, pids_current;

    memset(l, 0, sizeof *l);
    l->stack_size = 8 << 20;
    if (pthread_getattr_default_np(&attr) == 0) {
        pthread_attr_getstacksize(&attr, &l->stack_size);
        pthread_attr_destroy(&attr);
    }
    l->threads = proc_threads();
    long long stack = (long long)l->stack_size + page;

    l->value[LIM_THREADS_MAX] = read_number("/proc/sys/kernel/threads-max");
    l->room[LIM_THREADS_MAX] = room_of(l->value[LIM_THREADS_MAX], tasks, 1);
    l->value[LIM_PID_MAX] = read_number("/proc/sys/kernel/pid_max");
    l->room[LIM_PID_MAX] = room_of(l->value[LIM_PID_MAX], tasks, 1);
    /* Counts every task of the user, which one process cannot see
     * cheaply: this process's own threads stand for them. */
    l->value[LIM_NPROC] = rlimit_value(RLIMIT_NPROC);
    l->room[LIM_NPROC] = room_of(l->value[LIM_NPROC], l->threads, 1);
    cgroup_pids(&pids_max, &pids_current);
    l->value[LIM_PIDS_CGROUP] = pids_max;
    l->room[LIM_PIDS_CGROUP] = room_of(pids_max, pids_current, 1);
    l->value[LIM_MAP_COUNT] = read_number("/proc/sys/vm/max_map_count");
    l->room[LIM_MAP_COUNT] = room_of(l->value[LIM_MAP_COUNT],
                                     lines_of("/proc/self/maps"), 2);
    l->value[LIM_AS] = rlimit_value(RLIMIT_AS);
    l->room[LIM_AS] = room_of(l->value[LIM_AS],
                              read_keyed("/proc/self/status", "VmSize") * 1024, stack);
    l->value[LIM_COMMIT] = -1;
    l->room[LIM_COMMIT] = -1;
    l->overcommit = (int)read_number("/proc/sys/vm/overcommit_memory");
    if (l->overcommit == 2) {
        l->value[LIM_COMMIT] = read_keyed("/proc/meminfo", "CommitLimit") * 1024;
        l->room[LIM_COMMIT] = room_of(l->value[LIM_COMMIT],
                                      read_keyed("/proc/meminfo", "Committed_AS") * 1024,
                                      stack);
    }
}

/* The tightest room, and in *which its limit; -1 when none bounds. */
long long limits_room(const struct sys_limits *l, int *which)
{
    long long least = -1;

    *which = -1;
    for (int i = 0; i < LIM_COUNT; i++)
        if (l->room[i] >= 0 && (least < 0 || l->room[i] < least)) {
            least = l->room[i];
            *which = i;
        }
    return least;
}

static const char *value_text(const struct sys_limits *l, int i, char *buf, size_t len)
{
    if (l->value[i] < 0 && i == LIM_COMMIT)
        snprintf(buf, len, "none (vm.overcommit_memory %d)", l->overcommit);
    else if (l->value[i] < 0)
        snprintf(buf, len, "unlimited");
    else if (i == LIM_AS || i == LIM_COMMIT)
        snprintf(buf, len, "%lld MiB", l->value[i] >> 20);
    else
        snprintf(buf, len, "%lld", l->value[i]);
    return buf;
}

static void say_room(const struct sys_limits *l, int i, char *buf, size_t len)
{
    char v[32];

    snprintf(buf, len, "%s %s allows about %lld more threads", lims[i].name,
             value_text(l, i, v, sizeof v), l->room[i]);
}

/* Whether `threads` more threads fit every limit; else why not. */
bool limits_allow(const struct sys_limits *l, size_t threads, char *why, size_t len)
{
    int which;
    long long room = limits_room(l, &which);

    if (room < 0 || (unsigned long long)room >= threads)
        return true;
    say_room(l, which, why, len);
    return false;
}

void limits_print(const struct sys_limits *l)
{
    char v[32], why[160];
    int which;

    printf("   limits:");
    for (int i = 0; i < LIM_COUNT; i++)
        printf("%s%s %s", i == 0 ? " " : i == LIM_MAP_COUNT ? ",\n           " : ", ",
               lims[i].name, value_text(l, i, v, sizeof v));
    printf("; default stack %zu KiB\n", l->stack_size >> 10);
    if (limits_room(l, &which) < 0) {
        printf("   none of them bounds the number of threads here\n");
        return;
    }
    say_room(l, which, why, sizeof why);
    printf("   tightest: %s\n", why);
}

void limits_json(const struct sys_limits *l)
{
    int which;
    long long room = limits_room(l, &which);

    printf(", \"limits\": {");
    for (int i = 0; i < LIM_COUNT; i++) {
        if (l->value[i] < 0)
            printf("\"%s\": null, ", lims[i].key);
        else
            printf("\"%s\": %lld, ", lims[i].key, l->value[i]);
    }
    printf("\"stack_size\": %zu, \"overcommit_memory\": %d, ", l->stack_size, l->overcommit);
    if (room < 0)
        printf("\"room_threads\": null, \"tightest\": null}");
    else
        printf("\"room_threads\": %lld, \"tightest\": \"%s\"}", room, lims[which].name);
}

/* After a thread could not be made (EAGAIN: a task limit, or glibc's word
 * for a stack it could not map; ENOMEM): the limits with the least room
 * left now, tightest first. */
void limits_blame(int err, const char *what)
{
    struct sys_limits l;
    bool used[LIM_COUNT] = { false };
    int told = 0;

    if (err != EAGAIN && err != ENOMEM)
        return;
    limits_read(&l);
    fprintf(stderr, "loopsvc-bench: %s: %s; the limits likely at fault, tightest first:",
            what, strerror(err));
    for (; told < 3; told++) {
        int best = -1;
        char why[160];

        for (int i = 0; i < LIM_COUNT; i++)
            if (!used[i] && l.room[i] >= 0 && (best < 0 || l.room[i] < l.room[best]))
                best = i;
        if (best < 0)
            break;
        used[best] = true;
        say_room(&l, best, why, sizeof why);
        fprintf(stderr, "%s %s", told ? ";" : "", why);
    }
    if (told == 0)
        fprintf(stderr, " none bounds threads here; look at free memory and the "
                "container's own limits");
    fputc('\n', stderr);
}
