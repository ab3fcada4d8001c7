//! S2: N parallel one-second I/O tasks take about one second, not N.
//!
//! Seed 000: five `io_task()`s (a one-second sleep standing for I/O) run one after the
//! other take ≈ 5 s; the same five in five processes take ≈ 1 s. Seed 003: three
//! 3-second processes started, then joined one after the other, take ≈ 3 s, because
//! while the parent waits for the first the other two run too. (Seed 002's two
//! "downloads" in two processes are the same program.)
//!
//! `MULTIPROC_TOUR_FAST=1` scales the sleeps down to 0.2 s and 0.6 s.

use std::time::{Duration, Instant};

use multiproc::Process;

/// The length of one I/O task and of one seed-003 task.
fn sleeps() -> (Duration, Duration) {
    if std::env::var_os("MULTIPROC_TOUR_FAST").is_some_and(|v| v == "1") {
        (Duration::from_millis(200), Duration::from_millis(600))
    } else {
        (Duration::from_secs(1), Duration::from_secs(3))
    }
}

/// An I/O-bound task: the process is suspended and uses no CPU while it waits.
fn io_task(length: Duration) {
    std::thread::sleep(length);
}

fn task((name, length): (String, Duration)) {
    println!("{name} is running");
    std::thread::sleep(length);
    println!("{name} is over");
}

/// Runs the scenario.
pub fn run() {
    let (io, long) = sleeps();
    // Python pays for starting its forkserver inside the first start(); start ours now
    // so that the measurement is of the sleeps.
    multiproc::process::ensure_forkserver().expect("start the forkserver");

    let started = Instant::now();
    for _ in 0..5 {
        io_task(io);
    }
    let sequential = started.elapsed();
    println!(
        "5 tasks one after the other: {:.2}s",
        sequential.as_secs_f64()
    );

    let started = Instant::now();
    let mut processes: Vec<_> = (0..5)
        .map(|_| Process::start(io_task, io).expect("start"))
        .collect();
    for p in &mut processes {
        p.join().expect("io_task returns");
    }
    let parallel = started.elapsed();
    println!("5 tasks in 5 processes: {:.2}s", parallel.as_secs_f64());
    println!(
        "speed-up: {:.1}x",
        sequential.as_secs_f64() / parallel.as_secs_f64()
    );
    assert!(parallel < sequential / 2, "parallel sleeps overlap");
    assert!(
        parallel < io * 3,
        "five parallel sleeps take about one sleep"
    );

    // The same five tasks in a pool of five workers (started before the clock runs,
    // as Python's Pool starts its workers in `Pool(5)`).
    let pool = multiproc::pool::Pool::new(5).expect("start the pool");
    let started = Instant::now();
    pool.with_chunksize(1)
        .map(io_task, [io; 5])
        .expect("io_task returns");
    let pooled = started.elapsed();
    println!("5 tasks in a Pool(5): {:.2}s", pooled.as_secs_f64());
    assert!(pooled < sequential / 2, "pooled sleeps overlap");
    drop(pool);

    let mut processes: Vec<_> = (1..=3)
        .map(|i| Process::start(task, (format!("task process {i}"), long)).expect("start"))
        .collect();
    let started = Instant::now();
    for p in &mut processes {
        p.join().expect("task returns");
    }
    let joined = started.elapsed();
    println!(
        "main process: {:.2}s for three {:.1}s processes joined one after the other ({:.2} sleeps' worth)",
        joined.as_secs_f64(),
        long.as_secs_f64(),
        joined.as_secs_f64() / long.as_secs_f64()
    );
    assert!(
        joined < long * 2,
        "three parallel sleeps take about one sleep, not three"
    );
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
