/* C conformance corpus for the malloc family as libtwinheap exports it (preloaded or linked in).
 * TWINHEAP_EXPECT=slab|arena|system says which allocator must be answering; checks that differ
 * between allocators (usable size, mallopt, malloc_info) follow it. Builds against glibc and musl:
 * it declares the glibc extensions itself instead of including <malloc.h>. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

struct th_mallinfo2 {
    size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};
struct th_mallinfo {
    int arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};
extern size_t malloc_usable_size(void *);
extern void *memalign(size_t, size_t);
extern void *valloc(size_t);
extern void *pvalloc(size_t);
extern void *reallocarray(void *, size_t, size_t);
/* C23; glibc 2.36 lacks them, so they are weak here and must be found at run time (preloaded .so) or
 * at link time (static library). */
extern void free_sized(void *, size_t) __attribute__((weak));
extern void free_aligned_sized(void *, size_t, size_t) __attribute__((weak));
extern int malloc_trim(size_t);
extern int mallopt(int, int);
extern struct th_mallinfo2 mallinfo2(void);
extern struct th_mallinfo mallinfo(void);
extern void malloc_stats(void);
extern int malloc_info(int, FILE *);
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static const char *expect;
static int is(const char *name) { return strcmp(expect, name) == 0; }

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 7);
}
static int holds(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7)) return 0;
    return 1;
}
static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static void usable_ok(void *p, size_t n) {
    size_t u = malloc_usable_size(p);
    if (is("slab")) CHECK(u == n);
    else CHECK(u >= n);
}

static void test_malloc_free(void) {
    size_t sizes[] = {0, 1, 15, 16, 17, 100, 1000, 4096, 65536, 131052, 131053, 1 << 20, 5 << 20};
    void *blocks[sizeof sizes / sizeof *sizes];
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *p = malloc(sizes[i]);
        CHECK(p != NULL);
        CHECK(((uintptr_t)p & 15) == 0);
        usable_ok(p, sizes[i]);
        fill(p, sizes[i], (unsigned)i);
        blocks[i] = p;
    }
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        CHECK(holds(blocks[i], sizes[i], (unsigned)i));
        for (size_t j = 0; j < i; j++) CHECK(blocks[i] != blocks[j]);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        errno = 1234;
        free(blocks[i]);
        CHECK(errno == 1234); /* free keeps errno */
    }
    errno = 77;
    free(NULL);
    CHECK(errno == 77);
    CHECK(malloc_usable_size(NULL) == 0);
    /* malloc(0) gives distinct non-null pointers */
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b);
    free(a);
    free(b);
}

static void test_huge(void) {
    size_t huge[] = {SIZE_MAX, SIZE_MAX - 4096, (size_t)PTRDIFF_MAX + 1, (size_t)1 << 62};
    for (size_t i = 0; i < sizeof huge / sizeof *huge; i++) {
        errno = 0;
        CHECK(malloc(huge[i]) == NULL);
        CHECK(errno == ENOMEM);
        errno = 0;
        CHECK(calloc(1, huge[i]) == NULL);
        CHECK(errno == ENOMEM);
        errno = 0;
        CHECK(aligned_alloc(64, huge[i]) == NULL);
        CHECK(errno == ENOMEM);
        void *out = (void *)1;
        CHECK(posix_memalign(&out, 64, huge[i]) == ENOMEM);
        CHECK(out == (void *)1);
    }
}

static void test_calloc(void) {
    /* dirty then free many blocks so calloc gets reused memory */
    for (int round = 0; round < 50; round++) {
        void *dirty[20];
        for (int i = 0; i < 20; i++) {
            dirty[i] = malloc(64 + i * 40);
            memset(dirty[i], 0xAB, 64 + i * 40);
        }
        for (int i = 0; i < 20; i++) free(dirty[i]);
        for (int i = 0; i < 20; i++) {
            unsigned char *p = calloc(8 + i * 5, 8);
            CHECK(p != NULL);
            CHECK(all_zero(p, (8 + i * 5) * 8));
            dirty[i] = p;
        }
        for (int i = 0; i < 20; i++) free(dirty[i]);
    }
    unsigned char *big = calloc(3 << 20, 1);
    CHECK(big && all_zero(big, 3 << 20));
    free(big);
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 3) == NULL); /* count * size overflows */
    CHECK(errno == ENOMEM);
    errno = 0;
    CHECK(calloc((size_t)1 << 33, (size_t)1 << 33) == NULL);
    CHECK(errno == ENOMEM);
    void *z = calloc(0, 5);
    CHECK(z != NULL);
    free(z);
}

