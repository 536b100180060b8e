//! The `dsr` command: argument parsing and dispatch. Each subcommand lives in its own file and
//! returns a `CliResult`; `main` turns that into an exit code and a message.

mod bench;
mod demo;
mod dot;
mod gdeflate;
mod info;
mod load;
mod output;
mod pack;
mod plot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// What a subcommand failed with: a message for stderr, and the exit code.
#[derive(Debug)]
pub struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    /// A failure of the work itself (exit code 1).
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: 1,
        }
    }
    /// Bad arguments (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: 2,
        }
    }
}

impl From<dsr::Error> for CliError {
    fn from(err: dsr::Error) -> Self {
        CliError::failed(err.to_string())
    }
}

pub type CliResult = Result<(), CliError>;

/// dsr: stream assets from disk into memory through a job-graph engine (DirectStorage for Linux).
#[derive(Debug, Parser)]
#[command(name = "dsr", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a sample asset set to a temporary directory, load it through the engine, verify
    /// every byte, and print throughput and latency (works on any machine, no GPU needed).
    Demo(demo::DemoArgs),
    /// Load files (or one range of each), or the assets of a dsr archive, into host memory and
    /// report throughput and latency.
    Load(load::LoadArgs),
    /// Pack files and directories into a dsr archive of GDeflate-compressed assets.
    Pack(pack::PackArgs),
    /// Compress or decompress raw DirectStorage GDeflate TileStream files.
    Gdeflate(gdeflate::GdeflateArgs),
    /// Write the planned graph of loading FILE... as Graphviz DOT, without running it.
    Dot(dot::DotArgs),
    /// Throughput and overhead benchmarks, each against a peer measured in the same run.
    Bench(bench::BenchArgs),
    /// The I/O backend in use and its features (io_uring, fixed buffers and files, direct I/O
    /// per file system).
    Info(info::InfoArgs),
}

/// Options shared by commands that run the engine.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Worker threads, which also decode (default: one per CPU).
    #[arg(long, short = 'w', visible_alias = "threads")]
    pub workers: Option<usize>,
    /// Largest read one node issues, in bytes (suffixes K, M, G accepted).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub chunk: u64,
    /// How files are read: direct I/O where the file system allows it (auto), always direct,
    /// or through the page cache (buffered).
    #[arg(long, value_enum, default_value_t = IoArg::Auto)]
    pub io: IoArg,
    /// Read backend: io_uring when available (auto), io_uring or fail, or positioned reads.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub io_backend: BackendArg,
    /// Compressed bytes all requests may hold at once between their reads and their decodes;
    /// compressed requests beyond it wait (suffixes K, M, G accepted).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub scratch: u64,
}

/// `--io`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoArg {
    Auto,
    Direct,
    Buffered,
}

impl From<IoArg> for dsr::IoPolicy {
    fn from(arg: IoArg) -> Self {
        match arg {
            IoArg::Auto => dsr::IoPolicy::Auto,
            IoArg::Direct => dsr::IoPolicy::Direct,
            IoArg::Buffered => dsr::IoPolicy::Buffered,
        }
    }
}

/// `--io-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Auto,
    IoUring,
    Pread,
}

impl From<BackendArg> for dsr::Backend {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Auto => dsr::Backend::Auto,
            BackendArg::IoUring => dsr::Backend::IoUring,
            BackendArg::Pread => dsr::Backend::Pread,
        }
    }
}

impl EngineArgs {
    pub fn config(&self) -> dsr::ExecutorConfig {
        let mut config = dsr::ExecutorConfig::default();
        if let Some(workers) = self.workers {
            config.workers = workers.max(1);
        }
        config.lowering.read_chunk = self.chunk.max(1);
        config.scratch_budget = self.scratch;
        config
    }

    /// An executor with `config` (this one's, perhaps with an observer) and the chosen backend.
    pub fn executor(&self, config: dsr::ExecutorConfig) -> Result<(dsr::Executor, dsr::IoInfo), CliError> {
        let io = dsr::IoConfig {
            backend: self.io_backend.into(),
            ..dsr::IoConfig::default()
        };
        Ok(dsr::executor_with_io(config, io)?)
    }

    pub fn policy(&self) -> dsr::IoPolicy {
        self.io.into()
    }

    /// The policy for a file-to-file pipeline, whose requests also write: `auto` goes through
    /// the page cache there, as `cp` does (measured on the 2-core VM, decoding 178 MB into a
    /// file: 167–183 ms buffered against 227–243 ms with `auto`'s direct writes, which wait for
    /// the disk; docs/benchmarks.md). `--io direct` still asks for direct I/O.
    pub fn file_to_file_policy(&self) -> dsr::IoPolicy {
        match self.io {
            IoArg::Auto => dsr::IoPolicy::Buffered,
            other => other.into(),
        }
    }
}

/// "io_uring" or "pread", as reports name the backend.
pub fn backend_name(info: &dsr::IoInfo) -> &'static str {
    match info.backend {
        dsr::Backend::IoUring => "io_uring",
        _ => "pread",
    }
}

/// A byte range `OFFSET:LEN` (suffixes K, M, G accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub len: u64,
}

fn parse_range(text: &str) -> Result<Range, String> {
    let (offset, len) = text
        .split_once(':')
        .ok_or_else(|| format!("'{text}' is not OFFSET:LEN (for example 4096:1M)"))?;
    Ok(Range {
        offset: parse_size(offset)?,
        len: parse_size(len)?,
    })
}

/// A byte count with an optional binary suffix: 4096, 64K, 1M, 2G.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 10),
        Some((i, 'm' | 'M')) => (&text[..i], 20),
        Some((i, 'g' | 'G')) => (&text[..i], 30),
        _ => (text, 0),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a byte count (digits, optionally followed by K, M or G)"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' does not fit in 64 bits"))
}

/// Files named on the command line, each with the range to load.
pub fn resolve_files(files: &[PathBuf], range: Option<Range>) -> Result<Vec<(PathBuf, u64, u64)>, CliError> {
    if files.is_empty() {
        return Err(CliError::usage("name at least one FILE"));
    }
    files
        .iter()
        .map(|path| {
            let len = dsr::file_len(path)?;
            match range {
                // Refused here, before a destination of that size is allocated.
                Some(r) if r.offset.checked_add(r.len).is_none_or(|end| end > len) => Err(CliError::failed(format!(
                    "{}: the range {}+{} runs past the end of the file, which holds {len} bytes; read a shorter range",
                    path.display(),
                    r.offset,
                    r.len
                ))),
                Some(r) => Ok((path.clone(), r.offset, r.len)),
                None => Ok((path.clone(), 0, len)),
            }
        })
        .collect()
}

/// mimalloc: requests are allocated on the thread that submits them and freed on the workers
/// that finish them; glibc's allocator serialises those frees on the submitting thread's arena
/// lock, which the submit benchmark showed as futex wake-ups on the submitting thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    dsr_cli::STARTED.get_or_init(std::time::Instant::now);
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Load(args) => load::run(args),
        Command::Pack(args) => pack::run(args),
        Command::Gdeflate(args) => gdeflate::run(args),
        Command::Dot(args) => dot::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Info(args) => info::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dsr: {}", err.message);
            ExitCode::from(err.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ranges_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("99999999999G").is_err());
        assert_eq!(
            parse_range("4K:1M"),
            Ok(Range {
                offset: 4096,
                len: 1 << 20
            })
        );
        assert!(parse_range("12").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
