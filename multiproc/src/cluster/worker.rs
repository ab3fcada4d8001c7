//! The worker: pulls tasks from the shared consumer, runs them in a local process pool,
//! publishes each result, then acks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use parking_lot::Mutex;

use super::wire::{self, Ending, ResultMsg, TaskMsg};
use super::{ClusterError, Names};
use crate::future::TaskError;
use crate::pool::{Core, PoolBuilder, SettingWords, Sink};
use crate::process::StartMethod;
use crate::process::child::Outcome;

/// How a worker runs ([`worker`]). Build it with struct-update syntax:
/// `WorkerOptions { url: "nats://…".into(), processes: 4, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The server (`nats://[user:password@]host:port`).
    pub url: String,
    /// How many local worker processes run tasks at once. Default: the cores.
    pub processes: usize,
    /// The namespace of the streams and consumer (as the clients'). Default `multiproc`.
    pub namespace: String,
    /// Used when this worker is the first to make the consumer (as the clients'
    /// [`ack_wait`](super::ClusterBuilder::ack_wait)); a worker sends a heartbeat every
    /// third of the consumer's `ack_wait`, whoever made it. Default 10 s.
    pub ack_wait: Duration,
    /// Used when this worker is the first to make the consumer. Default 3.
    pub max_deliver: u32,
    /// How many tasks the worker holds at once: running, or waiting in the local pool
    /// for a process (Celery's prefetch): more pipelines better, but a task waiting
    /// behind a long one is not free for another worker. At least `processes`.
    /// Default: 2 × the default `processes`.
    pub prefetch: usize,
    /// The local pool's start method; `None` for the global one.
    pub start_method: Option<StartMethod>,
    /// How long to wait for the server at start. Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            url: "nats://127.0.0.1:4222".into(),
            processes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch: 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            namespace: "multiproc".into(),
            ack_wait: Duration::from_secs(10),
            max_deliver: 3,
            start_method: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Runs a worker until a stop message arrives on `<namespace>.workers.stop` (see
/// [`ClusterExecutor::stop_workers`](super::ClusterExecutor::stop_workers)) or the
/// process is killed (its tasks then go to other workers after `ack_wait`). Blocking;
/// call it from `main` after [`init`](crate::init).
///
/// The worker pulls tasks from the shared durable consumer while it holds fewer than
/// `prefetch`, runs each in the local crash-safe pool of `processes`, sends `AckProgress` every third of
/// `ack_wait` while it runs, publishes the result (waiting for the server's ack) and
/// then acks the task. A task whose local process dies is handed back (`Nak`) for
/// another try, until its attempts are used up: then its result is
/// [`TaskError::KilledWorker`]. A message that is not a multiproc task is `AckTerm`ed
/// and logged to stderr; a task from another executable is refused with a result
/// saying so, and `AckTerm`ed.
pub fn worker(options: WorkerOptions) -> Result<(), ClusterError> {
    const WORDS: SettingWords = SettingWords {
        processes: "processes must be at least 1",
        max_tasks: "max_tasks_per_child must be at least 1",
    };
    let names = Names::new(&options.namespace)?;
    let exe = wire::exe_identity().map_err(ClusterError::Runtime)?;
    let mut pool = PoolBuilder::new().processes(options.processes);
    if let Some(method) = options.start_method {
        pool = pool.start_method(method);
    }
    let core = Arc::new(
        pool.prefix("ClusterWorker")
            .start_core(&WORDS)
            .map_err(|e| ClusterError::Pool(e.to_string()))?,
    );
    let runtime = super::runtime("cluster-worker", 2)?;
    let outcome = runtime.block_on(serve(&options, &names, exe, &core));
    runtime.shutdown_timeout(Duration::from_secs(5));
    core.close(false);
    core.join();
    outcome
}

/// What every slot of a worker shares.
struct Slots {
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    js: jetstream::Context,
    names: Names,
    exe: [u8; 16],
    core: Arc<Core>,
    heartbeat: Duration,
    stop: AtomicBool,
    /// Why the local pool stopped taking tasks, if it did.
    broken: Mutex<Option<String>>,
}

async fn serve(
    options: &WorkerOptions,
    names: &Names,
    exe: [u8; 16],
    core: &Arc<Core>,
) -> Result<(), ClusterError> {
    let me = super::random_token();
    let client = super::connect(&options.url, options.connect_timeout, &me, None).await?;
    let js = jetstream::new(client.clone());
    let (mut consumer, _results) =
        super::streams(&js, names, options.ack_wait, options.max_deliver).await?;
    let ack_wait = match consumer.info().await {
        Ok(info) => info.config.ack_wait,
        Err(_) => options.ack_wait,
    };
    let mut stop =
        client
            .subscribe(names.stop_subject())
            .await
            .map_err(|e| ClusterError::Disconnected {
                url: options.url.clone(),
                reason: e.to_string(),
            })?;
    let mut ping =
        client
            .subscribe(names.ping_subject())
            .await
            .map_err(|e| ClusterError::Disconnected {
                url: options.url.clone(),
                reason: e.to_string(),
            })?;
    let answerer = client.clone();
    let pings = tokio::spawn(async move {
        while let Some(m) = ping.next().await {
            if let Some(reply) = m.reply {
                let _ = answerer.publish(reply, me.clone().into()).await;
            }
        }
    });
    let slots = Arc::new(Slots {
        consumer,
        js,
        names: names.clone(),
        exe,
        core: Arc::clone(core),
        heartbeat: (ack_wait / 3).max(Duration::from_millis(20)),
        stop: AtomicBool::new(false),
        broken: Mutex::new(None),
    });
    let window = options.prefetch.max(options.processes);
    let mut puller = tokio::spawn(pull(Arc::clone(&slots), window));
    tokio::select! {
        _ = stop.next() => {}
        _ = &mut puller => {} // it ends before a stop only when the pool broke
    }
    slots.stop.store(true, Ordering::Release);
    let _ = puller.await;
    pings.abort();
    let _ = client.drain().await;
    match slots.broken.lock().take() {
        Some(reason) => Err(ClusterError::Pool(reason)),
        None => Ok(()),
    }
}

/// Pulls tasks while fewer than `window` are held (running or queued in the local pool,
/// each kept alive by its heartbeats), one pull request for as many as there is room
/// for; runs each as its own tokio task. Ends at a stop, or when the local pool broke.
async fn pull(slots: Arc<Slots>, window: usize) {
    let room = Arc::new(tokio::sync::Semaphore::new(window));
    let mut running = tokio::task::JoinSet::new();
    while !slots.stop.load(Ordering::Acquire) {
        while let Some(done) = running.try_join_next() {
            if let Ok(false) = done {
                slots.stop.store(true, Ordering::Release);
            }
        }
        let Ok(first) = Arc::clone(&room).acquire_owned().await else {
            break;
        };
        let mut held = vec![first];
        while let Ok(p) = Arc::clone(&room).try_acquire_owned() {
            held.push(p);
        }
        let batch = slots
            .consumer
            .batch()
            .max_messages(held.len())
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(_) => {
                // The server is away (restarting, say): try again shortly.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(next) = batch.next().await {
            let Ok(msg) = next else { break };
            let Some(permit) = held.pop() else {
                // More than asked for: hand it back for another.
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                continue;
            };
            let slots = Arc::clone(&slots);
            running.spawn(async move {
                let ok = run(&slots, msg).await;
                drop(permit);
                ok
            });
        }
    }
    while let Some(done) = running.join_next().await {
        if let Ok(false) = done {
            slots.stop.store(true, Ordering::Release);
        }
    }
}

/// Hands the local pool's verdict to the slot waiting for it.
struct Relay(Mutex<Option<tokio::sync::oneshot::Sender<Result<Outcome, TaskError>>>>);

impl Relay {
    fn send(&self, outcome: Result<Outcome, TaskError>) {
        if let Some(tx) = self.0.lock().take() {
            let _ = tx.send(outcome);
        }
    }
}

impl Sink for Relay {
    fn start(&self) -> bool {
        true
    }
    fn complete(&self, _items: std::ops::Range<usize>, outcomes: Vec<Outcome>) {
        self.send(
            outcomes
                .into_iter()
                .next()
                .ok_or_else(|| TaskError::serialization("the worker sent no result")),
        );
    }
    fn fail(&self, _items: std::ops::Range<usize>, error: TaskError) {
        self.send(Err(error));
    }
    fn cancel(&self, _items: std::ops::Range<usize>) {
        self.send(Err(TaskError::Cancelled));
    }
}

/// Runs one delivered message to its end; `false` if the local pool broke (the task
/// was handed back).
async fn run(slots: &Slots, msg: jetstream::Message) -> bool {
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1).max(1);
    let task: TaskMsg = match wire::decode(&msg.payload) {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "multiproc cluster worker {}: AckTerm of a message on {} ({} bytes): {why}",
                std::process::id(),
                msg.subject,
                msg.payload.len()
            );
            let _ = msg.ack_with(AckKind::Term).await;
            return true;
        }
    };
    if task.exe != slots.exe {
        let reason = format!(
            "worker {} runs another executable (identity {}) than the client (identity {}): \
             every host must run the same build",
            std::process::id(),
            hex(&slots.exe),
            hex(&task.exe)
        );
        eprintln!(
            "multiproc cluster worker: refused task {}.{}: {reason}",
            task.client, task.id
        );
        report(slots, &task, Ending::Refused(reason)).await;
        let _ = msg.ack_with(AckKind::Term).await;
        return true;
    }
    let attempts = task.attempts.max(1);
    if delivered > i64::from(attempts) {
        // Its worker died on each attempt, the whole worker this time (no Nak came).
        report(slots, &task, Ending::KilledWorker(attempts)).await;
        let _ = msg.ack().await;
        return true;
    }
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let relay: Arc<dyn Sink> = Arc::new(Relay(Mutex::new(Some(tx))));
    let id = slots.core.next_id();
    let args = task.args.clone();
    if let Err(refused) = slots
        .core
        .submit([(id, task.entry, task.target, args, relay)], task.limit)
    {
        *slots.broken.lock() = Some(format!("{refused:?}"));
        let _ = msg.ack_with(AckKind::Nak(None)).await;
        return false;
    }
    let mut heartbeat = tokio::time::interval(slots.heartbeat);
    heartbeat.tick().await;
    let outcome = loop {
        tokio::select! {
            outcome = &mut rx => break outcome.unwrap_or(Err(TaskError::Cancelled)),
            _ = heartbeat.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    };
    let ending = match outcome {
        Ok(Outcome::Returned(body)) => Ending::Returned(body),
        Ok(Outcome::Panicked(m, _)) => Ending::Panicked(m),
        Ok(Outcome::Codec(m)) | Ok(Outcome::Bootstrap(m)) => Ending::Codec(m),
        Err(TaskError::TimedOut { limit }) => Ending::TimedOut(limit),
        Err(TaskError::WorkerDied { pid, status }) => {
            if delivered < i64::from(attempts) {
                eprintln!(
                    "multiproc cluster worker {}: task {}.{} killed local process {pid} ({status}) \
                     on attempt {delivered} of {attempts}: handed back",
                    std::process::id(),
                    task.client,
                    task.id
                );
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                return true;
            }
            Ending::KilledWorker(attempts)
        }
        Err(e) => Ending::Refused(e.to_string()),
    };
    report(slots, &task, ending).await;
    let _ = msg.ack().await;
    true
}

