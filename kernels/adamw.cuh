// adamw.cuh: the fused optimizer step over every tensor of the model at once (AdamW, or the StableAdamW
// hybrid with per-tensor update clipping by RMS = sqrt(mean(g^2 / max(u, eps^2)))), the sum of squares of the
// gradients (for the global norm), the fp32 -> bf16 parameter copy, clamping of one scalar (logit_scale), and the
// zeroing of the gradients that the backward adds into before each step.
// A plan covers the elements this process updates: all of them, or with ZeRO-1 its shard, given as segments
// of the flat buffers. They are split into chunks of at most ADAMW_CHUNK elements, each inside one tensor.
// StableAdamW needs each tensor's sum of g^2 / max(u', eps^2) (u' the updated second moment; in chunk order) before any
// parameter moves (plain AdamW only reports the RMS), and the host needs the gradient norm before the step (to skip a
// non-finite one, or to clip):
//  - unscaled gradients (no global-norm clipping), StableAdamW: adamw_grad_stats_gpu reads g and u once for the norm
//    and the RMS sums (writing nothing), then adamw_step_gpu updates moments and parameters in one pass: 8 + 30
//    bytes a parameter;
//  - unscaled gradients, AdamW: adamw_grad_stats_gpu for the norm (g only), then adamw_step_gpu, which also makes
//    the RMS sums, and adamw_rms_gpu: 4 + 30 bytes;
//  - scaled gradients: adamw_grad_stats_gpu for the norm (4 bytes), adamw_moments_gpu (moments and RMS sums from
//    the scaled g, 20 bytes), adamw_apply_gpu (parameters, 18 bytes).
// All give the same bits for an unscaled step. A sharded run sums the RMS partial sums over processes before the
// parameter pass (StableAdamW) or before adamw_rms_gpu (AdamW's one pass).
// Parameters and gradients are indexed by flat offset; the moments by the plan's compact state offset (equal
// to the flat offset when the plan covers everything). Reference: adamw_update, optim_step, grad_global_norm
// in optim/adamw.c.
#pragma once
#include "common.cuh"

#define ADAMW_CHUNK 65536

typedef struct {
    int num_tensors, num_chunks;
    size_t state_elems;       // moments this plan needs (the sum of the segment lengths)
    int *chunk_tensor;        // (num_chunks) tensor of each chunk
    long *chunk_offset;       // (num_chunks) first element in the flat buffers
    long *chunk_state;        // (num_chunks) first element in the moments
    int *chunk_len;           // (num_chunks)
    int *tensor_first_chunk;  // (num_tensors + 1)
    long *tensor_numel;       // (num_tensors) whole tensors, shards or not
    float *tensor_wd;         // (num_tensors) weight decay (0 for tensors that take none)
    float *partial;           // (num_chunks) sums of g^2 / max(u', eps^2)
    float *partial_sq;        // (num_chunks) sums of g^2
    float *tensor_sum;        // (num_tensors) per-tensor sums of partial (over all processes before apply)
    float *rms;               // (num_tensors) RMS of each tensor at the last step
    float *chunk_absmax;      // (num_chunks) max |bf16 parameter| per chunk at the last step (with a bf16 copy)
    float *tensor_absmax;     // (num_tensors) the same per tensor (of the elements this plan covers)
} AdamWPlan;

// Tensor t spans numel[t] elements from offset[t] of the flat buffers; wd applies where decay[t]. The plan
// covers the elements of the segments [seg_lo[s], seg_hi[s]) (ascending, disjoint; their moments stored one
// after another in that order), or every tensor when num_segments is 0.
void adamw_plan_init(AdamWPlan *p, int num_tensors, const size_t *offset, const size_t *numel, const int *decay, float wd,
                     int num_segments, const size_t *seg_lo, const size_t *seg_hi);
void adamw_plan_free(AdamWPlan *p);
// *norm_sq (device) = sum of g^2 over the plan's elements; with u (not NULL) also p->tensor_sum = the plan's sums of
// g^2 / max(u', eps^2) per tensor, u' = b2t u + (1 - b2t) g^2 the second moment that this step will write (u read only).
// b2t: the bias-corrected beta2 of that step (optim_betas).
void adamw_grad_stats_gpu(const AdamWPlan *p, float *norm_sq, const float *grads, const float *u, float b2t, float eps);
// The unscaled step: m, u updated, params (and params_bf16 when not NULL, with p->tensor_absmax as adamw_apply_gpu)
// updated. clip (StableAdamW): from p->tensor_sum of adamw_grad_stats_gpu with u (over all processes), p->rms filled.
// No clip (AdamW): this pass makes p->tensor_sum (this plan's, as adamw_moments_gpu); p->rms from adamw_rms_gpu after.
void adamw_step_gpu(const AdamWPlan *p, const float *grads, float *m, float *u, float *params, bf16 *params_bf16, float b1t, float b2t,
                    float lr, float eps, int clip);
// The scaled step, phase 1: g = grads * grad_scale; m, u updated; p->tensor_sum = this plan's sums of
// g^2 / max(u, eps^2) per tensor. b1t, b2t: the bias-corrected betas of this step (optim_betas).
void adamw_moments_gpu(const AdamWPlan *p, const float *grads, float *m, float *u, float b1t, float b2t, float eps, float grad_scale);
// p->rms = sqrt(p->tensor_sum / numel) per tensor.
void adamw_rms_gpu(const AdamWPlan *p);
// Phase 2, from p->tensor_sum: p->rms filled; params (and params_bf16 when not NULL) updated. clip: StableAdamW.
// With params_bf16, also p->tensor_absmax = max |new bf16 value| of each tensor's elements in the plan (exact: what
// SwitchBack's weight quantizer needs, so it skips its own pass for the maxima).
void adamw_apply_gpu(const AdamWPlan *p, float *params, bf16 *params_bf16, const float *m, const float *u, float lr, float eps, int clip);
// dst (n) = bf16(src), on `stream`
void copy_to_bf16_gpu(bf16 *dst, const float *src, size_t n, cudaStream_t stream = 0);
// dst (n) = fp32(src), on `stream` (the bf16 gradient sums of grad_reduce = bf16 back into the fp32 gradients)
void copy_to_fp32_gpu(float *dst, const bf16 *src, size_t n, cudaStream_t stream = 0);
// The parts of the gradient buffer that a step zeroes before its backward: the ranges [lo[i], hi[i]) (ascending,
// disjoint) of the gradients the backward adds into, while the weight-gradient GEMMs overwrite theirs. Chunks of at
// most ADAMW_CHUNK elements, zeroed in one launch.
typedef struct {
    int num_chunks;
    long *chunk_offset;  // (num_chunks)
    int *chunk_len;      // (num_chunks)
} ZeroPlan;
void zero_plan_init(ZeroPlan *z, int num_ranges, const size_t *lo, const size_t *hi);
void zero_plan_free(ZeroPlan *z);
void zero_ranges_gpu(const ZeroPlan *z, float *buf);
// *x = min(max(*x, lo), hi) on the device
void clamp_scalar_gpu(float *x, float lo, float hi);
