//! S4 — `Queue(maxsize=10)`: `put` in one process, `get` in another; a bounded queue
//! makes `put` wait while it is full.
//!
//! Seed 000 (the `Queue` section): `f1` puts `'Hello shiyanlou'` and prints "Send
//! Data", `f2` gets it and prints "Receive Data"; the comment says `Queue(maxsize=10)`
//! bounds the queue. The second half shows what the bound does: a child puts 20 items
//! into the 10-item queue and stays blocked in its 11th `put` until the parent makes
//! room.

use std::time::{Duration, Instant};

use multiproc::{Process, Queue};

/// The seed's `f1`: the sending side.
fn f1(q: Queue<String>) {
    let i = "Hello shiyanlou".to_string();
    q.put(i.clone()).expect("the queue is open");
    println!("Send Data: {i}");
}

/// The seed's `f2`: the receiving side.
fn f2(q: Queue<String>) {
    let data = q.get().expect("an item");
    println!("Receive Data: {data}");
}

/// Puts `0..n`, one after the other; returns how many it put.
fn put_numbers((q, n): (Queue<u32>, u32)) -> u32 {
    for i in 0..n {
        q.put(i).expect("the queue is open");
    }
    n
}

/// Runs the scenario.
pub fn run() {
    // queue = Queue(maxsize=10); Process(target=f1, ...).start(); Process(target=f2, ...).start()
    let queue = Queue::<String>::with_maxsize(10).expect("queue");
    let mut sender = Process::start(f1, queue.clone()).expect("start f1");
    let mut receiver = Process::start(f2, queue.clone()).expect("start f2");
    sender.join().expect("f1 returns");
    receiver.join().expect("f2 returns");
    assert!(queue.empty());

    // What maxsize=10 means: the 11th put waits for a get.
    let numbers = Queue::<u32>::with_maxsize(10).expect("queue");
    let mut producer = Process::start(put_numbers, (numbers.clone(), 20)).expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    while numbers.qsize() < 10 {
        assert!(
            Instant::now() < deadline,
            "the producer never filled the queue"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "qsize() = {}, full() = {}, producer alive (blocked in its 11th put): {}",
        numbers.qsize(),
        numbers.full(),
        producer.is_alive()
    );
    assert!(numbers.full());
    assert!(
        producer.is_alive(),
        "20 puts cannot finish in a 10-item queue"
    );
    let refused = numbers.try_put(99).expect_err("no room");
    println!("put_nowait(99) on the full queue -> {refused:?}");
    assert!(refused.is_full());

    let got: Vec<u32> = (0..20).map(|_| numbers.get().expect("an item")).collect();
    println!("got {got:?}");
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert_eq!(producer.join().expect("the producer returns"), 20);
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
