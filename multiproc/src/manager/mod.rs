//! Managers: Python's `multiprocessing.Manager()` and `BaseManager` (S42).
//!
//! [`Manager::start`] starts a server process that owns shared objects — lists, arrays,
//! dictionaries, values, namespaces, queues and joinable queues, locks, reentrant locks,
//! semaphores, conditions, events, barriers and objects of your own types ([`Shared`],
//! with methods callable by name) — and hands out typed proxies to them. A proxy is a handle: pass it to
//! a child [`Process`] (any start method) and the child's calls act on
//! the same object.
//!
//! ```
//! # multiproc::init();
//! use multiproc::manager::{DictProxy, ListProxy, Manager};
//! use multiproc::Process;
//!
//! fn work((d, l): (DictProxy<String, i32>, ListProxy<i32>)) {
//!     d.set("1".into(), 2).unwrap();
//!     for i in 0..l.len().unwrap() {
//!         l.set(i, -(i as i32)).unwrap();
//!     }
//! }
//!
//! let m = Manager::start().unwrap();
//! let l = m.list(0..10).unwrap();
//! let d = m.dict().unwrap();
//! Process::start(work, (d.clone(), l.clone())).unwrap().join().unwrap();
//! assert_eq!(d.items().unwrap(), [("1".to_string(), 2)]);
//! assert_eq!(l.to_vec().unwrap(), [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);
//! ```
//!
//! # Values are bytes to the server
//!
//! The server never decodes what it stores: a proxy `ListProxy<T>` encodes each `T`
//! (postcard) before sending it, and decodes what comes back. So the server needs no
//! knowledge of your types, and any `Serialize + DeserializeOwned` type works. Equality
//! in the server — dictionary keys, `remove`, `index`, `count`, `compare_and_set` — is
//! equality of encodings (see [`DictProxy`]).
//!
//! # Transports and authentication
//!
//! Locally the server listens on a Unix socket in the abstract namespace
//! ([`Address::Abstract`]: no file, so nothing is left behind even when the owner is
//! killed) and serves only processes of its own user (or root). Every connection first runs an
//! HMAC-SHA256 challenge–response both ways (Python's authkey handshake: the key itself
//! never crosses); then the server hands the client one end of a
//! [`connection`](crate::connection) pipe over shared memory, so a call costs one pipe
//! round trip (a few microseconds). [`Manager::serve`] listens on TCP instead
//! (Python's `BaseManager(address=(host, port), authkey=…)`), and [`Manager::connect`]
//! reaches such a server from anywhere: requests then travel as codec frames over TCP.
//! A wrong key is [`ManagerError::Authentication`]; a peer that sends garbage or an
//! oversized frame loses its own connection only.
//!
//! Objects made with [`Manager::named`] have a name: every client that asks for the
//! same name gets the same object (Python's `register('get_queue', callable=…)` on a
//! served manager).
//!
//! # Failure model
//!
//! | event | what you see |
//! |---|---|
//! | the server dies (any way, `SIGKILL` included) | every call, also one waiting in a queue `get`, returns [`ManagerError::Disconnected`] promptly (the pipe reports the hang-up within ~20 ms) |
//! | the manager's owner dies | the server dies with it (it is a daemon child with the library's parent-death signal) |
//! | a client dies holding a manager lock | the server releases the lock when the client's connection closes, and the next acquirer gets it with [`ManagerLockError::OwnerDied`] (raw [`LockProxy::acquire`]: [`ManagerError::OwnerDied`]), as with the process-shared locks |
//! | a client dies while waiting in a queue `get` | the server checks that a client that waited is still connected before it hands it an item (or a lock), so an item put later stays for the living |
//! | a registered method panics | that call returns [`ManagerError::Panicked`]; the server carries on |
//! | a proxy moves into a `fork` child | the child opens its own connections on its first call |
//! | a client dies waiting at a manager barrier | the barrier breaks: the other parties get [`ManagerError::BrokenBarrier`] (Python's would pass with a dead party counted, or wait for ever) |
//! | a client dies holding an `RLock` or a `Condition`'s lock, or waiting on a condition | the lock is released (the next acquirer is told: `OwnerDied`); its wait is forgotten, so a `notify` is not spent on it |
//! | a registered method returns an error or panics | that call returns [`ManagerError::Remote`] with the kind and message ([`SharedProxy::call`]'s panic: [`ManagerError::Panicked`]); the server carries on |
//!
//! # Reference counting
//!
//! An object lives while a proxy names it (Python's `incref`/`decref`): the proxies of
//! one process share one reference, given back when the last of them is dropped, and
//! the object is freed in the server when no reference is left. A proxy sent to
//! another process (as an argument under `spawn`/`forkserver`, through a queue or a
//! pipe) takes a reference for the receiver when it is serialised, so the object
//! survives a sender that drops its proxy before the receiver has it; the receiver
//! gives it back when its copy is dropped, or makes it its own at its first use there.
//! The references a client process owns go when its last connection ends, so a client
//! killed outright leaks nothing it made or used (Python's server keeps such objects
//! until it shuts down); only a proxy received and never used by a process that is
//! then killed keeps its object until the server ends (and one a `fork` child was
//! handed, below, until its parent's session ends). Objects made with
//! [`Manager::named`] live as long as the server. One serialisation is for one
//! receiver: decoding the same bytes twice gives two proxies and one reference.
//!
//! Under `fork` a `Process` argument is moved into the child, not serialised: a proxy
//! the parent moved there (it kept no clone) hands its reference to the child, which
//! gives it back when it drops the proxy; a proxy the parent kept a clone of stays the
//! parent's. So the object lives whichever side drops first (Python's proxies incref
//! only after the fork, in the child, and lose that race). Copies a raw
//! [`fork`](crate::sys::fork) child inherits stay the parent's.

