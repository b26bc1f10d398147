// bf16_gemm.cuh: a bf16 GEMM for sm_90a with the MLP's elementwise ops fused into its epilogue, where cuBLASLt has
// no exact-GELU epilogue (its GELU is the tanh approximation; open_clip's is erf):
//   y (M, N) = A (M, K) . B^T + bias          fp32 accumulation, bf16 out
// B is the weight, (N, K) row-major (a forward linear: x W^T) or, with b_kn, (K, N) row-major (an input gradient:
// dy W). Epilogues:
//   BF16_EPI_BIAS      out = y
//   BF16_EPI_GELU      out = y (the pre-activation, kept for the backward), out2 = gelu(out)     (c_fc's forward)
//   BF16_EPI_GELU_BWD  out = bf16(y) * gelu'(pre), out2 = gelu(pre) unless NULL, and the fp32 column sums of
//                      out's fp32 values per 128-row tile in colsum_partial    (c_proj's input gradient + c_fc's)
// gelu and gelu' are gelu.cuh's bf16 lookups, so the values equal the separate kernels' bit for bit given the same y.
#pragma once
#include <stdint.h>
#include "cuda_utils.cuh"

typedef enum { BF16_EPI_BIAS = 0, BF16_EPI_GELU = 1, BF16_EPI_GELU_BWD = 2 } Bf16GemmEpilogue;

typedef struct {
    Bf16GemmEpilogue epilogue;
    __nv_bfloat16 *out;          // (M, N)
    __nv_bfloat16 *out2;         // (M, N): GELU: gelu(out); GELU_BWD: gelu(pre) or NULL
    const __nv_bfloat16 *a;      // (M, K)
    const __nv_bfloat16 *b;      // (N, K), or (K, N) when b_kn
    int b_kn;
    const __nv_bfloat16 *bias;   // (N) or NULL (not with GELU_BWD)
    const __nv_bfloat16 *pre;    // GELU_BWD: (M, N), the GELU's input
    float *colsum_partial;       // GELU_BWD: (ceil(M / 128), N)
    int quick;                   // QuickGELU instead of GELU
    int M, N, K;                 // M >= 1; N, K multiples of 16; pointers 16-byte aligned
} Bf16Gemm;

// 1 when the device runs bf16_gemm (sm_90 and a build with sm_90a code); callers use cuBLASLt and the separate
// kernels otherwise.
int bf16_gemm_available(void);
void bf16_gemm(const Bf16Gemm *g, cudaStream_t stream);
