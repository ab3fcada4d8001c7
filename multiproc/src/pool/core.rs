//! The engine under [`Pool`](super::Pool) and
//! [`ProcessPoolExecutor`](crate::executor::ProcessPoolExecutor).
//!
//! * **Dispatch.** The parent keeps every task until it is done. It sends a task to one
//!   worker's own queue, so at any time it knows which tasks each worker holds; the
//!   worker's slot says which of them it is running. Submitting threads dispatch
//!   directly while a worker has room; the rest wait in `pending` and the collector
//!   sends them as replies come back.
//! * **How many tasks a worker holds.** One while tasks are long (so a task goes to the
//!   first worker to become free, as with Python's shared queue, S6); more when they are
//!   short, enough to cover about 5 ms of work, up to 256, so that a worker
//!   never waits for the parent between tiny tasks.
//! * **The collector** (one thread) takes replies from the shared reply queue and
//!   completes the tasks outside its lock. Every few milliseconds, and whenever the
//!   queue is idle, it checks the workers: a dead worker's replies are all in the queue
//!   before its death can be seen, so after draining the queue the task the slot names
//!   is the one that was running: it alone fails ([`TaskError::WorkerDied`], or
//!   [`TaskError::TimedOut`] / `Cancelled` when the pool killed the worker), the
//!   tasks queued behind it go back to `pending`, and a replacement starts.
//! * **A chunk keeps its finished items.** A chunk of a map is one task of many items;
//!   its worker commits each item's result to its ledger in shared memory (sending
//!   them ahead when they outgrow it). When the worker dies, the results of the items
//!   it finished are delivered from there, the item it was running is the one that
//!   fails, and the items after it go back to `pending` as the rest of the task (its
//!   message says how many items to skip). Nothing finished runs again; nothing is
//!   delivered twice: a task's items are delivered in order, each range once, from
//!   the first not yet delivered (`Job::next`).
//! * **Eager or on demand.** A [`Pool`](super::Pool) starts all its workers at once and
//!   replaces a dead one at once, as Python's `Pool`. The executor's engine starts none
//!   at first (CPython ≥ 3.9's `_adjust_process_count`): a worker starts when a task is
//!   dispatched and no worker is idle (holds no task), up to `processes`; a dead one is
//!   reaped and not replaced until a task finds no idle worker again. A worker counts as
//!   idle from the moment the collector takes its last reply, before the task's future
//!   is completed, so a caller that waits for each result before it submits the next
//!   task always finds the same worker idle.
//! * **Shutdown.** `close` + `join`: once nothing is left the collector sends `Stop` to
//!   every worker and reaps them. `terminate`: kill every worker, fail what is left.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::worker::{self, Parts, Reply, Slots, TaskMsg};
use crate::future::TaskError;
use crate::process::child::Outcome;
use crate::process::{Process, StartError, StartMethod};
use crate::queue::mp::{GetError, Queue, QueueBuilder};
use crate::sys::entry::FnAddr;

/// Whatever waits for a task's outcome: a future (one item), or a chunk of a map (its
/// items). The engine delivers each item once: ranges in order, none twice.
pub(crate) trait Sink: Send + Sync {
    /// The task is being sent to a worker; `false` if it was cancelled (drop it).
    fn start(&self) -> bool;
    /// Items `items` ran. A single task: `0..1` and its one outcome. A chunk: one
    /// outcome holding their results (the body of a `Vec<Item<R>>`), or one failure
    /// that is theirs all.
    fn complete(&self, items: Range<usize>, outcomes: Vec<Outcome>);
    /// Items `items` did not run, or failed with `error` (their worker died).
    fn fail(&self, items: Range<usize>, error: TaskError);
    /// A shutdown with `cancel_futures` drops items `items` before they started.
    fn cancel(&self, items: Range<usize>);
    /// Whether the task is still wanted: a task sent to a worker that died before it
    /// began, and cancelled since, is not sent again.
    fn wanted(&self) -> bool {
        true
    }
    /// How many items the task has.
    fn len(&self) -> usize {
        1
    }
    /// Which call the task belongs to (the chunks of one map share it; 0: none), for
    /// [`stop_group`].
    fn group(&self) -> usize {
        0
    }
}

/// Starts one worker process (the initializer's type is inside).
pub(crate) type Spawner = Arc<
    dyn Fn(crate::process::ProcessBuilder, Parts) -> Result<Process<()>, StartError> + Send + Sync,
>;

/// How a pool is set up.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: Option<StartMethod>,
    pub(crate) spawner: Spawner,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) max_memory: Option<u64>,
    pub(crate) timeout: Option<Duration>,
    /// Worker names are `<prefix>-<n>`.
    pub(crate) prefix: &'static str,
    /// Workers start when tasks need them (the executor), not all at once (the pool).
    pub(crate) on_demand: bool,
    /// A worker's death breaks the pool (CPython's and loky's way), instead of failing
    /// the one task it ran.
    pub(crate) fail_fast: bool,
    /// A worker idle this long is stopped (loky's `idle_worker_timeout`; on demand).
    pub(crate) idle_timeout: Option<Duration>,
}

/// Why a task could not be submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    Closed,
    Broken(String),
}

struct Job {
    id: u64,
    msg: TaskMsg,
    timeout: Option<Duration>,
    sink: Arc<dyn Sink>,
    /// `sink.start()` returned true once: a job sent again after a worker died does
    /// not ask again.
    started: bool,
    /// How many workers ended while holding it without having run it to the end (see
    /// [`MAX_REQUEUES`]).
    requeues: u32,
    /// Its items (1 but for a chunk), and the first not yet delivered: a worker that
    /// died part-way through a chunk leaves the rest to run (`TaskMsg::Run::skip`).
    len: usize,
    next: usize,
    /// `next` when it was last sent to a worker: whether a worker that died in it had
    /// got further.
    sent_from: usize,
}

impl Job {
    /// The items not yet delivered.
    fn rest(&self) -> Range<usize> {
        self.next..self.len
    }

    /// The rest of the task, from item `next`, is what the next worker runs.
    fn skip_done(&mut self) {
        if let TaskMsg::Run { skip, .. } = &mut self.msg {
            *skip = self.next as u64;
        }
    }
}

/// A task whose workers ended this many times in a row while they held it (before it
/// started, or killed for another task) fails instead of going round for ever.
const MAX_REQUEUES: u32 = 3;

