//! S10: `Pool.map(f, iterable)` gives the results in input order, whatever order the
//! workers finish in; and a CPU-bound map runs about as many times faster as there are
//! cores.
//!
//! Seed 001 ("a pool is usually used with map, as in `P.map(f, xs)`").

use std::time::{Duration, Instant};

use multiproc::pool::Pool;

/// Sleeps longer for smaller inputs, so that the workers finish out of order.
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(5 * (10 - x)));
    x * x
}

/// A CPU-bound task (pybench's `cpu_work`).
fn cpu_work(k: u64) -> u64 {
    let mut s = 0u64;
    for i in 0..std::hint::black_box(k) {
        s = (s * 31 + i) % 1_000_003;
    }
    s
}

/// Runs the scenario.
pub fn run() {
    let pool = Pool::new(4).expect("start the pool");
    let squares = pool.map(slow_square, 0..10).expect("map");
    println!("{squares:?}");
    assert_eq!(squares, (0..10).map(|x| x * x).collect::<Vec<_>>());

    // The CPU-bound map of pybench's cpu_speedup: 8 items, one per task.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = Pool::new(cores).expect("start the pool");
    let work = vec![2_000_000u64; 8];
    let t0 = Instant::now();
    let sequential: Vec<u64> = work.iter().map(|&k| cpu_work(k)).collect();
    let seq = t0.elapsed();
    let t0 = Instant::now();
    let parallel = pool.with_chunksize(1).map(cpu_work, work).expect("map");
    let par = t0.elapsed();
    assert_eq!(parallel, sequential);
    println!(
        "8 CPU-bound items: {:.0} ms one after the other, {:.0} ms in a Pool({cores}): {:.2}x",
        seq.as_secs_f64() * 1e3,
        par.as_secs_f64() * 1e3,
        seq.as_secs_f64() / par.as_secs_f64()
    );
    pool.close();
    pool.join().expect("the pool was closed");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
