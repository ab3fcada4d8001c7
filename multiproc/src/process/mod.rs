//! Processes: Python's `multiprocessing.Process`, natively (S1 S2 S8 S9 S17 S19 S23 S26
//! S27 S28 S34).
//!
//! A [`Process`] runs a function — or a value implementing [`Run`] — in a child process
//! and gives back its return value. Arguments and results cross the process boundary
//! with serde; under the `fork` start method a closure can run too.
//!
//! ```
//! # multiproc::init();
//! use multiproc::Process;
//!
//! fn hello(name: String) -> String {
//!     format!("hello, {name}, from pid {}", std::process::id())
//! }
//!
//! let mut child = Process::start(hello, "shiyanlou".to_string()).unwrap();
//! let greeting = child.join().unwrap();
//! assert!(greeting.starts_with("hello, shiyanlou"));
//! assert!(child.exit_status().unwrap().success());
//! ```
//!
//! # What multiproc promises about children
//!
//! * **A child never outlives its parent.** Every child has `PR_SET_PDEATHSIG = SIGKILL`
//!   towards a thread that lives as long as its parent process, so it dies when the
//!   parent dies, even by `SIGKILL`. At a normal exit the parent terminates its daemon
//!   children and waits for the others, like CPython.
//! * **A panic in `main` does not hang the program.** At an exit after a panic (exit
//!   status 101: `main` panicked, or a test failed) the children get one second to end;
//!   those still running are named on stderr and terminated (`SIGTERM`, then `SIGKILL`
//!   after another second). CPython joins them even then, and hangs when a child waits
//!   for something the failed code would have done. The panic is noticed by a panic
//!   hook multiproc puts in front of yours when the first child starts: a hook you set
//!   later with `std::panic::set_hook` replaces it unless it calls the one it took
//!   (`std::panic::take_hook`). A panic in another thread that `main` survives does not
//!   count: `main` then exits with its own status.
//! * **No zombie is left.** `join`/`wait` reap; dropping a handle of a running child
//!   hands it to a reaper thread; a finished child is reaped at once.
//! * **A crash stays in the child** (S17): a panic becomes [`ProcessError::Panicked`]
//!   with its message (also printed on the child's stderr); a signal (abort, segfault,
//!   `terminate`) becomes [`ProcessError::Signaled`]; the parent carries on.
//! * **A target that returns `Err(e)` fails as a `main` would**: `Error: {e:?}` on the
//!   child's stderr and exit code 1 (Python: a target that raises exits with 1), while
//!   `join` still gives the value, `Ok(Err(e))`.
//!
//! # Outliving the parent, the parent's view, closing
//!
//! The first promise is the default. A child that must outlive its parent, as a
//! non-daemon Python child does when its parent is killed, opts out with
//! [`ProcessBuilder::die_with_parent(false)`](ProcessBuilder::die_with_parent): it is
//! then re-parented (to the nearest subreaper, or init, which reaps it) and sees its
//! parent end through [`parent_process`]. At a normal exit the parent still waits for
//! it (or terminates it, a daemon), as for any child. [`Process::close`] releases a
//! finished child's handle, [`Process::sentinel`] gives a descriptor to wait on, and a
//! [`Context`](crate::context::Context) fixes the start method of what it starts.
//!
//! ```
//! # multiproc::init();
//! use std::time::Duration;
//! use multiproc::{Process, ProcessError, parent_process};
//!
//! fn child(_: ()) -> (String, bool) {
//!     let parent = parent_process().expect("started by multiproc");
//!     // The parent waits for us: joining it times out.
//!     let waited = parent.join_timeout(Duration::from_millis(1));
//!     (parent.name().to_string(), matches!(waited, Err(ProcessError::Timeout)))
//! }
//!
//! let mut p = Process::builder().die_with_parent(false).start(child, ()).unwrap();
//! assert_eq!(p.join().unwrap(), ("MainProcess".to_string(), true));
//! p.close().unwrap();
//! assert!(matches!(p.join(), Err(ProcessError::Closed)));
//! ```

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) mod child;
pub(crate) mod info;
pub(crate) mod runtime;
pub(crate) mod start;

mod status;

pub use child::{EXIT_BOOTSTRAP, EXIT_ORPHANED, EXIT_PANIC};
pub use info::{ParentProcess, ProcessInfo, current_process, parent_pid, parent_process};
pub use runtime::{init, set_fork_warning};
pub use status::ExitStatus;

use crate::codec::{self, CodecError, Limits};
use crate::sys;
use child::Outcome;
use info::ChildInfo;
use runtime::{Registered, runtime};
use start::Job;

