//! Cross-process locks, events, semaphores, conditions, barriers and shared values:
//! what many processes see, and what a holder's death does (FAILURE_MODES item 4).
//!
//! The seed scenarios of shared memory and cross-process locks (S5 S14 S16 S29 S39 S41),
//! under every start method: increments under a lock are never lost, an RLock is
//! re-entrant across processes while a Lock re-acquired by its holder is reported, one
//! ticket has one buyer, lines written under a lock never interleave, and what a child
//! writes to a Value or an Array is what the parent reads.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use multiproc::StartMethod;
use multiproc::shared::{Array, Value};
use multiproc::sync::{Barrier, Condition, Event, Lock, LockError, RLock, Semaphore};
use multiproc::testing::LeakCheck;

multiproc::test_support!();

mod common;
use common::{PROMPT, assert_killed_by, builder, start};

/// Takes `lock`, says so, and waits to be killed holding it.
fn hold_lock((lock, held, never): (Lock, Event, Event)) {
    let _guard = lock.lock().unwrap();
    held.set();
    never.wait();
}

#[test]
fn a_killed_holder_gives_owner_died_to_the_next_acquirer() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let (lock, held, never) = (
                Lock::new().unwrap(),
                Event::new().unwrap(),
                Event::new().unwrap(),
            );
            let mut p = builder(method)
                .start(hold_lock, (lock.clone(), held.clone(), never.clone()))
                .unwrap();
            assert!(
                held.wait_timeout(PROMPT),
                "{method}: the child holds the lock"
            );
            assert!(
                matches!(lock.try_lock(), Err(LockError::WouldBlock)),
                "{method}"
            );
            p.kill().unwrap();
            let start = Instant::now();
            match lock.lock_timeout(PROMPT) {
                Err(LockError::OwnerDied(guard)) => drop(guard),
                other => panic!("{method}: expected OwnerDied, got {other:?}"),
            }
            assert!(start.elapsed() < PROMPT);
            // Recovered: the lock works as before.
            drop(lock.lock().unwrap());
            assert_killed_by(&mut p, libc::SIGKILL, &method.to_string());
        }
    }
    check.assert_clean();
}

/// Starts updating two fields of `pair` under its lock, and dies half-way.
fn die_mid_update((pair, held, never): (Value<[i64; 2]>, Event, Event)) {
    let mut guard = pair.lock().unwrap();
    guard[0] = 1; // guard[1] was to follow
    held.set();
    never.wait();
}

#[test]
fn the_data_a_dead_holder_left_half_updated_is_reachable_through_the_guard() {
    let check = LeakCheck::start();
    {
        let pair = Value::new([0i64, 0]).unwrap();
        let (held, never) = (Event::new().unwrap(), Event::new().unwrap());
        let mut p = builder(StartMethod::ForkServer)
            .start(die_mid_update, (pair.clone(), held.clone(), never.clone()))
            .unwrap();
        assert!(held.wait_timeout(PROMPT));
        p.kill().unwrap();
        let mut guard = match pair.lock() {
            Err(LockError::OwnerDied(guard)) => guard,
            other => panic!("expected OwnerDied, got {other:?}"),
        };
        assert_eq!(*guard, [1, 0], "the half-done update is visible");
        guard[1] = 1; // repair
        drop(guard);
        assert_eq!(pair.get(), [1, 1]);
        assert_killed_by(&mut p, libc::SIGKILL, "the holder");
    }
    check.assert_clean();
}

fn hold_rlock_twice((lock, held, never): (RLock, Event, Event)) {
    let _outer = lock.lock().unwrap();
    let _inner = lock.lock().unwrap();
    held.set();
    never.wait();
}

#[test]
fn a_killed_rlock_holder_gives_owner_died_too() {
    let check = LeakCheck::start();
    {
        let (lock, held, never) = (
            RLock::new().unwrap(),
            Event::new().unwrap(),
            Event::new().unwrap(),
        );
        let mut p = builder(StartMethod::Spawn)
            .start(
                hold_rlock_twice,
                (lock.clone(), held.clone(), never.clone()),
            )
            .unwrap();
        assert!(held.wait_timeout(PROMPT));
        p.kill().unwrap();
        assert!(lock.lock_timeout(PROMPT).unwrap_err().is_owner_died());
        drop(lock.try_lock().unwrap());
        assert_killed_by(&mut p, libc::SIGKILL, "the holder");
    }
    check.assert_clean();
}

