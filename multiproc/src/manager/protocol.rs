//! What clients and the manager server say to each other, after authentication.
//!
//! One [`Request`] from the client, one [`Reply`] from the server, in turn, on one
//! connection. Values are opaque encoded bytes (postcard of the proxy's `T`): the server
//! never decodes them, so it needs no knowledge of the user's types. Equality of values
//! and of dictionary keys is equality of their encodings.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::sys::entry::FnAddr;

/// An encoded value.
pub(crate) type Bytes = ByteBuf;

/// The longest a server-side wait lasts in one request. A client waiting longer (a
/// blocking `get`, `lock`, `wait`) repeats the request, so a server thread is never
/// blocked on behalf of a client that has died for more than this.
pub(crate) const MAX_WAIT_MS: u32 = 100;

/// A client's request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Makes a new object, or, with a `name`, finds the object of that name (making it
    /// from `kind` if there is none). `ty` fingerprints the proxy's Rust type: a named
    /// object found with another type is refused.
    Create {
        kind: Kind,
        ty: u64,
        name: Option<String>,
    },
    /// An operation on the object `id`.
    Call { id: u64, op: Op },
    /// Ends the server process (after replying).
    Shutdown,
    /// The first request of a client's connection: the client process's session. The
    /// manager locks a session acquires are its own until its last connection ends,
    /// whichever of its connections acquired them. The reply is the server's size limit
    /// (`Count`): a client refuses a larger request itself and keeps its connection.
    Hello { session: u64 },
    /// One more reference to `id`, held by no session: a proxy being sent to another
    /// process (Python's `incref` when a proxy is pickled). The receiver gives it back
    /// with `DecRef { owned: false }`.
    IncRef { id: u64 },
    /// One reference to `id` fewer: that of the client session `session` (made by its
    /// `Create`: a `fork` child gives back the one its parent handed over with the
    /// child's job), or, with `None`, one taken by `IncRef`. The object is freed when
    /// none is left (named objects never are).
    DecRef { id: u64, session: Option<u64> },
    /// How many objects the server holds (reply `Count`).
    NumberOfObjects,
    /// `Call`, after making a reference to `id` taken by `IncRef` (a proxy received)
    /// the session's, so that it goes when the session ends even if the proxy is never
    /// dropped (its process was killed): a received proxy's first call.
    AdoptCall { id: u64, op: Op },
}

/// A new object and its initial contents.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Kind {
    List(Vec<Bytes>),
    Dict(Vec<(Bytes, Bytes)>),
    /// `Value` and `Namespace`: one value.
    Cell(Bytes),
    Queue {
        maxsize: u64,
    },
    Lock,
    Event,
    /// A user type ([`super::Shared`]): `make`, in the server, decodes `init` into the
    /// object. `exe` identifies the client's executable: function addresses only mean
    /// something in a process that runs the same one.
    Custom {
        exe: (u64, u64),
        make: FnAddr,
        init: Bytes,
    },
    /// A list of fixed length (`manager.Array`).
    Array(Vec<Bytes>),
    /// A queue that counts unfinished tasks (`manager.JoinableQueue`).
    JoinableQueue {
        maxsize: u64,
    },
    RLock,
    /// `bound`: the most `value` may reach (a `BoundedSemaphore`).
    Semaphore {
        value: u64,
        bound: Option<u64>,
    },
    /// A condition over a reentrant lock of its own.
    Condition,
    Barrier {
        parties: u64,
    },
}

impl Kind {
    /// A short name, for error messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Kind::List(_) => "list",
            Kind::Dict(_) => "dict",
            Kind::Cell(_) => "value",
            Kind::Queue { .. } => "queue",
            Kind::Lock => "lock",
            Kind::Event => "event",
            Kind::Custom { .. } => "registered type",
            Kind::Array(_) => "array",
            Kind::JoinableQueue { .. } => "joinable queue",
            Kind::RLock => "rlock",
            Kind::Semaphore { bound: None, .. } => "semaphore",
            Kind::Semaphore { bound: Some(_), .. } => "bounded semaphore",
            Kind::Condition => "condition",
            Kind::Barrier { .. } => "barrier",
        }
    }
}

