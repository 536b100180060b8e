//! The tile decoder. Every read of the input and every write of the output is bounds-checked;
//! corrupt input returns an error, and the work is bounded by the input and output sizes (every
//! step consumes input bits or produces output bytes).
//!
//! The invariant that keeps the inner loop free of per-read checks: a lane holds at least 32
//! bits whenever one of its elements is read. It holds at the start of a tile (every lane is
//! loaded once), and after every element the lane is refilled, which tops it up to ≥ 32 bits or
//! fails as truncated. No element is longer than 31 bits (FORMAT.md §2.3).

#[cfg(all(target_arch = "x86_64", feature = "simd"))]
mod avx512;

use crate::error::Reason;
use crate::huffman::{DecodeTable, PairTable, NO_CODE};
use crate::tables::{
    fixed_dist_lengths, fixed_litlen_lengths, DIST_BASE, DIST_EXTRA, DIST_SYMS, EOB, LANES, LENGTH_BASE, LENGTH_EXTRA,
    LITLEN_SYMS, PRECODE_ORDER, TILE_SIZE,
};

// Entries (u64) carry what the data loop needs: bits 0-7 the code length, 8-15 the bits the
// element takes in all (code and extra bits), 16-31 the extra bits' mask, 32-48 a base (a
// length's or distance's, or a literal's byte, with no extra bits), so every element's value is
// base + (the bits after its code & mask), and the lane moves on by one shift. Flags on top.
const LITERAL: u64 = 1 << 63;
/// Set on every entry that is not an ordinary element: an end of block, a bad symbol and a
/// pattern that is no code (`NO_CODE`, length 0), in either code. The fast loops test only it.
const STOP: u64 = NO_CODE;
const END_OF_BLOCK: u64 = 1 << 62 | STOP;
const BAD_SYMBOL: u64 = STOP;

/// An entry's payload (the table shifts it left 8 and puts the code length below) for an
/// element of `base` with `extra` extra bits and a code of `len` bits.
fn element_payload(base: u32, extra: u32, len: u32) -> u64 {
    (base as u64) << 24 | ((1u64 << extra) - 1) << 8 | (len + extra) as u64
}

/// What a lit/len table entry holds for `sym` with a code of `len` bits.
fn litlen_payload(sym: u32, len: u32) -> u64 {
    match sym {
        0..=255 => LITERAL >> 8 | element_payload(sym, 0, len),
        256 => END_OF_BLOCK >> 8 | len as u64,
        257..=285 => element_payload(LENGTH_BASE[sym as usize - 257], LENGTH_EXTRA[sym as usize - 257], len),
        _ => BAD_SYMBOL >> 8 | len as u64,
    }
}

/// What a distance table entry holds (symbols are 0..=31).
fn dist_payload(sym: u32, len: u32) -> u64 {
    element_payload(DIST_BASE[sym as usize], DIST_EXTRA[sym as usize], len)
}

/// Decodes the element an entry describes from a lane's bits (its code at the bottom):
/// `(value, the lane's bits after it, bits taken)`.
#[inline(always)]
fn element(entry: u64, bits: u64) -> (u32, u64, u32) {
    let len = entry & 0xFF;
    let taken = (entry >> 8) & 0xFF;
    let mask = (entry >> 16) & 0xFFFF;
    let base = (entry >> 32) & 0x1FFFF;
    ((base + ((bits >> len) & mask)) as u32, bits >> taken, taken as u32)
}

const PRECODE_TABLE_BITS: u32 = 7;

/// Below this `PairTable::length_share` (1/8 of the symbols, in 1/32768ths), a block is decoded
/// by the branching loop (`run_literals`): with mostly literals its branches are predicted right
/// nearly always and it does less per element than the branch-free loop (measured: nearly
/// incompressible data coded as Huffman literals 436 → 770 MB/s with the one-lane loop, 1095
/// with the unrolled branching one; text and executables, whose codes give lengths 15–30%, are
/// unchanged with the threshold anywhere from 1/8 to 1/4 and slower with it at 1).
const LITERAL_HEAVY: u32 = 1 << 12;

/// Bits of an output position in a pending match (`BlockState::pending`): `run_fast` checks the
/// position against the end once per round, so within a round it may pass the end by up to 32
/// lengths (under 2^22 in all).
const DST_BITS: u32 = 22;
const DST_MASK: u64 = (1 << DST_BITS) - 1;

