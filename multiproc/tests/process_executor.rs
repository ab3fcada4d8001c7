//! `concurrent.futures.ProcessPoolExecutor` (the process side of S21) and the shared
//! `Executor` trait: submit, map, as_completed, wait, cancel, shutdown; and what
//! CPython's executor does not do: a killed worker does not break it
//! (`test_killed_child`, inverted), recycling with `max_tasks_per_child`
//! (gh-115634), a failing initializer (`test_init.py`), time limits.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use multiproc::executor::{
    Executor, ProcessPoolExecutor, ReturnWhen, ShutDown, TaskError, ThreadPoolExecutor, WaitError,
    as_completed, wait,
};
use multiproc::sync::Event;
use multiproc::testing::LeakCheck;
use multiproc::{StartMethod, process::set_fork_warning};

multiproc::test_support!();

mod common;
use common::executor;
use common::{PanicsWhenEncoded, takes_panics_when_encoded};

const PROMPT: Duration = Duration::from_secs(60);

fn cube(x: i64) -> i64 {
    x * x * x
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Gates for tasks in worker processes: task `i` of [`gated`] says it started on
/// `started[i]` and finishes once the test sets `open[i]`. The events reach the workers
/// through the executor's initializer (a task's argument cannot carry a handle).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Gates {
    started: Vec<Event>,
    open: Vec<Event>,
}

impl Gates {
    fn new(n: usize) -> Gates {
        let events = || (0..n).map(|_| Event::new().unwrap()).collect();
        Gates {
            started: events(),
            open: events(),
        }
    }
}

static GATES: OnceLock<Gates> = OnceLock::new();

fn set_gates(gates: Gates) {
    let _ = GATES.set(gates);
}

/// Task `i`: runs until the test opens its gate (at most [`PROMPT`]); returns `i`.
fn gated(i: usize) -> usize {
    let gates = GATES.get().expect("the initializer ran");
    gates.started[i].set();
    assert!(gates.open[i].wait_timeout(PROMPT), "gate {i} never opened");
    i
}

/// An executor of `n` workers whose tasks can wait at `gates`.
fn gated_executor(method: StartMethod, n: usize, gates: &Gates) -> ProcessPoolExecutor {
    set_fork_warning(false);
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .start_method(method)
        .initializer(set_gates, gates.clone())
        .build()
        .expect("start the executor")
}

fn die(_: ()) -> u32 {
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
        .unwrap();
    0
}

fn boom(_: ()) -> u32 {
    panic!("boom")
}

#[test]
fn submit_result_map_as_completed_and_wait() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let gates = Gates::new(2);
        let ex = gated_executor(method, 2, &gates);
        let f = ex.submit(cube, 3).unwrap();
        assert_eq!(f.result_timeout(PROMPT).unwrap(), 27);
        assert!(f.done());

        // Both tasks run at once (two workers); the second submitted is let finish first,
        // and as_completed yields in that order, not in the order of submission.
        let futures: Vec<_> = (0..2).map(|i| ex.submit(gated, i).unwrap()).collect();
        let mut completed = as_completed(futures);
        gates.open[1].set();
        let first = completed.next().unwrap();
        assert_eq!(first.result().unwrap(), 1, "{method}");
        gates.open[0].set();
        assert_eq!(completed.next().unwrap().result().unwrap(), 0, "{method}");
        assert!(completed.next().is_none());

        let in_order: Vec<i64> = ex.map(cube, 1..=5).unwrap().map(Result::unwrap).collect();
        assert_eq!(in_order, [1, 8, 27, 64, 125]);
        let chunked: Vec<i64> = ex
            .map_chunked(cube, 1..=5, 2)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(chunked, in_order);

        let fs = vec![ex.submit(boom, ()).unwrap(), ex.submit(pid, ()).unwrap()];
        let w = wait(&fs, ReturnWhen::AllCompleted, Some(PROMPT));
        assert_eq!(w.done.len(), 2);
        match fs[0].exception() {
            Some(TaskError::Panicked { message, .. }) => assert_eq!(message, "boom"),
            other => panic!("{other:?}"),
        }
        ex.shutdown(true, false);
        assert_eq!(ex.submit(cube, 1).unwrap_err(), ShutDown);
    }
    check.assert_clean();
}

/// CPython's `test_killed_child` asserts the executor is broken afterwards; here only
/// the killed task fails and the executor goes on.
#[test]
fn a_killed_worker_does_not_break_the_executor() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = executor(method, 2);
        let dead = ex.submit(die, ()).unwrap();
        // Workers start on demand: the one running `die` started for it.
        let pids = ex.worker_pids();
        let others: Vec<_> = (0..20).map(|i| ex.submit(cube, i).unwrap()).collect();
        let died = match dead.result() {
            Err(WaitError::Task(TaskError::WorkerDied { pid, status })) => {
                assert_eq!(pids, [pid], "{method}");
                assert_eq!(status.signal(), Some(libc::SIGKILL));
                pid
            }
            other => panic!("{method}: {other:?}"),
        };
        for (i, f) in others.iter().enumerate() {
            assert_eq!(f.result().unwrap(), cube(i as i64));
        }
        assert_eq!(ex.submit(cube, 2).unwrap().result().unwrap(), 8);
        let live = ex.worker_pids();
        assert!(!live.contains(&died), "{method}: {live:?}");
        assert!((1..=2).contains(&live.len()), "{method}: {live:?}");
    }
    check.assert_clean();
}

