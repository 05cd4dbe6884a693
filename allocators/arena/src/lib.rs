//! twinheap's arena allocator (in construction this session; see issue 4).
#![no_std]
