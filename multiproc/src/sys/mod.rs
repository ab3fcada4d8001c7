//! The operating-system layer: the only module of multiproc that contains `unsafe`.
//!
//! Everything above this layer is safe Rust. Each function here states its contract;
//! each `unsafe` block carries a `// SAFETY:` comment saying why the contract holds.
//! Most calls go through [`rustix`], which is itself safe; `libc` is used only where
//! rustix has no wrapper (`fork`, `clone(CLONE_PARENT)`, `posix_spawn`, `_exit`,
//! `atexit`).
//!
//! Linux only: the crate relies on `pidfd_open` (5.3), `PR_SET_PDEATHSIG`, `memfd` and
//! `SOCK_SEQPACKET` Unix sockets.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub(crate) mod cell;
pub(crate) mod entry;
pub(crate) mod fd;
pub(crate) mod hooks;
pub(crate) mod mem;
pub(crate) mod proc;
pub(crate) mod robust;

pub use proc::{Fork, fork};
