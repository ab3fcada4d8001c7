//! Typed proxies: each names one object in the server and turns its methods into
//! requests.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

use crate::codec::{self, Limits};
use crate::process::start::fork;
use crate::sys;

use super::client::Client;
use super::protocol::{Op, Reply, Request};
use super::{Address, ManagerError, Shared};
use crate::queue::mp::{GetError, PutError};

/// Ties a proxy to its item types (invariant, `Send` and `Sync` whatever they are).
type Invariant<T> = fn(T) -> T;

/// One object of one server: what every proxy holds. Its clones share one reference
/// to the object (see [`Reference`]).
#[derive(Clone, Debug)]
pub(crate) struct ObjectRef {
    pub(crate) client: Arc<Client>,
    pub(crate) id: u64,
    _reference: Arc<Reference>,
}

/// A reference to an object in its server, given back when dropped (Python's
/// `decref` in a proxy's finalizer) by the process that holds it.
///
/// A `fork` child inherits copies of its parent's references. Those the parent moved
/// into the child's job (a `Process` argument, a captured value) are the child's: the
/// parent, dropping the job after the fork, keeps its hands off them, and the child
/// gives them back when it drops them (only what the job held is ever dropped in the
/// child: the rest of the copied memory is never freed there). Copies a raw `fork`
/// child inherited stay the parent's.
#[derive(Debug)]
struct Reference {
    client: Arc<Client>,
    id: u64,
    pid: u32,
    /// The session whose `Create` made it (`None`: taken for this process by its
    /// sender).
    session: Option<u64>,
    /// A received reference, once this process's session made it its own (at its
    /// first use): it then goes with the session, should this process be killed.
    adopted: std::sync::OnceLock<u64>,
}

impl Reference {
    /// Whether this is a received reference that this process's session has not made
    /// its own yet (its next call does, see [`Request::AdoptCall`]).
    fn unadopted(&self) -> bool {
        self.session.is_none()
            && self.adopted.get().is_none()
            && self.pid == sys::proc::cached_pid()
    }

    /// Notes that an `AdoptCall` reached the server (whatever the call's own outcome).
    fn adopted_if_delivered<T>(&self, result: &Result<T, ManagerError>) {
        let delivered = match result {
            Ok(_) => true,
            Err(e) => !matches!(
                e,
                ManagerError::Disconnected
                    | ManagerError::Codec(_)
                    | ManagerError::Connect { .. }
                    | ManagerError::Authentication(_)
                    | ManagerError::Io(_)
            ),
        };
        if delivered {
            let _ = self.adopted.set(self.client.session());
        }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if self.client.is_gone() {
            return;
        }
        if self.pid == sys::proc::cached_pid() {
            if fork::handing_over() {
                return; // the child just forked holds it now
            }
        } else if fork::job_parent() != Some(self.pid) {
            return; // inherited, and still the parent's
        }
        let _ = self.client.call(&Request::DecRef {
            id: self.id,
            session: self.session.or(self.adopted.get().copied()),
        });
    }
}

impl ObjectRef {
    fn new(client: Arc<Client>, id: u64, owned: bool) -> ObjectRef {
        let reference = Reference {
            session: owned.then(|| client.session()),
            client: client.clone(),
            id,
            pid: sys::proc::cached_pid(),
            adopted: std::sync::OnceLock::new(),
        };
        ObjectRef {
            client,
            id,
            _reference: Arc::new(reference),
        }
    }

    /// The reference a `Create` made, this session's.
    pub(crate) fn owned(client: Arc<Client>, id: u64) -> ObjectRef {
        ObjectRef::new(client, id, true)
    }

    pub(crate) fn call(&self, op: Op) -> Result<Reply, ManagerError> {
        if self._reference.unadopted() {
            let result = self.client.call(&Request::AdoptCall { id: self.id, op });
            self._reference.adopted_if_delivered(&result);
            return result;
        }
        self.client.call(&Request::Call { id: self.id, op })
    }

    pub(crate) fn call_waiting(
        &self,
        deadline: Option<Instant>,
        op: impl FnMut(u32) -> Op,
    ) -> Result<Option<Reply>, ManagerError> {
        let adopt = self._reference.unadopted();
        let result = self.client.call_waiting(self.id, deadline, adopt, op);
        if adopt {
            self._reference.adopted_if_delivered(&result);
        }
        result
    }
}

/// A proxy crosses to another process as the server's address, the authkey and the
/// object's id; it connects on its first call there.
#[derive(Serialize, Deserialize)]
struct Wire {
    address: Address,
    authkey: ByteBuf,
    max_message: u64,
    id: u64,
}

/// Serialising takes a reference for the receiver (Python's `incref` when a proxy is
/// pickled): the object stays even if this side drops its proxy before the receiver
/// has its copy. A server that is gone takes none (the receiver's calls then say so).
impl Serialize for ObjectRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The ring measures a value (postcard's `Size` flavour) before it writes it:
        // only the write takes a reference, or every proxy sent would leak one.
        let measuring = std::any::type_name::<S>()
            == std::any::type_name::<&mut postcard::Serializer<postcard::ser_flavors::Size>>();
        if !measuring && !self.client.is_gone() {
            let _ = self.client.call(&Request::IncRef { id: self.id });
        }
        Wire {
            address: self.client.address.clone(),
            authkey: ByteBuf::from(self.client.authkey.clone()),
            max_message: self.client.limits.max_message as u64,
            id: self.id,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ObjectRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(deserializer)?;
        let client = Client::shared(
            w.address,
            w.authkey.into_vec(),
            Limits::with_max_message(w.max_message as usize),
        );
        // The reference the sender took for us.
        Ok(ObjectRef::new(client, w.id, false))
    }
}

