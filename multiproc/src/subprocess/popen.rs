//! [`Popen`]: a running program, Python's `subprocess.Popen`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{ChildStderr, ChildStdin, ChildStdout};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::exchange::Exchange;
use super::{Command, ExitStatus, SubprocessError};
use crate::process::runtime::runtime;
use crate::sys;

/// A running program: Python's `subprocess.Popen` (S11). Made by
/// [`Popen::builder`]`(args)…`[`spawn()`](Command::spawn).
///
/// ```
/// use multiproc::subprocess::{PIPE, Popen};
/// // Python: p = Popen(['sh', '-c', 'cat; echo oops >&2'], stdin=PIPE, stdout=PIPE, stderr=PIPE)
/// let mut p = Popen::builder(["sh", "-c", "cat; echo oops >&2"])
///     .stdin(PIPE)
///     .stdout(PIPE)
///     .stderr(PIPE)
///     .spawn()
///     .unwrap();
/// let (out, err) = p.communicate(b"set q=mx\n").unwrap();
/// assert_eq!(out, b"set q=mx\n");
/// assert_eq!(err, b"oops\n");
/// assert_eq!(p.returncode(), Some(0));
/// assert_eq!(p.wait().unwrap().code(), Some(0));
/// ```
///
/// The pipe ends are public fields, as in Python and [`std::process::Child`]: write
/// and read them yourself, or let [`communicate`](Self::communicate) do it (it takes
/// them). Dropping a `Popen` whose child still runs closes the pipes and leaves the
/// child to a detached thread that reaps it when it ends (it is not killed).
#[derive(Debug)]
pub struct Popen {
    /// The write end of the child's stdin, if it is [`PIPE`](super::PIPE).
    pub stdin: Option<ChildStdin>,
    /// The read end of the child's stdout, if it is [`PIPE`](super::PIPE).
    pub stdout: Option<ChildStdout>,
    /// The read end of the child's stderr, if it is [`PIPE`](super::PIPE) (not with
    /// [`STDOUT`](super::STDOUT): then it is in `stdout`).
    pub stderr: Option<ChildStderr>,
    args: Vec<OsString>,
    pid: u32,
    /// `None` once reaped.
    pidfd: Option<OwnedFd>,
    own_group: bool,
    status: Option<ExitStatus>,
    /// A `communicate` that started (and timed out): it goes on from here.
    exchange: Option<Exchange>,
}

impl Popen {
    /// A [`Command`] to configure and [`spawn`](Command::spawn): Python's
    /// `Popen(args, stdin=…, stdout=…, …)`.
    pub fn builder<I, S>(args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new(args)
    }

    pub(super) fn new(
        mut child: std::process::Child,
        args: Vec<OsString>,
        own_group: bool,
        merged_stdout: Option<ChildStdout>,
    ) -> io::Result<Popen> {
        let pid = child.id();
        // The child is ours and unreaped, so its pid cannot have been reused.
        let pidfd = match sys::proc::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        // Known as ours until reaped, so that a leak check reports it unreaped.
        sys::proc::note_child(pid);
        Ok(Popen {
            stdin: child.stdin.take(),
            stdout: child.stdout.take().or(merged_stdout),
            stderr: child.stderr.take(),
            args,
            pid,
            pidfd: Some(pidfd),
            own_group,
            status: None,
            exchange: None,
        })
    }

    /// The child's process id (Python's `pid`). In its own process group (the
    /// default), this is also the group's id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The arguments it was started with (Python's `args`).
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// Whether the child leads a process group of its own (see
    /// [`Command::process_group`]).
    pub fn has_own_group(&self) -> bool {
        self.own_group
    }

    /// Python's `returncode`: `None` while nobody saw the child end (call
    /// [`poll`](Self::poll) or [`wait`](Self::wait)), then its exit code, or minus the
    /// signal that killed it.
    pub fn returncode(&self) -> Option<i32> {
        self.status.map(|s| s.exitcode())
    }

    /// How the child ended, as far as known (no system call; see
    /// [`returncode`](Self::returncode)).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Python's `poll()`: the exit status if the child has ended (and reaps it),
    /// `None` if it still runs. Never waits.
    ///
    /// ```
    /// let mut p = multiproc::subprocess::Popen::builder(["sleep", "60"]).spawn().unwrap();
    /// assert_eq!(p.poll().unwrap(), None);
    /// p.kill().unwrap();
    /// assert_eq!(p.wait().unwrap().signal(), Some(9));
    /// assert_eq!(p.poll().unwrap().unwrap().signal(), Some(9));
    /// ```
    pub fn poll(&mut self) -> io::Result<Option<ExitStatus>> {
        self.wait_until(Some(Instant::now()))
    }

