#!/usr/bin/env bash
# vendor_deps.sh: copies the optional libraries' headers and static libraries from this machine's Debian
# packages (libstb-dev, libutf8proc-dev, libwebp-dev) into .deps/ (git-ignored), for building on a machine
# that lacks them and cannot install them (the lent GPU machine: pass .deps in the device call's carry).
# The Makefile looks in .deps/ first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
lib=/usr/lib/$(gcc -print-multiarch)
rm -rf .deps && mkdir -p .deps/include/stb .deps/lib
cp /usr/include/stb/stb_image.h .deps/include/stb/
cp /usr/include/utf8proc.h .deps/include/ && cp "$lib/libutf8proc.a" .deps/lib/
cp -r /usr/include/webp .deps/include/ && cp "$lib/libwebp.a" .deps/lib/
[ -f "$lib/libsharpyuv.a" ] && cp "$lib/libsharpyuv.a" .deps/lib/
du -sh .deps
