// test_gelu.cu: kernels/gelu.cu against gelu_forward/backward of model/ops_cpu.c, exact-erf GELU and
// QuickGELU, float and bf16, vector-width and odd sizes; the backward with the bias gradient fused. Bounds
// (relative L2): fp32 1e-5; bf16 outputs 1e-2 (the inputs are the same bf16 values on both sides; the
// outputs are rounded to bf16 once); the fp32 bias gradient 1e-5. The backwards' optional recomputed output (act,
// written into NaN-poisoned buffers) equal to gelu_forward_gpu's bit for bit, with dinp and dbias as without it.
// The SwitchBack variants (bf16, the result also quantized row-wise) against the plain kernels: the same bf16
// results bit for bit, the int8 rows bit for bit against ref_quantize_rows of them, the bias gradient 1e-5 (fp32
// sums in another order), all-zero rows.
// The bf16 kernels (tables, kernels/gelu.cu) on every one of the 65,536 bf16 inputs against the exact functions
// in long double: the forward is a nearest bf16 of the exact GELU (within one step where that is a bf16 denormal),
// the gradient a nearest fp32 of the exact derivative (within 1 ulp for |x| < 2^-10); NaN stays NaN.
#include <math.h>
#include "../kernels/gelu.cuh"
#include "test_gpu.h"
#include "ref_switchback.h"

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

// The element where two host copies of device results first differ bit for bit, or -1.
static long first_mismatch(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float))) return (long)i;
    return -1;
}

// The backward with c_fc's bias gradient fused: dinp against the reference, dbias (+=) against column sums
// in double; out of place without act, and in place (dinp aliasing dout, as the model runs it) with act, which
// must equal gelu_forward_gpu's output bit for bit and leave dinp and dbias bit for bit as without it.
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
    T *d_x = to_device<T>(x, n), *d_dout = to_device<T>(dout, n), *d_dx = poisoned<T>(n), *d_y = poisoned<T>(n), *d_act = poisoned<T>(n);
    float *d_db = to_device<float>(db, C), *d_db2 = to_device<float>(db, C);
    gelu_forward_gpu<T>(d_y, d_x, n, quick);
    gelu_backward_bias_gpu<T>(d_dx, NULL, d_db, d_dout, d_x, N, C, quick);
    gelu_backward_bias_gpu<T>(d_dout, d_act, d_db2, d_dout, d_x, N, C, quick);  // in place, with act
    double bound = sizeof(T) == 2 ? 1e-2 : 1e-5;
    to_host<T>(g, d_dx, n);
    double ed = rel_err(g, dx, n);
    to_host<float>(got, d_db, C);
    double eb = rel_err(got, ref, C);
    EXPECT(ed < bound && eb < 1e-5, "%s %dx%d quick=%d: dinp rel err %.2e, dbias %.2e", tn, N, C, quick, ed, eb);
    float *g2 = zeros_host(n), *got2 = zeros_host(C), *y = zeros_host(n), *act = zeros_host(n);
    to_host<T>(g2, d_dout, n), to_host<float>(got2, d_db2, C), to_host<T>(y, d_y, n), to_host<T>(act, d_act, n);
    long di = first_mismatch(g2, g, n), bi = first_mismatch(got2, got, C), ai = first_mismatch(act, y, n);
    EXPECT(di < 0 && bi < 0, "%s %dx%d quick=%d: in place with act: dinp differs at %ld, dbias at %ld from the pass without", tn, N,
           C, quick, di, bi);
    EXPECT(ai < 0, "%s %dx%d quick=%d: act differs from gelu_forward_gpu's output at %ld: %.9g vs %.9g (x = %.9g)", tn, N, C,
           quick, ai, ai < 0 ? 0.0 : act[ai], ai < 0 ? 0.0 : y[ai], ai < 0 ? 0.0 : x[ai]);
    printf("  %s %dx%d quick=%d: dinp %.1e dbias %.1e; act = forward %s\n", tn, N, C, quick, ed, eb, ai < 0 ? "bit for bit" : "DIFFERS");
    free(x), free(dout), free(dx), free(g), free(db), free(ref), free(got), free(g2), free(got2), free(y), free(act);
    void *dev[] = {d_x, d_dout, d_dx, d_y, d_act, d_db, d_db2};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) cudaCheck(cudaFree(dev[i]));
}

