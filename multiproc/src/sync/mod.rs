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
//! `Semaphore`, `Event`, `Condition` and `Barrier` are futex words in the same kind of
//! block. A semaphore slot taken through a [`Permit`] names its process, so slots a dead
//! process held are taken back by the next acquirer that finds none free (reported as
//! `OwnerDied`); a slot kept with [`Permit::forget`] has no owner, as in Python.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{self, BODY, Block};
use crate::sys::mem;
use crate::sys::robust::{self, Acquired, LockRefused, PodGuard, Wait};

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

macro_rules! handle_serde {
    ($ty:ident, $kind:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.block.serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Ok($ty {
                    block: Arc::new(Block::deserialize(deserializer, $kind)?),
                })
            }
        }
    };
}

// ---- Lock and RLock -------------------------------------------------------------

const MUTEX_AT: usize = BODY;

/// A lock shared by processes (Python's `multiprocessing.Lock`): mutual exclusion with
/// an RAII guard, robust against a holder's death, reporting re-acquisition by its
/// holder (S16, S29, S39).
///
/// ```
/// let lock = multiproc::sync::Lock::new()?;
/// let held = lock.lock().unwrap();
/// assert!(lock.lock().unwrap_err().to_string().contains("already holds"));
/// drop(held);
/// assert!(lock.try_lock().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    block: Arc<Block>,
}

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

fn new_mutex_block(kind: u64, recursive: bool) -> io::Result<Block> {
    let block = Block::new(kind, MUTEX_AT + robust::RobustMutex::SIZE)?;
    block.mutex_at(MUTEX_AT).init(recursive);
    Ok(block)
}

fn lock_block(block: &Block, wait: Wait) -> LockResult<'_> {
    acquired(
        robust::lock_data::<u8>(block.map(), MUTEX_AT, MUTEX_AT, 0, wait)
            .map(|(g, a)| (LockGuard { _inner: g }, a)),
    )
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lock")
    }
}

/// What locking a [`Lock`], [`RLock`] or [`Condition`] gives: the guard, or why not.
pub type LockResult<'a> = Result<LockGuard<'a>, LockError<LockGuard<'a>>>;

/// `lock`, `lock_timeout` and `try_lock` for a type whose block holds a mutex.
macro_rules! guard_methods {
    () => {
        /// Waits for the lock (Python's `acquire()`, `with lock:`).
        pub fn lock(&self) -> LockResult<'_> {
            lock_block(&self.block, Wait::Forever)
        }

        /// Waits at most `timeout` (Python's `acquire(timeout=t)`):
        /// [`LockError::Timeout`].
        pub fn lock_timeout(&self, timeout: Duration) -> LockResult<'_> {
            lock_block(&self.block, until(timeout))
        }

        /// Takes the lock only if that is possible now (Python's `acquire(False)`):
        /// [`LockError::WouldBlock`] otherwise.
        pub fn try_lock(&self) -> LockResult<'_> {
            lock_block(&self.block, Wait::No)
        }
    };
}

fn lock_kind() -> u64 {
    block::kind::<()>("Lock")
}
fn rlock_kind() -> u64 {
    block::kind::<()>("RLock")
}

impl Lock {
    /// A new, unlocked lock.
    pub fn new() -> io::Result<Lock> {
        Ok(Lock {
            block: Arc::new(new_mutex_block(lock_kind(), false)?),
        })
    }

    guard_methods!();
}

handle_serde!(Lock, lock_kind());

/// A re-entrant lock shared by processes (Python's `multiprocessing.RLock`): its holder
/// (a thread of some process) may lock it again; it is free once every guard is gone.
/// Robust like [`Lock`].
///
/// ```
/// let lock = multiproc::sync::RLock::new()?;
/// let outer = lock.lock().unwrap();
/// let inner = lock.lock().unwrap(); // the holder again: fine
/// drop(inner);
/// drop(outer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    block: Arc<Block>,
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLock")
    }
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    pub fn new() -> io::Result<RLock> {
        Ok(RLock {
            block: Arc::new(new_mutex_block(rlock_kind(), true)?),
        })
    }

    guard_methods!();
}

handle_serde!(RLock, rlock_kind());

// ---- Event ----------------------------------------------------------------------

const FLAG_AT: usize = BODY;