struct Worker {
    generation: u32,
    process: Option<Process<()>>,
    tasks: Queue<TaskMsg>,
    /// Sent to this worker, not yet replied, in the order it runs them.
    sent: VecDeque<Job>,
    /// Tasks sent to this worker in its life (for `max_tasks`).
    dispatched: usize,
    /// `Stop` was sent: no more tasks go to it.
    stopping: bool,
    /// The pool killed it because of this task, which fails with this error.
    verdict: Option<(u64, TaskError)>,
    /// The pool killed it (a verdict may have been cleared since by the task's reply:
    /// then the task it died in was not the one meant).
    killed: bool,
    /// When it was last seen holding a task (for `idle_timeout`).
    last_busy: Instant,
}

struct State {
    workers: Vec<Worker>,
    pending: VecDeque<Job>,
    /// Tasks submitted and not yet completed.
    in_flight: usize,
    closed: bool,
    terminated: bool,
    broken: Option<String>,
    /// What the tasks of a broken pool failed with.
    broken_error: Option<TaskError>,
    /// The collector has reaped every worker and ended.
    done: bool,
    /// Moving average of how long a task runs, in nanoseconds.
    avg_busy_ns: f64,
    /// How many tasks a worker may hold (see the module documentation).
    window: usize,
    spawned: u64,
}

/// What the pool's handle, its collector thread and its futures share: the engine's
/// state, the reply queue, the workers' slots.
pub(crate) struct Engine {
    state: Mutex<State>,
    changed: Condvar,
    replies: Queue<Reply>,
    slots: Slots,
    config: Config,
    exe: (u64, u64),
    next_id: AtomicU64,
    /// The collector's thread: completions (and so user callbacks) run on it, and a
    /// callback that shuts the pool down must not wait for it.
    collector: std::sync::OnceLock<std::thread::ThreadId>,
}

/// A running pool: the shared state and the collector thread.
pub(crate) struct Core {
    shared: Arc<Engine>,
    collector: Mutex<Option<JoinHandle<()>>>,
}

const MAX_WINDOW: usize = 256;
/// Work a worker should have queued, in nanoseconds: enough that a worker never waits
/// for the parent between short tasks (a round trip through two wake-ups), small enough
/// that the end of a map is not unbalanced by more than this.
const AHEAD_NS: f64 = 5_000_000.0;
/// How often the collector checks the workers while tasks are out.
const BUSY_TICK: Duration = Duration::from_millis(10);
/// ... and while the pool is idle.
const IDLE_TICK: Duration = Duration::from_millis(100);

impl Core {
    /// Starts the collector, and the workers unless they start on demand.
    /// `config.processes` is at least 1 (the builders check it).
    pub(crate) fn start(config: Config) -> Result<Core, StartError> {
        let n = config.processes;
        let eager = if config.on_demand { 0 } else { n };
        let method = config
            .method
            .unwrap_or_else(crate::process::get_start_method);
        if method != StartMethod::Fork && !crate::process::runtime::initialised() {
            // What the first worker's start would say, said at once even when workers
            // start on demand.
            return Err(StartError::NotInitialized);
        }
        let replies = QueueBuilder::new()
            .lanes((n + 2).min(4096))
            .build::<Reply>()?;
        let slots = Slots::new(n)?;
        let shared = Arc::new(Engine {
            state: Mutex::new(State {
                workers: Vec::with_capacity(n),
                pending: VecDeque::new(),
                in_flight: 0,
                closed: false,
                terminated: false,
                broken: None,
                broken_error: None,
                done: false,
                avg_busy_ns: f64::INFINITY,
                window: 1,
                spawned: 0,
            }),
            changed: Condvar::new(),
            replies,
            slots,
            exe: crate::sys::proc::exe_identity()?,
            config,
            next_id: AtomicU64::new(1),
            collector: std::sync::OnceLock::new(),
        });
        {
            let mut st = shared.state.lock();
            for index in 0..eager {
                match shared.spawn(&mut st, index, 0) {
                    Ok(w) => st.workers.push(w),
                    Err(e) => {
                        // Python's issue #19675: a failed start leaves nothing behind.
                        for w in &mut st.workers {
                            if let Some(mut p) = w.process.take() {
                                let _ = p.kill();
                                let _ = p.wait();
                            }
                        }
                        return Err(e);
                    }
                }
            }
        }
        let for_thread = Arc::clone(&shared);
        let collector = std::thread::Builder::new()
            .name("multiproc-pool-collector".into())
            .spawn(move || {
                let shared = &*for_thread;
                let _ = shared.collector.set(std::thread::current().id());
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| collect(shared)))
                    .is_err()
                {
                    // A bug in the collector must not leave callers waiting for ever.
                    let mut finished = Vec::new();
                    let processes = {
                        let mut st = shared.state.lock();
                        shared.break_pool(
                            &mut st,
                            "the pool's collector failed".into(),
                            &mut finished,
                        );
                        st.terminated = true;
                        shared.stop_workers(&mut st).unwrap_or_default()
                    };
                    finish_all(finished);
                    shared.finish_wind_down(processes);
                }
            })
            .map_err(StartError::Io)?;
        Ok(Core {
            shared,
            collector: Mutex::new(Some(collector)),
        })
    }

    /// A fresh task id.
    pub(crate) fn next_id(&self) -> u64 {
        self.shared.next_id()
    }

    pub(crate) fn weak(&self) -> Weak<Engine> {
        Arc::downgrade(&self.shared)
    }

    pub(crate) fn processes(&self) -> usize {
        self.shared.config.processes
    }

    /// Queues tasks `(id, entry, target, args, sink)`, sending what fits to workers.
    pub(crate) fn submit(
        &self,
        tasks: impl IntoIterator<Item = (u64, FnAddr, FnAddr, Vec<u8>, Arc<dyn Sink>)>,
        timeout: Option<Duration>,
    ) -> Result<(), Refused> {
        self.shared.submit(tasks, timeout)
    }

    /// Stops taking tasks; with `cancel_pending`, drops those no worker holds yet.
    pub(crate) fn close(&self, cancel_pending: bool) {
        let cancelled: Vec<Job> = {
            let mut st = self.shared.state.lock();
            st.closed = true;
            if cancel_pending {
                let jobs: Vec<Job> = st.pending.drain(..).collect();
                st.in_flight -= jobs.len();
                jobs
            } else {
                Vec::new()
            }
        };
        for job in cancelled {
            job.sink.cancel(job.rest());
        }
        self.shared.wake();
    }

    /// Whether the pool was closed (or terminated): it takes no more tasks.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.state.lock().closed
    }

    /// Waits until every task is done and every worker reaped (after [`Core::close`]).
    pub(crate) fn join(&self) {
        self.close(false);
        if self.shared.on_collector() {
            // Called from a done-callback: the collector finishes the work and reaps
            // the workers once this callback returns; waiting here would wait for
            // ourselves.
            return;
        }
        {
            let mut st = self.shared.state.lock();
            while !st.done {
                self.shared.changed.wait(&mut st);
            }
        }
        if let Some(h) = self.collector.lock().take() {
            let _ = h.join();
        }
    }

    /// Kills every worker and fails every task not done with `Terminated`; returns once
    /// the workers are reaped.
    pub(crate) fn terminate(&self) {
        self.terminate_with(true);
    }

    /// As [`Core::terminate`], stopping the workers with SIGKILL (`hard`) or SIGTERM.
    pub(crate) fn terminate_with(&self, hard: bool) {
        let mut failed = Vec::new();
        {
            let mut st = self.shared.state.lock();
            st.closed = true;
            if !st.terminated {
                st.terminated = true;
                let pending: Vec<Job> = st.pending.drain(..).collect();
                for job in pending {
                    failed.push(job.failed(TaskError::Terminated));
                }
                for w in &mut st.workers {
                    for job in w.sent.drain(..) {
                        failed.push(job.failed(TaskError::Terminated));
                    }
                    if let Some(p) = &w.process {
                        let _ = if hard { p.kill() } else { p.terminate() };
                    }
                }
                st.in_flight = 0;
            }
        }
        finish_all(failed);
        self.shared.wake();
        self.join();
    }

    /// What the tasks of the pool failed with when it broke, if it did.
    pub(crate) fn broken_error(&self) -> Option<TaskError> {
        self.shared.state.lock().broken_error.clone()
    }

    /// As [`Core::join`], waiting at most `timeout`: whether every task is done and
    /// every worker reaped.
    pub(crate) fn join_timeout(&self, timeout: Duration) -> bool {
        self.close(false);
        if self.shared.on_collector() {
            return false;
        }
        let deadline = std::time::Instant::now().checked_add(timeout);
        {
            let mut st = self.shared.state.lock();
            while !st.done {
                match deadline {
                    None => self.shared.changed.wait(&mut st),
                    Some(d) => {
                        if self.shared.changed.wait_until(&mut st, d).timed_out() && !st.done {
                            return false;
                        }
                    }
                }
            }
        }
        if let Some(h) = self.collector.lock().take() {
            let _ = h.join();
        }
        true
    }

    /// The pids of the live workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let st = self.shared.state.lock();
        st.workers
            .iter()
            .filter_map(|w| w.process.as_ref().map(|p| p.pid()))
            .collect()
    }
}

