//! Process pools: Python's `multiprocessing.Pool`, crash-safe (S6 S10 S43).
//!
//! ```
//! # multiproc::init();
//! use multiproc::pool::Pool;
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.map(square, 1..=4)?, [1, 4, 9, 16]);      // input order (S10)
//! let r = pool.apply_async(square, 12)?;                      // an AsyncResult
//! assert_eq!(r.get()?, 144);
//! let mut any: Vec<u64> = pool.imap_unordered(square, 1..=3)?.map(Result::unwrap).collect();
//! any.sort();
//! assert_eq!(any, [1, 4, 9]);
//! pool.close();
//! pool.join();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A task is a function (or a closure that captures nothing) and serialisable
//! arguments; its result comes back with serde. Several arguments go in a tuple, or use
//! [`Pool::starmap`] with a function of two or three arguments.
//!
//! # What Python's Pool does not promise and this one does
//!
//! * **A worker that dies fails only its task.** SIGKILL, abort, a segfault or the OOM
//!   killer in a worker give that task [`TaskError::WorkerDied`] with the pid and the
//!   signal; the pool starts a replacement, and every other task completes. (CPython's
//!   Pool hangs for ever here; its executor breaks the whole pool.)
//! * **Time limits.** [`PoolBuilder::task_timeout`] or [`Pool::schedule`]: a task over
//!   its limit is stopped — its worker is killed and replaced — and reports
//!   [`TaskError::TimedOut`]. [`AsyncResult::get_timeout`] only stops *waiting*
//!   ([`WaitError::Timeout`], S43), as in Python; `cancel_running` on the
//!   [`Future`] stops the task.
//! * **An initializer that fails** breaks the pool with a clear error
//!   ([`TaskError::Broken`]) instead of respawning workers for ever.
//! * **Nothing is left behind**: dropping the pool (Python's `with` exit) terminates it;
//!   `close` + `join` finishes the work first. Either way every worker is reaped.
//!
//! # Python → multiproc
//!
//! | Python | multiproc |
//! |---|---|
//! | `Pool(4)`, `Pool(processes, initializer, initargs, maxtasksperchild)` | [`Pool::new(4)`](Pool::new), [`Pool::builder`] |
//! | `pool.apply(f, (a,))` | [`Pool::apply`] |
//! | `pool.apply_async(f, (a,))` → `AsyncResult` | [`Pool::apply_async`] → [`AsyncResult`] |
//! | `r.get()`, `r.get(timeout=1)`, `r.ready()`, `r.successful()`, `r.wait()` | [`AsyncResult::get`], [`AsyncResult::get_timeout`], `ready`, `successful`, `wait` |
//! | `pool.map(f, xs)`, `map(f, xs, chunksize=1)` | [`Pool::map`], [`Pool::with_chunksize`]`(1).map(…)` |
//! | `pool.map_async(f, xs)` | [`Pool::map_async`] → [`MapResult`] |
//! | `pool.imap(f, xs)`, `imap_unordered(f, xs)` | [`Pool::imap`], [`Pool::imap_unordered`] (iterators of `Result`) |
//! | `pool.starmap(f, [(a, b), …])` | [`Pool::starmap`] (`fn(A, B) -> R`), [`Pool::starmap3`] |
//! | `pool.close()`, `pool.join()`, `pool.terminate()`, `with Pool() as p:` | same names, `Drop` terminates |
//! | pebble's `schedule(f, args, timeout=…)` | [`Pool::schedule`] |
//! | billiard's `max_memory_per_child` | [`PoolBuilder::max_memory_per_child`] |
//! | tqdm / mpire's `progress_bar=True` | [`Pool::with_progress_bar`], [`IMap::completed`] |

mod core;
pub(crate) mod worker;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::future::{Future, TaskError, WaitError};
pub(crate) use core::{Core, Refused, Sink, decode_outcome, stop_task};

use crate::codec::{self, CodecError};
use crate::future::{HasInner, Inner};
use crate::process::child::Outcome;
use crate::sys::entry::FnAddr;
use crate::{StartError, StartMethod};
use core::{Config, Spawner};
use worker::WorkerArgs;

