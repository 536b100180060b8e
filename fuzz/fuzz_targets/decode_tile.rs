//! Any bytes as one tile, with any output size: an error or a full tile, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let size = (u16::from_le_bytes([data[0], data[1]]) as usize) + 1;
    let mut out = vec![0u8; size];
    let _ = dsr_gdeflate::Decoder::new().decode_tile(&data[2..], &mut out);
});
