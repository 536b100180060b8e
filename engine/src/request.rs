//! Requests: what the caller asks for, before it is lowered into graph nodes.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crate::buffer::{DeviceBuffer, HostBuffer, SourceBytes};
use crate::graph::FileSource;

/// Scheduling priority of a request. Ready roots of higher-priority requests are taken first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Background streaming.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Needed soon.
    High,
    /// Needed for the next frame.
    Realtime,
}

impl Priority {
    /// Every priority, highest first: the order workers look for new work in.
    pub const HIGHEST_FIRST: [Priority; 4] = [Priority::Realtime, Priority::High, Priority::Normal, Priority::Low];
    /// How many priorities.
    pub const COUNT: usize = 4;

    /// The priority's index, for per-priority tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a file request reads: through the page cache or around it (DirectStorage's
/// `ForceFileBuffering` is the model for `Buffered`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IoPolicy {
    /// Direct I/O where the file system allows it, landing in the destination when it is
    /// aligned and in aligned staging otherwise; buffered where direct I/O is not available.
    #[default]
    Auto,
    /// Direct I/O; a file system that refuses it fails the request.
    Direct,
    /// Through the page cache.
    Buffered,
}

/// Where a request's bytes come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A byte range of a file.
    File {
        /// The file.
        file: FileSource,
        /// First byte.
        offset: u64,
        /// Bytes to read (the compressed size for compressed requests).
        len: u64,
    },
    /// A byte range of memory the caller shares with the runtime.
    Memory {
        /// The bytes.
        bytes: SourceBytes,
        /// First byte.
        offset: u64,
        /// Bytes to take.
        len: u64,
    },
    /// A byte range of a GPU buffer: copied on the GPU into another GPU buffer, or read back
    /// into host memory. Uncompressed only.
    Device {
        /// The buffer.
        buffer: DeviceBuffer,
        /// First byte.
        offset: u64,
        /// Bytes to take.
        len: u64,
    },
}

impl Source {
    /// How many source bytes the request consumes.
    pub fn len(&self) -> u64 {
        match self {
            Source::File { len, .. } | Source::Memory { len, .. } | Source::Device { len, .. } => *len,
        }
    }

    /// Whether the request consumes no source bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How the source bytes are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Stored as they should land.
    #[default]
    None,
    /// A GDeflate TileStream that decodes to `uncompressed_len` bytes.
    GDeflate {
        /// Size after decoding.
        uncompressed_len: u64,
    },
}

/// Where a request's bytes go.
#[derive(Clone, Debug)]
pub enum Destination {
    /// A caller's host buffer, from `offset`.
    Host {
        /// The buffer.
        buffer: HostBuffer,
        /// First byte written.
        offset: u64,
    },
    /// A buffer in GPU memory, from `offset`: the bytes reach it through an `Upload` node.
    Device {
        /// The buffer.
        buffer: DeviceBuffer,
        /// First byte written.
        offset: u64,
    },
    /// A file range, from `offset` (a write request). The file must exist; writing past its
    /// end extends it.
    File {
        /// The file.
        file: FileSource,
        /// First byte written.
        offset: u64,
        /// Make the bytes durable (`fdatasync`) before the request completes.
        sync: bool,
    },
}

/// One request: read `source`, decode it per `compression`, land it in `destination`.
#[derive(Clone, Debug)]
pub struct Request {
    /// Where the bytes come from.
    pub source: Source,
    /// How they are encoded.
    pub compression: Compression,
    /// Where they go.
    pub destination: Destination,
    /// Cancellation tag: `cancel(tag, mask)` matches `request.tag & mask == tag & mask`.
    pub tag: u64,
    /// A name for reports, DOT and errors.
    pub name: Option<String>,
    /// Scheduling priority.
    pub priority: Priority,
    /// Expected xxh3-64 of each 64 KiB tile of the output: decoding verifies them, so corrupt
    /// data is an error rather than wrong bytes.
    pub verify: Option<Arc<[u64]>>,
    /// How file bytes are read.
    pub io: IoPolicy,
    /// Where a GDeflate stream bound for a GPU buffer is decoded.
    pub decode: DecodeRoute,
    /// For GDeflate: the source is the tiles' compressed bytes alone, tile `i` ending `ends[i]`
    /// bytes from the source's start, its table kept apart (see [`Request::gdeflate_tiles`]).
    pub tile_ends: Option<Arc<[u64]>>,
}

/// Where a GDeflate request into a GPU buffer decodes. Host destinations always decode on the
/// CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecodeRoute {
    /// The GPU where the executor has the GPU decoder and the request allows it (a destination
    /// the decoder can address, no tile hashes to check), the CPU otherwise.
    #[default]
    Auto,
    /// On the CPU's workers, then uploaded.
    Cpu,
    /// Uploaded compressed and decoded by the GPU decoder; refused where it cannot run.
    Gpu,
}

