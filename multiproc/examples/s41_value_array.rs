//! S41 — `Value('d', 0.0)` and `Array('i', range(10))` written by a child, read by the
//! parent.
//!
//! Seed 004 (shared memory): `func(n, a)` sets `n.value = 3.1415926` and `a[i] = -i`;
//! after `join()` the parent prints `3.1415926` and `[0, -1, -2, …, -9]`: the child
//! wrote into memory the parent sees, where a global would have stayed the child's own
//! (S19).

use multiproc::Process;
use multiproc::shared::{Array, Value};

/// What the seed stores: its own digits, not `std::f64::consts::PI`.
#[allow(clippy::approx_constant)]
const SEED_PI: f64 = 3.1415926;

/// The seed's `func(n, a)`.
fn func((n, a): (Value<f64>, Array<i32>)) {
    n.set(SEED_PI);
    for i in 0..a.len() {
        a.set(i, -(i as i32));
    }
}

/// Runs the scenario.
pub fn run() {
    // 'd' is a C double, 'i' a C int.
    let n = Value::new(0.0f64).expect("shared memory");
    let a = Array::from_iter(0..10i32).expect("shared memory");
    let mut p = Process::start(func, (n.clone(), a.clone())).expect("start");
    p.join().expect("func returns");

    println!("{}", n.get());
    println!("{:?}", a.to_vec());
    assert_eq!(n.get(), SEED_PI);
    assert_eq!(n.get().to_string(), "3.1415926");
    assert_eq!(a.to_vec(), [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
