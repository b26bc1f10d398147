// reduce.cuh: column sums of (N, C) row-major matrices accumulated into fp32 vectors: the gradients of
// everything broadcast over rows (biases, layer-scale, LayerNorm weights, positional embeddings, class token).
// Deterministic: rows are split into fixed chunks whose partial sums are added in order.
#pragma once
#include "common.cuh"

// db (C) += sum over rows of a (N, C); row stride ld (>= C) lets it sum a strided view.
template <typename T> void bias_grad_gpu(float *db, const T *a, int N, int C, long ld);
// out (C) += sum over rows of a * b (N, C) (the layer-scale gradient: dout * branch output).
template <typename T> void product_colsum_gpu(float *out, const T *a, const T *b, int N, int C);
// LayerNorm weight and bias gradients: dw (C) += sum dout * xhat, db (C) += sum dout, with
// xhat = (inp - mean) * rstd recomputed from the saved row statistics.
template <typename T> void layernorm_param_grads_gpu(float *dw, float *db, const T *dout, const T *inp, const float *mean,
                                                 const float *rstd, int N, int C);
