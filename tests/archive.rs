//! The archive: pack, list, load by name, verify; every kind of damage is a clear error.

use std::path::Path;

use dsr::archive::{Archive, ArchiveWriter, Codec};
use dsr::{ErrorKind, HostBuffer, RequestStatus};
use dsr_gdeflate::Level;

use crate::common::*;

fn pack(dir: &Path, assets: &[(&str, Vec<u8>)]) -> std::path::PathBuf {
    let path = dir.join("test.pak");
    let mut writer = ArchiveWriter::create(&path, Level::FASTEST).unwrap();
    for (name, bytes) in assets {
        writer.add(name, bytes).unwrap();
    }
    writer.finish().unwrap();
    path
}

fn sample() -> Vec<(&'static str, Vec<u8>)> {
    let text: Vec<u8> = b"level data ".iter().cycle().take(300_000).copied().collect();
    vec![
        ("maps/one.map", text),
        ("empty.cfg", Vec::new()),
        ("noise.bin", pattern(70_000, 1)),
        ("one-byte", vec![42]),
    ]
}

fn load_all(path: &Path, verify: bool) -> (dsr::BatchReport, Vec<Vec<u8>>) {
    let archive = Archive::open(path).unwrap();
    let assets: Vec<_> = archive.assets.iter().collect();
    let mut slots = Vec::new();
    let mut at = 0;
    for a in &assets {
        slots.push(at);
        at += a.len;
    }
    let dest = HostBuffer::new(at as usize);
    let executor = executor(2);
    let mut batch = executor.batch();
    for request in dsr::archive::requests(&archive, &assets, &dest, &slots, verify) {
        batch.push(request).unwrap();
    }
    let report = (*executor.submit(batch).unwrap().wait()).clone();
    let mut dest = dest;
    let bytes = dest.as_slice().unwrap();
    let contents = assets
        .iter()
        .zip(&slots)
        .map(|(a, &s)| bytes[s as usize..(s + a.len) as usize].to_vec())
        .collect();
    (report, contents)
}

#[test]
fn packed_assets_load_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let assets = sample();
    let path = pack(dir.path(), &assets);
    let archive = Archive::open(&path).unwrap();
    assert_eq!(archive.assets.len(), 4);
    assert_eq!(archive.find("empty.cfg").unwrap().codec, Codec::Raw);
    assert_eq!(archive.find("maps/one.map").unwrap().codec, Codec::GDeflate);
    assert!(
        archive.assets.iter().all(|a| a.offset % 4096 == 0),
        "assets are 4 KiB aligned"
    );
    let (report, contents) = load_all(&path, true);
    assert!(report.all_done(), "{:?}", report.first_failure());
    for ((name, bytes), got) in assets.iter().zip(contents) {
        assert!(*bytes == got, "{name}");
    }
}

#[test]
fn a_flipped_data_bit_fails_the_asset_naming_its_tile() {
    let dir = tempfile::tempdir().unwrap();
    let path = pack(dir.path(), &sample());
    let archive = Archive::open(&path).unwrap();
    let asset = archive.find("maps/one.map").unwrap().clone();
    drop(archive);
    let mut bytes = std::fs::read(&path).unwrap();
    // The first byte of the first tile carries lane 0's first bits: the block header, which
    // every decoder reads (a flip in a lane's unused high bits would change nothing).
    let tiles = asset.tile_hashes.len() as u64;
    bytes[(asset.offset + 8 + 4 * tiles) as usize] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let (report, _) = load_all(&path, true);
    let RequestStatus::Failed(err) = &report.requests[0].status else {
        panic!("{:?}", report.requests[0].status)
    };
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.tile().is_some(), "{err}");
    assert!(
        report.requests[1..].iter().all(|r| r.status == RequestStatus::Done),
        "the other assets load"
    );
}

#[test]
fn damaged_headers_and_tables_of_contents_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = pack(dir.path(), &sample());
    let good = std::fs::read(&path).unwrap();
    let damaged = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        edit(&mut bytes);
        let p = dir.path().join("damaged.pak");
        std::fs::write(&p, bytes).unwrap();
        Archive::open(&p).unwrap_err()
    };
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("magic", Box::new(|b| b[0] = b'X')),
        ("version", Box::new(|b| b[8] = 9)),
        ("truncated", Box::new(|b| b.truncate(b.len() - 10))),
        (
            "toc byte",
            Box::new(|b| {
                let n = b.len();
                b[n - 3] ^= 1
            }),
        ),
        ("appended", Box::new(|b| b.extend_from_slice(&[0; 16]))),
        ("short", Box::new(|b| b.truncate(20))),
    ];
    for (what, edit) in cases {
        let err = damaged(&*edit);
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");
        assert!(err.to_string().contains("dsr archive"), "{what}: {err}");
    }
}

