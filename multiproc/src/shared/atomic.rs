//! [`Atomic`]: one primitive in shared memory, every operation lock-free.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{self, BODY, Block};

mod sealed {
    pub trait Sealed {}
}

/// The primitives an [`Atomic`] can hold: one for each of Python's `array`/`ctypes`
/// typecodes (`'b' 'B' 'h' 'H' 'i' 'I' 'l' 'L' 'q' 'Q'` → `i8 u8 i16 u16 i32 u32 i64
/// u64`, `'f' 'd'` → `f32 f64`, `'?'` → `bool`, `'u'` → `char`), and `isize`, `usize`.
/// Each is stored as one 64-bit word: a float by its bits, a `char` by its code point.
pub trait AtomicPrimitive: Copy + sealed::Sealed + 'static {
    #[doc(hidden)]
    fn to_bits(self) -> u64;
    #[doc(hidden)]
    fn from_bits(bits: u64) -> Self;
}

/// Numbers an [`Atomic`] can add to and subtract from: the integers (one atomic
/// instruction, wrapping at the type's width) and `f32`, `f64` (a compare-and-swap
/// loop on the bits: no update is lost, none is torn).
pub trait AtomicNumber: AtomicPrimitive {
    #[doc(hidden)]
    const NATIVE_ADD: bool;
    #[doc(hidden)]
    fn add(self, other: Self) -> Self;
    #[doc(hidden)]
    fn sub(self, other: Self) -> Self;
}

/// Integers an [`Atomic`] can hold: `i8` to `i64`, `u8` to `u64`, `isize`, `usize`.
pub trait AtomicInt: AtomicNumber {}

macro_rules! atomic_int {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl AtomicPrimitive for $t {
            fn to_bits(self) -> u64 {
                self as u64
            }
            fn from_bits(bits: u64) -> Self {
                bits as $t
            }
        }
        impl AtomicNumber for $t {
            // A narrower type adds in a compare-and-swap loop, so that the stored word
            // stays the canonical one `compare_exchange` compares with.
            const NATIVE_ADD: bool = std::mem::size_of::<$t>() == 8;
            fn add(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
            fn sub(self, other: Self) -> Self {
                self.wrapping_sub(other)
            }
        }
        impl AtomicInt for $t {}
    )*};
}

atomic_int!(i8, u8, i16, u16, i32, u32, i64, u64, isize, usize);

macro_rules! atomic_float {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl AtomicPrimitive for $t {
            fn to_bits(self) -> u64 {
                u64::from(<$t>::to_bits(self))
            }
            fn from_bits(bits: u64) -> Self {
                <$t>::from_bits(bits as _)
            }
        }
        impl AtomicNumber for $t {
            const NATIVE_ADD: bool = false;
            fn add(self, other: Self) -> Self {
                self + other
            }
            fn sub(self, other: Self) -> Self {
                self - other
            }
        }
    )*};
}

atomic_float!(f32, f64);

impl sealed::Sealed for bool {}
impl AtomicPrimitive for bool {
    fn to_bits(self) -> u64 {
        u64::from(self)
    }
    fn from_bits(bits: u64) -> Self {
        bits != 0
    }
}

impl sealed::Sealed for char {}
impl AtomicPrimitive for char {
    fn to_bits(self) -> u64 {
        u64::from(u32::from(self))
    }
    /// A word that is no code point (only a process scribbling on the memory could
    /// write one) reads as U+FFFD.
    fn from_bits(bits: u64) -> Self {
        u32::try_from(bits)
            .ok()
            .and_then(char::from_u32)
            .unwrap_or(char::REPLACEMENT_CHARACTER)
    }
}

