//! Proxies of the manager's synchronisation objects beyond `Lock` and `Event`:
//! `RLock`, `Semaphore`/`BoundedSemaphore`, `Condition` and `Barrier` (Python's
//! `SyncManager` types of the same names, `threading` objects living in the server).
//!
//! A blocking call waits in the server in slices of at most 100 ms, asking again after
//! each (as the lock's and the queue's do), so it ends promptly with
//! [`ManagerError::Disconnected`] if the server dies.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::thread_token;
use super::protocol::{MAX_WAIT_MS, Op, Reply};
use super::proxy::{ObjectRef, proxy_impls, unexpected};
use super::{Address, ManagerError};

/// The wait of one request: what is left of `deadline`, at most [`MAX_WAIT_MS`].
fn slice(deadline: Option<Instant>) -> u32 {
    match deadline {
        None => MAX_WAIT_MS,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000).min(u128::from(MAX_WAIT_MS)) as u32
        }
    }
}

fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Acquires a reentrant lock (an `RLock`'s or a `Condition`'s) for the calling thread:
/// `Ok(None)` if the deadline passed, `Ok(Some(owner_died))` if acquired.
fn acquire_rlock(obj: &ObjectRef, deadline: Option<Instant>) -> Result<Option<bool>, ManagerError> {
    let thread = thread_token();
    match obj.call_waiting(deadline, |wait_ms| Op::RLockAcquire { wait_ms, thread })? {
        None => Ok(None),
        Some(Reply::Bool(true)) => Ok(Some(false)),
        Some(Reply::OwnerDied) => Ok(Some(true)),
        Some(r) => Err(unexpected(r)),
    }
}

fn release_rlock(obj: &ObjectRef) -> Result<(), ManagerError> {
    obj.call(Op::RLockRelease {
        thread: thread_token(),
    })?
    .unit()
}

/// Holds a manager [`RLockProxy`]'s or [`ConditionProxy`]'s lock once; released when
/// dropped, by the thread that acquired it (so it is not `Send`).
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct RLockGuard<'a> {
    obj: &'a ObjectRef,
    owner_died: bool,
    _not_send: PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// Whether the lock's previous holder died holding it (its session ended): what
    /// it protects may be half-updated (the `OwnerDied` of the other locks, as a
    /// value of the guard).
    pub fn previous_owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // A dead server released it anyway.
        let _ = release_rlock(self.obj);
    }
}

fn guard_of(obj: &ObjectRef, acquired: Option<bool>) -> Option<RLockGuard<'_>> {
    acquired.map(|owner_died| RLockGuard {
        obj,
        owner_died,
        _not_send: PhantomData,
    })
}

macro_rules! rlock_methods {
    ($what:literal) => {
        #[doc = concat!("Waits for the ", $what, "'s lock (`with lock:`); the thread that holds it")]
        /// may take it again. The guard tells whether the previous holder died holding
        /// it.
        pub fn lock(&self) -> Result<RLockGuard<'_>, ManagerError> {
            let acquired = acquire_rlock(&self.obj, None)?;
            guard_of(&self.obj, acquired).ok_or(ManagerError::Protocol(
                "an endless wait for a lock ended without it".into(),
            ))
        }

        /// Waits at most `timeout` for the lock ([`ManagerError::Timeout`]).
        pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>, ManagerError> {
            let acquired = acquire_rlock(&self.obj, deadline_of(Some(timeout)))?;
            guard_of(&self.obj, acquired).ok_or(ManagerError::Timeout)
        }

        /// The lock if it is free now, or already the calling thread's
        /// (`acquire(False)`).
        pub fn try_lock(&self) -> Result<Option<RLockGuard<'_>>, ManagerError> {
            let acquired = acquire_rlock(&self.obj, Some(Instant::now()))?;
            Ok(guard_of(&self.obj, acquired))
        }

        /// Python's `acquire(timeout=…)` without a guard (`None`: wait for ever); pair
        /// it with [`release`](Self::release) on the same thread.
        /// [`ManagerError::OwnerDied`] if the previous holder died holding it: the
        /// caller holds it now.
        pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool, ManagerError> {
            match acquire_rlock(&self.obj, deadline_of(timeout))? {
                None => Ok(false),
                Some(false) => Ok(true),
                Some(true) => Err(ManagerError::OwnerDied),
            }
        }

        /// Releases the lock once (`release()`); [`ManagerError::NotOwner`] if the
        /// calling thread does not hold it.
        pub fn release(&self) -> Result<(), ManagerError> {
            release_rlock(&self.obj)
        }
    };
}

