// test_gelu.cu: kernels/gelu.cu against gelu_forward/backward of model/ops_cpu.c, exact-erf GELU and
// QuickGELU, float and bf16, vector-width and odd sizes; the backward with the bias gradient fused. Bounds
// (relative L2): fp32 1e-5; bf16 outputs 1e-2 (the inputs are the same bf16 values on both sides; the
// outputs are rounded to bf16 once); the fp32 bias gradient 1e-5.
#include "../kernels/gelu.cuh"
#include "test_gpu.h"

template <typename T> static void check_forward(size_t n, int quick) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    float *x = rand_host(n, 4.0f), *y = zeros_host(n), *g = zeros_host(n);
    round_to<T>(x, n);
    gelu_forward(y, x, n, quick);
    T *d_x = to_device<T>(x, n), *d_y = poisoned<T>(n);
    gelu_forward_gpu<T>(d_y, d_x, n, quick);
    to_host<T>(g, d_y, n);
    double e = rel_err(g, y, n);
    EXPECT(e < (sizeof(T) == 2 ? 1e-2 : 1e-5), "%s n=%zu quick=%d: forward rel err %.2e", tn, n, quick, e);
    printf("  %s n=%zu quick=%d: forward %.1e\n", tn, n, quick, e);
    free(x), free(y), free(g);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_y));
}

// The backward with c_fc's bias gradient fused: dinp against the reference, dbias (+=) against column sums
// in double; out of place and in place (dinp aliasing dout, as the model runs it).
template <typename T> static void check_backward(int N, int C, int quick) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    size_t n = (size_t)N * C;
    float *x = rand_host(n, 4.0f), *dout = rand_host(n, 1.0f), *dx = zeros_host(n), *g = zeros_host(n), *db = rand_host(C, 1.0f);
    round_to<T>(x, n), round_to<T>(dout, n);
    gelu_backward(dx, dout, x, n, quick);
    float *ref = zeros_host(C), *got = zeros_host(C);
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int r = 0; r < N; r++) s += dx[(size_t)r * C + c];
        ref[c] = db[c] + (float)s;
    }
    T *d_x = to_device<T>(x, n), *d_dout = to_device<T>(dout, n), *d_dx = poisoned<T>(n);
    float *d_db = to_device<float>(db, C), *d_db2 = to_device<float>(db, C);
    gelu_backward_bias_gpu<T>(d_dx, d_db, d_dout, d_x, N, C, quick);
    gelu_backward_bias_gpu<T>(d_dout, d_db2, d_dout, d_x, N, C, quick);  // in place
    double bound = sizeof(T) == 2 ? 1e-2 : 1e-5;
    to_host<T>(g, d_dx, n);
    double ed = rel_err(g, dx, n);
    to_host<float>(got, d_db, C);
    double eb = rel_err(got, ref, C);
    EXPECT(ed < bound && eb < 1e-5, "%s %dx%d quick=%d: dinp rel err %.2e, dbias %.2e", tn, N, C, quick, ed, eb);
    to_host<T>(g, d_dout, n), to_host<float>(got, d_db2, C);
    EXPECT(rel_err(g, dx, n) < bound && rel_err(got, ref, C) < 1e-5, "%s %dx%d: in place: dinp rel err %.2e, dbias %.2e", tn, N,
           C, rel_err(g, dx, n), rel_err(got, ref, C));
    printf("  %s %dx%d quick=%d: dinp %.1e dbias %.1e\n", tn, N, C, quick, ed, eb);
    free(x), free(dout), free(dx), free(g), free(db), free(ref), free(got);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_dout)), cudaCheck(cudaFree(d_dx)), cudaCheck(cudaFree(d_db)), cudaCheck(cudaFree(d_db2));
}

static void test_gelu(void) {
    SKIP_WITHOUT_GPU();
    for (int quick = 0; quick < 2; quick++) {
        check_forward<float>(1001, quick), check_forward<bf16>(1001, quick);
        check_forward<float>(65536 + 8, quick), check_forward<bf16>(65536 + 8, quick);
        check_backward<float>(37, 75, quick), check_backward<bf16>(37, 75, quick);
        check_backward<float>(1000, 3072, quick), check_backward<bf16>(1000, 3072, quick);
    }
}

int main(void) {
    test_seed();
    RUN(test_gelu);
    TEST_EXIT();
}
