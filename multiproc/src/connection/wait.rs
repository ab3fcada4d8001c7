//! `wait`: one call that waits on connections, process sentinels and queues together
//! (Python's `multiprocessing.connection.wait`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Connection, Receiver};
use crate::process::{ParentProcess, Process};
use crate::queue::{JoinableQueue, Queue, SimpleQueue};
use crate::sys;

/// The longest nap between two looks at objects whose readiness shows in shared memory
/// (a pipe's ring, a queue), not on a descriptor: the most a [`wait`] can lag behind
/// an item that arrives there.
const MAX_NAP: Duration = Duration::from_millis(2);

mod sealed {
    use std::os::fd::BorrowedFd;

    /// What [`wait`](super::wait) asks of an object.
    #[allow(unreachable_pub)]
    pub trait Sealed {
        /// Whether a wait would return the object now.
        fn is_ready(&self) -> bool;
        /// A descriptor that becomes readable when the object may have become ready.
        fn wake_fd(&self) -> Option<BorrowedFd<'_>>;
        /// Whether it can also become ready without its descriptor becoming readable
        /// (an item in shared memory).
        fn in_shared_memory(&self) -> bool;
    }
}

/// What [`wait`] waits on: connection ends that receive ([`Connection`],
/// [`Receiver`]), processes ([`Process`], ready once it ended, as its sentinel;
/// [`ParentProcess`]), queues ([`Queue`], [`SimpleQueue`], [`JoinableQueue`]: ready
/// when an item is there) and any descriptor (`BorrowedFd`, `OwnedFd`: ready when
/// readable, such as a [`Process::sentinel`]).
pub trait Waitable: sealed::Sealed {}

impl<T: sealed::Sealed + ?Sized> Waitable for T {}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`: for
/// ever); returns the positions in `objects` of those that are ready, in order (empty
/// when the time ran out). Python's `multiprocessing.connection.wait(object_list,
/// timeout)`, which returns the objects themselves.
///
/// Ready means: a connection has a message, or its peer is gone (a `recv` would not
/// block); a process has ended; a queue holds an item; a descriptor is readable.
/// Descriptors (sockets, pidfds) are waited on with `poll`. A pipe's or a queue's items
/// travel in shared memory, which no descriptor signals: while such an object is in
/// the list, the wait looks at them in rounds, napping at most 2 ms between rounds,
/// so an item there is seen within about that (a lone receiver's own
/// [`poll`](Connection::poll) wakes at once). An empty list returns at once, empty
/// (Python's blocks for ever without a timeout).
///
/// ```
/// # multiproc::init();
/// use std::time::Duration;
/// use multiproc::connection::{pipe, wait, Waitable};
/// use multiproc::{Process, Queue};
///
/// let (a, b) = pipe::<u32>().unwrap();
/// let q = Queue::<u32>::new().unwrap();
/// let mut p = Process::start(|b: multiproc::connection::Connection<u32>| b.send(&7).unwrap(), b)
///     .unwrap();
/// let objects: [&dyn Waitable; 2] = [&q, &a];
/// assert_eq!(wait(&objects, Some(Duration::from_secs(60))).unwrap(), vec![1]);
/// assert_eq!(a.recv().unwrap(), 7);
/// p.join().unwrap();
/// assert_eq!(wait(&[&p as &dyn Waitable, &q], None).unwrap(), vec![0]); // it ended
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let shared = objects.iter().any(|o| o.in_shared_memory());
    let mut nap = Duration::from_micros(20);
    loop {
        let ready: Vec<usize> = (0..objects.len())
            .filter(|&i| objects[i].is_ready())
            .collect();
        if !ready.is_empty() {
            return Ok(ready);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(ready);
        }
        let until = if shared {
            let until = now + nap;
            nap = (nap * 2).min(MAX_NAP);
            Some(deadline.map_or(until, |d| d.min(until)))
        } else {
            deadline
        };
        let fds: Vec<BorrowedFd<'_>> = objects.iter().filter_map(|o| o.wake_fd()).collect();
        if fds.is_empty() {
            // Only shared-memory objects: `until` is the end of this nap.
            let until = until.unwrap_or_else(|| Instant::now() + MAX_NAP);
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
        } else {
            sys::fd::poll_many(&fds, until)?;
        }
    }
}

impl<S, R> sealed::Sealed for Connection<S, R> {
    fn is_ready(&self) -> bool {
        self.end.poll(Some(Duration::ZERO)).unwrap_or(true)
    }
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.end.sock.as_fd())
    }
    fn in_shared_memory(&self) -> bool {
        self.end.rx.is_some()
    }
}

impl<T> sealed::Sealed for Receiver<T> {
    fn is_ready(&self) -> bool {
        self.end.poll(Some(Duration::ZERO)).unwrap_or(true)
    }
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.end.sock.as_fd())
    }
    fn in_shared_memory(&self) -> bool {
        self.end.rx.is_some()
    }
}

impl<R: DeserializeOwned + 'static> sealed::Sealed for Process<R> {
    fn is_ready(&self) -> bool {
        !self.is_alive()
    }
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sentinel().ok()
    }
    fn in_shared_memory(&self) -> bool {
        false
    }
}

impl sealed::Sealed for ParentProcess {
    fn is_ready(&self) -> bool {
        !self.is_alive()
    }
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sentinel()
    }
    fn in_shared_memory(&self) -> bool {
        false
    }
}

macro_rules! queue_waitable {
    ($q:ident) => {
        impl<T: Serialize + DeserializeOwned> sealed::Sealed for $q<T> {
            fn is_ready(&self) -> bool {
                !self.empty()
            }
            fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
                None
            }
            fn in_shared_memory(&self) -> bool {
                true
            }
        }
    };
}

queue_waitable!(Queue);
queue_waitable!(SimpleQueue);
queue_waitable!(JoinableQueue);

impl sealed::Sealed for BorrowedFd<'_> {
    fn is_ready(&self) -> bool {
        sys::fd::wait_readable(*self, Some(Duration::ZERO)).unwrap_or(true)
    }
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(*self)
    }
    fn in_shared_memory(&self) -> bool {
        false
    }
}

impl sealed::Sealed for OwnedFd {
    fn is_ready(&self) -> bool {
        self.as_fd().is_ready()
    }
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
    fn in_shared_memory(&self) -> bool {
        false
    }
}
