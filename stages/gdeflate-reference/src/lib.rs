//! # dsr-gdeflate-reference: the reference GDeflate codec, as a test oracle
//!
//! A small safe wrapper over NVIDIA's libdeflate GDeflate (through `gdeflate::sys`), used by
//! dsr's tests as an oracle and by `dsr bench decode-cpu` as the peer. It works around the
//! reference's defects listed in FORMAT.md §3.4 rather than trusting it: a 2× output buffer (its
//! own bound is too small), a level-0 retry when it reports failure, and an explicit check of
//! the decoder's status and output size (it checks neither). Never linked into dsr by default.

use gdeflate::sys;

/// Bytes per tile.
pub const TILE: usize = 65536;

/// The reference compressor at one level (0..=12).
#[derive(Debug)]
pub struct Compressor {
    raw: *mut sys::libdeflate_gdeflate_compressor,
    stored: *mut sys::libdeflate_gdeflate_compressor,
    /// Tiles the reference failed to compress at the level and that were stored instead.
    pub fallbacks: usize,
}

impl Compressor {
    /// A compressor at `level`.
    pub fn new(level: u8) -> Self {
        // SAFETY: plain constructor calls; null results are checked below.
        let (raw, stored) = unsafe {
            (
                sys::libdeflate_alloc_gdeflate_compressor(level.min(12) as i32),
                sys::libdeflate_alloc_gdeflate_compressor(0),
            )
        };
        assert!(
            !raw.is_null() && !stored.is_null(),
            "the reference compressor could not be allocated"
        );
        Compressor {
            raw,
            stored,
            fallbacks: 0,
        }
    }

    /// Compresses one tile (1..=65536 bytes).
    pub fn compress_tile(&mut self, input: &[u8]) -> Vec<u8> {
        assert!(!input.is_empty() && input.len() <= TILE);
        let mut out = self.compress_with(self.raw, input);
        if out.is_empty() {
            self.fallbacks += 1;
            out = self.compress_with(self.stored, input);
            assert!(!out.is_empty(), "the reference failed to store a tile");
        }
        out
    }

    fn compress_with(&self, compressor: *mut sys::libdeflate_gdeflate_compressor, input: &[u8]) -> Vec<u8> {
        // Twice a tile: the reference's own bound is too small for incompressible tiles.
        let mut buffer = vec![0u8; 2 * TILE + 4096];
        let mut page = sys::libdeflate_gdeflate_out_page {
            data: buffer.as_mut_ptr().cast(),
            nbytes: buffer.len(),
        };
        // SAFETY: (1) `input` is live for the call and its length is passed; (2) `page` points at
        // `buffer`, live and writable for `nbytes` bytes; (3) one page for ≤ 64 KiB of input.
        let total =
            unsafe { sys::libdeflate_gdeflate_compress(compressor, input.as_ptr().cast(), input.len(), &mut page, 1) };
        if total == 0 {
            return Vec::new();
        }
        buffer.truncate(page.nbytes);
        buffer
    }
}

impl Drop for Compressor {
    fn drop(&mut self) {
        // SAFETY: both were allocated by `new` and are freed once.
        unsafe {
            sys::libdeflate_free_gdeflate_compressor(self.raw);
            sys::libdeflate_free_gdeflate_compressor(self.stored);
        }
    }
}

/// Why the reference decoder refused a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeFailure {
    /// It reported an error status (1 bad data, 2 short output, 3 insufficient space).
    Status(u32),
    /// It reported success with the wrong number of bytes.
    WrongSize(usize),
}

/// The reference decompressor.
#[derive(Debug)]
pub struct Decompressor {
    raw: *mut sys::libdeflate_gdeflate_decompressor,
}

impl Default for Decompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Decompressor {
    /// A decompressor.
    pub fn new() -> Self {
        // SAFETY: plain constructor; null checked.
        let raw = unsafe { sys::libdeflate_alloc_gdeflate_decompressor() };
        assert!(!raw.is_null(), "the reference decompressor could not be allocated");
        Decompressor { raw }
    }

    /// Decodes one tile into `out` (exactly its uncompressed size). The reference reads past the
    /// end of corrupt tiles (FORMAT.md §3.4), so the tile is copied into a padded buffer first:
    /// only feed it tiles you trust not to be hostile.
    pub fn decompress_tile(&mut self, tile: &[u8], out: &mut [u8]) -> Result<(), DecodeFailure> {
        let mut padded = Vec::with_capacity(tile.len() + 4096);
        padded.extend_from_slice(tile);
        padded.resize(tile.len() + 4096, 0);
        self.decompress_unpadded(&padded[..tile.len()], out)
    }

    /// Decodes one tile that the caller keeps readable past its end (for benchmarks, where the
    /// copy would distort the measurement).
    pub fn decompress_unpadded(&mut self, tile: &[u8], out: &mut [u8]) -> Result<(), DecodeFailure> {
        let mut page = sys::libdeflate_gdeflate_in_page {
            data: tile.as_ptr().cast(),
            nbytes: tile.len(),
        };
        let mut actual = 0usize;
        // SAFETY: (1) `page` describes `tile`, live for the call; (2) `out` is writable for its
        // length, which is passed as the space available; (3) `actual` starts at 0 because the
        // reference adds to it.
        let status = unsafe {
            sys::libdeflate_gdeflate_decompress(self.raw, &mut page, 1, out.as_mut_ptr().cast(), out.len(), &mut actual)
        };
        if status != 0 {
            return Err(DecodeFailure::Status(status as u32));
        }
        if actual != out.len() {
            return Err(DecodeFailure::WrongSize(actual));
        }
        Ok(())
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: allocated by `new`, freed once.
        unsafe { sys::libdeflate_free_gdeflate_decompressor(self.raw) }
    }
}

/// Compresses `input` tile by tile; returns each tile's compressed bytes.
pub fn compress_tiles(input: &[u8], level: u8) -> Vec<Vec<u8>> {
    let mut compressor = Compressor::new(level);
    input.chunks(TILE).map(|tile| compressor.compress_tile(tile)).collect()
}
