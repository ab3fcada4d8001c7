//! [`Condition`]: a condition variable with its own lock, shared by processes.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Block, LockError, LockGuard, MUTEX_AT, block, deadline, lock_block};
use crate::sys::mem;
use crate::sys::robust::Wait;

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
