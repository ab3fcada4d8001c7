//! Scale-out: the executor API across machines, on NATS JetStream (feature `cluster`).
//!
//! A [`ClusterExecutor`] implements [`Executor`](crate::executor::Executor): the code
//! that submits to a [`ProcessPoolExecutor`](crate::executor::ProcessPoolExecutor)
//! submits to a cluster unchanged. Workers are the user's own binary, started as
//! `my-app --multiproc-worker nats://host:4222 [--processes N]` (see
//! [`worker_main_if_requested`]) or through [`worker`]; each runs a local crash-safe
//! process pool and pulls tasks from one durable JetStream consumer.
//!
//! ```text
//!  client (ClusterExecutor)            NATS JetStream                 workers (N hosts)
//!  submit(f, x) ──publish──▶ stream <ns>_TASKS (WorkQueue) ──pull──▶ worker ─▶ local pool
//!       ▲                    consumer <ns>-workers:                    │   AckProgress while
//!       │                    explicit ack, ack_wait, max_deliver       │   the task runs
//!  Future<R> ◀──ordered── stream <ns>_RESULTS ◀──publish result────────┘   then Ack
//!   (first result per task id wins)
//! ```
//!
//! What it promises, each a test in `tests/cluster.rs`:
//! - At-least-once execution, exactly-once results: a task whose worker dies (or whose
//!   ack is lost) runs again; the client completes each future with the first result
//!   for its task id and drops the others.
//! - A worker killed mid-task: the server redelivers the task after `ack_wait`
//!   (seconds, [`ClusterBuilder::ack_wait`]; Celery's visibility timeout is an hour) to
//!   another worker. A local pool process dying under a task sends it back at once.
//! - A task that kills every worker it lands on fails with
//!   [`TaskError::KilledWorker`](crate::TaskError::KilledWorker) after `max_deliver`
//!   attempts (Dask's `KilledWorker`), never loops.
//! - A long task is not redelivered while its worker lives: the worker sends
//!   `AckProgress` every third of `ack_wait`.
//! - A foreign or undecodable message on the task subject is `AckTerm`ed and logged
//!   to the worker's stderr; a task built by another executable is refused with a
//!   result saying so ([`TaskError::Broken`](crate::TaskError::Broken)).
//! - Both streams use file storage and every publish waits for the server's ack: a
//!   server restart loses nothing; client and workers reconnect and go on.
//! - An unreachable server or a refused credential is a [`ClusterError`] at connect,
//!   within [`ClusterBuilder::connect_timeout`].
//!
//! | Python / others | `multiproc::cluster` |
//! |---|---|
//! | `ray.util.multiprocessing.Pool(ray_address=…)`, Dask `Client(address)` | [`Cluster::connect`], [`ClusterExecutor::builder`] |
//! | `executor.submit(fn, x)`, `executor.map(fn, xs)`, `shutdown(wait, cancel_futures)` | [`ClusterExecutor`] (the [`Executor`](crate::executor::Executor) trait) |
//! | `celery worker`, `dask-worker`, `ray start` | [`worker`], [`worker_main_if_requested`] (`--multiproc-worker URL`) |
//! | Dask's `KilledWorker` | [`TaskError::KilledWorker`](crate::TaskError::KilledWorker) |

mod client;
mod wire;
mod worker;

use std::time::Duration;

use async_nats::jetstream;

pub use client::{ClusterBuilder, ClusterExecutor};
pub use worker::{WorkerOptions, worker, worker_main_if_requested};

/// Why a cluster could not be reached or set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The server could not be reached (refused, unresolvable, closed the connection).
    #[error("cannot connect to the NATS server at {url}: {reason}")]
    Disconnected {
        /// The server address given.
        url: String,
        /// What the client library said.
        reason: String,
    },
    /// The server refused the credentials (user/password or token in the URL).
    #[error("the NATS server at {url} refused the credentials: {reason}")]
    Auth {
        /// The server address given (as given: it may hold the credential).
        url: String,
        /// What the server said.
        reason: String,
    },
    /// A wait ran out: for a connection (the connect timeout), for workers
    /// ([`ClusterExecutor::wait_for_workers`]).
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
    },
    /// The server has no JetStream (start it with `-js`), or refused the streams or
    /// the consumer (an existing one with other settings, say).
    #[error("JetStream setup failed: {reason}")]
    JetStream {
        /// What the server said.
        reason: String,
    },
    /// A setting is out of range; names it.
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// The client's runtime threads could not be started.
    #[error("cannot start the client's runtime: {0}")]
    Runtime(String),
    /// The worker's local pool could not be started, or broke.
    #[error("the worker's local pool failed: {0}")]
    Pool(String),
}

/// Where to meet a cluster: [`Cluster::connect`] then [`Cluster::executor`], or
/// [`ClusterExecutor::builder`] for the settings.
///
/// ```no_run
/// # multiproc::init();
/// use multiproc::executor::Executor;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let ex = multiproc::cluster::Cluster::connect("nats://127.0.0.1:4222")?.executor();
/// assert_eq!(ex.submit(square, 7).unwrap().result().unwrap(), 49);
/// # Ok::<(), multiproc::cluster::ClusterError>(())
/// ```
#[derive(Debug)]
pub struct Cluster {
    executor: ClusterExecutor,
}

impl Cluster {
    /// Connects with the default settings ([`ClusterBuilder`]).
    pub fn connect(url: &str) -> Result<Cluster, ClusterError> {
        Ok(Cluster {
            executor: ClusterExecutor::builder().connect(url)?,
        })
    }

    /// The executor that submits to the cluster.
    pub fn executor(self) -> ClusterExecutor {
        self.executor
    }
}

/// The settings client and workers must agree on.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) namespace: String,
}

