//! A review of issue 15's `Listener`/`Client`/`wait` found waits without their bound:
//! a client connecting to a listener whose backlog is full waited for ever (the
//! handshake deadline did not cover the connect), an `accept_timeout` racing another
//! accept could block past its timeout, and a huge timeout panicked. Each must return
//! within its bound.

use std::sync::mpsc;
use std::time::Duration;

use multiproc::connection::{Address, Client, Listener, ListenerError, Waitable, pipe, wait};

const PROMPT: Duration = Duration::from_secs(60);

/// Runs `f` on a thread and gives its result, or panics if it takes longer than
/// [`PROMPT`] (the bug: it would never return).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PROMPT)
        .unwrap_or_else(|_| panic!("{what} did not return within {PROMPT:?}"))
}

/// A listener that never accepts, with a backlog of 1: the kernel queues a couple of
/// connections, then a client's `connect` would block. With a key, each queued client
/// also waits in its handshake. Every client must end within its deadline.
#[test]
fn a_client_of_a_listener_with_a_full_backlog_times_out() {
    for address in [
        None,
        Some(Address::Unix(
            std::env::temp_dir().join(format!("mp-backlog-{}.sock", std::process::id())),
        )),
    ] {
        let mut builder = Listener::builder().authkey(b"k".to_vec()).backlog(1);
        if let Some(a) = address {
            builder = builder.address(a);
        }
        let listener = builder.bind().unwrap();
        let address = listener.address().clone();
        for i in 0..6 {
            let to = address.clone();
            let got = bounded("a client's connect", move || {
                Client::new()
                    .authkey(b"k".to_vec())
                    .handshake_timeout(Duration::from_millis(300))
                    .connect::<u32, u32>(&to)
                    .map(drop)
            });
            assert!(
                matches!(got, Err(ListenerError::Timeout)),
                "client {i} at {address:?}: {got:?}"
            );
        }
        drop(listener);
    }
}

/// Two threads wait to accept on one listener and one client comes: one accepts it,
/// the other times out; neither blocks past its timeout (it did when both saw the
/// listener ready and the loser blocked in `accept`).
#[test]
fn two_accepts_racing_for_one_client_both_return() {
    for _ in 0..20 {
        let listener = std::sync::Arc::new(Listener::builder().bind().unwrap());
        let address = listener.address().clone();
        let accepts: Vec<_> = (0..2)
            .map(|_| {
                let listener = std::sync::Arc::clone(&listener);
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    let got = listener
                        .accept_timeout::<u32, u32>(Duration::from_millis(500))
                        .map(drop);
                    let _ = tx.send(got);
                });
                rx
            })
            .collect();
        let client = Client::new().connect::<u32, u32>(&address).unwrap();
        let got: Vec<_> = accepts
            .iter()
            .map(|rx| rx.recv_timeout(PROMPT).expect("an accept_timeout returned"))
            .collect();
        assert_eq!(got.iter().filter(|g| g.is_ok()).count(), 1, "{got:?}");
        assert!(
            got.iter().any(|g| matches!(g, Err(ListenerError::Timeout))),
            "{got:?}"
        );
        drop(client);
    }
}

#[test]
fn the_longest_timeouts_mean_no_deadline() {
    let (a, b) = pipe::<u32>().unwrap();
    a.send(&1).unwrap();
    let ready = bounded("wait with Duration::MAX", move || {
        wait(&[&b as &dyn Waitable], Some(Duration::MAX)).map_err(|e| e.to_string())
    });
    assert_eq!(ready, Ok(vec![0]));
    let listener = std::sync::Arc::new(Listener::builder().bind().unwrap());
    let address = listener.address().clone();
    let accept = {
        let listener = std::sync::Arc::clone(&listener);
        std::thread::spawn(move || listener.accept_timeout::<u32, u32>(Duration::MAX).map(drop))
    };
    let client = Client::new().connect::<u32, u32>(&address).unwrap();
    assert!(accept.join().expect("no panic").is_ok());
    drop(client);
}
