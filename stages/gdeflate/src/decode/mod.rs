//! The tile decoder. Every read of the input and every write of the output is bounds-checked;
//! corrupt input returns an error, and the work is bounded by the input and output sizes (every
//! step consumes input bits or produces output bytes).
//!
//! This file is the front door: [`Decoder`], a tile's block loop and the dynamic block header.
//! The rooms behind it, each with one concern:
//!
//! - `lanes.rs`: the lanes (`Lanes`: 32 bit reservoirs, the matches they owe, the word
//!   stream) and the one refill. Its invariant keeps the loops free of per-read checks.
//! - `entry.rs`: what a table entry packs for the loops, and how an element is read with one.
//! - `stored.rs`: stored blocks.
//! - `loops.rs`: which loop runs a Huffman block, and the fast ones (branch-free rounds,
//!   branching rounds for literal-heavy blocks).
//! - `avx512.rs`: the branch-free round on AVX-512 (feature `simd`, chosen at run time).
//! - `careful.rs`: the one-lane loop that ends every block, names its faults, and is the
//!   fast loops' yardstick in the tests.
//! - `copy.rs`: match copies, one at a time and a round's queue.

#[cfg(all(target_arch = "x86_64", feature = "simd"))]
mod avx512;
mod careful;
mod copy;
mod entry;
mod lanes;
mod loops;
mod stored;

use entry::{dist_payload, litlen_payload};
use lanes::Lanes;
use loops::{huffman_block, vector_loops, Loops};
use stored::stored_block;

use crate::error::Reason;
use crate::huffman::{DecodeTable, PairTable};
use crate::tables::{
    fixed_dist_lengths, fixed_litlen_lengths, DIST_SYMS, EOB, LANES, LITLEN_SYMS, PRECODE_ORDER, TILE_SIZE,
};

const PRECODE_TABLE_BITS: u32 = 7;

/// Decodes tiles. Holds the fixed-code tables and scratch for dynamic ones; reuse one per
/// thread.
#[derive(Debug)]
pub struct Decoder {
    fixed: PairTable,
    dynamic: PairTable,
    precode: DecodeTable,
    /// Which loops decode Huffman blocks; tests compare the fast ones with the careful one.
    loops: Loops,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with its fixed tables built.
    pub fn new() -> Self {
        let mut fixed = PairTable::default();
        fixed
            .build_with(
                &fixed_litlen_lengths(),
                litlen_payload,
                &fixed_dist_lengths(),
                dist_payload,
            )
            .expect("the fixed codes are complete");
        Decoder {
            fixed,
            dynamic: PairTable::default(),
            precode: DecodeTable::new(PRECODE_TABLE_BITS),
            loops: vector_loops().unwrap_or(Loops::Fast),
        }
    }

    /// Decodes one tile into `out`, which must be exactly the tile's uncompressed size
    /// (≤ 65536). Fails unless the tile fills `out` exactly and consumes every input byte.
    /// After a failure `out` holds unspecified bytes (partial output, and bytes of elements the
    /// fast loop wrote ahead); callers must not use it.
    pub fn decode_tile(&mut self, src: &[u8], out: &mut [u8]) -> Result<(), Reason> {
        if out.len() > TILE_SIZE {
            return Err(Reason::SizeMismatch);
        }
        if !src.len().is_multiple_of(4) {
            return Err(Reason::Misaligned);
        }
        let mut lanes = Lanes::new(src)?;
        let mut pos = 0usize;
        loop {
            let last = lanes.take(0, 1) == 1;
            let kind = lanes.take(0, 2);
            lanes.refill(0);
            match kind {
                0 => pos = stored_block(&mut lanes, out, pos)?,
                1 | 2 => {
                    let table = if kind == 1 {
                        &self.fixed
                    } else {
                        self.read_dynamic_header(&mut lanes)?;
                        &self.dynamic
                    };
                    // The one call, inlined: see `huffman_block`.
                    pos = huffman_block(&mut lanes, table, out, pos, self.loops)?;
                }
                _ => return Err(Reason::BadBlockType),
            }
            lanes.check()?;
            if last {
                break;
            }
        }
        if pos != out.len() {
            return Err(Reason::OutputShort);
        }
        if lanes.words.cursor != src.len() {
            return Err(Reason::TrailingData);
        }
        Ok(())
    }