pub(crate) fn enc<T: Serialize + ?Sized>(value: &T) -> Result<ByteBuf, ManagerError> {
    Ok(ByteBuf::from(codec::encode(value)?))
}

pub(super) fn dec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ManagerError> {
    Ok(codec::decode(bytes)?)
}

pub(super) fn unexpected(reply: Reply) -> ManagerError {
    ManagerError::Protocol(format!("unexpected reply from the manager: {reply:?}"))
}

impl Reply {
    pub(super) fn unit(self) -> Result<(), ManagerError> {
        match self {
            Reply::Unit => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    pub(super) fn flag(self) -> Result<bool, ManagerError> {
        match self {
            Reply::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    pub(super) fn count(self) -> Result<usize, ManagerError> {
        match self {
            Reply::Count(n) => Ok(n as usize),
            r => Err(unexpected(r)),
        }
    }

    pub(super) fn bytes(self) -> Result<ByteBuf, ManagerError> {
        match self {
            Reply::Bytes(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    pub(super) fn value<T: DeserializeOwned>(self) -> Result<T, ManagerError> {
        dec(&self.bytes()?)
    }

    pub(super) fn maybe<T: DeserializeOwned>(self) -> Result<Option<T>, ManagerError> {
        match self {
            Reply::MaybeBytes(b) => b.map(|b| dec(&b)).transpose(),
            r => Err(unexpected(r)),
        }
    }

    pub(super) fn many<T: DeserializeOwned>(self) -> Result<Vec<T>, ManagerError> {
        match self {
            Reply::Many(items) => items.iter().map(|b| dec(b)).collect(),
            r => Err(unexpected(r)),
        }
    }

    fn pairs<K: DeserializeOwned, V: DeserializeOwned>(self) -> Result<Vec<(K, V)>, ManagerError> {
        match self {
            Reply::Pairs(items) => items.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect(),
            r => Err(unexpected(r)),
        }
    }
}

/// The common impls of a proxy type with fields `obj` and `_types`.
macro_rules! proxy_impls {
    ($name:ident $(< $($p:ident),* >)?, $what:literal) => {
        impl $(< $($p),* >)? Clone for $name $(< $($p),* >)? {
            fn clone(&self) -> Self {
                $name { obj: self.obj.clone(), _types: PhantomData }
            }
        }

        impl $(< $($p),* >)? std::fmt::Debug for $name $(< $($p),* >)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "<{} proxy of object {} at {}>", $what, self.obj.id, self.obj.client.address)
            }
        }

        /// A proxy passes to another process (as a `Process` argument under any start
        /// method, or through a `Connection`) and works there: it connects to the server
        /// on its first call. It carries the manager's authkey.
        impl $(< $($p),* >)? Serialize for $name $(< $($p),* >)? {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.obj.serialize(serializer)
            }
        }

        impl<'de $($(, $p)*)?> Deserialize<'de> for $name $(< $($p),* >)? {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Ok($name { obj: ObjectRef::deserialize(deserializer)?, _types: PhantomData })
            }
        }

        impl $(< $($p),* >)? $name $(< $($p),* >)? {
            pub(crate) fn from_ref(obj: ObjectRef) -> Self {
                $name { obj, _types: PhantomData }
            }

            /// The object's id in its server.
            pub fn id(&self) -> u64 {
                self.obj.id
            }

            /// The address of the server that holds the object.
            pub fn address(&self) -> &Address {
                &self.obj.client.address
            }
        }
    };
}
pub(super) use proxy_impls;

// ---- list --------------------------------------------------------------------------

/// A list in the manager's server (Python's `manager.list()`).
///
/// Items equal by their encoding are equal for [`remove`](Self::remove),
/// [`index`](Self::index), [`count`](Self::count) and [`contains`](Self::contains).
///
/// ```
/// # multiproc::init();
/// let m = multiproc::manager::Manager::start().unwrap();
/// let l = m.list(0..10).unwrap();
/// l.set(0, -1).unwrap();
/// l.push(10).unwrap();
/// assert_eq!(l.len().unwrap(), 11);
/// assert_eq!(l.get(0).unwrap(), -1);
/// assert_eq!(l.pop().unwrap(), Some(10));
/// assert_eq!(l.to_vec().unwrap(), [-1, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
/// ```
pub struct ListProxy<T> {
    obj: ObjectRef,
    _types: PhantomData<fn(T) -> T>,
}

proxy_impls!(ListProxy<T>, "list");

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Number of items (`len(l)`).
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.obj.call(Op::Len)?.count()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// The item at `index` (`l[i]`); [`ManagerError::IndexOutOfRange`] past the end.
    pub fn get(&self, index: usize) -> Result<T, ManagerError> {
        self.obj.call(Op::ListGet(index as u64))?.value()
    }

    /// Replaces the item at `index` (`l[i] = x`).
    pub fn set(&self, index: usize, item: T) -> Result<(), ManagerError> {
        self.obj
            .call(Op::ListSet(index as u64, enc(&item)?))?
            .unit()
    }

    /// Appends an item (`l.append(x)`).
    pub fn push(&self, item: T) -> Result<(), ManagerError> {
        self.obj.call(Op::ListPush(enc(&item)?))?.unit()
    }

    /// Appends every item, in one request (`l.extend(xs)`).
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<(), ManagerError> {
        let items = items
            .into_iter()
            .map(|x| enc(&x))
            .collect::<Result<_, _>>()?;
        self.obj.call(Op::ListExtend(items))?.unit()
    }

    /// Inserts before `index`; past the end it appends (`l.insert(i, x)`).
    pub fn insert(&self, index: usize, item: T) -> Result<(), ManagerError> {
        self.obj
            .call(Op::ListInsert(index as u64, enc(&item)?))?
            .unit()
    }

    /// Removes and returns the last item; `None` if the list is empty (`l.pop()`).
    pub fn pop(&self) -> Result<Option<T>, ManagerError> {
        match self.obj.call(Op::ListPop(None)) {
            Ok(reply) => reply.value().map(Some),
            Err(ManagerError::Empty) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes and returns the item at `index` (`l.pop(i)`).
    pub fn pop_at(&self, index: usize) -> Result<T, ManagerError> {
        self.obj.call(Op::ListPop(Some(index as u64)))?.value()
    }

    /// Removes the first item equal to `item` (`l.remove(x)`);
    /// [`ManagerError::NotFound`] if there is none (Python's `ValueError`).
    pub fn remove(&self, item: &T) -> Result<(), ManagerError> {
        self.obj.call(Op::ListRemove(enc(item)?))?.unit()
    }

    /// The position of the first item equal to `item`, if any (`l.index(x)`).
    pub fn index(&self, item: &T) -> Result<Option<usize>, ManagerError> {
        match self.obj.call(Op::ListIndex(enc(item)?)) {
            Ok(reply) => reply.count().map(Some),
            Err(ManagerError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How many items equal `item` (`l.count(x)`).
    pub fn count(&self, item: &T) -> Result<usize, ManagerError> {
        self.obj.call(Op::ListCount(enc(item)?))?.count()
    }

    /// Whether an item equals `item` (`x in l`).
    pub fn contains(&self, item: &T) -> Result<bool, ManagerError> {
        Ok(self.index(item)?.is_some())
    }

    /// Removes every item (`l.clear()`).
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.obj.call(Op::Clear)?.unit()
    }

    /// Reverses the list in place (`l.reverse()`).
    pub fn reverse(&self) -> Result<(), ManagerError> {
        self.obj.call(Op::ListReverse)?.unit()
    }

    /// A copy of every item, in one request (`l[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        self.obj.call(Op::Snapshot)?.many()
    }

    /// Iterates over the live list, one request per item (`for x in l`, which
    /// Python's list proxy runs through `l[i]` for i = 0, 1, … until `IndexError`):
    /// items pushed while iterating are seen, and an item removed before the cursor
    /// shifts the rest under it, as in Python. For a snapshot, iterate over
    /// [`to_vec`](Self::to_vec) (one request in all).
    ///
    /// ```
    /// # multiproc::init();
    /// let m = multiproc::manager::Manager::start().unwrap();
    /// let l = m.list([1, 2]).unwrap();
    /// let mut seen = Vec::new();
    /// for x in l.iter() {
    ///     let x = x.unwrap();
    ///     if x < 4 {
    ///         l.push(x + 2).unwrap(); // the iterator reaches it
    ///     }
    ///     seen.push(x);
    /// }
    /// assert_eq!(seen, [1, 2, 3, 4, 5]);
    /// ```
    pub fn iter(&self) -> ListIter<'_, T> {
        ListIter::new(&self.obj)
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a ListProxy<T> {
    type Item = Result<T, ManagerError>;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> ListIter<'a, T> {
        self.iter()
    }
}

/// An iterator over a live [`ListProxy`] or [`ArrayProxy`]: asks the server for item
/// 0, 1, … until one is out of range. An error other than that ends it after being
/// yielded.
pub struct ListIter<'a, T> {
    obj: &'a ObjectRef,
    next: u64,
    done: bool,
    _types: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ListIter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListIter")
            .field("object", &self.obj.id)
            .field("next", &self.next)
            .finish()
    }
}

impl<'a, T> ListIter<'a, T> {
    fn new(obj: &'a ObjectRef) -> Self {
        ListIter {
            obj,
            next: 0,
            done: false,
            _types: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Iterator for ListIter<'_, T> {
    type Item = Result<T, ManagerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.obj.call(Op::ListGet(self.next)) {
            Ok(reply) => {
                self.next += 1;
                Some(reply.value())
            }
            Err(ManagerError::IndexOutOfRange { .. }) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

// ---- array -------------------------------------------------------------------------

/// An array of fixed length in the manager's server (Python's `manager.Array(typecode,
/// seq)`): items are read and replaced in place; its length never changes.
///
/// ```
/// # multiproc::init();
/// let m = multiproc::manager::Manager::start().unwrap();
/// let a = m.array([0u8; 4]).unwrap();
/// a.set(2, 7).unwrap();
/// assert_eq!(a.len().unwrap(), 4);
/// assert_eq!(a.get(2).unwrap(), 7);
/// assert!(a.set(4, 1).is_err()); // IndexOutOfRange: it does not grow
/// assert_eq!(a.iter().collect::<Result<Vec<_>, _>>().unwrap(), [0, 0, 7, 0]);
/// ```
pub struct ArrayProxy<T> {
    obj: ObjectRef,
    _types: PhantomData<fn(T) -> T>,
}

proxy_impls!(ArrayProxy<T>, "array");

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// Number of items (`len(a)`).
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.obj.call(Op::Len)?.count()
    }

    /// Whether the array has no item.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// The item at `index` (`a[i]`); [`ManagerError::IndexOutOfRange`] past the end.
    pub fn get(&self, index: usize) -> Result<T, ManagerError> {
        self.obj.call(Op::ListGet(index as u64))?.value()
    }

    /// Replaces the item at `index` (`a[i] = x`).
    pub fn set(&self, index: usize, item: T) -> Result<(), ManagerError> {
        self.obj
            .call(Op::ListSet(index as u64, enc(&item)?))?
            .unit()
    }

    /// A copy of every item, in one request (`a[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        self.obj.call(Op::Snapshot)?.many()
    }

    /// Iterates over the live array, one request per item (as [`ListProxy::iter`]).
    pub fn iter(&self) -> ListIter<'_, T> {
        ListIter::new(&self.obj)
    }
}

// ---- dict --------------------------------------------------------------------------

/// A dictionary in the manager's server (Python's `manager.dict()`), in insertion order.
///
/// The server stores keys and values encoded: **keys compare by their encoding**
/// (postcard), which for the usual key types (integers, strings, tuples and enums of
/// them) is the same as comparing the values. A key type whose equal values can encode
/// differently (a `HashMap` inside a key, say) should not be used.
///
/// ```
/// # multiproc::init();
/// let m = multiproc::manager::Manager::start().unwrap();
/// let d = m.dict::<String, i32>().unwrap();
/// d.set("a".into(), 1).unwrap();
/// assert_eq!(d.insert("a".into(), 2).unwrap(), Some(1));
/// assert_eq!(d.get(&"a".into()).unwrap(), Some(2));
/// assert_eq!(d.modify(&"b".into(), |v| v.unwrap_or(0) + 5).unwrap(), 5);
/// assert_eq!(d.items().unwrap(), [("a".to_string(), 2), ("b".to_string(), 5)]);
/// ```
pub struct DictProxy<K, V> {
    obj: ObjectRef,
    _types: PhantomData<Invariant<(K, V)>>,
}

proxy_impls!(DictProxy<K, V>, "dict");

impl<K, V> DictProxy<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// Number of entries (`len(d)`).
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.obj.call(Op::Len)?.count()
    }

