// loss.cuh: the CLIP contrastive loss, fp32: features L2-normalised, logits = exp(logit_scale) img @ txt^T,
// loss = (CE(logits, arange) + CE(logits^T, arange)) / 2, and its gradients w.r.t. both feature sets and
// logit_scale. In three phases so that a multi-GPU step can exchange features between them (model/clip_gpu.cu):
// normalise this process's b pairs; compute the loss terms of its rows [row0, row0 + b) of the global
// (N, N) logits with gradients w.r.t. ALL N normalised features (open_clip's local loss with gather-with-grad);
// the normalisation backward of its own rows once those gradients are summed over processes. One process
// holding the whole batch is row0 = 0, b = N (contrastive_loss_gpu). The logit products and the gradient
// products go through cuBLASLt; one kernel per cross-entropy direction does softmax, loss terms and dlogits.
// Reference: contrastive_loss_rows / contrastive_loss in model/ops_cpu.c.
#pragma once
#include "common.cuh"

// Floats of scratch for b local rows of a global batch N.
size_t contrastive_loss_scratch_elems(int b, int N);
// img, txt (b, E) -> img_n, txt_n (b, E) normalised (any rows of a larger buffer); inverse norms kept in scratch.
void contrastive_normalize_gpu(float *img_n, float *txt_n, const float *img, const float *txt, int b, int E, float *scratch);
// Rows [row0, row0 + b) of the N x N logits of img_n, txt_n (N, E): *loss (device, written) = their loss terms
// / 2N (summed over a partition of the rows: the global loss); dimg_n, dtxt_n (N, E) written with the
// gradients of those terms w.r.t. every normalised feature; *dlogit_scale (device) +=. logit_scale: device.
void contrastive_loss_rows_gpu(float *loss, float *dimg_n, float *dtxt_n, float *dlogit_scale, const float *img_n,
                               const float *txt_n, const float *logit_scale, int N, int E, int row0, int b, float *scratch);
// dimg, dtxt (b, E) written from d(normalised) dimg_n, dtxt_n (b, E) and the normalised img_n, txt_n (b, E) of
// contrastive_normalize_gpu (same scratch). In place (dimg == dimg_n) allowed.
void contrastive_normalize_backward_gpu(float *dimg, float *dtxt, const float *dimg_n, const float *dtxt_n, const float *img_n,
                                        const float *txt_n, int b, int E, const float *scratch);

// The whole loss of B pairs on one GPU: the three phases with row0 = 0, N = b. scratch: contrastive_loss_scratch_elems(B, B)
// + 2 B E floats. dimg, dtxt (B, E) written; *dlogit_scale +=.
size_t contrastive_loss_gpu_scratch_elems(int B, int E);
void contrastive_loss_gpu(float *loss, float *dimg, float *dtxt, float *dlogit_scale, const float *img, const float *txt,
                          const float *logit_scale, int B, int E, float *scratch);
