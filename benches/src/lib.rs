//! Shared code for the criterion benches (see benches/benches/).
