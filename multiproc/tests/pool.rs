//! The process pool (S6 S10 S43) and what Python's does not promise: a worker that dies
//! fails only its task, time limits, cancelling a running task, worker recycling, a
//! failing initializer, and nothing left behind. Every test runs under all three start
//! methods and checks for leaked processes and descriptors.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use multiproc::executor::{TaskError, WaitError};
use multiproc::pool::{Pool, PoolError};
use multiproc::shared::Atomic;
use multiproc::sync::{Barrier, Event};
use multiproc::testing::LeakCheck;
use multiproc::{StartMethod, process::set_fork_warning};

mod common;
use common::pool;
use common::wait_gone;
use common::{PanicsWhenEncoded, takes_panics_when_encoded};

multiproc::test_support!();

const PROMPT: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn pid_after(d: Duration) -> u32 {
    std::thread::sleep(d);
    std::process::id()
}

fn sleep_then(d: Duration) -> u64 {
    std::thread::sleep(d);
    7
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn add3(a: u64, b: String, c: u8) -> String {
    format!("{a}{b}{c}")
}

fn fails_on_3(x: u32) -> u32 {
    assert!(x != 3, "three is not allowed");
    x
}

/// Panics for 3, sleeps `x` milliseconds otherwise.
fn fails_or_sleeps(x: u32) -> u32 {
    assert!(x != 3, "three is not allowed");
    std::thread::sleep(Duration::from_millis(x.into()));
    x
}

fn kill_self_on(x: u32) -> u32 {
    if x == 0 {
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
            .unwrap();
    }
    x
}

fn abort_self(_: ()) -> u32 {
    std::process::abort()
}

fn segfault_self(_: ()) -> u32 {
    // The first SIGSEGV goes to std's stack-overflow handler, which finds no guard-page
    // fault, restores the default action and returns; the second one kills.
    loop {
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::SEGV)
            .unwrap();
    }
}

fn exit_3(_: ()) -> u32 {
    std::process::exit(3)
}

fn sleep_and_report(ms: u64) -> (u128, u128) {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    };
    let start = now();
    std::thread::sleep(Duration::from_millis(ms));
    (start, now())
}

/// S2 with a pool: five one-second sleeps in a `Pool(5)` all run at the same moment.
#[test]
fn s02_pooled_sleeps_overlap() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 5);
        let spans = p
            .with_chunksize(1)
            .map(sleep_and_report, [1000; 5])
            .unwrap();
        let last_start = spans.iter().map(|s| s.0).max().unwrap();
        let first_end = spans.iter().map(|s| s.1).min().unwrap();
        assert!(last_start < first_end, "{method}: sleeps queued: {spans:?}");
        drop(p);
    }
    check.assert_clean();
}

#[test]
fn s10_map_keeps_input_order_with_any_chunksize() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        let want: Vec<u64> = (0..200u64).map(|x| x * x).collect();
        assert_eq!(p.map(square, 0..200).unwrap(), want, "{method} default");
        for chunksize in [1, 2, 4, 7, 500] {
            let got = p.with_chunksize(chunksize).map(square, 0..200).unwrap();
            assert_eq!(got, want, "{method} chunksize {chunksize}");
        }
        assert_eq!(p.map(square, Vec::<u64>::new()).unwrap(), Vec::<u64>::new());
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

#[test]
fn apply_imap_starmap_and_async_results() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        assert_eq!(p.apply(square, 9).unwrap(), 81);
        let r = p.apply_async(square, 12).unwrap();
        r.wait();
        assert!(r.ready());
        assert_eq!(r.successful(), Some(true));
        assert_eq!(r.get().unwrap(), 144);
        assert_eq!(r.get().unwrap_err(), WaitError::Taken);

        let ordered: Vec<u64> = p.imap(square, 0..50).unwrap().map(Result::unwrap).collect();
        assert_eq!(ordered, (0..50).map(|x| x * x).collect::<Vec<_>>());
        let mut any: Vec<u64> = p
            .with_chunksize(1)
            .imap_unordered(square, 0..50)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        any.sort();
        assert_eq!(any, ordered);

        assert_eq!(p.starmap(add, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
        assert_eq!(
            p.starmap3(add3, [(1, "x".to_string(), 2)]).unwrap(),
            ["1x2"]
        );
        let m = p.map_async(square, 1..=3).unwrap();
        assert!(m.wait_timeout(PROMPT));
        assert!(m.ready());
        assert_eq!(m.get().unwrap(), [1, 4, 9]);
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

#[test]
fn s43_get_timeout_only_stops_waiting() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 4);
        let quick = p.apply_async(square, 20).unwrap();
        assert_eq!(quick.get_timeout(PROMPT).unwrap(), 400);
        let pids: Vec<_> = (0..4).map(|_| p.apply_async(pid, ()).unwrap()).collect();
        for r in pids {
            assert!(p.worker_pids().contains(&r.get_timeout(PROMPT).unwrap()));
        }
        let slow = p.apply_async(sleep_then, Duration::from_secs(600)).unwrap();
        let t0 = Instant::now();
        assert_eq!(
            slow.get_timeout(Duration::from_millis(100)).unwrap_err(),
            WaitError::Timeout
        );
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert!(!slow.ready(), "the task goes on after a timed-out get");
        // Leaving the pool terminates it: the 600 s task does not hold the test.
        drop(p);
        assert_eq!(
            slow.get().unwrap_err(),
            WaitError::Task(TaskError::Terminated)
        );
    }
    check.assert_clean();
}