/// How a child process is created. See the module documentation of
/// `process::start` for the mechanics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum StartMethod {
    /// `fork()` the parent. Fastest; can run closures; the child inherits a copy of the
    /// parent's memory. **Hazard**: if the parent has other threads, locks they held at
    /// the fork stay locked in the child (CPython deprecates fork in threaded programs
    /// for this reason; multiproc warns once, as CPython 3.12 does).
    Fork,
    /// Re-execute the current binary; the child's `multiproc::init()` runs the function.
    /// Nothing is inherited but the arguments. Slowest to start.
    Spawn,
    /// Ask a single-threaded server process (started on first use, itself spawned) to
    /// fork a child. Safe in threaded programs, much faster than spawn. The default, as
    /// in Python 3.14 on Linux.
    ForkServer,
}

impl StartMethod {
    /// Every start method, in Python's order of `get_all_start_methods()`.
    pub const ALL: [StartMethod; 3] = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ];

    /// Python's name for it.
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }
}

impl std::str::FromStr for StartMethod {
    type Err = StartError;
    fn from_str(s: &str) -> Result<Self, StartError> {
        match s {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::ForkServer),
            _ => Err(StartError::Unsupported("unknown start method")),
        }
    }
}

impl std::fmt::Display for StartMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

static DEFAULT_METHOD: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

/// Sets the start method used when a builder names none (Python's
/// `set_start_method`). The initial default is [`StartMethod::ForkServer`].
pub fn set_start_method(method: StartMethod) {
    let v = match method {
        StartMethod::Fork => 0,
        StartMethod::Spawn => 1,
        StartMethod::ForkServer => 2,
    };
    DEFAULT_METHOD.store(v, Ordering::Relaxed);
}

/// The start method used when a builder names none (Python's `get_start_method`).
pub fn get_start_method() -> StartMethod {
    match DEFAULT_METHOD.load(Ordering::Relaxed) {
        0 => StartMethod::Fork,
        1 => StartMethod::Spawn,
        _ => StartMethod::ForkServer,
    }
}

