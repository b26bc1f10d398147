#!/usr/bin/env bash
# run_local.sh: starts N processes of a command on this machine, one per GPU, as `mpirun -np N` would but
# without MPI: each gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, a fresh file rendezvous and this launch's
# TRAIN_CLIP_RUN_ID (model/distributed.h), and NCCL_NVLS_ENABLE=0. When one fails the others are stopped; the exit code is the first failure's.
# Ctrl-C or a TERM to this script is passed on to every rank as SIGTERM (train_clip saves a checkpoint after the
# current step and exits), and the script waits for them.
#   scripts/run_local.sh N ./train_clip -c configs/vit_b_16.conf [--set key=value ...]
set -u
if [ $# -lt 2 ]; then echo "usage: $0 N command [args...]" >&2; exit 2; fi
n=$1
case $n in
    '' | *[!0-9]* | 0*) echo "$0: N, the number of processes, must be 1 or more, not '$n'" >&2; exit 2 ;;
esac
shift
rdv=$(mktemp -d /tmp/train_clip_rdv.XXXXXX) || exit 1
trap 'rm -rf "$rdv"' EXIT
pids=()
# the ranks run in the background, where a script's children ignore SIGINT: they hear of Ctrl-C from here
stop() { kill -TERM "${pids[@]}" 2>/dev/null; wait; exit "$1"; }
trap 'stop 130' INT
trap 'stop 143' TERM
export NCCL_NVLS_ENABLE=0 WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n TRAIN_CLIP_RENDEZVOUS=file:$rdv/id
export TRAIN_CLIP_RUN_ID=local-$$-$(date +%s%N)  # this launch's, not one left in the caller's environment
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
