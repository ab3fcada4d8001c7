//! Pipes between processes: Python's `multiprocessing.Pipe` (S3), typed.
//!
//! [`pipe`] gives two duplex ends; [`pipe_simplex`] (Python's `Pipe(duplex=False)`)
//! gives a [`Receiver`] and a [`Sender`], so sending on the receiving end does not
//! compile. Ends are handed to a child as (part of) its arguments under every start
//! method, and can themselves be sent through another connection: the descriptor
//! travels with the message (`SCM_RIGHTS`).
//!
//! ```
//! # multiproc::init();
//! use multiproc::connection::{pipe, Connection};
//! use multiproc::Process;
//!
//! fn child(conn: Connection<String>) {
//!     let question = conn.recv().unwrap();
//!     conn.send(&format!("{question} -> pong")).unwrap();
//! }
//!
//! let (mine, theirs) = pipe::<String>().unwrap();
//! let mut p = Process::start(child, theirs).unwrap();
//! mine.send(&"ping".to_string()).unwrap();
//! assert_eq!(mine.recv().unwrap(), "ping -> pong");
//! p.join().unwrap();
//! ```
//!
//! # Bytes, clones, waiting on several, listeners
//!
//! Besides typed values an end sends and receives raw bytes
//! ([`Connection::send_bytes`], [`Connection::recv_bytes`],
//! [`Connection::recv_bytes_into`], with [`RecvError::BufferTooShort`] carrying a
//! message too long for the buffer), is duplicated in-process with
//! [`Connection::try_clone`], and is waited on together with other ends, processes
//! and queues by [`wait`]. [`Listener`] and [`Client`] connect processes that did not
//! start each other (Unix sockets, abstract or a file, and TCP), after the manager's
//! HMAC key handshake.
//!
//! ```
//! # multiproc::init();
//! use std::time::Duration;
//! use multiproc::connection::{pipe, wait, RecvError, Waitable};
//!
//! let (a, b) = pipe::<String>().unwrap();
//! a.send_bytes(b"--hello--", 2, Some(5)).unwrap();
//! let ready = wait(&[&b as &dyn Waitable], Some(Duration::from_secs(60))).unwrap();
//! assert_eq!(ready, vec![0]);
//! let mut buf = [0u8; 3];
//! match b.recv_bytes_into(&mut buf, 0) {
//!     Err(RecvError::BufferTooShort(whole)) => assert_eq!(whole, b"hello"),
//!     other => panic!("{other:?}"),
//! }
//! let b2 = b.try_clone().unwrap();
//! a.send(&"value".to_string()).unwrap();
//! assert_eq!(b2.recv().unwrap(), "value");
//! ```
//!
//! # What can go wrong, and what you see
//!
//! * The other end is dropped, or its process dies (even in the middle of a message):
//!   `recv` returns [`RecvError::Disconnected`] once the complete messages before it are
//!   read; a partial message is discarded. `send` returns [`SendError::Disconnected`].
//! * The peer sends a value of another type: [`RecvError::Codec`] with
//!   [`CodecError::TypeMismatch`]; that message is skipped and the connection stays
//!   usable.
//! * The peer writes garbage, or a message over the size limit: a `Codec` error, and the
//!   connection is then broken (every later `recv` repeats the error), since the stream
//!   cannot be resynchronised.
//!
//! # Under `fork`
//!
//! A forked child inherits *every* descriptor of its parent, including the parent's own
//! end of a pipe it handed over (as in Python). End-of-file then only comes when both
//! processes have dropped that end: under `fork`, end a conversation with a sentinel
//! message rather than by closing. `spawn` and `forkserver` children receive only the
//! ends passed to them.
//!
//! # Transport
//!
//! Values travel through shared memory: one ring per direction, the lock-free
//! transport of [`crate::Queue`] (see ARCHITECTURE.md), so a small message costs no
//! system call and a waiting receiver spins briefly before it sleeps on a futex. Beside
//! the rings each pair has a Unix socket. It carries the messages that hold descriptors
//! (a ring marker keeps their place among the others), and it is how each side learns
//! that the other is gone: a receiver with nothing to read looks at it every 20 ms, a
//! sender every 1024 messages and whenever the ring is full. A send to a peer that has
//! just died may therefore succeed (the message is lost with the peer) until the sender
//! notices. Frames written straight to the socket by a peer that is not a `Connection`
//! are read too, as in [`crate::codec`], with a one-byte count of attached descriptors
//! before the postcard body.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) mod auth;
mod listener;
mod wait;

pub use auth::AuthenticationError;
pub(crate) use listener::abstract_addr;
pub use listener::{
    Address, Client, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_MESSAGE, Listener, ListenerBuilder,
    ListenerError,
};
pub use wait::{Waitable, wait};

use crate::codec::{self, CodecError, HEADER_LEN, Limits};
use crate::ring::{self, Config, Deadline, GetFail, PutFail, RingMap};
use crate::{handle, sys};

