//! The Huffman data loops: which loop runs a block (the dispatch, vector round included), the
//! branch-free round (`run_fast`) and the branching one for literal-heavy blocks
//! (`run_literals`). Both hand the block to the careful loop (`careful.rs`) at an end of block,
//! a fault or the tile's last rounds. They work on `Lanes` (`lanes.rs`) and refill only through
//! its refill; entries are read as `entry.rs` packs them, copies run through `copy.rs`.

#[cfg(all(target_arch = "x86_64", feature = "simd"))]
use super::avx512;
use super::copy::{flush, DST_BITS};
use super::entry::{element, LITERAL, STOP};
use super::lanes::{refill, Lanes, Stream, Window, Words};
use crate::error::Reason;
use crate::huffman::PairTable;
use crate::tables::LANES;

/// Below this `PairTable::length_share` (1/8 of the symbols, in 1/32768ths), a block is decoded
/// by the branching loop (`run_literals`): with mostly literals its branches are predicted right
/// nearly always and it does less per element than the branch-free loop (measured: nearly
/// incompressible data coded as Huffman literals 436 → 770 MB/s with the one-lane loop, 1095
/// with the unrolled branching one; text and executables, whose codes give lengths 15–30%, are
/// unchanged with the threshold anywhere from 1/8 to 1/4 and slower with it at 1).
pub(super) const LITERAL_HEAVY: u32 = 1 << 12;

/// The loops a Huffman block may run.
#[derive(Clone, Copy, Debug)]
pub(super) enum Loops {
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

/// The vector loops, where this build and this CPU run them.
pub(super) fn vector_loops() -> Option<Loops> {
    #[cfg(all(target_arch = "x86_64", feature = "simd"))]
    return avx512::token().map(Loops::Vector);
    #[cfg(not(all(target_arch = "x86_64", feature = "simd")))]
    None
}

/// A fixed or dynamic Huffman block: lanes visited round-robin, matches deferred one visit.
/// Returns the output position after it.
///
/// The hot loop of the decoder. The serial state (output position, word cursor) is kept in
/// locals by each loop, lane indices are masked (so the lane arrays need no bounds checks),
/// table entries carry the literal byte or the length base and extra-bit count, and a literal
/// and a length share one branch-free step.
///
/// Inlined into the tile's block loop, whose frame holds the lanes: the rounds then find every
/// lane's state at a fixed offset from the stack pointer, with no register spent on a pointer
/// to it (a called function spilled the round's fault flags for want of that register).
#[inline(always)]
pub(super) fn huffman_block(
    lanes: &mut Lanes<'_>,
    table: &PairTable,
    out: &mut [u8],
    pos: usize,
    loops: Loops,
) -> Result<usize, Reason> {
    debug_assert!(lanes.pending == [0; LANES], "no lane owes a match between blocks");
    if matches!(loops, Loops::Careful) {
        lanes.run(table, out, pos, 0)
    } else if table.length_share() < LITERAL_HEAVY {
        // Mostly literals: branches on the kind of element are then predicted right nearly
        // always, and a literal costs less than in the branch-free loops.
        lanes
            .run_literals(table, out, pos)
            .and_then(|(lane, pos)| lanes.run(table, out, pos, lane))
    } else {
        let mut pos = pos;
        match run_vector(loops, lanes, table, out, &mut pos) {
            Some(outcome) => outcome.and_then(|lane| lanes.run(table, out, pos, lane)),
            None => lanes
                .run_fast(table, out, pos)
                .and_then(|(lane, pos)| lanes.run(table, out, pos, lane)),
        }
    }
}

/// The vector loop, if `loops` asks for it: `None` when it leaves the block to the scalar loops.
fn run_vector(
    loops: Loops,
    lanes: &mut Lanes<'_>,
    table: &PairTable,
    out: &mut [u8],
    pos: &mut usize,
) -> Option<Result<usize, Reason>> {
    match loops {
        #[cfg(all(target_arch = "x86_64", feature = "simd"))]
        Loops::Vector(token) => avx512::run_fast(token, lanes, table, out, pos),
        _ => {
            let _ = (lanes, table, out, pos);
            None
        }
    }
}

impl Lanes<'_> {
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
    ///
    /// Returns the lane for `run` and the output position there.
    #[inline(always)]
    fn run_fast(&mut self, table: &PairTable, out: &mut [u8], mut pos: usize) -> Result<(usize, usize), Reason> {
        let mut queue = [0u64; LANES];
        // The serial values in locals, so each step is a register add, not a round trip
        // through memory; written back wherever the loop hands over.
        // (Only the cursor: the input and the truncation flag, live across the loop too, would
        // cost the unrolled round registers it spills for.)
        let src = self.words.src;
        let mut cursor = self.words.cursor;
        let mut truncated = false;
        let outcome = loop {
            // A windowed round while 128 bytes of input are left, else one with checked refills.
            let step = match Window::at(src, cursor) {
                Some(mut window) => {
                    let step = self.round::<true>(table, out, &mut pos, &mut queue, &mut window);
                    cursor += window.taken;
                    step
                }
                None => {
                    let mut words = Stream {
                        src,
                        cursor,
                        truncated: false,
                    };
                    let step = self.round::<false>(table, out, &mut pos, &mut queue, &mut words);
                    cursor = words.cursor;
                    truncated |= words.truncated;
                    step
                }
            };
            if let Some(outcome) = step {
                break outcome;
            }
        };
        self.words.cursor = cursor;
        self.words.truncated |= truncated;
        outcome.map(|lane| (lane, pos))
    }

