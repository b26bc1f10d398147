// test_adamw.cu: the fused multi-tensor optimizer (kernels/adamw.cu) against adamw_update of optim/adamw.c
// for AdamW and StableAdamW over tensors of odd sizes (one element, one chunk, several chunks), with and
// without weight decay, a gradient scale (as global-norm clipping applies), three steps; the bf16 copy; and
// the global norm against grad_global_norm. Bounds (relative L2): parameters and moments 1e-5; per-tensor
// RMS 1e-5; bf16 copy == bf16(params); norm 1e-5.
#include "../kernels/adamw.cuh"
#include "test_gpu.h"
extern "C" {
#include "../optim/optim.h"
}

static void check(int clip) {
    enum { NT = 5 };
    size_t numel[NT] = {1, 33, 70001, 131073, 4096}, offset[NT];
    int decay[NT] = {0, 0, 1, 1, 1};
    size_t n = 0;
    for (int t = 0; t < NT; t++) offset[t] = n, n += (numel[t] + 31) / 32 * 32;
    float *p = rand_host(n, 1.0f), *m = zeros_host(n), *u = zeros_host(n), *g = zeros_host(n), rms[NT];
    AdamWPlan plan;
    adamw_plan_init(&plan, NT, offset, numel, decay, 0.1f);
    float *d_p = to_device<float>(p, n), *d_m = to_device<float>(m, n), *d_u = to_device<float>(u, n), *d_g = poisoned<float>(n);
    bf16 *d_pb = poisoned<bf16>(n);
    float lr = 1e-2f, b1 = 0.9f, b2 = 0.98f, eps = 1e-6f, scale = 0.5f;
    for (int step = 1; step <= 3; step++) {
        float *gr = rand_host(n, step == 2 ? 100.0f : 1.0f);  // a large gradient at step 2 makes StableAdamW clip
        for (int t = 0; t < NT; t++)  // padding between tensors is zero, as in the model's buffers
            for (size_t i = offset[t] + numel[t]; i < (t + 1 < NT ? offset[t + 1] : n); i++) gr[i] = 0;
        cudaCheck(cudaMemcpy(d_g, gr, n * sizeof(float), cudaMemcpyHostToDevice));
        float b1t = (float)(b1 * (1 - pow(b1, step - 1)) / (1 - pow(b1, step))), b2t = (float)(b2 * (1 - pow(b2, step - 1)) / (1 - pow(b2, step)));
        for (size_t i = 0; i < n; i++) g[i] = gr[i] * scale;
        for (int t = 0; t < NT; t++)
            rms[t] = adamw_update(p + offset[t], g + offset[t], m + offset[t], u + offset[t], numel[t], lr, decay[t] ? 0.1f : 0.0f, b1t, b2t, eps, clip);
        adamw_step_gpu(&plan, d_p, d_pb, d_g, d_m, d_u, lr, b1t, b2t, eps, scale, clip);
        free(gr);
    }
    float *hp = zeros_host(n), *hm = zeros_host(n), *hu = zeros_host(n), hr[NT];
    to_host<float>(hp, d_p, n), to_host<float>(hm, d_m, n), to_host<float>(hu, d_u, n), to_host<float>(hr, plan.rms, NT);
    double ep = rel_err(hp, p, n), em = rel_err(hm, m, n), eu = rel_err(hu, u, n), er = rel_err(hr, rms, NT);
    EXPECT(ep < 1e-5 && em < 1e-5 && eu < 1e-5, "clip=%d: params %.2e m %.2e u %.2e", clip, ep, em, eu);
    EXPECT(er < 1e-5, "clip=%d: rms rel err %.2e (rms of tensor 3: %g vs %g)", clip, er, hr[3], rms[3]);
    bf16 *hb = (bf16 *)mallocCheck(n * sizeof(bf16));
    cudaCheck(cudaMemcpy(hb, d_pb, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int t = 0; t < NT; t++)
        for (size_t i = 0; i < numel[t]; i++) bad += (float)hb[offset[t] + i] != round_bf16(hp[offset[t] + i]);
    EXPECT(bad == 0, "clip=%d: %d bf16 copies differ from bf16(params)", clip, bad);
    printf("  clip=%d: params %.1e m %.1e u %.1e rms %.1e (rms %.3g %.3g %.3g %.3g %.3g)\n", clip, ep, em, eu, er, rms[0], rms[1], rms[2], rms[3], rms[4]);
    // global norm of the last gradients, padding included (zero)
    float *d_norm = poisoned<float>(1), *d_scratch = poisoned<float>(GRAD_NORM_BLOCKS), norm;
    global_norm_gpu(d_norm, d_g, n, d_scratch);
    to_host<float>(&norm, d_norm, 1);
    float *gl = zeros_host(n);
    to_host<float>(gl, d_g, n);
    float ref = grad_global_norm(gl, n);
    EXPECT(fabs(norm - ref) / ref < 1e-5, "global norm %.7g vs %.7g", norm, ref);
    free(p), free(m), free(u), free(g), free(hp), free(hm), free(hu), free(hb), free(gl);
    adamw_plan_free(&plan);
    cudaCheck(cudaFree(d_p)), cudaCheck(cudaFree(d_m)), cudaCheck(cudaFree(d_u)), cudaCheck(cudaFree(d_g)), cudaCheck(cudaFree(d_pb));
    cudaCheck(cudaFree(d_norm)), cudaCheck(cudaFree(d_scratch));
}

static void test_adamw(void) {
    SKIP_WITHOUT_GPU();
    check(0);
}

static void test_stable_adamw(void) {
    SKIP_WITHOUT_GPU();
    check(1);
}

int main(void) {
    test_seed();
    RUN(test_adamw);
    RUN(test_stable_adamw);
    TEST_EXIT();
}