    /// Whether the dictionary is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// The value of `key`, if present (`d.get(k)`).
    pub fn get(&self, key: &K) -> Result<Option<V>, ManagerError> {
        self.obj.call(Op::DictGet(enc(key)?))?.maybe()
    }

    /// Sets `key` to `value` (`d[k] = v`); the previous value is not sent back.
    pub fn set(&self, key: K, value: V) -> Result<(), ManagerError> {
        self.obj.call(Op::DictSet(enc(&key)?, enc(&value)?))?.unit()
    }

    /// Sets `key` to `value` and returns the previous value (`HashMap::insert`).
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, ManagerError> {
        self.obj
            .call(Op::DictInsert(enc(&key)?, enc(&value)?))?
            .maybe()
    }

    /// Removes `key` and returns its value, if present (`d.pop(k, None)`).
    pub fn remove(&self, key: &K) -> Result<Option<V>, ManagerError> {
        self.obj.call(Op::DictRemove(enc(key)?))?.maybe()
    }

    /// Whether `key` is present (`k in d`).
    #[doc(alias = "contains")]
    pub fn contains_key(&self, key: &K) -> Result<bool, ManagerError> {
        self.obj.call(Op::DictContains(enc(key)?))?.flag()
    }

    /// The keys, in insertion order (`list(d.keys())`).
    pub fn keys(&self) -> Result<Vec<K>, ManagerError> {
        self.obj.call(Op::DictKeys)?.many()
    }

