//! Exit status of a child.

use crate::sys::proc::RawStatus;

/// How a child ended: an exit code or a terminating signal (S26, S27).
///
/// ```
/// # multiproc::init();
/// let mut p = multiproc::Process::start(|()| -> () { std::process::exit(3) }, ()).unwrap();
/// let status = p.wait().unwrap();
/// assert_eq!(status.code(), Some(3));
/// assert_eq!(status.exitcode(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ExitStatus {
    code: Option<i32>,
    signal: Option<i32>,
}

impl ExitStatus {
    pub(crate) fn from_raw((code, signal): RawStatus) -> ExitStatus {
        ExitStatus { code, signal }
    }

    /// Whether the child exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit code, if the child exited (rather than being killed).
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    /// The signal that killed the child, if it was killed.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// Python's `exitcode`: the exit code, or minus the signal number.
    pub fn exitcode(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => -s,
            (None, None) => 0,
        }
    }

    /// The signal's name (`"SIGTERM"`), if the child was killed.
    pub fn signal_name(&self) -> Option<&'static str> {
        self.signal.map(signal_name)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (_, Some(s)) => write!(f, "signal {s} ({})", signal_name(s)),
            (Some(c), None) => write!(f, "exit code {c}"),
            (None, None) => f.write_str("unknown status"),
        }
    }
}

/// The conventional name of a signal number.
pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGSYS => "SIGSYS",
        _ => "signal",
    }
}
