//! Queues between processes: Python's `multiprocessing.Queue`, `SimpleQueue` and
//! `JoinableQueue` (S4 S12 S31 S32).
//!
//! A [`Queue`] lives in shared memory (one memfd). Any number of processes put and get,
//! through handles passed to children as `Process` arguments under every start method,
//! or sent through a [`Connection`](crate::connection::Connection) or another queue.
//!
//! ```
//! # multiproc::init();
//! use multiproc::{Process, Queue};
//!
//! fn worker(q: Queue<String>) {
//!     q.put(format!("hello from {}", std::process::id())).unwrap();
//! }
//!
//! let q = Queue::new()?;
//! let mut child = Process::builder().start(worker, q.clone())?;
//! let greeting = q.get()?;
//! assert!(greeting.starts_with("hello from"));
//! child.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What differs from CPython, on purpose
//!
//! * **A process killed while it puts or gets breaks nothing.** CPython documents that
//!   terminating a process that uses a queue may corrupt it (a half-written frame, a
//!   lock held for ever). Here there is no lock in the shared memory: each producing
//!   process writes its own lane, each consumer takes a message with one atomic
//!   compare-and-swap. A killed producer loses at most the message it was writing; a
//!   killed consumer at most the one it was taking; everyone else carries on.
//! * **`put` does not need a feeder thread**, so a process that put items can always
//!   exit, and `join()` on it never deadlocks on undelivered items (CPython's
//!   "joining processes that use queues" trap): the items stay in the queue, owned by
//!   the shared memory, until someone takes them. An encoding error fails the `put`
//!   itself.
//! * **Large messages go through shared memory**: bodies beyond 4 MiB are written once
//!   into a blob of the same memfd and decoded in place by the consumer, then the
//!   memory is returned to the kernel.
//! * Items are typed: a `Queue<T>` holds `T`s. For Python's mixed lists use an enum
//!   (S31); a handle of the wrong type is refused when it arrives.
//!
//! # Limits
//!
//! * Each producing process writes into its own lane's ring (32 MiB of address space
//!   by default, [`QueueBuilder::ring_bytes`]; only the part in use takes memory, and a
//!   lane that a burst filled gives its pages back once drained). Items are copied into
//!   it; when it is full, items spill into blobs, and once even the ring's record space
//!   is used up, `put` waits for a consumer. An unbounded queue thus holds about a
//!   million small items per producer without anyone reading, rather than without
//!   limit.
//! * At most [`QueueBuilder::lanes`] processes (64 by default) put at the same time; a
//!   lane is freed when its process drops its last handle or dies.
//! * `maxsize` is checked before each put, so producers in different processes racing
//!   for the last free slot can overshoot it by one each.
//! * A process killed between putting an item on a [`JoinableQueue`] and its consumer's
//!   `task_done` leaves that task unfinished for ever, as in Python: use
//!   [`JoinableQueue::join_timeout`] where that can happen.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::TooManyTaskDone;
use crate::codec::{self, CodecError};
use crate::handle;
use crate::ring::{self, Config, GetFail, PutFail, RingMap};

