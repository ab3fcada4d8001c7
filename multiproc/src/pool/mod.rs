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
//! pool.join()?;
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
//!   Pool hangs for ever here; its executor breaks the whole pool.) In a map with
//!   chunks of many items, only the item it was running fails: the items of its chunk
//!   that finished keep their results, and the ones after it still run.
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
//! | `pool.close()`, `pool.join()`, `pool.terminate()`, `with Pool() as p:` | same names (`join` on an open pool is [`PoolError::StillRunning`]), `Drop` terminates |
//! | `pool.starmap_async(f, xs)` | [`Pool::starmap_async`] → [`MapResult`] |
//! | `map_async(…, callback=cb, error_callback=ecb)` | [`MapResult::callbacks`] |
//! | (none) cancel a running `map_async`; `join` with a timeout | [`MapResult::cancel`]; [`Pool::join_timeout`] |
//! | pebble's `schedule(f, args, timeout=…)` | [`Pool::schedule`] |
//! | billiard's `max_memory_per_child` | [`PoolBuilder::max_memory_per_child`] |
//! | tqdm / mpire's `progress_bar=True` | [`Pool::with_progress_bar`], [`IMap::completed`] |

mod core;
mod map;
mod task;
pub(crate) mod worker;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::future::{ErrorKind, Future, RemoteError, TaskError, WaitError};
#[cfg(feature = "cluster")]
pub(crate) use core::Sink;
pub(crate) use core::{Core, Refused};
pub use map::{IMap, Indexed, MapResult, Mapper};
pub use task::AsyncResult;
pub(crate) use task::{submit_one, submit_try};

use crate::codec::CodecError;
use crate::process::{StartError, StartMethod};
use crate::sys::entry::FnAddr;
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
    /// The pool was shut down by `close`, `terminate` or `Drop`: it takes no new
    /// tasks (Python's `ValueError: Pool not running`; the executors' `ShutDown`).
    #[doc(alias = "Closed")]
    #[error("the pool is not running (closed or terminated)")]
    ShutDown,
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
    /// [`Pool::join`] on a pool that was neither closed nor terminated (Python's
    /// `ValueError: Pool is still running`).
    #[error("the pool is still running: close or terminate it before join")]
    StillRunning,
    /// A `_timeout` wait ran out (the map goes on and can be waited for again;
    /// [`Pool::join_timeout`]: the pool goes on winding down).
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

impl PoolError {
    fn refused(r: Refused) -> PoolError {
        match r {
            Refused::Closed => PoolError::ShutDown,
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
    idle_timeout: Option<Duration>,
    prefix: &'static str,
    on_demand: bool,
    fail_fast: bool,
}

/// What [`PoolBuilder::build`] says of each setting out of range, in the words of the
/// face that was called (the executor names Python's executor parameters).
pub(crate) struct SettingWords {
    pub(crate) processes: &'static str,
    pub(crate) max_tasks: &'static str,
}

/// The pool's words.
const POOL_WORDS: SettingWords = SettingWords {
    processes: "processes must be at least 1",
    max_tasks: "maxtasksperchild must be at least 1",
};

/// A time limit of zero would stop every task the moment it starts: refused.
pub(crate) fn check_limit(limit: Duration, what: &'static str) -> Result<(), PoolError> {
    if limit.is_zero() {
        return Err(PoolError::Invalid(what));
    }
    Ok(())
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("method", &self.method)
            .field("max_tasks", &self.max_tasks)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
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
            idle_timeout: None,
            prefix: "PoolWorker",
            on_demand: false,
            fail_fast: false,
        }
    }
}

