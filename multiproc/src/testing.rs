//! Test support: a guard that fails a test which leaves a child process (running or
//! unreaped), a file descriptor, a shared-memory mapping, a `/dev/shm` entry or a
//! thread of multiproc's behind.
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
//! orphaned grandchildren come back to it and are seen, and snapshots what exists at
//! [`start`](LeakCheck::start): only what appeared since counts.
//!
//! What it looks at, at the end:
//! - **children**: every child process of this one (from `/proc/*/stat`) but the
//!   forkserver. A child that multiproc made for this process (a [`Process`](crate::Process),
//!   a [`Popen`](crate::subprocess::Popen), a raw [`fork`](crate::sys::fork)) counts
//!   while it runs *and* while it is an unreaped zombie: the check never reaps those, it
//!   reports them. The only zombies it reaps are orphans adopted through the subreaper
//!   (grandchildren whose parent died): they correctly died with their parent, and
//!   nothing else would ever reap them.
//! - **descriptors** open now that were not at the start (but the forkserver's), with
//!   what they point to.
//! - **mappings** of multiproc's memfds (`/memfd:multiproc-…` in `/proc/self/maps`) and
//!   `/dev/shm` entries named `multiproc…` or `mp-…`, or made in this process by
//!   [`SharedMemory::create`](crate::shared::SharedMemory::create) and still there.
//! - **threads** of multiproc's (named `multiproc-…`, and executor workers with the
//!   default `ThreadPoolExecutor` prefix; names from `/proc/self/task/*/comm`) that did
//!   not exist at the start. The launcher thread is allowed: it is created on the first
//!   launch from a thread other than the main one and serves the process for its whole
//!   life, on purpose (see `process::runtime`). Executor threads with a prefix of the
//!   user's are not recognised.
//!
//! **The gate.** Something left behind is reported at once unless something that is
//! still finishing could yet clean it up: a reaper thread of a dropped handle (counted
//! by the library from before it is spawned until it closed what it holds), any other
//! new thread of multiproc's (a pool's collector on its way out), or a running adopted
//! orphan (a grandchild on its way to die with its parent). While one of those exists,
//! the check polls `/proc` with a short backoff, up to [`SETTLE`]; a clean scope costs
//! one scan, and a certain leak (an unreaped child nobody will wait for, a handle kept
//! alive, a descriptor) is reported at once.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::sys;

static SERIAL: Mutex<()> = Mutex::new(());

/// How long the check waits, at most, for what is still finishing (see the module
/// docs); a leak nothing can clean up any more is reported without waiting.
pub const SETTLE: Duration = Duration::from_secs(5);

/// What a [`LeakCheck`] found left behind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leaks {
    /// Child processes still present, with their state letter (`'Z'`: exited but
    /// unreaped).
    pub children: Vec<(u32, char)>,
    /// Descriptors open now that were not open at the start, with what they point to.
    pub fds: Vec<(i32, String)>,
    /// Mappings of multiproc's memfds present now that were not at the start, as their
    /// `/proc/self/maps` line.
    pub mappings: Vec<String>,
    /// `/dev/shm` entries present now that were not at the start.
    pub shm: Vec<String>,
    /// Threads of multiproc's running now that were not at the start: thread id, name.
    pub threads: Vec<(u32, String)>,
}

impl Leaks {
    /// Whether nothing was left behind.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.fds.is_empty()
            && self.mappings.is_empty()
            && self.shm.is_empty()
            && self.threads.is_empty()
    }
}

impl fmt::Display for Leaks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        for (pid, state) in &self.children {
            items.push(match state {
                'Z' => format!("unreaped child {pid} (zombie)"),
                s => format!("live child {pid} (state {s})"),
            });
        }
        items.extend(self.fds.iter().map(|(fd, to)| format!("fd {fd} -> {to}")));
        items.extend(self.mappings.iter().map(|m| format!("mapping {m}")));
        items.extend(self.shm.iter().map(|s| format!("/dev/shm/{s}")));
        items.extend(
            self.threads
                .iter()
                .map(|(tid, name)| format!("thread {tid} {name:?}")),
        );
        if items.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&items.join(", "))
        }
    }
}

/// Snapshot of children, descriptors, mappings, `/dev/shm` and threads taken at the
/// start of a test.
#[must_use = "the check runs when the guard is dropped or assert_clean is called"]
pub struct LeakCheck {
    children: BTreeSet<u32>,
    fds: BTreeSet<i32>,
    mappings: BTreeSet<String>,
    shm: BTreeSet<String>,
    threads: BTreeSet<u32>,
    done: bool,
    _serial: MutexGuard<'static, ()>,
}