static RUNNING: OnceLock<(Atomic<u32>, Atomic<u32>)> = OnceLock::new();
static PAIR: OnceLock<Barrier> = OnceLock::new();

fn set_counters((running, max, pair): (Atomic<u32>, Atomic<u32>, Barrier)) {
    let _ = RUNNING.set((running, max));
    let _ = PAIR.set(pair);
}

/// Waits (at most `PROMPT`) at the pool's barrier of two: passes only if another task
/// is waiting at it at the same time. Returns whether it passed.
fn meet_another(_: ()) -> bool {
    PAIR.get()
        .expect("initializer ran")
        .wait_timeout(PROMPT)
        .is_ok()
}

/// Counts the tasks running at once, keeping the maximum.
fn counted(d: Duration) -> u32 {
    let (running, max) = RUNNING.get().expect("initializer ran");
    let now = running.fetch_add(1) + 1;
    let mut seen = max.load();
    while now > seen {
        match max.compare_exchange(seen, now) {
            Ok(_) => break,
            Err(v) => seen = v,
        }
    }
    std::thread::sleep(d);
    running.fetch_sub(1);
    std::process::id()
}

#[test]
fn s6_two_tasks_run_at_once_at_most_n_do_and_workers_are_reused() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let running = Atomic::new(0u32).unwrap();
        let max = Atomic::new(0u32).unwrap();
        let pair = Barrier::new(2).unwrap();
        set_fork_warning(false);
        let p = Pool::builder()
            .processes(3)
            .start_method(method)
            .initializer(set_counters, (running.clone(), max.clone(), pair))
            .build()
            .unwrap();
        // At least two run at once: two tasks that can only end by meeting at a barrier
        // of two (a pool running one task at a time breaks it after `PROMPT`).
        let meetings: Vec<_> = (0..2)
            .map(|_| p.apply_async(meet_another, ()).unwrap())
            .collect();
        for m in meetings {
            assert!(
                m.get().unwrap(),
                "{method}: the two tasks did not run at once"
            );
        }
        let lengths = [30u64, 5, 10, 20, 15, 5, 25, 10];
        let results: Vec<_> = lengths
            .iter()
            .map(|&ms| p.apply_async(counted, Duration::from_millis(ms)).unwrap())
            .collect();
        let pids: Vec<u32> = results.iter().map(|r| r.get().unwrap()).collect();
        let distinct: HashSet<u32> = pids.iter().copied().collect();
        assert!(max.load() <= 3, "{method}: {} ran at once", max.load());
        assert!(distinct.len() <= 3, "{method}: pids {pids:?}");
        assert!(distinct.len() < pids.len(), "a worker served several tasks");
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

#[test]
fn a_panic_fails_only_its_item_and_the_iteration_goes_on() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        for chunksize in [1, 2, 4] {
            let got: Vec<_> = p
                .with_chunksize(chunksize)
                .imap(fails_on_3, 0..8)
                .unwrap()
                .collect();
            for (i, r) in got.iter().enumerate() {
                if i == 3 {
                    match r {
                        Err(TaskError::Panicked { message, .. }) => {
                            assert!(message.contains("three is not allowed"))
                        }
                        other => panic!("{other:?}"),
                    }
                } else {
                    assert_eq!(r.as_ref().unwrap(), &(i as u32));
                }
            }
        }
        match p.map(fails_on_3, 0..8) {
            Err(PoolError::Item { index: 3, error }) => {
                assert!(matches!(error, TaskError::Panicked { .. }))
            }
            other => panic!("{other:?}"),
        }
        // A failure ends a map of long tasks promptly: what was not started is skipped.
        let p1 = pool(method, 1);
        let mut items = vec![3u32];
        items.extend(std::iter::repeat_n(600_000, 50));
        match p1.with_chunksize(1).map(fails_or_sleeps, items) {
            Err(PoolError::Item { index: 0, .. }) => {}
            other => panic!("{method}: {other:?}"),
        }
        drop(p1);
        let r = p.apply_async(fails_on_3, 3).unwrap();
        r.wait();
        assert_eq!(r.successful(), Some(false));
        assert_eq!(p.apply(fails_on_3, 4).unwrap(), 4, "the pool goes on");
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

