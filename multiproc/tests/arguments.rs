//! Arguments are checked at the call, not silently changed (issue 13): a setting out of
//! range is `PoolError::Invalid` naming the parameter, as Python raises `ValueError`
//! (`Pool(0)`: "Number of processes must be at least 1", `ProcessPoolExecutor(0)`:
//! "max_workers must be greater than 0", `maxtasksperchild=0`, …); a time limit of zero
//! (it would stop every task as it starts) is refused too. A zero *wait* is a poll, and
//! stays one: it answers at once, without waiting for the task.

use std::sync::OnceLock;
use std::time::Duration;

use multiproc::executor::ProcessPoolExecutor;
use multiproc::pool::{Pool, PoolError, WaitError};
use multiproc::sync::Event;
use multiproc::testing::LeakCheck;
use multiproc::{ProcessError, StartMethod, process::set_fork_warning};

multiproc::test_support!();

mod common;

const PROMPT: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

fn invalid<T: std::fmt::Debug>(got: Result<T, PoolError>) -> &'static str {
    match got {
        Err(PoolError::Invalid(what)) => what,
        other => panic!("expected PoolError::Invalid, got {other:?}"),
    }
}

#[test]
fn zero_processes_is_refused_naming_the_parameter() {
    let check = LeakCheck::start();
    assert_eq!(
        invalid(Pool::builder().processes(0).build()),
        "processes must be at least 1"
    );
    assert_eq!(invalid(Pool::new(0)), "processes must be at least 1");
    assert_eq!(
        invalid(ProcessPoolExecutor::builder().max_workers(0).build()),
        "max_workers must be at least 1"
    );
    assert_eq!(
        invalid(ProcessPoolExecutor::new(0)),
        "max_workers must be at least 1"
    );
    // The last setting counts: a 0 set and then replaced is no error.
    set_fork_warning(false);
    let p = Pool::builder()
        .processes(0)
        .processes(2)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap();
    assert_eq!(p.worker_pids().len(), 2);
    p.close();
    p.join().unwrap();
    drop(p);
    check.assert_clean();
}

#[test]
fn zero_tasks_or_memory_per_child_is_refused_naming_the_parameter() {
    let check = LeakCheck::start();
    assert_eq!(
        invalid(Pool::builder().maxtasksperchild(0).build()),
        "maxtasksperchild must be at least 1"
    );
    assert_eq!(
        invalid(
            ProcessPoolExecutor::builder()
                .max_tasks_per_child(0)
                .build()
        ),
        "max_tasks_per_child must be at least 1"
    );
    assert_eq!(
        invalid(Pool::builder().max_memory_per_child(0).build()),
        "max_memory_per_child must be at least 1 byte"
    );
    assert_eq!(
        invalid(
            ProcessPoolExecutor::builder()
                .max_memory_per_child(0)
                .build()
        ),
        "max_memory_per_child must be at least 1 byte"
    );
    check.assert_clean();
}

#[test]
fn a_zero_task_timeout_is_refused_naming_the_parameter() {
    let check = LeakCheck::start();
    assert_eq!(
        invalid(Pool::builder().task_timeout(Duration::ZERO).build()),
        "task_timeout must be longer than zero"
    );
    assert_eq!(
        invalid(
            ProcessPoolExecutor::builder()
                .task_timeout(Duration::ZERO)
                .build()
        ),
        "task_timeout must be longer than zero"
    );
    check.assert_clean();
}

#[test]
fn schedule_with_a_zero_limit_is_refused_and_submits_nothing() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        set_fork_warning(false);
        let p = Pool::builder()
            .processes(1)
            .start_method(method)
            .build()
            .unwrap();
        assert_eq!(
            invalid(p.schedule(square, 3, Duration::ZERO)),
            "limit must be longer than zero",
            "{method}"
        );
        // The smallest limit that is not zero is taken.
        let tiny = p.schedule(square, 3, Duration::from_nanos(1)).unwrap();
        let _ = tiny.get_timeout(PROMPT);
        assert_eq!(
            p.apply(square, 4).unwrap(),
            16,
            "{method}: the pool goes on"
        );
        p.close();
        p.join().unwrap();

        let ex = ProcessPoolExecutor::builder()
            .max_workers(2)
            .start_method(method)
            .build()
            .unwrap();
        assert_eq!(
            invalid(ex.schedule(square, 3, Duration::ZERO)),
            "limit must be longer than zero",
            "{method}"
        );
        assert_eq!(
            ex.worker_pids(),
            [0u32; 0],
            "{method}: no worker started for it"
        );
        let f = ex.schedule(square, 5, PROMPT).unwrap();
        assert_eq!(f.result_timeout(PROMPT).unwrap(), 25, "{method}");
        ex.shutdown(true, false);
        assert!(
            matches!(ex.schedule(square, 5, PROMPT), Err(PoolError::ShutDown)),
            "{method}"
        );
    }
    check.assert_clean();
}