/// How long a receiver sleeps on the ring before it looks at the socket (for the end of
/// the peer, or a message sent there), and a full sender before it checks the peer.
const SLICE: Duration = Duration::from_millis(20);
/// A sender checks that its peer is still there every this many messages.
const CHECK_PEER_EVERY: u32 = 1024;
/// In a frame's descriptor-count byte: the frame was announced by a marker in the ring.
const ANNOUNCED: u8 = 0x80;

/// What travels through a pipe's ring: a value, "the next message is on the socket"
/// (a message carrying descriptors, which only a socket can pass), or raw bytes
/// (`send_bytes`).
#[derive(Serialize)]
enum WireRef<'a, T: ?Sized> {
    Value(&'a T),
    OnSocket,
    Bytes(#[serde(serialize_with = "serde_bytes::serialize")] &'a [u8]),
}

/// The receiving side's view of [`WireRef`] (same encoding).
///
/// `Bytes` holds no data: the bytes of a `send_bytes` record are left in [`BYTES_IN`]
/// by the decoder, as the descriptors of a handle are left aside by `handle`. A
/// variant that held a `Vec` made every message's decode slower (a larger type with
/// drop glue in the ring's take loop: 15% more CPU time per small message, measured).
enum Wire<T> {
    Value(T),
    OnSocket,
    Bytes,
}

thread_local! {
    /// The bytes of the last `Wire::Bytes` decoded on this thread.
    static BYTES_IN: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

/// Takes the bytes a `Wire::Bytes` decode on this thread left.
fn take_bytes_in() -> Vec<u8> {
    BYTES_IN.with(|b| b.take()).unwrap_or_default()
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Wire<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const VARIANTS: &[&str] = &["Value", "OnSocket", "Bytes"];
        deserializer.deserialize_enum("Wire", VARIANTS, WireVisitor(PhantomData))
    }
}

struct WireVisitor<T>(PhantomData<fn() -> T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for WireVisitor<T> {
    type Value = Wire<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a pipe record")
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Wire<T>, A::Error> {
        use serde::de::VariantAccess;
        let (index, variant) = data.variant::<u32>()?;
        match index {
            0 => variant.newtype_variant().map(Wire::Value),
            1 => variant.unit_variant().map(|()| Wire::OnSocket),
            2 => stash_bytes(variant).map(|()| Wire::Bytes),
            _ => Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Unsigned(u64::from(index)),
                &"a pipe record's kind (0, 1 or 2)",
            )),
        }
    }
}

/// Decodes the bytes of a `Wire::Bytes` record into [`BYTES_IN`] (out of the way of
/// the values' path).
#[cold]
#[inline(never)]
fn stash_bytes<'de, V: serde::de::VariantAccess<'de>>(variant: V) -> Result<(), V::Error> {
    let bytes: serde_bytes::ByteBuf = variant.newtype_variant()?;
    BYTES_IN.with(|b| b.set(Some(bytes.into_vec())));
    Ok(())
}

/// One message as it arrived: a value, or the bytes of a `send_bytes`.
enum Msg<T> {
    Value(T),
    Bytes(Vec<u8>),
}

impl<T: DeserializeOwned> Msg<T> {
    /// The value: bytes are decoded as a `T` (Python's `recv()` after `send_bytes`
    /// unpickles them); bytes that are not one give a `Codec` error, and the
    /// connection stays usable.
    fn into_value(self) -> Result<T, RecvError> {
        match self {
            Msg::Value(v) => Ok(v),
            Msg::Bytes(bytes) => Ok(codec::decode(&bytes)?),
        }
    }
}

impl<T: Serialize> Msg<T> {
    /// The bytes: a value is given as its encoding, the bytes a `send` of it put on
    /// the wire (Python's `recv_bytes()` after `send` gives the pickle).
    fn into_bytes(self) -> Result<Vec<u8>, RecvError> {
        match self {
            Msg::Value(v) => Ok(codec::encode(&v)?),
            Msg::Bytes(bytes) => Ok(bytes),
        }
    }
}

/// Names the raw-bytes frames of the socket (their header's fingerprint): the body
/// is the bytes themselves, not a postcard value.
struct RawBytes;

/// What the socket buffer holds for a read.
enum Parsed<T> {
    /// A message (or the error it gave).
    Message(Result<Msg<T>, RecvError>),
    /// An announced frame: not for an `Unannounced` read.
    NotYours,
    /// No complete frame yet.
    NeedMore,
}

/// Which socket frames a read may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Only frames no ring marker announced (from a peer that writes the socket itself).
    Unannounced,
    /// The next frame, whatever it is (a marker was just taken).
    Next,
}

/// A ring for one direction of a pipe: a few lanes (ends are shared by forked
/// processes now and then), 4 MiB each.
fn ring(fingerprint: u64) -> io::Result<Arc<RingMap>> {
    RingMap::create(Config {
        lanes: 8,
        ring: 4 << 20,
        maxsize: 0,
        max_message: codec::DEFAULT_MAX_MESSAGE,
        joinable: false,
        fingerprint,
    })
    .map(ring::register)
}

