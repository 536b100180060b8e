//! The DOT writer. Output is deterministic (nodes and clusters in id order) so it diffs well.

use std::fmt::Write;
use std::time::Duration;

use dsr_engine::{CompiledGraph, EdgeKind, NodeKind, NodeView, ResourceKind};

use crate::recorder::RunRecorder;

fn shape(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Read => "box",
        NodeKind::DecompressCpu => "hexagon",
        NodeKind::Upload => "invhouse",
        NodeKind::DecompressGpu => "doubleoctagon",
        NodeKind::Copy => "ellipse",
        NodeKind::Write => "house",
        NodeKind::Sync => "octagon",
        NodeKind::Verify => "note",
        NodeKind::Barrier => "diamond",
        NodeKind::Acquire => "cds",
        NodeKind::Release => "larrow",
    }
}

fn edge_style(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Cpu => "style=solid",
        EdgeKind::Gpu => "style=dashed, color=\"#7b3294\", penwidth=2",
    }
}

/// Escapes text for a double-quoted DOT string.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Bytes in a short human form (binary units).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn human_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn node_label(graph: &CompiledGraph, node: &NodeView) -> String {
    let mut label = format!("{} #{}", node.kind, node.id.index());
    if let Some(src) = node.src {
        let from = match graph.resource_kind(src.resource) {
            Some(ResourceKind::File) => "file",
            Some(ResourceKind::Memory) => "memory",
            Some(ResourceKind::Scratch) => "scratch",
            Some(ResourceKind::Device) => "gpu",
            Some(ResourceKind::Host) | None => "?",
        };
        let _ = write!(label, "\n{from} @{} +{}", src.offset, human_bytes(node.src_len));
    }
    if let Some(dst) = node.dst {
        let to = match graph.resource_kind(dst.resource) {
            Some(ResourceKind::Host) => "host",
            Some(ResourceKind::Device) => "gpu",
            Some(ResourceKind::Scratch) => "scratch",
            _ => "?",
        };
        let _ = write!(label, "\n→ {to} @{} +{}", dst.offset, human_bytes(node.len));
    }
    label
}

fn request_label(graph: &CompiledGraph, index: usize) -> String {
    let info = &graph.requests()[index];
    let mut label = match &info.name {
        Some(name) => format!("request {index}: {name}"),
        None => format!("request {index}"),
    };
    let _ = write!(label, " ({}, {:?}", human_bytes(info.bytes), info.priority);
    if info.tag != 0 {
        let _ = write!(label, ", tag {:#x}", info.tag);
    }
    label.push(')');
    label
}

/// How a node is drawn in a run picture.
struct RunStyle {
    fill: &'static str,
    extra: String,
}

fn write_graph(graph: &CompiledGraph, title: &str, style: impl Fn(&NodeView) -> Option<RunStyle>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"dsr_batch_{}\" {{", graph.id());
    let _ = writeln!(out, "  label=\"{}\";", escape(title));
    out.push_str("  labelloc=t;\n  rankdir=LR;\n  compound=true;\n");
    out.push_str("  node [fontname=\"Helvetica\", fontsize=10, style=filled, fillcolor=white];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");

    for (request, _) in graph.requests().iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster_r{request} {{");
        let _ = writeln!(out, "    label=\"{}\";", escape(&request_label(graph, request)));
        out.push_str("    style=rounded;\n    color=\"#888888\";\n");
        for &id in graph.request_nodes(dsr_engine::RequestId::from_index(request)) {
            let node = graph.node(id);
            let mut label = node_label(graph, &node);
            let mut fill = "white";
            if let Some(run) = style(&node) {
                fill = run.fill;
                label.push_str(&run.extra);
            }
            let _ = writeln!(
                out,
                "    n{} [shape={}, label=\"{}\", fillcolor=\"{}\"];",
                id.index(),
                shape(node.kind),
                escape(&label),
                fill
            );
        }
        out.push_str("  }\n");
    }
    for (from, to, kind) in graph.edges() {
        let _ = writeln!(out, "  n{} -> n{} [{}];", from.index(), to.index(), edge_style(kind));
    }
    out.push_str("}\n");
    out
}

/// The planned graph: what will run, before it runs.
pub fn plan_dot(graph: &CompiledGraph) -> String {
    let title = format!(
        "dsr batch {}: {} requests, {} nodes, {} edges (plan)",
        graph.id(),
        graph.requests().len(),
        graph.node_count(),
        graph.edge_count()
    );
    write_graph(graph, &title, |_| None)
}

/// The graph after (or during) a run: green done, red failed, grey skipped or cut short by a
/// cancellation, yellow running, white not started; with durations and bytes from `recorder`
/// when given. The state word cannot tell a deferred node that its completion source cut short
/// from one that finished (both ran), so the recorder's [`NodeEnd`](dsr_engine::NodeEnd) decides
/// where there is one.
pub fn run_dot(graph: &CompiledGraph, recorder: Option<&RunRecorder>) -> String {
    use dsr_engine::NodeEnd;
    let title = format!(
        "dsr batch {}: {} requests, {} nodes (run)",
        graph.id(),
        graph.requests().len(),
        graph.node_count()
    );
    write_graph(graph, &title, |node| {
        let state = node.state;
        let run = recorder.and_then(|r| r.get(graph.id(), node.id));
        let (fill, verdict) = match run.as_ref().map(|run| &run.end) {
            Some(NodeEnd::Failed(_)) => ("#f4a6a6", "failed"),
            Some(NodeEnd::Skipped) => ("#c8c8c8", "skipped"),
            Some(NodeEnd::Cancelled) => ("#c8c8c8", "cut short"),
            Some(NodeEnd::Done { .. }) => ("#a6dba0", "done"),
            None if state.is_failed() => ("#f4a6a6", "failed"),
            None if state.skipped() => ("#c8c8c8", "skipped"),
            None if state.is_done() => ("#a6dba0", "done"),
            None if state.has(dsr_engine::state::RUNNING) => ("#fff2a8", "running"),
            None => ("white", "not finished"),
        };
        let mut extra = format!("\n{verdict}");
        if let Some(run) = run {
            if let Some(d) = run.duration() {
                let _ = write!(extra, " in {}", human_duration(d));
            }
            if let NodeEnd::Done { bytes } = run.end {
                let _ = write!(extra, ", {}", human_bytes(bytes));
            }
            if let Some(worker) = run.worker {
                let _ = write!(extra, " (worker {worker})");
            }
            if let Some(gpu) = run.gpu {
                let _ = write!(extra, "\nGPU {}", human_duration(gpu));
            }
        }
        Some(RunStyle { fill, extra })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_dot_strings_closed() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
    }
}
