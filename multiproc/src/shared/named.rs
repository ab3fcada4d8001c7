//! Named segments in `/dev/shm`: the names this process made (for
//! [`LeakCheck`](crate::testing::LeakCheck)), and [`SharedMemoryManager`], whose watcher
//! process removes the names it made when it ends, even if its owner is killed.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::SharedMemory;
use crate::process::{Process, StartMethod};
use crate::queue::Queue;
use crate::sync::Event;
use crate::sys::cell::ForkMutex;
use crate::sys::{mem, proc};

/// Names of `/dev/shm` segments made by this process and not unlinked by it. A
/// [`ForkMutex`]: a child forked while another thread held it can still take it.
static CREATED: ForkMutex<Vec<String>> = ForkMutex::new(Vec::new());

pub(super) fn note_created(name: &str) {
    CREATED
        .lock()
        .push(name.trim_start_matches('/').to_string());
}

pub(super) fn note_unlinked(name: &str) {
    let name = name.trim_start_matches('/');
    CREATED.lock().retain(|n| n != name);
}

/// The `/dev/shm` names this process made with [`SharedMemory::create`] and did not
/// unlink itself (another process, or a manager's watcher, may have).
pub(crate) fn created_names() -> Vec<String> {
    CREATED.lock().clone()
}

/// How long the watcher waits for a message before it looks whether its owner lives.
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// How long the owner waits for a new watcher, and for a watcher to finish.
const WATCHER_PATIENCE: Duration = Duration::from_secs(30);
/// How far a segment's change time may lag the clock read before its creation: the
/// kernel stamps files with a coarse clock (one tick, a few ms).
const CLOCK_SLACK: Duration = Duration::from_millis(50);

#[derive(Debug, Serialize, Deserialize)]
enum Watch {
    /// About to create this name (the owner's clock read before the creation, in
    /// nanoseconds since the epoch).
    Intent(String, u64),
    /// Created: the segment's (device, inode), the only file this name may be removed
    /// as.
    Created(String, (u64, u64)),
    /// The creation failed: the name is not ours.
    Forget(String),
    /// The manager ends: remove every name now.
    Stop,
}

/// What the watcher knows of one name.
enum Known {
    /// Announced, not confirmed (the owner died in between, or is about to confirm):
    /// removed only if its file changed no earlier than the announcement.
    Announced(u64),
    /// Created as this (device, inode).
    Created((u64, u64)),
}

fn nanos_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Removes `name` if the file there now is the one the watcher was told about: never a
/// segment another program made under a name this manager failed to take, or made
/// again after this manager's segment was unlinked.
fn remove_if_ours(name: &str, known: &Known) {
    let Ok(meta) = std::fs::symlink_metadata(format!("/dev/shm/{name}")) else {
        return;
    };
    let ours = match *known {
        Known::Created(id) => (meta.dev(), meta.ino()) == id,
        Known::Announced(at) => {
            let changed = (meta.ctime().max(0) as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec().max(0) as u64);
            changed.saturating_add(CLOCK_SLACK.as_nanos() as u64) >= at
        }
    };
    if ours {
        let _ = mem::shm_unlink(name);
    }
}

/// Records what `message` says of a name.
fn note(message: Watch, names: &mut Vec<(String, Known)>) {
    match message {
        Watch::Intent(name, at) => names.push((name, Known::Announced(at))),
        Watch::Created(name, id) => {
            if let Some(entry) = names.iter_mut().rev().find(|(n, _)| *n == name) {
                entry.1 = Known::Created(id);
            }
        }
        Watch::Forget(name) => {
            if let Some(i) = names.iter().rposition(|(n, _)| *n == name) {
                names.remove(i);
            }
        }
        Watch::Stop => {}
    }
}

/// The watcher: records the names its owner announces, and removes them all when the
/// owner stops it, or dies (it outlives its owner just long enough for that).
fn watch((inbox, ready, owner): (Queue<Watch>, Event, u64)) {
    // Every child dies with its parent; this one must outlive it to clean up. Cleared
    // before `ready`, so no name is announced while the watcher could still die first.
    proc::outlive_parent();
    ready.set();
    let mut names: Vec<(String, Known)> = Vec::new();
    loop {
        match inbox.get_timeout(LOOK_EVERY) {
            Ok(Watch::Stop) => break,
            Ok(message) => note(message, &mut names),
            Err(e) if e.is_empty() => {
                if !proc::identity_alive(owner) {
                    // What the owner published before it died is still in the queue.
                    while let Ok(message) = inbox.try_get() {
                        note(message, &mut names);
                    }
                    break;
                }
            }
            Err(_) => break,
        }
    }
    for (name, known) in &names {
        remove_if_ours(name, known);
    }
}

