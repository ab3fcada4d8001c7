//! Per-process state of multiproc: the launcher thread, the registry of live children,
//! the default-name counter, the forkserver connection, and `init`.
//!
//! All of it is keyed by pid: a process created by `fork` finds its parent's state
//! (copied by the fork, with possibly held locks) and replaces it with fresh state
//! instead of touching it.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::start::forkserver::ForkServer;
use crate::sys;
use crate::sys::cell::LeakedCell;

/// Creating one child (fork or `posix_spawn`): returns its pid.
pub(crate) type LaunchWork = Box<dyn FnOnce() -> std::io::Result<u32> + Send>;

/// Work for the launcher thread, with where to send the pid.
struct LaunchJob {
    work: LaunchWork,
    reply: Sender<std::io::Result<u32>>,
}

/// A live child known to this process.
pub(crate) struct Registered {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) pidfd: Arc<OwnedFd>,
}

pub(crate) struct Runtime {
    pid: u32,
    /// Started on the first launch from a thread other than the main thread.
    launcher: std::sync::OnceLock<Sender<LaunchJob>>,
    pub(crate) children: Mutex<HashMap<u32, Registered>>,
    pub(crate) counter: AtomicU32,
    pub(crate) forkserver: Mutex<Option<ForkServer>>,
    /// Raw number of the forkserver socket, closed in forked children.
    pub(crate) forkserver_fd: AtomicI32,
    /// Threads of multiproc's own in this process (launcher, reapers).
    pub(crate) helper_threads: AtomicUsize,
    fork_warned: AtomicBool,
}

static RUNTIME: LeakedCell<Runtime> = LeakedCell::new();
static INITIALISED: AtomicBool = AtomicBool::new(false);
static EXIT_HOOK: std::sync::Once = std::sync::Once::new();

/// This process's runtime, created on first use (and again in a forked child, which
/// must not use its parent's launcher thread or locks).
pub(crate) fn runtime() -> &'static Runtime {
    let pid = sys::proc::getpid();
    let current = RUNTIME.get();
    match current {
        Some(rt) if rt.pid == pid => rt,
        _ => {
            // Before any runtime exists, so that no fork can copy one without the hook.
            sys::hooks::after_fork(after_fork_in_child);
            RUNTIME.publish(current, Runtime::new(pid))
        }
    }
}

impl Runtime {
    fn new(pid: u32) -> Runtime {
        Runtime {
            pid,
            launcher: std::sync::OnceLock::new(),
            children: Mutex::new(HashMap::new()),
            counter: AtomicU32::new(0),
            forkserver: Mutex::new(None),
            forkserver_fd: AtomicI32::new(-1),
            helper_threads: AtomicUsize::new(0),
            fork_warned: AtomicBool::new(false),
        }
    }

