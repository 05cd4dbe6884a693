/* The criterion benches' cross-thread case (benches/benches/alloc.rs, `threads`) as a C program, so
 * that allocators a Rust process cannot load can run it too: musl's mallocng in a static musl binary,
 * and twinheap linked into that binary in its place (see mallocng.sh).
 *
 * Each of T threads makes OPS allocations of 16-1024 bytes (uniform, seeded per thread) and writes
 * their first byte; every fourth block goes to the next thread through a single-producer
 * single-consumer ring, the others are freed 64 allocations later; blocks arriving from the previous
 * thread are freed every 16 allocations. Prints the wall time in seconds from the moment all threads
 * have started until the last has finished.
 *
 *   crossfree THREADS [OPS]        (OPS per thread, default 50000)
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RING 4096 /* entries per ring, a power of two */
#define WINDOW 64 /* blocks a thread keeps before freeing its oldest */

struct ring {
    _Alignas(64) _Atomic size_t head; /* next entry to pop, written by the consumer */
    _Alignas(64) _Atomic size_t tail; /* next entry to push, written by the producer */
    _Alignas(64) _Atomic int closed;
    void *slot[RING];
};

static struct ring *rings;
static long threads, ops;
/* The start line: threads check in, then wait for the main thread's go, given once all are in and
 * its clock has started (a barrier would start the clock only after the main thread was woken). */
static _Atomic long ready;
static _Atomic int go;

static int push(struct ring *r, void *p) {
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (t - atomic_load_explicit(&r->head, memory_order_acquire) == RING)
        return 0;
    r->slot[t % RING] = p;
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
    return 1;
}

static void *pop(struct ring *r) {
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (h == atomic_load_explicit(&r->tail, memory_order_acquire))
        return NULL;
    void *p = r->slot[h % RING];
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
    return p;
}

static void free_incoming(struct ring *in) {
    void *p;
    while ((p = pop(in)))
        free(p);
}

/* SplitMix64, as the Rust benches use. */
static uint64_t next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void *work(void *arg) {
    long t = (long)arg;
    struct ring *in = &rings[t], *out = &rings[(t + 1) % threads];
    uint64_t seed = 0xa110c + (uint64_t)t;
    void *window[WINDOW] = {0};
    atomic_fetch_add(&ready, 1);
    while (!atomic_load_explicit(&go, memory_order_acquire))
        sched_yield();
    for (long k = 0; k < ops; k++) {
        size_t n = 16 + (size_t)(((unsigned __int128)next(&seed) * 1009) >> 64);
        char *p = malloc(n);
        if (!p) {
            fprintf(stderr, "crossfree: out of memory\n");
            exit(2);
        }
        p[0] = 1;
        if (k % 4 == 3) {
            while (!push(out, p)) {
                free_incoming(in);
                sched_yield();
            }
        } else {
            free(window[k % WINDOW]);
            window[k % WINDOW] = p;
        }
        if (k % 16 == 0)
            free_incoming(in);
    }
    for (int i = 0; i < WINDOW; i++)
        free(window[i]);
    atomic_store_explicit(&out->closed, 1, memory_order_release);
    /* Drain until the previous thread is done and its ring is empty. */
    while (!atomic_load_explicit(&in->closed, memory_order_acquire)) {
        free_incoming(in);
        sched_yield();
    }
    free_incoming(in);
    return NULL;
}

int main(int argc, char **argv) {
    threads = argc > 1 ? atol(argv[1]) : 2;
    ops = argc > 2 ? atol(argv[2]) : 50000;
    if (threads < 1 || ops < 1) {
        fprintf(stderr, "usage: crossfree THREADS [OPS]\n");
        return 2;
    }
    rings = aligned_alloc(64, sizeof(struct ring) * (size_t)threads);
    pthread_t *tid = malloc(sizeof(pthread_t) * (size_t)threads);
    if (!rings || !tid)
        return 2;
    for (long t = 0; t < threads; t++) {
        atomic_init(&rings[t].head, 0);
        atomic_init(&rings[t].tail, 0);
        atomic_init(&rings[t].closed, 0);
    }
    for (long t = 0; t < threads; t++)
        if (pthread_create(&tid[t], NULL, work, (void *)t) != 0)
            return 2;
    while (atomic_load(&ready) < threads)
        sched_yield();
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    atomic_store_explicit(&go, 1, memory_order_release);
    for (long t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.6f\n", (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9);
    return 0;
}
