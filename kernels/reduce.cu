// reduce.cu: column sums accumulated into fp32 (see reduce.cuh): the element operations of the plain
// and product sums, the partial-sum scratch, the row split and the in-order finish.
#include "reduce.cuh"

template <typename T, int V> struct SumOp {
    static const int NOUT = 1;
    const T *a;
    long ld;
    __device__ void prepare() const {}
    __device__ void operator()(int r, int c, float *acc, float *) const {
        Vec<T, V> x = load_vec<T, V>(a + (size_t)r * ld + c);
        for (int i = 0; i < V; i++) acc[i] += to_float(x.v[i]);
    }
};

template <typename T, int V> struct ProductOp {
    static const int NOUT = 1;
    const T *a, *b;
    int C;
    __device__ void prepare() const {}
    __device__ void operator()(int r, int c, float *acc, float *) const {
        Vec<T, V> x = load_vec<T, V>(a + (size_t)r * C + c), y = load_vec<T, V>(b + (size_t)r * C + c);
        for (int i = 0; i < V; i++) acc[i] += to_float(x.v[i]) * to_float(y.v[i]);
    }
};

// A block of 32 x ny threads (ny = min(chunks, 32)) owns 32 columns of one output (blockIdx.y: out, out2, out3,
// out4): thread (x, y) adds chunks y, y + ny, ... in order, then row y = 0 adds the ny results in order. Many chunks
// (a kernel's whole wave of blocks) stay cheap: each thread reads chunks / 32 of them; few chunks over many columns
// (the positional gradients' sums over a batch) take small blocks.
__global__ void colsum_finish_kernel(float *out, float *out2, float *out3, float *out4, const float *partial, int chunks, int C) {
    __shared__ float red[32][33];
    int tx = threadIdx.x, ty = threadIdx.y, ny = blockDim.y, c = blockIdx.x * 32 + tx, o = blockIdx.y;
    float s = 0.0f;
    if (c < C) {
        const float *p = partial + (size_t)o * chunks * C + c;
#pragma unroll 8
        for (int k = ty; k < chunks; k += ny) s += p[(size_t)k * C];
    }
    red[ty][tx] = s;
    __syncthreads();
    if (ty || c >= C) return;
    for (int y = 1; y < ny; y++) s += red[y][tx];
    float *dst = o == 0 ? out : o == 1 ? out2 : o == 2 ? out3 : out4;
    if (dst) dst[c] += s;
}

// Grown on demand (the first calls of a run size it for good).
float *colsum_partials(size_t elems) {
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

void colsum_finish_gpu(float *out, float *out2, const float *partial, int chunks, int C, float *out3, float *out4, cudaStream_t stream) {
    int nout = out4 ? 4 : out3 ? 3 : out2 ? 2 : 1;
    dim3 block(32, max(1, min(chunks, 32)));
    colsum_finish_kernel<<<dim3(ceil_div(C, 32), nout), block, 0, stream>>>(out, out2, out3, out4, partial, chunks, C);
    cudaCheckLaunch();
}

void colsum_split(int N, int C, int V, int *chunks, int *rows_per_chunk) {
    // about four blocks per multiprocessor, at least 32 rows per chunk
    int col_blocks = ceil_div(C, 32 * V), n = ceil_div(4 * num_sms(), col_blocks);
    n = max(1, min(n, ceil_div(N, 32)));
    *rows_per_chunk = ceil_div(N, n);
    *chunks = ceil_div(N, *rows_per_chunk);
}

template <typename T> void bias_grad_gpu(float *db, const T *a, int N, int C, long ld) {
    const int V = 16 / sizeof(T);
    if (vec_width<T>(C, a) > 1 && ld % V == 0) colsum_run<V>(db, NULL, SumOp<T, V>{a, ld}, N, C);
    else colsum_run<1>(db, NULL, SumOp<T, 1>{a, ld}, N, C);
}

template <typename T> void product_colsum_gpu(float *out, const T *a, const T *b, int N, int C) {
    const int V = 16 / sizeof(T);
    if (vec_width<T>(C, a, b) > 1) colsum_run<V>(out, NULL, ProductOp<T, V>{a, b, C}, N, C);
    else colsum_run<1>(out, NULL, ProductOp<T, 1>{a, b, C}, N, C);
}

#define INSTANTIATE(T)                                                                                      \
    template void bias_grad_gpu<T>(float *, const T *, int, int, long);                                     \
    template void product_colsum_gpu<T>(float *, const T *, const T *, int, int);
INSTANTIATE(float)
INSTANTIATE(bf16)
