//! S2: N parallel one-second I/O tasks take about one second, not N.
//!
//! Seed 000: five `io_task()`s (a one-second sleep standing for I/O) run one after the
//! other take ≈ 5 s; the same five in five processes take ≈ 1 s. Seed 003: three
//! 3-second processes started, then joined one after the other, take ≈ 3 s, because
//! while the parent waits for the first the other two run too. (Seed 002's two
//! "downloads" in two processes are the same program.)
//!
//! The times are printed, not asserted: a stopwatch measures the machine's load as much
//! as the program. What the seeds show, that the sleeps overlap, is proven by a barrier
//! instead: each task waits at a [`Barrier`] for all its fellows before it sleeps, so the
//! tasks pass it only if they all run at the same time; run one after the other, the
//! first would wait alone until the barrier's (generous) timeout broke it, and the
//! scenario would fail.
//!
//! `MULTIPROC_TOUR_FAST=1` scales the sleeps down to 0.2 s and 0.6 s.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use multiproc::Process;
use multiproc::sync::Barrier;

/// How long a task waits at the barrier for its fellows before the scenario fails.
const MEETING_LIMIT: Duration = Duration::from_secs(60);

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

/// Waits until every party of `barrier` is there too: they all run at once.
fn meet(barrier: &Barrier) {
    barrier
        .wait_timeout(MEETING_LIMIT)
        .expect("all the tasks run at the same time");
}

/// An I/O task in a process of its own, started once all five are running.
fn io_task_meeting((barrier, length): (Barrier, Duration)) {
    meet(&barrier);
    io_task(length);
}

/// The barrier of the pool's workers (each gets it from the pool's initializer).
static POOL_BARRIER: OnceLock<Barrier> = OnceLock::new();

fn set_pool_barrier(barrier: Barrier) {
    let _ = POOL_BARRIER.set(barrier);
}

/// An I/O task in a pool worker, started once all five are running.
fn pooled_io_task(length: Duration) {
    meet(POOL_BARRIER.get().expect("the initializer ran"));
    io_task(length);
}

fn task((name, length, barrier): (String, Duration, Barrier)) {
    println!("{name} is running");
    meet(&barrier);
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
    let five = Barrier::new(5).expect("barrier");
    let mut processes: Vec<_> = (0..5)
        .map(|_| Process::start(io_task_meeting, (five.clone(), io)).expect("start"))
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

    // The same five tasks in a pool of five workers (started before the clock runs,
    // as Python's Pool starts its workers in `Pool(5)`).
    let pool = multiproc::pool::Pool::builder()
        .processes(5)
        .initializer(set_pool_barrier, Barrier::new(5).expect("barrier"))
        .build()
        .expect("start the pool");
    let started = Instant::now();
    pool.with_chunksize(1)
        .map(pooled_io_task, [io; 5])
        .expect("io_task returns");
    let pooled = started.elapsed();
    println!("5 tasks in a Pool(5): {:.2}s", pooled.as_secs_f64());
    drop(pool);

    let three = Barrier::new(3).expect("barrier");
    let mut processes: Vec<_> = (1..=3)
        .map(|i| {
            Process::start(task, (format!("task process {i}"), long, three.clone())).expect("start")
        })
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
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
