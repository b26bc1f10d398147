// clip_dist.cu: the process's NCCL communicator, its stream, the collectives the GPU step uses and the polled
// waits that turn a lost rank or an NCCL error into an error exit (see clip_dist.h).
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/adamw.cuh"
#include "clip_dist.h"
extern "C" {
#include "utils.h"
}

#ifdef HAVE_NCCL
#include <nccl.h>

// NCCL 2.28 added CTA policies and copy-engine all-gathers over symmetric windows; older NCCL runs without them.
#define HAVE_NCCL_CE (NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 0))

struct GpuDist {
    Dist *d;
    double timeout;
    ncclComm_t comm;
    ncclComm_t ce_comm;                       // CTA policy ZERO, for the bulk all-gathers (NULL: not used)
#if HAVE_NCCL_CE
    ncclWindow_t win;                         // gd_alloc's block on ce_comm
#endif
    char *win_lo, *win_hi;
    cudaStream_t stream;                      // every collective
    cudaEvent_t compute_done, comm_done, done;
    float *host_io;                           // device staging of the host collectives
    size_t host_io_bytes;
};

static GpuDist *the_dist;  // one communicator per process (one process per GPU)

// This process's error line, then its exit. _exit, not exit: no teardown of the communicator or the CUDA context
// that would wait for a collective that never completes (the driver reclaims both when the process ends).
__attribute__((noreturn)) static void gd_exit(const GpuDist *gd, const char *msg) {
    fflush(NULL);
    fprintf(stderr, "error: rank %d of %d: %s\n", gd->d->rank, gd->d->world, msg);
    _exit(1);
}

// Ends every rank's run: MPI_Abort under MPI; otherwise this process exits at once, and the other ranks stop
// at their own next wait.
__attribute__((noreturn, format(printf, 2, 3))) static void gd_fail(const GpuDist *gd, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (gd->d->mpi) dist_fail(gd->d, "%s", msg);
    gd_exit(gd, msg);
}

// NCCL's blocking calls that every rank must make (creating or splitting a communicator) have no time limit: a rank
// that never gets there (a process that did not start, a node that died) leaves the others in them forever, where
// no poll can see it. A thread ends the process once dist_timeout passes without the call returning, with gd_exit
// under MPI too (MPI_Abort is not for other threads; mpirun ends the job when a rank exits non-zero).
typedef struct {
    const GpuDist *gd;
    const char *what;
    int done;
    pthread_t thread;
} Deadline;

static void *deadline_main(void *arg) {
    Deadline *w = (Deadline *)arg;
    for (double t0 = now_seconds(); !__atomic_load_n(&w->done, __ATOMIC_ACQUIRE); usleep(100000)) {
        if (now_seconds() - t0 <= w->gd->timeout) continue;
        char msg[512];
        snprintf(msg, sizeof(msg), "%s did not complete within dist_timeout = %g s: another rank did not start or died, or "
                 "cannot reach this one (the network NCCL uses: NCCL_SOCKET_IFNAME; a firewall)", w->what, w->gd->timeout);
        gd_exit(w->gd, msg);
    }
    return NULL;
}

