#!/usr/bin/env bash
# dsr load vs cat on the same file from a warm page cache, alternating runs, medians.
#
#   [DSR_WORKERS=N] benches/load-vs-cat.sh [FILE] [RUNS]
#
# FILE defaults to a 1 GiB file of random bytes created under ${TMPDIR:-/tmp}. Both sides read
# the whole file; dsr lands it in a pre-faulted host buffer (page faults are not I/O), cat writes
# it to /dev/null. dsr reads with --io buffered: through the page cache, as cat does. Prints one JSON line: dsr_gbps, cat_gbps, ratio (medians), runs, workers.
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-}
runs=${2:-7}
if [ -z "$file" ]; then
  file=${TMPDIR:-/tmp}/dsr-bench-1g.bin
  [ -f "$file" ] && [ "$(stat -c %s "$file")" -eq $((1 << 30)) ] ||
    head -c $((1 << 30)) /dev/urandom >"$file"
fi
cargo build --release --quiet --bin dsr
dsr=target/release/dsr
workers_arg=()
[ -n "${DSR_WORKERS:-}" ] && workers_arg=(--workers "$DSR_WORKERS")
bytes=$(stat -c %s "$file")
cat "$file" >/dev/null # warm the page cache
dsr_runs=() cat_runs=()
for _ in $(seq "$runs"); do
  dsr_runs+=("$("$dsr" load "$file" --io buffered "${workers_arg[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["median_gbps"])')")
  start=$(date +%s%N)
  cat "$file" >/dev/null
  end=$(date +%s%N)
  cat_runs+=("$(python3 -c "print($bytes / (($end - $start) / 1e9) / 1e9)")")
done
python3 - "${dsr_runs[*]}" "${cat_runs[*]}" "$("$dsr" load "$file" "${workers_arg[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["workers"])')" <<'PY'
import json, statistics, sys
dsr = [float(x) for x in sys.argv[1].split()]
cat = [float(x) for x in sys.argv[2].split()]
d, c = statistics.median(dsr), statistics.median(cat)
print(json.dumps({"dsr_gbps": round(d, 3), "cat_gbps": round(c, 3), "ratio": round(d / c, 3),
                  "runs": len(dsr), "workers": int(sys.argv[3]),
                  "dsr_all": [round(x, 2) for x in dsr], "cat_all": [round(x, 2) for x in cat]}))
PY
