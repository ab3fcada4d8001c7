//! [`Future`]: the handle `submit` returns (Python's `concurrent.futures.Future`), with
//! its errors: a task's fate ([`TaskError`]) and what a wait met ([`WaitError`]).
//!
//! It lives below both [`pool`](crate::pool) and [`executor`](crate::executor), which
//! re-export it: the futures of both are one type.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The fate of a task that did not deliver a value (tokio's `JoinError`): it panicked,
/// its worker died, it ran over its time limit, it was cancelled or terminated, its
/// pool broke, or its arguments or result could not cross between processes.
///
/// What a *wait* for the value met is [`WaitError`], which holds a `TaskError` when the
/// task failed; a `TaskError` alone is what an iterator of results yields, and what
/// [`Future::exception`] returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the panic message and where it happened (Python: the task's
    /// exception and its `remote_traceback`).
    #[error("the task panicked: {message}")]
    Panicked {
        /// The panic payload, if it was a string.
        message: String,
        /// The worker's traceback, captured in the panicking thread while it panicked:
        /// `Panic: message`, the panic's `file:line:col`, the process and thread, and
        /// the stack backtrace (function names and `file:line`). `None` when
        /// `RUST_BACKTRACE` / `RUST_LIB_BACKTRACE` leave capture off, by std's rules
        /// (see [`TaskError::traceback`]).
        traceback: Option<String>,
    },
    /// The task was cancelled before it started (or, by
    /// [`Future::cancel_running`], while it ran in a process).
    #[error("the task was cancelled")]
    Cancelled,
    /// The worker process running the task died (killed, aborted, segfaulted, out of
    /// memory, or exited): only this task fails; the pool replaces the worker (pebble's
    /// `ProcessExpired`, billiard's `WorkerLostError`).
    #[error("the worker process {pid} running the task died: {status}")]
    WorkerDied {
        /// The dead worker's pid.
        pid: u32,
        /// How it ended.
        status: crate::process::ExitStatus,
    },
    /// The task ran longer than its time limit; its worker was killed and replaced
    /// (a fate of the task, not of a wait: a wait that runs out is
    /// [`WaitError::Timeout`]).
    #[error("the task ran over its time limit of {limit:?} and was stopped")]
    TimedOut {
        /// The limit it ran over.
        limit: Duration,
    },
    /// The task was delivered `attempts` times across a cluster and the worker running
    /// it died each time (Dask's `KilledWorker`): it is not tried again.
    #[error("the task's worker died on each of its {attempts} attempts")]
    KilledWorker {
        /// How many times it was tried.
        attempts: u32,
    },
    /// The pool was terminated (or dropped) before the task finished.
    #[error("the pool was terminated before the task finished")]
    Terminated,
    /// The pool cannot run tasks: its worker initializer failed, or a worker could not
    /// be started (concurrent.futures' `BrokenProcessPool`).
    #[error("the pool is broken: {reason}")]
    Broken {
        /// Why.
        reason: String,
    },
    /// A worker process died abruptly in a pool built with `fail_fast(true)`
    /// (concurrent.futures' `BrokenProcessPool`, loky's `TerminatedWorkerError`): the
    /// pool is broken; every task pending or running then fails with this, naming the
    /// worker and how it ended, and so does every later submit.
    #[error("the pool is broken: its worker process {pid} died abruptly: {status}")]
    BrokenPool {
        /// The dead worker's pid.
        pid: u32,
        /// How it ended.
        status: crate::process::ExitStatus,
    },
    /// The input iterator of a map panicked while it was read, in the caller's thread,
    /// before this item (Python: the exception the iterable raised, which ends the
    /// map). The results before it come first; the map ends after it.
    #[error("the input iterator panicked: {message}")]
    Input {
        /// The panic payload, if it was a string.
        message: String,
    },
    /// The task's arguments or result could not be (de)serialised (Python's pickling
    /// errors, `MaybeEncodingError`). `message` says which and why, with the user's
    /// serde message; `source` is the codec's error when the failure happened in this
    /// process (a worker's failure arrives as its message).
    #[error("{message}")]
    Serialization {
        /// What went wrong.
        message: String,
        /// The codec error, when it happened on this side (boxed: a task's error stays
        /// as small as a `String` plus a word, which maps of millions of results feel).
        #[source]
        source: Option<Box<crate::codec::CodecError>>,
    },
    /// The task returned an `Err` (a task given to `try_submit`, `try_apply`…): its
    /// kind, message and where it was seen, as Python re-raises a worker's exception
    /// with its `_RemoteTraceback`. Boxed: a task's error stays small.
    #[error(transparent)]
    Failed(Box<RemoteError>),
}

