// optim.h: the optimizers (AdamW and the AdamW-Adafactor hybrid "StableAdamW" of Wortsman et al. 2023),
// the learning-rate schedule, global gradient norm and clipping. Per tensor, step t from 1:
//   b1t = b1 (1 - b1^(t-1)) / (1 - b1^t)     b2t = b2 (1 - b2^(t-1)) / (1 - b2^t)   (or 1 - t^-lambda)
//   m = b1t m + (1 - b1t) g                   u = b2t u + (1 - b2t) g^2
//   RMS = sqrt(mean(g^2 / max(u, eps^2)))     lr_t = lr / max(1, RMS)   (stable_adamw only)
//   p = p (1 - lr wd) - lr_t m / (sqrt(u) + eps)      (no decay for tensors with ndim < 2)
// The per-tensor RMS is kept for logging under both optimizers: it is the paper's loss-spike predictor.
#pragma once
#include <stddef.h>

#include "../model/clip.h"
#include "../model/config.h"

typedef struct {
    int kind;  // OPTIMIZER_ADAMW or OPTIMIZER_STABLE_ADAMW
    float wd, beta1, beta2, eps, beta2_warmup_lambda;
    long t;    // steps taken so far
    const ClipLayout *layout;
    float *m, *u;  // first and second moments (layout.buffer_elems)
    float *rms;    // (layout.num_tensors) RMS of each tensor at the last step
} Optimizer;

void optim_init(Optimizer *o, const Config *c, const ClipLayout *L);
void optim_free(Optimizer *o);
// Bias-corrected betas for step t (t >= 1), as in the header comment.
void optim_betas(const Optimizer *o, long t, float *b1t, float *b2t);
// One update of one tensor of n elements; returns its RMS. clip: divide lr by max(1, RMS).
float adamw_update(float *p, const float *g, float *m, float *u, size_t n, float lr, float wd, float b1t, float b2t,
                   float eps, int clip);
// One optimizer step over every tensor of the layout (increments t, fills o->rms).
void optim_step(Optimizer *o, float *params, const float *grads, float lr);

// sqrt(sum of squares) over all gradients (padding between tensors is zero).
float grad_global_norm(const float *grads, size_t n);
// Scale gradients so their global norm is at most max_norm (as torch.nn.utils.clip_grad_norm_).
void grad_clip_(float *grads, size_t n, float norm, float max_norm);

// Learning rate at step (0-based): linear warmup lr * (step + 1) / warmup, then cosine to 0 at
// total_steps (or constant).
float lr_at(const Config *c, long step);
