//! `multiproc::queue::local::Queue`: Python's `queue.Queue` between threads (S30).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use multiproc::queue::TooManyTaskDone;
use multiproc::queue::local::{GetError, PutError, Queue, ShutDown};

/// How long a negative check ("this call is still blocked") looks. It can only miss a
/// bug, never fail a correct implementation.
const STILL_BLOCKED: Duration = Duration::from_millis(50);

/// An item type with no `Debug`, `Clone` or `PartialEq`.
struct Opaque(u32);

#[test]
fn s30_seed_program_put_full_get_empty_get_nowait() {
    let q = Queue::new(5);
    q.put(111).unwrap();
    q.put(222).unwrap();
    assert!(!q.full(), "two items in a Queue(5)");
    let v1 = q.get().unwrap();
    let v2 = q.get().unwrap();
    assert_eq!(q.try_get(), Err(GetError::Empty), "get_nowait raises Empty");
    assert!(q.empty());
    assert_eq!((v1, v2), (111, 222));
}

#[test]
fn s30_get_timeout_on_empty_gives_timeout_after_the_timeout() {
    let q = Queue::<u32>::new(5);
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let waited = q.get_timeout(timeout);
    assert_eq!(waited, Err(GetError::Timeout));
    assert!(waited.unwrap_err().is_empty(), "what Python's Empty means");
    assert!(start.elapsed() >= timeout, "waited {:?}", start.elapsed());
}

#[test]
fn s30_get_timeout_returns_an_item_already_there() {
    let q = Queue::new(5);
    q.put(7).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(3600)), Ok(7));
}

#[test]
fn s30_get_timeout_returns_an_item_put_while_waiting() {
    let q = Queue::new(5);
    let producer = q.clone();
    let (waiting_tx, waiting_rx) = mpsc::channel();
    let putter = thread::spawn(move || {
        waiting_rx.recv().unwrap();
        producer.put(42).unwrap();
    });
    waiting_tx.send(()).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(3600)), Ok(42));
    putter.join().unwrap();
}

#[test]
fn s30_try_put_on_full_gives_the_item_back() {
    let q = Queue::new(2);
    assert_eq!(q.try_put("a"), Ok(()));
    assert_eq!(q.try_put("b"), Ok(()));
    assert!(q.full());
    let err = q.try_put("c").unwrap_err();
    assert_eq!(err, PutError::Full("c"));
    assert!(err.is_full() && !err.is_shut_down());
    assert_eq!(err.into_inner(), "c");
    assert_eq!(q.qsize(), 2, "the refused item was not queued");
}

#[test]
fn s30_put_timeout_on_full_gives_the_item_back_after_the_timeout() {
    let q = Queue::new(1);
    q.put(1).unwrap();
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    assert_eq!(q.put_timeout(2, timeout), Err(PutError::Timeout(2)));
    assert!(start.elapsed() >= timeout, "waited {:?}", start.elapsed());
    assert_eq!(q.put_timeout(3, Duration::ZERO), Err(PutError::Timeout(3)));
    assert!(PutError::Timeout(3).is_full(), "what Python's Full means");
    assert_eq!(q.get(), Ok(1));
    assert_eq!(q.put_timeout(4, Duration::ZERO), Ok(()));
    assert_eq!(q.get(), Ok(4));
}

#[test]
fn s30_qsize_empty_full_track_the_items() {
    let q = Queue::new(3);
    assert_eq!(q.maxsize(), 3);
    assert!(q.empty() && !q.full());
    assert_eq!(q.qsize(), 0);
    for i in 1..=3 {
        q.put(i).unwrap();
        assert_eq!(q.qsize(), i);
        assert!(!q.empty());
    }
    assert!(q.full());
    q.get().unwrap();
    assert!(!q.full());
    assert_eq!(q.qsize(), 2);
}

#[test]
fn s30_items_come_out_in_fifo_order() {
    let q = Queue::new(100);
    for i in 0..100 {
        q.put(i).unwrap();
    }
    let out: Vec<_> = q.try_iter().collect();
    assert_eq!(out, (0..100).collect::<Vec<_>>());
}

