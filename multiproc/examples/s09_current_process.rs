//! S9: `current_process()` (name, pid, parent pid) inside the parent and inside a child.
//!
//! Seed 003 prints `current_process().pid`, `os.getpid()` and `os.getppid()` in both;
//! seed 001/004's `get_process(info)` prints the pid and the parent pid "In main:" and
//! "In func:".

use multiproc::{Process, StartMethod, current_process, parent_pid};
use serde::{Deserialize, Serialize};

/// The part of `ProcessInfo` the child sends back (`ProcessInfo` itself is not
/// serialisable).
#[derive(Debug, Serialize, Deserialize)]
struct Me {
    name: String,
    pid: u32,
    parent_pid: u32,
    start_method: Option<StartMethod>,
}

/// Prints what a process knows about itself and returns it.
fn get_process(label: &str) -> Me {
    let info = current_process();
    let me = Me {
        name: info.name,
        pid: info.pid,
        parent_pid: info.parent_pid,
        start_method: info.start_method,
    };
    println!("{label}");
    println!("  name: {}", me.name);
    println!("  current_process().pid: {}", me.pid);
    println!("  std::process::id(): {}", std::process::id());
    println!(
        "  parent pid: {} (parent_pid(): {})",
        me.parent_pid,
        parent_pid()
    );
    me
}

fn task(name: String) -> Me {
    let me = get_process("In func:");
    println!("Hello, {name}");
    me
}

/// Runs the scenario.
pub fn run() {
    let main = get_process("In main:");
    assert_eq!(main.name, "MainProcess");
    assert_eq!(main.pid, std::process::id());
    assert_eq!(main.parent_pid, parent_pid());
    assert_eq!(
        main.start_method, None,
        "the main process was not started by multiproc"
    );

    let mut p = Process::start(task, "marsloo".to_string()).expect("start");
    let child = p.join().expect("the child reports itself");
    assert_eq!(child.pid, p.pid());
    assert_ne!(child.pid, main.pid);
    assert_eq!(
        child.parent_pid, main.pid,
        "the child's parent is this process"
    );
    assert_eq!(child.name, p.name());
    assert!(
        child.name.starts_with("Process-"),
        "default name {}",
        child.name
    );
    assert_eq!(child.start_method, Some(multiproc::get_start_method()));
    println!("the child was started by {}", multiproc::get_start_method());
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