    fn launcher(&self) -> std::io::Result<&Sender<LaunchJob>> {
        if let Some(tx) = self.launcher.get() {
            return Ok(tx);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut started = Ok(());
        let tx = self.launcher.get_or_init(|| {
            self.helper_threads.fetch_add(1, Ordering::Relaxed);
            started = std::thread::Builder::new()
                .name("multiproc-launcher".into())
                .spawn(move || launcher_loop(rx))
                .map(drop);
            tx
        });
        started.map(|()| tx)
    }

    /// Runs `work` (which creates one child) on the launcher thread and returns the
    /// child's pid.
    ///
    /// Children are created by this one long-lived thread because the kernel's
    /// parent-death signal fires when the *thread* that created a child exits: a child
    /// started from a short-lived thread would otherwise be killed with that thread.
    /// The main thread lives as long as the process, so it launches directly.
    pub(crate) fn launch(&self, work: LaunchWork) -> std::io::Result<u32> {
        if sys::proc::gettid() == self.pid {
            return work();
        }
        let (reply, reply_rx) = crossbeam_channel::bounded(1);
        self.launcher()?
            .send(LaunchJob { work, reply })
            .map_err(|_| std::io::Error::other("the launcher thread is gone"))?;
        reply_rx
            .recv()
            .map_err(|_| std::io::Error::other("the launcher thread dropped a request"))?
    }

    /// Prints CPython 3.12's warning once if this process has threads other than
    /// multiproc's own when it forks.
    pub(crate) fn warn_if_threaded_fork(&self) {
        if self.fork_warned.load(Ordering::Relaxed) || !fork_warning_enabled() {
            return;
        }
        let others =
            sys::proc::thread_count().saturating_sub(self.helper_threads.load(Ordering::Relaxed));
        if others > 1 && !self.fork_warned.swap(true, Ordering::Relaxed) {
            eprintln!(
                "multiproc: warning: this process (pid={}) is multi-threaded ({} threads); use of fork() \
                 may lead to deadlocks in the child (locks held by other threads stay locked). \
                 Prefer StartMethod::ForkServer (the default) or StartMethod::Spawn.",
                self.pid, others
            );
        }
    }

    pub(crate) fn register(&self, pid: u32, entry: Registered) {
        self.children.lock().insert(pid, entry);
    }

    pub(crate) fn unregister(&self, pid: u32) {
        self.children.lock().remove(&pid);
    }
}

fn launcher_loop(jobs: Receiver<LaunchJob>) {
    for job in jobs {
        let _ = job.reply.send((job.work)());
    }
}

static FORK_WARNING: AtomicBool = AtomicBool::new(true);

fn fork_warning_enabled() -> bool {
    static ENV_OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    FORK_WARNING.load(Ordering::Relaxed)
        && !*ENV_OFF.get_or_init(|| std::env::var_os("MULTIPROC_NO_FORK_WARNING").is_some())
}

/// Turns the multi-threaded-fork warning on or off for this process.
pub fn set_fork_warning(enabled: bool) {
    FORK_WARNING.store(enabled, Ordering::Relaxed);
}

/// Runs in a child right after a fork multiproc made (a hook registered with
/// [`sys::hooks::after_fork`] by [`init`], and by [`runtime`] before it creates the
/// first runtime): mark the process a child (for its panics' messages), forget the
/// parent's runtime (its launcher thread does not exist here and its locks
/// may be held) and close the parent's forkserver socket, read through an atomic
/// because its Mutex may be held.
fn after_fork_in_child() {
    // Its panics go straight to its descriptor 2 (see `child::install_panic_hook`).
    super::child::mark_child();
    // The parent's panics are not this process's (see `exit_hook`).
    PANICKED.store(false, Ordering::Relaxed);
    if let Some(rt) = RUNTIME.forget() {
        sys::fd::close_inherited(rt.forkserver_fd.swap(-1, Ordering::AcqRel));
    }
    super::info::after_fork_in_child();
}

/// Whether [`init`] ran in this process.
pub(crate) fn initialised() -> bool {
    INITIALISED.load(Ordering::Acquire)
}

/// Sets up multiproc in this process. Call it in `main` before the first process
/// starts (first thing in `main` is simplest); in test binaries use
/// [`test_support!`](crate::test_support) instead.
///
/// In the main process it only records that the executable is multiproc-aware and
/// returns. The `spawn` and `forkserver` start methods refuse to start processes (with
/// [`StartError::NotInitialized`](crate::StartError::NotInitialized)) unless `init` ran,
/// so that a binary that does not know it may be re-executed never is. Calling it more
/// than once is harmless.
///
/// A process that multiproc re-executes (a `spawn` child, the forkserver) takes its
/// role *before* `main` runs, from a constructor (`.init_array`) of this crate, and
/// ends there: no code of `main` runs in it, whether it comes before `init()` or
/// after. So `init()` may follow code that starts threads — inside `#[tokio::main]`,
/// whose runtime is up before the body runs — or code that would fail in a child:
/// the forkserver still starts single-threaded (it forks, and must), and children run
/// only their target. CPython's `spawn` likewise does not run the `__main__` block.
///
/// It also installs a panic hook: std's default hook in this process, and in every
/// multiproc child one that writes std's message straight to the child's descriptor 2,
/// where a test harness's output capture (which a `fork` child inherits from the thread
/// that forked) cannot swallow it. A hook you set yourself replaces it.
///
/// ```no_run
/// # fn run_the_program() {}
/// multiproc::init(); // first line of main
/// run_the_program();
/// ```
pub fn init() {
    if INITIALISED.swap(true, Ordering::AcqRel) {
        return;
    }
    // Before any child exists, while the hook is std's default: forked children inherit
    // it, and the after-fork hook (registered now for a raw `sys::fork` made before any
    // runtime exists) tells them they are children.
    super::child::install_panic_hook();
    sys::hooks::after_fork(after_fork_in_child);
    if let Some(fd) = role_fd("MULTIPROC_CHILD") {
        super::child::child_main(fd);
    }
    if let Some(fd) = role_fd("MULTIPROC_FORKSERVER") {
        super::start::forkserver::serve(fd);
    }
}

/// Takes this process's role before `main` runs, if multiproc started it in one (a
/// `spawn` child, the forkserver): called by the constructor the crate root registers.
/// A process without a role variable is left alone (its `main` calls [`init`]).
///
/// Before `main`, std's runtime has not yet ignored `SIGPIPE`; a role process ignores
/// it here, so that its children see `EPIPE` as they would after `main` began.
pub(crate) fn take_role_before_main() {
    let has_role = |var: &str| std::env::var_os(var).is_some();
    if has_role("MULTIPROC_CHILD") || has_role("MULTIPROC_FORKSERVER") {
        sys::proc::ignore_broken_pipes();
        init();
    }
}

/// The descriptor named by a role variable (`"<fd>:<parent pid>"`), if the variable is
/// set. A process whose parent is no longer the one named (it died while we started)
/// exits at once with [`EXIT_ORPHANED`](crate::process::EXIT_ORPHANED) rather than
/// falling through to `main`.
fn role_fd(var: &str) -> Option<OwnedFd> {
    let value = std::env::var(var).ok()?;
    // The variable is for this process alone: drop it before anything can inherit it.
    sys::proc::remove_role_var(var);
    let malformed = || -> ! { sys::proc::exit_now(super::child::EXIT_BOOTSTRAP) };
    let (fd, parent) = value.split_once(':').unwrap_or_else(|| malformed());
    let fd: i32 = fd.parse().unwrap_or_else(|_| malformed());
    let parent: u32 = parent.parse().unwrap_or_else(|_| malformed());
    if parent != sys::proc::getppid() {
        // Our parent died while we were starting: we must not run `main` in its place.
        sys::proc::exit_now(super::child::EXIT_ORPHANED);
    }
    let owned = sys::fd::adopt_inherited(fd).unwrap_or_else(|_| malformed());
    // A role runs in a process started by multiproc from the given parent: bind its life
    // to that parent's before doing anything else.
    sys::proc::die_with_parent(parent);
    Some(owned)
}

/// The current runtime's registry: live, unreaped children.
pub(crate) fn registered_children() -> Vec<(u32, String, bool, Arc<OwnedFd>)> {
    runtime()
        .children
        .lock()
        .iter()
        .map(|(pid, r)| (*pid, r.name.clone(), r.daemon, r.pidfd.clone()))
        .collect()
}

/// How many of multiproc's threads in this process are finishing work for a handle
/// that is gone (reapers of dropped `Process` and `Popen` handles): counted from before
/// they are spawned until they closed what they hold, so a leak check can wait for
/// them. The launcher, which lives as long as the process, is not counted.
pub(crate) fn transient_helpers() -> usize {
    let Some(rt) = RUNTIME.get() else { return 0 };
    if rt.pid != sys::proc::getpid() {
        return 0;
    }
    let launcher = usize::from(rt.launcher.get().is_some());
    rt.helper_threads
        .load(Ordering::Acquire)
        .saturating_sub(launcher)
}

/// The exit status of a Rust program whose `main` panicked (std's runtime catches the
/// panic and returns it), and of a test binary with a failed test.
const PANIC_EXIT_STATUS: i32 = 101;

/// How long a panicking exit waits for children before it terminates them, and again
/// before it kills those that ignored the termination.
pub(crate) const PANIC_EXIT_GRACE: Duration = Duration::from_secs(1);

/// Set by the panic hook [`install_exit_hook`] chains in front of the one in place:
/// some thread of this process panicked.
static PANICKED: AtomicBool = AtomicBool::new(false);
static PANIC_RECORDER: std::sync::Once = std::sync::Once::new();

/// Installs the exit hook that joins non-daemon children and terminates daemon ones
/// when this process exits normally (CPython's `_exit_function`), and a panic hook, in
/// front of the one in place, that records that a panic happened (see
/// [`run_exit_hook_at`]).
pub(crate) fn install_exit_hook() {
    EXIT_HOOK.call_once(|| sys::proc::at_exit(exit_hook));
    // `take_hook` may not be called while this thread panics (a child started by a
    // destructor during an unwind): the recorder is then installed by a later start.
    if !std::thread::panicking() {
        PANIC_RECORDER.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                PANICKED.store(true, Ordering::Release);
                previous(info);
            }));
        });
    }
}

