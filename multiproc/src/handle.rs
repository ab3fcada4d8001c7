//! Descriptors inside serde values.
//!
//! Handles such as a [`Connection`](crate::connection::Connection) wrap a file
//! descriptor. They can cross into another process only together with the descriptor
//! itself, which the kernel passes with `SCM_RIGHTS`. While a value is encoded for such
//! a crossing (a `Process` argument, a message on a `Connection`), a thread-local *sink*
//! is active: a handle's `Serialize` puts a duplicate of its descriptor there and writes
//! only its index. The transport sends the collected descriptors with the message; on
//! the other side a thread-local *source* holds the received descriptors while the
//! value is decoded, and a handle's `Deserialize` takes its descriptor back by index.
//!
//! Encoding a handle anywhere else (into bytes that no transport accompanies) is an
//! error, not a silently dangling number.

use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

thread_local! {
    static SINK: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static SOURCE: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Runs `encode` with a sink active; returns its result and the descriptors that the
/// handles inside the value put there.
pub(crate) fn collect_fds<R>(encode: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let previous = SINK.with(|s| s.borrow_mut().replace(Vec::new()));
    let result = encode();
    let fds = SINK
        .with(|s| std::mem::replace(&mut *s.borrow_mut(), previous))
        .unwrap_or_default();
    (result, fds)
}

/// Runs `decode` with `fds` available to the handles inside the value. Descriptors no
/// handle took are closed afterwards.
pub(crate) fn provide_fds<R>(fds: Vec<OwnedFd>, decode: impl FnOnce() -> R) -> R {
    let table = fds.into_iter().map(Some).collect();
    let previous = SOURCE.with(|s| s.borrow_mut().replace(table));
    let result = decode();
    SOURCE.with(|s| *s.borrow_mut() = previous);
    result
}

/// Serialises a descriptor as its index in the active sink.
pub(crate) fn serialize_fd<S: Serializer>(
    fd: BorrowedFd<'_>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let index = SINK.with(|s| -> Result<u32, String> {
        let mut sink = s.borrow_mut();
        let sink = sink
            .as_mut()
            .ok_or("a handle holding a descriptor can only be sent to another process as a Process argument or through a Connection")?;
        let dup = crate::sys::fd::dup_at_least(fd.as_fd(), 0).map_err(|e| e.to_string())?;
        sink.push(dup);
        Ok(sink.len() as u32 - 1)
    });
    match index {
        Ok(i) => i.serialize(serializer),
        Err(msg) => Err(serde::ser::Error::custom(msg)),
    }
}

/// Deserialises a descriptor from its index in the active source.
pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<OwnedFd, D::Error> {
    let index = u32::deserialize(deserializer)? as usize;
    SOURCE.with(|s| {
        let mut source = s.borrow_mut();
        let slot = source.as_mut().and_then(|table| table.get_mut(index));
        let taken = slot.as_ref().is_some_and(|fd| fd.is_none());
        slot.and_then(Option::take).ok_or_else(|| {
            if taken && crate::codec::replaying() {
                // The codec decodes a failed message again for its error text: the
                // first run took this descriptor.
                serde::de::Error::custom(crate::codec::UNREPEATABLE)
            } else {
                serde::de::Error::custom(format!(
                    "descriptor #{index} did not arrive with the message"
                ))
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, CodecError};

    /// Decodes as a `u8`, then refuses.
    struct Refuses;

    impl<'de> Deserialize<'de> for Refuses {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            u8::deserialize(deserializer)?;
            Err(serde::de::Error::custom("bad"))
        }
    }

    #[derive(Deserialize)]
    struct Carrier {
        #[serde(deserialize_with = "deserialize_fd")]
        _fd: OwnedFd,
        _then: Refuses,
    }

    /// The codec decodes a failed message again to recover its error text; a handle
    /// whose descriptor the first run took must not make that text a wrong one.
    #[test]
    fn a_failed_decode_after_a_handle_has_no_wrong_message() {
        let (fd, _other) = rustix::pipe::pipe().unwrap();
        let body = codec::encode(&(0u32, 1u8)).unwrap();
        let err = provide_fds(vec![fd], || codec::decode::<Carrier>(&body))
            .err()
            .unwrap();
        assert!(
            matches!(err, CodecError::Decode { message: None, .. }),
            "{err}"
        );
        // Without descriptors, the handle's own message is the error's.
        let err = codec::decode::<Carrier>(&body).err().unwrap();
        assert!(err.to_string().contains("did not arrive"), "{err}");
    }
}
