//! The block writer: picks stored, fixed or dynamic Huffman for a tile by exact bit count,
//! builds the codes and the dynamic header, and writes the matcher's literals and matches over
//! the 32 lanes as the decoder will read them (FORMAT.md §2.4), through `LaneWriter`. Nothing
//! here searches for matches.

use super::lanes::LaneWriter;
use super::matcher::Seq;
use crate::huffman::{canonical_codes, lengths_for};
use crate::tables::{
    dist_symbol, fixed_dist_lengths, fixed_litlen_lengths, length_symbol, DIST_EXTRA, DIST_SYMS, EOB, LANES,
    LENGTH_EXTRA, LITLEN_SYMS, MAX_STORED, PRECODE_ORDER,
};

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
pub(super) struct BlockPlan {
    kind: BlockKind,
    litlen_lengths: [u8; LITLEN_SYMS],
    dist_lengths: [u8; DIST_SYMS],
    header: Option<DynamicHeader>,
}

impl BlockPlan {
    /// The cheapest of stored, fixed and dynamic Huffman for `seqs` (exact bit counts); only
    /// stored unless `try_huffman`.
    pub(super) fn new(seqs: &[Seq], input_len: usize, try_huffman: bool) -> Self {
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

    /// Writes the block (or stored blocks) for `input`, whose literals and matches are `seqs`.
    pub(super) fn write(&self, w: &mut LaneWriter, seqs: &[Seq], input: &[u8]) {
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
