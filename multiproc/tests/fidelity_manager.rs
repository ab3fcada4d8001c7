//! Managers, Python fidelity part 2 (issue 16): the `Array`, `JoinableQueue`, `RLock`,
//! `Semaphore`, `BoundedSemaphore`, `Condition` and `Barrier` proxies; the manager's
//! initializer; registered types with named methods, remote errors and iterator
//! proxies; the live list iterator; reference counting of proxies; the server's exit
//! status. CPython's `_TestManagerRestart`, `_TestMyManager`, `_TestRemoteManager`,
//! `test_list_iter` and the `_number_of_objects` checks of its manager tests are the
//! anchors. Every test runs under every start method.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use multiproc::StartMethod;
use multiproc::manager::{
    ArrayProxy, BarrierProxy, ConditionProxy, EventProxy, JoinableQueueProxy, ListProxy, Manager,
    ManagerError, Methods, RLockProxy, RemoteError, SemaphoreProxy, Shared, SharedProxy,
    ValueProxy,
};
use multiproc::testing::LeakCheck;
use serde::{Deserialize, Serialize};

use common::{PROMPT, rss_of, start, wait_until};

multiproc::test_support!();

fn manager(method: StartMethod) -> Manager {
    multiproc::process::set_fork_warning(false);
    Manager::builder()
        .start_method(method)
        .start()
        .expect("start the manager")
}

/// Waits until the server holds `n` objects (a proxy dropped in a child gives its
/// reference back from there, just before the child ends).
fn objects_become(m: &Manager, n: usize) {
    wait_until(&format!("{n} objects in the server"), || {
        m.number_of_objects().unwrap() == n
    });
}

// ---- Array --------------------------------------------------------------------------

fn square_array(a: ArrayProxy<i64>) -> Result<(), String> {
    for i in 0..a.len().map_err(|e| e.to_string())? {
        a.set(i, (i * i) as i64).map_err(|e| e.to_string())?;
    }
    match a.set(5, 0) {
        Err(ManagerError::IndexOutOfRange { index: 5, len: 5 }) => Ok(()),
        other => Err(format!("set past the end: {other:?}")),
    }
}

#[test]
fn array_proxy_is_changed_in_place_by_a_child() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let a = m.array([0i64; 5]).unwrap();
        start(method, square_array, a.clone())
            .join_timeout(PROMPT)
            .unwrap()
            .unwrap();
        assert_eq!(a.to_vec().unwrap(), [0, 1, 4, 9, 16], "{method}");
        assert_eq!(a.len().unwrap(), 5, "{method}: an array does not grow");
        assert_eq!(
            a.iter().collect::<Result<Vec<_>, _>>().unwrap(),
            [0, 1, 4, 9, 16]
        );
    }
    leaks.assert_clean();
}

// ---- JoinableQueue ------------------------------------------------------------------

fn consume_all((q, n): (JoinableQueueProxy<u32>, u32)) -> u32 {
    let mut sum = 0;
    for _ in 0..n {
        sum += q.get().unwrap();
        q.task_done().unwrap();
    }
    sum
}

#[test]
fn joinable_queue_join_returns_when_every_task_is_done() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let q = m.joinable_queue::<u32>(0).unwrap();
        for i in 1..=10 {
            q.put(i).unwrap();
        }
        assert_eq!(q.unfinished_tasks().unwrap(), 10);
        // Nobody takes them yet: a join must time out.
        assert!(matches!(
            q.join_timeout(Duration::from_millis(20)),
            Err(ManagerError::Timeout)
        ));
        let mut child = start(method, consume_all, (q.clone(), 10));
        q.join_timeout(PROMPT).unwrap();
        assert_eq!(q.unfinished_tasks().unwrap(), 0, "{method}");
        assert_eq!(child.join_timeout(PROMPT).unwrap(), 55, "{method}");
        assert!(
            matches!(q.task_done(), Err(ManagerError::TooManyTaskDone)),
            "{method}"
        );
        q.join().unwrap();
    }
    leaks.assert_clean();
}

// ---- RLock --------------------------------------------------------------------------

