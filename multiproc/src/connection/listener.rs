//! Python's `multiprocessing.connection.Listener` and `Client`: connections between
//! processes that did not start each other, over a Unix socket (abstract or a file) or
//! TCP, authenticated with an HMAC key as the manager's are.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Connection;
use super::auth::{self, AuthenticationError, Role};
use crate::sys;

/// How long a connection may take to prove the key, by default (the manager's).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest message a listener's or client's connection accepts by default (the
/// manager's; a larger frame breaks the connection, see the [module docs](super)).
pub const DEFAULT_MAX_MESSAGE: usize = 256 << 20;

/// Where a [`Listener`] (or a manager's server) listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// A Unix socket in the abstract namespace (the local default; Python's address
    /// starting with `"\0"`): it has no file, so nothing is left behind however its
    /// owner ends. Only peers of the listener's own user (or root) are served, and each
    /// must then prove the key.
    Abstract(String),
    /// A Unix socket file (readable and writable by its owner only), removed when the
    /// listener (the manager) is closed.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Abstract(name) => write!(f, "unix:@{name}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

impl Address {
    /// Connects a Unix stream to a local address (`None` for TCP).
    /// Connects to a local address by `deadline` (a full backlog is waited for until
    /// then, not for ever); `None` for a TCP address.
    pub(crate) fn connect_unix_until(
        &self,
        deadline: Option<Instant>,
    ) -> Option<io::Result<UnixStream>> {
        let target = match self {
            Address::Abstract(name) => sys::fd::UnixTarget::Abstract(name.as_bytes()),
            Address::Unix(path) => sys::fd::UnixTarget::Path(path),
            Address::Tcp(_) => return None,
        };
        Some(sys::fd::connect_unix_until(target, deadline).map(UnixStream::from))
    }

    pub(crate) fn connect_unix(&self) -> Option<io::Result<UnixStream>> {
        match self {
            Address::Abstract(name) => {
                Some(abstract_addr(name).and_then(|addr| UnixStream::connect_addr(&addr)))
            }
            Address::Unix(path) => Some(UnixStream::connect(path)),
            Address::Tcp(_) => None,
        }
    }
}

/// The socket address of an abstract name.
pub(crate) fn abstract_addr(name: &str) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp(addr)
    }
}

impl From<PathBuf> for Address {
    fn from(path: PathBuf) -> Address {
        Address::Unix(path)
    }
}

/// What a [`Listener`] or a [`Client`] call failed with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// The key handshake failed (Python's `AuthenticationError`): on the listener's
    /// side, the client did not prove the key ([`AuthenticationError::PeerUnproven`]);
    /// on the client's, the listener refused its proof ([`AuthenticationError::Refused`]).
    /// The listener goes on accepting.
    #[error("authentication: {0}")]
    Authentication(#[from] AuthenticationError),
    /// `accept_timeout`: no connection came in time; or the handshake did not finish
    /// within its deadline (a silent or slow peer).
    #[error("timed out")]
    Timeout,
    /// The listener was closed by [`Listener::close`].
    #[error("the listener is closed")]
    Closed,
    /// The operating system refused (bind, accept, connect).
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A handshake error, with a deadline that passed said as such.
fn handshake_error(e: AuthenticationError) -> ListenerError {
    match e {
        AuthenticationError::Io(io)
            if matches!(
                io.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            ListenerError::Timeout
        }
        other => ListenerError::Authentication(other),
    }
}

enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A socket that accepts connections, each authenticated before it is handed out
/// (Python's `multiprocessing.connection.Listener`).
///
/// ```
/// use multiproc::connection::{Address, Client, Listener};
///
/// let listener = Listener::builder().authkey(b"secret").bind()?; // an abstract socket
/// let address = listener.address().clone();
/// let client = std::thread::spawn(move || {
///     let conn = Client::new().authkey(b"secret").connect::<String, usize>(&address)?;
///     conn.send(&"hello".to_string())?;
///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(conn.recv()?)
/// });
/// let conn = listener.accept::<usize, String>()?;
/// let word = conn.recv()?;
/// conn.send(&word.len())?;
/// assert_eq!(client.join().unwrap().unwrap(), 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Every connection runs the manager's handshake (HMAC-SHA256 both ways, one length
/// byte per message, see ARCHITECTURE.md) within one deadline
/// ([`handshake_timeout`](ListenerBuilder::handshake_timeout), 30 s): a peer that is
/// silent or drips bytes costs `accept` that long at most, then
/// [`ListenerError::Timeout`] (Python's `accept` waits for ever). Messages afterwards
/// are the frames of the [module docs](super), at most
/// [`max_message`](ListenerBuilder::max_message) bytes (256 MiB); the buffer for a
/// frame grows as its bytes arrive, so a huge announced size costs nothing.
/// Without a key there is no handshake (Python's `authkey=None`).
pub struct Listener {
    socket: Option<Socket>,
    address: Address,
    settings: Settings,
    /// The socket file to remove at close.
    unlink: Option<PathBuf>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("closed", &self.socket.is_none())
            .finish()
    }
}

