#!/usr/bin/env bash
# multigpu_check.sh: one pass on a machine with 2 or more GPUs: the multi-GPU tests and those of the kernels they
# rely on (full output), then the scaling benchmark: ViT-B/16 at batch 256 per GPU and ViT-H/14 at 64, on 1 GPU
# and on N GPUs with and without ZeRO-1, gradients summed in fp32 and in bf16, and ViT-B/16 with the collectives
# on a low-priority stream for comparison (img/s per GPU, the time the compute stream waits for collectives,
# memory); then, where mpirun is there and the build has MPI, train_clip and the equivalence test under mpirun.
# Logs go to OUTDIR; the summary comes last. Builds first (sm_90a) unless BIN names a directory of built tests;
# MPI_INCLUDE=dir (OpenMPI's headers, for a machine with mpirun but no mpi.h: see the Makefile) builds with MPI,
# and without it if that build fails. SKIP_STEP_TEST=1 leaves out test_clip_gpu (the longest).
#   bash scripts/multigpu_check.sh OUTDIR [N]
set -u
mkdir -p "${1:-.}" || exit 1
out=$(realpath "${1:-.}")
gpus=${2:-2}
cd "$(dirname "$0")/.." || exit 1
export NCCL_NVLS_ENABLE=0
bin=${BIN:-build/tests}
if [ -z "${BIN:-}" ]; then
    targets="all build/tests/test_adamw build/tests/test_loss_gpu build/tests/test_multigpu build/tests/test_clip_gpu build/tests/bench_clip_gpu"
    build() { make -j"$(nproc)" CUDA_ARCH="-gencode=arch=compute_90a,code=sm_90a" $targets >> "$out/build.log" 2>&1; }
    if ! build; then
        tail -20 "$out/build.log"
        [ -n "${MPI_INCLUDE:-}" ] || exit 1
        echo "the MPI build failed: building without MPI"
        rm -f build/model/distributed.o build/model/distributed.d
        unset MPI_INCLUDE
        build || { tail -40 "$out/build.log"; exit 1; }
    fi
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nvidia-smi topo -m; } > "$out/smi.txt" 2>&1
: > "$out/tests.log"
run_test() {  # run_test TEST [LABEL]
    local s=$(date +%s)
    echo "== ${2:-$1}" >> "$out/tests.log"
    timeout 300 stdbuf -oL "$bin/$1" >> "$out/tests.log" 2>&1
    echo "== ${2:-$1}: exit $? in $(( $(date +%s) - s )) s" >> "$out/tests.log"
}
for t in test_adamw test_loss_gpu test_multigpu; do run_test $t; done
{ timeout 240 "$bin/bench_clip_gpu" b16 h14 && timeout 300 scripts/run_local.sh "$gpus" "$bin/bench_clip_gpu" b16 b16bf b16z b16zbf &&
    TRAIN_CLIP_COMM_PRIORITY=low timeout 120 scripts/run_local.sh "$gpus" "$bin/bench_clip_gpu" b16 &&
    timeout 300 scripts/run_local.sh "$gpus" "$bin/bench_clip_gpu" h14 h14bf h14z h14zbf; } > "$out/bench.log" 2>&1
if command -v mpirun > /dev/null && ldd ./train_clip | grep -q libmpi; then
    mpirun=(mpirun $([ "$(id -u)" = 0 ] && echo --allow-run-as-root))
    s=$(date +%s)
    echo "== mpirun train_clip" >> "$out/tests.log"
    timeout 120 "${mpirun[@]}" -np "$gpus" -x NCCL_NVLS_ENABLE=0 ./train_clip -c configs/tiny.conf --set device=cuda --set steps=20 \
        --set zero=1 --set log_every=5 --set checkpoint_every=0 --set run_dir="$(mktemp -d)" >> "$out/tests.log" 2>&1
    echo "== mpirun train_clip: exit $? in $(( $(date +%s) - s )) s" >> "$out/tests.log"
    TEST_MULTIGPU_MPIRUN="${mpirun[*]}" run_test test_multigpu "test_multigpu under mpirun"
else
    echo "== mpirun: not run (no mpirun, or ./train_clip is built without MPI)" >> "$out/tests.log"
fi
[ "${SKIP_STEP_TEST:-0}" = 1 ] || run_test test_clip_gpu  # the whole single-GPU step, last: the longest
grep -E "^== .*(exit|not run)|^FAIL" "$out/tests.log"
echo "passed $(grep -c '^ok ' "$out/tests.log"), failed $(grep -c '^FAIL ' "$out/tests.log"), skipped $(grep -c '^skip ' "$out/tests.log")"
grep -E "^\||GPU" "$out/bench.log"
