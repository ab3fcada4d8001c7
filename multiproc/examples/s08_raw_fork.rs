//! S8: the raw `fork()` returns twice: the child's pid in the parent, `Child` in the child.
//!
//! Seed 001: `pid = os.fork()`; `0` means "I am the child", which then asks `getppid()`
//! for its parent; the parent keeps the child's pid. `multiproc::sys::fork` is that
//! primitive, `unsafe` because only the calling thread is copied into the child (see
//! its `# Safety`). `Process` with `StartMethod::Fork` is the safe way to run code in a
//! forked child; this example shows the primitive the seed shows.

use std::io::Write;

use multiproc::sys::{Fork, fork};

/// Threads of this process, from `/proc/self/status`.
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(usize::MAX)
}

/// Forks, prints from both sides, reaps the child. Returns the child's pid.
///
/// Must be called from a single-threaded process.
#[allow(unsafe_code)] // the one `unsafe` call of the examples: S8 is about the raw primitive
fn fork_demo(_: ()) -> u32 {
    let me = std::process::id();
    println!("process ({me})");
    // SAFETY: the caller guarantees this process is single-threaded (checked by
    // `run`, or a fresh child started by multiproc), so no lock can be held by a thread
    // that does not exist in the child. The child ends with `exit_now` and never
    // returns into the caller's code.
    match unsafe { fork() }.expect("fork") {
        Fork::Child => {
            let child = std::process::id();
            let info = multiproc::current_process();
            println!(
                "child process ({child}): fork returned Child; its parent is ({}) (getppid: {})",
                info.parent_pid,
                multiproc::parent_pid()
            );
            let ok = child != me
                && info.parent_pid == me
                && multiproc::parent_pid() == me
                && info.pid == child;
            // A panic here would unwind into the parent's code running in the child:
            // report through the exit code instead, after flushing what we printed.
            let _ = std::io::stdout().flush();
            multiproc::process::exit_now(if ok { 0 } else { 1 })
        }
        Fork::Parent(pid) => {
            println!("parent process ({me}): fork returned Parent({pid}), the child's pid");
            let status = multiproc::process::wait_pid(pid).expect("reap the child");
            println!("parent process ({me}): child {pid} ended with {status}");
            assert!(status.success(), "the child saw this process as its parent");
            assert_ne!(pid, me);
            pid
        }
    }
}

/// Runs the scenario.
pub fn run() {
    if thread_count() == 1 {
        fork_demo(());
    } else {
        // Other threads exist (inside the tour: multiproc's launcher thread and whatever
        // ran before), so forking here would break `fork`'s safety contract. A child
        // started by multiproc is single-threaded: fork from there instead.
        println!(
            "(this process has {} threads: forking from a fresh single-threaded child)",
            thread_count()
        );
        let mut child = multiproc::Process::start(fork_demo, ()).expect("start");
        child.join().expect("the fork demo succeeds");
    }
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
