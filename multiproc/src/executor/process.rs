//! [`ProcessPoolExecutor`]: `concurrent.futures` on worker processes, on the same
//! engine as [`Pool`](crate::pool::Pool).

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Future, MapOptions, MapWith, ShutDown, TaskError, WaitError};
use crate::pool::{Arg, Core, PoolBuilder, PoolError, Ret, SettingWords};
use crate::process::StartMethod;

/// Settings of a [`ProcessPoolExecutor`] (Python's `ProcessPoolExecutor(max_workers,
/// mp_context, initializer, initargs, max_tasks_per_child)`).
#[derive(Debug, Clone)]
#[must_use]
pub struct ProcessPoolBuilder {
    pool: PoolBuilder,
}

impl ProcessPoolBuilder {
    /// At most how many worker processes run (Python's `max_workers`; default: the
    /// cores). 0 is refused by [`build`](Self::build) ([`PoolError::Invalid`], Python's
    /// `ValueError`).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.pool = self.pool.processes(n);
        self
    }

    /// The workers' start method (Python's `mp_context`).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.pool = self.pool.start_method(method);
        self
    }

    /// Every worker runs `f(args)` first (Python's `initializer`, `initargs`); a panic
    /// breaks the executor (Python's `BrokenProcessPool`).
    pub fn initializer<A>(mut self, f: fn(A), args: A) -> Self
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.pool = self.pool.initializer(f, args);
        self
    }

    /// A worker is replaced after this many tasks (Python's `max_tasks_per_child`). 0 is
    /// refused by [`build`](Self::build).
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.pool = self.pool.maxtasksperchild(n);
        self
    }

    /// A worker is replaced after a task that leaves its resident memory above `bytes`
    /// (at least 1: 0 is refused by [`build`](Self::build)).
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.pool = self.pool.max_memory_per_child(bytes);
        self
    }

    /// The default time limit of every task: over it, the task's worker is killed and
    /// replaced and the future fails with [`TaskError::TimedOut`]. Zero is refused by
    /// [`build`](Self::build).
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.pool = self.pool.task_timeout(limit);
        self
    }

    /// Fail-fast mode (off by default), CPython's and loky's semantics: a worker that
    /// dies abruptly breaks the executor; every pending and running future fails with
    /// [`TaskError::BrokenPool`] naming its pid and exit status, and so does every
    /// later `submit` (Python's `BrokenProcessPool`). Off, only the dead worker's task
    /// fails. See [`PoolBuilder::fail_fast`](crate::pool::PoolBuilder::fail_fast).
    pub fn fail_fast(mut self, on: bool) -> Self {
        self.pool = self.pool.fail_fast(on);
        self
    }

    /// A worker that holds no task for `limit` exits (loky's `idle_worker_timeout`);
    /// a later task that finds no idle worker starts one again, up to `max_workers`.
    /// It is noticed at the executor's checks, up to 0.1 s late. Zero is refused by
    /// [`build`](Self::build).
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::{Duration, Instant};
    /// use multiproc::executor::ProcessPoolExecutor;
    ///
    /// fn id(x: u32) -> u32 { x }
    ///
    /// let ex = ProcessPoolExecutor::builder()
    ///     .max_workers(1)
    ///     .idle_worker_timeout(Duration::from_millis(100))
    ///     .build()?;
    /// assert_eq!(ex.submit(id, 1)?.result()?, 1);
    /// let deadline = Instant::now() + Duration::from_secs(60);
    /// while !ex.worker_pids().is_empty() && Instant::now() < deadline {
    ///     std::thread::sleep(Duration::from_millis(10));
    /// }
    /// assert!(ex.worker_pids().is_empty()); // it exited, idle
    /// assert_eq!(ex.submit(id, 2)?.result()?, 2); // and a new one started
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn idle_worker_timeout(mut self, limit: Duration) -> Self {
        self.pool = self.pool.idle_timeout(limit);
        self
    }

    /// Checks the settings (one out of range is [`PoolError::Invalid`] naming it) and
    /// makes the executor. No worker starts yet: each starts when a task is submitted
    /// and no worker is idle, up to `max_workers` (CPython ≥ 3.9).
    pub fn build(self) -> Result<ProcessPoolExecutor, PoolError> {
        const WORDS: SettingWords = SettingWords {
            processes: "max_workers must be at least 1",
            max_tasks: "max_tasks_per_child must be at least 1",
        };
        Ok(ProcessPoolExecutor {
            core: self
                .pool
                .prefix("ProcessPoolExecutor")
                .on_demand()
                .start_core(&WORDS)?,
        })
    }
}

