//! Bytes written to the raw socket of a pipe end: the other end gives a value or a
//! typed error at once, and learns promptly that the writer went.
#![no_main]

#[path = "../src/harness.rs"]
mod harness;

multiproc::test_support!();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::pipe_socket(data);
});
