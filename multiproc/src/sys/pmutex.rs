//! Robust, process-shared pthread mutexes living in shared memory.
//!
//! The kernel keeps, per thread, a list of the robust mutexes it holds; when the thread
//! or its process dies, the kernel marks each one "owner died" and wakes a waiter,
//! whose lock call then returns `EOWNERDEAD` instead of waiting for ever. That is what
//! makes a `multiproc` lock whose holder was SIGKILLed report [`Acquired::OwnerDied`]
//! to the next acquirer (FAILURE_MODES item 4). The mutexes are also error-checking
//! (a holder that locks again gets `EDEADLK`, not a hang) or recursive.

use std::cell::UnsafeCell;
use std::io;
use std::time::{Instant, SystemTime};

use super::mem::Mapping;

/// How a lock call ended when it got the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The usual case.
    Clean,
    /// The previous holder died holding it; the mutex has been made consistent again,
    /// but what it protects may be half-updated.
    OwnerDied,
}

/// Why a lock call did not get the lock.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The calling thread holds this (non-recursive) mutex already.
    WouldDeadlock,
    /// Held by someone else now (`try_lock`).
    Busy,
    /// Held by someone else until the deadline.
    TimedOut,
    /// Anything else the C library reported.
    Other(io::Error),
}

/// A `pthread_mutex_t` at a fixed place in a `MAP_SHARED` mapping.
#[repr(transparent)]
pub(crate) struct PMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex exists to be used from several threads (and, being
// PTHREAD_PROCESS_SHARED, processes) at once; all access goes through the pthread calls.
unsafe impl Sync for PMutex {}

impl std::fmt::Debug for PMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PMutex")
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

impl PMutex {
    /// Bytes a mutex takes (align to 8).
    pub(crate) const SIZE: usize = std::mem::size_of::<libc::pthread_mutex_t>();

    /// The mutex at byte `offset` of `map`.
    ///
    /// # Panics
    /// If the range is misaligned or outside the mapping (a layout bug).
    pub(crate) fn at(map: &Mapping, offset: usize) -> &PMutex {
        let ptr = map.ptr_at(offset, PMutex::SIZE, 8);
        // SAFETY: `ptr_at` checked bounds and alignment; the memory lives as long as the
        // borrow of `map`; a `pthread_mutex_t` is plain bytes (every process maps the
        // same ones), accessed only through the pthread calls via `UnsafeCell`.
        unsafe { &*ptr.cast::<PMutex>() }
    }

    /// Initialises the mutex: process-shared, robust, and recursive or error-checking.
    /// Only the creator calls this, once, before any other process can see it.
    pub(crate) fn init(&self, recursive: bool) -> io::Result<()> {
        let kind = if recursive {
            libc::PTHREAD_MUTEX_RECURSIVE
        } else {
            libc::PTHREAD_MUTEX_ERRORCHECK
        };
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: the attribute object is initialised by `pthread_mutexattr_init` before
        // use and destroyed after; `self.0` is valid, suitably aligned memory for a
        // mutex that no one uses yet (the caller's contract).
        unsafe {
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let attr = attr.as_mut_ptr();
            let result = check(libc::pthread_mutexattr_settype(attr, kind))
                .and_then(|()| {
                    check(libc::pthread_mutexattr_setpshared(
                        attr,
                        libc::PTHREAD_PROCESS_SHARED,
                    ))
                })
                .and_then(|()| {
                    check(libc::pthread_mutexattr_setrobust(
                        attr,
                        libc::PTHREAD_MUTEX_ROBUST,
                    ))
                })
                .and_then(|()| check(libc::pthread_mutex_init(self.0.get(), attr)));
            libc::pthread_mutexattr_destroy(attr);
            result
        }
    }

    fn outcome(&self, rc: libc::c_int) -> Result<Acquired, Refused> {
        match rc {
            0 => Ok(Acquired::Clean),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD means acquired); marking it
                // consistent is what the owner of a recovered robust mutex does.
                unsafe { libc::pthread_mutex_consistent(self.0.get()) };
                Ok(Acquired::OwnerDied)
            }
            libc::EDEADLK => Err(Refused::WouldDeadlock),
            libc::EBUSY => Err(Refused::Busy),
            libc::ETIMEDOUT => Err(Refused::TimedOut),
            rc => Err(Refused::Other(io::Error::from_raw_os_error(rc))),
        }
    }

    /// Locks, waiting until `deadline` (`None`: for ever).
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Acquired, Refused> {
        let Some(deadline) = deadline else {
            // SAFETY: an initialised mutex (the creator's contract), used through its API.
            return self.outcome(unsafe { libc::pthread_mutex_lock(self.0.get()) });
        };
        // pthread_mutex_timedlock takes a CLOCK_REALTIME instant.
        let left = deadline.saturating_duration_since(Instant::now());
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            + left;
        let ts = libc::timespec {
            tv_sec: wall.as_secs() as libc::time_t,
            tv_nsec: wall.subsec_nanos() as libc::c_long,
        };
        // SAFETY: as above; `ts` is a valid timespec for the call.
        self.outcome(unsafe { libc::pthread_mutex_timedlock(self.0.get(), &ts) })
    }

    /// Locks only if that is possible at once.
    pub(crate) fn try_lock(&self) -> Result<Acquired, Refused> {
        // SAFETY: an initialised mutex, used through its API.
        self.outcome(unsafe { libc::pthread_mutex_trylock(self.0.get()) })
    }

    /// Unlocks; `EPERM` if the calling thread does not hold it.
    pub(crate) fn unlock(&self) -> io::Result<()> {
        // SAFETY: an initialised mutex, used through its API; an error-checking or
        // recursive mutex refuses (EPERM) an unlock by a thread that does not hold it.
        check(unsafe { libc::pthread_mutex_unlock(self.0.get()) })
    }
}

