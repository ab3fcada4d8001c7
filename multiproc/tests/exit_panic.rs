//! How the exit hook ends a program (issue 14 item 5). At a normal exit the parent
//! waits for its non-daemon children, as CPython's `_exit_function` joins them; at an
//! exit after a panic (status 101: a `main` that panicked, or a test binary whose test
//! failed) it gives them a grace of one second and then terminates them, saying so on
//! stderr, instead of waiting for ever for a child that may be waiting for the code
//! that just panicked.
//!
//! Each scenario runs in a helper process: the outer test starts this test binary
//! again, running one `#[ignore]`d inner test (as `tests/exit_status.rs` does), and
//! checks how that process ends and what reached its stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::StartMethod;
use multiproc::sync::Event;

multiproc::test_support!();

mod common;
use common::{PROMPT, builder};

/// The environment variable naming the start method of an inner test.
const METHOD_VAR: &str = "MULTIPROC_TEST_EXIT_PANIC_METHOD";

/// How long a helper whose `main` panicked may take to end, start-up included: the
/// grace is one second; the rest is room for a loaded machine. Without the fix it
/// never ends.
const PANIC_EXIT_BOUND: Duration = Duration::from_secs(20);

/// The name of the child that never finishes.
const BLOCKED_NAME: &str = "blocked-for-ever";

fn inner_method() -> StartMethod {
    std::env::var(METHOD_VAR)
        .expect("run by its outer test")
        .parse()
        .expect("a start method")
}

/// What a finished helper left: its exit code, stdout and stderr.
struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Starts the inner test `name` under `method` in a helper process, with the
/// harness's capture off (so that children's lines reach the pipes).
fn start_inner(name: &str, method: StartMethod) -> std::process::Child {
    let exe = std::env::current_exe().expect("the test binary");
    Command::new(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(METHOD_VAR, method.name())
        .env("MULTIPROC_NO_FORK_WARNING", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the helper")
}

/// Waits at most `bound` for `helper` to end; kills it (and fails) if it does not.
fn finish(mut helper: std::process::Child, bound: Duration, what: &str) -> Ended {
    let pid = helper.id();
    let began = Instant::now();
    let stdout = helper.stdout.take();
    let mut stderr = helper.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        let reader = std::thread::spawn(move || {
            let _ = stderr.read_to_string(&mut err);
            err
        });
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_string(&mut out);
        }
        let err = reader.join().expect("stderr reader");
        let status = helper.wait().expect("wait for the helper");
        let _ = tx.send((status, out, err));
    });
    match rx.recv_timeout(bound) {
        Ok((status, stdout, stderr)) => {
            waiter.join().expect("waiter");
            Ended {
                code: status.code(),
                stdout,
                stderr,
                took: began.elapsed(),
            }
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = waiter.join();
            panic!("{what}: the helper (pid {pid}) did not end within {bound:?}");
        }
    }
}

/// Waits until no process `pid` exists (a zombie still counts as existing).
fn wait_gone(pid: u32, what: &str) {
    let path = format!("/proc/{pid}");
    let start = Instant::now();
    while std::path::Path::new(&path).exists() {
        assert!(
            start.elapsed() < PROMPT,
            "{what}: process {pid} still exists"
        );
        std::thread::yield_now();
    }
}

/// The pid after `key=` on a line of `text`.
fn pid_after(text: &str, key: &str) -> Option<u32> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn wait_for_ever(event: Event) {
    event.wait();
}

/// Reads one line from stdin (the helper's, which the outer test writes), then says so
/// on stdout.
fn wait_for_go(tag: String) {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    println!("CHILD_DONE {tag} {}", line.trim());
    let _ = std::io::stdout().flush();
}

#[test]
#[ignore = "run by a_panicking_exit_terminates_blocked_children, in a process of its own"]
fn inner_panic_with_blocked_child() {
    let method = inner_method();
    let never = Event::new().expect("an event");
    let child = builder(method)
        .name(BLOCKED_NAME)
        .start(wait_for_ever, never.clone())
        .expect("start the child");
    println!("CHILD_PID={}", child.pid());
    let _ = std::io::stdout().flush();
    // The handle goes to a reaper thread as this unwinds; the exit hook finds the
    // child in the registry.
    panic!("main gives up while its child waits for ever");
}

#[test]
fn a_panicking_exit_terminates_blocked_children() {
    for method in StartMethod::ALL {
        let helper = start_inner("inner_panic_with_blocked_child", method);
        let ended = finish(helper, PANIC_EXIT_BOUND, method.name());
        let context = format!(
            "{method}: code {:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
            ended.code, ended.took, ended.stdout, ended.stderr
        );
        assert_eq!(ended.code, Some(101), "{context}");
        let pid = pid_after(&ended.stdout, "CHILD_PID=").expect(&context);
        assert!(
            ended.stderr.contains("terminating")
                && ended
                    .stderr
                    .contains(&format!("{BLOCKED_NAME} (pid {pid})")),
            "the stderr names the child it terminates: {context}"
        );
        wait_gone(pid, &context);
    }
}

#[test]
#[ignore = "run by a_normal_exit_still_joins_non_daemon_children, in a process of its own"]
fn inner_normal_exit_joins() {
    let method = inner_method();
    // A panic in another thread that main survives does not make the exit a panicking one.
    let survived = std::thread::spawn(|| panic!("a worker thread fails")).join();
    assert!(survived.is_err());
    let child = builder(method)
        .name("finishes-when-told")
        .start(wait_for_go, method.name().to_string())
        .expect("start the child");
    println!("CHILD_PID={}", child.pid());
    println!("INNER_DONE");
    let _ = std::io::stdout().flush();
    std::mem::forget(child);
}

#[test]
fn a_normal_exit_still_joins_non_daemon_children() {
    for method in StartMethod::ALL {
        let mut helper = start_inner("inner_normal_exit_joins", method);
        let mut stdin = helper.stdin.take().expect("piped");
        let mut stdout = BufReader::new(helper.stdout.take().expect("piped"));
        let mut seen = String::new();
        while !seen.contains("INNER_DONE") {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).expect("read the helper");
            assert!(n > 0, "{method}: the helper ended early:\n{seen}");
            seen.push_str(&line);
        }
        // Longer than the grace a panicking exit gives: a normal exit that terminated
        // its children after it would have killed this one by now.
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            helper.try_wait().expect("poll the helper").is_none(),
            "{method}: the helper exited without waiting for its child:\n{seen}"
        );
        writeln!(stdin, "go").expect("tell the child");
        drop(stdin);
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).expect("read the helper");
        helper.stdout = None;
        let ended = finish(helper, PROMPT, method.name());
        let all = format!("{seen}{rest}");
        assert_eq!(
            ended.code,
            Some(0),
            "{method}: stdout:\n{all}\nstderr:\n{}",
            ended.stderr
        );
        assert!(
            all.contains(&format!("CHILD_DONE {} go", method.name())),
            "{method}: the child finished: {all}"
        );
        assert!(
            !ended.stderr.contains("terminating"),
            "{method}: {}",
            ended.stderr
        );
    }
}
