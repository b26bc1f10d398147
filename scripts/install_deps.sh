#!/usr/bin/env bash
# install_deps.sh: installs the Debian/Ubuntu packages train_clip builds with (compiler, libjpeg-turbo,
# stb_image, utf8proc, libwebp, zlib, clang for the fuzzers, python3 for the scripts). Skips what is there.
# The CUDA toolkit is not installed here: with nvcc on the PATH the GPU path is built too.
set -euo pipefail
pkgs="build-essential libjpeg-dev libstb-dev libutf8proc-dev libwebp-dev zlib1g-dev clang python3 python3-pip unzip libopenmpi-dev openmpi-bin"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
