//! Issue 15, "Queues": Python 3.13's `shutdown(immediate)` on the cross-process `Queue`
//! and `JoinableQueue`, with getters, putters and joiners blocked in other processes,
//! kept apart from `close()`; and the in-process `LifoQueue` and `PriorityQueue` beside
//! `queue.Queue` (CPython's test_queue.py: `BaseQueueTestMixin`, the shutdown tests).

use std::thread;
use std::time::Duration;

use multiproc::queue::local::{self, LifoQueue, PriorityQueue};
use multiproc::sync::Event;
use multiproc::testing::LeakCheck;
use multiproc::{GetError, JoinableQueue, PutError, Queue, StartMethod};

multiproc::test_support!();

mod common;
use common::{PROMPT, start, wait_until};

/// Whether the main thread of `pid` (where the child runs its target) is asleep in a
/// `futex` wait on a word of the library's shared memory whose memfd is called
/// `memfd` (`multiproc-queue`: a ring of the queue). Once the child has said it
/// started, its target makes no other such wait than the blocked `get`, `put` or
/// `join`: this proves the call is blocked, not merely that the process sleeps.
fn blocked_on(pid: u32, memfd: &str) -> bool {
    // "<nr> <arg0> ...", or "running" (needs the ptrace access a parent has).
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let mut fields = syscall.split_whitespace();
    let nr = fields.next().and_then(|n| n.parse::<i64>().ok());
    let addr = fields
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    let (Some(nr), Some(addr)) = (nr, addr) else {
        return false;
    };
    if nr != libc::SYS_futex {
        return false;
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines().any(|line| {
        let mut parts = line.split_whitespace();
        let range = parts.next().unwrap_or("");
        let path = parts.nth(4).unwrap_or("");
        let Some((lo, hi)) = range.split_once('-') else {
            return false;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            return false;
        };
        (lo..hi).contains(&addr) && path.starts_with(&format!("/memfd:{memfd}"))
    })
}

/// What a blocked call in a child ended with, as text the parent can compare.
fn getter((q, started): (Queue<u32>, Event)) -> String {
    started.set();
    match q.get() {
        Ok(item) => format!("item {item}"),
        Err(GetError::ShutDown) => "ShutDown".into(),
        Err(e) => format!("other: {e:?}"),
    }
}

fn putter((q, started, item): (Queue<u32>, Event, u32)) -> String {
    started.set();
    match q.put(item) {
        Ok(()) => "put".into(),
        Err(PutError::ShutDown(back)) => format!("ShutDown({back})"),
        Err(e) => format!("other: {e:?}"),
    }
}

fn joiner((q, started): (JoinableQueue<u32>, Event)) -> usize {
    started.set();
    q.join();
    q.unfinished_tasks()
}

fn drainer(q: Queue<u32>) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match q.get_timeout(PROMPT) {
            Ok(item) => seen.push(item.to_string()),
            Err(GetError::ShutDown) => {
                seen.push("ShutDown".into());
                return seen;
            }
            Err(e) => {
                seen.push(format!("other: {e:?}"));
                return seen;
            }
        }
    }
}

#[test]
fn shutdown_immediate_wakes_getters_blocked_in_other_processes() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let q = Queue::<u32>::new().unwrap();
        let mut children = Vec::new();
        for _ in 0..2 {
            let started = Event::new().unwrap();
            let child = start(method, getter, (q.clone(), started.clone()));
            assert!(started.wait_timeout(PROMPT), "{method}: the getter started");
            let pid = child.pid();
            wait_until("the getter to block in get", || {
                blocked_on(pid, "multiproc-queue")
            });
            children.push(child);
        }
        q.shutdown(true);
        for mut child in children {
            assert_eq!(
                child.join_timeout(PROMPT).unwrap(),
                "ShutDown",
                "{method}: a blocked get wakes with ShutDown"
            );
        }
        assert!(q.is_shutdown());
    }
    leaks.assert_clean();
}

#[test]
fn shutdown_immediate_drops_the_items_and_wakes_putters_blocked_in_other_processes() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let q = Queue::<u32>::with_maxsize(1).unwrap();
        q.put(7).unwrap();
        let started = Event::new().unwrap();
        let mut child = start(method, putter, (q.clone(), started.clone(), 8));
        assert!(started.wait_timeout(PROMPT), "{method}: the putter started");
        let pid = child.pid();
        wait_until("the putter to block in put", || {
            blocked_on(pid, "multiproc-queue")
        });
        assert_eq!(q.qsize(), 1, "{method}: the queue is full, the put waits");

        q.shutdown(true);
        assert_eq!(
            child.join_timeout(PROMPT).unwrap(),
            "ShutDown(8)",
            "{method}: the blocked put wakes with ShutDown and its item"
        );
        assert_eq!(q.qsize(), 0, "{method}: the queued item was dropped");
        assert!(
            matches!(q.try_get(), Err(GetError::ShutDown)),
            "{method}: nothing to drain after an immediate shutdown"
        );
    }
    leaks.assert_clean();
}

