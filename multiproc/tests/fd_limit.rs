//! Out of descriptors (FAILURE_MODES: resource exhaustion): under an open-file limit
//! that leaves no room, everything that needs a new descriptor fails with a typed
//! `Io` error carrying EMFILE, neither a panic nor a hang. The limit is lowered in a
//! child (started with `spawn`), so this test binary keeps its own.

use std::io;
use std::os::fd::AsRawFd;

use multiproc::StartMethod;
use multiproc::pool::{Pool, PoolError};
use multiproc::process::{Process, StartError};
use multiproc::testing::LeakCheck;

mod common;
use common::{PROMPT, builder};

multiproc::test_support!();

fn nothing(_: ()) {}

/// What a call ended with: `"EMFILE"` for a typed I/O error with that errno, else what
/// it was.
fn errno_of<T: std::fmt::Debug>(r: Result<T, io::Error>) -> String {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EMFILE) => "EMFILE".into(),
        other => format!("{other:?}"),
    }
}

fn start_errno<T: std::fmt::Debug>(r: Result<T, StartError>) -> String {
    match r {
        Err(StartError::Io(e)) => errno_of::<()>(Err(e)),
        other => format!("{other:?}"),
    }
}

/// Lowers this process's soft `RLIMIT_NOFILE` to its lowest free descriptor number (so
/// no new descriptor fits), then tries each thing that needs one.
fn under_a_full_descriptor_table(_: ()) -> Vec<(String, String)> {
    let lowest_free = std::fs::File::open("/dev/null").unwrap().as_raw_fd();
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(lowest_free as u64),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let mut seen = vec![(
        "open".to_string(),
        errno_of(std::fs::File::open("/dev/null")),
    )];
    let mut note = |what: &str, how: String| seen.push((what.to_string(), how));
    note("Queue::new", errno_of(multiproc::Queue::<u32>::new()));
    note(
        "SimpleQueue::new",
        errno_of(multiproc::SimpleQueue::<u32>::new()),
    );
    note(
        "connection::pipe",
        errno_of(multiproc::connection::pipe::<u32>()),
    );
    note("Event::new", errno_of(multiproc::sync::Event::new()));
    note("Lock::new", errno_of(multiproc::sync::Lock::new()));
    note("Value::new", errno_of(multiproc::shared::Value::new(0u32)));
    for method in StartMethod::ALL {
        note(
            &format!("Process::start {method}"),
            start_errno(builder(method).start(nothing, ())),
        );
    }
    let pool = Pool::builder()
        .processes(1)
        .start_method(StartMethod::Spawn)
        .build();
    note(
        "Pool::build",
        match pool {
            Err(PoolError::Start(e)) => start_errno::<()>(Err(e)),
            other => format!("{other:?}"),
        },
    );
    seen
}

#[test]
fn with_no_descriptor_left_every_constructor_says_emfile() {
    let check = LeakCheck::start();
    let mut middle = common::Child(
        Process::builder()
            .start_method(StartMethod::Spawn)
            .start(under_a_full_descriptor_table, ())
            .unwrap(),
    );
    let seen = middle.join_timeout(PROMPT).unwrap();
    assert_eq!(seen.len(), 11, "{seen:?}");
    for (what, how) in &seen {
        assert_eq!(how, "EMFILE", "{what}");
    }
    drop(middle);
    check.assert_clean();
}
