//! Review findings on issue 15's shared memory, locks and barrier: each test shows a
//! sequence that went wrong before its fix (two live `&mut` to one shared value, a
//! barrier that hung for ever, a manager that removed another program's name, a name
//! leaked by a creation racing `shutdown`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use multiproc::shared::{Array, Value};
use multiproc::sync::{Lock, LockError, RLock};

multiproc::test_support!();

mod common;

/// Finding 1: a value under a supplied `RLock` gave its holder a second guard, hence a
/// second `&mut` to the same `u64`. Now the value's own mutex is taken under the
/// supplied lock, and the second guard is refused.
#[test]
fn a_value_under_a_supplied_rlock_is_not_locked_twice() {
    let rlock = RLock::new().unwrap();
    let v = Value::with_lock(0u64, rlock.clone()).unwrap();
    let mut a = v.lock().unwrap();
    assert!(matches!(v.lock(), Err(LockError::WouldDeadlock)));
    *a = 7;
    drop(a);
    assert!(!rlock.locked(), "the refused call let go of the RLock it took");
    // The RLock still groups: its holder reads and writes every value under it.
    let w = Value::with_lock(1i32, rlock.clone()).unwrap();
    {
        let _both = rlock.lock().unwrap();
        v.set(v.get() + 1);
        w.set(w.get() + 1);
        assert_eq!(rlock.count(), 1, "get/set let go of what they took");
    }
    assert_eq!((v.get(), w.get()), (8, 2));
}

/// Finding 1, the array form: `arr.set` while a guard of the same array was alive wrote
/// under a live `&[T]`. Now it panics (the documented `get`/`set` under one's own
/// guard), and the slice keeps its value.
#[test]
fn an_array_under_a_supplied_rlock_is_not_written_under_its_own_guard() {
    let rlock = RLock::new().unwrap();
    let arr = Array::<u32>::with_lock(2, rlock.clone()).unwrap();
    let g = arr.lock().unwrap();
    let s = &g[..];
    let wrote = catch_unwind(AssertUnwindSafe(|| arr.set(0, 9)));
    assert!(wrote.is_err(), "set under the array's own guard was refused");
    assert_eq!(s[0], 0);
    drop(g);
    assert!(arr.set(0, 9));
    assert_eq!(arr.to_vec(), [9, 0]);
}

/// Finding 2: `release()` of the supplied lock under a live guard ended the guard's
/// hold, and another thread then wrote the value while the guard wrote it too. Now the
/// value's own mutex stays held until the guard is dropped.
fn release_under_a_guard_keeps_the_value_held(value: Value<u64>, release: impl Fn() -> bool) {
    let mut g = value.lock().unwrap();
    assert!(release(), "the holder may release the supplied lock");
    std::thread::scope(|s| {
        let other = s.spawn(|| match value.lock_timeout(Duration::from_millis(200)) {
            Err(LockError::Timeout) => true,
            Ok(_) => false,
            Err(e) => panic!("unexpected {e:?}"),
        });
        assert!(other.join().unwrap(), "another thread got a guard of a held value");
    });
    *g = 41;
    drop(g);
    std::thread::scope(|s| {
        s.spawn(|| *value.lock().unwrap() += 1).join().unwrap();
    });
    assert_eq!(value.get(), 42);
}

#[test]
fn releasing_a_supplied_lock_under_a_guard_does_not_free_the_value() {
    let lock = Lock::new().unwrap();
    let v = Value::with_lock(0u64, lock.clone()).unwrap();
    release_under_a_guard_keeps_the_value_held(v, || lock.release().is_ok());
    assert!(!lock.locked());

    let rlock = RLock::new().unwrap();
    let v = Value::with_lock(0u64, rlock.clone()).unwrap();
    release_under_a_guard_keeps_the_value_held(v, || rlock.release().is_ok());
    assert!(!rlock.locked());
}

/// Finding 8: `RawArray`/`RawValue` items are copied with relaxed atomics, a word at a
/// time where the alignment allows, so threads writing and reading at once only tear
/// (each aligned word is whole) and items of odd sizes still round-trip. The former
/// volatile copies were a data race (undefined behaviour), which no assertion can show;
/// this pins the behaviour the new copies promise.
#[test]
fn raw_items_are_copied_word_by_word_and_round_trip_at_every_size() {
    use multiproc::shared::{RawArray, RawValue};

    let odd = RawArray::<[u8; 3]>::zeroed(5).unwrap();
    for i in 0..5 {
        assert!(odd.set(i, [i as u8, 10 + i as u8, 20 + i as u8]));
    }
    assert_eq!(odd.get(4), Some([4, 14, 24]));
    assert_eq!(odd.to_vec()[1], [1, 11, 21]);
    let halves = RawValue::new([1u16, 2, 3]).unwrap();
    halves.set([4, 5, 6]);
    assert_eq!(halves.get(), [4, 5, 6]);

    let pairs = RawArray::<[u64; 2]>::zeroed(1).unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for k in 1..=20_000u64 {
                pairs.set(0, [k, k]);
            }
        });
        let mut seen = 0;
        while !writer.is_finished() {
            let [a, b] = pairs.get(0).unwrap();
            assert!(a <= 20_000 && b <= 20_000, "a word came out torn: {a:#x} {b:#x}");
            seen = seen.max(a);
        }
        writer.join().unwrap();
        assert!(seen <= 20_000);
    });
    assert_eq!(pairs.get(0), Some([20_000, 20_000]));
}