/// A process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `spawn`/`forkserver` need `multiproc::init()` at the top of `main` (or
    /// `multiproc::test_support!()` in a test binary).
    #[error(
        "multiproc::init() was not called: the spawn and forkserver start methods re-execute this \
         binary, whose main must call multiproc::init() first (test binaries: multiproc::test_support!())"
    )]
    NotInitialized,
    /// The forkserver could not take its role: it found other threads running, or it
    /// ended, before `multiproc::init()` ran in it. It takes its role before `main`
    /// (see [`init`]), so only code that runs earlier still can, such as a constructor
    /// (`.init_array`) of another library; the text says which. `spawn` needs no
    /// single-threaded server.
    #[error(
        "{0}: the forkserver must reach multiproc::init() single-threaded (it takes its role \
         before main; call multiproc::init() first in main, start no thread before it), or \
         use StartMethod::Spawn"
    )]
    InitNotFirst(String),
    /// The request does not fit the start method (for example a closure under `spawn`).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The arguments could not be serialised.
    #[error("cannot send the arguments: {0}")]
    Codec(#[from] CodecError),
    /// The operating system refused (fork, exec, socket, pidfd).
    #[error("cannot start the process: {0}")]
    Io(#[from] std::io::Error),
}

/// A child did not deliver a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The target panicked; the message is the panic's.
    #[error("process {pid} panicked: {message}")]
    Panicked {
        /// The child's pid.
        pid: u32,
        /// The panic message.
        message: String,
    },
    /// The child was killed by a signal (terminate, kill, abort, segfault, OOM killer).
    #[error("process {pid} was killed by {status}")]
    Signaled {
        /// The child's pid.
        pid: u32,
        /// Its exit status (`status.signal()` is `Some`).
        status: ExitStatus,
    },
    /// The child exited without delivering a result (for example by calling
    /// `std::process::exit` in the target).
    #[error("process {pid} exited with {status} before returning a result")]
    Exited {
        /// The child's pid.
        pid: u32,
        /// Its exit status.
        status: ExitStatus,
    },
    /// The child could not start its target (bootstrap failure).
    #[error("process {pid} could not run its target: {message}")]
    Bootstrap {
        /// The child's pid.
        pid: u32,
        /// What went wrong.
        message: String,
    },
    /// The arguments or the result did not (de)serialise.
    #[error("process {pid}: {message}")]
    Serialization {
        /// The child's pid.
        pid: u32,
        /// What went wrong.
        message: String,
    },
    /// The result arrived but did not decode as the expected type.
    #[error("process result: {0}")]
    Codec(#[from] CodecError),
    /// `join_timeout` ran out of time; the child is still running (join again later).
    #[error("timed out waiting for the process")]
    Timeout,
    /// The result was already taken by an earlier `join`.
    #[error("the process was already joined (exit status {0})")]
    AlreadyJoined(ExitStatus),
    /// [`Process::close`] on a child that still runs (Python's `ValueError`): join,
    /// terminate or kill it first. The handle is left as it was.
    #[error("cannot close a process that is still running; join, terminate or kill it first")]
    StillRunning,
    /// The handle was closed by [`Process::close`] (Python's `ValueError: process
    /// object is closed`).
    #[error("the process object is closed")]
    Closed,
    /// Waiting failed at the operating-system level.
    #[error("waiting for the process: {0}")]
    Io(#[from] std::io::Error),
}

/// The Python-style subclass of `Process` that overrides `run()` (S23, S20): implement
/// `Run` for a serialisable type and start it with [`Process::start_run`] (or a thread
/// with [`crate::thread::Thread::start_run`]).
///
/// ```
/// # multiproc::init();
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Countdown { from: u32 }
///
/// impl multiproc::Run for Countdown {
///     type Output = Vec<u32>;
///     fn run(self) -> Vec<u32> { (0..=self.from).rev().collect() }
/// }
///
/// let mut p = multiproc::Process::start_run(Countdown { from: 3 }).unwrap();
/// assert_eq!(p.join().unwrap(), vec![3, 2, 1, 0]);
/// ```
pub trait Run {
    /// What `run` returns (sent back to the parent for processes).
    type Output;
    /// The body of the process or thread.
    fn run(self) -> Self::Output;
}

/// Configuration of a process before it starts (Python's `Process(...)` keyword
/// arguments): name, daemon flag, start method.
///
/// ```
/// # multiproc::init();
/// use multiproc::{Process, StartMethod};
/// let mut p = Process::builder()
///     .name("worker")
///     .daemon(true)
///     .start_method(StartMethod::Spawn)
///     .start(|(a, b): (i32, i32)| a + b, (2, 3))
///     .unwrap();
/// assert_eq!(p.name(), "worker");
/// assert_eq!(p.join().unwrap(), 5);
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct ProcessBuilder {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    /// Set by a [`Context`](crate::context::Context): the method its builders use,
    /// which [`start_method`](Self::start_method) may not change.
    fixed_method: Option<StartMethod>,
    limits: Option<Limits>,
    /// `die_with_parent(false)`.
    outlive_parent: bool,
}

impl ProcessBuilder {
    /// A builder with Python's defaults: name `Process-N`, not a daemon, the global
    /// start method.
    pub fn new() -> ProcessBuilder {
        ProcessBuilder::default()
    }

    /// The child's name (`current_process().name` in the child).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon child is terminated when its parent exits normally; a non-daemon child
    /// is waited for (after a panic in `main`, for one second only: see the module
    /// docs). Either kind dies if its parent dies abnormally.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// The start method of this child (default: [`get_start_method`]). A builder made
    /// by a [`Context`](crate::context::Context) keeps its context's method: naming
    /// another one makes `start` fail with [`StartError::Unsupported`].
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// A builder whose start method is fixed (a context's).
    pub(crate) fn fixed_start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self.fixed_method = Some(method);
        self
    }

    /// Whether the child dies when this process dies (default `true`).
    ///
    /// By default every child holds `PR_SET_PDEATHSIG = SIGKILL`: however this process
    /// ends — a crash, `SIGKILL` — its children die with it, so none is left running
    /// unsupervised (a promise of the crate, see the module docs). `false` gives
    /// Python's behaviour instead: the child keeps running when its parent dies
    /// abnormally, is re-parented (to the nearest subreaper, or init, which reaps it),
    /// and [`parent_process`] then reports its parent not alive. At a *normal* exit
    /// the parent still terminates such a child if it is a daemon, and waits for it
    /// otherwise, as for any child.
    ///
    /// The child holds the signal until it has read what it runs, so a parent that
    /// dies while the child starts still takes it along.
    pub fn die_with_parent(mut self, die: bool) -> Self {
        self.outlive_parent = !die;
        self
    }

    /// The method a start uses, or why it may not.
    fn method(&self) -> Result<StartMethod, StartError> {
        let method = self.method.unwrap_or_else(get_start_method);
        match self.fixed_method {
            Some(fixed) if fixed != method => Err(StartError::Unsupported(
                "this builder's context fixes its start method; get another context with \
                 multiproc::get_context instead",
            )),
            _ => Ok(method),
        }
    }

    /// The largest result the parent accepts (default 1 GiB).
    pub fn max_result_size(mut self, bytes: usize) -> Self {
        self.limits = Some(Limits::with_max_message(bytes));
        self
    }

    /// Starts `target(args)` in a child. `target` is a function or a closure that
    /// captures nothing (it is sent by address under `spawn`/`forkserver`); several
    /// arguments go in a tuple. Under `spawn`/`forkserver`, `args` may hold at most 64
    /// handles with a descriptor (queues, pipes, locks…): more is
    /// [`StartError::Unsupported`].
    pub fn start<A, R>(self, target: fn(A) -> R, args: A) -> Result<Process<R>, StartError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let method = self.method()?;
        if method == StartMethod::Fork {
            return self.launch(
                method,
                Job::Closure(Box::new(move || child::run_caught(move || target(args)))),
            );
        }
        let (args, fds) = crate::handle::collect_fds(|| codec::encode(&args));
        let args = (args?, fds);
        let entry: child::Entry = child::entry_fn::<A, R>;
        self.launch_bootstrap(
            method,
            sys::entry::FnAddr::of(entry),
            sys::entry::FnAddr::of(target),
            args,
        )
    }

    /// Starts `obj.run()` in a child (Python's `Process` subclass with `run()`).
    pub fn start_run<T>(self, obj: T) -> Result<Process<T::Output>, StartError>
    where
        T: Run + Serialize + DeserializeOwned + Send + 'static,
        T::Output: Serialize + DeserializeOwned + 'static,
    {
        let method = self.method()?;
        if method == StartMethod::Fork {
            return self.launch(
                method,
                Job::Closure(Box::new(move || child::run_caught(move || obj.run()))),
            );
        }
        let (args, fds) = crate::handle::collect_fds(|| codec::encode(&obj));
        let args = (args?, fds);
        let entry: child::Entry = child::entry_run::<T>;
        self.launch_bootstrap(
            method,
            sys::entry::FnAddr::of(entry),
            sys::entry::FnAddr::of(entry),
            args,
        )
    }

    /// Forks a child that runs the closure `f` (always the `fork` start method: a
    /// closure cannot cross an exec). Fails with [`StartError::Unsupported`] if the
    /// builder named another method.
    pub fn start_closure<F, R>(self, f: F) -> Result<Process<R>, StartError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        match self.method {
            None | Some(StartMethod::Fork) => {}
            Some(_) => return Err(StartError::Unsupported("closures need StartMethod::Fork")),
        }
        if self.fixed_method.is_some_and(|m| m != StartMethod::Fork) {
            return Err(StartError::Unsupported("closures need StartMethod::Fork"));
        }
        self.launch(
            StartMethod::Fork,
            Job::Closure(Box::new(move || child::run_caught(f))),
        )
    }

    fn launch_bootstrap<R: DeserializeOwned>(
        self,
        method: StartMethod,
        entry: sys::entry::FnAddr,
        target: sys::entry::FnAddr,
        (args, fds): (Vec<u8>, Vec<OwnedFd>),
    ) -> Result<Process<R>, StartError> {
        const _: () = assert!(sys::fd::MAX_FDS_PER_READ == 64, "the message says 64");
        if fds.len() > sys::fd::MAX_FDS_PER_READ {
            // The child takes the bootstrap's descriptors in one read of at most this
            // many (and the kernel passes at most 253 in one message): more would be
            // lost, or the bootstrap never sent while the child waits for it.
            return Err(StartError::Unsupported(
                "more than 64 handles holding a descriptor in one process's arguments",
            ));
        }
        let exe = sys::proc::exe_identity()?;
        let (info, number) = self.child_info(method);
        let boot = child::Bootstrap {
            exe,
            entry,
            target,
            info: info.clone(),
            args,
        };
        let frame = codec::encode_frame(&boot, &Limits::default())?;
        self.finish_launch(method, info, number, Job::Bootstrap(frame, fds))
    }

    fn launch<R: DeserializeOwned>(
        self,
        method: StartMethod,
        job: Job,
    ) -> Result<Process<R>, StartError> {
        let (info, number) = self.child_info(method);
        self.finish_launch(method, info, number, job)
    }

    fn child_info(&self, method: StartMethod) -> (ChildInfo, u32) {
        let number = runtime().counter.fetch_add(1, Ordering::Relaxed) + 1;
        let identity = info::child_identity(number);
        let name = self.name.clone().unwrap_or_else(|| {
            let parts: Vec<String> = identity.iter().map(u32::to_string).collect();
            format!("Process-{}", parts.join(":"))
        });
        let info = ChildInfo {
            name,
            identity,
            daemon: self.daemon,
            parent_pid: sys::proc::getpid(),
            parent_name: info::current_name(),
            method,
            die_with_parent: !self.outlive_parent,
        };
        (info, number)
    }

    fn finish_launch<R: DeserializeOwned>(
        self,
        method: StartMethod,
        info: ChildInfo,
        _number: u32,
        job: Job,
    ) -> Result<Process<R>, StartError> {
        let name = info.name.clone();
        let launched = start::starter(method).start(info, job)?;
        let pidfd = Arc::new(launched.pidfd);
        let rt = runtime();
        rt.register(
            launched.pid,
            Registered {
                name: name.clone(),
                daemon: self.daemon,
                pidfd: pidfd.clone(),
            },
        );
        runtime::install_exit_hook();
        Ok(Process {
            pid: launched.pid,
            name,
            daemon: self.daemon,
            method,
            pidfd: Some(pidfd),
            chan: Some(launched.chan),
            bootstrap_unread: launched.bootstrap_unread,
            buf: Vec::new(),
            limits: self.limits.unwrap_or_default(),
            status: None,
            result: None,
            closed: false,
            keep_sentinel: AtomicBool::new(false),
            ended_sentinel: std::sync::OnceLock::new(),
            _result: PhantomData,
        })
    }
}

