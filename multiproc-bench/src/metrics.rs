//! The metrics: pybench's names, units and definitions, measured on multiproc.
//!
//! To add a metric, write a `fn(&Ctx) -> Result<f64, String>` that runs one repetition
//! and returns its value in the metric's unit, and add a [`Metric`] row to [`METRICS`]
//! (the table's order is the output order; keep pybench's). The helpers below mirror
//! pybench's: [`Ctx::n`] is `n(base)`, [`per_op`] and [`rate`] its conversions,
//! [`check`] its checks, and [`Reaped`] its `reap` (no child outlives its metric).

use std::time::Instant;

use multiproc::connection::{Connection, Receiver, Sender, pipe, pipe_simplex};
use multiproc::shared::{SharedMemory, Value};
use multiproc::sync::{Barrier, Lock};
use multiproc::{Process, Queue, StartMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

/// pybench's `MiB`.
const MIB: usize = 1 << 20;

/// What every metric gets: the workload scale and the default start method.
pub(crate) struct Ctx {
    /// `--scale`.
    pub(crate) scale: f64,
    /// `--method`: the start method of the metrics that do not name one (also set as
    /// multiproc's default with `set_start_method`).
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
    // ---- queues and pipes
    Metric {
        name: "queue_small_msgs",
        unit: "msg/s",
        desc: "Queue: a child puts N small ints and a sentinel, the parent gets them",
        run: queue_small_msgs,
    },
    Metric {
        name: "queue_1k_msgs",
        unit: "msg/s",
        desc: "Queue: as queue_small_msgs with 1 KiB bytes payloads",
        run: queue_1k_msgs,
    },
    Metric {
        name: "queue_1m_bw",
        unit: "MB/s",
        desc: "Queue: as queue_small_msgs with 1 MiB bytes payloads (MB = 1e6 bytes)",
        run: queue_1m_bw,
    },
    Metric {
        name: "queue_rtt",
        unit: "us",
        desc: "round trip parent -> child -> parent through two Queues",
        run: queue_rtt,
    },
    Metric {
        name: "pipe_small_msgs",
        unit: "msg/s",
        desc: "pipe_simplex: a child sends N small ints and a sentinel, the parent receives them",
        run: pipe_small_msgs,
    },
    Metric {
        name: "pipe_1m_bw",
        unit: "MB/s",
        desc: "pipe_simplex: as pipe_small_msgs with 1 MiB bytes payloads (MB = 1e6 bytes)",
        run: pipe_1m_bw,
    },
    Metric {
        name: "pipe_rtt",
        unit: "us",
        desc: "round trip parent -> child -> parent over a duplex pipe",
        run: pipe_rtt,
    },
    // ---- pools and executors
    Metric {
        name: "pool_map_default",
        unit: "tasks/s",
        desc: "Pool(2).map(ident, 0..N), default chunksize",
        run: pool_map_default,
    },
    Metric {
        name: "pool_map_c1",
        unit: "tasks/s",
        desc: "Pool(2).with_chunksize(1).map(ident, 0..N)",
        run: pool_map_c1,
    },
    Metric {
        name: "pool_imap_unordered_c1",
        unit: "tasks/s",
        desc: "Pool(2).with_chunksize(1).imap_unordered(ident, 0..N), all consumed",
        run: pool_imap_unordered_c1,
    },
    Metric {
        name: "pool_apply_async",
        unit: "tasks/s",
        desc: "Pool(2): N apply_async(ident, i), then get() them all",
        run: pool_apply_async,
    },
    Metric {
        name: "ppe_submit",
        unit: "tasks/s",
        desc: "ProcessPoolExecutor(2): N submit(ident, i), then result() them all",
        run: ppe_submit,
    },
    Metric {
        name: "tpe_submit",
        unit: "tasks/s",
        desc: "ThreadPoolExecutor(2): N submit(ident, i), then result() them all",
        run: tpe_submit,
    },
    Metric {
        name: "cpu_speedup",
        unit: "x",
        desc: "8 CPU-bound items: sequential time / Pool(2).with_chunksize(1).map time, best of 3 each",
        run: cpu_speedup,
    },
    // ---- shared state and locks
    Metric {
        name: "value_lock_incr",
        unit: "incr/s",
        desc: "2 processes each increment one Value<i32> M times under its lock()",
        run: value_lock_incr,
    },
    Metric {
        name: "lock_uncontended",
        unit: "pairs/s",
        desc: "sync::Lock lock()+unlock (guard dropped) pairs in one process",
        run: lock_uncontended,
    },
    Metric {
        name: "lock_contended",
        unit: "pairs/s",
        desc: "2 processes lock()+unlock the same sync::Lock; total pairs/s",
        run: lock_contended,
    },
    Metric {
        name: "shm_1m_write",
        unit: "MB/s",
        desc: "SharedMemory: a child writes 64 MiB in 1 MiB write()s, the parent checks a checksum",
        run: shm_1m_write,
    },
    // ---- managers
    Metric {
        name: "manager_dict_set",
        unit: "ops/s",
        desc: "Manager::start(), dict::<u64, u64>(): d.set(i, i) from the parent",
        run: manager_dict_set,
    },
    Metric {
        name: "manager_dict_get",
        unit: "ops/s",
        desc: "Manager::start(), dict_from of 100 items: d.get(&(i % 100)) from the parent",
        run: manager_dict_get,
    },
    // ---- subprocess
    Metric {
        name: "subprocess_run_true",
        unit: "ms",
        desc: "subprocess::run([\"true\"]).check().output()",
        run: subprocess_run_true,
    },
    // ---- cluster (feature `cluster`; skipped without a NATS server)
    #[cfg(feature = "cluster")]
    Metric {
        name: "cluster_submit",
        unit: "tasks/s",
        desc: "ClusterExecutor::map(inc, 0..N) on NATS JetStream, 2 local workers of 1 process",
        run: crate::cluster::cluster_submit,
    },
    #[cfg(feature = "cluster")]
    Metric {
        name: "cluster_rtt",
        unit: "ms",
        desc: "ClusterExecutor::submit(inc, i).result(), one at a time, 2 local workers",
        run: crate::cluster::cluster_rtt,
    },
];

/// The start of a metric's error that means "not run here" (no server, say): the bench
/// prints no line for it and does not count it as failed.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) const SKIPPED: &str = "skipped";

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

/// pybench's `pipe_produce`: waits for the parent's go (the start barrier), then sends
/// `count` payloads and the `None` sentinel.
fn pipe_produce<T: Serialize>(args: (Sender<Option<T>>, Receiver<()>, u64, T)) {
    let (tx, go, count, payload) = args;
    go.recv().expect("pipe_produce: go");
    let msg = Some(payload);
    for _ in 0..count {
        tx.send(&msg).expect("pipe_produce: send");
    }
    tx.send(&None).expect("pipe_produce: send sentinel");
}

/// pybench's `produce` for queues: waits for the parent's go (the start barrier), then
/// puts `count` payloads and the `None` sentinel.
fn queue_produce<T: Serialize + DeserializeOwned>(args: (Queue<Option<T>>, Queue<()>, u64, T)) {
    let (q, go, count, payload) = args;
    go.get().expect("queue_produce: go");
    let msg = Some(payload);
    for _ in 0..count {
        q.put_ref(&msg).expect("queue_produce: put");
    }
    q.put(None).expect("queue_produce: put sentinel");
}

/// pybench's `queue_echo`: puts back every item until the `None` sentinel.
fn queue_echo(args: (Queue<Option<u64>>, Queue<Option<u64>>)) {
    let (inq, outq) = args;
    while let Some(x) = inq.get().expect("queue_echo: get") {
        outq.put(Some(x)).expect("queue_echo: put");
    }
}

/// pybench's `pipe_echo`: sends back every message until the `None` sentinel.
fn pipe_echo(conn: Connection<Option<u64>>) {
    while let Some(x) = conn.recv().expect("pipe_echo: recv") {
        conn.send(&Some(x)).expect("pipe_echo: send");
    }
}

/// A task that [`gated`] children run between the two barriers: pybench's `fn, *args`
/// of `between_barriers(barrier, fn, *args)`, named by a type (a function pointer cannot
/// travel to a spawn or forkserver child inside the arguments).
trait Gated: Sized {
    /// pybench's name of the task function, for error messages.
    const NAME: &'static str;
    /// pybench's `*args`.
    type Args: Serialize + DeserializeOwned + Clone + Send + 'static;
    /// What the child does before the start barrier.
    fn ready(args: Self::Args) -> Result<Self, String>;
    /// The timed work.
    fn run(self) -> Result<(), String>;
}

/// pybench's `between_barriers`: gets ready, meets the parent at the start barrier,
/// runs the task, meets it again. A failing task breaks the barrier, so that the parent
/// stops waiting, and its error comes back as the child's result.
fn between_barriers<G: Gated>(args: (Barrier, G::Args)) -> Result<(), String> {
    let (barrier, args) = args;
    let task = G::ready(args).inspect_err(|_| barrier.abort())?;
    barrier
        .wait()
        .map_err(|e| format!("{}: start barrier: {e}", G::NAME))?;
    if let Err(e) = task.run() {
        barrier.abort();
        return Err(format!("{}: {e}", G::NAME));
    }
    barrier
        .wait()
        .map_err(|e| format!("{}: closing barrier: {e}", G::NAME))?;
    Ok(())
}

/// pybench's `locked_incr`: increments the value `count` times, each under its lock.
struct LockedIncr {
    value: Value<i32>,
    count: u64,
}

impl Gated for LockedIncr {
    const NAME: &'static str = "locked_incr";
    type Args = (Value<i32>, u64);
    fn ready((value, count): Self::Args) -> Result<Self, String> {
        Ok(LockedIncr { value, count })
    }
    fn run(self) -> Result<(), String> {
        for _ in 0..self.count {
            *self.value.lock().map_err(|e| format!("lock: {e}"))? += 1;
        }
        Ok(())
    }
}

/// pybench's `hammer`: `count` lock+unlock pairs.
fn hammer(lock: &Lock, count: u64) -> Result<(), String> {
    for _ in 0..count {
        drop(lock.lock().map_err(|e| format!("lock: {e}"))?);
    }
    Ok(())
}

/// [`hammer`] as a gated task.
struct Hammer {
    lock: Lock,
    count: u64,
}

impl Gated for Hammer {
    const NAME: &'static str = "hammer";
    type Args = (Lock, u64);
    fn ready((lock, count): Self::Args) -> Result<Self, String> {
        Ok(Hammer { lock, count })
    }
    fn run(self) -> Result<(), String> {
        hammer(&self.lock, self.count)
    }
}

/// pybench's `shm_pattern`: the bytes 0 to 255 over and over, `chunk` bytes (rounded
/// down to a multiple of 256).
fn shm_pattern(chunk: usize) -> Vec<u8> {
    (0..=255u8).cycle().take(chunk / 256 * 256).collect()
}

/// pybench's `shm_write`: writes the pattern over the first `size` bytes, one `chunk`
/// at a time; the pattern is made before the start barrier.
struct ShmWrite {
    shm: SharedMemory,
    size: usize,
    block: Vec<u8>,
}

impl Gated for ShmWrite {
    const NAME: &'static str = "shm_write";
    /// The segment, `size`, `chunk`.
    type Args = (SharedMemory, usize, usize);
    fn ready((shm, size, chunk): Self::Args) -> Result<Self, String> {
        check(chunk > 0 && size % chunk == 0 && size <= shm.len(), || {
            format!("{size} bytes in chunks of {chunk} into {} bytes", shm.len())
        })?;
        Ok(ShmWrite {
            shm,
            size,
            block: shm_pattern(chunk),
        })
    }
    fn run(self) -> Result<(), String> {
        for off in (0..self.size).step_by(self.block.len()) {
            self.shm.write(off, &self.block);
        }
        Ok(())
    }
}

/// zlib's CRC-32 of `bytes`, continuing from `crc` (pybench's `zlib.crc32(bytes, crc)`).
fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut bit = 0;
            while bit < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                bit += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !crc;
    for &b in bytes {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

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

// ---- queues and pipes --------------------------------------------------------------

/// Receives until the `None` sentinel; checks that `count` items came before it
/// (pybench's `receive_all`).
fn receive_all<T: DeserializeOwned>(rx: &Receiver<Option<T>>, count: u64) -> Result<(), String> {
    let mut got = 0u64;
    while rx.recv().map_err(|e| format!("recv: {e}"))?.is_some() {
        got += 1;
    }
    check(got == count, || {
        format!("received {got} of {count} messages")
    })
}

/// Seconds for a ready child to send `count` payloads and a sentinel through a one-way
/// pipe and for the parent to receive them all (pybench's `pipe_stream`).
fn pipe_stream<T>(c: &Ctx, count: u64, payload: T) -> Result<f64, String>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let (rx, tx) = pipe_simplex::<Option<T>>().map_err(|e| format!("pipe: {e}"))?;
    let (go_rx, go_tx) = pipe_simplex::<()>().map_err(|e| format!("pipe: {e}"))?;
    let mut p = start_child(c.method, pipe_produce::<T>, (tx, go_rx, count, payload))?;
    // The start barrier: the clock starts when the child is told to go.
    go_tx.send(&()).map_err(|e| format!("send go: {e}"))?;
    let (seconds, received) = clock(|| receive_all(&rx, count));
    received?;
    join_ok(&mut p, "pipe_produce")?;
    Ok(seconds)
}

fn pipe_small_msgs(c: &Ctx) -> Result<f64, String> {
    let k = c.n(200_000);
    Ok(rate(k as f64, pipe_stream(c, k, 7u64)?))
}

fn pipe_1m_bw(c: &Ctx) -> Result<f64, String> {
    let k = c.n(300);
    let seconds = pipe_stream(c, k, ByteBuf::from(vec![b'x'; MIB]))?;
    Ok(rate(k as f64 * MIB as f64 / 1e6, seconds))
}

/// Seconds for a ready child to put `count` payloads and a sentinel on a Queue and for
/// the parent to get them all (pybench's `queue_stream`).
fn queue_stream<T>(c: &Ctx, count: u64, payload: T) -> Result<f64, String>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let q = Queue::<Option<T>>::new().map_err(|e| format!("queue: {e}"))?;
    let go = Queue::<()>::new().map_err(|e| format!("queue: {e}"))?;
    let mut p = start_child(
        c.method,
        queue_produce::<T>,
        (q.clone(), go.clone(), count, payload),
    )?;
    go.put(()).map_err(|e| format!("put go: {e}"))?;
    let (seconds, received) = clock(|| {
        let mut got = 0u64;
        while q.get().map_err(|e| format!("get: {e}"))?.is_some() {
            got += 1;
        }
        check(got == count, || {
            format!("received {got} of {count} messages")
        })
    });
    received?;
    join_ok(&mut p, "queue_produce")?;
    Ok(seconds)
}

