//! Running other programs: Python's `subprocess`, natively (S11).
//!
//! Built on [`std::process::Command`] (so the child starts through `posix_spawn`), with
//! what std lacks added: [`Popen::communicate`] that feeds stdin while it drains stdout
//! and stderr (no deadlock, whatever the sizes), timeouts on every wait, Python's
//! `run(check=True, capture_output=True)` with typed errors, and timeouts that kill
//! the child's whole process group, so a grandchild that still holds the pipes cannot
//! keep [`Command::output`] waiting (CPython issue 97000).
//!
//! ```
//! use multiproc::subprocess::{self, PIPE, Popen, SubprocessError};
//!
//! // subprocess.call('true') -> 0
//! assert_eq!(subprocess::call(["true"]).unwrap().code(), Some(0));
//!
//! // subprocess.run(['sh', '-c', 'echo hi; exit 3'], capture_output=True, check=True)
//! let err = subprocess::run(["sh", "-c", "echo hi; exit 3"]).capture().check().output();
//! match err {
//!     Err(SubprocessError::Called { status, stdout, .. }) => {
//!         assert_eq!(status.code(), Some(3));
//!         assert_eq!(stdout, b"hi\n");
//!     }
//!     other => panic!("{other:?}"),
//! }
//!
//! // Popen(['tr', 'a-z', 'A-Z'], stdin=PIPE, stdout=PIPE).communicate(b'mx\n')
//! let mut p = Popen::builder(["tr", "a-z", "A-Z"]).stdin(PIPE).stdout(PIPE).spawn().unwrap();
//! let (out, _err) = p.communicate(b"mx\n").unwrap();
//! assert_eq!(out, b"MX\n");
//! assert_eq!(p.returncode(), Some(0));
//! ```
//!
//! # Python → multiproc
//!
//! | Python | here |
//! |---|---|
//! | `call(args)` | [`call`] → `io::Result<ExitStatus>` |
//! | `check_call(args)`, `check_output(args)` | [`check_call`], [`check_output`] |
//! | `run(args, input=…, capture_output=True, check=True, timeout=…, cwd=…, env=…, shell=True)` | [`run`]`(args).input(…).capture().check().timeout(…).cwd(…).env(…).shell(true).output()` → [`Completed`] |
//! | `Popen(args, stdin=PIPE, stdout=PIPE, stderr=STDOUT)` | [`Popen::builder`]`(args).stdin(PIPE).stdout(PIPE).stderr(STDOUT).spawn()` |
//! | `PIPE`, `DEVNULL`, `STDOUT`, a file, `None` | [`PIPE`], [`DEVNULL`], [`STDOUT`], [`Stdio::File`] (`From<File>`), [`Stdio::Inherit`] |
//! | `p.communicate(input)`, `p.communicate(input, timeout)` | [`Popen::communicate`], [`Popen::communicate_timeout`] |
//! | `p.wait()`, `p.wait(timeout)`, `p.poll()`, `p.returncode` | [`Popen::wait`], [`Popen::wait_timeout`], [`Popen::poll`], [`Popen::returncode`] |
//! | `p.terminate()`, `p.kill()`, `p.send_signal(s)`, `os.killpg(p.pid, s)` | [`Popen::terminate`], [`Popen::kill`], [`Popen::send_signal`], [`Popen::send_signal_group`] / [`Popen::kill_group`] |
//! | `p.stdin`, `p.stdout`, `p.stderr`, `p.pid`, `p.args` | the fields [`Popen::stdin`] …, [`Popen::pid`], [`Popen::args`] |
//! | `CalledProcessError`, `TimeoutExpired`, `OSError` | [`SubprocessError::Called`], [`SubprocessError::Timeout`], [`SubprocessError::Io`] |
//!
//! # Process groups and timeouts
//!
//! A child starts in a process group of its own (`process_group(0)`), unless it
//! inherits a terminal as stdin: only the terminal's foreground group may read it, and
//! a child in another group that tries is stopped (`SIGTTIN`), so such a child stays in
//! the caller's group ([`Command::process_group`] overrides either way). When the
//! timeout of [`Command::output`] expires, the whole group gets `SIGKILL` — the child
//! and everything it started that did not leave the group — then what is still in the
//! pipes is read for at most [`POST_KILL_DRAIN`] (a process that left the group with
//! `setsid` may hold them), the child is reaped, and
//! [`SubprocessError::Timeout`] carries the output read until then.
//! [`Popen::communicate_timeout`] and [`Popen::wait_timeout`] do not kill (as in
//! Python): kill yourself, with [`Popen::kill_group`] for the whole group.
//!
//! # Reaping
//!
//! [`Popen::wait`], [`Popen::poll`] and `communicate` reap the child once it ended. A
//! [`Popen`] dropped while its child runs closes its pipe ends and hands the child to a
//! detached thread that waits for it (the child is not killed, as in Python and std):
//! no zombie is left. Unlike multiproc's [`Process`](crate::Process) children, a
//! program started here does not die with its parent.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::time::Duration;

mod command;
mod exchange;
mod popen;

pub use command::{Command, DEVNULL, PIPE, STDOUT, Stdio};
pub use popen::Popen;

pub use crate::process::ExitStatus;

/// How long [`Command::output`] still reads the pipes after it killed a child whose
/// timeout expired (waiting only for end-of-file: what is buffered is read at once).
pub const POST_KILL_DRAIN: Duration = Duration::from_secs(1);

