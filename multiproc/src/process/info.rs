//! Who this process is: name, pid, parent, daemon flag (Python's `current_process()`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StartMethod;
use crate::sys;
use crate::sys::cell::LeakedCell;

/// What a parent tells a child about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildInfo {
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent_pid: u32,
    /// The parent's name, for [`parent_process`] in the child.
    pub(crate) parent_name: String,
    pub(crate) method: StartMethod,
    /// `false`: the child clears its parent-death signal once it runs
    /// (`ProcessBuilder::die_with_parent(false)`).
    pub(crate) die_with_parent: bool,
}

/// This process's identity, as seen by [`current_process`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// The name: `MainProcess` for the process the user started, `Process-1`,
    /// `Process-2:1`, … or the name given to the builder for children.
    pub name: String,
    /// The pid (`os.getpid()`).
    pub pid: u32,
    /// The parent's pid (`os.getppid()`).
    pub parent_pid: u32,
    /// Whether this process was started as a daemon.
    pub daemon: bool,
    /// Python's `_identity`: the position of this process in the tree of processes
    /// started by multiproc (`[]` for the main process, `[1]` for its first child,
    /// `[1, 2]` for that child's second child).
    pub identity: Vec<u32>,
    /// How this process was started (`None` for the main process).
    pub start_method: Option<StartMethod>,
}

pub(crate) struct Current {
    pid: u32,
    info: ProcessInfo,
    /// The parent's name and pid as it told them, `None` in the main process.
    parent: Option<(String, u32)>,
}

static CURRENT: LeakedCell<Current> = LeakedCell::new();

fn current() -> &'static Current {
    let pid = sys::proc::getpid();
    let found = CURRENT.get();
    match found {
        Some(c) if c.pid == pid => c,
        // A process forked without multiproc's help (S8) keeps its parent's name.
        Some(parent) => {
            let mut info = parent.info.clone();
            info.pid = pid;
            info.parent_pid = sys::proc::getppid();
            let parent_record = Some((parent.info.name.clone(), parent.pid));
            CURRENT.publish(
                found,
                Current {
                    pid,
                    info,
                    parent: parent_record,
                },
            )
        }
        None => CURRENT.publish(
            None,
            Current {
                pid,
                info: ProcessInfo {
                    name: "MainProcess".into(),
                    pid,
                    parent_pid: sys::proc::getppid(),
                    daemon: false,
                    identity: Vec::new(),
                    start_method: None,
                },
                parent: None,
            },
        ),
    }
}

/// Records, in a freshly started child, what its parent said about it.
///
/// A child asked to outlive its parent clears its parent-death signal here, before its
/// target runs (it held the signal while it started, so a parent that died meanwhile
/// still took it along).
pub(crate) fn become_child(info: ChildInfo) {
    let pid = sys::proc::getpid();
    let found = CURRENT.get();
    if !info.die_with_parent {
        sys::proc::outlive_parent();
    }
    CURRENT.publish(
        found,
        Current {
            pid,
            parent: Some((info.parent_name, info.parent_pid)),
            info: ProcessInfo {
                name: info.name,
                pid,
                parent_pid: info.parent_pid,
                daemon: info.daemon,
                identity: info.identity,
                start_method: Some(info.method),
            },
        },
    );
}

/// This process's name (what a child is told its parent is called).
pub(crate) fn current_name() -> String {
    current().info.name.clone()
}

/// The identity a new child of this process gets, given the child's number here.
pub(crate) fn child_identity(n: u32) -> Vec<u32> {
    let mut id = current().info.identity.clone();
    id.push(n);
    id
}

pub(crate) fn after_fork_in_child() {
    // Keep the parent's record: `current()` derives the child's from it by pid, and
    // `become_child` replaces it when multiproc started the child.
}

/// Information about the calling process (Python's `multiprocessing.current_process()`,
/// `os.getpid()`, `os.getppid()`), S9.
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    let mut info = current().info.clone();
    // The parent can change (re-parenting after its death), so ask the kernel.
    info.parent_pid = sys::proc::getppid();
    info
}

/// The parent's pid (`os.getppid()`).
pub fn parent_pid() -> u32 {
    sys::proc::getppid()
}

/// The process that started this one, seen from the child (Python's
/// `multiprocessing.parent_process()`): its name and pid, whether it is alive, and a
/// join with a timeout. Got from [`parent_process`].
///
/// It holds a pidfd of the parent, opened when it was made and checked against
/// `getppid()`: it refers to the parent even if the parent's pid is later reused.
/// A parent already gone when it was made is seen as not alive. By default a child dies
/// with its parent, so only a child started with
/// [`die_with_parent(false)`](crate::ProcessBuilder::die_with_parent) lives to see its
/// parent end.
#[derive(Debug)]
pub struct ParentProcess {
    name: String,
    pid: u32,
    /// `None`: the parent had ended before this handle was made.
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl ParentProcess {
    /// The parent's name (`MainProcess`, `Process-1`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parent's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the parent is still running.
    pub fn is_alive(&self) -> bool {
        self.pidfd.as_ref().is_some_and(|fd| {
            !sys::fd::wait_readable(std::os::fd::AsFd::as_fd(fd), Some(Duration::ZERO))
                .unwrap_or(true)
        })
    }

    /// Waits at most `timeout` for the parent to end (Python's `join(timeout)`):
    /// [`ProcessError::Timeout`](crate::process::ProcessError::Timeout) if it still runs. A child
    /// cannot reap its parent, so there is no exit status.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), crate::process::ProcessError> {
        let Some(fd) = self.pidfd.as_ref() else {
            return Ok(());
        };
        if sys::fd::wait_readable(std::os::fd::AsFd::as_fd(fd), Some(timeout))? {
            Ok(())
        } else {
            Err(crate::process::ProcessError::Timeout)
        }
    }

    /// Waits for the parent to end (Python's `join()`).
    pub fn join(&self) -> Result<(), crate::process::ProcessError> {
        if let Some(fd) = self.pidfd.as_ref() {
            sys::fd::wait_readable(std::os::fd::AsFd::as_fd(fd), None)?;
        }
        Ok(())
    }

    /// A descriptor that becomes readable when the parent ends (Python's `sentinel`),
    /// `None` if it had ended before this handle was made.
    pub fn sentinel(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.pidfd.as_ref().map(std::os::fd::AsFd::as_fd)
    }
}

/// The parent of this process if multiproc started it (Python's
/// `multiprocessing.parent_process()`); `None` in the main process.
///
/// ```
/// # multiproc::init();
/// use multiproc::{Process, parent_process};
///
/// assert!(parent_process().is_none()); // the main process
///
/// fn child(_: ()) -> (String, u32, bool) {
///     let parent = parent_process().expect("started by multiproc");
///     (parent.name().to_string(), parent.pid(), parent.is_alive())
/// }
/// let mut p = Process::start(child, ()).unwrap();
/// let (name, pid, alive) = p.join().unwrap();
/// assert_eq!((name.as_str(), pid, alive), ("MainProcess", std::process::id(), true));
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    let (name, pid) = current().parent.clone()?;
    // Opened, then checked: while the parent is our parent its pid cannot name another
    // process, so a pidfd opened before a matching `getppid()` is the parent's.
    let pidfd = sys::proc::pidfd_open(pid)
        .ok()
        .filter(|_| sys::proc::getppid() == pid);
    Some(ParentProcess { name, pid, pidfd })
}