fn queue_small_msgs(c: &Ctx) -> Result<f64, String> {
    let k = c.n(100_000);
    Ok(rate(k as f64, queue_stream(c, k, 7u64)?))
}

fn queue_1k_msgs(c: &Ctx) -> Result<f64, String> {
    let k = c.n(50_000);
    Ok(rate(
        k as f64,
        queue_stream(c, k, ByteBuf::from(vec![b'x'; 1024]))?,
    ))
}

fn queue_1m_bw(c: &Ctx) -> Result<f64, String> {
    let k = c.n(200);
    let seconds = queue_stream(c, k, ByteBuf::from(vec![b'x'; MIB]))?;
    Ok(rate(k as f64 * MIB as f64 / 1e6, seconds))
}

fn queue_rtt(c: &Ctx) -> Result<f64, String> {
    let k = c.n(5000);
    let inq = Queue::<Option<u64>>::new().map_err(|e| format!("queue: {e}"))?;
    let outq = Queue::<Option<u64>>::new().map_err(|e| format!("queue: {e}"))?;
    let mut p = start_child(c.method, queue_echo, (inq.clone(), outq.clone()))?;
    let trip = |x: u64| -> Result<Option<u64>, String> {
        inq.put(Some(x)).map_err(|e| format!("put: {e}"))?;
        outq.get().map_err(|e| format!("get: {e}"))
    };
    check(trip(u64::MAX)? == Some(u64::MAX), || "warm-up echo".into())?;
    let t0 = Instant::now();
    for i in 0..k {
        let echo = trip(i)?;
        check(echo == Some(i), || format!("echo of {i}"))?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    inq.put(None).map_err(|e| format!("put sentinel: {e}"))?;
    join_ok(&mut p, "queue_echo")?;
    Ok(per_op(seconds, k, "us"))
}

/// Seconds for `count` round trips to an echo child, after one untimed trip
/// (pybench's `ping_pong`).
fn ping_pong(conn: &Connection<Option<u64>>, count: u64) -> Result<f64, String> {
    let trip = |x: u64| -> Result<Option<u64>, String> {
        conn.send(&Some(x)).map_err(|e| format!("send: {e}"))?;
        conn.recv().map_err(|e| format!("recv: {e}"))
    };
    check(trip(u64::MAX)? == Some(u64::MAX), || "warm-up echo".into())?;
    let t0 = Instant::now();
    for i in 0..count {
        let echo = trip(i)?;
        check(echo == Some(i), || format!("echo of {i}"))?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn pipe_rtt(c: &Ctx) -> Result<f64, String> {
    let k = c.n(10_000);
    let (here, there) = pipe::<Option<u64>>().map_err(|e| format!("pipe: {e}"))?;
    let mut p = start_child(c.method, pipe_echo, there)?;
    let seconds = ping_pong(&here, k)?;
    here.send(&None)
        .map_err(|e| format!("send sentinel: {e}"))?;
    join_ok(&mut p, "pipe_echo")?;
    Ok(per_op(seconds, k, "us"))
}

// ---- shared state and locks --------------------------------------------------------

/// Seconds from a start [`Barrier`] to a closing one, met by `procs` children that run
/// the task `G` with `args` in between (pybench's `gated`); the children are then joined
/// and must have succeeded.
fn gated<G: Gated>(c: &Ctx, args: G::Args, procs: u16) -> Result<f64, String> {
    let barrier = Barrier::new(procs + 1).map_err(|e| format!("barrier: {e}"))?;
    let mut children = (0..procs)
        .map(|_| {
            start_child(
                c.method,
                between_barriers::<G>,
                (barrier.clone(), args.clone()),
            )
        })
        .collect::<Result<Vec<_>, String>>()?;
    let met = |which: &str| {
        barrier
            .wait()
            .map(drop)
            .map_err(|e| format!("{which} barrier: {e}"))
    };
    let timed = met("start").and_then(|()| {
        let (seconds, closed) = clock(|| met("closing"));
        closed.map(|()| seconds)
    });
    // The children's own errors say more than a broken barrier: join them all first.
    let errors: Vec<String> = children
        .iter_mut()
        .filter_map(|p| join_ok(p, G::NAME).and_then(|done| done).err())
        .collect();
    if errors.is_empty() {
        timed
    } else {
        Err(errors.join("; "))
    }
}

fn value_lock_incr(c: &Ctx) -> Result<f64, String> {
    let k = c.n(200_000);
    let v = Value::new(0i32).map_err(|e| format!("value: {e}"))?;
    let seconds = gated::<LockedIncr>(c, (v.clone(), k), 2)?;
    let got = v.get();
    check(i64::from(got) == 2 * k as i64, || {
        format!("value {got}, expected {}", 2 * k)
    })?;
    Ok(rate(2.0 * k as f64, seconds))
}

fn lock_uncontended(c: &Ctx) -> Result<f64, String> {
    let k = c.n(2_000_000);
    let lock = Lock::new().map_err(|e| format!("lock: {e}"))?;
    let (seconds, done) = clock(|| hammer(&lock, k));
    done?;
    Ok(rate(k as f64, seconds))
}

fn lock_contended(c: &Ctx) -> Result<f64, String> {
    let k = c.n(500_000);
    let lock = Lock::new().map_err(|e| format!("lock: {e}"))?;
    Ok(rate(2.0 * k as f64, gated::<Hammer>(c, (lock, k), 2)?))
}

fn shm_1m_write(c: &Ctx) -> Result<f64, String> {
    let (size, chunk) = (c.n(64) as usize * MIB, MIB);
    let shm = SharedMemory::new(size).map_err(|e| format!("shared memory: {e}"))?;
    let zeros = vec![0u8; chunk];
    for off in (0..size).step_by(chunk) {
        // The pages exist before the timed write.
        shm.write(off, &zeros);
    }
    let seconds = gated::<ShmWrite>(c, (shm.clone(), size, chunk), 1)?;
    let block = shm_pattern(chunk);
    let (mut expected, mut got) = (0, 0);
    let mut buf = vec![0u8; chunk];
    for off in (0..size).step_by(chunk) {
        expected = crc32(expected, &block);
        shm.read(off, &mut buf);
        got = crc32(got, &buf);
    }
    check(got == expected, || "checksum of the written segment".into())?;
    Ok(rate(size as f64 / 1e6, seconds))
}

// ---- pools and executors -----------------------------------------------------------

fn ident(x: u64) -> u64 {
    x
}

fn pid_after(delay: std::time::Duration) -> u32 {
    std::thread::sleep(delay);
    std::process::id()
}

/// pybench's `cpu_work`.
fn cpu_work(k: u64) -> u64 {
    let mut s = 0u64;
    for i in 0..std::hint::black_box(k) {
        s = (s * 31 + i) % 1_000_003;
    }
    s
}

/// pybench's `warm`: `map_pids` maps `pid_after(5 ms)` over two items, until both
/// workers have run one.
fn warm(mut map_pids: impl FnMut() -> Result<Vec<u32>, String>) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 2 {
        seen.extend(map_pids()?);
    }
    Ok(())
}

/// [`warm`] for a [`multiproc::pool::Pool`].
fn warm_pool(pool: &multiproc::pool::Pool) -> Result<(), String> {
    warm(|| {
        pool.with_chunksize(1)
            .map(pid_after, [std::time::Duration::from_millis(5); 2])
            .map_err(|e| e.to_string())
    })
}

/// pybench's `pool_rate`: tasks/s of `run` on a warmed `Pool(2)`; `run` returns
/// `ident(i)` for `i < count`, in order unless `ordered` is false.
fn pool_rate(
    c: &Ctx,
    count: u64,
    ordered: bool,
    run: impl FnOnce(&multiproc::pool::Pool) -> Result<Vec<u64>, String>,
) -> Result<f64, String> {
    let pool = multiproc::pool::Pool::builder()
        .processes(2)
        .start_method(c.method)
        .build()
        .map_err(|e| e.to_string())?;
    warm_pool(&pool)?;
    let (seconds, result) = clock(|| run(&pool));
    let mut result = result?;
    if !ordered {
        result.sort_unstable();
    }
    check(result.iter().copied().eq(0..count), || {
        "pool results".into()
    })?;
    pool.close();
    pool.join().map_err(|e| e.to_string())?;
    Ok(rate(count as f64, seconds))
}

fn pool_map_default(c: &Ctx) -> Result<f64, String> {
    let k = c.n(1_000_000);
    pool_rate(c, k, true, |pool| {
        pool.map(ident, 0..k).map_err(|e| e.to_string())
    })
}

fn pool_map_c1(c: &Ctx) -> Result<f64, String> {
    let k = c.n(50_000);
    pool_rate(c, k, true, |pool| {
        pool.with_chunksize(1)
            .map(ident, 0..k)
            .map_err(|e| e.to_string())
    })
}

fn pool_imap_unordered_c1(c: &Ctx) -> Result<f64, String> {
    let k = c.n(50_000);
    pool_rate(c, k, false, |pool| {
        pool.with_chunksize(1)
            .imap_unordered(ident, 0..k)
            .map_err(|e| e.to_string())?
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    })
}

fn pool_apply_async(c: &Ctx) -> Result<f64, String> {
    let k = c.n(30_000);
    pool_rate(c, k, true, |pool| {
        let pending = (0..k)
            .map(|i| pool.apply_async(ident, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        pending
            .iter()
            .map(|r| r.get().map_err(|e| e.to_string()))
            .collect()
    })
}

/// pybench's `ppe_submit`: warmed `ProcessPoolExecutor(2)`, then `submit_all`.
fn ppe_submit(c: &Ctx) -> Result<f64, String> {
    use multiproc::executor::ProcessPoolExecutor;
    let k = c.n(10_000);
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .start_method(c.method)
        .build()
        .map_err(|e| e.to_string())?;
    warm(|| {
        ex.map(pid_after, [std::time::Duration::from_millis(5); 2])
            .map_err(|e| e.to_string())?
            .map(|pid| pid.map_err(|e| e.to_string()))
            .collect()
    })?;
    submit_all(&ex, k)
}

/// pybench's `cpu_speedup`: best of 3 sequential runs over best of 3 pool maps, in
/// alternation.
fn cpu_speedup(c: &Ctx) -> Result<f64, String> {
    let work = [c.n(200_000); 8];
    let sequential = || work.iter().map(|&w| cpu_work(w)).collect::<Vec<u64>>();
    let expected = sequential();
    let pool = multiproc::pool::Pool::builder()
        .processes(2)
        .start_method(c.method)
        .build()
        .map_err(|e| e.to_string())?;
    warm_pool(&pool)?;
    let (mut seq, mut par) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let (s, got) = clock(sequential);
        check(got == expected, || "sequential results".into())?;
        seq = seq.min(s);
        let (p, got) = clock(|| pool.with_chunksize(1).map(cpu_work, work.iter().copied()));
        check(got.map_err(|e| e.to_string())? == expected, || {
            "pool results".into()
        })?;
        par = par.min(p);
    }
    pool.close();
    pool.join().map_err(|e| e.to_string())?;
    Ok(seq / par)
}

/// pybench's `tpe_submit`: both threads started first, then `submit_all`.
fn tpe_submit(c: &Ctx) -> Result<f64, String> {
    use multiproc::executor::ThreadPoolExecutor;
    let k = c.n(100_000);
    let ex = ThreadPoolExecutor::new(2);
    // Both threads started (pybench maps a short sleep over two items).
    let _ = ex
        .map(
            |_: u32| std::thread::sleep(std::time::Duration::from_millis(5)),
            0..2,
        )
        .map_err(|e| e.to_string())?
        .count();
    // `submit(move || ident(i))`: the closure names `ident` statically, as Python's
    // `submit(ident, i)` does, instead of carrying a function pointer with each task
    // (which the generic `submit_all` does through the `Executor` trait).
    let (seconds, result) = clock(|| -> Result<Vec<u64>, String> {
        let futures = (0..k)
            .map(|i| ex.submit(move || ident(i)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        futures
            .into_iter()
            .map(|f| f.result().map_err(|e| e.to_string()))
            .collect()
    });
    let result = result?;
    check(result.iter().copied().eq(0..k), || "results".into())?;
    Ok(rate(k as f64, seconds))
}

/// pybench's `submit_all`: submit `ident(i)` for i < k, then `result()` them all, in
/// order; tasks/s.
fn submit_all(ex: &impl multiproc::executor::Executor, k: u64) -> Result<f64, String> {
    let (seconds, result) = clock(|| -> Result<Vec<u64>, String> {
        let futures = (0..k)
            .map(|i| ex.submit(ident, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        futures
            .into_iter()
            .map(|f| f.result().map_err(|e| e.to_string()))
            .collect()
    });
    let result = result?;
    check(result.iter().copied().eq(0..k), || "results".into())?;
    Ok(rate(k as f64, seconds))
}

// ---- managers ----------------------------------------------------------------------

/// pybench's `with CTX.Manager() as m:` (the manager is shut down when dropped).
fn start_manager(c: &Ctx) -> Result<multiproc::manager::Manager, String> {
    multiproc::manager::Manager::builder()
        .start_method(c.method)
        .start()
        .map_err(|e| format!("manager: {e}"))
}

/// pybench's `manager_dict_set`: `d[i] = i` for i < k, one request each.
fn manager_dict_set(c: &Ctx) -> Result<f64, String> {
    let k = c.n(20_000);
    let m = start_manager(c)?;
    let d = m.dict::<u64, u64>().map_err(|e| e.to_string())?;
    let (seconds, result) = clock(|| (0..k).try_for_each(|i| d.set(i, i)));
    result.map_err(|e| format!("set: {e}"))?;
    let len = d.len().map_err(|e| e.to_string())?;
    check(len as u64 == k, || format!("dict size {len}, expected {k}"))?;
    Ok(rate(k as f64, seconds))
}

/// pybench's `manager_dict_get`: `total += d[i % 100]` for i < k, one request each.
fn manager_dict_get(c: &Ctx) -> Result<f64, String> {
    let k = c.n(20_000);
    let m = start_manager(c)?;
    let d = m
        .dict_from((0..100u64).map(|i| (i, i)))
        .map_err(|e| e.to_string())?;
    let (seconds, total) = clock(|| {
        (0..k).try_fold(0u64, |total, i| {
            Ok::<_, String>(
                total
                    + d.get(&(i % 100))
                        .map_err(|e| format!("get: {e}"))?
                        .ok_or("missing key")?,
            )
        })
    });
    let total = total?;
    let expected: u64 = (0..k).map(|i| i % 100).sum();
    check(total == expected, || {
        format!("sum {total}, expected {expected}")
    })?;
    Ok(rate(k as f64, seconds))
}

// ---- subprocess ---------------------------------------------------------------------

/// pybench's `subprocess_run_true`: `run(['true'], check=True)`, k times in a row.
fn subprocess_run_true(c: &Ctx) -> Result<f64, String> {
    let k = c.n(500);
    let (seconds, ran) = clock(|| {
        for _ in 0..k {
            multiproc::subprocess::run(["true"])
                .check()
                .output()
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    });
    ran?;
    Ok(per_op(seconds, k, "ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xCBF4_3926);
        assert_eq!(crc32(0, b""), 0);
    }

    #[test]
    fn shm_pattern_is_pybenchs() {
        let p = shm_pattern(MIB);
        assert_eq!(p.len(), MIB);
        assert!(p.iter().enumerate().all(|(i, &b)| b == i as u8));
    }
}
