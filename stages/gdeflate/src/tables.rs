//! The code tables: RFC 1951's, with GDeflate's Deflate64 changes (length 285 = 3 + 16 extra
//! bits, distance codes 30 and 31, a 64 KiB window).

/// Bytes of uncompressed data per tile.
pub const TILE_SIZE: usize = 65536;
/// Interleaved bit streams per tile.
pub const LANES: usize = 32;
/// Longest match the encoder emits (the reference's cap; the format allows 65538).
pub const MAX_MATCH: usize = 65535;
/// Shortest match.
pub const MIN_MATCH: usize = 3;
/// Longest stored block.
pub const MAX_STORED: usize = 65535;

/// Order in which code-length-code lengths are sent.
pub const PRECODE_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/// Base length of symbols 257..=285.
pub const LENGTH_BASE: [u32; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 3,
];
/// Extra bits of symbols 257..=285.
pub const LENGTH_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 16,
];

/// Base distance of distance symbols 0..=31.
pub const DIST_BASE: [u32; 32] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
    8193, 12289, 16385, 24577, 32769, 49153,
];
/// Extra bits of distance symbols 0..=31.
pub const DIST_EXTRA: [u32; 32] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14,
];

/// Symbols of the lit/len alphabet (286 and 287 exist in the fixed code but are invalid).
pub const LITLEN_SYMS: usize = 288;
/// Symbols of the distance alphabet.
pub const DIST_SYMS: usize = 32;
/// End of block.
pub const EOB: usize = 256;

/// Code lengths of RFC 1951's fixed lit/len code.
pub fn fixed_litlen_lengths() -> [u8; LITLEN_SYMS] {
    let mut lens = [8u8; LITLEN_SYMS];
    lens[144..256].fill(9);
    lens[256..280].fill(7);
    lens
}

/// Code lengths of the fixed distance code.
pub fn fixed_dist_lengths() -> [u8; DIST_SYMS] {
    [5; DIST_SYMS]
}

/// Length symbol (257..=285) of every length below 258, built at compile time.
const LENGTH_SYMBOL: [u16; 258] = {
    let mut table = [0u16; 258];
    let mut len = MIN_MATCH;
    while len < 258 {
        let mut i = 27;
        while LENGTH_BASE[i] as usize > len {
            i -= 1;
        }
        table[len] = 257 + i as u16;
        len += 1;
    }
    table
};

/// The length symbol (257..=285) and its extra value for a match of `len` (3..=65538). Lengths
/// of 258 and more use symbol 285, as the reference encoder does.
#[inline]
pub fn length_symbol(len: usize) -> (usize, u32) {
    debug_assert!((MIN_MATCH..=65538).contains(&len));
    if len >= 258 {
        return (285, (len - 3) as u32);
    }
    let sym = LENGTH_SYMBOL[len] as usize;
    (sym, (len as u32) - LENGTH_BASE[sym - 257])
}

/// The distance symbol (0..=31) and its extra value for `dist` (1..=65536).
pub fn dist_symbol(dist: usize) -> (usize, u32) {
    debug_assert!((1..=65536).contains(&dist));
    let sym = if dist <= 4 {
        dist - 1
    } else {
        // Each pair of codes covers a power of two: 5..8 → 4,5; 9..16 → 6,7; …
        let d = dist - 1;
        let log = usize::BITS as usize - 1 - d.leading_zeros() as usize;
        2 * log + ((d >> (log - 1)) & 1)
    };
    (sym, (dist as u32) - DIST_BASE[sym])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_round_trips() {
        for len in MIN_MATCH..=65538 {
            let (sym, extra) = length_symbol(len);
            let i = sym - 257;
            assert!(extra < (1 << LENGTH_EXTRA[i]), "len {len}");
            assert_eq!(LENGTH_BASE[i] + extra, len as u32);
        }
        assert_eq!(length_symbol(258), (285, 255));
        assert_eq!(length_symbol(257), (284, 30));
    }

    #[test]
    fn every_distance_round_trips() {
        for dist in 1..=65536 {
            let (sym, extra) = dist_symbol(dist);
            assert!(extra < (1 << DIST_EXTRA[sym]), "dist {dist}");
            assert_eq!(DIST_BASE[sym] + extra, dist as u32);
        }
        assert_eq!(dist_symbol(32769).0, 30);
        assert_eq!(dist_symbol(49153).0, 31);
    }
}