#[test]
fn s30_maxsize_zero_is_unbounded_as_in_python() {
    for q in [Queue::new(0), Queue::unbounded(), Queue::default()] {
        assert_eq!(q.maxsize(), 0);
        for i in 0..10_000 {
            q.try_put(i).unwrap(); // crossbeam's bounded(0) would refuse every one
        }
        assert!(!q.full());
        assert_eq!(q.qsize(), 10_000);
    }
}

#[test]
fn s30_put_blocks_when_full_until_a_get_frees_space() {
    let q = Queue::new(1);
    q.put("first").unwrap();
    let producer = q.clone();
    let (about_to_put_tx, about_to_put_rx) = mpsc::channel();
    let (put_done_tx, put_done_rx) = mpsc::channel();
    let putter = thread::spawn(move || {
        about_to_put_tx.send(()).unwrap();
        let result = producer.put("second");
        put_done_tx.send(result).unwrap();
    });
    about_to_put_rx.recv().unwrap();
    assert!(
        put_done_rx.recv_timeout(STILL_BLOCKED).is_err(),
        "put returned while the queue was full"
    );
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get(), Ok("first"));
    assert_eq!(put_done_rx.recv().unwrap(), Ok(()), "the get made room");
    assert_eq!(q.get(), Ok("second"));
    putter.join().unwrap();
}

#[test]
fn s30_get_blocks_until_a_put_from_another_thread() {
    let q = Queue::new(1);
    let consumer = q.clone();
    let (got_tx, got_rx) = mpsc::channel();
    let getter = thread::spawn(move || got_tx.send(consumer.get()).unwrap());
    assert!(
        got_rx.recv_timeout(STILL_BLOCKED).is_err(),
        "get returned from an empty queue"
    );
    q.put(5).unwrap();
    assert_eq!(got_rx.recv().unwrap(), Ok(5));
    getter.join().unwrap();
}

#[test]
fn s30_join_returns_at_once_with_no_tasks() {
    let q = Queue::<u8>::new(0);
    q.join();
    assert!(q.join_timeout(Duration::ZERO));
    assert_eq!(q.unfinished_tasks(), 0);
}

#[test]
fn s30_join_returns_only_after_the_last_task_done() {
    let q = Queue::new(0);
    for i in 0..3 {
        q.put(i).unwrap();
    }
    let last_task_marked = Arc::new(AtomicBool::new(false));
    let joiner = {
        let q = q.clone();
        let last_task_marked = Arc::clone(&last_task_marked);
        thread::spawn(move || {
            q.join();
            last_task_marked.load(Ordering::SeqCst)
        })
    };
    for _ in 0..3 {
        q.get().unwrap();
    }
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks(), 1);
    assert!(!q.join_timeout(STILL_BLOCKED), "one task is not done");
    last_task_marked.store(true, Ordering::SeqCst);
    q.task_done().unwrap();
    assert!(
        joiner.join().unwrap(),
        "join returned before the last task_done"
    );
    assert_eq!(q.unfinished_tasks(), 0);
}

#[test]
fn s30_join_timeout_reports_whether_all_tasks_were_done() {
    let q = Queue::new(0);
    q.put(1).unwrap();
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    assert!(!q.join_timeout(timeout));
    assert!(start.elapsed() >= timeout);
    q.get().unwrap();
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::from_secs(3600)));
}

#[test]
fn s30_many_joiners_all_wake() {
    let q = Queue::new(0);
    q.put(()).unwrap();
    let joiners: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || q.join())
        })
        .collect();
    q.get().unwrap();
    q.task_done().unwrap();
    for joiner in joiners {
        joiner.join().unwrap();
    }
}

#[test]
fn s30_task_done_more_times_than_items_is_an_error() {
    let q = Queue::new(0);
    assert_eq!(q.task_done(), Err(TooManyTaskDone));
    q.put('a').unwrap();
    q.put('b').unwrap();
    assert_eq!(q.unfinished_tasks(), 2);
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert_eq!(q.task_done(), Err(TooManyTaskDone));
    assert_eq!(q.unfinished_tasks(), 0, "the count does not go below zero");
    assert_eq!(
        TooManyTaskDone.to_string(),
        "task_done() called more times than items were put"
    );
}

