//! `concurrent.futures` in Rust: [`ThreadPoolExecutor`], [`Future`], [`as_completed`]
//! and [`wait`] (S21).
//!
//! ```
//! use multiproc::executor::{ThreadPoolExecutor, as_completed};
//!
//! let pool = ThreadPoolExecutor::new(2); // ThreadPoolExecutor(max_workers=2)
//! let futures: Vec<_> = (1..=3).map(|i| pool.submit(move || i * 10).unwrap()).collect();
//! let mut got: Vec<i32> = as_completed(futures).map(|f| f.result().unwrap()).collect();
//! got.sort();
//! assert_eq!(got, [10, 20, 30]);
//! // `map` keeps input order:
//! let squares: Vec<i32> = pool.map(|x: i32| x * x, 1..=4).unwrap().map(Result::unwrap).collect();
//! assert_eq!(squares, [1, 4, 9, 16]);
//! ```
//!
//! | Python `concurrent.futures` | `multiproc::executor` |
//! |---|---|
//! | `ThreadPoolExecutor(max_workers=n, thread_name_prefix=p)` | [`ThreadPoolExecutor::new(n)`](ThreadPoolExecutor::new), [`ThreadPoolExecutor::builder`] |
//! | `ThreadPoolExecutor(initializer=f, initargs=a)`, `BrokenThreadPool` | [`ThreadPoolBuilder::initializer`]; a panic in it: [`TaskError::Broken`] |
//! | loky's `idle_worker_timeout` | [`ThreadPoolBuilder::idle_worker_timeout`] |
//! | `ex.submit(fn, *args)` | [`ThreadPoolExecutor::submit`] (a closure) → [`Future`] |
//! | `ex.map(fn, iterable, buffersize=2 * n)` | [`ThreadPoolExecutor::map`]: results in input order, the input read as they are taken |
//! | `ex.shutdown(wait, cancel_futures)`, `with ex:` | [`ThreadPoolExecutor::shutdown`], `Drop` |
//! | `ex.map(fn, it, timeout=t, chunksize=n)` | [`ThreadPoolExecutor::map_with`], [`ProcessPoolExecutor::map_with`] with [`MapOptions`] → [`MapWith`] |
//! | `ProcessPoolExecutor.terminate_workers()`, `kill_workers()` (3.14) | [`ProcessPoolExecutor::terminate_workers`], [`ProcessPoolExecutor::kill_workers`] |
//! | loky's `idle_worker_timeout` for processes | [`ProcessPoolBuilder::idle_worker_timeout`] |
//! | `f.done()`, `f.running()`, `f.cancel()`, `f.cancelled()` | same names |
//! | `f.result()`, `f.result(timeout)`, `f.exception()`, `f.exception(timeout)` | [`Future::result`], [`Future::result_timeout`], [`Future::exception`], [`Future::exception_timeout`] |
//! | `Future()`, `f.set_result(v)`, `f.set_exception(e)`, `f.set_running_or_notify_cancel()`, `InvalidStateError` | [`Future::pending`] → ([`Future`], [`Completer`]): [`Completer::set_result`], [`Completer::set_exception`], [`Completer::set_running_or_notify_cancel`], [`InvalidState`] |
//! | `f.add_done_callback(cb)` | [`Future::add_done_callback`] |
//! | `await asyncio.wrap_future(f)` | `f.await` (a `Future` is a [`std::future::Future`]) |
//! | `as_completed(fs)`, `as_completed(fs, timeout)`, `wait(fs, return_when=…)` | [`as_completed`], [`as_completed_timeout`] (its `TimeoutError` is [`AsCompletedTimeout`], with the count unfinished), [`wait`] with [`ReturnWhen`] |

mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

pub use crate::future::{
    Completer, ErrorKind, Future, InvalidState, RemoteError, TaskError, WaitError,
};
use crate::future::{HasInner, Inner};
pub use process::{Executor, ProcessPoolBuilder, ProcessPoolExecutor};

/// The options of [`ProcessPoolExecutor::map_with`] and [`ThreadPoolExecutor::map_with`]
/// (Python's `Executor.map(fn, *iterables, timeout=None, chunksize=1)`).
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use multiproc::executor::MapOptions;
///
/// let opts = MapOptions::new()
///     .timeout(Duration::from_secs(10))
///     .chunksize(NonZeroUsize::new(64).unwrap());
/// assert_eq!(opts.get_chunksize().get(), 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct MapOptions {
    timeout: Option<Duration>,
    chunksize: std::num::NonZeroUsize,
}

