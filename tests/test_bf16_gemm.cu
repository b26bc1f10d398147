// test_bf16_gemm.cu: the bf16 GEMM with the GELU in its epilogue (kernels/bf16_gemm.cu), on fresh random inputs and
// NaN-poisoned outputs, at odd shapes (M not a multiple of 128, N and K multiples of 16 but not of 64) and model shapes:
//  - BF16_EPI_BIAS against the CPU's matmul_forward on the same bf16 inputs: relative L2 error < 4e-3 (the output's
//    bf16 rounding gives ~1.1e-3; the sums' order a little more);
//  - BF16_EPI_GELU: out equal bit for bit to the BIAS epilogue's (the same mainloop), out2 to gelu_forward_gpu of it
//    (GELU and QuickGELU).
// Skipped without an sm_90 GPU.
#include "../kernels/bf16_gemm.cuh"
#include "../kernels/hopper.cuh"
#include "../kernels/gelu.cuh"
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
    int M, K, N;
};
static const Case CASES[] = {{37, 64, 48},      {300, 80, 272},   {129, 16, 16},   {1000, 1280, 400},
                             {4928, 1024, 4096}, {16448, 1280, 5120}, {50432, 768, 3072}};

// A (M, K), B (N, K) and the bias on the host (bf16 values) and the device.
struct Inputs {
    float *a, *w, *bias;
    bf16 *d_a, *d_b, *d_bias;
};
static Inputs make_inputs(const Case &c) {
    Inputs in;
    in.a = rand_host((size_t)c.M * c.K, 1.0f), in.w = rand_host((size_t)c.N * c.K, 0.1f), in.bias = rand_host(c.N, 1.0f);
    round_bf16_(in.a, (size_t)c.M * c.K), round_bf16_(in.w, (size_t)c.N * c.K), round_bf16_(in.bias, c.N);
    in.d_a = to_device<bf16>(in.a, (size_t)c.M * c.K), in.d_b = to_device<bf16>(in.w, (size_t)c.N * c.K), in.d_bias = to_device<bf16>(in.bias, c.N);
    return in;
}
static void free_inputs(Inputs *in) {
    free(in->a), free(in->w), free(in->bias);
    cudaCheck(cudaFree(in->d_a)), cudaCheck(cudaFree(in->d_b)), cudaCheck(cudaFree(in->d_bias));
}

static Bf16Gemm gemm_of(const Case &c, const Inputs &in, Bf16GemmEpilogue epi) {
    Bf16Gemm g = {};
    g.epilogue = epi, g.a = in.d_a, g.b = in.d_b, g.M = c.M, g.N = c.N, g.K = c.K;
    return g;
}

static void test_bias(void) {
    SKIP_WITHOUT_GPU();
    if (!hopper_code_runs()) SKIP("bf16_gemm needs an sm_90 GPU and a build with sm_90a code");
    for (const Case &c : CASES) {
        if ((size_t)c.M * c.N > (size_t)5e7) continue;  // the CPU reference of the largest shapes takes too long
        Inputs in = make_inputs(c);
        size_t n = (size_t)c.M * c.N;
        float *ref = zeros_host(n), *got = zeros_host(n);
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            matmul_forward(ref, in.a, in.w, with_bias ? in.bias : NULL, c.M, c.K, c.N);
            Bf16Gemm g = gemm_of(c, in, BF16_EPI_BIAS);
            g.bias = with_bias ? in.d_bias : NULL;
            g.out = poisoned<bf16>(n);
            bf16_gemm(&g, 0);
            to_host<bf16>(got, g.out, n);
            double e = rel_err(got, ref, n);
            EXPECT(e < 4e-3, "M %d K %d N %d bias %d: rel err %.2e", c.M, c.K, c.N, with_bias, e);
            printf("  M %d K %d N %d bias %d: rel err %.2e\n", c.M, c.K, c.N, with_bias, e);
            cudaCheck(cudaFree(g.out));
        }
        free(ref), free(got);
        free_inputs(&in);
    }
}

static void test_gelu_epilogue(void) {
    SKIP_WITHOUT_GPU();
    if (!hopper_code_runs()) SKIP("bf16_gemm needs an sm_90 GPU and a build with sm_90a code");
    int k = 0;
    for (const Case &c : CASES) {
        int quick = k++ % 3 == 2;
        Inputs in = make_inputs(c);
        size_t n = (size_t)c.M * c.N;
        Bf16Gemm plain = gemm_of(c, in, BF16_EPI_BIAS);
        plain.bias = in.d_bias, plain.out = poisoned<bf16>(n);
        bf16_gemm(&plain, 0);
        Bf16Gemm f = gemm_of(c, in, BF16_EPI_GELU);
        f.bias = in.d_bias, f.quick = quick, f.out = poisoned<bf16>(n), f.out2 = poisoned<bf16>(n);
        bf16_gemm(&f, 0);
        bf16 *act_ref = poisoned<bf16>(n);
        gelu_forward_gpu<bf16>(act_ref, plain.out, n, quick);
        size_t d_pre = bits_differ(f.out, plain.out, n), d_act = bits_differ(f.out2, act_ref, n);
        EXPECT(d_pre == 0 && d_act == 0, "M %d K %d N %d quick %d: %zu pre-activations, %zu GELU values differ", c.M, c.K, c.N,
               quick, d_pre, d_act);
        printf("  M %d K %d N %d quick %d: %zu of %zu pre-activations and GELU values differ\n", c.M, c.K, c.N, quick, d_pre + d_act,
               2 * n);
        cudaCheck(cudaFree(plain.out)), cudaCheck(cudaFree(f.out)), cudaCheck(cudaFree(f.out2)), cudaCheck(cudaFree(act_ref));
        free_inputs(&in);
    }
}

int main(void) {
    test_seed();
    RUN(test_bias);
    RUN(test_gelu_epilogue);
    TEST_EXIT();
}
