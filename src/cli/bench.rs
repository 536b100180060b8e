//! `dsr bench ...`: benchmarks, each measuring dsr and a peer in the same run.

use clap::{Args, Subcommand};
use serde_json::json;

use dsr::bench::exec::{self, Shape};

use super::{CliError, CliResult};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Executor overhead per node on large DAGs of tiny nodes (chains, fan-out/fan-in, a random
    /// DAG), against rayon running the same graphs with the same threads in the same run.
    Exec(ExecArgs),
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// Nodes per graph.
    #[arg(long, default_value_t = 1_000_000)]
    nodes: u32,
    /// Worker counts to measure (both sides use the same).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Alternating runs per side; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> CliResult {
    match args.bench {
        Bench::Exec(args) => run_exec(args),
    }
}

fn run_exec(args: ExecArgs) -> CliResult {
    if args.nodes < 2 {
        return Err(CliError::usage("--nodes must be at least 2"));
    }
    let mut results = Vec::new();
    for &workers in &args.workers {
        for shape in Shape::standard(args.nodes) {
            let result = exec::measure(shape, workers.max(1), args.runs)?;
            if !args.json {
                println!(
                    "{:<11} workers {}  nodes {:>8}   dsr {:>6.1} ns/node   rayon spawn {:>6.1} ns/task ({:.2}x)   rayon inline {:>6.1} ns/task ({:.2}x)   compile {:.0} ns/node",
                    result.shape,
                    result.workers,
                    result.nodes,
                    result.dsr_ns_per_node,
                    result.rayon_ns_per_task,
                    result.ratio,
                    result.rayon_inline_ns_per_task,
                    result.ratio_inline,
                    result.dsr_compile_ns_per_node
                );
            }
            results.push(result);
        }
    }
    if args.json {
        let doc = json!({ "bench": "exec", "runs": args.runs, "results": results });
        println!("{doc}");
    }
    Ok(())
}
