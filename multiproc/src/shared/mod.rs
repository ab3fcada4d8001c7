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
//!
//! | Python | here |
//! |---|---|
//! | `Value('i', 0)`, `Array('d', 10)` | [`Value::new`], [`Array::zeroed`] (a lock each) |
//! | `Value('i', 0, lock=lock)`, `Array('i', 3, lock=lock)` | [`Value::with_lock`], [`Array::with_lock`] (one [`SuppliedLock`] for several) |
//! | `Value(typecode, x, lock=False)`, `RawValue` of a number | [`Atomic`] for every typecode: lock-free and never torn |
//! | `RawArray(typecode or Structure, n)`, `RawValue(Structure)` | [`RawArray`], [`RawValue`] (no lock) |
//! | `SharedMemory(create=True, size=n)` | [`SharedMemory::new`] (no name, nothing in `/dev/shm`) |
//! | `SharedMemory(name, create=True, size=n)`, `SharedMemory(name)`, `unlink()` | [`SharedMemory::create`], [`SharedMemory::attach`], [`SharedMemory::unlink`] |
//! | `SharedMemoryManager()`, `smm.SharedMemory(n)` | [`SharedMemoryManager::start`], [`SharedMemoryManager::shared_memory`] |
//!
//! ```
//! # multiproc::init();
//! use multiproc::shared::{Atomic, RawArray, Value};
//! use multiproc::sync::RLock;
//! use multiproc::Process;
//!
//! fn work((hits, mean, lock, count, total): (Atomic<u8>, Atomic<f64>, RLock, Value<u32>, Value<f64>)) {
//!     hits.fetch_add(1); // Value('B', 0, lock=False)
//!     mean.store(2.5); // Value('d', 0.0, lock=False)
//!     let _both = lock.lock().unwrap(); // one lock for two values
//!     count.set(count.get() + 1);
//!     total.set(total.get() + 2.5);
//! }
//!
//! let lock = RLock::new()?;
//! let args = (
//!     Atomic::new(0u8)?,
//!     Atomic::new(0.0f64)?,
//!     lock.clone(),
//!     Value::with_lock(0u32, lock.clone())?,
//!     Value::with_lock(0.0f64, lock.clone())?,
//! );
//! Process::start(work, args.clone())?.join()?;
//! assert_eq!((args.0.load(), args.1.load()), (1, 2.5));
//! assert_eq!((args.3.get(), args.4.get()), (1, 2.5));
//! let raw = RawArray::from_slice(&[1.0f32, 2.0])?; // RawArray('f', [1.0, 2.0])
//! assert_eq!(raw.get(1), Some(2.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{self, BODY, Block};
use crate::sync::{Lock, LockError, LockGuard, RLock, acquired};
use crate::sys::robust::{self, PodGuard, Wait};

mod atomic;
mod named;
mod raw;

pub use atomic::{Atomic, AtomicInt, AtomicNumber, AtomicPrimitive};
pub use named::SharedMemoryManager;
pub(crate) use named::created_names;
pub use raw::{RawArray, RawValue};

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

/// A lock given to [`Value::with_lock`] or [`Array::with_lock`] (Python's `lock=`
/// argument), which several values may share: a [`Lock`] or an [`RLock`].
///
/// ```
/// use multiproc::shared::SuppliedLock;
/// use multiproc::sync::{Lock, RLock};
///
/// let _: SuppliedLock = Lock::new()?.into();
/// let _: SuppliedLock = RLock::new()?.into();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SuppliedLock {
    /// A [`Lock`]: `get`/`set` of a value under it take it in turn; holding it while
    /// calling them is a re-acquisition by its holder.
    Lock(Lock),
    /// An [`RLock`]: its holder may call `get`/`set` of every value under it (Python's
    /// default lock for `Value` and `Array` is an `RLock`, for this).
    RLock(RLock),
}

impl From<Lock> for SuppliedLock {
    fn from(lock: Lock) -> Self {
        SuppliedLock::Lock(lock)
    }
}

impl From<RLock> for SuppliedLock {
    fn from(lock: RLock) -> Self {
        SuppliedLock::RLock(lock)
    }
}

impl SuppliedLock {
    fn block(&self) -> &Block {
        match self {
            SuppliedLock::Lock(lock) => lock.block(),
            SuppliedLock::RLock(lock) => lock.block(),
        }
    }
}

