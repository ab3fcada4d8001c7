//! S7: a thread runs a target; `get_ident()` differs between the main thread and the child.
//!
//! Seed 000: `threading.Thread(target=hello, args=('shiyanlou',))`, with
//! `threading.get_ident()` printed in the main thread before and after, and in the child.

use multiproc::thread::{Thread, get_ident};

fn hello(name: &str) -> u64 {
    let ident = get_ident();
    println!("in the child thread, thread id: {ident}");
    println!("Hello {name}");
    ident
}

/// Prints the main thread's ident, runs `hello` in a thread, and checks the idents differ.
pub fn run() {
    let main_ident = get_ident();
    println!("in the main thread, thread id: {main_ident}");
    println!("----------------------------");
    let t = Thread::start(|| hello("shiyanlou")).expect("start a thread");
    let child_ident = t.join().expect("hello does not panic");
    println!("----------------------------");
    println!("in the main thread, thread id: {}", get_ident());
    assert_ne!(child_ident, main_ident, "each thread has its own ident");
    assert_eq!(get_ident(), main_ident, "a thread's ident does not change");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