impl Engine {
    /// Starts worker `index` of generation `generation`.
    fn spawn(&self, st: &mut State, index: usize, generation: u32) -> Result<Worker, StartError> {
        let tasks = QueueBuilder::new().lanes(2).build::<TaskMsg>()?;
        self.slots.reset(index);
        st.spawned += 1;
        let mut builder = Process::builder()
            .name(format!("{}-{}", self.config.prefix, st.spawned))
            .daemon(true);
        if let Some(m) = self.config.method {
            builder = builder.start_method(m);
        }
        let parts = Parts {
            index: index as u32,
            generation,
            exe: self.exe,
            tasks: tasks.clone(),
            replies: self.replies.clone(),
            slots: self.slots.clone(),
            max_memory: self.config.max_memory,
        };
        let process = (self.config.spawner)(builder, parts)?;
        Ok(Worker {
            generation,
            process: Some(process),
            tasks,
            sent: VecDeque::new(),
            dispatched: 0,
            stopping: false,
            verdict: None,
            killed: false,
            last_busy: Instant::now(),
        })
    }

    /// Starts a worker in the first vacant place, if fewer than `processes` run and the
    /// pool still needs workers: its index.
    fn start_on_demand(&self, st: &mut State) -> Result<Option<usize>, StartError> {
        let running = st.workers.iter().filter(|w| w.process.is_some()).count();
        if running >= self.config.processes || !Self::keep_workers(st) {
            return Ok(None);
        }
        match st.workers.iter().position(|w| w.process.is_none()) {
            Some(i) => {
                let generation = st.workers[i].generation.wrapping_add(1);
                // A failed start still retires the generation: no reply of the old
                // worker can match the slot again.
                st.workers[i].generation = generation;
                st.workers[i] = self.spawn(st, i, generation)?;
                Ok(Some(i))
            }
            None => {
                let i = st.workers.len();
                let w = self.spawn(st, i, 0)?;
                st.workers.push(w);
                Ok(Some(i))
            }
        }
    }

    /// Wakes the collector (it may be waiting for a reply).
    fn wake(&self) {
        let _ = self.replies.put(Reply::Wake);
    }

