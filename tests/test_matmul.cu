// test_matmul.cu: the cuBLASLt linear layer (kernels/matmul.cu) against matmul_forward/backward of
// model/ops_cpu.c, with and without bias, odd and model-sized shapes, float and bf16. Bounds (relative L2):
// fp32 1e-5 (full fp32 GEMMs); bf16: outputs 1e-2 (rounded once to bf16), the fp32 weight gradient 1e-4
// (bf16 products are exact in fp32, only the summation order differs), both added onto a random start and
// written over a NaN-poisoned one (the step's first micro-batch). The forward also with a residual added in the
// epilogue (out written over poison, not in place). test_tuning: gemm_tuning's timed choice
// and its file (matmul_tuning_load/save), with the same bounds.
#include <string.h>
#include <unistd.h>

#include "../kernels/matmul.cuh"
#include "test_gpu.h"

template <typename T> static void check(int N, int C, int OC, int with_bias, int with_res) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    float *x = rand_host((size_t)N * C, 1.0f), *w = rand_host((size_t)OC * C, 0.1f), *bias = rand_host(OC, 1.0f);
    float *res = rand_host((size_t)N * OC, 1.0f), *dout = rand_host((size_t)N * OC, 1.0f), *dw = rand_host((size_t)OC * C, 1.0f), *dw_new = zeros_host((size_t)OC * C);
    round_to<T>(x, (size_t)N * C), round_to<T>(w, (size_t)OC * C), round_to<T>(bias, OC), round_to<T>(dout, (size_t)N * OC);
    round_to<T>(res, (size_t)N * OC);
    float *out = zeros_host((size_t)N * OC), *dx = zeros_host((size_t)N * C), *g = zeros_host((size_t)N * (C > OC ? C : OC) + (size_t)OC * C);
    T *d_res = to_device<T>(res, (size_t)N * OC), *d_x = to_device<T>(x, (size_t)N * C), *d_w = to_device<T>(w, (size_t)OC * C), *d_bias = to_device<T>(bias, OC);
    T *d_dout = to_device<T>(dout, (size_t)N * OC), *d_out = poisoned<T>((size_t)N * OC), *d_dx = poisoned<T>((size_t)N * C);
    float *d_dw = to_device<float>(dw, (size_t)OC * C), *d_dw_new = poisoned<float>((size_t)OC * C);
    matmul_forward(out, x, w, with_bias ? bias : NULL, N, C, OC);
    if (with_res)
        for (size_t i = 0; i < (size_t)N * OC; i++) out[i] += res[i];
    matmul_backward(NULL, dw_new, NULL, dout, x, w, N, C, OC);
    matmul_backward(dx, dw, NULL, dout, x, w, N, C, OC);  // dw accumulates onto its random start
    matmul_forward_gpu<T>(d_out, d_x, d_w, with_bias ? d_bias : NULL, N, C, OC, with_res ? d_res : NULL);
    matmul_backward_input_gpu<T>(d_dx, d_dout, d_w, N, C, OC);
    matmul_backward_weight_gpu<T>(d_dw, d_dout, d_x, N, C, OC, 1);
    matmul_backward_weight_gpu<T>(d_dw_new, d_dout, d_x, N, C, OC, 0);  // overwrites the poison
    double bound = sizeof(T) == 2 ? 1e-2 : 1e-5;
    to_host<T>(g, d_out, (size_t)N * OC);
    double eo = rel_err(g, out, (size_t)N * OC);
    to_host<T>(g, d_dx, (size_t)N * C);
    double ex = rel_err(g, dx, (size_t)N * C);
    to_host<float>(g, d_dw, (size_t)OC * C);
    double ew = rel_err(g, dw, (size_t)OC * C);
    to_host<float>(g, d_dw_new, (size_t)OC * C);
    double en = rel_err(g, dw_new, (size_t)OC * C);
    EXPECT(eo < bound, "%s %dx%d->%d bias %d residual %d: out rel err %.2e", tn, N, C, OC, with_bias, with_res, eo);
    EXPECT(ex < bound, "%s %dx%d->%d: dinp rel err %.2e", tn, N, C, OC, ex);
    EXPECT(ew < (sizeof(T) == 2 ? 1e-4 : 1e-5), "%s %dx%d->%d: dw (accumulated) rel err %.2e", tn, N, C, OC, ew);
    EXPECT(en < (sizeof(T) == 2 ? 1e-4 : 1e-5), "%s %dx%d->%d: dw (overwritten) rel err %.2e", tn, N, C, OC, en);
    printf("  %s %dx%d->%d bias %d residual %d: out %.1e dinp %.1e dw %.1e (overwritten %.1e)\n", tn, N, C, OC, with_bias, with_res,
           eo, ex, ew, en);
    free(res), cudaCheck(cudaFree(d_res));
    free(x), free(w), free(bias), free(dout), free(dw), free(dw_new), free(out), free(dx), free(g);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_w)), cudaCheck(cudaFree(d_bias)), cudaCheck(cudaFree(d_dout));
    cudaCheck(cudaFree(d_out)), cudaCheck(cudaFree(d_dx)), cudaCheck(cudaFree(d_dw)), cudaCheck(cudaFree(d_dw_new));
}

