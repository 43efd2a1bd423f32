/* bench/tcpbench.c: the opaque-TCP benchmark's backends and load generators.
 *
 * Owns: every byte the opaque benchmark (bench/opaque.sh) sends and receives. opaque.sh
 * compiles it with gcc, runs it inside its network namespace, pins it and reads its CPU
 * time; this program only talks TCP. One thread, one epoll loop (serve, bulk, pingpong) or
 * one blocking socket at a time (banner). Bench-only code: not part of spoke's build.
 *
 *   tcpbench serve --sink PORT --echo PORT --banner PORT
 *       sink:   reads and discards (MSG_TRUNC: no copy to user space); at the client's
 *               half-close answers the byte count it received ("<n>\n") and closes.
 *       echo:   writes back every byte it reads; reads only while its write-back is done
 *               (backpressure), closes after the client's EOF.
 *       banner: server speaks first: "220 tcpbench ready\r\n" on accept, then discards.
 *   tcpbench bulk --addr IP:PORT [--conns N] [--duration S]
 *       N connections each stream to a sink for S seconds (sendfile from a 1 MiB memfd, so
 *       the sender copies nothing either), then shut down their write side and wait for
 *       the count, which must equal what they sent.
 *   tcpbench pingpong --addr IP:PORT [--conns K] [--duration S] [--warmup S] [--size B]
 *       K connections, each with one B-byte message in flight to an echo backend, sent again
 *       as soon as all of it has come back (checked byte for byte): closed loop, like wrk.
 *   tcpbench banner --addr IP:PORT [--count M] [--timeout S] [--budget S]
 *       M times, one after another: connect, send nothing, time until the first byte of
 *       the banner arrives (waiting S seconds at most each); no new attempt after --budget
 *       seconds.
 *
 * Every client prints one JSON object on stdout, with its own CPU time (getrusage) so
 * opaque.sh can tell whether the generator was what limited a run. The first byte any
 * client sends is 0x80, which no HTTP request or TLS record starts with.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BULK_FILE (1 << 20)
#define MAX_EVENTS 256
static const char BANNER[] = "220 tcpbench ready\r\n";

static void die(const char *what) {
    fprintf(stderr, "tcpbench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void nonblocking(int fd) {
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
}

static struct sockaddr_in parse_addr(const char *text) {
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof host) {
        fprintf(stderr, "tcpbench: bad address '%s' (want IP:PORT)\n", text);
        exit(2);
    }
    memcpy(host, text, colon - text);
    host[colon - text] = 0;
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "tcpbench: bad IPv4 address '%s'\n", host);
        exit(2);
    }
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    return sa;
}

/* A connection in progress (blocking connect would serialise N connects, which is fine
 * for a few hundred, and keeps the error handling in one place). */
static int connect_to(const struct sockaddr_in *sa) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void epoll_set(int ep, int op, int fd, uint32_t events, void *ptr) {
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(ep, op, fd, &ev) < 0) die("epoll_ctl");
}

/* ------------------------------------------------------------------ serve */

enum kind { LISTEN_SINK, LISTEN_ECHO, LISTEN_BANNER, SINK, ECHO, BANNER_CONN };

struct sconn {
    enum kind kind;
    int fd;
    uint64_t count;     /* sink: bytes received */
    size_t len, off;    /* echo: pending bytes in buf[off..len) */
    char buf[65536];
};

static char discard[1 << 20]; /* never touched: MSG_TRUNC discards in the kernel */

static void sclose(int ep, struct sconn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

static int listener(int port, enum kind kind, int ep) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_ANY); /* 127.0.0.x inside the namespace */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(fd, 1024) < 0) die("listen");
    nonblocking(fd);
    struct sconn *l = calloc(1, sizeof *l);
    l->kind = kind;
    l->fd = fd;
    epoll_set(ep, EPOLL_CTL_ADD, fd, EPOLLIN, l);
    return fd;
}

static void accept_all(int ep, struct sconn *l) {
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sconn *c = calloc(1, sizeof *c);
        c->fd = fd;
        c->kind = l->kind == LISTEN_SINK ? SINK : l->kind == LISTEN_ECHO ? ECHO : BANNER_CONN;
        if (c->kind == BANNER_CONN &&
            write(fd, BANNER, sizeof BANNER - 1) != (ssize_t)(sizeof BANNER - 1)) {
            close(fd);
            free(c);
            continue;
        }
        epoll_set(ep, EPOLL_CTL_ADD, fd, EPOLLIN, c);
    }
}

