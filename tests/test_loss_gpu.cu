// test_loss_gpu.cu: the contrastive loss on the GPU (kernels/loss.cu, fp32) against model/ops_cpu.c (which works
// in double). (1) contrastive_loss_gpu vs contrastive_loss: loss, both feature gradients, the logit_scale
// gradient (added to an existing value), for batches 5 / 64 / 300 and odd embedding widths. (2) The per-rank
// form that multi-GPU training uses: the rows of each of 4 "ranks" (contrastive_loss_rows_gpu) against
// contrastive_loss_rows, gradients w.r.t. all N normalised features. Bounds: loss 1e-5 relative to max(loss, 1)
// (each term is logsumexp - z_target, two numbers of the size of the logits, so its fp32 error is absolute: a
// loss of 0.0097 came out 2e-7 off, 2e-5 relative, on an H200); feature gradients and the logit_scale gradient
// (a sum of 2B^2 terms of both signs) 1e-4 relative, fp32 sums against double (measured: up to 3.7e-6 and
// 2.7e-5). The matched pairs are made more similar than the others by `match`, but not so much that the loss
// vanishes (a loss near 0 is a difference of nearly equal fp32 numbers; training never gets there).
#include "../kernels/loss.cuh"
#include "test_gpu.h"

static void check(int B, int E, float logit_scale, float match) {
    size_t n = (size_t)B * E;
    float *img = rand_host(n, 1.0f), *txt = rand_host(n, 1.0f);
    for (size_t i = 0; i < n; i++) txt[i] += match * img[i];
    float *dimg = zeros_host(n), *dtxt = zeros_host(n), dscale = 0, *g = zeros_host(n);
    float loss = contrastive_loss(img, txt, logit_scale, B, E, dimg, dtxt, &dscale);
    float *d_img = to_device<float>(img, n), *d_txt = to_device<float>(txt, n), *d_dimg = poisoned<float>(n), *d_dtxt = poisoned<float>(n);
    float start = 0.25f, *d_ls = to_device<float>(&logit_scale, 1), *d_dls = to_device<float>(&start, 1), *d_loss = poisoned<float>(1);
    float *d_scratch = poisoned<float>(contrastive_loss_gpu_scratch_elems(B, E));
    contrastive_loss_gpu(d_loss, d_dimg, d_dtxt, d_dls, d_img, d_txt, d_ls, B, E, d_scratch);
    float gl, gdls;
    to_host<float>(&gl, d_loss, 1), to_host<float>(&gdls, d_dls, 1);
    gdls -= start;
    double el = fabs(gl - loss) / fmax(fabs(loss), 1.0), es = fabs(gdls - dscale) / fmax(fabs(dscale), 1e-3);
    to_host<float>(g, d_dimg, n);
    double ei = rel_err(g, dimg, n);
    to_host<float>(g, d_dtxt, n);
    double et = rel_err(g, dtxt, n);
    EXPECT(el < 1e-5, "B=%d E=%d: loss %.7f vs %.7f (rel %.2e)", B, E, gl, loss, el);
    EXPECT(es < 1e-4, "B=%d E=%d: dlogit_scale %.7g vs %.7g (rel %.2e)", B, E, gdls, dscale, es);
    EXPECT(ei < 1e-4 && et < 1e-4, "B=%d E=%d: dimg rel err %.2e, dtxt %.2e", B, E, ei, et);
    printf("  B=%d E=%d scale %.2f: loss %.5f (%.1e) dscale %.1e dimg %.1e dtxt %.1e\n", B, E, logit_scale, loss, el, es, ei, et);
    free(img), free(txt), free(dimg), free(dtxt), free(g);
    cudaCheck(cudaFree(d_img)), cudaCheck(cudaFree(d_txt)), cudaCheck(cudaFree(d_dimg)), cudaCheck(cudaFree(d_dtxt));
    cudaCheck(cudaFree(d_ls)), cudaCheck(cudaFree(d_dls)), cudaCheck(cudaFree(d_loss)), cudaCheck(cudaFree(d_scratch));
}

