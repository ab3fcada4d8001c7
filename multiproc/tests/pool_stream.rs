//! Streaming inputs (issue 13): the maps of the pool and of both executors read their
//! input lazily, a bounded number of items ahead of what was taken. An endless input
//! streams, dropping the iterator stops reading it, memory stays flat over ten million
//! items, and an input that panics at item `k` gives the `k` results before it, then
//! `TaskError::Input` with its message, then the end. Every test that starts processes
//! runs under each start method and checks for leaks.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use multiproc::executor::{Executor, ProcessPoolExecutor, TaskError, ThreadPoolExecutor};
use multiproc::pool::PoolError;
use multiproc::shared::Atomic;
use multiproc::sync::Event;
use multiproc::testing::LeakCheck;
use multiproc::{StartMethod, process::set_fork_warning};

mod common;
use common::{PROMPT, wait_until};
use common::{executor, pool};

multiproc::test_support!();

/// An input read this far was read without bound (the maps used to collect it all).
const READ_WITHOUT_BOUND: u64 = 5_000_000;
/// What a map may read ahead of the results taken: the pool's read-ahead (2^16 items
/// at most) with room to spare, far below `READ_WITHOUT_BOUND`.
const READ_AHEAD_BOUND: u64 = 1 << 17;

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn ident(x: u64) -> u64 {
    x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// `0, 1, 2, …` for ever, counting in `reads` the items read (an `Rc`: the input need
/// not be `Send`). Panics past `READ_WITHOUT_BOUND`, so that a map that reads its whole
/// input fails here instead of growing without end.
fn endless(reads: &Rc<Cell<u64>>) -> impl Iterator<Item = u64> + '_ {
    (0u64..).inspect(move |_| {
        reads.set(reads.get() + 1);
        assert!(
            reads.get() < READ_WITHOUT_BOUND,
            "the map read its endless input without bound"
        );
    })
}

/// `0..n`, but reading item `k` panics with "the input broke at k".
fn breaks_at(k: u64, n: u64) -> impl Iterator<Item = u64> {
    (0..n).inspect(move |&i| {
        if i == k {
            panic!("the input broke at {i}");
        }
    })
}

/// Whether `e` is the input's panic at item `k`.
fn is_input_panic(e: &TaskError, k: u64) -> bool {
    matches!(e, TaskError::Input { message } if *message == format!("the input broke at {k}"))
}

/// The iteration's results up to the end: `k` values (in order, unless `ordered` is
/// false), then the input's panic at `k`, then nothing, twice.
fn check_ends_with_input_panic(
    what: &str,
    mut it: impl Iterator<Item = Result<u64, TaskError>>,
    k: u64,
    ordered: bool,
) {
    let mut values = Vec::new();
    for _ in 0..k {
        match it.next() {
            Some(Ok(v)) => values.push(v),
            other => panic!("{what}: {other:?} before item {k}"),
        }
    }
    if !ordered {
        values.sort_unstable();
    }
    let expected: Vec<u64> = (0..k).map(square).collect();
    assert_eq!(values, expected, "{what}");
    match it.next() {
        Some(Err(e)) if is_input_panic(&e, k) => {}
        other => panic!("{what}: {other:?} where the input's panic was due"),
    }
    assert!(it.next().is_none(), "{what}: the map ends after the error");
    assert!(it.next().is_none(), "{what}: and stays ended");
}

