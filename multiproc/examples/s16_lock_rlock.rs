//! S16: an RLock is re-entered by its holder; a plain Lock re-acquired by its holder is
//! reported as `WouldDeadlock` instead of hanging.
//!
//! Seed 001: five `MyThreadRLock` threads each `acquire()` the `RLock` twice and bump a
//! shared number; `MyThreadLock` does the same with a `Lock` and deadlocks in Python.

use std::cell::Cell;
use std::time::Duration;

use multiproc::Run;
use multiproc::thread::{Lock, RLock, Thread, current_thread};

/// The seed's global `number`, guarded by `r_lock`. An `RLock` lends `&T` (its holder may
/// have several guards), hence the `Cell`.
static NUMBER: RLock<Cell<u32>> = RLock::new(Cell::new(0));
/// The same number guarded by a plain `lock`.
static LOCKED_NUMBER: Lock<u32> = Lock::new(0);

/// Python's `class MyThreadRLock(threading.Thread)` with its `run()`.
struct MyThreadRLock;

impl Run for MyThreadRLock {
    type Output = u32;
    fn run(self) -> u32 {
        std::thread::sleep(Duration::from_millis(10));
        let outer = NUMBER.lock();
        outer.set(outer.get() + 1);
        let number = outer.get();
        println!("{} number to {number}", current_thread().name());
        let inner = NUMBER.lock(); // acquired again by its holder: fine for an RLock
        drop(inner);
        drop(outer); // released as many times as acquired
        number
    }
}

/// Python's `class MyThreadLock(threading.Thread)`: its second `acquire()` hangs in Python.
struct MyThreadLock;

impl Run for MyThreadLock {
    type Output = bool;
    fn run(self) -> bool {
        let mut number = LOCKED_NUMBER.lock().expect("first acquire");
        *number += 1;
        println!("{} set number to {}", current_thread().name(), *number);
        match LOCKED_NUMBER.lock() {
            Ok(_) => false,
            Err(err) => {
                println!("second acquire: {err}");
                true
            }
        }
    }
}

/// Runs five `MyThreadRLock` threads, then one `MyThreadLock`.
pub fn run() {
    let threads: Vec<_> = (0..5)
        .map(|_| Thread::start_run(MyThreadRLock).expect("start a thread"))
        .collect();
    let mut seen: Vec<u32> = threads
        .into_iter()
        .map(|t| t.join().expect("no panic"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3, 4, 5], "each thread held the RLock alone");
    assert!(!NUMBER.is_locked(), "every guard was dropped");

    let reported = Thread::start_run(MyThreadLock)
        .expect("start a thread")
        .join()
        .expect("no panic");
    assert!(
        reported,
        "re-acquiring a Lock in its holder is an error, not a hang"
    );
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
