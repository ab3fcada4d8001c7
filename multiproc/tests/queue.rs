//! Cross-process queues (S4 S12 S31 S32): Queue, SimpleQueue, JoinableQueue under every
//! start method, and what processes can do to them: die in the middle of a put or a
//! get, send too much, send what cannot be encoded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use multiproc::codec::CodecError;
use multiproc::queue::mp::{GetError, PutError, QueueBuilder};
use multiproc::testing::LeakCheck;
use multiproc::{JoinableQueue, Queue, SimpleQueue, StartMethod};
use serde::{Deserialize, Serialize};

multiproc::test_support!();

mod common;
use common::{PROMPT, builder, wait_until};

#[test]
fn fifo_in_one_process_with_sizes_and_errors() {
    let check = LeakCheck::start();
    {
        let q = Queue::<String>::new().unwrap();
        assert!(q.empty());
        assert!(q.try_get().unwrap_err().is_empty());
        for i in 0..1000 {
            q.put(format!("item {i}")).unwrap();
        }
        assert_eq!(q.qsize(), 1000);
        assert!(!q.full(), "an unbounded queue is never full");
        for i in 0..1000 {
            assert_eq!(q.get().unwrap(), format!("item {i}"));
        }
        let start = Instant::now();
        assert!(
            q.get_timeout(Duration::from_millis(200))
                .unwrap_err()
                .is_empty()
        );
        assert!(start.elapsed() >= Duration::from_millis(200));
    }
    check.assert_clean();
}

fn put_range(args: (Queue<u32>, u32)) {
    let (q, n) = args;
    for i in 0..n {
        q.put(i).unwrap();
    }
}

#[test]
fn s31_child_puts_parent_gets_in_order_under_every_method() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let q = Queue::<u32>::new().unwrap();
            let mut p = builder(method)
                .start(put_range, (q.clone(), 10_000))
                .unwrap();
            for i in 0..10_000 {
                assert_eq!(q.get_timeout(PROMPT).unwrap(), i, "{method}");
            }
            p.join_timeout(PROMPT).unwrap();
            assert!(q.empty());
        }
    }
    check.assert_clean();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum Who {
    A,
    B,
    C,
}

/// Puts `(who, 0..n)`, then, if `hold` is given, waits for its signal before exiting
/// (so that the process keeps its lane).
/// A tagged producer's arguments: the queue, its tag, how many, and what to wait on.
type Tagged = (Queue<(Who, u64)>, Who, u64, Option<Queue<()>>);

fn produce_tagged(args: Tagged) {
    let (q, who, n, hold) = args;
    for i in 0..n {
        q.put((who, i)).unwrap();
    }
    if let Some(hold) = hold {
        hold.get().unwrap();
    }
}

/// Checks that each producer's numbers arrived as 0, 1, 2, … with no gap or repeat.
struct PerProducer(std::collections::HashMap<Who, u64>);

impl PerProducer {
    fn new() -> Self {
        PerProducer(Default::default())
    }
    fn see(&mut self, (who, i): (Who, u64)) {
        let next = self.0.entry(who).or_insert(0);
        assert_eq!(i, *next, "{who:?}: expected item {next}, got {i}");
        *next += 1;
    }
    fn count(&self, who: Who) -> u64 {
        self.0.get(&who).copied().unwrap_or(0)
    }
}

