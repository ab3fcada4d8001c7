//! Pipes (S3): duplex and one-way ends, under every start method, and what a peer can
//! do wrong: die, send garbage, send another type, send too much.

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use multiproc::codec::CodecError;
use multiproc::connection::{
    Connection, Receiver, RecvError, SendError, Sender, pipe, pipe_simplex, pipe_with,
};
use multiproc::testing::LeakCheck;
use multiproc::{Process, StartMethod};
use serde::{Deserialize, Serialize};

use common::{Bad, assert_killed_by, says_bad};

multiproc::test_support!();

const PROMPT: Duration = Duration::from_secs(30);

fn builder(method: StartMethod) -> multiproc::ProcessBuilder {
    multiproc::process::set_fork_warning(false);
    Process::builder().start_method(method)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Hello(String),
    Numbers(Vec<i64>),
    Nothing,
}

/// Echoes every message twice until the `None` sentinel (not end-of-file: under fork
/// the child inherits the parent's end too, as in Python, so EOF would never come).
fn echo_twice(conn: Connection<Option<Msg>>) -> usize {
    let mut n = 0;
    while let Ok(Some(m)) = conn.recv() {
        conn.send(&Some(m.clone())).unwrap();
        conn.send(&Some(m)).unwrap();
        n += 1;
    }
    n
}

#[test]
fn s03_duplex_both_ends_send_and_receive() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let (mine, theirs) = pipe::<Option<Msg>>().unwrap();
            let mut p = builder(method).start(echo_twice, theirs).unwrap();
            let msgs = [
                Msg::Hello("shiyanlou".into()),
                Msg::Numbers(vec![1, -2, 3]),
                Msg::Nothing,
            ];
            for m in msgs {
                let m = Some(m);
                mine.send(&m).unwrap();
                assert_eq!(mine.recv().unwrap(), m, "{method}");
                assert_eq!(mine.recv().unwrap(), m, "{method}");
            }
            mine.send(&None).unwrap();
            assert_eq!(p.join().unwrap(), 3, "{method}");
        }
    }
    check.assert_clean();
}

fn produce(tx: Sender<String>) {
    for word in ["A", "B", "C"] {
        tx.send(&word.to_string()).unwrap();
    }
}

#[test]
fn s03_one_way_pipe_receives_in_order() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let (rx, tx) = pipe_simplex::<String>().unwrap();
            let mut p = builder(method).start(produce, tx).unwrap();
            let got: Vec<String> = rx.iter().collect();
            assert_eq!(got, ["A", "B", "C"], "{method}");
            p.join().unwrap();
        }
    }
    check.assert_clean();
}

fn parse_number(conn: Connection<u64, String>) {
    while let Ok(text) = conn.recv() {
        conn.send(&text.trim().parse().unwrap_or(0)).unwrap();
    }
}

#[test]
fn typed_per_direction() {
    let check = LeakCheck::start();
    {
        let (mine, theirs) = pipe_with::<String, u64>().unwrap();
        let mut p = Process::start(parse_number, theirs).unwrap();
        mine.send(&" 42 ".to_string()).unwrap();
        assert_eq!(mine.recv().unwrap(), 42u64);
        drop(mine);
        p.join().unwrap();
    }
    check.assert_clean();
}

fn die_after_one(conn: Connection<u32>) {
    conn.send(&1).unwrap();
    std::process::abort();
}

#[test]
fn a_dead_peer_is_disconnected_not_a_hang() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let (mine, theirs) = pipe::<u32>().unwrap();
            let mut p = builder(method).start(die_after_one, theirs).unwrap();
            assert_eq!(mine.recv_timeout(PROMPT).unwrap(), 1);
            assert!(
                matches!(mine.recv_timeout(PROMPT), Err(RecvError::Disconnected)),
                "{method}"
            );
            assert!(matches!(mine.send(&2), Err(SendError::Disconnected)));
            assert_killed_by(&mut p, libc::SIGABRT, &method.to_string());
        }
    }
    check.assert_clean();
}

fn write_half_a_message(mut raw: UnixStream) {
    // A frame header that announces 1000 bytes, then 10 of them, then death.
    let mut frame =
        multiproc::codec::header(1000, multiproc::codec::fingerprint::<Vec<u8>>()).to_vec();
    frame.extend_from_slice(&[0u8; 10]);
    raw.write_all(&frame).unwrap();
    std::process::abort();
}

