//! Review findings on issue 15's shared memory, locks and barrier: each test shows a
//! sequence that went wrong before its fix (two live `&mut` to one shared value, a
//! barrier that hung for ever, a manager that removed another program's name, a name
//! leaked by a creation racing `shutdown`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use multiproc::StartMethod;
use multiproc::shared::{Array, SharedMemoryManager, Value};
use multiproc::sync::{Barrier, BrokenBarrier, Lock, LockError, RLock};
use multiproc::testing::LeakCheck;

multiproc::test_support!();

mod common;
use common::{PROMPT, builder, wait_until};

/// Finding 1: a value under a supplied `RLock` gave its holder a second guard, hence a
/// second `&mut` to the same `u64`. Now the value's own mutex is taken under the
/// supplied lock, and the second guard is refused.
#[test]
fn a_value_under_a_supplied_rlock_is_not_locked_twice() {
    let leaks = LeakCheck::start();
    {
        let rlock = RLock::new().unwrap();
        let v = Value::with_lock(0u64, rlock.clone()).unwrap();
        let mut a = v.lock().unwrap();
        assert!(matches!(v.lock(), Err(LockError::WouldDeadlock)));
        *a = 7;
        drop(a);
        assert!(
            !rlock.locked(),
            "the refused call let go of the RLock it took"
        );
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
    leaks.assert_clean();
}

/// Finding 1, the array form: `arr.set` while a guard of the same array was alive wrote
/// under a live `&[T]`. Now it panics (the documented `get`/`set` under one's own
/// guard), and the slice keeps its value.
#[test]
fn an_array_under_a_supplied_rlock_is_not_written_under_its_own_guard() {
    let leaks = LeakCheck::start();
    {
        let rlock = RLock::new().unwrap();
        let arr = Array::<u32>::with_lock(2, rlock.clone()).unwrap();
        let g = arr.lock().unwrap();
        let s = &g[..];
        let wrote = catch_unwind(AssertUnwindSafe(|| arr.set(0, 9)));
        assert!(
            wrote.is_err(),
            "set under the array's own guard was refused"
        );
        assert_eq!(s[0], 0);
        drop(g);
        assert!(arr.set(0, 9));
        assert_eq!(arr.to_vec(), [9, 0]);
    }
    leaks.assert_clean();
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
        assert!(
            other.join().unwrap(),
            "another thread got a guard of a held value"
        );
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
    let leaks = LeakCheck::start();
    {
        let lock = Lock::new().unwrap();
        let v = Value::with_lock(0u64, lock.clone()).unwrap();
        release_under_a_guard_keeps_the_value_held(v, || lock.release().is_ok());
        assert!(!lock.locked());

        let rlock = RLock::new().unwrap();
        let v = Value::with_lock(0u64, rlock.clone()).unwrap();
        release_under_a_guard_keeps_the_value_held(v, || rlock.release().is_ok());
        assert!(!rlock.locked());
    }
    leaks.assert_clean();
}

/// Finding 8: `RawArray`/`RawValue` items are copied with relaxed atomics, a word at a
/// time where the alignment allows, so threads writing and reading at once only tear
/// (each aligned word is whole) and items of odd sizes still round-trip. The former
/// volatile copies were a data race (undefined behaviour), which no assertion can show;
/// this pins the behaviour the new copies promise.
#[test]
fn raw_items_are_copied_word_by_word_and_round_trip_at_every_size() {
    let leaks = LeakCheck::start();
    {
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
                assert!(
                    a <= 20_000 && b <= 20_000,
                    "a word came out torn: {a:#x} {b:#x}"
                );
                seen = seen.max(a);
            }
            writer.join().unwrap();
            assert!(seen <= 20_000);
        });
        assert_eq!(pairs.get(0), Some([20_000, 20_000]));
    }
    leaks.assert_clean();
}

fn shm_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/dev/shm/{name}")).exists()
}

/// Another program's segment: a file in `/dev/shm` this process did not make through
/// the library.
fn foreign_segment(name: &str) -> std::path::PathBuf {
    let path = std::path::PathBuf::from(format!("/dev/shm/{name}"));
    std::fs::write(&path, b"not yours").unwrap();
    path
}

/// Finding 3: a manager announced a name before creating it, and a creation that failed
/// (the name was another program's) left the name with the watcher, which removed the
/// other program's segment at shutdown. Also: a segment another program makes under a
/// name after the manager's was unlinked is not the manager's to remove.
#[test]
fn a_manager_removes_only_the_segments_it_made() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let taken = format!("mp-review-taken-{}-{method:?}", std::process::id());
        let taken_path = foreign_segment(&taken);
        let smm = SharedMemoryManager::start_with(method).unwrap();
        let err = smm.shared_memory_named(&taken, 16).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);

        let reused = format!("mp-review-reused-{}-{method:?}", std::process::id());
        let ours = smm.shared_memory_named(&reused, 16).unwrap();
        ours.unlink().unwrap();
        let reused_path = foreign_segment(&reused);
        let kept = smm.shared_memory(16).unwrap().name();

        smm.shutdown().unwrap();
        assert!(
            shm_exists(&taken),
            "{method:?}: a segment the manager failed to take"
        );
        assert!(
            shm_exists(&reused),
            "{method:?}: a name made again by someone else"
        );
        assert!(!shm_exists(&kept), "{method:?}: the manager's own segment");
        assert_eq!(std::fs::read(&taken_path).unwrap(), b"not yours");
        std::fs::remove_file(taken_path).unwrap();
        std::fs::remove_file(reused_path).unwrap();
    }
    leaks.assert_clean();
}

