//! The worker process of a [`Pool`](super::Pool): what it receives, what it sends back,
//! and its loop.
//!
//! Each worker has a task queue of its own, written only by the parent, and all
//! workers share one reply queue. Before it runs a task a worker writes the task's id
//! and the time it started into its slot of a small shared block ([`Slots`]); that is
//! how the parent knows which task a dead worker was running (and only that one fails)
//! and when a task has run over its time limit.
//!
//! A chunk of a map is one task, but its items keep their own fates: the worker commits
//! each item's result to its *ledger*, an area of the same shared block, with one
//! release store after the bytes, and marks each item it begins. A parent that finds the
//! worker dead reads the ledger: the items committed keep their results, the item begun
//! and not committed is the one that fails, and the items after it are sent again (see
//! [`Ledger`]). A chunk whose results outgrow the area sends the committed ones ahead on
//! the reply queue ([`Reply::Part`]); a chunk that fits comes back in one reply, as
//! before.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{self, Block};
use crate::codec::{self, panic_message};
use crate::process::child::{Caught, Outcome, catch_traced, run_task};
use crate::queue::mp::Queue;
use crate::sys;
use crate::sys::entry::{FnAddr, Verified};

/// A message on a worker's task queue.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum TaskMsg {
    /// Run `entry(target, args)`; reply with the outcomes.
    Run {
        id: u64,
        entry: FnAddr,
        target: FnAddr,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// Items of the chunk not to run: they were done (or failed) by a worker that
        /// died later in the chunk. 0 for a task sent the first time.
        skip: u64,
    },
    /// Exit once the tasks before this one are done.
    Stop,
}

/// A message on the shared reply queue.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Task `id` ran: one outcome for `apply`; for a chunk, one outcome holding the
    /// results of its items from `first` on (those before came in [`Reply::Part`]s, or
    /// were done by an earlier worker).
    Done {
        worker: u32,
        generation: u32,
        id: u64,
        /// How long it ran, for the parent's choice of how many tasks to queue ahead.
        busy_ns: u64,
        first: u64,
        items: Vec<Outcome>,
    },
    /// Items `first..first + count` of chunk task `id` ran, sent ahead because their
    /// results outgrew the worker's ledger: the postcard body of a `Vec<Item<R>>`.
    Part {
        worker: u32,
        generation: u32,
        id: u64,
        first: u64,
        count: u64,
        #[serde(with = "serde_bytes")]
        results: Vec<u8>,
    },
    /// The initializer panicked (or its arguments did not decode); the worker exits.
    InitFailed {
        worker: u32,
        generation: u32,
        message: String,
    },
    /// Put by the parent itself to wake its collector.
    Wake,
}

/// What an entry function gets: the proof that addresses resolve in this executable,
/// the user's function, the encoded arguments, how many items of a chunk to skip, and
/// the worker's ledger.
pub(crate) struct TaskCall {
    pub(crate) proof: Verified,
    pub(crate) target: FnAddr,
    pub(crate) args: Vec<u8>,
    pub(crate) skip: u64,
    pub(crate) ledger: Ledger,
}

/// What an entry function gives back: the outcomes of the task's reply, and the
/// ledger it borrowed (by value: a function sent by address takes no reference).
pub(crate) struct Ran {
    items: Vec<Outcome>,
    ledger: Ledger,
}

/// The monomorphic function a worker calls for a task.
pub(crate) type TaskEntry = fn(TaskCall) -> Ran;

fn bad_args(e: codec::CodecError) -> Outcome {
    Outcome::Codec(format!("cannot decode the task's arguments: {e}"))
}

/// `f(args)`.
pub(crate) fn entry_one<A: DeserializeOwned, R: Serialize>(call: TaskCall) -> Ran {
    let f: fn(A) -> R = sys::entry::resolve(&call.proof, call.target);
    // Its one item begins with its arguments: a death from here on is the task's.
    call.ledger.begin_items(0);
    Ran {
        items: vec![match codec::decode::<A>(&call.args) {
            Ok(a) => run_task(move || f(a)),
            Err(e) => bad_args(e),
        }],
        ledger: call.ledger,
    }
}

/// `f(args)` for a task that returns a `Result`: its `Err` is captured here, in the
/// worker, as a [`RemoteError`](crate::future::RemoteError) (kind, message, this
/// worker's traceback) and sent as `Result<R, RemoteError>`.
pub(crate) fn entry_try<A, R, E>(call: TaskCall) -> Ran
where
    A: DeserializeOwned,
    R: Serialize,
    E: crate::future::ErrorKind,
{
    let f: fn(A) -> Result<R, E> = sys::entry::resolve(&call.proof, call.target);
    call.ledger.begin_items(0);
    Ran {
        items: vec![match codec::decode::<A>(&call.args) {
            Ok(a) => run_task(move || f(a).map_err(|e| crate::future::RemoteError::capture(&e))),
            Err(e) => bad_args(e),
        }],
        ledger: call.ledger,
    }
}

/// The outcome of one item of a chunk. A whole chunk comes back as one
/// `Outcome::Returned` holding the postcard encoding of a `Vec<Item<R>>`: one buffer for
/// the chunk, not one per item.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Item<R> {
    Ok(R),
    /// The panic's message and traceback.
    Panicked(String, Option<String>),
    Codec(String),
}