/// A program that ran to its end: Python's `CompletedProcess`, returned by
/// [`Command::output`].
///
/// ```
/// let done = multiproc::subprocess::run(["echo", "hi"]).capture().output().unwrap();
/// assert_eq!(done.returncode(), 0);
/// assert_eq!(done.stdout, b"hi\n");
/// assert!(done.stderr.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completed {
    /// The arguments it was started with.
    pub args: Vec<OsString>,
    /// How it ended.
    pub status: ExitStatus,
    /// What it wrote to its stdout, if that was a pipe ([`Command::capture`],
    /// [`PIPE`]); empty otherwise.
    pub stdout: Vec<u8>,
    /// What it wrote to its stderr, if that was a pipe; empty otherwise.
    pub stderr: Vec<u8>,
}

impl Completed {
    /// Python's `returncode`: the exit code, or minus the signal that killed it.
    pub fn returncode(&self) -> i32 {
        self.status.exitcode()
    }

    /// Python's `check_returncode()`: itself if the program succeeded, otherwise
    /// [`SubprocessError::Called`] with its status and output.
    ///
    /// ```
    /// let done = multiproc::subprocess::run(["false"]).output().unwrap();
    /// assert!(done.check_returncode().is_err());
    /// ```
    pub fn check_returncode(self) -> Result<Completed, SubprocessError> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(SubprocessError::Called {
                cmd: self.args,
                status: self.status,
                stdout: self.stdout,
                stderr: self.stderr,
            })
        }
    }
}

/// Why [`Command::output`] (Python's `run`) or [`Popen::communicate_timeout`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubprocessError {
    /// Python's `CalledProcessError`: the program did not succeed and
    /// [`Command::check`] was asked for.
    #[error("command {} failed with {status}", CmdLine(.cmd))]
    Called {
        /// The arguments it was started with.
        cmd: Vec<OsString>,
        /// How it ended.
        status: ExitStatus,
        /// Its stdout, if it was captured.
        stdout: Vec<u8>,
        /// Its stderr, if it was captured.
        stderr: Vec<u8>,
    },
    /// Python's `TimeoutExpired`. From [`Command::output`] the child's process group
    /// was killed and the child reaped, and `stdout`/`stderr` hold what it wrote until
    /// then. From [`Popen::communicate_timeout`] the child still runs, the output read
    /// so far stays in the [`Popen`] (the next `communicate` returns it with the rest)
    /// and these are empty.
    ///
    /// Named `Timeout` as every wait that ran out in this crate; the doc alias finds it
    /// under Python's name.
    #[doc(alias = "TimeoutExpired")]
    #[error("command {} timed out after {timeout:?}", CmdLine(.cmd))]
    Timeout {
        /// The arguments it was started with.
        cmd: Vec<OsString>,
        /// The timeout that expired.
        timeout: Duration,
        /// What it wrote to its stdout pipe before it was killed.
        stdout: Vec<u8>,
        /// What it wrote to its stderr pipe before it was killed.
        stderr: Vec<u8>,
    },
    /// Python's `OSError`: the program could not be started (its name is in the
    /// message; the [`io::ErrorKind`] is the system's, `NotFound` for a missing
    /// program), or a pipe or wait failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Python's `call(args)`: runs the program with this process's stdin, stdout and
/// stderr and returns how it ended (S11). Use [`run`] for more options.
///
/// ```
/// let status = multiproc::subprocess::call(["sh", "-c", "exit 4"]).unwrap();
/// assert_eq!(status.code(), Some(4));
/// let missing = multiproc::subprocess::call(["no-such-program-here"]).unwrap_err();
/// assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
/// ```
pub fn call<I, S>(args: I) -> io::Result<ExitStatus>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    match run(args).output() {
        Ok(done) => Ok(done.status),
        Err(SubprocessError::Io(e)) => Err(e),
        Err(other) => Err(io::Error::other(other)),
    }
}

/// Python's `check_call(args)`: as [`call`], but a failure is
/// [`SubprocessError::Called`].
///
/// ```
/// assert!(multiproc::subprocess::check_call(["true"]).is_ok());
/// assert!(multiproc::subprocess::check_call(["false"]).is_err());
/// ```
pub fn check_call<I, S>(args: I) -> Result<ExitStatus, SubprocessError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(args).check().output().map(|done| done.status)
}

/// Python's `check_output(args)`: runs the program, returns its stdout; a failure is
/// [`SubprocessError::Called`] (with the output).
///
/// ```
/// let out = multiproc::subprocess::check_output(["echo", "hello"]).unwrap();
/// assert_eq!(out, b"hello\n");
/// ```
pub fn check_output<I, S>(args: I) -> Result<Vec<u8>, SubprocessError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(args)
        .stdout(Stdio::Pipe)
        .check()
        .output()
        .map(|done| done.stdout)
}

/// Python's `run(args, …)`: a [`Command`] to configure, then [`Command::output`] runs
/// it to its end (or [`Command::spawn`] starts it as a [`Popen`]).
///
/// ```
/// use std::time::Duration;
/// let done = multiproc::subprocess::run(["cat"])
///     .input("piped in")
///     .capture()
///     .check()
///     .timeout(Duration::from_secs(60))
///     .output()
///     .unwrap();
/// assert_eq!(done.stdout, b"piped in");
/// ```
pub fn run<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(args)
}

/// The instant `timeout` from now; `None` (no deadline) if that is beyond what an
/// `Instant` can hold (`Duration::MAX`).
fn deadline_after(timeout: Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(timeout)
}

/// A command line for messages: arguments separated by spaces, those that a shell
/// would split or expand quoted.
struct CmdLine<'a>(&'a [OsString]);

impl fmt::Display for CmdLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`")?;
        for (i, arg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let arg = arg.to_string_lossy();
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-_./=:,+%@".contains(c));
            if plain {
                f.write_str(&arg)?;
            } else {
                write!(f, "{arg:?}")?;
            }
        }
        f.write_str("`")
    }
}