/// Why a message could not be received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// `try_recv`: no complete message is waiting.
    #[error("no message is waiting")]
    Empty,
    /// `recv_timeout`: none arrived in time.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The other end was closed, or its process died.
    #[error("the other end of the connection is closed (or its process died)")]
    Disconnected,
    /// A message that does not decode (see the module docs for which ones break the
    /// connection).
    #[error("bad message: {0}")]
    Codec(#[from] CodecError),
    /// `recv_bytes_into`: the message does not fit in the buffer from the offset on
    /// (Python's `BufferTooShort`). It carries the whole message, which was taken.
    #[error("the buffer is too short for the message ({} bytes)", .0.len())]
    BufferTooShort(Vec<u8>),
    /// A bad argument; names the parameter (`offset`).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The operating system reported an error.
    #[error("receiving: {0}")]
    Io(#[from] io::Error),
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The other end was closed, or its process died.
    #[error("the other end of the connection is closed (or its process died)")]
    Disconnected,
    /// The value could not be encoded, or is over the size limit.
    #[error("cannot send: {0}")]
    Codec(#[from] CodecError),
    /// A bad argument; names the parameter (`offset`, `size`), as Python's
    /// `ValueError` from `send_bytes`.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The operating system reported an error.
    #[error("sending: {0}")]
    Io(io::Error),
}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => SendError::Disconnected,
            _ => SendError::Io(e),
        }
    }
}

/// One end of a pipe, without message types: the shared machinery of all ends.
///
/// Values travel through shared-memory rings (the queue transport, one ring per
/// direction); the socket carries messages with descriptors, tells each side when the
/// other is gone (end-of-file), and takes frames from peers that write it directly.
#[derive(Debug)]
struct Endpoint {
    sock: OwnedFd,
    limits: Limits,
    /// Shared by the clones of an end (`try_clone`), as are the rings: the clones are
    /// one end. Each clone has its own descriptor of the socket, send counter and
    /// knowledge of the peer's end (not shared: a pointer less on every message).
    writer: Arc<Mutex<()>>,
    reader: Arc<Mutex<ReadState>>,
    /// The ring this end sends on, and the one it receives from.
    tx: Option<Arc<RingMap>>,
    rx: Option<Arc<RingMap>>,
    sends: AtomicU32,
    /// The other end is known to be gone (end-of-file or hang-up seen).
    peer_gone: AtomicBool,
}

#[derive(Debug, Default)]
struct ReadState {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    fds: VecDeque<OwnedFd>,
    eof: bool,
    /// Set when the stream can no longer be parsed.
    broken: Option<BrokenReason>,
}

#[derive(Debug, Clone, Copy)]
enum BrokenReason {
    BadMagic([u8; 4]),
    Oversized(usize, usize),
}

impl BrokenReason {
    fn error(self) -> RecvError {
        RecvError::Codec(match self {
            BrokenReason::BadMagic(found) => CodecError::BadMagic { found },
            BrokenReason::Oversized(size, max) => CodecError::Oversized { size, max },
        })
    }
}

impl Endpoint {
    fn new(sock: OwnedFd, tx: Option<Arc<RingMap>>, rx: Option<Arc<RingMap>>) -> Endpoint {
        Endpoint {
            sock,
            limits: Limits::default(),
            writer: Arc::new(Mutex::new(())),
            reader: Arc::new(Mutex::new(ReadState::default())),
            tx,
            rx,
            sends: AtomicU32::new(0),
            peer_gone: AtomicBool::new(false),
        }
    }

    /// A second handle on this end: a duplicate of the socket (so each clone closes
    /// its own), the same rings, read buffer and write lock.
    fn try_clone(&self) -> io::Result<Endpoint> {
        Ok(Endpoint {
            sock: self.sock.try_clone()?,
            limits: self.limits,
            writer: self.writer.clone(),
            reader: self.reader.clone(),
            tx: self.tx.clone(),
            rx: self.rx.clone(),
            sends: AtomicU32::new(0),
            peer_gone: AtomicBool::new(self.peer_gone.load(Ordering::Relaxed)),
        })
    }

    fn set_max_message(&mut self, bytes: usize) {
        self.limits = Limits::with_max_message(bytes);
        for ring in [&self.tx, &self.rx].into_iter().flatten() {
            ring.set_max_message(self.limits.max_message);
        }
    }

    /// `true` if the other end has hung up (checked without waiting).
    fn peer_closed(&self) -> bool {
        if self.peer_gone.load(Ordering::Relaxed) {
            return true;
        }
        let gone = sys::fd::peer_hung_up(self.sock.as_fd());
        if gone {
            self.peer_gone.store(true, Ordering::Relaxed);
        }
        gone
    }

