//! Random operation sequences on the Rust queue API (`Runtime`, `RuntimeQueue`, fences, status
//! arrays, events): runtimes, queues and requests made, used, closed and dropped in any order,
//! hostile requests among sound ones, callbacks that call back in. Nothing may panic or hang,
//! hostile requests are refused or fail, sound ones land their bytes, every accepted request
//! calls back exactly once unless its queue was closed first (then at most once), nothing lands
//! outside a destination, and status entries agree with the requests before them
//! (`queue_sequences/interpreter.rs` says it all).
//!
//! The sequences come from seeds: `DSR_QUEUE_SEQUENCES` sets how many (default 200), and
//! `DSR_QUEUE_SEED` replays one. The same interpreter is the `queue_sequences` fuzz target
//! (`fuzz/`), fed by libFuzzer's bytes instead of a seeded generator; `DSR_QUEUE_INPUT=file`
//! replays one of its inputs here (after the same prologue).

mod interpreter;

use interpreter::{Machine, Totals, World};

#[test]
fn random_queue_sequences_keep_every_promise() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new(dir.path()).unwrap();
    let sequences: u64 = std::env::var("DSR_QUEUE_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seeds: Vec<u64> = match std::env::var("DSR_QUEUE_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..sequences).collect(),
    };
    if let Some(input) = std::env::var_os("DSR_QUEUE_INPUT") {
        let input = std::fs::read(&input).unwrap();
        let bytes: Vec<u8> = Machine::PROLOGUE.iter().chain(&input).copied().collect();
        let mut machine = Machine::new(&world, "input");
        machine.run(&bytes).unwrap_or_else(|broken| panic!("{broken}"));
        eprintln!("{:?}", machine.finish().unwrap_or_else(|broken| panic!("{broken}")));
        return;
    }
    let mut totals = Totals::default();
    for seed in seeds {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
        // Most start from a working setup, some from nothing.
        let start: &[u8] = if seed % 4 != 3 { &Machine::PROLOGUE } else { &[] };
        let bytes: Vec<u8> = start
            .iter()
            .copied()
            .chain((0..rng.usize(16..400)).map(|_| rng.u8(..)))
            .collect();
        let mut machine = Machine::new(&world, &seed.to_string());
        if let Err(broken) = machine.run(&bytes) {
            panic!("seed {seed}: {broken} (replay with DSR_QUEUE_SEED={seed})");
        }
        let sequence = machine
            .finish()
            .unwrap_or_else(|broken| panic!("seed {seed}: {broken} (replay with DSR_QUEUE_SEED={seed})"));
        totals.add(&sequence);
    }
    eprintln!("{totals:?}");
    assert!(totals.accepted > 200, "{totals:?}");
    assert!(totals.done > 100, "{totals:?}");
    assert!(totals.refused > 50, "{totals:?}");
    assert!(totals.failed > 10, "{totals:?}");
}
