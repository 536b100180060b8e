//! Any bytes as an archive file (its TOC hash repaired: `toc_repair.rs`): opening it is an
//! error or a valid table of contents.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "toc_repair.rs"]
mod toc_repair;

fuzz_target!(|data: &[u8]| {
    let bytes = toc_repair::repaired(data);
    let path = std::env::temp_dir().join(format!("dsr-fuzz-archive-{}", std::process::id()));
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    if let Ok(archive) = dsr::archive::Archive::open(&path) {
        for asset in &archive.assets {
            assert!(asset.offset + asset.stored_len <= bytes.len() as u64);
            assert_eq!(asset.tile_hashes.len() as u64, asset.len.div_ceil(65536));
        }
    }
});