    /// The values, in insertion order (`list(d.values())`).
    pub fn values(&self) -> Result<Vec<V>, ManagerError> {
        self.obj.call(Op::DictValues)?.many()
    }

    /// The entries, in insertion order, in one request (`list(d.items())`).
    pub fn items(&self) -> Result<Vec<(K, V)>, ManagerError> {
        self.obj.call(Op::Snapshot)?.pairs()
    }

    /// Removes every entry (`d.clear()`).
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.obj.call(Op::Clear)?.unit()
    }

    /// Sets every entry, in one request (`d.update(other)`).
    pub fn update(&self, entries: impl IntoIterator<Item = (K, V)>) -> Result<(), ManagerError> {
        let pairs = entries
            .into_iter()
            .map(|(k, v)| Ok((enc(&k)?, enc(&v)?)))
            .collect::<Result<_, ManagerError>>()?;
        self.obj.call(Op::DictUpdate(pairs))?.unit()
    }

    /// The value of `key`, after setting it to `default` if it was absent
    /// (`d.setdefault(k, default)`).
    pub fn setdefault(&self, key: K, default: V) -> Result<V, ManagerError> {
        self.obj
            .call(Op::DictSetDefault(enc(&key)?, enc(&default)?))?
            .value()
    }

    /// Atomically replaces the value of `key` by `f(current)` (`None`: absent) and
    /// returns the new value. `f` runs here, in the caller; if another process changed
    /// the entry in between, the change is not applied and `f` runs again on the new
    /// value (compare-and-set on the encoding), so no update is ever lost.
    pub fn modify(&self, key: &K, mut f: impl FnMut(Option<V>) -> V) -> Result<V, ManagerError> {
        let key = enc(key)?;
        loop {
            let current = match self.obj.call(Op::DictGet(key.clone()))? {
                Reply::MaybeBytes(b) => b,
                r => return Err(unexpected(r)),
            };
            let old = current.as_ref().map(|b| dec(b)).transpose()?;
            let new = f(old);
            let op = Op::DictCompareAndSet {
                key: key.clone(),
                expected: current,
                new: enc(&new)?,
            };
            if self.obj.call(op)?.flag()? {
                return Ok(new);
            }
        }
    }
}

// ---- value and namespace ------------------------------------------------------------

