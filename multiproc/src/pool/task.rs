//! Single tasks: [`Pool::apply`], [`Pool::apply_async`], [`Pool::schedule`] and the
//! [`AsyncResult`] they give; [`submit_one`] also serves
//! [`ProcessPoolExecutor::submit`](crate::executor::ProcessPoolExecutor::submit).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::core::{self, Core, Sink, decode_outcome, stop_task};
use super::{Arg, Pool, PoolError, Ret, worker};
use crate::codec;
use crate::future::{ErrorKind, Future, HasInner, Inner, RemoteError, TaskError, WaitError};
use crate::process::child::Outcome;
use crate::sys::entry::FnAddr;

/// A task's state and its pool, behind a [`Future`] or an [`AsyncResult`].
pub(crate) struct TaskCell<R> {
    inner: Inner<R>,
    pool: std::sync::Weak<core::Engine>,
    id: u64,
    /// Reads the worker's reply: [`decode_outcome`], or [`decode_try`] for `try_*`.
    decode: fn(Outcome) -> Result<R, TaskError>,
}

/// The reply of a [`worker::entry_try`] task: `Result<R, RemoteError>`.
fn decode_try<R: DeserializeOwned>(outcome: Outcome) -> Result<R, TaskError> {
    decode_outcome::<Result<R, RemoteError>>(outcome)?.map_err(|e| TaskError::Failed(Box::new(e)))
}

impl<R: Send> HasInner<R> for TaskCell<R> {
    fn inner(&self) -> &Inner<R> {
        &self.inner
    }

    fn stop(&self) -> bool {
        stop_task(&self.pool, self.id) && self.inner.cancel_running()
    }
}

impl<R: DeserializeOwned + Send> Sink for TaskCell<R> {
    fn start(&self) -> bool {
        self.inner.start()
    }
    fn complete(&self, _: Range<usize>, outcomes: Vec<Outcome>) {
        let outcome = match outcomes.into_iter().next() {
            Some(o) => (self.decode)(o),
            None => Err(TaskError::serialization("the worker sent no result")),
        };
        self.inner.finish(outcome);
    }
    fn fail(&self, _: Range<usize>, error: TaskError) {
        self.inner.finish(Err(error));
    }
    fn cancel(&self, _: Range<usize>) {
        // No worker holds it (it is pending, perhaps again after its worker died):
        // cancel it even if it was marked running when first sent.
        self.inner.cancel_running();
    }
    fn wanted(&self) -> bool {
        !self.inner.is_cancelled()
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
    let entry: worker::TaskEntry = worker::entry_one::<A, R>;
    submit_entry(
        core,
        entry,
        FnAddr::of(target),
        decode_outcome::<R>,
        args,
        timeout,
    )
}

/// As [`submit_one`] for `target` returning `Result<R, E>`: an `Err` is
/// [`TaskError::Failed`].
pub(crate) fn submit_try<A, R, E>(
    core: &Core,
    target: fn(A) -> Result<R, E>,
    args: &A,
    timeout: Option<Duration>,
) -> Result<Future<R>, PoolError>
where
    A: Arg,
    R: Ret,
    E: ErrorKind + 'static,
{
    let entry: worker::TaskEntry = worker::entry_try::<A, R, E>;
    submit_entry(
        core,
        entry,
        FnAddr::of(target),
        decode_try::<R>,
        args,
        timeout,
    )
}

fn submit_entry<A: Arg, R: Ret>(
    core: &Core,
    entry: worker::TaskEntry,
    target: FnAddr,
    decode: fn(Outcome) -> Result<R, TaskError>,
    args: &A,
    timeout: Option<Duration>,
) -> Result<Future<R>, PoolError> {
    let id = core.next_id();
    let cell = Arc::new(TaskCell::<R> {
        inner: Inner::new(),
        pool: core.weak(),
        id,
        decode,
    });
    let bytes = codec::encode(args)?;
    let sink: Arc<dyn Sink> = cell.clone();
    core.submit([(id, FnAddr::of(entry), target, bytes, sink)], timeout)
        .map_err(PoolError::refused)?;
    Ok(Future::from_cell(cell))
}

impl Pool {
    /// Runs `f(args)` in a worker and waits for its result (Python's `apply`).
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R, PoolError>
    where
        A: Arg,
        R: Ret,
    {
        Ok(self.apply_async(f, args)?.get()?)
    }

    /// As [`apply`](Self::apply) for `f` returning a `Result`: its `Err` is
    /// [`TaskError::Failed`] with the error's kind ([`ErrorKind`]), message and the
    /// worker's traceback (Python re-raises the worker's exception, its
    /// `_RemoteTraceback` as the cause), not an `Ok(Err(..))`.
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::pool::{Pool, PoolError, TaskError, WaitError};
    ///
    /// fn parse(s: String) -> Result<u32, std::num::ParseIntError> { s.parse() }
    ///
    /// let pool = Pool::new(1)?;
    /// assert_eq!(pool.try_apply(parse, "7".into())?, 7);
    /// let Err(PoolError::Task(e)) = pool.try_apply(parse, "x".into()) else { panic!() };
    /// assert_eq!(e.kind(), "ParseIntError");
    /// assert!(e.traceback().unwrap().contains("returned by the task in process"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_apply<A, R, E>(&self, f: fn(A) -> Result<R, E>, args: A) -> Result<R, PoolError>
    where
        A: Arg,
        R: Ret,
        E: ErrorKind + 'static,
    {
        Ok(self.try_apply_async(f, args)?.get()?)
    }

    /// As [`apply_async`](Self::apply_async) for `f` returning a `Result`: an `Err`
    /// is [`TaskError::Failed`] (see [`try_apply`](Self::try_apply)).
    pub fn try_apply_async<A, R, E>(
        &self,
        f: fn(A) -> Result<R, E>,
        args: A,
    ) -> Result<AsyncResult<R>, PoolError>
    where
        A: Arg,
        R: Ret,
        E: ErrorKind + 'static,
    {
        submit_try(&self.core, f, &args, None).map(AsyncResult)
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
    /// result is [`TaskError::TimedOut`]. A `limit` of zero (the task would be stopped
    /// as it starts) is [`PoolError::Invalid`].
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// use multiproc::pool::{Pool, TaskError, WaitError};
    ///
    /// fn sleepy(d: Duration) { std::thread::sleep(d) }
    ///
    /// let pool = Pool::new(1)?;
    /// let limit = Duration::from_millis(100);
    /// let r = pool.schedule(sleepy, Duration::from_secs(3600), limit)?;
    /// assert_eq!(r.get().unwrap_err(), WaitError::Task(TaskError::TimedOut { limit }));
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
        super::check_limit(limit, "limit must be longer than zero")?;
        submit_one(&self.core, f, &args, Some(limit)).map(AsyncResult)
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
