// int8_gemm.cuh: the int8 x int8 -> int32 GEMM of SwitchBack with its fused dequantize epilogue:
//   out (M, N) = float(A (M, K) . B (N, K)^T) * s_a[i] * s_b[j] / 127^2 + bias[j]      (int32 accumulate)
// A and B are both row-major with K contiguous ("TN"), which is what the int8 tensor-core instructions want.
// Forward: A = int8 X (row-wise), B = int8 W (tensor- or vector-wise). Input gradient: A = int8 G, B = int8 W^T.
#pragma once
#include <stdint.h>
#include "cuda_utils.cuh"

// The epilogue's exact float ops, shared with the CPU reference (tests/ref_switchback.h):
//   y = fmaf((float)acc, (s_a * (1.0f / 16129.0f)) * s_b, bias)    (16129 = 127^2; then + old value if accumulating)
// sb_dequant_scale is the multiplier alone (kernels compute it once per row when s_b is tensor-wise).
static __host__ __device__ inline float sb_dequant_scale(float s_a, float s_b) { return (s_a * (1.0f / 16129.0f)) * s_b; }
static __host__ __device__ inline float sb_dequant_acc(int32_t acc, float s_a, float s_b, float bias) {
    return fmaf((float)acc, sb_dequant_scale(s_a, s_b), bias);
}

typedef enum { INT8_OUT_BF16 = 0, INT8_OUT_F32 = 1, INT8_OUT_I32 = 2 } Int8GemmOut;
// INT8_PATH_WGMMA: the sm_90a kernel with its tile width (256 or 128 columns) picked by shape; _N256 / _N128 force one.
typedef enum { INT8_PATH_AUTO = 0, INT8_PATH_WGMMA = 1, INT8_PATH_MMA = 2, INT8_PATH_WGMMA_N256 = 3, INT8_PATH_WGMMA_N128 = 4 } Int8GemmPath;

typedef struct {
    void *out;                   // (M, N) row-major, of out_type
    Int8GemmOut out_type;        // INT8_OUT_I32 stores the raw accumulator (scales, bias, accumulate ignored)
    int accumulate;              // 1: out += result (read as bf16 / fp32, added in fp32), 0: out = result
    const int8_t *a;             // (M, K)
    const int8_t *b;             // (N, K)
    const float *a_scale;        // (M) absmax of each row of A
    const float *b_scale;        // (N) if b_scale_per_col, else (1)
    int b_scale_per_col;
    const __nv_bfloat16 *bias;   // (N) or NULL
    int M, N, K;                 // M >= 1 arbitrary; N and K multiples of 16; a, b 16-byte aligned
} Int8Gemm;

// Runs the fastest kernel for the current device (wgmma on sm_90, mma.sync otherwise). SB_INT8_GEMM in the
// environment forces one: mma (mma.sync), n256 or n128 (wgmma with that tile width).
void int8_gemm(const Int8Gemm *g, cudaStream_t stream);
// Tests and benchmarks: force one kernel (INT8_PATH_WGMMA needs an sm_90 device).
void int8_gemm_path(const Int8Gemm *g, Int8GemmPath path, cudaStream_t stream);
// The tile width (256 or 128 columns) that INT8_PATH_WGMMA uses for g's shape (M, N, K; sm_90 only).
int int8_gemm_tile_width(const Int8Gemm *g);
