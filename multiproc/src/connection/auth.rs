//! HMAC-SHA256 challenge–response, both ways (Python's `deliver_challenge` and
//! `answer_challenge`): each side proves it knows the key without sending it. Shared by
//! the manager (its server and clients) and by [`Listener`](super::Listener) /
//! [`Client`](super::Client), each with challenges of its own.
//!
//! ```text
//! server → client   #CHALLENGE#MPMGR2S<32 random bytes>
//! client → server   HMAC-SHA256(key, that whole message)
//! server → client   #WELCOME#  or  #FAILURE# (and the server closes the connection)
//! then the same with the roles swapped (the client's challenge says `MPMGR2C`), so
//! the client knows the server is genuine.
//! ```
//!
//! A listener and its clients speak the same handshake with `MPCON1L` and `MPCON1C`:
//! a manager's key cannot open a listener's connection for a manager client, or the
//! other way round, even when the keys are the same.
//!
//! A challenge names the role of the side that made it, under the HMAC, and each side
//! answers only the other role's challenges: an impostor without the key cannot send
//! the client's challenge back to that client on a second connection and relay the
//! answer (a reflection; `MPMGR1`, without roles, allowed it).
//!
//! Each message is one length byte and at most 255 bytes: a peer that sends anything
//! else is refused after at most 256 bytes, whatever it sends.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const NONCE_LEN: usize = 32;

/// The authentication handshake with a manager, a [`Listener`](super::Listener) or a
/// [`Client`](super::Client) failed (Python's `AuthenticationError`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthenticationError {
    /// The peer did not accept our answer: the authkeys differ (Python: "digest sent
    /// was rejected").
    #[error("the peer refused the authkey (digest sent was rejected)")]
    Refused,
    /// The peer could not prove it knows the authkey; it may be an impostor (Python:
    /// "digest received was wrong").
    #[error("the peer failed to prove it knows the authkey (digest received was wrong)")]
    PeerUnproven,
    /// The peer does not speak this handshake.
    #[error("the peer does not speak the expected handshake: {0}")]
    Protocol(&'static str),
    /// The connection failed during the handshake.
    #[error("during the authentication handshake: {0}")]
    Io(#[from] io::Error),
}

/// Which end of which kind of connection a side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The manager's server.
    Server,
    /// A client connecting to a manager.
    Client,
    /// A [`Listener`](super::Listener) accepting a connection.
    Listener,
    /// A [`Client`](super::Client) connecting to a listener.
    Connector,
}

impl Role {
    /// How the challenges of this role begin.
    fn challenge(self) -> &'static [u8] {
        match self {
            Role::Server => b"#CHALLENGE#MPMGR2S",
            Role::Client => b"#CHALLENGE#MPMGR2C",
            Role::Listener => b"#CHALLENGE#MPCON1L",
            Role::Connector => b"#CHALLENGE#MPCON1C",
        }
    }

    fn peer(self) -> Role {
        match self {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
            Role::Listener => Role::Connector,
            Role::Connector => Role::Listener,
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], message: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac
}

/// The digest of `message` under `key`.
pub(crate) fn digest(key: &[u8], message: &[u8]) -> Vec<u8> {
    mac(key, message).finalize().into_bytes().to_vec()
}

/// `n` bytes from the operating system's random source.
pub(crate) fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(bytes)
}

fn send(stream: &mut impl Write, message: &[u8]) -> io::Result<()> {
    debug_assert!(message.len() <= 255);
    let mut out = Vec::with_capacity(message.len() + 1);
    out.push(message.len() as u8);
    out.extend_from_slice(message);
    stream.write_all(&out)?;
    stream.flush()
}

fn recv(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 1];
    stream.read_exact(&mut len)?;
    let mut message = vec![0u8; len[0] as usize];
    stream.read_exact(&mut message)?;
    Ok(message)
}

/// Challenges the peer to prove it knows `key`; tells it the verdict. `me` is this
/// side's role, named in the challenge.
pub(crate) fn deliver_challenge<S: Read + Write>(
    stream: &mut S,
    key: &[u8],
    me: Role,
) -> Result<(), AuthenticationError> {
    let mut message = me.challenge().to_vec();
    message.extend_from_slice(&random_bytes(NONCE_LEN)?);
    send(stream, &message)?;
    let answer = recv(stream)?;
    if mac(key, &message).verify_slice(&answer).is_ok() {
        send(stream, WELCOME)?;
        Ok(())
    } else {
        // Best effort: the peer learns why before the connection closes.
        let _ = send(stream, FAILURE);
        Err(AuthenticationError::PeerUnproven)
    }
}

