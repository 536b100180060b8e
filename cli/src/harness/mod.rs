//! Harnesses behind `dsr bench` (and `cargo bench`): each measures dsr and a peer doing the same
//! work in the same process, so every figure is a ratio taken on the same machine at the same
//! moment.

pub mod codec;
pub mod corpus;
pub mod decode_gpu;
pub mod exec;
pub mod libdsr;
pub mod read;
pub mod soak;
pub mod submit;
pub mod trace;
pub mod upload;

use std::time::Duration;

/// The median of some durations (the mean of the middle two for an even count).
pub fn median(samples: &mut [Duration]) -> Duration {
    assert!(!samples.is_empty(), "median of no samples");
    samples.sort_unstable();
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2
    }
}