#[test]
fn names_must_be_unique_and_non_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = ArchiveWriter::create(&dir.path().join("x.pak"), Level::FASTEST).unwrap();
    writer.add("a", b"1").unwrap();
    assert!(writer.add("a", b"2").is_err());
    assert!(writer.add("", b"3").is_err());
}

/// Assets GDeflate would barely shrink are stored raw (the writer's `min_gain`), load with a
/// read straight into place, and are checked against their tile hashes all the same: a flipped
/// byte in a raw asset fails that asset alone, naming its tile.
#[test]
fn raw_assets_load_in_place_and_their_hashes_still_catch_damage() {
    let dir = tempfile::tempdir().unwrap();
    let assets = sample();
    let path = pack(dir.path(), &assets);
    let archive = Archive::open(&path).unwrap();
    let codec = |name: &str| archive.find(name).unwrap().codec;
    assert_eq!(codec("noise.bin"), Codec::Raw, "random bytes do not repay decoding");
    assert_eq!(codec("maps/one.map"), Codec::GDeflate);
    let (report, contents) = load_all(&path, true);
    assert!(report.all_done(), "{report:?}");
    for ((_, expected), got) in assets.iter().zip(&contents) {
        assert!(got == expected);
    }
    // Everything compressed when asked to (min gain 0): the random bytes still shrink a little.
    let everything = dir.path().join("all.pak");
    let mut writer = ArchiveWriter::create(&everything, Level::FASTEST)
        .unwrap()
        .min_gain(0.0);
    writer.add("text", &assets[0].1).unwrap();
    writer.finish().unwrap();
    assert_eq!(Archive::open(&everything).unwrap().assets[0].codec, Codec::GDeflate);

    // One byte of the raw asset's second tile flipped in the file.
    let noise = archive.find("noise.bin").unwrap().clone();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(noise.offset + 65_536 + 10) as usize] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (report, _) = load_all(&path, true);
    for (request, (name, _)) in report.requests.iter().zip(&assets) {
        match (&request.status, *name == "noise.bin") {
            (RequestStatus::Failed(err), true) => {
                assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
                assert_eq!(err.tile(), Some(1), "{err}");
            }
            (RequestStatus::Done, false) => {}
            (status, _) => panic!("{name}: {status:?}"),
        }
    }
    // Without verification the damage goes through, as for compressed assets.
    let (report, _) = load_all(&path, false);
    assert!(report.all_done());
}

