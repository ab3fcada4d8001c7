//! S15: `threading.local()`: threads `Thread-A` and `Thread-D` each bind their own
//! student's name; no thread sees another's value.
//!
//! Seed 001: `local_school = threading.local()`; `process_thread(name)` sets
//! `local_school.name` and `process_student()` prints it with the thread's name.
//! Shown twice: with [`multiproc::thread::Local`] (an object made at run time, like
//! Python's) and with std's `thread_local!` (a static declared at compile time).

use std::cell::RefCell;

use multiproc::thread::{Local, Thread, current_thread};

/// Python's global `local_school = threading.local()`.
static LOCAL_SCHOOL: Local<String> = Local::new();

thread_local! {
    /// The same, declared with std's macro.
    static STUDENT: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn process_student() -> String {
    // The student bound to this thread.
    let std = LOCAL_SCHOOL.get().expect("bound by process_thread");
    println!("Hello, {std} (in {})", current_thread().name());
    let same = STUDENT
        .with_borrow(|s| s.clone())
        .expect("bound by process_thread");
    println!(
        "Hello again, {same} (from std's thread_local! in {})",
        current_thread().name()
    );
    assert_eq!(std, same);
    std
}

fn process_thread(name: &str) -> String {
    // Bind this thread's student.
    LOCAL_SCHOOL.set(name.to_string());
    STUDENT.set(Some(name.to_string()));
    process_student()
}

/// Runs `process_thread` in `Thread-A` and `Thread-D` and checks each saw its own name.
pub fn run() {
    let t1 = Thread::builder()
        .name("Thread-A")
        .start(|| process_thread("ABC"))
        .expect("start a thread");
    let t2 = Thread::builder()
        .name("Thread-D")
        .start(|| process_thread("DEF"))
        .expect("start a thread");
    assert_eq!(t1.join().expect("no panic"), "ABC");
    assert_eq!(t2.join().expect("no panic"), "DEF");
    // The main thread bound nothing, so it sees nothing.
    assert_eq!(LOCAL_SCHOOL.get(), None);
    assert_eq!(STUDENT.with_borrow(|s| s.clone()), None);
    println!("{}: no student bound here", current_thread().name());
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
