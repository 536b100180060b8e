//! dsr's asset archive: a header, one GDeflate TileStream per asset at a 4 KiB-aligned offset,
//! and a table of contents with each asset's name, place, sizes, codec and a hash per 64 KiB
//! tile of its uncompressed bytes. GDeflate carries no checksum, so the tile hashes are what
//! turns a flipped bit into an error instead of wrong data. Layout: `docs/archive.md`.
//!
//! The reader trusts nothing: it checks the magic, version, TOC bounds and TOC hash, and every
//! entry's name, codec, sizes, tile count and place before anything is read through it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use dsr_gdeflate::{Encoder, Level, TILE_SIZE};

mod pack;

use crate::{Error, ErrorKind, Result};

/// First bytes of every archive.
pub const MAGIC: [u8; 8] = *b"DSRPACK\0";
/// The format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_LEN: u64 = 64;
/// Assets start at multiples of this (so direct I/O can read them in place).
pub const ALIGN: u64 = 4096;
/// Longest asset name, in bytes.
pub const MAX_NAME: usize = 4096;

/// How an asset is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// The bytes as they are: empty assets (a TileStream cannot be empty), and assets GDeflate
    /// would shrink too little to repay decoding them (see [`ArchiveWriter::min_gain`]).
    Raw = 0,
    /// A GDeflate TileStream.
    GDeflate = 1,
}

/// One asset in the table of contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asset {
    /// Its name (a relative path, `/`-separated).
    pub name: String,
    /// How it is stored.
    pub codec: Codec,
    /// Where its stored bytes start in the archive.
    pub offset: u64,
    /// How many bytes are stored.
    pub stored_len: u64,
    /// How many bytes it decodes to.
    pub len: u64,
    /// xxh3-64 of each 64 KiB tile of the decoded bytes.
    pub tile_hashes: Arc<[u64]>,
}

/// An opened archive: its file and its validated table of contents.
#[derive(Debug)]
pub struct Archive {
    /// The archive file, shared by the requests that read it.
    pub file: Arc<File>,
    /// Its assets, in the order they were packed.
    pub assets: Vec<Asset>,
}

fn corrupt(path: &Path, what: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("not a valid dsr archive: {}; repack it with `dsr pack`", what.into()),
    )
    .with_path(path)
}

/// Whether the file at `path` starts like a dsr archive.
pub fn is_archive(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut magic, 0))
        .is_ok_and(|()| magic == MAGIC)
}

/// A little-endian cursor over the TOC that fails instead of reading past it.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

impl Archive {
    /// Opens and validates the archive at `path`.
    pub fn open(path: &Path) -> Result<Archive> {
        let file = File::open(path).map_err(|e| Error::from_io(e, "cannot open the archive").with_path(path))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::from_io(e, "cannot stat the archive").with_path(path))?
            .len();
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|_| corrupt(path, "the file is shorter than an archive header"))?;
        let mut h = Cursor { bytes: &header, at: 0 };
        let (magic, version) = (h.take(8), h.u32());
        if magic != Some(&MAGIC[..]) {
            return Err(corrupt(path, "the file does not start with the dsr archive magic"));
        }
        if version != Some(VERSION) {
            return Err(corrupt(
                path,
                format!("format version {version:?}, this dsr reads {VERSION}"),
            ));
        }
        let (_flags, toc_offset, toc_len, toc_hash, count) = (h.u32(), h.u64(), h.u64(), h.u64(), h.u32());
        let (toc_offset, toc_len, toc_hash, count) = (
            toc_offset.unwrap_or(0),
            toc_len.unwrap_or(0),
            toc_hash.unwrap_or(0),
            count.unwrap_or(0),
        );
        if toc_offset < HEADER_LEN || toc_offset.checked_add(toc_len) != Some(file_len) {
            return Err(corrupt(
                path,
                "the table of contents is not where the header says (truncated file?)",
            ));
        }
        let toc_len = usize::try_from(toc_len).map_err(|_| corrupt(path, "the table of contents is too large"))?;
        let mut toc = vec![0u8; toc_len];
        file.read_exact_at(&mut toc, toc_offset)
            .map_err(|e| Error::from_io(e, "cannot read the table of contents").with_path(path))?;
        if xxhash_rust::xxh3::xxh3_64(&toc) != toc_hash {
            return Err(corrupt(path, "the table of contents does not match its hash"));
        }
        let mut c = Cursor { bytes: &toc, at: 0 };
        let mut assets = Vec::new();
        let mut names = HashSet::new();
        for i in 0..count {
            let asset = read_entry(&mut c, toc_offset).map_err(|what| corrupt(path, format!("asset {i}: {what}")))?;
            if !names.insert(asset.name.clone()) {
                return Err(corrupt(path, format!("the name {:?} appears twice", asset.name)));
            }
            assets.push(asset);
        }
        if c.at != toc.len() {
            return Err(corrupt(path, "the table of contents has bytes after its last asset"));
        }
        Ok(Archive {
            file: Arc::new(file),
            assets,
        })
    }

    /// The asset called `name`.
    pub fn find(&self, name: &str) -> Option<&Asset> {
        self.assets.iter().find(|a| a.name == name)
    }
}

