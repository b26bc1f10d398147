// bench_overlap.cu: how much the ViT-H/14 step's GEMMs slow down while an NCCL all-reduce runs beside them
// (docs/benchmarks.md, Multi-GPU, Run 8: its 2-GPU GEMMs ran ~8 ms slower whatever NCCL was given). Run on two
// GPUs: scripts/run_local.sh 2 ./build/tests/bench_overlap [reps]; vary NCCL_MAX_CTAS / NCCL_MIN_CTAS outside.
// Per GEMM shape, medians of reps: the GEMM alone; the all-reduce of the step's largest buckets alone; and each
// GEMM enqueued right after the all-reduce (on the communicator's stream, as the step does), i.e. beside it.
// If a GEMM beside a collective takes about as long as the collective, the GEMM waits for SMs that NCCL holds
// (a persistent GEMM kernel), rather than sharing bandwidth. BENCH_SM_TARGETS="0,120,100" repeats the table with
// the GEMMs planned for that many SMs (cuBLASLt's SM count target; 0 = all).
#include <string.h>

#include "../kernels/matmul.cuh"
#include "../model/clip_dist.h"
#include "bench_gpu.h"
#ifdef HAVE_NCCL
#include <nccl.h>
#endif
extern "C" {
#include "../model/distributed.h"
#include "../model/utils.h"
}

typedef struct {
    const char *name;
    int N, C, OC, weight_grad;  // forward out (N, OC) = inp (N, C) @ w^T, or dw (OC, C) += dout^T @ inp
} Shape;

static const Shape SHAPES[] = {
    {"H/14 qkv fwd", 16448, 1280, 3840, 0},    {"H/14 c_fc fwd", 16448, 1280, 5120, 0},
    {"H/14 c_proj fwd", 16448, 5120, 1280, 0}, {"H/14 c_fc dW", 16448, 1280, 5120, 1},
    {"H/14 c_proj dW", 16448, 5120, 1280, 1},
};

static void gemm(const Shape *s, bf16 *a, bf16 *b, bf16 *out, float *dw) {
    if (s->weight_grad) matmul_backward_weight_gpu<bf16>(dw, a, b, s->N, s->C, s->OC);  // a: dout (N, OC), b: inp (N, C)
    else matmul_forward_gpu<bf16>(out, a, b, NULL, s->N, s->C, s->OC);                 // a: inp (N, C), b: w (OC, C)
}


#ifdef HAVE_NCCL
// ---- Collective variants (BENCH_COLL=1): the same 1 GB of gradients summed in other ways, each alone and with two
// GEMMs beside it. Communicators of their own with NCCL's CTA policies: default, EFFICIENCY (fewest CTAs) and ZERO
// (copy engines where NCCL has them: all-gather of a symmetric window); the buffer from ncclMemAlloc, registered.
#define NC(call) nc_check((call), #call, __LINE__)
static void nc_check(ncclResult_t r, const char *call, int line) {
    if (r != ncclSuccess) fatal("%s failed at %s:%d: %s", call, __FILE__, line, ncclGetErrorString(r));
}
static ncclComm_t make_comm(Dist *d, int policy) {
    ncclUniqueId id;
    if (d->rank == 0) NC(ncclGetUniqueId(&id));
    dist_broadcast(d, &id, sizeof(id));
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.CTAPolicy = policy;
    ncclComm_t c;
    NC(ncclCommInitRankConfig(&c, d->world, id, d->rank, &cfg));
    return c;
}
typedef struct {
    ncclComm_t def, eff, zero;
    float *buf, *staging;  // one ncclMemAlloc'd block (n each), a symmetric window of the ZERO communicator only
    size_t n;
    int rank, world;
    cudaStream_t s;
} Coll;
// variant: 0 all-reduce (default), 1 all-reduce (EFFICIENCY), 2 reduce-scatter (default) + all-gather (ZERO),
// 3 reduce-scatter only, 4 all-gather (ZERO) only, 5 all-gather (default) only, 6 all-to-all (ZERO) + sum + all-gather
// (ZERO), 7 all-to-all (ZERO) alone
static const char *const COLL_NAMES[] = {"all-reduce", "all-reduce, CTA policy EFFICIENCY", "reduce-scatter + all-gather (ZERO)",
                                         "reduce-scatter alone", "all-gather (ZERO) alone", "all-gather (default) alone",
                                         "all-to-all (ZERO) + sum + all-gather (ZERO)", "all-to-all (ZERO) alone"};
