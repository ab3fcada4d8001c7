//! S19: every process has its own copy of a global; a child's changes never reach the parent.
//!
//! Seed 004: `a = [2]`; a child does `a[0] += 1` and prints 3, the parent then prints 2.
//! Seed 002: `Ping` and `Pong` processes each loop `while counter < 10`, and each prints
//! ten times, because each increments its own `counter`.
//!
//! Under `StartMethod::Fork` the child starts with a *copy* of the parent's memory as
//! it was at the fork (the seed's Linux behaviour). Under the default forkserver the
//! child is forked from a clean server process, so it sees the program's initial
//! values, not the parent's changes. Either way the copy is the child's own.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use multiproc::{Process, StartMethod};

/// The seed's `a = [2]`: the parent sets it to 2 at run time (the program's initial
/// value is 0, which makes the difference between the start methods visible).
static A: [AtomicU32; 1] = [AtomicU32::new(0)];

/// Seed 002's global `counter`.
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn func(i: usize) -> u32 {
    let now = A[i].fetch_add(1, Ordering::SeqCst) + 1;
    println!("a[0] in child process: {now}");
    now
}

fn sub_task(string: String) -> u32 {
    let mut printed = 0;
    while COUNTER.load(Ordering::SeqCst) < 10 {
        print!("{string}");
        let _ = std::io::stdout().flush();
        COUNTER.fetch_add(1, Ordering::SeqCst);
        printed += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    printed
}

/// Runs the scenario.
pub fn run() {
    A[0].store(2, Ordering::SeqCst);

    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(func, 0)
        .expect("start");
    let in_child = p.join().expect("func returns");
    println!("a[0] in parent process: {}", A[0].load(Ordering::SeqCst));
    assert_eq!(
        in_child, 3,
        "a forked child starts from a copy of the parent's a[0] = 2"
    );
    assert_eq!(
        A[0].load(Ordering::SeqCst),
        2,
        "the child's increment stayed in the child"
    );

    let mut p = Process::start(func, 0).expect("start");
    let in_child = p.join().expect("func returns");
    println!(
        "a[0] in parent process: {} (forkserver child: it saw the initial 0, not 2)",
        A[0].load(Ordering::SeqCst)
    );
    assert_eq!(
        in_child, 1,
        "a forkserver child does not inherit the parent's changes"
    );
    assert_eq!(A[0].load(Ordering::SeqCst), 2);

    let mut ping = Process::start(sub_task, "Ping".to_string()).expect("start");
    let mut pong = Process::start(sub_task, "Pong".to_string()).expect("start");
    let pings = ping.join().expect("sub_task returns");
    let pongs = pong.join().expect("sub_task returns");
    println!();
    println!(
        "Ping printed {pings} times, Pong {pongs} times; the parent's counter is still {}",
        COUNTER.load(Ordering::SeqCst)
    );
    assert_eq!(
        (pings, pongs),
        (10, 10),
        "each child counted to 10 on its own counter"
    );
    assert_eq!(COUNTER.load(Ordering::SeqCst), 0);
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