/// A flag processes wait for (Python's `multiprocessing.Event`).
///
/// ```
/// let ev = multiproc::sync::Event::new()?;
/// assert!(!ev.wait_timeout(std::time::Duration::from_millis(1)));
/// ev.set();
/// assert!(ev.is_set() && ev.wait_timeout(std::time::Duration::ZERO));
/// ev.clear();
/// assert!(!ev.is_set());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    block: Arc<Block>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

fn event_kind() -> u64 {
    block::kind::<()>("Event")
}

impl Event {
    /// A new event, not set.
    pub fn new() -> io::Result<Event> {
        Ok(Event {
            block: Arc::new(Block::new(event_kind(), FLAG_AT + 4)?),
        })
    }

    /// `true` once set (until cleared).
    pub fn is_set(&self) -> bool {
        self.block.u32_at(FLAG_AT).load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let flag = self.block.u32_at(FLAG_AT);
        flag.store(1, Ordering::Release);
        mem::futex_wake_all(flag);
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.block.u32_at(FLAG_AT).store(0, Ordering::Release);
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits at most `timeout`; `true` if the flag is set (Python's return value).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(deadline(Some(timeout)))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let flag = self.block.u32_at(FLAG_AT);
        loop {
            if flag.load(Ordering::Acquire) != 0 {
                return true;
            }
            let left = mem::time_left(deadline);
            if left == Some(Duration::ZERO) {
                return false;
            }
            mem::futex_wait(flag, 0, left);
        }
    }
}

handle_serde!(Event, event_kind());

// ---- Semaphore ------------------------------------------------------------------

const COUNT_AT: usize = BODY;
const SLEEPERS_AT: usize = BODY + 4;
const BOUND_AT: usize = BODY + 8;
/// Who holds the slots taken through a [`Permit`]: one process identity per entry.
const HOLDERS_AT: usize = BODY + 64;
const HOLDERS: usize = 64;
/// How long an acquirer sleeps before it looks for slots held by dead processes.
const RECOVER_EVERY: Duration = Duration::from_millis(20);

/// A counter of free slots shared by processes (Python's `multiprocessing.Semaphore`,
/// and `BoundedSemaphore` through [`Semaphore::bounded`]).
///
/// A slot taken through a [`Permit`] records its holder (up to 64 at a time). When a
/// process dies holding slots, an acquirer that finds none free takes them back and
/// reports it as [`LockError::OwnerDied`], permit included, as a lock does.
///
/// ```
/// let sem = multiproc::sync::Semaphore::bounded(2)?;
/// {
///     let _a = sem.acquire().unwrap();
///     let _b = sem.acquire().unwrap();
///     assert!(sem.try_acquire().is_err());
/// }
/// assert_eq!(sem.value(), 2);
/// assert!(sem.release().is_err()); // bounded: one release too many
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    block: Arc<Block>,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .finish()
    }
}

/// A slot of a [`Semaphore`]; given back on drop.
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct Permit<'a> {
    sem: &'a Semaphore,
    /// The holder-table entry naming this process, if there was a free one.
    entry: Option<usize>,
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.sem.forget_holder(self.entry);
        let _ = self.sem.release();
    }
}

impl Permit<'_> {
    /// Keeps the slot taken, to be given back by [`Semaphore::release`] (Python's
    /// `acquire()` without a matching `release()` here); the slot is then no longer
    /// recovered if this process dies.
    pub fn forget(self) {
        self.sem.forget_holder(self.entry);
        std::mem::forget(self);
    }
}

/// [`Semaphore::release`] on a bounded semaphore already at its bound (Python raises
/// `ValueError('Semaphore released too many times')`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("semaphore released too many times")]
pub struct TooManyReleases;

fn semaphore_kind() -> u64 {
    block::kind::<()>("Semaphore")
}

impl Semaphore {
    /// A semaphore with `value` free slots (Python's `Semaphore(value)`).
    pub fn new(value: u32) -> io::Result<Semaphore> {
        Semaphore::with_bound(value, u32::MAX)
    }

    /// A semaphore whose value may never exceed its initial `value` (Python's
    /// `BoundedSemaphore(value)`).
    pub fn bounded(value: u32) -> io::Result<Semaphore> {
        Semaphore::with_bound(value, value)
    }

