//! Frames an authenticated client sends a TCP manager (requests built from the input
//! after its first byte, or the input as it is): one reply frame per request taken,
//! the connection closed promptly, and the server serving the next client.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

#[path = "../src/harness.rs"]
mod harness;

multiproc::test_support!();

/// One server for the whole run (it dies with this process).
fn server() -> SocketAddr {
    static SERVER: OnceLock<(multiproc::Manager, SocketAddr)> = OnceLock::new();
    SERVER.get_or_init(harness::tcp_manager).1
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let addr = server();
    // Even first byte: the rest as request bodies, each a length byte then its bytes
    // (so that mutations reach the request decoder past the header); odd: raw bytes.
    let stream = match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => {
            let mut bodies = Vec::new();
            let mut rest = rest;
            while let Some((&len, tail)) = rest.split_first() {
                let len = (len as usize).min(tail.len());
                bodies.push(&tail[..len]);
                rest = &tail[len..];
            }
            harness::request_frames(bodies)
        }
        _ => data.to_vec(),
    };
    harness::manager_frames(addr, &stream);
    harness::still_serves(addr);
});