impl Default for MapOptions {
    fn default() -> MapOptions {
        MapOptions::new()
    }
}

impl MapOptions {
    /// No deadline, one item per task (Python's defaults).
    pub fn new() -> MapOptions {
        MapOptions {
            timeout: None,
            chunksize: std::num::NonZeroUsize::MIN,
        }
    }

    /// Every result must be ready within `timeout` of the `map_with` call (Python's
    /// `timeout`: the deadline counts from the call, not per result). The first one
    /// that is not is [`WaitError::Timeout`]; the results end there and the tasks not
    /// started are cancelled, as Python's generator does when it raises `TimeoutError`.
    pub fn timeout(mut self, timeout: Duration) -> MapOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Items per task (Python's `chunksize`; not zero, by its type, where Python
    /// raises `ValueError`). On a [`ThreadPoolExecutor`] it has no effect, as in
    /// Python: a thread takes items from the input one by one at no cost to send them.
    pub fn chunksize(mut self, chunksize: std::num::NonZeroUsize) -> MapOptions {
        self.chunksize = chunksize;
        self
    }

    /// The chunk size set.
    pub fn get_chunksize(&self) -> std::num::NonZeroUsize {
        self.chunksize
    }

    /// The timeout set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The deadline of a map called now.
    fn deadline(&self) -> Option<Instant> {
        self.timeout.and_then(|t| Instant::now().checked_add(t))
    }
}

/// The results of `map_with` on either executor, in input order: a result not ready
/// by the deadline is [`WaitError::Timeout`] and ends them (the tasks not started are
/// cancelled); a failed task is [`WaitError::Task`] and the results go on.
pub struct MapWith<'a, T> {
    /// The next result by a deadline; `None` once the results ended.
    next: Option<NextBy<'a, T>>,
    deadline: Option<Instant>,
}

type NextBy<'a, T> = Box<dyn FnMut(Option<Instant>) -> Option<Result<T, WaitError>> + 'a>;

impl<T> std::fmt::Debug for MapWith<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapWith")
            .field("deadline", &self.deadline)
            .field("ended", &self.next.is_none())
            .finish()
    }
}

impl<'a, T> MapWith<'a, T> {
    fn new(
        next: impl FnMut(Option<Instant>) -> Option<Result<T, WaitError>> + 'a,
        deadline: Option<Instant>,
    ) -> MapWith<'a, T> {
        MapWith {
            next: Some(Box::new(next)),
            deadline,
        }
    }
}

impl<T> Iterator for MapWith<'_, T> {
    type Item = Result<T, WaitError>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.next.as_mut()?;
        match next(self.deadline) {
            Some(Err(WaitError::Timeout)) => {
                // Dropping the map cancels what has not started.
                self.next = None;
                Some(Err(WaitError::Timeout))
            }
            None => {
                self.next = None;
                None
            }
            other => other,
        }
    }
}

/// `submit` after [`ThreadPoolExecutor::shutdown`] (Python raises `RuntimeError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot schedule new tasks after shutdown")]
pub struct ShutDown;

/// A queued task: run it, or cancel it (at a shutdown with `cancel_futures`).
trait Task: Send + Sync {
    /// Runs the task (unless it was cancelled) and completes its future; calls
    /// `ran` exactly once in between, when the task's own code is done and before the
    /// future's waiters and callbacks learn of it.
    fn run(&self, ran: &dyn Fn());
    fn cancel(&self);
    /// Fails the task without running it (the executor broke).
    fn fail(&self, error: TaskError);
}

type Job = Arc<dyn Task>;

/// A submitted closure and its future's state: one allocation per task, shared by the
/// queue (as a [`Task`]) and the [`Future`].
struct Cell<T, F> {
    inner: Inner<T>,
    task: Mutex<Option<F>>,
}

impl<T: Send, F: Send> HasInner<T> for Cell<T, F> {
    fn inner(&self) -> &Inner<T> {
        &self.inner
    }
}

