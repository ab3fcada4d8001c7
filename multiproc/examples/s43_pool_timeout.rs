//! S43: `Pool(processes=4)`: `map`, `imap_unordered`, `apply_async(f, (20,)).get(timeout=1)`,
//! `apply_async(os.getpid)` from one and from four calls, and `get(timeout=1)` on a
//! 3-second task: a typed timeout error.
//!
//! Seed 004. `MULTIPROC_TOUR_FAST=1` makes the 3-second task 0.6 s and the wait for it
//! 0.2 s.
//!
//! What the seed leaves to the clock is made certain, so that a loaded machine cannot
//! change the outcome: the slow task, after its sleep, also waits until the parent has
//! seen its wait time out (an [`Event`] the pool's workers get from the initializer), so
//! that a parent delayed past the sleep still sees a timeout; and the quick tasks get a
//! generous limit instead of the seed's second, which a busy machine could overrun.

use std::sync::OnceLock;
use std::time::Duration;

use multiproc::executor::WaitError;
use multiproc::pool::Pool;
use multiproc::sync::Event;

/// The limit on a wait for a quick task, and on the slow task's wait for the parent.
const GENEROUS: Duration = Duration::from_secs(60);

/// Set by the parent once it has seen the slow task's wait time out.
static TIMED_OUT: OnceLock<Event> = OnceLock::new();

fn set_timed_out(event: Event) {
    let _ = TIMED_OUT.set(event);
}

fn func(x: u64) -> u64 {
    x * x
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

/// The seed's `time.sleep(3)`; it does not end before the parent has seen its timeout.
fn sleep(d: Duration) {
    std::thread::sleep(d);
    let parent_saw_the_timeout = TIMED_OUT.get().expect("the initializer ran");
    assert!(
        parent_saw_the_timeout.wait_timeout(GENEROUS),
        "the parent's wait never timed out"
    );
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
    let timed_out = Event::new().expect("event");
    let p = Pool::builder()
        .processes(4)
        .initializer(set_timed_out, timed_out.clone())
        .build()
        .expect("start the pool");

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

    // Asynchronous: one result, with a time limit on the wait (the seed's is a second).
    let res = p.apply_async(func, 20).expect("submit");
    let v = res.get_timeout(GENEROUS).expect("func(20) within the wait");
    println!("{v}");
    assert_eq!(v, 400);

    let res = p.apply_async(getpid, ()).expect("submit");
    let pid = res.get_timeout(GENEROUS).expect("getpid within the wait");
    println!("{pid}");
    assert_ne!(pid, std::process::id(), "it ran in a worker");

    let results: Vec<_> = (0..4)
        .map(|_| p.apply_async(getpid, ()).expect("submit"))
        .collect();
    let pids: Vec<u32> = results
        .iter()
        .map(|r| r.get_timeout(GENEROUS).expect("getpid within the wait"))
        .collect();
    println!("{pids:?}");
    assert!(pids.iter().all(|pid| p.worker_pids().contains(pid)));

    let res = p.apply_async(sleep, long).expect("submit");
    match res.get_timeout(wait) {
        Err(WaitError::Timeout) => println!("Timeout error!"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    timed_out.set();
    // Leaving the pool terminates it (Python's `with`): the sleep does not hold us.
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