#define NUM_VARIANTS 8
__global__ void sum_parts_kernel(float *mine, const float *staging, size_t per, int world, int self) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < per / 4; i += (size_t)gridDim.x * blockDim.x) {
        float4 a = ((float4 *)mine)[i];
        for (int r = 0; r < world; r++) {
            if (r == self) continue;
            float4 b = ((const float4 *)(staging + (size_t)r * per))[i];
            a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
        }
        ((float4 *)mine)[i] = a;
    }
}
static void coll_run(Coll *c, int v) {
    size_t per = c->n / c->world;
    float *mine = c->buf + (size_t)c->rank * per;
    if (v == 0 || v == 1) NC(ncclAllReduce(c->buf, c->buf, c->n, ncclFloat, ncclSum, v ? c->eff : c->def, c->s));
    if (v == 2 || v == 3) NC(ncclReduceScatter(c->buf, mine, per, ncclFloat, ncclSum, c->def, c->s));
    if (v == 6 || v == 7) NC(ncclAlltoAll(c->buf, c->staging, per, ncclFloat, c->zero, c->s));
    if (v == 6) {
        sum_parts_kernel<<<4 * num_sms(), 256, 0, c->s>>>(mine, c->staging, per, c->world, c->rank);
        cudaCheckLaunch();
    }
    if (v == 2 || v == 4 || v == 6) NC(ncclAllGather(mine, c->buf, per, ncclFloat, c->zero, c->s));
    if (v == 5) NC(ncclAllGather(mine, c->buf, per, ncclFloat, c->def, c->s));
}
static void coll_variants(Dist *d, GpuDist *gd, int reps, bf16 *a, bf16 *b, bf16 *out, float *dw) {
    Coll c = {};
    c.rank = d->rank, c.world = d->world, c.n = (size_t)250 << 20, c.s = gd_stream(gd);
    c.def = make_comm(d, NCCL_CTA_POLICY_DEFAULT), c.eff = make_comm(d, NCCL_CTA_POLICY_EFFICIENCY), c.zero = make_comm(d, NCCL_CTA_POLICY_ZERO);
    NC(ncclMemAlloc((void **)&c.buf, 2 * c.n * sizeof(float)));
    c.staging = c.buf + c.n;
    fill_normal<float>(c.buf, 2 * c.n, 3, 1e-3f);
    ncclWindow_t w;
    ncclComm_t comms[3] = {c.def, c.eff, c.zero};
    NC(ncclCommWindowRegister(c.zero, c.buf, 2 * c.n * sizeof(float), &w, NCCL_WIN_COLL_SYMMETRIC));
    cudaCheck(cudaDeviceSynchronize());
    cudaEvent_t e0, e1, c0, c1;
    cudaCheck(cudaEventCreate(&e0)), cudaCheck(cudaEventCreate(&e1)), cudaCheck(cudaEventCreate(&c0)), cudaCheck(cudaEventCreate(&c1));
    float *tc = (float *)mallocCheck(reps * sizeof(float)), *tg = (float *)mallocCheck(reps * sizeof(float));
    printf("\nCollective variants over %.2f GB fp32 (ncclMemAlloc, a symmetric window of the ZERO communicator), medians of %d:\n", c.n * 4.0 / 1e9, reps);
    printf("| variant | alone ms | GEMM | GEMM alone ms | GEMM beside ms | collective beside ms |\n|---|---|---|---|---|---|\n");
    const int gemms[2] = {1, 4};  // c_fc fwd, c_proj dW
    for (int v = 0; v < NUM_VARIANTS; v++) {
        for (int r = 0; r < reps + 1; r++) {
            gd_begin(gd);
            cudaCheck(cudaEventRecord(c0, c.s));
            coll_run(&c, v);
            cudaCheck(cudaEventRecord(c1, c.s));
            gd_end(gd), gd_sync(gd);
            if (r) cudaCheck(cudaEventElapsedTime(&tc[r - 1], c0, c1));
        }
        float alone = median(tc, reps);
        for (int gi = 0; gi < 2; gi++) {
            const Shape *s = &SHAPES[gemms[gi]];
            for (int r = 0; r < reps + 1; r++) {
                cudaCheck(cudaEventRecord(e0, 0));
                gemm(s, a, b, out, dw);
                cudaCheck(cudaEventRecord(e1, 0));
                gd_sync(gd);
                if (r) cudaCheck(cudaEventElapsedTime(&tg[r - 1], e0, e1));
            }
            float g_alone = median(tg, reps);
            for (int r = 0; r < reps + 1; r++) {
                gd_begin(gd);
                cudaCheck(cudaEventRecord(c0, c.s));
                coll_run(&c, v);
                cudaCheck(cudaEventRecord(c1, c.s));
                cudaCheck(cudaEventRecord(e0, 0));
                gemm(s, a, b, out, dw);
                cudaCheck(cudaEventRecord(e1, 0));
                gd_end(gd), gd_sync(gd);
                if (r) cudaCheck(cudaEventElapsedTime(&tg[r - 1], e0, e1)), cudaCheck(cudaEventElapsedTime(&tc[r - 1], c0, c1));
            }
            printf("| %s | %.3f | %s | %.3f | %.3f | %.3f |\n", COLL_NAMES[v], alone, s->name, g_alone, median(tg, reps), median(tc, reps));
        }
    }
    NC(ncclCommWindowDeregister(c.zero, w));
    NC(ncclMemFree(c.buf));
    for (int i = 0; i < 3; i++) NC(ncclCommDestroy(comms[i]));
    free(tc), free(tg);
}
#endif

