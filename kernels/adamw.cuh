// adamw.cuh: the fused optimizer step over every tensor of the model at once (AdamW, or the StableAdamW
// hybrid with per-tensor update clipping by RMS = sqrt(mean(g^2 / max(u, eps^2)))), the global gradient
// norm, the fp32 -> bf16 parameter copy, and clamping of one scalar (logit_scale).
// The flat buffers are split into chunks of at most ADAMW_CHUNK elements, each inside one tensor: a first
// kernel updates the moments and writes each chunk's partial RMS sum, a second sums its tensor's partials in
// chunk order and applies the update (writing the bf16 copy too). Reference: adamw_update, optim_step,
// grad_global_norm in optim/adamw.c.
#pragma once
#include "common.cuh"

#define ADAMW_CHUNK 65536

typedef struct {
    int num_tensors, num_chunks;
    int *chunk_tensor;        // (num_chunks) tensor of each chunk
    long *chunk_offset;       // (num_chunks) first element in the flat buffers
    int *chunk_len;           // (num_chunks)
    int *tensor_first_chunk;  // (num_tensors + 1)
    long *tensor_numel;       // (num_tensors)
    float *tensor_wd;         // (num_tensors) weight decay (0 for tensors that take none)
    float *partial;           // (num_chunks) sums of g^2 / max(u, eps^2)
    float *rms;               // (num_tensors) RMS of each tensor at the last step
} AdamWPlan;

// Tensor t spans numel[t] elements from offset[t] of the flat buffers; wd applies where decay[t].
void adamw_plan_init(AdamWPlan *p, int num_tensors, const size_t *offset, const size_t *numel, const int *decay, float wd);
void adamw_plan_free(AdamWPlan *p);
// One step: g = grads * grad_scale; m, u updated; params (and params_bf16 when not NULL) updated;
// p->rms filled. b1t, b2t: the bias-corrected betas of this step (optim_betas). clip: StableAdamW.
void adamw_step_gpu(const AdamWPlan *p, float *params, bf16 *params_bf16, const float *grads, float *m, float *u, float lr,
                float b1t, float b2t, float eps, float grad_scale, int clip);
// *norm (device) = sqrt(sum of squares of g (n)); scratch of GRAD_NORM_BLOCKS floats.
#define GRAD_NORM_BLOCKS 512
void global_norm_gpu(float *norm, const float *g, size_t n, float *scratch);
// dst (n) = bf16(src)
void copy_to_bf16_gpu(bf16 *dst, const float *src, size_t n);
// *x = min(max(*x, lo), hi) on the device
void clamp_scalar_gpu(float *x, float lo, float hi);