impl<T: Send, F: FnOnce() -> Result<T, TaskError> + Send> Task for Cell<T, F> {
    fn run(&self, ran: &dyn Fn()) {
        let Some(task) = self.task.lock().take() else {
            ran();
            return;
        };
        if !self.inner.start() {
            ran();
            return;
        }
        let outcome = crate::process::child::catch_traced(task)
            .map_err(|caught| TaskError::Panicked {
                message: caught.message,
                traceback: caught.traceback,
            })
            .and_then(|returned| returned);
        ran();
        self.inner.finish(outcome);
    }

    fn cancel(&self) {
        drop(self.task.lock().take());
        self.inner.cancel();
    }

    fn fail(&self, error: TaskError) {
        drop(self.task.lock().take());
        self.inner.finish(Err(error));
    }
}

/// How many threads wait for a task, for [`ThreadPoolExecutor::submit`]'s choice
/// between handing a task to one of them and starting a thread (CPython's
/// `_idle_semaphore`).
#[derive(Default)]
struct Idle {
    /// Threads that finished a task and were not yet counted on by a `submit`.
    count: AtomicUsize,
    /// Every thread has started: no more counting.
    full: AtomicBool,
}

impl Idle {
    /// A thread finished a task.
    fn add(&self) {
        if !self.full.load(Ordering::Relaxed) {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Counts on one idle thread, if there is one.
    fn take(&self) -> bool {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Settings for a [`ThreadPoolExecutor`].
#[derive(Clone)]
#[must_use]
pub struct ThreadPoolBuilder {
    workers: usize,
    name_prefix: String,
    initializer: Option<Initializer>,
    idle_timeout: Option<Duration>,
}

/// What each thread runs before its first task.
type Initializer = Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("max_workers", &self.workers)
            .field("thread_name_prefix", &self.name_prefix)
            .field("initializer", &self.initializer.is_some())
            .field("idle_worker_timeout", &self.idle_timeout)
            .finish()
    }
}

impl ThreadPoolBuilder {
    /// At most how many threads run tasks (Python's `max_workers`); they start as tasks
    /// need them. 0 is refused by [`build`](Self::build) (Python's `ValueError`), not
    /// turned into 1.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Thread names are `<prefix>_0`, `<prefix>_1`, … (Python's `thread_name_prefix`).
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Each thread runs `f(args)` (a clone of `args` each) before its first task
    /// (Python's `initializer`, `initargs`): thread-local state for its tasks. If it
    /// panics, the executor is broken (Python's `BrokenThreadPool`): the tasks waiting
    /// and every later `submit` and `map` fail with [`TaskError::Broken`], whose reason
    /// carries the panic message; tasks already running finish.
    ///
    /// ```
    /// use multiproc::executor::ThreadPoolExecutor;
    /// use std::cell::Cell;
    ///
    /// thread_local!(static BASE: Cell<u32> = const { Cell::new(0) });
    /// let pool = ThreadPoolExecutor::builder()
    ///     .max_workers(2)
    ///     .initializer(|base: u32| BASE.set(base), 100)
    ///     .build()?;
    /// let f = pool.submit(|| BASE.get() + 1).unwrap();
    /// assert_eq!(f.result(), Ok(101));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn initializer<A>(mut self, f: impl Fn(A) + Send + Sync + 'static, args: A) -> Self
    where
        A: Clone + Send + Sync + 'static,
    {
        self.initializer = Some(Arc::new(move || f(args.clone())));
        self
    }

    /// A thread idle for `timeout` ends; threads start again as tasks need them (loky's
    /// `idle_worker_timeout`; CPython's threads never end before the executor does). A
    /// thread never ends while a task waits for it.
    pub fn idle_worker_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Makes the executor: `InvalidInput` for `max_workers(0)`. No thread starts yet:
    /// each starts when a task is submitted and no thread is idle, up to `max_workers`
    /// (CPython ≥ 3.8's `_adjust_thread_count`).
    pub fn build(self) -> std::io::Result<ThreadPoolExecutor> {
        if self.workers == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "max_workers must be at least 1",
            ));
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        Ok(ThreadPoolExecutor {
            shared: Arc::new(Shared {
                threads: Mutex::new(Threads {
                    jobs: Some(tx),
                    handles: Vec::new(),
                    live: 0,
                    started: 0,
                }),
                queued: rx,
                idle: Idle::default(),
                broken: std::sync::OnceLock::new(),
                max_workers: self.workers,
                name_prefix: self.name_prefix,
                initializer: self.initializer,
                idle_timeout: self.idle_timeout,
            }),
        })
    }
}