fn increment((v, times): (Value<i64>, u32)) {
    for _ in 0..times {
        *v.lock().unwrap() += 1;
    }
}

#[test]
fn ten_processes_times_ten_thousand_locked_increments_make_exactly_100_000() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let v = Value::new(0i64).unwrap();
            let kids: Vec<_> = (0..10)
                .map(|_| {
                    builder(method)
                        .start(increment, (v.clone(), 10_000))
                        .unwrap()
                })
                .collect();
            for mut kid in kids {
                kid.join_timeout(PROMPT).unwrap();
            }
            assert_eq!(v.get(), 100_000, "{method}");
        }
    }
    check.assert_clean();
}

fn meet((barrier, arrived): (Barrier, Value<u32>)) -> (u32, u32) {
    *arrived.lock().unwrap() += 1;
    let index = barrier.wait_timeout(PROMPT).unwrap();
    // Nobody passes before everyone has arrived.
    (index, arrived.get())
}

#[test]
fn a_barrier_of_n_processes_releases_all_n_together() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let n = 5;
            let barrier = Barrier::new(n as u16).unwrap();
            let arrived = Value::new(0u32).unwrap();
            let kids: Vec<_> = (0..n)
                .map(|_| {
                    builder(method)
                        .start(meet, (barrier.clone(), arrived.clone()))
                        .unwrap()
                })
                .collect();
            let mut indices: Vec<u32> = kids
                .into_iter()
                .map(|mut k| {
                    let (index, seen) = k.join_timeout(PROMPT).unwrap();
                    assert_eq!(seen, n, "{method}: passed before all arrived");
                    index
                })
                .collect();
            indices.sort();
            assert_eq!(indices, (0..n).collect::<Vec<_>>(), "{method}");
            assert_eq!(barrier.n_waiting(), 0);
        }
    }
    check.assert_clean();
}

#[test]
fn a_barrier_wait_that_times_out_breaks_it_for_everyone() {
    // Checked and serialised like the others: what it makes while another test is
    // checked would count against that test.
    let _check = LeakCheck::start();
    let b = Barrier::new(3).unwrap();
    std::thread::scope(|s| {
        let other = s.spawn(|| b.wait());
        assert!(b.wait_timeout(Duration::from_millis(50)).is_err());
        assert!(
            other.join().unwrap().is_err(),
            "the other waiter is released, broken"
        );
    });
    assert!(b.broken());
    b.reset();
    assert!(!b.broken());
}

fn inside_at_most((sem, inside, most): (Semaphore, Value<u32>, Value<u32>)) {
    for _ in 0..20 {
        let _slot = sem.acquire().unwrap();
        let now = {
            let mut g = inside.lock().unwrap();
            *g += 1;
            *g
        };
        {
            let mut m = most.lock().unwrap();
            *m = (*m).max(now);
        }
        std::thread::yield_now();
        *inside.lock().unwrap() -= 1;
    }
}

#[test]
fn a_semaphore_admits_at_most_its_value_across_processes() {
    let check = LeakCheck::start();
    {
        let sem = Semaphore::bounded(2).unwrap();
        let (inside, most) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
        let kids: Vec<_> = (0..6)
            .map(|_| {
                builder(StartMethod::ForkServer)
                    .start(inside_at_most, (sem.clone(), inside.clone(), most.clone()))
                    .unwrap()
            })
            .collect();
        for mut kid in kids {
            kid.join_timeout(PROMPT).unwrap();
        }
        assert!(
            most.get() <= 2 && most.get() >= 1,
            "at most 2 inside: {}",
            most.get()
        );
        assert_eq!(sem.value(), 2, "every slot given back");
        assert!(sem.release().is_err(), "bounded");
    }
    check.assert_clean();
}

fn wait_for_one((cond, v): (Condition, Value<u32>)) -> bool {
    let guard = cond.lock().unwrap();
    let (_guard, ready) = cond
        .wait_for(guard, Some(PROMPT), || v.get_racy() == 1)
        .unwrap();
    ready
}

fn wait_for_event(ev: Event) -> bool {
    ev.wait_timeout(PROMPT)
}

