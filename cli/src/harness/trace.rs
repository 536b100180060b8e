//! `dsr bench ... --trace FILE`: one timeline recorder for the whole bench. Every executor a
//! harness starts hears it ([`observe`]); work outside the engine (the codecs' runs, the peers'
//! runs) is recorded as spans on named tracks ([`span`]). Nothing is recorded unless the bench
//! [`install`]ed the recorder.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use dsr::viz::TraceRecorder;

static RECORDER: OnceLock<Arc<TraceRecorder>> = OnceLock::new();

/// The process's recorder, made on the first call (sized for as many workers as CPUs; events
/// of workers beyond share the last track).
pub fn install() -> Arc<TraceRecorder> {
    RECORDER
        .get_or_init(|| {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            Arc::new(TraceRecorder::new(cpus))
        })
        .clone()
}

/// `config` with the recorder as its observer, when installed (and no other observer is set).
pub fn observe(mut config: dsr::ExecutorConfig) -> dsr::ExecutorConfig {
    if let (Some(recorder), None) = (RECORDER.get(), &config.observer) {
        config.observer = Some(recorder.clone());
    }
    config
}

/// Records `name` on `track` from `start` until now, when installed.
pub fn span(track: &str, name: &str, start: Instant) {
    if let Some(recorder) = RECORDER.get() {
        recorder.span(track, name, start, Instant::now(), serde_json::Value::Null);
    }
}
