#!/usr/bin/env bash
# Builds of libdsr against each other under the Wine dstorage.dll, with native `dsr load` as the
# peer, in one run: the same Windows program (load.exe) loads the same assets through the DLL on
# each build, by default, with ForceFileBuffering and GDeflate-packed; rounds alternate every case;
# medians, each build's ratio to native. Session 17 compared a queue's early start with none.
# Usage: benches/wine-ab.sh ROUNDS NAME=LIBDSR_DIR [NAME=LIBDSR_DIR...]
#   (each directory holds a libdsr.so; ROUNDS 7 or more on a noisy machine)
# DSR_COLD=1: drop the page cache (root) before every run, so each reads from the disk.
# DSR_ASSETS / DSR_KIB: the asset set (128 of 1024 KiB). DSR_BIN, DSR_WINE_BUILD, WINE and
# WINEPREFIX as benches/wine-common.sh says.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: benches/wine-ab.sh ROUNDS NAME=LIBDSR_DIR [NAME=LIBDSR_DIR...]"
rounds=${1:?$usage}; shift
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
names=(); dirs=()
for build in "$@"; do
  name=${build%%=*} dir=${build#*=}
  [ "$name" != "$build" ] && [ -f "$dir/libdsr.so" ] || { echo "no $dir/libdsr.so ($build): $usage" >&2; exit 2; }
  names+=("$name"); dirs+=("$(cd "$dir" && pwd)")
done
. "$root/benches/wine-common.sh"
make_assets "${DSR_ASSETS:-128}" "${DSR_KIB:-1024}"
# Wine's first start of a prefix in this run is not any build's.
LD_LIBRARY_PATH="${dirs[0]}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$wine" "$build/load.exe" readfile "$(winpath "$tmp/raw.list")" >/dev/null

# One line per run: case, ms in the program, ms of it before Submit.
for _ in $(seq 1 "$rounds"); do
  for io in auto buffered; do
    settle
    # As benches/wine-load.sh: destinations touched before the clock, in small pages.
    DSR_DEST_TOUCH=parallel DSR_DEST_PAGES=small "$dsr" load "$tmp"/asset*.bin --io "$io" --json > "$tmp/out.json"
    python3 -c 'import json,sys; print(sys.argv[2], json.load(open(sys.argv[1]))["runs"][0]["elapsed_s"] * 1e3, 0)' \
      "$tmp/out.json" "native-$io" >> "$tmp/runs"
  done
  for i in "${!names[@]}"; do
    for case in "dstorage raw default" "dstorage-buffered raw buffered" "dstorage packed packed"; do
      set -- $case
      settle
      LD_LIBRARY_PATH="${dirs[$i]}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$wine" "$build/load.exe" "$1" "$(winpath "$tmp/$2.list")" > "$tmp/out.json"
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], d["seconds"] * 1e3, d["until_submit"] * 1e3)' \
        "$tmp/out.json" "${names[$i]}-$3" >> "$tmp/runs"
    done
  done
done
python3 - "$tmp/runs" "$([ "${DSR_COLD:-0}" = 1 ] && echo cold || echo warm)" "${names[@]}" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    case, ms, before = line.split()
    runs[case].append((float(ms), float(before)))
med = lambda case, col=0: statistics.median(r[col] for r in runs[case])
print(f"{sys.argv[2]}, {len(runs['native-auto'])} alternating rounds; medians, ms in the program:")
for case in runs:
    lo, hi = min(r[0] for r in runs[case]), max(r[0] for r in runs[case])
    before = f", {med(case, 1):.2f} before Submit" if not case.startswith("native") else ""
    print(f"  {case:<24} {med(case):8.2f} (runs {lo:.2f}-{hi:.2f}){before}")
for name in sys.argv[3:]:
    print(f"{name}: the DLL against native dsr load, default {med('native-auto') / med(name + '-default'):.2f}x, "
          f"ForceFileBuffering vs --io buffered {med('native-buffered') / med(name + '-buffered'):.2f}x")
PY
