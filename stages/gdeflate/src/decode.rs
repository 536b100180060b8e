//! The tile decoder. Every read of the input and every write of the output is bounds-checked;
//! corrupt input returns an error, and the work is bounded by the input and output sizes (every
//! step consumes input bits or produces output bytes).
//!
//! The invariant that keeps the inner loop free of per-read checks: a lane holds at least 32
//! bits whenever one of its elements is read. It holds at the start of a tile (every lane is
//! loaded once), and after every element the lane is refilled, which tops it up to ≥ 32 bits or
//! fails as truncated. No element is longer than 31 bits (FORMAT.md §2.3).

use crate::error::{Error, Reason};
use crate::huffman::DecodeTable;
use crate::tables::{
    fixed_dist_lengths, fixed_litlen_lengths, DIST_BASE, DIST_EXTRA, DIST_SYMS, EOB, LANES, LENGTH_BASE, LENGTH_EXTRA,
    LITLEN_SYMS, PRECODE_ORDER, TILE_SIZE,
};

/// Primary index width of the lit/len table (longer codes use subtables).
const LITLEN_TABLE_BITS: u32 = 10;
const DIST_TABLE_BITS: u32 = 8;
const PRECODE_TABLE_BITS: u32 = 7;

/// 32 bit reservoirs fed, in refill order, from one stream of little-endian words.
struct Lanes<'a> {
    src: &'a [u8],
    cursor: usize,
    bits: [u64; LANES],
    count: [u32; LANES],
}

impl<'a> Lanes<'a> {
    fn new(src: &'a [u8]) -> Result<Self, Reason> {
        let mut lanes = Lanes {
            src,
            cursor: 0,
            bits: [0; LANES],
            count: [0; LANES],
        };
        for lane in 0..LANES {
            lanes.refill(lane)?;
        }
        Ok(lanes)
    }