use std::fmt;
use std::net::ToSocketAddrs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::codec::{self, CodecError, Limits};
use crate::process::{Process, ProcessBuilder, StartError, StartMethod};
use crate::sys;

mod auth;
mod client;
mod methods;
pub(crate) mod protocol;
mod proxy;
mod server;
mod sync;
mod wire;

pub use auth::AuthenticationError;
pub use methods::{Methods, RemoteError};
pub use proxy::{
    ArrayProxy, DictProxy, EventProxy, IterProxy, JoinableQueueProxy, ListIter, ListProxy,
    LockProxy, ManagerLockError, ManagerLockGuard, NamespaceProxy, QueueProxy, SharedProxy,
    ValueProxy,
};
pub use sync::{
    BarrierProxy, ConditionProxy, RLockGuard, RLockProxy, SemaphoreGuard, SemaphoreProxy,
};

use client::Client;
use protocol::{Kind, Reply, Request};
use proxy::{ObjectRef, enc};

/// The largest request or reply a server accepts by default (a larger frame closes
/// the connection that sent it).
pub const DEFAULT_MAX_MESSAGE: usize = 256 << 20;

/// How long a new connection may take to prove the key, by default.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most connections a server authenticates at once; more wait in the listen backlog
/// (a flood of silent connections costs at most this many threads and descriptors).
pub const MAX_HANDSHAKES: usize = 32;

/// How long [`Manager::shutdown`] waits for the server to exit before it kills it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where a manager's server listens: the address type of
/// [`connection::Listener`](crate::connection::Listener), shared.
pub use crate::connection::Address;
use crate::connection::abstract_addr;

