//! Cancelling a task that a worker already holds (issue 14 item 4): `cancel_running`
//! once reported `Cancelled` for a task queued behind a busy worker's current one,
//! which then ran anyway (and a never-ending one held its worker, so that
//! `shutdown(wait)` hung). A cancelled task never starts; a running one is stopped.

use std::sync::OnceLock;
use std::time::Duration;

use multiproc::StartMethod;
use multiproc::executor::{ProcessPoolExecutor, TaskError, WaitError};
use multiproc::shared::Atomic;
use multiproc::sync::Event;
use multiproc::testing::LeakCheck;

multiproc::test_support!();

const PROMPT: Duration = Duration::from_secs(60);

/// What the tasks of a worker share with the test: a task began, the gate, a count of
/// the tasks that must never run.
static SHARED: OnceLock<(Event, Event, Atomic<u32>)> = OnceLock::new();

fn install(shared: (Event, Event, Atomic<u32>)) {
    let _ = SHARED.set(shared);
}

fn quick(x: u32) -> u32 {
    x
}

/// Says it began, then waits for the gate.
fn hold(_: ()) -> u32 {
    let (began, gate, _) = SHARED.get().expect("initializer ran");
    began.set();
    assert!(gate.wait_timeout(PROMPT), "the gate never opened");
    1
}

/// Counts that it ran, then never ends (within the test).
fn must_not_run(_: ()) -> u32 {
    let (_, _, ran) = SHARED.get().expect("initializer ran");
    ran.fetch_add(1);
    std::thread::sleep(PROMPT * 2);
    2
}

#[test]
fn a_task_cancelled_while_queued_to_a_busy_worker_never_runs() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        multiproc::process::set_fork_warning(false);
        let (began, gate, ran) = (
            Event::new().unwrap(),
            Event::new().unwrap(),
            Atomic::new(0u32).unwrap(),
        );
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .start_method(method)
            .initializer(install, (began.clone(), gate.clone(), ran.clone()))
            .build()
            .unwrap();
        // Short tasks teach the pool to send a worker several tasks ahead.
        for i in 0..200 {
            assert_eq!(ex.submit(quick, i).unwrap().result().unwrap(), i);
        }
        let first = ex.submit(hold, ()).unwrap();
        assert!(began.wait_timeout(PROMPT));
        let queued = ex.submit(must_not_run, ()).unwrap();
        assert!(queued.cancel_running(), "{method}");
        assert!(matches!(
            queued.result(),
            Err(WaitError::Task(TaskError::Cancelled))
        ));
        gate.set();
        assert_eq!(first.result().unwrap(), 1);
        // The worker is free again, for the next task (not the cancelled one).
        assert_eq!(ex.submit(quick, 7).unwrap().result().unwrap(), 7);
        ex.shutdown(true, false);
        assert_eq!(ran.load(), 0, "{method}: the cancelled task ran");
    }
    check.assert_clean();
}
