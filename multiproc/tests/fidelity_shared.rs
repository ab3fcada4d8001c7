//! Issue 15, "Shared memory and locks": `Lock::locked()`, `RLock` introspection and the
//! guard-less `acquire()`/`release()`; `Barrier` with an action and a default timeout;
//! lock-free `Atomic`s for every Python typecode; `Value`/`Array` around a lock the
//! caller supplies; `RawArray`/`RawValue`; named `SharedMemory` and a
//! `SharedMemoryManager` whose names go even when its owner is SIGKILLed. CPython's
//! anchors: _test_multiprocessing.py (`_TestLock`, `_TestBarrier` with an action,
//! `_TestValue`/`_TestArray` with `lock=`, `RawArray`) and test_sharedmemory.

use std::io::ErrorKind;
use std::sync::Mutex;
use std::time::Duration;

use multiproc::queue::Queue;
use multiproc::shared::{
    Array, Atomic, RawArray, RawValue, SharedMemory, SharedMemoryManager, SuppliedLock, Value,
};
use multiproc::sync::{Barrier, BrokenBarrier, Event, Lock, LockError, NotOwner, RLock};
use multiproc::testing::LeakCheck;
use multiproc::{Process, StartMethod};

multiproc::test_support!();

mod common;
use common::{PROMPT, assert_killed_by, builder, start, wait_until};

fn shm_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/dev/shm/{name}")).exists()
}

// ---- Lock / RLock ----------------------------------------------------------------

/// Acquires in one function and releases in another, as Python code may.
fn take(lock: &Lock) {
    lock.acquire().unwrap();
}

fn give_back(lock: &Lock) -> bool {
    lock.release().is_ok() && !lock.locked()
}

fn hold_then_release((lock, held, go): (Lock, Event, Event)) -> bool {
    take(&lock);
    held.set();
    assert!(go.wait_timeout(PROMPT));
    give_back(&lock)
}

#[test]
fn a_lock_acquired_without_a_guard_is_released_by_its_holder_only() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let (lock, held, go) = (
            Lock::new().unwrap(),
            Event::new().unwrap(),
            Event::new().unwrap(),
        );
        assert!(!lock.locked());
        let mut child = start(
            method,
            hold_then_release,
            (lock.clone(), held.clone(), go.clone()),
        );
        assert!(held.wait_timeout(PROMPT), "{method}");
        assert!(lock.locked(), "{method}: held by the child");
        assert_eq!(
            lock.release(),
            Err(NotOwner),
            "{method}: not ours to release"
        );
        assert!(lock.locked(), "{method}: a refused release changes nothing");
        assert!(
            matches!(lock.try_acquire(), Err(LockError::WouldBlock)),
            "{method}"
        );
        go.set();
        assert!(
            child.join_timeout(PROMPT).unwrap(),
            "{method}: the holder released it"
        );
        assert!(!lock.locked(), "{method}");
        lock.acquire_timeout(PROMPT).unwrap();
        assert!(lock.locked());
        assert!(
            matches!(lock.acquire(), Err(LockError::WouldDeadlock)),
            "{method}"
        );
        lock.release().unwrap();
        assert_eq!(
            lock.release(),
            Err(NotOwner),
            "{method}: released once only"
        );
    }
    leaks.assert_clean();
}

fn acquire_and_wait((lock, held, never): (Lock, Event, Event)) {
    lock.acquire().unwrap();
    held.set();
    never.wait();
}

#[test]
fn a_guardless_holder_that_is_killed_hands_the_lock_over_as_owner_died() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let (lock, held, never) = (
            Lock::new().unwrap(),
            Event::new().unwrap(),
            Event::new().unwrap(),
        );
        let mut child = start(
            method,
            acquire_and_wait,
            (lock.clone(), held.clone(), never),
        );
        assert!(held.wait_timeout(PROMPT), "{method}");
        child.kill().unwrap();
        assert_killed_by(&mut child, libc_sigkill(), "the holder");
        assert!(
            lock.locked(),
            "{method}: the dead holder's hold shows until taken over"
        );
        match lock.acquire_timeout(PROMPT) {
            Err(LockError::OwnerDied(())) => {}
            other => panic!("{method}: expected OwnerDied, got {other:?}"),
        }
        lock.release().unwrap();
        assert!(!lock.locked(), "{method}");
    }
    leaks.assert_clean();
}

fn libc_sigkill() -> i32 {
    9
}

