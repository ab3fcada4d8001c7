//! `threading.Lock` and `threading.RLock` as RAII locks over the data they guard (S14 S16).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::current::{ThreadInfo, current_thread, get_ident};

/// No thread holds the lock (idents start at 1).
const NO_OWNER: u64 = 0;

/// The holder of a [`Lock`] tried to take it again, which would block forever
/// (Python's `Lock` hangs here; S16). Use an [`RLock`] for re-entrant locking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "thread '{}' already holds this Lock: taking it again would deadlock (an RLock can be re-entered)",
    thread.name()
)]
pub struct WouldDeadlock {
    thread: ThreadInfo,
}

impl WouldDeadlock {
    /// The thread that holds the lock and asked for it again.
    ///
    /// ```
    /// use multiproc::thread::{Lock, current_thread};
    ///
    /// let lock = Lock::new(());
    /// let _held = lock.lock().unwrap();
    /// let err = lock.lock().unwrap_err();
    /// assert_eq!(err.thread(), &current_thread());
    /// ```
    pub fn thread(&self) -> &ThreadInfo {
        &self.thread
    }
}

/// Why [`Lock::lock_timeout`] or [`RLock::lock_timeout`] did not acquire the lock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// The calling thread already holds this [`Lock`]; waiting could only time out.
    #[error(transparent)]
    WouldDeadlock(#[from] WouldDeadlock),
    /// Another thread held the lock for the whole timeout.
    #[error("the lock was still held by another thread after {0:?}")]
    Timeout(Duration),
}

/// Python's `threading.Lock`, holding the data it protects: one thread at a time, and
/// re-acquiring it in the thread that holds it is an error, not a hang (S14 S16).
///
/// `Lock<()>` (the default) is a bare lock; `Lock<T>` lends `&mut T` through its
/// [`LockGuard`], which releases the lock when dropped (Python's `with lock:`). Built on
/// `parking_lot`'s mutex: fair enough, small, no poisoning (a panic while holding the
/// guard just releases it). `new` is `const`, so a `Lock` can be a `static`, like the
/// module-level locks of Python programs.
///
/// ```
/// use multiproc::thread::{Lock, Thread};
///
/// static BALANCE: Lock<i64> = Lock::new(0);
///
/// let deposit = Thread::start(|| {
///     for _ in 0..1000 {
///         *BALANCE.lock().unwrap() += 5;
///     }
/// })
/// .unwrap();
/// for _ in 0..1000 {
///     *BALANCE.lock().unwrap() -= 5;
/// }
/// deposit.join().unwrap();
/// assert_eq!(*BALANCE.lock().unwrap(), 0);
/// ```
pub struct Lock<T: ?Sized = ()> {
    /// The ident of the thread holding `inner`, or [`NO_OWNER`]. Only the holder writes
    /// its own ident here (and clears it before releasing), so a thread reading its own
    /// ident knows it holds the lock; `Relaxed` suffices.
    owner: AtomicU64,
    inner: parking_lot::Mutex<T>,
}

impl<T> Lock<T> {
    /// A new, unlocked lock around `value` (`Lock::new(())` is Python's `Lock()`).
    ///
    /// ```
    /// let lock = multiproc::thread::Lock::new(vec![1, 2]);
    /// lock.lock().unwrap().push(3);
    /// assert_eq!(lock.into_inner(), [1, 2, 3]);
    /// ```
    pub const fn new(value: T) -> Lock<T> {
        Lock {
            owner: AtomicU64::new(NO_OWNER),
            inner: parking_lot::Mutex::new(value),
        }
    }

