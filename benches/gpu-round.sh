#!/usr/bin/env bash
# One round of GPU measurements on the lent GPU machine (see docs/benchmarks.md): the Vulkan
# loader and validation layer unpacked from .gl/, release binaries from .device-bin/ (dsr, and
# the integration tests built with `cargo test --release -p dsr --test tests --no-run`).
# Usage, from the repository root there: benches/gpu-round.sh OUTDIR
# (ROUNDS and SIZE_MIB shorten the round when little device time is left: defaults 3 and 1024.)
set -u
out=${1:?usage: benches/gpu-round.sh OUTDIR}
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
nvidia-smi -L > "$out/smi.txt" 2>&1
.device-bin/dsr info --json > "$out/info.json" 2> "$out/info.err"
# Correctness on the real device first, under the validation layer.
DSR_REQUIRE_VULKAN=1 .device-bin/tests gpu:: > "$out/tests.txt" 2>&1
echo "tests rc=$?" >> "$out/tests.txt"
# Speed: invocations alternate nothing between them; each alternates dsr and its peers inside.
for i in $(seq 1 "${ROUNDS:-3}"); do
  .device-bin/dsr bench upload --size-mib "${SIZE_MIB:-1024}" --runs 3 --json > "$out/upload-$i.json" 2>> "$out/upload.err"
done
