//! `threading.local()`: per-thread values in an object made at run time (S15).

use std::cell::RefCell;
use std::fmt;

use thread_local::ThreadLocal;

use super::current::get_ident;

/// One thread's value, tagged with the ident of the thread that stored it.
struct Slot<T> {
    owner: u64,
    value: Option<T>,
}

/// Python's `threading.local()`: one value per thread, in an object created at run time
/// (a field, a local variable, or a `static`) rather than declared like std's
/// `thread_local!` (S15).
///
/// Each thread sees only what it [`set`](Self::set) itself; a thread that has set
/// nothing sees `None` (Python raises `AttributeError`).
///
/// Built on the `thread_local` crate's `ThreadLocal`, which hands a finished thread's
/// slot to the next new thread; `Local` tags every value with its thread's
/// [`get_ident`], which is never reused, so that new thread starts empty instead of
/// seeing its predecessor's value. A finished thread's value is dropped when its slot is
/// reused or when the `Local` is dropped.
///
/// ```
/// use multiproc::thread::{Local, Thread};
///
/// static LOCAL_SCHOOL: Local<String> = Local::new();
///
/// let student = |name: &'static str| {
///     move || {
///         LOCAL_SCHOOL.set(name.to_string());
///         LOCAL_SCHOOL.get()
///     }
/// };
/// let a = Thread::start(student("ABC")).unwrap();
/// let d = Thread::start(student("DEF")).unwrap();
/// assert_eq!(a.join().unwrap().as_deref(), Some("ABC"));
/// assert_eq!(d.join().unwrap().as_deref(), Some("DEF"));
/// assert_eq!(LOCAL_SCHOOL.get(), None); // this thread set nothing
/// ```
pub struct Local<T: Send> {
    slots: ThreadLocal<RefCell<Slot<T>>>,
}

impl<T: Send> Local<T> {
    /// An empty `Local`: no thread has a value yet. `const`, so it can be a `static`.
    ///
    /// ```
    /// let local = multiproc::thread::Local::<u32>::new();
    /// assert_eq!(local.get(), None);
    /// ```
    pub const fn new() -> Local<T> {
        Local {
            slots: ThreadLocal::new(),
        }
    }

    /// Binds the calling thread's value (`local.name = value`), returning the previous
    /// one.
    ///
    /// ```
    /// let local = multiproc::thread::Local::new();
    /// assert_eq!(local.set(1), None);
    /// assert_eq!(local.set(2), Some(1));
    /// ```
    pub fn set(&self, value: T) -> Option<T> {
        self.with(|slot| slot.replace(value))
    }

    /// A copy of the calling thread's value (`local.name`), `None` if it set none.
    ///
    /// ```
    /// let local = multiproc::thread::Local::new();
    /// local.set("ABC".to_string());
    /// assert_eq!(local.get().as_deref(), Some("ABC"));
    /// ```
    pub fn get(&self) -> Option<T>
    where
        T: Clone,
    {
        self.with(|slot| slot.clone())
    }

    /// Removes and returns the calling thread's value (`del local.name`).
    ///
    /// ```
    /// let local = multiproc::thread::Local::new();
    /// local.set(3);
    /// assert_eq!(local.take(), Some(3));
    /// assert_eq!(local.take(), None);
    /// ```
    pub fn take(&self) -> Option<T> {
        self.with(Option::take)
    }

    /// Runs `f` on the calling thread's slot, to read or change the value in place.
    ///
    /// # Panics
    ///
    /// If `f` uses this same `Local` (the slot is borrowed while `f` runs).
    ///
    /// ```
    /// let visits = multiproc::thread::Local::new();
    /// for _ in 0..3 {
    ///     visits.with(|n: &mut Option<u32>| *n.get_or_insert(0) += 1);
    /// }
    /// assert_eq!(visits.get(), Some(3));
    /// ```
    pub fn with<R>(&self, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        let me = get_ident();
        let cell = self.slots.get_or(|| {
            RefCell::new(Slot {
                owner: me,
                value: None,
            })
        });
        let mut slot = cell.borrow_mut();
        // A slot left by a finished thread: its value is not ours to see.
        let stale = if slot.owner == me {
            None
        } else {
            slot.owner = me;
            slot.value.take()
        };
        let result = f(&mut slot.value);
        drop(slot);
        drop(stale);
        result
    }
}

impl<T: Send> Default for Local<T> {
    fn default() -> Local<T> {
        Local::new()
    }
}

impl<T: Send> fmt::Debug for Local<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}
