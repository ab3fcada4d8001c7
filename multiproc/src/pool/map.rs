//! The map family: [`Pool::map`], [`Pool::map_async`], [`Pool::imap`],
//! [`Pool::imap_unordered`], [`Pool::starmap`], [`Pool::starmap3`], the [`Mapper`] that
//! carries their options, and the [`IMap`] and [`MapResult`] they return.
//!
//! * **The input is read as the results are taken.** A map reads its input in the
//!   caller's thread: the call submits the first chunks, and the [`IMap`] tops the
//!   window up whenever it is asked for a result and whenever it wakes on one, so that
//!   at most [`IMap`]'s read-ahead of items is submitted and not yet yielded. An endless
//!   input streams in bounded memory; the input needs neither `Send` nor `'static`.
//!   [`Pool::map_async`] alone reads its whole input at the call, as Python's does.
//! * **An input that panics** ends the map: the results before it, then
//!   [`TaskError::Input`] with its message, then the end. The panic is caught where the
//!   input is advanced; it never unwinds into the caller.

use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::core::{Core, Engine, Refused, Sink, decode_outcome};
use super::{Arg, Pool, PoolError, Ret, worker};
use crate::codec::{self, CodecError};
use crate::future::{TaskError, WaitError};
use crate::process::child::Outcome;
use crate::sys::entry::FnAddr;

/// Declares the six map methods once: each on [`Mapper`] (with its options), and on
/// [`Pool`] forwarding to the default `Mapper`. Per method: its Python doc, its
/// generics, the function's type, the item type, what it returns, the worker entry
/// that runs a chunk, the result order, how the input is read (`stream`: as results
/// are taken; `collect`: all at the call), and how the [`IMap`] becomes the return
/// value.
macro_rules! map_methods {
    ($(
        $(#[$doc:meta])*
        fn $name:ident<$lt:lifetime, $($g:ident: $bound:ident),*>(f: $f:ty, items: $item:ty) -> $ret:ty {
            entry: $entry:expr,
            order: $order:expr,
            first: $first:expr,
            finish: $finish:expr $(,)?
        }
    )*) => {
        impl Pool {
            $(
                $(#[$doc])*
                pub fn $name<$lt, $($g: $bound),*>(
                    &self,
                    f: $f,
                    items: impl IntoIterator<Item = $item, IntoIter: $lt>,
                ) -> Result<$ret, PoolError> {
                    self.mapper().$name(f, items)
                }
            )*
        }

        impl Mapper<'_> {
            $(
                #[doc = concat!("[`Pool::", stringify!($name), "`] with these options.")]
                pub fn $name<$lt, $($g: $bound),*>(
                    &self,
                    f: $f,
                    items: impl IntoIterator<Item = $item, IntoIter: $lt>,
                ) -> Result<$ret, PoolError> {
                    let entry: worker::TaskEntry = $entry;
                    let map = self.read(FnAddr::of(entry), FnAddr::of(f), items.into_iter(), $order, $first)?;
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
    /// yet are skipped, and the input is read no further. The input is read as the
    /// results come in (see [`Pool::imap`]); an input that panics at item `k` is
    /// [`PoolError::Item`] `{ index: k, error: TaskError::Input { .. } }`.
    fn map<'a, A: Arg, R: Ret>(f: fn(A) -> R, items: A) -> Vec<R> {
        entry: worker::entry_chunk::<A, R>,
        order: Order::Input,
        first: First::Window,
        finish: IMap::collect_all,
    }

    /// As [`map`](Self::map), returning at once (Python's `map_async`). It reads its
    /// whole input at the call, as Python's does (it makes a list of it): an endless
    /// input never returns; use [`imap`](Self::imap) for those.
    fn map_async<'a, A: Arg, R: Ret>(f: fn(A) -> R, items: A) -> MapResult<R> {
        entry: worker::entry_chunk::<A, R>,
        order: Order::Input,
        first: First::All,
        finish: MapResult::new,
    }

    /// The results of `f(item)` in input order, as they come (Python's `imap`); a
    /// failed item is an `Err` and the iteration goes on.
    ///
    /// The input is read lazily, in the caller's thread, as results are taken: at most
    /// a bounded read-ahead of items (enough chunks to keep every worker busy) is
    /// submitted and not yet yielded, so an endless input streams in bounded memory,
    /// even while one slow item holds the others back. Dropping the iterator skips the
    /// chunks not started and reads the input no further. An input that panics ends
    /// the map with [`TaskError::Input`] after the results before it. A pool that is
    /// closed, terminated or dropped while the input is still being read takes no more
    /// of it: the results of what was submitted come, then one [`TaskError::Cancelled`]
    /// for the items never read (the pool's [`TaskError::Broken`] if it broke), then
    /// the end. (Python's `imap` reads its whole input on a thread of the pool whatever
    /// the consumer does, holding every result not yet taken, and its `close` lets it.)
    /// One item per task by default, as in Python; the call returns after two tasks
    /// per worker. Since the input is read in the caller's thread, an input that waits
    /// for this map's own results (a feedback loop) waits for ever: feed it from
    /// another thread.
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::pool::Pool;
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let pool = Pool::new(2)?;
    /// // An endless input: take what is needed; dropping the iterator stops the rest.
    /// let first: Vec<u64> = pool.imap(square, 0u64..)?.take(5).map(Result::unwrap).collect();
    /// assert_eq!(first, [0, 1, 4, 9, 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn imap<'a, A: Arg, R: Ret>(f: fn(A) -> R, items: A) -> IMap<'a, R> {
        entry: worker::entry_chunk::<A, R>,
        order: Order::Input,
        first: First::Workers,
        finish: Ok,
    }

    /// The results of `f(item)` in the order they complete (Python's
    /// `imap_unordered`); the input is read as for [`imap`](Self::imap).
    fn imap_unordered<'a, A: Arg, R: Ret>(f: fn(A) -> R, items: A) -> IMap<'a, R> {
        entry: worker::entry_chunk::<A, R>,
        order: Order::Completion,
        first: First::Workers,
        finish: Ok,
    }

    /// `f(a, b)` for every `(a, b)`, in input order (Python's `starmap`); the input is
    /// read as for [`map`](Self::map).
    fn starmap<'a, A: Arg, B: Arg, R: Ret>(f: fn(A, B) -> R, items: (A, B)) -> Vec<R> {
        entry: worker::entry_star2::<A, B, R>,
        order: Order::Input,
        first: First::Window,
        finish: IMap::collect_all,
    }

    /// As [`starmap`](Self::starmap), returning at once (Python's `starmap_async`); the
    /// input is read whole at the call, as for [`map_async`](Self::map_async).
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::pool::Pool;
    ///
    /// fn power(base: u64, exp: u32) -> u64 { base.pow(exp) }
    ///
    /// let pool = Pool::new(2)?;
    /// let r = pool.starmap_async(power, [(2, 3), (3, 2)])?;
    /// assert_eq!(r.get()?, [8, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn starmap_async<'a, A: Arg, B: Arg, R: Ret>(f: fn(A, B) -> R, items: (A, B)) -> MapResult<R> {
        entry: worker::entry_star2::<A, B, R>,
        order: Order::Input,
        first: First::All,
        finish: MapResult::new,
    }

    /// `f(a, b, c)` for every `(a, b, c)`, in input order (Python's `starmap`); the
    /// input is read as for [`map`](Self::map).
    fn starmap3<'a, A: Arg, B: Arg, C: Arg, R: Ret>(f: fn(A, B, C) -> R, items: (A, B, C)) -> Vec<R> {
        entry: worker::entry_star3::<A, B, C, R>,
        order: Order::Input,
        first: First::Window,
        finish: IMap::collect_all,
    }
}

