#!/usr/bin/env bash
# train_multi_node.sh: an example of a multi-node run with mpirun (Open MPI) and a hostfile; edit to taste.
# hosts: one line per node, e.g.
#     node01 slots=8
#     node02 slots=8
# run_dir must be on a filesystem every node sees (rank 0 writes checkpoints, every rank reads one on resume),
# and so must the data shards. NCCL picks InfiniBand when present; NCCL_SOCKET_IFNAME names the interface of
# its bootstrap traffic (e.g. eth0, ib0).
#   scripts/train_multi_node.sh hosts h14 [--set key=value ...]
set -eu
cd "$(dirname "$0")/.."
hosts=$1 model=$2
shift 2
nodes=$(grep -c . "$hosts")
gpus_per_node=8
exec mpirun -np $((nodes * gpus_per_node)) --hostfile "$hosts" --map-by ppr:$gpus_per_node:node --bind-to none \
    -x NCCL_NVLS_ENABLE=0 -x NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-eth0} -x PATH -x LD_LIBRARY_PATH \
    ./train_clip -c configs/vit_$model.conf --set run_dir=/shared/runs/vit_$model "$@"
