//! [`Command`]: the arguments of Python's `Popen(…)` and `run(…)`, as a builder.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ChildStdout;
use std::time::{Duration, Instant};

use super::popen::Popen;
use super::{Completed, POST_KILL_DRAIN, SubprocessError};

/// Where a child's stdin, stdout or stderr goes: Python's `PIPE`, `DEVNULL`, `STDOUT`,
/// a file, or `None` (inherit).
///
/// ```
/// use multiproc::subprocess::{self, Stdio};
/// let file = tempfile_in_target();
/// subprocess::run(["echo", "to a file"])
///     .stdout(Stdio::File(file.try_clone().unwrap()))
///     .output()
///     .unwrap();
/// # fn tempfile_in_target() -> std::fs::File {
/// #     let path = std::env::temp_dir().join(format!("mp-doc-stdio-{}", std::process::id()));
/// #     let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true)
/// #         .open(&path).unwrap();
/// #     std::fs::remove_file(&path).unwrap();
/// #     f
/// # }
/// ```
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Stdio {
    /// The child uses this process's descriptor (Python's `None`, the default).
    #[default]
    Inherit,
    /// A pipe to this process: [`Popen::stdin`], [`Popen::stdout`], [`Popen::stderr`],
    /// or what `communicate` and [`Command::output`] use (Python's `PIPE`).
    Pipe,
    /// `/dev/null` (Python's `DEVNULL`).
    DevNull,
    /// An open file (Python's file object or descriptor).
    File(File),
    /// For stderr only: wherever stdout goes, the same pipe included (Python's
    /// `STDOUT`).
    Stdout,
}

/// Python's `subprocess.PIPE`.
pub const PIPE: Stdio = Stdio::Pipe;
/// Python's `subprocess.DEVNULL`.
pub const DEVNULL: Stdio = Stdio::DevNull;
/// Python's `subprocess.STDOUT`: stderr goes where stdout goes.
pub const STDOUT: Stdio = Stdio::Stdout;

impl From<File> for Stdio {
    fn from(file: File) -> Stdio {
        Stdio::File(file)
    }
}

impl Stdio {
    fn is_inherit(&self) -> bool {
        matches!(self, Stdio::Inherit)
    }