/// How long a lock call may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// For ever.
    Forever,
    /// Until this instant.
    Until(Instant),
    /// Not at all.
    No,
}

/// Exclusive access to `count` plain-old-data `T`s in shared memory, for as long as the
/// guard holds the mutex that protects them. Unlocks on drop; not `Send` (a pthread
/// mutex is unlocked by the thread that locked it).
pub(crate) struct PodGuard<'a, T> {
    mutex: &'a PMutex,
    data: *mut T,
    count: usize,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl<T> std::fmt::Debug for PodGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodGuard")
            .field("count", &self.count)
            .finish()
    }
}

/// Locks the mutex at `mutex_at` of `map` and gives access to the `count` `T`s at
/// `data_at`, which that mutex protects (the caller's layout contract: every process
/// touches them only through such a guard, or through the documented racy raw views).
pub(crate) fn lock_data<T: bytemuck::Pod>(
    map: &Mapping,
    mutex_at: usize,
    data_at: usize,
    count: usize,
    wait: Wait,
) -> Result<(PodGuard<'_, T>, Acquired), Refused> {
    let mutex = PMutex::at(map, mutex_at);
    let data = map
        .ptr_at(
            data_at,
            count * std::mem::size_of::<T>(),
            std::mem::align_of::<T>(),
        )
        .cast::<T>();
    let acquired = match wait {
        Wait::Forever => mutex.lock(None),
        Wait::Until(deadline) => mutex.lock(Some(deadline)),
        Wait::No => mutex.try_lock(),
    }?;
    Ok((
        PodGuard {
            mutex,
            data,
            count,
            _not_send: std::marker::PhantomData,
        },
        acquired,
    ))
}

impl<T> std::ops::Deref for PodGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `data` points to `count` aligned, in-bounds `T`s (checked in
        // `lock_data`) inside a mapping that outlives the guard; the mutex held by this
        // guard gives exclusive access by the layout contract; `T: Pod` makes every bit
        // pattern (whatever a dead holder left) a valid `T`.
        unsafe { std::slice::from_raw_parts(self.data, self.count) }
    }
}

impl<T> std::ops::DerefMut for PodGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.count) }
    }
}

impl<T> Drop for PodGuard<'_, T> {
    fn drop(&mut self) {
        let _ = self.mutex.unlock();
    }
}

/// Reads `count` `T`s at `offset` of `map` without any lock (Python's `RawValue` and
/// `RawArray`): another process may be writing them, so a value wider than a machine
/// word can come out torn; any bit pattern is still a valid `T` (`Pod`).
pub(crate) fn read_racy<T: bytemuck::Pod>(map: &Mapping, offset: usize, count: usize) -> Vec<T> {
    let ptr = map
        .ptr_at(
            offset,
            count * std::mem::size_of::<T>(),
            std::mem::align_of::<T>(),
        )
        .cast::<T>();
    // SAFETY: in bounds and aligned (checked); each element is read volatile, so the
    // compiler assumes nothing about memory another process writes; `T: Pod`.
    (0..count)
        .map(|i| unsafe { std::ptr::read_volatile(ptr.add(i)) })
        .collect()
}
