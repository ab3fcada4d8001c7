//! S5 — `Value('i', 0)`: 10 processes add 1 to a shared counter 50 times each; without a
//! lock increments are lost, with one the total is exactly 500.
//!
//! Seed 000 (process synchronisation): `func(val)` does `time.sleep(0.01)` then
//! `val.value += 1`, 50 times, in 10 processes; `main()` prints the total, five times
//! over, and the totals fall short of 500. The fixed version does `with lock:
//! val.value += 1` and prints 500 every time.
//!
//! `val.value += 1` is a read and a write, each under the Value's own lock but not
//! together: another process may write in between, and its increment is lost. Rust's
//! `get()` and `set()` follow each other more closely than CPython's bytecodes do, so both
//! versions yield the processor between the read and the write, which invites another
//! process into that window. The second version holds [`Value::lock`]'s guard from the
//! read to the write; the seed passes a separate `Lock` for that, and the Value's own lock
//! is the same thing (S14's process example uses a separate [`multiproc::sync::Lock`]).
//! `MULTIPROC_TOUR_FAST=1` sleeps 1 ms instead of 10.

use std::time::Duration;

use multiproc::Process;
use multiproc::shared::Value;

const PROCESSES: usize = 10;
const INCREMENTS: i32 = 50;

/// The seed's `time.sleep(0.01)`.
fn pause() -> Duration {
    if std::env::var_os("MULTIPROC_TOUR_FAST").is_some_and(|v| v == "1") {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(10)
    }
}

/// The seed's first `func`: `val.value += 1`, a read and then a write.
fn func_racy((val, pause): (Value<i32>, Duration)) {
    for _ in 0..INCREMENTS {
        std::thread::sleep(pause);
        let read = val.get();
        std::thread::yield_now();
        val.set(read + 1);
    }
}

/// The seed's second `func`: `with lock: val.value += 1`.
fn func_locked((val, pause): (Value<i32>, Duration)) {
    for _ in 0..INCREMENTS {
        std::thread::sleep(pause);
        // Only one process at a time holds the guard, from the read to the write.
        let mut guard = val.lock().expect("no holder died");
        let read = *guard;
        std::thread::yield_now();
        *guard = read + 1;
    }
}

/// The seed's `main()`: 10 processes run `func` on one shared Value; returns the total.
fn main_once(func: fn((Value<i32>, Duration))) -> i32 {
    let val = Value::new(0i32).expect("shared memory");
    let mut processes: Vec<Process<()>> = (0..PROCESSES)
        .map(|_| Process::start(func, (val.clone(), pause())).expect("start"))
        .collect();
    for p in &mut processes {
        p.join().expect("func returns");
    }
    let total = val.get();
    println!("{total}");
    total
}

/// Runs the scenario.
pub fn run() {
    println!("without a lock:");
    for _ in 0..5 {
        // Usually below 500; not asserted: a race is not a promise.
        main_once(func_racy);
    }
    println!("with the lock:");
    for _ in 0..5 {
        let total = main_once(func_locked);
        assert_eq!(total, PROCESSES as i32 * INCREMENTS, "no increment is lost");
    }
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
