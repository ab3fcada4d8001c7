//! User serde code failing, everywhere the codec runs it (issue 13): every stage where a
//! user's type is encoded or decoded, × {its `Serialize` or `Deserialize` returns
//! `Err(custom("bad-<stage>"))`, or panics with `"boom-<stage>"`}.
//!
//! Stages: process arguments (encoded in the parent, decoded in the child) and results
//! (encoded in the child, decoded in the parent); `Pipe` send/recv; `Queue`,
//! `SimpleQueue`, `JoinableQueue` put/get; pool `apply_async` arguments and results,
//! `map` items and results; `ProcessPoolExecutor::submit` arguments and results;
//! manager proxies (dict, list, value, queue); initializer arguments (pool and
//! executor).
//!
//! Each cell asserts: no hang (every wait is bounded), a typed error whose text holds
//! the user's message, the thing still usable afterwards where that makes sense (the
//! pipe carries the next message, the pool runs the next task), nothing leaked
//! (`LeakCheck`), under every start method where processes are involved. One pool and
//! one executor per start method serve all their cells.
//!
//! Under `fork`, a process's (and a worker initializer's) arguments are moved into the
//! child, never encoded: those cells check that the target simply runs.

use std::fmt::Debug;
use std::time::Duration;

use multiproc::connection::pipe;
use multiproc::executor::ProcessPoolExecutor;
use multiproc::manager::Manager;
use multiproc::pool::{Pool, PoolError};
use multiproc::pool::{TaskError, WaitError};
use multiproc::testing::LeakCheck;
use multiproc::{JoinableQueue, ProcessError, Queue, SimpleQueue, StartError, StartMethod};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

multiproc::test_support!();

mod common;
use common::{PROMPT, builder};

/// How a [`Faulty`] value's serde code fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Fault {
    /// `Serialize` returns `Err(custom("bad-<stage>"))`.
    EncodeErr,
    /// `Serialize` panics with `"boom-<stage>"`.
    EncodePanic,
    /// `Deserialize` returns `Err(custom("bad-<stage>"))`.
    DecodeErr,
    /// `Deserialize` panics with `"boom-<stage>"`.
    DecodePanic,
}

const FAULTS: [Fault; 4] = [
    Fault::EncodeErr,
    Fault::EncodePanic,
    Fault::DecodeErr,
    Fault::DecodePanic,
];

impl Fault {
    /// The user's text this fault produces at `stage`.
    fn text(self, stage: &str) -> String {
        match self {
            Fault::EncodeErr | Fault::DecodeErr => format!("bad-{stage}"),
            Fault::EncodePanic | Fault::DecodePanic => format!("boom-{stage}"),
        }
    }

    fn on_encode(self) -> bool {
        matches!(self, Fault::EncodeErr | Fault::EncodePanic)
    }

    fn fail<E>(self, stage: &str, custom: impl FnOnce(String) -> E) -> E {
        let text = self.text(stage);
        match self {
            Fault::EncodePanic | Fault::DecodePanic => panic!("{text}"),
            Fault::EncodeErr | Fault::DecodeErr => custom(text),
        }
    }
}

/// A value whose serde code fails as its `fault` says, with its `stage` in the text;
/// with no fault it crosses like any value. A decode fault travels with the value and
/// strikes on the other side.
#[derive(Debug, Clone, PartialEq)]
struct Faulty {
    fault: Option<Fault>,
    stage: String,
}

fn faulty(fault: Fault, stage: &str) -> Faulty {
    Faulty {
        fault: Some(fault),
        stage: stage.to_string(),
    }
}

fn fine(stage: &str) -> Faulty {
    Faulty {
        fault: None,
        stage: stage.to_string(),
    }
}

