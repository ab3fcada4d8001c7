//! The fuzz targets of `fuzz/` (issue 14), run briefly and deterministically in
//! `cargo test`: each decoder that faces foreign bytes — the codec, a pipe's socket, a
//! TCP manager before and after authentication — over a few thousand inputs made from
//! valid frames by a seeded generator (bit flips, truncations, huge lengths, wrong magic,
//! wrong fingerprints, splices, random bytes). The checks are the harness's
//! (`fuzz/src/harness.rs`, shared with the fuzz targets): no panic, no hang, memory
//! bounded, the peer still serving afterwards. A failing case prints its seed and input.

mod common;

#[path = "../../fuzz/src/harness.rs"]
mod harness;

use std::net::SocketAddr;

use multiproc::StartMethod;
use multiproc::codec::{self, HEADER_LEN, Limits};
use multiproc::testing::LeakCheck;

use harness::{Nested, WithHandle};

multiproc::test_support!();

/// The generator's seed: `MULTIPROC_FUZZ_SEED` to replay or explore, else fixed.
fn seed() -> u64 {
    std::env::var("MULTIPROC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005e_ed14)
}

/// xorshift64*: small, seeded, the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// `seed` changed by one to three of the mutations a hostile or broken peer makes.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(v.len() + 1);
        match rng.below(11) {
            // Bit flips.
            0 => {
                for _ in 0..1 + rng.below(4) {
                    if !v.is_empty() {
                        let i = rng.below(v.len());
                        v[i] ^= 1 << rng.below(8);
                    }
                }
            }
            // Truncation.
            1 => v.truncate(at),
            // A huge, or merely wrong, length in the header.
            2 if v.len() >= 8 => {
                // (200 MiB is under a manager's limit, 1 GiB under a pipe's.)
                let len = [
                    u32::MAX,
                    1 << 30,
                    200 << 20,
                    (1 << 31) + 1,
                    0,
                    1,
                    rng.next() as u32,
                ][rng.below(7)];
                v[4..8].copy_from_slice(&len.to_le_bytes());
            }
            // Wrong magic.
            3 if v.len() >= 4 => v[rng.below(4)] = rng.next() as u8,
            // Wrong fingerprint.
            4 if v.len() >= 16 => {
                let fp = rng.next().to_le_bytes();
                v[8..16].copy_from_slice(&fp);
            }
            // Random bytes inserted.
            5 => {
                let n = rng.below(40);
                let junk = rng.bytes(n);
                v.splice(at..at, junk);
            }
            // Another seed spliced in (frames one after another, or cut into each other).
            6 => {
                let other = seeds[rng.below(seeds.len())].clone();
                v.splice(at..at, other);
            }
            // Interesting byte values.
            7 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0, 0xff, 0x80, 0x7f, 0x81, 0x01][rng.below(6)];
            }
            // The descriptor-count byte of a pipe frame.
            8 if v.len() > HEADER_LEN => v[HEADER_LEN] = [0x80, 1, 5, 0x7f, 0xff][rng.below(5)],
            // A long run of one byte (deep or long values).
            9 => {
                let n = rng.below(300);
                let b = [0x01, 0x80, 0xff, 0x02][rng.below(4)];
                v.splice(at..at, std::iter::repeat_n(b, n));
            }
            // Nothing like a frame at all.
            _ => {
                let n = rng.below(64);
                v = rng.bytes(n);
            }
        }
    }
    v
}

/// Runs `check` on `cases` inputs mutated from `seeds`; a panic names the case.
fn run(name: &str, seeds: &[Vec<u8>], cases: usize, mut check: impl FnMut(&[u8])) {
    let seed = seed();
    let mut rng = Rng::new(seed ^ name.len() as u64);
    for case in 0..cases {
        let input = if case < seeds.len() {
            seeds[case].clone()
        } else {
            mutate(&mut rng, seeds)
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if let Err(payload) = outcome {
            eprintln!(
                "{name}: case {case} failed (MULTIPROC_FUZZ_SEED={seed}); input ({} bytes): {:02x?}",
                input.len(),
                &input[..input.len().min(512)]
            );
            std::panic::resume_unwind(payload);
        }
    }
}

fn codec_seeds() -> Vec<Vec<u8>> {
    let limits = Limits::default();
    let mut seeds = vec![
        codec::encode_frame(&0u64, &limits).unwrap(),
        codec::encode_frame(&u64::MAX, &limits).unwrap(),
        codec::encode_frame(&"hello, world".to_string(), &limits).unwrap(),
        codec::encode_frame(&vec![7u8; 40], &limits).unwrap(),
        codec::encode_frame(&vec![Nested::Unit, Nested::Leaf(3)], &limits).unwrap(),
    ];
    for i in 0..4 {
        seeds.push(codec::encode_frame(&harness::sample_record(i), &limits).unwrap());
    }
    // Bodies behind a selector byte, as the harness reframes them.
    seeds.push(
        [
            &[3u8][..],
            &codec::encode(&harness::sample_record(9)).unwrap(),
        ]
        .concat(),
    );
    seeds.push([&[1u8][..], &codec::encode(&"text".to_string()).unwrap()].concat());
    seeds
}

/// (a) The codec over mutated frames of several types.
#[test]
fn the_codec_gives_a_value_or_a_typed_error_for_any_bytes() {
    run("codec", &codec_seeds(), 4000, harness::codec_frames);
}

/// A frame as a pipe end writes it to its socket: header, descriptor count, body.
fn pipe_frame<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let body = codec::encode(value).unwrap();
    let mut frame = codec::header(body.len() + 1, codec::fingerprint::<T>()).to_vec();
    frame.push(0);
    frame.extend_from_slice(&body);
    frame
}

