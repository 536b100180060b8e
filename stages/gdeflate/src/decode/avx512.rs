//! The branch-free data loop on AVX-512: a round's 32 lane visits as vector operations.
//!
//! The lanes' state lives in registers for the whole block (bits, counts and pending matches,
//! four vectors of eight lanes each). A round looks up every lane's entry, decodes every
//! element, computes the output positions as a prefix sum of the steps and the refill words as
//! an expansion of the next 32 input words over the lanes that need one, then commits: literal
//! bytes, pending matches, and the owed distances' copies in lane order. That is the scalar
//! round's result exactly, because within a round no lane's element depends on another lane's
//! (every lane holds ≥ 32 bits when visited), and only the word cursor and the output position
//! are shared, both prefix sums over the lanes in order.
//!
//! Every intrinsic is a method of pulp's x86-64-v4 token, which only runtime detection hands
//! out, so this is safe code; `run_fast` runs the loop inside the token's `vectorize`, a
//! function compiled with the features enabled, into which every helper here is inlined.
//!
//! A round is speculative: if any lane meets an end of block, a bad symbol or a pattern that
//! is no code, a distance reaches before the tile, or the output would pass the end, nothing
//! of it is committed and the scalar round runs it instead, which reports the fault or hands
//! the lane over as it always has.

// The round works on four vectors of eight lanes; indexing them by `r` reads better than
// zipping four arrays at a time.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::__m512i;

use pulp::x86::V4;

use super::copy::{copy_apart, fields, DST_BITS, DST_MASK};
use super::entry::STOP;
use super::lanes::{Lanes, Window};
use crate::error::Reason;
use crate::huffman::{PairTable, SUBTABLE};
use crate::tables::LANES;

/// Proof that this CPU runs [`run_fast`]: pulp's token for x86-64-v4 (AVX-512 F, CD, BW, DQ
/// and VL over AVX2), which only runtime detection hands out. Every intrinsic below is a method
/// of one of its fields, so none can be reached without it.
pub(super) type Token = V4;

/// The token, if this CPU has the features.
pub(super) fn token() -> Option<Token> {
    V4::try_new()
}

type V = __m512i;

/// The lanes' state in registers: lane `8r + k` is element k of vector r. A copy of
/// [`Lanes`]' arrays for the round's duration, loaded and stored at its ends.
#[derive(Clone, Copy)]
struct Registers {
    bits: [V; 4],
    count: [V; 4],
    pending: [V; 4],
}

#[inline(always)]
fn splat(s: Token, x: u64) -> V {
    s.avx512f._mm512_set1_epi64(x as i64)
}

#[inline(always)]
fn load(s: Token, state: &Lanes<'_>) -> Registers {
    let f = s.avx512f;
    let mut lanes = Registers {
        bits: [f._mm512_setzero_si512(); 4],
        count: [f._mm512_setzero_si512(); 4],
        pending: [f._mm512_setzero_si512(); 4],
    };
    for r in 0..4 {
        let bits: [u64; 8] = state.bits[8 * r..8 * r + 8].try_into().expect("8 lanes");
        let count: [u32; 8] = state.count[8 * r..8 * r + 8].try_into().expect("8 lanes");
        let pending: [u64; 8] = state.pending[8 * r..8 * r + 8].try_into().expect("8 lanes");
        lanes.bits[r] = bytemuck::cast(bits);
        lanes.count[r] = f._mm512_cvtepu32_epi64(bytemuck::cast(count));
        lanes.pending[r] = bytemuck::cast(pending);
    }
    lanes
}

#[inline(always)]
fn store(s: Token, lanes: &Registers, state: &mut Lanes<'_>) {
    let f = s.avx512f;
    for r in 0..4 {
        let bits: [u64; 8] = bytemuck::cast(lanes.bits[r]);
        let count: [u32; 8] = bytemuck::cast(f._mm512_cvtepi64_epi32(lanes.count[r]));
        let pending: [u64; 8] = bytemuck::cast(lanes.pending[r]);
        state.bits[8 * r..8 * r + 8].copy_from_slice(&bits);
        state.count[8 * r..8 * r + 8].copy_from_slice(&count);
        state.pending[8 * r..8 * r + 8].copy_from_slice(&pending);
    }
}

