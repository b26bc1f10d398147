// matmul.cuh: every GEMM goes through cuBLASLt with fp32 accumulation (CUBLAS_COMPUTE_32F: full fp32 for
// float operands, tensor cores for bf16). Linear layers in PyTorch's row-major convention, w (OC, C):
// forward with the bias fused in the epilogue, the input gradient, and the weight gradient accumulated into
// fp32 (bf16 operands, fp32 output). Bias gradients are column sums (reduce.cuh).
// Reference: matmul_forward/backward in model/ops_cpu.c.
#pragma once
#include "common.cuh"

// Column-major, as cuBLAS sees it: D (m, n) = alpha op(A) op(B) + beta D (+ bias (m) down each column).
// A, B of type ab_type; D (and bias) of type d_type; op = transpose when trans_* is set. ab_type CUDA_R_8I
// takes d_type CUDA_R_32I (int32 accumulation; alpha and beta are then whole numbers). Runs on stream.
void matmul_cm(void *d, cudaDataType_t d_type, int ldd, const void *a, int lda, int trans_a, const void *b, int ldb,
               int trans_b, cudaDataType_t ab_type, const void *bias, int m, int n, int k, float alpha, float beta,
               cudaStream_t stream);

// candidates > 1: each new GEMM shape times the first `candidates` (at most 16) algorithms of cuBLASLt's heuristic
// on its first call and keeps the fastest. The choice depends on timing, so two processes may sum in different
// orders (results equal to rounding, not bit for bit; matmul_tuning_save/load keep the choices). Default: 1, the
// heuristic's first choice. Affects shapes first seen after the call.
void matmul_set_tuning(int candidates);
// One line on stdout about the shapes timed since the last report (nothing when none were).
void matmul_tuning_report(void);
// The tuned choices of this process's shapes, kept so that a resumed run makes the same ones (bit-exact resume):
// load reads them (for shapes not planned yet; returns how many, 0 without the file, -1 when it was made on
// another GPU or cuBLASLt, then ignored; a malformed line is fatal, naming it); save writes every planned shape's
// (through a temporary file and a rename; on failure returns -1 with the reason in err, the old file untouched).
int matmul_tuning_load(const char *path);
int matmul_tuning_save(const char *path, char *err, size_t errlen);
// sms > 0: GEMMs from now on are planned for that many SMs (cuBLASLt's SM count target), leaving the others to
// kernels running beside them; 0: all SMs.
void matmul_set_sm_target(int sms);

// out (N, OC) = inp (N, C) @ w^T (+ bias (OC), may be NULL) (+ residual (N, OC), may be NULL: a residual add in the
// epilogue, one rounding to T; residual may not overlap out)
template <typename T>
void matmul_forward_gpu(T *out, const T *inp, const T *w, const T *bias, int N, int C, int OC, const T *residual = NULL);
// dinp (N, C) = dout (N, OC) @ w   (overwrites)
template <typename T> void matmul_backward_input_gpu(T *dinp, const T *dout, const T *w, int N, int C, int OC);
// dw (OC, C) = dout^T @ inp, or += with accumulate (fp32, the gradient buffer; overwriting does not read dw), on stream
template <typename T>
void matmul_backward_weight_gpu(float *dw, const T *dout, const T *inp, int N, int C, int OC, int accumulate, cudaStream_t stream = 0);