/// A pool of worker processes running submitted functions (Python's
/// `concurrent.futures.ProcessPoolExecutor`).
///
/// Workers start on demand, as in CPython ≥ 3.9: a task submitted when no worker is
/// idle starts one, up to `max_workers`; an idle worker takes the next task. Unlike
/// Python's, one worker dying does not break the executor: only the future of the task
/// it ran fails ([`TaskError::WorkerDied`]), and the next task that finds no idle
/// worker starts a replacement ([`ProcessPoolBuilder::fail_fast`] gives Python's way). Dropping it is Python's `with` exit:
/// `shutdown(wait=True)`.
///
/// ```
/// # multiproc::init();
/// use multiproc::executor::{ProcessPoolExecutor, as_completed};
///
/// fn cube(x: i64) -> i64 { x * x * x }
///
/// let ex = ProcessPoolExecutor::new(2)?;
/// let futures: Vec<_> = (1..=3).map(|i| ex.submit(cube, i).unwrap()).collect();
/// let mut got: Vec<i64> = as_completed(futures).map(|f| f.result().unwrap()).collect();
/// got.sort();
/// assert_eq!(got, [1, 8, 27]);
/// let in_order: Vec<i64> = ex.map(cube, [4, 5])?.map(Result::unwrap).collect();
/// assert_eq!(in_order, [64, 125]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ProcessPoolExecutor {
    core: Core,
}

impl std::fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.core.processes())
            .finish_non_exhaustive()
    }
}

