//! Helpers shared by the integration tests that start processes.
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use multiproc::{Process, ProcessError, StartMethod};
use serde::Serialize;

pub(crate) const PROMPT: Duration = Duration::from_secs(60);

pub(crate) fn builder(method: StartMethod) -> multiproc::ProcessBuilder {
    multiproc::process::set_fork_warning(false);
    Process::builder().start_method(method)
}

/// Waits (without sleeping blindly) until `cond` holds; panics after `PROMPT`.
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PROMPT, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Reaps a child that was sent `signal` (or raised it) and checks that the signal is
/// what ended it: a child still alive after [`PROMPT`], one that returned, panicked or
/// exited, or one that died of another signal fails the test.
pub(crate) fn assert_killed_by<R>(p: &mut Process<R>, signal: i32, what: &str)
where
    R: serde::de::DeserializeOwned + std::fmt::Debug + 'static,
{
    match p.join_timeout(PROMPT) {
        Err(ProcessError::Signaled { status, .. }) => {
            assert_eq!(status.signal(), Some(signal), "{what}: killed by {status}");
            assert_eq!(status.exitcode(), -signal, "{what}");
        }
        other => panic!("{what}: expected death by signal {signal}, got {other:?}"),
    }
}

/// A child that is killed and reaped if the test panics while it runs, so that a failed
/// assertion cannot leave a process behind (or a test binary waiting for it at exit).
pub(crate) struct Child<R: serde::de::DeserializeOwned + 'static>(pub(crate) Process<R>);

impl<R: serde::de::DeserializeOwned + 'static> Deref for Child<R> {
    type Target = Process<R>;
    fn deref(&self) -> &Process<R> {
        &self.0
    }
}

impl<R: serde::de::DeserializeOwned + 'static> DerefMut for Child<R> {
    fn deref_mut(&mut self) -> &mut Process<R> {
        &mut self.0
    }
}

impl<R: serde::de::DeserializeOwned + 'static> Drop for Child<R> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `target(args)` under `method`, as a [`Child`].
pub(crate) fn start<A, R>(method: StartMethod, target: fn(A) -> R, args: A) -> Child<R>
where
    A: Serialize + serde::de::DeserializeOwned + Send + 'static,
    R: Serialize + serde::de::DeserializeOwned + 'static,
{
    Child(
        builder(method)
            .start(target, args)
            .expect("start the child"),
    )
}

/// Waits at most `bound` for the process `pid` (not necessarily our child) to exit;
/// `true` if it is gone. Its pidfd becomes readable when it exits.
pub(crate) fn wait_gone(pid: u32, bound: Duration) -> bool {
    let Ok(fd) = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    ) else {
        return true;
    };
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec::try_from(bound).unwrap();
    matches!(rustix::event::poll(&mut fds, Some(&ts)), Ok(1))
}

/// Arguments whose `Serialize` panics: user serde code gone wrong, for the tests that a
/// panic there is a typed error and never an unwind into the caller.
#[derive(Debug)]
pub(crate) struct PanicsWhenEncoded;

impl serde::Serialize for PanicsWhenEncoded {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("the arguments' Serialize panicked on purpose")
    }
}

impl<'de> serde::Deserialize<'de> for PanicsWhenEncoded {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <() as serde::Deserialize>::deserialize(d).map(|()| PanicsWhenEncoded)
    }
}

/// A task taking [`PanicsWhenEncoded`].
pub(crate) fn takes_panics_when_encoded(_: PanicsWhenEncoded) -> u32 {
    1
}

/// A value whose serde impls fail with the user's own text "bad": `OnEncode` in its
/// `Serialize`, `OnDecode` in its `Deserialize` (issue 13: that text reaches the caller).
#[derive(Debug)]
pub(crate) enum Bad {
    OnEncode,
    OnDecode,
}

impl serde::Serialize for Bad {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Bad::OnEncode => Err(serde::ser::Error::custom("bad")),
            Bad::OnDecode => s.serialize_u8(1),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Bad {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <u8 as serde::Deserialize>::deserialize(d)?;
        Err(serde::de::Error::custom("bad"))
    }
}

/// Asserts that an error's text names the type `Bad` and ends with the user's "bad".
pub(crate) fn says_bad(text: String) {
    assert!(text.contains("Bad") && text.ends_with(": bad"), "{text}");
}

/// The resident memory of process `pid` ("self" for this one), in bytes.
pub(crate) fn rss_of(pid: &str) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).expect("read statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm's resident field");
    pages * 4096
}

/// A pool of `n` workers started by `method`.
pub(crate) fn pool(method: StartMethod, n: usize) -> multiproc::pool::Pool {
    multiproc::process::set_fork_warning(false);
    multiproc::pool::Pool::builder()
        .processes(n)
        .start_method(method)
        .build()
        .expect("start the pool")
}

/// A process executor of at most `n` workers started by `method`.
pub(crate) fn executor(method: StartMethod, n: usize) -> multiproc::executor::ProcessPoolExecutor {
    multiproc::process::set_fork_warning(false);
    multiproc::executor::ProcessPoolExecutor::builder()
        .max_workers(n)
        .start_method(method)
        .build()
        .expect("start the executor")
}
