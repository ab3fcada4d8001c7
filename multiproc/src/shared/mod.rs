//! Memory shared by processes: Python's `multiprocessing.Value`, `Array` and
//! `shared_memory.SharedMemory` (S5 S41).
//!
//! Everything here lives in a memfd: nothing is ever created in `/dev/shm`, and the
//! kernel frees the memory when the last process holding it lets go or dies, so there
//! is no resource tracker and nothing to leak, even after a SIGKILL (CPython's
//! FAILURE_MODES item 7). Objects cross to other processes as `Process` arguments (every
//! start method) or through a [`Connection`](crate::connection::Connection).
//!
//! ```
//! # multiproc::init();
//! use multiproc::shared::{Array, Value};
//! use multiproc::Process;
//!
//! fn fill((num, arr): (Value<f64>, Array<i32>)) {
//!     num.set(3.1415926);
//!     for v in arr.lock().unwrap().iter_mut() {
//!         *v = -*v;
//!     }
//! }
//!
//! let num = Value::new(0.0)?;
//! let arr = Array::from_iter(0..10)?;
//! Process::start(fill, (num.clone(), arr.clone()))?.join()?;
//! assert_eq!(num.get(), 3.1415926);
//! assert_eq!(arr.to_vec(), [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Items are plain old data ([`bytemuck::Pod`]: integers, floats, `#[repr(C)]` structs
//! of them), which any bit pattern a dead writer leaves behind is a valid value of.
//! `Value` and `Array` carry a robust lock, like Python's synchronized wrappers:
//! [`Value::lock`] gives a guard, and a holder's death is reported to the next locker
//! as [`crate::sync::LockError::OwnerDied`], guard included.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{self, BODY, Block};
use crate::sync::{LockError, acquired};
use crate::sys::robust::{self, PodGuard, Wait};

const MUTEX_AT: usize = BODY;
const LEN_AT: usize = BODY + 56;
const DATA_AT: usize = BODY + 64;

fn new_locked_block<T>(what: &str, count: usize) -> io::Result<Block> {
    let block = Block::new(
        block::kind::<T>(what),
        DATA_AT + count * std::mem::size_of::<T>(),
    )?;
    block.mutex_at(MUTEX_AT).init(false);
    block
        .u64_at(LEN_AT)
        .store(count as u64, std::sync::atomic::Ordering::Release);
    Ok(block)
}

fn lock<T: Pod>(
    block: &Block,
    count: usize,
    wait: Wait,
) -> Result<PodGuard<'_, T>, LockError<PodGuard<'_, T>>> {
    acquired(robust::lock_data::<T>(
        block.map(),
        MUTEX_AT,
        DATA_AT,
        count,
        wait,
    ))
}

/// Takes the guard whatever happened to the previous holder: what `get`/`set` do.
fn lock_anyway<T: Pod>(block: &Block, count: usize) -> PodGuard<'_, T> {
    match lock::<T>(block, count, Wait::Forever) {
        Ok(guard) => guard,
        Err(LockError::OwnerDied(guard)) => guard,
        Err(LockError::WouldDeadlock) => panic!(
            "get/set/to_vec called by a thread that holds this Value's or Array's lock: \
             read and write through the guard instead"
        ),
        Err(e) => panic!("a Value's own lock failed: {e}"),
    }
}

/// One `T` in shared memory with its own lock (Python's `multiprocessing.Value`).
pub struct Value<T> {
    block: Arc<Block>,
    _t: PhantomData<T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            block: Arc::clone(&self.block),
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Value").field(&self.get()).finish()
    }
}

/// The locked `T` of a [`Value`]; unlocks on drop.
pub struct ValueGuard<'a, T> {
    inner: PodGuard<'a, T>,
}

impl<T> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner[0]
    }
}

impl<T> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner[0]
    }
}

impl<T: fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}

impl<T: Pod> Value<T> {
    /// A shared `value` (Python's `Value('i', 0)` is `Value::new(0i32)`).
    pub fn new(value: T) -> io::Result<Value<T>> {
        let v = Value {
            block: Arc::new(new_locked_block::<T>("Value", 1)?),
            _t: PhantomData,
        };
        v.set(value);
        Ok(v)
    }