    fn into_std(self, which: &str) -> io::Result<std::process::Stdio> {
        Ok(match self {
            Stdio::Inherit => std::process::Stdio::inherit(),
            Stdio::Pipe => std::process::Stdio::piped(),
            Stdio::DevNull => std::process::Stdio::null(),
            Stdio::File(f) => f.into(),
            Stdio::Stdout => {
                return Err(invalid(format!(
                    "Stdio::Stdout (STDOUT) is for stderr, not {which}"
                )));
            }
        })
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// A program to run and how: Python's `Popen(…)`/`run(…)` keyword arguments. Made by
/// [`run`](super::run), [`Popen::builder`] or [`Command::new`]; ended by
/// [`output`](Self::output) (Python's `run`: to the end, with `input`, `check`,
/// `timeout`) or [`spawn`](Self::spawn) (Python's `Popen`).
///
/// ```
/// use multiproc::subprocess::{Command, PIPE};
/// let done = Command::new(["sh", "-c", "echo $GREETING from $(pwd)"])
///     .env("GREETING", "hello")
///     .cwd("/")
///     .stdout(PIPE)
///     .output()
///     .unwrap();
/// assert_eq!(done.stdout, b"hello from /\n");
/// ```
#[derive(Debug)]
#[must_use = "a Command does nothing until output() or spawn()"]
pub struct Command {
    args: Vec<OsString>,
    shell: bool,
    cwd: Option<PathBuf>,
    env_clear: bool,
    env: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    input: Option<Vec<u8>>,
    check: bool,
    timeout: Option<Duration>,
    process_group: Option<bool>,
}

impl Command {
    /// The program (`args[0]`, looked up in `PATH` unless it contains a `/`) and its
    /// arguments; with [`shell(true)`](Self::shell), the shell command line instead.
    pub fn new<I, S>(args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command {
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            shell: false,
            cwd: None,
            env_clear: false,
            env: Vec::new(),
            stdin: None,
            stdout: None,
            stderr: None,
            input: None,
            check: false,
            timeout: None,
            process_group: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Python's `shell=True`: runs `/bin/sh -c args[0] args[1..]` (the first argument
    /// is the shell's command line, the others its `$0`, `$1`, …).
    ///
    /// ```
    /// let done = multiproc::subprocess::run(["echo one two | wc -w"])
    ///     .shell(true)
    ///     .capture()
    ///     .output()
    ///     .unwrap();
    /// assert_eq!(String::from_utf8_lossy(&done.stdout).trim(), "2");
    /// ```
    pub fn shell(mut self, shell: bool) -> Self {
        self.shell = shell;
        self
    }

    /// Python's `cwd=`: the child's working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets one environment variable of the child (on top of this process's
    /// environment, unless [`env_clear`](Self::env_clear)).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Removes one variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the child's environment empty (Python's `env={…}` replaces it whole:
    /// `env_clear().envs(…)`).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// Where the child's stdin comes from (default: inherited).
    pub fn stdin(mut self, stdin: impl Into<Stdio>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }

    /// Where the child's stdout goes (default: inherited).
    pub fn stdout(mut self, stdout: impl Into<Stdio>) -> Self {
        self.stdout = Some(stdout.into());
        self
    }

    /// Where the child's stderr goes (default: inherited); [`STDOUT`] merges it into
    /// stdout.
    pub fn stderr(mut self, stderr: impl Into<Stdio>) -> Self {
        self.stderr = Some(stderr.into());
        self
    }

    /// Python's `capture_output=True`: stdout and stderr to pipes, returned in
    /// [`Completed`].
    pub fn capture(self) -> Self {
        self.stdout(Stdio::Pipe).stderr(Stdio::Pipe)
    }

    /// Python's `input=`: bytes written to the child's stdin (a pipe, closed after
    /// them) by [`output`](Self::output). Cannot be combined with another
    /// [`stdin`](Self::stdin).
    pub fn input(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.input = Some(input.into());
        self
    }

    /// Python's `check=True`: [`output`](Self::output) returns
    /// [`SubprocessError::Called`] unless the program exits with 0.
    pub fn check(mut self) -> Self {
        self.check = true;
        self
    }

    /// Python's `timeout=`: [`output`](Self::output) kills the child's process group
    /// when the program has not ended (and closed its pipes) after `timeout`, reaps the
    /// child and returns [`SubprocessError::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether the child starts a process group of its own (Python's
    /// `process_group=0`). Default: yes, unless its stdin is inherited from this
    /// process and is a terminal (a child in another group than the terminal's
    /// foreground group is stopped when it reads it). In its own group, a timeout
    /// kills what it started too; in the caller's group, only the child itself.
    pub fn process_group(mut self, own_group: bool) -> Self {
        self.process_group = Some(own_group);
        self
    }

    /// Python's `Popen(…)`: starts the program and returns at once. `input`, `check`
    /// and `timeout` belong to [`output`](Self::output): give the input to
    /// [`Popen::communicate`] and the timeouts to the `Popen`'s `_timeout` methods
    /// (setting them here is an `InvalidInput` error).
    ///
    /// A missing program is an error of kind [`io::ErrorKind::NotFound`] whose message
    /// names it.
    pub fn spawn(self) -> io::Result<Popen> {
        if self.input.is_some() || self.check || self.timeout.is_some() {
            return Err(invalid(
                "input, check and timeout are options of output() (Python's run); \
                 with spawn() use Popen::communicate / communicate_timeout / wait_timeout",
            ));
        }
        self.start()
    }

    /// Python's `run(…)`: runs the program to its end, writing
    /// [`input`](Self::input) and reading its pipes as it runs (no deadlock whatever
    /// their sizes), and returns how it ended with what it wrote to pipes.
    ///
    /// Errors: [`SubprocessError::Called`] with [`check`](Self::check) if it did not
    /// exit with 0; [`SubprocessError::Timeout`] when the
    /// [`timeout`](Self::timeout) expired (the child's process group was killed, the
    /// child reaped); [`SubprocessError::Io`] if it could not be started.
    pub fn output(mut self) -> Result<Completed, SubprocessError> {
        let input = self.input.take();
        let (check, timeout) = (self.check, self.timeout);
        let args = self.args.clone();
        if input.is_some() {
            match self.stdin {
                None | Some(Stdio::Pipe) => self.stdin = Some(Stdio::Pipe),
                Some(_) => return Err(invalid("stdin and input cannot both be given").into()),
            }
        }
        let mut child = self.start()?;
        let deadline = timeout.and_then(super::deadline_after);
        let input = input.unwrap_or_default();
        let (stdout, stderr) = match child.communicate_until(&input, deadline) {
            Ok(Some(output)) => output,
            Ok(None) => {
                // Timed out: kill the group while the child is unreaped (its id then
                // cannot name another group), read what is left, reap.
                child.kill_tree();
                let (stdout, stderr) = child
                    .take_exchange()
                    .map(|ex| ex.finish(Instant::now() + POST_KILL_DRAIN))
                    .unwrap_or_default();
                child.wait()?;
                return Err(SubprocessError::Timeout {
                    cmd: args,
                    timeout: timeout.unwrap_or_default(),
                    stdout,
                    stderr,
                });
            }
            Err(e) => {
                // As Python's run: never leave the child running behind an error.
                child.kill_tree();
                drop(child.take_exchange());
                let _ = child.wait();
                return Err(e.into());
            }
        };
        let done = Completed {
            args,
            status: child.wait()?,
            stdout,
            stderr,
        };
        if check {
            done.check_returncode()
        } else {
            Ok(done)
        }
    }

    /// Builds the std command, starts it and wraps it in a [`Popen`].
    fn start(self) -> io::Result<Popen> {
        let Some(program) = self.args.first() else {
            return Err(invalid("empty command: no program to run"));
        };
        let mut cmd = if self.shell {
            let mut cmd = std::process::Command::new("/bin/sh");
            cmd.arg("-c").args(&self.args);
            cmd
        } else {
            let mut cmd = std::process::Command::new(program);
            cmd.args(&self.args[1..]);
            cmd
        };
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        if self.env_clear {
            cmd.env_clear();
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let stdin = self.stdin.unwrap_or_default();
        let own_group = self
            .process_group
            .unwrap_or_else(|| !(stdin.is_inherit() && io::stdin().is_terminal()));
        if own_group {
            cmd.process_group(0);
        }
        cmd.stdin(stdin.into_std("stdin")?);
        let merged = set_out_err(
            &mut cmd,
            self.stdout.unwrap_or_default(),
            self.stderr.unwrap_or_default(),
        )?;
        let child = cmd.spawn().map_err(|e| {
            let what = if self.shell {
                "/bin/sh".into()
            } else {
                program.to_string_lossy()
            };
            io::Error::new(e.kind(), format!("cannot run `{what}`: {e}"))
        })?;
        // The merged pipe's write ends went to the child with `cmd`; drop ours now so
        // that end-of-file comes when the child closes its copies.
        drop(cmd);
        Popen::new(child, self.args, own_group, merged.map(ChildStdout::from))
    }
}

/// Sets the child's stdout and stderr. Returns the read end of the pipe both share when
/// stderr is [`Stdio::Stdout`] and stdout a pipe.
fn set_out_err(
    cmd: &mut std::process::Command,
    stdout: Stdio,
    stderr: Stdio,
) -> io::Result<Option<OwnedFd>> {
    if !matches!(stderr, Stdio::Stdout) {
        cmd.stdout(stdout.into_std("stdout")?);
        cmd.stderr(stderr.into_std("stderr")?);
        return Ok(None);
    }
    let (out, err, reader): (std::process::Stdio, std::process::Stdio, _) = match stdout {
        Stdio::Inherit => (
            std::process::Stdio::inherit(),
            io::stdout().as_fd().try_clone_to_owned()?.into(),
            None,
        ),
        Stdio::DevNull => (
            std::process::Stdio::null(),
            std::process::Stdio::null(),
            None,
        ),
        Stdio::File(f) => {
            let twin = f.try_clone()?;
            (f.into(), twin.into(), None)
        }
        Stdio::Pipe => {
            let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            let twin = writer.try_clone()?;
            (writer.into(), twin.into(), Some(reader))
        }
        Stdio::Stdout => return Err(invalid("Stdio::Stdout (STDOUT) is for stderr, not stdout")),
    };
    cmd.stdout(out);
    cmd.stderr(err);
    Ok(reader)
}
