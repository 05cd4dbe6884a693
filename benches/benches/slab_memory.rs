//! Memory, not time: what slab maps and keeps resident for a million small blocks, what it gives back
//! after freeing them and trimming, and glibc's resident memory for the same work.
//!
//! `cargo bench --bench slab_memory` runs the full size (1,000,000 blocks of 48 bytes); under
//! `cargo test --benches` (no `--bench` argument) a scaled-down run only checks that it works.
//! Prints a markdown report. The bench binary sets no global allocator: the pointer vector comes from
//! the system allocator and is allocated and touched before the first RSS reading.

use std::hint::black_box;
use std::time::Instant;

use twinheap_benches::{bench_mode, rss_bytes};
use twinheap_slab::SlabStats;

const SIZE: usize = 48;

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

fn signed_mib(bytes: isize) -> String {
    format!("{:+.2} MiB", bytes as f64 / (1 << 20) as f64)
}

fn diff(a: usize, b: usize) -> isize {
    a as isize - b as isize
}

/// Writes every byte of a fresh block, as a program would.
fn fill(p: *mut u8, k: usize) {
    // SAFETY: `p` is a live block of SIZE bytes.
    unsafe { std::ptr::write_bytes(p, k as u8 | 1, SIZE) };
}

struct Phase {
    rss: usize,
    stats: SlabStats,
    page_mapped: usize,
}

fn snapshot() -> Phase {
    Phase {
        rss: rss_bytes(),
        stats: twinheap_slab::stats(),
        page_mapped: twinheap_page::stats().mapped,
    }
}

fn main() {
    let count = if bench_mode() { 1_000_000 } else { 20_000 };
    let payload = count * SIZE;
    // Allocated and touched up front, so that its pages are in every RSS reading.
    let mut blocks: Vec<*mut u8> = vec![std::ptr::null_mut(); count];

    // --- slab ---
    let start = snapshot();
    let t = Instant::now();
    for (k, slot) in blocks.iter_mut().enumerate() {
        let p = twinheap_slab::malloc(SIZE);
        assert!(!p.is_null(), "slab: out of memory");
        fill(p, k);
        *slot = p;
    }
    let alloc_time = t.elapsed();
    let full = snapshot();
    let t = Instant::now();
    for &p in &blocks {
        // SAFETY: every pointer is a live slab block, freed once.
        unsafe { twinheap_slab::free(black_box(p)) };
    }
    let free_time = t.elapsed();
    let t = Instant::now();
    let released = twinheap_slab::trim();
    let trim_time = t.elapsed();
    let end = snapshot();

    // --- glibc ---
    blocks.fill(std::ptr::null_mut());
    let glibc_start = rss_bytes();
    let t = Instant::now();
    for (k, slot) in blocks.iter_mut().enumerate() {
        // SAFETY: plain malloc.
        let p = unsafe { libc::malloc(SIZE) }.cast::<u8>();
        assert!(!p.is_null(), "glibc: out of memory");
        fill(p, k);
        *slot = p;
    }
    let glibc_alloc_time = t.elapsed();
    let glibc_full = rss_bytes();
    let t = Instant::now();
    for &p in &blocks {
        // SAFETY: every pointer is a live glibc block, freed once.
        unsafe { libc::free(black_box(p).cast()) };
    }
    let glibc_free_time = t.elapsed();
    let t = Instant::now();
    // SAFETY: no preconditions.
    let glibc_released = unsafe { libc::malloc_trim(0) } != 0;
    let glibc_trim_time = t.elapsed();
    let glibc_end = rss_bytes();

    let (s0, s1, s2) = (&start.stats, &full.stats, &end.stats);
    let overhead = (diff(s1.mapped, s0.mapped) + diff(s1.metadata, s0.metadata)) as f64;
    println!(
        "## slab_memory: {count} blocks of {SIZE} bytes ({} requested)\n",
        mib(payload)
    );
    println!("### slab (twinheap_slab::malloc / free / trim)\n");
    println!("| | start | all live | freed + trim | live - start | end - start |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, a, b, c) in [
        ("requested", s0.requested, s1.requested, s2.requested),
        ("in_slots", s0.in_slots, s1.in_slots, s2.in_slots),
        ("mapped", s0.mapped, s1.mapped, s2.mapped),
        ("metadata", s0.metadata, s1.metadata, s2.metadata),
        (
            "page backend mapped",
            start.page_mapped,
            full.page_mapped,
            end.page_mapped,
        ),
        ("RSS (VmRSS)", start.rss, full.rss, end.rss),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            mib(a),
            mib(b),
            mib(c),
            signed_mib(diff(b, a)),
            signed_mib(diff(c, a))
        );
    }
    println!();
    println!(
        "- (mapped + metadata) / requested payload, all live: **{:.3}** ({} per block)",
        overhead / payload as f64,
        format_args!("{:.1} B", overhead / count as f64)
    );
    println!(
        "- in_slots / requested: {:.3}; RSS growth / payload: {:.3}",
        s1.in_slots as f64 / s1.requested.max(1) as f64,
        diff(full.rss, start.rss) as f64 / payload as f64
    );
    println!(
        "- groups of the 48-byte class: {} ({} slots)",
        s1.classes[3].groups, s1.classes[3].slots
    );
    println!("- trim released something: {released}");
    println!(
        "- time: malloc {:.1} ms, free {:.1} ms, trim {:.2} ms\n",
        alloc_time.as_secs_f64() * 1e3,
        free_time.as_secs_f64() * 1e3,
        trim_time.as_secs_f64() * 1e3
    );

    println!("### glibc (malloc / free / malloc_trim(0)), RSS only\n");
    println!("| | start | all live | freed + trim | live - start | end - start |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| RSS (VmRSS) | {} | {} | {} | {} | {} |\n",
        mib(glibc_start),
        mib(glibc_full),
        mib(glibc_end),
        signed_mib(diff(glibc_full, glibc_start)),
        signed_mib(diff(glibc_end, glibc_start))
    );
    println!(
        "- RSS growth / payload: {:.3}; malloc_trim released something: {glibc_released}",
        diff(glibc_full, glibc_start) as f64 / payload as f64
    );
    println!(
        "- time: malloc {:.1} ms, free {:.1} ms, trim {:.2} ms",
        glibc_alloc_time.as_secs_f64() * 1e3,
        glibc_free_time.as_secs_f64() * 1e3,
        glibc_trim_time.as_secs_f64() * 1e3
    );

    // Sanity: everything slab handed out came back.
    assert_eq!(s1.requested - s0.requested, payload);
    assert_eq!(s2.requested, s0.requested);
}
