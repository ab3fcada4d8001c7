//! Issue 15, "multiprocessing.connection": byte-level calls with offsets and
//! `BufferTooShort`, `poll` on every end, `try_clone`, `wait` on a mix of objects, and
//! `Listener`/`Client` (abstract, path, TCP) with the authkey handshake, under every
//! start method, each in a leak check. Anchored on CPython's `_test_multiprocessing.py`
//! (`_TestConnection.test_connection`, `test_wait*`, `_TestListenerClient`,
//! `test_listener_client`, `_TestListener.test_multiple_bind`).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use multiproc::connection::{
    Address, AuthenticationError, Client, Connection, Listener, ListenerError, RecvError,
    SendError, Waitable, pipe, wait,
};
use multiproc::sync::Event;
use multiproc::testing::LeakCheck;
use multiproc::{CodecError, Queue, StartMethod};

mod common;
use common::{PROMPT, start};

multiproc::test_support!();

/// CPython's `_echo`: sends back every message's bytes until an empty one.
fn echo(conn: Connection<String>) {
    loop {
        let msg = conn.recv_bytes(None).unwrap();
        if msg.is_empty() {
            return;
        }
        conn.send_bytes(&msg, 0, None).unwrap();
    }
}

/// The byte calls against an echoing peer (a pipe's end or a listener's connection).
fn check_bytes(conn: &Connection<String>, what: &str) {
    assert!(
        !conn.poll(Some(Duration::ZERO)).unwrap(),
        "{what}: nothing yet"
    );
    let buf: Vec<u8> = (0u8..32).collect();

    // send_bytes(buf, offset, size)
    conn.send_bytes(&buf, 4, Some(8)).unwrap();
    assert!(conn.poll(Some(PROMPT)).unwrap(), "{what}");
    assert_eq!(conn.recv_bytes(None).unwrap(), buf[4..12], "{what}");
    conn.send_bytes(&buf, 30, None).unwrap();
    assert_eq!(conn.recv_bytes(None).unwrap(), buf[30..], "{what}");
    assert!(matches!(
        conn.send_bytes(&buf, 33, None),
        Err(SendError::Invalid(_))
    ));
    assert!(matches!(
        conn.send_bytes(&buf, 30, Some(3)),
        Err(SendError::Invalid(_))
    ));

    // recv_bytes_into(buf, offset): fits, then too short (the whole message carried).
    conn.send_bytes(b"abcdef", 0, None).unwrap();
    let mut into = [0u8; 10];
    assert_eq!(conn.recv_bytes_into(&mut into, 3).unwrap(), 6, "{what}");
    assert_eq!(&into, b"\0\0\0abcdef\0");
    conn.send_bytes(b"0123456789", 0, None).unwrap();
    match conn.recv_bytes_into(&mut into, 1) {
        Err(RecvError::BufferTooShort(whole)) => assert_eq!(whole, b"0123456789", "{what}"),
        other => panic!("{what}: expected BufferTooShort, got {other:?}"),
    }
    assert!(matches!(
        conn.recv_bytes_into(&mut into, 11),
        Err(RecvError::Invalid(_))
    ));

    // recv_bytes(maxlength): a longer message is refused and dropped, the connection
    // goes on.
    conn.send_bytes(&[7; 100], 0, None).unwrap();
    assert!(matches!(
        conn.recv_bytes(Some(99)),
        Err(RecvError::Codec(CodecError::Oversized {
            size: 100,
            max: 99
        }))
    ));
    conn.send_bytes(&[8; 5], 0, None).unwrap();
    assert_eq!(conn.recv_bytes(Some(5)).unwrap(), [8; 5]);

    // Values and bytes are one stream: a value's bytes are its encoding (the echo
    // sends them back as bytes), and bytes that encode a value receive as one.
    conn.send(&"a value".to_string()).unwrap();
    assert_eq!(conn.recv().unwrap(), "a value", "{what}");
    let encoded = conn.recv_bytes_after_send_of("bytes first");
    assert_eq!(encoded, multiproc::codec::encode(&"bytes first").unwrap());
    conn.send_bytes(b"\xff\xff\xff\xff\xff", 0, None).unwrap();
    assert!(matches!(conn.recv(), Err(RecvError::Codec(_))), "{what}");
    conn.send(&"still usable".to_string()).unwrap();
    assert_eq!(conn.recv().unwrap(), "still usable", "{what}");

    conn.send_bytes(b"", 0, None).unwrap(); // the echo's end
}

