//! S20: a thread from a target function and a thread from a type implementing `Run`
//! (Python's `Thread` subclass overriding `run()`); both return their values to `join`.
//!
//! Seed 002: `Thread(target=download, args=(…,))` and `class DownloadTask(Thread)`, each
//! "downloading" two files for a random time; the main thread prints the total time.

use std::time::{Duration, Instant};

use multiproc::Run;
use multiproc::thread::Thread;

/// The seed's `randint(5, 10)` seconds, scaled to milliseconds and made deterministic.
fn time_to_download(filename: &str) -> u64 {
    5 + filename.len() as u64 % 6
}

fn download(filename: &str) -> u64 {
    println!("start downloading {filename}...");
    let ms = time_to_download(filename);
    std::thread::sleep(Duration::from_millis(ms));
    println!("{filename} downloaded! took {ms} ms");
    ms
}

/// Python's `class DownloadTask(Thread)`: the data is the struct, `run()` the body.
struct DownloadTask {
    filename: String,
}

impl Run for DownloadTask {
    type Output = u64;
    fn run(self) -> u64 {
        download(&self.filename)
    }
}

/// Downloads two files with each style of thread.
pub fn run() {
    let files = ["Python从入门到住院.pdf", "Peking Hot.avi"];

    let start = Instant::now();
    let t1 = Thread::start(move || download(files[0])).expect("start a thread");
    let t2 = Thread::start(move || download(files[1])).expect("start a thread");
    let by_target = [t1.join().expect("no panic"), t2.join().expect("no panic")];
    println!(
        "target style: {:.3} s in total",
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let t1 = Thread::start_run(DownloadTask {
        filename: files[0].into(),
    })
    .expect("start");
    let t2 = Thread::start_run(DownloadTask {
        filename: files[1].into(),
    })
    .expect("start");
    let by_run = [t1.join().expect("no panic"), t2.join().expect("no panic")];
    println!("Run style: {:.3} s in total", start.elapsed().as_secs_f64());

    let expected = files.map(time_to_download);
    assert_eq!(
        by_target, expected,
        "a target's return value comes back from join"
    );
    assert_eq!(
        by_run, expected,
        "run()'s return value comes back from join"
    );
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
