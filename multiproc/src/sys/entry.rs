//! Function addresses that survive a re-exec of the same executable.
//!
//! A `spawn` or `forkserver` child must call the function its parent named. Rust has no
//! way to serialise a function, but both processes run the *same executable file*
//! (the child is started from `/proc/self/exe`, which the kernel resolves to the very
//! inode the parent runs, even if the path was replaced since). Code addresses then
//! differ only by the load offset chosen by ASLR, so a function is named by its distance
//! from [`anchor`], a function of this module, and found again in the child by adding
//! the child's own `anchor` address.
//!
//! The child checks the executable's identity ([`super::proc::exe_identity`]) against
//! the parent's before it resolves any address; [`Verified`] is the proof of that check
//! and the only way to call [`resolve`].

use serde::{Deserialize, Serialize};

/// A code address relative to [`anchor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FnAddr(i64);

#[inline(never)]
fn anchor() {}

fn anchor_addr() -> usize {
    anchor as fn() as usize
}

impl FnAddr {
    /// The address of `f`, relative to the anchor.
    pub(crate) fn of<F: FnPtr>(f: F) -> FnAddr {
        FnAddr(f.addr() as i64 - anchor_addr() as i64)
    }
}

/// Proof that this process runs the same executable as the parent that sent the
/// addresses it is about to resolve.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verified(());

/// Checks that this process's executable is the one identified by `parent_exe`.
pub(crate) fn verify(parent_exe: (u64, u64)) -> std::io::Result<Verified> {
    let mine = super::proc::exe_identity()?;
    if mine == parent_exe {
        Ok(Verified(()))
    } else {
        Err(std::io::Error::other(format!(
            "executable mismatch: parent runs {parent_exe:?}, this process runs {mine:?}"
        )))
    }
}

/// Function-pointer types that can be named by address.
///
/// # Safety
///
/// Implementors must be plain function pointers (`fn(..) -> ..`), the size of a
/// `usize`, for which transmuting from the address of a function of exactly that type
/// gives back a callable pointer.
pub(crate) unsafe trait FnPtr: Copy {
    /// The address.
    fn addr(self) -> usize;
}

// SAFETY: `fn() -> R` is a function pointer type.
unsafe impl<R> FnPtr for fn() -> R {
    fn addr(self) -> usize {
        self as usize
    }
}

// SAFETY: `fn(A) -> R` is a function pointer type.
unsafe impl<A, R> FnPtr for fn(A) -> R {
    fn addr(self) -> usize {
        self as usize
    }
}

// SAFETY: `fn(A, B) -> R` is a function pointer type.
unsafe impl<A, B, R> FnPtr for fn(A, B) -> R {
    fn addr(self) -> usize {
        self as usize
    }
}

// SAFETY: `fn(A, B, C) -> R` is a function pointer type.
unsafe impl<A, B, C, R> FnPtr for fn(A, B, C) -> R {
    fn addr(self) -> usize {
        self as usize
    }
}

/// The function of type `F` at `addr` in this process.
///
/// Sound because: `addr` was made by [`FnAddr::of`] from a value of type `F` in a
/// process running the same executable (proved by `_proof`), and it reaches us with its
/// type: the parent sends the address of a monomorphic entry function of a fixed type,
/// and that entry function resolves the user's function with the type its own generic
/// parameters fix. The addresses are only ever taken from the bootstrap message the
/// parent wrote on a socket private to the two processes.
pub(crate) fn resolve<F: FnPtr>(_proof: &Verified, addr: FnAddr) -> F {
    let raw = (anchor_addr() as i64 + addr.0) as usize;
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    // SAFETY: see the function's documentation: `raw` is the address, in this process,
    // of a function of type `F` (same executable, same relative position), and `F` is
    // a function-pointer type the size of `usize` (`FnPtr` contract, asserted above).
    unsafe { std::mem::transmute_copy::<usize, F>(&raw) }
}