static void deadline_start(Deadline *w, const GpuDist *gd, const char *what) {
    w->gd = gd, w->what = what, w->done = 0;
    int rc = pthread_create(&w->thread, NULL, deadline_main, w);
    if (rc) fatal("pthread_create failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
}

static void deadline_end(Deadline *w) {
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    int rc = pthread_join(w->thread, NULL);
    if (rc) fatal("pthread_join failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
}

static void nccl_check(const GpuDist *gd, ncclResult_t r, const char *call, const char *file, int line) {
    if (r == ncclSuccess) return;
    gd_fail(gd, "%s failed at %s:%d: %s (%s)", call, file, line, ncclGetErrorString(r), gd->comm ? ncclGetLastError(gd->comm) : "");
}
#define ncclCheck(gd, call) nccl_check((gd), (call), #call, __FILE__, __LINE__)

void gpu_dist_init(Dist *d, double timeout_s) {
    if (the_dist) fatal("gpu_dist_init: called twice");
    GpuDist *gd = (GpuDist *)callocCheck(1, sizeof(GpuDist));
    gd->d = d, gd->timeout = timeout_s;
    int gpus = cuda_device_count(), dev = gpus == 1 ? 0 : d->local_rank;  // a launcher may show each process only its GPU
    if (dev >= gpus)
        dist_fail(d, "local rank %d needs GPU %d, but %d GPU(s) are visible: start at most one process per GPU on each machine "
                  "(check CUDA_VISIBLE_DEVICES)", d->local_rank, d->local_rank, gpus);
    cudaCheck(cudaSetDevice(dev));
    setenv("NCCL_NVLS_ENABLE", "0", 1);  // no NVLink multicast: it can take a shared host's GPUs out of service
    ncclUniqueId id;
    if (d->rank == 0) ncclCheck(gd, ncclGetUniqueId(&id));
    dist_broadcast(d, &id, sizeof(id));
    Deadline w;
    deadline_start(&w, gd, "NCCL's initialisation");
    ncclCheck(gd, ncclCommInitRank(&gd->comm, d->world, id, d->rank));
    deadline_end(&w);
    int least, greatest;  // stream priorities: lower numbers are scheduled first; TRAIN_CLIP_COMM_PRIORITY=low to compare
    cudaCheck(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    const char *prio = getenv("TRAIN_CLIP_COMM_PRIORITY");
    cudaCheck(cudaStreamCreateWithPriority(&gd->stream, cudaStreamNonBlocking, prio && !strcmp(prio, "low") ? least : greatest));
    cudaCheck(cudaEventCreateWithFlags(&gd->compute_done, cudaEventDisableTiming));
    cudaCheck(cudaEventCreateWithFlags(&gd->comm_done, cudaEventDisableTiming));
    cudaCheck(cudaEventCreateWithFlags(&gd->done, cudaEventDisableTiming));
    the_dist = gd;
    double n = 1;  // everyone there and connected, within the timeout
    gpu_dist_sum_host(gd, &n, 1);
    if (n != d->world) gd_fail(gd, "the communicator's first all-reduce counted %g ranks, not %d", n, d->world);
}

void gpu_dist_finalize(void) {
    GpuDist *gd = the_dist;
    if (!gd) return;
    gd_sync(gd);
    if (gd->ce_comm) ncclCheck(gd, ncclCommDestroy(gd->ce_comm));
    ncclCheck(gd, ncclCommDestroy(gd->comm));
    cudaCheck(cudaStreamDestroy(gd->stream));
    cudaCheck(cudaEventDestroy(gd->compute_done)), cudaCheck(cudaEventDestroy(gd->comm_done)), cudaCheck(cudaEventDestroy(gd->done));
    if (gd->host_io) cudaCheck(cudaFree(gd->host_io));
    free(gd);
    the_dist = NULL;
}

GpuDist *gpu_dist(void) { return the_dist; }
int gd_rank(const GpuDist *gd) { return gd->d->rank; }
int gd_world(const GpuDist *gd) { return gd->d->world; }
cudaStream_t gd_stream(const GpuDist *gd) { return gd->stream; }

void gd_begin(GpuDist *gd) {
    cudaCheck(cudaEventRecord(gd->compute_done, 0));
    cudaCheck(cudaStreamWaitEvent(gd->stream, gd->compute_done, 0));
}

void gd_end(GpuDist *gd) {
    cudaCheck(cudaEventRecord(gd->comm_done, gd->stream));
    cudaCheck(cudaStreamWaitEvent(0, gd->comm_done, 0));
}

void gd_sync(GpuDist *gd) {
    cudaCheck(cudaEventRecord(gd->done, 0));
    gd_wait_event(gd, gd->done);
}

void gd_wait_event(GpuDist *gd, cudaEvent_t ev) {
    double t0 = now_seconds();
    for (long polls = 0;; polls++) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) cuda_check(e, "cudaEventQuery", __FILE__, __LINE__);
        ncclResult_t async, async_ce = ncclSuccess;
        ncclCheck(gd, ncclCommGetAsyncError(gd->comm, &async));
        if (gd->ce_comm) ncclCheck(gd, ncclCommGetAsyncError(gd->ce_comm, &async_ce));
        if (async == ncclSuccess || async == ncclInProgress) async = async_ce;
        if (async != ncclSuccess && async != ncclInProgress) {
            gd_fail(gd, "NCCL reported an error: %s (%s); another rank may have failed", ncclGetErrorString(async),
                    ncclGetLastError(gd->comm));
        }
        if (now_seconds() - t0 > gd->timeout)
            gd_fail(gd, "a collective did not complete within dist_timeout = %g s: another rank died, hangs, or is much slower "
                    "(raise dist_timeout if checkpoints or evaluation take longer)", gd->timeout);
        if (polls > 1000) usleep(50);  // spin for the first polls: most waits are short
    }
}

void gd_group(GpuDist *gd, int start) { ncclCheck(gd, start ? ncclGroupStart() : ncclGroupEnd()); }

void gd_allreduce(GpuDist *gd, float *x, size_t n) {
    ncclCheck(gd, ncclAllReduce(x, x, n, ncclFloat, ncclSum, gd->comm, gd->stream));
}

void gd_allgather(GpuDist *gd, float *buf, size_t per_rank) {
    ncclCheck(gd, ncclAllGather(buf + (size_t)gd->d->rank * per_rank, buf, per_rank, ncclFloat, gd->comm, gd->stream));
}

void gd_reduce_scatter(GpuDist *gd, float *buf, size_t per_rank) {
    ncclCheck(gd, ncclReduceScatter(buf, buf + (size_t)gd->d->rank * per_rank, per_rank, ncclFloat, ncclSum, gd->comm, gd->stream));
}

void gd_broadcast(GpuDist *gd, float *x, size_t n) { ncclCheck(gd, ncclBroadcast(x, x, n, ncclFloat, 0, gd->comm, gd->stream)); }

// Each owner's part of buf (len elements of `type`, es bytes each) becomes the sum over the ranks.
static void reduce_parts(GpuDist *gd, char *buf, size_t len, ncclDataType_t type, size_t es) {
    int W = gd->d->world;
    if (len % W == 0) {
        size_t per = len / W;
        ncclCheck(gd, ncclReduceScatter(buf, buf + gd->d->rank * per * es, per, type, ncclSum, gd->comm, gd->stream));
        return;
    }
    gd_group(gd, 1);
    for (int r = 0; r < W; r++) {
        size_t lo, hi;
        dist_part(len, W, r, &lo, &hi);
        if (hi > lo) ncclCheck(gd, ncclReduce(buf + lo * es, buf + lo * es, hi - lo, type, ncclSum, r, gd->comm, gd->stream));
    }
    gd_group(gd, 0);
}

// Whether an all-gather of buf (bytes) goes on the copy engines' communicator.
static int on_ce(const GpuDist *gd, const void *buf, size_t bytes) {
    return gd->ce_comm && (const char *)buf >= gd->win_lo && (const char *)buf + bytes <= gd->win_hi;
}

// In place: rank r's part buf + r * per_rank to every rank.
static void allgather_bulk(GpuDist *gd, float *buf, size_t per_rank) {
    ncclComm_t c = on_ce(gd, buf, per_rank * gd->d->world * sizeof(float)) ? gd->ce_comm : gd->comm;
    ncclCheck(gd, ncclAllGather(buf + (size_t)gd->d->rank * per_rank, buf, per_rank, ncclFloat, c, gd->stream));
}

void gd_reduce_grads(GpuDist *gd, float *x, bf16 *x16, size_t len, int parts) {
    int W = gd->d->world;
    if (!x16) {
        if (parts) {
            reduce_parts(gd, (char *)x, len, ncclFloat, sizeof(float));
        } else if (len % W == 0 && on_ce(gd, x, len * sizeof(float))) {
            gd_reduce_scatter(gd, x, len / W);  // on the SMs (a sum), then the copy engines pass the parts around
            allgather_bulk(gd, x, len / W);
        } else {
            ncclCheck(gd, ncclAllReduce(x, x, len, ncclFloat, ncclSum, gd->comm, gd->stream));
        }
        return;
    }
    copy_to_bf16_gpu(x16, x, len, gd->stream);
    size_t lo = 0, hi = len;
    if (parts) reduce_parts(gd, (char *)x16, len, ncclBfloat16, sizeof(bf16)), dist_part(len, gd->d->world, gd->d->rank, &lo, &hi);
    else ncclCheck(gd, ncclAllReduce(x16, x16, len, ncclBfloat16, ncclSum, gd->comm, gd->stream));
    copy_to_fp32_gpu(x + lo, x16 + lo, hi - lo, gd->stream);
}

void gd_gather_parts(GpuDist *gd, float *buf, size_t len) {
    int W = gd->d->world;
    if (len % W == 0) return allgather_bulk(gd, buf, len / W);
    gd_group(gd, 1);
    for (int r = 0; r < W; r++) {
        size_t lo, hi;
        dist_part(len, W, r, &lo, &hi);
        if (hi > lo) ncclCheck(gd, ncclBroadcast(buf + lo, buf + lo, hi - lo, ncclFloat, r, gd->comm, gd->stream));
    }
    gd_group(gd, 0);
}

void *gd_alloc(GpuDist *gd, size_t bytes) {
    void *p = NULL;
#if HAVE_NCCL_CE
    // NCCL's windows cover the ranks of one machine (NVLink); every decision is taken by all ranks together, since a
    // rank that gathered on the other communicator than its peers would wait forever.
    const char *env = getenv("TRAIN_CLIP_COPY_ENGINE");
    if (!(env && !strcmp(env, "0")) && gd->d->local_size == gd->d->world && !gd->win_lo) {
        double ok = ncclMemAlloc(&p, bytes) == ncclSuccess, registered = 0;
        gpu_dist_sum_host(gd, &ok, 1);
        if (ok == gd->d->world) {
            if (!gd->ce_comm) {
                ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
                cfg.CTAPolicy = NCCL_CTA_POLICY_ZERO;
                Deadline w;
                deadline_start(&w, gd, "the copy-engine communicator's creation (ncclCommSplit)");
                ncclCheck(gd, ncclCommSplit(gd->comm, 0, gd->d->rank, &gd->ce_comm, &cfg));
                deadline_end(&w);
            }
            registered = ncclCommWindowRegister(gd->ce_comm, p, bytes, &gd->win, NCCL_WIN_COLL_SYMMETRIC) == ncclSuccess;
            ok = registered;
            gpu_dist_sum_host(gd, &ok, 1);
        }
        if (ok == gd->d->world) {
            gd->win_lo = (char *)p, gd->win_hi = (char *)p + bytes;
            if (gd->d->rank == 0)
                printf("collectives: the bulk all-gathers on the copy engines (NCCL CTA policy ZERO, a %.2f GiB window; "
                       "TRAIN_CLIP_COPY_ENGINE=0 keeps them on the SMs)\n", bytes / 1073741824.0);
            return p;
        }
        if (registered) ncclCheck(gd, ncclCommWindowDeregister(gd->ce_comm, gd->win));
        if (p) ncclCheck(gd, ncclMemFree(p)), p = NULL;
        if (gd->d->rank == 0) fprintf(stderr, "warning: NCCL could not give every rank a %.2f GiB window: the all-gathers stay on the SMs\n",
                                      bytes / 1073741824.0);
    }
#endif
    cudaCheck(cudaMalloc(&p, bytes));
    return p;
}

void gd_free(GpuDist *gd, void *p) {
#if HAVE_NCCL_CE
    if (p && (char *)p == gd->win_lo) {
        ncclCheck(gd, ncclCommWindowDeregister(gd->ce_comm, gd->win));
        ncclCheck(gd, ncclMemFree(p));
        gd->win_lo = gd->win_hi = NULL;
        return;
    }
#endif
    cudaCheck(cudaFree(p));
}

// Host bytes through the device buffer host_io (grown as needed), in float units for the collectives.
static float *host_io(GpuDist *gd, size_t bytes) {
    if (bytes > gd->host_io_bytes) {
        if (gd->host_io) cudaCheck(cudaFree(gd->host_io));
        cudaCheck(cudaMalloc(&gd->host_io, bytes));
        gd->host_io_bytes = bytes;
    }
    return gd->host_io;
}

void gpu_dist_allgather_host(GpuDist *gd, const void *mine, void *all, size_t bytes) {
    size_t per = (bytes + 3) / 4, W = (size_t)gd->d->world;  // floats per rank
    float *buf = host_io(gd, W * per * 4);
    cudaCheck(cudaMemcpy(buf + (size_t)gd->d->rank * per, mine, bytes, cudaMemcpyHostToDevice));
    gd_begin(gd);
    gd_allgather(gd, buf, per);
    gd_end(gd);
    gd_sync(gd);
    for (size_t r = 0; r < W; r++) cudaCheck(cudaMemcpy((char *)all + r * bytes, buf + r * per, bytes, cudaMemcpyDeviceToHost));
}

void gpu_dist_sum_host(GpuDist *gd, double *x, int n) {
    double *buf = (double *)host_io(gd, (size_t)n * sizeof(double));
    cudaCheck(cudaMemcpy(buf, x, (size_t)n * sizeof(double), cudaMemcpyHostToDevice));
    gd_begin(gd);
    ncclCheck(gd, ncclAllReduce(buf, buf, (size_t)n, ncclDouble, ncclSum, gd->comm, gd->stream));
    gd_end(gd);
    gd_sync(gd);
    cudaCheck(cudaMemcpy(x, buf, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost));
}

#else  // no NCCL: a single process, so gpu_dist() is NULL and the collectives are never called

void gpu_dist_init(Dist *d, double timeout_s) {
    dist_fail(d, "%d processes need NCCL for the GPU collectives, and this build has none (install NCCL, e.g. Debian's "
              "libnccl-dev, and rebuild), or run one process", d->world);
}
void gpu_dist_finalize(void) {}
GpuDist *gpu_dist(void) { return NULL; }
#define NO_NCCL { fatal("%s: this build has no NCCL", __func__); }
void gpu_dist_allgather_host(GpuDist *, const void *, void *, size_t) NO_NCCL
void gpu_dist_sum_host(GpuDist *, double *, int) NO_NCCL
int gd_rank(const GpuDist *) NO_NCCL
int gd_world(const GpuDist *) NO_NCCL
cudaStream_t gd_stream(const GpuDist *) NO_NCCL
void gd_begin(GpuDist *) NO_NCCL
void gd_end(GpuDist *) NO_NCCL
void gd_sync(GpuDist *) NO_NCCL
void gd_wait_event(GpuDist *, cudaEvent_t) NO_NCCL
void gd_group(GpuDist *, int) NO_NCCL
void gd_allreduce(GpuDist *, float *, size_t) NO_NCCL
void gd_allgather(GpuDist *, float *, size_t) NO_NCCL
void gd_reduce_scatter(GpuDist *, float *, size_t) NO_NCCL
void gd_broadcast(GpuDist *, float *, size_t) NO_NCCL
void gd_reduce_grads(GpuDist *, float *, bf16 *, size_t, int) NO_NCCL
void *gd_alloc(GpuDist *, size_t) NO_NCCL
void gd_free(GpuDist *, void *) NO_NCCL
void gd_gather_parts(GpuDist *, float *, size_t) NO_NCCL
#endif
