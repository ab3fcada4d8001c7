//! [`RawArray`] and [`RawValue`]: shared plain data with no lock at all.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{self, BODY, Block};
use crate::sys::robust;

const LEN_AT: usize = BODY;
const DATA_AT: usize = BODY + 64;

/// A fixed-length array of `T` in shared memory with **no lock** (Python's
/// `multiprocessing.RawArray`, or `Array(..., lock=False)`): each item is read and
/// written on its own, so an item wider than a machine word may be seen half-written by
/// another process, and a read-modify-write of one process can overwrite another's.
/// Coordinate with a [`Lock`](crate::sync::Lock), a [`Barrier`](crate::sync::Barrier) or
/// a message, or use [`Array`](super::Array) (locked) or [`Atomic`](super::Atomic)
/// (lock-free and whole). Items are any [`Pod`] type, `#[repr(C)]` structs included
/// (Python's ctypes `Structure`s): every bit pattern a half-done write leaves is a
/// valid `T`. Items are copied with relaxed atomic loads and stores, a machine word at a
/// time where the alignment allows: threads of one process racing on an item get a
/// torn value, never undefined behaviour, and an aligned word is never torn.
///
/// ```
/// # multiproc::init();
/// use multiproc::shared::RawArray;
///
/// #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Point {
///     x: f64,
///     y: f64,
/// }
///
/// fn fill(points: RawArray<Point>) {
///     for i in 0..points.len() {
///         points.set(i, Point { x: i as f64, y: -(i as f64) });
///     }
/// }
///
/// let points = RawArray::<Point>::zeroed(3)?; // RawArray(Point, 3)
/// multiproc::Process::start(fill, points.clone())?.join()?; // the join orders the writes
/// assert_eq!(points.get(2), Some(Point { x: 2.0, y: -2.0 }));
/// assert_eq!(points.to_vec().len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RawArray<T> {
    block: Arc<Block>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            block: Arc::clone(&self.block),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

fn raw_array_kind<T>() -> u64 {
    block::kind::<T>("RawArray")
}

impl<T: Pod> RawArray<T> {
    /// `len` zeroed items (Python's `RawArray('d', 10)`).
    pub fn zeroed(len: usize) -> io::Result<RawArray<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|n| n.checked_add(DATA_AT))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "len: too long"))?;
        let block = Block::new(raw_array_kind::<T>(), bytes)?;
        block.u64_at(LEN_AT).store(len as u64, Ordering::Release);
        Ok(RawArray {
            block: Arc::new(block),
            len,
            _t: PhantomData,
        })
    }

    /// The items of `values` (Python's `RawArray('i', [1, 2, 3])`).
    pub fn from_slice(values: &[T]) -> io::Result<RawArray<T>> {
        let array = RawArray::zeroed(values.len())?;
        for (i, value) in values.iter().enumerate() {
            array.set(i, *value);
        }
        Ok(array)
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if it has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Item `i` (Python's `arr[i]`), `None` out of range.
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.len).then(|| robust::read_racy_at::<T>(self.block.map(), DATA_AT, i))
    }

    /// Stores item `i` (Python's `arr[i] = x`); `false` if out of range.
    pub fn set(&self, i: usize, value: T) -> bool {
        if i >= self.len {
            return false;
        }
        robust::write_racy_at::<T>(self.block.map(), DATA_AT, i, value);
        true
    }

    /// A copy of all items (Python's `arr[:]`), each read on its own.
    pub fn to_vec(&self) -> Vec<T> {
        robust::read_racy::<T>(self.block.map(), DATA_AT, self.len)
    }
}

impl<T: Pod> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.block.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let block = Block::deserialize(deserializer, raw_array_kind::<T>())?;
        let len = block.u64_at(LEN_AT).load(Ordering::Acquire) as usize;
        let fits = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|n| n.checked_add(DATA_AT))
            .is_some_and(|end| end <= block.len());
        if !fits {
            return Err(serde::de::Error::custom(
                "a shared RawArray longer than its memory",
            ));
        }
        Ok(RawArray {
            block: Arc::new(block),
            len,
            _t: PhantomData,
        })
    }
}

/// One `T` in shared memory with **no lock** (Python's `multiprocessing.RawValue`):
/// a [`RawArray`] of one. For a primitive, [`Atomic`](super::Atomic) is as cheap and
/// never tears; this is for `Pod` structs.
///
/// ```
/// let v = multiproc::shared::RawValue::new([1u32, 2, 3])?;
/// v.set([4, 5, 6]);
/// assert_eq!(v.get(), [4, 5, 6]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct RawValue<T> {
    array: RawArray<T>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            array: self.array.clone(),
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

impl<T: Pod> RawValue<T> {
    /// A shared `value` (Python's `RawValue('i', 7)` is `RawValue::new(7i32)`).
    pub fn new(value: T) -> io::Result<RawValue<T>> {
        let array = RawArray::from_slice(&[value])?;
        Ok(RawValue { array })
    }

    /// The value (Python's `v.value`), read without a lock.
    pub fn get(&self) -> T {
        robust::read_racy_at::<T>(self.array.block.map(), DATA_AT, 0)
    }

    /// Stores `value` (Python's `v.value = x`), without a lock.
    pub fn set(&self, value: T) {
        self.array.set(0, value);
    }
}

impl<T: Pod> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.array.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let array = RawArray::deserialize(deserializer)?;
        if array.len() != 1 {
            return Err(serde::de::Error::custom("a RawArray, not a RawValue"));
        }
        Ok(RawValue { array })
    }
}