/// The holds behind a value's guard: its own mutex, and the supplied lock when there is
/// one. `own` is declared first, so it is released first (the reverse of taking).
struct Held<'a, T> {
    own: PodGuard<'a, T>,
    _supplied: Option<LockGuard<'a>>,
}

/// Locks the data of `block`: first the `supplied` lock, if any (it groups several
/// values), then always the value's own error-checking mutex, which alone gives the
/// `&mut` access. A holder of an [`RLock`] may take it again, but a second hold of the
/// same value is [`LockError::WouldDeadlock`], whatever the supplied lock: two guards
/// of one value would alias. A hold the supplied lock loses (its `release()` called
/// under a guard) does not free the value either.
fn lock<'a, T: Pod>(
    block: &'a Block,
    supplied: Option<&'a SuppliedLock>,
    count: usize,
    wait: Wait,
) -> Result<Held<'a, T>, LockError<Held<'a, T>>> {
    let (supplied, mut died) = match supplied {
        None => (None, false),
        Some(lock) => match crate::sync::lock_block(lock.block(), wait) {
            Ok(guard) => (Some(guard), false),
            Err(LockError::OwnerDied(guard)) => (Some(guard), true),
            Err(LockError::WouldDeadlock) => return Err(LockError::WouldDeadlock),
            Err(LockError::WouldBlock) => return Err(LockError::WouldBlock),
            Err(LockError::Timeout) => return Err(LockError::Timeout),
        },
    };
    let own = match acquired(robust::lock_data::<T>(
        block.map(),
        MUTEX_AT,
        DATA_AT,
        count,
        wait,
    )) {
        Ok(own) => own,
        Err(LockError::OwnerDied(own)) => {
            died = true;
            own
        }
        // `supplied` is dropped on return: its hold ends with the failed call.
        Err(LockError::WouldDeadlock) => return Err(LockError::WouldDeadlock),
        Err(LockError::WouldBlock) => return Err(LockError::WouldBlock),
        Err(LockError::Timeout) => return Err(LockError::Timeout),
    };
    let held = Held {
        own,
        _supplied: supplied,
    };
    if died {
        Err(LockError::OwnerDied(held))
    } else {
        Ok(held)
    }
}

/// Takes the guard whatever happened to the previous holder: what `get`/`set` do.
fn lock_anyway<'a, T: Pod>(
    block: &'a Block,
    supplied: Option<&'a SuppliedLock>,
    count: usize,
) -> Held<'a, T> {
    match lock::<T>(block, supplied, count, Wait::Forever) {
        Ok(guard) => guard,
        Err(LockError::OwnerDied(guard)) => guard,
        Err(LockError::WouldDeadlock) => panic!(
            "get/set/to_vec called by a thread that holds this Value's or Array's lock: \
             read and write through the guard instead"
        ),
        Err(e) => panic!("a Value's own lock failed: {e}"),
    }
}

/// One `T` in shared memory with its own lock (Python's `multiprocessing.Value`), or a
/// lock the caller supplies ([`Value::with_lock`]).
pub struct Value<T> {
    block: Arc<Block>,
    supplied: Option<Arc<SuppliedLock>>,
    _t: PhantomData<T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            block: Arc::clone(&self.block),
            supplied: self.supplied.clone(),
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
    inner: Held<'a, T>,
}

impl<T> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner.own[0]
    }
}