trait RecvBytesAfterSend {
    fn recv_bytes_after_send_of(&self, value: &str) -> Vec<u8>;
}

impl RecvBytesAfterSend for Connection<String> {
    fn recv_bytes_after_send_of(&self, value: &str) -> Vec<u8> {
        self.send(&value.to_string()).unwrap();
        self.recv_bytes(None).unwrap()
    }
}

/// CPython's `_TestConnection.test_connection`: `send_bytes` with offset and size,
/// `recv_bytes_into` with an offset and `BufferTooShort`, `poll`, against a child
/// that echoes, under every start method.
#[test]
fn byte_calls_on_a_pipe_under_every_start_method() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let (mine, theirs) = pipe::<String>().unwrap();
        let mut p = start(method, echo, theirs);
        check_bytes(&mine, method.name());
        p.join_timeout(PROMPT).unwrap();
        // The echo is gone: poll says a recv would not block, and it is the end.
        assert!(mine.poll(Some(PROMPT)).unwrap());
        assert!(matches!(
            mine.recv_bytes(None),
            Err(RecvError::Disconnected)
        ));
    }
    leaks.assert_clean();
}

/// A receiving end of a one-way pipe has `poll` and the byte calls too.
#[test]
fn simplex_ends_have_poll_and_byte_calls() {
    let leaks = LeakCheck::start();
    let (r, w) = multiproc::connection::pipe_simplex::<u32>().unwrap();
    assert!(!r.poll(Some(Duration::ZERO)).unwrap());
    w.send_bytes(&[1, 2, 3, 4], 1, Some(2)).unwrap();
    assert!(r.poll(Some(Duration::ZERO)).unwrap());
    let mut into = [0u8; 1];
    assert!(matches!(
        r.recv_bytes_into(&mut into, 0),
        Err(RecvError::BufferTooShort(m)) if m == [2, 3]
    ));
    w.send(&5).unwrap();
    assert_eq!(r.recv().unwrap(), 5);
    drop(w);
    assert!(r.poll(Some(PROMPT)).unwrap());
    assert!(matches!(r.recv(), Err(RecvError::Disconnected)));
    drop(r);
    leaks.assert_clean();
}

/// Counts what arrives from two senders, checking each one's order; answers with the
/// count once both said they were done.
fn count_two_senders(conn: Connection<(u8, u32)>) -> Result<u32, String> {
    let mut next = [0u32; 2];
    let mut done = 0;
    while done < 2 {
        let (who, seq) = conn.recv().map_err(|e| e.to_string())?;
        if seq == u32::MAX {
            done += 1;
            continue;
        }
        if next[who as usize] != seq {
            return Err(format!(
                "sender {who}: got {seq}, expected {}",
                next[who as usize]
            ));
        }
        next[who as usize] += 1;
    }
    let total = next[0] + next[1];
    conn.send(&(9, total)).map_err(|e| e.to_string())?;
    Ok(total)
}

/// `try_clone`: two clones of one end used by two threads at once; each sender's
/// messages arrive whole and in order, the reply arrives at either clone (they share
/// the stream), under every start method.
#[test]
fn clones_of_an_end_send_concurrently_and_share_what_arrives() {
    const N: u32 = 2000;
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let (a, b) = pipe::<(u8, u32)>().unwrap();
        let mut p = start(method, count_two_senders, b);
        let a2 = a.try_clone().unwrap();
        std::thread::scope(|s| {
            for (who, end) in [(0u8, &a), (1u8, &a2)] {
                s.spawn(move || {
                    for seq in 0..N {
                        end.send(&(who, seq)).unwrap();
                    }
                    end.send(&(who, u32::MAX)).unwrap();
                });
            }
        });
        assert_eq!(p.join_timeout(PROMPT).unwrap(), Ok(2 * N), "{method}");
        drop(a);
        assert_eq!(a2.recv_timeout(PROMPT).unwrap(), (9, 2 * N), "{method}");
    }
    leaks.assert_clean();
}