impl Pool {
    /// Map options: chunks of `chunksize` items per task (Python's `chunksize`). The
    /// defaults are Python's: 1 for `imap` and `imap_unordered`; for `map` and
    /// `starmap`, `len / (4 × processes)` rounded up, where `len` is the
    /// input's length when its size hint is exact or it ends within the first
    /// read-ahead (else what that read-ahead saw), and at most 4096 items: a huge input
    /// is not cut into a few huge chunks that would be held in memory at once.
    pub fn with_chunksize(&self, chunksize: usize) -> Mapper<'_> {
        self.mapper().with_chunksize(chunksize)
    }

    /// Map options: draw a progress bar on standard error while the map runs (when
    /// standard error is a terminal; feature `progress`, on by default). Its length is
    /// the input's when its size hint is exact, else it is set once the input ends.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Input,
    Completion,
}

/// The largest default chunk: a chunk is held whole (its items, then its results), so
/// the default keeps it small enough for inputs of any length.
const MAX_DEFAULT_CHUNK: usize = 4096;
/// At most this many items are submitted and not yet yielded (unless that is fewer
/// than two chunks per worker, which keeps every worker busy).
const MAX_AHEAD_ITEMS: usize = 1 << 16;
/// At most this many tasks are submitted and not yet yielded. Far more than the
/// workers hold at once: when the caller falls behind for a moment (on a busy machine
/// it shares the cores with the workers), the results it has not taken count against
/// the read-ahead, and a small one would leave the workers idle.
const MAX_AHEAD_TASKS: usize = 16_384;

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

    /// What every map call checks before it reads its input: the chunk size, and
    /// Python's `_check_running` (a pool that takes no tasks refuses the call, even for
    /// an empty input).
    fn check(&self) -> Result<(), PoolError> {
        if self.chunksize == Some(0) {
            return Err(PoolError::Invalid("chunksize must be at least 1"));
        }
        self.core
            .submit(std::iter::empty(), None)
            .map_err(PoolError::refused)
    }

    /// Reads the input as `first` says: all of it at the call (`map_async`), or as the
    /// results are taken, after a first read-ahead (`map`) or two tasks per worker
    /// (`imap`).
    fn read<'a, T, R, I>(
        &self,
        entry: FnAddr,
        target: FnAddr,
        items: I,
        order: Order,
        first: First,
    ) -> Result<IMap<'a, R>, PoolError>
    where
        T: Serialize + 'a,
        R: DeserializeOwned + Send + 'static,
        I: Iterator<Item = T> + 'a,
    {
        self.check()?;
        let mut feeder = Feeder::<T, R, I>::new(items, None);
        if !matches!(first, First::All) {
            return self.start(entry, target, feeder, order, first);
        }
        // The whole input now: the map holds none of it.
        let mut all = Vec::new();
        while let Some(item) = feeder.pull() {
            all.push(item);
        }
        let panicked = match feeder.ended.take() {
            Some(Ending::Panicked(message)) => Some(message),
            _ => None,
        };
        self.start(
            entry,
            target,
            Feeder::<T, R, _>::new(all.into_iter(), panicked),
            order,
            First::All,
        )
    }

    fn start<'a, T, R, I>(
        &self,
        entry: FnAddr,
        target: FnAddr,
        mut feeder: Feeder<T, R, I>,
        order: Order,
        first: First,
    ) -> Result<IMap<'a, R>, PoolError>
    where
        T: Serialize + 'a,
        R: DeserializeOwned + Send + 'static,
        I: Iterator<Item = T> + 'a,
    {
        let processes = self.core.processes().max(1);
        let (lo, hi) = feeder.size_hint();
        let mut total = (hi == Some(lo)).then_some(lo);
        let chunksize = match self.chunksize {
            Some(c) => c,
            // Python's default for `imap` and `imap_unordered`: results one by one (a
            // worker that dies takes one item with it), nothing read ahead to learn the
            // input's length.
            None if matches!(first, First::Workers) => 1,
            None => {
                let len = match total {
                    Some(n) => n,
                    None => {
                        let seen =
                            feeder.probe((4 * processes * MAX_DEFAULT_CHUNK).min(MAX_AHEAD_ITEMS));
                        if feeder.input.is_none() {
                            total = Some(seen);
                        }
                        seen
                    }
                };
                // Python's rule, capped.
                len.div_ceil(4 * processes).clamp(1, MAX_DEFAULT_CHUNK)
            }
        };
        let ahead_chunks = (2 * processes).max(MAX_AHEAD_TASKS.min(MAX_AHEAD_ITEMS / chunksize));
        let state = Arc::new(MapState::<R>::new(order, self.progress, self.core.weak()));
        if let Some(n) = total {
            state.set_total(n);
        }
        feeder.dest = Some(Dest {
            engine: self.core.weak(),
            entry,
            target,
            state: Arc::clone(&state),
            chunksize,
        });
        let mut map = IMap {
            results: Results {
                state,
                next: 0,
                order,
                end: None,
                tail: None,
                last: None,
            },
            feeder: Some(Box::new(feeder)),
            submitted: 0,
            ahead: ahead_chunks.saturating_mul(chunksize),
            chunksize,
            batch: (ahead_chunks / 4).max(1),
        };
        map.feed(
            match first {
                First::All => usize::MAX,
                First::Window => ahead_chunks,
                First::Workers => (2 * processes).min(ahead_chunks),
            },
            true,
        )?;
        Ok(map)
    }
}