/// `pool.imap(f, 0u64..)`: the results stream; dropping the iterator stops reading the
/// input and leaves a pool that works. It used to collect the endless input (it hung).
#[test]
fn endless_input_streams_and_dropping_the_iterator_stops_reading_it() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        let reads = Rc::new(Cell::new(0));
        let got: Vec<u64> = p
            .imap(square, endless(&reads))
            .unwrap()
            .take(1000)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, (0..1000).map(square).collect::<Vec<_>>(), "{method}");
        assert!(
            reads.get() <= 1000 + READ_AHEAD_BOUND,
            "{method}: read {} items for 1000 results",
            reads.get()
        );

        reads.set(0);
        let mut it = p.imap_unordered(square, endless(&reads)).unwrap();
        assert_eq!(it.total(), None, "{method}: an endless input has no total");
        assert_eq!(it.size_hint().1, None, "{method}");
        let got: HashSet<u64> = it.by_ref().take(1000).map(Result::unwrap).collect();
        assert_eq!(got.len(), 1000, "{method}: no result twice");
        let read = reads.get();
        assert!(read <= 1000 + READ_AHEAD_BOUND, "{method}: read {read}");
        assert!(
            got.iter().all(|v| (0..read).map(square).any(|s| s == *v)),
            "{method}: every result is of an item read"
        );
        drop(it);
        assert_eq!(
            reads.get(),
            read,
            "{method}: dropped, the input is not read"
        );

        // One item per task: the same, and the pool is not left busy with the rest.
        reads.set(0);
        let got: Vec<u64> = p
            .with_chunksize(1)
            .imap(square, endless(&reads))
            .unwrap()
            .take(300)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, (0..300).map(square).collect::<Vec<_>>(), "{method}");
        assert!(reads.get() <= 300 + READ_AHEAD_BOUND, "{method}");

        assert_eq!(
            p.map(square, 0..10).unwrap(),
            (0..10).map(square).collect::<Vec<_>>(),
            "{method}: the pool goes on"
        );
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

/// The executors' `map` (Python's `Executor.map`; 3.14's `buffersize`) streams an
/// endless input too, through the methods and through the `Executor` trait.
#[test]
fn executor_maps_stream_an_endless_input() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = executor(method, 2);
        let reads = Rc::new(Cell::new(0));
        let got: Vec<u64> = ex
            .map(square, endless(&reads))
            .unwrap()
            .take(200)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, (0..200).map(square).collect::<Vec<_>>(), "{method}");
        assert!(reads.get() <= 200 + READ_AHEAD_BOUND, "{method}");
        reads.set(0);
        let got: Vec<u64> = Executor::map(&ex, square, endless(&reads))
            .unwrap()
            .take(200)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, (0..200).map(square).collect::<Vec<_>>(), "{method}");
        ex.shutdown(true, false);
    }
    check.assert_clean();

    let ex = ThreadPoolExecutor::new(3);
    let reads = Rc::new(Cell::new(0));
    let got: Vec<u64> = ex
        .map(square, endless(&reads))
        .unwrap()
        .take(100)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..100).map(square).collect::<Vec<_>>());
    // Python's `buffersize`: at most 2 × max_workers submitted and not yet yielded.
    assert!(reads.get() <= 100 + 6, "read {}", reads.get());
    let got: Vec<u64> = Executor::map(&ex, square, endless(&reads))
        .unwrap()
        .take(100)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..100).map(square).collect::<Vec<_>>());
}