/// 32 bit reservoirs fed, in refill order, from one stream of little-endian words.
///
/// Refills are branchless (whether a lane needs a word depends on the code lengths just read,
/// which a branch predictor cannot guess), so running out of input sets `truncated` instead of
/// returning at once. The missing words read as zeros; the flag is checked at every block
/// boundary, and a block cannot run past its output, so the work stays bounded.
struct Lanes<'a> {
    src: &'a [u8],
    cursor: usize,
    bits: [u64; LANES],
    count: [u32; LANES],
    truncated: bool,
}

impl<'a> Lanes<'a> {
    fn new(src: &'a [u8]) -> Result<Self, Reason> {
        let mut lanes = Lanes {
            src,
            cursor: 0,
            bits: [0; LANES],
            count: [0; LANES],
            truncated: false,
        };
        for lane in 0..LANES {
            lanes.refill(lane);
        }
        lanes.check()?;
        Ok(lanes)
    }

    /// Loads the next word into `lane` if it holds fewer than 32 bits (strictly fewer: §2.3).
    #[inline(always)]
    fn refill(&mut self, lane: usize) {
        let count = self.count[lane];
        let need = count < 32;
        let word = match self.src.get(self.cursor..self.cursor + 4) {
            Some(w) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as u64,
            None => {
                self.truncated |= need;
                0
            }
        };
        let mask = (need as u64).wrapping_neg();
        // `count` < 64, so the shift is defined; without `need` the word is masked to zero.
        self.bits[lane] |= (word & mask) << count;
        self.count[lane] = count + 32 * need as u32;
        self.cursor += 4 * need as usize;
    }

    /// Fails if a refill ran out of input.
    #[inline]
    fn check(&self) -> Result<(), Reason> {
        if self.truncated {
            Err(Reason::Truncated)
        } else {
            Ok(())
        }
    }

    /// Takes `n` (≤ 31) bits from `lane`.
    #[inline(always)]
    fn take(&mut self, lane: usize, n: u32) -> u32 {
        debug_assert!(n <= self.count[lane], "lane invariant broken");
        let value = (self.bits[lane] & ((1u64 << n) - 1)) as u32;
        self.bits[lane] >>= n;
        self.count[lane] -= n;
        value
    }

    /// Decodes one Huffman symbol from `lane`.
    #[inline(always)]
    fn symbol(&mut self, lane: usize, table: &DecodeTable) -> Result<usize, Reason> {
        let (sym, len) = table.decode(self.bits[lane]).ok_or(Reason::InvalidCode)?;
        self.bits[lane] >>= len;
        self.count[lane] -= len;
        Ok(sym as usize)
    }
}

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

