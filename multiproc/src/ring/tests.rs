//! Unit tests of the ring at the level of its memory layout.

use super::*;

fn queue(fingerprint: u64) -> RingMap {
    RingMap::create(Config {
        lanes: 4,
        ring: 8 << 20,
        maxsize: 0,
        max_message: 1 << 30,
        joinable: false,
        fingerprint,
    })
    .unwrap()
}

/// A queue of one lane with a 64 KiB ring.
fn one_lane() -> RingMap {
    RingMap::create(Config {
        lanes: 1,
        ring: 64 << 10,
        maxsize: 0,
        max_message: 1 << 30,
        joinable: false,
        fingerprint: 0,
    })
    .unwrap()
}

fn allocated(q: &RingMap) -> u64 {
    rustix::fs::fstat(q.fd()).unwrap().st_blocks as u64 * 512
}

fn now() -> Option<Instant> {
    Some(Instant::now())
}

#[test]
fn cursors_count_messages_across_wrap_around() {
    let r = cursor(SEQ_MASK, 64);
    let w = cursor(SEQ_MASK + 3, 8);
    assert_eq!(pending(w, r), 3);
    assert_eq!((seq_of(w), off_of(w)), (2, 8));
    assert!(
        pending(r, w) > SEQ_MASK / 2,
        "r ahead of a stale w reads as huge"
    );
}

