// loss.cuh: the CLIP contrastive loss over B pairs, fp32: features L2-normalised, logits =
// exp(logit_scale) img @ txt^T (B, B), loss = (CE(logits, arange) + CE(logits^T, arange)) / 2, and its
// gradients w.r.t. both feature sets and logit_scale. The two logit products and four gradient products go
// through cuBLASLt; one kernel per cross-entropy direction does softmax, loss terms and dlogits together.
// Reference: contrastive_loss in model/ops_cpu.c.
#pragma once
#include "common.cuh"

// Floats of scratch for batch B, embedding E.
size_t contrastive_loss_scratch_elems(int B, int E);
// img, txt (B, E) -> *loss (device scalar, written); dimg, dtxt (B, E) written; *dlogit_scale (device) +=.
// logit_scale: device pointer to the parameter.
void contrastive_loss_gpu(float *loss, float *dimg, float *dtxt, float *dlogit_scale, const float *img, const float *txt,
                      const float *logit_scale, int B, int E, float *scratch);
