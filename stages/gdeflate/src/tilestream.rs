//! DirectStorage's TileStream container (FORMAT.md §1): an 8-byte header, a table of u32 (entry
//! 0 = compressed size of the last tile, entry i = offset of tile i), then the tiles back to
//! back. The reader checks everything the reference reader trusts: header, tile count, that
//! offsets rise and stay inside the data, and the caller's output size.

use crate::decode::Decoder;
use crate::encode::{Encoder, Level};
use crate::error::{Error, Reason};
use crate::tables::TILE_SIZE;

/// Codec id of GDeflate in the header.
pub const GDEFLATE_ID: u8 = 4;
/// Most tiles one stream can hold.
pub const MAX_TILES: usize = 65535;
const HEADER_LEN: usize = 8;
/// `tileSizeIdx` for 64 KiB tiles, the only size defined.
const TILE_SIZE_IDX: u32 = 1;

fn tile_count(uncompressed: u64) -> Result<usize, Error> {
    let tiles = uncompressed.div_ceil(TILE_SIZE as u64);
    if tiles == 0 || tiles > MAX_TILES as u64 {
        return Err(Reason::Unsupported.into());
    }
    Ok(tiles as usize)
}

/// Writes a TileStream around `tiles` (compressed, in order) of a stream of `uncompressed`
/// bytes. Byte-identical to the reference writer's layout around the same tiles.
pub fn write(tiles: &[&[u8]], uncompressed: u64, out: &mut Vec<u8>) -> Result<(), Error> {
    let sizes: Vec<u64> = tiles.iter().map(|t| t.len() as u64).collect();
    write_header(&sizes, uncompressed, out)?;
    for tile in tiles {
        out.extend_from_slice(tile);
    }
    Ok(())
}

/// Writes a TileStream's header and table for tiles of `sizes` compressed bytes (in order) of
/// a stream of `uncompressed` bytes: what goes before the tiles, for a writer that streams the
/// tiles out first and the table last.
pub fn write_header(sizes: &[u64], uncompressed: u64, out: &mut Vec<u8>) -> Result<(), Error> {
    if tile_count(uncompressed)? != sizes.len() {
        return Err(Reason::SizeMismatch.into());
    }
    let last_size = (uncompressed % TILE_SIZE as u64) as u32; // 0: the last tile is full
    out.push(GDEFLATE_ID);
    out.push(GDEFLATE_ID ^ 0xFF);
    out.extend_from_slice(&(sizes.len() as u16).to_le_bytes());
    out.extend_from_slice(&(TILE_SIZE_IDX | last_size << 2).to_le_bytes());
    let last = sizes.last().copied().unwrap_or(0);
    out.extend_from_slice(
        &u32::try_from(last)
            .map_err(|_| Error::stream(Reason::BadTileTable))?
            .to_le_bytes(),
    );
    let mut offset = 0u64;
    for &size in &sizes[..sizes.len() - 1] {
        offset += size;
        let offset = u32::try_from(offset).map_err(|_| Error::stream(Reason::BadTileTable))?;
        out.extend_from_slice(&offset.to_le_bytes());
    }
    Ok(())
}

/// The length of a TileStream's header and table for `tiles` tiles: where its first tile starts.
pub fn header_len(tiles: usize) -> usize {
    HEADER_LEN + 4 * tiles
}

/// A parsed, validated TileStream: the tiles can be looked up and decoded independently.
#[derive(Clone, Copy, Debug)]
pub struct TileStream<'a> {
    table: &'a [u8],
    data: &'a [u8],
    tiles: usize,
    uncompressed: u64,
}