/// A primitive in shared memory with lock-free atomic operations (Python's
/// `Value(typecode, x, lock=False)` / `RawValue`, made safe: every operation is atomic,
/// so nothing tears and no update is lost). Every typecode of Python's has its type:
/// see [`AtomicPrimitive`].
///
/// ```
/// use multiproc::shared::Atomic;
///
/// let n = Atomic::new(5i64)?;
/// assert_eq!(n.fetch_add(3), 5);
/// assert_eq!(n.fetch_sub(10), 8);
/// assert_eq!(n.load(), -2);
/// assert_eq!(n.compare_exchange(-2, 7), Ok(-2));
/// assert_eq!(n.swap(1), 7);
///
/// let x = Atomic::new(1.5f64)?; // Value('d', 1.5, lock=False)
/// assert_eq!(x.fetch_add(0.25), 1.5);
/// assert_eq!(x.load(), 1.75);
///
/// let small = Atomic::new(250u8)?; // Value('B', 250, lock=False)
/// small.fetch_add(10); // wraps at u8's width
/// assert_eq!(small.load(), 4);
///
/// let flag = Atomic::new(false)?; // Value('?', False, lock=False)
/// assert_eq!(flag.swap(true), false);
/// let letter = Atomic::new('a')?; // Value('u', 'a', lock=False)
/// letter.store('é');
/// assert_eq!(letter.load(), 'é');
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

impl<T: AtomicPrimitive + fmt::Debug> fmt::Debug for Atomic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Atomic").field(&self.load()).finish()
    }
}

const ATOMIC_AT: usize = BODY;

impl<T: AtomicPrimitive> Atomic<T> {
    /// A shared primitive holding `value`.
    pub fn new(value: T) -> io::Result<Atomic<T>> {
        let block = Block::new(block::kind::<T>("Atomic"), ATOMIC_AT + 8)?;
        block
            .u64_at(ATOMIC_AT)
            .store(value.to_bits(), Ordering::Release);
        Ok(Atomic {
            block: Arc::new(block),
            _t: PhantomData,
        })
    }

    fn word(&self) -> &AtomicU64 {
        self.block.u64_at(ATOMIC_AT)
    }

    /// The value (Python's `v.value`).
    pub fn load(&self) -> T {
        T::from_bits(self.word().load(Ordering::SeqCst))
    }

    /// Stores `value` (Python's `v.value = x`).
    pub fn store(&self, value: T) {
        self.word().store(value.to_bits(), Ordering::SeqCst);
    }

    /// Stores `value`; returns the previous value.
    pub fn swap(&self, value: T) -> T {
        T::from_bits(self.word().swap(value.to_bits(), Ordering::SeqCst))
    }

    /// Stores `new` if the value is `current`: `Ok(previous)`, else `Err(actual)`.
    /// Floats compare by their bits (so `NaN` can be replaced, and `-0.0` is not `0.0`).
    pub fn compare_exchange(&self, current: T, new: T) -> Result<T, T> {
        self.word()
            .compare_exchange(
                current.to_bits(),
                new.to_bits(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .map(T::from_bits)
            .map_err(T::from_bits)
    }

    /// Replaces the value with `f(value)`, retrying if another process changed it in
    /// between; returns the previous value (std's `fetch_update` that always stores).
    ///
    /// ```
    /// let n = multiproc::shared::Atomic::new(3.0f32)?;
    /// assert_eq!(n.update(|x| x * 2.0), 3.0);
    /// assert_eq!(n.load(), 6.0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn update(&self, mut f: impl FnMut(T) -> T) -> T {
        let word = self.word();
        let mut now = word.load(Ordering::SeqCst);
        loop {
            let next = f(T::from_bits(now)).to_bits();
            match word.compare_exchange_weak(now, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(previous) => return T::from_bits(previous),
                Err(seen) => now = seen,
            }
        }
    }
}

impl<T: AtomicNumber> Atomic<T> {
    /// Adds `delta` (integers wrap at their width); returns the previous value.
    pub fn fetch_add(&self, delta: T) -> T {
        if T::NATIVE_ADD {
            T::from_bits(self.word().fetch_add(delta.to_bits(), Ordering::SeqCst))
        } else {
            self.update(|x| x.add(delta))
        }
    }

    /// Subtracts `delta` (integers wrap at their width); returns the previous value.
    pub fn fetch_sub(&self, delta: T) -> T {
        if T::NATIVE_ADD {
            T::from_bits(self.word().fetch_sub(delta.to_bits(), Ordering::SeqCst))
        } else {
            self.update(|x| x.sub(delta))
        }
    }
}

impl<T: AtomicPrimitive> Serialize for Atomic<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.block.serialize(serializer)
    }
}

impl<'de, T: AtomicPrimitive> Deserialize<'de> for Atomic<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let block = Block::deserialize(deserializer, block::kind::<T>("Atomic"))?;
        Ok(Atomic {
            block: Arc::new(block),
            _t: PhantomData,
        })
    }
}
