#!/usr/bin/env bash
# Other projects' own test suites, run with twinheap as their global allocator.
#
# For each crate (pinned versions, fetched from crates.io), a copy of its published source gets
# twinheap as a dependency and a `#[global_allocator]` item appended to its lib.rs. A global allocator
# declared in a library applies to every binary that links it, so the crate's whole test suite
# (unit, integration, property tests) then allocates through twinheap. Before running the suite, one
# test binary is started with a bogus tunable to prove twinheap is really in use: its warning line
# must appear.
#
# Usage: bash tests/realworld/run.sh [slab|arena]      (the allocator type; default slab)
set -euo pipefail
allocator=${1:-slab}
case "$allocator" in
    slab) type=Slab ;;
    arena) type=Arena ;;
    *) echo "realworld: unknown allocator '$allocator'" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${REALWORLD_DIR:-$root/target/realworld}
crates=("serde_json 1.0.154" "indexmap 2.14.2" "hashbrown 0.15.4" "smallvec 1.15.1" "slab 0.4.11")

mkdir -p "$work/fetch/src"
cat > "$work/fetch/Cargo.toml" <<TOML
[package]
name = "realworld-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
$(for c in "${crates[@]}"; do set -- $c; echo "$1 = \"=$2\""; done)
[workspace]
TOML
echo 'fn main() {}' > "$work/fetch/src/main.rs"
cargo fetch --manifest-path "$work/fetch/Cargo.toml" -q
registry=$(cargo metadata --manifest-path "$work/fetch/Cargo.toml" --format-version 1 -q |
    grep -o '"manifest_path":"[^"]*"' | cut -d'"' -f4)

for c in "${crates[@]}"; do
    set -- $c
    name=$1 version=$2
    src=$(dirname "$(grep -E "/$name-$version/Cargo.toml$" <<<"$registry")")
    dst="$work/$name-$version-$allocator"
    rm -rf "$dst"
    cp -r "$src" "$dst"
    chmod -R u+w "$dst"
    printf '\n[dependencies.twinheap]\npath = "%s/allocators/twinheap"\n\n[workspace]\n' "$root" >> "$dst/Cargo.toml"
    printf '\n/// Added by twinheap'"'"'s realworld tests: every binary linking this crate allocates through twinheap.\n#[global_allocator]\nstatic TWINHEAP_ALLOCATOR: twinheap::%s = twinheap::%s;\n' "$type" "$type" >> "$dst/src/lib.rs"

    echo "== $name $version: test suite under twinheap::$type" >&2
    # Proof that twinheap is the allocator: a bogus tunable must draw its warning.
    proof=$(TWINHEAP_TUNABLES=realworld.proof=1 cargo test --manifest-path "$dst/Cargo.toml" -q --lib -- --list 2>&1 || true)
    if ! grep -q "twinheap: TWINHEAP_TUNABLES: unknown tunable 'realworld.proof'" <<<"$proof"; then
        echo "realworld: $name does not allocate through twinheap" >&2
        exit 1
    fi
    if ! out=$(cargo test --manifest-path "$dst/Cargo.toml" -q 2>&1); then
        tail -n 60 <<<"$out" >&2
        echo "realworld: $name's test suite failed under twinheap::$type" >&2
        exit 1
    fi
    grep -E "^test result" <<<"$out" >&2
done
echo "realworld: all suites passed under twinheap::$type" >&2