/// Publishes a result until the server acks it (the message id lets the server drop
/// a second result of a task run twice within two minutes; the client drops any
/// later one).
async fn report(slots: &Slots, task: &TaskMsg, ending: Ending) {
    let result = ResultMsg {
        id: task.id,
        ending,
    };
    let bytes: bytes::Bytes = match wire::encode(&result) {
        Ok(b) => b.into(),
        Err(e) => match wire::encode(&ResultMsg {
            id: task.id,
            ending: Ending::Codec(format!("cannot encode the result message: {e}")),
        }) {
            Ok(b) => b.into(),
            Err(_) => return,
        },
    };
    let subject = slots.names.result_subject(&task.client);
    let msg_id = format!("{}.{}", task.client, task.id);
    let mut backoff = Duration::from_millis(20);
    loop {
        let publish = jetstream::message::PublishMessage::build()
            .payload(bytes.clone())
            .message_id(&msg_id);
        if let Ok(ack) = slots.js.send_publish(subject.clone(), publish).await {
            if ack.await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Becomes a worker if the process was started as `<exe> --multiproc-worker URL
/// [--processes N] [--prefetch N] [--namespace NS]`: runs [`worker`] and exits (0 when stopped, 1
/// with the error on stderr); returns at once otherwise. Call it in `main` right after
/// [`init`](crate::init), so that every host runs the user's own binary.
///
/// ```no_run
/// // First in `main`:
/// multiproc::init();
/// multiproc::cluster::worker_main_if_requested();
/// // ... the application, which may submit to the cluster ...
/// ```
pub fn worker_main_if_requested() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--multiproc-worker") {
        return;
    }
    let code = match parse_worker_args(&args[2..]) {
        Ok(options) => match worker(options) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("multiproc worker: {e}");
                1
            }
        },
        Err(usage) => {
            eprintln!("multiproc worker: {usage}");
            2
        }
    };
    std::process::exit(code);
}

