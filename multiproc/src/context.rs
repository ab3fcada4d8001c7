//! A context fixed to one start method: Python's `multiprocessing.get_context(method)`.
//!
//! Every builder of multiproc already takes a start method; a [`Context`] hands out
//! builders with its method set, so a library can pick a method for everything it
//! starts without touching the process-wide default ([`crate::set_start_method`]).
//! Its processes, pools, executors and managers use that method; its queues, locks and
//! pipes are the ordinary ones, since they work the same under every method (a memfd
//! or a socket, handed to a child as descriptors whichever way it starts).
//!
//! ```
//! # multiproc::init();
//! use multiproc::{StartMethod, get_context};
//!
//! let ctx = get_context(StartMethod::Spawn);
//! let q = ctx.queue::<u32>().unwrap();
//! let mut p = ctx
//!     .process()
//!     .start(|q: multiproc::Queue<u32>| q.put(7).unwrap(), q.clone())
//!     .unwrap();
//! assert_eq!(p.start_method(), StartMethod::Spawn);
//! assert_eq!(q.get().unwrap(), 7);
//! p.join().unwrap();
//! assert!(ctx.set_start_method(StartMethod::Fork).is_err()); // fixed
//! ```

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::executor::{ProcessPoolBuilder, ProcessPoolExecutor};
use crate::manager::{Manager, ManagerBuilder};
use crate::pool::{Pool, PoolBuilder};
use crate::process::{ProcessBuilder, StartError, StartMethod};
use crate::queue::{JoinableQueue, Queue, SimpleQueue};
use crate::sync::{Condition, Event, Lock, RLock, Semaphore};

/// A start method and the builders that use it (Python's context object, from
/// `get_context(method)`). Cheap to copy; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Context {
    method: StartMethod,
}

/// The context of `method` (Python's `multiprocessing.get_context(method)`).
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

impl Context {
    /// Its start method (Python's `ctx.get_start_method()`).
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Refuses: a context's method is fixed (Python's `ValueError: cannot set start
    /// method of concrete context`). Use [`get_context`] for another method, or
    /// [`crate::set_start_method`] for the process-wide default.
    pub fn set_start_method(&self, method: StartMethod) -> Result<(), StartError> {
        let _ = method;
        Err(StartError::Unsupported(
            "cannot set the start method of a context; get another with get_context",
        ))
    }

    /// A process builder using this method (Python's `ctx.Process`). Naming another
    /// method on it makes its `start` fail with [`StartError::Unsupported`].
    pub fn process(&self) -> ProcessBuilder {
        ProcessBuilder::new().fixed_start_method(self.method)
    }

    /// A pool builder using this method (Python's `ctx.Pool`).
    pub fn pool(&self) -> PoolBuilder {
        Pool::builder().start_method(self.method)
    }

    /// A process-pool executor builder using this method (Python's
    /// `ProcessPoolExecutor(mp_context=ctx)`).
    pub fn process_pool_executor(&self) -> ProcessPoolBuilder {
        ProcessPoolExecutor::builder().start_method(self.method)
    }

    /// A manager builder whose server starts with this method (Python's
    /// `ctx.Manager()`).
    pub fn manager(&self) -> ManagerBuilder {
        Manager::builder().start_method(self.method)
    }

    /// A queue (Python's `ctx.Queue()`): [`Queue::new`].
    pub fn queue<T: Serialize + DeserializeOwned>(&self) -> io::Result<Queue<T>> {
        Queue::new()
    }

    /// A joinable queue (Python's `ctx.JoinableQueue()`): [`JoinableQueue::new`].
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(&self) -> io::Result<JoinableQueue<T>> {
        JoinableQueue::new()
    }

    /// A simple queue (Python's `ctx.SimpleQueue()`): [`SimpleQueue::new`].
    pub fn simple_queue<T: Serialize + DeserializeOwned>(&self) -> io::Result<SimpleQueue<T>> {
        SimpleQueue::new()
    }

    /// A duplex pipe (Python's `ctx.Pipe()`): [`crate::connection::pipe`].
    pub fn pipe<T>(
        &self,
    ) -> io::Result<(
        crate::connection::Connection<T>,
        crate::connection::Connection<T>,
    )> {
        crate::connection::pipe()
    }

    /// A lock (Python's `ctx.Lock()`): [`Lock::new`].
    pub fn lock(&self) -> io::Result<Lock> {
        Lock::new()
    }

    /// A re-entrant lock (Python's `ctx.RLock()`): [`RLock::new`].
    pub fn rlock(&self) -> io::Result<RLock> {
        RLock::new()
    }

    /// A semaphore (Python's `ctx.Semaphore(value)`): [`Semaphore::new`].
    pub fn semaphore(&self, value: u32) -> io::Result<Semaphore> {
        Semaphore::new(value)
    }

    /// An event (Python's `ctx.Event()`): [`Event::new`].
    pub fn event(&self) -> io::Result<Event> {
        Event::new()
    }

    /// A condition (Python's `ctx.Condition()`): [`Condition::new`].
    pub fn condition(&self) -> io::Result<Condition> {
        Condition::new()
    }
}