/// The executor's threads and the sending end of their task queue (`None` after
/// shutdown), under one lock: a `submit` decides whether to start a thread and sends
/// its task as one step.
struct Threads {
    jobs: Option<Sender<Job>>,
    /// Every thread started and not yet joined (some may have ended by their idle
    /// timeout: pruned as threads start).
    handles: Vec<JoinHandle<()>>,
    /// Threads running their loop: at most `max_workers`.
    live: usize,
    /// Threads ever started: the number in the next one's name.
    started: usize,
}

/// A pool of threads running submitted closures (Python's
/// `concurrent.futures.ThreadPoolExecutor`). Threads start on demand, as in CPython: a
/// task submitted when no thread is idle starts one, up to `max_workers`, and an idle
/// thread takes the next task. A thread counts as idle as soon as its task returns,
/// before the task's future is completed, so a caller that waits for each result
/// before submitting the next task is served by one thread. Dropping the executor is
/// Python's `with` exit: queued tasks run, then the threads are joined.
pub struct ThreadPoolExecutor {
    shared: Arc<Shared>,
}

/// What the executor and its threads share.
struct Shared {
    threads: Mutex<Threads>,
    /// A receiving end kept to drain queued jobs at a cancelling shutdown, and cloned
    /// by each thread.
    queued: Receiver<Job>,
    idle: Idle,
    /// Why the executor is broken (its initializer failed), once it is.
    broken: std::sync::OnceLock<String>,
    max_workers: usize,
    name_prefix: String,
    initializer: Option<Initializer>,
    idle_timeout: Option<Duration>,
}

impl std::fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPoolExecutor")
            .field("max_workers", &self.shared.max_workers)
            .field("threads", &self.shared.threads.lock().live)
            .field("queued", &self.shared.queued.len())
            .field("broken", &self.shared.broken.get())
            .finish()
    }
}

impl Shared {
    fn broken_error(&self) -> Option<TaskError> {
        self.broken.get().map(|reason| TaskError::Broken {
            reason: reason.clone(),
        })
    }

    /// A thread's initializer panicked: the executor is broken, and the tasks queued
    /// fail (CPython's `_initializer_failed`).
    fn break_with(&self, message: &str) {
        let _ = self.broken.set(format!(
            "a thread initializer failed, the executor is not usable any more: {message}"
        ));
        let error = self.broken_error().expect("just set");
        // Under the threads' lock: a `submit` that saw the executor whole has queued
        // its task by now, and one after this sees it broken.
        let _threads = self.threads.lock();
        for job in self.queued.try_iter() {
            job.fail(error.clone());
        }
    }

    /// A thread's loop: the initializer, then tasks until the queue closes (or, with an
    /// idle timeout, until it has been idle that long and may end).
    fn serve(self: &Arc<Self>) {
        if let Some(init) = &self.initializer {
            if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init()))
            {
                self.break_with(&crate::codec::panic_message(payload.as_ref()));
                self.threads.lock().live -= 1;
                return;
            }
        }
        let rx = &self.queued;
        let idle = &self.idle;
        loop {
            let job = match self.idle_timeout {
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
                Some(timeout) => match rx.recv_timeout(timeout) {
                    Ok(job) => job,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        if self.retire() {
                            return;
                        }
                        continue;
                    }
                },
            };
            if let Some(error) = self.broken_error() {
                job.fail(error);
                continue;
            }
            // Idle only if no task waits for it: one that does is this thread's
            // next, and a `submit` counting on it would queue behind it.
            job.run(&|| {
                if !idle.full.load(Ordering::Relaxed) && rx.is_empty() {
                    idle.add();
                }
            });
        }
        self.threads.lock().live -= 1;
    }

    /// An idle thread's timeout ran out: ends it (`true`) unless a task waits for a
    /// thread. Decided under the threads' lock, where `submit` decides whether to start
    /// a thread and queues its task: a task queued after this sees one thread fewer.
    fn retire(&self) -> bool {
        let mut threads = self.threads.lock();
        if !self.queued.is_empty() {
            return false;
        }
        threads.live -= 1;
        if self.idle.full.swap(false, Ordering::Relaxed) {
            // Counting starts again from none: the threads left count themselves idle
            // after their next task (an idle one not counted times out as this one).
            self.idle.count.store(0, Ordering::Release);
        } else {
            // This thread may be the idle one counted: a `submit` must not count on it
            // (at worst another idle thread goes uncounted and a thread starts).
            let _ = self.idle.take();
        }
        true
    }
}