fn rlock_held_elsewhere((lock, held, go): (RLock, Event, Event)) -> (u32, u32) {
    lock.acquire().unwrap();
    lock.acquire().unwrap();
    let twice = lock.count();
    held.set();
    assert!(go.wait_timeout(PROMPT));
    lock.release().unwrap();
    let once = lock.count();
    lock.release().unwrap();
    (twice, once)
}

#[test]
fn an_rlock_tells_its_holder_how_deep_it_holds_and_others_that_it_is_held() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let (lock, held, go) = (
            RLock::new().unwrap(),
            Event::new().unwrap(),
            Event::new().unwrap(),
        );
        let mut child = start(
            method,
            rlock_held_elsewhere,
            (lock.clone(), held.clone(), go.clone()),
        );
        assert!(held.wait_timeout(PROMPT), "{method}");
        assert!(lock.locked(), "{method}");
        assert!(!lock.is_owned(), "{method}: held, but not by this thread");
        assert_eq!(lock.count(), 0, "{method}");
        assert_eq!(lock.release(), Err(NotOwner), "{method}");
        go.set();
        assert_eq!(child.join_timeout(PROMPT).unwrap(), (2, 1), "{method}");
        assert!(!lock.locked(), "{method}");

        // In this thread: guards and guard-less holds count together.
        let guard = lock.lock().unwrap();
        lock.acquire().unwrap();
        assert_eq!(lock.count(), 2);
        lock.release().unwrap();
        assert_eq!(lock.count(), 1);
        assert!(lock.is_owned());
        drop(guard);
        assert!(!lock.locked() && !lock.is_owned());
    }
    leaks.assert_clean();
}

// ---- Barrier ----------------------------------------------------------------------

/// The counter the barrier action bumps, in whichever process runs it (set in each
/// process to the handle it was given; emptied at the end, so the test leaves nothing).
static ROUNDS: Mutex<Option<Atomic<u32>>> = Mutex::new(None);

fn count_round() {
    ROUNDS
        .lock()
        .unwrap()
        .as_ref()
        .expect("the counter is set before waiting")
        .fetch_add(1);
}

/// Waits at the barrier twice; after each round, what the action has counted.
fn two_rounds((barrier, rounds): (Barrier, Atomic<u32>)) -> Vec<u32> {
    *ROUNDS.lock().unwrap() = Some(rounds.clone());
    (0..2)
        .map(|_| {
            barrier.wait().expect("the barrier opens");
            rounds.load()
        })
        .collect()
}

#[test]
fn the_barrier_action_runs_once_per_round_before_anyone_is_released() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let counter = Atomic::new(0u32).unwrap();
        let barrier = Barrier::builder(3).action(count_round).build().unwrap();
        let mut children: Vec<_> = (0..2)
            .map(|_| start(method, two_rounds, (barrier.clone(), counter.clone())))
            .collect();
        let mine = two_rounds((barrier.clone(), counter.clone()));
        assert_eq!(
            mine,
            [1, 2],
            "{method}: the action ran before this party was released"
        );
        for child in &mut children {
            assert_eq!(child.join_timeout(PROMPT).unwrap(), [1, 2], "{method}");
        }
        assert_eq!(counter.load(), 2, "{method}: exactly one action per round");
        ROUNDS.lock().unwrap().take();
    }
    leaks.assert_clean();
}

fn panicking_action() {
    panic!("the barrier action fails on purpose");
}

#[test]
fn a_panicking_action_breaks_the_barrier_for_every_party() {
    let leaks = LeakCheck::start();
    let barrier = Barrier::builder(2)
        .action(panicking_action)
        .build()
        .unwrap();
    let other = {
        let barrier = barrier.clone();
        std::thread::spawn(move || barrier.wait())
    };
    let here = barrier.wait();
    let there = other.join().unwrap();
    assert_eq!((here, there), (Err(BrokenBarrier), Err(BrokenBarrier)));
    assert!(barrier.broken());
    barrier.reset();
    assert!(!barrier.broken());
    drop(barrier);
    leaks.assert_clean();
}

fn wait_with_default((barrier, started): (Barrier, Event)) -> bool {
    started.set();
    barrier.wait() == Err(BrokenBarrier)
}

#[test]
fn the_default_timeout_given_at_construction_bounds_every_wait() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let timeout = Duration::from_millis(50);
        let barrier = Barrier::builder(3).timeout(timeout).build().unwrap();
        assert_eq!(barrier.timeout(), Some(timeout));
        let started = Event::new().unwrap();
        // The handle carries it to another process: the child's wait breaks too.
        let mut child = start(
            method,
            wait_with_default,
            (barrier.clone(), started.clone()),
        );
        assert!(started.wait_timeout(PROMPT));
        assert_eq!(barrier.wait(), Err(BrokenBarrier), "{method}");
        assert!(
            child.join_timeout(PROMPT).unwrap(),
            "{method}: broken for the child too"
        );
        assert!(barrier.broken(), "{method}");
        assert_eq!(Barrier::new(2).unwrap().timeout(), None);
    }
    leaks.assert_clean();
}