impl PoolBuilder {
    /// Python's defaults: as many workers as cores, the global start method.
    pub fn new() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// How many worker processes (Python's `processes`). 0 is refused by
    /// [`build`](Self::build) ([`PoolError::Invalid`], Python's `ValueError`), not
    /// turned into 1.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n;
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
            let init = Some((target, worker::InitArgs::new(args.clone())));
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
    /// `maxtasksperchild`; a chunk of a map is one task). 0 is refused by
    /// [`build`](Self::build) ([`PoolError::Invalid`], Python's `ValueError`).
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.max_tasks = Some(n);
        self
    }

    /// A worker whose resident memory exceeds `bytes` after a task exits and a fresh one
    /// replaces it (billiard's `max_memory_per_child`, loky's memory-leak protection):
    /// a task that leaks cannot grow a worker without bound. The task itself completes
    /// normally. 0 (every worker would be replaced after every task) is refused by
    /// [`build`](Self::build).
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// The default time limit of every task: a task over it is stopped and reports
    /// [`TaskError::TimedOut`]. A chunk of a map counts as one task; when it runs over,
    /// the item it was running fails, the items before it keep their results and the
    /// items after it run again as a task of their own, under the same limit. Zero
    /// (every task would be stopped) is refused by [`build`](Self::build).
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Fail-fast mode (off by default): a worker process that dies while the pool did
    /// not stop it (a crash, an abort, a signal, an exit in a task or in its arguments'
    /// or result's (de)serialisation) breaks the pool, as a dead worker breaks
    /// CPython's `ProcessPoolExecutor` (`BrokenProcessPool`) and loky's: every task
    /// pending or running fails with [`TaskError::BrokenPool`] naming the worker's pid
    /// and exit status, the other workers are killed, and later submits fail with
    /// [`PoolError::Broken`]. Off, only the task the worker ran fails
    /// ([`TaskError::WorkerDied`]) and a new worker takes over. Workers the pool stops
    /// itself (time limits, `max_tasks`, cancelling a running task) never break it,
    /// nor does one that exits with status 0 (it retired by `max_memory_per_child`; a
    /// task that calls `exit(0)` then fails alone, [`TaskError::WorkerDied`]).
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::pool::{Pool, PoolError, TaskError, WaitError};
    ///
    /// fn exit_3(_: ()) -> u32 { std::process::exit(3) }
    /// fn double(x: u32) -> u32 { x * 2 }
    ///
    /// let pool = Pool::builder().processes(1).fail_fast(true).build()?;
    /// let dead = pool.apply_async(exit_3, ())?;
    /// let pending = pool.apply_async(double, 2)?;
    /// let Err(WaitError::Task(e @ TaskError::BrokenPool { .. })) = dead.get() else { panic!() };
    /// let TaskError::BrokenPool { status, .. } = &e else { unreachable!() };
    /// assert_eq!(status.code(), Some(3));
    /// assert_eq!(pending.get(), Err(WaitError::Task(e.clone())));
    /// assert!(matches!(pool.apply(double, 3), Err(PoolError::Broken { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fail_fast(mut self, on: bool) -> Self {
        self.fail_fast = on;
        self
    }

    pub(crate) fn prefix(mut self, prefix: &'static str) -> Self {
        self.prefix = prefix;
        self
    }

    /// Workers start when tasks need them, not all at `build` (the executor's way).
    pub(crate) fn on_demand(mut self) -> Self {
        self.on_demand = true;
        self
    }

    /// Workers idle this long exit (with [`on_demand`](Self::on_demand)).
    pub(crate) fn idle_timeout(mut self, limit: Duration) -> Self {
        self.idle_timeout = Some(limit);
        self
    }

    /// Checks the settings, naming a bad one as `words` say, and starts the engine.
    pub(crate) fn start_core(self, words: &SettingWords) -> Result<Core, PoolError> {
        if self.processes == 0 {
            return Err(PoolError::Invalid(words.processes));
        }
        if self.max_tasks == Some(0) {
            return Err(PoolError::Invalid(words.max_tasks));
        }
        if self.max_memory == Some(0) {
            return Err(PoolError::Invalid(
                "max_memory_per_child must be at least 1 byte",
            ));
        }
        if let Some(limit) = self.timeout {
            check_limit(limit, "task_timeout must be longer than zero")?;
        }
        if let Some(limit) = self.idle_timeout {
            check_limit(limit, "idle_worker_timeout must be longer than zero")?;
        }
        Ok(Core::start(Config {
            processes: self.processes,
            method: self.method,
            spawner: self.spawner,
            max_tasks: self.max_tasks,
            max_memory: self.max_memory,
            timeout: self.timeout,
            prefix: self.prefix,
            on_demand: self.on_demand,
            fail_fast: self.fail_fast,
            idle_timeout: self.idle_timeout,
        })?)
    }

    /// Starts the workers, all of them at once (as Python's `Pool`). A setting out of
    /// range is [`PoolError::Invalid`] naming it.
    pub fn build(self) -> Result<Pool, PoolError> {
        Ok(Pool {
            core: self.start_core(&POOL_WORDS)?,
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

    /// Takes no more tasks; the workers exit once the submitted ones are done (Python's
    /// `close`).
    pub fn close(&self) {
        self.core.close(false);
    }

    /// Waits for every submitted task and for the workers to exit (Python's `join`),
    /// after [`close`](Self::close) or [`terminate`](Self::terminate). On a pool still
    /// open it waits for nothing and returns [`PoolError::StillRunning`] (Python's
    /// `ValueError: Pool is still running`): the pool goes on taking tasks.
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::pool::{Pool, PoolError};
    ///
    /// let pool = Pool::new(1)?;
    /// assert!(matches!(pool.join(), Err(PoolError::StillRunning)));
    /// pool.close();
    /// pool.join()?;
    /// # Ok::<(), PoolError>(())
    /// ```
    pub fn join(&self) -> Result<(), PoolError> {
        if !self.core.is_closed() {
            return Err(PoolError::StillRunning);
        }
        self.core.join();
        Ok(())
    }

    /// As [`join`](Self::join), waiting at most `timeout` (Python's `Pool.join` takes
    /// none; its `Process.join(timeout)` does): [`PoolError::Timeout`] if tasks still
    /// run or workers are still exiting by then. They go on; join again later, or
    /// [`terminate`](Self::terminate). A pool still open is
    /// [`PoolError::StillRunning`], as for `join`.
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// use multiproc::pool::{Pool, PoolError};
    ///
    /// fn sleepy(d: Duration) { std::thread::sleep(d) }
    ///
    /// let pool = Pool::new(1)?;
    /// let r = pool.apply_async(sleepy, Duration::from_secs(3600))?;
    /// pool.close();
    /// assert!(matches!(pool.join_timeout(Duration::from_millis(50)), Err(PoolError::Timeout)));
    /// pool.terminate();
    /// pool.join_timeout(Duration::from_secs(60))?;
    /// # drop(r);
    /// # Ok::<(), PoolError>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), PoolError> {
        if !self.core.is_closed() {
            return Err(PoolError::StillRunning);
        }
        if self.core.join_timeout(timeout) {
            Ok(())
        } else {
            Err(PoolError::Timeout)
        }
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