impl ThreadPoolExecutor {
    /// Settings: Python's default of `min(32, cpus + 4)` workers, threads named
    /// `ThreadPoolExecutor-0_<i>`.
    pub fn builder() -> ThreadPoolBuilder {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ThreadPoolBuilder {
            workers: (cpus + 4).min(32),
            name_prefix: "ThreadPoolExecutor-0".into(),
            initializer: None,
            idle_timeout: None,
        }
    }

    /// A pool of at most `max_workers` threads.
    ///
    /// # Panics
    /// If `max_workers` is 0 (Python raises `ValueError`; [`ThreadPoolExecutor::builder`]
    /// returns the error instead).
    pub fn new(max_workers: usize) -> ThreadPoolExecutor {
        ThreadPoolExecutor::builder()
            .max_workers(max_workers)
            .build()
            .expect("max_workers must be at least 1")
    }

    /// Schedules `task`; returns at once with its [`Future`] (S21). A panic in the task
    /// becomes [`TaskError::Panicked`] and leaves the pool running. If no thread is idle
    /// and fewer than `max_workers` run, a thread starts for it; if the system refuses
    /// to start one while none runs, the future fails with [`TaskError::Broken`]
    /// (Python's `RuntimeError: can't start new thread`) and the next `submit` tries
    /// again.
    pub fn submit<T, F>(&self, task: F) -> Result<Future<T>, ShutDown>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit_cell(move || Ok(task()))
    }

    /// As [`submit`](Self::submit) for a task that returns a `Result`: its `Err`
    /// becomes [`TaskError::Failed`], with the error's kind ([`ErrorKind`]), message and
    /// the traceback of the thread that ran it (Python: the exception `result()`
    /// raises), instead of an `Ok(Err(..))`. The same kinds as
    /// [`ProcessPoolExecutor::try_submit`].
    ///
    /// ```
    /// use multiproc::executor::{TaskError, ThreadPoolExecutor, WaitError};
    ///
    /// let pool = ThreadPoolExecutor::new(1);
    /// let bad = pool.try_submit(|| "x".parse::<u32>()).unwrap();
    /// let Err(WaitError::Task(e @ TaskError::Failed(_))) = bad.result() else { panic!() };
    /// assert_eq!(e.kind(), "ParseIntError");
    /// assert_eq!(e.to_string(), "ParseIntError: invalid digit found in string");
    /// assert!(format!("{e:#}").contains("remote traceback:"));
    /// assert_eq!(pool.try_submit(|| "7".parse::<u32>()).unwrap().result(), Ok(7));
    /// ```
    pub fn try_submit<T, E, F>(&self, task: F) -> Result<Future<T>, ShutDown>
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
        E: ErrorKind,
        T: Send + 'static,
    {
        self.submit_cell(move || task().map_err(|e| TaskError::failed(&e)))
    }

    fn submit_cell<T, F>(&self, task: F) -> Result<Future<T>, ShutDown>
    where
        F: FnOnce() -> Result<T, TaskError> + Send + 'static,
        T: Send + 'static,
    {
        let cell = Arc::new(Cell {
            inner: Inner::new(),
            task: Mutex::new(Some(task)),
        });
        let job: Job = cell.clone();
        let future = Future::from_cell(cell);
        let shared = &*self.shared;
        let mut threads = shared.threads.lock();
        if threads.jobs.is_none() {
            return Err(ShutDown);
        }
        if let Some(error) = shared.broken_error() {
            return Ok(Future::failed(error));
        }
        if threads.live < shared.max_workers && !shared.idle.take() {
            if let Err(e) = self.start_thread(&mut threads) {
                if threads.live == 0 {
                    return Ok(Future::failed(TaskError::Broken {
                        reason: format!("cannot start a thread: {e}"),
                    }));
                }
            }
        }
        match &threads.jobs {
            Some(tx) => tx.send(job).map_err(|_| ShutDown)?,
            None => return Err(ShutDown),
        }
        Ok(future)
    }

    /// Starts a thread (number `threads.started` in its name).
    fn start_thread(&self, threads: &mut Threads) -> std::io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let n = threads.started;
        let handle = std::thread::Builder::new()
            .name(format!("{}_{n}", shared.name_prefix))
            .spawn(move || shared.serve())?;
        // Threads that ended by their idle timeout: nothing left to join.
        threads.handles.retain(|h| !h.is_finished());
        threads.handles.push(handle);
        threads.started += 1;
        threads.live += 1;
        if threads.live == self.shared.max_workers {
            self.shared.idle.full.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `task(item)` for every item (Python's `map`): the results in input order as
    /// they come. The input is read lazily, in the caller's thread, as the results are
    /// taken: at most `2 × max_workers` tasks are submitted and not yet yielded (Python
    /// 3.14's `buffersize`; Python's default submits the whole input at the call), so
    /// an endless input works in bounded memory. Dropping the iterator cancels the
    /// tasks not yet started and reads the input no further, as Python's result
    /// iterator does. An input that panics ends the results with [`TaskError::Input`]
    /// after those before it; an executor shut down while the input is being read
    /// takes no more of it: one [`TaskError::Cancelled`] ends the results (Python
    /// raises its `RuntimeError` there).
    ///
    /// ```
    /// use multiproc::executor::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(2);
    /// let odd: Vec<u64> = pool.map(|x: u64| 2 * x + 1, 0u64..).unwrap().take(3).map(Result::unwrap).collect();
    /// assert_eq!(odd, [1, 3, 5]);
    /// ```
    pub fn map<'a, I, T, F>(
        &'a self,
        task: F,
        items: I,
    ) -> Result<impl Iterator<Item = Result<T, TaskError>> + use<'a, I, T, F>, ShutDown>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        let buffer = 2 * self.shared.max_workers;
        let mut map = ThreadMap {
            executor: self,
            input: Some(items.into_iter()),
            task: Arc::new(task),
            futures: std::collections::VecDeque::with_capacity(buffer),
            buffer,
            tail: None,
        };
        // Python's `map` submits at the call: a shut-down executor refuses it there.
        map.fill()?;
        Ok(map)
    }

    /// [`map`](Self::map) with [`MapOptions`] (Python's `map(fn, it, timeout=…)`):
    /// results not ready by the deadline are [`WaitError::Timeout`], which ends them
    /// and cancels the tasks not started (a running thread cannot be stopped: it
    /// finishes unseen, as in Python). The chunk size has no effect on threads.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::executor::{MapOptions, ThreadPoolExecutor, WaitError};
    ///
    /// let pool = ThreadPoolExecutor::new(1);
    /// let opts = MapOptions::new().timeout(Duration::from_millis(100));
    /// let nap = |ms: u64| std::thread::sleep(Duration::from_millis(ms));
    /// let got: Vec<_> = pool.map_with(nap, [0, 1_000, 0], opts)?.collect();
    /// assert_eq!(got, [Ok(()), Err(WaitError::Timeout)]);
    /// # Ok::<(), multiproc::executor::ShutDown>(())
    /// ```
    pub fn map_with<'a, I, T, F>(
        &'a self,
        task: F,
        items: I,
        options: MapOptions,
    ) -> Result<MapWith<'a, T>, ShutDown>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        let deadline = options.deadline();
        let buffer = 2 * self.shared.max_workers;
        let mut map = ThreadMap {
            executor: self,
            input: Some(items.into_iter()),
            task: Arc::new(task),
            futures: std::collections::VecDeque::with_capacity(buffer),
            buffer,
            tail: None,
        };
        map.fill()?;
        Ok(MapWith::new(move |by| map.next_by(by), deadline))
    }

    /// Stops taking tasks (Python's `shutdown`). With `cancel_futures`, tasks not yet
    /// started are cancelled; with `wait`, returns once the running (and remaining) tasks
    /// are done and the threads have ended.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        drop(self.shared.threads.lock().jobs.take());
        if cancel_futures {
            for job in self.shared.queued.try_iter() {
                job.cancel();
            }
        }
        if wait {
            let handles = std::mem::take(&mut self.shared.threads.lock().handles);
            for h in handles {
                let _ = h.join();
            }
        }
    }
}