impl Request {
    /// Reads `len` bytes at `offset` of the file at `path` into `buffer` at `dst_offset`.
    pub fn file(path: impl Into<PathBuf>, offset: u64, len: u64, buffer: &HostBuffer, dst_offset: u64) -> Self {
        Self::new(
            Source::File {
                file: FileSource::Path(path.into()),
                offset,
                len,
            },
            buffer,
            dst_offset,
        )
    }

    /// Reads `len` bytes at `offset` of an already-open file into `buffer` at `dst_offset`.
    pub fn open_file(file: Arc<File>, offset: u64, len: u64, buffer: &HostBuffer, dst_offset: u64) -> Self {
        Self::new(
            Source::File {
                file: FileSource::Open(file),
                offset,
                len,
            },
            buffer,
            dst_offset,
        )
    }

    /// Copies `bytes[offset..offset + len]` into `buffer` at `dst_offset`.
    pub fn memory(bytes: impl Into<SourceBytes>, offset: u64, len: u64, buffer: &HostBuffer, dst_offset: u64) -> Self {
        let bytes = bytes.into();
        Self::new(Source::Memory { bytes, offset, len }, buffer, dst_offset)
    }

    /// Reads `len` bytes at `offset` of the file at `path` into the GPU buffer `buffer` at
    /// `dst_offset`.
    pub fn file_to_device(
        path: impl Into<PathBuf>,
        offset: u64,
        len: u64,
        buffer: &DeviceBuffer,
        dst_offset: u64,
    ) -> Self {
        Self::file(path, offset, len, &HostBuffer::new(0), 0).on_device(buffer, dst_offset)
    }

    /// Copies `bytes[offset..offset + len]` into the GPU buffer `buffer` at `dst_offset`.
    pub fn memory_to_device(
        bytes: impl Into<SourceBytes>,
        offset: u64,
        len: u64,
        buffer: &DeviceBuffer,
        dst_offset: u64,
    ) -> Self {
        Self::memory(bytes, offset, len, &HostBuffer::new(0), 0).on_device(buffer, dst_offset)
    }

    /// Copies `len` bytes at `offset` of the GPU buffer `src` into the GPU buffer `dst` at
    /// `dst_offset`, on the GPU.
    pub fn device_to_device(src: &DeviceBuffer, offset: u64, len: u64, dst: &DeviceBuffer, dst_offset: u64) -> Self {
        Self::device_to_host(src, offset, len, &HostBuffer::new(0), 0).on_device(dst, dst_offset)
    }

    /// Reads `len` bytes at `offset` of the GPU buffer `src` back into `buffer` at `dst_offset`.
    pub fn device_to_host(src: &DeviceBuffer, offset: u64, len: u64, buffer: &HostBuffer, dst_offset: u64) -> Self {
        Self::new(
            Source::Device {
                buffer: src.clone(),
                offset,
                len,
            },
            buffer,
            dst_offset,
        )
    }

    /// Writes `bytes[offset..offset + len]` to the file at `path` at `file_offset`.
    pub fn write(
        bytes: impl Into<SourceBytes>,
        offset: u64,
        len: u64,
        path: impl Into<PathBuf>,
        file_offset: u64,
    ) -> Self {
        Self::memory(bytes, offset, len, &HostBuffer::new(0), 0).to_file(FileSource::Path(path.into()), file_offset)
    }

    /// Writes `len` bytes at `offset` of the GPU buffer `src` to the file at `path` at
    /// `file_offset` (read back through staging, then written).
    pub fn device_to_file(
        src: &DeviceBuffer,
        offset: u64,
        len: u64,
        path: impl Into<PathBuf>,
        file_offset: u64,
    ) -> Self {
        Self::device_to_host(src, offset, len, &HostBuffer::new(0), 0)
            .to_file(FileSource::Path(path.into()), file_offset)
    }

    /// Sends the request's bytes to `file` at `offset` instead of where they were going.
    pub fn to_file(mut self, file: FileSource, offset: u64) -> Self {
        self.destination = Destination::File {
            file,
            offset,
            sync: false,
        };
        self
    }

    /// For a write: makes the bytes durable (`fdatasync`) before the request completes.
    pub fn sync(mut self) -> Self {
        if let Destination::File { sync, .. } = &mut self.destination {
            *sync = true;
        }
        self
    }

    /// Lands the request in the GPU buffer `buffer` at `offset` instead of where it was going.
    pub fn on_device(mut self, buffer: &DeviceBuffer, offset: u64) -> Self {
        self.destination = Destination::Device {
            buffer: buffer.clone(),
            offset,
        };
        self
    }