#[test]
fn shutdown_immediate_releases_a_join_waiting_in_another_process() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let q = JoinableQueue::<u32>::new().unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        let started = Event::new().unwrap();
        let mut child = start(method, joiner, (q.clone(), started.clone()));
        assert!(started.wait_timeout(PROMPT), "{method}: the joiner started");
        let pid = child.pid();
        wait_until("the joiner to block in join", || {
            blocked_on(pid, "multiproc-")
        });
        assert_eq!(q.unfinished_tasks(), 2);

        q.shutdown(true);
        assert_eq!(
            child.join_timeout(PROMPT).unwrap(),
            0,
            "{method}: join returns once the dropped items count as done"
        );
        assert_eq!(q.unfinished_tasks(), 0, "{method}");
        assert!(
            q.task_done().is_err(),
            "{method}: nothing left to mark done"
        );
    }
    leaks.assert_clean();
}

#[test]
fn shutdown_immediate_keeps_a_join_waiting_for_items_already_taken() {
    // Python 3.13: the count of unfinished tasks falls by the items dropped; an item
    // a consumer took and has not marked done still holds `join`.
    let leaks = LeakCheck::start();
    let q = JoinableQueue::<u32>::new().unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    q.shutdown(true);
    assert_eq!(q.unfinished_tasks(), 1);
    assert!(!q.join_timeout(Duration::from_millis(10)));
    q.task_done().unwrap();
    assert!(q.join_timeout(PROMPT));
    drop(q);
    leaks.assert_clean();
}

#[test]
fn shutdown_without_immediate_lets_another_process_drain_then_fail() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let q = Queue::<u32>::new().unwrap();
        for i in 0..3 {
            q.put(i).unwrap();
        }
        q.shutdown(false);
        assert!(matches!(q.put(9), Err(PutError::ShutDown(9))), "{method}");
        let mut child = start(method, drainer, q.clone());
        assert_eq!(
            child.join_timeout(PROMPT).unwrap(),
            ["0", "1", "2", "ShutDown"],
            "{method}: the items queued before the shutdown are delivered, then ShutDown"
        );
        // Then an immediate shutdown on top is harmless.
        q.shutdown(true);
        assert!(matches!(q.try_get(), Err(GetError::ShutDown)));
    }
    leaks.assert_clean();
}

fn close_then_get((q, item): (Queue<u32>, u32)) -> String {
    q.close();
    let closed =
        matches!(q.get(), Err(GetError::Closed)) && matches!(q.put(item), Err(PutError::Closed(_)));
    format!("closed here: {closed}")
}

#[test]
fn close_concerns_one_handle_and_shutdown_every_handle() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let q = Queue::<u32>::new().unwrap();
        q.put(5).unwrap();
        let mut child = start(method, close_then_get, (q.clone(), 6));
        assert_eq!(
            child.join_timeout(PROMPT).unwrap(),
            "closed here: true",
            "{method}"
        );
        // The child's close did not shut the queue down for this process.
        assert!(!q.is_shutdown(), "{method}");
        assert_eq!(q.get().unwrap(), 5, "{method}");
        q.put(6).unwrap();
        q.shutdown(true);
        let err = q.put(7).unwrap_err();
        assert!(matches!(err, PutError::ShutDown(7)), "{method}: {err:?}");
    }
    leaks.assert_clean();
}

#[test]
fn a_put_racing_an_immediate_shutdown_leaves_no_item_and_no_unfinished_task() {
    // Puts in another thread race the shutdown: each either fails with ShutDown or was
    // made before it and its item was dropped; nothing is left to get, and join returns.
    let leaks = LeakCheck::start();
    for _ in 0..50 {
        let q = JoinableQueue::<u32>::new().unwrap();
        let go = std::sync::Arc::new(std::sync::Barrier::new(2));
        let producer = {
            let (q, go) = (q.clone(), go.clone());
            thread::spawn(move || {
                go.wait();
                (0..200).filter(|i| q.put(*i).is_ok()).count()
            })
        };
        go.wait();
        q.shutdown(true);
        let made = producer.join().unwrap();
        assert!(made <= 200);
        assert!(matches!(q.try_get(), Err(GetError::ShutDown)));
        assert_eq!(q.qsize(), 0, "{made} puts made before the shutdown");
        assert!(q.join_timeout(PROMPT), "every dropped item counts as done");
    }
    leaks.assert_clean();
}

