//! The tile encoder: LZ77 over the tile (hash chains; greedy at low levels, lazy above), one
//! block per tile in whichever of stored, fixed or dynamic Huffman is smallest, then the symbols
//! distributed over the 32 lanes as the decoder will read them (FORMAT.md §2.4).
//!
//! Every input encodes: incompressible data becomes stored blocks, so a tile never grows by more
//! than its stored overhead (65536 bytes → 65672).
//!
//! Rooms: `matcher.rs` finds the matches, `block.rs` chooses the block and codes it, `lanes.rs`
//! lays the bits out over the lanes. This file holds the public face (`Encoder`, `Level`).

mod block;
pub mod lanes;
mod matcher;

use crate::tables::TILE_SIZE;
use block::BlockPlan;
use lanes::LaneWriter;
use matcher::{Matcher, Params};

/// Compression level, 0 (stored) to 12 (slowest, smallest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(u8);

impl Level {
    /// Stored blocks only.
    pub const STORED: Level = Level(0);
    /// Fastest compression.
    pub const FASTEST: Level = Level(1);
    /// The default: within 3% of the reference's level-9 ratio on mixed data, at a fraction of
    /// dsr's own level 9 time (docs/benchmarks.md).
    pub const DEFAULT: Level = Level(6);
    /// Smallest output.
    pub const BEST: Level = Level(12);

    /// A level, clamped to 0..=12.
    pub fn new(level: u8) -> Level {
        Level(level.min(12))
    }

    /// The level's number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Level {
    fn default() -> Self {
        Level::DEFAULT
    }
}

/// Compresses tiles. Holds the match finder's tables; reuse one per thread.
pub struct Encoder {
    level: Level,
    matcher: Matcher,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("level", &self.level).finish()
    }
}

impl Encoder {
    /// An encoder at `level`.
    pub fn new(level: Level) -> Self {
        Encoder {
            level,
            matcher: Matcher::new(),
        }
    }

    /// The level it compresses at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Compresses one tile, appending it to `out`.
    ///
    /// # Panics
    /// If `input` is empty or longer than 65536 bytes: a tile holds 1..=65536 bytes.
    pub fn encode_tile(&mut self, input: &[u8], out: &mut Vec<u8>) {
        assert!(
            !input.is_empty() && input.len() <= TILE_SIZE,
            "a tile holds 1..=65536 bytes"
        );
        let params = Params::for_level(self.level);
        let seqs = self.matcher.sequences(input, params);
        let mut writer = LaneWriter::new();
        let plan = BlockPlan::new(seqs, input.len(), params.chain > 0);
        plan.write(&mut writer, seqs, input);
        writer.finish(out);
    }
}
