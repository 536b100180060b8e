//! The reference codec as an oracle, in both directions, over the edge cases of FORMAT.md §6:
//! reference-compressed tiles decode byte-exact with dsr (consuming every word), and dsr's tiles
//! decode byte-exact with the reference, at every level.

use dsr_gdeflate::{Decoder, Encoder, Level};
use dsr_gdeflate_reference as reference;

/// Inputs chosen for the format's edges: lane boundaries of stored data, full and partial
/// tiles, long and overlapping matches, the distance codes 29/30/31 boundaries, mixed blocks.
fn edge_inputs() -> Vec<(String, Vec<u8>)> {
    let mut rng = fastrand::Rng::with_seed(0x6d);
    let mut random = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.u8(..)).collect() };
    let text: Vec<u8> = b"GDeflate spreads DEFLATE over thirty-two lanes; matches are deferred. "
        .iter()
        .cycle()
        .take(65536)
        .copied()
        .collect();
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for n in [1usize, 2, 3, 31, 32, 33, 63, 64, 65, 100, 1000, 4097] {
        inputs.push((format!("random {n}"), random(n)));
        inputs.push((format!("text {n}"), text[..n].to_vec()));
    }
    inputs.push(("zeros 65536".into(), vec![0; 65536]));
    inputs.push(("zeros 65535".into(), vec![0; 65535]));
    inputs.push(("random 65536".into(), random(65536)));
    inputs.push(("random 65535".into(), random(65535)));
    inputs.push(("text 65536".into(), text.clone()));
    inputs.push(("period 3".into(), (0..65536).map(|i| [1u8, 2, 3][i % 3]).collect()));
    for distance in [32768usize, 32769, 49152, 49153, 65000] {
        let head = random(distance);
        let mut v = head.clone();
        v.extend_from_slice(&head[..(65536 - distance).min(head.len())]);
        inputs.push((format!("repeat at {distance}"), v));
    }
    let mut mixed = random(20_000);
    mixed.extend_from_slice(&text[..25_000]);
    mixed.extend(std::iter::repeat_n(9u8, 20_536));
    inputs.push(("random then text then run".into(), mixed));
    let mut matches258 = random(300);
    matches258.extend_from_within(0..258);
    matches258.extend_from_within(0..259);
    inputs.push(("matches of 258 and 259".into(), matches258));
    inputs
}

#[test]
fn reference_tiles_decode_byte_exact_at_every_level() {
    let mut decoder = Decoder::new();
    let mut checked = 0;
    for (name, input) in edge_inputs() {
        for level in 0..=12u8 {
            let tile = reference::Compressor::new(level).compress_tile(&input);
            let mut out = vec![0u8; input.len()];
            decoder
                .decode_tile(&tile, &mut out)
                .unwrap_or_else(|e| panic!("{name} at reference level {level}: {e:?}"));
            assert!(out == input, "{name} at reference level {level}: wrong bytes");
            checked += 1;
        }
    }
    assert!(checked > 400);
}

#[test]
fn dsr_tiles_decode_byte_exact_with_the_reference_at_every_level() {
    let mut theirs = reference::Decompressor::new();
    let mut ours = Decoder::new();
    for (name, input) in edge_inputs() {
        for level in 0..=12u8 {
            let mut tile = Vec::new();
            Encoder::new(Level::new(level)).encode_tile(&input, &mut tile);
            assert_eq!(tile.len() % 4, 0);
            let mut out = vec![0u8; input.len()];
            theirs
                .decompress_tile(&tile, &mut out)
                .unwrap_or_else(|e| panic!("{name} at dsr level {level}: reference says {e:?}"));
            assert!(
                out == input,
                "{name} at dsr level {level}: reference decodes wrong bytes"
            );
            out.fill(0);
            ours.decode_tile(&tile, &mut out).unwrap();
            assert!(out == input);
        }
    }
}

#[test]
fn incompressible_tiles_never_grow_past_stored() {
    let mut rng = fastrand::Rng::with_seed(5);
    let input: Vec<u8> = (0..65536).map(|_| rng.u8(..)).collect();
    for level in 0..=12u8 {
        let mut tile = Vec::new();
        Encoder::new(Level::new(level)).encode_tile(&input, &mut tile);
        assert!(tile.len() <= 65672, "level {level}: {} bytes", tile.len());
    }
}

#[test]
fn a_mixed_corpus_round_trips_through_both_codecs() {
    // Tiles of everything a game ships: text, machine code, compressed media, noise, zeros.
    let mut corpus = Vec::new();
    for path in ["/usr/bin/ls", "/usr/bin/cp", "/usr/lib/os-release"] {
        if let Ok(bytes) = std::fs::read(path) {
            corpus.extend_from_slice(&bytes[..bytes.len().min(300_000)]);
        }
    }
    let mut rng = fastrand::Rng::with_seed(11);
    corpus.extend((0..200_000).map(|_| rng.u8(..)));
    corpus.extend(std::iter::repeat_n(0u8, 100_000));
    corpus.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 & 0x3F | 0x40));
    let mut ours = Decoder::new();
    let mut theirs = reference::Decompressor::new();
    for level in [1u8, 6, 9, 12] {
        let mut encoder = Encoder::new(Level::new(level));
        let mut reference_encoder = reference::Compressor::new(level);
        for (i, chunk) in corpus.chunks(65536).enumerate() {
            let mut out = vec![0u8; chunk.len()];
            let mut tile = Vec::new();
            encoder.encode_tile(chunk, &mut tile);
            theirs
                .decompress_tile(&tile, &mut out)
                .unwrap_or_else(|e| panic!("tile {i} level {level}: {e:?}"));
            assert!(out == chunk);
            let tile = reference_encoder.compress_tile(chunk);
            out.fill(0);
            ours.decode_tile(&tile, &mut out)
                .unwrap_or_else(|e| panic!("tile {i} level {level}: {e:?}"));
            assert!(out == chunk);
        }
    }
}
