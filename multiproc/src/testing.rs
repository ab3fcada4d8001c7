//! Test support: a guard that fails a test which leaves a child process, a file
//! descriptor or a `/dev/shm` entry behind.
//!
//! ```
//! # multiproc::init();
//! let check = multiproc::testing::LeakCheck::start();
//! let mut p = multiproc::Process::start(|x: u32| x + 1, 1).unwrap();
//! assert_eq!(p.join().unwrap(), 2);
//! check.assert_clean(); // or let it drop: it checks then too
//! ```
//!
//! The guard serialises the tests of one binary that use it (they share the process
//! table and descriptor table), makes the test process a *child subreaper* so that
//! orphaned grandchildren come back to it and are seen, and at the end waits (up to a
//! generous bound) for children to be reaped before declaring a leak. Orphans that
//! already exited (zombies adopted through the subreaper) are reaped and not counted:
//! they are processes that correctly died with their parent.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::sys;

static SERIAL: Mutex<()> = Mutex::new(());

/// How long the final check waits for children to be reaped and descriptors closed.
pub const SETTLE: Duration = Duration::from_secs(20);

/// What a [`LeakCheck`] found left behind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leaks {
    /// Child processes still present (running or unreaped), with their state letter.
    pub children: Vec<(u32, char)>,
    /// Descriptors open now that were not open at the start, with what they point to.
    pub fds: Vec<(i32, String)>,
    /// `/dev/shm` entries present now that were not at the start.
    pub shm: Vec<String>,
}

impl Leaks {
    /// Whether nothing was left behind.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty() && self.fds.is_empty() && self.shm.is_empty()
    }
}

/// Snapshot of children, descriptors and `/dev/shm` taken at the start of a test.
#[must_use = "the check runs when the guard is dropped or assert_clean is called"]
pub struct LeakCheck {
    fds: BTreeSet<i32>,
    shm: BTreeSet<String>,
    done: bool,
    _serial: MutexGuard<'static, ()>,
}

impl LeakCheck {
    /// Takes the snapshot. Starts the forkserver first (when `init` ran), so that its
    /// socket, which lives as long as the process, is part of the baseline.
    pub fn start() -> LeakCheck {
        let serial = SERIAL.lock();
        let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
        if crate::process::runtime::initialised() {
            let _ = crate::process::ensure_forkserver();
        }
        // Settle what earlier tests left in flight (reaper threads finishing).
        let _ = wait_for(|| own_children().is_empty(), SETTLE);
        LeakCheck {
            fds: open_fds(),
            shm: shm_entries(),
            done: false,
            _serial: serial,
        }
    }

    /// Waits (up to [`SETTLE`]) for everything started since [`start`](Self::start)
    /// to be cleaned up, and returns what was not.
    pub fn leaks(&mut self) -> Leaks {
        self.done = true;
        let mut leaks = Leaks::default();
        let clean = wait_for(
            || {
                leaks = self.current_leaks();
                leaks.is_empty()
            },
            SETTLE,
        );
        if clean { Leaks::default() } else { leaks }
    }

    /// Panics with a description if anything was left behind.
    pub fn assert_clean(mut self) {
        let leaks = self.leaks();
        assert!(leaks.is_empty(), "test left resources behind: {leaks:?}");
    }

    fn current_leaks(&self) -> Leaks {
        Leaks {
            children: own_children(),
            fds: open_fds()
                .difference(&self.fds)
                .copied()
                .filter(|fd| !is_runtime_fd(*fd))
                .map(|fd| (fd, fd_target(fd)))
                .collect(),
            shm: shm_entries().difference(&self.shm).cloned().collect(),
        }
    }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        if self.done || std::thread::panicking() {
            return;
        }
        let leaks = self.leaks();
        assert!(leaks.is_empty(), "test left resources behind: {leaks:?}");
    }
}

fn wait_for(mut ok: impl FnMut() -> bool, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let mut pause = Duration::from_millis(1);
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Polling is the only way to observe another thread's reaping from outside;
        // the bound is generous and the pause grows, so this costs nothing when clean.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Children of this process other than the forkserver, with their state. Adopted
/// orphans that are already zombies are reaped here.
fn own_children() -> Vec<(u32, char)> {
    let me = sys::proc::getpid();
    let forkserver = crate::process::forkserver_pid();
    let registered: BTreeSet<u32> = crate::process::runtime::registered_children()
        .into_iter()
        .map(|(pid, ..)| pid)
        .collect();
    let mut out = Vec::new();
    for (pid, ppid, state) in processes() {
        if ppid != me || Some(pid) == forkserver {
            continue;
        }
        if state == 'Z' && !registered.contains(&pid) {
            // An orphan that died with its parent and was re-parented to us.
            if sys::proc::pidfd_open(pid)
                .ok()
                .and_then(|fd| sys::proc::reap(std::os::fd::AsFd::as_fd(&fd), false).ok())
                .flatten()
                .is_some()
            {
                continue;
            }
        }
        out.push((pid, state));
    }
    out
}

/// `(pid, ppid, state)` of every process, from `/proc/*/stat`.
fn processes() -> Vec<(u32, u32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // The command name is in parentheses and may contain spaces: parse after it.
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split(' ');
        let state = fields.next()?.chars().next()?;
        let ppid: u32 = fields.next()?.parse().ok()?;
        Some((pid, ppid, state))
    })
    .collect()
}

fn open_fds() -> BTreeSet<i32> {
    sys::fd::open_fds()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn is_runtime_fd(fd: i32) -> bool {
    crate::process::runtime::runtime_fds().contains(&fd)
}

fn shm_entries() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("multiproc") || n.starts_with("mp-"))
                .collect()
        })
        .unwrap_or_default()
}

fn fd_target(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_or_else(|e| e.to_string(), |p| p.display().to_string())
}
