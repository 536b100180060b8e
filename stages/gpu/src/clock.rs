//! The GPU's timestamp clock placed on the CPU's (`VK_EXT_calibrated_timestamps`), so that GPU
//! work timed with timestamp queries can be drawn where it happened on a timeline of CPU events.
//!
//! A calibration is one `vkGetCalibratedTimestampsEXT` call sampling the device's clock and
//! `CLOCK_MONOTONIC` (the clock `std::time::Instant` reads on Linux) together; it is redone
//! when it is older than [`RECALIBRATE`], so the two clocks' drift stays negligible.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ash::vk;

/// How long a calibration is trusted.
const RECALIBRATE: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug)]
struct Calibration {
    /// The device clock's ticks...
    ticks: u64,
    /// ...at this moment on the CPU's clock.
    at: Instant,
}

/// The device clock and its calibration against the CPU's.
pub(crate) struct GpuClock {
    fns: ash::ext::calibrated_timestamps::Device,
    /// Nanoseconds per tick.
    period: f64,
    last: Mutex<Option<Calibration>>,
}

impl GpuClock {
    /// Whether `physical_device` can calibrate its clock against `CLOCK_MONOTONIC` (the
    /// extension is present and offers both domains).
    pub(crate) fn supported(
        entry: &ash::Entry,
        instance: &ash::Instance,
        physical_device: vk::PhysicalDevice,
        extension_present: bool,
    ) -> bool {
        if !extension_present {
            return false;
        }
        let fns = ash::ext::calibrated_timestamps::Instance::new(entry, instance);
        // SAFETY: a plain query of a live physical device, the extension being present.
        let domains =
            unsafe { fns.get_physical_device_calibrateable_time_domains(physical_device) }.unwrap_or_default();
        domains.contains(&vk::TimeDomainEXT::DEVICE) && domains.contains(&vk::TimeDomainEXT::CLOCK_MONOTONIC)
    }

    /// The clock of `device`, made with the extension enabled; `period` is the device's
    /// nanoseconds per tick.
    pub(crate) fn new(instance: &ash::Instance, device: &ash::Device, period: f32) -> GpuClock {
        GpuClock {
            fns: ash::ext::calibrated_timestamps::Device::new(instance, device),
            period: period as f64,
            last: Mutex::new(None),
        }
    }

    fn calibrate(&self) -> Option<Calibration> {
        let infos = [
            vk::CalibratedTimestampInfoEXT::default().time_domain(vk::TimeDomainEXT::DEVICE),
            vk::CalibratedTimestampInfoEXT::default().time_domain(vk::TimeDomainEXT::CLOCK_MONOTONIC),
        ];
        // SAFETY: the device was made with the extension enabled and both domains offered.
        let (stamps, _deviation) = unsafe { self.fns.get_calibrated_timestamps(&infos) }.ok()?;
        let (now, now_ns) = (Instant::now(), monotonic_ns()?);
        let at = now.checked_sub(Duration::from_nanos(now_ns.checked_sub(stamps[1])?))?;
        Some(Calibration { ticks: stamps[0], at })
    }

    /// The CPU-clock moment of a timestamp query's `ticks` (valid bits `mask`).
    pub(crate) fn instant(&self, ticks: u64, mask: u64) -> Option<Instant> {
        let calibration = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            match *last {
                Some(c) if c.at.elapsed() < RECALIBRATE => c,
                _ => {
                    let c = self.calibrate()?;
                    *last = Some(c);
                    c
                }
            }
        };
        let ahead = ticks.wrapping_sub(calibration.ticks) & mask;
        if ahead <= mask / 2 {
            calibration
                .at
                .checked_add(Duration::from_nanos((ahead as f64 * self.period) as u64))
        } else {
            let behind = calibration.ticks.wrapping_sub(ticks) & mask;
            calibration
                .at
                .checked_sub(Duration::from_nanos((behind as f64 * self.period) as u64))
        }
    }
}

fn monotonic_ns() -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