/// An archive unpacks into files through the engine, in windows (here of two tiles, so the
/// larger assets span several): every asset byte-exact, the empty one an empty file, nested
/// names as directories; a damaged tile fails its window naming the asset, the rest land; a
/// name that would leave the output directory is refused.
#[test]
fn archives_unpack_into_files_window_by_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut assets = sample();
    assets.push(("big/noise-raw.bin", pattern(300_001, 9)));
    let path = pack(dir.path(), &assets);
    let archive = Archive::open(&path).unwrap();
    assert_eq!(archive.find("big/noise-raw.bin").unwrap().codec, Codec::Raw);
    let all: Vec<_> = archive.assets.iter().collect();
    let out = dir.path().join("out");
    let executor = executor(2);
    let requests = dsr::archive::unpack_requests(&archive, &all, &out, true, 2 << 16).unwrap();
    assert!(requests.len() >= 8, "windows: {}", requests.len());
    let mut batch = executor.batch();
    for request in requests {
        batch.push(request).unwrap();
    }
    let report = executor.submit(batch).unwrap().wait();
    assert!(report.all_done(), "{report:?}");
    for (name, bytes) in &assets {
        assert!(std::fs::read(out.join(name)).unwrap() == *bytes, "{name}");
    }
    drop(archive);

    // A flipped byte in the raw asset's third tile: that window fails, by its hash.
    let archive = Archive::open(&path).unwrap();
    let raw = archive.find("big/noise-raw.bin").unwrap().clone();
    drop(archive);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(raw.offset + 2 * 65536 + 5) as usize] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let archive = Archive::open(&path).unwrap();
    let all: Vec<_> = archive.assets.iter().collect();
    let requests = dsr::archive::unpack_requests(&archive, &all, &out, true, 2 << 16).unwrap();
    let mut batch = executor.batch();
    for request in requests {
        batch.push(request).unwrap();
    }
    let report = executor.submit(batch).unwrap().wait();
    let failed: Vec<_> = report
        .requests
        .iter()
        .filter_map(|r| match &r.status {
            RequestStatus::Failed(err) => Some((r.name.clone().unwrap(), err.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "big/noise-raw.bin@2", "{failed:?}");
    assert_eq!(failed[0].1.kind(), ErrorKind::Corrupt);
    assert_eq!(failed[0].1.tile(), Some(0), "the window's first tile");

    for name in ["../escape", "/etc/passwd", "a//b", "a/./b", "a/../../b"] {
        let err = dsr::archive::unpack_path(&out, name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{name}: {err}");
    }
    assert_eq!(
        dsr::archive::unpack_path(&out, "maps/one.map").unwrap(),
        out.join("maps/one.map")
    );
}

/// Packing files streams them through the engine in 16 MiB windows (small assets sharing one,
/// large ones spanning several, one ending raw after its tiles were written compressed), and
/// stores every asset as packing its bytes from memory does: the same table of contents and
/// the same stored bytes, which load back byte-exact with every tile hash checked.
#[test]
fn packing_files_streams_and_stores_what_packing_bytes_stores() {
    let dir = tempfile::tempdir().unwrap();
    let text = |len: usize, seed: u8| -> Vec<u8> {
        (0..len)
            .map(|i| b"streamed pack windows "[i % 22] ^ ((i % 4099 == 0) as u8 * seed))
            .collect()
    };
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("small/a.txt", text(70_000, 1)),
        ("small/empty", Vec::new()),
        ("small/noise", pattern(100_000, 2)),
        // Starts part way into the first window and ends in the second: compressed, spanning.
        ("big/text", text(20 << 20, 3)),
        ("big/one-byte", vec![7]),
        // Three windows of noise: written compressed window by window, then copied raw.
        ("big/noise", pattern((40 << 20) + 12_345, 4)),
        ("tail.txt", text(1_000, 5)),
    ];
    let inputs: Vec<(String, std::path::PathBuf)> = files
        .iter()
        .map(|(name, bytes)| {
            let path = dir.path().join(name.replace('/', "_"));
            std::fs::write(&path, bytes).unwrap();
            (name.to_string(), path)
        })
        .collect();
    let from_memory = pack(dir.path(), &files);
    let streamed = dir.path().join("streamed.pak");
    let mut writer = ArchiveWriter::create(&streamed, Level::FASTEST).unwrap();
    let mut heard = std::collections::HashMap::<String, u64>::new();
    writer
        .add_files(&executor(2), &inputs, |name, bytes| {
            *heard.entry(name.to_owned()).or_default() += bytes
        })
        .unwrap();
    let written = writer.finish().unwrap();
    for (name, bytes) in &files {
        assert_eq!(
            heard.get(*name).copied().unwrap_or(0),
            bytes.len() as u64,
            "progress of {name}"
        );
    }
    let (a, b) = (Archive::open(&from_memory).unwrap(), Archive::open(&streamed).unwrap());
    assert_eq!(a.assets, b.assets, "the same table of contents");
    assert_eq!(b.assets, written);
    let codec = |name: &str| b.find(name).unwrap().codec;
    assert_eq!(codec("big/text"), Codec::GDeflate);
    assert_eq!(codec("big/noise"), Codec::Raw);
    assert_eq!(codec("small/noise"), Codec::Raw);
    use std::os::unix::fs::FileExt;
    for asset in &b.assets {
        let stored = |archive: &Archive| {
            let mut bytes = vec![0u8; asset.stored_len as usize];
            archive.file.read_exact_at(&mut bytes, asset.offset).unwrap();
            bytes
        };
        assert!(stored(&a) == stored(&b), "{}: the same stored bytes", asset.name);
    }
    let (report, contents) = load_all(&streamed, true);
    assert!(report.first_failure().is_none(), "{:?}", report.first_failure());
    for ((name, bytes), got) in files.iter().zip(&contents) {
        assert!(bytes == got, "{name} loads byte-exact");
    }
}

/// A file that cannot be read, and a name given twice, fail the pack with the file named.
#[test]
fn packing_files_refuses_missing_files_and_repeated_names() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::write(&real, b"bytes").unwrap();
    let mut writer = ArchiveWriter::create(&dir.path().join("x.pak"), Level::FASTEST).unwrap();
    let missing = dir.path().join("missing");
    let err = writer
        .add_files(
            &executor(1),
            &[("a".into(), real.clone()), ("b".into(), missing)],
            |_, _| {},
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    let err = writer
        .add_files(
            &executor(1),
            &[("a".into(), real.clone()), ("a".into(), real)],
            |_, _| {},
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{err}");
}
