#!/usr/bin/env bash
# The C shim's whole test run, one command:  bash tests/shim/run.sh
#
# Builds libtwinheap.so/.a (cargo, honouring CARGO_TARGET_DIR), the C/C++ tests (gcc, g++, musl-gcc),
# then checks: the conformance corpus preloaded under each TWINHEAP choice and linked statically
# (glibc dynamic, gcc -static, musl-gcc -static), process life (early start, fork under load, thread
# churn, RLIMIT_AS out of memory, heap-fault messages), the C++ operators, and real programs
# (python3, gcc, sort, git, a C++ program) under LD_PRELOAD compared with their output without it,
# and a selection of CPython's own regression tests run under each allocator.
# Prints one line per check; exits non-zero if any failed.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SRC=$ROOT/tests/shim
TGT=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/twinheap-shim.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PASS=0
FAIL=0
SKIP=0
START=$(date +%s)

ok() { PASS=$((PASS + 1)); printf 'ok    %s\n' "$1"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL  %s\n' "$1"; [ -n "${2:-}" ] && sed 's/^/      | /' "$2" | tail -n 15; }
skip() { SKIP=$((SKIP + 1)); printf 'skip  %s\n' "$1"; }

# run NAME -- command...: passes if the command exits 0 within its time limit.
run() {
    local name=$1; shift; shift
    if timeout 300 "$@" >"$WORK/out" 2>&1; then ok "$name"; else bad "$name (exit $?)" "$WORK/out"; fi
}

echo "== building"
(cd "$ROOT" && cargo build --release -p twinheap-shim -j2) >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; echo "FAIL  cargo build"; exit 1; }
SO=$TGT/release/libtwinheap.so
AR=$TGT/release/libtwinheap.a
[ -f "$SO" ] && [ -f "$AR" ] || { echo "FAIL  $SO or $AR missing"; exit 1; }
ok "cargo build --release -p twinheap-shim: libtwinheap.so and libtwinheap.a"

CFLAGS="-O1 -g -Wall -fno-builtin -Wno-alloc-size-larger-than -Wno-use-after-free -pthread"
TESTS="conformance early fork churn oom faults"
B=$WORK/bin
mkdir -p "$B"
build() { # build NAME command...
    local name=$1; shift
    if "$@" >"$WORK/cc.log" 2>&1; then return 0; fi
    bad "build $name" "$WORK/cc.log"; return 1
}
for t in $TESTS; do
    build "$t (plain)" gcc $CFLAGS "$SRC/$t.c" -o "$B/$t" -ldl
    build "$t (glibc, libtwinheap.a)" gcc $CFLAGS "$SRC/$t.c" "$AR" -o "$B/$t.glibc-dyn" -ldl
    build "$t (gcc -static)" gcc $CFLAGS -static "$SRC/$t.c" "$AR" -o "$B/$t.glibc-static" -ldl
done
HAVE_MUSL=0
if command -v musl-gcc >/dev/null; then
    HAVE_MUSL=1
    for t in $TESTS; do
        build "$t (musl-gcc -static)" musl-gcc $CFLAGS -static "$SRC/$t.c" "$AR" -o "$B/$t.musl-static"
    done
else
    bad "musl-gcc not found (Debian package musl-tools)"
fi
CXXFLAGS="-O2 -std=c++17 -pthread"
build "cxx (plain)" g++ $CXXFLAGS "$SRC/cxx.cpp" -o "$B/cxx"
build "cxx (g++ -static)" g++ $CXXFLAGS -static "$SRC/cxx.cpp" \
    -Wl,-u,_ZSt15get_new_handlerv -Wl,-u,_ZSt17__throw_bad_allocv "$AR" -o "$B/cxx.static"

# Is the arena allocator wired into this build? (The shim warns and runs slab when it is not.)
ALLOCS="slab system"
if TWINHEAP=arena LD_PRELOAD=$SO "$B/early" 2>&1 | grep -q "arena allocator is not available"; then
    skip "TWINHEAP=arena: the arena allocator is not wired into the shim yet (every arena run skipped)"
    ARENA=0
else
    ALLOCS="slab arena system"
    ARENA=1
fi