    /// Reads a dynamic block's code lengths into the lit/len and distance tables.
    fn read_dynamic_header(&mut self, lanes: &mut Lanes<'_>) -> Result<(), Reason> {
        let hlit = lanes.take(0, 5) as usize + 257;
        let hdist = lanes.take(0, 5) as usize + 1;
        let hclen = lanes.take(0, 4) as usize + 4;
        lanes.refill(0);
        let mut precode_lengths = [0u8; 19];
        for (lane, &sym) in PRECODE_ORDER[..hclen].iter().enumerate() {
            precode_lengths[sym] = lanes.take(lane, 3) as u8;
            lanes.refill(lane);
        }
        self.precode.build(&precode_lengths)?;

        let total = hlit + hdist;
        let mut lengths = [0u8; LITLEN_SYMS + DIST_SYMS];
        let (mut n, mut lane) = (0usize, 0usize);
        while n < total {
            let sym = lanes.symbol(lane, &self.precode)?;
            let (value, repeat) = match sym {
                0..=15 => (sym as u8, 1),
                16 => {
                    let Some(&prev) = n.checked_sub(1).map(|i| &lengths[i]) else {
                        return Err(Reason::BadRepeat);
                    };
                    (prev, 3 + lanes.take(lane, 2) as usize)
                }
                17 => (0, 3 + lanes.take(lane, 3) as usize),
                _ => (0, 11 + lanes.take(lane, 7) as usize),
            };
            if n + repeat > total {
                return Err(Reason::BadRepeat);
            }
            lengths[n..n + repeat].fill(value);
            n += repeat;
            lanes.refill(lane);
            lane = (lane + 1) % LANES;
        }
        lanes.check()?;
        if lengths[EOB] == 0 {
            return Err(Reason::NoEndOfBlock);
        }
        self.dynamic
            .build_with(&lengths[..hlit], litlen_payload, &lengths[hlit..total], dist_payload)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::loops::LITERAL_HEAVY;

    /// The fast loops (the vector round where this CPU has it, and the scalar ones) against the
    /// careful one on the same tiles, whole and with bit flips: all succeed with the same bytes
    /// or all fail.
    #[test]
    fn fast_loops_agree_with_the_careful_one() {
        let mut rng = fastrand::Rng::with_seed(7);
        let text: Vec<u8> = (0..3 * TILE_SIZE)
            .map(|i| b"spawn the door; light level 3\n"[i % 30] ^ (rng.u8(..) < 8) as u8)
            .collect();
        // Literal-heavy Huffman blocks (200 byte values), with a repeat so they hold matches.
        let mut narrow: Vec<u8> = (0..TILE_SIZE).map(|_| rng.u8(..200)).collect();
        narrow.copy_within(1000..9000, 30_000);
        // Matches longer than 258 bytes (length symbol 285 carries 16 extra bits), runs that
        // overlap their source at every short distance, and matches of 17–40 bytes.
        let mut long: Vec<u8> = (0..TILE_SIZE).map(|i| b"vertex buffer 0x1f\n"[i % 19]).collect();
        for (k, chunk) in long.chunks_mut(1024).enumerate() {
            let (distance, len) = (1 + k % 9, 17 + k % 24);
            chunk[..distance].fill(k as u8);
            for i in distance..len {
                chunk[i] = chunk[i - distance];
            }
        }
        long[20_000..45_000].fill(0);

        let vector = vector_loops();
        if vector.is_none() {
            eprintln!("skipped the vector round: this build or CPU lacks it (AVX-512, feature simd)");
        }
        let mut fast: Vec<Decoder> = vector
            .into_iter()
            .chain([Loops::Fast])
            .map(|loops| Decoder {
                loops,
                ..Decoder::new()
            })
            .collect();
        let mut careful = Decoder::new();
        careful.loops = Loops::Careful;
        let (mut kinds, mut failures) = ([false; 2], 0);
        let data = [(&text[..], 1), (&text[..], 9), (&narrow[..], 6), (&long[..], 9)];
        for (data, level) in data {
            for input in data.chunks(TILE_SIZE) {
                let mut tile = Vec::new();
                crate::Encoder::new(crate::Level::new(level)).encode_tile(input, &mut tile);
                let (mut a, mut b) = (vec![0u8; input.len()], vec![0u8; input.len()]);
                for flip in 0..300 {
                    let mut bad = tile.clone();
                    if flip > 0 {
                        let bit = rng.usize(..8 * bad.len());
                        bad[bit / 8] ^= 1 << (bit % 8);
                    }
                    let y = careful.decode_tile(&bad, &mut b);
                    failures += y.is_err() as usize;
                    if flip == 0 {
                        assert_eq!(b, input);
                    }
                    for decoder in &mut fast {
                        let x = decoder.decode_tile(&bad, &mut a);
                        let loops = decoder.loops;
                        assert_eq!(x.is_ok(), y.is_ok(), "{loops:?}, flip {flip}: {x:?}, careful {y:?}");
                        if x.is_ok() {
                            assert_eq!(a, b, "{loops:?}, flip {flip}");
                        }
                        if flip == 0 {
                            kinds[(decoder.dynamic.length_share() < LITERAL_HEAVY) as usize] = true;
                        }
                    }
                }
            }
        }
        assert_eq!(kinds, [true, true], "both kinds of fast loop ran");
        assert!(failures > 100, "the flips made errors ({failures})");
    }

    #[test]
    fn tiny_inputs_are_truncated_not_panics() {
        let mut out = [0u8; 16];
        for len in [0, 4, 124] {
            assert_eq!(
                Decoder::new().decode_tile(&vec![0; len], &mut out),
                Err(Reason::Truncated)
            );
        }
        assert_eq!(Decoder::new().decode_tile(&[0; 130], &mut out), Err(Reason::Misaligned));
    }
}
