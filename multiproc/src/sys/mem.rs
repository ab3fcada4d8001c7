//! Anonymous shared memory: `memfd` files mapped `MAP_SHARED`.
//!
//! A memfd has no name in any file system, so nothing is left in `/dev/shm` whatever
//! happens to the processes using it: the kernel frees the memory when the last
//! descriptor and the last mapping are gone (CPython's resource-tracker leaks, FAILURE_MODES
//! item 7, cannot happen). The descriptor is passed to other processes by inheritance or
//! `SCM_RIGHTS`. The shared-memory types of the crate build on this.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use rustix::fs::{FallocateFlags, MemfdFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::thread::futex;

/// Creates a memfd of `len` bytes (zero-filled), close-on-exec, sealed at that size:
/// no process holding the descriptor can shrink it (every other mapping would die of
/// `SIGBUS` on its next touch), grow it, or add or remove seals (a write seal would
/// fail everyone's next writable mapping). Punching holes stays allowed.
pub(crate) fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    use rustix::fs::SealFlags;
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(fd)
}

/// The size of the file behind `fd`.
pub(crate) fn file_len(fd: impl AsFd) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_size as u64)
}

/// Opens the file a `/proc/<pid>/fd/<n>` path names again, read-write, close-on-exec
/// (for a memfd: the same memory).
pub(crate) fn reopen(path: &str) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Bytes of memory the file behind `fd` actually holds (a sparse memfd holds less than
/// its size).
pub(crate) fn file_allocated(fd: impl AsFd) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_blocks as u64 * 512)
}

/// Reads up to `buf.len()` bytes of the file behind `fd` at `offset`.
pub(crate) fn read_at(fd: impl AsFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    Ok(rustix::io::pread(fd, buf, offset)?)
}

/// Gives the memory behind `[offset, offset + len)` of a memfd back to the kernel; the
/// range reads as zeros afterwards, for every process mapping it.
pub(crate) fn punch_hole(fd: impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    rustix::fs::fallocate(
        fd,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )?;
    Ok(())
}

/// The path of the named segment `name` (Python's `shm_open` names: an optional leading
/// `/`, then one path component), or `InvalidInput`.
fn shm_path(name: &str) -> io::Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.contains('/') || bare == "." || bare == ".." || bare.len() > 250 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a shared memory name (one component, optional leading '/')"),
        ));
    }
    Ok(format!("/dev/shm/{bare}"))
}

/// Creates the named segment `/dev/shm/<name>` of `len` bytes (zero-filled), readable
/// and writable by this user only, close-on-exec (what `shm_open(O_CREAT | O_EXCL)`
/// does): `AlreadyExists` if the name is taken. On a failure after the creation the
/// name is removed again.
pub(crate) fn shm_create(name: &str, len: usize) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let path = shm_path(name)?;
    let fd = rustix::fs::open(
        path.as_str(),
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::RUSR | Mode::WUSR,
    )?;
    if let Err(e) = rustix::fs::ftruncate(&fd, len as u64) {
        let _ = rustix::fs::unlink(path.as_str());
        return Err(e.into());
    }
    Ok(fd)
}

/// Opens the existing named segment `/dev/shm/<name>` read-write, close-on-exec:
/// `NotFound` if there is none (a name no segment can have included).
pub(crate) fn shm_open(name: &str) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let path = shm_path(name).map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
    Ok(rustix::fs::open(
        path.as_str(),
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// Removes the name `/dev/shm/<name>` (`shm_unlink`): `NotFound` if there is none.
/// Mappings and descriptors of the segment stay valid until they are closed.
pub(crate) fn shm_unlink(name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlink(shm_path(name)?.as_str())?)
}

/// The timeout a wait until `deadline` has left: `None` for no deadline,
/// `Some(Duration::ZERO)` once it has passed.
pub(crate) fn time_left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Sleeps while `word` holds `expected`, at most `timeout`: a futex wait that works
/// across processes (the word lives in a `MAP_SHARED` mapping, so the futex is not
/// private). Returns on a wake-up, a changed value, a signal or the timeout; callers
/// recheck their condition.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| rustix::thread::futex::Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    // EAGAIN (value changed), EINTR and ETIMEDOUT all mean "look again".
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

/// Wakes one process or thread sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake_one(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), 1);
}