#[test]
fn events_and_conditions_wake_other_processes() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let ev = Event::new().unwrap();
            let mut p = builder(method).start(wait_for_event, ev.clone()).unwrap();
            ev.set();
            assert!(p.join_timeout(PROMPT).unwrap(), "{method}");

            let cond = Condition::new().unwrap();
            let v = Value::new(0u32).unwrap();
            let mut p = builder(method)
                .start(wait_for_one, (cond.clone(), v.clone()))
                .unwrap();
            {
                let _g = cond.lock().unwrap();
                v.set(1);
                cond.notify_all();
            }
            assert!(p.join_timeout(PROMPT).unwrap(), "{method}");
        }
    }
    check.assert_clean();
}

#[test]
fn lock_timeouts_and_relocking_by_the_holder() {
    // Checked and serialised like the others: what it makes while another test is
    // checked would count against that test.
    let _check = LeakCheck::start();
    let lock = Lock::new().unwrap();
    let held = lock.lock().unwrap();
    assert!(
        matches!(lock.lock(), Err(LockError::WouldDeadlock)),
        "S16: reported, not a hang"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            let start = Instant::now();
            assert!(matches!(
                lock.lock_timeout(Duration::from_millis(50)),
                Err(LockError::Timeout)
            ));
            assert!(start.elapsed() >= Duration::from_millis(50));
        });
    });
    drop(held);
    drop(lock.try_lock().unwrap());
}

fn add_atomically((n, times): (multiproc::shared::Atomic<u64>, u32)) {
    for _ in 0..times {
        n.fetch_add(1);
    }
}

#[test]
fn lock_free_atomic_increments_from_many_processes_lose_nothing() {
    let check = LeakCheck::start();
    {
        let n = multiproc::shared::Atomic::new(0u64).unwrap();
        let kids: Vec<_> = (0..4)
            .map(|_| {
                builder(StartMethod::ForkServer)
                    .start(add_atomically, (n.clone(), 25_000))
                    .unwrap()
            })
            .collect();
        for mut kid in kids {
            kid.join_timeout(PROMPT).unwrap();
        }
        assert_eq!(n.load(), 100_000);
    }
    check.assert_clean();
}

fn hold_two_slots((sem, held, never): (Semaphore, Event, Event)) {
    let _a = sem.acquire().unwrap();
    let _b = sem.acquire().unwrap();
    held.set();
    never.wait();
}

#[test]
fn slots_of_a_killed_semaphore_holder_come_back_as_owner_died() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let sem = Semaphore::bounded(2).unwrap();
            let (held, never) = (Event::new().unwrap(), Event::new().unwrap());
            let mut p = builder(method)
                .start(hold_two_slots, (sem.clone(), held.clone(), never.clone()))
                .unwrap();
            assert!(held.wait_timeout(PROMPT), "{method}");
            assert_eq!(sem.value(), 0);
            p.kill().unwrap();
            assert_killed_by(&mut p, libc::SIGKILL, &method.to_string());
            let permit = match sem.acquire_timeout(PROMPT) {
                Err(LockError::OwnerDied(permit)) => permit,
                other => panic!("{method}: expected OwnerDied, got {other:?}"),
            };
            // Both dead slots came back: one is ours, the other is free.
            assert_eq!(sem.value(), 1, "{method}");
            drop(permit);
            assert_eq!(sem.value(), 2, "{method}");
            assert!(sem.try_acquire().is_ok());
        }
    }
    check.assert_clean();
}

fn write_by_name(name: String) -> usize {
    let shm = multiproc::shared::SharedMemory::attach(&name).unwrap();
    shm.write(0, b"written by name");
    shm.len()
}

fn fill_pattern(shm: multiproc::shared::SharedMemory) {
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    for off in (0..shm.len()).step_by(chunk.len()) {
        shm.write(off, &chunk);
    }
}

#[test]
fn shared_memory_crosses_by_handle_and_by_name_and_leaves_nothing() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let shm = multiproc::shared::SharedMemory::new(8 << 20).unwrap();
            let mut p = builder(method).start(fill_pattern, shm.clone()).unwrap();
            p.join_timeout(PROMPT).unwrap();
            let mut back = vec![0u8; 8 << 20];
            shm.read(0, &mut back);
            assert!(
                back.iter()
                    .enumerate()
                    .all(|(i, &b)| b == ((i % (1 << 20)) % 253) as u8)
            );

            let mut p = builder(method).start(write_by_name, shm.name()).unwrap();
            assert_eq!(p.join_timeout(PROMPT).unwrap(), 8 << 20, "{method}");
            let mut out = [0u8; 15];
            shm.read(0, &mut out);
            assert_eq!(&out, b"written by name", "{method}");
        }
        assert!(multiproc::shared::SharedMemory::attach("/dev/shm/nothing").is_err());
    }
    check.assert_clean();
}