impl Serialize for Faulty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.fault {
            Some(f) if f.on_encode() => Err(f.fail(&self.stage, serde::ser::Error::custom)),
            _ => (self.fault, &self.stage).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Faulty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (fault, stage) = <(Option<Fault>, String)>::deserialize(d)?;
        match fault {
            Some(f) if !f.on_encode() => Err(f.fail(&stage, serde::de::Error::custom)),
            _ => Ok(Faulty { fault, stage }),
        }
    }
}

/// The cells of one test: each runs on its own, and a failed cell is recorded (with its
/// panic's text) while the others still run, so that a failure names every broken
/// cell at once.
#[derive(Default)]
struct Matrix {
    failed: Vec<String>,
}

impl Matrix {
    fn cell(&mut self, name: &str, run: impl FnOnce()) {
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            self.failed.push(format!("{name}: {text}"));
        }
    }

    fn assert_all_passed(self) {
        assert!(
            self.failed.is_empty(),
            "{} failed cells:\n{}",
            self.failed.len(),
            self.failed.join("\n")
        );
    }
}

/// Asserts that `error` (a typed error, shown with `Display`) carries the user's text.
fn says<E: std::fmt::Display>(error: &E, fault: Fault, stage: &str, cell: &str) {
    let text = error.to_string();
    let want = fault.text(stage);
    assert!(
        text.contains(&want),
        "{cell} {fault:?}: {want:?} not in {text:?}"
    );
}

/// The stage a value names: a target that takes a [`Faulty`].
fn stage_of(f: Faulty) -> String {
    f.stage
}

/// A target that returns a [`Faulty`] with `fault`: its result fails.
fn make((fault, stage): (Fault, String)) -> Faulty {
    faulty(fault, &stage)
}

/// A target that returns a [`Faulty`] with `fault`, or a fine one.
fn make_maybe((fault, stage): (Option<Fault>, String)) -> Faulty {
    Faulty { fault, stage }
}

fn square(x: u64) -> u64 {
    x * x
}

fn init_with(_: Faulty) {}

// ---- processes -------------------------------------------------------------------

#[test]
fn process_arguments() {
    let leaks = LeakCheck::start();
    let mut m = Matrix::default();
    for method in StartMethod::ALL {
        for fault in FAULTS {
            m.cell(&format!("{method} {fault:?}"), || {
                let stage = format!("process-arguments-{method}");
                let cell = format!("process arguments under {method}");
                let started = builder(method).start(stage_of, faulty(fault, &stage));
                if method == StartMethod::Fork {
                    // Moved, not encoded: the target runs with the value.
                    let mut p = started.expect("start under fork");
                    assert_eq!(p.join_timeout(PROMPT).expect(&cell), stage, "{cell}");
                    return;
                }
                if fault.on_encode() {
                    match started {
                        Err(e @ StartError::Codec(_)) => says(&e, fault, &stage, &cell),
                        other => panic!("{cell} {fault:?}: {other:?}"),
                    }
                    return;
                }
                let mut p = started.expect("the arguments encode");
                match p.join_timeout(PROMPT) {
                    Err(e @ ProcessError::Serialization { .. }) => says(&e, fault, &stage, &cell),
                    other => panic!("{cell} {fault:?}: {other:?}"),
                }
                assert_eq!(p.exit_status().unwrap().exitcode(), 1, "{cell} {fault:?}");
            });
        }
    }
    m.assert_all_passed();
    leaks.assert_clean();
}

#[test]
fn process_results() {
    let leaks = LeakCheck::start();
    let mut m = Matrix::default();
    for method in StartMethod::ALL {
        for fault in FAULTS {
            m.cell(&format!("{method} {fault:?}"), || {
                let stage = format!("process-results-{method}");
                let cell = format!("process results under {method}");
                let mut p = builder(method)
                    .start(make, (fault, stage.clone()))
                    .expect("start");
                match (fault.on_encode(), p.join_timeout(PROMPT)) {
                    (true, Err(e @ ProcessError::Serialization { .. })) => {
                        says(&e, fault, &stage, &cell);
                        assert_eq!(p.exit_status().unwrap().exitcode(), 1, "{cell} {fault:?}");
                    }
                    (false, Err(e @ ProcessError::Codec(_))) => says(&e, fault, &stage, &cell),
                    (_, other) => panic!("{cell} {fault:?}: {other:?}"),
                }
            });
        }
    }
    m.assert_all_passed();
    leaks.assert_clean();
}

