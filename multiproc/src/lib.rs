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
//! use multiproc::pool::{FutureError, Pool};
//!
//! fn risky(x: u32) -> u32 {
//!     if x == 13 { std::process::abort() } // a crash in native code, say
//!     x * 2
//! }
//!
//! let pool = Pool::new(2)?;
//! let results: Vec<_> = pool.imap(risky, 10..16)?.collect();
//! assert!(matches!(results[3], Err(FutureError::WorkerDied { .. })));
//! assert_eq!(results[4].as_ref().ok(), Some(&28)); // the others complete
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Python → multiproc
//!
//! | Python | multiproc |
//! |---|---|
//! | `Process(target=f, args=(a,)).start()` | [`Process::start(f, a)`](Process::start) |
//! | `Process(name=…, daemon=True)` | [`Process::builder()`](Process::builder)`.name(…).daemon(true)` |
//! | subclass with `run()` | `impl` [`Run`], [`Process::start_run`] |
//! | `p.join()`, `p.join(timeout)` | [`Process::join`] (returns the result), [`Process::wait_timeout`] |
//! | `p.exitcode` | [`Process::exit_status`] → [`ExitStatus::exitcode`] |
//! | `p.is_alive()`, `p.terminate()`, `p.kill()`, `p.pid`, `p.name` | same names |
//! | `set_start_method('spawn')`, `get_context('fork')` | [`set_start_method`], [`ProcessBuilder::start_method`] |
//! | `current_process()`, `os.getpid()`, `os.getppid()` | [`current_process`], [`parent_pid`] |
//! | `active_children()` | [`active_children`] |
//! | `os.fork()` | `unsafe` [`sys::fork`] |
//! | `os._exit(n)` | [`process::exit_now`] |
//! | `Pipe()`, `Pipe(duplex=False)`, `conn.send/recv/poll` | [`connection::pipe`], [`connection::pipe_simplex`], [`connection::Connection`] |
//! | `multiprocessing.Queue(maxsize)`, `put`, `get(timeout=…)`, `get_nowait`, `qsize` | [`Queue`] ([`queue::mp::GetError`], [`queue::mp::PutError`], [`queue::mp::QueueBuilder`]) |
//! | `multiprocessing.SimpleQueue`, `JoinableQueue` (`task_done`, `join`) | [`SimpleQueue`], [`JoinableQueue`] |
//! | `Value('i', 0)`, `Array('i', range(10))`, `get_lock()`, `.value` | [`shared::Value`], [`shared::Array`] (`lock()`, `get()`, `set()`) |
//! | `shared_memory.SharedMemory(create=True, size=n)` | [`shared::SharedMemory`] |
//! | `multiprocessing.Lock`, `RLock`, `acquire(timeout=…)` | [`sync::Lock`], [`sync::RLock`] ([`sync::LockError::OwnerDied`] when a holder died) |
//! | `Semaphore`, `BoundedSemaphore`, `Event`, `Condition`, `Barrier` | [`sync::Semaphore`], [`sync::Event`], [`sync::Condition`], [`sync::Barrier`] |
//! | `Manager()`, `with Manager() as m:`, `m.shutdown()` | [`manager::Manager::start`], `Drop`, [`manager::Manager::shutdown`] |
//! | `m.list(xs)`, `m.dict()`, `m.Value(t, x)`, `m.Namespace()`, `m.Queue()`, `m.Lock()`, `m.Event()` | [`manager::ListProxy`], [`manager::DictProxy`], [`manager::ValueProxy`], [`manager::NamespaceProxy`], [`manager::QueueProxy`], [`manager::LockProxy`], [`manager::EventProxy`] |
//! | `BaseManager.register('T', T)`, `m.T(...)` | `impl` [`manager::Shared`], [`manager::Manager::create`] → [`manager::SharedProxy`] |
//! | `BaseManager(address=(host, port), authkey=k)`: `start()`, `connect()` | [`manager::Manager::serve`], [`manager::Manager::connect`] ([`manager::AuthenticationError`]) |
//! | `concurrent.futures.ThreadPoolExecutor`, `Future`, `as_completed`, `wait` | [`executor::ThreadPoolExecutor`], [`executor::Future`], [`executor::as_completed`], [`executor::wait`] |
//! | `concurrent.futures.ProcessPoolExecutor`, `Executor` | [`executor::ProcessPoolExecutor`], [`executor::Executor`] |
//! | `multiprocessing.Pool`, `apply_async`, `AsyncResult.get(timeout)`, `map`, `imap_unordered`, `starmap`, `close`, `join`, `terminate` | [`pool::Pool`], [`pool::AsyncResult`] (see the [`pool`] module's table) |
//! | `BrokenProcessPool` / a Pool hung by a dead worker | [`executor::FutureError::WorkerDied`] for that task only |
//! | `queue.Queue(maxsize)`, `get_nowait`, `task_done`, `join`, `shutdown` | [`queue::Queue`] ([`queue::GetError`], [`queue::PutError`]) |
//! | `subprocess.call(args)`, `check_call`, `check_output` | [`subprocess::call`] → [`ExitStatus`], [`subprocess::check_call`], [`subprocess::check_output`] |
//! | `subprocess.run(args, input=…, capture_output=True, check=True, timeout=…)` | [`subprocess::run`]`(args).input(…).capture().check().timeout(…).output()` → [`subprocess::Completed`] |
//! | `Popen(args, stdin=PIPE, stdout=PIPE, stderr=PIPE)`, `cwd=`, `env=`, `shell=True` | [`subprocess::Popen::builder`]`(args).stdin(PIPE)….cwd(…).env(…).shell(true).spawn()` |
//! | `p.communicate(input)`, `communicate(input, timeout)` | [`subprocess::Popen::communicate`], [`subprocess::Popen::communicate_timeout`] (never deadlocks, whatever the sizes) |
//! | `p.wait()`, `wait(timeout)`, `poll()`, `returncode`, `terminate()`, `kill()` | [`subprocess::Popen`]: same names, `wait_timeout`; [`subprocess::Popen::kill_group`] for the process group |
//! | `PIPE`, `DEVNULL`, `STDOUT`, a file, `None` | [`subprocess::PIPE`], [`subprocess::DEVNULL`], [`subprocess::STDOUT`], [`subprocess::Stdio`] |
//! | `CalledProcessError`, `TimeoutExpired` | [`subprocess::SubprocessError::Called`], [`subprocess::SubprocessError::TimeoutExpired`] (a timeout of `run` kills the child's process group and reaps the child) |
//! | `threading.Thread(target=f, name=…)` | [`thread::Thread`] |
//! | `threading.current_thread().name`, `get_ident()` | [`thread::current_thread`], [`thread::get_ident`] |
//! | `threading.Lock`, `RLock` | [`thread::Lock`], [`thread::RLock`] |
//! | `threading.local()` | [`thread::Local`] (or `std::thread_local!`) |
//!
//! ## Start methods
//!
//! `forkserver` (the default, as in Python 3.14), `spawn` and `fork`: see
//! [`StartMethod`]. The first two re-execute the current binary, which is why `main`
//! must call [`init`] first; test binaries call [`test_support!`] once instead.
//!
//! ## Scenarios
//!
//! The seed tutorials' programs are scenarios S1–S43; each has an example under
//! `examples/` and a test under `tests/` citing its id.
//! [`examples/README.md`](../examples/README.md) lists every id with its example, and how
//! to run one (`cargo run --release --example s01_process_hello`) or all of them
//! (`cargo run --release --example tour`).
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod codec;
pub mod connection;
pub mod executor;
pub(crate) mod handle;
pub mod manager;
pub mod pool;
pub mod process;
pub mod queue;
pub mod shared;
pub mod subprocess;
pub mod sync;
pub mod sys;
pub mod testing;
pub mod thread;

pub use codec::CodecError;
pub use manager::Manager;
pub use pool::Pool;
pub use process::{
    ExitStatus, Process, ProcessBuilder, ProcessError, ProcessInfo, Run, StartError, StartMethod,
    active_children, current_process, get_start_method, init, parent_pid, set_start_method,
};
pub use queue::mp::{JoinableQueue, Queue, SimpleQueue};

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

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
