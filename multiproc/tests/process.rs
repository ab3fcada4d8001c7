//! Process tests: S1 S2 S8 S9 S17 S19 S23 S26 S27 S28 S34, under every start method
//! where the scenario applies, each wrapped in a leak check (no child, fd or /dev/shm
//! entry may be left behind).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use multiproc::sync::{Barrier, Event};
use multiproc::testing::LeakCheck;
use multiproc::{Process, ProcessError, Run, StartError, StartMethod};
use serde::{Deserialize, Serialize};

mod common;
use common::wait_gone;

multiproc::test_support!();

const ALL: [StartMethod; 3] = StartMethod::ALL;
/// Generous bound for anything that should happen "promptly" on a loaded 2-core box.
const PROMPT: Duration = Duration::from_secs(30);

fn builder(method: StartMethod) -> multiproc::ProcessBuilder {
    multiproc::process::set_fork_warning(false);
    Process::builder().start_method(method)
}

fn pids(_: ()) -> (u32, u32) {
    (std::process::id(), multiproc::parent_pid())
}

#[test]
fn s01_child_has_its_own_pid_and_knows_its_parent() {
    let check = LeakCheck::start();
    for method in ALL {
        let mut p = builder(method).start(pids, ()).unwrap();
        let child_pid = p.pid();
        let (pid, ppid) = p.join().unwrap();
        assert_eq!(pid, child_pid, "{method}");
        assert_ne!(pid, std::process::id(), "{method}");
        assert_eq!(
            ppid,
            std::process::id(),
            "{method}: the child's parent is this process"
        );
        assert!(p.exit_status().unwrap().success());
    }
    check.assert_clean();
}

fn sleep_and_report(ms: u64) -> (f64, f64) {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let start = now();
    std::thread::sleep(Duration::from_millis(ms));
    (start, now())
}

/// Meets the other sleepers at `barrier` (all must be running at once), then sleeps.
fn meet_then_sleep((barrier, ms): (Barrier, u64)) -> u32 {
    let arrival = barrier
        .wait_timeout(PROMPT)
        .expect("all the sleepers run at the same time");
    std::thread::sleep(Duration::from_millis(ms));
    arrival
}

#[test]
fn s02_parallel_sleeps_overlap_instead_of_queueing() {
    let check = LeakCheck::start();
    for method in ALL {
        // None passes the barrier before all five wait at it, so all five sleeps begin
        // after the last arrival: they overlap. Children run one after another would
        // leave the first alone at the barrier until it broke.
        let barrier = Barrier::new(5).unwrap();
        let mut children: Vec<_> = (0..5)
            .map(|_| {
                builder(method)
                    .start(meet_then_sleep, (barrier.clone(), 100))
                    .unwrap()
            })
            .collect();
        let mut arrivals: Vec<u32> = children.iter_mut().map(|p| p.join().unwrap()).collect();
        arrivals.sort();
        assert_eq!(arrivals, [0, 1, 2, 3, 4], "{method}");
    }
    check.assert_clean();
}

#[test]
fn s08_raw_fork_returns_twice() {
    let check = LeakCheck::start();
    // Read before the fork: the child must not panic or allocate (other test threads
    // may hold locks it would inherit held), and must not depend on another test.
    let me = std::process::id();
    // SAFETY: the child only calls async-signal-safe functions (getppid, _exit).
    #[allow(unsafe_code)]
    let forked = unsafe { multiproc::sys::fork() }.unwrap();
    match forked {
        multiproc::sys::Fork::Child => {
            // Whatever happens here ends this process with a code the parent checks: a
            // panic must not unwind into the test harness's frames (this thread's copy
            // would end, and the process with it, with status 0).
            let code =
                std::panic::catch_unwind(|| if multiproc::parent_pid() == me { 0 } else { 1 })
                    .unwrap_or(101);
            multiproc::process::exit_now(code)
        }
        multiproc::sys::Fork::Parent(pid) => {
            assert_ne!(pid, std::process::id());
            let status = multiproc::process::wait_pid(pid).unwrap();
            assert_eq!(
                status.code(),
                Some(0),
                "the child saw this process as its parent"
            );
        }
    }
    check.assert_clean();
}