/// The loops a Huffman block may run.
#[derive(Clone, Copy, Debug)]
enum Loops {
    /// The AVX-512 round while the input lasts, then as `Fast`; holds the proof that this CPU
    /// has the features.
    #[cfg(all(target_arch = "x86_64", feature = "simd"))]
    Vector(avx512::Token),
    /// The branch-free or the branching unrolled loop, by the block's code, then `run`.
    Fast,
    /// Only the careful one-lane loop, `run`.
    #[cfg_attr(not(test), allow(dead_code))]
    Careful,
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
                1 => pos = huffman_block(&mut lanes, &self.fixed, out, pos, self.loops)?,
                2 => {
                    self.read_dynamic_header(&mut lanes)?;
                    pos = huffman_block(&mut lanes, &self.dynamic, out, pos, self.loops)?;
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
        if lanes.cursor != src.len() {
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

/// A stored block: LEN on lane 0, then its bytes round-robin over the lanes.
///
/// Byte k comes from lane k mod 32, one byte per lane per round. The first round goes byte by
/// byte; after it every lane holds ≥ 32 bits, so the next four rounds take exactly each lane's
/// low 32 bits, and each lane refills exactly once among them, in an order that depends only
/// on the lanes' bit counts (which four rounds leave unchanged). So the middle of the block
/// runs 128 bytes at a time: 32 input words in, a 4 × 32 byte transpose out. The last partial
/// group goes byte by byte again.
fn stored_block(lanes: &mut Lanes<'_>, out: &mut [u8], pos: usize) -> Result<usize, Reason> {
    let len = lanes.take(0, 16) as usize;
    let dst = out.get_mut(pos..pos + len).ok_or(Reason::OutputOverflow)?;
    let mut state = BlockState::from_lanes(lanes, pos);
    let src = lanes.src;
    let (first, rest) = dst.split_at_mut(len.min(LANES));
    state.stored_bytes(src, first, 0);
    let mut groups = rest.chunks_exact_mut(4 * LANES);
    if groups.len() > 0 {
        let ranks = state.stored_ranks();
        for group in &mut groups {
            let Some(words) = src.get(state.cursor..state.cursor + 4 * LANES) else {
                // Too little input left for a whole group: the byte path reports it.
                state.stored_bytes(src, group, 0);
                continue;
            };
            let mut low = [0u32; LANES];
            for lane in 0..LANES {
                low[lane] = state.bits[lane] as u32;
                let at = 4 * ranks[lane] as usize;
                let word = u32::from_le_bytes([words[at], words[at + 1], words[at + 2], words[at + 3]]);
                state.bits[lane] = state.bits[lane] >> 32 | (word as u64) << (state.count[lane] - 32);
            }
            state.cursor += 4 * LANES;
            for (round, row) in group.chunks_exact_mut(LANES).enumerate() {
                for (byte, &bits) in row.iter_mut().zip(&low) {
                    *byte = (bits >> (8 * round)) as u8;
                }
            }
        }
    }
    state.stored_bytes(src, groups.into_remainder(), 0);
    for j in 0..LANES {
        state.refill_predictable(src, (len + j) % LANES);
    }
    state.into_lanes(lanes);
    Ok(pos + len)
}

/// A fixed or dynamic Huffman block: lanes visited round-robin, matches deferred one visit.
///
/// The hot loop of the decoder. The lane state is copied into locals (so nothing aliases the
/// output and nothing is spilled per symbol), lane indices are masked (so the lane arrays need no
/// bounds checks), table entries carry the literal byte or the length base and extra-bit count,
/// and a literal and a length share one branch-free step.
fn huffman_block(
    lanes: &mut Lanes<'_>,
    table: &PairTable,
    out: &mut [u8],
    pos: usize,
    loops: Loops,
) -> Result<usize, Reason> {
    let mut state = BlockState::from_lanes(lanes, pos);
    let result = if matches!(loops, Loops::Careful) {
        state.run(lanes.src, table, out, 0)
    } else if table.length_share() < LITERAL_HEAVY {
        // Mostly literals: branches on the kind of element are then predicted right nearly
        // always, and a literal costs less than in the branch-free loops.
        state
            .run_literals(lanes.src, table, out)
            .and_then(|lane| state.run(lanes.src, table, out, lane))
    } else if let Some(outcome) = run_vector(loops, &mut state, lanes.src, table, out) {
        outcome.and_then(|lane| state.run(lanes.src, table, out, lane))
    } else {
        state
            .run_fast(lanes.src, table, out)
            .and_then(|lane| state.run(lanes.src, table, out, lane))
    };
    let pos = state.pos;
    state.into_lanes(lanes);
    result.map(|()| pos)
}

/// The vector loops, where this build and this CPU run them.
fn vector_loops() -> Option<Loops> {
    #[cfg(all(target_arch = "x86_64", feature = "simd"))]
    return avx512::token().map(Loops::Vector);
    #[cfg(not(all(target_arch = "x86_64", feature = "simd")))]
    None
}

/// The vector loop, if `loops` asks for it: `None` when it leaves the block to the scalar loops.
fn run_vector(
    loops: Loops,
    state: &mut BlockState,
    src: &[u8],
    table: &PairTable,
    out: &mut [u8],
) -> Option<Result<usize, Reason>> {
    match loops {
        #[cfg(all(target_arch = "x86_64", feature = "simd"))]
        Loops::Vector(token) => avx512::run_fast(token, state, src, table, out),
        _ => {
            let _ = (state, src, table, out);
            None
        }
    }
}

/// A round's refill words: it takes at most 32, so with 128 bytes of input ahead they come from
/// a fixed-size window, where no refill needs a bounds check.
struct Window<'a> {
    bytes: &'a [u8; 4 * LANES],
    /// Bytes taken so far.
    taken: usize,
}

impl<'a> Window<'a> {
    /// The window at `cursor`, if 128 bytes of input are left there.
    #[inline(always)]
    fn at(src: &'a [u8], cursor: usize) -> Option<Self> {
        let bytes = src.get(cursor..cursor + 4 * LANES)?.try_into().expect("128 bytes");
        Some(Window { bytes, taken: 0 })
    }

    /// The next word, consumed only if `need` (branch-free either way).
    #[inline(always)]
    fn next(&mut self, need: bool) -> u32 {
        let at = self.taken & (4 * LANES - 4);
        let word = u32::from_le_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ]);
        self.taken += 4 * need as usize;
        word
    }
}

