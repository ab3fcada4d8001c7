//! [`Future`]: the handle `submit` returns (Python's `concurrent.futures.Future`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Why a [`Future`] has no value to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FutureError {
    /// The task panicked; the panic message (Python: the task's exception).
    #[error("the task panicked: {message}")]
    Panicked {
        /// The panic payload, if it was a string.
        message: String,
    },
    /// The task was cancelled before it started.
    #[error("the task was cancelled")]
    Cancelled,
    /// `result_timeout`: the task did not finish in time (Python's `TimeoutError`); the
    /// future is still pending and can be waited for again.
    #[error("timed out waiting for the task")]
    WaitTimeout,
    /// The value was already taken by an earlier `result` (or `.await`).
    #[error("the result was already taken")]
    Taken,
    /// The worker process running the task died (killed, aborted, segfaulted, out of
    /// memory, or exited): only this task fails; the pool replaces the worker (pebble's
    /// `ProcessExpired`, billiard's `WorkerLostError`).
    #[error("the worker process {pid} running the task died: {status}")]
    WorkerDied {
        /// The dead worker's pid.
        pid: u32,
        /// How it ended.
        status: crate::ExitStatus,
    },
    /// The task ran longer than its time limit; its worker was killed and replaced.
    #[error("the task ran over its time limit of {limit:?} and was stopped")]
    TimedOut {
        /// The limit it ran over.
        limit: Duration,
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
    /// The task's arguments or result could not be (de)serialised; the message says
    /// which and why (Python's pickling errors, `MaybeEncodingError`).
    #[error("{message}")]
    Serialization {
        /// What went wrong.
        message: String,
    },
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
    value: Option<Result<T, Box<FutureError>>>,
    /// Who to tell when it is done: boxed, as most futures have nobody, so that a
    /// future's state stays small (it moves between the threads' caches).
    listeners: Option<Box<Listeners>>,
}

#[derive(Default)]
struct Listeners {
    waker: Option<Waker>,
    on_done: Vec<Box<dyn FnOnce() + Send>>,
}

impl Listeners {
    /// Wakes the task that polled and runs the callbacks.
    fn notify(listeners: Option<Box<Listeners>>) {
        if let Some(l) = listeners {
            if let Some(w) = l.waker {
                w.wake();
            }
            // A panicking callback must not skip the others, nor unwind into the
            // thread that completed the task (a pool worker thread, a collector).
            for f in l.on_done {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            }
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
    pub(crate) fn finish(&self, value: Result<T, FutureError>) {
        let listeners = {
            let mut slot = self.slot.lock();
            if finished(&slot) {
                return;
            }
            slot.stage = Stage::Finished;
            slot.ok = value.is_ok();
            slot.value = Some(value.map_err(Box::new));
            self.settled.store(true, Ordering::Release);
            slot.listeners.take()
        };
        self.done.notify_all();
        Listeners::notify(listeners);
    }

    /// Cancels the task if it has not started.
    pub(crate) fn cancel(&self) -> bool {
        self.cancel_if(false)
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
            slot.value = Some(Err(Box::new(FutureError::Cancelled)));
            self.settled.store(true, Ordering::Release);
            slot.listeners.take()
        };
        self.done.notify_all();
        Listeners::notify(listeners);
        true
    }
}

/// The eventual result of a submitted task (Python's `concurrent.futures.Future`).
///
/// `result()` takes the value out (a Rust value has one owner): a second call gives
/// [`FutureError::Taken`]. A `Future` is also a [`std::future::Future`]: async code can
/// `.await` it.
pub struct Future<T> {
    cell: Arc<dyn HasInner<T>>,
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = self.cell.inner().slot.lock().stage;
        f.debug_struct("Future").field("stage", &stage).finish()
    }
}

fn finished<T>(slot: &Slot<T>) -> bool {
    matches!(slot.stage, Stage::Finished | Stage::Cancelled)
}

