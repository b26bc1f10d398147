// reduce.cu: column sums accumulated into fp32 (see reduce.cuh). One kernel template serves the three
// kinds: a block of 32 x 8 threads owns 32 column vectors of one row chunk; partial sums of every chunk go
// to a scratch buffer and a second kernel adds them to the output in chunk order.
#include "reduce.cuh"

enum { SUM_PLAIN, SUM_PRODUCT, SUM_LAYERNORM };

// partial (chunks, C) [, second output at partial + chunks * C]
template <typename T, int V, int MODE>
__global__ void colsum_partial_kernel(float *partial, const T *a, const T *b, const float *mean, const float *rstd, int N,
                                      int C, long ld, int rows_per_chunk) {
    constexpr int NOUT = MODE == SUM_LAYERNORM ? 2 : 1;
    __shared__ float red[NOUT][8][32 * V];
    int tx = threadIdx.x, ty = threadIdx.y;
    int c0 = (blockIdx.x * 32 + tx) * V;
    int r_begin = blockIdx.y * rows_per_chunk, r_end = min(N, r_begin + rows_per_chunk);
    float acc[V], acc2[V];
    for (int i = 0; i < V; i++) acc[i] = 0.0f, acc2[i] = 0.0f;
    if (c0 < C) {
        for (int r = r_begin + ty; r < r_end; r += 8) {
            Vec<T, V> x = load_vec<T, V>(a + (size_t)r * ld + c0);
            if (MODE == SUM_PLAIN) {
                for (int i = 0; i < V; i++) acc[i] += to_float(x.v[i]);
            } else if (MODE == SUM_PRODUCT) {
                Vec<T, V> y = load_vec<T, V>(b + (size_t)r * ld + c0);
                for (int i = 0; i < V; i++) acc[i] += to_float(x.v[i]) * to_float(y.v[i]);
            } else {  // a = dout, b = inp
                Vec<T, V> y = load_vec<T, V>(b + (size_t)r * ld + c0);
                float m = mean[r], s = rstd[r];
                for (int i = 0; i < V; i++) {
                    float g = to_float(x.v[i]);
                    acc[i] += g * (to_float(y.v[i]) - m) * s;
                    acc2[i] += g;
                }
            }
        }
    }
    for (int i = 0; i < V; i++) {
        red[0][ty][tx * V + i] = acc[i];
        if (MODE == SUM_LAYERNORM) red[NOUT - 1][ty][tx * V + i] = acc2[i];
    }
    __syncthreads();
    // each of the block's 32 * V columns (per output) summed over the 8 row lanes in order
    for (int j = ty * 32 + tx; j < NOUT * 32 * V; j += 256) {
        int o = j / (32 * V), col = j % (32 * V);
        int c = blockIdx.x * 32 * V + col;
        if (c >= C) continue;
        float s = 0.0f;
        for (int y = 0; y < 8; y++) s += red[o][y][col];
        partial[((size_t)o * gridDim.y + blockIdx.y) * C + c] = s;
    }
}

// out[c] += sum over chunks of partial[chunk][c] (out2 likewise from the second half).
__global__ void colsum_finish_kernel(float *out, float *out2, const float *partial, int chunks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f, s2 = 0.0f;
    for (int k = 0; k < chunks; k++) s += partial[(size_t)k * C + c];
    out[c] += s;
    if (out2) {
        for (int k = 0; k < chunks; k++) s2 += partial[((size_t)chunks + k) * C + c];
        out2[c] += s2;
    }
}

// Scratch for the partial sums, grown on demand (the first calls of a run size it for good).
static float *scratch_partial(size_t elems) {
    static float *buf = NULL;
    static size_t cap = 0;
    if (elems > cap) {
        cudaCheck(cudaDeviceSynchronize());  // earlier launches may still read the old buffer
        if (buf) cudaCheck(cudaFree(buf));
        cudaCheck(cudaMalloc(&buf, elems * sizeof(float)));
        cap = elems;
    }
    return buf;
}

template <typename T, int MODE>
static void colsum(float *out, float *out2, const T *a, const T *b, const float *mean, const float *rstd, int N, int C,
                   long ld) {
    if (N == 0 || C == 0) return;
    int V = 16 / (int)sizeof(T);
    if (C % V || ld % V || (uintptr_t)a % 16 || (b && (uintptr_t)b % 16)) V = 1;
    int col_blocks = ceil_div(C, 32 * V);
    // about four blocks per multiprocessor, at least 32 rows per chunk
    int chunks = ceil_div(4 * num_sms(), col_blocks);
    chunks = max(1, min(chunks, ceil_div(N, 32)));
    int rows_per_chunk = ceil_div(N, chunks);
    chunks = ceil_div(N, rows_per_chunk);
    int nout = MODE == SUM_LAYERNORM ? 2 : 1;
    float *partial = scratch_partial((size_t)nout * chunks * C);
    dim3 grid(col_blocks, chunks), block(32, 8);
    if (V == 1) colsum_partial_kernel<T, 1, MODE><<<grid, block>>>(partial, a, b, mean, rstd, N, C, ld, rows_per_chunk);
    else colsum_partial_kernel<T, 16 / sizeof(T), MODE><<<grid, block>>>(partial, a, b, mean, rstd, N, C, ld, rows_per_chunk);
    cudaCheckLaunch();
    colsum_finish_kernel<<<ceil_div(C, 256), 256>>>(out, out2, partial, chunks, C);
    cudaCheckLaunch();
}

template <typename T> void bias_grad_gpu(float *db, const T *a, int N, int C, long ld) {
    colsum<T, SUM_PLAIN>(db, NULL, a, NULL, NULL, NULL, N, C, ld);
}
template <typename T> void product_colsum_gpu(float *out, const T *a, const T *b, int N, int C) {
    colsum<T, SUM_PRODUCT>(out, NULL, a, b, NULL, NULL, N, C, C);
}
template <typename T> void layernorm_param_grads_gpu(float *dw, float *db, const T *dout, const T *inp, const float *mean,
                                                 const float *rstd, int N, int C) {
    colsum<T, SUM_LAYERNORM>(dw, db, dout, inp, mean, rstd, N, C, C);
}

#define INSTANTIATE(T)                                                                                  \
    template void bias_grad_gpu<T>(float *, const T *, int, int, long);                                     \
    template void product_colsum_gpu<T>(float *, const T *, const T *, int, int);                           \
    template void layernorm_param_grads_gpu<T>(float *, float *, const T *, const T *, const float *, const float *, int, int);
INSTANTIATE(float)
INSTANTIATE(bf16)