#[test]
fn a_peer_dying_mid_message_gives_disconnected() {
    let check = LeakCheck::start();
    {
        let (mine, theirs) = pipe::<Vec<u8>>().unwrap();
        // Hand the raw socket of the other end to a forked child that writes a partial frame.
        let raw = UnixStream::from(theirs_into_fd(theirs));
        let mut p = builder(StartMethod::Fork)
            .start_closure(move || write_half_a_message(raw))
            .unwrap();
        assert!(matches!(
            mine.recv_timeout(PROMPT),
            Err(RecvError::Disconnected)
        ));
        assert_killed_by(&mut p, libc::SIGABRT, "the writer of half a message");
    }
    check.assert_clean();
}

fn theirs_into_fd<S, R>(end: Connection<S, R>) -> std::os::fd::OwnedFd {
    end.as_fd().try_clone_to_owned().unwrap()
}

#[test]
fn garbage_breaks_the_connection_with_a_typed_error() {
    let check = LeakCheck::start();
    {
        let (mine, theirs) = pipe::<String>().unwrap();
        let mut raw = UnixStream::from(theirs_into_fd(theirs));
        raw.write_all(b"this is not a frame at all....").unwrap();
        assert!(matches!(
            mine.recv_timeout(PROMPT),
            Err(RecvError::Codec(CodecError::BadMagic { .. }))
        ));
        assert!(matches!(
            mine.try_recv(),
            Err(RecvError::Codec(CodecError::BadMagic { .. }))
        ));
    }
    check.assert_clean();
}

/// A frame as a `Connection` writes it: header, descriptor count, postcard body.
fn raw_frame<T: Serialize>(value: &T) -> Vec<u8> {
    let body = multiproc::codec::encode(value).unwrap();
    let mut frame =
        multiproc::codec::header(body.len() + 1, multiproc::codec::fingerprint::<T>()).to_vec();
    frame.push(0);
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn a_value_of_another_type_is_skipped_with_an_error() {
    let check = LeakCheck::start();
    {
        let (mine, theirs) = pipe::<u64>().unwrap();
        let mut raw = UnixStream::from(theirs_into_fd(theirs));
        raw.write_all(&raw_frame(&"not a number".to_string()))
            .unwrap();
        raw.write_all(&raw_frame(&7u64)).unwrap();
        match mine.recv_timeout(PROMPT) {
            Err(RecvError::Codec(CodecError::TypeMismatch { expected, .. })) => {
                assert_eq!(expected, "u64")
            }
            other => panic!("{other:?}"),
        }
        // The stream stays usable after a mismatch.
        assert_eq!(mine.recv_timeout(PROMPT).unwrap(), 7);
    }
    check.assert_clean();
}

#[test]
fn oversized_messages_are_refused_by_both_sides() {
    let check = LeakCheck::start();
    {
        let (mut a, b) = pipe::<Vec<u8>>().unwrap();
        a.set_max_message(1024);
        assert!(matches!(
            a.send(&vec![0u8; 4096]),
            Err(SendError::Codec(CodecError::Oversized { .. }))
        ));
        let mut b = b;
        b.set_max_message(1024);
        let mut raw = UnixStream::from(theirs_into_fd(a));
        raw.write_all(&raw_frame(&vec![1u8; 4096])).unwrap();
        assert!(matches!(
            b.recv_timeout(PROMPT),
            Err(RecvError::Codec(CodecError::Oversized { .. }))
        ));
    }
    check.assert_clean();
}

/// Issue 13: the text of a user's `custom` serde error reaches the caller of send and
/// recv.
#[test]
fn a_serde_error_carries_the_users_message() {
    let check = LeakCheck::start();
    {
        let (a, b) = pipe::<Bad>().unwrap();
        says_bad(a.send(&Bad::OnEncode).unwrap_err().to_string());
        a.send(&Bad::OnDecode).unwrap();
        says_bad(b.recv_timeout(PROMPT).unwrap_err().to_string());
    }
    check.assert_clean();
}

#[test]
fn timeouts_try_recv_and_poll() {
    let check = LeakCheck::start();
    {
        let (a, b) = pipe::<u8>().unwrap();
        assert!(matches!(b.try_recv(), Err(RecvError::Empty)));
        assert!(!b.poll(Some(Duration::ZERO)).unwrap());
        let t = Instant::now();
        assert!(matches!(
            b.recv_timeout(Duration::from_millis(100)),
            Err(RecvError::Timeout)
        ));
        assert!(t.elapsed() >= Duration::from_millis(100));
        a.send(&9).unwrap();
        assert!(b.poll(Some(PROMPT)).unwrap());
        assert_eq!(b.try_recv().unwrap(), 9);
    }
    check.assert_clean();
}

fn sum_bytes((rx, count): (Receiver<serde_bytes::ByteBuf>, usize)) -> u64 {
    rx.iter()
        .take(count)
        .map(|v| v.iter().map(|b| *b as u64).sum::<u64>())
        .sum()
}

#[test]
fn large_messages_cross_intact() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let (rx, tx) = pipe_simplex::<serde_bytes::ByteBuf>().unwrap();
            let mut p = builder(method).start(sum_bytes, (rx, 2)).unwrap();
            let big = serde_bytes::ByteBuf::from(
                (0..16u32 << 20).map(|i| (i % 7) as u8).collect::<Vec<u8>>(),
            );
            let expected: u64 = big.iter().map(|b| *b as u64).sum::<u64>() * 2;
            tx.send(&big).unwrap();
            tx.send(&big).unwrap();
            drop(tx);
            assert_eq!(p.join().unwrap(), expected, "{method}");
        }
    }
    check.assert_clean();
}

