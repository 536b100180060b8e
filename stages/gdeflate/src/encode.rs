//! The tile encoder: LZ77 over the tile (hash chains; greedy at low levels, lazy above), one
//! block per tile in whichever of stored, fixed or dynamic Huffman is smallest, then the symbols
//! distributed over the 32 lanes as the decoder will read them (FORMAT.md §2.4).
//!
//! Every input encodes: incompressible data becomes stored blocks, so a tile never grows by more
//! than its stored overhead (65536 bytes → 65672).

use crate::huffman::{canonical_codes, lengths_for};
use crate::lanes::LaneWriter;
use crate::tables::{
    dist_symbol, fixed_dist_lengths, fixed_litlen_lengths, length_symbol, DIST_EXTRA, DIST_SYMS, EOB, LANES,
    LENGTH_EXTRA, LITLEN_SYMS, MAX_MATCH, MAX_STORED, MIN_MATCH, PRECODE_ORDER, TILE_SIZE,
};

/// Compression level, 0 (stored) to 12 (slowest, smallest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(u8);

impl Level {
    /// Stored blocks only.
    pub const STORED: Level = Level(0);
    /// Fastest compression.
    pub const FASTEST: Level = Level(1);
    /// The default: within 3% of the reference's level-9 ratio on mixed data, at a fraction of
    /// dsr's own level 9 time (docs/benchmarks.md).
    pub const DEFAULT: Level = Level(6);
    /// Smallest output.
    pub const BEST: Level = Level(12);

    /// A level, clamped to 0..=12.
    pub fn new(level: u8) -> Level {
        Level(level.min(12))
    }

    /// The level's number.
    pub fn get(self) -> u8 {
        self.0
    }

    fn params(self) -> Params {
        // (chain candidates, stop at a match this long, lazy evaluation, skip lazy above)
        let (chain, nice, lazy, good) = match self.0 {
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
            sparse_noise: self.0 < 10,
        }
    }
}

impl Default for Level {
    fn default() -> Self {
        Level::DEFAULT
    }
}

#[derive(Clone, Copy)]
struct Params {
    chain: usize,
    nice: usize,
    lazy: bool,
    good: usize,
    /// A held match this long gets a shorter lazy search.
    good_enough: usize,
    max_insert: usize,
    /// Tiles that look like noise get the sparse search (`find_matches_sparse`).
    sparse_noise: bool,
}

/// A literal (`dist == 0`, `len` is the byte) or a match.
#[derive(Clone, Copy)]
struct Seq {
    len: u32,
    dist: u32,
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

/// Compresses tiles. Holds the match finder's tables; reuse one per thread.
pub struct Encoder {
    level: Level,
    /// Most recent position of each hash, plus one, or `NO_POS`. u16 like `prev`: the two
    /// tables the search walks stay small enough to live in L2.
    head: Vec<u16>,
    /// The previous position with the same hash; a position that links to itself ends its
    /// chain. u16 because a tile has 65536 positions: half the cache footprint of u32.
    prev: Vec<u16>,
    seqs: Vec<Seq>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("level", &self.level).finish()
    }
}

impl Encoder {
    /// An encoder at `level`.
    pub fn new(level: Level) -> Self {
        Encoder {
            level,
            head: vec![NO_POS; 1 << HASH_BITS],
            prev: vec![0; TILE_SIZE],
            seqs: Vec::with_capacity(TILE_SIZE),
        }
    }

