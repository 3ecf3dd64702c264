#!/usr/bin/env bash
# Unpacks Debian's python3 (the interpreter, its standard library and the shared
# libraries they load) into a directory the sandbox image is built from, caching it
# outside the clone, keyed by the packages' versions. Prints the directory.
# No maintainer script runs: the files are the packages' own, as dpkg-deb unpacks them.
set -euo pipefail
CACHE=${EVALFLOW_CACHE:-$HOME/.cache/evalflow}
PY=python3.11
# The interpreter and what it loads for the standard library HumanEval's tests use
# (hashlib: libssl3; zlib, bz2, lzma, ctypes' libffi, uuid); not what only dpkg,
# readline, NIS or dbm need.
PACKAGES="python3-minimal $PY-minimal lib$PY-minimal lib$PY-stdlib libc6 libgcc-s1 libexpat1 zlib1g libssl3 libffi8 libbz2-1.0 liblzma5 libuuid1 libcrypt1 libzstd1 media-types"
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
if [ -z "$(candidate $PY-minimal)" ] || [ "$(candidate $PY-minimal)" = "(none)" ]; then
  $([ "$(id -u)" = 0 ] || echo sudo) apt-get update -qq >&2
fi
versions=""
for p in $PACKAGES; do
  v=$(candidate "$p")
  if [ -z "$v" ] || [ "$v" = "(none)" ]; then
    echo "install-sandbox-python: Debian has no $p here" >&2; exit 1
  fi
  versions="$versions $p=$v"
done
KEY=$(echo "$versions" | sha256sum | cut -c1-16)
DIR="$CACHE/sandbox-python-$KEY"
if [ -f "$DIR/.done" ]; then echo "$DIR/root"; exit 0; fi
echo "install-sandbox-python: unpacking Debian's $PY for the sandbox image (once)" >&2
rm -rf "$DIR" && mkdir -p "$DIR/debs" "$DIR/root"
(cd "$DIR/debs" && apt-get download -qq $versions 2>&1 | grep -v "unsandboxed as root" >&2 || true)
for d in "$DIR"/debs/*.deb; do dpkg-deb -x "$d" "$DIR/root"; done
[ "$(ls "$DIR"/debs/*.deb | wc -l)" = "$(echo $PACKAGES | wc -w)" ] || { echo "install-sandbox-python: a package did not download" >&2; exit 1; }
rm -rf "$DIR/root/usr/share/doc" "$DIR/root/usr/share/man" "$DIR/root/usr/share/lintian" "$DIR/root/usr/share/info"
echo "$versions" > "$DIR/versions"
touch "$DIR/.done"
echo "$DIR/root"
