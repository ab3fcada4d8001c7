//! S13: `current_thread().name()` is `MainThread` in the main thread and `LoopThread` in
//! the thread started with that name.
//!
//! Seed 001: `threading.Thread(target=loop, name='LoopThread')`, whose `loop` counts to 5
//! printing its thread's name.

use std::time::Duration;

use multiproc::thread::{Thread, current_thread};

fn loop_() {
    let name = current_thread().name().to_owned();
    println!("child thread {name} starts");
    for n in 1..=5 {
        println!("thread {} >>> {n}", current_thread().name());
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("child thread {name} ends");
    assert_eq!(name, "LoopThread", "a thread reports the name it was given");
}

/// Starts `LoopThread`, joins it, and prints the main thread's name around it.
pub fn run() {
    let main = current_thread();
    println!("main thread {main} starts");
    let t = Thread::builder()
        .name("LoopThread")
        .start(loop_)
        .expect("start a thread");
    t.join().expect("loop does not panic");
    println!("main thread {} ends", current_thread().name());
    assert!(main.is_main(), "run() is called from main()");
    assert_eq!(main.name(), "MainThread");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
