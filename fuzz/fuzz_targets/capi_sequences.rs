//! Any bytes as a sequence of C ABI calls (`capi/tests/sequences/interpreter.rs`, the same
//! interpreter the test suite runs on seeded sequences): every call returns a result code,
//! nothing crashes or hangs, accepted requests call back once. Loads the `libdsr.so` that
//! `DSR_LIBDSR` names (build it with `cargo build --release -p dsr-capi`).
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

// The test's tallies (`Totals`) go unread here.
#[allow(dead_code)]
#[path = "../../capi/tests/sequences/interpreter.rs"]
mod interpreter;

struct Setup {
    lib: interpreter::Library,
    file: PathBuf,
}

// SAFETY: the library handle and function pointers are plain values shared read-only.
unsafe impl Send for Setup {}
// SAFETY: as above.
unsafe impl Sync for Setup {}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let path = std::env::var_os("DSR_LIBDSR").expect("DSR_LIBDSR names libdsr.so");
        let lib = interpreter::Library::load(std::path::Path::new(&path)).expect("libdsr.so loads");
        let file = std::env::temp_dir().join(format!("dsr-fuzz-capi-{}", std::process::id()));
        std::fs::write(
            &file,
            (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect::<Vec<u8>>(),
        )
        .expect("the data file");
        Setup { lib, file }
    })
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    let mut machine = interpreter::Machine::new(&setup.lib, &setup.file);
    let bytes: Vec<u8> = interpreter::Machine::PROLOGUE.iter().chain(data).copied().collect();
    if let Err(broken) = machine.run(&bytes) {
        panic!("{broken}");
    }
    if let Err(broken) = machine.finish() {
        panic!("{broken}");
    }
});
