//! [`Barrier`]: a meeting point for a fixed number of processes.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{BODY, Block, block};
use crate::sys::entry::{self, FnAddr};
use crate::sys::{mem, proc};

const STATE_AT: usize = BODY;
const BROKEN_AT: usize = BODY + 4;
const PARTIES_AT: usize = BODY + 8;
/// The generation a [`Barrier::reset`] abandoned, with bit 16 set (0: none yet): its
/// waiters, woken by the generation change, learn from it that they were not released
/// but broken.
const ABANDONED_AT: usize = BODY + 12;
const ABANDONED: u32 = 1 << 16;
/// The default timeout of `wait`, in nanoseconds (0: none), given at construction.
const TIMEOUT_AT: usize = BODY + 16;
/// Set in the arrival count while the last arrival runs the action: later arrivals
/// (of the next round) wait for the release instead of counting themselves in.
const RELEASING: u32 = 1 << 15;
/// The process identity ([`proc::my_identity`]) of the party that set [`RELEASING`]
/// and runs the action (0: none, or not written yet). Sleepers check that it lives: a
/// releaser killed in the action breaks the barrier instead of leaving the bit set for
/// ever. Cleared before the bit is.
const RELEASER_AT: usize = BODY + 24;
/// How often a sleeper checks that the releaser lives, while the action runs.
const CHECK_RELEASER_EVERY: Duration = Duration::from_millis(20);

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
///
/// Python's `Barrier(parties, action, timeout)`: the action runs once per round, in the
/// process of the last party to arrive, before any party is released; the timeout is
/// the default of every [`wait`](Barrier::wait).
///
/// ```
/// use std::time::Duration;
///
/// fn announce() {
///     println!("all arrived");
/// }
///
/// let b = multiproc::sync::Barrier::builder(1)
///     .action(announce)
///     .timeout(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(b.wait(), Ok(0)); // `announce` ran first
/// assert_eq!(b.timeout(), Some(Duration::from_secs(60)));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    block: Arc<Block>,
    /// The action, in this process: it travels with the handle (as Python pickles it
    /// with the barrier), never through the shared memory.
    action: Option<fn()>,
}

/// Settings of a new [`Barrier`]: Python's `Barrier(parties, action=None, timeout=None)`.
///
/// ```
/// let b = multiproc::sync::Barrier::builder(2).build()?;
/// assert_eq!(b.parties(), 2);
/// assert_eq!(b.timeout(), None);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct BarrierBuilder {
    parties: u16,
    action: Option<fn()>,
    timeout: Option<Duration>,
}

impl BarrierBuilder {
    /// Python's `action`: run by exactly one party, the last to arrive, in its own
    /// process, before the others are released. A function, not a closure: it is found
    /// again by address in every process (the same executable), as a `Process` target
    /// is. If it panics, that party's `wait` returns [`BrokenBarrier`] and the barrier
    /// breaks for everyone (Python: the action's exception propagates, the barrier
    /// breaks). If its process dies in it (even by `SIGKILL`), the waiting parties see
    /// it within 20 ms and the barrier breaks for them too (Python's waiters would
    /// wait for ever). While it runs, the round is complete: a waiter whose timeout
    /// passes meanwhile waits for the release and passes, as in Python.
    pub fn action(mut self, action: fn()) -> BarrierBuilder {
        self.action = Some(action);
        self
    }

