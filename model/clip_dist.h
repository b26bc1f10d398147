// clip_dist.h: the GPU side of a multi-process run (DESIGN.md "Multi-GPU"; processes and the bootstrap are
// model/distributed.h). One process per GPU: the process of local rank k uses GPU k and joins the run's one
// NCCL communicator, made once per process by gpu_dist_init and found by gpu_dist() (NULL in a single-process
// run). NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
//
// Collectives run on the communicator's own stream, created with the device's highest priority so that their
// blocks are scheduled ahead of the compute kernels' waiting blocks as those retire (the gradient all-reduce
// runs beside backward; TRAIN_CLIP_COMM_PRIORITY=low gives it the lowest instead, for comparison). gd_begin /
// gd_end order them after, and make the default stream wait for, everything enqueued so far. Every host wait on
// collectives goes through gd_sync, which polls: an NCCL error (ncclCommGetAsyncError) or a wait longer than
// the timeout (a rank died or hangs) ends this process with "error: rank R of W: cause" (MPI_Abort under MPI,
// so every rank stops), never a silent hang.
// The step's device memory comes from gd_alloc: one block per rank, the same size on every rank, registered with NCCL
// as a symmetric window of a second communicator whose CTA policy is ZERO. Its bulk all-gathers (the second half of
// each gradient sum, ZeRO-1's parameter gathers) then run on the copy engines where NCCL can (one node, NVLink), and
// the SMs stay with the compute beside them: a kernel beside an SM collective runs up to 2x slower (docs/benchmarks.md,
// "Multi-GPU"). TRAIN_CLIP_COPY_ENGINE=0 turns this off (plain cudaMalloc, every collective on SMs).
// A build without NCCL is single-process: gpu_dist_init refuses a larger world and the rest is never reached.
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "distributed.h"

typedef struct GpuDist GpuDist;

// Selects GPU d->local_rank, makes the communicator (rank 0's NCCL id through dist_broadcast) and checks with
// one all-reduce that every rank is there. timeout_s bounds each later wait. Call before any other CUDA work.
void gpu_dist_init(Dist *d, double timeout_s);
void gpu_dist_finalize(void);
GpuDist *gpu_dist(void);
// The trainer's small exchanges, host memory in and out: every rank's `bytes` in rank order into all
// (world * bytes); the sum over ranks of x (n doubles, in place).
void gpu_dist_allgather_host(GpuDist *gd, const void *mine, void *all, size_t bytes);
void gpu_dist_sum_host(GpuDist *gd, double *x, int n);
// A range of len elements split for ZeRO-1 over `world` ranks: rank r owns [*lo, *hi) of it, parts of
// ceil(len / world) elements (the last ones shorter or empty when world does not divide len).
static inline void dist_part(size_t len, int world, int r, size_t *lo, size_t *hi) {
    size_t part = (len + (size_t)world - 1) / (size_t)world;
    *lo = part * (size_t)r < len ? part * (size_t)r : len;
    *hi = part * (size_t)(r + 1) < len ? part * (size_t)(r + 1) : len;
}

#ifdef __cplusplus
}
#include "../kernels/common.cuh"

int gd_rank(const GpuDist *gd);
int gd_world(const GpuDist *gd);
// Collectives after the default stream's work so far / the default stream after the collectives so far.
void gd_begin(GpuDist *gd);
void gd_end(GpuDist *gd);
// The host waits for the default stream / for an event (polled, with the timeout and NCCL's error state).
void gd_sync(GpuDist *gd);
void gd_wait_event(GpuDist *gd, cudaEvent_t ev);
// Collectives between gd_group(gd, 1) and gd_group(gd, 0) are launched together (ncclGroupStart/End).
void gd_group(GpuDist *gd, int start);
// The communicator's stream (for work that must run in order with the collectives, e.g. their events).
cudaStream_t gd_stream(const GpuDist *gd);
// fp32, in place, on the communicator's stream. Sum over ranks of x (n).
void gd_allreduce(GpuDist *gd, float *x, size_t n);
// buf (world * per_rank): rank r's part is buf + r * per_rank. All-gather: every rank gets every part;
// reduce-scatter: rank r's part becomes the sum of every rank's copy of it.
void gd_allgather(GpuDist *gd, float *buf, size_t per_rank);
void gd_reduce_scatter(GpuDist *gd, float *buf, size_t per_rank);
// Rank 0's x (n) to every rank.
void gd_broadcast(GpuDist *gd, float *x, size_t n);
// Device memory for the step's buffers (collective: every rank, the same bytes), and its release (collective too).
void *gd_alloc(GpuDist *gd, size_t bytes);
void gd_free(GpuDist *gd, void *p);
// A gradient bucket x (len) summed over the ranks: all of it (parts = 0), or with ZeRO-1 (parts = 1) only each
// owner's part (dist_part; a reduce-scatter, or one reduce per part when the world does not divide len). All of it
// is a reduce-scatter then an all-gather on the copy engines when x lies in gd_alloc's window and the world divides
// len; an all-reduce otherwise. With
// x16 (len bf16 scratch) the sum is taken in bf16: x is rounded into x16, NCCL adds in bf16 (each partial sum
// rounded to bf16: world - 1 roundings after the first), and the sum, or this rank's part of it, is widened back
// into x; half the bytes of fp32 (docs/benchmarks.md "Multi-GPU" for the numerics).
void gd_reduce_grads(GpuDist *gd, float *x, bf16 *x16, size_t len, int parts);
// Every rank gets every owner's part of buf (len): an all-gather (on the copy engines when buf lies in gd_alloc's
// window), or broadcasts when the world does not divide len.
void gd_gather_parts(GpuDist *gd, float *buf, size_t len);
#endif
