//! Robust mutexes living in shared memory, for locks between processes.
//!
//! A lock whose holder dies is handed to the next locker, which learns it as
//! [`Acquired::OwnerDied`] instead of waiting for ever (FAILURE_MODES item 4): the lock
//! word names the holder's thread, and sleepers check now and then that it still
//! exists. A holder that locks again is recognised (error-checking or recursive).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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
pub(crate) enum LockRefused {
    /// The calling thread holds this (non-recursive) mutex already.
    WouldDeadlock,
    /// Held by someone else now (`try_lock`).
    WouldBlock,
    /// Held by someone else until the deadline.
    Timeout,
}

/// A robust mutex at a fixed place in a `MAP_SHARED` mapping.
///
/// The lock word holds the kernel thread id of the holder (0 when free) and a
/// "sleepers" bit. Locking is one compare-and-swap when free; a contended locker spins
/// briefly, then sleeps on the word (futex) in slices of [`CHECK_OWNER_EVERY`], after
/// each of which it checks that the holder thread still exists: a holder that died
/// (its thread or its whole process, SIGKILL included) is replaced, and the new holder
/// learns it as [`Acquired::OwnerDied`]. A thread id names one thread system-wide, so
/// a holder that locks again is recognised ([`LockRefused::WouldDeadlock`], or one level
/// deeper for a recursive mutex).
#[repr(C)]
pub(crate) struct RobustMutex {
    word: AtomicU32,
    /// Re-entry depth beyond the first, touched only by the holder.
    depth: AtomicU32,
    recursive: AtomicU32,
}

const SLEEPERS: u32 = 1 << 31;
const TID: u32 = !SLEEPERS;
/// How often a sleeping locker checks that the holder is still alive.
const CHECK_OWNER_EVERY: Duration = Duration::from_millis(20);

impl std::fmt::Debug for RobustMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RobustMutex")
    }
}

/// The calling thread's kernel id, cached per thread (and refreshed in a forked child,
/// whose thread has a new id).
fn my_tid() -> u32 {
    thread_local! {
        static MINE: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
    }
    let pid = super::proc::cached_pid();
    MINE.with(|m| {
        let (for_pid, tid) = m.get();
        if for_pid == pid && tid != 0 {
            return tid;
        }
        let tid = super::proc::gettid();
        m.set((pid, tid));
        tid
    })
}

/// `true` while thread `tid` exists (a zombie does not count).
fn thread_alive(tid: u32) -> bool {
    super::proc::start_time(tid).is_some()
}

impl RobustMutex {
    /// Bytes a mutex takes (align to 8).
    pub(crate) const SIZE: usize = std::mem::size_of::<RobustMutex>();

    /// The mutex at byte `offset` of `map`.
    ///
    /// # Panics
    /// If the range is misaligned or outside the mapping (a layout bug).
    pub(crate) fn at(map: &Mapping, offset: usize) -> &RobustMutex {
        let ptr = map.ptr_at(offset, RobustMutex::SIZE, 8);
        // SAFETY: `ptr_at` checked bounds and alignment; the memory lives as long as the
        // borrow of `map`; the struct is three atomics, valid for any bit pattern, and
        // every process accesses them only atomically.
        unsafe { &*ptr.cast::<RobustMutex>() }
    }

    /// Initialises the mutex, recursive or error-checking. Only the creator calls this,
    /// before any other process can see it.
    pub(crate) fn init(&self, recursive: bool) {
        self.word.store(0, Ordering::Relaxed);
        self.depth.store(0, Ordering::Relaxed);
        self.recursive.store(recursive as u32, Ordering::Release);
    }