/// [`Item`] by reference, with the same encoding.
#[derive(Serialize)]
enum ItemRef<'a, R> {
    Ok(&'a R),
    Panicked(&'a str, Option<&'a str>),
    Codec(&'a str),
}

/// The items of a chunk (the postcard body of a `Vec<T>`), decoded one by one, so that
/// one that does not decode (a user's `Deserialize` that fails or panics) fails alone
/// and under its own index: the items before it run. Those after it fail too (where
/// the failed one ended, and so where the next begins, is unknown), saying why.
struct Chunk<T> {
    /// The items that decoded, from the first.
    items: Vec<T>,
    /// How many items the chunk holds.
    total: usize,
    /// Why the item after `items` did not decode.
    failure: Option<codec::CodecError>,
}

fn decode_chunk<T: DeserializeOwned>(body: &[u8]) -> Result<Chunk<T>, codec::CodecError> {
    // The whole chunk at once first: a success costs what it did. Only a failure is
    // decoded again item by item, to find the item that failed (decoding is repeatable:
    // a pool's tasks and results carry no descriptors).
    if let Ok(items) = codec::decode::<Vec<T>>(body) {
        return Ok(Chunk {
            total: items.len(),
            items,
            failure: None,
        });
    }
    // A sequence length is a varint, as a u64 is.
    let (total, mut rest) = codec::decode_first::<u64>(body)?;
    let total = usize::try_from(total).unwrap_or(usize::MAX);
    let mut items = Vec::with_capacity(total.min(rest.len()));
    while items.len() < total {
        match codec::decode_first::<T>(rest) {
            Ok((item, after)) => {
                items.push(item);
                rest = after;
            }
            Err(e) => {
                return Ok(Chunk {
                    items,
                    total,
                    failure: Some(e),
                });
            }
        }
    }
    if !rest.is_empty() {
        return Err(codec::CodecError::TrailingBytes {
            expected: std::any::type_name::<Vec<T>>(),
            extra: rest.len(),
        });
    }
    Ok(Chunk {
        items,
        total,
        failure: None,
    })
}

/// The outcomes of a chunk as the parent decodes them (the body of a `Vec<Item<R>>`),
/// one by one, so that a result that does not decode (a user's `Deserialize` that
/// fails or panics) fails alone, under its own index: the results before it stand, the
/// ones after it fail saying why (where the failed one ended is unknown).
pub(crate) fn decode_items<R: DeserializeOwned>(
    blob: &[u8],
) -> Result<Vec<Item<R>>, codec::CodecError> {
    let Chunk {
        mut items,
        total,
        failure,
    } = decode_chunk::<Item<R>>(blob)?;
    if let Some(e) = failure {
        let failed = items.len();
        items.push(Item::Codec(format!("cannot decode the task's result: {e}")));
        let after =
            format!("not decoded: item {failed} of its chunk, before it, did not decode ({e})");
        items.extend((failed + 1..total).map(|_| Item::Codec(after.clone())));
    }
    Ok(items)
}

/// Runs `call` on every item of a chunk, catching panics, and encodes the outcomes as a
/// `Vec<Item<R>>`. A result that does not encode becomes that item's `Codec` outcome.
#[cfg(test)]
fn run_chunk<T, R: Serialize>(items: Vec<T>, call: impl Fn(T) -> R) -> Vec<Outcome> {
    let total = items.len();
    let mut ledger = Ledger::for_test();
    run_decoded_chunk(
        Chunk {
            items,
            total,
            failure: None,
        },
        0,
        &mut ledger,
        call,
    )
}

/// Runs items `skip..` of a chunk that may have stopped decoding part-way (the item
/// that did not decode, and every one after it, is a `Codec` outcome), committing each
/// outcome to the ledger as it is known; returns the outcome of the task's reply: the
/// results the ledger holds last.
fn run_decoded_chunk<T, R: Serialize>(
    chunk: Chunk<T>,
    skip: u64,
    ledger: &mut Ledger,
    call: impl Fn(T) -> R,
) -> Vec<Outcome> {
    let Chunk {
        items,
        total,
        failure,
    } = chunk;
    let decoded = items.len();
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    let mut buf = std::mem::take(&mut ledger.buf);
    ledger.begin_items(skip as u64);
    for item in items.into_iter().skip(skip) {
        buf.clear();
        let written = match catch_traced(|| call(item)) {
            // The result's `Serialize` is user code: a panic there fails this item, as
            // one in `call` does, instead of unwinding out of the worker (which died
            // of it, and the item with it, without the panic's text). A result that
            // does not fit in the ledger's room, or does not encode, is encoded again
            // into `buf` (serialising is repeatable, as the codec's errors assume).
            Ok(value) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if ledger.commit_in_place(&ItemRef::Ok(&value)) {
                    return Ok(true);
                }
                postcard::to_io(&ItemRef::Ok(&value), &mut buf).map(|_| false)
            }))
            .map_err(|payload| codec::encode_panicked::<R>(panic_message(payload.as_ref())))
            .and_then(|written| written.map_err(|e| codec::encode_error(&value, e))),
            Err(Caught { message, traceback }) => {
                let panicked = ItemRef::<R>::Panicked(&message, traceback.as_deref());
                postcard::to_io(&panicked, &mut buf)
                    .map(|_| false)
                    .map_err(|e| codec::encode_error(&message, e))
            }
        };
        match written {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                buf.clear();
                let message = format!("result: {e}");
                let _ = postcard::to_io(&ItemRef::<R>::Codec(&message), &mut buf);
            }
        }
        ledger.commit(&buf);
    }
    if let Some(e) = failure {
        let message = format!("cannot decode the task's arguments: {e}");
        let after =
            format!("not run: item {decoded} of its chunk, before it, did not decode ({e})");
        for i in decoded.max(skip)..total {
            buf.clear();
            let text = if i == decoded { &message } else { &after };
            let _ = postcard::to_io(&ItemRef::<R>::Codec(text), &mut buf);
            ledger.commit(&buf);
        }
    }
    ledger.buf = buf;
    vec![Outcome::Returned(ledger.results())]
}