/// Finding 4: a creation racing `shutdown` could pass the "still running" check, then
/// announce its name after the watcher had stopped reading: the name stayed in
/// `/dev/shm`. Now every creation either fails or has its name removed by the shutdown.
#[test]
fn a_creation_racing_shutdown_leaves_no_name() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        for round in 0..10 {
            let smm = &SharedMemoryManager::start_with(method).unwrap();
            // The maker says when it has made one, so the shutdown meets it mid-stream.
            let (first, made_one) = std::sync::mpsc::channel();
            let made = std::thread::scope(|s| {
                let maker = s.spawn(move || {
                    let mut made = Vec::new();
                    while let Ok(shm) = smm.shared_memory(8) {
                        made.push(shm.name());
                        let _ = first.send(());
                    }
                    made
                });
                made_one.recv().unwrap();
                smm.shutdown().unwrap();
                maker.join().unwrap()
            });
            let left: Vec<&String> = made.iter().filter(|n| shm_exists(n)).collect();
            assert!(
                left.is_empty(),
                "{method:?} round {round}: names left {left:?}"
            );
        }
    }
    leaks.assert_clean();
}

/// A barrier action that SIGKILLs its own process.
fn kill_myself() {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
}

/// Arrives last at `barrier`, so that this process runs its action.
fn arrive_last(barrier: Barrier) {
    let _ = barrier.wait();
}

/// Finding 5: the last party, killed in the action, left the "releasing" bit set, and
/// every waiter without a timeout slept for ever. Now the sleepers see the releaser's
/// process gone and the barrier breaks for all of them.
#[test]
fn a_releaser_killed_in_the_action_breaks_the_barrier_for_everyone() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let barrier = Barrier::builder(3).action(kill_myself).build().unwrap();
        let (done, results) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let (barrier, done) = (barrier.clone(), done.clone());
            std::thread::spawn(move || {
                let result = barrier.wait();
                // Its handle goes before the result does: the leak check at the end
                // must not find a waiter thread's mapping still there.
                drop(barrier);
                let _ = done.send(result);
            });
        }
        wait_until("both parties to wait", || barrier.n_waiting() == 2);
        let mut last = builder(method).start(arrive_last, barrier.clone()).unwrap();
        for _ in 0..2 {
            assert_eq!(
                results.recv_timeout(PROMPT),
                Ok(Err(BrokenBarrier)),
                "{method}: a waiter left with the releaser dead"
            );
        }
        common::assert_killed_by(&mut last, libc::SIGKILL, "the releaser");
        assert!(barrier.broken());
        assert_eq!(barrier.wait_timeout(PROMPT), Err(BrokenBarrier));
        barrier.reset();
        assert!(!barrier.broken());
    }
    leaks.assert_clean();
}

/// The deadline of the waiter that times out, for the action to outlast it.
static WAITER_DEADLINE: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
const SHORT: Duration = Duration::from_millis(100);

/// An action that runs until the short-timeout waiter's deadline has passed.
fn outlast_the_timeout() {
    let deadline = WAITER_DEADLINE
        .lock()
        .unwrap()
        .expect("the deadline is set first");
    // Not synchronisation: the scenario needs the timeout to pass during the action.
    std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()) + SHORT);
}

/// Finding 5, second part: a waiter whose timeout passed while the action ran broke a
/// round in which everyone had arrived. Now it waits for the release and passes, as in
/// Python (whose action runs under the barrier's lock).
#[test]
fn a_timeout_passing_during_the_action_does_not_break_a_complete_round() {
    let leaks = LeakCheck::start();
    {
        let barrier = Barrier::builder(2)
            .action(outlast_the_timeout)
            .build()
            .unwrap();
        *WAITER_DEADLINE.lock().unwrap() = Some(std::time::Instant::now() + SHORT);
        let waiter = {
            let barrier = barrier.clone();
            std::thread::spawn(move || barrier.wait_timeout(SHORT))
        };
        wait_until("the waiter to wait", || barrier.n_waiting() == 1);
        let mine = barrier.wait();
        let theirs = waiter.join().unwrap();
        let mut both = [mine.unwrap(), theirs.expect("the waiter passed")];
        both.sort();
        assert_eq!(both, [0, 1]);
        assert!(!barrier.broken());
    }
    leaks.assert_clean();
}