/// The other side sees the end only when every clone is dropped; receiving clones
/// take each message once.
#[test]
fn end_of_file_comes_when_the_last_clone_is_dropped() {
    let leaks = LeakCheck::start();
    let (a, b) = pipe::<u32>().unwrap();
    let a2 = a.try_clone().unwrap();
    let b2 = b.try_clone().unwrap();
    for i in 0..10 {
        a.send(&i).unwrap();
    }
    let mut got: Vec<u32> = (0..5).map(|_| b.recv().unwrap()).collect();
    got.extend((0..5).map(|_| b2.recv().unwrap()));
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    drop(a);
    assert!(matches!(b.try_recv(), Err(RecvError::Empty)));
    a2.send(&10).unwrap();
    drop(a2);
    assert_eq!(b2.recv().unwrap(), 10);
    assert!(matches!(b.recv(), Err(RecvError::Disconnected)));
    assert!(matches!(b2.recv(), Err(RecvError::Disconnected)));
    drop((b, b2));
    leaks.assert_clean();
}

/// Waits for the go, then sends `n` on the pipe and puts `n` in the queue.
fn send_after_go(args: (Event, Connection<u32>, Queue<u32>, u32)) {
    let (go, conn, q, n) = args;
    assert!(go.wait_timeout(PROMPT));
    conn.send(&n).unwrap();
    q.put(n).unwrap();
}

/// CPython's `test_wait`, `test_wait_timeout`, `test_wait_integer` (sentinels):
/// `wait` on a mix of pipe ends, a queue, process objects and a raw sentinel; nothing
/// is ready before the go (a timeout returns nothing), then everything arrives,
/// under every start method.
#[test]
fn wait_on_pipes_queues_and_processes_together() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        let go = Event::new().unwrap();
        let q = Queue::<u32>::new().unwrap();
        let mut ends = Vec::new();
        let mut procs = Vec::new();
        for n in 0..3 {
            let (mine, theirs) = pipe::<u32>().unwrap();
            ends.push(mine);
            procs.push(start(
                method,
                send_after_go,
                (go.clone(), theirs, q.clone(), n),
            ));
        }
        let mut objects: Vec<&dyn Waitable> = vec![&q];
        objects.extend(ends.iter().map(|e| e as &dyn Waitable));
        assert_eq!(
            wait(&objects, Some(Duration::from_millis(50))).unwrap(),
            Vec::<usize>::new(),
            "{method}: nothing is ready before the go"
        );
        go.set();
        let mut got = Vec::new();
        let mut from_queue = Vec::new();
        while got.len() < 3 || from_queue.len() < 3 {
            let objects: Vec<&dyn Waitable> = std::iter::once(&q as &dyn Waitable)
                .chain(ends.iter().map(|e| e as &dyn Waitable))
                .collect();
            let ready = wait(&objects, Some(PROMPT)).unwrap();
            assert!(!ready.is_empty(), "{method}: timed out");
            for i in ready {
                if i == 0 {
                    while let Ok(n) = q.get_timeout(Duration::ZERO) {
                        from_queue.push(n);
                    }
                } else if let Ok(n) = ends[i - 1].try_recv() {
                    got.push(n);
                }
            }
        }
        got.sort();
        from_queue.sort();
        assert_eq!(
            (got, from_queue),
            (vec![0, 1, 2], vec![0, 1, 2]),
            "{method}"
        );

        // Process objects and sentinels: ready once each child ended.
        let mut ended = [false; 3];
        while ended.iter().any(|e| !e) {
            let objects: Vec<&dyn Waitable> = procs.iter().map(|p| &p.0 as &dyn Waitable).collect();
            for i in wait(&objects, Some(PROMPT)).unwrap() {
                ended[i] = true;
            }
        }
        for p in &mut procs {
            p.join_timeout(PROMPT).unwrap();
        }
        let sentinel = procs[0].sentinel().unwrap();
        assert_eq!(
            wait(&[&sentinel as &dyn Waitable], Some(PROMPT)).unwrap(),
            vec![0],
            "{method}"
        );
        // The ended children's pipe ends now report the end.
        let objects: Vec<&dyn Waitable> = ends.iter().map(|e| e as &dyn Waitable).collect();
        assert_eq!(wait(&objects, Some(PROMPT)).unwrap().len(), 3, "{method}");
    }
    leaks.assert_clean();
}