    fn new(source: Source, buffer: &HostBuffer, offset: u64) -> Self {
        Request {
            source,
            compression: Compression::None,
            destination: Destination::Host {
                buffer: buffer.clone(),
                offset,
            },
            tag: 0,
            name: None,
            priority: Priority::Normal,
            verify: None,
            io: IoPolicy::Auto,
            decode: DecodeRoute::Auto,
            tile_ends: None,
        }
    }

    /// Chooses where a GDeflate stream bound for a GPU buffer decodes.
    pub fn decode_on(mut self, route: DecodeRoute) -> Self {
        self.decode = route;
        self
    }

    /// Marks the source as a GDeflate stream that decodes to `uncompressed_len` bytes.
    pub fn gdeflate(mut self, uncompressed_len: u64) -> Self {
        self.compression = Compression::GDeflate { uncompressed_len };
        self
    }

    /// Marks the source as GDeflate tiles without their TileStream's header and table: the
    /// compressed bytes of tiles back to back, tile `i` ending `ends[i]` bytes from the
    /// source's start (the first starting at 0), decoding to `uncompressed_len` bytes (every
    /// tile 64 KiB but the last). A window of a large stream is read and decoded this way, its
    /// table having been read once. Decoded on the CPU.
    pub fn gdeflate_tiles(mut self, uncompressed_len: u64, ends: Arc<[u64]>) -> Self {
        self.compression = Compression::GDeflate { uncompressed_len };
        self.tile_ends = Some(ends);
        self
    }

    /// Verifies each decoded 64 KiB tile against `hashes` (xxh3-64), for compressed requests.
    pub fn verify_tiles(mut self, hashes: Arc<[u64]>) -> Self {
        self.verify = Some(hashes);
        self
    }

    /// Sets how file bytes are read.
    pub fn io(mut self, policy: IoPolicy) -> Self {
        self.io = policy;
        self
    }

    /// Sets the cancellation tag.
    pub fn tag(mut self, tag: u64) -> Self {
        self.tag = tag;
        self
    }

    /// Names the request.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Bytes the request lands in its destination.
    pub fn output_len(&self) -> u64 {
        match self.compression {
            Compression::None => self.source.len(),
            Compression::GDeflate { uncompressed_len } => uncompressed_len,
        }
    }

    /// What an error record keeps of the request (see [`RequestRecord`]); its name cut to
    /// `name_chars` characters.
    pub fn record(&self, name_chars: usize) -> RequestRecord {
        let (source, source_offset, file) = match &self.source {
            Source::File { file, offset, .. } => (
                Place::File,
                *offset,
                match file {
                    FileSource::Named(_, path) => Some(path.clone()),
                    FileSource::Path(_) | FileSource::Open(_) => None,
                },
            ),
            Source::Memory { offset, .. } => (Place::Host, *offset, None),
            Source::Device { offset, .. } => (Place::Gpu, *offset, None),
        };
        let (destination, destination_offset) = match &self.destination {
            Destination::Host { offset, .. } => (Place::Host, *offset),
            Destination::Device { offset, .. } => (Place::Gpu, *offset),
            Destination::File { offset, .. } => (Place::File, *offset),
        };
        RequestRecord {
            source,
            source_offset,
            source_len: self.source.len(),
            file,
            destination,
            destination_offset,
            output_len: self.output_len(),
            compression: self.compression,
            tag: self.tag,
            name: self.name.as_ref().map(|n| n.chars().take(name_chars).collect()),
            priority: self.priority,
            io: self.io,
        }
    }
}

/// Where a request's bytes are, for a [`RequestRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A file.
    File,
    /// Host memory.
    Host,
    /// A GPU buffer.
    Gpu,
}

/// A request as an error record keeps it: what it asked for, without its buffers, so a record
/// does not keep the caller's memory alive or shared (DirectStorage's record is a copy of the
/// request struct, whose buffers are plain pointers: the same thing), and taking it costs the
/// enqueuing thread no reference counts on buffers that workers are releasing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// Where the bytes came from.
    pub source: Place,
    /// First byte read from it.
    pub source_offset: u64,
    /// Bytes read from it.
    pub source_len: u64,
    /// The source file's path, when the request read a file opened with its path
    /// ([`FileSource::Named`]).
    pub file: Option<Arc<std::path::Path>>,
    /// Where the bytes went.
    pub destination: Place,
    /// First byte written there.
    pub destination_offset: u64,
    /// Bytes written there.
    pub output_len: u64,
    /// How the source was encoded.
    pub compression: Compression,
    /// Its cancellation tag.
    pub tag: u64,
    /// Its name, cut to the record's length.
    pub name: Option<String>,
    /// Its priority.
    pub priority: Priority,
    /// How file bytes were read.
    pub io: IoPolicy,
}
