//! The three start methods behind one private trait.
//!
//! | method | how the child comes to be | what it can run |
//! |---|---|---|
//! | `fork` | `fork()` on the launcher thread | closures and functions |
//! | `spawn` | `posix_spawn` of `/proc/self/exe`; `init()` runs the child | functions (by address) |
//! | `forkserver` | a single-threaded server (itself spawned) forks with `CLONE_PARENT` | functions (by address) |
//!
//! Whatever the method, the child ends up a direct child of the user's process (so it
//! can be waited for and its pidfd opened without races), holds `PR_SET_PDEATHSIG =
//! SIGKILL` towards the launcher thread (which lives as long as the process), and talks
//! to its parent over one private stream socket.

use std::os::fd::OwnedFd;

use super::StartError;
use super::child::Ending;
use super::info::ChildInfo;

pub(crate) mod fork;
pub(crate) mod forkserver;
pub(crate) mod spawn;

/// A started child, from the parent's side.
pub(crate) struct Launched {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) chan: OwnedFd,
    /// The child is known not to have read its bootstrap (sending it failed: the child
    /// had already closed its end).
    pub(crate) bootstrap_unread: bool,
}

/// What the child must run.
pub(crate) enum Job {
    /// A closure: only the `fork` method can run it.
    Closure(Box<dyn FnOnce() -> Ending + Send>),
    /// A bootstrap frame naming a function by address (see `sys::entry`), and the
    /// descriptors of the handles among its arguments.
    Bootstrap(Vec<u8>, Vec<OwnedFd>),
}

/// One way of starting a child.
pub(crate) trait Starter {
    fn start(&self, info: ChildInfo, job: Job) -> Result<Launched, StartError>;
}

/// The starter for a method.
pub(crate) fn starter(method: super::StartMethod) -> &'static dyn Starter {
    match method {
        super::StartMethod::Fork => &fork::Fork,
        super::StartMethod::Spawn => &spawn::Spawn,
        super::StartMethod::ForkServer => &forkserver::ForkServerStarter,
    }
}
