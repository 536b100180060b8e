//! Any bytes as one GDeflate tile (two bytes of output size, then the tile), decoded by dsr's
//! GPU decoder on the default Vulkan device (lavapipe here) between two good tiles in one
//! dispatch, and by the CPU decoder: the same verdict, the same bytes where both succeed, the
//! neighbours intact, and not one validation-layer message. A GPU fault or device loss fails the
//! run (the decode returns an error).
#![no_main]
use std::sync::{Arc, OnceLock};

use dsr::gpu::{DecodeRun, Form, GpuConfig, GpuContext, GpuDecoder, TileJob};
use libfuzzer_sys::fuzz_target;

struct Setup {
    context: Arc<GpuContext>,
    decoder: GpuDecoder,
    good: Vec<u8>,
    good_out: Vec<u8>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = GpuConfig {
            validation: true,
            ..GpuConfig::from_env()
        };
        let context = GpuContext::new(&config).expect("a validating Vulkan device");
        let decoder = GpuDecoder::new(&context, Some(Form::Shared)).expect("the shared-memory decoder");
        let good_out: Vec<u8> = (0..65536u32)
            .map(|i| b"neighbour tile "[(i % 15) as usize] ^ (i % 97 == 0) as u8)
            .collect();
        let mut good = Vec::new();
        dsr_gdeflate::Encoder::new(dsr_gdeflate::Level::new(4)).encode_tile(&good_out, &mut good);
        Setup {
            context,
            decoder,
            good,
            good_out,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let setup = setup();
    let dst_len = u16::from_le_bytes([data[0], data[1]]) as usize + 1;
    let tile = &data[2..];
    let mut cpu_out = vec![0u8; dst_len];
    let cpu = dsr_gdeflate::Decoder::new().decode_tile(tile, &mut cpu_out);
    // Good tile, the fuzzed tile, good tile: inputs at 4-byte multiples, outputs too.
    let mut input = Vec::new();
    let mut jobs = Vec::new();
    let mut out_at = 0u64;
    for (bytes, len) in [(&setup.good[..], 65536), (tile, dst_len), (&setup.good[..], 65536)] {
        let src_offset = input.len() as u64;
        input.extend_from_slice(bytes);
        while input.len() % 4 != 0 {
            input.push(0);
        }
        jobs.push(TileJob {
            src_offset,
            src_len: bytes.len() as u32,
            dst_offset: out_at,
            dst_len: len as u32,
        });
        out_at += (len as u64).next_multiple_of(4);
    }
    let run = DecodeRun::new(&setup.decoder, &input, &jobs, out_at).expect("the tiles stage");
    run.decode(1).expect("the decode runs: no fault, no device loss");
    let statuses = run.statuses();
    let output = run.read_output().expect("the output reads back");
    assert_eq!(statuses[1].is_ok(), cpu.is_ok(), "GPU {:?}, CPU {cpu:?}", statuses[1]);
    if cpu.is_ok() {
        let at = jobs[1].dst_offset as usize;
        assert!(
            output[at..at + dst_len] == cpu_out[..],
            "the GPU decoded other bytes than the CPU"
        );
    }
    for k in [0, 2] {
        assert!(statuses[k].is_ok(), "a good neighbour failed: {:?}", statuses[k]);
        let at = jobs[k].dst_offset as usize;
        assert!(
            output[at..at + 65536] == setup.good_out[..],
            "a good neighbour's bytes changed"
        );
    }
    let messages = setup.context.validation_messages();
    assert!(messages.is_empty(), "validation: {messages:?}");
});
