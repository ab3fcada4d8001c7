//! The seed scenarios of shared memory and cross-process locks (S5 S14 S16 S29 S39 S41),
//! under every start method: increments under a lock are never lost, an RLock is
//! re-entrant across processes while a Lock re-acquired by its holder is reported, one
//! ticket has one buyer, lines written under a lock never interleave, and what a child
//! writes to a Value or an Array is what the parent reads.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use multiproc::StartMethod;
use multiproc::shared::{Array, Value};
use multiproc::sync::{Barrier, Lock, LockError, RLock};
use multiproc::testing::LeakCheck;

multiproc::test_support!();

mod common;
use common::{PROMPT, start};

/// A barrier wait that cannot hang a test.
fn meet(barrier: &Barrier) {
    barrier
        .wait_timeout(PROMPT)
        .expect("every party reached the barrier");
}

// ---- S5: 10 processes × 50 increments of a shared Value ------------------------------

/// The seed's `func` with the lock: read and write under one guard, with a yield in
/// between to invite another process into the window.
fn add_50_locked((val, start): (Value<i32>, Barrier)) {
    meet(&start);
    for _ in 0..50 {
        let mut guard = val.lock().expect("no holder died");
        let read = *guard;
        std::thread::yield_now();
        *guard = read + 1;
    }
}

#[test]
fn s05_ten_processes_times_50_increments_under_the_lock_make_exactly_500() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let val = Value::new(0i32).unwrap();
            let start_line = Barrier::new(10).unwrap();
            let mut children: Vec<_> = (0..10)
                .map(|_| start(method, add_50_locked, (val.clone(), start_line.clone())))
                .collect();
            for c in &mut children {
                c.join_timeout(PROMPT).unwrap();
            }
            assert_eq!(val.get(), 500, "{method}");
        }
    }
    check.assert_clean();
}

// ---- S14: balance += n; balance -= n in two processes ---------------------------------

const ROUNDS: u32 = 10_000;

/// The seed's `run_thread(n)` with a separate `Lock`: `get` and `set` are atomic one by
/// one, the lock makes the four of them (and the count) one step.
fn change_under_lock(
    (balance, changes, lock, n, start): (Value<i64>, Value<u32>, Lock, i64, Barrier),
) {
    meet(&start);
    for _ in 0..ROUNDS {
        let _held = lock.lock().expect("no holder died");
        balance.set(balance.get() + n);
        std::thread::yield_now();
        balance.set(balance.get() - n);
        changes.set(changes.get() + 1);
    }
}

#[test]
fn s14_two_processes_change_a_balance_under_a_lock_and_it_ends_at_0() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let balance = Value::new(0i64).unwrap();
            let changes = Value::new(0u32).unwrap();
            let lock = Lock::new().unwrap();
            let start_line = Barrier::new(2).unwrap();
            let mut children = [5, 8].map(|n| {
                let args = (
                    balance.clone(),
                    changes.clone(),
                    lock.clone(),
                    n,
                    start_line.clone(),
                );
                start(method, change_under_lock, args)
            });
            for c in &mut children {
                c.join_timeout(PROMPT).unwrap();
            }
            assert_eq!(balance.get(), 0, "{method}");
            assert_eq!(changes.get(), 2 * ROUNDS, "{method}: no change was lost");
            assert!(lock.try_lock().is_ok(), "{method}: released");
        }
    }
    check.assert_clean();
}

/// The same with the Value's own lock: one guard for the deposit and the withdrawal.
/// Returns how often it found the balance other than 0 on taking the guard (the other
/// process's deposit showing through).
fn change_under_value_lock((balance, n, start): (Value<i64>, i64, Barrier)) -> u32 {
    meet(&start);
    let mut mid_change = 0;
    for _ in 0..ROUNDS {
        let mut held = balance.lock().expect("no holder died");
        if *held != 0 {
            mid_change += 1;
        }
        *held += n;
        std::thread::yield_now();
        *held -= n;
    }
    mid_change
}

