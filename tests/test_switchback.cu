// test_switchback.cu: the SwitchBack kernels against their CPU references (tests/ref_switchback.h):
// quantizers bit-exact (the row-wise one also fused with column sums, chunk sums bit for bit; the weights' one-launch
// batch with given maxima equal to the per-weight path); the int8 GEMM exact in int32 and bit-exact through its
// dequantize epilogue, for each kernel the GPU can run (the wgmma one at both tile widths); the layer's forward and
// backward in all four modes against fp32 within bounds derived from the quantization step, and its two halves
// (input, weight gradient), with the int8 gradient scratch overwritten between them, equal to it bit for bit. Fresh random inputs
// every run (the seed is printed; SB_TEST_SEED=n repeats a run), outputs poisoned before each kernel, odd shapes
// (M = 197 * 3 + 5, N and K multiples of 16 but not of 64).
// Without a GPU every test is skipped.
#include <time.h>
#include <unistd.h>
#include "../kernels/hopper.cuh"
#include "../kernels/switchback.cuh"
#include "../model/rng.h"
#include "ref_switchback.h"
#include "test.h"

static uint64_t seed;
static int test_counter;  // each test draws from its own stream

// ------------------------------------------------------------------------------------------------ helpers
static void *host_alloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "error: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

// Normal values, bf16-rounded, each row scaled by exp(N(0, 1)) (row scales then differ), with zero rows and
// outliers where asked.
static void fill_bf16(Rng *r, bf16 *h, float *f, int R, int C, float std, int rough) {
    for (int i = 0; i < R; i++) {
        float row = rough ? std * expf((float)rng_normal(r)) : std;
        int zero_row = rough && rng_below(r, 16) == 0;
        for (int j = 0; j < C; j++) {
            float v = zero_row ? 0.0f : row * (float)rng_normal(r);
            if (rough && rng_below(r, 512) == 0) v *= 50.0f;  // outlier features, as the paper describes
            h[(size_t)i * C + j] = __float2bfloat16(v);
            if (f) f[(size_t)i * C + j] = bf(h[(size_t)i * C + j]);
        }
    }
}

static void *dev_upload(const void *h, size_t bytes) {
    void *d;
    cudaCheck(cudaMalloc(&d, bytes));
    cudaCheck(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    return d;
}
// Float outputs are poisoned with NaN (0xFF bytes), int8/int32 with 0x80 bytes (-128 is never quantized to).
static void *dev_poisoned(size_t bytes, int byte) {
    void *d;
    cudaCheck(cudaMalloc(&d, bytes));
    cudaCheck(cudaMemset(d, byte, bytes));
    return d;
}
static void download(void *h, const void *d, size_t bytes) {
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}
static float *download_bf16(const bf16 *d, size_t n) {
    bf16 *h = (bf16 *)host_alloc(n * sizeof(bf16));
    float *f = (float *)host_alloc(n * sizeof(float));
    download(h, d, n * sizeof(bf16));
    for (size_t i = 0; i < n; i++) f[i] = bf(h[i]);
    free(h);
    return f;
}

// Index of the first differing byte, or -1.
static long first_diff(const void *a, const void *b, size_t bytes) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (size_t i = 0; i < bytes; i++)
        if (x[i] != y[i]) return (long)i;
    return -1;
}

static Rng test_rng(void) {
    Rng r;
    rng_init(&r, seed, RNG_TEST, ++test_counter);
    return r;
}

#define NEED_GPU() \
    if (cuda_device_count() == 0) SKIP("no GPU")

// ------------------------------------------------------------------------------------------------ quantizers
static void quantize_rowwise_case(Rng *r, int M, int K) {
    bf16 *x = (bf16 *)host_alloc(sizeof(bf16) * M * K);
    fill_bf16(r, x, NULL, M, K, 1.0f, 1);
    int8_t *q = (int8_t *)host_alloc(M * K), *q_ref = (int8_t *)host_alloc(M * K);
    float *s = (float *)host_alloc(sizeof(float) * M), *s_ref = (float *)host_alloc(sizeof(float) * M);
    ref_quantize_rows(q_ref, s_ref, x, M, K);
    bf16 *d_x = (bf16 *)dev_upload(x, sizeof(bf16) * M * K);
    int8_t *d_q = (int8_t *)dev_poisoned(M * K, 0x80);
    float *d_s = (float *)dev_poisoned(sizeof(float) * M, 0xFF);
    quantize_rowwise(d_q, d_s, d_x, M, K, 0);
    download(q, d_q, M * K);
    download(s, d_s, sizeof(float) * M);
    long dq = first_diff(q, q_ref, M * K), ds = first_diff(s, s_ref, sizeof(float) * M);
    EXPECT(dq < 0, "(%d, %d) q differs at %ld: %d vs ref %d", M, K, dq, dq < 0 ? 0 : q[dq], dq < 0 ? 0 : q_ref[dq]);
    EXPECT(ds < 0, "(%d, %d) scale differs at row %ld: %g vs ref %g", M, K, ds / 4, ds < 0 ? 0 : s[ds / 4],
           ds < 0 ? 0 : s_ref[ds / 4]);

    // Fused with the column sums: the same q and s, and each chunk's fp32 column sums in row order (bit for bit).
    if (K <= SB_QC_MAX_K) {
        int rows = rowwise_colsums_rows(M), chunks = (M + rows - 1) / rows;
        float *part = (float *)host_alloc(sizeof(float) * chunks * K);
        float *d_part = (float *)dev_poisoned(sizeof(float) * chunks * K, 0xFF);
        cudaCheck(cudaMemset(d_q, 0x80, M * K));
        cudaCheck(cudaMemset(d_s, 0xFF, sizeof(float) * M));
        quantize_rowwise_colsums(d_q, d_s, d_part, d_x, M, K, 0);
        download(q, d_q, M * K);
        download(s, d_s, sizeof(float) * M);
        download(part, d_part, sizeof(float) * chunks * K);
        dq = first_diff(q, q_ref, M * K), ds = first_diff(s, s_ref, sizeof(float) * M);
        EXPECT(dq < 0 && ds < 0, "(%d, %d) fused with column sums: q or scale differs (q at %ld, scale at row %ld)", M,
               K, dq, ds / 4);
        long bad = -1;
        for (int c = 0; c < chunks && bad < 0; c++)
            for (int j = 0; j < K && bad < 0; j++) {
                float sum = 0.0f;
                for (int i = c * rows; i < M && i < (c + 1) * rows; i++) sum += bf(x[(size_t)i * K + j]);
                if (!(part[(size_t)c * K + j] == sum)) bad = (long)c * K + j;
            }
        EXPECT(bad < 0, "(%d, %d) column sum of chunk %ld, column %ld differs", M, K, bad / K, bad % K);
        cudaCheck(cudaFree(d_part));
        free(part);
    }
    cudaCheck(cudaFree(d_x));
    cudaCheck(cudaFree(d_q));
    cudaCheck(cudaFree(d_s));
    free(x), free(q), free(q_ref), free(s), free(s_ref);
}

