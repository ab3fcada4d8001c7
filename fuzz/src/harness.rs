//! The decoders of multiproc that face foreign bytes, each driven by one input and
//! checked for what the library promises about hostile bytes: a value or a typed error,
//! soon, with memory bounded by the bytes that came, and the peer (a pipe end, a
//! manager's server) still serving afterwards.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the deterministic
//! run in `cargo test` (`multiproc/tests/fuzz_decoders.rs`), which both include this
//! file by path.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use multiproc::StartMethod;
use multiproc::codec::{self, CodecError, HEADER_LEN, Limits};
use multiproc::connection::{Connection, RecvError, Sender, pipe};
use multiproc::manager::{Address, Manager};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long one input may take to be answered (a value, an error, the end) before the
/// harness calls it a hang. Generous: the box may be loaded.
pub(crate) const PROMPT: Duration = Duration::from_secs(20);

/// The key of the manager the harness attacks.
pub(crate) const KEY: &[u8] = b"fuzz key";

/// A user type with nesting: enums, options, maps, strings, boxes, recursion through a
/// `Vec`. Its depth is bounded only by the bytes, and postcard has no depth limit: a
/// value nested some 10 000 deep (40 KB) overflows a 2 MiB thread stack, so the harness
/// decodes it from short inputs only ([`NESTED_MAX`]; see the README's trust model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Nested {
    Leaf(u8),
    Named {
        name: String,
        items: Vec<Option<Nested>>,
    },
    Pair(Box<(i64, u16)>, char),
    Map(BTreeMap<String, Vec<u8>>),
    Unit,
}

/// A struct around [`Nested`], as a user's message would be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: u64,
    pub(crate) flag: bool,
    pub(crate) label: Option<String>,
    pub(crate) nested: Nested,
    pub(crate) bytes: Vec<u8>,
}

/// The longest input decoded as a recursive type: at 4 bytes a level, 2 000 levels.
pub(crate) const NESTED_MAX: usize = 8 << 10;

/// A value of each shape, for seeds.
pub(crate) fn sample_record(i: u64) -> Record {
    let mut map = BTreeMap::new();
    map.insert("k".repeat(i as usize % 4), vec![i as u8; i as usize % 7]);
    Record {
        id: i,
        flag: i % 2 == 0,
        label: (i % 3 != 0).then(|| format!("record {i}")),
        nested: Nested::Named {
            name: "outer".into(),
            items: vec![
                Some(Nested::Leaf(i as u8)),
                None,
                Some(Nested::Pair(Box::new((-(i as i64), 7)), 'é')),
                Some(Nested::Map(map)),
                Some(Nested::Unit),
            ],
        },
        bytes: vec![0xAB; i as usize % 33],
    }
}

/// `body` under a frame header announcing it as a `T`.
pub(crate) fn framed<T>(body: &[u8]) -> Vec<u8> {
    let mut frame = codec::header(body.len(), codec::fingerprint::<T>()).to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Decodes `bytes` as a frame of `T`: a value or a typed error, and a value that
/// decoded encodes again to an equal value.
fn decode_as<T>(bytes: &[u8], limits: &Limits)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    if let Ok((value, used)) = codec::decode_frame::<T>(bytes, limits) {
        assert!(
            (HEADER_LEN..=bytes.len()).contains(&used),
            "{used} bytes used"
        );
        let again =
            codec::encode_frame(&value, &Limits::default()).expect("a decoded value encodes");
        let (back, n) = codec::decode_frame::<T>(&again, &Limits::default())
            .expect("a re-encoded value decodes");
        assert_eq!(back, value);
        assert_eq!(n, again.len());
    }
}