#[test]
fn s30_a_refused_put_is_not_a_task() {
    let q = Queue::new(1);
    q.put(1).unwrap();
    assert!(q.try_put(2).is_err());
    assert!(q.put_timeout(3, Duration::from_millis(1)).is_err());
    q.shutdown(false);
    assert!(q.put(4).is_err());
    assert_eq!(q.unfinished_tasks(), 1);
    q.get().unwrap();
    q.task_done().unwrap();
    q.join();
}

#[test]
fn s30_shutdown_refuses_puts_and_get_drains_then_closes() {
    let q = Queue::new(5);
    q.put(1).unwrap();
    q.put(2).unwrap();
    q.put(3).unwrap();
    assert!(!q.is_shutdown());
    q.shutdown(false);
    assert!(q.is_shutdown());
    assert_eq!(q.put(9), Err(ShutDown(9)));
    assert_eq!(q.try_put(9), Err(PutError::ShutDown(9)));
    assert_eq!(
        q.put_timeout(9, Duration::from_secs(3600)),
        Err(PutError::ShutDown(9))
    );
    assert_eq!(q.get(), Ok(1));
    assert_eq!(q.try_get(), Ok(2));
    assert_eq!(q.get_timeout(Duration::from_secs(3600)), Ok(3));
    assert_eq!(q.get(), Err(ShutDown(())));
    assert_eq!(q.try_get(), Err(GetError::ShutDown));
    assert_eq!(
        q.get_timeout(Duration::from_secs(3600)),
        Err(GetError::ShutDown)
    );
    assert_eq!(q.unfinished_tasks(), 3, "taken items still need task_done");
    for _ in 0..3 {
        q.task_done().unwrap();
    }
    q.join();
}

#[test]
fn s30_shutdown_immediate_drops_the_items_and_releases_join() {
    let q = Queue::new(5);
    for i in 0..4 {
        q.put(i).unwrap();
    }
    assert_eq!(q.get(), Ok(0)); // taken, not done: join still waits for it
    let joiner = {
        let q = q.clone();
        thread::spawn(move || q.join())
    };
    q.shutdown(true);
    assert!(q.is_shutdown());
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.unfinished_tasks(), 1, "dropped items count as done");
    assert_eq!(q.get(), Err(ShutDown(())));
    assert_eq!(q.try_get(), Err(GetError::ShutDown));
    assert_eq!(q.put(5), Err(ShutDown(5)));
    q.task_done().unwrap();
    joiner.join().unwrap();
}

#[test]
fn s30_shutdown_immediate_after_shutdown_drops_what_is_left() {
    let q = Queue::new(0);
    q.put(1).unwrap();
    q.put(2).unwrap();
    q.shutdown(false);
    q.shutdown(false); // again: harmless
    assert_eq!(q.get(), Ok(1));
    q.shutdown(true);
    assert_eq!(q.get(), Err(ShutDown(())));
    q.shutdown(false); // does not undo the immediate one
    assert_eq!(q.qsize(), 0);
}

#[test]
fn s30_shutdown_wakes_blocked_getters() {
    for immediate in [false, true] {
        let q = Queue::<u32>::new(1);
        let start = Arc::new(Barrier::new(3));
        let getter = {
            let (q, start) = (q.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                q.get()
            })
        };
        let timed_getter = {
            let (q, start) = (q.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                q.get_timeout(Duration::from_secs(3600))
            })
        };
        start.wait();
        q.shutdown(immediate);
        assert_eq!(getter.join().unwrap(), Err(ShutDown(())));
        assert_eq!(timed_getter.join().unwrap(), Err(GetError::ShutDown));
    }
}