// ---- Atomic for every typecode ------------------------------------------------------

type AllAtomics = (
    Atomic<i8>,
    Atomic<u8>,
    Atomic<i16>,
    Atomic<u16>,
    Atomic<i32>,
    Atomic<u32>,
    Atomic<i64>,
    Atomic<u64>,
    Atomic<f32>,
    Atomic<f64>,
    Atomic<bool>,
    Atomic<char>,
);

fn update_all(a: AllAtomics) -> bool {
    a.0.fetch_add(1); // 127 → -128: wraps at i8's width
    a.1.fetch_sub(1); // 0 → 255
    a.2.fetch_add(-300);
    a.3.fetch_add(65535); // 1 → 0
    a.4.swap(-7);
    a.5.store(u32::MAX);
    a.6.fetch_sub(i64::MAX);
    a.7.fetch_add(3);
    a.8.fetch_add(0.5);
    a.9.fetch_sub(0.25);
    let flipped = a.10.compare_exchange(false, true) == Ok(false);
    a.11.store('λ');
    flipped
}

#[test]
fn atomics_of_every_python_typecode_cross_processes() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let a: AllAtomics = (
            Atomic::new(127i8).unwrap(),
            Atomic::new(0u8).unwrap(),
            Atomic::new(100i16).unwrap(),
            Atomic::new(1u16).unwrap(),
            Atomic::new(3i32).unwrap(),
            Atomic::new(0u32).unwrap(),
            Atomic::new(0i64).unwrap(),
            Atomic::new(u64::MAX - 1).unwrap(),
            Atomic::new(1.5f32).unwrap(),
            Atomic::new(-1.0f64).unwrap(),
            Atomic::new(false).unwrap(),
            Atomic::new('a').unwrap(),
        );
        let mut child = start(method, update_all, a.clone());
        assert!(child.join_timeout(PROMPT).unwrap(), "{method}");
        assert_eq!(a.0.load(), -128, "{method}");
        assert_eq!(a.1.load(), 255);
        assert_eq!(a.2.load(), -200);
        assert_eq!(a.3.load(), 0);
        assert_eq!(a.4.load(), -7);
        assert_eq!(a.5.load(), u32::MAX);
        assert_eq!(a.6.load(), -i64::MAX);
        assert_eq!(a.7.load(), 1, "wraps at u64's width");
        assert_eq!(a.8.load(), 2.0);
        assert_eq!(a.9.load(), -1.25);
        assert!(a.10.load());
        assert_eq!(a.11.load(), 'λ');
        // Wrapped values are stored canonically: compare_exchange finds them.
        assert_eq!(a.0.compare_exchange(-128, 5), Ok(-128), "{method}");
        assert_eq!(a.3.compare_exchange(0, 9), Ok(0), "{method}");
    }
    leaks.assert_clean();
}

fn add_halves((x, n): (Atomic<f64>, u32)) {
    for _ in 0..n {
        x.fetch_add(0.5);
    }
}

#[test]
fn concurrent_float_additions_lose_nothing() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let x = Atomic::new(0.0f64).unwrap();
        let n = 20_000;
        let mut child = start(method, add_halves, (x.clone(), n));
        add_halves((x.clone(), n));
        child.join_timeout(PROMPT).unwrap();
        assert_eq!(x.load(), f64::from(n), "{method}: 2 × {n} × 0.5");
    }
    leaks.assert_clean();
}

// ---- Value / Array around a supplied lock ------------------------------------------

fn transfer((from, to, lock, n): (Value<i64>, Array<i64>, RLock, i64)) {
    for _ in 0..n {
        let _both = lock.lock().unwrap();
        from.set(from.get() - 1);
        to.set(0, to.get(0).unwrap() + 1);
    }
}

#[test]
fn values_under_one_supplied_rlock_change_together() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let lock = RLock::new().unwrap();
        let from = Value::with_lock(10_000i64, lock.clone()).unwrap();
        let to = Array::<i64>::with_lock(1, lock.clone()).unwrap();
        assert!(matches!(from.supplied_lock(), Some(SuppliedLock::RLock(_))));
        let n = 2_000;
        let mut child = start(
            method,
            transfer,
            (from.clone(), to.clone(), lock.clone(), n),
        );
        transfer((from.clone(), to.clone(), lock.clone(), n));
        child.join_timeout(PROMPT).unwrap();
        assert_eq!(from.get(), 10_000 - 2 * n, "{method}: no transfer lost");
        assert_eq!(to.to_vec(), [2 * n], "{method}");
    }
    leaks.assert_clean();
}

