#!/usr/bin/env bash
# Builds libdsr in release and installs it with its header and pkg-config file:
#   capi/install.sh [PREFIX]        (default /usr/local; run from anywhere in the checkout)
# Installs PREFIX/lib/libdsr.so, PREFIX/lib/libdsr.a, PREFIX/include/dsr.h and
# PREFIX/lib/pkgconfig/dsr.pc; then `cc app.c $(pkg-config --cflags --libs dsr)` builds against it.
set -euo pipefail
prefix=${1:-/usr/local}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -p dsr-capi
target=${CARGO_TARGET_DIR:-$root/target}/release
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
install -Dm755 "$target/libdsr.so" "$prefix/lib/libdsr.so"
install -Dm644 "$target/libdsr.a" "$prefix/lib/libdsr.a"
install -Dm644 include/dsr.h "$prefix/include/dsr.h"
mkdir -p "$prefix/lib/pkgconfig"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" capi/dsr.pc.in > "$prefix/lib/pkgconfig/dsr.pc"
echo "installed libdsr $version under $prefix"