static void test_realloc(void) {
    size_t steps[] = {10, 30, 200, 5000, 70000, 200000, 3 << 20, 150000, 100, 5};
    unsigned char *p = malloc(1);
    fill(p, 1, 9);
    size_t n = 1;
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        unsigned char *q = realloc(p, steps[i]);
        CHECK(q != NULL);
        size_t keep = n < steps[i] ? n : steps[i];
        CHECK(holds(q, keep, 9));
        usable_ok(q, steps[i]);
        fill(q, steps[i], 9);
        p = q;
        n = steps[i];
    }
    /* failure leaves the block intact */
    errno = 0;
    CHECK(realloc(p, SIZE_MAX - 100) == NULL);
    CHECK(errno == ENOMEM);
    CHECK(holds(p, n, 9));
    /* reallocarray */
    errno = 0;
    CHECK(reallocarray(p, SIZE_MAX / 4, 8) == NULL);
    CHECK(errno == ENOMEM);
    CHECK(holds(p, n, 9));
    unsigned char *r = reallocarray(p, 100, 10);
    CHECK(r != NULL);
    CHECK(holds(r, n < 1000 ? n : 1000, 9));
    usable_ok(r, 1000);
    /* realloc(p, 0) frees and returns NULL (glibc) */
    CHECK(realloc(r, 0) == NULL);
    /* realloc(NULL, n) is malloc */
    p = realloc(NULL, 50);
    CHECK(p != NULL);
    usable_ok(p, 50);
    free(p);
}

static void test_aligned(void) {
    for (size_t align = 16; align <= (1 << 20); align <<= 1) {
        size_t ns[] = {1, 100, 5000, 200000};
        for (size_t k = 0; k < 4; k++) {
            size_t n = ns[k];
            void *p = NULL;
            CHECK(posix_memalign(&p, align, n) == 0);
            CHECK(p && ((uintptr_t)p & (align - 1)) == 0);
            usable_ok(p, n);
            fill(p, n, 3);
            void *q = aligned_alloc(align, n);
            CHECK(q && ((uintptr_t)q & (align - 1)) == 0);
            usable_ok(q, n);
            void *m = memalign(align, n);
            CHECK(m && ((uintptr_t)m & (align - 1)) == 0);
            CHECK(holds(p, n, 3));
            free(p);
            free(q);
            free(m);
        }
    }
    /* posix_memalign: EINVAL for alignments that are not power-of-two multiples of sizeof(void*),
     * errno untouched, *out untouched */
    size_t bad[] = {0, 1, 2, 4, 3, 24, 48, 100};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        void *out = (void *)1;
        errno = 55;
        CHECK(posix_memalign(&out, bad[i], 10) == EINVAL);
        CHECK(out == (void *)1);
        CHECK(errno == 55);
    }
    /* aligned_alloc: non-power-of-two alignment is EINVAL (glibc >= 2.38 and musl; 2.36 accepted it) */
    errno = 0;
    CHECK(aligned_alloc(24, 48) == NULL);
    CHECK(errno == EINVAL);
    errno = 0;
    CHECK(aligned_alloc(0, 48) == NULL);
    CHECK(errno == EINVAL);
    /* memalign rounds a non-power-of-two alignment up (glibc) */
    void *m = memalign(48, 100);
    CHECK(m && ((uintptr_t)m & 63) == 0);
    free(m);
    errno = 0;
    CHECK(memalign(SIZE_MAX / 2 + 2, 10) == NULL);
    CHECK(errno == EINVAL);
    /* valloc / pvalloc */
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(100);
    CHECK(v && ((uintptr_t)v & (page - 1)) == 0);
    usable_ok(v, 100);
    void *pv = pvalloc(100);
    CHECK(pv && ((uintptr_t)pv & (page - 1)) == 0);
    CHECK(malloc_usable_size(pv) >= (size_t)page);
    memset(pv, 1, page);
    free(v);
    free(pv);
    errno = 0;
    CHECK(pvalloc(SIZE_MAX - 10) == NULL);
    CHECK(errno == ENOMEM);
}

static void test_sized(void) {
    CHECK(free_sized != NULL && free_aligned_sized != NULL);
    if (!free_sized || !free_aligned_sized) return;
    for (size_t n = 1; n < 300000; n = n * 3 + 1) {
        void *p = malloc(n);
        free_sized(p, n);
        void *q = aligned_alloc(256, n);
        CHECK(((uintptr_t)q & 255) == 0);
        free_aligned_sized(q, 256, n);
    }
    free_sized(NULL, 10);
    free_aligned_sized(NULL, 64, 10);
}