/// A task's `Err`, as it crossed from the worker (Python's `_RemoteTraceback`): its
/// kind ([`ErrorKind::error_kind`], by default the error's type name), its message (its
/// `Display`) and the worker's traceback text.
///
/// `{}` shows `kind: message`; `{:#}` adds the remote traceback, as Python prints the
/// `_RemoteTraceback` as the cause of the error `result()` raises.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteError {
    kind: String,
    message: String,
    traceback: String,
}

impl RemoteError {
    /// Captures `error` where it was seen: its kind, its message and, as
    /// `RUST_BACKTRACE` says (std's rules), the backtrace of this thread here.
    pub(crate) fn capture<E: ErrorKind + ?Sized>(error: &E) -> RemoteError {
        use std::backtrace::{Backtrace, BacktraceStatus};
        use std::fmt::Write as _;
        let kind = error.error_kind().into_owned();
        let message = error.to_string();
        let thread = std::thread::current();
        let mut traceback = format!(
            "{kind}: {message}\n  returned by the task in process {}, thread '{}'\n",
            std::process::id(),
            thread.name().unwrap_or("<unnamed>"),
        );
        if !crate::sys::proc::backtrace_lock_usable() {
            traceback.push_str(crate::sys::proc::NO_BACKTRACE_IN_FORK_CHILD);
            return RemoteError {
                kind,
                message,
                traceback,
            };
        }
        let backtrace = Backtrace::capture();
        if backtrace.status() == BacktraceStatus::Captured {
            let _ = write!(traceback, "stack backtrace:\n{backtrace}");
        } else {
            traceback.push_str(
                "note: run with `RUST_BACKTRACE=1` environment variable to capture a backtrace\n",
            );
        }
        RemoteError {
            kind,
            message,
            traceback,
        }
    }

    /// The error's kind: its type name, or the kind its [`ErrorKind`] impl chose
    /// (Python: the exception's class).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The error's message (its `Display`; Python: `str(exc)`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The worker's traceback text (Python's `remote_traceback`): the kind and message,
    /// the process and thread that saw the error, and a backtrace when `RUST_BACKTRACE`
    /// asks for one.
    pub fn traceback(&self) -> &str {
        &self.traceback
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if f.alternate() {
            write!(f, "\n\nremote traceback:\n{}", self.traceback)?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}

/// What a task's `Err` is called once it left the task: its kind (Python: the
/// exception's class name). The default is the type's name without its path
/// (`ParseIntError`); implement [`error_kind`](Self::error_kind) to choose another.
///
/// ```
/// use multiproc::executor::ErrorKind;
/// use std::borrow::Cow;
///
/// #[derive(Debug)]
/// struct TooBig(u32);
/// impl std::fmt::Display for TooBig {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "{} is too big", self.0)
///     }
/// }
/// impl ErrorKind for TooBig {
///     fn error_kind(&self) -> Cow<'static, str> {
///         "ValueError".into()
///     }
/// }
/// assert_eq!(TooBig(7).error_kind(), "ValueError");
/// assert_eq!("x".parse::<u8>().unwrap_err().error_kind(), "ParseIntError");
/// ```
pub trait ErrorKind: fmt::Display {
    /// The kind; by default the type's name without its module path.
    fn error_kind(&self) -> std::borrow::Cow<'static, str> {
        short_type_name(std::any::type_name::<Self>()).into()
    }
}

/// `a::b::C<d::E>` → `C<E>`: each path in a type name cut to its last segment.
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or(""));
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or(""));
    out
}

impl ErrorKind for String {}
impl ErrorKind for &str {
    fn error_kind(&self) -> std::borrow::Cow<'static, str> {
        "str".into()
    }
}
impl ErrorKind for std::io::Error {}
impl ErrorKind for std::fmt::Error {}
impl ErrorKind for std::num::ParseIntError {}
impl ErrorKind for std::num::ParseFloatError {}
impl ErrorKind for std::num::TryFromIntError {}
impl ErrorKind for std::str::ParseBoolError {}
impl ErrorKind for std::str::Utf8Error {}
impl ErrorKind for std::string::FromUtf8Error {}
impl ErrorKind for RemoteError {
    fn error_kind(&self) -> std::borrow::Cow<'static, str> {
        self.kind.clone().into()
    }
}
impl ErrorKind for Box<dyn std::error::Error + Send + Sync> {
    fn error_kind(&self) -> std::borrow::Cow<'static, str> {
        "Error".into()
    }
}