/// `run_fast` on vectors while a round's 128-byte refill window fits in the input. `None` when
/// it no longer does (the state is handed back, and the scalar loop finishes the block),
/// otherwise how the block goes on, as from `run_fast`.
pub(super) fn run_fast(
    s: Token,
    state: &mut Lanes<'_>,
    table: &PairTable,
    out: &mut [u8],
    pos: &mut usize,
) -> Option<Result<usize, Reason>> {
    // Compiled with the token's features enabled, where every intrinsic is one instruction;
    // everything the closure calls is inlined into it.
    s.vectorize(
        #[inline(always)]
        || rounds(s, state, table, out, pos),
    )
}

/// `run_fast`'s body, inlined into pulp's function with the features enabled.
#[inline(always)]
fn rounds(
    s: Token,
    state: &mut Lanes<'_>,
    table: &PairTable,
    out: &mut [u8],
    pos_io: &mut usize,
) -> Option<Result<usize, Reason>> {
    let (f, dq) = (s.avx512f, s.avx512dq);
    let entries = table.entries();
    let cap = entries.len() - 1;
    let end = out.len();
    let zero = f._mm512_setzero_si512();
    let src = state.words.src;
    let mut pos = *pos_io;
    let mut cursor = state.words.cursor;
    let mut lanes = load(s, state);
    let mut queue = [0u64; LANES + 8];
    let outcome = loop {
        let Some(window) = src.get(cursor..cursor + 4 * LANES) else {
            break None;
        };
        let window: &[u8; 4 * LANES] = window.try_into().expect("128 bytes");

        // Each lane's entry: from the distance half if it owes a distance.
        let mut owes = [0u8; 4];
        let mut entry = [zero; 4];
        for r in 0..4 {
            owes[r] = f._mm512_cmpge_epu64_mask(lanes.pending[r], splat(s, 1 << DST_BITS));
            let b = lanes.bits[r];
            let litlen = f._mm512_and_si512(b, splat(s, (1 << PairTable::LITLEN_BITS) - 1));
            let dist = f._mm512_add_epi64(
                f._mm512_and_si512(b, splat(s, (1 << PairTable::DIST_BITS) - 1)),
                splat(s, PairTable::DIST_START as u64),
            );
            let index: [u64; 8] = bytemuck::cast(f._mm512_mask_blend_epi64(owes[r], litlen, dist));
            let e = |k: usize| entries[index[k] as usize & cap] as i64;
            entry[r] = f._mm512_set_epi64(e(7), e(6), e(5), e(4), e(3), e(2), e(1), e(0));
        }
        let mut sub = 0u32;
        for r in 0..4 {
            sub |= (f._mm512_test_epi64_mask(entry[r], splat(s, SUBTABLE)) as u32) << (8 * r);
        }
        if sub != 0 {
            entry = subtables(s, entries, &lanes, &owes, entry, sub);
        }

        // Every lane's element.
        let (mut value, mut bits, mut count, mut step, mut copy) =
            ([zero; 4], [zero; 4], [zero; 4], [zero; 4], [zero; 4]);
        let mut length = [0u8; 4];
        let (mut stop, mut far) = (0u8, 0u8);
        for r in 0..4 {
            let (e, b) = (entry[r], lanes.bits[r]);
            let len = f._mm512_and_si512(e, splat(s, 0xFF));
            let taken = f._mm512_and_si512(f._mm512_srli_epi64::<8>(e), splat(s, 0xFF));
            let mask = f._mm512_and_si512(f._mm512_srli_epi64::<16>(e), splat(s, 0xFFFF));
            let base = f._mm512_and_si512(f._mm512_srli_epi64::<32>(e), splat(s, 0x1FFFF));
            let v = f._mm512_add_epi64(base, f._mm512_and_si512(f._mm512_srlv_epi64(b, len), mask));
            bits[r] = f._mm512_srlv_epi64(b, taken);
            count[r] = f._mm512_sub_epi64(lanes.count[r], taken);
            stop |= f._mm512_test_epi64_mask(e, splat(s, STOP));
            // LITERAL is the sign bit.
            let literal = dq._mm512_movepi64_mask(e);
            length[r] = !owes[r] & !literal;
            step[r] = f._mm512_mask_mov_epi64(f._mm512_maskz_mov_epi64(length[r], v), literal, splat(s, 1));
            let dst = f._mm512_and_si512(lanes.pending[r], splat(s, DST_MASK));
            far |= f._mm512_mask_cmpgt_epu64_mask(owes[r], v, dst);
            copy[r] = f._mm512_or_si512(f._mm512_slli_epi64::<20>(lanes.pending[r]), v);
            value[r] = v;
        }

        // Output positions: an exclusive prefix sum of the steps, from `pos`.
        let mut at = [zero; 4];
        let mut carry = splat(s, pos as u64);
        for r in 0..4 {
            let n = step[r];
            let mut x = f._mm512_add_epi64(n, f._mm512_alignr_epi64::<7>(n, zero));
            x = f._mm512_add_epi64(x, f._mm512_alignr_epi64::<6>(x, zero));
            x = f._mm512_add_epi64(x, f._mm512_alignr_epi64::<4>(x, zero));
            at[r] = f._mm512_add_epi64(carry, f._mm512_sub_epi64(x, n));
            carry = f._mm512_add_epi64(carry, f._mm512_permutexvar_epi64(splat(s, 7), x));
        }
        let next_pos = bytemuck::cast::<V, [u64; 8]>(carry)[0] as usize;

        if stop != 0 || far != 0 || next_pos > end {
            // The scalar round decides: it stops at the lane, or reports the fault.
            store(s, &lanes, state);
            let mut words = Window::at(src, cursor).expect("the window fits");
            let mut scalar_queue = [0u64; LANES];
            let step = state.round::<false>(table, out, &mut pos, &mut scalar_queue, &mut words);
            cursor += words.taken;
            if let Some(outcome) = step {
                break Some(outcome);
            }
            lanes = load(s, state);
            continue;
        }

        // Refills: lane by lane in order, the next word to each lane left under 32 bits. The
        // scalar refill (`lanes::refill`) one lane at a time would serialise the round on the
        // word cursor; this is the same refill for eight lanes at once (`vpexpandq` hands the
        // next words to the lanes that need one, in lane order), so it stays its own code.
        let mut words = 0usize;
        for r in 0..4 {
            let need = f._mm512_cmplt_epu64_mask(count[r], splat(s, 32));
            let next: [u8; 32] = window[4 * words..4 * words + 32].try_into().expect("32 bytes");
            let next = f._mm512_maskz_expand_epi64(need, f._mm512_cvtepu32_epi64(bytemuck::cast(next)));
            bits[r] = f._mm512_or_si512(bits[r], f._mm512_sllv_epi64(next, count[r]));
            count[r] = f._mm512_mask_add_epi64(count[r], need, count[r], splat(s, 32));
            words += need.count_ones() as usize;
        }

        // Commit: every lane's byte at its position (only literals' stay), the new pending
        // matches, and the owed distances' copies.
        let mut queued = 0usize;
        for r in 0..4 {
            let packed = f._mm512_or_si512(
                f._mm512_slli_epi64::<8>(at[r]),
                f._mm512_and_si512(value[r], splat(s, 0xFF)),
            );
            let packed: [u64; 8] = bytemuck::cast(packed);
            for p in packed {
                if let Some(byte) = out.get_mut((p >> 8) as usize) {
                    *byte = p as u8;
                }
            }
            lanes.pending[r] = f._mm512_maskz_mov_epi64(
                length[r],
                f._mm512_or_si512(f._mm512_slli_epi64::<{ DST_BITS }>(value[r]), at[r]),
            );
            let copies: [u64; 8] = bytemuck::cast(f._mm512_maskz_compress_epi64(owes[r], copy[r]));
            queue[queued..queued + 8].copy_from_slice(&copies);
            queued += owes[r].count_ones() as usize;
        }
        flush(s, out, &queue[..queued]);
        lanes.bits = bits;
        lanes.count = count;
        pos = next_pos;
        cursor += 4 * words;
    };
    if outcome.is_none() {
        store(s, &lanes, state);
    }
    *pos_io = pos;
    state.words.cursor = cursor;
    outcome
}