static GATE: OnceLock<Event> = OnceLock::new();

fn set_gate(gate: Event) {
    let _ = GATE.set(gate);
}

/// Waits for the test to open the gate (at most [`PROMPT`]).
fn gated(x: u64) -> u64 {
    assert!(
        GATE.get()
            .expect("the initializer ran")
            .wait_timeout(PROMPT),
        "the gate never opened"
    );
    x
}

fn gated_child(gate: Event) -> u32 {
    assert!(gate.wait_timeout(PROMPT), "the gate never opened");
    7
}

/// A zero timeout polls: while the task waits for a gate that opens only after the
/// poll, the poll says `Timeout` (a wait for the task would instead return its value,
/// after the gate's 60 s); once the task is done, the same poll gives the value.
#[test]
fn zero_timeouts_of_waits_poll() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        set_fork_warning(false);
        let gate = Event::new().unwrap();
        let p = Pool::builder()
            .processes(2)
            .start_method(method)
            .initializer(set_gate, gate.clone())
            .build()
            .unwrap();
        let r = p.apply_async(gated, 3).unwrap();
        let m = p.map_async(gated, [1, 2]).unwrap();
        assert_eq!(
            r.get_timeout(Duration::ZERO),
            Err(WaitError::Timeout),
            "{method}"
        );
        assert!(!r.wait_timeout(Duration::ZERO), "{method}");
        assert!(
            matches!(m.get_timeout(Duration::ZERO), Err(PoolError::Timeout)),
            "{method}"
        );
        assert!(!m.wait_timeout(Duration::ZERO), "{method}");

        let mut child = common::start(method, gated_child, gate.clone());
        assert!(
            matches!(
                child.join_timeout(Duration::ZERO),
                Err(ProcessError::Timeout)
            ),
            "{method}"
        );
        assert_eq!(
            child.wait_timeout(Duration::ZERO).unwrap(),
            None,
            "{method}"
        );

        gate.set();
        r.wait();
        assert_eq!(r.get_timeout(Duration::ZERO), Ok(3), "{method}");
        assert!(m.wait_timeout(PROMPT), "{method}");
        assert_eq!(m.get_timeout(Duration::ZERO).unwrap(), [1, 2], "{method}");
        assert_eq!(child.join_timeout(PROMPT).unwrap(), 7, "{method}");
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

/// Python's `join` on a running pool raises `ValueError("Pool is still running")`; here
/// it is `PoolError::StillRunning`, waits for nothing, and leaves the pool running (no
/// implicit close). After `close` or `terminate` it waits, as many times as called.
#[test]
fn join_on_an_open_pool_is_still_running_and_closes_nothing() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        set_fork_warning(false);
        let p = Pool::builder()
            .processes(1)
            .start_method(method)
            .build()
            .unwrap();
        let r = p.apply_async(square, 3).unwrap();
        assert!(matches!(p.join(), Err(PoolError::StillRunning)), "{method}");
        assert_eq!(p.apply(square, 4).unwrap(), 16, "{method}: still open");
        assert_eq!(r.get_timeout(PROMPT).unwrap(), 9, "{method}");
        p.close();
        p.join().unwrap();
        p.join().unwrap();
        assert_eq!(p.worker_pids(), [0u32; 0], "{method}");

        let p = Pool::builder()
            .processes(1)
            .start_method(method)
            .build()
            .unwrap();
        p.terminate();
        p.join().unwrap();
    }
    check.assert_clean();
}