/// What a task takes: anything serde can carry across the process boundary.
pub trait Arg: Serialize + DeserializeOwned + 'static {}
impl<T: Serialize + DeserializeOwned + 'static> Arg for T {}

/// What a task returns: anything serde can carry back, that the caller's thread can
/// receive.
pub trait Ret: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Ret for T {}

/// Why a pool call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The workers could not be started.
    #[error("cannot start the pool's workers: {0}")]
    Start(#[from] StartError),
    /// The pool was closed or terminated: it takes no new tasks (Python's
    /// `ValueError: Pool not running`).
    #[error("the pool is not running (closed or terminated)")]
    Closed,
    /// The pool is broken (its initializer failed, or a worker could not be started).
    #[error("the pool is broken: {reason}")]
    Broken {
        /// Why.
        reason: String,
    },
    /// The arguments could not be serialised; nothing was submitted.
    #[error("cannot send the arguments: {0}")]
    Arguments(#[from] CodecError),
    /// A setting is out of range (Python's `ValueError`).
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// The task failed (for `apply`): its fate.
    #[error("{0}")]
    Task(TaskError),
    /// Item `index` of a `map` failed (the first in input order that did).
    #[error("item {index}: {error}")]
    Item {
        /// Its position in the input.
        index: usize,
        /// Why.
        error: TaskError,
    },
    /// A `_timeout` wait ran out (the map goes on and can be waited for again).
    #[error("timed out waiting for the results")]
    Timeout,
    /// The results were already taken by an earlier `get`.
    #[error("the results were already taken")]
    Taken,
}

impl From<WaitError> for PoolError {
    fn from(e: WaitError) -> PoolError {
        match e {
            WaitError::Task(e) => PoolError::Task(e),
            WaitError::Timeout => PoolError::Timeout,
            WaitError::Taken => PoolError::Taken,
        }
    }
}

/// A wait with a deadline that passed (internal: each caller says it in its own error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Elapsed;

impl PoolError {
    fn refused(r: Refused) -> PoolError {
        match r {
            Refused::Closed => PoolError::Closed,
            Refused::Broken(reason) => PoolError::Broken { reason },
        }
    }
}

/// Settings of a [`Pool`] (Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild)` and `get_context(method).Pool`).
///
/// ```
/// # multiproc::init();
/// use std::sync::OnceLock;
/// use std::time::Duration;
/// use multiproc::pool::Pool;
/// use multiproc::StartMethod;
///
/// static GREETING: OnceLock<String> = OnceLock::new();
/// fn set_greeting(g: String) { GREETING.set(g).unwrap(); }
/// fn greet(name: String) -> String { format!("{} {name}", GREETING.get().unwrap()) }
///
/// let pool = Pool::builder()
///     .processes(2)
///     .start_method(StartMethod::Spawn)
///     .initializer(set_greeting, "hello".to_string()) // once per worker
///     .maxtasksperchild(100)                           // then a fresh worker
///     .task_timeout(Duration::from_secs(60))           // no task runs longer
///     .build()?;
/// assert_eq!(pool.apply(greet, "pool".to_string())?, "hello pool");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct PoolBuilder {
    processes: usize,
    method: Option<StartMethod>,
    spawner: Spawner,
    max_tasks: Option<usize>,
    max_memory: Option<u64>,
    timeout: Option<Duration>,
    invalid: Option<&'static str>,
    prefix: &'static str,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("method", &self.method)
            .field("max_tasks", &self.max_tasks)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn no_initializer() -> Spawner {
    Arc::new(|builder, parts| {
        builder.start(
            worker::worker_main::<()>,
            WorkerArgs::<()> { parts, init: None },
        )
    })
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            processes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            method: None,
            spawner: no_initializer(),
            max_tasks: None,
            max_memory: None,
            timeout: None,
            invalid: None,
            prefix: "PoolWorker",
        }
    }
}

