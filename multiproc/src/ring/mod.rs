//! The lock-free shared-memory ring under the cross-process queues and pipes: one memfd,
//! mapped by every process that holds a handle, with no lock in it, so that a process
//! killed at any instruction leaves nothing held and everything it published readable.
//!
//! The design — the memory layout, the protocol of a put and a get, what a process
//! that dies at each step leaves behind, and why that is correct — is written down in
//! `README.md` beside this file. Keep the two in step.
//!
//! * `mod.rs`: the mapping ([`RingMap`]), records and cursors, putting and getting,
//!   task accounting;
//! * `lanes.rs`: producer lanes (claiming, taking over a dead owner's, giving back,
//!   `release_lanes` at a child's end);
//! * `wait.rs`: waiting (spin, yield, futex) and wake-ups;
//! * `tests.rs`: unit tests of the layout-level behaviour.
//!
//! It uses only `sys` and `codec`; queues (`queue::mp`), pipes (`connection`) and,
//! through them, pools sit on top of it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::sys::cell::ForkMutex;
use crate::sys::mem::{self, Mapping};
use crate::sys::robust::{LockRefused, RobustMutex};

mod lanes;
#[cfg(test)]
mod tests;
mod wait;

pub(crate) use lanes::register;
pub(crate) use wait::Deadline;
use wait::Waiter;

const MAGIC: u64 = u64::from_le_bytes(*b"MPQUEUE1");
const PAGE: usize = 4096;
const LANE_STRIDE: usize = 256;
const FILE_LEN: u64 = 1 << 60;
const BLOB_ALIGN: u64 = 2 << 20;

// Header offsets. Words written by different parties sit on different cache lines.
const H_MAGIC: usize = 0;
const H_FINGERPRINT: usize = 8;
const H_LANES: usize = 16;
const H_RING: usize = 24;
const H_MAXSIZE: usize = 32;
const H_MAX_MESSAGE: usize = 40;
const H_JOINABLE: usize = 48;
const H_BLOB_NEXT: usize = 128;
const H_TICKET: usize = 640;
const H_LANES_HI: usize = 192;
const H_CLOSED: usize = 196;
/// `H_CLOSED` after `shutdown(true)`.
const SHUT_DOWN_IMMEDIATELY: u32 = 2;
const H_GET_WAITERS: usize = 256;
const H_NOT_EMPTY: usize = 260;
const H_PUT_WAITERS: usize = 384;
const H_NOT_FULL: usize = 388;
const H_UNFINISHED: usize = 512;

// Lane control offsets.
const L_OWNER: usize = 0;
/// The shared lane's robust mutex (its producers' lock).
const L_LOCK: usize = 64;
const L_W: usize = 8;
const L_R: usize = 128;

// Records, 8-aligned: a 16-byte header (`kind << 32 | len` at +0, the ticket at +8),
// then `len` bytes. `INLINE` carries the postcard body; `BLOB` 16 bytes, the blob's file
// offset and body length; `WRAP` (header word only) sends readers back to offset 0.
const INLINE: u64 = 1;
const BLOB: u64 = 2;
const WRAP: u64 = 3;
const REC_HEADER: usize = 16;
const BLOB_RECORD: usize = REC_HEADER + 16;

/// Items up to this size (encoded) are copied through the ring; larger ones get a blob.
const MAX_INLINE: usize = 4 << 20;
/// Past this offset a producer goes back to the front of its ring as soon as there is
/// room there, so that a steady stream keeps reusing the same warm pages.
const HOT: usize = 1 << 20;
/// After a burst has pushed a lane beyond this offset, the pages past it are given back
/// to the kernel once the lane is empty again.
const KEEP: usize = 2 << 20;
/// Past [`HOT`], a producer refreshes its view of the read cursor every this many bytes.
const LOOK_EVERY: usize = 64 << 10;

// A cursor: a message count (35 bits; `WRAP` does not count) above the ring offset in
// 8-byte units (29 bits), so that `w.seq - r.seq` is a lane's length and a cursor value
// does not come back while anyone may hold an old copy.
const OFF_BITS: u32 = 29;
const SEQ_MASK: u64 = (1 << (64 - OFF_BITS)) - 1;
/// Largest ring a cursor can address.
pub(crate) const MAX_RING: usize = (1 << OFF_BITS) * 8;

fn cursor(seq: u64, off: usize) -> u64 {
    ((seq & SEQ_MASK) << OFF_BITS) | (off as u64 >> 3)
}
fn seq_of(c: u64) -> u64 {
    c >> OFF_BITS
}
fn off_of(c: u64) -> usize {
    ((c & ((1 << OFF_BITS) - 1)) << 3) as usize
}
/// Messages between cursor `r` and cursor `w` of one lane.
fn pending(w: u64, r: u64) -> u64 {
    seq_of(w).wrapping_sub(seq_of(r)) & SEQ_MASK
}
fn round8(n: usize) -> usize {
    (n + 7) & !7
}
fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// Geometry and typing of a new queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) lanes: usize,
    pub(crate) ring: usize,
    pub(crate) maxsize: usize,
    pub(crate) max_message: usize,
    pub(crate) joinable: bool,
    pub(crate) fingerprint: u64,
}

