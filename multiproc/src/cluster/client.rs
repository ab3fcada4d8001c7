//! [`ClusterExecutor`]: submits tasks to the stream, completes futures from results.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{self, Ending, ResultMsg, TaskMsg};
use super::{ClusterError, Names};
use crate::executor::{Executor, Future, ShutDown, TaskError, WaitError};
use crate::pool::worker::{TaskEntry, entry_one};
use crate::sys::entry::FnAddr;

/// Settings of a [`ClusterExecutor`]; [`connect`](Self::connect) makes it.
#[derive(Debug, Clone)]
#[must_use]
pub struct ClusterBuilder {
    namespace: String,
    ack_wait: Duration,
    max_deliver: u32,
    task_timeout: Option<Duration>,
    connect_timeout: Duration,
    map_buffer: usize,
}

impl ClusterBuilder {
    /// The prefix of the streams' names (`<NS>_TASKS`, `<NS>_RESULTS`), subjects and
    /// the workers' consumer (`<ns>-workers`): clients and workers of one namespace
    /// share the work. Default `multiproc`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long the server waits for a worker's ack (or heartbeat) before it gives the
    /// task to another worker: the time a dead worker's task waits. Default 10 s.
    /// Taken when the consumer is first made (by a client or a worker).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// How many times a task is tried when its worker dies under it before it fails
    /// with [`TaskError::KilledWorker`]. Default 3 (Dask's `allowed-failures` + 1).
    pub fn max_deliver(mut self, attempts: u32) -> Self {
        self.max_deliver = attempts;
        self
    }

    /// Every task's time limit on its worker: over it, the local worker process is
    /// killed and the future fails with [`TaskError::TimedOut`].
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// How long [`connect`](Self::connect) waits for the server. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many tasks [`ClusterExecutor::map`] keeps submitted and not yet yielded.
    /// Default 4096.
    pub fn map_buffer(mut self, n: usize) -> Self {
        self.map_buffer = n;
        self
    }

    /// Connects to the server at `url` (`nats://[user:password@]host:port`), makes the
    /// streams and the consumer if missing, and starts reading results. An unreachable
    /// server is [`ClusterError::Disconnected`] or [`ClusterError::Timeout`] within the
    /// connect timeout; a refused credential is [`ClusterError::Auth`].
    pub fn connect(self, url: &str) -> Result<ClusterExecutor, ClusterError> {
        if self.ack_wait < Duration::from_millis(100) {
            return Err(ClusterError::Invalid("ack_wait must be at least 100 ms"));
        }
        if self.max_deliver == 0 {
            return Err(ClusterError::Invalid("max_deliver must be at least 1"));
        }
        if self.task_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ClusterError::Invalid(
                "task_timeout must be longer than zero",
            ));
        }
        if self.map_buffer == 0 {
            return Err(ClusterError::Invalid("map_buffer must be at least 1"));
        }
        if self.connect_timeout.is_zero() {
            return Err(ClusterError::Invalid(
                "connect_timeout must be longer than zero",
            ));
        }
        let names = Names::new(&self.namespace)?;
        let exe = wire::exe_identity().map_err(ClusterError::Runtime)?;
        let runtime = super::runtime("cluster-client", 2)?;
        let id = super::random_token();
        let reconnected = Arc::new(tokio::sync::Notify::new());
        let setup = runtime.block_on(async {
            let client = super::connect(
                url,
                self.connect_timeout,
                &id,
                Some(Arc::clone(&reconnected)),
            )
            .await?;
            let js = jetstream::new(client.clone());
            let (_consumer, results) =
                super::streams(&js, &names, self.ack_wait, self.max_deliver).await?;
            Ok::<_, ClusterError>((client, js, results))
        });
        let (client, js, results) = match setup {
            Ok(parts) => parts,
            Err(e) => {
                runtime.shutdown_timeout(Duration::from_secs(5));
                return Err(e);
            }
        };
        let shared = Arc::new(Shared {
            js,
            task_subject: names.task_subject(),
            result_subject: names.result_subject(&id),
            stop_subject: names.stop_subject(),
            ping_subject: names.ping_subject(),
            task_stream: names.task_stream(),
            client_id: id,
            exe,
            settings: self.clone(),
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            drained: Condvar::new(),
            shut: AtomicBool::new(false),
        });
        let reader = runtime.spawn(read_results(
            Arc::clone(&shared),
            results.clone(),
            reconnected,
        ));
        Ok(ClusterExecutor {
            shared,
            results,
            client,
            reader,
            runtime: Mutex::new(Some(runtime)),
        })
    }
}