impl PoolBuilder {
    /// Python's defaults: as many workers as cores, the global start method.
    pub fn new() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// How many worker processes (at least 1).
    pub fn processes(mut self, n: usize) -> Self {
        if n == 0 {
            self.invalid = Some("a pool needs at least one process");
        }
        self.processes = n.max(1);
        self
    }

    /// The start method of the workers (default: [`crate::get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Every worker runs `f(args)` once before its first task (Python's `initializer`
    /// and `initargs`). `args` may hold handles (queues, locks, shared values), so this
    /// is how workers get them. A panic in `f` breaks the pool: every task fails with
    /// [`TaskError::Broken`] and later calls with [`PoolError::Broken`].
    pub fn initializer<A>(mut self, f: fn(A), args: A) -> Self
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let target = FnAddr::of(f);
        self.spawner = Arc::new(move |builder, parts| {
            let init = Some((target, args.clone()));
            builder.start(worker::worker_main::<A>, WorkerArgs { parts, init })
        });
        self
    }

    /// As [`initializer`](Self::initializer) with a closure that may capture anything:
    /// only under the `fork` start method (which this sets), where the workers are
    /// copies of this process.
    pub fn fork_initializer(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        let f = Arc::new(f);
        self.method = Some(StartMethod::Fork);
        self.spawner = Arc::new(move |builder, parts| {
            let f = Arc::clone(&f);
            builder
                .start_method(StartMethod::Fork)
                .start_closure(move || worker::worker_with_closure(parts, || f()))
        });
        self
    }

    /// A worker exits after this many tasks and a fresh one replaces it (Python's
    /// `maxtasksperchild`; a chunk of a map is one task). At least 1.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        if n == 0 {
            self.invalid = Some("maxtasksperchild must be at least 1");
        }
        self.max_tasks = Some(n.max(1));
        self
    }

    /// A worker whose resident memory exceeds `bytes` after a task exits and a fresh one
    /// replaces it (billiard's `max_memory_per_child`, loky's memory-leak protection):
    /// a task that leaks cannot grow a worker without bound. The task itself completes
    /// normally.
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// The default time limit of every task (a chunk of a map counts as one task): a
    /// task over it is stopped and reports [`TaskError::TimedOut`].
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    pub(crate) fn prefix(mut self, prefix: &'static str) -> Self {
        self.prefix = prefix;
        self
    }

    pub(crate) fn start_core(self) -> Result<Core, PoolError> {
        if let Some(what) = self.invalid {
            return Err(PoolError::Invalid(what));
        }
        Ok(Core::start(Config {
            processes: self.processes,
            method: self.method,
            spawner: self.spawner,
            max_tasks: self.max_tasks,
            max_memory: self.max_memory,
            timeout: self.timeout,
            prefix: self.prefix,
        })?)
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool, PoolError> {
        Ok(Pool {
            core: self.start_core()?,
        })
    }
}

/// A pool of worker processes (Python's `multiprocessing.Pool`). See the
/// [module documentation](self).
///
/// Dropping the pool terminates it, as leaving Python's `with Pool() as p:` does: call
/// [`close`](Pool::close) and [`join`](Pool::join) first to let the work finish.
pub struct Pool {
    core: Core,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.core.processes())
            .finish_non_exhaustive()
    }
}

/// A task's state and its pool, behind a [`Future`] or an [`AsyncResult`].
pub(crate) struct TaskCell<R> {
    inner: Inner<R>,
    pool: std::sync::Weak<core::Shared>,
    id: u64,
}

impl<R: Send> HasInner<R> for TaskCell<R> {
    fn inner(&self) -> &Inner<R> {
        &self.inner
    }

    fn stop(&self) -> bool {
        stop_task(&self.pool, self.id);
        self.inner.cancel_running()
    }
}

impl<R: DeserializeOwned + Send> Sink for TaskCell<R> {
    fn start(&self) -> bool {
        self.inner.start()
    }
    fn complete(&self, items: Vec<Outcome>) {
        let outcome = match items.into_iter().next() {
            Some(o) => decode_outcome::<R>(o),
            None => Err(TaskError::serialization("the worker sent no result")),
        };
        self.inner.finish(outcome);
    }
    fn fail(&self, error: TaskError) {
        self.inner.finish(Err(error));
    }
    fn cancel(&self) {
        // No worker holds it (it is pending, perhaps again after its worker died):
        // cancel it even if it was marked running when first sent.
        self.inner.cancel_running();
    }
}

