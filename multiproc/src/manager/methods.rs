//! Named methods of registered types (Python's `BaseManager.register(typeid, callable,
//! exposed=…, method_to_typeid=…)`): the table a [`Shared`](super::Shared) type fills
//! in [`Shared::methods`](super::Shared::methods), run in the server.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;

use super::protocol::Failure;

/// An iterator made by an iterator method, its items encoded.
pub(crate) type ErasedIter = Box<dyn Iterator<Item = Result<Vec<u8>, Failure>> + Send>;

type CallFn<T> = Box<dyn Fn(&mut T, &[u8]) -> Result<Vec<u8>, Failure> + Send + Sync>;
type IterFn<T> = Box<dyn Fn(&mut T, &[u8]) -> Result<ErasedIter, Failure> + Send + Sync>;

enum Method<T> {
    Call(CallFn<T>),
    Iter(IterFn<T>),
}

/// The methods of a registered type that clients may call by name (Python's
/// `exposed=`): filled by [`Shared::methods`](super::Shared::methods), called with
/// [`SharedProxy::method`](super::SharedProxy::method) and
/// [`SharedProxy::iter`](super::SharedProxy::iter). A name not registered is
/// [`ManagerError::NoSuchMethod`](super::ManagerError::NoSuchMethod).
pub struct Methods<T> {
    table: Vec<(&'static str, Method<T>)>,
}

impl<T> fmt::Debug for Methods<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// An error a registered method returned, or its panic (kind `"Panic"`), as the caller
/// sees it: [`ManagerError::Remote`](super::ManagerError::Remote). Python's manager
/// re-raises the server's exception in the caller; this is its kind and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RemoteError {
    /// The error's type name (its last path segment: `"ParseIntError"`), the kind
    /// chosen with [`RemoteError::new`], or `"Panic"`.
    pub kind: String,
    /// Its `Display` text, or the panic message.
    pub message: String,
}

impl RemoteError {
    /// An error of a kind you name (return it from a method registered with
    /// [`Methods::fallible`]).
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> RemoteError {
        RemoteError {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// The last path segment of a type's name, without generic arguments.
fn short_type_name<E>() -> String {
    let full = std::any::type_name::<E>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

fn remote<E: fmt::Display + 'static>(e: E) -> Failure {
    let any: &dyn std::any::Any = &e;
    match any.downcast_ref::<RemoteError>() {
        Some(r) => Failure::Remote {
            kind: r.kind.clone(),
            message: r.message.clone(),
        },
        None => Failure::Remote {
            kind: short_type_name::<E>(),
            message: e.to_string(),
        },
    }
}

fn decode_args<A: DeserializeOwned>(name: &str, args: &[u8]) -> Result<A, Failure> {
    codec::decode(args).map_err(|e| Failure::BadRequest(format!("arguments of {name}: {e}")))
}

fn encode_reply<R: Serialize>(name: &str, reply: &R) -> Result<Vec<u8>, Failure> {
    codec::encode(reply).map_err(|e| Failure::BadRequest(format!("reply of {name}: {e}")))
}

impl<T> Methods<T> {
    pub(crate) fn new() -> Methods<T> {
        Methods { table: Vec::new() }
    }

    fn add(&mut self, name: &'static str, method: Method<T>) -> &mut Self {
        // A later registration of a name replaces the earlier one.
        self.table.retain(|(n, _)| *n != name);
        self.table.push((name, method));
        self
    }

    /// Exposes `f` as the method `name`: `f(&mut object, args)` runs in the server and
    /// its result goes back to the caller. Several arguments go in a tuple.
    pub fn method<A, R>(
        &mut self,
        name: &'static str,
        f: impl Fn(&mut T, A) -> R + Send + Sync + 'static,
    ) -> &mut Self
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        self.add(
            name,
            Method::Call(Box::new(move |value, args| {
                let reply = f(value, decode_args(name, args)?);
                encode_reply(name, &reply)
            })),
        )
    }

    /// As [`method`](Self::method) for a method that may fail: an `Err(e)` reaches the
    /// caller as [`ManagerError::Remote`](super::ManagerError::Remote) with `e`'s type
    /// name as its kind (or the kind of a [`RemoteError`]) and `e.to_string()` as its
    /// message (Python's exception raised in the server, re-raised in the caller).
    pub fn fallible<A, R, E>(
        &mut self,
        name: &'static str,
        f: impl Fn(&mut T, A) -> Result<R, E> + Send + Sync + 'static,
    ) -> &mut Self
    where
        A: DeserializeOwned,
        R: Serialize,
        E: fmt::Display + 'static,
    {
        self.add(
            name,
            Method::Call(Box::new(move |value, args| {
                let reply = f(value, decode_args(name, args)?).map_err(remote)?;
                encode_reply(name, &reply)
            })),
        )
    }

    /// Exposes an iterator method (Python's `method_to_typeid={'__iter__':
    /// 'Iterator'}`): the caller gets an [`IterProxy`](super::IterProxy) to a new
    /// object in the server that yields `f`'s items one request each. The iterator
    /// must own what it walks (`'static`): clone the items, or share them through an
    /// `Arc`.
    pub fn iter<A, I>(
        &mut self,
        name: &'static str,
        f: impl Fn(&mut T, A) -> I + Send + Sync + 'static,
    ) -> &mut Self
    where
        A: DeserializeOwned,
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Serialize,
    {
        self.add(
            name,
            Method::Iter(Box::new(move |value, args| {
                let iter = f(value, decode_args(name, args)?).into_iter();
                Ok(Box::new(iter.map(move |item| encode_reply(name, &item))) as ErasedIter)
            })),
        )
    }

    /// The names exposed, in registration order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.table.iter().map(|(n, _)| (*n).to_string()).collect()
    }

    fn find(&self, name: &str) -> Result<&Method<T>, Failure> {
        self.table
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m)
            .ok_or_else(|| Failure::NoSuchMethod(name.to_string()))
    }

    pub(crate) fn call(&self, value: &mut T, name: &str, args: &[u8]) -> Result<Vec<u8>, Failure> {
        match self.find(name)? {
            Method::Call(f) => f(value, args),
            Method::Iter(_) => Err(Failure::BadRequest(format!(
                "{name} is an iterator method: call it with `iter`"
            ))),
        }
    }

    pub(crate) fn iter_of(
        &self,
        value: &mut T,
        name: &str,
        args: &[u8],
    ) -> Result<ErasedIter, Failure> {
        match self.find(name)? {
            Method::Iter(f) => f(value, args),
            Method::Call(_) => Err(Failure::BadRequest(format!(
                "{name} is not an iterator method: call it with `method`"
            ))),
        }
    }
}