// ---- ports of CPython's _TestCondition, _TestBarrier, _TestLock, _TestSemaphore -------

#[test]
fn condition_notify_wakes_one_waiter_and_notify_all_the_rest() {
    // Checked and serialised like the others: what it makes while another test is
    // checked would count against that test.
    let _check = LeakCheck::start();
    let cond = Condition::new().unwrap();
    let tokens = Value::new(0u32).unwrap();
    let done = Value::new(0u32).unwrap();
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let guard = cond.lock().unwrap();
                let (_guard, ok) = cond
                    .wait_for(guard, Some(PROMPT), || {
                        let mut t = tokens.lock().unwrap();
                        if *t > 0 {
                            *t -= 1;
                            true
                        } else {
                            false
                        }
                    })
                    .unwrap();
                assert!(ok);
                *done.lock().unwrap() += 1;
            });
        }
        {
            let _g = cond.lock().unwrap();
            tokens.set(1);
            cond.notify();
        }
        let start = Instant::now();
        while done.get() < 1 {
            assert!(start.elapsed() < PROMPT);
            std::thread::yield_now();
        }
        assert_eq!(done.get(), 1, "one token: one waiter through");
        {
            let _g = cond.lock().unwrap();
            tokens.set(2);
            cond.notify_all();
        }
    });
    assert_eq!(done.get(), 3);
    assert_eq!(tokens.get(), 0);
}

#[test]
fn condition_wait_for_times_out_with_false() {
    // Checked and serialised like the others: what it makes while another test is
    // checked would count against that test.
    let _check = LeakCheck::start();
    let cond = Condition::new().unwrap();
    let guard = cond.lock().unwrap();
    let start = Instant::now();
    let (_guard, ok) = cond
        .wait_for(guard, Some(Duration::from_millis(50)), || false)
        .unwrap();
    assert!(!ok && start.elapsed() >= Duration::from_millis(50));
}

fn rounds((barrier, n): (Barrier, u32)) -> Vec<u32> {
    (0..n)
        .map(|_| barrier.wait_timeout(PROMPT).unwrap())
        .collect()
}

#[test]
fn a_barrier_serves_many_rounds_for_threads_and_processes_together() {
    let check = LeakCheck::start();
    {
        let barrier = Barrier::new(4).unwrap();
        let rounds_n = 50;
        let mut kids: Vec<_> = (0..2)
            .map(|_| {
                builder(StartMethod::ForkServer)
                    .start(rounds, (barrier.clone(), rounds_n))
                    .unwrap()
            })
            .collect();
        let mine: Vec<Vec<u32>> = std::thread::scope(|s| {
            let a = s.spawn(|| rounds((barrier.clone(), rounds_n)));
            let b = s.spawn(|| rounds((barrier.clone(), rounds_n)));
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        let mut all = mine;
        for kid in &mut kids {
            all.push(kid.join_timeout(PROMPT).unwrap());
        }
        for round in 0..rounds_n as usize {
            let mut indices: Vec<u32> = all.iter().map(|r| r[round]).collect();
            indices.sort();
            assert_eq!(indices, [0, 1, 2, 3], "round {round}: each index once");
        }
        assert!(!barrier.broken());
    }
    check.assert_clean();
}

#[test]
fn barrier_abort_releases_waiters_with_broken() {
    // Checked and serialised like the others: what it makes while another test is
    // checked would count against that test.
    let _check = LeakCheck::start();
    let b = Barrier::new(3).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| b.wait());
        while b.n_waiting() == 0 {
            std::thread::yield_now();
        }
        b.abort();
        assert!(waiter.join().unwrap().is_err());
    });
    assert!(b.wait().is_err(), "stays broken until reset");
    b.reset();
    assert_eq!(Barrier::new(1).unwrap().wait(), Ok(0));
}

#[test]
fn rlock_taken_three_times_is_free_after_three_releases() {
    // Checked and serialised like the others: what it makes while another test is
    // checked would count against that test.
    let _check = LeakCheck::start();
    let lock = RLock::new().unwrap();
    let a = lock.lock().unwrap();
    let b = lock.try_lock().unwrap();
    let c = lock.lock_timeout(Duration::from_millis(10)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock))));
    });
    drop((c, b));
    std::thread::scope(|s| {
        s.spawn(|| assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock))));
    });
    drop(a);
    std::thread::scope(|s| {
        s.spawn(|| drop(lock.try_lock().unwrap()));
    });
}