#[test]
fn s14_two_processes_change_a_balance_under_its_own_lock_and_it_ends_at_0() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let balance = Value::new(0i64).unwrap();
            let start_line = Barrier::new(2).unwrap();
            let mut children = [5, 8].map(|n| {
                start(
                    method,
                    change_under_value_lock,
                    (balance.clone(), n, start_line.clone()),
                )
            });
            let mid_change = children.each_mut().map(|c| c.join_timeout(PROMPT).unwrap());
            assert_eq!(mid_change, [0, 0], "{method}: a change seen half done");
            assert_eq!(balance.get(), 0, "{method}");
        }
    }
    check.assert_clean();
}

// ---- S16: RLock re-entered across processes; Lock re-locked by its holder --------------

/// What a lock call gave: `"Ok"` or the error variant.
fn outcome<G>(result: Result<G, LockError<G>>) -> String {
    match result {
        Ok(_) => "Ok".to_string(),
        Err(e) => format!("{e:?}"),
    }
}

/// The seed's `MyThreadRLock` in a process, in steps the others watch: both guards
/// held (steps 1–2), only the outer one (3–4), none (5).
fn hold_rlock_twice((r_lock, step): (RLock, Barrier)) -> String {
    let outer = r_lock.lock().expect("free, no holder died");
    let inner = match r_lock.lock() {
        Ok(inner) => inner,
        Err(e) => return format!("re-locking the RLock: {e:?}"),
    };
    meet(&step); // 1: held twice
    meet(&step); // 2: the others looked
    drop(inner);
    meet(&step); // 3: held once
    meet(&step); // 4: the others looked
    drop(outer);
    meet(&step); // 5: free
    "ok".to_string()
}

/// Another process: what its `try_lock` gives while the holder has two guards, then
/// one; then whether it takes the freed RLock and re-enters it.
fn watch_then_take_rlock((r_lock, step): (RLock, Barrier)) -> [String; 4] {
    meet(&step); // 1
    let while_held_twice = outcome(r_lock.try_lock());
    meet(&step); // 2
    meet(&step); // 3
    let while_held_once = outcome(r_lock.try_lock());
    meet(&step); // 4
    meet(&step); // 5
    let outer = r_lock.lock_timeout(PROMPT);
    let taken = match &outer {
        Ok(_) => "Ok".to_string(),
        Err(e) => format!("{e:?}"),
    };
    let reentered = outcome(r_lock.try_lock());
    drop(outer);
    [while_held_twice, while_held_once, taken, reentered]
}

#[test]
fn s16_an_rlock_is_reentered_by_its_holder_in_a_child_and_free_once_both_guards_drop() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let r_lock = RLock::new().unwrap();
            let step = Barrier::new(3).unwrap();
            let mut holder = start(method, hold_rlock_twice, (r_lock.clone(), step.clone()));
            let mut other = start(
                method,
                watch_then_take_rlock,
                (r_lock.clone(), step.clone()),
            );

            meet(&step); // 1
            let in_parent_held_twice = outcome(r_lock.try_lock());
            meet(&step); // 2
            meet(&step); // 3
            let in_parent_held_once = outcome(r_lock.try_lock());
            meet(&step); // 4
            meet(&step); // 5
            assert_eq!(holder.join_timeout(PROMPT).unwrap(), "ok", "{method}");
            let [other_held_twice, other_held_once, taken, reentered] =
                other.join_timeout(PROMPT).unwrap();

            // Only the holder may re-enter: to every other process it is just taken.
            assert_eq!(
                in_parent_held_twice, "WouldBlock",
                "{method}: parent, two guards"
            );
            assert_eq!(
                other_held_twice, "WouldBlock",
                "{method}: another child, two guards"
            );
            assert_eq!(
                in_parent_held_once, "WouldBlock",
                "{method}: parent, one guard"
            );
            assert_eq!(
                other_held_once, "WouldBlock",
                "{method}: another child, one guard"
            );
            // Free once both guards dropped: another process takes it, and re-enters it.
            assert_eq!(taken, "Ok", "{method}: taken after the release");
            assert_eq!(reentered, "Ok", "{method}: re-entered by its new holder");

            let outer = r_lock.try_lock().expect("free again");
            let inner = r_lock.try_lock().expect("re-entrant in the parent too");
            drop((inner, outer));
        }
    }
    check.assert_clean();
}

