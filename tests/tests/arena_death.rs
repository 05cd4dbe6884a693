//! Death tests of the arena allocator's integrity checks: every fault it detects must abort (SIGABRT)
//! after writing exactly one line, `twinheap(arena): <what> at 0x<address>`, naming the right check
//! and the right address (the user pointer concerned).
//!
//! Each case runs in a forked child (`twinheap_tests::run_in_child_capturing_stderr`); this binary's
//! parent never touches the arena allocator (its global allocator is the system one), so the child
//! starts with a pristine allocator. The child reports the address it expects through `SharedSlots`,
//! then makes the faulty call. A child body never allocates through std and never panics; if the
//! faulty call returns, the child exits with [`UNDETECTED`] and the test fails.

use twinheap_arena as arena;
use twinheap_tests::{parse_fault_line, run_in_child_capturing_stderr, ChildOutcome, SharedSlots};

const ABORTED: ChildOutcome = ChildOutcome::Signaled(libc::SIGABRT);
/// Exit code of a child whose faulty call returned: the fault went undetected.
const UNDETECTED: i32 = 99;
/// Exit code of a child whose setup failed (e.g. malloc returned null).
const SETUP_FAILED: i32 = 98;

#[track_caller]
fn expect_fault(what: &str, body: impl FnOnce(&SharedSlots) -> i32) {
    let slots = SharedSlots::new(4);
    let (outcome, stderr) = run_in_child_capturing_stderr(|| body(&slots));
    let text = String::from_utf8_lossy(&stderr);
    assert_eq!(
        outcome, ABORTED,
        "expected SIGABRT with '{what}'; stderr: {text:?}"
    );
    let addr = slots.get(0) as usize;
    assert_ne!(addr, 0, "the child did not report the expected address");
    assert_eq!(text, format!("twinheap(arena): {what} at {addr:#x}\n"));
    assert_eq!(
        parse_fault_line(&stderr, "arena"),
        Some((what.to_string(), addr))
    );
}

fn at(s: &SharedSlots, p: *const u8) {
    s.set(0, p as usize as i64);
}

fn malloc(n: usize) -> *mut u8 {
    arena::malloc(n)
}

#[test]
fn tcache_double_free() {
    expect_fault("free(): double free detected in tcache 2", |s| {
        let p = malloc(40);
        if p.is_null() {
            return SETUP_FAILED;
        }
        at(s, p);
        // SAFETY: the second free is the fault under test.
        unsafe {
            arena::free(p);
            arena::free(p);
        }
        UNDETECTED
    });
}

/// A, B, A on a fast bin once the tcache bin is full: glibc only catches A, A (the bin's head);
/// the fast-bin mark catches A freed again below B.
#[test]
fn fastbin_double_free_a_b_a() {
    expect_fault("double free or corruption (fastbin)", |s| {
        let mut fill = [std::ptr::null_mut::<u8>(); 7];
        for f in &mut fill {
            *f = malloc(40);
        }
        let a = malloc(40);
        let b = malloc(40);
        if a.is_null() || b.is_null() || fill.iter().any(|f| f.is_null()) {
            return SETUP_FAILED;
        }
        at(s, a);
        // SAFETY: the fillers fill the tcache bin; A and B go to the fast bin; A again is the fault.
        unsafe {
            for f in fill {
                arena::free(f);
            }
            arena::free(a);
            arena::free(b);
            arena::free(a);
        }
        UNDETECTED
    });
}

#[test]
fn fastbin_double_free_at_head() {
    expect_fault("double free or corruption (fasttop)", |s| {
        // tcache_count = 0: every small free goes to the fast bin, as in glibc without tcache.
        let mut c = arena::Config::default();
        c.tcache_count = 0;
        arena::init(&c);
        let a = malloc(40);
        if a.is_null() {
            return SETUP_FAILED;
        }
        at(s, a);
        // SAFETY: the second free is the fault under test. Its mark would also find it; the head
        // check comes first because it costs nothing.
        unsafe {
            std::ptr::write_bytes(a, 0, 24);
            arena::free(a);
            // Clear the mark so the head comparison is what fires.
            a.add(8).cast::<usize>().write(0);
            arena::free(a);
        }
        UNDETECTED
    });
}

