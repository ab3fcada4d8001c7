//! Issue 14, item 3: a worker that dies in the middle of a chunk of a map keeps every
//! item of the chunk that finished before the death (delivered once), fails only the
//! item it was running (`TaskError::WorkerDied`, under that item's input index), and the
//! items after it still run. Every test runs under all three start methods, counts how
//! many times each item ran (a shared array the workers get from their initializer)
//! and checks for leaked processes and descriptors.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use multiproc::executor::ProcessPoolExecutor;
use multiproc::pool::{Pool, PoolError, TaskError};
use multiproc::shared::Array;
use multiproc::testing::LeakCheck;
use multiproc::{StartMethod, process::set_fork_warning};

mod common;
use common::PROMPT;

multiproc::test_support!();

const ITEMS: u32 = 40;
const CHUNK: usize = 8;
/// Aborts its worker (in the chunk of items 8..16).
const ABORTS: u32 = 13;
/// Kills its worker with SIGKILL (in the chunk of items 24..32).
const KILLS: u32 = 29;

/// How many times each item began, in the workers.
static RUNS: OnceLock<Array<u32>> = OnceLock::new();

fn set_runs(runs: Array<u32>) {
    let _ = RUNS.set(runs);
}

/// Counts one run of item `i`.
fn ran(i: u32) {
    let runs = RUNS.get().expect("initializer ran");
    let mut guard = match runs.lock() {
        Ok(g) => g,
        // A worker killed while it held the lock (the chaos test): the count it was
        // writing is whole (a u32 store), take the lock over.
        Err(e) => e.into_guard().expect("a dead holder, not another error"),
    };
    guard[i as usize] += 1;
}

fn die_if_marked(i: u32) {
    if i == ABORTS {
        std::process::abort();
    }
    if i == KILLS {
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
            .unwrap();
    }
}

/// `10 i`, after counting the run; items 13 and 29 kill their worker.
fn tenfold(i: u32) -> u64 {
    ran(i);
    die_if_marked(i);
    u64::from(i) * 10
}

/// `tenfold(i) + k` (for `starmap`).
fn tenfold_plus(i: u32, k: u32) -> u64 {
    tenfold(i) + u64::from(k)
}

/// A result of 24 KiB, so that a chunk's results do not all fit in a worker's shared
/// area: earlier ones are sent ahead on the reply queue.
fn big(i: u32) -> Vec<u8> {
    ran(i);
    die_if_marked(i);
    vec![i as u8; 24 * 1024]
}

fn pool(method: StartMethod, runs: &Array<u32>) -> Pool {
    set_fork_warning(false);
    Pool::builder()
        .processes(2)
        .start_method(method)
        .initializer(set_runs, runs.clone())
        .build()
        .unwrap()
}

fn fresh_runs() -> Array<u32> {
    Array::zeroed(ITEMS as usize).unwrap()
}

/// Checks the results of a map over `0..ITEMS` (with their input indices): item 13
/// died of SIGABRT, item 29 of SIGKILL, every other one is `expect(i)`, each once.
fn check_results<R: PartialEq + std::fmt::Debug>(
    what: &str,
    mut got: Vec<(usize, Result<R, TaskError>)>,
    expect: impl Fn(u32) -> R,
) {
    got.sort_by_key(|(i, _)| *i);
    let indices: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        indices,
        (0..ITEMS as usize).collect::<Vec<_>>(),
        "{what}: one result per item"
    );
    for (i, r) in got {
        let i = i as u32;
        let signal = match i {
            ABORTS => Some(libc::SIGABRT),
            KILLS => Some(libc::SIGKILL),
            _ => None,
        };
        match (signal, r) {
            (None, Ok(v)) => assert_eq!(v, expect(i), "{what}: item {i}"),
            (Some(sig), Err(TaskError::WorkerDied { status, .. })) => {
                assert_eq!(status.signal(), Some(sig), "{what}: item {i}")
            }
            (_, other) => panic!("{what}: item {i}: {other:?}"),
        }
    }
}

/// Every item began exactly once.
fn check_ran_once(what: &str, runs: &Array<u32>) {
    assert_eq!(
        runs.to_vec(),
        vec![1; ITEMS as usize],
        "{what}: runs per item"
    );
    runs.lock().unwrap().fill(0);
}

