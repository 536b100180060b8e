//! `dsr pack INPUT... -o ARCHIVE [--level N]`: files and directories into a dsr archive.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use dsr::archive::ArchiveWriter;
use dsr::viz::dot::human_bytes;
use dsr_gdeflate::Level;
use serde_json::json;

use super::{CliError, CliResult};

#[derive(Debug, Args)]
pub struct PackArgs {
    /// Files and directories to pack (directories recurse; assets are named by their path
    /// relative to the directory given).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The archive to write.
    #[arg(short, long)]
    output: PathBuf,
    /// GDeflate level: 0 (stored) to 12 (smallest).
    #[arg(long, default_value_t = Level::DEFAULT.get(), value_parser = clap::value_parser!(u8).range(0..=12))]
    level: u8,
    /// Compression threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Store an asset raw unless GDeflate saves at least this many percent of its bytes (raw
    /// assets load with one read and a hash pass; 0 compresses whatever shrinks).
    #[arg(long, default_value_t = 100.0 * dsr::archive::DEFAULT_MIN_GAIN, value_parser = parse_percent)]
    min_gain: f64,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// Every file under the inputs, with the name it gets in the archive, in a stable order.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<(String, PathBuf)>, CliError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), CliError> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| CliError::failed(format!("cannot read directory {}: {e}", dir.display())))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if path.is_file() {
                let name = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((name, path));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, input, &mut files)?;
        } else if input.is_file() {
            let name = input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, input.clone()));
        } else {
            return Err(CliError::failed(format!(
                "{} is not a file or directory",
                input.display()
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (name, path) in &files {
        if !seen.insert(name) {
            return Err(CliError::usage(format!(
                "two inputs would both be named {name:?} in the archive ({}); pack their directories instead",
                path.display()
            )));
        }
    }
    Ok(files)
}

pub fn run(args: PackArgs) -> CliResult {
    let files = collect_inputs(&args.inputs)?;
    let total: u64 = files.iter().map(|(_, p)| p.metadata().map_or(0, |m| m.len())).sum();
    let bar = super::output::bytes_bar(total, !args.json);
    let start = Instant::now();
    let mut writer = ArchiveWriter::create(&args.output, Level::new(args.level))
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", args.output.display())))?;
    if let Some(threads) = args.threads.filter(|&n| n > 0) {
        writer = writer.threads(threads);
    }
    writer = writer.min_gain(args.min_gain / 100.0);
    // The engine reads the inputs and writes the archive; the writer's threads encode.
    let (executor, _) = dsr::executor_with_io(
        dsr::ExecutorConfig {
            workers: 1,
            ..dsr::ExecutorConfig::default()
        },
        dsr::io_from_env(),
    )?;
    writer
        .add_files(&executor, &files, |name, bytes| {
            bar.set_message(name.to_owned());
            bar.inc(bytes);
        })
        .map_err(|e| CliError::failed(format!("cannot pack into {}: {e}", args.output.display())))?;
    let assets = writer
        .finish()
        .map_err(|e| CliError::failed(format!("cannot finish {}: {e}", args.output.display())))?;
    bar.finish_and_clear();
    let elapsed = start.elapsed();
    let archive_len = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    let input: u64 = assets.iter().map(|a| a.len).sum();
    let stored: u64 = assets.iter().map(|a| a.stored_len).sum();
    let raw = assets
        .iter()
        .filter(|a| a.codec == dsr::archive::Codec::Raw && a.len > 0)
        .count();
    if args.json {
        let doc = json!({
            "archive": args.output,
            "assets": assets.len(),
            "input_bytes": input,
            "stored_bytes": stored,
            "archive_bytes": archive_len,
            "ratio": stored as f64 / input.max(1) as f64,
            "level": args.level,
            "raw_assets": raw,
            "min_gain_percent": args.min_gain,
            "elapsed_s": elapsed.as_secs_f64(),
            "mbps": input as f64 / elapsed.as_secs_f64() / 1e6,
            "peak_rss_bytes": super::output::peak_rss(),
        });
        println!("{doc}");
    } else {
        println!(
            "packed {} asset(s) ({raw} stored raw: GDeflate saved under {}% of them), {} → {} ({:.1}%) at level {} in {:.2} s ({:.1} MB/s; peak memory {} MiB): {}",
            assets.len(),
            args.min_gain,
            human_bytes(input),
            human_bytes(stored),
            100.0 * stored as f64 / input.max(1) as f64,
            args.level,
            elapsed.as_secs_f64(),
            input as f64 / elapsed.as_secs_f64() / 1e6,
            super::output::peak_rss() >> 20,
            args.output.display()
        );
    }
    Ok(())
}

fn parse_percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
}