/// A started child process (Python's `Process` after `start()`), whose target returns
/// `R`.
///
/// Dropping the handle of a running child does not block and does not kill it: a
/// reaper thread waits for it (a daemon is terminated, and a non-daemon waited for,
/// when this process exits; either dies if this process dies).
#[derive(Debug)]
pub struct Process<R> {
    pid: u32,
    name: String,
    daemon: bool,
    method: StartMethod,
    /// `None` once reaped: a finished handle keeps no descriptor open.
    pidfd: Option<Arc<OwnedFd>>,
    chan: Option<OwnedFd>,
    buf: Vec<u8>,
    limits: Limits,
    status: Option<ExitStatus>,
    result: Option<Result<R, ProcessError>>,
    /// The child ended without reading all of its bootstrap (sending it failed, or its
    /// end was closed with bytes unread: `ECONNRESET`), so it never reached `init()`.
    bootstrap_unread: bool,
    /// `close()` was called: the handle holds nothing and refuses every call.
    closed: bool,
    /// [`sentinel`](Process::sentinel) was asked for: the pidfd stays open after the
    /// reap, until `close()` or drop, so the sentinel stays valid as Python's does.
    keep_sentinel: AtomicBool,
    /// The sentinel of a child reaped before it was asked for (see `sentinel`).
    ended_sentinel: std::sync::OnceLock<OwnedFd>,
    _result: PhantomData<fn() -> R>,
}

