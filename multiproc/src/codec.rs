//! The wire format: serde values encoded with [postcard] in length-framed messages.
//!
//! Every message that crosses a process boundary is one *frame*:
//!
//! ```text
//! offset  size  field
//! 0       4     magic  b"MPF1"
//! 4       4     body length, little-endian u32 (<= the configured maximum)
//! 8       8     type fingerprint, little-endian u64 (FNV-1a of the Rust type name)
//! 16      len   body: the value, postcard-encoded
//! ```
//!
//! The magic catches a peer that writes garbage or a stream that lost its alignment; the
//! length lets the receiver refuse an oversized message *before* allocating for it; the
//! fingerprint turns "the peer sent a `String` where I expect a `u64`" into
//! [`CodecError::TypeMismatch`] instead of silently mis-decoding (postcard is not
//! self-describing). The fingerprint is strict: it names the exact Rust type, so a
//! frame of `&str` does not decode as `String`; typed channels use one `T` on both
//! ends, where this is what is wanted. Every failure is a typed [`CodecError`]; nothing here panics on
//! bad input, and nothing blocks (the I/O layers above decide about waiting).
//!
//! ```
//! use multiproc::codec::{self, CodecError, Limits};
//! let frame = codec::encode_frame(&("hello".to_string(), 42u32), &Limits::default()).unwrap();
//! let (value, used): ((String, u32), usize) = codec::decode_frame(&frame, &Limits::default()).unwrap();
//! assert_eq!(value, ("hello".to_string(), 42));
//! assert_eq!(used, frame.len());
//! // The wrong type is an error, not garbage:
//! let err = codec::decode_frame::<u64>(&frame, &Limits::default()).unwrap_err();
//! assert!(matches!(err, CodecError::TypeMismatch { .. }));
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

mod capture;
mod depth;
mod probe;
mod render;

pub(crate) use capture::{UNREPEATABLE, replaying};
pub(crate) use render::returned_err;

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"MPF1";
/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 16;
/// Default maximum body size of one message: 2 GiB (so that a 1 GiB payload and its
/// length prefix fit).
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 31;

/// Size limits applied when encoding and decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes (at most `u32::MAX`).
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

impl Limits {
    /// Limits with the given maximum body size.
    pub fn with_max_message(max_message: usize) -> Limits {
        Limits {
            max_message: max_message.min(u32::MAX as usize),
        }
    }
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer bytes than the frame needs: the peer stopped (or died) mid-message.
    #[error("truncated message: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The message is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Size of the message body.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The bytes do not start with a frame header: garbage or a desynchronised stream.
    #[error("not a multiproc frame (bad magic {found:02x?})")]
    BadMagic {
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// The frame holds a value of another type than the one asked for.
    #[error(
        "type mismatch: expected {expected} (fingerprint {expected_fingerprint:#x}), frame holds fingerprint {found:#x}"
    )]
    TypeMismatch {
        /// The type the receiver asked for.
        expected: &'static str,
        /// Its fingerprint.
        expected_fingerprint: u64,
        /// The fingerprint found in the frame.
        found: u64,
    },
    /// The body does not decode as the expected type.
    #[error("cannot decode {expected}: {}", detail(.message, .source))]
    Decode {
        /// The type the receiver asked for.
        expected: &'static str,
        /// What postcard reported.
        source: postcard::Error,
        /// The text of the `D::Error::custom(msg)` the decoding ended with (a user's
        /// `Deserialize` or visitor), which postcard's error does not keep.
        message: Option<String>,
    },
    /// The value nests deeper than the decoding thread's stack allows (a foreign body
    /// can nest a recursive type a level per byte): refused with
    /// [`STACK_KEPT`] bytes of stack still free, instead of overflowing it.
    #[error(
        "cannot decode {expected}: it nests deeper than this thread's stack allows (decoding stops with {} KiB of stack left)",
        STACK_KEPT / 1024
    )]
    TooDeep {
        /// The type the receiver asked for.
        expected: &'static str,
    },
    /// The body decoded but left bytes over.
    #[error("{extra} unexpected bytes after a {expected}")]
    TrailingBytes {
        /// The type decoded.
        expected: &'static str,
        /// Bytes left over.
        extra: usize,
    },
    /// Shared memory holds bytes no sender wrote: something outside multiproc wrote
    /// over a queue's memory.
    #[error("corrupt shared memory: {0}")]
    Corrupt(&'static str),
    /// The value could not be serialised.
    #[error("cannot encode {ty}: {}", detail(.message, .source))]
    Encode {
        /// The type being encoded.
        ty: &'static str,
        /// What postcard reported.
        source: postcard::Error,
        /// The text of the `S::Error::custom(msg)` the encoding ended with (a user's
        /// `Serialize`), which postcard's error does not keep.
        message: Option<String>,
    },
}

