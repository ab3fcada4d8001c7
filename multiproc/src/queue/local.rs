//! Python's `queue.Queue` for the threads of one process (S30).
//!
//! [`Queue`] is a FIFO for the threads of one process, bounded or not, with Python's
//! `task_done()`/`join()` accounting and Python 3.13's `shutdown()`; [`LifoQueue`] and
//! [`PriorityQueue`] are the same queue with another order. The queues between
//! processes ([`crate::queue::Queue`] & co.) have the same method names and error words.
//!
//! ```
//! use multiproc::queue::local::{GetError, Queue};
//! use std::time::Duration;
//!
//! let q = Queue::new(5); // queue.Queue(5)
//! q.put(111).unwrap();
//! q.put(222).unwrap();
//! assert!(!q.full());
//! assert_eq!(q.get(), Ok(111));
//! assert_eq!(q.get(), Ok(222));
//! assert_eq!(q.try_get(), Err(GetError::Empty)); // get_nowait() raises Empty
//! assert!(q.empty());
//! let waited = q.get_timeout(Duration::from_millis(10)); // get(timeout=…) raises Empty
//! assert_eq!(waited, Err(GetError::Timeout));
//! assert!(waited.unwrap_err().is_empty()); // what Python's Empty means
//! ```
//!
//! | Python `queue` | `multiproc::queue::local` |
//! |---|---|
//! | `Queue(maxsize)`, `Queue()` | [`Queue::new(maxsize)`](Queue::new) (0 = unbounded), [`Queue::unbounded`] |
//! | `q.put(item)` | [`Queue::put`] (waits for room; [`ShutDown`] after shutdown) |
//! | `q.put(item, timeout=t)` | [`Queue::put_timeout`] → [`PutError::Timeout`] with the item |
//! | `q.put_nowait(item)`, `put(item, block=False)` | [`Queue::try_put`] → [`PutError::Full`] with the item |
//! | `q.get()` | [`Queue::get`] (waits for an item; [`ShutDown`] after shutdown, once drained) |
//! | `q.get(timeout=t)` | [`Queue::get_timeout`] → [`GetError::Timeout`] after `t` |
//! | `q.get_nowait()`, `get(block=False)` | [`Queue::try_get`] → [`GetError::Empty`] |
//! | `q.qsize()`, `q.empty()`, `q.full()`, `q.maxsize` | [`Queue::qsize`], [`Queue::empty`], [`Queue::full`], [`Queue::maxsize`] |
//! | `q.task_done()`, `q.join()`, `q.unfinished_tasks` | [`Queue::task_done`] ([`TooManyTaskDone`]), [`Queue::join`], [`Queue::join_timeout`], [`Queue::unfinished_tasks`] |
//! | `q.shutdown(immediate)`, `q.is_shutdown` (3.13) | [`Queue::shutdown`], [`Queue::is_shutdown`] |
//! | `while True: item = q.get()` … `except ShutDown` | `for item in q.iter()`, or [`Queue::try_iter`] for what is there now |
//! | `queue.LifoQueue(maxsize)`, `queue.PriorityQueue(maxsize)` | [`LifoQueue::new`], [`PriorityQueue::new`]: the same methods and errors |
//! | `except queue.Empty`, `queue.Full`, `queue.ShutDown` | [`GetError::Empty`] / [`GetError::Timeout`] ([`GetError::is_empty`]), [`PutError::Full`] / [`PutError::Timeout`] ([`PutError::is_full`]), [`ShutDown`] / [`GetError::ShutDown`] / [`PutError::ShutDown`] |
//!
//! # Errors
//!
//! Python raises `Empty`, `Full` or `ShutDown`. Here a call's error type lists exactly
//! what that call can meet:
//!
//! * the blocking [`get`](Queue::get) and [`put`](Queue::put) only fail once
//!   the queue is shut down: [`ShutDown`], which gives back the item a `put` was handed;
//! * [`try_get`](Queue::try_get) and [`get_timeout`](Queue::get_timeout) meet
//!   an empty queue (`Empty`, or `Timeout` once the wait ran out) or a shut-down one:
//!   [`GetError`];
//! * [`try_put`](Queue::try_put) and [`put_timeout`](Queue::put_timeout) meet
//!   a full queue (`Full`, or `Timeout`) or a shut-down one: [`PutError`], which gives
//!   the item back either way.
//!
//! `ShutDown` converts into both enums, so `?` works across the blocking and
//! non-blocking calls.
//!
//! # Differences from Python
//!
//! * `maxsize` is a `usize`; 0 means unbounded, as in Python (negative sizes have no
//!   counterpart). The seed's comment that the default is 32767 describes
//!   `multiprocessing.Queue` on some platforms, not `queue.Queue`, whose default is
//!   unbounded ([`Queue::unbounded`], also its `Default`).
//! * A handle is cloned, not shared by reference: every clone is the same queue.
//! * Items are owned: a `put` that fails hands the item back inside its error.