    /// The level it compresses at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Compresses one tile, appending it to `out`.
    ///
    /// # Panics
    /// If `input` is empty or longer than 65536 bytes: a tile holds 1..=65536 bytes.
    pub fn encode_tile(&mut self, input: &[u8], out: &mut Vec<u8>) {
        assert!(
            !input.is_empty() && input.len() <= TILE_SIZE,
            "a tile holds 1..=65536 bytes"
        );
        let params = self.level.params();
        self.seqs.clear();
        if params.chain > 0 {
            self.head.fill(NO_POS);
            if params.sparse_noise && looks_like_noise(input) {
                self.find_matches_sparse(input, params);
            } else {
                self.find_matches(input, params);
            }
        }
        let mut writer = LaneWriter::new();
        let plan = BlockPlan::new(&self.seqs, input.len(), params.chain > 0);
        plan.write(&mut writer, &self.seqs, input);
        writer.finish(out);
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BlockKind {
    Stored,
    Fixed,
    Dynamic,
}

/// The dynamic block's header: code lengths, run-length coded.
struct DynamicHeader {
    hlit: usize,
    hdist: usize,
    hclen: usize,
    precode_lengths: [u8; 19],
    precode_codes: [u32; 19],
    /// (precode symbol, extra bits value)
    runs: Vec<(u8, u8)>,
}

/// What one tile will be written as.
struct BlockPlan {
    kind: BlockKind,
    litlen_lengths: [u8; LITLEN_SYMS],
    dist_lengths: [u8; DIST_SYMS],
    header: Option<DynamicHeader>,
}

impl BlockPlan {
    fn new(seqs: &[Seq], input_len: usize, try_huffman: bool) -> Self {
        let stored_bits = stored_cost(input_len);
        let mut plan = BlockPlan {
            kind: BlockKind::Stored,
            litlen_lengths: [0; LITLEN_SYMS],
            dist_lengths: [0; DIST_SYMS],
            header: None,
        };
        if !try_huffman {
            return plan;
        }
        let mut litlen_freq = [0u32; LITLEN_SYMS];
        let mut dist_freq = [0u32; DIST_SYMS];
        for s in seqs {
            if s.dist == 0 {
                litlen_freq[s.len as usize] += 1;
            } else {
                litlen_freq[length_symbol(s.len as usize).0] += 1;
                dist_freq[dist_symbol(s.dist as usize).0] += 1;
            }
        }
        litlen_freq[EOB] = 1;

        let fixed_bits = 3 + data_cost(&litlen_freq, &dist_freq, &fixed_litlen_lengths(), &fixed_dist_lengths());

        let mut litlen_lengths = [0u8; LITLEN_SYMS];
        let mut dist_lengths = [0u8; DIST_SYMS];
        lengths_for(&litlen_freq[..286], 15, &mut litlen_lengths[..286]);
        lengths_for(&dist_freq, 15, &mut dist_lengths);
        if dist_lengths.iter().all(|&l| l == 0) {
            // No matches: one unused 1-bit distance code keeps the header well-formed.
            dist_lengths[0] = 1;
        }
        let header = DynamicHeader::new(&litlen_lengths, &dist_lengths);
        let dynamic_bits = 3 + header.cost() + data_cost(&litlen_freq, &dist_freq, &litlen_lengths, &dist_lengths);

        if dynamic_bits <= fixed_bits && dynamic_bits < stored_bits {
            plan.kind = BlockKind::Dynamic;
            plan.litlen_lengths = litlen_lengths;
            plan.dist_lengths = dist_lengths;
            plan.header = Some(header);
        } else if fixed_bits < stored_bits {
            plan.kind = BlockKind::Fixed;
            plan.litlen_lengths = fixed_litlen_lengths();
            plan.dist_lengths = fixed_dist_lengths();
        }
        plan
    }

    fn write(&self, w: &mut LaneWriter, seqs: &[Seq], input: &[u8]) {
        match self.kind {
            BlockKind::Stored => {
                let mut chunks = input.chunks(MAX_STORED).peekable();
                while let Some(chunk) = chunks.next() {
                    write_stored(w, chunk, chunks.peek().is_none());
                }
            }
            BlockKind::Fixed | BlockKind::Dynamic => {
                w.put(0, 1, 1);
                w.put(0, if self.kind == BlockKind::Fixed { 1 } else { 2 }, 2);
                w.refill(0);
                if let Some(header) = &self.header {
                    header.write(w);
                }
                let mut litlen_codes = [0u32; LITLEN_SYMS];
                let mut dist_codes = [0u32; DIST_SYMS];
                let complete = canonical_codes(&self.litlen_lengths, &mut litlen_codes)
                    && canonical_codes(&self.dist_lengths, &mut dist_codes);
                debug_assert!(complete, "built codes are never over-subscribed");
                write_sequences(
                    w,
                    seqs,
                    &self.litlen_lengths,
                    &litlen_codes,
                    &self.dist_lengths,
                    &dist_codes,
                );
            }
        }
    }
}

fn stored_cost(len: usize) -> u64 {
    let blocks = len.div_ceil(MAX_STORED).max(1) as u64;
    blocks * (3 + 16) + 8 * len as u64
}

fn data_cost(litlen_freq: &[u32], dist_freq: &[u32], litlen_lengths: &[u8], dist_lengths: &[u8]) -> u64 {
    let mut bits = 0u64;
    for (sym, &f) in litlen_freq.iter().enumerate() {
        if f > 0 {
            let extra = if sym > 256 { LENGTH_EXTRA[sym - 257] } else { 0 };
            bits += f as u64 * (litlen_lengths[sym] as u64 + extra as u64);
        }
    }
    for (sym, &f) in dist_freq.iter().enumerate() {
        bits += f as u64 * (dist_lengths[sym] as u64 + DIST_EXTRA[sym] as u64);
    }
    bits
}

impl DynamicHeader {
    fn new(litlen_lengths: &[u8; LITLEN_SYMS], dist_lengths: &[u8; DIST_SYMS]) -> Self {
        let hlit = 257
            + litlen_lengths[257..286]
                .iter()
                .rposition(|&l| l != 0)
                .map_or(0, |p| p + 1);
        let hdist = 1 + dist_lengths.iter().rposition(|&l| l != 0).unwrap_or(0);
        let all: Vec<u8> = litlen_lengths[..hlit]
            .iter()
            .chain(&dist_lengths[..hdist])
            .copied()
            .collect();

        // Run-length code the lengths: 16 repeats the previous length 3-6 times, 17 and 18 are
        // runs of 3-10 and 11-138 zeros.
        let mut runs = Vec::new();
        let mut i = 0;
        while i < all.len() {
            let value = all[i];
            let mut run = 1;
            while i + run < all.len() && all[i + run] == value {
                run += 1;
            }
            i += run;
            if value == 0 {
                let mut left = run;
                while left >= 11 {
                    let take = left.min(138);
                    runs.push((18, (take - 11) as u8));
                    left -= take;
                }
                if left >= 3 {
                    runs.push((17, (left - 3) as u8));
                    left = 0;
                }
                runs.extend(std::iter::repeat_n((0, 0), left));
            } else {
                runs.push((value, 0));
                let mut left = run - 1;
                while left >= 3 {
                    let take = left.min(6);
                    runs.push((16, (take - 3) as u8));
                    left -= take;
                }
                runs.extend(std::iter::repeat_n((value, 0), left));
            }
        }
        let mut freq = [0u32; 19];
        for &(sym, _) in &runs {
            freq[sym as usize] += 1;
        }
        let mut precode_lengths = [0u8; 19];
        lengths_for(&freq, 7, &mut precode_lengths);
        let mut precode_codes = [0u32; 19];
        let complete = canonical_codes(&precode_lengths, &mut precode_codes);
        debug_assert!(complete);
        let hclen = 4.max(
            1 + PRECODE_ORDER
                .iter()
                .rposition(|&s| precode_lengths[s] != 0)
                .unwrap_or(0),
        );
        DynamicHeader {
            hlit,
            hdist,
            hclen,
            precode_lengths,
            precode_codes,
            runs,
        }
    }

    fn cost(&self) -> u64 {
        let mut bits = 14 + 3 * self.hclen as u64;
        for &(sym, _) in &self.runs {
            bits += self.precode_lengths[sym as usize] as u64 + repeat_bits(sym) as u64;
        }
        bits
    }

    fn write(&self, w: &mut LaneWriter) {
        w.put(0, (self.hlit - 257) as u32, 5);
        w.put(0, (self.hdist - 1) as u32, 5);
        w.put(0, (self.hclen - 4) as u32, 4);
        w.refill(0);
        for (lane, &sym) in PRECODE_ORDER[..self.hclen].iter().enumerate() {
            w.put(lane, self.precode_lengths[sym] as u32, 3);
            w.refill(lane);
        }
        for (j, &(sym, extra)) in self.runs.iter().enumerate() {
            let lane = j % LANES;
            w.put(
                lane,
                self.precode_codes[sym as usize],
                self.precode_lengths[sym as usize] as u32,
            );
            let bits = repeat_bits(sym);
            if bits > 0 {
                w.put(lane, extra as u32, bits);
            }
            w.refill(lane);
        }
    }
}

fn repeat_bits(sym: u8) -> u32 {
    match sym {
        16 => 2,
        17 => 3,
        18 => 7,
        _ => 0,
    }
}

fn write_stored(w: &mut LaneWriter, chunk: &[u8], last: bool) {
    w.put(0, last as u32, 1);
    w.put(0, 0, 2);
    w.refill(0);
    w.put(0, chunk.len() as u32, 16);
    for (k, &byte) in chunk.iter().enumerate() {
        let lane = k % LANES;
        w.put(lane, byte as u32, 8);
        w.refill(lane);
    }
    for j in 0..LANES {
        w.refill((chunk.len() + j) % LANES);
    }
}

/// The data of a Huffman block: lanes round-robin, a lane that sent a length sends its distance
/// on its next visit; then EOB and the end-of-block pass from the EOB lane.
fn write_sequences(
    w: &mut LaneWriter,
    seqs: &[Seq],
    litlen_lengths: &[u8],
    litlen_codes: &[u32],
    dist_lengths: &[u8],
    dist_codes: &[u32],
) {
    let mut owed: [Option<u32>; LANES] = [None; LANES];
    let put_dist = |w: &mut LaneWriter, lane: usize, dist: u32| {
        let (sym, extra) = dist_symbol(dist as usize);
        w.put(lane, dist_codes[sym], dist_lengths[sym] as u32);
        if DIST_EXTRA[sym] > 0 {
            w.put(lane, extra, DIST_EXTRA[sym]);
        }
    };
    let mut next = seqs.iter();
    let mut lane = 0;
    loop {
        if let Some(dist) = owed[lane].take() {
            put_dist(w, lane, dist);
        } else {
            match next.next() {
                Some(s) if s.dist == 0 => {
                    let sym = s.len as usize;
                    w.put(lane, litlen_codes[sym], litlen_lengths[sym] as u32);
                }
                Some(s) => {
                    let (sym, extra) = length_symbol(s.len as usize);
                    w.put(lane, litlen_codes[sym], litlen_lengths[sym] as u32);
                    if LENGTH_EXTRA[sym - 257] > 0 {
                        w.put(lane, extra, LENGTH_EXTRA[sym - 257]);
                    }
                    owed[lane] = Some(s.dist);
                }
                None => {
                    w.put(lane, litlen_codes[EOB], litlen_lengths[EOB] as u32);
                    break;
                }
            }
        }
        w.refill(lane);
        lane = (lane + 1) % LANES;
    }
    for j in 0..LANES {
        let m = (lane + j) % LANES;
        if let Some(dist) = owed[m].take() {
            put_dist(w, m, dist);
        }
        w.refill(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