impl<T> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner.own[0]
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
            supplied: None,
            _t: PhantomData,
        };
        v.set(value);
        Ok(v)
    }

    /// A shared `value` guarded by `lock` instead of a lock of its own (Python's
    /// `Value('i', 0, lock=lock)`): values and arrays made with the same lock are
    /// updated together under one acquisition. With an [`RLock`], hold it and call
    /// `get`/`set` of each (the way Python's `with lock:` works); with a [`Lock`], each
    /// call takes it in turn. The value keeps a mutex of its own too, taken after the
    /// supplied lock: [`lock`](Self::lock) twice on one value is
    /// [`LockError::WouldDeadlock`] even under an `RLock` (two guards would be two
    /// `&mut T`), and a `release()` of the supplied lock under a guard does not let
    /// anyone else in before the guard is dropped.
    ///
    /// ```
    /// use multiproc::shared::{Array, Value};
    /// use multiproc::sync::RLock;
    ///
    /// let lock = RLock::new()?;
    /// let balance = Value::with_lock(100i64, lock.clone())?;
    /// let history = Array::<i64>::with_lock(4, lock.clone())?;
    /// {
    ///     let _both = lock.lock().unwrap(); // no process sees one without the other
    ///     balance.set(balance.get() - 30);
    ///     history.set(0, -30);
    /// }
    /// assert_eq!((balance.get(), history.get(0)), (70, Some(-30)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_lock(value: T, lock: impl Into<SuppliedLock>) -> io::Result<Value<T>> {
        let v = Value {
            block: Arc::new(new_locked_block::<T>("Value", 1)?),
            supplied: Some(Arc::new(lock.into())),
            _t: PhantomData,
        };
        v.set(value);
        Ok(v)
    }

    /// The lock given to [`with_lock`](Self::with_lock), `None` for a value with its own
    /// (Python's `get_lock()`, for a supplied lock).
    pub fn supplied_lock(&self) -> Option<&SuppliedLock> {
        self.supplied.as_deref()
    }

    fn supplied(&self) -> Option<&SuppliedLock> {
        self.supplied.as_deref()
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
        lock::<T>(&self.block, self.supplied(), 1, Wait::Forever)
            .map(|inner| ValueGuard { inner })
            .map_err(|e| e.map_guard(|inner| ValueGuard { inner }))
    }

    /// Locks at most `timeout`.
    pub fn lock_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        lock::<T>(&self.block, self.supplied(), 1, crate::sync::until(timeout))
            .map(|inner| ValueGuard { inner })
            .map_err(|e| e.map_guard(|inner| ValueGuard { inner }))
    }

    /// The value, read under the lock (Python's `v.value`).
    ///
    /// # Panics
    /// If the calling thread holds this value's guard ([`Value::lock`]; Python's lock is
    /// re-entrant, but here two ways to the same `T` at once would alias): use the
    /// guard. Holding a supplied [`RLock`] is fine: `get`/`set` take the value's own
    /// mutex under it.
    pub fn get(&self) -> T {
        lock_anyway::<T>(&self.block, self.supplied(), 1).own[0]
    }

    /// Stores `value` under the lock (Python's `v.value = x`).
    pub fn set(&self, value: T) {
        lock_anyway::<T>(&self.block, self.supplied(), 1).own[0] = value;
    }

    /// The value read without the lock (Python's `RawValue`): a `T` wider than a machine
    /// word may come out torn while another process writes it.
    pub fn get_racy(&self) -> T {
        robust::read_racy::<T>(self.block.map(), DATA_AT, 1)[0]
    }
}

/// The block of a handle, as an element of the tuple a value crosses as.
struct BlockRef<'a>(&'a Block);

impl Serialize for BlockRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A block of the kind `what` over `T`s, received.
struct KindBlock<T>(Block, PhantomData<T>);

fn receive<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    what: &'static str,
) -> Result<(Block, Option<Arc<SuppliedLock>>), D::Error> {
    struct Visitor<T>(&'static str, PhantomData<T>);
    impl<'de, T> serde::de::Visitor<'de> for Visitor<T> {
        type Value = (Block, Option<Arc<SuppliedLock>>);
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a shared {} and its lock", self.0)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let missing = || serde::de::Error::custom("a shared value without its memory");
            let KindBlock::<T>(block, _) = seq
                .next_element_seed(KindSeed::<T>(self.0, PhantomData))?
                .ok_or_else(missing)?;
            let supplied: Option<SuppliedLock> = seq.next_element()?.ok_or_else(missing)?;
            Ok((block, supplied.map(Arc::new)))
        }
    }
    deserializer.deserialize_tuple(2, Visitor::<T>(what, PhantomData))
}

struct KindSeed<T>(&'static str, PhantomData<T>);

impl<'de, T> serde::de::DeserializeSeed<'de> for KindSeed<T> {
    type Value = KindBlock<T>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<KindBlock<T>, D::Error> {
        let block = Block::deserialize(deserializer, block::kind::<T>(self.0))?;
        Ok(KindBlock(block, PhantomData))
    }
}

fn send<S: Serializer>(
    block: &Block,
    supplied: Option<&SuppliedLock>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    let mut tuple = serializer.serialize_tuple(2)?;
    tuple.serialize_element(&BlockRef(block))?;
    tuple.serialize_element(&supplied)?;
    tuple.end()
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        send(&self.block, self.supplied(), serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (block, supplied) = receive::<D, T>(deserializer, "Value")?;
        Ok(Value {
            block: Arc::new(block),
            supplied,
            _t: PhantomData,
        })
    }
}

/// A fixed-length array of `T` in shared memory with its own lock (Python's
/// `multiprocessing.Array`).
pub struct Array<T> {
    block: Arc<Block>,
    supplied: Option<Arc<SuppliedLock>>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            block: Arc::clone(&self.block),
            supplied: self.supplied.clone(),
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
    inner: Held<'a, T>,
}

impl<T> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.inner.own
    }
}