impl<'a> TileStream<'a> {
    /// Parses and validates the header and tile table of `bytes` (the whole stream).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let Some(stream) = Self::parse_prefix(bytes)? else {
            return Err(match bytes.len() {
                ..HEADER_LEN => Reason::BadHeader.into(),
                _ => Reason::BadTileTable.into(),
            });
        };
        // The last tile must end exactly at the end of the data. Each tile's own bounds are
        // checked when it is looked up, so parsing is O(1) however many tiles there are (every
        // decode node of a large asset parses the stream).
        if stream.stream_len() != Some(bytes.len()) {
            return Err(Reason::BadTileTable.into());
        }
        Ok(stream)
    }

    /// Parses the header and tile table at the start of `bytes`, a stream or the first part of
    /// one (a stream still being read): `None` while `bytes` is too short to hold them. Tiles
    /// can be looked up as in a whole stream; those whose bytes are not all in `bytes` yet fail
    /// to ([`TileStream::tile`]). Nothing checks that the stream ends where its table says
    /// ([`TileStream::stream_len`]), nor the table's order ([`TileStream::check_order`]).
    pub fn parse_prefix(bytes: &'a [u8]) -> Result<Option<Self>, Error> {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Ok(None);
        };
        if header[0] != GDEFLATE_ID || header[1] != GDEFLATE_ID ^ 0xFF {
            return Err(Reason::BadHeader.into());
        }
        let tiles = u16::from_le_bytes([header[2], header[3]]) as usize;
        let word = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if tiles == 0 || word & 3 != TILE_SIZE_IDX || word >> 20 != 0 {
            return Err(Reason::BadHeader.into());
        }
        let last_size = (word >> 2) & 0x3FFFF;
        if last_size > TILE_SIZE as u32 {
            return Err(Reason::BadHeader.into());
        }
        let table_end = HEADER_LEN + 4 * tiles;
        let Some(table) = bytes.get(HEADER_LEN..table_end) else {
            return Ok(None);
        };
        let full = if last_size == 0 {
            TILE_SIZE as u64
        } else {
            last_size as u64
        };
        Ok(Some(TileStream {
            table,
            data: &bytes[table_end..],
            tiles,
            uncompressed: (tiles as u64 - 1) * TILE_SIZE as u64 + full,
        }))
    }

    /// The length of the whole stream by its table (header, table and every tile), or `None` if
    /// that overflows.
    pub fn stream_len(&self) -> Option<usize> {
        let last_start = if self.tiles == 1 { 0 } else { self.entry(self.tiles - 1) };
        (HEADER_LEN + self.table.len())
            .checked_add(last_start)?
            .checked_add(self.entry(0))
    }

    /// Whether the table's offsets rise from tile to tile, as [`TileStream::tile`] checks one
    /// tile at a time: an error naming the first tile out of order.
    pub fn check_order(&self) -> Result<(), Error> {
        self.check_order_of(0..self.tiles)
    }

    /// [`TileStream::check_order`] for tiles `tiles` and where each starts against the tile
    /// before: what a decoder of a stream arriving in pieces can check of the tiles it takes,
    /// so a table out of order is called that whichever piece meets it first.
    pub fn check_order_of(&self, tiles: std::ops::Range<usize>) -> Result<(), Error> {
        let start = |i: usize| if i == 0 { 0 } else { self.entry(i) };
        for i in tiles.start.max(1)..tiles.end.saturating_add(1).min(self.tiles) {
            if start(i) < start(i - 1) {
                return Err(Error::in_tile(Reason::BadTileTable, i as u32 - 1));
            }
        }
        Ok(())
    }

    /// Where tile `i`'s compressed bytes end, as an offset into the stream, by the table alone
    /// (its start is checked by [`TileStream::tile`]).
    pub fn tile_end(&self, i: usize) -> usize {
        let data = HEADER_LEN + self.table.len();
        if i + 1 < self.tiles {
            data + self.entry(i + 1)
        } else {
            self.stream_len().unwrap_or(usize::MAX)
        }
    }

    /// The tiles whose compressed bytes end after offset `from` of the stream and at or before
    /// `to`, for a table in order ([`TileStream::check_order`]): what a decoder of a stream
    /// arriving in pieces can take once the bytes up to `to` are in.
    pub fn tiles_ending_in(&self, from: usize, to: usize) -> std::ops::Range<usize> {
        let first = partition(self.tiles, |i| self.tile_end(i) <= from);
        let end = partition(self.tiles, |i| self.tile_end(i) <= to);
        first..end.max(first)
    }

    fn entry(&self, i: usize) -> usize {
        let b = &self.table[4 * i..4 * i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    }

    /// How many tiles.
    pub fn tiles(&self) -> usize {
        self.tiles
    }

    /// Total bytes the stream decodes to.
    pub fn uncompressed_len(&self) -> u64 {
        self.uncompressed
    }

    /// Bytes of compressed tile data (without header and table).
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Where tile `i`'s compressed bytes lie in the stream the TileStream was parsed from (its
    /// header and table included), and its uncompressed size: for a decoder that reads the
    /// stream where it already is, such as the GPU's. The same checks as [`TileStream::tile`].
    pub fn tile_span(&self, i: usize) -> Result<(std::ops::Range<usize>, usize), Error> {
        let (bytes, size) = self.tile(i)?;
        let start = HEADER_LEN + self.table.len() + if i == 0 { 0 } else { self.entry(i) };
        Ok((start..start + bytes.len(), size))
    }

    /// Tile `i`'s compressed bytes and its uncompressed size; an error if the table places it
    /// out of order or outside the data.
    pub fn tile(&self, i: usize) -> Result<(&'a [u8], usize), Error> {
        let bad = || Error::in_tile(Reason::BadTileTable, i as u32);
        if i >= self.tiles {
            return Err(bad());
        }
        let start = if i == 0 { 0 } else { self.entry(i) };
        let last = i + 1 == self.tiles;
        // The last tile's size is entry 0 (so a stream still arriving knows where it ends).
        let end = if last {
            start.checked_add(self.entry(0)).ok_or_else(bad)?
        } else {
            self.entry(i + 1)
        };
        let bytes = self.data.get(start..end).ok_or_else(bad)?;
        let size = if last {
            (self.uncompressed - (self.tiles as u64 - 1) * TILE_SIZE as u64) as usize
        } else {
            TILE_SIZE
        };
        Ok((bytes, size))
    }

    /// Decodes tiles `range` into `out`, which holds exactly their uncompressed bytes.
    pub fn decode_tiles(
        &self,
        decoder: &mut Decoder,
        range: std::ops::Range<usize>,
        out: &mut [u8],
    ) -> Result<(), Error> {
        if range.end > self.tiles || range.start > range.end {
            return Err(Reason::SizeMismatch.into());
        }
        let mut at = 0usize;
        for i in range {
            let (src, size) = self.tile(i)?;
            let dst = out.get_mut(at..at + size).ok_or(Error::stream(Reason::SizeMismatch))?;
            decoder
                .decode_tile(src, dst)
                .map_err(|reason| Error::in_tile(reason, i as u32))?;
            at += size;
        }
        if at != out.len() {
            return Err(Reason::SizeMismatch.into());
        }
        Ok(())
    }
}