// ---- pipes and queues (user serde code runs in the caller) -----------------------

#[test]
fn pipe_send_and_recv() {
    let leaks = LeakCheck::start();
    let mut m = Matrix::default();
    {
        let (a, b) = pipe::<Faulty>().unwrap();
        for fault in FAULTS {
            m.cell(&format!("{fault:?}"), || {
                let stage = "pipe";
                if fault.on_encode() {
                    let e = a.send(&faulty(fault, stage)).unwrap_err();
                    says(&e, fault, stage, "pipe send");
                } else {
                    a.send(&faulty(fault, stage)).unwrap();
                    let e = b.recv_timeout(PROMPT).unwrap_err();
                    says(&e, fault, stage, "pipe recv");
                }
                // The pipe carries the next message.
                a.send(&fine("after")).unwrap();
                assert_eq!(b.recv_timeout(PROMPT).unwrap(), fine("after"), "{fault:?}");
            });
        }
    }
    m.assert_all_passed();
    leaks.assert_clean();
}

/// Put and get through one kind of queue: `put` and `get` are the queue's own.
fn queue_cells<E1: std::fmt::Display + Debug, E2: std::fmt::Display + Debug>(
    m: &mut Matrix,
    kind: &str,
    put: impl Fn(Faulty) -> Result<(), E1>,
    get: impl Fn() -> Result<Faulty, E2>,
) {
    for fault in FAULTS {
        m.cell(&format!("{kind} {fault:?}"), || {
            if fault.on_encode() {
                let e = put(faulty(fault, kind)).unwrap_err();
                says(&e, fault, kind, "put");
            } else {
                put(faulty(fault, kind)).unwrap();
                let e = get().unwrap_err();
                says(&e, fault, kind, "get");
            }
            put(fine("after")).unwrap();
            assert_eq!(get().unwrap(), fine("after"), "{kind} {fault:?}");
        });
    }
}

#[test]
fn queue_put_and_get() {
    let leaks = LeakCheck::start();
    let mut m = Matrix::default();
    {
        let q = Queue::<Faulty>::new().unwrap();
        queue_cells(&mut m, "queue", |v| q.put(v), || q.get_timeout(PROMPT));
        let q = SimpleQueue::<Faulty>::new().unwrap();
        // Every get below finds its item already there.
        queue_cells(&mut m, "simple-queue", |v| q.put(v), || q.get());
        let q = JoinableQueue::<Faulty>::new().unwrap();
        queue_cells(
            &mut m,
            "joinable-queue",
            |v| q.put(v),
            || {
                let got = q.get_timeout(PROMPT);
                q.task_done().unwrap();
                got
            },
        );
        // A put that failed to encode counted no task: nothing is left to wait for.
        assert_eq!(q.unfinished_tasks(), 0);
        assert!(q.join_timeout(Duration::ZERO));
    }
    m.assert_all_passed();
    leaks.assert_clean();
}

// ---- managers ---------------------------------------------------------------------

