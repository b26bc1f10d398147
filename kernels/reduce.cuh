// reduce.cuh: column sums of (N, C) row-major matrices accumulated into fp32 vectors: the gradients of
// everything broadcast over rows (biases, layer-scale, positional embeddings, class token; the LayerNorm
// backward sums its parameter gradients itself, through the partial-sum layout below).
// Deterministic: rows are split into fixed chunks whose partial sums are added in order.
// The kernel is a template over an element operation, so that another pass (the GELU backward) can fuse
// its column sum in: a block of 32 x 8 threads owns 32 column vectors of one row chunk.
#pragma once
#include "common.cuh"

// db (C) += sum over rows of a (N, C); row stride ld (>= C) lets it sum a strided view.
template <typename T> void bias_grad_gpu(float *db, const T *a, int N, int C, long ld);
// out (C) += sum over rows of a * b (N, C) (the layer-scale gradient: dout * branch output).
template <typename T> void product_colsum_gpu(float *out, const T *a, const T *b, int N, int C);

// ---- for kernels that fuse a column sum into their own pass
// Partial sums of `chunks` row chunks are laid out partial[(o * chunks + chunk) * C + c] (o = 1..3: a second to
// fourth output); colsum_finish_gpu adds them, in a fixed order, to out (and out2 .. out4: one launch for all).
// colsum_partials is the one scratch for them (its users: the LayerNorm backward, the GELU backwards, colsum_run,
// SwitchBack's fused quantize pass), grown on demand, for work on one stream at a time; the memory plan counts
// COLSUM_PARTIAL_BYTES for it (the LayerNorm backward's sums choose their chunks to stay within it; the int8 GELU
// backward's and SwitchBack's chunks can take more).
#define COLSUM_PARTIAL_BYTES (16u << 20)
float *colsum_partials(size_t elems);
void colsum_finish_gpu(float *out, float *out2, const float *partial, int chunks, int C, float *out3 = NULL, float *out4 = NULL,
                       cudaStream_t stream = 0);
// The row chunks colsum uses for N rows of C columns read in vectors of V.
void colsum_split(int N, int C, int V, int *chunks, int *rows_per_chunk);

// Op: NOUT (1 or 2) sums; op(row, col, acc, acc2) reads V columns from col of row (and may write) and adds
// to acc (and acc2); op.prepare(), called by every thread at the block's start, may fill shared memory (and sync).
template <int V, class Op>
__global__ void colsum_partial_kernel(float *partial, Op op, int N, int C, int rows_per_chunk) {
    __shared__ float red[Op::NOUT][8][32 * V];
    int tx = threadIdx.x, ty = threadIdx.y;
    int c0 = (blockIdx.x * 32 + tx) * V;
    int r_begin = blockIdx.y * rows_per_chunk, r_end = min(N, r_begin + rows_per_chunk);
    float acc[V], acc2[V];
    op.prepare();
    for (int i = 0; i < V; i++) acc[i] = 0.0f, acc2[i] = 0.0f;
    if (c0 < C)
        for (int r = r_begin + ty; r < r_end; r += 8) op(r, c0, acc, acc2);
    for (int i = 0; i < V; i++) {
        red[0][ty][tx * V + i] = acc[i];
        if (Op::NOUT == 2) red[Op::NOUT - 1][ty][tx * V + i] = acc2[i];
    }
    __syncthreads();
    // each of the block's 32 * V columns (per output) summed over the 8 row lanes in order
    for (int j = ty * 32 + tx; j < Op::NOUT * 32 * V; j += 256) {
        int o = j / (32 * V), col = j % (32 * V), c = blockIdx.x * 32 * V + col;
        if (c >= C) continue;
        float s = 0.0f;
        for (int y = 0; y < 8; y++) s += red[o][y][col];
        partial[((size_t)o * gridDim.y + blockIdx.y) * C + c] = s;
    }
}

// out (C) (+ out2) += the column sums op produces over N rows.
template <int V, class Op> void colsum_run(float *out, float *out2, Op op, int N, int C) {
    if (N == 0 || C == 0) return;
    int chunks, rows_per_chunk;
    colsum_split(N, C, V, &chunks, &rows_per_chunk);
    float *partial = colsum_partials((size_t)Op::NOUT * chunks * C);
    colsum_partial_kernel<V, Op><<<dim3(ceil_div(C, 32 * V), chunks), dim3(32, 8)>>>(partial, op, N, C, rows_per_chunk);
    cudaCheckLaunch();
    colsum_finish_gpu(out, out2, partial, chunks, C);
}
