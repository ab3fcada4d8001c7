//! Issue 15, "Processes": `Process::close`, `Process::sentinel`, `parent_process`, a
//! context fixed to one start method, and `die_with_parent(false)`, under every start
//! method, each in a leak check. Anchored on CPython's `_test_multiprocessing.py`
//! (`test_close`, `test_sentinel`, `test_parent_process`,
//! `test_parent_process_attributes`, `test_context`).

use std::io::ErrorKind;
use std::time::Duration;

use multiproc::sync::Event;
use multiproc::testing::LeakCheck;
use multiproc::{ProcessError, Queue, StartError, StartMethod, get_context, parent_process};

mod common;
use common::{PROMPT, builder, start};

multiproc::test_support!();

fn wait_for(go: Event) -> bool {
    go.wait_timeout(PROMPT)
}

fn readable_now(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec::try_from(timeout).unwrap();
    rustix::event::poll(&mut fds, Some(&ts)).unwrap() == 1
}

/// CPython's `test_close`: closing a running process is an error and changes nothing;
/// once it ended, `close` releases it and later calls say it is closed.
#[test]
fn close_refuses_a_live_child_then_releases_an_ended_one() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let go = Event::new().unwrap();
        let mut p = start(method, wait_for, go.clone());
        assert!(
            matches!(p.close(), Err(ProcessError::StillRunning)),
            "{method}"
        );
        assert!(p.is_alive(), "{method}: close of a live child changed it");
        assert!(!p.is_closed());
        go.set();
        assert_eq!(
            p.wait_timeout(PROMPT).unwrap().map(|s| s.code()),
            Some(Some(0))
        );
        p.close().unwrap();
        p.close().unwrap(); // twice is harmless
        assert!(p.is_closed());
        assert!(!p.is_alive());
        assert!(matches!(p.join(), Err(ProcessError::Closed)), "{method}");
        assert!(matches!(
            p.join_timeout(Duration::ZERO),
            Err(ProcessError::Closed)
        ));
        assert!(matches!(p.sentinel(), Err(ProcessError::Closed)));
        for err in [
            p.terminate().unwrap_err(),
            p.kill().unwrap_err(),
            p.wait().unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{method}: {err}");
            assert!(err.to_string().contains("closed"), "{err}");
        }
        assert_eq!(p.exit_status().map(|s| s.code()), Some(Some(0)));

        // A child that ended but was never joined: close reaps it.
        let mut q = start(method, |x: u32| x * 2, 21);
        let sentinel_ready = readable_now(q.sentinel().unwrap(), PROMPT);
        assert!(sentinel_ready, "{method}");
        q.close().unwrap();
        assert!(matches!(q.join(), Err(ProcessError::Closed)));
    }
    leaks.assert_clean();
}

/// CPython's `test_sentinel`: not ready while the child runs, ready once it ended, and
/// still ready (and open) after the join.
#[test]
fn sentinel_becomes_readable_when_the_child_ends() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let go = Event::new().unwrap();
        let mut p = start(method, wait_for, go.clone());
        assert!(
            !readable_now(p.sentinel().unwrap(), Duration::ZERO),
            "{method}"
        );
        go.set();
        assert!(readable_now(p.sentinel().unwrap(), PROMPT), "{method}");
        assert!(!p.is_alive());
        assert!(p.join().unwrap(), "{method}: the child saw its event");
        assert!(
            readable_now(p.sentinel().unwrap(), Duration::ZERO),
            "{method}"
        );
        drop(p); // the kept sentinel goes with the handle
    }
    leaks.assert_clean();
}

fn parent_seen(_: ()) -> Option<(String, u32, bool)> {
    parent_process().map(|p| (p.name().to_string(), p.pid(), p.is_alive()))
}

fn grandchild_sees(method: StartMethod) -> (String, Option<(String, u32, bool)>) {
    let me = multiproc::current_process();
    let mut g = multiproc::Process::builder()
        .start_method(method)
        .start(parent_seen, ())
        .unwrap();
    let seen = g.join().unwrap();
    assert_eq!(seen.as_ref().map(|s| s.1), Some(me.pid));
    (me.name, seen)
}

