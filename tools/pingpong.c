/*
 * pingpong: an independent check of `ipc bench`, written in plain C with
 * bare system calls and no ipckit code. Two processes (fork), pinned to
 * two CPUs, bounce a message; every round trip is timed on its own with
 * clock_gettime(CLOCK_MONOTONIC), as `ipc bench` does, and the program
 * prints min, p50 and p99 in nanoseconds.
 *
 *   cc -O2 -o pingpong tools/pingpong.c
 *   ./pingpong floor [SECONDS] [CPU_A CPU_B]   one cache line, busy-polled
 *   ./pingpong MECH block|spin [SIZE] [SECONDS]
 *       MECH: pipe fifo unix unix-dgram unix-seq tcp udp mq sysv-mq
 *       the same ping-pong with bare system calls of SIZE bytes (default
 *       64), no framing and no checks: read/write, send/recv, mq_send/
 *       mq_receive, msgsnd/msgrcv; "spin" polls with non-blocking calls
 *       (O_NONBLOCK, MSG_DONTWAIT, IPC_NOWAIT) instead of sleeping.
 *
 * Not run by CI: a tool for comparing figures on one machine in the same
 * minutes (see the README and the bench issue).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/msg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    if (sched_setaffinity(0, sizeof s, &s) != 0) {
        perror("sched_setaffinity");
        exit(2);
    }
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *rtt, size_t n) {
    qsort(rtt, n, sizeof *rtt, cmp);
    printf("%s: %zu round trips, min %llu ns, p50 %llu ns, p99 %llu ns\n", what, n,
           (unsigned long long)rtt[0], (unsigned long long)rtt[n / 2],
           (unsigned long long)rtt[n * 99 / 100]);
}

/* The pause between two polls of a cache line, as Rust's
 * std::hint::spin_loop (and ipc bench) does: without it the polling CPU
 * keeps taking the line back from the writer, which on the machine this was
 * written on made the round trip 1.6 times longer (160 against 100 ns). */
static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* One cache line: the parent writes an odd number, the child answers with
 * the next even one; ~0 ends it. */