impl TaskError {
    /// A serialisation failure reported by another process (its message only).
    pub(crate) fn serialization(message: impl Into<String>) -> TaskError {
        TaskError::Serialization {
            message: message.into(),
            source: None,
        }
    }

    /// A serialisation failure of this process: `context` says what was being done.
    pub(crate) fn codec(context: &str, error: crate::codec::CodecError) -> TaskError {
        TaskError::Serialization {
            message: format!("{context}: {error}"),
            source: Some(Box::new(error)),
        }
    }

    /// A task's `Err`, captured where it was seen.
    pub(crate) fn failed<E: ErrorKind + ?Sized>(error: &E) -> TaskError {
        TaskError::Failed(Box::new(RemoteError::capture(error)))
    }

    /// What failed (Python: the exception's class name): `"Panic"` for a panic, the
    /// [`RemoteError::kind`] of a task's `Err`, and for the pool's own fates their
    /// variant's name (`"WorkerDied"`, `"TimedOut"`, `"Cancelled"`, …).
    pub fn kind(&self) -> &str {
        match self {
            TaskError::Panicked { .. } => "Panic",
            TaskError::Cancelled => "Cancelled",
            TaskError::WorkerDied { .. } => "WorkerDied",
            TaskError::TimedOut { .. } => "TimedOut",
            TaskError::Terminated => "Terminated",
            TaskError::Broken { .. } => "Broken",
            TaskError::BrokenPool { .. } => "BrokenPool",
            TaskError::KilledWorker { .. } => "KilledWorker",
            TaskError::Input { .. } => "Input",
            TaskError::Serialization { .. } => "Serialization",
            TaskError::Failed(e) => e.kind(),
        }
    }

    /// The worker's traceback (Python's `remote_traceback`), for a task's `Err` and for
    /// a panic.
    ///
    /// A panic's traceback is captured where it happened, by a panic hook that chains
    /// the one it found (user hooks still run), and only when std's `Backtrace::capture`
    /// rules ask for one: `RUST_LIB_BACKTRACE`, else `RUST_BACKTRACE`, set and not
    /// `0` (`full`: every frame; otherwise std's short backtrace). The variables are
    /// read at each panic, in the worker: a `forkserver` worker sees the environment
    /// the forkserver started with, as in Python. A task that does not panic pays
    /// nothing for it.
    pub fn traceback(&self) -> Option<&str> {
        match self {
            TaskError::Failed(e) => Some(e.traceback()),
            TaskError::Panicked { traceback, .. } => traceback.as_deref(),
            _ => None,
        }
    }

    /// The task's `Err` with its kind and traceback, if that is how it failed.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            TaskError::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// What a wait for a task's value met (the `Err` of [`Future::result`], of
/// [`Future::result_timeout`] and of `.await`): the task failed, the wait ran out, or
/// the value had been taken already. tokio keeps its `JoinError` apart from `Elapsed`
/// in the same way.
///
/// ```
/// use multiproc::executor::{TaskError, ThreadPoolExecutor, WaitError};
/// use std::time::Duration;
///
/// let pool = ThreadPoolExecutor::new(1);
/// let slow = pool.submit(|| std::thread::sleep(Duration::from_millis(200))).unwrap();
/// assert_eq!(slow.result_timeout(Duration::ZERO), Err(WaitError::Timeout)); // still running
/// let bad = pool.submit(|| -> u32 { panic!("boom") }).unwrap();
/// match bad.result() {
///     Err(WaitError::Task(TaskError::Panicked { message, .. })) => assert_eq!(message, "boom"),
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(bad.result(), bad.result()); // a failure stays readable, as in Python
/// let good = pool.submit(|| 7).unwrap();
/// assert_eq!(good.result(), Ok(7));
/// assert_eq!(good.result(), Err(WaitError::Taken)); // a value has one owner
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The task failed: its fate.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The wait ran out of time (Python's `TimeoutError`); the task goes on and can be
    /// waited for again.
    #[error("timed out waiting for the task")]
    Timeout,
    /// The value was already taken by an earlier `result` (or `.await`): a value has one
    /// owner. (A failure is never taken: it is returned every time.)
    #[error("the result was already taken")]
    Taken,
}

impl WaitError {
    /// The task's fate, if the task failed (rather than the wait).
    pub fn task(&self) -> Option<&TaskError> {
        match self {
            WaitError::Task(e) => Some(e),
            _ => None,
        }
    }

