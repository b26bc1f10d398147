// test_bf16_gemm.cu: the bf16 GEMM with fused MLP epilogues (kernels/bf16_gemm.cu), on fresh random inputs and
// NaN-poisoned outputs, at odd shapes (M not a multiple of 128, N and K multiples of 16 but not of 64) and model
// shapes, B in both layouts:
//  - BF16_EPI_BIAS against the CPU's matmul_forward on the same bf16 inputs: relative L2 error < 4e-3 (the output's
//    bf16 rounding gives ~1.1e-3; the sums' order a little more);
//  - BF16_EPI_GELU: out equal bit for bit to the BIAS epilogue's (the same mainloop), out2 to gelu_forward_gpu of it;
//  - BF16_EPI_GELU_BWD: out and out2 equal bit for bit to gelu_backward_bias_gpu of the BIAS epilogue's product
//    (bias NULL), and the column sums (colsum_finish_gpu of the partials) within 1e-5 relative L2 of that kernel's
//    (fp32 sums in another order). GELU and QuickGELU.
// Skipped without an sm_90 GPU.
#include "../kernels/bf16_gemm.cuh"
#include "../kernels/gelu.cuh"
#include "../kernels/reduce.cuh"
#include "test_gpu.h"

// Counts the elements whose bits differ.
static size_t bits_differ(const bf16 *a, const bf16 *b, size_t n) {
    uint16_t *ha = (uint16_t *)mallocCheck(n * 2), *hb = (uint16_t *)mallocCheck(n * 2);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(ha, a, n * 2, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(hb, b, n * 2, cudaMemcpyDeviceToHost));
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += ha[i] != hb[i];
    free(ha), free(hb);
    return d;
}

struct Case {
    int M, K, N, b_kn;
};
static const Case CASES[] = {{37, 64, 48, 0},      {37, 64, 48, 1},      {300, 80, 272, 0},    {300, 80, 272, 1},
                             {129, 16, 16, 1},     {1000, 1280, 400, 0}, {1000, 1280, 400, 1}, {16448, 1280, 5120, 0},
                             {4928, 1024, 4096, 1}, {50432, 768, 3072, 1}};

// A (M, K) and B ((N, K), or (K, N) with b_kn) on the host (bf16 values) and the device.
struct Inputs {
    float *a, *w_nk, *bias;  // w_nk: B as (N, K) for the CPU whatever the layout on the device
    bf16 *d_a, *d_b, *d_bias;
};
static Inputs make_inputs(const Case &c) {
    Inputs in;
    in.a = rand_host((size_t)c.M * c.K, 1.0f), in.w_nk = rand_host((size_t)c.N * c.K, 0.1f), in.bias = rand_host(c.N, 1.0f);
    round_bf16_(in.a, (size_t)c.M * c.K), round_bf16_(in.w_nk, (size_t)c.N * c.K), round_bf16_(in.bias, c.N);
    float *w = in.w_nk, *t = NULL;
    if (c.b_kn) {
        t = (float *)mallocCheck((size_t)c.N * c.K * sizeof(float));
        for (int n = 0; n < c.N; n++)
            for (int k = 0; k < c.K; k++) t[(size_t)k * c.N + n] = in.w_nk[(size_t)n * c.K + k];
        w = t;
    }
    in.d_a = to_device<bf16>(in.a, (size_t)c.M * c.K), in.d_b = to_device<bf16>(w, (size_t)c.N * c.K), in.d_bias = to_device<bf16>(in.bias, c.N);
    free(t);
    return in;
}
static void free_inputs(Inputs *in) {
    free(in->a), free(in->w_nk), free(in->bias);
    cudaCheck(cudaFree(in->d_a)), cudaCheck(cudaFree(in->d_b)), cudaCheck(cudaFree(in->d_bias));
}

static Bf16Gemm gemm_of(const Case &c, const Inputs &in, Bf16GemmEpilogue epi) {
    Bf16Gemm g = {};
    g.epilogue = epi, g.a = in.d_a, g.b = in.d_b, g.b_kn = c.b_kn, g.M = c.M, g.N = c.N, g.K = c.K;
    return g;
}

static void test_bias(void) {
    SKIP_WITHOUT_GPU();
    if (!bf16_gemm_available()) SKIP("bf16_gemm needs an sm_90 GPU");
    for (const Case &c : CASES) {
        if ((size_t)c.M * c.N > (size_t)5e7) continue;  // the CPU reference of the largest shapes takes too long
        Inputs in = make_inputs(c);
        size_t n = (size_t)c.M * c.N;
        float *ref = zeros_host(n), *got = zeros_host(n);
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            matmul_forward(ref, in.a, in.w_nk, with_bias ? in.bias : NULL, c.M, c.K, c.N);
            Bf16Gemm g = gemm_of(c, in, BF16_EPI_BIAS);
            g.bias = with_bias ? in.d_bias : NULL;
            g.out = poisoned<bf16>(n);
            bf16_gemm(&g, 0);
            to_host<bf16>(got, g.out, n);
            double e = rel_err(got, ref, n);
            EXPECT(e < 4e-3, "M %d K %d N %d b_kn %d bias %d: rel err %.2e", c.M, c.K, c.N, c.b_kn, with_bias, e);
            printf("  M %d K %d N %d b_kn %d bias %d: rel err %.2e\n", c.M, c.K, c.N, c.b_kn, with_bias, e);
            cudaCheck(cudaFree(g.out));
        }
        free(ref), free(got);
        free_inputs(&in);
    }
}

