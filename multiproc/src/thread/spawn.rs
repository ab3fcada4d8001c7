//! `threading.Thread`: start a closure or a [`Run`] value, join its result (S7 S13 S20).

use std::any::Any;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::current;
use crate::codec::panic_message;
use crate::process::Run;

/// Configuration of a thread before it starts (Python's `Thread(...)` keyword
/// arguments).
///
/// ```
/// use multiproc::thread::{Thread, current_thread};
///
/// let t = Thread::builder()
///     .name("LoopThread")
///     .start(|| current_thread().name().to_owned())
///     .unwrap();
/// assert_eq!(t.name(), "LoopThread");
/// assert_eq!(t.join().unwrap(), "LoopThread");
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct ThreadBuilder {
    name: Option<String>,
    daemon: bool,
    stack_size: Option<usize>,
}

impl ThreadBuilder {
    /// A builder with Python's defaults: named `Thread-N`, not a daemon.
    pub fn new() -> ThreadBuilder {
        ThreadBuilder::default()
    }

    /// The thread's name, as [`current_thread`](super::current_thread) reports it inside
    /// the thread (and std's `thread::current().name()`, debuggers and panic messages).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Python's `daemon` flag, reported by [`Thread::is_daemon`]. It changes nothing:
    /// a Rust process ends when `main` returns whatever its threads are doing, so every
    /// thread behaves as a daemon. Join the threads whose work must finish.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// The stack size in bytes (`threading.stack_size()`, per thread); std's default
    /// otherwise.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Starts a thread running `target` (Python's `Thread(target=…).start()`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the name contains a NUL byte; the OS error if no thread could
    /// be created (Python's `RuntimeError: can't start new thread`).
    ///
    /// ```
    /// let t = multiproc::thread::Thread::builder().start(|| 6 * 7).unwrap();
    /// assert!(t.name().starts_with("Thread-"));
    /// assert_eq!(t.join().unwrap(), 42);
    /// ```
    pub fn start<F, T>(self, target: F) -> io::Result<Thread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let name: Arc<str> = self.name.unwrap_or_else(current::next_thread_name).into();
        if name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a thread name cannot contain a NUL byte",
            ));
        }
        let ident = current::new_ident();
        let finished = Arc::new(Finished::default());
        let mut std_builder = std::thread::Builder::new().name(name.to_string());
        if let Some(bytes) = self.stack_size {
            std_builder = std_builder.stack_size(bytes);
        }
        let inner = std_builder.spawn({
            let name = Arc::clone(&name);
            let finished = Arc::clone(&finished);
            move || {
                current::adopt(ident, name);
                // Dropped after `target` returns or unwinds.
                let _finished = SetOnDrop(finished);
                target()
            }
        })?;
        Ok(Thread {
            inner,
            name,
            ident,
            daemon: self.daemon,
            finished,
        })
    }

    /// Starts a thread running `obj.run()` (Python's `Thread` subclass overriding
    /// `run()`; S20).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// ```
    /// struct Countdown(u32);
    /// impl multiproc::Run for Countdown {
    ///     type Output = Vec<u32>;
    ///     fn run(self) -> Vec<u32> { (0..=self.0).rev().collect() }
    /// }
    ///
    /// let t = multiproc::thread::Thread::builder().name("countdown").start_run(Countdown(2));
    /// assert_eq!(t.unwrap().join().unwrap(), [2, 1, 0]);
    /// ```
    pub fn start_run<R>(self, obj: R) -> io::Result<Thread<R::Output>>
    where
        R: Run + Send + 'static,
        R::Output: Send + 'static,
    {
        self.start(move || obj.run())
    }
}

/// Whether the target has returned (or unwound), for [`Thread::is_alive`] and
/// [`Thread::wait_timeout`].
#[derive(Default)]
struct Finished {
    done: Mutex<bool>,
    changed: Condvar,
}

struct SetOnDrop(Arc<Finished>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        *self.0.done.lock() = true;
        self.0.changed.notify_all();
    }
}

/// A running thread (Python's started `threading.Thread`): its name, its ident, and the
/// value its target returns, through [`join`](Self::join).
///
/// Dropping the handle detaches the thread, as std's `JoinHandle` does.
///
/// ```
/// use multiproc::thread::{Thread, get_ident};
///
/// fn hello(name: &str) -> String {
///     format!("Hello {name} from thread {}", get_ident())
/// }
///
/// let t = Thread::start(|| hello("shiyanlou")).unwrap();
/// let ident = t.ident();
/// assert_eq!(t.join().unwrap(), format!("Hello shiyanlou from thread {ident}"));
/// ```
pub struct Thread<T> {
    inner: std::thread::JoinHandle<T>,
    name: Arc<str>,
    ident: u64,
    daemon: bool,
    finished: Arc<Finished>,
}

impl Thread<()> {
    /// A [`ThreadBuilder`], to give the thread a name or a stack size (Python's
    /// `Thread(name=…, daemon=…)`); its `start` decides the thread's result type.
    pub fn builder() -> ThreadBuilder {
        ThreadBuilder::new()
    }
}