    /// One attempt: `Some` when the lock is ours (or refused for good). `extra` is
    /// [`SLEEPERS`] for a locker that has slept: others may still sleep, so its unlock
    /// must wake one.
    fn attempt(&self, me: u32, seen: u32, extra: u32) -> Option<Result<Acquired, LockRefused>> {
        let owner = seen & TID;
        if owner == me {
            if self.recursive.load(Ordering::Relaxed) != 0 {
                self.depth.fetch_add(1, Ordering::Relaxed);
                return Some(Ok(Acquired::Clean));
            }
            return Some(Err(LockRefused::WouldDeadlock));
        }
        if owner == 0 {
            // Keep the sleepers bit: others may be asleep, and our unlock must wake one.
            return self
                .word
                .compare_exchange(
                    seen,
                    me | (seen & SLEEPERS) | extra,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
                .then_some(Ok(Acquired::Clean));
        }
        None
    }

    /// Takes the lock from a dead holder: `Some(OwnerDied)` if this caller did.
    fn take_over(&self, me: u32, seen: u32) -> Option<Result<Acquired, LockRefused>> {
        let owner = seen & TID;
        if owner == 0 || owner == me || thread_alive(owner) {
            return None;
        }
        self.word
            .compare_exchange(seen, me | SLEEPERS, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then(|| {
                self.depth.store(0, Ordering::Relaxed);
                Ok(Acquired::OwnerDied)
            })
    }

    /// Locks, waiting until `deadline` (`None`: for ever).
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Acquired, LockRefused> {
        let me = my_tid();
        if let Some(done) = self.attempt(me, 0, 0) {
            return done;
        }
        // A holder on another core usually lets go within a few hundred nanoseconds.
        for _ in 0..64 {
            let seen = self.word.load(Ordering::Relaxed);
            if let Some(done) = self.attempt(me, seen, 0) {
                return done;
            }
            if seen & TID == me {
                break;
            }
            std::hint::spin_loop();
        }
        let mut slept = 0;
        loop {
            let seen = self.word.load(Ordering::Relaxed);
            if let Some(done) = self.attempt(me, seen, slept) {
                return done;
            }
            if let Some(done) = self.take_over(me, seen) {
                return done;
            }
            let left = super::mem::time_left(deadline);
            if left == Some(Duration::ZERO) {
                return Err(LockRefused::Timeout);
            }
            // Say we sleep, then sleep while the word still says so.
            let asleep = seen | SLEEPERS;
            if seen != asleep
                && self
                    .word
                    .compare_exchange(seen, asleep, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let nap = left.map_or(CHECK_OWNER_EVERY, |l| l.min(CHECK_OWNER_EVERY));
            super::mem::futex_wait(&self.word, asleep, Some(nap));
            slept = SLEEPERS;
        }
    }

    /// Locks only if that is possible at once (or the holder is dead).
    pub(crate) fn try_lock(&self) -> Result<Acquired, LockRefused> {
        let me = my_tid();
        let seen = self.word.load(Ordering::Relaxed);
        if let Some(done) = self.attempt(me, seen, 0) {
            return done;
        }
        if let Some(done) = self.take_over(me, seen) {
            return done;
        }
        Err(LockRefused::WouldBlock)
    }

    /// `true` while some thread holds the lock (one that died holding it included, until
    /// the next locker takes it over).
    pub(crate) fn is_locked(&self) -> bool {
        self.word.load(Ordering::Acquire) & TID != 0
    }

    /// How many times the calling thread holds the lock: 0 if it does not, 1 for a
    /// plain hold, more for a recursive mutex locked again.
    pub(crate) fn held_by_me(&self) -> u32 {
        if self.word.load(Ordering::Acquire) & TID != my_tid() {
            return 0;
        }
        1 + self.depth.load(Ordering::Relaxed)
    }

    /// Unlocks; `EPERM` if the calling thread does not hold it.
    pub(crate) fn unlock(&self) -> io::Result<()> {
        let me = my_tid();
        let seen = self.word.load(Ordering::Relaxed);
        if seen & TID != me {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        if self.depth.load(Ordering::Relaxed) > 0 {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Ok(());
        }
        if self.word.swap(0, Ordering::Release) & SLEEPERS != 0 {
            super::mem::futex_wake_one(&self.word);
        }
        Ok(())
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
/// guard holds the mutex that protects them. Unlocks on drop.
///
/// Not `Send`: the lock word names the holder *thread* (its kernel thread id). Unlocking
/// from another thread is refused (`EPERM`, so a guard dropped there would leave the
/// lock held), and a locker that finds the holder thread gone takes the lock over as
/// [`Acquired::OwnerDied`], so a guard carried to another thread would lose its lock
/// when the thread that took it exits, while still in use.
pub(crate) struct PodGuard<'a, T> {
    mutex: &'a RobustMutex,
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
) -> Result<(PodGuard<'_, T>, Acquired), LockRefused> {
    lock_data_in(map, mutex_at, map, data_at, count, wait)
}

/// [`lock_data`] with the mutex in one mapping and the data it protects in another (a
/// lock several shared values use; the same layout contract).
pub(crate) fn lock_data_in<'a, T: bytemuck::Pod>(
    mutex_map: &'a Mapping,
    mutex_at: usize,
    map: &'a Mapping,
    data_at: usize,
    count: usize,
    wait: Wait,
) -> Result<(PodGuard<'a, T>, Acquired), LockRefused> {
    let mutex = RobustMutex::at(mutex_map, mutex_at);
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

/// Copies the `len` bytes at `src` (shared memory) to `dst` (private) with relaxed
/// atomic loads, each as wide as the address of the bytes it reads allows (8, 4, 2 or 1
/// bytes). The widths depend only on `src` and `len`, so that the stores of
/// [`atomic_store_bytes`] on the same item use the very same ones (racing atomics of
/// mixed sizes are not allowed either).
///
/// # Safety
/// `src` is valid for `len` bytes of reads, in memory that is accessed only atomically
/// (or by other processes); `dst` is valid for `len` bytes of writes.
unsafe fn atomic_load_bytes(src: *const u8, dst: *mut u8, len: usize) {
    use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU64};
    let mut i = 0;
    while i < len {
        let at = src as usize + i;
        let left = len - i;
        // SAFETY: for each arm, `src + i .. + width` is inside the caller's range and
        // aligned to `width` (tested); `dst + i` is writable for `width` bytes, written
        // unaligned.
        unsafe {
            if at % 8 == 0 && left >= 8 {
                let v = AtomicU64::from_ptr(src.add(i).cast_mut().cast()).load(Ordering::Relaxed);
                std::ptr::write_unaligned(dst.add(i).cast::<u64>(), v);
                i += 8;
            } else if at % 4 == 0 && left >= 4 {
                let v = AtomicU32::from_ptr(src.add(i).cast_mut().cast()).load(Ordering::Relaxed);
                std::ptr::write_unaligned(dst.add(i).cast::<u32>(), v);
                i += 4;
            } else if at % 2 == 0 && left >= 2 {
                let v = AtomicU16::from_ptr(src.add(i).cast_mut().cast()).load(Ordering::Relaxed);
                std::ptr::write_unaligned(dst.add(i).cast::<u16>(), v);
                i += 2;
            } else {
                let v = AtomicU8::from_ptr(src.add(i).cast_mut()).load(Ordering::Relaxed);
                *dst.add(i) = v;
                i += 1;
            }
        }
    }
}

/// Copies `bytes` to `dst` (shared memory) with relaxed atomic stores, in the widths
/// [`atomic_load_bytes`] uses for the same address and length.
///
/// # Safety
/// `dst` is valid for `bytes.len()` bytes of writes, in memory that is accessed only
/// atomically (or by other processes).
unsafe fn atomic_store_bytes(dst: *mut u8, bytes: &[u8]) {
    use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU64};
    let mut i = 0;
    while i < bytes.len() {
        let at = dst as usize + i;
        let left = bytes.len() - i;
        // SAFETY: for each arm, `dst + i .. + width` is inside the caller's range and
        // aligned to `width` (tested).
        unsafe {
            if at % 8 == 0 && left >= 8 {
                let v = u64::from_ne_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
                AtomicU64::from_ptr(dst.add(i).cast()).store(v, Ordering::Relaxed);
                i += 8;
            } else if at % 4 == 0 && left >= 4 {
                let v = u32::from_ne_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
                AtomicU32::from_ptr(dst.add(i).cast()).store(v, Ordering::Relaxed);
                i += 4;
            } else if at % 2 == 0 && left >= 2 {
                let v = u16::from_ne_bytes([bytes[i], bytes[i + 1]]);
                AtomicU16::from_ptr(dst.add(i).cast()).store(v, Ordering::Relaxed);
                i += 2;
            } else {
                AtomicU8::from_ptr(dst.add(i)).store(bytes[i], Ordering::Relaxed);
                i += 1;
            }
        }
    }
}

/// Reads the `T` at `ptr` with [`atomic_load_bytes`].
///
/// # Safety
/// `ptr` is valid and aligned for reading a `T`, in memory accessed only atomically.
unsafe fn load_racy<T: bytemuck::Pod>(ptr: *const T) -> T {
    let mut out = T::zeroed();
    // SAFETY: the caller's contract for `ptr`; `out` is a private `T`, writable for its
    // size, and any bytes are a valid `T` (`Pod`).
    unsafe {
        atomic_load_bytes(
            ptr.cast::<u8>(),
            (&mut out as *mut T).cast::<u8>(),
            std::mem::size_of::<T>(),
        )
    };
    out
}

/// Reads `count` `T`s at `offset` of `map` without any lock (Python's `RawValue` and
/// `RawArray`): another process (or thread) may be writing them, so a value wider than
/// a machine word can come out torn; any bit pattern is still a valid `T` (`Pod`).
///
/// Every byte is read with a relaxed atomic load (a word at a time where the alignment
/// allows), never a plain or volatile read: concurrent plain accesses would be a data
/// race, undefined behaviour; relaxed atomics only tear.
pub(crate) fn read_racy<T: bytemuck::Pod>(map: &Mapping, offset: usize, count: usize) -> Vec<T> {
    let ptr = map
        .ptr_at(
            offset,
            count * std::mem::size_of::<T>(),
            std::mem::align_of::<T>(),
        )
        .cast::<T>();
    // SAFETY: in bounds and aligned (checked); the racy views access these bytes only
    // atomically (`load_racy`, `write_racy_at`).
    (0..count)
        .map(|i| unsafe { load_racy(ptr.add(i)) })
        .collect()
}

/// Reads item `index` of the `T`s at `offset` of `map` without any lock (a `RawArray`'s
/// item): as [`read_racy`], one item.
pub(crate) fn read_racy_at<T: bytemuck::Pod>(map: &Mapping, offset: usize, index: usize) -> T {
    let size = std::mem::size_of::<T>();
    let ptr = map
        .ptr_at(offset + index * size, size, std::mem::align_of::<T>())
        .cast::<T>();
    // SAFETY: in bounds and aligned (checked); read atomically, as in `read_racy`.
    unsafe { load_racy(ptr) }
}

/// Writes `value` as item `index` of the `T`s at `offset` of `map` without any lock
/// (Python's `RawArray` item assignment): a reader in another process may see a value
/// wider than a machine word half-written; every bit pattern is still a valid `T`.
/// Written with relaxed atomic stores, as [`read_racy`] reads.
pub(crate) fn write_racy_at<T: bytemuck::Pod>(
    map: &Mapping,
    offset: usize,
    index: usize,
    value: T,
) {
    let size = std::mem::size_of::<T>();
    let ptr = map
        .ptr_at(offset + index * size, size, std::mem::align_of::<T>())
        .cast::<u8>();
    // SAFETY: in bounds and aligned (checked); the mapping is shared read-write memory
    // that no Rust reference covers, and the racy views touch it only atomically.
    unsafe { atomic_store_bytes(ptr, bytemuck::bytes_of(&value)) }
}
