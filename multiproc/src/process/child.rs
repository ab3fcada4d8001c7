//! The child's side: receiving the bootstrap, running the target, reporting the outcome.
//!
//! Protocol on the private stream socket between a parent and one child:
//!
//! 1. (`spawn`, `forkserver` only) parent → child: one [`Bootstrap`] frame.
//! 2. child → parent: one [`Outcome`] frame, written just before the child exits.
//!
//! A child that dies before step 2 leaves no (or a truncated) outcome; the parent then
//! reports the exit status instead.

use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::info::{self, ChildInfo};
use super::runtime;
use crate::codec::{self, Limits};
use crate::sys;
use crate::sys::entry::{FnAddr, Verified};

/// Exit code of a child whose target panicked (Python: an uncaught exception gives 1).
pub const EXIT_PANIC: i32 = 1;
/// Exit code of a child that could not read or run its bootstrap.
pub const EXIT_BOOTSTRAP: i32 = 70;
pub use crate::sys::proc::EXIT_ORPHANED;

/// What a `spawn`/`forkserver` child needs to run its target.
#[derive(Serialize, Deserialize)]
pub(crate) struct Bootstrap {
    pub(crate) exe: (u64, u64),
    pub(crate) entry: FnAddr,
    pub(crate) target: FnAddr,
    pub(crate) info: ChildInfo,
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
}

/// How the target ended, as the child reports it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// Returned normally; the postcard body of the return value.
    Returned(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Panicked with this message.
    Panicked(String),
    /// The arguments could not be decoded, or the result encoded.
    Codec(String),
    /// The bootstrap failed before the target ran.
    Bootstrap(String),
}

impl Outcome {
    fn exit_code(&self) -> i32 {
        match self {
            Outcome::Returned(_) => 0,
            Outcome::Panicked(_) | Outcome::Codec(_) => EXIT_PANIC,
            Outcome::Bootstrap(_) => EXIT_BOOTSTRAP,
        }
    }
}

/// What an entry function gets.
pub(crate) struct EntryCall {
    pub(crate) proof: Verified,
    pub(crate) target: FnAddr,
    pub(crate) args: Vec<u8>,
    /// Descriptors that came with the bootstrap, for the handles inside `args`.
    pub(crate) fds: Vec<OwnedFd>,
}

/// The monomorphic function a child calls to run its target.
pub(crate) type Entry = fn(EntryCall) -> Outcome;

/// Entry for a `fn(A) -> R` target.
pub(crate) fn entry_fn<A: DeserializeOwned, R: Serialize>(call: EntryCall) -> Outcome {
    let f: fn(A) -> R = sys::entry::resolve(&call.proof, call.target);
    let args: A = match crate::handle::provide_fds(call.fds, || codec::decode(&call.args)) {
        Ok(a) => a,
        Err(e) => return Outcome::Codec(format!("arguments: {e}")),
    };
    run_caught(move || f(args))
}

/// Entry for a [`Run`](crate::Run) target.
pub(crate) fn entry_run<T: crate::process::Run + DeserializeOwned>(call: EntryCall) -> Outcome
where
    T::Output: Serialize,
{
    let obj: T = match crate::handle::provide_fds(call.fds, || codec::decode(&call.args)) {
        Ok(a) => a,
        Err(e) => return Outcome::Codec(format!("arguments: {e}")),
    };
    run_caught(move || obj.run())
}

/// Runs `f`, catching a panic, and encodes its result.
pub(crate) fn run_caught<R: Serialize>(f: impl FnOnce() -> R) -> Outcome {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => match codec::encode(&value) {
            Ok(bytes) => Outcome::Returned(bytes),
            Err(e) => Outcome::Codec(format!("result: {e}")),
        },
        Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
    }
}

use crate::codec::panic_message;

/// Reports `outcome` on `chan`, waits for this child's own non-daemon children, flushes
/// stdio and ends the process.
pub(crate) fn finish(chan: &OwnedFd, outcome: Outcome) -> i32 {
    report(chan, outcome, false)
}