/// What a child sees of an rlock the parent holds: whether it could take it, and what
/// its release said.
fn poke_rlock(r: RLockProxy) -> (bool, String) {
    let taken = r.try_lock().unwrap().is_some();
    let release = format!("{:?}", r.release());
    (taken, release)
}

fn die_holding_rlock((r, held): (RLockProxy, EventProxy)) {
    assert!(r.acquire(None).unwrap());
    assert!(r.acquire(None).unwrap()); // twice: reentrant
    held.set().unwrap();
    multiproc::process::exit_now(0); // no release
}

#[test]
fn rlock_is_reentrant_owned_by_one_thread_and_released_when_its_holder_dies() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let r = m.rlock().unwrap();
        let outer = r.lock().unwrap();
        let inner = r.lock().unwrap();
        assert!(!outer.previous_owner_died());
        // Another process cannot take it, nor release it.
        let (taken, release) = start(method, poke_rlock, r.clone())
            .join_timeout(PROMPT)
            .unwrap();
        assert!(!taken, "{method}");
        assert_eq!(release, "Err(NotOwner)", "{method}");
        // Another thread of this process cannot either.
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(r.try_lock().unwrap().is_none());
                assert!(matches!(r.release(), Err(ManagerError::NotOwner)));
            });
        });
        drop(inner);
        // Still held once.
        let (taken, _) = start(method, poke_rlock, r.clone())
            .join_timeout(PROMPT)
            .unwrap();
        assert!(!taken, "{method}");
        drop(outer);
        assert!(matches!(r.release(), Err(ManagerError::NotOwner)));

        // A holder that dies: released, and the next acquirer is told.
        let held = m.event().unwrap();
        let mut child = start(method, die_holding_rlock, (r.clone(), held.clone()));
        assert!(held.wait_timeout(PROMPT).unwrap());
        child.join_timeout(PROMPT).unwrap();
        let g = r.lock_timeout(PROMPT).unwrap();
        assert!(g.previous_owner_died(), "{method}");
        drop(g);
        let g = r.lock().unwrap();
        assert!(!g.previous_owner_died(), "{method}: told once");
    }
    leaks.assert_clean();
}

// ---- Semaphore, BoundedSemaphore ----------------------------------------------------

fn release_times((s, n): (SemaphoreProxy, u32)) -> Result<(), String> {
    for _ in 0..n {
        s.release().map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

#[test]
fn semaphores_count_permits_across_processes_and_a_bounded_one_refuses_extra_releases() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let s = m.semaphore(0).unwrap();
        assert!(!s.try_acquire().unwrap());
        let mut child = start(method, release_times, (s.clone(), 3));
        for _ in 0..3 {
            assert!(s.acquire(Some(PROMPT)).unwrap(), "{method}");
        }
        child.join_timeout(PROMPT).unwrap().unwrap();
        assert!(!s.try_acquire().unwrap(), "{method}");
        assert!(!s.acquire(Some(Duration::from_millis(10))).unwrap());
        // A plain semaphore may grow past its initial value (Python's does).
        s.release().unwrap();
        assert_eq!(s.value().unwrap(), 1);

        let b = m.bounded_semaphore(2).unwrap();
        {
            let _p1 = b.permit().unwrap();
            let _p2 = b.permit().unwrap();
            assert_eq!(b.value().unwrap(), 0);
            assert!(!b.try_acquire().unwrap());
        }
        assert_eq!(b.value().unwrap(), 2);
        assert!(matches!(b.release(), Err(ManagerError::TooManyReleases)));
        let mut child = start(method, release_times, (b.clone(), 1));
        assert_eq!(
            child.join_timeout(PROMPT).unwrap(),
            Err("TooManyReleases".into()),
            "{method}"
        );
        assert_eq!(b.value().unwrap(), 2);
    }
    leaks.assert_clean();
}

// ---- Condition ----------------------------------------------------------------------

fn set_and_notify((c, ready): (ConditionProxy, ValueProxy<u32>)) -> usize {
    let _g = c.lock().unwrap();
    ready.set(1).unwrap();
    c.notify_all().unwrap()
}

fn wait_notified((c, waiting): (ConditionProxy, EventProxy)) -> bool {
    let _g = c.lock().unwrap();
    waiting.set().unwrap();
    c.wait(Some(PROMPT)).unwrap()
}

