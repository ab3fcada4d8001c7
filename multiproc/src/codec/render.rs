//! Telling a returned `Result::Err` apart, and showing its error as `Debug` would.
//!
//! A process target is any `fn(A) -> R` with `R: Serialize`; Rust has no specialisation,
//! so the child cannot ask "is `R` a `Result`?" of the type. It asks the value: serde
//! writes a std `Result::Err(e)` as the newtype variant `Result::Err` (index 1), and
//! [`returned_err`] runs the value through a serializer that stops at the first call,
//! answering only for that one. The error `e` is then written out by [`Render`], a
//! serializer that produces what `#[derive(Debug)]` prints for the same type (`"text"`,
//! `NotFound { path: "a" }`, `Some(3)`, `[1, 2]`), so the child can print
//! `Error: {e:?}` as a Rust `main` returning `Err` does (`std::process::Termination`).
//! A user enum that is itself named `Result` with an `Err` variant at index 1 counts too.

use std::fmt::{self, Display, Write as _};

use serde::ser::{self, Impossible, Serialize};

/// `Some(text)` if `value` is a `Result::Err(e)`, `text` being `e` rendered as `Debug`
/// would. Costs one call for any other value. A `Serialize` of `e` that fails or panics
/// here leaves a placeholder, never an unwind.
pub(crate) fn returned_err<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    let run = std::panic::AssertUnwindSafe(|| value.serialize(TopLevel));
    match std::panic::catch_unwind(run) {
        Ok(Ok(text)) => Some(text),
        _ => None,
    }
}

/// The error `e` of a returned `Err(e)`, as `{e:?}` would print for a derived `Debug`.
fn render<T: Serialize + ?Sized>(e: &T) -> String {
    // Human-readable first (an address as `"127.0.0.1"`, not its bytes), then as the
    // codec encoded it, which is known to work.
    for human in [true, false] {
        let mut out = String::new();
        let run = std::panic::AssertUnwindSafe(|| {
            e.serialize(Render {
                out: &mut out,
                human,
            })
        });
        if let Ok(Ok(())) = std::panic::catch_unwind(run) {
            return out;
        }
    }
    format!("<a {} that could not be shown>", std::any::type_name::<T>())
}

/// The serializers' error: not an `Err` at the top, or a user's `Serialize` failed.
#[derive(Debug)]
struct Stop(String);

impl Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<M: Display>(msg: M) -> Self {
        Stop(msg.to_string())
    }
}

fn not_err<T>() -> Result<T, Stop> {
    Err(Stop(String::new()))
}

/// Answers only for the newtype variant `Result::Err`; everything else stops at once.
struct TopLevel;

macro_rules! refuse {
    ($($method:ident($($ty:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $ty),*) -> Result<String, Stop> { not_err() })*
    };
}

impl ser::Serializer for TopLevel {
    type Ok = String;
    type Error = Stop;
    type SerializeSeq = Impossible<String, Stop>;
    type SerializeTuple = Impossible<String, Stop>;
    type SerializeTupleStruct = Impossible<String, Stop>;
    type SerializeTupleVariant = Impossible<String, Stop>;
    type SerializeMap = Impossible<String, Stop>;
    type SerializeStruct = Impossible<String, Stop>;
    type SerializeStructVariant = Impossible<String, Stop>;