/// Decodes a chunk of `T`s and runs `f` on its items from `call.skip` on.
fn run_call<T: DeserializeOwned, R: Serialize>(call: TaskCall, f: impl Fn(T) -> R) -> Ran {
    let TaskCall {
        args,
        skip,
        mut ledger,
        ..
    } = call;
    let items = match decode_chunk::<T>(&args) {
        Ok(chunk) => run_decoded_chunk(chunk, skip, &mut ledger, f),
        Err(e) => vec![bad_args(e)],
    };
    Ran { items, ledger }
}

/// `f(item)` for each item of a chunk.
pub(crate) fn entry_chunk<A: DeserializeOwned, R: Serialize>(call: TaskCall) -> Ran {
    let f: fn(A) -> R = sys::entry::resolve(&call.proof, call.target);
    run_call(call, f)
}

/// `f(a, b)` for each `(a, b)` of a chunk (`starmap`).
pub(crate) fn entry_star2<A, B, R>(call: TaskCall) -> Ran
where
    A: DeserializeOwned,
    B: DeserializeOwned,
    R: Serialize,
{
    let f: fn(A, B) -> R = sys::entry::resolve(&call.proof, call.target);
    run_call(call, |(a, b): (A, B)| f(a, b))
}

/// `f(a, b, c)` for each `(a, b, c)` of a chunk (`starmap`).
pub(crate) fn entry_star3<A, B, C, R>(call: TaskCall) -> Ran
where
    A: DeserializeOwned,
    B: DeserializeOwned,
    C: DeserializeOwned,
    R: Serialize,
{
    let f: fn(A, B, C) -> R = sys::entry::resolve(&call.proof, call.target);
    run_call(call, |(a, b, c): (A, B, C)| f(a, b, c))
}

/// Bytes per worker slot: one cache line, so that workers do not share lines.
const SLOT: usize = 128;
const CURRENT_AT: usize = 0;
const STARTED_AT: usize = 8;
const DONE_AT: usize = 16;
/// Ids of tasks queued to the worker that were cancelled: it skips them.
const CANCELLED_AT: usize = 24;
const CANCELLED_LEN: usize = (SLOT - CANCELLED_AT) / 8;

/// Bytes of each worker's ledger (after every worker's slot): a line of words, then
/// the results of the items its chunk has finished. 64 KiB holds thousands of small
/// results; larger ones go ahead on the reply queue ([`Reply::Part`]). The pages are
/// touched only as results are written.
const AREA: usize = 64 * 1024;
/// 1 + the index of the item the worker began the task's items from (0: not begun).
const ITEM_AT: usize = 0;
/// The index in the task of the first item whose result the ledger holds.
const BASE_AT: usize = 8;
/// `count << 32 | bytes`: how many results the ledger holds, in how many bytes; stored
/// after the bytes (release), so that it never counts a result half written.
const COMMIT_AT: usize = 16;
const RESULTS_AT: usize = 64;
const RESULTS_LEN: usize = AREA - RESULTS_AT;

/// Per worker: the id of the task it runs and when it started it (CLOCK_MONOTONIC
/// nanoseconds, the same clock in every process); then, after every worker's slot,
/// each worker's ledger ([`Ledger`]).
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    block: Arc<Block>,
    len: usize,
}

impl Slots {
    pub(crate) fn new(len: usize) -> std::io::Result<Slots> {
        let block = Block::new(kind(), block_len(len))?;
        Ok(Slots {
            block: Arc::new(block),
            len,
        })
    }

    fn at(&self, worker: usize, field: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(worker < self.len);
        self.block.u64_at(block::BODY + worker * SLOT + field)
    }

    /// Where `worker`'s ledger starts in the block.
    fn area(&self, worker: usize) -> usize {
        assert!(worker < self.len);
        block::BODY + SLOT * self.len + AREA * worker
    }

    fn ledger_at(&self, worker: usize, field: usize) -> &std::sync::atomic::AtomicU64 {
        self.block.u64_at(self.area(worker) + field)
    }

    /// What the ledger of `worker` says of the task its slot names (read once the
    /// worker is dead: nothing changes it then).
    pub(crate) fn progress(&self, worker: usize) -> Progress {
        let begun = self.ledger_at(worker, ITEM_AT).load(Ordering::Acquire);
        let commit = self.ledger_at(worker, COMMIT_AT).load(Ordering::Acquire);
        let base = self.ledger_at(worker, BASE_AT).load(Ordering::Acquire);
        let (count, bytes) = (commit >> 32, (commit & u64::from(u32::MAX)) as usize);
        let mut results = Vec::new();
        // A word out of range (a worker that scribbled on it) holds nothing.
        let count = if bytes <= RESULTS_LEN && count <= bytes as u64 {
            seq_prefix(count, &mut results);
            let from = self.area(worker) + RESULTS_AT;
            results.extend_from_slice(&self.block.map().as_slice()[from..from + bytes]);
            count
        } else {
            0
        };
        Progress {
            begun: begun.checked_sub(1),
            base,
            count,
            results,
        }
    }