/// mpire's `test_defunct_processes_kill_apply`: 100 tasks, the worker running the
/// first is killed: exactly that one fails.
#[test]
fn a_killed_worker_fails_only_its_task_and_is_replaced() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        let before = p.worker_pids();
        let results: Vec<_> = (0..100)
            .map(|i| p.apply_async(kill_self_on, i).unwrap())
            .collect();
        let outcomes: Vec<_> = results.iter().map(|r| r.get()).collect();
        match &outcomes[0] {
            Err(WaitError::Task(TaskError::WorkerDied { pid, status })) => {
                assert!(before.contains(pid));
                assert_eq!(status.signal(), Some(libc::SIGKILL));
            }
            other => panic!("{method}: {other:?}"),
        }
        for (i, r) in outcomes.iter().enumerate().skip(1) {
            assert_eq!(r.as_ref().unwrap(), &(i as u32), "{method}");
        }
        assert_eq!(p.worker_pids().len(), 2, "{method}: replaced");
        // A map with a dying item: that item fails, the rest complete.
        let got: Vec<_> = p
            .with_chunksize(1)
            .imap(kill_self_on, [5, 0, 6])
            .unwrap()
            .collect();
        assert_eq!(got[0].as_ref().unwrap(), &5);
        assert!(matches!(got[1], Err(TaskError::WorkerDied { .. })));
        assert_eq!(got[2].as_ref().unwrap(), &6);
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

#[test]
fn abort_segfault_and_exit_in_a_task_are_worker_deaths() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        let died = |r: Result<u32, WaitError>| match r {
            Err(WaitError::Task(TaskError::WorkerDied { status, .. })) => status,
            other => panic!("{method}: {other:?}"),
        };
        let s = died(p.apply_async(abort_self, ()).unwrap().get());
        assert_eq!(s.signal(), Some(libc::SIGABRT));
        let s = died(p.apply_async(segfault_self, ()).unwrap().get());
        assert_eq!(s.signal(), Some(libc::SIGSEGV));
        // pebble's test_process_pool_expired_worker: the exit code is reported.
        let s = died(p.apply_async(exit_3, ()).unwrap().get());
        assert_eq!(s.code(), Some(3));
        assert_eq!(p.apply(square, 3).unwrap(), 9);
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

#[test]
fn a_task_over_its_time_limit_is_stopped_and_the_next_runs_in_a_new_worker() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 1);
        let first = p.apply(pid, ()).unwrap();
        let limit = Duration::from_millis(200);
        let slow = p
            .schedule(sleep_then, Duration::from_secs(600), limit)
            .unwrap();
        assert_eq!(
            slow.get().unwrap_err(),
            WaitError::Task(TaskError::TimedOut { limit })
        );
        let next = p.apply(pid, ()).unwrap();
        assert_ne!(next, first, "{method}: the worker was replaced");
        // A quick task under a limit is not affected.
        let quick = p.schedule(square, 4, Duration::from_secs(600)).unwrap();
        assert_eq!(quick.get().unwrap(), 16);
        p.close();
        p.join().unwrap();

        // The pool-wide default applies to map chunks too.
        let p = Pool::builder()
            .processes(2)
            .start_method(method)
            .task_timeout(limit)
            .build()
            .unwrap();
        let got: Vec<_> = p
            .with_chunksize(1)
            .imap(sleep_then, [Duration::ZERO, Duration::from_secs(600)])
            .unwrap()
            .collect();
        assert_eq!(got[0].as_ref().unwrap(), &7);
        assert_eq!(got[1].as_ref().unwrap_err(), &TaskError::TimedOut { limit });
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

static STARTED: OnceLock<Event> = OnceLock::new();

fn set_started(e: Event) {
    let _ = STARTED.set(e);
}

fn announce_then_sleep(d: Duration) -> u64 {
    STARTED.get().expect("initializer ran").set();
    std::thread::sleep(d);
    1
}

/// A one-worker pool whose tasks can say they started (through [`announce_then_sleep`]).
fn announcing_pool(method: StartMethod) -> (Pool, Event) {
    let started = Event::new().unwrap();
    set_fork_warning(false);
    let p = Pool::builder()
        .processes(1)
        .start_method(method)
        .initializer(set_started, started.clone())
        .build()
        .unwrap();
    (p, started)
}

#[test]
fn cancel_running_stops_a_running_task() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let (p, started) = announcing_pool(method);
        let before = p.worker_pids();
        let f = p
            .apply_async(announce_then_sleep, Duration::from_secs(600))
            .unwrap()
            .into_future();
        assert!(started.wait_timeout(PROMPT), "{method}: the task started");
        assert!(!f.cancel(), "Python's cancel() fails for a running task");
        assert!(f.cancel_running());
        assert!(f.cancelled());
        assert_eq!(
            f.result().unwrap_err(),
            WaitError::Task(TaskError::Cancelled)
        );
        assert_eq!(p.apply(square, 5).unwrap(), 25);
        assert_ne!(p.worker_pids(), before, "{method}: replaced");
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

