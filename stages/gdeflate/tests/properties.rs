//! Properties and hostile input: any bytes round-trip at every level (through dsr and through the
//! reference); truncations, bit flips and hand-made invalid streams are errors, never panics.

use dsr_gdeflate::lanes::LaneWriter;
use dsr_gdeflate::{compress, decompress, Decoder, Encoder, Level, Reason};
use dsr_gdeflate_reference as reference;
use proptest::prelude::*;

/// Inputs with structure an encoder must get right: runs, repeats at many distances, noise.
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..3000),
        (1usize..200_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        (prop::collection::vec(any::<u8>(), 1..64), 1usize..100_000).prop_map(|(unit, n)| unit
            .iter()
            .cycle()
            .take(n)
            .copied()
            .collect()),
        (prop::collection::vec(any::<u8>(), 1..40_000), 1usize..70_000).prop_map(|(noise, dist)| {
            let mut v = noise.clone();
            let d = dist.min(v.len());
            let tail: Vec<u8> = v[v.len() - d..].to_vec();
            v.extend_from_slice(&tail);
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_bytes_round_trip_at_every_level(input in data()) {
        for level in 0..=12 {
            let stream = compress(&input, Level::new(level)).unwrap();
            let mut out = vec![0u8; input.len()];
            decompress(&stream, &mut out).unwrap();
            prop_assert!(out == input, "level {}", level);
        }
    }

    #[test]
    fn the_reference_decodes_what_dsr_encodes(input in data(), level in 0u8..=12) {
        let mut theirs = reference::Decompressor::new();
        let mut encoder = Encoder::new(Level::new(level));
        for chunk in input.chunks(65536) {
            let mut tile = Vec::new();
            encoder.encode_tile(chunk, &mut tile);
            let mut out = vec![0u8; chunk.len()];
            theirs.decompress_tile(&tile, &mut out).unwrap();
            prop_assert!(out == chunk);
        }
    }
}

fn tile_of(input: &[u8], level: u8) -> Vec<u8> {
    let mut tile = Vec::new();
    Encoder::new(Level::new(level)).encode_tile(input, &mut tile);
    tile
}

#[test]
fn every_truncation_is_an_error() {
    let text: Vec<u8> = b"truncate me at every word boundary "
        .iter()
        .cycle()
        .take(20_000)
        .copied()
        .collect();
    for level in [0u8, 1, 9] {
        let tile = tile_of(&text, level);
        let mut out = vec![0u8; text.len()];
        for len in 0..tile.len() {
            let result = Decoder::new().decode_tile(&tile[..len], &mut out);
            assert!(result.is_err(), "level {level}: {len} of {} bytes decoded", tile.len());
        }
        Decoder::new().decode_tile(&tile, &mut out).unwrap();
    }
}

#[test]
fn bit_flips_never_panic() {
    let mut rng = fastrand::Rng::with_seed(77);
    let input: Vec<u8> = (0..65536u32).map(|i| (i * 31 / 7) as u8 ^ (rng.u8(..) & 3)).collect();
    let tile = tile_of(&input, 9);
    let mut out = vec![0u8; input.len()];
    let (mut errors, mut silent) = (0, 0);
    for _ in 0..3000 {
        let mut bad = tile.clone();
        let at = rng.usize(..bad.len());
        bad[at] ^= 1 << rng.u32(0..8);
        match Decoder::new().decode_tile(&bad, &mut out) {
            Err(_) => errors += 1,
            Ok(()) => silent += 1,
        }
    }
    // GDeflate has no checksum: most flips decode "fine" to other bytes (FORMAT.md §2.9 measured
    // about a quarter caught, by any decoder); that is what the archive's tile hashes are for.
    // A decoder that stopped validating would catch far fewer.
    assert!(errors * 5 >= errors + silent, "errors {errors}, silent {silent}");
}

#[test]
fn wrong_sizes_and_trailing_bytes_are_errors() {
    let input = vec![5u8; 1000];
    let tile = tile_of(&input, 6);
    let mut d = Decoder::new();
    assert_eq!(d.decode_tile(&tile, &mut vec![0; 999]), Err(Reason::OutputOverflow));
    assert_eq!(d.decode_tile(&tile, &mut vec![0; 1001]), Err(Reason::OutputShort));
    let mut longer = tile.clone();
    longer.extend_from_slice(&[0; 4]);
    assert_eq!(d.decode_tile(&longer, &mut vec![0; 1000]), Err(Reason::TrailingData));
    assert_eq!(d.decode_tile(&tile, &mut vec![0; 70_000]), Err(Reason::SizeMismatch));
}

/// Writes a fixed-Huffman code for `sym` (RFC 1951's fixed lit/len code) on `lane`.
fn put_fixed(w: &mut LaneWriter, lane: usize, sym: u32) {
    let (code, len) = match sym {
        0..=143 => (0x30 + sym, 8),
        144..=255 => (0x190 + sym - 144, 9),
        256..=279 => (sym - 256, 7),
        _ => (0xC0 + sym - 280, 8),
    };
    w.put(lane, code.reverse_bits() >> (32 - len), len);
}

fn decode(w: LaneWriter, size: usize) -> Result<(), Reason> {
    let mut tile = Vec::new();
    w.finish(&mut tile);
    Decoder::new().decode_tile(&tile, &mut vec![0u8; size])
}

fn block_header(w: &mut LaneWriter, kind: u32) {
    w.put(0, 1, 1);
    w.put(0, kind, 2);
    w.refill(0);
}

#[test]
fn block_type_3_is_refused() {
    let mut w = LaneWriter::new();
    block_header(&mut w, 3);
    assert_eq!(decode(w, 1), Err(Reason::BadBlockType));
}

#[test]
fn length_symbols_286_and_287_are_refused() {
    for sym in [286, 287] {
        let mut w = LaneWriter::new();
        block_header(&mut w, 1);
        put_fixed(&mut w, 0, sym);
        w.refill(0);
        assert_eq!(decode(w, 100), Err(Reason::BadLengthSymbol));
    }
}

#[test]
fn a_match_before_the_start_of_the_tile_is_refused() {
    // Lane 0: a length of 3 (symbol 257) as the very first symbol; lane 1: end of block; the end
    // pass then reads lane 0's distance (1), which reaches before byte 0.
    let mut w = LaneWriter::new();
    block_header(&mut w, 1);
    put_fixed(&mut w, 0, 257);
    w.refill(0);
    put_fixed(&mut w, 1, 256);
    for j in 0..32 {
        let lane = (1 + j) % 32;
        if lane == 0 {
            w.put(0, 0, 5); // distance symbol 0: distance 1
        }
        w.refill(lane);
    }
    assert_eq!(decode(w, 3), Err(Reason::DistanceTooFar));
}

/// A dynamic block header whose code-length code has the given 3-bit lengths for
/// (16, 17, 18, 0), followed by `symbols` precode symbols as (code bits, length, extra, extra
/// length) on lanes 0, 1, ...
fn dynamic_header(precode: [u32; 4], symbols: &[(u32, u32, u32, u32)]) -> LaneWriter {
    let mut w = LaneWriter::new();
    block_header(&mut w, 2);
    w.put(0, 0, 5); // HLIT = 257
    w.put(0, 0, 5); // HDIST = 1
    w.put(0, 0, 4); // HCLEN = 4
    w.refill(0);
    for (lane, &len) in precode.iter().enumerate() {
        w.put(lane, len, 3);
        w.refill(lane);
    }
    for (j, &(code, len, extra, extra_len)) in symbols.iter().enumerate() {
        let lane = j % 32;
        w.put(lane, code, len);
        if extra_len > 0 {
            w.put(lane, extra, extra_len);
        }
        w.refill(lane);
    }
    w
}

#[test]
fn an_over_subscribed_code_is_refused() {
    let w = dynamic_header([1, 1, 1, 0], &[]);
    assert_eq!(decode(w, 10), Err(Reason::OversubscribedCode));
}

#[test]
fn a_repeat_with_nothing_to_repeat_is_refused() {
    // Precode: 16 and 0 with one bit each; canonical codes go in symbol order, so 0 is code 0
    // and 16 is code 1. The first symbol is 16.
    let w = dynamic_header([1, 0, 0, 1], &[(1, 1, 0, 2)]);
    assert_eq!(decode(w, 10), Err(Reason::BadRepeat));
}

#[test]
fn a_repeat_past_the_table_is_refused() {
    // Precode: 18 and 0 with one bit each (canonical: 0 → code 0, 18 → code 1). Two runs of 138
    // zeros overflow HLIT + HDIST = 258 lengths.
    let w = dynamic_header([0, 0, 1, 1], &[(1, 1, 127, 7), (1, 1, 127, 7)]);
    assert_eq!(decode(w, 10), Err(Reason::BadRepeat));
}

#[test]
fn a_stored_block_longer_than_the_tile_is_refused() {
    let mut w = LaneWriter::new();
    block_header(&mut w, 0);
    w.put(0, 5, 16);
    assert_eq!(decode(w, 4), Err(Reason::OutputOverflow));
}

#[test]
fn an_empty_stored_block_is_legal() {
    // LEN = 0 in a non-final block, then a final stored block of one byte.
    let mut w = LaneWriter::new();
    w.put(0, 0, 1);
    w.put(0, 0, 2);
    w.refill(0);
    w.put(0, 0, 16);
    for j in 0..32 {
        w.refill(j);
    }
    block_header(&mut w, 0);
    w.put(0, 1, 16);
    w.put(0, 0xAB, 8);
    w.refill(0);
    for j in 0..32 {
        w.refill((1 + j) % 32);
    }
    let mut tile = Vec::new();
    w.finish(&mut tile);
    let mut out = [0u8; 1];
    Decoder::new().decode_tile(&tile, &mut out).unwrap();
    assert_eq!(out, [0xAB]);
    let mut theirs = [0u8; 1];
    reference::Decompressor::new()
        .decompress_tile(&tile, &mut theirs)
        .unwrap();
    assert_eq!(theirs, [0xAB], "the reference agrees");
}

/// A fixed-Huffman block of `literals` (non-final), then a final stored block of `stored`: the
/// stored block starts with the lanes at whatever bit counts the literals left, which is what
/// the stored path's 128-byte groups must get right.
fn huffman_then_stored(literals: &[u8], stored: &[u8]) -> Vec<u8> {
    let mut w = LaneWriter::new();
    w.put(0, 0, 1);
    w.put(0, 1, 2);
    w.refill(0);
    let mut lane = 0;
    for &byte in literals {
        put_fixed(&mut w, lane, byte as u32);
        w.refill(lane);
        lane = (lane + 1) % 32;
    }
    put_fixed(&mut w, lane, 256);
    for j in 0..32 {
        w.refill((lane + j) % 32);
    }
    block_header(&mut w, 0);
    w.put(0, stored.len() as u32, 16);
    for (k, &byte) in stored.iter().enumerate() {
        w.put(k % 32, byte as u32, 8);
        w.refill(k % 32);
    }
    for j in 0..32 {
        w.refill((stored.len() + j) % 32);
    }
    let mut tile = Vec::new();
    w.finish(&mut tile);
    tile
}

#[test]
fn stored_blocks_decode_from_any_lane_state() {
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for literal_count in [0, 1, 5, 31, 32, 33, 47, 70] {
        // Literals of 8 and 9 bits, so lanes end the Huffman block at different counts.
        let literals: Vec<u8> = (0..literal_count)
            .map(|i| if i % 3 == 0 { 200 } else { i as u8 })
            .collect();
        for stored_len in [1, 31, 32, 33, 159, 160, 161, 288, 1000, 4103] {
            let stored = &noise[..stored_len];
            let tile = huffman_then_stored(&literals, stored);
            let expected: Vec<u8> = literals.iter().chain(stored).copied().collect();
            let mut ours = vec![0u8; expected.len()];
            Decoder::new()
                .decode_tile(&tile, &mut ours)
                .unwrap_or_else(|e| panic!("{literal_count} literals, {stored_len} stored: {e:?}"));
            assert!(ours == expected, "{literal_count} literals, {stored_len} stored");
            let mut theirs = vec![0u8; expected.len()];
            reference::Decompressor::new()
                .decompress_tile(&tile, &mut theirs)
                .unwrap();
            assert!(theirs == expected, "the reference agrees on the hand-built tile");
            // Cut short inside the stored bytes: an error, never a panic or wrong bytes.
            let cut = &tile[..(tile.len() - 4 * (1 + stored_len / 200)).max(4) / 4 * 4];
            assert!(Decoder::new().decode_tile(cut, &mut ours).is_err());
        }
    }
}
