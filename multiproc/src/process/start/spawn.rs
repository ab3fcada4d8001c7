//! The `spawn` start method: `posix_spawn` of the current executable, whose `init()`
//! reads the bootstrap from descriptor 3 and runs the child.

use std::ffi::{CString, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;

use super::{Job, Launched, Starter};
use crate::process::StartError;
use crate::process::info::ChildInfo;
use crate::process::runtime::{self, runtime};
use crate::sys;

/// Descriptor number at which a re-executed process finds its channel.
pub(crate) const ROLE_FD: i32 = 3;

pub(crate) struct Spawn;

impl Starter for Spawn {
    fn start(&self, _info: ChildInfo, job: Job) -> Result<Launched, StartError> {
        let Job::Bootstrap(frame, fds) = job else {
            return Err(StartError::Unsupported(
                "spawn cannot run closures; use StartMethod::Fork",
            ));
        };
        let (parent_end, child_end) = sys::fd::stream_pair()?;
        // Queue what fits in the socket buffer now, so the child finds its bootstrap
        // waiting when it starts; the rest follows once it runs.
        let sent = if fds.is_empty() {
            sys::fd::send_nonblocking(parent_end.as_fd(), &frame)?
        } else {
            0
        };
        let pid = exec_self("MULTIPROC_CHILD", child_end)?;
        let pidfd = sys::proc::pidfd_open(pid)?;
        // A child that died already makes this fail with EPIPE; `join` reports its death.
        let bootstrap_unread =
            sys::fd::send_all_with_fds(parent_end.as_fd(), &frame[sent..], &fds).is_err();
        Ok(Launched {
            pid,
            pidfd,
            chan: parent_end,
            bootstrap_unread,
        })
    }
}

/// Starts this executable again in the role `role`, handing it `fd` as descriptor 3.
pub(crate) fn exec_self(role: &str, fd: std::os::fd::OwnedFd) -> Result<u32, StartError> {
    if !runtime::initialised() {
        return Err(StartError::NotInitialized);
    }
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("multiproc-child"));
    let argv = vec![cstring(argv0)?];
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| {
            !k.to_string_lossy().starts_with("MULTIPROC_CHILD") && k != "MULTIPROC_FORKSERVER"
        })
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstring(OsString::from_vec(kv))
        })
        .collect::<Result<_, _>>()?;
    envp.push(cstring(OsString::from(format!(
        "{role}={ROLE_FD}:{}",
        sys::proc::getpid()
    )))?);
    let rt = runtime();
    let pid = rt.launch(Box::new(move || {
        sys::proc::spawn_exe(c"/proc/self/exe", &argv, &envp, &[(fd.as_fd(), ROLE_FD)])
    }))?;
    Ok(pid)
}

fn cstring(s: OsString) -> Result<CString, StartError> {
    CString::new(s.into_vec())
        .map_err(|_| StartError::Unsupported("an argument or environment variable contains NUL"))
}