#[test]
fn a_one_gib_message_crosses() {
    let check = LeakCheck::start();
    {
        let (rx, tx) = pipe_simplex::<serde_bytes::ByteBuf>().unwrap();
        let mut p = builder(StartMethod::ForkServer)
            .start(sum_bytes, (rx, 1))
            .unwrap();
        let big = serde_bytes::ByteBuf::from(vec![3u8; 1 << 30]);
        tx.send(&big).unwrap();
        drop(big);
        assert_eq!(p.join_timeout(PROMPT).unwrap(), 3 << 30);
    }
    check.assert_clean();
}

fn forward(carrier: Receiver<Sender<String>>) {
    let inner = carrier.recv().unwrap();
    inner
        .send(&format!(
            "via a passed end, from pid {}",
            std::process::id()
        ))
        .unwrap();
}

#[test]
fn an_end_can_travel_through_another_pipe() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let (carrier_rx, carrier_tx) = pipe_simplex::<Sender<String>>().unwrap();
            let mut p = builder(method).start(forward, carrier_rx).unwrap();
            let (rx, tx) = pipe_simplex::<String>().unwrap();
            carrier_tx.send(&tx).unwrap();
            drop(tx);
            let msg = rx.recv_timeout(PROMPT).unwrap();
            assert!(msg.starts_with("via a passed end"), "{method}: {msg}");
            p.join().unwrap();
            assert!(matches!(
                rx.recv_timeout(PROMPT),
                Err(RecvError::Disconnected)
            ));
        }
    }
    check.assert_clean();
}

#[test]
fn an_end_cannot_be_encoded_outside_a_transport() {
    // Checked and serialised like the others: what it makes while another test is
    // checked would count against that test.
    let _check = LeakCheck::start();
    let (a, _b) = pipe::<u8>().unwrap();
    assert!(multiproc::codec::encode(&a).is_err());
}

#[test]
fn threads_share_one_end_without_interleaving() {
    let check = LeakCheck::start();
    {
        let (a, b) = pipe::<Vec<u32>>().unwrap();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let a = &a;
                s.spawn(move || {
                    for i in 0..200 {
                        a.send(&vec![t * 1000 + i; 300]).unwrap();
                    }
                });
            }
            let mut seen = 0;
            while seen < 800 {
                let v = b.recv_timeout(PROMPT).unwrap();
                assert!(v.iter().all(|x| *x == v[0]));
                seen += 1;
            }
        });
    }
    check.assert_clean();
}

fn read_ten_then_die(rx: Receiver<u64>) {
    for _ in 0..10 {
        rx.recv().unwrap();
    }
    std::process::abort();
}

#[test]
fn a_sender_whose_reader_died_gets_disconnected_not_a_hang() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let (rx, tx) = pipe_simplex::<u64>().unwrap();
            let mut p = builder(method).start(read_ten_then_die, rx).unwrap();
            // The reader dies after ten; sends land in shared memory until the sender
            // notices the hang-up (at the latest every 1024 messages, or when full).
            let mut sent = 0u64;
            let start = Instant::now();
            loop {
                match tx.send(&sent) {
                    Ok(()) => sent += 1,
                    Err(SendError::Disconnected) => break,
                    Err(e) => panic!("{method}: {e}"),
                }
                assert!(start.elapsed() < PROMPT, "{method}: still sending");
            }
            assert!(sent >= 10, "{method}");
            assert_killed_by(&mut p, libc::SIGABRT, &method.to_string());
        }
    }
    check.assert_clean();
}