impl ProcessPoolExecutor {
    /// Settings.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            pool: PoolBuilder::new(),
        }
    }

    /// An executor of `max_workers` processes.
    pub fn new(max_workers: usize) -> Result<ProcessPoolExecutor, PoolError> {
        ProcessPoolExecutor::builder()
            .max_workers(max_workers)
            .build()
    }

    /// The pids of the workers running now: none before the first task, then as many
    /// as the work needed so far, at most `max_workers`.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.core.pids()
    }

    fn submit_limited<A, R>(
        &self,
        f: fn(A) -> R,
        arg: A,
        limit: Option<Duration>,
    ) -> Result<Future<R>, ShutDown>
    where
        A: Arg,
        R: Ret,
    {
        self.submitted(crate::pool::submit_one(&self.core, f, &arg, limit))
    }

    /// What `submit` returns for what the pool said.
    fn submitted<R: Ret>(
        &self,
        submitted: Result<Future<R>, PoolError>,
    ) -> Result<Future<R>, ShutDown> {
        match submitted {
            Ok(future) => Ok(future),
            Err(PoolError::ShutDown) => Err(ShutDown),
            // Python raises these from `submit` too; here the future carries them, so
            // that every failure is read in the same place.
            Err(PoolError::Broken { reason }) => Ok(Future::failed(
                self.core
                    .broken_error()
                    .unwrap_or(TaskError::Broken { reason }),
            )),
            Err(PoolError::Arguments(e)) => Ok(Future::failed(TaskError::codec(
                "cannot send the arguments",
                e,
            ))),
            Err(e) => Ok(Future::failed(TaskError::Broken {
                reason: e.to_string(),
            })),
        }
    }

    /// Schedules `f(arg)` in a worker and returns its [`Future`] at once. A broken
    /// executor or arguments that do not serialise give a future that has failed.
    pub fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>, ShutDown>
    where
        A: Arg,
        R: Ret,
    {
        self.submit_limited(f, arg, None)
    }

    /// As [`submit`](Self::submit) for `f` returning a `Result`: its `Err` becomes
    /// [`TaskError::Failed`] with the error's kind ([`ErrorKind`](crate::executor::ErrorKind)),
    /// message and the worker's traceback (Python: the exception `result()` raises,
    /// with its `_RemoteTraceback`), not an `Ok(Err(..))`. The same kinds as
    /// [`ThreadPoolExecutor::try_submit`](crate::executor::ThreadPoolExecutor::try_submit).
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::executor::{ProcessPoolExecutor, TaskError, WaitError};
    ///
    /// fn parse(s: String) -> Result<u32, std::num::ParseIntError> { s.parse() }
    ///
    /// let pool = ProcessPoolExecutor::new(1)?;
    /// assert_eq!(pool.try_submit(parse, "7".into())?.result(), Ok(7));
    /// let Err(WaitError::Task(e)) = pool.try_submit(parse, "x".into())?.result() else {
    ///     panic!()
    /// };
    /// assert_eq!(e.kind(), "ParseIntError");
    /// assert_eq!(e.to_string(), "ParseIntError: invalid digit found in string");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_submit<A, R, E>(
        &self,
        f: fn(A) -> Result<R, E>,
        arg: A,
    ) -> Result<Future<R>, ShutDown>
    where
        A: Arg,
        R: Ret,
        E: crate::future::ErrorKind + 'static,
    {
        let submitted = crate::pool::submit_try(&self.core, f, &arg, None);
        self.submitted(submitted)
    }

    /// As [`submit`](Self::submit), stopping the task (killing its worker) if it runs
    /// longer than `limit` (pebble's `schedule(timeout=…)`). Errors at the call:
    /// [`PoolError::Invalid`] for a `limit` of zero (the task would be stopped as it
    /// starts), [`PoolError::ShutDown`] after [`shutdown`](Self::shutdown).
    pub fn schedule<A, R>(
        &self,
        f: fn(A) -> R,
        arg: A,
        limit: Duration,
    ) -> Result<Future<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        crate::pool::check_limit(limit, "limit must be longer than zero")?;
        self.submit_limited(f, arg, Some(limit))
            .map_err(|ShutDown| PoolError::ShutDown)
    }

    /// `f(item)` for every item (Python's `map`): the results in input order as they
    /// come, lazily. The input is read in the caller's thread as the results are
    /// taken, at most a bounded read-ahead of items submitted and not yet yielded
    /// (Python 3.14's `buffersize`, chosen for you), so an endless input streams in
    /// bounded memory. Dropping the iterator cancels the tasks not started and reads
    /// the input no further (as Python's result iterator cancels its futures). An input
    /// that panics ends the results with [`TaskError::Input`] after those before it.
    /// A broken executor yields its [`TaskError::Broken`] once, then ends.
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::executor::ProcessPoolExecutor;
    ///
    /// fn double(x: u64) -> u64 { 2 * x }
    ///
    /// let ex = ProcessPoolExecutor::new(2)?;
    /// let evens: Vec<u64> = ex.map(double, 0u64..)?.take(4).map(Result::unwrap).collect();
    /// assert_eq!(evens, [0, 2, 4, 6]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<'a, A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A, IntoIter: 'a>,
    ) -> Result<crate::pool::IMap<'a, R>, ShutDown>
    where
        A: Arg,
        R: Ret,
    {
        self.map_chunked(f, items, 1)
    }

    /// [`map`](Self::map) with `chunksize` items per task (Python's `chunksize`). A
    /// worker that dies in the middle of a chunk fails only the item it was running
    /// ([`TaskError::WorkerDied`]); the chunk's finished items keep their results and
    /// the items after it run (Python's executor breaks the whole pool).
    pub fn map_chunked<'a, A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A, IntoIter: 'a>,
        chunksize: usize,
    ) -> Result<crate::pool::IMap<'a, R>, ShutDown>
    where
        A: Arg,
        R: Ret,
    {
        match crate::pool::Mapper::new(&self.core)
            .with_chunksize(chunksize)
            .imap(f, items)
        {
            Ok(map) => Ok(map),
            Err(PoolError::ShutDown) => Err(ShutDown),
            // As `submit`: the failure is read from the results.
            Err(e) => Ok(crate::pool::IMap::failed(match e {
                PoolError::Broken { reason } => TaskError::Broken { reason },
                PoolError::Arguments(e) => TaskError::codec("cannot send the arguments", e),
                e => TaskError::Broken {
                    reason: e.to_string(),
                },
            })),
        }
    }

    /// [`map`](Self::map) with [`MapOptions`] (Python's `map(fn, it, timeout=…,
    /// chunksize=…)`): `chunksize` items per task, as [`map_chunked`](Self::map_chunked);
    /// results not ready by the deadline (counted from this call) are
    /// [`WaitError::Timeout`], which ends them, reads the input no further and
    /// cancels the tasks no worker holds yet; running ones, and those a worker holds
    /// already (its read-ahead, Python's call queue), finish unseen, as in Python. A
    /// failed task is
    /// [`WaitError::Task`] and the results go on.
    ///
    /// ```
    /// # multiproc::init();
    /// use std::num::NonZeroUsize;
    /// use std::time::Duration;
    /// use multiproc::executor::{MapOptions, ProcessPoolExecutor, WaitError};
    ///
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    ///
    /// let ex = ProcessPoolExecutor::new(1)?;
    /// let opts = MapOptions::new().chunksize(NonZeroUsize::new(2).unwrap());
    /// let got: Vec<u64> = ex.map_with(nap, [1, 2, 3], opts)?.map(Result::unwrap).collect();
    /// assert_eq!(got, [1, 2, 3]);
    /// // A chunk's results come together: one item per task here.
    /// let opts = MapOptions::new().timeout(Duration::from_millis(200));
    /// let got: Vec<_> = ex.map_with(nap, [0, 3_000, 0], opts)?.collect();
    /// assert_eq!(got, [Ok(0), Err(WaitError::Timeout)]);
    /// # ex.kill_workers();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_with<'a, A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A, IntoIter: 'a>,
        options: MapOptions,
    ) -> Result<MapWith<'a, R>, ShutDown>
    where
        A: Arg,
        R: Ret,
    {
        let deadline = options.deadline();
        let mut map = self.map_chunked(f, items, options.get_chunksize().get())?;
        Ok(MapWith::new(
            move |by: Option<std::time::Instant>| match by {
                None => map.next().map(|r| r.map_err(WaitError::Task)),
                Some(d) => map.next_timeout(d.saturating_duration_since(std::time::Instant::now())),
            },
            deadline,
        ))
    }

    /// Stops taking tasks (Python's `shutdown`): with `cancel_futures`, tasks no worker
    /// has started are cancelled; with `wait`, returns once the rest are done and the
    /// workers have exited.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.core.close(cancel_futures);
        if wait {
            self.core.join();
        }
    }

    /// Stops every worker now with SIGTERM (Python 3.14's `terminate_workers()`) and
    /// returns once each is reaped. Every future not done fails with
    /// [`TaskError::Terminated`], the running ones and the pending ones alike (Python
    /// cancels the pending ones and breaks the running ones with `BrokenProcessPool`);
    /// the executor is shut down after: `submit` gives [`ShutDown`]. A worker that
    /// ignores SIGTERM is killed after 30 s.
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// use multiproc::executor::{ProcessPoolExecutor, ShutDown, TaskError, WaitError};
    ///
    /// fn sleepy(d: Duration) { std::thread::sleep(d) }
    ///
    /// let ex = ProcessPoolExecutor::new(1)?;
    /// let f = ex.submit(sleepy, Duration::from_secs(3600))?;
    /// ex.terminate_workers();
    /// assert_eq!(f.result(), Err(WaitError::Task(TaskError::Terminated)));
    /// assert!(ex.worker_pids().is_empty());
    /// assert_eq!(ex.submit(sleepy, Duration::ZERO).unwrap_err(), ShutDown);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn terminate_workers(&self) {
        self.core.terminate_with(false);
    }

    /// As [`terminate_workers`](Self::terminate_workers) with SIGKILL (Python 3.14's
    /// `kill_workers()`).
    pub fn kill_workers(&self) {
        self.core.terminate_with(true);
    }
}

