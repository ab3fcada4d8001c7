//! Hook lists: code of higher layers that `sys` runs at a process's turning points,
//! without naming it (CPython's `multiprocessing.util.register_after_fork` and the
//! finalizers its `_exit_function` runs are the model).
//!
//! Three moments, one list each, run in registration order:
//!
//! * **in the child of every fork** ([`in_every_forked_child`]): from a
//!   `pthread_atfork` child handler, so also after a `fork` multiproc did not make (the
//!   user's, a library's), and run by hand after the forkserver's raw `clone`, which
//!   bypasses glibc's handlers. Only async-signal-safe work belongs here: resetting
//!   `sys`'s own per-process caches.
//! * **after a fork multiproc makes** ([`after_fork`]): in the child of
//!   [`fork`](super::fork) and of the `fork` start method, before anything else runs
//!   there. Forget state that belongs to the parent.
//! * **at a multiproc child's end** ([`at_child_end`]): run by the child's last steps,
//!   before `_exit` (which runs no destructor). Give back what the child holds in
//!   memory shared with others.
//!
//! A list is a fixed array of atomic slots holding plain `fn()` pointers; it never
//! allocates and takes no lock, so running it is fine in the child of a multi-threaded
//! fork, where any lock may be held by a thread that does not exist there. A hook is
//! installed with one compare-and-swap into the first empty slot, so filled slots are
//! always a prefix (a slot is taken only after every slot before it was seen full), a
//! fork can never observe a half-registered hook, and registering the same function
//! again is a no-op: a layer may register from every place that needs its hook to be
//! there.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Slots per list: the hooks are multiproc's own, a fixed handful.
const CAPACITY: usize = 8;

struct HookList {
    /// `fn()` pointers as addresses; 0 is an empty slot. Filled slots form a prefix.
    slots: [AtomicUsize; CAPACITY],
}

impl HookList {
    const fn new() -> HookList {
        HookList {
            slots: [const { AtomicUsize::new(0) }; CAPACITY],
        }
    }

    /// Appends `hook` unless it is there already (by address: the compiler may give
    /// functions of identical code one address, and then they count as one hook).
    ///
    /// # Panics
    /// If the list is full (a multiproc bug: raise [`CAPACITY`]).
    fn register(&self, hook: fn()) {
        let addr = hook as usize;
        for slot in &self.slots {
            match slot.compare_exchange(0, addr, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(held) if held == addr => return,
                Err(_) => {}
            }
        }
        panic!("multiproc: a hook list is full ({CAPACITY} hooks)");
    }

    /// Calls every hook, in the order they were registered.
    fn run(&self) {
        for slot in &self.slots {
            let addr = slot.load(Ordering::Acquire);
            if addr == 0 {
                return;
            }
            // SAFETY: the only non-zero values ever stored in a slot are `fn()`
            // pointers converted with `as usize` in `register`, and a function pointer
            // has the size of `usize` on every target multiproc supports (Linux), so
            // this converts the address back into the very `fn()` it came from.
            let hook = unsafe { std::mem::transmute::<usize, fn()>(addr) };
            hook();
        }
    }
}

static EVERY_FORK: HookList = HookList::new();
static AFTER_FORK: HookList = HookList::new();
static AT_CHILD_END: HookList = HookList::new();

/// Runs `hook` in the child of every `fork` of this process from now on, inside `fork`
/// itself (a `pthread_atfork` child handler, installed on first use). The hook must be
/// async-signal-safe (atomics, system calls; no lock, no allocation): the parent may
/// have had other threads. Returns once the handler is installed, so no fork after the
/// call misses it.
pub(crate) fn in_every_forked_child(hook: fn()) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    EVERY_FORK.register(hook);
    INSTALL.call_once(|| {
        // SAFETY: registers a handler that only runs the list, which is lock-free and
        // allocation-free; the hooks in it are async-signal-safe by the contract above,
        // so the handler is fine in the child of a multi-threaded fork.
        unsafe { libc::pthread_atfork(None, None, Some(run_every_fork_handler)) };
    });
}

extern "C" fn run_every_fork_handler() {
    EVERY_FORK.run();
}

/// What glibc's `fork` would have run in the child: for a child made by a raw `clone`.
pub(super) fn run_in_every_forked_child() {
    EVERY_FORK.run();
}

/// Runs `hook` in the child of every fork that multiproc makes ([`fork`](super::fork)
/// and the `fork` start method), first thing after the fork returns there. Register it
/// before the state it cleans up can exist.
pub(crate) fn after_fork(hook: fn()) {
    AFTER_FORK.register(hook);
}

/// Runs the [`after_fork`] hooks (in the child of a fork multiproc made).
pub(super) fn run_after_fork() {
    AFTER_FORK.run();
}

/// Runs `hook` at the end of every multiproc child (see [`run_at_child_end`]), also in
/// children forked after this call from this process.
pub(crate) fn at_child_end(hook: fn()) {
    AT_CHILD_END.register(hook);
}

/// Runs the [`at_child_end`] hooks. A multiproc child calls it once, after its report
/// is sent and stdio flushed, just before it waits for its own children and `_exit`s.
pub(crate) fn run_at_child_end() {
    AT_CHILD_END.run();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    static TRACE: AtomicU32 = AtomicU32::new(0);

    fn first() {
        TRACE
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t * 10 + 1))
            .unwrap();
    }
    fn second() {
        TRACE
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t * 10 + 2))
            .unwrap();
    }

    #[test]
    fn hooks_run_once_each_in_registration_order() {
        let list = HookList::new();
        list.register(first);
        list.register(second);
        list.register(first); // already there: no second slot
        list.run();
        assert_eq!(TRACE.load(Ordering::SeqCst), 12);
    }
}
