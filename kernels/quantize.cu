// quantize.cu: SwitchBack's quantization kernels: row-wise int8 of activations and gradients (for gradients
// optionally fused with their column sums), the dequantization the memory-efficient mode needs, and the two-way
// (row/tensor + transposed column/tensor) quantization of weights. Formulas and API in quantize.cuh.
#include "quantize.cuh"

// ------------------------------------------------------------------------------------------------ row-wise
// One warp a row (warp_quantize_row, the same device function a fused producer would call).
__global__ void quantize_rowwise_kernel(int8_t *q, float *s, const bf16 *x, int M, int K) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= M) return;
    warp_quantize_row(q + (size_t)row * K, s + row, x + (size_t)row * K, K, threadIdx.x % 32);
}

void quantize_rowwise(int8_t *q, float *s, const bf16 *x, int M, int K, cudaStream_t stream) {
    if (K % 16 != 0) {
        fprintf(stderr, "error: quantize_rowwise: K = %d must be a multiple of 16\n", K);
        exit(1);
    }
    const int rows_per_block = 8;
    quantize_rowwise_kernel<<<ceil_div(M, rows_per_block), 32 * rows_per_block, 0, stream>>>(q, s, x, M, K);
    cudaCheckLaunch();
}

// A block of 256 threads walks its chunk of SB_QC_ROWS rows G rows at a time, the whole width of each row held in
// registers: thread t owns the 8-column vectors t, t + 256, ... (V of them), so its column sums stay in registers
// across the chunk. Row maxima: per-thread, then per warp (shuffles), then across the 8 warps through shared
// memory (double-buffered: one barrier per group).
template <int V, int G>
__global__ void __launch_bounds__(256) quantize_rowwise_colsums_kernel(int8_t *q, float *s, float *partial, const bf16 *x,
                                                                       int M, int K) {
    __shared__ float red[2][8][G];
    int r0 = blockIdx.x * SB_QC_ROWS, r1 = min(M, r0 + SB_QC_ROWS), nv = K / 8;
    int t = threadIdx.x, lane = t % 32, warp = t / 32;
    float sum[V][8];
#pragma unroll
    for (int k = 0; k < V; k++)
#pragma unroll
        for (int e = 0; e < 8; e++) sum[k][e] = 0.0f;
    for (int rg = r0, grp = 0; rg < r1; rg += G, grp++) {
        uint4 v[G][V];
#pragma unroll
        for (int i = 0; i < G; i++)  // all loads first: G x V of them in flight
#pragma unroll
            for (int k = 0; k < V; k++) {
                int row = rg + i, vec = t + 256 * k;
                v[i][k] = make_uint4(0, 0, 0, 0);
                if (row < r1 && vec < nv) v[i][k] = __ldg((const uint4 *)(x + (size_t)row * K) + vec);
            }
#pragma unroll
        for (int i = 0; i < G; i++) {
            float m = 0.0f;
#pragma unroll
            for (int k = 0; k < V; k++) m = fmaxf(m, absmax8(v[i][k]));
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
                if (vec >= nv) continue;
                ((uint2 *)(q + (size_t)row * K))[vec] = quantize8(v[i][k], mult);
                const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v[i][k];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float2 f = __bfloat1622float2(h[e]);
                    sum[k][2 * e] += f.x, sum[k][2 * e + 1] += f.y;
                }
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

void quantize_rowwise_colsums(int8_t *q, float *s, float *partial, const bf16 *x, int M, int K, cudaStream_t stream) {
    if (K % 16 != 0 || K > SB_QC_MAX_K) {
        fprintf(stderr, "error: quantize_rowwise_colsums: K = %d must be a multiple of 16, at most %d\n", K, SB_QC_MAX_K);
        exit(1);
    }
    // V vectors of each row per thread, G rows per group: V x G ~ 8 loads of 16 bytes in flight per thread.
    int blocks = ceil_div(M, SB_QC_ROWS), v = ceil_div(K / 8, 256);
    switch (v) {
    case 1: quantize_rowwise_colsums_kernel<1, 8><<<blocks, 256, 0, stream>>>(q, s, partial, x, M, K); break;
    case 2: quantize_rowwise_colsums_kernel<2, 4><<<blocks, 256, 0, stream>>>(q, s, partial, x, M, K); break;
    case 3: quantize_rowwise_colsums_kernel<3, 3><<<blocks, 256, 0, stream>>>(q, s, partial, x, M, K); break;
    default: quantize_rowwise_colsums_kernel<4, 2><<<blocks, 256, 0, stream>>>(q, s, partial, x, M, K); break;
    }
    cudaCheckLaunch();
}

// Each thread: 8 elements (one 8-byte load, one 16-byte store), all in one row since K % 8 == 0.
__global__ void dequantize_rowwise_kernel(bf16 *x, const int8_t *q, const float *s, int M, int K) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= (size_t)M * K) return;
    float absmax = s[i / K];
    uint2 v = *(const uint2 *)(q + i);
    const int8_t *b = (const int8_t *)&v;
    __align__(16) bf16 out[8];
    for (int e = 0; e < 8; e++) out[e] = __float2bfloat16(sb_dequantize(b[e], absmax));
    *(uint4 *)(x + i) = *(uint4 *)out;
}

