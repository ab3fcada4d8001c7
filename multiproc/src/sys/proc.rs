//! Processes: fork, `clone(CLONE_PARENT)`, exec through `posix_spawn`, pidfds, waiting,
//! signals, parent-death signals, immediate exit.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::process::{Pid, PidfdFlags, Signal, WaitIdOptions, WaitIdStatus};

/// The two returns of [`fork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// In the parent: the child's pid.
    Parent(u32),
    /// In the child.
    Child,
}

/// `fork(2)`: duplicates the calling process. Returns twice: [`Fork::Parent`] with the
/// child's pid in the parent, [`Fork::Child`] in the child (S8).
///
/// This is the raw primitive; [`Process`](crate::Process) with
/// [`StartMethod::Fork`](crate::StartMethod::Fork) is the safe way to run code in a
/// forked child (it reports the result, reaps the child and ties its life to yours).
///
/// # Safety
///
/// Only the calling thread exists in the child. Any lock another thread held at the
/// moment of the fork (the stdout lock, a `Mutex` of yours, an allocator lock of a
/// non-glibc allocator) stays locked for ever in the child. In a process that has other
/// threads, the child must therefore restrict itself to async-signal-safe operations
/// until it calls `exec` or `_exit`. In a single-threaded process the child may do
/// anything. The caller must also make sure the child never returns into code that
/// would run the parent's cleanup twice (for example by ending it with
/// `std::process::exit` or [`exit_now`](crate::process::exit_now)).
///
/// # Examples
///
/// ```
/// # multiproc::init();
/// use multiproc::sys::{fork, Fork};
/// // SAFETY: doctests run single-threaded; the child only calls _exit.
/// match unsafe { fork() }.unwrap() {
///     Fork::Child => multiproc::process::exit_now(7),
///     Fork::Parent(pid) => {
///         let status = multiproc::process::wait_pid(pid).unwrap();
///         assert_eq!(status.code(), Some(7));
///     }
/// }
/// ```
pub unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: forwarded to the caller by this function's contract.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            super::hooks::run_after_fork();
            Ok(Fork::Child)
        }
        pid => {
            note_child(pid as u32);
            Ok(Fork::Parent(pid as u32))
        }
    }
}

/// Children this process made that no [`Process`](crate::Process) registry knows of
/// (raw [`fork`] children, `Popen` children), as `(creator pid, child pid)`: a leak
/// check must tell them, unreaped, from orphans adopted through the subreaper.
/// Entries leave when the child is reaped through multiproc (`wait_pid`, `Popen`);
/// the creator pid keeps a forked child from taking its parent's entries for its own.
///
/// A raw-`fork` child of a multi-threaded parent must not fork raw while this lock could
/// have been held at its fork (the usual `fork` hazard): it is held only to push or read.
static NOTED_CHILDREN: parking_lot::Mutex<Vec<(u32, u32)>> = parking_lot::Mutex::new(Vec::new());

/// Records `pid` as a child of this process (see [`NOTED_CHILDREN`]).
pub(crate) fn note_child(pid: u32) {
    NOTED_CHILDREN.lock().push((getpid(), pid));
}

/// Forgets `pid` once it is reaped.
pub(crate) fn forget_child(pid: u32) {
    let me = getpid();
    NOTED_CHILDREN
        .lock()
        .retain(|&(owner, p)| !(owner == me && p == pid));
}

/// The noted children of this process (see [`NOTED_CHILDREN`]).
pub(crate) fn noted_children() -> Vec<u32> {
    let me = getpid();
    NOTED_CHILDREN
        .lock()
        .iter()
        .filter(|&&(owner, _)| owner == me)
        .map(|&(_, p)| p)
        .collect()
}

/// Forgets the noted children of this process for which `keep` is false (reaped by
/// other means than multiproc's), and every entry of another process (copied by a fork).
pub(crate) fn retain_noted_children(mut keep: impl FnMut(u32) -> bool) {
    let me = getpid();
    NOTED_CHILDREN
        .lock()
        .retain(|&(owner, p)| owner == me && keep(p));
}