/// How much of the input a map call reads before it returns.
#[derive(Clone, Copy)]
enum First {
    /// All of it (`map_async`).
    All,
    /// The whole read-ahead (`map`: an argument that does not encode fails the call).
    Window,
    /// Two chunks per worker, of one item unless the caller chose (`imap`: the call
    /// returns at once, and the first results are not held back by reading the rest of
    /// the read-ahead from a slow input).
    Workers,
}

/// How the input ended.
enum Ending {
    /// It returned `None`.
    Exhausted,
    /// It panicked, with this message.
    Panicked(String),
    /// The pool took no more tasks.
    Refused(Refused),
    /// The pool is gone (dropped): as closed.
    Gone,
}

/// What one [`Feed::feed`] did.
struct Fed {
    /// Items submitted.
    items: usize,
    /// The input ended (the map submits nothing more).
    end: Option<Ending>,
    /// A chunk's arguments did not encode, at the call (the call fails with it).
    encode_error: Option<CodecError>,
}

/// The input of a map and what submits it, without the input's type.
trait Feed {
    /// Reads at most `chunks` chunks and submits them. With `strict`, a chunk that does
    /// not encode stops the feed and is returned, else its items fail.
    fn feed(&mut self, chunks: usize, strict: bool) -> Fed;
    /// The items still to come.
    fn size_hint(&self) -> (usize, Option<usize>);
}

/// Reads the input in the caller's thread, catching its panics, and submits chunks.
struct Feeder<T, R, I> {
    /// `None` once it ended.
    input: Option<I>,
    /// Read, not yet submitted (the read-ahead that chose the chunk size).
    head: VecDeque<T>,
    /// How the input ended, once it did.
    ended: Option<Ending>,
    /// Where its chunks go (set once the chunk size is chosen).
    dest: Option<Dest<R>>,
    /// The index of the next item.
    index: usize,
}

/// A map dropped before its input ended drops the input and the items read ahead:
/// user code whose panic is not the caller's either.
impl<T, R, I> Drop for Feeder<T, R, I> {
    fn drop(&mut self) {
        let head = std::mem::take(&mut self.head);
        let input = self.input.take();
        let _ = catch_unwind(AssertUnwindSafe(move || {
            drop(head);
            drop(input);
        }));
    }
}

/// Where a map's chunks go.
struct Dest<R> {
    engine: Weak<Engine>,
    entry: FnAddr,
    target: FnAddr,
    state: Arc<MapState<R>>,
    chunksize: usize,
}

impl<T, R, I: Iterator<Item = T>> Feeder<T, R, I> {
    /// A feeder of `input`, which panicked with `panicked` after its last item if that
    /// is set (`map_async` read it all already).
    fn new(input: I, panicked: Option<String>) -> Feeder<T, R, I> {
        Feeder {
            input: Some(input),
            head: VecDeque::new(),
            ended: panicked.map(Ending::Panicked),
            dest: None,
            index: 0,
        }
    }

    /// The next item, or `None` at the end (or after a panic, which `ended` records).
    fn pull(&mut self) -> Option<T> {
        match self.head.pop_front() {
            Some(item) => Some(item),
            None => self.read(),
        }
    }

    /// The input's next item (not the read-ahead's).
    fn read(&mut self) -> Option<T> {
        if self.ended.is_some() {
            // `map_async`'s collected input ends where its source panicked.
            if let Some(input) = self.input.as_mut() {
                if let Some(item) = input.next() {
                    return Some(item);
                }
            }
            self.close_input();
            return None;
        }
        let input = self.input.as_mut()?;
        match catch_unwind(AssertUnwindSafe(|| input.next())) {
            Ok(Some(item)) => Some(item),
            Ok(None) => {
                self.ended = Some(Ending::Exhausted);
                self.close_input();
                None
            }
            Err(payload) => {
                self.ended = Some(Ending::Panicked(codec::panic_message(payload.as_ref())));
                self.close_input();
                None
            }
        }
    }

    /// Drops the input (its `Drop` may panic too: that is not the caller's either).
    fn close_input(&mut self) {
        let input = self.input.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(input)));
    }

    /// Reads up to `n` items ahead; how many are held.
    fn probe(&mut self, n: usize) -> usize {
        while self.head.len() < n {
            match self.read() {
                Some(item) => self.head.push_back(item),
                None => break,
            }
        }
        self.head.len()
    }

    fn ended(&self) -> bool {
        self.input.is_none() && self.head.is_empty()
    }
}

