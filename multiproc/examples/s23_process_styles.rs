//! S23: two ways to define a process: a function target, and a type implementing `Run`.
//!
//! Seed 003: `Process(target=task, args=('task进程',))`, and a `MyProcess(Process)`
//! subclass overriding `run()`. Python's subclass is a `Run` implementation here: the
//! value (its fields are the subclass's attributes) is sent to the child, which calls
//! `run(self)`; what `run` returns comes back through `join`. The seed's sleeps (3 s and
//! 1 s) are shortened.

use std::time::Duration;

use multiproc::{Process, Run};
use serde::{Deserialize, Serialize};

/// Style 1: a function.
fn task(name: String) -> String {
    println!("{name} is running");
    std::thread::sleep(Duration::from_millis(300));
    println!("{name} is over");
    format!("{name} done")
}

/// Style 2: Python's `class MyProcess(Process)` with `def run(self)`.
#[derive(Serialize, Deserialize)]
struct MyProcess {
    label: String,
}

impl Run for MyProcess {
    type Output = u32;

    fn run(self) -> u32 {
        println!("{}: running", self.label);
        std::thread::sleep(Duration::from_millis(100));
        println!("{}: done", self.label);
        std::process::id()
    }
}

/// Runs the scenario.
pub fn run() {
    let mut p = Process::start(task, "task process".to_string()).expect("start");
    // start() returns at once: the parent goes on while the child runs.
    println!("main process");
    assert_eq!(p.join().expect("task returns"), "task process done");

    let mut p = Process::start_run(MyProcess {
        label: "MyProcess".into(),
    })
    .expect("start");
    println!("main process");
    let pid = p.join().expect("run returns");
    assert_eq!(pid, p.pid(), "run() ran in the child");
    assert_ne!(pid, std::process::id());

    // The builder takes both styles too.
    let mut named = Process::builder()
        .name("my-process")
        .start_run(MyProcess {
            label: "MyProcess named my-process".into(),
        })
        .expect("start");
    assert_eq!(named.name(), "my-process");
    named.join().expect("run returns");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