/// An operation on an object. Waits (`wait_ms`) are capped at [`MAX_WAIT_MS`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    /// list, dict, queue: number of items.
    Len,
    /// list, dict: remove everything.
    Clear,
    /// list: every item; dict: every (key, value); value, namespace and registered
    /// types: the value.
    Snapshot,

    ListGet(u64),
    ListSet(u64, Bytes),
    ListPush(Bytes),
    ListExtend(Vec<Bytes>),
    ListInsert(u64, Bytes),
    /// `None`: the last item.
    ListPop(Option<u64>),
    /// Removes the first item equal to the value.
    ListRemove(Bytes),
    ListIndex(Bytes),
    ListCount(Bytes),
    ListReverse,

    DictGet(Bytes),
    /// Reply: the previous value, if any.
    DictInsert(Bytes, Bytes),
    /// As `DictInsert`, without sending the previous value back.
    DictSet(Bytes, Bytes),
    DictRemove(Bytes),
    DictContains(Bytes),
    DictKeys,
    DictValues,
    DictUpdate(Vec<(Bytes, Bytes)>),
    DictSetDefault(Bytes, Bytes),
    /// Sets `key` to `new` if its current value is `expected` (`None`: absent).
    DictCompareAndSet {
        key: Bytes,
        expected: Option<Bytes>,
        new: Bytes,
    },

    CellSet(Bytes),
    CellSwap(Bytes),
    CellCompareAndSet {
        expected: Bytes,
        new: Bytes,
    },

    QueuePut {
        item: Bytes,
        wait_ms: u32,
    },
    QueueGet {
        wait_ms: u32,
    },

    LockAcquire {
        wait_ms: u32,
    },
    LockRelease,
    LockLocked,

    EventSet,
    EventClear,
    EventIsSet,
    EventWait {
        wait_ms: u32,
    },

    CustomCall(Bytes),

    /// A registered type's method by name, with its encoded arguments.
    CustomMethod {
        name: String,
        args: Bytes,
    },
    /// A registered type's iterator method by name: the reply is the `Id` of a new
    /// iterator object (one reference, the session's).
    CustomIter {
        name: String,
        args: Bytes,
    },
    /// The names of a registered type's methods (Python's `_exposed_`).
    CustomExposed,
    /// iterator: the next item (`MaybeBytes`, `None` at the end).
    IterNext,

    /// joinable queue: one task done.
    QueueTaskDone,
    /// joinable queue: waits until every task put is done.
    QueueJoin {
        wait_ms: u32,
    },
    /// joinable queue: the count of unfinished tasks.
    QueueUnfinished,

    /// rlock and condition: acquires for the caller's `thread` of its session.
    RLockAcquire {
        wait_ms: u32,
        thread: u64,
    },
    RLockRelease {
        thread: u64,
    },

    SemAcquire {
        wait_ms: u32,
    },
    SemRelease,
    SemValue,

    /// condition: releases the lock (which `thread` must hold) and waits on ticket the
    /// reply (`Count`) names.
    CondWaitBegin {
        thread: u64,
    },
    /// condition: waits until the ticket is notified (or, with `give_up`, stops
    /// waiting for that), then takes the lock back; replies `Bool(notified)`.
    CondWaitPoll {
        ticket: u64,
        wait_ms: u32,
        give_up: bool,
    },
    /// condition: wakes at most `n` waiters (the caller must hold the lock).
    CondNotify {
        thread: u64,
        n: u64,
    },

    /// barrier: arrives (reply `Arrived`).
    BarrierArrive,
    /// barrier: waits until the `generation` arrived at passes (`Unit`) or breaks; a
    /// `give_up` breaks it (the caller's wait ran out, as in Python).
    BarrierPoll {
        generation: u64,
        wait_ms: u32,
        give_up: bool,
    },
    BarrierAbort,
    BarrierReset,
    /// barrier: (parties, waiting, broken).
    BarrierState,
}

/// The server's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Unit,
    Bool(bool),
    Count(u64),
    /// The object made or found by `Create`.
    Id(u64),
    Bytes(Bytes),
    MaybeBytes(Option<Bytes>),
    Many(Vec<Bytes>),
    Pairs(Vec<(Bytes, Bytes)>),
    /// A wait ran out of time (the client decides whether to wait again).
    Timeout,
    Error(Failure),
    /// A lock was acquired whose previous holder's connection ended while it held it.
    /// (Last, so that the variants before it keep their codes on the wire.)
    OwnerDied,
    /// A barrier arrival: the caller's index, and the generation it waits in (if the
    /// barrier did not pass at once).
    Arrived {
        index: u64,
        generation: u64,
        passed: bool,
    },
    /// barrier: (parties, waiting, broken).
    BarrierState {
        parties: u64,
        waiting: u64,
        broken: bool,
    },
}

/// Why the server refused a request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Failure {
    NoSuchObject(u64),
    WrongKind {
        expected: String,
        found: String,
    },
    WrongType,
    Index {
        index: u64,
        len: u64,
    },
    NotFound,
    Empty,
    /// No longer sent (queues report a full queue as a wait that ended); kept so that
    /// the variants after it keep their codes on the wire.
    Full,
    NotLocked,
    Panicked(String),
    BadRequest(String),
    NoSuchMethod(String),
    /// A registered method returned an error (or panicked: kind `"Panic"`).
    Remote {
        kind: String,
        message: String,
    },
    NotOwner,
    TooManyReleases,
    TooManyTaskDone,
    BrokenBarrier,
}