    refuse!(
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
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, Stop> {
        not_err()
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<String, Stop> {
        not_err()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<String, Stop> {
        if (name, index, variant) == ("Result", 1, "Err") {
            Ok(render(value))
        } else {
            not_err()
        }
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
        not_err()
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stop> {
        not_err()
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Stop> {
        not_err()
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Stop> {
        not_err()
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
        not_err()
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Stop> {
        not_err()
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Stop> {
        not_err()
    }
    fn collect_str<T: Display + ?Sized>(self, _: &T) -> Result<String, Stop> {
        not_err()
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Writes a value as `#[derive(Debug)]` shows it.
struct Render<'a> {
    out: &'a mut String,
    human: bool,
}

type Done = Result<(), Stop>;

macro_rules! debug {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Done {
            let _ = write!(self.out, "{v:?}");
            Ok(())
        })*
    };
}

impl<'a> Render<'a> {
    fn nested<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(Render {
            out: self.out,
            human: self.human,
        })
    }

    /// Opens a compound: `head` first (a name and its bracket), separated by `", "`,
    /// closed by `close` (a struct with no fields shows as its bare name).
    fn open(self, head: &str, bracket: &'static str, close: &'static str) -> Compound<'a> {
        self.out.push_str(head);
        let bare_if_empty = bracket == " { ";
        if !bare_if_empty {
            self.out.push_str(bracket);
        }
        Compound {
            render: self,
            first: true,
            bracket: if bare_if_empty { bracket } else { "" },
            close,
        }
    }
}

impl<'a> ser::Serializer for Render<'a> {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    debug!(
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
    );

    fn serialize_none(self) -> Done {
        self.out.push_str("None");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(mut self, value: &T) -> Done {
        self.out.push_str("Some(");
        self.nested(value)?;
        self.out.push(')');
        Ok(())
    }
    fn serialize_unit(self) -> Done {
        self.out.push_str("()");
        Ok(())
    }
    fn serialize_unit_struct(self, name: &'static str) -> Done {
        self.out.push_str(name);
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Done {
        self.out.push_str(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        mut self,
        name: &'static str,
        value: &T,
    ) -> Done {
        self.out.push_str(name);
        self.out.push('(');
        self.nested(value)?;
        self.out.push(')');
        Ok(())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Done {
        self.out.push_str(variant);
        self.out.push('(');
        self.nested(value)?;
        self.out.push(')');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, Stop> {
        Ok(self.open("", "[", "]"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, Stop> {
        Ok(self.open("", "(", ")"))
    }
    fn serialize_tuple_struct(self, name: &'static str, _: usize) -> Result<Compound<'a>, Stop> {
        Ok(self.open(name, "(", ")"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Stop> {
        Ok(self.open(variant, "(", ")"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, Stop> {
        Ok(self.open("", "{", "}"))
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Compound<'a>, Stop> {
        Ok(self.open(name, " { ", " }"))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Stop> {
        Ok(self.open(variant, " { ", " }"))
    }
    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Done {
        let _ = write!(self.out, "{:?}", value.to_string());
        Ok(())
    }
    fn is_human_readable(&self) -> bool {
        self.human
    }
}

/// The elements of a sequence, tuple, map or struct being rendered.
struct Compound<'a> {
    render: Render<'a>,
    first: bool,
    /// For structs: the `" { "` written before the first field only (none: bare name).
    bracket: &'static str,
    close: &'static str,
}

impl Compound<'_> {
    fn separate(&mut self) {
        if self.first {
            self.render.out.push_str(self.bracket);
            self.first = false;
        } else {
            self.render.out.push_str(", ");
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.separate();
        self.render.nested(value)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Done {
        self.separate();
        self.render.out.push_str(key);
        self.render.out.push_str(": ");
        self.render.nested(value)
    }

    fn close(self) -> Done {
        if !self.first || self.bracket.is_empty() {
            // Not a struct without fields, which shows as its bare name.
            self.render.out.push_str(self.close);
        }
        Ok(())
    }
}

/// The sequence-like parts: one macro for the four traits whose methods differ only in
/// name.
macro_rules! render_elements {
    ($($trait:ident::$method:ident),* $(,)?) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Stop;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
                self.element(value)
            }
            fn end(self) -> Done {
                self.close()
            }
        }
    )*};
}

render_elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

macro_rules! render_fields {
    ($($trait:ident),* $(,)?) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Stop;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Done {
                self.field(key, value)
            }
            fn end(self) -> Done {
                self.close()
            }
        }
    )*};
}

render_fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Done {
        self.element(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.render.out.push_str(": ");
        self.render.nested(value)
    }
    fn end(self) -> Done {
        self.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, serde::Serialize)]
    enum Failure {
        NotFound { path: String, tries: u32 },
        Busy(u8, char),
        Gone,
        Wrapped(Inner),
    }

    #[derive(Debug, serde::Serialize)]
    struct Inner(Option<f64>);

    #[derive(Debug, serde::Serialize)]
    struct Empty {}

    #[derive(Debug, serde::Serialize)]
    struct Unit;

    fn shown<E: std::fmt::Debug + Serialize>(e: E) -> String {
        let value: Result<u32, E> = Err(e);
        returned_err(&value).expect("an Err")
    }

    /// The rendering is what `{:?}` prints for derived `Debug` impls.
    #[test]
    fn an_err_renders_as_its_derived_debug() {
        let cases: Vec<(String, String)> = vec![
            (format!("{:?}", "it broke"), shown("it broke")),
            (
                format!("{:?}", "a \"quote\"\n".to_string()),
                shown("a \"quote\"\n".to_string()),
            ),
            (
                format!(
                    "{:?}",
                    Failure::NotFound {
                        path: "/x".into(),
                        tries: 3
                    }
                ),
                shown(Failure::NotFound {
                    path: "/x".into(),
                    tries: 3,
                }),
            ),
            (
                format!("{:?}", Failure::Busy(7, 'q')),
                shown(Failure::Busy(7, 'q')),
            ),
            (format!("{:?}", Failure::Gone), shown(Failure::Gone)),
            (
                format!("{:?}", Failure::Wrapped(Inner(Some(1.0)))),
                shown(Failure::Wrapped(Inner(Some(1.0)))),
            ),
            (format!("{:?}", Empty {}), shown(Empty {})),
            (format!("{:?}", Unit), shown(Unit)),
            (format!("{:?}", vec![1, 2, 3]), shown(vec![1, 2, 3])),
            (format!("{:?}", (1, "a")), shown((1, "a"))),
            (
                format!("{:?}", BTreeMap::from([("k", -1i64)])),
                shown(BTreeMap::from([("k", -1i64)])),
            ),
            (format!("{:?}", ()), shown(())),
        ];
        for (want, got) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn anything_but_an_err_is_none() {
        assert_eq!(returned_err(&Ok::<u32, String>(1)), None);
        assert_eq!(returned_err(&"Err"), None);
        assert_eq!(returned_err(&Some(Err::<u8, u8>(1))), None);
        assert_eq!(returned_err(&vec![Err::<u8, u8>(1)]), None);
    }

    /// An error whose `Serialize` panics leaves a placeholder, not an unwind.
    #[test]
    fn an_err_that_cannot_be_shown_has_a_placeholder() {
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                panic!("no")
            }
        }
        let text = returned_err(&Err::<(), _>(Refuses)).expect("an Err");
        assert!(
            text.contains("Refuses") && text.contains("could not be shown"),
            "{text}"
        );
    }
}
