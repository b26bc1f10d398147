// test_attention.cu: kernels/attention.cu against attention_forward/backward of model/ops_cpu.c at CLIP's
// shapes (head dims 64, 80, 88 with sequences 50, 197, 257; causal 77 for text; the tiny config's 16) and
// odd ones (T = 1, 5, 16, 33, 65, 80, 81, 129, 321: partial tiles, a last tile of exactly 16 rows (the wgmma
// kernels' narrow tail) and of 17; causal 257, 197 and 129: several key tiles adding to each query's dq).
// fp32 (the reference algorithm on the GPU) bound 1e-5. bf16 flash attention on the same bf16-rounded qkv:
// out 1e-2, each of dq, dk, dv 2e-2 (probabilities are rounded to bf16 for the P V and dS products), for both
// kernel families: the default (wgmma on an sm_90 GPU at head dims 64 and 80) and mma.sync forced.
// Pooled queries (AttnQueries: the last block of a tower, one query row per sequence read; dout zero elsewhere): the
// pooled rows of out and every element of dqkv equal the all-queries run's exactly (the skipped contributions are exact
// zeros), with the other rows of out poisoned in between so that a backward reading them fails; both bf16 families.
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

static int *to_device_int(const int *h, int n) {
    int *d;
    cudaCheck(cudaMalloc(&d, n * sizeof(int)));
    cudaCheck(cudaMemcpy(d, h, n * sizeof(int), cudaMemcpyHostToDevice));
    return d;
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
    int *d_seq = packed ? to_device_int(start, B + 1) : NULL;
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

// The pooled queries against all queries, same kernels (bf16): pooled row of sequence b at row 0 (the class token, rows
// NULL), at a random row, or at the last row (the text tower's EOT, packed and causal). A packed batch's last two
// sequences have none (count = B - 2: the text tower's padding sequences).
enum { POOL_FIRST, POOL_RANDOM, POOL_LAST };
static void check_pooled(int B, int Tn, int NH, int hd, int causal, AttnKernels kernels, int packed, int where) {
    const char *names[] = {"first", "random", "last"};
    attention_set_kernels(kernels);
    int C = NH * hd, *start = (int *)mallocCheck((B + 1) * sizeof(int)), *rows = (int *)mallocCheck(B * sizeof(int));
    start[0] = 0;
    for (int b = 0; b < B; b++) start[b + 1] = start[b] + (packed ? 1 + (int)rng_below(&test_rng, Tn) : Tn);
    int count = packed ? B - 2 : B;
    for (int b = 0; b < count; b++) {
        int len = start[b + 1] - start[b];
        rows[b] = start[b] + (where == POOL_FIRST ? 0 : where == POOL_LAST ? len - 1 : (int)rng_below(&test_rng, len));
    }
    size_t N = start[B], nqkv = N * 3 * C, nout = N * C;
    float *qkv = rand_host(nqkv, 2.0f), *dout = zeros_host(nout);
    for (int b = 0; b < count; b++)
        for (int i = 0; i < C; i++) dout[(size_t)rows[b] * C + i] = 2.0f * (float)rng_uniform(&test_rng) - 1.0f;
    bf16 *d_qkv = to_device<bf16>(qkv, nqkv), *d_dout = to_device<bf16>(dout, nout);
    int *d_seq = NULL, *d_rows = NULL;
    if (packed) d_seq = to_device_int(start, B + 1);
    AttnQueries q = {1, 0, NULL, count};
    if (where == POOL_FIRST && !packed) q.stride = Tn;  // the vision towers' form: no row array
    else d_rows = to_device_int(rows, count), q.rows = d_rows;
    float *out[2], *dqkv[2];
    for (int r = 0; r < 2; r++) {  // r = 0: every query; 1: the pooled ones
        bf16 *d_out = poisoned<bf16>(nout), *d_dqkv = poisoned<bf16>(nqkv);
        float *d_stats = poisoned<float>(N * NH), *d_scratch = poisoned<float>(N * NH);
        attention_forward_gpu(d_out, d_stats, d_qkv, B, Tn, C, NH, causal, d_seq, r ? q : ATTN_ALL_QUERIES);
        attention_backward_gpu(d_dqkv, d_scratch, d_dout, d_qkv, d_out, d_stats, B, Tn, C, NH, causal, d_seq, r ? q : ATTN_ALL_QUERIES);
        out[r] = zeros_host(nout), dqkv[r] = zeros_host(nqkv);
        to_host<bf16>(out[r], d_out, nout), to_host<bf16>(dqkv[r], d_dqkv, nqkv);
        cudaCheck(cudaFree(d_out)), cudaCheck(cudaFree(d_dqkv)), cudaCheck(cudaFree(d_stats)), cudaCheck(cudaFree(d_scratch));
    }
    size_t bad_out = 0, bad_d = 0, zero_q = 0;
    for (int b = 0; b < count; b++)
        for (int i = 0; i < C; i++) bad_out += out[0][(size_t)rows[b] * C + i] != out[1][(size_t)rows[b] * C + i];
    for (size_t i = 0; i < nqkv; i++) bad_d += dqkv[0][i] != dqkv[1][i], zero_q += dqkv[1][i] == 0.0f;
    const char *tn = kernels == ATTN_KERNELS_MMA ? "mma.sync" : "default";
    EXPECT(bad_out == 0 && bad_d == 0, "%s pooled %s%s B=%d T=%d NH=%d hd=%d causal=%d: %zu of the pooled out, %zu of dqkv differ", tn,
           names[where], packed ? " packed" : "", B, Tn, NH, hd, causal, bad_out, bad_d);
    printf("  %s pooled %s%s B=%d T=%d NH=%d hd=%d causal=%d: %s (%.0f%% of dqkv zero)\n", tn, names[where], packed ? " packed" : "", B,
           Tn, NH, hd, causal, bad_out || bad_d ? "differs" : "= all queries exactly", 100.0 * zero_q / nqkv);
    for (int r = 0; r < 2; r++) free(out[r]), free(dqkv[r]);
    free(qkv), free(dout), free(start), free(rows);
    cudaCheck(cudaFree(d_qkv)), cudaCheck(cudaFree(d_dout));
    if (d_seq) cudaCheck(cudaFree(d_seq));
    if (d_rows) cudaCheck(cudaFree(d_rows));
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

// {B, T, NH, hd, causal, packed, where}: ViT-B/16's and ViT-H/14's last blocks (class token), a text tower's (the EOT row
// of packed causal sequences), a pooled row anywhere (also causal: keys after it get zero gradients), odd sizes.
static const int POOLED[][7] = {{3, 197, 2, 64, 0, 0, POOL_FIRST}, {2, 257, 2, 80, 0, 0, POOL_FIRST}, {5, 77, 2, 64, 1, 1, POOL_LAST},
                                {4, 257, 2, 80, 0, 1, POOL_RANDOM}, {3, 200, 2, 64, 1, 0, POOL_RANDOM}, {4, 130, 1, 128, 1, 1, POOL_LAST},
                                {3, 65, 3, 16, 0, 0, POOL_RANDOM}, {4, 129, 2, 88, 1, 1, POOL_RANDOM}};
static void test_attention_pooled(void) {
    SKIP_WITHOUT_GPU();
    for (int s = 0; s < (int)(sizeof(POOLED) / sizeof(POOLED[0])); s++) {
        const int *x = POOLED[s];
        check_pooled(x[0], x[1], x[2], x[3], x[4], ATTN_KERNELS_AUTO, x[5], x[6]);
        check_pooled(x[0], x[1], x[2], x[3], x[4], ATTN_KERNELS_MMA, x[5], x[6]);
    }
}

int main(void) {
    test_seed();
    RUN(test_attention_fp32);
    RUN(test_attention_bf16);
    RUN(test_attention_bf16_mma);
    RUN(test_attention_packed);
    RUN(test_attention_pooled);
    TEST_EXIT();
}
