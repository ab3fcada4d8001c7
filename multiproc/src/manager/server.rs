//! The manager's server process: it owns the objects and serves each client connection
//! on a thread of its own.
//!
//! A connection thread authenticates its peer, then answers requests in turn until the
//! peer goes away, sends something that does not parse, or asks for a shutdown. Every
//! failure of a connection ends that connection only. When a connection ends, the
//! manager locks it holds are released, so a client that dies holding one does not
//! block the others for ever.
//!
//! The server uses `std::sync` locks, not `parking_lot`'s: under the `fork` start
//! method it is forked from a process whose other threads may have been parked, or
//! half-way through parking, in `parking_lot`'s global table, which the child inherits
//! in whatever state it was. `std`'s locks keep all their state in the lock itself.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

use crate::codec::{self, Limits};
use crate::connection::{self, Connection};
use crate::{handle, sys};

use super::Shared;
use super::auth::{self, Role};
use super::protocol::{Bytes, Failure, Kind, MAX_WAIT_MS, Op, Reply, Request};
use super::wire::{self, ServerPipe};

/// A listening socket handed to the server process.
#[derive(Debug)]
pub(crate) enum Listener {
    Unix(OwnedFd),
    Tcp(OwnedFd),
}

/// The server process's arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ServerArgs {
    pub(crate) listener: Listener,
    pub(crate) authkey: ByteBuf,
    pub(crate) max_message: u64,
    pub(crate) handshake_timeout: Duration,
    /// The user's initializer, run before the first connection is accepted.
    pub(crate) init: Option<Init>,
    /// Told `()` once the initializer has run.
    pub(crate) ready: Option<Connection<()>>,
}

/// A manager initializer (Python's `BaseManager.start(initializer, initargs)`): `call`
/// (a [`call_init`] of the argument type) decodes `args` and runs `f` on them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Init {
    pub(crate) exe: (u64, u64),
    pub(crate) call: sys::entry::FnAddr,
    pub(crate) f: sys::entry::FnAddr,
    pub(crate) args: ByteBuf,
}

/// What [`Init::call`] names: runs the initializer `f(args)` of the executable `exe`;
/// a panic, or arguments that do not decode, is the message.
pub(crate) type InitFn = fn((u64, u64), sys::entry::FnAddr, Vec<u8>) -> Result<(), String>;

/// Decodes an `A` and runs `f(a)` under `catch_unwind`.
pub(crate) fn call_init<A: DeserializeOwned>(
    exe: (u64, u64),
    f: sys::entry::FnAddr,
    args: Vec<u8>,
) -> Result<(), String> {
    let proof = sys::entry::verify(exe).map_err(|e| e.to_string())?;
    let args: A = codec::decode(&args).map_err(|e| format!("the initializer's arguments: {e}"))?;
    let f: fn(A) = sys::entry::resolve(&proof, f);
    // The owner's `start` reports the panic: the server does not print it too.
    user_code(|| f(args)).map_err(|payload| crate::codec::panic_message(payload.as_ref()))
}

/// Runs the initializer, if any.
fn run_init(init: Option<Init>) -> Result<(), String> {
    let Some(init) = init else { return Ok(()) };
    let proof = sys::entry::verify(init.exe).map_err(|e| e.to_string())?;
    let call: InitFn = sys::entry::resolve(&proof, init.call);
    call(init.exe, init.f, init.args.into_vec())
}

impl Serialize for Listener {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Fd<'a>(&'a OwnedFd);
        impl Serialize for Fd<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                handle::serialize_fd(std::os::fd::AsFd::as_fd(self.0), serializer)
            }
        }
        match self {
            Listener::Unix(fd) => (false, Fd(fd)).serialize(serializer),
            Listener::Tcp(fd) => (true, Fd(fd)).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Listener {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fd(OwnedFd);
        impl<'de> Deserialize<'de> for Fd {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                handle::deserialize_fd(deserializer).map(Fd)
            }
        }
        let (tcp, Fd(fd)) = <(bool, Fd)>::deserialize(deserializer)?;
        Ok(if tcp {
            Listener::Tcp(fd)
        } else {
            Listener::Unix(fd)
        })
    }
}

/// The server process's body: runs the initializer, then accepts connections until a
/// client asks for a shutdown (which ends the process from that client's thread). A
/// failing initializer ends it at once with the failure (the listener closes with
/// it, before any connection was accepted).
pub(crate) fn run(args: ServerArgs) -> Result<(), String> {
    quiet_user_panics();
    run_init(args.init)?;
    if let Some(ready) = args.ready {
        // An owner that is gone does not need to know.
        let _ = ready.send(&());
    }
    let server = Arc::new(Server {
        objects: Mutex::new(Objects::default()),
        next_object: AtomicU64::new(1),
        next_conn: AtomicU64::new(1),
        sessions: Mutex::new(HashMap::new()),
        authkey: args.authkey.into_vec(),
        limits: Limits::with_max_message(args.max_message as usize),
        handshake_timeout: args.handshake_timeout,
        handshakes: Handshakes::default(),
    });
    match args.listener {
        Listener::Unix(fd) => {
            let listener = UnixListener::from(fd);
            accept_loop(
                &server,
                || listener.accept().map(|(s, _)| s),
                Server::serve_unix,
            );
        }
        Listener::Tcp(fd) => {
            let listener = TcpListener::from(fd);
            accept_loop(
                &server,
                || listener.accept().map(|(s, _)| s),
                Server::serve_tcp,
            );
        }
    }
    Ok(())
}

/// Accepts connections for ever, each served by `serve` on a thread of its own. At
/// most [`MAX_HANDSHAKES`](super::MAX_HANDSHAKES) are authenticating at once (the others
/// wait in the backlog); a failed accept concerns that peer only, and out of
/// descriptors (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) the loop backs off, 1 ms
/// doubling to 1 s, rather than spin.
fn accept_loop<S: Send + 'static>(
    server: &Arc<Server>,
    accept: impl Fn() -> io::Result<S>,
    serve: fn(&Server, S, Handshake),
) {
    let mut pause = Duration::ZERO;
    loop {
        let slot = server.handshakes.enter();
        match accept() {
            Ok(stream) => {
                pause = Duration::ZERO;
                let server = server.clone();
                spawn_conn(move || serve(&server, stream, slot));
            }
            Err(e) => {
                drop(slot);
                use rustix::io::Errno;
                let starved = matches!(
                    Errno::from_io_error(&e),
                    Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
                );
                if starved {
                    pause = (pause * 2).clamp(Duration::from_millis(1), Duration::from_secs(1));
                    std::thread::sleep(pause);
                }
            }
        }
    }
}

