//! Cross-process locks, events, semaphores, conditions, barriers and shared values:
//! what many processes see, and what a holder's death does (FAILURE_MODES item 4).

use std::time::{Duration, Instant};

use multiproc::StartMethod;
use multiproc::shared::Value;
use multiproc::sync::{Barrier, Condition, Event, Lock, LockError, RLock, Semaphore};
use multiproc::testing::LeakCheck;

multiproc::test_support!();

mod common;
use common::{PROMPT, builder};

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
            assert!(p.join_timeout(PROMPT).is_err());
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
        assert!(p.join_timeout(PROMPT).is_err());
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
        assert!(p.join_timeout(PROMPT).is_err());
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
            assert!(p.join_timeout(PROMPT).is_err());
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
            assert!(p.join_timeout(PROMPT).is_err());
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