static void test_gelu_epilogues(void) {
    SKIP_WITHOUT_GPU();
    if (!bf16_gemm_available()) SKIP("bf16_gemm needs an sm_90 GPU");
    int k = 0;
    for (const Case &c : CASES) {
        int quick = k++ % 3 == 2;
        Inputs in = make_inputs(c);
        size_t n = (size_t)c.M * c.N;
        // forward: the BIAS epilogue's y, then the GELU epilogue
        Bf16Gemm plain = gemm_of(c, in, BF16_EPI_BIAS);
        plain.bias = in.d_bias, plain.out = poisoned<bf16>(n);
        bf16_gemm(&plain, 0);
        Bf16Gemm f = gemm_of(c, in, BF16_EPI_GELU);
        f.bias = in.d_bias, f.quick = quick, f.out = poisoned<bf16>(n), f.out2 = poisoned<bf16>(n);
        bf16_gemm(&f, 0);
        bf16 *act_ref = poisoned<bf16>(n);
        gelu_forward_gpu<bf16>(act_ref, plain.out, n, quick);
        size_t d_pre = bits_differ(f.out, plain.out, n), d_act = bits_differ(f.out2, act_ref, n);
        EXPECT(d_pre == 0 && d_act == 0, "GELU fwd M %d K %d N %d b_kn %d quick %d: %zu pre, %zu act values differ", c.M, c.K,
               c.N, c.b_kn, quick, d_pre, d_act);

        // backward: pre = the forward's pre-activation; dact = A . B^T (no bias) from the BIAS epilogue
        Bf16Gemm dg = gemm_of(c, in, BF16_EPI_BIAS);
        dg.out = poisoned<bf16>(n);
        bf16_gemm(&dg, 0);
        bf16 *d_ref = poisoned<bf16>(n), *a_ref = poisoned<bf16>(n);
        float *db_ref, *db;
        cudaCheck(cudaMalloc(&db_ref, c.N * sizeof(float))), cudaCheck(cudaMalloc(&db, c.N * sizeof(float)));
        cudaCheck(cudaMemset(db_ref, 0, c.N * sizeof(float))), cudaCheck(cudaMemset(db, 0, c.N * sizeof(float)));
        gelu_backward_bias_gpu<bf16>(d_ref, a_ref, db_ref, dg.out, f.out, c.M, c.N, quick);
        for (int with_act = 1; with_act >= 0; with_act--) {
            Bf16Gemm b = gemm_of(c, in, BF16_EPI_GELU_BWD);
            int chunks = ceil_div(c.M, 128);
            b.quick = quick, b.pre = f.out, b.out = poisoned<bf16>(n), b.out2 = with_act ? poisoned<bf16>(n) : NULL;
            b.colsum_partial = colsum_partials((size_t)chunks * c.N);
            bf16_gemm(&b, 0);
            if (with_act) colsum_finish_gpu(db, NULL, b.colsum_partial, chunks, c.N);
            size_t dd = bits_differ(b.out, d_ref, n), da = with_act ? bits_differ(b.out2, a_ref, n) : 0;
            EXPECT(dd == 0 && da == 0, "GELU bwd M %d K %d N %d b_kn %d quick %d act %d: %zu dpre, %zu act values differ", c.M,
                   c.K, c.N, c.b_kn, quick, with_act, dd, da);
            cudaCheck(cudaFree(b.out));
            if (b.out2) cudaCheck(cudaFree(b.out2));
        }
        float *h_db = zeros_host(c.N), *h_ref = zeros_host(c.N);
        to_host<float>(h_db, db, c.N), to_host<float>(h_ref, db_ref, c.N);
        double e = rel_err(h_db, h_ref, c.N);
        EXPECT(e < 1e-5, "GELU bwd M %d K %d N %d: bias gradient rel err %.2e", c.M, c.K, c.N, e);
        printf("  M %d K %d N %d b_kn %d quick %d: GELU fwd and bwd bit-exact, bias gradient rel err %.1e\n", c.M, c.K, c.N,
               c.b_kn, quick, e);
        free(h_db), free(h_ref);
        cudaCheck(cudaFree(plain.out)), cudaCheck(cudaFree(f.out)), cudaCheck(cudaFree(f.out2)), cudaCheck(cudaFree(act_ref));
        cudaCheck(cudaFree(dg.out)), cudaCheck(cudaFree(d_ref)), cudaCheck(cudaFree(a_ref));
        cudaCheck(cudaFree(db_ref)), cudaCheck(cudaFree(db));
        free_inputs(&in);
    }
}

int main(void) {
    test_seed();
    RUN(test_bias);
    RUN(test_gelu_epilogues);
    TEST_EXIT();
}