/// Follows the subtable pointers among `entry` (the lanes in `sub`): the pointer's position
/// plus the bits after the primary index, masked to the subtable's size.
#[inline(always)]
fn subtables(s: Token, entries: &[u64], lanes: &Registers, owes: &[u8; 4], entry: [V; 4], mut sub: u32) -> [V; 4] {
    let f = s.avx512f;
    let cap = entries.len() - 1;
    let mut index = [0u64; LANES];
    let mut resolved = [0u64; LANES];
    for r in 0..4 {
        let primary = f._mm512_mask_blend_epi64(
            owes[r],
            splat(s, PairTable::LITLEN_BITS as u64),
            splat(s, PairTable::DIST_BITS as u64),
        );
        let e = entry[r];
        let width = f._mm512_and_si512(e, splat(s, 0x7F));
        let mask = f._mm512_sub_epi64(f._mm512_sllv_epi64(splat(s, 1), width), splat(s, 1));
        let i = f._mm512_add_epi64(
            f._mm512_srli_epi64::<16>(e),
            f._mm512_and_si512(f._mm512_srlv_epi64(lanes.bits[r], primary), mask),
        );
        index[8 * r..8 * r + 8].copy_from_slice(&bytemuck::cast::<V, [u64; 8]>(i));
        resolved[8 * r..8 * r + 8].copy_from_slice(&bytemuck::cast::<V, [u64; 8]>(e));
    }
    while sub != 0 {
        let lane = sub.trailing_zeros() as usize;
        resolved[lane] = entries[index[lane] as usize & cap];
        sub &= sub - 1;
    }
    let mut entry = entry;
    for (r, e) in entry.iter_mut().enumerate() {
        let chunk: [u64; 8] = resolved[8 * r..8 * r + 8].try_into().expect("8 lanes");
        *e = bytemuck::cast(chunk);
    }
    entry
}

