//! S34: names (default `Process-1`, `Process-2`, …, or given) and arguments of any serialisable type.
//!
//! Seed 004: `Process(group=None, target=None, name=None, args=(), kwargs={})`: the
//! default names are `Process-1`, `Process-2`, …; `args` is a tuple of positional
//! arguments, `kwargs` a dict of keyword arguments. Here: `group` does not exist (it was
//! always `None`), the name is set on the builder, the one argument is any
//! `Serialize + Deserialize` value — several are a tuple, keyword arguments a struct
//! (whose `Default` supplies the ones left out) — and the target's return value, of any
//! serialisable type too, comes back through `join`.

use std::collections::BTreeMap;

use multiproc::Process;
use serde::{Deserialize, Serialize};

fn my_name(_: ()) -> String {
    multiproc::current_process().name
}

/// A child that starts a child of its own: its default name extends its parent's.
fn nested_name(_: ()) -> (String, String) {
    let mut inner = Process::start(my_name, ()).expect("start");
    (
        multiproc::current_process().name,
        inner.join().expect("returns"),
    )
}

/// Positional arguments: a tuple.
fn describe((count, ratio, label, tags): (u32, f64, String, Vec<String>)) -> String {
    format!(
        "{label}: {count} × {ratio} = {}, tags {tags:?}",
        f64::from(count) * ratio
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Circle { centre: Point, radius: f64 },
    Polygon(Vec<Point>),
}

/// A struct and an enum as arguments; a map as the result.
fn measure((origin, shapes): (Point, Vec<Shape>)) -> BTreeMap<String, f64> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            let value = match shape {
                Shape::Circle { centre, radius } => {
                    f64::from((centre.x - origin.x).abs() + (centre.y - origin.y).abs()) + radius
                }
                Shape::Polygon(points) => points.len() as f64,
            };
            (format!("shape {i}"), value)
        })
        .collect()
}

/// Keyword arguments: Python's `greet(name, greeting='Hello', times=1, punctuation=None)`.
#[derive(Debug, Serialize, Deserialize)]
struct GreetKwargs {
    name: String,
    greeting: String,
    times: usize,
    punctuation: Option<char>,
}

impl Default for GreetKwargs {
    fn default() -> Self {
        GreetKwargs {
            name: String::new(),
            greeting: "Hello".into(),
            times: 1,
            punctuation: None,
        }
    }
}

fn greet(kw: GreetKwargs) -> String {
    let one = format!(
        "{}, {}{}",
        kw.greeting,
        kw.name,
        kw.punctuation.map(String::from).unwrap_or_default()
    );
    vec![one; kw.times].join(" ")
}

/// The `N` of a default name `Process-N`.
fn number(name: &str) -> u32 {
    name.strip_prefix("Process-")
        .and_then(|n| n.parse().ok())
        .expect("a default name")
}

/// Runs the scenario.
pub fn run() {
    // Default names, numbered in start order within this process (inside the tour the
    // numbers continue from the processes started before; on its own: 1, 2, 3).
    let mut first = Process::start(my_name, ()).expect("start");
    let mut second = Process::start(my_name, ()).expect("start");
    let mut named = Process::builder()
        .name("worker")
        .start(my_name, ())
        .expect("start");
    let mut third = Process::start(my_name, ()).expect("start");
    for p in [&mut first, &mut second, &mut named, &mut third] {
        let name = p.name().to_string();
        let seen = p.join().expect("returns its name");
        println!("handle name {name:<12} current_process().name in the child: {seen}");
        assert_eq!(name, seen);
    }
    let (a, b, c) = (
        number(first.name()),
        number(second.name()),
        number(third.name()),
    );
    // A custom name still takes a number, as in Python.
    assert_eq!((b, c), (a + 1, a + 3));
    assert_eq!(named.name(), "worker");

    let mut outer = Process::start(nested_name, ()).expect("start");
    let (outer_name, inner_name) = outer.join().expect("returns both names");
    println!("a child's child: {inner_name} (its parent: {outer_name})");
    assert_eq!(inner_name, format!("{outer_name}:1"));

    let mut p = Process::start(
        describe,
        (
            3,
            0.5,
            "args".to_string(),
            vec!["a".to_string(), "b".to_string()],
        ),
    )
    .expect("start");
    let text = p.join().expect("returns");
    println!("tuple args: {text}");
    assert_eq!(text, r#"args: 3 × 0.5 = 1.5, tags ["a", "b"]"#);

    let shapes = vec![
        Shape::Circle {
            centre: Point { x: 3, y: 4 },
            radius: 1.5,
        },
        Shape::Polygon(vec![
            Point { x: 0, y: 0 },
            Point { x: 1, y: 0 },
            Point { x: 0, y: 1 },
        ]),
    ];
    let mut p = Process::start(measure, (Point { x: 1, y: 1 }, shapes)).expect("start");
    let sizes = p.join().expect("returns");
    println!("struct and enum args, map result: {sizes:?}");
    assert_eq!(sizes.get("shape 0"), Some(&6.5));
    assert_eq!(sizes.get("shape 1"), Some(&3.0));

    let kwargs = GreetKwargs {
        name: "shiyanlou".into(),
        times: 2,
        punctuation: Some('!'),
        ..Default::default()
    };
    let mut p = Process::builder()
        .name("greeter")
        .start(greet, kwargs)
        .expect("start");
    let text = p.join().expect("returns");
    println!("kwargs as a struct: {text}");
    assert_eq!(text, "Hello, shiyanlou! Hello, shiyanlou!");
}

#[allow(dead_code)]
fn main() {
    multiproc::init();
    run();
}