    /// Sends raw bytes: through the ring when there is one, else as a raw frame.
    fn send_bytes<T: Serialize + ?Sized>(&self, bytes: &[u8]) -> Result<(), SendError> {
        let Some(tx) = &self.tx else {
            return self.send_raw_socket(bytes);
        };
        if self.peer_gone.load(Ordering::Relaxed) {
            return Err(SendError::Disconnected);
        }
        if self.sends.fetch_add(1, Ordering::Relaxed) % CHECK_PEER_EVERY == CHECK_PEER_EVERY - 1
            && self.peer_closed()
        {
            return Err(SendError::Disconnected);
        }
        let wire = WireRef::<T>::Bytes(bytes);
        loop {
            match tx.put_until(&wire, Deadline::Within(SLICE)) {
                Ok(()) => return Ok(()),
                Err(PutFail::Full) if self.peer_closed() => return Err(SendError::Disconnected),
                Err(PutFail::Full) => {}
                Err(PutFail::ShutDown) => return Err(SendError::Disconnected),
                Err(PutFail::Codec(e)) => return Err(e.into()),
                Err(PutFail::Io(e)) => return Err(SendError::Io(e)),
            }
        }
    }

    /// Sends one raw-bytes frame on the socket (header naming [`RawBytes`], no
    /// descriptors, the bytes as the body).
    fn send_raw_socket(&self, bytes: &[u8]) -> Result<(), SendError> {
        let size = bytes.len() + 1;
        if size > self.limits.max_message {
            return Err(CodecError::Oversized {
                size,
                max: self.limits.max_message,
            }
            .into());
        }
        let mut frame = Vec::with_capacity(HEADER_LEN + size);
        frame.extend_from_slice(&codec::header(size, codec::fingerprint::<RawBytes>()));
        frame.push(0);
        frame.extend_from_slice(bytes);
        let _guard = self.writer.lock();
        sys::fd::send_all_with_fds(self.sock.as_fd(), &frame, &[])?;
        Ok(())
    }

    fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        let Some(tx) = &self.tx else {
            return self.send_socket(value, false);
        };
        if self.peer_gone.load(Ordering::Relaxed) {
            return Err(SendError::Disconnected);
        }
        if self.sends.fetch_add(1, Ordering::Relaxed) % CHECK_PEER_EVERY == CHECK_PEER_EVERY - 1
            && self.peer_closed()
        {
            return Err(SendError::Disconnected);
        }
        loop {
            match tx.put_until(&WireRef::Value(value), Deadline::Within(SLICE)) {
                Ok(()) => return Ok(()),
                // The ring is full: still worth waiting only if someone reads it.
                Err(PutFail::Full) if self.peer_closed() => return Err(SendError::Disconnected),
                Err(PutFail::Full) => {}
                Err(PutFail::ShutDown) => return Err(SendError::Disconnected),
                Err(PutFail::Codec(CodecError::Encode { .. })) => {
                    // Perhaps a handle inside, whose descriptor needs the socket: send
                    // it there, then mark its place in the ring.
                    self.send_socket(value, true)?;
                    let marker = WireRef::<T>::OnSocket;
                    loop {
                        return match tx.put_until(&marker, Deadline::Within(SLICE)) {
                            Ok(()) => Ok(()),
                            Err(PutFail::Full) if self.peer_closed() => {
                                Err(SendError::Disconnected)
                            }
                            Err(PutFail::Full) => continue,
                            Err(PutFail::Codec(e)) => Err(e.into()),
                            Err(PutFail::Io(e)) => Err(SendError::Io(e)),
                            Err(PutFail::ShutDown) => Err(SendError::Disconnected),
                        };
                    }
                }
                Err(PutFail::Codec(e)) => return Err(e.into()),
                Err(PutFail::Io(e)) => return Err(SendError::Io(e)),
            }
        }
    }

    /// Sends one frame on the socket; `announced` marks frames a ring marker points to.
    fn send_socket<T: Serialize + ?Sized>(
        &self,
        value: &T,
        announced: bool,
    ) -> Result<(), SendError> {
        // Header and descriptor count are written in front of the body in place.
        let mut frame = vec![0u8; HEADER_LEN + 1];
        let (encoded, fds) = handle::collect_fds(|| codec::encode_into(value, &mut frame));
        encoded?;
        if fds.len() >= ANNOUNCED as usize {
            return Err(SendError::Io(io::Error::other(
                "more than 127 descriptors in one message",
            )));
        }
        let size = frame.len() - HEADER_LEN;
        if size > self.limits.max_message {
            return Err(CodecError::Oversized {
                size,
                max: self.limits.max_message,
            }
            .into());
        }
        frame[..HEADER_LEN].copy_from_slice(&codec::header(size, codec::fingerprint::<T>()));
        frame[HEADER_LEN] = fds.len() as u8 | if announced { ANNOUNCED } else { 0 };
        let _guard = self.writer.lock();
        sys::fd::send_all_with_fds(self.sock.as_fd(), &frame, &fds)?;
        Ok(())
    }

    /// Receives one `T`, waiting until `deadline` (`None`: for ever; `Some(now)`: not at all).
    fn recv<T: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<T, RecvError> {
        self.recv_msg(deadline)?.into_value()
    }

    /// Receives one message, value or bytes, waiting until `deadline`.
    fn recv_msg<T: DeserializeOwned>(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Msg<T>, RecvError> {
        let Some(rx) = &self.rx else {
            return self.recv_socket(deadline, Take::Next);
        };
        loop {
            // Without a deadline the slice is counted from when the ring is found empty:
            // a message already there costs no clock read.
            let until = match deadline {
                None => Deadline::Within(SLICE),
                Some(d) => Deadline::At(Some(d.min(Instant::now() + SLICE))),
            };
            match rx.get_until::<Wire<T>>(until) {
                Ok(Wire::Value(v)) => return Ok(Msg::Value(v)),
                Ok(Wire::Bytes) => return Ok(Msg::Bytes(take_bytes_in())),
                Ok(Wire::OnSocket) => return self.recv_socket(None, Take::Next),
                Err(GetFail::Empty) => {}
                Err(GetFail::ShutDown) => return Err(RecvError::Disconnected),
                Err(GetFail::Codec(e)) => return Err(RecvError::Codec(e)),
                Err(GetFail::Io(e)) => return Err(RecvError::Io(e)),
            }
            // The ring is empty: a frame written to the socket directly, or the end.
            match self.recv_socket::<T>(Some(Instant::now()), Take::Unannounced) {
                Err(RecvError::Timeout) => {}
                Err(RecvError::Disconnected) => {
                    self.peer_gone.store(true, Ordering::Relaxed);
                    // What the peer published before it went is still delivered.
                    return match rx.get::<Wire<T>>(Some(Instant::now())) {
                        Ok(Wire::Value(v)) => Ok(Msg::Value(v)),
                        Ok(Wire::Bytes) => Ok(Msg::Bytes(take_bytes_in())),
                        Ok(Wire::OnSocket) => self.recv_socket(None, Take::Next),
                        Err(_) => Err(RecvError::Disconnected),
                    };
                }
                other => return other,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(RecvError::Timeout);
            }
        }
    }

    /// Receives one frame from the socket (see [`Take`]), waiting until `deadline`.
    fn recv_socket<T: DeserializeOwned>(
        &self,
        deadline: Option<Instant>,
        take: Take,
    ) -> Result<Msg<T>, RecvError> {
        let mut st = self.reader.lock();
        loop {
            match self.parse::<T>(&mut st, take) {
                Parsed::Message(result) => return result,
                // An announced frame at the head: its marker is not in the ring yet. At
                // end-of-file it never will be (the sender died between the frame and
                // the marker): the caller sees the end, after one more look at the ring.
                Parsed::NotYours if st.eof || self.peer_closed() => {
                    return Err(RecvError::Disconnected);
                }
                Parsed::NotYours => return Err(RecvError::Timeout),
                Parsed::NeedMore => {}
            }
            if st.eof {
                return Err(RecvError::Disconnected);
            }
            // Inside a frame's body no descriptor can arrive (they come with a frame's
            // first byte), so the rest of a large body is read without ancillary data.
            let (room, mid_frame) = match codec::frame_len(&st.buf[st.start..], &self.limits) {
                Ok(Some(total)) => (total - (st.buf.len() - st.start), true),
                _ => (64 * 1024, false),
            };
            // Ask for the rest of the frame, but hold no more room than the bytes already
            // here (at least 64 KiB): a size announced by a peer costs memory only as its
            // bytes come, and a real large message still grows by doubling.
            let room = room.clamp(4096, (st.buf.len() - st.start).max(64 << 10));
            if st.start > 0 && st.start * 2 >= st.buf.len() {
                let start = st.start;
                st.buf.drain(..start);
                st.start = 0;
            }
            let nonblocking = match deadline {
                None => false,
                Some(d) => {
                    if !sys::fd::poll_two(self.sock.as_fd(), None, Some(d))?.first {
                        return Err(RecvError::Timeout);
                    }
                    true
                }
            };
            let mut got = Vec::new();
            let read = if mid_frame && !nonblocking {
                sys::fd::read_into(self.sock.as_fd(), &mut st.buf, room)
            } else {
                sys::fd::recv_into_with_fds(
                    self.sock.as_fd(),
                    &mut st.buf,
                    room,
                    &mut got,
                    nonblocking,
                )
            };
            st.fds.extend(got);
            match read {
                Ok(0) => st.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => st.eof = true,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next complete message in the buffer, if there is one.
    fn parse<T: DeserializeOwned>(&self, st: &mut ReadState, take: Take) -> Parsed<T> {
        match self.parse_frame(st, take) {
            Some(Ok(None)) => Parsed::NotYours,
            Some(Ok(Some(result))) => Parsed::Message(result),
            Some(Err(e)) => Parsed::Message(Err(e)),
            None => Parsed::NeedMore,
        }
    }

    /// [`Endpoint::parse`]'s work; `Some(Ok(None))` for an announced frame at the head
    /// of the buffer when only unannounced ones may be taken.
    #[allow(clippy::type_complexity)]
    fn parse_frame<T: DeserializeOwned>(
        &self,
        st: &mut ReadState,
        take: Take,
    ) -> Option<Result<Option<Result<Msg<T>, RecvError>>, RecvError>> {
        if let Some(reason) = st.broken {
            return Some(Err(reason.error()));
        }
        let bytes = &st.buf[st.start..];
        let header = match codec::parse_header(bytes, &self.limits) {
            Ok(h) => h,
            Err(CodecError::Truncated { .. }) => return None,
            Err(CodecError::BadMagic { found }) => {
                st.broken = Some(BrokenReason::BadMagic(found));
                return Some(Err(BrokenReason::BadMagic(found).error()));
            }
            Err(CodecError::Oversized { size, max }) => {
                st.broken = Some(BrokenReason::Oversized(size, max));
                return Some(Err(BrokenReason::Oversized(size, max).error()));
            }
            Err(e) => return Some(Err(e.into())),
        };
        let total = HEADER_LEN + header.len;
        if bytes.len() < total || header.len == 0 {
            return if header.len == 0 {
                st.broken = Some(BrokenReason::BadMagic(*b"\0\0\0\0"));
                Some(Err(RecvError::Codec(CodecError::Truncated {
                    needed: HEADER_LEN + 1,
                    got: HEADER_LEN,
                })))
            } else {
                None
            };
        }
        let flags = bytes[HEADER_LEN];
        if take == Take::Unannounced && flags & ANNOUNCED != 0 {
            // Its marker is on its way through the ring; it is taken from there.
            return Some(Ok(None));
        }
        let nfds = (flags & !ANNOUNCED) as usize;
        if st.fds.len() < nfds {
            // The descriptors travel with the first byte of the frame: they are here
            // by the time its last byte is, unless the peer is not one of ours.
            st.broken = Some(BrokenReason::BadMagic(*b"fds?"));
            return Some(Err(RecvError::Io(io::Error::other(
                "a message announced descriptors that did not arrive",
            ))));
        }
        let fds: Vec<OwnedFd> = st.fds.drain(..nfds).collect();
        let body = &bytes[HEADER_LEN + 1..total];
        let expected = codec::fingerprint::<T>();
        let result = if header.fingerprint == codec::fingerprint::<RawBytes>() && nfds == 0 {
            Ok(Msg::Bytes(body.to_vec()))
        } else if header.fingerprint != expected {
            Err(RecvError::Codec(CodecError::TypeMismatch {
                expected: std::any::type_name::<T>(),
                expected_fingerprint: expected,
                found: header.fingerprint,
            }))
        } else {
            handle::provide_fds(fds, || codec::decode::<T>(body))
                .map(Msg::Value)
                .map_err(RecvError::from)
        };
        st.start += total;
        if st.start == st.buf.len() {
            st.buf.clear();
            st.start = 0;
        }
        Some(Ok(Some(result)))
    }

    fn poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let Some(rx) = &self.rx else {
            return self.poll_socket(timeout);
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if rx.has_items() || self.poll_socket(Some(Duration::ZERO))? {
                return Ok(true);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            let slice = now + SLICE;
            rx.wait_for_items(Some(deadline.map_or(slice, |d| d.min(slice))));
        }
    }

    fn poll_socket(&self, timeout: Option<Duration>) -> io::Result<bool> {
        {
            let st = self.reader.lock();
            let pending = &st.buf[st.start..];
            if st.eof
                || st.broken.is_some()
                || matches!(codec::frame_len(pending, &self.limits), Ok(Some(n)) if pending.len() >= n)
            {
                return Ok(true);
            }
        }
        sys::fd::wait_readable(self.sock.as_fd(), timeout)
    }
}

/// Two connected ends: a socket pair, and a ring for each direction that is used
/// (`a_sends` carrying `A` from the first end, `b_sends` carrying `B` back).
fn endpoints<A, B>(a_sends: bool, b_sends: bool) -> io::Result<(Endpoint, Endpoint)> {
    let (a, b) = sys::fd::stream_pair()?;
    let a_to_b = a_sends
        .then(|| ring(codec::fingerprint::<Wire<A>>()))
        .transpose()?;
    let b_to_a = b_sends
        .then(|| ring(codec::fingerprint::<Wire<B>>()))
        .transpose()?;
    Ok((
        Endpoint::new(a, a_to_b.clone(), b_to_a.clone()),
        Endpoint::new(b, b_to_a, a_to_b),
    ))
}

/// A descriptor inside an end's encoding (see [`handle`]).
struct FdOut<'a>(BorrowedFd<'a>);

impl Serialize for FdOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        handle::serialize_fd(self.0, serializer)
    }
}