    /// The task `worker` runs now (0: none yet) and when it started it.
    ///
    /// The id is read first: the worker writes the start time before the id (release),
    /// so a new id always comes with its own start time. An old id may come with the
    /// next task's start time, which only makes the old task look younger: it has
    /// finished anyway.
    pub(crate) fn current(&self, worker: usize) -> (u64, u64) {
        let id = self.at(worker, CURRENT_AT).load(Ordering::Acquire);
        let started = self.at(worker, STARTED_AT).load(Ordering::Acquire);
        (id, started)
    }

    /// The last task `worker` has put its reply for (0: none).
    pub(crate) fn done(&self, worker: usize) -> u64 {
        self.at(worker, DONE_AT).load(Ordering::Acquire)
    }

    /// Forgets what the previous worker at this index ran.
    pub(crate) fn reset(&self, worker: usize) {
        self.at(worker, CURRENT_AT).store(0, Ordering::Release);
        self.at(worker, DONE_AT).store(0, Ordering::Release);
        for field in [ITEM_AT, BASE_AT, COMMIT_AT] {
            self.ledger_at(worker, field).store(0, Ordering::Release);
        }
        for k in 0..CANCELLED_LEN {
            self.at(worker, CANCELLED_AT + 8 * k)
                .store(0, Ordering::Release);
        }
    }

    /// Tells `worker` to skip task `id`, queued to it; `false` if its list is full.
    /// The caller then looks at [`current`](Self::current): the worker publishes the
    /// task it begins before it looks at the list, and both sides use sequentially
    /// consistent operations, so either the worker sees the id and skips the task, or
    /// the caller sees the task running (and stops it).
    pub(crate) fn cancel_queued(&self, worker: usize, id: u64) -> bool {
        (0..CANCELLED_LEN).any(|k| {
            self.at(worker, CANCELLED_AT + 8 * k)
                .compare_exchange(0, id, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
    }

    /// Whether task `id`, which `worker` begins, was cancelled (and forgets it).
    fn take_cancelled(&self, worker: usize, id: u64) -> bool {
        (0..CANCELLED_LEN).any(|k| {
            self.at(worker, CANCELLED_AT + 8 * k)
                .compare_exchange(id, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
    }

    fn end(&self, worker: usize, id: u64) {
        self.at(worker, DONE_AT).store(id, Ordering::Release);
    }

    /// Publishes that `worker` begins task `id`; returns the start time it recorded.
    fn begin(&self, worker: usize, id: u64) -> u64 {
        let now = monotonic_ns();
        self.at(worker, STARTED_AT).store(now, Ordering::Release);
        self.at(worker, CURRENT_AT).store(id, Ordering::SeqCst);
        now
    }
}

fn kind() -> u64 {
    block::kind::<Slots>("pool slots")
}

/// The bytes of the slots block of `len` workers: their slots, then their ledgers.
fn block_len(len: usize) -> usize {
    block::BODY + (SLOT + AREA) * len
}

/// Appends the length prefix of a postcard sequence of `count` items (a varint, as a
/// `u64` is).
fn seq_prefix(count: u64, out: &mut Vec<u8>) {
    let mut prefix = [0u8; 10];
    if let Ok(bytes) = postcard::to_slice(&count, &mut prefix) {
        out.extend_from_slice(bytes);
    }
}

/// A postcard output into the ledger's room. Small pieces (a tag, a varint) are
/// copied byte by byte, inline: postcard's own slice output calls `memcpy` for each,
/// which doubled what committing a small result cost.
struct Room<'a> {
    bytes: &'a mut [u8],
    used: usize,
}

impl postcard::ser_flavors::Flavor for Room<'_> {
    type Output = usize;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        let slot = self
            .bytes
            .get_mut(self.used)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        *slot = byte;
        self.used += 1;
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > 16 {
            let end = self.used + data.len();
            let to = self
                .bytes
                .get_mut(self.used..end)
                .ok_or(postcard::Error::SerializeBufferFull)?;
            to.copy_from_slice(data);
            self.used = end;
            return Ok(());
        }
        data.iter().try_for_each(|&byte| self.try_push(byte))
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.used)
    }
}

/// What a dead worker's ledger says of the chunk it ran.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The item its run of the task's items began from, if it began them: the item
    /// after the last one committed was running.
    pub(crate) begun: Option<u64>,
    /// Items `base..base + count` finished, and `results` holds them: the postcard body
    /// of their `Vec<Item<R>>`.
    pub(crate) base: u64,
    pub(crate) count: u64,
    pub(crate) results: Vec<u8>,
}

/// A worker's record of the chunk it runs, in its area of the slots block: that it has
/// begun the items, and the results of the items it finished, each committed before
/// the next item begins. A worker that dies in an item leaves that item as the first
/// not committed; everything committed before it is read by the parent
/// ([`Slots::progress`]), so no finished item is lost or run again. Committing costs
/// a copy of the result's bytes and one store; results that outgrow the area are sent
/// ahead on the reply queue first ([`Reply::Part`]): the parent has them before it can
/// see the worker dead, whatever the moment of the death (and ignores the ledger's copy
/// of them if the worker died before it could clear it).
pub(crate) struct Ledger {
    slots: Slots,
    replies: Queue<Reply>,
    /// Where this worker's area starts in the block.
    area: usize,
    index: u32,
    generation: u32,
    id: u64,
    /// The index in the task of the first item the area holds.
    base: u64,
    /// Results the area holds, and their bytes.
    count: u64,
    used: usize,
    /// Where each item's result is encoded (kept between items and tasks).
    buf: Vec<u8>,
}

impl Ledger {
    fn new(slots: Slots, replies: Queue<Reply>, index: u32, generation: u32) -> Ledger {
        Ledger {
            area: slots.area(index as usize),
            slots,
            replies,
            index,
            generation,
            id: 0,
            base: 0,
            count: 0,
            used: 0,
            buf: Vec::new(),
        }
    }