/// What listeners and clients share: the key, the handshake deadline, the frame limit.
#[derive(Clone, Default)]
struct Settings {
    authkey: Option<Vec<u8>>,
    handshake_timeout: Option<Duration>,
    max_message: Option<usize>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("authkey", &self.authkey.as_ref().map(|_| "<hidden>"))
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_message", &self.max_message)
            .finish()
    }
}

impl Settings {
    fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT)
    }

    fn connection<S, R>(&self, fd: OwnedFd) -> Connection<S, R> {
        let mut conn = Connection::from_socket(fd);
        conn.end
            .set_max_message(self.max_message.unwrap_or(DEFAULT_MAX_MESSAGE));
        conn
    }

    /// Runs the handshake on `stream` as `me` (the listener challenges first, the
    /// client answers first), within one deadline; clears the timeouts afterwards.
    fn handshake<T: io::Read + io::Write + auth::Timeouts>(
        &self,
        stream: &mut T,
        me: Role,
        within: Duration,
    ) -> Result<(), ListenerError> {
        let Some(key) = self.authkey.as_deref() else {
            return Ok(());
        };
        if within.is_zero() {
            return Err(ListenerError::Timeout);
        }
        let mut timed = auth::Deadline::new(stream, within);
        let done = if me == Role::Listener {
            auth::deliver_challenge(&mut timed, key, me)
                .and_then(|()| auth::answer_challenge(&mut timed, key, me))
        } else {
            auth::answer_challenge(&mut timed, key, me)
                .and_then(|()| auth::deliver_challenge(&mut timed, key, me))
        };
        done.map_err(handshake_error)?;
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        Ok(())
    }
}

/// Settings of a [`Listener`]: address, key, backlog, handshake deadline, frame limit.
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `bind` is called"]
pub struct ListenerBuilder {
    address: Option<Address>,
    backlog: Option<u32>,
    settings: Settings,
}

impl ListenerBuilder {
    /// Where to listen (default: a fresh abstract Unix socket). A TCP port 0 picks a
    /// free port: see [`Listener::address`].
    pub fn address(mut self, address: Address) -> Self {
        self.address = Some(address);
        self
    }

    /// The key every client must prove it knows, and with which the listener proves
    /// itself (Python's `authkey`; default: none, no handshake).
    pub fn authkey(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.settings.authkey = Some(key.into());
        self
    }