    /// Python's `timeout`: how long [`Barrier::wait`] waits before it breaks the
    /// barrier, for every handle of it ([`Barrier::wait_timeout`] overrides it).
    pub fn timeout(mut self, timeout: Duration) -> BarrierBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// Creates the barrier: `InvalidInput` for 0 parties, or more than 32767.
    pub fn build(self) -> io::Result<Barrier> {
        if self.parties == 0 || u32::from(self.parties) >= RELEASING {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "parties: a barrier needs 1 to 32767 parties",
            ));
        }
        let block = Block::new(barrier_kind(), RELEASER_AT + 8)?;
        block
            .u32_at(PARTIES_AT)
            .store(u32::from(self.parties), Ordering::Release);
        let nanos = self.timeout.map_or(0, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        block.u64_at(TIMEOUT_AT).store(nanos, Ordering::Release);
        Ok(Barrier {
            block: Arc::new(block),
            action: self.action,
        })
    }
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
    /// A barrier for `parties` (1 to 32767) processes or threads, with no action and
    /// no default timeout (Python's `Barrier(parties)`).
    pub fn new(parties: u16) -> io::Result<Barrier> {
        Barrier::builder(parties).build()
    }

    /// Settings beyond `parties`: an action, a default timeout.
    pub fn builder(parties: u16) -> BarrierBuilder {
        BarrierBuilder {
            parties,
            action: None,
            timeout: None,
        }
    }

    /// The default timeout of [`wait`](Barrier::wait) given at construction (Python's
    /// `timeout`); `None`: it waits for ever.
    pub fn timeout(&self) -> Option<Duration> {
        match self.block.u64_at(TIMEOUT_AT).load(Ordering::Acquire) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// How many must wait for the barrier to open.
    pub fn parties(&self) -> u32 {
        self.block.u32_at(PARTIES_AT).load(Ordering::Acquire)
    }

    /// How many are waiting now.
    pub fn n_waiting(&self) -> u32 {
        self.block.u32_at(STATE_AT).load(Ordering::Acquire) & (RELEASING - 1)
    }

    /// `true` once broken (a timeout or [`Barrier::abort`]), until [`Barrier::reset`].
    pub fn broken(&self) -> bool {
        self.block.u32_at(BROKEN_AT).load(Ordering::Acquire) != 0
    }

    /// Waits for the others; returns this waiter's arrival index (0 to parties − 1).
    /// With a default [`timeout`](Barrier::timeout), as [`wait_timeout`](Barrier::wait_timeout)
    /// with it.
    pub fn wait(&self) -> Result<u32, BrokenBarrier> {
        match self.timeout() {
            None => self.wait_until(None),
            Some(timeout) => self.wait_timeout(timeout),
        }
    }

    /// As [`Barrier::wait`], at most `timeout`: on timeout the barrier breaks, for every
    /// waiter (as in Python).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BrokenBarrier> {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// The last arrival's part: runs the action (if any) while the others still wait,
    /// then releases them, or breaks the barrier if the action panicked.
    fn release(&self, now: u32, index: u32) -> Result<u32, BrokenBarrier> {
        let state = self.block.u32_at(STATE_AT);
        let releaser = self.block.u64_at(RELEASER_AT);
        releaser.store(proc::my_identity(), Ordering::Release);
        if self.action.is_some() {
            // The sleepers nap in slices from now on, to see this process die in it.
            mem::futex_wake_all(state);
        }
        if let Some(action) = self.action
            && std::panic::catch_unwind(action).is_err()
        {
            self.abort();
            return Err(BrokenBarrier);
        }
        releaser.store(0, Ordering::Release);
        let next = ((now >> 16).wrapping_add(1) & 0xffff) << 16;
        // An abort or reset meanwhile broke the round: it stays broken.
        if state
            .compare_exchange(now | RELEASING, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(BrokenBarrier);
        }
        mem::futex_wake_all(state);
        Ok(index)
    }

    /// While `now` says the action runs: `true` if its releaser is known and dead (then
    /// the round is broken here, for everyone), `false` if it may still release.
    fn releaser_died(&self, now: u32) -> bool {
        let releaser = self.block.u64_at(RELEASER_AT).load(Ordering::Acquire);
        if releaser == 0 || proc::identity_alive(releaser) {
            return false;
        }
        let state = self.block.u32_at(STATE_AT);
        self.block.u32_at(BROKEN_AT).store(1, Ordering::Release);
        self.block
            .u32_at(ABANDONED_AT)
            .store((now >> 16) | ABANDONED, Ordering::Release);
        // One sleeper ends the round; the others find it ended (or broken).
        if state
            .compare_exchange(
                now,
                ((now >> 16).wrapping_add(1) & 0xffff) << 16,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.block.u64_at(RELEASER_AT).store(0, Ordering::Release);
            mem::futex_wake_all(state);
        }
        true
    }

    /// Sleeps while the state word is `now` and the action runs, for a slice after which
    /// the releaser is checked again. The deadline is not enforced here: a round in
    /// which everyone arrived is not broken by a timeout (Python's waiters re-check
    /// after the action, under its lock, and pass).
    fn nap_while_releasing(&self, now: u32, deadline: Option<Instant>) {
        let left = mem::time_left(deadline).filter(|l| !l.is_zero());
        let nap = left.map_or(CHECK_RELEASER_EVERY, |l| l.min(CHECK_RELEASER_EVERY));
        mem::futex_wait(self.block.u32_at(STATE_AT), now, Some(nap));
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
            if arrived & RELEASING != 0 {
                // The action of the round before runs: wait for its release (not
                // breaking that complete round if this caller's timeout passes).
                if self.releaser_died(now) {
                    return Err(BrokenBarrier);
                }
                self.nap_while_releasing(now, deadline);
                continue;
            }
            if arrived + 1 == parties {
                if state
                    .compare_exchange(now, now | RELEASING, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return self.release(now, arrived);
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
            if now & RELEASING != 0 {
                // Everyone arrived; the action runs. Wait for it, whatever the timeout,
                // unless its process died.
                if self.releaser_died(now) {
                    return Err(BrokenBarrier);
                }
                self.nap_while_releasing(now, deadline);
                continue;
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
        self.block.u64_at(RELEASER_AT).store(0, Ordering::Release);
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

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        // The action by address, with the executable it is an address in.
        let action = match self.action {
            Some(action) => Some((
                FnAddr::of(action),
                proc::exe_identity().map_err(serde::ser::Error::custom)?,
            )),
            None => None,
        };
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&BlockRef(&self.block))?;
        tuple.serialize_element(&action)?;
        tuple.end()
    }
}

/// The block of a handle as an element of a tuple.
struct BlockRef<'a>(&'a Block);

impl Serialize for BlockRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

struct BlockOf(Block);

impl<'de> Deserialize<'de> for BlockOf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Block::deserialize(deserializer, barrier_kind()).map(BlockOf)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    /// Refuses an action sent by a process running another executable: its address
    /// would mean nothing here.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (BlockOf(block), action) =
            <(BlockOf, Option<(FnAddr, (u64, u64))>)>::deserialize(deserializer)?;
        let action = match action {
            Some((addr, exe)) => {
                let proof = entry::verify(exe).map_err(serde::de::Error::custom)?;
                Some(entry::resolve::<fn()>(&proof, addr))
            }
            None => None,
        };
        Ok(Barrier {
            block: Arc::new(block),
            action,
        })
    }
}
