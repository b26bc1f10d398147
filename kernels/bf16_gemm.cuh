// bf16_gemm.cuh: a bf16 GEMM for sm_90a with the MLP's GELU fused into its epilogue, where cuBLASLt has no
// exact-GELU epilogue (its GELU is the tanh approximation; open_clip's is erf):
//   y (M, N) = A (M, K) . B (N, K)^T + bias          fp32 accumulation, bf16 out (c_fc's forward: x W^T + b)
// Epilogues:
//   BF16_EPI_BIAS   out = y
//   BF16_EPI_GELU   out = y (the pre-activation, kept for the backward), out2 = gelu(out)
// gelu is gelu.cuh's bf16 lookup, so out2 equals gelu_forward_gpu(out) bit for bit.
#pragma once
#include <stdint.h>
#include "cuda_utils.cuh"

typedef enum { BF16_EPI_BIAS = 0, BF16_EPI_GELU = 1 } Bf16GemmEpilogue;

typedef struct {
    Bf16GemmEpilogue epilogue;
    __nv_bfloat16 *out;          // (M, N)
    __nv_bfloat16 *out2;         // (M, N) GELU: gelu(out)
    const __nv_bfloat16 *a;      // (M, K) row-major
    const __nv_bfloat16 *b;      // (N, K) row-major
    const __nv_bfloat16 *bias;   // (N) or NULL
    int quick;                   // QuickGELU instead of GELU
    int M, N, K;                 // M >= 1; N, K multiples of 16; pointers 16-byte aligned
} Bf16Gemm;

// Runs only where hopper_code_runs() (hopper.cuh); callers use cuBLASLt and gelu_forward_gpu otherwise.
void bf16_gemm(const Bf16Gemm *g, cudaStream_t stream);