static void on_sink(int ep, struct sconn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, discard, sizeof discard, MSG_TRUNC);
        if (n > 0) {
            c->count += (uint64_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n == 0) { /* half-close: answer the count (a few bytes fit any send buffer) */
            char text[32];
            int len = snprintf(text, sizeof text, "%llu\n", (unsigned long long)c->count);
            if (write(c->fd, text, len) != len) fprintf(stderr, "tcpbench: short count write\n");
        }
        sclose(ep, c);
        return;
    }
}

/* Level-triggered: one read per readiness (epoll says again when more is there), written
 * back at once; only a write-back that does not fit switches the interest to EPOLLOUT. */
static void on_echo(int ep, struct sconn *c, uint32_t events) {
    int was_waiting = c->off < c->len;
    if (was_waiting) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        ssize_t n = write(c->fd, c->buf + c->off, c->len - c->off);
        if (n < 0 && errno != EAGAIN) { sclose(ep, c); return; }
        if (n > 0) c->off += (size_t)n;
    } else {
        ssize_t n = read(c->fd, c->buf, sizeof c->buf);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) { sclose(ep, c); return; } /* EOF: nothing is pending */
        c->off = 0;
        c->len = (size_t)n;
        ssize_t w = write(c->fd, c->buf, c->len);
        if (w < 0 && errno != EAGAIN) { sclose(ep, c); return; }
        if (w > 0) c->off = (size_t)w;
    }
    int waiting = c->off < c->len;
    if (waiting != was_waiting)
        epoll_set(ep, EPOLL_CTL_MOD, c->fd, waiting ? EPOLLOUT : EPOLLIN, c);
}

static void on_banner(int ep, struct sconn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, discard, sizeof discard, MSG_TRUNC);
        if (n > 0) continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        sclose(ep, c);
        return;
    }
}

__attribute__((noreturn)) static void cmd_serve(int sink, int echo, int banner) {
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    listener(sink, LISTEN_SINK, ep);
    listener(echo, LISTEN_ECHO, ep);
    listener(banner, LISTEN_BANNER, ep);
    fprintf(stderr, "tcpbench: serving sink %d, echo %d, banner %d\n", sink, echo, banner);
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct sconn *c = evs[i].data.ptr;
            switch (c->kind) {
            case LISTEN_SINK: case LISTEN_ECHO: case LISTEN_BANNER: accept_all(ep, c); break;
            case SINK: on_sink(ep, c); break;
            case ECHO: on_echo(ep, c, evs[i].events); break;
            case BANNER_CONN: on_banner(ep, c); break;
            }
        }
    }
}

/* ------------------------------------------------------------------ bulk */

struct bconn {
    int fd;
    int state;          /* 0 sending, 1 waiting for the count, 2 done */
    off_t off;          /* position in the memfd */
    uint64_t sent;
    char ack[32];
    size_t acklen;
};

static int cmd_bulk(struct sockaddr_in sa, int conns, double duration) {
    int mfd = memfd_create("tcpbench-bulk", 0);
    if (mfd < 0) die("memfd_create");
    char *pattern = malloc(BULK_FILE);
    for (int i = 0; i < BULK_FILE; i++) pattern[i] = (char)(0x80 | (i * 7 & 0x7f));
    if (write(mfd, pattern, BULK_FILE) != BULK_FILE) die("memfd write");
    free(pattern);

    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct bconn *cs = calloc(conns, sizeof *cs);
    int errors = 0, open = 0, mismatched = 0;
    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(duration * 1e9);
    uint64_t give_up = deadline + 20000000000ull, last_done = t0;
    for (int i = 0; i < conns; i++) {
        cs[i].fd = connect_to(&sa);
        if (cs[i].fd < 0) { errors++; cs[i].state = 2; continue; }
        nonblocking(cs[i].fd);
        epoll_set(ep, EPOLL_CTL_ADD, cs[i].fd, EPOLLOUT, &cs[i]);
        open++;
    }
    struct epoll_event evs[MAX_EVENTS];
    while (open > 0 && now_ns() < give_up) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 1000);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct bconn *c = evs[i].data.ptr;
            if (c->state == 0) {
                ssize_t w = sendfile(c->fd, mfd, &c->off, BULK_FILE - c->off);
                if (w > 0) {
                    c->sent += (uint64_t)w;
                    if (c->off == BULK_FILE) c->off = 0;
                } else if (w < 0 && errno != EAGAIN) {
                    errors++; c->state = 2; open--; close(c->fd); continue;
                }
                if (now_ns() >= deadline) {
                    shutdown(c->fd, SHUT_WR);
                    c->state = 1;
                    epoll_set(ep, EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
                }
            } else if (c->state == 1) {
                ssize_t r = read(c->fd, c->ack + c->acklen, sizeof c->ack - 1 - c->acklen);
                if (r < 0 && errno == EAGAIN) continue;
                if (r > 0) { c->acklen += (size_t)r; if (c->acklen < sizeof c->ack - 1) continue; }
                c->ack[c->acklen] = 0;
                if (r < 0 || c->acklen == 0) errors++;
                else if (strtoull(c->ack, NULL, 10) != c->sent) mismatched++;
                c->state = 2;
                open--;
                last_done = now_ns();
                close(c->fd);
            }
        }
    }
    errors += open; /* still unfinished 20 s after the deadline */
    uint64_t bytes = 0;
    for (int i = 0; i < conns; i++) bytes += cs[i].sent;
    double secs = (last_done - t0) / 1e9;
    printf("{\"conns\":%d,\"duration_s\":%.3f,\"bytes\":%llu,\"seconds\":%.4f,"
           "\"mib_per_s\":%.1f,\"errors\":%d,\"count_mismatch\":%d,\"gen_cpu_s\":%.3f}\n",
           conns, duration, (unsigned long long)bytes, secs,
           secs > 0 ? bytes / 1048576.0 / secs : 0.0, errors, mismatched,
           cpu_seconds() - cpu0);
    return errors || mismatched ? 1 : 0;
}

