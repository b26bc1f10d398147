// test_loss.c: the contrastive loss. (1) Against a direct double-precision evaluation of open_clip's
// formula on fresh random features: loss and gradients within 1e-5 relative. (2) Split over 4 "ranks"
// (each computing its rows of the global logits, as multi-GPU training does) the summed loss and
// gradients equal the single-process ones within 1e-6 relative.
#include <time.h>

#include "../model/ops_cpu.h"
#include "../model/rng.h"
#include "../model/utils.h"
#include "test.h"

enum { N = 24, E = 16 };

static void random_features(float *x, size_t n, Rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(r);
}

// loss as open_clip computes it, in double, for the numerical gradient of one scalar input
static double loss_direct(const float *img, const float *txt, double ls) {
    double in[N][E], tn[N][E], loss = 0;
    for (int b = 0; b < N; b++) {
        double a = 0, t = 0;
        for (int k = 0; k < E; k++) a += (double)img[b * E + k] * img[b * E + k], t += (double)txt[b * E + k] * txt[b * E + k];
        for (int k = 0; k < E; k++) in[b][k] = img[b * E + k] / sqrt(a), tn[b][k] = txt[b * E + k] / sqrt(t);
    }
    for (int dir = 0; dir < 2; dir++)
        for (int i = 0; i < N; i++) {
            double l[N], mx = -1e300, sum = 0;
            for (int j = 0; j < N; j++) {
                double d = 0;
                for (int k = 0; k < E; k++) d += dir == 0 ? in[i][k] * tn[j][k] : tn[i][k] * in[j][k];
                l[j] = exp(ls) * d, mx = fmax(mx, l[j]);
            }
            for (int j = 0; j < N; j++) sum += exp(l[j] - mx);
            loss += (log(sum) + mx - l[i]) / (2.0 * N);
        }
    return loss;
}

static void test_loss_matches_direct_formula(void) {
    Rng r;
    rng_init(&r, (uint64_t)time(NULL), RNG_TEST, 1);
    float img[N * E], txt[N * E], dimg[N * E], dtxt[N * E], dls;
    random_features(img, N * E, &r), random_features(txt, N * E, &r);
    float ls = 2.3f;
    float loss = contrastive_loss(img, txt, ls, N, E, dimg, dtxt, &dls);
    double ref = loss_direct(img, txt, ls);
    EXPECT(fabs(loss - ref) <= 1e-5 * ref, "loss %.8f vs direct %.8f", loss, ref);
    // central differences in double on a few inputs and on logit_scale
    double h = 1e-3;
    double dref = (loss_direct(img, txt, ls + h) - loss_direct(img, txt, ls - h)) / (2 * h);
    EXPECT(fabs(dls - dref) <= 1e-4 * (fabs(dref) + 1e-3), "d logit_scale %.8f vs %.8f", dls, dref);
    for (int t = 0; t < 6; t++) {
        int k = (int)rng_below(&r, N * E);
        float *x = t % 2 ? txt : img, *dx = t % 2 ? dtxt : dimg, save = x[k];
        x[k] = save + (float)h;
        double lp = loss_direct(img, txt, ls);
        x[k] = save - (float)h;
        double lm = loss_direct(img, txt, ls);
        x[k] = save;
        double fd = (lp - lm) / (2 * h);
        EXPECT(fabs(dx[k] - fd) <= 1e-3 * fabs(fd) + 1e-6, "%s[%d]: %.8f vs numerical %.8f", t % 2 ? "dtxt" : "dimg", k, dx[k], fd);
    }
}

static void test_rows_split_over_ranks_sum_to_global(void) {
    Rng r;
    rng_init(&r, (uint64_t)time(NULL), RNG_TEST, 2);
    float img[N * E], txt[N * E], in[N * E], tn[N * E], inv[N];
    random_features(img, N * E, &r), random_features(txt, N * E, &r);
    l2_normalize_forward(in, inv, img, N, E);
    l2_normalize_forward(tn, inv, txt, N, E);
    float g_img[N * E] = {0}, g_txt[N * E] = {0}, s_img[N * E] = {0}, s_txt[N * E] = {0}, g_ls = 0, s_ls = 0;
    double global = contrastive_loss_rows(in, tn, 1.7f, N, E, 0, N, g_img, g_txt, &g_ls), sum = 0;
    for (int rank = 0; rank < 4; rank++) {
        // each rank's gradients w.r.t. all features; adding them is the reduce-scatter + sum
        float p_img[N * E] = {0}, p_txt[N * E] = {0}, p_ls = 0;
        sum += contrastive_loss_rows(in, tn, 1.7f, N, E, rank * (N / 4), N / 4, p_img, p_txt, &p_ls);
        for (int k = 0; k < N * E; k++) s_img[k] += p_img[k], s_txt[k] += p_txt[k];
        s_ls += p_ls;
    }
    EXPECT(fabs(sum - global) <= 1e-12 * global, "loss: ranks %.12f vs global %.12f", sum, global);
    EXPECT(rel_err(s_img, g_img, N * E) < 1e-6, "image gradients: rel err %.2e", rel_err(s_img, g_img, N * E));
    EXPECT(rel_err(s_txt, g_txt, N * E) < 1e-6, "text gradients: rel err %.2e", rel_err(s_txt, g_txt, N * E));
    EXPECT(fabs(s_ls - g_ls) <= 1e-5 * fabs(g_ls), "logit_scale gradient %.8f vs %.8f", s_ls, g_ls);
}

// The loss sees only directions: features scaled by 1e-4 or 1e4 give the same loss (L2 normalisation divides
// by the norm itself, F.normalize's 1e-12 floor aside), within 1e-6 relative.
static void test_loss_is_scale_invariant(void) {
    Rng r;
    rng_init(&r, (uint64_t)time(NULL), RNG_TEST, 3);
    float img[N * E], txt[N * E], si[N * E], st[N * E];
    random_features(img, N * E, &r), random_features(txt, N * E, &r);
    float ref = contrastive_loss(img, txt, 2.3f, N, E, NULL, NULL, NULL);
    for (int k = 0; k < 2; k++) {
        float scale = k ? 1e4f : 1e-4f;
        for (int i = 0; i < N * E; i++) si[i] = img[i] * scale, st[i] = txt[i] / scale;
        float loss = contrastive_loss(si, st, 2.3f, N, E, NULL, NULL, NULL);
        EXPECT(fabsf(loss - ref) <= 1e-6f * ref, "images x %g, texts / %g: loss %.8f vs %.8f", scale, scale, loss, ref);
    }
}

int main(void) {
    RUN(test_loss_matches_direct_formula);
    RUN(test_rows_split_over_ranks_sum_to_global);
    RUN(test_loss_is_scale_invariant);
    TEST_EXIT();
}