int main(int argc, char **argv) {
    if (cuda_device_count() == 0) {
        printf("bench_overlap: skipped: no GPU\n");
        return 0;
    }
    Dist d;
    dist_init(&d);
    if (d.world < 2) {
        printf("bench_overlap: skipped: needs 2 ranks (scripts/run_local.sh 2 %s)\n", argv[0]);
        return 0;
    }
    if (d.rank != 0 && !freopen("/dev/null", "w", stdout)) return 1;
    dist_place_threads(&d, 0);
    gpu_dist_init(&d, 300);
    GpuDist *gd = gpu_dist();
    int reps = argc > 1 ? atoi(argv[1]) : 10;
    if (reps < 1 || reps > 1000) fatal("bench_overlap: reps %d: expected 1..1000", reps);
    size_t max_in = 16448 * 5120, grad_elems = 250u << 20;  // 1 GB of fp32 gradients: about ViT-H/14's 4 largest buckets
    bf16 *a, *b, *out;
    float *dw, *grads;
    cudaCheck(cudaMalloc(&a, max_in * sizeof(bf16))), cudaCheck(cudaMalloc(&b, max_in * sizeof(bf16)));
    cudaCheck(cudaMalloc(&out, max_in * sizeof(bf16))), cudaCheck(cudaMalloc(&dw, 5120 * 5120 * sizeof(float)));
    cudaCheck(cudaMalloc(&grads, grad_elems * sizeof(float)));
    fill_normal<bf16>(a, max_in, 1, 1.0f), fill_normal<bf16>(b, max_in, 2, 0.02f), fill_normal<float>(grads, grad_elems, 3, 1e-3f);
    cudaCheck(cudaMemset(dw, 0, 5120 * 5120 * sizeof(float)));
    cudaEvent_t e0, e1, c0, c1;
    cudaCheck(cudaEventCreate(&e0)), cudaCheck(cudaEventCreate(&e1)), cudaCheck(cudaEventCreate(&c0)), cudaCheck(cudaEventCreate(&c1));
    float *t_alone = (float *)mallocCheck(reps * sizeof(float)), *t_beside = (float *)mallocCheck(reps * sizeof(float));
    float *t_comm = (float *)mallocCheck(reps * sizeof(float));
    // the all-reduce alone
    for (int r = 0; r < reps + 1; r++) {
        gd_begin(gd);
        cudaCheck(cudaEventRecord(c0, gd_stream(gd)));
        gd_allreduce(gd, grads, grad_elems);
        cudaCheck(cudaEventRecord(c1, gd_stream(gd)));
        gd_end(gd), gd_sync(gd);
        if (r) cudaCheck(cudaEventElapsedTime(&t_comm[r - 1], c0, c1));
    }
    float comm_ms = median(t_comm, reps);
    printf("GPU 2 ranks; all-reduce of %.2f GB fp32 alone: %.3f ms (NCCL_MAX_CTAS=%s NCCL_MIN_CTAS=%s)\n",
           grad_elems * 4.0 / 1e9, comm_ms, getenv("NCCL_MAX_CTAS") ? getenv("NCCL_MAX_CTAS") : "default",
           getenv("NCCL_MIN_CTAS") ? getenv("NCCL_MIN_CTAS") : "default");
    const char *targets = getenv("BENCH_SM_TARGETS") ? getenv("BENCH_SM_TARGETS") : "0";
    printf("| GEMM | SM target | TFLOP | alone ms | beside the all-reduce ms | slowdown ms | all-reduce beside it ms |\n|---|---|---|---|---|---|---|\n");
    for (const char *t = targets; *t; t = strchr(t, ',') ? strchr(t, ',') + 1 : t + strlen(t)) {
        int sms = atoi(t);
        matmul_set_sm_target(sms);
        for (size_t k = 0; k < sizeof(SHAPES) / sizeof(SHAPES[0]); k++) {
            const Shape *s = &SHAPES[k];
            for (int r = 0; r < reps + 1; r++) {  // alone (the first a warm-up)
                cudaCheck(cudaEventRecord(e0, 0));
                gemm(s, a, b, out, dw);
                cudaCheck(cudaEventRecord(e1, 0));
                gd_sync(gd);
                if (r) cudaCheck(cudaEventElapsedTime(&t_alone[r - 1], e0, e1));
            }
            for (int r = 0; r < reps + 1; r++) {  // beside: the collective first (high priority), the GEMM right after
                gd_begin(gd);
                cudaCheck(cudaEventRecord(c0, gd_stream(gd)));
                gd_allreduce(gd, grads, grad_elems);
                cudaCheck(cudaEventRecord(c1, gd_stream(gd)));
                cudaCheck(cudaEventRecord(e0, 0));
                gemm(s, a, b, out, dw);
                cudaCheck(cudaEventRecord(e1, 0));
                gd_end(gd), gd_sync(gd);
                if (r) cudaCheck(cudaEventElapsedTime(&t_beside[r - 1], e0, e1)), cudaCheck(cudaEventElapsedTime(&t_comm[r - 1], c0, c1));
            }
            double flops = 2.0 * s->N * s->C * s->OC;
            float alone = median(t_alone, reps), beside = median(t_beside, reps), comm = median(t_comm, reps);
            printf("| %s (N %d, C %d, OC %d) | %d | %.2f | %.3f | %.3f | %+.3f | %.3f |\n", s->name, s->N, s->C, s->OC, sms, flops / 1e12,
                   alone, beside, beside - alone, comm);
        }
    }
#ifdef HAVE_NCCL
    if (getenv("BENCH_COLL")) coll_variants(&d, gd, reps, a, b, out, dw);
#endif
    free(t_alone), free(t_beside), free(t_comm);
    cudaCheck(cudaFree(a)), cudaCheck(cudaFree(b)), cudaCheck(cudaFree(out)), cudaCheck(cudaFree(dw)), cudaCheck(cudaFree(grads));
    gpu_dist_finalize();
    dist_finalize(&d);
    return 0;
}