/* ------------------------------------------------------------------ pingpong */

struct pconn {
    int fd;
    int done;
    size_t got;
    uint64_t sent_at;
    char *msg, *back;
};

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *v, size_t n, double p) {
    if (n == 0) return -1;
    size_t rank = (size_t)((p / 100.0) * n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1] / 1000.0;
}

static int cmd_pingpong(struct sockaddr_in sa, int conns, double duration, double warmup,
                        int size) {
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct pconn *cs = calloc(conns, sizeof *cs);
    size_t cap = 1 << 20, nlat = 0, total = 0;
    uint64_t *lat = malloc(cap * sizeof *lat);
    int errors = 0, open = 0;
    for (int i = 0; i < conns; i++) {
        cs[i].msg = malloc(size);
        cs[i].back = malloc(size);
        for (int j = 0; j < size; j++) cs[i].msg[j] = (char)(0x80 | ((i * 31 + j) & 0x7f));
        cs[i].fd = connect_to(&sa);
        if (cs[i].fd < 0) { errors++; cs[i].done = 1; continue; }
        nonblocking(cs[i].fd);
        epoll_set(ep, EPOLL_CTL_ADD, cs[i].fd, EPOLLIN, &cs[i]);
        open++;
    }
    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns(), measure_from = t0 + (uint64_t)(warmup * 1e9);
    uint64_t end = measure_from + (uint64_t)(duration * 1e9), give_up = end + 10000000000ull;
    double cpu_measure = -1;
    for (int i = 0; i < conns; i++) {
        if (cs[i].done) continue;
        cs[i].sent_at = now_ns();
        if (write(cs[i].fd, cs[i].msg, size) != size) { errors++; cs[i].done = 1; open--; }
    }
    struct epoll_event evs[MAX_EVENTS];
    while (open > 0) {
        uint64_t now = now_ns();
        if (now >= give_up) break;
        if (cpu_measure < 0 && now >= measure_from) cpu_measure = cpu_seconds();
        int n = epoll_wait(ep, evs, MAX_EVENTS, 1000);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct pconn *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->back + c->got, size - c->got);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0) { errors++; c->done = 1; open--; close(c->fd); continue; }
            c->got += (size_t)r;
            if (c->got < (size_t)size) continue;
            uint64_t t = now_ns();
            if (memcmp(c->msg, c->back, size) != 0) errors++;
            c->got = 0;
            total++;
            if (c->sent_at >= measure_from && t <= end) {
                if (nlat == cap) { cap *= 2; lat = realloc(lat, cap * sizeof *lat); }
                lat[nlat++] = t - c->sent_at;
            }
            if (t >= end) { c->done = 1; open--; close(c->fd); continue; }
            c->sent_at = t;
            if (write(c->fd, c->msg, size) != size) { errors++; c->done = 1; open--; close(c->fd); }
        }
    }
    errors += open;
    double total_s = (now_ns() - t0) / 1e9;
    double cpu = cpu_seconds() - (cpu_measure < 0 ? cpu0 : cpu_measure);
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    printf("{\"conns\":%d,\"size\":%d,\"warmup_s\":%.3f,\"duration_s\":%.3f,"
           "\"round_trips\":%zu,\"rt_per_s\":%.1f,\"total_round_trips\":%zu,\"total_s\":%.3f,"
           "\"p50_us\":%.1f,\"p90_us\":%.1f,"
           "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,\"errors\":%d,\"gen_cpu_s\":%.3f}\n",
           conns, size, warmup, duration, nlat, nlat / duration, total, total_s, pct_us(lat, nlat, 50),
           pct_us(lat, nlat, 90), pct_us(lat, nlat, 99), pct_us(lat, nlat, 99.9),
           nlat ? lat[nlat - 1] / 1000.0 : -1.0, errors, cpu);
    return errors ? 1 : 0;
}

