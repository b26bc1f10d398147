// test_optim.c: AdamW and StableAdamW against steps computed by hand in double precision (written out
// independently of optim/adamw.c), including a step where RMS > 1 clips the update and one where it
// does not; the bias-corrected and warmed-up betas; the schedule; weight-decay exclusion; clipping.
#include "../model/utils.h"
#include "../optim/optim.h"
#include "test.h"

#define CLOSE(a, b, tol) (fabs((double)(a) - (double)(b)) <= (tol) * (1.0 + fabs((double)(b))))

static Config base_config(void) {
    Config c;
    config_defaults(&c);
    c.beta1 = 0.9f, c.beta2 = 0.98f, c.eps = 1e-6f, c.wd = 0.2f;
    return c;
}

// Two steps on a 3-element tensor: g1 small, then g2 much larger, so RMS_2 > 1.
// Step 1: b1t = b2t = 0  =>  m = g, u = g^2, RMS = 1 (no clipping), update = lr g / (|g| + eps).
// g1[2] = 1e-4 makes u = 1e-8 < eps: the RMS floor is eps^2, not eps (which would give RMS 0.82 at step 1).
// Step 2: b1t = 0.9 (1 - 0.9) / (1 - 0.81) = 0.47368, b2t = 0.98 (1 - 0.98) / (1 - 0.9604) = 0.49495.
static void two_steps(int clip, double expect_rms2_gt_one) {
    const double lr = 0.01, wd = 0.2, eps = 1e-6;
    double p[3] = {0.5, -1.0, 2.0}, g1[3] = {0.01, -0.02, 1e-4}, g2[3] = {1.0, 0.5, -2.0};
    float pf[3], gf[3], m[3] = {0}, u[3] = {0};
    for (int i = 0; i < 3; i++) pf[i] = (float)p[i];
    Config c = base_config();
    Optimizer o;
    o.beta1 = c.beta1, o.beta2 = c.beta2, o.beta2_warmup_lambda = 0;
    float b1t, b2t;

    // step 1 by hand
    double mh[3], uh[3];
    for (int i = 0; i < 3; i++) {
        mh[i] = g1[i], uh[i] = g1[i] * g1[i];
        p[i] = p[i] * (1 - lr * wd) - lr * mh[i] / (sqrt(uh[i]) + eps);
    }
    optim_betas(&o, 1, &b1t, &b2t);
    EXPECT(b1t == 0.0f && b2t == 0.0f, "step 1 betas %g %g, want 0 0", b1t, b2t);
    for (int i = 0; i < 3; i++) gf[i] = (float)g1[i];
    float rms1 = adamw_update(pf, gf, m, u, 3, (float)lr, (float)wd, b1t, b2t, (float)eps, clip);
    EXPECT(CLOSE(rms1, 1.0, 1e-5), "step 1 RMS %g, want 1", rms1);
    for (int i = 0; i < 3; i++) EXPECT(CLOSE(pf[i], p[i], 1e-6), "step 1 p[%d] = %.8f, want %.8f", i, pf[i], p[i]);

    // step 2 by hand
    double B1 = 0.9 * (1 - 0.9) / (1 - 0.81), B2 = 0.98 * (1 - 0.98) / (1 - 0.98 * 0.98), ratio = 0;
    optim_betas(&o, 2, &b1t, &b2t);
    EXPECT(CLOSE(b1t, B1, 1e-6) && CLOSE(b2t, B2, 1e-6), "step 2 betas %.7f %.7f, want %.7f %.7f", b1t, b2t, B1, B2);
    for (int i = 0; i < 3; i++) {
        mh[i] = B1 * mh[i] + (1 - B1) * g2[i];
        uh[i] = B2 * uh[i] + (1 - B2) * g2[i] * g2[i];
        ratio += g2[i] * g2[i] / fmax(uh[i], eps * eps);
    }
    double rms2 = sqrt(ratio / 3), lr_t = clip ? lr / fmax(1.0, rms2) : lr;
    EXPECT((rms2 > 1) == (expect_rms2_gt_one > 0), "hand RMS %g on the wrong side of 1", rms2);
    for (int i = 0; i < 3; i++) p[i] = p[i] * (1 - lr * wd) - lr_t * mh[i] / (sqrt(uh[i]) + eps);
    for (int i = 0; i < 3; i++) gf[i] = (float)g2[i];
    float rms2f = adamw_update(pf, gf, m, u, 3, (float)lr, (float)wd, b1t, b2t, (float)eps, clip);
    EXPECT(CLOSE(rms2f, rms2, 1e-5), "step 2 RMS %g, want %g", rms2f, rms2);
    for (int i = 0; i < 3; i++) EXPECT(CLOSE(pf[i], p[i], 1e-6), "step 2 p[%d] = %.8f, want %.8f", i, pf[i], p[i]);
}

