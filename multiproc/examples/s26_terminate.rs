//! S26: `terminate()` stops a running child; `is_alive()` reflects it; the status says SIGTERM.
//!
//! Seed 003: `p1.terminate()` kills the process, `p1.is_alive()` tells whether it still
//! runs. As in Python, `terminate` only *sends* SIGTERM: right after it the child may
//! not have died yet; after `join` (here `wait`) it has, and was reaped.

use std::time::Duration;

use multiproc::{Process, ProcessError};

/// A child that would run for a minute.
fn task(_: ()) {
    println!("child: running, pid {}", std::process::id());
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("child: finished (never printed: it is terminated first)");
}

/// Runs the scenario.
pub fn run() {
    let mut p = Process::start(task, ()).expect("start");
    std::thread::sleep(Duration::from_millis(200));
    let before = p.is_alive();
    println!("is_alive before terminate: {before}");
    assert!(before);
    assert_eq!(p.exit_status(), None, "no exit status while it runs");

    p.terminate().expect("send SIGTERM");
    println!(
        "is_alive right after terminate: {} (the signal may not have landed yet)",
        p.is_alive()
    );

    let status = p.wait().expect("wait for the child");
    println!("is_alive after wait: {}", p.is_alive());
    println!(
        "exit status: {status}; Python's exitcode: {}",
        status.exitcode()
    );
    assert!(!p.is_alive());
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert_eq!(status.signal_name(), Some("SIGTERM"));
    assert_eq!(status.code(), None);
    assert_eq!(status.exitcode(), -15);

    let err = p.join().expect_err("a terminated child returns nothing");
    println!("join: {err}");
    assert!(matches!(err, ProcessError::Signaled { .. }));

    // Terminating a child that already ended is harmless.
    p.terminate().expect("no-op on an ended child");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