#[test]
fn condition_waits_and_notifies_across_processes() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let c = m.condition().unwrap();
        // Without the lock: Python's RuntimeError.
        assert!(matches!(c.notify(1), Err(ManagerError::NotOwner)));
        assert!(matches!(c.wait(None), Err(ManagerError::NotOwner)));

        // The parent waits (holding the lock twice); the child can take the lock only
        // because the wait released it, and the parent holds it twice again after.
        let ready = m.value(0u32).unwrap();
        let outer = c.lock().unwrap();
        let inner = c.lock().unwrap();
        let mut child = start(method, set_and_notify, (c.clone(), ready.clone()));
        assert!(
            c.wait_for(|| ready.get().unwrap() == 1, Some(PROMPT))
                .unwrap(),
            "{method}"
        );
        assert_eq!(
            child.join_timeout(PROMPT).unwrap(),
            1,
            "{method}: one waiter woken"
        );
        drop(inner);
        drop(outer);
        assert!(matches!(c.release(), Err(ManagerError::NotOwner)));

        // A wait that nobody notifies times out, holding the lock again after.
        let g = c.lock().unwrap();
        assert!(!c.wait(Some(Duration::from_millis(20))).unwrap());
        drop(g);

        // The child waits; the parent notifies it.
        let waiting = m.event().unwrap();
        let mut child = start(method, wait_notified, (c.clone(), waiting.clone()));
        assert!(waiting.wait_timeout(PROMPT).unwrap());
        let woken = loop {
            // The child set the event before its wait began: notify until it is in.
            let _g = c.lock().unwrap();
            let n = c.notify(1).unwrap();
            if n == 1 {
                break n;
            }
        };
        assert_eq!(woken, 1);
        assert!(child.join_timeout(PROMPT).unwrap(), "{method}: notified");
    }
    leaks.assert_clean();
}

// ---- Barrier ------------------------------------------------------------------------

fn barrier_party(b: BarrierProxy) -> Result<u32, String> {
    b.wait_timeout(PROMPT).map_err(|e| format!("{e:?}"))
}

#[test]
fn barrier_passes_parties_breaks_on_abort_timeout_and_a_dead_party() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let b = m.barrier(3).unwrap();
        assert_eq!(b.parties().unwrap(), 3);
        let mut c1 = start(method, barrier_party, b.clone());
        let mut c2 = start(method, barrier_party, b.clone());
        let mine = b.wait_timeout(PROMPT).unwrap();
        let mut indices = vec![
            mine,
            c1.join_timeout(PROMPT).unwrap().unwrap(),
            c2.join_timeout(PROMPT).unwrap().unwrap(),
        ];
        indices.sort();
        assert_eq!(indices, [0, 1, 2], "{method}");
        assert!(!b.broken().unwrap());

        // A party that times out breaks it for the others (Python's wait(timeout)).
        let mut c1 = start(method, barrier_party, b.clone());
        wait_until("the child to wait", || b.n_waiting().unwrap() == 1);
        assert!(matches!(
            b.wait_timeout(Duration::from_millis(20)),
            Err(ManagerError::BrokenBarrier)
        ));
        assert_eq!(
            c1.join_timeout(PROMPT).unwrap(),
            Err("BrokenBarrier".into()),
            "{method}"
        );
        assert!(b.broken().unwrap());
        assert!(matches!(b.wait(), Err(ManagerError::BrokenBarrier)));

        // Reset makes it usable; abort breaks it for a waiter.
        b.reset().unwrap();
        assert!(!b.broken().unwrap());
        let mut c1 = start(method, barrier_party, b.clone());
        wait_until("the child to wait", || b.n_waiting().unwrap() == 1);
        b.abort().unwrap();
        assert_eq!(
            c1.join_timeout(PROMPT).unwrap(),
            Err("BrokenBarrier".into())
        );
        b.reset().unwrap();

        // A waiting party that dies breaks it (Python's would wait for ever).
        let mut c1 = start(method, barrier_party, b.clone());
        wait_until("the child to wait", || b.n_waiting().unwrap() == 1);
        c1.kill().unwrap();
        let _ = c1.join_timeout(PROMPT);
        // The server notices the death when its wait slice (100 ms at most) ends.
        wait_until("the barrier to break", || b.broken().unwrap());
        let mut c2 = start(method, barrier_party, b.clone());
        assert!(
            matches!(b.wait_timeout(PROMPT), Err(ManagerError::BrokenBarrier)),
            "{method}"
        );
        assert_eq!(
            c2.join_timeout(PROMPT).unwrap(),
            Err("BrokenBarrier".into())
        );
    }
    leaks.assert_clean();
}

