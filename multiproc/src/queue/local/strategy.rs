//! The one implementation of the in-process queues, generic over where the items sit
//! (CPython's `_init`/`_put`/`_get`/`_qsize` overridden by `LifoQueue` and
//! `PriorityQueue`), and the two queues beside [`Queue`](super::Queue).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{GetError, PutError, ShutDown};
use crate::queue::TooManyTaskDone;

/// Where a queue's items sit: the order of the queue.
pub(super) trait Container<T> {
    fn push(&mut self, item: T);
    fn pop(&mut self) -> Option<T>;
    fn len(&self) -> usize;
    /// Drops every item; returns how many.
    fn clear(&mut self) -> usize {
        let n = self.len();
        while self.pop().is_some() {}
        n
    }
}

/// First in, first out: [`Queue`](super::Queue).
pub(super) struct Fifo<T>(VecDeque<T>);

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo(VecDeque::new())
    }
}

impl<T> Container<T> for Fifo<T> {
    fn push(&mut self, item: T) {
        self.0.push_back(item);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop_front()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Last in, first out: [`LifoQueue`].
pub(super) struct Lifo<T>(Vec<T>);

impl<T> Container<T> for Lifo<T> {
    fn push(&mut self, item: T) {
        self.0.push(item);
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Smallest first (Python's `heapq`): [`PriorityQueue`].
pub(super) struct Priority<T>(BinaryHeap<Reverse<T>>);

impl<T: Ord> Container<T> for Priority<T> {
    fn push(&mut self, item: T) {
        self.0.push(Reverse(item));
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop().map(|Reverse(item)| item)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// How long a `get` or `put` may wait.
#[derive(Clone, Copy)]
pub(super) enum Wait {
    No,
    Forever,
    Until(Instant),
}

impl Wait {
    /// Waits at most `timeout`; a timeout too large for an `Instant` waits forever.
    pub(super) fn at_most(timeout: Duration) -> Self {
        Instant::now()
            .checked_add(timeout)
            .map_or(Self::Forever, Self::Until)
    }

    pub(super) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::No => Some(Instant::now()),
            Wait::Forever => None,
            Wait::Until(deadline) => Some(deadline),
        }
    }
}

/// `shutdown` has not been called.
const OPEN: u8 = 0;
/// `shutdown(false)`: puts fail; gets drain what is left, then fail.
const SHUT_DOWN: u8 = 1;
/// `shutdown(true)`: the items left were dropped; puts and gets fail.
const SHUT_DOWN_IMMEDIATELY: u8 = 2;

/// What the mutex of a queue guards.
struct State<C> {
    items: C,
    /// Items put and not yet marked done.
    unfinished: usize,
    /// [`OPEN`], [`SHUT_DOWN`] or [`SHUT_DOWN_IMMEDIATELY`]; only ever increases.
    shutdown: u8,
}

/// A queue of `T`s kept in a `C`: everything the handles of one queue share.
pub(super) struct Core<T, C> {
    state: Mutex<State<C>>,
    /// As given at creation: 0 for unbounded.
    maxsize: usize,
    not_empty: Condvar,
    not_full: Condvar,
    all_tasks_done: Condvar,
    _items: std::marker::PhantomData<fn(T) -> T>,
}

impl<T, C: Container<T>> Core<T, C> {
    pub(super) fn new(maxsize: usize, items: C) -> Self {
        Core {
            state: Mutex::new(State {
                items,
                unfinished: 0,
                shutdown: OPEN,
            }),
            maxsize,
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_tasks_done: Condvar::new(),
            _items: std::marker::PhantomData,
        }
    }

    /// The one implementation of `put`, `put_timeout` and `try_put` (CPython's `put`).
    pub(super) fn put(&self, item: T, wait: Wait) -> Result<(), PutError<T>> {
        let mut state = self.state.lock();
        loop {
            if state.shutdown != OPEN {
                return Err(PutError::ShutDown(item));
            }
            if self.maxsize == 0 || state.items.len() < self.maxsize {
                break;
            }
            match wait {
                Wait::No => return Err(PutError::Full(item)),
                Wait::Forever => self.not_full.wait(&mut state),
                Wait::Until(deadline) => {
                    if self.not_full.wait_until(&mut state, deadline).timed_out()
                        && state.shutdown == OPEN
                        && state.items.len() >= self.maxsize
                    {
                        return Err(PutError::Timeout(item));
                    }
                }
            }
        }
        state.items.push(item);
        state.unfinished += 1;
        self.not_empty.notify_one();
        Ok(())
    }

    /// The one implementation of `get`, `get_timeout` and `try_get` (CPython's `get`).
    pub(super) fn get(&self, wait: Wait) -> Result<T, GetError> {
        let mut state = self.state.lock();
        loop {
            if state.shutdown == SHUT_DOWN_IMMEDIATELY {
                return Err(GetError::ShutDown);
            }
            if let Some(item) = state.items.pop() {
                self.not_full.notify_one();
                return Ok(item);
            }
            if state.shutdown != OPEN {
                return Err(GetError::ShutDown);
            }
            match wait {
                Wait::No => return Err(GetError::Empty),
                Wait::Forever => self.not_empty.wait(&mut state),
                Wait::Until(deadline) => {
                    if self.not_empty.wait_until(&mut state, deadline).timed_out()
                        && state.shutdown == OPEN
                        && state.items.len() == 0
                    {
                        return Err(GetError::Timeout);
                    }
                }
            }
        }
    }

    pub(super) fn qsize(&self) -> usize {
        self.state.lock().items.len()
    }

    pub(super) fn full(&self) -> bool {
        self.maxsize != 0 && self.qsize() >= self.maxsize
    }

    pub(super) fn maxsize(&self) -> usize {
        self.maxsize
    }

    pub(super) fn task_done(&self) -> Result<(), TooManyTaskDone> {
        let mut state = self.state.lock();
        state.unfinished = state.unfinished.checked_sub(1).ok_or(TooManyTaskDone)?;
        if state.unfinished == 0 {
            self.all_tasks_done.notify_all();
        }
        Ok(())
    }

    /// Waits until no task is unfinished, at most until `deadline`: `false` if some
    /// still are.
    pub(super) fn join(&self, deadline: Option<Instant>) -> bool {
        let mut state = self.state.lock();
        while state.unfinished != 0 {
            match deadline {
                None => self.all_tasks_done.wait(&mut state),
                Some(deadline) => {
                    if self
                        .all_tasks_done
                        .wait_until(&mut state, deadline)
                        .timed_out()
                    {
                        return state.unfinished == 0;
                    }
                }
            }
        }
        true
    }

    pub(super) fn unfinished_tasks(&self) -> usize {
        self.state.lock().unfinished
    }

    /// CPython 3.13's `shutdown(immediate)`.
    pub(super) fn shutdown(&self, immediate: bool) {
        let mut state = self.state.lock();
        let new = if immediate {
            SHUT_DOWN_IMMEDIATELY
        } else {
            SHUT_DOWN
        };
        state.shutdown = state.shutdown.max(new);
        if immediate {
            let dropped = state.items.clear();
            state.unfinished = state.unfinished.saturating_sub(dropped);
            if state.unfinished == 0 {
                self.all_tasks_done.notify_all();
            }
        }
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    pub(super) fn is_shutdown(&self) -> bool {
        self.state.lock().shutdown != OPEN
    }
}

/// The methods of a queue type over a [`Core`]: Python's `queue` API, as on
/// [`Queue`](super::Queue) (whose docs give an example of each).
macro_rules! queue_methods {
    () => {
        /// Python's `put(item)`: adds `item`, waiting as long as the queue is full.
        ///
        /// # Errors
        /// [`ShutDown`] with the item if the queue is shut down, before or while waiting.
        pub fn put(&self, item: T) -> Result<(), ShutDown<T>> {
            self.core
                .put(item, Wait::Forever)
                .map_err(|err| ShutDown(err.into_inner()))
        }

        /// Python's `put(item, timeout=t)`: [`PutError::Timeout`] with the item if there
        /// was no room for the whole `timeout`.
        pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
            self.core.put(item, Wait::at_most(timeout))
        }

        /// Python's `put_nowait(item)`: [`PutError::Full`] with the item if there is no
        /// room now.
        pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
            self.core.put(item, Wait::No)
        }

        /// Python's `get()`: removes and returns the next item, waiting as long as the
        /// queue is empty.
        ///
        /// # Errors
        /// [`ShutDown`] once the queue is shut down and has nothing left.
        pub fn get(&self) -> Result<T, ShutDown> {
            self.core.get(Wait::Forever).map_err(|_| ShutDown(()))
        }

        /// Python's `get(timeout=t)`: [`GetError::Timeout`] if no item came for the
        /// whole `timeout`.
        pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
            self.core.get(Wait::at_most(timeout))
        }

        /// Python's `get_nowait()`: [`GetError::Empty`] if there is no item now.
        pub fn try_get(&self) -> Result<T, GetError> {
            self.core.get(Wait::No)
        }

        /// Python's `qsize()`: how many items are queued now.
        pub fn qsize(&self) -> usize {
            self.core.qsize()
        }

        /// Python's `empty()`: `true` if no item is queued now.
        pub fn empty(&self) -> bool {
            self.core.qsize() == 0
        }

        /// Python's `full()`: `true` if the queue is bounded and holds `maxsize` items.
        pub fn full(&self) -> bool {
            self.core.full()
        }

        /// Python's `maxsize`: the bound given at creation; 0 for unbounded.
        pub fn maxsize(&self) -> usize {
            self.core.maxsize()
        }

        /// Python's `task_done()`: marks one item taken by a `get` as processed.
        ///
        /// # Errors
        /// [`TooManyTaskDone`] if every item put is already marked done.
        pub fn task_done(&self) -> Result<(), TooManyTaskDone> {
            self.core.task_done()
        }

        /// Python's `join()`: waits until every item put was marked done.
        pub fn join(&self) {
            self.core.join(None);
        }

        /// [`join`](Self::join), waiting at most `timeout`: `true` if every item put was
        /// marked done in time.
        pub fn join_timeout(&self, timeout: Duration) -> bool {
            self.core.join(Wait::at_most(timeout).deadline())
        }

        /// Python's `unfinished_tasks`: items put and not yet marked done.
        pub fn unfinished_tasks(&self) -> usize {
            self.core.unfinished_tasks()
        }

        /// Python 3.13's `shutdown(immediate)`, as [`Queue::shutdown`](super::Queue::shutdown):
        /// puts fail from now on, gets drain what is left (nothing, with `immediate`:
        /// the items are dropped and count as done), every waiter wakes.
        pub fn shutdown(&self, immediate: bool) {
            self.core.shutdown(immediate);
        }

        /// Python 3.13's `is_shutdown`.
        pub fn is_shutdown(&self) -> bool {
            self.core.is_shutdown()
        }
    };
}

/// Python's `queue.LifoQueue`: [`Queue`](super::Queue)'s methods, errors and shutdown,
/// but the last item put is the first one got (a stack).
///
/// ```
/// use multiproc::queue::local::{GetError, LifoQueue};
///
/// let q = LifoQueue::new(0); // queue.LifoQueue()
/// for i in 1..=3 {
///     q.put(i).unwrap();
/// }
/// assert_eq!(q.get(), Ok(3));
/// assert_eq!(q.get(), Ok(2));
/// q.task_done().unwrap();
/// q.shutdown(false);
/// assert_eq!(q.get(), Ok(1)); // drained after a shutdown
/// assert_eq!(q.try_get(), Err(GetError::ShutDown));
/// ```
pub struct LifoQueue<T> {
    core: Arc<Core<T, Lifo<T>>>,
}

impl<T> LifoQueue<T> {
    /// Python's `queue.LifoQueue(maxsize)`: 0 is unbounded.
    pub fn new(maxsize: usize) -> Self {
        LifoQueue {
            core: Arc::new(Core::new(maxsize, Lifo(Vec::new()))),
        }
    }

    queue_methods!();
}

/// Python's `queue.PriorityQueue`: [`Queue`](super::Queue)'s methods, errors and
/// shutdown, but a `get` takes the smallest item (Python's `heapq` order; put
/// `(priority, data)` tuples, or wrap in [`Reverse`] for largest first).
///
/// ```
/// use multiproc::queue::local::PriorityQueue;
///
/// let q = PriorityQueue::new(0); // queue.PriorityQueue()
/// q.put((2, "code")).unwrap();
/// q.put((1, "eat")).unwrap();
/// q.put((3, "sleep")).unwrap();
/// assert_eq!(q.get(), Ok((1, "eat")));
/// assert_eq!(q.get(), Ok((2, "code")));
/// q.shutdown(true); // immediate: the rest is dropped
/// assert_eq!(q.qsize(), 0);
/// ```
pub struct PriorityQueue<T> {
    core: Arc<Core<T, Priority<T>>>,
}

impl<T: Ord> PriorityQueue<T> {
    /// Python's `queue.PriorityQueue(maxsize)`: 0 is unbounded.
    pub fn new(maxsize: usize) -> Self {
        PriorityQueue {
            core: Arc::new(Core::new(maxsize, Priority(BinaryHeap::new()))),
        }
    }

    queue_methods!();
}

macro_rules! handle_impls {
    ($name:ident, $($bound:path)?) => {
        impl<T> Clone for $name<T> {
            /// Another handle to the same queue.
            fn clone(&self) -> Self {
                $name {
                    core: Arc::clone(&self.core),
                }
            }
        }

        impl<T $(: $bound)?> Default for $name<T> {
            /// An unbounded queue.
            fn default() -> Self {
                Self::new(0)
            }
        }

        impl<T $(: $bound)?> fmt::Debug for $name<T> {
            /// The queue's counters, not its items.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("maxsize", &self.maxsize())
                    .field("qsize", &self.qsize())
                    .field("unfinished_tasks", &self.unfinished_tasks())
                    .field("is_shutdown", &self.is_shutdown())
                    .finish()
            }
        }
    };
}

handle_impls!(LifoQueue,);
handle_impls!(PriorityQueue, Ord);