static void test_stable_adamw_clips_when_rms_above_one(void) { two_steps(1, 1); }
static void test_adamw_does_not_clip(void) { two_steps(0, 1); }

// A steady gradient keeps u ~ g^2, so RMS stays at 1 or below and the hybrid equals AdamW.
static void test_stable_adamw_equals_adamw_when_rms_below_one(void) {
    float p1[4] = {1, 2, 3, 4}, p2[4] = {1, 2, 3, 4}, g[4] = {0.3f, -0.2f, 0.1f, 0.05f};
    float m1[4] = {0}, u1[4] = {0}, m2[4] = {0}, u2[4] = {0};
    Config c = base_config();
    Optimizer o;
    o.beta1 = c.beta1, o.beta2 = c.beta2, o.beta2_warmup_lambda = 0;
    for (int t = 1; t <= 5; t++) {
        float b1t, b2t;
        optim_betas(&o, t, &b1t, &b2t);
        float r1 = adamw_update(p1, g, m1, u1, 4, 0.01f, 0.1f, b1t, b2t, 1e-6f, 1);
        adamw_update(p2, g, m2, u2, 4, 0.01f, 0.1f, b1t, b2t, 1e-6f, 0);
        EXPECT(r1 <= 1.0f + 1e-5f, "step %d: RMS %g > 1 for a constant gradient", t, r1);
    }
    for (int i = 0; i < 4; i++) EXPECT(p1[i] == p2[i], "p[%d]: hybrid %.8f vs adamw %.8f", i, p1[i], p2[i]);
}

static void test_beta2_warmup(void) {
    Optimizer o;
    o.beta1 = 0.9f, o.beta2 = 0.98f, o.beta2_warmup_lambda = 0.8f;
    float b1t, b2t;
    optim_betas(&o, 10, &b1t, &b2t);
    EXPECT(CLOSE(b2t, 1 - pow(10, -0.8), 1e-6), "beta2 warmup at t=10: %g, want %g", b2t, 1 - pow(10, -0.8));
}

static void test_schedule(void) {
    Config c = base_config();
    c.lr = 1e-3f, c.warmup = 10, c.steps = 110, c.schedule = SCHEDULE_COSINE;
    EXPECT(CLOSE(lr_at(&c, 0), 1e-4, 1e-6), "warmup step 0: %g", lr_at(&c, 0));
    EXPECT(CLOSE(lr_at(&c, 9), 1e-3, 1e-6), "warmup end: %g", lr_at(&c, 9));
    EXPECT(CLOSE(lr_at(&c, 10), 1e-3, 1e-6), "cosine start: %g", lr_at(&c, 10));
    EXPECT(CLOSE(lr_at(&c, 60), 0.5e-3, 1e-6), "cosine midpoint: %g", lr_at(&c, 60));
    EXPECT(CLOSE(lr_at(&c, 85), 0.5e-3 * (1 + cos(M_PI * 0.75)), 1e-6), "cosine 3/4: %g", lr_at(&c, 85));
    EXPECT(lr_at(&c, 109) < 1e-6 && lr_at(&c, 109) > 0, "cosine end: %g", lr_at(&c, 109));
    c.schedule = SCHEDULE_CONST;
    EXPECT(lr_at(&c, 100) == 1e-3f && lr_at(&c, 5) == 6e-4f, "const schedule %g %g", lr_at(&c, 100), lr_at(&c, 5));
}

// With zero gradients only weight decay moves parameters: tensors with ndim >= 2 shrink by (1 - lr wd),
// biases, norms, class embedding and logit_scale stay.
static void test_weight_decay_excludes_ndim_below_two(void) {
    Config c;
    config_load(&c, "configs/tiny.conf");
    ClipLayout L;
    clip_layout_build(&L, &c);
    float *p = mallocCheck(L.buffer_elems * sizeof(float)), *g = callocCheck(L.buffer_elems, sizeof(float));
    clip_init_params(&L, p, 7);
    float *p0 = mallocCheck(L.buffer_elems * sizeof(float));
    memcpy(p0, p, L.buffer_elems * sizeof(float));
    Optimizer o;
    optim_init(&o, &c, &L);
    optim_step(&o, p, g, 0.5f);
    const char *kept[] = {"visual.class_embedding", "visual.ln_pre.weight", "transformer.resblocks.0.attn.in_proj_bias", "logit_scale"};
    const char *decayed[] = {"visual.conv1.weight", "positional_embedding", "token_embedding.weight", "text_projection", "visual.proj"};
    for (int k = 0; k < 4; k++) {
        const ParamTensor *t = &L.tensors[clip_layout_find(&L, kept[k])];
        EXPECT(!t->decay && p[t->offset] == p0[t->offset], "%s was decayed", kept[k]);
    }
    for (int k = 0; k < 5; k++) {
        const ParamTensor *t = &L.tensors[clip_layout_find(&L, decayed[k])];
        EXPECT(t->decay && p[t->offset + 1] == p0[t->offset + 1] * (1 - 0.5f * c.wd), "%s not decayed by (1 - lr wd)", decayed[k]);
    }
    optim_free(&o), free(p), free(p0), free(g);
    clip_layout_free(&L);
}

