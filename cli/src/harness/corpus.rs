//! The mixed corpus the codec benchmarks run on: what a game ships, in proportions.
//!
//! | share | what | from |
//! |---|---|---|
//! | 30 % | text (scripts, configs) | generated from a word list |
//! | 30 % | machine code | `/usr/bin` executables (the running `dsr` binary if none) |
//! | 15 % | already-compressed media | `.gz` files under `/usr/share/doc` (random bytes if none) |
//! | 10 % | noise | random bytes |
//! | 15 % | zeros | padding, empty mip levels |
//!
//! Segments are interleaved in 256 KiB pieces. The same seed and machine give the same bytes.

use std::path::{Path, PathBuf};

const PIECE: usize = 256 << 10;

fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() && depth > 0 {
            files_under(&path, keep, out, depth - 1);
        } else if path.is_file() && keep(&path) {
            out.push(path);
        }
    }
}

/// Reads files in order until `want` bytes are gathered.
fn gather(paths: &[PathBuf], want: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(want);
    for path in paths {
        if bytes.len() >= want {
            break;
        }
        if let Ok(content) = std::fs::read(path) {
            bytes.extend_from_slice(&content[..content.len().min(want - bytes.len())]);
        }
    }
    bytes
}

fn text(rng: &mut fastrand::Rng, want: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "spawn", "player", "light", "texture", "mesh", "level", "door", "trigger", "enemy", "health", "0.25", "true",
        "false", "position", "rotation", "scale", "{", "}", "=", "material", "shader", "sound", "volume", "the",
        "quest", "dialogue", "if", "then", "end", "local", "function", "return", "nil", "and", "or",
    ];
    let mut out = Vec::with_capacity(want + 16);
    while out.len() < want {
        out.extend_from_slice(WORDS[rng.usize(..WORDS.len())].as_bytes());
        out.push(if rng.u8(..) < 24 { b'\n' } else { b' ' });
    }
    out.truncate(want);
    out
}

/// A mixed corpus of `size` bytes.
pub fn mixed(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut binaries = Vec::new();
    files_under(Path::new("/usr/bin"), &|_| true, &mut binaries, 0);
    let mut binary = gather(&binaries, size * 3 / 10);
    if binary.len() < size * 3 / 10 {
        if let Ok(exe) = std::env::current_exe().and_then(std::fs::read) {
            binary.extend(exe.iter().cycle().take(size * 3 / 10 - binary.len()));
        }
    }
    let mut gz = Vec::new();
    let is_gz = |p: &Path| p.extension().is_some_and(|e| e == "gz");
    files_under(Path::new("/usr/share/doc"), &is_gz, &mut gz, 2);
    let mut media = gather(&gz, size * 15 / 100);
    media.extend((media.len()..size * 15 / 100).map(|_| rng.u8(..)));
    let segments: Vec<(Vec<u8>, usize)> = vec![
        (text(&mut rng, size * 3 / 10), 0),
        (binary, 0),
        (media, 0),
        ((0..size / 10).map(|_| rng.u8(..)).collect(), 0),
        (vec![0u8; size * 15 / 100], 0),
    ];
    let mut segments = segments;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let before = out.len();
        for (bytes, at) in segments.iter_mut() {
            let take = PIECE.min(bytes.len() - *at).min(size - out.len());
            out.extend_from_slice(&bytes[*at..*at + take]);
            *at += take;
        }
        if out.len() == before {
            break;
        }
    }
    out.resize(size, 0);
    out
}