/// The count of connections authenticating, bounded by `MAX_HANDSHAKES`.
#[derive(Default)]
struct Handshakes {
    running: Arc<(Mutex<usize>, Condvar)>,
}

impl Handshakes {
    /// Waits for a free slot and takes it.
    fn enter(&self) -> Handshake {
        let (count, freed) = &*self.running;
        let mut n = lock(count);
        while *n >= super::MAX_HANDSHAKES {
            n = freed.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
        *n += 1;
        Handshake(Some(self.running.clone()))
    }
}

/// One connection's place among those authenticating; given back when dropped.
struct Handshake(Option<Arc<(Mutex<usize>, Condvar)>>);

impl Drop for Handshake {
    fn drop(&mut self) {
        if let Some(running) = self.0.take() {
            let (count, freed) = &*running;
            *lock(count) -= 1;
            freed.notify_one();
        }
    }
}

/// Locks `mutex`; no code panics while holding these locks (user methods run under
/// `catch_unwind`), so a poisoned one is taken as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn spawn_conn(f: impl FnOnce() + Send + 'static) {
    // Without a thread the connection is dropped: that peer sees it closed.
    let _ = std::thread::Builder::new()
        .name("multiproc-manager-conn".into())
        .spawn(f);
}

struct Server {
    objects: Mutex<Objects>,
    next_object: AtomicU64,
    next_conn: AtomicU64,
    /// Live connections and locks per client session.
    sessions: Mutex<HashMap<u64, Session>>,
    authkey: Vec<u8>,
    limits: Limits,
    handshake_timeout: Duration,
    handshakes: Handshakes,
}

#[derive(Default)]
struct Objects {
    by_id: HashMap<u64, Entry>,
    by_name: HashMap<String, u64>,
    /// The references each client session holds (made by its `Create`s), given back
    /// when the session ends: a client that dies leaks nothing.
    held: HashMap<u64, HashMap<u64, u64>>,
}

/// An object and its references (Python's `Server.id_to_refcount`).
struct Entry {
    object: Arc<Object>,
    refs: u64,
    /// Named objects live as long as the server.
    pinned: bool,
}

impl Objects {
    /// Drops one reference to `id` (of `session`, if `owned`); frees the object when
    /// none is left.
    fn decref(&mut self, id: u64, session: Option<u64>) {
        if let Some(session) = session {
            // A session's reference that is not there went when the session ended (a
            // `fork` child giving back what its dead parent's session held).
            let Some(held) = self.held.get_mut(&session) else {
                return;
            };
            let Some(n) = held.get_mut(&id) else {
                return;
            };
            *n -= 1;
            if *n == 0 {
                held.remove(&id);
                if held.is_empty() {
                    self.held.remove(&session);
                }
            }
        }
        let Some(entry) = self.by_id.get_mut(&id) else {
            return;
        };
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs == 0 && !entry.pinned {
            let entry = self.by_id.remove(&id).expect("just found");
            entry.object.freed.store(true, Ordering::Release);
        }
    }

    /// One more reference to `id` (of `session`, if given).
    fn incref(&mut self, id: u64, session: Option<u64>) -> bool {
        let Some(entry) = self.by_id.get_mut(&id) else {
            return false;
        };
        entry.refs += 1;
        if let Some(session) = session {
            *self.held.entry(session).or_default().entry(id).or_default() += 1;
        }
        true
    }

    /// Makes one reference taken by `IncRef` `session`'s.
    fn adopt(&mut self, id: u64, session: u64) -> bool {
        if !self.by_id.contains_key(&id) {
            return false;
        }
        *self.held.entry(session).or_default().entry(id).or_default() += 1;
        true
    }

    /// Registers a new object with one reference, `session`'s.
    fn insert(&mut self, id: u64, object: Arc<Object>, session: u64, pinned: bool) {
        self.by_id.insert(
            id,
            Entry {
                object,
                refs: 0,
                pinned,
            },
        );
        self.incref(id, Some(session));
    }
}

struct Object {
    kind: &'static str,
    ty: u64,
    /// Set when the last reference is gone (connection caches drop it then).
    freed: AtomicBool,
    state: Mutex<State>,
    /// Signalled on every change a waiter may wait for (queue, lock, event).
    changed: Condvar,
}

enum State {
    List(Vec<Bytes>),
    Dict(IndexMap<Bytes, Bytes>),
    Cell(Bytes),
    Queue {
        items: VecDeque<Bytes>,
        maxsize: u64,
    },
    /// The connection holding it, and whether its last holder's connection ended
    /// while it held it (the next acquirer is told, as with the process-shared locks).
    Lock {
        holder: Option<u64>,
        abandoned: bool,
    },
    Event(bool),
    Custom(Box<dyn ErasedShared>),
    /// A queue that counts the items put and not yet marked done.
    Joinable {
        items: VecDeque<Bytes>,
        maxsize: u64,
        unfinished: u64,
    },
    RLock(RLockState),
    Semaphore {
        value: u64,
        bound: Option<u64>,
    },
    Condition {
        lock: RLockState,
        waiters: Vec<Waiter>,
        next_ticket: u64,
    },
    Barrier(BarrierState),
    /// An iterator made by a registered type's iterator method.
    Iter(Box<dyn Iterator<Item = Result<Vec<u8>, Failure>> + Send>),
}

/// A reentrant lock: held by one thread of one client session, `count` times.
#[derive(Default)]
struct RLockState {
    holder: Option<(u64, u64)>,
    count: u64,
    /// Its last holder's session ended while it held it.
    abandoned: bool,
}

/// A thread waiting on a condition (or, once notified or given up, waiting to take its
/// lock back).
struct Waiter {
    ticket: u64,
    session: u64,
    thread: u64,
    /// The lock count to restore.
    count: u64,
    notified: bool,
    /// Notified, or no longer waiting for it: now waits for the lock only.
    done: bool,
}

struct BarrierState {
    parties: u64,
    /// The sessions of the parties waiting in this generation.
    arrived: Vec<u64>,
    generation: u64,
    broken: bool,
    /// The generations that ended by a reset or an abort (their waiters see a broken
    /// barrier) among the last few.
    broken_generations: VecDeque<u64>,
}

