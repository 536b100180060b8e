//! Any bytes as an archive file: opening it is an error or a valid table of contents.
//!
//! The header's TOC hash is repaired before the file is written whenever the header's TOC
//! bounds fit the input: otherwise nearly every mutation would stop at the hash check and the
//! entry parser behind it would never be exercised.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() >= 64 {
        let toc_offset = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
        let toc_len = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
        if let Some(end) = toc_offset.checked_add(toc_len) {
            if toc_offset >= 64 && end <= bytes.len() as u64 {
                let hash = xxhash_rust::xxh3::xxh3_64(&bytes[toc_offset as usize..end as usize]);
                bytes[32..40].copy_from_slice(&hash.to_le_bytes());
            }
        }
    }
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
