//! S3: `Pipe()` is duplex, both ends send and receive; `Pipe(duplex=False)` gives a
//! receive-only and a send-only end (sending on the receiver does not compile).

use multiproc::Process;
use multiproc::connection::{Connection, Sender, pipe, pipe_simplex};

/// The child's end of the duplex pipe: answer one greeting.
fn duplex_child(conn: Connection<String>) {
    let got = conn.recv().expect("a greeting");
    println!("child {} received: {got}", std::process::id());
    conn.send(&format!("hello back from {}", std::process::id()))
        .expect("reply");
}

/// The child's sending end of a one-way pipe.
fn simplex_child(tx: Sender<Vec<i32>>) {
    tx.send(&vec![42, -1]).expect("send");
    tx.send(&vec![1, 2, 3]).expect("send");
}

/// Runs the scenario.
pub fn run() {
    let (parent_end, child_end) = pipe::<String>().expect("pipe");
    let mut p = Process::start(duplex_child, child_end).expect("start");
    parent_end
        .send(&"hello from the parent".to_string())
        .expect("send");
    let reply = parent_end.recv().expect("reply");
    println!("parent {} received: {reply}", std::process::id());
    assert!(reply.starts_with("hello back from"));
    p.join().expect("child");

    let (rx, tx) = pipe_simplex::<Vec<i32>>().expect("pipe");
    let mut p = Process::start(simplex_child, tx).expect("start");
    let first = rx.recv().expect("first");
    let second = rx.recv().expect("second");
    println!("one-way pipe delivered {first:?} then {second:?} (rx has no send method)");
    assert_eq!((first, second), (vec![42, -1], vec![1, 2, 3]));
    p.join().expect("child");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