impl<T> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.inner.own
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
            supplied: None,
            len,
            _t: PhantomData,
        })
    }

    /// `len` zeroed items guarded by `lock` instead of a lock of their own (Python's
    /// `Array('i', 10, lock=lock)`); see [`Value::with_lock`].
    pub fn with_lock(len: usize, lock: impl Into<SuppliedLock>) -> io::Result<Array<T>> {
        Ok(Array {
            block: Arc::new(new_locked_block::<T>("Array", len)?),
            supplied: Some(Arc::new(lock.into())),
            len,
            _t: PhantomData,
        })
    }

    /// The lock given to [`with_lock`](Self::with_lock), `None` for an array with its
    /// own.
    pub fn supplied_lock(&self) -> Option<&SuppliedLock> {
        self.supplied.as_deref()
    }

    /// The items of `values` (Python's `Array('i', range(10))`).
    pub fn from_slice(values: &[T]) -> io::Result<Array<T>> {
        let a = Array::zeroed(values.len())?;
        a.lock_anyway().own.copy_from_slice(values);
        Ok(a)
    }

    /// The items an iterator yields.
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter(values: impl IntoIterator<Item = T>) -> io::Result<Array<T>> {
        Array::from_slice(&values.into_iter().collect::<Vec<T>>())
    }

    fn lock_anyway(&self) -> Held<'_, T> {
        lock_anyway::<T>(&self.block, self.supplied.as_deref(), self.len)
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
        lock::<T>(
            &self.block,
            self.supplied.as_deref(),
            self.len,
            Wait::Forever,
        )
        .map(|inner| ArrayGuard { inner })
        .map_err(|e| e.map_guard(|inner| ArrayGuard { inner }))
    }

    /// Item `i`, read under the lock (Python's `arr[i]`).
    pub fn get(&self, i: usize) -> Option<T> {
        self.lock_anyway().own.get(i).copied()
    }

    /// Stores item `i` under the lock (Python's `arr[i] = x`); `false` if out of range.
    pub fn set(&self, i: usize, value: T) -> bool {
        match self.lock_anyway().own.get_mut(i) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        }
    }

    /// A copy of all items, taken under the lock (Python's `arr[:]`).
    pub fn to_vec(&self) -> Vec<T> {
        self.lock_anyway().own.to_vec()
    }

    /// A copy taken without the lock (Python's `RawArray`): items may be mid-update.
    pub fn to_vec_racy(&self) -> Vec<T> {
        robust::read_racy::<T>(self.block.map(), DATA_AT, self.len)
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        send(&self.block, self.supplied.as_deref(), serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (block, supplied) = receive::<D, T>(deserializer, "Array")?;
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
            supplied,
            len,
            _t: PhantomData,
        })
    }
}

/// A block of bytes shared by processes (Python's `shared_memory.SharedMemory`), with
/// no lock: readers and writers coordinate themselves (a [`crate::sync::Lock`], an
/// [`crate::sync::Event`], a queue message).
///
/// [`SharedMemory::new`] makes an anonymous block (a memfd): nothing in `/dev/shm`,
/// freed by the kernel when the last process lets go, whatever happens. Ask for a name
/// ([`SharedMemory::create`]) only to meet processes that get no handle from you —
/// a named segment lives until someone [`unlink`](SharedMemory::unlink)s it, or until
/// the [`SharedMemoryManager`] that made it ends, even by `SIGKILL`.
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
///
/// Named, as Python's `SharedMemory(name, create=True, size=n)` and
/// `SharedMemory(name)`:
///
/// ```
/// use multiproc::shared::SharedMemory;
/// use std::io::ErrorKind;
///
/// let name = format!("mp-doc-{}", std::process::id());
/// let shm = SharedMemory::create(&name, 100)?;
/// shm.write(0, b"named");
/// let same = SharedMemory::attach(&name)?; // by name, size read back
/// assert_eq!(same.len(), 100);
/// let mut out = [0u8; 5];
/// same.read(0, &mut out);
/// assert_eq!(&out, b"named");
/// assert_eq!(SharedMemory::create(&name, 10).unwrap_err().kind(), ErrorKind::AlreadyExists);
/// shm.unlink()?; // the name is gone; the mappings stay valid
/// assert_eq!(SharedMemory::attach(&name).unwrap_err().kind(), ErrorKind::NotFound);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    memory: Arc<Memory>,
    size: usize,
    /// Serialises this process's slice views of the block (other processes are the
    /// users' to coordinate, as in Python).
    view: Arc<parking_lot::Mutex<()>>,
}

