//! S30: `queue.Queue(5)`: `put`, `full()`, `get`, `empty()`, `get_nowait()` raises
//! `Empty`, `get(timeout=3)` raises `Empty` after 3 s; then two threads, a producer and a
//! consumer, with `task_done()` and `join()`.
//!
//! Seed 003 (the `queue` module section). `MULTIPROC_TOUR_FAST=1` waits 0.3 s instead
//! of 3 s.

use std::thread;
use std::time::{Duration, Instant};

use multiproc::queue::local::{GetError, Queue};

/// The `timeout` of the seed's `q.get(timeout=3)`.
fn get_timeout() -> Duration {
    if std::env::var_os("MULTIPROC_TOUR_FAST").is_some_and(|v| v == "1") {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(3)
    }
}

/// Runs the seed program, then a producer/consumer pair.
pub fn run() {
    let q = Queue::new(5); // q = queue.Queue(5)
    q.put(111).expect("open queue");
    q.put(222).expect("open queue");
    println!("q.full() = {}", q.full());
    assert!(!q.full());

    let v1 = q.get().expect("an item");
    let v2 = q.get().expect("an item");
    let v3 = q.try_get(); // q.get_nowait()
    println!("q.get_nowait() -> {v3:?}");
    assert_eq!(v3, Err(GetError::Empty));
    println!("q.empty() = {}", q.empty());
    assert!(q.empty());

    let timeout = get_timeout();
    let start = Instant::now();
    let v4 = q.get_timeout(timeout); // q.get(timeout=3)
    let waited = start.elapsed();
    println!("q.get(timeout={timeout:?}) -> {v4:?} after {waited:.2?}");
    assert_eq!(v4, Err(GetError::Timeout)); // Python raises Empty: `is_empty()` is true
    assert!(waited >= timeout);
    println!("{v1}");
    println!("{v2}");
    assert_eq!((v1, v2), (111, 222));

    producer_consumer();
}

/// A producer thread puts ten jobs into a `Queue(2)`, so it waits for room; a consumer
/// thread squares each and marks it done; `join()` returns once all ten are done.
fn producer_consumer() {
    let jobs = Queue::new(2);
    let consumer = {
        let jobs = jobs.clone();
        thread::spawn(move || {
            let mut total = 0;
            for job in jobs.iter() {
                total += job * job;
                jobs.task_done().expect("one task_done per job");
            }
            total
        })
    };
    let producer = {
        let jobs = jobs.clone();
        thread::spawn(move || {
            for job in 1..=10_u64 {
                jobs.put(job).expect("open queue");
            }
        })
    };
    producer.join().expect("producer finished");
    jobs.join(); // every job was taken and marked done
    println!("all jobs done: {} unfinished", jobs.unfinished_tasks());
    assert_eq!(jobs.unfinished_tasks(), 0);
    jobs.shutdown(false); // ends the consumer's loop
    let total = consumer.join().expect("consumer finished");
    println!("sum of squares 1..=10 = {total}");
    assert_eq!(total, 385);
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
