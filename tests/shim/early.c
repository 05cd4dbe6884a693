/* Early start and re-entrancy: the first allocations come from a constructor, from dlerror() (which
 * allocates inside the dynamic linker's error path), and from threads racing at their first call.
 * Every block must be intact and freeable in main; nothing may deadlock (the runner uses a timeout). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define THREADS 6
static char *early_block;
static void *thread_blocks[THREADS][50];
static atomic_int ready, go;

static void *racer(void *arg) {
    intptr_t id = (intptr_t)arg;
    atomic_fetch_add(&ready, 1);
    while (!atomic_load(&go)) {
    }
    for (int i = 0; i < 50; i++) {
        size_t n = 1 + (size_t)(i * 97 + id * 13) % 5000;
        char *p = (i % 3 == 0) ? calloc(1, n) : malloc(n);
        if (p) memset(p, (int)id + 1, n);
        thread_blocks[id][i] = p;
    }
    return NULL;
}

__attribute__((constructor(101))) static void first(void) {
    /* threads whose first call to the allocator happens at the same moment */
    pthread_t t[THREADS];
    for (intptr_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, racer, (void *)i);
    while (atomic_load(&ready) < THREADS) {
    }
    atomic_store(&go, 1);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    early_block = malloc(1000);
    if (early_block) memset(early_block, 7, 1000);
}

__attribute__((constructor(102))) static void via_loader(void) {
    /* a failing lookup makes the dynamic linker allocate its error message */
    void *sym = dlsym(RTLD_DEFAULT, "twinheap_no_such_symbol");
    const char *err = dlerror();
    if (sym == NULL && err != NULL) {
        char *copy = strdup(err);
        free(copy);
    }
}

int main(void) {
    CHECK(early_block != NULL);
    for (int i = 0; early_block && i < 1000; i++) CHECK(early_block[i] == 7);
    free(early_block);
    for (int id = 0; id < THREADS; id++) {
        for (int i = 0; i < 50; i++) {
            char *p = thread_blocks[id][i];
            size_t n = 1 + (size_t)(i * 97 + id * 13) % 5000;
            CHECK(p != NULL);
            int ok = 1;
            for (size_t k = 0; p && k < n; k++) ok &= p[k] == id + 1;
            CHECK(ok);
            free(p);
        }
    }
    return finish("early");
}