/// Why an item was not put.
#[derive(Debug)]
pub(crate) enum PutFail {
    Full,
    /// The ring was shut down (`shutdown`).
    ShutDown,
    Codec(CodecError),
    Io(io::Error),
}

/// Why no item was got.
#[derive(Debug)]
pub(crate) enum GetFail {
    Empty,
    /// The ring was shut down (`shutdown`).
    ShutDown,
    Codec(CodecError),
    Io(io::Error),
}

/// What a consumer saw at the read cursor of a lane.
#[derive(Debug, Clone, Copy)]
struct Head {
    lane: usize,
    r: u64,
    w: u64,
    pos: usize,
    kind: u64,
    len: usize,
    ticket: u64,
}

/// The lane this process writes, and what it knows of it.
#[derive(Debug, Default)]
struct Producer {
    /// The pid that claimed `lane`; a forked child inherits the struct but not the lane.
    pid: u32,
    lane: Option<usize>,
    identity: u64,
    /// The lane's write cursor: only this producer stores it, so it need not be read
    /// back from the shared line (which the consumers keep pulling to their cores).
    w: u64,
    /// Last read cursor seen; refreshed only when it seems to leave too little room.
    r_seen: u64,
    /// Highest ring offset this process may have touched since the lane last shrank.
    high: usize,
    /// Write offset at which `r_seen` was last refreshed past the warm front.
    looked_at: usize,
    /// The ring was full and the last item went into a blob: further items do the
    /// same at once, until the ring has room again.
    spilling: bool,
    /// Since when every claimable lane was held by a live process: until a moment
    /// later, puts go to the shared lane without scanning the lanes again.
    shared_since: Option<Instant>,
}

/// Where a put goes: the process's own lane, or the shared one.
pub(super) enum Claimed {
    Own(usize),
    Shared,
}

/// One process's view of a ring (a queue's, or one direction of a pipe): the mapping and
/// this process's producer state.
#[derive(Debug)]
pub(crate) struct RingMap {
    fd: OwnedFd,
    map: Mapping,
    lanes: usize,
    ring: usize,
    ring_base: usize,
    blob_base: u64,
    maxsize: usize,
    /// This process's limit on item size (starts as the queue's; a `Connection` end
    /// can lower it for itself).
    max_message: std::sync::atomic::AtomicUsize,
    max_inline: usize,
    hot: usize,
    joinable: bool,
    producer: ForkMutex<Producer>,
    /// Per lane, the write cursor this process saw last: while the read cursor is
    /// behind it, consumers need not touch the producer's cache line.
    w_seen: Box<[AtomicU64]>,
}

/// The mapping's geometry for `lanes` claimable lanes: one more, the shared lane, follows
/// them (see `lanes.rs`).
fn layout(lanes: usize, ring: usize) -> (usize, usize, u64) {
    let lanes = lanes + 1;
    let ring_base = (PAGE + lanes * LANE_STRIDE).div_ceil(PAGE) * PAGE;
    let map_len = ring_base + lanes * ring;
    let blob_base = round_up(map_len as u64, BLOB_ALIGN);
    (ring_base, map_len, blob_base)
}

impl RingMap {
    /// Creates a queue in a fresh memfd.
    pub(crate) fn create(config: Config) -> io::Result<RingMap> {
        let Config {
            lanes,
            ring,
            maxsize,
            max_message,
            joinable,
            fingerprint,
        } = config;
        let fd = mem::memfd("multiproc-queue", FILE_LEN as usize)?;
        let (_, map_len, blob_base) = layout(lanes, ring);
        let map = Mapping::new(&fd, map_len)?;
        map.u64_at(H_FINGERPRINT)
            .store(fingerprint, Ordering::Relaxed);
        map.u64_at(H_LANES).store(lanes as u64, Ordering::Relaxed);
        map.u64_at(H_RING).store(ring as u64, Ordering::Relaxed);
        map.u64_at(H_MAXSIZE)
            .store(maxsize as u64, Ordering::Relaxed);
        map.u64_at(H_MAX_MESSAGE)
            .store(max_message as u64, Ordering::Relaxed);
        map.u64_at(H_JOINABLE)
            .store(joinable as u64, Ordering::Relaxed);
        map.u64_at(H_BLOB_NEXT).store(blob_base, Ordering::Relaxed);
        RobustMutex::at(&map, PAGE + lanes * LANE_STRIDE + L_LOCK).init(false);
        map.u64_at(H_MAGIC).store(MAGIC, Ordering::Release);
        Ok(RingMap::from_parts(fd, map, config))
    }