    /// A ledger of its own, for the unit tests of a chunk's run.
    #[cfg(test)]
    fn for_test() -> Ledger {
        let replies = crate::queue::mp::QueueBuilder::new()
            .lanes(1)
            .build::<Reply>()
            .unwrap();
        Ledger::new(Slots::new(1).unwrap(), replies, 0, 0)
    }

    /// Task `id` begins after its first `skip` items: an empty area. Stored before the
    /// slot names the task, so that the parent never reads the previous task's
    /// results as this one's.
    fn open(&mut self, id: u64, skip: u64) {
        (self.id, self.base, self.count, self.used) = (id, skip, 0, 0);
        self.word(COMMIT_AT).store(0, Ordering::Release);
        self.word(BASE_AT).store(skip, Ordering::Release);
        self.word(ITEM_AT).store(0, Ordering::Release);
    }

    #[inline]
    fn word(&self, field: usize) -> &std::sync::atomic::AtomicU64 {
        self.slots.block.u64_at(self.area + field)
    }

    /// The task's items begin, from item `i`: from here on, the item after the last
    /// one committed is the one running. (One mark for all, not one per item: a death
    /// between committing an item and calling the next counts as the next one's.)
    pub(crate) fn begin_items(&self, i: u64) {
        self.word(ITEM_AT).store(i + 1, Ordering::Release);
    }

    /// The item begun last finished with this result (an encoded `Item<R>`).
    fn commit(&mut self, item: &[u8]) {
        if item.len() > RESULTS_LEN - self.used && self.count > 0 {
            self.send_ahead();
        }
        if item.len() > RESULTS_LEN {
            // Larger than the whole area: it goes alone, its send is its commit.
            let mut results = Vec::with_capacity(item.len() + 1);
            seq_prefix(1, &mut results);
            results.extend_from_slice(item);
            if let Err(e) = self.put_part(self.base, 1, results) {
                let mut results = Vec::new();
                seq_prefix(1, &mut results);
                let message = format!("result: cannot send it back: {e}");
                let _ = postcard::to_io(&ItemRef::<()>::Codec(&message), &mut results);
                let _ = self.put_part(self.base, 1, results);
            }
            self.base += 1;
            self.word(BASE_AT).store(self.base, Ordering::Release);
            return;
        }
        let at = self.area + RESULTS_AT + self.used;
        self.slots
            .block
            .map()
            .write_with(at, item.len(), |bytes| bytes.copy_from_slice(item));
        self.committed(item.len());
    }

    /// The item begun last finished with `item` as its result, if `item` encodes
    /// straight into the room left in the area (the way of small results: no copy);
    /// `false` if it does not fit or does not encode (then nothing is committed).
    #[inline]
    fn commit_in_place<T: Serialize>(&mut self, item: &T) -> bool {
        let at = self.area + RESULTS_AT + self.used;
        let room = RESULTS_LEN - self.used;
        let written = self.slots.block.map().write_with(at, room, |bytes| {
            postcard::serialize_with_flavor(item, Room { bytes, used: 0 })
        });
        match written {
            Ok(len) => {
                self.committed(len);
                true
            }
            Err(_) => false,
        }
    }

    /// `len` more bytes of the area hold one more result: published.
    #[inline]
    fn committed(&mut self, len: usize) {
        self.used += len;
        self.count += 1;
        self.word(COMMIT_AT)
            .store(self.count << 32 | self.used as u64, Ordering::Release);
    }

    /// Sends the results the area holds on the reply queue, then empties the area: the
    /// count first, so that a death between the two leaves an empty area at the old
    /// base (never old results under a new base).
    fn send_ahead(&mut self) {
        let results = self.results();
        // Only a failing queue refuses 64 KiB of bytes; the parent then finds these
        // items missing when the task's reply comes, and fails them.
        let _ = self.put_part(self.base, self.count, results);
        self.word(COMMIT_AT).store(0, Ordering::Release);
        self.base += self.count;
        self.word(BASE_AT).store(self.base, Ordering::Release);
        (self.count, self.used) = (0, 0);
    }

    fn put_part(&self, first: u64, count: u64, results: Vec<u8>) -> Result<(), String> {
        self.replies
            .put(Reply::Part {
                worker: self.index,
                generation: self.generation,
                id: self.id,
                first,
                count,
                results,
            })
            .map_err(|e| e.to_string())
    }

    /// The results the area holds, as the body of a `Vec<Item<R>>`.
    fn results(&self) -> Vec<u8> {
        let mut results = Vec::with_capacity(self.used + 10);
        seq_prefix(self.count, &mut results);
        let from = self.area + RESULTS_AT;
        results.extend_from_slice(&self.slots.block.map().as_slice()[from..from + self.used]);
        results
    }
}

impl Serialize for Slots {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.len as u64, SerBlock(&self.block)).serialize(serializer)
    }
}

