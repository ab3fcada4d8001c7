//! Queues: Python's `queue.Queue` between threads (S30), and in [`mp`] the queues
//! between processes, `multiprocessing.Queue`, `SimpleQueue` and `JoinableQueue`
//! (S4 S12 S31 S32, re-exported at the crate root as [`crate::Queue`] & co.).
//!
//! [`Queue`] is Python's `queue.Queue`: a FIFO for the threads of one process,
//! bounded or not, with Python's `task_done()`/`join()` accounting and Python 3.13's
//! `shutdown()`. It is built on `crossbeam-channel`. The cross-process queues have the
//! same method names; their errors ([`mp::GetError`], [`mp::PutError`]) add what only a
//! process boundary can cause: an item that does not encode or decode, and I/O.
//!
//! ```
//! use multiproc::queue::{GetError, Queue};
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
//! assert_eq!(waited, Err(GetError::Empty));
//! ```
//!
//! | Python `queue` | `multiproc::queue` |
//! |---|---|
//! | `Queue(maxsize)`, `Queue()` | [`Queue::new(maxsize)`](Queue::new) (0 = unbounded), [`Queue::unbounded`] |
//! | `q.put(item)` | [`Queue::put`] (waits for room; [`Closed`] after shutdown) |
//! | `q.put(item, timeout=t)` | [`Queue::put_timeout`] → [`PutError::Full`] with the item |
//! | `q.put_nowait(item)`, `put(item, block=False)` | [`Queue::try_put`] → [`PutError::Full`] with the item |
//! | `q.get()` | [`Queue::get`] (waits for an item; [`Closed`] after shutdown, once drained) |
//! | `q.get(timeout=t)` | [`Queue::get_timeout`] → [`GetError::Empty`] after `t` |
//! | `q.get_nowait()`, `get(block=False)` | [`Queue::try_get`] → [`GetError::Empty`] |
//! | `q.qsize()`, `q.empty()`, `q.full()`, `q.maxsize` | [`Queue::qsize`], [`Queue::empty`], [`Queue::full`], [`Queue::maxsize`] |
//! | `q.task_done()`, `q.join()`, `q.unfinished_tasks` | [`Queue::task_done`] ([`TooManyTaskDone`]), [`Queue::join`], [`Queue::join_timeout`], [`Queue::unfinished_tasks`] |
//! | `q.shutdown(immediate)`, `q.is_shutdown` (3.13) | [`Queue::shutdown`], [`Queue::is_shutdown`] |
//! | `while True: item = q.get()` … `except ShutDown` | `for item in q.iter()`, or [`Queue::try_iter`] for what is there now |
//! | `except queue.Empty`, `queue.Full`, `queue.ShutDown` | [`GetError::Empty`], [`PutError::Full`], [`Closed`] / [`GetError::Closed`] / [`PutError::Closed`] |
//!
//! # Errors
//!
//! Python raises `Empty`, `Full` or `ShutDown`. Here a call's error type lists exactly
//! what that call can meet:
//!
//! * the blocking [`get`](Queue::get) and [`put`](Queue::put) only fail once
//!   the queue is shut down: [`Closed`], which gives back the item a `put` was handed;
//! * [`try_get`](Queue::try_get) and [`get_timeout`](Queue::get_timeout) meet
//!   an empty queue or a shut-down one: [`GetError`];
//! * [`try_put`](Queue::try_put) and [`put_timeout`](Queue::put_timeout) meet
//!   a full queue or a shut-down one: [`PutError`], which gives the item back either way.
//!
//! `Closed` converts into both enums, so `?` works across the blocking and
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

use std::fmt;

pub mod local;
pub mod mp;

pub use local::{Iter, Queue, TryIter};

/// Why [`Queue::try_get`] or [`Queue::get_timeout`] returned no item.
///
/// ```
/// use multiproc::queue::{GetError, Queue};
///
/// let q = Queue::<u32>::new(5);
/// assert_eq!(q.try_get(), Err(GetError::Empty));
/// q.shutdown(false);
/// assert_eq!(q.try_get(), Err(GetError::Closed));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// Nothing to take, for now or until the timeout (Python's `queue.Empty`).
    #[error("the queue is empty")]
    Empty,
    /// The queue was shut down and has nothing left (Python 3.13's `queue.ShutDown`).
    #[error("the queue is shut down")]
    Closed,
}