    /// Maps a queue received from another process, checking that it is one, of the
    /// expected item type.
    pub(crate) fn open(fd: OwnedFd, fingerprint: u64) -> io::Result<RingMap> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let mut head = [0u8; 56];
        if mem::read_at(&fd, &mut head, 0)? != head.len() {
            return Err(bad("not a multiproc queue: short header"));
        }
        let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
        if word(H_MAGIC) != MAGIC {
            return Err(bad("not a multiproc queue: bad magic"));
        }
        if word(H_FINGERPRINT) != fingerprint {
            return Err(bad("the queue carries a different item type"));
        }
        let lanes = word(H_LANES) as usize;
        let ring = word(H_RING) as usize;
        if !(1..=4096).contains(&lanes) || !(PAGE..=MAX_RING).contains(&ring) || ring % PAGE != 0 {
            return Err(bad("not a multiproc queue: bad geometry"));
        }
        let (_, map_len, _) = layout(lanes, ring);
        if mem::file_len(&fd)? < FILE_LEN {
            return Err(bad("not a multiproc queue: short file"));
        }
        let map = Mapping::new(&fd, map_len)?;
        let config = Config {
            lanes,
            ring,
            maxsize: word(H_MAXSIZE) as usize,
            max_message: word(H_MAX_MESSAGE) as usize,
            joinable: word(H_JOINABLE) != 0,
            fingerprint,
        };
        Ok(RingMap::from_parts(fd, map, config))
    }

    fn from_parts(fd: OwnedFd, map: Mapping, config: Config) -> RingMap {
        let (ring_base, _, blob_base) = layout(config.lanes, config.ring);
        RingMap {
            fd,
            map,
            lanes: config.lanes,
            ring: config.ring,
            ring_base,
            blob_base,
            maxsize: config.maxsize,
            max_message: std::sync::atomic::AtomicUsize::new(config.max_message),
            max_inline: (config.ring / 2).min(MAX_INLINE),
            hot: (config.ring / 4).min(HOT),
            joinable: config.joinable,
            producer: ForkMutex::new(Producer::default()),
            w_seen: (0..=config.lanes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    /// Lowers (or raises) the item size this process accepts and sends.
    pub(crate) fn set_max_message(&self, bytes: usize) {
        self.max_message.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn maxsize(&self) -> usize {
        self.maxsize
    }
    pub(crate) fn is_joinable(&self) -> bool {
        self.joinable
    }

    #[inline]
    fn word(&self, off: usize) -> &AtomicU32 {
        self.map.u32_at(off)
    }
    #[inline]
    fn owner(&self, lane: usize) -> &AtomicU64 {
        self.map.u64_at(PAGE + lane * LANE_STRIDE + L_OWNER)
    }
    #[inline]
    fn w(&self, lane: usize) -> &AtomicU64 {
        self.map.u64_at(PAGE + lane * LANE_STRIDE + L_W)
    }
    #[inline]
    fn r(&self, lane: usize) -> &AtomicU64 {
        self.map.u64_at(PAGE + lane * LANE_STRIDE + L_R)
    }
    #[inline]
    fn ring_at(&self, lane: usize, off: usize) -> usize {
        self.ring_base + lane * self.ring + off
    }
    /// Lanes any producer has written (claimable ones, then the shared one).
    #[inline]
    fn lanes_in_use(&self) -> usize {
        (self.word(H_LANES_HI).load(Ordering::Acquire) as usize).min(self.lanes + 1)
    }

    /// Items in the queue now (approximate while others put and get).
    pub(crate) fn qsize(&self) -> usize {
        (0..self.lanes_in_use())
            .map(|lane| {
                let r = self.r(lane).load(Ordering::Acquire);
                let w = self.w(lane).load(Ordering::Acquire);
                pending(w, r) as usize
            })
            .sum()
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.word(H_CLOSED).load(Ordering::Acquire) != 0
    }

    /// `true` once `shutdown(true)` was called: the items left are to be dropped.
    pub(crate) fn is_shut_down_immediately(&self) -> bool {
        self.word(H_CLOSED).load(Ordering::SeqCst) == SHUT_DOWN_IMMEDIATELY
    }

    /// Python 3.13's `shutdown(immediate)`: no more puts; gets drain what is left, then
    /// fail, or with `immediate` fail at once (the caller drops the items left with
    /// [`discard`](Self::discard)). `H_CLOSED` only grows: 1, then 2 for immediate.
    pub(crate) fn shutdown(&self, immediate: bool) {
        let state = if immediate { SHUT_DOWN_IMMEDIATELY } else { 1 };
        self.word(H_CLOSED).fetch_max(state, Ordering::SeqCst);
        for (flag, epoch) in [(H_GET_WAITERS, H_NOT_EMPTY), (H_PUT_WAITERS, H_NOT_FULL)] {
            self.word(flag).store(0, Ordering::SeqCst);
            self.word(epoch).fetch_add(1, Ordering::SeqCst);
            mem::futex_wake_all(self.word(epoch));
        }
        mem::futex_wake_all(self.word(H_UNFINISHED));
    }

    // ---- producing -------------------------------------------------------------

    /// When the lane is empty, moves both cursors back to offset 0 (same sequence
    /// number, so nobody sees an item appear or vanish): the next records go to the
    /// front, into pages that are mapped and warm, and the whole ring is free again.
    /// Consumers only move `r` while `w` is ahead of it in count, and `w` is ours, so
    /// the swap cannot race with a successful take. An owner killed between the two
    /// steps leaves equal counts at different offsets; the next owner finishes the
    /// rewind when it claims the lane (`README.md`, "A rewind cut short").
    #[inline]
    fn rewind(&self, lane: usize, p: &mut Producer) {
        if p.r_seen != p.w || off_of(p.w) == 0 {
            return;
        }
        let front = cursor(seq_of(p.w), 0);
        if self
            .r(lane)
            .compare_exchange(p.w, front, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            self.w(lane).store(front, Ordering::Release);
            p.w = front;
            p.r_seen = front;
            if p.high > KEEP {
                // A burst is over: give the pages beyond the warm front back.
                let start = self.ring_at(lane, KEEP) as u64;
                let _ = mem::punch_hole(&self.fd, start, (p.high - KEEP) as u64);
                p.high = KEEP;
            }
        }
    }

    /// Where a record of `size` bytes goes in the lane, given its cursors: `(offset,
    /// wrap)`, where `wrap` says a `WRAP` marker goes at the current write offset first.
    ///
    /// At least `slack` bytes must stay free besides: inline records leave an eighth of
    /// the ring to blob records, so that a lane full of items can still spill.
    fn place(&self, w: u64, r: u64, size: usize, slack: usize) -> Option<(usize, bool)> {
        let (wo, ro) = (off_of(w), off_of(r));
        if ro <= wo {
            // Same lap (or empty): free space is [wo, ring) and [0, ro). A record placed
            // at the front ends strictly before `ro`, so never on the WRAP marker.
            if self.ring - wo + ro < size + slack {
                return None;
            }
            let fits_here = wo + size <= self.ring;
            let fits_front = size + slack < ro;
            if fits_here && !(wo >= self.hot && fits_front) {
                Some((wo, false))
            } else if fits_front {
                Some((0, wo < self.ring))
            } else {
                None
            }
        } else {
            // The reader is a lap behind: free space is [wo, ro), kept strictly below ro
            // so that equal offsets always mean "empty".
            (wo + size + slack < ro).then_some((wo, false))
        }
    }

    /// Puts one item: encoded straight into the lane's ring, or into a blob when large
    /// (or when the ring has room only for a blob record). Waits for room until
    /// `deadline` (`None`: for ever).
    pub(crate) fn put<T: Serialize + ?Sized>(
        &self,
        item: &T,
        deadline: Option<Instant>,
    ) -> Result<(), PutFail> {
        self.put_until(item, Deadline::At(deadline))
    }

    /// [`put`](Self::put) with a [`Deadline`] that may be relative.
    pub(crate) fn put_until<T: Serialize + ?Sized>(
        &self,
        item: &T,
        deadline: Deadline,
    ) -> Result<(), PutFail> {
        codec::encoding::<T, _>(|| self.put_within(item, deadline))
            .unwrap_or_else(|panicked| Err(PutFail::Codec(panicked)))
    }

    /// [`put_until`](Self::put_until) inside its guard: where the user's `Serialize`
    /// panics, nothing is published yet and every lock goes back by `Drop`.
    fn put_within<T: Serialize + ?Sized>(
        &self,
        item: &T,
        deadline: Deadline,
    ) -> Result<(), PutFail> {
        let len = codec::size_within(item).map_err(PutFail::Codec)?;
        let max = self.max_message.load(Ordering::Relaxed);
        if len > max {
            return Err(PutFail::Codec(CodecError::Oversized { size: len, max }));
        }
        let mut waiter = Waiter::new(deadline);
        loop {
            if self.is_closed() {
                return Err(PutFail::ShutDown);
            }
            let mut stuck = None;
            if self.maxsize == 0 || self.qsize() < self.maxsize {
                let patient = waiter.is_patient();
                match self.try_put(item, len, &mut waiter, patient)? {
                    None => {
                        self.notify(H_GET_WAITERS, H_NOT_EMPTY);
                        return Ok(());
                    }
                    Some(lane_and_r) => stuck = Some(lane_and_r),
                }
            }
            let ready = || {
                self.is_closed()
                    || match stuck {
                        // The lane was full: wait for a consumer to take from it.
                        Some((lane, r)) => self.r(lane).load(Ordering::Acquire) != r,
                        None => self.qsize() < self.maxsize,
                    }
            };
            if !waiter.wait(self, H_PUT_WAITERS, H_NOT_FULL, ready) {
                return Err(PutFail::Full);
            }
        }
    }

    /// One attempt, up to and including the publish (the caller wakes consumers);
    /// when the lane has no room, `Ok(Some((lane, r)))` with the read cursor that left
    /// too little of it.
    /// An item small enough for the ring spills into a blob only with `spill`: blobs
    /// cost a mapping each, so a producer first gives a busy consumer a moment to make
    /// room.
    fn try_put<T: Serialize + ?Sized>(
        &self,
        item: &T,
        len: usize,
        waiter: &mut Waiter,
        spill: bool,
    ) -> Result<Option<(usize, u64)>, PutFail> {
        let mut p = self.producer.lock();
        let lane = match self.claim(&mut p)? {
            Claimed::Own(lane) => lane,
            Claimed::Shared => {
                return self.try_put_shared(&p, item, len, waiter.deadline(), spill);
            }
        };
        self.put_in(lane, &mut p, item, len, spill)
    }

    /// [`try_put`](Self::try_put) on the shared lane: under its robust lock, as the
    /// lane's producer for one item, its cursors read from the shared memory (a holder
    /// killed mid-put left them as they were before it: it publishes last).
    fn try_put_shared<T: Serialize + ?Sized>(
        &self,
        me: &Producer,
        item: &T,
        len: usize,
        deadline: Option<Instant>,
        spill: bool,
    ) -> Result<Option<(usize, u64)>, PutFail> {
        let lane = self.lanes;
        let lock = RobustMutex::at(&self.map, PAGE + lane * LANE_STRIDE + L_LOCK);
        match lock.lock(deadline) {
            Ok(_) => {}
            Err(LockRefused::Timeout) => return Err(PutFail::Full),
            // Only the holder's own thread could be refused (it never waits holding it).
            Err(e) => return Err(PutFail::Io(io::Error::other(format!("{e:?}")))),
        }
        // Unlocked by `Drop`: also when the user's `Serialize` panics below.
        let _held = Held(lock);
        let mut p = Producer {
            pid: me.pid,
            lane: Some(lane),
            identity: me.identity,
            w: self.w(lane).load(Ordering::Acquire),
            r_seen: self.r(lane).load(Ordering::Acquire),
            high: 0,
            looked_at: 0,
            spilling: false,
            shared_since: None,
        };
        if seq_of(p.r_seen) == seq_of(p.w) && p.r_seen != p.w {
            // A holder killed in the middle of a rewind (see `claim`).
            self.w(lane).store(p.r_seen, Ordering::SeqCst);
            p.w = p.r_seen;
        }
        p.high = off_of(p.w);
        self.look(lane, &mut p).and_then(|()| {
            self.word(H_LANES_HI)
                .fetch_max(lane as u32 + 1, Ordering::AcqRel);
            self.put_in(lane, &mut p, item, len, spill)
        })
    }

    /// The rest of [`try_put`](Self::try_put), on `lane`, which `p` may write.
    fn put_in<T: Serialize + ?Sized>(
        &self,
        lane: usize,
        p: &mut Producer,
        item: &T,
        len: usize,
        spill: bool,
    ) -> Result<Option<(usize, u64)>, PutFail> {
        let inline = REC_HEADER + round8(len);
        // Inline if small enough and there is room (first by the read cursor seen
        // last, which can only understate the room, then by a fresh one); otherwise a
        // blob, whose record needs only a few bytes of ring.
        let small = len + REC_HEADER <= self.max_inline;
        let slack = self.ring / 8;
        let wo = off_of(p.w);
        if wo >= self.hot && wo.abs_diff(p.looked_at) >= LOOK_EVERY {
            // Past the warm front: look where the consumers are now and then, to go back
            // as soon as there is room (and to notice an empty lane, which is rewound
            // and trimmed), without pulling their cache line over on every put.
            self.look(lane, p)?;
            p.looked_at = wo;
        }
        self.rewind(lane, p);
        let mut spot = small
            .then(|| self.place(p.w, p.r_seen, inline, slack))
            .flatten();
        if spot.is_none() {
            self.look(lane, p)?;
            self.rewind(lane, p);
            spot = small
                .then(|| self.place(p.w, p.r_seen, inline, slack))
                .flatten();
        }
        let w = p.w;
        let is_inline = spot.is_some();
        if small && !spill && !p.spilling && !is_inline {
            return Ok(Some((lane, p.r_seen)));
        }
        let Some((pos, wrap)) = spot.or_else(|| self.place(w, p.r_seen, BLOB_RECORD, 0)) else {
            return Ok(Some((lane, p.r_seen)));
        };
        p.spilling = small && !is_inline;
        let base = self.ring_at(lane, pos);
        let ticket = self.map.u64_at(H_TICKET).fetch_add(1, Ordering::Relaxed);
        self.map.u64_at(base + 8).store(ticket, Ordering::Relaxed);
        let size = if is_inline {
            self.map
                .write_with(base + REC_HEADER, len, |buf| codec::write_within(item, buf))
                .map_err(PutFail::Codec)?;
            self.map
                .u64_at(base)
                .store(INLINE << 32 | len as u64, Ordering::Relaxed);
            inline
        } else {
            let offset = self.write_blob(item, len)?;
            self.map
                .u64_at(base + REC_HEADER)
                .store(offset, Ordering::Relaxed);
            self.map
                .u64_at(base + REC_HEADER + 8)
                .store(len as u64, Ordering::Relaxed);
            self.map
                .u64_at(base)
                .store(BLOB << 32 | 16, Ordering::Relaxed);
            BLOB_RECORD
        };
        if wrap {
            let at = self.ring_at(lane, off_of(w));
            self.map.u64_at(at).store(WRAP << 32, Ordering::Relaxed);
        }
        if self.joinable {
            self.word(H_UNFINISHED).fetch_add(1, Ordering::SeqCst);
        }
        // Publish: everything written above becomes visible with the cursor.
        p.w = cursor(seq_of(w) + 1, pos + size);
        p.high = p.high.max(pos + size);
        self.w(lane).store(p.w, Ordering::SeqCst);
        Ok(None)
    }

    /// Reads where the lane's consumers are, refusing cursors no process of ours could
    /// have written: a read cursor past the ring, ahead of the write cursor or further
    /// behind it than the ring holds records, or a write cursor past the ring (as a new
    /// owner finds it). Someone scribbled on the shared memory; trusted, the cursors
    /// would have this put write past the lane into the next one. The lane is emptied
    /// (as a consumer does on a record no sender wrote) and the put fails.
    fn look(&self, lane: usize, p: &mut Producer) -> Result<(), PutFail> {
        let r = self.r(lane).load(Ordering::Acquire);
        if off_of(p.w) <= self.ring
            && off_of(r) <= self.ring
            && pending(p.w, r) as usize <= self.ring / REC_HEADER
        {
            p.r_seen = r;
            return Ok(());
        }
        let fresh = cursor(seq_of(p.w), 0);
        self.w(lane).store(fresh, Ordering::SeqCst);
        let _ = self
            .r(lane)
            .compare_exchange(r, fresh, Ordering::SeqCst, Ordering::Acquire);
        p.w = fresh;
        p.r_seen = fresh;
        p.high = self.ring;
        Err(PutFail::Codec(CodecError::Corrupt(
            "queue cursors no process of the queue wrote",
        )))
    }

    /// Writes a large body into a fresh blob; returns its file offset.
    fn write_blob<T: Serialize + ?Sized>(&self, item: &T, len: usize) -> Result<u64, PutFail> {
        let span = round_up(len.max(1) as u64, PAGE as u64);
        let offset = self
            .map
            .u64_at(H_BLOB_NEXT)
            .fetch_add(span, Ordering::AcqRel);
        if offset.saturating_add(span) > FILE_LEN || offset < self.blob_base {
            return Err(PutFail::Io(io::Error::other("queue blob space exhausted")));
        }
        let mut blob =
            Mapping::range(&self.fd, offset, span as usize, true).map_err(PutFail::Io)?;
        codec::write_within(item, &mut blob.as_mut_slice()[..len]).map_err(PutFail::Codec)?;
        Ok(offset)
    }

    // ---- consuming -------------------------------------------------------------

    /// Takes one item, waiting until `deadline` (`None`: for ever). Once the queue is
    /// shut down and drained, fails with `ShutDown`.
    pub(crate) fn get<T: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<T, GetFail> {
        self.get_until(Deadline::At(deadline))
    }

    /// [`get`](Self::get) with a [`Deadline`] that may be relative.
    pub(crate) fn get_until<T: DeserializeOwned>(&self, deadline: Deadline) -> Result<T, GetFail> {
        let mut waiter = Waiter::new(deadline);
        loop {
            if let Some(item) = self.try_take()? {
                return Ok(item);
            }
            if self.is_closed() {
                if self.is_shut_down_immediately() {
                    return Err(GetFail::ShutDown);
                }
                // Items put just before the shutdown are still delivered.
                return match self.try_take()? {
                    Some(item) => Ok(item),
                    None => Err(GetFail::ShutDown),
                };
            }
            if !waiter.wait(self, H_GET_WAITERS, H_NOT_EMPTY, || {
                self.is_closed() || self.has_items()
            }) {
                return Err(GetFail::Empty);
            }
        }
    }

    /// `true` if some lane holds an item. Counts are compared, not whole cursors: a lane
    /// whose owner was killed mid-rewind has equal counts at different offsets, and is
    /// empty. `r` is read first, so the `w` read after it is never behind it.
    pub(crate) fn has_items(&self) -> bool {
        (0..self.lanes_in_use()).any(|lane| {
            let r = self.r(lane).load(Ordering::Acquire);
            pending(self.w(lane).load(Ordering::Acquire), r) != 0
        })
    }

    /// The oldest item there is now, if any.
    ///
    /// Every put takes a ticket from one queue-wide counter, so items have a global
    /// order. A consumer looks at the head of every lane and takes the lowest ticket.
    /// When there are several lanes it looks again at the others after choosing (a
    /// lane it saw empty may have received an older item since), so that an item whose
    /// put returned before another put began always comes out first: the property
    /// "one sentinel per consumer after the work" needs (S32).
    fn try_take<T: DeserializeOwned>(&self) -> Result<Option<T>, GetFail> {
        let lanes = self.lanes_in_use();
        'retry: loop {
            let mut best: Option<Head> = None;
            for lane in 0..lanes {
                if let Some(head) = self.head(lane)
                    && best.is_none_or(|b| head.ticket < b.ticket)
                {
                    best = Some(head);
                }
            }
            let Some(mut best) = best else {
                return Ok(None);
            };
            if lanes > 1 {
                let mut changed = true;
                while changed {
                    changed = false;
                    for lane in 0..lanes {
                        if lane != best.lane
                            && let Some(head) = self.head(lane)
                            && head.ticket < best.ticket
                        {
                            best = head;
                            changed = true;
                        }
                    }
                }
            }
            match self.take_head(best)? {
                Some(item) => return Ok(Some(item)),
                None => continue 'retry,
            }
        }
    }

    /// The record at the read cursor of `lane`, if the lane holds any. The view may be
    /// stale (another consumer moving on); [`RingMap::take_head`] finds out.
    fn head(&self, lane: usize) -> Option<Head> {
        let r = self.r(lane).load(Ordering::Acquire);
        let mut w = self.w_seen[lane].load(Ordering::Acquire);
        // Nothing before the cursor seen last (or `r` already past it: the difference
        // wraps to a huge number): look at the real one, on the producer's cache line.
        if pending(w, r) == 0 || pending(w, r) > SEQ_MASK / 2 {
            w = self.w(lane).load(Ordering::Acquire);
            self.w_seen[lane].store(w, Ordering::Release);
            if pending(w, r) == 0 || pending(w, r) > SEQ_MASK / 2 {
                return None;
            }
        }
        let mut pos = off_of(r);
        let mut word = if pos + REC_HEADER <= self.ring {
            self.map
                .u64_at(self.ring_at(lane, pos))
                .load(Ordering::Relaxed)
        } else {
            WRAP << 32
        };
        if word >> 32 == WRAP {
            pos = 0;
            word = self
                .map
                .u64_at(self.ring_at(lane, 0))
                .load(Ordering::Relaxed);
        }
        let ticket = self
            .map
            .u64_at(self.ring_at(lane, pos) + 8)
            .load(Ordering::Relaxed);
        Some(Head {
            lane,
            r,
            w,
            pos,
            kind: word >> 32,
            len: (word & 0xffff_ffff) as usize,
            ticket,
        })
    }

    /// Takes the record `head` describes: `Ok(None)` if another consumer took it first.
    fn take_head<T: DeserializeOwned>(&self, head: Head) -> Result<Option<T>, GetFail> {
        let Head {
            lane,
            r,
            w,
            pos,
            kind,
            len,
            ..
        } = head;
        let valid = match kind {
            INLINE => pos + REC_HEADER + len <= self.ring,
            BLOB => len == 16,
            _ => false,
        };
        if !valid {
            if self.r(lane).load(Ordering::Acquire) != r {
                return Ok(None); // a stale view: another consumer moved on
            }
            // The published record is not one we wrote: someone scribbled on the
            // shared memory. Drop the lane's contents rather than loop or crash.
            let _ = self
                .r(lane)
                .compare_exchange(r, w, Ordering::SeqCst, Ordering::Acquire);
            return Err(GetFail::Codec(CodecError::Corrupt(
                "a queue record no sender wrote",
            )));
        }
        let next = cursor(seq_of(r) + 1, pos + REC_HEADER + round8(len));
        let at = self.ring_at(lane, pos) + REC_HEADER;
        let claim = || {
            self.r(lane)
                .compare_exchange(r, next, Ordering::SeqCst, Ordering::Acquire)
                .is_ok()
        };
        if kind == BLOB {
            let offset = self.map.u64_at(at).load(Ordering::Relaxed);
            let body = self.map.u64_at(at + 8).load(Ordering::Relaxed);
            if !claim() {
                return Ok(None);
            }
            self.consumed();
            return self.read_blob(offset, body).map(Some);
        }
        let max = self.max_message.load(Ordering::Relaxed);
        if len > max {
            if !claim() {
                return Ok(None);
            }
            self.consumed();
            return Err(GetFail::Codec(CodecError::Oversized { size: len, max }));
        }
        if len <= 256 {
            let mut small = [0u8; 256];
            let body = &mut small[..len];
            self.map.read(at, body);
            if !claim() {
                return Ok(None);
            }
            self.consumed();
            return decode(body).map(Some);
        }
        // Large inline records are copied into this thread's scratch buffer: no
        // allocation and no fresh pages per message.
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            self.map.read_into_vec(at, len, &mut buf);
            if !claim() {
                return Ok(None);
            }
            self.consumed();
            let result = decode(&buf).map(Some);
            // Keep a buffer for the next large item, but not an outsized one.
            if buf.capacity() > 8 << 20 {
                *buf = Vec::new();
            }
            result
        })
    }

    /// Decodes a claimed blob in place and frees its memory.
    fn read_blob<T: DeserializeOwned>(&self, offset: u64, len: u64) -> Result<T, GetFail> {
        let span = round_up(len.max(1), PAGE as u64);
        if offset < self.blob_base
            || offset % PAGE as u64 != 0
            || offset.saturating_add(span) > FILE_LEN
        {
            return Err(GetFail::Codec(CodecError::Corrupt(
                "a queue blob record no sender wrote",
            )));
        }
        let max = self.max_message.load(Ordering::Relaxed);
        if len as usize > max {
            let _ = mem::punch_hole(&self.fd, offset, span);
            return Err(GetFail::Codec(CodecError::Oversized {
                size: len as usize,
                max,
            }));
        }
        let result = Mapping::range(&self.fd, offset, span as usize, true)
            .map_err(GetFail::Io)
            .and_then(|blob| decode(&blob.as_slice()[..len as usize]));
        let _ = mem::punch_hole(&self.fd, offset, span);
        result
    }

    /// Takes and drops every item there is now (decoded as `T`, so that a blob's
    /// memory is freed as by a get); each counts as done for `join`. Returns how many.
    pub(crate) fn discard<T: DeserializeOwned>(&self) -> usize {
        let mut dropped = 0;
        // Any error of a take comes after its claim (or empties a corrupt lane): it is
        // progress too. `Ok(None)`: nothing left.
        while !matches!(self.try_take::<T>(), Ok(None)) {
            dropped += 1;
        }
        if self.joinable && dropped > 0 {
            let word = self.word(H_UNFINISHED);
            let _ = word.fetch_update(Ordering::SeqCst, Ordering::Acquire, |n| {
                Some(n.saturating_sub(dropped as u32))
            });
            mem::futex_wake_all(word);
        }
        if dropped > 0 {
            self.consumed();
        }
        dropped
    }

    // ---- task accounting (JoinableQueue) ----------------------------------------

    pub(crate) fn unfinished(&self) -> u32 {
        self.word(H_UNFINISHED).load(Ordering::Acquire)
    }

    /// One fewer unfinished task; `false` if there was none.
    pub(crate) fn task_done(&self) -> bool {
        let word = self.word(H_UNFINISHED);
        let mut now = word.load(Ordering::Acquire);
        loop {
            if now == 0 {
                return false;
            }
            match word.compare_exchange(now, now - 1, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        if now == 1 {
            mem::futex_wake_all(word);
        }
        true
    }

    /// Waits until no task is unfinished; `false` on timeout. It sleeps in slices: a
    /// `task_done` killed between counting the last task and waking the joiners would
    /// otherwise leave them asleep for ever.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let word = self.word(H_UNFINISHED);
        loop {
            let now = word.load(Ordering::SeqCst);
            if now == 0 {
                return true;
            }
            let left = mem::time_left(deadline);
            if left == Some(Duration::ZERO) {
                return false;
            }
            let slice = left.map_or(wait::SLEEP_SLICE, |l| l.min(wait::SLEEP_SLICE));
            mem::futex_wait(word, now, Some(slice));
        }
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        self.release_lane();
    }
}

/// The shared lane's lock, held for one put: unlocked when dropped.
struct Held<'a>(&'a RobustMutex);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, GetFail> {
    crate::codec::decode(body).map_err(GetFail::Codec)
}
