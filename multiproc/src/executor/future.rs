//! [`Future`]: the handle `submit` returns (Python's `concurrent.futures.Future`).

use std::fmt;
use std::sync::Arc;
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
    value: Option<Result<T, FutureError>>,
    waker: Option<Waker>,
    on_done: Vec<Box<dyn FnOnce() + Send>>,
}

pub(crate) struct Inner<T> {
    slot: Mutex<Slot<T>>,
    done: Condvar,
}

/// The eventual result of a submitted task (Python's `concurrent.futures.Future`).
///
/// `result()` takes the value out (a Rust value has one owner): a second call gives
/// [`FutureError::Taken`]. A `Future` is also a [`std::future::Future`]: async code can
/// `.await` it.
pub struct Future<T> {
    inner: Arc<Inner<T>>,
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = self.inner.slot.lock().stage;
        f.debug_struct("Future").field("stage", &stage).finish()
    }
}

/// The executor's side of a [`Future`]: starts the task (unless it was cancelled) and
/// records its outcome.
pub(crate) struct Promise<T> {
    inner: Arc<Inner<T>>,
}

pub(crate) fn pair<T>() -> (Future<T>, Promise<T>) {
    let inner = Arc::new(Inner {
        slot: Mutex::new(Slot {
            stage: Stage::Pending,
            value: None,
            waker: None,
            on_done: Vec::new(),
        }),
        done: Condvar::new(),
    });
    (
        Future {
            inner: Arc::clone(&inner),
        },
        Promise { inner },
    )
}

impl<T> Promise<T> {
    /// Marks the task running; `false` if it was cancelled first.
    pub(crate) fn start(&self) -> bool {
        let mut slot = self.inner.slot.lock();
        if slot.stage != Stage::Pending {
            return false;
        }
        slot.stage = Stage::Running;
        true
    }

    /// Records the outcome and wakes everyone waiting.
    pub(crate) fn finish(self, value: Result<T, FutureError>) {
        let (waker, on_done) = {
            let mut slot = self.inner.slot.lock();
            slot.stage = Stage::Finished;
            slot.value = Some(value);
            (slot.waker.take(), std::mem::take(&mut slot.on_done))
        };
        self.inner.done.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        on_done.into_iter().for_each(|f| f());
    }

    /// Cancels a task that never started (an executor shutting down with
    /// `cancel_futures`).
    pub(crate) fn cancel(self) {
        Future { inner: self.inner }.cancel();
    }
}

fn finished<T>(slot: &Slot<T>) -> bool {
    matches!(slot.stage, Stage::Finished | Stage::Cancelled)
}

impl<T> Future<T> {
    /// `true` once the task finished or was cancelled (Python's `done()`).
    pub fn done(&self) -> bool {
        finished(&self.inner.slot.lock())
    }

    /// `true` while the task runs.
    pub fn running(&self) -> bool {
        self.inner.slot.lock().stage == Stage::Running
    }

    /// `true` if the task was cancelled before it started.
    pub fn cancelled(&self) -> bool {
        self.inner.slot.lock().stage == Stage::Cancelled
    }

    /// Cancels the task if it has not started; `false` if it runs or ran already
    /// (Python's `cancel()`, S21).
    pub fn cancel(&self) -> bool {
        let (waker, on_done) = {
            let mut slot = self.inner.slot.lock();
            match slot.stage {
                Stage::Cancelled => return true,
                Stage::Running | Stage::Finished => return false,
                Stage::Pending => {}
            }
            slot.stage = Stage::Cancelled;
            slot.value = Some(Err(FutureError::Cancelled));
            (slot.waker.take(), std::mem::take(&mut slot.on_done))
        };
        self.inner.done.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        on_done.into_iter().for_each(|f| f());
        true
    }

    /// Waits until the task finished or was cancelled.
    pub fn wait(&self) {
        let mut slot = self.inner.slot.lock();
        while !finished(&slot) {
            self.inner.done.wait(&mut slot);
        }
    }

    /// As [`Future::wait`], at most `timeout`; `true` if done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut slot = self.inner.slot.lock();
        while !finished(&slot) {
            match deadline {
                None => self.inner.done.wait(&mut slot),
                Some(d) => {
                    if self.inner.done.wait_until(&mut slot, d).timed_out() {
                        return finished(&slot);
                    }
                }
            }
        }
        true
    }

    fn take(&self) -> Result<T, FutureError> {
        self.inner
            .slot
            .lock()
            .value
            .take()
            .unwrap_or(Err(FutureError::Taken))
    }

    /// Waits for the task and takes its value (Python's `result()`; a panic is
    /// [`FutureError::Panicked`], Python's re-raised exception).
    pub fn result(&self) -> Result<T, FutureError> {
        self.wait();
        self.take()
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

    /// The panic message if the task panicked (Python's `exception()`), waiting for the
    /// task; `None` if it succeeded or was cancelled. Leaves the value in place.
    pub fn exception(&self) -> Option<String> {
        self.wait();
        match &self.inner.slot.lock().value {
            Some(Err(FutureError::Panicked { message })) => Some(message.clone()),
            _ => None,
        }
    }

    /// Runs `f` once the task is done (at once if it is already): Python's
    /// `add_done_callback`. `f` runs on the thread that completes the task.
    pub fn add_done_callback(&self, f: impl FnOnce() + Send + 'static) {
        let mut slot = self.inner.slot.lock();
        if finished(&slot) {
            drop(slot);
            f();
        } else {
            slot.on_done.push(Box::new(f));
        }
    }
}

impl<T> std::future::Future for Future<T> {
    type Output = Result<T, FutureError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.inner.slot.lock();
        if finished(&slot) {
            return Poll::Ready(slot.value.take().unwrap_or(Err(FutureError::Taken)));
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
