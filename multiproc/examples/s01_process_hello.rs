//! S1: start a child with an argument, join it; parent and child print their pids.
//!
//! Seed 000 (`Process(target=hello, args=('shiyanlou',))`) and seed 001 (`run_child`).
//! Python passes `args` as a tuple; here the target takes one serialisable argument
//! (a tuple when there are several) and may return a value, which `join` hands back.

use multiproc::Process;

/// The child's body: prints its pid and a greeting, and reports who it is.
fn hello(name: String) -> (u32, u32) {
    println!("child process: {}", std::process::id());
    println!("Hello {name}");
    (std::process::id(), multiproc::parent_pid())
}

/// Runs the scenario.
pub fn run() {
    let parent = std::process::id();
    println!("parent process: {parent}");
    println!("child process start");
    let mut child = Process::start(hello, "shiyanlou".to_string()).expect("start the child");
    let (child_pid, childs_parent) = child.join().expect("the child returns its pids");
    // join returned: the child's two lines are already printed above.
    println!("child process stop");
    println!("parent process: {}", std::process::id());

    assert_ne!(child_pid, parent, "the child is another process");
    assert_eq!(child_pid, child.pid(), "the handle knows the child's pid");
    assert_eq!(childs_parent, parent, "the child's parent is this process");
    assert!(child.exit_status().is_some_and(|s| s.success()));
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
