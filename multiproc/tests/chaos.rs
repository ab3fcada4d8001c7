//! Chaos (issue 14): random `SIGKILL`s of pool workers mid-task, of queue producers
//! mid-put and consumers mid-get, and of the forkserver, for a bounded time, checking
//! the promises: every task completes or fails with `WorkerDied` (none lost, none
//! hangs); every item a surviving producer put is delivered exactly once; a killed
//! consumer costs at most the one item it took; nothing is left behind.
//!
//! `MULTIPROC_CHAOS_SECS` (default 4) is the time the tests of this file spend killing,
//! shared between them; `MULTIPROC_CHAOS_SEED` replays a run. The seed is printed at
//! the start of each test (shown when it fails).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiproc::pool::Pool;
use multiproc::sync::Event;
use multiproc::testing::LeakCheck;
use multiproc::{GetError, Queue, StartMethod, TaskError, WaitError};

use common::{Child, PROMPT, builder};

multiproc::test_support!();

/// The time each test of this file spends killing.
fn budget() -> Duration {
    let total: f64 = std::env::var("MULTIPROC_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    Duration::from_secs_f64(total / 2.0)
}

/// The run's seed (`MULTIPROC_CHAOS_SEED`, else the clock), printed for a replay.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("MULTIPROC_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: MULTIPROC_CHAOS_SEED={seed}");
    seed
}

/// xorshift64*, seeded.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    fn method(&mut self) -> StartMethod {
        StartMethod::ALL[self.below(StartMethod::ALL.len() as u64) as usize]
    }

    /// A pause of up to `ms` milliseconds: when the next blow falls (chaos pacing, not
    /// synchronisation: nothing waits for anything by sleeping).
    fn pause(&mut self, ms: u64) {
        std::thread::sleep(Duration::from_micros(self.below(ms * 1000)));
    }
}

fn sigkill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// A task that works for `micros` and returns twice `i`.
fn work((i, micros): (u64, u64)) -> u64 {
    let until = Instant::now() + Duration::from_micros(micros);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    i * 2
}

