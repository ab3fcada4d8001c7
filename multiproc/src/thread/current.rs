//! Who the calling thread is: Python's names and idents (S7 S13).

use std::cell::{Cell, OnceCell};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys;

/// The next ident to hand out; 0 means "not assigned yet" in [`IDENT`].
static NEXT_IDENT: AtomicU64 = AtomicU64::new(1);
/// Python's counter behind `Thread-N` names (shared by every unnamed thread).
static NEXT_NUMBER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    // No destructor, so it is usable until the thread's very end.
    static IDENT: Cell<u64> = const { Cell::new(0) };
    static NAME: OnceCell<Arc<str>> = const { OnceCell::new() };
}

pub(super) fn new_ident() -> u64 {
    NEXT_IDENT.fetch_add(1, Ordering::Relaxed)
}

pub(super) fn next_thread_name() -> String {
    format!("Thread-{}", NEXT_NUMBER.fetch_add(1, Ordering::Relaxed))
}

/// Gives the calling thread the name and ident its [`Thread`](super::Thread) handle
/// already reports; runs first thing in a thread started by multiproc.
pub(super) fn adopt(ident: u64, name: Arc<str>) {
    IDENT.with(|id| id.set(ident));
    // A fresh thread has no name cached yet, so this cannot fail; if it could, the
    // name std was given is the same one.
    let _ = NAME.try_with(|n| n.set(name));
}

/// The name of a thread not started by multiproc, decided on first use.
fn detect_name() -> Arc<str> {
    if is_main_thread() {
        return "MainThread".into();
    }
    match std::thread::current().name() {
        Some(name) => name.into(),
        None => next_thread_name().into(),
    }
}

fn current_name() -> Arc<str> {
    NAME.try_with(|n| Arc::clone(n.get_or_init(detect_name)))
        .unwrap_or_else(|_| detect_name())
}

/// Python's `threading.get_ident()`: a nonzero number identifying the calling thread.
///
/// Unique among the threads of this process for its whole life (never reused, unlike
/// Python's); a forked child's thread keeps the ident it had in the parent, as
/// `pthread_self()` does. It is the same number [`Thread::ident`](super::Thread::ident)
/// reports to the thread's starter.
///
/// ```
/// use multiproc::thread::{Thread, get_ident};
///
/// let main = get_ident();
/// let child = Thread::start(get_ident).unwrap().join().unwrap();
/// assert_ne!(main, child);
/// assert_eq!(main, get_ident());
/// ```
pub fn get_ident() -> u64 {
    IDENT.with(|id| {
        if id.get() == 0 {
            id.set(new_ident());
        }
        id.get()
    })
}

/// Python's `threading.get_native_id()`: the kernel's id of the calling thread (`gettid`).
///
/// ```
/// let tid = multiproc::thread::get_native_id();
/// assert!(tid > 0);
/// ```
pub fn get_native_id() -> u32 {
    sys::proc::gettid()
}

/// Whether the calling thread is the process's main thread (Python's
/// `current_thread() is main_thread()`), asked of the kernel: its thread id is the pid.
///
/// Tests under `cargo test` run on other threads, so this is `false` there.
///
/// ```
/// use multiproc::thread::{Thread, is_main_thread};
///
/// assert!(!Thread::start(is_main_thread).unwrap().join().unwrap());
/// ```
pub fn is_main_thread() -> bool {
    sys::proc::gettid() == sys::proc::getpid()
}

/// Python's `threading.current_thread()`: the calling thread's name and ids.
///
/// The name is Python's: `MainThread` for the process's main thread (whatever std calls
/// it), the name a thread was started with, and `Thread-N` for a thread started without
/// one (decided once, so it stays the same for the thread's life).
///
/// ```
/// use multiproc::thread::{Thread, current_thread};
///
/// let name = Thread::builder()
///     .name("LoopThread")
///     .start(|| current_thread().name().to_owned())
///     .unwrap()
///     .join()
///     .unwrap();
/// assert_eq!(name, "LoopThread");
/// ```
pub fn current_thread() -> ThreadInfo {
    ThreadInfo {
        name: current_name(),
        ident: get_ident(),
        native_id: get_native_id(),
    }
}

/// A thread's identity, as returned by [`current_thread`].
///
/// Displays as its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadInfo {
    name: Arc<str>,
    ident: u64,
    native_id: u32,
}

impl ThreadInfo {
    /// Python's `Thread.name`: `MainThread`, the given name, or `Thread-N`.
    ///
    /// ```
    /// # use multiproc::thread::current_thread;
    /// assert!(!current_thread().name().is_empty());
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Python's `Thread.ident`: the same number as [`get_ident`] in that thread.
    ///
    /// ```
    /// # use multiproc::thread::{current_thread, get_ident};
    /// assert_eq!(current_thread().ident(), get_ident());
    /// ```
    pub fn ident(&self) -> u64 {
        self.ident
    }

    /// Python's `Thread.native_id`: the kernel's thread id (`gettid`).
    ///
    /// ```
    /// # use multiproc::thread::{current_thread, get_native_id};
    /// assert_eq!(current_thread().native_id(), get_native_id());
    /// ```
    pub fn native_id(&self) -> u32 {
        self.native_id
    }

    /// Whether this is the main thread of the calling process.
    ///
    /// ```
    /// # use multiproc::thread::{current_thread, is_main_thread};
    /// assert_eq!(current_thread().is_main(), is_main_thread());
    /// ```
    pub fn is_main(&self) -> bool {
        self.native_id == sys::proc::getpid()
    }
}

impl fmt::Display for ThreadInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}