    /// The task's fate, if the task failed; otherwise `self` back.
    pub fn into_task(self) -> Result<TaskError, WaitError> {
        match self {
            WaitError::Task(e) => Ok(e),
            other => Err(other),
        }
    }
}

/// Why a [`Completer`] refused to complete its future (Python's `InvalidStateError`):
/// a future completes once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidState {
    /// It has its outcome already.
    #[error("the future is already finished")]
    Finished,
    /// It was cancelled.
    #[error("the future was already cancelled")]
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Pending,
    Running,
    Finished,
    Cancelled,
}

struct Slot<T> {
    stage: Stage,
    /// The task finished with a value (kept when the value is taken).
    ok: bool,
    /// The outcome; the error boxed, for the same reason as `listeners`.
    value: Option<Result<T, Box<TaskError>>>,
    /// Who to tell when it is done: boxed, as most futures have nobody, so that a
    /// future's state stays small (it moves between the threads' caches).
    listeners: Option<Box<Listeners>>,
    /// The thread running the done-callbacks, while it does: waiters wait for them
    /// (as Python's `Pool` runs an `AsyncResult`'s callback before it wakes `get`),
    /// except that thread itself, which would wait for itself.
    completing: Option<std::thread::ThreadId>,
}

#[derive(Default)]
struct Listeners {
    waker: Option<Waker>,
    on_done: Vec<Box<dyn FnOnce() + Send>>,
}

impl Listeners {
    /// Runs the callbacks. A panicking callback must not skip the others, nor unwind
    /// into the thread that completed the task (a pool worker thread, a collector).
    fn run_callbacks(on_done: Vec<Box<dyn FnOnce() + Send>>) {
        for f in on_done {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        }
    }
}

/// The state every future shares with its task.
pub(crate) struct Inner<T> {
    slot: Mutex<Slot<T>>,
    done: Condvar,
    /// Set (after the slot) when the task finished or was cancelled: lets a waiter
    /// spin without taking the lock.
    settled: AtomicBool,
}

/// Whatever holds a future's [`Inner`]: the executor keeps the task itself in the same
/// allocation (one allocation per submitted task).
pub(crate) trait HasInner<T>: Send + Sync {
    fn inner(&self) -> &Inner<T>;

    /// Stops the task even if it runs; `false` where that is impossible (a thread).
    fn stop(&self) -> bool {
        false
    }
}

impl<T: Send> HasInner<T> for Inner<T> {
    fn inner(&self) -> &Inner<T> {
        self
    }
}

impl<T> Inner<T> {
    pub(crate) fn new() -> Inner<T> {
        Inner {
            slot: Mutex::new(Slot {
                stage: Stage::Pending,
                ok: false,
                value: None,
                listeners: None,
                completing: None,
            }),
            done: Condvar::new(),
            settled: AtomicBool::new(false),
        }
    }

    /// Spins and yields a little while the task is not done: most tasks finish within
    /// microseconds of being waited for, and sleeping on the condition variable would
    /// cost a system call on each side.
    fn spin_until_settled(&self) {
        let backoff = crossbeam_utils::Backoff::new();
        while !self.settled.load(Ordering::Acquire) && !backoff.is_completed() {
            backoff.snooze();
        }
    }

    /// Marks the task running; `false` if it was cancelled first.
    pub(crate) fn start(&self) -> bool {
        let mut slot = self.slot.lock();
        if slot.stage != Stage::Pending {
            return false;
        }
        slot.stage = Stage::Running;
        true
    }

    /// Records the outcome and wakes everyone waiting. A task cancelled while it ran
    /// (see [`Inner::cancel_running`]) keeps its `Cancelled`.
    pub(crate) fn finish(&self, value: Result<T, TaskError>) {
        let _ = self.try_finish(value);
    }

