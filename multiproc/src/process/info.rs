//! Who this process is: name, pid, parent, daemon flag (Python's `current_process()`).

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
    pub(crate) method: StartMethod,
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
            CURRENT.publish(found, Current { pid, info })
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
            },
        ),
    }
}

/// Records, in a freshly started child, what its parent said about it.
pub(crate) fn become_child(info: ChildInfo) {
    let pid = sys::proc::getpid();
    let found = CURRENT.get();
    CURRENT.publish(
        found,
        Current {
            pid,
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