static void test_quantize_rowwise(void) {
    NEED_GPU();
    Rng r = test_rng();
    quantize_rowwise_case(&r, 197 * 3 + 5, 208);  // odd M; CLIP widths and beyond
    quantize_rowwise_case(&r, 5, 2048);
    quantize_rowwise_case(&r, 4, 3840);
    quantize_rowwise_case(&r, 3, 5120);
    quantize_rowwise_case(&r, 2, 6160);
    quantize_rowwise_case(&r, 1, 16);
    quantize_rowwise_case(&r, 300, 4112);  // column sums: 3 vectors per thread, a ragged last chunk
    quantize_rowwise_case(&r, 130, 8192);  // the widest fused case
    quantize_rowwise_case(&r, 1, 8208);    // too wide for the fused kernel
    quantize_rowwise_case(&r, 16448, 3840);  // ViT-H/14's qkv gradient: chunks of 32 rows (rowwise_colsums_rows)
    quantize_rowwise_case(&r, 70001, 64);    // chunks of SB_QC_ROWS, a ragged last one
}

static void dequantize_case(Rng *r, int M, int K) {
    bf16 *x = (bf16 *)host_alloc(sizeof(bf16) * M * K), *y = (bf16 *)host_alloc(sizeof(bf16) * M * K);
    bf16 *y_ref = (bf16 *)host_alloc(sizeof(bf16) * M * K);
    int8_t *q = (int8_t *)host_alloc(M * K);
    float *s = (float *)host_alloc(sizeof(float) * M);
    fill_bf16(r, x, NULL, M, K, 1.0f, 1);
    ref_quantize_rows(q, s, x, M, K);
    for (size_t i = 0; i < (size_t)M * K; i++) y_ref[i] = __float2bfloat16(sb_dequantize(q[i], s[i / K]));
    int8_t *d_q = (int8_t *)dev_upload(q, M * K);
    float *d_s = (float *)dev_upload(s, sizeof(float) * M);
    bf16 *d_y = (bf16 *)dev_poisoned(sizeof(bf16) * M * K, 0xFF);
    dequantize_rowwise(d_y, d_q, d_s, M, K, 0);
    download(y, d_y, sizeof(bf16) * M * K);
    long d = first_diff(y, y_ref, sizeof(bf16) * M * K);
    EXPECT(d < 0, "(%d, %d) differs at element %ld: %g vs ref %g", M, K, d / 2, d < 0 ? 0 : bf(y[d / 2]),
           d < 0 ? 0 : bf(y_ref[d / 2]));
    cudaCheck(cudaFree(d_q));
    cudaCheck(cudaFree(d_s));
    cudaCheck(cudaFree(d_y));
    free(x), free(y), free(y_ref), free(q), free(s);
}

static void test_dequantize_rowwise(void) {
    NEED_GPU();
    Rng r = test_rng();
    dequantize_case(&r, 197 * 3 + 5, 208);
    dequantize_case(&r, 7, 1040);
}

