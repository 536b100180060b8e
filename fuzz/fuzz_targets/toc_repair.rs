//! What the archive targets share: fuzzed bytes as an archive whose header's TOC hash is
//! repaired whenever the header's TOC bounds fit the input, since otherwise nearly every
//! mutation would stop at the hash check and the entry parser behind it would never run.

/// `data` with its TOC hash (header bytes 32..40) recomputed over the TOC it points at.
pub fn repaired(data: &[u8]) -> Vec<u8> {
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
    bytes
}
