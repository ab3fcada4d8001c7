//! [`Semaphore`] (and Python's `BoundedSemaphore`): slots shared by processes, taken
//! back from holders that died.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{BODY, Block, LockError, block};
use crate::sys::mem;

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