/// The seed's `MyThreadLock` in a process: what its second `acquire()` gives (a hang in
/// Python), by `lock`, `lock_timeout` and `try_lock`, once the others looked (step 1–2).
fn relock_lock((lock, step): (Lock, Barrier)) -> [String; 3] {
    let _held = lock.lock().expect("free, no holder died");
    meet(&step); // 1: held
    meet(&step); // 2: the others looked
    [
        outcome(lock.lock()),
        outcome(lock.lock_timeout(PROMPT)),
        outcome(lock.try_lock()),
    ]
}

/// Another process, while the holder holds the lock: not the holder, so it waits.
fn lock_held_elsewhere((lock, step): (Lock, Barrier)) -> [String; 2] {
    meet(&step); // 1
    let got = [
        outcome(lock.try_lock()),
        outcome(lock.lock_timeout(Duration::from_millis(1))),
    ];
    meet(&step); // 2
    got
}

#[test]
fn s16_a_lock_relocked_by_its_holder_in_a_child_is_would_deadlock_not_a_hang() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let lock = Lock::new().unwrap();
            let step = Barrier::new(3).unwrap();
            let mut holder = start(method, relock_lock, (lock.clone(), step.clone()));
            let mut other = start(method, lock_held_elsewhere, (lock.clone(), step.clone()));
            meet(&step); // 1
            let in_parent = outcome(lock.try_lock());
            meet(&step); // 2
            let [by_lock, by_lock_timeout, by_try_lock] = holder.join_timeout(PROMPT).unwrap();
            let [other_try_lock, other_lock_timeout] = other.join_timeout(PROMPT).unwrap();

            assert_eq!(by_lock, "WouldDeadlock", "{method}: holder, lock()");
            assert_eq!(
                by_lock_timeout, "WouldDeadlock",
                "{method}: holder, lock_timeout()"
            );
            // try_lock never waits: "not now" is an honest answer too.
            assert!(
                by_try_lock == "WouldDeadlock" || by_try_lock == "WouldBlock",
                "{method}: holder, try_lock(): {by_try_lock}"
            );
            // WouldDeadlock is for the holder only: other processes just find it taken.
            assert_eq!(in_parent, "WouldBlock", "{method}: parent, try_lock()");
            assert_eq!(
                other_try_lock, "WouldBlock",
                "{method}: another child, try_lock()"
            );
            assert_eq!(
                other_lock_timeout, "Timeout",
                "{method}: another child, lock_timeout()"
            );
            assert!(
                lock.try_lock().is_ok(),
                "{method}: released at the holder's end"
            );
        }
    }
    check.assert_clean();
}

// ---- S29: 10 buyers, one ticket ------------------------------------------------------

/// The seed's `run(i, mutex)`: check, "buy" (yield), sell, under the mutex.
fn buy((mutex, tickets, start): (Lock, Value<u32>, Barrier)) -> bool {
    meet(&start);
    let _held = mutex.lock().expect("no holder died");
    let left = tickets.get();
    for _ in 0..10 {
        std::thread::yield_now();
    }
    if left == 1 {
        tickets.set(left - 1);
        true
    } else {
        false
    }
}

#[test]
fn s29_exactly_one_of_10_processes_gets_the_ticket() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let mutex = Lock::new().unwrap();
            let tickets = Value::new(1u32).unwrap();
            let start_line = Barrier::new(10).unwrap();
            let mut buyers: Vec<_> = (0..10)
                .map(|_| {
                    start(
                        method,
                        buy,
                        (mutex.clone(), tickets.clone(), start_line.clone()),
                    )
                })
                .collect();
            let got: Vec<bool> = buyers
                .iter_mut()
                .map(|b| b.join_timeout(PROMPT).unwrap())
                .collect();
            assert_eq!(got.iter().filter(|&&g| g).count(), 1, "{method}: {got:?}");
            assert_eq!(tickets.get(), 0, "{method}");
        }
    }
    check.assert_clean();
}

// ---- S39: lines written under a lock never interleave ----------------------------------