#[test]
fn double_free_of_a_merged_chunk() {
    expect_fault("double free or corruption (!prev)", |s| {
        let p = malloc(3000);
        let guard = malloc(3000);
        if p.is_null() || guard.is_null() {
            return SETUP_FAILED;
        }
        at(s, p);
        // SAFETY: the second free is the fault under test.
        unsafe {
            arena::free(p);
            arena::free(p);
        }
        UNDETECTED
    });
}

#[test]
fn overwritten_size_field() {
    expect_fault("double free or corruption (out)", |s| {
        let p = malloc(3000);
        let guard = malloc(100);
        if p.is_null() || guard.is_null() {
            return SETUP_FAILED;
        }
        at(s, p);
        // SAFETY: the size word 8 bytes before the block is overwritten on purpose (an underflow).
        unsafe {
            p.sub(8).cast::<usize>().write((64 << 20) | 1);
            arena::free(p);
        }
        UNDETECTED
    });
}

#[test]
fn misaligned_size_field() {
    expect_fault("free(): invalid size", |s| {
        let p = malloc(3000);
        if p.is_null() {
            return SETUP_FAILED;
        }
        at(s, p);
        // SAFETY: as above.
        unsafe {
            p.sub(8).cast::<usize>().write(0xbb8 | 1);
            arena::free(p);
        }
        UNDETECTED
    });
}

#[test]
fn corrupted_unsorted_links() {
    expect_fault("malloc(): unsorted double linked list corrupted", |s| {
        let a = malloc(3000);
        let guard = malloc(100);
        let other = malloc(100);
        if a.is_null() || guard.is_null() || other.is_null() {
            return SETUP_FAILED;
        }
        at(s, a);
        // SAFETY: A goes to the unsorted bin; its bk link (second word) is then redirected to
        // another live block's chunk, whose fd does not point back: a use-after-free write.
        unsafe {
            arena::free(a);
            a.add(8).cast::<usize>().write(other as usize - 16);
            let _ = arena::malloc(5000);
        }
        UNDETECTED
    });
}

#[test]
fn corrupted_size_vs_prev_size() {
    expect_fault("corrupted size vs. prev_size", |s| {
        let x = malloc(3000);
        let a = malloc(3000);
        let b = malloc(3000);
        let guard = malloc(100);
        if x.is_null() || a.is_null() || b.is_null() || guard.is_null() {
            return SETUP_FAILED;
        }
        at(s, a);
        // SAFETY: A goes to the unsorted bin with its footer in B's prev_size; an overflow from A's
        // memory then rewrites that footer. Freeing X merges forward into A and unlinks it.
        unsafe {
            arena::free(a);
            b.sub(16).cast::<usize>().write(2992);
            arena::free(x);
        }
        UNDETECTED
    });
}

#[test]
fn corrupted_size_while_consolidating() {
    expect_fault("corrupted size vs. prev_size while consolidating", |s| {
        let a = malloc(3000);
        let b = malloc(3000);
        let guard = malloc(100);
        if a.is_null() || b.is_null() || guard.is_null() {
            return SETUP_FAILED;
        }
        at(s, b);
        // SAFETY: after A is freed its size word is rewritten (a use-after-free underflow); freeing
        // B merges backwards through its prev_size and finds a chunk of another size.
        unsafe {
            arena::free(a);
            a.sub(8).cast::<usize>().write(2992 | 1);
            arena::free(b);
        }
        UNDETECTED
    });
}

#[test]
fn corrupted_top_size() {
    expect_fault("malloc(): corrupted top size", |s| {
        let p = malloc(100);
        if p.is_null() {
            return SETUP_FAILED;
        }
        // SAFETY: p's chunk is 112 bytes, so top starts 96 bytes into p and its size word sits at
        // 104 (an overflow); top's user pointer is 112 bytes into p.
        unsafe {
            at(s, p.add(112));
            p.add(104).cast::<usize>().write(usize::MAX & !0xf | 1);
            let _ = arena::malloc(5000);
        }
        UNDETECTED
    });
}

