//! Writes a seed corpus for each fuzz target into `fuzz/corpus/<target>/` (where
//! `cargo fuzz run <target>` looks first): valid frames of each kind, from which the
//! fuzzer's mutations reach past the headers much sooner than from nothing.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`

use std::path::Path;

use multiproc::codec::{self, Limits};

#[path = "../src/harness.rs"]
mod harness;

fn write(target: &str, seeds: &[Vec<u8>]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("make the corpus directory");
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write a seed");
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}

/// A frame as a pipe end writes it to its socket: header, descriptor count, body.
fn pipe_frame<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let body = codec::encode(value).expect("encode");
    let mut frame = codec::header(body.len() + 1, codec::fingerprint::<T>()).to_vec();
    frame.push(0);
    frame.extend_from_slice(&body);
    frame
}

fn main() {
    let limits = Limits::default();
    let mut codec_seeds = vec![
        codec::encode_frame(&7u64, &limits).unwrap(),
        codec::encode_frame(&"text".to_string(), &limits).unwrap(),
        codec::encode_frame(&vec![1u8, 2, 3], &limits).unwrap(),
        codec::encode_frame(&vec![harness::Nested::Unit], &limits).unwrap(),
    ];
    for i in 0..3 {
        codec_seeds.push(codec::encode_frame(&harness::sample_record(i), &limits).unwrap());
        codec_seeds.push(
            [
                &[3u8][..],
                &codec::encode(&harness::sample_record(i)).unwrap(),
            ]
            .concat(),
        );
    }
    write("codec_frames", &codec_seeds);

    let pick = |p: u8, frames: Vec<u8>| [vec![p], frames].concat();
    write(
        "pipe_socket",
        &[
            pick(2, pipe_frame(&harness::sample_record(1))),
            pick(
                2,
                [
                    pipe_frame(&harness::sample_record(2)),
                    pipe_frame(&harness::sample_record(3)),
                ]
                .concat(),
            ),
            pick(1, [pipe_frame(&7u64), pipe_frame(&9u64)].concat()),
            pick(
                0,
                pipe_frame(&(1u8, None::<multiproc::connection::Sender<u8>>)),
            ),
        ],
    );

    // Even first byte: request bodies, each behind a length byte.
    let samples = multiproc::fuzzing::manager_request_samples();
    let mut frames_seeds: Vec<Vec<u8>> = samples
        .iter()
        .map(|body| [vec![0, body.len() as u8], body.clone()].concat())
        .collect();
    let mut all = vec![0u8];
    for body in &samples {
        all.push(body.len() as u8);
        all.extend_from_slice(body);
    }
    frames_seeds.push(all);
    // Odd first byte: raw frames.
    frames_seeds.push(
        [
            vec![1u8],
            harness::request_frames(samples.iter().map(Vec::as_slice)),
        ]
        .concat(),
    );
    write("manager_frames", &frames_seeds);

    write(
        "manager_handshake",
        &[
            [vec![32u8], vec![0; 32]].concat(),
            vec![9, b'#', b'W', b'E', b'L', b'C', b'O', b'M', b'E', b'#'],
            vec![255; 256],
        ],
    );
}