const LINES: u32 = 3;
const PIECES: u32 = 8;

/// The line process `who` writes as its `line`th, whole.
fn expected_line(who: u32, line: u32) -> String {
    let pieces: Vec<String> = (0..PIECES).map(|p| format!("{who}.{line}.{p}")).collect();
    format!("Number is: {}", pieces.join(" "))
}

/// The seed's `lock_func`, writing its lines piece by piece (one `write` each, with a
/// yield in between) to a file opened for appending, as a process printing to a shared
/// terminal does.
fn print_lines((l, path, who, start): (Lock, PathBuf, u32, Barrier)) {
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("the shared output file");
    meet(&start);
    for line in 0..LINES {
        let _held = l.lock().expect("no holder died");
        let text = expected_line(who, line);
        for piece in text.split_inclusive(' ').chain(["\n"]) {
            out.write_all(piece.as_bytes()).expect("write a piece");
            std::thread::yield_now();
        }
    }
}

/// Removes the file when dropped, passed or failed.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn s39_lines_of_10_processes_written_in_pieces_under_a_lock_never_interleave() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let path = std::env::temp_dir().join(format!(
                "multiproc-s39-{}-{}.txt",
                std::process::id(),
                method
            ));
            std::fs::File::create(&path).unwrap();
            let _remove = RemoveOnDrop(path.clone());
            let l = Lock::new().unwrap();
            let start_line = Barrier::new(10).unwrap();
            let mut children: Vec<_> = (0..10)
                .map(|who| {
                    start(
                        method,
                        print_lines,
                        (l.clone(), path.clone(), who, start_line.clone()),
                    )
                })
                .collect();
            for c in &mut children {
                c.join_timeout(PROMPT).unwrap();
            }
            let text = std::fs::read_to_string(&path).unwrap();

            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 10 * LINES as usize, "{method}:\n{text}");
            let mut next_line = [0u32; 10];
            for got in &lines {
                // Whose line it is, by its first piece; it must then be that line, whole.
                let who: u32 = got
                    .strip_prefix("Number is: ")
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|w| w.parse().ok())
                    .unwrap_or_else(|| panic!("{method}: a mangled line {got:?} in\n{text}"));
                let expected = expected_line(who, next_line[who as usize]);
                assert_eq!(*got, expected, "{method}: an interleaved line in\n{text}");
                next_line[who as usize] += 1;
            }
            assert_eq!(next_line, [LINES; 10], "{method}");
        }
    }
    check.assert_clean();
}

// ---- S41: a Value and an Array written by a child, read by the parent ------------------

/// What the seed stores: its own digits, not `std::f64::consts::PI`.
#[allow(clippy::approx_constant)]
const SEED_PI: f64 = 3.1415926;

/// The seed's `func(n, a)`; returns what it found before writing.
fn fill((n, a): (Value<f64>, Array<i32>)) -> (f64, Vec<i32>) {
    let before = (n.get(), a.to_vec());
    n.set(SEED_PI);
    for i in 0..a.len() {
        assert!(a.set(i, -(i as i32)));
    }
    assert!(!a.set(a.len(), 0), "out of range");
    before
}

#[test]
fn s41_a_child_writes_a_value_and_an_array_and_the_parent_reads_them() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let n = Value::new(0.0f64).unwrap();
            let a = Array::from_iter(0..10i32).unwrap();
            let mut child = start(method, fill, (n.clone(), a.clone()));
            let (n_before, a_before) = child.join_timeout(PROMPT).unwrap();
            assert_eq!(n_before, 0.0, "{method}");
            assert_eq!(a_before, (0..10).collect::<Vec<_>>(), "{method}");

            assert_eq!(n.get(), SEED_PI, "{method}");
            assert_eq!(n.get().to_string(), "3.1415926", "{method}");
            assert_eq!(
                a.to_vec(),
                [0, -1, -2, -3, -4, -5, -6, -7, -8, -9],
                "{method}"
            );
            assert_eq!(a.len(), 10, "{method}");
            assert_eq!(a.get(9), Some(-9), "{method}");
            assert_eq!(a.get(10), None, "{method}");
        }
    }
    check.assert_clean();
}
