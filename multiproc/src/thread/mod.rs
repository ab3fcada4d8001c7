//! Threads: Python's `threading` where std lacks it (S7 S13 S14 S15 S16 S20).
//!
//! Rust threads are native already; this module adds only what Python users expect and
//! std does not give: Python's thread names (`MainThread`, `Thread-N`) and idents, a
//! join that returns the value or a typed [`ThreadPanic`], a [`Lock`] that *reports* a
//! re-acquire by its holder instead of hanging, and a [`Local`] whose values are never
//! seen by another thread.
//!
//! ```
//! use multiproc::thread::{Lock, Thread, current_thread};
//! use std::sync::Arc;
//!
//! let balance = Arc::new(Lock::new(0_i64));
//! let shared = Arc::clone(&balance);
//! let worker = Thread::builder()
//!     .name("LoopThread")
//!     .start(move || {
//!         *shared.lock().unwrap() += 5;
//!         current_thread().name().to_owned()
//!     })
//!     .unwrap();
//! assert_eq!(worker.join().unwrap(), "LoopThread");
//! assert_eq!(*balance.lock().unwrap(), 5);
//! ```
//!
//! | Python `threading` | `multiproc::thread` |
//! |---|---|
//! | `Thread(target=f, name=…, daemon=…).start()` | [`Thread::builder()`](Thread::builder)`.name(…).start(f)`, [`Thread::start`] |
//! | subclass overriding `run()` (S20) | `impl` [`Run`](crate::Run), [`Thread::start_run`] |
//! | `t.join()`, `t.join(timeout)`, `t.is_alive()` | [`Thread::join`] (returns the value), [`Thread::wait_timeout`], [`Thread::is_alive`] |
//! | `current_thread().name`, `.ident`, `.native_id` (S13) | [`current_thread`] → [`ThreadInfo`] |
//! | `get_ident()`, `get_native_id()` (S7) | [`get_ident`], [`get_native_id`] |
//! | `current_thread() is main_thread()` | [`is_main_thread`], [`ThreadInfo::is_main`] |
//! | `Lock()`, `with lock:` (S14) | [`Lock`], [`Lock::lock`] → [`LockGuard`] |
//! | `lock.acquire(False)`, `lock.acquire(timeout=t)`, `lock.locked()` | [`Lock::try_lock`], [`Lock::lock_timeout`], [`Lock::is_locked`] |
//! | `RLock()` (S16) | [`RLock`] |
//! | `local()` (S15) | [`Local`], or std's `thread_local!` for a static |
//!
//! # Differences from Python
//!
//! * **A lock owns its data.** `Lock<T>` and `RLock<T>` wrap the value they protect
//!   (`Lock<()>` is Python's bare lock), so it cannot be touched without the guard; the
//!   guard releases on drop, like `with lock:`.
//! * **A `Lock` is released by the thread that took it** (its guard cannot leave the
//!   thread). This is what lets [`Lock::lock`] detect its holder re-acquiring it (S16):
//!   Python hangs forever there; here it is [`WouldDeadlock`].
//! * **Every thread is a daemon.** A Rust process ends when `main` returns, whatever
//!   its other threads are doing; [`ThreadBuilder::daemon`] is recorded but changes
//!   nothing. Join the threads whose work must finish.
//! * **A panic stays in its thread** (S17): [`Thread::join`] returns [`ThreadPanic`] with
//!   the message, and the process goes on.
//! * **Idents are never reused** within a process (Python's may be after a thread ends).

mod current;
mod local;
mod lock;
mod spawn;

pub use current::{ThreadInfo, current_thread, get_ident, get_native_id, is_main_thread};
pub use local::Local;
pub use lock::{AcquireError, Lock, LockGuard, RLock, RLockGuard, WouldDeadlock};
pub use spawn::{Thread, ThreadBuilder, ThreadPanic};