    /// Consumes the lock and returns the value.
    ///
    /// ```
    /// assert_eq!(multiproc::thread::Lock::new(7).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Lock<T> {
    /// Waits until the lock is free and takes it (`with lock:`).
    ///
    /// # Errors
    ///
    /// [`WouldDeadlock`] at once if the calling thread already holds the lock.
    ///
    /// ```
    /// use multiproc::thread::Lock;
    ///
    /// let lock = Lock::new(0);
    /// let mut guard = lock.lock().unwrap();
    /// *guard += 1;
    /// assert!(lock.lock().is_err()); // the holder asking again
    /// drop(guard);
    /// assert_eq!(*lock.lock().unwrap(), 1);
    /// ```
    pub fn lock(&self) -> Result<LockGuard<'_, T>, WouldDeadlock> {
        let me = self.check_not_held()?;
        Ok(self.guard(self.inner.lock(), me))
    }

    /// Takes the lock if it is free right now (`lock.acquire(blocking=False)`); `None`
    /// if any thread, the caller included, holds it.
    ///
    /// ```
    /// let lock = multiproc::thread::Lock::new(());
    /// let held = lock.try_lock().unwrap();
    /// assert!(lock.try_lock().is_none());
    /// drop(held);
    /// assert!(lock.try_lock().is_some());
    /// ```
    pub fn try_lock(&self) -> Option<LockGuard<'_, T>> {
        let me = get_ident();
        self.inner.try_lock().map(|inner| self.guard(inner, me))
    }

    /// Like [`lock`](Self::lock), waiting at most `timeout` (`lock.acquire(timeout=t)`).
    ///
    /// # Errors
    ///
    /// [`AcquireError::WouldDeadlock`] at once if the calling thread holds the lock;
    /// [`AcquireError::Timeout`] if another thread held it for the whole `timeout`.
    ///
    /// ```
    /// use multiproc::thread::{AcquireError, Lock};
    /// use std::time::Duration;
    ///
    /// let lock = Lock::new(());
    /// let held = lock.lock_timeout(Duration::from_millis(10)).unwrap();
    /// let again = lock.lock_timeout(Duration::from_secs(3600));
    /// assert!(matches!(again, Err(AcquireError::WouldDeadlock(_))));
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_, T>, AcquireError> {
        let me = self.check_not_held()?;
        match self.inner.try_lock_for(timeout) {
            Some(inner) => Ok(self.guard(inner, me)),
            None => Err(AcquireError::Timeout(timeout)),
        }
    }

    /// Whether some thread holds the lock right now (Python's `lock.locked()`).
    ///
    /// ```
    /// let lock = multiproc::thread::Lock::new(());
    /// let held = lock.lock().unwrap();
    /// assert!(lock.is_locked());
    /// drop(held);
    /// assert!(!lock.is_locked());
    /// ```
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }

    /// Whether the calling thread is the one holding the lock.
    ///
    /// ```
    /// let lock = multiproc::thread::Lock::new(());
    /// let held = lock.lock().unwrap();
    /// assert!(lock.is_held_by_current_thread());
    /// ```
    pub fn is_held_by_current_thread(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == get_ident()
    }

    /// The value, without locking: `&mut self` proves no other thread can hold the lock.
    ///
    /// ```
    /// let mut lock = multiproc::thread::Lock::new(1);
    /// *lock.get_mut() += 1;
    /// assert_eq!(*lock.lock().unwrap(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    fn check_not_held(&self) -> Result<u64, WouldDeadlock> {
        let me = get_ident();
        if self.owner.load(Ordering::Relaxed) == me {
            return Err(WouldDeadlock {
                thread: current_thread(),
            });
        }
        Ok(me)
    }

    fn guard<'a>(&'a self, inner: parking_lot::MutexGuard<'a, T>, me: u64) -> LockGuard<'a, T> {
        self.owner.store(me, Ordering::Relaxed);
        LockGuard {
            owner: &self.owner,
            inner,
        }
    }
}

impl<T: Default> Default for Lock<T> {
    fn default() -> Lock<T> {
        Lock::new(T::default())
    }
}

impl<T> From<T> for Lock<T> {
    fn from(value: T) -> Lock<T> {
        Lock::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Lock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Lock");
        // `try_lock` on the raw mutex: never blocks, never reports a deadlock.
        match self.inner.try_lock() {
            Some(value) => s.field("data", &&*value),
            None => s.field("held_by", &self.owner.load(Ordering::Relaxed)),
        };
        s.finish()
    }
}

/// Holds a [`Lock`]; dereferences to the data and releases the lock when dropped.
///
/// It cannot be sent to another thread: the thread that took a lock releases it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a, T: ?Sized> {
    owner: &'a AtomicU64,
    inner: parking_lot::MutexGuard<'a, T>,
}