#[test]
fn open_refuses_another_item_type_and_other_files() {
    let q = queue(1);
    let dup = q.fd().try_clone_to_owned().unwrap();
    assert!(RingMap::open(dup, 1).is_ok());
    let dup = q.fd().try_clone_to_owned().unwrap();
    let err = RingMap::open(dup, 2).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let plain = mem::memfd("not-a-queue", 4096).unwrap();
    assert_eq!(
        RingMap::open(plain, 1).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn scribbled_memory_gives_a_typed_error_and_the_queue_recovers() {
    let q = queue(0);
    for i in 0..3u32 {
        q.put(&i, None).unwrap();
    }
    // Overwrite the first record's header with a kind no sender writes.
    let first = q.ring_at(0, 0);
    q.map.u64_at(first).store(7 << 32 | 3, Ordering::Relaxed);
    assert!(matches!(
        q.get::<u32>(now()),
        Err(GetFail::Codec(CodecError::Corrupt(_)))
    ));
    q.put(&9u32, None).unwrap();
    assert_eq!(q.get::<u32>(now()).unwrap(), 9);
    assert!(matches!(q.get::<u32>(now()), Err(GetFail::Empty)));
}

#[test]
fn consumed_blobs_and_drained_bursts_give_their_memory_back() {
    let q = queue(0);
    let big = vec![3u8; 16 << 20];
    q.put(&big, None).unwrap();
    assert!(allocated(&q) >= 16 << 20);
    assert_eq!(q.get::<Vec<u8>>(now()).unwrap(), big);
    assert!(
        allocated(&q) < 1 << 20,
        "blob punched out: {}",
        allocated(&q)
    );

    let item = vec![1u8; 100];
    for _ in 0..60_000 {
        q.put(&item, None).unwrap();
    }
    assert!(allocated(&q) >= 6 << 20);
    for _ in 0..60_000 {
        q.get::<Vec<u8>>(now()).unwrap();
    }
    // A trickle after the burst: the producer soon finds its lane empty, goes back
    // to the front and gives the pages the burst used back.
    for _ in 0..1000 {
        q.put(&item, None).unwrap();
        q.get::<Vec<u8>>(now()).unwrap();
    }
    let warm = (q.ring_base + KEEP) as u64; // header, lane blocks, warm front
    assert!(allocated(&q) <= warm, "trimmed: {}", allocated(&q));
}

#[test]
fn a_full_lane_spills_into_blobs_instead_of_blocking() {
    let q = one_lane();
    let item = vec![5u8; 1000];
    for _ in 0..200 {
        q.put(&item, Some(Instant::now() + Duration::from_secs(10)))
            .unwrap();
    }
    assert_eq!(q.qsize(), 200, "200 KB through a 64 KiB ring");
    for _ in 0..200 {
        assert_eq!(q.get::<Vec<u8>>(now()).unwrap(), item);
    }
}

/// An identity no process can have: its pid is above the kernel's limit (2^22).
const DEAD_OWNER: u64 = 0x7fff_fff0 << 32 | 1;

/// A one-lane queue whose lane is empty, past its front, and left as its owner leaves
/// it when killed between the two steps of a rewind: `r` moved to the front (same
/// count, offset 0), `w` not yet. The owner's identity then names no living process,
/// and its private producer state is gone with it.
fn lane_torn_mid_rewind() -> RingMap {
    let q = one_lane();
    for i in 1..=3u32 {
        q.put(&i, None).unwrap();
    }
    for i in 1..=3u32 {
        assert_eq!(q.get::<u32>(now()).unwrap(), i);
    }
    let w = q.w(0).load(Ordering::SeqCst);
    assert_eq!(q.r(0).load(Ordering::SeqCst), w, "the lane is empty");
    assert_ne!(off_of(w), 0, "and past its front");
    // The rewind's first step, as the owner does it; it is killed before the second.
    q.r(0)
        .compare_exchange(w, cursor(seq_of(w), 0), Ordering::SeqCst, Ordering::SeqCst)
        .unwrap();
    q.owner(0).store(DEAD_OWNER, Ordering::SeqCst);
    *q.producer.lock() = Producer::default();
    q
}

#[test]
fn a_lane_whose_owner_was_killed_mid_rewind_reads_as_empty() {
    let q = lane_torn_mid_rewind();
    assert_eq!(q.qsize(), 0);
    assert!(!q.has_items(), "consumers would spin instead of sleeping");
    assert!(!q.wait_for_items(now()));
    assert!(matches!(q.get::<u32>(now()), Err(GetFail::Empty)));
}

#[test]
fn the_next_owner_of_a_lane_torn_mid_rewind_delivers_its_own_items_not_stale_ones() {
    let q = lane_torn_mid_rewind();
    // This process takes the lane over (it is the only one) and puts into it.
    for i in 10..20u32 {
        q.put(&i, None).unwrap();
    }
    for i in 10..20u32 {
        assert_eq!(
            q.get::<u32>(now()).unwrap(),
            i,
            "not a record of an earlier lap"
        );
    }
    assert!(matches!(q.get::<u32>(now()), Err(GetFail::Empty)));
    assert_eq!(q.qsize(), 0);
    assert!(!q.has_items());
}

/// How long a test waits for a waiter that ought to return: far longer than it sleeps
/// between looks.
const BOUND: Duration = Duration::from_secs(10);

/// Waits (yielding, not sleeping) until `cond` holds; panics after [`BOUND`].
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

/// Whether thread `tid` of this process is asleep in the kernel: a waiter of the ring
/// sleeps nowhere but on its futex.
fn asleep(tid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        == Some("S")
}

fn my_tid() -> i32 {
    rustix::thread::gettid().as_raw_pid()
}

#[test]
fn a_get_asleep_when_its_producer_dies_before_waking_it_returns_the_item() {
    let q = queue(0);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            tid_tx.send(my_tid()).unwrap();
            got_tx.send(q.get::<u32>(None).ok()).unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        wait_until("the consumer sleeps", || {
            q.word(H_GET_WAITERS).load(Ordering::SeqCst) != 0 && asleep(tid)
        });
        // A producer publishes and is killed before it wakes anyone: `try_put` is a
        // put up to and including its publish.
        let len = codec::encoded_size(&7u32).unwrap();
        assert!(
            q.try_put(&7u32, len, &mut Waiter::new(Deadline::At(None)), false)
                .unwrap()
                .is_none()
        );
        let got = got_rx.recv_timeout(BOUND);
        if got.is_err() {
            q.notify(H_GET_WAITERS, H_NOT_EMPTY); // as the next put would: let it end
        }
        assert_eq!(got, Ok(Some(7)), "the get waited for the next wake-up");
    });
}

