//! Packing files as a pipeline on the engine: windows of input read by the engine (the next in
//! flight while one encodes on every thread), each window's stored bytes written by the engine,
//! so memory holds a few windows whatever the files' sizes.
//!
//! A window is up to [`WINDOW_TILES`] tiles of input, from one asset or many: small assets share
//! windows, so a directory of small files keeps every thread encoding. An asset inside one
//! window is chosen raw or compressed there and written whole. An asset spanning windows has its
//! tiles written after its table's place as they are encoded, and its table last; when GDeflate
//! turns out to save too little, its bytes are copied raw over them from the input (file to
//! file through the engine, checked against the hashes of what was encoded).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::*;
use crate::{Batch, Executor, FileSource, HostBuffer, IoPolicy, Request};

/// Tiles of input a window reads and encodes at once (16 MiB).
const WINDOW_TILES: usize = 256;

/// Windows' writes in flight at once.
const WRITES_IN_FLIGHT: usize = 2;

/// A run of one asset's tiles inside a window.
#[derive(Clone, Copy, Debug)]
struct Piece {
    /// The asset, by its index in the inputs.
    asset: usize,
    /// Its first tile here.
    first: usize,
    /// How many of its tiles are here.
    tiles: usize,
    /// Where in the window its first tile lies, in tiles.
    slot: usize,
}

/// A file to pack, as planned.
struct Input<'a> {
    name: &'a str,
    path: &'a Path,
    len: u64,
    tiles: usize,
}

/// The asset whose tiles span windows: where it starts, and what has been written of it.
struct Spanning {
    offset: u64,
    sizes: Vec<u64>,
    hashes: Vec<u64>,
    written: u64,
}