/* ------------------------------------------------------------------ banner */

static int cmd_banner(struct sockaddr_in sa, int count, double timeout, double budget) {
    uint64_t *v = calloc(count, sizeof *v);
    int ok = 0, errors = 0, tried = 0;
    uint64_t stop_at = now_ns() + (uint64_t)(budget * 1e9);
    for (int i = 0; i < count && (i == 0 || now_ns() < stop_at); i++) {
        tried++;
        uint64_t t0 = now_ns();
        int fd = connect_to(&sa);
        if (fd < 0) { errors++; continue; }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char buf[64];
        ssize_t n = -1;
        if (poll(&p, 1, (int)(timeout * 1000)) == 1) n = read(fd, buf, sizeof buf);
        uint64_t t1 = now_ns();
        close(fd);
        if (n >= 3 && memcmp(buf, "220", 3) == 0) v[ok++] = t1 - t0;
        else errors++;
        struct timespec gap = {0, 20000000}; /* 20 ms apart: one connection at a time */
        nanosleep(&gap, NULL);
    }
    uint64_t *sorted = malloc((ok ? ok : 1) * sizeof *sorted);
    memcpy(sorted, v, ok * sizeof *v);
    qsort(sorted, ok, sizeof *sorted, cmp_u64);
    printf("{\"count\":%d,\"tried\":%d,\"ok\":%d,\"errors\":%d,\"min_us\":%.1f,\"median_us\":%.1f,"
           "\"max_us\":%.1f,\"samples_us\":[", count, tried, ok, errors, ok ? sorted[0] / 1000.0 : -1.0,
           pct_us(sorted, ok, 50), ok ? sorted[ok - 1] / 1000.0 : -1.0);
    for (int i = 0; i < ok; i++) printf("%s%.1f", i ? "," : "", v[i] / 1000.0);
    printf("]}\n");
    return errors ? 1 : 0;
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
    fprintf(stderr,
            "usage: tcpbench serve --sink PORT --echo PORT --banner PORT\n"
            "       tcpbench bulk --addr IP:PORT [--conns N] [--duration S]\n"
            "       tcpbench pingpong --addr IP:PORT [--conns K] [--duration S] [--warmup S]"
            " [--size B]\n"
            "       tcpbench banner --addr IP:PORT [--count M] [--timeout S] [--budget S]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    signal(SIGPIPE, SIG_IGN);
    const char *addr = NULL;
    int sink = 0, echo = 0, banner = 0, conns = 0, size = 64, count = 10;
    double duration = 3, warmup = 0.5, timeout = 15, budget = 60;
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(k, "--addr")) addr = v;
        else if (!strcmp(k, "--sink")) sink = atoi(v);
        else if (!strcmp(k, "--echo")) echo = atoi(v);
        else if (!strcmp(k, "--banner")) banner = atoi(v);
        else if (!strcmp(k, "--conns")) conns = atoi(v);
        else if (!strcmp(k, "--size")) size = atoi(v);
        else if (!strcmp(k, "--count")) count = atoi(v);
        else if (!strcmp(k, "--duration")) duration = atof(v);
        else if (!strcmp(k, "--warmup")) warmup = atof(v);
        else if (!strcmp(k, "--timeout")) timeout = atof(v);
        else if (!strcmp(k, "--budget")) budget = atof(v);
        else usage();
        i++;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve")) {
        if (sink <= 0 || echo <= 0 || banner <= 0) usage();
        cmd_serve(sink, echo, banner);
    }
    if (!addr || duration <= 0 || warmup < 0 || size <= 0 || count <= 0) usage();
    struct sockaddr_in sa = parse_addr(addr);
    if (!strcmp(cmd, "bulk")) return cmd_bulk(sa, conns > 0 ? conns : 8, duration);
    if (!strcmp(cmd, "pingpong")) return cmd_pingpong(sa, conns > 0 ? conns : 64, duration, warmup, size);
    if (!strcmp(cmd, "banner")) return cmd_banner(sa, count, timeout, budget);
    usage();
    return 2;
}