/// The lanes and the output position while one Huffman block decodes.
struct BlockState {
    bits: [u64; LANES],
    count: [u32; LANES],
    cursor: usize,
    truncated: bool,
    /// Per lane, a match whose length was read and whose distance comes next visit, as
    /// `length << DST_BITS | destination` (0 = none).
    pending: [u64; LANES],
    pos: usize,
}

impl BlockState {
    /// The lanes' state as locals for one block, starting at output position `pos`.
    fn from_lanes(lanes: &Lanes<'_>, pos: usize) -> Self {
        BlockState {
            bits: lanes.bits,
            count: lanes.count,
            cursor: lanes.cursor,
            truncated: false,
            pending: [0; LANES],
            pos,
        }
    }

    /// Hands the lanes' state back after the block.
    fn into_lanes(self, lanes: &mut Lanes<'_>) {
        lanes.bits = self.bits;
        lanes.count = self.count;
        lanes.cursor = self.cursor;
        lanes.truncated |= self.truncated;
    }
    /// Stored bytes one at a time, the first from lane `lane` (rounds start at lane 0, and every
    /// caller passes bytes that start a round).
    #[inline]
    fn stored_bytes(&mut self, src: &[u8], bytes: &mut [u8], lane: usize) {
        for (k, byte) in bytes.iter_mut().enumerate() {
            let lane = (lane + k) % LANES;
            *byte = self.bits[lane] as u8;
            self.bits[lane] >>= 8;
            self.count[lane] -= 8;
            self.refill_predictable(src, lane);
        }
    }

    /// For four stored rounds from lanes that all hold 32..=63 bits: the order in which the
    /// lanes refill (as an index into the next 32 words, per lane). A lane refills in the first
    /// round whose byte leaves it under 32 bits, lanes within a round in lane order.
    fn stored_ranks(&self) -> [u8; LANES] {
        let mut ranks = [0u8; LANES];
        let mut next = 0u8;
        for round in 0..4 {
            for (rank, &count) in ranks.iter_mut().zip(&self.count) {
                debug_assert!((32..=63).contains(&count), "stored groups start from full lanes");
                if (count.clamp(32, 63) - 32) / 8 == round {
                    *rank = next;
                    next += 1;
                }
            }
        }
        ranks
    }

    /// The same refill, as a branch: right for stored blocks, where every lane refills every
    /// fourth visit and the predictor learns the pattern.
    #[inline(always)]
    fn refill_predictable(&mut self, src: &[u8], lane: usize) {
        let count = self.count[lane];
        if count < 32 {
            let word = match src.get(self.cursor..self.cursor + 4) {
                Some(w) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as u64,
                None => {
                    self.truncated = true;
                    0
                }
            };
            self.bits[lane] |= word << count;
            self.count[lane] = count + 32;
            self.cursor += 4;
        }
    }

    /// The data loop without a branch on what an element is. Every visit looks up both tables
    /// and keeps the entry the lane's state asks for (a distance if it owes one); the value is
    /// base + extra bits whatever the element. The element's byte is written at the output
    /// position whatever it is (a literal's byte stays; anything else is overwritten before it
    /// can be read: a match's copy covers its own first byte, and a position no element has
    /// claimed is claimed later), the position moves by 1, n or 0, and a distance queues its
    /// copy. Queued copies run, in order, at the end of each round: every byte a copy reads lies
    /// before its destination, written by a literal at once or by an earlier copy in the queue.
    ///
    /// The only branches left are ones a predictor gets right: a subtable (long codes), an end
    /// of block or a fault (rare), and the bounds checks. On an end of block or a fault, the
    /// queue is flushed and the lane is handed to `run`, which takes it from there one lane at
    /// a time with every check spelled out.
    #[inline(always)]
    fn run_fast(&mut self, src: &[u8], table: &PairTable, out: &mut [u8]) -> Result<usize, Reason> {
        let mut queue = [0u64; LANES];
        // The serial values in locals, so each step is a register add, not a round trip
        // through memory; written back wherever the loop hands over.
        let mut pos = self.pos;
        let mut cursor = self.cursor;
        let mut truncated = false;
        let outcome = loop {
            // A windowed round while 128 bytes of input are left, else one with checked refills.
            let step = match Window::at(src, cursor) {
                Some(mut window) => {
                    let step = self.round::<true>(table, out, &mut pos, &mut queue, |need| window.next(need));
                    cursor += window.taken;
                    step
                }
                None => self.round::<false>(table, out, &mut pos, &mut queue, |need| {
                    let word = match src.get(cursor..cursor + 4) {
                        Some(w) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                        None => {
                            truncated |= need;
                            0
                        }
                    };
                    cursor += 4 * need as usize;
                    word
                }),
            };
            if let Some(outcome) = step {
                break outcome;
            }
        };
        self.pos = pos;
        self.cursor = cursor;
        self.truncated |= truncated;
        outcome
    }

