//! The codec's decoders (`parse_header`, `frame_len`, `decode_frame` for several
//! types) over any bytes: a value or a typed error, never a panic.
#![no_main]

#[path = "../src/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::codec_frames(data));