impl BarrierState {
    fn end_generation(&mut self, passed: bool) {
        if !passed {
            self.broken_generations.push_back(self.generation);
            if self.broken_generations.len() > 64 {
                self.broken_generations.pop_front();
            }
        }
        self.generation += 1;
        self.arrived.clear();
    }
}

/// A user object behind its type ([`Shared`]), as the server sees it.
pub(crate) trait ErasedShared: Send {
    fn call(&mut self, call: &[u8]) -> Result<Vec<u8>, Failure>;
    fn snapshot(&self) -> Result<Vec<u8>, Failure>;
    fn method(&mut self, name: &str, args: &[u8]) -> Result<Vec<u8>, Failure>;
    fn iter(&mut self, name: &str, args: &[u8]) -> Result<super::methods::ErasedIter, Failure>;
    fn exposed(&self) -> Vec<String>;
}

/// What the client names by address to make a user object in the server.
pub(crate) type MakeFn = fn(Vec<u8>) -> Result<Box<dyn ErasedShared>, String>;

struct Holder<T> {
    value: T,
    methods: super::methods::Methods<T>,
}

thread_local! {
    /// Set while a user method runs: its panic is the caller's error, not news for the
    /// server's stderr.
    static IN_USER_METHOD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps the default panic report for everything but user methods' panics, which
/// go back to the caller as [`Failure::Panicked`] (Python's manager does not print
/// them either).
fn quiet_user_panics() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_USER_METHOD.with(std::cell::Cell::get) {
            report(info);
        }
    }));
}

impl<T: Shared> ErasedShared for Holder<T> {
    fn call(&mut self, call: &[u8]) -> Result<Vec<u8>, Failure> {
        let call: T::Call =
            codec::decode(call).map_err(|e| Failure::BadRequest(format!("call: {e}")))?;
        let reply = user_code(|| self.value.call(call))
            .map_err(|payload| Failure::Panicked(crate::codec::panic_message(payload.as_ref())))?;
        codec::encode(&reply).map_err(|e| Failure::BadRequest(format!("reply: {e}")))
    }

    fn snapshot(&self) -> Result<Vec<u8>, Failure> {
        codec::encode(&self.value).map_err(|e| Failure::BadRequest(format!("state: {e}")))
    }

    fn method(&mut self, name: &str, args: &[u8]) -> Result<Vec<u8>, Failure> {
        let (value, methods) = (&mut self.value, &self.methods);
        user_code(|| methods.call(value, name, args)).unwrap_or_else(|p| Err(panic_failure(&p)))
    }

    fn iter(&mut self, name: &str, args: &[u8]) -> Result<super::methods::ErasedIter, Failure> {
        let (value, methods) = (&mut self.value, &self.methods);
        user_code(|| methods.iter_of(value, name, args)).unwrap_or_else(|p| Err(panic_failure(&p)))
    }

    fn exposed(&self) -> Vec<String> {
        self.methods.names()
    }
}

/// A panic in a named method or an iterator, as the caller's remote error.
pub(crate) fn panic_failure(payload: &Box<dyn std::any::Any + Send>) -> Failure {
    Failure::Remote {
        kind: "Panic".into(),
        message: crate::codec::panic_message(payload.as_ref()),
    }
}

/// Runs user code: its panic is caught, and not reported on the server's stderr.
pub(crate) fn user_code<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let was = IN_USER_METHOD.with(|f| f.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_USER_METHOD.with(|f| f.set(was));
    result
}

/// Makes a `T` from its encoding (the function a client names by address).
pub(crate) fn make_shared<T: Shared>(init: Vec<u8>) -> Result<Box<dyn ErasedShared>, String> {
    let value: T = decode_any(&init)?;
    let mut methods = super::methods::Methods::new();
    user_code(|| T::methods(&mut methods)).map_err(|p| {
        format!(
            "{}::methods panicked: {}",
            std::any::type_name::<T>(),
            crate::codec::panic_message(p.as_ref())
        )
    })?;
    Ok(Box::new(Holder { value, methods }))
}

fn decode_any<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    codec::decode(bytes).map_err(|e| e.to_string())
}

/// One side of a connection, as the request loop sees it.
trait Transport {
    /// The next request; `None` ends the connection.
    fn recv(&mut self) -> Option<Request>;
    /// `false` ends the connection.
    fn send(&mut self, reply: &Reply) -> bool;
    /// Whether the client is still connected (checked without waiting).
    fn peer_alive(&self) -> bool;
}

impl Transport for ServerPipe {
    fn recv(&mut self) -> Option<Request> {
        // The end, garbage, or a value of another type: nothing more to do with this
        // peer.
        Connection::recv(self).ok()
    }

    fn send(&mut self, reply: &Reply) -> bool {
        Connection::send(self, reply).is_ok()
    }

    fn peer_alive(&self) -> bool {
        !sys::fd::peer_hung_up(self.as_fd())
    }
}

struct TcpTransport {
    stream: TcpStream,
    limits: Limits,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

impl Transport for TcpTransport {
    fn recv(&mut self) -> Option<Request> {
        // The end, garbage, an oversized frame: this connection is over.
        wire::read_frame(&mut self.stream, &self.limits, &mut self.rbuf).ok()
    }

    fn send(&mut self, reply: &Reply) -> bool {
        wire::write_frame(&mut self.stream, reply, &self.limits, &mut self.wbuf).is_ok()
    }

    fn peer_alive(&self) -> bool {
        // A client waiting for a reply sends nothing: a readable stream is one that
        // ended (or a peer that broke the protocol).
        !sys::fd::wait_readable(self.stream.as_fd(), Some(Duration::ZERO)).unwrap_or(true)
    }
}

fn authenticate<S: io::Read + io::Write>(stream: &mut S, key: &[u8]) -> bool {
    auth::deliver_challenge(stream, key, Role::Server).is_ok()
        && auth::answer_challenge(stream, key, Role::Server).is_ok()
}

impl Server {
    fn serve_unix(&self, mut stream: UnixStream, handshake: Handshake) {
        // An abstract socket has no file permissions: only our own user (or root)
        // may go on to the handshake.
        if !sys::fd::peer_is_same_user(stream.as_fd()).unwrap_or(false) {
            return;
        }
        let mut timed = auth::Deadline::new(&mut stream, self.handshake_timeout);
        if !authenticate(&mut timed, &self.authkey) {
            return;
        }
        drop(handshake);
        let _ = stream.set_read_timeout(Some(self.handshake_timeout));
        let _ = stream.set_write_timeout(Some(self.handshake_timeout));
        let Ok((mut mine, theirs)) = connection::pipe_with::<Reply, Request>() else {
            return;
        };
        mine.set_max_message(self.limits.max_message);
        if wire::hand_over(&stream, theirs).is_err() {
            return;
        }
        drop(stream);
        self.serve(mine);
    }

