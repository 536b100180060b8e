# Sourced by the Wine benches (wine-load.sh, wine-ab.sh): the DLL and load.exe, Wine and its
# prefix, one wineserver for the whole run, and the asset set. Expects `root`; sets `dsr`,
# `build`, `wine`, `wineserver` and `tmp` (removed, and the wineserver stopped, on exit).
# DSR_BIN: the dsr binary (target/release/dsr). DSR_WINE_BUILD: a directory with dstorage.dll.so,
# dstorage.dll and load.exe built elsewhere (skips make; the GPU machine has no Wine tools). WINE
# and WINEPREFIX as wanted (target/wine-prefix by default; libdsr.so comes from LD_LIBRARY_PATH
# when DSR_WINE_BUILD is set).
dsr=${DSR_BIN:-$root/target/release/dsr}
build=${DSR_WINE_BUILD:-$root/target/wine-bench}
if [ -z "${DSR_WINE_BUILD:-}" ]; then
  make -s -C "$root/wine" LIBDSR="$root/target/release" BUILD="$build" >/dev/null
  cp "$build/dstorage.dll.so" "$build/dstorage.dll"
fi
wine=${WINE:-$(command -v wine64 || echo /usr/lib/wine/wine64)}
export WINEPREFIX=${WINEPREFIX:-$root/target/wine-prefix} WINEDEBUG=-all WINEDLLPATH=$build
export WINEDLLOVERRIDES="dstorage=b;winemenubuilder.exe=d"
unset DISPLAY
[ -f "$WINEPREFIX/system.reg" ] || "$wine" wineboot -i >/dev/null 2>&1
# One wineserver for the whole run, so no invocation pays for starting it.
wineserver=$(dirname "$(readlink -f "$wine")")/wineserver
[ -x "$wineserver" ] || wineserver=wineserver
"$wineserver" -p 2>/dev/null || true  # already running for this prefix: fine
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; "$wineserver" -k 2>/dev/null || true' EXIT

# A Windows path (Z: is the Linux root) for a Linux one.
winpath() { echo "Z:$(echo "$1" | tr / '\\')"; }

# COUNT assets of KIB KiB of game-like records in $tmp, each also GDeflate-packed (.gdf), and the
# program's lists of them (raw.list, packed.list: Windows path, file size, decoded size); warm.
make_assets() {
  python3 "$root/benches/game-records.py" "$tmp" "$1" "$2" >/dev/null
  ls "$tmp"/asset*.bin | xargs -P "$(nproc)" -I{} "$dsr" gdeflate compress --threads 1 {} {}.gdf >/dev/null 2>&1
  : > "$tmp/raw.list"; : > "$tmp/packed.list"
  for f in "$tmp"/asset*.bin; do
    printf '%s\t%s\t%s\n' "$(winpath "$f")" "$(stat -c %s "$f")" "$(stat -c %s "$f")" >> "$tmp/raw.list"
    printf '%s\t%s\t%s\n' "$(winpath "$f.gdf")" "$(stat -c %s "$f.gdf")" "$(stat -c %s "$f")" >> "$tmp/packed.list"
  done
  cat "$tmp"/asset* > /dev/null
}

# DSR_COLD=1: drops the page cache (root) before each run, so each reads from the disk.
settle() {
  if [ "${DSR_COLD:-0}" = 1 ]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches || { echo "DSR_COLD=1 needs root (drop_caches)" >&2; exit 1; }
  fi
}
