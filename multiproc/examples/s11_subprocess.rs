//! S11: `subprocess.call('ls')` returns the exit code; `Popen([...], stdin=PIPE,
//! stdout=PIPE, stderr=PIPE)` then `communicate(input)`, `returncode`, `wait()`.
//!
//! Seed 001 (the `subprocess` section). The seed feeds `nslookup` commands on its
//! stdin; a lookup needs the network, so this feeds the same kind of script to `sh`,
//! another program that reads commands from stdin until `exit`. Then it shows what
//! the seed's pattern must survive: input and output far larger than a pipe buffer,
//! and a timeout while a grandchild holds the pipes.

use std::time::{Duration, Instant};

use multiproc::subprocess::{self, PIPE, Popen, SubprocessError};

/// Runs the seed's two programs, then the two hard cases.
pub fn run() {
    // code = subprocess.call('ls'); print('Exit code:', code)
    let code = subprocess::call(["ls"]).expect("run ls");
    println!("Exit code: {}", code.exitcode());
    assert_eq!(code.exitcode(), 0);

    // p = Popen(['nslookup'], stdin=PIPE, stdout=PIPE, stderr=PIPE)
    // std_out, std_err = p.communicate(b'set q=mx\npython.org\nexit\n')
    let mut p = Popen::builder(["sh"])
        .stdin(PIPE)
        .stdout(PIPE)
        .stderr(PIPE)
        .spawn()
        .expect("start sh");
    let (std_out, std_err) = p
        .communicate(b"echo 'set q=mx'\necho python.org\necho 'no MX here' >&2\nexit\n")
        .expect("communicate");
    print!("{}", String::from_utf8_lossy(&std_out));
    println!("Error: {:?}", String::from_utf8_lossy(&std_err));
    println!("Exit code: {:?}", p.returncode());
    println!("error code: {}", p.wait().expect("wait").exitcode());
    assert_eq!(std_out, b"set q=mx\npython.org\n");
    assert_eq!(std_err, b"no MX here\n");
    assert_eq!(p.returncode(), Some(0));

    // Both ways beyond the pipe buffers (64 KiB): 8 MiB in, 8 MiB out, 1 MiB of
    // stderr written before the input is read. communicate writes and reads at once.
    let input: Vec<u8> = (0..8 << 20).map(|i| (i % 253) as u8).collect();
    let started = Instant::now();
    let mut cat = Popen::builder(["sh", "-c", "head -c 1048576 /dev/zero >&2; cat"])
        .stdin(PIPE)
        .stdout(PIPE)
        .stderr(PIPE)
        .spawn()
        .expect("start cat");
    let (out, err) = cat.communicate(&input).expect("communicate");
    println!(
        "8 MiB through cat and 1 MiB of stderr in {:.1} ms, exit code {:?}",
        started.elapsed().as_secs_f64() * 1e3,
        cat.returncode()
    );
    assert!(out == input && err.len() == 1 << 20);

    // run(..., timeout=…) while a grandchild holds stdout: the whole group is killed.
    let started = Instant::now();
    let timed_out = subprocess::run(["sh", "-c", "echo working; sleep 60 & sleep 60"])
        .capture()
        .timeout(Duration::from_millis(200))
        .output();
    match timed_out {
        Err(SubprocessError::Timeout { stdout, .. }) => {
            println!(
                "timed out after {:.0} ms with {:?} read; child and grandchild killed",
                started.elapsed().as_secs_f64() * 1e3,
                String::from_utf8_lossy(&stdout)
            );
            assert_eq!(stdout, b"working\n");
        }
        other => panic!("expected TimeoutExpired, got {other:?}"),
    }
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
