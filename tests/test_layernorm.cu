// test_layernorm.cu: kernels/layernorm.cu against model/ops_cpu.c: LayerNorm forward fused with the
// residual add (with and without layer-scale, plain, add only), recompute from saved statistics, backward,
// layer-scale backward; float and bf16, vector and odd widths. Bounds (relative L2 error): fp32 1e-5;
// bf16 outputs 1e-2 (one bf16 rounding of each output, ~2e-3), fp32 statistics and parameter gradients
// 1e-5 (the inputs are the same bf16-rounded values on both sides). The SwitchBack outputs (forward and backward
// results quantized row-wise in the same pass) bit for bit against ref_quantize_rows of the bf16 results, with
// the bf16 results unchanged, and (forward) without the bf16 output written. The backward with the branch gradients
// (BranchGrads, with and without layer-scale): dinp and the LayerNorm's own gradients bit for bit those of the plain
// backward, the branch sums 1e-5 from fp64 sums of the same (T-rounded) dinp values read back, and within the dinp
// bound of the fp32 CPU reference's. The weight and bias gradients, summed in the backward's pass, also over a whole
// wave of blocks of many rows each (16448 x 1280, ViT-H/14's vision rows).
#include "../kernels/layernorm.cuh"
#include "test_gpu.h"
#include "ref_switchback.h"

template <typename T> static void check_forward(int N, int C, int with_f, int with_ls, int with_ln) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    size_t n = (size_t)N * C;
    float *x = rand_host(n, 2.0f), *f = rand_host(n, 1.0f), *ls = rand_host(C, 1.0f), *w = rand_host(C, 1.5f), *b = rand_host(C, 0.5f);
    for (size_t i = 0; i < n; i++) x[i] += 0.7f;  // a mean offset, as residual streams have
    round_to<T>(x, n), round_to<T>(f, n);
    float *res = zeros_host(n), *out = zeros_host(n), *mean = zeros_host(N), *rstd = zeros_host(N);
    if (with_f) residual_forward(res, x, f, with_ls ? ls : NULL, N, C);
    else memcpy(res, x, n * sizeof(float));
    round_to<T>(res, n);  // the kernel normalises the rounded sum it stores
    if (with_ln) layernorm_forward(out, mean, rstd, res, w, b, N, C);
    T *d_x = to_device<T>(x, n), *d_f = to_device<T>(f, n), *d_res = poisoned<T>(n), *d_out = poisoned<T>(n);
    float *d_ls = to_device<float>(ls, C), *d_w = to_device<float>(w, C), *d_b = to_device<float>(b, C);
    float *d_mean = poisoned<float>(N), *d_rstd = poisoned<float>(N);
    residual_layernorm_forward_gpu<T>(with_f ? d_res : NULL, with_ln ? d_out : NULL, d_mean, d_rstd, d_x, with_f ? d_f : NULL,
                                      with_ls ? d_ls : NULL, with_ln ? d_w : NULL, d_b, N, C);
    float *g = zeros_host(n);
    double bound = sizeof(T) == 2 ? 1e-2 : 1e-5;
    if (with_f) {
        to_host<T>(g, d_res, n);
        double e = rel_err(g, res, n);
        // bf16: an FMA-contracted sum can round to the neighbouring bf16 value now and then
        EXPECT(e < (sizeof(T) == 2 ? 1e-3 : 1e-5), "%s N=%d C=%d: residual rel err %.2e", tn, N, C, e);
    }
    if (with_ln) {
        to_host<T>(g, d_out, n);
        double e = rel_err(g, out, n);
        EXPECT(e < bound, "%s N=%d C=%d f=%d ls=%d: out rel err %.2e", tn, N, C, with_f, with_ls, e);
        float *gm = zeros_host(N), *gr = zeros_host(N), *g2 = zeros_host(n);
        to_host<float>(gm, d_mean, N), to_host<float>(gr, d_rstd, N);
        double sb = sizeof(T) == 2 ? 1e-4 : 1e-5;
        EXPECT(rel_err(gm, mean, N) < sb && rel_err(gr, rstd, N) < sb, "%s: mean/rstd rel err %.2e %.2e", tn,
               rel_err(gm, mean, N), rel_err(gr, rstd, N));
        // recompute from the saved statistics gives the forward's output
        T *d_out2 = poisoned<T>(n);
        layernorm_recompute_gpu<T>(d_out2, with_f ? d_res : d_x, d_mean, d_rstd, d_w, d_b, N, C);
        to_host<T>(g2, d_out2, n);
        EXPECT(rel_err(g2, g, n) < 1e-6, "%s: recompute differs from forward (%.2e)", tn, rel_err(g2, g, n));
        free(gm), free(gr), free(g2), cudaCheck(cudaFree(d_out2));
    }
    free(x), free(f), free(ls), free(w), free(b), free(res), free(out), free(mean), free(rstd), free(g);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_f)), cudaCheck(cudaFree(d_res)), cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_ls)), cudaCheck(cudaFree(d_w)), cudaCheck(cudaFree(d_b)), cudaCheck(cudaFree(d_mean)), cudaCheck(cudaFree(d_rstd));
}