/// Why [`Queue::get`], [`Queue::get_timeout`] or [`Queue::try_get`] returned no item.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// Nothing to take now (`try_get`; Python's `queue.Empty`).
    #[error("the queue is empty")]
    Empty,
    /// No item came before the timeout (`get_timeout`; Python raises `queue.Empty`).
    #[error("timed out waiting for an item")]
    Timeout,
    /// The queue was shut down (by any process) and has nothing left (Python 3.13's
    /// `ShutDown`).
    #[error("the queue is shut down")]
    ShutDown,
    /// This handle was closed ([`Queue::close`]); the queue itself may go on.
    #[error("this queue handle is closed")]
    Closed,
    /// The queue is behind a peer that is gone: the server of a manager's
    /// [`QueueProxy`](crate::manager::QueueProxy) died or was shut down. A queue in
    /// shared memory has no such peer and never returns it.
    #[error("the queue's server is gone")]
    Disconnected,
    /// An item was taken but could not be decoded (it is dropped; the queue stays usable).
    #[error("could not decode the item: {0}")]
    Codec(#[from] CodecError),
    /// The operating system refused to map a large item; from a manager's
    /// [`QueueProxy`](crate::manager::QueueProxy), a failure of its server or protocol
    /// (the [`ManagerError`](crate::manager::ManagerError) inside).
    #[error("queue I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl GetError {
    /// `true` for [`GetError::Empty`] and [`GetError::Timeout`]: no item now, but one
    /// may come later (what Python's `queue.Empty` means).
    ///
    /// ```
    /// assert!(multiproc::queue::GetError::Empty.is_empty());
    /// assert!(multiproc::queue::GetError::Timeout.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty | Self::Timeout)
    }

    /// `true` for [`GetError::ShutDown`], [`GetError::Closed`] and
    /// [`GetError::Disconnected`]: no item will ever come through this handle.
    ///
    /// ```
    /// assert!(multiproc::queue::GetError::ShutDown.is_closed());
    /// assert!(multiproc::queue::GetError::Closed.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::ShutDown | Self::Closed | Self::Disconnected)
    }

    /// A wait that ran out is a `Timeout`, not an empty queue.
    fn elapsed(self) -> GetError {
        match self {
            Self::Empty => Self::Timeout,
            other => other,
        }
    }
}

/// Why a `put` did not enqueue its item, which it gives back.
///
/// Its `Debug` does not show the item, so `T` need not be `Debug` for `unwrap()`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PutError<T> {
    /// No room now (`try_put`; Python's `queue.Full`).
    #[error("the queue is full")]
    Full(T),
    /// No room came before the timeout (`put_timeout`; Python raises `queue.Full`).
    #[error("timed out waiting for room in the queue")]
    Timeout(T),
    /// The queue was shut down (by any process; Python 3.13's `ShutDown`).
    #[error("the queue is shut down")]
    ShutDown(T),
    /// This handle was closed ([`Queue::close`]).
    #[error("this queue handle is closed")]
    Closed(T),
    /// The queue is behind a peer that is gone: the server of a manager's
    /// [`QueueProxy`](crate::manager::QueueProxy) died or was shut down.
    #[error("the queue's server is gone")]
    Disconnected(T),
    /// The item could not be encoded, or is larger than the queue's maximum message.
    #[error("could not encode the item: {1}")]
    Codec(T, CodecError),
    /// The operating system refused memory for a large item; from a manager's
    /// [`QueueProxy`](crate::manager::QueueProxy), a failure of its server or protocol.
    #[error("queue I/O failed: {1}")]
    Io(T, io::Error),
}

impl<T> PutError<T> {
    /// The item that was not enqueued.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(item)
            | Self::Timeout(item)
            | Self::ShutDown(item)
            | Self::Closed(item)
            | Self::Disconnected(item)
            | Self::Codec(item, _)
            | Self::Io(item, _) => item,
        }
    }

    /// `true` for [`PutError::Full`] and [`PutError::Timeout`]: no room now, but
    /// there may be room later (what Python's `queue.Full` means).
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_) | Self::Timeout(_))
    }

    /// `true` for [`PutError::ShutDown`], [`PutError::Closed`] and
    /// [`PutError::Disconnected`]: no item will ever go in through this handle.
    pub fn is_closed(&self) -> bool {
        matches!(
            self,
            Self::ShutDown(_) | Self::Closed(_) | Self::Disconnected(_)
        )
    }

    /// A wait that ran out is a `Timeout`, not a full queue.
    fn elapsed(self) -> PutError<T> {
        match self {
            Self::Full(item) => Self::Timeout(item),
            other => other,
        }
    }

    fn new(item: T, fail: PutFail) -> PutError<T> {
        match fail {
            PutFail::Full => Self::Full(item),
            PutFail::ShutDown => Self::ShutDown(item),
            PutFail::Codec(e) => Self::Codec(item, e),
            PutFail::Io(e) => Self::Io(item, e),
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Timeout(_) => f.write_str("Timeout(..)"),
            Self::ShutDown(_) => f.write_str("ShutDown(..)"),
            Self::Closed(_) => f.write_str("Closed(..)"),
            Self::Disconnected(_) => f.write_str("Disconnected(..)"),
            Self::Codec(_, e) => write!(f, "Codec(.., {e:?})"),
            Self::Io(_, e) => write!(f, "Io(.., {e:?})"),
        }
    }
}

