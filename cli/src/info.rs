//! `dsr info`: the I/O backend in use and what it can do, and the Vulkan device GPU destinations
//! would use.

use std::path::PathBuf;

use clap::Args;
use dsr::stages::io::open::probe_direct;
use serde_json::json;

use super::{CliResult, EngineArgs};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Directories whose file systems to test for direct I/O (default: the current directory
    /// and the temporary directory).
    #[arg(long = "probe", value_name = "DIR")]
    probes: Vec<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

pub fn run(args: InfoArgs) -> CliResult {
    let (executor, io) = args.engine.executor(args.engine.config())?;
    let mut dirs = args.probes.clone();
    if dirs.is_empty() {
        dirs.push(std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")));
        dirs.push(std::env::temp_dir());
    }
    let direct: Vec<_> = dirs
        .iter()
        .map(|dir| {
            let (works, fs) = probe_direct(dir);
            let rotational = std::fs::File::open(dir)
                .is_ok_and(|d| dsr::stages::io::residency::on_rotational_disk(std::os::fd::AsRawFd::as_raw_fd(&d)));
            json!({"dir": dir, "file_system": fs, "direct_io": works, "rotational": rotational})
        })
        .collect();
    let ring = io.ring.as_ref().map(|ring| {
        // Staging is registered on first use; `info` asks for it now to say whether it works.
        ring.prepare_staging();
        let f = ring.features();
        json!({
            "fixed_buffers": f.fixed_buffers,
            "staging_slots": ring.staging().slots(),
            "staging_slot_bytes": ring.staging().slot_size(),
            "registered_files": f.registered_files,
            "async_cancel": f.async_cancel,
            "sqpoll": f.sqpoll,
        })
    });
    let gpu = dsr::gpu::GpuContext::new(&dsr::gpu::GpuConfig::from_env());
    // Where file bytes bound for the GPU are copied from.
    let staging = |context: &dsr::gpu::GpuContext| {
        if context.host_import() {
            "imported scratch (reads land where the GPU copies from; small pieces and memory sources copy into host-visible staging)"
        } else {
            "host-visible copy"
        }
    };
    // GDeflate decoding on the GPU: dsr's shader (its form), the driver's extension if enabled.
    let gpu_decoder = |context: &std::sync::Arc<dsr::gpu::GpuContext>| match dsr::gpu::GpuDecoder::new(context, None) {
        Ok(decoder) => format!("dsr shader ({} form)", decoder.form().name()),
        Err(err) => format!("none ({err})"),
    };
    let vulkan = gpu.as_ref().ok().map(|context| {
        let info = context.info();
        json!({
            "gdeflate_decoder": gpu_decoder(context),
            "nv_memory_decompression_enabled": context.nv_decompression(),
            "device": info.name,
            "type": info.kind,
            "driver": info.driver,
            "api_version": info.api_version,
            "queue_families": info.queue_families.iter().map(|(flags, count)| json!({"flags": flags, "queues": count})).collect::<Vec<_>>(),
            "transfer_family": info.transfer_family,
            "compute_family": info.compute_family,
            "subgroup_size": info.subgroup_size,
            "external_memory_host": info.external_memory_host,
            "memory_decompression": info.memory_decompression,
            "staging": staging(context),
            "gpu_timestamps": info.transfer_timestamps.is_some(),
            "calibrated_timestamps": context.calibrated_timestamps(),
        })
    });
    let doc = json!({
        "backend": super::backend_name(&io),
        "reason": io.reason,
        "kernel": kernel(),
        "workers": executor.workers(),
        "io_uring": ring,
        "direct_io": direct,
        "page_cache_probe": dsr::stages::io::residency::probe().name(),
        "vulkan": vulkan,
        "vulkan_error": gpu.as_ref().err().map(ToString::to_string),
    });
    if args.json {
        println!("{doc}");
        return Ok(());
    }
    println!("read backend: {} (kernel {})", super::backend_name(&io), kernel());
    if let Some(reason) = &io.reason {
        println!("  {reason}");
    }
    println!(
        "  --io auto reads ranges mostly in the page cache through it (probe: {}), and files on rotational disks; others with direct I/O",
        dsr::stages::io::residency::probe().name()
    );
    if let Some(ring) = &io.ring {
        ring.prepare_staging();
        let f = ring.features();
        println!(
            "  fixed buffers: {} ({} staging slots of {} KiB)",
            f.fixed_buffers,
            ring.staging().slots(),
            ring.staging().slot_size() >> 10
        );
        println!("  registered files: {}", f.registered_files);
        println!("  async cancel: {}", f.async_cancel);
        println!("  SQPOLL: {} (not used: it spends a core polling)", f.sqpoll);
    }
    println!("workers: {}", executor.workers());
    match &gpu {
        Ok(context) => {
            let info = context.info();
            println!(
                "vulkan: {} ({}), {}, Vulkan {}",
                info.name, info.kind, info.driver, info.api_version
            );
            println!(
                "  queues: transfer family {}, compute family {} of {:?}",
                info.transfer_family, info.compute_family, info.queue_families
            );
            println!(
                "  subgroup size {}; external memory host: {}; memory decompression: {}",
                info.subgroup_size,
                info.external_memory_host,
                info.memory_decompression.as_deref().unwrap_or("no")
            );
            println!(
                "  GDeflate on the GPU: {}; VK_NV_memory_decompression {}",
                gpu_decoder(context),
                if context.nv_decompression() {
                    "enabled (off by default; DSR_GPU_DECODER=auto for trusted data only: it lost an H100 on garbage tiles)"
                } else {
                    "not enabled"
                }
            );
            println!("  staging: {}", staging(context));
        }
        Err(err) => println!("vulkan: none ({err})"),
    }
    for d in &direct {
        println!(
            "direct I/O in {}: {} ({}{})",
            d["dir"].as_str().unwrap_or("?"),
            if d["direct_io"] == true { "yes" } else { "no" },
            d["file_system"].as_str().unwrap_or("?"),
            if d["rotational"] == true {
                ", a rotational disk: --io auto reads through the page cache"
            } else {
                ""
            }
        );
    }
    Ok(())
}