fn who_am_i(_: ()) -> multiproc::ProcessInfo {
    multiproc::current_process()
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Info {
    name: String,
    pid: u32,
    parent_pid: u32,
    daemon: bool,
    identity: Vec<u32>,
}

fn who_am_i_ser(_: ()) -> Info {
    let me = who_am_i(());
    Info {
        name: me.name,
        pid: me.pid,
        parent_pid: me.parent_pid,
        daemon: me.daemon,
        identity: me.identity,
    }
}

#[test]
fn s09_current_process_in_parent_and_child() {
    let check = LeakCheck::start();
    let me = multiproc::current_process();
    assert_eq!(me.name, "MainProcess");
    assert_eq!(me.pid, std::process::id());
    assert!(me.identity.is_empty());
    for method in ALL {
        let mut p = builder(method)
            .name(format!("child-{method}"))
            .daemon(true)
            .start(who_am_i_ser, ())
            .unwrap();
        let info = p.join().unwrap();
        assert_eq!(info.name, format!("child-{method}"));
        assert_eq!(info.pid, p.pid());
        assert_eq!(info.parent_pid, std::process::id());
        assert!(info.daemon);
        assert_eq!(info.identity.len(), 1);
    }
    check.assert_clean();
}

fn panics(msg: String) -> u32 {
    panic!("{msg}")
}

fn aborts(_: ()) {
    std::process::abort()
}

fn segfaults(_: ()) {
    let null = std::hint::black_box(std::ptr::null_mut::<u8>());
    // SAFETY: not safe at all: this child exists to die of a genuine SIGSEGV.
    #[allow(unsafe_code)]
    unsafe {
        null.write_volatile(1)
    };
}

#[test]
fn s17_crashing_children_leave_the_parent_running() {
    let check = LeakCheck::start();
    for method in ALL {
        let mut p = builder(method)
            .start(panics, "boom in the child".to_string())
            .unwrap();
        match p.join() {
            Err(ProcessError::Panicked { message, pid }) => {
                assert_eq!(message, "boom in the child");
                assert_eq!(pid, p.pid());
            }
            other => panic!("{method}: expected a panic, got {other:?}"),
        }
        assert_eq!(
            p.exit_status().unwrap().code(),
            Some(multiproc::process::EXIT_PANIC)
        );

        let mut p = builder(method).start(aborts, ()).unwrap();
        match p.join() {
            Err(ProcessError::Signaled { status, .. }) => {
                assert_eq!(status.signal(), Some(libc::SIGABRT))
            }
            other => panic!("{method}: expected SIGABRT, got {other:?}"),
        }

        let mut p = builder(method).start(segfaults, ()).unwrap();
        match p.join() {
            Err(ProcessError::Signaled { status, .. }) => {
                assert_eq!(status.signal(), Some(libc::SIGSEGV));
                assert_eq!(status.signal_name(), Some("SIGSEGV"));
                assert_eq!(status.exitcode(), -libc::SIGSEGV);
            }
            other => panic!("{method}: expected SIGSEGV, got {other:?}"),
        }
    }
    check.assert_clean();
}

static COUNTER: AtomicU32 = AtomicU32::new(2);

fn bump(_: ()) -> u32 {
    COUNTER.fetch_add(1, Ordering::SeqCst) + 1
}

#[test]
fn s19_children_have_separate_address_spaces() {
    let check = LeakCheck::start();
    let before = COUNTER.load(Ordering::SeqCst);
    for method in ALL {
        let mut a = builder(method).start(bump, ()).unwrap();
        let mut b = builder(method).start(bump, ()).unwrap();
        // Each child bumps its own copy of the global (2 under fork, the initial 2 otherwise).
        assert_eq!(a.join().unwrap(), before + 1, "{method}");
        assert_eq!(b.join().unwrap(), before + 1, "{method}");
    }
    assert_eq!(
        COUNTER.load(Ordering::SeqCst),
        before,
        "the parent's copy is unchanged"
    );
    check.assert_clean();
}

#[derive(Serialize, Deserialize)]
struct Greeter {
    greeting: String,
    times: usize,
}

impl Run for Greeter {
    type Output = Vec<String>;
    fn run(self) -> Vec<String> {
        vec![
            format!(
                "{} from {}",
                self.greeting,
                multiproc::current_process().name
            );
            self.times
        ]
    }
}

fn double(x: i64) -> i64 {
    x * 2
}

#[test]
fn s23_function_target_and_run_type() {
    let check = LeakCheck::start();
    for method in ALL {
        let mut f = builder(method).start(double, 21).unwrap();
        assert_eq!(f.join().unwrap(), 42);
        let mut r = builder(method)
            .name("greeter")
            .start_run(Greeter {
                greeting: "hi".into(),
                times: 2,
            })
            .unwrap();
        assert_eq!(
            r.join().unwrap(),
            vec!["hi from greeter".to_string(), "hi from greeter".to_string()]
        );
    }
    check.assert_clean();
}

fn sleep_forever(_: ()) {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[test]
fn s26_terminate_stops_a_running_child() {
    let check = LeakCheck::start();
    for method in ALL {
        let mut p = builder(method).start(sleep_forever, ()).unwrap();
        assert!(p.is_alive());
        assert_eq!(p.exit_status(), None);
        p.terminate().unwrap();
        let status = p.wait().unwrap();
        assert!(!p.is_alive());
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{method}");
        assert_eq!(status.exitcode(), -15);
        assert!(matches!(p.join(), Err(ProcessError::Signaled { .. })));
        // Terminating a dead child is harmless.
        p.terminate().unwrap();
        let mut k = builder(method).start(sleep_forever, ()).unwrap();
        k.kill().unwrap();
        assert_eq!(k.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
    check.assert_clean();
}

/// Runs until `gate` is set (at most [`PROMPT`]); says whether it was.
fn wait_for_gate(gate: Event) -> bool {
    gate.wait_timeout(PROMPT)
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn is_gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn s27_exit_codes_are_readable_and_no_zombie_remains() {
    let check = LeakCheck::start();
    for method in ALL {
        for code in [0, 1, 3, 255] {
            let mut p = builder(method).start(exit_with, code).unwrap();
            let status = p.wait().unwrap();
            assert_eq!(status.code(), Some(code), "{method}");
            assert_eq!(status.success(), code == 0);
            match p.join() {
                Ok(()) => assert_eq!(code, 0),
                Err(ProcessError::Exited { status, .. }) => assert_eq!(status.code(), Some(code)),
                other => panic!("{other:?}"),
            }
            assert!(
                is_gone(p.pid()),
                "{method}: child {} left as a zombie",
                p.pid()
            );
        }
        // A dropped handle of a running child does not block, and the child is reaped
        // once it ends (the leak check below waits for that). The child cannot end
        // before its gate opens, after the drop: a drop that waited for it would find
        // it gone (after the gate's limit) instead of running.
        let gate = Event::new().unwrap();
        let p = builder(method).start(wait_for_gate, gate.clone()).unwrap();
        let pid = p.pid();
        drop(p);
        assert!(!is_gone(pid), "{method}: the drop waited for the child");
        gate.set();
    }
    check.assert_clean();
}

/// Under fork: start `grandchild_method` daemon grandchild, report its pid on `report`,
/// then wait to be killed.
fn middle_reports_grandchild(
    mut report: UnixStream,
    grandchild_method: StartMethod,
    daemon: bool,
) -> ! {
    let g = Process::builder()
        .start_method(grandchild_method)
        .daemon(daemon)
        .start(sleep_forever, ())
        .unwrap();
    report.write_all(&g.pid().to_le_bytes()).unwrap();
    std::mem::forget(g);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[test]
fn s28_children_die_when_their_parent_is_sigkilled() {
    let check = LeakCheck::start();
    for grandchild_method in ALL {
        for daemon in [true, false] {
            let (mut mine, theirs) = UnixStream::pair().unwrap();
            let mut middle = builder(StartMethod::Fork)
                .start_closure(move || -> () {
                    middle_reports_grandchild(theirs, grandchild_method, daemon)
                })
                .unwrap();
            let mut buf = [0u8; 4];
            mine.set_read_timeout(Some(PROMPT)).unwrap();
            mine.read_exact(&mut buf).unwrap();
            let grandchild = u32::from_le_bytes(buf);
            assert!(
                !wait_gone(grandchild, Duration::ZERO),
                "the grandchild runs"
            );
            middle.kill().unwrap();
            assert_eq!(middle.wait().unwrap().signal(), Some(libc::SIGKILL));
            assert!(
                wait_gone(grandchild, PROMPT),
                "{grandchild_method} grandchild (daemon={daemon}) outlived its SIGKILLed parent"
            );
        }
    }
    check.assert_clean();
}

fn start_grandchild_and_return(args: (bool, u64)) -> u32 {
    let (daemon, ms) = args;
    let g = Process::builder()
        .daemon(daemon)
        .start(sleep_and_report, ms)
        .unwrap();
    let pid = g.pid();
    std::mem::forget(g); // neither joined nor dropped: the exit of this child decides
    pid
}

#[test]
fn s28_normal_exit_terminates_daemons_and_waits_for_others() {
    let check = LeakCheck::start();
    for method in ALL {
        // A daemon grandchild sleeping an hour is terminated when its parent returns.
        let mut middle = builder(method)
            .start(start_grandchild_and_return, (true, 3_600_000))
            .unwrap();
        let grandchild = middle.join().unwrap();
        assert!(
            wait_gone(grandchild, PROMPT),
            "{method}: daemon grandchild survived"
        );
        // A non-daemon grandchild is waited for: when the middle process is joined, the
        // grandchild has already finished.
        let mut middle = builder(method)
            .start(start_grandchild_and_return, (false, 300))
            .unwrap();
        let grandchild = middle.join().unwrap();
        assert!(
            wait_gone(grandchild, Duration::ZERO),
            "{method}: parent exited before its non-daemon child"
        );
    }
    check.assert_clean();
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Kwargs {
    label: String,
    weights: Vec<f64>,
    flag: Option<bool>,
}

fn describe(args: (u8, String, Kwargs)) -> String {
    format!(
        "{}:{}:{:?}:{}",
        args.0,
        args.1,
        args.2,
        multiproc::current_process().name
    )
}

#[test]
fn s34_default_names_and_arguments_of_any_type() {
    let check = LeakCheck::start();
    let mut a = Process::start(who_am_i_ser, ()).unwrap();
    let mut b = Process::start(who_am_i_ser, ()).unwrap();
    let (na, nb) = (a.name().to_string(), b.name().to_string());
    let n: u32 = na.strip_prefix("Process-").unwrap().parse().unwrap();
    assert_eq!(nb, format!("Process-{}", n + 1), "default names count up");
    assert_eq!(a.join().unwrap().name, na);
    assert_eq!(b.join().unwrap().identity, vec![n + 1]);
    for method in ALL {
        let kw = Kwargs {
            label: "w".into(),
            weights: vec![0.5, 1.5],
            flag: None,
        };
        let mut p = builder(method)
            .name("named")
            .start(describe, (7, "text".to_string(), kw.clone()))
            .unwrap();
        assert_eq!(p.join().unwrap(), format!("7:text:{kw:?}:named"));
    }
    check.assert_clean();
}

fn echo_len(data: Vec<u8>) -> Vec<u8> {
    data.into_iter().rev().collect()
}

#[test]
fn large_arguments_and_results_cross_every_method() {
    let check = LeakCheck::start();
    let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    for method in ALL {
        let mut p = builder(method).start(echo_len, data.clone()).unwrap();
        let back = p.join().unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back.iter().rev().eq(data.iter()), "{method}");
    }
    check.assert_clean();
}

#[test]
fn join_timeout_then_join() {
    let check = LeakCheck::start();
    for method in ALL {
        // The child runs until the gate opens, after both timeouts.
        let gate = Event::new().unwrap();
        let mut p = builder(method).start(wait_for_gate, gate.clone()).unwrap();
        assert!(matches!(
            p.join_timeout(Duration::ZERO),
            Err(ProcessError::Timeout)
        ));
        assert!(p.wait_timeout(Duration::from_millis(1)).unwrap().is_none());
        gate.set();
        assert!(p.join_timeout(PROMPT).unwrap(), "{method}: the gate opened");
        assert!(matches!(p.join(), Err(ProcessError::AlreadyJoined(_))));
    }
    check.assert_clean();
}

#[test]
fn closures_need_fork() {
    let check = LeakCheck::start();
    let captured = String::from("captured by the closure");
    let mut p = builder(StartMethod::Fork)
        .start_closure(move || captured.len())
        .unwrap();
    assert_eq!(p.join().unwrap(), 23);
    let err = builder(StartMethod::Spawn).start_closure(|| 1).unwrap_err();
    assert!(matches!(err, StartError::Unsupported(_)));
    check.assert_clean();
}

#[test]
fn forkserver_is_restarted_after_being_killed() {
    let check = LeakCheck::start();
    let first = multiproc::process::ensure_forkserver().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(first as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let mut p = builder(StartMethod::ForkServer).start(double, 4).unwrap();
    assert_eq!(p.join().unwrap(), 8);
    let second = multiproc::process::forkserver_pid().unwrap();
    assert_ne!(first, second);
    // The old server is reaped, not a zombie.
    assert!(is_gone(first));
    check.assert_clean();
}

#[test]
fn many_threads_start_processes_at_once() {
    let check = LeakCheck::start();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for method in [StartMethod::ForkServer, StartMethod::Spawn] {
                    for i in 0..3 {
                        let mut p = builder(method).start(double, t * 10 + i).unwrap();
                        assert_eq!(p.join().unwrap(), (t * 10 + i) * 2);
                    }
                }
            });
        }
    });
    check.assert_clean();
}

#[test]
fn active_children_lists_running_children() {
    let check = LeakCheck::start();
    let mut p = builder(StartMethod::ForkServer)
        .name("listed")
        .start(sleep_forever, ())
        .unwrap();
    let listed = multiproc::active_children();
    assert!(
        listed
            .iter()
            .any(|c| c.pid == p.pid() && c.name == "listed")
    );
    assert!(
        multiproc::process::forkserver_pid().is_none_or(|fs| listed.iter().all(|c| c.pid != fs))
    );
    p.kill().unwrap();
    p.wait().unwrap();
    assert!(
        multiproc::active_children()
            .iter()
            .all(|c| c.pid != p.pid())
    );
    check.assert_clean();
}

/// Serialises fine, never deserialises.
#[derive(Debug, Serialize)]
struct OneWay(u32);

impl<'de> Deserialize<'de> for OneWay {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("OneWay cannot be received"))
    }
}

