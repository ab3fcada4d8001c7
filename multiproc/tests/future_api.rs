//! Issue 16, futures: a pending future made by hand and completed through its
//! `Completer` (Python's `Future()` + `set_result` / `set_exception`, for testing code
//! that consumes futures), `exception_timeout`, and `as_completed_timeout` saying how
//! many futures were unfinished.

use std::time::Duration;

use multiproc::executor::{
    AsCompletedTimeout, Completer, Future, InvalidState, TaskError, ThreadPoolExecutor, WaitError,
    as_completed_timeout,
};

const PROMPT: Duration = Duration::from_secs(60);

#[test]
fn a_pending_future_completes_once_through_its_completer() {
    let (future, completer): (Future<u32>, Completer<u32>) = Future::pending();
    assert!(!future.done());
    assert!(!future.running());
    assert_eq!(
        future.result_timeout(Duration::ZERO),
        Err(WaitError::Timeout)
    );
    // A waiter in another thread gets the value set here.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| future.result());
        assert!(completer.set_running_or_notify_cancel());
        assert!(future.running());
        completer.set_result(7).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(7));
    });
    assert!(future.done());
    assert_eq!(future.successful(), Some(true));
    // A second completion is refused, whichever kind (Python's InvalidStateError).
    assert_eq!(completer.set_result(8), Err(InvalidState::Finished));
    let err = completer
        .set_exception(TaskError::Panicked {
            message: "late".into(),
            traceback: None,
        })
        .unwrap_err();
    assert_eq!(err, InvalidState::Finished);
    assert!(err.to_string().contains("already"), "{err}");
}

#[test]
fn set_exception_fails_the_future_and_runs_its_callbacks() {
    let (future, completer) = Future::<u32>::pending();
    let (tx, rx) = std::sync::mpsc::channel();
    future.add_done_callback(move || tx.send("called").unwrap());
    completer
        .set_exception(TaskError::Panicked {
            message: "bad input".into(),
            traceback: None,
        })
        .unwrap();
    assert_eq!(rx.recv_timeout(PROMPT), Ok("called"));
    assert_eq!(
        future.exception(),
        Some(TaskError::Panicked {
            message: "bad input".into(),
            traceback: None,
        })
    );
    assert_eq!(future.successful(), Some(false));
}

#[test]
fn a_cancelled_pending_future_refuses_to_start_or_complete() {
    let (future, completer) = Future::<u32>::pending();
    assert!(future.cancel());
    assert!(!completer.set_running_or_notify_cancel());
    assert_eq!(completer.set_result(1), Err(InvalidState::Cancelled));
    assert_eq!(future.exception(), Some(TaskError::Cancelled));
    // Once running, it cannot be cancelled (Python's semantics).
    let (future, completer) = Future::<u32>::pending();
    assert!(completer.set_running_or_notify_cancel());
    assert!(!future.cancel());
    completer.set_result(2).unwrap();
    assert_eq!(future.result(), Ok(2));
}

/// Never a hang: a completer dropped without completing fails its future.
#[test]
fn a_completer_dropped_without_completing_breaks_its_future() {
    let (future, completer) = Future::<u32>::pending();
    let waiter = std::thread::spawn(move || future.result());
    drop(completer);
    match waiter.join().unwrap() {
        Err(WaitError::Task(TaskError::Broken { reason })) => {
            assert!(reason.contains("Completer"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pending_futures_are_awaitable() {
    let (future, completer) = Future::<String>::pending();
    std::thread::spawn(move || completer.set_result("done".into()).unwrap());
    let got = block_on(future);
    assert_eq!(got, Ok("done".to_string()));
}

/// A minimal executor for one future: polls on the thread, parks between wake-ups.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn exception_timeout_waits_at_most_its_timeout() {
    let (future, completer) = Future::<u32>::pending();
    assert_eq!(
        future.exception_timeout(Duration::from_millis(20)),
        Err(WaitError::Timeout)
    );
    completer.set_result(3).unwrap();
    assert_eq!(future.exception_timeout(PROMPT), Ok(None));
    let failed = Future::<u32>::pending();
    failed.1.set_exception(TaskError::Cancelled).unwrap();
    assert_eq!(
        failed.0.exception_timeout(Duration::ZERO),
        Ok(Some(TaskError::Cancelled))
    );
}

/// Python's `as_completed(fs, timeout)` raises `TimeoutError("2 (of 3) futures
/// unfinished")`: the error says how many.
#[test]
fn as_completed_timeout_says_how_many_futures_were_unfinished() {
    let pool = ThreadPoolExecutor::new(1);
    let quick = pool.submit(|| 1).unwrap();
    let (stuck_a, done_a) = Future::<i32>::pending();
    let (stuck_b, done_b) = Future::<i32>::pending();
    let mut it = as_completed_timeout(vec![quick, stuck_a, stuck_b], Duration::from_millis(100));
    assert_eq!(it.next().unwrap().unwrap().result(), Ok(1));
    let err = it.next().unwrap().unwrap_err();
    assert_eq!(
        err,
        AsCompletedTimeout {
            unfinished: 2,
            total: 3
        }
    );
    assert_eq!(err.to_string(), "2 (of 3) futures unfinished");
    assert!(it.next().is_none());
    drop((done_a, done_b));
}
