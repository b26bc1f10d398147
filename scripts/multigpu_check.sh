#!/usr/bin/env bash
# multigpu_check.sh: one pass on a machine with 2 or more GPUs: the multi-GPU tests and those of the kernels they
# rely on (full output), then the scaling benchmark: ViT-B/16 at batch 256 per GPU and ViT-H/14 at 64, on 1 GPU
# and on N GPUs with and without ZeRO-1 (img/s per GPU, the time the compute stream waits for collectives, memory).
# Logs go to OUTDIR; the summary comes last. Builds first (sm_90a) unless BIN names a directory of built tests.
#   bash scripts/multigpu_check.sh OUTDIR [N]
set -u
out=$(realpath "${1:-.}")
gpus=${2:-2}
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
bin=${BIN:-build/tests}
if [ -z "${BIN:-}" ]; then
    if ! make -j"$(nproc)" CUDA_ARCH="-gencode=arch=compute_90a,code=sm_90a" all build/tests/test_{adamw,loss_gpu,multigpu,clip_gpu} build/tests/bench_clip_gpu \
        > "$out/build.log" 2>&1; then
        tail -40 "$out/build.log"
        exit 1
    fi
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nvidia-smi topo -m; } > "$out/smi.txt" 2>&1
: > "$out/tests.log"
run_test() {
    local s=$(date +%s)
    echo "== $1" >> "$out/tests.log"
    timeout 300 stdbuf -oL "$bin/$1" >> "$out/tests.log" 2>&1
    echo "== $1: exit $? in $(( $(date +%s) - s )) s" >> "$out/tests.log"
}
for t in test_adamw test_loss_gpu test_multigpu; do run_test $t; done
{ timeout 150 "$bin/bench_clip_gpu" b16 && timeout 240 scripts/run_local.sh "$gpus" "$bin/bench_clip_gpu" b16 b16z &&
    timeout 120 "$bin/bench_clip_gpu" h14 && timeout 240 scripts/run_local.sh "$gpus" "$bin/bench_clip_gpu" h14 h14z; } > "$out/bench.log" 2>&1
run_test test_clip_gpu  # the whole single-GPU step, last: the longest
grep -E "^== .*exit|^FAIL" "$out/tests.log"
echo "passed $(grep -c '^ok ' "$out/tests.log"), failed $(grep -c '^FAIL ' "$out/tests.log"), skipped $(grep -c '^skip ' "$out/tests.log")"
grep -E "^\||GPU" "$out/bench.log"