/// Seeds for [`harness::pipe_socket`]: a byte that picks the type (0: a message with
/// a pipe end in it, 1: `u64`, 2: `Record`), then what is written to the socket.
fn pipe_seeds() -> Vec<Vec<u8>> {
    let seed = |pick: u8, frames: &[Vec<u8>]| [&[pick][..], &frames.concat()].concat();
    let record = |i| pipe_frame(&harness::sample_record(i));
    // A message holding a pipe end, as a pipe writes one but without its descriptors:
    // one announced in the count byte, or none announced and one named in the body.
    let handle_fp = codec::fingerprint::<WithHandle>();
    let mut announced = codec::header(3, handle_fp).to_vec();
    announced.extend_from_slice(&[1, 4, 0]);
    let mut named = codec::header(6, handle_fp).to_vec();
    named.extend_from_slice(&[0, 4, 1, 0, 0, 0]);
    let mut huge = codec::header(1 << 30, codec::fingerprint::<harness::Record>()).to_vec();
    huge.push(0);
    vec![
        seed(2, &[record(0)]),
        seed(2, &[record(1), record(2)]),
        seed(2, &[record(5), pipe_frame(&7u64)]),
        seed(1, &[pipe_frame(&7u64), pipe_frame(&u64::MAX)]),
        seed(
            0,
            &[pipe_frame(&(
                3u8,
                None::<multiproc::connection::Sender<u8>>,
            ))],
        ),
        seed(0, &[announced]),
        seed(0, &[named]),
        // A frame announcing 1 GiB (under a pipe's limit) that brings 100 bytes.
        seed(2, &[huge, vec![7; 100]]),
    ]
}

/// Starts the resident high-water mark (`VmHWM`) of process `pid` ("self": this one)
/// afresh (a forked child inherits its parent's).
fn reset_peak_rss_of(pid: &str) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
}

/// The resident high-water mark of process `pid` ("self": this one), in bytes.
fn peak_rss_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

/// Pipe inputs: each costs about 20 ms, the slice in which a reader looks at its
/// socket for the end of the writer.
const PIPE_CASES: usize = 300;

/// (b) A pipe's socket fed mutated frames: each read gives a value or a typed error at
/// once, the end of the writer is seen promptly, and memory grows with nothing but the
/// bytes (the inputs are small; a reader that reserved what headers announce would
/// hold gigabytes).
#[test]
fn a_pipe_fed_foreign_bytes_answers_at_once_with_bounded_memory() {
    let leaks = LeakCheck::start();
    let seeds = pipe_seeds();
    // Warm up (the first pipe maps the library's tables), then measure the peak: a
    // buffer sized by a header is freed with its pipe, after the damage.
    harness::pipe_socket(&seeds[0]);
    let before = common::rss_of("self");
    reset_peak_rss_of("self");
    let mut messages = 0;
    run("pipe", &seeds, PIPE_CASES, |input| {
        messages += harness::pipe_socket(input)
    });
    let grown = peak_rss_of("self").saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "a peak of {} MiB more over {PIPE_CASES} inputs",
        grown >> 20
    );
    assert!(messages > 0, "no input gave a message: the seeds are wrong");
    leaks.assert_clean();
}

