// gelu.cu: GELU / QuickGELU forward and backward (see gelu.cuh). The forward is a grid-stride loop over
// 16-byte vectors; the backward runs as a column sum (reduce.cuh) whose element op also writes dinp.
#include "gelu.cuh"
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