#[test]
fn imap_and_imap_unordered_keep_the_finished_items_of_a_chunk_whose_worker_died() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let runs = fresh_runs();
        let p = pool(method, &runs);
        let what = format!("{method} imap");
        let got: Vec<_> = p
            .with_chunksize(CHUNK)
            .imap(tenfold, 0..ITEMS)
            .unwrap()
            .enumerate()
            .collect();
        check_results(&what, got, |i| u64::from(i) * 10);
        check_ran_once(&what, &runs);

        let what = format!("{method} imap_unordered");
        let got: Vec<_> = p
            .with_chunksize(CHUNK)
            .imap_unordered(tenfold, 0..ITEMS)
            .unwrap()
            .indexed()
            .collect();
        check_results(&what, got, |i| u64::from(i) * 10);
        check_ran_once(&what, &runs);

        // Results too large for a worker's shared area: sent ahead in parts.
        let what = format!("{method} imap of large results");
        let got: Vec<_> = p
            .with_chunksize(CHUNK)
            .imap_unordered(big, 0..ITEMS)
            .unwrap()
            .indexed()
            .collect();
        check_results(&what, got, |i| vec![i as u8; 24 * 1024]);
        check_ran_once(&what, &runs);

        // The pool replaced its dead and goes on.
        assert_eq!(p.worker_pids().len(), 2, "{method}");
        p.close();
        p.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn map_map_async_and_starmap_fail_at_the_item_that_died_not_at_its_chunk() {
    let leaks = LeakCheck::start();
    let died_at_13 = |what: &str, r: Result<Vec<u64>, PoolError>| match r {
        Err(PoolError::Item {
            index,
            error: TaskError::WorkerDied { status, .. },
        }) => {
            assert_eq!(index, ABORTS as usize, "{what}");
            assert_eq!(status.signal(), Some(libc::SIGABRT), "{what}");
        }
        other => panic!("{what}: {other:?}"),
    };
    for method in StartMethod::ALL {
        // map_async reads and submits everything: once all is done, every item began
        // exactly once, the rest of each broken chunk included.
        let runs = fresh_runs();
        let p = pool(method, &runs);
        let what = format!("{method} map_async");
        let m = p
            .with_chunksize(CHUNK)
            .map_async(tenfold, 0..ITEMS)
            .unwrap();
        assert!(m.wait_timeout(PROMPT), "{what}");
        assert_eq!(m.completed(), ITEMS as usize, "{what}");
        died_at_13(&what, m.get());
        check_ran_once(&what, &runs);
        p.close();
        p.join().unwrap();

        // map and starmap stop at the first failure: the items before it all ran
        // once; once the pool has finished what still ran, nothing ran twice.
        for star in [false, true] {
            let runs = fresh_runs();
            let p = pool(method, &runs);
            let what = format!("{method} {}", if star { "starmap" } else { "map" });
            let r = if star {
                p.with_chunksize(CHUNK)
                    .starmap(tenfold_plus, (0..ITEMS).map(|i| (i, 0)))
            } else {
                p.with_chunksize(CHUNK).map(tenfold, 0..ITEMS)
            };
            died_at_13(&what, r);
            p.close();
            p.join().unwrap();
            let counts = runs.to_vec();
            assert_eq!(counts[..13], [1; 13], "{what}: {counts:?}");
            assert!(counts.iter().all(|&n| n <= 1), "{what}: {counts:?}");
        }
    }
    leaks.assert_clean();
}

/// `10 i`, after counting the run; item 13 outlasts any time limit.
fn tenfold_slow_at_13(i: u32) -> u64 {
    ran(i);
    if i == ABORTS {
        std::thread::sleep(Duration::from_secs(600));
    }
    u64::from(i) * 10
}

/// A chunk over its time limit: the item running when the limit passes fails with
/// `TimedOut`; the items before it keep their results, the ones after it run.
#[test]
fn a_chunk_over_its_time_limit_fails_only_the_item_that_was_running() {
    let leaks = LeakCheck::start();
    let limit = Duration::from_secs(1);
    for method in StartMethod::ALL {
        let runs = fresh_runs();
        set_fork_warning(false);
        let p = Pool::builder()
            .processes(2)
            .start_method(method)
            .initializer(set_runs, runs.clone())
            .task_timeout(limit)
            .build()
            .unwrap();
        let got: Vec<_> = p
            .with_chunksize(CHUNK)
            .imap(tenfold_slow_at_13, 0..ITEMS)
            .unwrap()
            .collect();
        for (i, r) in got.into_iter().enumerate() {
            if i == ABORTS as usize {
                assert_eq!(r, Err(TaskError::TimedOut { limit }), "{method}");
            } else {
                assert_eq!(r, Ok(i as u64 * 10), "{method}: item {i}");
            }
        }
        check_ran_once(&format!("{method} time limit"), &runs);
        p.close();
        p.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn the_process_executors_chunked_map_keeps_the_finished_items_of_a_chunk() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let runs = fresh_runs();
        set_fork_warning(false);
        let ex = ProcessPoolExecutor::builder()
            .max_workers(2)
            .start_method(method)
            .initializer(set_runs, runs.clone())
            .build()
            .unwrap();
        let what = format!("{method} executor map_chunked");
        let got: Vec<_> = ex
            .map_chunked(tenfold, 0..ITEMS, CHUNK)
            .unwrap()
            .enumerate()
            .collect();
        check_results(&what, got, |i| u64::from(i) * 10);
        check_ran_once(&what, &runs);
        ex.shutdown(true, false);
    }
    leaks.assert_clean();
}

