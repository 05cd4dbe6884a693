//! The bootstrap heap: a static buffer that serves the few allocations made while the allocator is
//! still being chosen.
//!
//! Only `TWINHEAP=system` needs it: finding the C library's allocator calls `dlsym`, which may itself
//! call `malloc` or `calloc` before the answer exists, and other threads may allocate meanwhile. Those
//! calls must neither wait (the resolving thread may hold the loader lock they need) nor recurse, so
//! they take blocks from here with one atomic bump. Blocks are never reused; `free` of one is a no-op.
//!
//! Invariants: the buffer is zero until handed out (so it serves `calloc` as is) and each block is
//! preceded by a 16-byte header holding its size, so `realloc` and `malloc_usable_size` work on it.
//! Every `free`/`realloc`/usable-size call checks [`owns`] first, so a bootstrap block never reaches
//! an allocator that did not make it.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const SIZE: usize = 1 << 20;
const HEADER: usize = 16;
/// Largest alignment served; bigger requests fail with ENOMEM during bootstrap.
const MAX_ALIGN: usize = 4096;

#[repr(C, align(4096))]
struct Buffer(UnsafeCell<[u8; SIZE]>);

// SAFETY: disjoint ranges of the buffer are handed to callers by an atomic bump; nothing here reads or
// writes a range after handing it out except the header, written once before the block is returned.
unsafe impl Sync for Buffer {}

static BUF: Buffer = Buffer(UnsafeCell::new([0; SIZE]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn base() -> usize {
    BUF.0.get() as usize
}

/// Whether `p` points into the bootstrap buffer.
#[inline]
pub fn owns(p: *const u8) -> bool {
    (p as usize).wrapping_sub(base()) < SIZE
}

/// A zeroed block of `n` bytes aligned to `align` (a power of two), or null with ENOMEM.
pub fn alloc(n: usize, align: usize) -> *mut u8 {
    let align = align.max(16);
    if align > MAX_ALIGN || n > SIZE {
        crate::out::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    let mut cur = NEXT.load(Relaxed);
    loop {
        let user = (base() + cur + HEADER + align - 1) & !(align - 1);
        // At least 16 bytes, so that even a zero-size block lies inside the buffer (`owns` holds).
        let end = user - base() + ((n.max(1) + 15) & !15);
        if end > SIZE {
            crate::out::set_errno(libc::ENOMEM);
            return core::ptr::null_mut();
        }
        match NEXT.compare_exchange_weak(cur, end, Relaxed, Relaxed) {
            Ok(_) => {
                let p = user as *mut u8;
                // SAFETY: `[user - HEADER, user + n)` lies in the buffer and in the range this call
                // just claimed; the header is 16-aligned, so the usize store is aligned.
                unsafe { (p.sub(HEADER) as *mut usize).write(n) };
                return p;
            }
            Err(seen) => cur = seen,
        }
    }
}

/// The size a bootstrap block was allocated with.
///
/// # Safety
/// `p` is a block returned by [`alloc`].
pub unsafe fn size(p: *const u8) -> usize {
    // SAFETY: per the contract, the header precedes `p` inside the buffer.
    unsafe { (p.sub(HEADER) as *const usize).read() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_disjoint_and_sized() {
        let a = alloc(10, 16);
        let b = alloc(100, 256);
        assert!(owns(a) && owns(b));
        assert_eq!(b as usize % 256, 0);
        assert!(b as usize >= a as usize + 16);
        // SAFETY: blocks from `alloc`.
        assert_eq!(unsafe { (size(a), size(b)) }, (10, 100));
        assert!(!owns(core::ptr::null()));
        assert!(alloc(SIZE + 1, 16).is_null());
        assert!(alloc(16, 8192).is_null());
    }
}
