//! `concurrent.futures` on threads (S21): submit, done, cancel, result, as_completed,
//! map, wait, shutdown, and awaiting a future.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use multiproc::executor::{
    ReturnWhen, ShutDown, TaskError, ThreadPoolExecutor, WaitError, as_completed, wait,
};

const PROMPT: Duration = Duration::from_secs(60);

/// A task that runs until its gate is opened (a send, or dropping the sender; at most
/// [`PROMPT`]); says when it started.
fn gated(
    pool: &ThreadPoolExecutor,
    value: u32,
) -> (
    multiproc::executor::Future<u32>,
    mpsc::Sender<()>,
    mpsc::Receiver<()>,
) {
    let (open_tx, open_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let f = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            if let Err(mpsc::RecvTimeoutError::Timeout) = open_rx.recv_timeout(PROMPT) {
                panic!("the gate of task {value} never opened");
            }
            value
        })
        .unwrap();
    (f, open_tx, started_rx)
}

#[test]
fn s21_submit_returns_at_once_and_cancel_fails_for_a_running_task() {
    let pool = ThreadPoolExecutor::new(2);
    let (running, open, started) = gated(&pool, 1);
    // The task cannot end before its gate opens, below: a submit that waited for it
    // would return (after the gate's limit) a future already done.
    assert!(!running.done(), "submit does not wait");
    started.recv_timeout(PROMPT).unwrap();
    assert!(running.running() && !running.done());
    assert!(!running.cancel(), "a running task cannot be cancelled");
    open.send(()).unwrap();
    assert_eq!(running.result().unwrap(), 1);
    assert!(running.done() && !running.cancelled());
    assert_eq!(running.result(), Err(WaitError::Taken));
}

#[test]
fn a_queued_task_can_be_cancelled_and_never_runs() {
    let pool = ThreadPoolExecutor::new(1);
    let (busy, open, started) = gated(&pool, 1);
    started.recv_timeout(PROMPT).unwrap();
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ran2 = Arc::clone(&ran);
    let queued = pool
        .submit(move || ran2.store(true, std::sync::atomic::Ordering::SeqCst))
        .unwrap();
    assert!(queued.cancel());
    assert!(queued.cancelled() && queued.done());
    assert_eq!(queued.result(), Err(WaitError::Task(TaskError::Cancelled)));
    open.send(()).unwrap();
    assert_eq!(busy.result().unwrap(), 1);
    drop(pool); // joins: the cancelled task was skipped
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn a_panicking_task_is_its_own_error_and_the_pool_goes_on() {
    let pool = ThreadPoolExecutor::new(2);
    let bad = pool.submit(|| -> u32 { panic!("boom") }).unwrap();
    // The traceback depends on RUST_BACKTRACE (tests/panic_traceback.rs): compare the
    // message.
    assert!(
        matches!(bad.exception(), Some(TaskError::Panicked { message, .. }) if message == "boom")
    );
    assert!(
        matches!(bad.result(), Err(WaitError::Task(TaskError::Panicked { message, .. })) if message == "boom")
    );
    assert_eq!(pool.submit(|| 5).unwrap().result().unwrap(), 5);
}

#[test]
fn result_timeout_leaves_the_future_pending() {
    let pool = ThreadPoolExecutor::new(1);
    let (f, open, started) = gated(&pool, 9);
    started.recv_timeout(PROMPT).unwrap();
    let t0 = Instant::now();
    assert_eq!(
        f.result_timeout(Duration::from_millis(50)),
        Err(WaitError::Timeout)
    );
    assert!(t0.elapsed() >= Duration::from_millis(50));
    open.send(()).unwrap();
    assert_eq!(f.result_timeout(PROMPT).unwrap(), 9);
}

#[test]
fn s21_as_completed_yields_in_completion_order_and_map_in_input_order() {
    let pool = ThreadPoolExecutor::new(3);
    let (a, open_a, sa) = gated(&pool, 1);
    let (b, open_b, sb) = gated(&pool, 2);
    let (c, open_c, sc) = gated(&pool, 3);
    for s in [&sa, &sb, &sc] {
        s.recv_timeout(PROMPT).unwrap();
    }
    let mut order = as_completed(vec![a, b, c]);
    open_c.send(()).unwrap();
    assert_eq!(order.next().unwrap().result().unwrap(), 3);
    open_a.send(()).unwrap();
    assert_eq!(order.next().unwrap().result().unwrap(), 1);
    open_b.send(()).unwrap();
    assert_eq!(order.next().unwrap().result().unwrap(), 2);
    assert!(order.next().is_none());

    // Later items finish first (each waits until every later one has finished), yet
    // map yields in input order.
    let lowest_finished = Arc::new((Mutex::new(3u64), Condvar::new()));
    let finish_after_the_later_ones = move |n: u64| {
        let (lowest, changed) = &*lowest_finished;
        let (mut lowest, _) = changed
            .wait_timeout_while(lowest.lock().unwrap(), PROMPT, |l| *l != n + 1)
            .unwrap();
        assert_eq!(*lowest, n + 1, "item {n}: the later items never finished");
        *lowest = n;
        changed.notify_all();
        n
    };
    let got: Vec<u64> = pool
        .map(finish_after_the_later_ones, 0..3)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [0, 1, 2]);
}

