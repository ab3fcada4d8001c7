//! `multiproc::thread`: names, idents, locks, thread-locals (S7 S13 S14 S15 S16 S20).

multiproc::test_support!();

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use multiproc::thread::{
    AcquireError, Local, Lock, RLock, Thread, current_thread, get_ident, get_native_id,
    is_main_thread,
};
use multiproc::{Process, Run, StartMethod};

#[test]
fn s07_thread_idents_differ() {
    let main = get_ident();
    let child = Thread::start(get_ident).unwrap();
    let reported = child.ident();
    let inside = child.join().unwrap();
    assert_eq!(
        inside, reported,
        "the handle reports the ident the thread sees"
    );
    assert_ne!(inside, main);
    assert_eq!(get_ident(), main, "stable within a thread");
    assert_eq!(current_thread().ident(), main);

    let idents: HashSet<u64> = (0..8)
        .map(|_| Thread::start(get_ident).unwrap())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(idents.len(), 8, "every thread has its own ident");
    assert!(!idents.contains(&main));
}

#[test]
fn s07_native_id_is_the_kernel_thread_id() {
    let (ident, native) = Thread::start(|| (get_ident(), get_native_id()))
        .unwrap()
        .join()
        .unwrap();
    assert_ne!(native, get_native_id());
    assert_ne!(
        native,
        std::process::id(),
        "a spawned thread is not the main thread"
    );
    assert_ne!(ident, get_ident());
}

#[test]
fn s13_named_thread_reports_its_name() {
    let t = Thread::builder()
        .name("LoopThread")
        .start(|| {
            let me = current_thread();
            let std_name = std::thread::current().name().map(str::to_owned);
            (me.name().to_owned(), me.is_main(), std_name)
        })
        .unwrap();
    assert_eq!(t.name(), "LoopThread");
    let (name, is_main, std_name) = t.join().unwrap();
    assert_eq!(name, "LoopThread");
    assert!(!is_main);
    assert_eq!(std_name.as_deref(), Some("LoopThread"));
}

#[test]
fn s13_test_thread_is_not_main_thread() {
    // cargo's harness runs tests on threads named after the test.
    let me = current_thread();
    assert!(!is_main_thread());
    assert!(!me.is_main());
    assert_ne!(me.name(), "MainThread");
    assert_eq!(me.name(), std::thread::current().name().unwrap());
}

fn main_thread_name(_: ()) -> (String, bool) {
    let me = current_thread();
    (me.name().to_owned(), me.is_main())
}

#[test]
fn s13_main_thread_is_named_main_thread() {
    // A spawned child runs its target on its main thread, which std calls "main".
    let mut child = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(main_thread_name, ())
        .unwrap();
    assert_eq!(child.join().unwrap(), ("MainThread".to_string(), true));
}

#[test]
fn s13_unnamed_threads_get_stable_thread_n_names() {
    let a = Thread::start(|| current_thread().name().to_owned()).unwrap();
    let b = Thread::start(|| current_thread().name().to_owned()).unwrap();
    let (a_handle, b_handle) = (a.name().to_owned(), b.name().to_owned());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a, a_handle);
    assert_eq!(b, b_handle);
    assert_ne!(a, b);
    for name in [&a, &b] {
        let n = name.strip_prefix("Thread-").expect("Python's Thread-N");
        assert!(n.parse::<u64>().is_ok(), "{name}");
    }

    // A thread multiproc did not start, and std did not name, is named on first use.
    let (first, second) = std::thread::spawn(|| (current_thread(), current_thread()))
        .join()
        .unwrap();
    assert!(first.name().starts_with("Thread-"), "{first}");
    assert_eq!(first, second, "the name is decided once");
}

static BALANCE: Lock<i64> = Lock::new(0);

#[test]
fn s14_balance_under_lock_ends_at_zero() {
    fn run_thread(n: i64) {
        for _ in 0..100_000 {
            let mut balance = BALANCE.lock().unwrap();
            *balance += n;
            *balance -= n;
        }
    }
    let t1 = Thread::start(|| run_thread(5)).unwrap();
    let t2 = Thread::start(|| run_thread(8)).unwrap();
    t1.join().unwrap();
    t2.join().unwrap();
    assert_eq!(*BALANCE.lock().unwrap(), 0);
}