/// Where the bytes of a [`SharedMemory`] are.
#[derive(Debug)]
enum Memory {
    /// A memfd block; the bytes start at [`BYTES_AT`], after its header.
    Anonymous(Block),
    /// `/dev/shm/<name>`, mapped whole; the bytes are the whole file (as for any
    /// program's `shm_open` segment).
    Named {
        fd: std::os::fd::OwnedFd,
        map: crate::sys::mem::Mapping,
        name: String,
    },
}

impl Memory {
    fn map(&self) -> &crate::sys::mem::Mapping {
        match self {
            Memory::Anonymous(block) => block.map(),
            Memory::Named { map, .. } => map,
        }
    }
    fn base(&self) -> usize {
        match self {
            Memory::Anonymous(_) => BYTES_AT,
            Memory::Named { .. } => 0,
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name())
            .field("size", &self.size)
            .finish()
    }
}

const SIZE_AT: usize = BODY;
const BYTES_AT: usize = 4096;

fn shm_kind() -> u64 {
    block::kind::<u8>("SharedMemory")
}

/// Maps the whole named segment behind `fd`.
fn map_named(fd: std::os::fd::OwnedFd, name: &str) -> io::Result<SharedMemory> {
    let size = crate::sys::mem::file_len(&fd)? as usize;
    if size == 0 {
        // Python: ValueError('cannot mmap an empty file').
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the shared memory {name:?} has a size of 0"),
        ));
    }
    let map = crate::sys::mem::Mapping::new(&fd, size)?;
    Ok(SharedMemory {
        memory: Arc::new(Memory::Named {
            fd,
            map,
            name: name.trim_start_matches('/').to_string(),
        }),
        size,
        view: Arc::default(),
    })
}

