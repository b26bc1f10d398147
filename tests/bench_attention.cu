// bench_attention.cu: times the bf16 flash attention (kernels/attention.cu) forward and backward at the CLIP
// shapes that matter (vision towers of ViT-B/16, L/14, H/14; causal text towers). FLOPs: 4 B NH T^2 hd for the
// forward (half when causal), 2.5x that for the backward. CUDA events around each call, 3 warm-up rounds,
// the median of the repetitions; inputs alternate between two sets of random normal buffers (never zeros).
// Each shape runs with the default kernels (wgmma on sm_90 at head dims 64 and 80) and with mma.sync forced; the two
// alternate within each repetition, each taking every position in turn.
// The yardstick, PyTorch's scaled_dot_product_attention per backend, is tests/bench_attention_torch.py.
// Usage: bench_attention [reps].
#include "../kernels/attention.cuh"
#include "bench_gpu.h"
extern "C" {
#include "../model/utils.h"
}

typedef struct {
    const char *name;
    int B, NH, T, hd, causal;
} Shape;

static const Shape shapes[] = {
    {"ViT-H/14 vision", 64, 16, 257, 80, 0}, {"ViT-H/14 text", 64, 16, 77, 64, 1},  {"ViT-L/14 vision", 128, 16, 257, 64, 0},
    {"ViT-B/16 vision", 256, 12, 197, 64, 0}, {"ViT-B/16 text", 256, 8, 77, 64, 1},
};
#define NSHAPES (int)(sizeof(shapes) / sizeof(shapes[0]))
typedef struct {
    const char *name;
    AttnKernels kernels;
} Family;
static const Family FAMILIES[] = {{"default", ATTN_KERNELS_AUTO}, {"mma.sync", ATTN_KERNELS_MMA}};
#define NFAM (int)(sizeof(FAMILIES) / sizeof(FAMILIES[0]))

static bf16 *normal_buffer(size_t n, uint64_t seed, float std) {
    bf16 *p;
    cudaCheck(cudaMalloc(&p, n * sizeof(bf16)));
    fill_normal(p, n, seed, std);
    return p;
}

int main(int argc, char **argv) {
    int reps = bench_reps(argc, argv, 1, 30, 1000);
    if (bench_no_gpu("bench_attention")) return 0;
    cudaDeviceProp prop = bench_device();
    printf("GPU: %s (sm_%d%d, %d SMs), %d reps, median\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount, reps);
    float res[NSHAPES][NFAM][2];
    for (int si = 0; si < NSHAPES; si++) {
        Shape s = shapes[si];
        int C = s.NH * s.hd;
        size_t nqkv = (size_t)s.B * s.T * 3 * C, nout = (size_t)s.B * s.T * C, ns = attention_stats_elems(1, s.B, s.T, s.NH);
        bf16 *qkv[2], *dout[2], *out[2], *dqkv;
        float *lse[2], *scratch;
        for (int i = 0; i < 2; i++) {
            qkv[i] = normal_buffer(nqkv, 100 * si + 2 * i, 1.0f), dout[i] = normal_buffer(nout, 100 * si + 2 * i + 1, 1.0f);
            cudaCheck(cudaMalloc(&out[i], nout * sizeof(bf16)));
            cudaCheck(cudaMalloc(&lse[i], ns * sizeof(float)));
        }
        cudaCheck(cudaMalloc(&dqkv, nqkv * sizeof(bf16)));
        cudaCheck(cudaMalloc(&scratch, ns * sizeof(float)));
        for (int ki = 0; ki < NFAM; ki++) {
            attention_set_kernels(FAMILIES[ki].kernels);
            for (int i = 0; i < 3; i++) {
                attention_forward_gpu(out[i & 1], lse[i & 1], qkv[i & 1], s.B, s.T, C, s.NH, s.causal);
                attention_backward_gpu(dqkv, scratch, dout[i & 1], qkv[i & 1], out[i & 1], lse[i & 1], s.B, s.T, C, s.NH, s.causal);
            }
        }
        cudaEvent_t ev[3];
        for (int i = 0; i < 3; i++) cudaCheck(cudaEventCreate(&ev[i]));
        float *ms = (float *)mallocCheck(sizeof(float) * 2 * NFAM * reps);  // [family][fwd, bwd][rep]
        for (int r = 0; r < reps; r++)
            for (int f = 0; f < NFAM; f++) {
                int ki = (r + f) % NFAM, i = r & 1;  // each family in every position of the round
                attention_set_kernels(FAMILIES[ki].kernels);
                cudaCheck(cudaEventRecord(ev[0], 0));
                attention_forward_gpu(out[i], lse[i], qkv[i], s.B, s.T, C, s.NH, s.causal);
                cudaCheck(cudaEventRecord(ev[1], 0));
                attention_backward_gpu(dqkv, scratch, dout[i], qkv[i], out[i], lse[i], s.B, s.T, C, s.NH, s.causal);
                cudaCheck(cudaEventRecord(ev[2], 0));
                cudaCheck(cudaEventSynchronize(ev[2]));
                cudaCheck(cudaEventElapsedTime(&ms[(2 * ki) * reps + r], ev[0], ev[1]));
                cudaCheck(cudaEventElapsedTime(&ms[(2 * ki + 1) * reps + r], ev[1], ev[2]));
            }
        for (int ki = 0; ki < NFAM; ki++) res[si][ki][0] = median(ms + 2 * ki * reps, reps), res[si][ki][1] = median(ms + (2 * ki + 1) * reps, reps);
        free(ms);
        for (int i = 0; i < 3; i++) cudaCheck(cudaEventDestroy(ev[i]));
        for (int i = 0; i < 2; i++) {
            cudaCheck(cudaFree(qkv[i])), cudaCheck(cudaFree(dout[i])), cudaCheck(cudaFree(out[i])), cudaCheck(cudaFree(lse[i]));
        }
        cudaCheck(cudaFree(dqkv)), cudaCheck(cudaFree(scratch));
    }
    attention_set_kernels(ATTN_KERNELS_AUTO);
    printf("\n| shape | B | NH | T | hd | causal | kernels | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s | fwd+bwd ms |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int si = 0; si < NSHAPES; si++)
        for (int ki = 0; ki < NFAM; ki++) {
            Shape s = shapes[si];
            const float *r = res[si][ki];
            double flop = 4.0 * s.B * s.NH * (double)s.T * s.T * s.hd * (s.causal ? 0.5 : 1.0);
            printf("| %s | %d | %d | %d | %d | %d | %s | %.3f | %.0f | %.3f | %.0f | %.3f |\n", s.name, s.B, s.NH, s.T, s.hd, s.causal,
                   FAMILIES[ki].name, r[0], flop / r[0] * 1e-9, r[1], 2.5 * flop / r[1] * 1e-9, r[0] + r[1]);
        }
    return 0;
}