/// Compresses `input` into a TileStream at `level` on this thread. Empty input (and input over
/// 65535 tiles) cannot be a TileStream.
pub fn compress(input: &[u8], level: Level) -> Result<Vec<u8>, Error> {
    let tiles = tile_count(input.len() as u64)?;
    let mut encoder = Encoder::new(level);
    let mut data = Vec::with_capacity(input.len() / 2 + 1024);
    let mut ends = Vec::with_capacity(tiles);
    for tile in input.chunks(TILE_SIZE) {
        encoder.encode_tile(tile, &mut data);
        ends.push(data.len());
    }
    let mut starts = vec![0];
    starts.extend_from_slice(&ends[..ends.len() - 1]);
    let slices: Vec<&[u8]> = starts.iter().zip(&ends).map(|(&s, &e)| &data[s..e]).collect();
    let mut out = Vec::with_capacity(HEADER_LEN + 4 * tiles + data.len());
    write(&slices, input.len() as u64, &mut out)?;
    Ok(out)
}

/// The most bytes [`compress`] writes for `len` input bytes at any level (DirectStorage's
/// `CompressBufferBound`): a tile never grows past its stored form, 136 bytes over a full tile
/// (the encoder module says why), plus the header and the tile table. `None` where `len` cannot
/// be a TileStream (empty, or over 65535 tiles).
pub fn compress_bound(len: u64) -> Option<u64> {
    let tiles = tile_count(len).ok()? as u64;
    Some(HEADER_LEN as u64 + tiles * (4 + TILE_SIZE as u64 + STORED_OVERHEAD))
}

/// What a tile's stored form adds to its bytes, at most.
const STORED_OVERHEAD: u64 = 136;

/// Decompresses a whole TileStream into `out`, which must be exactly its uncompressed size.
pub fn decompress(stream: &[u8], out: &mut [u8]) -> Result<(), Error> {
    let stream = TileStream::parse(stream)?;
    if stream.uncompressed_len() != out.len() as u64 {
        return Err(Reason::SizeMismatch.into());
    }
    stream.decode_tiles(&mut Decoder::new(), 0..stream.tiles(), out)
}

