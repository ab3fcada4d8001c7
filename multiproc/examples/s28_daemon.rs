//! S28: a daemon child ends when its parent ends; `join` still waits for it if called.
//!
//! Seed 003: `p.daemon = True; p.start()`, then the main process ends at once, and the
//! daemon ends with it (its "子进程GG" is never printed). Seed 004: the same with a
//! 2-second child and a 1-second parent; and with `p.join()` the parent waits for the
//! daemon to finish after all.
//!
//! To watch a process end without ending this one, the "main process" of the seed is
//! played by an intermediate (non-daemon) child, which starts a daemon grandchild and
//! returns its pid as its result. multiproc goes further than Python: a child also
//! dies when its parent is killed (`SIGKILL` runs no exit handler), because every child
//! gets a parent-death signal.

use std::time::{Duration, Instant};

use multiproc::Process;

fn task(ms: u64) -> String {
    println!(
        "child process start ({})",
        multiproc::current_process().name
    );
    std::thread::sleep(Duration::from_millis(ms));
    println!("child process end");
    "finished".to_string()
}

/// The seed's main process: starts a daemon, does a little work, ends without joining.
fn main_process(_: ()) -> u32 {
    let daemon = Process::builder()
        .daemon(true)
        .start(task, 30_000)
        .expect("start the daemon");
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "main process end (its daemon child {} is still running)",
        daemon.pid()
    );
    daemon.pid()
    // Returning ends this process: multiproc terminates its daemon children first.
}

/// Starts a daemon and a non-daemon child, publishes their pids in `path`, and waits
/// to be killed.
fn killed_parent(path: String) {
    let daemon = Process::builder()
        .daemon(true)
        .start(task, 30_000)
        .expect("start");
    let plain = Process::start(task, 30_000).expect("start");
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, format!("{} {}", daemon.pid(), plain.pid())).expect("write the pids");
    std::fs::rename(&tmp, &path).expect("publish the pids");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether `pid` is a running (not ended) process, from `/proc/<pid>/stat`.
fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

/// Waits up to `limit` for `pid` to stop running.
fn ends_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while is_running(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Runs the scenario.
pub fn run() {
    println!("-- a daemon child, joined: the parent waits for it");
    let mut p = Process::builder()
        .daemon(true)
        .start(task, 300)
        .expect("start");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(p.join().expect("the daemon finishes"), "finished");
    println!("parent process end");

    println!("-- a daemon child, not joined: it ends when its parent ends");
    let mut parent = Process::start(main_process, ()).expect("start");
    let daemon = parent
        .join()
        .expect("the main process returns its daemon's pid");
    let gone = ends_within(daemon, Duration::from_secs(5));
    println!(
        "daemon {daemon} after its parent ended: {}",
        if gone { "gone" } else { "STILL RUNNING" }
    );
    assert!(gone, "a daemon does not outlive its parent");

    println!("-- the parent is SIGKILLed: its children die too, daemon or not");
    let path = std::env::temp_dir().join(format!("multiproc-s28-{}", std::process::id()));
    let path = path.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&path);
    let mut parent = Process::start(killed_parent, path.clone()).expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids: Vec<u32> = loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            break text
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the intermediate never published its children"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = std::fs::remove_file(&path);
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&pid| is_running(pid)));
    parent.kill().expect("SIGKILL the parent");
    let status = parent.wait().expect("reap it");
    println!("parent {} ended by {status}", parent.pid());
    for (pid, kind) in pids.iter().zip(["daemon", "non-daemon"]) {
        let gone = ends_within(*pid, Duration::from_secs(5));
        println!(
            "its {kind} child {pid}: {}",
            if gone { "gone" } else { "STILL RUNNING" }
        );
        assert!(gone, "a child does not outlive its killed parent");
    }
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