/// A call to a manager failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The server process is gone: it died, or the manager was shut down (the other
    /// side is gone: `Disconnected`, as for a [`Connection`](crate::connection::Connection)).
    #[error("the manager's server is gone (it died or was shut down)")]
    Disconnected,
    /// No connection could be made to the server.
    #[error("cannot connect to the manager at {address}: {source}")]
    Connect {
        /// The address tried.
        address: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The authentication handshake failed (a wrong authkey, for one).
    #[error("authentication failed: {0}")]
    Authentication(#[from] AuthenticationError),
    /// The server process could not be started.
    #[error("cannot start the manager's server: {0}")]
    Start(#[from] StartError),
    /// A value did not encode, or what came back did not decode as the proxy's type.
    #[error("manager value: {0}")]
    Codec(#[from] CodecError),
    /// Setting up the server (socket, directory) failed.
    #[error("manager: {0}")]
    Io(#[from] std::io::Error),
    /// The server has no object with this id.
    #[error("the manager has no object {0}")]
    NoSuchObject(u64),
    /// A named object exists with another kind (a dict asked for as a list).
    #[error("the named object is a {found}, not a {expected}")]
    WrongKind {
        /// The kind asked for.
        expected: String,
        /// The kind it is.
        found: String,
    },
    /// A named object exists with another item type.
    #[error("the named object holds another type")]
    WrongType,
    /// A list index past the end (Python's `IndexError`).
    #[error("list index {index} out of range (length {len})")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The list's length.
        len: u64,
    },
    /// The value is not in the list (Python's `ValueError` of `remove`).
    #[error("the value is not in the list")]
    NotFound,
    /// `pop` of an empty list (the list proxies turn it into `None`).
    #[error("the list is empty")]
    Empty,
    /// A `_timeout` call ran out of time.
    #[error("timed out")]
    Timeout,
    /// [`LockProxy::acquire`]: the lock's previous holder died holding it; the caller
    /// holds it now (the guard-returning calls say it with
    /// [`ManagerLockError::OwnerDied`]).
    #[error("the previous holder of the manager lock died holding it (the caller holds it now)")]
    OwnerDied,
    /// `release` of a lock nobody holds.
    #[error("release of an unlocked lock")]
    NotLocked,
    /// A registered type's method panicked in the server.
    #[error("the method panicked in the manager: {0}")]
    Panicked(String),
    /// The server sent, or was sent, something that is not the protocol.
    #[error("manager protocol: {0}")]
    Protocol(String),
    /// A registered type has no method of this name (Python's `AttributeError` for a
    /// name not in `exposed=`).
    #[error("the registered type has no method {0:?}")]
    NoSuchMethod(String),
    /// A registered type's named method returned an error or panicked in the server
    /// (Python re-raises the server's exception): its kind and message.
    #[error("the method failed in the manager: {0}")]
    Remote(RemoteError),
    /// `release` (or `wait`, `notify`) of a manager `RLock` or `Condition` that the
    /// calling thread does not hold (Python's `RuntimeError`).
    #[error("the calling thread does not hold the manager's lock")]
    NotOwner,
    /// A `BoundedSemaphore` released more often than acquired (Python's `ValueError`).
    #[error("the semaphore was released too many times")]
    TooManyReleases,
    /// `task_done` called more often than items were put (Python's `ValueError`).
    #[error("task_done() called too many times")]
    TooManyTaskDone,
    /// The manager barrier is broken (aborted, reset, timed out or a party died;
    /// Python's `BrokenBarrierError`).
    #[error("the manager barrier is broken")]
    BrokenBarrier,
    /// The manager's initializer panicked (or its arguments did not decode) in the
    /// server: the message. The server has exited.
    #[error("the manager's initializer failed: {0}")]
    Initializer(String),
}

/// A user type whose objects live in a manager's server (Python's
/// `BaseManager.register(typeid, callable)`): a serialisable state and one method,
/// `call`, that takes a request and gives a reply (an enum of each makes several
/// methods).
///
/// Create objects with [`Manager::create`]; the server finds `T`'s code by its address
/// in the executable, so it must run the same executable as the client (it does, for
/// a manager started by this program; a client of a served manager that runs another
/// executable is refused).
///
/// ```
/// # multiproc::init();
/// use multiproc::manager::{Manager, Shared};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Maths { total: i64 }
///
/// #[derive(Serialize, Deserialize)]
/// enum Op { Add(i64), Mul(i64) }
///
/// impl Shared for Maths {
///     type Call = Op;
///     type Reply = i64;
///     fn call(&mut self, op: Op) -> i64 {
///         match op {
///             Op::Add(x) => self.total += x,
///             Op::Mul(x) => self.total *= x,
///         }
///         self.total
///     }
/// }
///
/// let m = Manager::start().unwrap();
/// let maths = m.create(Maths { total: 1 }).unwrap();
/// assert_eq!(maths.call(Op::Add(2)).unwrap(), 3);
/// assert_eq!(maths.call(Op::Mul(7)).unwrap(), 21);
/// assert_eq!(maths.get().unwrap().total, 21);
/// ```
pub trait Shared: Serialize + DeserializeOwned + Send + 'static {
    /// A request (one method call with its arguments).
    type Call: Serialize + DeserializeOwned;
    /// What a call returns.
    type Reply: Serialize + DeserializeOwned;
    /// Runs one call in the server (calls on one object never overlap).
    fn call(&mut self, call: Self::Call) -> Self::Reply;

    /// The methods callable by name (Python's `exposed=`), run in the server like
    /// `call`: see [`Methods`]. None by default.
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::manager::{Manager, ManagerError, Methods, Shared};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Inventory { items: Vec<(String, u32)> }
    ///
    /// impl Shared for Inventory {
    ///     type Call = ();
    ///     type Reply = usize;
    ///     fn call(&mut self, (): ()) -> usize { self.items.len() }
    ///     fn methods(m: &mut Methods<Self>) {
    ///         m.method("add", |inv: &mut Inventory, (name, n): (String, u32)| {
    ///             inv.items.push((name, n));
    ///         });
    ///         m.fallible("count", |inv: &mut Inventory, name: String| {
    ///             match inv.items.iter().find(|(n, _)| *n == name) {
    ///                 Some((_, k)) => Ok(*k),
    ///                 None => Err(format!("no {name}")),
    ///             }
    ///         });
    ///         m.iter("names", |inv: &mut Inventory, ()| {
    ///             inv.items.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    ///         });
    ///     }
    /// }
    ///
    /// let m = Manager::start().unwrap();
    /// let inv = m.create(Inventory { items: vec![] }).unwrap();
    /// inv.method::<()>("add", &("pens".to_string(), 3u32)).unwrap();
    /// inv.method::<()>("add", &("ink".to_string(), 1u32)).unwrap();
    /// assert_eq!(inv.method::<u32>("count", &"pens").unwrap(), 3);
    /// match inv.method::<u32>("count", &"paper") {
    ///     Err(ManagerError::Remote(e)) => {
    ///         assert_eq!((e.kind.as_str(), e.message.as_str()), ("String", "no paper"));
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// let names: Vec<String> = inv.iter("names", &()).unwrap().collect::<Result<_, _>>().unwrap();
    /// assert_eq!(names, ["pens", "ink"]);
    /// assert_eq!(inv.exposed().unwrap(), ["add", "count", "names"]);
    /// ```
    fn methods(methods: &mut Methods<Self>)
    where
        Self: Sized,
    {
        let _ = methods;
    }
}

/// Configuration of a manager before it starts.
#[derive(Clone, Default)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct ManagerBuilder {
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
    method: Option<StartMethod>,
    max_message: Option<usize>,
    handshake_timeout: Option<Duration>,
    initializer: Option<Arc<dyn Fn() -> Result<server::Init, ManagerError> + Send + Sync>>,
}

/// Shows everything but the authkey.
impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("address", &self.address)
            .field("authkey", &self.authkey.as_ref().map(|_| "<hidden>"))
            .field("method", &self.method)
            .field("max_message", &self.max_message)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("initializer", &self.initializer.is_some())
            .finish()
    }
}