#[test]
fn semaphore_values_timeouts_and_forgotten_permits() {
    // Checked and serialised like the others: what it makes while another test is
    // checked would count against that test.
    let _check = LeakCheck::start();
    let sem = Semaphore::new(2).unwrap();
    let a = sem.acquire().unwrap();
    assert_eq!(sem.value(), 1);
    sem.try_acquire().unwrap().forget();
    assert_eq!(sem.value(), 0);
    let start = Instant::now();
    assert!(matches!(
        sem.acquire_timeout(Duration::from_millis(30)),
        Err(LockError::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(30));
    drop(a);
    sem.release().unwrap(); // gives back the forgotten one
    sem.release().unwrap(); // an unbounded semaphore may grow (Python's Semaphore)
    assert_eq!(sem.value(), 3);
}

/// Holds a lock, a shared block, a queue and a pipe end until terminated.
fn hold_everything(
    (lock, shm, q, tx, held, never): (
        Lock,
        multiproc::shared::SharedMemory,
        multiproc::Queue<u32>,
        multiproc::connection::Sender<u32>,
        Event,
        Event,
    ),
) {
    let _g = lock.lock().unwrap();
    shm.write(0, b"mine");
    q.put(1).unwrap();
    tx.send(&2).unwrap();
    held.set();
    never.wait();
}

#[test]
fn a_terminated_holder_of_every_kind_of_resource_leaks_nothing() {
    // CPython's TestResourceTracker: SIGTERM a process holding a Lock and SharedMemory;
    // here the kernel frees everything (memfds, sockets) and the lock reports the death.
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let lock = Lock::new().unwrap();
            let shm = multiproc::shared::SharedMemory::new(4096).unwrap();
            let q = multiproc::Queue::new().unwrap();
            let (rx, tx) = multiproc::connection::pipe_simplex::<u32>().unwrap();
            let (held, never) = (Event::new().unwrap(), Event::new().unwrap());
            let args = (
                lock.clone(),
                shm.clone(),
                q.clone(),
                tx,
                held.clone(),
                never.clone(),
            );
            let mut p = builder(method).start(hold_everything, args).unwrap();
            assert!(held.wait_timeout(PROMPT), "{method}");
            p.terminate().unwrap();
            assert_killed_by(&mut p, libc::SIGTERM, &method.to_string());
            assert!(
                lock.lock_timeout(PROMPT).unwrap_err().is_owner_died(),
                "{method}"
            );
            assert_eq!(q.get_timeout(PROMPT).unwrap(), 1);
            assert_eq!(rx.recv_timeout(PROMPT).unwrap(), 2);
            let mut out = [0u8; 4];
            shm.read(0, &mut out);
            assert_eq!(&out, b"mine");
        }
    }
    check.assert_clean();
}

// ==== The seed scenarios ====

/// A barrier wait that cannot hang a test.
fn meet_at(barrier: &Barrier) {
    barrier
        .wait_timeout(PROMPT)
        .expect("every party reached the barrier");
}

// ---- S5: 10 processes × 50 increments of a shared Value ------------------------------

