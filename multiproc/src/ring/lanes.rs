//! Producer lanes: each producing process claims a lane of the ring and is its only
//! writer; a lane goes back when the process drops its last handle or ends, and a lane
//! whose owner died is taken over. See `README.md`, "Lanes".

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Claimed, H_LANES_HI, Producer, PutFail, RingMap, seq_of};
use crate::sys::cell::ForkMutex;
use crate::sys::proc;

/// How long a producer that found every lane held puts to the shared lane before it
/// looks for a lane of its own again (a scan costs a compare-and-swap per lane).
const SHARED_FOR: Duration = Duration::from_millis(10);

/// Every queue and pipe ring this process has mapped, so that a multiproc child, which
/// ends with `_exit` (no destructors), can still give its lanes back.
static LIVE: ForkMutex<Vec<std::sync::Weak<RingMap>>> = ForkMutex::new(Vec::new());

/// Wraps a new mapping in an `Arc` and records it for [`release_lanes`], which runs at
/// the end of every multiproc child (a child-end hook, registered here: a process can
/// take a lane only in a mapping recorded here first).
pub(crate) fn register(ring: RingMap) -> Arc<RingMap> {
    crate::sys::hooks::at_child_end(release_lanes);
    let ring = Arc::new(ring);
    let mut live = LIVE.lock();
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(&ring));
    ring
}

/// Gives back the lanes this process holds in every queue it still maps: called at the
/// end of a multiproc child, so that the next producer finds them free rather than
/// having to prove their owner dead.
fn release_lanes() {
    let live: Vec<Arc<RingMap>> = LIVE.lock().iter().filter_map(|w| w.upgrade()).collect();
    for ring in live {
        ring.release_lane();
    }
}

impl RingMap {
    /// Takes a free lane, or one whose owner has died (its published messages stay and
    /// come first: per-producer order is kept). When every lane is held by a live
    /// process, the put goes to the shared lane instead (any number of processes may
    /// put): for [`SHARED_FOR`], then the lanes are looked at again.
    pub(super) fn claim(&self, p: &mut Producer) -> Result<Claimed, PutFail> {
        let pid = proc::cached_pid();
        if p.pid != pid {
            *p = Producer {
                pid,
                lane: None,
                identity: proc::identity(pid),
                w: 0,
                r_seen: 0,
                high: 0,
                looked_at: 0,
                spilling: false,
                shared_since: None,
            };
        }
        if let Some(lane) = p.lane {
            return Ok(Claimed::Own(lane));
        }
        if p.shared_since.is_some_and(|t| t.elapsed() < SHARED_FOR) {
            return Ok(Claimed::Shared);
        }
        {
            let free = (0..self.lanes).find(|&lane| {
                self.owner(lane)
                    .compare_exchange(0, p.identity, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            });
            let taken = free.or_else(|| {
                (0..self.lanes).find(|&lane| {
                    let owner = self.owner(lane).load(Ordering::Acquire);
                    owner != p.identity
                        && !proc::identity_alive(owner)
                        && self
                            .owner(lane)
                            .compare_exchange(
                                owner,
                                p.identity,
                                Ordering::AcqRel,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                })
            });
            if let Some(lane) = taken {
                self.word(H_LANES_HI)
                    .fetch_max(lane as u32 + 1, Ordering::AcqRel);
                p.lane = Some(lane);
                p.w = self.w(lane).load(Ordering::Acquire);
                p.r_seen = self.r(lane).load(Ordering::Acquire);
                if seq_of(p.r_seen) == seq_of(p.w) && p.r_seen != p.w {
                    // The previous owner was killed in the middle of a rewind: `r` is
                    // at the front, `w` is not. The lane is empty (equal counts), so no
                    // consumer can move `r` now, and `w` is ours alone: finish the
                    // rewind. See `README.md`, "A rewind cut short".
                    self.w(lane).store(p.r_seen, Ordering::SeqCst);
                    p.w = p.r_seen;
                }
                // A previous owner may have filled the ring: trim it at the first chance.
                p.high = self.ring;
                p.shared_since = None;
                self.look(lane, p)?;
                return Ok(Claimed::Own(lane));
            }
            // Every lane belongs to a live process: share the last one.
            p.shared_since = Some(Instant::now());
            Ok(Claimed::Shared)
        }
    }

    /// Gives this process's lane back (when its last handle goes away).
    pub(crate) fn release_lane(&self) {
        let mut p = self.producer.lock();
        if p.pid == proc::cached_pid()
            && let Some(lane) = p.lane.take()
        {
            let _ = self.owner(lane).compare_exchange(
                p.identity,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }
}
