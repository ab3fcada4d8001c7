//! Queues: between processes, Python's `multiprocessing.Queue`, `SimpleQueue` and
//! `JoinableQueue` (S4 S12 S31 S32; also at the crate root); between the threads of
//! one process, Python's `queue.Queue` in [`local`] (S30).
//!
//! The two families have the same method names. Their errors use the same words, and
//! the cross-process ones add what only a process boundary can cause:
//!
//! | condition | [`Queue`] (processes) | [`local::Queue`] (threads) | Python |
//! |---|---|---|---|
//! | no item now (`try_get`) | [`GetError::Empty`] | [`local::GetError::Empty`] | `queue.Empty` |
//! | no item before the timeout (`get_timeout`) | [`GetError::Timeout`] | [`local::GetError::Timeout`] | `queue.Empty` |
//! | no room now (`try_put`) | [`PutError::Full`] | [`local::PutError::Full`] | `queue.Full` |
//! | no room before the timeout (`put_timeout`) | [`PutError::Timeout`] | [`local::PutError::Timeout`] | `queue.Full` |
//! | the queue was shut down (and is drained, for a get) | [`GetError::ShutDown`], [`PutError::ShutDown`] | [`local::GetError::ShutDown`], [`local::PutError::ShutDown`], [`local::ShutDown`] | `queue.ShutDown` (3.13) |
//! | this handle was closed (`close()`) | [`GetError::Closed`], [`PutError::Closed`] | (no `close`) | `ValueError: Queue is closed` |
//! | the other side is gone (a manager's server, for [`QueueProxy`](crate::manager::QueueProxy)) | [`GetError::Disconnected`], [`PutError::Disconnected`] | — | `EOFError`, `BrokenPipeError` |
//! | an item does not encode or decode | [`GetError::Codec`], [`PutError::Codec`] | (items are not encoded) | pickling errors |
//!
//! `is_empty()`/`is_full()` on the errors are true for both the immediate and the
//! timed-out case, which is what Python's `Empty` and `Full` mean.
//!
//! `shutdown(immediate)` (Python 3.13) is for every handle in every process;
//! `close()` for one handle. Beside [`local::Queue`], Python's `queue.LifoQueue` and
//! `queue.PriorityQueue` are [`local::LifoQueue`] and [`local::PriorityQueue`].
//!
//! ```
//! # multiproc::init();
//! use multiproc::queue::local::{LifoQueue, PriorityQueue};
//! use multiproc::queue::{GetError, JoinableQueue};
//!
//! let q = JoinableQueue::new()?;
//! q.put(String::from("pending"))?;
//! q.shutdown(true); // drops it, wakes every waiter
//! assert!(matches!(q.get(), Err(GetError::ShutDown)));
//! q.join(); // the dropped item counts as done
//!
//! let stack = LifoQueue::new(0);
//! stack.put(1).unwrap();
//! stack.put(2).unwrap();
//! assert_eq!(stack.get(), Ok(2));
//! let by_priority = PriorityQueue::new(0);
//! by_priority.put((2, "later")).unwrap();
//! by_priority.put((1, "first")).unwrap();
//! assert_eq!(by_priority.get(), Ok((1, "first")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ```
//! # multiproc::init();
//! use multiproc::queue::{GetError, Queue};
//! use std::time::Duration;
//!
//! let q = Queue::with_maxsize(2)?;
//! q.put(1)?;
//! assert_eq!(q.get()?, 1);
//! assert!(matches!(q.try_get(), Err(GetError::Empty)));
//! assert!(matches!(q.get_timeout(Duration::from_millis(1)), Err(GetError::Timeout)));
//! q.shutdown(false); // Python 3.13's shutdown(); `true` drops what is queued
//! assert!(matches!(q.get(), Err(GetError::ShutDown)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod local;
pub(crate) mod mp;

pub use mp::{GetError, Iter, JoinableQueue, PutError, Queue, QueueBuilder, SimpleQueue, TryIter};

/// `task_done` was called more times than items were put (Python raises
/// `ValueError('task_done() called too many times')`), on a [`JoinableQueue`] or a
/// [`local::Queue`].
///
/// ```
/// use multiproc::queue::TooManyTaskDone;
/// use multiproc::queue::local::Queue;
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
