// test_gradcheck.c: finite differences against the analytic backward of the CPU model, on a very small
// config, with and without layer-scale, GELU and QuickGELU. For each parameter tensor, along the unit
// direction v = g/||g|| (the largest signal) and along a random unit direction, the central difference
// (L(p + h v) - L(p - h v)) / 2h must match g . v, with h = 1% of the tensor's RMS in [1e-3, 1e-2].
// The loss is fp32, so the bound is loose: relative 2e-2 plus an absolute 1e-3 (the rounding of L,
// about 2e-7, over 2h >= 2e-3 gives ~1e-4).
#include "../model/clip_cpu.h"
#include "../model/rng.h"
#include "../model/utils.h"
#include "test.h"

static void small_config(Config *c, int quick_gelu, const char *layer_scale) {
    config_defaults(c);
    const char *lines[] = {"embed_dim=6", "image_size=8", "patch_size=4", "vision_width=8", "vision_layers=2", "vision_heads=2",
                           "context_length=7", "vocab_size=30", "text_width=8", "text_layers=2", "text_heads=2", "batch_size=3", "steps=1"};
    for (int i = 0; i < (int)(sizeof(lines) / sizeof(lines[0])); i++) config_set(c, lines[i], i);
    char buf[64];
    snprintf(buf, sizeof(buf), "quick_gelu=%d", quick_gelu), config_set(c, buf, 90);
    snprintf(buf, sizeof(buf), "layer_scale_init=%s", layer_scale), config_set(c, buf, 91);
    config_finalize(c);
}

static void gradcheck(int quick_gelu, const char *layer_scale, uint64_t seed) {
    Config c;
    small_config(&c, quick_gelu, layer_scale);
    c.seed = seed;
    int B = 3, S = c.image_size;
    ClipCPU m;
    clip_cpu_init(&m, &c, B);
    Rng r;
    rng_init(&r, seed, RNG_TEST, 0);
    // perturb 1-d parameters so biases are not zero and norms not one
    for (int i = 0; i < m.layout.num_tensors; i++) {
        const ParamTensor *t = &m.layout.tensors[i];
        if (t->ndim <= 1 && strcmp(t->name, "logit_scale"))
            for (size_t j = 0; j < t->numel; j++) m.params[t->offset + j] += 0.2f * (float)rng_normal(&r);
    }
    float *images = mallocCheck((size_t)B * 3 * S * S * sizeof(float));
    for (int i = 0; i < B * 3 * S * S; i++) images[i] = (float)rng_normal(&r);
    int32_t tokens[3 * 7] = {28, 5, 9, 29, 0, 0, 0, 28, 3, 29, 0, 0, 0, 0, 28, 1, 2, 3, 4, 7, 29};
    clip_cpu_forward(&m, images, tokens, B);
    clip_cpu_backward(&m);
    float *g = mallocCheck(m.layout.buffer_elems * sizeof(float)), *v = mallocCheck(m.layout.buffer_elems * sizeof(float));
    memcpy(g, m.grads, m.layout.buffer_elems * sizeof(float));
    int checked = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.layout.num_tensors; i++) {
        const ParamTensor *t = &m.layout.tensors[i];
        for (int dir = 0; dir < 2; dir++) {
            double nv = 0, an = 0;
            for (size_t j = 0; j < t->numel; j++) v[j] = dir == 0 ? g[t->offset + j] : (float)rng_normal(&r), nv += (double)v[j] * v[j];
            if (nv == 0) continue;
            for (size_t j = 0; j < t->numel; j++) v[j] = (float)(v[j] / sqrt(nv)), an += (double)v[j] * g[t->offset + j];
            // a step of 1% of the tensor's RMS: small embeddings (std 0.02) feed a LayerNorm, where an
            // absolute 1e-2 step would leave the linear regime
            float *p = m.params + t->offset;
            double ss = 0;
            for (size_t j = 0; j < t->numel; j++) ss += (double)p[j] * p[j];
            float h = (float)fmin(1e-2, fmax(1e-3, 1e-2 * sqrt(ss / t->numel)));
            for (size_t j = 0; j < t->numel; j++) p[j] += h * v[j];
            double lp = clip_cpu_forward(&m, images, tokens, B);
            for (size_t j = 0; j < t->numel; j++) p[j] -= 2 * h * v[j];
            double lm = clip_cpu_forward(&m, images, tokens, B);
            for (size_t j = 0; j < t->numel; j++) p[j] += h * v[j];
            double fd = (lp - lm) / (2 * h), diff = fabs(fd - an);
            EXPECT(diff <= 2e-2 * fabs(an) + 1e-3, "%s dir %d: finite difference %.6g vs analytic %.6g", t->name, dir, fd, an);
            if (diff / (fabs(an) + 1e-3) > worst) worst = diff / (fabs(an) + 1e-3), worst_name = t->name;
            checked++;
        }
    }
    printf("  quick_gelu=%d layer_scale=%s: %d directional derivatives, worst relative difference %.1e (%s)\n", quick_gelu,
           layer_scale, checked, worst, worst_name);
    free(images), free(g), free(v);
    clip_cpu_free(&m);
}

static void test_gradcheck_gelu(void) { gradcheck(0, "none", 11); }
static void test_gradcheck_quickgelu_layer_scale(void) { gradcheck(1, "0.7", 12); }

int main(void) {
    RUN(test_gradcheck_gelu);
    RUN(test_gradcheck_quickgelu_layer_scale);
    TEST_EXIT();
}