/// Submits `target(args)` to `core`; the future fails at once if the arguments do not
/// encode. `Err` only if the pool takes no tasks.
pub(crate) fn submit_one<A, R>(
    core: &Core,
    target: fn(A) -> R,
    args: &A,
    timeout: Option<Duration>,
) -> Result<Future<R>, PoolError>
where
    A: Arg,
    R: Ret,
{
    let id = core.next_id();
    let cell = Arc::new(TaskCell::<R> {
        inner: Inner::new(),
        pool: core.weak(),
        id,
    });
    let bytes = codec::encode(args)?;
    let entry: worker::TaskEntry = worker::entry_one::<A, R>;
    let sink: Arc<dyn Sink> = cell.clone();
    core.submit(
        [(id, FnAddr::of(entry), FnAddr::of(target), bytes, sink)],
        timeout,
    )
    .map_err(PoolError::refused)?;
    Ok(Future::from_cell(cell))
}

impl Pool {
    /// A pool of `processes` workers with the default settings (Python's `Pool(n)`).
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        PoolBuilder::new().processes(processes).build()
    }

    /// Settings (Python's `Pool(...)` keyword arguments).
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// How many workers the pool keeps.
    pub fn processes(&self) -> usize {
        self.core.processes()
    }

    /// The pids of the workers alive now (they change when a worker is replaced).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.core.pids()
    }

    /// Runs `f(args)` in a worker and waits for its result (Python's `apply`).
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        Ok(self.apply_async(f, args)?.get()?)
    }

    /// Submits `f(args)` and returns at once (Python's `apply_async`). Fails only if
    /// the pool is closed or broken or `args` cannot be serialised.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> Result<AsyncResult<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        submit_one(&self.core, f, &args, None).map(AsyncResult)
    }

    /// As [`apply_async`](Self::apply_async) with a time limit (pebble's `schedule`):
    /// if the task runs longer than `limit` its worker is killed and replaced, and the
    /// result is [`TaskError::TimedOut`].
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// use multiproc::pool::{TaskError, Pool};
    ///
    /// fn sleepy(d: Duration) { std::thread::sleep(d) }
    ///
    /// let pool = Pool::new(1)?;
    /// let limit = Duration::from_millis(100);
    /// let r = pool.schedule(sleepy, Duration::from_secs(3600), limit)?;
    /// assert_eq!(r.get().unwrap_err(), TaskError::TimedOut { limit });
    /// pool.apply(sleepy, Duration::ZERO)?; // a new worker took over
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn schedule<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        limit: Duration,
    ) -> Result<AsyncResult<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        submit_one(&self.core, f, &args, Some(limit)).map(AsyncResult)
    }

    /// Map options: chunks of `chunksize` items per task (Python's `chunksize`; the
    /// default is Python's: `len / (4 × processes)`, rounded up).
    pub fn with_chunksize(&self, chunksize: usize) -> Mapper<'_> {
        self.mapper().with_chunksize(chunksize)
    }

    /// Map options: draw a progress bar on standard error while the map runs (when
    /// standard error is a terminal; feature `progress`, on by default).
    pub fn with_progress_bar(&self) -> Mapper<'_> {
        self.mapper().with_progress_bar()
    }

    fn mapper(&self) -> Mapper<'_> {
        Mapper {
            core: &self.core,
            chunksize: None,
            progress: false,
        }
    }

    /// `f(item)` for every item, results in input order (Python's `map`, S10). The first
    /// failed item (in input order) is the error, and ends the map: items not started
    /// yet are skipped.
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        self.mapper().map(f, items)
    }

    /// As [`map`](Self::map), returning at once (Python's `map_async`).
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<MapResult<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        self.mapper().map_async(f, items)
    }

    /// The results of `f(item)` in input order, as they come (Python's `imap`); a
    /// failed item is an `Err` and the iteration goes on.
    pub fn imap<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<IMap<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        self.mapper().imap(f, items)
    }

    /// The results of `f(item)` in the order they complete (Python's
    /// `imap_unordered`).
    pub fn imap_unordered<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<IMap<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        self.mapper().imap_unordered(f, items)
    }

    /// `f(a, b)` for every `(a, b)`, in input order (Python's `starmap`).
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Arg,
        B: Arg,
        R: Ret,
    {
        self.mapper().starmap(f, items)
    }

    /// `f(a, b, c)` for every `(a, b, c)`, in input order (Python's `starmap`).
    pub fn starmap3<A, B, C, R>(
        &self,
        f: fn(A, B, C) -> R,
        items: impl IntoIterator<Item = (A, B, C)>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Arg,
        B: Arg,
        C: Arg,
        R: Ret,
    {
        self.mapper().starmap3(f, items)
    }

    /// Takes no more tasks; the workers exit once the submitted ones are done (Python's
    /// `close`).
    pub fn close(&self) {
        self.core.close(false);
    }

    /// Waits for every submitted task and for the workers to exit (Python's `join`;
    /// closes the pool first if needed).
    pub fn join(&self) {
        self.core.join();
    }

    /// Kills the workers at once; tasks not done fail with [`TaskError::Terminated`]
    /// (Python's `terminate`). Returns once every worker is reaped.
    pub fn terminate(&self) {
        self.core.terminate();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.core.terminate();
    }
}