    /// The loop for blocks of mostly literals: `run`'s branches (on a pending distance, on a
    /// literal), in unrolled rounds that refill from a 128-byte window like `run_fast`. Copies
    /// run at once, one lane at a time, so in order. Whatever is neither a literal, a length nor
    /// a distance (an end of block, a fault), and the last rounds of a tile, where the window
    /// does not fit, go to `run` from the lane at hand: `Ok(lane)`.
    #[inline(never)]
    fn run_literals(&mut self, src: &[u8], table: &PairTable, out: &mut [u8]) -> Result<usize, Reason> {
        let end = out.len();
        let mut pos = self.pos;
        let mut cursor = self.cursor;
        let outcome = loop {
            let Some(mut window) = Window::at(src, cursor) else {
                break Ok(0);
            };
            let step = 'round: {
                macro_rules! visit {
                    ($($lane:literal)*) => {$({
                        let lane: usize = $lane;
                        if self.pending[lane] != 0 {
                            if let Err(reason) = self.finish_match_outlined(table, out, lane) {
                                break 'round Some(Err(reason));
                            }
                        } else {
                            let b = self.bits[lane];
                            let entry = table.lookup(b, false);
                            if entry & LITERAL != 0 && pos < end {
                                out[pos] = (entry >> 32) as u8;
                                pos += 1;
                                self.bits[lane] = b >> (entry & 0xFF);
                                self.count[lane] -= (entry & 0xFF) as u32;
                            } else if entry & (LITERAL | STOP) == 0 {
                                let (n, rest, taken) = element(entry, b);
                                let n = n as usize;
                                if n > end - pos {
                                    break 'round Some(Ok(lane));
                                }
                                self.bits[lane] = rest;
                                self.count[lane] -= taken;
                                self.pending[lane] = (n as u64) << DST_BITS | pos as u64;
                                pos += n;
                            } else {
                                break 'round Some(Ok(lane));
                            }
                        }
                        let count = self.count[lane];
                        let need = count < 32;
                        let word = window.next(need);
                        self.bits[lane] |= (word as u64 & (need as u64).wrapping_neg()) << count;
                        self.count[lane] = count + 32 * need as u32;
                    })*};
                }
                visit!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
                None
            };
            cursor += window.taken;
            if let Some(outcome) = step {
                break outcome;
            }
        };
        self.pos = pos;
        self.cursor = cursor;
        outcome
    }

    /// One round of `run_fast`: `None` when all 32 lanes took their element, or how the block
    /// goes on (the lane for `run`, or a fault). `next_word(need)` is the refill's word, consumed
    /// only if `need`.
    #[inline(always)]
    fn round<const UNROLLED: bool>(
        &mut self,
        table: &PairTable,
        out: &mut [u8],
        pos: &mut usize,
        queue: &mut [u64; LANES],
        mut next_word: impl FnMut(bool) -> u32,
    ) -> Option<Result<usize, Reason>> {
        let end = out.len();
        let mut queued = 0usize;
        // Faults are collected and acted on before the queue runs: a distance reaching before
        // the tile, and the position passing the end (positions stay below 2^22 meanwhile: at
        // most `end` plus 32 lengths).
        let mut too_far = false;
        let check = |too_far: bool, pos: usize| {
            if too_far {
                Err(Reason::DistanceTooFar)
            } else if pos > end {
                Err(Reason::OutputOverflow)
            } else {
                Ok(())
            }
        };
        macro_rules! visit {
            ($($lane:literal)*) => {$(visit!(@one $lane);)*};
            (@one $lane:expr) => {{
                let lane: usize = $lane;
                let b = self.bits[lane];
                // (length << 22 | destination) of the match whose distance this lane owes, or 0.
                let pending = self.pending[lane];
                let owes = pending >> DST_BITS != 0;
                let dst = (pending & DST_MASK) as u32;
                let (from_litlen, from_dist) = table.lookup_both(b);
                let entry = if owes { from_dist } else { from_litlen };
                // Stop before an end of block, a bad symbol or a pattern that is no code: the
                // careful loop decodes this element again from the same state.
                if entry & STOP != 0 {
                    if let Err(reason) = check(too_far, *pos) {
                        return Some(Err(reason));
                    }
                    flush(out, &queue[..queued]);
                    return Some(Ok(lane));
                }
                let (value, bits, taken) = element(entry, b);
                let count = self.count[lane] - taken;

                let literal = entry & LITERAL != 0;
                let length = !owes && !literal;
                let step = if literal {
                    1
                } else if length {
                    value as usize
                } else {
                    0
                };
                too_far |= owes & (value > dst);
                if let Some(byte) = out.get_mut(*pos) {
                    *byte = value as u8;
                }
                queue[queued & (LANES - 1)] = pending << 20 | value as u64;
                queued += owes as usize;
                self.pending[lane] = if length {
                    (value as u64) << DST_BITS | *pos as u64
                } else {
                    0
                };
                *pos += step;

                let need = count < 32;
                let word = next_word(need) as u64;
                self.bits[lane] = bits | (word & (need as u64).wrapping_neg()) << count;
                self.count[lane] = count + 32 * need as u32;
            }};
        }
        if UNROLLED {
            // With the lane a constant, its state sits at fixed offsets and the loop needs no
            // counter (text +11%, executables +7%). Only the windowed rounds, the hot ones: the
            // unrolled round is about 30 KiB of code.
            visit!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
        } else {
            for lane in 0..LANES {
                visit!(@one lane);
            }
        }
        if let Err(reason) = check(too_far, *pos) {
            return Some(Err(reason));
        }
        flush(out, &queue[..queued]);
        None
    }

    #[inline(always)]
    fn run(&mut self, src: &[u8], table: &PairTable, out: &mut [u8], lane: usize) -> Result<(), Reason> {
        // The output position and the word cursor in locals (as fields they would make a
        // store-to-load chain through memory at every element), written back on every exit.
        let (mut pos, mut cursor) = (self.pos, self.cursor);
        let result = self.run_with(src, table, out, lane, &mut pos, &mut cursor);
        self.pos = pos;
        self.cursor = cursor;
        result
    }

    #[inline(always)]
    fn run_with(
        &mut self,
        src: &[u8],
        table: &PairTable,
        out: &mut [u8],
        mut lane: usize,
        pos_io: &mut usize,
        cursor_io: &mut usize,
    ) -> Result<(), Reason> {
        let end = out.len();
        let mut pos = *pos_io;
        let mut cursor = *cursor_io;
        let outcome = loop {
            lane &= LANES - 1;
            if self.pending[lane] != 0 {
                if let Err(reason) = self.finish_match(table, out, lane) {
                    break Err(reason);
                }
            } else {
                let bits = self.bits[lane];
                let entry = table.lookup(bits, false);
                let len = (entry & 0xFF) as u32;
                if entry & STOP != 0 {
                    if len == 0 {
                        break Err(Reason::InvalidCode);
                    }
                    if entry & END_OF_BLOCK != END_OF_BLOCK {
                        break Err(Reason::BadLengthSymbol);
                    }
                    self.bits[lane] = bits >> len;
                    self.count[lane] -= len;
                    break Ok(()); // no refill of the EOB lane: the end pass starts with it
                }
                if entry & LITERAL != 0 {
                    let Some(byte) = out.get_mut(pos) else {
                        break Err(Reason::OutputOverflow);
                    };
                    *byte = (entry >> 32) as u8;
                    pos += 1;
                    self.bits[lane] = bits >> len;
                    self.count[lane] -= len;
                } else {
                    let (n, rest, taken) = element(entry, bits);
                    let n = n as usize;
                    self.bits[lane] = rest;
                    self.count[lane] -= taken;
                    if n > end - pos {
                        break Err(Reason::OutputOverflow);
                    }
                    self.pending[lane] = (n as u64) << DST_BITS | pos as u64;
                    pos += n;
                }
            }
            cursor = self.refill_at(src, lane, cursor);
            lane += 1;
        };
        *pos_io = pos;
        *cursor_io = cursor;
        outcome?;
        // End-of-block pass, starting at the lane that read EOB.
        for j in 0..LANES {
            let m = (lane + j) & (LANES - 1);
            if self.pending[m] != 0 {
                self.finish_match(table, out, m)?;
            }
            *cursor_io = self.refill_at(src, m, *cursor_io);
        }
        Ok(())
    }

    /// The branch-free refill of `lane` from the word at `cursor`; returns the cursor after it.
    #[inline(always)]
    fn refill_at(&mut self, src: &[u8], lane: usize, cursor: usize) -> usize {
        let count = self.count[lane];
        let need = count < 32;
        let word = match src.get(cursor..cursor + 4) {
            Some(w) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as u64,
            None => {
                self.truncated |= need;
                0
            }
        };
        self.bits[lane] |= (word & (need as u64).wrapping_neg()) << count;
        self.count[lane] = count + 32 * need as u32;
        cursor + 4 * need as usize
    }

    /// `finish_match` as a call: the branching loop's rare path, kept out of its 32 unrolled
    /// visits.
    #[inline(never)]
    fn finish_match_outlined(&mut self, table: &PairTable, out: &mut [u8], lane: usize) -> Result<(), Reason> {
        self.finish_match(table, out, lane)
    }

    /// Reads a pending match's distance from `lane` and copies. Every byte before the match's
    /// destination is final when this runs (copies execute in the order their lengths were read).
    #[inline(always)]
    fn finish_match(&mut self, table: &PairTable, out: &mut [u8], lane: usize) -> Result<(), Reason> {
        let bits = self.bits[lane];
        let entry = table.lookup(bits, true);
        if entry & STOP != 0 {
            return Err(Reason::InvalidCode);
        }
        let (distance, rest, taken) = element(entry, bits);
        let distance = distance as usize;
        self.bits[lane] = rest;
        self.count[lane] -= taken;
        let (dst, n) = (
            (self.pending[lane] & DST_MASK) as usize,
            (self.pending[lane] >> DST_BITS) as usize,
        );
        self.pending[lane] = 0;
        if distance > dst {
            return Err(Reason::DistanceTooFar);
        }
        copy_match(out, dst, distance, n);
        Ok(())
    }
}

