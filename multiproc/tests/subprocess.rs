//! Subprocess tests: S11 (`subprocess.call`, `Popen(…, stdin=PIPE, stdout=PIPE,
//! stderr=PIPE).communicate(input)`, `returncode`, `wait()`) and FAILURE_MODES item 15
//! (a timeout must not wait for grandchildren holding the pipes). Every test runs
//! under a leak check: no child, grandchild or descriptor may be left behind.

use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use multiproc::subprocess::{self, Command, DEVNULL, PIPE, Popen, STDOUT, Stdio, SubprocessError};
use multiproc::testing::LeakCheck;

multiproc::test_support!();

/// Generous bound for anything that should happen "promptly" on a loaded 2-core box.
const PROMPT: Duration = Duration::from_secs(30);
const MB10: usize = 10 * 1024 * 1024;

/// 10 MiB that are not all the same byte (a lost or reordered chunk would show).
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

/// A file in the temp directory, already unlinked, open for reading and writing.
fn scratch_file(tag: &str) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("mp-subprocess-{tag}-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

#[test]
fn s11_call_returns_the_exit_code() {
    let check = LeakCheck::start();
    // The seed: code = subprocess.call('ls'); print('Exit code:', code)
    assert_eq!(
        subprocess::call(["ls"]).unwrap().code(),
        Some(0),
        "ls exits 0"
    );
    assert_eq!(subprocess::call(["true"]).unwrap().exitcode(), 0);
    assert_eq!(subprocess::call(["false"]).unwrap().exitcode(), 1);
    let status = subprocess::call(["sh", "-c", "exit 7"]).unwrap();
    assert_eq!(status.code(), Some(7));
    assert!(!status.success());
    let killed = subprocess::call(["sh", "-c", "kill -9 $$"]).unwrap();
    assert_eq!(killed.signal(), Some(9));
    assert_eq!(killed.exitcode(), -9);
    check.assert_clean();
}

#[test]
fn s11_missing_program_is_a_clear_io_error() {
    let check = LeakCheck::start();
    let err = subprocess::call(["no-such-program-mp-s11"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains("no-such-program-mp-s11"),
        "the message names the program: {err}"
    );

    match subprocess::run(["no-such-program-mp-s11"])
        .capture()
        .check()
        .output()
    {
        Err(SubprocessError::Io(e)) => assert_eq!(e.kind(), ErrorKind::NotFound),
        other => panic!("expected Io(NotFound), got {other:?}"),
    }
    let err = Popen::builder(["/no/such/dir/prog"])
        .stdout(PIPE)
        .spawn()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let empty: [&str; 0] = [];
    assert_eq!(
        subprocess::call(empty).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    check.assert_clean();
}

#[test]
fn s11_run_check_gives_called_process_error_with_status_and_output() {
    let check = LeakCheck::start();
    let err = subprocess::run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        .capture()
        .check()
        .output()
        .unwrap_err();
    let message = err.to_string();
    match err {
        SubprocessError::Called {
            cmd,
            status,
            stdout,
            stderr,
        } => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(stdout, b"out\n");
            assert_eq!(stderr, b"err\n");
            assert_eq!(cmd[0], "sh");
        }
        other => panic!("expected Called, got {other:?}"),
    }
    assert!(message.contains("exit code 3"), "{message}");

    // Without check, a failure is a Completed like any other.
    let done = subprocess::run(["sh", "-c", "exit 5"]).output().unwrap();
    assert_eq!(done.returncode(), 5);
    assert!(matches!(
        done.check_returncode(),
        Err(SubprocessError::Called { .. })
    ));
    // check_call / check_output.
    assert_eq!(subprocess::check_call(["true"]).unwrap().code(), Some(0));
    assert!(matches!(
        subprocess::check_call(["false"]),
        Err(SubprocessError::Called { .. })
    ));
    assert_eq!(subprocess::check_output(["echo", "hi"]).unwrap(), b"hi\n");
    check.assert_clean();
}

#[test]
fn s11_run_captures_stdout_and_stderr_separately() {
    let check = LeakCheck::start();
    let done = subprocess::run(["sh", "-c", "echo to-out; echo to-err >&2"])
        .capture()
        .check()
        .output()
        .unwrap();
    assert_eq!(done.stdout, b"to-out\n");
    assert_eq!(done.stderr, b"to-err\n");
    assert!(done.status.success());
    assert_eq!(
        done.args,
        [
            OsString::from("sh"),
            "-c".into(),
            "echo to-out; echo to-err >&2".into()
        ]
    );

    // Not captured: nothing in Completed (the output went to this process's own).
    let done = subprocess::run(["true"]).output().unwrap();
    assert!(done.stdout.is_empty() && done.stderr.is_empty());
    check.assert_clean();
}

#[test]
fn s11_communicate_moves_10_mib_through_cat_both_ways() {
    let check = LeakCheck::start();
    let input = pattern(MB10);
    let mut p = Popen::builder(["cat"])
        .stdin(PIPE)
        .stdout(PIPE)
        .stderr(PIPE)
        .spawn()
        .unwrap();
    assert!(p.stdin.is_some() && p.stdout.is_some() && p.stderr.is_some());
    let (out, err) = p.communicate(&input).unwrap();
    assert_eq!(out.len(), input.len());
    assert!(out == input, "cat echoed the 10 MiB unchanged");
    assert!(err.is_empty());
    assert_eq!(p.returncode(), Some(0));
    assert_eq!(p.wait().unwrap().code(), Some(0), "wait after communicate");
    check.assert_clean();
}

#[test]
fn s11_run_input_10_mib_through_cat() {
    let check = LeakCheck::start();
    let input = pattern(MB10);
    let done = subprocess::run(["cat"])
        .input(input.clone())
        .capture()
        .check()
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    assert!(done.stdout == input);
    check.assert_clean();
}

#[test]
fn s11_communicate_with_large_stderr_written_before_stdin_is_read() {
    let check = LeakCheck::start();
    // The child fills stderr (far beyond a 64 KiB pipe) before it reads a byte of its
    // input, then echoes 10 MiB: writing all input first, or reading one pipe at a
    // time, would deadlock.
    let input = pattern(MB10);
    let script = "head -c 1000000 /dev/zero | tr '\\0' e >&2; cat; head -c 300000 /dev/zero >&2";
    let mut p = Popen::builder(["sh", "-c", script])
        .stdin(PIPE)
        .stdout(PIPE)
        .stderr(PIPE)
        .spawn()
        .unwrap();
    let (out, err) = p.communicate(&input).unwrap();
    assert!(out == input);
    assert_eq!(err.len(), 1_300_000);
    assert!(err[..1_000_000].iter().all(|&b| b == b'e'));
    assert!(err[1_000_000..].iter().all(|&b| b == 0));
    assert_eq!(p.returncode(), Some(0));
    check.assert_clean();
}

#[test]
fn s11_communicate_when_the_child_ignores_its_input() {
    let check = LeakCheck::start();
    // The child exits without reading: the rest of the input is dropped (EPIPE), as in
    // Python, and communicate returns.
    let mut p = Popen::builder(["sh", "-c", "echo bye"])
        .stdin(PIPE)
        .stdout(PIPE)
        .spawn()
        .unwrap();
    let (out, _) = p.communicate(pattern(MB10)).unwrap();
    assert_eq!(out, b"bye\n");
    assert_eq!(p.returncode(), Some(0));
    check.assert_clean();
}

#[test]
fn s11_communicate_timeout_keeps_the_child_and_the_output() {
    let check = LeakCheck::start();
    let mut p = Popen::builder(["sh", "-c", "echo started; exec sleep 100"])
        .stdout(PIPE)
        .spawn()
        .unwrap();
    let err = p
        .communicate_timeout(b"", Duration::from_millis(200))
        .unwrap_err();
    match err {
        SubprocessError::Timeout { timeout, .. } => {
            assert_eq!(timeout, Duration::from_millis(200))
        }
        other => panic!("expected TimeoutExpired, got {other:?}"),
    }
    // Python's semantics: not killed.
    assert_eq!(p.poll().unwrap(), None);
    assert_eq!(p.returncode(), None);
    // Input cannot be given once the exchange started.
    assert_eq!(
        p.communicate(b"late").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    p.kill().unwrap();
    let (out, err) = p.communicate(b"").unwrap();
    assert_eq!(
        out, b"started\n",
        "the output read before the timeout is kept"
    );
    assert!(err.is_empty());
    assert_eq!(p.returncode(), Some(-9));
    check.assert_clean();
}

/// FAILURE_MODES item 15: a grandchild holds the pipes; the timeout kills the whole
/// group, returns promptly and leaves nobody behind.
#[test]
fn s11_run_timeout_kills_the_group_whose_grandchild_holds_the_pipes() {
    let check = LeakCheck::start();
    let started = Instant::now();
    // stdin not inherited: the child has its own group even when ours is a terminal.
    let err = subprocess::run(["sh", "-c", "echo partial; sleep 100 & sleep 100"])
        .stdin(DEVNULL)
        .capture()
        .timeout(Duration::from_millis(300))
        .output()
        .unwrap_err();
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    match err {
        SubprocessError::Timeout {
            cmd,
            timeout,
            stdout,
            stderr,
        } => {
            assert_eq!(cmd[0], "sh");
            assert_eq!(timeout, Duration::from_millis(300));
            assert_eq!(stdout, b"partial\n", "output before the timeout is kept");
            assert!(stderr.is_empty());
        }
        other => panic!("expected TimeoutExpired, got {other:?}"),
    }
    // Both sleeps are dead and reaped (LeakCheck made this process their subreaper).
    check.assert_clean();
}

/// CPython 97000: the child exits at once, its background grandchild keeps stdout.
#[test]
fn s11_run_timeout_when_the_child_already_exited_but_its_grandchild_holds_stdout() {
    let check = LeakCheck::start();
    let started = Instant::now();
    let err = subprocess::run(["sh", "-c", "sleep 100 &"])
        .stdin(DEVNULL)
        .stdout(PIPE)
        .timeout(Duration::from_millis(300))
        .output()
        .unwrap_err();
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    assert!(matches!(err, SubprocessError::Timeout { .. }), "{err:?}");
    check.assert_clean();
}

#[test]
fn s11_run_timeout_not_reached() {
    let check = LeakCheck::start();
    let done = subprocess::run(["echo", "quick"])
        .capture()
        .timeout(PROMPT)
        .output()
        .unwrap();
    assert_eq!(done.stdout, b"quick\n");
    // A timeout too large for an Instant means no deadline, not a panic.
    let done = subprocess::run(["echo", "unbounded"])
        .capture()
        .timeout(Duration::MAX)
        .output()
        .unwrap();
    assert_eq!(done.stdout, b"unbounded\n");
    let mut p = Popen::builder(["cat"])
        .stdin(PIPE)
        .stdout(PIPE)
        .spawn()
        .unwrap();
    let (out, _) = p.communicate_timeout("same", Duration::MAX).unwrap();
    assert_eq!(out, b"same");
    assert_eq!(
        p.wait_timeout(Duration::MAX).unwrap().unwrap().code(),
        Some(0)
    );
    check.assert_clean();
}

#[test]
fn s11_wait_timeout_poll_and_returncode() {
    let check = LeakCheck::start();
    let mut p = Popen::builder(["sleep", "100"])
        .stdin(DEVNULL)
        .spawn()
        .unwrap();
    assert!(p.pid() > 0);
    assert!(p.has_own_group(), "stdin is not inherited: its own group");
    assert_eq!(p.poll().unwrap(), None);
    assert_eq!(p.returncode(), None);
    assert_eq!(p.exit_status(), None);
    assert_eq!(p.wait_timeout(Duration::from_millis(50)).unwrap(), None);
    p.kill().unwrap();
    let status = p.wait_timeout(PROMPT).unwrap().expect("killed child ends");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(p.returncode(), Some(-9));
    assert_eq!(p.poll().unwrap(), Some(status));
    assert_eq!(p.wait().unwrap(), status);
    // Signals to a reaped child are ignored, as in Python.
    p.terminate().unwrap();
    p.kill().unwrap();

    let mut q = Popen::builder(["sh", "-c", "exit 4"]).spawn().unwrap();
    let status = q.wait_timeout(PROMPT).unwrap().unwrap();
    assert_eq!(status.code(), Some(4));
    assert_eq!(q.returncode(), Some(4));
    check.assert_clean();
}

#[test]
fn s11_terminate_gives_a_sigterm_status() {
    let check = LeakCheck::start();
    let mut p = Popen::builder(["sleep", "100"]).spawn().unwrap();
    p.terminate().unwrap();
    let status = p.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert_eq!(status.signal_name(), Some("SIGTERM"));
    assert_eq!(p.returncode(), Some(-libc::SIGTERM));
    check.assert_clean();
}

#[test]
fn s11_kill_and_send_signal() {
    let check = LeakCheck::start();
    let mut p = Popen::builder(["sleep", "100"]).spawn().unwrap();
    p.send_signal(libc::SIGUSR1).unwrap();
    assert_eq!(p.wait().unwrap().signal(), Some(libc::SIGUSR1));

    let mut p = Popen::builder(["sleep", "100"]).spawn().unwrap();
    p.kill().unwrap();
    assert_eq!(p.wait().unwrap().signal(), Some(libc::SIGKILL));
    check.assert_clean();
}

#[test]
fn s11_kill_group_reaches_grandchildren() {
    let check = LeakCheck::start();
    let mut p = Popen::builder(["sh", "-c", "sleep 100 & echo ready; wait"])
        .stdin(DEVNULL)
        .stdout(PIPE)
        .spawn()
        .unwrap();
    let mut line = [0u8; 6];
    p.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
    assert_eq!(&line, b"ready\n", "the grandchild is started");
    p.kill_group().unwrap();
    // The grandchild held stdout too: end-of-file proves it died.
    let (out, _) = p.communicate(b"").unwrap();
    assert!(out.is_empty());
    assert_eq!(p.returncode(), Some(-9));

    // A child in this process's group cannot be group-killed.
    let mut q = Popen::builder(["true"])
        .process_group(false)
        .spawn()
        .unwrap();
    assert!(!q.has_own_group());
    assert_eq!(q.kill_group().unwrap_err().kind(), ErrorKind::Unsupported);
    q.wait().unwrap();
    check.assert_clean();
}

#[test]
fn s11_devnull() {
    let check = LeakCheck::start();
    // stdin from /dev/null: cat sees end-of-file at once.
    let done = subprocess::run(["cat"])
        .stdin(DEVNULL)
        .stdout(PIPE)
        .output()
        .unwrap();
    assert!(done.stdout.is_empty());
    assert!(done.status.success());
    // stdout to /dev/null, stderr kept.
    let done = subprocess::run(["sh", "-c", "echo out; echo err >&2"])
        .stdout(DEVNULL)
        .stderr(PIPE)
        .output()
        .unwrap();
    assert!(done.stdout.is_empty());
    assert_eq!(done.stderr, b"err\n");
    check.assert_clean();
}

#[test]
fn s11_file_as_stdout_and_stdin() {
    let check = LeakCheck::start();
    let mut out = scratch_file("out");
    subprocess::run(["sh", "-c", "echo to-file; echo err-too >&2"])
        .stdout(out.try_clone().unwrap())
        .stderr(STDOUT)
        .check()
        .output()
        .unwrap();
    let mut text = String::new();
    std::io::Seek::rewind(&mut out).unwrap();
    out.read_to_string(&mut text).unwrap();
    assert_eq!(text, "to-file\nerr-too\n");
    drop(out);

    let mut input = scratch_file("in");
    input.write_all(b"from a file\n").unwrap();
    std::io::Seek::rewind(&mut input).unwrap();
    let done = subprocess::run(["cat"])
        .stdin(Stdio::File(input))
        .stdout(PIPE)
        .output()
        .unwrap();
    assert_eq!(done.stdout, b"from a file\n");
    check.assert_clean();
}

#[test]
fn s11_stderr_into_stdout_pipe() {
    let check = LeakCheck::start();
    let mut p = Popen::builder(["sh", "-c", "echo one; echo two >&2; echo three"])
        .stdout(PIPE)
        .stderr(STDOUT)
        .spawn()
        .unwrap();
    assert!(p.stderr.is_none(), "merged into stdout");
    let (out, err) = p.communicate(b"").unwrap();
    assert_eq!(out, b"one\ntwo\nthree\n");
    assert!(err.is_empty());
    // STDOUT is for stderr only.
    assert_eq!(
        Popen::builder(["true"])
            .stdout(STDOUT)
            .spawn()
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    check.assert_clean();
}

#[test]
fn s11_inherit_uses_this_process_descriptors() {
    let check = LeakCheck::start();
    // The child reports where its inherited stderr points; it is ours.
    let ours = std::fs::read_link("/proc/self/fd/2").unwrap();
    let done = subprocess::run(["sh", "-c", "readlink /proc/$$/fd/2"])
        .stdout(PIPE)
        .stderr(Stdio::Inherit)
        .check()
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&done.stdout).trim_end(),
        ours.to_string_lossy()
    );
    check.assert_clean();
}

#[test]
fn s11_cwd_env_and_shell() {
    let check = LeakCheck::start();
    let dir = std::env::temp_dir().canonicalize().unwrap();
    let done = subprocess::run(["pwd"])
        .cwd(&dir)
        .stdout(PIPE)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&done.stdout).trim_end(),
        dir.to_string_lossy()
    );

    let done = subprocess::run(["sh", "-c", "echo $MP_A-$MP_B-${HOME:-unset}"])
        .env("MP_A", "x")
        .envs([("MP_B", "y")])
        .env_remove("HOME")
        .stdout(PIPE)
        .output()
        .unwrap();
    assert_eq!(done.stdout, b"x-y-unset\n");

    let done = Command::new(["/usr/bin/env"])
        .env_clear()
        .env("ONLY", "me")
        .stdout(PIPE)
        .output()
        .unwrap();
    assert_eq!(done.stdout, b"ONLY=me\n");

    // shell=True: args[0] is the command line, the rest are $0, $1 …
    let done = subprocess::run(["echo $0:$1 | tr a-z A-Z", "zero", "one"])
        .shell(true)
        .capture()
        .check()
        .output()
        .unwrap();
    assert_eq!(done.stdout, b"ZERO:ONE\n");
    check.assert_clean();
}

