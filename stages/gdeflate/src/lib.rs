//! # dsr-gdeflate: GDeflate in safe Rust
//!
//! GDeflate is DEFLATE re-laid-out for parallel decoding: data is cut into independent 64 KiB
//! tiles, and each tile's bits are spread over 32 interleaved lanes that a GPU wave (or a CPU
//! loop) reads round-robin, with matches deferred by one visit. It is the compression format of
//! DirectStorage, nvCOMP and the Vulkan memory-decompression extensions.
//! `docs/gdeflate-format.md` describes it; this crate is written from that description.
//!
//! - [`decode`]: the tile decoder. Every read and write is bounds-checked, it consumes every
//!   input word, and corrupt input returns an [`Error`] naming the tile and the reason. Its
//!   rooms: the lanes and their one refill, table entries, stored blocks, the Huffman loops
//!   (fast, vector, careful) and match copies.
//! - [`encode`]: the tile encoder, levels 0 (stored) to 12; every input encodes. Its rooms:
//!   the match finder, the block writer, and [`encode::lanes`], the lane writer (also at its
//!   old path, [`lanes`]).
//! - [`tilestream`]: DirectStorage's TileStream container around the tiles.
//! - `huffman`, `tables`: canonical codes and the Deflate64-flavoured tables, shared by both
//!   sides.
//!
//! Safe Rust throughout: the crate is `#![forbid(unsafe_code)]` in every build. With the `simd`
//! feature (on by default) CPUs with AVX-512 run a vector data loop (`decode/avx512.rs`),
//! reached through pulp's x86-64-v4 token, which only runtime detection hands out and whose
//! methods are the intrinsics. Every read and write of the input and output stays
//! bounds-checked on both paths; CPUs without AVX-512 run the scalar loops, which tests compare
//! with the vector one. The decoder's speed comes from the lane invariant (a lane always holds
//! ≥ 32 bits when read), table-driven Huffman decoding, a round's 32 lanes decoded side by side,
//! and chunked match copies, not from skipping checks.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decode;
pub mod encode;
mod error;
mod huffman;
pub mod tables;
pub mod tilestream;

pub use decode::Decoder;
pub use encode::{lanes, Encoder, Level};
pub use error::{Error, Reason};
pub use tables::TILE_SIZE;
pub use tilestream::{compress, compress_bound, decompress, TileStream};