impl<T> Future<T> {
    pub(crate) fn from_cell(cell: Arc<dyn HasInner<T>>) -> Future<T> {
        Future { cell }
    }

    /// A future that has already failed with `error`.
    pub(crate) fn failed(error: FutureError) -> Future<T>
    where
        T: Send + 'static,
    {
        let inner = Inner::new();
        inner.finish(Err(error));
        Future::from_cell(Arc::new(inner))
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
    /// [`ProcessPoolExecutor`](super::ProcessPoolExecutor) or a process
    /// [`Pool`](crate::pool::Pool) is stopped by killing the worker that runs it (the pool
    /// starts a replacement; pebble's `cancel()`). A thread cannot be stopped: for a
    /// [`ThreadPoolExecutor`](super::ThreadPoolExecutor) task this is [`Future::cancel`].
    /// `true` if the future is now cancelled.
    pub fn cancel_running(&self) -> bool {
        self.cell.inner().cancel() || self.cell.stop()
    }

    /// Waits until the task finished or was cancelled.
    pub fn wait(&self) {
        self.cell.inner().spin_until_settled();
        let mut slot = self.cell.inner().slot.lock();
        while !finished(&slot) {
            self.cell.inner().done.wait(&mut slot);
        }
    }

    /// As [`Future::wait`], at most `timeout`; `true` if done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut slot = self.cell.inner().slot.lock();
        while !finished(&slot) {
            match deadline {
                None => self.cell.inner().done.wait(&mut slot),
                Some(d) => {
                    if self.cell.inner().done.wait_until(&mut slot, d).timed_out() {
                        return finished(&slot);
                    }
                }
            }
        }
        true
    }

    fn take(&self) -> Result<T, FutureError> {
        self.cell
            .inner()
            .slot
            .lock()
            .value
            .take()
            .map_or(Err(FutureError::Taken), |v| v.map_err(|e| *e))
    }

    /// Waits for the task and takes its value (Python's `result()`; a panic is
    /// [`FutureError::Panicked`], Python's re-raised exception).
    pub fn result(&self) -> Result<T, FutureError> {
        let inner = self.cell.inner();
        inner.spin_until_settled();
        let mut slot = inner.slot.lock();
        while !finished(&slot) {
            inner.done.wait(&mut slot);
        }
        slot.value
            .take()
            .map_or(Err(FutureError::Taken), |v| v.map_err(|e| *e))
    }

    /// As [`Future::result`], waiting at most `timeout`: [`FutureError::WaitTimeout`]
    /// leaves the future pending.
    pub fn result_timeout(&self, timeout: Duration) -> Result<T, FutureError> {
        if self.wait_timeout(timeout) {
            self.take()
        } else {
            Err(FutureError::WaitTimeout)
        }
    }

    /// Why the task failed (Python's `exception()`), waiting for it: `None` if it
    /// succeeded or was cancelled (or its outcome was already taken). Leaves the value
    /// in place.
    pub fn exception(&self) -> Option<FutureError> {
        self.wait();
        match &self.cell.inner().slot.lock().value {
            Some(Err(e)) if **e != FutureError::Cancelled => Some((**e).clone()),
            _ => None,
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

    /// Runs `f` once the task is done (at once if it is already): Python's
    /// `add_done_callback`. `f` runs on the thread that completes the task.
    pub fn add_done_callback(&self, f: impl FnOnce() + Send + 'static) {
        let mut slot = self.cell.inner().slot.lock();
        if finished(&slot) {
            drop(slot);
            f();
        } else {
            slot.listeners
                .get_or_insert_default()
                .on_done
                .push(Box::new(f));
        }
    }
}

impl<T> std::future::Future for Future<T> {
    type Output = Result<T, FutureError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.cell.inner().slot.lock();
        if finished(&slot) {
            return Poll::Ready(
                slot.value
                    .take()
                    .map_or(Err(FutureError::Taken), |v| v.map_err(|e| *e)),
            );
        }
        slot.listeners.get_or_insert_default().waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