#[test]
fn s30_shutdown_wakes_blocked_putters_and_gives_their_items_back() {
    for immediate in [false, true] {
        let q = Queue::new(1);
        q.put(0).unwrap();
        let start = Arc::new(Barrier::new(3));
        let putter = {
            let (q, start) = (q.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                q.put(1)
            })
        };
        let timed_putter = {
            let (q, start) = (q.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                q.put_timeout(2, Duration::from_secs(3600))
            })
        };
        start.wait();
        q.shutdown(immediate);
        let (put, timed_put) = (putter.join().unwrap(), timed_putter.join().unwrap());
        if immediate {
            // Dropping the queued item makes room: a put that passed its shutdown check
            // just before may take it, which makes it a put *before* the shutdown, whose
            // item is dropped too. Either way nothing is left and nothing is lost silently.
            assert!(matches!(put, Ok(()) | Err(ShutDown(1))), "{put:?}");
            assert!(
                matches!(timed_put, Ok(()) | Err(PutError::ShutDown(2))),
                "{timed_put:?}"
            );
        } else {
            assert_eq!(put, Err(ShutDown(1)));
            assert_eq!(timed_put, Err(PutError::ShutDown(2)));
        }
        let left: Vec<_> = q.try_iter().collect();
        assert_eq!(left, if immediate { vec![] } else { vec![0] });
        assert_eq!(q.unfinished_tasks(), usize::from(!immediate));
    }
}

#[test]
fn s30_iter_waits_for_items_until_shutdown() {
    let q = Queue::new(2);
    let consumer = {
        let q = q.clone();
        thread::spawn(move || (&q).into_iter().collect::<Vec<_>>())
    };
    for i in 0..10 {
        q.put(i).unwrap();
    }
    q.shutdown(false);
    assert_eq!(consumer.join().unwrap(), (0..10).collect::<Vec<_>>());
}

#[test]
fn s30_try_iter_takes_what_is_there_and_leaves_the_queue_open() {
    let q = Queue::new(0);
    assert_eq!(q.try_iter().count(), 0);
    q.put('a').unwrap();
    q.put('b').unwrap();
    assert_eq!(q.try_iter().collect::<String>(), "ab");
    assert!(!q.is_shutdown());
    q.put('c').unwrap();
    assert_eq!(q.iter().next(), Some('c'));
}

#[test]
fn s30_clones_are_handles_to_one_queue() {
    let q = Queue::new(2);
    let other = q.clone();
    other.put(1).unwrap();
    q.put(2).unwrap();
    assert!(other.full());
    assert_eq!(other.get(), Ok(1));
    other.task_done().unwrap();
    assert_eq!(q.unfinished_tasks(), 1);
    q.shutdown(false);
    assert!(other.is_shutdown());
    drop(q);
    assert_eq!(other.get(), Ok(2), "the queue outlives the dropped handle");
}

#[test]
fn s30_queue_is_send_and_sync_and_needs_no_debug_items() {
    fn assert_send_sync<X: Send + Sync>() {}
    assert_send_sync::<Queue<Opaque>>();
    assert_send_sync::<Queue<Vec<u8>>>();

    let q = Queue::new(1);
    q.put(Opaque(1)).unwrap(); // unwrap on errors holding an item that is not Debug
    let err = q.try_put(Opaque(2)).unwrap_err();
    assert_eq!(format!("{err:?}"), "Full(..)");
    assert_eq!(err.into_inner().0, 2);
    assert_eq!(q.get().unwrap().0, 1);
    q.shutdown(false);
    let closed = q.put(Opaque(3)).unwrap_err();
    assert_eq!(format!("{closed:?}"), "ShutDown(..)");
    assert_eq!(closed.into_inner().0, 3);
    assert_eq!(
        format!("{q:?}"),
        "Queue { maxsize: 1, qsize: 0, unfinished_tasks: 1, is_shutdown: true }"
    );
}