#[test]
fn freed_then_reallocated_small() {
    expect_fault("realloc(): invalid pointer (freed)", |s| {
        let p = malloc(40);
        if p.is_null() {
            return SETUP_FAILED;
        }
        at(s, p);
        // SAFETY: realloc of a freed pointer is the fault under test.
        unsafe {
            arena::free(p);
            let _ = arena::realloc(p, 100);
        }
        UNDETECTED
    });
}

#[test]
fn freed_then_reallocated_large() {
    expect_fault("realloc(): invalid pointer (freed)", |s| {
        let p = malloc(3000);
        let guard = malloc(100);
        if p.is_null() || guard.is_null() {
            return SETUP_FAILED;
        }
        at(s, p);
        // SAFETY: as above.
        unsafe {
            arena::free(p);
            let _ = arena::realloc(p, 5000);
        }
        UNDETECTED
    });
}

#[test]
fn interior_pointer() {
    expect_fault("free(): invalid size", |s| {
        let p = malloc(200);
        if p.is_null() {
            return SETUP_FAILED;
        }
        // SAFETY: the block's first bytes read as a header of size 0.
        unsafe {
            std::ptr::write_bytes(p, 0, 200);
            at(s, p.add(64));
            arena::free(p.add(64));
        }
        UNDETECTED
    });
}

#[test]
fn misaligned_pointer() {
    expect_fault("free(): invalid pointer", |s| {
        let p = malloc(200);
        if p.is_null() {
            return SETUP_FAILED;
        }
        at(s, p.wrapping_add(8));
        // SAFETY: freeing a misaligned pointer is the fault under test.
        unsafe { arena::free(p.add(8)) };
        UNDETECTED
    });
}

#[test]
fn foreign_pointer() {
    static FOREIGN: [u64; 8] = [0; 8];
    expect_fault("free(): invalid pointer", |s| {
        let p = FOREIGN.as_ptr().wrapping_add(4) as *mut u8;
        let p = (p as usize & !15) as *mut u8;
        at(s, p);
        // SAFETY: freeing a pointer the allocator never made is the fault under test.
        unsafe { arena::free(p) };
        UNDETECTED
    });
}

#[test]
fn invalid_mmapped_chunk() {
    expect_fault("munmap_chunk(): invalid pointer", |s| {
        let p = malloc(1 << 20);
        if p.is_null() {
            return SETUP_FAILED;
        }
        at(s, p);
        // SAFETY: the mapping offset word (prev_size) is overwritten: an underflow.
        unsafe {
            p.sub(16).cast::<usize>().write(4096 + 16);
            arena::free(p);
        }
        UNDETECTED
    });
}

#[test]
fn sized_free_too_large() {
    expect_fault("free(): invalid size", |s| {
        let p = malloc(100);
        if p.is_null() {
            return SETUP_FAILED;
        }
        at(s, p);
        // SAFETY: the wrong size is the fault under test.
        unsafe { arena::free_sized(p, 1000) };
        UNDETECTED
    });
}

#[test]
fn tcache_poisoned_link() {
    expect_fault("malloc(): unaligned tcache chunk detected", |s| {
        let a = malloc(40);
        let b = malloc(40);
        if a.is_null() || b.is_null() {
            return SETUP_FAILED;
        }
        // SAFETY: B's next link (its first word, safe-linked) is overwritten after free: the
        // decoded pointer is misaligned and must not be followed.
        unsafe {
            arena::free(a);
            arena::free(b);
            let stored = b.cast::<usize>().read();
            b.cast::<usize>().write(stored ^ 0x8);
            at(s, (a as usize ^ 0x8) as *const u8);
            let _ = arena::malloc(40);
            let _ = arena::malloc(40);
        }
        UNDETECTED
    });
}

/// The message is the whole of stderr and nothing runs after it: a child that survives a fault it
/// should have caught is reported, and a clean child exits normally.
#[test]
fn clean_child_exits_normally() {
    let (outcome, stderr) = run_in_child_capturing_stderr(|| {
        let p = malloc(100);
        // SAFETY: a valid pair.
        unsafe { arena::free(p) };
        7
    });
    assert_eq!(outcome, ChildOutcome::Exited(7));
    assert!(stderr.is_empty());
}
