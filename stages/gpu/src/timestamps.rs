//! Timestamp query pairs for timing submissions on one queue family: each submission takes a
//! pair, writes a timestamp at its start and its end, and hands the pair back once the GPU is
//! done with it (reading the two ticks first).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ash::vk;
use dsr_engine::{Error, GpuSpan};

use crate::context::{vk_error, GpuContext};

/// A pool of timestamp query pairs on one queue family.
pub(crate) struct QueryPairs {
    context: Arc<GpuContext>,
    pool: vk::QueryPool,
    /// Nanoseconds per tick.
    period: f32,
    /// Mask of a timestamp's valid bits.
    mask: u64,
    /// Pairs are reset on the host when handed back (and all at creation), so free pairs are
    /// ready to write; otherwise each submission resets its pair in its command buffer.
    reset_on_host: bool,
    free: Mutex<Vec<u32>>,
}

/// A submission's taken pair.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pair(u32);

impl QueryPairs {
    /// `pairs` pairs for submissions on `family`, or `None` where that family writes no
    /// timestamps (or cannot reset queries: a transfer-only family without host query reset).
    pub(crate) fn new(context: &Arc<GpuContext>, family: u32, pairs: u32) -> Result<Option<QueryPairs>, Error> {
        let instance = context.instance();
        // SAFETY: plain queries of the context's physical device.
        let (props, families) = unsafe {
            (
                instance.get_physical_device_properties(context.physical_device()),
                instance.get_physical_device_queue_family_properties(context.physical_device()),
            )
        };
        let Some(props_family) = families.get(family as usize) else {
            return Ok(None);
        };
        let bits = props_family.timestamp_valid_bits;
        let period = props.limits.timestamp_period;
        let reset_on_host = context.host_query_reset();
        let resets_in_cb = props_family
            .queue_flags
            .intersects(vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE);
        if bits == 0 || period <= 0.0 || !(reset_on_host || resets_in_cb) {
            return Ok(None);
        }
        let info = vk::QueryPoolCreateInfo::default()
            .query_type(vk::QueryType::TIMESTAMP)
            .query_count(2 * pairs);
        let device = context.device();
        // SAFETY: a valid create info; destroyed in `Drop`.
        let pool = unsafe { device.create_query_pool(&info, None) }
            .map_err(|r| vk_error(r, "cannot create a timestamp query pool"))?;
        if reset_on_host {
            // SAFETY: a new pool, used by no command yet; host query reset is enabled.
            unsafe { device.reset_query_pool(pool, 0, 2 * pairs) };
        }
        Ok(Some(QueryPairs {
            context: context.clone(),
            pool,
            period,
            mask: if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 },
            reset_on_host,
            free: Mutex::new((0..pairs).rev().collect()),
        }))
    }

    /// A free pair, if any (a submission goes untimed while every pair is held).
    pub(crate) fn take(&self) -> Option<Pair> {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).pop().map(Pair)
    }

    /// Records the start timestamp (resetting the pair first where the host does not).
    ///
    /// # Safety
    /// `cb` is recording on the pairs' family, outside a render pass; `pair` is held by this
    /// submission.
    pub(crate) unsafe fn start(&self, cb: vk::CommandBuffer, pair: Pair) {
        let device = self.context.device();
        // SAFETY: by the caller's premises.
        unsafe {
            if !self.reset_on_host {
                device.cmd_reset_query_pool(cb, self.pool, 2 * pair.0, 2);
            }
            device.cmd_write_timestamp(cb, vk::PipelineStageFlags::TOP_OF_PIPE, self.pool, 2 * pair.0);
        }
    }

    /// Records the end timestamp.
    ///
    /// # Safety
    /// As for [`QueryPairs::start`], after it in the same command buffer.
    pub(crate) unsafe fn end(&self, cb: vk::CommandBuffer, pair: Pair) {
        // SAFETY: by the caller's premises.
        unsafe {
            self.context.device().cmd_write_timestamp(
                cb,
                vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                self.pool,
                2 * pair.0 + 1,
            )
        }
    }

    /// The pair's two ticks, and hands it back. Call once the submission that wrote it has
    /// completed, or (`written` false) once it is known never to run.
    pub(crate) fn finish(&self, pair: Pair, written: bool) -> Option<[u64; 2]> {
        let mut ticks = [0u64; 2];
        let read = written.then(|| {
            // SAFETY: the pair's queries were written by a submission the GPU has finished,
            // and nothing resets them until the pair is handed back below.
            unsafe {
                self.context.device().get_query_pool_results(
                    self.pool,
                    2 * pair.0,
                    &mut ticks,
                    vk::QueryResultFlags::TYPE_64,
                )
            }
        });
        if self.reset_on_host {
            // SAFETY: no pending command buffer uses the pair (the caller's contract); the
            // device has `hostQueryReset` enabled.
            unsafe { self.context.device().reset_query_pool(self.pool, 2 * pair.0, 2) };
        }
        self.free.lock().unwrap_or_else(|p| p.into_inner()).push(pair.0);
        match read {
            Some(Ok(())) => Some(ticks.map(|t| t & self.mask)),
            _ => None,
        }
    }

    /// The span between two ticks of this family, on `queue`, placed on the CPU's clock where
    /// the device's is calibrated.
    pub(crate) fn span(&self, ticks: [u64; 2], queue: &'static str) -> GpuSpan {
        let elapsed = ticks[1].wrapping_sub(ticks[0]) & self.mask;
        GpuSpan {
            queue,
            start: self.context.gpu_instant(ticks[0], self.mask),
            duration: Duration::from_nanos((elapsed as f64 * self.period as f64) as u64),
        }
    }
}

impl Drop for QueryPairs {
    fn drop(&mut self) {
        // SAFETY: the pool's owner drops it only once no submission using it is pending.
        unsafe { self.context.device().destroy_query_pool(self.pool, None) };
    }
}