impl From<GetFail> for GetError {
    fn from(fail: GetFail) -> Self {
        match fail {
            GetFail::Empty => Self::Empty,
            GetFail::ShutDown => Self::ShutDown,
            GetFail::Codec(e) => Self::Codec(e),
            GetFail::Io(e) => Self::Io(e),
        }
    }
}

/// Settings for a new [`Queue`], [`SimpleQueue`] or [`JoinableQueue`].
///
/// ```
/// use multiproc::queue::QueueBuilder;
/// let q = QueueBuilder::new().maxsize(10).lanes(8).build::<u64>()?;
/// assert_eq!(q.maxsize(), 10);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct QueueBuilder {
    maxsize: usize,
    lanes: usize,
    ring: usize,
    max_message: usize,
}

impl Default for QueueBuilder {
    fn default() -> Self {
        QueueBuilder {
            maxsize: 0,
            lanes: 64,
            ring: 32 << 20,
            max_message: codec::DEFAULT_MAX_MESSAGE,
        }
    }
}

impl QueueBuilder {
    /// The defaults: unbounded, 64 lanes of 32 MiB, messages up to
    /// [`codec::DEFAULT_MAX_MESSAGE`].
    pub fn new() -> QueueBuilder {
        QueueBuilder::default()
    }

    /// Python's `maxsize`: `put` waits while this many items are queued; 0 is unbounded.
    pub fn maxsize(mut self, maxsize: usize) -> QueueBuilder {
        self.maxsize = maxsize;
        self
    }

    /// How many processes put through lanes of their own (at least 1, at most 4096);
    /// any number more share one further lane, taking turns under a lock.
    pub fn lanes(mut self, lanes: usize) -> QueueBuilder {
        self.lanes = lanes.clamp(1, 4096);
        self
    }

    /// Bytes of ring per lane, rounded up to whole pages (at least 64 KiB, at most
    /// 4 GiB). Only the part in use takes memory.
    pub fn ring_bytes(mut self, bytes: usize) -> QueueBuilder {
        self.ring = bytes.clamp(64 << 10, ring::MAX_RING).next_multiple_of(4096);
        self
    }

    /// The largest encoded item accepted, in bytes; larger ones give
    /// [`CodecError::Oversized`].
    pub fn max_message(mut self, bytes: usize) -> QueueBuilder {
        self.max_message = bytes;
        self
    }

    fn shared<T>(self, joinable: bool) -> io::Result<Arc<RingMap>> {
        RingMap::create(Config {
            lanes: self.lanes,
            ring: self.ring,
            maxsize: self.maxsize,
            max_message: self.max_message,
            joinable,
            fingerprint: codec::fingerprint::<T>(),
        })
        .map(ring::register)
    }

    /// Creates a [`Queue`].
    pub fn build<T: Serialize + DeserializeOwned>(self) -> io::Result<Queue<T>> {
        Ok(Queue::from_shared(self.shared::<T>(false)?))
    }

    /// Creates a [`JoinableQueue`].
    pub fn build_joinable<T: Serialize + DeserializeOwned>(self) -> io::Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            queue: Queue::from_shared(self.shared::<T>(true)?),
        })
    }
}

