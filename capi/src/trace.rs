//! `DSR_TRACE=PATH`: a timeline of what libdsr's engines ran, for a program that cannot pass
//! `--trace` (a game under Wine through the DLL, an engine in C). Every runtime made while the
//! variable is set records into one process-wide recorder, which is written to PATH as Chrome
//! trace-event JSON (Perfetto UI, chrome://tracing) whenever a queue or a runtime is destroyed:
//! the file then holds every run so far. Unset (the default), nothing is recorded.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use dsr_facade::viz::TraceRecorder;
use dsr_facade::Runtime;

struct Trace {
    path: PathBuf,
    recorder: Arc<TraceRecorder>,
}

fn trace() -> Option<&'static Trace> {
    static TRACE: OnceLock<Option<Trace>> = OnceLock::new();
    TRACE
        .get_or_init(|| {
            let path = std::env::var_os("DSR_TRACE").filter(|p| !p.is_empty())?;
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            Some(Trace {
                path: PathBuf::from(path),
                recorder: Arc::new(TraceRecorder::new(cpus)),
            })
        })
        .as_ref()
}

/// Has `runtime`'s engine record into the trace, when `DSR_TRACE` is set.
pub(crate) fn observe(runtime: &Runtime) {
    if let Some(trace) = trace() {
        // A runtime just made has no queue or file, so this cannot be refused.
        let _ = runtime.set_observer(trace.recorder.clone());
    }
}

/// Writes everything recorded so far, when `DSR_TRACE` is set. A failure is said on stderr
/// (the variable asked for the file) and changes nothing else.
pub(crate) fn write() {
    if let Some(trace) = trace() {
        let json = trace.recorder.chrome_json(|_, _| None).to_string();
        if let Err(err) = std::fs::write(&trace.path, json) {
            eprintln!(
                "libdsr: cannot write the trace DSR_TRACE names ({}): {err}",
                trace.path.display()
            );
        }
    }
}