/// Completes a task's future from its worker's report (or with the error a shutdown
/// gives it).
type Completion = Box<dyn FnOnce(Result<Ending, TaskError>) + Send>;

/// What the caller's threads and the runtime's tasks share.
struct Shared {
    js: jetstream::Context,
    task_subject: String,
    result_subject: String,
    stop_subject: String,
    ping_subject: String,
    task_stream: String,
    client_id: String,
    exe: [u8; 16],
    settings: ClusterBuilder,
    next_id: AtomicU64,
    /// The futures not yet completed, by task id: the first result for an id takes its
    /// entry, a second finds none and is dropped (exactly-once results).
    pending: Mutex<HashMap<u64, Completion>>,
    /// Notified when `pending` becomes empty.
    drained: Condvar,
    shut: AtomicBool,
}

impl Shared {
    fn complete(&self, id: u64, ending: Ending) {
        let completion = {
            let mut pending = self.pending.lock();
            let c = pending.remove(&id);
            if pending.is_empty() {
                self.drained.notify_all();
            }
            c
        };
        if let Some(complete) = completion {
            complete(Ok(ending));
        }
    }
}

/// A `concurrent.futures` executor whose tasks run on the workers of a NATS JetStream
/// cluster (Ray's `ray.util.multiprocessing.Pool`, Dask's `Client.submit`).
///
/// Blocking calls as the local executors have; each [`Future`] is also a
/// [`std::future::Future`] to `.await`. The client owns a small tokio runtime (two
/// threads) that publishes tasks and reads results. Dropping it is `shutdown(wait =
/// true)`: it waits for the results of the tasks submitted.
pub struct ClusterExecutor {
    shared: Arc<Shared>,
    results: jetstream::stream::Stream,
    client: async_nats::Client,
    reader: tokio::task::JoinHandle<()>,
    /// `None` once shut down.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl std::fmt::Debug for ClusterExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterExecutor")
            .field("client", &self.shared.client_id)
            .field("tasks", &self.shared.task_subject)
            .field("pending", &self.shared.pending.lock().len())
            .finish_non_exhaustive()
    }
}

