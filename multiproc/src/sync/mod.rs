//! Synchronisation between processes: Python's `multiprocessing.Lock`, `RLock`,
//! `Semaphore`, `BoundedSemaphore`, `Event`, `Condition` and `Barrier` (S16 S29 S39).
//!
//! Each object lives in a small block of shared memory (a memfd) and crosses to other
//! processes as a `Process` argument (every start method) or inside a message of a
//! [`Connection`](crate::connection::Connection); clones share the object.
//!
//! ```
//! # multiproc::init();
//! use multiproc::sync::Lock;
//! use multiproc::Process;
//!
//! fn print_under(lock: Lock) {
//!     let _held = lock.lock().unwrap();
//!     println!("one line at a time");
//! }
//!
//! let lock = Lock::new()?;
//! let mut p = Process::start(print_under, lock.clone())?;
//! {
//!     let _held = lock.lock().unwrap();
//!     println!("from the parent");
//! }
//! p.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # A holder that dies
//!
//! `Lock` and `RLock` are robust: their lock word names the holding thread, and a
//! waiting acquirer checks every 20 ms that it still exists. When a process (or
//! thread) dies holding one, the next acquirer takes it over and its call returns
//! [`LockError::OwnerDied`] *with the guard*: the lock is held, and what it protects may
//! be half-updated (CPython's `Lock` is an owner-less semaphore: a SIGKILLed holder
//! blocks everyone for ever, FAILURE_MODES item 4). A holder that locks a `Lock` again
//! gets [`LockError::WouldDeadlock`] instead of hanging (S16).
//!
//! # Python's `acquire()`/`release()`, `locked()`, a barrier's action
//!
//! The guard is the safe path. For code that acquires in one function and releases in
//! another, [`Lock::acquire`] and [`Lock::release`] (and [`RLock`]'s) are Python's: the
//! less safe path, since nothing releases a hold that is forgotten (until the thread
//! ends and the next acquirer gets `OwnerDied`), and a release by a thread that does
//! not hold the lock is refused with [`NotOwner`].
//!
//! ```
//! use multiproc::sync::{Barrier, Lock, NotOwner, RLock};
//!
//! fn begin(lock: &Lock) {
//!     lock.acquire().unwrap();
//! }
//! fn end(lock: &Lock) -> Result<(), NotOwner> {
//!     lock.release()
//! }
//!
//! let lock = Lock::new()?;
//! begin(&lock);
//! assert!(lock.locked());
//! end(&lock)?;
//! assert_eq!(end(&lock), Err(NotOwner)); // Python's RuntimeError
//!
//! let r = RLock::new()?;
//! let _outer = r.lock().unwrap();
//! let _inner = r.lock().unwrap();
//! assert_eq!((r.is_owned(), r.count()), (true, 2));
//!
//! fn all_here() {} // runs once per round, in the last party's process
//! let b = Barrier::builder(1).action(all_here).build()?;
//! assert_eq!(b.wait(), Ok(0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `Semaphore`, `Event`, `Condition` and `Barrier` are futex words in the same kind of
//! block. A semaphore slot taken through a [`Permit`] names its process, so slots a dead
//! process held are taken back by the next acquirer that finds none free (reported as
//! `OwnerDied`); a slot kept with [`Permit::forget`] has no owner, as in Python.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::block::{self, BODY, Block};
use crate::sys::robust::{self, Acquired, LockRefused, PodGuard, Wait};

// The macros come before the modules: a `macro_rules!` is visible only in the modules
// declared after it. Their paths are absolute, so that they do not depend on what the
// module using them imports.

/// `Serialize` and `Deserialize` for a handle type whose only field is `block`.
macro_rules! handle_serde {
    ($ty:ident, $kind:expr) => {
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.block.serialize(serializer)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                Ok($ty {
                    block: ::std::sync::Arc::new($crate::sync::Block::deserialize(
                        deserializer,
                        $kind,
                    )?),
                })
            }
        }
    };
}