/// The result of [`Pool::apply_async`] (Python's `AsyncResult`).
#[derive(Debug)]
pub struct AsyncResult<R>(Future<R>);

impl<R> AsyncResult<R> {
    /// Waits for the task and takes its value (Python's `get()`); a second call gives
    /// [`WaitError::Taken`].
    pub fn get(&self) -> Result<R, WaitError> {
        self.0.result()
    }

    /// As [`get`](Self::get), waiting at most `timeout`: [`WaitError::Timeout`]
    /// if the task is not done by then (Python's `TimeoutError`, S43). The task goes on;
    /// `get` again later.
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, WaitError> {
        self.0.result_timeout(timeout)
    }

    /// Whether the task is done (Python's `ready()`).
    pub fn ready(&self) -> bool {
        self.0.done()
    }

    /// Whether it succeeded; `None` while not done (Python's `successful()`).
    pub fn successful(&self) -> Option<bool> {
        self.0.successful()
    }

    /// Waits until the task is done (Python's `wait()`).
    pub fn wait(&self) {
        self.0.wait();
    }

    /// Waits at most `timeout`; whether it is done (Python's `wait(timeout)`).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.0.wait_timeout(timeout)
    }

    /// The [`Future`] underneath (cancel, callbacks, `.await`).
    pub fn into_future(self) -> Future<R> {
        self.0
    }
}

/// Options of one map call: chunk size and progress bar. Made by
/// [`Pool::with_chunksize`] and [`Pool::with_progress_bar`].
#[derive(Clone, Copy)]
#[must_use]
pub struct Mapper<'p> {
    core: &'p Core,
    chunksize: Option<usize>,
    progress: bool,
}

impl std::fmt::Debug for Mapper<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapper")
            .field("chunksize", &self.chunksize)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

enum Order {
    Input,
    Completion,
}

impl<'p> Mapper<'p> {
    pub(crate) fn new(core: &'p Core) -> Mapper<'p> {
        Mapper {
            core,
            chunksize: None,
            progress: false,
        }
    }

    /// Items per task (at least 1).
    pub fn with_chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = Some(chunksize.max(1));
        self
    }

    /// A progress bar on standard error.
    pub fn with_progress_bar(mut self) -> Self {
        self.progress = true;
        self
    }

    fn chunksize(&self, len: usize) -> usize {
        self.chunksize.unwrap_or_else(|| {
            // Python's rule.
            let per = self.core.processes() * 4;
            (len / per + usize::from(len % per != 0)).max(1)
        })
    }