/// Never serialises.
#[derive(Debug, Deserialize)]
struct Unsendable;

impl Serialize for Unsendable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Unsendable cannot be sent"))
    }
}

fn takes_one_way(x: OneWay) -> u32 {
    x.0
}

fn returns_unsendable(_: ()) -> Unsendable {
    Unsendable
}

fn takes_unsendable(_: Unsendable) -> u32 {
    0
}

/// FAILURE_MODES 9: every (de)serialisation failure is an error of that process alone,
/// synchronous where possible, never a hang.
#[test]
fn serialization_failures_are_typed_errors() {
    let check = LeakCheck::start();
    for method in ALL {
        // Arguments that cannot be decoded in the child (under fork they are not encoded).
        let mut p = builder(method).start(takes_one_way, OneWay(5)).unwrap();
        match (method, p.join()) {
            (StartMethod::Fork, Ok(5)) => {}
            (_, Err(ProcessError::Serialization { message, .. })) => {
                assert!(message.contains("arguments"), "{message}");
                assert!(
                    message.ends_with(": OneWay cannot be received"),
                    "{message}"
                );
            }
            (_, other) => panic!("{method}: {other:?}"),
        }
        // A result that cannot be encoded in the child.
        let mut p = builder(method).start(returns_unsendable, ()).unwrap();
        match p.join() {
            Err(ProcessError::Serialization { message, .. }) => {
                assert!(message.contains("result"), "{message}");
                assert!(
                    message.ends_with(": Unsendable cannot be sent"),
                    "{message}"
                );
            }
            other => panic!("{method}: {other:?}"),
        }
        // Arguments that cannot be encoded fail `start` itself.
        if method != StartMethod::Fork {
            let err = builder(method)
                .start(takes_unsendable, Unsendable)
                .unwrap_err();
            assert!(matches!(err, StartError::Codec(_)), "{method}: {err:?}");
            assert!(
                err.to_string().ends_with(": Unsendable cannot be sent"),
                "{err}"
            );
        }
    }
    check.assert_clean();
}