/// The seed's `func` with the lock: read and write under one guard, with a yield in
/// between to invite another process into the window.
fn add_50_locked((val, start): (Value<i32>, Barrier)) {
    meet_at(&start);
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
    meet_at(&start);
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
    meet_at(&start);
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
fn hold_rlock_twice_in_steps((r_lock, step): (RLock, Barrier)) -> String {
    let outer = r_lock.lock().expect("free, no holder died");
    let inner = match r_lock.lock() {
        Ok(inner) => inner,
        Err(e) => return format!("re-locking the RLock: {e:?}"),
    };
    meet_at(&step); // 1: held twice
    meet_at(&step); // 2: the others looked
    drop(inner);
    meet_at(&step); // 3: held once
    meet_at(&step); // 4: the others looked
    drop(outer);
    meet_at(&step); // 5: free
    "ok".to_string()
}

/// Another process: what its `try_lock` gives while the holder has two guards, then
/// one; then whether it takes the freed RLock and re-enters it.
fn watch_then_take_rlock((r_lock, step): (RLock, Barrier)) -> [String; 4] {
    meet_at(&step); // 1
    let while_held_twice = outcome(r_lock.try_lock());
    meet_at(&step); // 2
    meet_at(&step); // 3
    let while_held_once = outcome(r_lock.try_lock());
    meet_at(&step); // 4
    meet_at(&step); // 5
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
            let mut holder = start(
                method,
                hold_rlock_twice_in_steps,
                (r_lock.clone(), step.clone()),
            );
            let mut other = start(
                method,
                watch_then_take_rlock,
                (r_lock.clone(), step.clone()),
            );

            meet_at(&step); // 1
            let in_parent_held_twice = outcome(r_lock.try_lock());
            meet_at(&step); // 2
            meet_at(&step); // 3
            let in_parent_held_once = outcome(r_lock.try_lock());
            meet_at(&step); // 4
            meet_at(&step); // 5
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
    meet_at(&step); // 1: held
    meet_at(&step); // 2: the others looked
    [
        outcome(lock.lock()),
        outcome(lock.lock_timeout(PROMPT)),
        outcome(lock.try_lock()),
    ]
}

/// Another process, while the holder holds the lock: not the holder, so it waits.
fn lock_held_elsewhere((lock, step): (Lock, Barrier)) -> [String; 2] {
    meet_at(&step); // 1
    let got = [
        outcome(lock.try_lock()),
        outcome(lock.lock_timeout(Duration::from_millis(1))),
    ];
    meet_at(&step); // 2
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
            meet_at(&step); // 1
            let in_parent = outcome(lock.try_lock());
            meet_at(&step); // 2
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
    meet_at(&start);
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
    meet_at(&start);
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

/// Python's `Barrier.reset()`: the parties already waiting get `BrokenBarrierError`, and
/// the barrier starts a new round empty. (It used to let them pass as if everyone had
/// arrived.)
#[test]
fn reset_breaks_the_parties_already_waiting() {
    let check = LeakCheck::start();
    {
        let b = Barrier::new(3).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| b.wait_timeout(PROMPT));
            let deadline = Instant::now() + PROMPT;
            while b.n_waiting() != 1 {
                assert!(Instant::now() < deadline, "the waiter never arrived");
                std::thread::yield_now();
            }
            b.reset();
            assert_eq!(waiter.join().unwrap(), Err(multiproc::sync::BrokenBarrier));
        });
        assert!(!b.broken(), "a reset barrier is usable");
        assert_eq!(b.n_waiting(), 0);
        // A full round after the reset passes.
        std::thread::scope(|s| {
            let others: Vec<_> = (0..2).map(|_| s.spawn(|| b.wait_timeout(PROMPT))).collect();
            let mine = b.wait_timeout(PROMPT).unwrap();
            let mut indices: Vec<u32> = others
                .into_iter()
                .map(|t| t.join().unwrap().unwrap())
                .collect();
            indices.push(mine);
            indices.sort();
            assert_eq!(indices, [0, 1, 2]);
        });
    }
    check.assert_clean();
}

/// Python's `SharedMemory(name)` for a name nobody created raises `FileNotFoundError`:
/// here `NotFound`, for a foreign-looking name as for a stale one.
#[test]
fn attaching_a_shared_memory_name_that_does_not_exist_is_not_found() {
    let check = LeakCheck::start();
    {
        use multiproc::shared::SharedMemory;
        for name in ["psm_no_such_block", "/proc/999999999/fd/3", ""] {
            let err = SharedMemory::attach(name).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{name:?}: {err}");
        }
        let gone = SharedMemory::new(8).unwrap();
        let name = gone.name();
        drop(gone);
        let err = SharedMemory::attach(&name).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{name}: {err}");
    }
    check.assert_clean();
}

/// Anyone holding a shared block's name (or any queue's, lock's, value's descriptor)
/// could once `ftruncate` the memory under everyone else, who then died of `SIGBUS` on
/// their next touch (issue 14 item 12): the memory is sealed at its size.
#[test]
fn a_holder_of_shared_memory_cannot_shrink_or_grow_it_under_the_others() {
    let check = LeakCheck::start();
    {
        use multiproc::shared::SharedMemory;
        let shm = SharedMemory::new(1 << 16).unwrap();
        shm.write((1 << 16) - 4, b"tail");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(shm.name())
            .expect("the name opens as a file, as an attacker would");
        for len in [0, 1 << 20] {
            let err = file.set_len(len).unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{len}: {err}"
            );
        }
        let mut out = [0u8; 4];
        shm.read((1 << 16) - 4, &mut out);
        assert_eq!(&out, b"tail");
    }
    check.assert_clean();
}

