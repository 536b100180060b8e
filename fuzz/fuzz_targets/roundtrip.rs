//! Any bytes at any level compress and decompress to themselves.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&level, input)) = data.split_first() else {
        return;
    };
    if input.is_empty() {
        return;
    }
    let stream =
        dsr_gdeflate::compress(input, dsr_gdeflate::Level::new(level % 13)).expect("non-empty input compresses");
    let mut out = vec![0u8; input.len()];
    dsr_gdeflate::decompress(&stream, &mut out).expect("our own stream decodes");
    assert!(out == input, "round trip changed the bytes");
});
