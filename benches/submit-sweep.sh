#!/usr/bin/env bash
# The submit path by worker count, builds alternating: `dsr bench submit --json --workers W`
# for each build directory (a `dsr` with its `libdsr.so` beside it), ROUNDS rounds; then the
# medians per build and worker count (submitting-thread CPU per request, requests per second).
# Usage: benches/submit-sweep.sh ROUNDS "1 4 16" BUILD_DIR...
set -eu
rounds=${1:?usage: benches/submit-sweep.sh ROUNDS WORKERS BUILD_DIR...}
workers=${2:?usage: benches/submit-sweep.sh ROUNDS WORKERS BUILD_DIR...}
shift 2
runs=$(mktemp); trap 'rm -f "$runs"' EXIT
for round in $(seq 1 "$rounds"); do
  for w in $workers; do
    for build in "$@"; do
      echo "$w $build $("$build/dsr" bench submit --json --workers "$w" --runs 5 | tail -1)" >> "$runs"
    done
  done
done
python3 - "$runs" <<'PY'
import collections, json, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    w, build, doc = line.split(" ", 2)
    rows[(int(w), build)].append(json.loads(doc))
for (w, build), docs in sorted(rows.items()):
    med = lambda key: statistics.median(d[key] for d in docs if d.get(key) is not None)
    distinct = (f", Rust queue with per-request buffers {med('rust_distinct_submit_cpu_ns_per_req'):.0f} ns"
                if any(d.get('rust_distinct_submit_cpu_ns_per_req') for d in docs) else "")
    print(f"workers {w:>2}  {build}: batch {med('batch_submit_cpu_ns_per_req'):.0f} ns, "
          f"Rust queue {med('submit_cpu_ns_per_req'):.0f} ns{distinct}, C ABI {med('c_submit_cpu_ns_per_req'):.0f} ns per request; "
          f"{med('rust_req_per_s')/1e3:.0f}k / {med('c_req_per_s')/1e3:.0f}k / {med('batch_req_per_s')/1e3:.0f}k requests/s "
          f"(queue / C / batch), {len(docs)} rounds")
PY
