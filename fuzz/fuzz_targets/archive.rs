//! Any bytes as an archive file: opening it is an error or a valid table of contents.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("dsr-fuzz-archive-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(archive) = dsr::archive::Archive::open(&path) {
        for asset in &archive.assets {
            assert!(asset.offset + asset.stored_len <= data.len() as u64);
            assert_eq!(asset.tile_hashes.len() as u64, asset.len.div_ceil(65536));
        }
    }
});