/// One look at the process: what is left, and whether something that could still clean
/// it up is finishing.
struct Scan {
    leaks: Leaks,
    in_flight: bool,
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
        let mut check = LeakCheck {
            children: BTreeSet::new(),
            fds: BTreeSet::new(),
            mappings: BTreeSet::new(),
            shm: BTreeSet::new(),
            threads: BTreeSet::new(),
            done: false,
            _serial: serial,
        };
        // Let the reapers of handles dropped just before finish, so that their children
        // and descriptors are not in the baseline; what stays is not this scope's.
        let deadline = Instant::now() + SETTLE;
        let mut backoff = Backoff::new();
        while crate::process::runtime::transient_helpers() > 0 && Instant::now() < deadline {
            backoff.pause();
        }
        check.children = children().into_iter().map(|c| c.pid).collect();
        check.fds = open_fds();
        check.mappings = memfd_mappings();
        check.shm = shm_entries();
        check.threads = threads().into_iter().map(|(tid, _)| tid).collect();
        check
    }

    /// Waits for what is still finishing (at most [`SETTLE`]; see the module docs) and
    /// returns what was left behind since [`start`](Self::start). The guard then no
    /// longer checks when dropped.
    pub fn leaks(&mut self) -> Leaks {
        self.done = true;
        let deadline = Instant::now() + SETTLE;
        let mut backoff = Backoff::new();
        loop {
            let scan = self.scan();
            if scan.leaks.is_empty() || !scan.in_flight || Instant::now() >= deadline {
                return scan.leaks;
            }
            backoff.pause();
        }
    }

    /// Panics with a description if anything was left behind.
    pub fn assert_clean(mut self) {
        let leaks = self.leaks();
        assert!(leaks.is_empty(), "test left resources behind: {leaks}");
    }

    fn scan(&self) -> Scan {
        // Read before the rest: a reaper counted here has not yet closed its handle.
        let mut in_flight = crate::process::runtime::transient_helpers() > 0;
        let threads: Vec<(u32, String)> = threads()
            .into_iter()
            .filter(|(tid, name)| {
                !self.threads.contains(tid) && is_library_thread(name) && !is_persistent(name)
            })
            .collect();
        in_flight |= !threads.is_empty();
        let mut children_left = Vec::new();
        for c in children() {
            if self.children.contains(&c.pid) {
                continue;
            }
            // A running adopted orphan is on its way to die with its parent.
            in_flight |= !c.ours;
            children_left.push((c.pid, c.state));
        }
        Scan {
            leaks: Leaks {
                children: children_left,
                fds: open_fds()
                    .difference(&self.fds)
                    .copied()
                    .filter(|fd| !is_runtime_fd(*fd))
                    .map(|fd| (fd, fd_target(fd)))
                    .collect(),
                mappings: memfd_mappings()
                    .difference(&self.mappings)
                    .cloned()
                    .collect(),
                shm: shm_entries().difference(&self.shm).cloned().collect(),
                threads,
            },
            in_flight,
        }
    }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        if self.done || std::thread::panicking() {
            return;
        }
        let leaks = self.leaks();
        assert!(leaks.is_empty(), "test left resources behind: {leaks}");
    }
}

/// A growing pause between two looks at `/proc`: polling is the only way to see another
/// thread's reaping from outside; it starts short so that a quick end costs little.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(1))
    }

    fn pause(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(20));
    }
}

/// A child process of this one.
struct Child {
    pid: u32,
    state: char,
    /// Made by multiproc for this process (not an orphan adopted through the subreaper).
    ours: bool,
}

/// Children of this process other than the forkserver. Adopted orphans that already
/// exited are reaped here (nothing else would); our own children never are.
fn children() -> Vec<Child> {
    let me = sys::proc::getpid();
    let forkserver = crate::process::forkserver_pid();
    // Forget noted children that were reaped by other means than multiproc's.
    sys::proc::retain_noted_children(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    let ours: BTreeSet<u32> = crate::process::runtime::registered_children()
        .into_iter()
        .map(|(pid, ..)| pid)
        .chain(sys::proc::noted_children())
        .collect();
    let mut out = Vec::new();
    for (pid, ppid, state) in processes() {
        if ppid != me || Some(pid) == forkserver {
            continue;
        }
        let ours = ours.contains(&pid);
        if state == 'Z' && !ours && reap_adopted(pid) {
            continue;
        }
        out.push(Child { pid, state, ours });
    }
    out
}

/// Reaps the exited orphan `pid`; whether it was reaped.
fn reap_adopted(pid: u32) -> bool {
    sys::proc::pidfd_open(pid)
        .ok()
        .and_then(|fd| sys::proc::reap(std::os::fd::AsFd::as_fd(&fd), false).ok())
        .flatten()
        .is_some()
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

/// `(tid, name)` of every thread of this process, from `/proc/self/task/*/comm` (the
/// kernel keeps the first 15 bytes of a name).
fn threads() -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        Some((tid, comm.trim_end_matches('\n').to_string()))
    })
    .collect()
}

/// Whether a thread of this name is one multiproc started: `multiproc-…`, or an
/// executor's worker with the default prefix (`ThreadPoolExecutor-0_<i>`, cut to 15
/// bytes by the kernel).
fn is_library_thread(name: &str) -> bool {
    name.starts_with("multiproc-") || name.starts_with("ThreadPoolExec")
}

/// The launcher (`multiproc-launcher`, cut to 15 bytes), which serves the process for
/// its whole life once started.
fn is_persistent(name: &str) -> bool {
    "multiproc-launcher".starts_with(name) && name.len() >= "multiproc-launc".len()
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

/// Mappings of multiproc's memfds (`/memfd:multiproc-queue`, `/memfd:multiproc-shared`
/// …), as their `/proc/self/maps` lines (the address range tells two apart).
fn memfd_mappings() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| {
            maps.lines()
                .filter(|l| l.contains("/memfd:multiproc"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn shm_entries() -> BTreeSet<String> {
    // Besides the names of ours by prefix, any name `SharedMemory::create` made here.
    let made_here = crate::shared::created_names();
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    n.starts_with("multiproc") || n.starts_with("mp-") || made_here.contains(n)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fd_target(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_or_else(|e| e.to_string(), |p| p.display().to_string())
}
