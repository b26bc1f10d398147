// ref_switchback.h: CPU references of the SwitchBack kernels (kernels/quantize.cu, int8_gemm.cu, switchback.cu).
// The quantizers and the GEMM epilogue call the same formula functions as the kernels (quantize.cuh,
// int8_gemm.cuh), so the GPU must match them bit for bit; the fp32 matmul is the layer's exact reference.
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../kernels/int8_gemm.cuh"
#include "../kernels/quantize.cuh"

static inline float bf(bf16 v) { return __bfloat162float(v); }

// q (R, C) int8, s (R): row-wise.
static void ref_quantize_rows(int8_t *q, float *s, const bf16 *x, int R, int C) {
    for (int r = 0; r < R; r++) {
        float m = 0.0f;
        for (int c = 0; c < C; c++) m = fmaxf(m, fabsf(bf(x[(size_t)r * C + c])));
        float mult = sb_quant_mult(m);
        for (int c = 0; c < C; c++) q[(size_t)r * C + c] = sb_quantize(bf(x[(size_t)r * C + c]), mult);
        s[r] = m;
    }
}

// A fused producer's int8 rows q (R, C) and maxima s (R), on the device, against ref_quantize_rows of the bf16
// values x (R, C) it wrote (device), bit for bit: the index of the first differing q, R * C + r for a differing
// maximum of row r, or -1.
static long rows_quantized_diff(const int8_t *d_q, const float *d_s, const bf16 *d_x, int R, int C) {
    size_t n = (size_t)R * C;
    bf16 *x = (bf16 *)malloc(n * sizeof(bf16) + 1);
    int8_t *q = (int8_t *)malloc(n + 1), *rq = (int8_t *)malloc(n + 1);
    float *s = (float *)malloc(R * sizeof(float) + 1), *rs = (float *)malloc(R * sizeof(float) + 1);
    if (!x || !q || !rq || !s || !rs) {
        fprintf(stderr, "error: rows_quantized_diff: out of host memory\n");
        exit(1);
    }
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(x, d_x, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(q, d_q, n, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(s, d_s, R * sizeof(float), cudaMemcpyDeviceToHost));
    ref_quantize_rows(rq, rs, x, R, C);
    long diff = -1;
    for (size_t i = 0; i < n && diff < 0; i++)
        if (q[i] != rq[i]) diff = (long)i;
    for (int r = 0; r < R && diff < 0; r++)
        if (memcmp(&s[r], &rs[r], sizeof(float))) diff = (long)n + r;
    free(x), free(q), free(rq), free(s), free(rs);
    return diff;
}

// absmax (R + C + 1) = [row maxima | column maxima | tensor maximum] of x (R, C).
static void ref_absmax(float *absmax, const bf16 *x, int R, int C) {
    for (size_t i = 0; i < (size_t)R + C + 1; i++) absmax[i] = 0.0f;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            float a = fabsf(bf(x[(size_t)r * C + c]));
            absmax[r] = fmaxf(absmax[r], a);
            absmax[R + c] = fmaxf(absmax[R + c], a);
            absmax[R + C] = fmaxf(absmax[R + C], a);
        }
}

// As quantize_2way: q (R, C) and/or qt (C, ldt) (NULL skips), qt's columns R..ldt-1 zero.
static void ref_quantize_2way(int8_t *q, int8_t *qt, int ldt, const float *absmax, int per_channel, const bf16 *x,
                              int R, int C) {
    float tensor_mult = sb_quant_mult(absmax[R + C]);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            float v = bf(x[(size_t)r * C + c]);
            if (q) q[(size_t)r * C + c] = sb_quantize(v, per_channel ? sb_quant_mult(absmax[r]) : tensor_mult);
            if (qt) qt[(size_t)c * ldt + r] = sb_quantize(v, per_channel ? sb_quant_mult(absmax[R + c]) : tensor_mult);
        }
    if (qt)
        for (int c = 0; c < C; c++)
            for (int r = R; r < ldt; r++) qt[(size_t)c * ldt + r] = 0;
}

// acc (M, N) = a (M, K) . b (N, K)^T, exact in int32.
static void ref_gemm_i32(int32_t *acc, const int8_t *a, const int8_t *b, int M, int N, int K) {
#pragma omp parallel for collapse(2)
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            int32_t s = 0;
            for (int k = 0; k < K; k++) s += (int32_t)a[(size_t)i * K + k] * (int32_t)b[(size_t)j * K + k];
            acc[(size_t)i * N + j] = s;
        }
}

// The int8_gemm epilogue on one element, fp32 (before any bf16 rounding); old: the value accumulated into.
static float ref_epilogue(int32_t acc, float sa, const float *b_scale, int per_col, const bf16 *bias, int j, float old) {
    float y = sb_dequant_acc(acc, sa, b_scale[per_col ? j : 0], bias ? bf(bias[j]) : 0.0f);
    return y + old;
}

// fp32 y (M, N) = x (M, K) . w (N, K)^T (+ bias (N)), summed in double.
static void ref_matmul_nt(float *y, const float *x, const float *w, const float *bias, int M, int N, int K) {
#pragma omp parallel for collapse(2)
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = bias ? bias[j] : 0.0;
            for (int k = 0; k < K; k++) s += (double)x[(size_t)i * K + k] * w[(size_t)j * K + k];
            y[(size_t)i * N + j] = (float)s;
        }
}

// t (C, R) = x (R, C)^T
static void ref_transpose(float *t, const float *x, int R, int C) {
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) t[(size_t)c * R + r] = x[(size_t)r * C + c];
}