/// A first-in first-out queue shared by processes: Python's `multiprocessing.Queue`.
///
/// Cloning gives another handle to the same queue. Handles cross to other processes as
/// `Process` arguments (all start methods) and inside messages of a
/// [`Connection`](crate::connection::Connection) or another `Queue`. Items from one
/// producing process come out in the order it put them.
pub struct Queue<T> {
    shared: Arc<RingMap>,
    closed: Arc<AtomicBool>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            shared: Arc::clone(&self.shared),
            closed: Arc::clone(&self.closed),
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.shared.qsize())
            .field("maxsize", &self.shared.maxsize())
            .finish_non_exhaustive()
    }
}

fn deadline(timeout: Duration) -> Option<Instant> {
    Some(
        Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)),
    )
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// An unbounded queue (Python's `Queue()`).
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(1u8)?;
    /// assert_eq!(q.get()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> io::Result<Queue<T>> {
        QueueBuilder::new().build()
    }

    /// A queue holding at most `maxsize` items (Python's `Queue(maxsize)`; 0 is
    /// unbounded): `put` waits for room (S4).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::with_maxsize(1)?;
    /// q.put('a')?;
    /// assert!(q.full());
    /// assert!(q.put_timeout('b', Duration::from_millis(10)).unwrap_err().is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> io::Result<Queue<T>> {
        QueueBuilder::new().maxsize(maxsize).build()
    }

    /// Settings beyond `maxsize`.
    pub fn builder() -> QueueBuilder {
        QueueBuilder::new()
    }

    fn from_shared(shared: Arc<RingMap>) -> Queue<T> {
        Queue {
            shared,
            closed: Arc::new(AtomicBool::new(false)),
            _items: PhantomData,
        }
    }

    fn put_until(&self, item: T, until: Option<Instant>) -> Result<(), PutError<T>> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(PutError::Closed(item));
        }
        match self.shared.put(&item, until) {
            Ok(()) => {
                self.discard_if_shut_down_immediately();
                Ok(())
            }
            Err(fail) => Err(PutError::new(item, fail)),
        }
    }

    /// A put that saw the queue open may publish after a `shutdown(true)` in another
    /// process dropped the items: the put then counts as made before the shutdown, and
    /// its item is dropped as the others were (Python's lock orders the two; here the
    /// shutdown's store and this load are both `SeqCst`, so one of the two sees the
    /// item). The one check a put makes beyond the ring's own.
    fn discard_if_shut_down_immediately(&self) {
        if self.shared.is_shut_down_immediately() {
            self.shared.discard::<T>();
        }
    }

    /// Puts `item`, waiting while the queue is full. Fails only if the queue is shut
    /// down, this handle closed, or the item cannot be encoded; the item is given back.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_until(item, None)
    }

    /// Puts a copy of `*item` (encoded straight from the reference: no clone), waiting
    /// while the queue is full; the error carries `()` instead of the item.
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// let big = vec![7u8; 4096];
    /// q.put_ref(&big)?;
    /// q.put_ref(&big)?;
    /// assert_eq!(q.qsize(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_ref(&self, item: &T) -> Result<(), PutError<()>> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(PutError::Closed(()));
        }
        self.shared
            .put(item, None)
            .map_err(|fail| PutError::new((), fail))?;
        self.discard_if_shut_down_immediately();
        Ok(())
    }

    /// Puts `item`, waiting at most `timeout` for room: [`PutError::Timeout`] after that
    /// (Python's `put(item, timeout=t)`, which raises `Full`).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_until(item, deadline(timeout))
            .map_err(PutError::elapsed)
    }

    /// Puts `item` only if there is room now (Python's `put_nowait`).
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_until(item, Some(Instant::now()))
    }

    fn get_until(&self, until: Option<Instant>) -> Result<T, GetError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(GetError::Closed);
        }
        Ok(self.shared.get(until)?)
    }

    /// Takes the next item, waiting for one. Fails with [`GetError::ShutDown`] once the
    /// queue is shut down and drained.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_until(None)
    }

    /// Takes the next item, waiting at most `timeout`: [`GetError::Timeout`] after that
    /// (Python's `get(timeout=t)`, which raises `Empty`).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_until(deadline(timeout)).map_err(GetError::elapsed)
    }

    /// Takes an item only if one is there now (Python's `get_nowait`).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.try_get().unwrap_err().is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T, GetError> {
        self.get_until(Some(Instant::now()))
    }

    /// Items in the queue (approximate while other processes put and get, as in Python).
    pub fn qsize(&self) -> usize {
        self.shared.qsize()
    }

    /// `true` if the queue holds no item (approximate, as in Python), or if this handle
    /// was closed: nothing can be got through it any more (CPython raises `OSError`).
    pub fn empty(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || self.qsize() == 0
    }

    /// `true` if a bounded queue holds `maxsize` items (approximate, as in Python).
    pub fn full(&self) -> bool {
        let max = self.shared.maxsize();
        max != 0 && self.qsize() >= max
    }

    /// The bound given at creation (0: unbounded).
    pub fn maxsize(&self) -> usize {
        self.shared.maxsize()
    }

    /// Python's `close()`: this process will put and get no more through this handle
    /// and its clones ([`PutError::Closed`], [`GetError::Closed`]); its lane goes back
    /// to the queue. Items it put stay for others, and other handles, here and in
    /// other processes, go on: unlike [`shutdown`](Self::shutdown), it concerns this
    /// handle only. Dropping the last handle does the same.
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(1)?;
    /// let mine = q.clone();
    /// mine.close();
    /// assert!(matches!(mine.get(), Err(multiproc::GetError::Closed)));
    /// assert!(!q.is_shutdown());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.shared.release_lane();
    }

    /// Python 3.13's `shutdown(immediate)`, for every process and every handle: from
    /// now on puts fail with [`PutError::ShutDown`], and every `get` and `put` blocked
    /// in any process wakes up.
    ///
    /// With `immediate == false`, gets still take the items queued, then fail with
    /// [`GetError::ShutDown`]. With `immediate == true`, the queued items are dropped
    /// at once (for a [`JoinableQueue`], each counts as done, so a `join` waiting only
    /// for them returns) and gets fail. Calling it again is harmless;
    /// `shutdown(true)` after `shutdown(false)` drops what is left. The same as the
    /// in-process [`local::Queue::shutdown`](crate::queue::local::Queue::shutdown).
    ///
    /// ```
    /// use multiproc::{GetError, JoinableQueue, PutError};
    ///
    /// let q = JoinableQueue::new()?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// q.shutdown(true);
    /// assert!(q.is_shutdown());
    /// assert!(matches!(q.get(), Err(GetError::ShutDown))); // nothing left to drain
    /// assert!(matches!(q.put(3), Err(PutError::ShutDown(3))));
    /// q.join(); // the dropped items count as done
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        self.shared.shutdown(immediate);
        if immediate {
            self.shared.discard::<T>();
        }
    }

    /// Python 3.13's `is_shutdown`: `true` once any process called
    /// [`Queue::shutdown`].
    pub fn is_shutdown(&self) -> bool {
        self.shared.is_closed()
    }

    /// The items, taken one by one with [`Queue::get`], until the queue is shut down and
    /// drained or this handle closed. An item that does not decode is yielded as its
    /// [`GetError::Codec`] and the iteration goes on (that item is gone; the next may be
    /// fine); an I/O error is yielded and ends it.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            queue: self,
            ended: false,
        }
    }

    /// The items there now, without waiting; an item that does not decode is yielded as
    /// its error, as by [`iter`](Self::iter).
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter {
            queue: self,
            ended: false,
        }
    }
}