macro_rules! cell_methods {
    () => {
        /// The current value (`v.value`).
        pub fn get(&self) -> Result<T, ManagerError> {
            self.obj.call(Op::Snapshot)?.value()
        }

        /// Replaces the value (`v.value = x`).
        pub fn set(&self, value: T) -> Result<(), ManagerError> {
            self.obj.call(Op::CellSet(enc(&value)?))?.unit()
        }

        /// Replaces the value and returns the previous one.
        pub fn swap(&self, value: T) -> Result<T, ManagerError> {
            self.obj.call(Op::CellSwap(enc(&value)?))?.value()
        }

        /// Sets `new` if the value is `expected` (compared by encoding); whether it did.
        pub fn compare_and_set(&self, expected: &T, new: T) -> Result<bool, ManagerError> {
            self.obj
                .call(Op::CellCompareAndSet {
                    expected: enc(expected)?,
                    new: enc(&new)?,
                })?
                .flag()
        }

        /// Atomically replaces the value by `f(current)` and returns the new value. `f`
        /// runs here; if another process changed the value in between, `f` runs again
        /// on the new one (compare-and-set), so no update is ever lost.
        pub fn modify(&self, mut f: impl FnMut(T) -> T) -> Result<T, ManagerError> {
            loop {
                let current = self.obj.call(Op::Snapshot)?.bytes()?;
                let new = f(dec(&current)?);
                let op = Op::CellCompareAndSet {
                    expected: current,
                    new: enc(&new)?,
                };
                if self.obj.call(op)?.flag()? {
                    return Ok(new);
                }
            }
        }
    };
}

/// One value in the manager's server (Python's `manager.Value(typecode, x)`), of any
/// serialisable type.
///
/// ```
/// # multiproc::init();
/// let m = multiproc::manager::Manager::start().unwrap();
/// let v = m.value(1.5f64).unwrap();
/// v.set(2.5).unwrap();
/// assert_eq!(v.modify(|x| x * 2.0).unwrap(), 5.0);
/// assert_eq!(v.get().unwrap(), 5.0);
/// ```
pub struct ValueProxy<T> {
    obj: ObjectRef,
    _types: PhantomData<fn(T) -> T>,
}

proxy_impls!(ValueProxy<T>, "value");

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    cell_methods!();
}

/// A typed namespace in the manager's server (Python's `manager.Namespace()`): a
/// struct whose fields are the namespace's attributes. Read it whole with
/// [`get`](Self::get), change fields atomically with [`modify`](Self::modify).
///
/// ```
/// # multiproc::init();
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
/// struct Settings { name: String, rounds: u32 }
///
/// let m = multiproc::manager::Manager::start().unwrap();
/// let ns = m.namespace(Settings::default()).unwrap();
/// ns.modify(|mut s| { s.name = "run".into(); s.rounds += 1; s }).unwrap();
/// assert_eq!(ns.get().unwrap(), Settings { name: "run".into(), rounds: 1 });
/// ```
pub struct NamespaceProxy<T> {
    obj: ObjectRef,
    _types: PhantomData<fn(T) -> T>,
}

proxy_impls!(NamespaceProxy<T>, "namespace");

impl<T: Serialize + DeserializeOwned> NamespaceProxy<T> {
    cell_methods!();
}

// ---- queue -------------------------------------------------------------------------

/// A FIFO queue in the manager's server (Python's `manager.Queue(maxsize)`).
///
/// Its calls return the errors of the cross-process [`Queue`](crate::queue::Queue)
/// ([`GetError`], [`PutError`]), the server's death included:
/// [`GetError::Disconnected`]. What only a broken server or protocol causes (an object
/// the server does not have, a reply that is not the protocol) is `Io`, holding the
/// [`ManagerError`] (`io_error.get_ref()` and `downcast_ref::<ManagerError>()` get it).
///
/// A blocking `get` or `put` waits in the server in slices of at most 100 ms, asking
/// again after each, so it ends promptly with `Disconnected` if the server dies, and a
/// server thread never waits long for a client that has died.
///
/// ```
/// # multiproc::init();
/// use std::time::Duration;
/// let m = multiproc::manager::Manager::start().unwrap();
/// let q = m.queue::<String>().unwrap();
/// q.put("job".into()).unwrap();
/// assert_eq!(q.qsize().unwrap(), 1);
/// assert_eq!(q.get().unwrap(), "job");
/// let late = q.get_timeout(Duration::from_millis(10));
/// assert!(matches!(late, Err(multiproc::queue::GetError::Timeout)));
/// ```
pub struct QueueProxy<T> {
    obj: ObjectRef,
    _types: PhantomData<fn(T) -> T>,
}

proxy_impls!(QueueProxy<T>, "queue");

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    fn put_until(&self, item: &T, deadline: Option<Instant>) -> Result<bool, ManagerError> {
        let item = enc(item)?;
        let reply = self.obj.call_waiting(deadline, |wait_ms| Op::QueuePut {
            item: item.clone(),
            wait_ms,
        })?;
        match reply {
            Some(r) => r.unit().map(|()| true),
            None => Ok(false),
        }
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<Option<T>, GetError> {
        match self
            .obj
            .call_waiting(deadline, |wait_ms| Op::QueueGet { wait_ms })
            .map_err(get_error)?
        {
            Some(r) => r.value().map(Some).map_err(get_error),
            None => Ok(None),
        }
    }

    /// Puts an item, waiting while the queue is full (`q.put(x)`).
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        match self.put_until(&item, None) {
            Ok(_) => Ok(()),
            Err(e) => Err(put_error(item, e)),
        }
    }

    /// Puts an item, waiting at most `timeout` for room ([`PutError::Timeout`]).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        match self.put_until(&item, Instant::now().checked_add(timeout)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(PutError::Timeout(item)),
            Err(e) => Err(put_error(item, e)),
        }
    }

    /// Puts an item if there is room now ([`PutError::Full`] otherwise;
    /// `q.put_nowait(x)`).
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        match self.put_until(&item, Some(Instant::now())) {
            Ok(true) => Ok(()),
            Ok(false) => Err(PutError::Full(item)),
            Err(e) => Err(put_error(item, e)),
        }
    }

    /// Takes the next item, waiting for one (`q.get()`).
    pub fn get(&self) -> Result<T, GetError> {
        // Without a deadline the server is asked again until an item comes.
        Ok(self
            .get_until(None)?
            .expect("an endless wait ends with an item"))
    }

    /// Takes the next item, waiting at most `timeout` ([`GetError::Timeout`]).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_until(Instant::now().checked_add(timeout))?
            .ok_or(GetError::Timeout)
    }

    /// Takes the next item if there is one ([`GetError::Empty`] otherwise;
    /// `q.get_nowait()`).
    pub fn try_get(&self) -> Result<T, GetError> {
        self.get_until(Some(Instant::now()))?.ok_or(GetError::Empty)
    }

    /// Number of items waiting (`q.qsize()`).
    pub fn qsize(&self) -> Result<usize, ManagerError> {
        self.obj.call(Op::Len)?.count()
    }

    /// Whether no item is waiting (`q.empty()`).
    pub fn empty(&self) -> Result<bool, ManagerError> {
        Ok(self.qsize()? == 0)
    }
}

