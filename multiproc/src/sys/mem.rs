//! Anonymous shared memory: `memfd` files mapped `MAP_SHARED`.
//!
//! A memfd has no name in any file system, so nothing is left in `/dev/shm` whatever
//! happens to the processes using it: the kernel frees the memory when the last
//! descriptor and the last mapping are gone (CPython's resource-tracker leaks, FAILURE_MODES
//! item 7, cannot happen). The descriptor is passed to other processes by inheritance or
//! `SCM_RIGHTS`. The shared-memory types of the crate build on this.
#![cfg_attr(not(test), allow(dead_code))]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::MemfdFlags;
use rustix::mm::{MapFlags, ProtFlags};

/// Creates a memfd of `len` bytes (zero-filled), close-on-exec.
pub(crate) fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    Ok(fd)
}

/// The size of the file behind `fd`.
pub(crate) fn file_len(fd: &OwnedFd) -> io::Result<usize> {
    Ok(rustix::fs::fstat(fd)?.st_size as usize)
}

/// A read-write `MAP_SHARED` mapping of a whole file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is a plain region of memory with no thread affinity; access to
// its bytes goes through `as_ptr` (raw) or `&mut self`, so Rust's aliasing rules are
// upheld by the users of the raw pointer, which synchronise with atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only hands out the raw pointer and the length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps all `len` bytes of `fd` shared and read-write. `len` must not be 0.
    pub(crate) fn new(fd: impl AsFd, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map 0 bytes",
            ));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) cannot overlap any
        // existing Rust object; the length is non-zero; the descriptor is valid for the
        // call (borrowed).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// The start of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes, for exclusive use.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` readable and writable bytes that live as long as
        // `self`; `&mut self` excludes other references made through this value. Other
        // processes may write the same memory concurrently; the bytes are plain `u8`s,
        // for which any value is valid.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping made in `new`, unmapped once.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_of_one_memfd_share_bytes() {
        let fd = memfd("multiproc-test", 4096).unwrap();
        assert_eq!(file_len(&fd).unwrap(), 4096);
        let mut a = Mapping::new(&fd, 4096).unwrap();
        let mut b = Mapping::new(&fd, 4096).unwrap();
        a.as_mut_slice()[100] = 42;
        assert_eq!(b.as_mut_slice()[100], 42);
        assert_eq!(a.len(), 4096);
        assert!(!a.as_ptr().is_null());
        assert!(Mapping::new(&fd, 0).is_err());
    }
}
