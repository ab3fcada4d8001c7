//! Task errors that say what failed, where (issue 16): a task that returns `Err` gives
//! `TaskError::Failed` with the error's kind, message and the worker's traceback
//! (Python's `_RemoteTraceback`), the same for `Pool`, `ProcessPoolExecutor` and
//! `ThreadPoolExecutor`; a panic's kind is `"Panic"`.

use std::borrow::Cow;
use std::time::Duration;

use multiproc::StartMethod;
use multiproc::executor::{ErrorKind, TaskError, ThreadPoolExecutor, WaitError};
use multiproc::pool::PoolError;
use multiproc::testing::LeakCheck;

multiproc::test_support!();

mod common;
use common::{executor, pool};

const PROMPT: Duration = Duration::from_secs(60);

/// A user's error with a kind of its own choosing.
#[derive(Debug)]
struct TooBig(u32);

impl std::fmt::Display for TooBig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is too big", self.0)
    }
}

impl ErrorKind for TooBig {
    fn error_kind(&self) -> Cow<'static, str> {
        "ValueError".into()
    }
}

fn parse(s: String) -> Result<u32, std::num::ParseIntError> {
    s.parse()
}

fn small(n: u32) -> Result<(u32, u32), TooBig> {
    if n > 10 {
        Err(TooBig(n))
    } else {
        Ok((n, std::process::id()))
    }
}

fn explode(n: u32) -> Result<u32, String> {
    panic!("explode {n}")
}

/// Whether std would capture a backtrace here (`RUST_BACKTRACE` set, not `0`).
fn backtraces_on() -> bool {
    std::env::var("RUST_BACKTRACE").is_ok_and(|v| v != "0")
}

/// What every `Failed` error of the matrix must show: kind, message, the Display
/// forms, and a traceback naming the process that saw the error.
fn check_failed(e: &TaskError, kind: &str, message: &str, pid: u32) {
    let TaskError::Failed(remote) = e else {
        panic!("not a task's Err: {e:?}")
    };
    assert_eq!(e.kind(), kind);
    assert_eq!(remote.kind(), kind);
    assert_eq!(remote.message(), message);
    assert_eq!(e.to_string(), format!("{kind}: {message}"));
    let traceback = e.traceback().expect("a traceback");
    assert_eq!(traceback, remote.traceback());
    assert!(
        traceback.starts_with(&format!(
            "{kind}: {message}\n  returned by the task in process {pid}, thread '"
        )),
        "{traceback}"
    );
    // A child of the fork start method takes no backtrace: it says so instead.
    let fork_child = traceback.contains("no backtrace in a child of the fork start method");
    assert_eq!(
        traceback.contains("stack backtrace:"),
        backtraces_on() && !fork_child,
        "{traceback}"
    );
    let alternate = format!("{e:#}");
    assert_eq!(
        alternate,
        format!("{kind}: {message}\n\nremote traceback:\n{traceback}")
    );
}

#[test]
fn process_executor_try_submit() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = executor(method, 1);
        let ok = ex.try_submit(small, 3).unwrap();
        let (three, worker) = ok.result_timeout(PROMPT).unwrap();
        assert_eq!(three, 3, "{method:?}");
        assert_ne!(worker, std::process::id());

        let bad = ex.try_submit(small, 11).unwrap();
        let e = bad.result_timeout(PROMPT).unwrap_err();
        let WaitError::Task(e) = e else {
            panic!("{e:?}")
        };
        check_failed(&e, "ValueError", "11 is too big", worker);
        // A failure is readable again, the same.
        assert_eq!(bad.exception_timeout(PROMPT), Ok(Some(e.clone())));

        let e = ex
            .try_submit(parse, "x".into())
            .unwrap()
            .result_timeout(PROMPT)
            .unwrap_err();
        check_failed(
            e.task().unwrap(),
            "ParseIntError",
            "invalid digit found in string",
            worker,
        );

        let panicked = ex
            .try_submit(explode, 5)
            .unwrap()
            .result_timeout(PROMPT)
            .unwrap_err();
        let panicked = panicked.task().unwrap();
        assert_eq!(panicked.kind(), "Panic");
        assert!(
            matches!(panicked, TaskError::Panicked { message, .. } if message == "explode 5"),
            "{panicked:?}"
        );

        // An `Err` is the task's fate, not the worker's: the same worker goes on.
        let (_, after) = ex
            .try_submit(small, 1)
            .unwrap()
            .result_timeout(PROMPT)
            .unwrap();
        assert_eq!(after, worker, "{method:?}");
        ex.shutdown(true, false);
    }
    leaks.assert_clean();
}

#[test]
fn pool_try_apply() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 1);
        let (n, worker) = p.try_apply(small, 4).unwrap();
        assert_eq!(n, 4);
        let Err(PoolError::Task(e)) = p.try_apply(small, 40) else {
            panic!("{method:?}: no task error")
        };
        check_failed(&e, "ValueError", "40 is too big", worker);

        let r = p.try_apply_async(parse, "-".into()).unwrap();
        let e = r.get_timeout(PROMPT).unwrap_err();
        check_failed(
            e.task().unwrap(),
            "ParseIntError",
            "invalid digit found in string",
            worker,
        );
        assert_eq!(p.try_apply(parse, "12".into()).unwrap(), 12);
        p.close();
        p.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn thread_executor_try_submit_gives_the_same_kinds() {
    let ex = ThreadPoolExecutor::new(2);
    let e = ex
        .try_submit(|| small(12))
        .unwrap()
        .result_timeout(PROMPT)
        .unwrap_err();
    check_failed(
        e.task().unwrap(),
        "ValueError",
        "12 is too big",
        std::process::id(),
    );
    let e = ex
        .try_submit(|| parse("q".into()))
        .unwrap()
        .result_timeout(PROMPT)
        .unwrap_err();
    check_failed(
        e.task().unwrap(),
        "ParseIntError",
        "invalid digit found in string",
        std::process::id(),
    );
    let e = ex
        .try_submit(|| explode(2))
        .unwrap()
        .result_timeout(PROMPT)
        .unwrap_err();
    assert_eq!(e.task().unwrap().kind(), "Panic");
    assert_eq!(ex.try_submit(|| small(2)).unwrap().result().unwrap().0, 2);
    // The default kind is the type's name without its path, generics kept short.
    let e = ex
        .try_submit(|| -> Result<(), std::io::Error> { Err(std::io::Error::other("disk")) })
        .unwrap()
        .result()
        .unwrap_err();
    assert_eq!(e.task().unwrap().kind(), "Error");
    assert_eq!(e.task().unwrap().remote().unwrap().message(), "disk");
    ex.shutdown(true, false);
}