impl GetError {
    /// `true` for [`GetError::Empty`]: the queue may still get an item later.
    ///
    /// ```
    /// assert!(multiproc::queue::GetError::Empty.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    /// `true` for [`GetError::Closed`]: no item will ever come.
    ///
    /// ```
    /// assert!(multiproc::queue::GetError::Closed.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }
}

impl From<Closed> for GetError {
    /// ```
    /// use multiproc::queue::{Closed, GetError};
    /// assert_eq!(GetError::from(Closed(())), GetError::Closed);
    /// ```
    fn from(Closed(()): Closed) -> Self {
        Self::Closed
    }
}

/// Why [`Queue::try_put`] or [`Queue::put_timeout`] did not enqueue its item,
/// which it gives back.
///
/// Its `Debug` does not show the item, so `T` need not be `Debug` for `unwrap()`.
///
/// ```
/// use multiproc::queue::{Queue, PutError};
///
/// let q = Queue::new(1);
/// q.try_put("first").unwrap();
/// assert_eq!(q.try_put("second"), Err(PutError::Full("second")));
/// q.shutdown(false);
/// let err = q.try_put("third").unwrap_err();
/// assert!(err.is_closed());
/// assert_eq!(err.into_inner(), "third");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PutError<T> {
    /// No room, now or until the timeout (Python's `queue.Full`); the item is given back.
    #[error("the queue is full")]
    Full(T),
    /// The queue was shut down (Python 3.13's `queue.ShutDown`); the item is given back.
    #[error("the queue is shut down")]
    Closed(T),
}

impl<T> PutError<T> {
    /// The item that was not enqueued.
    ///
    /// ```
    /// use multiproc::queue::PutError;
    /// assert_eq!(PutError::Full(7).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(item) | Self::Closed(item) => item,
        }
    }

    /// `true` for [`PutError::Full`]: there may be room later.
    ///
    /// ```
    /// assert!(multiproc::queue::PutError::Full(7).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }

    /// `true` for [`PutError::Closed`]: the queue takes no more items.
    ///
    /// ```
    /// assert!(multiproc::queue::PutError::Closed(7).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed(_))
    }
}

impl<T> fmt::Debug for PutError<T> {
    /// Names the variant without the item, which need not be `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "Full(..)",
            Self::Closed(_) => "Closed(..)",
        })
    }
}

impl<T> From<Closed<T>> for PutError<T> {
    /// ```
    /// use multiproc::queue::{Closed, PutError};
    /// assert_eq!(PutError::from(Closed(7)), PutError::Closed(7));
    /// ```
    fn from(Closed(item): Closed<T>) -> Self {
        Self::Closed(item)
    }
}

/// The queue was shut down (Python 3.13's `queue.ShutDown`): the error of the blocking
/// [`Queue::put`], which gives its item back, and of [`Queue::get`] (`T = ()`),
/// once the queue has nothing left.
///
/// Its `Debug` does not show the item, so `T` need not be `Debug` for `unwrap()`.
///
/// ```
/// use multiproc::queue::{Closed, Queue};
///
/// let q = Queue::new(0);
/// q.put(1).unwrap();
/// q.shutdown(false);
/// assert_eq!(q.put(2), Err(Closed(2))); // put fails at once
/// assert_eq!(q.get(), Ok(1)); // get drains what is left...
/// assert_eq!(q.get(), Err(Closed(()))); // ...then fails
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, thiserror::Error)]
#[error("the queue is shut down")]
pub struct Closed<T = ()>(pub T);

impl<T> Closed<T> {
    /// The item that was not enqueued (`()` for a `get`).
    ///
    /// ```
    /// assert_eq!(multiproc::queue::Closed("item").into_inner(), "item");
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Closed<T> {
    /// `Closed(..)`, without the item, which need not be `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Closed(..)")
    }
}

/// [`Queue::task_done`] was called more times than items were put (Python raises
/// `ValueError('task_done() called too many times')`).
///
/// ```
/// use multiproc::queue::{Queue, TooManyTaskDone};
///
/// let q = Queue::new(0);
/// q.put('a').unwrap();
/// q.get().unwrap();
/// assert_eq!(q.task_done(), Ok(()));
/// assert_eq!(q.task_done(), Err(TooManyTaskDone));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("task_done() called more times than items were put")]
pub struct TooManyTaskDone;