/// FAILURE_MODES 12: Ctrl-C goes to the whole process group; workers ignore it and
/// leave it to the parent (mpire's `DisableKeyboardInterruptSignal`).
#[test]
fn workers_ignore_ctrl_c() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let (p, started) = announcing_pool(method);
        let r = p
            .apply_async(announce_then_sleep, Duration::from_millis(100))
            .unwrap();
        assert!(started.wait_timeout(PROMPT));
        let worker = p.worker_pids()[0];
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(worker as i32).unwrap(),
            rustix::process::Signal::INT,
        )
        .unwrap();
        assert_eq!(r.get().unwrap(), 1, "{method}");
        assert_eq!(p.worker_pids(), [worker]);
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

#[test]
fn maxtasksperchild_recycles_workers() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        set_fork_warning(false);
        let p = Pool::builder()
            .processes(1)
            .start_method(method)
            .maxtasksperchild(2)
            .build()
            .unwrap();
        let pids: Vec<u32> = (0..6).map(|_| p.apply(pid, ()).unwrap()).collect();
        let distinct: HashSet<u32> = pids.iter().copied().collect();
        assert_eq!(distinct.len(), 3, "{method}: {pids:?}");
        // CPython issue #10332: closing before the work is done must not hang join.
        let rs: Vec<_> = (0..5)
            .map(|_| p.apply_async(pid_after, Duration::ZERO).unwrap())
            .collect();
        p.close();
        p.join().unwrap();
        assert!(rs.iter().all(|r| r.get().is_ok()));
    }
    assert!(matches!(
        Pool::builder().maxtasksperchild(0).build(),
        Err(PoolError::Invalid(_))
    ));
    check.assert_clean();
}

static GREETING: OnceLock<String> = OnceLock::new();

fn greeting(_: ()) -> String {
    GREETING.get().cloned().unwrap_or_default()
}

/// Under `fork`, the initializer may be a closure capturing anything.
#[test]
fn a_fork_initializer_closure_captures_state() {
    let check = LeakCheck::start();
    let captured = format!("hello from {}", std::process::id());
    let expected = captured.clone();
    set_fork_warning(false);
    let p = Pool::builder()
        .processes(2)
        .fork_initializer(move || {
            let _ = GREETING.set(captured.clone());
        })
        .build()
        .unwrap();
    assert_eq!(p.map(greeting, [(), (), ()]).unwrap(), vec![expected; 3]);
    p.close();
    p.join().unwrap();
    drop(p);
    check.assert_clean();
}

fn bad_init(_: ()) {
    panic!("no database here");
}

#[test]
fn a_failing_initializer_breaks_the_pool_with_a_clear_error() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        set_fork_warning(false);
        let p = Pool::builder()
            .processes(2)
            .start_method(method)
            .initializer(bad_init, ())
            .build()
            .unwrap();
        match p.apply(square, 2) {
            Err(PoolError::Task(TaskError::Broken { reason })) => {
                assert!(reason.contains("no database here"), "{reason}")
            }
            // The initializer may already have broken the pool before the submit.
            Err(PoolError::Broken { reason }) => assert!(reason.contains("no database here")),
            other => panic!("{method}: {other:?}"),
        }
        assert!(matches!(
            p.apply_async(square, 2),
            Err(PoolError::Broken { .. })
        ));
        drop(p);
    }
    check.assert_clean();
}

/// A value whose serialisation fails.
#[derive(Debug)]
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot encode this"))
    }
}

impl<'de> serde::Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unencodable)
    }
}

fn make_unencodable(_: ()) -> Unencodable {
    Unencodable
}

fn takes_unencodable(_: Unencodable) -> u32 {
    1
}

/// Encodes fine; refuses to decode (a worker cannot read the argument, or the parent
/// the result).
#[derive(Debug)]
struct Undecodable;

impl serde::Serialize for Undecodable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> serde::Deserialize<'de> for Undecodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("cannot decode this"))
    }
}

fn takes_undecodable(_: Undecodable) -> u32 {
    1
}

fn makes_undecodable(_: ()) -> Undecodable {
    Undecodable
}