    fn run<T: Serialize, R>(
        &self,
        entry: FnAddr,
        target: FnAddr,
        items: Vec<T>,
        order: Order,
    ) -> Result<IMap<R>, PoolError>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let total = items.len();
        let chunksize = self.chunksize(total);
        let state = Arc::new(MapState::<R>::new(total, self.progress));
        let mut tasks = Vec::with_capacity(total.div_ceil(chunksize));
        for (k, chunk) in items.chunks(chunksize).enumerate() {
            let bytes = codec::encode(chunk)?;
            let sink: Arc<dyn Sink> = Arc::new(ChunkSink {
                map: Arc::clone(&state),
                start: k * chunksize,
                len: chunk.len(),
            });
            tasks.push((self.core.next_id(), entry, target, bytes, sink));
        }
        drop(items);
        self.core.submit(tasks, None).map_err(PoolError::refused)?;
        Ok(IMap {
            state,
            next: 0,
            order,
        })
    }

    fn submit_map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        order: Order,
    ) -> Result<IMap<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        let entry: worker::TaskEntry = worker::entry_chunk::<A, R>;
        let items: Vec<A> = items.into_iter().collect();
        self.run(FnAddr::of(entry), FnAddr::of(f), items, order)
    }

    /// [`Pool::map`] with these options.
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        self.submit_map(f, items, Order::Input)?.collect_all()
    }

    /// [`Pool::map_async`] with these options.
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<MapResult<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        Ok(MapResult {
            map: Mutex::new(Some(self.submit_map(f, items, Order::Input)?)),
        })
    }

    /// [`Pool::imap`] with these options.
    pub fn imap<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<IMap<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        self.submit_map(f, items, Order::Input)
    }

    /// [`Pool::imap_unordered`] with these options.
    pub fn imap_unordered<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<IMap<R>, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        self.submit_map(f, items, Order::Completion)
    }

    /// [`Pool::starmap`] with these options.
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Arg,
        B: Arg,
        R: Ret,
    {
        let entry: worker::TaskEntry = worker::entry_star2::<A, B, R>;
        let items: Vec<(A, B)> = items.into_iter().collect();
        self.run(FnAddr::of(entry), FnAddr::of(f), items, Order::Input)?
            .collect_all()
    }

    /// [`Pool::starmap3`] with these options.
    pub fn starmap3<A, B, C, R>(
        &self,
        f: fn(A, B, C) -> R,
        items: impl IntoIterator<Item = (A, B, C)>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Arg,
        B: Arg,
        C: Arg,
        R: Ret,
    {
        let entry: worker::TaskEntry = worker::entry_star3::<A, B, C, R>;
        let items: Vec<(A, B, C)> = items.into_iter().collect();
        self.run(FnAddr::of(entry), FnAddr::of(f), items, Order::Input)?
            .collect_all()
    }
}

/// The results of one map, filled by the collector.
struct MapState<R> {
    slots: Mutex<MapSlots<R>>,
    ready: Condvar,
    total: usize,
    completed: AtomicUsize,
    /// The iterator was dropped: chunks not started are skipped.
    abandoned: AtomicBool,
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
}

struct MapSlots<R> {
    results: Vec<Option<Result<R, TaskError>>>,
    /// Indices in the order they completed.
    arrivals: VecDeque<usize>,
}