impl<T, R, I> Feed for Feeder<T, R, I>
where
    T: Serialize,
    R: DeserializeOwned + Send + 'static,
    I: Iterator<Item = T>,
{
    fn feed(&mut self, chunks: usize, strict: bool) -> Fed {
        let Some((engine, state, entry, target, chunksize)) = self.dest.as_ref().and_then(|d| {
            Some((
                d.engine.upgrade()?,
                Arc::clone(&d.state),
                d.entry,
                d.target,
                d.chunksize,
            ))
        }) else {
            return Fed {
                items: 0,
                end: Some(Ending::Gone),
                encode_error: None,
            };
        };
        let first = self.index;
        let mut tasks = Vec::with_capacity(chunks.min(MAX_AHEAD_TASKS));
        // One buffer for every chunk: a chunk is encoded, then its items dropped.
        let mut chunk = Vec::with_capacity(chunksize.min(MAX_DEFAULT_CHUNK));
        let mut unencodable = Vec::new();
        let mut encode_error = None;
        for _ in 0..chunks {
            chunk.clear();
            while chunk.len() < chunksize {
                match self.pull() {
                    Some(item) => chunk.push(item),
                    None => break,
                }
            }
            if chunk.is_empty() {
                break;
            }
            let start = self.index;
            self.index += chunk.len();
            let sink = Arc::new(ChunkSink {
                map: Arc::clone(&state),
                start,
                len: chunk.len(),
            });
            match codec::encode(&chunk) {
                Ok(bytes) => {
                    let sink: Arc<dyn Sink> = sink;
                    tasks.push((engine.next_id(), entry, target, bytes, sink));
                }
                Err(e) if strict => {
                    encode_error = Some(e);
                    break;
                }
                Err(e) => {
                    unencodable.push((sink, TaskError::codec("cannot send the arguments", e)))
                }
            }
            if self.ended() {
                break;
            }
        }
        if encode_error.is_some() {
            // The call fails: nothing of it may run.
            tasks.clear();
        }
        if !tasks.is_empty() {
            if let Err(refused) = engine.submit(tasks, None) {
                self.index = first;
                return Fed {
                    items: 0,
                    end: Some(Ending::Refused(refused)),
                    encode_error,
                };
            }
        }
        for (sink, error) in unencodable {
            sink.fail(0..sink.len, error);
        }
        let end = if self.ended() {
            Some(self.ended.take().unwrap_or(Ending::Exhausted))
        } else {
            None
        };
        Fed {
            items: self.index - first,
            end,
            encode_error,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let held = self.head.len();
        match &self.input {
            None => (held, Some(held)),
            Some(input) => {
                let (lo, hi) = input.size_hint();
                (
                    lo.saturating_add(held),
                    hi.and_then(|h| h.checked_add(held)),
                )
            }
        }
    }
}

/// `total` before the input ended and its length is not known.
const UNKNOWN: usize = usize::MAX;

/// The results of one map, filled by the collector.
struct MapState<R> {
    slots: Mutex<MapSlots<R>>,
    ready: Condvar,
    /// Items done.
    completed: AtomicUsize,
    /// The input's length ([`UNKNOWN`] until known).
    total: AtomicUsize,
    /// The iterator was dropped: chunks not started are skipped.
    abandoned: AtomicBool,
    /// The pool, to stop the running chunks of a cancelled map.
    engine: Weak<Engine>,
    /// Run on the collector once every item is done ([`MapResult::callbacks`]).
    hook: Mutex<Option<Hook<R>>>,
    hooked: AtomicBool,
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
}

struct MapSlots<R> {
    /// Input order: the results of items `base..`, not yet taken (a window over the
    /// submitted and not yet yielded items, never longer than the read-ahead).
    window: VecDeque<Option<Result<R, TaskError>>>,
    base: usize,
    /// Completion order: the results as they arrived.
    arrivals: VecDeque<(usize, Result<R, TaskError>)>,
    order: Order,
}

impl<R> MapState<R> {
    fn new(order: Order, progress: bool, engine: Weak<Engine>) -> MapState<R> {
        let _ = progress;
        MapState {
            slots: Mutex::new(MapSlots {
                window: VecDeque::new(),
                base: 0,
                arrivals: VecDeque::new(),
                order,
            }),
            ready: Condvar::new(),
            completed: AtomicUsize::new(0),
            total: AtomicUsize::new(UNKNOWN),
            abandoned: AtomicBool::new(false),
            engine,
            hook: Mutex::new(None),
            hooked: AtomicBool::new(false),
            #[cfg(feature = "progress")]
            bar: progress.then(|| {
                let bar = indicatif::ProgressBar::no_length();
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} items [{elapsed_precise} < {eta_precise}]",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            }),
        }
    }

    /// The input's length is known: `total` items.
    fn set_total(&self, total: usize) {
        // Sequentially consistent with `store`'s count and look: of the two, at least
        // the later sees both, so the bar is finished.
        self.total.store(total, Ordering::SeqCst);
        self.fire();
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            if self.completed.load(Ordering::SeqCst) >= total {
                bar.finish();
            }
        }
    }

    fn store(&self, start: usize, values: impl Iterator<Item = Result<R, TaskError>>) {
        let mut n = 0;
        let done = {
            let mut slots = self.slots.lock();
            match slots.order {
                Order::Input => {
                    let MapSlots { window, base, .. } = &mut *slots;
                    for (i, v) in (start..).zip(values) {
                        let Some(at) = i.checked_sub(*base) else {
                            continue;
                        };
                        if window.len() <= at {
                            window.resize_with(at + 1, || None);
                        }
                        if window[at].is_none() {
                            window[at] = Some(v);
                            n += 1;
                        }
                    }
                }
                Order::Completion => {
                    for (i, v) in (start..).zip(values) {
                        slots.arrivals.push_back((i, v));
                        n += 1;
                    }
                }
            }
            // Counted under the lock: a waiter that read the count under it and found
            // nothing new is asleep on the condition variable before this notifies.
            self.completed.fetch_add(n, Ordering::SeqCst) + n
        };
        self.ready.notify_all();
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
            if done >= self.total.load(Ordering::SeqCst) {
                bar.finish();
            }
        }
        let _ = done;
        self.fire();
    }

    /// Runs the hook if one is set and every item is done (once: it is taken).
    fn fire(&self) {
        if !self.hooked.load(Ordering::SeqCst) {
            return;
        }
        let total = self.total.load(Ordering::SeqCst);
        if total == UNKNOWN || self.completed.load(Ordering::SeqCst) < total {
            return;
        }
        let Some(hook) = self.hook.lock().take() else {
            return;
        };
        let values: Vec<Option<Result<R, TaskError>>> = {
            let mut slots = self.slots.lock();
            slots.base += slots.window.len();
            slots.window.drain(..).collect()
        };
        hook(values);
    }
}

