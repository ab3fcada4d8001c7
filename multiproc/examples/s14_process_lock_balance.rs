//! S14 (processes): the seed's balance, changed 100 000 times by each of two processes
//! under a [`multiproc::sync::Lock`]; it ends at 0.
//!
//! Seed 001 shows this with threads (`s14_thread_lock_balance`): `balance = balance + n;
//! balance = balance - n` in `run_thread(5)` and `run_thread(8)`, each step between
//! `lock.acquire()` and `lock.release()`. Processes do not share globals (S19), so here
//! the balance is a shared [`Value`] and the lock a cross-process `Lock`, both passed to
//! the children as arguments (Python's `Value('q', 0)` and `multiprocessing.Lock()`).
//! Each `get` and `set` is atomic by itself; the `Lock` makes the four of them one step.

use multiproc::Process;
use multiproc::shared::Value;
use multiproc::sync::Lock;

const ROUNDS: u32 = 100_000;

fn change_it(balance: &Value<i64>, n: i64) {
    // Deposit, then withdraw: the result should be 0.
    balance.set(balance.get() + n);
    balance.set(balance.get() - n);
}

/// The seed's `run_thread(n)`, in a process.
fn run_process((balance, lock, n): (Value<i64>, Lock, i64)) {
    for _ in 0..ROUNDS {
        // lock.acquire(); try: change_it(n) finally: lock.release()
        let _held = lock.lock().expect("no holder died");
        change_it(&balance, n);
    }
}

/// Runs `run_process(5)` and `run_process(8)` together and prints the balance.
pub fn run() {
    let balance = Value::new(0i64).expect("shared memory");
    let lock = Lock::new().expect("a lock");
    let mut p1 = Process::start(run_process, (balance.clone(), lock.clone(), 5)).expect("start p1");
    let mut p2 = Process::start(run_process, (balance.clone(), lock.clone(), 8)).expect("start p2");
    p1.join().expect("run_process returns");
    p2.join().expect("run_process returns");
    let balance = balance.get();
    println!("{balance}");
    assert_eq!(balance, 0, "every change happened under the lock");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
