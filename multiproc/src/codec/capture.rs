//! Recovering the text of a user's `D::Error::custom(msg)`, which postcard drops.
//!
//! When a decode fails with postcard's `SerdeDeCustom`, [`custom_message`] decodes the
//! same bytes once more through [`Wrap`], a deserializer around postcard's whose error
//! type keeps the message (`serde_path_to_error`'s technique). The user's `Deserialize`
//! and visitors see only the wrappers, so every error they make is ours and keeps its
//! text. Where such an error must pass back through postcard (a visitor called by
//! postcard returns it), the text waits in a side cell and postcard carries a plain
//! `custom`; the wrapper that receives postcard's error takes the text back. The
//! wrappers run only after a failure: the success path is postcard alone.

use std::cell::Cell;
use std::fmt::{self, Display};

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// The text of the `custom` error that decoding `body` as a `T` ends with, if any.
///
/// A `Deserialize` that panics on this second run is caught here: the caller keeps
/// postcard's error, without a message, as before.
pub(super) fn custom_message<T: DeserializeOwned>(body: &[u8]) -> Option<String> {
    let was = REPLAYING.replace(true);
    let message = replay::<T>(body);
    REPLAYING.set(was);
    message.filter(|m| m != UNREPEATABLE)
}

thread_local! {
    static REPLAYING: Cell<bool> = const { Cell::new(false) };
}

/// The message a `Deserialize` with side effects gives when it meets, on the second run,
/// what the first run consumed (a handle whose descriptor was taken): the second run
/// went elsewhere, and no message is better than a wrong one.
pub(crate) const UNREPEATABLE: &str = "multiproc: this decode cannot be repeated";

/// Whether this thread is decoding a body a second time to recover a message.
pub(crate) fn replaying() -> bool {
    REPLAYING.get()
}

fn replay<T: DeserializeOwned>(body: &[u8]) -> Option<String> {
    let run = std::panic::AssertUnwindSafe(|| {
        let side = Cell::new(None);
        let mut inner = postcard::Deserializer::from_bytes(body);
        T::deserialize(Wrap {
            inner: &mut inner,
            side: &side,
        })
        .err()
    });
    std::panic::catch_unwind(run).ok().flatten()?.0
}

/// Our error: the message of a `custom` error (`None`: an error of postcard's own).
#[derive(Debug)]
struct Captured(Option<String>);

impl Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("postcard error"))
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<M: Display>(msg: M) -> Self {
        Captured(Some(msg.to_string()))
    }
}

/// Where a message waits while postcard carries its error.
type Side = Cell<Option<String>>;

/// An error of ours on its way out through postcard: the text waits in `side`.
fn lower<E: de::Error>(side: &Side, error: Captured) -> E {
    let e = E::custom(&error);
    if error.0.is_some() {
        side.set(error.0);
    }
    e
}

/// An error coming back from postcard: the text waiting in `side` is its own (postcard
/// hands every error straight up, so a waiting text belongs to the error in flight).
fn lift<E>(side: &Side, _: E) -> Captured {
    Captured(side.take())
}

/// A deserializer whose error keeps `custom`'s text.
struct Wrap<'s, D> {
    inner: D,
    side: &'s Side,
}

/// A visitor that hands the user's visitor our wrappers.
struct WrapVisitor<'s, V> {
    inner: V,
    side: &'s Side,
}

/// A seed that hands the user's seed our deserializer.
struct WrapSeed<'s, S> {
    inner: S,
    side: &'s Side,
}

/// Seq, map, enum and variant access that wrap what the user's visitor reads.
struct WrapAccess<'s, A> {
    inner: A,
    side: &'s Side,
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Captured> {
                // The replay nests as the first run did, in bigger frames: stop where
                // the stack runs short (the error then has no message).
                if super::depth::exhausted() {
                    return Err(Captured(None));
                }
                let side = self.side;
                self.inner
                    .$method($($arg,)* WrapVisitor { inner: visitor, side })
                    .map_err(|e| lift(side, e))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Wrap<'_, D> {
    type Error = Captured;

    forward_deserialize!(
        deserialize_any(),
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
        deserialize_option(),
        deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_seq(),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(),
        deserialize_ignored_any(),
    );

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                let side = self.side;
                self.inner.$method(v).map_err(|e| lower(side, e))
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for WrapVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        let side = self.side;
        self.inner.visit_none().map_err(|e| lower(side, e))
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        let side = self.side;
        self.inner.visit_unit().map_err(|e| lower(side, e))
    }
    fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        let side = self.side;
        self.inner
            .visit_some(Wrap { inner, side })
            .map_err(|e| lower(side, e))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        let side = self.side;
        self.inner
            .visit_newtype_struct(Wrap { inner, side })
            .map_err(|e| lower(side, e))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let side = self.side;
        self.inner
            .visit_seq(WrapAccess { inner, side })
            .map_err(|e| lower(side, e))
    }
    fn visit_map<A: MapAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let side = self.side;
        self.inner
            .visit_map(WrapAccess { inner, side })
            .map_err(|e| lower(side, e))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let side = self.side;
        self.inner
            .visit_enum(WrapAccess { inner, side })
            .map_err(|e| lower(side, e))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for WrapSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, inner: D) -> Result<S::Value, D::Error> {
        let side = self.side;
        self.inner
            .deserialize(Wrap { inner, side })
            .map_err(|e| lower(side, e))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for WrapAccess<'_, A> {
    type Error = Captured;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Captured> {
        let side = self.side;
        self.inner
            .next_element_seed(WrapSeed { inner: seed, side })
            .map_err(|e| lift(side, e))
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WrapAccess<'_, A> {
    type Error = Captured;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Captured> {
        let side = self.side;
        self.inner
            .next_key_seed(WrapSeed { inner: seed, side })
            .map_err(|e| lift(side, e))
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Captured> {
        let side = self.side;
        self.inner
            .next_value_seed(WrapSeed { inner: seed, side })
            .map_err(|e| lift(side, e))
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'s, 'de, A: EnumAccess<'de>> EnumAccess<'de> for WrapAccess<'s, A> {
    type Error = Captured;
    type Variant = WrapAccess<'s, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), Captured> {
        let side = self.side;
        self.inner
            .variant_seed(WrapSeed { inner: seed, side })
            .map(|(value, inner)| (value, WrapAccess { inner, side }))
            .map_err(|e| lift(side, e))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for WrapAccess<'_, A> {
    type Error = Captured;

    fn unit_variant(self) -> Result<(), Captured> {
        let side = self.side;
        self.inner.unit_variant().map_err(|e| lift(side, e))
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Captured> {
        let side = self.side;
        self.inner
            .newtype_variant_seed(WrapSeed { inner: seed, side })
            .map_err(|e| lift(side, e))
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Captured> {
        let side = self.side;
        self.inner
            .tuple_variant(
                len,
                WrapVisitor {
                    inner: visitor,
                    side,
                },
            )
            .map_err(|e| lift(side, e))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Captured> {
        let side = self.side;
        self.inner
            .struct_variant(
                fields,
                WrapVisitor {
                    inner: visitor,
                    side,
                },
            )
            .map_err(|e| lift(side, e))
    }
}
