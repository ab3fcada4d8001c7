//! The `fork` start method.

use std::os::fd::AsRawFd;

use super::{Job, Launched, Starter};
use crate::process::StartError;
use crate::process::child;
use crate::process::info::{self, ChildInfo};
use crate::process::runtime::runtime;
use crate::sys;

pub(crate) struct Fork;

thread_local! {
    /// Set on the thread that forks while it drops the job the child took with it.
    static HANDING_OVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The parent whose job this process runs, if it is a child of the `fork` start method
/// (0: none).
static JOB_PARENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether the calling thread is dropping the job (closure and arguments) of a child
/// just forked: what the job held lives on in the child, so a value standing for a
/// claim on something shared (a manager proxy's reference) leaves the claim to the
/// child instead of giving it up.
pub(crate) fn handing_over() -> bool {
    HANDING_OVER.with(std::cell::Cell::get)
}

/// The parent whose job this process runs, if it is a child of the `fork` start
/// method: the values of that job it drops were handed over by that parent.
pub(crate) fn job_parent() -> Option<u32> {
    match JOB_PARENT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        pid => Some(pid),
    }
}

impl Starter for Fork {
    fn start(&self, info: ChildInfo, job: Job) -> Result<Launched, StartError> {
        let Job::Closure(run) = job else {
            return Err(StartError::Unsupported(
                "fork runs closures; got a bootstrap",
            ));
        };
        let rt = runtime();
        rt.warn_if_threaded_fork();
        let (parent_end, child_end) = sys::fd::stream_pair()?;
        let parent_end_raw = parent_end.as_raw_fd();
        let parent_pid = info.parent_pid;
        let child_main = move || -> i32 {
            HANDING_OVER.with(|h| h.set(false));
            JOB_PARENT.store(parent_pid, std::sync::atomic::Ordering::Relaxed);
            child::mark_child();
            sys::proc::mark_fork_child();
            sys::fd::close_inherited(parent_end_raw);
            sys::proc::die_with_parent(parent_pid);
            info::become_child(info);
            let ending = run();
            child::finish_forked(&child_end, ending)
        };
        let pid = rt.launch(Box::new(move || {
            // `fork_and_run` drops `child_main` (the job) in the parent after the fork.
            let was = HANDING_OVER.with(|h| h.replace(true));
            let forked = sys::proc::fork_and_run(Box::new(child_main));
            HANDING_OVER.with(|h| h.set(was));
            forked
        }))?;
        let pidfd = sys::proc::pidfd_open(pid)?;
        Ok(Launched {
            pid,
            pidfd,
            chan: parent_end,
            bootstrap_unread: false,
        })
    }
}
