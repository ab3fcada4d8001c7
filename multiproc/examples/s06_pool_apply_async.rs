//! S6: a `Pool(4)` (and a `Pool(3)`) runs 5 tasks of random length submitted with
//! `apply_async`, then `close` and `join`: at most N run at once, and the fifth task
//! runs in the worker that the first task to finish freed (workers are reused).
//!
//! Seeds 000 and 001. The seed's tasks sleep up to 3 s; `MULTIPROC_TOUR_FAST=1` makes
//! that 0.3 s.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use multiproc::pool::Pool;

/// Up to this long per task (the seed's `random.random() * 3` seconds).
fn longest() -> Duration {
    if std::env::var_os("MULTIPROC_TOUR_FAST").is_some_and(|v| v == "1") {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(3)
    }
}

/// Wall-clock nanoseconds: comparable between processes.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// The seed's `task(name)`: prints its pid, sleeps a random while, prints how long.
/// Returns (name, pid, start, end) so that the parent can check the schedule.
fn task((name, length): (u32, Duration)) -> (u32, u32, u128, u128) {
    println!("task {name} starts, pid {}", std::process::id());
    let start = now_ns();
    std::thread::sleep(length);
    let end = now_ns();
    println!("task {name} ends after {:.2}s", (end - start) as f64 / 1e9);
    (name, std::process::id(), start, end)
}

/// A small random number generator (xorshift), seeded from the clock.
fn random_lengths(n: usize) -> Vec<Duration> {
    let mut x = (now_ns() as u64) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            longest().mul_f64((x % 1000) as f64 / 1000.0)
        })
        .collect()
}

/// Checks the seed's observations on what the tasks returned.
fn check(processes: usize, runs: &[(u32, u32, u128, u128)]) {
    // At most `processes` tasks at any moment.
    for &(_, _, start, _) in runs {
        let running = runs.iter().filter(|r| r.2 <= start && start < r.3).count();
        assert!(
            running <= processes,
            "{running} tasks ran at once in Pool({processes})"
        );
    }
    // The task submitted after the pool was full ran in a worker that an earlier task
    // had freed: the first to finish, unless two finished together.
    let next = runs[processes];
    let freed = runs[..processes]
        .iter()
        .find(|r| r.1 == next.1 && r.3 <= next.2)
        .expect("the waiting task ran in a freed worker");
    println!(
        "task {} ran in pid {}, freed by task {}",
        next.0, next.1, freed.0
    );
    let pids: HashSet<u32> = runs.iter().map(|r| r.1).collect();
    assert!(pids.len() <= processes, "workers are reused");
}

fn run_pool(processes: usize, names: std::ops::Range<u32>) {
    println!("main process, pid {}", std::process::id());
    println!("-----------------------------------");
    let pool = Pool::new(processes).expect("start the pool");
    let lengths = random_lengths(names.len());
    let results: Vec<_> = names
        .zip(lengths)
        .map(|job| pool.apply_async(task, job).expect("pool running"))
        .collect();
    pool.close();
    println!("waiting for the workers...");
    pool.join().expect("the pool was closed");
    println!("-----------------------------------");
    println!("all tasks done, main process pid {}", std::process::id());
    let runs: Vec<_> = results.iter().map(|r| r.get().expect("task ran")).collect();
    check(processes, &runs);
}

/// Runs the seeds' two programs.
pub fn run() {
    // Seed 000: Pool(4), tasks 1 to 5.
    run_pool(4, 1..6);
    // Seed 001: Pool(3), tasks 0 to 4.
    run_pool(3, 0..5);
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
