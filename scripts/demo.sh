#!/usr/bin/env bash
# demo.sh: the README's first command. Installs the build dependencies, builds train_clip, and trains the
# tiny CLIP (configs/tiny.conf) on this machine: on the GPU when there is one, else on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
make -j"$(nproc)"
./train_clip -c configs/tiny.conf "$@"