/// Iterator of [`Queue::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    queue: &'a Queue<T>,
    ended: bool,
}

impl<T: Serialize + DeserializeOwned> Iterator for Iter<'_, T> {
    type Item = Result<T, GetError>;
    fn next(&mut self) -> Option<Self::Item> {
        next_of_iter(&mut self.ended, self.queue.get())
    }
}

/// Iterator of [`Queue::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a, T> {
    queue: &'a Queue<T>,
    ended: bool,
}

impl<T: Serialize + DeserializeOwned> Iterator for TryIter<'_, T> {
    type Item = Result<T, GetError>;
    fn next(&mut self) -> Option<Self::Item> {
        next_of_iter(&mut self.ended, self.queue.try_get())
    }
}

/// What the queue's iterators make of one `get`: an item, or an undecodable item's
/// error, go on; the end of the queue (or of this handle) ends them, and so does an
/// error that would only repeat, after it is yielded once.
fn next_of_iter<T>(ended: &mut bool, got: Result<T, GetError>) -> Option<Result<T, GetError>> {
    if *ended {
        return None;
    }
    match got {
        Ok(item) => Some(Ok(item)),
        Err(e @ GetError::Codec(_)) => Some(Err(e)),
        Err(GetError::Empty | GetError::ShutDown | GetError::Closed) => {
            *ended = true;
            None
        }
        Err(e) => {
            *ended = true;
            Some(Err(e))
        }
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        handle::serialize_fd(self.shared.fd(), serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fd = handle::deserialize_fd(deserializer)?;
        let shared = RingMap::open(fd, codec::fingerprint::<T>())
            .map_err(|e| serde::de::Error::custom(format!("cannot attach queue: {e}")))?;
        Ok(Queue::from_shared(ring::register(shared)))
    }
}

/// Python's `multiprocessing.SimpleQueue`: `put`, `get`, `empty`, `close`, nothing else.
///
/// ```
/// let q = multiproc::SimpleQueue::new()?;
/// q.put(vec![1, 2])?;
/// assert_eq!(q.get()?, vec![1, 2]);
/// assert!(q.empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new, unbounded queue.
    pub fn new() -> io::Result<SimpleQueue<T>> {
        Ok(SimpleQueue {
            queue: Queue::new()?,
        })
    }
    /// See [`Queue::put`].
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.queue.put(item)
    }
    /// See [`Queue::get`].
    pub fn get(&self) -> Result<T, GetError> {
        self.queue.get()
    }
    /// See [`Queue::empty`].
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }
    /// See [`Queue::close`].
    pub fn close(&self) {
        self.queue.close()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(SimpleQueue {
            queue: Queue::deserialize(deserializer)?,
        })
    }
}