    /// Locks the value (Python's `with v.get_lock():`); the guard derefs to `T`.
    ///
    /// ```
    /// let v = multiproc::shared::Value::new(0i64)?;
    /// *v.lock().unwrap() += 5;
    /// assert_eq!(v.get(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        lock::<T>(&self.block, 1, Wait::Forever)
            .map(|inner| ValueGuard { inner })
            .map_err(|e| e.map_guard(|inner| ValueGuard { inner }))
    }

    /// Locks at most `timeout`.
    pub fn lock_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        lock::<T>(&self.block, 1, crate::sync::until(timeout))
            .map(|inner| ValueGuard { inner })
            .map_err(|e| e.map_guard(|inner| ValueGuard { inner }))
    }

    /// The value, read under the lock (Python's `v.value`).
    ///
    /// # Panics
    /// If the calling thread holds the lock through [`Value::lock`] (Python's lock is
    /// re-entrant; here two ways to the same `T` at once would alias): use the guard.
    pub fn get(&self) -> T {
        lock_anyway::<T>(&self.block, 1)[0]
    }

    /// Stores `value` under the lock (Python's `v.value = x`).
    pub fn set(&self, value: T) {
        lock_anyway::<T>(&self.block, 1)[0] = value;
    }

    /// The value read without the lock (Python's `RawValue`): a `T` wider than a machine
    /// word may come out torn while another process writes it.
    pub fn get_racy(&self) -> T {
        robust::read_racy::<T>(self.block.map(), DATA_AT, 1)[0]
    }
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.block.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let block = Block::deserialize(deserializer, block::kind::<T>("Value"))?;
        Ok(Value {
            block: Arc::new(block),
            _t: PhantomData,
        })
    }
}

/// A fixed-length array of `T` in shared memory with its own lock (Python's
/// `multiprocessing.Array`).
pub struct Array<T> {
    block: Arc<Block>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            block: Arc::clone(&self.block),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Array").field(&self.to_vec()).finish()
    }
}

/// The locked items of an [`Array`]; derefs to `[T]`; unlocks on drop.
pub struct ArrayGuard<'a, T> {
    inner: PodGuard<'a, T>,
}

impl<T> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.inner
    }
}

impl<T> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.inner
    }
}

impl<T: fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&**self).finish()
    }
}

impl<T: Pod> Array<T> {
    /// `len` zeroed items (Python's `Array('i', 10)`).
    pub fn zeroed(len: usize) -> io::Result<Array<T>> {
        Ok(Array {
            block: Arc::new(new_locked_block::<T>("Array", len)?),
            len,
            _t: PhantomData,
        })
    }

    /// The items of `values` (Python's `Array('i', range(10))`).
    pub fn from_slice(values: &[T]) -> io::Result<Array<T>> {
        let a = Array::zeroed(values.len())?;
        a.lock_anyway().copy_from_slice(values);
        Ok(a)
    }

    /// The items an iterator yields.
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter(values: impl IntoIterator<Item = T>) -> io::Result<Array<T>> {
        Array::from_slice(&values.into_iter().collect::<Vec<T>>())
    }

    fn lock_anyway(&self) -> PodGuard<'_, T> {
        lock_anyway::<T>(&self.block, self.len)
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if it has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Locks the array (Python's `with arr.get_lock():`); the guard derefs to `[T]`.
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>, LockError<ArrayGuard<'_, T>>> {
        lock::<T>(&self.block, self.len, Wait::Forever)
            .map(|inner| ArrayGuard { inner })
            .map_err(|e| e.map_guard(|inner| ArrayGuard { inner }))
    }

    /// Item `i`, read under the lock (Python's `arr[i]`).
    pub fn get(&self, i: usize) -> Option<T> {
        self.lock_anyway().get(i).copied()
    }

    /// Stores item `i` under the lock (Python's `arr[i] = x`); `false` if out of range.
    pub fn set(&self, i: usize, value: T) -> bool {
        match self.lock_anyway().get_mut(i) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        }
    }

    /// A copy of all items, taken under the lock (Python's `arr[:]`).
    pub fn to_vec(&self) -> Vec<T> {
        self.lock_anyway().to_vec()
    }

    /// A copy taken without the lock (Python's `RawArray`): items may be mid-update.
    pub fn to_vec_racy(&self) -> Vec<T> {
        robust::read_racy::<T>(self.block.map(), DATA_AT, self.len)
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.block.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let block = Block::deserialize(deserializer, block::kind::<T>("Array"))?;
        let len = block
            .u64_at(LEN_AT)
            .load(std::sync::atomic::Ordering::Acquire) as usize;
        if DATA_AT + len * std::mem::size_of::<T>() > block.len() {
            return Err(serde::de::Error::custom(
                "a shared Array longer than its memory",
            ));
        }
        Ok(Array {
            block: Arc::new(block),
            len,
            _t: PhantomData,
        })
    }
}

