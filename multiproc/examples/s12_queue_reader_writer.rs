//! S12 — a writer puts A, B, C with random sleeps; a reader loops on `get()` for ever;
//! the parent joins the writer and terminates the reader.
//!
//! Seed 001 (inter-process communication): `write` prints "写 进程" and puts each value
//! after printing "A 写入 Queue"; `read` prints "读 进程" and then every value it takes,
//! in an endless `while True: q.get(True)`. The reader never ends by itself: the parent
//! `terminate()`s it, blocked in `get`, and that breaks nothing.
//!
//! The seed counts on the writer's last sleep to give the reader time to print C before
//! it is terminated; here the reader also reports each value on a second queue and the
//! parent waits for the three reports, so the output is the same on every run.
//! `MULTIPROC_TOUR_FAST=1` scales the writer's random sleeps (up to 1 s) down to 50 ms.

use std::time::Duration;

use multiproc::{Process, ProcessError, Queue};

/// The longest of the writer's random sleeps (`random.random()` seconds in the seed).
fn max_sleep() -> Duration {
    if std::env::var_os("MULTIPROC_TOUR_FAST").is_some_and(|v| v == "1") {
        Duration::from_millis(50)
    } else {
        Duration::from_secs(1)
    }
}

/// `random.random()`, as a fraction of `max`: a small linear congruential generator
/// seeded from the pid and the clock (good enough to vary a sleep; no dependency).
fn random_sleep(state: &mut u64, max: Duration) -> Duration {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let fraction = (*state >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(fraction)
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// The seed's `write`.
fn write((data, max): (Queue<String>, Duration)) {
    println!("writer process: ({})", std::process::id());
    let mut rng = seed();
    for value in ["A", "B", "C"] {
        println!("{value} written to the queue");
        data.put(value.to_string()).expect("the queue is open");
        std::thread::sleep(random_sleep(&mut rng, max));
    }
}

/// The seed's `read`: never returns.
fn read((data, seen): (Queue<String>, Queue<String>)) {
    println!("reader process: ({})", std::process::id());
    loop {
        let value = data.get().expect("an item");
        println!("value read: {value}");
        seen.put(value).expect("the queue is open");
    }
}

/// Runs the scenario.
pub fn run() {
    // The parent creates the Queue and passes it to the children.
    let q = Queue::<String>::new().expect("queue");
    let seen = Queue::<String>::new().expect("queue");
    let mut data_write = Process::start(write, (q.clone(), max_sleep())).expect("start");
    let mut data_read = Process::start(read, (q.clone(), seen.clone())).expect("start");
    data_write.join().expect("the writer returns");

    let read: Vec<String> = (0..3).map(|_| seen.get().expect("a report")).collect();
    assert_eq!(read, ["A", "B", "C"]);

    // The reader is now blocked in get(), for ever: end it.
    data_read.terminate().expect("send SIGTERM");
    let err = data_read
        .join()
        .expect_err("a terminated reader returns nothing");
    println!("reader: {err}");
    assert!(
        matches!(&err, ProcessError::Signaled { status, .. } if status.signal_name() == Some("SIGTERM"))
    );

    // Killing a process blocked in get() left the queue as it was.
    q.put("D".to_string()).expect("the queue is open");
    let after = q.get().expect("an item");
    println!("the queue still works after the terminate: put D, got {after}");
    assert_eq!(after, "D");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