impl<T: ?Sized> Deref for LockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for LockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized> Drop for LockGuard<'_, T> {
    fn drop(&mut self) {
        // Before `inner` unlocks (fields drop after this), so the next holder's ident
        // is never overwritten.
        self.owner.store(NO_OWNER, Ordering::Relaxed);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for LockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for LockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// Python's `threading.RLock`: a lock its holder may take again, released when every
/// guard is dropped (S16). Built on `parking_lot`'s `ReentrantMutex`.
///
/// Guards of the same thread may coexist, so they give only `&T`; put a `Cell` or
/// `RefCell` inside for a value to change.
///
/// ```
/// use multiproc::thread::RLock;
/// use std::cell::Cell;
///
/// static NUMBER: RLock<Cell<u32>> = RLock::new(Cell::new(0));
///
/// let outer = NUMBER.lock();
/// outer.set(outer.get() + 1);
/// let inner = NUMBER.lock(); // the same thread again: no deadlock
/// inner.set(inner.get() + 1);
/// drop(inner);
/// drop(outer);
/// assert_eq!(NUMBER.lock().get(), 2);
/// ```
pub struct RLock<T: ?Sized = ()> {
    inner: parking_lot::ReentrantMutex<T>,
}

impl<T> RLock<T> {
    /// A new, unlocked re-entrant lock around `value` (`RLock::new(())` is `RLock()`).
    ///
    /// ```
    /// let lock = multiproc::thread::RLock::new(5);
    /// assert_eq!(*lock.lock(), 5);
    /// ```
    pub const fn new(value: T) -> RLock<T> {
        RLock {
            inner: parking_lot::ReentrantMutex::new(value),
        }
    }

    /// Consumes the lock and returns the value.
    ///
    /// ```
    /// assert_eq!(multiproc::thread::RLock::new("x").into_inner(), "x");
    /// ```
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> RLock<T> {
    /// Takes the lock, waiting while another thread holds it; at once if the calling
    /// thread already does.
    ///
    /// ```
    /// let lock = multiproc::thread::RLock::new(());
    /// let a = lock.lock();
    /// let b = lock.lock();
    /// assert!(lock.is_locked());
    /// ```
    pub fn lock(&self) -> RLockGuard<'_, T> {
        RLockGuard {
            inner: self.inner.lock(),
        }
    }

    /// Takes the lock if the calling thread holds it or it is free; `None` otherwise.
    ///
    /// ```
    /// let lock = multiproc::thread::RLock::new(());
    /// let a = lock.lock();
    /// assert!(lock.try_lock().is_some());
    /// ```
    pub fn try_lock(&self) -> Option<RLockGuard<'_, T>> {
        self.inner.try_lock().map(|inner| RLockGuard { inner })
    }

    /// Like [`lock`](Self::lock), waiting at most `timeout` for another thread to
    /// release it.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`] if another thread held it for the whole `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = multiproc::thread::RLock::new(());
    /// assert!(lock.lock_timeout(Duration::from_millis(10)).is_ok());
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_, T>, AcquireError> {
        self.inner
            .try_lock_for(timeout)
            .map(|inner| RLockGuard { inner })
            .ok_or(AcquireError::Timeout(timeout))
    }

    /// Whether some thread holds the lock right now.
    ///
    /// ```
    /// let lock = multiproc::thread::RLock::new(());
    /// assert!(!lock.is_locked());
    /// ```
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }

    /// Whether the calling thread holds the lock (Python's `RLock._is_owned()`).
    ///
    /// ```
    /// let lock = multiproc::thread::RLock::new(());
    /// let held = lock.lock();
    /// assert!(lock.is_held_by_current_thread());
    /// ```
    pub fn is_held_by_current_thread(&self) -> bool {
        self.inner.is_owned_by_current_thread()
    }

    /// The value, without locking: `&mut self` proves no other thread can hold the lock.
    ///
    /// ```
    /// let mut lock = multiproc::thread::RLock::new(1);
    /// *lock.get_mut() += 1;
    /// assert_eq!(*lock.lock(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T: Default> Default for RLock<T> {
    fn default() -> RLock<T> {
        RLock::new(T::default())
    }
}

impl<T> From<T> for RLock<T> {
    fn from(value: T) -> RLock<T> {
        RLock::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("RLock");
        match self.inner.try_lock() {
            Some(value) => s.field("data", &&*value),
            None => s.field("data", &format_args!("<locked>")),
        };
        s.finish()
    }
}

/// Holds an [`RLock`] once; dereferences to the data. The lock is free again when the
/// last guard of its holder is dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RLockGuard<'a, T: ?Sized> {
    inner: parking_lot::ReentrantMutexGuard<'a, T>,
}

impl<T: ?Sized> Deref for RLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