    fn with_bound(value: u32, bound: u32) -> io::Result<Semaphore> {
        let block = Block::new(semaphore_kind(), HOLDERS_AT + HOLDERS * 8)?;
        block.u32_at(COUNT_AT).store(value, Ordering::Relaxed);
        block.u32_at(BOUND_AT).store(bound, Ordering::Release);
        Ok(Semaphore {
            block: Arc::new(block),
        })
    }

    /// Free slots now (Python's `get_value()`).
    pub fn value(&self) -> u32 {
        self.block.u32_at(COUNT_AT).load(Ordering::Acquire)
    }

    fn take(&self) -> bool {
        let count = self.block.u32_at(COUNT_AT);
        let mut now = count.load(Ordering::Acquire);
        while now > 0 {
            match count.compare_exchange_weak(now, now - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(seen) => now = seen,
            }
        }
        false
    }

    fn holder(&self, entry: usize) -> &std::sync::atomic::AtomicU64 {
        self.block.u64_at(HOLDERS_AT + entry * 8)
    }

    /// Records this process as a holder; the entry used, if any was free.
    fn note_holder(&self) -> Option<usize> {
        let me = crate::sys::proc::my_identity();
        (0..HOLDERS).find(|&i| {
            self.holder(i)
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    fn forget_holder(&self, entry: Option<usize>) {
        if let Some(i) = entry {
            self.holder(i).store(0, Ordering::Release);
        }
    }

    /// Gives back the slots of holders that died; how many.
    fn recover(&self) -> u32 {
        let mut recovered = 0;
        for i in 0..HOLDERS {
            let who = self.holder(i).load(Ordering::Acquire);
            if who != 0
                && !crate::sys::proc::identity_alive(who)
                && self
                    .holder(i)
                    .compare_exchange(who, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                let _ = self.release();
                recovered += 1;
            }
        }
        recovered
    }

    fn acquire_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Permit<'_>, LockError<Permit<'_>>> {
        let count = self.block.u32_at(COUNT_AT);
        let sleepers = self.block.u32_at(SLEEPERS_AT);
        let mut owner_died = false;
        loop {
            if self.take() {
                let permit = Permit {
                    sem: self,
                    entry: self.note_holder(),
                };
                return if owner_died {
                    Err(LockError::OwnerDied(permit))
                } else {
                    Ok(permit)
                };
            }
            let left = mem::time_left(deadline);
            if left == Some(Duration::ZERO) {
                return Err(LockError::Timeout);
            }
            // No slot: perhaps a holder died with some.
            if self.recover() > 0 {
                owner_died = true;
                continue;
            }
            let nap = left.map_or(RECOVER_EVERY, |l| l.min(RECOVER_EVERY));
            sleepers.fetch_add(1, Ordering::SeqCst);
            if count.load(Ordering::SeqCst) == 0 {
                mem::futex_wait(count, 0, Some(nap));
            }
            sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits for a free slot. [`LockError::OwnerDied`] (with the permit) when the slot
    /// was recovered from a process that died holding it.
    pub fn acquire(&self) -> Result<Permit<'_>, LockError<Permit<'_>>> {
        self.acquire_until(None)
    }

    /// Waits at most `timeout` for a slot ([`LockError::Timeout`]).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Permit<'_>, LockError<Permit<'_>>> {
        self.acquire_until(Some(Instant::now() + timeout))
    }

    /// Takes a slot only if one is free now ([`LockError::WouldBlock`]).
    pub fn try_acquire(&self) -> Result<Permit<'_>, LockError<Permit<'_>>> {
        if self.take() {
            return Ok(Permit {
                sem: self,
                entry: self.note_holder(),
            });
        }
        if self.recover() > 0 && self.take() {
            return Err(LockError::OwnerDied(Permit {
                sem: self,
                entry: self.note_holder(),
            }));
        }
        Err(LockError::WouldBlock)
    }

    /// Gives a slot back (Python's `release()`, for a slot taken with
    /// [`Permit::forget`], possibly in another process).
    pub fn release(&self) -> Result<(), TooManyReleases> {
        let count = self.block.u32_at(COUNT_AT);
        let bound = self.block.u32_at(BOUND_AT).load(Ordering::Relaxed);
        let mut now = count.load(Ordering::Acquire);
        loop {
            if now >= bound {
                return Err(TooManyReleases);
            }
            match count.compare_exchange_weak(now, now + 1, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        if self.block.u32_at(SLEEPERS_AT).load(Ordering::SeqCst) != 0 {
            mem::futex_wake_all(count);
        }
        Ok(())
    }
}

handle_serde!(Semaphore, semaphore_kind());

// ---- Condition ------------------------------------------------------------------

const SEQ_AT: usize = MUTEX_AT + 64;

/// A condition variable with its own lock, shared by processes (Python's
/// `multiprocessing.Condition`).
///
/// ```
/// let cond = multiproc::sync::Condition::new()?;
/// let guard = cond.lock().unwrap();
/// // Nobody notifies: the wait times out, and the lock is held again after it.
/// let (guard, notified) = cond.wait_timeout(guard, std::time::Duration::from_millis(5)).unwrap();
/// assert!(!notified);
/// drop(guard);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    block: Arc<Block>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Condition")
    }
}

fn condition_kind() -> u64 {
    block::kind::<()>("Condition")
}

impl Condition {
    /// A new condition with its own (non-reentrant, robust) lock.
    pub fn new() -> io::Result<Condition> {
        let block = Block::new(condition_kind(), SEQ_AT + 4)?;
        block.mutex_at(MUTEX_AT).init(false);
        Ok(Condition {
            block: Arc::new(block),
        })
    }

    guard_methods!();

    /// Releases the lock held through `guard`, waits for a notification, and takes the
    /// lock again (Python's `wait()`). Wake-ups may be spurious: check the condition.
    pub fn wait<'a>(
        &'a self,
        guard: LockGuard<'a>,
    ) -> Result<LockGuard<'a>, LockError<LockGuard<'a>>> {
        self.wait_until(guard, None)
            .map(|(g, _)| g)
            .map_err(|e| e.map_guard(|(g, _)| g))
    }

    /// As [`Condition::wait`], at most `timeout`; the flag is `false` on timeout.
    #[allow(clippy::type_complexity)]
    pub fn wait_timeout<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> Result<(LockGuard<'a>, bool), LockError<(LockGuard<'a>, bool)>> {
        self.wait_until(guard, Some(Instant::now() + timeout))
    }

    /// Waits until `ready()` holds (Python's `wait_for`), at most `timeout` if given;
    /// the flag says whether it holds.
    #[allow(clippy::type_complexity)]
    pub fn wait_for<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        timeout: Option<Duration>,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(LockGuard<'a>, bool), LockError<(LockGuard<'a>, bool)>> {
        let deadline = deadline(timeout);
        loop {
            if ready() {
                return Ok((guard, true));
            }
            if mem::time_left(deadline) == Some(Duration::ZERO) {
                return Ok((guard, false));
            }
            guard = self.wait_until(guard, deadline)?.0;
        }
    }

    #[allow(clippy::type_complexity)]
    fn wait_until<'a>(
        &'a self,
        guard: LockGuard<'a>,
        deadline: Option<Instant>,
    ) -> Result<(LockGuard<'a>, bool), LockError<(LockGuard<'a>, bool)>> {
        let seq = self.block.u32_at(SEQ_AT);
        let seen = seq.load(Ordering::SeqCst);
        drop(guard);
        mem::futex_wait(seq, seen, mem::time_left(deadline));
        let notified = seq.load(Ordering::SeqCst) != seen;
        let notified_or_not = |g| (g, notified);
        match lock_block(&self.block, Wait::Forever) {
            Ok(g) => Ok(notified_or_not(g)),
            Err(e) => Err(e.map_guard(notified_or_not)),
        }
    }

    /// Wakes one waiter (Python's `notify()`; `notify(n)` is [`Condition::notify_n`]).
    pub fn notify(&self) {
        self.notify_n(1);
    }

    /// Wakes up to `n` waiters.
    pub fn notify_n(&self, n: u32) {
        let seq = self.block.u32_at(SEQ_AT);
        seq.fetch_add(1, Ordering::SeqCst);
        let _ = rustix::thread::futex::wake(seq, rustix::thread::futex::Flags::empty(), n);
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        let seq = self.block.u32_at(SEQ_AT);
        seq.fetch_add(1, Ordering::SeqCst);
        mem::futex_wake_all(seq);
    }
}

handle_serde!(Condition, condition_kind());

// ---- Barrier --------------------------------------------------------------------

const STATE_AT: usize = BODY;
const BROKEN_AT: usize = BODY + 4;
const PARTIES_AT: usize = BODY + 8;

/// Why [`Barrier::wait`] did not complete (Python's `BrokenBarrierError`): a waiter
/// timed out, or someone called [`Barrier::abort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the barrier is broken")]
pub struct BrokenBarrier;

/// A meeting point for a fixed number of processes (Python's `multiprocessing.Barrier`):
/// each `wait` returns once `parties` of them are waiting, all together.
///
/// ```
/// let b = multiproc::sync::Barrier::new(1)?;
/// assert_eq!(b.wait(), Ok(0)); // one party: passes at once
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    block: Arc<Block>,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .finish()
    }
}