/// A block of bytes shared by processes (Python's `shared_memory.SharedMemory`), with
/// no lock: readers and writers coordinate themselves (a [`crate::sync::Lock`], an
/// [`crate::sync::Event`], a queue message).
///
/// ```
/// let shm = multiproc::shared::SharedMemory::new(4096)?;
/// shm.write(10, b"hello");
/// let mut out = [0u8; 5];
/// shm.read(10, &mut out);
/// assert_eq!(&out, b"hello");
/// assert_eq!(shm.len(), 4096);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    block: Arc<Block>,
    size: usize,
    /// Serialises this process's slice views of the block (other processes are the
    /// users' to coordinate, as in Python).
    view: Arc<parking_lot::Mutex<()>>,
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("size", &self.size)
            .finish()
    }
}

const SIZE_AT: usize = BODY;
const BYTES_AT: usize = 4096;

fn shm_kind() -> u64 {
    block::kind::<u8>("SharedMemory")
}

impl SharedMemory {
    /// `size` zeroed bytes (Python's `SharedMemory(create=True, size=n)`); a size of 0
    /// is `InvalidInput`, as Python's `ValueError`.
    pub fn new(size: usize) -> io::Result<SharedMemory> {
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "size must be at least 1",
            ));
        }
        let block = Block::new(shm_kind(), BYTES_AT + size)?;
        block
            .u64_at(SIZE_AT)
            .store(size as u64, std::sync::atomic::Ordering::Release);
        Ok(SharedMemory {
            block: Arc::new(block),
            size,
            view: Arc::default(),
        })
    }

    /// Its size in bytes (Python's `size`).
    pub fn len(&self) -> usize {
        self.size
    }

    /// A name another process of the same user can [`attach`](SharedMemory::attach) to
    /// while this process holds the block (Python's `shm.name`). It is a path in
    /// `/proc`, not in `/dev/shm`: there is nothing to unlink, and nothing outlives the
    /// last process holding the memory.
    ///
    /// ```
    /// use multiproc::shared::SharedMemory;
    /// let shm = SharedMemory::new(64)?;
    /// shm.write(0, b"by name");
    /// let same = SharedMemory::attach(&shm.name())?;
    /// let mut out = [0u8; 7];
    /// same.read(0, &mut out);
    /// assert_eq!(&out, b"by name");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn name(&self) -> String {
        self.block.proc_path()
    }

    /// Attaches to the block another process [named](SharedMemory::name) (Python's
    /// `SharedMemory(name)`), while that process still holds it.
    pub fn attach(name: &str) -> io::Result<SharedMemory> {
        let block = Block::open_path(name, shm_kind())?;
        let size = block
            .u64_at(SIZE_AT)
            .load(std::sync::atomic::Ordering::Acquire) as usize;
        if BYTES_AT + size > block.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory smaller than announced",
            ));
        }
        Ok(SharedMemory {
            block: Arc::new(block),
            size,
            view: Arc::default(),
        })
    }

    /// `true` for a block of 0 bytes.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Copies `bytes` in at `offset`.
    ///
    /// # Panics
    /// If the range does not fit in the block.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.size,
            "write beyond the shared memory"
        );
        self.block
            .map()
            .write_with(BYTES_AT + offset, bytes.len(), |dst| {
                dst.copy_from_slice(bytes)
            });
    }

    /// Runs `f` on the whole block as a byte slice (Python's `shm.buf`), without copying.
    /// Threads of this process take turns; other processes may write the same bytes
    /// meanwhile, which is theirs and yours to coordinate, as in Python.
    ///
    /// ```
    /// let shm = multiproc::shared::SharedMemory::new(16)?;
    /// shm.with_bytes_mut(|buf| buf[..3].copy_from_slice(b"abc"));
    /// assert_eq!(shm.with_bytes_mut(|buf| buf[1]), b'b');
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_bytes_mut<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let _turn = self.view.lock();
        self.block.map().write_with(BYTES_AT, self.size, f)
    }

    /// Copies `out.len()` bytes out from `offset`.
    ///
    /// # Panics
    /// If the range does not fit in the block.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset + out.len() <= self.size,
            "read beyond the shared memory"
        );
        self.block.map().read(BYTES_AT + offset, out);
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.block.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let block = Block::deserialize(deserializer, shm_kind())?;
        let size = block
            .u64_at(SIZE_AT)
            .load(std::sync::atomic::Ordering::Acquire) as usize;
        if BYTES_AT + size > block.len() {
            return Err(serde::de::Error::custom(
                "shared memory smaller than announced",
            ));
        }
        Ok(SharedMemory {
            block: Arc::new(block),
            size,
            view: Arc::default(),
        })
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Integers an [`Atomic`] can hold: `i32`, `u32`, `i64`, `u64`, `isize`, `usize`.
pub trait AtomicInt: Copy + sealed::Sealed + 'static {
    #[doc(hidden)]
    fn to_bits(self) -> u64;
    #[doc(hidden)]
    fn from_bits(bits: u64) -> Self;
}