/// The first `i` below `n` for which `below(i)` is false, `below` being true then false.
fn partition(n: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_of_1_mib_plus_100_bytes() {
        let input = vec![7u8; (1 << 20) + 100];
        let stream = compress(&input, Level::FASTEST).unwrap();
        assert_eq!(&stream[..8], &[0x04, 0xFB, 0x11, 0x00, 0x91, 0x01, 0x00, 0x00]);
    }

    #[test]
    fn a_stream_arriving_in_pieces_gives_each_tile_to_exactly_one_piece() {
        let mut rng = fastrand::Rng::with_seed(5);
        let input: Vec<u8> = (0..5 * TILE_SIZE + 999)
            .map(|i| if i % 3 == 0 { rng.u8(..) } else { 1 })
            .collect();
        let stream = compress(&input, Level::new(6)).unwrap();
        let whole = TileStream::parse(&stream).unwrap();
        assert_eq!(whole.stream_len(), Some(stream.len()));
        whole.check_order().unwrap();
        for piece in [1usize, 7, 100, 4096, 30_000, stream.len()] {
            let mut taken = Vec::new();
            let mut from = 0;
            while from < stream.len() {
                let to = (from + piece).min(stream.len());
                match TileStream::parse_prefix(&stream[..to]).unwrap() {
                    None => assert!(to < 8 + 4 * 6, "the table is {} bytes", 8 + 4 * 6),
                    Some(prefix) => {
                        assert_eq!(prefix.stream_len(), Some(stream.len()));
                        for i in prefix.tiles_ending_in(from, to) {
                            // Every tile taken is all in the prefix, where the whole stream has it.
                            assert_eq!(prefix.tile_span(i).unwrap(), whole.tile_span(i).unwrap());
                            taken.push(i);
                        }
                    }
                }
                from = to;
            }
            assert_eq!(taken, (0..6).collect::<Vec<_>>(), "pieces of {piece} bytes");
        }
        // The last tile, cut short, is refused in the prefix and the whole.
        let short = &stream[..stream.len() - 1];
        let prefix = TileStream::parse_prefix(short).unwrap().unwrap();
        assert!(prefix.tile_span(5).is_err());
        assert!(TileStream::parse(short).is_err());
        // A table out of order is found.
        let mut bad = stream.clone();
        bad[8 + 4 * 2..8 + 4 * 3].copy_from_slice(&1u32.to_le_bytes());
        let err = TileStream::parse_prefix(&bad)
            .unwrap()
            .unwrap()
            .check_order()
            .unwrap_err();
        assert_eq!(
            (err.reason, err.tile),
            (Reason::BadTileTable, Some(1)),
            "tile 1 would end before it starts"
        );
        // A piece's tiles are checked with the tile before them: those touching tiles 1 and 2
        // find it, those beside them do not.
        let prefix = TileStream::parse_prefix(&bad).unwrap().unwrap();
        for (tiles, found) in [
            (0..1, false),
            (0..2, true),
            (1..2, true),
            (2..3, true),
            (2..4, true),
            (3..6, false),
        ] {
            let checked = prefix.check_order_of(tiles.clone());
            assert_eq!(checked.is_err(), found, "tiles {tiles:?}: {checked:?}");
            if let Err(err) = checked {
                assert_eq!(
                    (err.reason, err.tile),
                    (Reason::BadTileTable, Some(1)),
                    "tiles {tiles:?}"
                );
            }
        }
    }

    #[test]
    fn compress_never_exceeds_its_bound() {
        let mut rng = fastrand::Rng::with_seed(11);
        for len in [1usize, 100, TILE_SIZE - 1, TILE_SIZE, TILE_SIZE + 1, 3 * TILE_SIZE + 17] {
            let random: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let sparse: Vec<u8> = (0..len).map(|i| if i % 7 == 0 { rng.u8(..) } else { 0 }).collect();
            for input in [&random, &sparse] {
                for level in [0, 1, 6, 12] {
                    let out = compress(input, Level::new(level)).unwrap();
                    assert!(
                        out.len() as u64 <= compress_bound(len as u64).unwrap(),
                        "{len} bytes at {level}"
                    );
                }
            }
        }
        assert_eq!(compress_bound(0), None);
        assert_eq!(compress_bound(65536 * 65536), None);
    }

    #[test]
    fn round_trips_at_every_level() {
        let mut rng = fastrand::Rng::with_seed(3);
        let text: Vec<u8> = (0..200_000)
            .map(|i| b"the quick brown fox "[i % 20] ^ (rng.u8(..) & 1))
            .collect();
        for level in 0..=12 {
            let stream = compress(&text, Level::new(level)).unwrap();
            let mut out = vec![0u8; text.len()];
            decompress(&stream, &mut out).unwrap();
            assert!(out == text, "level {level}");
        }
    }

    #[test]
    fn empty_input_is_refused() {
        assert_eq!(compress(&[], Level::DEFAULT).unwrap_err().reason, Reason::Unsupported);
    }

    #[test]
    fn table_damage_is_caught() {
        let input = vec![1u8; 200_000];
        let mut stream = compress(&input, Level::DEFAULT).unwrap();
        let mut out = vec![0u8; input.len()];
        stream[12] ^= 0x40; // offset of tile 1
        assert!(decompress(&stream, &mut out).is_err());
        assert_eq!(
            decompress(&stream[..20], &mut out).unwrap_err().reason,
            Reason::BadTileTable
        );
        assert_eq!(
            decompress(&[4, 0xFB, 0, 0, 1, 0, 0, 0], &mut out).unwrap_err().reason,
            Reason::BadHeader
        );
    }
}
