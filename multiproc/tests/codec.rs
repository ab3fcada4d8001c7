//! The wire format refuses bad input with typed errors: never a panic, never a hang
//! (issue "codec": truncated, oversized, mistyped and garbage frames).

use multiproc::codec::{self, CodecError, HEADER_LEN, Limits};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    items: Vec<(String, u32)>,
    note: Option<String>,
}

fn order() -> Order {
    Order {
        id: 7,
        items: vec![("tea".into(), 2), ("cake".into(), 1)],
        note: None,
    }
}

#[test]
fn round_trip_of_a_struct() {
    let limits = Limits::default();
    let frame = codec::encode_frame(&order(), &limits).unwrap();
    let (back, used): (Order, usize) = codec::decode_frame(&frame, &limits).unwrap();
    assert_eq!(back, order());
    assert_eq!(used, frame.len());
}

#[test]
fn every_truncation_is_reported_as_truncated() {
    let limits = Limits::default();
    let frame = codec::encode_frame(&order(), &limits).unwrap();
    for cut in 0..frame.len() {
        match codec::decode_frame::<Order>(&frame[..cut], &limits) {
            Err(CodecError::Truncated { needed, got }) => {
                assert_eq!(got, cut);
                assert!(needed > got);
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn oversized_messages_are_refused_on_both_sides() {
    let small = Limits::with_max_message(16);
    let big = vec![0u8; 1024];
    assert!(matches!(
        codec::encode_frame(&big, &small),
        Err(CodecError::Oversized { max: 16, .. })
    ));
    // A header announcing more than the limit is refused before any body arrives.
    let frame = codec::encode_frame(&big, &Limits::default()).unwrap();
    assert!(matches!(
        codec::decode_frame::<Vec<u8>>(&frame[..HEADER_LEN], &small),
        Err(CodecError::Oversized { .. })
    ));
    assert!(matches!(
        codec::frame_len(&frame, &small),
        Err(CodecError::Oversized { .. })
    ));
}

#[test]
fn a_value_of_another_type_is_a_type_mismatch() {
    let limits = Limits::default();
    let frame = codec::encode_frame(&"a string".to_string(), &limits).unwrap();
    match codec::decode_frame::<u64>(&frame, &limits) {
        Err(CodecError::TypeMismatch { expected, .. }) => assert_eq!(expected, "u64"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_is_bad_magic() {
    let junk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(matches!(
        codec::decode_frame::<Order>(junk, &Limits::default()),
        Err(CodecError::BadMagic { .. })
    ));
}

#[test]
fn a_body_that_does_not_decode_is_a_decode_error() {
    // A well-formed header with the right fingerprint around a body that is not an Order.
    let limits = Limits::default();
    let mut frame = codec::encode_frame(&order(), &limits).unwrap();
    for b in &mut frame[HEADER_LEN..] {
        *b = 0xff;
    }
    assert!(matches!(
        codec::decode_frame::<Order>(&frame, &limits),
        Err(CodecError::Decode { .. })
    ));
    let bare = codec::encode(&1u8).unwrap();
    let mut longer = bare.clone();
    longer.push(0);
    assert!(matches!(
        codec::decode::<u8>(&longer),
        Err(CodecError::TrailingBytes { extra: 1, .. })
    ));
}

/// Random bytes, and random corruptions of a valid frame, never panic.
#[test]
fn fuzzed_input_never_panics() {
    let limits = Limits::with_max_message(1 << 20);
    let valid = codec::encode_frame(&order(), &limits).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let mut bytes = if round % 2 == 0 {
            let len = (next() % 96) as usize;
            (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            valid.clone()
        };
        if !bytes.is_empty() {
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
        }
        let _ = codec::decode_frame::<Order>(&bytes, &limits);
        let _ = codec::decode_frame::<(u8, String, Vec<u64>)>(&bytes, &limits);
        let _ = codec::frame_len(&bytes, &limits);
    }
}

/// Serialises as a `u8` up to the point where it refuses: a user impl that returns
/// `Err(S::Error::custom("bad"))`.
#[derive(Debug)]
struct RefusesEncode;

impl Serialize for RefusesEncode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeTuple};
        let mut t = serializer.serialize_tuple(2)?;
        t.serialize_element(&1u8)?;
        Err(S::Error::custom("bad"))
    }
}

/// Encodes as a `u8`; its `Deserialize` reads it and then refuses with `custom("bad")`.
#[derive(Debug, Serialize)]
struct RefusesDecode(u8);

impl<'de> Deserialize<'de> for RefusesDecode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        u8::deserialize(deserializer)?;
        Err(D::Error::custom("bad"))
    }
}

/// Encodes as a `u8`; its visitor (called by postcard) refuses with `custom("bad")`.
#[derive(Debug, Serialize)]
struct RefusesInVisitor(u8);

impl<'de> Deserialize<'de> for RefusesInVisitor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RefusesInVisitor;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a u8")
            }
            fn visit_u8<E: serde::de::Error>(self, _: u8) -> Result<RefusesInVisitor, E> {
                Err(E::custom("bad"))
            }
        }
        deserializer.deserialize_u8(V)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Nest<T> {
    id: u32,
    inner: T,
}