fn read_entry(c: &mut Cursor<'_>, data_end: u64) -> std::result::Result<Asset, String> {
    let short = || "the table of contents ends inside an entry".to_string();
    let name_len = c.u16().ok_or_else(short)? as usize;
    if name_len == 0 || name_len > MAX_NAME {
        return Err(format!("a name of {name_len} bytes"));
    }
    let name = std::str::from_utf8(c.take(name_len).ok_or_else(short)?)
        .map_err(|_| "a name that is not UTF-8".to_string())?
        .to_owned();
    let codec = match c.u8().ok_or_else(short)? {
        0 => Codec::Raw,
        1 => Codec::GDeflate,
        other => return Err(format!("unknown codec {other}")),
    };
    let (_level, _reserved) = (c.u8().ok_or_else(short)?, c.u16().ok_or_else(short)?);
    let (offset, stored_len, len) = (
        c.u64().ok_or_else(short)?,
        c.u64().ok_or_else(short)?,
        c.u64().ok_or_else(short)?,
    );
    let tiles = c.u32().ok_or_else(short)? as u64;
    if tiles != len.div_ceil(TILE_SIZE as u64) || tiles > 65535 {
        return Err(format!("{tiles} tile hashes for {len} bytes"));
    }
    if offset < HEADER_LEN || offset.checked_add(stored_len).is_none_or(|end| end > data_end) {
        return Err(format!("bytes {offset}+{stored_len} lie outside the data area"));
    }
    if codec == Codec::Raw && stored_len != len {
        return Err("a raw asset whose stored and decoded sizes differ".into());
    }
    if codec == Codec::GDeflate && (len == 0 || stored_len == 0) {
        return Err("an empty GDeflate asset".into());
    }
    let hashes = c.take(8 * tiles as usize).ok_or_else(short)?;
    let tile_hashes = hashes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    Ok(Asset {
        name,
        codec,
        offset,
        stored_len,
        len,
        tile_hashes,
    })
}

/// The file an asset unpacks to under `dir`: its name as a relative path, refused (as a
/// corrupt archive) when it would leave `dir` (absolute, `..`, empty components).
pub fn unpack_path(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let bad = name.starts_with('/')
        || name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == ".." || part.contains('\0'));
    if bad {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("the asset name {name:?} would unpack outside the output directory; refused"),
        ));
    }
    Ok(dir.join(name))
}