// SwitchBack variants, N x C bf16 with row 1 all zeros (its int8 row must be zeros with maximum 0).
static void check_quantized(int N, int C, int quick) {
    size_t n = (size_t)N * C;
    float *x = rand_host(n, 4.0f), *dout = rand_host(n, 1.0f), *db = rand_host(C, 1.0f), *g = zeros_host(n), *g2 = zeros_host(n);
    for (int c = 0; c < C; c++) x[C + c] = 0.0f, dout[C + c] = 0.0f;
    round_to<bf16>(x, n), round_to<bf16>(dout, n);
    bf16 *d_x = to_device<bf16>(x, n), *d_dout = to_device<bf16>(dout, n), *d_y = poisoned<bf16>(n), *d_y2 = poisoned<bf16>(n);
    int8_t *d_q = poisoned<int8_t>(n), *d_q2 = poisoned<int8_t>(n);
    float *d_s = poisoned<float>(N), *d_s2 = poisoned<float>(N);
    cudaCheck(cudaMemset(d_q, 0x80, n)), cudaCheck(cudaMemset(d_q2, 0x80, n));  // -128: never a quantized value
    gelu_forward_gpu<bf16>(d_y, d_x, n, quick);
    gelu_forward_quantize_gpu(d_y2, d_q, d_s, d_x, N, C, quick);
    gelu_forward_quantize_gpu(NULL, d_q2, d_s2, d_x, N, C, quick);  // int8 only
    to_host<bf16>(g, d_y, n), to_host<bf16>(g2, d_y2, n);
    long dq = rows_quantized_diff(d_q, d_s, d_y, N, C), dq2 = rows_quantized_diff(d_q2, d_s2, d_y, N, C);
    EXPECT(!memcmp(g, g2, n * sizeof(float)) && dq < 0 && dq2 < 0,
           "%dx%d quick=%d: forward with int8 output: out %s, first int8 difference %ld (without out %ld)", N, C, quick,
           memcmp(g, g2, n * sizeof(float)) ? "differs" : "same", dq, dq2);
    // backward: dinp against the plain kernel, int8 rows, dbias (+=); out of place without act, then in place with act
    // (as the model runs it), which must equal the forward's output (g above) bit for bit and change nothing else
    bf16 *d_dx = poisoned<bf16>(n), *d_dx2 = poisoned<bf16>(n), *d_act = poisoned<bf16>(n);
    float *d_db = to_device<float>(db, C), *d_db2 = to_device<float>(db, C), *d_db3 = to_device<float>(db, C);
    float *gb = zeros_host(C), *gb2 = zeros_host(C), *gb3 = zeros_host(C), *g3 = zeros_host(n), *act = zeros_host(n);
    cudaCheck(cudaMemset(d_q, 0x80, n)), cudaCheck(cudaMemset(d_s, 0xFF, N * sizeof(float)));
    cudaCheck(cudaMemset(d_q2, 0x80, n)), cudaCheck(cudaMemset(d_s2, 0xFF, N * sizeof(float)));
    gelu_backward_bias_gpu<bf16>(d_dx, NULL, d_db, d_dout, d_x, N, C, quick);
    gelu_backward_quantize_gpu(d_dx2, NULL, d_q2, d_s2, d_db3, d_dout, d_x, N, C, quick);
    gelu_backward_quantize_gpu(d_dout, d_act, d_q, d_s, d_db2, d_dout, d_x, N, C, quick);
    to_host<bf16>(g2, d_dx, n), to_host<bf16>(g3, d_dx2, n), to_host<float>(gb, d_db, C), to_host<float>(gb3, d_db3, C);
    dq2 = rows_quantized_diff(d_q2, d_s2, d_dx2, N, C);
    double eb = rel_err(gb3, gb, C);
    EXPECT(!memcmp(g2, g3, n * sizeof(float)) && dq2 < 0 && eb < 1e-5,
           "%dx%d quick=%d: backward with int8 output: dinp %s, first int8 difference %ld, dbias rel err %.2e", N, C, quick,
           memcmp(g2, g3, n * sizeof(float)) ? "differs" : "same", dq2, eb);
    to_host<bf16>(g3, d_dout, n), to_host<float>(gb2, d_db2, C), to_host<bf16>(act, d_act, n);
    dq = rows_quantized_diff(d_q, d_s, d_dout, N, C);
    long di = first_mismatch(g3, g2, n), bi = first_mismatch(gb2, gb3, C), ai = first_mismatch(act, g, n);
    EXPECT(di < 0 && dq < 0 && bi < 0, "%dx%d quick=%d: in place with act: dinp differs at %ld, first int8 difference %ld, dbias differs at %ld",
           N, C, quick, di, dq, bi);
    EXPECT(ai < 0, "%dx%d quick=%d: int8 backward's act differs from gelu_forward_gpu's output at %ld: %.9g vs %.9g (x = %.9g)", N, C,
           quick, ai, ai < 0 ? 0.0 : act[ai], ai < 0 ? 0.0 : g[ai], ai < 0 ? 0.0 : x[ai]);
    printf("  bf16 %dx%d quick=%d: int8 rows bit-exact, dbias vs plain kernel %.1e; act = forward %s\n", N, C, quick, eb,
           ai < 0 ? "bit for bit" : "DIFFERS");
    free(x), free(dout), free(db), free(g), free(g2), free(g3), free(gb), free(gb2), free(gb3), free(act);
    void *dev[] = {d_x, d_dout, d_y, d_y2, d_q, d_q2, d_s, d_s2, d_dx, d_dx2, d_act, d_db, d_db2, d_db3};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) cudaCheck(cudaFree(dev[i]));
}