/// The receiving side of [`FdOut`].
struct FdIn(OwnedFd);

impl<'de> Deserialize<'de> for FdIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        handle::deserialize_fd(deserializer).map(FdIn)
    }
}

impl Endpoint {
    /// An end crosses as its socket and its rings' memfds.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (
            FdOut(self.sock.as_fd()),
            self.tx.as_ref().map(|r| FdOut(r.fd())),
            self.rx.as_ref().map(|r| FdOut(r.fd())),
        )
            .serialize(serializer)
    }

    /// The other side of [`Endpoint::serialize`]; `S` and `R` type the rings.
    fn deserialize<'de, S, R, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (sock, tx, rx) = <(FdIn, Option<FdIn>, Option<FdIn>)>::deserialize(deserializer)?;
        let open = |fd: Option<FdIn>, fingerprint: u64| {
            fd.map(|FdIn(fd)| RingMap::open(fd, fingerprint).map(ring::register))
                .transpose()
                .map_err(|e| serde::de::Error::custom(format!("cannot attach pipe: {e}")))
        };
        let tx = open(tx, codec::fingerprint::<Wire<S>>())?;
        let rx = open(rx, codec::fingerprint::<Wire<R>>())?;
        Ok(Endpoint::new(sock.0, tx, rx))
    }
}