impl Names {
    /// Checks that `namespace` is one NATS token a stream name may also hold.
    pub(crate) fn new(namespace: &str) -> Result<Names, ClusterError> {
        let ok = !namespace.is_empty()
            && namespace.len() <= 64
            && namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(ClusterError::Invalid(
                "namespace must be 1 to 64 of A-Z, a-z, 0-9, '_', '-'",
            ));
        }
        Ok(Names {
            namespace: namespace.to_string(),
        })
    }
    fn upper(&self) -> String {
        self.namespace.to_ascii_uppercase().replace('-', "_")
    }
    pub(crate) fn task_stream(&self) -> String {
        format!("{}_TASKS", self.upper())
    }
    pub(crate) fn result_stream(&self) -> String {
        format!("{}_RESULTS", self.upper())
    }
    pub(crate) fn task_subject(&self) -> String {
        format!("{}.tasks", self.namespace)
    }
    pub(crate) fn result_subject(&self, client: &str) -> String {
        format!("{}.results.{client}", self.namespace)
    }
    pub(crate) fn consumer(&self) -> String {
        format!("{}-workers", self.namespace)
    }
    pub(crate) fn stop_subject(&self) -> String {
        format!("{}.workers.stop", self.namespace)
    }
    pub(crate) fn ping_subject(&self) -> String {
        format!("{}.workers.ping", self.namespace)
    }
}

/// A fresh random token (from the kernel: a forked process does not repeat its
/// parent's, as it would with a user-space generator's state copied by the fork).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes[..8].copy_from_slice(&(nanos as u64).to_le_bytes());
        bytes[8..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects within `timeout`, reconnecting for ever afterwards (a server restart is
/// waited out, not an error). The connection's inboxes live under `_INBOX.<token>`,
/// `token` fresh from the kernel: async-nats names inboxes from a generator whose
/// state a forked worker would share with its parent and siblings, and two
/// connections with one inbox prefix receive each other's replies.
pub(crate) async fn connect(
    url: &str,
    timeout: Duration,
    token: &str,
    reconnected: Option<std::sync::Arc<tokio::sync::Notify>>,
) -> Result<async_nats::Client, ClusterError> {
    use async_nats::ConnectErrorKind as K;
    let addr: async_nats::ServerAddr = url.parse().map_err(|e| ClusterError::Disconnected {
        url: url.to_string(),
        reason: format!("not a server address: {e}"),
    })?;
    let mut options = async_nats::ConnectOptions::new();
    // Credentials in the URL: `user:password@` or a token alone, `token@`.
    match (addr.username(), addr.password()) {
        (Some(user), Some(pass)) => {
            options = options.user_and_password(user.to_string(), pass.to_string())
        }
        (Some(token), None) => options = options.token(token.to_string()),
        _ => {}
    }
    let options = options
        .custom_inbox_prefix(format!("_INBOX.{token}"))
        .connection_timeout(timeout)
        .max_reconnects(None)
        // Back soon after a server restart: 50 ms, doubling to at most 1 s.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(50u64 << attempts.min(5)).min(Duration::from_secs(1))
        })
        .request_timeout(Some(Duration::from_secs(10)))
        // Told at each reconnection: a consumer that lived in the server before a
        // restart is made again at once, not after async-nats's 15 s of missed
        // heartbeats.
        .event_callback(move |event| {
            let reconnected = reconnected.clone();
            async move {
                if let (async_nats::Event::Connected, Some(n)) = (event, reconnected) {
                    n.notify_one();
                }
            }
        });
    match tokio::time::timeout(timeout, options.connect(addr)).await {
        Err(_) => Err(ClusterError::Timeout {
            what: format!("a connection to the NATS server at {url}"),
            after: timeout,
        }),
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(match e.kind() {
            K::AuthorizationViolation | K::Authentication => ClusterError::Auth {
                url: url.to_string(),
                reason: e.to_string(),
            },
            K::TimedOut => ClusterError::Timeout {
                what: format!("a connection to the NATS server at {url}"),
                after: timeout,
            },
            _ => ClusterError::Disconnected {
                url: url.to_string(),
                reason: e.to_string(),
            },
        }),
    }
}

/// The task stream with its shared consumer, and the result stream, made if missing.
pub(crate) async fn streams(
    js: &jetstream::Context,
    names: &Names,
    ack_wait: Duration,
    max_deliver: u32,
) -> Result<
    (
        jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
        jetstream::stream::Stream,
    ),
    ClusterError,
> {
    use jetstream::stream::{Config, RetentionPolicy, StorageType};
    let setup = |e: &dyn std::fmt::Display| ClusterError::JetStream {
        reason: e.to_string(),
    };
    let tasks = js
        .get_or_create_stream(Config {
            name: names.task_stream(),
            subjects: vec![names.task_subject()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| setup(&e))?;
    let results = js
        .get_or_create_stream(Config {
            name: names.result_stream(),
            subjects: vec![format!("{}.results.>", names.namespace)],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            // A result nobody read (its client died) goes after a day.
            max_age: Duration::from_secs(24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| setup(&e))?;
    let consumer = tasks
        .get_or_create_consumer(
            &names.consumer(),
            jetstream::consumer::pull::Config {
                durable_name: Some(names.consumer()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                // One delivery more than the attempts: the last one only reports that
                // the task killed its worker each time (see `worker`).
                max_deliver: i64::from(max_deliver) + 1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| setup(&e))?;
    Ok((consumer, results))
}

/// A multi-threaded tokio runtime of `threads` threads named `multiproc-<what>`.
pub(crate) fn runtime(what: &str, threads: usize) -> Result<tokio::runtime::Runtime, ClusterError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(format!("multiproc-{what}"))
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Runtime(e.to_string()))
}