/// `fork` used internally by the launcher thread and the forkserver.
///
/// # Safety
///
/// As for [`fork`]: the child must only run code that does not depend on locks held by
/// other threads of the parent. multiproc calls it from its launcher thread (which holds
/// no lock while forking) and from the single-threaded forkserver.
pub(crate) unsafe fn fork_raw() -> io::Result<Fork> {
    // SAFETY: forwarded to the caller by this function's contract.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid as u32)),
    }
}

/// `clone(CLONE_PARENT | SIGCHLD)`: like `fork`, but the new process becomes a child of
/// the *caller's parent*. The forkserver uses it so that the processes it creates are
/// children of the user's process, which can then wait for them, read their exit status
/// and bind their life to its own.
///
/// # Safety
///
/// The calling process must be single-threaded (the forkserver is). glibc's `fork`
/// handlers do not run, which is fine only for a single-threaded caller whose child
/// does not depend on `pthread_atfork` state.
pub(crate) unsafe fn clone_parent() -> io::Result<Fork> {
    // A raw `clone` bypasses what glibc's `fork` does for the child: write the child's
    // thread id into glibc's per-thread record (which pthread mutexes use as their
    // owner id: without it every forkserver child would pass for the forkserver's own
    // thread) and register the child's robust-mutex list with the kernel (without it a
    // child dying with a lock held would never be reported as the owner's death).
    // Ask the kernel where both live, have it write the child's tid there
    // (CLONE_CHILD_SETTID), and register the list again in the child.
    let mut tid_addr: *mut libc::c_int = std::ptr::null_mut();
    // SAFETY: PR_GET_TID_ADDRESS stores one pointer through the valid pointer we pass.
    let have_tid_addr = unsafe {
        libc::prctl(
            libc::PR_GET_TID_ADDRESS,
            &mut tid_addr as *mut *mut libc::c_int,
            0,
            0,
            0,
        )
    } == 0
        && !tid_addr.is_null();
    let mut head: *mut libc::c_void = std::ptr::null_mut();
    let mut head_len: libc::size_t = 0;
    // SAFETY: get_robust_list(0, …) stores the calling thread's list head and length
    // through the two valid pointers we pass.
    let have_robust = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0 as libc::c_long,
            &mut head as *mut *mut libc::c_void,
            &mut head_len as *mut libc::size_t,
        )
    } == 0
        && !head.is_null();
    let mut flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    if have_tid_addr {
        flags |= (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as libc::c_ulong;
    }
    // SAFETY: with a null stack the raw `clone` syscall behaves like `fork` (the child
    // continues on a copy-on-write copy of this stack). The child-tid pointer is the
    // calling thread's own tid slot (from the kernel, valid in the copy); parent tid and
    // tls are unused without their flags. The caller guarantees the process is
    // single-threaded. (x86_64 argument order: flags, stack, parent_tid, child_tid, tls.)
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            if have_tid_addr {
                tid_addr
            } else {
                std::ptr::null_mut()
            },
            0 as libc::c_ulong,
        )
    };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            if have_robust {
                // SAFETY: the head is this thread's own list (copied into the child),
                // with the length the kernel reported for it.
                unsafe { libc::syscall(libc::SYS_set_robust_list, head, head_len) };
            }
            super::hooks::run_in_every_forked_child();
            Ok(Fork::Child)
        }
        pid => Ok(Fork::Parent(pid as u32)),
    }
}

static STUCK_EXIT_CODE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(1);

extern "C" fn exit_when_stuck(_: libc::c_int) {
    exit_now(STUCK_EXIT_CODE.load(std::sync::atomic::Ordering::Relaxed));
}