// q (R, C) and/or qt (C, ldt), as for a weight (both) or an activation's column-wise copy (qt only, padded).
static void quantize_2way_case(Rng *r, int R, int C, int ldt, int per_channel, int want_q) {
    size_t n = (size_t)R * C, nt = (size_t)C * ldt;
    bf16 *x = (bf16 *)host_alloc(sizeof(bf16) * n);
    fill_bf16(r, x, NULL, R, C, 0.05f, 1);
    float *am = (float *)host_alloc(sizeof(float) * (R + C + 1)), *am_ref = (float *)host_alloc(sizeof(float) * (R + C + 1));
    int8_t *q = (int8_t *)host_alloc(n), *q_ref = (int8_t *)host_alloc(n);
    int8_t *qt = (int8_t *)host_alloc(nt), *qt_ref = (int8_t *)host_alloc(nt);
    ref_absmax(am_ref, x, R, C);
    ref_quantize_2way(want_q ? q_ref : NULL, qt_ref, ldt, am_ref, per_channel, x, R, C);
    bf16 *d_x = (bf16 *)dev_upload(x, sizeof(bf16) * n);
    float *d_am = (float *)dev_poisoned(sizeof(float) * (R + C + 1), 0xFF);
    int8_t *d_q = (int8_t *)dev_poisoned(n, 0x80), *d_qt = (int8_t *)dev_poisoned(nt, 0x80);
    quantize_absmax(d_am, d_x, R, C, 0);
    quantize_2way(want_q ? d_q : NULL, d_qt, ldt, d_am, per_channel, d_x, R, C, 0);
    download(am, d_am, sizeof(float) * (R + C + 1));
    download(q, d_q, n);
    download(qt, d_qt, nt);
    long da = first_diff(am, am_ref, sizeof(float) * (R + C + 1));
    EXPECT(da < 0, "(%d, %d) absmax differs at %ld: %g vs ref %g", R, C, da / 4, da < 0 ? 0 : am[da / 4],
           da < 0 ? 0 : am_ref[da / 4]);
    if (want_q) {
        long dq = first_diff(q, q_ref, n);
        EXPECT(dq < 0, "(%d, %d, per_channel %d) q differs at %ld: %d vs ref %d", R, C, per_channel, dq,
               dq < 0 ? 0 : q[dq], dq < 0 ? 0 : q_ref[dq]);
    }
    long dt = first_diff(qt, qt_ref, nt);
    EXPECT(dt < 0, "(%d, %d, ldt %d, per_channel %d) qt differs at (%ld, %ld): %d vs ref %d", R, C, ldt, per_channel,
           dt / ldt, dt % ldt, dt < 0 ? 0 : qt[dt], dt < 0 ? 0 : qt_ref[dt]);
    cudaCheck(cudaFree(d_x));
    cudaCheck(cudaFree(d_am));
    cudaCheck(cudaFree(d_q));
    cudaCheck(cudaFree(d_qt));
    free(x), free(am), free(am_ref), free(q), free(q_ref), free(qt), free(qt_ref);
}

static void test_quantize_2way(void) {
    NEED_GPU();
    Rng r = test_rng();
    quantize_2way_case(&r, 208, 336, 208, 0, 1);  // weight (N, K), tensor-wise, with its transpose
    quantize_2way_case(&r, 208, 336, 208, 1, 1);  // vector-wise
    quantize_2way_case(&r, 197 * 3 + 5, 208, 608, 1, 0);  // activation column-wise, transposed, padded to 16
    quantize_2way_case(&r, 1, 16, 16, 0, 1);
}

// Several weights through one switchback_quantize_weights launch, their maxima given (as the optimizer provides):
// the same int8 W, W^T and tensor maximum as switchback_quantize_weight, bit for bit.
static void test_quantize_weight_batch(void) {
    NEED_GPU();
    Rng r = test_rng();
    enum { NW = 4 };
    const int shape[NW][2] = {{208, 336}, {16, 16}, {1280, 96}, {336, 1040}};  // (N, K)
    SbWeight w[NW], ref[NW], *wp[NW];
    const bf16 *Wp[NW];
    const float *mp[NW];
    bf16 *d_W[NW];
    float *d_max[NW];
    for (int i = 0; i < NW; i++) {
        int N = shape[i][0], K = shape[i][1];
        bf16 *h = (bf16 *)host_alloc(sizeof(bf16) * N * K);
        fill_bf16(&r, h, NULL, N, K, 0.05f, 1);
        float *am = (float *)host_alloc(sizeof(float) * (N + K + 1));
        ref_absmax(am, h, N, K);
        d_W[i] = (bf16 *)dev_upload(h, sizeof(bf16) * N * K), d_max[i] = (float *)dev_upload(am + N + K, sizeof(float));
        sb_weight_alloc(&w[i], N, K), sb_weight_alloc(&ref[i], N, K);
        cudaCheck(cudaMemset(w[i].q, 0x80, (size_t)N * K)), cudaCheck(cudaMemset(w[i].qt, 0x80, (size_t)N * K));
        cudaCheck(cudaMemset(w[i].absmax, 0xFF, sizeof(float) * (N + K + 1)));
        switchback_quantize_weight(&ref[i], d_W[i], SB_STANDARD, 0);
        wp[i] = &w[i], Wp[i] = d_W[i], mp[i] = d_max[i];
        free(h), free(am);
    }
    SbWeightBatch b;
    sb_weight_batch_init(&b, wp, Wp, mp, NW);
    switchback_quantize_weights(&b, 0);
    for (int i = 0; i < NW; i++) {
        size_t nk = (size_t)w[i].N * w[i].K;
        int8_t *q = (int8_t *)host_alloc(nk), *qt = (int8_t *)host_alloc(nk), *rq = (int8_t *)host_alloc(nk), *rqt = (int8_t *)host_alloc(nk);
        float m, rm;
        download(q, w[i].q, nk), download(qt, w[i].qt, nk), download(rq, ref[i].q, nk), download(rqt, ref[i].qt, nk);
        download(&m, w[i].absmax + w[i].N + w[i].K, sizeof(float)), download(&rm, ref[i].absmax + w[i].N + w[i].K, sizeof(float));
        long dq = first_diff(q, rq, nk), dt = first_diff(qt, rqt, nk);
        EXPECT(dq < 0 && dt < 0 && m == rm, "batch weight %d (%d, %d): q differs at %ld, qt at %ld, maximum %g vs %g", i, w[i].N,
               w[i].K, dq, dt, m, rm);
        free(q), free(qt), free(rq), free(rqt);
        sb_weight_free(&w[i]), sb_weight_free(&ref[i]);
        cudaCheck(cudaFree(d_W[i])), cudaCheck(cudaFree(d_max[i]));
    }
    sb_weight_batch_free(&b);
}