/// The matrix of CPython's `test_deadlock.py` / loky's `test_crashes`, for what can
/// fail in Rust: encoding the arguments (parent), decoding them (worker), running
/// (panic, abort, exit: other tests), encoding the result (worker), decoding it
/// (parent). Each is that task's error, promptly; the pool goes on.
#[test]
fn every_serialisation_step_fails_its_task_only() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        let pids = p.worker_pids();
        let in_worker = p.apply_async(takes_undecodable, Undecodable).unwrap().get();
        match in_worker {
            // The worker's failure arrives as its message.
            Err(WaitError::Task(TaskError::Serialization {
                message,
                source: None,
            })) => {
                assert!(message.contains("arguments"), "{message}")
            }
            other => panic!("{method}: {other:?}"),
        }
        let in_parent = p.apply_async(makes_undecodable, ()).unwrap().get();
        match in_parent {
            // This process's failure carries the codec's error.
            Err(WaitError::Task(TaskError::Serialization {
                message,
                source: Some(source),
            })) => {
                assert!(message.contains("result"), "{message}");
                assert!(
                    matches!(*source, multiproc::CodecError::Decode { .. }),
                    "{source:?}"
                );
            }
            other => panic!("{method}: {other:?}"),
        }
        // A map whose chunk cannot be decoded in the worker: every item says so.
        let got: Vec<_> = p
            .with_chunksize(2)
            .imap(takes_undecodable, [Undecodable, Undecodable, Undecodable])
            .unwrap()
            .collect();
        assert!(
            got.iter()
                .all(|r| matches!(r, Err(TaskError::Serialization { .. }))),
            "{method}: {got:?}"
        );
        assert_eq!(p.worker_pids(), pids, "{method}: no worker lost");
        assert_eq!(p.apply(square, 7).unwrap(), 49);
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

#[test]
fn serialisation_failures_fail_the_task_only() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        // CPython's test_map_unpicklable: the call itself fails, at once.
        assert!(matches!(
            p.apply_async(takes_unencodable, Unencodable),
            Err(PoolError::Arguments(_))
        ));
        // CPython's test_unpickleable_result, 20 times: each fails, no worker is lost.
        let pids = p.worker_pids();
        for _ in 0..20 {
            match p.apply_async(make_unencodable, ()).unwrap().get() {
                Err(WaitError::Task(TaskError::Serialization {
                    message,
                    source: None,
                })) => {
                    assert!(message.contains("result"), "{message}")
                }
                other => panic!("{method}: {other:?}"),
            }
        }
        assert_eq!(p.worker_pids(), pids, "{method}: no worker lost");
        assert_eq!(p.apply(square, 6).unwrap(), 36);
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

/// Issue 13: a user's `custom` error text reaches the caller, on every side: arguments
/// encoded here and decoded in the worker, results encoded there (alone and in a chunk)
/// and decoded here.
#[test]
fn a_serde_error_carries_the_users_message_to_the_caller() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 1);
        let text = |r: Result<(), WaitError>| match r {
            Err(WaitError::Task(e @ TaskError::Serialization { .. })) => e.to_string(),
            other => panic!("{method}: {other:?}"),
        };
        let args = text(
            p.apply_async(takes_undecodable, Undecodable)
                .unwrap()
                .get()
                .map(drop),
        );
        assert!(
            args.contains("arguments: cannot decode"),
            "{method}: {args}"
        );
        assert!(
            args.ends_with("Undecodable: cannot decode this"),
            "{method}: {args}"
        );
        let result = text(p.apply_async(make_unencodable, ()).unwrap().get().map(drop));
        assert!(
            result.contains("result: cannot encode"),
            "{method}: {result}"
        );
        assert!(
            result.ends_with("Unencodable: cannot encode this"),
            "{method}: {result}"
        );
        let back = text(
            p.apply_async(makes_undecodable, ())
                .unwrap()
                .get()
                .map(drop),
        );
        assert!(
            back.ends_with("Undecodable: cannot decode this"),
            "{method}: {back}"
        );
        for r in p
            .with_chunksize(2)
            .imap(make_unencodable, [(), ()])
            .unwrap()
        {
            let e = r.map(drop).unwrap_err().to_string();
            assert!(
                e.ends_with("Unencodable: cannot encode this"),
                "{method}: {e}"
            );
        }
        let Err(sent) = p.apply_async(takes_unencodable, Unencodable) else {
            panic!("{method}: an unencodable argument was sent");
        };
        assert!(
            sent.to_string().ends_with("cannot encode this"),
            "{method}: {sent}"
        );
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

/// CPython's `_TestPool::test_terminate`: 10 000 long tasks, terminate returns.
#[test]
fn terminate_and_drop_mid_map_leave_nothing_behind() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        let r = p
            .with_chunksize(1)
            .map_async(sleep_then, vec![Duration::from_secs(600); 10_000])
            .unwrap();
        p.terminate();
        match r.get() {
            Err(PoolError::Item { index: 0, error }) => {
                assert_eq!(error, TaskError::Terminated)
            }
            other => panic!("{method}: {other:?}"),
        }
        assert!(p.apply_async(square, 1).is_err(), "terminated");

        let p = pool(method, 2);
        let it = p
            .with_chunksize(1)
            .imap(sleep_then, vec![Duration::from_secs(600); 100])
            .unwrap();
        drop(p);
        drop(it);
    }
    check.assert_clean();
}

