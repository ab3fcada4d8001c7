//! The client side: connections to a manager server, pooled per process.
//!
//! A call takes an idle connection from the pool (or opens one), sends its request,
//! waits for the reply and puts the connection back. Threads of one process therefore
//! never wait for each other's calls (a thread blocked in a queue `get` holds its own
//! connection), and a single-threaded client reuses one connection for ever.
//!
//! The pool belongs to one process: a forked child that inherited it (a proxy moved
//! into a `fork` child) drops the inherited connections at its first call and opens
//! its own, so parent and child never read each other's replies.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::Limits;
use crate::connection::{RecvError, SendError};
use crate::sys;
use crate::sys::cell::ForkMutex;

use super::auth::{self, Role};
use super::protocol::{Failure, MAX_WAIT_MS, Op, Reply, Request};
use super::wire::{self, ClientPipe, FrameError};
use super::{Address, AuthenticationError, ManagerError};

/// How long connecting and the handshake may take before the server is given up on.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// One client connection.
enum Transport {
    /// Local: a pipe over shared memory, handed over by the server.
    Pipe(ClientPipe),
    /// Remote: frames over TCP.
    Tcp {
        stream: TcpStream,
        rbuf: Vec<u8>,
        wbuf: Vec<u8>,
        /// The largest request the server accepts (it closes a connection that sends
        /// more): a larger one is refused here, and the connection kept.
        send_limits: Limits,
    },
}

impl Transport {
    fn roundtrip(&mut self, request: &Request, limits: &Limits) -> Result<Reply, ManagerError> {
        match self {
            Transport::Pipe(conn) => {
                conn.send(request).map_err(|e| match e {
                    SendError::Codec(e) => ManagerError::Codec(e),
                    _ => ManagerError::Disconnected,
                })?;
                conn.recv().map_err(|e| match e {
                    RecvError::Codec(e) => ManagerError::Protocol(e.to_string()),
                    _ => ManagerError::Disconnected,
                })
            }
            Transport::Tcp {
                stream,
                rbuf,
                wbuf,
                send_limits,
            } => {
                wire::write_frame(stream, request, send_limits, wbuf).map_err(frame_error)?;
                wire::read_frame(stream, limits, rbuf).map_err(frame_error)
            }
        }
    }
}

fn frame_error(e: FrameError) -> ManagerError {
    match e {
        FrameError::Closed | FrameError::Io => ManagerError::Disconnected,
        FrameError::Encode(e) => ManagerError::Codec(e),
        FrameError::Codec(e) => ManagerError::Protocol(e.to_string()),
    }
}

struct Pool {
    /// The process these connections belong to.
    pid: u32,
    /// This process's session with the server (see [`Request::Hello`]): every
    /// connection of the process names it, so that a lock acquired through one is held
    /// until the process's last connection ends, not the one it went through.
    session: u64,
    idle: Vec<Transport>,
}

/// The clients of proxies that arrived in this process (see [`Client::shared`]).
static SHARED: ForkMutex<Vec<Arc<Client>>> = ForkMutex::new(Vec::new());

/// A fresh session number (random: clients of many processes and hosts share a server).
fn new_session() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No random source: distinct enough within one host.
        bytes = (u64::from(sys::proc::getpid()) << 32 ^ sys::proc::identity(sys::proc::getpid()))
            .to_le_bytes();
    }
    u64::from_le_bytes(bytes) >> 1
}