    /// The loop for blocks of mostly literals: `run`'s branches (on a pending distance, on a
    /// literal), in unrolled rounds that refill from a 128-byte window like `run_fast`. Copies
    /// run at once, one lane at a time, so in order. Whatever is neither a literal, a length nor
    /// a distance (an end of block, a fault), and the last rounds of a tile, where the window
    /// does not fit, go to `run` from the lane at hand: `Ok((lane, position))`.
    #[inline(always)]
    fn run_literals(&mut self, table: &PairTable, out: &mut [u8], pos: usize) -> Result<(usize, usize), Reason> {
        let src = self.words.src;
        self.literal_rounds(src, table, out, pos)
    }

    /// `run_literals`' rounds, with the input (`src`, the lanes' own `words.src`) as an
    /// argument of the function: the compiler takes a reference argument for memory that
    /// nothing writes while the function runs, so it knows that the lane stores leave the
    /// window's bytes alone. A visit then updates its lane in place and refills it with the
    /// lanes' one refill, and the compiler keeps the lane in registers from the element
    /// through the refill and stores it once. Read from the lanes, `src` would be a pointer
    /// loaded from memory, which might point anywhere, and the visits' stores would have to stay
    /// ordered before the refill's read (callgrind, the scalar loops on the mixed corpus:
    /// 103.8M instructions that way, 98.4M this way, as many as before the decoder's rooms).
    ///
    /// The position goes in and out by value: a pointer to it would hold one more register
    /// through the unrolled rounds, which have none to spare.
    #[inline(never)]
    fn literal_rounds(
        &mut self,
        src: &[u8],
        table: &PairTable,
        out: &mut [u8],
        mut pos: usize,
    ) -> Result<(usize, usize), Reason> {
        let end = out.len();
        let mut cursor = self.words.cursor;
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
                        self.refill_from(lane, &mut window);
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
        self.words.cursor = cursor;
        outcome.map(|lane| (lane, pos))
    }

    /// One round of `run_fast`: `None` when all 32 lanes took their element, or how the block
    /// goes on (the lane for `run`, or a fault). Refill words come from `words`: the round's
    /// window, or the checked stream near the end of the input.
    #[inline(always)]
    pub(super) fn round<const UNROLLED: bool>(
        &mut self,
        table: &PairTable,
        out: &mut [u8],
        pos: &mut usize,
        queue: &mut [u64; LANES],
        words: &mut impl Words,
    ) -> Option<Result<usize, Reason>> {
        let end = out.len();
        let mut queued = 0usize;
        // The round's faults: a distance reaching before the tile, which the flush finds as it
        // runs the queue (every distance a lane owed is queued beside its destination), and the
        // position passing the end (positions stay below 2^22 meanwhile: at most `end` plus 32
        // lengths), checked after it. The flush may run first: the copies in the queue are the
        // previous round's matches, whose lengths that round checked against the end. A round
        // with both faults reports the distance, as when both were checked before the copies.
        let finish = |out: &mut [u8], queue: &[u64], pos: usize| {
            flush(out, queue)?;
            if pos > end {
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
                let (from_litlen, from_dist) = table.lookup_both(b);
                let entry = if owes { from_dist } else { from_litlen };
                // Stop before an end of block, a bad symbol or a pattern that is no code: the
                // careful loop decodes this element again from the same state.
                if entry & STOP != 0 {
                    if let Err(reason) = finish(out, &queue[..queued], *pos) {
                        return Some(Err(reason));
                    }
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

                // The lane's bits stay in registers from the element to the refill: one store.
                (self.bits[lane], self.count[lane]) = refill(bits, count, words);
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
        if let Err(reason) = finish(out, &queue[..queued], *pos) {
            return Some(Err(reason));
        }
        None
    }
}
