//! Cross-process queues (S4 S12 S31 S32): Queue, SimpleQueue, JoinableQueue under every
//! start method, and what processes can do to them: die in the middle of a put or a
//! get, send too much, send what cannot be encoded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use multiproc::codec::CodecError;
use multiproc::queue::mp::{GetError, PutError, QueueBuilder};
use multiproc::testing::LeakCheck;
use multiproc::{JoinableQueue, Process, Queue, SimpleQueue, StartMethod};
use serde::{Deserialize, Serialize};

multiproc::test_support!();

const PROMPT: Duration = Duration::from_secs(60);

fn builder(method: StartMethod) -> multiproc::ProcessBuilder {
    multiproc::process::set_fork_warning(false);
    Process::builder().start_method(method)
}

/// Waits (without sleeping blindly) until `cond` holds; panics after `PROMPT`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PROMPT, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

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
        assert!(q.get_timeout(Duration::from_millis(200)).unwrap_err().is_empty());
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
            let mut p = builder(method).start(put_range, (q.clone(), 10_000)).unwrap();
            for i in 0..10_000 {
                assert_eq!(q.get_timeout(PROMPT).unwrap(), i, "{method}");
            }
            p.join_timeout(PROMPT).unwrap();
            assert!(q.empty());
        }
    }
    check.assert_clean();
}