// ------------------------------------------------------------------------------------------------ int8 GEMM
static const char *path_name(Int8GemmPath p) {
    return p == INT8_PATH_WGMMA_N256 ? "wgmma 128x256" : p == INT8_PATH_WGMMA_N128 ? "wgmma 128x128" : "mma.sync";
}

// Exact int32 accumulators; then bf16 out with bias and a tensor-wise, then per-column scale (on sm_90: the TMA-store
// epilogue); then fp32 and bf16 out with per-column scales, accumulating into random values (the direct-store
// epilogue).
// Each compared bit for bit with the CPU (same float ops).
static void gemm_case(Rng *r, Int8GemmPath path, int M, int N, int K) {
    size_t mk = (size_t)M * K, nk = (size_t)N * K, mn = (size_t)M * N;
    int8_t *a = (int8_t *)host_alloc(mk), *b = (int8_t *)host_alloc(nk);
    for (size_t i = 0; i < mk; i++) a[i] = (int8_t)(rng_below(r, 256) - 128);
    for (size_t i = 0; i < nk; i++) b[i] = (int8_t)(rng_below(r, 256) - 128);
    float *sa = (float *)host_alloc(sizeof(float) * M), *sb = (float *)host_alloc(sizeof(float) * N);
    for (int i = 0; i < M; i++) sa[i] = i % 7 == 3 ? 0.0f : (float)(0.5 + rng_uniform(r) * 4);  // some zero rows
    for (int j = 0; j < N; j++) sb[j] = (float)(0.01 + rng_uniform(r) * 0.1);
    bf16 *bias = (bf16 *)host_alloc(sizeof(bf16) * N);
    fill_bf16(r, bias, NULL, 1, N, 1.0f, 0);
    int32_t *acc = (int32_t *)host_alloc(sizeof(int32_t) * mn), *acc_ref = (int32_t *)host_alloc(sizeof(int32_t) * mn);
    ref_gemm_i32(acc_ref, a, b, M, N, K);

    int8_t *d_a = (int8_t *)dev_upload(a, mk), *d_b = (int8_t *)dev_upload(b, nk);
    float *d_sa = (float *)dev_upload(sa, sizeof(float) * M), *d_sb = (float *)dev_upload(sb, sizeof(float) * N);
    bf16 *d_bias = (bf16 *)dev_upload(bias, sizeof(bf16) * N);
    Int8Gemm g = {};
    g.a = d_a, g.b = d_b, g.M = M, g.N = N, g.K = K;

    // 1. raw int32
    g.out = dev_poisoned(sizeof(int32_t) * mn, 0x80), g.out_type = INT8_OUT_I32;
    int8_gemm_path(&g, path, 0);
    download(acc, g.out, sizeof(int32_t) * mn);
    long d = first_diff(acc, acc_ref, sizeof(int32_t) * mn);
    if (d > 0) d /= 4;
    EXPECT(d < 0, "%s (M %d, N %d, K %d) int32 differs at (%ld, %ld): %d vs ref %d", path_name(path), M, N, K,
           d / N, d % N, d < 0 ? 0 : acc[d], d < 0 ? 0 : acc_ref[d]);
    cudaCheck(cudaFree(g.out));

    // 2. bf16 with bias, tensor-wise then per-column scales (on sm_90: the TMA-store epilogue, both variants)
    bf16 *y = (bf16 *)host_alloc(sizeof(bf16) * mn);
    long bad = -1;
    for (int per_col = 0; per_col < 2; per_col++) {
        g.out = dev_poisoned(sizeof(bf16) * mn, 0xFF), g.out_type = INT8_OUT_BF16;
        g.a_scale = d_sa, g.b_scale = d_sb, g.b_scale_per_col = per_col, g.bias = d_bias;
        int8_gemm_path(&g, path, 0);
        download(y, g.out, sizeof(bf16) * mn);
        bad = -1;
        for (size_t i = 0; i < mn && bad < 0; i++) {
            float ref = bf(__float2bfloat16(ref_epilogue(acc_ref[i], sa[i / N], sb, per_col, bias, i % N, 0.0f)));
            if (!(bf(y[i]) == ref)) bad = (long)i;
        }
        EXPECT(bad < 0, "%s (M %d, N %d, K %d) bf16 out (per-column scales %d) differs at (%ld, %ld): %g vs ref %g",
               path_name(path), M, N, K, per_col, bad / N, bad % N, bad < 0 ? 0 : bf(y[bad]),
               bad < 0 ? 0 : bf(__float2bfloat16(ref_epilogue(acc_ref[bad], sa[bad / N], sb, per_col, bias, bad % N, 0.0f))));
        cudaCheck(cudaFree(g.out));
    }

    // 3. fp32, per-column scales, no bias, accumulating into random values
    float *old = (float *)host_alloc(sizeof(float) * mn), *yf = (float *)host_alloc(sizeof(float) * mn);
    for (size_t i = 0; i < mn; i++) old[i] = (float)rng_normal(r);
    g.out = dev_upload(old, sizeof(float) * mn), g.out_type = INT8_OUT_F32;
    g.b_scale_per_col = 1, g.bias = NULL, g.accumulate = 1;
    int8_gemm_path(&g, path, 0);
    download(yf, g.out, sizeof(float) * mn);
    bad = -1;
    for (size_t i = 0; i < mn && bad < 0; i++)
        if (!(yf[i] == ref_epilogue(acc_ref[i], sa[i / N], sb, 1, NULL, i % N, old[i]))) bad = (long)i;
    EXPECT(bad < 0, "%s (M %d, N %d, K %d) fp32 accumulate differs at (%ld, %ld): %g vs ref %g", path_name(path), M,
           N, K, bad / N, bad % N, bad < 0 ? 0 : yf[bad],
           bad < 0 ? 0 : ref_epilogue(acc_ref[bad], sa[bad / N], sb, 1, NULL, bad % N, old[bad]));
    cudaCheck(cudaFree(g.out));

    // 4. bf16, per-column scales, with bias, accumulating into random bf16 values (the direct-store epilogue)
    bf16 *oldb = (bf16 *)host_alloc(sizeof(bf16) * mn);
    fill_bf16(r, oldb, NULL, M, N, 1.0f, 0);
    g.out = dev_upload(oldb, sizeof(bf16) * mn), g.out_type = INT8_OUT_BF16, g.bias = d_bias;
    int8_gemm_path(&g, path, 0);
    download(y, g.out, sizeof(bf16) * mn);
    bad = -1;
    for (size_t i = 0; i < mn && bad < 0; i++) {
        float ref = bf(__float2bfloat16(ref_epilogue(acc_ref[i], sa[i / N], sb, 1, bias, i % N, bf(oldb[i]))));
        if (!(bf(y[i]) == ref)) bad = (long)i;
    }
    EXPECT(bad < 0, "%s (M %d, N %d, K %d) bf16 accumulate differs at (%ld, %ld): %g", path_name(path), M, N, K,
           bad / N, bad % N, bad < 0 ? 0 : bf(y[bad]));
    cudaCheck(cudaFree(g.out));
    free(oldb);

    cudaCheck(cudaFree(d_a));
    cudaCheck(cudaFree(d_b));
    cudaCheck(cudaFree(d_sa));
    cudaCheck(cudaFree(d_sb));
    cudaCheck(cudaFree(d_bias));
    free(a), free(b), free(sa), free(sb), free(bias), free(acc), free(acc_ref), free(y), free(old), free(yf);
}

