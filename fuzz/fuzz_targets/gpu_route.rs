//! What `gpu_archive` and `gpu_tilestream` share: a validating Vulkan device (lavapipe here)
//! with a GPU executor, and the comparison of a batch decoded on the GPU route (into a GPU
//! buffer, read back) with the same batch on the CPU route (into host memory): the same verdict
//! per request, the same bytes where both are done, a good request beside them unharmed, and not
//! one validation-layer message. A GPU fault or device loss fails the good request.
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dsr::gpu::{GpuConfig, GpuContext, StagingConfig};
use dsr::{DecodeRoute, DeviceBuffer, ExecutorConfig, HostBuffer, Request, RequestStatus};

/// Output bytes a batch may hold at most (the fuzzed inputs' requests are clamped to it).
pub const ROOM: u64 = 4 << 20;
/// Where the good request lands, after the room.
const GOOD_AT: u64 = ROOM;
const PATIENCE: Duration = Duration::from_secs(60);

pub struct Setup {
    pub context: Arc<GpuContext>,
    pub executor: dsr::Executor,
    pub gpu: DeviceBuffer,
    good: Arc<[u8]>,
    good_plain: Vec<u8>,
}

pub fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = GpuConfig {
            validation: true,
            ..GpuConfig::from_env()
        };
        let context = GpuContext::new(&config).expect("a validating Vulkan device");
        let executor_config = ExecutorConfig {
            workers: 2,
            ..ExecutorConfig::default()
        };
        let (executor, _, _) =
            dsr::executor_with_gpu(executor_config, dsr::io_from_env(), &context, StagingConfig::default())
                .expect("a GPU executor");
        let good_plain: Vec<u8> = (0..100_000u32)
            .map(|i| b"a good neighbour "[(i % 17) as usize])
            .collect();
        let good = dsr_gdeflate::compress(&good_plain, dsr_gdeflate::Level::new(4))
            .expect("compresses")
            .into();
        let gpu = dsr::gpu::allocate_buffer(&context, ROOM + (1 << 20)).expect("a GPU buffer");
        Setup {
            context,
            executor,
            gpu,
            good,
            good_plain,
        }
    })
}

/// One request to compare: built for a destination and an offset in it.
pub type Make<'a> = &'a dyn Fn(&HostBuffer, u64) -> Request;

/// Runs `requests` (each with its output length and offset) on both routes and compares.
pub fn compare(requests: &[(Make<'_>, u64, u64)]) {
    let setup = setup();
    let executor = &setup.executor;
    let good_len = setup.good_plain.len() as u64;
    let good = |dest: &HostBuffer, at: u64| {
        Request::memory(setup.good.clone(), 0, setup.good.len() as u64, dest, at).gdeflate(good_len)
    };
    // The GPU route: into the GPU buffer, the good stream after them.
    let none = HostBuffer::new(0);
    let mut batch = executor.batch();
    // Which requests the batch took (lowering may refuse one, as it must on both routes).
    let mut gpu_taken = Vec::new();
    for (make, _, at) in requests {
        let pushed = batch.push(make(&none, *at).on_device(&setup.gpu, *at).decode_on(DecodeRoute::Gpu));
        gpu_taken.push(pushed.is_ok());
    }
    batch
        .push(
            good(&none, 0)
                .on_device(&setup.gpu, GOOD_AT)
                .decode_on(DecodeRoute::Gpu),
        )
        .expect("the good request lowers");
    let on_gpu = executor
        .submit(batch)
        .expect("submits")
        .wait_timeout(PATIENCE)
        .expect("the GPU batch drains");
    // The CPU route: into host memory.
    let mut host = HostBuffer::new((ROOM + (1 << 20)) as usize);
    let mut batch = executor.batch();
    let mut cpu_taken = Vec::new();
    for (make, _, at) in requests {
        cpu_taken.push(batch.push(make(&host, *at).decode_on(DecodeRoute::Cpu)).is_ok());
    }
    let on_cpu = executor
        .submit(batch)
        .expect("submits")
        .wait_timeout(PATIENCE)
        .expect("the CPU batch drains");
    assert_eq!(gpu_taken, cpu_taken, "the routes took different requests");
    let done = |report: &dsr::BatchReport, taken: &[bool]| -> Vec<Option<RequestStatus>> {
        let mut statuses = report.requests.iter().map(|r| r.status.clone());
        taken.iter().map(|&t| if t { statuses.next() } else { None }).collect()
    };
    let (gpu_statuses, cpu_statuses) = (done(&on_gpu, &gpu_taken), done(&on_cpu, &cpu_taken));
    let good_status = &on_gpu.requests.last().expect("the good request").status;
    assert_eq!(*good_status, RequestStatus::Done, "the good request beside them");
    let back = read_back(setup, ROOM + good_len);
    assert!(
        back[GOOD_AT as usize..][..good_len as usize] == setup.good_plain[..],
        "the good request's bytes"
    );
    let host = host.as_slice().expect("the host buffer is ours again");
    for (k, (_, len, at)) in requests.iter().enumerate() {
        let (gpu, cpu) = (&gpu_statuses[k], &cpu_statuses[k]);
        assert_eq!(
            matches!(gpu, Some(RequestStatus::Done)),
            matches!(cpu, Some(RequestStatus::Done)),
            "request {k}: GPU route {gpu:?}, CPU route {cpu:?}"
        );
        if matches!(gpu, Some(RequestStatus::Done)) {
            let range = *at as usize..(*at + *len) as usize;
            assert!(
                back[range.clone()] == host[range],
                "request {k}: the routes landed other bytes"
            );
        }
    }
    let messages = setup.context.validation_messages();
    assert!(messages.is_empty(), "validation: {messages:?}");
}

/// The GPU buffer's first `len` bytes.
fn read_back(setup: &Setup, len: u64) -> Vec<u8> {
    const PIECE: u64 = 256 << 10;
    let mut host = HostBuffer::new(len as usize);
    let mut batch = setup.executor.batch();
    for at in (0..len).step_by(PIECE as usize) {
        batch
            .push(Request::device_to_host(&setup.gpu, at, PIECE.min(len - at), &host, at))
            .expect("a read-back request");
    }
    let report = setup
        .executor
        .submit(batch)
        .expect("submits")
        .wait_timeout(PATIENCE)
        .expect("read-back drains");
    assert!(
        report.requests.iter().all(|r| r.status == RequestStatus::Done),
        "read-back failed"
    );
    host.as_slice().expect("the read-back buffer is ours").to_vec()
}
