//! S16 (processes): an `RLock` shared by processes is re-entered by its holder; a plain
//! `Lock` re-acquired by its holder is reported as `WouldDeadlock` instead of hanging.
//!
//! Seed 001 shows this with threads (`s16_lock_rlock`): five `MyThreadRLock` threads each
//! `acquire()` the `RLock` twice and bump a shared number; `MyThreadLock` does the same
//! with a `Lock` and deadlocks. Here the same classes are processes ([`Run`]
//! implementations): the number is a shared [`Value`], guarded by a
//! [`multiproc::sync::RLock`] or [`multiproc::sync::Lock`] that each process receives
//! with its fields.

use std::time::Duration;

use multiproc::shared::Value;
use multiproc::sync::{Lock, LockError, RLock};
use multiproc::{Process, Run, current_process};
use serde::{Deserialize, Serialize};

/// Python's `class MyThreadRLock(threading.Thread)`, as a process: its fields are what
/// the seed's `run()` reads as globals.
#[derive(Serialize, Deserialize)]
struct MyProcessRLock {
    r_lock: RLock,
    number: Value<u32>,
}

impl Run for MyProcessRLock {
    type Output = u32;
    fn run(self) -> u32 {
        std::thread::sleep(Duration::from_millis(10));
        let outer = self.r_lock.lock().expect("no holder died");
        let number = self.number.get() + 1;
        self.number.set(number);
        println!("{} number to {number}", current_process().name);
        // Acquired again by its holder: fine for an RLock.
        let inner = self.r_lock.lock().expect("the holder re-enters an RLock");
        drop(inner);
        drop(outer); // released as many times as acquired
        number
    }
}

/// Python's `class MyThreadLock(threading.Thread)`: its second `acquire()` hangs in Python.
#[derive(Serialize, Deserialize)]
struct MyProcessLock {
    lock: Lock,
    number: Value<u32>,
}

impl Run for MyProcessLock {
    type Output = bool;
    fn run(self) -> bool {
        let _held = self.lock.lock().expect("first acquire");
        let number = self.number.get() + 1;
        self.number.set(number);
        println!("{} set number to {number}", current_process().name);
        match self.lock.lock() {
            Err(err @ LockError::WouldDeadlock) => {
                println!("second acquire: {err}");
                true
            }
            _ => false,
        }
    }
}

/// Runs five `MyProcessRLock` processes, then one `MyProcessLock`.
pub fn run() {
    let r_lock = RLock::new().expect("an RLock");
    let number = Value::new(0u32).expect("shared memory");
    let processes: Vec<Process<u32>> = (0..5)
        .map(|_| {
            Process::start_run(MyProcessRLock {
                r_lock: r_lock.clone(),
                number: number.clone(),
            })
            .expect("start")
        })
        .collect();
    let mut seen: Vec<u32> = processes
        .into_iter()
        .map(|mut p| p.join().expect("run returns"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3, 4, 5], "each process held the RLock alone");
    assert!(r_lock.try_lock().is_ok(), "every guard was dropped");

    let lock = Lock::new().expect("a lock");
    let reported = Process::start_run(MyProcessLock {
        lock: lock.clone(),
        number: number.clone(),
    })
    .expect("start")
    .join()
    .expect("run returns");
    assert!(
        reported,
        "re-acquiring a Lock in its holder is an error, not a hang"
    );
    assert!(lock.try_lock().is_ok(), "released when the guard dropped");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
