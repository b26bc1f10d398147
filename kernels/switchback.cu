// switchback.cu: the SwitchBack linear layer (forward, backward, weight quantization, the four modes) and the
// bias-gradient column sums. The bf16 weight gradient it switches back to is matmul.cuh's cuBLASLt GEMM.
// API and the meaning of each mode in switchback.cuh.
#include <stdlib.h>
#include <string.h>
#include "matmul.cuh"
#include "reduce.cuh"
#include "switchback.cuh"

// ------------------------------------------------------------------------------------------------ bias grad
// Block (32, 8) covers 256 columns of one chunk of rows: thread (x, y) sums its 8 columns (16-byte loads) over rows
// y, y + 8, ...; the 8 partial sums of each column are then added in shared memory, always in the same order.
__global__ void column_sums_partial_kernel(float *partial, const bf16 *g, int M, int N) {
    __shared__ float sums[8][256];
    int c0 = (blockIdx.x * 32 + threadIdx.x) * 8;
    int rows = (M + SB_DB_CHUNKS - 1) / SB_DB_CHUNKS, r_end = min(M, (blockIdx.y + 1) * rows);
    float s[8] = {0};
    if (c0 < N) {
        for (int r = blockIdx.y * rows + threadIdx.y; r < r_end; r += 8) {
            uint4 v = *(const uint4 *)(g + (size_t)r * N + c0);
            const bf16 *h = (const bf16 *)&v;
            for (int e = 0; e < 8; e++) s[e] += __bfloat162float(h[e]);
        }
    }
    for (int e = 0; e < 8; e++) sums[threadIdx.y][threadIdx.x * 8 + e] = s[e];
    __syncthreads();
    int t = threadIdx.y * 32 + threadIdx.x, c = blockIdx.x * 256 + t;
    float total = 0.0f;
    for (int y = 0; y < 8; y++) total += sums[y][t];
    if (c < N) partial[(size_t)blockIdx.y * N + c] = total;
}

// db (+)= the sum of the chunks rows of partial (chunks, N), in row order.
__global__ void column_sums_final_kernel(float *db, const float *partial, int chunks, int N, int accumulate) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= N) return;
    float total = 0.0f;
    for (int i = 0; i < chunks; i++) total += partial[(size_t)i * N + c];
    db[c] = accumulate ? db[c] + total : total;
}

static void column_sums_final(float *db, const float *partial, int chunks, int N, int accumulate, cudaStream_t stream) {
    column_sums_final_kernel<<<ceil_div(N, 256), 256, 0, stream>>>(db, partial, chunks, N, accumulate);
    cudaCheckLaunch();
}

void column_sums(float *db, float *partial, const bf16 *g, int M, int N, int accumulate, cudaStream_t stream) {
    column_sums_partial_kernel<<<dim3(ceil_div(N, 256), SB_DB_CHUNKS), dim3(32, 8), 0, stream>>>(partial, g, M, N);
    cudaCheckLaunch();
    column_sums_final(db, partial, SB_DB_CHUNKS, N, accumulate, stream);
}

// ------------------------------------------------------------------------------------------------ weights
void sb_weight_alloc(SbWeight *w, int N, int K) {
    if (N % 16 || K % 16) {
        fatal("SwitchBack weight (%d, %d): both dimensions must be multiples of 16", N, K);
    }
    w->N = N, w->K = K;
    cudaCheck(cudaMalloc(&w->q, (size_t)N * K));
    cudaCheck(cudaMalloc(&w->qt, (size_t)N * K));
    cudaCheck(cudaMalloc(&w->absmax, sizeof(float) * ((size_t)N + K + 1)));
}

void sb_weight_free(SbWeight *w) {
    cudaCheck(cudaFree(w->q));
    cudaCheck(cudaFree(w->qt));
    cudaCheck(cudaFree(w->absmax));
}

void switchback_quantize_weight(SbWeight *w, const bf16 *W, SwitchBackMode mode, cudaStream_t stream) {
    quantize_absmax(w->absmax, W, w->N, w->K, stream);
    quantize_2way(w->q, w->qt, w->N, w->absmax, mode == SB_VECTORWISE, W, w->N, w->K, stream);
}

void sb_weight_batch_init(SbWeightBatch *b, SbWeight *const *w, const bf16 *const *W, const float *const *tensor_max, int n) {
    Quant2wayJob *jobs = (Quant2wayJob *)malloc(sizeof(Quant2wayJob) * (n ? n : 1));
    if (!jobs) {
        fatal("sb_weight_batch_init: out of host memory");
    }
    b->n = n, b->tiles = 0;
    for (int i = 0; i < n; i++) {  // W[i] (N, K) -> q (N, K), qt (K, N); the maximum into absmax[N + K]
        jobs[i] = (Quant2wayJob){W[i], w[i]->q, w[i]->qt, tensor_max[i], w[i]->absmax + w[i]->N + w[i]->K, w[i]->N, w[i]->K, b->tiles};
        b->tiles += quantize_2way_tiles(w[i]->N, w[i]->K);
    }
    cudaCheck(cudaMalloc(&b->jobs, sizeof(Quant2wayJob) * (n ? n : 1)));
    cudaCheck(cudaMemcpy(b->jobs, jobs, sizeof(Quant2wayJob) * n, cudaMemcpyHostToDevice));
    free(jobs);
}