fn exit_hook(status: Option<i32>) {
    let panicking = status == Some(PANIC_EXIT_STATUS) && PANICKED.load(Ordering::Acquire);
    run_exit_hook_at(panicking);
}

/// Terminates daemon children and waits for non-daemon ones. Runs at the end of every
/// multiproc child.
pub(crate) fn run_exit_hook() {
    run_exit_hook_at(false);
}

/// What this process does with its children when it exits.
///
/// Normally (`panicking` false), as CPython's `_exit_function`: terminate the daemon
/// children and wait for all of them, the non-daemon ones for as long as they run.
///
/// At an exit after a panic (`panicking`: the exit status is 101, the status of a Rust
/// `main` that panicked and of a failed test binary, and a thread of this process
/// panicked), waiting for ever would hang the program whenever a child waits for
/// something the panicking code would have done (CPython hangs there). So the children
/// get [`PANIC_EXIT_GRACE`] to end; those still running are named on stderr and
/// terminated (`SIGTERM`), and after another grace killed (`SIGKILL`).
fn run_exit_hook_at(panicking: bool) {
    let Some(rt) = RUNTIME.get() else { return };
    if rt.pid != sys::proc::getpid() {
        return;
    }
    let Some(children) = rt.children.try_lock_for(Duration::from_secs(1)) else {
        return;
    };
    let mut snapshot: Vec<(u32, String, bool, Arc<OwnedFd>)> = children
        .iter()
        .map(|(pid, r)| (*pid, r.name.clone(), r.daemon, r.pidfd.clone()))
        .collect();
    drop(children);
    snapshot.sort_by_key(|(pid, ..)| *pid);
    for (_, _, daemon, pidfd) in &snapshot {
        if *daemon {
            let _ = sys::proc::pidfd_kill(pidfd.as_fd(), libc::SIGTERM);
        }
    }
    if panicking {
        end_children_after_panic(&snapshot);
    } else {
        for (_, _, _, pidfd) in &snapshot {
            // Waits for the exit without reaping: the handle (if any) still owns that.
            let _ = sys::fd::wait_readable(pidfd.as_fd(), None);
        }
    }
    // Stop and reap the forkserver, so that it does not linger as a zombie.
    if let Some(mut slot) = rt.forkserver.try_lock_for(Duration::from_secs(1)) {
        rt.forkserver_fd.store(-1, Ordering::Release);
        drop(slot.take());
    }
}