/// The iterator of [`ThreadPoolExecutor::map`]: submits the input as results are taken,
/// at most `buffer` tasks not yet yielded.
struct ThreadMap<'a, It: Iterator, T, F> {
    executor: &'a ThreadPoolExecutor,
    /// `None` once it ended.
    input: Option<It>,
    task: Arc<F>,
    /// Submitted, not yet yielded, in input order.
    futures: std::collections::VecDeque<Future<T>>,
    buffer: usize,
    /// What ends the results: the input panicked, or the executor was shut down.
    tail: Option<TaskError>,
}

impl<It, T, F> ThreadMap<'_, It, T, F>
where
    It: Iterator,
    It::Item: Send + 'static,
    F: Fn(It::Item) -> T + Send + Sync + 'static,
    T: Send + 'static,
{
    /// Submits items until `buffer` are out or the input ended. `Err` only if the
    /// executor refused the very first task of the map.
    fn fill(&mut self) -> Result<(), ShutDown> {
        while self.futures.len() < self.buffer {
            let Some(input) = self.input.as_mut() else {
                return Ok(());
            };
            let item = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| input.next()))
            {
                Ok(Some(item)) => item,
                Ok(None) => {
                    self.close_input();
                    return Ok(());
                }
                Err(payload) => {
                    self.tail = Some(TaskError::Input {
                        message: crate::codec::panic_message(payload.as_ref()),
                    });
                    self.close_input();
                    return Ok(());
                }
            };
            let task = Arc::clone(&self.task);
            match self.executor.submit(move || task(item)) {
                Ok(future) => self.futures.push_back(future),
                Err(ShutDown) => {
                    self.close_input();
                    self.tail = Some(TaskError::Cancelled);
                    return Err(ShutDown);
                }
            }
        }
        Ok(())
    }

    /// The next result, waiting until `deadline` at most; one not ready by then is
    /// cancelled (if it has not started) and is [`WaitError::Timeout`].
    fn next_by(&mut self, deadline: Option<Instant>) -> Option<Result<T, WaitError>> {
        let Some(deadline) = deadline else {
            return self.next().map(|r| r.map_err(WaitError::Task));
        };
        let _ = self.fill();
        match self.futures.pop_front() {
            Some(future) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let got = future.result_timeout(left);
                if matches!(got, Err(WaitError::Timeout)) {
                    future.cancel();
                }
                Some(got)
            }
            None => self.tail.take().map(|e| Err(WaitError::Task(e))),
        }
    }

    /// Drops the input (a panic in its `Drop` is not the caller's either).
    fn close_input(&mut self) {
        let input = self.input.take();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(input)));
    }
}

