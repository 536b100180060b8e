#!/usr/bin/env bash
# io_uring against positioned reads on a warm file, read buffered at 64 KiB, 1 MiB and 16 MiB
# per read: `dsr load --io buffered --chunk C --io-backend B --repeat 3`, backends alternating.
# Usage: benches/read-backends.sh DSR_BINARY [FILE]   (default: 1 GiB of random bytes in /tmp)
set -eu
dsr=${1:?usage: benches/read-backends.sh DSR_BINARY [FILE]}
file=${2:-}
if [ -z "$file" ]; then
  file=$(mktemp); trap 'rm -f "$file"' EXIT
  head -c 1073741824 /dev/urandom > "$file"
fi
cat "$file" > /dev/null
for chunk in 64K 1M 16M; do
  for backend in io-uring pread; do
    printf '%-4s %-8s ' "$chunk" "$backend"
    timeout 120 "$dsr" load "$file" --io buffered --chunk "$chunk" --io-backend "$backend" --repeat 3 | grep median || echo "(no result)"
  done
done
