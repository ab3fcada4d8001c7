//! # multiproc
//!
//! Python's concurrency toolkit — `multiprocessing`, `threading`, `concurrent.futures`,
//! `queue`, `subprocess` — natively in Rust, with a process layer that never hangs,
//! never leaks and never loses a message when a process dies.
//!
//! ```
//! fn square(x: u64) -> u64 { x * x }
//!
//! fn main() {
//!     multiproc::init(); // first thing in main: spawn/forkserver children start here
//!     let mut child = multiproc::Process::start(square, 12).unwrap();
//!     assert_eq!(child.join().unwrap(), 144);
//! }
//! ```
//!
//! A pool whose worker dies fails that task only, and carries on (Python's Pool would
//! hang here, its executor would break):
//!
//! ```
//! # multiproc::init();
//! use multiproc::pool::{TaskError, Pool};
//!
//! fn risky(x: u32) -> u32 {
//!     if x == 13 { std::process::abort() } // a crash in native code, say
//!     x * 2
//! }
//!
//! let pool = Pool::new(2)?;
//! let results: Vec<_> = pool.imap(risky, 10..16)?.collect();
//! assert!(matches!(results[3], Err(TaskError::WorkerDied { .. })));
//! assert_eq!(results[4].as_ref().ok(), Some(&28)); // the others complete
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Python → multiproc
//!
//! Every Python concept has a name a Python user recognises: the table is kept by
//! hand in one place, the "Python → multiproc" section of the repository's
//! `README.md`. The modules' docs each open with their own part of it
//! ([`process`], [`context`], [`connection`], [`queue`], [`shared`], [`sync`], [`manager`], [`pool`],
//! [`executor`], [`subprocess`], [`thread`]).
//!
//! ## Errors: one vocabulary
//!
//! Each concept has its own error enum, and every enum uses the same word for the same
//! condition (as crossbeam's channels do):
//!
//! | condition | variant | for example |
//! |---|---|---|
//! | a wait with a timeout ran out (the operation can be tried again) | `Timeout` | [`GetError::Timeout`], [`WaitError::Timeout`], [`ProcessError::Timeout`], [`sync::LockError::Timeout`], [`connection::RecvError::Timeout`], [`subprocess::SubprocessError::Timeout`] (Python's `TimeoutExpired`), [`PoolError::Timeout`] |
//! | no item now (`try_` calls) | `Empty` | [`GetError::Empty`], [`connection::RecvError::Empty`] |
//! | no room now (`try_` calls) | `Full` | [`PutError::Full`] |
//! | the other side is gone: a peer process, connection or server | `Disconnected` | [`connection::RecvError::Disconnected`], [`ManagerError::Disconnected`], [`GetError::Disconnected`] |
//! | this handle was closed (by `close()`) | `Closed` | [`GetError::Closed`], [`ProcessError::Closed`], [`connection::ListenerError::Closed`] |
//! | the object was shut down (for everyone) | `ShutDown` | [`GetError::ShutDown`], [`queue::local::ShutDown`], [`executor::ShutDown`], [`PoolError::ShutDown`] (after `close`, `terminate`) |
//! | a lock whose holder died | `OwnerDied` | [`sync::LockError::OwnerDied`] |
//! | a value does not encode or decode | `Codec` ([`CodecError`]) | [`GetError::Codec`], [`ProcessError::Codec`], [`ManagerError::Codec`] |
//! | a bad argument | `Invalid` naming the parameter | [`PoolError::Invalid`], [`connection::SendError::Invalid`] (`send_bytes`'s `offset`, `size`) |
//!
//! A task's fate is kept apart from what a wait for it met, as tokio keeps `JoinError`
//! apart from `Elapsed`: [`TaskError`] says the task panicked, its worker died, it ran
//! over its time limit (`TimedOut`, a fate, not a wait), it was cancelled or
//! terminated, its pool broke, or its values did not (de)serialise (carrying the
//! [`CodecError`] when that happened in this process); [`WaitError`] is
//! `Task(TaskError)`, `Timeout` or `Taken` (the value had one owner and was taken).
//! An iterator of results (`imap`, `map`) yields `Result<R, TaskError>`.
//!
//! ## Start methods
//!
//! `forkserver` (the default, as in Python 3.14), `spawn` and `fork`: see
//! [`StartMethod`]. The first two re-execute the current binary, which is why `main`
//! must call [`init`] before it starts a process; test binaries call
//! [`test_support!`] once instead. A re-executed process takes its role before `main`
//! runs, so code before `init()` (a tokio runtime, say) never runs there.
//!
//! ## Scenarios
//!
//! The seed tutorials' programs are scenarios S1–S43; each has an example under
//! `examples/` and a test under `tests/` citing its id.
//! `multiproc/examples/README.md` in the repository lists every id with its example, and how
//! to run one (`cargo run --release --example s01_process_hello`) or all of them
//! (`cargo run --release --example tour`).
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub(crate) mod block;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod codec;
pub mod connection;
pub mod context;
pub mod executor;
pub(crate) mod future;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod handle;
pub mod manager;
pub mod pool;
pub mod process;
pub mod queue;
pub(crate) mod ring;
pub mod shared;
pub mod subprocess;
pub mod sync;
pub mod sys;
pub mod testing;
pub mod thread;

pub use codec::CodecError;
pub use context::{Context, get_context};
pub use future::{TaskError, WaitError};
pub use manager::{Manager, ManagerError};
pub use pool::{Pool, PoolError};
pub use process::{
    ExitStatus, ParentProcess, Process, ProcessBuilder, ProcessError, ProcessInfo, Run, StartError,
    StartMethod, active_children, current_process, get_start_method, init, parent_pid,
    parent_process, set_start_method,
};
pub use queue::{GetError, JoinableQueue, PutError, Queue, SimpleQueue};

/// Makes a test binary (or any binary whose `main` you do not write) able to run
/// `spawn` and `forkserver` children: expands to a constructor that calls [`init`]
/// before `main`. Put it once at the top level of each integration-test file.
///
/// ```ignore
/// multiproc::test_support!();
///
/// #[test]
/// fn child_runs() { /* ... */ }
/// ```
#[macro_export]
macro_rules! test_support {
    () => {
        const _: () = {
            #[allow(unsafe_code)]
            #[used]
            #[unsafe(link_section = ".init_array")]
            static __MULTIPROC_INIT: extern "C" fn() = {
                extern "C" fn __multiproc_init() {
                    $crate::init();
                }
                __multiproc_init
            };
        };
    };
}

// A process multiproc re-executes (a `spawn` child, the forkserver) takes its role
// before `main` runs, so that code before `init()` (threads a runtime started, code that
// fails in a child) never runs in it: see `process::runtime::take_role_before_main`.
// Like `test_support!`, an `unsafe` attribute outside `sys`: the one that puts a
// function pointer in `.init_array`, which the C runtime calls before `main`.
const _: () = {
    #[allow(unsafe_code)]
    #[used]
    #[unsafe(link_section = ".init_array")]
    static TAKE_ROLE_BEFORE_MAIN: extern "C" fn() = {
        extern "C" fn take_role_before_main() {
            process::runtime::take_role_before_main();
        }
        take_role_before_main
    };
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
