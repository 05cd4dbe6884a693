//! twinheap-stress (in construction this session; see issue 6).
fn main() {}
