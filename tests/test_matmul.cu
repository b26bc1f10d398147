// test_matmul.cu: the cuBLASLt linear layer (kernels/matmul.cu) against matmul_forward/backward of
// model/ops_cpu.c, with and without bias, odd and model-sized shapes, float and bf16. Bounds (relative L2):
// fp32 1e-5 (full fp32 GEMMs); bf16: outputs 1e-2 (rounded once to bf16), the fp32 weight gradient 1e-4
// (bf16 products are exact in fp32, only the summation order differs).
#include "../kernels/matmul.cuh"
#include "test_gpu.h"

template <typename T> static void check(int N, int C, int OC, int with_bias) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    float *x = rand_host((size_t)N * C, 1.0f), *w = rand_host((size_t)OC * C, 0.1f), *bias = rand_host(OC, 1.0f);
    float *dout = rand_host((size_t)N * OC, 1.0f), *dw = rand_host((size_t)OC * C, 1.0f);
    round_to<T>(x, (size_t)N * C), round_to<T>(w, (size_t)OC * C), round_to<T>(bias, OC), round_to<T>(dout, (size_t)N * OC);
    float *out = zeros_host((size_t)N * OC), *dx = zeros_host((size_t)N * C), *g = zeros_host((size_t)N * (C > OC ? C : OC) + (size_t)OC * C);
    T *d_x = to_device<T>(x, (size_t)N * C), *d_w = to_device<T>(w, (size_t)OC * C), *d_bias = to_device<T>(bias, OC);
    T *d_dout = to_device<T>(dout, (size_t)N * OC), *d_out = poisoned<T>((size_t)N * OC), *d_dx = poisoned<T>((size_t)N * C);
    float *d_dw = to_device<float>(dw, (size_t)OC * C);
    matmul_forward(out, x, w, with_bias ? bias : NULL, N, C, OC);
    matmul_backward(dx, dw, NULL, dout, x, w, N, C, OC);  // dw accumulates onto its random start
    matmul_forward_gpu<T>(d_out, d_x, d_w, with_bias ? d_bias : NULL, N, C, OC);
    matmul_backward_input_gpu<T>(d_dx, d_dout, d_w, N, C, OC);
    matmul_backward_weight_gpu<T>(d_dw, d_dout, d_x, N, C, OC);
    double bound = sizeof(T) == 2 ? 1e-2 : 1e-5;
    to_host<T>(g, d_out, (size_t)N * OC);
    double eo = rel_err(g, out, (size_t)N * OC);
    to_host<T>(g, d_dx, (size_t)N * C);
    double ex = rel_err(g, dx, (size_t)N * C);
    to_host<float>(g, d_dw, (size_t)OC * C);
    double ew = rel_err(g, dw, (size_t)OC * C);
    EXPECT(eo < bound, "%s %dx%d->%d bias %d: out rel err %.2e", tn, N, C, OC, with_bias, eo);
    EXPECT(ex < bound, "%s %dx%d->%d: dinp rel err %.2e", tn, N, C, OC, ex);
    EXPECT(ew < (sizeof(T) == 2 ? 1e-4 : 1e-5), "%s %dx%d->%d: dw rel err %.2e", tn, N, C, OC, ew);
    printf("  %s %dx%d->%d bias %d: out %.1e dinp %.1e dw %.1e\n", tn, N, C, OC, with_bias, eo, ex, ew);
    free(x), free(w), free(bias), free(dout), free(dw), free(out), free(dx), free(g);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_w)), cudaCheck(cudaFree(d_bias)), cudaCheck(cudaFree(d_dout));
    cudaCheck(cudaFree(d_out)), cudaCheck(cudaFree(d_dx)), cudaCheck(cudaFree(d_dw));
}

static void test_matmul(void) {
    SKIP_WITHOUT_GPU();
    const int shapes[][3] = {{37, 75, 61}, {77, 64, 192}, {394, 768, 2304}, {257, 1280, 1280}, {50, 3072, 768}};
    for (int s = 0; s < 5; s++)
        for (int bias = 0; bias < 2; bias++) {
            check<float>(shapes[s][0], shapes[s][1], shapes[s][2], bias);
            check<bf16>(shapes[s][0], shapes[s][1], shapes[s][2], bias);
        }
}

int main(void) {
    test_seed();
    RUN(test_matmul);
    TEST_EXIT();
}