    /// How many connections may wait to be accepted (Python's `backlog`; default 128).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// The time a connection's whole handshake may take (default 30 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.settings.handshake_timeout = Some(timeout);
        self
    }

    /// The largest message the accepted connections take (default 256 MiB).
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.settings.max_message = Some(bytes);
        self
    }

    /// Binds the socket and starts listening.
    pub fn bind(self) -> Result<Listener, ListenerError> {
        let backlog = self.backlog.unwrap_or(128);
        let (socket, address, unlink) = match self.address {
            None => {
                let (listener, name) = bind_fresh_abstract(backlog)?;
                (Socket::Unix(listener), Address::Abstract(name), None)
            }
            Some(Address::Abstract(name)) => {
                let listener = listen_unix(&abstract_addr(&name)?, backlog)?;
                (Socket::Unix(listener), Address::Abstract(name), None)
            }
            Some(Address::Unix(path)) => {
                let addr = std::os::unix::net::SocketAddr::from_pathname(&path)?;
                let listener = listen_unix(&addr, backlog)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                (
                    Socket::Unix(listener),
                    Address::Unix(path.clone()),
                    Some(path),
                )
            }
            Some(Address::Tcp(addr)) => {
                let listener = TcpListener::bind(addr)?;
                listener.set_nonblocking(true)?;
                let bound = listener.local_addr()?;
                (Socket::Tcp(listener), Address::Tcp(bound), None)
            }
        };
        Ok(Listener {
            socket: Some(socket),
            address,
            settings: self.settings,
            unlink,
        })
    }
}

/// A Unix listener bound to `addr` with `backlog` (std's `bind_addr` listens with 128).
fn listen_unix(addr: &std::os::unix::net::SocketAddr, backlog: u32) -> io::Result<UnixListener> {
    let listener = UnixListener::bind_addr(addr)?;
    // `accept` waits in `poll`, then takes what is there without blocking.
    listener.set_nonblocking(true)?;
    if backlog != 128 {
        sys::fd::listen(listener.as_fd(), backlog)?;
    }
    Ok(listener)
}

