// test_attention.cu: kernels/attention.cu against attention_forward/backward of model/ops_cpu.c at CLIP's
// shapes (head dims 64, 80, 88 with sequences 50, 197, 257; causal 77 for text; the tiny config's 16) and
// odd ones (T = 1, 5, 16, 33, 65, 80, 81, 129, 321: partial tiles, a last tile of exactly 16 rows (the wgmma
// kernels' narrow tail) and of 17; causal 257, 197 and 129: several key tiles adding to each query's dq).
// fp32 (the reference algorithm on the GPU) bound 1e-5. bf16 flash attention on the same bf16-rounded qkv:
// out 1e-2, each of dq, dk, dv 2e-2 (probabilities are rounded to bf16 for the P V and dS products), for both
// kernel families: the default (wgmma on an sm_90 GPU at head dims 64 and 80) and mma.sync forced.
#include "../kernels/attention.cuh"
#include "test_gpu.h"

// Relative error of part p (0 q, 1 k, 2 v) of (rows, 3C) gradients: each part on its own, so that a wrong dk
// cannot hide among correct dq and dv.
static double part_err(const float *g, const float *ref, size_t rows, int C, int p) {
    double num = 0.0, den = 0.0;
    for (size_t r = 0; r < rows; r++)
        for (int i = 0; i < C; i++) {
            double a = g[r * 3 * C + p * C + i], b = ref[r * 3 * C + p * C + i];
            num += (a - b) * (a - b), den += b * b;
        }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

// B sequences of T rows, or (packed) of 1 to T rows at random, stored one after another (the text tower's packed
// layout); the reference runs each sequence on its own.
template <typename T> static void check(int B, int Tn, int NH, int hd, int causal, AttnKernels kernels, int packed = 0) {
    const char *tn = sizeof(T) == 4 ? "fp32" : kernels == ATTN_KERNELS_MMA ? "bf16 mma.sync" : "bf16 default";
    attention_set_kernels(kernels);
    int C = NH * hd, *start = (int *)mallocCheck((B + 1) * sizeof(int));
    start[0] = 0;
    for (int b = 0; b < B; b++) start[b + 1] = start[b] + (packed ? 1 + (int)rng_below(&test_rng, Tn) : Tn);
    size_t N = start[B], nqkv = N * 3 * C, nout = N * C;
    float *qkv = rand_host(nqkv, 2.0f), *dout = rand_host(nout, 1.0f);
    round_to<T>(qkv, nqkv), round_to<T>(dout, nout);
    float *out = zeros_host(nout), *att = zeros_host((size_t)NH * Tn * Tn), *dqkv = zeros_host(nqkv), *g = zeros_host(nqkv);
    for (int b = 0; b < B; b++) {
        int s = start[b], len = start[b + 1] - s;
        attention_forward(out + (size_t)s * C, att, qkv + (size_t)s * 3 * C, 1, len, C, NH, causal);
        attention_backward(dqkv + (size_t)s * 3 * C, dout + (size_t)s * C, qkv + (size_t)s * 3 * C, att, 1, len, C, NH, causal);
    }
    T *d_qkv = to_device<T>(qkv, nqkv), *d_dout = to_device<T>(dout, nout), *d_out = poisoned<T>(nout), *d_dqkv = poisoned<T>(nqkv);
    size_t ns = sizeof(T) == 2 ? N * NH : N * NH * Tn;  // attention_stats_elems of N / Tn sequences of Tn rows
    float *d_stats = poisoned<float>(ns), *d_scratch = poisoned<float>(ns);
    int *d_seq = NULL;
    if (packed) {
        cudaCheck(cudaMalloc(&d_seq, (B + 1) * sizeof(int)));
        cudaCheck(cudaMemcpy(d_seq, start, (B + 1) * sizeof(int), cudaMemcpyHostToDevice));
    }
    attention_forward_gpu(d_out, d_stats, d_qkv, B, Tn, C, NH, causal, d_seq);
    attention_backward_gpu(d_dqkv, d_scratch, d_dout, d_qkv, d_out, d_stats, B, Tn, C, NH, causal, d_seq);
    to_host<T>(g, d_out, nout);
    double eo = rel_err(g, out, nout);
    to_host<T>(g, d_dqkv, nqkv);
    double ed[3];
    for (int p = 0; p < 3; p++) ed[p] = part_err(g, dqkv, N, C, p);
    int bf = sizeof(T) == 2;
    const char *how = packed ? " packed" : "";
    EXPECT(eo < (bf ? 1e-2 : 1e-5), "%s%s B=%d T=%d NH=%d hd=%d causal=%d: out rel err %.2e", tn, how, B, Tn, NH, hd, causal, eo);
    for (int p = 0; p < 3; p++)
        EXPECT(ed[p] < (bf ? 2e-2 : 1e-5), "%s%s B=%d T=%d NH=%d hd=%d causal=%d: d%c rel err %.2e", tn, how, B, Tn, NH, hd, causal,
               "qkv"[p], ed[p]);
    printf("  %s%s B=%d T=%d NH=%d hd=%d causal=%d: out %.1e dq %.1e dk %.1e dv %.1e\n", tn, how, B, Tn, NH, hd, causal, eo, ed[0],
           ed[1], ed[2]);
    free(qkv), free(dout), free(out), free(att), free(dqkv), free(g), free(start);
    cudaCheck(cudaFree(d_qkv)), cudaCheck(cudaFree(d_dout)), cudaCheck(cudaFree(d_out)), cudaCheck(cudaFree(d_dqkv));
    cudaCheck(cudaFree(d_stats)), cudaCheck(cudaFree(d_scratch));
    if (d_seq) cudaCheck(cudaFree(d_seq));
    attention_set_kernels(ATTN_KERNELS_AUTO);
}

// {B, T, NH, hd, causal}
static const int SHAPES[][5] = {{2, 17, 4, 16, 0}, {2, 32, 4, 16, 1},  {2, 50, 3, 64, 0},  {2, 197, 2, 64, 0}, {1, 257, 2, 80, 0},
                                {1, 257, 2, 88, 0}, {3, 77, 2, 64, 1},  {2, 33, 2, 88, 1},  {1, 130, 1, 128, 1}, {2, 70, 2, 40, 0},
                                {2, 257, 2, 64, 1}, {3, 129, 2, 80, 1}, {2, 1, 3, 64, 0},   {2, 65, 2, 88, 0},  {2, 197, 2, 80, 0},
                                {1, 257, 3, 64, 0}, {1, 197, 2, 80, 1}, {2, 16, 2, 80, 0},  {2, 80, 2, 64, 1},  {2, 81, 2, 80, 0},
                                {3, 5, 2, 80, 1},   {2, 33, 2, 64, 0},  {2, 129, 2, 80, 0}, {1, 321, 2, 64, 0}, {2, 65, 2, 64, 0}};
#define NSHAPES (int)(sizeof(SHAPES) / sizeof(SHAPES[0]))

static void test_attention_fp32(void) {
    SKIP_WITHOUT_GPU();
    for (int s = 0; s < NSHAPES; s++) check<float>(SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], SHAPES[s][3], SHAPES[s][4], ATTN_KERNELS_AUTO);
}

