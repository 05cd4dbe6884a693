//! Groups: which slots of a new group are activated first, and what a released one may have written.
//!
//! A group is `class::count(class)` equal slots (32, fewer above 32 KiB) laid side by side in a
//! segment (`segment.rs`), with no header. Its memory is taken from the segment when the group is
//! created and put back when it is released; its record lives in the meta areas (`meta.rs`).

use twinheap_page::page_size;

use crate::class;

/// Bytes of a group's memory it may have written: its activated slots, page-rounded.
pub(crate) fn dirty(class: usize, active: usize) -> usize {
    (active * class::stride(class)).next_multiple_of(page_size())
}

/// How many slots to activate in a new group: those within its first 4 KiB (at least one), so that
/// random slot choice does not touch every page of a large group at once.
pub(crate) fn initial_active(class: usize) -> usize {
    (4096 / class::stride(class)).clamp(1, class::count(class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_starts_within_a_page() {
        for class in 0..class::CLASSES {
            let active = initial_active(class);
            assert!(active >= 1 && active <= class::count(class));
            assert!(
                active == 1 || active * class::stride(class) <= 4096,
                "class {class}"
            );
        }
        assert_eq!(initial_active(0), 32);
    }
}