/// A client in a child: connects with `key`, sends a greeting, answers the
/// listener's question with bytes; returns its error, if any, as text.
fn client(args: (Address, Vec<u8>)) -> Result<String, String> {
    let (address, key) = args;
    let conn = Client::new()
        .authkey(key)
        .connect::<String, String>(&address)
        .map_err(|e| match e {
            ListenerError::Authentication(AuthenticationError::Refused) => "refused".to_string(),
            other => other.to_string(),
        })?;
    conn.send(&format!("hello from {}", std::process::id()))
        .map_err(|e| e.to_string())?;
    let question = conn.recv().map_err(|e| e.to_string())?;
    conn.send_bytes(question.as_bytes(), 0, Some(3))
        .map_err(|e| e.to_string())?;
    Ok(question)
}

fn addresses() -> Vec<Option<Address>> {
    let path = std::env::temp_dir().join(format!("multiproc-fidelity-{}.sock", std::process::id()));
    vec![
        None, // a fresh abstract socket
        Some(Address::Unix(path)),
        Some(Address::Tcp("127.0.0.1:0".parse().unwrap())),
    ]
}

/// CPython's `test_listener_client`: a listener (abstract, path and TCP) accepts a
/// client started under every start method; the connection carries values and bytes;
/// `address` gives the bound address; `close` removes a socket file and makes
/// `accept` fail.
#[test]
fn listener_and_client_talk_over_every_address_under_every_start_method() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        for address in addresses() {
            let mut builder = Listener::builder().authkey(b"the key".to_vec());
            if let Some(a) = address.clone() {
                builder = builder.address(a);
            }
            let mut listener = builder.bind().unwrap();
            let bound = listener.address().clone();
            match (&address, &bound) {
                (None, Address::Abstract(name)) => assert!(name.starts_with("multiproc-")),
                (Some(Address::Unix(p)), Address::Unix(q)) => {
                    assert_eq!(p, q);
                    assert!(p.exists());
                }
                (Some(Address::Tcp(_)), Address::Tcp(a)) => assert_ne!(a.port(), 0),
                other => panic!("{other:?}"),
            }
            let mut p = start(method, client, (bound.clone(), b"the key".to_vec()));
            let conn = listener.accept::<String, String>().unwrap();
            let hello = conn.recv_timeout(PROMPT).unwrap();
            assert_eq!(hello, format!("hello from {}", p.pid()), "{method} {bound}");
            conn.send(&"question?".to_string()).unwrap();
            assert_eq!(conn.recv_bytes(None).unwrap(), b"que", "{method} {bound}");
            assert_eq!(p.join_timeout(PROMPT).unwrap(), Ok("question?".to_string()));
            assert!(matches!(conn.recv(), Err(RecvError::Disconnected)));
            listener.close();
            assert!(listener.is_closed());
            assert!(matches!(
                listener.accept::<u8, u8>(),
                Err(ListenerError::Closed)
            ));
            if let Address::Unix(path) = &bound {
                assert!(!path.exists(), "the socket file is removed at close");
            }
        }
    }
    leaks.assert_clean();
}

/// A wrong key: the client sees `Refused`, the listener `PeerUnproven`, and the
/// listener goes on to accept the next client (under every start method).
#[test]
fn a_wrong_key_fails_on_both_sides() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        for address in addresses() {
            let mut builder = Listener::builder().authkey(b"right".to_vec());
            if let Some(a) = address {
                builder = builder.address(a);
            }
            let listener = builder.bind().unwrap();
            let bound = listener.address().clone();
            let mut p = start(method, client, (bound.clone(), b"wrong".to_vec()));
            match listener.accept::<String, String>() {
                Err(ListenerError::Authentication(AuthenticationError::PeerUnproven)) => {}
                other => panic!("{method} {bound}: expected PeerUnproven, got {other:?}"),
            }
            assert_eq!(p.join_timeout(PROMPT).unwrap(), Err("refused".to_string()));
            // The listener still serves a client with the right key.
            let mut p = start(method, client, (bound.clone(), b"right".to_vec()));
            let conn = listener.accept::<String, String>().unwrap();
            conn.recv_timeout(PROMPT).unwrap();
            conn.send(&"okay".to_string()).unwrap();
            assert_eq!(conn.recv_bytes(None).unwrap(), b"oka");
            assert_eq!(p.join_timeout(PROMPT).unwrap(), Ok("okay".to_string()));
        }
    }
    leaks.assert_clean();
}