// ---- rlock -------------------------------------------------------------------------

/// A reentrant lock in the manager's server (Python's `manager.RLock()`): the thread
/// holding it may take it again, and must release it as often.
///
/// Its owner is a thread of a client process, as in Python (where it is the server
/// thread serving that client's connection): another thread of the same process
/// waits. If the process dies holding it (its last connection ends), the server
/// releases it and the next acquirer's guard says so
/// ([`RLockGuard::previous_owner_died`]).
///
/// ```
/// # multiproc::init();
/// let m = multiproc::manager::Manager::start().unwrap();
/// let r = m.rlock().unwrap();
/// let outer = r.lock().unwrap();
/// let inner = r.lock().unwrap(); // the same thread: no deadlock
/// let other = std::thread::scope(|s| s.spawn(|| r.try_lock().unwrap().is_some()).join().unwrap());
/// assert!(!other); // another thread cannot take it
/// drop(inner);
/// drop(outer);
/// assert!(matches!(r.release(), Err(multiproc::manager::ManagerError::NotOwner)));
/// ```
pub struct RLockProxy {
    obj: ObjectRef,
    _types: PhantomData<()>,
}

proxy_impls!(RLockProxy, "rlock");

impl RLockProxy {
    rlock_methods!("rlock");
}

// ---- semaphore ---------------------------------------------------------------------

/// A semaphore in the manager's server (Python's `manager.Semaphore(n)` and
/// `manager.BoundedSemaphore(n)`).
///
/// A semaphore has no owner: a permit a process took and did not give back (it died)
/// stays taken, as in Python.
///
/// ```
/// # multiproc::init();
/// use multiproc::manager::{Manager, ManagerError};
/// let m = Manager::start().unwrap();
/// let s = m.bounded_semaphore(2).unwrap();
/// {
///     let _a = s.permit().unwrap();
///     let _b = s.permit().unwrap();
///     assert!(!s.try_acquire().unwrap()); // both taken
/// } // given back
/// assert_eq!(s.value().unwrap(), 2);
/// assert!(matches!(s.release(), Err(ManagerError::TooManyReleases)));
/// ```
pub struct SemaphoreProxy {
    obj: ObjectRef,
    _types: PhantomData<()>,
}

proxy_impls!(SemaphoreProxy, "semaphore");

/// A permit of a [`SemaphoreProxy`], given back when dropped (`with sem:`).
#[must_use = "the permit is given back when the guard is dropped"]
#[derive(Debug)]
pub struct SemaphoreGuard<'a> {
    sem: &'a SemaphoreProxy,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        let _ = self.sem.release();
    }
}

impl SemaphoreProxy {
    fn acquire_until(&self, deadline: Option<Instant>) -> Result<bool, ManagerError> {
        match self
            .obj
            .call_waiting(deadline, |wait_ms| Op::SemAcquire { wait_ms })?
        {
            None => Ok(false),
            Some(r) => r.flag(),
        }
    }

    /// Takes a permit, waiting at most `timeout` (`None`: for ever); whether it did
    /// (`acquire(timeout=…)`).
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool, ManagerError> {
        self.acquire_until(deadline_of(timeout))
    }

    /// Takes a permit if one is free now (`acquire(False)`).
    pub fn try_acquire(&self) -> Result<bool, ManagerError> {
        self.acquire_until(Some(Instant::now()))
    }