echo "== preloaded (LD_PRELOAD=libtwinheap.so)"
for a in $ALLOCS; do
    P="env TWINHEAP=$a TWINHEAP_EXPECT=$a LD_PRELOAD=$SO"
    run "conformance, preloaded, TWINHEAP=$a" -- $P "$B/conformance"
    run "early start and re-entrancy, preloaded, TWINHEAP=$a" -- $P "$B/early"
    run "fork under load (300 children), preloaded, TWINHEAP=$a" -- $P "$B/fork" 300
    run "thread churn (20000 threads, flat RSS), preloaded, TWINHEAP=$a" -- $P "$B/churn" 20000
    run "out of memory under RLIMIT_AS, preloaded, TWINHEAP=$a" -- $P "$B/oom"
    if $P TWINHEAP_STATS=1 "$B/conformance" 2>&1 >/dev/null | grep -q "^twinheap stats: allocator=$a peak_bytes=[1-9]"; then
        ok "TWINHEAP_STATS=1 summary at exit, TWINHEAP=$a"
    else
        bad "TWINHEAP_STATS=1 summary at exit, TWINHEAP=$a"
    fi
done

# fault_check LABEL ALLOC RUNNER...: every detected fault aborts (SIGABRT) with the one-line message.
fault_check() {
    local label=$1 alloc=$2; shift 2
    local f list
    # slab names each fault exactly; arena words them as glibc does and checks fewer of them (no exact
    # size check, no canary past the requested size), so it gets the faults it detects.
    if [ "$alloc" = slab ]; then
        list="double-free:double free|invalid-free:invalid free|size-mismatch:size mismatch"
        list="$list|size-too-large:size mismatch|alignment-mismatch:alignment mismatch|overflow:|realloc-freed:"
    else
        list="double-free:|invalid-free:|size-too-large:|alignment-mismatch:|realloc-freed:"
    fi
    local IFS='|'
    for f in $list; do
        IFS=' '
        local arg=${f%%:*} want=${f#*:}
        # (in a subshell whose stderr is dropped, so bash's own "Aborted" notice stays out of the log)
        local rc
        rc=$( ("$@" "$arg" >"$WORK/fout" 2>"$WORK/ferr"; echo $?) 2>/dev/null)
        local line
        line=$(grep '^twinheap(' "$WORK/ferr")
        local addr
        addr=$(tail -n 1 "$WORK/fout")
        if [ $rc -ne 134 ]; then
            bad "$label: $arg aborts (exit $rc)" "$WORK/ferr"
        elif [ "$(grep -c '^twinheap(' "$WORK/ferr")" != 1 ] || ! [[ $line =~ ^twinheap\($alloc\):\ .+\ at\ 0x[0-9a-f]+$ ]]; then
            bad "$label: $arg prints one 'twinheap($alloc): <fault> at 0x...' line" "$WORK/ferr"
        elif [ -n "$want" ] && [ "$alloc" = slab ] && [ "${line#*: }" != "$want at $addr" ] \
            && [ "$arg" != invalid-free ]; then
            bad "$label: $arg says '$want at $addr' (got '$line')"
        else
            ok "$label: $arg -> $line"
        fi
    done
}
for a in $ALLOCS; do
    [ "$a" = system ] && continue
    fault_check "heap fault, preloaded, TWINHEAP=$a" "$a" env TWINHEAP=$a LD_PRELOAD="$SO" "$B/faults"
done

echo "== linked in (libtwinheap.a)"
VARIANTS="glibc-dyn glibc-static"
[ $HAVE_MUSL = 1 ] && VARIANTS="$VARIANTS musl-static"
for v in $VARIANTS; do
    [ -x "$B/conformance.$v" ] || continue
    for a in slab ${ARENA/1/arena}; do
        [ "$a" = 0 ] && continue
        E="env TWINHEAP=$a TWINHEAP_EXPECT=$a"
        run "conformance, $v, TWINHEAP=$a" -- $E "$B/conformance.$v"
        run "early start, $v, TWINHEAP=$a" -- $E "$B/early.$v"
        run "fork under load (100 children), $v, TWINHEAP=$a" -- $E "$B/fork.$v" 100
        run "thread churn (5000 threads), $v, TWINHEAP=$a" -- $E "$B/churn.$v" 5000
        run "out of memory, $v, TWINHEAP=$a" -- $E "$B/oom.$v"
    done
    if TWINHEAP_STATS=1 "$B/conformance.$v" 2>&1 >/dev/null | grep -q "^twinheap stats: allocator=slab peak_bytes=[1-9]"; then
        ok "$v: TWINHEAP_STATS=1 summary at exit"
    else
        bad "$v: TWINHEAP_STATS=1 summary at exit"
    fi
    # twinheap really is the allocator: its tunable parser warns, and its fault line appears
    if TWINHEAP_TUNABLES=no.such.tunable=1 "$B/conformance.$v" 2>&1 | grep -q "^twinheap: TWINHEAP_TUNABLES: unknown tunable 'no.such.tunable'"; then
        ok "$v: a bogus TWINHEAP_TUNABLES item draws twinheap's warning"
    else
        bad "$v: a bogus TWINHEAP_TUNABLES item draws twinheap's warning"
    fi
    if nm "$B/conformance.$v" 2>/dev/null | grep -qw '_int_malloc\|__malloc_context'; then
        bad "$v: the C library's malloc is not linked in"
    else
        ok "$v: the C library's malloc is not linked in (no _int_malloc / __malloc_context)"
    fi
    fault_check "heap fault, $v" slab env TWINHEAP=slab "$B/faults.$v"
    # TWINHEAP=system: works where dlsym reaches libc.so, else one warning and slab
    if [ $v = glibc-dyn ]; then
        run "conformance, $v, TWINHEAP=system (libc.so's malloc via dlsym)" -- \
            env TWINHEAP=system TWINHEAP_EXPECT=system "$B/conformance.$v"
    else
        TWINHEAP=system TWINHEAP_EXPECT=slab "$B/conformance.$v" >"$WORK/out" 2>&1
        if [ $? = 0 ] && [ "$(grep -c '^twinheap: TWINHEAP=system: .*using slab' "$WORK/out")" = 1 ]; then
            ok "$v: TWINHEAP=system warns once and runs slab"
        else
            bad "$v: TWINHEAP=system warns once and runs slab" "$WORK/out"
        fi
    fi
done

echo "== C++ operators"
"$B/cxx" >"$WORK/cxx.ref" 2>"$WORK/cxx.err" || bad "cxx without the shim" "$WORK/cxx.err"
for a in $ALLOCS; do
    if TWINHEAP=$a LD_PRELOAD=$SO timeout 300 "$B/cxx" >"$WORK/cxx.out" 2>"$WORK/cxx.err" \
        && cmp -s "$WORK/cxx.ref" "$WORK/cxx.out"; then
        ok "C++ containers on 4 threads, bad_alloc, new-handler, aligned/sized delete, preloaded, TWINHEAP=$a"
    else
        bad "C++ operators, preloaded, TWINHEAP=$a" "$WORK/cxx.err"
    fi
done
if [ -x "$B/cxx.static" ] && timeout 300 "$B/cxx.static" >"$WORK/cxx.out" 2>"$WORK/cxx.err" \
    && cmp -s "$WORK/cxx.ref" "$WORK/cxx.out"; then
    ok "C++ operators, g++ -static with libtwinheap.a"
else
    bad "C++ operators, g++ -static with libtwinheap.a" "$WORK/cxx.err"
fi

echo "== real programs under LD_PRELOAD (output compared with a run without it)"
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
awk 'BEGIN { srand(7); for (i = 0; i < 400000; i++) printf "%08x %d line-%d\n", int(rand() * 4294967295), int(rand() * 1000), i }' >"$WORK/big.txt"
git_script() { # a scratch repository: commits, a branch, a merge, gc, fsck; prints stable ids
    local d=$1
    rm -rf "$d" && mkdir -p "$d" && cd "$d" || return 1
    export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.invalid GIT_COMMITTER_NAME=t \
        GIT_COMMITTER_EMAIL=t@example.invalid GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' \
        GIT_COMMITTER_DATE='2026-01-01T00:00:00Z' GIT_CONFIG_NOSYSTEM=1 HOME=$d
    git init -q -b main . && for i in $(seq 1 30); do
        seq $i 3 5000 >"f$((i % 7)).txt" && git add -A && git commit -q -m "c$i" || return 1
    done
    git checkout -q -b side HEAD~10 && echo side >side.txt && git add side.txt && git commit -q -m side \
        && git checkout -q main && git merge -q --no-edit side && git gc -q && git fsck --strict \
        && git log --format='%H %s' | head -n 40 && git rev-parse HEAD:f3.txt
}
# Proof that twinheap runs inside the program: a bogus tunable draws twinheap's warning at the first
# allocation of every process (TWINHEAP_STATS would not do: coreutils close stderr before exiting).
real_case() { # real_case NAME ALLOC command...: stdout with the shim must equal stdout without it
    local name=$1 a=$2; shift 2
    (cd "$WORK" && timeout 300 "$@") >"$WORK/real.ref" 2>"$WORK/real.referr"
    local rc0=$?
    (cd "$WORK" && TWINHEAP=$a TWINHEAP_TUNABLES=shim.proof=1 LD_PRELOAD=$SO timeout 300 "$@") \
        >"$WORK/real.out" 2>"$WORK/real.err"
    local rc1=$?
    if [ $rc0 = 0 ] && [ $rc1 = 0 ] && cmp -s "$WORK/real.ref" "$WORK/real.out" \
        && grep -q "unknown tunable 'shim.proof'" "$WORK/real.err" \
        && ! grep -v "unknown tunable 'shim.proof'" "$WORK/real.err" | grep -q "^twinheap"; then
        ok "$name under TWINHEAP=$a: same output ($(wc -l <"$WORK/real.out") lines), twinheap in use"
    else
        bad "$name under TWINHEAP=$a (exit $rc0/$rc1)" "$WORK/real.err"
    fi
}
# CPython's own regression tests, allocation-heavy modules (containers, text, pickling, decimal,
# sqlite, ctypes, I/O, gc and weakrefs, threads, compression and archives, whose buffers are large
# blocks), with every object allocated by twinheap (PYTHONMALLOC=malloc). Unlike the cases above it
# runs the suite's own assertions, about 7,900 tests.
# The proof of use is a separate start: many of these tests require an empty stderr in children.
CPYTHON_TESTS="test_list test_dict test_set test_json test_re test_unicode test_bytes test_pickle
    test_collections test_itertools test_struct test_array test_deque test_heapq test_sort test_zlib
    test_decimal test_fractions test_gc test_weakref test_sqlite3 test_xml_etree test_csv
    test_hashlib test_io test_mmap test_ctypes test_queue test_string test_thread test_memoryview
    test_zipfile test_tarfile test_gzip test_lzma test_bz2"
cpython_case() { # cpython_case ALLOC
    local a=$1
    if [ -z "$PY" ] || ! "$PY" -c 'import test.libregrtest' 2>/dev/null; then
        skip "CPython regression tests under TWINHEAP=$a: this python3 has no test package"
        return
    fi
    if ! (cd "$WORK" && TWINHEAP=$a TWINHEAP_TUNABLES=shim.proof=1 LD_PRELOAD=$SO \
        PYTHONMALLOC=malloc "$PY" -c 'import test.libregrtest') 2>&1 | grep -q "unknown tunable 'shim.proof'"; then
        bad "CPython regression tests under TWINHEAP=$a: twinheap not in use"
        return
    fi
    # A test that fails is run once more (--rerun), so that a timing-dependent test on a loaded
    # machine does not fail the suite; any fault twinheap reports still does, rerun or not.
    # shellcheck disable=SC2086 # the module list is split on purpose
    (cd "$WORK" && TWINHEAP=$a LD_PRELOAD=$SO PYTHONMALLOC=malloc timeout 900 \
        "$PY" -m test -j2 --rerun --timeout 600 $CPYTHON_TESTS) >"$WORK/cpython.out" 2>&1
    local rc=$?
    # After a successful re-run regrtest says "Result: FAILURE then SUCCESS".
    if [ $rc = 0 ] && grep -qE "^Result: (.* then )?SUCCESS$" "$WORK/cpython.out" \
        && ! grep -q "twinheap(" "$WORK/cpython.out"; then
        local rerun=""
        grep -q "^Result: .* then SUCCESS$" "$WORK/cpython.out" \
            && rerun=" (a failed test passed when re-run)"
        ok "CPython regression tests under TWINHEAP=$a: $(grep -o 'run=[0-9,]*' "$WORK/cpython.out" | head -n 1 | cut -d= -f2) tests passed$rerun"
    else
        bad "CPython regression tests under TWINHEAP=$a (exit $rc)" "$WORK/cpython.out"
    fi
}
for a in slab ${ARENA/1/arena}; do
    [ "$a" = 0 ] && continue
    cpython_case $a
    if [ -n "$PY" ]; then
        real_case "python3 (PYTHONMALLOC=malloc, 4 threads)" $a env PYTHONMALLOC=malloc "$PY" "$SRC/workload.py"
    else
        bad "python3 not found"
    fi
    real_case "gcc -O2 compiling conformance.c" $a sh -c "gcc -O2 -c '$SRC/conformance.c' -o - | sha256sum"
    real_case "sort of a 400000-line file" $a sh -c "sort -S 64M --parallel=2 '$WORK/big.txt' | sha256sum"
    real_case "git on a scratch repository" $a bash -c "$(declare -f git_script); git_script '$WORK/repo'"
    real_case "C++ containers on 4 threads" $a "$B/cxx"
done

echo "== done in $(($(date +%s) - START)) s: $PASS passed, $FAIL failed, $SKIP skipped"
[ $FAIL = 0 ]
