//! What the fuzz targets (`fuzz/` in the repository) and the decoder tests
//! (`tests/fuzz_decoders.rs`) need to drive the decoders that face foreign bytes from
//! outside the crate. Not part of the API: hidden from the docs, and it may change.
//!
//! The codec and pipes are reached through their public functions; only the manager's
//! request type is private, so this module speaks for it.

use serde_bytes::ByteBuf;

use crate::codec;
use crate::manager::protocol::{Kind, Op, Request};

/// The fingerprint a manager's server expects in the header of a request frame (TCP).
pub fn manager_request_fingerprint() -> u64 {
    codec::fingerprint::<Request>()
}

/// Postcard bodies (no frame header) of well-formed manager requests of many kinds, for
/// a fuzzer to mutate. None of them shuts the server down or names a function.
pub fn manager_request_samples() -> Vec<Vec<u8>> {
    let b = |bytes: &[u8]| ByteBuf::from(bytes.to_vec());
    let requests = [
        Request::Hello { session: 7 },
        Request::Create {
            kind: Kind::List(vec![b(b"a"), b(b"bc")]),
            ty: 1,
            name: None,
        },
        Request::Create {
            kind: Kind::Dict(vec![(b(b"k"), b(b"v"))]),
            ty: 2,
            name: Some("d".into()),
        },
        Request::Create {
            kind: Kind::Queue { maxsize: 3 },
            ty: 3,
            name: Some("q".into()),
        },
        Request::Create {
            kind: Kind::Lock,
            ty: 4,
            name: None,
        },
        Request::Create {
            kind: Kind::Event,
            ty: 5,
            name: None,
        },
        Request::Create {
            kind: Kind::Cell(b(b"x")),
            ty: 6,
            name: None,
        },
        Request::Call { id: 0, op: Op::Len },
        Request::Call {
            id: 0,
            op: Op::ListInsert(1, b(b"z")),
        },
        Request::Call {
            id: 1,
            op: Op::DictCompareAndSet {
                key: b(b"k"),
                expected: None,
                new: b(b"w"),
            },
        },
        Request::Call {
            id: 2,
            op: Op::QueuePut {
                item: b(b"i"),
                wait_ms: 1,
            },
        },
        Request::Call {
            id: 2,
            op: Op::QueueGet { wait_ms: 1 },
        },
        Request::Call {
            id: 3,
            op: Op::LockAcquire { wait_ms: 1 },
        },
        Request::Call {
            id: 3,
            op: Op::LockRelease,
        },
        Request::Call {
            id: 4,
            op: Op::EventWait { wait_ms: 1 },
        },
        Request::Call {
            id: 5,
            op: Op::CellSwap(b(b"y")),
        },
        Request::Call {
            id: 0,
            op: Op::ListExtend(vec![b(b"1"), b(b"2")]),
        },
    ];
    requests
        .iter()
        .map(|r| codec::encode(r).expect("a request encodes"))
        .collect()
}

/// Whether a fuzzer may send `body` to a server it wants serving afterwards: `false`
/// for a request that shuts the server down, or that makes an object of a registered
/// type (its `make` is a function address the server calls: only this crate's own
/// client may name one), both of which an authenticated client may ask for.
pub fn manager_request_is_benign(body: &[u8]) -> bool {
    !matches!(
        codec::decode::<Request>(body),
        Ok(Request::Shutdown
            | Request::Create {
                kind: Kind::Custom { .. },
                ..
            })
    )
}