static void gemm_cases(Int8GemmPath path) {
    Rng r = test_rng();
    gemm_case(&r, path, 197 * 3 + 5, 208, 336);  // odd M; N, K multiples of 16, not of 64
    gemm_case(&r, path, 1, 16, 16);
    gemm_case(&r, path, 129, 272, 144);
    gemm_case(&r, path, 300, 2304, 768);   // ViT-B qkv width: several column tiles
    gemm_case(&r, path, 2000, 784, 1040);  // ragged everywhere
    gemm_case(&r, path, 4400, 2304, 272);  // 162 (324 at 128 wide) work items: several per cluster; odd M-tile count
}

static void test_int8_gemm_mma(void) {
    NEED_GPU();
    gemm_cases(INT8_PATH_MMA);
}

static void test_int8_gemm_wgmma(void) {
    NEED_GPU();
    if (!hopper_code_runs()) SKIP("the wgmma kernel needs an sm_90 GPU and a build with sm_90a code");
    gemm_cases(INT8_PATH_WGMMA_N256);  // both tile widths on every case (int8_gemm picks one by shape)
    gemm_cases(INT8_PATH_WGMMA_N128);
}

// ------------------------------------------------------------------------------------------------ the layer
// Error bound of an int8 dot product, per element: with x and w quantized to steps sx = absmax_x / 127 and
// sw = absmax_w / 127 (round to nearest: |error| <= step / 2 each),
//   |x.w - x'.w'| <= sum_k |x_k| sw/2 + |w_k| sx/2 + sx sw / 4 = ||x||_1 sw/2 + ||w||_1 sx/2 + K sx sw/4,
// plus half a bf16 ulp of the output (2^-8 relative) and fp32 slack. Every element must meet it (x 1.01).
// Relative norm bound: the errors are about uniform and independent, so the relative error of y is about
// sqrt((sx^2/12)/var(x) + (sw^2/12)/var(w)); for normal data with absmax ~3 sigma over a row of 208 and ~4.5 sigma
// over a whole weight, that is sqrt(0.0068^2 + 0.0102^2) = 1.2%, plus 0.1% from the bf16 output: 2.5e-2 bounds it
// with a 2x margin, while any indexing error gives O(1).
#define LAYER_REL_BOUND 2.5e-2
// dW through cuBLASLt from the same bf16 values: only fp32 summation order differs.
#define DW_BF16_REL_BOUND 1e-4