/// The user's message where there is one, else postcard's.
fn detail<'a>(
    message: &'a Option<String>,
    source: &'a postcard::Error,
) -> &'a dyn std::fmt::Display {
    match message {
        Some(m) => m,
        None => source,
    }
}

/// The error for a failed postcard encode of `value`. postcard drops the text of a
/// custom error; this recovers it by serialising `value` again through a probe (only
/// here, after a failure, so a successful encode costs nothing extra).
#[cold]
#[inline(never)]
pub(crate) fn encode_error<T: Serialize + ?Sized>(
    value: &T,
    source: postcard::Error,
) -> CodecError {
    let message = match source {
        postcard::Error::SerdeSerCustom => probe::custom_message(value),
        _ => None,
    };
    CodecError::Encode {
        ty: std::any::type_name::<T>(),
        source,
        message,
    }
}

/// The error for a failed postcard decode of `body` as a `T`, with the text of a custom
/// error recovered by decoding again through a wrapper that keeps it (only here).
///
/// The second run assumes decoding is repeatable. A handle is not: the first run took
/// its descriptor. Such a `Deserialize` checks [`replaying`] and answers
/// [`UNREPEATABLE`], and the error then has no message rather than a wrong one.
#[cold]
#[inline(never)]
fn decode_error<T: DeserializeOwned>(body: &[u8], source: postcard::Error) -> CodecError {
    let message = match source {
        postcard::Error::SerdeDeCustom => capture::custom_message::<T>(body),
        _ => None,
    };
    CodecError::Decode {
        expected: std::any::type_name::<T>(),
        source,
        message,
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Runs postcard over user serde code: a panic in a user's `Serialize` or
/// `Deserialize` comes back as its message, never as an unwind into the caller (a
/// `submit`, a `put`) or into a library thread (a pool's collector). Costs nothing
/// until something panics.
fn guarded<R>(run: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .map_err(|payload| panic_message(payload.as_ref()))
}

/// The error for an encode of a `T` that panicked.
#[cold]
#[inline(never)]
pub(crate) fn encode_panicked<T: ?Sized>(panic: String) -> CodecError {
    CodecError::Encode {
        ty: std::any::type_name::<T>(),
        source: postcard::Error::SerdeSerCustom,
        message: Some(format!("its Serialize panicked: {panic}")),
    }
}

/// The error for a decode of a `T` that panicked.
#[cold]
#[inline(never)]
fn decode_panicked<T>(panic: String) -> CodecError {
    CodecError::Decode {
        expected: std::any::type_name::<T>(),
        source: postcard::Error::SerdeDeCustom,
        message: Some(format!("its Deserialize panicked: {panic}")),
    }
}

/// The fingerprint of a type: FNV-1a of its `std::any::type_name`. Stable for one
/// executable and for executables built from the same source.
pub fn fingerprint<T: ?Sized>() -> u64 {
    fnv1a(std::any::type_name::<T>().as_bytes())
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Encodes `value` as a bare postcard body (no frame).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    guarded(|| postcard::to_stdvec(value))
        .map_err(encode_panicked::<T>)?
        .map_err(|source| encode_error(value, source))
}

/// The size of the bare postcard body of `value`, computed without writing it.
pub fn encoded_size<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    guarded(|| postcard::experimental::serialized_size(value))
        .map_err(encode_panicked::<T>)?
        .map_err(|source| encode_error(value, source))
}

/// Runs `put`, a transport's whole send of one `T`, as one guarded call: a panic in the
/// user's `Serialize` anywhere in it (in [`size_within`], in [`write_within`]) is
/// [`CodecError::Encode`] with its message. One guard lets postcard's two passes inline
/// into the transport's code (a guard each would keep them out of line). `put` must leave
/// its state sound wherever it unwinds: publish last, release locks by `Drop`.
pub(crate) fn encoding<T: ?Sized, R>(put: impl FnOnce() -> R) -> Result<R, CodecError> {
    guarded(put).map_err(encode_panicked::<T>)
}

/// [`encoded_size`] without a guard of its own: only inside [`encoding`].
#[inline]
pub(crate) fn size_within<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    postcard::experimental::serialized_size(value).map_err(|source| encode_error(value, source))
}