    /// Sends pending tasks to workers with room; on demand, starts a worker for a task
    /// that finds none idle.
    fn pump(&self, st: &mut State, failed: &mut Finished) {
        let mut may_start = self.config.on_demand;
        while !st.pending.is_empty() {
            let window = st.window;
            let mut chosen = st
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.process.is_some() && !w.stopping && w.sent.len() < window)
                .min_by_key(|(_, w)| w.sent.len())
                .map(|(i, w)| (i, w.sent.is_empty()));
            if may_start && !chosen.is_some_and(|(_, idle)| idle) {
                match self.start_on_demand(st) {
                    Ok(Some(i)) => chosen = Some((i, true)),
                    Ok(None) => {}
                    // The running workers take the tasks (a later call tries again).
                    Err(_) if st.workers.iter().any(|w| w.process.is_some()) => {
                        may_start = false;
                    }
                    // No worker at all: the tasks would wait for ever.
                    Err(e) => {
                        self.break_pool(st, format!("cannot start a worker: {e}"), failed);
                        return;
                    }
                }
            }
            let Some((w, _)) = chosen else {
                return;
            };
            let mut job = st.pending.pop_front().expect("not empty");
            if !job.started {
                if !job.sink.start() {
                    // Its items are delivered as cancelled: a cancelled map waits for
                    // every item (outside the lock, as every delivery).
                    st.in_flight -= 1;
                    failed.push(job.failed(TaskError::Cancelled));
                    continue;
                }
                job.started = true;
            } else if !job.sink.wanted() {
                st.in_flight -= 1;
                failed.push(job.failed(TaskError::Cancelled));
                continue;
            }
            let worker = &mut st.workers[w];
            if let Err(e) = worker.tasks.put_ref(&job.msg) {
                st.in_flight -= 1;
                failed.push(job.failed(send_failure(e)));
                continue;
            }
            job.sent_from = job.next;
            if self.config.idle_timeout.is_some() {
                worker.last_busy = Instant::now();
            }
            worker.dispatched += 1;
            worker.sent.push_back(job);
            if self
                .config
                .max_tasks
                .is_some_and(|max| worker.dispatched >= max)
            {
                worker.stopping = true;
                let _ = worker.tasks.put(TaskMsg::Stop);
            }
        }
    }

    /// Handles one reply.
    fn on_reply(&self, st: &mut State, reply: Reply, finished: &mut Finished) {
        match reply {
            Reply::Wake => {}
            Reply::Done {
                worker,
                generation,
                id,
                busy_ns,
                first,
                items,
            } => {
                let Some(w) = st.workers.get_mut(worker as usize) else {
                    return;
                };
                if w.generation != generation {
                    return;
                }
                if w.sent.front().is_none_or(|j| j.id != id) {
                    return;
                }
                let mut job = w.sent.pop_front().expect("checked");
                if w.verdict.as_ref().is_some_and(|(v, _)| *v == id) {
                    // Finished just before the pool killed it: the result stands.
                    w.verdict = None;
                }
                st.in_flight -= 1;
                let first = usize::try_from(first).unwrap_or(usize::MAX).min(job.len);
                job.deliver_gap(first, finished);
                if first >= job.next {
                    finished.push((job.sink, Delivery::Ran(first..job.len, items)));
                }
                // A moving average of task length sets how many tasks a worker holds.
                st.avg_busy_ns = average_busy_ns(st.avg_busy_ns, busy_ns);
                st.window = read_ahead(st.avg_busy_ns);
            }
            Reply::Part {
                worker,
                generation,
                id,
                first,
                count,
                results,
            } => {
                let Some(w) = st.workers.get_mut(worker as usize) else {
                    return;
                };
                if w.generation != generation {
                    return;
                }
                let Some(job) = w.sent.front_mut().filter(|j| j.id == id) else {
                    return;
                };
                let first = usize::try_from(first).unwrap_or(usize::MAX).min(job.len);
                let end = first
                    .saturating_add(usize::try_from(count).unwrap_or(usize::MAX))
                    .min(job.len);
                job.deliver_gap(first, finished);
                if first >= job.next && end > first {
                    job.next = end;
                    finished.push((
                        Arc::clone(&job.sink),
                        Delivery::Ran(first..end, vec![Outcome::Returned(results)]),
                    ));
                }
            }
            Reply::InitFailed {
                worker,
                generation,
                message,
            } => {
                let current = st
                    .workers
                    .get(worker as usize)
                    .is_some_and(|w| w.generation == generation);
                if current && st.broken.is_none() {
                    self.break_pool(st, message, finished);
                }
            }
        }
    }

    /// The pool can no longer run tasks: fail every task, stop every worker.
    fn break_pool(&self, st: &mut State, reason: String, finished: &mut Finished) {
        let error = TaskError::Broken {
            reason: reason.clone(),
        };
        self.break_pool_with(st, reason, error, finished);
    }

    /// As [`break_pool`](Self::break_pool), the tasks failing with `error`.
    fn break_pool_with(
        &self,
        st: &mut State,
        reason: String,
        error: TaskError,
        finished: &mut Finished,
    ) {
        st.broken = Some(reason);
        st.broken_error = Some(error.clone());
        for job in st.pending.drain(..) {
            finished.push(job.failed(error.clone()));
        }
        for w in &mut st.workers {
            for job in w.sent.drain(..) {
                finished.push(job.failed(error.clone()));
            }
            if let Some(p) = &w.process {
                let _ = p.kill();
            }
        }
        st.in_flight = 0;
    }

    /// Whether the pool still runs: not terminated, not broken, and not closed with
    /// nothing left. Otherwise its workers are stopped, and none replaces one that ends.
    fn keep_workers(st: &State) -> bool {
        !st.terminated && st.broken.is_none() && !(st.closed && st.in_flight == 0)
    }

    /// Checks every worker for death and timeouts.
    fn check_workers(&self, st: &mut State, finished: &mut Finished) {
        let mut dead = Vec::new();
        for (i, w) in st.workers.iter().enumerate() {
            if let Some(p) = &w.process {
                if !p.is_alive() {
                    dead.push(i);
                }
            }
        }
        if !dead.is_empty() {
            // Everything a dead worker sent is in the queue by now.
            while let Ok(reply) = self.replies.try_get() {
                self.on_reply(st, reply, finished);
            }
            for i in dead {
                self.bury(st, i, finished);
            }
        }
        self.check_timeouts(st);
    }

    /// Reaps dead worker `i`, fails the item it ran (keeping the items of its chunk that
    /// finished), requeues the rest, replaces it.
    fn bury(&self, st: &mut State, i: usize, finished: &mut Finished) {
        let w = &mut st.workers[i];
        let Some(mut process) = w.process.take() else {
            return;
        };
        let pid = process.pid();
        let status = process
            .wait()
            .ok()
            .unwrap_or_else(|| crate::process::ExitStatus::from_raw((None, Some(libc::SIGKILL))));
        // Status 0: the worker retired by itself (`max_memory`), between tasks.
        if self.config.fail_fast
            && !status.success()
            && !w.killed
            && !w.stopping
            && !st.terminated
            && st.broken.is_none()
        {
            // Fail-fast: a death the pool did not cause breaks it. The jobs the worker
            // held are still in `w.sent`: they fail with the rest.
            let error = TaskError::BrokenPool { pid, status };
            self.break_pool_with(st, error.to_string(), error, finished);
            return;
        }
        let died = TaskError::WorkerDied { pid, status };
        let (current, _) = self.slots.current(i);
        let mut sent = std::mem::take(&mut w.sent);
        let verdict = w.verdict.take();
        let killed = w.killed;
        if let Some(front) = sent.front_mut() {
            let ran = front.id == current;
            let stopped = verdict.as_ref().is_some_and(|(id, _)| *id == front.id);
            // The item its run of this task's items began from, if it began them.
            let mut begun = None;
            if ran {
                let progress = self.slots.progress(i);
                begun = progress.begun.and_then(|k| usize::try_from(k).ok());
                // The results its ledger holds that came in no part.
                let base = usize::try_from(progress.base).unwrap_or(usize::MAX);
                let end = base.saturating_add(progress.count as usize);
                if progress.count > 0 && base == front.next && end <= front.len {
                    front.next = end;
                    finished.push((
                        Arc::clone(&front.sink),
                        Delivery::Ran(base..end, vec![Outcome::Returned(progress.results)]),
                    ));
                }
            }
            if front.next > front.sent_from {
                // It got further: its count of fruitless rounds starts again.
                front.requeues = 0;
            }
            // The item after the last one done was running.
            let in_item = begun.is_some_and(|k| k <= front.next);
            let fate = if front.next >= front.len {
                // Every item was done: it died sending the reply.
                None
            } else {
                // Died in the item that follows the last one done; or before its items
                // began: then not an item's doing.
                Some(front_fate(in_item, stopped, killed, front.requeues))
            };
            let error = match fate {
                None => None,
                Some(FrontFate::Stopped) => verdict.map(|(_, e)| e),
                Some(FrontFate::Died) => Some(died.clone()),
                Some(FrontFate::GaveUp) if !in_item => {
                    // It never got past this point: the rest fails.
                    let rest = front.rest();
                    front.next = front.len;
                    finished.push((
                        Arc::clone(&front.sink),
                        Delivery::Failed(rest, died.clone()),
                    ));
                    None
                }
                Some(FrontFate::GaveUp) => Some(died.clone()),
                Some(FrontFate::Requeued(requeues)) => {
                    front.requeues = requeues;
                    None
                }
            };
            if let Some(e) = error {
                // The item it was running fails alone; the items after it go on.
                let item = front.next..front.next + 1;
                front.next += 1;
                front.requeues = 0;
                finished.push((Arc::clone(&front.sink), Delivery::Failed(item, e)));
            }
            if front.next >= front.len {
                sent.pop_front();
                st.in_flight -= 1;
            } else {
                front.skip_done();
            }
        }
        for job in sent.into_iter().rev() {
            st.pending.push_front(job);
        }
        // On demand, the slot stays vacant until `pump` finds no idle worker for a task.
        if !self.config.on_demand && Self::keep_workers(st) {
            let generation = st.workers[i].generation.wrapping_add(1);
            match self.spawn(st, i, generation) {
                Ok(w) => st.workers[i] = w,
                Err(e) => {
                    st.workers[i].generation = generation;
                    self.break_pool(st, format!("cannot start a worker: {e}"), finished);
                }
            }
        }
    }

    /// A reply was lost (it could not be decoded): the tasks the workers say they
    /// finished but that have no reply fail, instead of holding their workers' queues
    /// for ever.
    fn recover_lost_replies(&self, st: &mut State, finished: &mut Finished) {
        // What each worker has finished, read before draining: a worker puts its reply
        // before it records the task as finished, so every reply up to these is in the
        // queue now and is drained below.
        let done: Vec<u64> = (0..st.workers.len()).map(|i| self.slots.done(i)).collect();
        while let Ok(reply) = self.replies.try_get() {
            self.on_reply(st, reply, finished);
        }
        for (i, w) in st.workers.iter_mut().enumerate() {
            let done = done[i];
            while w.sent.front().is_some_and(|j| j.id <= done) {
                let job = w.sent.pop_front().expect("checked");
                st.in_flight -= 1;
                finished.push(job.failed(TaskError::serialization(
                    "the task's result was lost: it could not be decoded",
                )));
            }
        }
    }

    /// Kills the worker of a task that ran over its limit.
    fn check_timeouts(&self, st: &mut State) {
        let now = worker::monotonic_ns();
        for (i, w) in st.workers.iter_mut().enumerate() {
            if let Some((id, limit, 0)) = self.time_left(i, w, now) {
                w.verdict = Some((id, TaskError::TimedOut { limit }));
                w.killed = true;
                if let Some(p) = &w.process {
                    let _ = p.kill();
                }
            }
        }
    }

    /// The task worker `i` is running under a time limit, if any and not already
    /// stopped: its id, its limit and the nanoseconds it has left (0: over).
    fn time_left(&self, i: usize, w: &Worker, now: u64) -> Option<(u64, Duration, u64)> {
        let job = w.sent.front()?;
        let limit = job.timeout?;
        if w.verdict.is_some() {
            // Already killed: its death is seen at the next check.
            return None;
        }
        let (current, started) = self.slots.current(i);
        if current != job.id {
            return None;
        }
        Some((job.id, limit, limit_left_ns(started, limit, now)))
    }

    /// How long the collector may wait for a reply before checking the workers.
    fn tick(&self, st: &State) -> Duration {
        if st.in_flight == 0 && !st.closed {
            return IDLE_TICK;
        }
        let now = worker::monotonic_ns();
        busy_tick(
            st.workers
                .iter()
                .enumerate()
                .filter_map(|(i, w)| self.time_left(i, w, now))
                .map(|(_, _, left)| left),
        )
    }

    /// Pool closed and nothing left (or terminated, or broken): sends `Stop` to every
    /// worker and hands their processes over to be reaped outside the lock; `None`
    /// while work remains.
    fn stop_workers(&self, st: &mut State) -> Option<Vec<Process<()>>> {
        if Self::keep_workers(st) {
            return None;
        }
        for w in &mut st.workers {
            if !w.stopping {
                w.stopping = true;
                let _ = w.tasks.put(TaskMsg::Stop);
            }
        }
        Some(
            st.workers
                .iter_mut()
                .filter_map(|w| w.process.take())
                .collect(),
        )
    }

    /// Reaps the stopped workers (killing those that do not exit within a generous
    /// bound, on a loaded machine), then tells the waiters the pool is done.
    fn finish_wind_down(&self, processes: Vec<Process<()>>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for mut p in processes {
            let left = deadline.saturating_duration_since(Instant::now());
            if !matches!(p.wait_timeout(left), Ok(Some(_))) {
                let _ = p.kill();
                let _ = p.wait();
            }
        }
        let mut st = self.state.lock();
        st.done = true;
        self.changed.notify_all();
    }

    /// Stops the workers that held no task for `idle_timeout` (seen at the collector's
    /// checks, so up to a tick late); on demand, others start when tasks need them.
    fn retire_idle(&self, st: &mut State, now: Instant) {
        let Some(limit) = self.config.idle_timeout else {
            return;
        };
        for w in &mut st.workers {
            if w.process.is_none() || w.stopping {
                continue;
            }
            if !w.sent.is_empty() {
                w.last_busy = now;
            } else if now.saturating_duration_since(w.last_busy) >= limit {
                w.stopping = true;
                let _ = w.tasks.put(TaskMsg::Stop);
            }
        }
    }

    fn on_collector(&self) -> bool {
        self.collector.get() == Some(&std::thread::current().id())
    }
}