template <typename T> static void check_backward(int N, int C) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    size_t n = (size_t)N * C;
    float *x = rand_host(n, 2.0f), *w = rand_host(C, 1.5f), *b = rand_host(C, 0.5f), *dout = rand_host(n, 1.0f);
    float *dinp = rand_host(n, 1.0f), *dw = rand_host(C, 1.0f), *db = rand_host(C, 1.0f);
    round_to<T>(x, n), round_to<T>(dout, n), round_to<T>(dinp, n);
    float *out = zeros_host(n), *mean = zeros_host(N), *rstd = zeros_host(N);
    layernorm_forward(out, mean, rstd, x, w, b, N, C);
    T *d_x = to_device<T>(x, n), *d_dout = to_device<T>(dout, n), *d_dinp = to_device<T>(dinp, n);
    float *d_w = to_device<float>(w, C), *d_dw = to_device<float>(dw, C), *d_db = to_device<float>(db, C);
    float *d_mean = to_device<float>(mean, N), *d_rstd = to_device<float>(rstd, N);
    layernorm_backward(dinp, dw, db, dout, x, w, mean, rstd, N, C);  // accumulates onto the random start values
    layernorm_backward_gpu<T>(d_dinp, d_dw, d_db, d_dout, d_x, d_w, d_mean, d_rstd, N, C);
    float *g = zeros_host(n), *gw = zeros_host(C), *gb = zeros_host(C);
    to_host<T>(g, d_dinp, n), to_host<float>(gw, d_dw, C), to_host<float>(gb, d_db, C);
    double e = rel_err(g, dinp, n), ew = rel_err(gw, dw, C), eb = rel_err(gb, db, C);
    EXPECT(e < (sizeof(T) == 2 ? 1e-2 : 1e-5), "%s N=%d C=%d: dinp rel err %.2e", tn, N, C, e);
    EXPECT(ew < 1e-5 && eb < 1e-5, "%s N=%d C=%d: dw rel err %.2e, db %.2e", tn, N, C, ew, eb);
    // layer-scale branch: df = dout * ls, dls += sum dout * f
    float *f = rand_host(n, 1.0f), *ls = rand_host(C, 1.0f), *dls = rand_host(C, 1.0f), *df = zeros_host(n), *dx = zeros_host(n);
    round_to<T>(f, n);
    T *d_f = to_device<T>(f, n), *d_df = poisoned<T>(n);
    float *d_ls = to_device<float>(ls, C), *d_dls = to_device<float>(dls, C);
    residual_backward(dx, df, dls, dout, f, ls, N, C);
    layerscale_backward_gpu<T>(d_df, d_dls, d_dout, d_f, d_ls, N, C);
    to_host<T>(g, d_df, n), to_host<float>(gw, d_dls, C);
    EXPECT(rel_err(g, df, n) < (sizeof(T) == 2 ? 1e-2 : 1e-5), "%s: layer-scale df rel err %.2e", tn, rel_err(g, df, n));
    EXPECT(rel_err(gw, dls, C) < 1e-5, "%s: dls rel err %.2e", tn, rel_err(gw, dls, C));
    printf("  %s N=%d C=%d: dinp %.1e dw %.1e db %.1e\n", tn, N, C, e, ew, eb);
    free(x), free(w), free(b), free(dout), free(dinp), free(dw), free(db), free(out), free(mean), free(rstd), free(g), free(gw), free(gb);
    free(f), free(ls), free(dls), free(df), free(dx);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_dout)), cudaCheck(cudaFree(d_dinp)), cudaCheck(cudaFree(d_w)), cudaCheck(cudaFree(d_dw));
    cudaCheck(cudaFree(d_db)), cudaCheck(cudaFree(d_mean)), cudaCheck(cudaFree(d_rstd)), cudaCheck(cudaFree(d_f)), cudaCheck(cudaFree(d_df));
    cudaCheck(cudaFree(d_ls)), cudaCheck(cudaFree(d_dls));
}

