/*
 * pingpong: an independent check of `ipc bench`, written in plain C with
 * bare system calls and no ipckit code. Two processes (fork), pinned to
 * two CPUs, bounce a message; every round trip is timed on its own with
 * clock_gettime(CLOCK_MONOTONIC), as `ipc bench` does, and the program
 * prints min, p50 and p99 in nanoseconds.
 *
 *   cc -O2 -o pingpong tools/pingpong.c
 *   ./pingpong floor [SECONDS] [CPU_A CPU_B]   one cache line, busy-polled
 *
 * Not run by CI: a tool for comparing figures on one machine in the same
 * minutes (see the README and the bench issue).
 */
#define _GNU_SOURCE
#include <sched.h>
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
                ;
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
            ;
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

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "floor") != 0) {
        fprintf(stderr, "usage: %s floor [SECONDS] [CPU_A CPU_B]\n", argv[0]);
        return 2;
    }
    double seconds = argc > 2 ? atof(argv[2]) : 0.3;
    int a = argc > 4 ? atoi(argv[3]) : 0, b = argc > 4 ? atoi(argv[4]) : 1;
    return floor_run(seconds, a, b);
}