#[test]
fn sigint_without_a_handler_ends_the_child_by_sigint() {
    let check = LeakCheck::start();
    for method in ALL {
        let mut p = builder(method).start(sleep_forever, ()).unwrap();
        p.signal(libc::SIGINT).unwrap();
        assert_eq!(p.wait().unwrap().exitcode(), -libc::SIGINT, "{method}");
    }
    check.assert_clean();
}

#[test]
fn a_forked_child_exits_even_if_another_thread_held_stdout_at_the_fork() {
    let check = LeakCheck::start();
    {
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _stdout = std::io::stdout().lock();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        locked_rx.recv().unwrap();
        // In the child the lock stays held by a thread that does not exist there: its
        // final flush would wait for ever; it is given a second instead.
        multiproc::process::set_fork_warning(false);
        let mut p = Process::builder()
            .start_method(StartMethod::Fork)
            .start_closure(|| 7u32)
            .unwrap();
        let result = p.join_timeout(Duration::from_secs(60));
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(result.unwrap(), 7);
        assert_eq!(p.exit_status().unwrap().code(), Some(0));
    }
    check.assert_clean();
}

fn one_mebibyte(_: ()) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![5u8; 1 << 20])
}

/// `max_result_size`: a result over the limit is a `Codec` error (`Oversized`, naming
/// the limit) and the child is reaped, even though the parent stops reading a report
/// larger than the socket's buffer; a result under the limit arrives whole.
#[test]
fn a_result_over_max_result_size_is_an_oversized_codec_error() {
    let check = LeakCheck::start();
    for method in ALL {
        let mut p = common::Child(
            builder(method)
                .max_result_size(64 << 10)
                .start(one_mebibyte, ())
                .unwrap(),
        );
        match p.join_timeout(PROMPT) {
            Err(ProcessError::Codec(multiproc::CodecError::Oversized { size, max })) => {
                assert!(size >= 1 << 20, "{method}: {size}");
                assert_eq!(max, 64 << 10, "{method}");
            }
            other => panic!("{method}: {other:?}"),
        }
        assert!(p.exit_status().is_some(), "{method}: reaped");
        let mut p = common::Child(
            builder(method)
                .max_result_size(2 << 20)
                .start(one_mebibyte, ())
                .unwrap(),
        );
        let got = p.join_timeout(PROMPT).unwrap();
        assert!(
            got.len() == 1 << 20 && got.iter().all(|&b| b == 5),
            "{method}"
        );
    }
    check.assert_clean();
}