fn sigkill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// xorshift64*: the chaos test's blows, replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Works `micros` microseconds (counting the run), returns `3 i`.
fn spin((i, micros): (u32, u64)) -> u64 {
    ran(i);
    let until = Instant::now() + Duration::from_micros(micros);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    u64::from(i) * 3
}

/// Workers SIGKILLed at random during a chunked map, for a bounded time under each
/// start method: every item has exactly one result, its value or `WorkerDied` by
/// SIGKILL; an item that succeeded ran once, one that died at most once; each blow
/// fails at most one item.
#[test]
fn chaos_random_kills_during_a_chunked_map_lose_and_repeat_nothing() {
    let leaks = LeakCheck::start();
    let seed = std::env::var("MULTIPROC_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("chunk chaos: MULTIPROC_CHAOS_SEED={seed}");
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    const N: u32 = 300;
    let (mut total_died, mut total_kills) = (0, 0);
    for method in StartMethod::ALL {
        let end = Instant::now() + Duration::from_millis(1000);
        while Instant::now() < end {
            let runs = Array::<u32>::zeroed(N as usize).unwrap();
            set_fork_warning(false);
            let p = Arc::new(
                Pool::builder()
                    .processes(2)
                    .start_method(method)
                    .initializer(set_runs, runs.clone())
                    .build()
                    .unwrap(),
            );
            let stop = Arc::new(AtomicBool::new(false));
            let kills = Arc::new(AtomicUsize::new(0));
            let killer = {
                let (p, stop, kills) = (p.clone(), stop.clone(), kills.clone());
                let mut rng = Rng(rng.below(u64::MAX) | 1);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // Pacing of the blows, not synchronisation.
                        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
                        let pids = p.worker_pids();
                        if !pids.is_empty() {
                            sigkill(pids[rng.below(pids.len() as u64) as usize]);
                            kills.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            };
            let items: Vec<(u32, u64)> = (0..N).map(|i| (i, rng.below(2000))).collect();
            let chunk = 1 + rng.below(12) as usize;
            let mut got: Vec<_> = p
                .with_chunksize(chunk)
                .imap_unordered(spin, items)
                .unwrap()
                .indexed()
                .collect();
            stop.store(true, Ordering::Relaxed);
            killer.join().unwrap();
            let kills = kills.load(Ordering::Relaxed);
            let what = format!("{method}, chunks of {chunk}, seed {seed}");
            got.sort_by_key(|(i, _)| *i);
            assert_eq!(
                got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                (0..N as usize).collect::<Vec<_>>(),
                "{what}: one result per item"
            );
            let counts = runs.to_vec();
            let mut died = 0;
            for (i, r) in got {
                match r {
                    Ok(v) => {
                        assert_eq!(v, i as u64 * 3, "{what}: item {i}");
                        assert_eq!(counts[i], 1, "{what}: item {i} succeeded");
                    }
                    Err(TaskError::WorkerDied { status, .. }) => {
                        assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}: item {i}");
                        assert!(counts[i] <= 1, "{what}: item {i} died");
                        died += 1;
                    }
                    Err(e) => panic!("{what}: item {i}: {e:?}"),
                }
            }
            assert!(died <= kills, "{what}: {died} items died of {kills} kills");
            total_died += died;
            total_kills += kills;
            match Arc::try_unwrap(p) {
                Ok(p) => {
                    p.close();
                    p.join().unwrap();
                }
                Err(_) => unreachable!("the killer thread has ended"),
            }
        }
    }
    eprintln!("chunk chaos: {total_died} items died of {total_kills} kills");
    leaks.assert_clean();
}