/// The moving average of task run times once a task reports `busy_ns`: the first
/// report replaces the initial infinity, each later one counts for half; a run of 0 ns
/// counts as 1.
fn average_busy_ns(avg_ns: f64, busy_ns: u64) -> f64 {
    let busy = busy_ns.max(1) as f64;
    if avg_ns.is_finite() {
        0.5 * avg_ns + 0.5 * busy
    } else {
        busy
    }
}

/// How many tasks a worker may hold when they run `avg_busy_ns` on average: as many as
/// fill [`AHEAD_NS`], at least one, at most [`MAX_WINDOW`].
fn read_ahead(avg_busy_ns: f64) -> usize {
    ((AHEAD_NS / avg_busy_ns) as usize).clamp(1, MAX_WINDOW)
}

/// What becomes of the first task a dead worker held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrontFate {
    /// The pool stopped the worker for this task (time limit, `cancel_running`): it
    /// fails with the pool's verdict.
    Stopped,
    /// The worker died in this task by itself: the task is the cause and fails.
    Died,
    /// Not this task's doing — the worker died before starting it (it could not read
    /// it, or it retired), or the pool killed it for a task that had just finished: it
    /// goes round again, now requeued this many times (it may run twice if it had
    /// started).
    Requeued(u32),
    /// Not its doing either, but its workers have now ended [`MAX_REQUEUES`] times
    /// while holding it: it fails with the death instead of going round for ever.
    GaveUp,
}

