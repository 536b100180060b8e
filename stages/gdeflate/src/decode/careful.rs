//! The careful loop: one lane at a time with every check spelled out, and the distance step
//! of a deferred match (`finish_match`). It decodes whole blocks for the tests' comparison, and
//! every block's end: the fast loops (`loops.rs`) hand it the lane at an end of block, a fault
//! or the tile's last rounds, and it names the fault. Speed matters less here than being plainly
//! right; the fast loops are checked against it.

use super::copy::{copy_match, DST_BITS, DST_MASK};
use super::entry::{element, END_OF_BLOCK, LITERAL, STOP};
use super::lanes::Lanes;
use crate::error::Reason;
use crate::huffman::PairTable;
use crate::tables::LANES;

impl Lanes<'_> {
    /// Decodes from `lane` to the end of the block, then runs the end-of-block pass: every lane,
    /// from the one that read the end of block, settles the match it owes and refills. Returns
    /// the output position after the block.
    #[inline(always)]
    pub(super) fn run(
        &mut self,
        table: &PairTable,
        out: &mut [u8],
        mut pos: usize,
        mut lane: usize,
    ) -> Result<usize, Reason> {
        let end = out.len();
        // The word stream in a local (as fields, the cursor would make a store-to-load chain
        // through memory at every element), written back on every exit.
        let mut words = self.words;
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
            self.refill_from(lane, &mut words);
            lane += 1;
        };
        self.words = words;
        outcome?;
        // End-of-block pass, starting at the lane that read EOB.
        for j in 0..LANES {
            let m = (lane + j) & (LANES - 1);
            if self.pending[m] != 0 {
                self.finish_match(table, out, m)?;
            }
            self.refill(m);
        }
        Ok(pos)
    }

    /// `finish_match` as a call: the branching loop's rare path, kept out of its 32 unrolled
    /// visits.
    #[inline(never)]
    pub(super) fn finish_match_outlined(
        &mut self,
        table: &PairTable,
        out: &mut [u8],
        lane: usize,
    ) -> Result<(), Reason> {
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
