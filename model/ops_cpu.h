// ops_cpu.h: the fp32 CPU operations of CLIP, forward and backward. They build the CPU reference model
// (model/clip_cpu.c) and are the reference every CUDA kernel is tested against. Backward functions
// ACCUMULATE (+=) into their gradient outputs, so residual branches and shared weights just add up.
// Each output element is summed in a fixed order by one thread, so results do not depend on the thread count.
#pragma once
#include <stddef.h>
#include <stdint.h>

// out (N, OC) = inp (N, C) @ w^T + bias;  w (OC, C), bias (OC) or NULL.
void matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC);
// dinp (N, C) += dout @ w;  dw (OC, C) += dout^T @ inp;  dbias (OC) += column sums of dout.
// Any of dinp / dw / dbias may be NULL.
void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w, int N,
                     int C, int OC);

// LayerNorm over the last dim (eps 1e-5, as PyTorch). mean, rstd (N) are kept for backward.
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b, int N, int C);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                        const float *mean, const float *rstd, int N, int C);

// Multi-head attention on a fused projection qkv (B, T, 3C) laid out [q | k | v], head h at columns
// h*hd .. (h+1)*hd of each; out (B, T, C); att (B, NH, T, T) keeps the softmax probabilities.
// causal: key t2 > query t is masked (the text tower).
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal);
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C, int NH,
                        int causal);

// Exact GELU 0.5 x (1 + erf(x / sqrt 2)), or QuickGELU x sigmoid(1.702 x) when quick.
void gelu_forward(float *out, const float *inp, size_t n, int quick);
// dinp += dout * gelu'(inp)
void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n, int quick);

// out = x + ls * f, ls (C) per channel or NULL for 1 (layer-scale on the residual branch f). In-place on x allowed.
void residual_forward(float *out, const float *x, const float *f, const float *ls, int N, int C);
// dx += dout;  df += dout * ls;  dls (C) += sum_n dout * f.
void residual_backward(float *dx, float *df, float *dls, const float *dout, const float *f, const float *ls, int N, int C);

// Patches of images (B, 3, S, S) -> (B, G*G, 3*P*P) in conv1.weight's (3, P, P) order, G = S / P.
void patch_extract(float *patches, const float *images, int B, int S, int P);
// Vision tokens: x (B, 1 + G*G, D): row 0 = class_embedding + pos[0], row 1+i = patch_emb[i] + pos[1+i].
void vision_embed_forward(float *x, const float *patch_emb, const float *class_emb, const float *pos, int B, int G2, int D);
void vision_embed_backward(float *dpatch_emb, float *dclass_emb, float *dpos, const float *dx, int B, int G2, int D);
// Text tokens: x (B, T, D) = token_embedding[ids] + pos.
void text_embed_forward(float *x, const int32_t *ids, const float *tok_emb, const float *pos, int B, int T, int D);
void text_embed_backward(float *dtok_emb, float *dpos, const float *dx, const int32_t *ids, int B, int T, int D, int V);

// Rows of x (B, T, D) at index[b] -> out (B, D); backward scatters back (+=).
void gather_rows(float *out, const float *x, const int *index, int B, int T, int D);
void gather_rows_backward(float *dx, const float *dout, const int *index, int B, int T, int D);
// index[b] = position of the first maximum token id in ids[b] (the EOT), as torch's argmax.
void eot_positions(int *index, const int32_t *ids, int B, int T);

// Row-wise L2 normalisation (B, E), as F.normalize; out may be x; inv_norm (B) kept for backward (or NULL).
// dx is written (=).
void l2_normalize_forward(float *out, float *inv_norm, const float *x, int B, int E);
void l2_normalize_backward(float *dx, const float *dy, const float *y, const float *inv_norm, int B, int E);

// The CLIP loss terms owned by global rows [row0, row0 + b) of N pairs of normalised features (N, E):
// for each such g, the cross-entropy of logits row g (image g vs every text) and of column g (text g vs
// every image), each divided by 2N, logits = exp(logit_scale) img_n @ txt_n^T. Summed over a partition of
// the rows (one part per rank) this is the global loss, and the gradients (+=, w.r.t. ALL N normalised
// features and logit_scale; any may be NULL) sum to the global gradients: open_clip's local loss with
// gather-with-grad, where each rank reduce-scatters the feature gradients back to their owners.
double contrastive_loss_rows(const float *img_n, const float *txt_n, float logit_scale, int N, int E, int row0, int b,
                             float *dimg_n, float *dtxt_n, float *dlogit_scale);
// CLIP contrastive loss over B pairs of raw features: normalise, all rows, normalisation backward.
// loss = (CE(logits, arange) + CE(logits^T, arange)) / 2; gradients (any may be NULL) are written (=).
float contrastive_loss(const float *img, const float *txt, float logit_scale, int B, int E, float *dimg, float *dtxt,
                       float *dlogit_scale);
