//! The child's side: receiving the bootstrap, running the target, reporting the outcome.
//!
//! Protocol on the private stream socket between a parent and one child:
//!
//! 1. (`spawn`, `forkserver` only) parent → child: one [`Bootstrap`] frame.
//! 2. child → parent: one [`Outcome`] frame, written just before the child exits.
//!
//! A child that dies before step 2 leaves no (or a truncated) outcome; the parent then
//! reports the exit status instead.

use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Panicked with this message and, when `RUST_BACKTRACE` asks, its traceback text
    /// (see [`catch_traced`]).
    Panicked(String, Option<String>),
    /// The arguments could not be decoded, or the result encoded.
    Codec(String),
    /// The bootstrap failed before the target ran.
    Bootstrap(String),
}

impl Outcome {
    fn exit_code(&self) -> i32 {
        match self {
            Outcome::Returned(_) => 0,
            Outcome::Panicked(..) | Outcome::Codec(_) => EXIT_PANIC,
            Outcome::Bootstrap(_) => EXIT_BOOTSTRAP,
        }
    }
}

/// Exit code of a child whose target returned a `Result::Err` (the `ExitCode::FAILURE`
/// of a Rust `main` returning `Err`; Python: an uncaught exception gives 1).
const EXIT_RETURNED_ERR: i32 = 1;

/// How a child ends: the report for its parent and its exit code.
pub(crate) struct Ending {
    pub(crate) outcome: Outcome,
    pub(crate) code: i32,
}

impl From<Outcome> for Ending {
    fn from(outcome: Outcome) -> Ending {
        Ending {
            code: outcome.exit_code(),
            outcome,
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
pub(crate) type Entry = fn(EntryCall) -> Ending;

/// Entry for a `fn(A) -> R` target.
pub(crate) fn entry_fn<A: DeserializeOwned, R: Serialize>(call: EntryCall) -> Ending {
    let f: fn(A) -> R = sys::entry::resolve(&call.proof, call.target);
    let args: A = match crate::handle::provide_fds(call.fds, || codec::decode(&call.args)) {
        Ok(a) => a,
        Err(e) => return Outcome::Codec(format!("arguments: {e}")).into(),
    };
    run_caught(move || f(args))
}

/// Entry for a [`Run`](crate::Run) target.
pub(crate) fn entry_run<T: crate::process::Run + DeserializeOwned>(call: EntryCall) -> Ending
where
    T::Output: Serialize,
{
    let obj: T = match crate::handle::provide_fds(call.fds, || codec::decode(&call.args)) {
        Ok(a) => a,
        Err(e) => return Outcome::Codec(format!("arguments: {e}")).into(),
    };
    run_caught(move || obj.run())
}

/// Runs a process's target `f`, catching a panic, and encodes its result.
///
/// A target that returns a `Result::Err(e)` ends as a Rust `main` returning `Err`
/// does (`std::process::Termination`): `Error: {e:?}` on the child's stderr and exit
/// code 1, while the parent's `join` still gets the value, `Ok(Err(e))`. Python's
/// anchor: a target that raises prints its traceback and exits with 1. `R` is any
/// serialisable type (no specialisation tells a `Result` apart), so the value is asked
/// instead: see [`codec::returned_err`], which renders `e` through serde as its derived
/// `Debug` would.
pub(crate) fn run_caught<R: Serialize>(f: impl FnOnce() -> R) -> Ending {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => match codec::encode(&value) {
            Ok(bytes) => {
                let code = match codec::returned_err(&value) {
                    Some(error) => {
                        write_stderr(&format!("Error: {error}\n"));
                        EXIT_RETURNED_ERR
                    }
                    None => 0,
                };
                Ending {
                    outcome: Outcome::Returned(bytes),
                    code,
                }
            }
            Err(e) => Outcome::Codec(format!("result: {e}")).into(),
        },
        Err(payload) => Outcome::Panicked(panic_message(payload.as_ref()), None).into(),
    }
}

/// Runs a pool task `f`, catching a panic, and encodes its result: an `Err` it returns
/// is the task's value and nothing more (the worker goes on, as Python's pool does).
pub(crate) fn run_task<R: Serialize>(f: impl FnOnce() -> R) -> Outcome {
    match catch_traced(f) {
        Ok(value) => match codec::encode(&value) {
            Ok(bytes) => Outcome::Returned(bytes),
            Err(e) => Outcome::Codec(format!("result: {e}")),
        },
        Err(Caught { message, traceback }) => Outcome::Panicked(message, traceback),
    }
}

use crate::codec::panic_message;

/// A panic caught by [`catch_traced`]: its message and, when `RUST_BACKTRACE` asks for
/// one, its traceback text.
#[derive(Debug)]
pub(crate) struct Caught {
    pub(crate) message: String,
    pub(crate) traceback: Option<String>,
}

thread_local! {
    /// Whether this thread runs inside [`catch_traced`]: only then does the hook record.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic of this thread inside [`catch_traced`] happened, and its
    /// backtrace, as the hook recorded them.
    static RECORDED: RefCell<Option<(String, Option<Backtrace>)>> = const { RefCell::new(None) };
}

/// Runs `f`, catching a panic as its message and a traceback captured where it
/// happened (Python's `remote_traceback`): the kind, the message, the panic's
/// `file:line:col`, this process and thread, and the backtrace of the panicking thread
/// taken by the panic hook, while the panicking frames are still on the stack.
///
/// `RUST_BACKTRACE` rules as std's `Backtrace::capture` (`RUST_LIB_BACKTRACE` first;
/// unset or `0`: no backtrace, the traceback is `None`; `full`: every frame; any other
/// value: the frames between std's short-backtrace markers), read at each panic rather
/// than once per process as std caches it, so a program may change its mind. A success
/// costs a check that the hook is installed and two thread-local writes: nothing is
/// captured unless a panic happens.
///
/// The hook that records is installed once per process and chains the hook it found
/// (user hooks and std's message still run); a hook set later with `set_hook` that
/// does not chain replaces it, and the traceback is then `None`.
pub(crate) fn catch_traced<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    install_capture_hook();
    let outer = CAPTURING.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(outer));
    result.map_err(|payload| {
        let message = panic_message(payload.as_ref());
        let traceback = RECORDED
            .with(|r| r.borrow_mut().take())
            .map(|(location, backtrace)| traceback_text(&message, &location, &backtrace));
        Caught { message, traceback }
    })
}