/// One end of a duplex pipe: sends `S`, receives `R` (Python's `Connection`).
///
/// Methods take `&self`: one end can be shared by threads (an `Arc<Connection>`);
/// messages of concurrent senders never interleave.
pub struct Connection<S, R = S> {
    end: Endpoint,
    _types: PhantomData<fn(S) -> R>,
}

/// The sending end of a one-way pipe (Python's `Pipe(duplex=False)[1]`).
pub struct Sender<T> {
    end: Endpoint,
    _types: PhantomData<fn(T)>,
}

/// The receiving end of a one-way pipe (Python's `Pipe(duplex=False)[0]`).
pub struct Receiver<T> {
    end: Endpoint,
    _types: PhantomData<fn() -> T>,
}

impl<S, R> Connection<S, R> {
    /// A connection over a socket alone (a [`Listener`]'s or [`Client`]'s): frames on
    /// the socket, no rings.
    pub(crate) fn from_socket(sock: OwnedFd) -> Connection<S, R> {
        Connection {
            end: Endpoint::new(sock, None, None),
            _types: PhantomData,
        }
    }
}

/// A duplex pipe whose two ends both send and receive `T` (Python's `Pipe()`).
pub fn pipe<T>() -> io::Result<(Connection<T>, Connection<T>)> {
    pipe_with::<T, T>()
}

/// A duplex pipe with a type per direction: the first end sends `A` and receives `B`.
pub fn pipe_with<A, B>() -> io::Result<(Connection<A, B>, Connection<B, A>)> {
    let (a, b) = endpoints::<A, B>(true, true)?;
    Ok((
        Connection {
            end: a,
            _types: PhantomData,
        },
        Connection {
            end: b,
            _types: PhantomData,
        },
    ))
}

/// A one-way pipe: `(receiver, sender)`, in Python's order (`r, w = Pipe(duplex=False)`).
///
/// ```compile_fail
/// let (r, _w) = multiproc::connection::pipe_simplex::<u32>().unwrap();
/// r.send(&1); // a Receiver cannot send
/// ```
pub fn pipe_simplex<T>() -> io::Result<(Receiver<T>, Sender<T>)> {
    let (a, b) = endpoints::<(), T>(false, true)?;
    // Make the one-way intent real at the socket too.
    let _ = rustix::net::shutdown(&a.sock, rustix::net::Shutdown::Write);
    let _ = rustix::net::shutdown(&b.sock, rustix::net::Shutdown::Read);
    Ok((
        Receiver {
            end: a,
            _types: PhantomData,
        },
        Sender {
            end: b,
            _types: PhantomData,
        },
    ))
}

macro_rules! receiving {
    ($t:ident) => {
        /// Waits for the next message.
        pub fn recv(&self) -> Result<$t, RecvError> {
            self.end.recv(None)
        }

        /// Waits at most `timeout` for the next message ([`RecvError::Timeout`]).
        pub fn recv_timeout(&self, timeout: Duration) -> Result<$t, RecvError> {
            self.end.recv(Some(Instant::now() + timeout))
        }

        /// The next message if one is waiting ([`RecvError::Empty`] otherwise).
        pub fn try_recv(&self) -> Result<$t, RecvError> {
            match self.end.recv(Some(Instant::now())) {
                Err(RecvError::Timeout) => Err(RecvError::Empty),
                other => other,
            }
        }

        /// Whether a message (or end-of-stream) can be received, waiting up to
        /// `timeout` (`None`: for ever). Python's `poll(timeout)`.
        pub fn poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
            self.end.poll(timeout)
        }

        /// An iterator over incoming messages, ending when the other end is closed
        /// (or on the first error).
        pub fn iter(&self) -> impl Iterator<Item = $t> + '_ {
            std::iter::from_fn(move || self.recv().ok())
        }
    };
}

macro_rules! sending {
    ($t:ident) => {
        /// Sends `value` (Python's `send`). Blocks while the pipe is full.
        pub fn send(&self, value: &$t) -> Result<(), SendError> {
            self.end.send(value)
        }

        /// Sends `buf[offset..offset + size]` as one message of raw bytes (Python's
        /// `send_bytes(buf, offset, size)`; `size` `None`: to the end of `buf`). The
        /// other side takes it with `recv_bytes` or `recv_bytes_into`; its `recv`
        /// decodes the bytes as a value (Python's `recv` unpickles them). An `offset`
        /// or `size` past the end of `buf` is [`SendError::Invalid`], and nothing is
        /// sent.
        pub fn send_bytes(
            &self,
            buf: &[u8],
            offset: usize,
            size: Option<usize>,
        ) -> Result<(), SendError> {
            if offset > buf.len() {
                return Err(SendError::Invalid("offset: past the end of the buffer"));
            }
            let size = size.unwrap_or(buf.len() - offset);
            if size > buf.len() - offset {
                return Err(SendError::Invalid(
                    "size: offset + size is past the end of the buffer",
                ));
            }
            self.end.send_bytes::<$t>(&buf[offset..offset + size])
        }
    };
}

