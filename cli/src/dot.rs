//! `dsr dot FILE... -o OUT.dot`: the planned graph of a load, without running it.

use std::path::PathBuf;

use clap::Args;
use dsr::{BatchBuilder, HostBuffer, LoweringConfig, Request};

use super::{parse_range, parse_size, resolve_files, CliError, CliResult, Range};

#[derive(Debug, Args)]
pub struct DotArgs {
    /// Files the planned batch would load.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Plan only this range of each file, OFFSET:LEN.
    #[arg(long, value_parser = parse_range)]
    range: Option<Range>,
    /// Largest read one node issues, in bytes (suffixes K, M, G accepted).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    chunk: u64,
    /// Treat each file as a GDeflate stream that decodes to this many bytes (plans the decode).
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    gdeflate: Option<u64>,
    /// Where to write the DOT.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(args: DotArgs) -> CliResult {
    let files = resolve_files(&args.files, args.range)?;
    let out_len = |len: u64| args.gdeflate.unwrap_or(len);
    let total: u64 = files.iter().map(|(_, _, len)| out_len(*len)).sum();
    // Planning reserves destination ranges, so it needs a destination of the right size; it is
    // never touched, so its pages are never mapped.
    let dest = HostBuffer::new(
        usize::try_from(total).map_err(|_| CliError::failed("the planned batch does not fit in memory"))?,
    );
    let mut batch = BatchBuilder::new(LoweringConfig {
        read_chunk: args.chunk.max(1),
        ..dsr::LoweringConfig::default()
    });
    let mut at = 0;
    for (path, offset, len) in files {
        let mut request = Request::file(path.clone(), offset, len, &dest, at).name(path.display().to_string());
        if let Some(uncompressed) = args.gdeflate {
            request = request.gdeflate(uncompressed);
        }
        batch.push(request)?;
        at += out_len(len);
    }
    let compiled = batch.compile()?;
    std::fs::write(&args.output, dsr::viz::plan_dot(compiled.graph()))
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", args.output.display())))?;
    eprintln!(
        "wrote the plan ({} nodes, {} edges) to {}",
        compiled.graph().node_count(),
        compiled.graph().edge_count(),
        args.output.display()
    );
    Ok(())
}
