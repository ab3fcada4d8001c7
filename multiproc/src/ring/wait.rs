//! Waiting and wake-ups: a waiter spins, then yields, then sleeps on a futex word of the
//! header; a waker clears the sleepers' flag with one swap and makes the `futex_wake`
//! system call only if someone had announced sleep. See `README.md`, "Waiting".

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{H_GET_WAITERS, H_NOT_EMPTY, H_NOT_FULL, H_PUT_WAITERS, RingMap};
use crate::sys::mem;

impl RingMap {
    /// Waits until an item is there or `deadline` passes, taking nothing; `true` if one
    /// is there.
    pub(crate) fn wait_for_items(&self, deadline: Option<Instant>) -> bool {
        let mut waiter = Waiter::new(Deadline::At(deadline));
        loop {
            if self.has_items() {
                return true;
            }
            if !waiter.wait(self, H_GET_WAITERS, H_NOT_EMPTY, || self.has_items()) {
                return false;
            }
        }
    }

    /// Wakes sleepers announced on `flag` (cleared atomically, so a waiter that announces
    /// itself after the swap is seen by the next notify).
    #[inline]
    pub(super) fn notify(&self, flag: usize, epoch: usize) {
        let flag = self.word(flag);
        if flag.load(Ordering::SeqCst) != 0 && flag.swap(0, Ordering::SeqCst) != 0 {
            let epoch = self.word(epoch);
            epoch.fetch_add(1, Ordering::SeqCst);
            mem::futex_wake_all(epoch);
        }
    }

    #[inline]
    pub(super) fn consumed(&self) {
        self.notify(H_PUT_WAITERS, H_NOT_FULL);
    }
}

/// How long a put or get may wait: until an instant (`None`: for ever), or for a
/// duration counted from when it first has to wait (no clock is read before).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Deadline {
    At(Option<Instant>),
    Within(Duration),
}

/// Spin, then yield, then sleep on a futex in slices of [`SLEEP_SLICE`]: a waiting
/// process reacts within microseconds while the other side is busy, costs next to
/// nothing once it sleeps, and does not depend on its waker surviving.
pub(super) struct Waiter {
    deadline: Option<Instant>,
    /// A deadline this long after the first wait (not yet resolved): a call that
    /// needs no wait reads no clock.
    within: Option<Duration>,
    rounds: u32,
    /// When the first wait began.
    since: Option<Instant>,
    /// The deadline had passed already when the call began (a `try_` call): learnt
    /// when first needed (a put asks before its first attempt; a get never), so that a
    /// get that needs no wait reads no clock.
    immediate: std::cell::Cell<Option<bool>>,
}

const SPIN_ROUNDS: u32 = 64;
const YIELD_ROUNDS: u32 = SPIN_ROUNDS + 64;
/// How long a producer waits for room in its ring before it spills items into blobs:
/// long enough that a consumer that is merely slower than the producer is waited for
/// (blobs cost a mapping each), short enough that nobody notices when no one reads.
pub(super) const SPILL_AFTER: Duration = Duration::from_millis(10);

/// The longest a waiter sleeps before it looks again by itself. A waker is whoever
/// made progress (a producer that published, a consumer that claimed), and it may be
/// killed before its wake-up: the sleepers it owed one then find the item (or the
/// room) within a slice, not at the next wake-up, which may never come. An idle waiter
/// pays one futex call per slice; a busy stream never sleeps, so never pays.
pub(super) const SLEEP_SLICE: Duration = Duration::from_millis(20);

impl Waiter {
    pub(super) fn new(deadline: Deadline) -> Waiter {
        let (deadline, within) = match deadline {
            Deadline::At(at) => (at, None),
            Deadline::Within(d) => (None, Some(d)),
        };
        Waiter {
            deadline,
            within,
            rounds: 0,
            since: None,
            immediate: std::cell::Cell::new(match within {
                Some(d) => Some(d.is_zero()),
                None => deadline.is_none().then_some(false),
            }),
        }
    }

    /// The deadline, resolving a relative one now.
    pub(super) fn deadline(&mut self) -> Option<Instant> {
        if let Some(d) = self.within.take() {
            self.deadline = Instant::now().checked_add(d);
        }
        self.deadline
    }

    fn immediate(&self) -> bool {
        if let Some(known) = self.immediate.get() {
            return known;
        }
        let known = self.deadline.is_some_and(|d| d <= Instant::now());
        self.immediate.set(Some(known));
        known
    }

    /// `true` once the other side has not kept up for [`SPILL_AFTER`] (or the
    /// deadline is here: a `try_put` spills rather than fail).
    #[inline]
    pub(super) fn is_patient(&self) -> bool {
        match self.since {
            // Not waited yet: only a call that cannot wait spills at once.
            None => self.immediate(),
            Some(t) => self.immediate() || t.elapsed() >= SPILL_AFTER,
        }
    }

    /// Waits a little for `ready`; `false` once the deadline has passed.
    pub(super) fn wait(
        &mut self,
        q: &RingMap,
        flag: usize,
        epoch: usize,
        ready: impl Fn() -> bool,
    ) -> bool {
        // The deadline is looked at before the first round and after the spinning ones,
        // not in between: a spin round is far shorter than a clock read is worth (a
        // receiver on a busy pipe spins between nearly every message), and the spinning
        // lasts some tens of microseconds in all.
        let left = if self.rounds == 0 || self.rounds >= SPIN_ROUNDS {
            let left = mem::time_left(self.deadline());
            if left == Some(Duration::ZERO) {
                return false;
            }
            left
        } else {
            None
        };
        let since = *self.since.get_or_insert_with(Instant::now);
        self.rounds += 1;
        if self.rounds <= SPIN_ROUNDS {
            for _ in 0..(1 << self.rounds.min(6)) {
                std::hint::spin_loop();
            }
            return true;
        }
        if self.rounds <= YIELD_ROUNDS {
            std::thread::yield_now();
            return true;
        }
        // Until spilling is allowed, sleep no further than the moment it is; and never
        // longer than a slice, whatever the deadline.
        let spill_in = (flag == H_PUT_WAITERS)
            .then(|| SPILL_AFTER.saturating_sub(since.elapsed()))
            .filter(|d| !d.is_zero());
        let nap = [left, spill_in]
            .into_iter()
            .flatten()
            .fold(SLEEP_SLICE, Duration::min);
        let epoch = q.word(epoch);
        let seen = epoch.load(Ordering::SeqCst);
        q.word(flag).store(1, Ordering::SeqCst);
        if !ready() {
            mem::futex_wait(epoch, seen, Some(nap));
        }
        true
    }
}
