//! The match finder: LZ77 over one tile by hash chains, greedy at low levels and lazy above,
//! with a sparse search for tiles that look like noise. Its output is the tile as literals and
//! matches (`Seq`), which `block.rs` codes; what a level means for the search is `Params`.
//! Nothing here knows about lanes or Huffman codes.

use super::Level;
use crate::tables::{MAX_MATCH, MIN_MATCH, TILE_SIZE};

/// How hard the matcher searches; one set per level (`Params::for_level`).
#[derive(Clone, Copy)]
pub(super) struct Params {
    /// Chain candidates searched at a position (0: no search, stored blocks only).
    pub(super) chain: usize,
    /// Stop searching at a match this long.
    pub(super) nice: usize,
    /// Lazy evaluation: hold a match back one position in case a longer one starts there.
    pub(super) lazy: bool,
    /// Emit a match this long at once, without the lazy look-ahead.
    pub(super) good: usize,
    /// A held match this long gets a shorter lazy search.
    pub(super) good_enough: usize,
    /// Matches up to this long have every position indexed; longer ones only their ends.
    pub(super) max_insert: usize,
    /// Tiles that look like noise get the sparse search (`find_matches_sparse`).
    pub(super) sparse_noise: bool,
}

impl Params {
    pub(super) fn for_level(level: Level) -> Params {
        // (chain candidates, stop at a match this long, lazy evaluation, skip lazy above)
        let (chain, nice, lazy, good) = match level.get() {
            0 => (0, 0, false, 0),
            1 => (4, 16, false, 0),
            2 => (8, 24, false, 0),
            3 => (16, 32, false, 0),
            4 => (16, 32, true, 16),
            5 => (32, 64, true, 16),
            6 => (52, 128, true, 16),
            7 => (128, 192, true, 96),
            8 => (256, 258, true, 128),
            9 => (512, 512, true, 258),
            10 => (1024, 1024, true, 512),
            11 => (2048, 4096, true, 1024),
            _ => (4096, MAX_MATCH, true, 4096),
        };
        Params {
            chain,
            nice,
            lazy,
            good,
            good_enough: (good / 4).max(8),
            // Greedy levels index only the start of long matches (zlib's max_insert_length).
            max_insert: if lazy { usize::MAX } else { GREEDY_MAX_INSERT },
            // The levels below 10 do not search noise position by position.
            sparse_noise: level.get() < 10,
        }
    }
}

/// A literal (`dist == 0`, `len` is the byte) or a match.
#[derive(Clone, Copy)]
pub(super) struct Seq {
    pub(super) len: u32,
    pub(super) dist: u32,
}

const HASH_BITS: u32 = 16;
/// Bytes the match finder hashes: candidates share at least this prefix.
const HASHED: usize = 4;
/// An empty bucket: buckets hold position + 1 (the last 3 positions of a tile are never
/// hashed, so every hashed position + 1 fits in a u16).
const NO_POS: u16 = 0;
/// Matches up to this long have every position indexed in a greedy search; longer ones only
/// their start (and tail).
const GREEDY_MAX_INSERT: usize = 16;
/// Positions of a match indexed, counting back from its end (see `emit_match`).
const LONG_MATCH_TAIL: usize = 256;

/// The match finder's tables and its output; one per encoder, reused tile after tile.
pub(super) struct Matcher {
    /// Most recent position of each hash, plus one, or `NO_POS`. u16 like `prev`: the two
    /// tables the search walks stay small enough to live in L2.
    head: Vec<u16>,
    /// The previous position with the same hash; a position that links to itself ends its
    /// chain. u16 because a tile has 65536 positions: half the cache footprint of u32.
    prev: Vec<u16>,
    seqs: Vec<Seq>,
}

impl Matcher {
    pub(super) fn new() -> Self {
        Matcher {
            head: vec![NO_POS; 1 << HASH_BITS],
            prev: vec![0; TILE_SIZE],
            seqs: Vec::with_capacity(TILE_SIZE),
        }
    }

    /// `input` as literals and matches, searched as `params` say (with no chain, no search:
    /// nothing, for stored blocks).
    pub(super) fn sequences(&mut self, input: &[u8], params: Params) -> &[Seq] {
        self.seqs.clear();
        if params.chain > 0 {
            self.head.fill(NO_POS);
            if params.sparse_noise && looks_like_noise(input) {
                self.find_matches_sparse(input, params);
            } else {
                self.find_matches(input, params);
            }
        }
        &self.seqs
    }

