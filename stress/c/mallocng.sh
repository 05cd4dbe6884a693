#!/usr/bin/env bash
# slab against musl's mallocng, the allocator it takes its design from, on the criterion benches'
# cross-thread case (crossfree.c): mallocng can only run inside a static musl binary, so the case is
# a C program, built four ways:
#   glibc            gcc, dynamic (glibc's malloc; twinheap preloaded for the slab/arena rows)
#   musl mallocng    musl-gcc -static (musl's own malloc)
#   musl + twinheap  musl-gcc -static with libtwinheap.a linked in place of musl's malloc
# Each row runs THREADS threads of OPS allocations, REPS times; the table shows median wall times and
# the ratio to glibc's median (lower is better). twinheap's rows are proven to run twinheap by a
# bogus tunable's warning.
#
# Usage: bash stress/c/mallocng.sh [THREADS...]     (default 1 2 8; env OPS=50000 REPS=5)
# Needs gcc and musl-gcc (Debian package musl-tools); builds libtwinheap with cargo.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
threads=("${@:-1 2 8}")
read -r -a threads <<<"${threads[*]}"
ops=${OPS:-50000}
reps=${REPS:-5}
command -v musl-gcc >/dev/null || { echo "mallocng.sh: musl-gcc not found (Debian package musl-tools)" >&2; exit 2; }
tgt=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build --release -q -p twinheap-shim)
work=$(mktemp -d "${TMPDIR:-/tmp}/twinheap-mallocng.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$root/stress/c/crossfree.c
gcc -O2 -pthread "$src" -o "$work/glibc"
musl-gcc -O2 -static "$src" -o "$work/musl"
musl-gcc -O2 -static "$src" "$tgt/release/libtwinheap.a" -o "$work/musl-twinheap"
so=$tgt/release/libtwinheap.so

# row LABEL ENV... COMMAND: prints the median of REPS runs for each thread count.
declare -A median
run_row() {
    local label=$1; shift
    for t in "${threads[@]}"; do
        local times=()
        for _ in $(seq "$reps"); do times+=("$(env "$@" "$t" "$ops")"); done
        median[$label,$t]=$(printf '%s\n' "${times[@]}" | sort -g | sed -n "$(((reps + 1) / 2))p")
    done
}
prove() { # prove ENV... COMMAND: twinheap must warn about the bogus tunable
    if ! env TWINHEAP_TUNABLES=mallocng.proof=1 "$@" 1 1000 2>&1 >/dev/null | grep -q "unknown tunable 'mallocng.proof'"; then
        echo "mallocng.sh: twinheap not in use for: $*" >&2
        exit 1
    fi
}
prove LD_PRELOAD="$so" TWINHEAP=slab "$work/glibc"
prove TWINHEAP=slab "$work/musl-twinheap"

rows=("glibc malloc" "glibc + slab (LD_PRELOAD)" "glibc + arena (LD_PRELOAD)" "musl mallocng (static)"
    "musl + slab (static, libtwinheap.a)" "musl + arena (static, libtwinheap.a)")
run_row "${rows[0]}" "$work/glibc"
run_row "${rows[1]}" LD_PRELOAD="$so" TWINHEAP=slab "$work/glibc"
run_row "${rows[2]}" LD_PRELOAD="$so" TWINHEAP=arena "$work/glibc"
run_row "${rows[3]}" "$work/musl"
run_row "${rows[4]}" TWINHEAP=slab "$work/musl-twinheap"
run_row "${rows[5]}" TWINHEAP=arena "$work/musl-twinheap"

echo "crossfree: $ops allocations per thread (16-1024 B, every 4th freed by the next thread), median of $reps runs"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r), $(ldd --version | head -n 1 | sed 's/.* //') glibc"
echo
printf '| allocator |'; for t in "${threads[@]}"; do printf ' %s thread%s |' "$t" "$([ "$t" = 1 ] || echo s)"; done; echo
printf '|---|'; for _ in "${threads[@]}"; do printf -- '---:|'; done; echo
for r in "${rows[@]}"; do
    printf '| %s |' "$r"
    for t in "${threads[@]}"; do
        awk -v v="${median[$r,$t]}" -v b="${median[${rows[0]},$t]}" 'BEGIN { printf " %.1f ms (%.2fx) |", v * 1000, v / b }'
    done
    echo
done