    /// Loads the next word into `lane` if it holds fewer than 32 bits (strictly fewer: §2.3).
    #[inline(always)]
    fn refill(&mut self, lane: usize) -> Result<(), Reason> {
        if self.count[lane] < 32 {
            let Some(word) = self.src.get(self.cursor..self.cursor + 4) else {
                return Err(Reason::Truncated);
            };
            let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            self.bits[lane] |= (word as u64) << self.count[lane];
            self.count[lane] += 32;
            self.cursor += 4;
        }
        Ok(())
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
    fixed_litlen: DecodeTable,
    fixed_dist: DecodeTable,
    litlen: DecodeTable,
    dist: DecodeTable,
    precode: DecodeTable,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// A match whose length a lane has read and whose distance it reads on its next visit.
#[derive(Clone, Copy, Default)]
struct Pending {
    len: u32,
    dst: u32,
}

impl Decoder {
    /// A decoder with its fixed tables built.
    pub fn new() -> Self {
        let mut fixed_litlen = DecodeTable::new(LITLEN_TABLE_BITS);
        let mut fixed_dist = DecodeTable::new(DIST_TABLE_BITS);
        fixed_litlen
            .build(&fixed_litlen_lengths())
            .expect("the fixed lit/len code is complete");
        fixed_dist
            .build(&fixed_dist_lengths())
            .expect("the fixed distance code is complete");
        Decoder {
            fixed_litlen,
            fixed_dist,
            litlen: DecodeTable::new(LITLEN_TABLE_BITS),
            dist: DecodeTable::new(DIST_TABLE_BITS),
            precode: DecodeTable::new(PRECODE_TABLE_BITS),
        }
    }

    /// Decodes one tile into `out`, which must be exactly the tile's uncompressed size
    /// (≤ 65536). Fails unless the tile fills `out` exactly and consumes every input byte.
    pub fn decode_tile(&mut self, src: &[u8], out: &mut [u8]) -> Result<(), Reason> {
        if out.len() > TILE_SIZE {
            return Err(Reason::SizeMismatch);
        }
        if src.len() % 4 != 0 {
            return Err(Reason::Misaligned);
        }
        let mut lanes = Lanes::new(src)?;
        let mut pos = 0usize;
        loop {
            let last = lanes.take(0, 1) == 1;
            let kind = lanes.take(0, 2);
            lanes.refill(0)?;
            match kind {
                0 => pos = stored_block(&mut lanes, out, pos)?,
                1 => pos = huffman_block(&mut lanes, &self.fixed_litlen, &self.fixed_dist, out, pos)?,
                2 => {
                    self.read_dynamic_header(&mut lanes)?;
                    pos = huffman_block(&mut lanes, &self.litlen, &self.dist, out, pos)?;
                }
                _ => return Err(Reason::BadBlockType),
            }
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
        lanes.refill(0)?;
        let mut precode_lengths = [0u8; 19];
        for (lane, &sym) in PRECODE_ORDER[..hclen].iter().enumerate() {
            precode_lengths[sym] = lanes.take(lane, 3) as u8;
            lanes.refill(lane)?;
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
            lanes.refill(lane)?;
            lane = (lane + 1) % LANES;
        }
        if lengths[EOB] == 0 {
            return Err(Reason::NoEndOfBlock);
        }
        self.litlen.build(&lengths[..hlit])?;
        self.dist.build(&lengths[hlit..total])?;
        Ok(())
    }
}

/// A stored block: LEN on lane 0, then its bytes round-robin over the lanes.
fn stored_block(lanes: &mut Lanes<'_>, out: &mut [u8], mut pos: usize) -> Result<usize, Reason> {
    let len = lanes.take(0, 16) as usize;
    if pos + len > out.len() {
        return Err(Reason::OutputOverflow);
    }
    for k in 0..len {
        let lane = k % LANES;
        out[pos] = lanes.take(lane, 8) as u8;
        pos += 1;
        lanes.refill(lane)?;
    }
    for j in 0..LANES {
        lanes.refill((len + j) % LANES)?;
    }
    Ok(pos)
}

/// A fixed or dynamic Huffman block: lanes visited round-robin, matches deferred one visit.
fn huffman_block(
    lanes: &mut Lanes<'_>,
    litlen: &DecodeTable,
    dist: &DecodeTable,
    out: &mut [u8],
    mut pos: usize,
) -> Result<usize, Reason> {
    let mut pending = [Pending::default(); LANES];
    let mut lane = 0usize;
    loop {
        if pending[lane].len != 0 {
            finish_match(lanes, dist, out, lane, &mut pending[lane])?;
        } else {
            let sym = lanes.symbol(lane, litlen)?;
            if sym < 256 {
                let Some(byte) = out.get_mut(pos) else {
                    return Err(Reason::OutputOverflow);
                };
                *byte = sym as u8;
                pos += 1;
            } else if sym == EOB {
                break; // no refill of this lane: the end pass starts with it
            } else {
                let i = sym - 257;
                if i >= LENGTH_BASE.len() {
                    return Err(Reason::BadLengthSymbol);
                }
                let len = (LENGTH_BASE[i] + lanes.take(lane, LENGTH_EXTRA[i])) as usize;
                if pos + len > out.len() {
                    return Err(Reason::OutputOverflow);
                }
                pending[lane] = Pending {
                    len: len as u32,
                    dst: pos as u32,
                };
                pos += len;
            }
        }
        lanes.refill(lane)?;
        lane = (lane + 1) % LANES;
    }
    // End-of-block pass, starting at the lane that read EOB.
    for j in 0..LANES {
        let m = (lane + j) % LANES;
        if pending[m].len != 0 {
            finish_match(lanes, dist, out, m, &mut pending[m])?;
        }
        lanes.refill(m)?;
    }
    Ok(pos)
}

/// Reads a pending match's distance from `lane` and copies. Every byte before the match's
/// destination is final when this runs (copies execute in the order their lengths were read).
#[inline(always)]
fn finish_match(
    lanes: &mut Lanes<'_>,
    dist: &DecodeTable,
    out: &mut [u8],
    lane: usize,
    pending: &mut Pending,
) -> Result<(), Reason> {
    let sym = lanes.symbol(lane, dist)?;
    // Tables built from at most 32 lengths hold only symbols 0..=31.
    let distance = (DIST_BASE[sym] + lanes.take(lane, DIST_EXTRA[sym])) as usize;
    let (dst, len) = (pending.dst as usize, pending.len as usize);
    *pending = Pending::default();
    if distance > dst {
        return Err(Reason::DistanceTooFar);
    }
    copy_match(out, dst, distance, len);
    Ok(())
}

/// `out[dst..dst+len] = out[dst-distance..]`, byte by byte forward (overlap repeats the
/// pattern), done in doubling chunks so a long run is a few `copy_within`s.
#[inline(always)]
fn copy_match(out: &mut [u8], dst: usize, distance: usize, len: usize) {
    let src = dst - distance;
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

/// Decodes one tile with a fresh decoder; the tile's index goes into the error.
pub fn decode_tile(src: &[u8], out: &mut [u8], tile: u32) -> Result<(), Error> {
    Decoder::new()
        .decode_tile(src, out)
        .map_err(|reason| Error::in_tile(reason, tile))
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
