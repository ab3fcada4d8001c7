//! The leak check itself (issue 19, item 3): each kind of leak, made on purpose, is
//! reported (an unreaped child, also a `Popen` one, which the check must not reap; a
//! live child; a descriptor; a thread of multiproc's; a shared-memory mapping; a
//! `/dev/shm` entry), and then cleaned up so that this binary leaves nothing behind; a
//! clean scope passes without waiting for a fixed settle.

use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

use multiproc::executor::ThreadPoolExecutor;
use multiproc::process::{Process, StartMethod, exit_now, wait_pid};
use multiproc::subprocess::Popen;
use multiproc::sys::{Fork, fork};
use multiproc::testing::{LeakCheck, Leaks, SETTLE};

mod common;
use common::wait_until;

multiproc::test_support!();

/// The state letter of process `pid` (`'Z'`: exited, unreaped), if it exists.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

fn sleep_forever(_: ()) {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// `check.leaks()`, and whether it came back before the settle bound ran out (a leak
/// nothing can clean up any more must be reported without waiting for it).
fn leaks_at_once(check: &mut LeakCheck) -> Leaks {
    let started = Instant::now();
    let leaks = check.leaks();
    assert!(
        started.elapsed() < SETTLE,
        "a certain leak waited for the settle bound: {leaks}"
    );
    leaks
}

#[test]
fn an_unreaped_raw_fork_child_is_reported_and_left_unreaped() {
    let mut check = LeakCheck::start();
    // SAFETY: the child only calls `_exit`.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() }.unwrap();
    let pid = match forked {
        Fork::Child => exit_now(7),
        Fork::Parent(pid) => pid,
    };
    wait_until("the child to exit", || state(pid) == Some('Z'));

    let leaks = leaks_at_once(&mut check);
    assert_eq!(leaks.children, vec![(pid, 'Z')], "{leaks}");
    assert!(leaks.to_string().contains(&format!("unreaped child {pid}")));
    // The check did not reap it: its status is still there to collect.
    assert_eq!(state(pid), Some('Z'));
    assert_eq!(wait_pid(pid).unwrap().code(), Some(7));

    drop(check);
    LeakCheck::start().assert_clean();
}

#[test]
fn an_unwaited_popen_child_is_reported_and_left_to_its_handle() {
    let mut check = LeakCheck::start();
    let mut p = Popen::builder(["true"]).spawn().unwrap();
    let pid = p.pid();
    wait_until("the child to exit", || state(pid) == Some('Z'));

    let leaks = leaks_at_once(&mut check);
    assert_eq!(leaks.children, vec![(pid, 'Z')], "{leaks}");
    // Its pidfd is left too.
    assert!(
        leaks.fds.iter().any(|(_, to)| to.contains("pidfd")),
        "{leaks}"
    );
    // The check did not reap it: the handle still gets the status.
    assert_eq!(p.wait().unwrap().code(), Some(0));
    drop(p);

    drop(check);
    LeakCheck::start().assert_clean();
}

#[test]
fn a_live_child_whose_handle_is_kept_is_reported() {
    for method in StartMethod::ALL {
        let mut check = LeakCheck::start();
        multiproc::process::set_fork_warning(false);
        let mut p = Process::builder()
            .start_method(method)
            .start(sleep_forever, ())
            .unwrap();
        let pid = p.pid();

        let leaks = leaks_at_once(&mut check);
        assert_eq!(leaks.children.len(), 1, "{method}: {leaks}");
        let (leaked, state) = leaks.children[0];
        assert_eq!(leaked, pid, "{method}: {leaks}");
        assert_ne!(state, 'Z', "{method}: {leaks}");
        assert!(leaks.to_string().contains(&format!("live child {pid}")));

        p.kill().unwrap();
        assert!(p.join().is_err());
        drop(p);
        drop(check);
        LeakCheck::start().assert_clean();
    }
}

#[test]
fn a_descriptor_left_open_is_reported() {
    let mut check = LeakCheck::start();
    let file = std::fs::File::open("/dev/null").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);

    let leaks = leaks_at_once(&mut check);
    assert_eq!(leaks.fds, vec![(fd, "/dev/null".to_string())], "{leaks}");
    assert!(
        leaks.children.is_empty() && leaks.threads.is_empty(),
        "{leaks}"
    );

    drop(file);
    drop(check);
    LeakCheck::start().assert_clean();
}

