// clip_model.h: the model on whichever device runs the training step -- the fp32 CPU reference
// (clip_cpu.h) or the GPU (clip_gpu.h) -- behind one set of calls, so the trainer's loop is the same for both.
// The host copy of the parameters (cpu.params) always exists: init, checkpoints and resume go through it.
#pragma once
#include "../data/loader.h"
#include "../optim/optim.h"
#include "clip_cpu.h"
#include "config.h"

typedef struct ClipGPU ClipGPU;

typedef struct {
    int device;     // DEVICE_CPU or DEVICE_CUDA
    ClipCPU cpu;    // host parameters; on the CPU path also the activations
    ClipGPU *gpu;   // NULL on the CPU path
    float *images;  // CPU path: the normalised batch (B, 3, S, S)
} ClipModel;

// The device a config runs on (device = auto: the GPU when this build has CUDA and one is usable).
// Returns NULL, or why the config cannot run here (no GPU for device = cuda, a precision the device lacks).
const char *clip_model_check(const Config *c, int *device);
// Prints the memory plan for that device.
void clip_model_print_memory_plan(const Config *c, const ClipLayout *L, int device);
// Builds the model for c (parameters initialised from c->seed) on the device clip_model_check chose.
void clip_model_init(ClipModel *m, const Config *c, int device);
void clip_model_free(ClipModel *m);
// Forward + backward of the batch (gradients kept on the device); returns the loss.
float clip_model_forward_backward(ClipModel *m, const Batch *b);
// The global gradient norm; on the GPU with o, its pass also prepares o's next step (clip_gpu_grad_norm).
float clip_model_grad_norm(ClipModel *m, const Optimizer *o);
// Global-norm clipping (when c->grad_clip > 0, given the norm), the optimizer step, the logit_scale clamp.
void clip_model_update(ClipModel *m, Optimizer *o, float lr, float grad_norm);
float clip_model_logit_scale(const ClipModel *m);
// For the progress line: the device's dense bf16 peak in FLOP/s (0 on the CPU or an unknown GPU) and the
// GPU memory in use in bytes (0 on the CPU).
double clip_model_peak_flops(const ClipModel *m);
size_t clip_model_memory_used(const ClipModel *m);
// GPU with gemm_tuning > 1: the GEMM algorithms chosen so far, written to (save) or read from
// run_dir/gemm_choices.rank<rank>.txt, so that a resumed run makes the same choices (bit-exact resume).
void clip_model_gemm_choices(const ClipModel *m, const Config *c, int rank, int save);
// Forward only (evaluation): raw features (n, embed_dim) of n <= batch_size images (uint8, as in a Batch)
// or token rows (n, context_length).
void clip_model_encode_images(ClipModel *m, const uint8_t *images, int n, float *features);
void clip_model_encode_texts(ClipModel *m, const int32_t *tokens, int n, float *features);
// Parameters and optimizer moments to the host (before a checkpoint) and back (after a resume).
void clip_model_to_host(ClipModel *m, Optimizer *o);
void clip_model_to_device(ClipModel *m, const Optimizer *o);
