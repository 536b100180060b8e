#!/bin/bash
# One round of the Wine DLL's measurements on a machine without Wine (the lent GPU machine, see
# docs/benchmarks.md), from the repository root there: the machine's CPUs, disk and /tmp; the Wine
# bench warm (benches/wine-load.sh), single DLL runs traced by libdsr (DSR_TRACE), dsr's decoder
# against the reference's threads, the previous build against this one (dsr load, where
# .device-bin/old/dsr exists), archive loads by worker count, and the Wine bench cold.
# Needs in .device-bin/: dsr (built with --features dsr-cli/reference-codec), libdsr.so, wine/
# (dstorage.dll.so, dstorage.dll, load.exe from `make -C wine`), wine-portable.tar.xz
# (benches/wine-portable.sh). Usage: benches/wine-round.sh OUTDIR
set -u
B=$PWD/.device-bin
O=${1:?usage: benches/wine-round.sh OUTDIR}; mkdir -p "$O"
exec > >(tee "$O/log.txt") 2>&1
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 )) s)"; }

stamp facts
nproc; lscpu | grep -E 'Model name|Thread|Core|Socket|NUMA|L3|MHz|Flags' | cut -c1-300
uname -r; findmnt -T /tmp; df -h /tmp | tail -1; free -g | head -2
cat /sys/kernel/mm/transparent_hugepage/enabled
cat /proc/sys/kernel/numa_balancing 2>/dev/null
lsblk -d -o NAME,SIZE,ROTA,MODEL 2>/dev/null | head

W=/tmp/w35; rm -rf "$W"; mkdir -p "$W/assets"
stamp assets
python3 benches/game-records.py "$W/assets" 128 1024
cat "$W"/assets/asset0000*.bin "$W"/assets/asset0001*.bin "$W"/assets/asset0002[0-9].bin > "$W/records.bin"
ls -la "$W/records.bin"
"$B/dsr" pack -o "$W/a.dsr" "$W/assets" --min-gain 0 | tail -2
cat "$W"/assets/* "$W/a.dsr" > /dev/null

stamp "wine"
tar -C / -xJf "$B/wine-portable.tar.xz"
export DSR_BIN=$B/dsr DSR_WINE_BUILD=$B/wine WINE=/usr/lib/wine/wine64 WINEPREFIX=/opt/wine-prefix
export LD_LIBRARY_PATH=$B:/opt/wine-deps
timeout 100 bash benches/wine-load.sh 3 128 1024 2>&1 | grep -v -i "freetype\|2.0.5\|wine.inf" | tail -12
stamp "wine, single runs traced by libdsr (DSR_TRACE)"
mkdir -p "$W/gdf"
for f in "$W"/assets/*.bin; do "$B/dsr" gdeflate compress --threads 1 "$f" "$W/gdf/$(basename "$f").gdf" >/dev/null 2>&1; done
winpath() { echo "Z:$(echo "$1" | tr / '\\')"; }
: > "$W/raw.list"; : > "$W/packed.list"
for f in "$W"/assets/*.bin; do
  b=$(basename "$f")
  printf '%s\t%s\t%s\n' "$(winpath "$f")" "$(stat -c %s "$f")" "$(stat -c %s "$f")" >> "$W/raw.list"
  printf '%s\t%s\t%s\n' "$(winpath "$W/gdf/$b.gdf")" "$(stat -c %s "$W/gdf/$b.gdf")" "$(stat -c %s "$f")" >> "$W/packed.list"
done
cat "$W"/gdf/* > /dev/null
(
  export WINEDEBUG=-all WINEDLLPATH=$B/wine WINEDLLOVERRIDES="dstorage=b;winemenubuilder.exe=d"
  for round in 1; do
    for m in dstorage dstorage-buffered readfile; do
      for l in packed raw; do
        [ $m = readfile ] && [ $l = packed ] && continue
        DSR_TRACE=$O/dll-$m-$l-$round.trace.json timeout 60 "$WINE" "$B/wine/load.exe" $m "$(winpath "$W/$l.list")"
      done
    done
  done
  /usr/lib/wine/wineserver -k 2>/dev/null
)
stamp "decoder scaling: engine vs the reference's scoped threads"
timeout 45 "$B/dsr" bench decode-cpu "$W/records.bin" --threads 1,16 --levels 6 --runs 3

stamp "the previous build (old/) vs this one, warm, alternating: raw buffered, raw auto, archive buffered"
med() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); t=sorted(r["elapsed_s"] for r in d["runs"]); print(sys.argv[2], "median ms", round(t[len(t)//2]*1e3,1), "all", [round(x*1e3,1) for x in [r["elapsed_s"] for r in d["runs"]]])' "$@"; }
for round in 1 2; do
  for bin in "$B/old/dsr" "$B/dsr"; do
    [ -x "$bin" ] || continue
    tag=new; [ "$bin" = "$B/dsr" ] || tag=old
    DSR_DEST_TOUCH=parallel timeout 20 "$bin" load "$W"/assets/*.bin --io buffered --repeat 5 --json > "$O/l.json" && med "$O/l.json" "$tag raw-buffered"
    DSR_DEST_TOUCH=parallel timeout 20 "$bin" load "$W"/assets/*.bin --io auto --repeat 5 --json > "$O/l.json" && med "$O/l.json" "$tag raw-auto"
    timeout 20 "$bin" load "$W/a.dsr" --io buffered --repeat 5 --json > "$O/l.json" && med "$O/l.json" "$tag archive-buffered"
  done
done

stamp "native archive load scaling, --io buffered, warm"
for round in 1; do
  for w in 1 4 16; do
    timeout 60 "$B/dsr" load "$W/a.dsr" --workers $w --io buffered --repeat 5 --json > "$O/l.json" && med "$O/l.json" "archive workers $w"
  done
done
"$B/dsr" load "$W/a.dsr" --io buffered --repeat 3 --no-verify --json > "$O/l.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("archive, all workers, --no-verify", [round(r["elapsed_s"]*1e3,1) for r in d["runs"]])' "$O/l.json"
"$B/dsr" load "$W/a.dsr" --io buffered --repeat 3 --trace "$O/archive16.trace.json" | tail -3

stamp "wine cold"
# Two invocations took 47 s there (session 14); three did not fit 80 s.
DSR_COLD=1 timeout 150 bash benches/wine-load.sh 2 128 1024 2>&1 | grep -v -i "freetype\|2.0.5\|wine.inf" | tail -12
stamp end