#[test]
fn progress_counts_and_bar() {
    let check = LeakCheck::start();
    let p = pool(StartMethod::ForkServer, 2);
    let mut it = p
        .with_progress_bar()
        .with_chunksize(3)
        .imap(square, 0..30)
        .unwrap();
    assert_eq!(it.total(), Some(30));
    assert_eq!(it.next().unwrap().unwrap(), 0);
    let rest: Vec<u64> = it.by_ref().map(Result::unwrap).collect();
    assert_eq!(rest.len(), 29);
    assert_eq!(it.completed(), 30);
    p.close();
    p.join().unwrap();
    drop(p);
    check.assert_clean();
}

/// Under fork: a pool of `method` workers busy with a long task; reports the workers'
/// pids on `report`, then waits to be killed.
fn middle_with_a_busy_pool((report, method): (multiproc::Queue<u32>, StartMethod)) {
    let p = pool(method, 2);
    let _busy = p.apply_async(sleep_then, Duration::from_secs(600)).unwrap();
    for pid in p.worker_pids() {
        report.put(pid).unwrap();
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The workers of a pool die with the process that owns the pool, even when it is
/// SIGKILLed in the middle of a task (dask/distributed#1303: orphaned workers).
///
/// The owner is started with `spawn`, not forked from this test process: a fork of a
/// process whose other threads (the other tests) are inside parking_lot can leave the
/// child its lock tables half-updated (seen: a null queue tail, an abort in the child).
#[test]
fn pool_workers_die_with_a_sigkilled_owner() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let report = multiproc::Queue::<u32>::new().unwrap();
        let mut middle = multiproc::Process::builder()
            .start_method(StartMethod::Spawn)
            .start(middle_with_a_busy_pool, (report.clone(), method))
            .unwrap();
        let workers = [
            report.get_timeout(PROMPT).unwrap(),
            report.get_timeout(PROMPT).unwrap(),
        ];
        for w in workers {
            assert!(!wait_gone(w, Duration::ZERO), "{method}: worker {w} runs");
        }
        middle.kill().unwrap();
        assert_eq!(middle.wait().unwrap().signal(), Some(libc::SIGKILL));
        for w in workers {
            assert!(
                wait_gone(w, PROMPT),
                "{method}: worker {w} outlived its SIGKILLed owner"
            );
        }
    }
    check.assert_clean();
}

/// A 64 MiB result whose worker kills itself while (or before) it is being sent.
fn big_result_then_die(n: usize) -> serde_bytes::ByteBuf {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(2));
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
            .unwrap();
    });
    serde_bytes::ByteBuf::from(vec![7u8; n])
}

fn len_of(b: serde_bytes::ByteBuf) -> usize {
    b.len()
}

/// CPython's `test_crash_big_data` (gh-94777) and pebble's
/// `test_pool_deadlock_stop_cancel`: a worker killed while it sends a large result
/// fails that task only (or its result made it in whole); 100 MB of arguments, then a
/// terminate, return promptly.
#[test]
fn big_data_with_crashes_never_hangs() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        let mut deaths = 0;
        for _ in 0..3 {
            let dying = p.apply_async(big_result_then_die, 64 << 20).unwrap();
            let others: Vec<_> = (0..20).map(|i| p.apply_async(square, i).unwrap()).collect();
            match dying.get() {
                Ok(bytes) => assert!(bytes.len() == 64 << 20 && bytes.iter().all(|&b| b == 7)),
                Err(WaitError::Task(TaskError::WorkerDied { status, .. })) => {
                    assert_eq!(status.signal(), Some(libc::SIGKILL), "{method}");
                    deaths += 1;
                }
                other => panic!("{method}: {other:?}"),
            }
            for (i, r) in others.iter().enumerate() {
                assert_eq!(r.get().unwrap(), (i * i) as u64, "{method}");
            }
        }
        // The scenario is a death: a result that always made it in whole would test
        // nothing. (The killer fires 2 ms into a task that fills 64 MiB, so a whole
        // result is the rare case even on a loaded machine.)
        assert!(deaths >= 1, "{method}: no worker died in 3 tries");
        let big = serde_bytes::ByteBuf::from(vec![1u8; 100 << 20]);
        assert_eq!(p.apply(len_of, big.clone()).unwrap(), 100 << 20);
        let pending: Vec<_> = (0..3)
            .map(|_| p.apply_async(len_of, big.clone()).unwrap())
            .collect();
        p.terminate();
        for r in pending {
            match r.get() {
                Ok(n) => assert_eq!(n, 100 << 20),
                Err(WaitError::Task(TaskError::Terminated)) => {}
                other => panic!("{method}: {other:?}"),
            }
        }
    }
    check.assert_clean();
}