/// Whether std's `Backtrace::capture` would capture, by its rules, now.
fn backtrace_wanted() -> bool {
    let value = match std::env::var_os("RUST_LIB_BACKTRACE") {
        Some(v) => v,
        None => match std::env::var_os("RUST_BACKTRACE") {
            Some(v) => v,
            None => return false,
        },
    };
    value != "0"
}

/// The traceback of a caught panic: a header as
/// [`RemoteError`](crate::future::RemoteError)'s (`Panic: message`, where, which
/// process and thread) and the backtrace.
fn traceback_text(message: &str, location: &str, backtrace: &Option<Backtrace>) -> String {
    let thread = std::thread::current();
    let full = matches!(
        std::env::var("RUST_LIB_BACKTRACE").or_else(|_| std::env::var("RUST_BACKTRACE")),
        Ok(v) if v == "full"
    );
    let Some(backtrace) = backtrace else {
        return format!(
            "Panic: {message}\n  panicked at {location} in process {}, thread '{}'\n{}",
            std::process::id(),
            thread.name().unwrap_or("<unnamed>"),
            crate::sys::proc::NO_BACKTRACE_IN_FORK_CHILD,
        );
    };
    let frames = if full {
        format!("{backtrace:#}")
    } else {
        short_backtrace(&backtrace.to_string())
    };
    format!(
        "Panic: {message}\n  panicked at {location} in process {}, thread '{}'\n\
         stack backtrace:\n{frames}",
        std::process::id(),
        thread.name().unwrap_or("<unnamed>"),
    )
}

/// Installs, once per process, the panic hook that records a backtrace for
/// [`catch_traced`], chaining the hook it finds. Called from `init` (so that forked
/// children inherit it and never take the hook's lock) and on first use.
pub(crate) fn install_capture_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                // Each panic replaces the record, even with nothing: a panic the task
                // caught itself leaves no stale backtrace for a later one.
                let record = backtrace_wanted().then(|| {
                    let location = info
                        .location()
                        .map_or_else(|| "<unknown>".to_string(), ToString::to_string);
                    // Not in a fork child: std's backtrace lock may be held for ever there.
                    let backtrace =
                        crate::sys::proc::backtrace_lock_usable().then(Backtrace::force_capture);
                    (location, backtrace)
                });
                RECORDED.with(|r| *r.borrow_mut() = record);
            }
            previous(info);
        }));
    });
}

/// Writes `text` to descriptor 2 itself: not through `eprint!`, which a test harness's
/// capture (inherited by a forked child from the thread that forked) would swallow, and
/// without the lock of `std::io::Stderr`, which another thread of a forking parent may
/// have held at the fork. Errors are ignored: there is nowhere else to say anything.
pub(crate) fn write_stderr(text: &str) {
    let stderr = std::io::stderr();
    let fd = stderr.as_fd();
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        match rustix::io::write(fd, rest) {
            Ok(0) => return,
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// Whether this process is a multiproc child (its panics go straight to descriptor 2).
static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// Marks this process as a multiproc child: from now on a panic's message goes
/// straight to its descriptor 2 (see [`install_panic_hook`]).
pub(crate) fn mark_child() {
    IN_CHILD.store(true, Ordering::Relaxed);
}

/// Installs, once per process (from `init`, when the hook is still std's default), a
/// panic hook that in the parent is std's default hook and in a multiproc child writes
/// std's message straight to descriptor 2.
///
/// Why: a test harness captures output per thread (std's internal `OUTPUT_CAPTURE`),
/// a thread inherits the capture of the thread that spawned it, and a forked child
/// inherits the capture of the thread that forked. The default hook writes into that
/// buffer, which nobody shows: a forked child's panic vanished. Installed in the
/// parent, the hook is inherited by every fork, so the child need not touch the hook's
/// lock, which another thread may have held at the fork. A program that sets a hook of
/// its own replaces this one, in its children too.
pub(crate) fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_CHILD.load(Ordering::Relaxed) {
            write_stderr(&panic_text(info));
        } else {
            default(info);
        }
    }));
    install_capture_hook();
}

