//! Executors start their workers on demand and reuse idle ones (CPython ≥ 3.9:
//! `ProcessPoolExecutor._adjust_process_count`, `ThreadPoolExecutor._adjust_thread_count`
//! with their idle-worker semaphores), issue 13: a worker starts only when a task is
//! submitted and no worker is idle, up to `max_workers`; a dead worker is replaced on
//! demand too. `multiprocessing.Pool` stays eager, as Python's.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use multiproc::executor::{ProcessPoolExecutor, TaskError, ThreadPoolExecutor, WaitError};
use multiproc::pool::Pool;
use multiproc::sync::Event;
use multiproc::testing::LeakCheck;
use multiproc::{StartMethod, process::set_fork_warning};

multiproc::test_support!();

mod common;
use common::executor;
use common::wait_until;

const PROMPT: Duration = Duration::from_secs(60);

fn pid(_: ()) -> u32 {
    std::process::id()
}

/// Gates for tasks in worker processes: task `i` says it started on `started[i]` and
/// finishes once the test sets `open`. They reach the workers through the initializer.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Gates {
    started: Vec<Event>,
    open: Event,
}

static GATES: OnceLock<Gates> = OnceLock::new();

fn set_gates(gates: Gates) {
    let _ = GATES.set(gates);
}

/// Task `i`: waits until the test opens the gate (at most [`PROMPT`]); returns `i` and
/// the worker's pid.
fn gated(i: usize) -> (usize, u32) {
    let gates = GATES.get().expect("the initializer ran");
    gates.started[i].set();
    assert!(gates.open.wait_timeout(PROMPT), "the gate never opened");
    (i, std::process::id())
}

#[test]
fn three_sequential_tasks_leave_one_worker_process() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = executor(method, 4);
        assert_eq!(
            ex.worker_pids(),
            [0u32; 0],
            "{method}: no worker before a task"
        );
        let pids: Vec<u32> = (0..3)
            .map(|_| ex.submit(pid, ()).unwrap().result_timeout(PROMPT).unwrap())
            .collect();
        assert_eq!(
            pids, [pids[0]; 3],
            "{method}: the idle worker ran each task"
        );
        assert_eq!(ex.worker_pids(), [pids[0]], "{method}");
        ex.shutdown(true, false);
        assert_eq!(ex.worker_pids(), [0u32; 0], "{method}");
    }
    check.assert_clean();
}

#[test]
fn a_burst_of_blocked_tasks_grows_the_process_executor_to_max_workers_and_no_more() {
    let check = LeakCheck::start();
    const MAX: usize = 3;
    for method in StartMethod::ALL {
        set_fork_warning(false);
        let gates = Gates {
            started: (0..2 * MAX).map(|_| Event::new().unwrap()).collect(),
            open: Event::new().unwrap(),
        };
        let ex = ProcessPoolExecutor::builder()
            .max_workers(MAX)
            .start_method(method)
            .initializer(set_gates, gates.clone())
            .build()
            .unwrap();
        let futures: Vec<_> = (0..2 * MAX).map(|i| ex.submit(gated, i).unwrap()).collect();
        // The first MAX run (one worker each), the others wait for a free worker.
        for i in 0..MAX {
            assert!(gates.started[i].wait_timeout(PROMPT), "{method}: task {i}");
        }
        assert_eq!(ex.worker_pids().len(), MAX, "{method}");
        for i in MAX..2 * MAX {
            assert!(
                !gates.started[i].is_set(),
                "{method}: task {i} has no worker"
            );
        }
        gates.open.set();
        let got: Vec<(usize, u32)> = futures
            .iter()
            .map(|f| f.result_timeout(PROMPT).unwrap())
            .collect();
        assert_eq!(
            got.iter().map(|&(i, _)| i).collect::<Vec<_>>(),
            (0..2 * MAX).collect::<Vec<_>>()
        );
        let ran_on: HashSet<u32> = got.iter().map(|&(_, p)| p).collect();
        assert_eq!(ran_on.len(), MAX, "{method}: {got:?}");
        let live: HashSet<u32> = ex.worker_pids().into_iter().collect();
        assert_eq!(
            live, ran_on,
            "{method}: no worker started beyond max_workers"
        );
    }
    check.assert_clean();
}

#[test]
fn a_worker_killed_while_idle_is_replaced_when_a_task_comes() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = executor(method, 2);
        let first = ex.submit(pid, ()).unwrap().result_timeout(PROMPT).unwrap();
        assert_eq!(ex.worker_pids(), [first], "{method}");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(first as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        // The pool sees the death and reaps the worker; nothing replaces it while no
        // task asks for one.
        wait_until("the dead worker is reaped", || ex.worker_pids().is_empty());
        let next = ex.submit(pid, ()).unwrap().result_timeout(PROMPT).unwrap();
        assert_ne!(next, first, "{method}");
        assert_eq!(ex.worker_pids(), [next], "{method}");
        let more: Vec<u32> = (0..3)
            .map(|_| ex.submit(pid, ()).unwrap().result_timeout(PROMPT).unwrap())
            .collect();
        assert_eq!(more, [next; 3], "{method}");
    }
    check.assert_clean();
}

fn die(_: ()) -> u32 {
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
        .unwrap();
    0
}

#[test]
fn a_worker_that_dies_in_a_task_fails_only_that_task_and_the_next_task_gets_a_new_one() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = executor(method, 1);
        let first = ex.submit(pid, ()).unwrap().result_timeout(PROMPT).unwrap();
        match ex.submit(die, ()).unwrap().result_timeout(PROMPT) {
            Err(WaitError::Task(TaskError::WorkerDied { pid, .. })) => {
                assert_eq!(pid, first, "{method}")
            }
            other => panic!("{method}: {other:?}"),
        }
        let next = ex.submit(pid, ()).unwrap().result_timeout(PROMPT).unwrap();
        assert_ne!(next, first, "{method}");
        assert_eq!(ex.worker_pids(), [next], "{method}");
    }
    check.assert_clean();
}