//!
//! # How it works
//!
//! As CPython's `queue` module: one mutex over the items, the unfinished-tasks count
//! and the shutdown state, and three condition variables on it (`not_empty` for
//! getters, `not_full` for putters, `all_tasks_done` for joiners). A shutdown sets the
//! state under the mutex and wakes all three, so no wake-up is lost and no item can
//! arrive after the state changed (the puts-in-flight race a lock-free design has to
//! handle cannot happen). The three queues differ only in the container the items sit
//! in, a private strategy the one implementation is generic over: a `VecDeque` for
//! [`Queue`] (first in, first out), a `Vec` for [`LifoQueue`] (last in, first out), a
//! binary heap for [`PriorityQueue`] (smallest first, as Python's `heapq`).
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::TooManyTaskDone;

mod strategy;

use self::strategy::{Core, Fifo, Wait};
pub use self::strategy::{LifoQueue, PriorityQueue};

/// Why [`Queue::try_get`] or [`Queue::get_timeout`] returned no item.
///
/// ```
/// use multiproc::queue::local::{GetError, Queue};
///
/// let q = Queue::<u32>::new(5);
/// assert_eq!(q.try_get(), Err(GetError::Empty));
/// q.shutdown(false);
/// assert_eq!(q.try_get(), Err(GetError::ShutDown));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// Nothing to take now (`try_get`; Python's `queue.Empty`).
    #[error("the queue is empty")]
    Empty,
    /// No item came before the timeout (`get_timeout`; Python raises `queue.Empty`).
    #[error("timed out waiting for an item")]
    Timeout,
    /// The queue was shut down and has nothing left (Python 3.13's `queue.ShutDown`).
    #[error("the queue is shut down")]
    ShutDown,
}

impl GetError {
    /// `true` for [`GetError::Empty`] and [`GetError::Timeout`]: no item now, but one
    /// may come later (what Python's `queue.Empty` means).
    ///
    /// ```
    /// assert!(multiproc::queue::local::GetError::Empty.is_empty());
    /// assert!(multiproc::queue::local::GetError::Timeout.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty | Self::Timeout)
    }

    /// `true` for [`GetError::ShutDown`]: no item will ever come.
    ///
    /// ```
    /// assert!(multiproc::queue::local::GetError::ShutDown.is_shut_down());
    /// ```
    pub fn is_shut_down(&self) -> bool {
        matches!(self, Self::ShutDown)
    }
}

impl From<ShutDown> for GetError {
    /// ```
    /// use multiproc::queue::local::{GetError, ShutDown};
    /// assert_eq!(GetError::from(ShutDown(())), GetError::ShutDown);
    /// ```
    fn from(ShutDown(()): ShutDown) -> Self {
        Self::ShutDown
    }
}

