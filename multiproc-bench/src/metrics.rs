//! The metrics: pybench's names, units and definitions, measured on multiproc.
//!
//! To add a metric, write a `fn(&Ctx) -> Result<f64, String>` that runs one repetition
//! and returns its value in the metric's unit, and add a [`Metric`] row to [`METRICS`]
//! (the table's order is the output order; keep pybench's). The helpers below mirror
//! pybench's: [`Ctx::n`] is `n(base)`, [`per_op`] and [`rate`] its conversions,
//! [`check`] its checks, and [`Reaped`] its `reap` (no child outlives its metric).

use std::time::Instant;

use multiproc::{Process, StartMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What every metric gets: the workload scale and the default start method.
pub(crate) struct Ctx {
    /// `--scale`.
    pub(crate) scale: f64,
    /// `--method`: the start method of the metrics that do not name one (also set as
    /// multiproc's default with `set_start_method`). Unused until such metrics exist.
    #[allow(dead_code)]
    pub(crate) method: StartMethod,
}

impl Ctx {
    /// Workload size: `base` times `--scale`, at least 1 (pybench's `n`).
    pub(crate) fn n(&self, base: u64) -> u64 {
        ((base as f64 * self.scale) as u64).max(1)
    }
}

/// One repetition of a metric: its value in the metric's unit, or why it failed.
pub(crate) type MetricFn = fn(&Ctx) -> Result<f64, String>;

/// One row of the table.
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) desc: &'static str,
    pub(crate) run: MetricFn,
}

/// Every metric this binary implements, in pybench's order (which is the output order).
pub(crate) const METRICS: &[Metric] = &[
    // ---- processes and threads
    Metric {
        name: "proc_start_join_fork",
        unit: "ms",
        desc: "Process::builder().start(noop, ()) + join(), fork",
        run: proc_start_join_fork,
    },
    Metric {
        name: "proc_start_join_spawn",
        unit: "ms",
        desc: "Process::builder().start(noop, ()) + join(), spawn",
        run: proc_start_join_spawn,
    },
    Metric {
        name: "proc_start_join_forkserver",
        unit: "ms",
        desc: "Process::builder().start(noop, ()) + join(), forkserver (server started beforehand)",
        run: proc_start_join_forkserver,
    },
    Metric {
        name: "thread_start_join",
        unit: "us",
        desc: "thread::Thread::start(noop) + join()",
        run: thread_start_join,
    },
    // ---- queues and pipes: queue_*, pipe_*           (to come)
    // ---- pools and executors: pool_*, ppe_*, tpe_*, cpu_speedup (to come)
    // ---- shared state and locks: value_*, lock_*, shm_* (to come)
    // ---- manager_dict_*, subprocess_run_true          (to come)
];

// ---- helpers (pybench's) ---------------------------------------------------------

/// Seconds per unit name, for [`per_op`].
fn per_second(unit: &str) -> f64 {
    match unit {
        "s" => 1.0,
        "ms" => 1e3,
        "us" => 1e6,
        "ns" => 1e9,
        _ => panic!("not a time unit: {unit}"),
    }
}

/// Latency of one operation, in `unit` (s, ms, us, ns).
pub(crate) fn per_op(seconds: f64, count: u64, unit: &str) -> f64 {
    seconds / count as f64 * per_second(unit)
}

/// Throughput: `count` per second.
#[allow(dead_code)] // for the throughput metrics to come
pub(crate) fn rate(count: f64, seconds: f64) -> f64 {
    count / seconds
}

/// Fails with `check failed: {what}` unless `ok`.
pub(crate) fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {}", what()))
    }
}

/// Seconds taken by `f` and its result (pybench's `clock`).
pub(crate) fn clock<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t0 = Instant::now();
    let out = f();
    (t0.elapsed().as_secs_f64(), out)
}

/// A child that is reaped whatever happens (pybench's `reap`): when dropped, it is killed
/// if it still runs, then waited for.
pub(crate) struct Reaped<R: DeserializeOwned + 'static>(pub(crate) Process<R>);

impl<R: DeserializeOwned + 'static> std::ops::Deref for Reaped<R> {
    type Target = Process<R>;
    fn deref(&self) -> &Process<R> {
        &self.0
    }
}

impl<R: DeserializeOwned + 'static> std::ops::DerefMut for Reaped<R> {
    fn deref_mut(&mut self) -> &mut Process<R> {
        &mut self.0
    }
}

impl<R: DeserializeOwned + 'static> Drop for Reaped<R> {
    fn drop(&mut self) {
        if self.0.exit_status().is_none() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Starts `target(args)` as a daemon child with `method`, kept under a [`Reaped`] guard.
pub(crate) fn start_child<A, R>(
    method: StartMethod,
    target: fn(A) -> R,
    args: A,
) -> Result<Reaped<R>, String>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    Process::builder()
        .start_method(method)
        .daemon(true)
        .start(target, args)
        .map(Reaped)
        .map_err(|e| format!("start ({method}): {e}"))
}

/// Joins `p`, then checks that it exited 0 (pybench's `check(p.exitcode == 0)`).
pub(crate) fn join_ok<R>(p: &mut Reaped<R>, what: &str) -> Result<R, String>
where
    R: DeserializeOwned + 'static,
{
    let result = p.join().map_err(|e| format!("{what} child: {e}"))?;
    let status = p.exit_status();
    check(status.is_some_and(|s| s.success()), || {
        format!("{what} child exit status {status:?}")
    })?;
    Ok(result)
}

// ---- task functions ----------------------------------------------------------------

/// pybench's `noop`.
fn noop(_: ()) {}

// ---- processes and threads ---------------------------------------------------------

/// Seconds for `count` starts+joins of a noop child in a row (pybench's `start_join`).
fn start_join(method: StartMethod, count: u64) -> Result<f64, String> {
    let t0 = Instant::now();
    for _ in 0..count {
        let mut p = start_child(method, noop, ())?;
        join_ok(&mut p, "noop")?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn proc_start_join_fork(c: &Ctx) -> Result<f64, String> {
    let k = c.n(100);
    Ok(per_op(start_join(StartMethod::Fork, k)?, k, "ms"))
}

fn proc_start_join_spawn(c: &Ctx) -> Result<f64, String> {
    let k = c.n(10);
    Ok(per_op(start_join(StartMethod::Spawn, k)?, k, "ms"))
}

fn proc_start_join_forkserver(c: &Ctx) -> Result<f64, String> {
    multiproc::process::ensure_forkserver().map_err(|e| format!("forkserver: {e}"))?;
    start_join(StartMethod::ForkServer, 1)?;
    let k = c.n(50);
    Ok(per_op(start_join(StartMethod::ForkServer, k)?, k, "ms"))
}

fn thread_start_join(c: &Ctx) -> Result<f64, String> {
    let k = c.n(2000);
    let (seconds, joined) = clock(|| {
        for _ in 0..k {
            multiproc::thread::Thread::start(|| noop(()))
                .map_err(|e| format!("thread start: {e}"))?
                .join()
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    });
    joined?;
    Ok(per_op(seconds, k, "us"))
}