/// Refuses to encode as `Refuse`; no value decodes. Both say "bad".
#[derive(Debug)]
enum Bad {
    Refuse,
    Send,
}

impl serde::Serialize for Bad {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Bad::Refuse => Err(serde::ser::Error::custom("bad")),
            Bad::Send => s.serialize_u8(1),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Bad {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <u8 as serde::Deserialize>::deserialize(d)?;
        Err(serde::de::Error::custom("bad"))
    }
}

fn takes_bad(_: Bad) -> u32 {
    0
}

fn returns_bad(_: ()) -> Bad {
    Bad::Refuse
}

/// Issue 13: a user's `custom` serde error text reaches the future, whichever side
/// failed: arguments encoded here or decoded in the worker, a result encoded there.
#[test]
fn a_serde_error_carries_the_users_message_to_the_future() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = executor(method, 1);
        let says_bad = |r: Result<(), WaitError>| {
            let text = r.unwrap_err().to_string();
            assert!(
                text.contains("Bad") && text.ends_with(": bad"),
                "{method}: {text}"
            );
        };
        says_bad(
            ex.submit(takes_bad, Bad::Refuse)
                .unwrap()
                .result()
                .map(drop),
        );
        says_bad(ex.submit(takes_bad, Bad::Send).unwrap().result().map(drop));
        says_bad(ex.submit(returns_bad, ()).unwrap().result().map(drop));
    }
    check.assert_clean();
}

#[test]
fn cancel_pending_and_shutdown_cancel_futures() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let gates = Gates::new(1);
        let ex = gated_executor(method, 1, &gates);
        let running = ex.submit(gated, 0).unwrap();
        assert!(
            gates.started[0].wait_timeout(PROMPT),
            "{method}: it started"
        );
        // The one worker is busy until the gate opens: these five wait, and a new
        // executor sends a worker one task at a time, so none has left the executor.
        let queued: Vec<_> = (0..5).map(|i| ex.submit(cube, i).unwrap()).collect();
        let last = queued.last().unwrap();
        assert!(last.cancel(), "{method}");
        assert!(last.cancelled());
        assert_eq!(
            last.result().unwrap_err(),
            WaitError::Task(TaskError::Cancelled)
        );
        assert!(
            !running.cancel(),
            "{method}: a running task cannot be cancelled"
        );
        ex.shutdown(false, true);
        // The last one's result was taken above.
        for (i, f) in queued[..4].iter().enumerate() {
            assert!(f.cancelled(), "{method}: pending task {i} was cancelled");
            assert_eq!(
                f.result().unwrap_err(),
                WaitError::Task(TaskError::Cancelled),
                "{method}: pending task {i}"
            );
        }
        assert!(!running.done(), "{method}: the running task goes on");
        gates.open[0].set();
        assert_eq!(running.result_timeout(PROMPT).unwrap(), 0, "{method}");
        assert!(!running.cancelled());
        ex.shutdown(true, false);
    }
    check.assert_clean();
}

/// gh-115634: `ProcessPoolExecutor(1, max_tasks_per_child=2)` hung after two tasks.
#[test]
fn max_tasks_per_child_with_pending_tasks_does_not_hang() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        set_fork_warning(false);
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_tasks_per_child(2)
            .start_method(method)
            .build()
            .unwrap();
        let futures: Vec<_> = (0..6).map(|_| ex.submit(pid, ()).unwrap()).collect();
        let pids: Vec<u32> = futures.iter().map(|f| f.result().unwrap()).collect();
        let distinct: HashSet<u32> = pids.iter().copied().collect();
        assert_eq!(distinct.len(), 3, "{method}: {pids:?}");
        // gh-119592: shutdown(wait=False) while a recycled worker exits.
        ex.shutdown(false, false);
        drop(ex);
    }
    check.assert_clean();
}

fn failing_init(_: ()) {
    panic!("cannot initialise");
}

#[test]
fn a_failing_initializer_breaks_the_executor() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        set_fork_warning(false);
        let ex = ProcessPoolExecutor::builder()
            .max_workers(2)
            .start_method(method)
            .initializer(failing_init, ())
            .build()
            .unwrap();
        match ex.submit(cube, 1).unwrap().result() {
            Err(WaitError::Task(TaskError::Broken { reason })) => {
                assert!(reason.contains("cannot initialise"))
            }
            other => panic!("{method}: {other:?}"),
        }
        match ex.submit(cube, 1).unwrap().result() {
            Err(WaitError::Task(TaskError::Broken { .. })) => {}
            other => panic!("{method}: {other:?}"),
        }
    }
    check.assert_clean();
}