fn barrier_kind() -> u64 {
    block::kind::<()>("Barrier")
}

impl Barrier {
    /// A barrier for `parties` (1 to 65535) processes or threads.
    pub fn new(parties: u16) -> io::Result<Barrier> {
        if parties == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a barrier needs a party",
            ));
        }
        let block = Block::new(barrier_kind(), PARTIES_AT + 4)?;
        block
            .u32_at(PARTIES_AT)
            .store(u32::from(parties), Ordering::Release);
        Ok(Barrier {
            block: Arc::new(block),
        })
    }

    /// How many must wait for the barrier to open.
    pub fn parties(&self) -> u32 {
        self.block.u32_at(PARTIES_AT).load(Ordering::Acquire)
    }

    /// How many are waiting now.
    pub fn n_waiting(&self) -> u32 {
        self.block.u32_at(STATE_AT).load(Ordering::Acquire) & 0xffff
    }

    /// `true` once broken (a timeout or [`Barrier::abort`]), until [`Barrier::reset`].
    pub fn broken(&self) -> bool {
        self.block.u32_at(BROKEN_AT).load(Ordering::Acquire) != 0
    }

    /// Waits for the others; returns this waiter's arrival index (0 to parties − 1).
    pub fn wait(&self) -> Result<u32, BrokenBarrier> {
        self.wait_until(None)
    }

    /// As [`Barrier::wait`], at most `timeout`: on timeout the barrier breaks, for every
    /// waiter (as in Python).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BrokenBarrier> {
        self.wait_until(Some(Instant::now() + timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<u32, BrokenBarrier> {
        let state = self.block.u32_at(STATE_AT);
        let parties = self.parties();
        // The state word is (generation << 16) | arrived: one atomic for both, so a fast
        // process of the next round cannot be counted in this one.
        let (generation, index) = loop {
            if self.broken() {
                return Err(BrokenBarrier);
            }
            let now = state.load(Ordering::Acquire);
            let (generation, arrived) = (now >> 16, now & 0xffff);
            if arrived + 1 == parties {
                let next = (generation.wrapping_add(1) & 0xffff) << 16;
                if state
                    .compare_exchange(now, next, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    mem::futex_wake_all(state);
                    return Ok(arrived);
                }
            } else if state
                .compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break (generation, arrived);
            }
        };
        loop {
            let now = state.load(Ordering::Acquire);
            if now >> 16 != generation {
                return Ok(index);
            }
            if self.broken() {
                return Err(BrokenBarrier);
            }
            let left = mem::time_left(deadline);
            if left == Some(Duration::ZERO) {
                self.abort();
                return Err(BrokenBarrier);
            }
            mem::futex_wait(state, now, left);
        }
    }

    /// Breaks the barrier: current and future waiters get [`BrokenBarrier`].
    pub fn abort(&self) {
        self.block.u32_at(BROKEN_AT).store(1, Ordering::Release);
        mem::futex_wake_all(self.block.u32_at(STATE_AT));
    }

    /// Makes a broken barrier usable again, with nobody waiting.
    pub fn reset(&self) {
        let state = self.block.u32_at(STATE_AT);
        let now = state.load(Ordering::Acquire);
        state.store(
            ((now >> 16).wrapping_add(1) & 0xffff) << 16,
            Ordering::Release,
        );
        self.block.u32_at(BROKEN_AT).store(0, Ordering::Release);
        mem::futex_wake_all(state);
    }
}

handle_serde!(Barrier, barrier_kind());