/// `SharedMemory(create=True, size=0)` is Python's `ValueError`: here `InvalidInput`.
#[test]
fn shared_memory_of_zero_bytes_is_refused() {
    let err = multiproc::shared::SharedMemory::new(0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("size"), "{err}");
}

/// Waits on `cond` (counted in `waiting` under its lock) and says whether it was
/// notified and in which round the parent notified it (`round`, read under the lock
/// after the wake-up).
fn wait_for_a_round(
    (cond, waiting, woke, round): (Condition, Value<u32>, Value<u32>, Value<u32>),
) -> (bool, u32) {
    let guard = cond.lock().unwrap();
    waiting.set(waiting.get() + 1);
    // Longer than the parent waits for a wake-up: a waiter that was not woken fails the
    // test there, rather than ending its wait here as if notified.
    let (_guard, notified) = cond.wait_timeout(guard, 2 * PROMPT).unwrap();
    *woke.lock().unwrap() += 1;
    (notified, round.get())
}

/// Whether process `pid`'s main thread sleeps (state `S` in `/proc/<pid>/stat`).
fn asleep(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .is_some_and(|end| stat[end + 1..].trim_start().starts_with('S'))
}

/// Python's `Condition.notify(n)` across processes: of four waiters, `notify_n(2)`
/// wakes exactly two; the other two sleep on until `notify_all`.
#[test]
fn condition_notify_n_wakes_exactly_n_waiting_processes() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let cond = Condition::new().unwrap();
        let [waiting, woke, round] = [0u32; 3].map(|v| Value::new(v).unwrap());
        let mut waiters: Vec<_> = (0..4)
            .map(|_| {
                start(
                    method,
                    wait_for_a_round,
                    (cond.clone(), waiting.clone(), woke.clone(), round.clone()),
                )
            })
            .collect();
        common::wait_until("four waiters", || waiting.get() == 4);
        // Each counted itself and read the condition's sequence under the lock: once
        // this side has had the lock, each has let it go and can only be on its way
        // into (or asleep in) the wait. Notify only when all four sleep in it, so that
        // none can see the notification without being woken by it.
        drop(cond.lock().unwrap());
        for w in &waiters {
            common::wait_until("a waiter asleep", || asleep(w.pid()));
        }
        {
            let _g = cond.lock().unwrap();
            round.set(1);
            cond.notify_n(2);
        }
        common::wait_until("two woken", || woke.get() >= 2);
        {
            let _g = cond.lock().unwrap();
            round.set(2);
            cond.notify_all();
        }
        let mut rounds: Vec<u32> = waiters
            .iter_mut()
            .map(|w| {
                let (notified, round) = w.join_timeout(PROMPT).unwrap();
                assert!(notified, "{method}");
                round
            })
            .collect();
        rounds.sort();
        assert_eq!(rounds, [1, 1, 2, 2], "{method}");
    }
    check.assert_clean();
}

/// Chaos: an abort right as a waiter goes to sleep is never lost. The waiters sleep on
/// the state word, and an abort that only set a flag and woke them could slip between
/// a waiter's check of the flag and its sleep, which then lasted for ever (seen as a
/// hang of `barrier_abort_releases_waiters_with_broken`). Each round aborts the moment
/// the waiter has arrived; a lost wake-up shows as a wait that lasts its full timeout.
#[test]
fn an_abort_as_a_waiter_goes_to_sleep_always_wakes_it() {
    let check = LeakCheck::start();
    {
        let b = Barrier::new(2).unwrap();
        let lost_after = Duration::from_secs(20);
        for round in 0..2000 {
            std::thread::scope(|s| {
                let waiter = s.spawn(|| {
                    let t0 = Instant::now();
                    (b.wait_timeout(lost_after), t0.elapsed())
                });
                while b.n_waiting() == 0 && !waiter.is_finished() {
                    std::hint::spin_loop();
                }
                b.abort();
                let (got, took) = waiter.join().unwrap();
                assert_eq!(got, Err(multiproc::sync::BrokenBarrier), "round {round}");
                assert!(
                    took < lost_after,
                    "round {round}: the abort's wake-up was lost"
                );
            });
            b.reset();
        }
    }
    check.assert_clean();
}