    fn serve_tcp(&self, mut stream: TcpStream, handshake: Handshake) {
        let _ = stream.set_nodelay(true);
        let mut timed = auth::Deadline::new(&mut stream, self.handshake_timeout);
        if !authenticate(&mut timed, &self.authkey) {
            return;
        }
        drop(handshake);
        let _ = stream.set_read_timeout(None);
        let _ = stream.set_write_timeout(None);
        self.serve(TcpTransport {
            stream,
            limits: self.limits,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
        });
    }

    /// The request loop of one connection.
    fn serve(&self, mut transport: impl Transport) {
        // Until it says hello, a connection is a session of its own.
        let mut conn = Conn {
            session: OWN_SESSION | self.next_conn.fetch_add(1, Ordering::Relaxed),
            cache: HashMap::new(),
            locks: Vec::new(),
            sweep_at: 64,
        };
        self.enter_session(conn.session);
        while let Some(request) = transport.recv() {
            let reply = match request {
                Request::Hello { session } => {
                    let session = session & !OWN_SESSION;
                    if conn.session != session {
                        self.leave_session(&mut conn);
                        conn.session = session;
                        self.enter_session(session);
                    }
                    Reply::Count(self.limits.max_message as u64)
                }
                Request::Create { kind, ty, name } => self.create(kind, ty, name, conn.session),
                Request::Call { id, op } => self.call(&mut conn, id, op, &transport),
                Request::AdoptCall { id, op } => {
                    lock(&self.objects).adopt(id, conn.session);
                    self.call(&mut conn, id, op, &transport)
                }
                Request::IncRef { id } => {
                    if lock(&self.objects).incref(id, None) {
                        Reply::Unit
                    } else {
                        Reply::Error(Failure::NoSuchObject(id))
                    }
                }
                Request::NumberOfObjects => Reply::Count(lock(&self.objects).by_id.len() as u64),
                Request::DecRef { id, session } => {
                    lock(&self.objects).decref(id, session);
                    conn.cache.remove(&id);
                    Reply::Unit
                }
                Request::Shutdown => {
                    transport.send(&Reply::Unit);
                    sys::proc::exit_now(0);
                }
            };
            // A reply over the size limit would fail to send and end the connection,
            // releasing the locks it holds for other proxies of this process: say so
            // instead, and keep the connection.
            let reply = match codec::encoded_size(&reply) {
                Ok(n) if n <= self.limits.max_message => reply,
                Ok(n) => Reply::Error(Failure::BadRequest(format!(
                    "the reply ({n} bytes) is over the size limit ({} bytes)",
                    self.limits.max_message
                ))),
                Err(e) => Reply::Error(Failure::BadRequest(format!(
                    "the reply cannot be encoded: {e}"
                ))),
            };
            if !transport.send(&reply) {
                break;
            }
        }
        self.leave_session(&mut conn);
    }

    /// An operation on the object `id`.
    fn call(&self, conn: &mut Conn, id: u64, op: Op, transport: &impl Transport) -> Reply {
        let Some(object) = self.object(conn, id) else {
            return Reply::Error(Failure::NoSuchObject(id));
        };
        match op {
            Op::CustomIter { name, args } => self.make_iter(&object, &name, &args, conn.session),
            op => conn.apply(&object, op, &|| transport.peer_alive()),
        }
    }

    fn enter_session(&self, session: u64) {
        lock(&self.sessions).entry(session).or_default().conns += 1;
    }

    /// This connection is done with its session: the locks it acquired are the
    /// session's; when the session's last connection ends (its process died, or closed
    /// its connections: a client keeps them while the process may use the server),
    /// they are released, each marked abandoned so that the next acquirer learns it.
    /// The release happens under the sessions' lock, so that a new connection of the
    /// same session cannot re-acquire one in between and lose it (nothing takes the
    /// sessions' lock while holding an object's).
    fn leave_session(&self, conn: &mut Conn) {
        let mut sessions = lock(&self.sessions);
        let Some(s) = sessions.get_mut(&conn.session) else {
            return;
        };
        for object in conn.locks.drain(..) {
            if !s.locks.iter().any(|l| Arc::ptr_eq(l, &object)) {
                s.locks.push(object);
            }
        }
        s.conns -= 1;
        if s.conns > 0 {
            return;
        }
        let orphaned = sessions
            .remove(&conn.session)
            .map(|s| s.locks)
            .unwrap_or_default();
        for object in orphaned {
            let mut state = lock(&object.state);
            session_ended(&mut state, conn.session);
            object.changed.notify_all();
        }
        // The references the session made go with it.
        let mut objects = lock(&self.objects);
        if let Some(held) = objects.held.remove(&conn.session) {
            for (id, n) in held {
                for _ in 0..n {
                    objects.decref(id, None);
                }
            }
        }
    }

    fn object(&self, conn: &mut Conn, id: u64) -> Option<Arc<Object>> {
        if let Some(object) = conn.cache.get(&id) {
            if !object.freed.load(Ordering::Acquire) {
                return Some(object.clone());
            }
            conn.cache.remove(&id);
            return None;
        }
        let object = lock(&self.objects).by_id.get(&id)?.object.clone();
        // Objects freed through other connections leave this cache now and then.
        if conn.cache.len() >= conn.sweep_at {
            conn.cache.retain(|_, o| !o.freed.load(Ordering::Acquire));
            conn.sweep_at = (conn.cache.len() * 2).max(64);
        }
        conn.cache.insert(id, object.clone());
        Some(object)
    }

    /// Makes an iterator object from a registered type's iterator method.
    fn make_iter(&self, object: &Object, name: &str, args: &[u8], session: u64) -> Reply {
        let iter = match &mut *lock(&object.state) {
            State::Custom(c) => c.iter(name, args),
            _ => return not_a(object, "registered type"),
        };
        match iter {
            Ok(iter) => self.register(
                Arc::new(Object::new("iterator", 0, State::Iter(iter))),
                None,
                session,
            ),
            Err(f) => Reply::Error(f),
        }
    }