    /// Takes a permit, waiting for one, given back when the guard drops (`with sem:`).
    pub fn permit(&self) -> Result<SemaphoreGuard<'_>, ManagerError> {
        self.acquire_until(None)?;
        Ok(SemaphoreGuard { sem: self })
    }

    /// Gives a permit back (`release()`); a bounded semaphore refuses one over its
    /// initial value ([`ManagerError::TooManyReleases`]).
    pub fn release(&self) -> Result<(), ManagerError> {
        self.obj.call(Op::SemRelease)?.unit()
    }

    /// The permits free now (`sem._value`).
    pub fn value(&self) -> Result<u32, ManagerError> {
        Ok(self.obj.call(Op::SemValue)?.count()? as u32)
    }
}

// ---- condition ---------------------------------------------------------------------

/// A condition variable in the manager's server (Python's `manager.Condition()`), over
/// a reentrant lock of its own: take it with [`lock`](Self::lock), then
/// [`wait`](Self::wait), [`notify`](Self::notify) and
/// [`notify_all`](Self::notify_all) while holding it (otherwise
/// [`ManagerError::NotOwner`], Python's `RuntimeError`).
///
/// A waiter whose process dies is forgotten (a `notify` is not spent on it), and a
/// lock it held is released.
///
/// ```
/// # multiproc::init();
/// use multiproc::manager::{ConditionProxy, Manager, ValueProxy};
/// use multiproc::Process;
///
/// fn producer((c, ready): (ConditionProxy, ValueProxy<bool>)) {
///     let _g = c.lock().unwrap();
///     ready.set(true).unwrap();
///     c.notify_all().unwrap();
/// }
///
/// let m = Manager::start().unwrap();
/// let c = m.condition().unwrap();
/// let ready = m.value(false).unwrap();
/// let g = c.lock().unwrap();
/// let mut p = Process::start(producer, (c.clone(), ready.clone())).unwrap();
/// assert!(c.wait_for(|| ready.get().unwrap(), None).unwrap());
/// drop(g);
/// p.join().unwrap();
/// ```
pub struct ConditionProxy {
    obj: ObjectRef,
    _types: PhantomData<()>,
}

proxy_impls!(ConditionProxy, "condition");

impl ConditionProxy {
    rlock_methods!("condition");

    /// Releases the lock (however many times this thread holds it), waits until
    /// notified or `timeout` passes (`None`: for ever), then takes the lock back as
    /// it was held; whether it was notified (`wait(timeout)`). The lock is taken back
    /// whatever happened, as in Python.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, ManagerError> {
        let thread = thread_token();
        let ticket = self.obj.call(Op::CondWaitBegin { thread })?.count()? as u64;
        let deadline = deadline_of(timeout);
        loop {
            let give_up = deadline.is_some_and(|d| Instant::now() >= d);
            let wait_ms = if give_up {
                MAX_WAIT_MS
            } else {
                slice(deadline)
            };
            match self.obj.call(Op::CondWaitPoll {
                ticket,
                wait_ms,
                give_up,
            })? {
                Reply::Timeout => {}
                Reply::Bool(notified) => return Ok(notified),
                r => return Err(unexpected(r)),
            }
        }
    }

    /// Waits until `predicate()` is true, checking it first and after each wake-up,
    /// at most `timeout` in all; the predicate's last value (`wait_for(predicate,
    /// timeout)`).
    pub fn wait_for(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool, ManagerError> {
        let deadline = deadline_of(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            let left = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    Some(left)
                }
            };
            self.wait(left)?;
        }
    }

    /// Wakes at most `n` waiters (`notify(n)`); how many it woke.
    pub fn notify(&self, n: usize) -> Result<usize, ManagerError> {
        self.obj
            .call(Op::CondNotify {
                thread: thread_token(),
                n: n as u64,
            })?
            .count()
    }

    /// Wakes every waiter (`notify_all()`); how many it woke.
    pub fn notify_all(&self) -> Result<usize, ManagerError> {
        self.notify(usize::MAX)
    }
}

// ---- barrier -----------------------------------------------------------------------