#[test]
fn s14_lock_is_exclusive_across_threads() {
    let counter = Arc::new(Lock::new(0_u64));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let counter = Arc::clone(&counter);
            Thread::start(move || {
                for _ in 0..10_000 {
                    let mut c = counter.lock().unwrap();
                    // Non-atomic read-modify-write: only exclusion keeps it exact.
                    let v = *c;
                    std::hint::black_box(());
                    *c = v + 1;
                }
            })
            .unwrap()
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*counter.lock().unwrap(), 40_000);
}

#[test]
fn s15_no_thread_sees_another_threads_local_value() {
    let school = Arc::new(Local::<String>::new());
    let start = |thread_name: &'static str, student: &'static str| {
        let school = Arc::clone(&school);
        Thread::builder()
            .name(thread_name)
            .start(move || {
                let before = school.get();
                school.set(student.to_string());
                (before, school.get(), current_thread().name().to_owned())
            })
            .unwrap()
    };
    let a = start("Thread-A", "ABC");
    let d = start("Thread-D", "DEF");
    assert_eq!(
        a.join().unwrap(),
        (None, Some("ABC".into()), "Thread-A".into())
    );
    assert_eq!(
        d.join().unwrap(),
        (None, Some("DEF".into()), "Thread-D".into())
    );
    assert_eq!(school.get(), None, "the main thread bound nothing");

    // Later threads reuse the finished threads' slots; they still start empty.
    for _ in 0..8 {
        let school = Arc::clone(&school);
        let seen = Thread::start(move || school.get()).unwrap().join().unwrap();
        assert_eq!(seen, None);
    }
}

#[test]
fn s15_local_set_take_with() {
    let local = Local::new();
    assert_eq!(local.set(1), None);
    assert_eq!(local.set(2), Some(1));
    local.with(|v| *v.as_mut().unwrap() += 10);
    assert_eq!(local.get(), Some(12));
    assert_eq!(local.take(), Some(12));
    assert_eq!(local.get(), None);
}

#[test]
fn s16_rlock_is_reentrant() {
    let lock = Arc::new(RLock::new(Cell::new(0)));
    let outer = lock.lock();
    outer.set(1);
    let inner = lock.lock();
    inner.set(inner.get() + 1);
    assert!(lock.try_lock().is_some(), "the holder may take it again");
    assert!(lock.is_held_by_current_thread());

    let other = {
        let lock = Arc::clone(&lock);
        Thread::start(move || lock.try_lock().is_some())
    };
    assert!(
        !other.unwrap().join().unwrap(),
        "no other thread while held"
    );

    drop(inner);
    assert!(lock.is_locked(), "still held once");
    drop(outer);
    assert!(!lock.is_locked(), "free after every guard is dropped");

    let other = {
        let lock = Arc::clone(&lock);
        Thread::start(move || lock.lock().get())
    };
    assert_eq!(other.unwrap().join().unwrap(), 2);
}

#[test]
fn s16_lock_reacquired_by_holder_is_reported() {
    let lock = Lock::new(0);
    let guard = lock.lock().unwrap();
    assert!(lock.is_held_by_current_thread());

    let err = lock.lock().unwrap_err();
    assert_eq!(err.thread().ident(), get_ident());
    assert!(err.to_string().contains("deadlock"), "{err}");
    assert!(lock.try_lock().is_none());
    let start = Instant::now();
    let again = lock.lock_timeout(Duration::from_secs(3600)).map(drop);
    assert!(matches!(again, Err(AcquireError::WouldDeadlock(_))));
    assert!(
        start.elapsed() < Duration::from_secs(3600),
        "reported at once"
    );

    drop(guard);
    assert!(!lock.is_locked());
    assert!(!lock.is_held_by_current_thread());
    *lock.lock().unwrap() += 1;
    assert_eq!(lock.into_inner(), 1);
}

