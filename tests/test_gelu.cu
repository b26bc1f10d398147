// test_gelu.cu: kernels/gelu.cu against gelu_forward/backward of model/ops_cpu.c, exact-erf GELU and
// QuickGELU, float and bf16, a vector-width and an odd length. Bounds (relative L2): fp32 1e-5; bf16 1e-2
// (the inputs are the same bf16 values on both sides; the outputs are rounded to bf16 once).
#include "../kernels/gelu.cuh"
#include "test_gpu.h"

template <typename T> static void check(size_t n, int quick) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    float *x = rand_host(n, 4.0f), *dout = rand_host(n, 1.0f), *y = zeros_host(n), *dx = zeros_host(n), *g = zeros_host(n);
    round_to<T>(x, n), round_to<T>(dout, n);
    gelu_forward(y, x, n, quick);
    gelu_backward(dx, dout, x, n, quick);
    T *d_x = to_device<T>(x, n), *d_dout = to_device<T>(dout, n), *d_y = poisoned<T>(n), *d_dx = poisoned<T>(n);
    gelu_forward_gpu<T>(d_y, d_x, n, quick);
    gelu_backward_gpu<T>(d_dx, d_dout, d_x, n, quick);
    double bound = sizeof(T) == 2 ? 1e-2 : 1e-5;
    to_host<T>(g, d_y, n);
    double ey = rel_err(g, y, n);
    to_host<T>(g, d_dx, n);
    double ed = rel_err(g, dx, n);
    EXPECT(ey < bound && ed < bound, "%s n=%zu quick=%d: forward rel err %.2e, backward %.2e", tn, n, quick, ey, ed);
    // in place, as the model uses it: dinp aliases dout
    gelu_backward_gpu<T>(d_dout, d_dout, d_x, n, quick);
    to_host<T>(g, d_dout, n);
    EXPECT(rel_err(g, dx, n) < bound, "%s: in-place backward rel err %.2e", tn, rel_err(g, dx, n));
    printf("  %s n=%zu quick=%d: forward %.1e backward %.1e\n", tn, n, quick, ey, ed);
    free(x), free(dout), free(y), free(dx), free(g);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_dout)), cudaCheck(cudaFree(d_y)), cudaCheck(cudaFree(d_dx));
}

// The backward with c_fc's bias gradient fused: dinp as above, dbias (+=) against column sums in double.
template <typename T> static void check_bias(int N, int C, int quick) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    size_t n = (size_t)N * C;
    float *x = rand_host(n, 4.0f), *dout = rand_host(n, 1.0f), *dx = zeros_host(n), *g = zeros_host(n), *db = rand_host(C, 1.0f);
    round_to<T>(x, n), round_to<T>(dout, n);
    gelu_backward(dx, dout, x, n, quick);
    float *ref = zeros_host(C);
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int r = 0; r < N; r++) s += dx[(size_t)r * C + c];
        ref[c] = db[c] + (float)s;
    }
    T *d_x = to_device<T>(x, n), *d_dout = to_device<T>(dout, n), *d_dx = poisoned<T>(n);
    float *d_db = to_device<float>(db, C);
    gelu_backward_bias_gpu<T>(d_dx, d_db, d_dout, d_x, N, C, quick);
    to_host<T>(g, d_dx, n);
    double ed = rel_err(g, dx, n);
    to_host<float>(db, d_db, C);
    double eb = rel_err(db, ref, C);
    EXPECT(ed < (sizeof(T) == 2 ? 1e-2 : 1e-5) && eb < 1e-5, "%s %dx%d quick=%d: fused backward rel err %.2e, dbias %.2e", tn, N, C, quick, ed, eb);
    printf("  %s %dx%d quick=%d fused with bias: dinp %.1e dbias %.1e\n", tn, N, C, quick, ed, eb);
    free(x), free(dout), free(dx), free(g), free(db), free(ref);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_dout)), cudaCheck(cudaFree(d_dx)), cudaCheck(cudaFree(d_db));
}

static void test_gelu(void) {
    SKIP_WITHOUT_GPU();
    size_t sizes[] = {1001, 65536 + 8};
    for (int s = 0; s < 2; s++)
        for (int quick = 0; quick < 2; quick++) check<float>(sizes[s], quick), check<bf16>(sizes[s], quick);
    for (int quick = 0; quick < 2; quick++) {
        check_bias<float>(37, 75, quick), check_bias<bf16>(37, 75, quick);
        check_bias<float>(1000, 3072, quick), check_bias<bf16>(1000, 3072, quick);
    }
}

int main(void) {
    test_seed();
    RUN(test_gelu);
    TEST_EXIT();
}