impl Drop for ProcessPoolExecutor {
    fn drop(&mut self) {
        self.core.join();
    }
}

/// What [`ThreadPoolExecutor`](super::ThreadPoolExecutor) and [`ProcessPoolExecutor`]
/// share (Python's `concurrent.futures.Executor`): code written against it runs its
/// tasks on threads or on processes.
///
/// ```
/// # multiproc::init();
/// use multiproc::executor::{Executor, ProcessPoolExecutor, ThreadPoolExecutor};
///
/// fn double(x: u32) -> u32 { 2 * x }
///
/// fn total(ex: &impl Executor) -> u32 {
///     let fs: Vec<_> = (1..=4).map(|i| ex.submit(double, i).unwrap()).collect();
///     fs.into_iter().map(|f| f.result().unwrap()).sum()
/// }
///
/// assert_eq!(total(&ThreadPoolExecutor::new(2)), 20);
/// assert_eq!(total(&ProcessPoolExecutor::new(2)?), 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Executor {
    /// Schedules `f(arg)`; see the implementors.
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>, ShutDown>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// `f(item)` for every item, results in input order as they come; the input is
    /// read lazily as the results are taken, a bounded number ahead, so it may be
    /// endless (see the implementors).
    fn map<'a, A, R>(
        &'a self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A, IntoIter: 'a>,
    ) -> Result<Box<dyn Iterator<Item = Result<R, TaskError>> + 'a>, ShutDown>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// Python's `shutdown(wait, cancel_futures)`.
    fn shutdown(&self, wait: bool, cancel_futures: bool);
}

impl Executor for ProcessPoolExecutor {
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>, ShutDown>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        ProcessPoolExecutor::submit(self, f, arg)
    }

    fn map<'a, A, R>(
        &'a self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A, IntoIter: 'a>,
    ) -> Result<Box<dyn Iterator<Item = Result<R, TaskError>> + 'a>, ShutDown>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Ok(Box::new(ProcessPoolExecutor::map(self, f, items)?))
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        ProcessPoolExecutor::shutdown(self, wait, cancel_futures);
    }
}

impl Executor for super::ThreadPoolExecutor {
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>, ShutDown>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        super::ThreadPoolExecutor::submit(self, move || f(arg))
    }

    fn map<'a, A, R>(
        &'a self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A, IntoIter: 'a>,
    ) -> Result<Box<dyn Iterator<Item = Result<R, TaskError>> + 'a>, ShutDown>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        // The iterator lives for `'a`, not necessarily the collection it came from.
        #[allow(clippy::useless_conversion)]
        let items = items.into_iter();
        Ok(Box::new(super::ThreadPoolExecutor::map(self, f, items)?))
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        super::ThreadPoolExecutor::shutdown(self, wait, cancel_futures);
    }
}