void dequantize_rowwise(bf16 *x, const int8_t *q, const float *s, int M, int K, cudaStream_t stream) {
    if (K % 16 != 0) {
        fprintf(stderr, "error: dequantize_rowwise: K = %d must be a multiple of 16\n", K);
        exit(1);
    }
    dequantize_rowwise_kernel<<<ceil_div((long)M * K / 8, 256), 256, 0, stream>>>(x, q, s, M, K);
    cudaCheckLaunch();
}

// ------------------------------------------------------------------------------------------------ two-way
// Both kernels work on 64 x 64 tiles held in shared memory as fp32 (outside the matrix: zeros), loaded by
// 256 threads with 16-byte loads (two each).
#define QT 64
__device__ inline void load_tile(float (*tile)[QT + 1], const bf16 *x, int R, int C, int r0, int c0) {
    for (int i = 0; i < 2; i++) {
        int r = threadIdx.x / 8 + 32 * i, c = (threadIdx.x % 8) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r0 + r < R && c0 + c < C) v = *(const uint4 *)(x + (size_t)(r0 + r) * C + c0 + c);
        const bf16 *h = (const bf16 *)&v;
        for (int e = 0; e < 8; e++) tile[r][c + e] = __bfloat162float(h[e]);
    }
    __syncthreads();
}

// absmax >= 0, so comparing float bits as unsigned integers orders them correctly.
__device__ inline void atomic_max_pos(float *addr, float v) { atomicMax((unsigned int *)addr, __float_as_uint(v)); }

// absmax (R + C + 1) must be zero on entry (the launcher clears it).
__global__ void quantize_absmax_kernel(float *absmax, const bf16 *x, int R, int C) {
    __shared__ float tile[QT][QT + 1];
    int r0 = blockIdx.y * QT, c0 = blockIdx.x * QT, t = threadIdx.x;
    load_tile(tile, x, R, C, r0, c0);
    if (t < QT) {  // warps 0-1: row maxima, and the tensor maximum from them
        float m = 0.0f;
        for (int c = 0; c < QT; c++) m = fmaxf(m, fabsf(tile[t][c]));
        if (r0 + t < R) atomic_max_pos(absmax + r0 + t, m);
        m = warp_absmax(m);
        if (t % 32 == 0) atomic_max_pos(absmax + R + C, m);
    } else if (t < 2 * QT) {  // warps 2-3: column maxima
        int c = t - QT;
        float m = 0.0f;
        for (int r = 0; r < QT; r++) m = fmaxf(m, fabsf(tile[r][c]));
        if (c0 + c < C) atomic_max_pos(absmax + R + c0 + c, m);
    }
}

void quantize_absmax(float *absmax, const bf16 *x, int R, int C, cudaStream_t stream) {
    if (C % 16 != 0) {
        fprintf(stderr, "error: quantize_absmax: C = %d must be a multiple of 16\n", C);
        exit(1);
    }
    cudaCheck(cudaMemsetAsync(absmax, 0, sizeof(float) * ((size_t)R + C + 1), stream));
    quantize_absmax_kernel<<<dim3(ceil_div(C, QT), ceil_div(R, QT)), 256, 0, stream>>>(absmax, x, R, C);
    cudaCheckLaunch();
}

__global__ void quantize_2way_kernel(int8_t *q, int8_t *qt, int ldt, const float *absmax, int per_channel,
                                     const bf16 *x, int R, int C) {
    __shared__ float tile[QT][QT + 1];
    int r0 = blockIdx.y * QT, c0 = blockIdx.x * QT, t = threadIdx.x;
    load_tile(tile, x, R, C, r0, c0);
    float tensor_mult = sb_quant_mult(absmax[R + C]);
    for (int i = 0; i < 2; i++) {
        int a = t / 8 + 32 * i, b = (t % 8) * 8;  // q: row a, columns b..b+7; qt: row a (= column of x), b..b+7
        if (q && r0 + a < R && c0 + b < C) {
            float mult = per_channel ? sb_quant_mult(absmax[r0 + a]) : tensor_mult;
            __align__(8) int8_t v[8];
            for (int e = 0; e < 8; e++) v[e] = sb_quantize(tile[a][b + e], mult);
            *(uint2 *)(q + (size_t)(r0 + a) * C + c0 + b) = *(uint2 *)v;
        }
        if (qt && c0 + a < C && r0 + b < ldt) {  // rows of x past R are zeros in the tile: they fill the padding
            float mult = per_channel ? sb_quant_mult(absmax[R + c0 + a]) : tensor_mult;
            __align__(8) int8_t v[8];
            for (int e = 0; e < 8; e++) v[e] = sb_quantize(tile[b + e][a], mult);
            *(uint2 *)(qt + (size_t)(c0 + a) * ldt + r0 + b) = *(uint2 *)v;
        }
    }
}

void quantize_2way(int8_t *q, int8_t *qt, int ldt, const float *absmax, int per_channel, const bf16 *x, int R, int C,
                   cudaStream_t stream) {
    if (C % 16 != 0 || (qt && (ldt < R || ldt % 16 != 0))) {
        fprintf(stderr, "error: quantize_2way: C = %d must be a multiple of 16, ldt = %d a multiple of 16 >= R = %d\n",
                C, ldt, R);
        exit(1);
    }
    // The grid covers rows up to ldt so that the padding columns of qt are written (as zeros).
    quantize_2way_kernel<<<dim3(ceil_div(C, QT), ceil_div(ldt > R ? ldt : R, QT)), 256, 0, stream>>>(
        q, qt, ldt, absmax, per_channel, x, R, C);
    cudaCheckLaunch();
}
