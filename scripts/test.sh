#!/usr/bin/env bash
# test.sh: the README's test command. Installs the build dependencies, builds everything (CUDA parts too
# when nvcc is present) and runs every test; ends with "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/get_vocab.sh
make -j"$(nproc)" all
make -j"$(nproc)" test
