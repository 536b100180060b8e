//! The encoder's side of the lanes: bits are written per lane, and a new 32-bit word is reserved
//! for a lane exactly where the decoder would refill it, so the words land in the decoder's
//! refill order (FORMAT.md §2.7).

use crate::tables::LANES;

#[derive(Clone, Copy, Debug, Default)]
struct Lane {
    /// Word slots reserved for this lane and not yet full, oldest first (at most three).
    slots: [u32; 4],
    slot_count: usize,
    /// Bits written into the oldest slot.
    used: u32,
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
            l.slots[l.slot_count] = self.words.len() as u32;
            l.slot_count += 1;
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
        l.written += n as u64;
        let (mut value, mut n) = (value as u64, n);
        while n > 0 {
            let space = 32 - l.used;
            let take = n.min(space);
            let slot = l.slots[0] as usize;
            self.words[slot] |= ((value & ((1u64 << take) - 1)) as u32) << l.used;
            l.used += take;
            value >>= take;
            n -= take;
            if l.used == 32 {
                l.slots.copy_within(1..l.slot_count, 0);
                l.slot_count -= 1;
                l.used = 0;
            }
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