#[test]
fn a_put_asleep_when_its_consumer_dies_before_waking_it_puts() {
    let q = RingMap::create(Config {
        lanes: 1,
        ring: 64 << 10,
        maxsize: 1,
        max_message: 1 << 30,
        joinable: false,
        fingerprint: 0,
    })
    .unwrap();
    q.put(&1u32, None).unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (put_tx, put_rx) = std::sync::mpsc::channel();
    let began = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            tid_tx.send(my_tid()).unwrap();
            put_tx.send(q.put(&2u32, None).is_ok()).unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        // Past its spill time a producer waiting for room has nothing to wake up for
        // by itself.
        wait_until("the producer sleeps", || {
            began.elapsed() > 2 * wait::SPILL_AFTER
                && q.word(H_PUT_WAITERS).load(Ordering::SeqCst) != 0
                && asleep(tid)
        });
        // A consumer claims the item and is killed before it wakes anyone.
        let w = q.w(0).load(Ordering::SeqCst);
        let r = q.r(0).load(Ordering::SeqCst);
        assert_eq!(pending(w, r), 1);
        q.r(0)
            .compare_exchange(r, w, Ordering::SeqCst, Ordering::SeqCst)
            .unwrap();
        let put = put_rx.recv_timeout(BOUND);
        if put.is_err() {
            q.notify(H_PUT_WAITERS, H_NOT_FULL); // as the next get would: let it end
        }
        assert_eq!(put, Ok(true), "the put waited for the next wake-up");
    });
    assert_eq!(q.get::<u32>(now()).unwrap(), 2);
}