macro_rules! atomic_int {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl AtomicInt for $t {
            fn to_bits(self) -> u64 {
                self as u64
            }
            fn from_bits(bits: u64) -> Self {
                bits as $t
            }
        }
    )*};
}

atomic_int!(i32, u32, i64, u64, isize, usize);

/// An integer in shared memory with lock-free atomic operations (Python's
/// `Value('i', 0, lock=False)` / `RawValue`, made safe: every operation is atomic, so
/// nothing tears and no increment is lost).
///
/// Stored as 64 bits whatever `T` is; arithmetic wraps at `T`'s width on reading.
///
/// ```
/// let n = multiproc::shared::Atomic::new(5i64)?;
/// assert_eq!(n.fetch_add(3), 5);
/// assert_eq!(n.fetch_sub(10), 8);
/// assert_eq!(n.load(), -2);
/// assert_eq!(n.compare_exchange(-2, 7), Ok(-2));
/// assert_eq!(n.swap(1), 7);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Atomic<T> {
    block: Arc<Block>,
    _t: PhantomData<T>,
}

impl<T> Clone for Atomic<T> {
    fn clone(&self) -> Self {
        Atomic {
            block: Arc::clone(&self.block),
            _t: PhantomData,
        }
    }
}

impl<T: AtomicInt + fmt::Debug> fmt::Debug for Atomic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Atomic").field(&self.load()).finish()
    }
}

const ATOMIC_AT: usize = BODY;

impl<T: AtomicInt> Atomic<T> {
    /// A shared integer holding `value`.
    pub fn new(value: T) -> io::Result<Atomic<T>> {
        let block = Block::new(block::kind::<T>("Atomic"), ATOMIC_AT + 8)?;
        block
            .u64_at(ATOMIC_AT)
            .store(value.to_bits(), std::sync::atomic::Ordering::Release);
        Ok(Atomic {
            block: Arc::new(block),
            _t: PhantomData,
        })
    }

    fn word(&self) -> &std::sync::atomic::AtomicU64 {
        self.block.u64_at(ATOMIC_AT)
    }

    /// The value.
    pub fn load(&self) -> T {
        T::from_bits(self.word().load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Stores `value`.
    pub fn store(&self, value: T) {
        self.word()
            .store(value.to_bits(), std::sync::atomic::Ordering::SeqCst);
    }

    /// Adds `delta` (wrapping); returns the previous value.
    pub fn fetch_add(&self, delta: T) -> T {
        T::from_bits(
            self.word()
                .fetch_add(delta.to_bits(), std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// Subtracts `delta` (wrapping); returns the previous value.
    pub fn fetch_sub(&self, delta: T) -> T {
        T::from_bits(
            self.word()
                .fetch_sub(delta.to_bits(), std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// Stores `value`; returns the previous value.
    pub fn swap(&self, value: T) -> T {
        T::from_bits(
            self.word()
                .swap(value.to_bits(), std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// Stores `new` if the value is `current`: `Ok(previous)`, else `Err(actual)`.
    pub fn compare_exchange(&self, current: T, new: T) -> Result<T, T> {
        self.word()
            .compare_exchange(
                current.to_bits(),
                new.to_bits(),
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
            )
            .map(T::from_bits)
            .map_err(T::from_bits)
    }
}

impl<T: AtomicInt> Serialize for Atomic<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.block.serialize(serializer)
    }
}

impl<'de, T: AtomicInt> Deserialize<'de> for Atomic<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let block = Block::deserialize(deserializer, block::kind::<T>("Atomic"))?;
        Ok(Atomic {
            block: Arc::new(block),
            _t: PhantomData,
        })
    }
}