// Checks out (m, n) against ref with the per-element bound: steps ra (m) and cb (n or 1), L1 norms la (m), lb (n).
static void check_int8_bound(const char *what, const float *out, const float *ref, int m, int n, int kdim,
                             const float *ra, const float *la, const float *cb, int cb_per_col, const float *lb) {
    long bad = -1;
    double worst = 0.0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            size_t e = (size_t)i * n + j;
            float sb = cb[cb_per_col ? j : 0];
            double bound = 1.01 * (la[i] * sb / 2 + lb[j] * ra[i] / 2 + kdim * ra[i] * sb / 4) +
                           fabs(ref[e]) / 256 + 1e-5 * (la[i] + lb[j]);
            double err = fabs((double)out[e] - ref[e]);
            if (!(err <= bound) && bad < 0) bad = (long)e;
            if (bound > 0 && err / bound > worst) worst = err / bound;
        }
    EXPECT(bad < 0, "%s: element (%ld, %ld) = %g, ref %g, beyond the quantization bound (worst err/bound %.2f)", what,
           bad / n, bad % n, bad < 0 ? 0 : out[bad], bad < 0 ? 0 : ref[bad], worst);
}

static void layer_case(SwitchBackMode mode, int M, int K, int N) {
    Rng r = test_rng();
    size_t mk = (size_t)M * K, nk = (size_t)N * K, mn = (size_t)M * N;
    bf16 *x = (bf16 *)host_alloc(sizeof(bf16) * mk), *w = (bf16 *)host_alloc(sizeof(bf16) * nk);
    bf16 *b = (bf16 *)host_alloc(sizeof(bf16) * N), *g = (bf16 *)host_alloc(sizeof(bf16) * mn);
    float *xf = (float *)host_alloc(sizeof(float) * mk), *wf = (float *)host_alloc(sizeof(float) * nk);
    float *bfl = (float *)host_alloc(sizeof(float) * N), *gf = (float *)host_alloc(sizeof(float) * mn);
    fill_bf16(&r, x, xf, M, K, 1.0f, 0);
    fill_bf16(&r, w, wf, N, K, 1.0f / sqrtf((float)K), 0);
    fill_bf16(&r, b, bfl, 1, N, 0.1f, 0);
    fill_bf16(&r, g, gf, M, N, 1.0f, 0);

    // fp32 references
    float *y_ref = (float *)host_alloc(sizeof(float) * mn), *dx_ref = (float *)host_alloc(sizeof(float) * mk);
    float *dw_ref = (float *)host_alloc(sizeof(float) * nk), *db_ref = (float *)host_alloc(sizeof(float) * N);
    float *wt = (float *)host_alloc(sizeof(float) * nk), *gt = (float *)host_alloc(sizeof(float) * mn);
    float *xt = (float *)host_alloc(sizeof(float) * mk);
    ref_matmul_nt(y_ref, xf, wf, bfl, M, N, K);
    ref_transpose(wt, wf, N, K);
    ref_matmul_nt(dx_ref, gf, wt, NULL, M, K, N);
    ref_transpose(gt, gf, M, N);
    ref_transpose(xt, xf, M, K);
    ref_matmul_nt(dw_ref, gt, xt, NULL, N, K, M);
    for (int j = 0; j < N; j++) {
        double s = 0;
        for (int i = 0; i < M; i++) s += gf[(size_t)i * N + j];
        db_ref[j] = (float)s;
    }

    // GPU
    SwitchBack sb;
    switchback_init(&sb, mode, M, K > N ? K : N);
    SbWeight qw;
    sb_weight_alloc(&qw, N, K);
    bf16 *d_x = (bf16 *)dev_upload(x, sizeof(bf16) * mk), *d_w = (bf16 *)dev_upload(w, sizeof(bf16) * nk);
    bf16 *d_b = (bf16 *)dev_upload(b, sizeof(bf16) * N), *d_g = (bf16 *)dev_upload(g, sizeof(bf16) * mn);
    bf16 *d_y = (bf16 *)dev_poisoned(sizeof(bf16) * mn, 0xFF), *d_dx = (bf16 *)dev_poisoned(sizeof(bf16) * mk, 0xFF);
    float *d_dw = (float *)dev_poisoned(sizeof(float) * nk, 0xFF), *d_db = (float *)dev_poisoned(sizeof(float) * N, 0xFF);
    int8_t *d_xq = (int8_t *)dev_poisoned(mk, 0x80);
    float *d_xs = (float *)dev_poisoned(sizeof(float) * M, 0xFF);
    switchback_quantize_weight(&qw, d_w, mode, 0);
    switchback_forward(&sb, d_y, d_xq, d_xs, d_x, &qw, d_b, M, 0);
    int mem_eff = mode == SB_MEMORY_EFFICIENT;
    switchback_backward(&sb, d_dx, d_dw, d_db, d_g, mem_eff ? NULL : d_x, d_xq, d_xs, &qw, M, 0, 0, 0);
    float *y = download_bf16(d_y, mn), *dx = download_bf16(d_dx, mk);
    float *dw = (float *)host_alloc(sizeof(float) * nk), *db = (float *)host_alloc(sizeof(float) * N);
    download(dw, d_dw, sizeof(float) * nk);
    download(db, d_db, sizeof(float) * N);

    // Quantization steps and L1 norms for the per-element bounds (the scales as the kernels compute them).
    float *am_w = (float *)host_alloc(sizeof(float) * (N + K + 1));
    ref_absmax(am_w, w, N, K);
    float *sx = (float *)host_alloc(sizeof(float) * M), *sg = (float *)host_alloc(sizeof(float) * M);
    float *l1x = (float *)host_alloc(sizeof(float) * M), *l1g = (float *)host_alloc(sizeof(float) * M);
    float *l1w_row = (float *)host_alloc(sizeof(float) * N), *l1w_col = (float *)host_alloc(sizeof(float) * K);
    for (int i = 0; i < M; i++) {
        float mx = 0, mg = 0, ax = 0, ag = 0;
        for (int k = 0; k < K; k++) mx = fmaxf(mx, fabsf(xf[(size_t)i * K + k])), ax += fabsf(xf[(size_t)i * K + k]);
        for (int j = 0; j < N; j++) mg = fmaxf(mg, fabsf(gf[(size_t)i * N + j])), ag += fabsf(gf[(size_t)i * N + j]);
        sx[i] = mx / 127, sg[i] = mg / 127, l1x[i] = ax, l1g[i] = ag;
    }
    for (int j = 0; j < N; j++) l1w_row[j] = 0;
    for (int k = 0; k < K; k++) l1w_col[k] = 0;
    for (int j = 0; j < N; j++)
        for (int k = 0; k < K; k++) l1w_row[j] += fabsf(wf[(size_t)j * K + k]), l1w_col[k] += fabsf(wf[(size_t)j * K + k]);
    int vw = mode == SB_VECTORWISE;
    float *sw_fwd = (float *)host_alloc(sizeof(float) * (N + K + 1)), *sw_bwd = sw_fwd + N;  // steps of W, W^T
    for (int i = 0; i < N + K + 1; i++) sw_fwd[i] = am_w[i] / 127;
    const float *sw_t = sw_fwd + N + K;  // tensor-wise step

    const char *names[] = {"standard", "memory-efficient", "vector-wise", "int8 everywhere"};
    char what[128];
    snprintf(what, sizeof(what), "%s (M %d, K %d, N %d) y", names[mode], M, K, N);
    double e = rel_err(y, y_ref, mn);
    EXPECT(e <= LAYER_REL_BOUND, "%s: relative error %.3g > %.3g", what, e, LAYER_REL_BOUND);
    check_int8_bound(what, y, y_ref, M, N, K, sx, l1x, vw ? sw_fwd : sw_t, vw, l1w_row);
    snprintf(what, sizeof(what), "%s (M %d, K %d, N %d) dx", names[mode], M, K, N);
    e = rel_err(dx, dx_ref, mk);
    EXPECT(e <= LAYER_REL_BOUND, "%s: relative error %.3g > %.3g", what, e, LAYER_REL_BOUND);
    check_int8_bound(what, dx, dx_ref, M, K, N, sg, l1g, vw ? sw_bwd : sw_t, vw, l1w_col);
    // dW: bf16 GEMM (standard, vector-wise); from the dequantized x (memory-efficient: x's quantization error
    // alone, ~0.7%); int8 on both sides (int8 everywhere: ~1.2%, as for y).
    double dw_bound = (mode == SB_STANDARD || mode == SB_VECTORWISE) ? DW_BF16_REL_BOUND : LAYER_REL_BOUND;
    e = rel_err(dw, dw_ref, nk);
    EXPECT(e <= dw_bound, "%s (M %d, K %d, N %d) dw: relative error %.3g > %.3g", names[mode], M, K, N, e, dw_bound);
    e = rel_err(db, db_ref, N);
    EXPECT(e <= 1e-5, "%s db: relative error %.3g", names[mode], e);

    // A second backward accumulating into dw and db must double them (up to fp32 rounding of the sum: every
    // kernel here is deterministic and cuBLASLt picks the same algorithm for the same shapes).
    switchback_backward(&sb, d_dx, d_dw, d_db, d_g, mem_eff ? NULL : d_x, d_xq, d_xs, &qw, M, 1, 0, 0);
    float *dw2 = (float *)host_alloc(sizeof(float) * nk), *db2 = (float *)host_alloc(sizeof(float) * N);
    download(dw2, d_dw, sizeof(float) * nk);
    download(db2, d_db, sizeof(float) * N);
    for (size_t i = 0; i < nk; i++) dw[i] *= 2;
    for (int j = 0; j < N; j++) db[j] *= 2;
    e = rel_err(dw2, dw, nk);
    EXPECT(e <= 1e-6, "%s: dw accumulated over two backward passes is not twice dw (relative error %.3g)", names[mode], e);
    e = rel_err(db2, db, N);
    EXPECT(e <= 1e-6, "%s: db accumulated over two backward passes is not twice db (relative error %.3g)", names[mode], e);

    // Inputs quantized by their producers (forward with x NULL: xq, xs as the forward wrote them; backward with
    // g_quantized: sb.gq, sb.gs filled beforehand): y, dx and dw bit for bit, db to fp32 rounding (column_sums'
    // order instead of the quantizer's chunks).
    cudaCheck(cudaMemset(d_y, 0xFF, sizeof(bf16) * mn));
    cudaCheck(cudaMemset(d_dx, 0xFF, sizeof(bf16) * mk));
    switchback_forward(&sb, d_y, d_xq, d_xs, NULL, &qw, d_b, M, 0);
    quantize_rowwise(sb.gq, sb.gs, d_g, M, N, 0);
    switchback_backward(&sb, d_dx, d_dw, d_db, d_g, mem_eff ? NULL : d_x, d_xq, d_xs, &qw, M, 0, 1, 0);
    float *y3 = download_bf16(d_y, mn), *dx3 = download_bf16(d_dx, mk);
    download(dw2, d_dw, sizeof(float) * nk);
    download(db2, d_db, sizeof(float) * N);
    for (size_t i = 0; i < nk; i++) dw[i] *= 0.5f;  // exact: back to the first pass's dw
    for (int j = 0; j < N; j++) db[j] *= 0.5f;
    EXPECT(first_diff(y3, y, sizeof(float) * mn) < 0 && first_diff(dx3, dx, sizeof(float) * mk) < 0 &&
               first_diff(dw2, dw, sizeof(float) * nk) < 0,
           "%s: with pre-quantized x and g, y / dx / dw differ (first byte %ld / %ld / %ld)", names[mode],
           first_diff(y3, y, sizeof(float) * mn), first_diff(dx3, dx, sizeof(float) * mk), first_diff(dw2, dw, sizeof(float) * nk));
    e = rel_err(db2, db, N);
    EXPECT(e <= 1e-6, "%s: with pre-quantized g, db relative error %.3g", names[mode], e);
    free(y3), free(dx3);

    // The two halves, as the model runs c_proj's backward: sb.gq, sb.gs overwritten between them (the GELU backward
    // quantizes c_fc's output gradient there) must not change dx, dw or db (bit for bit the first pass's).
    cudaCheck(cudaMemset(d_dx, 0xFF, sizeof(bf16) * mk));
    cudaCheck(cudaMemset(d_dw, 0xFF, sizeof(float) * nk));
    cudaCheck(cudaMemset(d_db, 0xFF, sizeof(float) * N));
    switchback_backward_input(&sb, d_dx, d_db, d_g, &qw, M, 0, 0, 0);
    cudaCheck(cudaMemset(sb.gq, 0x80, (size_t)M * N));
    cudaCheck(cudaMemset(sb.gs, 0xFF, sizeof(float) * M));
    switchback_backward_weight(&sb, d_dw, d_g, mem_eff ? NULL : d_x, d_xq, d_xs, &qw, M, 0, 0);
    float *dx4 = download_bf16(d_dx, mk);
    download(dw2, d_dw, sizeof(float) * nk);
    download(db2, d_db, sizeof(float) * N);
    EXPECT(first_diff(dx4, dx, sizeof(float) * mk) < 0 && first_diff(dw2, dw, sizeof(float) * nk) < 0 &&
               first_diff(db2, db, sizeof(float) * N) < 0,
           "%s: the two halves with sb.gq overwritten between them: dx / dw / db differ (first byte %ld / %ld / %ld)", names[mode],
           first_diff(dx4, dx, sizeof(float) * mk), first_diff(dw2, dw, sizeof(float) * nk), first_diff(db2, db, sizeof(float) * N));
    free(dx4);

    switchback_free(&sb);
    sb_weight_free(&qw);
    void *dev[] = {d_x, d_w, d_b, d_g, d_y, d_dx, d_dw, d_db, d_xq, d_xs};
    for (int i = 0; i < 10; i++) cudaCheck(cudaFree(dev[i]));
    void *host[] = {x, w, b, g, xf, wf, bfl, gf, y_ref, dx_ref, dw_ref, db_ref, wt, gt, xt, y, dx, dw, db,
                    am_w, sx, sg, l1x, l1g, l1w_row, l1w_col, sw_fwd, dw2, db2};
    for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++) free(host[i]);
}