#[derive(Debug, Serialize, Deserialize)]
enum Choice<T> {
    Plain(u8),
    Tuple(u8, T),
    Named { id: u8, inner: T },
}

fn assert_carries_bad(err: &CodecError, verb: &str, ty: &str) {
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot {verb} "))
            && text.contains(ty)
            && text.ends_with(": bad"),
        "{text}"
    );
    match err {
        CodecError::Encode { message, .. } | CodecError::Decode { message, .. } => {
            assert_eq!(message.as_deref(), Some("bad"))
        }
        other => panic!("{other:?}"),
    }
}

fn assert_every_encoder_carries_bad<T: Serialize + ?Sized>(value: &T) {
    let ty = std::any::type_name::<T>();
    assert_carries_bad(&codec::encode(value).unwrap_err(), "encode", ty);
    assert_carries_bad(&codec::encoded_size(value).unwrap_err(), "encode", ty);
    assert_carries_bad(
        &codec::encode_to_slice(value, &mut [0u8; 64]).unwrap_err(),
        "encode",
        ty,
    );
    let mut out = vec![9u8];
    assert_carries_bad(
        &codec::encode_into(value, &mut out).unwrap_err(),
        "encode",
        ty,
    );
    assert_carries_bad(
        &codec::encode_frame_into(value, &Limits::default(), &mut out).unwrap_err(),
        "encode",
        ty,
    );
    assert_eq!(out, [9], "a failed encode leaves no bytes");
}

/// codec-msg: the message of a user's `S::Error::custom` reaches the error, top level
/// and nested in a Vec, a struct, an enum and a map, from every encoder.
#[test]
fn a_custom_encode_error_keeps_the_users_message() {
    use std::collections::BTreeMap;
    assert_every_encoder_carries_bad(&RefusesEncode);
    assert_every_encoder_carries_bad(&vec![RefusesEncode]);
    assert_every_encoder_carries_bad(&Nest {
        id: 1,
        inner: RefusesEncode,
    });
    assert_every_encoder_carries_bad(&Choice::Tuple(1, RefusesEncode));
    assert_every_encoder_carries_bad(&Choice::Named {
        id: 1,
        inner: RefusesEncode,
    });
    assert_every_encoder_carries_bad(&BTreeMap::from([(1u8, RefusesEncode)]));
    assert_every_encoder_carries_bad(&Some(RefusesEncode));
}

fn assert_decode_carries_bad<T, W>(written: &W)
where
    T: serde::de::DeserializeOwned + std::fmt::Debug,
    W: Serialize,
{
    let ty = std::any::type_name::<T>();
    let body = codec::encode(written).unwrap();
    assert_carries_bad(&codec::decode::<T>(&body).unwrap_err(), "decode", ty);
}

/// codec-msg: the message of a user's `D::Error::custom` (in its `Deserialize` or in
/// its visitor) reaches the error, top level and nested.
#[test]
fn a_custom_decode_error_keeps_the_users_message() {
    use std::collections::BTreeMap;
    macro_rules! each {
        ($($r:ident),*) => {$(
            assert_decode_carries_bad::<$r, _>(&$r(1));
            assert_decode_carries_bad::<Vec<$r>, _>(&vec![$r(1)]);
            assert_decode_carries_bad::<Nest<$r>, _>(&Nest { id: 1, inner: $r(1) });
            assert_decode_carries_bad::<Choice<$r>, _>(&Choice::Tuple(1, $r(1)));
            assert_decode_carries_bad::<Choice<$r>, _>(&Choice::Named { id: 1, inner: $r(1) });
            assert_decode_carries_bad::<BTreeMap<u8, $r>, _>(&BTreeMap::from([(1u8, $r(1))]));
            assert_decode_carries_bad::<Option<$r>, _>(&Some($r(1)));
        )*};
    }
    each!(RefusesDecode, RefusesInVisitor);
    // Through a frame too.
    let frame = codec::encode_frame(&5u8, &Limits::default()).unwrap();
    let mut frame = frame;
    frame[8..16].copy_from_slice(&codec::fingerprint::<RefusesDecode>().to_le_bytes());
    let err = codec::decode_frame::<RefusesDecode>(&frame, &Limits::default()).unwrap_err();
    assert_carries_bad(&err, "decode", "RefusesDecode");
    // postcard's own errors are unchanged and carry no message.
    match codec::decode::<u16>(&[0xff]) {
        Err(CodecError::Decode { message: None, .. }) => {}
        other => panic!("{other:?}"),
    }
}

