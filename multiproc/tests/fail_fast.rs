//! Fail-fast mode (issue 16): `fail_fast(true)` on the `Pool` and `ProcessPoolExecutor`
//! builders gives CPython's and loky's semantics (a dead worker breaks the pool: every
//! pending future fails with `TaskError::BrokenPool { pid, status }`, and so do later
//! submits); the default stays crash-safe (only the dead worker's task fails).
//!
//! Both modes against one crash matrix: {panic, abort, segfault, exit(3)} × {in the
//! task, in decoding its argument in the worker, in encoding its result in the worker}
//! × every start method × {`Pool`, `ProcessPoolExecutor`}. A panic is caught wherever
//! it happens and breaks nothing, in either mode.

use std::time::Duration;

use multiproc::StartMethod;
use multiproc::executor::{ProcessPoolExecutor, TaskError, WaitError};
use multiproc::pool::{Pool, PoolError};
use multiproc::process::ExitStatus;
use multiproc::testing::LeakCheck;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

multiproc::test_support!();

const PROMPT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Crash {
    Panic,
    Abort,
    Segfault,
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Place {
    Task,
    ArgDecode,
    ResultEncode,
}

const CRASHES: [Crash; 4] = [Crash::Panic, Crash::Abort, Crash::Segfault, Crash::Exit];
const PLACES: [Place; 3] = [Place::Task, Place::ArgDecode, Place::ResultEncode];

impl Crash {
    fn now(self) -> ! {
        match self {
            Crash::Panic => panic!("crash-panic"),
            Crash::Abort => std::process::abort(),
            Crash::Segfault => loop {
                // The first SIGSEGV goes to std's stack-overflow handler, which restores
                // the default action; the second kills.
                rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::SEGV,
                )
                .unwrap();
            },
            Crash::Exit => std::process::exit(3),
        }
    }

    /// Whether `status` is how this crash ends a process.
    fn ended(self, status: &ExitStatus) -> bool {
        match self {
            Crash::Panic => false,
            Crash::Abort => status.signal() == Some(libc::SIGABRT),
            Crash::Segfault => status.signal() == Some(libc::SIGSEGV),
            Crash::Exit => status.code() == Some(3),
        }
    }
}

/// A task's argument: decoding it in the worker crashes when `place` says so.
#[derive(Debug, Clone, Copy, Serialize)]
struct Arg {
    crash: Crash,
    place: Place,
}

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            crash: Crash,
            place: Place,
        }
        let Raw { crash, place } = Raw::deserialize(d)?;
        if place == Place::ArgDecode {
            crash.now();
        }
        Ok(Arg { crash, place })
    }
}

/// A task's result: encoding it in the worker crashes when `place` says so.
#[derive(Debug, Deserialize)]
struct Out(u32);

#[derive(Debug)]
struct OutBomb(Arg);

impl Serialize for OutBomb {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.place == Place::ResultEncode {
            self.0.crash.now();
        }
        s.serialize_newtype_struct("Out", &7u32)
    }
}

impl<'de> Deserialize<'de> for OutBomb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Out(seven) = Out::deserialize(d)?;
        assert_eq!(seven, 7);
        Ok(OutBomb(Arg {
            crash: Crash::Panic,
            place: Place::Task,
        }))
    }
}

fn crash(a: Arg) -> OutBomb {
    if a.place == Place::Task {
        a.crash.now();
    }
    OutBomb(a)
}

fn double(x: u32) -> u32 {
    x * 2
}

/// What the crashing task's failure must be, in the mode `fail_fast`.
fn check_crash_error(e: &TaskError, crash: Crash, place: Place, fail_fast: bool, what: &str) {
    match (crash, e) {
        (Crash::Panic, TaskError::Panicked { message, .. }) if place == Place::Task => {
            assert_eq!(message, "crash-panic", "{what}")
        }
        (Crash::Panic, TaskError::Serialization { message, .. }) => {
            assert!(message.contains("crash-panic"), "{what}: {message}")
        }
        (_, TaskError::BrokenPool { pid, status }) if fail_fast => {
            assert!(*pid > 0);
            assert!(crash.ended(status), "{what}: {status}");
            assert!(e.to_string().contains(&pid.to_string()), "{what}");
        }
        (_, TaskError::WorkerDied { status, .. }) if !fail_fast => {
            assert!(crash.ended(status), "{what}: {status}")
        }
        _ => panic!("{what}: {e:?}"),
    }
}

/// Whether this cell breaks the pool.
fn breaks(crash: Crash, fail_fast: bool) -> bool {
    fail_fast && crash != Crash::Panic
}