/// Python's `multiprocessing.managers.SharedMemoryManager`: makes named
/// [`SharedMemory`] segments and removes every one of their names from `/dev/shm` when
/// it ends — at [`shutdown`](Self::shutdown) or drop, and also when its owner process
/// dies in any way, `SIGKILL` included (Python's manager leaves them behind then).
///
/// A watcher process does the removal: started with the manager, told each name before
/// the segment exists and its device and inode after, it removes them all when asked
/// to, or when it sees that its owner is gone (within 50 ms), each only while the name
/// still leads to that segment. It is the one child that does not die with its parent.
/// The segments stay mapped wherever they are in use; only the names go.
///
/// ```
/// # multiproc::init();
/// use multiproc::shared::{SharedMemory, SharedMemoryManager};
///
/// let smm = SharedMemoryManager::start()?;
/// let shm = smm.shared_memory(1024)?; // smm.SharedMemory(1024)
/// shm.write(0, b"for anyone who knows the name");
/// let other = SharedMemory::attach(&shm.name())?;
/// assert_eq!(other.len(), 1024);
/// let name = shm.name();
/// smm.shutdown()?; // the name is gone; `shm` and `other` still work
/// assert!(SharedMemory::attach(&name).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Not done: Python's `ShareableList`. A manager leaked (never dropped) in a process
/// that then exits normally loses its watcher to the exit's termination of daemon
/// children, names left; drop or shut it down (Python's `with`).
#[derive(Debug)]
pub struct SharedMemoryManager {
    inbox: Queue<Watch>,
    /// The watcher; read-locked by each creation, so that `shutdown` (write) waits
    /// for creations under way and later ones see it gone.
    watcher: parking_lot::RwLock<Option<Process<()>>>,
    next: AtomicU64,
    /// The names created and confirmed to the watcher.
    names: parking_lot::Mutex<Vec<String>>,
}

impl SharedMemoryManager {
    /// Starts a manager and its watcher with the default start method (Python's
    /// `SharedMemoryManager()` + `start()`).
    pub fn start() -> io::Result<SharedMemoryManager> {
        SharedMemoryManager::start_with(crate::process::get_start_method())
    }

    /// [`start`](Self::start) with the watcher started by `method`.
    pub fn start_with(method: StartMethod) -> io::Result<SharedMemoryManager> {
        let inbox = crate::queue::QueueBuilder::new()
            .lanes(2)
            .ring_bytes(64 << 10)
            .build::<Watch>()?;
        let ready = Event::new()?;
        let mut watcher = Process::builder()
            .name("multiproc-shm-watcher")
            .daemon(true)
            .start_method(method)
            .start(watch, (inbox.clone(), ready.clone(), proc::my_identity()))
            .map_err(io::Error::other)?;
        if !ready.wait_timeout(WATCHER_PATIENCE) {
            let _ = watcher.kill();
            let _ = watcher.join_timeout(WATCHER_PATIENCE);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the shared memory manager's watcher did not start",
            ));
        }
        Ok(SharedMemoryManager {
            inbox,
            watcher: parking_lot::RwLock::new(Some(watcher)),
            next: AtomicU64::new(0),
            names: parking_lot::Mutex::default(),
        })
    }

    /// A new named segment of `size` zeroed bytes (Python's `smm.SharedMemory(size)`),
    /// called `mp-smm-<pid>-<n>`; its name is removed when the manager ends.
    pub fn shared_memory(&self, size: usize) -> io::Result<SharedMemory> {
        let name = format!(
            "mp-smm-{}-{}",
            proc::cached_pid(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        self.shared_memory_named(&name, size)
    }

    /// A new segment called `name` (as [`SharedMemory::create`]), whose name is removed
    /// when the manager ends: only while it is this segment's. A name that was taken
    /// already (`AlreadyExists`) is left alone, and so is a segment another program
    /// makes under the name after this one was unlinked (the watcher compares device
    /// and inode). A creation racing [`shutdown`](Self::shutdown) either ends before
    /// it starts, its name removed with the others, or fails.
    pub fn shared_memory_named(&self, name: &str, size: usize) -> io::Result<SharedMemory> {
        // Held through the creation and its announcements: `shutdown` waits for them.
        let watcher = self.watcher.read();
        if watcher.is_none() {
            return Err(io::Error::other("the shared memory manager was shut down"));
        }
        let put = |message: Watch| {
            self.inbox
                .put(message)
                .map_err(|e| io::Error::other(e.to_string()))
        };
        // Announced first: an owner killed right after the creation has told its watcher.
        let bare = name.trim_start_matches('/').to_string();
        put(Watch::Intent(
            bare.clone(),
            nanos_since_epoch(SystemTime::now()),
        ))?;
        let created = SharedMemory::create(name, size).and_then(|shm| match shm.file_identity() {
            Ok(id) => Ok((shm, id)),
            Err(e) => {
                let _ = shm.unlink();
                Err(e)
            }
        });
        match created {
            Ok((shm, id)) => {
                if let Err(e) = put(Watch::Created(bare.clone(), id)) {
                    let _ = shm.unlink();
                    let _ = put(Watch::Forget(bare));
                    return Err(e);
                }
                self.names.lock().push(bare);
                Ok(shm)
            }
            Err(e) => {
                let _ = put(Watch::Forget(bare));
                Err(e)
            }
        }
    }

    /// Removes the name of every segment made here and ends the watcher (Python's
    /// `shutdown()`); dropping the manager does the same. Later calls do nothing.
    pub fn shutdown(&self) -> io::Result<()> {
        let Some(mut watcher) = self.watcher.write().take() else {
            return Ok(());
        };
        let _ = self.inbox.put(Watch::Stop);
        match watcher.join_timeout(WATCHER_PATIENCE) {
            Ok(()) => {}
            Err(e) => {
                let _ = watcher.kill();
                let _ = watcher.join_timeout(WATCHER_PATIENCE);
                return Err(io::Error::other(format!(
                    "the shared memory manager's watcher failed: {e}"
                )));
            }
        }
        // The watcher removed the names: this process no longer has them to answer for.
        for name in self.names.lock().drain(..) {
            note_unlinked(&name);
        }
        Ok(())
    }
}

impl Drop for SharedMemoryManager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