#[test]
fn manager_proxies() {
    let leaks = LeakCheck::start();
    let mut m = Matrix::default();
    for method in StartMethod::ALL {
        let mut manager = Manager::builder().start_method(method).start().unwrap();
        let dict = manager.dict::<String, Faulty>().unwrap();
        let list = manager.list::<Faulty>(Vec::new()).unwrap();
        let value = manager.value(fine("initial")).unwrap();
        let queue = manager.queue::<Faulty>().unwrap();
        for fault in FAULTS {
            m.cell(&format!("{method} {fault:?}"), || {
                let stage = format!("manager-{method}");
                let v = || faulty(fault, &stage);
                let key = || "k".to_string();
                if fault.on_encode() {
                    says(
                        &dict.set(key(), v()).unwrap_err(),
                        fault,
                        &stage,
                        "dict set",
                    );
                    says(&list.push(v()).unwrap_err(), fault, &stage, "list push");
                    says(&value.set(v()).unwrap_err(), fault, &stage, "value set");
                    says(&queue.put(v()).unwrap_err(), fault, &stage, "queue put");
                    says(
                        &manager.value(v()).map(drop).unwrap_err(),
                        fault,
                        &stage,
                        "value creation",
                    );
                } else {
                    dict.set(key(), v()).unwrap();
                    says(&dict.get(&key()).unwrap_err(), fault, &stage, "dict get");
                    list.push(v()).unwrap();
                    says(&list.get(0).unwrap_err(), fault, &stage, "list get");
                    value.set(v()).unwrap();
                    says(&value.get().unwrap_err(), fault, &stage, "value get");
                    queue.put(v()).unwrap();
                    says(
                        &queue.get_timeout(PROMPT).unwrap_err(),
                        fault,
                        &stage,
                        "queue get",
                    );
                    list.clear().unwrap();
                }
                // Every proxy goes on.
                dict.set(key(), fine("after")).unwrap();
                assert_eq!(dict.get(&key()).unwrap(), Some(fine("after")));
                list.push(fine("after")).unwrap();
                assert_eq!(list.pop().unwrap(), Some(fine("after")));
                value.set(fine("after")).unwrap();
                assert_eq!(value.get().unwrap(), fine("after"));
                queue.put(fine("after")).unwrap();
                assert_eq!(queue.get_timeout(PROMPT).unwrap(), fine("after"));
            });
        }
        manager.shutdown().unwrap();
    }
    m.assert_all_passed();
    leaks.assert_clean();
}

// ---- pools and executors ------------------------------------------------------------

fn pool(method: StartMethod) -> Pool {
    multiproc::process::set_fork_warning(false);
    Pool::builder()
        .processes(1)
        .start_method(method)
        .build()
        .unwrap()
}

/// `x * x` through the pool, within a bounded wait: the pool still runs tasks.
fn squared(p: &Pool, x: u64) -> u64 {
    p.apply_async(square, x)
        .unwrap()
        .get_timeout(PROMPT)
        .unwrap()
}

/// `square` over `items` through the pool, within a bounded wait.
fn mapped<const N: usize>(p: &Pool, items: [u64; N]) -> Vec<u64> {
    p.map_async(square, items)
        .unwrap()
        .get_timeout(PROMPT)
        .unwrap()
}

/// The text of a task's failure, which must be a serialisation failure (not a death).
fn task_failure(e: &TaskError, cell: &str) {
    assert!(
        matches!(e, TaskError::Serialization { .. }),
        "{cell}: a serialisation failure, not {e:?}"
    );
}

#[test]
fn pool_apply_async_arguments_and_results() {
    let leaks = LeakCheck::start();
    let mut m = Matrix::default();
    for method in StartMethod::ALL {
        let p = pool(method);
        for fault in FAULTS {
            m.cell(&format!("{method} {fault:?}"), || {
                let stage = format!("apply-arguments-{method}");
                let cell = format!("apply_async arguments under {method}");
                match (
                    fault.on_encode(),
                    p.apply_async(stage_of, faulty(fault, &stage)),
                ) {
                    (true, Err(e @ PoolError::Arguments(_))) => says(&e, fault, &stage, &cell),
                    (false, Ok(r)) => match r.get_timeout(PROMPT) {
                        Err(WaitError::Task(e)) => {
                            task_failure(&e, &cell);
                            says(&e, fault, &stage, &cell)
                        }
                        other => panic!("{cell} {fault:?}: {other:?}"),
                    },
                    (_, other) => panic!("{cell} {fault:?}: {:?}", other.map(drop)),
                }
                assert_eq!(squared(&p, 3), 9, "{cell} {fault:?}: the pool goes on");
            });
            m.cell(&format!("{method} {fault:?}"), || {
                let stage = format!("apply-results-{method}");
                let cell = format!("apply_async results under {method}");
                let r = p.apply_async(make, (fault, stage.clone())).unwrap();
                match r.get_timeout(PROMPT) {
                    Err(WaitError::Task(e)) => {
                        task_failure(&e, &cell);
                        says(&e, fault, &stage, &cell)
                    }
                    other => panic!("{cell} {fault:?}: {other:?}"),
                }
                assert_eq!(squared(&p, 4), 16, "{cell} {fault:?}: the pool goes on");
            });
        }
        drop(p);
    }
    m.assert_all_passed();
    leaks.assert_clean();
}