macro_rules! bytes_receiving {
    ($t:ident) => {
        /// Waits for the next message and gives its bytes (Python's
        /// `recv_bytes(maxlength)`): what a `send_bytes` sent, or the encoding of a
        /// value a `send` sent. A message longer than `maxlength` is taken and
        /// dropped, and the call fails with [`CodecError::Oversized`] (Python closes
        /// the connection then; this one stays usable).
        pub fn recv_bytes(&self, maxlength: Option<usize>) -> Result<Vec<u8>, RecvError> {
            let bytes = self.end.recv_msg::<$t>(None)?.into_bytes()?;
            match maxlength {
                Some(max) if bytes.len() > max => Err(RecvError::Codec(CodecError::Oversized {
                    size: bytes.len(),
                    max,
                })),
                _ => Ok(bytes),
            }
        }

        /// Waits for the next message and copies its bytes into `buf` from `offset` on
        /// (Python's `recv_bytes_into(buf, offset)`); returns their number. A message
        /// that does not fit is [`RecvError::BufferTooShort`], which carries it whole
        /// (the message is taken either way); an `offset` past the end of `buf` is
        /// [`RecvError::Invalid`], before anything is received.
        pub fn recv_bytes_into(&self, buf: &mut [u8], offset: usize) -> Result<usize, RecvError> {
            if offset > buf.len() {
                return Err(RecvError::Invalid("offset: past the end of the buffer"));
            }
            let bytes = self.end.recv_msg::<$t>(None)?.into_bytes()?;
            let Some(room) = buf.get_mut(offset..offset + bytes.len()) else {
                return Err(RecvError::BufferTooShort(bytes));
            };
            room.copy_from_slice(&bytes);
            Ok(bytes.len())
        }
    };
}

macro_rules! cloning {
    () => {
        /// A second handle on this end, in this process (no pipe needed to duplicate
        /// it): its own descriptor of the socket, the same shared-memory rings and
        /// read buffer. The clones are one end: each message sent through either
        /// arrives once, whole, and in each sender's order (sends never interleave);
        /// each message that arrives is taken by exactly one clone, whichever calls
        /// first. So two threads may each use a clone at the same time, as they may
        /// share one end through an `Arc`. The other side sees end-of-file once every
        /// clone is dropped.
        pub fn try_clone(&self) -> io::Result<Self> {
            Ok(Self {
                end: self.end.try_clone()?,
                _types: PhantomData,
            })
        }
    };
}

macro_rules! limits {
    () => {
        /// Sets the largest message this end sends or accepts (default 2 GiB).
        pub fn set_max_message(&mut self, bytes: usize) {
            self.end.set_max_message(bytes);
        }
    };
}

impl<S: Serialize, R: DeserializeOwned> Connection<S, R> {
    sending!(S);
    receiving!(R);
    limits!();
}

impl<S: Serialize, R: Serialize + DeserializeOwned> Connection<S, R> {
    bytes_receiving!(R);
}

impl<S, R> Connection<S, R> {
    cloning!();
}

impl<T: Serialize> Sender<T> {
    sending!(T);
    limits!();
}

impl<T> Sender<T> {
    cloning!();
}

impl<T: DeserializeOwned> Receiver<T> {
    receiving!(T);
    limits!();
}

impl<T: Serialize + DeserializeOwned> Receiver<T> {
    bytes_receiving!(T);
}

impl<T> Receiver<T> {
    cloning!();
}

macro_rules! handle_impls {
    ($name:ident < $($p:ident),* >, $send:ty, $recv:ty) => {
        impl<$($p),*> std::fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).field("fd", &std::os::fd::AsRawFd::as_raw_fd(&self.end.sock)).finish()
            }
        }

        impl<$($p),*> AsFd for $name<$($p),*> {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.end.sock.as_fd()
            }
        }

        /// Sent to another process, the end travels with its descriptor (a duplicate:
        /// drop yours if only the other process should hold it).
        impl<$($p),*> Serialize for $name<$($p),*> {
            fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
                self.end.serialize(serializer)
            }
        }

        impl<'de, $($p),*> Deserialize<'de> for $name<$($p),*> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let end = Endpoint::deserialize::<$send, $recv, D>(deserializer)?;
                Ok($name { end, _types: PhantomData })
            }
        }
    };
}

handle_impls!(Connection<S, R>, S, R);
handle_impls!(Sender<T>, T, ());
handle_impls!(Receiver<T>, (), T);