#[test]
fn producer_killed_mid_put_loses_no_other_message_and_its_lane_is_reused() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            // Two lanes: after A dies, C can only put by taking over A's lane.
            let q = QueueBuilder::new().lanes(2).build::<(Who, u64)>().unwrap();
            let hold = Queue::<()>::new().unwrap();
            let n = 20_000;
            let mut a = builder(method)
                .start(produce_tagged, (q.clone(), Who::A, u64::MAX, None))
                .unwrap();
            let mut b = builder(method)
                .start(produce_tagged, (q.clone(), Who::B, n, Some(hold.clone())))
                .unwrap();
            let mut seen = PerProducer::new();
            while seen.count(Who::A) < 5_000 || seen.count(Who::B) < n {
                seen.see(q.get_timeout(PROMPT).unwrap());
            }
            // A is somewhere inside a put right now: kill it there.
            a.kill().unwrap();
            assert!(a.join_timeout(PROMPT).is_err(), "{method}: A was killed");
            let mut c = builder(method)
                .start(produce_tagged, (q.clone(), Who::C, n, None))
                .unwrap();
            while seen.count(Who::C) < n {
                seen.see(q.get_timeout(PROMPT).unwrap());
            }
            c.join_timeout(PROMPT).unwrap();
            // What A published before dying is still there, in order, and nothing else.
            while let Ok(item) = q.try_get() {
                assert_eq!(item.0, Who::A, "{method}");
                seen.see(item);
            }
            assert!(q.empty(), "{method}");
            hold.put(()).unwrap();
            b.join_timeout(PROMPT).unwrap();
        }
    }
    check.assert_clean();
}

/// Takes items and reports each through `taken`, until killed.
fn take_and_report(args: (Queue<u64>, Queue<u64>)) {
    let (q, taken) = args;
    loop {
        let x = q.get().unwrap();
        taken.put(x).unwrap();
    }
}

#[test]
fn consumer_killed_mid_get_loses_no_other_message() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let q = Queue::<u64>::new().unwrap();
            let taken = Queue::<u64>::new().unwrap();
            let n = 200_000u64;
            for i in 0..n {
                q.put(i).unwrap();
            }
            let mut c = builder(method)
                .start(take_and_report, (q.clone(), taken.clone()))
                .unwrap();
            let mut seen = HashSet::new();
            while seen.len() < 10_000 {
                assert!(seen.insert(taken.get_timeout(PROMPT).unwrap()));
            }
            c.kill().unwrap();
            assert!(c.join_timeout(PROMPT).is_err());
            while let Ok(x) = taken.try_get() {
                assert!(seen.insert(x), "{method}: {x} reported twice");
            }
            let mut last = None;
            while let Ok(x) = q.try_get() {
                assert!(last < Some(x), "{method}: order kept");
                last = Some(x);
                assert!(seen.insert(x), "{method}: {x} taken twice");
            }
            // The consumer may have died holding the one item it had just taken.
            let missing = n - seen.len() as u64;
            assert!(missing <= 1, "{method}: {missing} items lost");
        }
    }
    check.assert_clean();
}

#[test]
fn exiting_producer_never_blocks_join_however_much_it_put() {
    // CPython's "joining processes that use queues" deadlock (FAILURE_MODES 5): a child
    // that put more than a pipe buffer cannot exit until someone reads. Here it can.
    fn put_lots(q: Queue<serde_bytes::ByteBuf>) {
        for i in 0..10_000u32 {
            q.put(serde_bytes::ByteBuf::from(i.to_le_bytes().to_vec()))
                .unwrap();
        }
        for _ in 0..8 {
            q.put(serde_bytes::ByteBuf::from(vec![7u8; 1 << 20]))
                .unwrap();
        }
    }
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let q = Queue::new().unwrap();
            let mut p = builder(method).start(put_lots, q.clone()).unwrap();
            p.join_timeout(PROMPT).unwrap();
            assert_eq!(q.qsize(), 10_008, "{method}");
            for i in 0..10_000u32 {
                assert_eq!(q.get().unwrap().as_slice(), i.to_le_bytes(), "{method}");
            }
            for _ in 0..8 {
                assert_eq!(q.get().unwrap().len(), 1 << 20, "{method}");
            }
        }
    }
    check.assert_clean();
}

fn put_big(args: (Queue<serde_bytes::ByteBuf>, usize)) {
    let (q, len) = args;
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    q.put(serde_bytes::ByteBuf::from(body)).unwrap();
}

#[test]
fn large_items_cross_through_shared_memory() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let q = Queue::new().unwrap();
            let len = 64 << 20;
            let mut p = builder(method).start(put_big, (q.clone(), len)).unwrap();
            let got = q.get_timeout(PROMPT).unwrap();
            p.join_timeout(PROMPT).unwrap();
            assert_eq!(got.len(), len);
            assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        }
    }
    check.assert_clean();
}