impl Process<()> {
    /// A builder (Python's `Process(name=…, daemon=…)` with `get_context(method)`).
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::new()
    }
}

impl<R: DeserializeOwned + 'static> Process<R> {
    /// Starts `target(args)` in a child with the default settings (Python's
    /// `Process(target=f, args=(...)).start()`).
    pub fn start<A>(target: fn(A) -> R, args: A) -> Result<Process<R>, StartError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize,
    {
        ProcessBuilder::new().start(target, args)
    }

    /// Starts `obj.run()` in a child with the default settings.
    pub fn start_run<T>(obj: T) -> Result<Process<R>, StartError>
    where
        T: Run<Output = R> + Serialize + DeserializeOwned + Send + 'static,
        R: Serialize,
    {
        ProcessBuilder::new().start_run(obj)
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the child is a daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// How the child was started.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Whether the child is still running (it has not exited, whether or not it was
    /// reaped). `false` once the handle is [closed](Self::close).
    pub fn is_alive(&self) -> bool {
        !self.closed
            && self.status.is_none()
            && !sys::fd::wait_readable(self.pidfd(), Some(Duration::ZERO)).unwrap_or(true)
    }

    /// Releases what the handle holds — the pidfd, the channel to the child, the
    /// result not yet taken (Python's `close()`). A child that still runs is an error,
    /// [`ProcessError::StillRunning`], and the handle stays usable; a child that has
    /// ended is reaped first. Closing twice is harmless. After it, the calls that would
    /// wait for, signal or read the child fail with [`ProcessError::Closed`] (those
    /// returning `io::Result`, with an `io::Error` of kind `InvalidInput` carrying
    /// it); [`is_alive`](Self::is_alive) is `false` and
    /// [`exit_status`](Self::exit_status) still gives the status.
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::{Process, ProcessError};
    /// let mut p = Process::start(|x: u32| x + 1, 1).unwrap();
    /// p.wait().unwrap();
    /// p.close().unwrap();
    /// assert!(matches!(p.join(), Err(ProcessError::Closed)));
    /// ```
    pub fn close(&mut self) -> Result<(), ProcessError> {
        if self.closed {
            return Ok(());
        }
        if !self.collect(Some(Instant::now()))? {
            return Err(ProcessError::StillRunning);
        }
        self.closed = true;
        self.pidfd = None;
        self.ended_sentinel = std::sync::OnceLock::new();
        self.chan = None;
        self.result = None;
        self.buf = Vec::new();
        Ok(())
    }

    /// A descriptor that becomes readable when the child ends (Python's `sentinel`): a
    /// pidfd, to give to `poll`/`epoll` beside other descriptors, or to
    /// [`connection::wait`](crate::connection::wait). It stays valid (and readable)
    /// after the child is joined, until [`close`](Self::close) or drop (asked for only
    /// after the join, it is a pipe without writer, readable at once);
    /// [`ProcessError::Closed`] after `close`.
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// let mut p = multiproc::Process::start(|()| (), ()).unwrap();
    /// let sentinel = p.sentinel().unwrap();
    /// let mut fds = [rustix::event::PollFd::new(&sentinel, rustix::event::PollFlags::IN)];
    /// rustix::event::poll(&mut fds, None).unwrap(); // returns once the child has ended
    /// assert!(!p.is_alive());
    /// p.join().unwrap();
    /// ```
    pub fn sentinel(&self) -> Result<std::os::fd::BorrowedFd<'_>, ProcessError> {
        if self.closed {
            return Err(ProcessError::Closed);
        }
        self.keep_sentinel.store(true, Ordering::Relaxed);
        if let Some(pidfd) = self.pidfd.as_deref() {
            return Ok(pidfd.as_fd());
        }
        // Reaped before anyone asked: its pidfd is gone, and a readable stand-in says
        // the same thing.
        if self.ended_sentinel.get().is_none() {
            let _ = self.ended_sentinel.set(sys::fd::ended_sentinel()?);
        }
        Ok(self.ended_sentinel.get().expect("set above").as_fd())
    }

    /// Whether the handle was closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn check_open_io(&self) -> std::io::Result<()> {
        if self.closed {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                ProcessError::Closed,
            ));
        }
        Ok(())
    }

    /// Sends `SIGTERM` (Python's `terminate()`). A child that already ended is left alone.
    pub fn terminate(&self) -> std::io::Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Sends `SIGKILL` (Python's `kill()`).
    pub fn kill(&self) -> std::io::Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends the signal `signal` (a raw number such as `libc::SIGINT`), through the
    /// pidfd, so it can never hit another process that reused the pid.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        self.check_open_io()?;
        if self.status.is_some() {
            return Ok(());
        }
        match sys::proc::pidfd_kill(self.pidfd(), signal) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// The exit status, or `None` while the child runs (Python's `exitcode`). Reaps the
    /// child if it has ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.closed {
            return self.status;
        }
        let _ = self.collect(Some(Instant::now()));
        self.status
    }

    /// Waits for the child to end and returns its exit status (Python's `join()`
    /// followed by `exitcode`). The result, if any, stays available to [`join`](Self::join).
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.check_open_io()?;
        self.collect(None)?;
        Ok(self
            .status
            .expect("collect(None) waits until the child is reaped"))
    }

    /// Waits at most `timeout` (Python's `join(timeout)`); `None` if the child still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        self.check_open_io()?;
        self.collect(Some(Instant::now() + timeout))?;
        Ok(self.status)
    }

    /// Waits for the child and returns what its target returned, or why it did not.
    /// Call it once: later calls give [`ProcessError::AlreadyJoined`].
    pub fn join(&mut self) -> Result<R, ProcessError> {
        if self.closed {
            return Err(ProcessError::Closed);
        }
        self.collect(None)?;
        self.take_result()
    }

    /// As [`join`](Self::join), waiting at most `timeout`: [`ProcessError::Timeout`] if
    /// the child still runs (it keeps running; join again later).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R, ProcessError> {
        if self.closed {
            return Err(ProcessError::Closed);
        }
        if !self.collect(Some(Instant::now() + timeout))? {
            return Err(ProcessError::Timeout);
        }
        self.take_result()
    }

    fn take_result(&mut self) -> Result<R, ProcessError> {
        let status = self.status.expect("called once reaped");
        self.result
            .take()
            .unwrap_or(Err(ProcessError::AlreadyJoined(status)))
    }

    /// Reads the child's report and reaps it once it has exited. `deadline` `None`
    /// waits for ever; returns whether the child has been reaped.
    ///
    /// The report is read while waiting (a large report would otherwise block the child
    /// in `write` and both would wait for ever); once it is complete, or the channel
    /// closed, only the exit is waited for.
    fn collect(&mut self, deadline: Option<Instant>) -> std::io::Result<bool> {
        if self.status.is_some() {
            return Ok(true);
        }
        loop {
            if codec::frame_len(&self.buf, &self.limits).is_err() {
                // A report this side will not take (over `max_result_size`, or not a
                // frame): close the channel, so that a child still writing the rest
                // gets EPIPE and exits instead of blocking for ever on a full socket
                // while this side waits for its exit.
                self.chan = None;
            }
            let listening = self.chan.is_some() && !self.report_complete();
            if !listening && deadline.is_none() {
                // Nothing more to read: a blocking wait is the cheapest way to the exit.
                let raw = sys::proc::reap(self.pidfd(), true)?.expect("blocking reap");
                self.record(ExitStatus::from_raw(raw));
                return Ok(true);
            }
            let chan = if listening {
                self.chan.as_ref().map(|c| c.as_fd())
            } else {
                None
            };
            let ready = sys::fd::poll_two(self.pidfd(), chan, deadline)?;
            if ready.second {
                self.read_report(false)?;
            }
            if ready.first {
                // It has exited: everything it wrote is in the socket buffer by now.
                self.read_report(true)?;
                let raw = sys::proc::reap(self.pidfd(), true)?.expect("blocking reap");
                self.record(ExitStatus::from_raw(raw));
                return Ok(true);
            }
            if !ready.second && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// The pidfd of a child that is not yet reaped.
    fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd
            .as_deref()
            .expect("only used before the child is reaped")
            .as_fd()
    }

    fn record(&mut self, status: ExitStatus) {
        self.status = Some(status);
        if !self.keep_sentinel.load(Ordering::Relaxed) {
            self.pidfd = None;
        }
        runtime().unregister(self.pid);
        self.result = Some(self.interpret(status));
        self.buf = Vec::new();
        self.chan = None;
    }

    /// Whether `buf` holds a whole report frame (or garbage that will not get better).
    fn report_complete(&self) -> bool {
        match codec::frame_len(&self.buf, &self.limits) {
            Ok(Some(total)) => self.buf.len() >= total,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Moves what the child wrote into `buf`; `drain`: the child is dead, read until
    /// the buffer is empty. Closes the channel at end of stream.
    fn read_report(&mut self, drain: bool) -> std::io::Result<()> {
        let Some(chan) = self.chan.as_ref() else {
            return Ok(());
        };
        if drain {
            sys::fd::set_nonblocking(chan.as_fd(), true)?;
        }
        loop {
            if self.report_complete() && !drain {
                return Ok(());
            }
            let room = match codec::frame_len(&self.buf, &self.limits) {
                Ok(Some(total)) => total.saturating_sub(self.buf.len()).max(512),
                _ => 512,
            };
            match sys::fd::read_into(chan.as_fd(), &mut self.buf, room) {
                Ok(0) => {
                    self.chan = None;
                    return Ok(());
                }
                Ok(_) if !drain => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    // The child closed its end with bytes unread: the bootstrap is all
                    // this side ever sends it.
                    self.bootstrap_unread = true;
                    self.chan = None;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            if self.report_complete() && drain {
                return Ok(());
            }
        }
    }

    fn interpret(&mut self, status: ExitStatus) -> Result<R, ProcessError> {
        let pid = self.pid;
        if self.buf.is_empty() && self.bootstrap_unread && status.signal().is_none() {
            // Only code that runs before `init()` takes the role can end it there: since
            // roles are taken before `main`, another library's constructor.
            return Err(ProcessError::Bootstrap {
                pid,
                message: format!(
                    "the child exited ({status}) before multiproc::init() ran in it (it \
                     never read its bootstrap): call multiproc::init() first in main; code \
                     that runs before main, such as a library's constructor, ended it"
                ),
            });
        }
        if self.buf.is_empty() {
            return match status.signal() {
                Some(_) => Err(ProcessError::Signaled { pid, status }),
                // A target that returns `()` and a child that exits 0 without a report
                // (`std::process::exit(0)`) agree: `()` decodes from no bytes.
                None if status.success() => {
                    codec::decode::<R>(&[]).map_err(|_| ProcessError::Exited { pid, status })
                }
                None => Err(ProcessError::Exited { pid, status }),
            };
        }
        let outcome = match codec::decode_frame::<Outcome>(&self.buf, &self.limits) {
            Ok((outcome, _)) => outcome,
            // A report cut short means the child died while writing it.
            Err(CodecError::Truncated { .. }) if status.signal().is_some() => {
                return Err(ProcessError::Signaled { pid, status });
            }
            Err(e) => return Err(ProcessError::Codec(e)),
        };
        match outcome {
            Outcome::Returned(bytes) => Ok(codec::decode::<R>(&bytes)?),
            Outcome::Panicked(message, _) => Err(ProcessError::Panicked { pid, message }),
            Outcome::Codec(message) => Err(ProcessError::Serialization { pid, message }),
            Outcome::Bootstrap(message) => Err(ProcessError::Bootstrap { pid, message }),
        }
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // Reap at once if it has ended; otherwise hand it to a reaper thread.
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        if let Ok(Some(_)) = sys::proc::reap(pidfd.as_fd(), false) {
            runtime().unregister(self.pid);
            return;
        }
        let pid = self.pid;
        let chan = self.chan.take();
        let rt = runtime();
        rt.helper_threads.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name(format!("multiproc-reaper-{pid}"))
            .spawn(move || {
                reap_detached(pid, pidfd, chan);
                runtime().helper_threads.fetch_sub(1, Ordering::Release);
            });
        if spawned.is_err() {
            rt.helper_threads.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Waits for a child nobody holds a handle to any more, discarding its report.
fn reap_detached(pid: u32, pidfd: Arc<OwnedFd>, chan: Option<OwnedFd>) {
    let mut sink = Vec::new();
    let mut chan = chan;
    while let Ok(ready) = sys::fd::poll_two(pidfd.as_fd(), chan.as_ref().map(|c| c.as_fd()), None) {
        if ready.second {
            if let Some(c) = chan.as_ref() {
                sink.clear();
                if matches!(
                    sys::fd::read_into(c.as_fd(), &mut sink, 64 * 1024),
                    Ok(0) | Err(_)
                ) {
                    chan = None;
                }
            }
        }
        if ready.first {
            break;
        }
    }
    let _ = sys::proc::reap(pidfd.as_fd(), true);
    runtime().unregister(pid);
}

/// A live child of this process, as listed by [`active_children`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildSummary {
    /// Its pid.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// Whether it is a daemon.
    pub daemon: bool,
}

/// The children of this process that are still running (Python's
/// `active_children()`), excluding the forkserver.
pub fn active_children() -> Vec<ChildSummary> {
    let mut out: Vec<ChildSummary> = runtime::registered_children()
        .into_iter()
        .filter(|(_, _, _, pidfd)| {
            !sys::fd::wait_readable(pidfd.as_fd(), Some(Duration::ZERO)).unwrap_or(true)
        })
        .map(|(pid, name, daemon, _)| ChildSummary { pid, name, daemon })
        .collect();
    out.sort_by_key(|c| c.pid);
    out
}

/// Ends the calling process at once with `code`, without running destructors or exit
/// handlers (`os._exit`). Flush stdout first if you printed.
pub fn exit_now(code: i32) -> ! {
    sys::proc::exit_now(code)
}

/// Waits for and reaps the child `pid` (for children made with the raw
/// [`fork`](crate::sys::fork), S8; [`Process`] does this itself).
pub fn wait_pid(pid: u32) -> std::io::Result<ExitStatus> {
    Ok(ExitStatus::from_raw(sys::proc::reap_pid(pid)?))
}

/// The pid of this process's forkserver, starting it if needed (Python's
/// `forkserver.ensure_running()`). Useful to keep its start-up out of a measurement.
pub fn ensure_forkserver() -> Result<u32, StartError> {
    start::forkserver::ensure_started()
}

/// The pid of the forkserver if one runs (it is a child of this process, but not one
/// of the user's: [`active_children`] leaves it out).
pub fn forkserver_pid() -> Option<u32> {
    start::forkserver::current_pid()
}
