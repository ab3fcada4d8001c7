//! A binary that never calls `multiproc::init()` must not be able to re-execute itself
//! (CPython's TestNoForkBomb): spawn and forkserver refuse with a typed error, while
//! fork, which does not re-execute, works.

use multiproc::{Process, StartError, StartMethod};

fn add_one(x: u32) -> u32 {
    x + 1
}

#[test]
fn reexecuting_methods_need_init() {
    multiproc::process::set_fork_warning(false);
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let err = Process::builder()
            .start_method(method)
            .start(add_one, 1)
            .unwrap_err();
        assert!(
            matches!(err, StartError::NotInitialized),
            "{method}: {err:?}"
        );
        assert!(err.to_string().contains("multiproc::init()"));
    }
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(add_one, 1)
        .unwrap();
    assert_eq!(p.join().unwrap(), 2);
}
