//! Table entries: what a decode-table entry holds for the data loops, and how to read an element
//! off a lane with one. The tables (`crate::huffman`) store these words as the payloads built
//! here; every loop reads them with [`element`] and tests the flags. The packing is decided
//! here only, but the AVX-512 round (`avx512.rs`) unpacks the same fields with vector shifts:
//! change them together.

use crate::huffman::NO_CODE;
use crate::tables::{DIST_BASE, DIST_EXTRA, LENGTH_BASE, LENGTH_EXTRA};

// Entries (u64) carry what the data loop needs, so every element's value is
// base + (the bits after its code & mask), and the lane moves on by one shift:
//
//   63   62   61        49 48            32 31          16 15        8 7         0
//  +----+----+----+-------+----------------+--------------+-----------+-----------+
//  |LIT |EOB |STOP| 0     | base (17 bits) | extra mask   | taken     | code len  |
//  +----+----+----+-------+----------------+--------------+-----------+-----------+
//
// `base` is a length's or distance's base, or a literal's byte (with no extra bits); `taken` is
// the bits the element takes in all (code and extra bits, ≤ 31, FORMAT.md §2.3). Every base
// is below 2^16 (the largest, distance 49153), so it never reaches the flags. A subtable pointer
// is the table's own format (`SUBTABLE` in the code-length byte), never seen by `element`.

/// Set on literals' entries (the sign bit, which the vector round tests with one instruction).
pub(super) const LITERAL: u64 = 1 << 63;
/// Set on every entry that is not an ordinary element: an end of block, a bad symbol and a
/// pattern that is no code (`NO_CODE`, length 0), in either code. The fast loops test only it.
pub(super) const STOP: u64 = NO_CODE;
/// The end-of-block symbol's entry flags.
pub(super) const END_OF_BLOCK: u64 = 1 << 62 | STOP;
const BAD_SYMBOL: u64 = STOP;

/// An entry's payload (the table shifts it left 8 and puts the code length below) for an
/// element of `base` with `extra` extra bits and a code of `len` bits.
fn element_payload(base: u32, extra: u32, len: u32) -> u64 {
    (base as u64) << 24 | ((1u64 << extra) - 1) << 8 | (len + extra) as u64
}

/// What a lit/len table entry holds for `sym` with a code of `len` bits.
pub(super) fn litlen_payload(sym: u32, len: u32) -> u64 {
    match sym {
        0..=255 => LITERAL >> 8 | element_payload(sym, 0, len),
        256 => END_OF_BLOCK >> 8 | len as u64,
        257..=285 => element_payload(LENGTH_BASE[sym as usize - 257], LENGTH_EXTRA[sym as usize - 257], len),
        _ => BAD_SYMBOL >> 8 | len as u64,
    }
}

/// What a distance table entry holds (symbols are 0..=31).
pub(super) fn dist_payload(sym: u32, len: u32) -> u64 {
    element_payload(DIST_BASE[sym as usize], DIST_EXTRA[sym as usize], len)
}

/// Decodes the element an entry describes from a lane's bits (its code at the bottom):
/// `(value, the lane's bits after it, bits taken)`.
#[inline(always)]
pub(super) fn element(entry: u64, bits: u64) -> (u32, u64, u32) {
    let len = entry & 0xFF;
    let taken = (entry >> 8) & 0xFF;
    let mask = (entry >> 16) & 0xFFFF;
    let base = (entry >> 32) & 0x1FFFF;
    ((base + ((bits >> len) & mask)) as u32, bits >> taken, taken as u32)
}