/// The fate of a dead worker's first task: `ran` if the worker's slot names it,
/// `stopped` if the pool's verdict names it, `killed` if the pool killed the worker,
/// `requeues` how many times it went round before.
fn front_fate(ran: bool, stopped: bool, killed: bool, requeues: u32) -> FrontFate {
    if ran && stopped {
        FrontFate::Stopped
    } else if ran && !killed {
        FrontFate::Died
    } else {
        let requeues = requeues.saturating_add(1);
        if requeues >= MAX_REQUEUES {
            FrontFate::GaveUp
        } else {
            FrontFate::Requeued(requeues)
        }
    }
}

/// Nanoseconds left to a task started at `started` (CLOCK_MONOTONIC) with time limit
/// `limit`, at `now`: 0 once the limit is reached. Saturates: a limit too large for a
/// `u64` of nanoseconds never runs out, and a start after `now` is not an error.
fn limit_left_ns(started: u64, limit: Duration, now: u64) -> u64 {
    let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    started.saturating_add(limit_ns).saturating_sub(now)
}

/// How long the busy collector may wait before checking the workers, given the
/// nanoseconds left to each running task that has a time limit: [`BUSY_TICK`], or less
/// so as to stop the first task to run out on time.
fn busy_tick(left_ns: impl IntoIterator<Item = u64>) -> Duration {
    left_ns
        .into_iter()
        .map(Duration::from_nanos)
        .fold(BUSY_TICK, Duration::min)
}

/// What becomes of some items of a task.
enum Delivery {
    /// They ran: their outcomes (see [`Sink::complete`]).
    Ran(Range<usize>, Vec<Outcome>),
    /// They failed, or will not run.
    Failed(Range<usize>, TaskError),
}

type Finished = Vec<(Arc<dyn Sink>, Delivery)>;

impl Job {
    /// The items not yet delivered fail with `error`.
    fn failed(self, error: TaskError) -> (Arc<dyn Sink>, Delivery) {
        let rest = self.rest();
        (self.sink, Delivery::Failed(rest, error))
    }

    /// A reply for items from `first` on: the items before it that came in no reply
    /// (a part that could not be decoded) fail, so that every item is delivered.
    fn deliver_gap(&mut self, first: usize, finished: &mut Finished) {
        if first > self.next {
            let lost = self.next..first;
            self.next = first;
            finished.push((
                Arc::clone(&self.sink),
                Delivery::Failed(
                    lost,
                    TaskError::serialization("the item's result was lost: it could not be decoded"),
                ),
            ));
        }
    }
}

/// Completes tasks (outside every lock: completion runs user callbacks).
fn finish_all(finished: Finished) {
    for (sink, delivery) in finished {
        // Completing decodes the result: user `Deserialize` code, which may panic.
        // Callbacks run inside and catch their own panics, so a panic that gets here
        // left the items without an outcome: they fail with the panic's message, and
        // the other tasks of the batch (and the collector) go on.
        let (items, completed) = match delivery {
            Delivery::Ran(items, outcomes) => {
                let range = items.clone();
                (
                    items,
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        sink.complete(range, outcomes)
                    })),
                )
            }
            Delivery::Failed(items, e) => {
                let range = items.clone();
                (
                    items,
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.fail(range, e))),
                )
            }
        };
        if let Err(payload) = completed {
            let message = crate::codec::panic_message(payload.as_ref());
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                sink.fail(
                    items,
                    TaskError::serialization(format!(
                        "cannot decode the task's result: its Deserialize panicked: {message}"
                    )),
                )
            }));
        }
    }
}

