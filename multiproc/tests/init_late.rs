//! `multiproc::init()` called late (issue 14 item 6): after other threads started (as
//! inside `#[tokio::main]`, whose runtime is up before the body runs), and after code
//! that fails when it runs in a re-executed child. Both used to break the re-executing
//! start methods: the forkserver found threads and exited silently (every pool then
//! failed with `ConnectionReset`), and a `spawn` child died in the code before `init()`.
//! Now a re-executed process takes its role before `main` runs, so neither matters.
//!
//! This binary deliberately has no `multiproc::test_support!()`: the inner test calls
//! `init()` itself, late. It runs in a helper process (this binary started again with
//! one `#[ignore]`d test selected, as `tests/exit_status.rs` does), so that the late
//! `init()` is the only one in its process.

use std::process::Command;
use std::sync::{Arc, Barrier};

use multiproc::testing::LeakCheck;
use multiproc::{Pool, Process, ProcessError, StartError, StartMethod};

/// Tells [`before_multiproc`] what to do in a forkserver: `thread` or `exit`.
const BEFORE_VAR: &str = "MULTIPROC_TEST_BEFORE_INIT";

// Another library's constructor, which runs before multiproc's (the test's object comes
// first in the link, and `.init_array` runs in link order): the only code that can
// still run in a re-executed process before it takes its role.
const _: () = {
    #[allow(unsafe_code)]
    #[used]
    #[unsafe(link_section = ".init_array")]
    static BEFORE_MULTIPROC: extern "C" fn() = {
        extern "C" fn before_multiproc_ctor() {
            before_multiproc();
        }
        before_multiproc_ctor
    };
};

/// In a process re-executed by a parent that set [`BEFORE_VAR`]: in a forkserver, start
/// a thread or exit; in a `spawn` child, exit with 3 (`child-exit`).
fn before_multiproc() {
    if std::env::var_os("MULTIPROC_CHILD").is_some()
        && std::env::var(BEFORE_VAR).as_deref() == Ok("child-exit")
    {
        std::process::exit(3);
    }
    if std::env::var_os("MULTIPROC_FORKSERVER").is_none() {
        return;
    }
    match std::env::var(BEFORE_VAR).as_deref() {
        Ok("thread") => {
            std::thread::spawn(|| {
                loop {
                    std::thread::park();
                }
            });
        }
        Ok("exit") => std::process::exit(0),
        _ => {}
    }
}

/// Code that runs before `init()` and fails if it runs in a process multiproc
/// re-executed (a `spawn` child or the forkserver): there, `main` (this binary's test
/// harness) must never run. Every test of this binary starts with it.
fn code_before_init() {
    for role in ["MULTIPROC_CHILD", "MULTIPROC_FORKSERVER"] {
        assert!(
            std::env::var_os(role).is_none(),
            "code before multiproc::init() ran in a re-executed process ({role})"
        );
    }
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
#[ignore = "run by init_after_threads_started_still_serves_every_method, in a process of its own"]
fn inner_init_after_threads() {
    code_before_init();
    // Threads that exist before init(), blocked until the end, as a runtime's workers.
    let release = Arc::new(Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let release = release.clone();
            std::thread::spawn(move || {
                release.wait();
            })
        })
        .collect();
    multiproc::init();
    multiproc::process::set_fork_warning(false);
    for method in StartMethod::ALL {
        let leaks = LeakCheck::start();
        let mut p = Process::builder()
            .start_method(method)
            .start(square, 12)
            .unwrap_or_else(|e| panic!("{method}: start: {e}"));
        assert_eq!(
            p.join().unwrap_or_else(|e| panic!("{method}: join: {e}")),
            144
        );
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .build()
            .unwrap_or_else(|e| panic!("{method}: pool: {e}"));
        let squares = pool
            .map(square, 0..20u64)
            .unwrap_or_else(|e| panic!("{method}: map: {e}"));
        assert_eq!(squares, (0..20u64).map(|x| x * x).collect::<Vec<_>>());
        drop(pool);
        drop(p);
        leaks.assert_clean();
    }
    release.wait();
    for t in threads {
        t.join().expect("a blocked thread");
    }
}

/// Runs the inner test `name` in a helper process with [`BEFORE_VAR`] set to `before`
/// and checks that it passed.
fn run_inner(name: &str, before: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([name, "--exact", "--ignored", "--test-threads=1"])
        .env(BEFORE_VAR, before)
        .output()
        .expect("run the inner test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} ({before}): {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

#[test]
fn init_after_threads_started_still_serves_every_method() {
    code_before_init();
    run_inner("inner_init_after_threads", "nothing");
}

#[test]
#[ignore = "run by a_forkserver_that_cannot_take_its_role_names_the_cause, in a process of its own"]
fn inner_forkserver_cannot_take_its_role() {
    code_before_init();
    multiproc::init();
    let before = std::env::var(BEFORE_VAR).expect("set by the outer test");
    let leaks = LeakCheck::start();
    let err = Process::builder()
        .start_method(StartMethod::ForkServer)
        .start(square, 3)
        .expect_err("the forkserver cannot serve");
    let StartError::InitNotFirst(why) = &err else {
        panic!("{before}: expected InitNotFirst, got {err:?}");
    };
    let expected = match before.as_str() {
        "thread" => "found 2 threads running",
        _ => "exited with exit code 0 before multiproc::init() took its role",
    };
    assert!(why.contains(expected), "{before}: {why}");
    let text = err.to_string();
    assert!(
        text.contains("call multiproc::init() first in main")
            && text.contains("StartMethod::Spawn"),
        "{text}"
    );
    // The advice holds: spawn needs no single-threaded server.
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(square, 3)
        .expect("spawn");
    assert_eq!(p.join().expect("spawn joins"), 9);
    drop(p);
    leaks.assert_clean();
}

#[test]
fn a_forkserver_that_cannot_take_its_role_names_the_cause() {
    code_before_init();
    for before in ["thread", "exit"] {
        run_inner("inner_forkserver_cannot_take_its_role", before);
    }
}

fn unit_target(_: ()) {}

#[test]
#[ignore = "run by a_spawn_child_that_exits_before_init_says_so, in a process of its own"]
fn inner_spawn_child_exits_before_init() {
    code_before_init();
    multiproc::init();
    let leaks = LeakCheck::start();
    // A result type that decodes from nothing too: an exit with 3 must not pass for it.
    for with_handle in [false, true] {
        let mut p = if with_handle {
            // Arguments with a descriptor are sent after the child starts.
            let event = multiproc::sync::Event::new().expect("an event");
            Process::builder()
                .start_method(StartMethod::Spawn)
                .start(|_: multiproc::sync::Event| (), event)
                .expect("spawn")
        } else {
            Process::builder()
                .start_method(StartMethod::Spawn)
                .start(unit_target, ())
                .expect("spawn")
        };
        match p.join() {
            Err(ProcessError::Bootstrap { message, .. }) => assert!(
                message.contains("exited (exit code 3) before multiproc::init() ran")
                    && message.contains("call multiproc::init() first in main"),
                "{message}"
            ),
            other => panic!("with_handle {with_handle}: expected a bootstrap error, got {other:?}"),
        }
        assert_eq!(p.exit_status().expect("reaped").exitcode(), 3);
        drop(p);
    }
    leaks.assert_clean();
}

#[test]
fn a_spawn_child_that_exits_before_init_says_so() {
    code_before_init();
    run_inner("inner_spawn_child_exits_before_init", "child-exit");
}