/// What [`MapResult::callbacks`] runs once every item is done: the results in input
/// order.
type Hook<R> = Box<dyn FnOnce(Vec<Option<Result<R, TaskError>>>) + Send>;

/// One chunk of a map: items `start..start + len` of the input. The engine delivers
/// each of its items once, in ranges (all at once, or the items a worker finished
/// before it died, the one it died in, then the rest).
struct ChunkSink<R> {
    map: Arc<MapState<R>>,
    start: usize,
    len: usize,
}

impl<R> ChunkSink<R> {
    /// Stores the results of the chunk's items from `first` on.
    fn store(&self, first: usize, values: impl Iterator<Item = Result<R, TaskError>>) {
        self.map.store(self.start + first, values);
    }
}

impl<R: DeserializeOwned + Send> Sink for ChunkSink<R> {
    fn start(&self) -> bool {
        !self.map.abandoned.load(Ordering::Relaxed)
    }
    fn complete(&self, items: Range<usize>, outcomes: Vec<Outcome>) {
        if outcomes.is_empty() {
            // Its worker skipped it, cancelled while queued ([`MapResult::cancel`]).
            return self.cancel(items);
        }
        let error = match <[Outcome; 1]>::try_from(outcomes) {
            Ok([Outcome::Returned(blob)]) => match worker::decode_items::<R>(&blob) {
                Ok(results) if results.len() == items.len() && items.end <= self.len => {
                    self.store(
                        items.start,
                        results.into_iter().map(|item| match item {
                            worker::Item::Ok(v) => Ok(v),
                            worker::Item::Panicked(message, traceback) => {
                                Err(TaskError::Panicked { message, traceback })
                            }
                            worker::Item::Codec(message) => Err(TaskError::serialization(message)),
                        }),
                    );
                    return;
                }
                Ok(_) => TaskError::serialization("the worker sent a malformed reply"),
                Err(e) => TaskError::codec("cannot decode the task's result", e),
            },
            // The items failed as one (their arguments did not decode, or their results
            // could not be sent): every item reports why.
            Ok([other]) => match decode_outcome::<()>(other) {
                Err(e) => e,
                Ok(()) => TaskError::serialization("the worker sent a malformed reply"),
            },
            Err(_) => TaskError::serialization("the worker sent a malformed reply"),
        };
        self.fail(items, error);
    }
    fn fail(&self, items: Range<usize>, error: TaskError) {
        let items = items.start.min(self.len)..items.end.min(self.len);
        self.store(items.start, items.map(|_| Err(error.clone())));
    }
    fn cancel(&self, items: Range<usize>) {
        self.fail(items, TaskError::Cancelled);
    }
    fn wanted(&self) -> bool {
        // The rest of a chunk whose worker died is not sent again for a map that was
        // dropped.
        self.start()
    }
    fn len(&self) -> usize {
        self.len
    }
    fn group(&self) -> usize {
        Arc::as_ptr(&self.map).cast::<()>() as usize
    }
}

/// The consumer's side of a map, without its input: what [`MapResult`] keeps.
struct Results<R> {
    state: Arc<MapState<R>>,
    /// Results yielded so far.
    next: usize,
    order: Order,
    /// How many items the input had, once it ended.
    end: Option<usize>,
    /// What comes after the last result: the input panicked, or the pool stopped
    /// taking its items.
    tail: Option<TaskError>,
    /// The input index of the result yielded last.
    last: Option<usize>,
}

impl<R> Results<R> {
    /// The next result, if one is there.
    fn try_next(&mut self) -> Option<Result<R, TaskError>> {
        let mut slots = self.state.slots.lock();
        let got = match self.order {
            Order::Input => {
                if slots.window.front().is_some_and(Option::is_some) {
                    let index = slots.base;
                    slots.base += 1;
                    slots.window.pop_front().flatten().map(|r| (index, r))
                } else {
                    None
                }
            }
            Order::Completion => slots.arrivals.pop_front(),
        };
        got.map(|(index, r)| {
            self.next += 1;
            self.last = Some(index);
            r
        })
    }

    /// Every result was yielded (the tail may remain).
    fn finished(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }

    /// Waits until more results than `seen` are done, or `deadline`.
    fn wait(&self, seen: usize, deadline: Option<Instant>) -> Result<(), Elapsed> {
        let completed = || self.state.completed.load(Ordering::Acquire);
        // Results usually arrive microseconds apart: spin and yield a little before
        // sleeping, which would cost a wake-up system call per result.
        let backoff = crossbeam_utils::Backoff::new();
        while completed() == seen && !backoff.is_completed() {
            backoff.snooze();
        }
        let mut slots = self.state.slots.lock();
        if completed() != seen {
            return Ok(());
        }
        match deadline {
            None => self.state.ready.wait(&mut slots),
            Some(d) => {
                if self.state.ready.wait_until(&mut slots, d).timed_out() {
                    return Err(Elapsed);
                }
            }
        }
        Ok(())
    }
}

