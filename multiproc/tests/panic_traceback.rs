//! A panic carries a traceback captured where it happened (issue 16, Python's
//! `remote_traceback`): `TaskError::Panicked { traceback }` names the panicking
//! function and its `file:line` when `RUST_BACKTRACE` asks for one (std's rules), and is
//! `None` when it does not — for `Pool` (`apply_async`, `map`), `ProcessPoolExecutor`
//! and `ThreadPoolExecutor`, under every start method.
//!
//! One `#[test]` runs every case in turn: the cases change `RUST_BACKTRACE` in this
//! process, which no other test of this binary may see half-way.

use std::time::Duration;

use multiproc::StartMethod;
use multiproc::executor::{TaskError, ThreadPoolExecutor, WaitError};
use multiproc::pool::PoolError;
use multiproc::testing::LeakCheck;

multiproc::test_support!();

mod common;
use common::{executor, pool, wait_until};

const PROMPT: Duration = Duration::from_secs(60);

/// The line of the `panic!` in [`explode_here`].
const EXPLODE_LINE: u32 = line!() + 4;
/// Panics, in a frame of its own that a backtrace must name.
#[inline(never)]
fn explode_here(n: u32) -> u32 {
    panic!("explode {n}")
}

/// Panics and catches it, then panics in [`explode_here`]: the traceback is the last
/// panic's.
fn caught_then_explodes(n: u32) -> u32 {
    let caught = std::panic::catch_unwind(|| -> u32 { panic!("caught inside the task") });
    assert!(caught.is_err());
    explode_here(n)
}

/// Sets `RUST_BACKTRACE` for this process and the workers it starts from now on.
fn set_rust_backtrace(value: &str) {
    // SAFETY: the single test of this binary runs alone; every pool of the previous
    // phase has been shut down, and no thread of this process reads the environment
    // while it changes.
    #[allow(unsafe_code)]
    unsafe {
        std::env::remove_var("RUST_LIB_BACKTRACE");
        std::env::set_var("RUST_BACKTRACE", value);
    }
}