/// Ends the process with `code` if it is still running `seconds` from now (an alarm
/// whose handler calls `_exit`); `seconds == 0` cancels. For a step that may block on
/// a lock a vanished thread held (a forked child flushing stdio).
pub(crate) fn exit_if_stuck(seconds: u32, code: i32) {
    STUCK_EXIT_CODE.store(code, std::sync::atomic::Ordering::Relaxed);
    if seconds > 0 {
        // SAFETY: installs a handler that only reads an atomic and calls `_exit`, both
        // async-signal-safe.
        unsafe {
            libc::signal(
                libc::SIGALRM,
                exit_when_stuck as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    // SAFETY: `alarm` has no preconditions.
    unsafe { libc::alarm(seconds) };
}

/// Ignores `SIGINT` in this process (pool workers: Ctrl-C reaches the whole foreground
/// process group, and it is the parent's to handle; a worker dies with its parent).
pub(crate) fn ignore_interrupts() {
    // SAFETY: sets the disposition of SIGINT to SIG_IGN; no handler runs.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
}

/// Ignores `SIGPIPE` in this process, as std's runtime does before `main` (a write to a
/// closed pipe or socket then fails with `EPIPE` instead of killing the process); for a
/// process that takes its multiproc role before `main`.
pub(crate) fn ignore_broken_pipes() {
    // SAFETY: sets the disposition of SIGPIPE to SIG_IGN; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Ends the process at once with `code`: no destructors, no `atexit` handlers, no stdio
/// flush (flush first if you printed). This is how every multiproc child ends, so that
/// a forked child never runs its parent's exit handlers.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Exit code of a child whose parent died before it could start.
pub const EXIT_ORPHANED: i32 = 71;

/// Asks the kernel to send `SIGKILL` to this process when the thread that created it
/// exits, then checks that this parent is still `expected_parent`: if the parent died
/// before the request took effect, the process exits at once with [`EXIT_ORPHANED`].
pub(crate) fn die_with_parent(expected_parent: u32) {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    if parent != expected_parent {
        exit_now(EXIT_ORPHANED);
    }
}

/// Clears this process's parent-death signal (set by [`die_with_parent`]): from now on
/// it outlives its parent, as a process does by default. A process that ends up without
/// its parent is re-parented to the nearest subreaper (or init), which reaps it.
pub(crate) fn outlive_parent() {
    let _ = rustix::process::set_parent_process_death_signal(None);
}

/// This process's pid.
pub(crate) fn getpid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

static PID_CACHE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn forget_cached_pid() {
    PID_CACHE.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// This process's pid without a system call on the hot path: cached, and forgotten in
/// the child of every `fork` (a [`hooks::in_every_forked_child`](super::hooks) hook,
/// which only stores to an atomic). Used where a pid is checked on every operation (a
/// queue's `put` asks "am I still the process that claimed my lane?").
pub(crate) fn cached_pid() -> u32 {
    use std::sync::atomic::Ordering;
    let pid = PID_CACHE.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    super::hooks::in_every_forked_child(forget_cached_pid);
    let pid = getpid();
    PID_CACHE.store(pid, Ordering::Relaxed);
    pid
}

/// The parent's pid (0 if there is none, as for pid 1).
pub(crate) fn getppid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}

/// The kernel thread id of the calling thread.
pub(crate) fn gettid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

fn pid(raw: u32) -> io::Result<Pid> {
    Pid::from_raw(raw as i32).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A pidfd for `pid`, close-on-exec. For a child of this process that is not yet reaped
/// the pid cannot be reused, so the pidfd is sure to refer to that child.
pub(crate) fn pidfd_open(raw: u32) -> io::Result<OwnedFd> {
    Ok(rustix::process::pidfd_open(pid(raw)?, PidfdFlags::empty())?)
}

/// Sends `signal` through a pidfd (no pid-reuse race).
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    let sig = Signal::from_named_raw(signal)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::pidfd_send_signal(pidfd, sig)?)
}

/// Sends `signal` to every process of the process group `pgid` (`killpg`). Returns
/// `false` if no process is in that group any more.
///
/// Contract: a group id is a pid, and the kernel does not hand out a pid again while any
/// process still uses it as its pid or group id. So the group of an unreaped child that
/// leads it cannot be confused with another; once that child is reaped and every member
/// has exited, the id may in principle be reused.
pub(crate) fn kill_group(pgid: u32, signal: i32) -> io::Result<bool> {
    let sig = Signal::from_named_raw(signal)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    match rustix::process::kill_process_group(pid(pgid)?, sig) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// How a process ended: `(exit code, terminating signal)`, exactly one of them `Some`.
pub(crate) type RawStatus = (Option<i32>, Option<i32>);

fn to_raw(status: WaitIdStatus) -> RawStatus {
    if let Some(sig) = status.terminating_signal() {
        (None, Some(sig))
    } else {
        (Some(status.exit_status().unwrap_or(0)), None)
    }
}

/// Reaps the child behind `pidfd` if it has exited (`block`: wait until it has).
/// Returns `None` if it is still running (only when `block` is false).
pub(crate) fn reap(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<RawStatus>> {
    let mut opts = WaitIdOptions::EXITED;
    if !block {
        opts |= WaitIdOptions::NOHANG;
    }
    loop {
        match rustix::process::waitid(rustix::process::WaitId::PidFd(pidfd), opts) {
            Ok(status) => return Ok(status.map(to_raw)),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits for (and reaps) the child `pid`.
pub(crate) fn reap_pid(raw: u32) -> io::Result<RawStatus> {
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::Pid(pid(raw)?),
            WaitIdOptions::EXITED,
        ) {
            Ok(Some(status)) => {
                forget_child(raw);
                return Ok(to_raw(status));
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Identity of this process's executable file (`st_dev`, `st_ino`) as the kernel sees
/// `/proc/self/exe`. A re-executed child compares it with its parent's before it trusts
/// any function address its parent sent (see [`super::entry`]).
pub(crate) fn exe_identity() -> io::Result<(u64, u64)> {
    let st = rustix::fs::stat("/proc/self/exe")?;
    Ok((st.st_dev, st.st_ino))
}

/// When process `pid` started, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` if there is no such process or it has already exited
/// (a zombie counts as gone). With the pid it names one process for the life of the
/// system: a recycled pid has a later start time.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces or
    // parentheses: the fields after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `state` was field 3; the start time is field 22.
    fields.nth(18)?.parse().ok()
}

/// A 64-bit name for process `pid` that a recycled pid does not repeat: the pid and
/// the low bits of its start time. Stored in shared memory to say "held by".
pub(crate) fn identity(pid: u32) -> u64 {
    let started = start_time(pid).unwrap_or(0);
    (u64::from(pid) << 32) | (started & 0xffff_ffff)
}

/// This process's [`identity`], computed once per process (a forked child has its own).
pub(crate) fn my_identity() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static MINE: AtomicU64 = AtomicU64::new(0);
    let pid = cached_pid();
    let id = MINE.load(Ordering::Relaxed);
    if id >> 32 == u64::from(pid) {
        return id;
    }
    let id = identity(pid);
    MINE.store(id, Ordering::Relaxed);
    id
}

/// `true` while the process an [`identity`] names is alive (not a zombie).
pub(crate) fn identity_alive(id: u64) -> bool {
    let pid = (id >> 32) as u32;
    start_time(pid).is_some_and(|t| t & 0xffff_ffff == id & 0xffff_ffff)
}

/// Threads in this process, from `/proc/self/status`.
pub(crate) fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// Starts `exe` with `argv` and `envp` through `posix_spawn` (vfork-like, cheap even for
/// a large parent), giving it `fds[i].0` at descriptor number `fds[i].1`. All other
/// descriptors of this process are close-on-exec and so are not inherited.
/// Returns the child's pid.
pub(crate) fn spawn_exe(
    exe: &CStr,
    argv: &[CString],
    envp: &[CString],
    fds: &[(BorrowedFd<'_>, RawFd)],
) -> io::Result<u32> {
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|a| a.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());

    // Targets must not collide with sources, or dup2 would not clear FD_CLOEXEC: move
    // any source that sits on a target number (or below the highest target) out of the way.
    let top = fds.iter().map(|f| f.1).max().unwrap_or(0);
    let mut moved = Vec::new();
    let mut sources = Vec::new();
    for (fd, _) in fds {
        if fd.as_raw_fd() <= top {
            let high = super::fd::dup_at_least(fd.as_fd(), top + 1)?;
            sources.push(high.as_raw_fd());
            moved.push(high);
        } else {
            sources.push(fd.as_raw_fd());
        }
    }

    let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    // SAFETY: `actions` is valid writable storage for a file-actions object.
    check(unsafe { libc::posix_spawn_file_actions_init(actions.as_mut_ptr()) })?;
    let mut attr = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    // SAFETY: `attr` is valid writable storage for an attributes object.
    if let Err(e) = check(unsafe { libc::posix_spawnattr_init(attr.as_mut_ptr()) }) {
        // SAFETY: `actions` was initialised above.
        unsafe { libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr()) };
        return Err(e);
    }
    let result = (|| {
        for (src, (_, target)) in sources.iter().zip(fds) {
            // SAFETY: `actions` is initialised; both numbers are plain integers checked
            // by the child at spawn time.
            check(unsafe {
                libc::posix_spawn_file_actions_adddup2(actions.as_mut_ptr(), *src, *target)
            })?;
        }
        // Reset the signal mask and the dispositions of the usual signals in the child,
        // so that a launcher thread's mask never leaks into user code.
        let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `empty` is valid storage for a sigset.
        unsafe { libc::sigemptyset(empty.as_mut_ptr()) };
        let mut defaults = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: valid storage; the signal numbers are valid.
        unsafe {
            libc::sigemptyset(defaults.as_mut_ptr());
            for sig in [
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGCHLD,
                libc::SIGHUP,
                libc::SIGQUIT,
            ] {
                libc::sigaddset(defaults.as_mut_ptr(), sig);
            }
        }
        // SAFETY: `attr` is initialised, the sets were initialised above.
        unsafe {
            check(libc::posix_spawnattr_setsigmask(
                attr.as_mut_ptr(),
                empty.as_ptr(),
            ))?;
            check(libc::posix_spawnattr_setsigdefault(
                attr.as_mut_ptr(),
                defaults.as_ptr(),
            ))?;
            check(libc::posix_spawnattr_setflags(
                attr.as_mut_ptr(),
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
        }
        let mut child: libc::pid_t = 0;
        // SAFETY: `exe`, `argv_ptrs` and `envp_ptrs` are NUL-terminated strings in
        // null-terminated arrays that outlive the call; `actions` and `attr` are
        // initialised.
        check(unsafe {
            libc::posix_spawn(
                &mut child,
                exe.as_ptr(),
                actions.as_ptr(),
                attr.as_ptr(),
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            )
        })?;
        Ok(child as u32)
    })();
    // SAFETY: both objects were initialised above and are destroyed once.
    unsafe {
        libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
        libc::posix_spawnattr_destroy(attr.as_mut_ptr());
    }
    drop(moved);
    result
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// The function [`at_exit`] registered.
static AT_EXIT: std::sync::OnceLock<fn(Option<i32>)> = std::sync::OnceLock::new();

/// Registers `f` to run when the process exits normally (`exit`, return from `main`),
/// with the status given to `exit` where the C library tells it (glibc's `on_exit`;
/// `None` elsewhere). One function per process: a second call is ignored.
pub(crate) fn at_exit(f: fn(Option<i32>)) {
    if AT_EXIT.set(f).is_err() {
        return;
    }
    #[cfg(target_env = "gnu")]
    {
        unsafe extern "C" {
            fn on_exit(
                f: extern "C" fn(libc::c_int, *mut libc::c_void),
                arg: *mut libc::c_void,
            ) -> libc::c_int;
        }
        extern "C" fn with_status(status: libc::c_int, _: *mut libc::c_void) {
            if let Some(f) = AT_EXIT.get() {
                f(Some(status));
            }
        }
        // SAFETY: glibc's `on_exit` stores the plain function pointer and the argument
        // (null, never read) and calls the function from `exit`.
        unsafe { on_exit(with_status, std::ptr::null_mut()) };
    }
    #[cfg(not(target_env = "gnu"))]
    {
        extern "C" fn without_status() {
            if let Some(f) = AT_EXIT.get() {
                f(None);
            }
        }
        // SAFETY: `without_status` is a plain `extern "C" fn()` with no captured state;
        // `atexit` only stores the pointer.
        unsafe { libc::atexit(without_status) };
    }
}

/// Forks the calling process and runs `child` in the new process; returns the child's
/// pid in the parent. `child` never returns (it ends the process).
///
/// This is safe to call in the sense of memory safety for the *parent*, which continues
/// untouched. In the child only the calling thread exists: locks that other threads held
/// at the moment of the fork stay locked there, so a child that touches them deadlocks
/// (it does not corrupt the parent). multiproc calls this only from its launcher thread,
/// which holds none of multiproc's locks while it forks, for the `fork` start method,
/// whose hazards are documented on [`StartMethod::Fork`](crate::StartMethod::Fork) and
/// warned about at run time when the parent has other threads, as CPython does.
pub(crate) fn fork_and_run(child: Box<dyn FnOnce() -> i32 + Send>) -> io::Result<u32> {
    // SAFETY: the parent side only records the pid. In the child, `child` runs on the
    // single remaining thread and ends with `_exit`, never returning into the caller's
    // frames (so no destructor or stack-owned state of the parent runs twice); see the
    // function documentation for the lock hazard, which cannot cause memory unsafety in
    // the parent and is documented for the child.
    match unsafe { fork_raw() }? {
        Fork::Child => {
            super::hooks::run_after_fork();
            let code = child();
            exit_now(code)
        }
        Fork::Parent(pid) => Ok(pid),
    }
}

/// Proof that the process was single-threaded when checked; not `Send`, so it stays
/// on the thread that checked. The forkserver takes it once at start and never starts a
/// thread.
pub(crate) struct SingleThreaded(std::marker::PhantomData<*const ()>);

impl SingleThreaded {
    /// `Some` if this process has exactly one thread.
    pub(crate) fn check() -> Option<SingleThreaded> {
        (thread_count() == 1).then_some(SingleThreaded(std::marker::PhantomData))
    }
}

/// Forks with `CLONE_PARENT` (see [`clone_parent`]) and runs `child` in the new process,
/// which becomes a sibling of the caller (a child of the caller's parent). Returns its
/// pid in the caller. The child ends with `_exit` and the code `child` returns.
pub(crate) fn fork_sibling(
    _single: &SingleThreaded,
    child: impl FnOnce() -> i32,
) -> io::Result<u32> {
    // SAFETY: the caller is single-threaded (`SingleThreaded` proof, a process that
    // starts no thread after the check), as `clone_parent` requires; the child runs
    // `child`, which never returns into the caller's frames.
    match unsafe { clone_parent() }? {
        Fork::Child => exit_now(child()),
        Fork::Parent(pid) => Ok(pid),
    }
}

/// Removes `key` from this process's environment.
///
/// Contract: called only from `init` in a process that multiproc started in a role
/// (`spawn` child or forkserver), where `init` is the first thing `main` (or a
/// pre-`main` constructor) does, before any thread exists that could read the
/// environment concurrently.
pub(crate) fn remove_role_var(key: &str) {
    // SAFETY: see the contract above: no other thread exists yet, so no concurrent
    // `getenv` can observe the environment while it is modified.
    unsafe { std::env::remove_var(key) }
}

/// Set in a child of the fork start method: a copy of a parent that may have had other
/// threads, one of which may have held std's backtrace lock at the fork (a panic being
/// printed, a backtrace being captured). That lock is never released in the child, so
/// a child must not take it: no `std::backtrace` capture there.
static FORK_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks this process as a child of the fork start method (see [`FORK_CHILD`]).
pub(crate) fn mark_fork_child() {
    FORK_CHILD.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether std's backtrace lock may be taken in this process: not in a child of the
/// fork start method, where another thread of the parent may have held it at the fork.
pub(crate) fn backtrace_lock_usable() -> bool {
    !FORK_CHILD.load(std::sync::atomic::Ordering::Relaxed)
}

/// The note a traceback carries in place of a backtrace that could not be taken.
pub(crate) const NO_BACKTRACE_IN_FORK_CHILD: &str = "note: no backtrace in a child of the fork start method: another thread of the parent may have held std's backtrace lock at the fork (use spawn or forkserver for backtraces)\n";