/// Answers the peer's challenge with `key`; `me` is this side's role: only a challenge
/// of the other role is answered.
pub(crate) fn answer_challenge<S: Read + Write>(
    stream: &mut S,
    key: &[u8],
    me: Role,
) -> Result<(), AuthenticationError> {
    let message = recv(stream)?;
    let expected = me.peer().challenge();
    if !message.starts_with(expected) || message.len() != expected.len() + NONCE_LEN {
        return Err(AuthenticationError::Protocol("expected a challenge"));
    }
    send(stream, &digest(key, &message))?;
    match recv(stream) {
        Ok(verdict) if verdict == WELCOME => Ok(()),
        Ok(verdict) if verdict == FAILURE => Err(AuthenticationError::Refused),
        Ok(_) => Err(AuthenticationError::Protocol("expected a verdict")),
        // A server refusing a key says so before it closes: an end without a verdict
        // is a server that went away.
        Err(e) => Err(e.into()),
    }
}

/// A stream whose reads and writes all end by one deadline: a handshake gets one time
/// budget in all, so a peer that sends a byte now and then cannot stretch it (a
/// per-read timeout restarts with every byte).
pub(crate) struct Deadline<'a, S> {
    stream: &'a mut S,
    until: Instant,
}

/// Streams with per-operation timeouts.
pub(crate) trait Timeouts {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Timeouts for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
}

impl Timeouts for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, timeout)
    }
}

impl<'a, S: Timeouts> Deadline<'a, S> {
    pub(crate) fn new(stream: &'a mut S, budget: Duration) -> Self {
        let until = Instant::now()
            .checked_add(budget)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        Deadline { stream, until }
    }

    /// The time left, or `TimedOut` once there is none.
    fn left(&self) -> io::Result<Duration> {
        self.until
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "handshake deadline passed"))
    }
}

impl<S: Read + Timeouts> Read for Deadline<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        self.stream.read(buf)
    }
}

impl<S: Write + Timeouts> Write for Deadline<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn handshake(server_key: &'static [u8], client_key: &'static [u8]) -> (bool, bool) {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            deliver_challenge(&mut a, server_key, Role::Server).is_ok()
                && answer_challenge(&mut a, server_key, Role::Server).is_ok()
        });
        let client = answer_challenge(&mut b, client_key, Role::Client).is_ok()
            && deliver_challenge(&mut b, client_key, Role::Client).is_ok();
        drop(b);
        (server.join().unwrap(), client)
    }

    #[test]
    fn same_key_passes_both_ways() {
        assert_eq!(handshake(b"secret", b"secret"), (true, true));
    }

    #[test]
    fn wrong_key_is_refused() {
        assert_eq!(handshake(b"secret", b"guess"), (false, false));
    }

    #[test]
    fn a_side_does_not_answer_a_challenge_of_its_own_role() {
        for me in [Role::Server, Role::Client, Role::Listener, Role::Connector] {
            let (mut a, mut b) = UnixStream::pair().unwrap();
            let mut own = me.challenge().to_vec();
            own.extend_from_slice(&[0; NONCE_LEN]);
            send(&mut a, &own).unwrap();
            assert!(matches!(
                answer_challenge(&mut b, b"key", me),
                Err(AuthenticationError::Protocol(_))
            ));
        }
    }

    /// A manager's client does not answer a listener's challenge, nor a listener's
    /// client a manager's: the same key opens one kind of connection only.
    #[test]
    fn a_side_answers_only_its_own_protocol() {
        for (challenger, me) in [
            (Role::Listener, Role::Client),
            (Role::Server, Role::Connector),
        ] {
            let (mut a, mut b) = UnixStream::pair().unwrap();
            let mut theirs = challenger.challenge().to_vec();
            theirs.extend_from_slice(&[0; NONCE_LEN]);
            send(&mut a, &theirs).unwrap();
            assert!(matches!(
                answer_challenge(&mut b, b"key", me),
                Err(AuthenticationError::Protocol(_))
            ));
        }
    }

    #[test]
    fn digest_is_hmac_sha256() {
        // RFC 4231, test case 2.
        let d = digest(b"Jefe", b"what do ya want for nothing?");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
