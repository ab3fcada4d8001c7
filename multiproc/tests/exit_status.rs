//! How a child ends, seen from outside (issue 13): a target that returns `Result::Err`
//! exits with 1 and prints `Error: {e:?}` on the child's stderr, as a Rust `main`
//! returning `Err` does (Python: a target that raises prints its traceback and exits
//! with 1), while `join` still gives the value; a panic's message reaches the child's
//! real stderr under every start method, a `fork` child of a test binary included
//! (whose harness captures the output of the forking thread).
//!
//! The child's stderr is the descriptor it inherits, which a test cannot redirect in
//! its own process without catching every other test's output. So each scenario runs
//! twice: an outer test starts this very test binary with `std::process::Command`,
//! running one `#[ignore]`d inner test (with the harness's capture on, as in any test)
//! whose stderr is a pipe; the inner test starts the child, checks `join` and the exit
//! code; the outer test checks what reached the pipe.

use std::process::Command;

use multiproc::testing::LeakCheck;
use multiproc::{ProcessError, StartMethod};
use serde::{Deserialize, Serialize};

multiproc::test_support!();

mod common;
use common::{PROMPT, start};

/// The environment variable naming the start method of an inner test.
const METHOD_VAR: &str = "MULTIPROC_TEST_EXIT_METHOD";
/// The environment variable with the text the inner test's child must show.
const TAG_VAR: &str = "MULTIPROC_TEST_EXIT_TAG";

/// The start methods an inner test runs under: the one its outer test named, or all.
fn inner_methods() -> Vec<StartMethod> {
    match std::env::var(METHOD_VAR) {
        Ok(name) => vec![name.parse().expect("a start method")],
        Err(_) => StartMethod::ALL.to_vec(),
    }
}

fn inner_tag() -> String {
    std::env::var(TAG_VAR).unwrap_or_else(|_| "no tag given".into())
}

/// Runs the inner test `name` of this binary under `method` with `tag`, checks that it
/// passed and returns what reached its stderr (the children's, since the harness
/// captures the inner test's own output).
fn run_inner(name: &str, method: StartMethod, tag: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([name, "--exact", "--ignored", "--test-threads=1"])
        .env(METHOD_VAR, method.name())
        .env(TAG_VAR, tag)
        .env("MULTIPROC_NO_FORK_WARNING", "1")
        .output()
        .expect("run the inner test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} under {method}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stderr
}

/// The error a target returns: `Debug` prints `Refused { tag: "…", attempts: 3 }`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Failure {
    Refused { tag: String, attempts: u32 },
}

fn returns_err(tag: String) -> Result<u32, Failure> {
    Err(Failure::Refused { tag, attempts: 3 })
}

fn returns_ok(_: String) -> Result<u32, Failure> {
    Ok(7)
}

fn panics(tag: String) -> u32 {
    panic!("{tag}")
}

#[test]
#[ignore = "run by returned_err_exits_1_and_prints_error_on_stderr, in a process of its own"]
fn inner_returned_err() {
    let tag = inner_tag();
    for method in inner_methods() {
        let leaks = LeakCheck::start();
        let mut child = start(method, returns_err, tag.clone());
        let value = child.join_timeout(PROMPT).expect("a value");
        assert_eq!(
            value,
            Err(Failure::Refused {
                tag: tag.clone(),
                attempts: 3
            }),
            "{method}"
        );
        let status = child.exit_status().expect("reaped");
        assert_eq!(status.exitcode(), 1, "{method}: {status}");
        assert!(!status.success(), "{method}");
        drop(child);
        leaks.assert_clean();
    }
}

#[test]
#[ignore = "run by returned_ok_exits_0_and_prints_nothing, in a process of its own"]
fn inner_returned_ok() {
    for method in inner_methods() {
        let leaks = LeakCheck::start();
        let mut child = start(method, returns_ok, inner_tag());
        assert_eq!(
            child.join_timeout(PROMPT).expect("a value"),
            Ok(7),
            "{method}"
        );
        let status = child.exit_status().expect("reaped");
        assert_eq!(status.exitcode(), 0, "{method}: {status}");
        drop(child);
        leaks.assert_clean();
    }
}

