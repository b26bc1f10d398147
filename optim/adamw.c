// adamw.c: AdamW and the AdamW-Adafactor hybrid (update clipping by per-tensor RMS) on the CPU, and
// the global gradient norm. The GPU versions are tested against adamw_update.
#include <math.h>
#include <string.h>

#include "../model/utils.h"
#include "optim.h"

void optim_init(Optimizer *o, const Config *c, const ClipLayout *L) {
    memset(o, 0, sizeof(*o));
    o->kind = c->optimizer;
    o->wd = c->wd, o->beta1 = c->beta1, o->beta2 = c->beta2, o->eps = c->eps;
    o->beta2_warmup_lambda = c->beta2_warmup_lambda;
    o->layout = L;
    o->m = callocCheck(L->buffer_elems, sizeof(float));
    o->u = callocCheck(L->buffer_elems, sizeof(float));
    o->rms = callocCheck((size_t)L->num_tensors, sizeof(float));
}

void optim_free(Optimizer *o) { free(o->m), free(o->u), free(o->rms); }

void optim_betas(const Optimizer *o, long t, float *b1t, float *b2t) {
    double b1 = o->beta1, b2 = o->beta2;
    *b1t = (float)(b1 * (1.0 - pow(b1, (double)(t - 1))) / (1.0 - pow(b1, (double)t)));
    if (o->beta2_warmup_lambda > 0) *b2t = (float)(1.0 - pow((double)t, -(double)o->beta2_warmup_lambda));
    else *b2t = (float)(b2 * (1.0 - pow(b2, (double)(t - 1))) / (1.0 - pow(b2, (double)t)));
}

float adamw_update(float *p, const float *g, float *m, float *u, size_t n, float lr, float wd, float b1t, float b2t,
                   float eps, int clip) {
    double ratio = 0;  // sum of g^2 / max(u, eps^2) with the updated u
    for (size_t i = 0; i < n; i++) {
        m[i] = b1t * m[i] + (1.0f - b1t) * g[i];
        u[i] = b2t * u[i] + (1.0f - b2t) * g[i] * g[i];
        ratio += (double)g[i] * g[i] / fmax((double)u[i], (double)eps * eps);
    }
    float rms = n ? (float)sqrt(ratio / (double)n) : 0.0f;
    float lr_t = clip ? lr / fmaxf(1.0f, rms) : lr;
    for (size_t i = 0; i < n; i++) p[i] = p[i] * (1.0f - lr * wd) - lr_t * m[i] / (sqrtf(u[i]) + eps);
    return rms;
}

void optim_step(Optimizer *o, float *params, const float *grads, float lr) {
    const ClipLayout *L = o->layout;
    o->t++;
    float b1t, b2t;
    optim_betas(o, o->t, &b1t, &b2t);
    int clip = o->kind == OPTIMIZER_STABLE_ADAMW;
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < L->num_tensors; i++) {
        const ParamTensor *t = &L->tensors[i];
        size_t off = t->offset;
        o->rms[i] = adamw_update(params + off, grads + off, o->m + off, o->u + off, t->numel, lr, t->decay ? o->wd : 0.0f,
                                 b1t, b2t, o->eps, clip);
    }
}

float grad_global_norm(const float *grads, size_t n) {
    // fixed chunks summed in order: the same bits whatever the thread count (resume is bit-exact)
    enum { CHUNKS = 256 };
    double part[CHUNKS], ss = 0;
    size_t chunk = (n + CHUNKS - 1) / CHUNKS;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < CHUNKS; c++) {
        double s = 0;
        for (size_t i = (size_t)c * chunk; i < n && i < (size_t)(c + 1) * chunk; i++) s += (double)grads[i] * grads[i];
        part[c] = s;
    }
    for (int c = 0; c < CHUNKS; c++) ss += part[c];
    return (float)sqrt(ss);
}

void grad_clip_(float *grads, size_t n, float norm, float max_norm) {
    float coef = max_norm / (norm + 1e-6f);
    if (coef >= 1.0f) return;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) grads[i] *= coef;
}
