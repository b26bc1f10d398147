#!/usr/bin/env bash
# train_one_node.sh: the paper's recipe (configs/vit_*.conf: StableAdamW, lr 2e-3, global batch 16384, bf16)
# on the GPUs of this machine, one process per GPU: mpirun when it is installed and ./train_clip is built with MPI,
# else scripts/run_local.sh.
#   scripts/train_one_node.sh b16|l14|h14 [GPUS] [--set key=value ...]     (GPUS: all that nvidia-smi lists)
# e.g. scripts/train_one_node.sh h14 8 --set data=/data/laion/{00000..41407}.tar --set zero=1
set -eu
cd "$(dirname "$0")/.."
case "${1:-}" in
    b16) config=configs/vit_b_16.conf ;;
    l14) config=configs/vit_l_14.conf ;;
    h14) config=configs/vit_h_14.conf ;;
    *) echo "usage: $0 b16|l14|h14 [GPUS] [--set key=value ...]" >&2; exit 2 ;;
esac
shift
[ -x ./train_clip ] || { echo "$0: no ./train_clip here: build it first (make)" >&2; exit 2; }
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)  # GPU lines only: a MIG GPU lists its instances too
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then gpus=$1; shift; fi
case $gpus in
    '' | *[!0-9]* | 0*) echo "$0: GPUS must be 1 or more, not '$gpus' (nvidia-smi -L lists none? name the count)" >&2; exit 2 ;;
esac
# a build without MPI refuses mpirun's start: it gets run_local.sh's environment start instead
if command -v mpirun >/dev/null && ldd ./train_clip 2>/dev/null | grep -q libmpi; then
    root=$([ "$(id -u)" = 0 ] && echo --allow-run-as-root || true)
    exec mpirun $root -np "$gpus" --bind-to none -x NCCL_NVLS_ENABLE=0 ./train_clip -c "$config" "$@"
fi
exec scripts/run_local.sh "$gpus" ./train_clip -c "$config" "$@"