/// The results of [`Pool::imap`] (input order) or [`Pool::imap_unordered`] (completion
/// order): an iterator of `Result`s that waits as needed, reading its input (borrowed
/// for `'a`) as it goes. Dropping it skips the chunks not yet started and reads the
/// input no further.
pub struct IMap<'a, R> {
    results: Results<R>,
    /// The input, until it ended.
    feeder: Option<Box<dyn Feed + 'a>>,
    /// Items submitted so far.
    submitted: usize,
    /// At most this many items are submitted and not yet yielded.
    ahead: usize,
    chunksize: usize,
    /// A top-up that needs not wait submits at least this many chunks at once.
    batch: usize,
}

impl<R> std::fmt::Debug for IMap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("completed", &self.completed())
            .field("total", &self.total())
            .finish_non_exhaustive()
    }
}

impl<'a, R> IMap<'a, R> {
    /// A map that failed as a whole with `error` (a broken pool): it yields the error
    /// once, then ends.
    pub(crate) fn failed(error: TaskError) -> IMap<'static, R> {
        let state = Arc::new(MapState::new(Order::Input, false, Weak::new()));
        state.set_total(0);
        IMap {
            results: Results {
                state,
                next: 0,
                order: Order::Input,
                end: Some(0),
                tail: Some(error),
                last: None,
            },
            feeder: None,
            submitted: 0,
            ahead: 0,
            chunksize: 1,
            batch: 1,
        }
    }

    /// How many items are done (for a progress display of your own).
    pub fn completed(&self) -> usize {
        self.results.state.completed.load(Ordering::Acquire)
    }

    /// How many items the input has: known from the start when its size hint is exact
    /// (the input's own claim), otherwise once it has ended; `None` before.
    pub fn total(&self) -> Option<usize> {
        let total = self.results.state.total.load(Ordering::Acquire);
        self.results.end.or((total != UNKNOWN).then_some(total))
    }

    /// The next result, waiting at most `timeout` (Python's `next(timeout)`): `None` at
    /// the end, `Some(Err(WaitError::Timeout))` if nothing came in time.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, WaitError>> {
        match self.next_until(Instant::now().checked_add(timeout)) {
            Ok(next) => next.map(|r| r.map_err(WaitError::Task)),
            Err(Elapsed) => Some(Err(WaitError::Timeout)),
        }
    }

    /// Reads and submits at most `chunks` chunks; `strict` at the call, where a pool
    /// that refuses them or arguments that do not encode fail the call.
    fn feed(&mut self, chunks: usize, strict: bool) -> Result<(), PoolError> {
        let Some(feeder) = self.feeder.as_mut() else {
            return Ok(());
        };
        let fed = feeder.feed(chunks, strict);
        self.submitted += fed.items;
        if let Some(e) = fed.encode_error {
            return Err(PoolError::Arguments(e));
        }
        let Some(end) = fed.end else {
            return Ok(());
        };
        self.feeder = None;
        self.results.end = Some(self.submitted);
        self.results.state.set_total(self.submitted);
        self.results.tail = match end {
            Ending::Exhausted => None,
            Ending::Panicked(message) => Some(TaskError::Input { message }),
            Ending::Refused(refused) if strict => return Err(PoolError::refused(refused)),
            Ending::Refused(Refused::Closed) => Some(TaskError::Cancelled),
            Ending::Refused(Refused::Broken(reason)) => Some(TaskError::Broken { reason }),
            Ending::Gone if strict => return Err(PoolError::ShutDown),
            Ending::Gone => Some(TaskError::Cancelled),
        };
        Ok(())
    }

    /// Submits more of the input if the read-ahead has room for a batch of chunks (a
    /// quarter of it: submitting chunk by chunk would cost a round through the engine's
    /// lock each). Whether it read anything. With less room, enough is in flight that
    /// a result will come to wake the caller.
    fn top_up(&mut self) -> bool {
        if self.feeder.is_none() {
            return false;
        }
        let held = self.submitted - self.results.next;
        let room = self.ahead.saturating_sub(held) / self.chunksize;
        if room < self.batch {
            return false;
        }
        // Not strict: the call has returned, failures are read from the results.
        let _ = self.feed(room, false);
        true
    }

    /// Waits for the next result until `deadline` (`None`: for ever).
    fn next_until(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Result<R, TaskError>>, Elapsed> {
        loop {
            // Read before looking: a result stored after this is seen by the wait.
            let seen = self.results.state.completed.load(Ordering::Acquire);
            if let Some(r) = self.results.try_next() {
                self.top_up();
                return Ok(Some(r));
            }
            if self.results.finished() {
                let tail = self.results.tail.take();
                if tail.is_some() {
                    // The items the input never gave, from where it ended.
                    self.results.last = self.results.end;
                }
                return Ok(tail.map(Err));
            }
            if self.top_up() {
                continue;
            }
            self.results.wait(seen, deadline)?;
        }
    }

    /// The results with the input index of each (what `imap_unordered`'s order hides):
    /// `(index, result)`. An ending error (the input panicked, the pool stopped taking
    /// items) comes with the index of the first item the input did not give.
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::pool::Pool;
    ///
    /// fn check(x: u32) -> u32 { assert!(x != 2, "two"); x }
    ///
    /// let pool = Pool::new(2)?;
    /// let failed: Vec<usize> = pool
    ///     .imap_unordered(check, 0..5)?
    ///     .indexed()
    ///     .filter_map(|(i, r)| r.is_err().then_some(i))
    ///     .collect();
    /// assert_eq!(failed, [2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn indexed(self) -> Indexed<'a, R> {
        Indexed { map: self }
    }

    /// Every result in input order, or the first failure (in input order). A failure
    /// ends the map: chunks no worker has started are skipped (dropping the iterator
    /// does that), the ones running finish in the background.
    fn collect_all(mut self) -> Result<Vec<R>, PoolError> {
        // The input's claimed length is not trusted with an allocation (an input may
        // claim 2^40 items and fail at the first).
        let mut out = Vec::with_capacity(self.total().unwrap_or(0).min(MAX_AHEAD_ITEMS));
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

/// [`IMap::indexed`]: each result with the input index of its item.
pub struct Indexed<'a, R> {
    map: IMap<'a, R>,
}

