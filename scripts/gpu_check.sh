#!/usr/bin/env bash
# gpu_check.sh: one pass on a GPU machine: build (sm_90a only, to save time), run the GPU tests and then
# the rest with their full output, then the GPU benchmark. Logs go to the directory $1 (default .);
# the summary comes last.    bash scripts/gpu_check.sh OUTDIR [bench models, e.g. b16 l14 h14]
set -u
out=$(realpath "${1:-.}")
shift || true
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.max.sm --format=csv > "$out/smi.txt" 2>&1
t0=$(date +%s)
targets=$(ls tests/test_*.c tests/test_*.cu tests/bench_*.cu | sed -E 's|tests/(.*)\.cu?$|build/tests/\1|')
if ! make -j"$(nproc)" CUDA_ARCH="-gencode=arch=compute_90a,code=sm_90a" all $targets > "$out/build.log" 2>&1; then
    tail -40 "$out/build.log"
    exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s"
gpu_tests=$(ls build/tests/test_* | grep -v '\.d$' | while read t; do [ -f "tests/$(basename $t).cu" ] && echo $t; done)
cpu_tests=$(ls build/tests/test_* | grep -v '\.d$' | while read t; do [ -f "tests/$(basename $t).c" ] && echo $t; done)
: > "$out/tests.log"
for t in $gpu_tests $cpu_tests; do
    s=$(date +%s)
    echo "== $t" >> "$out/tests.log"
    timeout 300 stdbuf -oL "$t" >> "$out/tests.log" 2>&1
    echo "== $t: exit $? in $(( $(date +%s) - s )) s" >> "$out/tests.log"
done
# the trainer end to end on a real model: memory plan, a few steps, the final checkpoint
t1=$(date +%s)
rm -rf /tmp/gpu_check_b16  # a fresh start is refused over an earlier run's checkpoints
{ ./train_clip -c configs/vit_h_14.conf --dry-run | head -8
  timeout 120 ./train_clip -c configs/vit_b_16.conf --set batch_size=256 --set samples=0 --set steps=4 --set log_every=1 \
      --set checkpoint_every=0 --set data_workers=16 --set run_dir=/tmp/gpu_check_b16; } > "$out/train.log" 2>&1
echo "train_clip ViT-B/16: exit $? in $(( $(date +%s) - t1 )) s"
# resume on the GPU path is bit-exact: 12 steps straight vs 6 + checkpoint + resume + 6 (weights and optimizer state)
run="./train_clip -c configs/tiny.conf --set batch_size=16 --set steps=12 --set warmup=3 --set log_every=100 --set checkpoint_every=0"
rm -rf /tmp/gc_straight /tmp/gc_split
$run --set run_dir=/tmp/gc_straight > /dev/null && $run --set run_dir=/tmp/gc_split --set stop_after=6 > /dev/null &&
    $run --set run_dir=/tmp/gc_split --set resume=latest > /dev/null &&
    python3 -c "
from safetensors.numpy import load_file
import numpy as np, sys
for kind in ('model', 'state'):
    a = load_file('/tmp/gc_straight/checkpoints/step_00000012.%s.safetensors' % kind)
    b = load_file('/tmp/gc_split/checkpoints/step_00000012.%s.safetensors' % kind)
    same = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    print('resume on the GPU, %s after 12 steps: %s (%d tensors)' % (kind, 'bit-exact' if same else 'DIFFERS', len(a)))
"
t1=$(date +%s)
timeout 400 ./build/tests/bench_clip_gpu "$@" > "$out/bench.log" 2>&1
echo "bench: exit $? in $(( $(date +%s) - t1 )) s"
grep -E "^== .*exit|^FAIL" "$out/tests.log"
echo "passed $(grep -c '^ok ' "$out/tests.log"), failed $(grep -c '^FAIL ' "$out/tests.log"), skipped $(grep -c '^skip ' "$out/tests.log")"
grep -E "^step|^memory|^device|error" "$out/train.log"
grep -E "^\||GPU:" "$out/bench.log"
