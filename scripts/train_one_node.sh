#!/usr/bin/env bash
# train_one_node.sh: the paper's recipe (configs/vit_*.conf: StableAdamW, lr 2e-3, global batch 16384, bf16)
# on the GPUs of this machine, one process per GPU: mpirun when it is installed, else scripts/run_local.sh.
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
gpus=$(nvidia-smi -L | wc -l)
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then gpus=$1; shift; fi
if command -v mpirun >/dev/null; then
    root=$([ "$(id -u)" = 0 ] && echo --allow-run-as-root || true)
    exec mpirun $root -np "$gpus" --bind-to none -x NCCL_NVLS_ENABLE=0 ./train_clip -c "$config" "$@"
fi
exec scripts/run_local.sh "$gpus" ./train_clip -c "$config" "$@"