static void test_aliases(void) {
    unsigned char *p = __libc_malloc(40);
    CHECK(p != NULL);
    fill(p, 40, 1);
    p = __libc_realloc(p, 4000);
    CHECK(p && holds(p, 40, 1));
    __libc_free(p);
    unsigned char *c = __libc_calloc(10, 10);
    CHECK(c && all_zero(c, 100));
    free(c);
    void *m = __libc_memalign(4096, 10);
    CHECK(m && ((uintptr_t)m & 4095) == 0);
    free(m);
}

static void test_introspection(void) {
    /* mallinfo2 tracks memory in use */
    struct th_mallinfo2 before = mallinfo2();
    void *blocks[100];
    for (int i = 0; i < 100; i++) {
        blocks[i] = malloc(100000);
        memset(blocks[i], 1, 100000);
    }
    struct th_mallinfo2 during = mallinfo2();
    CHECK(during.uordblks >= before.uordblks + 100 * 100000);
    CHECK(during.arena + during.hblkhd >= during.uordblks);
    struct th_mallinfo old = mallinfo();
    CHECK(old.uordblks > 0);
    for (int i = 0; i < 100; i++) free(blocks[i]);
    struct th_mallinfo2 after = mallinfo2();
    CHECK(after.uordblks + 100 * 100000 <= during.uordblks);
    int t = malloc_trim(0);
    CHECK(t == 0 || t == 1);
    /* mallopt: M_MMAP_THRESHOLD (-3). glibc and arena honour it; slab has no such knob. */
    int r = mallopt(-3, 1 << 20);
    if (is("slab")) CHECK(r == 0);
    else CHECK(r == 1);
    if (is("slab")) CHECK(mallopt(12345, 1) == 0); /* glibc answers 1 even for unknown ones */
    /* malloc_info */
    FILE *f = tmpfile();
    CHECK(f != NULL);
    CHECK(malloc_info(0, f) == 0);
    fflush(f);
    long len = ftell(f);
    CHECK(len > 20);
    rewind(f);
    char buf[256] = {0};
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    CHECK(got > 0 && strstr(buf, "<malloc version=") == buf);
    if (is("slab")) CHECK(strstr(buf, "twinheap-slab") != NULL);
    fclose(f);
    CHECK(malloc_info(1, stdout) == EINVAL); /* glibc returns the code */
    /* malloc_stats writes to stderr: capture it through a pipe */
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fds[1], 2);
    malloc_stats();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    char sbuf[4096];
    ssize_t sn = read(fds[0], sbuf, sizeof sbuf - 1);
    close(fds[0]);
    CHECK(sn > 0);
    if (sn > 0) {
        sbuf[sn] = 0;
        CHECK(strstr(sbuf, "system bytes") != NULL);
        CHECK(strstr(sbuf, "in use bytes") != NULL);
    }
}

static void *thread_work(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *live[64] = {0};
    size_t sizes[64] = {0};
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245 + 12345;
        int k = (seed >> 8) % 64;
        if (live[k]) {
            if (!holds(live[k], sizes[k], k)) bad++;
            free(live[k]);
        }
        sizes[k] = (seed >> 16) % 3000;
        live[k] = malloc(sizes[k]);
        fill(live[k], sizes[k], k);
    }
    for (int k = 0; k < 64; k++) {
        if (live[k] && !holds(live[k], sizes[k], k)) bad++;
        free(live[k]);
    }
    return (void *)(uintptr_t)bad;
}

static void test_threads(void) {
    pthread_t t[8];
    for (int i = 0; i < 8; i++) CHECK(pthread_create(&t[i], NULL, thread_work, (void *)(uintptr_t)i) == 0);
    for (int i = 0; i < 8; i++) {
        void *bad;
        pthread_join(t[i], &bad);
        CHECK(bad == NULL);
    }
}

int main(void) {
    expect = getenv("TWINHEAP_EXPECT");
    if (!expect) expect = "slab";
    test_malloc_free();
    test_huge();
    test_calloc();
    test_realloc();
    test_aligned();
    test_sized();
    test_aliases();
    test_introspection();
    test_threads();
    char name[64];
    snprintf(name, sizeof name, "conformance[%s]", expect);
    return finish(name);
}
