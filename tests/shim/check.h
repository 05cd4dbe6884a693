/* Tiny check harness shared by the shim's C tests: every CHECK counts, a failure prints its line and
 * the test exits non-zero at the end. */
#ifndef TWINHEAP_CHECK_H
#define TWINHEAP_CHECK_H
#include <stdio.h>
#include <stdlib.h>

static int checks_run, checks_failed;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        checks_run++;                                                                     \
        if (!(cond)) {                                                                    \
            checks_failed++;                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                 \
    } while (0)

static int finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, checks_run, checks_failed);
    return checks_failed ? 1 : 0;
}
#endif
