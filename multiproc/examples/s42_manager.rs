//! S42 — `Manager()`: `m.list(range(10))` and `m.dict()` changed by a child, seen by
//! the parent.
//!
//! Seed 004 (the server-process section): `func(d, l)` sets `d['1'] = 2`,
//! `d[2] = 'str'`, `d[3.0] = None` and `l[i] = -i`; after `join()` the parent prints
//! `{'1': 2, 2: 'str', 3.0: None}` and `[0, -1, -2, …, -9]`. The objects live in the
//! manager's server process; the parent and the child hold proxies to them. Keys and
//! values may be of any serialisable type: here an enum standing for Python's mixed
//! `str`, `int`, `float` and `None`.

use std::fmt;

use multiproc::Process;
use multiproc::manager::{DictProxy, ListProxy, Manager};
use serde::{Deserialize, Serialize};

/// A Python value of the kinds the seed uses, printed as Python's `repr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Py {
    Str(String),
    Int(i64),
    Float(f64),
    None,
}

impl fmt::Display for Py {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Py::Str(s) => write!(f, "'{s}'"),
            Py::Int(i) => write!(f, "{i}"),
            Py::Float(x) => write!(f, "{x:?}"),
            Py::None => f.write_str("None"),
        }
    }
}

/// The seed's `func(d, l)`.
fn func((d, l): (DictProxy<Py, Py>, ListProxy<i64>)) {
    d.set(Py::Str("1".into()), Py::Int(2)).expect("d['1'] = 2");
    d.set(Py::Int(2), Py::Str("str".into()))
        .expect("d[2] = 'str'");
    d.set(Py::Float(3.0), Py::None).expect("d[3.0] = None");
    for i in 0..l.len().expect("len(l)") {
        l.set(i, -(i as i64)).expect("l[i] = -i");
    }
}

/// Runs the scenario.
pub fn run() {
    let m = Manager::start().expect("start the manager");
    let l = m.list(0..10i64).expect("m.list(range(10))");
    let d = m.dict::<Py, Py>().expect("m.dict()");
    let mut p = Process::start(func, (d.clone(), l.clone())).expect("start");
    p.join().expect("func returns");

    let items = d.items().expect("d.items()");
    let shown: Vec<String> = items.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("{{{}}}", shown.join(", "));
    let list = l.to_vec().expect("l[:]");
    println!("{list:?}");

    assert_eq!(
        items,
        [
            (Py::Str("1".into()), Py::Int(2)),
            (Py::Int(2), Py::Str("str".into())),
            (Py::Float(3.0), Py::None),
        ]
    );
    assert_eq!(shown.join(", "), "'1': 2, 2: 'str', 3.0: None");
    assert_eq!(list, [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);
    // `with Manager() as m:` — dropping `m` would do the same.
    let mut m = m;
    m.shutdown().expect("shutdown");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
