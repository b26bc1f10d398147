// test_adamw.cu: the fused multi-tensor optimizer (kernels/adamw.cu) against adamw_update of optim/adamw.c
// for AdamW and StableAdamW over tensors of odd sizes (one element, one chunk, several chunks), with and
// without weight decay, a gradient scale (as global-norm clipping applies), three steps; the bf16 copy; the
// sum of squares against grad_global_norm. Then the same steps sharded as ZeRO-1 does over 2 "ranks" (each
// plan covers its part of every bucket, buckets cutting through tensors; the RMS partial sums added between
// the phases; each rank's compact moments): the owners' parameters and moments must equal the unsharded
// reference. Bounds (relative L2): parameters and moments 1e-5; per-tensor RMS 1e-5; bf16 copy ==
// bf16(params), and its per-tensor maxima (SwitchBack's weight scales) exact; norm 1e-5. The unscaled step in one
// pass (statistics, then adamw_step_gpu) equals the two phases bit for bit, for both optimizers, whole and sharded. The gradient zeroing
// (zero_ranges_gpu) writes +0 in its ranges and nothing outside.
#include "../kernels/adamw.cuh"
#include "test_gpu.h"
extern "C" {
#include "../model/clip_dist.h"
#include "../optim/optim.h"
}

enum { NT = 5, RANKS = 2, BUCKETS = 3 };
static const size_t NUMEL[NT] = {1, 33, 70001, 131073, 4096};
static const int DECAY[NT] = {0, 0, 1, 1, 1};

// Fresh gradients for a step (zero in the padding between tensors, as in the model's buffers).
static float *step_grads(const size_t *offset, size_t n, int step) {
    float *g = rand_host(n, step == 2 ? 100.0f : 1.0f);  // a large gradient at step 2 makes StableAdamW clip
    for (int t = 0; t < NT; t++)
        for (size_t i = offset[t] + NUMEL[t]; i < (t + 1 < NT ? offset[t + 1] : n); i++) g[i] = 0;
    return g;
}

