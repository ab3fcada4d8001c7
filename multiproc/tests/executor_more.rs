//! Issue 16, the Executors section: `map_with` (Python's `map(timeout=, chunksize=)`)
//! on both executors, and `terminate_workers` / `kill_workers` (Python 3.14).

use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use multiproc::StartMethod;
use multiproc::executor::{
    MapOptions, ProcessPoolExecutor, ShutDown, TaskError, ThreadPoolExecutor, WaitError,
};
use multiproc::shared::Atomic;
use multiproc::sync::Event;
use multiproc::testing::LeakCheck;

multiproc::test_support!();

const PROMPT: Duration = Duration::from_secs(60);

/// What a worker's tasks share with the test: a task began, the gate, how many began.
static SHARED: OnceLock<(Event, Event, Atomic<u32>)> = OnceLock::new();

fn install(shared: (Event, Event, Atomic<u32>)) {
    let _ = SHARED.set(shared);
}

fn gates() -> (Event, Event, Atomic<u32>) {
    (
        Event::new().unwrap(),
        Event::new().unwrap(),
        Atomic::new(0u32).unwrap(),
    )
}

/// Counts itself; item 1 says it began and waits for the gate.
fn hold_one(x: u32) -> u32 {
    let (began, gate, count) = SHARED.get().expect("initializer ran");
    count.fetch_add(1);
    if x == 1 {
        began.set();
        assert!(gate.wait_timeout(PROMPT), "the gate never opened");
    }
    x
}

fn executor(
    method: StartMethod,
    n: usize,
    shared: &(Event, Event, Atomic<u32>),
) -> ProcessPoolExecutor {
    multiproc::process::set_fork_warning(false);
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .start_method(method)
        .initializer(install, shared.clone())
        .build()
        .unwrap()
}

#[test]
fn process_map_with_chunks_and_a_deadline_that_ends_the_results() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let shared = gates();
        let (began, gate, count) = shared.clone();
        let ex = executor(method, 1, &shared);
        // Chunks of 4, a deadline far off: every result, in order.
        let opts = MapOptions::new()
            .chunksize(NonZeroUsize::new(4).unwrap())
            .timeout(PROMPT);
        let got: Vec<u32> = ex
            .map_with(hold_one, (2..22).collect::<Vec<u32>>(), opts)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, (2..22).collect::<Vec<_>>(), "{method:?}");
        assert_eq!(count.load(), 20);

        // Item 1 never finishes in time: item 0, then one Timeout, then the end.
        let opts = MapOptions::new().timeout(Duration::from_millis(300));
        let t0 = Instant::now();
        let mut results = ex.map_with(hold_one, 0u32.., opts).unwrap();
        assert_eq!(results.next(), Some(Ok(0)), "{method:?}");
        assert_eq!(results.next(), Some(Err(WaitError::Timeout)), "{method:?}");
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert_eq!(results.next(), None, "{method:?}");
        assert!(began.is_set());
        drop(results);
        // The running item, and those its worker held already (Python's call queue),
        // finish unseen; the endless input is read no further, so the shutdown ends.
        gate.set();
        ex.shutdown(true, false);
        let ran = count.load() - 20;
        assert!((2..=1024).contains(&ran), "{method:?}: {ran} items ran");
        assert!(ex.worker_pids().is_empty());
    }
    leaks.assert_clean();
}

#[test]
fn thread_map_with_a_deadline_ends_at_the_first_late_result() {
    let leaks = LeakCheck::start();
    let gate = Event::new().unwrap();
    let ex = ThreadPoolExecutor::new(1);
    let g = gate.clone();
    let opts = MapOptions::new()
        .timeout(Duration::from_millis(200))
        .chunksize(NonZeroUsize::new(3).unwrap());
    let t0 = Instant::now();
    let got: Vec<_> = ex
        .map_with(
            move |x: u32| {
                if x == 2 {
                    assert!(g.wait_timeout(PROMPT));
                }
                x
            },
            0..10u32,
            opts,
        )
        .unwrap()
        .collect();
    assert_eq!(got, [Ok(0), Ok(1), Err(WaitError::Timeout)]);
    assert!(t0.elapsed() >= Duration::from_millis(200));
    gate.set();
    ex.shutdown(true, false);
    // Without a deadline the results are all there.
    let ex = ThreadPoolExecutor::new(2);
    let got: Vec<u32> = ex
        .map_with(|x: u32| x * 2, 0..5u32, MapOptions::new())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [0, 2, 4, 6, 8]);
    ex.shutdown(true, false);
    drop(gate);
    leaks.assert_clean();
}