/// Why [`Queue::try_put`] or [`Queue::put_timeout`] did not enqueue its item,
/// which it gives back.
///
/// Its `Debug` does not show the item, so `T` need not be `Debug` for `unwrap()`.
///
/// ```
/// use multiproc::queue::local::{Queue, PutError};
///
/// let q = Queue::new(1);
/// q.try_put("first").unwrap();
/// assert_eq!(q.try_put("second"), Err(PutError::Full("second")));
/// q.shutdown(false);
/// let err = q.try_put("third").unwrap_err();
/// assert!(err.is_shut_down());
/// assert_eq!(err.into_inner(), "third");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PutError<T> {
    /// No room now (`try_put`; Python's `queue.Full`); the item is given back.
    #[error("the queue is full")]
    Full(T),
    /// No room came before the timeout (`put_timeout`; Python raises `queue.Full`); the
    /// item is given back.
    #[error("timed out waiting for room in the queue")]
    Timeout(T),
    /// The queue was shut down (Python 3.13's `queue.ShutDown`); the item is given back.
    #[error("the queue is shut down")]
    ShutDown(T),
}

impl<T> PutError<T> {
    /// The item that was not enqueued.
    ///
    /// ```
    /// use multiproc::queue::local::PutError;
    /// assert_eq!(PutError::Full(7).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(item) | Self::Timeout(item) | Self::ShutDown(item) => item,
        }
    }

    /// `true` for [`PutError::Full`] and [`PutError::Timeout`]: no room now, but there
    /// may be room later (what Python's `queue.Full` means).
    ///
    /// ```
    /// assert!(multiproc::queue::local::PutError::Full(7).is_full());
    /// assert!(multiproc::queue::local::PutError::Timeout(7).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_) | Self::Timeout(_))
    }

    /// `true` for [`PutError::ShutDown`]: the queue takes no more items.
    ///
    /// ```
    /// assert!(multiproc::queue::local::PutError::ShutDown(7).is_shut_down());
    /// ```
    pub fn is_shut_down(&self) -> bool {
        matches!(self, Self::ShutDown(_))
    }
}

impl<T> fmt::Debug for PutError<T> {
    /// Names the variant without the item, which need not be `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "Full(..)",
            Self::Timeout(_) => "Timeout(..)",
            Self::ShutDown(_) => "ShutDown(..)",
        })
    }
}

impl<T> From<ShutDown<T>> for PutError<T> {
    /// ```
    /// use multiproc::queue::local::{PutError, ShutDown};
    /// assert_eq!(PutError::from(ShutDown(7)), PutError::ShutDown(7));
    /// ```
    fn from(ShutDown(item): ShutDown<T>) -> Self {
        Self::ShutDown(item)
    }
}

/// The queue was shut down (Python 3.13's `queue.ShutDown`): the error of the blocking
/// [`Queue::put`], which gives its item back, and of [`Queue::get`] (`T = ()`),
/// once the queue has nothing left.
///
/// Its `Debug` does not show the item, so `T` need not be `Debug` for `unwrap()`.
///
/// ```
/// use multiproc::queue::local::{Queue, ShutDown};
///
/// let q = Queue::new(0);
/// q.put(1).unwrap();
/// q.shutdown(false);
/// assert_eq!(q.put(2), Err(ShutDown(2))); // put fails at once
/// assert_eq!(q.get(), Ok(1)); // get drains what is left...
/// assert_eq!(q.get(), Err(ShutDown(()))); // ...then fails
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, thiserror::Error)]
#[error("the queue is shut down")]
pub struct ShutDown<T = ()>(pub T);

impl<T> ShutDown<T> {
    /// The item that was not enqueued (`()` for a `get`).
    ///
    /// ```
    /// assert_eq!(multiproc::queue::local::ShutDown("item").into_inner(), "item");
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for ShutDown<T> {
    /// `ShutDown(..)`, without the item, which need not be `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShutDown(..)")
    }
}

