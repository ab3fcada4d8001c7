//! The engine of `communicate`: writes the input to the child's stdin while it reads
//! its stdout and stderr, all three multiplexed with `poll(2)` on non-blocking pipe
//! ends, so that neither side can fill a pipe and wait for the other (the deadlock of
//! a naive "write everything, then read").

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::sys;

/// Bytes asked for per `read`: the default capacity of a Linux pipe.
const CHUNK: usize = 64 * 1024;

/// Reads per readiness of one pipe before the others get their turn (a child that
/// writes as fast as we read must not starve the other pipe or the deadline check).
const READS_PER_TURN: usize = 16;

/// One `communicate` in progress: what is left to write, what was read so far. It
/// survives a timeout, so that a later call goes on where this one stopped.
pub(super) struct Exchange {
    stdin: Option<File>,
    input: Vec<u8>,
    written: usize,
    stdout: Option<File>,
    stderr: Option<File>,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Lengths, not the megabytes themselves.
        f.debug_struct("Exchange")
            .field("stdin_open", &self.stdin.is_some())
            .field("input_left", &(self.input.len() - self.written))
            .field("stdout_open", &self.stdout.is_some())
            .field("stderr_open", &self.stderr.is_some())
            .field("stdout_read", &self.out.len())
            .field("stderr_read", &self.err.len())
            .finish()
    }
}

/// A pipe end as a non-blocking `File` (its own open file description: the child's end
/// is not affected).
fn nonblocking(fd: impl Into<OwnedFd>) -> io::Result<File> {
    let fd: OwnedFd = fd.into();
    sys::fd::set_nonblocking(fd.as_fd(), true)?;
    Ok(File::from(fd))
}

impl Exchange {
    /// Takes over the pipe ends. An empty `input` closes stdin at once (the child sees
    /// end-of-file), as Python does.
    pub(super) fn new(
        stdin: Option<impl Into<OwnedFd>>,
        input: Vec<u8>,
        stdout: Option<impl Into<OwnedFd>>,
        stderr: Option<impl Into<OwnedFd>>,
    ) -> io::Result<Exchange> {
        let stdin = if input.is_empty() {
            None // dropped: closed
        } else {
            stdin.map(nonblocking).transpose()?
        };
        Ok(Exchange {
            stdin,
            input,
            written: 0,
            stdout: stdout.map(nonblocking).transpose()?,
            stderr: stderr.map(nonblocking).transpose()?,
            out: Vec::new(),
            err: Vec::new(),
        })
    }

    /// Moves data until every pipe is closed (`Ok(true)`: the input was written or
    /// refused, both outputs reached end-of-file) or the deadline passes (`Ok(false)`;
    /// call again to go on). `None` waits as long as it takes.
    pub(super) fn pump(&mut self, deadline: Option<Instant>) -> io::Result<bool> {
        loop {
            if self.stdin.is_none() && self.stdout.is_none() && self.stderr.is_none() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            let [w, o, e] = self.wait_ready(deadline)?;
            if w {
                self.write_input()?;
            }
            if o {
                read_some(&mut self.stdout, &mut self.out)?;
            }
            if e {
                read_some(&mut self.stderr, &mut self.err)?;
            }
        }
    }

    /// Which of stdin (writable), stdout, stderr (readable) are ready; all `false` when
    /// the deadline passed first. Error and hang-up count as ready: the next `read` or
    /// `write` reports them.
    fn wait_ready(&self, deadline: Option<Instant>) -> io::Result<[bool; 3]> {
        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        if let Some(f) = &self.stdin {
            fds.push(PollFd::new(f, PollFlags::OUT));
            which.push(0);
        }
        for (i, f) in [(1, &self.stdout), (2, &self.stderr)] {
            if let Some(f) = f {
                fds.push(PollFd::new(f, PollFlags::IN));
                which.push(i);
            }
        }
        loop {
            let timeout = sys::mem::time_left(deadline).map(|left| {
                Timespec::try_from(left).unwrap_or(Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                })
            });
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut ready = [false; 3];
        for (fd, i) in fds.iter().zip(which) {
            ready[i] = !fd.revents().is_empty();
        }
        Ok(ready)
    }

    /// Writes what the pipe takes. A child that closed its stdin (`EPIPE`) simply does
    /// not get the rest, as in Python. Closes stdin when everything is written.
    fn write_input(&mut self) -> io::Result<()> {
        let Some(pipe) = self.stdin.as_mut() else {
            return Ok(());
        };
        while self.written < self.input.len() {
            match pipe.write(&self.input[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
                Err(e) => return Err(e),
            }
        }
        self.stdin = None;
        self.input = Vec::new();
        self.written = 0;
        Ok(())
    }

    /// Waits up to `deadline` for what is still in flight, then closes every pipe and
    /// returns what was read.
    pub(super) fn finish(mut self, deadline: Instant) -> (Vec<u8>, Vec<u8>) {
        let _ = self.pump(Some(deadline));
        (self.out, self.err)
    }

    /// What was read; closes the pipes still open.
    pub(super) fn into_output(self) -> (Vec<u8>, Vec<u8>) {
        (self.out, self.err)
    }
}

/// Reads what `pipe` has now into `buf`; closes it (sets `None`) at end-of-file.
fn read_some(pipe: &mut Option<File>, buf: &mut Vec<u8>) -> io::Result<()> {
    let Some(f) = pipe.as_mut() else {
        return Ok(());
    };
    for _ in 0..READS_PER_TURN {
        let len = buf.len();
        buf.resize(len + CHUNK, 0);
        let got = f.read(&mut buf[len..]);
        buf.truncate(len + *got.as_ref().unwrap_or(&0));
        match got {
            Ok(0) => {
                *pipe = None;
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
