//! S32 — producer/consumer: 2 producers × 5 items, 2 consumers, one `None` sentinel per
//! consumer; then the same with a `JoinableQueue`, `task_done()` / `join()` and daemon
//! consumers.
//!
//! Seed 003 (§14, the producer-consumer model): each producer makes 5 items, sleeping
//! 1–3 s before each; each consumer takes items, sleeping 1–3 s per item, until it gets
//! `None`. The parent joins each producer and puts one `None` after it. The seed notes
//! that this needs one sentinel per consumer, and improves on it: with a
//! `JoinableQueue`, consumers call `task_done()` after each item and the parent's
//! `q.join()` returns once every item is done; the consumers are daemons, killed when
//! the main process ends.
//!
//! `MULTIPROC_TOUR_FAST=1` makes the 1–3 s sleeps 10–30 ms.

use std::time::Duration;

use multiproc::{JoinableQueue, Process, ProcessError, Queue};

/// The unit of the seed's `random.randint(1, 3)` sleeps.
fn unit() -> Duration {
    if std::env::var_os("MULTIPROC_TOUR_FAST").is_some_and(|v| v == "1") {
        Duration::from_millis(10)
    } else {
        Duration::from_secs(1)
    }
}

/// A tiny linear congruential generator, seeded from the pid and the clock: enough to
/// vary the sleeps without a dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// `random.randint(1, 3)` units.
    fn sleep(&mut self, unit: Duration) {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(unit * (1 + (self.0 >> 33) as u32 % 3));
    }
}

/// The seed's `producer(name, food, q)` for the plain queue.
fn producer((name, food, q, unit): (String, String, Queue<Option<String>>, Duration)) {
    let mut rng = Rng::new();
    for i in 0..5 {
        let data = format!("{name} made {food} #{i}");
        rng.sleep(unit);
        println!("{data}");
        q.put(Some(data)).expect("the queue is open");
    }
}

/// The seed's `consumer(name, q)`: eats until the `None` sentinel; returns how many.
fn consumer((name, q, unit): (String, Queue<Option<String>>, Duration)) -> usize {
    let mut rng = Rng::new();
    let mut eaten = 0;
    while let Some(food) = q.get().expect("an item") {
        rng.sleep(unit);
        println!("{name} ate ({food})");
        eaten += 1;
    }
    eaten
}

/// The producer of the `JoinableQueue` version.
fn joinable_producer((name, food, q, unit): (String, String, JoinableQueue<String>, Duration)) {
    let mut rng = Rng::new();
    for i in 0..5 {
        let data = format!("{name} made {food} #{i}");
        rng.sleep(unit);
        println!("{data}");
        q.put(data).expect("the queue is open");
    }
}

/// The consumer of the `JoinableQueue` version: never returns; tells the queue when
/// each item is done.
fn joinable_consumer((name, q, unit): (String, JoinableQueue<String>, Duration)) {
    let mut rng = Rng::new();
    loop {
        let food = q.get().expect("an item");
        rng.sleep(unit);
        println!("{name} ate ({food})");
        // Tell the queue that an item was taken and fully processed.
        q.task_done().expect("one task_done per item");
    }
}

/// Runs the scenario.
pub fn run() {
    let unit = unit();

    println!("-- Queue with a None sentinel per consumer");
    let q = Queue::<Option<String>>::new().expect("queue");
    let make = |name: &str, food: &str| {
        Process::start(producer, (name.into(), food.into(), q.clone(), unit)).expect("start")
    };
    let mut p1 = make("producer 1", "baozi");
    let mut p2 = make("producer 2", "jiaozi");
    let eat = |name: &str| Process::start(consumer, (name.into(), q.clone(), unit)).expect("start");
    let mut c1 = eat("consumer 1");
    let mut c2 = eat("consumer 2");
    p1.join().expect("producer 1 returns");
    q.put(None).expect("the queue is open");
    p2.join().expect("producer 2 returns");
    q.put(None).expect("the queue is open");
    let eaten = c1.join().expect("consumer 1 returns") + c2.join().expect("consumer 2 returns");
    println!("the consumers ate {eaten} items");
    assert_eq!(eaten, 10);
    assert!(q.empty());

    println!("-- JoinableQueue: task_done() and join(), daemon consumers");
    let q = JoinableQueue::<String>::new().expect("queue");
    let make = |name: &str, food: &str| {
        Process::start(
            joinable_producer,
            (name.into(), food.into(), q.clone(), unit),
        )
        .expect("start")
    };
    let mut p1 = make("producer 1", "baozi");
    let mut p2 = make("producer 2", "jiaozi");
    // Daemons: Python kills them when the main process ends.
    let eat = |name: &str| {
        Process::builder()
            .daemon(true)
            .start(joinable_consumer, (name.into(), q.clone(), unit))
            .expect("start")
    };
    let mut consumers = [eat("consumer 1"), eat("consumer 2")];
    p1.join().expect("producer 1 returns");
    p2.join().expect("producer 2 returns");
    // Wait until every item was taken and processed.
    q.join();
    println!(
        "q.join() returned: {} unfinished tasks, {} items left",
        q.unfinished_tasks(),
        q.qsize()
    );
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.empty());

    // The seed's main process ends here, and its daemons with it. This `run` is not the
    // end of the process (the tour goes on), so end them as the exit would.
    for c in &mut consumers {
        c.terminate().expect("send SIGTERM");
        let err = c.join().expect_err("a daemon consumer never returns");
        assert!(matches!(err, ProcessError::Signaled { .. }));
    }
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