// bf16 with the SwitchBack outputs: forward (residual + LN, then LN only without out) and backward.
static void check_quantized(int N, int C) {
    size_t n = (size_t)N * C;
    float *x = rand_host(n, 2.0f), *f = rand_host(n, 1.0f), *w = rand_host(C, 1.5f), *b = rand_host(C, 0.5f);
    float *dout = rand_host(n, 1.0f), *dinp = rand_host(n, 1.0f), *dw = zeros_host(C), *db = zeros_host(C);
    round_to<bf16>(x, n), round_to<bf16>(f, n), round_to<bf16>(dout, n), round_to<bf16>(dinp, n);
    bf16 *d_x = to_device<bf16>(x, n), *d_f = to_device<bf16>(f, n), *d_res = poisoned<bf16>(n), *d_res2 = poisoned<bf16>(n);
    bf16 *d_out = poisoned<bf16>(n), *d_out2 = poisoned<bf16>(n);
    float *d_w = to_device<float>(w, C), *d_b = to_device<float>(b, C), *d_mean = poisoned<float>(N), *d_rstd = poisoned<float>(N);
    int8_t *d_q = poisoned<int8_t>(n), *d_q2 = poisoned<int8_t>(n);
    cudaCheck(cudaMemset(d_q, 0x80, n)), cudaCheck(cudaMemset(d_q2, 0x80, n));  // -128: never a quantized value
    float *d_s = poisoned<float>(N), *d_s2 = poisoned<float>(N);
    float *g = zeros_host(n), *g2 = zeros_host(n);
    residual_layernorm_forward_gpu<bf16>(d_res, d_out, d_mean, d_rstd, d_x, d_f, NULL, d_w, d_b, N, C);
    residual_layernorm_forward_gpu<bf16>(d_res2, d_out2, d_mean, d_rstd, d_x, d_f, NULL, d_w, d_b, N, C, d_q, d_s);
    to_host<bf16>(g, d_out, n), to_host<bf16>(g2, d_out2, n);
    long dq = rows_quantized_diff(d_q, d_s, d_out2, N, C);
    EXPECT(!memcmp(g, g2, n * sizeof(float)) && dq < 0, "bf16 N=%d C=%d: forward with int8 output: out %s, first int8 difference %ld",
           N, C, memcmp(g, g2, n * sizeof(float)) ? "differs" : "same", dq);
    // LayerNorm alone, int8 only (out NULL): the same int8 rows
    residual_layernorm_forward_gpu<bf16>(NULL, d_out, d_mean, d_rstd, d_res, NULL, NULL, d_w, d_b, N, C);
    residual_layernorm_forward_gpu<bf16>(NULL, NULL, d_mean, d_rstd, d_res, NULL, NULL, d_w, d_b, N, C, d_q2, d_s2);
    dq = rows_quantized_diff(d_q2, d_s2, d_out, N, C);
    EXPECT(dq < 0, "bf16 N=%d C=%d: LayerNorm with only the int8 output: first difference %ld", N, C, dq);
    // backward: dinp (+=) and its int8 rows
    bf16 *d_dout = to_device<bf16>(dout, n), *d_dinp = to_device<bf16>(dinp, n), *d_dinp2 = to_device<bf16>(dinp, n);
    float *d_dw = to_device<float>(dw, C), *d_db = to_device<float>(db, C);
    cudaCheck(cudaMemset(d_q, 0x80, n)), cudaCheck(cudaMemset(d_s, 0xFF, N * sizeof(float)));
    layernorm_backward_gpu<bf16>(d_dinp, d_dw, d_db, d_dout, d_x, d_w, d_mean, d_rstd, N, C);
    layernorm_backward_gpu<bf16>(d_dinp2, d_dw, d_db, d_dout, d_x, d_w, d_mean, d_rstd, N, C, d_q, d_s);
    to_host<bf16>(g, d_dinp, n), to_host<bf16>(g2, d_dinp2, n);
    dq = rows_quantized_diff(d_q, d_s, d_dinp2, N, C);
    EXPECT(!memcmp(g, g2, n * sizeof(float)) && dq < 0, "bf16 N=%d C=%d: backward with int8 output: dinp %s, first int8 difference %ld",
           N, C, memcmp(g, g2, n * sizeof(float)) ? "differs" : "same", dq);
    free(x), free(f), free(w), free(b), free(dout), free(dinp), free(dw), free(db), free(g), free(g2);
    void *dev[] = {d_x, d_f, d_res, d_res2, d_out, d_out2, d_w, d_b, d_mean, d_rstd, d_q, d_q2, d_s, d_s2, d_dout, d_dinp, d_dinp2, d_dw, d_db};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) cudaCheck(cudaFree(dev[i]));
}