/// Everything a proxy needs to reach its server.
pub(crate) struct Client {
    pub(crate) address: Address,
    pub(crate) authkey: Vec<u8>,
    pub(crate) limits: Limits,
    pool: ForkMutex<Pool>,
    /// The server is known gone (or shut down by its owner): dropped proxies do not
    /// try to reach it to give their references back.
    gone: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(address: Address, authkey: Vec<u8>, limits: Limits) -> Client {
        Client {
            address,
            authkey,
            limits,
            pool: ForkMutex::new(Pool {
                pid: sys::proc::cached_pid(),
                session: new_session(),
                idle: Vec::new(),
            }),
            gone: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Opens and authenticates a new connection of `session`.
    fn connect(&self, session: u64) -> Result<Transport, ManagerError> {
        let mut transport = self.connect_raw()?;
        match transport.roundtrip(&Request::Hello { session }, &self.limits)? {
            // The server's size limit: requests over it are refused before sending.
            Reply::Count(max) => {
                let max = (max as usize).min(self.limits.max_message);
                match &mut transport {
                    Transport::Pipe(pipe) => pipe.set_max_message(max),
                    Transport::Tcp { send_limits, .. } => {
                        *send_limits = Limits::with_max_message(max);
                    }
                }
                Ok(transport)
            }
            other => Err(ManagerError::Protocol(format!(
                "unexpected reply to hello: {other:?}"
            ))),
        }
    }

    /// Opens and authenticates a new connection.
    fn connect_raw(&self) -> Result<Transport, ManagerError> {
        let connect_error = |source: io::Error| ManagerError::Connect {
            address: self.address.to_string(),
            source,
        };
        match &self.address {
            Address::Abstract(_) | Address::Unix(_) => {
                let mut stream = self
                    .address
                    .connect_unix()
                    .expect("a local address")
                    .map_err(connect_error)?;
                stream
                    .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
                    .map_err(connect_error)?;
                stream
                    .set_write_timeout(Some(HANDSHAKE_TIMEOUT))
                    .map_err(connect_error)?;
                auth::answer_challenge(&mut stream, &self.authkey, Role::Client)?;
                auth::deliver_challenge(&mut stream, &self.authkey, Role::Client)?;
                let mut pipe = wire::take_over(&stream).map_err(connect_error)?;
                pipe.set_max_message(self.limits.max_message);
                Ok(Transport::Pipe(pipe))
            }
            Address::Tcp(addr) => {
                let mut stream =
                    TcpStream::connect_timeout(addr, HANDSHAKE_TIMEOUT).map_err(connect_error)?;
                stream.set_nodelay(true).map_err(connect_error)?;
                stream
                    .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
                    .map_err(connect_error)?;
                stream
                    .set_write_timeout(Some(HANDSHAKE_TIMEOUT))
                    .map_err(connect_error)?;
                auth::answer_challenge(&mut stream, &self.authkey, Role::Client)?;
                auth::deliver_challenge(&mut stream, &self.authkey, Role::Client)?;
                stream.set_read_timeout(None).map_err(connect_error)?;
                stream.set_write_timeout(None).map_err(connect_error)?;
                Ok(Transport::Tcp {
                    stream,
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    send_limits: self.limits,
                })
            }
        }
    }

    /// The client of this process for a server, shared by every proxy that arrives with
    /// a task or a message (each used to make its own, and connect and authenticate
    /// anew: about 1 ms per task): one set of connections and one session per process
    /// and server.
    /// (Python's proxies likewise keep one connection per thread and address.) The
    /// client stays until its server is found gone or is shut down by its owner here.
    pub(crate) fn shared(address: Address, authkey: Vec<u8>, limits: Limits) -> Arc<Client> {
        let mut clients = SHARED.lock();
        let found = clients.iter().find(|c| {
            c.address == address
                && c.authkey == authkey
                && c.limits.max_message == limits.max_message
        });
        match found {
            Some(client) => client.clone(),
            None => {
                let client = Arc::new(Client::new(address, authkey, limits));
                clients.push(client.clone());
                client
            }
        }
    }

    /// Forgets the shared clients of `address` and closes their idle connections (its
    /// server is gone, or its owner shut it down).
    pub(crate) fn forget(address: &Address) {
        let gone: Vec<Arc<Client>> = {
            let mut clients = SHARED.lock();
            let (gone, kept) = std::mem::take(&mut *clients)
                .into_iter()
                .partition(|c| &c.address == address);
            *clients = kept;
            gone
        };
        for client in gone {
            client.mark_gone();
            client.close_idle();
        }
    }

    /// Notes that the server is gone.
    pub(crate) fn mark_gone(&self) {
        self.gone.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the server is known gone.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An idle connection of this process, or a new one.
    fn checkout(&self) -> Result<Transport, ManagerError> {
        let (inherited, session) = {
            let mut pool = self.pool.lock();
            let me = sys::proc::cached_pid();
            if pool.pid == me {
                if let Some(t) = pool.idle.pop() {
                    return Ok(t);
                }
                (Vec::new(), pool.session)
            } else {
                pool.pid = me;
                pool.session = new_session();
                (std::mem::take(&mut pool.idle), pool.session)
            }
        };
        // Closed outside the lock; they were our parent's.
        drop(inherited);
        self.connect(session)
    }

    fn checkin(&self, transport: Transport) {
        let mut pool = self.pool.lock();
        if pool.pid == sys::proc::cached_pid() {
            pool.idle.push(transport);
        }
    }

    /// This process's session with the server (see [`Request::Hello`]).
    pub(crate) fn session(&self) -> u64 {
        self.pool.lock().session
    }

    /// Opens a connection now (to report a wrong address or key at once).
    pub(crate) fn probe(&self) -> Result<(), ManagerError> {
        let t = self.checkout()?;
        self.checkin(t);
        Ok(())
    }

    /// Closes the idle connections.
    pub(crate) fn close_idle(&self) {
        let idle = std::mem::take(&mut self.pool.lock().idle);
        drop(idle);
    }

    /// Sends `request` and returns the reply; a server-side refusal is an error.
    pub(crate) fn call(&self, request: &Request) -> Result<Reply, ManagerError> {
        let mut transport = match self.checkout() {
            Ok(t) => t,
            // The server was reached before (a proxy exists), so it is gone: the shared
            // clients of its address are forgotten, their idle connections closed.
            Err(
                ManagerError::Connect { .. }
                | ManagerError::Authentication(AuthenticationError::Io(_)),
            ) => {
                self.mark_gone();
                Client::forget(&self.address);
                return Err(ManagerError::Disconnected);
            }
            Err(e) => return Err(e),
        };
        let reply = transport.roundtrip(request, &self.limits);
        match reply {
            Ok(reply) => {
                self.checkin(transport);
                match reply {
                    Reply::Error(failure) => Err(failure.into()),
                    reply => Ok(reply),
                }
            }
            // An encoding failure happened before anything was sent: the connection
            // is still good. Anything else leaves it in an unknown state.
            Err(e @ ManagerError::Codec(_)) => {
                self.checkin(transport);
                Err(e)
            }
            // Only this connection is known broken: the others (and the session's locks)
            // stay; a server that is gone shows when the next connect fails.
            Err(e) => Err(e),
        }
    }

    /// Repeats a waiting operation (each request waits at most [`MAX_WAIT_MS`] in the
    /// server) until it gives something other than `Timeout`, or `deadline` passes
    /// (`Ok(None)`). `None` waits for ever; `Some(now)` asks once without waiting.
    /// With `adopt`, the first request is an `AdoptCall` (see [`Request::AdoptCall`]).
    pub(crate) fn call_waiting(
        &self,
        id: u64,
        deadline: Option<Instant>,
        mut adopt: bool,
        mut op: impl FnMut(u32) -> Op,
    ) -> Result<Option<Reply>, ManagerError> {
        loop {
            let wait_ms = match deadline {
                None => MAX_WAIT_MS,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Round up, so that a short timeout still waits.
                    let ms = left.as_micros().div_ceil(1000);
                    ms.min(u128::from(MAX_WAIT_MS)) as u32
                }
            };
            let op = op(wait_ms);
            let request = if std::mem::take(&mut adopt) {
                Request::AdoptCall { id, op }
            } else {
                Request::Call { id, op }
            };
            match self.call(&request)? {
                Reply::Timeout => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                }
                reply => return Ok(Some(reply)),
            }
        }
    }
}

/// A number for the calling thread, unique in its process (the owner of a manager
/// `RLock` or `Condition` is a thread of a client session, as in Python, where it is
/// the server thread serving that client's connection).
pub(crate) fn thread_token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
}

impl From<Failure> for ManagerError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NoSuchObject(id) => ManagerError::NoSuchObject(id),
            Failure::WrongKind { expected, found } => ManagerError::WrongKind { expected, found },
            Failure::WrongType => ManagerError::WrongType,
            Failure::Index { index, len } => ManagerError::IndexOutOfRange { index, len },
            Failure::NotFound => ManagerError::NotFound,
            Failure::Empty => ManagerError::Empty,
            Failure::Full => ManagerError::Protocol("a failure code no server sends (Full)".into()),
            Failure::NotLocked => ManagerError::NotLocked,
            Failure::Panicked(message) => ManagerError::Panicked(message),
            Failure::BadRequest(message) => ManagerError::Protocol(message),
            Failure::NoSuchMethod(name) => ManagerError::NoSuchMethod(name),
            Failure::Remote { kind, message } => {
                ManagerError::Remote(super::RemoteError { kind, message })
            }
            Failure::NotOwner => ManagerError::NotOwner,
            Failure::TooManyReleases => ManagerError::TooManyReleases,
            Failure::TooManyTaskDone => ManagerError::TooManyTaskDone,
            Failure::BrokenBarrier => ManagerError::BrokenBarrier,
        }
    }
}