/// The collector thread.
fn collect(shared: &Engine) {
    let mut replies = Vec::with_capacity(256);
    let mut last_check = Instant::now();
    loop {
        let tick = shared.tick(&shared.state.lock());
        let mut lost = false;
        let mut failed = false;
        match shared.replies.get_timeout(tick) {
            Ok(reply) => replies.push(reply),
            Err(e) if e.is_empty() => {}
            Err(GetError::Codec(_)) => lost = true,
            Err(_) => failed = true,
        }
        while replies.len() < 256 {
            match shared.replies.try_get() {
                Ok(reply) => replies.push(reply),
                Err(GetError::Codec(_)) => lost = true,
                Err(_) => break,
            }
        }
        let mut finished = Vec::new();
        let processes = {
            let mut st = shared.state.lock();
            for reply in replies.drain(..) {
                shared.on_reply(&mut st, reply, &mut finished);
            }
            if failed {
                // The reply queue itself failed: nothing can be trusted; fail
                // everything rather than hang.
                shared.break_pool(&mut st, "the reply queue failed".into(), &mut finished);
            }
            if lost {
                shared.recover_lost_replies(&mut st, &mut finished);
            }
            let now = Instant::now();
            if finished.is_empty() || now.duration_since(last_check) >= BUSY_TICK {
                last_check = now;
                shared.check_workers(&mut st, &mut finished);
                shared.retire_idle(&mut st, now);
            }
            shared.pump(&mut st, &mut finished);
            shared.stop_workers(&mut st)
        };
        finish_all(finished);
        if let Some(processes) = processes {
            shared.finish_wind_down(processes);
            return;
        }
    }
}

/// Why a task could not be put in its worker's queue.
fn send_failure(error: crate::queue::mp::PutError<()>) -> TaskError {
    match error {
        crate::queue::mp::PutError::Codec((), e) => {
            TaskError::codec("cannot send the task to a worker", e)
        }
        other => TaskError::serialization(format!("cannot send the task to a worker: {other}")),
    }
}