/// The options after `--multiproc-worker`.
fn parse_worker_args(args: &[String]) -> Result<WorkerOptions, String> {
    const USAGE: &str =
        "usage: --multiproc-worker nats://host:port [--processes N] [--namespace NS]";
    let mut options = WorkerOptions::default();
    let mut it = args.iter();
    options.url = it.next().ok_or(USAGE)?.clone();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(USAGE)?;
        match flag.as_str() {
            "--processes" => {
                options.processes = value
                    .parse()
                    .map_err(|_| format!("--processes {value}: not a number; {USAGE}"))?
            }
            "--namespace" => options.namespace = value.clone(),
            "--prefetch" => {
                options.prefetch = value
                    .parse()
                    .map_err(|_| format!("--prefetch {value}: not a number; {USAGE}"))?
            }
            _ => return Err(format!("unknown option {flag}; {USAGE}")),
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_arguments_parse_and_a_bad_one_is_named() {
        let args: Vec<String> = ["nats://h:1", "--processes", "3", "--namespace", "ns"]
            .map(String::from)
            .into();
        let o = parse_worker_args(&args).unwrap();
        assert_eq!(
            (o.url.as_str(), o.processes, o.namespace.as_str()),
            ("nats://h:1", 3, "ns")
        );
        let bad: Vec<String> = ["nats://h:1", "--processes", "x"].map(String::from).into();
        assert!(
            parse_worker_args(&bad)
                .unwrap_err()
                .contains("--processes x")
        );
        assert!(parse_worker_args(&[]).unwrap_err().starts_with("usage"));
    }
}