/// [`encode_to_slice`] without a guard of its own: only inside [`encoding`].
#[inline]
pub(crate) fn write_within<T: Serialize + ?Sized>(
    value: &T,
    out: &mut [u8],
) -> Result<(), CodecError> {
    let want = out.len();
    let used = postcard::to_slice(value, out)
        .map(|used| used.len())
        .map_err(|source| encode_error(value, source))?;
    if used != want {
        return Err(encode_error(value, postcard::Error::SerializeBufferFull));
    }
    Ok(())
}

/// Writes the bare postcard body of `value` into `out`, which must be exactly
/// [`encoded_size`] bytes long (a value whose encoding changes between the two calls is
/// an encode error).
pub fn encode_to_slice<T: Serialize + ?Sized>(value: &T, out: &mut [u8]) -> Result<(), CodecError> {
    let want = out.len();
    let used = guarded(|| postcard::to_slice(value, out).map(|used| used.len()))
        .map_err(encode_panicked::<T>)?
        .map_err(|source| encode_error(value, source))?;
    if used != want {
        return Err(encode_error(value, postcard::Error::SerializeBufferFull));
    }
    Ok(())
}

/// Appends the bare postcard body of `value` to `out` (for transports that write their
/// own headers in front of it without copying the body again).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    let written = guarded(|| postcard::to_io(value, &mut *out).map(drop));
    if !matches!(written, Ok(Ok(()))) {
        out.truncate(start);
    }
    written
        .map_err(encode_panicked::<T>)?
        .map_err(|source| encode_error(value, source))
}

/// Stack a decode leaves free: a value that would nest deeper is
/// [`CodecError::TooDeep`].
pub const STACK_KEPT: usize = depth::KEEP;

/// Decodes a bare postcard body that must hold exactly one `T`.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let expected = std::any::type_name::<T>();
    let (value, rest) = decode_first::<T>(body)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes {
            expected,
            extra: rest.len(),
        });
    }
    Ok(value)
}

/// Decodes one `T` from the start of `body` and returns it with the bytes after it (for
/// bodies that hold values one after another, such as a pool's chunk of items).
pub(crate) fn decode_first<T: DeserializeOwned>(body: &[u8]) -> Result<(T, &[u8]), CodecError> {
    let refused = std::cell::Cell::new(false);
    let taken = guarded(|| {
        let mut inner = postcard::Deserializer::from_bytes(body);
        let value = T::deserialize(depth::Bounded {
            inner: &mut inner,
            refused: &refused,
        })?;
        Ok((value, inner.finalize()?))
    })
    .map_err(decode_panicked::<T>)?;
    taken.map_err(|source| {
        if refused.get() {
            CodecError::TooDeep {
                expected: std::any::type_name::<T>(),
            }
        } else {
            decode_error::<T>(body, source)
        }
    })
}