/// The failure of a map: its first failed item, `index`, a serialisation failure with
/// the text.
fn map_failure(
    r: Result<Vec<impl Debug>, PoolError>,
    index: usize,
    fault: Fault,
    stage: &str,
    cell: &str,
) {
    match r {
        Err(PoolError::Item { error, index: i }) => {
            assert_eq!(
                i, index,
                "{cell} {fault:?}: the failed item is the faulty one"
            );
            task_failure(&error, cell);
            says(&error, fault, stage, cell)
        }
        other => panic!("{cell} {fault:?}: {other:?}"),
    }
}

#[test]
fn pool_map_items_and_results() {
    let leaks = LeakCheck::start();
    let mut m = Matrix::default();
    for method in StartMethod::ALL {
        let p = pool(method);
        for fault in FAULTS {
            m.cell(&format!("{method} {fault:?}"), || {
                let stage = format!("map-items-{method}");
                let cell = format!("map items under {method}");
                // One chunk of three: the faulty item fails under its own index.
                let items = vec![fine("a"), faulty(fault, &stage), fine("b")];
                match (
                    fault.on_encode(),
                    p.with_chunksize(3).map_async(stage_of, items),
                ) {
                    (true, Err(e @ PoolError::Arguments(_))) => says(&e, fault, &stage, &cell),
                    (false, Ok(r)) => map_failure(r.get_timeout(PROMPT), 1, fault, &stage, &cell),
                    (_, other) => panic!("{cell} {fault:?}: {:?}", other.map(drop)),
                }
                assert_eq!(mapped(&p, [1, 2]), [1, 4], "{cell} {fault:?}");
            });
            m.cell(&format!("{method} {fault:?}"), || {
                let stage = format!("map-results-{method}");
                let cell = format!("map results under {method}");
                let items = [None, Some(fault), None].map(|f| (f, stage.clone()));
                let r = p.with_chunksize(3).map_async(make_maybe, items).unwrap();
                map_failure(r.get_timeout(PROMPT), 1, fault, &stage, &cell);
                assert_eq!(mapped(&p, [3, 4]), [9, 16], "{cell} {fault:?}");
            });
        }
        drop(p);
    }
    m.assert_all_passed();
    leaks.assert_clean();
}