/// A queued copy's (destination, distance, length).
#[inline(always)]
fn fields(copy: u64) -> (usize, usize, usize) {
    let (len, dst, distance) = (copy >> (DST_BITS + 20), (copy >> 20) & DST_MASK, copy & 0xFFFFF);
    (dst as usize, distance as usize, len as usize)
}

/// Runs queued copies in order: each `length << 42 | destination << 20 | distance` (the
/// destination below 2^22, the others below 2^20).
///
/// A short copy is a 16-byte read-modify-write of its destination (see `copy_match`), and
/// consecutive matches often lie within 16 bytes of each other, so a copy's read would overlap
/// the previous copy's write, which the store cannot forward: the read waits for the write to
/// reach the cache. So each copy's 16 bytes are read one copy ahead, before the previous copy
/// writes. That is safe: a copy changes only its match's bytes, and no later copy's 16 bytes
/// include an earlier match's bytes (destinations ascend, and each lies past the match before
/// it), so the bytes a copy writes back unchanged are the same whether read before or after.
#[inline(never)]
fn flush(out: &mut [u8], queue: &[u64]) {
    let bytes_at = |out: &[u8], copy: Option<&u64>| {
        let dst = fields(*copy?).0;
        let bytes = out.get(dst..dst + 16)?;
        Some(u128::from_le_bytes(bytes.try_into().expect("16 bytes")))
    };
    let mut next = bytes_at(out, queue.first());
    for (i, &copy) in queue.iter().enumerate() {
        let to = next;
        next = bytes_at(out, queue.get(i + 1));
        let (dst, distance, len) = fields(copy);
        match to {
            Some(to) if len <= 16 && distance >= len => {
                let src = dst - distance;
                let from = u128::from_le_bytes(out[src..src + 16].try_into().expect("16 bytes"));
                let keep = COPY_MASKS[len];
                out[dst..dst + 16].copy_from_slice(&((from & keep) | (to & !keep)).to_le_bytes());
            }
            _ => copy_match(out, dst, distance, len),
        }
    }
}