    /// Registers a new object (named, unless the name was taken in between: then the
    /// object of that name is the reply), with one reference of `session`.
    fn register(&self, object: Arc<Object>, name: Option<String>, session: u64) -> Reply {
        let mut objects = lock(&self.objects);
        // Two clients may race to make the same name: the first one wins.
        if let Some(name) = &name
            && let Some(&id) = objects.by_name.get(name)
        {
            objects.incref(id, Some(session));
            return Reply::Id(id);
        }
        let id = self.next_object.fetch_add(1, Ordering::Relaxed);
        objects.insert(id, object, session, name.is_some());
        if let Some(name) = name {
            objects.by_name.insert(name, id);
        }
        Reply::Id(id)
    }

    fn create(&self, kind: Kind, ty: u64, name: Option<String>, session: u64) -> Reply {
        let kind_name = kind.name();
        if let Some(name) = &name {
            let mut objects = lock(&self.objects);
            if let Some(&id) = objects.by_name.get(name) {
                let object = &objects.by_id[&id].object;
                return if object.kind != kind_name {
                    Reply::Error(Failure::WrongKind {
                        expected: kind_name.to_string(),
                        found: object.kind.to_string(),
                    })
                } else if object.ty != ty {
                    Reply::Error(Failure::WrongType)
                } else {
                    objects.incref(id, Some(session));
                    Reply::Id(id)
                };
            }
        }
        let state = match kind {
            Kind::List(items) => State::List(items),
            Kind::Dict(pairs) => State::Dict(pairs.into_iter().collect()),
            Kind::Cell(value) => State::Cell(value),
            Kind::Queue { maxsize } => State::Queue {
                items: VecDeque::new(),
                maxsize,
            },
            Kind::Lock => State::Lock {
                holder: None,
                abandoned: false,
            },
            Kind::Event => State::Event(false),
            Kind::Custom { exe, make, init } => {
                // Function addresses mean something only in the same executable.
                let proof = match sys::entry::verify(exe) {
                    Ok(proof) => proof,
                    Err(e) => return Reply::Error(Failure::BadRequest(e.to_string())),
                };
                let make: MakeFn = sys::entry::resolve(&proof, make);
                match make(init.into_vec()) {
                    Ok(object) => State::Custom(object),
                    Err(e) => return Reply::Error(Failure::BadRequest(e)),
                }
            }
            Kind::Array(items) => State::List(items),
            Kind::JoinableQueue { maxsize } => State::Joinable {
                items: VecDeque::new(),
                maxsize,
                unfinished: 0,
            },
            Kind::RLock => State::RLock(RLockState::default()),
            Kind::Semaphore { value, bound } => State::Semaphore { value, bound },
            Kind::Condition => State::Condition {
                lock: RLockState::default(),
                waiters: Vec::new(),
                next_ticket: 1,
            },
            Kind::Barrier { parties } => State::Barrier(BarrierState {
                parties,
                arrived: Vec::new(),
                generation: 0,
                broken: false,
                broken_generations: VecDeque::new(),
            }),
        };
        self.register(Arc::new(Object::new(kind_name, ty, state)), name, session)
    }
}

impl Object {
    fn new(kind: &'static str, ty: u64, state: State) -> Object {
        Object {
            kind,
            ty,
            freed: AtomicBool::new(false),
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }
}

/// A session's claims on `state` end: a lock it holds is released (and marked
/// abandoned), its condition waits are dropped, a barrier it waits at breaks (the
/// other parties would otherwise wait for a party that will never come, or pass
/// with it missing).
fn session_ended(state: &mut State, session: u64) {
    match state {
        State::Lock { holder, abandoned } if *holder == Some(session) => {
            *holder = None;
            *abandoned = true;
        }
        State::RLock(l) => l.session_ended(session),
        State::Condition { lock, waiters, .. } => {
            lock.session_ended(session);
            waiters.retain(|w| w.session != session);
        }
        State::Barrier(b) if b.arrived.contains(&session) => {
            b.broken = true;
            b.end_generation(false);
        }
        _ => {}
    }
}

impl RLockState {
    fn session_ended(&mut self, session: u64) {
        if self.holder.is_some_and(|(s, _)| s == session) {
            self.holder = None;
            self.count = 0;
            self.abandoned = true;
        }
    }

    /// Takes the lock for `owner` if it is free or `owner`'s already; `Some(abandoned)`
    /// if taken.
    fn try_take(&mut self, owner: (u64, u64), count: u64) -> Option<bool> {
        match self.holder {
            None => {
                self.holder = Some(owner);
                self.count = count;
                Some(std::mem::take(&mut self.abandoned))
            }
            Some(h) if h == owner => {
                self.count += count;
                Some(false)
            }
            Some(_) => None,
        }
    }

