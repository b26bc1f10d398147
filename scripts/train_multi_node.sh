#!/usr/bin/env bash
# train_multi_node.sh: an example of a multi-node run with mpirun (Open MPI) and a hostfile; edit to taste.
# hosts: one line per node ('#' comments and blank lines are skipped), e.g.
#     node01 slots=8
#     node02 slots=8
# run_dir must be on a filesystem every node sees (rank 0 writes checkpoints, every rank reads one on resume),
# and so must the data shards. NCCL picks InfiniBand when present; NCCL_SOCKET_IFNAME, when set, names the
# interface of its bootstrap traffic (e.g. eth0, ib0) and is passed on. GPUS_PER_NODE (default 8) ranks per node.
#   scripts/train_multi_node.sh hosts b16|l14|h14 [--set key=value ...]
set -eu
if [ $# -lt 2 ]; then echo "usage: $0 HOSTFILE b16|l14|h14 [--set key=value ...]" >&2; exit 2; fi
[ -f "$1" ] || { echo "$0: no hostfile $1" >&2; exit 2; }
hosts=$(realpath "$1")  # before the cd below: relative to where the script was started
model=vit_${2:0:1}_${2:1}  # h14 -> vit_h_14
shift 2
cd "$(dirname "$0")/.."
[ -f "configs/$model.conf" ] || { echo "$0: no configs/$model.conf (b16, l14, h14, ...)" >&2; exit 2; }
nodes=$(grep -cvE '^[[:space:]]*(#|$)' "$hosts" || true)
gpus_per_node=${GPUS_PER_NODE:-8}
if [ "$nodes" -lt 1 ]; then echo "$0: $hosts lists no hosts" >&2; exit 2; fi
root=$([ "$(id -u)" = 0 ] && echo --allow-run-as-root || true)
exec mpirun $root -np $((nodes * gpus_per_node)) --hostfile "$hosts" --map-by ppr:"$gpus_per_node":node --bind-to none \
    -x NCCL_NVLS_ENABLE=0 ${NCCL_SOCKET_IFNAME:+-x NCCL_SOCKET_IFNAME} -x PATH -x LD_LIBRARY_PATH \
    ./train_clip -c "configs/$model.conf" --set run_dir="/shared/runs/$model" "$@"