fn echo_handles(conn: Connection<Carried>) {
    while let Ok(msg) = conn.recv() {
        let stop = matches!(msg, Carried::Stop);
        conn.send(&msg).unwrap();
        if stop {
            break;
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Carried {
    Number(u32),
    End(Sender<String>),
    Stop,
}

#[test]
fn messages_with_descriptors_keep_their_place_among_plain_ones() {
    let check = LeakCheck::start();
    {
        for method in StartMethod::ALL {
            let (mine, theirs) = pipe::<Carried>().unwrap();
            let mut p = builder(method).start(echo_handles, theirs).unwrap();
            let (text_rx, text_tx) = pipe_simplex::<String>().unwrap();
            mine.send(&Carried::Number(1)).unwrap();
            mine.send(&Carried::End(text_tx)).unwrap();
            mine.send(&Carried::Number(2)).unwrap();
            mine.send(&Carried::Stop).unwrap();
            assert!(matches!(
                mine.recv_timeout(PROMPT).unwrap(),
                Carried::Number(1)
            ));
            let Carried::End(back) = mine.recv_timeout(PROMPT).unwrap() else {
                panic!("{method}: the end came out of order");
            };
            back.send(&"through the returned end".to_string()).unwrap();
            assert_eq!(
                text_rx.recv_timeout(PROMPT).unwrap(),
                "through the returned end"
            );
            assert!(matches!(
                mine.recv_timeout(PROMPT).unwrap(),
                Carried::Number(2)
            ));
            assert!(matches!(mine.recv_timeout(PROMPT).unwrap(), Carried::Stop));
            p.join_timeout(PROMPT).unwrap();
        }
    }
    check.assert_clean();
}

/// A frame header is 24 untrusted bytes: the receiver once reserved and zero-filled the
/// whole body it announced before any of it came (1 GiB here), again on every read
/// (issue 14 item 8). Memory now grows with the bytes that arrive.
#[test]
fn a_huge_announced_frame_costs_memory_only_as_its_bytes_arrive() {
    let check = LeakCheck::start();
    {
        let (mine, theirs) = pipe::<Vec<u8>>().unwrap();
        let mut raw = UnixStream::from(theirs_into_fd(theirs));
        let announced = 1usize << 30;
        let mut frame =
            multiproc::codec::header(announced, multiproc::codec::fingerprint::<Vec<u8>>())
                .to_vec();
        frame.push(0);
        raw.write_all(&frame).unwrap();
        let before = common::rss_of("self");
        // A dripping sender: a few bytes now and then, each read by a timed receive.
        for _ in 0..8 {
            raw.write_all(&[1; 100]).unwrap();
            assert!(matches!(
                mine.recv_timeout(Duration::from_millis(20)),
                Err(RecvError::Timeout)
            ));
        }
        let grown = common::rss_of("self").saturating_sub(before);
        assert!(grown < 64 << 20, "{} MiB for 800 bytes", grown >> 20);
        drop(raw);
        assert!(matches!(
            mine.recv_timeout(PROMPT),
            Err(RecvError::Disconnected)
        ));
    }
    check.assert_clean();
}

/// Sends 1 through the pipe, then dies as a sender does between writing a message that
/// carries a descriptor to the socket and putting its marker in the ring: the frame is
/// announced, the marker never comes.
fn die_between_frame_and_marker((end, raw): (Connection<u64>, UnixStream)) {
    end.send(&1).unwrap();
    let mut frame = raw_frame(&7u64);
    frame[multiproc::codec::HEADER_LEN] |= 0x80; // announced: a ring marker points to it
    (&raw).write_all(&frame).unwrap();
    std::process::abort();
}

/// The receiver once waited for ever for the marker of a dead sender's announced frame
/// (`recv` hung; `recv_timeout` said `Timeout`, issue 14 item 1): at end-of-file such a
/// frame is what a dead sender left, and the pipe is `Disconnected`.
#[test]
fn a_sender_dead_between_frame_and_marker_is_disconnected_not_a_hang() {
    let check = LeakCheck::start();
    {
        let (mine, theirs) = pipe::<u64>().unwrap();
        let raw = UnixStream::from(theirs.as_fd().try_clone_to_owned().unwrap());
        let mut p = builder(StartMethod::Fork)
            .start_closure(move || die_between_frame_and_marker((theirs, raw)))
            .unwrap();
        assert_killed_by(&mut p, libc::SIGABRT, "the sender");
        assert_eq!(mine.recv_timeout(PROMPT).unwrap(), 1);
        match mine.recv_timeout(Duration::from_secs(10)) {
            Err(RecvError::Disconnected) => {}
            other => panic!("expected Disconnected, got {other:?}"),
        }
        assert!(matches!(mine.recv(), Err(RecvError::Disconnected)));
        assert!(matches!(mine.try_recv(), Err(RecvError::Disconnected)));
    }
    check.assert_clean();
}
