//! Canonical Huffman codes: decode tables for the decoder, length-limited codes for the encoder.

use crate::error::Reason;

/// Entry flag, in the length byte (code lengths are ≤ 15): the entry points at a subtable.
pub(crate) const SUBTABLE: u64 = 0x80;

/// The entry of a pattern no code has: length 0, and bit 61 set, the bit a decoder's payloads
/// also set on elements that end its fast loop (so one test catches both).
pub const NO_CODE: u64 = 1 << 61;

/// A table-driven decoder for one canonical code. Index it with the next `primary_bits` bits of
/// the stream (LSB first). A final entry is `payload << 8 | code length`, where the payload (56
/// bits) is whatever the table's builder mapped the symbol and its code length to; `NO_CODE` is
/// a pattern no code has. A pointer to a subtable for longer codes is
/// `offset << 16 | SUBTABLE | sub_bits`, with the flag in the length byte.
#[derive(Clone, Debug)]
pub struct DecodeTable {
    /// A fixed size, so lookups index with a mask and need no bounds check.
    entries: Box<[u64; TABLE_CAP]>,
    primary_bits: u32,
}

/// Entries a table holds: a 10-bit primary table with subtables needs at most 1332 for 286
/// symbols of up to 15 bits (zlib's `enough`), anything smaller fewer. `build` refuses a code
/// that would need more, so no input can index past it.
const TABLE_CAP: usize = 2048;

/// Bit-reverses the low `len` bits of `code` (codes are sent MSB first, read LSB first).
pub fn reverse(code: u32, len: u32) -> u32 {
    code.reverse_bits() >> (32 - len)
}

