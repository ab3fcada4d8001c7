//! The `forkserver` start method (the default, as in Python 3.14 on Linux).
//!
//! On first use the parent spawns a copy of its own executable in the forkserver role
//! (see [`crate::init`]). That process is single-threaded and does nothing but wait for
//! requests on a `SOCK_SEQPACKET` socket. A request carries one descriptor, the child's
//! end of a fresh stream socket; the server forks with `clone(CLONE_PARENT)`, so the new
//! process is a child of the *user's* process (which can wait for it and open its pidfd
//! race-free), and answers with its pid. The new process reads its bootstrap from the
//! socket it was given, exactly like a `spawn` child, but skips the exec and the
//! start-up of a fresh executable.
//!
//! The server dies with its parent (`PR_SET_PDEATHSIG`) and also exits when its socket
//! reaches end-of-file. If it has died anyway (someone killed it), the next request
//! notices (`EPIPE` / end-of-file), reaps it and starts a new one (bpo-31308).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use super::{Job, Launched, Starter};
use crate::process::StartError;
use crate::process::info::ChildInfo;
use crate::process::runtime::{Runtime, runtime};
use crate::sys;

/// The first byte of the packet a server that cannot serve sends before it exits.
const REFUSED: u8 = b'R';

/// The parent's handle on its forkserver.
pub(crate) struct ForkServer {
    pid: u32,
    pidfd: OwnedFd,
    sock: OwnedFd,
    /// Whether it has answered a request (it reached `init()` and serves).
    answered: bool,
}

/// Why a request to the forkserver failed.
enum RequestError {
    /// The server is gone or broke: start another and try again.
    Io(std::io::Error),
    /// The server says it cannot serve at all (not single-threaded): a new one will not.
    Refused(String),
}

impl ForkServer {
    fn start() -> Result<ForkServer, StartError> {
        let (mine, theirs) = sys::fd::seqpacket_pair()?;
        let pid = super::spawn::exec_self("MULTIPROC_FORKSERVER", theirs)?;
        let pidfd = sys::proc::pidfd_open(pid)?;
        Ok(ForkServer {
            pid,
            pidfd,
            sock: mine,
            answered: false,
        })
    }

    /// Asks the server for a child that will read its bootstrap from `chan`.
    fn fork_one(&mut self, chan: &OwnedFd) -> Result<u32, RequestError> {
        let io = RequestError::Io;
        sys::fd::send_with_fds(self.sock.as_fd(), b"F", &[chan.as_fd()]).map_err(io)?;
        let mut reply = [0u8; 512];
        let (n, _) = sys::fd::recv_with_fds(self.sock.as_fd(), &mut reply, 0).map_err(io)?;
        let pid = match reply[..n] {
            [] => Err(io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the forkserver died",
            ))),
            [b'P', a, b, c, d] => Ok(u32::from_le_bytes([a, b, c, d])),
            [b'E', ref msg @ ..] => Err(io(std::io::Error::other(format!(
                "forkserver: {}",
                String::from_utf8_lossy(msg)
            )))),
            [REFUSED, ref msg @ ..] => Err(RequestError::Refused(
                String::from_utf8_lossy(msg).into_owned(),
            )),
            _ => Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad forkserver reply",
            ))),
        }?;
        self.answered = true;
        Ok(pid)
    }

    /// Why a server that never answered is gone, if it ended by exiting (not by a
    /// signal someone sent): it did not reach `init()`, and a new one will not either.
    fn exited_before_init(&self) -> Option<String> {
        if self.answered {
            return None;
        }
        let _ = sys::fd::wait_readable(self.pidfd.as_fd(), Some(std::time::Duration::from_secs(1)));
        let raw = sys::proc::reap(self.pidfd.as_fd(), false).ok()??;
        let status = crate::process::ExitStatus::from_raw(raw);
        status.signal().is_none().then(|| {
            format!(
                "the forkserver (pid {}) exited with {status} before multiproc::init() took its role",
                self.pid
            )
        })
    }

    /// The raw number of the server's pidfd (kept for the life of the server).
    pub(crate) fn pidfd_raw(&self) -> i32 {
        self.pidfd.as_raw_fd()
    }

    /// The server's pid (it is a child of this process).
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        let _ = sys::proc::pidfd_kill(self.pidfd.as_fd(), libc::SIGKILL);
        let _ = sys::proc::reap(self.pidfd.as_fd(), true);
    }
}

/// The pid of this process's forkserver, starting it if needed.
pub(crate) fn ensure_started() -> Result<u32, StartError> {
    let rt = runtime();
    let mut slot = rt.forkserver.lock();
    if let Some(fs) = slot.as_ref() {
        if !sys::fd::wait_readable(fs.pidfd.as_fd(), Some(std::time::Duration::ZERO))? {
            return Ok(fs.pid);
        }
    }
    Ok(install(rt, &mut slot)?.pid)
}