/// A `Serialize` or `Deserialize` that panics is user code gone wrong: every encoder
/// and decoder turns the panic into a typed error carrying its message, never an
/// unwind into the caller.
#[derive(Debug)]
struct Panicky;

impl Serialize for Panicky {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("serialize went wrong")
    }
}

impl<'de> Deserialize<'de> for Panicky {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("deserialize went wrong")
    }
}

#[test]
fn a_panicking_serialize_or_deserialize_is_a_typed_error() {
    let encode_panicked = |e: CodecError| match e {
        CodecError::Encode {
            message: Some(m), ..
        } => assert!(m.contains("serialize went wrong"), "{m}"),
        other => panic!("{other:?}"),
    };
    let nested = vec![Some(Panicky)];
    encode_panicked(codec::encode(&Panicky).unwrap_err());
    encode_panicked(codec::encode(&nested).unwrap_err());
    encode_panicked(codec::encoded_size(&Panicky).unwrap_err());
    encode_panicked(codec::encode_to_slice(&Panicky, &mut [0u8; 16]).unwrap_err());
    let mut out = b"kept".to_vec();
    encode_panicked(codec::encode_into(&Panicky, &mut out).unwrap_err());
    assert_eq!(out, b"kept", "nothing half-written is left");
    encode_panicked(codec::encode_frame_into(&Panicky, &Limits::default(), &mut out).unwrap_err());
    assert_eq!(out, b"kept");
    match codec::decode::<Panicky>(&[1]).unwrap_err() {
        CodecError::Decode {
            message: Some(m), ..
        } => assert!(m.contains("deserialize went wrong"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A frame announcing one `Panicky` in a Vec: its decoder panics inside the Vec.
    let body = [1u8, 0];
    let mut frame = codec::header(body.len(), codec::fingerprint::<Vec<Panicky>>()).to_vec();
    frame.extend_from_slice(&body);
    match codec::decode_frame::<Vec<Panicky>>(&frame, &Limits::default()).unwrap_err() {
        CodecError::Decode {
            message: Some(m), ..
        } => assert!(m.contains("deserialize went wrong"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// A recursive type, as a user's tree or `serde_json::Value`-like enum is.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Deep {
    End,
    Deeper(Box<Deep>),
    Pair(Vec<Deep>),
}

/// Issue 14: a hostile body nesting a recursive type a million levels deep (one byte a
/// level) must be a typed error, not a stack overflow that aborts the receiver; in a
/// thread with a small stack too. A value nested as deep as real data is decodes.
#[test]
fn nesting_deeper_than_the_stack_is_a_typed_error() {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            // Variant 1 (`Deeper`) a million times, then variant 0 (`End`).
            let mut body = vec![1u8; 1_000_000];
            body.push(0);
            let err = codec::decode::<Deep>(&body).unwrap_err();
            assert!(matches!(err, CodecError::TooDeep { .. }), "{err:?}");
            assert!(err.to_string().contains("nest"), "{err}");
            // Nested through a sequence: `Pair([Pair([...])])`.
            let mut body = Vec::new();
            for _ in 0..1_000_000 {
                body.extend_from_slice(&[2, 1]);
            }
            body.push(0);
            let err = codec::decode::<Deep>(&body).unwrap_err();
            assert!(matches!(err, CodecError::TooDeep { .. }), "{err:?}");
            // Framed, as every transport decodes it.
            let limits = Limits::default();
            let mut frame = codec::header(body.len(), codec::fingerprint::<Deep>()).to_vec();
            frame.extend_from_slice(&body);
            let err = codec::decode_frame::<Deep>(&frame, &limits).unwrap_err();
            assert!(matches!(err, CodecError::TooDeep { .. }), "{err:?}");
            // Real data decodes: 200 levels.
            let mut value = Deep::End;
            for _ in 0..200 {
                value = Deep::Deeper(Box::new(value));
            }
            let body = codec::encode(&value).unwrap();
            assert_eq!(codec::decode::<Deep>(&body).unwrap(), value);
        })
        .unwrap()
        .join()
        .unwrap();
}