#[test]
#[ignore = "run by a_panic_reaches_the_childs_stderr, in a process of its own"]
fn inner_panic() {
    let tag = inner_tag();
    for method in inner_methods() {
        let leaks = LeakCheck::start();
        let mut child = start(method, panics, tag.clone());
        match child.join_timeout(PROMPT) {
            Err(ProcessError::Panicked { message, .. }) => assert_eq!(message, tag, "{method}"),
            other => panic!("{method}: expected a panic, got {other:?}"),
        }
        let status = child.exit_status().expect("reaped");
        assert_eq!(
            status.exitcode(),
            multiproc::process::EXIT_PANIC,
            "{method}"
        );
        drop(child);
        leaks.assert_clean();
    }
}

#[test]
#[ignore = "run by a_panic_in_a_raw_fork_child_reaches_its_stderr, in a process of its own"]
fn inner_raw_fork_panic() {
    let tag = inner_tag();
    let leaks = LeakCheck::start();
    // SAFETY: run by its outer test, this test is alone in its process (one test
    // thread), so the child may allocate and panic: no other thread held a lock at the
    // fork. The child ends with `exit_now`, never returning into the harness.
    #[allow(unsafe_code)]
    let forked = unsafe { multiproc::sys::fork() }.expect("fork");
    match forked {
        multiproc::sys::Fork::Child => {
            let caught = std::panic::catch_unwind(|| panic!("{tag}")).is_err();
            multiproc::process::exit_now(if caught { 0 } else { 1 })
        }
        multiproc::sys::Fork::Parent(pid) => {
            let status = multiproc::process::wait_pid(pid).expect("reap");
            assert_eq!(status.code(), Some(0), "the child caught its panic");
        }
    }
    leaks.assert_clean();
}

#[test]
fn returned_err_exits_1_and_prints_error_on_stderr() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let tag = format!("refused-under-{method}-{}", std::process::id());
        let stderr = run_inner("inner_returned_err", method, &tag);
        // Exactly what `main` returning `Err(e)` prints: `Error: {e:?}`.
        let want = format!(
            "Error: {:?}\n",
            Failure::Refused {
                tag: tag.clone(),
                attempts: 3
            }
        );
        assert!(
            stderr.contains(&want),
            "{method}: {want:?} not in:\n{stderr}"
        );
        assert_eq!(stderr.matches("Error: ").count(), 1, "{method}:\n{stderr}");
    }
    leaks.assert_clean();
}

#[test]
fn returned_ok_exits_0_and_prints_nothing() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let stderr = run_inner("inner_returned_ok", method, "ok");
        assert!(!stderr.contains("Error"), "{method}:\n{stderr}");
    }
    leaks.assert_clean();
}

#[test]
fn a_panic_reaches_the_childs_stderr() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let tag = format!("boom-under-{method}-{}", std::process::id());
        let stderr = run_inner("inner_panic", method, &tag);
        // std's format: `thread '<name>' (<tid>) panicked at <file>:<line>:<col>:\n<msg>`.
        let at = stderr
            .find("' (")
            .and_then(|i| stderr[i..].find(&format!(") panicked at {}:", file!())))
            .is_some();
        assert!(at, "{method}: no panic line in:\n{stderr}");
        assert!(
            stderr.contains(&format!(":\n{tag}\n")),
            "{method}: {tag:?} not in:\n{stderr}"
        );
        assert_eq!(stderr.matches(&tag).count(), 1, "{method}: once:\n{stderr}");
    }
    leaks.assert_clean();
}

/// The same for a child of `multiproc::sys::fork` (Python's `os.fork`), whose panic
/// the harness's capture swallowed as well.
#[test]
fn a_panic_in_a_raw_fork_child_reaches_its_stderr() {
    let leaks = LeakCheck::start();
    let tag = format!("boom-in-a-raw-fork-child-{}", std::process::id());
    let stderr = run_inner("inner_raw_fork_panic", StartMethod::Fork, &tag);
    assert!(
        stderr.contains(&format!(":\n{tag}\n")),
        "{tag:?} not in:\n{stderr}"
    );
    leaks.assert_clean();
}
