//! S14: two threads change a shared balance 100 000 times under a Lock; it ends at 0.
//!
//! Seed 001: `balance = balance + n; balance = balance - n` in `run_thread(5)` and
//! `run_thread(8)`, each step between `lock.acquire()` and `lock.release()`.

use multiproc::thread::{Lock, Thread};

/// The seed's global `balance` and its `lock`, in one: the lock owns the balance.
static BALANCE: Lock<i64> = Lock::new(0);

fn change_it(balance: &mut i64, n: i64) {
    // Deposit, then withdraw: the result should be 0.
    *balance += n;
    *balance -= n;
}

fn run_thread(n: i64) {
    for _ in 0..100_000 {
        // Only one thread holds the lock at a time; the guard releases it at the end
        // of each iteration (Python's `try: … finally: lock.release()`, or `with lock:`).
        let mut balance = BALANCE.lock().expect("not held by this thread yet");
        change_it(&mut balance, n);
    }
}

/// Runs `run_thread(5)` and `run_thread(8)` together and prints the balance.
pub fn run() {
    let t1 = Thread::start(|| run_thread(5)).expect("start a thread");
    let t2 = Thread::start(|| run_thread(8)).expect("start a thread");
    t1.join().expect("run_thread does not panic");
    t2.join().expect("run_thread does not panic");
    let balance = *BALANCE.lock().expect("no thread holds it now");
    println!("{balance}");
    assert_eq!(balance, 0, "every change happened under the lock");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