void sb_weight_batch_free(SbWeightBatch *b) { cudaCheck(cudaFree(b->jobs)); }

void switchback_quantize_weights(const SbWeightBatch *b, cudaStream_t stream) { quantize_2way_jobs(b->jobs, b->n, b->tiles, stream); }

// Scales of W's int8 copies: vector-wise, the row maxima for q (one per output column of y) and the column
// maxima for qt (one per output column of dx); tensor-wise, the tensor maximum for both.
static const float *w_scale_q(const SbWeight *w, SwitchBackMode mode) {
    return mode == SB_VECTORWISE ? w->absmax : w->absmax + w->N + w->K;
}
static const float *w_scale_qt(const SbWeight *w, SwitchBackMode mode) {
    return mode == SB_VECTORWISE ? w->absmax + w->N : w->absmax + w->N + w->K;
}

// ------------------------------------------------------------------------------------------------ the layer
static inline long round16(long x) { return (x + 15) / 16 * 16; }

// The scratch buffers of switchback_init, in order: gq, gs, db_partial, x_deq, gqt, xqt, g_absmax, x_absmax
// (0 bytes: not used by the mode).
static void scratch_sizes(size_t bytes[8], SwitchBackMode mode, int max_M, int max_C) {
    size_t mc = (size_t)max_M * max_C, m16c = (size_t)round16(max_M) * max_C, absmax = sizeof(float) * ((size_t)max_M + max_C + 1);
    int me = mode == SB_MEMORY_EFFICIENT, ev = mode == SB_INT8_EVERYWHERE;
    // db partial sums of column_sums (the fused quantize + column-sum pass uses colsum_partials, reduce.cuh)
    size_t b[8] = {mc, sizeof(float) * max_M, sizeof(float) * SB_DB_CHUNKS * max_C, me ? sizeof(bf16) * mc : 0,
                   ev ? m16c : 0, ev ? m16c : 0, ev ? absmax : 0, ev ? absmax : 0};
    memcpy(bytes, b, sizeof(b));
}

size_t switchback_scratch_bytes(SwitchBackMode mode, int max_M, int max_C) {
    size_t b[8], total = 0;
    scratch_sizes(b, mode, max_M, max_C);
    for (int i = 0; i < 8; i++) total += b[i];
    return total;
}

void switchback_init(SwitchBack *sb, SwitchBackMode mode, int max_M, int max_C) {
    memset(sb, 0, sizeof(*sb));
    sb->mode = mode, sb->max_M = max_M, sb->max_C = max_C;
    if (mode == SB_INT8_EVERYWHERE && round16(max_M) * 16129 > 2147483647L) {  // |int32 accumulator| <= 127^2 * M16
        fatal("SwitchBack int8 everywhere: %d rows overflow the int32 weight-gradient sum", max_M);
    }
    size_t b[8];
    scratch_sizes(b, mode, max_M, max_C);
    void **ptrs[8] = {(void **)&sb->gq, (void **)&sb->gs, (void **)&sb->db_partial, (void **)&sb->x_deq,
                      (void **)&sb->gqt, (void **)&sb->xqt, (void **)&sb->g_absmax, (void **)&sb->x_absmax};
    for (int i = 0; i < 8; i++)
        if (b[i]) cudaCheck(cudaMalloc(ptrs[i], b[i]));
}

void switchback_free(SwitchBack *sb) {
    cudaCheck(cudaFree(sb->gq));
    cudaCheck(cudaFree(sb->gs));
    cudaCheck(cudaFree(sb->db_partial));
    cudaCheck(cudaFree(sb->x_deq));  // cudaFree(NULL) is a no-op
    cudaCheck(cudaFree(sb->gqt));
    cudaCheck(cudaFree(sb->xqt));
    cudaCheck(cudaFree(sb->g_absmax));
    cudaCheck(cudaFree(sb->x_absmax));
}

static void check_size(const SwitchBack *sb, const SbWeight *w, int M) {
    if (M > sb->max_M || w->N > sb->max_C || w->K > sb->max_C) {
        fatal("SwitchBack layer (M %d, K %d, N %d) exceeds the scratch sized for M %ld, C %ld", M,
              w->K, w->N, sb->max_M, sb->max_C);
    }
}

void switchback_forward(SwitchBack *sb, bf16 *y, int8_t *xq, float *xs, const bf16 *x, const SbWeight *w,
                        const bf16 *bias, int M, cudaStream_t stream) {
    check_size(sb, w, M);
    if (x) quantize_rowwise(xq, xs, x, M, w->K, stream);
    Int8Gemm f = {};
    f.out = y, f.out_type = INT8_OUT_BF16;
    f.a = xq, f.a_scale = xs;                                                          // (M, K)
    f.b = w->q, f.b_scale = w_scale_q(w, sb->mode), f.b_scale_per_col = sb->mode == SB_VECTORWISE;  // (N, K)
    f.bias = bias;
    f.M = M, f.N = w->N, f.K = w->K;
    int8_gemm(&f, stream);
}

