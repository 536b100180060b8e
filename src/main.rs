//! The `dsr` command: demo, load, dot, bench.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