/// Per match length up to 16, the mask of a 16-byte group's bytes that the match covers.
const COPY_MASKS: [u128; 17] = {
    let mut masks = [0u128; 17];
    let mut len = 1;
    while len <= 16 {
        masks[len] = u128::MAX >> (128 - 8 * len);
        len += 1;
    }
    masks
};

/// `out[dst..dst+len] = out[dst-distance..]`, byte by byte forward (overlap repeats the
/// pattern). Nothing past `dst + len` may be touched: later literals may already sit there.
#[inline(always)]
fn copy_match(out: &mut [u8], dst: usize, distance: usize, len: usize) {
    let src = dst - distance;
    if len <= 16 && distance >= len && dst + 16 <= out.len() {
        // Most matches are short: one 16-byte read-modify-write instead of a call to memmove.
        // The bytes past the match are written back unchanged (they may be literals already),
        // and the source bytes that matter lie before `dst`, read before the write.
        let from = u128::from_le_bytes(out[src..src + 16].try_into().expect("16 bytes"));
        let to: &mut [u8; 16] = (&mut out[dst..dst + 16]).try_into().expect("16 bytes");
        let keep = COPY_MASKS[len.min(16)];
        *to = ((from & keep) | (u128::from_le_bytes(*to) & !keep)).to_le_bytes();
        return;
    }
    if distance >= len {
        out.copy_within(src..src + len, dst);
        return;
    }
    let mut done = 0;
    while done < len {
        // The source [src, src + chunk) lies wholly in bytes already written, and `done` stays a
        // multiple of `distance`, so the pattern continues unbroken.
        let chunk = (dst + done - src).min(len - done);
        out.copy_within(src..src + chunk, dst + done);
        done += chunk;
    }
}