/// Splits the inputs' tiles into windows of at most [`WINDOW_TILES`] tiles, in order. An empty
/// input is a piece of no tiles.
fn plan(inputs: &[Input<'_>]) -> Vec<Vec<Piece>> {
    let mut windows = vec![Vec::new()];
    let mut used = 0;
    for (asset, input) in inputs.iter().enumerate() {
        let mut first = 0;
        loop {
            if used == WINDOW_TILES {
                windows.push(Vec::new());
                used = 0;
            }
            let tiles = (input.tiles - first).min(WINDOW_TILES - used);
            windows.last_mut().expect("one window at least").push(Piece {
                asset,
                first,
                tiles,
                slot: used,
            });
            used += tiles;
            first += tiles;
            if first == input.tiles {
                break;
            }
        }
    }
    windows
}

fn piece_bytes(input: &Input<'_>, piece: &Piece) -> u64 {
    let start = (piece.first * TILE_SIZE) as u64;
    (((piece.first + piece.tiles) * TILE_SIZE) as u64).min(input.len) - start
}

impl ArchiveWriter {
    /// Packs the files `inputs` (each a name and a path) as assets, in their order, streaming
    /// through `executor` (see the module's documentation): stored as [`ArchiveWriter::add`]
    /// would store them, in memory of a few 16 MiB windows whatever their sizes. `progress`
    /// hears each asset's name and how many more of its bytes are done.
    pub fn add_files(
        &mut self,
        executor: &Executor,
        inputs: &[(String, PathBuf)],
        mut progress: impl FnMut(&str, u64),
    ) -> crate::Result<()> {
        let invalid = |e: io::Error| Error::new(ErrorKind::InvalidRequest, e.to_string());
        let mut planned = Vec::with_capacity(inputs.len());
        let mut names = HashSet::new();
        for (name, path) in inputs {
            self.check_name(name).map_err(invalid)?;
            if !names.insert(name.as_str()) {
                return Err(invalid(io::Error::other(format!("asset name {name:?} is given twice"))));
            }
            let len = crate::file_len(path)?;
            let tiles = len.div_ceil(TILE_SIZE as u64) as usize;
            if tiles > dsr_gdeflate::tilestream::MAX_TILES {
                return Err(Error::new(
                    ErrorKind::InvalidRequest,
                    format!("{len} bytes: an archive holds assets of up to 4 GiB (65535 tiles of 64 KiB)"),
                )
                .with_path(path));
            }
            planned.push(Input { name, path, len, tiles });
        }
        let windows = plan(&planned);
        let window_bytes = (WINDOW_TILES * TILE_SIZE).min(planned.iter().map(|i| i.tiles * TILE_SIZE).sum());
        let mut buffers = [HostBuffer::new(window_bytes), HostBuffer::new(window_bytes)];
        let read = |k: usize, buffer: &HostBuffer| -> crate::Result<Option<Batch>> {
            let mut batch = executor.batch();
            let mut any = false;
            for piece in windows[k].iter().filter(|p| p.tiles > 0) {
                any = true;
                let input = &planned[piece.asset];
                batch.push(Request::file(
                    input.path,
                    (piece.first * TILE_SIZE) as u64,
                    piece_bytes(input, piece),
                    buffer,
                    (piece.slot * TILE_SIZE) as u64,
                ))?;
            }
            match any {
                false => Ok(None),
                true => executor.submit(batch).map(Some),
            }
        };
        let mut reading = read(0, &buffers[0])?;
        let mut writing = VecDeque::new();
        let mut spanning: Option<Spanning> = None;
        for k in 0..windows.len() {
            if let Some(batch) = reading.take() {
                finished(batch)?;
            }
            if k + 1 < windows.len() {
                reading = read(k + 1, &buffers[(k + 1) % 2])?;
            }
            let window = buffers[k % 2]
                .as_slice()
                .ok_or_else(|| Error::new(ErrorKind::Internal, "a read window is still held by the engine"))?;
            let tile_of = |piece: &Piece, i: usize| {
                let input = &planned[piece.asset];
                let at = (piece.slot + i) * TILE_SIZE;
                let len = (input.len - ((piece.first + i) * TILE_SIZE) as u64).min(TILE_SIZE as u64);
                &window[at..at + len as usize]
            };
            let tiles: Vec<&[u8]> = windows[k]
                .iter()
                .flat_map(|piece| (0..piece.tiles).map(move |i| tile_of(piece, i)))
                .collect();
            let mut encoded = encode_tiles(&tiles, self.level, self.threads).into_iter();
            let mut batch = executor.batch();
            let mut writes = 0;
            for piece in &windows[k] {
                let input = &planned[piece.asset];
                let here: Vec<EncodedTile> = encoded.by_ref().take(piece.tiles).collect();
                let whole = piece.first == 0 && piece.tiles == input.tiles;
                if whole {
                    let hashes: Arc<[u64]> = here.iter().map(|t| t.hash).collect();
                    let offset = self.next_offset();
                    let (codec, stored): (Codec, Arc<[u8]>) = match self.stream_of(input.len, &here).map_err(invalid)? {
                        Some(stream) => (Codec::GDeflate, stream.into()),
                        None => {
                            let at = piece.slot * TILE_SIZE;
                            (Codec::Raw, window[at..at + input.len as usize].into())
                        }
                    };
                    if !stored.is_empty() {
                        writes += 1;
                        batch.push(self.write_request(stored.clone(), offset))?;
                    }
                    self.place(input.name, codec, offset, stored.len() as u64, input.len, hashes);
                } else {
                    let head = dsr_gdeflate::tilestream::header_len(input.tiles) as u64;
                    let span = spanning.get_or_insert_with(|| Spanning {
                        offset: self.next_offset(),
                        sizes: Vec::with_capacity(input.tiles),
                        hashes: Vec::with_capacity(input.tiles),
                        written: 0,
                    });
                    span.sizes.extend(here.iter().map(|t| t.bytes.len() as u64));
                    span.hashes.extend(here.iter().map(|t| t.hash));
                    let at = span.offset + head + span.written;
                    span.written += here.iter().map(|t| t.bytes.len() as u64).sum::<u64>();
                    let last = piece.first + piece.tiles == input.tiles;
                    let raw = last && !self.compresses(input.len, head + span.written);
                    if raw {
                        // Its bytes go in as they are, over the tiles written so far (and past
                        // its end, where incompressible tiles grew): once those have landed, and
                        // before anything after it is written. Its last piece is the first of
                        // this window, so this window has written nothing yet.
                        let span = spanning.take().expect("the spanning asset");
                        while let Some(batch) = writing.pop_front() {
                            finished(batch)?;
                        }
                        let hashes: Arc<[u64]> = span.hashes.into();
                        self.copy_raw(executor, input, span.offset, &hashes)?;
                        self.place(input.name, Codec::Raw, span.offset, input.len, input.len, hashes);
                    } else {
                        let packed: Arc<[u8]> = here.iter().flat_map(|t| t.bytes.iter().copied()).collect();
                        writes += 1;
                        batch.push(self.write_request(packed, at))?;
                    }
                    if last && !raw {
                        let span = spanning.take().expect("the spanning asset");
                        let mut table = Vec::new();
                        dsr_gdeflate::tilestream::write_header(&span.sizes, input.len, &mut table)
                            .map_err(|e| invalid(io::Error::other(e.to_string())))?;
                        writes += 1;
                        batch.push(self.write_request(table.into(), span.offset))?;
                        let stored = head + span.written;
                        self.place(
                            input.name,
                            Codec::GDeflate,
                            span.offset,
                            stored,
                            input.len,
                            span.hashes.into(),
                        );
                    }
                }
                progress(input.name, piece_bytes(input, piece));
            }
            if writes > 0 {
                writing.push_back(executor.submit(batch)?);
            }
            while writing.len() > WRITES_IN_FLIGHT {
                finished(writing.pop_front().expect("a write in flight"))?;
            }
        }
        for batch in writing {
            finished(batch)?;
        }
        Ok(())
    }

    /// A write of `bytes` into the archive at `offset`, through the page cache as `cp` writes.
    fn write_request(&self, bytes: Arc<[u8]>, offset: u64) -> Request {
        let len = bytes.len() as u64;
        Request::memory(bytes, 0, len, &HostBuffer::new(0), 0)
            .to_file(FileSource::Named(self.file.clone(), self.path.clone()), offset)
            .io(IoPolicy::Buffered)
    }

    /// Copies `input` into the archive at `offset` raw, a window at a time, each window's tiles
    /// checked against `hashes` (what was encoded: a file that changed meanwhile fails).
    fn copy_raw(&self, executor: &Executor, input: &Input<'_>, offset: u64, hashes: &[u64]) -> crate::Result<()> {
        let none = HostBuffer::new(0);
        let mut pending = VecDeque::new();
        for first in (0..input.tiles).step_by(WINDOW_TILES) {
            let last = (first + WINDOW_TILES).min(input.tiles);
            let from = (first * TILE_SIZE) as u64;
            let len = ((last * TILE_SIZE) as u64).min(input.len) - from;
            let mut batch = executor.batch();
            batch.push(
                Request::file(input.path, from, len, &none, 0)
                    .verify_tiles(hashes[first..last].into())
                    .to_file(FileSource::Named(self.file.clone(), self.path.clone()), offset + from)
                    .io(IoPolicy::Buffered)
                    .name(format!("{}@{first}", input.name)),
            )?;
            pending.push_back(executor.submit(batch)?);
            if pending.len() > WRITES_IN_FLIGHT {
                finished(pending.pop_front().expect("a copy in flight"))?;
            }
        }
        pending.into_iter().try_for_each(finished)
    }
}

/// Waits for `batch`; its first failure, if any.
fn finished(batch: Batch) -> crate::Result<()> {
    match batch.wait().first_failure() {
        Some((_, err)) => Err(err.clone()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(tiles: usize) -> Input<'static> {
        Input {
            name: "x",
            path: Path::new("x"),
            len: (tiles * TILE_SIZE) as u64,
            tiles,
        }
    }

    #[test]
    fn windows_hold_whole_small_assets_and_split_large_ones_in_order() {
        let inputs = [
            input(0),
            input(3),
            input(WINDOW_TILES),
            input(1),
            input(2 * WINDOW_TILES + 5),
        ];
        let windows = plan(&inputs);
        let mut next = vec![0usize; inputs.len()];
        for window in &windows {
            assert!(window.iter().map(|p| p.tiles).sum::<usize>() <= WINDOW_TILES);
            let mut slot = 0;
            for piece in window {
                assert_eq!(piece.slot, slot, "pieces fill their window in order");
                assert_eq!(piece.first, next[piece.asset], "an asset's tiles come in order");
                next[piece.asset] += piece.tiles;
                slot += piece.tiles;
            }
        }
        assert_eq!(
            next,
            inputs.iter().map(|i| i.tiles).collect::<Vec<_>>(),
            "every tile once"
        );
        assert_eq!(
            windows.len(),
            (3 + WINDOW_TILES + 1 + 2 * WINDOW_TILES + 5).div_ceil(WINDOW_TILES)
        );
    }

    #[test]
    fn piece_bytes_stop_at_the_assets_end() {
        let mut one = input(3);
        one.len -= 100;
        let piece = Piece {
            asset: 0,
            first: 2,
            tiles: 1,
            slot: 7,
        };
        assert_eq!(piece_bytes(&one, &piece), TILE_SIZE as u64 - 100);
    }
}
