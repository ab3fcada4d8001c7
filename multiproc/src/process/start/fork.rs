//! The `fork` start method.

use std::os::fd::AsRawFd;

use super::{Job, Launched, Starter};
use crate::process::StartError;
use crate::process::child;
use crate::process::info::{self, ChildInfo};
use crate::process::runtime::runtime;
use crate::sys;

pub(crate) struct Fork;

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
            child::mark_child();
            sys::fd::close_inherited(parent_end_raw);
            sys::proc::die_with_parent(parent_pid);
            info::become_child(info);
            let ending = run();
            child::finish_forked(&child_end, ending)
        };
        let pid = rt.launch(Box::new(move || {
            sys::proc::fork_and_run(Box::new(child_main))
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