/// `lock`, `lock_timeout` and `try_lock` for a type whose block holds a mutex.
macro_rules! guard_methods {
    () => {
        /// Waits for the lock (Python's `acquire()`, `with lock:`).
        pub fn lock(&self) -> $crate::sync::LockResult<'_> {
            $crate::sync::lock_block(&self.block, $crate::sys::robust::Wait::Forever)
        }

        /// Waits at most `timeout` (Python's `acquire(timeout=t)`):
        /// [`LockError::Timeout`](crate::sync::LockError::Timeout).
        pub fn lock_timeout(&self, timeout: ::std::time::Duration) -> $crate::sync::LockResult<'_> {
            $crate::sync::lock_block(&self.block, $crate::sync::until(timeout))
        }

        /// Takes the lock only if that is possible now (Python's `acquire(False)`):
        /// [`LockError::WouldBlock`](crate::sync::LockError::WouldBlock) otherwise.
        pub fn try_lock(&self) -> $crate::sync::LockResult<'_> {
            $crate::sync::lock_block(&self.block, $crate::sys::robust::Wait::No)
        }
    };
}

/// Python's guard-less `acquire()`/`release()` and `locked()`, for a type whose block
/// holds a mutex at `MUTEX_AT`.
macro_rules! raw_lock_methods {
    () => {
        /// Python's `lock.locked()`: `true` while any thread of any process holds the
        /// lock (one that died holding it, too, until the next acquirer takes it over).
        /// Another process may change it at once; for a decision, take the lock.
        pub fn locked(&self) -> bool {
            $crate::sync::mutex_of(&self.block).is_locked()
        }

        /// Python's `acquire()` without a guard, for code that acquires in one
        /// function and releases in another: the lock stays held until
        /// [`release`](Self::release) is called **by the same thread**. Prefer
        /// [`lock`](Self::lock): a forgotten `release`, or a `?` between the two, keeps
        /// the lock held until the thread ends (then the next acquirer gets
        /// [`LockError::OwnerDied`](crate::sync::LockError::OwnerDied)).
        /// `Err(OwnerDied(()))` means the lock is held, as with the guard.
        pub fn acquire(&self) -> Result<(), $crate::sync::LockError<()>> {
            $crate::sync::forget_guard(self.lock())
        }

        /// [`acquire`](Self::acquire), waiting at most `timeout` (Python's
        /// `acquire(timeout=t)` returning `False` is [`LockError::Timeout`](crate::sync::LockError::Timeout)).
        pub fn acquire_timeout(
            &self,
            timeout: ::std::time::Duration,
        ) -> Result<(), $crate::sync::LockError<()>> {
            $crate::sync::forget_guard(self.lock_timeout(timeout))
        }

        /// [`acquire`](Self::acquire) only if the lock is free now (Python's
        /// `acquire(False)`).
        pub fn try_acquire(&self) -> Result<(), $crate::sync::LockError<()>> {
            $crate::sync::forget_guard(self.try_lock())
        }

        /// Python's `release()`: releases one [`acquire`](Self::acquire) of the
        /// calling thread. Releasing a lock this thread does not hold is
        /// [`NotOwner`](crate::sync::NotOwner) (Python's `RuntimeError`/`ValueError`),
        /// and the lock is left as it was. Calling it while a guard of this thread is
        /// alive releases that hold: the guard's drop then finds the lock not its own
        /// and does nothing, so do not mix the two on one acquisition. A
        /// [`Value`](crate::shared::Value) or [`Array`](crate::shared::Array) guard made
        /// under this lock stays exclusive all the same: it also holds the value's own
        /// mutex.
        pub fn release(&self) -> Result<(), $crate::sync::NotOwner> {
            $crate::sync::mutex_of(&self.block)
                .unlock()
                .map_err(|_| $crate::sync::NotOwner)
        }
    };
}

mod barrier;
mod condition;
mod event;
mod lock;
mod rlock;
mod semaphore;

pub use barrier::{Barrier, BarrierBuilder, BrokenBarrier};
pub use condition::Condition;
pub use event::Event;
pub use lock::Lock;
pub use rlock::RLock;
pub use semaphore::{Permit, Semaphore, TooManyReleases};

/// Why a lock call returned without a clean acquisition.
#[non_exhaustive]
pub enum LockError<G> {
    /// The previous holder died holding the lock. The lock is now held by the caller,
    /// through the guard inside; what the lock protects may be half-updated.
    OwnerDied(G),
    /// The calling thread already holds this (non-reentrant) lock: waiting would never
    /// end (S16).
    WouldDeadlock,
    /// `try_lock`: someone else holds it now (Python's `acquire(False)` returning
    /// `False`).
    WouldBlock,
    /// Not acquired before the timeout.
    Timeout,
}