    fn find_matches(&mut self, input: &[u8], params: Params) {
        let n = input.len();
        let mut i = 0;
        // Lazy evaluation: a match found at `held.0` is held back one position in case the
        // next position starts a longer one.
        let mut held: Option<(usize, usize, usize)> = None;
        while i < n {
            // Touch what the next position's search will load first (its bucket, and the
            // candidate the bucket names): safe Rust has no prefetch, but a load whose value is
            // kept alive starts the cache misses now, overlapped with this position's search.
            if i + 1 + HASHED <= n {
                let next = self.head[Self::hash(input, i + 1)] as usize;
                std::hint::black_box(input[next.saturating_sub(1)]);
            }
            let at_least = held.map_or(0, |(_, len, _)| len);
            let (len, dist) = self.longest_match(input, i, params, at_least);
            self.insert(input, i);
            if let Some((at, held_len, held_dist)) = held.take() {
                if len == 0 {
                    // Nothing longer one byte later: emit the held match.
                    self.emit_match(input, at, held_len, held_dist, i + 1);
                    i = at + held_len;
                    continue;
                }
                // A longer match starts here: the held position becomes a literal.
                self.seqs.push(Seq {
                    len: input[at] as u32,
                    dist: 0,
                });
            }
            if len >= MIN_MATCH && params.lazy && len < params.good && i + 1 < n {
                held = Some((i, len, dist));
                i += 1;
            } else if len >= MIN_MATCH {
                let from = if len <= params.max_insert { i + 1 } else { i + len };
                self.emit_match(input, i, len, dist, from);
                i += len;
            } else {
                self.seqs.push(Seq {
                    len: input[i] as u32,
                    dist: 0,
                });
                i += 1;
            }
        }
        debug_assert!(held.is_none(), "a match is only held with input left to look at");
    }

    /// The search for tiles that look like noise: greedy, and the step between searched
    /// positions grows while nothing matches (LZ4's acceleration), because on random bytes or
    /// compressed media nearly every search is in vain and the lazy search's short matches gain
    /// nothing. Repeats are still found: the step drops back to 1 at every match, and a long
    /// repeat is met by some searched position within a few steps.
    fn find_matches_sparse(&mut self, input: &[u8], params: Params) {
        let n = input.len();
        let (mut i, mut misses) = (0, 0usize);
        while i < n {
            let (len, dist) = self.longest_match(input, i, params, 0);
            self.insert(input, i);
            if len >= MIN_MATCH {
                let from = if len <= GREEDY_MAX_INSERT { i + 1 } else { i + len };
                self.emit_match(input, i, len, dist, from);
                i += len;
                misses = 0;
            } else {
                let step = (1 + (misses >> SPARSE_STEP_SHIFT)).min(n - i);
                let literals = input[i..i + step].iter().map(|&byte| Seq {
                    len: byte as u32,
                    dist: 0,
                });
                self.seqs.extend(literals);
                i += step;
                misses += 1;
            }
        }
    }

    /// Records a match at `at` and indexes the positions it covers from `from` on.
    fn emit_match(&mut self, input: &[u8], at: usize, len: usize, dist: usize, from: usize) {
        self.seqs.push(Seq {
            len: len as u32,
            dist: dist as u32,
        });
        // Inside a long match only its last positions are indexed: they are the nearest
        // sources for what follows, and indexing every position of a 64 KiB run would cost
        // more than everything else in its tile.
        let end = at + len;
        for p in from.max(end.saturating_sub(LONG_MATCH_TAIL))..end {
            self.insert(input, p);
        }
    }