/// Turns a task's single outcome into the caller's value.
pub(crate) fn decode_outcome<R: serde::de::DeserializeOwned>(
    outcome: Outcome,
) -> Result<R, TaskError> {
    match outcome {
        Outcome::Returned(bytes) => crate::codec::decode::<R>(&bytes)
            .map_err(|e| TaskError::codec("cannot decode the task's result", e)),
        Outcome::Panicked(message, traceback) => Err(TaskError::Panicked { message, traceback }),
        Outcome::Codec(message) | Outcome::Bootstrap(message) => {
            Err(TaskError::serialization(message))
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // The owner decides between join and terminate; this only makes sure the
        // collector and the workers are gone.
        if !self.shared.state.lock().done {
            self.terminate();
        }
    }
}

/// What a map that reads its input as it goes needs after the call returned: it holds
/// the engine weakly, so it does not keep a dropped pool alive.
impl Engine {
    /// A fresh task id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues tasks `(id, entry, target, args, sink)`, sending what fits to workers.
    pub(crate) fn submit(
        &self,
        tasks: impl IntoIterator<Item = (u64, FnAddr, FnAddr, Vec<u8>, Arc<dyn Sink>)>,
        timeout: Option<Duration>,
    ) -> Result<(), Refused> {
        let timeout = timeout.or(self.config.timeout);
        let mut failed = Vec::new();
        {
            let mut st = self.state.lock();
            if let Some(reason) = &st.broken {
                return Err(Refused::Broken(reason.clone()));
            }
            if st.closed {
                return Err(Refused::Closed);
            }
            for (id, entry, target, args, sink) in tasks {
                st.pending.push_back(Job {
                    id,
                    msg: TaskMsg::Run {
                        id,
                        entry,
                        target,
                        args,
                        skip: 0,
                    },
                    timeout,
                    len: sink.len(),
                    sink,
                    started: false,
                    requeues: 0,
                    next: 0,
                    sent_from: 0,
                });
                st.in_flight += 1;
            }
            self.pump(&mut st, &mut failed);
        }
        finish_all(failed);
        Ok(())
    }
}

/// Stops task `id`: a worker that runs it is killed (and replaced); one that holds it
/// queued skips it when it comes. `false` if it cannot be stopped now (its worker's
/// list of skipped tasks is full).
pub(crate) fn stop_task(shared: &Weak<Engine>, id: u64) -> bool {
    stop_where(shared, |j| j.id == id)
}

/// Stops every task of `group` a worker holds (see [`Sink::group`]), as [`stop_task`].
/// The caller has made the group's sinks refuse to start first, so that none is sent
/// meanwhile.
pub(crate) fn stop_group(shared: &Weak<Engine>, group: usize) -> bool {
    stop_where(shared, |j| j.sink.group() == group)
}

fn stop_where(shared: &Weak<Engine>, which: impl Fn(&Job) -> bool) -> bool {
    let Some(shared) = shared.upgrade() else {
        return true;
    };
    let mut st = shared.state.lock();
    let mut stopped = true;
    for (i, w) in st.workers.iter_mut().enumerate() {
        let ids: Vec<u64> = w.sent.iter().filter(|j| which(j)).map(|j| j.id).collect();
        for id in ids {
            stopped &= stop_on(&shared, w, i, id);
        }
    }
    drop(st);
    shared.wake();
    stopped
}

/// Stops task `id`, which worker `i` holds.
fn stop_on(shared: &Engine, w: &mut Worker, i: usize, id: u64) -> bool {
    let mut stopped = true;
    {
        let running = |slots: &Slots| slots.current(i).0 == id;
        let kill = if running(&shared.slots) {
            true
        } else if shared.slots.cancel_queued(i, id) {
            // The worker may have begun it meanwhile: then it did not see the mark.
            running(&shared.slots)
        } else {
            stopped = false;
            false
        };
        if kill {
            w.verdict = Some((id, TaskError::Cancelled));
            w.killed = true;
            if let Some(p) = &w.process {
                let _ = p.kill();
            }
        }
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_worker_holds_up_to_5_ms_of_short_tasks_at_least_one_at_most_256() {
        // Before any task reported (the average starts infinite): one task, as `State`
        // starts with.
        assert_eq!(read_ahead(f64::INFINITY), 1);
        // Tasks of 5 ms or more go one at a time (a task goes to the first free worker,
        // S6); a longer one cannot make it zero.
        assert_eq!(read_ahead(5e6), 1);
        assert_eq!(read_ahead(5e6 + 1.0), 1);
        assert_eq!(read_ahead(3_600e9), 1);
        // Whole tasks: 5 ms holds two of 2.5 ms, only one of a nanosecond more, and one
        // of a nanosecond less than 5 ms.
        assert_eq!(read_ahead(5e6 - 1.0), 1);
        assert_eq!(read_ahead(2.5e6), 2);
        assert_eq!(read_ahead(2.5e6 + 1.0), 1);
        assert_eq!(read_ahead(1e6), 5);
        // The cap: 5 ms / 256 = 19 531.25 ns; shorter tasks still get 256.
        assert_eq!(read_ahead(19_531.25), MAX_WINDOW);
        assert_eq!(MAX_WINDOW, 256);
        assert_eq!(read_ahead(19_532.0), 255);
        assert_eq!(read_ahead(19_531.0), 256);
        assert_eq!(read_ahead(1.0), 256);
    }

    #[test]
    fn the_first_run_time_sets_the_average_and_each_later_one_counts_for_half() {
        assert_eq!(average_busy_ns(f64::INFINITY, 3 * MS), 3e6);
        assert_eq!(average_busy_ns(4e6, 2 * MS), 3e6);
        assert_eq!(average_busy_ns(3e6, 3 * MS), 3e6);
        // A run reported as 0 ns counts as 1 ns: the shortest tasks get the cap.
        assert_eq!(average_busy_ns(f64::INFINITY, 0), 1.0);
        assert_eq!(average_busy_ns(1.0, 0), 1.0);
        assert_eq!(read_ahead(average_busy_ns(f64::INFINITY, 0)), 256);
        // The longest report there can be: one task at a time.
        assert_eq!(read_ahead(average_busy_ns(1e6, u64::MAX)), 1);
    }

    #[test]
    fn one_long_task_cuts_the_window_to_one_and_short_ones_widen_it_again_by_halves() {
        let mut avg = f64::INFINITY;
        let windows: Vec<usize> = [1_000, 1_000, 10 * MS, 1_000, 1_000, 1_000, 1_000]
            .into_iter()
            .map(|busy| {
                avg = average_busy_ns(avg, busy);
                read_ahead(avg)
            })
            .collect();
        assert_eq!(windows, [256, 256, 1, 1, 3, 7, 15]);
    }

    #[test]
    fn a_task_its_workers_die_before_starting_fails_on_the_third_death() {
        // The slot names another task and the pool killed nobody (the worker could not
        // read the task, or it retired).
        assert_eq!(front_fate(false, false, false, 0), FrontFate::Requeued(1));
        assert_eq!(front_fate(false, false, false, 1), FrontFate::Requeued(2));
        assert_eq!(front_fate(false, false, false, 2), FrontFate::GaveUp);
        let mut requeues = 0;
        let mut deaths = 0;
        let fate = loop {
            deaths += 1;
            match front_fate(false, false, false, requeues) {
                FrontFate::Requeued(n) => requeues = n,
                fate => break fate,
            }
        };
        assert_eq!((fate, deaths, MAX_REQUEUES), (FrontFate::GaveUp, 3, 3));
        // A count past the limit (it cannot get there) still fails, without overflow.
        assert_eq!(front_fate(false, false, false, 3), FrontFate::GaveUp);
        assert_eq!(front_fate(false, false, false, u32::MAX), FrontFate::GaveUp);
    }

    #[test]
    fn a_task_running_when_its_worker_died_fails_at_once_whatever_its_count() {
        // Died by itself in the task.
        assert_eq!(front_fate(true, false, false, 0), FrontFate::Died);
        assert_eq!(front_fate(true, false, false, 2), FrontFate::Died);
        // The pool stopped it (time limit, cancel_running): its verdict, not a requeue.
        assert_eq!(front_fate(true, true, true, 0), FrontFate::Stopped);
        assert_eq!(front_fate(true, true, true, 2), FrontFate::Stopped);
    }

    #[test]
    fn a_task_whose_worker_the_pool_killed_for_another_goes_round_within_the_limit() {
        // The verdict's task replied just before the kill (verdict cleared), and the
        // worker had started the next one, or not yet.
        assert_eq!(front_fate(true, false, true, 0), FrontFate::Requeued(1));
        assert_eq!(front_fate(false, false, true, 0), FrontFate::Requeued(1));
        assert_eq!(front_fate(true, false, true, 1), FrontFate::Requeued(2));
        assert_eq!(front_fate(true, false, true, 2), FrontFate::GaveUp);
    }

    #[test]
    fn a_task_is_over_its_limit_exactly_at_the_limit() {
        let limit = Duration::from_nanos(10);
        assert_eq!(limit_left_ns(1_000, limit, 1_000), 10);
        assert_eq!(limit_left_ns(1_000, limit, 1_009), 1);
        assert_eq!(limit_left_ns(1_000, limit, 1_010), 0);
        assert_eq!(limit_left_ns(1_000, limit, 1_011), 0);
        assert_eq!(limit_left_ns(1_000, limit, u64::MAX), 0);
        // A zero limit is over as soon as the task starts.
        assert_eq!(limit_left_ns(1_000, Duration::ZERO, 1_000), 0);
        assert_eq!(
            limit_left_ns(0, Duration::from_secs(2), 500 * MS),
            1_500 * MS
        );
        // The slot may pair an old id with the next task's (later) start time.
        assert_eq!(limit_left_ns(2_000, limit, 1_000), 1_010);
    }

    #[test]
    fn a_limit_beyond_u64_nanoseconds_saturates_instead_of_wrapping() {
        let most = Duration::from_nanos(u64::MAX);
        assert_eq!(limit_left_ns(0, most, 7), u64::MAX - 7);
        assert_eq!(
            limit_left_ns(0, most + Duration::from_nanos(1), 7),
            u64::MAX - 7
        );
        assert_eq!(limit_left_ns(0, Duration::MAX, 0), u64::MAX);
        // The deadline saturates at the end of the clock, it does not wrap to the past.
        assert_eq!(limit_left_ns(5, Duration::MAX, 10), u64::MAX - 10);
        assert_eq!(limit_left_ns(u64::MAX, Duration::MAX, u64::MAX), 0);
    }

    #[test]
    fn the_busy_collector_waits_10_ms_or_until_the_first_limit_runs_out() {
        assert_eq!(BUSY_TICK, Duration::from_millis(10));
        assert_eq!(busy_tick(std::iter::empty()), BUSY_TICK);
        assert_eq!(busy_tick([u64::MAX]), BUSY_TICK);
        assert_eq!(busy_tick([10 * MS]), BUSY_TICK);
        assert_eq!(busy_tick([10 * MS - 1]), Duration::from_nanos(10 * MS - 1));
        assert_eq!(
            busy_tick([7 * MS, 3 * MS, 20 * MS]),
            Duration::from_millis(3)
        );
        // A task at its limit: check at once.
        assert_eq!(busy_tick([7 * MS, 0]), Duration::ZERO);
    }
}