#[test]
fn a_pool_starts_all_its_workers_at_once() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        set_fork_warning(false);
        let p = Pool::builder()
            .processes(3)
            .start_method(method)
            .build()
            .unwrap();
        assert_eq!(p.worker_pids().len(), 3, "{method}");
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
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

fn thread_executor(prefix: &str, n: usize) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder()
        .max_workers(n)
        .thread_name_prefix(prefix)
        .build()
        .unwrap()
}

#[test]
fn three_sequential_tasks_leave_one_thread() {
    let check = LeakCheck::start();
    let ex = thread_executor("od-seq", 4);
    assert_eq!(threads_named("od-seq"), 0, "no thread before a task");
    let ran_on: Vec<_> = (0..3)
        .map(|_| {
            ex.submit(|| std::thread::current().id())
                .unwrap()
                .result_timeout(PROMPT)
                .unwrap()
        })
        .collect();
    assert_eq!(ran_on, [ran_on[0]; 3]);
    assert_eq!(threads_named("od-seq"), 1);
    drop(ex);
    assert_eq!(threads_named("od-seq"), 0);
    check.assert_clean();
}

/// A gate the test opens once; tasks count themselves in as they start.
#[derive(Default)]
struct Gate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    fn enter(&self) {
        let mut st = self.state.lock().unwrap();
        st.0 += 1;
        self.changed.notify_all();
        let (st, timeout) = self
            .changed
            .wait_timeout_while(st, PROMPT, |st| !st.1)
            .unwrap();
        assert!(st.1 && !timeout.timed_out(), "the gate never opened");
    }

    fn wait_started(&self, n: usize) -> usize {
        let st = self.state.lock().unwrap();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, PROMPT, |st| st.0 < n)
            .unwrap();
        st.0
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

#[test]
fn a_burst_of_blocked_tasks_grows_the_thread_executor_to_max_workers_and_no_more() {
    let check = LeakCheck::start();
    const MAX: usize = 3;
    let ex = thread_executor("od-burst", MAX);
    let gate = Arc::new(Gate::default());
    let futures: Vec<_> = (0..2 * MAX)
        .map(|i| {
            let gate = Arc::clone(&gate);
            ex.submit(move || {
                gate.enter();
                (i, std::thread::current().id())
            })
            .unwrap()
        })
        .collect();
    assert_eq!(gate.wait_started(MAX), MAX);
    assert_eq!(threads_named("od-burst"), MAX);
    assert_eq!(
        gate.state.lock().unwrap().0,
        MAX,
        "the others wait for a thread"
    );
    gate.open();
    let got: Vec<_> = futures
        .iter()
        .map(|f| f.result_timeout(PROMPT).unwrap())
        .collect();
    assert_eq!(
        got.iter().map(|&(i, _)| i).collect::<Vec<_>>(),
        (0..2 * MAX).collect::<Vec<_>>()
    );
    let threads: HashSet<_> = got.iter().map(|&(_, t)| t).collect();
    assert_eq!(threads.len(), MAX);
    assert_eq!(
        threads_named("od-burst"),
        MAX,
        "none started beyond max_workers"
    );
    drop(ex);
    check.assert_clean();
}

#[test]
fn a_thread_freed_by_a_finished_task_takes_the_next_one() {
    // One task blocked, then sequential tasks: a second thread starts for the first of
    // them (no thread was idle), and then serves all the others.
    let check = LeakCheck::start();
    let ex = thread_executor("od-reuse", 4);
    let gate = Arc::new(Gate::default());
    let blocked = {
        let gate = Arc::clone(&gate);
        ex.submit(move || gate.enter()).unwrap()
    };
    assert_eq!(gate.wait_started(1), 1);
    let ran_on: Vec<_> = (0..3)
        .map(|_| {
            ex.submit(|| std::thread::current().id())
                .unwrap()
                .result_timeout(PROMPT)
                .unwrap()
        })
        .collect();
    assert_eq!(ran_on, [ran_on[0]; 3]);
    assert_eq!(threads_named("od-reuse"), 2);
    gate.open();
    blocked.result_timeout(PROMPT).unwrap();
    drop(ex);
    check.assert_clean();
}

/// CPython gh-115634: `ProcessPoolExecutor(1, max_tasks_per_child=2)` with ten tasks
/// queued hung once its only worker retired (a stale idle token stopped the
/// replacement). Here a retired worker is replaced when a queued task finds no idle
/// one, under every start method, and no worker runs more than two tasks.
#[test]
fn queued_tasks_get_a_fresh_worker_when_the_only_one_retires() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        set_fork_warning(false);
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_tasks_per_child(2)
            .start_method(method)
            .build()
            .unwrap();
        let futures: Vec<_> = (0..10).map(|_| ex.submit(pid, ()).unwrap()).collect();
        let pids: Vec<u32> = futures
            .iter()
            .map(|f| f.result_timeout(PROMPT).unwrap())
            .collect();
        let mut per_worker = std::collections::HashMap::<u32, usize>::new();
        for p in &pids {
            *per_worker.entry(*p).or_default() += 1;
        }
        assert_eq!(per_worker.len(), 5, "{method}: {pids:?}");
        assert!(per_worker.values().all(|&n| n == 2), "{method}: {pids:?}");
        assert!(ex.worker_pids().len() <= 1, "{method}");
    }
    check.assert_clean();
}
