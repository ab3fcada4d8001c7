//! S31 — parent ↔ child and child ↔ child through one `Queue`; any serializable value
//! crosses, here Python's mixed list `[1, 'str', None]`.
//!
//! Seed 004 (IPC, `Queue`): a child puts `[1, 'str', None]`, the parent joins it and then
//! gets and prints the list. Seed 003 (§13, IPC): a child puts "a piece of data" and
//! prints `hello` while the parent gets it; then a producer child and a consumer child
//! talk through the queue, the consumer printing what it got.
//!
//! A `Queue<T>` holds one type; Python's heterogeneous list becomes a `Vec` of a serde
//! enum with one variant per Python type in it.

use std::fmt;

use multiproc::{Process, Queue};
use serde::{Deserialize, Serialize};

/// A Python value of the kinds the seed puts in its list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PyValue {
    /// `int`
    Int(i64),
    /// `str`
    Str(String),
    /// `None`
    None,
}

/// Prints like Python's `repr`.
impl fmt::Display for PyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyValue::Int(i) => write!(f, "{i}"),
            PyValue::Str(s) => write!(f, "'{s}'"),
            PyValue::None => f.write_str("None"),
        }
    }
}

/// A Python list of such values, printed as `[1, 'str', None]`.
struct PyList<'a>(&'a [PyValue]);

impl fmt::Display for PyList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{v}")?;
        }
        f.write_str("]")
    }
}

/// Seed 004's `func`.
fn func(q: Queue<Vec<PyValue>>) {
    q.put(vec![
        PyValue::Int(1),
        PyValue::Str("str".into()),
        PyValue::None,
    ])
    .expect("the queue is open");
}

/// Seed 003's first `producer`: puts, then says hello.
fn producer_hello(q: Queue<Vec<PyValue>>) {
    q.put(vec![PyValue::Str("a piece of data".into())])
        .expect("the queue is open");
    println!("hello");
}

/// Seed 003's second `producer`.
fn producer(q: Queue<Vec<PyValue>>) {
    q.put(vec![PyValue::Str("a piece of data".into())])
        .expect("the queue is open");
}

/// Seed 003's `consumer`: prints what it takes (and returns it, for the check).
fn consumer(q: Queue<Vec<PyValue>>) -> Vec<PyValue> {
    let item = q.get().expect("an item");
    println!("{}", PyList(&item));
    item
}

/// The other direction: the parent puts, a child gets.
fn child_reader(q: Queue<Vec<PyValue>>) -> Vec<PyValue> {
    let item = q.get().expect("an item");
    println!(
        "child {} got from the parent: {}",
        std::process::id(),
        PyList(&item)
    );
    item
}

/// Runs the scenario.
pub fn run() {
    // Seed 004: child -> parent, the parent joining the child before it gets.
    let q = Queue::new().expect("queue");
    let mut p = Process::start(func, q.clone()).expect("start");
    p.join().expect("func returns");
    let got = q.get().expect("the child's list");
    println!("{}", PyList(&got));
    assert_eq!(
        got,
        [PyValue::Int(1), PyValue::Str("str".into()), PyValue::None]
    );

    // Seed 003: child -> parent. Each seed program makes its own queue.
    let q = Queue::new().expect("queue");
    let mut p = Process::start(producer_hello, q.clone()).expect("start");
    let got = q.get().expect("the child's data");
    println!("parent got: {}", PyList(&got));
    assert_eq!(got, [PyValue::Str("a piece of data".into())]);
    p.join().expect("producer returns");

    // Seed 003: child -> child.
    let q = Queue::new().expect("queue");
    let mut p = Process::start(producer, q.clone()).expect("start");
    let mut c = Process::start(consumer, q.clone()).expect("start");
    p.join().expect("producer returns");
    let eaten = c.join().expect("consumer returns");
    assert_eq!(eaten, [PyValue::Str("a piece of data".into())]);

    // Parent -> child, to close the circle.
    let sent = vec![
        PyValue::Int(-7),
        PyValue::None,
        PyValue::Str("from the parent".into()),
    ];
    let q = Queue::new().expect("queue");
    let mut c = Process::start(child_reader, q.clone()).expect("start");
    q.put(sent.clone()).expect("the queue is open");
    assert_eq!(c.join().expect("child_reader returns"), sent);
    assert!(q.empty());
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