#[test]
fn one_gib_item() {
    let check = LeakCheck::start();
    {
        let q = Queue::new().unwrap();
        let len = 1 << 30;
        let mut p = builder(StartMethod::ForkServer)
            .start(put_big, (q.clone(), len))
            .unwrap();
        let got = q.get_timeout(PROMPT).unwrap();
        p.join_timeout(PROMPT).unwrap();
        assert_eq!(got.len(), len);
        for i in (0..len).step_by(4093) {
            assert_eq!(got[i], (i % 251) as u8);
        }
    }
    check.assert_clean();
}

#[test]
fn oversized_and_unencodable_items_fail_the_put_itself() {
    struct Unencodable;
    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    impl<'de> Deserialize<'de> for Unencodable {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Unencodable)
        }
    }
    let q = QueueBuilder::new()
        .max_message(1024)
        .build::<Vec<u8>>()
        .unwrap();
    match q.put(vec![1; 2000]) {
        Err(PutError::Codec(item, CodecError::Oversized { size, max })) => {
            assert_eq!(item, vec![1; 2000], "the item comes back");
            assert_eq!((size, max), (2002, 1024));
        }
        other => panic!("expected Oversized, got {other:?}"),
    }
    q.put(vec![2; 10]).unwrap();
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get().unwrap(), vec![2; 10]);

    let q = Queue::<Unencodable>::new().unwrap();
    let err = q.put(Unencodable).unwrap_err();
    assert!(
        matches!(err, PutError::Codec(_, CodecError::Encode { .. })),
        "{err:?}"
    );
    assert_eq!(q.qsize(), 0, "a failed put leaves no trace (bpo-33078)");

    // A handle holding a descriptor cannot travel inside shared memory: a typed error.
    let q = Queue::<Queue<u8>>::new().unwrap();
    let err = q.put(Queue::new().unwrap()).unwrap_err();
    assert!(
        matches!(err, PutError::Codec(_, CodecError::Encode { .. })),
        "{err:?}"
    );
}

#[test]
fn bounded_queue_reports_full_and_waits_for_room() {
    let q = Queue::with_maxsize(2).unwrap();
    q.put(1).unwrap();
    q.try_put(2).unwrap();
    assert!(q.full());
    assert!(q.try_put(3).unwrap_err().is_full());
    let start = Instant::now();
    let err = q.put_timeout(3, Duration::from_millis(100)).unwrap_err();
    assert!(err.is_full() && start.elapsed() >= Duration::from_millis(100));
    assert_eq!(err.into_inner(), 3);
    std::thread::scope(|s| {
        let waiting = s.spawn(|| q.put(3));
        assert_eq!(q.get_timeout(PROMPT).unwrap(), 1);
        waiting.join().unwrap().unwrap();
    });
    assert_eq!(q.qsize(), 2);
    assert_eq!((q.get().unwrap(), q.get().unwrap()), (2, 3));
}

#[test]
fn shutdown_wakes_blocked_getters_after_the_queue_drains() {
    let q = Queue::<u8>::new().unwrap();
    std::thread::scope(|s| {
        let getter = s.spawn(|| q.get());
        // A getter blocked in get() is woken by the shutdown.
        wait_until("nothing", || true);
        q.shutdown();
        assert!(getter.join().unwrap().unwrap_err().is_closed());
    });
    let q = Queue::<u8>::new().unwrap();
    q.put(1).unwrap();
    q.shutdown();
    assert!(q.is_shutdown());
    assert!(q.put(2).unwrap_err().is_closed());
    assert_eq!(
        q.get().unwrap(),
        1,
        "what was put before the shutdown is delivered"
    );
    assert!(q.get().unwrap_err().is_closed());
    assert_eq!(q.iter().count(), 0);
}