// ---- initializer --------------------------------------------------------------------

/// Set by the initializer in the server process.
static LEVEL: AtomicU32 = AtomicU32::new(0);

fn set_level(level: u32) {
    assert!(level < 10, "level {level} is too high");
    LEVEL.store(level, Ordering::SeqCst);
}

/// A registered type that reports what the initializer set in its process.
#[derive(Serialize, Deserialize)]
struct LevelProbe;

impl Shared for LevelProbe {
    type Call = ();
    type Reply = u32;
    fn call(&mut self, (): ()) -> u32 {
        LEVEL.load(Ordering::SeqCst)
    }
}

#[test]
fn initializer_runs_in_the_server_before_it_serves_and_its_failure_is_typed() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        multiproc::process::set_fork_warning(false);
        let mut m = Manager::builder()
            .start_method(method)
            .initializer(set_level, 7)
            .start()
            .unwrap();
        let probe = m.create(LevelProbe).unwrap();
        assert_eq!(probe.call(()).unwrap(), 7, "{method}");
        assert_eq!(
            LEVEL.load(Ordering::SeqCst),
            0,
            "ran in the server, not here"
        );
        drop(probe);
        m.shutdown().unwrap();
        assert_eq!(m.exit_status().unwrap().code(), Some(0), "{method}");

        match Manager::builder()
            .start_method(method)
            .initializer(set_level, 12)
            .start()
        {
            Err(ManagerError::Initializer(message)) => {
                assert!(
                    message.contains("level 12 is too high"),
                    "{method}: {message}"
                );
            }
            other => panic!("{method}: expected Initializer, got {other:?}"),
        }
    }
    leaks.assert_clean();
}

// ---- registered types: named methods, remote errors, iterators ----------------------

#[derive(Serialize, Deserialize)]
struct Catalogue {
    items: Vec<String>,
}

impl Shared for Catalogue {
    type Call = ();
    type Reply = usize;
    fn call(&mut self, (): ()) -> usize {
        self.items.len()
    }

    fn methods(m: &mut Methods<Self>) {
        m.method("add", |c: &mut Catalogue, item: String| {
            c.items.push(item);
            c.items.len()
        });
        m.method("len", |c: &mut Catalogue, ()| c.items.len());
        m.fallible("get", |c: &mut Catalogue, i: usize| {
            c.items
                .get(i)
                .cloned()
                .ok_or_else(|| RemoteError::new("IndexError", format!("no item {i}")))
        });
        m.fallible("parse", |_: &mut Catalogue, text: String| {
            text.parse::<i64>()
        });
        m.method("boom", |_: &mut Catalogue, ()| -> u8 {
            panic!("boom in the server")
        });
        m.iter("items", |c: &mut Catalogue, ()| c.items.clone());
        m.iter("upper", |c: &mut Catalogue, from: usize| {
            let items = c.items.clone();
            (from..items.len()).map(move |i| items[i].to_uppercase())
        });
        m.iter("bad_iter", |_: &mut Catalogue, ()| {
            (0..3).map(|i| {
                if i == 1 {
                    panic!("iterator failed at {i}")
                } else {
                    i
                }
            })
        });
    }
}

/// Calls the catalogue by name from a child; what it saw, as text, in order.
fn use_catalogue(c: SharedProxy<Catalogue>) -> Vec<String> {
    let mut seen = Vec::new();
    seen.push(format!("{}", c.method::<usize>("add", &"child").unwrap()));
    seen.push(format!("{:?}", c.method::<i64>("parse", &"x1")));
    let items: Vec<String> = c.iter("items", &()).unwrap().map(Result::unwrap).collect();
    seen.push(items.join(","));
    seen
}

