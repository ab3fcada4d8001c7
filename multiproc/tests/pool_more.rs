//! Issue 16, the Pool section: `starmap_async`, callbacks and error callbacks on
//! `map_async` and `starmap_async`, cancelling a running `map_async`, `join_timeout`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use multiproc::StartMethod;
use multiproc::pool::{Pool, PoolError, TaskError};
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

/// Counts itself, says it began, waits for the gate.
fn hold(x: u32) -> u32 {
    let (began, gate, count) = SHARED.get().expect("initializer ran");
    count.fetch_add(1);
    began.set();
    assert!(gate.wait_timeout(PROMPT), "the gate never opened");
    x
}

fn quick(x: u32) -> u32 {
    x
}

fn power(base: u64, exp: u32) -> u64 {
    base.pow(exp)
}

fn odd_only(x: u64) -> u64 {
    assert!(x % 2 == 1, "even {x}");
    x
}

fn pool(method: StartMethod, n: usize, shared: &(Event, Event, Atomic<u32>)) -> Pool {
    multiproc::process::set_fork_warning(false);
    Pool::builder()
        .processes(n)
        .start_method(method)
        .initializer(install, shared.clone())
        .build()
        .unwrap()
}

#[test]
fn starmap_async_and_map_async_run_their_callback_with_the_whole_list_before_get_returns() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2, &gates());
        // starmap_async: the callback has the list, in input order, when get returns.
        let seen: Arc<Mutex<Option<Vec<u64>>>> = Arc::default();
        let errors = Arc::new(AtomicUsize::new(0));
        let (s, e) = (Arc::clone(&seen), Arc::clone(&errors));
        let r = p
            .starmap_async(power, (0..20u64).map(|b| (b, 2u32)))
            .unwrap()
            .callbacks(
                move |v| *s.lock().unwrap() = Some(v.to_vec()),
                move |_| {
                    e.fetch_add(1, Ordering::SeqCst);
                },
            );
        let want: Vec<u64> = (0..20u64).map(|b| b * b).collect();
        assert_eq!(r.get().unwrap(), want, "{method:?}");
        assert_eq!(
            seen.lock().unwrap().as_deref(),
            Some(&want[..]),
            "{method:?}"
        );
        assert_eq!(errors.load(Ordering::SeqCst), 0);
        assert!(matches!(r.get(), Err(PoolError::Taken)));

        // map_async with a failing item: the error callback gets get's error.
        let failed: Arc<Mutex<Option<String>>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let (f, c) = (Arc::clone(&failed), Arc::clone(&calls));
        let r = p
            .with_chunksize(1)
            .map_async(odd_only, [1u64, 3, 4, 5])
            .unwrap()
            .callbacks(
                move |_| {
                    c.fetch_add(1, Ordering::SeqCst);
                },
                move |e| *f.lock().unwrap() = Some(e.to_string()),
            );
        let err = r.get().unwrap_err();
        assert!(
            matches!(&err, PoolError::Item { index: 2, error: TaskError::Panicked { message, .. } } if message.contains("even 4")),
            "{method:?}: {err:?}"
        );
        assert_eq!(failed.lock().unwrap().clone(), Some(err.to_string()));
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        // Callbacks added once the map is done run at once, in this thread.
        let r = p.map_async(odd_only, [7u64, 9]).unwrap();
        r.wait();
        let here = std::thread::current().id();
        let ran_in: Arc<Mutex<Option<std::thread::ThreadId>>> = Arc::default();
        let t = Arc::clone(&ran_in);
        let r = r.callbacks(
            move |v| {
                assert_eq!(v, [7, 9]);
                *t.lock().unwrap() = Some(std::thread::current().id());
            },
            |e| panic!("{e}"),
        );
        assert_eq!(*ran_in.lock().unwrap(), Some(here));
        assert!(r.ready());
        assert_eq!(r.get().unwrap(), [7, 9]);

        // A map with callbacks whose result is dropped still runs to its end and calls
        // back (Python's does).
        let (tx, rx) = std::sync::mpsc::channel();
        drop(
            p.map_async(quick, 0..10u32)
                .unwrap()
                .callbacks(move |v| tx.send(v.to_vec()).unwrap(), |e| panic!("{e}")),
        );
        assert_eq!(
            rx.recv_timeout(PROMPT).unwrap(),
            (0..10u32).collect::<Vec<_>>()
        );
        p.close();
        p.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn a_cancelled_map_async_skips_its_pending_chunks_and_stops_the_running_ones() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let shared = gates();
        let (began, _gate, count) = shared.clone();
        let p = pool(method, 2, &shared);
        let before = p.worker_pids();
        let t0 = Instant::now();
        let r = p.with_chunksize(1).map_async(hold, 0..40u32).unwrap();
        assert!(began.wait_timeout(PROMPT), "{method:?}: no task began");
        assert!(r.cancel(), "{method:?}");
        assert!(
            r.wait_timeout(PROMPT),
            "{method:?}: {} of 40 done",
            r.completed()
        );
        let err = r.get_timeout(PROMPT).unwrap_err();
        assert!(
            matches!(
                err,
                PoolError::Item {
                    error: TaskError::Cancelled,
                    ..
                }
            ),
            "{method:?}: {err:?}"
        );
        // Stopped, not waited for: the gate never opened, a held task would take 60 s.
        assert!(t0.elapsed() < PROMPT, "{method:?}");
        // At most one chunk per worker began; the rest were skipped.
        assert!(count.load() <= 2, "{method:?}: {} began", count.load());
        // The killed worker was replaced and the pool goes on.
        assert_eq!(p.apply(quick, 5).unwrap(), 5);
        assert_ne!(
            p.worker_pids(),
            before,
            "{method:?}: no worker was replaced"
        );
        p.close();
        p.join_timeout(PROMPT).unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn join_timeout_times_out_while_a_task_runs_then_joins() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let shared = gates();
        let (began, gate, _) = shared.clone();
        let p = pool(method, 1, &shared);
        assert!(matches!(
            p.join_timeout(Duration::ZERO),
            Err(PoolError::StillRunning)
        ));
        let r = p.apply_async(hold, 3).unwrap();
        assert!(began.wait_timeout(PROMPT));
        p.close();
        assert!(matches!(
            p.join_timeout(Duration::from_millis(50)),
            Err(PoolError::Timeout)
        ));
        // The pool goes on winding down: the task finishes, then the join does.
        gate.set();
        p.join_timeout(PROMPT).unwrap();
        assert_eq!(r.get().unwrap(), 3);
        assert!(p.worker_pids().is_empty(), "{method:?}");
    }
    leaks.assert_clean();
}