impl<It, T, F> Iterator for ThreadMap<'_, It, T, F>
where
    It: Iterator,
    It::Item: Send + 'static,
    F: Fn(It::Item) -> T + Send + Sync + 'static,
    T: Send + 'static,
{
    type Item = Result<T, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        // A refusal after the call is read from the tail.
        let _ = self.fill();
        match self.futures.pop_front() {
            Some(future) => Some(future.into_outcome()),
            None => self.tail.take().map(Err),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let held = self.futures.len();
        match &self.input {
            None => {
                let left = held + usize::from(self.tail.is_some());
                (left, Some(left))
            }
            Some(input) => {
                let (lo, hi) = input.size_hint();
                // The input may still panic: one error item in place of the rest.
                let lo = if lo == 0 { held } else { held + 1 };
                (lo, hi.and_then(|h| h.checked_add(held + 1)))
            }
        }
    }
}

impl<It: Iterator, T, F> Drop for ThreadMap<'_, It, T, F> {
    fn drop(&mut self) {
        // Python's result iterator: cancel what has not started.
        for future in &self.futures {
            future.cancel();
        }
    }
}

impl Drop for ThreadPoolExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

/// The futures in the order they complete (Python's `as_completed`); waits as needed.
pub fn as_completed<T: Send + 'static>(
    futures: impl IntoIterator<Item = Future<T>>,
) -> impl Iterator<Item = Future<T>> {
    let (mut slots, rx) = completions(futures);
    rx.into_iter().filter_map(move |i| slots[i].take())
}

/// The futures, and a channel that receives the index of each as it completes (it
/// disconnects once all have).
fn completions<T: Send + 'static>(
    futures: impl IntoIterator<Item = Future<T>>,
) -> (Vec<Option<Future<T>>>, Receiver<usize>) {
    let slots: Vec<Option<Future<T>>> = futures.into_iter().map(Some).collect();
    let (tx, rx) = crossbeam_channel::unbounded::<usize>();
    for (i, f) in slots.iter().enumerate() {
        let tx = tx.clone();
        if let Some(f) = f {
            f.add_done_callback(move || {
                let _ = tx.send(i);
            });
        }
    }
    (slots, rx)
}

