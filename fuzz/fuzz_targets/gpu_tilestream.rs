//! Any bytes as a TileStream in memory, decoded on the GPU route (dsr's shader on the default
//! Vulkan device, lavapipe here) and on the CPU route: the same verdict, the same bytes, a good
//! stream beside it unharmed, no validation message (`gpu_route.rs`).
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

#[path = "gpu_route.rs"]
mod gpu_route;

fuzz_target!(|data: &[u8]| {
    let bytes: Arc<[u8]> = data.into();
    // The length it declares (clamped to the room), or a tile's worth when it declares none.
    let len = dsr_gdeflate::TileStream::parse(data)
        .map_or(65_536, |s| s.uncompressed_len())
        .clamp(1, gpu_route::ROOM);
    let make = |dest: &dsr::HostBuffer, at: u64| {
        dsr::Request::memory(bytes.clone(), 0, bytes.len() as u64, dest, at).gdeflate(len)
    };
    if bytes.is_empty() {
        return;
    }
    gpu_route::compare(&[(&make, len, 0)]);
});