/// Requests that write `assets` into files under `dir` (by name: directories made, each file
/// made and sized), each asset in windows of at most `window` bytes of output, so memory stays
/// within the executor's scratch budget whatever the asset's size: raw assets as file-to-file
/// copies (tile hashes checked in scratch before the write), compressed ones as windows of
/// their stream's tiles (its table read here, once; `Request::gdeflate_tiles`), decoded on the
/// workers and written. A window's tile numbers in errors count from its first tile; the
/// requests are named `NAME@TILE` by it.
pub fn unpack_requests(
    archive: &Archive,
    assets: &[&Asset],
    dir: &Path,
    verify: bool,
    window: u64,
) -> Result<Vec<crate::Request>> {
    let tiles_per = (window / TILE_SIZE as u64).max(1) as usize;
    let none = crate::HostBuffer::new(0);
    let mut requests = Vec::new();
    for asset in assets {
        let path = unpack_path(dir, &asset.name)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::from_io(e, "cannot make the output directory").with_path(parent))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|f| f.set_len(asset.len))
            .map_err(|e| Error::from_io(e, "cannot make the output file").with_path(&path))?;
        let tiles = asset.len.div_ceil(TILE_SIZE as u64) as usize;
        // Where each tile's stored bytes end, from the asset's start; and where its tiles begin.
        let (data, ends): (u64, Vec<u64>) = match asset.codec {
            Codec::Raw => (
                0,
                (1..=tiles)
                    .map(|i| (i as u64 * TILE_SIZE as u64).min(asset.len))
                    .collect(),
            ),
            Codec::GDeflate => {
                let damaged =
                    |what: &str| Error::new(ErrorKind::Corrupt, format!("asset {:?}: {what}; repack it", asset.name));
                let head = dsr_gdeflate::tilestream::header_len(tiles);
                if head as u64 > asset.stored_len {
                    return Err(damaged("its stream is shorter than its tile table"));
                }
                let mut prefix = vec![0u8; head];
                archive
                    .file
                    .read_exact_at(&mut prefix, asset.offset)
                    .map_err(|e| Error::from_io(e, "cannot read an asset's tile table"))?;
                let stream = dsr_gdeflate::TileStream::parse_prefix(&prefix)
                    .ok()
                    .flatten()
                    .filter(|s| s.tiles() == tiles && s.uncompressed_len() == asset.len)
                    .ok_or_else(|| damaged("its tile table does not match the table of contents"))?;
                stream
                    .check_order()
                    .map_err(|_| damaged("its tile table is out of order"))?;
                if stream.stream_len() != Some(asset.stored_len as usize) {
                    return Err(damaged("its tile table does not match its stored size"));
                }
                (
                    head as u64,
                    (0..tiles).map(|i| (stream.tile_end(i) - head) as u64).collect(),
                )
            }
        };
        for first in (0..tiles).step_by(tiles_per) {
            let last = (first + tiles_per).min(tiles);
            let from = if first == 0 { 0 } else { ends[first - 1] };
            let out_at = first as u64 * TILE_SIZE as u64;
            let out_len = (last as u64 * TILE_SIZE as u64).min(asset.len) - out_at;
            let stored = ends[last - 1] - from;
            let request = crate::Request::open_file(archive.file.clone(), asset.offset + data + from, stored, &none, 0)
                .name(format!("{}@{first}", asset.name));
            let request = match asset.codec {
                Codec::Raw => request,
                Codec::GDeflate => {
                    let window_ends: Arc<[u64]> = ends[first..last].iter().map(|e| e - from).collect();
                    request.gdeflate_tiles(out_len, window_ends)
                }
            };
            let request = match verify {
                true => request.verify_tiles(asset.tile_hashes[first..last].into()),
                false => request,
            };
            requests.push(request.to_file(crate::FileSource::Path(path.clone()), out_at));
        }
    }
    Ok(requests)
}

/// One tile as the writer keeps it: the hash of its bytes and its GDeflate encoding.
struct EncodedTile {
    hash: u64,
    bytes: Vec<u8>,
}

/// Hashes and encodes `tiles` on up to `threads` scoped threads, each taking the next tile from
/// a shared counter (tiles vary in cost: zeros encode faster than text), with one encoder per
/// thread.
fn encode_tiles(tiles: &[&[u8]], level: Level, threads: usize) -> Vec<EncodedTile> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let encode_some = || {
        let mut encoder = Encoder::new(level);
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(tile) = tiles.get(i) else { return done };
            let mut bytes = Vec::new();
            encoder.encode_tile(tile, &mut bytes);
            let hash = dsr_stages::tile_hash(tile);
            done.push((i, EncodedTile { hash, bytes }));
        }
    };
    let mut encoded: Vec<(usize, EncodedTile)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.min(tiles.len()))
            .map(|_| scope.spawn(encode_some))
            .collect();
        let mut all = encode_some();
        for helper in helpers {
            // An encoder never panics on any input; if one did, the panic belongs to the caller.
            all.extend(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        all
    });
    encoded.sort_unstable_by_key(|&(i, _)| i);
    encoded.into_iter().map(|(_, tile)| tile).collect()
}