#[test]
fn terminate_workers_and_kill_workers_stop_everything_and_shut_the_executor_down() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        for hard in [false, true] {
            let shared = gates();
            let (began, _gate, _) = shared.clone();
            let ex = executor(method, 2, &shared);
            let mut futures = vec![ex.submit(hold_one, 1).unwrap()];
            assert!(began.wait_timeout(PROMPT), "{method:?}");
            futures.push(ex.submit(hold_one, 1).unwrap());
            futures.extend((0..5).map(|_| ex.submit(hold_one, 1).unwrap()));
            let t0 = Instant::now();
            if hard {
                ex.kill_workers();
            } else {
                ex.terminate_workers();
            }
            assert!(
                t0.elapsed() < PROMPT,
                "{method:?} {hard}: waited for the gate"
            );
            for f in &futures {
                assert_eq!(
                    f.result_timeout(PROMPT),
                    Err(WaitError::Task(TaskError::Terminated)),
                    "{method:?} {hard}"
                );
            }
            assert!(ex.worker_pids().is_empty(), "{method:?} {hard}");
            assert_eq!(ex.submit(hold_one, 0).unwrap_err(), ShutDown);
            // Idempotent, and the executor's drop waits for nothing.
            ex.kill_workers();
        }
    }
    leaks.assert_clean();
}

/// Waits (at most a minute) until the executor has no worker.
fn until_no_worker(ex: &ProcessPoolExecutor) -> bool {
    let deadline = Instant::now() + PROMPT;
    while !ex.worker_pids().is_empty() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn idle_workers_exit_after_the_idle_timeout_and_start_again_on_demand() {
    let leaks = LeakCheck::start();
    assert!(matches!(
        ProcessPoolExecutor::builder()
            .idle_worker_timeout(Duration::ZERO)
            .build(),
        Err(multiproc::pool::PoolError::Invalid(_))
    ));
    let idle = Duration::from_millis(200);
    for method in StartMethod::ALL {
        multiproc::process::set_fork_warning(false);
        let shared = gates();
        let (began, gate, _) = shared.clone();
        let ex = ProcessPoolExecutor::builder()
            .max_workers(2)
            .start_method(method)
            .initializer(install, shared.clone())
            .idle_worker_timeout(idle)
            .build()
            .unwrap();
        // A worker busy for longer than the idle timeout is not stopped.
        let held = ex.submit(hold_one, 1).unwrap();
        assert!(began.wait_timeout(PROMPT));
        let first = ex.worker_pids();
        assert_eq!(first.len(), 1);
        std::thread::sleep(3 * idle);
        assert_eq!(
            ex.worker_pids(),
            first,
            "{method:?}: a busy worker was stopped"
        );
        gate.set();
        assert_eq!(held.result_timeout(PROMPT), Ok(1));
        // Idle, it exits (and is reaped) ...
        assert!(
            until_no_worker(&ex),
            "{method:?}: the idle worker never exited"
        );
        // ... and a new one starts for the next task.
        let again = ex.submit(hold_one, 7).unwrap();
        assert_eq!(again.result_timeout(PROMPT), Ok(7), "{method:?}");
        let second = ex.worker_pids();
        assert_eq!(second.len(), 1);
        assert_ne!(second, first, "{method:?}");
        assert!(until_no_worker(&ex), "{method:?}");
        ex.shutdown(true, false);
    }
    leaks.assert_clean();
}
