// quantize.cuh: the int8 quantizers of SwitchBack (Wortsman, Dettmers et al. 2023): the exact float
// formulas (shared by the kernels and the CPU references in tests/ref_switchback.h), the device building
// blocks a producer kernel (layernorm, GELU, ...) can fuse to emit int8 rows directly, and the launchers.
//
// The formulas, identical on GPU and CPU so that the quantizers are bit-exact:
//   s    = max |x| over the row / column / tensor          (exact: a maximum of bf16 values, kept in fp32)
//   mult = s > 0 ? 127.0f / s : 0.0f                        (an all-zero row gets mult 0, so q = 0, never NaN)
//   q    = (int8_t)rintf(x * mult)                          (round to nearest even; |x| <= s keeps |q| <= 127)
//   x'   = (float)q * (s * (1.0f / 127.0f))                 (dequantize)
// Scales are stored as the absmax s itself; consumers divide by 127 (the GEMM epilogue by 127^2).
#pragma once
#include <stdint.h>
#include "cuda_utils.cuh"

typedef __nv_bfloat16 bf16;

static __host__ __device__ inline float sb_quant_mult(float absmax) { return absmax > 0.0f ? 127.0f / absmax : 0.0f; }
static __host__ __device__ inline int8_t sb_quantize(float x, float mult) { return (int8_t)rintf(x * mult); }
static __host__ __device__ inline float sb_dequantize(int8_t q, float absmax) { return (float)q * (absmax * (1.0f / 127.0f)); }

#ifdef __CUDACC__
// Building blocks for fused producers: a warp reduces its row's absmax with warp_absmax(), then each lane
// quantizes its 16-byte vectors of 8 bf16 with quantize8().
static __device__ inline float warp_absmax(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

static __device__ inline float absmax8(uint4 v) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
    float m = 0.0f;
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        m = fmaxf(m, fmaxf(fabsf(f.x), fabsf(f.y)));
    }
    return m;
}

// 8 bf16 (one uint4) -> 8 int8 (one uint2), element order kept.
static __device__ inline uint2 quantize8(uint4 v, float mult) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
    uint32_t w[2] = {0, 0};
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        uint32_t lo = (uint8_t)sb_quantize(f.x, mult), hi = (uint8_t)sb_quantize(f.y, mult);
        w[i / 2] |= (lo | hi << 8) << (16 * (i % 2));
    }
    return make_uint2(w[0], w[1]);
}

// One warp quantizes one row: x (K) bf16 -> q (K) int8, *s = absmax. K % 8 == 0, rows 16-byte aligned.
// Two passes over the row; the second one reads it back from L1.
static __device__ inline void warp_quantize_row(int8_t *q, float *s, const bf16 *x, int K, int lane) {
    const uint4 *xv = (const uint4 *)x;
    float m = 0.0f;
    for (int i = lane; i < K / 8; i += 32) m = fmaxf(m, absmax8(xv[i]));
    m = warp_absmax(m);
    float mult = sb_quant_mult(m);
    for (int i = lane; i < K / 8; i += 32) ((uint2 *)q)[i] = quantize8(xv[i], mult);
    if (lane == 0) *s = m;
}
#endif

// Row-wise: q (M, K) int8 and s (M) = absmax of each row of x (M, K). K % 16 == 0.
void quantize_rowwise(int8_t *q, float *s, const bf16 *x, int M, int K, cudaStream_t stream);
// quantize_rowwise fused with the fp32 column sums of x (for a bias gradient): one read of x instead of two.
// partial (ceil(M / SB_QC_ROWS), K) receives the column sums of each chunk of SB_QC_ROWS rows, each added in row
// order (deterministic); the caller adds the chunks up. K % 16 == 0 and K <= SB_QC_MAX_K.
#define SB_QC_ROWS 128
#define SB_QC_MAX_K 8192
void quantize_rowwise_colsums(int8_t *q, float *s, float *partial, const bf16 *x, int M, int K, cudaStream_t stream);
// x (M, K) bf16 = dequantized q (M, K) with row scales s (M).
void dequantize_rowwise(bf16 *x, const int8_t *q, const float *s, int M, int K, cudaStream_t stream);

// Whole-matrix quantization of x (R, C), used for weights (once per optimizer step) and for the
// column-wise quantization of activations/gradients in the "int8 everywhere" mode. Two launches:
// quantize_absmax() fills absmax (R + C + 1) = [row maxima (R) | column maxima (C) | tensor maximum];
// quantize_2way() then writes q (R, C) and/or qt (C, ldt) = the transpose (either may be NULL).
// per_channel = 0: both use the tensor maximum (tensor-wise). per_channel = 1: q uses the row maxima and
// qt the column maxima (vector-wise: one scale per row of each output). qt's columns R..ldt-1 are zeros
// (ldt >= R, ldt % 16 == 0) so that qt can be the K-dimension operand of int8_gemm. C % 16 == 0.
void quantize_absmax(float *absmax, const bf16 *x, int R, int C, cudaStream_t stream);
void quantize_2way(int8_t *q, int8_t *qt, int ldt, const float *absmax, int per_channel, const bf16 *x, int R, int C,
                   cudaStream_t stream);
