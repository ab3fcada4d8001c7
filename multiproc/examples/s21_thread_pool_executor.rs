//! S21: `ThreadPoolExecutor(max_workers=2)`: `submit` returns at once, `done()`,
//! `cancel()` fails for a task already running, `result()`; `as_completed` yields in
//! completion order; `map` yields in input order; `with` shuts the pool down.
//!
//! Seed 002 (the `concurrent.futures` section). The seed's "pages" take 2 to 4 seconds;
//! `MULTIPROC_TOUR_FAST=1` makes a second 50 ms.
//!
//! The seed relies on its sleeps' lengths for what it shows: that the 3-second task is
//! not done yet right after `submit`, and that `as_completed` yields 2, 3, 4. On a loaded
//! machine a sleep can end late, so here a longer task, after its sleep, also waits at a
//! gate that the main thread opens only once it has seen what must come first. The
//! timings stay the seed's; only the order is made certain. An `as_completed` that
//! yielded in submission order would wait for the 3-second page, whose gate opens only
//! after the 2-second one was yielded: the gate's (generous) limit would end it with a
//! panic, and the scenario would fail.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use multiproc::executor::{ThreadPoolExecutor, as_completed};

/// How long a gated task waits for the main thread before the scenario fails.
const GATE_LIMIT: Duration = Duration::from_secs(60);

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
    get_html_after(times, None)
}

/// `get_html(times)` that, after its sleep, also waits for the main thread to open
/// `gate` (by a send or by dropping its sender) before it finishes.
fn get_html_after(times: u32, gate: Option<Receiver<()>>) -> u32 {
    std::thread::sleep(second() * times);
    if let Some(gate) = gate {
        if let Err(RecvTimeoutError::Timeout) = gate.recv_timeout(GATE_LIMIT) {
            panic!("page {times}s: the main thread never let it finish");
        }
    }
    println!("get page {times}s finished");
    times
}

/// A task of `times` seconds that finishes only once the returned sender opens its gate.
fn gated(
    executor: &ThreadPoolExecutor,
    times: u32,
) -> (multiproc::executor::Future<u32>, Sender<()>) {
    let (open, gate) = channel();
    let future = executor
        .submit(move || get_html_after(times, Some(gate)))
        .expect("open pool");
    (future, open)
}

/// Runs the seed's three programs.
pub fn run() {
    // 1. Simple use.
    let executor = ThreadPoolExecutor::new(2);
    let (task1, finish_task1) = gated(&executor, 3);
    let task2 = executor.submit(|| get_html(2)).expect("open pool");
    println!("{}", task1.done()); // False: not finished yet (nor can it be: its gate is shut)
    // Both workers took a task at once: task2 runs already, so it cannot be cancelled.
    while !task2.running() && !task2.done() {
        std::thread::yield_now();
    }
    let cancelled = task2.cancel();
    println!("{cancelled}"); // False
    assert!(!task1.done() && !cancelled);
    drop(finish_task1);
    task1.wait();
    println!("{}", task1.done()); // True
    let r1 = task1.result().expect("task1 ran");
    println!("{r1}"); // 3
    assert_eq!(r1, 3);
    assert_eq!(task2.result().expect("task2 ran"), 2);

    // 2. as_completed: in completion order. The 3-second page finishes only after the
    // 2-second one was yielded, the 4-second page only after the 3-second one.
    let urls = [3, 2, 4];
    let (three, finish_three) = gated(&executor, 3);
    let two = executor.submit(|| get_html(2)).expect("open pool");
    let (four, finish_four) = gated(&executor, 4);
    let mut gates = [finish_three, finish_four].into_iter();
    let all_task = vec![three, two, four];
    let mut order = Vec::new();
    for future in as_completed(all_task) {
        let data = future.result().expect("a page");
        println!("in main: get page {data}s success");
        order.push(data);
        drop(gates.next()); // lets the next longer page finish
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