/// What std's default hook prints for `info`: `thread '<name>' (<tid>) panicked at
/// <file>:<line>:<col>:`, the message, then a backtrace or the note about one, as
/// `RUST_BACKTRACE` says.
fn panic_text(info: &std::panic::PanicHookInfo<'_>) -> String {
    use std::fmt::Write as _;
    static FIRST_PANIC: AtomicBool = AtomicBool::new(true);
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("Box<dyn Any>");
    let mut text = format!("\nthread '{name}' ({}) panicked at ", sys::proc::gettid());
    if let Some(location) = info.location() {
        let _ = write!(text, "{location}");
    }
    let _ = writeln!(text, ":\n{message}");
    match std::env::var("RUST_BACKTRACE").as_deref() {
        // std's backtrace lock may be held for ever in a fork child: no backtrace.
        Ok(v) if v != "0" && !sys::proc::backtrace_lock_usable() => {
            text.push_str(sys::proc::NO_BACKTRACE_IN_FORK_CHILD);
        }
        Ok("0") | Err(_) => {
            if FIRST_PANIC.swap(false, Ordering::Relaxed) {
                text.push_str(
                    "note: run with `RUST_BACKTRACE=1` environment variable to display a \
                     backtrace\n",
                );
            }
        }
        Ok("full") => {
            let _ = write!(
                text,
                "stack backtrace:\n{:#}",
                std::backtrace::Backtrace::force_capture()
            );
        }
        Ok(_) => {
            let frames = std::backtrace::Backtrace::force_capture().to_string();
            let _ = write!(
                text,
                "stack backtrace:\n{}note: Some details are omitted, run with \
                 `RUST_BACKTRACE=full` for a verbose backtrace.\n",
                short_backtrace(&frames)
            );
        }
    }
    text
}

/// The frames of a backtrace between std's markers, renumbered from 0, as std's short
/// backtrace shows them: not the panic machinery (up to
/// `__rust_end_short_backtrace`), not the thread's start (from
/// `__rust_begin_short_backtrace`).
fn short_backtrace(full: &str) -> String {
    use std::fmt::Write as _;
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in full.lines() {
        let numbered = line
            .trim_start()
            .split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match frames.last_mut() {
            Some(frame) if !numbered => frame.push(line),
            _ => frames.push(vec![line]),
        }
    }
    let named = |marker: &str| frames.iter().position(|f| f[0].contains(marker));
    let start = named("__rust_end_short_backtrace").map_or(0, |i| i + 1);
    let end = named("__rust_begin_short_backtrace").unwrap_or(frames.len());
    let mut out = String::new();
    for (number, frame) in frames[start..end.max(start)].iter().enumerate() {
        let name = frame[0]
            .trim_start()
            .split_once(": ")
            .map_or("", |(_, n)| n);
        let _ = writeln!(out, "{number:>4}: {name}");
        for at in &frame[1..] {
            let _ = writeln!(out, "{at}");
        }
    }
    out
}

/// Reports `outcome` on `chan`, waits for this child's own non-daemon children, flushes
/// stdio and ends the process.
pub(crate) fn finish(chan: &OwnedFd, ending: Ending) -> i32 {
    report(chan, ending, false)
}

/// [`finish`] for a child made by `fork`: another thread of the parent may have held
/// the lock of stdout or stderr at the moment of the fork; in the child that thread does
/// not exist and the lock is never released. The flush is then given a second, after
/// which an alarm ends the child with its exit code (its report is already sent; at
/// most an unfinished line is lost) instead of letting it hang.
pub(crate) fn finish_forked(chan: &OwnedFd, ending: Ending) -> i32 {
    report(chan, ending, true)
}

fn report(chan: &OwnedFd, Ending { outcome, code }: Ending, forked: bool) -> i32 {
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
    mark_child();
    let code = match read_bootstrap(&chan) {
        Ok((boot, fds)) => run_bootstrap(&chan, boot, fds),
        Err(message) => finish(&chan, Outcome::Bootstrap(message).into()),
    };
    sys::proc::exit_now(code)
}

fn run_bootstrap(chan: &OwnedFd, boot: Bootstrap, fds: Vec<OwnedFd>) -> i32 {
    info::become_child(boot.info);
    let proof = match sys::entry::verify(boot.exe) {
        Ok(p) => p,
        Err(e) => return finish(chan, Outcome::Bootstrap(e.to_string()).into()),
    };
    let entry: Entry = sys::entry::resolve(&proof, boot.entry);
    let ending = entry(EntryCall {
        proof,
        target: boot.target,
        args: boot.args,
        fds,
    });
    finish(chan, ending)
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