// ---- in-process LifoQueue and PriorityQueue ----------------------------------------

#[test]
fn lifo_queue_gets_the_last_item_put_first() {
    let q = LifoQueue::new(0);
    for i in [111, 333, 222] {
        q.put(i).unwrap();
    }
    assert_eq!(q.qsize(), 3);
    assert_eq!(
        [q.get(), q.get(), q.get()],
        [Ok(222), Ok(333), Ok(111)],
        "CPython's test_queue: LifoQueue order"
    );
    assert!(q.empty());
    assert_eq!(q.try_get(), Err(local::GetError::Empty));
    assert_eq!(
        q.get_timeout(Duration::from_millis(10)),
        Err(local::GetError::Timeout)
    );
}

#[test]
fn priority_queue_gets_the_smallest_item_first() {
    let q = PriorityQueue::new(0);
    for i in [111, 333, 222] {
        q.put(i).unwrap();
    }
    assert_eq!(
        [q.get(), q.get(), q.get()],
        [Ok(111), Ok(222), Ok(333)],
        "CPython's test_queue: PriorityQueue order"
    );
    let jobs = PriorityQueue::new(0);
    jobs.put((3, "low")).unwrap();
    jobs.put((1, "urgent")).unwrap();
    jobs.put((2, "normal")).unwrap();
    assert_eq!(jobs.get(), Ok((1, "urgent")));
    assert_eq!(jobs.get(), Ok((2, "normal")));
}

#[test]
fn bounded_lifo_and_priority_queues_wait_for_room_and_report_full() {
    let q = LifoQueue::new(2);
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert!(q.full());
    assert_eq!(q.maxsize(), 2);
    assert_eq!(q.try_put(3), Err(local::PutError::Full(3)));
    assert_eq!(
        q.put_timeout(3, Duration::from_millis(10)),
        Err(local::PutError::Timeout(3))
    );
    // A put waits for room, which a get in another thread makes.
    let waiting = {
        let q = q.clone();
        thread::spawn(move || q.put(3))
    };
    wait_until("a get to make room", || q.get() == Ok(2));
    assert_eq!(waiting.join().unwrap(), Ok(()));
    assert_eq!(q.get(), Ok(3), "the last put comes out first");

    let p = PriorityQueue::new(1);
    p.put(5).unwrap();
    assert_eq!(p.try_put(4), Err(local::PutError::Full(4)));
}

#[test]
fn lifo_and_priority_queues_count_tasks_for_join() {
    let q = PriorityQueue::new(0);
    for i in 0..5 {
        q.put(i).unwrap();
    }
    let worker = {
        let q = q.clone();
        thread::spawn(move || {
            let mut seen = Vec::new();
            while let Ok(item) = q.get_timeout(Duration::from_millis(0)) {
                seen.push(item);
                q.task_done().unwrap();
            }
            seen
        })
    };
    q.join();
    assert_eq!(worker.join().unwrap(), [0, 1, 2, 3, 4]);
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.task_done().is_err(), "one task_done too many");
}

#[test]
fn lifo_and_priority_queues_shut_down_as_queue_does() {
    // Blocked getters wake with ShutDown, blocked putters get their item back.
    let q = LifoQueue::<u32>::new(1);
    let getter = {
        let q = LifoQueue::<u32>::new(0);
        let waiting = q.clone();
        let handle = thread::spawn(move || waiting.get());
        (q, handle)
    };
    q.put(1).unwrap();
    let putter = {
        let q = q.clone();
        thread::spawn(move || q.put(2))
    };
    getter.0.shutdown(false);
    assert_eq!(getter.1.join().unwrap(), Err(local::ShutDown(())));
    q.shutdown(true);
    assert_eq!(putter.join().unwrap(), Err(local::ShutDown(2)));
    assert_eq!(q.qsize(), 0, "immediate: the queued item was dropped");
    assert!(q.join_timeout(PROMPT), "and counts as done");
    assert!(q.is_shutdown());

    let p = PriorityQueue::new(0);
    p.put(3).unwrap();
    p.put(1).unwrap();
    p.shutdown(false);
    assert_eq!(p.put(0), Err(local::ShutDown(0)));
    assert_eq!(p.get(), Ok(1), "drained in priority order after a shutdown");
    assert_eq!(p.get(), Ok(3));
    assert_eq!(p.get(), Err(local::ShutDown(())));
}