/// CPython's `test_parent_process_attributes`: `None` in the main process; a child
/// sees its parent's name and pid, alive; a grandchild sees the child.
#[test]
fn parent_process_names_the_parent() {
    let leaks = LeakCheck::start();
    assert!(parent_process().is_none());
    for method in StartMethod::ALL {
        let mut p = start(method, parent_seen, ());
        assert_eq!(
            p.join().unwrap(),
            Some(("MainProcess".to_string(), std::process::id(), true)),
            "{method}"
        );
        let mut p = builder(method)
            .name("middle")
            .start(grandchild_sees, method)
            .unwrap();
        let (name, seen) = p.join().unwrap();
        assert_eq!(name, "middle");
        let (parent_name, _, alive) = seen.unwrap();
        assert_eq!((parent_name.as_str(), alive), ("middle", true), "{method}");
    }
    leaks.assert_clean();
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
enum Report {
    Started(u32),
    /// The parent as the grandchild saw it after the go: alive, joined in time, and
    /// the grandchild's parent pid then.
    After {
        alive: bool,
        joined: bool,
        ppid: u32,
    },
}

/// The grandchild: says it started (alive parent), waits for the test's go, then
/// reports what it sees of its parent.
fn grandchild(args: (Queue<Report>, Event)) {
    let (reports, go) = args;
    let parent = parent_process().expect("a parent");
    assert!(parent.is_alive());
    reports.put(Report::Started(std::process::id())).unwrap();
    if !go.wait_timeout(PROMPT) {
        return;
    }
    let joined = parent.join_timeout(PROMPT).is_ok();
    reports
        .put(Report::After {
            alive: parent.is_alive(),
            joined,
            ppid: multiproc::parent_pid(),
        })
        .unwrap();
}

/// The middle process: starts the grandchild (outliving it or not), then waits to be
/// killed.
fn middle(args: (StartMethod, bool, Queue<Report>, Event, Event)) {
    let (method, die, reports, go, never) = args;
    let g = multiproc::Process::builder()
        .start_method(method)
        .die_with_parent(die)
        .start(grandchild, (reports, go))
        .unwrap();
    never.wait_timeout(PROMPT);
    drop(g);
}

/// CPython's `test_parent_process`, and the opt-out of issue 15: a grandchild started
/// with `die_with_parent(false)` outlives its killed parent, sees it dead through
/// `parent_process()`, and is re-parented to us (a subreaper under the leak check),
/// which reaps it; by default it dies with its parent (`SIGKILL`).
#[test]
fn die_with_parent_false_outlives_a_killed_parent_and_the_default_does_not() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        for die in [false, true] {
            let reports = Queue::<Report>::new().unwrap();
            let go = Event::new().unwrap();
            let never = Event::new().unwrap();
            let mut m = start(
                method,
                middle,
                (method, die, reports.clone(), go.clone(), never.clone()),
            );
            let Report::Started(pid) = reports.get_timeout(PROMPT).unwrap() else {
                panic!("expected the grandchild's start")
            };
            m.kill().unwrap();
            common::assert_killed_by(&mut m, libc::SIGKILL, "the middle process");
            if die {
                let status = multiproc::process::wait_pid(pid).unwrap();
                assert_eq!(status.signal(), Some(libc::SIGKILL), "{method}: {status}");
            } else {
                go.set();
                let after = reports.get_timeout(PROMPT).unwrap();
                assert_eq!(
                    after,
                    Report::After {
                        alive: false,
                        joined: true,
                        ppid: std::process::id(),
                    },
                    "{method}"
                );
                let status = multiproc::process::wait_pid(pid).unwrap();
                assert_eq!(status.code(), Some(0), "{method}: {status}");
            }
        }
    }
    leaks.assert_clean();
}

fn method_of_child(_: ()) -> Option<StartMethod> {
    multiproc::current_process().start_method
}

/// CPython's `test_context`: a context's processes, pools and executors use its
/// method, and it refuses another.
#[test]
fn context_fixes_the_start_method() {
    let leaks = LeakCheck::start();
    multiproc::process::set_fork_warning(false);
    for method in StartMethod::ALL {
        let ctx = get_context(method);
        assert_eq!(ctx.start_method(), method);
        assert!(matches!(
            ctx.set_start_method(StartMethod::Spawn),
            Err(StartError::Unsupported(_))
        ));
        let mut p = ctx.process().start(method_of_child, ()).unwrap();
        assert_eq!(p.start_method(), method);
        assert_eq!(p.join().unwrap(), Some(method));
        let other = StartMethod::ALL.into_iter().find(|m| *m != method).unwrap();
        assert!(matches!(
            ctx.process().start_method(other).start(method_of_child, ()),
            Err(StartError::Unsupported(_))
        ));

        let pool = ctx.pool().processes(1).build().unwrap();
        assert_eq!(pool.apply(method_of_child, ()).unwrap(), Some(method));
        pool.close();
        pool.join().unwrap();

        let q = ctx.queue::<u32>().unwrap();
        q.put(3).unwrap();
        assert_eq!(q.get().unwrap(), 3);
        let (a, b) = ctx.pipe::<u32>().unwrap();
        a.send(&4).unwrap();
        assert_eq!(b.recv().unwrap(), 4);
        let lock = ctx.lock().unwrap();
        drop(lock.lock().unwrap());
    }
    leaks.assert_clean();
}
