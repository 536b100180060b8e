//! # dsr-cli: the `dsr` command and its benchmark harnesses
//!
//! The binary (`src/main.rs` and one file per subcommand) parses arguments with clap, shows
//! progress bars, prints `--json`, and drives the `dsr` facade library. This library half holds
//! the harnesses behind `dsr bench` ([`harness`]), so `cargo bench` reaches the same code.
//!
//! Everything that only a command-line tool needs (clap, indicatif, rayon as a peer, tempfile,
//! serde_json) is a dependency of this crate alone: an engine that embeds `dsr`, and the C ABI,
//! pull none of it.

pub mod harness;

/// When the process started (set first thing in `main`): `dsr load` reports whole-process time
/// beside load time, since a user waits for the whole command.
pub static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