/// The resident set size of this process, in bytes (`VmRSS` of /proc/self/status).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Streams `0..n` through `it`, checking the sum, and returns the highest resident set
/// size seen on the way.
fn stream_peak_rss(what: &str, it: impl Iterator<Item = Result<u64, TaskError>>, n: u64) -> u64 {
    let mut peak = rss_bytes();
    let (mut sum, mut count) = (0u64, 0u64);
    for r in it {
        sum += r.unwrap();
        count += 1;
        if count % (1 << 20) == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    assert_eq!(count, n, "{what}: every result");
    assert_eq!(sum, n * (n - 1) / 2, "{what}: the right results");
    peak.max(rss_bytes())
}

/// Ten million items through `imap` and `imap_unordered` (default chunk size): the
/// process's resident memory grows by less than 64 MB. The input used to be collected
/// and cut into 8 chunks of 1.25 M items, with a result slot per item (hundreds of MB).
#[test]
fn rss_stays_flat_streaming_ten_million_items() {
    const N: u64 = 10_000_000;
    const BOUND: u64 = 64 << 20;
    let check = LeakCheck::start();
    let p = pool(StartMethod::ForkServer, 2);
    // Warm: the allocator's and the queues' steady state.
    let warm: u64 = p
        .imap(ident, 0..200_000u64)
        .unwrap()
        .map(Result::unwrap)
        .sum();
    assert_eq!(warm, 200_000 * 199_999 / 2);
    let before = rss_bytes();
    let peak = stream_peak_rss("imap", p.imap(ident, 0..N).unwrap(), N);
    assert!(
        peak < before + BOUND,
        "imap: resident memory grew by {} MB",
        (peak - before) >> 20
    );
    let peak = stream_peak_rss("imap_unordered", p.imap_unordered(ident, 0..N).unwrap(), N);
    assert!(
        peak < before + BOUND,
        "imap_unordered: resident memory grew by {} MB",
        (peak - before) >> 20
    );
    p.close();
    p.join().unwrap();
    drop(p);
    check.assert_clean();
}

/// An input that panics at item `k`: `map`, `starmap` and `map_async` fail with
/// `PoolError::Item { index: k, error: TaskError::Input }`; `imap` and
/// `imap_unordered` give the `k` results, the error, then the end. Both at the call
/// (`k` within the first read-ahead) and later, while the results are taken. The panic
/// used to unwind into the caller.
#[test]
fn an_input_that_panics_gives_the_results_before_it_then_a_typed_error() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        for (k, chunksize) in [(0, None), (37, None), (37, Some(5)), (3000, Some(1))] {
            let mapper = match chunksize {
                Some(c) => p.with_chunksize(c),
                None => p.with_progress_bar(),
            };
            let what = format!("{method}, k = {k}, chunksize {chunksize:?}");
            match mapper.map(square, breaks_at(k, 10_000)) {
                Err(PoolError::Item { index, error }) if is_input_panic(&error, k) => {
                    assert_eq!(index as u64, k, "{what}: map")
                }
                other => panic!("{what}: map gave {other:?}"),
            }
            match mapper.starmap(add, breaks_at(k, 10_000).map(|i| (i, i))) {
                Err(PoolError::Item { index, error }) if is_input_panic(&error, k) => {
                    assert_eq!(index as u64, k, "{what}: starmap")
                }
                other => panic!("{what}: starmap gave {other:?}"),
            }
            match mapper
                .map_async(square, breaks_at(k, 10_000))
                .unwrap()
                .get()
            {
                Err(PoolError::Item { index, error }) if is_input_panic(&error, k) => {
                    assert_eq!(index as u64, k, "{what}: map_async")
                }
                other => panic!("{what}: map_async gave {other:?}"),
            }
            let it = mapper.imap(square, breaks_at(k, 10_000)).unwrap();
            check_ends_with_input_panic(&format!("{what}: imap"), it, k, true);
            let it = mapper.imap_unordered(square, breaks_at(k, 10_000)).unwrap();
            check_ends_with_input_panic(&format!("{what}: imap_unordered"), it, k, false);
        }
        assert_eq!(
            p.apply(square, 5).unwrap(),
            25,
            "{method}: the pool goes on"
        );
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

/// The same for the executors' `map`, through the methods and the `Executor` trait.
#[test]
fn an_input_that_panics_ends_the_executor_maps_with_a_typed_error() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let ex = executor(method, 2);
        for k in [0, 37, 3000] {
            let what = format!("{method}, k = {k}");
            let it = ex.map(square, breaks_at(k, 10_000)).unwrap();
            check_ends_with_input_panic(&format!("{what}: map"), it, k, true);
            let it = ex.map_chunked(square, breaks_at(k, 10_000), 7).unwrap();
            check_ends_with_input_panic(&format!("{what}: map_chunked"), it, k, true);
            let it = Executor::map(&ex, square, breaks_at(k, 10_000)).unwrap();
            check_ends_with_input_panic(&format!("{what}: Executor::map"), it, k, true);
        }
        ex.shutdown(true, false);
    }
    check.assert_clean();

    let ex = ThreadPoolExecutor::new(2);
    for k in [0, 37, 3000] {
        let it = ex.map(square, breaks_at(k, 10_000)).unwrap();
        check_ends_with_input_panic(&format!("threads, k = {k}: map"), it, k, true);
        let it = Executor::map(&ex, square, breaks_at(k, 10_000)).unwrap();
        check_ends_with_input_panic(&format!("threads, k = {k}: Executor::map"), it, k, true);
    }
}

