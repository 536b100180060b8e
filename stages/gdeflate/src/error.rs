//! What can be wrong with a GDeflate stream, always with the tile it was found in.

use std::fmt;

/// Why a tile or a TileStream was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The tile ended before the decoder had read what it needed.
    Truncated,
    /// The tile's length is not a multiple of 4 bytes (tiles are sequences of 32-bit words).
    Misaligned,
    /// Bytes were left over after the final block.
    TrailingData,
    /// A block header had BTYPE 3.
    BadBlockType,
    /// A Huffman code described by a block header has more codes than bits allow.
    OversubscribedCode,
    /// A bit pattern matched no code of an incomplete Huffman code.
    InvalidCode,
    /// A code-length repeat (16) came first, or a repeat ran past HLIT + HDIST lengths.
    BadRepeat,
    /// The lit/len code has no end-of-block symbol.
    NoEndOfBlock,
    /// Length symbol 286 or 287, which GDeflate does not define.
    BadLengthSymbol,
    /// A match reaches back before the start of the tile.
    DistanceTooFar,
    /// The tile decodes to more bytes than it should.
    OutputOverflow,
    /// The tile decodes to fewer bytes than it should.
    OutputShort,
    /// The TileStream header is not a GDeflate header (id, magic or tile size index).
    BadHeader,
    /// The TileStream's tile table is inconsistent (offsets out of order or past the end).
    BadTileTable,
    /// The caller's output size disagrees with the stream's.
    SizeMismatch,
    /// The input cannot be a TileStream (empty data, or more than 65535 tiles).
    Unsupported,
    /// The GPU decoder's bound on its steps was reached (every loop of the shader has one; a
    /// tile the CPU decoder accepts never reaches it).
    StepLimit,
}

impl Reason {
    /// A sentence a person can act on.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Truncated => "the compressed tile is truncated",
            Reason::Misaligned => "the compressed tile's length is not a multiple of 4 bytes",
            Reason::TrailingData => "the compressed tile has bytes after its final block",
            Reason::BadBlockType => "a block header has the reserved block type 3",
            Reason::OversubscribedCode => "a block header describes an over-subscribed Huffman code",
            Reason::InvalidCode => "the data holds a bit pattern that is no Huffman code",
            Reason::BadRepeat => "a code-length repeat has nothing to repeat or runs past the table",
            Reason::NoEndOfBlock => "a block's lit/len code has no end-of-block symbol",
            Reason::BadLengthSymbol => "the data holds length symbol 286 or 287, which GDeflate does not define",
            Reason::DistanceTooFar => "a match reaches back before the start of the tile",
            Reason::OutputOverflow => "the tile decodes to more bytes than its size",
            Reason::OutputShort => "the tile decodes to fewer bytes than its size",
            Reason::BadHeader => "the data does not start with a GDeflate TileStream header",
            Reason::BadTileTable => "the TileStream's tile table is out of order or points past the end",
            Reason::SizeMismatch => "the output size differs from the size the stream declares",
            Reason::Unsupported => "a TileStream holds 1 to 65535 tiles: empty or larger data cannot be one",
            Reason::StepLimit => "the GPU decoder gave up on the tile after its bound on steps",
        }
    }
}

/// A GDeflate failure: the reason, and the tile when one is to blame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// What is wrong.
    pub reason: Reason,
    /// The tile (0-based) it was found in, if any.
    pub tile: Option<u32>,
}

impl Error {
    pub(crate) fn stream(reason: Reason) -> Self {
        Error { reason, tile: None }
    }
    pub(crate) fn in_tile(reason: Reason, tile: u32) -> Self {
        Error {
            reason,
            tile: Some(tile),
        }
    }
}

impl From<Reason> for Error {
    fn from(reason: Reason) -> Self {
        Error::stream(reason)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tile {
            Some(tile) => write!(f, "GDeflate tile {tile}: {}", self.reason.describe()),
            None => write!(f, "GDeflate: {}", self.reason.describe()),
        }
    }
}

impl std::error::Error for Error {}