#[test]
fn registered_type_exposes_named_methods_remote_errors_and_iterators() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let c = m
            .create(Catalogue {
                items: vec!["a".into()],
            })
            .unwrap();
        assert_eq!(
            c.exposed().unwrap(),
            [
                "add", "len", "get", "parse", "boom", "items", "upper", "bad_iter"
            ]
        );
        assert_eq!(c.method::<usize>("add", &"b").unwrap(), 2);
        assert_eq!(c.method::<usize>("len", &()).unwrap(), 2);
        assert_eq!(c.method::<String>("get", &1usize).unwrap(), "b");
        match c.method::<String>("get", &5usize) {
            Err(ManagerError::Remote(e)) => {
                assert_eq!(
                    (e.kind.as_str(), e.message.as_str()),
                    ("IndexError", "no item 5")
                );
            }
            other => panic!("{method}: {other:?}"),
        }
        let parse_error = "x".parse::<i64>().unwrap_err();
        match c.method::<i64>("parse", &"x") {
            Err(ManagerError::Remote(e)) => {
                assert_eq!(e.kind, "ParseIntError");
                assert_eq!(e.message, parse_error.to_string());
            }
            other => panic!("{method}: {other:?}"),
        }
        assert_eq!(c.method::<i64>("parse", &"-42").unwrap(), -42);
        match c.method::<u8>("boom", &()) {
            Err(ManagerError::Remote(e)) => {
                assert_eq!(
                    (e.kind.as_str(), e.message.as_str()),
                    ("Panic", "boom in the server")
                );
            }
            other => panic!("{method}: {other:?}"),
        }
        assert!(matches!(
            c.method::<u8>("nope", &()),
            Err(ManagerError::NoSuchMethod(name)) if name == "nope"
        ));
        // The server carries on, and the object is as the methods left it.
        assert_eq!(c.call(()).unwrap(), 2);

        // An iterator proxy: a new object in the server, freed with its proxy.
        assert_eq!(m.number_of_objects().unwrap(), 1);
        let upper = c.iter::<String>("upper", &1usize).unwrap();
        assert_eq!(m.number_of_objects().unwrap(), 2);
        assert_eq!(
            upper.collect::<Result<Vec<_>, _>>().unwrap(),
            ["B"],
            "{method}"
        );
        objects_become(&m, 1);
        let mut bad = c.iter::<i32>("bad_iter", &()).unwrap();
        assert_eq!(bad.next().unwrap().unwrap(), 0);
        match bad.next() {
            Some(Err(ManagerError::Remote(e))) => {
                assert_eq!(
                    (e.kind.as_str(), e.message.as_str()),
                    ("Panic", "iterator failed at 1")
                );
            }
            other => panic!("{method}: {other:?}"),
        }
        drop(bad);

        // By name from a child, under every start method.
        let seen = start(method, use_catalogue, c.clone())
            .join_timeout(PROMPT)
            .unwrap();
        assert_eq!(
            seen,
            [
                "3".to_string(),
                "Err(Remote(RemoteError { kind: \"ParseIntError\", message: \"invalid digit found in string\" }))".into(),
                "a,b,child".into(),
            ],
            "{method}"
        );
        drop(c);
        objects_become(&m, 0);
    }
    leaks.assert_clean();
}

// ---- the live list iterator ---------------------------------------------------------

fn append_two(l: ListProxy<u32>) {
    l.push(10).unwrap();
    l.push(11).unwrap();
}

#[test]
fn list_iterator_reads_the_live_list() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let l = m.list([1u32, 2]).unwrap();
        let mut it = l.iter();
        assert_eq!(it.next().unwrap().unwrap(), 1);
        // Another process appends while the iterator is half-way: it sees the items.
        start(method, append_two, l.clone())
            .join_timeout(PROMPT)
            .unwrap();
        // And an item removed before the cursor shifts the rest under it (Python's).
        l.remove(&1).unwrap();
        let rest: Vec<u32> = it.map(Result::unwrap).collect();
        assert_eq!(rest, [10, 11], "{method}");
        let all: Vec<u32> = (&l).into_iter().map(Result::unwrap).collect();
        assert_eq!(all, [2, 10, 11]);
    }
    leaks.assert_clean();
}

