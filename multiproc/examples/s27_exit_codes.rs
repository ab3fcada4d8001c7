//! S27: exit codes (0 ok, >0 error, -signal), zombies, and why none is ever left behind.
//!
//! Seed 004: a child that ends leaves its exit information in the kernel (0 if all went
//! well, > 0 on an error) until its parent `wait`s for it; until then it is a *zombie*.
//! Seed 003: every process passes through the zombie state; an *orphan* (a child whose
//! parent died) is adopted and reaped by the system. multiproc reaps in `join`/`wait`,
//! and a reaper thread takes over a handle dropped while its child runs, so no zombie
//! stays; and its children never become orphans: they die with their parent (S28).

use std::time::{Duration, Instant};

use multiproc::{Process, ProcessError};

fn succeeds(_: ()) -> u32 {
    42
}

/// Python's `sys.exit(n)`: ends the child with code `n`, returning nothing.
fn exits_with(code: i32) -> u32 {
    std::process::exit(code)
}

fn sleeps(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The state letter (`R`, `S`, `Z`, …) and parent pid of `pid`, from `/proc/<pid>/stat`;
/// `None` once the process is gone (reaped).
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is an unreaped child (zombie) of this process. (A pid reused by some
/// unrelated process does not count.)
fn is_our_zombie(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(state, ppid)| state == 'Z' && ppid == std::process::id())
}

fn describe(pid: u32) -> String {
    match proc_state(pid) {
        Some(('Z', _)) => "Z (zombie: ended, exit status not yet collected)".into(),
        Some((state, _)) => format!("{state}"),
        None => "gone from /proc (reaped)".into(),
    }
}

/// Runs the scenario.
pub fn run() {
    // Exit codes.
    let mut ok = Process::start(succeeds, ()).expect("start");
    assert_eq!(ok.join().expect("returns"), 42);
    let status = ok.exit_status().expect("joined");
    println!(
        "returned normally:      {status}, exitcode {}",
        status.exitcode()
    );
    assert_eq!(status.code(), Some(0));

    let mut failed = Process::start(exits_with, 3).expect("start");
    let err = failed.join().expect_err("exit(3) returns nothing");
    let status = failed.exit_status().expect("joined");
    println!(
        "std::process::exit(3):  {status}, exitcode {} ({err})",
        status.exitcode()
    );
    assert!(matches!(err, ProcessError::Exited { status, .. } if status.code() == Some(3)));

    let mut killed = Process::start(sleeps, 60_000).expect("start");
    killed.kill().expect("SIGKILL");
    let status = killed.wait().expect("wait");
    println!(
        "killed:                 {status}, exitcode {}",
        status.exitcode()
    );
    assert_eq!(status.exitcode(), -9);
    assert_eq!(status.code(), None);

    // A zombie: ended, not yet waited for.
    let mut child = Process::start(succeeds, ()).expect("start");
    let pid = child.pid();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.is_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("child {pid} ended, before join: state {}", describe(pid));
    assert!(is_our_zombie(pid), "an ended, unreaped child is a zombie");
    assert_eq!(child.join().expect("returns"), 42);
    println!("child {pid} after join:         state {}", describe(pid));
    assert!(!is_our_zombie(pid), "join reaps");

    // A handle dropped while its child runs: a reaper thread waits for the child.
    let child = Process::start(sleeps, 100).expect("start");
    let pid = child.pid();
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_state(pid).is_some_and(|(_, ppid)| ppid == std::process::id())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "child {pid} whose handle was dropped, once ended: state {}",
        describe(pid)
    );
    assert!(
        !is_our_zombie(pid),
        "a dropped handle's child is reaped too"
    );
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