    /// Python's `wait()`: waits for the child to end, reaps it and returns its status.
    /// Closes [`stdin`](Self::stdin) first, as [`std::process::Child::wait`] does, so a
    /// child reading it to its end cannot wait for us while we wait for it. A child
    /// that fills an output pipe nobody reads never ends: use
    /// [`communicate`](Self::communicate) then.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.stdin = None;
        let status = self.wait_until(None)?;
        status.ok_or_else(|| io::Error::other("wait without deadline returned early"))
    }

    /// Python's `wait(timeout)`: as [`wait`](Self::wait) (stdin is closed), at most
    /// `timeout`; `None` if the child still runs (it is not killed).
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut p = multiproc::subprocess::Popen::builder(["sleep", "60"]).spawn().unwrap();
    /// assert_eq!(p.wait_timeout(Duration::from_millis(10)).unwrap(), None);
    /// p.terminate().unwrap();
    /// let status = p.wait_timeout(Duration::from_secs(60)).unwrap().unwrap();
    /// assert_eq!(status.signal_name(), Some("SIGTERM"));
    /// assert_eq!(p.returncode(), Some(-15));
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        self.stdin = None;
        self.wait_until(super::deadline_after(timeout))
    }

    /// Waits until the child ended (and reaps it) or the deadline passed.
    fn wait_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let Some(pidfd) = self.pidfd.as_ref() else {
            return Err(io::Error::other("child lost: reaped without a status"));
        };
        let raw = if deadline.is_none() {
            sys::proc::reap(pidfd.as_fd(), true)?
        } else {
            loop {
                if let Some(raw) = sys::proc::reap(pidfd.as_fd(), false)? {
                    break Some(raw);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break None;
                }
                // The pidfd turns readable when the child exits.
                sys::fd::poll_two(pidfd.as_fd(), None, deadline)?;
            }
        };
        if let Some(raw) = raw {
            self.status = Some(ExitStatus::from_raw(raw));
            self.pidfd = None;
            sys::proc::forget_child(self.pid);
        }
        Ok(self.status)
    }

    /// Python's `communicate(input)`: writes `input` to the child's stdin and closes it
    /// (at once if `input` is empty), reads stdout and stderr to their end, all at the
    /// same time (no deadlock whatever the sizes), then waits for the child. Returns
    /// what it wrote to stdout and stderr (empty for those that are not pipes); the
    /// status is then in [`returncode`](Self::returncode).
    ///
    /// A child that exits without reading all its input simply does not get the rest
    /// (`EPIPE` is not an error here; like any Rust binary, this relies on `SIGPIPE`
    /// being ignored, which std's runtime does before `main`).
    ///
    /// Input without a stdin pipe is an `InvalidInput` error. A grandchild that keeps
    /// the pipes open keeps this waiting: use
    /// [`communicate_timeout`](Self::communicate_timeout) if that can happen.
    pub fn communicate(&mut self, input: impl AsRef<[u8]>) -> io::Result<(Vec<u8>, Vec<u8>)> {
        match self.communicate_until(input.as_ref(), None)? {
            Some(output) => Ok(output),
            None => Err(io::Error::other(
                "communicate without deadline returned early",
            )),
        }
    }

    /// Python's `communicate(input, timeout)`: as [`communicate`](Self::communicate),
    /// but [`SubprocessError::Timeout`] after `timeout`. The child is **not**
    /// killed (Python's semantics); what was read stays here, and the next
    /// `communicate` goes on (pass no input again) and returns all of it:
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::subprocess::{PIPE, Popen, SubprocessError};
    /// let mut p = Popen::builder(["sh", "-c", "echo started; sleep 60"])
    ///     .stdout(PIPE)
    ///     .spawn()
    ///     .unwrap();
    /// let err = p.communicate_timeout(b"", Duration::from_millis(100)).unwrap_err();
    /// assert!(matches!(err, SubprocessError::Timeout { .. }));
    /// p.kill_group().unwrap(); // sh and its sleep
    /// let (out, _) = p.communicate(b"").unwrap();
    /// assert_eq!(out, b"started\n");
    /// assert_eq!(p.returncode(), Some(-9));
    /// ```
    pub fn communicate_timeout(
        &mut self,
        input: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<(Vec<u8>, Vec<u8>), SubprocessError> {
        match self.communicate_until(input.as_ref(), super::deadline_after(timeout))? {
            Some(output) => Ok(output),
            None => Err(SubprocessError::Timeout {
                cmd: self.args.clone(),
                timeout,
                stdout: Vec::new(),
                stderr: Vec::new(),
            }),
        }
    }

    /// `communicate` until `deadline`: `None` if it passed (the exchange is kept).
    pub(super) fn communicate_until(
        &mut self,
        input: &[u8],
        deadline: Option<Instant>,
    ) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let exchange = match self.exchange.as_mut() {
            Some(_) if !input.is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot send input after starting communication",
                ));
            }
            Some(exchange) => exchange,
            None => {
                if !input.is_empty() && self.stdin.is_none() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "input given but the child's stdin is not a pipe (stdin(PIPE))",
                    ));
                }
                self.exchange.insert(Exchange::new(
                    self.stdin.take(),
                    input.to_vec(),
                    self.stdout.take(),
                    self.stderr.take(),
                )?)
            }
        };
        if !exchange.pump(deadline)? || self.wait_until(deadline)?.is_none() {
            return Ok(None);
        }
        Ok(self.exchange.take().map(Exchange::into_output))
    }

    /// The `communicate` in progress, if any (its pipes and what it read).
    pub(super) fn take_exchange(&mut self) -> Option<Exchange> {
        self.exchange.take()
    }

    /// Python's `send_signal(sig)`: sends `signal` (e.g. `libc::SIGUSR1`) to the
    /// child, through its pidfd (never to a process that reused its pid). Does nothing
    /// once the child has been reaped.
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        let Some(pidfd) = self.pidfd.as_ref() else {
            return Ok(());
        };
        match sys::proc::pidfd_kill(pidfd.as_fd(), signal) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// Python's `terminate()`: `SIGTERM` to the child.
    pub fn terminate(&self) -> io::Result<()> {
        self.send_signal(libc::SIGTERM)
    }

    /// Python's `kill()`: `SIGKILL` to the child (not to what it started: see
    /// [`kill_group`](Self::kill_group)).
    pub fn kill(&self) -> io::Result<()> {
        self.send_signal(libc::SIGKILL)
    }

    /// Python's `os.killpg(p.pid, signal)`: sends `signal` to the child's whole
    /// process group — the child and whatever it started that stayed in the group — and
    /// to the child itself (in case it left the group).
    ///
    /// Safe from pid reuse while the child is unreaped (before
    /// [`wait`](Self::wait)/[`poll`](Self::poll) saw it end: `communicate_timeout` does
    /// not reap while pipes are open). After that, the group id stays reserved as long
    /// as any member lives; only once all are gone could it name a new group.
    /// An `Unsupported` error if the child shares this process's group
    /// ([`Command::process_group`]).
    pub fn send_signal_group(&self, signal: i32) -> io::Result<()> {
        if !self.own_group {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the child shares this process's group (process_group(false))",
            ));
        }
        sys::proc::kill_group(self.pid, signal)?;
        self.send_signal(signal)
    }

    /// `SIGKILL` to the child's whole process group: see
    /// [`send_signal_group`](Self::send_signal_group).
    pub fn kill_group(&self) -> io::Result<()> {
        self.send_signal_group(libc::SIGKILL)
    }

    /// Kills what a timeout must: the group if the child has its own, and the child.
    pub(super) fn kill_tree(&self) {
        if self.own_group {
            let _ = sys::proc::kill_group(self.pid, libc::SIGKILL);
        }
        let _ = self.kill();
    }
}

impl Drop for Popen {
    fn drop(&mut self) {
        // Close our pipe ends first: a child waiting on its stdin then sees end-of-file.
        self.stdin = None;
        self.exchange = None;
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        let pid = self.pid;
        if let Ok(Some(_)) = sys::proc::reap(pidfd.as_fd(), false) {
            sys::proc::forget_child(pid);
            return;
        }
        let rt = runtime();
        rt.helper_threads.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name(format!("multiproc-subprocess-reaper-{pid}"))
            .spawn(move || {
                if let Ok(Some(_)) = sys::proc::reap(pidfd.as_fd(), true) {
                    sys::proc::forget_child(pid);
                }
                // Closed before the count drops: a leak check waits on the count.
                drop(pidfd);
                runtime().helper_threads.fetch_sub(1, Ordering::Release);
            });
        if spawned.is_err() {
            // No thread: the child stays unreaped until this process exits.
            rt.helper_threads.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