    /// [`finish`](Self::finish), saying why not when the future was done already.
    fn try_finish(&self, value: Result<T, TaskError>) -> Result<(), InvalidState> {
        let listeners = {
            let mut slot = self.slot.lock();
            match slot.stage {
                Stage::Finished => return Err(InvalidState::Finished),
                Stage::Cancelled => return Err(InvalidState::Cancelled),
                Stage::Pending | Stage::Running => {}
            }
            slot.stage = Stage::Finished;
            slot.ok = value.is_ok();
            slot.value = Some(value.map_err(Box::new));
            self.begin_settling(&mut slot)
        };
        self.settle(listeners);
        Ok(())
    }

    /// Takes the listeners of a future that just finished; with callbacks to run, marks
    /// this thread as completing it (waiters wait), else marks it settled.
    fn begin_settling(&self, slot: &mut Slot<T>) -> Option<Box<Listeners>> {
        let listeners = slot.listeners.take();
        if listeners.as_ref().is_some_and(|l| !l.on_done.is_empty()) {
            slot.completing = Some(std::thread::current().id());
        } else {
            self.settled.store(true, Ordering::Release);
        }
        listeners
    }

    /// Runs the callbacks (if any), then lets the waiters and the polling task go.
    fn settle(&self, listeners: Option<Box<Listeners>>) {
        let Some(listeners) = listeners else {
            self.done.notify_all();
            return;
        };
        let Listeners { waker, on_done } = *listeners;
        let ran_callbacks = !on_done.is_empty();
        Listeners::run_callbacks(on_done);
        // A task that polled while the callbacks ran left its waker in a new listener.
        let late_waker = if ran_callbacks {
            let mut slot = self.slot.lock();
            slot.completing = None;
            self.settled.store(true, Ordering::Release);
            slot.listeners.take().and_then(|l| l.waker)
        } else {
            None
        };
        self.done.notify_all();
        for w in [waker, late_waker].into_iter().flatten() {
            w.wake();
        }
    }

    /// Cancels the task if it has not started.
    pub(crate) fn cancel(&self) -> bool {
        self.cancel_if(false)
    }

    /// Whether the future was cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.slot.lock().stage == Stage::Cancelled
    }

    /// Cancels the task even if it runs (the caller stops it); `false` once finished.
    pub(crate) fn cancel_running(&self) -> bool {
        self.cancel_if(true)
    }

    fn cancel_if(&self, running_too: bool) -> bool {
        let listeners = {
            let mut slot = self.slot.lock();
            match slot.stage {
                Stage::Cancelled => return true,
                Stage::Running if running_too => {}
                Stage::Running | Stage::Finished => return false,
                Stage::Pending => {}
            }
            slot.stage = Stage::Cancelled;
            slot.value = Some(Err(Box::new(TaskError::Cancelled)));
            self.begin_settling(&mut slot)
        };
        self.settle(listeners);
        true
    }
}

/// The eventual result of a submitted task (Python's `concurrent.futures.Future`).
///
/// `result()` takes the value out (a Rust value has one owner): a second call gives
/// [`WaitError::Taken`]. A failure stays readable: every `result()` and `exception()`
/// returns it, as Python raises the same exception each time. A `Future` is also a
/// [`std::future::Future`]: async code can `.await` it.
pub struct Future<T> {
    cell: Arc<dyn HasInner<T>>,
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = self.cell.inner().slot.lock().stage;
        f.debug_struct("Future").field("stage", &stage).finish()
    }
}

/// Takes a finished future's outcome out of its slot.
/// A failure stays in place (every `result` and `exception` reads it, as Python raises
/// the same exception each time); a value is taken by the first reader.
fn take_value<T>(slot: &mut Slot<T>) -> Result<T, WaitError> {
    match &slot.value {
        Some(Err(e)) => Err(WaitError::Task((**e).clone())),
        Some(Ok(_)) => match slot.value.take() {
            Some(Ok(v)) => Ok(v),
            _ => unreachable!("just matched a value"),
        },
        None => Err(WaitError::Taken),
    }
}

fn finished<T>(slot: &Slot<T>) -> bool {
    matches!(slot.stage, Stage::Finished | Stage::Cancelled)
}

/// Finished, and its done-callbacks have run: what a waiter waits for. The thread
/// running the callbacks does not wait for them (a callback that calls `result` on its
/// own future gets the outcome; in Python's `Pool` it would hang).
fn settled<T>(slot: &Slot<T>) -> bool {
    finished(slot)
        && slot
            .completing
            .is_none_or(|t| t == std::thread::current().id())
}

impl<T> Future<T> {
    pub(crate) fn from_cell(cell: Arc<dyn HasInner<T>>) -> Future<T> {
        Future { cell }
    }

