//! Which GPU decoder runs a submission: dsr's shader or the driver's
//! `VK_NV_memory_decompression`, chosen by what each measured on this device for submissions
//! of about the same size.
//!
//! Neither is faster everywhere: on an H100 the driver's decoder won below about 64 MiB a
//! submission and the shader above (docs/benchmarks.md), and another GPU or driver may differ.
//! So the stage times every submission (GPU timestamps) and keeps, per size class (powers of
//! two of tiles), a running cost per byte for each decoder. A class tries each decoder twice
//! before trusting the figures, then takes the cheaper one, and re-tries the other every
//! [`EXPLORE_EVERY`]th submission so a change in conditions is noticed.
//!
//! The stage consults it only when asked to (`GpuDecodeConfig::decoder` `None`): the driver's
//! decoder lost the device on garbage tiles and hung on zeroed ones on an H100, so it is for
//! trusted data only.

use std::time::Duration;

/// A GPU decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeBackend {
    /// dsr's shader (`shaders/gdeflate.comp`).
    Shader,
    /// The driver's `VK_NV_memory_decompression`.
    Nv,
}

/// Size classes: tiles per submission, by powers of two (the last holds everything larger).
const CLASSES: usize = 16;
/// Samples of each decoder a class takes before it trusts its figures.
const WARM_UP: u32 = 2;
/// Once warmed up, every this-many submissions of a class go to the decoder not in favour.
pub(crate) const EXPLORE_EVERY: u32 = 32;
/// Weight of a new sample in the running cost.
const WEIGHT: f64 = 0.25;

#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    /// Nanoseconds of GPU time per byte of output, running average.
    ns_per_byte: f64,
    samples: u32,
}

/// The running costs and the choice (see the module comment).
#[derive(Debug, Default)]
pub(crate) struct Chooser {
    costs: [[Cost; 2]; CLASSES],
    picks: [u32; CLASSES],
}

fn class(tiles: usize) -> usize {
    (tiles.max(1).ilog2() as usize).min(CLASSES - 1)
}

fn index(decoder: DecodeBackend) -> usize {
    match decoder {
        DecodeBackend::Shader => 0,
        DecodeBackend::Nv => 1,
    }
}

impl Chooser {
    /// The decoder for a submission of `tiles` tiles that either could run.
    pub(crate) fn pick(&mut self, tiles: usize) -> DecodeBackend {
        let c = class(tiles);
        let [shader, nv] = self.costs[c];
        self.picks[c] = self.picks[c].wrapping_add(1);
        if shader.samples < WARM_UP || nv.samples < WARM_UP {
            return if nv.samples < shader.samples {
                DecodeBackend::Nv
            } else {
                DecodeBackend::Shader
            };
        }
        let favoured = if nv.ns_per_byte < shader.ns_per_byte {
            DecodeBackend::Nv
        } else {
            DecodeBackend::Shader
        };
        match self.picks[c] % EXPLORE_EVERY {
            0 => match favoured {
                DecodeBackend::Nv => DecodeBackend::Shader,
                DecodeBackend::Shader => DecodeBackend::Nv,
            },
            _ => favoured,
        }
    }

    /// A submission of `tiles` tiles and `bytes` of output took `gpu` on `decoder`.
    pub(crate) fn record(&mut self, tiles: usize, bytes: u64, decoder: DecodeBackend, gpu: Duration) {
        if bytes == 0 {
            return;
        }
        let cost = &mut self.costs[class(tiles)][index(decoder)];
        let sample = gpu.as_nanos() as f64 / bytes as f64;
        cost.ns_per_byte = match cost.samples {
            0 => sample,
            _ => cost.ns_per_byte + WEIGHT * (sample - cost.ns_per_byte),
        };
        cost.samples = cost.samples.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` submissions of `tiles`, the decoders taking these times per MiB; the picks.
    fn run(chooser: &mut Chooser, tiles: usize, n: usize, shader_ms: f64, nv_ms: f64) -> Vec<DecodeBackend> {
        (0..n)
            .map(|_| {
                let decoder = chooser.pick(tiles);
                let ms = match decoder {
                    DecodeBackend::Shader => shader_ms,
                    DecodeBackend::Nv => nv_ms,
                };
                chooser.record(tiles, 1 << 20, decoder, Duration::from_secs_f64(ms / 1e3));
                decoder
            })
            .collect()
    }

    #[test]
    fn tries_both_then_keeps_the_faster_and_now_and_then_checks_the_other() {
        let mut chooser = Chooser::default();
        let picks = run(&mut chooser, 100, 200, 3.0, 1.0);
        let warm = &picks[..4];
        assert_eq!(warm.iter().filter(|&&d| d == DecodeBackend::Nv).count(), 2, "{warm:?}");
        let later = &picks[4..];
        let shader = later.iter().filter(|&&d| d == DecodeBackend::Shader).count();
        assert!(
            shader >= 1 && shader <= later.len() / 16,
            "explored {shader} of {}",
            later.len()
        );
    }

    #[test]
    fn each_size_class_learns_on_its_own() {
        let mut chooser = Chooser::default();
        run(&mut chooser, 64, 50, 3.0, 1.0);
        run(&mut chooser, 4096, 50, 1.0, 3.0);
        assert_eq!(chooser.pick(70), DecodeBackend::Nv);
        assert_eq!(chooser.pick(5000), DecodeBackend::Shader);
        // A class never measured starts by trying both.
        let fresh = (0..4).map(|_| chooser.pick(1)).collect::<Vec<_>>();
        assert_eq!(fresh[0], DecodeBackend::Shader, "{fresh:?}");
    }

    #[test]
    fn follows_a_change_of_conditions() {
        let mut chooser = Chooser::default();
        run(&mut chooser, 512, 100, 3.0, 1.0);
        assert_eq!(chooser.pick(512), DecodeBackend::Nv);
        // The driver's decoder becomes the slow one: exploration notices within a few rounds.
        let picks = run(&mut chooser, 512, 6 * EXPLORE_EVERY as usize, 1.0, 3.0);
        assert_eq!(picks.last(), Some(&DecodeBackend::Shader));
    }
}
