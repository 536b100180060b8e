//! Helpers the C ABI's test files share: where `libdsr.so` is, and building it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory cargo put `libdsr.so` in: the test binary's, one level up from `deps/`.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Builds `libdsr.so` into `lib` (once per test run).
pub fn build_library(lib: &Path) {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let target = lib.parent().expect("the target directory");
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "dsr-capi", "--target-dir"]).arg(target);
        if lib.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "cargo build -p dsr-capi failed");
    });
}