impl ClusterExecutor {
    /// Settings: namespace `multiproc`, `ack_wait` 10 s, `max_deliver` 3, no task
    /// timeout, connect timeout 5 s.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            namespace: "multiproc".into(),
            ack_wait: Duration::from_secs(10),
            max_deliver: 3,
            task_timeout: None,
            connect_timeout: Duration::from_secs(5),
            map_buffer: 4096,
        }
    }

    /// Schedules `f(arg)` on a worker of the cluster and returns its [`Future`] at
    /// once; the publish (retried through a server restart, de-duplicated by the
    /// server) and the result happen on the client's runtime. An argument that does
    /// not serialise gives a future that has failed.
    pub fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>, ShutDown>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let handle = match &*self.runtime.lock() {
            Some(rt) if !self.shared.shut.load(Ordering::Acquire) => rt.handle().clone(),
            _ => return Err(ShutDown),
        };
        let args = match crate::codec::encode(&arg) {
            Ok(b) => b,
            Err(e) => {
                return Ok(Future::failed(TaskError::codec(
                    "cannot send the arguments",
                    e,
                )));
            }
        };
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let entry: TaskEntry = entry_one::<A, R>;
        let task = TaskMsg {
            client: self.shared.client_id.clone(),
            id,
            exe: self.shared.exe,
            entry: FnAddr::of(entry),
            target: FnAddr::of(f),
            args,
            limit: self.shared.settings.task_timeout,
            attempts: self.shared.settings.max_deliver,
        };
        let bytes = match wire::encode(&task) {
            Ok(b) => b,
            Err(e) => return Ok(Future::failed(TaskError::codec("cannot send the task", e))),
        };
        let (future, completer) = Future::<R>::pending();
        let completion: Completion = Box::new(move |outcome| {
            if !completer.set_running_or_notify_cancel() {
                return;
            }
            let ending = match outcome {
                Ok(ending) => ending,
                Err(e) => {
                    let _ = completer.set_exception(e);
                    return;
                }
            };
            let _ = match ending {
                Ending::Returned(body) => match crate::codec::decode::<R>(&body) {
                    Ok(v) => completer.set_result(v),
                    Err(e) => completer
                        .set_exception(TaskError::codec("cannot decode the task's result", e)),
                },
                Ending::Panicked(message) => completer.set_exception(TaskError::Panicked {
                    message,
                    traceback: None,
                }),
                Ending::Codec(message) => {
                    completer.set_exception(TaskError::serialization(message))
                }
                Ending::TimedOut(limit) => completer.set_exception(TaskError::TimedOut { limit }),
                Ending::KilledWorker(attempts) => {
                    completer.set_exception(TaskError::KilledWorker { attempts })
                }
                Ending::Refused(reason) => completer.set_exception(TaskError::Broken { reason }),
            };
        });
        self.shared.pending.lock().insert(id, completion);
        let shared = Arc::clone(&self.shared);
        handle.spawn(publish_task(shared, id, bytes.into()));
        Ok(future)
    }

    /// `f(item)` for every item (Python's `map`): the results in input order as they
    /// come. The input is read lazily, in the caller's thread, at most
    /// [`map_buffer`](ClusterBuilder::map_buffer) tasks submitted and not yet yielded,
    /// so an endless input streams in bounded memory.
    pub fn map<'a, A, R>(
        &'a self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A, IntoIter: 'a>,
    ) -> Result<impl Iterator<Item = Result<R, TaskError>> + 'a, ShutDown>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let mut map = ClusterMap {
            executor: self,
            f,
            input: Some(items.into_iter()),
            futures: VecDeque::new(),
            buffer: self.shared.settings.map_buffer,
            tail: None,
        };
        map.fill()?;
        Ok(map)
    }

    /// Stops taking tasks (Python's `shutdown`). With `cancel_futures`, the futures not
    /// yet completed fail with [`TaskError::Cancelled`] (their tasks may still run on a
    /// worker: a published task cannot be called back); with `wait`, returns once every
    /// future is complete. Then the client disconnects.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.shut.store(true, Ordering::Release);
        if cancel_futures {
            let ids: Vec<u64> = self.shared.pending.lock().keys().copied().collect();
            for id in ids {
                let completion = self.shared.pending.lock().remove(&id);
                if let Some(complete) = completion {
                    complete(Err(TaskError::Cancelled));
                }
            }
            self.shared.drained.notify_all();
        }
        if !wait {
            return;
        }
        {
            let mut pending = self.shared.pending.lock();
            while !pending.is_empty() {
                self.shared.drained.wait(&mut pending);
            }
        }
        self.close();
    }

    /// Asks every worker of the namespace to stop (Celery's `control.shutdown`): each
    /// finishes the tasks it runs, takes no more, and its [`worker`](super::worker)
    /// call returns. Tasks still queued wait for the next worker.
    pub fn stop_workers(&self) -> Result<(), ClusterError> {
        let guard = self.runtime.lock();
        let Some(runtime) = guard.as_ref() else {
            return Err(ClusterError::Invalid("the executor was shut down"));
        };
        let client = self.client.clone();
        let subject = self.shared.stop_subject.clone();
        runtime
            .block_on(async move {
                client
                    .publish(subject, bytes::Bytes::new())
                    .await
                    .map_err(|e| e.to_string())?;
                client.flush().await.map_err(|e| e.to_string())
            })
            .map_err(|reason| ClusterError::Disconnected {
                url: "(connected server)".into(),
                reason,
            })
    }

    /// Waits until at least `n` workers of the namespace answer, at most `timeout`
    /// (Dask's `Client.wait_for_workers`); how many answered. A worker answers once it
    /// listens for [`stop_workers`](Self::stop_workers) and pulls tasks.
    pub fn wait_for_workers(&self, n: usize, timeout: Duration) -> Result<usize, ClusterError> {
        let guard = self.runtime.lock();
        let Some(runtime) = guard.as_ref() else {
            return Err(ClusterError::Invalid("the executor was shut down"));
        };
        let client = self.client.clone();
        let subject = self.shared.ping_subject.clone();
        let disconnected = |e: &dyn std::fmt::Display| ClusterError::Disconnected {
            url: "(connected server)".into(),
            reason: e.to_string(),
        };
        runtime.block_on(async move {
            let inbox = client.new_inbox();
            let mut answers = client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| disconnected(&e))?;
            let deadline = tokio::time::Instant::now() + timeout;
            let mut seen = std::collections::HashSet::new();
            loop {
                client
                    .publish_with_reply(subject.clone(), inbox.clone(), bytes::Bytes::new())
                    .await
                    .map_err(|e| disconnected(&e))?;
                let round =
                    (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
                while let Ok(Some(answer)) = tokio::time::timeout_at(round, answers.next()).await {
                    // Not the "no responders" status the server sends while no worker
                    // listens.
                    if answer.status.is_none() && !answer.payload.is_empty() {
                        seen.insert(answer.payload);
                    }
                }
                if seen.len() >= n {
                    return Ok(seen.len());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ClusterError::Timeout {
                        what: format!("{n} workers ({} answered)", seen.len()),
                        after: timeout,
                    });
                }
            }
        })
    }

    /// How many tasks of the namespace wait in the task stream, from every client,
    /// taken or not (a task leaves it when a worker acks or terminates it).
    pub fn queued_tasks(&self) -> Result<u64, ClusterError> {
        let guard = self.runtime.lock();
        let Some(runtime) = guard.as_ref() else {
            return Err(ClusterError::Invalid("the executor was shut down"));
        };
        let js = self.shared.js.clone();
        let name = self.shared.task_stream.clone();
        runtime
            .block_on(async move {
                let mut stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
                let info = stream.info().await.map_err(|e| e.to_string())?;
                Ok(info.state.messages)
            })
            .map_err(|reason| ClusterError::JetStream { reason })
    }

    /// Purges this client's results, disconnects and stops the runtime.
    fn close(&self) {
        let Some(runtime) = self.runtime.lock().take() else {
            return;
        };
        self.reader.abort();
        let results = self.results.clone();
        let subject = self.shared.result_subject.clone();
        let client = self.client.clone();
        runtime.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = results.purge().filter(subject).await;
                let _ = client.drain().await;
            })
            .await;
        });
        // Whatever is still pending (a shutdown without wait) fails as its completer
        // drops: `TaskError::Broken`.
        self.shared.pending.lock().clear();
        runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