struct SerBlock<'a>(&'a Block);

impl Serialize for SerBlock<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

struct DeBlock(Block);

impl<'de> Deserialize<'de> for DeBlock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Block::deserialize(deserializer, kind()).map(DeBlock)
    }
}

impl<'de> Deserialize<'de> for Slots {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (len, DeBlock(block)) = <(u64, DeBlock)>::deserialize(deserializer)?;
        let len = len as usize;
        if len > 1 << 20 || block.len() < block_len(len) {
            return Err(serde::de::Error::custom("pool slots: block too small"));
        }
        Ok(Slots {
            block: Arc::new(block),
            len,
        })
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// What every worker gets, whatever its initializer.
#[derive(Serialize, Deserialize)]
pub(crate) struct Parts {
    pub(crate) index: u32,
    pub(crate) generation: u32,
    pub(crate) exe: (u64, u64),
    pub(crate) tasks: Queue<TaskMsg>,
    pub(crate) replies: Queue<Reply>,
    pub(crate) slots: Slots,
    /// Exit (and be replaced) after a task that leaves the resident set above this
    /// many bytes (billiard's `max_memory_per_child`).
    pub(crate) max_memory: Option<u64>,
}

/// The argument of [`worker_main`]: the parts and the initializer `fn(A)` (by
/// address) with its arguments, which may hold handles (queues, locks, …).
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "A: DeserializeOwned"))]
pub(crate) struct WorkerArgs<A> {
    pub(crate) parts: Parts,
    pub(crate) init: Option<(FnAddr, InitArgs<A>)>,
}

/// The initializer's arguments, encoded apart from the rest of [`WorkerArgs`] so that
/// a worker whose copy does not decode (a user's `Deserialize` that fails or panics)
/// still has its [`Parts`], and says why on the reply queue
/// ([`Reply::InitFailed`]: the pool breaks with the user's text) instead of dying
/// before it could say anything (and being replaced, again and again). Its handles
/// travel with the worker's other descriptors: the inner body is written and read
/// while the outer one's descriptor sink and source are active.
pub(crate) struct InitArgs<A>(Result<A, String>);

impl<A> InitArgs<A> {
    pub(crate) fn new(args: A) -> InitArgs<A> {
        InitArgs(Ok(args))
    }
}

impl<A: Serialize> Serialize for InitArgs<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        match &self.0 {
            Ok(args) => match codec::encode(args) {
                Ok(body) => serializer.serialize_bytes(&body),
                Err(e) => Err(S::Error::custom(e)),
            },
            Err(message) => Err(S::Error::custom(message)),
        }
    }
}

impl<'de, A: DeserializeOwned> Deserialize<'de> for InitArgs<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let body = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Ok(InitArgs(codec::decode(&body).map_err(|e| e.to_string())))
    }
}

/// A worker with the initializer `fn(A)`.
pub(crate) fn worker_main<A: DeserializeOwned>(args: WorkerArgs<A>) {
    let WorkerArgs { parts, init } = args;
    sys::proc::ignore_interrupts();
    let proof = match sys::entry::verify(parts.exe) {
        Ok(proof) => proof,
        Err(e) => return init_failed(&parts, e.to_string()),
    };
    if let Some((target, InitArgs(a))) = init {
        let a = match a {
            Ok(a) => a,
            Err(e) => {
                return init_failed(&parts, format!("the initializer's arguments: {e}"));
            }
        };
        let f: fn(A) = sys::entry::resolve(&proof, target);
        if let Outcome::Panicked(m, _) = run_task(move || f(a)) {
            return init_failed(&parts, format!("the initializer panicked: {m}"));
        }
    }
    worker_loop(parts, proof);
}

/// A worker (`fork` only) whose initializer is a closure.
pub(crate) fn worker_with_closure(parts: Parts, init: impl FnOnce()) {
    sys::proc::ignore_interrupts();
    let proof = match sys::entry::verify(parts.exe) {
        Ok(proof) => proof,
        Err(e) => return init_failed(&parts, e.to_string()),
    };
    if let Outcome::Panicked(m, _) = run_task(init) {
        return init_failed(&parts, format!("the initializer panicked: {m}"));
    }
    worker_loop(parts, proof);
}

fn init_failed(parts: &Parts, message: String) {
    let _ = parts.replies.put(Reply::InitFailed {
        worker: parts.index,
        generation: parts.generation,
        message,
    });
}

