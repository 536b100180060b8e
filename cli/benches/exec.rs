//! `cargo bench --bench exec`: the executor-overhead harness, dsr against rayon on the same DAGs
//! in the same run (the same code as `dsr bench exec`; see benches/README.md).

use dsr_cli::harness::exec::{measure, Shape};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants it quick.
    let full = std::env::args().any(|a| a == "--bench");
    let (nodes, runs) = if full { (1_000_000, 5) } else { (10_000, 1) };
    for workers in [1, 2] {
        for shape in Shape::standard(nodes) {
            match measure(shape, workers, runs) {
                Ok(r) => println!(
                    "{:<11} workers {} nodes {:>8}: dsr {:>6.1} ns/node, rayon spawn {:>6.1} ns/task ({:.2}x), rayon inline {:>6.1} ns/task ({:.2}x)",
                    r.shape, r.workers, r.nodes, r.dsr_ns_per_node, r.rayon_ns_per_task, r.ratio,
                    r.rayon_inline_ns_per_task, r.ratio_inline
                ),
                Err(err) => {
                    eprintln!("exec bench failed: {err}");
                    std::process::exit(1);
                }
            }
        }
    }
}