// The backward with BranchGrads against the plain backward on a copy, and the sums against the CPU.
template <typename T> static void check_branch_grads(int N, int C, int with_ls, int quantized) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    size_t n = (size_t)N * C;
    float *x = rand_host(n, 2.0f), *w = rand_host(C, 1.5f), *b = rand_host(C, 0.5f), *dout = rand_host(n, 1.0f);
    float *dinp = rand_host(n, 1.0f), *f = rand_host(n, 1.0f), *ls = rand_host(C, 1.0f), *dbr = rand_host(C, 1.0f), *dls = rand_host(C, 1.0f);
    float *dw = zeros_host(C), *db = zeros_host(C);
    round_to<T>(x, n), round_to<T>(dout, n), round_to<T>(dinp, n), round_to<T>(f, n);
    float *out = zeros_host(n), *mean = zeros_host(N), *rstd = zeros_host(N);
    layernorm_forward(out, mean, rstd, x, w, b, N, C);
    T *d_x = to_device<T>(x, n), *d_dout = to_device<T>(dout, n), *d_dinp = to_device<T>(dinp, n), *d_dinp2 = to_device<T>(dinp, n);
    T *d_f = to_device<T>(f, n);
    float *d_w = to_device<float>(w, C), *d_mean = to_device<float>(mean, N), *d_rstd = to_device<float>(rstd, N);
    float *d_dw = to_device<float>(dw, C), *d_db = to_device<float>(db, C), *d_dw2 = to_device<float>(dw, C), *d_db2 = to_device<float>(db, C);
    float *d_ls = to_device<float>(ls, C), *d_dbr = to_device<float>(dbr, C), *d_dls = to_device<float>(dls, C);
    int8_t *d_q = quantized ? poisoned<int8_t>(n) : NULL, *d_q2 = quantized ? poisoned<int8_t>(n) : NULL;
    float *d_s = quantized ? poisoned<float>(N) : NULL, *d_s2 = quantized ? poisoned<float>(N) : NULL;
    layernorm_backward_gpu<T>(d_dinp, d_dw, d_db, d_dout, d_x, d_w, d_mean, d_rstd, N, C, d_q, d_s);
    BranchGrads<T> br = {d_dbr, with_ls ? d_dls : NULL, with_ls ? d_ls : NULL, with_ls ? d_f : NULL};
    layernorm_backward_gpu<T>(d_dinp2, d_dw2, d_db2, d_dout, d_x, d_w, d_mean, d_rstd, N, C, d_q2, d_s2, &br);
    float *g = zeros_host(n), *g2 = zeros_host(n), *h = zeros_host(4 * C), *h2 = zeros_host(4 * C);
    to_host<T>(g, d_dinp, n), to_host<T>(g2, d_dinp2, n);
    to_host<float>(h, d_dw, C), to_host<float>(h + C, d_db, C), to_host<float>(h2, d_dw2, C), to_host<float>(h2 + C, d_db2, C);
    int same = !memcmp(g, g2, n * sizeof(float)) && !memcmp(h, h2, 2 * C * sizeof(float));
    if (quantized) {
        int8_t *q = (int8_t *)mallocCheck(n), *q2 = (int8_t *)mallocCheck(n);
        float *s = zeros_host(N), *s2 = zeros_host(N);
        cudaCheck(cudaMemcpy(q, d_q, n, cudaMemcpyDeviceToHost)), cudaCheck(cudaMemcpy(q2, d_q2, n, cudaMemcpyDeviceToHost));
        to_host<float>(s, d_s, N), to_host<float>(s2, d_s2, N);
        same = same && !memcmp(q, q2, n) && !memcmp(s, s2, N * sizeof(float));
        free(q), free(q2), free(s), free(s2);
    }
    EXPECT(same, "%s N=%d C=%d ls=%d q=%d: the backward with branch gradients changed dinp, dw, db or the int8 rows", tn, N, C,
           with_ls, quantized);
    // the sums of the GPU's own dinp (as the unfused passes read it), in fp64, and the fp32 CPU reference's
    layernorm_backward(dinp, dw, db, dout, x, w, mean, rstd, N, C);
    float *want = zeros_host(2 * C), *ref = zeros_host(2 * C), *got = zeros_host(2 * C);
    for (int c = 0; c < C; c++) {
        double sb = dbr[c], sl = dls[c], rb = dbr[c], rl = dls[c];
        for (int r = 0; r < N; r++) {
            float d = g2[(size_t)r * C + c], dr = dinp[(size_t)r * C + c], fv = f[(size_t)r * C + c];
            float gb = d;
            if (with_ls) {
                gb = d * ls[c];
                round_to<T>(&gb, 1);
            }
            sb += gb, sl += (double)d * fv, rb += with_ls ? dr * ls[c] : dr, rl += (double)dr * fv;
        }
        want[c] = (float)sb, want[C + c] = (float)sl, ref[c] = (float)rb, ref[C + c] = (float)rl;
    }
    to_host<float>(got, d_dbr, C), to_host<float>(got + C, d_dls, C);
    int m = with_ls ? 2 : 1;
    double e = rel_err(got, want, m * C), er = rel_err(got, ref, m * C);
    EXPECT(e < 1e-5, "%s N=%d C=%d ls=%d q=%d: branch sums rel err %.2e against the sums of the same dinp", tn, N, C, with_ls, quantized, e);
    EXPECT(er < (sizeof(T) == 2 ? 1e-2 : 1e-5), "%s N=%d C=%d ls=%d: branch sums rel err %.2e against the CPU reference", tn, N, C, with_ls, er);
    if (!with_ls) {
        to_host<float>(got + C, d_dls, C);  // untouched
        EXPECT(!memcmp(got + C, dls, C * sizeof(float)), "%s: dls written without layer-scale", tn);
    }
    printf("  %s N=%d C=%d ls=%d q=%d: branch sums %.1e (same dinp), %.1e (CPU)\n", tn, N, C, with_ls, quantized, e, er);
    free(x), free(w), free(b), free(dout), free(dinp), free(f), free(ls), free(dbr), free(dls), free(dw), free(db), free(out), free(mean);
    free(rstd), free(g), free(g2), free(h), free(h2), free(want), free(ref), free(got);
    void *dev[] = {d_x, d_dout, d_dinp, d_dinp2, d_f, d_w, d_mean, d_rstd, d_dw, d_db, d_dw2, d_db2, d_ls, d_dbr, d_dls, d_q, d_q2, d_s, d_s2};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) cudaCheck(cudaFree(dev[i]));
}

