//! Bytes a client without the key sends a TCP manager as its answer to the challenge:
//! refused, the connection closed promptly, and the server serving the next client.
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
    harness::manager_handshake(addr, data);
    harness::still_serves(addr);
});
