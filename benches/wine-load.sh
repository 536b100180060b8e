#!/usr/bin/env bash
# dsr's dstorage.dll under Wine against the same Windows program reading with ReadFile under Wine
# (what games fall back to) and against native `dsr load`, on the same assets, warm, in one run:
# invocations alternate, medians reported. Times are the program's own (first open to last byte
# in memory) and the whole process (a player waits for that too; Wine starts in ~0.2 s).
# Usage: benches/wine-load.sh [INVOCATIONS] [ASSETS] [KIB_PER_ASSET]
# DSR_COLD=1: drop the page cache (root) before every invocation, so each reads from the disk.
# Needs a release build (cargo build --release), Wine's tools and mingw-w64 (docs/wine.md).
# On a machine without the tools (the GPU machine): DSR_BIN, DSR_WINE_BUILD, WINE and WINEPREFIX
# as benches/wine-common.sh says.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-5}
count=${2:-256}
kib=${3:-1024}
. "$root/benches/wine-common.sh"
make_assets "$count" "$kib"
cold=${DSR_COLD:-0}

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
for i in $(seq 1 "$n"); do
  for io in auto buffered; do
    settle
    start=$(date +%s%N)
    # The Windows programs touch their destinations before their clock starts; so does this
    # (dsr load's default leaves the faults to the load, inside its clock). Their destinations
    # are their own heap's small pages: the native load lands in small pages too, so the ratio
    # is the shim's cost and not the destination's (dsr load's own choice, huge pages on some
    # machines, also probes the files before its clock, warming their metadata when cold).
    DSR_DEST_TOUCH=parallel DSR_DEST_PAGES=small "$dsr" load "$tmp"/asset*.bin --io "$io" --json > "$tmp/native.json"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], d["runs"][0]["elapsed_s"], sys.argv[3])' \
      "$tmp/native.json" "native-$io" "$(ms "$start")" >> "$tmp/runs"
  done
  for case in "readfile raw" "dstorage raw" "dstorage packed" "dstorage-buffered raw" "dstorage-buffered packed"; do
    set -- $case
    settle
    start=$(date +%s%N)
    "$wine" "$build/load.exe" "$1" "$(winpath "$tmp/$2.list")" > "$tmp/out.json"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], d["seconds"], sys.argv[3], d.get("until_submit", 0))' \
      "$tmp/out.json" "$1-$2" "$(ms "$start")" >> "$tmp/runs"
  done
done
python3 - "$tmp/runs" "$count" "$kib" "$(cat "$tmp"/asset*.gdf | wc -c)" "$([ "$cold" = 1 ] && echo cold || echo warm)" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
count, kib, packed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
decoded = count * kib * 1024
med = lambda case, col: statistics.median(float(r[col]) for r in rows if r[0] == case)
cases = ["native-auto", "native-buffered", "readfile-raw", "dstorage-raw", "dstorage-packed",
         "dstorage-buffered-raw", "dstorage-buffered-packed"]
print(f"{count} assets of {kib} KiB ({decoded / 2**20:.0f} MiB decoded, {packed / 2**20:.0f} MiB as GDeflate), {sys.argv[5]}, "
      f"{len(rows) // len(cases)} alternating invocations; medians:")
for case in cases:
    s, w = med(case, 1), med(case, 2)
    opened = f", {med(case, 3) * 1e3:.1f} ms of it opening and enqueueing" if case.startswith("dstorage") else ""
    print(f"  {case:<24} {s * 1e3:8.1f} ms in the program ({decoded / s / 1e9:6.2f} GB/s decoded), {w:6.0f} ms whole process{opened}")
r = lambda a, b, col=1: med(a, col) / med(b, col)
print("dstorage.dll vs native dsr load, same I/O policy (goal >= 0.9): "
      f"default {r('native-auto', 'dstorage-raw'):.2f}x, ForceFileBuffering vs --io buffered "
      f"{r('native-buffered', 'dstorage-buffered-raw'):.2f}x")
print("dstorage.dll vs ReadFile, uncompressed (goal >= 1.0): "
      f"default {r('readfile-raw', 'dstorage-raw'):.2f}x, ForceFileBuffering {r('readfile-raw', 'dstorage-buffered-raw'):.2f}x")
print("dstorage.dll GDeflate vs ReadFile of the uncompressed assets (goal >= 1.5): "
      f"default {r('readfile-raw', 'dstorage-packed'):.2f}x, ForceFileBuffering {r('readfile-raw', 'dstorage-buffered-packed'):.2f}x")
print("whole process, the same ratios: "
      f"{r('native-auto', 'dstorage-raw', 2):.2f}x / {r('native-buffered', 'dstorage-buffered-raw', 2):.2f}x, "
      f"{r('readfile-raw', 'dstorage-raw', 2):.2f}x / {r('readfile-raw', 'dstorage-buffered-raw', 2):.2f}x, "
      f"{r('readfile-raw', 'dstorage-packed', 2):.2f}x / {r('readfile-raw', 'dstorage-buffered-packed', 2):.2f}x")
PY
