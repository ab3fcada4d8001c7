//! S43: `Pool(processes=4)`: `map`, `imap_unordered`, `apply_async(f, (20,)).get(timeout=1)`,
//! `apply_async(os.getpid)` from one and from four calls, and `get(timeout=1)` on a
//! 3-second task: a typed timeout error.
//!
//! Seed 004. `MULTIPROC_TOUR_FAST=1` makes the 3-second task 0.6 s and the wait for it
//! 0.2 s.

use std::time::Duration;

use multiproc::executor::WaitError;
use multiproc::pool::Pool;

fn func(x: u64) -> u64 {
    x * x
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// (the long task, the wait).
fn lengths() -> (Duration, Duration) {
    if std::env::var_os("MULTIPROC_TOUR_FAST").is_some_and(|v| v == "1") {
        (Duration::from_millis(600), Duration::from_millis(200))
    } else {
        (Duration::from_secs(3), Duration::from_secs(1))
    }
}

/// Runs the seed's program.
pub fn run() {
    let (long, wait) = lengths();
    let p = Pool::new(4).expect("start the pool");

    let squares = p.map(func, 0..10).expect("map");
    println!("{squares:?}");
    assert_eq!(squares, (0..10).map(|x| x * x).collect::<Vec<_>>());

    let mut unordered = Vec::new();
    for r in p.imap_unordered(func, 0..10).expect("imap_unordered") {
        let r = r.expect("func ran");
        print!("{r} ");
        unordered.push(r);
    }
    println!();
    unordered.sort();
    assert_eq!(unordered, squares);

    // Asynchronous: one result, with a time limit on the wait.
    let second = Duration::from_secs(1);
    let res = p.apply_async(func, 20).expect("submit");
    let v = res.get_timeout(second).expect("func(20) within the wait");
    println!("{v}");
    assert_eq!(v, 400);

    let res = p.apply_async(getpid, ()).expect("submit");
    let pid = res.get_timeout(second).expect("getpid within the wait");
    println!("{pid}");
    assert_ne!(pid, std::process::id(), "it ran in a worker");

    let results: Vec<_> = (0..4)
        .map(|_| p.apply_async(getpid, ()).expect("submit"))
        .collect();
    let pids: Vec<u32> = results
        .iter()
        .map(|r| r.get_timeout(second).expect("getpid within the wait"))
        .collect();
    println!("{pids:?}");
    assert!(pids.iter().all(|pid| p.worker_pids().contains(pid)));

    let res = p.apply_async(sleep, long).expect("submit");
    match res.get_timeout(wait) {
        Err(WaitError::Timeout) => println!("Timeout error!"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Leaving the pool terminates it (Python's `with`): the sleep does not hold us.
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