#[test]
fn wait_returns_on_first_completed_first_exception_or_all() {
    let pool = ThreadPoolExecutor::new(3);
    let (slow, open, started) = gated(&pool, 1);
    started.recv_timeout(PROMPT).unwrap();
    let quick = pool.submit(|| 2).unwrap();
    let fs = vec![slow, quick];
    let w = wait(&fs, ReturnWhen::FirstCompleted, Some(PROMPT));
    assert_eq!((w.done, w.not_done), (vec![1], vec![0]));
    let w = wait(
        &fs,
        ReturnWhen::AllCompleted,
        Some(Duration::from_millis(20)),
    );
    assert_eq!(w.not_done, vec![0], "timed out with one pending");
    open.send(()).unwrap();
    let w = wait(&fs, ReturnWhen::AllCompleted, None);
    assert_eq!(w.done, vec![0, 1]);

    let (slow, _open, started) = gated(&pool, 1);
    started.recv_timeout(PROMPT).unwrap();
    let bad = pool
        .submit(|| -> u32 { panic!("first exception") })
        .unwrap();
    let fs = vec![slow, bad];
    let w = wait(&fs, ReturnWhen::FirstException, Some(PROMPT));
    assert_eq!(w.done, vec![1]);
    drop(_open);
}

#[test]
fn shutdown_cancels_queued_tasks_on_request_and_refuses_new_ones() {
    let pool = ThreadPoolExecutor::new(1);
    let (busy, open, started) = gated(&pool, 7);
    started.recv_timeout(PROMPT).unwrap();
    let queued: Vec<_> = (0..5).map(|i| pool.submit(move || i).unwrap()).collect();
    pool.shutdown(false, true);
    assert!(queued.iter().all(|f| f.cancelled()));
    assert!(matches!(pool.submit(|| 0), Err(ShutDown)));
    open.send(()).unwrap();
    assert_eq!(busy.result().unwrap(), 7, "the running task completes");
}

#[test]
fn dropping_the_pool_runs_what_was_queued_like_pythons_with() {
    let results = {
        let pool = ThreadPoolExecutor::new(2);
        (0..20)
            .map(|i| pool.submit(move || i * 2).unwrap())
            .collect::<Vec<_>>()
    };
    assert!(results.iter().all(|f| f.done()));
    let total: i32 = results.iter().map(|f| f.result().unwrap()).sum();
    assert_eq!(total, (0..20).map(|i| i * 2).sum::<i32>());
}

#[test]
fn a_future_can_be_awaited_and_callbacks_run_when_done() {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
    let pool = ThreadPoolExecutor::new(2);
    let (f, open, _started) = gated(&pool, 42);
    let (called_tx, called_rx) = mpsc::channel();
    f.add_done_callback(move || called_tx.send(()).unwrap());
    open.send(()).unwrap();
    assert_eq!(block_on(f).unwrap(), 42);
    called_rx.recv_timeout(PROMPT).unwrap();
}

#[test]
fn threads_are_named_after_the_prefix() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("worker")
        .build()
        .unwrap();
    let name = pool
        .submit(|| std::thread::current().name().map(str::to_string))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(name.as_deref(), Some("worker_0"));
}