/// Replaces the forkserver by one started with the current environment: a forkserver's
/// workers see the environment it started with (as Python's do).
fn restart_forkserver() {
    let Some(old) = multiproc::process::forkserver_pid() else {
        return;
    };
    let pid = rustix::process::Pid::from_raw(old as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
    wait_until("a new forkserver", || {
        multiproc::process::ensure_forkserver().expect("forkserver") != old
    });
}

/// What a panic of `explode_here(n)` must show: kind, message and, when `traced`, a
/// traceback that says where: the header names the process `pid`, the panic's
/// `file:line`, and the backtrace names `explode_here` and its `file:line`.
fn check_panic(e: &TaskError, n: u32, traced: bool, pid: Option<u32>, what: &str) {
    let TaskError::Panicked { message, traceback } = e else {
        panic!("{what}: not a panic: {e:?}")
    };
    assert_eq!(e.kind(), "Panic", "{what}");
    assert_eq!(message, &format!("explode {n}"), "{what}");
    assert_eq!(e.traceback(), traceback.as_deref(), "{what}");
    if !traced {
        assert_eq!(traceback, &None, "{what}: RUST_BACKTRACE=0");
        return;
    }
    let traceback = traceback
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: no traceback"));
    let here = format!("panic_traceback.rs:{EXPLODE_LINE}:");
    // A child of the fork start method takes no backtrace (std's backtrace lock may be
    // held for ever there): the header, and a note saying why.
    let fork_child = what.starts_with("Fork ");
    assert_eq!(
        traceback.contains("no backtrace in a child of the fork start method"),
        fork_child,
        "{what}: {traceback}"
    );
    if fork_child {
        assert!(
            traceback.starts_with(&format!("Panic: explode {n}\n  panicked at ")),
            "{what}: {traceback}"
        );
        assert!(traceback.contains(&here), "{what}: {traceback}");
        return;
    }
    let (header, frames) = traceback
        .split_once("stack backtrace:\n")
        .unwrap_or_else(|| panic!("{what}: no backtrace in {traceback}"));
    assert!(
        header.starts_with(&format!("Panic: explode {n}\n  panicked at ")),
        "{what}: {traceback}"
    );
    assert!(header.contains(&here), "{what}: {traceback}");
    if let Some(pid) = pid {
        assert!(
            header.contains(&format!(" in process {pid}, thread '")),
            "{what}: {traceback}"
        );
    }
    assert!(frames.contains("explode_here"), "{what}: {traceback}");
    assert!(
        frames.contains(&format!("panic_traceback.rs:{EXPLODE_LINE}")),
        "{what}: {traceback}"
    );
    // std's short backtrace leaves out the panic machinery that ran the hook; `full`
    // keeps it.
    assert_eq!(
        frames.contains("__rust_end_short_backtrace"),
        std::env::var("RUST_BACKTRACE").as_deref() == Ok("full"),
        "{what}: {traceback}"
    );
}

/// `apply_async` and `map` of a `Pool` of one worker started by `method`.
fn pool_cases(method: StartMethod, traced: bool) {
    let p = pool(method, 1);
    let worker = p.apply(|()| std::process::id(), ()).unwrap();
    assert_ne!(worker, std::process::id());
    let e = p
        .apply_async(explode_here, 1)
        .unwrap()
        .get_timeout(PROMPT)
        .unwrap_err();
    let WaitError::Task(e) = e else {
        panic!("{method:?}: {e:?}")
    };
    check_panic(
        &e,
        1,
        traced,
        Some(worker),
        &format!("{method:?} apply_async"),
    );
    match p.map(explode_here, [2, 3]) {
        Err(PoolError::Item { index: 0, error }) => {
            check_panic(&error, 2, traced, Some(worker), &format!("{method:?} map"))
        }
        other => panic!("{method:?} map: {other:?}"),
    }
    let e = p
        .apply_async(caught_then_explodes, 7)
        .unwrap()
        .get_timeout(PROMPT)
        .unwrap_err();
    let WaitError::Task(e) = e else {
        panic!("{method:?}: {e:?}")
    };
    check_panic(
        &e,
        7,
        traced,
        Some(worker),
        &format!("{method:?} last panic"),
    );
    // The worker goes on.
    assert_eq!(p.apply(|()| std::process::id(), ()).unwrap(), worker);
    p.close();
    p.join().unwrap();
}

/// `submit` of a `ProcessPoolExecutor` of one worker started by `method`.
fn executor_case(method: StartMethod, traced: bool) {
    let ex = executor(method, 1);
    let worker = ex
        .submit(|()| std::process::id(), ())
        .unwrap()
        .result_timeout(PROMPT)
        .unwrap();
    let e = ex
        .submit(explode_here, 4)
        .unwrap()
        .result_timeout(PROMPT)
        .unwrap_err();
    let WaitError::Task(e) = e else {
        panic!("{method:?}: {e:?}")
    };
    check_panic(&e, 4, traced, Some(worker), &format!("{method:?} submit"));
    ex.shutdown(true, false);
}

/// `submit` of a `ThreadPoolExecutor`: captured in its worker thread, in this process.
fn thread_case(traced: bool) {
    let ex = ThreadPoolExecutor::new(1);
    let e = ex
        .submit(|| explode_here(5))
        .unwrap()
        .result_timeout(PROMPT)
        .unwrap_err();
    let WaitError::Task(e) = e else {
        panic!("{e:?}")
    };
    check_panic(&e, 5, traced, Some(std::process::id()), "thread submit");
    let e = ex
        .submit(|| caught_then_explodes(6))
        .unwrap()
        .result_timeout(PROMPT)
        .unwrap_err();
    let WaitError::Task(e) = e else {
        panic!("{e:?}")
    };
    check_panic(
        &e,
        6,
        traced,
        Some(std::process::id()),
        "thread, last panic",
    );
    ex.shutdown(true, false);
}

#[test]
fn a_panic_carries_its_traceback_as_rust_backtrace_says() {
    let leaks = LeakCheck::start();
    for (value, traced) in [("1", true), ("0", false), ("full", true)] {
        set_rust_backtrace(value);
        restart_forkserver();
        for method in StartMethod::ALL {
            pool_cases(method, traced);
            executor_case(method, traced);
        }
        thread_case(traced);
    }
    leaks.assert_clean();
}