impl<R> MapState<R> {
    fn new(total: usize, progress: bool) -> MapState<R> {
        let _ = progress;
        MapState {
            slots: Mutex::new(MapSlots {
                results: (0..total).map(|_| None).collect(),
                arrivals: VecDeque::new(),
            }),
            ready: Condvar::new(),
            total,
            completed: AtomicUsize::new(0),
            abandoned: AtomicBool::new(false),
            #[cfg(feature = "progress")]
            bar: progress.then(|| {
                let bar = indicatif::ProgressBar::new(total as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} tasks [{elapsed_precise} < {eta_precise}]",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            }),
        }
    }

    fn store(&self, start: usize, values: impl Iterator<Item = Result<R, TaskError>>) {
        let mut n = 0;
        let done = {
            let mut slots = self.slots.lock();
            for (i, v) in (start..).zip(values) {
                if i < self.total && slots.results[i].is_none() {
                    slots.results[i] = Some(v);
                    slots.arrivals.push_back(i);
                    n += 1;
                }
            }
            // Counted under the lock: a waiter that read the count under it and found
            // nothing new is asleep on the condition variable before this notifies.
            self.completed.fetch_add(n, Ordering::AcqRel) + n
        };
        self.ready.notify_all();
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
            if done >= self.total {
                bar.finish();
            }
        }
        let _ = done;
    }
}

/// One chunk of a map.
struct ChunkSink<R> {
    map: Arc<MapState<R>>,
    start: usize,
    len: usize,
}

impl<R: DeserializeOwned + Send> Sink for ChunkSink<R> {
    fn start(&self) -> bool {
        !self.map.abandoned.load(Ordering::Relaxed)
    }
    fn complete(&self, items: Vec<Outcome>) {
        let error = match <[Outcome; 1]>::try_from(items) {
            Ok([Outcome::Returned(blob)]) => match codec::decode::<Vec<worker::Item<R>>>(&blob) {
                Ok(items) if items.len() == self.len => {
                    self.map.store(
                        self.start,
                        items.into_iter().map(|item| match item {
                            worker::Item::Ok(v) => Ok(v),
                            worker::Item::Panicked(message) => Err(TaskError::Panicked { message }),
                            worker::Item::Codec(message) => Err(TaskError::serialization(message)),
                        }),
                    );
                    return;
                }
                Ok(_) => TaskError::serialization("the worker sent a malformed reply"),
                Err(e) => TaskError::codec("cannot decode the task's result", e),
            },
            // The whole chunk failed as one (its arguments did not decode, or its
            // result could not be sent): every item reports why.
            Ok([other]) => match decode_outcome::<()>(other) {
                Err(e) => e,
                Ok(()) => TaskError::serialization("the worker sent a malformed reply"),
            },
            Err(_) => TaskError::serialization("the worker sent a malformed reply"),
        };
        self.fail(error);
    }
    fn fail(&self, error: TaskError) {
        self.map
            .store(self.start, (0..self.len).map(|_| Err(error.clone())));
    }
    fn cancel(&self) {
        self.fail(TaskError::Cancelled);
    }
}

/// The results of [`Pool::imap`] (input order) or [`Pool::imap_unordered`] (completion
/// order): an iterator of `Result`s that waits as needed. Dropping it skips the chunks
/// not yet started.
pub struct IMap<R> {
    state: Arc<MapState<R>>,
    next: usize,
    order: Order,
}

impl<R> std::fmt::Debug for IMap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("completed", &self.completed())
            .field("total", &self.total())
            .finish_non_exhaustive()
    }
}

impl<R> IMap<R> {
    /// A map of `total` items that all failed with `error` (a broken pool, arguments
    /// that do not encode).
    pub(crate) fn failed(total: usize, error: TaskError) -> IMap<R> {
        let state = Arc::new(MapState::new(total, false));
        state.store(0, (0..total).map(|_| Err(error.clone())));
        IMap {
            state,
            next: 0,
            order: Order::Input,
        }
    }

    /// How many items are done (for a progress display of your own).
    pub fn completed(&self) -> usize {
        self.state.completed.load(Ordering::Acquire)
    }

    /// How many items the map has.
    pub fn total(&self) -> usize {
        self.state.total
    }