// ---- reference counting -------------------------------------------------------------

#[test]
fn dropped_proxies_free_their_objects_and_server_memory_stays_flat() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let server = m.pid().unwrap().to_string();
        let payload = vec![7u8; 1024];
        let churn = |n: usize| {
            for i in 0..n {
                let l = m.list([payload.clone()]).unwrap();
                if i % 2 == 0 {
                    let again = l.clone(); // clones share one reference
                    drop(l);
                    assert_eq!(again.len().unwrap(), 1);
                }
            }
        };
        churn(10_000);
        let before = rss_of(&server);
        churn(100_000);
        let after = rss_of(&server);
        assert_eq!(m.number_of_objects().unwrap(), 0, "{method}");
        // 100 000 lists of 1 KiB that leaked would be over 100 MB.
        assert!(
            after < before + (8 << 20),
            "{method}: the server grew from {before} to {after} bytes"
        );
    }
    leaks.assert_clean();
}

fn read_when_told((q, go): (multiproc::Queue<ListProxy<u32>>, EventProxy)) -> Vec<u32> {
    let l = q.get().unwrap();
    assert!(go.wait_timeout(PROMPT).unwrap());
    l.to_vec().unwrap()
}

fn uses_and_drops(l: ListProxy<u32>) -> usize {
    l.len().unwrap()
}

#[test]
fn a_proxy_in_flight_or_in_a_child_keeps_its_object() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        // Sent through a queue, then dropped by the sender before the receiver reads
        // it: the reference taken when it was serialised keeps the list.
        let q = multiproc::Queue::new().unwrap();
        let go = m.event().unwrap();
        let mut child = start(method, read_when_told, (q.clone(), go.clone()));
        let l = m.list([1u32, 2, 3]).unwrap();
        q.put(l).unwrap(); // moved: the sender has no proxy left
        wait_until("the child to hold the list", || q.empty());
        assert_eq!(
            m.number_of_objects().unwrap(),
            2,
            "{method}: the event and the list"
        );
        go.set().unwrap();
        assert_eq!(child.join_timeout(PROMPT).unwrap(), [1, 2, 3], "{method}");
        objects_become(&m, 1); // the receiver's drop freed the list

        // Serialised and never received: still alive; a second receiver of the same
        // bytes is not counted twice (the sender took one reference per send).
        let l = m.list([5u32]).unwrap();
        let bytes = multiproc::codec::encode(&l).unwrap();
        drop(l);
        let back: ListProxy<u32> = multiproc::codec::decode(&bytes).unwrap();
        assert_eq!(back.to_vec().unwrap(), [5]);
        drop(back);
        objects_become(&m, 1);
        let stale: ListProxy<u32> = multiproc::codec::decode(&bytes).unwrap();
        assert!(matches!(stale.len(), Err(ManagerError::NoSuchObject(_))));

        // A child given a proxy (moved under fork, serialised otherwise) does not take
        // the parent's reference with it.
        let l = m.list([1u32, 2]).unwrap();
        for _ in 0..3 {
            assert_eq!(
                start(method, uses_and_drops, l.clone())
                    .join_timeout(PROMPT)
                    .unwrap(),
                2
            );
        }
        objects_become(&m, 2);
        assert_eq!(l.len().unwrap(), 2, "{method}");
        drop(l);
        drop(go);
        objects_become(&m, 0);

        // Named objects live as long as the server.
        let named = m.named("jobs").queue::<u32>().unwrap();
        named.put(1).unwrap();
        drop(named);
        assert_eq!(m.number_of_objects().unwrap(), 1);
        assert_eq!(m.named("jobs").queue::<u32>().unwrap().get().unwrap(), 1);
    }
    leaks.assert_clean();
}

fn gate_then_use((l, go): (ListProxy<u32>, EventProxy)) -> usize {
    assert!(go.wait_timeout(PROMPT).unwrap());
    l.len().unwrap()
}