/// Python's result iterator: dropping the threads' `map` iterator cancels the tasks not
/// yet started. Item 0 holds the only worker; the rest were submitted (at most
/// `buffersize`) and are cancelled: only item 0 runs. It used to run them all.
#[test]
fn dropping_the_thread_map_iterator_cancels_the_tasks_not_started() {
    let ex = ThreadPoolExecutor::new(1);
    let ran = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (started_tx, started) = mpsc::channel::<u64>();
    let (open, gate) = mpsc::channel::<()>();
    let (started_tx, gate) = (Mutex::new(started_tx), Mutex::new(gate));
    let task = {
        let ran = Arc::clone(&ran);
        move |x: u64| {
            ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = started_tx.lock().unwrap().send(x);
            if x == 0 {
                let _ = gate.lock().unwrap().recv_timeout(PROMPT);
            }
            x
        }
    };
    let reads = Rc::new(Cell::new(0));
    let it = ex.map(task, endless(&reads)).unwrap();
    assert_eq!(started.recv_timeout(PROMPT), Ok(0), "item 0 runs");
    drop(it);
    open.send(()).unwrap();
    ex.shutdown(true, false);
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only item 0 ran"
    );
    assert!(
        reads.get() <= 2,
        "read {} items for a buffer of 2",
        reads.get()
    );
}

static GATE: OnceLock<(Event, Atomic<u32>)> = OnceLock::new();

fn set_gate(gate: (Event, Atomic<u32>)) {
    let _ = GATE.set(gate);
}

/// Counts itself as run; item 0 then waits for the test's gate.
fn gated(x: u64) -> u64 {
    let (gate, ran) = GATE.get().expect("initializer ran");
    ran.fetch_add(1);
    if x == 0 {
        assert!(gate.wait_timeout(PROMPT), "the gate never opened");
    }
    x
}

/// The same for the process executor's `map`: item 0 holds the only worker, the items
/// submitted behind it are skipped once the iterator is dropped.
#[test]
fn dropping_the_process_map_iterator_cancels_the_tasks_not_started() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let gate = Event::new().unwrap();
        let ran = Atomic::new(0u32).unwrap();
        set_fork_warning(false);
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .start_method(method)
            .initializer(set_gate, (gate.clone(), ran.clone()))
            .build()
            .unwrap();
        let reads = Rc::new(Cell::new(0));
        let it = ex.map(gated, endless(&reads)).unwrap();
        wait_until("item 0 to start", || ran.load() == 1);
        drop(it);
        gate.set();
        ex.shutdown(true, false);
        assert_eq!(ran.load(), 1, "{method}: only item 0 ran");
        assert!(
            reads.get() <= READ_AHEAD_BOUND,
            "{method}: read {}",
            reads.get()
        );
    }
    check.assert_clean();
}

/// A progress bar with an input of unknown length: the map runs and counts, and the
/// length is known once the input ended.
#[test]
fn progress_bar_and_total_with_an_input_of_unknown_length() {
    let check = LeakCheck::start();
    let p = pool(StartMethod::ForkServer, 2);
    let mut it = p
        .with_progress_bar()
        .with_chunksize(3)
        .imap(square, (0..100u64).filter(|x| x % 2 == 0))
        .unwrap();
    // `imap` returns after two chunks per worker: the length is not known yet, and is
    // once the input ended.
    assert_eq!(it.total(), None, "imap returns before reading far");
    assert_eq!(it.next().unwrap().unwrap(), 0);
    assert_eq!(
        it.total(),
        Some(50),
        "a short input ends within the read-ahead"
    );
    let got: Vec<u64> = it.by_ref().map(Result::unwrap).collect();
    assert_eq!(got.len(), 49);
    assert_eq!(it.completed(), 50);
    let it = p
        .with_progress_bar()
        .with_chunksize(1)
        .imap(square, (0..100_000u64).filter(|x| x % 2 == 0))
        .unwrap();
    assert_eq!(it.total(), None, "not known before the input ended");
    assert_eq!(it.count(), 50_000);
    // `map_async` reads its input at the call: its result holds none, and still
    // crosses threads.
    fn send_sync<T: Send + Sync>(_: &T) {}
    let m = p
        .map_async(square, (0..100u64).filter(|x| x % 2 == 0))
        .unwrap();
    send_sync(&m);
    assert_eq!(m.get().unwrap().len(), 50);
    let it = p.with_progress_bar().imap(square, 0..10u64).unwrap();
    assert_eq!(it.total(), Some(10), "an exact size hint");
    // Not exact while the input is being read: it may still panic (one error item in
    // place of the rest).
    let (lo, hi) = it.size_hint();
    assert!(lo <= 10 && hi >= Some(10), "{lo} {hi:?}");
    assert_eq!(it.count(), 10);
    p.close();
    p.join().unwrap();
    drop(p);
    check.assert_clean();
}