static int floor_run(double seconds, int a, int b) {
    _Atomic uint64_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (word == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    atomic_store(word, 0);
    pid_t child = fork();
    if (child == 0) {
        pin(b);
        uint64_t seen = 0;
        for (;;) {
            uint64_t v;
            while ((v = atomic_load_explicit(word, memory_order_acquire)) == seen ||
                   (v % 2 == 0 && v != UINT64_MAX))
                relax();
            if (v == UINT64_MAX)
                _exit(0);
            seen = v + 1;
            atomic_store_explicit(word, seen, memory_order_release);
        }
    }
    pin(a);
    size_t cap = 1 << 24, n = 0;
    uint64_t *rtt = malloc(cap * sizeof *rtt);
    uint64_t start = now_ns(), warm = start + (uint64_t)(seconds * 2e8),
             end = start + (uint64_t)(seconds * 1e9), v = 0;
    for (;;) {
        uint64_t t0 = now_ns();
        atomic_store_explicit(word, v + 1, memory_order_release);
        while (atomic_load_explicit(word, memory_order_acquire) != v + 2)
            relax();
        uint64_t t1 = now_ns();
        v += 2;
        if (t0 >= warm && n < cap)
            rtt[n++] = t1 - t0;
        if (t1 >= end)
            break;
    }
    atomic_store(word, UINT64_MAX);
    waitpid(child, NULL, 0);
    report("floor (C)", rtt, n);
    return 0;
}

/* One end of a mechanism: how to send and receive SIZE bytes. */
struct end {
    int fd_in, fd_out; /* pipes, FIFOs, sockets */
    mqd_t mq_in, mq_out;
    int msq;           /* System V queue */
    long type_in, type_out;
    int spin;
};

static void die(const char *what) {
    perror(what);
    exit(2);
}

static int nonblock(int fd) {
    return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static const char *mech;
static size_t size = 64;

static int is(const char *m) { return strcmp(mech, m) == 0; }

/* Sends one message: a full write for streams, one datagram otherwise. */
static void put(struct end *e, char *buf) {
    if (is("mq")) {
        while (mq_send(e->mq_out, buf, size, 0) != 0)
            if (errno != EAGAIN) die("mq_send");
        return;
    }
    if (is("sysv-mq")) {
        long *t = (long *)(buf - sizeof(long));
        *t = e->type_out;
        while (msgsnd(e->msq, t, size, e->spin ? IPC_NOWAIT : 0) != 0)
            if (errno != EAGAIN) die("msgsnd");
        return;
    }
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(e->fd_out, buf + done, size - done);
        if (n < 0) {
            if (errno == EAGAIN) continue;
            die("write");
        }
        done += (size_t)n;
    }
}

/* Receives one message, polling with non-blocking calls when spinning. */
static void get(struct end *e, char *buf) {
    if (is("mq")) {
        while (mq_receive(e->mq_in, buf, size, NULL) < 0)
            if (errno != EAGAIN) die("mq_receive");
        return;
    }
    if (is("sysv-mq")) {
        long *t = (long *)(buf - sizeof(long));
        while (msgrcv(e->msq, t, size, e->type_in, e->spin ? IPC_NOWAIT : 0) < 0)
            if (errno != ENOMSG && errno != EAGAIN) die("msgrcv");
        return;
    }
    int stream = is("pipe") || is("fifo") || is("unix") || is("tcp");
    size_t done = 0;
    while (done < size) {
        ssize_t n = read(e->fd_in, buf + done, size - done);
        if (n < 0) {
            if (errno == EAGAIN) continue;
            die("read");
        }
        if (n == 0) exit(0);
        done += stream ? (size_t)n : size;
    }
}

/* Makes both ends: [0] the parent's, [1] the child's (connected after
 * fork where the mechanism needs a listener). */
static void setup(struct end e[2], int spin, const char *dir) {
    memset(e, 0, 2 * sizeof *e);
    e[0].spin = e[1].spin = spin;
    if (is("pipe")) {
        int a[2], b[2];
        if (pipe(a) || pipe(b)) die("pipe");
        e[0].fd_out = a[1]; e[1].fd_in = a[0];
        e[1].fd_out = b[1]; e[0].fd_in = b[0];
    } else if (is("fifo")) {
        char p1[256], p2[256];
        snprintf(p1, sizeof p1, "%s/a2b", dir);
        snprintf(p2, sizeof p2, "%s/b2a", dir);
        if (mkfifo(p1, 0600) || mkfifo(p2, 0600)) die("mkfifo");
        /* O_RDWR opens never block; each side uses one direction. */
        e[0].fd_out = open(p1, O_RDWR); e[1].fd_in = open(p1, O_RDWR);
        e[1].fd_out = open(p2, O_RDWR); e[0].fd_in = open(p2, O_RDWR);
        unlink(p1); unlink(p2);
    } else if (is("unix") || is("unix-dgram") || is("unix-seq")) {
        int type = is("unix") ? SOCK_STREAM : is("unix-dgram") ? SOCK_DGRAM : SOCK_SEQPACKET;
        int sv[2];
        if (socketpair(AF_UNIX, type, 0, sv)) die("socketpair");
        e[0].fd_in = e[0].fd_out = sv[0];
        e[1].fd_in = e[1].fd_out = sv[1];
    } else if (is("tcp") || is("udp")) {
        int type = is("tcp") ? SOCK_STREAM : SOCK_DGRAM;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        int l = socket(AF_INET, type, 0), c = socket(AF_INET, type, 0);
        if (bind(l, (void *)&a, sizeof a) || getsockname(l, (void *)&a, &len)) die("bind");
        if (type == SOCK_STREAM) {
            if (listen(l, 1) || connect(c, (void *)&a, sizeof a)) die("connect");
            int s = accept(l, NULL, NULL), one = 1;
            setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            close(l);
            l = s;
        } else {
            struct sockaddr_in b = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            socklen_t bl = sizeof b;
            if (bind(c, (void *)&b, sizeof b) || getsockname(c, (void *)&b, &bl)) die("bind");
            if (connect(l, (void *)&b, sizeof b) || connect(c, (void *)&a, sizeof a)) die("connect");
        }
        e[0].fd_in = e[0].fd_out = l;
        e[1].fd_in = e[1].fd_out = c;
    } else if (is("mq")) {
        char n1[64], n2[64];
        snprintf(n1, sizeof n1, "/pingpong-%d-a", getpid());
        snprintf(n2, sizeof n2, "/pingpong-%d-b", getpid());
        struct mq_attr at = {.mq_maxmsg = 10, .mq_msgsize = (long)size};
        int fl = O_RDWR | O_CREAT | O_EXCL | (spin ? O_NONBLOCK : 0);
        mqd_t q1 = mq_open(n1, fl, 0600, &at), q2 = mq_open(n2, fl, 0600, &at);
        if (q1 == (mqd_t)-1 || q2 == (mqd_t)-1) die("mq_open");
        mq_unlink(n1); mq_unlink(n2);
        e[0].mq_out = q1; e[1].mq_in = q1;
        e[1].mq_out = q2; e[0].mq_in = q2;
        return;
    } else if (is("sysv-mq")) {
        int q = msgget(IPC_PRIVATE, 0600);
        if (q < 0) die("msgget");
        e[0].msq = e[1].msq = q;
        e[0].type_out = e[1].type_in = 1;
        e[1].type_out = e[0].type_in = 2;
        return;
    } else {
        fprintf(stderr, "unknown mechanism %s\n", mech);
        exit(2);
    }
    if (spin)
        for (int i = 0; i < 2; i++) {
            nonblock(e[i].fd_in);
            nonblock(e[i].fd_out);
        }
}

static int mech_run(const char *how, double seconds, int a, int b) {
    int spin = strcmp(how, "spin") == 0;
    char dir[] = "/tmp/pingpong-XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp");
    struct end e[2];
    setup(e, spin, dir);
    rmdir(dir);
    /* Room for System V's leading type word before the payload. */
    char *mem = calloc(1, size + sizeof(long)), *buf = mem + sizeof(long);
    pid_t child = fork();
    if (child == 0) {
        pin(b);
        for (;;) {
            get(&e[1], buf);
            if (buf[0] == 'E') _exit(0);
            put(&e[1], buf);
        }
    }
    pin(a);
    size_t cap = 1 << 24, n = 0;
    uint64_t *rtt = malloc(cap * sizeof *rtt);
    uint64_t start = now_ns(), warm = start + (uint64_t)(seconds * 2e8),
             end = start + (uint64_t)(seconds * 1e9);
    for (;;) {
        buf[0] = 'P';
        uint64_t t0 = now_ns();
        put(&e[0], buf);
        get(&e[0], buf);
        uint64_t t1 = now_ns();
        if (t0 >= warm && n < cap)
            rtt[n++] = t1 - t0;
        if (t1 >= end)
            break;
    }
    buf[0] = 'E';
    put(&e[0], buf);
    waitpid(child, NULL, 0);
    if (is("sysv-mq")) msgctl(e[0].msq, IPC_RMID, NULL);
    char what[64];
    snprintf(what, sizeof what, "%s %zu B %s (C)", mech, size, how);
    report(what, rtt, n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "floor") == 0) {
        double seconds = argc > 2 ? atof(argv[2]) : 0.3;
        int a = argc > 4 ? atoi(argv[3]) : 0, b = argc > 4 ? atoi(argv[4]) : 1;
        return floor_run(seconds, a, b);
    }
    if (argc >= 3 && (strcmp(argv[2], "block") == 0 || strcmp(argv[2], "spin") == 0)) {
        mech = argv[1];
        size = argc > 3 ? (size_t)atol(argv[3]) : 64;
        if (size < 1) size = 1;
        return mech_run(argv[2], argc > 4 ? atof(argv[4]) : 0.3, 0, 1);
    }
    fprintf(stderr,
            "usage: %s floor [SECONDS] [CPU_A CPU_B]\n"
            "       %s pipe|fifo|unix|unix-dgram|unix-seq|tcp|udp|mq|sysv-mq block|spin "
            "[SIZE] [SECONDS]\n",
            argv[0], argv[0]);
    return 2;
}