/// A joinable queue in the manager's server (Python's `manager.JoinableQueue()`): a
/// [`QueueProxy`] (it derefs to one) that counts the items put and not yet marked
/// done with [`task_done`](Self::task_done); [`join`](Self::join) waits until there
/// are none.
///
/// ```
/// # multiproc::init();
/// use multiproc::manager::{JoinableQueueProxy, Manager};
/// use multiproc::Process;
///
/// fn worker(q: JoinableQueueProxy<u32>) {
///     for _ in 0..3 {
///         let _job = q.get().unwrap();
///         q.task_done().unwrap();
///     }
/// }
///
/// let m = Manager::start().unwrap();
/// let q = m.joinable_queue::<u32>(0).unwrap();
/// for job in 0..3 {
///     q.put(job).unwrap();
/// }
/// let mut p = Process::start(worker, q.clone()).unwrap();
/// q.join().unwrap(); // every job done
/// assert_eq!(q.unfinished_tasks().unwrap(), 0);
/// p.join().unwrap();
/// ```
pub struct JoinableQueueProxy<T> {
    queue: QueueProxy<T>,
}

impl<T> Clone for JoinableQueueProxy<T> {
    fn clone(&self) -> Self {
        JoinableQueueProxy {
            queue: self.queue.clone(),
        }
    }
}

impl<T> std::fmt::Debug for JoinableQueueProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<joinable queue proxy of object {} at {}>",
            self.queue.obj.id, self.queue.obj.client.address
        )
    }
}

/// Passes to other processes as a [`QueueProxy`] does.
impl<T> Serialize for JoinableQueueProxy<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueueProxy<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(JoinableQueueProxy {
            queue: QueueProxy::deserialize(deserializer)?,
        })
    }
}

impl<T> std::ops::Deref for JoinableQueueProxy<T> {
    type Target = QueueProxy<T>;
    fn deref(&self) -> &QueueProxy<T> {
        &self.queue
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    pub(crate) fn from_ref(obj: ObjectRef) -> Self {
        JoinableQueueProxy {
            queue: QueueProxy::from_ref(obj),
        }
    }

    /// Marks one item taken as done (`q.task_done()`);
    /// [`ManagerError::TooManyTaskDone`] if every item put is already done.
    pub fn task_done(&self) -> Result<(), ManagerError> {
        self.queue.obj.call(Op::QueueTaskDone)?.unit()
    }

    /// Waits until every item put is marked done (`q.join()`).
    pub fn join(&self) -> Result<(), ManagerError> {
        self.queue
            .obj
            .call_waiting(None, |wait_ms| Op::QueueJoin { wait_ms })?;
        Ok(())
    }

    /// As [`join`](Self::join), at most `timeout` ([`ManagerError::Timeout`]).
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), ManagerError> {
        let deadline = Instant::now().checked_add(timeout);
        match self
            .queue
            .obj
            .call_waiting(deadline, |wait_ms| Op::QueueJoin { wait_ms })?
        {
            Some(_) => Ok(()),
            None => Err(ManagerError::Timeout),
        }
    }

    /// How many items put are not yet marked done (`q.unfinished_tasks`).
    pub fn unfinished_tasks(&self) -> Result<u64, ManagerError> {
        Ok(self.queue.obj.call(Op::QueueUnfinished)?.count()? as u64)
    }
}

/// A manager failure as the queue's error: a server that is gone is `Disconnected`, a
/// value that does not encode or decode is `Codec`; anything else (which only a broken
/// server or protocol causes) is `Io`, with the [`ManagerError`] inside.
fn get_error(e: ManagerError) -> GetError {
    match e {
        ManagerError::Disconnected => GetError::Disconnected,
        ManagerError::Codec(e) => GetError::Codec(e),
        ManagerError::Io(e) => GetError::Io(e),
        other => GetError::Io(std::io::Error::other(other)),
    }
}

/// As [`get_error`], giving the item back.
fn put_error<T>(item: T, e: ManagerError) -> PutError<T> {
    match e {
        ManagerError::Disconnected => PutError::Disconnected(item),
        ManagerError::Codec(e) => PutError::Codec(item, e),
        ManagerError::Io(e) => PutError::Io(item, e),
        other => PutError::Io(item, std::io::Error::other(other)),
    }
}

// ---- lock --------------------------------------------------------------------------

/// A lock in the manager's server (Python's `manager.Lock()`, a `threading.Lock` in the
/// server).
///
/// If the process holding it dies (or just drops its connection), the server releases
/// it, so the others do not wait for ever.
///
/// ```
/// # multiproc::init();
/// let m = multiproc::manager::Manager::start().unwrap();
/// let lock = m.lock().unwrap();
/// {
///     let _guard = lock.lock().unwrap();
///     assert!(lock.is_locked().unwrap());
///     assert!(lock.try_lock().unwrap().is_none());
/// } // released here
/// assert!(!lock.is_locked().unwrap());
/// ```
pub struct LockProxy {
    obj: ObjectRef,
    _types: PhantomData<()>,
}