/// [`finish`] for a child made by `fork`: another thread of the parent may have held
/// the lock of stdout or stderr at the moment of the fork; in the child that thread does
/// not exist and the lock is never released. The flush is then given a second, after
/// which an alarm ends the child with its exit code (its report is already sent; at
/// most an unfinished line is lost) instead of letting it hang.
pub(crate) fn finish_forked(chan: &OwnedFd, outcome: Outcome) -> i32 {
    report(chan, outcome, true)
}

fn report(chan: &OwnedFd, outcome: Outcome, forked: bool) -> i32 {
    let code = outcome.exit_code();
    // A value that encodes to nothing (`()`) needs no report: the parent decodes it
    // from the empty report of a child that exited with 0.
    let empty = matches!(&outcome, Outcome::Returned(bytes) if bytes.is_empty());
    if !empty {
        if let Ok(frame) = codec::encode_frame(&outcome, &Limits::default()) {
            let _ = sys::fd::send_all(chan.as_fd(), &frame);
        }
    }
    if forked {
        sys::proc::exit_if_stuck(1, code);
        flush_stdio();
        sys::proc::exit_if_stuck(0, code);
    } else {
        flush_stdio();
    }
    end_of_child();
    code
}

fn flush_stdio() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// What every multiproc child does before `_exit` (after flushing stdio): run the
/// lower layers' child-end hooks (the rings give back their lanes), then (like
/// CPython's `_exit_function`) terminate daemon children and join the others.
pub(crate) fn end_of_child() {
    sys::hooks::run_at_child_end();
    runtime::run_exit_hook();
}

/// Runs a `spawn` or `forkserver` child: read the bootstrap from `chan`, run the target,
/// report, exit. Never returns.
pub(crate) fn child_main(chan: OwnedFd) -> ! {
    let code = match read_bootstrap(&chan) {
        Ok((boot, fds)) => run_bootstrap(&chan, boot, fds),
        Err(message) => finish(&chan, Outcome::Bootstrap(message)),
    };
    sys::proc::exit_now(code)
}

fn run_bootstrap(chan: &OwnedFd, boot: Bootstrap, fds: Vec<OwnedFd>) -> i32 {
    info::become_child(boot.info);
    let proof = match sys::entry::verify(boot.exe) {
        Ok(p) => p,
        Err(e) => return finish(chan, Outcome::Bootstrap(e.to_string())),
    };
    let entry: Entry = sys::entry::resolve(&proof, boot.entry);
    let outcome = entry(EntryCall {
        proof,
        target: boot.target,
        args: boot.args,
        fds,
    });
    finish(chan, outcome)
}

fn read_bootstrap(chan: &OwnedFd) -> Result<(Bootstrap, Vec<OwnedFd>), String> {
    let limits = Limits::default();
    let mut buf = Vec::with_capacity(4096);
    let mut fds = Vec::new();
    loop {
        let mut room = 4096;
        match codec::frame_len(&buf, &limits) {
            Ok(Some(total)) if buf.len() >= total => {
                return codec::decode_frame::<Bootstrap>(&buf, &limits)
                    .map(|(b, _)| (b, fds))
                    .map_err(|e| format!("bootstrap: {e}"));
            }
            Ok(Some(total)) => room = total - buf.len(),
            Ok(None) => {}
            Err(e) => return Err(format!("bootstrap: {e}")),
        }
        let mut lost = false;
        let read = sys::fd::recv_into_with_fds_or_lost(
            chan.as_fd(),
            &mut buf,
            room,
            &mut fds,
            false,
            &mut lost,
        );
        if lost {
            // Without them the arguments' handles would decode as nonsense (or not at all).
            return Err(format!(
                "the descriptors of the arguments' handles could not all be received \
                 (no room under this process's open-file limit, RLIMIT_NOFILE, or more \
                 than {} of them)",
                sys::fd::MAX_FDS_PER_READ
            ));
        }
        match read {
            Ok(0) => return Err("the parent closed the bootstrap channel".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("bootstrap read: {e}")),
        }
    }
}