/// (a) The codec: `parse_header`, `frame_len` and `decode_frame` for several types, over
/// the bytes as they are and over the bytes as the body of a frame of each type (so
/// that they reach postcard past the fingerprint check).
pub(crate) fn codec_frames(data: &[u8]) {
    for limits in [Limits::default(), Limits::with_max_message(64)] {
        let header = codec::parse_header(data, &limits);
        let len = codec::frame_len(data, &limits);
        match (&header, &len) {
            (Ok(h), Ok(Some(n))) => {
                assert_eq!(*n, HEADER_LEN + h.len);
                assert!(h.len <= limits.max_message);
                assert_eq!(data[..4], codec::MAGIC);
            }
            (Err(CodecError::Truncated { needed, got }), Ok(None)) => {
                assert!(data.len() < HEADER_LEN);
                assert_eq!((*needed, *got), (HEADER_LEN, data.len()));
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            other => panic!("parse_header and frame_len disagree: {other:?}"),
        }
        decode_as::<u64>(data, &limits);
        decode_as::<String>(data, &limits);
        decode_as::<Vec<u8>>(data, &limits);
        if data.len() > NESTED_MAX {
            continue;
        }
        decode_as::<Record>(data, &limits);
        decode_as::<Vec<Nested>>(data, &limits);
        if let Some((selector, body)) = data.split_first() {
            match selector % 5 {
                0 => decode_as::<u64>(&framed::<u64>(body), &limits),
                1 => decode_as::<String>(&framed::<String>(body), &limits),
                2 => decode_as::<Vec<u8>>(&framed::<Vec<u8>>(body), &limits),
                3 => decode_as::<Record>(&framed::<Record>(body), &limits),
                _ => decode_as::<Vec<Nested>>(&framed::<Vec<Nested>>(body), &limits),
            }
        }
    }
}

/// A pipe message that carries a descriptor (a pipe end): the body names descriptors
/// by index, which foreign bytes may name without sending any.
pub(crate) type WithHandle = (u8, Option<Sender<u8>>);

/// The most a pipe input writes to the socket before reading (the rest is dropped):
/// the socket's buffer holds it, so the writer does not wait for the reader.
pub(crate) const PIPE_INPUT_MAX: usize = 64 << 10;

/// (b) A pipe's socket: `data[1..]` written to the raw socket of one end, then read by
/// the other end, of the type `data[0]` picks, until nothing more comes. Every read
/// gives a value or a typed error at once; when the writer goes, the reader learns it
/// (`Disconnected`, or the error that broke the stream), within [`PROMPT`]. Returns how
/// many messages were taken.
pub(crate) fn pipe_socket(data: &[u8]) -> usize {
    let Some((pick, stream)) = data.split_first() else {
        return 0;
    };
    let stream = &stream[..stream.len().min(PIPE_INPUT_MAX)];
    if stream.len() > NESTED_MAX && pick % 3 == 2 {
        return 0;
    }
    match pick % 3 {
        0 => pipe_socket_as::<WithHandle>(stream),
        1 => pipe_socket_as::<u64>(stream),
        _ => pipe_socket_as::<Record>(stream),
    }
}

fn pipe_socket_as<T: DeserializeOwned + Serialize + Debug>(data: &[u8]) -> usize {
    let (mine, theirs) = pipe::<T>().expect("a pipe");
    let mut raw = UnixStream::from(theirs.as_fd().try_clone_to_owned().expect("dup"));
    drop(theirs);
    raw.write_all(data)
        .expect("the socket's buffer holds the input");
    let most = data.len() / (HEADER_LEN + 1) + 1;
    let taken = drain(&mine, most);
    // The writer goes: the reader learns it, promptly.
    drop(raw);
    let start = Instant::now();
    match mine.recv_timeout(PROMPT) {
        Err(RecvError::Disconnected | RecvError::Codec(_) | RecvError::Io(_)) => {}
        other => panic!("after the writer went: {other:?}"),
    }
    assert!(
        start.elapsed() < PROMPT,
        "the end took {:?}",
        start.elapsed()
    );
    taken
}

/// Takes what `end` has without waiting: each message, or error, until it has nothing
/// (`Empty`) or its stream broke. At most `most` messages can be in the bytes.
fn drain<T: DeserializeOwned + Serialize + Debug>(end: &Connection<T>, most: usize) -> usize {
    let mut taken = 0;
    loop {
        match end.try_recv() {
            Ok(_)
            | Err(RecvError::Codec(
                CodecError::TypeMismatch { .. }
                | CodecError::Decode { .. }
                | CodecError::TrailingBytes { .. },
            )) => {
                taken += 1;
                assert!(taken <= most, "{taken} messages out of at most {most}");
            }
            Err(RecvError::Empty) => return taken,
            // The stream broke (bad magic, over the limit, a zero-length frame, missing
            // descriptors): every later read says so again, without reading.
            Err(first @ (RecvError::Codec(_) | RecvError::Io(_))) => {
                let again = end.try_recv();
                assert!(
                    matches!(again, Err(RecvError::Codec(_) | RecvError::Io(_))),
                    "{first:?} then {again:?}"
                );
                return taken;
            }
            Err(e) => panic!("the writer is still there, yet: {e:?}"),
        }
    }
}

/// A manager's server listening on TCP at loopback, for the harness to attack.
pub(crate) fn tcp_manager() -> (Manager, SocketAddr) {
    tcp_manager_with(StartMethod::ForkServer)
}

/// [`tcp_manager`] with its server started by `method`.
pub(crate) fn tcp_manager_with(method: StartMethod) -> (Manager, SocketAddr) {
    let manager = Manager::builder()
        .start_method(method)
        .address(Address::Tcp("127.0.0.1:0".parse().expect("an address")))
        .authkey(KEY)
        .handshake_timeout(PROMPT)
        .start()
        .expect("a manager");
    let Address::Tcp(addr) = manager.address().clone() else {
        panic!("a TCP manager listens on TCP")
    };
    (manager, addr)
}

/// A connection to `addr` whose reads give up after [`PROMPT`].
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the manager");
    s.set_read_timeout(Some(PROMPT)).expect("a read timeout");
    s
}