/// Python's `multiprocessing.JoinableQueue`: a [`Queue`] (all its methods, through
/// `Deref`) that counts unfinished tasks. Every `put` adds one; [`task_done`] removes
/// one; [`join`] waits until none is left (S32).
///
/// [`task_done`]: JoinableQueue::task_done
/// [`join`]: JoinableQueue::join
///
/// ```
/// let q = multiproc::JoinableQueue::new()?;
/// q.put('x')?;
/// assert_eq!(q.unfinished_tasks(), 1);
/// q.get()?;
/// q.task_done()?;
/// q.join(); // returns at once: nothing unfinished
/// assert!(q.task_done().is_err()); // one too many
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A new, unbounded joinable queue.
    pub fn new() -> io::Result<JoinableQueue<T>> {
        QueueBuilder::new().build_joinable()
    }

    /// A joinable queue holding at most `maxsize` items (0: unbounded).
    pub fn with_maxsize(maxsize: usize) -> io::Result<JoinableQueue<T>> {
        QueueBuilder::new().maxsize(maxsize).build_joinable()
    }

    /// Marks one item taken with `get` as processed.
    pub fn task_done(&self) -> Result<(), TooManyTaskDone> {
        if self.queue.shared.task_done() {
            Ok(())
        } else {
            Err(TooManyTaskDone)
        }
    }

    /// Waits until every item put so far has been marked done.
    pub fn join(&self) {
        self.queue.shared.join(None);
    }

    /// As [`JoinableQueue::join`], at most `timeout`; `false` if tasks remain.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.queue.shared.join(deadline(timeout))
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.queue.shared.unfinished() as usize
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let queue = Queue::deserialize(deserializer)?;
        if !queue.shared.is_joinable() {
            return Err(serde::de::Error::custom(
                "the handle is a Queue, not a JoinableQueue",
            ));
        }
        Ok(JoinableQueue { queue })
    }
}