/// Binds a Unix listener to a fresh random name in the abstract namespace.
fn bind_fresh_abstract(backlog: u32) -> io::Result<(UnixListener, String)> {
    loop {
        let tag: String = auth::random_bytes(8)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("multiproc-listener-{}-{tag}", sys::proc::getpid());
        match listen_unix(&abstract_addr(&name)?, backlog) {
            Ok(listener) => return Ok((listener, name)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    }
}

impl Listener {
    /// Settings: address, key, backlog, handshake deadline, frame limit.
    pub fn builder() -> ListenerBuilder {
        ListenerBuilder::default()
    }

    /// Listens at `address` without a key (Python's `Listener(address)`).
    pub fn bind(address: Address) -> Result<Listener, ListenerError> {
        Listener::builder().address(address).bind()
    }

    /// Where it listens (Python's `address`), with a TCP port 0 resolved.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for a connection and authenticates it (Python's `accept()`); the
    /// connection sends `S` and receives `R`. A client that fails the handshake makes
    /// it fail with [`ListenerError::Authentication`] (its connection is closed, the
    /// listener goes on). On an abstract socket, connections of other users are
    /// closed unseen and the wait goes on.
    pub fn accept<S, R>(&self) -> Result<Connection<S, R>, ListenerError> {
        self.accept_until(None)
    }

    /// As [`accept`](Self::accept), waiting at most `timeout` for a connection to
    /// arrive ([`ListenerError::Timeout`]); its handshake then has its own deadline.
    pub fn accept_timeout<S, R>(
        &self,
        timeout: Duration,
    ) -> Result<Connection<S, R>, ListenerError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.accept_until(Some(deadline)),
            None => self.accept_until(None),
        }
    }

    fn accept_until<S, R>(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Connection<S, R>, ListenerError> {
        let socket = self.socket.as_ref().ok_or(ListenerError::Closed)?;
        let within = self.settings.handshake_timeout();
        // The listening socket does not block: a connection another thread accepted
        // first (both saw the socket ready) sends this one back to its wait.
        let taken = |accepted: io::Result<OwnedFd>| match accepted {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        };
        loop {
            if !sys::fd::poll_two(self.fd(socket), None, deadline)?.first {
                return Err(ListenerError::Timeout);
            }
            let fd = match socket {
                Socket::Unix(listener) => {
                    let Some(fd) = taken(listener.accept().map(|(s, _)| OwnedFd::from(s)))? else {
                        continue;
                    };
                    let mut stream = UnixStream::from(fd);
                    stream.set_nonblocking(false)?;
                    if matches!(self.address, Address::Abstract(_))
                        && !sys::fd::peer_is_same_user(stream.as_fd()).unwrap_or(false)
                    {
                        continue;
                    }
                    self.settings
                        .handshake(&mut stream, Role::Listener, within)?;
                    OwnedFd::from(stream)
                }
                Socket::Tcp(listener) => {
                    let Some(fd) = taken(listener.accept().map(|(s, _)| OwnedFd::from(s)))? else {
                        continue;
                    };
                    let mut stream = TcpStream::from(fd);
                    stream.set_nonblocking(false)?;
                    stream.set_nodelay(true)?;
                    self.settings
                        .handshake(&mut stream, Role::Listener, within)?;
                    OwnedFd::from(stream)
                }
            };
            return Ok(self.settings.connection(fd));
        }
    }

    fn fd<'a>(&self, socket: &'a Socket) -> BorrowedFd<'a> {
        match socket {
            Socket::Unix(l) => l.as_fd(),
            Socket::Tcp(l) => l.as_fd(),
        }
    }

    /// Stops listening (Python's `close()`): the socket is closed, a socket file
    /// removed. Connections already accepted go on. Later `accept` calls fail with
    /// [`ListenerError::Closed`]. Dropping the listener does the same.
    pub fn close(&mut self) {
        if self.socket.take().is_some() {
            if let Some(path) = self.unlink.take() {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.socket.is_none()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`): a
/// builder for the key, the handshake deadline and the frame limit, then
/// [`connect`](Self::connect).
///
/// A listener that refuses the key makes `connect` fail with
/// [`ListenerError::Authentication`]`(`[`AuthenticationError::Refused`]`)`; one that
/// cannot prove the key itself, with `PeerUnproven`.
#[derive(Debug, Clone, Default)]
#[must_use = "a client does nothing until `connect` is called"]
pub struct Client {
    settings: Settings,
}

impl Client {
    /// A client without a key, with the default deadline and frame limit.
    pub fn new() -> Client {
        Client::default()
    }

    /// The key to prove (Python's `authkey`).
    pub fn authkey(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.settings.authkey = Some(key.into());
        self
    }

    /// The time connecting and the whole handshake may take (default 30 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.settings.handshake_timeout = Some(timeout);
        self
    }

    /// The largest message the connection takes (default 256 MiB).
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.settings.max_message = Some(bytes);
        self
    }

    /// Connects to `address` and runs the handshake; the connection sends `S` and
    /// receives `R`.
    pub fn connect<S, R>(&self, address: &Address) -> Result<Connection<S, R>, ListenerError> {
        // One deadline for connecting and the handshake.
        let within = self.settings.handshake_timeout();
        let deadline = Instant::now().checked_add(within);
        let left = || deadline.map_or(within, |d| d.saturating_duration_since(Instant::now()));
        let timed_out = |e: io::Error| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ListenerError::Timeout,
            _ => ListenerError::Io(e),
        };
        let fd = match address {
            Address::Tcp(addr) => {
                let mut stream = TcpStream::connect_timeout(addr, within).map_err(timed_out)?;
                stream.set_nodelay(true)?;
                self.settings
                    .handshake(&mut stream, Role::Connector, left())?;
                OwnedFd::from(stream)
            }
            local => {
                let mut stream = local
                    .connect_unix_until(deadline)
                    .expect("a local address")
                    .map_err(timed_out)?;
                self.settings
                    .handshake(&mut stream, Role::Connector, left())?;
                OwnedFd::from(stream)
            }
        };
        Ok(self.settings.connection(fd))
    }
}