#[test]
fn s16_lock_timeout_while_another_thread_holds_it() {
    let lock = Arc::new(Lock::new(()));
    let held = Arc::new(Barrier::new(2));
    let (release, released) = mpsc::channel::<()>();
    let holder = {
        let (lock, held) = (Arc::clone(&lock), Arc::clone(&held));
        Thread::start(move || {
            let _guard = lock.lock().unwrap();
            held.wait();
            let _ = released.recv();
        })
        .unwrap()
    };
    held.wait();
    assert!(lock.is_locked());
    assert!(!lock.is_held_by_current_thread());
    assert!(lock.try_lock().is_none());

    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    let err = lock.lock_timeout(timeout).unwrap_err();
    assert_eq!(err, AcquireError::Timeout(timeout));
    assert!(start.elapsed() >= timeout, "it waited the timeout");

    drop(release);
    holder.join().unwrap();
    assert!(lock.lock_timeout(timeout).is_ok());
}

#[test]
fn s16_rlock_timeout_while_another_thread_holds_it() {
    let lock = Arc::new(RLock::new(()));
    let held = Arc::new(Barrier::new(2));
    let (release, released) = mpsc::channel::<()>();
    let holder = {
        let (lock, held) = (Arc::clone(&lock), Arc::clone(&held));
        Thread::start(move || {
            let _guard = lock.lock();
            held.wait();
            let _ = released.recv();
        })
        .unwrap()
    };
    held.wait();
    let timeout = Duration::from_millis(20);
    assert_eq!(
        lock.lock_timeout(timeout).unwrap_err(),
        AcquireError::Timeout(timeout)
    );
    drop(release);
    holder.join().unwrap();
    assert!(lock.lock_timeout(timeout).is_ok());
}

struct DownloadTask {
    filename: String,
}

impl Run for DownloadTask {
    type Output = (String, String);
    fn run(self) -> (String, String) {
        (self.filename, current_thread().name().to_owned())
    }
}

#[test]
fn s20_both_thread_styles_return_values() {
    let by_target = Thread::start(|| "Python从入门到住院.pdf".len()).unwrap();
    assert_eq!(by_target.join().unwrap(), "Python从入门到住院.pdf".len());

    let by_run = Thread::builder()
        .name("DownloadTask")
        .start_run(DownloadTask {
            filename: "Peking Hot.avi".into(),
        })
        .unwrap();
    assert_eq!(
        by_run.join().unwrap(),
        ("Peking Hot.avi".into(), "DownloadTask".into())
    );
}

#[test]
fn s20_panicking_thread_is_a_typed_join_error() {
    let t = Thread::builder()
        .name("crasher")
        .start(|| -> u32 { panic!("boom {}", std::hint::black_box(7)) })
        .unwrap();
    let ident = t.ident();
    let err = t.join().unwrap_err();
    assert_eq!(err.message(), "boom 7");
    assert_eq!(err.thread_name(), "crasher");
    assert_eq!(err.thread_ident(), ident);
    assert_eq!(err.to_string(), "thread 'crasher' panicked: boom 7");
    let payload = err.into_panic();
    assert_eq!(payload.downcast_ref::<String>().unwrap(), "boom 7");
    // The process, and this thread, carry on.
    assert_eq!(Thread::start(|| 1).unwrap().join().unwrap(), 1);
}

#[test]
fn s20_is_alive_and_wait_timeout_follow_the_target() {
    let (tx, rx) = mpsc::channel::<u32>();
    let t = Thread::builder()
        .daemon(true)
        .start(move || rx.recv().unwrap() * 2)
        .unwrap();
    assert!(t.is_daemon());
    assert!(t.is_alive());
    assert!(!t.wait_timeout(Duration::from_millis(10)));
    tx.send(21).unwrap();
    assert!(t.wait_timeout(Duration::from_secs(60)));
    assert!(!t.is_alive());
    assert_eq!(t.join().unwrap(), 42);
}

#[test]
fn s20_a_name_with_a_nul_byte_is_rejected() {
    let err = Thread::builder()
        .name("bad\0name")
        .start(|| ())
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
