//! Random call sequences through the C ABI (`libdsr.so`, loaded as a C program would load it):
//! runtimes, files, queues, requests, cancellations, fences and status arrays created, used,
//! closed and destroyed in any order, with stale, forged and null handles, nonsense struct
//! sizes, kinds and sizes, and null pointers mixed in. Every call must return one of the ABI's
//! result codes, every wait is bounded, nothing may crash, and every request the ABI accepted
//! must call back exactly once unless its queue was closed first (then at most once).
//!
//! The sequences come from seeds: `DSR_ABI_SEQUENCES` sets how many (default 300), and
//! `DSR_ABI_SEED` replays one. The same interpreter is the `capi_sequences` fuzz target
//! (`fuzz/`), fed by libFuzzer's bytes instead of a seeded generator.

#[path = "sequences/interpreter.rs"]
mod interpreter;
mod support;

use interpreter::{Library, Machine};

/// `libdsr.so` as this build makes it (`cargo test` builds no cdylib: built here first).
fn library() -> Library {
    let dir = support::lib_dir();
    support::build_library(&dir);
    Library::load(&dir.join("libdsr.so")).expect("libdsr.so loads")
}

#[test]
fn random_call_sequences_get_result_codes_and_never_crash() {
    let lib = library();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    std::fs::write(
        &file,
        (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    let sequences: u64 = std::env::var("DSR_ABI_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seeds: Vec<u64> = match std::env::var("DSR_ABI_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..sequences).collect(),
    };
    let mut totals = interpreter::Totals::default();
    for seed in seeds {
        let mut rng = fastrand::Rng::with_seed(seed);
        // Half start from a working setup, half from nothing.
        let start: &[u8] = if seed.is_multiple_of(2) {
            &Machine::PROLOGUE
        } else {
            &[]
        };
        let bytes: Vec<u8> = start
            .iter()
            .copied()
            .chain((0..rng.usize(16..400)).map(|_| rng.u8(..)))
            .collect();
        let mut machine = Machine::new(&lib, &file);
        if let Err(broken) = machine.run(&bytes) {
            panic!("seed {seed}: {broken} (replay with DSR_ABI_SEED={seed})");
        }
        totals.add(
            &machine
                .finish()
                .unwrap_or_else(|broken| panic!("seed {seed}: {broken}")),
        );
    }
    eprintln!("{totals:?}");
    assert!(totals.calls > 1000, "{totals:?}");
    assert!(totals.accepted_requests > 50, "{totals:?}");
    assert!(totals.refused > 100, "{totals:?}");
}