/// Runs tasks until `Stop` (or the end of the parent, which kills the worker).
fn worker_loop(parts: Parts, proof: Verified) {
    let Parts {
        index,
        generation,
        tasks,
        replies,
        slots,
        max_memory,
        ..
    } = parts;
    let worker = index as usize;
    let mut ledger = Ledger::new(slots.clone(), replies.clone(), index, generation);
    while let Ok(TaskMsg::Run {
        id,
        entry,
        target,
        args,
        skip,
    }) = tasks.get()
    {
        ledger.open(id, skip);
        let started = slots.begin(worker, id);
        if slots.take_cancelled(worker, id) {
            // Cancelled while it waited in this worker's queue: it never starts.
            let _ = replies.put(Reply::Done {
                worker: index,
                generation,
                id,
                busy_ns: 0,
                first: skip,
                items: Vec::new(),
            });
            slots.end(worker, id);
            continue;
        }
        let entry: TaskEntry = sys::entry::resolve(&proof, entry);
        let Ran {
            items,
            ledger: back,
        } = entry(TaskCall {
            proof,
            target,
            args,
            skip,
            ledger,
        });
        ledger = back;
        let first = ledger.base;
        let reply = Reply::Done {
            worker: index,
            generation,
            id,
            busy_ns: monotonic_ns().saturating_sub(started),
            first,
            items,
        };
        if let Err(e) = replies.put(reply) {
            // A result too large for the queue: report that instead, for this task only.
            let message = format!("cannot send the result back: {e}");
            let _ = replies.put(Reply::Done {
                worker: index,
                generation,
                id,
                busy_ns: 0,
                first,
                items: vec![Outcome::Codec(message)],
            });
        }
        slots.end(worker, id);
        if max_memory.is_some_and(|limit| resident_bytes().is_some_and(|rss| rss > limit)) {
            // Retire: the parent sees a worker that ended between tasks, puts back what
            // was queued to it, and starts a fresh one.
            break;
        }
    }
}

