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
//! Transport: a Unix stream socket pair, frames as in [`crate::codec`], with a one-byte
//! count of attached descriptors before the postcard body.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{self, CodecError, HEADER_LEN, Limits};
use crate::{handle, sys};

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

/// One end of a socket, without message types: the shared machinery of all ends.
#[derive(Debug)]
struct Endpoint {
    sock: OwnedFd,
    limits: Limits,
    writer: Mutex<()>,
    reader: Mutex<ReadState>,
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
    fn new(sock: OwnedFd) -> Endpoint {
        Endpoint {
            sock,
            limits: Limits::default(),
            writer: Mutex::new(()),
            reader: Mutex::new(ReadState::default()),
        }
    }

    fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        // Header and descriptor count are written in front of the body in place.
        let mut frame = vec![0u8; HEADER_LEN + 1];
        let (encoded, fds) = handle::collect_fds(|| codec::encode_into(value, &mut frame));
        encoded?;
        if fds.len() > u8::MAX as usize {
            return Err(SendError::Io(io::Error::other(
                "more than 255 descriptors in one message",
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
        frame[HEADER_LEN] = fds.len() as u8;
        let _guard = self.writer.lock();
        sys::fd::send_all_with_fds(self.sock.as_fd(), &frame, &fds)?;
        Ok(())
    }

    /// Receives one `T`, waiting until `deadline` (`None`: for ever; `Some(now)`: not at all).
    fn recv<T: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<T, RecvError> {
        let mut st = self.reader.lock();
        loop {
            if let Some(result) = self.parse::<T>(&mut st) {
                return result;
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
            let room = room.clamp(4096, 1 << 30);
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
    fn parse<T: DeserializeOwned>(&self, st: &mut ReadState) -> Option<Result<T, RecvError>> {
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
        let nfds = bytes[HEADER_LEN] as usize;
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
        let result = if header.fingerprint != expected {
            Err(RecvError::Codec(CodecError::TypeMismatch {
                expected: std::any::type_name::<T>(),
                expected_fingerprint: expected,
                found: header.fingerprint,
            }))
        } else {
            handle::provide_fds(fds, || codec::decode::<T>(body)).map_err(RecvError::from)
        };
        st.start += total;
        if st.start == st.buf.len() {
            st.buf.clear();
            st.start = 0;
        }
        Some(result)
    }

    fn poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
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

fn socket_pair() -> io::Result<(Endpoint, Endpoint)> {
    let (a, b) = sys::fd::stream_pair()?;
    Ok((Endpoint::new(a), Endpoint::new(b)))
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

/// A duplex pipe whose two ends both send and receive `T` (Python's `Pipe()`).
pub fn pipe<T>() -> io::Result<(Connection<T>, Connection<T>)> {
    pipe_with::<T, T>()
}

/// A duplex pipe with a type per direction: the first end sends `A` and receives `B`.
pub fn pipe_with<A, B>() -> io::Result<(Connection<A, B>, Connection<B, A>)> {
    let (a, b) = socket_pair()?;
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
    let (a, b) = socket_pair()?;
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
    };
}

macro_rules! limits {
    () => {
        /// Sets the largest message this end sends or accepts (default 1 GiB).
        pub fn set_max_message(&mut self, bytes: usize) {
            self.end.limits = Limits::with_max_message(bytes);
        }
    };
}

impl<S: Serialize, R: DeserializeOwned> Connection<S, R> {
    sending!(S);
    receiving!(R);
    limits!();
}

impl<T: Serialize> Sender<T> {
    sending!(T);
    limits!();
}

impl<T: DeserializeOwned> Receiver<T> {
    receiving!(T);
    limits!();
}

macro_rules! handle_impls {
    ($name:ident < $($p:ident),* >) => {
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
                handle::serialize_fd(self.end.sock.as_fd(), serializer)
            }
        }

        impl<'de, $($p),*> Deserialize<'de> for $name<$($p),*> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let fd = handle::deserialize_fd(deserializer)?;
                Ok($name { end: Endpoint::new(fd), _types: PhantomData })
            }
        }
    };
}

handle_impls!(Connection<S, R>);
handle_impls!(Sender<T>);
handle_impls!(Receiver<T>);