/// Runs queued copies in order (see `copy.rs` for the packing). A match of up to 32 bytes
/// that does not overlap its source is a 32-byte load of the source blended into the
/// destination's 32 bytes, which writes back the bytes past the match unchanged. LLVM turns
/// the load, blend and store into one masked store, so no copy reads its destination (a read
/// there would wait for the literal bytes and the previous copy just written around it).
/// Other copies (long, or overlapping their source) go out of line (`copy_apart`), so that the
/// loop over the short ones keeps its cursor in a register.
#[inline(always)]
fn flush(s: Token, out: &mut [u8], queue: &[u64]) {
    let bw = s.avx512bw;
    let mut i = 0;
    while i < queue.len() {
        // A run of short copies, then (if the run ended early) one other.
        while let Some(&copy) = queue.get(i) {
            let (dst, distance, len) = fields(copy);
            if !(len <= 32 && distance >= len && dst + 32 <= out.len()) {
                break;
            }
            let src = dst - distance;
            let from: [u8; 32] = out[src..src + 32].try_into().expect("32 bytes");
            let to: &mut [u8; 32] = (&mut out[dst..dst + 32]).try_into().expect("32 bytes");
            let keep = ((1u64 << len) - 1) as u32;
            let bytes = bw._mm256_mask_blend_epi8(keep, bytemuck::cast(*to), bytemuck::cast(from));
            *to = bytemuck::cast(bytes);
            i += 1;
        }
        if let Some(&copy) = queue.get(i) {
            copy_apart(out, copy);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::copy::queued_copies;

    /// Matches of 3–40 bytes (the longest past the blended copies' 32) at distances from 1
    /// (overlapping their source) to 60, packed within a few bytes of each other, some ending at
    /// the end of the output: the flush must agree with copies run one at a time.
    #[test]
    fn flushed_copies_match_copies_run_one_at_a_time() {
        let Some(s) = token() else {
            eprintln!("skipped: this CPU lacks the AVX-512 features the vector round needs");
            return;
        };
        let mut rng = fastrand::Rng::with_seed(12);
        for _ in 0..500 {
            let (mut out, queue, expected) = queued_copies(&mut rng, 300, 64..290, |rng, dst| {
                (rng.usize(3..=40).min(300 - dst), rng.usize(1..=60))
            });
            s.vectorize(|| flush(s, &mut out, &queue));
            assert_eq!(out, expected);
        }
    }
}