/// A pool closed while a map still reads its input: the results of what was submitted
/// come in order, then one `Cancelled` for the items never read, then the end; `join`
/// returns. Terminated: what was running fails with `Terminated`, then the same.
#[test]
fn a_pool_closed_or_terminated_mid_stream_ends_the_map_with_cancelled() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        let reads = Rc::new(Cell::new(0));
        let mut it = p.with_chunksize(1).imap(square, endless(&reads)).unwrap();
        for i in 0..10 {
            assert_eq!(it.next().unwrap().unwrap(), square(i), "{method}");
        }
        p.close();
        let mut n = 10;
        let last = loop {
            match it.next() {
                Some(Ok(v)) => {
                    assert_eq!(v, square(n), "{method}: in order, none lost");
                    n += 1;
                }
                other => break other,
            }
        };
        assert_eq!(last, Some(Err(TaskError::Cancelled)), "{method}");
        assert!(it.next().is_none(), "{method}");
        assert_eq!(it.total(), Some(n as usize), "{method}: what was submitted");
        assert!(n <= reads.get(), "{method}");
        p.join().unwrap();

        let p = pool(method, 2);
        let mut it = p.with_chunksize(1).imap(square, endless(&reads)).unwrap();
        assert_eq!(it.next().unwrap().unwrap(), 0, "{method}");
        p.terminate();
        let rest: Vec<_> = it.by_ref().collect();
        let (last, before) = rest.split_last().expect("the map ends with an error");
        assert_eq!(*last, Err(TaskError::Cancelled), "{method}");
        for (i, r) in (1u64..).zip(before) {
            assert!(
                *r == Ok(square(i)) || *r == Err(TaskError::Terminated),
                "{method}: item {i}: {r:?}"
            );
        }
        assert!(it.next().is_none(), "{method}");
    }
    check.assert_clean();
}

/// The threads' `map` on an executor shut down while it reads its input: the tasks
/// submitted finish and come in order, then one `Cancelled`, then the end (Python 3.14
/// raises `RuntimeError` from the iterator there).
#[test]
fn a_thread_executor_shut_down_mid_stream_ends_the_map_with_cancelled() {
    let ex = ThreadPoolExecutor::new(2);
    let reads = Rc::new(Cell::new(0));
    let mut it = ex.map(square, endless(&reads)).unwrap();
    assert_eq!(it.next(), Some(Ok(0)));
    ex.shutdown(false, false);
    let rest: Vec<_> = it.by_ref().collect();
    let (last, before) = rest.split_last().expect("the map ends with an error");
    assert_eq!(*last, Err(TaskError::Cancelled));
    assert!(before.len() <= 4, "at most the buffer: {}", before.len());
    for (i, r) in (1u64..).zip(before) {
        assert_eq!(*r, Ok(square(i)), "item {i}");
    }
    assert!(it.next().is_none());
    drop(it);
    ex.shutdown(true, false);
}

fn fails_at_zero(x: u64) -> u64 {
    assert!(x != 0, "zero");
    x
}

/// `map` once reserved room for the input's claimed length before reading it: an input
/// that claims 2^40 items and fails at the first aborted the process.
#[test]
fn a_map_over_a_huge_claimed_length_that_fails_at_once_is_an_error_not_an_abort() {
    let check = LeakCheck::start();
    {
        let p = pool(StartMethod::ForkServer, 2);
        match p.with_chunksize(1).map(fails_at_zero, 0..1u64 << 40) {
            Err(PoolError::Item { index: 0, error }) => {
                assert!(error.to_string().contains("zero"), "{error}")
            }
            other => panic!("{:?}", other.map(|v| v.len())),
        }
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

/// An endless input that is not exactly sized, counting what is read.
fn counted(read: &Rc<Cell<u64>>) -> impl Iterator<Item = u64> + 'static {
    let read = Rc::clone(read);
    (0u64..)
        .filter(|_| true)
        .inspect(move |_| read.set(read.get() + 1))
}

/// Python's `imap` and `imap_unordered` take one item per task by default, and the call
/// returns without reading far: `imap` once read the read-ahead (and, without a known
/// length, up to 65 536 items to choose a chunk size) before it returned.
#[test]
fn imap_defaults_to_one_item_per_task_and_returns_before_reading_far() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        for unordered in [false, true] {
            let read = Rc::new(Cell::new(0));
            let mut results = if unordered {
                p.imap_unordered(ident, counted(&read)).unwrap()
            } else {
                p.imap(ident, counted(&read)).unwrap()
            };
            assert!(read.get() <= 4, "{method}: {} read at the call", read.get());
            let first = results.next().unwrap().unwrap();
            if !unordered {
                assert_eq!(first, 0, "{method}");
            }
        }
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

/// Arguments that do not serialise, in the third chunk.
#[derive(Debug, Clone, serde::Deserialize)]
enum Arg {
    Good(String),
    Bad,
}

impl serde::Serialize for Arg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Arg::Good(path) => s.serialize_newtype_variant("Arg", 0, "Good", path),
            Arg::Bad => Err(serde::ser::Error::custom("bad")),
        }
    }
}