/// The seeds hold real messages, which decode: the harness does not only exercise
/// error paths.
#[test]
fn the_pipe_seeds_hold_real_messages() {
    let leaks = LeakCheck::start();
    let seeds = pipe_seeds();
    assert_eq!(harness::pipe_socket(&seeds[0]), 1);
    assert_eq!(harness::pipe_socket(&seeds[1]), 2);
    assert_eq!(harness::pipe_socket(&seeds[2]), 2); // a Record, then a u64 (a mismatch)
    assert_eq!(harness::pipe_socket(&seeds[3]), 2);
    assert_eq!(harness::pipe_socket(&seeds[4]), 1);
    assert_eq!(harness::pipe_socket(&seeds[5]), 0); // the stream breaks at once
    assert_eq!(harness::pipe_socket(&seeds[6]), 1); // a decode error, the stream goes on
    assert_eq!(harness::pipe_socket(&seeds[7]), 0); // waits for its gigabyte
    leaks.assert_clean();
}

fn the_server_of(method: StartMethod) -> (multiproc::Manager, SocketAddr) {
    multiproc::process::set_fork_warning(false);
    harness::tcp_manager_with(method)
}

/// (c) Before authentication: whatever a client without the key answers the challenge
/// with, the server refuses it and closes, and keeps serving.
#[test]
fn a_manager_refuses_any_foreign_answer_and_keeps_serving() {
    let leaks = LeakCheck::start();
    let mut rng = Rng::new(seed());
    for method in StartMethod::ALL {
        let (mut manager, addr) = the_server_of(method);
        let seeds = vec![
            vec![32; 33],
            [&[32u8][..], &[0u8; 32]].concat(),
            vec![255; 256],
            vec![0],
            Vec::new(),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            rng.bytes(300),
        ];
        run("handshake", &seeds, 80, |input| {
            harness::manager_handshake(addr, input)
        });
        harness::still_serves(addr);
        manager.shutdown().unwrap();
    }
    leaks.assert_clean();
}

/// (c) After authentication: mutated request frames (each kind of request, cut, with
/// wrong fingerprints, huge lengths, garbage): one whole reply per request taken, the
/// connection closed when the client stops or sends what cannot be taken, and the
/// server still serving.
#[test]
fn an_authenticated_client_sending_foreign_frames_costs_only_its_connection() {
    let leaks = LeakCheck::start();
    let samples = multiproc::fuzzing::manager_request_samples();
    let mut seeds: Vec<Vec<u8>> = samples
        .iter()
        .map(|body| harness::request_frames([body.as_slice()]))
        .collect();
    seeds.push(harness::request_frames(samples.iter().map(Vec::as_slice)));
    // A request announcing 200 MiB (under the server's limit) and bringing 4 bytes.
    let mut huge =
        codec::header(200 << 20, multiproc::fuzzing::manager_request_fingerprint()).to_vec();
    huge.extend_from_slice(&[1, 2, 3, 4]);
    seeds.push(huge);
    let mut replies = 0;
    for method in StartMethod::ALL {
        let (mut manager, addr) = the_server_of(method);
        let server = manager.pid().expect("the server's pid").to_string();
        reset_peak_rss_of(&server);
        run("frames", &seeds, 40, |input| {
            replies += harness::manager_frames(addr, input)
        });
        harness::still_serves(addr);
        // Headers announcing up to 1 GiB cost the server only the bytes that came.
        let peak = peak_rss_of(&server);
        assert!(
            peak < 128 << 20,
            "{method}: the server peaked at {} MiB",
            peak >> 20
        );
        manager.shutdown().unwrap();
    }
    assert!(
        replies > 3 * seeds.len(),
        "{replies} replies: the seeds are wrong"
    );
    leaks.assert_clean();
}

/// The sample requests are real requests: each one alone gets its reply.
#[test]
fn each_sample_request_gets_one_reply() {
    let leaks = LeakCheck::start();
    let (mut manager, addr) = the_server_of(StartMethod::ForkServer);
    let samples = multiproc::fuzzing::manager_request_samples();
    let all = harness::request_frames(samples.iter().map(Vec::as_slice));
    assert_eq!(harness::manager_frames(addr, &all), samples.len());
    manager.shutdown().unwrap();
    leaks.assert_clean();
}

/// The harness drops what would end the server it attacks, and nothing else.
#[test]
fn the_harness_holds_back_shutdown_and_nothing_else() {
    let samples = multiproc::fuzzing::manager_request_samples();
    let all = harness::request_frames(samples.iter().map(Vec::as_slice));
    assert_eq!(harness::benign_stream(&all), all);
    assert!(
        samples
            .iter()
            .all(|s| multiproc::fuzzing::manager_request_is_benign(s))
    );
    // `Request::Shutdown` is the third variant, with no fields: one byte.
    assert!(!multiproc::fuzzing::manager_request_is_benign(&[2]));
    let with_shutdown = harness::request_frames([&samples[0][..], &[2u8], &samples[1][..]]);
    assert_eq!(
        harness::benign_stream(&with_shutdown),
        harness::request_frames([&samples[0][..], &samples[1][..]])
    );
}