impl ManagerBuilder {
    /// Where the server listens (default: an abstract Unix socket of a random name). A TCP
    /// address with port 0 picks a free port: see [`Manager::address`].
    pub fn address(mut self, address: Address) -> Self {
        self.address = Some(address);
        self
    }

    /// The key clients must prove they know (default: 32 random bytes).
    pub fn authkey(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.authkey = Some(key.into());
        self
    }

    /// How the server process is started (default: [`crate::get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// The largest request or reply accepted (default [`DEFAULT_MAX_MESSAGE`]).
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = Some(bytes);
        self
    }

    /// How long a new connection may take to prove the key, in all (default 30 s; a
    /// peer that sends a byte now and then is cut off all the same). The server runs at
    /// most [`MAX_HANDSHAKES`] handshakes at once; further connections wait in the
    /// listen backlog. Zero is refused by [`start`](Self::start).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// The server process runs `f(args)` before it serves anyone (Python's
    /// `BaseManager.start(initializer, initargs)`): [`start`](Self::start) returns
    /// once it has, so every client sees what it set up. If `f` panics, `start` fails
    /// with [`ManagerError::Initializer`] carrying the panic message, and the server
    /// has exited (Python's `start` gives an `EOFError` that does not say why).
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::manager::{Manager, ManagerError};
    ///
    /// fn setup(level: u32) {
    ///     assert!(level < 10, "level {level} is too high");
    /// }
    ///
    /// let m = Manager::builder().initializer(setup, 3).start().unwrap();
    /// drop(m);
    /// match Manager::builder().initializer(setup, 12).start() {
    ///     Err(ManagerError::Initializer(message)) => assert!(message.contains("level 12")),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn initializer<A>(mut self, f: fn(A), args: A) -> Self
    where
        A: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let call: server::InitFn = server::call_init::<A>;
        self.initializer = Some(Arc::new(move || {
            Ok(server::Init {
                exe: sys::proc::exe_identity()?,
                call: sys::entry::FnAddr::of(call),
                f: sys::entry::FnAddr::of(f),
                args: enc(&args)?,
            })
        }));
        self
    }

    /// Starts the server process.
    pub fn start(self) -> Result<Manager, ManagerError> {
        let handshake_timeout = self.handshake_timeout.unwrap_or(HANDSHAKE_TIMEOUT);
        if handshake_timeout.is_zero() {
            return Err(ManagerError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "handshake_timeout must be more than zero",
            )));
        }
        let authkey = match self.authkey {
            Some(key) => key,
            None => auth::random_bytes(32)?,
        };
        let limits = Limits::with_max_message(self.max_message.unwrap_or(DEFAULT_MAX_MESSAGE));
        let (listener, address) = match self.address {
            None => {
                let (listener, name) = bind_fresh_abstract()?;
                (server::Listener::Unix(listener), Address::Abstract(name))
            }
            Some(Address::Abstract(name)) => (
                server::Listener::Unix(OwnedFd::from(UnixListener::bind_addr(&abstract_addr(
                    &name,
                )?)?)),
                Address::Abstract(name),
            ),
            Some(Address::Unix(path)) => (
                server::Listener::Unix(bind_unix(&path)?),
                Address::Unix(path),
            ),
            Some(Address::Tcp(addr)) => {
                let listener = std::net::TcpListener::bind(addr)?;
                let bound = listener.local_addr()?;
                (
                    server::Listener::Tcp(OwnedFd::from(listener)),
                    Address::Tcp(bound),
                )
            }
        };
        let socket_file = match &address {
            Address::Unix(path) => Some(path.clone()),
            Address::Abstract(_) | Address::Tcp(_) => None,
        };
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let mut builder = ProcessBuilder::new()
            .name(format!(
                "SyncManager-{}",
                COUNT.fetch_add(1, Ordering::Relaxed) + 1
            ))
            .daemon(true);
        if let Some(method) = self.method {
            builder = builder.start_method(method);
        }
        let args = server::ServerArgs {
            listener,
            authkey: ByteBuf::from(authkey.clone()),
            max_message: limits.max_message as u64,
            handshake_timeout,
            init: self.initializer.as_ref().map(|f| f()).transpose()?,
            ready: None,
        };
        let mut args = args;
        let ready = match args.init {
            Some(_) => {
                let (mine, theirs) = crate::connection::pipe::<()>()?;
                args.ready = Some(theirs);
                Some(mine)
            }
            None => None,
        };
        let mut cleanup = Cleanup { socket_file };
        let process = match builder.start(server::run, args) {
            Ok(p) => p,
            Err(e) => {
                cleanup.run();
                return Err(e.into());
            }
        };
        let mut manager = Manager {
            client: Arc::new(Client::new(address, authkey, limits)),
            server: Some(process),
            cleanup,
            owner_pid: sys::proc::getpid(),
            exit_status: None,
        };
        if let Some(ready) = ready {
            manager.await_initializer(&ready)?;
        }
        Ok(manager)
    }
}

/// Binds a Unix listener at `path`, readable and writable by its owner only.
fn bind_unix(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(OwnedFd::from(listener))
}