#[test]
fn schedule_stops_a_task_over_its_limit() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = executor(method, 1);
        let limit = Duration::from_millis(200);
        let f = ex.schedule(sleep_ms, 600_000, limit).unwrap();
        assert_eq!(
            f.result().unwrap_err(),
            WaitError::Task(TaskError::TimedOut { limit })
        );
        assert_eq!(ex.submit(cube, 4).unwrap().result().unwrap(), 64);
    }
    check.assert_clean();
}

fn double(x: u32) -> u32 {
    2 * x
}

fn total(ex: &impl Executor) -> u32 {
    let fs: Vec<_> = (1..=10).map(|i| ex.submit(double, i).unwrap()).collect();
    let submitted: u32 = fs.into_iter().map(|f| f.result().unwrap()).sum();
    let mapped: u32 = ex.map(double, 1..=10).unwrap().map(Result::unwrap).sum();
    assert_eq!(submitted, mapped);
    submitted
}

#[test]
fn the_executor_trait_runs_on_threads_and_processes() {
    let check = LeakCheck::start();
    assert_eq!(total(&ThreadPoolExecutor::new(2)), 110);
    for method in StartMethod::ALL {
        let ex = executor(method, 2);
        assert_eq!(total(&ex), 110);
        Executor::shutdown(&ex, true, false);
    }
    check.assert_clean();
}

#[test]
fn a_future_can_be_awaited() {
    let check = LeakCheck::start();
    let ex = executor(StartMethod::ForkServer, 1);
    let f = ex.submit(cube, 5).unwrap();
    // A minimal executor for one future: poll until ready, parking between polls.
    let waker = std::task::Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let value = loop {
        match std::future::Future::poll(f.as_mut(), &mut cx) {
            std::task::Poll::Ready(v) => break v,
            std::task::Poll::Pending => std::thread::park_timeout(PROMPT),
        }
    };
    assert_eq!(value.unwrap(), 125);
    drop(ex);
    check.assert_clean();
}

struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// A done-callback that panics does not take the other futures (or the pool) with it.
#[test]
fn a_panicking_callback_leaves_the_rest_alone() {
    let check = LeakCheck::start();
    let ex = executor(StartMethod::ForkServer, 2);
    let futures: Vec<_> = (0..20).map(|i| ex.submit(cube, i).unwrap()).collect();
    for f in &futures[..5] {
        f.add_done_callback(|| panic!("a callback that panics"));
    }
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(f.result_timeout(PROMPT).unwrap(), cube(i as i64));
    }
    assert_eq!(ex.submit(cube, 3).unwrap().result().unwrap(), 27);
    drop(ex);
    check.assert_clean();
}

/// Shutting the executor down from a done-callback (which runs on the pool's own
/// collector thread) neither deadlocks nor loses the other tasks.
#[test]
fn shutdown_from_a_done_callback() {
    let check = LeakCheck::start();
    let ex = std::sync::Arc::new(executor(StartMethod::ForkServer, 2));
    let first = ex.submit(cube, 2).unwrap();
    let rest: Vec<_> = (0..10).map(|i| ex.submit(cube, i).unwrap()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let inner = std::sync::Arc::clone(&ex);
    first.add_done_callback(move || {
        inner.shutdown(true, false);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(PROMPT).expect("the callback returned");
    assert_eq!(first.result().unwrap(), 8);
    for (i, f) in rest.iter().enumerate() {
        assert_eq!(f.result_timeout(PROMPT).unwrap(), cube(i as i64));
    }
    assert_eq!(ex.submit(cube, 1).unwrap_err(), ShutDown);
    drop(ex);
    check.assert_clean();
}

/// `submit` whose arguments' `Serialize` panics returns a future that failed with a
/// serialization error carrying the panic's message, like every other failure of
/// submit; also from a done-callback, where the panic used to vanish with the future.
#[test]
fn a_panic_encoding_the_arguments_fails_the_future() {
    let check = LeakCheck::start();
    let ex = std::sync::Arc::new(executor(StartMethod::ForkServer, 1));
    let says_panicked = |e: WaitError| match e {
        WaitError::Task(TaskError::Serialization { message, .. }) => {
            assert!(message.contains("panicked on purpose"), "{message}")
        }
        other => panic!("{other:?}"),
    };
    let f = ex
        .submit(takes_panics_when_encoded, PanicsWhenEncoded)
        .unwrap();
    says_panicked(f.result_timeout(PROMPT).unwrap_err());
    let (tx, rx) = std::sync::mpsc::channel();
    let inner = std::sync::Arc::clone(&ex);
    ex.submit(cube, 2).unwrap().add_done_callback(move || {
        let f = inner.submit(takes_panics_when_encoded, PanicsWhenEncoded);
        tx.send(f.map(|f| f.result_timeout(PROMPT))).unwrap();
    });
    let from_callback = rx.recv_timeout(PROMPT).expect("the callback made a future");
    says_panicked(from_callback.unwrap().unwrap_err());
    drop(ex);
    check.assert_clean();
}
