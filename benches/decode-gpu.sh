#!/usr/bin/env bash
# GDeflate decoding on the GPU: `dsr bench decode-gpu` for each build (a `dsr` binary, or a
# `dsr` plus a SPIR-V file to load instead of the committed shader, written `DSR:SPIRV`),
# INVOCATIONS rounds, builds alternating; then one kind of data at a time with the first build.
# Prints one line per run: the build, then (MiB per submission, dsr GB/s, VK_NV GB/s) per batch.
# Usage: benches/decode-gpu.sh INVOCATIONS BUILD...
set -eu
invocations=${1:?usage: benches/decode-gpu.sh INVOCATIONS BUILD...}
shift
summary() {
  python3 -c 'import json, sys
d = json.loads(sys.stdin.read())
print(d["form"], [(b["output_bytes"] >> 20, round(b["dsr_gbps"], 2), b["nv_gbps"] and round(b["nv_gbps"], 2)) for b in d["batches"]], "cpu", round(d["cpu_gbps"], 2))'
}
bench() {
  local build=$1; shift
  local dsr=${build%%:*} spirv=
  [ "$dsr" != "$build" ] && spirv=${build#*:}
  if [ -n "$spirv" ]; then
    DSR_GDEFLATE_SPIRV=$spirv "$dsr" bench decode-gpu "$@" --json | summary
  else
    "$dsr" bench decode-gpu "$@" --json | summary
  fi
}
for round in $(seq 1 "$invocations"); do
  for build in "$@"; do
    echo "round $round  $build: $(bench "$build" --size-mib 128 --batch-mib 8,32,128,512 --runs 5)"
  done
done
kinds=$(mktemp -d); trap 'rm -rf "$kinds"' EXIT
head -c 64M /dev/urandom > "$kinds/random"
head -c 64M /dev/zero > "$kinds/zeros"
yes "local function spawn(player, level) return level.door and player.health > 0.25 end" | head -c 64M > "$kinds/text"
cat /usr/bin/* 2>/dev/null | head -c 64M > "$kinds/binary" || true
for kind in random zeros text binary; do
  echo "$kind  $1: $(bench "$1" "$kinds/$kind" --batch-mib 8,128 --runs 3)"
done