    fn release(&mut self, owner: (u64, u64)) -> Result<bool, Failure> {
        match self.holder {
            Some(h) if h == owner => {
                self.count -= 1;
                if self.count == 0 {
                    self.holder = None;
                    return Ok(true);
                }
                Ok(false)
            }
            _ => Err(Failure::NotOwner),
        }
    }
}

/// Session numbers of connections that did not say hello (clients choose theirs with
/// this bit clear).
const OWN_SESSION: u64 = 1 << 63;

/// A client process's connections and the locks they acquired.
#[derive(Default)]
struct Session {
    conns: usize,
    locks: Vec<Arc<Object>>,
}

/// One connection's own state.
struct Conn {
    /// The client session it belongs to: the holder of the locks it acquires.
    session: u64,
    /// Objects this connection has used (saves a look-up under the global lock).
    cache: HashMap<u64, Arc<Object>>,
    /// Objects this connection acquired or waits at (locks, conditions, barriers):
    /// its session's when it ends.
    locks: Vec<Arc<Object>>,
    /// The cache's size at which its freed objects are swept out.
    sweep_at: usize,
}

fn wait_deadline(wait_ms: u32) -> Instant {
    Instant::now() + Duration::from_millis(u64::from(wait_ms.min(MAX_WAIT_MS)))
}

/// Waits on `object` until `ready` gives a reply or the deadline passes.
///
/// After having waited, it first checks that the client is still there: an item that
/// arrives for a client that died while waiting stays in the queue for the living.
fn wait_for(
    object: &Object,
    wait_ms: u32,
    alive: &dyn Fn() -> bool,
    mut ready: impl FnMut(&mut State) -> Option<Reply>,
) -> Reply {
    let deadline = wait_deadline(wait_ms);
    let mut state = lock(&object.state);
    let mut waited = false;
    loop {
        if waited && !alive() {
            return Reply::Timeout;
        }
        waited = true;
        if let Some(reply) = ready(&mut state) {
            return reply;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Reply::Timeout;
        }
        state = object
            .changed
            .wait_timeout(state, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

fn index(i: u64, len: usize) -> Result<usize, Failure> {
    if i < len as u64 {
        Ok(i as usize)
    } else {
        Err(Failure::Index {
            index: i,
            len: len as u64,
        })
    }
}

impl Conn {
    /// Runs `op`; `alive` tells whether the client is still there (asked only after a
    /// wait).
    fn apply(&mut self, object: &Arc<Object>, op: Op, alive: &dyn Fn() -> bool) -> Reply {
        let op = match op {
            Op::QueuePut { item, wait_ms } => return Self::put(object, item, wait_ms, alive),
            Op::QueueGet { wait_ms } => return Self::get(object, wait_ms, alive),
            Op::LockAcquire { wait_ms } => return self.acquire(object, wait_ms, alive),
            Op::EventWait { wait_ms } => return Self::wait(object, wait_ms, alive),
            op @ (Op::QueueJoin { .. }
            | Op::RLockAcquire { .. }
            | Op::SemAcquire { .. }
            | Op::CondWaitPoll { .. }
            | Op::BarrierPoll { .. }) => return self.apply_wait(object, op, alive),
            op => op,
        };
        let mut state = lock(&object.state);
        match (&mut *state, op) {
            // ---- shared
            (State::List(v), Op::Len) => Reply::Count(v.len() as u64),
            (State::Dict(d), Op::Len) => Reply::Count(d.len() as u64),
            (State::Queue { items, .. } | State::Joinable { items, .. }, Op::Len) => {
                Reply::Count(items.len() as u64)
            }
            (State::List(v), Op::Clear) => {
                v.clear();
                Reply::Unit
            }
            (State::Dict(d), Op::Clear) => {
                d.clear();
                Reply::Unit
            }
            (State::List(v), Op::Snapshot) => Reply::Many(v.clone()),
            (State::Dict(d), Op::Snapshot) => {
                Reply::Pairs(d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            (State::Cell(c), Op::Snapshot) => Reply::Bytes(c.clone()),
            (State::Custom(c), Op::Snapshot) => match c.snapshot() {
                Ok(bytes) => Reply::Bytes(ByteBuf::from(bytes)),
                Err(f) => Reply::Error(f),
            },

            // ---- list
            (State::List(v), Op::ListGet(i)) => match index(i, v.len()) {
                Ok(i) => Reply::Bytes(v[i].clone()),
                Err(f) => Reply::Error(f),
            },
            (State::List(v), Op::ListSet(i, item)) => match index(i, v.len()) {
                Ok(i) => {
                    v[i] = item;
                    Reply::Unit
                }
                Err(f) => Reply::Error(f),
            },
            (State::List(v), Op::ListPush(item)) => {
                v.push(item);
                Reply::Unit
            }
            (State::List(v), Op::ListExtend(items)) => {
                v.extend(items);
                Reply::Unit
            }
            (State::List(v), Op::ListInsert(i, item)) => {
                // Python's insert: an index past the end appends.
                let at = (i.min(v.len() as u64)) as usize;
                v.insert(at, item);
                Reply::Unit
            }
            (State::List(v), Op::ListPop(None)) => match v.pop() {
                Some(item) => Reply::Bytes(item),
                None => Reply::Error(Failure::Empty),
            },
            (State::List(v), Op::ListPop(Some(i))) => match index(i, v.len()) {
                Ok(i) => Reply::Bytes(v.remove(i)),
                Err(f) => Reply::Error(f),
            },
            (State::List(v), Op::ListRemove(item)) => match v.iter().position(|x| *x == item) {
                Some(i) => {
                    v.remove(i);
                    Reply::Unit
                }
                None => Reply::Error(Failure::NotFound),
            },
            (State::List(v), Op::ListIndex(item)) => match v.iter().position(|x| *x == item) {
                Some(i) => Reply::Count(i as u64),
                None => Reply::Error(Failure::NotFound),
            },
            (State::List(v), Op::ListCount(item)) => {
                Reply::Count(v.iter().filter(|x| **x == item).count() as u64)
            }
            (State::List(v), Op::ListReverse) => {
                v.reverse();
                Reply::Unit
            }

            // ---- dict
            (State::Dict(d), Op::DictGet(k)) => Reply::MaybeBytes(d.get(&k).cloned()),
            (State::Dict(d), Op::DictInsert(k, v)) => Reply::MaybeBytes(d.insert(k, v)),
            (State::Dict(d), Op::DictSet(k, v)) => {
                d.insert(k, v);
                Reply::Unit
            }
            (State::Dict(d), Op::DictRemove(k)) => Reply::MaybeBytes(d.shift_remove(&k)),
            (State::Dict(d), Op::DictContains(k)) => Reply::Bool(d.contains_key(&k)),
            (State::Dict(d), Op::DictKeys) => Reply::Many(d.keys().cloned().collect()),
            (State::Dict(d), Op::DictValues) => Reply::Many(d.values().cloned().collect()),
            (State::Dict(d), Op::DictUpdate(pairs)) => {
                d.extend(pairs);
                Reply::Unit
            }
            (State::Dict(d), Op::DictSetDefault(k, v)) => {
                Reply::Bytes(d.entry(k).or_insert(v).clone())
            }
            (State::Dict(d), Op::DictCompareAndSet { key, expected, new }) => {
                if d.get(&key) == expected.as_ref() {
                    d.insert(key, new);
                    Reply::Bool(true)
                } else {
                    Reply::Bool(false)
                }
            }

            // ---- value, namespace
            (State::Cell(c), Op::CellSet(v)) => {
                *c = v;
                Reply::Unit
            }
            (State::Cell(c), Op::CellSwap(v)) => Reply::Bytes(std::mem::replace(c, v)),
            (State::Cell(c), Op::CellCompareAndSet { expected, new }) => {
                if *c == expected {
                    *c = new;
                    Reply::Bool(true)
                } else {
                    Reply::Bool(false)
                }
            }

            // ---- lock
            (State::Lock { holder, .. }, Op::LockRelease) => {
                if holder.take().is_some() {
                    object.changed.notify_all();
                    Reply::Unit
                } else {
                    Reply::Error(Failure::NotLocked)
                }
            }
            (State::Lock { holder, .. }, Op::LockLocked) => Reply::Bool(holder.is_some()),

            // ---- event
            (State::Event(flag), Op::EventSet) => {
                *flag = true;
                object.changed.notify_all();
                Reply::Unit
            }
            (State::Event(flag), Op::EventClear) => {
                *flag = false;
                Reply::Unit
            }
            (State::Event(flag), Op::EventIsSet) => Reply::Bool(*flag),

            // ---- registered types
            (State::Custom(c), Op::CustomCall(call)) => match c.call(&call) {
                Ok(bytes) => Reply::Bytes(ByteBuf::from(bytes)),
                Err(f) => Reply::Error(f),
            },

            // The operations of the later kinds, out of line (the ones above are the
            // hot path of the common objects).
            (state, op) => self.apply_more(object, state, op),
        }
    }

    /// The waits of the later kinds (joinable queue, rlock, semaphore, condition,
    /// barrier), out of line.
    #[inline(never)]
    fn apply_wait(&mut self, object: &Arc<Object>, op: Op, alive: &dyn Fn() -> bool) -> Reply {
        match op {
            Op::QueueJoin { wait_ms } => wait_for(object, wait_ms, alive, |s| match s {
                State::Joinable { unfinished: 0, .. } => Some(Reply::Unit),
                State::Joinable { .. } => None,
                _ => Some(not_a(object, "joinable queue")),
            }),
            Op::RLockAcquire { wait_ms, thread } => {
                self.acquire_rlock(object, wait_ms, thread, alive)
            }
            Op::SemAcquire { wait_ms } => wait_for(object, wait_ms, alive, |s| match s {
                State::Semaphore { value: 0, .. } => None,
                State::Semaphore { value, .. } => {
                    *value -= 1;
                    Some(Reply::Bool(true))
                }
                _ => Some(not_a(object, "semaphore")),
            }),
            Op::CondWaitPoll {
                ticket,
                wait_ms,
                give_up,
            } => Self::cond_poll(object, ticket, wait_ms, give_up, alive),
            Op::BarrierPoll {
                generation,
                wait_ms,
                give_up,
            } => Self::barrier_poll(object, generation, wait_ms, give_up, alive),
            op => Reply::Error(Failure::BadRequest(format!("{op:?} is not a wait"))),
        }
    }

    /// The operations of the later kinds and registered types' named methods, out of
    /// line; anything else is not an operation of the object's kind.
    #[inline(never)]
    fn apply_more(&mut self, object: &Arc<Object>, state: &mut State, op: Op) -> Reply {
        let me = self.session;
        match (state, op) {
            (State::Custom(c), Op::CustomMethod { name, args }) => match c.method(&name, &args) {
                Ok(bytes) => Reply::Bytes(ByteBuf::from(bytes)),
                Err(f) => Reply::Error(f),
            },
            (State::Custom(c), Op::CustomExposed) => Reply::Many(
                c.exposed()
                    .into_iter()
                    .map(|n| ByteBuf::from(n.into_bytes()))
                    .collect(),
            ),
            (State::Iter(it), Op::IterNext) => match user_code(|| it.next()) {
                Ok(Some(Ok(bytes))) => Reply::MaybeBytes(Some(ByteBuf::from(bytes))),
                Ok(Some(Err(f))) => Reply::Error(f),
                Ok(None) => Reply::MaybeBytes(None),
                Err(p) => Reply::Error(panic_failure(&p)),
            },

            // ---- joinable queue
            (State::Joinable { unfinished, .. }, Op::QueueTaskDone) => {
                if *unfinished == 0 {
                    Reply::Error(Failure::TooManyTaskDone)
                } else {
                    *unfinished -= 1;
                    if *unfinished == 0 {
                        object.changed.notify_all();
                    }
                    Reply::Unit
                }
            }
            (State::Joinable { unfinished, .. }, Op::QueueUnfinished) => Reply::Count(*unfinished),

            // ---- rlock, condition
            (State::RLock(l) | State::Condition { lock: l, .. }, Op::RLockRelease { thread }) => {
                match l.release((me, thread)) {
                    Ok(freed) => {
                        if freed {
                            object.changed.notify_all();
                        }
                        Reply::Unit
                    }
                    Err(f) => Reply::Error(f),
                }
            }
            (
                State::Condition {
                    lock,
                    waiters,
                    next_ticket,
                },
                Op::CondWaitBegin { thread },
            ) => {
                if lock.holder != Some((me, thread)) {
                    return Reply::Error(Failure::NotOwner);
                }
                let ticket = *next_ticket;
                *next_ticket += 1;
                waiters.push(Waiter {
                    ticket,
                    session: me,
                    thread,
                    count: std::mem::take(&mut lock.count),
                    notified: false,
                    done: false,
                });
                lock.holder = None;
                object.changed.notify_all();
                Reply::Count(ticket)
            }
            (State::Condition { lock, waiters, .. }, Op::CondNotify { thread, n }) => {
                if lock.holder != Some((me, thread)) {
                    return Reply::Error(Failure::NotOwner);
                }
                let mut woken = 0;
                for w in waiters.iter_mut().filter(|w| !w.done) {
                    if woken == n {
                        break;
                    }
                    w.notified = true;
                    w.done = true;
                    woken += 1;
                }
                if woken > 0 {
                    object.changed.notify_all();
                }
                Reply::Count(woken)
            }

            // ---- semaphore
            (State::Semaphore { value, bound }, Op::SemRelease) => {
                if bound.is_some_and(|b| *value >= b) || *value == u64::MAX {
                    Reply::Error(Failure::TooManyReleases)
                } else {
                    *value += 1;
                    object.changed.notify_all();
                    Reply::Unit
                }
            }
            (State::Semaphore { value, .. }, Op::SemValue) => Reply::Count(*value),

            // ---- barrier
            (State::Barrier(b), Op::BarrierArrive) => {
                if b.broken {
                    return Reply::Error(Failure::BrokenBarrier);
                }
                let index = b.arrived.len() as u64;
                let generation = b.generation;
                if index + 1 >= b.parties {
                    b.end_generation(true);
                    object.changed.notify_all();
                    Reply::Arrived {
                        index,
                        generation,
                        passed: true,
                    }
                } else {
                    b.arrived.push(me);
                    if !self.locks.iter().any(|l| Arc::ptr_eq(l, object)) {
                        self.locks.push(object.clone());
                    }
                    Reply::Arrived {
                        index,
                        generation,
                        passed: false,
                    }
                }
            }
            (State::Barrier(b), Op::BarrierAbort) => {
                b.broken = true;
                if !b.arrived.is_empty() {
                    b.end_generation(false);
                }
                object.changed.notify_all();
                Reply::Unit
            }
            (State::Barrier(b), Op::BarrierReset) => {
                if !b.arrived.is_empty() {
                    b.end_generation(false);
                }
                b.broken = false;
                object.changed.notify_all();
                Reply::Unit
            }
            (State::Barrier(b), Op::BarrierState) => Reply::BarrierState {
                parties: b.parties,
                waiting: b.arrived.len() as u64,
                broken: b.broken,
            },

            (_, op) => Reply::Error(Failure::BadRequest(format!(
                "{op:?} is not an operation of a {}",
                object.kind
            ))),
        }
    }

    fn put(object: &Object, item: Bytes, wait_ms: u32, alive: &dyn Fn() -> bool) -> Reply {
        let mut item = Some(item);
        let reply = wait_for(object, wait_ms, alive, |s| match s {
            State::Queue { items, maxsize } => {
                if *maxsize == 0 || (items.len() as u64) < *maxsize {
                    items.extend(item.take());
                    Some(Reply::Unit)
                } else {
                    None
                }
            }
            State::Joinable {
                items,
                maxsize,
                unfinished,
            } => {
                if *maxsize == 0 || (items.len() as u64) < *maxsize {
                    items.extend(item.take());
                    *unfinished += 1;
                    Some(Reply::Unit)
                } else {
                    None
                }
            }
            _ => Some(not_a(object, "queue")),
        });
        object.changed.notify_all();
        reply
    }

    fn get(object: &Object, wait_ms: u32, alive: &dyn Fn() -> bool) -> Reply {
        let reply = wait_for(object, wait_ms, alive, |s| match s {
            State::Queue { items, .. } | State::Joinable { items, .. } => {
                items.pop_front().map(Reply::Bytes)
            }
            _ => Some(not_a(object, "queue")),
        });
        object.changed.notify_all();
        reply
    }

    fn acquire(&mut self, object: &Arc<Object>, wait_ms: u32, alive: &dyn Fn() -> bool) -> Reply {
        let me = self.session;
        let reply = wait_for(object, wait_ms, alive, |s| match s {
            State::Lock {
                holder: holder @ None,
                abandoned,
            } => {
                *holder = Some(me);
                if std::mem::take(abandoned) {
                    Some(Reply::OwnerDied)
                } else {
                    Some(Reply::Bool(true))
                }
            }
            State::Lock {
                holder: Some(_), ..
            } => None,
            _ => Some(not_a(object, "lock")),
        });
        if matches!(reply, Reply::Bool(true) | Reply::OwnerDied)
            && !self.locks.iter().any(|l| Arc::ptr_eq(l, object))
        {
            self.locks.push(object.clone());
        }
        reply
    }

    fn acquire_rlock(
        &mut self,
        object: &Arc<Object>,
        wait_ms: u32,
        thread: u64,
        alive: &dyn Fn() -> bool,
    ) -> Reply {
        let me = (self.session, thread);
        let reply = wait_for(object, wait_ms, alive, |s| match s {
            State::RLock(l) | State::Condition { lock: l, .. } => {
                l.try_take(me, 1).map(|abandoned| {
                    if abandoned {
                        Reply::OwnerDied
                    } else {
                        Reply::Bool(true)
                    }
                })
            }
            _ => Some(not_a(object, "rlock")),
        });
        if matches!(reply, Reply::Bool(true) | Reply::OwnerDied)
            && !self.locks.iter().any(|l| Arc::ptr_eq(l, object))
        {
            self.locks.push(object.clone());
        }
        reply
    }

    /// A condition wait after its start: until notified (or given up), then until the
    /// lock is free to take back.
    fn cond_poll(
        object: &Object,
        ticket: u64,
        wait_ms: u32,
        give_up: bool,
        alive: &dyn Fn() -> bool,
    ) -> Reply {
        wait_for(object, wait_ms, alive, |s| {
            let State::Condition { lock, waiters, .. } = s else {
                return Some(not_a(object, "condition"));
            };
            let Some(at) = waiters.iter().position(|w| w.ticket == ticket) else {
                return Some(Reply::Error(Failure::BadRequest(format!(
                    "no condition wait {ticket}"
                ))));
            };
            let w = &mut waiters[at];
            if give_up {
                w.done = true;
            }
            if !w.done {
                return None;
            }
            let (owner, count, notified) = ((w.session, w.thread), w.count, w.notified);
            // Ownership given back as it was: an abandoned lock is said so by the
            // next plain acquire, not here.
            lock.try_take(owner, count)?;
            waiters.remove(at);
            Some(Reply::Bool(notified))
        })
    }

    fn barrier_poll(
        object: &Object,
        generation: u64,
        wait_ms: u32,
        give_up: bool,
        alive: &dyn Fn() -> bool,
    ) -> Reply {
        let reply = wait_for(object, wait_ms, alive, |s| {
            let State::Barrier(b) = s else {
                return Some(not_a(object, "barrier"));
            };
            if b.generation != generation {
                return Some(if b.broken_generations.contains(&generation) {
                    Reply::Error(Failure::BrokenBarrier)
                } else {
                    Reply::Unit
                });
            }
            if b.broken {
                return Some(Reply::Error(Failure::BrokenBarrier));
            }
            if give_up {
                // Python's `wait(timeout)`: a party that times out breaks the barrier.
                b.broken = true;
                b.end_generation(false);
                return Some(Reply::Error(Failure::BrokenBarrier));
            }
            None
        });
        object.changed.notify_all();
        reply
    }

    fn wait(object: &Object, wait_ms: u32, alive: &dyn Fn() -> bool) -> Reply {
        wait_for(object, wait_ms, alive, |s| match s {
            State::Event(true) => Some(Reply::Bool(true)),
            State::Event(false) => None,
            _ => Some(not_a(object, "event")),
        })
    }
}

fn not_a(object: &Object, kind: &str) -> Reply {
    Reply::Error(Failure::WrongKind {
        expected: kind.to_string(),
        found: object.kind.to_string(),
    })
}