/// Binds a Unix listener to a fresh random name in the abstract namespace.
fn bind_fresh_abstract() -> std::io::Result<(OwnedFd, String)> {
    loop {
        let tag: String = auth::random_bytes(8)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("multiproc-manager-{}-{tag}", sys::proc::getpid());
        match UnixListener::bind_addr(&abstract_addr(&name)?) {
            Ok(listener) => return Ok((OwnedFd::from(listener), name)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    }
}

/// What the owner removes at shutdown: the socket file of a manager given a path
/// (the default address is abstract and leaves nothing).
#[derive(Debug, Default)]
struct Cleanup {
    socket_file: Option<PathBuf>,
}

impl Cleanup {
    fn run(&mut self) {
        if let Some(file) = self.socket_file.take() {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A manager: the owner of a server process (from [`Manager::start`],
/// [`Manager::serve`] or a [`ManagerBuilder`]), or a client of a server started
/// elsewhere ([`Manager::connect`]). Makes the shared objects and hands out their
/// proxies.
///
/// Dropping an owner shuts the server down (Python's `with Manager() as m:`).
#[derive(Debug)]
pub struct Manager {
    client: Arc<Client>,
    server: Option<Process<Result<(), String>>>,
    cleanup: Cleanup,
    /// The process that made it: a `fork` child that inherited a copy (a closure
    /// capturing it) must not shut the server down when its copy is dropped.
    owner_pid: u32,
    /// How the server ended, once it has.
    exit_status: Option<crate::process::ExitStatus>,
}

/// Makes objects in a manager's server, optionally under a name
/// ([`Manager::named`]). [`Manager`] has the same methods, for unnamed objects.
#[derive(Debug, Clone, Copy)]
pub struct Objects<'a> {
    client: &'a Arc<Client>,
    name: Option<&'a str>,
}

impl Objects<'_> {
    fn make(&self, kind: Kind, ty: u64) -> Result<ObjectRef, ManagerError> {
        let request = Request::Create {
            kind,
            ty,
            name: self.name.map(str::to_string),
        };
        match self.client.call(&request)? {
            Reply::Id(id) => Ok(ObjectRef::owned(self.client.clone(), id)),
            other => Err(ManagerError::Protocol(format!(
                "unexpected reply to create: {other:?}"
            ))),
        }
    }

    /// A list holding `items` (Python's `manager.list(items)`).
    pub fn list<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>, ManagerError> {
        let items = items
            .into_iter()
            .map(|x| enc(&x))
            .collect::<Result<_, _>>()?;
        let obj = self.make(Kind::List(items), codec::fingerprint::<ListProxy<T>>())?;
        Ok(ListProxy::from_ref(obj))
    }

    /// An empty dictionary (Python's `manager.dict()`).
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>, ManagerError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.dict_from(std::iter::empty())
    }

    /// A dictionary holding `entries` (Python's `manager.dict(mapping)`).
    pub fn dict_from<K, V>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<DictProxy<K, V>, ManagerError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let pairs = entries
            .into_iter()
            .map(|(k, v)| Ok((enc(&k)?, enc(&v)?)))
            .collect::<Result<_, ManagerError>>()?;
        let obj = self.make(Kind::Dict(pairs), codec::fingerprint::<DictProxy<K, V>>())?;
        Ok(DictProxy::from_ref(obj))
    }

    /// A value (Python's `manager.Value(typecode, value)`).
    pub fn value<T: Serialize + DeserializeOwned>(
        &self,
        value: T,
    ) -> Result<ValueProxy<T>, ManagerError> {
        let obj = self.make(
            Kind::Cell(enc(&value)?),
            codec::fingerprint::<ValueProxy<T>>(),
        )?;
        Ok(ValueProxy::from_ref(obj))
    }

    /// A typed namespace (Python's `manager.Namespace()`): see [`NamespaceProxy`].
    pub fn namespace<T: Serialize + DeserializeOwned>(
        &self,
        value: T,
    ) -> Result<NamespaceProxy<T>, ManagerError> {
        let obj = self.make(
            Kind::Cell(enc(&value)?),
            codec::fingerprint::<NamespaceProxy<T>>(),
        )?;
        Ok(NamespaceProxy::from_ref(obj))
    }

    /// An unbounded queue (Python's `manager.Queue()`).
    pub fn queue<T: Serialize + DeserializeOwned>(&self) -> Result<QueueProxy<T>, ManagerError> {
        self.queue_with_maxsize(0)
    }

    /// A queue of at most `maxsize` items, 0 for no bound (`manager.Queue(maxsize)`).
    pub fn queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<QueueProxy<T>, ManagerError> {
        let obj = self.make(
            Kind::Queue {
                maxsize: maxsize as u64,
            },
            codec::fingerprint::<QueueProxy<T>>(),
        )?;
        Ok(QueueProxy::from_ref(obj))
    }

    /// A lock (Python's `manager.Lock()`).
    pub fn lock(&self) -> Result<LockProxy, ManagerError> {
        let obj = self.make(Kind::Lock, codec::fingerprint::<LockProxy>())?;
        Ok(LockProxy::from_ref(obj))
    }

    /// An event (Python's `manager.Event()`).
    pub fn event(&self) -> Result<EventProxy, ManagerError> {
        let obj = self.make(Kind::Event, codec::fingerprint::<EventProxy>())?;
        Ok(EventProxy::from_ref(obj))
    }

    /// An array of fixed length holding `items` (Python's `manager.Array(typecode,
    /// seq)`): see [`ArrayProxy`].
    pub fn array<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ArrayProxy<T>, ManagerError> {
        let items = items
            .into_iter()
            .map(|x| enc(&x))
            .collect::<Result<_, _>>()?;
        let obj = self.make(Kind::Array(items), codec::fingerprint::<ArrayProxy<T>>())?;
        Ok(ArrayProxy::from_ref(obj))
    }

    /// A joinable queue of at most `maxsize` items, 0 for no bound (Python's
    /// `manager.JoinableQueue(maxsize)`): see [`JoinableQueueProxy`].
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueueProxy<T>, ManagerError> {
        let obj = self.make(
            Kind::JoinableQueue {
                maxsize: maxsize as u64,
            },
            codec::fingerprint::<JoinableQueueProxy<T>>(),
        )?;
        Ok(JoinableQueueProxy::from_ref(obj))
    }

    /// A reentrant lock (Python's `manager.RLock()`): see [`RLockProxy`].
    pub fn rlock(&self) -> Result<RLockProxy, ManagerError> {
        let obj = self.make(Kind::RLock, codec::fingerprint::<RLockProxy>())?;
        Ok(RLockProxy::from_ref(obj))
    }

    /// A semaphore holding `value` permits (Python's `manager.Semaphore(value)`).
    pub fn semaphore(&self, value: u32) -> Result<SemaphoreProxy, ManagerError> {
        let kind = Kind::Semaphore {
            value: value.into(),
            bound: None,
        };
        let obj = self.make(kind, codec::fingerprint::<SemaphoreProxy>())?;
        Ok(SemaphoreProxy::from_ref(obj))
    }

    /// A semaphore that refuses to hold more than `value` permits (Python's
    /// `manager.BoundedSemaphore(value)`): a release past it is
    /// [`ManagerError::TooManyReleases`].
    pub fn bounded_semaphore(&self, value: u32) -> Result<SemaphoreProxy, ManagerError> {
        let kind = Kind::Semaphore {
            value: value.into(),
            bound: Some(value.into()),
        };
        let obj = self.make(kind, codec::fingerprint::<SemaphoreProxy>())?;
        Ok(SemaphoreProxy::from_ref(obj))
    }

    /// A condition variable with a reentrant lock of its own (Python's
    /// `manager.Condition()`): see [`ConditionProxy`].
    pub fn condition(&self) -> Result<ConditionProxy, ManagerError> {
        let obj = self.make(Kind::Condition, codec::fingerprint::<ConditionProxy>())?;
        Ok(ConditionProxy::from_ref(obj))
    }

    /// A barrier for `parties` threads or processes (Python's `manager.Barrier(n)`):
    /// see [`BarrierProxy`]. Zero parties is refused (Python's `ValueError`).
    pub fn barrier(&self, parties: u32) -> Result<BarrierProxy, ManagerError> {
        if parties == 0 {
            return Err(ManagerError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "parties must be more than zero",
            )));
        }
        let kind = Kind::Barrier {
            parties: parties.into(),
        };
        let obj = self.make(kind, codec::fingerprint::<BarrierProxy>())?;
        Ok(BarrierProxy::from_ref(obj))
    }

    /// An object of a registered user type (see [`Shared`]).
    pub fn create<T: Shared>(&self, value: T) -> Result<SharedProxy<T>, ManagerError> {
        let make: server::MakeFn = server::make_shared::<T>;
        let kind = Kind::Custom {
            exe: sys::proc::exe_identity()?,
            make: sys::entry::FnAddr::of(make),
            init: enc(&value)?,
        };
        let obj = self.make(kind, codec::fingerprint::<SharedProxy<T>>())?;
        Ok(SharedProxy::from_ref(obj))
    }
}

