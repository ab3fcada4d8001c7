//! A process-global slot holding a leaked value, swappable after `fork`.

use std::sync::atomic::{AtomicPtr, Ordering};

/// A slot holding a `&'static T` obtained by leaking a box. Values are never freed
/// while published (a forked child may still refer to its parent's copy); a value that
/// loses a publication race is dropped, having never been visible.
///
/// Unlike a `Mutex<Option<..>>`, reading the slot takes no lock, so a child forked while
/// another thread was using it can still read and replace it.
pub(crate) struct LeakedCell<T: 'static> {
    ptr: AtomicPtr<T>,
}

impl<T: Send + Sync + 'static> LeakedCell<T> {
    /// An empty slot.
    pub(crate) const fn new() -> Self {
        LeakedCell {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The published value, if any.
    pub(crate) fn get(&self) -> Option<&'static T> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: non-null pointers in the slot come from `Box::into_raw` in `publish`
        // and are never freed after a successful publication, so they are valid for
        // `'static`; `T: Sync` makes sharing the reference across threads sound.
        unsafe { p.as_ref() }
    }

    /// Publishes `value` if the slot still holds `expected` (compared by address);
    /// returns whatever the slot holds afterwards.
    pub(crate) fn publish(&self, expected: Option<&'static T>, value: T) -> &'static T {
        let fresh = Box::into_raw(Box::new(value));
        let mut expected_ptr =
            expected.map_or(std::ptr::null_mut(), |r| (r as *const T).cast_mut());
        loop {
            match self.ptr.compare_exchange(
                expected_ptr,
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                // SAFETY: `fresh` was just created by `Box::into_raw` and is now
                // published, hence never freed.
                Ok(_) => return unsafe { &*fresh },
                // The slot was emptied meanwhile: publish ours into the empty slot.
                Err(winner) if winner.is_null() => expected_ptr = winner,
                Err(winner) => {
                    // SAFETY: `fresh` was never published, so this is its only owner.
                    drop(unsafe { Box::from_raw(fresh) });
                    // SAFETY: `winner` is a non-null published pointer (see `get`).
                    return unsafe { &*winner };
                }
            }
        }
    }

    /// Empties the slot, leaking its value (used in a forked child, which must not use
    /// its parent's state).
    pub(crate) fn forget(&self) -> Option<&'static T> {
        let p = self.ptr.swap(std::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: as in `get`: published pointers are valid for ever.
        unsafe { p.as_ref() }
    }
}

/// A mutex that a forked child can always take: the lock word holds the pid of the
/// process whose thread holds it, so a child forked while another thread of its parent
/// held the lock sees a foreign pid and takes the lock over, instead of waiting for a
/// thread that does not exist in the child (the classic fork-with-threads deadlock).
///
/// The data a child takes over may have been mid-update in the parent: users of the
/// lock must treat state stamped with another pid as void (the queue's producer state
/// does). Waiting spins, then yields, then naps: the lock guards short sections.
pub(crate) struct ForkMutex<T> {
    owner: std::sync::atomic::AtomicU32,
    data: std::cell::UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to `data` (`T: Send` suffices, as
// for `std::sync::Mutex`).
unsafe impl<T: Send> Sync for ForkMutex<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for ForkMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkMutex").finish_non_exhaustive()
    }
}

/// Access to the data of a locked [`ForkMutex`]; unlocks on drop.
pub(crate) struct ForkMutexGuard<'a, T> {
    lock: &'a ForkMutex<T>,
}

impl<T> ForkMutex<T> {
    pub(crate) const fn new(data: T) -> Self {
        ForkMutex {
            owner: std::sync::atomic::AtomicU32::new(0),
            data: std::cell::UnsafeCell::new(data),
        }
    }

    pub(crate) fn lock(&self) -> ForkMutexGuard<'_, T> {
        let me = super::proc::cached_pid();
        let mut round = 0u32;
        loop {
            let held = self.owner.load(Ordering::Relaxed);
            // Free, or held by a thread of another process: the parent we were forked
            // from. That thread does not exist here; the lock is ours to take.
            if held != me
                && self
                    .owner
                    .compare_exchange(held, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return ForkMutexGuard { lock: self };
            }
            round += 1;
            if round < 64 {
                std::hint::spin_loop();
            } else if round < 128 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
    }
}

impl<T> std::ops::Deref for ForkMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> std::ops::DerefMut for ForkMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes the access unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for ForkMutexGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.owner.store(0, Ordering::Release);
    }
}
