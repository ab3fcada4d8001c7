//! A small block of shared memory behind every cross-process object: one memfd, mapped
//! whole, passed to other processes with its descriptor. Below the objects that use it
//! (`shared`, `sync`, the pool's worker slots); it uses only `sys` and `handle`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

use serde::{Deserializer, Serializer};

use crate::handle;
use crate::sys::mem::{self, Mapping};
use crate::sys::robust::RobustMutex;

/// Words at the front of every block: what it is, so that a descriptor of another kind
/// of object is refused when it arrives.
const MAGIC_AT: usize = 0;
const KIND_AT: usize = 8;
/// Where a block's own fields start.
pub(crate) const BODY: usize = 64;

/// One memfd, mapped whole.
#[derive(Debug)]
pub(crate) struct Block {
    fd: OwnedFd,
    map: Mapping,
    len: usize,
}

const MAGIC: u64 = u64::from_le_bytes(*b"MPBLOCK1");

impl Block {
    /// A fresh zeroed block of `len` bytes (at least [`BODY`]) holding a `kind` object.
    pub(crate) fn new(kind: u64, len: usize) -> io::Result<Block> {
        let len = len.max(BODY).next_multiple_of(64);
        let fd = mem::memfd("multiproc-shared", len)?;
        let map = Mapping::new(&fd, len)?;
        map.u64_at(KIND_AT)
            .store(kind, std::sync::atomic::Ordering::Relaxed);
        map.u64_at(MAGIC_AT)
            .store(MAGIC, std::sync::atomic::Ordering::Release);
        Ok(Block { fd, map, len })
    }

    /// Maps a block received from another process, checking its kind.
    pub(crate) fn open(fd: OwnedFd, kind: u64) -> io::Result<Block> {
        let len = mem::file_len(&fd)? as usize;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        if len < BODY {
            return Err(bad("not a multiproc shared object"));
        }
        // When most pages exist already (someone wrote them), map them all now: one
        // system call instead of a page fault per 4 KiB on first touch. A mostly sparse
        // block is left to fill lazily, so attaching never allocates.
        let populate = mem::file_allocated(&fd)? >= len as u64 / 2;
        let map = Mapping::range(&fd, 0, len, populate)?;
        if map
            .u64_at(MAGIC_AT)
            .load(std::sync::atomic::Ordering::Acquire)
            != MAGIC
        {
            return Err(bad("not a multiproc shared object"));
        }
        if map
            .u64_at(KIND_AT)
            .load(std::sync::atomic::Ordering::Relaxed)
            != kind
        {
            return Err(bad("a shared object of another kind or type"));
        }
        Ok(Block { fd, map, len })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
    /// A path by which another process of this user can open the same memory while
    /// this process holds it: `/proc/<pid>/fd/<n>`.
    pub(crate) fn proc_path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!(
            "/proc/{}/fd/{}",
            crate::sys::proc::cached_pid(),
            self.fd.as_raw_fd()
        )
    }

    /// Opens a block by a [`Block::proc_path`] of another process.
    pub(crate) fn open_path(path: &str, kind: u64) -> io::Result<Block> {
        if !path.starts_with("/proc/") {
            // Python's `SharedMemory(name)` raises FileNotFoundError for any name nobody
            // created; multiproc's names are the `/proc` paths `name()` gives.
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no multiproc shared memory is called {path:?} (names are the /proc paths SharedMemory::name gives)"
                ),
            ));
        }
        Block::open(mem::reopen(path)?, kind)
    }

    pub(crate) fn map(&self) -> &Mapping {
        &self.map
    }
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        self.map.u32_at(offset)
    }
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        self.map.u64_at(offset)
    }
    pub(crate) fn mutex_at(&self, offset: usize) -> &RobustMutex {
        RobustMutex::at(&self.map, offset)
    }

    /// Serialises the block as its descriptor (see [`handle`]).
    pub(crate) fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        handle::serialize_fd(self.fd.as_fd(), serializer)
    }

    /// The other side of [`Block::serialize`].
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
        kind: u64,
    ) -> Result<Block, D::Error> {
        let fd = handle::deserialize_fd(deserializer)?;
        Block::open(fd, kind)
            .map_err(|e| serde::de::Error::custom(format!("cannot attach shared object: {e}")))
    }
}

/// A kind tag for a block holding `what` over items of type `T`.
pub(crate) fn kind<T: ?Sized>(what: &str) -> u64 {
    crate::codec::fingerprint::<T>()
        ^ crate::codec::fingerprint::<str>().rotate_left(7)
        ^ what.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_of_another_kind_or_a_foreign_file_is_refused() {
        let block = Block::new(kind::<u32>("Value"), 128).unwrap();
        let dup = || block.fd.try_clone().unwrap();
        assert!(Block::open(dup(), kind::<u32>("Value")).is_ok());
        for other in [
            kind::<u64>("Value"),
            kind::<u32>("Array"),
            kind::<()>("Lock"),
        ] {
            let err = Block::open(dup(), other).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
        let foreign = mem::memfd("not-ours", 4096).unwrap();
        assert_eq!(
            Block::open(foreign, kind::<u32>("Value"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidData
        );
    }
}