#[test]
fn executor_submit_arguments_and_results() {
    let leaks = LeakCheck::start();
    let mut m = Matrix::default();
    for method in StartMethod::ALL {
        multiproc::process::set_fork_warning(false);
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .start_method(method)
            .build()
            .unwrap();
        for fault in FAULTS {
            m.cell(&format!("{method} {fault:?}"), || {
                let stage = format!("submit-arguments-{method}");
                let cell = format!("submit arguments under {method}");
                let f = ex.submit(stage_of, faulty(fault, &stage)).unwrap();
                match f.result_timeout(PROMPT) {
                    Err(WaitError::Task(e)) => {
                        task_failure(&e, &cell);
                        says(&e, fault, &stage, &cell)
                    }
                    other => panic!("{cell} {fault:?}: {other:?}"),
                }
                let next = ex.submit(square, 5).unwrap();
                assert_eq!(next.result_timeout(PROMPT).unwrap(), 25, "{cell} {fault:?}");
            });
            m.cell(&format!("{method} {fault:?}"), || {
                let stage = format!("submit-results-{method}");
                let cell = format!("submit results under {method}");
                let f = ex.submit(make, (fault, stage.clone())).unwrap();
                match f.result_timeout(PROMPT) {
                    Err(WaitError::Task(e)) => {
                        task_failure(&e, &cell);
                        says(&e, fault, &stage, &cell)
                    }
                    other => panic!("{cell} {fault:?}: {other:?}"),
                }
                let next = ex.submit(square, 6).unwrap();
                assert_eq!(next.result_timeout(PROMPT).unwrap(), 36, "{cell} {fault:?}");
            });
        }
        ex.shutdown(true, false);
    }
    m.assert_all_passed();
    leaks.assert_clean();
}

/// A pool whose initializer's arguments fail, or an error: under `fork` they are moved
/// (the pool works); otherwise the build or the first task fails with the user's text,
/// and later calls say the pool is broken.
fn initializer_cell(method: StartMethod, fault: Fault, executor: bool) {
    let what = if executor { "executor" } else { "pool" };
    let stage = format!("{what}-initializer-{method}");
    let cell = format!("{what} initializer arguments under {method}");
    multiproc::process::set_fork_warning(false);
    let (built, first) = if executor {
        let built = ProcessPoolExecutor::builder()
            .max_workers(1)
            .start_method(method)
            .initializer(init_with, faulty(fault, &stage))
            .build();
        match built {
            Ok(ex) => {
                let first = ex.submit(square, 7).unwrap().result_timeout(PROMPT);
                ex.shutdown(true, false);
                (Ok(()), Some(first.map_err(|e| e.to_string())))
            }
            Err(e) => (Err(e), None),
        }
    } else {
        let built = Pool::builder()
            .processes(1)
            .start_method(method)
            .initializer(init_with, faulty(fault, &stage))
            .build();
        match built {
            Ok(p) => {
                let first = p
                    .apply_async(square, 7)
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.get_timeout(PROMPT).map_err(|e| e.to_string()));
                let later = p.apply_async(square, 8).map(drop);
                if method != StartMethod::Fork {
                    assert!(
                        matches!(later, Err(PoolError::Broken { .. })),
                        "{cell} {fault:?}: later calls: {later:?}"
                    );
                }
                drop(p);
                (Ok(()), Some(first))
            }
            Err(e) => (Err(e), None),
        }
    };
    match (method, built, first) {
        (StartMethod::Fork, Ok(()), Some(Ok(49))) => {}
        (StartMethod::Fork, built, first) => {
            panic!("{cell} {fault:?}: moved, the pool works: {built:?} {first:?}")
        }
        (_, Err(e), None) => says(&e, fault, &stage, &cell),
        (_, Ok(()), Some(Err(text))) => {
            assert!(
                text.contains(&fault.text(&stage)),
                "{cell} {fault:?}: {text}"
            )
        }
        (_, built, first) => panic!("{cell} {fault:?}: {built:?} {first:?}"),
    }
}

/// Every start method × fault of [`initializer_cell`], for a pool or an executor.
fn initializer_matrix(executor: bool) {
    let leaks = LeakCheck::start();
    let mut m = Matrix::default();
    for method in StartMethod::ALL {
        for fault in FAULTS {
            m.cell(&format!("{method} {fault:?}"), || {
                initializer_cell(method, fault, executor);
            });
        }
    }
    m.assert_all_passed();
    leaks.assert_clean();
}

#[test]
fn pool_initializer_arguments() {
    initializer_matrix(false);
}

#[test]
fn executor_initializer_arguments() {
    initializer_matrix(true);
}