static void check(int clip) {
    size_t offset[NT], n = 0;
    for (int t = 0; t < NT; t++) offset[t] = n, n += (NUMEL[t] + 31) / 32 * 32;
    float *p = rand_host(n, 1.0f), *m = zeros_host(n), *u = zeros_host(n), *g = zeros_host(n), rms[NT];
    // unsharded
    AdamWPlan plan;
    adamw_plan_init(&plan, NT, offset, NUMEL, DECAY, 0.1f, 0, NULL, NULL);
    float *d_p = to_device<float>(p, n), *d_m = to_device<float>(m, n), *d_u = to_device<float>(u, n), *d_g = poisoned<float>(n);
    bf16 *d_pb = poisoned<bf16>(n);
    // sharded over RANKS: buckets cut through tensors; rank r owns part r of each (its segments, ascending)
    size_t bucket[BUCKETS + 1] = {0, 40000, 150016, n}, seg_lo[RANKS][BUCKETS], seg_hi[RANKS][BUCKETS];
    AdamWPlan splan[RANKS];
    float *s_p[RANKS], *s_m[RANKS], *s_u[RANKS];
    for (int r = 0; r < RANKS; r++) {
        for (int k = 0; k < BUCKETS; k++) {
            dist_part(bucket[k + 1] - bucket[k], RANKS, r, &seg_lo[r][k], &seg_hi[r][k]);
            seg_lo[r][k] += bucket[k], seg_hi[r][k] += bucket[k];
        }
        adamw_plan_init(&splan[r], NT, offset, NUMEL, DECAY, 0.1f, BUCKETS, seg_lo[r], seg_hi[r]);
        s_p[r] = to_device<float>(p, n);
        s_m[r] = to_device<float>(m, splan[r].state_elems), s_u[r] = to_device<float>(u, splan[r].state_elems);
    }
    float lr = 1e-2f, b1 = 0.9f, b2 = 0.98f, eps = 1e-6f, scale = 0.5f, sums[RANKS][NT], norm_parts[RANKS];
    for (int step = 1; step <= 3; step++) {
        float *gr = step_grads(offset, n, step);
        cudaCheck(cudaMemcpy(d_g, gr, n * sizeof(float), cudaMemcpyHostToDevice));
        float b1t = (float)(b1 * (1 - pow(b1, step - 1)) / (1 - pow(b1, step))), b2t = (float)(b2 * (1 - pow(b2, step - 1)) / (1 - pow(b2, step)));
        for (size_t i = 0; i < n; i++) g[i] = gr[i] * scale;
        for (int t = 0; t < NT; t++)
            rms[t] = adamw_update(p + offset[t], g + offset[t], m + offset[t], u + offset[t], NUMEL[t], lr, DECAY[t] ? 0.1f : 0.0f, b1t, b2t, eps, clip);
        adamw_moments_gpu(&plan, d_g, d_m, d_u, b1t, b2t, eps, scale);
        adamw_apply_gpu(&plan, d_p, d_pb, d_m, d_u, lr, eps, clip);
        for (int r = 0; r < RANKS; r++) {
            adamw_moments_gpu(&splan[r], d_g, s_m[r], s_u[r], b1t, b2t, eps, scale);
            to_host<float>(sums[r], splan[r].tensor_sum, NT);
        }
        for (int t = 0; t < NT; t++) sums[0][t] += sums[1][t];  // the all-reduce of the partial sums
        for (int r = 0; r < RANKS; r++) {
            cudaCheck(cudaMemcpy(splan[r].tensor_sum, sums[0], NT * sizeof(float), cudaMemcpyHostToDevice));
            adamw_apply_gpu(&splan[r], s_p[r], NULL, s_m[r], s_u[r], lr, eps, clip);
        }
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
        for (size_t i = 0; i < NUMEL[t]; i++) bad += (float)hb[offset[t] + i] != round_bf16(hp[offset[t] + i]);
    EXPECT(bad == 0, "clip=%d: %d bf16 copies differ from bf16(params)", clip, bad);
    // the maxima of the bf16 copy per tensor (SwitchBack's weight scales), exact
    float ham[NT];
    to_host<float>(ham, plan.tensor_absmax, NT);
    for (int t = 0; t < NT; t++) {
        float mx = 0.0f;
        for (size_t i = 0; i < NUMEL[t]; i++) mx = fmaxf(mx, fabsf((float)hb[offset[t] + i]));
        EXPECT(ham[t] == mx, "clip=%d: tensor %d bf16 maximum %g, expected %g", clip, t, ham[t], mx);
    }
    printf("  clip=%d: params %.1e m %.1e u %.1e rms %.1e (rms %.3g %.3g %.3g %.3g %.3g)\n", clip, ep, em, eu, er, rms[0], rms[1], rms[2], rms[3], rms[4]);
    // sharded: the owners' elements assembled, the compact moments at their segments
    float *sp = zeros_host(n), *sm = zeros_host(n), *su = zeros_host(n), *tmp = zeros_host(n), srms[NT];
    for (int r = 0; r < RANKS; r++) {
        size_t st = 0, state = splan[r].state_elems;
        float *cm = zeros_host(state), *cu = zeros_host(state);
        to_host<float>(tmp, s_p[r], n), to_host<float>(cm, s_m[r], state), to_host<float>(cu, s_u[r], state);
        for (int k = 0; k < BUCKETS; k++)
            for (size_t i = seg_lo[r][k]; i < seg_hi[r][k]; i++, st++) sp[i] = tmp[i], sm[i] = cm[st], su[i] = cu[st];
        free(cm), free(cu);
    }
    to_host<float>(srms, splan[1].rms, NT);
    double sep = rel_err(sp, p, n), sem = rel_err(sm, m, n), seu = rel_err(su, u, n), ser = rel_err(srms, rms, NT);
    EXPECT(sep < 1e-5 && sem < 1e-5 && seu < 1e-5, "clip=%d sharded: params %.2e m %.2e u %.2e", clip, sep, sem, seu);
    EXPECT(ser < 1e-5, "clip=%d sharded: rms rel err %.2e", clip, ser);
    // sum of squares of the last gradients, padding included (zero): whole, and as the two ranks' parts
    float *d_sum = poisoned<float>(1), sum, ref = grad_global_norm(g, n) / scale;
    adamw_grad_stats_gpu(&plan, d_sum, d_g, NULL, 0.0f, 0.0f);
    to_host<float>(&sum, d_sum, 1);
    for (int r = 0; r < RANKS; r++) adamw_grad_stats_gpu(&splan[r], d_sum, d_g, NULL, 0.0f, 0.0f), to_host<float>(&norm_parts[r], d_sum, 1);
    EXPECT(fabs(sqrtf(sum) - ref) / ref < 1e-5, "global norm %.7g vs %.7g", sqrtf(sum), ref);
    EXPECT(fabs(sqrtf(norm_parts[0] + norm_parts[1]) - ref) / ref < 1e-5, "sharded global norm %.7g vs %.7g",
           sqrtf(norm_parts[0] + norm_parts[1]), ref);
    printf("  clip=%d sharded over %d: params %.1e m %.1e u %.1e rms %.1e\n", clip, RANKS, sep, sem, seu, ser);
    free(p), free(m), free(u), free(g), free(hp), free(hm), free(hu), free(hb), free(sp), free(sm), free(su), free(tmp);
    adamw_plan_free(&plan);
    cudaCheck(cudaFree(d_p)), cudaCheck(cudaFree(d_m)), cudaCheck(cudaFree(d_u)), cudaCheck(cudaFree(d_g)), cudaCheck(cudaFree(d_pb));
    cudaCheck(cudaFree(d_sum));
    for (int r = 0; r < RANKS; r++) {
        adamw_plan_free(&splan[r]);
        cudaCheck(cudaFree(s_p[r])), cudaCheck(cudaFree(s_m[r])), cudaCheck(cudaFree(s_u[r]));
    }
}

static void test_adamw(void) {
    SKIP_WITHOUT_GPU();
    check(0);
}

static void test_stable_adamw(void) {
    SKIP_WITHOUT_GPU();
    check(1);
}

// The number of the n floats of a and b whose bits differ.
static size_t count_diff(const float *a, const float *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += memcmp(a + i, b + i, sizeof(float)) != 0;
    return k;
}

// The unscaled step in one pass against the two phases with grad_scale 1, for StableAdamW (clip: adamw_grad_stats_gpu
// with u, then adamw_step_gpu) and AdamW (adamw_grad_stats_gpu without u, then adamw_step_gpu, which makes the RMS sums,
// then adamw_rms_gpu): the same bits (parameters, bf16 copy and its maxima, moments, RMS sums and RMS, the norm's sum),
// three steps, whole and sharded over 2 "ranks" (the RMS sums added over the ranks where the step does).
static void test_fused_step(void) {
    SKIP_WITHOUT_GPU();
    size_t offset[NT], n = 0;
    for (int t = 0; t < NT; t++) offset[t] = n, n += (NUMEL[t] + 31) / 32 * 32;
    size_t bucket[BUCKETS + 1] = {0, 40000, 150016, n}, seg_lo[RANKS][BUCKETS], seg_hi[RANKS][BUCKETS];
    float *p0 = rand_host(n, 1.0f), lr = 1e-2f, b1 = 0.9f, b2 = 0.98f, eps = 1e-6f;
    for (int clip = 1; clip >= 0; clip--)
        for (int sharded = 0; sharded < 2; sharded++) {
            int nplans = sharded ? RANKS : 1;
            AdamWPlan plan[RANKS];
            float *d_p[2][RANKS], *d_m[2][RANKS], *d_u[2][RANKS], *d_sum = poisoned<float>(2);
            bf16 *d_b[2][RANKS];
            for (int r = 0; r < nplans; r++) {
                for (int k = 0; k < BUCKETS && sharded; k++) {
                    dist_part(bucket[k + 1] - bucket[k], RANKS, r, &seg_lo[r][k], &seg_hi[r][k]);
                    seg_lo[r][k] += bucket[k], seg_hi[r][k] += bucket[k];
                }
                adamw_plan_init(&plan[r], NT, offset, NUMEL, DECAY, 0.1f, sharded ? BUCKETS : 0, seg_lo[r], seg_hi[r]);
                for (int v = 0; v < 2; v++) {  // v = 0: two phases, 1: one pass
                    d_p[v][r] = to_device<float>(p0, n), d_b[v][r] = poisoned<bf16>(n);
                    d_m[v][r] = poisoned<float>(plan[r].state_elems), d_u[v][r] = poisoned<float>(plan[r].state_elems);
                    cudaCheck(cudaMemset(d_m[v][r], 0, plan[r].state_elems * sizeof(float)));
                    cudaCheck(cudaMemset(d_u[v][r], 0, plan[r].state_elems * sizeof(float)));
                }
            }
            float *d_g = poisoned<float>(n), sums[2][RANKS][NT], norm[2][RANKS], rms[2][RANKS][NT], absmax[2][RANKS][NT];
            // sums[v][0] = the ranks' RMS sums added (the all-reduce), copied back to every plan
            auto reduce_sums = [&](int v) {
                for (int r = 0; r < nplans; r++) to_host<float>(sums[v][r], plan[r].tensor_sum, NT);
                for (int t = 0; t < NT && sharded; t++) sums[v][0][t] += sums[v][1][t];
                for (int r = 0; r < nplans; r++)
                    cudaCheck(cudaMemcpy(plan[r].tensor_sum, sums[v][0], NT * sizeof(float), cudaMemcpyHostToDevice));
            };
            for (int step = 1; step <= 3; step++) {
                float *gr = step_grads(offset, n, step);
                cudaCheck(cudaMemcpy(d_g, gr, n * sizeof(float), cudaMemcpyHostToDevice));
                float b1t = (float)(b1 * (1 - pow(b1, step - 1)) / (1 - pow(b1, step))), b2t = (float)(b2 * (1 - pow(b2, step - 1)) / (1 - pow(b2, step)));
                for (int v = 0; v < 2; v++) {
                    int sums_first = !v || clip;  // AdamW's one pass makes its sums itself
                    for (int r = 0; r < nplans; r++) {  // NaN: sums a way does not make itself are not the other way's
                        cudaCheck(cudaMemset(plan[r].partial, 0xFF, (plan[r].num_chunks + 1) * sizeof(float)));
                        cudaCheck(cudaMemset(plan[r].tensor_sum, 0xFF, NT * sizeof(float)));
                    }
                    for (int r = 0; r < nplans; r++) {
                        adamw_grad_stats_gpu(&plan[r], d_sum, d_g, v && clip ? d_u[v][r] : NULL, b2t, eps);
                        to_host<float>(&norm[v][r], d_sum, 1);
                        if (!v) adamw_moments_gpu(&plan[r], d_g, d_m[v][r], d_u[v][r], b1t, b2t, eps, 1.0f);
                    }
                    if (sums_first) reduce_sums(v);
                    for (int r = 0; r < nplans; r++) {
                        if (v) adamw_step_gpu(&plan[r], d_g, d_m[v][r], d_u[v][r], d_p[v][r], d_b[v][r], b1t, b2t, lr, eps, clip);
                        else adamw_apply_gpu(&plan[r], d_p[v][r], d_b[v][r], d_m[v][r], d_u[v][r], lr, eps, clip);
                    }
                    if (!sums_first) {
                        reduce_sums(v);
                        for (int r = 0; r < nplans; r++) adamw_rms_gpu(&plan[r]);
                    }
                    for (int r = 0; r < nplans; r++) {
                        to_host<float>(rms[v][r], plan[r].rms, NT), to_host<float>(absmax[v][r], plan[r].tensor_absmax, NT);
                        if (!v) continue;
                        // this rank's results of both ways after each step, bit for bit
                        size_t st = plan[r].state_elems;
                        float *a = zeros_host(n), *b = zeros_host(n);
                        const char *what[6] = {"parameters", "m", "u", "bf16 copy", "RMS", "bf16 maxima"};
                        size_t diff[6] = {};
                        to_host<float>(a, d_p[0][r], n), to_host<float>(b, d_p[1][r], n), diff[0] = count_diff(a, b, n);
                        to_host<float>(a, d_m[0][r], st), to_host<float>(b, d_m[1][r], st), diff[1] = count_diff(a, b, st);
                        to_host<float>(a, d_u[0][r], st), to_host<float>(b, d_u[1][r], st), diff[2] = count_diff(a, b, st);
                        cudaCheck(cudaMemcpy(a, d_b[0][r], n * 2, cudaMemcpyDeviceToHost)), cudaCheck(cudaMemcpy(b, d_b[1][r], n * 2, cudaMemcpyDeviceToHost));
                        diff[3] = count_diff(a, b, n / 2);
                        diff[4] = count_diff(rms[0][r], rms[1][r], NT), diff[5] = count_diff(absmax[0][r], absmax[1][r], NT);
                        for (int q = 0; q < 6; q++)
                            EXPECT(diff[q] == 0, "clip=%d sharded=%d rank %d step %d: %zu %s values of the one-pass step differ from the two phases'",
                                   clip, sharded, r, step, diff[q], what[q]);
                        EXPECT(norm[0][r] == norm[1][r], "clip=%d sharded=%d rank %d step %d: sum of squares %.9g vs %.9g", clip, sharded, r,
                               step, norm[0][r], norm[1][r]);
                        free(a), free(b);
                    }
                }
                for (int r = 0; r < nplans; r++)  // the RMS sums of both ways
                    for (int t = 0; t < NT; t++)
                        EXPECT(sums[0][r][t] == sums[1][r][t], "clip=%d sharded=%d step %d tensor %d: RMS sum %.9g vs %.9g", clip, sharded,
                               step, t, sums[0][r][t], sums[1][r][t]);
                for (int t = 0; t < NT; t++)  // a sum of zero would pass the comparisons above without testing them
                    EXPECT(sums[1][0][t] > 0.0f && rms[1][0][t] > 0.0f, "clip=%d sharded=%d step %d tensor %d: RMS sum %g, RMS %g", clip,
                           sharded, step, t, sums[1][0][t], rms[1][0][t]);
                free(gr);
            }
            printf("  %s, sharded=%d: one pass equals two phases over 3 steps (last norm^2 %.6g)\n", clip ? "StableAdamW" : "AdamW", sharded,
                   norm[1][0]);
            for (int r = 0; r < nplans; r++) {
                adamw_plan_free(&plan[r]);
                for (int v = 0; v < 2; v++)
                    cudaCheck(cudaFree(d_p[v][r])), cudaCheck(cudaFree(d_m[v][r])), cudaCheck(cudaFree(d_u[v][r])), cudaCheck(cudaFree(d_b[v][r]));
            }
            cudaCheck(cudaFree(d_g)), cudaCheck(cudaFree(d_sum));
        }
    free(p0);
}

// The bf16 copies of the gradient sums (grad_reduce = bf16) and of the parameters: fp32 -> bf16 rounds to
// nearest even (the CPU's rounding of the same values), bf16 -> fp32 is exact; an odd length, a tail untouched.
static void test_bf16_copies(void) {
    SKIP_WITHOUT_GPU();
    size_t n = 100003;
    float *x = rand_host(n, 3.0f), *y = (float *)mallocCheck((n + 1) * sizeof(float));
    float *d_x = to_device<float>(x, n), *d_y = poisoned<float>(n + 1);
    bf16 *d_h = poisoned<bf16>(n);
    copy_to_bf16_gpu(d_h, d_x, n);
    copy_to_fp32_gpu(d_y, d_h, n);
    to_host<float>(y, d_y, n + 1);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float want = round_bf16(x[i]);
        bad += memcmp(&y[i], &want, sizeof(float)) != 0;
    }
    EXPECT(bad == 0 && isnan(y[n]), "%zu of %zu values differ from the CPU's bf16 rounding, or the tail was written", bad, n);
    free(x), free(y);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_y)), cudaCheck(cudaFree(d_h));
}

