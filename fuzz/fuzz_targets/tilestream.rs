//! Any bytes as a TileStream: parse and decode what it declares (bounded), never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(stream) = dsr_gdeflate::TileStream::parse(data) else {
        return;
    };
    let len = stream.uncompressed_len().min(8 << 20) as usize;
    let mut out = vec![0u8; len];
    let _ = dsr_gdeflate::decompress(data, &mut out);
    let tiles = stream.tiles().min(4);
    for i in 0..tiles {
        let _ = stream.tile(i);
    }
});
