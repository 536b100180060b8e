#!/bin/bash
# Cold loads of freshly written files, two dsr builds alternating, each run capped so a stall
# shows as a kill rather than a hang; where a run outlives 1.5 s, what the kernel holds then:
# the disk's in-flight count and counters a second apart, IO pressure, and the kernel stacks of
# the process's threads (io-wq's included), counted by kind. Session 16's look at io_uring's
# cold buffered-read stalls on the GPU machine (docs/benchmarks.md, "Session 16"). Needs root
# (drop_caches, /proc/PID/task/*/stack) and the disk holding /tmp named in DISK (default vda).
# Usage: benches/cold-stall.sh OLD_DSR NEW_DSR OUTDIR [ROUNDS] [FILES] [KIB]
set -u
old=${1:?usage: benches/cold-stall.sh OLD_DSR NEW_DSR OUTDIR [ROUNDS] [FILES] [KIB]}
new=${2:?need NEW_DSR}; O=${3:?need OUTDIR}; rounds=${4:-5}; count=${5:-128}; kib=${6:-1024}
disk=${DISK:-vda}; cap=${DSR_CAP_S:-3}
mkdir -p "$O"; here=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d /tmp/cold-stall.XXXXXX); trap 'rm -rf "$W"' EXIT
python3 "$here/game-records.py" "$W" "$count" "$kib" > /dev/null
cat "$W"/*.bin > /dev/null
D=$O/stalls.txt; : > "$D"
one() {
  label=$1 dsr=$2
  sync; echo 3 > /proc/sys/vm/drop_caches
  DSR_DEST_TOUCH=parallel DSR_DEST_PAGES=small timeout "$cap" "$dsr" load "$W"/*.bin --json > "$O/out.json" 2>/dev/null &
  local pid=$!
  sleep 1.5
  if kill -0 $pid 2>/dev/null; then
    local p; p=$(pgrep -P $pid -x dsr || echo $pid)
    { echo "##### $label, still running after 1.5 s"
      cat /sys/block/$disk/inflight /sys/block/$disk/stat /proc/pressure/io
      for t in /proc/$p/task/*; do
        echo "$(sed 's/[0-9]*$//' $t/comm) $(sed 's/+0x.*//;s/.*] //' $t/stack | head -6 | tr '\n' ' ')"
      done | sort | uniq -c | sort -rn | head -12
      sleep 1; cat /sys/block/$disk/stat; } >> "$D" 2>&1
  fi
  wait $pid
  local ms
  ms=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["runs"][0]["elapsed_s"]*1e3,1))' "$O/out.json" 2>/dev/null) || ms="> $((cap * 1000)) (killed)"
  echo "$label: $ms ms"
}
for r in $(seq 1 "$rounds"); do
  one "round $r old" "$old"
  one "round $r new" "$new"
done