impl<R> std::fmt::Debug for Indexed<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Indexed").field(&self.map).finish()
    }
}

impl<R> Iterator for Indexed<'_, R> {
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        let r = self.map.next()?;
        Some((self.map.results.last.unwrap_or(0), r))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.map.size_hint()
    }
}

impl<R> Iterator for IMap<'_, R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Without a deadline the wait cannot elapse.
        self.next_until(None).unwrap_or(None)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let tail = usize::from(self.results.tail.is_some());
        let held = self.submitted - self.results.next;
        match &self.feeder {
            None => {
                let left = held + tail;
                (left, Some(left))
            }
            Some(feeder) => {
                let (lo, hi) = feeder.size_hint();
                // The input may still panic: one error item in place of the rest.
                let lo = if lo == 0 { held } else { held + 1 };
                (lo, hi.and_then(|h| h.checked_add(held + 1)))
            }
        }
    }
}

impl<R> Drop for Results<R> {
    fn drop(&mut self) {
        // A map with callbacks runs to its end, as Python's does, whoever holds it.
        if !self.state.hooked.load(Ordering::SeqCst) {
            self.state.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

/// The result of [`Pool::map_async`] and [`Pool::starmap_async`] (Python's
/// `MapResult`).
pub struct MapResult<R> {
    map: Mutex<Option<Results<R>>>,
    /// With [`callbacks`](MapResult::callbacks): the outcome, once they ran.
    done: Option<Arc<Done<R>>>,
}

impl<R> std::fmt::Debug for MapResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> Results<R> {
    fn completed(&self) -> usize {
        self.state.completed.load(Ordering::Acquire)
    }

    fn all_done(&self) -> bool {
        self.end.is_some_and(|end| self.completed() >= end)
    }
}

/// A callback and an error callback of [`MapResult::callbacks`].
type Callbacks<R> = (
    Box<dyn FnOnce(&[R]) + Send>,
    Box<dyn FnOnce(&PoolError) + Send>,
);

/// A map's outcome once its callbacks ran.
struct Done<R> {
    state: Mutex<DoneState<R>>,
    ready: Condvar,
}

enum DoneState<R> {
    /// Items still run; these callbacks wait for them.
    Running(Vec<Callbacks<R>>),
    /// Every item is done and the callbacks ran (or run now, outside the lock:
    /// `Ready(None)`).
    Ready(Option<Result<Vec<R>, PoolError>>),
    /// `get` took it.
    Taken,
}

fn run_callbacks<R>(callbacks: Vec<Callbacks<R>>, outcome: &Result<Vec<R>, PoolError>) {
    for (callback, error_callback) in callbacks {
        // A callback that panics must not take the pool's collector with it, nor
        // keep the other callbacks from running (Python prints it and goes on).
        let _ = catch_unwind(AssertUnwindSafe(|| match outcome {
            Ok(values) => callback(values),
            Err(e) => error_callback(e),
        }));
    }
}

impl<R> Done<R> {
    /// Every item is done: runs the callbacks waiting, then lets `get` have it.
    fn complete(&self, outcome: Result<Vec<R>, PoolError>) {
        let callbacks = match &mut *self.state.lock() {
            DoneState::Running(callbacks) => std::mem::take(callbacks),
            _ => return,
        };
        run_callbacks(callbacks, &outcome);
        *self.state.lock() = DoneState::Ready(Some(outcome));
        self.ready.notify_all();
    }

    /// Runs `callbacks` once every item is done: now, in this thread, if they are.
    fn add(&self, callbacks: Callbacks<R>) {
        let mut state = self.state.lock();
        loop {
            match &mut *state {
                DoneState::Running(waiting) => {
                    waiting.push(callbacks);
                    return;
                }
                DoneState::Ready(outcome) => {
                    let Some(outcome) = outcome.take() else {
                        // Another thread runs its callbacks with it now.
                        self.ready.wait(&mut state);
                        continue;
                    };
                    drop(state);
                    run_callbacks(vec![callbacks], &outcome);
                    *self.state.lock() = DoneState::Ready(Some(outcome));
                    self.ready.notify_all();
                    return;
                }
                DoneState::Taken => {
                    drop(state);
                    run_callbacks(vec![callbacks], &Err(PoolError::Taken));
                    return;
                }
            }
        }
    }

    /// Waits until the callbacks ran, or `deadline`; whether they did.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut state = self.state.lock();
        loop {
            if matches!(&*state, DoneState::Ready(Some(_)) | DoneState::Taken) {
                return true;
            }
            match deadline {
                None => self.ready.wait(&mut state),
                Some(d) => {
                    if self.ready.wait_until(&mut state, d).timed_out() {
                        return matches!(&*state, DoneState::Ready(Some(_)) | DoneState::Taken);
                    }
                }
            }
        }
    }

    fn take(&self) -> Result<Vec<R>, PoolError> {
        self.wait_until(None);
        match std::mem::replace(&mut *self.state.lock(), DoneState::Taken) {
            DoneState::Ready(Some(outcome)) => outcome,
            _ => Err(PoolError::Taken),
        }
    }
}

/// The outcome of a map from its results in input order (`get`'s), `tail` after them.
fn outcome_of<R>(
    values: Vec<Option<Result<R, TaskError>>>,
    tail: Option<TaskError>,
) -> Result<Vec<R>, PoolError> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match v {
            Some(Ok(v)) => out.push(v),
            Some(Err(error)) => {
                return Err(PoolError::Item {
                    index: out.len(),
                    error,
                });
            }
            None => {
                return Err(PoolError::Item {
                    index: out.len(),
                    error: TaskError::serialization("the map lost a result"),
                });
            }
        }
    }
    match tail {
        Some(error) => Err(PoolError::Item {
            index: out.len(),
            error,
        }),
        None => Ok(out),
    }
}