impl<T> Thread<T> {
    /// Starts a thread named `Thread-N` running `target`; see [`ThreadBuilder::start`].
    ///
    /// # Errors
    ///
    /// The OS error if no thread could be created.
    ///
    /// ```
    /// let t = multiproc::thread::Thread::start(|| "done").unwrap();
    /// assert_eq!(t.join().unwrap(), "done");
    /// ```
    pub fn start<F>(target: F) -> io::Result<Thread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        ThreadBuilder::new().start(target)
    }

    /// Starts a thread named `Thread-N` running `obj.run()`; see
    /// [`ThreadBuilder::start_run`].
    ///
    /// # Errors
    ///
    /// The OS error if no thread could be created.
    ///
    /// ```
    /// struct Download { filename: String }
    /// impl multiproc::Run for Download {
    ///     type Output = String;
    ///     fn run(self) -> String { format!("{} downloaded", self.filename) }
    /// }
    ///
    /// let t = multiproc::thread::Thread::start_run(Download { filename: "a.pdf".into() });
    /// assert_eq!(t.unwrap().join().unwrap(), "a.pdf downloaded");
    /// ```
    pub fn start_run<R>(obj: R) -> io::Result<Thread<T>>
    where
        R: Run<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        ThreadBuilder::new().start_run(obj)
    }

    /// The thread's name (`Thread.name`): given to the builder, or `Thread-N`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The thread's ident (`Thread.ident`): what [`get_ident`](super::get_ident)
    /// returns inside it.
    pub fn ident(&self) -> u64 {
        self.ident
    }

    /// The flag given to [`ThreadBuilder::daemon`] (`Thread.daemon`).
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Whether the target is still running (`Thread.is_alive()`).
    ///
    /// ```
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let t = multiproc::thread::Thread::start(move || rx.recv()).unwrap();
    /// assert!(t.is_alive());
    /// drop(tx);
    /// assert!(t.join().unwrap().is_err());
    /// ```
    pub fn is_alive(&self) -> bool {
        !*self.finished.done.lock()
    }

    /// Waits at most `timeout` for the target to finish (Python's `join(timeout)`);
    /// `true` if it has, after which [`join`](Self::join) does not block.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let t = multiproc::thread::Thread::start(move || rx.recv()).unwrap();
    /// assert!(!t.wait_timeout(Duration::from_millis(10)));
    /// drop(tx);
    /// assert!(t.wait_timeout(Duration::from_secs(60)));
    /// assert!(!t.is_alive());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let mut done = self.finished.done.lock();
        if !*done {
            self.finished
                .changed
                .wait_while_for(&mut done, |done| !*done, timeout);
        }
        *done
    }

    /// Waits for the thread and returns what its target returned (Python's `join()`,
    /// which returns nothing).
    ///
    /// # Errors
    ///
    /// [`ThreadPanic`] with the panic's message if the target panicked.
    ///
    /// ```
    /// let t = multiproc::thread::Thread::start(|| -> u32 { panic!("boom") }).unwrap();
    /// let err = t.join().unwrap_err();
    /// assert_eq!(err.message(), "boom");
    /// ```
    pub fn join(self) -> Result<T, ThreadPanic> {
        let Thread {
            inner, name, ident, ..
        } = self;
        inner.join().map_err(|payload| ThreadPanic {
            message: panic_message(payload.as_ref()),
            name,
            ident,
            payload: Mutex::new(payload),
        })
    }

    /// std's handle on the thread, e.g. to `unpark` it.
    pub fn thread(&self) -> &std::thread::Thread {
        self.inner.thread()
    }
}

impl<T> fmt::Debug for Thread<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Thread")
            .field("name", &self.name)
            .field("ident", &self.ident)
            .field("daemon", &self.daemon)
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// A thread's target panicked; returned by [`Thread::join`] (like tokio's `JoinError`).
///
/// Carries the panic's message and its payload, which
/// [`into_panic`](Self::into_panic) gives back for `std::panic::resume_unwind`.
#[derive(thiserror::Error)]
#[error("thread '{name}' panicked: {message}")]
pub struct ThreadPanic {
    name: Arc<str>,
    ident: u64,
    message: String,
    // In a mutex only to make the error `Sync`; nothing locks it but `into_panic`.
    payload: Mutex<Box<dyn Any + Send + 'static>>,
}

impl ThreadPanic {
    /// The panic's message (`"panic with a non-string payload"` if it was not a string).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The name of the thread that panicked.
    pub fn thread_name(&self) -> &str {
        &self.name
    }

    /// The ident of the thread that panicked.
    pub fn thread_ident(&self) -> u64 {
        self.ident
    }

    /// The panic's payload, to re-raise it with `std::panic::resume_unwind`.
    ///
    /// ```
    /// let t = multiproc::thread::Thread::start(|| panic!("boom")).unwrap();
    /// let payload = t.join().unwrap_err().into_panic();
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    /// ```
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.payload.into_inner()
    }
}

impl fmt::Debug for ThreadPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPanic")
            .field("thread", &self.name)
            .field("ident", &self.ident)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}
