/*
 * loopsvcctl: speaks a loopsvc group's control socket
 * (lsvc_group_set_control_socket) for an operator.
 *
 *   loopsvcctl [-s PATH] [-t SECONDS] COMMAND [ARG...]
 *
 * Sends COMMAND and its ARGs, joined by single spaces, as one line, and
 * prints the reply. Exit status: 0 when the reply is not an error, 1 when
 * it is ("error: ..."), 2 on a usage or connection error.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define LINE_MAX_BYTES 4096
#define MAX_TIMEOUT 86400

static const char usage[] =
    "usage: loopsvcctl [-s PATH] [-t SECONDS] COMMAND [ARG...]\n"
    "  status | metrics | help | wake NAME | pause NAME | resume NAME |\n"
    "  interval NAME SECONDS\n"
    "  -s PATH     the control socket (default: $LOOPSVC_CONTROL_SOCKET)\n"
    "  -t SECONDS  how long to wait for the connection and reply (default: 10)\n";

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "loopsvcctl: %s %s: %s\n", what, path, strerror(errno));
    return EXIT_USAGE;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether argv is a command with the arguments it needs. */
static int known(int argc, char **argv)
{
    static const struct {
        const char *name;
        int min_args, max_args;
    } commands[] = {
        {"status", 0, 0}, {"metrics", 0, 0}, {"help", 0, 0},
        {"wake", 1, 1000}, {"pause", 1, 1000}, {"resume", 1, 1000},
        {"interval", 2, 1000},
    };

    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[0], commands[i].name) == 0)
            return argc - 1 >= commands[i].min_args &&
                   argc - 1 <= commands[i].max_args;
    return 0;
}

/* The command line as one line of the protocol. */
static char *command_line(int argc, char **argv)
{
    size_t len = 1;
    char *line;

    for (int i = 0; i < argc; i++)
        len += strlen(argv[i]) + 1;
    if (len > LINE_MAX_BYTES || (line = malloc(len)) == NULL)
        return NULL;
    line[0] = '\0';
    for (int i = 0; i < argc; i++) {
        strcat(line, argv[i]);
        strcat(line, i + 1 < argc ? " " : "\n");
    }
    return line;
}

/* Connects within the deadline: a server whose queue is full answers
 * EAGAIN, and is asked again every 10 ms. The socket stays
 * non-blocking. */
static int connect_to(const char *path, double deadline)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd, fl;

    if (strlen(path) >= sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(addr.sun_path, path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0)
        return -1;
    if ((fl = fcntl(fd, F_GETFL)) < 0 ||
        fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        goto fail;
    while (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (errno != EAGAIN && errno != EINTR)
            goto fail;
        if (now_s() >= deadline) {
            errno = ETIMEDOUT;
            goto fail;
        }
        poll(NULL, 0, 10);
    }
    return fd;
fail:;
    int err = errno;
    close(fd);
    errno = err;
    return -1;
}

/* Sends text within the deadline. */
static int send_all(int fd, const char *text, double deadline)
{
    size_t len = strlen(text), sent = 0;

    while (sent < len) {
        ssize_t n = send(fd, text + sent, len - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (errno != EAGAIN && errno != EINTR)
            return -1;
        double left = deadline - now_s();
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
    }
    return 0;
}

/* Reads the reply up to its empty line, before the deadline, and prints
 * it without that line. Returns the exit status. */
static int print_reply(int fd, const char *path, double deadline)
{
    size_t len = 0, cap = 4096;
    char *reply = malloc(cap);

    if (reply == NULL)
        return fail("out of memory reading from", path);
    for (;;) {
        if (len >= 2 && reply[len - 1] == '\n' && reply[len - 2] == '\n')
            break;
        if (len == 1 && reply[0] == '\n')
            break;
        double left = deadline - now_s();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = left > 0 ? poll(&p, 1, (int)(left * 1000) + 1) : 0;
        if (ready == 0) {
            free(reply);
            errno = ETIMEDOUT;
            return fail("no reply from", path);
        }
        if (ready < 0 && errno == EINTR)
            continue;
        if (len == cap) {
            char *more = realloc(reply, cap *= 2);
            if (more == NULL) {
                free(reply);
                return fail("out of memory reading from", path);
            }
            reply = more;
        }
        ssize_t n = ready < 0 ? -1 : recv(fd, reply + len, cap - len, 0);
        if (n <= 0) {
            free(reply);
            if (n == 0)
                errno = ECONNRESET;
            return fail("connection closed by", path);
        }
        len += (size_t)n;
    }
    fwrite(reply, 1, len - 1, stdout);
    int status = strncmp(reply, "error:", 6) == 0 ? EXIT_REFUSED : 0;
    free(reply);
    return fflush(stdout) == 0 ? status : EXIT_USAGE;
}

int main(int argc, char **argv)
{
    const char *path = getenv("LOOPSVC_CONTROL_SOCKET");
    double timeout = 10;
    char *end;
    int opt;

    while ((opt = getopt(argc, argv, "+s:t:h")) != -1) {
        switch (opt) {
        case 's':
            path = optarg;
            break;
        case 't':
            timeout = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(timeout > 0) ||
                timeout > MAX_TIMEOUT) {
                fprintf(stderr, "loopsvcctl: -t wants seconds, more than 0 "
                                "and at most %d\n%s", MAX_TIMEOUT, usage);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc || !known(argc - optind, argv + optind)) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    if (path == NULL || *path == '\0') {
        fprintf(stderr, "loopsvcctl: no socket: give -s PATH or set "
                        "LOOPSVC_CONTROL_SOCKET\n");
        return EXIT_USAGE;
    }
    char *line = command_line(argc - optind, argv + optind);
    if (line == NULL) {
        fprintf(stderr, "loopsvcctl: the command is longer than %d bytes\n",
                LINE_MAX_BYTES - 1);
        return EXIT_USAGE;
    }
    double deadline = now_s() + timeout;
    int fd = connect_to(path, deadline);
    if (fd < 0) {
        free(line);
        return fail("cannot connect to", path);
    }
    int status = send_all(fd, line, deadline) == 0
                     ? print_reply(fd, path, deadline)
                     : fail("cannot send to", path);
    free(line);
    close(fd);
    return status;
}