fn try_value_lock(v: Value<u32>) -> bool {
    matches!(
        v.lock_timeout(Duration::from_millis(20)),
        Err(LockError::Timeout)
    )
}

#[test]
fn a_value_made_with_a_lock_is_locked_by_whoever_holds_that_lock() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let lock = Lock::new().unwrap();
        let v = Value::with_lock(1u32, lock.clone()).unwrap();
        let own = Value::new(1u32).unwrap();
        let held = lock.lock().unwrap();
        let mut child = start(method, try_value_lock, v.clone());
        assert!(
            child.join_timeout(PROMPT).unwrap(),
            "{method}: the supplied lock, held here, keeps the child out"
        );
        let mut child = start(method, try_value_lock, own.clone());
        assert!(
            !child.join_timeout(PROMPT).unwrap(),
            "{method}: a value with its own lock is not held by this one"
        );
        drop(held);
        v.set(2);
        assert_eq!(v.get(), 2);
        assert!(!lock.locked(), "{method}");
    }
    leaks.assert_clean();
}

// ---- RawArray / RawValue ----------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
    tag: u32,
    _pad: u32,
}

fn fill_points((points, total): (RawArray<Point>, RawValue<[u64; 2]>)) {
    for i in 0..points.len() {
        points.set(
            i,
            Point {
                x: i as f64,
                y: -(i as f64),
                tag: i as u32 * 10,
                _pad: 0,
            },
        );
    }
    assert!(!points.set(points.len(), Point::default_zero()));
    total.set([points.len() as u64, 42]);
}

impl Point {
    fn default_zero() -> Point {
        bytemuck::Zeroable::zeroed()
    }
}

#[test]
fn raw_arrays_of_pod_structs_cross_processes_without_a_lock() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let points = RawArray::<Point>::zeroed(4).unwrap();
        let total = RawValue::new([0u64; 2]).unwrap();
        assert_eq!(points.get(3), Some(Point::default_zero()));
        let mut child = start(method, fill_points, (points.clone(), total.clone()));
        child.join_timeout(PROMPT).unwrap();
        assert_eq!(
            points.get(3),
            Some(Point {
                x: 3.0,
                y: -3.0,
                tag: 30,
                _pad: 0
            }),
            "{method}"
        );
        assert_eq!(points.get(4), None);
        assert_eq!(
            points.to_vec().iter().map(|p| p.tag).collect::<Vec<_>>(),
            [0, 10, 20, 30]
        );
        assert_eq!(total.get(), [4, 42], "{method}");
        let ints = RawArray::from_slice(&[1i32, 2, 3]).unwrap();
        assert_eq!(ints.to_vec(), [1, 2, 3]);
    }
    leaks.assert_clean();
}

// ---- named SharedMemory -------------------------------------------------------------

fn read_by_name(name: String) -> (usize, Vec<u8>) {
    let shm = SharedMemory::attach(&name).unwrap();
    let mut out = vec![0u8; 5];
    shm.read(0, &mut out);
    shm.write(5, b"!");
    (shm.len(), out)
}

