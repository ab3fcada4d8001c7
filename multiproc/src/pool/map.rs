//! The map family: [`Pool::map`], [`Pool::map_async`], [`Pool::imap`],
//! [`Pool::imap_unordered`], [`Pool::starmap`], [`Pool::starmap3`], the [`Mapper`] that
//! carries their options, and the [`IMap`] and [`MapResult`] they return.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::core::{Core, Sink, decode_outcome};
use super::{Arg, Pool, PoolError, Ret, worker};
use crate::codec;
use crate::future::{TaskError, WaitError};
use crate::process::child::Outcome;
use crate::sys::entry::FnAddr;

/// Declares the six map methods once: each on [`Mapper`] (with its options), and on
/// [`Pool`] forwarding to the default `Mapper`. Per method: its Python doc, its
/// generics, the function's type, the item type, what it returns, the worker entry
/// that runs a chunk, the result order, and how the [`IMap`] becomes the return value.
macro_rules! map_methods {
    ($(
        $(#[$doc:meta])*
        fn $name:ident<$($g:ident: $bound:ident),*>(f: $f:ty, items: $item:ty) -> $ret:ty {
            entry: $entry:expr,
            order: $order:expr,
            finish: $finish:expr $(,)?
        }
    )*) => {
        impl Pool {
            $(
                $(#[$doc])*
                pub fn $name<$($g: $bound),*>(
                    &self,
                    f: $f,
                    items: impl IntoIterator<Item = $item>,
                ) -> Result<$ret, PoolError> {
                    self.mapper().$name(f, items)
                }
            )*
        }

        impl Mapper<'_> {
            $(
                #[doc = concat!("[`Pool::", stringify!($name), "`] with these options.")]
                pub fn $name<$($g: $bound),*>(
                    &self,
                    f: $f,
                    items: impl IntoIterator<Item = $item>,
                ) -> Result<$ret, PoolError> {
                    let entry: worker::TaskEntry = $entry;
                    let items: Vec<$item> = items.into_iter().collect();
                    let map = self.run(FnAddr::of(entry), FnAddr::of(f), items, $order)?;
                    #[allow(clippy::redundant_closure_call)]
                    ($finish)(map)
                }
            )*
        }
    };
}

map_methods! {
    /// `f(item)` for every item, results in input order (Python's `map`, S10). The first
    /// failed item (in input order) is the error, and ends the map: items not started
    /// yet are skipped.
    fn map<A: Arg, R: Ret>(f: fn(A) -> R, items: A) -> Vec<R> {
        entry: worker::entry_chunk::<A, R>,
        order: Order::Input,
        finish: IMap::collect_all,
    }

    /// As [`map`](Self::map), returning at once (Python's `map_async`).
    fn map_async<A: Arg, R: Ret>(f: fn(A) -> R, items: A) -> MapResult<R> {
        entry: worker::entry_chunk::<A, R>,
        order: Order::Input,
        finish: |map| Ok(MapResult { map: Mutex::new(Some(map)) }),
    }

    /// The results of `f(item)` in input order, as they come (Python's `imap`); a
    /// failed item is an `Err` and the iteration goes on.
    fn imap<A: Arg, R: Ret>(f: fn(A) -> R, items: A) -> IMap<R> {
        entry: worker::entry_chunk::<A, R>,
        order: Order::Input,
        finish: Ok,
    }

    /// The results of `f(item)` in the order they complete (Python's
    /// `imap_unordered`).
    fn imap_unordered<A: Arg, R: Ret>(f: fn(A) -> R, items: A) -> IMap<R> {
        entry: worker::entry_chunk::<A, R>,
        order: Order::Completion,
        finish: Ok,
    }

    /// `f(a, b)` for every `(a, b)`, in input order (Python's `starmap`).
    fn starmap<A: Arg, B: Arg, R: Ret>(f: fn(A, B) -> R, items: (A, B)) -> Vec<R> {
        entry: worker::entry_star2::<A, B, R>,
        order: Order::Input,
        finish: IMap::collect_all,
    }

    /// `f(a, b, c)` for every `(a, b, c)`, in input order (Python's `starmap`).
    fn starmap3<A: Arg, B: Arg, C: Arg, R: Ret>(f: fn(A, B, C) -> R, items: (A, B, C)) -> Vec<R> {
        entry: worker::entry_star3::<A, B, C, R>,
        order: Order::Input,
        finish: IMap::collect_all,
    }
}

impl Pool {
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

    /// Items per task. 0 is refused by the map call ([`PoolError::Invalid`], Python's
    /// `ValueError`), not turned into 1.
    pub fn with_chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = Some(chunksize);
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
        if self.chunksize == Some(0) {
            return Err(PoolError::Invalid("chunksize must be at least 1"));
        }
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
            Ok([Outcome::Returned(blob)]) => match worker::decode_items::<R>(&blob) {
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

/// A wait with a deadline that passed (internal: each caller says it in its own error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Elapsed;