#[test]
fn assert_clean_panics_naming_the_leak() {
    let check = LeakCheck::start();
    let file = std::fs::File::open("/dev/null").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);

    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check.assert_clean()))
        .expect_err("assert_clean passed with a descriptor left open");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains(&format!("fd {fd} -> /dev/null")),
        "{message}"
    );

    drop(file);
    LeakCheck::start().assert_clean();
}

#[test]
fn a_thread_of_multiproc_left_running_is_reported() {
    let mut check = LeakCheck::start();
    // Never shut down (as if forgotten) until the check has looked.
    let executor = ManuallyDrop::new(ThreadPoolExecutor::new(2));
    assert_eq!(executor.submit(|| 6 * 7).unwrap().result().unwrap(), 42);

    let leaks = check.leaks();
    // Threads start on demand: one task, one thread.
    assert_eq!(leaks.threads.len(), 1, "{leaks}");
    for (_, name) in &leaks.threads {
        assert!(name.starts_with("ThreadPoolExec"), "{leaks}");
    }
    assert!(leaks.children.is_empty() && leaks.fds.is_empty(), "{leaks}");

    drop(ManuallyDrop::into_inner(executor)); // shuts down and joins the workers
    drop(check);
    LeakCheck::start().assert_clean();
}

#[test]
fn a_shared_memory_mapping_left_is_reported() {
    let mut check = LeakCheck::start();
    let value = ManuallyDrop::new(multiproc::shared::Value::new(5u64).unwrap());

    let leaks = leaks_at_once(&mut check);
    assert_eq!(leaks.mappings.len(), 1, "{leaks}");
    assert!(leaks.mappings[0].contains("/memfd:multiproc"), "{leaks}");
    assert_eq!(leaks.fds.len(), 1, "{leaks}");
    assert!(leaks.fds[0].1.contains("memfd:multiproc"), "{leaks}");

    drop(ManuallyDrop::into_inner(value));
    drop(check);
    LeakCheck::start().assert_clean();
}

#[test]
fn a_dev_shm_entry_left_is_reported() {
    let mut check = LeakCheck::start();
    let name = format!("multiproc-leak-check-{}", std::process::id());
    let path = std::path::Path::new("/dev/shm").join(&name);
    std::fs::write(&path, b"left behind").unwrap();

    let leaks = leaks_at_once(&mut check);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(leaks.shm, vec![name], "{leaks}");

    drop(check);
    LeakCheck::start().assert_clean();
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_clean_scope_passes_without_a_fixed_settle() {
    let check = LeakCheck::start();
    let started = Instant::now();
    let mut p = Process::start(nap, 0).unwrap();
    assert_eq!(p.join().unwrap(), 0);
    drop(p);
    // A handle dropped while its child still runs: its reaper is still finishing when
    // the check looks, and the check waits for it (not for a fixed time).
    drop(Process::start(nap, 100).unwrap());
    let popen = Popen::builder(["sleep", "0.1"]).spawn().unwrap();
    drop(popen);
    check.assert_clean();
    assert!(
        started.elapsed() < SETTLE,
        "a clean scope waited for the bound"
    );
}

/// Forks a grandchild that exits at once, and returns without waiting for it: when this
/// child ends, the zombie grandchild is adopted by the test process (the subreaper).
fn leave_an_exited_grandchild(_: ()) -> u32 {
    // SAFETY: the grandchild only calls `_exit`.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() }.unwrap();
    match forked {
        Fork::Child => exit_now(0),
        Fork::Parent(pid) => pid,
    }
}

#[test]
fn an_exited_orphan_adopted_through_the_subreaper_is_reaped_not_reported() {
    let mut check = LeakCheck::start();
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(leave_an_exited_grandchild, ())
        .unwrap();
    let grandchild = p.join().unwrap();
    drop(p);

    let leaks = check.leaks();
    assert!(leaks.is_empty(), "{leaks}");
    // Reaped by the check: nothing would, otherwise.
    assert_eq!(state(grandchild), None);
}
