// test_reduce.cu: the column sums of kernels/reduce.cu (bias, layer-scale and embedding gradients) against
// sums in double on the host, accumulating onto existing values, with odd widths and a strided view.
// Bound (relative L2): 1e-5 (fp32 sums of up to 50k rows).
#include "../kernels/reduce.cuh"
#include "test_gpu.h"

template <typename T> static void check(int N, int C, long ld) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    size_t n = (size_t)N * ld;
    float *a = rand_host(n, 1.0f), *b = rand_host(n, 1.0f), *start = rand_host(C, 1.0f);
    round_to<T>(a, n), round_to<T>(b, n);
    float *ref1 = zeros_host(C), *ref2 = zeros_host(C), *got = zeros_host(C);
    for (int c = 0; c < C; c++) {
        double s1 = 0, s2 = 0;
        for (int r = 0; r < N; r++) {
            double x = a[(size_t)r * ld + c], y = b[(size_t)r * ld + c];
            s1 += x, s2 += x * y;
        }
        ref1[c] = start[c] + (float)s1, ref2[c] = start[c] + (float)s2;
    }
    T *d_a = to_device<T>(a, n), *d_b = to_device<T>(b, n);
    float *d1 = to_device<float>(start, C), *d2 = to_device<float>(start, C);
    bias_grad_gpu<T>(d1, d_a, N, C, ld);
    double e1, e2 = 0;
    to_host<float>(got, d1, C), e1 = rel_err(got, ref1, C);
    if (ld == C) {  // the other sums take dense matrices
        product_colsum_gpu<T>(d2, d_a, d_b, N, C);
        to_host<float>(got, d2, C), e2 = rel_err(got, ref2, C);
    }
    EXPECT(e1 < 1e-5 && e2 < 1e-5, "%s N=%d C=%d ld=%ld: rel err sum %.2e product %.2e", tn, N, C, ld, e1, e2);
    printf("  %s N=%d C=%d ld=%ld: sum %.1e product %.1e\n", tn, N, C, ld, e1, e2);
    free(a), free(b), free(start), free(ref1), free(ref2), free(got);
    cudaCheck(cudaFree(d_a)), cudaCheck(cudaFree(d_b)), cudaCheck(cudaFree(d1)), cudaCheck(cudaFree(d2));
}

static void test_colsum(void) {
    SKIP_WITHOUT_GPU();
    const long shapes[][3] = {{37, 75, 75}, {1000, 768, 768}, {50432, 64, 64}, {13, 3072, 3072}, {8, 64, 64 * 17}, {3, 77 * 64, 77 * 64}};
    for (int s = 0; s < 6; s++) {
        check<float>((int)shapes[s][0], (int)shapes[s][1], shapes[s][2]);
        check<bf16>((int)shapes[s][0], (int)shapes[s][1], shapes[s][2]);
    }
}

int main(void) {
    test_seed();
    RUN(test_colsum);
    TEST_EXIT();
}