/// This process's resident set size, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The items of a chunk as the parent decodes them (`ChunkSink::complete`).
    fn decoded(outcomes: Vec<Outcome>) -> Vec<Item<u32>> {
        match <[Outcome; 1]>::try_from(outcomes) {
            Ok([Outcome::Returned(blob)]) => codec::decode::<Vec<Item<u32>>>(&blob).unwrap(),
            other => panic!("a chunk is one Returned outcome, not {other:?}"),
        }
    }

    fn values(items: &[Item<u32>]) -> Vec<Option<u32>> {
        items
            .iter()
            .map(|item| match item {
                Item::Ok(v) => Some(*v),
                _ => None,
            })
            .collect()
    }

    /// Encodes as a `u32` when even; when odd, fails half-way through (after the
    /// value's first bytes are written).
    struct EvenOnly(u32);

    impl Serialize for EvenOnly {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeTuple};
            if self.0 % 2 == 0 {
                return serializer.serialize_u32(self.0);
            }
            let mut tuple = serializer.serialize_tuple(2)?;
            tuple.serialize_element(&self.0)?;
            Err(S::Error::custom("odd"))
        }
    }

    /// Encodes as a `u32` when even; panics when odd (user serde code gone wrong).
    struct PanicsWhenOdd(u32);

    impl Serialize for PanicsWhenOdd {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            assert!(self.0 % 2 == 0, "boom-{}", self.0);
            serializer.serialize_u32(self.0)
        }
    }

    /// The result's `Serialize` panicking used to unwind out of the worker: it died,
    /// and the item failed as a dead worker's, without the text.
    #[test]
    fn a_result_whose_serialize_panics_fails_alone_with_the_panics_text() {
        let items = decoded(run_chunk(vec![2u32, 3, 4], PanicsWhenOdd));
        assert_eq!(values(&items), [Some(2), None, Some(4)]);
        assert!(
            matches!(&items[1], Item::Codec(m) if m.starts_with("result: ") && m.contains("boom-3")),
            "{:?}",
            items[1]
        );
    }

    /// Decodes as a `u32` that must be even: an odd one is the user's error "odd <n>".
    #[derive(Debug, Serialize)]
    struct Even(u32);

    impl<'de> Deserialize<'de> for Even {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let n = u32::deserialize(d)?;
            if n % 2 == 1 {
                return Err(serde::de::Error::custom(format!("odd {n}")));
            }
            Ok(Even(n))
        }
    }

    /// An item that does not decode fails under its own index with the user's text;
    /// the items before it run. The whole chunk used to fail as one, every item (the
    /// first included) with the bad one's error.
    #[test]
    fn an_item_that_does_not_decode_fails_under_its_own_index() {
        let body = codec::encode(&vec![2u32, 4, 5, 6]).unwrap();
        let chunk = decode_chunk::<Even>(&body).unwrap();
        let items = decoded(run_decoded_chunk(
            chunk,
            0,
            &mut Ledger::for_test(),
            |Even(n)| n * 10,
        ));
        assert_eq!(values(&items), [Some(20), Some(40), None, None]);
        assert!(
            matches!(&items[2], Item::Codec(m) if m.starts_with("cannot decode the task's arguments") && m.ends_with(": odd 5")),
            "{:?}",
            items[2]
        );
        assert!(
            matches!(&items[3], Item::Codec(m) if m.starts_with("not run: item 2 of its chunk")),
            "{:?}",
            items[3]
        );
        // A chunk that decodes whole runs whole; bytes over are an error of the chunk.
        let body = codec::encode(&vec![2u32, 4]).unwrap();
        let items = decoded(run_decoded_chunk(
            decode_chunk::<Even>(&body).unwrap(),
            0,
            &mut Ledger::for_test(),
            |Even(n)| n,
        ));
        assert_eq!(values(&items), [Some(2), Some(4)]);
        let mut long = body.clone();
        long.push(0);
        assert!(matches!(
            decode_chunk::<Even>(&long),
            Err(codec::CodecError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn an_empty_chunk_is_an_empty_sequence() {
        let items = decoded(run_chunk(Vec::<u32>::new(), |x| x));
        assert!(items.is_empty());
    }

    #[test]
    fn a_chunk_past_127_items_keeps_every_item_in_order() {
        // 128 items need a two-byte length prefix.
        for n in [127u32, 128, 300] {
            let items = decoded(run_chunk((0..n).collect(), |x| x * 2));
            let want: Vec<Option<u32>> = (0..n).map(|x| Some(x * 2)).collect();
            assert_eq!(values(&items), want);
        }
    }

    #[test]
    fn a_panicking_item_fails_alone_with_its_message() {
        let items = decoded(run_chunk(vec![1u32, 2, 3], |x| {
            assert!(x != 2, "item {x} refused");
            x
        }));
        assert_eq!(values(&items), [Some(1), None, Some(3)]);
        assert!(matches!(&items[1], Item::Panicked(m, _) if m == "item 2 refused"));
    }

    #[test]
    fn a_result_that_fails_to_encode_half_way_fails_alone_and_leaves_no_bytes() {
        let items = decoded(run_chunk(vec![2u32, 3, 4, 5, 6], EvenOnly));
        assert_eq!(values(&items), [Some(2), None, Some(4), None, Some(6)]);
        // The item names the type that failed and carries the impl's own message.
        let want = format!(
            "result: cannot encode {}: odd",
            std::any::type_name::<EvenOnly>()
        );
        for odd in [&items[1], &items[3]] {
            assert!(matches!(odd, Item::Codec(m) if *m == want), "{odd:?}");
        }
    }

    fn encoded(item: &Item<Vec<u8>>) -> Vec<u8> {
        postcard::to_allocvec(item).unwrap()
    }

    fn results(blob: &[u8]) -> Vec<Vec<u8>> {
        codec::decode::<Vec<Item<Vec<u8>>>>(blob)
            .unwrap()
            .into_iter()
            .map(|item| match item {
                Item::Ok(v) => v,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// What the parent reads of a worker that died in item 2 of a chunk: the two
    /// results it committed, and the item it began. A task's ledger starts empty.
    #[test]
    fn a_dead_workers_ledger_holds_the_results_it_committed_and_the_item_it_began() {
        let mut ledger = Ledger::for_test();
        ledger.open(7, 0);
        assert_eq!(ledger.slots.progress(0).begun, None, "no item begun yet");
        ledger.begin_items(0);
        for i in 0..2u8 {
            ledger.commit(&encoded(&Item::Ok(vec![i; 3])));
        }
        // Item 2, the one after the last committed, is the one it died in.
        let progress = ledger.slots.progress(0);
        assert_eq!(progress.begun, Some(0));
        assert_eq!((progress.base, progress.count), (0, 2));
        assert_eq!(results(&progress.results), [vec![0; 3], vec![1; 3]]);
        // The rest of the chunk, sent again from item 3: nothing of the last task.
        ledger.open(7, 3);
        let progress = ledger.slots.progress(0);
        assert_eq!(
            (progress.begun, progress.base, progress.count),
            (None, 3, 0)
        );
        assert_eq!(results(&progress.results), Vec::<Vec<u8>>::new());
        assert!(ledger.replies.try_get().is_err(), "nothing was sent ahead");
    }

    /// Results that outgrow the area go ahead on the reply queue, in order, each once:
    /// what the queue got and what the ledger holds are the items, with no overlap.
    #[test]
    fn results_larger_than_the_ledger_are_sent_ahead_in_parts() {
        let mut ledger = Ledger::for_test();
        ledger.open(9, 0);
        let third = RESULTS_LEN / 3;
        let sizes = [third, third, third, RESULTS_LEN + 1, 5];
        ledger.begin_items(0);
        for (i, &n) in sizes.iter().enumerate() {
            ledger.commit(&encoded(&Item::Ok(vec![i as u8; n])));
        }
        let mut got = Vec::new();
        while let Ok(reply) = ledger.replies.try_get() {
            match reply {
                Reply::Part {
                    id: 9,
                    first,
                    count,
                    results: blob,
                    ..
                } => {
                    let items = results(&blob);
                    assert_eq!(items.len() as u64, count);
                    assert_eq!(first, got.len() as u64);
                    got.extend(items);
                }
                other => panic!("{other:?}"),
            }
        }
        // Two of a third fit with their prefixes, the third does not; the oversized
        // one goes alone; the small last one stays.
        assert_eq!(got.len(), 4);
        let progress = ledger.slots.progress(0);
        assert_eq!((progress.base, progress.count), (4, 1));
        assert_eq!(ledger.base, 4);
        got.extend(results(&progress.results));
        let want: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8; n])
            .collect();
        assert_eq!(got, want);
    }

    /// The rest of a chunk whose worker died runs from `skip`: the items before it do
    /// not run again, and the reply says where its results start.
    #[test]
    fn a_chunk_sent_again_runs_only_the_items_after_skip() {
        let runs = std::cell::RefCell::new(Vec::new());
        let mut ledger = Ledger::for_test();
        ledger.open(3, 2);
        let body = codec::encode(&vec![10u32, 11, 12, 13]).unwrap();
        let out = run_decoded_chunk(decode_chunk::<u32>(&body).unwrap(), 2, &mut ledger, |x| {
            runs.borrow_mut().push(x);
            x + 1
        });
        assert_eq!(runs.into_inner(), [12, 13]);
        assert_eq!(values(&decoded(out)), [Some(13), Some(14)]);
        assert_eq!(ledger.base, 2);
        assert_eq!(ledger.slots.progress(0).begun, Some(2));
    }
}