static void test_attention_bf16(void) {
    SKIP_WITHOUT_GPU();
    for (int s = 0; s < NSHAPES; s++) check<bf16>(SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], SHAPES[s][3], SHAPES[s][4], ATTN_KERNELS_AUTO);
}

static void test_attention_bf16_mma(void) {
    SKIP_WITHOUT_GPU();
    for (int s = 0; s < NSHAPES; s++) check<bf16>(SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], SHAPES[s][3], SHAPES[s][4], ATTN_KERNELS_MMA);
}

// Packed batches (the text tower's live positions): sequences of 1 to T rows one after another, the reference run per
// sequence; every family at head dims 16, 64, 80 and 128, causal and not.
static const int PACKED[][5] = {{7, 77, 2, 64, 1}, {5, 77, 3, 16, 1}, {4, 257, 2, 80, 0}, {6, 130, 1, 128, 1}, {5, 197, 2, 64, 0}};
static void test_attention_packed(void) {
    SKIP_WITHOUT_GPU();
    for (int s = 0; s < (int)(sizeof(PACKED) / sizeof(PACKED[0])); s++) {
        const int *x = PACKED[s];
        check<float>(x[0], x[1], x[2], x[3], x[4], ATTN_KERNELS_AUTO, 1);
        check<bf16>(x[0], x[1], x[2], x[3], x[4], ATTN_KERNELS_AUTO, 1);
        check<bf16>(x[0], x[1], x[2], x[3], x[4], ATTN_KERNELS_MMA, 1);
    }
}

int main(void) {
    test_seed();
    RUN(test_attention_fp32);
    RUN(test_attention_bf16);
    RUN(test_attention_bf16_mma);
    RUN(test_attention_packed);
    TEST_EXIT();
}