// The exact GELU (quick: x sigmoid(1.702 x)) and its derivative, in long double; Phi from erfc (no cancellation).
static void gelu_exact_ld(long double x, int quick, long double *v, long double *g) {
    if (quick) {
        long double s = 1.0L / (1.0L + expl(-1.702L * x)), r = 1.0L / (1.0L + expl(1.702L * x));  // r = 1 - s
        *v = x * s, *g = s + 1.702L * x * s * r;
    } else {
        long double p = 0.5L * erfcl(-x / sqrtl(2.0L));
        *v = x * p, *g = p + x * expl(-0.5L * x * x) / sqrtl(2.0L * (long double)M_PI);
    }
}
static float bf16_of_bits(uint32_t b) {
    float f;
    b <<= 16;
    memcpy(&f, &b, 4);
    return f;
}
static float bf16_next(float r, int dir) {  // the adjacent bf16 value, toward +inf (dir 1) or -inf (-1)
    uint32_t b;
    memcpy(&b, &r, 4);
    b >>= 16;
    if (r == 0.0f) return bf16_of_bits(dir > 0 ? 0x0001 : 0x8001);
    return bf16_of_bits((r > 0) == (dir > 0) ? b + 1 : b - 1);
}
// r is a nearest representable value to e, given its two neighbours lo and hi (slack: a relative tolerance for e's
// own error, ~1e-18 in long double).
static int is_nearest(float r, float lo, float hi, long double e) {
    long double d = fabsl((long double)r - e), tol = 1e-15L * fabsl(e);
    return d <= fabsl((long double)lo - e) + tol && d <= fabsl((long double)hi - e) + tol;
}

