/* Out of memory under RLIMIT_AS: every allocating call must fail with NULL/ENOMEM (posix_memalign with
 * its return code), never crash, and the allocator must work again once memory is freed. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "check.h"

static size_t vm_size(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0;
    if (f) {
        if (fscanf(f, "%ld", &size) != 1) size = 0;
        fclose(f);
    }
    return (size_t)size * 4096;
}

#define MAXB 100000
static void *blocks[MAXB];

int main(void) {
    struct rlimit lim = {vm_size() + (256u << 20), RLIM_INFINITY};
    lim.rlim_max = lim.rlim_cur;
    CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
    size_t nb = 0;
    /* large blocks until the limit */
    errno = 0;
    while (nb < MAXB) {
        void *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 1, 4096);
        blocks[nb++] = p;
    }
    CHECK(nb > 20 && nb < MAXB);
    CHECK(errno == ENOMEM);
    /* small blocks until they fail too */
    size_t small = 0;
    errno = 0;
    while (nb < MAXB) {
        void *p = malloc(2000);
        if (!p) break;
        blocks[nb++] = p;
        small++;
    }
    CHECK(nb < MAXB);
    CHECK(errno == ENOMEM);
    /* every other entry point fails cleanly as well */
    errno = 0;
    CHECK(calloc(1 << 20, 4) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(aligned_alloc(1 << 20, 1 << 20) == NULL && errno == ENOMEM);
    void *out = (void *)1;
    CHECK(posix_memalign(&out, 4096, 8 << 20) == ENOMEM && out == (void *)1);
    char *keep = blocks[0];
    errno = 0;
    CHECK(realloc(keep, 64 << 20) == NULL && errno == ENOMEM);
    CHECK(keep[0] == 1); /* untouched */
    errno = 0;
    CHECK(malloc(SIZE_MAX / 2) == NULL && errno == ENOMEM);
    /* free everything: allocation works again */
    for (size_t i = 0; i < nb; i++) free(blocks[i]);
    void *again = malloc(8 << 20);
    CHECK(again != NULL);
    free(again);
    void *s = malloc(100);
    CHECK(s != NULL);
    free(s);
    printf("oom: %zu blocks of 1 MiB and %zu of 2000 B before ENOMEM\n", nb - small, small);
    return finish("oom");
}