/// One handshake message: a length byte, then that many bytes.
fn recv_message(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8];
    s.read_exact(&mut len).expect("a handshake message");
    let mut m = vec![0u8; len[0] as usize];
    s.read_exact(&mut m).expect("a handshake message");
    m
}

fn send_message(s: &mut TcpStream, m: &[u8]) {
    s.write_all(&[m.len() as u8]).expect("send");
    s.write_all(m).expect("send");
}

/// Everything the server sends until it closes the connection; panics if it keeps the
/// connection open for [`PROMPT`] after the client stopped writing.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let start = Instant::now();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server kept the connection {:?}: {e}", start.elapsed()),
    }
    got
}

/// (c, before authentication) `data` as the answer to the server's challenge: the
/// server refuses it (`#FAILURE#`, or closes on a malformed answer) and closes the
/// connection; the key is never accepted.
pub(crate) fn manager_handshake(addr: SocketAddr, data: &[u8]) {
    let mut s = connect(addr);
    let challenge = recv_message(&mut s);
    assert!(
        challenge.starts_with(b"#CHALLENGE#MPMGR2S"),
        "{challenge:?}"
    );
    // The server may close before it has read everything: a write error is its answer.
    let _ = s.write_all(data);
    let _ = s.shutdown(Shutdown::Write);
    let answer = read_to_close(&mut s);
    assert!(
        answer.is_empty() || answer == b"\x09#FAILURE#",
        "the server answered {answer:?} to {} foreign bytes",
        data.len()
    );
}

/// Runs the client's side of the handshake by hand: answers the server's challenge,
/// then challenges it and accepts its answer. An authenticated raw stream.
pub(crate) fn authenticated(addr: SocketAddr) -> TcpStream {
    use hmac::{Hmac, Mac};
    let mut s = connect(addr);
    let challenge = recv_message(&mut s);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY).expect("a key");
    mac.update(&challenge);
    send_message(&mut s, &mac.finalize().into_bytes());
    assert_eq!(recv_message(&mut s), b"#WELCOME#");
    send_message(
        &mut s,
        b"#CHALLENGE#MPMGR2CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let _digest = recv_message(&mut s);
    send_message(&mut s, b"#WELCOME#");
    s
}

/// What the harness sends an authenticated server for `data`: the frames in it, with
/// those the server must not be sent dropped (a `Shutdown`, a registered type's
/// function address: an authenticated client may send both, and the harness wants the
/// server serving afterwards). Bytes after the last whole frame are sent as they are.
pub(crate) fn benign_stream(data: &[u8]) -> Vec<u8> {
    let limits = Limits::default();
    let fp = multiproc::fuzzing::manager_request_fingerprint();
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Ok(Some(n)) = codec::frame_len(rest, &limits) {
        if n > rest.len() {
            break;
        }
        let header = codec::parse_header(rest, &limits).expect("a parsed header");
        let body = &rest[HEADER_LEN..n];
        if header.fingerprint != fp || multiproc::fuzzing::manager_request_is_benign(body) {
            out.extend_from_slice(&rest[..n]);
        }
        rest = &rest[n..];
    }
    out.extend_from_slice(rest);
    out
}

/// Request bodies as frames, one after another.
pub(crate) fn request_frames<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let fp = multiproc::fuzzing::manager_request_fingerprint();
    let mut out = Vec::new();
    for body in bodies {
        out.extend_from_slice(&codec::header(body.len(), fp));
        out.extend_from_slice(body);
    }
    out
}

/// (c, after authentication) `data` as what an authenticated client sends (see
/// [`benign_stream`]): the server answers each whole request with one whole frame, then
/// closes the connection (at the end of the stream, or at the first frame it cannot
/// take), within [`PROMPT`]. Returns how many replies came.
pub(crate) fn manager_frames(addr: SocketAddr, data: &[u8]) -> usize {
    let stream = benign_stream(data);
    let mut s = authenticated(addr);
    let _ = s.write_all(&stream);
    let _ = s.shutdown(Shutdown::Write);
    let replies = read_to_close(&mut s);
    let mut rest = &replies[..];
    let mut n = 0;
    while !rest.is_empty() {
        let len = codec::frame_len(rest, &Limits::default())
            .expect("the server writes frames")
            .expect("a whole header");
        assert!(len <= rest.len(), "a reply cut short");
        rest = &rest[len..];
        n += 1;
    }
    n
}

/// The server still serves: a client with the key makes a list and reads it back.
pub(crate) fn still_serves(addr: SocketAddr) {
    let client = Manager::connect(addr, KEY).expect("the server still accepts clients");
    let list = client
        .list([1u32, 2, 3])
        .expect("the server still makes objects");
    assert_eq!(list.to_vec().expect("the server still answers"), [1, 2, 3]);
}