static void test_gelu_tables(void) {
    SKIP_WITHOUT_GPU();
    const int n = 65536;
    float *x = zeros_host(n), *y = zeros_host(n), *g = zeros_host(n), *one = zeros_host(n);
    for (int i = 0; i < n; i++) x[i] = bf16_of_bits(i), one[i] = 1.0f;
    bf16 *d_x = to_device<bf16>(x, n), *d_one = to_device<bf16>(one, n), *d_y = poisoned<bf16>(n), *d_dx = poisoned<bf16>(n);
    float *d_g = poisoned<float>(n);
    for (int quick = 0; quick < 2; quick++) {
        cudaCheck(cudaMemset(d_g, 0, n * sizeof(float)));
        gelu_forward_gpu<bf16>(d_y, d_x, n, quick);
        gelu_backward_bias_gpu<bf16>(d_dx, NULL, d_g, d_one, d_x, 1, n, quick);  // one row, dout = 1: dbias = gelu'(x) in fp32
        to_host<bf16>(y, d_y, n), to_host<float>(g, d_g, n);
        int bad_v = 0, bad_g = 0, first_v = -1, first_g = -1;
        for (int i = 0; i < n; i++) {
            if (isnan(x[i])) {
                if (!isnan(y[i]) || !isnan(g[i])) bad_v++, first_v = first_v < 0 ? i : first_v;
                continue;
            }
            if (isinf(x[i])) {  // the limits: x or -0, and 1 or 0
                int ok = x[i] > 0 ? y[i] == x[i] && g[i] == 1.0f : y[i] == 0.0f && g[i] == 0.0f;
                if (!ok) bad_v++, first_v = first_v < 0 ? i : first_v;
                continue;
            }
            long double v, d;
            gelu_exact_ld(x[i], quick, &v, &d);
            // forward: a nearest bf16; within one step where the result is a bf16 denormal (|v| < 2^-126)
            int ok = isfinite(y[i]) && (is_nearest(y[i], bf16_next(y[i], -1), bf16_next(y[i], 1), v) ||
                                        (fabsl(v) < 0x1p-126L && fabsl((long double)y[i] - v) <= 0x1p-133L));
            if (!ok) bad_v++, first_v = first_v < 0 ? i : first_v;
            // gradient: a nearest fp32; within 1 ulp for |x| < 2^-10
            float lo = nextafterf(g[i], -INFINITY), hi = nextafterf(g[i], INFINITY);
            ok = isfinite(g[i]) && (is_nearest(g[i], lo, hi, d) ||
                                    (fabsf(x[i]) < 0x1p-10f && fabsl((long double)g[i] - d) <= (long double)(hi - g[i])));
            if (!ok) bad_g++, first_g = first_g < 0 ? i : first_g;
        }
        EXPECT(bad_v == 0, "quick=%d: %d bf16 inputs with a wrong GELU (first: x = %g -> %g)", quick, bad_v, first_v < 0 ? 0.0 : x[first_v],
               first_v < 0 ? 0.0 : y[first_v]);
        EXPECT(bad_g == 0, "quick=%d: %d bf16 inputs with a wrong gradient (first: x = %g -> %.9g)", quick, bad_g,
               first_g < 0 ? 0.0 : x[first_g], first_g < 0 ? 0.0 : g[first_g]);
        printf("  quick=%d: all 65536 bf16 inputs: GELU a nearest bf16, gradient a nearest fp32 (%d / %d off)\n", quick, bad_v, bad_g);
    }
    free(x), free(y), free(g), free(one);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_one)), cudaCheck(cudaFree(d_y)), cudaCheck(cudaFree(d_dx)), cudaCheck(cudaFree(d_g));
}

static void test_gelu_quantized(void) {
    SKIP_WITHOUT_GPU();
    for (int quick = 0; quick < 2; quick++) {
        check_quantized(37, 80, quick);      // narrower than a block's threads
        check_quantized(300, 3072, quick);   // ViT-L/14 text MLP
        check_quantized(131, 5120, quick);   // ViT-H/14 MLP, more than one chunk of rows
        check_quantized(1100, 5120, quick);  // more rows than the forward's persistent blocks: each takes several
        check_quantized(5, 8192, quick);     // the widest row
    }
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
    RUN(test_gelu_tables);
    RUN(test_gelu_quantized);
    TEST_EXIT();
}
