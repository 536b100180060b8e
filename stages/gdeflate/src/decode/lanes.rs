//! The lanes: the one type that holds a tile's 32 bit reservoirs, the matches they owe and the
//! word stream that feeds them, and the one refill. The header parser, the stored blocks and
//! every Huffman loop work on a [`Lanes`] directly; the loops add their methods to it in their
//! own rooms. Touch the refill here and nowhere else (the two bulk refills that stay apart for
//! speed say why where they live: the stored block's groups in `stored.rs`, the vector round's
//! expansion in `avx512.rs`).
//!
//! The invariant that keeps the loops free of per-read checks: a lane holds at least 32 bits
//! whenever one of its elements is read. [`Lanes::new`] loads every lane once, and after every
//! element the lane is refilled, which tops it up to ≥ 32 bits. No element is longer than 31
//! bits (FORMAT.md §2.3).

use crate::error::Reason;
use crate::huffman::DecodeTable;
use crate::tables::LANES;

/// 32 bit reservoirs fed, in refill order, from one stream of little-endian words, and the
/// match each lane owes.
///
/// Refills are branchless (whether a lane needs a word depends on the code lengths just read,
/// which a branch predictor cannot guess), so running out of input sets `truncated` in the
/// stream instead of returning at once. The missing words read as zeros; the flag is checked at
/// every block boundary, and a block cannot run past its output, so the work stays bounded.
///
/// The hot loops copy the word cursor (and the output position) into locals for a block and
/// write them back wherever they hand over: as fields they would be a store-to-load chain
/// through memory at every element. The per-lane arrays stay here, at fixed offsets the
/// unrolled rounds address.
pub(super) struct Lanes<'a> {
    /// Each lane's bits, the next one at the bottom.
    pub(super) bits: [u64; LANES],
    /// How many of `bits` are the stream's (the rest are zeros); below 64.
    pub(super) count: [u32; LANES],
    /// Per lane, a match whose length was read and whose distance comes next visit, as
    /// `length << DST_BITS | destination` (see `copy.rs`); 0 = none. All 0 between blocks: a
    /// Huffman block ends with a pass that settles every lane's.
    pub(super) pending: [u64; LANES],
    /// The input words, where the next refill reads.
    pub(super) words: Stream<'a>,
}

impl<'a> Lanes<'a> {
    /// The lanes at the start of the tile `src`: each loaded with one word, in lane order.
    pub(super) fn new(src: &'a [u8]) -> Result<Self, Reason> {
        let mut lanes = Lanes {
            bits: [0; LANES],
            count: [0; LANES],
            pending: [0; LANES],
            words: Stream {
                src,
                cursor: 0,
                truncated: false,
            },
        };
        for lane in 0..LANES {
            lanes.refill(lane);
        }
        lanes.check()?;
        Ok(lanes)
    }

    /// Refills `lane` from the stream.
    #[inline(always)]
    pub(super) fn refill(&mut self, lane: usize) {
        (self.bits[lane], self.count[lane]) = refill(self.bits[lane], self.count[lane], &mut self.words);
    }

    /// Refills `lane` from `words`: the stream copied into a local, or a round's window.
    #[inline(always)]
    pub(super) fn refill_from(&mut self, lane: usize, words: &mut impl Words) {
        (self.bits[lane], self.count[lane]) = refill(self.bits[lane], self.count[lane], words);
    }

    /// The same refill behind a branch: right for stored blocks, where every lane refills every
    /// fourth visit and the predictor learns the pattern (stored data 580 → 980 MB/s against
    /// the branch-free form). Inside the branch `need` is known, so the mask folds away.
    #[inline(always)]
    pub(super) fn refill_predictable(&mut self, lane: usize) {
        if self.count[lane] < 32 {
            self.refill(lane);
        }
    }

    /// Fails if a refill ran out of input.
    #[inline]
    pub(super) fn check(&self) -> Result<(), Reason> {
        if self.words.truncated {
            Err(Reason::Truncated)
        } else {
            Ok(())
        }
    }

    /// Takes `n` (≤ 31) bits from `lane`.
    #[inline(always)]
    pub(super) fn take(&mut self, lane: usize, n: u32) -> u32 {
        debug_assert!(n <= self.count[lane], "lane invariant broken");
        let value = (self.bits[lane] & ((1u64 << n) - 1)) as u32;
        self.bits[lane] >>= n;
        self.count[lane] -= n;
        value
    }

    /// Decodes one Huffman symbol from `lane`.
    #[inline(always)]
    pub(super) fn symbol(&mut self, lane: usize, table: &DecodeTable) -> Result<usize, Reason> {
        let (sym, len) = table.decode(self.bits[lane]).ok_or(Reason::InvalidCode)?;
        self.bits[lane] >>= len;
        self.count[lane] -= len;
        Ok(sym as usize)
    }
}

/// The refill (FORMAT.md §2.3), on one lane's `bits` and `count` after its element: under 32
/// bits, the next word goes above them. Branch-free: the word is read either way, masked to
/// zero unless needed, and `words` consumes it only if needed. The loops that hold a lane's
/// bits in registers call it directly, so a visit stores the lane once.
#[inline(always)]
pub(super) fn refill(bits: u64, count: u32, words: &mut impl Words) -> (u64, u32) {
    let need = count < 32;
    let word = words.next(need) as u64;
    // `count` < 64, so the shift is defined; without `need` the word is masked to zero.
    (
        bits | (word & (need as u64).wrapping_neg()) << count,
        count + 32 * need as u32,
    )
}

/// Where refill words come from: the checked [`Stream`], or a round's [`Window`].
pub(super) trait Words {
    /// The next little-endian word, consumed only if `need` (branch-free either way).
    fn next(&mut self, need: bool) -> u32;
}

/// The tile's input as words from a cursor, each read bounds-checked: past the end a word
/// reads as zero, and one that was needed sets `truncated`.
#[derive(Clone, Copy)]
pub(super) struct Stream<'a> {
    pub(super) src: &'a [u8],
    /// Bytes consumed: where the next word starts.
    pub(super) cursor: usize,
    pub(super) truncated: bool,
}

impl Words for Stream<'_> {
    #[inline(always)]
    fn next(&mut self, need: bool) -> u32 {
        let word = match self.src.get(self.cursor..self.cursor + 4) {
            Some(w) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
            None => {
                self.truncated |= need;
                0
            }
        };
        self.cursor += 4 * need as usize;
        word
    }
}

/// A round's refill words: it takes at most 32, so with 128 bytes of input ahead they come from
/// a fixed-size window, where no refill needs a bounds check.
pub(super) struct Window<'a> {
    bytes: &'a [u8; 4 * LANES],
    /// Bytes taken so far.
    pub(super) taken: usize,
}

impl<'a> Window<'a> {
    /// The window at `cursor` in `src`, if 128 bytes of input are left there.
    #[inline(always)]
    pub(super) fn at(src: &'a [u8], cursor: usize) -> Option<Self> {
        let bytes = src.get(cursor..cursor + 4 * LANES)?;
        Some(Window {
            bytes: bytes.try_into().expect("128 bytes"),
            taken: 0,
        })
    }
}

impl Words for Window<'_> {
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