#[test]
fn named_shared_memory_is_created_attached_by_name_and_unlinked() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let name = format!("mp-fidelity-{}-{method}", std::process::id());
        let shm = SharedMemory::create(&name, 1000).unwrap();
        assert!(shm_exists(&name), "{method}: a name in /dev/shm");
        assert_eq!(shm.name(), name);
        shm.write(0, b"hello");
        let mut child = start(method, read_by_name, name.clone());
        assert_eq!(
            child.join_timeout(PROMPT).unwrap(),
            (1000, b"hello".to_vec()),
            "{method}: attached by name, its size read back"
        );
        let mut bang = [0u8; 1];
        shm.read(5, &mut bang);
        assert_eq!(&bang, b"!");
        assert_eq!(
            SharedMemory::create(&name, 10).unwrap_err().kind(),
            ErrorKind::AlreadyExists,
            "{method}: Python's FileExistsError"
        );
        assert_eq!(
            SharedMemory::create(&format!("/{name}"), 10)
                .unwrap_err()
                .kind(),
            ErrorKind::AlreadyExists,
            "{method}: a leading slash names the same segment"
        );
        shm.unlink().unwrap();
        assert!(!shm_exists(&name));
        assert_eq!(shm.unlink().unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(
            SharedMemory::attach(&name).unwrap_err().kind(),
            ErrorKind::NotFound,
            "{method}: Python's FileNotFoundError"
        );
        shm.read(0, &mut bang);
        assert_eq!(&bang, b"h", "the mapping outlives the name");
        assert_eq!(
            SharedMemory::create("a/b", 10).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            SharedMemory::create(&name, 0).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
    leaks.assert_clean();
}

#[test]
fn anonymous_shared_memory_leaves_nothing_in_dev_shm() {
    let leaks = LeakCheck::start();
    let before = std::fs::read_dir("/dev/shm").unwrap().count();
    let shm = SharedMemory::new(100).unwrap();
    assert!(shm.name().starts_with("/proc/"));
    let after = std::fs::read_dir("/dev/shm").unwrap().count();
    assert_eq!(before, after);
    assert!(shm.unlink().is_ok(), "nothing to unlink");
    drop(shm);
    leaks.assert_clean();
}

#[test]
fn leak_check_reports_a_named_segment_left_behind() {
    let name = format!("leftover-{}", std::process::id());
    let mut check = LeakCheck::start();
    let shm = SharedMemory::create(&name, 10).unwrap();
    let leaks = check.leaks();
    assert!(leaks.shm.contains(&name), "{leaks}");
    shm.unlink().unwrap();
    drop(shm);
    assert!(check.leaks().is_empty());
    check.assert_clean();
}

// ---- SharedMemoryManager ------------------------------------------------------------

#[test]
fn a_manager_removes_its_names_at_shutdown_and_at_drop() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let smm = SharedMemoryManager::start_with(method).unwrap();
        let shm = smm.shared_memory(100).unwrap();
        let named = smm
            .shared_memory_named(&format!("mp-chosen-{}-{method}", std::process::id()), 10)
            .unwrap();
        shm.write(0, b"hello");
        let mut child = start(method, read_by_name, shm.name());
        assert_eq!(
            child.join_timeout(PROMPT).unwrap(),
            (100, b"hello".to_vec())
        );
        assert!(shm_exists(&shm.name()) && shm_exists(&named.name()));
        smm.shutdown().unwrap();
        assert!(
            !shm_exists(&shm.name()),
            "{method}: shutdown removed the name"
        );
        assert!(!shm_exists(&named.name()), "{method}");
        let mut out = [0u8; 5];
        shm.read(0, &mut out);
        assert_eq!(&out, b"hello", "{method}: the segment stays mapped");
        assert!(
            smm.shared_memory(10).is_err(),
            "{method}: no new segment after shutdown"
        );

        let smm = SharedMemoryManager::start_with(method).unwrap();
        let name = smm.shared_memory(10).unwrap().name();
        assert!(shm_exists(&name));
        drop(smm);
        assert!(
            !shm_exists(&name),
            "{method}: dropping the manager removed the name"
        );
    }
    leaks.assert_clean();
}

/// Makes a manager and two segments, reports their names, and waits to be killed.
fn own_a_manager((method, names, ready, never): (StartMethod, Queue<String>, Event, Event)) {
    let smm = SharedMemoryManager::start_with(method).unwrap();
    let segments: Vec<SharedMemory> = (0..2).map(|_| smm.shared_memory(4096).unwrap()).collect();
    for shm in &segments {
        names.put(shm.name()).unwrap();
    }
    ready.set();
    never.wait();
    drop((smm, segments));
}

#[test]
fn a_managers_names_are_removed_when_its_owner_is_sigkilled() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let names = Queue::<String>::new().unwrap();
        let (ready, never) = (Event::new().unwrap(), Event::new().unwrap());
        let mut owner: Process<()> = builder(method)
            .start(
                own_a_manager,
                (method, names.clone(), ready.clone(), never.clone()),
            )
            .unwrap();
        assert!(
            ready.wait_timeout(PROMPT),
            "{method}: the owner made its segments"
        );
        let made: Vec<String> = (0..2).map(|_| names.get_timeout(PROMPT).unwrap()).collect();
        for name in &made {
            assert!(
                shm_exists(name),
                "{method}: {name} exists while the owner lives"
            );
        }
        owner.kill().unwrap();
        assert_killed_by(&mut owner, libc_sigkill(), "the manager's owner");
        wait_until("the watcher to remove the names", || {
            made.iter().all(|name| !shm_exists(name))
        });
    }
    leaks.assert_clean();
}