#[test]
fn a_read_cursor_scribbled_past_the_ring_is_refused_by_the_producer_not_trusted() {
    let q = RingMap::create(Config {
        lanes: 2,
        ring: 64 << 10,
        maxsize: 0,
        max_message: 1 << 30,
        joinable: false,
        fingerprint: 0,
    })
    .unwrap();
    // A second producer (another handle of the same queue) holds the next lane, with
    // one item in it.
    let other = RingMap::open(q.fd().try_clone_to_owned().unwrap(), 0).unwrap();
    q.put(&vec![0u8; 8], None).unwrap();
    let _ = q.get::<Vec<u8>>(now()).unwrap();
    other.put(&vec![7u8; 1000], None).unwrap();
    let mine = q.producer.lock().lane.unwrap();
    assert_ne!(other.producer.lock().lane.unwrap(), mine);

    // Someone scribbles this lane's read cursor to a place past the end of its ring.
    let r = q.r(mine).load(Ordering::Acquire);
    q.r(mine)
        .store(cursor(seq_of(r), q.ring + (8 << 10)), Ordering::SeqCst);
    let item = vec![1u8; 1000];
    let mut refused = None;
    for n in 0..200 {
        match q.put(&item, None) {
            Ok(()) => {}
            Err(e) => {
                refused = Some((n, e));
                break;
            }
        }
    }
    let (n, e) = refused.expect("a put notices the cursor");
    assert!(
        matches!(e, PutFail::Codec(CodecError::Corrupt(_))),
        "after {n} puts: {e:?}"
    );
    // The lane is usable again, and the other lane's item was not overwritten.
    q.put(&item, None).unwrap();
    let mut got = Vec::new();
    loop {
        match q.get::<Vec<u8>>(now()) {
            Ok(v) => got.push(v),
            Err(GetFail::Empty) => break,
            Err(GetFail::Codec(CodecError::Corrupt(_))) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        got.contains(&vec![7u8; 1000]),
        "the other lane's item survives"
    );
    assert!(got.iter().all(|v| v == &item || v == &vec![7u8; 1000]));
}

#[test]
fn a_write_cursor_scribbled_past_the_ring_is_refused_by_the_next_owner_of_the_lane() {
    let q = queue(0);
    q.put(&1u32, None).unwrap();
    assert_eq!(q.get::<u32>(now()).unwrap(), 1);
    let lane = q.producer.lock().lane.unwrap();
    q.release_lane();
    // While the lane is free, someone moves its cursors past the end of its ring.
    for c in [q.w(lane), q.r(lane)] {
        let v = c.load(Ordering::Acquire);
        c.store(cursor(seq_of(v), q.ring + (64 << 10)), Ordering::SeqCst);
    }
    let next = RingMap::open(q.fd().try_clone_to_owned().unwrap(), 0).unwrap();
    assert!(matches!(
        next.put(&2u32, None),
        Err(PutFail::Codec(CodecError::Corrupt(_)))
    ));
    assert_eq!(next.producer.lock().lane, Some(lane));
    next.put(&3u32, None).unwrap();
    assert_eq!(q.get::<u32>(now()).unwrap(), 3);
    assert!(matches!(q.get::<u32>(now()), Err(GetFail::Empty)));
}

#[test]
fn a_join_asleep_when_the_last_task_done_dies_before_waking_it_returns() {
    let q = RingMap::create(Config {
        lanes: 1,
        ring: 64 << 10,
        maxsize: 0,
        max_message: 1 << 30,
        joinable: true,
        fingerprint: 0,
    })
    .unwrap();
    q.put(&1u32, None).unwrap();
    assert_eq!(q.get::<u32>(now()).unwrap(), 1);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            tid_tx.send(my_tid()).unwrap();
            joined_tx.send(q.join(None)).unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        wait_until("the joiner sleeps", || asleep(tid));
        // A consumer's task_done counts the last task and is killed before it wakes
        // anyone.
        let word = q.word(H_UNFINISHED);
        assert_eq!(
            word.compare_exchange(1, 0, Ordering::SeqCst, Ordering::SeqCst),
            Ok(1)
        );
        let joined = joined_rx.recv_timeout(BOUND);
        if joined.is_err() {
            mem::futex_wake_all(word); // as a later task_done would: let it end
        }
        assert_eq!(
            joined,
            Ok(true),
            "the join waited for a wake-up that never came"
        );
    });
}

/// A value whose `Serialize` panics the second time it runs: in a put, that is the
/// write, after the sizing, with the lane (or the shared lane's lock) taken.
struct PanicsOnWrite(std::cell::Cell<u32>);

impl serde::Serialize for PanicsOnWrite {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.set(self.0.get() + 1);
        if self.0.get() == 2 {
            panic!("user Serialize panicked");
        }
        s.serialize_u32(1)
    }
}

/// The put's one guard covers the shared lane too: a `Serialize` that panics while the
/// put holds the shared lane's lock is a typed error and leaves the lock free, so the
/// next put into that lane goes through (it would wait for ever on a lock left held).
#[test]
fn a_serialize_that_panics_on_the_shared_lane_leaves_its_lock_free() {
    let q = one_lane();
    // The one lane belongs to a live process (init): this process puts to the shared lane.
    q.owner(0)
        .store(crate::sys::proc::identity(1), Ordering::SeqCst);
    let err = q.put(&PanicsOnWrite(Default::default()), None).unwrap_err();
    assert!(
        matches!(&err, PutFail::Codec(CodecError::Encode { message: Some(m), .. }) if m.contains("user Serialize panicked")),
        "{err:?}"
    );
    // From another thread: the lock is recursive for the thread that holds it.
    let deadline = Some(Instant::now() + Duration::from_secs(10));
    std::thread::scope(|s| s.spawn(|| q.put(&7u32, deadline)).join().unwrap())
        .expect("the shared lane's lock is free");
    assert_eq!(
        q.w(0).load(Ordering::SeqCst),
        0,
        "the put went to the shared lane"
    );
    assert_eq!(q.get::<u32>(now()).unwrap(), 7);
}
