/* Measurement helper (not part of run.sh): N malloc/free pairs of one size, for instruction counts
 * under callgrind, e.g. the cost of TWINHEAP_STATS=1 or of the shim's dispatch:
 *   valgrind --tool=callgrind env LD_PRELOAD=.../libtwinheap.so ./pairs 200000 64 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 64;
    void *volatile keep;
    for (long i = 0; i < n; i++) {
        void *p = malloc(size);
        keep = p;
        free(p);
    }
    (void)keep;
    return 0;
}