impl<R> MapResult<R> {
    fn new(map: IMap<'_, R>) -> Result<MapResult<R>, PoolError> {
        Ok(MapResult {
            map: Mutex::new(Some(map.results)),
            done: None,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Results<R>) -> T, taken: T) -> T {
        match self.map.lock().as_ref() {
            Some(m) => f(m),
            None => taken,
        }
    }

    /// Whether every item is done (with [`callbacks`](Self::callbacks): and they ran).
    pub fn ready(&self) -> bool {
        match &self.done {
            Some(done) => done.wait_until(Some(Instant::now())),
            None => self.with(Results::all_done, true),
        }
    }

    /// How many items are done.
    pub fn completed(&self) -> usize {
        self.with(Results::completed, 0)
    }

    /// Waits at most `timeout` for every item; whether they are all done (with
    /// [`callbacks`](Self::callbacks): and they ran).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        if let Some(done) = &self.done {
            return done.wait_until(deadline);
        }
        let guard = self.map.lock();
        let Some(m) = guard.as_ref() else { return true };
        let mut slots = m.state.slots.lock();
        while !m.all_done() {
            match deadline {
                None => m.state.ready.wait(&mut slots),
                Some(d) => {
                    if m.state.ready.wait_until(&mut slots, d).timed_out() {
                        return m.all_done();
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
    /// `get()`); later calls give [`PoolError::Taken`]. With
    /// [`callbacks`](Self::callbacks), they have run when it returns.
    pub fn get(&self) -> Result<Vec<R>, PoolError> {
        if let Some(done) = &self.done {
            return done.take();
        }
        match self.map.lock().take() {
            Some(results) => IMap {
                results,
                feeder: None,
                submitted: 0,
                ahead: 0,
                chunksize: 1,
                batch: 1,
            }
            .collect_all_submitted(),
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

    /// Stops the map: its chunks not started are skipped and those running are
    /// stopped, their workers killed and replaced (Python's `MapResult` cannot be
    /// cancelled; this is [`Future::cancel_running`](crate::future::Future::cancel_running)
    /// for a map). The items that finished keep their results; the others fail with
    /// [`TaskError::Cancelled`], so [`get`](Self::get) gives the first of them as
    /// [`PoolError::Item`]. Whether every running chunk could be stopped now (`false`
    /// only if a worker's list of skipped tasks was full: that chunk runs to its end).
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// use multiproc::pool::{Pool, PoolError, TaskError};
    ///
    /// fn sleepy(d: Duration) { std::thread::sleep(d) }
    ///
    /// let pool = Pool::new(2)?;
    /// let r = pool.map_async(sleepy, vec![Duration::from_secs(3600); 8])?;
    /// assert!(r.cancel());
    /// assert!(matches!(r.get(), Err(PoolError::Item { error: TaskError::Cancelled, .. })));
    /// pool.apply(sleepy, Duration::ZERO)?; // the killed workers were replaced
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self) -> bool {
        let guard = self.map.lock();
        let Some(m) = guard.as_ref() else {
            return true;
        };
        let state = Arc::clone(&m.state);
        drop(guard);
        // First: no chunk of it starts from now on, so none is sent while the
        // running ones are stopped.
        state.abandoned.store(true, Ordering::SeqCst);
        let group = Arc::as_ptr(&state).cast::<()>() as usize;
        super::core::stop_group(&state.engine, group)
    }
}

impl<R: Send + 'static> MapResult<R> {
    /// Runs `callback` with the results in input order once every item succeeded,
    /// or `error_callback` with the first failure (Python's `callback` and
    /// `error_callback` of `map_async` and `starmap_async`). They run on the pool's
    /// collector thread (Python's result handler), so they should be quick; they have
    /// run by the time [`get`](Self::get) returns. Called when the map is done already,
    /// they run now in the caller's thread; after `get` took the results,
    /// `error_callback` gets [`PoolError::Taken`]. A callback that panics is ignored.
    ///
    /// ```
    /// # multiproc::init();
    /// use std::sync::{Arc, Mutex};
    /// use multiproc::pool::Pool;
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let pool = Pool::new(2)?;
    /// let total = Arc::new(Mutex::new(0));
    /// let t = Arc::clone(&total);
    /// let r = pool
    ///     .map_async(square, 1..=3)?
    ///     .callbacks(move |v| *t.lock().unwrap() = v.iter().sum(), |e| panic!("{e}"));
    /// assert_eq!(r.get()?, [1, 4, 9]);
    /// assert_eq!(*total.lock().unwrap(), 14);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn callbacks(
        mut self,
        callback: impl FnOnce(&[R]) + Send + 'static,
        error_callback: impl FnOnce(&PoolError) + Send + 'static,
    ) -> MapResult<R> {
        let pair: Callbacks<R> = (Box::new(callback), Box::new(error_callback));
        if let Some(done) = &self.done {
            done.add(pair);
            return self;
        }
        let done = Arc::new(Done {
            state: Mutex::new(DoneState::Running(vec![pair])),
            ready: Condvar::new(),
        });
        self.done = Some(Arc::clone(&done));
        let guard = self.map.lock();
        let Some(m) = guard.as_ref() else {
            drop(guard);
            done.complete(Err(PoolError::Taken));
            return self;
        };
        let tail = m.tail.clone();
        let state = Arc::clone(&m.state);
        drop(guard);
        *state.hook.lock() = Some(Box::new(move |values| {
            done.complete(outcome_of(values, tail));
        }));
        state.hooked.store(true, Ordering::SeqCst);
        // Every item may be done already: then nothing else fires it.
        state.fire();
        self
    }
}

impl<R> IMap<'static, R> {
    /// [`collect_all`](IMap::collect_all) of a map whose input was all submitted.
    fn collect_all_submitted(mut self) -> Result<Vec<R>, PoolError> {
        self.submitted = self.results.end.unwrap_or(0);
        self.collect_all()
    }
}

/// A wait with a deadline that passed (internal: each caller says it in its own error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Elapsed;