proxy_impls!(LockProxy, "lock");

/// Holds a [`LockProxy`]'s lock; releases it when dropped.
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct ManagerLockGuard<'a> {
    lock: &'a LockProxy,
}

impl Drop for ManagerLockGuard<'_> {
    fn drop(&mut self) {
        // A dead server released it anyway.
        let _ = self.lock.release();
    }
}

/// Why a [`LockProxy`] was not cleanly acquired: its previous holder died holding it
/// (the lock is now the caller's, through the guard inside, as with
/// [`sync::LockError::OwnerDied`](crate::sync::LockError::OwnerDied)), the wait ran
/// out, or the call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerLockError<'a> {
    /// The previous holder's process died (or dropped its proxies) holding the lock;
    /// the caller holds it now, through this guard. What it protects may be
    /// half-updated.
    #[error("the previous holder of the manager lock died holding it")]
    OwnerDied(ManagerLockGuard<'a>),
    /// Not acquired before the timeout.
    #[error("timed out waiting for the manager lock")]
    Timeout,
    /// The call failed (the server is gone, for one).
    #[error(transparent)]
    Manager(ManagerError),
}

impl<'a> ManagerLockError<'a> {
    /// The guard, if the lock was acquired after all (its holder had died).
    pub fn into_guard(self) -> Option<ManagerLockGuard<'a>> {
        match self {
            ManagerLockError::OwnerDied(guard) => Some(guard),
            _ => None,
        }
    }
}

impl From<ManagerError> for ManagerLockError<'_> {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::Timeout => ManagerLockError::Timeout,
            e => ManagerLockError::Manager(e),
        }
    }
}

/// How an acquisition ended.
enum Acquired {
    No,
    Clean,
    OwnerDied,
}

impl LockProxy {
    fn acquire_until(&self, deadline: Option<Instant>) -> Result<Acquired, ManagerError> {
        match self
            .obj
            .call_waiting(deadline, |wait_ms| Op::LockAcquire { wait_ms })?
        {
            Some(Reply::OwnerDied) => Ok(Acquired::OwnerDied),
            Some(r) => Ok(if r.flag()? {
                Acquired::Clean
            } else {
                Acquired::No
            }),
            None => Ok(Acquired::No),
        }
    }

    fn guard(
        &self,
        acquired: Acquired,
    ) -> Result<Option<ManagerLockGuard<'_>>, ManagerLockError<'_>> {
        // A guard only for a lock this caller holds: one made and dropped would
        // release the holder's lock.
        match acquired {
            Acquired::No => Ok(None),
            Acquired::Clean => Ok(Some(ManagerLockGuard { lock: self })),
            Acquired::OwnerDied => {
                Err(ManagerLockError::OwnerDied(ManagerLockGuard { lock: self }))
            }
        }
    }

    /// Waits for the lock (`with lock:`); [`ManagerLockError::OwnerDied`] with the guard
    /// if its holder died holding it.
    pub fn lock(&self) -> Result<ManagerLockGuard<'_>, ManagerLockError<'_>> {
        let acquired = self.acquire_until(None)?;
        self.guard(acquired)?
            .ok_or(ManagerLockError::Manager(ManagerError::Protocol(
                "an endless wait for a lock ended without it".into(),
            )))
    }

    /// Waits at most `timeout` for the lock ([`ManagerLockError::Timeout`]).
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ManagerLockGuard<'_>, ManagerLockError<'_>> {
        let acquired = self.acquire_until(Instant::now().checked_add(timeout))?;
        self.guard(acquired)?.ok_or(ManagerLockError::Timeout)
    }

    /// The lock if it is free now (`lock.acquire(False)`).
    pub fn try_lock(&self) -> Result<Option<ManagerLockGuard<'_>>, ManagerLockError<'_>> {
        let acquired = self.acquire_until(Some(Instant::now()))?;
        self.guard(acquired)
    }

    /// Python's `acquire(timeout=…)` without a guard (`None`: wait for ever); pair it
    /// with [`release`](Self::release). [`ManagerError::OwnerDied`] if the previous
    /// holder died holding it: the caller holds it now.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool, ManagerError> {
        match self.acquire_until(timeout.and_then(|t| Instant::now().checked_add(t)))? {
            Acquired::No => Ok(false),
            Acquired::Clean => Ok(true),
            Acquired::OwnerDied => Err(ManagerError::OwnerDied),
        }
    }

    /// Releases the lock, whoever acquired it (Python's `release()`);
    /// [`ManagerError::NotLocked`] if it is not held.
    pub fn release(&self) -> Result<(), ManagerError> {
        self.obj.call(Op::LockRelease)?.unit()
    }

    /// Whether someone holds the lock (`lock.locked()`).
    pub fn is_locked(&self) -> Result<bool, ManagerError> {
        self.obj.call(Op::LockLocked)?.flag()
    }
}

// ---- event -------------------------------------------------------------------------

/// An event in the manager's server (Python's `manager.Event()`).
///
/// ```
/// # multiproc::init();
/// use std::time::Duration;
/// let m = multiproc::manager::Manager::start().unwrap();
/// let e = m.event().unwrap();
/// assert!(!e.wait_timeout(Duration::from_millis(10)).unwrap());
/// e.set().unwrap();
/// assert!(e.is_set().unwrap());
/// e.wait().unwrap();
/// ```
pub struct EventProxy {
    obj: ObjectRef,
    _types: PhantomData<()>,
}

proxy_impls!(EventProxy, "event");