impl<G> LockError<G> {
    /// The guard, for [`LockError::OwnerDied`]: the caller holds the lock.
    pub fn into_guard(self) -> Option<G> {
        match self {
            Self::OwnerDied(guard) => Some(guard),
            _ => None,
        }
    }

    /// `true` for [`LockError::OwnerDied`].
    pub fn is_owner_died(&self) -> bool {
        matches!(self, Self::OwnerDied(_))
    }

    pub(crate) fn map_guard<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            Self::OwnerDied(g) => LockError::OwnerDied(f(g)),
            Self::WouldDeadlock => LockError::WouldDeadlock,
            Self::WouldBlock => LockError::WouldBlock,
            Self::Timeout => LockError::Timeout,
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            Self::WouldDeadlock => f.write_str("WouldDeadlock"),
            Self::WouldBlock => f.write_str("WouldBlock"),
            Self::Timeout => f.write_str("Timeout"),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnerDied(_) => f.write_str("the previous holder died holding the lock"),
            Self::WouldDeadlock => f.write_str("the calling thread already holds this lock"),
            Self::WouldBlock => f.write_str("the lock is held by someone else"),
            Self::Timeout => f.write_str("timed out waiting for the lock"),
        }
    }
}

impl<G> std::error::Error for LockError<G> {}

/// [`Lock::release`] or [`RLock::release`] by a thread that does not hold the lock
/// (Python's `RuntimeError: cannot release un-acquired lock`).
///
/// ```
/// let lock = multiproc::sync::Lock::new()?;
/// assert_eq!(lock.release(), Err(multiproc::sync::NotOwner));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("the calling thread does not hold this lock")]
pub struct NotOwner;

/// Keeps the lock a guard holds, dropping the guard without unlocking (the guard-less
/// `acquire`).
fn forget_guard(result: LockResult<'_>) -> Result<(), LockError<()>> {
    match result {
        Ok(guard) => {
            std::mem::forget(guard);
            Ok(())
        }
        Err(e) => Err(e.map_guard(std::mem::forget)),
    }
}

/// The mutex of a [`Lock`]'s or [`RLock`]'s block.
fn mutex_of(block: &Block) -> &robust::RobustMutex {
    block.mutex_at(MUTEX_AT)
}

/// Turns a robust lock outcome into the public result.
pub(crate) fn acquired<G>(outcome: Result<(G, Acquired), LockRefused>) -> Result<G, LockError<G>> {
    match outcome {
        Ok((guard, Acquired::Clean)) => Ok(guard),
        Ok((guard, Acquired::OwnerDied)) => Err(LockError::OwnerDied(guard)),
        Err(LockRefused::WouldDeadlock) => Err(LockError::WouldDeadlock),
        Err(LockRefused::WouldBlock) => Err(LockError::WouldBlock),
        Err(LockRefused::Timeout) => Err(LockError::Timeout),
    }
}

pub(crate) fn until(timeout: Duration) -> Wait {
    match Instant::now().checked_add(timeout) {
        Some(d) => Wait::Until(d),
        None => Wait::Forever,
    }
}

fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

// ---- The mutex of Lock, RLock and Condition --------------------------------------

pub(crate) const MUTEX_AT: usize = BODY;

/// Held [`Lock`] (or [`RLock`]); released on drop. Not `Send`: the thread that locked
/// unlocks.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    _inner: PodGuard<'a, u8>,
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// What locking a [`Lock`], [`RLock`] or [`Condition`] gives: the guard, or why not.
pub type LockResult<'a> = Result<LockGuard<'a>, LockError<LockGuard<'a>>>;

fn new_mutex_block(kind: u64, recursive: bool) -> io::Result<Block> {
    let block = Block::new(kind, MUTEX_AT + robust::RobustMutex::SIZE)?;
    block.mutex_at(MUTEX_AT).init(recursive);
    Ok(block)
}

pub(crate) fn lock_block(block: &Block, wait: Wait) -> LockResult<'_> {
    acquired(
        robust::lock_data::<u8>(block.map(), MUTEX_AT, MUTEX_AT, 0, wait)
            .map(|(g, a)| (LockGuard { _inner: g }, a)),
    )
}
