//! # dsr-gdeflate: GDeflate in safe Rust
//!
//! GDeflate is DEFLATE re-laid-out for parallel decoding: data is cut into independent 64 KiB
//! tiles, and each tile's bits are spread over 32 interleaved lanes that a GPU wave (or a CPU
//! loop) reads round-robin, with matches deferred by one visit. It is the compression format of
//! DirectStorage, nvCOMP and the Vulkan memory-decompression extensions.
//! `shared/gdeflate/FORMAT.md` describes it; this crate is written from that description.
//!
//! - [`decode`]: the tile decoder. Every read and write is bounds-checked, it consumes every
//!   input word, and corrupt input returns an [`Error`] naming the tile and the reason.
//! - [`encode`]: the tile encoder, levels 0 (stored) to 12; every input encodes.
//! - [`tilestream`]: DirectStorage's TileStream container around the tiles.
//! - `huffman`, `tables`, `lanes`: canonical codes, the Deflate64-flavoured tables, and the
//!   encoder's word-slot bookkeeping.
//!
//! No `unsafe` anywhere: the decoder's speed comes from the lane invariant (a lane always holds
//! ≥ 32 bits when read), table-driven Huffman decoding and chunked match copies, not from
//! skipping checks.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod decode;
pub mod encode;
mod error;
mod huffman;
pub mod lanes;
pub mod tables;
pub mod tilestream;

pub use decode::Decoder;
pub use encode::{Encoder, Level};
pub use error::{Error, Reason};
pub use tables::TILE_SIZE;
pub use tilestream::{compress, decompress, TileStream};