#[test]
fn threads_of_many_processes_take_every_item_exactly_once() {
    let check = LeakCheck::start();
    {
        let q = Queue::<(Who, u64)>::new().unwrap();
        let n = 20_000;
        let kids: Vec<_> = [Who::A, Who::B]
            .into_iter()
            .map(|who| {
                builder(StartMethod::ForkServer)
                    .start(produce_tagged, (q.clone(), who, n, None))
                    .unwrap()
            })
            .collect();
        let got: Vec<Vec<(Who, u64)>> = std::thread::scope(|s| {
            let producers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        for i in 0..n {
                            q.put((Who::C, i)).unwrap();
                        }
                    })
                })
                .collect();
            let consumers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        while let Ok(x) = q.get_timeout(Duration::from_secs(2)) {
                            mine.push(x);
                        }
                        mine
                    })
                })
                .collect();
            producers.into_iter().for_each(|p| p.join().unwrap());
            consumers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for mut kid in kids {
            kid.join_timeout(PROMPT).unwrap();
        }
        let mut times = std::collections::HashMap::new();
        for &item in got.iter().flatten() {
            *times.entry(item).or_insert(0) += 1;
        }
        for i in 0..n {
            assert_eq!(times.get(&(Who::A, i)), Some(&1), "A {i} exactly once");
            assert_eq!(times.get(&(Who::B, i)), Some(&1), "B {i} exactly once");
            assert_eq!(times.get(&(Who::C, i)), Some(&2), "C {i}: one per thread");
        }
        assert_eq!(times.values().sum::<usize>() as u64, 4 * n, "nothing else");
        // Each consumer saw each child's items in order.
        for mine in &got {
            for who in [Who::A, Who::B] {
                let seq: Vec<u64> = mine.iter().filter(|x| x.0 == who).map(|x| x.1).collect();
                assert!(seq.windows(2).all(|w| w[0] < w[1]), "per-producer order");
            }
        }
    }
    check.assert_clean();
}

#[test]
fn a_queue_travels_through_a_pipe_and_a_forked_child_gets_its_own_lane() {
    fn put_via_pipe(rx: multiproc::connection::Receiver<Queue<u32>>) {
        let q = rx.recv().unwrap();
        q.put(42).unwrap();
    }
    let check = LeakCheck::start();
    {
        let (rx, tx) = multiproc::connection::pipe_simplex::<Queue<u32>>().unwrap();
        let mut p = builder(StartMethod::Spawn).start(put_via_pipe, rx).unwrap();
        let q = Queue::new().unwrap();
        tx.send(&q).unwrap();
        assert_eq!(q.get_timeout(PROMPT).unwrap(), 42);
        p.join_timeout(PROMPT).unwrap();

        // The parent has a lane already; the forked child must not write into it.
        q.put(0).unwrap();
        let child_q = q.clone();
        let mut p = builder(StartMethod::Fork)
            .start_closure(move || {
                for i in 1000..2000 {
                    child_q.put(i).unwrap();
                }
            })
            .unwrap();
        for i in 1..1000 {
            q.put(i).unwrap();
        }
        p.join_timeout(PROMPT).unwrap();
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        while let Ok(x) = q.try_get() {
            if x < 1000 {
                mine.push(x)
            } else {
                theirs.push(x)
            }
        }
        assert_eq!(mine, (0..1000).collect::<Vec<_>>());
        assert_eq!(theirs, (1000..2000).collect::<Vec<_>>());
    }
    check.assert_clean();
}

#[test]
fn joinable_queue_counts_tasks() {
    let q = JoinableQueue::<u8>::new().unwrap();
    assert!(q.join_timeout(Duration::ZERO), "nothing to wait for");
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert_eq!(q.unfinished_tasks(), 2);
    assert!(!q.join_timeout(Duration::from_millis(50)));
    std::thread::scope(|s| {
        let joiner = s.spawn(|| q.join());
        q.get().unwrap();
        q.task_done().unwrap();
        q.get().unwrap();
        q.task_done().unwrap();
        joiner.join().unwrap();
    });
    assert!(q.task_done().is_err());
    let simple = SimpleQueue::new().unwrap();
    simple.put("x".to_string()).unwrap();
    assert!(!simple.empty());
    assert_eq!(simple.get().unwrap(), "x");
    simple.close();
    assert!(simple.put("y".into()).unwrap_err().is_closed());
    assert!(matches!(simple.get(), Err(GetError::Closed)));
}
