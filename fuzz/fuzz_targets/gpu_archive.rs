//! Any bytes as an archive (its TOC hash repaired, as the `archive` target does, so mutations
//! reach the entries), its assets loaded into a GPU buffer on the GPU route (dsr's shader on the
//! default Vulkan device, lavapipe here) and into host memory on the CPU route, with the tile
//! hashes checked and without: the same verdict per asset, the same bytes, a good stream beside
//! them unharmed, no validation message (`gpu_route.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "toc_repair.rs"]
mod toc_repair;

#[path = "gpu_route.rs"]
mod gpu_route;

fuzz_target!(|data: &[u8]| {
    let bytes = toc_repair::repaired(data);
    let path = std::env::temp_dir().join(format!("dsr-fuzz-gpu-archive-{}", std::process::id()));
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    let Ok(archive) = dsr::archive::Archive::open(&path) else {
        return;
    };
    // The assets that fit the room, one after another at 256-byte multiples; empty ones too.
    let mut chosen = Vec::new();
    let mut at = 0u64;
    for asset in archive.assets.iter().take(16) {
        if at + asset.len > gpu_route::ROOM {
            continue;
        }
        chosen.push((asset, at));
        at = (at + asset.len).next_multiple_of(256);
    }
    for verify in [true, false] {
        let makes: Vec<Box<dyn Fn(&dsr::HostBuffer, u64) -> dsr::Request>> = chosen
            .iter()
            .map(|&(asset, slot)| {
                let archive = &archive;
                Box::new(move |dest: &dsr::HostBuffer, _at: u64| {
                    let (assets, slots) = ([asset], [slot]);
                    let request = dsr::archive::requests(archive, &assets, dest, &slots, verify).next();
                    request.expect("one request per asset")
                }) as Box<dyn Fn(&dsr::HostBuffer, u64) -> dsr::Request>
            })
            .collect();
        let requests: Vec<(gpu_route::Make<'_>, u64, u64)> = makes
            .iter()
            .zip(&chosen)
            .map(|(make, &(asset, slot))| (&**make as gpu_route::Make<'_>, asset.len, slot))
            .collect();
        gpu_route::compare(&requests);
    }
});