    /// The next result, waiting at most `timeout` (Python's `next(timeout)`): `None` at
    /// the end, `Some(Err(WaitError::Timeout))` if nothing came in time.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, WaitError>> {
        match self.next_until(Instant::now().checked_add(timeout)) {
            Ok(next) => next.map(|r| r.map_err(WaitError::Task)),
            Err(Elapsed) => Some(Err(WaitError::Timeout)),
        }
    }

    /// Waits for the next result until `deadline` (`None`: for ever).
    fn next_until(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Result<R, TaskError>>, Elapsed> {
        if self.next >= self.state.total {
            return Ok(None);
        }
        let mut slots = self.state.slots.lock();
        loop {
            let index = match self.order {
                Order::Input => Some(self.next).filter(|&i| slots.results[i].is_some()),
                Order::Completion => slots.arrivals.pop_front(),
            };
            if let Some(i) = index {
                self.next += 1;
                return Ok(slots.results[i].take());
            }
            // Results usually arrive microseconds apart: spin and yield a little before
            // sleeping, which would cost a wake-up system call per result.
            let seen = self.state.completed.load(Ordering::Acquire);
            let backoff = crossbeam_utils::Backoff::new();
            parking_lot::MutexGuard::unlocked(&mut slots, || {
                while self.state.completed.load(Ordering::Acquire) == seen
                    && !backoff.is_completed()
                {
                    backoff.snooze();
                }
            });
            if self.state.completed.load(Ordering::Acquire) != seen {
                continue;
            }
            match deadline {
                None => self.state.ready.wait(&mut slots),
                Some(d) => {
                    if self.state.ready.wait_until(&mut slots, d).timed_out() {
                        return Err(Elapsed);
                    }
                }
            }
        }
    }

    /// Every result in input order, or the first failure (in input order). A failure
    /// ends the map: chunks no worker has started are skipped (dropping the iterator
    /// does that), the ones running finish in the background.
    fn collect_all(mut self) -> Result<Vec<R>, PoolError> {
        let mut out = Vec::with_capacity(self.state.total);
        while let Ok(Some(r)) = self.next_until(None) {
            match r {
                Ok(v) => out.push(v),
                Err(error) => {
                    return Err(PoolError::Item {
                        index: out.len(),
                        error,
                    });
                }
            }
        }
        Ok(out)
    }
}

impl<R> Iterator for IMap<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Without a deadline the wait cannot elapse.
        self.next_until(None).unwrap_or(None)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.state.total - self.next;
        (left, Some(left))
    }
}

impl<R> ExactSizeIterator for IMap<R> {}

impl<R> Drop for IMap<R> {
    fn drop(&mut self) {
        self.state.abandoned.store(true, Ordering::Relaxed);
    }
}

/// The result of [`Pool::map_async`] (Python's `MapResult`).
pub struct MapResult<R> {
    map: Mutex<Option<IMap<R>>>,
}

impl<R> std::fmt::Debug for MapResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> MapResult<R> {
    fn with<T>(&self, f: impl FnOnce(&IMap<R>) -> T, taken: T) -> T {
        match self.map.lock().as_ref() {
            Some(m) => f(m),
            None => taken,
        }
    }

    /// Whether every item is done.
    pub fn ready(&self) -> bool {
        self.with(|m| m.completed() >= m.total(), true)
    }

    /// How many items are done.
    pub fn completed(&self) -> usize {
        self.with(IMap::completed, 0)
    }

    /// Waits at most `timeout` for every item; whether they are all done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let guard = self.map.lock();
        let Some(m) = guard.as_ref() else { return true };
        let mut slots = m.state.slots.lock();
        while m.completed() < m.total() {
            match deadline {
                None => m.state.ready.wait(&mut slots),
                Some(d) => {
                    if m.state.ready.wait_until(&mut slots, d).timed_out() {
                        return m.completed() >= m.total();
                    }
                }
            }
        }
        true
    }

    /// Waits for every item.
    pub fn wait(&self) {
        self.wait_timeout(Duration::MAX);
    }

    /// Waits and takes the results in input order, or the first failure (Python's
    /// `get()`); later calls give [`PoolError::Taken`].
    pub fn get(&self) -> Result<Vec<R>, PoolError> {
        match self.map.lock().take() {
            Some(m) => m.collect_all(),
            None => Err(PoolError::Taken),
        }
    }

    /// As [`get`](Self::get), waiting at most `timeout`:
    /// [`PoolError::Timeout`] if not all are done by then (the map goes on).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>, PoolError> {
        if self.wait_timeout(timeout) {
            self.get()
        } else {
            Err(PoolError::Timeout)
        }
    }
}
