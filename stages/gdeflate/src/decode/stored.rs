//! Stored blocks: raw bytes spread over the lanes, one byte per lane per round. Only the block
//! body lives here; the block header is read in `mod.rs`, the lanes are `lanes.rs`'s.

use super::lanes::Lanes;
use crate::error::Reason;
use crate::tables::LANES;

/// A stored block: LEN on lane 0, then its bytes round-robin over the lanes. Returns the output
/// position after it.
///
/// Byte k comes from lane k mod 32, one byte per lane per round. The first round goes byte by
/// byte; after it every lane holds ≥ 32 bits, so the next four rounds take exactly each lane's
/// low 32 bits, and each lane refills exactly once among them, in an order that depends only
/// on the lanes' bit counts (which four rounds leave unchanged). So the middle of the block
/// runs 128 bytes at a time: 32 input words in, a 4 × 32 byte transpose out. The last partial
/// group goes byte by byte again.
pub(super) fn stored_block(lanes: &mut Lanes<'_>, out: &mut [u8], pos: usize) -> Result<usize, Reason> {
    let len = lanes.take(0, 16) as usize;
    let dst = out.get_mut(pos..pos + len).ok_or(Reason::OutputOverflow)?;
    let (first, rest) = dst.split_at_mut(len.min(LANES));
    lanes.stored_bytes(first, 0);
    let mut groups = rest.chunks_exact_mut(4 * LANES);
    if groups.len() > 0 {
        let ranks = lanes.stored_ranks();
        for group in &mut groups {
            let Some(low) = lanes.stored_group(&ranks) else {
                // Too little input left for a whole group: the byte path reports it.
                lanes.stored_bytes(group, 0);
                continue;
            };
            for (round, row) in group.chunks_exact_mut(LANES).enumerate() {
                for (byte, &bits) in row.iter_mut().zip(&low) {
                    *byte = (bits >> (8 * round)) as u8;
                }
            }
        }
    }
    lanes.stored_bytes(groups.into_remainder(), 0);
    for j in 0..LANES {
        lanes.refill_predictable((len + j) % LANES);
    }
    Ok(pos + len)
}

impl Lanes<'_> {
    /// Stored bytes one at a time, the first from lane `lane` (rounds start at lane 0, and every
    /// caller passes bytes that start a round).
    #[inline]
    fn stored_bytes(&mut self, bytes: &mut [u8], lane: usize) {
        for (k, byte) in bytes.iter_mut().enumerate() {
            let lane = (lane + k) % LANES;
            *byte = self.bits[lane] as u8;
            self.bits[lane] >>= 8;
            self.count[lane] -= 8;
            self.refill_predictable(lane);
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

    /// Four stored rounds at once: every lane's low 32 bits (its next four bytes), each lane
    /// refilled once from the next 32 words, word `ranks[lane]` to lane `lane`. `None`, with
    /// nothing taken, if fewer than 32 words are left.
    ///
    /// A refill of its own, kept apart from `Lanes::refill` for speed: the order is known for
    /// the whole block, so the 32 words need one bounds check and no lane a test on its count.
    #[inline]
    fn stored_group(&mut self, ranks: &[u8; LANES]) -> Option<[u32; LANES]> {
        let cursor = self.words.cursor;
        let words = self.words.src.get(cursor..cursor + 4 * LANES)?;
        let mut low = [0u32; LANES];
        for lane in 0..LANES {
            low[lane] = self.bits[lane] as u32;
            let at = 4 * ranks[lane] as usize;
            let word = u32::from_le_bytes([words[at], words[at + 1], words[at + 2], words[at + 3]]);
            self.bits[lane] = self.bits[lane] >> 32 | (word as u64) << (self.count[lane] - 32);
        }
        self.words.cursor += 4 * LANES;
        Some(low)
    }
}