/// Appends one frame holding `value` to `out`.
pub fn encode_frame_into<T: Serialize + ?Sized>(
    value: &T,
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let body = guarded(|| postcard::to_io(value, &mut *out).map(drop));
    match body {
        Ok(Ok(())) => {}
        Ok(Err(source)) => {
            out.truncate(start);
            return Err(encode_error(value, source));
        }
        Err(panic) => {
            out.truncate(start);
            return Err(encode_panicked::<T>(panic));
        }
    }
    let size = out.len() - start - HEADER_LEN;
    if size > limits.max_message || size > u32::MAX as usize {
        out.truncate(start);
        return Err(CodecError::Oversized {
            size,
            max: limits.max_message,
        });
    }
    write_header(
        &mut out[start..start + HEADER_LEN],
        size,
        fingerprint::<T>(),
    );
    Ok(())
}

/// One frame holding `value`.
pub fn encode_frame<T: Serialize + ?Sized>(
    value: &T,
    limits: &Limits,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_frame_into(value, limits, &mut out)?;
    Ok(out)
}

/// The header of a frame whose body is `len` bytes of a value with fingerprint `fp`,
/// for transports that assemble frames themselves.
pub fn header(len: usize, fp: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    write_header(&mut h, len, fp);
    h
}

fn write_header(header: &mut [u8], size: usize, fp: u64) {
    header[0..4].copy_from_slice(&MAGIC);
    header[4..8].copy_from_slice(&(size as u32).to_le_bytes());
    header[8..16].copy_from_slice(&fp.to_le_bytes());
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Body length in bytes.
    pub len: usize,
    /// Type fingerprint of the body.
    pub fingerprint: u64,
}

/// Parses a frame header from the start of `bytes`, checking magic and size limit.
pub fn parse_header(bytes: &[u8], limits: &Limits) -> Result<Header, CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::Truncated {
            needed: HEADER_LEN,
            got: bytes.len(),
        });
    }
    let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(CodecError::BadMagic { found: magic });
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if len > limits.max_message {
        return Err(CodecError::Oversized {
            size: len,
            max: limits.max_message,
        });
    }
    let fingerprint = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    Ok(Header { len, fingerprint })
}

/// Decodes the frame at the start of `bytes` as a `T`. Returns the value and the number
/// of bytes the frame occupied.
pub fn decode_frame<T: DeserializeOwned>(
    bytes: &[u8],
    limits: &Limits,
) -> Result<(T, usize), CodecError> {
    let header = parse_header(bytes, limits)?;
    let total = HEADER_LEN + header.len;
    if bytes.len() < total {
        return Err(CodecError::Truncated {
            needed: total,
            got: bytes.len(),
        });
    }
    let expected_fingerprint = fingerprint::<T>();
    if header.fingerprint != expected_fingerprint {
        return Err(CodecError::TypeMismatch {
            expected: std::any::type_name::<T>(),
            expected_fingerprint,
            found: header.fingerprint,
        });
    }
    Ok((decode(&bytes[HEADER_LEN..total])?, total))
}

/// How many bytes the frame at the start of `bytes` needs in all, once its header is
/// complete (`Ok(None)` while fewer than [`HEADER_LEN`] bytes are there).
pub fn frame_len(bytes: &[u8], limits: &Limits) -> Result<Option<usize>, CodecError> {
    if bytes.len() < HEADER_LEN {
        return Ok(None);
    }
    Ok(Some(HEADER_LEN + parse_header(bytes, limits)?.len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let limits = Limits::default();
        let frame = encode_frame(&vec![1u8, 2, 3], &limits).unwrap();
        let (v, n): (Vec<u8>, usize) = decode_frame(&frame, &limits).unwrap();
        assert_eq!((v, n), (vec![1, 2, 3], frame.len()));
        assert!(matches!(
            decode_frame::<Vec<u8>>(&frame[..frame.len() - 1], &limits),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode_frame::<Vec<u8>>(&frame, &Limits::with_max_message(2)),
            Err(CodecError::Oversized { size: 4, max: 2 })
        ));
        assert!(matches!(
            encode_frame(&vec![0u8; 10], &Limits::with_max_message(4)),
            Err(CodecError::Oversized { .. })
        ));
    }
}