impl SharedMemory {
    /// `size` zeroed bytes with no name (Python's `SharedMemory(create=True, size=n)`,
    /// minus the name: nothing appears in `/dev/shm`); a size of 0 is `InvalidInput`,
    /// as Python's `ValueError`.
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
            memory: Arc::new(Memory::Anonymous(block)),
            size,
            view: Arc::default(),
        })
    }

    /// A new segment of `size` zeroed bytes called `name` in `/dev/shm` (Python's
    /// `SharedMemory(name, create=True, size=n)`; a leading `/` is optional). Any process
    /// of this user can [`attach`](Self::attach) to it by name until it is
    /// [`unlink`](Self::unlink)ed — which is the caller's to do, as in Python (whose
    /// resource tracker is no help against a `SIGKILL`); a
    /// [`SharedMemoryManager`] does it for the segments it makes.
    ///
    /// # Errors
    /// `AlreadyExists` if the name is taken (Python's `FileExistsError`);
    /// `InvalidInput` for a size of 0 or a name with a `/` inside.
    pub fn create(name: &str, size: usize) -> io::Result<SharedMemory> {
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "size must be at least 1",
            ));
        }
        let fd = crate::sys::mem::shm_create(name, size)?;
        named::note_created(name);
        map_named(fd, name).inspect_err(|_| {
            let _ = crate::sys::mem::shm_unlink(name);
            named::note_unlinked(name);
        })
    }

    /// The (device, inode) of a named segment: the file, whatever its name leads to
    /// later. `Unsupported` for an anonymous block.
    fn file_identity(&self) -> io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        match &*self.memory {
            Memory::Anonymous(_) => Err(io::ErrorKind::Unsupported.into()),
            Memory::Named { fd, .. } => {
                let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
                Ok((meta.dev(), meta.ino()))
            }
        }
    }

    /// Its size in bytes (Python's `size`).
    pub fn len(&self) -> usize {
        self.size
    }

    /// Its name (Python's `shm.name`): the `/dev/shm` name given to
    /// [`create`](Self::create), or, for an anonymous block, a path another process of
    /// the same user can [`attach`](Self::attach) to while this process holds the block.
    /// That path is in `/proc`, not in `/dev/shm`: there is nothing to unlink, and
    /// nothing outlives the last process holding the memory.
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
        match &*self.memory {
            Memory::Anonymous(block) => block.proc_path(),
            Memory::Named { name, .. } => name.clone(),
        }
    }

    /// Attaches to existing shared memory by name (Python's `SharedMemory(name)`): a
    /// `/dev/shm` segment (made by [`create`](Self::create) or any other program; its
    /// size is read back from it), or the `/proc` path [`name`](Self::name) gives for
    /// an anonymous block while its process holds it.
    ///
    /// # Errors
    /// `NotFound` if there is no such segment (Python's `FileNotFoundError`).
    pub fn attach(name: &str) -> io::Result<SharedMemory> {
        if !name.starts_with("/proc/") {
            return map_named(crate::sys::mem::shm_open(name)?, name);
        }
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
            memory: Arc::new(Memory::Anonymous(block)),
            size,
            view: Arc::default(),
        })
    }

    /// Removes the name of a named segment from `/dev/shm` (Python's `unlink()`): the
    /// memory lives on for the processes that have it mapped, and nobody can attach by
    /// name any more. Call it once, from any one process. An anonymous block has no
    /// name to remove: `Ok(())`.
    ///
    /// # Errors
    /// `NotFound` if the name was removed already (Python's `FileNotFoundError`).
    pub fn unlink(&self) -> io::Result<()> {
        match &*self.memory {
            Memory::Anonymous(_) => Ok(()),
            Memory::Named { name, .. } => {
                named::note_unlinked(name);
                crate::sys::mem::shm_unlink(name)
            }
        }
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
        self.memory
            .map()
            .write_with(self.memory.base() + offset, bytes.len(), |dst| {
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
        self.memory
            .map()
            .write_with(self.memory.base(), self.size, f)
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
        self.memory.map().read(self.memory.base() + offset, out);
    }
}

/// How a [`SharedMemory`] crosses to another process: its descriptor, and for a named
/// segment its name.
#[derive(Serialize, Deserialize)]
enum SharedMemoryWire {
    Anonymous(SharedBlock),
    Named(NamedFd, String),
}

struct SharedBlock(Option<Block>, Option<Arc<Memory>>);

impl Serialize for SharedBlock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.1.as_deref() {
            Some(Memory::Anonymous(block)) => block.serialize(serializer),
            _ => Err(serde::ser::Error::custom("not an anonymous block")),
        }
    }
}

impl<'de> Deserialize<'de> for SharedBlock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(SharedBlock(
            Some(Block::deserialize(deserializer, shm_kind())?),
            None,
        ))
    }
}

struct NamedFd(Option<std::os::fd::OwnedFd>, Option<Arc<Memory>>);

impl Serialize for NamedFd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use std::os::fd::AsFd;
        match self.1.as_deref() {
            Some(Memory::Named { fd, .. }) => crate::handle::serialize_fd(fd.as_fd(), serializer),
            _ => Err(serde::ser::Error::custom("not a named segment")),
        }
    }
}

impl<'de> Deserialize<'de> for NamedFd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(NamedFd(
            Some(crate::handle::deserialize_fd(deserializer)?),
            None,
        ))
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let memory = Some(Arc::clone(&self.memory));
        match &*self.memory {
            Memory::Anonymous(_) => {
                SharedMemoryWire::Anonymous(SharedBlock(None, memory)).serialize(serializer)
            }
            Memory::Named { name, .. } => {
                SharedMemoryWire::Named(NamedFd(None, memory), name.clone()).serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let missing = || serde::de::Error::custom("shared memory without its descriptor");
        match SharedMemoryWire::deserialize(deserializer)? {
            SharedMemoryWire::Anonymous(SharedBlock(block, _)) => {
                let block = block.ok_or_else(missing)?;
                let size = block
                    .u64_at(SIZE_AT)
                    .load(std::sync::atomic::Ordering::Acquire) as usize;
                if BYTES_AT + size > block.len() {
                    return Err(serde::de::Error::custom(
                        "shared memory smaller than announced",
                    ));
                }
                Ok(SharedMemory {
                    memory: Arc::new(Memory::Anonymous(block)),
                    size,
                    view: Arc::default(),
                })
            }
            SharedMemoryWire::Named(NamedFd(fd, _), name) => {
                map_named(fd.ok_or_else(missing)?, &name).map_err(serde::de::Error::custom)
            }
        }
    }
}