/// Starts a new forkserver into `slot` (reaping the old one, if any) and publishes its
/// socket number for forked children to close.
fn install<'a>(
    rt: &Runtime,
    slot: &'a mut Option<ForkServer>,
) -> Result<&'a ForkServer, StartError> {
    rt.forkserver_fd.store(-1, Ordering::Release);
    *slot = None;
    let fs = ForkServer::start()?;
    rt.forkserver_fd
        .store(fs.sock.as_raw_fd(), Ordering::Release);
    Ok(slot.insert(fs))
}

/// The pid of the running forkserver, if one was started (it is not one of the
/// user's children: leak checks and `active_children` leave it out).
pub(crate) fn current_pid() -> Option<u32> {
    runtime()
        .forkserver
        .try_lock()
        .and_then(|s| s.as_ref().map(ForkServer::pid))
}

fn request(chan: &OwnedFd) -> Result<u32, StartError> {
    let rt = runtime();
    let mut slot = rt.forkserver.lock();
    let mut last_error = None;
    for _attempt in 0..2 {
        if slot.is_none() {
            install(rt, &mut slot)?;
        }
        let fs = slot.as_mut().expect("installed above");
        let failed = match fs.fork_one(chan) {
            Ok(pid) => return Ok(pid),
            Err(RequestError::Refused(why)) => Some(why),
            Err(RequestError::Io(e)) => {
                let before_init = fs.exited_before_init();
                last_error = Some(e);
                before_init
            }
        };
        // The server is gone or broken: reap it; try once with a new one unless it
        // could not reach its role (a new one would fail the same way).
        rt.forkserver_fd.store(-1, Ordering::Release);
        *slot = None;
        if let Some(why) = failed {
            return Err(StartError::InitNotFirst(why));
        }
    }
    Err(StartError::Io(last_error.expect("two failed attempts")))
}

pub(crate) struct ForkServerStarter;

impl Starter for ForkServerStarter {
    fn start(&self, _info: ChildInfo, job: Job) -> Result<Launched, StartError> {
        let Job::Bootstrap(frame, fds) = job else {
            return Err(StartError::Unsupported(
                "forkserver cannot run closures; use StartMethod::Fork",
            ));
        };
        if !crate::process::runtime::initialised() {
            return Err(StartError::NotInitialized);
        }
        let (parent_end, child_end) = sys::fd::stream_pair()?;
        let pid = request(&child_end)?;
        drop(child_end);
        let pidfd = sys::proc::pidfd_open(pid)?;
        let bootstrap_unread =
            sys::fd::send_all_with_fds(parent_end.as_fd(), &frame, &fds).is_err();
        Ok(Launched {
            pid,
            pidfd,
            chan: parent_end,
            bootstrap_unread,
        })
    }
}

/// The forkserver's main loop (runs in the process started by [`ForkServer::start`]).
pub(crate) fn serve(sock: OwnedFd) -> ! {
    let user = sys::proc::getppid();
    let Some(proof) = sys::proc::SingleThreaded::check() else {
        // Forking here could copy a lock another thread holds: refuse, and say why to
        // the parent, whose first request reads this instead of an answer.
        let why = format!(
            "the forkserver found {} threads running when multiproc::init() took its role",
            sys::proc::thread_count()
        );
        let mut refusal = vec![REFUSED];
        refusal.extend_from_slice(why.as_bytes());
        let _ = sys::fd::send_all(sock.as_fd(), &refusal);
        // Exit once the parent asks (or leaves): its request must find the socket
        // open, or it would see EPIPE instead of reading the refusal.
        let mut request = [0u8; 16];
        let _ = sys::fd::recv_with_fds(sock.as_fd(), &mut request, 4);
        sys::proc::exit_now(crate::process::EXIT_BOOTSTRAP)
    };
    let mut buf = [0u8; 16];
    loop {
        let (n, mut fds) = match sys::fd::recv_with_fds(sock.as_fd(), &mut buf, 4) {
            Ok(got) => got,
            Err(_) => sys::proc::exit_now(0),
        };
        if n == 0 && fds.is_empty() {
            // The parent closed its end (or died): nothing more to serve.
            sys::proc::exit_now(0);
        }
        let (Some(chan), 1) = (fds.pop(), fds.len() + 1) else {
            let _ = sys::fd::send_all(sock.as_fd(), b"Erequest without exactly one descriptor");
            continue;
        };
        let sock_raw = sock.as_raw_fd();
        let forked = sys::proc::fork_sibling(&proof, move || -> i32 {
            sys::fd::close_inherited(sock_raw);
            sys::proc::die_with_parent(user);
            crate::process::child::child_main(chan)
        });
        let reply = match forked {
            Ok(pid) => {
                let mut r = vec![b'P'];
                r.extend_from_slice(&pid.to_le_bytes());
                r
            }
            Err(e) => format!("E{e}").into_bytes(),
        };
        if sys::fd::send_all(sock.as_fd(), &reply).is_err() {
            sys::proc::exit_now(0);
        }
    }
}