/// By default an asset is stored raw unless GDeflate saves at least this share of its bytes: a
/// raw asset loads with one read straight into its destination and a hash pass, where a
/// compressed one goes through the decoder, at 0.4–1.2 GB/s per core (slowest on the nearly
/// incompressible data that shrinks least). Decoding repays only what it saves in reads: on
/// SuperTuxKart's data (mostly PNG, JPEG and Ogg) on two cores, archives packed at 10% loaded
/// at 0.86× a loop reading the loose files from the page cache, at 50% 1.11× and 1.2–1.4× cold
/// (docs/benchmarks.md, "The minimum gain, again"). Archives meant for GPU decompression, where
/// decoding costs next to nothing, may pack with a lower minimum ([`ArchiveWriter::min_gain`]).
pub const DEFAULT_MIN_GAIN: f64 = 0.50;

/// Writes an archive: add assets (from memory, [`ArchiveWriter::add`], or streamed from files,
/// [`ArchiveWriter::add_files`]), then [`ArchiveWriter::finish`].
#[derive(Debug)]
pub struct ArchiveWriter {
    file: Arc<File>,
    path: Arc<Path>,
    at: u64,
    level: Level,
    threads: usize,
    min_gain: f64,
    assets: Vec<Asset>,
    names: HashSet<String>,
}

impl ArchiveWriter {
    /// Starts an archive at `path` (replacing any file there), compressing at `level`.
    pub fn create(path: &Path, level: Level) -> io::Result<Self> {
        let mut file = File::create(path)?;
        file.write_all(&[0u8; HEADER_LEN as usize])?;
        Ok(ArchiveWriter {
            file: Arc::new(file),
            path: path.into(),
            at: HEADER_LEN,
            level,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            min_gain: DEFAULT_MIN_GAIN,
            assets: Vec::new(),
            names: HashSet::new(),
        })
    }

    /// Stores an asset raw unless GDeflate saves at least `fraction` (0 to 1) of its bytes; 0
    /// compresses everything that shrinks at all. The default is [`DEFAULT_MIN_GAIN`].
    pub fn min_gain(mut self, fraction: f64) -> Self {
        self.min_gain = fraction.clamp(0.0, 1.0);
        self
    }