#[test]
fn a_proxy_moved_into_a_child_is_the_childs_to_give_back() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let go = m.event().unwrap();
        // The parent keeps no proxy of the list: under `fork` the argument is moved
        // into the child's job (not serialised), and the parent drops the job right
        // after the fork, before the child has used the list.
        let mut child = start(
            method,
            gate_then_use,
            (m.list([1u32, 2, 3]).unwrap(), go.clone()),
        );
        assert_eq!(
            m.number_of_objects().unwrap(),
            2,
            "{method}: the list lives"
        );
        go.set().unwrap();
        assert_eq!(child.join_timeout(PROMPT).unwrap(), 3, "{method}");
        // The child's drop gave the list's reference back.
        objects_become(&m, 1);
    }
    leaks.assert_clean();
}

fn use_then_die((q, used): (multiproc::Queue<ListProxy<u32>>, EventProxy)) {
    let l = q.get().unwrap();
    assert_eq!(l.len().unwrap(), 2);
    used.set().unwrap();
    // No destructor runs: the proxy is never dropped here.
    multiproc::process::exit_now(0);
}

#[test]
fn a_received_proxy_goes_with_its_killed_receiver() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let m = manager(method);
        let used = m.event().unwrap();
        let q = multiproc::Queue::new().unwrap();
        let mut child = start(method, use_then_die, (q.clone(), used.clone()));
        q.put(m.list([1u32, 2]).unwrap()).unwrap();
        assert!(used.wait_timeout(PROMPT).unwrap());
        child.join_timeout(PROMPT).unwrap();
        // The receiver's session ended with it, and the reference it had made its own
        // with it (Python's server keeps such an object until it shuts down).
        objects_become(&m, 1);
    }
    leaks.assert_clean();
}

// ---- exit status --------------------------------------------------------------------

#[test]
fn the_servers_exit_status_is_readable_after_shutdown() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let mut m = manager(method);
        assert!(m.exit_status().is_none());
        let l = m.list([1]).unwrap();
        m.shutdown().unwrap();
        let status = m.exit_status().unwrap();
        assert_eq!(
            (status.code(), status.signal()),
            (Some(0), None),
            "{method}"
        );
        assert!(matches!(l.len(), Err(ManagerError::Disconnected)));
        drop(l); // the server is gone: no attempt to reach it

        // A server that was killed says so.
        let mut m = manager(method);
        let pid = m.pid().unwrap();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        common::wait_gone(pid, PROMPT);
        let _ = m.shutdown();
        assert_eq!(m.exit_status().unwrap().signal(), Some(9), "{method}");

        // A client's manager owns no server.
        let m = Manager::serve("127.0.0.1:0", b"k").unwrap();
        let multiproc::manager::Address::Tcp(addr) = m.address().clone() else {
            unreachable!()
        };
        let mut client = Manager::connect(addr, b"k").unwrap();
        client.shutdown().unwrap();
        assert!(client.exit_status().is_none());
    }
    leaks.assert_clean();
}

// ---- restart (CPython's _TestManagerRestart.test_rapid_restart) ----------------------

#[test]
fn a_manager_restarts_at_once_on_the_same_address() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        multiproc::process::set_fork_warning(false);
        let tcp = Manager::builder()
            .start_method(method)
            .address(multiproc::manager::Address::Tcp(
                "127.0.0.1:0".parse().unwrap(),
            ))
            .start()
            .unwrap();
        let abstract_name = format!("multiproc-restart-{}-{method}", std::process::id());
        let addresses = [
            tcp.address().clone(),
            multiproc::manager::Address::Abstract(abstract_name),
        ];
        drop(tcp);
        for address in addresses {
            for round in 0..3 {
                let mut m = Manager::builder()
                    .start_method(method)
                    .address(address.clone())
                    .start()
                    .unwrap_or_else(|e| panic!("{method} {address} round {round}: {e}"));
                let q = m.named("q").queue::<u32>().unwrap();
                assert!(q.empty().unwrap(), "{method}: a new server, a new queue");
                q.put(round).unwrap();
                m.shutdown().unwrap();
                assert_eq!(m.exit_status().unwrap().code(), Some(0));
            }
        }
    }
    leaks.assert_clean();
}
