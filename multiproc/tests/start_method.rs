//! The global start method (Python's `set_start_method` / `get_start_method`): the
//! default is `forkserver`, and a builder that names no method (a process's, a pool's)
//! uses whatever was set last. Process-global, so this binary holds this one test alone:
//! it cannot change the method under another test's feet.

use std::sync::atomic::{AtomicU32, Ordering};

use multiproc::pool::Pool;
use multiproc::process::{Process, StartMethod, get_start_method, set_start_method};
use multiproc::testing::LeakCheck;

mod common;

multiproc::test_support!();

/// Set in this process before each start: a forked child inherits it, a re-executed one
/// (spawn, forkserver) starts from 0.
static MARK: AtomicU32 = AtomicU32::new(0);

/// How this child came to be: the method its parent told it, whether it inherited this
/// process's memory, and whether it was forked by a forkserver (whose environment at
/// exec time, as the kernel keeps it, it inherits along with the rest of its memory).
fn how_started(_: ()) -> (Option<StartMethod>, bool, bool) {
    let environ = std::fs::read("/proc/self/environ").unwrap();
    let forkserver = environ
        .split(|&b| b == 0)
        .any(|var| var.starts_with(b"MULTIPROC_FORKSERVER="));
    (
        multiproc::current_process().start_method,
        MARK.load(Ordering::SeqCst) == 1,
        forkserver,
    )
}

fn started_by(method: StartMethod) -> (Option<StartMethod>, bool, bool) {
    (
        Some(method),
        method == StartMethod::Fork,
        method == StartMethod::ForkServer,
    )
}

#[test]
fn the_global_start_method_is_used_by_every_builder_that_names_none() {
    let check = LeakCheck::start();
    multiproc::process::set_fork_warning(false);
    MARK.store(1, Ordering::SeqCst);
    assert_eq!(get_start_method(), StartMethod::ForkServer, "the default");
    let mut p = common::Child(Process::start(how_started, ()).unwrap());
    assert_eq!(p.start_method(), StartMethod::ForkServer);
    assert_eq!(
        p.join_timeout(common::PROMPT).unwrap(),
        started_by(StartMethod::ForkServer)
    );
    for method in [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::ForkServer,
        StartMethod::Spawn,
    ] {
        set_start_method(method);
        assert_eq!(get_start_method(), method);
        let mut p = common::Child(Process::builder().start(how_started, ()).unwrap());
        assert_eq!(p.start_method(), method);
        assert_eq!(
            p.join_timeout(common::PROMPT).unwrap(),
            started_by(method),
            "{method}"
        );
        let pool = Pool::builder().processes(1).build().unwrap();
        assert_eq!(
            pool.apply(how_started, ()).unwrap(),
            started_by(method),
            "{method}"
        );
        pool.close();
        pool.join().unwrap();
    }
    // A method named on the builder wins over the global one (now spawn).
    let mut p = common::Child(
        Process::builder()
            .start_method(StartMethod::Fork)
            .start(how_started, ())
            .unwrap(),
    );
    assert_eq!(
        p.join_timeout(common::PROMPT).unwrap(),
        started_by(StartMethod::Fork)
    );
    drop(p);
    set_start_method("forkserver".parse().unwrap());
    assert_eq!(get_start_method(), StartMethod::ForkServer);
    check.assert_clean();
}