fn resident(_: ()) -> (u32, u64) {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    (std::process::id(), pages * 4096)
}

/// Leaks `mib` MiB, touched, and returns the pid.
fn leak(mib: usize) -> u32 {
    let v = vec![1u8; mib << 20];
    std::hint::black_box(&v);
    std::mem::forget(v);
    std::process::id()
}

/// loky's `test_memory_leak_protection`, billiard's `max_memory_per_child`: a worker
/// that a task left above the limit is replaced after that task; the task completes.
#[test]
fn max_memory_per_child_replaces_a_worker_that_leaked() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let probe = pool(method, 1);
        let (_, baseline) = probe.apply(resident, ()).unwrap();
        drop(probe);
        set_fork_warning(false);
        let p = Pool::builder()
            .processes(1)
            .start_method(method)
            .max_memory_per_child(baseline + (48 << 20))
            .build()
            .unwrap();
        let (first, _) = p.apply(resident, ()).unwrap();
        assert_eq!(
            p.apply(leak, 1).unwrap(),
            first,
            "{method}: a small leak is fine"
        );
        assert_eq!(
            p.apply(leak, 96).unwrap(),
            first,
            "{method}: the task completes"
        );
        let (next, rss) = p.apply(resident, ()).unwrap();
        assert_ne!(next, first, "{method}: the leaky worker was replaced");
        assert!(rss < baseline + (48 << 20), "{method}: a fresh worker");
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

static ENCODED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An initializer argument that encodes for the first worker and refuses for the second,
/// so that the second worker cannot start.
#[derive(Clone, Debug)]
struct SecondRefuses;

impl serde::Serialize for SecondRefuses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if ENCODED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            return Err(serde::ser::Error::custom("the second worker cannot start"));
        }
        s.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for SecondRefuses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| SecondRefuses)
    }
}

fn accept(_: SecondRefuses) {}

/// CPython's `TestPoolNotLeakOnFailure::test_release_unused_processes` (Issue #19675):
/// a pool whose second worker cannot start fails to build, and the first worker is
/// killed and reaped.
#[test]
fn a_pool_that_cannot_start_leaves_no_worker_behind() {
    let check = LeakCheck::start();
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        ENCODED.store(0, std::sync::atomic::Ordering::SeqCst);
        let built = Pool::builder()
            .processes(3)
            .start_method(method)
            .initializer(accept, SecondRefuses)
            .build();
        match built {
            Err(PoolError::Start(multiproc::StartError::Codec(_))) => {}
            other => panic!("{method}: {other:?}"),
        }
        assert!(multiproc::active_children().is_empty(), "{method}");
    }
    check.assert_clean();
}

/// A pool that was closed or terminated takes no new task, and says so with the
/// vocabulary's `ShutDown` (Python: `ValueError: Pool not running`); what was submitted
/// before `close` still completes.
#[test]
fn a_closed_or_terminated_pool_refuses_new_tasks_with_shut_down() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 1);
        let before = p.apply_async(square, 5).unwrap();
        p.close();
        assert!(
            matches!(p.apply_async(square, 6), Err(PoolError::ShutDown)),
            "{method}"
        );
        assert!(
            matches!(p.map(square, [1, 2]), Err(PoolError::ShutDown)),
            "{method}"
        );
        assert_eq!(before.get_timeout(PROMPT).unwrap(), 25, "{method}");
        p.join().unwrap();
        let p = pool(method, 1);
        p.terminate();
        assert!(
            matches!(p.apply(square, 7), Err(PoolError::ShutDown)),
            "{method}"
        );
    }
    check.assert_clean();
}

/// A chunk size of 0 is a bad argument (Python's `ValueError: Chunksize must be 1+`):
/// the map call says so and runs nothing, rather than using chunks of one.
#[test]
fn a_chunksize_of_zero_is_refused_by_every_map() {
    let check = LeakCheck::start();
    let p = pool(StartMethod::ForkServer, 1);
    let invalid = |r: Result<(), PoolError>| match r {
        Err(PoolError::Invalid(what)) => assert!(what.contains("chunksize"), "{what}"),
        other => panic!("{other:?}"),
    };
    invalid(p.with_chunksize(0).map(square, [1, 2]).map(drop));
    invalid(p.with_chunksize(0).imap(square, [1, 2]).map(drop));
    invalid(p.with_chunksize(0).imap_unordered(square, [1, 2]).map(drop));
    invalid(p.with_chunksize(0).map_async(square, [1, 2]).map(drop));
    assert_eq!(p.with_chunksize(1).map(square, [3]).unwrap(), [9]);
    drop(p);
    check.assert_clean();
}

/// A result whose `Deserialize` panics (user code, run in the parent by the pool's
/// collector thread).
#[derive(Debug)]
struct PanicsWhenDecoded;