/// Canonical codes for `lengths` (RFC 1951 §3.2.2), bit-reversed for LSB-first writing.
/// Returns false if the lengths over-subscribe the code space.
pub fn canonical_codes(lengths: &[u8], codes: &mut [u32]) -> bool {
    let mut count = [0u32; 16];
    for &l in lengths {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut left: i64 = 1;
    for &c in &count[1..] {
        left = 2 * left - c as i64;
        if left < 0 {
            return false;
        }
    }
    let mut next = [0u32; 16];
    let mut code = 0u32;
    for len in 1..16 {
        code = (code + count[len - 1]) << 1;
        next[len] = code;
    }
    for (sym, &l) in lengths.iter().enumerate() {
        if l != 0 {
            codes[sym] = reverse(next[l as usize], l as u32);
            next[l as usize] += 1;
        }
    }
    true
}

/// Fills `region` (its start is the primary table, subtables follow within it; pointers are
/// offsets into `region` plus `base`, the region's position in the array lookups index) with
/// the decode table of `lengths`.
///
/// The primary table is built as in libdeflate: symbols in canonical order (by length, then
/// number), each code's bit-reversed pattern stepped from the last, and the table doubled
/// before each longer length, so a code of length `l` written at its pattern below `2^l`
/// reaches every entry it owns through the copies, and patterns no code owns keep `NO_CODE`
/// from the one entry the table starts with.
fn fill_region(
    region: &mut [u64],
    base: usize,
    primary: u32,
    lengths: &[u8],
    payload: impl Fn(u32, u32) -> u64,
) -> Result<(), Reason> {
    debug_assert!(primary <= 11 && lengths.len() <= 288 && lengths.iter().all(|&l| l <= 15));
    let mut count = [0u16; 16];
    for &l in lengths {
        count[l as usize & 15] += 1;
    }
    count[0] = 0;
    let mut left = 1i32;
    for &c in &count[1..] {
        left = 2 * left - c as i32;
        if left < 0 {
            return Err(Reason::OversubscribedCode);
        }
    }
    // Symbols sorted by length, then number: canonical order.
    let mut next = [0u16; 16];
    for l in 1..15 {
        next[l + 1] = next[l] + count[l];
    }
    let mut sorted = [0u16; 288];
    for (sym, &l) in lengths.iter().enumerate() {
        if l != 0 {
            let at = &mut next[l as usize & 15];
            sorted[*at as usize] = sym as u16;
            *at += 1;
        }
    }

    let primary_size = 1usize << primary;
    let mut codes = [0u32; 288];
    let (mut pattern, mut size, mut at) = (0u32, 1usize, 0usize);
    region[0] = NO_CODE;
    for l in 1..16u32 {
        if l <= primary {
            region.copy_within(..size, size);
            size *= 2;
        }
        for &sym in &sorted[at..at + count[l as usize] as usize] {
            if l <= primary {
                region[pattern as usize] = payload(sym as u32, l) << 8 | l as u64;
            }
            codes[sym as usize] = pattern;
            // The next code's pattern: the canonical code plus one, bit-reversed. The highest
            // clear bit below `l` is set and the bits above it cleared; a full pattern was the
            // last code (the length check above leaves no symbol after it).
            let open = !pattern & ((1 << l) - 1);
            if open != 0 {
                let bit = 1 << (31 - open.leading_zeros());
                pattern = pattern & (bit - 1) | bit;
            }
        }
        at += count[l as usize] as usize;
    }
    debug_assert_eq!(size, primary_size);
    let mut used = primary_size;
    let short: usize = count[..=primary as usize].iter().map(|&c| c as usize).sum();
    let long = &sorted[short..at];

    // Longest code under each primary prefix decides that prefix's subtable size; the prefixes
    // that have one are listed as they are met (scanning all 1024 for them was a quarter of a
    // table build).
    let mut longest = [0u8; 1 << 11];
    // (A new prefix takes a new symbol, so there are at most 288.)
    let (mut prefixes, mut with_subtable) = ([0u16; 288], 0usize);
    for &sym in long {
        let l = lengths[sym as usize];
        let prefix = codes[sym as usize] as usize & (primary_size - 1);
        if longest[prefix] == 0 {
            prefixes[with_subtable] = prefix as u16;
            with_subtable += 1;
        }
        longest[prefix] = longest[prefix].max(l);
    }
    for &prefix in &prefixes[..with_subtable] {
        let prefix = prefix as usize;
        let sub_bits = longest[prefix] as u32 - primary;
        let end = used + (1 << sub_bits);
        if end > region.len() {
            return Err(Reason::OversubscribedCode);
        }
        region[prefix] = ((base + used) as u64) << 16 | SUBTABLE | sub_bits as u64;
        region[used..end].fill(NO_CODE);
        used = end;
    }
    for &sym in long {
        let (sym, l) = (sym as usize, lengths[sym as usize] as u32);
        let code = codes[sym] as usize;
        let pointer = region[code & (primary_size - 1)];
        let (offset, sub_bits) = ((pointer >> 16) as usize - base, (pointer & 0x7F) as u32);
        let entry = payload(sym as u32, l) << 8 | l as u64;
        let step = 1usize << (l - primary);
        let mut i = code >> primary;
        while i < 1 << sub_bits {
            region[offset + i] = entry;
            i += step;
        }
    }
    Ok(())
}

/// A block's two codes in one array: lit/len (10-bit primary) in the first half, distance
/// (8-bit primary) in the second, so both lookups index one fixed-size array through masks.
#[derive(Clone, Debug)]
pub struct PairTable {
    entries: Box<[u64; 2 * TABLE_CAP]>,
    /// The share of lit/len symbols that are lengths, as the code's lengths imply it
    /// (Σ 2^-length over symbols 257 and up), in 1/32768ths.
    length_share: u32,
}

impl Default for PairTable {
    fn default() -> Self {
        PairTable {
            entries: Box::new([0; 2 * TABLE_CAP]),
            length_share: 0,
        }
    }
}

impl PairTable {
    /// Primary index width of the lit/len half.
    pub const LITLEN_BITS: u32 = 10;
    /// Primary index width of the distance half.
    pub const DIST_BITS: u32 = 8;

    /// Builds both halves; payloads as for [`DecodeTable::build_with`].
    pub fn build_with(
        &mut self,
        litlen: &[u8],
        litlen_payload: impl Fn(u32, u32) -> u64,
        dist: &[u8],
        dist_payload: impl Fn(u32, u32) -> u64,
    ) -> Result<(), Reason> {
        let (low, high) = self.entries.split_at_mut(TABLE_CAP);
        fill_region(low, 0, Self::LITLEN_BITS, litlen, litlen_payload)?;
        fill_region(high, TABLE_CAP, Self::DIST_BITS, dist, dist_payload)?;
        self.length_share = litlen
            .iter()
            .skip(257)
            .take(29)
            .filter(|&&l| l != 0)
            .map(|&l| 1u32 << (15 - l as u32))
            .sum();
        Ok(())
    }

    /// Where the distance half starts in [`PairTable::entries`].
    #[cfg_attr(not(all(target_arch = "x86_64", feature = "simd")), allow(dead_code))]
    pub const DIST_START: usize = TABLE_CAP;

    /// Both halves as one array, for a loop that computes its own indices (masked to the
    /// array's size) and follows subtable pointers itself: a pointer entry has `SUBTABLE` in
    /// its length byte, the subtable's index bits below that flag and its position above bit 16.
    #[cfg_attr(not(all(target_arch = "x86_64", feature = "simd")), allow(dead_code))]
    pub fn entries(&self) -> &[u64; 2 * TABLE_CAP] {
        &self.entries
    }

    /// The share of lit/len symbols that are match lengths, as the code implies it, in
    /// 1/32768ths: a code that spends few of its patterns on lengths expects mostly literals.
    pub fn length_share(&self) -> u32 {
        self.length_share
    }

    /// The final entry for the low bits of `bits` in the distance code if `distance`, else in
    /// the lit/len code; `NO_CODE` if the pattern is no code.
    #[inline(always)]
    pub fn lookup(&self, bits: u64, distance: bool) -> u64 {
        if distance {
            self.lookup_in::<TABLE_CAP, { Self::DIST_BITS }>(bits)
        } else {
            self.lookup_in::<0, { Self::LITLEN_BITS }>(bits)
        }
    }

    /// Both entries for `bits`, (lit/len, distance): two independent loads, for a caller that
    /// picks one without a branch.
    #[inline(always)]
    pub fn lookup_both(&self, bits: u64) -> (u64, u64) {
        (
            self.lookup_in::<0, { Self::LITLEN_BITS }>(bits),
            self.lookup_in::<TABLE_CAP, { Self::DIST_BITS }>(bits),
        )
    }

    #[inline(always)]
    fn lookup_in<const BASE: usize, const PRIMARY: u32>(&self, bits: u64) -> u64 {
        const CAP: usize = 2 * TABLE_CAP;
        let entry = self.entries[(BASE + (bits as usize & ((1 << PRIMARY) - 1))) & (CAP - 1)];
        if entry & SUBTABLE == 0 {
            return entry;
        }
        let sub = (bits >> PRIMARY) as usize & ((1usize << (entry & 0x7F)) - 1);
        self.entries[((entry >> 16) as usize + sub) & (CAP - 1)]
    }
}

impl DecodeTable {
    /// An empty table; [`DecodeTable::build`] fills it.
    pub fn new(primary_bits: u32) -> Self {
        debug_assert!(primary_bits <= 11);
        DecodeTable {
            entries: Box::new([0; TABLE_CAP]),
            primary_bits,
        }
    }

    /// Builds the table for `lengths` (each 0..=15), with each symbol's payload its number.
    /// Incomplete codes are accepted (their unused patterns decode as errors); over-subscribed
    /// ones are refused.
    pub fn build(&mut self, lengths: &[u8]) -> Result<(), Reason> {
        self.build_with(lengths, |sym, _| sym as u64)
    }

    /// Builds the table with `payload(symbol, code length)` (< 2^56) in each entry, so a decoder
    /// can keep what it needs to act on a symbol (a literal byte, a base, the extra bits) in the
    /// entry itself.
    pub fn build_with(&mut self, lengths: &[u8], payload: impl Fn(u32, u32) -> u64) -> Result<(), Reason> {
        fill_region(&mut self.entries[..], 0, self.primary_bits, lengths, payload)
    }

    /// The final entry for the low bits of `bits` (which must hold at least 15 valid bits):
    /// `payload << 8 | code length`, or `NO_CODE` if the pattern is no code.
    #[inline(always)]
    pub fn lookup(&self, bits: u64) -> u64 {
        // Masked to the table's size as well: the compiler then needs no bounds check.
        let mask = (1usize << self.primary_bits) - 1;
        let entry = self.entries[bits as usize & mask & (TABLE_CAP - 1)];
        if entry & SUBTABLE == 0 {
            return entry;
        }
        let sub = (bits >> self.primary_bits) as usize & ((1usize << (entry & 0x7F)) - 1);
        self.entries[((entry >> 16) as usize + sub) & (TABLE_CAP - 1)]
    }

    /// Decodes one symbol (for tables built with [`DecodeTable::build`]): `(symbol, length)`,
    /// or `None` if the pattern is no code.
    #[inline(always)]
    pub fn decode(&self, bits: u64) -> Option<(u32, u32)> {
        let entry = self.lookup(bits);
        let len = entry & 0xFF;
        (len != 0).then_some(((entry >> 8) as u32, len as u32))
    }
}

/// Optimal code lengths for `freqs`, none longer than `limit`, written to `lengths`.
/// Symbols with zero frequency get length 0. A lone used symbol gets length 1.
pub fn lengths_for(freqs: &[u32], limit: u32, lengths: &mut [u8]) {
    lengths.fill(0);
    let mut used: Vec<(u32, u16)> = freqs
        .iter()
        .enumerate()
        .filter(|(_, &f)| f > 0)
        .map(|(s, &f)| (f, s as u16))
        .collect();
    match used.len() {
        0 => return,
        1 => {
            lengths[used[0].1 as usize] = 1;
            return;
        }
        _ => {}
    }
    used.sort_unstable();
    let n = used.len();

    // Huffman by the two-queue method: leaves in `used` (sorted), internal nodes in `nodes`
    // (created in non-decreasing weight order). Depths come from parent links.
    let mut weight: Vec<u64> = used.iter().map(|&(f, _)| f as u64).collect();
    let mut parent = vec![0usize; 2 * n - 1];
    let (mut leaf, mut node) = (0usize, n);
    weight.resize(2 * n - 1, 0);
    let pick = |weight: &[u64], leaf: &mut usize, node: &mut usize, next: usize| {
        if *leaf < n && (*node >= next || weight[*leaf] <= weight[*node]) {
            *leaf += 1;
            *leaf - 1
        } else {
            *node += 1;
            *node - 1
        }
    };
    for next in n..2 * n - 1 {
        let a = pick(&weight, &mut leaf, &mut node, next);
        let b = pick(&weight, &mut leaf, &mut node, next);
        weight[next] = weight[a] + weight[b];
        parent[a] = next;
        parent[b] = next;
    }
    let mut depth = vec![0u32; 2 * n - 1];
    for i in (0..2 * n - 2).rev() {
        depth[i] = depth[parent[i]] + 1;
    }

    // Histogram of leaf depths, then the JPEG (Annex K.3) adjustment to respect `limit`.
    let mut count = [0u32; 64];
    for &d in &depth[..n] {
        count[d as usize] += 1;
    }
    let limit = limit as usize;
    for len in (limit + 1..64).rev() {
        while count[len] > 0 {
            let mut j = len - 2;
            while count[j] == 0 {
                j -= 1;
            }
            count[len] -= 2;
            count[len - 1] += 1;
            count[j + 1] += 2;
            count[j] -= 1;
        }
    }
    // Most frequent symbols get the shortest lengths.
    let mut len = 1;
    for &(_, sym) in used.iter().rev() {
        while count[len] == 0 {
            len += 1;
        }
        count[len] -= 1;
        lengths[sym as usize] = len as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kraft(lengths: &[u8]) -> f64 {
        lengths.iter().filter(|&&l| l > 0).map(|&l| 0.5f64.powi(l as i32)).sum()
    }

    #[test]
    fn lengths_are_complete_and_limited() {
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..200 {
            let n = rng.usize(2..288);
            let freqs: Vec<u32> = (0..n)
                .map(|_| {
                    let bits = rng.u32(1..20);
                    if rng.bool() {
                        0
                    } else {
                        rng.u32(1..1 << bits)
                    }
                })
                .collect();
            let mut lengths = vec![0u8; n];
            lengths_for(&freqs, 15, &mut lengths);
            let used = freqs.iter().filter(|&&f| f > 0).count();
            if used >= 2 {
                assert!((kraft(&lengths) - 1.0).abs() < 1e-9, "a complete code");
            }
            assert!(lengths.iter().all(|&l| l <= 15));
            for (f, l) in freqs.iter().zip(&lengths) {
                assert_eq!(*f == 0, *l == 0);
            }
        }
    }

    #[test]
    fn skewed_frequencies_hit_the_limit() {
        let freqs: Vec<u32> = (0..30).map(|i| 1u32 << i.min(30)).collect();
        let mut lengths = vec![0u8; 30];
        lengths_for(&freqs, 7, &mut lengths);
        assert!(lengths.iter().all(|&l| (1..=7).contains(&l)));
        assert!(kraft(&lengths) <= 1.0);
    }

    #[test]
    fn decode_tables_decode_every_code() {
        let mut rng = fastrand::Rng::with_seed(2);
        for primary in [7, 10] {
            let freqs: Vec<u32> = (0..288).map(|_| rng.u32(1..100_000)).collect();
            let mut lengths = vec![0u8; 288];
            lengths_for(&freqs, 15, &mut lengths);
            let mut codes = vec![0u32; 288];
            assert!(canonical_codes(&lengths, &mut codes));
            let mut table = DecodeTable::new(primary);
            table.build(&lengths).unwrap();
            for sym in 0..288 {
                let junk = rng.u64(..) << lengths[sym];
                assert_eq!(
                    table.decode(codes[sym] as u64 | junk),
                    Some((sym as u32, lengths[sym] as u32))
                );
            }
        }
    }

    /// Tables are rebuilt in place for every block: alternate complete and incomplete codes with
    /// subtables and check every pattern.
    #[test]
    fn a_rebuilt_table_keeps_nothing_of_the_previous_code() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut table = DecodeTable::new(10);
        let mut longest_seen = 0;
        for round in 0..24 {
            let n = rng.usize(2..=288);
            let freqs: Vec<u32> = (0..n).map(|_| 1 << rng.u32(0..24)).collect();
            let mut lengths = vec![0u8; n];
            lengths_for(&freqs, 15, &mut lengths);
            if round % 2 == 1 {
                // Incomplete: drop one of the longest codes.
                let longest = *lengths.iter().max().unwrap();
                let at = lengths.iter().position(|&l| l == longest).unwrap();
                lengths[at] = 0;
            }
            longest_seen = longest_seen.max(*lengths.iter().max().unwrap());
            let mut codes = vec![0u32; n];
            assert!(canonical_codes(&lengths, &mut codes));
            table.build(&lengths).unwrap();
            let mut expected = vec![None; 1 << 15];
            for (sym, &l) in lengths.iter().enumerate().filter(|(_, &l)| l != 0) {
                for high in 0..1usize << (15 - l) {
                    expected[codes[sym] as usize | high << l] = Some((sym as u32, l as u32));
                }
            }
            for (pattern, want) in expected.iter().enumerate() {
                assert_eq!(
                    table.decode(pattern as u64),
                    *want,
                    "round {round}, pattern {pattern:#x}"
                );
            }
        }
        assert!(longest_seen > 10, "the codes had subtables");
    }

    #[test]
    fn oversubscribed_codes_are_refused_and_incomplete_ones_accepted() {
        let mut table = DecodeTable::new(7);
        assert_eq!(table.build(&[1, 1, 1]), Err(Reason::OversubscribedCode));
        table.build(&[0, 1, 0]).unwrap();
        assert_eq!(table.decode(0), Some((1, 1)));
        assert_eq!(table.decode(1), None, "the unused half of an incomplete code");
    }
}
