// distributed.h: who this process is in a multi-process run, and the bootstrap exchange between processes.
// Three ways to start, tried in this order:
//   1. under MPI (mpirun / srun with PMI), when built with MPI: rank, world size and local rank from MPI;
//   2. from the environment (torchrun / slurm-style): RANK, WORLD_SIZE, LOCAL_RANK (LOCAL_WORLD_SIZE), and a
//      rendezvous for the bootstrap broadcast: TRAIN_CLIP_RENDEZVOUS=file:/shared/path (a fresh path per job)
//      or tcp:HOST:PORT (HOST a name or an IPv4 or IPv6 address, [::1] or ::1), or torchrun's MASTER_ADDR +
//      MASTER_PORT (the rendezvous takes MASTER_PORT + 1). RANK is required with WORLD_SIZE > 1, and a
//      variable that is set but empty is an error, never its default. Rank 0 marks what it publishes with the
//      launch's run id (TRAIN_CLIP_RUN_ID, else the launcher's: slurm's job, step and requeue count, torchrun's
//      --rdzv-id and restart count), so that a rank never takes another job's for its own: a file left at the
//      same path by an earlier job is waited past, a rank of another job given the same port is turned away.
//      Without a run id, only a file newer than the process (within 60 s of the clocks) is taken;
//   3. otherwise a single process (rank 0 of 1), unless a launcher says it started several (OMPI_COMM_WORLD_SIZE,
//      PMI_SIZE or srun's SLURM_STEP_NUM_TASKS above 1 without WORLD_SIZE: an error, as each would train alone).
// So with MPI, MPI's ranks win over RANK / WORLD_SIZE; without it (or not started through it) WORLD_SIZE decides.
// The bootstrap broadcast carries a small blob from rank 0 to all (the NCCL unique id). GPU collectives
// then go through NCCL; CPU collectives (multi-process CPU training) need MPI.
#pragma once
#include <stddef.h>

typedef struct {
    int rank, world, local_rank, local_size;  // local: among the ranks on this machine
    int mpi;               // started through MPI
    char rendezvous[512];  // "file:PATH" or "tcp:HOST:PORT" when started from the environment
    char run_id[128];      // this launch's identity, the same on all its ranks ("": none known)
} Dist;

void dist_init(Dist *d);
// Host threads of a multi-process run. The ranks of a node run their host work in lockstep (every collective
// aligns them), so with each process's OpenMP pool spanning all cores, their parallel regions and NCCL's
// threads compete for the same cores at the same moments and kernel launches wait. Unless the launcher bound
// the process already (its CPU set is smaller than what its cgroup allows: a container's, a Kubernetes pod's or
// a slurm job's cpuset, else the machine's online CPUs), local rank r of n takes CPUs slice r of n of its set
// (cpuset.h); the OpenMP pool gets the process's share of the allowed CPUs unless `threads` > 0 or
// OMP_NUM_THREADS set it. Call before starting threads (NCCL's included); prints what it did.
void dist_place_threads(const Dist *d, int threads);
// Rank r of `size`'s share [lo, hi) of n CPUs: contiguous, even; at least one (ranks beyond n share).
void dist_slice(int n, int r, int size, int *lo, int *hi);
void dist_finalize(Dist *d);
// rank 0's bytes to every rank; the same call on all ranks (a timeout or a lost peer stops the program).
void dist_broadcast(Dist *d, void *buf, size_t bytes);
// Sum of n floats over all ranks, in place (MPI only; a single process returns at once).
void dist_allreduce_sum(Dist *d, float *buf, size_t n);
// Every rank's n floats, in rank order, into all (world * n) (MPI only).
void dist_allgather(Dist *d, const float *mine, float *all, size_t n);
void dist_barrier(Dist *d);
// Print "error: rank R: message" and make every rank exit (MPI_Abort under MPI), never a hang.
__attribute__((noreturn, format(printf, 2, 3))) void dist_fail(const Dist *d, const char *fmt, ...);