impl serde::Serialize for PanicsWhenDecoded {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> serde::Deserialize<'de> for PanicsWhenDecoded {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("the result's Deserialize panicked on purpose")
    }
}

fn makes_panics_when_decoded(_: u32) -> PanicsWhenDecoded {
    PanicsWhenDecoded
}

/// A panic in the result's `Deserialize`, which runs on the pool's collector thread,
/// fails that task with a serialization error carrying the panic's message, for a
/// single task and for every item of a map chunk; the pool goes on. (It used to kill
/// the collector and leave every future pending for ever.)
#[test]
fn a_panic_decoding_a_result_fails_that_task_and_the_pool_goes_on() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        let one = p.apply_async(makes_panics_when_decoded, 1).unwrap();
        match one.get_timeout(PROMPT) {
            Err(WaitError::Task(TaskError::Serialization { message, .. })) => {
                assert!(
                    message.contains("panicked on purpose"),
                    "{method}: {message}"
                )
            }
            other => panic!("{method}: {other:?}"),
        }
        let items: Vec<_> = p
            .with_chunksize(2)
            .imap(makes_panics_when_decoded, [1, 2, 3])
            .unwrap()
            .collect();
        assert_eq!(items.len(), 3, "{method}");
        for item in items {
            match item {
                Err(TaskError::Serialization { message, .. }) => {
                    assert!(
                        message.contains("panicked on purpose"),
                        "{method}: {message}"
                    )
                }
                other => panic!("{method}: {other:?}"),
            }
        }
        assert_eq!(
            p.apply(square, 4).unwrap(),
            16,
            "{method}: the pool goes on"
        );
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

static GATE: OnceLock<Event> = OnceLock::new();

fn set_gate(gate: Event) {
    let _ = GATE.set(gate);
}

/// Returns `x` once the test opens the gate.
fn after_gate(x: u32) -> u32 {
    let gate = GATE.get().expect("initializer ran");
    assert!(gate.wait_timeout(PROMPT), "the gate never opened");
    x
}

/// Python's `MapResult.get(timeout)` and `IMapIterator.next(timeout)`: a wait that runs
/// out says `Timeout` and stops only the wait (every result still arrives, in order);
/// a map's results are taken once, a second `get` says `Taken`.
#[test]
fn map_timeouts_stop_only_the_wait_and_map_results_are_taken_once() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let gate = Event::new().unwrap();
        set_fork_warning(false);
        let p = Pool::builder()
            .processes(2)
            .start_method(method)
            .initializer(set_gate, gate.clone())
            .build()
            .unwrap();
        let m = p.with_chunksize(1).map_async(after_gate, 0..4).unwrap();
        let mut it = p.with_chunksize(1).imap(after_gate, 10..13).unwrap();
        assert!(
            matches!(
                m.get_timeout(Duration::from_millis(20)),
                Err(PoolError::Timeout)
            ),
            "{method}"
        );
        assert!(!m.ready(), "{method}");
        assert!(
            matches!(
                it.next_timeout(Duration::from_millis(20)),
                Some(Err(WaitError::Timeout))
            ),
            "{method}"
        );
        gate.set();
        assert_eq!(m.get_timeout(PROMPT).unwrap(), [0, 1, 2, 3], "{method}");
        assert!(matches!(m.get(), Err(PoolError::Taken)), "{method}");
        assert!(
            matches!(m.get_timeout(PROMPT), Err(PoolError::Taken)),
            "{method}"
        );
        let rest: Vec<u32> = (0..3)
            .map(|_| it.next_timeout(PROMPT).unwrap().unwrap())
            .collect();
        assert_eq!(rest, [10, 11, 12], "{method}: nothing lost to the timeout");
        assert!(it.next_timeout(PROMPT).is_none(), "{method}");
        drop(it);
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

/// A panic in the arguments' `Serialize` (user code, run by `apply_async` and the maps
/// in the caller's thread) is the same typed error as a `Serialize` that returns `Err`:
/// `PoolError::Arguments` with the panic's message. It used to unwind into the caller.
#[test]
fn a_panic_encoding_the_arguments_is_an_arguments_error() {
    let check = LeakCheck::start();
    let p = pool(StartMethod::ForkServer, 1);
    let says_panicked = |r: Result<(), PoolError>| match r {
        Err(PoolError::Arguments(e)) => {
            assert!(e.to_string().contains("panicked on purpose"), "{e}")
        }
        other => panic!("{other:?}"),
    };
    says_panicked(
        p.apply_async(takes_panics_when_encoded, PanicsWhenEncoded)
            .map(drop),
    );
    says_panicked(
        p.map(takes_panics_when_encoded, [PanicsWhenEncoded])
            .map(drop),
    );
    assert_eq!(p.apply(square, 5).unwrap(), 25, "the pool goes on");
    drop(p);
    check.assert_clean();
}
