//! S39 — a lock keeps 10 processes' prints from interleaving.
//!
//! Seed 004 (avoiding access conflicts): `lock_func(l, number)` does `l.acquire()`,
//! `print "Number is: %d" % number`, `l.release()`, in 10 processes. Python 2's `print`
//! statement writes the text and the newline separately, so without the lock two
//! processes' lines can run into each other; the same two writes here (the text, a
//! flush, the newline) stay together because the lock is held across both.

use std::io::Write;

use multiproc::Process;
use multiproc::sync::Lock;

/// The seed's `lock_func`.
fn lock_func((l, number): (Lock, u32)) {
    let _held = l.lock().expect("no holder died");
    let mut out = std::io::stdout().lock();
    write!(out, "Number is: {number}").expect("stdout");
    out.flush().expect("stdout");
    writeln!(out).expect("stdout");
    out.flush().expect("stdout");
}

/// Runs the scenario.
pub fn run() {
    let l = Lock::new().expect("a lock");
    let processes: Vec<Process<()>> = (0..10)
        .map(|number| Process::start(lock_func, (l.clone(), number)).expect("start"))
        .collect();
    // Python joins non-daemon children at exit; here, explicitly.
    for mut p in processes {
        p.join().expect("lock_func returns");
    }
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
