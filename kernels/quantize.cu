// quantize.cu: SwitchBack's quantization kernels: row-wise int8 of activations and gradients (for gradients
// optionally fused with their column sums; the fused kernel itself is in quantize.cuh, for producers), the
// dequantization the memory-efficient mode needs, and the two-way (row/tensor + transposed column/tensor)
// quantization of weights, one at a time or many in one launch. Formulas and API in quantize.cuh.
#include "quantize.cuh"

#include "common.cuh"

// ------------------------------------------------------------------------------------------------ row-wise
// One warp a row (warp_quantize_row, the same device function a fused producer would call).
__global__ void quantize_rowwise_kernel(int8_t *q, float *s, const bf16 *x, int M, int K) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= M) return;
    warp_quantize_row(q + (size_t)row * K, s + row, x + (size_t)row * K, K, threadIdx.x % 32);
}

void quantize_rowwise(int8_t *q, float *s, const bf16 *x, int M, int K, cudaStream_t stream) {
    if (K % 16 != 0) {
        fatal("quantize_rowwise: K = %d must be a multiple of 16", K);
    }
    const int rows_per_block = 8;
    quantize_rowwise_kernel<<<ceil_div(M, rows_per_block), 32 * rows_per_block, 0, stream>>>(q, s, x, M, K);
    cudaCheckLaunch();
}

// The plain row-wise quantizer + column sums: rows of x as they are.
struct RowLoad {
    typedef uint4 In;
    const bf16 *x;
    int K;
    __device__ void prepare() const {}
    __device__ uint4 load(int row, int vec) const { return __ldg((const uint4 *)(x + (size_t)row * K) + vec); }
    __device__ uint4 apply(uint4 in, int, int, float *f) const {
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&in;
        for (int e = 0; e < 4; e++) {
            float2 v = __bfloat1622float2(h[e]);
            f[2 * e] = v.x, f[2 * e + 1] = v.y;
        }
        return in;
    }
};

int rowwise_colsums_rows(int M) { return min(SB_QC_ROWS, max(8, ceil_div(ceil_div(M, 4 * num_sms()), 8) * 8)); }

void quantize_rowwise_colsums(int8_t *q, float *s, float *partial, const bf16 *x, int M, int K, cudaStream_t stream) {
    rowwise_colsums_run(q, s, partial, RowLoad{x, K}, M, K, rowwise_colsums_rows(M), "quantize_rowwise_colsums", stream);
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
        fatal("dequantize_rowwise: K = %d must be a multiple of 16", K);
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
        fatal("quantize_absmax: C = %d must be a multiple of 16", C);
    }
    cudaCheck(cudaMemsetAsync(absmax, 0, sizeof(float) * ((size_t)R + C + 1), stream));
    quantize_absmax_kernel<<<dim3(ceil_div(C, QT), ceil_div(R, QT)), 256, 0, stream>>>(absmax, x, R, C);
    cudaCheckLaunch();
}

// One 64 x 64 tile of quantize_2way (absmax only read when per_channel; tensor_max otherwise).
__device__ inline void quantize_2way_tile(int8_t *q, int8_t *qt, int ldt, const float *absmax, int per_channel, float tensor_max,
                                          const bf16 *x, int R, int C, int r0, int c0) {
    __shared__ float tile[QT][QT + 1];
    int t = threadIdx.x;
    load_tile(tile, x, R, C, r0, c0);
    float tensor_mult = sb_quant_mult(tensor_max);
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

__global__ void quantize_2way_kernel(int8_t *q, int8_t *qt, int ldt, const float *absmax, int per_channel,
                                     const bf16 *x, int R, int C) {
    quantize_2way_tile(q, qt, ldt, absmax, per_channel, absmax[R + C], x, R, C, blockIdx.y * QT, blockIdx.x * QT);
}

// A block per tile of all jobs: the job by binary search over the first tiles, then its tile in row-major order.
__global__ void quantize_2way_jobs_kernel(const Quant2wayJob *jobs, int njobs) {
    int lo = 0, hi = njobs - 1, b = blockIdx.x;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (jobs[mid].tile0 <= b) lo = mid;
        else hi = mid - 1;
    }
    Quant2wayJob j = jobs[lo];
    int tile = b - j.tile0, tiles_c = (j.C + QT - 1) / QT;
    float m = *j.tensor_max;
    quantize_2way_tile(j.q, j.qt, j.R, NULL, 0, m, j.x, j.R, j.C, tile / tiles_c * QT, tile % tiles_c * QT);
    if (tile == 0 && threadIdx.x == 0) *j.absmax_out = m;
}

int quantize_2way_tiles(int R, int C) { return ceil_div(R, QT) * ceil_div(C, QT); }

void quantize_2way_jobs(const Quant2wayJob *jobs, int njobs, int tiles, cudaStream_t stream) {
    if (njobs == 0) return;
    quantize_2way_jobs_kernel<<<tiles, 256, 0, stream>>>(jobs, njobs);
    cudaCheckLaunch();
}

void quantize_2way(int8_t *q, int8_t *qt, int ldt, const float *absmax, int per_channel, const bf16 *x, int R, int C,
                   cudaStream_t stream) {
    if (C % 16 != 0 || (qt && (ldt < R || ldt % 16 != 0))) {
        fatal("quantize_2way: C = %d must be a multiple of 16, ldt = %d a multiple of 16 >= R = %d",
              C, ldt, R);
    }
    // The grid covers rows up to ldt so that the padding columns of qt are written (as zeros).
    quantize_2way_kernel<<<dim3(ceil_div(C, QT), ceil_div(ldt > R ? ldt : R, QT)), 256, 0, stream>>>(
        q, qt, ldt, absmax, per_channel, x, R, C);
    cudaCheckLaunch();
}
