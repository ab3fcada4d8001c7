//! S17: a crashing child leaves its parent alive; a crashing thread takes its process.
//!
//! Seed 001's closing notes: processes are robust (a child's crash does not affect the
//! main process or the other children), but any thread that crashes brings the whole
//! process down. In Rust the line runs slightly differently:
//!
//! * a **panic** in a thread unwinds that thread only: `JoinHandle::join` returns it as
//!   an `Err`, like a `Process` returns `ProcessError::Panicked`;
//! * an **abort** (`std::process::abort`, a double panic, a segfault, a stack overflow,
//!   `panic = "abort"`) ends the whole process, whichever thread caused it. Only a
//!   process boundary contains that.

use std::time::Duration;

use multiproc::{Process, ProcessError};

fn panics(_: ()) -> u32 {
    panic!("the child's target panicked");
}

fn aborts(_: ()) {
    std::process::abort();
}

fn hangs(_: ()) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A child whose main thread is healthy but which starts a thread that aborts.
fn thread_aborts(_: ()) -> String {
    let worker = std::thread::spawn(|| std::process::abort());
    let _ = worker.join();
    "unreachable: the abort took this whole process, main thread included".to_string()
}

/// Runs the scenario.
pub fn run() {
    let me = std::process::id();

    let mut p = Process::start(panics, ()).expect("start");
    let err = p.join().expect_err("a panicking child gives no result");
    println!("child that panicked:    {err}");
    assert!(matches!(&err, ProcessError::Panicked { message, .. } if message.contains("panicked")));
    assert_eq!(
        p.exit_status().map(|s| s.exitcode()),
        Some(multiproc::process::EXIT_PANIC)
    );

    let mut p = Process::start(aborts, ()).expect("start");
    let err = p.join().expect_err("an aborted child gives no result");
    println!("child that aborted:     {err}");
    assert!(
        matches!(&err, ProcessError::Signaled { status, .. } if status.signal_name() == Some("SIGABRT"))
    );

    let mut p = Process::start(hangs, ()).expect("start");
    std::thread::sleep(Duration::from_millis(100));
    p.kill().expect("send SIGKILL");
    let err = p.join().expect_err("a killed child gives no result");
    println!("child killed by SIGKILL: {err}");
    assert!(
        matches!(&err, ProcessError::Signaled { status, .. } if status.signal_name() == Some("SIGKILL"))
    );

    println!("the parent ({me}) is still alive after three crashed children");

    // Threads: a panic stays in its thread too...
    let handle = std::thread::spawn(|| -> u32 { panic!("the thread panicked") });
    let payload = handle.join().expect_err("the panic is returned by join");
    let message = payload.downcast_ref::<&str>().copied().unwrap_or("?");
    println!("thread that panicked:   join returned Err({message:?}); this process carries on");

    // ...but an abort in any thread ends the process that runs it. Shown inside a child,
    // so that it is the child that dies.
    let mut p = Process::start(thread_aborts, ()).expect("start");
    let err = p.join().expect_err("the whole child died");
    println!("child whose *thread* aborted: {err}");
    println!("  (had that thread run in this process, this process would have died with it)");
    assert!(
        matches!(&err, ProcessError::Signaled { status, .. } if status.signal_name() == Some("SIGABRT"))
    );
    assert_eq!(std::process::id(), me);
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