/// Python's `queue.Queue`: a FIFO queue between the threads of one process, bounded or
/// unbounded, with `task_done()`/`join()` and Python 3.13's `shutdown()` (S30).
///
/// A `Queue` is a handle: [`Clone`] gives another handle to the same queue, to move
/// into another thread. It is `Send` and `Sync` when `T: Send`. See the
/// [module docs](crate::queue::local) for the Python → Rust table and the errors.
///
/// ```
/// use multiproc::queue::local::Queue;
/// use std::thread;
///
/// let q = Queue::new(2);
/// let consumer = {
///     let q = q.clone();
///     thread::spawn(move || {
///         let mut total = 0;
///         for item in q.iter() { // ends when the queue is shut down and drained
///             total += item;
///             q.task_done().unwrap();
///         }
///         total
///     })
/// };
/// for i in 1..=10 {
///     q.put(i).unwrap(); // waits while two items are queued
/// }
/// q.join(); // every item was taken and marked done
/// q.shutdown(false);
/// assert_eq!(consumer.join().unwrap(), 55);
/// ```
pub struct Queue<T> {
    shared: Arc<Core<T, Fifo<T>>>,
}

impl<T> Queue<T> {
    /// Python's `queue.Queue(maxsize)`: holds at most `maxsize` items, and a `put` waits
    /// for room; `maxsize == 0` means unbounded, as in Python.
    ///
    /// ```
    /// use multiproc::queue::local::{Queue, PutError};
    ///
    /// let q = Queue::new(1);
    /// q.put('a').unwrap();
    /// assert_eq!(q.try_put('b'), Err(PutError::Full('b')));
    /// assert_eq!(Queue::<char>::new(0).maxsize(), 0); // unbounded
    /// ```
    pub fn new(maxsize: usize) -> Self {
        Self {
            shared: Arc::new(Core::new(maxsize, Fifo::default())),
        }
    }

    /// Python's `queue.Queue()`: no bound, a `put` never waits. Same as `new(0)` and
    /// `Queue::default()`.
    ///
    /// ```
    /// let q = multiproc::queue::local::Queue::unbounded();
    /// for i in 0..10_000 {
    ///     q.try_put(i).unwrap();
    /// }
    /// assert!(!q.full());
    /// assert_eq!(q.qsize(), 10_000);
    /// ```
    pub fn unbounded() -> Self {
        Self::new(0)
    }

    /// Python's `q.put(item)`: appends `item`, waiting as long as the queue is full.
    ///
    /// # Errors
    ///
    /// [`ShutDown`] with the item if the queue is shut down, before or while waiting.
    ///
    /// ```
    /// use multiproc::queue::local::{ShutDown, Queue};
    ///
    /// let q = Queue::new(5);
    /// q.put(111).unwrap();
    /// q.shutdown(false);
    /// assert_eq!(q.put(222), Err(ShutDown(222)));
    /// ```
    pub fn put(&self, item: T) -> Result<(), ShutDown<T>> {
        self.shared
            .put(item, Wait::Forever)
            .map_err(|err| ShutDown(err.into_inner()))
    }