/// As [`as_completed`], but all of it within `timeout` of the call (Python's
/// `as_completed(fs, timeout)`): once the time is up, the iterator yields one
/// [`AsCompletedTimeout`] saying how many futures were unfinished, and ends; those
/// futures keep running.
///
/// ```
/// use std::time::Duration;
/// use multiproc::executor::{AsCompletedTimeout, ThreadPoolExecutor, as_completed_timeout};
///
/// let pool = ThreadPoolExecutor::new(2);
/// let (tx, rx) = std::sync::mpsc::channel::<()>();
/// let quick = pool.submit(|| 1).unwrap();
/// let stuck = pool.submit(move || rx.recv().is_ok()).unwrap();
/// let got: Vec<_> = as_completed_timeout(vec![quick], Duration::from_secs(60)).collect();
/// assert_eq!(got.len(), 1);
/// let mut it = as_completed_timeout(vec![stuck], Duration::from_millis(50));
/// let err = it.next().unwrap().unwrap_err();
/// assert_eq!(err, AsCompletedTimeout { unfinished: 1, total: 1 });
/// assert_eq!(err.to_string(), "1 (of 1) futures unfinished");
/// assert!(it.next().is_none());
/// drop(tx);
/// ```
pub fn as_completed_timeout<T: Send + 'static>(
    futures: impl IntoIterator<Item = Future<T>>,
    timeout: Duration,
) -> impl Iterator<Item = Result<Future<T>, AsCompletedTimeout>> {
    let deadline = Instant::now().checked_add(timeout);
    let (mut slots, rx) = completions(futures);
    let total = slots.len();
    let mut yielded = 0;
    let mut timed_out = false;
    std::iter::from_fn(move || {
        if timed_out {
            return None;
        }
        let next = match deadline {
            Some(d) => rx.recv_deadline(d).map_err(|e| e.is_timeout()),
            None => rx.recv().map_err(|_| false),
        };
        match next {
            Ok(i) => {
                yielded += 1;
                slots[i].take().map(Ok)
            }
            Err(true) => {
                timed_out = true;
                Some(Err(AsCompletedTimeout {
                    unfinished: total - yielded,
                    total,
                }))
            }
            Err(false) => None,
        }
    })
}

/// [`as_completed_timeout`] ran out of time (Python's `TimeoutError("2 (of 3) futures
/// unfinished")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{unfinished} (of {total}) futures unfinished")]
pub struct AsCompletedTimeout {
    /// Futures not yielded when the time was up.
    pub unfinished: usize,
    /// Futures given.
    pub total: usize,
}

/// When [`wait`] returns (Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`,
/// `ALL_COMPLETED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as one future is done.
    FirstCompleted,
    /// As soon as one task panicked, or when all are done.
    FirstException,
    /// When all are done.
    AllCompleted,
}

/// Which futures were done when [`wait`] returned: indices into its slice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waited {
    /// Indices of the futures that are done.
    pub done: Vec<usize>,
    /// Indices of the others.
    pub not_done: Vec<usize>,
}

/// Waits for `futures` as `when` says, at most `timeout` (Python's `wait`).
pub fn wait<T>(futures: &[Future<T>], when: ReturnWhen, timeout: Option<Duration>) -> Waited {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    for f in futures {
        let tx = tx.clone();
        f.add_done_callback(move || {
            let _ = tx.send(());
        });
    }
    drop(tx);
    loop {
        let done: Vec<usize> = (0..futures.len()).filter(|&i| futures[i].done()).collect();
        let finished = match when {
            ReturnWhen::AllCompleted => done.len() == futures.len(),
            ReturnWhen::FirstCompleted => !done.is_empty() || futures.is_empty(),
            ReturnWhen::FirstException => {
                done.len() == futures.len()
                    || done.iter().any(|&i| futures[i].exception().is_some())
            }
        };
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        if finished || out_of_time {
            let not_done = (0..futures.len()).filter(|i| !done.contains(i)).collect();
            return Waited { done, not_done };
        }
        let got = match deadline {
            Some(d) => rx.recv_deadline(d).map_err(|_| ()),
            None => rx.recv().map_err(|_| ()),
        };
        if got.is_err() && deadline.is_none() {
            // Every callback has run: all are done.
            continue;
        }
    }
}