/// A done-callback added to a future that is already done runs at once on the caller's
/// thread (Python's `add_done_callback`); if it panics, the panic stays in the callback
/// (Python logs and ignores a callback's exception), as it does when the callback runs
/// on the thread that completes the task.
#[test]
fn a_panicking_callback_on_a_done_future_does_not_unwind_into_the_caller() {
    let pool = ThreadPoolExecutor::new(1);
    let done = pool.submit(|| 7).unwrap();
    assert!(done.wait_timeout(Duration::from_secs(60)));
    let (ran_tx, ran_rx) = mpsc::channel();
    let added = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        done.add_done_callback(move || {
            ran_tx.send(()).unwrap();
            panic!("a callback that panics");
        })
    }));
    assert!(added.is_ok(), "the callback's panic reached the caller");
    assert_eq!(ran_rx.try_recv(), Ok(()), "the callback ran at once");
    assert_eq!(done.result(), Ok(7));
}

/// `ThreadPoolExecutor(max_workers=0)` is Python's `ValueError`: here the builder's
/// `InvalidInput` naming the parameter, never a pool silently of one thread.
#[test]
fn zero_max_workers_is_refused_not_turned_into_one() {
    let err = ThreadPoolExecutor::builder()
        .max_workers(0)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("max_workers"), "{err}");
    assert!(std::panic::catch_unwind(|| ThreadPoolExecutor::new(0)).is_err());
}

/// A failure stays readable, as Python raises the same exception from every
/// `result()` and returns it from every `exception()`, also after `result()`; a
/// cancelled future's `exception()` is `Cancelled` (Python raises `CancelledError`).
#[test]
fn a_failure_stays_readable_and_a_cancelled_future_says_cancelled() {
    let pool = ThreadPoolExecutor::new(1);
    let bad = pool.submit(|| -> u32 { panic!("boom") }).unwrap();
    let boom = bad.exception().expect("the task failed");
    assert!(
        matches!(&boom, TaskError::Panicked { message, .. } if message == "boom"),
        "{boom:?}"
    );
    assert_eq!(bad.result(), Err(WaitError::Task(boom.clone())));
    assert_eq!(
        bad.result(),
        Err(WaitError::Task(boom.clone())),
        "read again"
    );
    assert_eq!(bad.exception(), Some(boom), "after result()");
    let (running, open, started) = gated(&pool, 1);
    started.recv_timeout(PROMPT).unwrap();
    let queued = pool.submit(|| 2).unwrap();
    assert!(queued.cancel());
    assert_eq!(queued.exception(), Some(TaskError::Cancelled));
    assert_eq!(queued.result(), Err(WaitError::Task(TaskError::Cancelled)));
    open.send(()).unwrap();
    assert_eq!(running.result(), Ok(1));
    assert_eq!(running.exception(), None);
}

/// The done-callbacks have run by the time a wait for the outcome returns (Python's
/// `Pool` runs an `AsyncResult`'s callback before it wakes `get`): a callback still
/// running holds `result()` back. A callback may read its own future's outcome (it is
/// not made to wait for itself; in Python's `Pool` that hangs).
#[test]
fn waiters_return_only_after_the_done_callbacks_ran() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let pool = ThreadPoolExecutor::new(1);
    let (f, open, started) = gated(&pool, 3);
    let f = Arc::new(f);
    let (in_callback_tx, in_callback) = mpsc::channel();
    let (release_tx, release) = mpsc::channel::<()>();
    let ran = Arc::new(AtomicBool::new(false));
    {
        let (ran, me) = (Arc::clone(&ran), Arc::clone(&f));
        f.add_done_callback(move || {
            assert!(me.done());
            in_callback_tx.send(me.result()).unwrap();
            release.recv_timeout(PROMPT).unwrap();
            ran.store(true, Ordering::SeqCst);
        });
    }
    started.recv_timeout(PROMPT).unwrap();
    open.send(()).unwrap();
    // The callback read the outcome of its own future while completing it.
    assert_eq!(in_callback.recv_timeout(PROMPT).unwrap(), Ok(3));
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let got = f.result();
            (got, ran.load(Ordering::SeqCst))
        });
        // Still blocked while the callback runs (a look that can only miss the bug).
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "result() returned before the callback ended"
        );
        release_tx.send(()).unwrap();
        let (got, ran_before) = waiter.join().unwrap();
        assert_eq!(got, Err(WaitError::Taken), "the callback took the value");
        assert!(
            ran_before,
            "the callback had finished when result() returned"
        );
    });
}