    /// Python's `q.put(item, timeout=t)`: like [`put`](Self::put), waiting at most
    /// `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`PutError::Timeout`] with the item if there was no room for the whole `timeout`;
    /// [`PutError::ShutDown`] with the item if the queue is shut down.
    ///
    /// ```
    /// use multiproc::queue::local::{Queue, PutError};
    /// use std::time::Duration;
    ///
    /// let q = Queue::new(1);
    /// q.put_timeout(1, Duration::from_millis(10)).unwrap();
    /// let late = q.put_timeout(2, Duration::from_millis(10));
    /// assert_eq!(late, Err(PutError::Timeout(2)));
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.shared.put(item, Wait::at_most(timeout))
    }

    /// Python's `q.put_nowait(item)` (`put(item, block=False)`): appends `item` if there
    /// is room now.
    ///
    /// # Errors
    ///
    /// [`PutError::Full`] with the item if the queue is full; [`PutError::ShutDown`] with
    /// the item if it is shut down.
    ///
    /// ```
    /// use multiproc::queue::local::{Queue, PutError};
    ///
    /// let q = Queue::new(1);
    /// assert_eq!(q.try_put("a"), Ok(()));
    /// assert_eq!(q.try_put("b"), Err(PutError::Full("b")));
    /// ```
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.shared.put(item, Wait::No)
    }

    /// Python's `q.get()`: removes and returns the oldest item, waiting as long as the
    /// queue is empty.
    ///
    /// # Errors
    ///
    /// [`ShutDown`] once the queue is shut down and has nothing left: after
    /// `shutdown(false)` the items already queued are still returned first.
    ///
    /// ```
    /// use multiproc::queue::local::{ShutDown, Queue};
    ///
    /// let q = Queue::new(5);
    /// q.put(111).unwrap();
    /// q.put(222).unwrap();
    /// assert_eq!(q.get(), Ok(111));
    /// q.shutdown(false);
    /// assert_eq!(q.get(), Ok(222));
    /// assert_eq!(q.get(), Err(ShutDown(())));
    /// ```
    pub fn get(&self) -> Result<T, ShutDown> {
        self.shared.get(Wait::Forever).map_err(|_| ShutDown(()))
    }

    /// Python's `q.get(timeout=t)`: like [`get`](Self::get), waiting at most `timeout`
    /// for an item.
    ///
    /// # Errors
    ///
    /// [`GetError::Timeout`] if no item came for the whole `timeout` (S30: `get(timeout=3)`
    /// raises `Empty` after 3 s; [`GetError::is_empty`] is true for both); [`GetError::ShutDown`] once the queue is shut down and
    /// has nothing left.
    ///
    /// ```
    /// use multiproc::queue::local::{GetError, Queue};
    /// use std::time::{Duration, Instant};
    ///
    /// let q = Queue::<i32>::new(5);
    /// let start = Instant::now();
    /// assert_eq!(q.get_timeout(Duration::from_millis(30)), Err(GetError::Timeout));
    /// assert!(start.elapsed() >= Duration::from_millis(30));
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.shared.get(Wait::at_most(timeout))
    }

    /// Python's `q.get_nowait()` (`get(block=False)`): removes and returns the oldest
    /// item if there is one now.
    ///
    /// # Errors
    ///
    /// [`GetError::Empty`] if the queue is empty (S30: `get_nowait()` raises `Empty`);
    /// [`GetError::ShutDown`] if it is shut down and has nothing left.
    ///
    /// ```
    /// use multiproc::queue::local::{GetError, Queue};
    ///
    /// let q = Queue::new(5);
    /// q.put(111).unwrap();
    /// assert_eq!(q.try_get(), Ok(111));
    /// assert_eq!(q.try_get(), Err(GetError::Empty));
    /// ```
    pub fn try_get(&self) -> Result<T, GetError> {
        self.shared.get(Wait::No)
    }

    /// Python's `q.qsize()`: how many items are queued. Another thread may change it
    /// before the caller acts on it.
    ///
    /// ```
    /// let q = multiproc::queue::local::Queue::new(5);
    /// q.put(111).unwrap();
    /// q.put(222).unwrap();
    /// assert_eq!(q.qsize(), 2);
    /// ```
    pub fn qsize(&self) -> usize {
        self.shared.qsize()
    }

    /// Python's `q.empty()`: `true` if no item is queued (at the moment of the call).
    ///
    /// ```
    /// let q = multiproc::queue::local::Queue::new(5);
    /// assert!(q.empty());
    /// q.put(111).unwrap();
    /// assert!(!q.empty());
    /// ```
    pub fn empty(&self) -> bool {
        self.shared.qsize() == 0
    }

    /// Python's `q.full()`: `true` if the queue is bounded and holds `maxsize` items (at
    /// the moment of the call); never for an unbounded queue.
    ///
    /// ```
    /// let q = multiproc::queue::local::Queue::new(2);
    /// q.put(111).unwrap();
    /// assert!(!q.full());
    /// q.put(222).unwrap();
    /// assert!(q.full());
    /// ```
    pub fn full(&self) -> bool {
        self.shared.full()
    }

    /// Python's `q.maxsize`: the bound given to [`new`](Self::new); 0 for unbounded.
    ///
    /// ```
    /// use multiproc::queue::local::Queue;
    /// assert_eq!(Queue::<u8>::new(5).maxsize(), 5);
    /// assert_eq!(Queue::<u8>::unbounded().maxsize(), 0);
    /// ```
    pub fn maxsize(&self) -> usize {
        self.shared.maxsize()
    }

    /// Python's `q.task_done()`: marks one item taken by a `get` as processed, for
    /// [`join`](Self::join).
    ///
    /// # Errors
    ///
    /// [`TooManyTaskDone`] if every item put is already marked done (Python's
    /// `ValueError`); the count is left at zero.
    ///
    /// ```
    /// use multiproc::queue::TooManyTaskDone;
    /// use multiproc::queue::local::Queue;
    ///
    /// let q = Queue::new(5);
    /// q.put(111).unwrap();
    /// q.get().unwrap();
    /// assert_eq!(q.task_done(), Ok(()));
    /// assert_eq!(q.task_done(), Err(TooManyTaskDone));
    /// ```
    pub fn task_done(&self) -> Result<(), TooManyTaskDone> {
        self.shared.task_done()
    }

    /// Python's `q.join()`: waits until every item ever put has been marked done by
    /// [`task_done`](Self::task_done) (at once if none is pending).
    ///
    /// ```
    /// use multiproc::queue::local::Queue;
    /// use std::thread;
    ///
    /// let q = Queue::new(0);
    /// q.put("job").unwrap();
    /// let worker = q.clone();
    /// thread::spawn(move || {
    ///     let job = worker.get().unwrap();
    ///     assert_eq!(job, "job");
    ///     worker.task_done().unwrap();
    /// });
    /// q.join();
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// ```
    pub fn join(&self) {
        self.shared.join(None);
    }

    /// Like [`join`](Self::join), waiting at most `timeout`: `true` if every item put
    /// was marked done in time.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let q = multiproc::queue::local::Queue::new(0);
    /// assert!(q.join_timeout(Duration::ZERO));
    /// q.put(1).unwrap();
    /// assert!(!q.join_timeout(Duration::from_millis(10)));
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.shared.join(Wait::at_most(timeout).deadline())
    }

    /// Python's `q.unfinished_tasks`: items put and not yet marked done (a `put` still
    /// in progress in another thread may be counted already).
    ///
    /// ```
    /// let q = multiproc::queue::local::Queue::new(0);
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// q.get().unwrap();
    /// assert_eq!(q.unfinished_tasks(), 2); // taken is not done
    /// q.task_done().unwrap();
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// ```
    pub fn unfinished_tasks(&self) -> usize {
        self.shared.unfinished_tasks()
    }

    /// Python 3.13's `q.shutdown(immediate)`: from now on every `put` fails with
    /// [`ShutDown`], and every waiting `get` and `put`, in any thread, wakes up.
    ///
    /// With `immediate == false`, gets still return the items already queued, then
    /// fail. With `immediate == true`, the queued items are dropped at once (each
    /// counting as done for [`join`](Self::join)) and gets fail. Calling it again is
    /// harmless; `shutdown(true)` after `shutdown(false)` drops what is left.
    ///
    /// ```
    /// use multiproc::queue::local::{ShutDown, Queue};
    ///
    /// let q = Queue::new(0);
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// q.shutdown(true);
    /// assert!(q.is_shutdown());
    /// assert_eq!(q.get(), Err(ShutDown(())));
    /// assert_eq!(q.qsize(), 0);
    /// q.join(); // the dropped items count as done
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        self.shared.shutdown(immediate);
    }

    /// Python 3.13's `q.is_shutdown`: `true` once [`shutdown`](Self::shutdown) was called.
    ///
    /// ```
    /// let q = multiproc::queue::local::Queue::<u8>::new(0);
    /// assert!(!q.is_shutdown());
    /// q.shutdown(false);
    /// assert!(q.is_shutdown());
    /// ```
    pub fn is_shutdown(&self) -> bool {
        self.shared.is_shutdown()
    }

    /// Takes items as they come, waiting for each, until the queue is shut down and
    /// drained: `for item in q.iter()` is Python's `while True: q.get()` ended by
    /// `ShutDown`. `&Queue` iterates the same way.
    ///
    /// ```
    /// let q = multiproc::queue::local::Queue::new(0);
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// q.shutdown(false);
    /// assert_eq!(q.iter().collect::<Vec<_>>(), [1, 2]);
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { queue: self }
    }

    /// Takes the items queued now, without waiting: ends at the first
    /// [`try_get`](Self::try_get) that finds nothing.
    ///
    /// ```
    /// let q = multiproc::queue::local::Queue::new(0);
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// assert_eq!(q.try_iter().collect::<Vec<_>>(), [1, 2]);
    /// assert!(q.empty()); // and the queue stays open
    /// ```
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { queue: self }
    }
}

