//! Any bytes as a sequence of operations on the Rust queue API (`tests/queue_sequences/
//! interpreter.rs`, the same interpreter the test suite runs on seeded sequences): nothing
//! panics or hangs, hostile requests are refused or fail, sound ones land their bytes, accepted
//! requests call back once, nothing lands outside a destination, statuses agree.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

// The test's tallies (`Totals`) go unread here.
#[allow(dead_code)]
#[path = "../../tests/queue_sequences/interpreter.rs"]
mod interpreter;

fn world() -> &'static interpreter::World {
    static WORLD: OnceLock<interpreter::World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dsr-fuzz-queue-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the fuzz target's directory");
        interpreter::World::new(&dir).expect("the fuzz target's files")
    })
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let mut machine = interpreter::Machine::new(world, "fuzz");
    let bytes: Vec<u8> = interpreter::Machine::PROLOGUE.iter().chain(data).copied().collect();
    if let Err(broken) = machine.run(&bytes) {
        panic!("{broken}");
    }
    if let Err(broken) = machine.finish() {
        panic!("{broken}");
    }
});