// odd (re-reading path), 768 / 1280 / 512 (register paths in bf16 / fp32), many rows per warp
static const int SIZES[][2] = {{37, 75}, {130, 768}, {9, 1280}, {300, 64}, {50, 512}, {3000, 768}};

static void test_layernorm_forward(void) {
    SKIP_WITHOUT_GPU();
    for (int s = 0; s < 6; s++) {
        int N = SIZES[s][0], C = SIZES[s][1];
        for (int mode = 0; mode < 4; mode++) {  // residual + ls + LN, residual + LN, LN only, residual only
            int f = mode != 2, ls = mode == 0, ln = mode != 3;
            check_forward<float>(N, C, f, ls, ln);
            check_forward<bf16>(N, C, f, ls, ln);
        }
    }
}

// and a whole wave of blocks at the step's width, many rows each (the parameter gradients' sums span the rows)
static void test_layernorm_backward(void) {
    SKIP_WITHOUT_GPU();
    for (int s = 0; s < 6; s++) check_backward<float>(SIZES[s][0], SIZES[s][1]), check_backward<bf16>(SIZES[s][0], SIZES[s][1]);
    check_backward<bf16>(16448, 1280);
}

// more rows than one wave of blocks holds at 8 rows each (ViT-H/14's vision tower at batch 64: 16,448 x 1280)
static void test_layernorm_branch_grads(void) {
    SKIP_WITHOUT_GPU();
    for (int s = 0; s < 6; s++)
        for (int ls = 0; ls < 2; ls++) check_branch_grads<float>(SIZES[s][0], SIZES[s][1], ls, 0), check_branch_grads<bf16>(SIZES[s][0], SIZES[s][1], ls, 0);
    check_branch_grads<bf16>(16448, 1280, 0, 1), check_branch_grads<bf16>(16448, 1280, 1, 0), check_branch_grads<float>(20000, 768, 1, 0);
}

static void test_layernorm_quantized(void) {
    SKIP_WITHOUT_GPU();
    for (int s = 0; s < 6; s++) check_quantized(SIZES[s][0], SIZES[s][1]);
}

int main(void) {
    test_seed();
    RUN(test_layernorm_forward);
    RUN(test_layernorm_backward);
    RUN(test_layernorm_quantized);
    RUN(test_layernorm_branch_grads);
    TEST_EXIT();
}