impl<T> Clone for Queue<T> {
    /// Another handle to the same queue (Python code would pass the same object).
    ///
    /// ```
    /// let q = multiproc::queue::local::Queue::new(0);
    /// let other = q.clone();
    /// other.put("shared").unwrap();
    /// assert_eq!(q.get(), Ok("shared"));
    /// ```
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Default for Queue<T> {
    /// An unbounded queue, like Python's `queue.Queue()`.
    ///
    /// ```
    /// let q = multiproc::queue::local::Queue::<u8>::default();
    /// assert_eq!(q.maxsize(), 0);
    /// ```
    fn default() -> Self {
        Self::unbounded()
    }
}

impl<T> fmt::Debug for Queue<T> {
    /// The queue's counters, not its items (which need not be `Debug`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("maxsize", &self.maxsize())
            .field("qsize", &self.qsize())
            .field("unfinished_tasks", &self.unfinished_tasks())
            .field("is_shutdown", &self.is_shutdown())
            .finish()
    }
}

impl<'a, T> IntoIterator for &'a Queue<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    /// Same as [`Queue::iter`]: waits for each item until the queue is shut down and
    /// drained.
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// The blocking iterator of [`Queue::iter`]: each `next` is a
/// [`get`](Queue::get); it ends when the queue is shut down and drained.
///
/// ```
/// let q = multiproc::queue::local::Queue::new(0);
/// q.put('x').unwrap();
/// q.shutdown(false);
/// let mut items = q.iter();
/// assert_eq!(items.next(), Some('x'));
/// assert_eq!(items.next(), None);
/// ```
pub struct Iter<'a, T> {
    queue: &'a Queue<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.queue.get().ok()
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Iter").field(self.queue).finish()
    }
}

/// The non-blocking iterator of [`Queue::try_iter`]: each `next` is a
/// [`try_get`](Queue::try_get); it ends when the queue is empty.
///
/// ```
/// let q = multiproc::queue::local::Queue::new(0);
/// q.put('x').unwrap();
/// let mut items = q.try_iter();
/// assert_eq!(items.next(), Some('x'));
/// assert_eq!(items.next(), None);
/// ```
pub struct TryIter<'a, T> {
    queue: &'a Queue<T>,
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.queue.try_get().ok()
    }
}

impl<T> fmt::Debug for TryIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TryIter").field(self.queue).finish()
    }
}