// optim_step takes beta1, beta2, eps, wd and the clipping from the config (adamw_update's arithmetic is
// checked above): two steps on the tiny layout, a small then a large gradient (RMS > 1 at step 2, so
// the two optimizers differ), equal bit for bit to adamw_update called per tensor with the config's values.
static void optim_step_uses_config(int kind) {
    Config c;
    config_load(&c, "configs/tiny.conf");
    c.optimizer = kind, c.beta1 = 0.8f, c.beta2 = 0.95f, c.eps = 1e-3f, c.wd = 0.1f, c.beta2_warmup_lambda = 0;
    ClipLayout L;
    clip_layout_build(&L, &c);
    size_t n = L.buffer_elems;
    float *p = mallocCheck(n * sizeof(float)), *q = mallocCheck(n * sizeof(float)), *g = callocCheck(n, sizeof(float));
    float *m = callocCheck(n, sizeof(float)), *u = callocCheck(n, sizeof(float));
    clip_init_params(&L, p, 3);
    memcpy(q, p, n * sizeof(float));
    Optimizer o;
    optim_init(&o, &c, &L);
    int clipped = 0;
    for (int t = 1; t <= 2; t++) {
        for (int i = 0; i < L.num_tensors; i++)
            for (size_t j = 0; j < L.tensors[i].numel; j++) g[L.tensors[i].offset + j] = (float)((t == 1 ? 1e-3 : 1.0) * sin(1.0 + j + 7.0 * i));
        optim_step(&o, p, g, 0.05f);
        double b1 = 0.8f, b2 = 0.95f;  // the config's floats
        float b1t = (float)(b1 * (1 - pow(b1, t - 1)) / (1 - pow(b1, t))), b2t = (float)(b2 * (1 - pow(b2, t - 1)) / (1 - pow(b2, t)));
        for (int i = 0; i < L.num_tensors; i++) {
            const ParamTensor *T = &L.tensors[i];
            size_t off = T->offset;
            float rms = adamw_update(q + off, g + off, m + off, u + off, T->numel, 0.05f, T->decay ? 0.1f : 0.0f, b1t, b2t, 1e-3f,
                                     kind == OPTIMIZER_STABLE_ADAMW);
            EXPECT(o.rms[i] == rms, "%s step %d: RMS %g, want %g", T->name, t, o.rms[i], rms);
            clipped += t == 2 && rms > 1.01f;
        }
        EXPECT(memcmp(p, q, n * sizeof(float)) == 0, "%s step %d: parameters differ from adamw_update with the config's values",
               kind == OPTIMIZER_STABLE_ADAMW ? "stable_adamw" : "adamw", t);
    }
    EXPECT(clipped > 0, "no tensor had RMS > 1 at step 2: the test cannot tell the optimizers apart");
    optim_free(&o), free(p), free(q), free(g), free(m), free(u);
    clip_layout_free(&L);
}

static void test_optim_step_uses_config_stable_adamw(void) { optim_step_uses_config(OPTIMIZER_STABLE_ADAMW); }
static void test_optim_step_uses_config_adamw(void) { optim_step_uses_config(OPTIMIZER_ADAMW); }

static void test_grad_norm_and_clipping(void) {
    size_t n = 100003;
    float *g = mallocCheck(n * sizeof(float));
    double ss = 0;
    for (size_t i = 0; i < n; i++) g[i] = (float)sin((double)i), ss += (double)g[i] * g[i];
    float norm = grad_global_norm(g, n);
    EXPECT(CLOSE(norm, sqrt(ss), 1e-6), "norm %g, want %g", norm, sqrt(ss));
    grad_clip_(g, n, norm, 1.0f);
    EXPECT(CLOSE(grad_global_norm(g, n), 1.0, 1e-5), "clipped norm %g", grad_global_norm(g, n));
    grad_clip_(g, n, 1.0f, 10.0f);  // below the threshold: untouched
    EXPECT(CLOSE(grad_global_norm(g, n), 1.0, 1e-5), "norm changed below threshold");
    free(g);
}

int main(void) {
    RUN(test_stable_adamw_clips_when_rms_above_one);
    RUN(test_adamw_does_not_clip);
    RUN(test_stable_adamw_equals_adamw_when_rms_below_one);
    RUN(test_beta2_warmup);
    RUN(test_schedule);
    RUN(test_weight_decay_excludes_ndim_below_two);
    RUN(test_optim_step_uses_config_stable_adamw);
    RUN(test_optim_step_uses_config_adamw);
    RUN(test_grad_norm_and_clipping);
    TEST_EXIT();
}
