//! S21: `ThreadPoolExecutor(max_workers=2)`: `submit` returns at once, `done()`,
//! `cancel()` fails for a task already running, `result()`; `as_completed` yields in
//! completion order; `map` yields in input order; `with` shuts the pool down.
//!
//! Seed 002 (the `concurrent.futures` section). The seed's "pages" take 2 to 4 seconds;
//! `MULTIPROC_TOUR_FAST=1` makes a second 50 ms.

use std::time::Duration;

use multiproc::executor::{ThreadPoolExecutor, as_completed};

/// One "second" of the seed's simulated network requests.
fn second() -> Duration {
    if std::env::var_os("MULTIPROC_TOUR_FAST").is_some_and(|v| v == "1") {
        Duration::from_millis(50)
    } else {
        Duration::from_secs(1)
    }
}

/// The seed's `get_html(times)`: sleeps `times` seconds (the simulated request).
fn get_html(times: u32) -> u32 {
    std::thread::sleep(second() * times);
    println!("get page {times}s finished");
    times
}

/// Runs the seed's three programs.
pub fn run() {
    // 1. Simple use.
    let executor = ThreadPoolExecutor::new(2);
    let task1 = executor.submit(|| get_html(3)).expect("open pool");
    let task2 = executor.submit(|| get_html(2)).expect("open pool");
    println!("{}", task1.done()); // False: not finished yet
    // Both workers took a task at once: task2 runs already, so it cannot be cancelled.
    while !task2.running() && !task2.done() {
        std::thread::yield_now();
    }
    let cancelled = task2.cancel();
    println!("{cancelled}"); // False
    assert!(!task1.done() && !cancelled);
    task1.wait();
    println!("{}", task1.done()); // True
    let r1 = task1.result().expect("task1 ran");
    println!("{r1}"); // 3
    assert_eq!(r1, 3);
    assert_eq!(task2.result().expect("task2 ran"), 2);

    // 2. as_completed: in completion order.
    let urls = [3, 2, 4];
    let all_task: Vec<_> = urls
        .iter()
        .map(|&url| executor.submit(move || get_html(url)).expect("open pool"))
        .collect();
    let mut order = Vec::new();
    for future in as_completed(all_task) {
        let data = future.result().expect("a page");
        println!("in main: get page {data}s success");
        order.push(data);
    }
    assert_eq!(order, [2, 3, 4], "completion order");

    // 3. map: in input order, whatever finishes first.
    let mut seen = Vec::new();
    for data in executor.map(get_html, urls).expect("open pool") {
        let data = data.expect("a page");
        println!("in main: get page {data}s success");
        seen.push(data);
    }
    assert_eq!(seen, urls, "input order");

    // `with ThreadPoolExecutor(max_workers=3) as executor: executor.map(...)`: the
    // pool is shut down (and waited for) when it goes out of scope.
    {
        let executor = ThreadPoolExecutor::new(3);
        let _ = executor
            .map(|i: u32| println!("thread_function({i})"), 0..3)
            .expect("open pool")
            .count();
    }
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