#[test]
fn s30_errors_display_and_convert() {
    assert_eq!(GetError::Empty.to_string(), "the queue is empty");
    assert_eq!(GetError::ShutDown.to_string(), "the queue is shut down");
    assert_eq!(PutError::Full(1).to_string(), "the queue is full");
    assert_eq!(PutError::ShutDown(1).to_string(), "the queue is shut down");
    assert_eq!(ShutDown(()).to_string(), "the queue is shut down");
    assert!(GetError::Empty.is_empty() && !GetError::Empty.is_shut_down());
    assert!(GetError::ShutDown.is_shut_down() && !GetError::ShutDown.is_empty());
    assert!(PutError::ShutDown(1).is_shut_down() && !PutError::ShutDown(1).is_full());
    assert_eq!(GetError::from(ShutDown(())), GetError::ShutDown);
    assert_eq!(PutError::from(ShutDown(5)), PutError::ShutDown(5));

    fn forward(from: &Queue<u8>, to: &Queue<u8>) -> Result<(), Box<dyn std::error::Error>> {
        to.put(from.try_get()?)?;
        Ok(())
    }
    let (a, b) = (Queue::new(0), Queue::new(0));
    a.put(1).unwrap();
    forward(&a, &b).unwrap();
    assert_eq!(b.try_get(), Ok(1));
    let err = forward(&a, &b).unwrap_err();
    assert_eq!(err.downcast_ref::<GetError>(), Some(&GetError::Empty));
}

#[test]
fn s30_many_producers_many_consumers_see_every_item_exactly_once() {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: usize = 4;
    const PER_PRODUCER: u64 = 10_000;

    let q = Queue::new(64); // small, so puts and gets both wait
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                for item in q.iter() {
                    seen.push(item);
                    q.task_done().unwrap();
                }
                seen
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    q.put(p * PER_PRODUCER + i).unwrap();
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    q.join();
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.empty());
    q.shutdown(false);

    let mut all = HashSet::new();
    let mut total = 0;
    for consumer in consumers {
        let seen = consumer.join().unwrap();
        // Each producer's items reach any one consumer in the order they were put.
        for p in 0..PRODUCERS {
            let mine: Vec<_> = seen
                .iter()
                .filter(|&&item| item / PER_PRODUCER == p)
                .collect();
            assert!(mine.is_sorted(), "FIFO per producer");
        }
        total += seen.len();
        all.extend(seen);
    }
    assert_eq!(total, (PRODUCERS * PER_PRODUCER) as usize, "no duplicates");
    assert_eq!(
        all,
        (0..PRODUCERS * PER_PRODUCER).collect::<HashSet<_>>(),
        "no item lost"
    );
}

#[test]
fn s30_an_item_put_while_the_queue_shuts_down_is_never_stranded() {
    // A put that saw the queue open may still be delivering its item while consumers
    // find the queue shut down and empty. They must wait for it: every accepted item is
    // taken, none is left behind, and join returns.
    for round in 0..300 {
        let immediate = round % 3 == 2;
        let q = Queue::new(if round % 2 == 0 { 4 } else { 0 });
        let producers: Vec<_> = (0..3_u64)
            .map(|p| {
                let q = q.clone();
                thread::spawn(move || {
                    let mut accepted = 0_usize;
                    for i in 0..5_000 {
                        if q.put(p * 10_000 + i).is_err() {
                            break;
                        }
                        accepted += 1;
                    }
                    accepted
                })
            })
            .collect();
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                thread::spawn(move || {
                    let mut taken = 0_usize;
                    while q.get().is_ok() {
                        taken += 1;
                        q.task_done().unwrap();
                    }
                    taken
                })
            })
            .collect();
        if round % 4 != 0 {
            thread::yield_now();
        }
        q.shutdown(immediate);
        let accepted: usize = producers.into_iter().map(|t| t.join().unwrap()).sum();
        let taken: usize = consumers.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(q.qsize(), 0, "round {round}: an item was stranded");
        assert!(
            q.join_timeout(Duration::from_secs(60)),
            "round {round}: join hangs with {} unfinished",
            q.unfinished_tasks()
        );
        if immediate {
            assert!(taken <= accepted, "round {round}");
        } else {
            assert_eq!(taken, accepted, "round {round}: every accepted item taken");
        }
    }
}