/// Encodes fine; refuses to decode.
#[derive(Debug)]
struct Undecodable;

impl Serialize for Undecodable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for Undecodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("cannot decode this"))
    }
}

fn makes_undecodable(_: ()) -> Undecodable {
    Undecodable
}

/// A result that arrives but does not decode as the target's type is
/// `ProcessError::Codec` carrying the decoder's message; the child itself succeeded.
#[test]
fn a_result_that_does_not_decode_is_a_codec_error() {
    let check = LeakCheck::start();
    for method in ALL {
        let mut p = common::Child(builder(method).start(makes_undecodable, ()).unwrap());
        match p.join_timeout(PROMPT) {
            Err(ProcessError::Codec(multiproc::CodecError::Decode { expected, .. })) => {
                assert!(expected.contains("Undecodable"), "{method}: {expected}")
            }
            other => panic!("{method}: {other:?}"),
        }
        assert!(p.exit_status().unwrap().success(), "{method}");
    }
    check.assert_clean();
}

fn unset_events(events: Vec<multiproc::sync::Event>) -> usize {
    events.iter().filter(|e| !e.is_set()).count()
}

fn events(n: usize) -> Vec<multiproc::sync::Event> {
    (0..n)
        .map(|_| multiproc::sync::Event::new().unwrap())
        .collect()
}