void switchback_backward_input(SwitchBack *sb, bf16 *dx, float *db, const bf16 *g, const SbWeight *w, int M, int accumulate,
                               int g_quantized, cudaStream_t stream) {
    check_size(sb, w, M);
    int N = w->N, K = w->K;
    // dx (M, K) = g (M, N) . W (N, K): int8 g row-wise times the int8 W^T copy (K, N). db from the same read of g
    // (column sums per chunk of rows, added up after the GEMM) where N allows and g is quantized here.
    int fused_db = db && N <= SB_QC_MAX_K && !g_quantized, chunks = fused_db ? ceil_div(M, rowwise_colsums_rows(M)) : 0;
    float *partial = fused_db ? colsum_partials((size_t)chunks * N) : NULL;
    if (fused_db) quantize_rowwise_colsums(sb->gq, sb->gs, partial, g, M, N, stream);
    else if (!g_quantized) quantize_rowwise(sb->gq, sb->gs, g, M, N, stream);
    Int8Gemm d = {};
    d.out = dx, d.out_type = INT8_OUT_BF16;
    d.a = sb->gq, d.a_scale = sb->gs;                                                    // (M, N)
    d.b = w->qt, d.b_scale = w_scale_qt(w, sb->mode), d.b_scale_per_col = sb->mode == SB_VECTORWISE;  // (K, N)
    d.M = M, d.N = K, d.K = N;
    int8_gemm(&d, stream);
    if (fused_db) {
        if (!accumulate) cudaCheck(cudaMemsetAsync(db, 0, N * sizeof(float), stream));
        colsum_finish_gpu(db, NULL, partial, chunks, N, NULL, NULL, stream);
    } else if (db) {
        column_sums(db, sb->db_partial, g, M, N, accumulate, stream);
    }
}

void switchback_backward_weight(SwitchBack *sb, float *dw, const bf16 *g, const bf16 *x, const int8_t *xq, const float *xs,
                                const SbWeight *w, int M, int accumulate, cudaStream_t stream) {
    check_size(sb, w, M);
    int N = w->N, K = w->K;
    if (sb->mode == SB_MEMORY_EFFICIENT ? (!x && (!xq || !xs)) : !x) {
        fatal("switchback_backward_weight: mode %d needs %s", (int)sb->mode,
              sb->mode == SB_MEMORY_EFFICIENT ? "the forward's input x, or its xq and xs" : "the forward's input x");
    }
    // dw (N, K) = g^T (N, M) . x (M, K)
    if (sb->mode == SB_INT8_EVERYWHERE) {
        // Both operands quantized along the token dimension M: g^T (N, M16) and x^T (K, M16), one scale per row
        // (= per column of g and of x), so that the scales stay outside the int8 dot products.
        int m16 = (int)round16(M);
        quantize_absmax(sb->g_absmax, g, M, N, stream);
        quantize_2way(NULL, sb->gqt, m16, sb->g_absmax, 1, g, M, N, stream);
        quantize_absmax(sb->x_absmax, x, M, K, stream);
        quantize_2way(NULL, sb->xqt, m16, sb->x_absmax, 1, x, M, K, stream);
        Int8Gemm e = {};
        e.out = dw, e.out_type = INT8_OUT_F32, e.accumulate = accumulate;
        e.a = sb->gqt, e.a_scale = sb->g_absmax + M;                        // (N, M16), column maxima of g
        e.b = sb->xqt, e.b_scale = sb->x_absmax + M, e.b_scale_per_col = 1;  // (K, M16), column maxima of x
        e.M = N, e.N = K, e.K = m16;
        int8_gemm(&e, stream);
    } else {
        if (sb->mode == SB_MEMORY_EFFICIENT && !x) {
            dequantize_rowwise(sb->x_deq, xq, xs, M, K, stream);
            x = sb->x_deq;
        }
        // dW (N, K) (+)= g^T x: column-major dW^T (K, N) = x^T (K, M) . g (M, N), fp32 out
        matmul_cm(dw, CUDA_R_32F, K, x, K, 0, g, N, 1, CUDA_R_16BF, NULL, K, N, M, 1.0f, accumulate ? 1.0f : 0.0f, stream);
    }
}

void switchback_backward(SwitchBack *sb, bf16 *dx, float *dw, float *db, const bf16 *g, const bf16 *x,
                         const int8_t *xq, const float *xs, const SbWeight *w, int M, int accumulate, int g_quantized,
                         cudaStream_t stream) {
    switchback_backward_input(sb, dx, db, g, w, M, accumulate, g_quantized, stream);
    switchback_backward_weight(sb, dw, g, x, xq, xs, w, M, accumulate, stream);
}
