// gelu.cu: GELU / QuickGELU forward and backward (see gelu.cuh). The forward is a grid-stride loop over
// 16-byte vectors; the backward runs as a column sum (reduce.cuh) whose element op also writes dinp. The
// SwitchBack variants emit int8 rows for the next linear: the forward a block per row (the row in registers),
// the backward through quantize.cuh's fused row-wise quantizer + column sums.
#include "gelu.cuh"
#include "quantize.cuh"
#include "reduce.cuh"

#define INV_SQRT_2PI 0.3989422804014327f

__device__ __forceinline__ float gelu_value(float x, int quick) {
    return quick ? x / (1.0f + expf(-1.702f * x)) : 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
}

__device__ __forceinline__ float gelu_grad(float x, int quick) {
    if (quick) {
        float s = 1.0f / (1.0f + expf(-1.702f * x));
        return s + 1.702f * x * s * (1.0f - s);
    }
    return 0.5f * (1.0f + erff(x * (float)M_SQRT1_2)) + x * expf(-0.5f * x * x) * INV_SQRT_2PI;
}

template <typename T, int V> __global__ void gelu_forward_kernel(T *out, const T *inp, size_t n, int quick) {
    for (size_t j = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V; j < n; j += (size_t)gridDim.x * blockDim.x * V) {
        Vec<T, V> x = load_vec<T, V>(inp + j), y;
        for (int i = 0; i < V; i++) y.v[i] = from_float<T>(gelu_value(to_float(x.v[i]), quick));
        store_vec<T, V>(out + j, y);
    }
}

template <typename T, int V> struct GeluBackwardOp {
    static const int NOUT = 1;
    T *dinp;
    const T *dout, *inp;
    int C, quick;
    __device__ void operator()(int r, int c, float *acc, float *) const {
        size_t o = (size_t)r * C + c;
        Vec<T, V> g = load_vec<T, V>(dout + o), x = load_vec<T, V>(inp + o), d;
        for (int i = 0; i < V; i++) {
            float v = to_float(g.v[i]) * gelu_grad(to_float(x.v[i]), quick);
            d.v[i] = from_float<T>(v);
            acc[i] += v;
        }
        store_vec<T, V>(dinp + o, d);
    }
};

// A block of GF_THREADS per row of C (C % 8 == 0, C <= GF_THREADS * 8 * GF_MAX_VECS): thread t owns the 8-column
// vectors t, t + GF_THREADS, ...; the values stay in registers between the row maximum and the quantization.
#define GF_THREADS 128
#define GF_MAX_VECS 8
__global__ void __launch_bounds__(GF_THREADS) gelu_forward_quantize_kernel(bf16 *out, int8_t *q, float *qs, const bf16 *inp,
                                                                           int C, int quick) {
    size_t off = (size_t)blockIdx.x * C;
    int nv = C / 8, t = threadIdx.x;
    Vec<bf16, 8> y[GF_MAX_VECS];
    float am = 0.0f;
#pragma unroll
    for (int k = 0; k < GF_MAX_VECS; k++) {
        int c = (t + GF_THREADS * k) * 8;
        if (c >= C) break;
        Vec<bf16, 8> x = load_vec<bf16, 8>(inp + off + c);
        for (int i = 0; i < 8; i++) {
            y[k].v[i] = from_float<bf16>(gelu_value(to_float(x.v[i]), quick));
            am = fmaxf(am, fabsf(to_float(y[k].v[i])));
        }
        if (out) store_vec<bf16, 8>(out + off + c, y[k]);
    }
    am = block_max(am);
    float mult = sb_quant_mult(am);
#pragma unroll
    for (int k = 0; k < GF_MAX_VECS; k++) {
        int vec = t + GF_THREADS * k;
        if (vec >= nv) break;
        ((uint2 *)(q + off))[vec] = quantize8(*(const uint4 *)&y[k], mult);
    }
    if (t == 0) qs[blockIdx.x] = am;
}

