/* Heap faults must abort with the allocator's one-line message. argv[1] names the fault; the runner
 * checks the exit signal (SIGABRT) and the line `twinheap(<allocator>): <fault> at 0x<address>`.
 * Before faulting, the program prints the address it is about to misuse on stdout, so the runner can
 * also check that the line names that very address. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void free_sized(void *, size_t) __attribute__((weak));
extern void free_aligned_sized(void *, size_t, size_t) __attribute__((weak));

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *what = argv[1];
    char *volatile p = malloc(48);
    memset(p, 1, 48);
    printf("%p\n", (void *)p);
    fflush(stdout);
    if (!strcmp(what, "double-free")) {
        free(p);
        free(p);
    } else if (!strcmp(what, "invalid-free")) {
        free(p + 16);
    } else if (!strcmp(what, "size-mismatch")) {
        free_sized(p, 47); /* slab checks the exact size */
    } else if (!strcmp(what, "size-too-large")) {
        free_sized(p, 4096); /* larger than the block: every allocator checks this */
    } else if (!strcmp(what, "alignment-mismatch")) {
        char *q = aligned_alloc(64, 64);
        /* The smallest alignment q lacks (q may well be 4096-aligned, e.g. first in its segment). */
        size_t lacks = 128;
        while (((uintptr_t)q & (lacks - 1)) == 0)
            lacks <<= 1;
        printf("%p\n", (void *)q);
        fflush(stdout);
        free_aligned_sized(q, lacks, 64);
    } else if (!strcmp(what, "overflow")) {
        p[48] = 0x55; /* one byte past the end: caught at free */
        free(p);
    } else if (!strcmp(what, "realloc-freed")) {
        free(p);
        p = realloc(p, 100);
    } else {
        return 2;
    }
    puts("not caught");
    return 0;
}