/// For the flush tests: `size` random bytes, a queue of copies (as `flush` packs them) whose
/// destinations run through `span` 0–2 bytes apart, each `(length, distance)` from `next` given
/// its destination, and the bytes after running the copies one at a time.
#[cfg(test)]
fn queued_copies(
    rng: &mut fastrand::Rng,
    size: usize,
    span: std::ops::Range<usize>,
    mut next: impl FnMut(&mut fastrand::Rng, usize) -> (usize, usize),
) -> (Vec<u8>, Vec<u64>, Vec<u8>) {
    let out: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
    let (mut queue, mut dst) = (Vec::new(), span.start);
    while dst < span.end {
        let (len, distance) = next(rng, dst);
        queue.push((len as u64) << (DST_BITS + 20) | (dst as u64) << 20 | distance as u64);
        dst += len + rng.usize(0..=2);
    }
    let mut expected = out.clone();
    for &copy in &queue {
        let (at, distance, len) = fields(copy);
        copy_match(&mut expected, at, distance, len);
    }
    (out, queue, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_copies_repeat_the_pattern() {
        let mut out = *b"abc.........";
        copy_match(&mut out, 3, 3, 9);
        assert_eq!(&out, b"abcabcabcabc");
        let mut run = [7u8, 0, 0, 0, 0, 0, 0];
        copy_match(&mut run, 1, 1, 6);
        assert_eq!(run, [7; 7]);
    }

    #[test]
    fn short_copies_leave_the_bytes_after_them() {
        // Literals decoded after a match's reservation may already sit past it.
        for len in 3..=20 {
            let mut out: Vec<u8> = (0..64).collect();
            let mut expected = out.clone();
            for t in 0..len {
                expected[30 + t] = expected[30 - len - 1 + t];
            }
            copy_match(&mut out, 30, len + 1, len);
            assert_eq!(out, expected, "length {len}");
        }
        // Too close to the end for the 16-byte path.
        let mut tail = *b"abcdefgh....";
        copy_match(&mut tail, 8, 8, 4);
        assert_eq!(&tail, b"abcdefghabcd");
    }

    #[test]
    fn flushed_copies_within_16_bytes_of_each_other_match_one_at_a_time() {
        // Matches 3–9 bytes long with 0–2 literals between them, so each copy's 16 bytes cover
        // the next ones; the flush reads them one copy ahead and must still agree with copies
        // run one at a time.
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..200 {
            let (mut out, queue, expected) = queued_copies(&mut rng, 256, 40..200, |rng, dst| {
                let len = rng.usize(3..=9);
                (len, rng.usize(len..=dst.min(60)))
            });
            flush(&mut out, &queue);
            assert_eq!(out, expected);
        }
    }

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