    /// Compresses on `threads` threads (at least one; the default is one per CPU).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Refuses a name that is empty, too long or already in the archive.
    fn check_name(&self, name: &str) -> io::Result<()> {
        if name.is_empty() || name.len() > MAX_NAME || self.names.contains(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("asset name {name:?} is empty, longer than {MAX_NAME} bytes, or already taken"),
            ));
        }
        Ok(())
    }

    /// Whether an asset of `len` bytes whose TileStream is `stream_len` bytes is stored
    /// compressed: GDeflate must save at least the minimum gain.
    fn compresses(&self, len: u64, stream_len: u64) -> bool {
        stream_len < len && 1.0 - stream_len as f64 / len as f64 >= self.min_gain
    }

    /// Where the next asset starts.
    fn next_offset(&self) -> u64 {
        self.at.div_ceil(ALIGN) * ALIGN
    }

    /// Enters an asset stored at `offset` in the table of contents.
    fn place(&mut self, name: &str, codec: Codec, offset: u64, stored_len: u64, len: u64, tile_hashes: Arc<[u64]>) {
        self.at = offset + stored_len;
        self.names.insert(name.to_owned());
        self.assets.push(Asset {
            name: name.to_owned(),
            codec,
            offset,
            stored_len,
            len,
            tile_hashes,
        });
    }

    /// How an asset whose tiles encoded as `tiles` is stored: its TileStream, or (when GDeflate
    /// saves too little, and for empty assets) `None` for its bytes as they are.
    fn stream_of(&self, len: u64, tiles: &[EncodedTile]) -> io::Result<Option<Vec<u8>>> {
        if tiles.is_empty() {
            return Ok(None);
        }
        let slices: Vec<&[u8]> = tiles.iter().map(|t| t.bytes.as_slice()).collect();
        let mut stream = Vec::new();
        dsr_gdeflate::tilestream::write(&slices, len, &mut stream)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(self.compresses(len, stream.len() as u64).then_some(stream))
    }

    /// Compresses `bytes` (tiles in parallel, see [`ArchiveWriter::threads`]) and appends it as
    /// `name`.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> io::Result<&Asset> {
        self.check_name(name)?;
        let tiles: Vec<&[u8]> = bytes.chunks(TILE_SIZE).collect();
        let encoded = encode_tiles(&tiles, self.level, self.threads);
        let tile_hashes: Arc<[u64]> = encoded.iter().map(|t| t.hash).collect();
        let (codec, stored) = match self.stream_of(bytes.len() as u64, &encoded)? {
            Some(stream) => (Codec::GDeflate, stream),
            None => (Codec::Raw, bytes.to_vec()),
        };
        let offset = self.next_offset();
        self.file.write_all_at(&stored, offset)?;
        self.place(
            name,
            codec,
            offset,
            stored.len() as u64,
            bytes.len() as u64,
            tile_hashes,
        );
        Ok(self.assets.last().expect("just placed"))
    }

    /// Writes the table of contents and the header.
    pub fn finish(self) -> io::Result<Vec<Asset>> {
        let mut toc = Vec::new();
        for a in &self.assets {
            toc.extend_from_slice(&(a.name.len() as u16).to_le_bytes());
            toc.extend_from_slice(a.name.as_bytes());
            toc.push(a.codec as u8);
            toc.push(self.level.get());
            toc.extend_from_slice(&0u16.to_le_bytes());
            for v in [a.offset, a.stored_len, a.len] {
                toc.extend_from_slice(&v.to_le_bytes());
            }
            toc.extend_from_slice(&(a.tile_hashes.len() as u32).to_le_bytes());
            for h in a.tile_hashes.iter() {
                toc.extend_from_slice(&h.to_le_bytes());
            }
        }
        let toc_offset = self.at;
        self.file.write_all_at(&toc, toc_offset)?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&toc_offset.to_le_bytes());
        header.extend_from_slice(&(toc.len() as u64).to_le_bytes());
        header.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&toc).to_le_bytes());
        header.extend_from_slice(&(self.assets.len() as u32).to_le_bytes());
        header.resize(HEADER_LEN as usize, 0);
        self.file.write_all_at(&header, 0)?;
        self.file.set_len(toc_offset + toc.len() as u64)?;
        self.file.sync_data()?;
        Ok(self.assets)
    }
}

/// Requests that load `assets` of `archive` into `dest` at `slots`, verifying tile hashes if
/// `verify`.
pub fn requests<'a>(
    archive: &'a Archive,
    assets: &'a [&'a Asset],
    dest: &'a crate::HostBuffer,
    slots: &'a [u64],
    verify: bool,
) -> impl Iterator<Item = crate::Request> + 'a {
    assets.iter().zip(slots).map(move |(asset, &slot)| {
        let request = crate::Request::open_file(archive.file.clone(), asset.offset, asset.stored_len, dest, slot)
            .name(asset.name.clone());
        match asset.codec {
            // Raw bytes are checked in host memory, after they land (a `Verify` node per piece).
            Codec::Raw if verify && asset.len > 0 => request.verify_tiles(asset.tile_hashes.clone()),
            Codec::Raw => request,
            Codec::GDeflate => {
                let request = request.gdeflate(asset.len);
                if verify {
                    request.verify_tiles(asset.tile_hashes.clone())
                } else {
                    request
                }
            }
        }
    })
}