/// A barrier in the manager's server (Python's `manager.Barrier(parties)`): `wait`
/// returns when `parties` callers have called it, each with its arrival index.
///
/// It breaks ([`ManagerError::BrokenBarrier`] for every waiter, and for later calls
/// until [`reset`](Self::reset)) when [`abort`](Self::abort) is called, when a
/// `wait_timeout` runs out (as in Python), and when a waiting party's process dies
/// (Python's barrier would pass with the dead party counted, or hang). The server
/// notices a death when the party's current wait slice ends (100 ms at most): the last
/// parties arriving within that window still pass with the dead one counted.
///
/// ```
/// # multiproc::init();
/// use multiproc::manager::{BarrierProxy, Manager};
/// use multiproc::Process;
///
/// fn party(b: BarrierProxy) -> u32 {
///     b.wait().unwrap()
/// }
///
/// let m = Manager::start().unwrap();
/// let b = m.barrier(2).unwrap();
/// let mut p = Process::start(party, b.clone()).unwrap();
/// let mine = b.wait().unwrap();
/// let theirs = p.join().unwrap();
/// assert_eq!(mine + theirs, 1); // indices 0 and 1
/// ```
pub struct BarrierProxy {
    obj: ObjectRef,
    _types: PhantomData<()>,
}

proxy_impls!(BarrierProxy, "barrier");

impl BarrierProxy {
    fn wait_until(&self, deadline: Option<Instant>) -> Result<u32, ManagerError> {
        let (index, generation) = match self.obj.call(Op::BarrierArrive)? {
            Reply::Arrived {
                index,
                passed: true,
                ..
            } => return Ok(index as u32),
            Reply::Arrived {
                index, generation, ..
            } => (index, generation),
            r => return Err(unexpected(r)),
        };
        loop {
            let give_up = deadline.is_some_and(|d| Instant::now() >= d);
            match self.obj.call(Op::BarrierPoll {
                generation,
                wait_ms: slice(deadline),
                give_up,
            })? {
                Reply::Timeout => {}
                Reply::Unit => return Ok(index as u32),
                r => return Err(unexpected(r)),
            }
        }
    }

    /// Waits for the other parties; this caller's arrival index, 0 to `parties - 1`
    /// (`wait()`).
    pub fn wait(&self) -> Result<u32, ManagerError> {
        self.wait_until(None)
    }

    /// As [`wait`](Self::wait), at most `timeout`: running out breaks the barrier
    /// ([`ManagerError::BrokenBarrier`] here and for the others), as in Python.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, ManagerError> {
        self.wait_until(deadline_of(Some(timeout)))
    }

    /// Breaks the barrier: every waiter, and every later `wait`, gets
    /// [`ManagerError::BrokenBarrier`] until [`reset`](Self::reset) (`abort()`).
    pub fn abort(&self) -> Result<(), ManagerError> {
        self.obj.call(Op::BarrierAbort)?.unit()
    }

    /// Makes the barrier usable again; the parties waiting now get
    /// [`ManagerError::BrokenBarrier`] (`reset()`).
    pub fn reset(&self) -> Result<(), ManagerError> {
        self.obj.call(Op::BarrierReset)?.unit()
    }

    fn state(&self) -> Result<(u64, u64, bool), ManagerError> {
        match self.obj.call(Op::BarrierState)? {
            Reply::BarrierState {
                parties,
                waiting,
                broken,
            } => Ok((parties, waiting, broken)),
            r => Err(unexpected(r)),
        }
    }

    /// The number of parties (`parties`).
    pub fn parties(&self) -> Result<u32, ManagerError> {
        Ok(self.state()?.0 as u32)
    }

    /// How many parties wait now (`n_waiting`).
    pub fn n_waiting(&self) -> Result<u32, ManagerError> {
        Ok(self.state()?.1 as u32)
    }

    /// Whether the barrier is broken (`broken`).
    pub fn broken(&self) -> Result<bool, ManagerError> {
        Ok(self.state()?.2)
    }
}