impl Manager {
    /// Starts a manager with the defaults (Python's `Manager()`): a server process
    /// listening on a private Unix socket, with a random authkey.
    pub fn start() -> Result<Manager, ManagerError> {
        ManagerBuilder::default().start()
    }

    /// A builder for the address, authkey, start method and limits.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Starts a server process listening on TCP at `addr` for clients that know
    /// `authkey` (Python's `BaseManager(address, authkey).start()`). Port 0 picks a free
    /// port: see [`address`](Self::address). Bind to `127.0.0.1` unless remote
    /// clients must reach it.
    pub fn serve(addr: impl ToSocketAddrs, authkey: &[u8]) -> Result<Manager, ManagerError> {
        let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
        })?;
        ManagerBuilder::default()
            .address(Address::Tcp(addr))
            .authkey(authkey)
            .start()
    }

    /// Connects to a running server (Python's `BaseManager(address, authkey).connect()`),
    /// checking the key at once: a wrong one is [`ManagerError::Authentication`].
    ///
    /// ```
    /// # multiproc::init();
    /// use multiproc::manager::{Address, Manager};
    ///
    /// let server = Manager::serve("127.0.0.1:0", b"secret").unwrap();
    /// let Address::Tcp(addr) = server.address().clone() else { unreachable!() };
    /// // Elsewhere (another process, another machine):
    /// let client = Manager::connect(addr, b"secret").unwrap();
    /// let jobs = client.named("jobs").queue::<String>().unwrap();
    /// jobs.put("first".into()).unwrap();
    /// // The server's own handle sees the same named queue.
    /// assert_eq!(server.named("jobs").queue::<String>().unwrap().get().unwrap(), "first");
    /// assert!(Manager::connect(addr, b"guess").is_err()); // AuthenticationError::Refused
    /// ```
    pub fn connect(address: impl Into<Address>, authkey: &[u8]) -> Result<Manager, ManagerError> {
        let client = Arc::new(Client::new(
            address.into(),
            authkey.to_vec(),
            Limits::with_max_message(DEFAULT_MAX_MESSAGE),
        ));
        client.probe()?;
        Ok(Manager {
            client,
            server: None,
            cleanup: Cleanup::default(),
            owner_pid: sys::proc::getpid(),
            exit_status: None,
        })
    }

    /// Waits until the server says its initializer has run, or has exited (its death
    /// is watched through its pidfd: a copy of the pipe's end that a process forked
    /// meanwhile inherited would keep the pipe from reporting it).
    fn await_initializer(
        &mut self,
        ready: &crate::connection::Connection<()>,
    ) -> Result<(), ManagerError> {
        loop {
            if ready.poll(Some(Duration::from_millis(20)))? && ready.recv().is_ok() {
                return Ok(());
            }
            let Some(server) = self.server.as_mut() else {
                return Err(ManagerError::Disconnected);
            };
            if server.wait_timeout(Duration::ZERO)?.is_none() {
                continue;
            }
            let mut server = self.server.take().expect("checked above");
            self.client.mark_gone();
            self.cleanup.run();
            self.exit_status = server.wait().ok();
            return Err(match server.join() {
                Ok(Err(message)) => ManagerError::Initializer(message),
                Ok(Ok(())) => ManagerError::Disconnected,
                Err(e) => ManagerError::Initializer(format!("the server failed: {e}")),
            });
        }
    }

    /// How many objects the server holds now (Python's `_number_of_objects()`): those
    /// a proxy still names, and the named ones.
    ///
    /// ```
    /// # multiproc::init();
    /// let m = multiproc::manager::Manager::start().unwrap();
    /// let l = m.list([1, 2, 3]).unwrap();
    /// let l2 = l.clone(); // the same reference
    /// assert_eq!(m.number_of_objects().unwrap(), 1);
    /// drop(l);
    /// drop(l2); // the last proxy: the list is freed in the server
    /// assert_eq!(m.number_of_objects().unwrap(), 0);
    /// ```
    pub fn number_of_objects(&self) -> Result<usize, ManagerError> {
        match self.client.call(&Request::NumberOfObjects)? {
            Reply::Count(n) => Ok(n as usize),
            other => Err(ManagerError::Protocol(format!(
                "unexpected reply to number_of_objects: {other:?}"
            ))),
        }
    }

    /// How the server process ended (Python's `manager._process.exitcode`): `None`
    /// while it runs, and for a manager that does not own its server
    /// ([`connect`](Self::connect)). After [`shutdown`](Self::shutdown) it is a clean
    /// exit (code 0), unless the server had to be killed or had died.
    ///
    /// ```
    /// # multiproc::init();
    /// let mut m = multiproc::manager::Manager::start().unwrap();
    /// assert!(m.exit_status().is_none());
    /// m.shutdown().unwrap();
    /// assert_eq!(m.exit_status().unwrap().code(), Some(0));
    /// ```
    pub fn exit_status(&self) -> Option<crate::process::ExitStatus> {
        self.exit_status
    }

    /// Where the server listens (with the actual port of a TCP address bound to 0).
    pub fn address(&self) -> &Address {
        &self.client.address
    }

    /// The authkey clients must know.
    pub fn authkey(&self) -> &[u8] {
        &self.client.authkey
    }

    /// The server's pid, for a manager that owns its server.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Process::pid)
    }

    /// Makes objects under `name`: every client asking for the same name (and kind and
    /// type) gets the same object; the initial contents count only for the first. The
    /// same name asked for as another kind is [`ManagerError::WrongKind`], with other
    /// item types [`ManagerError::WrongType`].
    ///
    /// ```
    /// # multiproc::init();
    /// let m = multiproc::manager::Manager::start().unwrap();
    /// let a = m.named("scores").dict_from([("ann".to_string(), 1u32)]).unwrap();
    /// let b = m.named("scores").dict::<String, u32>().unwrap(); // the same object
    /// assert_eq!(b.get(&"ann".into()).unwrap(), Some(1));
    /// assert_eq!(a.id(), b.id());
    /// ```
    pub fn named<'a>(&'a self, name: &'a str) -> Objects<'a> {
        Objects {
            client: &self.client,
            name: Some(name),
        }
    }

    /// Makes unnamed objects (what `Manager`'s own methods do).
    pub fn objects(&self) -> Objects<'_> {
        Objects {
            client: &self.client,
            name: None,
        }
    }

    /// A list holding `items` (Python's `manager.list(items)`).
    pub fn list<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>, ManagerError> {
        self.objects().list(items)
    }

    /// An empty dictionary (Python's `manager.dict()`).
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>, ManagerError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.objects().dict()
    }

    /// A dictionary holding `entries` (Python's `manager.dict(mapping)`).
    pub fn dict_from<K, V>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<DictProxy<K, V>, ManagerError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.objects().dict_from(entries)
    }

    /// A value (Python's `manager.Value(typecode, value)`).
    pub fn value<T: Serialize + DeserializeOwned>(
        &self,
        value: T,
    ) -> Result<ValueProxy<T>, ManagerError> {
        self.objects().value(value)
    }

    /// A typed namespace (Python's `manager.Namespace()`): see [`NamespaceProxy`].
    pub fn namespace<T: Serialize + DeserializeOwned>(
        &self,
        value: T,
    ) -> Result<NamespaceProxy<T>, ManagerError> {
        self.objects().namespace(value)
    }

    /// An unbounded queue (Python's `manager.Queue()`).
    pub fn queue<T: Serialize + DeserializeOwned>(&self) -> Result<QueueProxy<T>, ManagerError> {
        self.objects().queue()
    }

    /// A queue of at most `maxsize` items, 0 for no bound (`manager.Queue(maxsize)`).
    pub fn queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<QueueProxy<T>, ManagerError> {
        self.objects().queue_with_maxsize(maxsize)
    }

    /// A lock (Python's `manager.Lock()`).
    pub fn lock(&self) -> Result<LockProxy, ManagerError> {
        self.objects().lock()
    }

    /// An event (Python's `manager.Event()`).
    pub fn event(&self) -> Result<EventProxy, ManagerError> {
        self.objects().event()
    }

    /// An object of a registered user type (see [`Shared`]).
    pub fn create<T: Shared>(&self, value: T) -> Result<SharedProxy<T>, ManagerError> {
        self.objects().create(value)
    }

    /// An array of fixed length holding `items` (Python's `manager.Array(typecode,
    /// seq)`): see [`ArrayProxy`].
    pub fn array<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ArrayProxy<T>, ManagerError> {
        self.objects().array(items)
    }

    /// A joinable queue, 0 for no bound (Python's `manager.JoinableQueue(maxsize)`):
    /// see [`JoinableQueueProxy`].
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueueProxy<T>, ManagerError> {
        self.objects().joinable_queue(maxsize)
    }

    /// A reentrant lock (Python's `manager.RLock()`): see [`RLockProxy`].
    pub fn rlock(&self) -> Result<RLockProxy, ManagerError> {
        self.objects().rlock()
    }

    /// A semaphore (Python's `manager.Semaphore(value)`): see [`SemaphoreProxy`].
    pub fn semaphore(&self, value: u32) -> Result<SemaphoreProxy, ManagerError> {
        self.objects().semaphore(value)
    }

    /// A bounded semaphore (Python's `manager.BoundedSemaphore(value)`).
    pub fn bounded_semaphore(&self, value: u32) -> Result<SemaphoreProxy, ManagerError> {
        self.objects().bounded_semaphore(value)
    }

    /// A condition variable (Python's `manager.Condition()`): see [`ConditionProxy`].
    pub fn condition(&self) -> Result<ConditionProxy, ManagerError> {
        self.objects().condition()
    }

    /// A barrier (Python's `manager.Barrier(parties)`): see [`BarrierProxy`].
    pub fn barrier(&self, parties: u32) -> Result<BarrierProxy, ManagerError> {
        self.objects().barrier(parties)
    }

    /// Stops the server and waits for it, then removes the socket file if the manager
    /// was given one (Python's `shutdown()`). Proxies left over get
    /// [`ManagerError::Disconnected`] afterwards. A manager from
    /// [`connect`](Self::connect) only closes its connections, and so does a copy
    /// inherited by a `fork` child (only the process that started the server stops
    /// it, as in Python). Called by `Drop`.
    pub fn shutdown(&mut self) -> Result<(), ManagerError> {
        if sys::proc::getpid() != self.owner_pid {
            // Not our child to reap, nor our directory to remove.
            std::mem::forget(self.server.take());
            self.cleanup = Cleanup::default();
            return Ok(());
        }
        let Some(mut server) = self.server.take() else {
            // Proxies of this manager keep its connections (and with them the
            // session's references and locks).
            if Arc::strong_count(&self.client) == 1 {
                self.client.close_idle();
            }
            return Ok(());
        };
        // A server that died already cannot answer; it is reaped all the same.
        let _ = self.client.call(&Request::Shutdown);
        self.client.mark_gone();
        self.client.close_idle();
        Client::forget(&self.client.address);
        let result = match server.wait_timeout(SHUTDOWN_GRACE) {
            Ok(Some(status)) => {
                self.exit_status = Some(status);
                Ok(())
            }
            Ok(None) | Err(_) => {
                let _ = server.kill();
                server
                    .wait()
                    .map(|status| self.exit_status = Some(status))
                    .map_err(ManagerError::Io)
            }
        };
        self.cleanup.run();
        result
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