/// Pools under each start method in turn, their workers (and now and then the forkserver)
/// killed at random while tasks run: each task's result is its value or `WorkerDied`,
/// never another error, never lost, never a hang; no more tasks die than blows fell on
/// workers; the pool still has its workers at the end.
#[test]
fn pool_workers_and_the_forkserver_killed_at_random() {
    let mut rng = Rng::new(seed("pool"));
    let leaks = LeakCheck::start();
    multiproc::process::set_fork_warning(false);
    let end = Instant::now() + budget();
    let (mut tasks, mut died, mut kills) = (0u64, 0usize, 0usize);
    // Every start method, in turn, for as many rounds as the time allows (at least one
    // each).
    for round in 0.. {
        if round >= StartMethod::ALL.len() && Instant::now() >= end {
            break;
        }
        let method = StartMethod::ALL[round % StartMethod::ALL.len()];
        let pool = Arc::new(
            Pool::builder()
                .processes(3)
                .start_method(method)
                .build()
                .unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let worker_kills = Arc::new(AtomicUsize::new(0));
        let killer = {
            let (pool, stop, worker_kills) = (pool.clone(), stop.clone(), worker_kills.clone());
            let mut rng = Rng::new(rng.below(u64::MAX));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    rng.pause(30);
                    if rng.below(8) == 0 {
                        if let Some(fs) = multiproc::process::forkserver_pid() {
                            sigkill(fs);
                        }
                    } else {
                        let pids = pool.worker_pids();
                        if !pids.is_empty() {
                            sigkill(pids[rng.below(pids.len() as u64) as usize]);
                            worker_kills.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        let results: Vec<_> = (0..30)
            .map(|i| (i, pool.apply_async(work, (i, rng.below(5000))).unwrap()))
            .collect();
        for (i, r) in results {
            match r.get_timeout(PROMPT) {
                Ok(v) => assert_eq!(v, i * 2, "{method}"),
                Err(WaitError::Task(TaskError::WorkerDied { status, .. })) => {
                    assert_eq!(status.signal(), Some(libc::SIGKILL), "{method}");
                    died += 1;
                }
                Err(e) => panic!("{method}: task {i}: {e:?}"),
            }
            tasks += 1;
        }
        stop.store(true, Ordering::Relaxed);
        killer.join().unwrap();
        kills += worker_kills.load(Ordering::Relaxed);
        assert!(
            died <= kills,
            "{method}: {died} tasks died of {kills} kills"
        );
        // The pool replaced its dead: it still runs tasks.
        assert_eq!(pool.apply(work, (21, 0)).unwrap(), 42, "{method}");
        assert_eq!(pool.worker_pids().len(), 3, "{method}");
        pool.close();
        pool.join().unwrap();
    }
    eprintln!("pool: {tasks} tasks, {died} died, {kills} workers killed");
    leaks.assert_clean();
}

/// An item: its producer and its number.
type Item = (u32, u64);
/// A consumer's signal to stop.
const STOP: Item = (u32::MAX, 0);

/// Puts `(id, 0, 1, 2, …)` until `stop` is set (or it is killed); returns how many.
fn produce((q, id, stop): (Queue<Item>, u32, Event)) -> u64 {
    let mut i = 0;
    while !stop.is_set() {
        q.put((id, i)).unwrap();
        i += 1;
    }
    i
}

/// Moves items from `q` to `taken` until [`STOP`]; between the two it holds one item,
/// which its death loses.
fn consume((q, taken): (Queue<Item>, Queue<Item>)) {
    loop {
        let item = q.get().unwrap();
        if item == STOP {
            return;
        }
        taken.put(item).unwrap();
    }
}

/// Producers and consumers of one queue, under every start method, some killed at
/// random mid-put or mid-get (and the forkserver now and then) while the rest carry
/// on: no item is delivered twice; every item of a producer that lived, and every item
/// a killed producer published, arrives, but for at most one per consumer killed.
#[test]
fn queue_producers_and_consumers_killed_at_random() {
    let mut rng = Rng::new(seed("queue"));
    let leaks = LeakCheck::start();
    multiproc::process::set_fork_warning(false);
    {
        // Bounded, so that the backlog at the end is small: producers wait in `put`.
        let q = Queue::<Item>::with_maxsize(2000).unwrap();
        let taken = Queue::<Item>::new().unwrap();
        let stop = Event::new().unwrap();
        let mut next_id = 0u32;
        let mut start_producer = |method: StartMethod| {
            next_id += 1;
            let p = builder(method)
                .start(produce, (q.clone(), next_id, stop.clone()))
                .unwrap();
            (next_id, Child(p))
        };
        let start_consumer = |method: StartMethod| {
            Child(
                builder(method)
                    .start(consume, (q.clone(), taken.clone()))
                    .unwrap(),
            )
        };
        // At first every start method for each role; later ones are picked at random.
        let [fork, spawn, forkserver] = StartMethod::ALL;
        let survivors = vec![start_producer(fork), start_producer(spawn)];
        let mut victims = vec![start_producer(forkserver), start_producer(fork)];
        let mut consumers: Vec<_> = StartMethod::ALL.map(&start_consumer).into();
        let mut seen: HashMap<u32, HashSet<u64>> = HashMap::new();
        let mut see = |item: Item| {
            assert!(
                seen.entry(item.0).or_default().insert(item.1),
                "{item:?} delivered twice"
            );
        };
        let (mut killed_consumers, mut killed_producers) = (0usize, 0usize);
        let end = Instant::now() + budget();
        while Instant::now() < end {
            for _ in 0..20_000 {
                match taken.try_get() {
                    Ok(item) => see(item),
                    Err(_) => break,
                }
            }
            rng.pause(20);
            match rng.below(10) {
                0..=3 => {
                    let k = rng.below(victims.len() as u64) as usize;
                    let (id, mut p) = victims.swap_remove(k);
                    p.kill().unwrap();
                    common::assert_killed_by(&mut p, libc::SIGKILL, &format!("producer {id}"));
                    killed_producers += 1;
                    victims.push(start_producer(rng.method()));
                }
                4..=7 => {
                    let k = rng.below(consumers.len() as u64) as usize;
                    let mut c = consumers.swap_remove(k);
                    c.kill().unwrap();
                    common::assert_killed_by(&mut c, libc::SIGKILL, "a consumer");
                    killed_consumers += 1;
                    consumers.push(start_consumer(rng.method()));
                }
                8 => {
                    if let Some(fs) = multiproc::process::forkserver_pid() {
                        sigkill(fs);
                    }
                }
                _ => {}
            }
        }
        // The end: producers told to stop (the victims killed where they are), the
        // consumers stopped, and what is left taken here. Meanwhile `taken` is drained:
        // a full one would hold the consumers, and a full `q` the producers.
        stop.set();
        let mut published: HashMap<u32, u64> = HashMap::new();
        let done = AtomicBool::new(false);
        let drained = std::thread::scope(|s| {
            let drainer = s.spawn(|| {
                let mut items = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    match taken.get_timeout(Duration::from_millis(20)) {
                        Ok(item) => items.push(item),
                        Err(GetError::Timeout) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
                items
            });
            for (id, mut p) in survivors {
                published.insert(id, p.join_timeout(PROMPT).unwrap());
            }
            for (id, mut p) in victims {
                p.kill().unwrap();
                let _ = p.join_timeout(PROMPT);
                assert!(p.exit_status().is_some(), "producer {id} reaped");
            }
            for _ in &consumers {
                q.put(STOP).unwrap();
            }
            for mut c in consumers {
                c.join_timeout(PROMPT).unwrap();
            }
            done.store(true, Ordering::Relaxed);
            drainer.join().unwrap()
        });
        drained.into_iter().for_each(&mut see);
        loop {
            match taken.try_get().or_else(|_| q.try_get()) {
                Ok(item) => see(item),
                Err(GetError::Empty) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        // A survivor's items: all of 0..n. A killed producer's: all below the highest
        // that arrived (what it published before it died).
        let mut missing = 0usize;
        for (id, numbers) in &seen {
            let n = match published.get(id) {
                Some(&n) => n,
                None => numbers.iter().max().map_or(0, |m| m + 1),
            };
            assert!(numbers.iter().all(|&i| i < n), "producer {id}: beyond {n}");
            missing += (n - numbers.len() as u64) as usize;
        }
        for (id, &n) in &published {
            if !seen.contains_key(id) {
                missing += n as usize;
            }
        }
        let delivered: usize = seen.values().map(HashSet::len).sum();
        eprintln!(
            "queue: {delivered} items delivered, {missing} lost, {killed_consumers} consumers \
             and {killed_producers} producers killed"
        );
        assert!(
            missing <= killed_consumers,
            "{missing} items lost to {killed_consumers} killed consumers"
        );
        assert!(
            published.values().all(|&n| n > 0),
            "the survivors put nothing"
        );
    }
    leaks.assert_clean();
}
