#!/usr/bin/env bash
# run_local.sh: starts N processes of a command on this machine, one per GPU, as `mpirun -np N` would but
# without MPI: each gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and a fresh file rendezvous
# (model/distributed.h), and NCCL_NVLS_ENABLE=0. When one fails the others are stopped; the exit code is the first failure's.
#   scripts/run_local.sh N ./train_clip -c configs/vit_b_16.conf [--set key=value ...]
set -u
if [ $# -lt 2 ]; then echo "usage: $0 N command [args...]" >&2; exit 2; fi
n=$1
shift
rdv=$(mktemp -d /tmp/train_clip_rdv.XXXXXX)
trap 'rm -rf "$rdv"' EXIT
export NCCL_NVLS_ENABLE=0 WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n TRAIN_CLIP_RENDEZVOUS=file:$rdv/id
pids=()
for ((r = 0; r < n; r++)); do
    RANK=$r LOCAL_RANK=$r "$@" &
    pids+=($!)
done
rc=0
for ((i = 0; i < n; i++)); do
    wait -n
    s=$?
    if [ $s -ne 0 ] && [ $rc -eq 0 ]; then
        rc=$s
        kill "${pids[@]}" 2>/dev/null
    fi
done
exit $rc
