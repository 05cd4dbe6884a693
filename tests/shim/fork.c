/* fork under load: threads allocate and free without pause while the main thread forks many times.
 * Each child allocates (small, large, aligned), checks its blocks and exits; the parent checks every
 * child's status. A child that inherited a held allocator lock would hang (the runner's timeout). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static atomic_int stop;

static void *churn(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *slots[128] = {0};
    while (!atomic_load(&stop)) {
        seed = seed * 1103515245 + 12345;
        int k = (seed >> 8) & 127;
        free(slots[k]);
        size_t n = (seed >> 16) % 4000;
        if ((seed & 0xff) == 0) n = 300000; /* an occasional large block */
        slots[k] = malloc(n);
        if (slots[k]) memset(slots[k], 1, n);
    }
    for (int k = 0; k < 128; k++) free(slots[k]);
    return NULL;
}

static int child(int i) {
    int bad = 0;
    for (int r = 0; r < 10; r++) {
        size_t n = (size_t)(r * 131 + i) % 20000 + 1;
        unsigned char *p = malloc(n);
        unsigned char *big = malloc(256 << 10);
        void *al = aligned_alloc(4096, 100);
        if (!p || !big || !al) return 3;
        memset(p, 0x5a, n);
        memset(big, 0x33, 256 << 10);
        for (size_t k = 0; k < n; k++) bad |= p[k] != 0x5a;
        free(p);
        free(big);
        free(al);
    }
    return bad ? 4 : 0;
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 300;
    pthread_t t[4];
    for (intptr_t i = 0; i < 4; i++) pthread_create(&t[i], NULL, churn, (void *)(i + 1));
    int failed = 0;
    for (int i = 0; i < forks; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            int rc = child(i);
            if (i % 10 == 0) exit(rc); /* some children run exit handlers too */
            _exit(rc);
        }
        CHECK(pid > 0);
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed++;
            fprintf(stderr, "child %d: %s %d\n", i, WIFEXITED(status) ? "exit" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        }
    }
    CHECK(failed == 0);
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    char name[32];
    snprintf(name, sizeof name, "fork[%d children]", forks);
    return finish(name);
}
