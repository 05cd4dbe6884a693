#![no_std]
pub mod diag;
pub mod error;
