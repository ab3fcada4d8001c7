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