static void test_matmul(void) {
    SKIP_WITHOUT_GPU();
    const int shapes[][3] = {{37, 75, 61}, {77, 64, 192}, {394, 768, 2304}, {257, 1280, 1280}, {50, 3072, 768}};
    for (int s = 0; s < 5; s++)
        for (int mode = 0; mode < 4; mode++) {  // bias, residual
            check<float>(shapes[s][0], shapes[s][1], shapes[s][2], mode & 1, mode >> 1);
            check<bf16>(shapes[s][0], shapes[s][1], shapes[s][2], mode & 1, mode >> 1);
        }
}

// Returns the algorithm index saved in `path` for the first shape line starting with `prefix`, or -1.
static int saved_choice(const char *path, const char *prefix, char *line_out) {
    FILE *f = fopenCheck(path, "r");
    char line[256];
    int choice = -1;
    while (choice < 0 && fgets(line, sizeof(line), f))
        if (!strncmp(line, prefix, strlen(prefix))) {
            choice = atoi(strrchr(line, ' ') + 1);
            if (line_out) strcpy(line_out, line);
        }
    fcloseCheck(f);
    return choice;
}

// gemm_tuning: a tuned shape computes the same as above (its dW still accumulates once: the candidates are timed
// on a scratch output); its choice is saved; a loaded choice is used for a shape not seen yet instead of timing
// (the saved file then names it); a file from another GPU or cuBLASLt is refused; a failed save says where.
static void test_tuning(void) {
    SKIP_WITHOUT_GPU();
    char path[] = "/tmp/test_matmul_tuning.XXXXXX";
    int fd = mkstemp(path);
    EXPECT(fd >= 0, "mkstemp failed");
    close(fd);
    matmul_set_tuning(8);
    check<bf16>(1000, 512, 768, 1, 1);  // timed with a residual: the candidates start from it, not from the poisoned output
    char err[1200];
    EXPECT(matmul_tuning_save(path, err, sizeof(err)) == 0, "save failed: %s", err);
    char line[256], header[256];
    int chosen = saved_choice(path, "768 1000 512 ", line);  // the forward: m = OC, n = N, k = C
    EXPECT(chosen >= 0 && chosen < 8, "the tuned forward shape's line is missing or its choice %d is out of range", chosen);
    // the same shape with N = 600 (not planned yet), with another choice than the timing made for N = 1000
    int want = chosen == 0 ? 1 : 0;
    FILE *f = fopenCheck(path, "r");
    EXPECT(fgets(header, sizeof(header), f) != NULL, "no header");
    fcloseCheck(f);
    char rest[256];
    strcpy(rest, line + strlen("768 1000 512 "));
    *strrchr(rest, ' ') = '\0';
    f = fopenCheck(path, "w");
    fprintf(f, "%s768 600 512 %s %d\n", header, rest, want);
    fcloseCheck(f);
    EXPECT(matmul_tuning_load(path) == 1, "the edited file did not load one choice");
    check<bf16>(600, 512, 768, 1, 0);
    EXPECT(matmul_tuning_save(path, err, sizeof(err)) == 0, "save failed: %s", err);
    int used = saved_choice(path, "768 600 512 ", NULL);
    EXPECT(used == want, "N = 600 ran with choice %d, the file said %d", used, want);
    f = fopenCheck(path, "w");
    fprintf(f, "# train_clip GEMM choices: another GPU, cuBLASLt 1\n768 700 512 %s %d\n", rest, want);
    fcloseCheck(f);
    EXPECT(matmul_tuning_load(path) == -1, "a file from another GPU was not refused");
    EXPECT(matmul_tuning_save("/nonexistent-dir/choices.txt", err, sizeof(err)) == -1 && strstr(err, "/nonexistent-dir"),
           "a save into a missing directory did not fail with its name: %s", err);
    matmul_set_tuning(1);
    unlink(path);
}

int main(void) {
    test_seed();
    RUN(test_matmul);
    RUN(test_tuning);
    TEST_EXIT();
}
