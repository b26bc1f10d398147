// clip_gpu.h: the CLIP training step on one GPU (C interface; implementation in clip_gpu.cu).
// precision fp32: every activation and GEMM in fp32 (parity with the CPU reference). precision bf16: bf16
// weights (a copy written by the optimizer) and activations, fp32 master weights, gradients, optimizer
// moments, LayerNorm/softmax/loss arithmetic and all reductions. The pooled features, final projections
// and the contrastive loss are fp32 in both modes. precision int8_switchback: bf16 with the transformer
// linears through SwitchBack (int8 forward and input gradient; docs/switchback.md).
//
// Gradient accumulation: a batch larger than micro_batch_size runs in micro-batches, and the contrastive
// loss is still over the whole batch, exactly: first every micro-batch is run forward (features only kept),
// the loss and d(features) of the full batch are computed once, then each micro-batch is run forward again
// with its activations and backward from its slice of d(features), accumulating parameter gradients. This
// is open_clip's --accum-freq (two forward passes and one backward per sample) with the loss computed once;
// the last micro-batch's first forward is reused, so K micro-batches cost 2K-1 forwards.
//
// Multi-GPU (config world_size > 1, after gpu_dist_init of clip_dist.h): each rank passes its batch_size /
// world_size pairs (micro_batch_size is per rank). The loss is over the global batch (features all-gathered,
// each rank computes its rows of the global logits; open_clip's local loss with gather-with-grad), and the
// gradients are summed over the ranks while backward runs, bucket by bucket on their own stream, so they equal
// those of one process holding the whole batch. The loss returned is the global one on every rank. With
// zero = 1 (ZeRO-1) each rank keeps and updates only its part of each bucket's moments, and the parameters are
// all-gathered after the update; RMS and the gradient norm are still over whole tensors. Every rank makes the
// same calls in the same order (forward_backward, grad_norm, update, upload, download are collective).
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "../data/loader.h"
#include "../optim/optim.h"
#include "clip.h"
#include "config.h"

typedef struct ClipGPU ClipGPU;

// Bytes the GPU path needs, by kind, for one micro-batch size (nothing is allocated).
typedef struct {
    size_t weights;      // fp32 master weights, the bf16 copy, int8_switchback's int8 copies
    size_t grads;        // fp32 gradients
    size_t optimizer;    // fp32 moments and the optimizer's tables
    size_t activations;  // saved for backward, per micro-batch
    size_t other;        // scratch, inputs, features and loss of the whole batch, cuBLASLt workspace
    size_t total;
} GpuMemoryPlan;

// Dense bf16 tensor-core peak of the current GPU in FLOP/s (for MFU; 0 when not known) and the device
// memory in use now, in bytes.
double clip_gpu_peak_flops(void);
// gemm_tuning's choices (matmul_tuning_load/save): save = 0 reads path (returns as matmul_tuning_load), 1 writes it
// (returns 0, or -2 after a warning on stderr: a failed write does not stop the run).
int clip_gpu_gemm_choices(const char *path, int save);
size_t clip_gpu_memory_used(void);
// Why the GPU cannot be used ("" when it can): no device, driver older than the toolkit, ...
const char *clip_gpu_unavailable(void);
// "" if this build has code for the current GPU, else why not (with the make command that builds it). Loads a module on
// the current device: call it once the process's GPU is chosen.
const char *clip_gpu_unsupported(void);
GpuMemoryPlan clip_gpu_memory_plan(const Config *c, const ClipLayout *L, int micro_batch, int recompute);
// The most blocks per tower (recompute_keep, from c's up) whose activations c's plan at micro-batch mb (with c's
// recompute) keeps within `avail` bytes; below c's own keep if that does not fit.
int clip_gpu_largest_keep(const Config *c, const ClipLayout *L, int mb, size_t avail);
// Prints the plan for the config's micro-batch, the GPU's free memory, the largest micro-batch that fits (per
// recompute level), and under recompute >= 1 the largest recompute_keep that fits. Returns 1 if the configured
// micro-batch fits.
int clip_gpu_print_memory_plan(const Config *c, const ClipLayout *L);
// Micro-batch size of a config (per rank): micro_batch_size, or batch_size / world_size when it is 0.
int clip_gpu_micro_batch(const Config *c);

// Allocates everything (after checking the plan fits) and uploads params (L->buffer_elems floats).
// L must outlive the model.
ClipGPU *clip_gpu_create(const Config *c, const ClipLayout *L, const float *params);
void clip_gpu_free(ClipGPU *g);
// Runs forward and backward over the whole batch (micro-batched as above), leaves the batch's gradients on the GPU
// (written anew: nothing of an earlier step remains) and returns the loss.
float clip_gpu_forward_backward(ClipGPU *g, const Batch *batch);
// Global L2 norm of the gradients. With o (the optimizer of the next clip_gpu_update) and no global-norm clipping
// configured, the same pass also sums what that step's RMS needs, and the step becomes one pass (kernels/adamw.cuh).
float clip_gpu_grad_norm(ClipGPU *g, const Optimizer *o);
// One optimizer step (o->t is incremented, o->rms filled; o->m/u stay on the host untouched), gradients
// scaled by grad_scale first (global-norm clipping), then logit_scale clamped to [0, ln 100].
void clip_gpu_update(ClipGPU *g, Optimizer *o, float lr, float grad_scale);
// logit_scale after the last update (no GPU round trip).
float clip_gpu_logit_scale(const ClipGPU *g);
// Copies to the host: params (buffer_elems) and, when not NULL, the moments into o->m/u and grads (the
// gradients are gone afterwards under ZeRO-1, where this gathers the ranks' parts).
void clip_gpu_download(ClipGPU *g, float *params, Optimizer *o, float *grads);
// Uploads params (and the moments o->m/u when o is not NULL), e.g. after a resume; multi-GPU: rank 0's.
void clip_gpu_upload(ClipGPU *g, const float *params, const Optimizer *o);
// Forward only (evaluation): the features (b->size, embed_dim) of the images and/or the captions of a batch;
// a NULL output skips that tower (and its input may be NULL).
void clip_gpu_encode(ClipGPU *g, const Batch *b, float *image_features, float *text_features);
// Features of the last forward_backward, (batch, embed_dim) each.
void clip_gpu_features(ClipGPU *g, float *image_features, float *text_features);

// Step-time split by op family (benchmarks): events between ops while profiling is on. PROF_COMM is the time
// the compute stream waits for collectives: communication not hidden by compute.
enum {
    PROF_GEMM, PROF_ATTENTION, PROF_ATTENTION_BACKWARD, PROF_LAYERNORM, PROF_LAYERNORM_BACKWARD, PROF_GELU,
    PROF_PARAM_GRADS, PROF_EMBED_OTHER, PROF_LOSS, PROF_OPTIMIZER, PROF_INPUT, PROF_COMM, PROF_FAMILIES
};
extern const char *const PROF_NAMES[PROF_FAMILIES];
void clip_gpu_profile(ClipGPU *g, int on);
// Milliseconds per family since profiling was switched on (synchronises).
void clip_gpu_profile_read(ClipGPU *g, double ms[PROF_FAMILIES]);

#ifdef __cplusplus
}
#endif
