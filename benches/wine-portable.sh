#!/usr/bin/env bash
# Packs the least of Debian 12's Wine 8.0 that runs benches/wine-load.sh's Windows program (no
# display), and a prefix for it, into one tarball to unpack at / on a machine without Wine (the
# GPU machine, for the Wine bench on many cores):
#   usr/lib/wine, usr/lib/x86_64-linux-gnu/wine/{x86_64-unix,x86_64-windows}: the loader, the
#     server, every Unix library, and the PE modules a console program and the services Wine
#     starts load (found with WINEDEBUG=+loaddll), without their debug sections;
#   usr/share/wine/nls: the locale tables ntdll reads at start;
#   opt/wine-deps: the shared libraries those need beyond glibc (LD_LIBRARY_PATH);
#   opt/wine-prefix: a prefix's registry, drives, and a system32 of links to those modules.
# Usage: benches/wine-portable.sh OUT.tar.xz   (needs wine64 and mingw-w64's strip)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath "$1")
lib=/usr/lib/x86_64-linux-gnu/wine
modules="advapi32.dll combase.dll conhost.exe dnsapi.dll explorer.exe gdi32.dll imm32.dll
iphlpapi.dll kernel32.dll kernelbase.dll msvcrt.dll nsi.dll ntdll.dll ntoskrnl.exe ole32.dll
plugplay.exe rpcrt4.dll sechost.dll services.exe setupapi.dll shcore.dll shell32.dll shlwapi.dll
start.exe svchost.exe ucrtbase.dll user32.dll userenv.dll version.dll wevtsvc.dll win32u.dll
wineboot.exe winedevice.exe ws2_32.dll zlib1.dll"
drivers="hidclass.sys hidparse.sys mountmgr.sys ndis.sys nsiproxy.sys winebus.sys winehid.sys wineusb.sys"
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage/usr/lib/wine" "$stage$lib/x86_64-unix" "$stage$lib/x86_64-windows" "$stage/opt/wine-deps" \
  "$stage/usr/share/wine"
cp -a /usr/share/wine/nls "$stage/usr/share/wine/"
cp -a /usr/lib/wine/wine64 /usr/lib/wine/wineserver /usr/lib/wine/wineserver64 "$stage/usr/lib/wine/"
cp -a "$lib"/x86_64-unix/*.so "$stage$lib/x86_64-unix/"
for m in $modules $drivers; do
  x86_64-w64-mingw32-strip --strip-debug -o "$stage$lib/x86_64-windows/$m" "$lib/x86_64-windows/$m"
done
for so in libunwind.so.8 liblzma.so.5 libudev.so.1 libusb-1.0.so.0; do
  cp -L "/usr/lib/x86_64-linux-gnu/$so" "$stage/opt/wine-deps/"
done

# The prefix: made here once (wineboot), then only its registry and drives travel; Wine loads
# builtin modules through the files in system32, here links to the ones above.
prefix=$root/target/wine-prefix
if [ ! -f "$prefix/system.reg" ]; then
  WINEPREFIX=$prefix WINEDEBUG=-all /usr/lib/wine/wine64 wineboot -i >/dev/null 2>&1
  WINEPREFIX=$prefix /usr/lib/wine/wineserver -w
fi
p=$stage/opt/wine-prefix
mkdir -p "$p/dosdevices" "$p/drive_c/windows/system32/drivers" "$p/drive_c/ProgramData"
cp -a "$prefix/system.reg" "$prefix/user.reg" "$prefix/userdef.reg" "$prefix/.update-timestamp" "$p/"
cp -a "$prefix/drive_c/users" "$p/drive_c/"
ln -s ../drive_c "$p/dosdevices/c:"
ln -s / "$p/dosdevices/z:"
for m in $modules; do ln -s "$lib/x86_64-windows/$m" "$p/drive_c/windows/system32/$m"; done
for m in $drivers; do ln -s "$lib/x86_64-windows/$m" "$p/drive_c/windows/system32/drivers/$m"; done

tar -C "$stage" -cJf "$out" usr opt
ls -la "$out"
