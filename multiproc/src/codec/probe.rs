//! Recovering the text of a user's `S::Error::custom(msg)`, which postcard drops.
//!
//! postcard's `Error::custom` keeps only the fact (`SerdeSerCustom`), not the message.
//! When an encode fails that way, [`custom_message`] runs the value once more through
//! [`Probe`], a serializer that writes nothing and whose error keeps the text. Serialising
//! is deterministic for any sane type, so the probe meets the same error at the same
//! place. The probe runs only after a failure: the success path is postcard alone.

use std::fmt::{self, Display};

use serde::ser::{self, Serialize};

/// The text of the first `custom` error that serialising `value` produces, if any.
///
/// A `Serialize` that panics on this second run (but returned an error on the first) is
/// caught here: the caller keeps postcard's error, without a message, as before.
pub(super) fn custom_message<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    let run = std::panic::AssertUnwindSafe(|| value.serialize(Probe).err());
    std::panic::catch_unwind(run).ok().flatten()?.0
}

/// The probe's error: the message of a `custom` error, `None` for the probe's own.
#[derive(Debug)]
struct Captured(Option<String>);

impl Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("formatting failed"))
    }
}

impl std::error::Error for Captured {}

impl ser::Error for Captured {
    fn custom<M: Display>(msg: M) -> Self {
        Captured(Some(msg.to_string()))
    }
}

/// A serializer that accepts the whole serde data model and writes nothing. It answers
/// `is_human_readable` as postcard does, so a type takes the same branch in both.
struct Probe;

type Done = Result<(), Captured>;

macro_rules! accept {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Done { Ok(()) })*
    };
}

impl ser::Serializer for Probe {
    type Ok = ();
    type Error = Captured;
    type SerializeSeq = Probe;
    type SerializeTuple = Probe;
    type SerializeTupleStruct = Probe;
    type SerializeTupleVariant = Probe;
    type SerializeMap = Probe;
    type SerializeStruct = Probe;
    type SerializeStructVariant = Probe;

    accept!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> Done {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Done {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Done {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Done {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Done {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Probe, Captured> {
        Ok(Probe)
    }
    fn serialize_tuple(self, _: usize) -> Result<Probe, Captured> {
        Ok(Probe)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Probe, Captured> {
        Ok(Probe)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Probe, Captured> {
        Ok(Probe)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Probe, Captured> {
        Ok(Probe)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Probe, Captured> {
        Ok(Probe)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Probe, Captured> {
        Ok(Probe)
    }
    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Done {
        // As postcard does: format into nothing; a failing `Display` is not a custom error.
        struct Discard;
        impl fmt::Write for Discard {
            fn write_str(&mut self, _: &str) -> fmt::Result {
                Ok(())
            }
        }
        fmt::write(&mut Discard, format_args!("{value}")).map_err(|_| Captured(None))
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The compound parts of the probe: each element or field is probed in turn, and
/// nothing else happens (one macro for the six traits whose methods differ only in
/// name and, for structs, a field name the probe ignores).
macro_rules! probe_elements {
    ($($trait:ident::$method:ident($($name:ty)?)),* $(,)?) => {$(
        impl ser::$trait for Probe {
            type Ok = ();
            type Error = Captured;
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $name,)? value: &T) -> Done {
                value.serialize(Probe)
            }
            fn end(self) -> Done {
                Ok(())
            }
        }
    )*};
}

probe_elements!(
    SerializeSeq::serialize_element(),
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str),
);

impl ser::SerializeMap for Probe {
    type Ok = ();
    type Error = Captured;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Done {
        key.serialize(Probe)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(Probe)
    }
    fn end(self) -> Done {
        Ok(())
    }
}
