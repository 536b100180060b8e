#!/usr/bin/env bash
# What the DirectStorage-shaped queue adds to `dsr load`: the same files through one batch and
# through the queue (`--via`), invocations alternating, each with --repeat runs; medians of the
# per-invocation medians. Whole-process wall time is reported too (a user waits for the command).
# Usage: benches/queue-overhead.sh DSR_BINARY [INVOCATIONS] [FILE...]
# Without files: 2,000 files of 64 KiB (per-request cost dominates) and 4 of 64 MiB, made in a
# temporary directory and read warm (buffered) so the disk does not drown the difference.
set -eu
dsr=${1:?usage: benches/queue-overhead.sh DSR_BINARY [INVOCATIONS] [FILE...]}
n=${2:-7}
shift $(( $# < 2 ? $# : 2 ))
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
sets=()
if [ $# -gt 0 ]; then sets+=("$*"); else
  mkdir "$tmp/small" "$tmp/large"
  for i in $(seq 1 2000); do head -c 65536 /dev/urandom > "$tmp/small/$i"; done
  for i in 1 2 3 4; do head -c 67108864 /dev/urandom > "$tmp/large/$i"; done
  sets+=("$(ls -d "$tmp"/small/* | tr '\n' ' ')" "$(ls -d "$tmp"/large/* | tr '\n' ' ')")
fi
for files in "${sets[@]}"; do
  # shellcheck disable=SC2086
  cat $files > /dev/null
  for i in $(seq 1 "$n"); do
    for via in batch queue; do
      start=$(date +%s%N)
      # shellcheck disable=SC2086
      if ! "$dsr" load $files --io buffered --repeat 5 --via "$via" --json > "$tmp/out.json" 2> "$tmp/err.txt"; then
        echo "dsr load --via $via failed:" >&2; cat "$tmp/err.txt" "$tmp/out.json" >&2; exit 1
      fi
      g=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median_gbps"])' "$tmp/out.json")
      echo "$via $g $(( ($(date +%s%N) - start) / 1000000 ))" >> "$tmp/runs"
    done
  done
  python3 - "$tmp/runs" "$(echo $files | wc -w)" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda via, col: statistics.median(float(r[col]) for r in rows if r[0] == via)
b, q = med("batch", 1), med("queue", 1)
bw, qw = med("batch", 2), med("queue", 2)
print(f"{sys.argv[2]} files: batch {b:.2f} GB/s, queue {q:.2f} GB/s: the queue costs {100*(b/q-1):+.1f}% of the load's time; "
      f"whole process {bw:.0f} ms vs {qw:.0f} ms ({100*(qw/bw-1):+.1f}%), {len(rows)//2} alternating invocations")
PY
  rm "$tmp/runs"
done
