// layernorm.cuh: LayerNorm over the last dim (eps 1e-5, as PyTorch) fused with the residual add before it
// (res = x + ls * f, ls the optional per-channel layer-scale), its backward, and the layer-scale gradient
// of a residual branch. Rows of float or bf16; statistics, weights and arithmetic in fp32.
// Reference: layernorm_forward/backward, residual_forward/backward in model/ops_cpu.c.
#pragma once
#include "common.cuh"

// r = x (+ ls * f when f is given; ls NULL means 1), rounded to T; res (N, C) = r when f is given;
// then when w is given: out (N, C) = LayerNorm(r) * w + b with mean, rstd (N) saved. w NULL: only the add.
// q, qs (optional): the output (rounded to T) quantized row-wise for a SwitchBack linear (quantize.cuh: q (N, C)
// int8, qs (N) row maxima), bit-identical to quantize_rowwise of out; out may then be NULL (not written).
template <typename T>
void residual_layernorm_forward_gpu(T *res, T *out, float *mean, float *rstd, const T *x, const T *f, const float *ls,
                                const float *w, const float *b, int N, int C, int8_t *q = NULL, float *qs = NULL);
// out = (inp - mean) * rstd * w + b from saved statistics (activation recompute).
template <typename T>
void layernorm_recompute_gpu(T *out, const T *inp, const float *mean, const float *rstd, const float *w, const float *b, int N, int C);
// The gradients of the residual branch whose output gradient is the LayerNorm backward's new dinp (the branch
// before the LayerNorm in the forward: res = x + ls * f), summed over the rows in the same pass instead of reading
// dinp again: db (C) += the column sums of the branch gradient round(dinp * ls) (ls NULL: dinp), the bias gradient
// of the branch's last linear; with layer-scale, dls (C) += the column sums of dinp * f (f (N, C) the branch output).
// Values as layerscale_backward_gpu / bias_grad_gpu would read them (dinp rounded to T), added in another order.
template <typename T> struct BranchGrads {
    float *db, *dls;
    const float *ls;
    const T *f;
};
// dinp (N, C) += d LayerNorm / d inp given dout. dw, db (C) += the weight and bias gradients (summed in the same
// pass, in an order that does not depend on br). q, qs (optional): the new dinp (rounded to T) quantized row-wise,
// as residual_layernorm_forward_gpu's. br (optional): the branch gradients above. Shared memory per block:
// C (8 + 8 sizeof(T)) bytes, C (12 + 12 sizeof(T)) with br, C (16 + 12 sizeof(T)) with layer-scale.
template <typename T>
void layernorm_backward_gpu(T *dinp, float *dw, float *db, const T *dout, const T *inp, const float *w, const float *mean,
                        const float *rstd, int N, int C, int8_t *q = NULL, float *qs = NULL, const BranchGrads<T> *br = NULL);
// Gradient into a layer-scaled residual branch: df (N, C) = dout * ls (per channel); dls (C) += sum dout * f
// (dls NULL: not summed, a LayerNorm backward's BranchGrads did).
template <typename T> void layerscale_backward_gpu(T *df, float *dls, const T *dout, const T *f, const float *ls, int N, int C);