#[test]
fn s11_pipes_used_by_hand() {
    let check = LeakCheck::start();
    let mut p = Popen::builder(["tr", "a-z", "A-Z"])
        .stdin(PIPE)
        .stdout(PIPE)
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(b"by hand\n").unwrap(); // dropped: closed
    let mut out = String::new();
    p.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "BY HAND\n");
    assert!(p.wait().unwrap().success());
    check.assert_clean();
}

#[test]
fn s11_dropping_a_running_popen_leaves_no_zombie() {
    let check = LeakCheck::start();
    // cat runs until its stdin closes: dropping the Popen closes it, a detached thread
    // reaps the child (the leak check waits for it).
    let p = Popen::builder(["cat"])
        .stdin(PIPE)
        .stdout(DEVNULL)
        .spawn()
        .unwrap();
    drop(p);
    check.assert_clean();
}

#[test]
fn s11_misuse_is_invalid_input() {
    let check = LeakCheck::start();
    // Input without a stdin pipe.
    let mut p = Popen::builder(["true"]).spawn().unwrap();
    assert_eq!(
        p.communicate(b"x").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    p.wait().unwrap();
    // run's options on spawn.
    for cmd in [
        subprocess::run(["true"]).check(),
        subprocess::run(["true"]).input("x"),
        subprocess::run(["true"]).timeout(PROMPT),
    ] {
        assert_eq!(cmd.spawn().unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    // input with another stdin.
    assert!(matches!(
        subprocess::run(["cat"]).stdin(DEVNULL).input("x").output(),
        Err(SubprocessError::Io(e)) if e.kind() == ErrorKind::InvalidInput
    ));
    check.assert_clean();
}

// ---- the terminal rule -------------------------------------------------------------

/// Set in the copy of this test binary that runs under a pseudo-terminal.
const UNDER_A_TERMINAL: &str = "MULTIPROC_TEST_UNDER_A_TERMINAL";

/// `pgrp tpgid` of the shell itself: its process group and its terminal's foreground
/// group (fields 5 and 8 of `/proc/<pid>/stat`).
const REPORT_GROUPS: &str =
    "read pid comm state ppid pgrp session tty tpgid rest < /proc/$$/stat; echo $pgrp $tpgid";

/// `(pgrp, tpgid)` as a child started by `cmd` reports them.
fn groups_of(cmd: Command) -> (bool, i64, i64) {
    let mut p = cmd.stdout(PIPE).spawn().unwrap();
    let own = p.has_own_group();
    let (out, _) = p.communicate_timeout(b"", PROMPT).unwrap();
    assert_eq!(p.returncode(), Some(0));
    let text = String::from_utf8(out).unwrap();
    let mut fields = text.split_whitespace().map(|f| f.parse::<i64>().unwrap());
    let (pgrp, tpgid) = (fields.next().unwrap(), fields.next().unwrap());
    (own, pgrp, tpgid)
}

/// The rule of [`Command::process_group`]: a child that inherits a terminal as stdin
/// stays in the caller's (foreground) group, where it may read the terminal; any other
/// child gets its own group. Run under `script`, which makes a pseudo-terminal the
/// controlling terminal of a new session and runs this binary in its foreground group.
#[test]
fn s11_a_child_inheriting_a_terminal_stays_in_the_foreground_group() {
    if std::env::var_os(UNDER_A_TERMINAL).is_some() {
        return terminal_rule_under_a_terminal();
    }
    let check = LeakCheck::start();
    let exe = std::env::current_exe().unwrap();
    let line = format!(
        "'{}' --exact s11_a_child_inheriting_a_terminal_stays_in_the_foreground_group \
         --nocapture --test-threads=1",
        exe.display()
    );
    let done = subprocess::run(["script", "-qec", &line, "/dev/null"])
        .env(UNDER_A_TERMINAL, "1")
        .stdin(DEVNULL)
        .capture()
        .timeout(Duration::from_secs(120))
        .output()
        .expect("util-linux's script runs the test under a pseudo-terminal");
    let out = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success() && out.contains("1 passed"),
        "under a terminal: {}\n{out}{}",
        done.status,
        String::from_utf8_lossy(&done.stderr)
    );
    check.assert_clean();
}

/// The half of the test that runs with a pseudo-terminal as stdin.
fn terminal_rule_under_a_terminal() {
    use std::io::IsTerminal;
    let check = LeakCheck::start();
    assert!(std::io::stdin().is_terminal(), "script gave us a terminal");
    let report = || Command::new(["sh", "-c", REPORT_GROUPS]);

    // Inherited terminal: the caller's group, which is the foreground one.
    let (own, pgrp, tpgid) = groups_of(report());
    assert!(!own, "a child inheriting the terminal stays in our group");
    assert_eq!(
        pgrp,
        i64::from(rustix::process::getpgrp().as_raw_nonzero().get())
    );
    assert_eq!(pgrp, tpgid, "it is in the terminal's foreground group");

    // Any other stdin: a group of its own, in the background.
    for stdin in [DEVNULL, PIPE] {
        let (own, pgrp, tpgid) = groups_of(report().stdin(stdin));
        assert!(own, "a child not reading the terminal gets its own group");
        assert_ne!(pgrp, tpgid, "its own group is not the foreground one");
    }
    // process_group overrides the rule either way.
    let (own, pgrp, tpgid) = groups_of(report().process_group(true));
    assert!(own && pgrp != tpgid);
    let (own, pgrp, tpgid) = groups_of(report().stdin(DEVNULL).process_group(false));
    assert!(!own && pgrp == tpgid);

    // Why: a child of another group that reads the terminal is stopped (SIGTTIN).
    let mut p = Popen::builder(["sh", "-c", "read line"])
        .process_group(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(format!("/proc/{}/stat", p.pid()))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .map(|s| s.trim_start().starts_with('T'))
        })
        != Some(true)
    {
        assert!(
            started.elapsed() < PROMPT,
            "the background reader is stopped"
        );
        std::thread::yield_now();
    }
    p.kill().unwrap();
    assert_eq!(p.wait().unwrap().signal(), Some(libc::SIGKILL));
    check.assert_clean();
}
