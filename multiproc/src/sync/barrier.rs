//! [`Barrier`]: a meeting point for a fixed number of processes.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{BODY, Block, block};
use crate::sys::mem;

const STATE_AT: usize = BODY;
const BROKEN_AT: usize = BODY + 4;
const PARTIES_AT: usize = BODY + 8;
/// The generation a [`Barrier::reset`] abandoned, with bit 16 set (0: none yet): its
/// waiters, woken by the generation change, learn from it that they were not released
/// but broken.
const ABANDONED_AT: usize = BODY + 12;
const ABANDONED: u32 = 1 << 16;

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
        let block = Block::new(barrier_kind(), ABANDONED_AT + 4)?;
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
                // Released by the last arrival, or abandoned by a reset (which wrote the
                // abandoned generation before it changed the state word).
                let abandoned = self.block.u32_at(ABANDONED_AT).load(Ordering::Acquire);
                return if abandoned == (generation | ABANDONED) {
                    Err(BrokenBarrier)
                } else {
                    Ok(index)
                };
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
    ///
    /// The waiters sleep on the state word, so the break must change it (a wake-up
    /// alone is lost on a waiter between its check of `broken` and its sleep): like a
    /// reset, it abandons the current generation, which its waiters read as broken.
    pub fn abort(&self) {
        self.block.u32_at(BROKEN_AT).store(1, Ordering::Release);
        self.abandon_generation();
    }

    /// Ends the current generation as abandoned: its waiters wake and get
    /// [`BrokenBarrier`], the next one starts empty.
    fn abandon_generation(&self) {
        let state = self.block.u32_at(STATE_AT);
        let now = state.load(Ordering::Acquire);
        self.block
            .u32_at(ABANDONED_AT)
            .store((now >> 16) | ABANDONED, Ordering::Release);
        state.store(
            ((now >> 16).wrapping_add(1) & 0xffff) << 16,
            Ordering::Release,
        );
        mem::futex_wake_all(state);
    }

    /// Returns the barrier to its empty state (Python's `reset()`): the parties waiting
    /// now get [`BrokenBarrier`], and a broken barrier is usable again.
    pub fn reset(&self) {
        self.abandon_generation();
        self.block.u32_at(BROKEN_AT).store(0, Ordering::Release);
    }
}

handle_serde!(Barrier, barrier_kind());