/// The child takes its arguments' descriptors in one read of at most 64: 64 handles
/// cross under every method; 65 are refused at start under `spawn` and `forkserver`
/// (before: 65 to 253 were silently lost, the child failing to decode its arguments;
/// more made the parent's send fail unnoticed and both sides wait for ever), and cross
/// under `fork`, which copies them.
#[test]
fn at_most_64_handles_cross_in_one_processs_arguments() {
    let check = LeakCheck::start();
    for method in ALL {
        let mut p = common::Child(builder(method).start(unset_events, events(64)).unwrap());
        assert_eq!(p.join_timeout(PROMPT).unwrap(), 64, "{method}");
        let started = builder(method).start(unset_events, events(65));
        if method == StartMethod::Fork {
            let mut p = common::Child(started.unwrap());
            assert_eq!(p.join_timeout(PROMPT).unwrap(), 65, "{method}");
        } else {
            assert!(
                matches!(started, Err(StartError::Unsupported(_))),
                "{method}: {started:?}"
            );
        }
    }
    check.assert_clean();
}

/// In a `spawn`ed child: starts its forkserver, lowers the forkserver's open-file limit
/// (children inherit it) so that a new child has room for one more descriptor only, and
/// starts a child whose arguments hold 60.
/// Returns how that child's join ended.
fn child_without_room_for_its_arguments(_: ()) -> String {
    let mut first = builder(StartMethod::ForkServer)
        .start(unset_events, events(1))
        .unwrap();
    assert_eq!(first.join().unwrap(), 1);
    // The forkserver is now this process's only child.
    let me = std::process::id();
    let forkserver: u32 = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
            after.split_whitespace().nth(1) == Some(&me.to_string())
        })
        .expect("the forkserver");
    let open: Vec<u64> = std::fs::read_dir(format!("/proc/{forkserver}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let lowest_free = (0..).find(|fd| !open.contains(fd)).unwrap();
    // New descriptors get the lowest free numbers, and must be below the limit: room
    // for the request's descriptor in the server; in the child, which closes the
    // server's socket, room for one.
    rustix::process::prlimit(
        rustix::process::Pid::from_raw(forkserver as i32),
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(lowest_free + 1),
            maximum: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
        },
    )
    .unwrap();
    let mut p = builder(StartMethod::ForkServer)
        .start(unset_events, events(60))
        .unwrap();
    match p.join_timeout(PROMPT) {
        Err(ProcessError::Bootstrap { pid, message }) => {
            assert_eq!(pid, p.pid());
            assert_eq!(
                p.exit_status().unwrap().code(),
                Some(multiproc::process::EXIT_BOOTSTRAP)
            );
            format!("Bootstrap: {message}")
        }
        other => format!("{other:?}"),
    }
}

/// `ProcessError::Bootstrap`: a child that cannot receive the descriptors of its
/// arguments' handles (no room under its open-file limit) says so before running its
/// target, and exits with `EXIT_BOOTSTRAP` (before: the descriptors were dropped
/// silently and the arguments failed to decode as a `Serialization` error).
#[test]
fn a_child_that_cannot_receive_its_arguments_descriptors_is_a_bootstrap_error() {
    let check = LeakCheck::start();
    let mut middle = common::Child(
        builder(StartMethod::Spawn)
            .start(child_without_room_for_its_arguments, ())
            .unwrap(),
    );
    let ended = middle.join_timeout(PROMPT).unwrap();
    assert!(
        ended.starts_with("Bootstrap: ") && ended.contains("RLIMIT_NOFILE"),
        "{ended}"
    );
    drop(middle);
    check.assert_clean();
}