// Rows [r b, (r + 1) b) of N = 4 b for each rank r, from normalised features, against the CPU reference.
static void check_rows(int b, int E, float logit_scale, float match) {
    int N = 4 * b;
    size_t n = (size_t)N * E;
    float *img = rand_host(n, 1.0f), *txt = rand_host(n, 1.0f), *inv = zeros_host(N);
    for (size_t i = 0; i < n; i++) txt[i] += match * img[i];
    l2_normalize_forward(img, inv, img, N, E);
    l2_normalize_forward(txt, inv, txt, N, E);
    float *d_img = to_device<float>(img, n), *d_txt = to_device<float>(txt, n), *d_ls = to_device<float>(&logit_scale, 1);
    float *d_dimg = poisoned<float>(n), *d_dtxt = poisoned<float>(n), *d_loss = poisoned<float>(1), zero = 0, *d_dls = to_device<float>(&zero, 1);
    float *d_scratch = poisoned<float>(contrastive_loss_scratch_elems(b, N)), *g = zeros_host(n);
    for (int r = 0; r < 4; r++) {
        float *dimg = zeros_host(n), *dtxt = zeros_host(n), dscale = 0, gl, gdls;
        double loss = contrastive_loss_rows(img, txt, logit_scale, N, E, r * b, b, dimg, dtxt, &dscale);
        cudaCheck(cudaMemset(d_dls, 0, sizeof(float)));
        contrastive_loss_rows_gpu(d_loss, d_dimg, d_dtxt, d_dls, d_img, d_txt, d_ls, N, E, r * b, b, d_scratch);
        to_host<float>(&gl, d_loss, 1), to_host<float>(&gdls, d_dls, 1);
        to_host<float>(g, d_dimg, n);
        double ei = rel_err(g, dimg, n);
        to_host<float>(g, d_dtxt, n);
        double et = rel_err(g, dtxt, n), el = fabs(gl - loss) / fmax(fabs(loss), 1.0), es = fabs(gdls - dscale) / fmax(fabs(dscale), 1e-3);
        EXPECT(el < 1e-5, "rank %d of 4, b=%d E=%d: loss %.7f vs %.7f (rel %.2e)", r, b, E, gl, loss, el);
        EXPECT(es < 1e-4, "rank %d of 4, b=%d E=%d: dlogit_scale %.7g vs %.7g", r, b, E, gdls, dscale);
        EXPECT(ei < 1e-4 && et < 1e-4, "rank %d of 4, b=%d E=%d: dimg rel err %.2e, dtxt %.2e", r, b, E, ei, et);
        if (r == 3) printf("  rows of rank 3 of 4, b=%d E=%d: loss %.1e dscale %.1e dimg %.1e dtxt %.1e\n", b, E, el, es, ei, et);
        free(dimg), free(dtxt);
    }
    free(img), free(txt), free(inv), free(g);
    cudaCheck(cudaFree(d_img)), cudaCheck(cudaFree(d_txt)), cudaCheck(cudaFree(d_ls)), cudaCheck(cudaFree(d_dimg));
    cudaCheck(cudaFree(d_dtxt)), cudaCheck(cudaFree(d_loss)), cudaCheck(cudaFree(d_dls)), cudaCheck(cudaFree(d_scratch));
}

static void test_contrastive_loss(void) {
    SKIP_WITHOUT_GPU();
    check(5, 64, logf(1 / 0.07f), 0.5f);
    check(64, 77, logf(1 / 0.07f), 0.5f);
    check(300, 512, logf(100.0f), 0.05f);
    check(33, 1024, 0.0f, 0.5f);
}

static void test_loss_rows(void) {
    SKIP_WITHOUT_GPU();
    check_rows(3, 64, logf(1 / 0.07f), 0.5f);
    check_rows(50, 512, logf(100.0f), 0.05f);
}

int main(void) {
    test_seed();
    RUN(test_contrastive_loss);
    RUN(test_loss_rows);
    TEST_EXIT();
}
