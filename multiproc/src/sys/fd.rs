//! File descriptors: socket pairs, descriptor passing, non-blocking I/O, polling.
//!
//! Every descriptor created here has `O_CLOEXEC` set, so a `spawn` child inherits only
//! the descriptors multiproc hands it on purpose.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// A connected pair of Unix stream sockets, both close-on-exec.
pub(crate) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A connected pair of Unix sequenced-packet sockets (message boundaries kept), both
/// close-on-exec.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let mut flags = rustix::fs::fcntl_getfl(fd)?;
    flags.set(rustix::fs::OFlags::NONBLOCK, on);
    rustix::fs::fcntl_setfl(fd, flags)?;
    Ok(())
}

/// Sets or clears `FD_CLOEXEC`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let mut flags = rustix::io::fcntl_getfd(fd)?;
    flags.set(rustix::io::FdFlags::CLOEXEC, on);
    rustix::io::fcntl_setfd(fd, flags)?;
    Ok(())
}

/// Duplicates `fd` to the lowest free descriptor that is at least `min`, close-on-exec.
pub(crate) fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, min)?)
}

/// Writes all of `buf` to a stream socket, retrying on `EINTR`. Never raises `SIGPIPE`:
/// a closed peer is an `io::ErrorKind::BrokenPipe` error.
pub(crate) fn send_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::net::send(fd, buf, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes as much of `buf` as the socket takes without blocking; returns how much.
pub(crate) fn send_nonblocking(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::net::send(fd, buf, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads once into the spare capacity of `buf` (at least `min_room` bytes of room are
/// reserved first). Returns the number of bytes read; 0 means end of stream.
/// `WouldBlock` is returned as an error on a non-blocking descriptor with no data.
pub(crate) fn read_into(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    min_room: usize,
) -> io::Result<usize> {
    buf.reserve(min_room);
    loop {
        match rustix::io::read(fd, buf.spare_capacity_mut()) {
            Ok((filled, _)) => {
                let n = filled.len();
                let len = buf.len();
                // `read` initialised exactly `n` bytes of the spare capacity.
                set_len_after_read(buf, len + n);
                return Ok(n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn set_len_after_read(buf: &mut Vec<u8>, new_len: usize) {
    debug_assert!(new_len <= buf.capacity());
    // SAFETY: the caller (`read_into`) passes the length covered by bytes that the
    // kernel has just written into the vector's spare capacity; all of them are
    // initialised `u8`s and `new_len <= capacity`.
    unsafe { buf.set_len(new_len) }
}

/// Whether the process at the other end of the Unix socket `fd` runs as this
/// process's user (or as root, who could reach a socket file of ours as well): the
/// check a socket in the abstract namespace, which has no file permissions, needs.
pub(crate) fn peer_is_same_user(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let peer = rustix::net::sockopt::socket_peercred(fd)?;
    let uid = peer.uid.as_raw();
    Ok(uid == rustix::process::getuid().as_raw() || uid == 0)
}

/// What `poll_two` saw.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Readiness {
    /// The first descriptor is readable (or hung up).
    pub(crate) first: bool,
    /// The second descriptor is readable (or hung up).
    pub(crate) second: bool,
}

/// Waits until `a` or `b` (if given) is readable or hung up, or the deadline passes.
/// `None` as deadline waits for ever. Retries on `EINTR` with the remaining time.
pub(crate) fn poll_two(
    a: BorrowedFd<'_>,
    b: Option<BorrowedFd<'_>>,
    deadline: Option<Instant>,
) -> io::Result<Readiness> {
    let flags = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
    loop {
        let timeout = super::mem::time_left(deadline).map(|left| {
            Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        let mut fds = [PollFd::new(&a, flags), PollFd::new(&a, PollFlags::empty())];
        let n = if let Some(b) = b.as_ref() {
            fds[1] = PollFd::new(b, flags);
            2
        } else {
            1
        };
        match rustix::event::poll(&mut fds[..n], timeout.as_ref()) {
            Ok(_) => {
                let ready = |f: &PollFd<'_>| !f.revents().is_empty();
                return Ok(Readiness {
                    first: ready(&fds[0]),
                    second: n == 2 && ready(&fds[1]),
                });
            }
            Err(rustix::io::Errno::INTR) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Readiness::default());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A descriptor that is readable at once and for ever: the read end of a pipe whose
/// write end is closed (end-of-file, `POLLHUP`). Close-on-exec.
pub(crate) fn ended_sentinel() -> io::Result<OwnedFd> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    drop(write);
    Ok(read)
}

/// Sets the backlog of the listening socket `fd` (`listen(2)` again, which only
/// changes the backlog of a socket that listens).
pub(crate) fn listen(fd: BorrowedFd<'_>, backlog: u32) -> io::Result<()> {
    Ok(rustix::net::listen(
        fd,
        backlog.min(i32::MAX as u32) as i32,
    )?)
}

/// Waits until one of `fds` is readable or hung up, or the deadline passes (`None`:
/// for ever); returns which are. Retries on `EINTR` with the remaining time.
pub(crate) fn poll_many(
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> io::Result<Vec<bool>> {
    let flags = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
    loop {
        let timeout = super::mem::time_left(deadline).map(|left| {
            Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        let mut polled: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, flags)).collect();
        match rustix::event::poll(&mut polled, timeout.as_ref()) {
            Ok(_) => return Ok(polled.iter().map(|f| !f.revents().is_empty()).collect()),
            Err(rustix::io::Errno::INTR) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(vec![false; fds.len()]);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Where [`connect_unix_until`] connects.
pub(crate) enum UnixTarget<'a> {
    /// A socket file.
    Path(&'a std::path::Path),
    /// A name in the abstract namespace.
    Abstract(&'a [u8]),
}

/// Connects a Unix stream socket (close-on-exec) to `target` by `deadline` (`None`: no
/// limit). A listener whose backlog is full makes a blocking `connect` wait for ever;
/// here the socket does not block, and a full backlog (`EAGAIN`) is tried again, a
/// little later each time (at most 10 ms), until the deadline: then `TimedOut`. The
/// socket returned blocks.
pub(crate) fn connect_unix_until(
    target: UnixTarget<'_>,
    deadline: Option<Instant>,
) -> io::Result<OwnedFd> {
    let addr = match target {
        UnixTarget::Path(path) => rustix::net::SocketAddrUnix::new(path)?,
        UnixTarget::Abstract(name) => rustix::net::SocketAddrUnix::new_abstract_name(name)?,
    };
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let mut nap = Duration::from_micros(100);
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                let left = super::mem::time_left(deadline);
                if left == Some(Duration::ZERO) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the listener's backlog stayed full until the deadline",
                    ));
                }
                std::thread::sleep(left.map_or(nap, |l| l.min(nap)));
                nap = (nap * 2).min(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
    set_nonblocking(fd.as_fd(), false)?;
    Ok(fd)
}

/// Waits up to `timeout` for `fd` to become readable.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    Ok(poll_two(fd, None, deadline)?.first)
}

/// `true` if the peer of socket `fd` has hung up (closed every copy of its end), checked
/// without waiting. Data still buffered does not count: only the hang-up.
pub(crate) fn peer_hung_up(fd: BorrowedFd<'_>) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    // Only HUP (both directions closed): a one-way pipe shuts one direction down on
    // purpose, which alone would show as RDHUP.
    let mut fds = [PollFd::new(&fd, PollFlags::empty())];
    match poll(
        &mut fds,
        Some(&rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }),
    ) {
        Ok(n) if n > 0 => fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR),
        _ => false,
    }
}

/// Sends one packet with descriptors attached (`SCM_RIGHTS`).
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let iov = [io::IoSlice::new(data)];
    loop {
        match rustix::net::sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(_) => return Err(io::Error::other("short send of a packet")),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes all of `data` to a stream socket, the descriptors attached to its first
/// byte. Never raises `SIGPIPE`.
pub(crate) fn send_all_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[OwnedFd],
) -> io::Result<()> {
    if fds.is_empty() {
        return send_all(sock, data);
    }
    let fds: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let fds = &fds[..];
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let first = &data[..data.len().min(64 * 1024)];
    let iov = [io::IoSlice::new(first)];
    let sent = loop {
        match rustix::net::sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    send_all(sock, &data[sent..])
}

/// Receives one packet of at most `buf.len()` bytes and up to `max_fds` descriptors.
/// Returns the number of bytes (0 with no descriptors means the peer closed) and the
/// descriptors received, each close-on-exec.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(max_fds.max(1)))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = loop {
        match rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(m) => break m,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "packet larger than the buffer",
        ));
    }
    Ok((msg.bytes, fds))
}

/// Reads once into the spare capacity of `buf` (reserving `min_room` bytes first), also
/// taking any descriptors that arrive with the data (`SCM_RIGHTS`) into `fds`, in
/// arrival order. Returns the number of bytes read; 0 means end of stream.
pub(crate) fn recv_into_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    min_room: usize,
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    recv_into_with_fds_or_lost(sock, buf, min_room, fds, nonblocking, &mut false)
}

/// [`recv_into_with_fds`], also setting `lost` if the kernel dropped descriptors that
/// came with the data (`MSG_CTRUNC`): more than [`MAX_FDS_PER_READ`] in one message, or
/// no room for them under this process's `RLIMIT_NOFILE`. The data is kept either way.
pub(crate) fn recv_into_with_fds_or_lost(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    min_room: usize,
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
    lost: &mut bool,
) -> io::Result<usize> {
    buf.reserve(min_room);
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let spare = buf.spare_capacity_mut();
    let spare_len = spare.len();
    // recvmsg wants initialised buffers: zero the room we offer, at most what one read
    // of a socket brings (cheap next to the syscall), never the whole of what a peer
    // announced.
    let room = &mut spare[..spare_len.min(min_room.max(512)).min(MAX_ZEROED_ROOM)];
    room.fill(MaybeUninit::new(0));
    let room_len = room.len();
    let len = buf.len();
    set_len_after_read(buf, len + room_len);
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let result = loop {
        let mut iov = [io::IoSliceMut::new(&mut buf[len..])];
        match rustix::net::recvmsg(sock, &mut iov, &mut control, flags) {
            Ok(m) => {
                *lost |= m.flags.contains(rustix::net::ReturnFlags::CTRUNC);
                break Ok(m.bytes);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => break Err(io::Error::from(e)),
        }
    };
    buf.truncate(len + *result.as_ref().unwrap_or(&0));
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    result
}

/// Most bytes one `recvmsg` is offered (and so zeroed first): about what a Unix
/// socket's buffer holds.
const MAX_ZEROED_ROOM: usize = 256 << 10;

/// Most descriptors accepted with one read.
pub(crate) const MAX_FDS_PER_READ: usize = 64;

/// The descriptors this process has open, from `/proc/self/fd` (the directory handle
/// used to list them is left out).
pub(crate) fn open_fds() -> io::Result<Vec<RawFd>> {
    let dir = std::fs::read_dir("/proc/self/fd")?;
    let mut fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The listing includes the directory's own descriptor, which is closed by now.
    fds.retain(|fd| rustix::io::fcntl_getfd(borrow_raw_checked(*fd)).is_ok());
    fds.sort_unstable();
    Ok(fds)
}

fn borrow_raw_checked(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the descriptor is only used for an `fcntl(F_GETFD)` probe, which is
    // harmless on a closed or reused number (it just fails with EBADF); the borrow
    // does not outlive the probe in `open_fds`.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Closes a descriptor number that this process inherited and owns by contract (used in
/// a freshly forked child for descriptors that belong to its parent's bookkeeping).
pub(crate) fn close_inherited(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: called only in a freshly forked child on a descriptor number that the
        // parent's runtime owned exclusively (no `OwnedFd` in the child refers to it
        // through safe code that will run again), so closing it cannot invalidate a
        // live owner.
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
}

/// Takes ownership of a descriptor number handed to this process at exec time (the
/// `spawn` and `forkserver` bootstrap descriptor), after checking it is open.
pub(crate) fn adopt_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    rustix::io::fcntl_getfd(borrow_raw_checked(fd))?;
    // SAFETY: the descriptor is open (checked above) and was placed at this number by
    // our parent for this process alone; nothing else in this process owns it, and
    // `adopt_inherited` is called at most once per number (from `init`).
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    set_cloexec(owned.as_fd(), true)?;
    Ok(owned)
}
