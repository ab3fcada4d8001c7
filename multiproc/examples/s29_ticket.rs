//! S29 — 10 processes try to buy the one ticket, each under a mutex: exactly one succeeds.
//!
//! Seed 003 (mutual exclusion): `run(i, mutex)` takes the `Lock`, "buys" for 2 s, prints
//! `tickets: 1` or `tickets: 0`, then "i 抢票成功" (got the ticket) or "i 抢票失败"
//! (missed it), and releases the lock. The seed keeps `tickets` in a global that the
//! parent zeroes after the first `start()`, counting on `fork` copying it; here the
//! ticket count is a shared [`Value`] that the buyer itself sets to 0, so the outcome
//! follows from the mutex under every start method. The check and the sale are the two
//! ends of the buying step: without the lock, several buyers could all see the ticket.
//! The 2 s step is 0.2 s here (`MULTIPROC_TOUR_FAST=1`: 10 ms).

use std::time::Duration;

use multiproc::Process;
use multiproc::shared::Value;
use multiproc::sync::Lock;

/// How long buying takes (the seed's `time.sleep(2)`).
fn buying_time() -> Duration {
    if std::env::var_os("MULTIPROC_TOUR_FAST").is_some_and(|v| v == "1") {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(200)
    }
}

/// The seed's `run(i, mutex)`: `true` if this buyer got the ticket.
fn buy((i, mutex, tickets, buying_time): (u32, Lock, Value<u32>, Duration)) -> bool {
    let _held = mutex.lock().expect("no holder died");
    let left = tickets.get();
    std::thread::sleep(buying_time);
    println!("tickets: {left}");
    if left == 1 {
        tickets.set(0);
        println!("{i} got the ticket");
        true
    } else {
        println!("{i} missed the ticket");
        false
    }
}

/// Runs the scenario.
pub fn run() {
    let mutex = Lock::new().expect("a lock");
    let tickets = Value::new(1u32).expect("shared memory");
    let mut buyers: Vec<Process<bool>> = (1..=10)
        .map(|i| {
            Process::start(buy, (i, mutex.clone(), tickets.clone(), buying_time())).expect("start")
        })
        .collect();
    let winners = buyers
        .iter_mut()
        .map(|p| p.join().expect("buy returns"))
        .filter(|&got| got)
        .count();
    assert_eq!(winners, 1, "one ticket, one buyer");
    assert_eq!(tickets.get(), 0);
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