/// Leaves a mark that the task ran.
fn mark(arg: Arg) {
    if let Arg::Good(path) = arg {
        std::fs::write(path, b"ran").unwrap();
    }
}

/// A `map` whose arguments fail to serialise at the call fails as a whole (Python
/// pickles every chunk before it sends one): the chunks before the bad one once ran
/// all the same.
#[test]
fn a_map_whose_arguments_do_not_encode_at_the_call_runs_nothing() {
    let check = LeakCheck::start();
    let dir = std::env::temp_dir().join(format!("mp-strict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        let args: Vec<Arg> = (0..4)
            .map(|i| Arg::Good(dir.join(format!("{method}-{i}")).display().to_string()))
            .chain([Arg::Bad])
            .collect();
        assert!(matches!(
            p.with_chunksize(1).map(mark, args),
            Err(PoolError::Arguments(_))
        ));
        p.close();
        p.join().unwrap();
        let ran: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(ran.is_empty(), "{method}: {} tasks ran", ran.len());
    }
    std::fs::remove_dir_all(&dir).unwrap();
    check.assert_clean();
}

/// An input whose `Drop` panics.
struct PanicsOnDrop(std::ops::RangeFrom<u64>);

impl Iterator for PanicsOnDrop {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        self.0.next()
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("the input's drop");
    }
}

/// A map dropped before its input ended drops the input: a panic there is user code's,
/// not the caller's, and does not unwind into it.
#[test]
fn dropping_a_map_whose_input_panics_on_drop_does_not_unwind_into_the_caller() {
    let check = LeakCheck::start();
    {
        let p = pool(StartMethod::ForkServer, 2);
        let mut m = p.imap(ident, PanicsOnDrop(0..)).unwrap();
        assert_eq!(m.next().unwrap().unwrap(), 0);
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(m)));
        assert!(dropped.is_ok(), "the input's panic reached the caller");
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}

fn check_not_multiple_of_3(x: u64) -> u64 {
    assert!(x % 3 != 0, "a multiple of 3");
    x * 10
}

/// `imap_unordered` hides which item a failure was for; `indexed` tells (issue 14
/// item 3: errors carry the input's index).
#[test]
fn indexed_results_carry_the_input_index_in_any_order() {
    let check = LeakCheck::start();
    for method in StartMethod::ALL {
        let p = pool(method, 2);
        for unordered in [true, false] {
            let map = if unordered {
                p.imap_unordered(check_not_multiple_of_3, 0..30u64)
            } else {
                p.imap(check_not_multiple_of_3, 0..30u64)
            };
            let mut seen = HashSet::new();
            for (i, r) in map.unwrap().indexed() {
                assert!(seen.insert(i), "{method}: {i} twice");
                match r {
                    Ok(v) => assert_eq!(v, i as u64 * 10, "{method}"),
                    Err(e) => {
                        assert_eq!(i % 3, 0, "{method}: {i} failed: {e}");
                        assert!(e.to_string().contains("a multiple of 3"), "{e}");
                    }
                }
            }
            assert_eq!(seen.len(), 30, "{method}");
        }
        // The ending error of a panicking input comes with the index where it ended.
        let ends_at_4 = (0..10u64).inspect(|&x| assert!(x != 4, "input"));
        let got: Vec<(usize, bool)> = p
            .imap_unordered(ident, ends_at_4)
            .unwrap()
            .indexed()
            .map(|(i, r)| (i, r.is_ok()))
            .collect();
        assert_eq!(got.last(), Some(&(4, false)), "{method}: {got:?}");
        p.close();
        p.join().unwrap();
    }
    check.assert_clean();
}
