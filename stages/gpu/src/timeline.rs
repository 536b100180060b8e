//! The upload timeline's watcher: a thread that blocks in `vkWaitSemaphores` for the oldest
//! value in flight and signals an eventfd when the GPU reaches it, so a worker waiting on the
//! io_uring ring and the GPU at once (`Reactor::arm`) wakes for whichever completes first.

use std::sync::{Arc, Condvar, Mutex};

use ash::vk;
use dsr_engine::EventFd;

use crate::context::GpuContext;

/// What the timeline thread waits for, and how it is told to stop.
#[derive(Default)]
pub(crate) struct Watch {
    pub state: Mutex<WatchState>,
    pub changed: Condvar,
}

#[derive(Default)]
pub(crate) struct WatchState {
    /// The timeline value to wait for: the oldest submission's, until it is signalled.
    pub want: Option<u64>,
    pub shutdown: bool,
}

impl Watch {
    pub fn set(&self, want: Option<u64>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).want = want;
        self.changed.notify_one();
    }
}

/// The timeline thread: waits on the GPU for `watch`'s value and signals `ready` when reached.
/// It holds the context (so the device outlives it) but not the uploader, which joins it
/// before destroying the semaphore.
pub(crate) fn watch_timeline(
    context: Arc<GpuContext>,
    timeline: vk::Semaphore,
    watch: Arc<Watch>,
    ready: Arc<EventFd>,
) {
    loop {
        let value = {
            let mut state = watch.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if state.shutdown {
                    return;
                }
                if let Some(value) = state.want {
                    break value;
                }
                state = watch.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        let semaphores = [timeline];
        let values = [value];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&semaphores).values(&values);
        // SAFETY: the semaphore lives until the uploader has joined this thread; the wait is
        // bounded, so a shutdown is seen within 50 ms.
        match unsafe { context.device().wait_semaphores(&info, 50_000_000) } {
            Err(vk::Result::TIMEOUT) => {}
            result => {
                if let Err(r) = result {
                    context.check(r, "cannot wait for the upload timeline");
                }
                ready.signal();
                let mut state = watch.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.want == Some(value) {
                    state.want = None;
                }
            }
        }
    }
}