impl Drop for ClusterExecutor {
    fn drop(&mut self) {
        // Unwinding: no waiting for workers that may never come; the futures fail.
        let unwinding = std::thread::panicking();
        self.shutdown(!unwinding, unwinding);
        self.close();
    }
}

impl Executor for ClusterExecutor {
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>, ShutDown>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        ClusterExecutor::submit(self, f, arg)
    }

    fn map<'a, A, R>(
        &'a self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A, IntoIter: 'a>,
    ) -> Result<Box<dyn Iterator<Item = Result<R, TaskError>> + 'a>, ShutDown>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Ok(Box::new(ClusterExecutor::map(self, f, items)?))
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        ClusterExecutor::shutdown(self, wait, cancel_futures);
    }
}

/// Publishes a task until the server acks it: through a disconnection or a server
/// restart, the same message id each time (the server drops a duplicate within its
/// two-minute window).
async fn publish_task(shared: Arc<Shared>, id: u64, bytes: bytes::Bytes) {
    let msg_id = format!("{}.{id}", shared.client_id);
    let mut backoff = Duration::from_millis(20);
    loop {
        let publish = jetstream::message::PublishMessage::build()
            .payload(bytes.clone())
            .message_id(&msg_id);
        if let Ok(ack) = shared
            .js
            .send_publish(shared.task_subject.clone(), publish)
            .await
        {
            if ack.await.is_ok() {
                return;
            }
        }
        if !shared.pending.lock().contains_key(&id) {
            return; // cancelled by a shutdown
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Reads this client's results subject through an ordered consumer (made again from
/// the last sequence seen if it ends), completing futures.
async fn read_results(
    shared: Arc<Shared>,
    results: jetstream::stream::Stream,
    reconnected: Arc<tokio::sync::Notify>,
) {
    use jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let mut next_seq = 0u64;
    loop {
        let deliver_policy = if next_seq == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: next_seq,
            }
        };
        let consumer = results
            .create_consumer(OrderedConfig {
                filter_subject: shared.result_subject.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(c) => match c.messages().await {
                Ok(m) => m,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                // The server may have restarted without this consumer: make it again.
                _ = reconnected.notified() => break,
            };
            let Some(next) = next else { break };
            let Ok(msg) = next else { continue };
            if let Ok(info) = msg.info() {
                next_seq = info.stream_sequence + 1;
            }
            match wire::decode::<ResultMsg>(&msg.payload) {
                Ok(r) => shared.complete(r.id, r.ending),
                Err(why) => eprintln!(
                    "multiproc cluster client: dropped a foreign message on {}: {why}",
                    msg.subject
                ),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The iterator of [`ClusterExecutor::map`].
struct ClusterMap<'a, It, A, R> {
    executor: &'a ClusterExecutor,
    f: fn(A) -> R,
    input: Option<It>,
    futures: VecDeque<Future<R>>,
    buffer: usize,
    tail: Option<TaskError>,
}

impl<It, A, R> ClusterMap<'_, It, A, R>
where
    It: Iterator<Item = A>,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn fill(&mut self) -> Result<(), ShutDown> {
        while self.futures.len() < self.buffer {
            let Some(input) = self.input.as_mut() else {
                return Ok(());
            };
            let item = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| input.next()))
            {
                Ok(Some(item)) => item,
                Ok(None) => {
                    self.input = None;
                    return Ok(());
                }
                Err(p) => {
                    self.input = None;
                    self.tail = Some(TaskError::Input {
                        message: crate::codec::panic_message(p.as_ref()),
                    });
                    return Ok(());
                }
            };
            match self.executor.submit(self.f, item) {
                Ok(future) => self.futures.push_back(future),
                Err(ShutDown) => {
                    self.input = None;
                    self.tail = Some(TaskError::Cancelled);
                    return Err(ShutDown);
                }
            }
        }
        Ok(())
    }
}

impl<It, A, R> Iterator for ClusterMap<'_, It, A, R>
where
    It: Iterator<Item = A>,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        let _ = self.fill();
        match self.futures.pop_front() {
            Some(future) => Some(future.result().map_err(|e| match e {
                WaitError::Task(e) => e,
                other => TaskError::Broken {
                    reason: other.to_string(),
                },
            })),
            None => self.tail.take().map(Err),
        }
    }
}