    /// A future that has already failed with `error`.
    pub(crate) fn failed(error: TaskError) -> Future<T>
    where
        T: Send + 'static,
    {
        let inner = Inner::new();
        inner.finish(Err(error));
        Future::from_cell(Arc::new(inner))
    }

    /// A future with no task behind it, and the [`Completer`] that completes it
    /// (Python's `Future()` with `set_result` / `set_exception`, which its docs reserve
    /// for executors and tests): for testing code that consumes futures, or for
    /// bridging another source of results into [`as_completed`](crate::executor::as_completed)
    /// and [`wait`](crate::executor::wait).
    ///
    /// ```
    /// use multiproc::executor::{Future, InvalidState, TaskError};
    ///
    /// let (future, completer) = Future::<u32>::pending();
    /// assert!(!future.done());
    /// std::thread::spawn(move || completer.set_result(42));
    /// assert_eq!(future.result(), Ok(42));
    ///
    /// let (future, completer) = Future::<u32>::pending();
    /// completer.set_exception(TaskError::Panicked { message: "bad".into(), traceback: None }).unwrap();
    /// assert_eq!(completer.set_result(1), Err(InvalidState::Finished)); // once only
    /// assert!(future.exception().is_some());
    /// ```
    pub fn pending() -> (Future<T>, Completer<T>)
    where
        T: Send + 'static,
    {
        let inner = Arc::new(Inner::new());
        (
            Future::from_cell(inner.clone()),
            Completer { inner: Some(inner) },
        )
    }

    /// `true` once the task finished or was cancelled (Python's `done()`).
    pub fn done(&self) -> bool {
        finished(&self.cell.inner().slot.lock())
    }

    /// `true` while the task runs.
    pub fn running(&self) -> bool {
        self.cell.inner().slot.lock().stage == Stage::Running
    }

    /// `true` if the task was cancelled before it started.
    pub fn cancelled(&self) -> bool {
        self.cell.inner().slot.lock().stage == Stage::Cancelled
    }

    /// Cancels the task if it has not started; `false` if it runs or ran already
    /// (Python's `cancel()`, S21).
    pub fn cancel(&self) -> bool {
        self.cell.inner().cancel()
    }

    /// Cancels the task even if it is running, where that is possible: a task of a
    /// [`ProcessPoolExecutor`](crate::executor::ProcessPoolExecutor) or a process
    /// [`Pool`](crate::pool::Pool) is stopped by killing the worker that runs it (the pool
    /// starts a replacement; pebble's `cancel()`). A thread cannot be stopped: for a
    /// [`ThreadPoolExecutor`](crate::executor::ThreadPoolExecutor) task this is [`Future::cancel`].
    /// `true` if the future is now cancelled.
    pub fn cancel_running(&self) -> bool {
        self.cell.inner().cancel() || self.cell.stop()
    }

    /// Waits until the task finished or was cancelled.
    pub fn wait(&self) {
        self.cell.inner().spin_until_settled();
        let mut slot = self.cell.inner().slot.lock();
        while !settled(&slot) {
            self.cell.inner().done.wait(&mut slot);
        }
    }

