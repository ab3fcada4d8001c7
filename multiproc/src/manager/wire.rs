//! How requests and replies travel: over a stream (TCP), one codec frame each; over a
//! local Unix socket, the socket only carries the handshake and then hands the client
//! one end of a [`connection`](crate::connection) pipe (shared-memory rings).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError, HEADER_LEN, Limits};
use crate::connection::Connection;
use crate::{handle, sys};

use super::protocol::{Reply, Request};

/// The client's end of a local connection.
pub(crate) type ClientPipe = Connection<Request, Reply>;
/// The server's end of a local connection.
pub(crate) type ServerPipe = Connection<Reply, Request>;

/// Largest pipe hand-over message accepted (it holds three descriptor indices).
const MAX_HANDOVER: usize = 4096;

/// Largest read buffer a connection keeps between frames.
const KEPT_BUFFER: usize = 1 << 20;

/// A frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The peer closed the stream (or reset it) at a frame boundary or inside one.
    Closed,
    /// Garbage, an oversized frame, or a value of the wrong type.
    Codec(CodecError),
    /// The value to send did not encode (or was over the size limit): nothing was
    /// written, and the stream is as good as before.
    Encode(CodecError),
    /// Another I/O failure (the connection is unusable all the same).
    Io,
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FrameError::Closed,
            _ => FrameError::Io,
        }
    }
}

/// Writes `value` as one frame (one `write` call for the whole frame, so a small
/// message is one TCP segment).
pub(crate) fn write_frame<T: Serialize>(
    stream: &mut impl Write,
    value: &T,
    limits: &Limits,
    buf: &mut Vec<u8>,
) -> Result<(), FrameError> {
    buf.clear();
    codec::encode_frame_into(value, limits, buf).map_err(FrameError::Encode)?;
    stream.write_all(buf)?;
    Ok(())
}

/// Reads one frame holding a `T`. The header is checked (magic, size limit) before
/// the body is read, so garbage or a huge length costs at most 16 bytes of reading;
/// the body's buffer grows as its bytes arrive (`read_to_end` doubles it), so a length
/// that is announced and never sent costs no memory.
pub(crate) fn read_frame<T: DeserializeOwned>(
    stream: &mut impl Read,
    limits: &Limits,
    buf: &mut Vec<u8>,
) -> Result<T, FrameError> {
    // What one large frame made room for is not kept for all the small ones after it.
    if buf.capacity() > KEPT_BUFFER {
        *buf = Vec::new();
    }
    buf.clear();
    buf.resize(HEADER_LEN, 0);
    stream.read_exact(buf)?;
    let header = codec::parse_header(buf, limits).map_err(FrameError::Codec)?;
    // Room for a typical body up front (one read), the rest as it comes.
    buf.reserve(header.len.min(64 << 10));
    let body = stream.take(header.len as u64).read_to_end(buf)?;
    if body < header.len {
        return Err(FrameError::Closed);
    }
    codec::decode_frame::<T>(buf, limits)
        .map(|(value, _)| value)
        .map_err(FrameError::Codec)
}

/// Sends the client its end of a fresh pipe, descriptors attached.
pub(crate) fn hand_over(sock: &UnixStream, end: ClientPipe) -> io::Result<()> {
    let (encoded, fds) = handle::collect_fds(|| codec::encode(&end));
    drop(end);
    let body = encoded.map_err(io::Error::other)?;
    let mut message = (body.len() as u32).to_le_bytes().to_vec();
    message.extend_from_slice(&body);
    sys::fd::send_all_with_fds(sock.as_fd(), &message, &fds)
}

/// Receives the end of a pipe sent by [`hand_over`].
pub(crate) fn take_over(sock: &UnixStream) -> io::Result<ClientPipe> {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    loop {
        if buf.len() >= 4 {
            let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            if len > MAX_HANDOVER {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the manager sent an oversized hand-over",
                ));
            }
            if buf.len() >= 4 + len {
                return handle::provide_fds(fds, || codec::decode::<ClientPipe>(&buf[4..4 + len]))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        let n = sys::fd::recv_into_with_fds(sock.as_fd(), &mut buf, 512, &mut fds, false)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's 16-byte header once made the server zero-fill the whole body it
    /// announced before any of it came (issue 14 item 8): three such headers cost a
    /// manager 770 MiB. The buffer now grows with the bytes that arrive.
    #[test]
    fn a_huge_announced_frame_costs_memory_only_as_its_bytes_arrive() {
        let limits = Limits::default();
        let announced = 256 << 20;
        let mut wire = codec::header(announced, codec::fingerprint::<Vec<u8>>()).to_vec();
        wire.extend_from_slice(&[1; 100]);
        let mut buf = Vec::new();
        let got = read_frame::<Vec<u8>>(&mut wire.as_slice(), &limits, &mut buf);
        assert!(matches!(got, Err(FrameError::Closed)), "{got:?}");
        assert!(buf.capacity() < 1 << 20, "{} bytes held", buf.capacity());

        // A real frame still reads whole, large or small.
        for value in [vec![5u8; 3 << 20], vec![6u8; 10]] {
            let frame = codec::encode_frame(&value, &limits).unwrap();
            let got: Vec<u8> = read_frame(&mut frame.as_slice(), &limits, &mut buf).unwrap();
            assert_eq!(got, value);
        }
    }
}