// The gradient zeroing before a step (zero_ranges_gpu): exactly the ranges, of odd lengths and offsets, one of
// several chunks and one of none, are zero; everything else keeps its poison.
static void test_zero_ranges(void) {
    SKIP_WITHOUT_GPU();
    const size_t lo[] = {0, 1, 70, 70003, 300001}, hi[] = {1, 65, 70, 3 * ADAMW_CHUNK + 7, 300002};
    size_t n = 300005;
    ZeroPlan z;
    zero_plan_init(&z, 5, lo, hi);
    float *d = poisoned<float>(n), *h = (float *)mallocCheck(n * sizeof(float));
    zero_ranges_gpu(&z, d);
    to_host<float>(h, d, n);
    size_t bad = 0;
    for (size_t i = 0, r = 0; i < n; i++) {
        while (r < 5 && i >= hi[r]) r++;
        int in = r < 5 && i >= lo[r];
        bad += in ? h[i] != 0.0f || signbit(h[i]) : !isnan(h[i]);
    }
    EXPECT(bad == 0, "%zu of %zu elements wrong (in a range: +0, outside: the NaN poison)", bad, n);
    printf("  %d chunks, %zu elements checked\n", z.num_chunks, n);
    zero_plan_free(&z), free(h);
    cudaCheck(cudaFree(d));
}

int main(void) {
    test_seed();
    RUN(test_adamw);
    RUN(test_stable_adamw);
    RUN(test_fused_step);
    RUN(test_bf16_copies);
    RUN(test_zero_ranges);
    TEST_EXIT();
}
