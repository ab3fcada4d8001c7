//! The manager's authkey handshake: the one of [`crate::connection`], shared with its
//! `Listener` and `Client` (see `connection/auth.rs`), with the manager's own roles.

pub use crate::connection::auth::AuthenticationError;
pub(crate) use crate::connection::auth::{
    Deadline, Role, answer_challenge, deliver_challenge, random_bytes,
};
