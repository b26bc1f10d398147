// gelu.cuh: the MLP activation, exact GELU 0.5 x (1 + erf(x / sqrt 2)) (open_clip's nn.GELU) or QuickGELU
// x sigmoid(1.702 x) (OpenAI weights), forward and backward, elementwise on float or bf16. fp32 evaluates the
// formulas; bf16 looks them up (gelu.cu): the GELU correctly rounded to bf16, its gradient to fp32.
// cuBLASLt's GELU epilogues compute the tanh approximation, not erf, so the activation is its own pass.
// Reference: gelu_forward/backward in model/ops_cpu.c.
#pragma once
#include "common.cuh"

// out (n) = gelu(inp)
template <typename T> void gelu_forward_gpu(T *out, const T *inp, size_t n, int quick);
// dinp (N, C) = dout * gelu'(inp), overwriting (the reference accumulates; dinp may be dout), and in the
// same pass dbias (C) += the column sums of dinp: the gradient of the bias before the GELU (fp32).
// act: NULL, or where the same pass also writes gelu(inp), equal to gelu_forward_gpu's output bit for bit (the
// recompute of a GELU output that was not kept, for the next linear's weight gradient; aliases nothing else).
template <typename T> void gelu_backward_bias_gpu(T *dinp, T *act, float *dbias, const T *dout, const T *inp, int N, int C, int quick);
// SwitchBack (bf16 only; C % 16 == 0): the output also quantized row-wise for the next linear (quantize.cuh: q (N, C)
// int8, qs (N) row maxima of the bf16 values), bit-identical to quantize_rowwise of out.
// Forward: out may be NULL (not written); C <= 8192.
void gelu_forward_quantize_gpu(bf16 *out, int8_t *q, float *qs, const bf16 *inp, int N, int C, int quick);
// Backward: as gelu_backward_bias_gpu (dinp written, act too unless NULL, dbias += the fp32 column sums, in another
// fixed order), and dinp quantized; C <= SB_QC_MAX_K.
void gelu_backward_quantize_gpu(bf16 *dinp, bf16 *act, int8_t *q, float *qs, float *dbias, const bf16 *dout, const bf16 *inp,
                                int N, int C, int quick);

// ---- The bf16 GELU lookup (gelu.cu's value table; also bf16_gemm.cu's epilogue, so that a GELU computed there equals
// gelu.cu's bit for bit). Per sign, the 2048 inputs with |x| in [2^-10, 64): the exact GELU rounded to bf16; the tails
// outside are computed (gelu.cu says how).
#define GELU_LUT_LO 0x3A80  // bf16 bits of 2^-10
#define GELU_LUT_N 2048
// The lookup, x given as bf16 bits b: GELU as fp32 (a bf16 value but at bf16 denormals). The slot is clamped and the
// tail selected after, so that no lane branches (gelu.cu's gradient lookup shares the slot).
__device__ __forceinline__ uint32_t gelu_lut_slot(uint32_t b, uint32_t *u) {
    *u = (b & 0x7FFF) - GELU_LUT_LO;
    return min(*u, GELU_LUT_N - 1) + (b >> 15) * GELU_LUT_N;
}
__device__ __forceinline__ float gelu_bf16(const uint16_t *tab, uint32_t b) {
    uint32_t u, i = gelu_lut_slot(b, &u);
    float x = __uint_as_float(b << 16), t = __uint_as_float((uint32_t)tab[i] << 16);
    return u < GELU_LUT_N ? t : fabsf(x) < 1.0f ? 0.5f * x : (x < 0.0f ? -0.0f : x);
}
// The device address of the value table (2 x GELU_LUT_N bf16 bits; filled at the first call).
const uint16_t *gelu_value_table(int quick);