/// The panicking exit of [`run_exit_hook_at`]: a grace, then `SIGTERM` with a line on
/// stderr naming the children, then another grace and `SIGKILL`.
fn end_children_after_panic(children: &[(u32, String, bool, Arc<OwnedFd>)]) {
    let running = still_running_after(children.iter(), PANIC_EXIT_GRACE);
    if running.is_empty() {
        return;
    }
    let names: Vec<String> = running
        .iter()
        .map(|(pid, name, daemon, _)| {
            let kind = if *daemon { ", daemon" } else { "" };
            format!("{name} (pid {pid}{kind})")
        })
        .collect();
    super::child::write_stderr(&format!(
        "multiproc: process {} is exiting after a panic; terminating the children still \
         running after {} s instead of waiting for them: {}\n",
        sys::proc::getpid(),
        PANIC_EXIT_GRACE.as_secs(),
        names.join(", ")
    ));
    for (_, _, _, pidfd) in &running {
        let _ = sys::proc::pidfd_kill(pidfd.as_fd(), libc::SIGTERM);
    }
    for (_, _, _, pidfd) in still_running_after(running.into_iter(), PANIC_EXIT_GRACE) {
        let _ = sys::proc::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
    }
}

/// The children of `children` that have not exited within `grace` (one deadline for
/// all of them).
fn still_running_after<'a>(
    children: impl Iterator<Item = &'a (u32, String, bool, Arc<OwnedFd>)>,
    grace: Duration,
) -> Vec<&'a (u32, String, bool, Arc<OwnedFd>)> {
    let deadline = std::time::Instant::now() + grace;
    children
        .filter(|(_, _, _, pidfd)| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            !sys::fd::wait_readable(pidfd.as_fd(), Some(left)).unwrap_or(true)
        })
        .collect()
}

/// Descriptors that multiproc's runtime keeps for the life of the process (the
/// forkserver socket), which leak checks must not count.
pub(crate) fn runtime_fds() -> Vec<i32> {
    let Some(rt) = RUNTIME.get() else {
        return Vec::new();
    };
    let mut fds = vec![rt.forkserver_fd.load(Ordering::Acquire)];
    if let Some(slot) = rt.forkserver.try_lock() {
        fds.extend(slot.as_ref().map(|fs| fs.pidfd_raw()));
    }
    fds.retain(|fd| *fd >= 0);
    fds
}