    /// Hash of the 4 bytes at `i`: chains of 4-byte prefixes are far shorter than of 3-byte
    /// ones, at the price of length-3 matches (rarely worth their bits anyway).
    #[inline]
    fn hash(input: &[u8], i: usize) -> usize {
        let v = load_u32(input, i);
        (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    }

    #[inline]
    fn insert(&mut self, input: &[u8], i: usize) {
        if i + HASHED <= input.len() {
            let h = Self::hash(input, i);
            let previous = self.head[h];
            self.prev[i] = if previous == NO_POS { i as u16 } else { previous - 1 };
            self.head[h] = i as u16 + 1;
        }
    }

    /// The longest match at `i` longer than `at_least`, searching `params.chain` candidates.
    fn longest_match(&self, input: &[u8], i: usize, params: Params, at_least: usize) -> (usize, usize) {
        let n = input.len();
        if i + HASHED > n {
            return (0, 0);
        }
        let max = (n - i).min(MAX_MATCH);
        let mut best = (at_least.max(MIN_MATCH - 1), 0);
        let head = self.head[Self::hash(input, i)];
        if head == NO_POS {
            return (0, 0);
        }
        // zlib's good_length: when the held match is already decent, look less hard for better.
        let mut chain = if params.lazy && at_least >= params.good_enough {
            (params.chain / 4).max(1)
        } else if at_least >= MIN_MATCH {
            (params.chain / 2).max(1)
        } else {
            params.chain
        };
        let nice = params.nice.min(max);
        // A candidate can only beat `best` if it matches the 4 bytes ending at offset `best`
        // too, and a hash hit is only a match if its first 4 bytes agree: test both words
        // before comparing in full.
        let word = |at: usize| load_u32(input, at);
        let first = word(i);
        let mut probe = best.0.max(3).min(max - 1) - 3;
        let mut tail = word(i + probe);
        let mut c = head as usize - 1;
        loop {
            if word(c + probe) == tail && word(c) == first {
                let len = match_len(input, c, i, max);
                if len > best.0 {
                    best = (len, i - c);
                    if len >= nice {
                        break;
                    }
                    probe = len.min(max - 1) - 3;
                    tail = word(i + probe);
                }
            }
            chain -= 1;
            let next = self.prev[c] as usize;
            if chain == 0 || next >= c {
                break;
            }
            c = next;
        }
        if best.1 == 0 {
            (0, 0)
        } else {
            best
        }
    }
}

/// Searches without a match before the sparse search's step grows by one.
const SPARSE_STEP_SHIFT: u32 = 8;

/// Whether a tile looks like noise: the order-0 entropy of a sample (every fourth byte) is
/// above 7.95 bits per byte, as for random bytes and compressed media (text is near 5,
/// executables 5–7). Short tiles never do: their search is cheap anyway.
fn looks_like_noise(input: &[u8]) -> bool {
    const SAMPLE_STRIDE: usize = 4;
    if input.len() < 4096 {
        return false;
    }
    // Four histograms, so consecutive increments of one byte value do not wait on each other.
    let mut counts = [[0u32; 256]; 4];
    for group in input.chunks_exact(4 * SAMPLE_STRIDE) {
        for (k, histogram) in counts.iter_mut().enumerate() {
            histogram[group[k * SAMPLE_STRIDE] as usize] += 1;
        }
    }
    let total = (input.len() / (4 * SAMPLE_STRIDE) * 4) as f64;
    let bits: f64 = (0..256)
        .map(|byte| counts.iter().map(|h| h[byte]).sum::<u32>())
        .filter(|&c| c > 0)
        .map(|c| {
            let p = c as f64 / total;
            -p * p.log2()
        })
        .sum();
    bits > 7.95
}

/// The 4 bytes at `at`, little-endian: one bounds check and one load (indexing the 4 bytes one by
/// one compiles to four of each).
#[inline(always)]
fn load_u32(input: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(input[at..at + 4].try_into().expect("4 bytes"))
}

/// Length of the common prefix of `input[a..]` and `input[b..]`, at most `max` (a < b).
#[inline]
fn match_len(input: &[u8], a: usize, b: usize, max: usize) -> usize {
    let mut len = 0;
    while len + 8 <= max {
        let x = u64::from_le_bytes(input[a + len..a + len + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(input[b + len..b + len + 8].try_into().expect("8 bytes"));
        let diff = x ^ y;
        if diff != 0 {
            return len + (diff.trailing_zeros() / 8) as usize;
        }
        len += 8;
    }
    while len < max && input[a + len] == input[b + len] {
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{Encoder, Level};

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..len).map(|_| rng.u8(..)).collect()
    }

    #[test]
    fn only_noise_looks_like_noise() {
        assert!(looks_like_noise(&noise(TILE_SIZE, 1)));
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog; "
            .iter()
            .copied()
            .cycle()
            .take(TILE_SIZE)
            .collect();
        assert!(!looks_like_noise(&text));
        assert!(!looks_like_noise(&vec![0; TILE_SIZE]));
        // Bytes drawn from 200 values: under 7.7 bits each, which a Huffman code can use.
        let narrow: Vec<u8> = noise(TILE_SIZE, 2).iter().map(|b| b % 200).collect();
        assert!(!looks_like_noise(&narrow));
        // Too short to judge.
        assert!(!looks_like_noise(&noise(4000, 3)));
    }

    #[test]
    fn the_sparse_search_still_finds_repeated_noise() {
        let half = noise(TILE_SIZE / 2, 4);
        let tile = [half.as_slice(), half.as_slice()].concat();
        assert!(looks_like_noise(&tile));
        for level in [1, 6, 9] {
            let mut out = Vec::new();
            Encoder::new(Level::new(level)).encode_tile(&tile, &mut out);
            assert!(
                out.len() < tile.len() * 6 / 10,
                "level {level}: {} bytes from a tile that repeats itself",
                out.len()
            );
            let mut back = vec![0; tile.len()];
            crate::Decoder::new().decode_tile(&out, &mut back).expect("decodes");
            assert_eq!(back, tile);
        }
    }
}