/// The handshake has one deadline: a peer that connects and stays silent costs
/// `accept` the handshake timeout, then `Timeout`; `accept_timeout` with no client
/// at all also times out. A frame over the connection's limit is refused.
#[test]
fn handshake_time_and_frame_size_are_bounded() {
    let leaks = LeakCheck::start();
    let listener = Listener::builder()
        .authkey(b"k".to_vec())
        .handshake_timeout(Duration::from_millis(200))
        .max_message(1024)
        .bind()
        .unwrap();
    let Address::Abstract(name) = listener.address().clone() else {
        panic!("abstract by default")
    };
    assert!(matches!(
        listener.accept_timeout::<u8, u8>(Duration::from_millis(10)),
        Err(ListenerError::Timeout)
    ));
    let silent = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixStream::connect_addr(&addr).unwrap()
    };
    assert!(matches!(
        listener.accept::<u8, u8>(),
        Err(ListenerError::Timeout)
    ));
    drop(silent);

    // A client that sends a frame over the limit: refused, not buffered.
    let address = listener.address().clone();
    let sender = std::thread::spawn(move || {
        let conn = Client::new()
            .authkey(b"k".to_vec())
            .connect::<Vec<u8>, u8>(&address)
            .unwrap();
        conn.send(&vec![0u8; 4096]).unwrap();
        conn
    });
    let conn = listener.accept::<u8, Vec<u8>>().unwrap();
    assert!(matches!(
        conn.recv_timeout(PROMPT),
        Err(RecvError::Codec(CodecError::Oversized { .. }))
    ));
    drop((conn, sender.join().unwrap()));

    // Without a key there is no handshake (Python's authkey=None); raw frames from a
    // peer that is not multiproc's are still read.
    let open = Listener::bind(Address::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
    let Address::Tcp(addr) = open.address().clone() else {
        unreachable!()
    };
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    let conn = open.accept::<u8, u32>().unwrap();
    let body = multiproc::codec::encode(&77u32).unwrap();
    let mut frame =
        multiproc::codec::header(body.len() + 1, multiproc::codec::fingerprint::<u32>()).to_vec();
    frame.push(0);
    frame.extend_from_slice(&body);
    raw.write_all(&frame).unwrap();
    assert_eq!(conn.recv_timeout(PROMPT).unwrap(), 77);
    drop(raw);
    assert!(matches!(conn.recv(), Err(RecvError::Disconnected)));
    drop((conn, open, listener));
    leaks.assert_clean();
}

/// A listener's connection has the byte calls of a pipe's, against an echo in a
/// child that connected as a client (under every start method).
fn echo_client(address: Address) {
    let conn = Client::new()
        .authkey(b"echo".to_vec())
        .connect::<String, String>(&address)
        .unwrap();
    echo(conn);
}

#[test]
fn byte_calls_on_a_listener_connection() {
    let leaks = LeakCheck::start();
    for method in StartMethod::ALL {
        for address in addresses() {
            let mut builder = Listener::builder().authkey(b"echo".to_vec());
            if let Some(a) = address {
                builder = builder.address(a);
            }
            let listener = builder.bind().unwrap();
            let mut p = start(method, echo_client, listener.address().clone());
            let conn = listener.accept::<String, String>().unwrap();
            check_bytes(&conn, &format!("{method} {}", listener.address()));
            p.join_timeout(PROMPT).unwrap();
        }
    }
    leaks.assert_clean();
}

/// `wait` on queues alone (no descriptor to poll: rounds only), and on nothing.
#[test]
fn wait_on_queues_alone_and_on_nothing() {
    let leaks = LeakCheck::start();
    assert_eq!(wait(&[], None).unwrap(), Vec::<usize>::new());
    let q = Queue::<u32>::new().unwrap();
    let jq = multiproc::JoinableQueue::<u32>::new().unwrap();
    let objects: [&dyn Waitable; 2] = [&q, &jq];
    assert_eq!(
        wait(&objects, Some(Duration::from_millis(10))).unwrap(),
        Vec::<usize>::new()
    );
    let putter = {
        let jq = jq.clone();
        std::thread::spawn(move || jq.put(1).unwrap())
    };
    assert_eq!(wait(&objects, Some(PROMPT)).unwrap(), vec![1]);
    putter.join().unwrap();
    assert_eq!(jq.get().unwrap(), 1);
    jq.task_done().unwrap();
    drop((q, jq));
    leaks.assert_clean();
}