/// Wakes every process and thread sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
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
        Mapping::range(fd, 0, len, false)
    }

    /// Maps `len` bytes of `fd` from `offset` (a multiple of the page size) shared and
    /// read-write. With `populate`, the pages are faulted in by the `mmap` call itself,
    /// which is much cheaper than one fault per page for a region about to be copied.
    pub(crate) fn range(
        fd: impl AsFd,
        offset: u64,
        len: usize,
        populate: bool,
    ) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map 0 bytes",
            ));
        }
        let flags = if populate {
            MapFlags::SHARED | MapFlags::POPULATE
        } else {
            MapFlags::SHARED
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint) cannot overlap any
        // existing Rust object; the length is non-zero; the descriptor is valid for the
        // call (borrowed).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                fd,
                offset,
            )
        }?;
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// A pointer to `len` bytes at `offset`, checked to be inside the mapping and aligned
    /// to `align` (for the typed views of the `sys` layer).
    ///
    /// # Panics
    /// On a misaligned or out-of-bounds range: a bug in the caller's layout.
    pub(super) fn ptr_at(&self, offset: usize, len: usize, align: usize) -> *mut u8 {
        assert!(
            offset % align == 0 && offset.checked_add(len).is_some_and(|end| end <= self.len),
            "bad range {offset}+{len}"
        );
        // SAFETY: in bounds (checked).
        unsafe { self.ptr.as_ptr().add(offset) }
    }

    /// The atomic `u64` at byte `offset`, which must be 8-aligned and inside the mapping.
    ///
    /// # Panics
    /// On a misaligned or out-of-bounds offset: a bug in the caller's layout.
    #[inline]
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset % 8 == 0 && offset + 8 <= self.len,
            "bad u64 offset {offset}"
        );
        // SAFETY: in bounds and aligned (checked; the mapping is page-aligned); the
        // memory lives as long as `&self`; every process and thread accesses these words
        // only atomically, and any bit pattern is a valid `u64`.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// The atomic `u32` at byte `offset`, which must be 4-aligned and inside the mapping.
    ///
    /// # Panics
    /// On a misaligned or out-of-bounds offset: a bug in the caller's layout.
    #[inline]
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset % 4 == 0 && offset + 4 <= self.len,
            "bad u32 offset {offset}"
        );
        // SAFETY: as for `u64_at`.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// Copies `dst.len()` bytes from `offset` out of the mapping.
    ///
    /// The bytes may be written concurrently by another process; the copy is then
    /// garbage, and the caller must validate it afterwards (the queue does so with a
    /// compare-and-swap on the cursor that covers them, as a seqlock does with its
    /// sequence number). Bytes are plain `u8`s: any value is valid.
    ///
    /// # Panics
    /// If the range is out of bounds.
    #[inline]
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) {
        assert!(
            offset
                .checked_add(dst.len())
                .is_some_and(|end| end <= self.len),
            "read out of bounds"
        );
        // SAFETY: the source range is inside the mapping (checked) and cannot overlap
        // `dst`, a Rust allocation distinct from it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }

    /// Replaces the contents of `out` with `len` bytes copied from `offset`, under the same terms as
    /// [`Mapping::read`] (without zero-filling the vector first).
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub(crate) fn read_into_vec(&self, offset: usize, len: usize, out: &mut Vec<u8>) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "read out of bounds"
        );
        out.clear();
        out.reserve(len);
        // SAFETY: the source is inside the mapping (checked); the destination is the
        // vector's own capacity of at least `len` bytes, which cannot overlap it; after
        // the copy those `len` bytes are initialised, so `set_len` is sound.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), out.as_mut_ptr(), len);
            out.set_len(len);
        }
    }

    /// Runs `write` on the `len` bytes at `offset`.
    ///
    /// Contract: the caller owns that range for writing by the protocol of the shared
    /// structure (a queue lane's free space, owned by the one thread that holds the
    /// lane); readers of a stale view may copy it concurrently and discard the copy.
    ///
    /// # Panics
    /// If the range is out of bounds.
    #[inline]
    pub(crate) fn write_with<R>(
        &self,
        offset: usize,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "write out of bounds"
        );
        // SAFETY: in bounds (checked) and alive for the call; no other `&mut` to this
        // range exists in this process, by the caller's contract; `u8` has no invalid
        // values, so whatever another process stores concurrently is sound to observe.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), len) };
        write(bytes)
    }

    /// The bytes, for reading.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes living as long as `self`. Writers
        // of this range own it exclusively by the caller's protocol (a blob is written
        // once before it is published and only read after).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
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
        let w = Mapping::range(&fd, 0, 4096, true).unwrap();
        w.write_with(8, 3, |b| b.copy_from_slice(b"abc"));
        let mut out = [0u8; 3];
        w.read(8, &mut out);
        assert_eq!(&out, b"abc");
        w.u64_at(16).store(7, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(w.as_slice()[16], 7);
        punch_hole(&fd, 0, 4096).unwrap();
        assert_eq!(w.as_slice()[8], 0);
        let mut a = Mapping::new(&fd, 4096).unwrap();
        let mut b = Mapping::new(&fd, 4096).unwrap();
        a.as_mut_slice()[100] = 42;
        assert_eq!(b.as_mut_slice()[100], 42);
        assert!(Mapping::new(&fd, 0).is_err());
    }

    #[test]
    fn a_holder_of_the_descriptor_cannot_resize_the_memory_under_the_others() {
        // Shrunk, every other mapping would die of SIGBUS on its next touch; grown, it
        // could be made to hold more than its owner meant.
        let fd = memfd("multiproc-test", 8192).unwrap();
        let map = Mapping::new(&fd, 8192).unwrap();
        for len in [0, 4096, 1 << 20] {
            let err = rustix::fs::ftruncate(&fd, len).unwrap_err();
            assert_eq!(err, rustix::io::Errno::PERM, "ftruncate to {len}");
        }
        assert_eq!(file_len(&fd).unwrap(), 8192);
        // Nor can it forbid writes (a write seal) or lift the seals.
        assert!(rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::WRITE).is_err());
        assert_eq!(map.as_slice()[8191], 0);
        // Holes may still be punched (consumed queue blobs give memory back).
        punch_hole(&fd, 0, 4096).unwrap();
    }
}
