//! The encoder's lane writer: bits are written per lane, and a new 32-bit word is reserved for
//! a lane exactly where the decoder would refill it, so the words land in the decoder's refill
//! order (FORMAT.md §2.7). `block.rs` drives it; the refill rule here must stay the decoder's
//! (`decode/lanes.rs`). Public (also as `dsr_gdeflate::lanes`) so tests can write tiles by hand.

use crate::tables::LANES;

#[derive(Clone, Copy, Debug, Default)]
struct Lane {
    /// The word slots reserved for this lane, as a ring indexed by (bit offset / 32) mod 4: the
    /// slot holding bit b of the lane is `slots[(b / 32) % 4]`. At most three slots are
    /// reserved and not yet full, so four entries never collide.
    slots: [u32; 4],
    /// Bits written on this lane, and bits reserved for it (32 per slot).
    written: u64,
    reserved: u64,
}

/// Writes bits on 32 lanes into one word stream.
#[derive(Debug)]
pub struct LaneWriter {
    words: Vec<u32>,
    lanes: [Lane; LANES],
}

impl Default for LaneWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl LaneWriter {
    /// A tile's writer: the first 32 words belong to lanes 0..31, as the decoder loads them.
    pub fn new() -> Self {
        let mut writer = LaneWriter {
            words: Vec::with_capacity(16 * 1024 + 64),
            lanes: [Lane::default(); LANES],
        };
        for lane in 0..LANES {
            writer.refill(lane);
        }
        writer
    }

    /// Mirrors the decoder's refill check: reserve the next word for `lane` if the decoder
    /// would hold fewer than 32 bits of it here.
    #[inline]
    pub fn refill(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        if l.reserved - l.written < 32 {
            l.slots[(l.reserved / 32) as usize % 4] = self.words.len() as u32;
            l.reserved += 32;
            self.words.push(0);
        }
    }

    /// Writes the low `n` (≤ 32) bits of `value` on `lane`.
    #[inline]
    pub fn put(&mut self, lane: usize, value: u32, n: u32) {
        debug_assert!(n <= 32 && (n == 32 || value >> n == 0));
        let l = &mut self.lanes[lane];
        debug_assert!(
            l.reserved - l.written >= n as u64,
            "bits written beyond the reserved words"
        );
        let at = l.written;
        l.written += n as u64;
        let used = (at % 32) as u32;
        let bits = (value as u64) << used;
        self.words[l.slots[(at / 32) as usize % 4] as usize] |= bits as u32;
        if used + n > 32 {
            // The rest goes to the lane's next slot, reserved already (checked above).
            self.words[l.slots[(at / 32 + 1) as usize % 4] as usize] |= (bits >> 32) as u32;
        }
    }

    /// The finished tile: every reserved word, little-endian.
    pub fn finish(self, out: &mut Vec<u8>) {
        out.reserve(self.words.len() * 4);
        for word in self.words {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
}