void gelu_forward_quantize_gpu(bf16 *out, int8_t *q, float *qs, const bf16 *inp, int N, int C, int quick) {
    if (C % 16 || C > GF_THREADS * 8 * GF_MAX_VECS || vec_width<bf16>(C, out, inp, q) == 1) {
        fatal("gelu_forward_quantize_gpu: C = %d must be a multiple of 16 up to %d, rows 16-byte aligned", C,
              GF_THREADS * 8 * GF_MAX_VECS);
    }
    if (N == 0) return;
    gelu_forward_quantize_kernel<<<N, GF_THREADS>>>(out, q, qs, inp, C, quick);
    cudaCheckLaunch();
}

// The backward's rows for the fused quantizer: dinp = dout * gelu'(inp), written (bf16); the column sums (c_fc's bias
// gradient) add the fp32 values, as gelu_backward_bias_gpu does.
struct GeluBackwardRows {
    struct In {
        Vec<bf16, 8> g, x;
    };
    bf16 *dinp;
    const bf16 *dout, *inp;
    int C, quick;
    __device__ In load(int row, int vec) const {
        size_t o = (size_t)row * C + vec * 8;
        return In{load_vec<bf16, 8>(dout + o), load_vec<bf16, 8>(inp + o)};
    }
    __device__ uint4 apply(const In &in, int row, int vec, float *f) const {
        Vec<bf16, 8> d;
        for (int i = 0; i < 8; i++) {
            f[i] = to_float(in.g.v[i]) * gelu_grad(to_float(in.x.v[i]), quick);
            d.v[i] = from_float<bf16>(f[i]);
        }
        store_vec<bf16, 8>(dinp + (size_t)row * C + vec * 8, d);
        return *(const uint4 *)&d;
    }
};

void gelu_backward_quantize_gpu(bf16 *dinp, int8_t *q, float *qs, float *dbias, const bf16 *dout, const bf16 *inp, int N,
                                int C, int quick) {
    if (vec_width<bf16>(C, dinp, dout, inp, q) == 1) {
        fatal("gelu_backward_quantize_gpu: rows of %d must be 16-byte aligned", C);
    }
    if (N == 0) return;
    // chunks of 8 to SB_QC_ROWS rows: about 4 blocks per multiprocessor (the per-element math needs the occupancy)
    int rows = min(SB_QC_ROWS, max(8, ceil_div(ceil_div(N, 4 * num_sms()), 8) * 8)), chunks = ceil_div(N, rows);
    float *partial = colsum_partials((size_t)chunks * C);
    rowwise_colsums_run(q, qs, partial, GeluBackwardRows{dinp, dout, inp, C, quick}, N, C, rows, "gelu_backward_quantize_gpu", 0);
    colsum_finish_gpu(dbias, NULL, partial, chunks, C);
}

static int grid_for(size_t n) { return (int)(n / 256 + 1 < (size_t)16 * num_sms() ? n / 256 + 1 : (size_t)16 * num_sms()); }

template <typename T> void gelu_forward_gpu(T *out, const T *inp, size_t n, int quick) {
    if (n == 0) return;
    if (vec_width<T>(n, out, inp) > 1) gelu_forward_kernel<T, 16 / sizeof(T)><<<grid_for(n), 256>>>(out, inp, n, quick);
    else gelu_forward_kernel<T, 1><<<grid_for(n), 256>>>(out, inp, n, quick);
    cudaCheckLaunch();
}

template <typename T> void gelu_backward_bias_gpu(T *dinp, float *dbias, const T *dout, const T *inp, int N, int C, int quick) {
    const int V = 16 / sizeof(T);
    if (vec_width<T>(C, dinp, dout, inp) > 1) colsum_run<V>(dbias, NULL, GeluBackwardOp<T, V>{dinp, dout, inp, C, quick}, N, C);
    else colsum_run<1>(dbias, NULL, GeluBackwardOp<T, 1>{dinp, dout, inp, C, quick}, N, C);
}

template void gelu_forward_gpu<float>(float *, const float *, size_t, int);
template void gelu_forward_gpu<bf16>(bf16 *, const bf16 *, size_t, int);
template void gelu_backward_bias_gpu<float>(float *, float *, const float *, const float *, int, int, int);
template void gelu_backward_bias_gpu<bf16>(bf16 *, float *, const bf16 *, const bf16 *, int, int, int);