fn executor_cell(method: StartMethod, fail_fast: bool, crash: Crash, place: Place) {
    let what = format!("executor {method:?} fail_fast={fail_fast} {crash:?} in {place:?}");
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .start_method(method)
        .fail_fast(fail_fast)
        .build()
        .unwrap();
    let warm = ex.submit(double, 1).unwrap();
    assert_eq!(warm.result_timeout(PROMPT), Ok(2), "{what}");
    let bad = ex.submit(crash_fn(), Arg { crash, place }).unwrap();
    // Pending behind the crash: one worker.
    let pending = ex.submit(double, 2).unwrap();
    let e = bad.result_timeout(PROMPT).unwrap_err();
    let e = e.task().unwrap_or_else(|| panic!("{what}: {e:?}"));
    check_crash_error(e, crash, place, fail_fast, &what);
    let later = ex.submit(double, 3).unwrap();
    if breaks(crash, fail_fast) {
        // The pending task and a later one fail with the same error.
        assert_eq!(
            pending.result_timeout(PROMPT),
            Err(WaitError::Task(e.clone())),
            "{what}"
        );
        assert_eq!(
            later.result_timeout(PROMPT),
            Err(WaitError::Task(e.clone())),
            "{what}"
        );
        assert!(ex.worker_pids().is_empty(), "{what}");
    } else {
        assert_eq!(pending.result_timeout(PROMPT), Ok(4), "{what}");
        assert_eq!(later.result_timeout(PROMPT), Ok(6), "{what}");
    }
    ex.shutdown(true, false);
}

fn pool_cell(method: StartMethod, fail_fast: bool, crash: Crash, place: Place) {
    let what = format!("pool {method:?} fail_fast={fail_fast} {crash:?} in {place:?}");
    let p = Pool::builder()
        .processes(1)
        .start_method(method)
        .fail_fast(fail_fast)
        .build()
        .unwrap();
    assert_eq!(p.apply(double, 1).unwrap(), 2, "{what}");
    let bad = p.apply_async(crash_fn(), Arg { crash, place }).unwrap();
    let pending = p.apply_async(double, 2).unwrap();
    let e = bad.get_timeout(PROMPT).unwrap_err();
    let e = e.task().unwrap_or_else(|| panic!("{what}: {e:?}"));
    check_crash_error(e, crash, place, fail_fast, &what);
    if breaks(crash, fail_fast) {
        assert_eq!(
            pending.get_timeout(PROMPT),
            Err(WaitError::Task(e.clone())),
            "{what}"
        );
        match p.apply_async(double, 3) {
            Err(PoolError::Broken { reason }) => assert_eq!(reason, e.to_string(), "{what}"),
            other => panic!("{what}: {:?}", other.map(|_| ())),
        }
        p.terminate();
    } else {
        assert_eq!(pending.get_timeout(PROMPT), Ok(4), "{what}");
        assert_eq!(p.apply(double, 3).unwrap(), 6, "{what}");
        p.close();
        p.join().unwrap();
    }
}

fn crash_fn() -> fn(Arg) -> OutBomb {
    crash
}

#[test]
fn executor_both_modes_against_the_crash_matrix() {
    multiproc::process::set_fork_warning(false);
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        for fail_fast in [false, true] {
            for crash in CRASHES {
                for place in PLACES {
                    executor_cell(method, fail_fast, crash, place);
                }
            }
        }
    }
    leaks.assert_clean();
}

#[test]
fn pool_both_modes_against_the_crash_matrix() {
    multiproc::process::set_fork_warning(false);
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        for fail_fast in [false, true] {
            for crash in CRASHES {
                for place in PLACES {
                    pool_cell(method, fail_fast, crash, place);
                }
            }
        }
    }
    leaks.assert_clean();
}

/// A worker the pool stops itself (its task's time limit) does not break a fail-fast
/// pool: only that task fails.
#[test]
fn a_worker_the_pool_stops_does_not_break_a_fail_fast_pool() {
    multiproc::process::set_fork_warning(false);
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .start_method(method)
            .max_tasks_per_child(1)
            .fail_fast(true)
            .build()
            .unwrap();
        let limit = Duration::from_millis(100);
        let slow = ex.schedule(sleep_ms, 600_000, limit).unwrap();
        assert_eq!(
            slow.result_timeout(PROMPT),
            Err(WaitError::Task(TaskError::TimedOut { limit })),
            "{method:?}"
        );
        // Recycled after each task (max_tasks_per_child): no break either.
        for i in 0..3 {
            assert_eq!(
                ex.submit(double, i).unwrap().result_timeout(PROMPT),
                Ok(i * 2),
                "{method:?}"
            );
        }
        ex.shutdown(true, false);
    }
    leaks.assert_clean();
}

/// A worker that retires on its own between tasks (`max_memory_per_child`, billiard's
/// way: it exits with status 0) does not break a fail-fast pool either.
#[test]
fn a_worker_that_retires_does_not_break_a_fail_fast_pool() {
    multiproc::process::set_fork_warning(false);
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .start_method(method)
            .max_memory_per_child(1)
            .fail_fast(true)
            .build()
            .unwrap();
        let mut pids = std::collections::HashSet::new();
        for i in 0..4 {
            let (n, pid) = ex
                .submit(double_pid, i)
                .unwrap()
                .result_timeout(PROMPT)
                .unwrap();
            assert_eq!(n, i * 2, "{method:?}");
            pids.insert(pid);
        }
        // Every task ran in a fresh worker: each retired, none broke the pool.
        assert_eq!(pids.len(), 4, "{method:?}");
        ex.shutdown(true, false);
    }
    leaks.assert_clean();
}

fn double_pid(x: u32) -> (u32, u32) {
    (x * 2, std::process::id())
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
