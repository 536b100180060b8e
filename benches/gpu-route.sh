#!/usr/bin/env bash
# The GPU GDeflate route end to end (issue #19): warm file -> GPU buffer at 128 and 512 MiB
# (`dsr bench decode-gpu`'s e2e, with the read alone and the decode alone in the same run), then
# an archive of ~400 assets (/usr/bin plus a 64 MiB script) into GPU memory on each decode route,
# routes alternating, tile hashes checked; each load's submissions summarised from
# DSR_GPU_DECODE_TRACE (longest submission, longest gap). Files live in $TMPDIR.
# Usage: benches/gpu-route.sh DSR_BINARY [INVOCATIONS]
set -u
dsr=${1:?usage: benches/gpu-route.sh DSR_BINARY [INVOCATIONS]}
n=${2:-3}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for i in $(seq 1 "$n"); do for mib in 128 512; do
  "$dsr" bench decode-gpu --size-mib $mib --batch-mib $mib --runs 5 --json > "$tmp/e.json"
  python3 -c "
import json; d=json.load(open('$tmp/e.json')); b=d['batches'][0]; e=d['e2e']
print($mib, 'MiB round $i: decode alone', round(b['dsr_gbps'],2), 'NV', b['nv_gbps'] and round(b['nv_gbps'],2), 'e2e', round(e['e2e_gbps'],2), 'verified', round(e['e2e_verified_gbps'],2), 'read alone', round(e['read_gbps'],1), 'ratio', round(e['ratio_vs_slower'],3))"
done; done
mkdir -p "$tmp/assets"
for f in /usr/bin/*; do [ -f "$f" ] && cp "$f" "$tmp/assets/" 2>/dev/null; [ "$(du -sm "$tmp/assets" | cut -f1)" -gt 160 ] && break; done
yes "local function spawn(player, level) return level.door and player.health > 0.25 end" | head -c 64M > "$tmp/assets/scripts.lua"
"$dsr" pack "$tmp/assets" -o "$tmp/game.dsrpak" | tail -1
for i in $(seq 1 "$n"); do
  for route in cpu gpu auto; do
    DSR_GPU_DECODE_TRACE=1 "$dsr" load "$tmp/game.dsrpak" --dest gpu --decode $route --repeat 5 --json > "$tmp/l.json" 2> "$tmp/trace.txt"
    python3 - "$tmp/l.json" "$tmp/trace.txt" "$route" <<'PY'
import json, re, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ev = [(float(m.group(1)), m.group(2)) for m in (re.search(r"([\d.]+) ms: (submitted|done)", l) for l in open(sys.argv[2])) if m]
sub = [t for t, k in ev if k == "submitted"]; done = [t for t, k in ev if k == "done"]
longest = max((b - a for a, b in zip(sub, done)), default=0)
gap = max((b[0] - a[0] for a, b in zip(ev, ev[1:])), default=0)
print(sys.argv[3], "median", round(d["median_gbps"], 2), "GB/s runs", [round(r["gbps"], 2) for r in d["runs"]],
      "process", round(d.get("process_s", 0), 3), "s; submissions", len(sub), "longest %.1f ms, longest gap %.1f ms" % (longest, gap))
PY
  done
done