static void test_layer_standard(void) {
    NEED_GPU();
    layer_case(SB_STANDARD, 197 * 3 + 5, 208, 336);
    layer_case(SB_STANDARD, 1000, 768, 2304);
}
static void test_layer_memory_efficient(void) {
    NEED_GPU();
    layer_case(SB_MEMORY_EFFICIENT, 197 * 3 + 5, 208, 336);
}
static void test_layer_vectorwise(void) {
    NEED_GPU();
    layer_case(SB_VECTORWISE, 197 * 3 + 5, 208, 336);
}
static void test_layer_int8_everywhere(void) {
    NEED_GPU();
    layer_case(SB_INT8_EVERYWHERE, 197 * 3 + 5, 208, 336);
}

int main(void) {
    const char *env = getenv("SB_TEST_SEED");
    seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    printf("seed %llu (SB_TEST_SEED=%llu repeats this run)\n", (unsigned long long)seed, (unsigned long long)seed);
    if (cuda_device_count() > 0) {
        cudaDeviceProp p;
        cudaCheck(cudaGetDeviceProperties(&p, 0));
        printf("GPU: %s (sm_%d%d)\n", p.name, p.major, p.minor);
    }
    RUN(test_quantize_rowwise);
    RUN(test_dequantize_rowwise);
    RUN(test_quantize_2way);
    RUN(test_quantize_weight_batch);
    RUN(test_int8_gemm_mma);
    RUN(test_int8_gemm_wgmma);
    RUN(test_layer_standard);
    RUN(test_layer_memory_efficient);
    RUN(test_layer_vectorwise);
    RUN(test_layer_int8_everywhere);
    TEST_EXIT();
}