    /// As [`Future::wait`], at most `timeout`; `true` if done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut slot = self.cell.inner().slot.lock();
        while !settled(&slot) {
            match deadline {
                None => self.cell.inner().done.wait(&mut slot),
                Some(d) => {
                    if self.cell.inner().done.wait_until(&mut slot, d).timed_out() {
                        return settled(&slot);
                    }
                }
            }
        }
        true
    }

    fn take(&self) -> Result<T, WaitError> {
        take_value(&mut self.cell.inner().slot.lock())
    }

    /// Waits for the task and takes its value (Python's `result()`; a panic is
    /// [`TaskError::Panicked`] inside [`WaitError::Task`], Python's re-raised exception).
    pub fn result(&self) -> Result<T, WaitError> {
        let inner = self.cell.inner();
        inner.spin_until_settled();
        let mut slot = inner.slot.lock();
        while !settled(&slot) {
            inner.done.wait(&mut slot);
        }
        take_value(&mut slot)
    }

    /// As [`Future::result`], waiting at most `timeout`: [`WaitError::Timeout`]
    /// leaves the future pending.
    pub fn result_timeout(&self, timeout: Duration) -> Result<T, WaitError> {
        if self.wait_timeout(timeout) {
            self.take()
        } else {
            Err(WaitError::Timeout)
        }
    }

    /// Waits for the task and takes its outcome, for the owner of a future nobody else
    /// has waited on (an executor's `map`): it cannot meet `Timeout` or `Taken`.
    pub(crate) fn into_outcome(self) -> Result<T, TaskError> {
        self.result().map_err(|e| match e {
            WaitError::Task(e) => e,
            WaitError::Timeout | WaitError::Taken => {
                unreachable!(
                    "a future owned by one caller and waited for without a deadline has its value"
                )
            }
        })
    }

    /// Why the task failed (Python's `exception()`), waiting for it: `None` if it
    /// succeeded; [`TaskError::Cancelled`] if it was cancelled (Python raises
    /// `CancelledError`). Reads the failure in place, also after `result`.
    pub fn exception(&self) -> Option<TaskError> {
        self.wait();
        match &self.cell.inner().slot.lock().value {
            Some(Err(e)) => Some((**e).clone()),
            _ => None,
        }
    }

    /// As [`Future::exception`], waiting at most `timeout` (Python's
    /// `exception(timeout)`): [`WaitError::Timeout`] if the task is not done by then.
    pub fn exception_timeout(&self, timeout: Duration) -> Result<Option<TaskError>, WaitError> {
        if !self.wait_timeout(timeout) {
            return Err(WaitError::Timeout);
        }
        match &self.cell.inner().slot.lock().value {
            Some(Err(e)) => Ok(Some((**e).clone())),
            _ => Ok(None),
        }
    }

    /// Whether the task finished successfully; `None` while it is not done (Python's
    /// `AsyncResult.successful()`, which raises instead).
    pub fn successful(&self) -> Option<bool> {
        let slot = self.cell.inner().slot.lock();
        match slot.stage {
            Stage::Cancelled => Some(false),
            Stage::Finished => Some(slot.ok),
            Stage::Pending | Stage::Running => None,
        }
    }

    /// Runs `f` once the task is done (at once, on this thread, if it is already):
    /// Python's `add_done_callback`. `f` runs on the thread that completes the task. A
    /// panic in `f` stays there (Python logs and ignores a callback's exception): it
    /// neither unwinds into the caller nor skips the other callbacks.
    pub fn add_done_callback(&self, f: impl FnOnce() + Send + 'static) {
        let mut slot = self.cell.inner().slot.lock();
        if finished(&slot) {
            drop(slot);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        } else {
            slot.listeners
                .get_or_insert_default()
                .on_done
                .push(Box::new(f));
        }
    }
}

impl<T> std::future::Future for Future<T> {
    type Output = Result<T, WaitError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.cell.inner().slot.lock();
        if settled(&slot) {
            return Poll::Ready(take_value(&mut slot));
        }
        slot.listeners.get_or_insert_default().waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The half of a [`Future::pending`] future that completes it: once, with a value or a
/// failure. Dropped without completing, it fails the future with
/// [`TaskError::Broken`] (a waiter never waits for a completion that cannot come).
pub struct Completer<T> {
    /// `None` only while being dropped.
    inner: Option<Arc<Inner<T>>>,
}

impl<T> fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer").finish_non_exhaustive()
    }
}

impl<T> Completer<T> {
    fn inner(&self) -> &Inner<T> {
        self.inner.as_ref().expect("set until drop")
    }

    /// Marks the future running, so that [`Future::cancel`] can no longer cancel it
    /// (Python's `set_running_or_notify_cancel`): `false` if it was cancelled first
    /// (or is not pending any more), and then it must not be run.
    pub fn set_running_or_notify_cancel(&self) -> bool {
        self.inner().start()
    }

    /// Completes the future with `value` (Python's `set_result`), waking its waiters
    /// and running its done-callbacks on this thread. [`InvalidState`] if it was
    /// completed or cancelled already (the value is dropped).
    pub fn set_result(&self, value: T) -> Result<(), InvalidState> {
        self.inner().try_finish(Ok(value))
    }

    /// Fails the future with `error` (Python's `set_exception`); as
    /// [`set_result`](Self::set_result) otherwise.
    pub fn set_exception(&self, error: TaskError) -> Result<(), InvalidState> {
        self.inner().try_finish(Err(error))
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let _ = inner.try_finish(Err(TaskError::Broken {
                reason: "its Completer was dropped before completing it".into(),
            }));
        }
    }
}
