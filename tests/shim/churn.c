/* Thread churn: tens of thousands of short-lived threads, each allocating and freeing (and leaving a
 * few blocks for the main thread to free), must keep resident memory flat: each exiting thread's heap
 * has to be reused, not leaked. RSS is read from /proc/self/statm. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define BATCH 8

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void *worker(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    void *keep = NULL;
    for (int i = 0; i < 40; i++) {
        size_t n = (size_t)((id * 31 + (uintptr_t)i * 577) % 6000) + 1;
        char *p = malloc(n);
        memset(p, 1, n);
        if (i == 7) keep = p;
        else free(p);
    }
    char *big = malloc(200000);
    memset(big, 2, 200000);
    free(big);
    return keep; /* freed by the main thread: a cross-thread free of a dead thread's block */
}

int main(int argc, char **argv) {
    int total = argc > 1 ? atoi(argv[1]) : 20000;
    long base = 0;
    int done = 0;
    while (done < total) {
        pthread_t t[BATCH];
        for (int i = 0; i < BATCH; i++) CHECK(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(done + i)) == 0);
        for (int i = 0; i < BATCH; i++) {
            void *keep;
            pthread_join(t[i], &keep);
            free(keep);
        }
        done += BATCH;
        if (done == 2000) base = rss_kib();
    }
    long end = rss_kib();
    printf("churn: %d threads, RSS after 2000: %ld KiB, at end: %ld KiB\n", total, base, end);
    CHECK(base > 0);
    CHECK(end <= base + 8192); /* flat: at most 8 MiB of growth over the remaining threads */
    return finish("churn");
}
