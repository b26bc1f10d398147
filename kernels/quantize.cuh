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

// The most rows in a chunk of the fused quantize + column-sum pass, and its widest row (registers).
#define SB_QC_ROWS 128
#define SB_QC_MAX_K 8192

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

// Row-wise quantization fused with column sums, for any producer of the rows. The producer op has two steps, so
// that all of a thread's loads are in flight before any store (a producer writing in place would otherwise
// serialise them): In op.load(row, vec) reads what 16-byte vector vec of row needs; uint4 op.apply(in, row, vec,
// f) computes its 8 values, fills f (fp32, what the column sums add) and returns them as bf16 (what is quantized;
// apply may also store them); op.prepare(), called by every thread at the block's start, may fill shared memory. The kernel writes q (M, K), s (M) and partial (ceil(M / rows), K) = the column sums
// of each chunk of `rows` rows, added in row order.
// A block of 256 threads walks its chunk G rows at a time, the whole width of each row held in registers: thread
// t owns the 8-column vectors t, t + 256, ... (V of them), so its column sums stay in registers across the chunk.
// Row maxima: per-thread, then per warp (shuffles), then across the 8 warps through shared memory
// (double-buffered: one barrier per group).
template <int V, int G, class Op>
__global__ void __launch_bounds__(256) rowwise_colsums_kernel(int8_t *q, float *s, float *partial, Op op, int M, int K, int rows) {
    __shared__ float red[2][8][G];
    int r0 = blockIdx.x * rows, r1 = min(M, r0 + rows), nv = K / 8;
    int t = threadIdx.x, lane = t % 32, warp = t / 32;
    op.prepare();
    float sum[V][8];
#pragma unroll
    for (int k = 0; k < V; k++)
#pragma unroll
        for (int e = 0; e < 8; e++) sum[k][e] = 0.0f;
    for (int rg = r0, grp = 0; rg < r1; rg += G, grp++) {
        typename Op::In in[G][V];
#pragma unroll
        for (int i = 0; i < G; i++)  // all loads first: G x V of them in flight
#pragma unroll
            for (int k = 0; k < V; k++)
                if (rg + i < r1 && t + 256 * k < nv) in[i][k] = op.load(rg + i, t + 256 * k);
        uint4 v[G][V];
#pragma unroll
        for (int i = 0; i < G; i++) {
            float m = 0.0f;
#pragma unroll
            for (int k = 0; k < V; k++) {
                v[i][k] = make_uint4(0, 0, 0, 0);
                if (rg + i >= r1 || t + 256 * k >= nv) continue;
                float f[8];
                v[i][k] = op.apply(in[i][k], rg + i, t + 256 * k, f);
#pragma unroll
                for (int e = 0; e < 8; e++) sum[k][e] += f[e];
                m = fmaxf(m, absmax8(v[i][k]));
            }
            m = warp_absmax(m);
            if (lane == 0) red[grp & 1][warp][i] = m;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < G; i++) {
            int row = rg + i;
            if (row >= r1) break;
            float am = 0.0f;
            for (int w = 0; w < 8; w++) am = fmaxf(am, red[grp & 1][w][i]);
            float mult = sb_quant_mult(am);
#pragma unroll
            for (int k = 0; k < V; k++) {
                int vec = t + 256 * k;
                if (vec < nv) ((uint2 *)(q + (size_t)row * K))[vec] = quantize8(v[i][k], mult);
            }
            if (t == 0) s[row] = am;
        }
    }
#pragma unroll
    for (int k = 0; k < V; k++) {
        int vec = t + 256 * k;
        if (vec >= nv) continue;
        float4 *p = (float4 *)(partial + (size_t)blockIdx.x * K + 8 * vec);
        p[0] = make_float4(sum[k][0], sum[k][1], sum[k][2], sum[k][3]);
        p[1] = make_float4(sum[k][4], sum[k][5], sum[k][6], sum[k][7]);
    }
}

// Launches rowwise_colsums_kernel over chunks of `rows` rows (who: the caller's name for the error message).
// K % 16 == 0, K <= SB_QC_MAX_K.
template <class Op>
void rowwise_colsums_run(int8_t *q, float *s, float *partial, Op op, int M, int K, int rows, const char *who, cudaStream_t stream) {
    if (K % 16 != 0 || K > SB_QC_MAX_K) {
        fatal("%s: K = %d must be a multiple of 16, at most %d", who, K, SB_QC_MAX_K);
    }
    if (M == 0) return;
    // V vectors of each row per thread, G rows per group: V x G ~ 8 loads of 16 bytes in flight per thread (fewer
    // rows for a producer that loads L vectors per output vector, to keep its registers in bounds).
    constexpr int L = sizeof(typename Op::In) / 16;
    int blocks = ceil_div(M, rows), v = ceil_div(K / 8, 256);
    switch (v) {
    case 1: rowwise_colsums_kernel<1, 8 / L><<<blocks, 256, 0, stream>>>(q, s, partial, op, M, K, rows); break;
    case 2: rowwise_colsums_kernel<2, 4 / L><<<blocks, 256, 0, stream>>>(q, s, partial, op, M, K, rows); break;
    case 3: rowwise_colsums_kernel<3, (3 / L > 0 ? 3 / L : 1)><<<blocks, 256, 0, stream>>>(q, s, partial, op, M, K, rows); break;
    default: rowwise_colsums_kernel<4, 2 / L><<<blocks, 256, 0, stream>>>(q, s, partial, op, M, K, rows); break;
    }
    cudaCheckLaunch();
}
#endif

// Row-wise: q (M, K) int8 and s (M) = absmax of each row of x (M, K). K % 16 == 0.
void quantize_rowwise(int8_t *q, float *s, const bf16 *x, int M, int K, cudaStream_t stream);
// Rows per chunk of the fused quantize + column-sum pass over M rows: 8 to SB_QC_ROWS, for about 4 blocks per
// multiprocessor (each block keeps its rows' loads in flight; 128-row chunks left ViT-H/14's 16,448 rows one block
// per multiprocessor, at 1.3 TB/s, and its text tower's 4,928 rows most multiprocessors idle).
int rowwise_colsums_rows(int M);
// quantize_rowwise fused with the fp32 column sums of x (for a bias gradient): one read of x instead of two.
// partial (ceil(M / rows), K), rows = rowwise_colsums_rows(M), receives the column sums of each chunk of rows, each
// added in row order (deterministic); the caller adds the chunks up. K % 16 == 0 and K <= SB_QC_MAX_K.
// (rowwise_colsums_run above is the same pass for rows a producer computes.)
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

// Tensor-wise two-way quantization of many matrices in one launch, their tensor maxima already known (e.g. computed
// by the optimizer step that wrote them): job j writes q (R, C) and qt (C, R) of x (R, C) with the maximum
// *tensor_max, and copies that maximum to *absmax_out. tile0: the job's first block, the sum of
// quantize_2way_tiles(R, C) over the jobs before it; tiles: the sum over all. jobs: a device array. C % 16 == 0,
// R % 16 == 0.
typedef struct {
    const bf16 *x;
    int8_t *q, *qt;
    const float *tensor_max;
    float *absmax_out;
    int R, C, tile0;
} Quant2wayJob;
int quantize_2way_tiles(int R, int C);
void quantize_2way_jobs(const Quant2wayJob *jobs, int njobs, int tiles, cudaStream_t stream);
