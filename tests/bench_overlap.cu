// bench_overlap.cu: how much the ViT-H/14 step's GEMMs slow down while a gradient sum runs beside them
// (docs/benchmarks.md, Multi-GPU, runs 9-10). Run on two GPUs: scripts/run_local.sh 2 ./build/tests/bench_overlap [reps];
// vary NCCL_MAX_CTAS / NCCL_MIN_CTAS outside. Per collective and GEMM shape, medians of reps: the collective alone (over
// 1 GB of fp32, about ViT-H/14's 4 largest buckets), the GEMM alone, and the GEMM enqueued right after the collective
// (on the communicator's stream, as the step does), i.e. beside it. The collectives: the all-reduce on the SMs; the
// step's gradient sum (gd_reduce_grads over gd_alloc's window: a reduce-scatter on the SMs, then an all-gather on the
// copy engines); and the two halves alone. BENCH_SM_TARGETS="0,120,100" repeats the table with the GEMMs planned for
// that many SMs (cuBLASLt's SM count target; 0 = all).
#include <string.h>

#include "../kernels/matmul.cuh"
#include "../model/clip_dist.h"
#include "bench_gpu.h"
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
    if (s->weight_grad) matmul_backward_weight_gpu<bf16>(dw, a, b, s->N, s->C, s->OC, 0);  // a: dout (N, OC), b: inp (N, C)
    else matmul_forward_gpu<bf16>(out, a, b, NULL, s->N, s->C, s->OC);                 // a: inp (N, C), b: w (OC, C)
}

static const char *const COLLECTIVES[] = {"all-reduce (SMs)", "gradient sum: reduce-scatter (SMs) + all-gather (copy engines)",
                                          "reduce-scatter alone (SMs)", "all-gather alone (copy engines)"};
#define NUM_COLLECTIVES 4

// plain: a cudaMalloc'd buffer; win: the same size in gd_alloc's window (the copy engines' all-gathers)
static void collective(GpuDist *gd, int kind, float *plain, float *win, size_t n) {
    size_t per = n / gd_world(gd);
    if (kind == 0) gd_allreduce(gd, plain, n);
    if (kind == 1) gd_reduce_grads(gd, win, NULL, n, 0);
    if (kind == 2) gd_reduce_scatter(gd, win, per);
    if (kind == 3) gd_gather_parts(gd, win, n);
}

int main(int argc, char **argv) {
    if (bench_no_gpu("bench_overlap")) return 0;
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
    float *dw, *plain, *win = (float *)gd_alloc(gd, grad_elems * sizeof(float));
    cudaCheck(cudaMalloc(&a, max_in * sizeof(bf16))), cudaCheck(cudaMalloc(&b, max_in * sizeof(bf16)));
    cudaCheck(cudaMalloc(&out, max_in * sizeof(bf16))), cudaCheck(cudaMalloc(&dw, 5120 * 5120 * sizeof(float)));
    cudaCheck(cudaMalloc(&plain, grad_elems * sizeof(float)));
    fill_normal<bf16>(a, max_in, 1, 1.0f), fill_normal<bf16>(b, max_in, 2, 0.02f);
    fill_normal<float>(plain, grad_elems, 3, 1e-3f), fill_normal<float>(win, grad_elems, 3, 1e-3f);
    cudaCheck(cudaMemset(dw, 0, 5120 * 5120 * sizeof(float)));
    cudaEvent_t e0, e1, c0, c1;
    cudaCheck(cudaEventCreate(&e0)), cudaCheck(cudaEventCreate(&e1)), cudaCheck(cudaEventCreate(&c0)), cudaCheck(cudaEventCreate(&c1));
    float *t_gemm = (float *)mallocCheck(reps * sizeof(float)), *t_comm = (float *)mallocCheck(reps * sizeof(float));
    float alone[NUM_COLLECTIVES];
    for (int k = 0; k < NUM_COLLECTIVES; k++) {  // each collective alone (the first call a warm-up)
        for (int r = 0; r < reps + 1; r++) {
            gd_begin(gd);
            cudaCheck(cudaEventRecord(c0, gd_stream(gd)));
            collective(gd, k, plain, win, grad_elems);
            cudaCheck(cudaEventRecord(c1, gd_stream(gd)));
            gd_end(gd), gd_sync(gd);
            if (r) cudaCheck(cudaEventElapsedTime(&t_comm[r - 1], c0, c1));
        }
        alone[k] = median(t_comm, reps);
    }
    printf("GPU 2 ranks, %.2f GB fp32, NCCL_MAX_CTAS=%s NCCL_MIN_CTAS=%s, medians of %d\n", grad_elems * 4.0 / 1e9,
           getenv("NCCL_MAX_CTAS") ? getenv("NCCL_MAX_CTAS") : "default", getenv("NCCL_MIN_CTAS") ? getenv("NCCL_MIN_CTAS") : "default", reps);
    printf("| collective | alone ms | GEMM | SM target | alone ms | beside ms | slowdown ms | collective beside ms |\n|---|---|---|---|---|---|---|---|\n");
    const char *targets = getenv("BENCH_SM_TARGETS") ? getenv("BENCH_SM_TARGETS") : "0";
    for (const char *t = targets; *t; t = strchr(t, ',') ? strchr(t, ',') + 1 : t + strlen(t)) {
        int sms = atoi(t);
        matmul_set_sm_target(sms);
        for (int k = 0; k < NUM_COLLECTIVES; k++)
            for (size_t i = 0; i < sizeof(SHAPES) / sizeof(SHAPES[0]); i++) {
                const Shape *s = &SHAPES[i];
                for (int r = 0; r < reps + 1; r++) {  // the GEMM alone
                    cudaCheck(cudaEventRecord(e0, 0));
                    gemm(s, a, b, out, dw);
                    cudaCheck(cudaEventRecord(e1, 0));
                    gd_sync(gd);
                    if (r) cudaCheck(cudaEventElapsedTime(&t_gemm[r - 1], e0, e1));
                }
                float g_alone = median(t_gemm, reps);
                for (int r = 0; r < reps + 1; r++) {  // beside: the collective first (high priority), the GEMM right after
                    gd_begin(gd);
                    cudaCheck(cudaEventRecord(c0, gd_stream(gd)));
                    collective(gd, k, plain, win, grad_elems);
                    cudaCheck(cudaEventRecord(c1, gd_stream(gd)));
                    cudaCheck(cudaEventRecord(e0, 0));
                    gemm(s, a, b, out, dw);
                    cudaCheck(cudaEventRecord(e1, 0));
                    gd_end(gd), gd_sync(gd);
                    if (r) cudaCheck(cudaEventElapsedTime(&t_gemm[r - 1], e0, e1)), cudaCheck(cudaEventElapsedTime(&t_comm[r - 1], c0, c1));
                }
                float beside = median(t_gemm, reps);
                printf("| %s | %.3f | %s (N %d, C %d, OC %d) | %d | %.3f | %.3f | %+.3f | %.3f |\n", COLLECTIVES[k], alone[k], s->name,
                       s->N, s->C, s->OC, sms, g_alone, beside, beside - g_alone, median(t_comm, reps));
            }
    }
    free(t_gemm), free(t_comm);
    cudaCheck(cudaFree(a)), cudaCheck(cudaFree(b)), cudaCheck(cudaFree(out)), cudaCheck(cudaFree(dw)), cudaCheck(cudaFree(plain));
    gd_free(gd, win);
    gpu_dist_finalize();
    dist_finalize(&d);
    return 0;
}
