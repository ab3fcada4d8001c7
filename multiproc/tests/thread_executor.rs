//! Issue 16, the thread executor: an `initializer` run by each thread before its first
//! task (a failing one breaks the executor, Python's `BrokenThreadPool`), and loky's
//! `idle_worker_timeout` (idle threads end; new ones start on demand).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use multiproc::executor::{TaskError, ThreadPoolExecutor, WaitError};

const PROMPT: Duration = Duration::from_secs(60);

thread_local! {
    static GREETING: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The executor's threads named `<prefix>_<n>` that exist now (from
/// `/proc/self/task/*/comm`, where a name is cut to 15 bytes: keep prefixes short).
fn threads_named(prefix: &str) -> usize {
    let want = format!("{prefix}_");
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with(&want))
        .count()
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PROMPT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn every_thread_runs_the_initializer_with_its_args_before_its_first_task() {
    let inits = Arc::new(AtomicUsize::new(0));
    let ex = ThreadPoolExecutor::builder()
        .max_workers(3)
        .initializer(
            |(greeting, inits): (String, Arc<AtomicUsize>)| {
                GREETING.with(|g| *g.borrow_mut() = Some(greeting));
                inits.fetch_add(1, Ordering::SeqCst);
            },
            ("hello".to_string(), Arc::clone(&inits)),
        )
        .build()
        .unwrap();
    // Three tasks that wait for each other: three threads, each initialised once.
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let futures: Vec<_> = (0..3)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            ex.submit(move || {
                barrier.wait();
                GREETING.with(|g| g.borrow().clone())
            })
            .unwrap()
        })
        .collect();
    for f in futures {
        assert_eq!(f.result_timeout(PROMPT).unwrap().as_deref(), Some("hello"));
    }
    assert_eq!(inits.load(Ordering::SeqCst), 3);
    // More tasks on the same threads: no more initialisations.
    for _ in 0..10 {
        ex.submit(|| ()).unwrap().result_timeout(PROMPT).unwrap();
    }
    assert_eq!(inits.load(Ordering::SeqCst), 3);
}

/// Python: "If initializer raises an exception, all currently pending jobs will raise a
/// BrokenThreadPool, as well as any attempt to submit more jobs to the pool."
#[test]
fn a_failing_initializer_breaks_the_executor() {
    let ex = ThreadPoolExecutor::builder()
        .max_workers(1)
        .initializer(|code: u32| panic!("cannot initialise ({code})"), 7)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel::<()>();
    let first = ex.submit(move || tx.send(()).is_ok()).unwrap();
    let second = ex.submit(|| 2).unwrap();
    let broken = |e: Result<_, WaitError>| match e {
        Err(WaitError::Task(TaskError::Broken { reason })) => {
            assert!(
                reason.contains("initializer") && reason.contains("cannot initialise (7)"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    };
    broken(first.result_timeout(PROMPT).map(drop));
    broken(second.result_timeout(PROMPT).map(drop));
    assert!(rx.try_recv().is_err(), "no task ran");
    // Later submissions fail the same way, at once.
    broken(ex.submit(|| 3).unwrap().result_timeout(PROMPT).map(drop));
    let got: Vec<_> = ex.map(|x: u32| x, 0..3).unwrap().collect();
    assert!(
        matches!(got[..], [Err(TaskError::Broken { .. }), ..]),
        "{got:?}"
    );
    drop(ex); // joins the threads: nothing hangs
}

#[test]
fn idle_threads_end_after_the_idle_timeout_and_start_again_on_demand() {
    let ex = ThreadPoolExecutor::builder()
        .max_workers(2)
        .thread_name_prefix("tx-idle")
        .idle_worker_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let both: Vec<_> = (0..2)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            ex.submit(move || {
                barrier.wait();
                i
            })
            .unwrap()
        })
        .collect();
    for (i, f) in both.into_iter().enumerate() {
        assert_eq!(f.result_timeout(PROMPT), Ok(i));
    }
    assert_eq!(threads_named("tx-idle"), 2);
    wait_until("both idle threads ended", || threads_named("tx-idle") == 0);
    // On demand again: a burst of tasks that need two threads at once gets them.
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let again: Vec<_> = (0..2)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            ex.submit(move || {
                barrier.wait();
                i * 10
            })
            .unwrap()
        })
        .collect();
    for (i, f) in again.into_iter().enumerate() {
        assert_eq!(f.result_timeout(PROMPT), Ok(i * 10));
    }
    assert_eq!(threads_named("tx-idle"), 2);
    drop(ex);
    assert_eq!(threads_named("tx-idle"), 0);
}

/// A stream of tasks each arriving just as a thread's idle time runs out: every task
/// runs (a thread that ends never takes a task with it), and no more than
/// `max_workers` threads ever exist.
#[test]
fn tasks_racing_the_idle_timeout_all_run() {
    let ex = ThreadPoolExecutor::builder()
        .max_workers(2)
        .thread_name_prefix("tx-race")
        .idle_worker_timeout(Duration::from_millis(2))
        .build()
        .unwrap();
    for i in 0..300u64 {
        let f = ex.submit(move || i * 2).unwrap();
        assert_eq!(f.result_timeout(PROMPT), Ok(i * 2));
        assert!(threads_named("tx-race") <= 2);
        std::thread::sleep(Duration::from_micros(1500 + (i % 7) * 150));
    }
}
