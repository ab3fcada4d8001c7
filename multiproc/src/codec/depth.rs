//! Bounding how deep a decoded value nests by the stack the decoding thread has left.
//!
//! postcard decodes recursively: each level of a recursive type (a tree, a linked list, a
//! `Value`-like enum) is a few stack frames, and a level costs one byte of input. A
//! foreign body of a million such bytes would overflow the receiver's stack, which Rust
//! answers with an abort, not an error. [`Bounded`] wraps postcard's deserializer and,
//! each time the value opens a level (an option, a newtype, a sequence, a tuple, a map, a
//! struct, an enum), looks at how much of the thread's stack is left: below [`KEEP`] it
//! refuses, and the decode ends with [`CodecError::TooDeep`](super::CodecError::TooDeep).
//! So any value that fits the thread's stack decodes, as deep as it is; serde_json's
//! fixed limit of 128 levels would refuse real data here. Scalars, strings and bytes go
//! straight to postcard: a value without nesting pays nothing, and one with nesting one
//! stack-pointer comparison per level.

use std::cell::Cell;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// Stack kept free below the deepest level decoded: room for the user's visitors, for
/// dropping what was built, and for the caller's own work after the refusal.
pub(crate) const KEEP: usize = 64 * 1024;

/// Whether this thread's stack has less than [`KEEP`] bytes left (`false` where the
/// platform cannot tell).
pub(super) fn exhausted() -> bool {
    stacker::remaining_stack().is_some_and(|left| left < KEEP)
}

/// postcard's deserializer (or a part of it), refusing to open a level when the stack
/// runs short; `refused` records that it did, which postcard's error cannot say.
pub(super) struct Bounded<'r, D> {
    pub(super) inner: D,
    pub(super) refused: &'r Cell<bool>,
}

/// A visitor that hands the user's visitor bounded deserializers.
struct BoundedVisitor<'r, V> {
    inner: V,
    refused: &'r Cell<bool>,
}

/// A seed that hands the user's seed a bounded deserializer.
struct BoundedSeed<'r, S> {
    inner: S,
    refused: &'r Cell<bool>,
}

/// Seq, map, enum and variant access whose elements are bounded.
struct BoundedAccess<'r, A> {
    inner: A,
    refused: &'r Cell<bool>,
}

impl<'r, D> Bounded<'r, D> {
    /// Refuses (and says so in `refused`) when the stack is short.
    fn open<E: de::Error>(&self) -> Result<(), E> {
        if exhausted() {
            self.refused.set(true);
            return Err(E::custom("nesting deeper than the thread's stack allows"));
        }
        Ok(())
    }

    fn visitor<V>(&self, inner: V) -> BoundedVisitor<'r, V> {
        BoundedVisitor {
            inner,
            refused: self.refused,
        }
    }
}

/// Methods that cannot nest: straight to postcard, with the user's own visitor.
macro_rules! leaf {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            #[inline]
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.inner.$method($($arg,)* visitor)
            }
        )*
    };
}

/// Methods that open a level: look at the stack, then hand postcard a bounded visitor.
macro_rules! level {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            #[inline]
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.open()?;
                let visitor = self.visitor(visitor);
                self.inner.$method($($arg,)* visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<'_, D> {
    type Error = D::Error;

    leaf!(
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_i128(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_u128(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_str(),
        deserialize_string(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_identifier(),
        deserialize_ignored_any(),
    );

    level!(
        deserialize_any(),
        deserialize_option(),
        deserialize_newtype_struct(name: &'static str),
        deserialize_seq(),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    );

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            #[inline]
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for BoundedVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        let refused = self.refused;
        self.inner.visit_some(Bounded { inner, refused })
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        let refused = self.refused;
        self.inner.visit_newtype_struct(Bounded { inner, refused })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let refused = self.refused;
        self.inner.visit_seq(BoundedAccess { inner, refused })
    }
    fn visit_map<A: MapAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let refused = self.refused;
        self.inner.visit_map(BoundedAccess { inner, refused })
    }
    fn visit_enum<A: EnumAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let refused = self.refused;
        self.inner.visit_enum(BoundedAccess { inner, refused })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for BoundedSeed<'_, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, inner: D) -> Result<S::Value, D::Error> {
        let refused = self.refused;
        self.inner.deserialize(Bounded { inner, refused })
    }
}

impl<'r, A> BoundedAccess<'r, A> {
    fn seed<S>(&self, inner: S) -> BoundedSeed<'r, S> {
        BoundedSeed {
            inner,
            refused: self.refused,
        }
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for BoundedAccess<'_, A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_element_seed(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for BoundedAccess<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_key_seed(seed)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_value_seed(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'r, 'de, A: EnumAccess<'de>> EnumAccess<'de> for BoundedAccess<'r, A> {
    type Error = A::Error;
    type Variant = BoundedAccess<'r, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let refused = self.refused;
        let seed = self.seed(seed);
        self.inner
            .variant_seed(seed)
            .map(|(value, inner)| (value, BoundedAccess { inner, refused }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for BoundedAccess<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let refused = self.refused;
        self.inner.tuple_variant(
            len,
            BoundedVisitor {
                inner: visitor,
                refused,
            },
        )
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let refused = self.refused;
        self.inner.struct_variant(
            fields,
            BoundedVisitor {
                inner: visitor,
                refused,
            },
        )
    }
}