impl EventProxy {
    /// Sets the flag and wakes every waiter (`e.set()`).
    pub fn set(&self) -> Result<(), ManagerError> {
        self.obj.call(Op::EventSet)?.unit()
    }

    /// Clears the flag (`e.clear()`).
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.obj.call(Op::EventClear)?.unit()
    }

    /// Whether the flag is set (`e.is_set()`).
    pub fn is_set(&self) -> Result<bool, ManagerError> {
        self.obj.call(Op::EventIsSet)?.flag()
    }

    /// Waits until the flag is set (`e.wait()`).
    pub fn wait(&self) -> Result<(), ManagerError> {
        self.obj
            .call_waiting(None, |wait_ms| Op::EventWait { wait_ms })?;
        Ok(())
    }

    /// Waits at most `timeout`; whether the flag was set (`e.wait(timeout)`).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
        let deadline = Some(Instant::now() + timeout);
        Ok(self
            .obj
            .call_waiting(deadline, |wait_ms| Op::EventWait { wait_ms })?
            .is_some())
    }
}

// ---- registered types --------------------------------------------------------------

/// An object of a user type `T` in the manager's server (Python's
/// `BaseManager.register('T', T)` followed by `manager.T(...)`): its methods are
/// [`Shared::call`], run in the server one at a time.
pub struct SharedProxy<T> {
    obj: ObjectRef,
    _types: PhantomData<fn(T) -> T>,
}

proxy_impls!(SharedProxy<T>, "registered");

impl<T: Shared> SharedProxy<T> {
    /// Runs `call` on the object in the server and returns its reply. A panic in the
    /// method is [`ManagerError::Panicked`]; the object stays as the method left it.
    pub fn call(&self, call: T::Call) -> Result<T::Reply, ManagerError> {
        self.obj.call(Op::CustomCall(enc(&call)?))?.value()
    }

    /// A copy of the object's current state.
    pub fn get(&self) -> Result<T, ManagerError> {
        self.obj.call(Op::Snapshot)?.value()
    }

    /// Calls the method `name` (registered in [`Shared::methods`]) with `args` (a
    /// tuple for several) and decodes its result as `R` (Python's
    /// `proxy._callmethod(name, args)`). A name not registered is
    /// [`ManagerError::NoSuchMethod`]; an error the method returns, or its panic, is
    /// [`ManagerError::Remote`] with its kind and message; arguments or a result of
    /// other types than the method's are [`ManagerError::Protocol`] or
    /// [`ManagerError::Codec`].
    pub fn method<R: DeserializeOwned>(
        &self,
        name: &str,
        args: &impl Serialize,
    ) -> Result<R, ManagerError> {
        self.obj
            .call(Op::CustomMethod {
                name: name.to_string(),
                args: enc(args)?,
            })?
            .value()
    }

    /// Calls the iterator method `name` (registered with
    /// [`Methods::iter`](super::Methods::iter)): a proxy to the iterator, a new object
    /// in the server, freed when the proxy is dropped.
    pub fn iter<X: DeserializeOwned>(
        &self,
        name: &str,
        args: &impl Serialize,
    ) -> Result<IterProxy<X>, ManagerError> {
        let op = Op::CustomIter {
            name: name.to_string(),
            args: enc(args)?,
        };
        match self.obj.call(op)? {
            Reply::Id(id) => Ok(IterProxy::from_ref(ObjectRef::owned(
                self.obj.client.clone(),
                id,
            ))),
            r => Err(unexpected(r)),
        }
    }

    /// The names of the methods callable by name (Python's `_exposed_`), in the
    /// order [`Shared::methods`] registered them.
    pub fn exposed(&self) -> Result<Vec<String>, ManagerError> {
        match self.obj.call(Op::CustomExposed)? {
            Reply::Many(names) => names
                .into_iter()
                .map(|n| {
                    String::from_utf8(n.into_vec())
                        .map_err(|e| ManagerError::Protocol(e.to_string()))
                })
                .collect(),
            r => Err(unexpected(r)),
        }
    }
}

/// An iterator living in the manager's server, made by a registered type's iterator
/// method ([`SharedProxy::iter`]; Python's iterator proxy): each `next` is one request.
/// It passes to other processes like any proxy; the iterator is freed in the server
/// when its last proxy is dropped. An error (the iterator's panic, a server that is
/// gone) is yielded once and ends this proxy's iteration.
pub struct IterProxy<X> {
    obj: ObjectRef,
    done: bool,
    _types: PhantomData<fn(X) -> X>,
}

impl<X> Clone for IterProxy<X> {
    fn clone(&self) -> Self {
        IterProxy {
            obj: self.obj.clone(),
            done: self.done,
            _types: PhantomData,
        }
    }
}

impl<X> std::fmt::Debug for IterProxy<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<iterator proxy of object {} at {}>",
            self.obj.id, self.obj.client.address
        )
    }
}

/// Passes to other processes as the other proxies do.
impl<X> Serialize for IterProxy<X> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.obj.serialize(serializer)
    }
}

impl<'de, X> Deserialize<'de> for IterProxy<X> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(IterProxy::from_ref(ObjectRef::deserialize(deserializer)?))
    }
}

impl<X> IterProxy<X> {
    fn from_ref(obj: ObjectRef) -> Self {
        IterProxy {
            obj,
            done: false,
            _types: PhantomData,
        }
    }

    /// The iterator's id in its server.
    pub fn id(&self) -> u64 {
        self.obj.id
    }

    /// The address of the server that holds the iterator.
    pub fn address(&self) -> &Address {
        &self.obj.client.address
    }
}

impl<X: DeserializeOwned> Iterator for IterProxy<X> {
    type Item = Result<X, ManagerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.obj.call(Op::IterNext) {
            Ok(reply) => reply.maybe().transpose(),
            Err(e) => Some(Err(e)),
        };
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}
