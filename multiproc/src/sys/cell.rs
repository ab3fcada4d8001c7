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
