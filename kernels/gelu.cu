// gelu.cu: GELU / QuickGELU forward and backward (see gelu.cuh). The forward is a grid-stride loop over
// 16-byte vectors; the backward runs as a column sum (reduce.cuh) whose element op also writes dinp and, when
// asked, the recomputed forward output (gelu_vec: the forward's own computation, so bit-identical). The
// SwitchBack variants emit int8 rows for the next linear: the forward a persistent block per row at a time (the
// row in registers), the backward through quantize.cuh's fused row-wise quantizer + column sums.
// bf16 inputs take 65,536 values, so the bf16 kernels look GELU and its gradient up in tables (shared memory)
// instead of evaluating erf: ~20 instructions an element, which bound the int8 forward. fp32 evaluates the formulas.
#include <math.h>
#include <string.h>
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

// ---- The bf16 tables. Per sign, the 2048 inputs with |x| in [2^-10, 64) (16 binades of 128 values): the exact
// GELU rounded to bf16 (what the bf16 kernels store) and the exact gradient rounded to fp32, computed in double
// (Phi from erfc: no cancellation in the negative tail, where 0.5 x (1 + erff) is wrong in bf16 below x ~ -4.6).
// Outside: |x| < 2^-10 gives gelu(x) = 0.5 x (the relative change 0.8 |x| < 2^-9 never reaches a bf16 rounding
// boundary) and gelu'(x) = 0.5 + c1 x (the next term, ~0.3 x^3, is below 2^-30 of 0.5); |x| >= 64 gives x or -0
// and 1 or 0 (the tails of both functions underflow even bf16 / fp32 denormals there); NaN stays NaN.
__device__ __align__(16) uint16_t gelu_value_lut[2][2 * GELU_LUT_N];  // [quick][sign * GELU_LUT_N + i], bf16 bits
__device__ __align__(16) float gelu_grad_lut[2][2 * GELU_LUT_N];
__shared__ __align__(16) uint16_t gelu_value_smem[2 * GELU_LUT_N];  // the block's copy (8 KB; 16 KB for grad)
__shared__ __align__(16) float gelu_grad_smem[2 * GELU_LUT_N];

// gelu'(x) from its table (the lookup of gelu.cuh's gelu_bf16, with the gradient's tails).
__device__ __forceinline__ float gelu_grad_bf16(const float *tab, uint32_t b, float tiny_slope) {
    uint32_t u, i = gelu_lut_slot(b, &u);
    float x = __uint_as_float(b << 16), t = tab[i];
    return u < GELU_LUT_N ? t : fabsf(x) < 1.0f ? fmaf(x, tiny_slope, 0.5f) : (x < 0.0f ? 0.0f : (x > 0.0f ? 1.0f : x));
}
// gelu'(x) = 0.5 + slope x + O(x^3) near 0
__device__ __forceinline__ float gelu_tiny_slope(int quick) { return quick ? 0.851f : 2.0f * INV_SQRT_2PI; }
__device__ __forceinline__ uint32_t bf16_bits(bf16 x) { return __bfloat16_as_ushort(x); }
// GELU of 8 bf16. When the 8 inputs of every active lane lie in the table (a warp vote; nearly always), 8 lookups
// whose bf16 bits are the results (~8 instructions an element); else element by element, with the tails. With
// d = bits - GELU_LUT_LO, an input is in the table exactly when d's bits 11-14 are clear (either sign), and its
// slot is d's low 11 bits plus its bit 15 moved to bit 11.
__device__ __forceinline__ Vec<bf16, 8> gelu8_bf16(const uint16_t *tab, Vec<bf16, 8> x) {
    uint32_t d[8], any = 0;
    for (int i = 0; i < 8; i++) d[i] = bf16_bits(x.v[i]) - GELU_LUT_LO, any |= d[i];
    Vec<bf16, 8> y;
    if (__all_sync(__activemask(), (any & 0x7800) == 0))
        for (int i = 0; i < 8; i++) y.v[i] = __ushort_as_bfloat16(tab[(d[i] & 0x7FF) | (d[i] >> 4 & 0x800)]);
    else
        for (int i = 0; i < 8; i++) y.v[i] = from_float<bf16>(gelu_bf16(tab, bf16_bits(x.v[i])));
    return y;
}
// Copies a table into the block's shared memory (all threads of the block call it, before any lookup).
__device__ void smem_fill(void *dst, const void *src, int bytes) {
    int t = threadIdx.y * blockDim.x + threadIdx.x, nt = blockDim.x * blockDim.y;
    for (int i = t; i < bytes / 16; i += nt) ((uint4 *)dst)[i] = ((const uint4 *)src)[i];
    __syncthreads();
}
__device__ const uint16_t *gelu_value_prepare(int quick) {
    smem_fill(gelu_value_smem, gelu_value_lut[quick], sizeof(gelu_value_smem));
    return gelu_value_smem;
}
__device__ const float *gelu_grad_prepare(int quick) {
    smem_fill(gelu_grad_smem, gelu_grad_lut[quick], sizeof(gelu_grad_smem));
    return gelu_grad_smem;
}

// GELU of V elements as every kernel writing a bf16 or fp32 GELU output computes it, so that the backward's
// recomputed output equals the forward's bit for bit: bf16 from the block's table (gelu_value_prepare first; the
// 8-wide and the scalar lookups agree element by element), fp32 by the formula.
template <typename T, int V> __device__ __forceinline__ Vec<T, V> gelu_vec(Vec<T, V> x, int quick) {
    Vec<T, V> y;
    if constexpr (sizeof(T) == 2 && V == 8) y = gelu8_bf16(gelu_value_smem, x);
    else
        for (int i = 0; i < V; i++) {
            if constexpr (sizeof(T) == 2) y.v[i] = from_float<T>(gelu_bf16(gelu_value_smem, bf16_bits(x.v[i])));
            else y.v[i] = from_float<T>(gelu_value(to_float(x.v[i]), quick));
        }
    return y;
}

// The exact value x rounded to bf16 (nearest, ties to even), not through a double rounding to fp32 first.
static uint16_t bf16_bits_of(double x) {
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0xFFFF) == 0x8000 && (double)f != x) u += fabs(x) > fabs((double)f) ? 1 : -1;  // not a tie in truth
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

// Fills the tables on the device at the first bf16 call (one device per process).
static void gelu_luts_init(void) {
    static int done = 0;
    if (done) return;
    static uint16_t val[2][2 * GELU_LUT_N];
    static float grad[2][2 * GELU_LUT_N];
    for (int quick = 0; quick < 2; quick++)
        for (int i = 0; i < 2 * GELU_LUT_N; i++) {
            uint32_t bits = (uint32_t)(GELU_LUT_LO + i % GELU_LUT_N | (i / GELU_LUT_N) << 15) << 16;
            float xf;
            memcpy(&xf, &bits, 4);
            double x = xf, v, g;
            if (quick) {
                double s = 1.0 / (1.0 + exp(-1.702 * x)), r = 1.0 / (1.0 + exp(1.702 * x));  // r = 1 - s
                v = x * s, g = s + 1.702 * x * s * r;
            } else {
                double p = 0.5 * erfc(-x * M_SQRT1_2);
                v = x * p, g = p + x * exp(-0.5 * x * x) * 0.39894228040143267794;
            }
            val[quick][i] = bf16_bits_of(v), grad[quick][i] = (float)g;
        }
    cudaCheck(cudaMemcpyToSymbol(gelu_value_lut, val, sizeof(val)));
    cudaCheck(cudaMemcpyToSymbol(gelu_grad_lut, grad, sizeof(grad)));
    done = 1;
}

const uint16_t *gelu_value_table(int quick) {
    static void *v = NULL;  // looked up once: c_fc's GEMM asks at every launch
    if (!v) {
        gelu_luts_init();
        cudaCheck(cudaGetSymbolAddress(&v, gelu_value_lut));
    }
    return (const uint16_t *)v + (quick ? 2 * GELU_LUT_N : 0);
}

template <typename T, int V> __global__ void gelu_forward_kernel(T *out, const T *inp, size_t n, int quick) {
    if constexpr (sizeof(T) == 2) gelu_value_prepare(quick);
    for (size_t j = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V; j < n; j += (size_t)gridDim.x * blockDim.x * V)
        store_vec<T, V>(out + j, gelu_vec<T, V>(load_vec<T, V>(inp + j), quick));
}

// The backward's element op; act: where to write gelu(inp) too, or NULL (the value table is filled only then).
template <typename T, int V> struct GeluBackwardOp {
    static const int NOUT = 1;
    T *dinp, *act;
    const T *dout, *inp;
    int C, quick;
    __device__ void prepare() const {
        if constexpr (sizeof(T) == 2) {
            gelu_grad_prepare(quick);
            if (act) gelu_value_prepare(quick);
        }
    }
    __device__ float grad(T x) const {
        if constexpr (sizeof(T) == 2) return gelu_grad_bf16(gelu_grad_smem, bf16_bits(x), gelu_tiny_slope(quick));
        else return gelu_grad(x, quick);
    }
    __device__ void operator()(int r, int c, float *acc, float *) const {
        size_t o = (size_t)r * C + c;
        Vec<T, V> g = load_vec<T, V>(dout + o), x = load_vec<T, V>(inp + o), d;
        // act first: bf16 (V = 8) then needs 45 registers on sm_90a, not 58 (4 blocks of 256 per multiprocessor, fewer
        // than colsum_run launches at C = 5120)
        if (act) store_vec<T, V>(act + o, gelu_vec<T, V>(x, quick));
        for (int i = 0; i < V; i++) {
            float v = to_float(g.v[i]) * grad(x.v[i]);
            d.v[i] = from_float<T>(v);
            acc[i] += v;
        }
        store_vec<T, V>(dinp + o, d);
    }
};

// Persistent blocks of GF_THREADS, a row of C at a time (C % 8 == 0, C <= GF_THREADS * 8 * GF_MAX_VECS): thread t
// owns the 8-column vectors t, t + GF_THREADS, ... (NV of them at most: ceil(C / 8 / GF_THREADS), a template argument
// so that the registers hold only those); all of a row's loads are issued before any use, and the values stay in
// registers between the row maximum and the quantization.
#define GF_THREADS 128
#define GF_MAX_VECS 8
template <int NV>
__global__ void __launch_bounds__(GF_THREADS) gelu_forward_quantize_kernel(bf16 *out, int8_t *q, float *qs, const bf16 *inp,
                                                                           int N, int C, int quick) {
    const uint16_t *tab = gelu_value_prepare(quick);
    int nv = C / 8, t = threadIdx.x;
    for (int row = blockIdx.x; row < N; row += gridDim.x) {
        size_t off = (size_t)row * C;
        Vec<bf16, 8> y[NV];
#pragma unroll
        for (int k = 0; k < NV; k++)
            if (t + GF_THREADS * k < nv) y[k] = load_vec<bf16, 8>(inp + off + (t + GF_THREADS * k) * 8);
        float am = 0.0f;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int vec = t + GF_THREADS * k;
            if (vec >= nv) break;
            y[k] = gelu8_bf16(tab, y[k]);
            am = fmaxf(am, absmax8(*(const uint4 *)&y[k]));
            if (out) store_vec<bf16, 8>(out + off + vec * 8, y[k]);
        }
        am = block_max(am);
        float mult = sb_quant_mult(am);
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int vec = t + GF_THREADS * k;
            if (vec >= nv) break;
            ((uint2 *)(q + off))[vec] = quantize8(*(const uint4 *)&y[k], mult);
        }
        if (t == 0) qs[row] = am;
    }
}

template <int NV> static void gelu_forward_quantize_launch(bf16 *out, int8_t *q, float *qs, const bf16 *inp, int N, int C, int quick) {
    static int per_sm = 0;  // as many blocks as fit at once
    if (!per_sm) cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gelu_forward_quantize_kernel<NV>, GF_THREADS, 0));
    gelu_forward_quantize_kernel<NV><<<min(N, per_sm * num_sms()), GF_THREADS>>>(out, q, qs, inp, N, C, quick);
    cudaCheckLaunch();
}

void gelu_forward_quantize_gpu(bf16 *out, int8_t *q, float *qs, const bf16 *inp, int N, int C, int quick) {
    if (C % 16 || C > GF_THREADS * 8 * GF_MAX_VECS || vec_width<bf16>(C, out, inp, q) == 1) {
        fatal("gelu_forward_quantize_gpu: C = %d must be a multiple of 16 up to %d, rows 16-byte aligned", C,
              GF_THREADS * 8 * GF_MAX_VECS);
    }
    if (N == 0) return;
    gelu_luts_init();
    switch (ceil_div(C / 8, GF_THREADS)) {
    case 1: gelu_forward_quantize_launch<1>(out, q, qs, inp, N, C, quick); break;
    case 2: gelu_forward_quantize_launch<2>(out, q, qs, inp, N, C, quick); break;
    case 3: gelu_forward_quantize_launch<3>(out, q, qs, inp, N, C, quick); break;
    case 4: gelu_forward_quantize_launch<4>(out, q, qs, inp, N, C, quick); break;
    case 5: gelu_forward_quantize_launch<5>(out, q, qs, inp, N, C, quick); break;
    case 6: gelu_forward_quantize_launch<6>(out, q, qs, inp, N, C, quick); break;
    case 7: gelu_forward_quantize_launch<7>(out, q, qs, inp, N, C, quick); break;
    default: gelu_forward_quantize_launch<8>(out, q, qs, inp, N, C, quick); break;
    }
}

// The backward's rows for the fused quantizer: dinp = dout * gelu'(inp), written (bf16); the column sums (c_fc's bias
// gradient) add the fp32 values, as gelu_backward_bias_gpu does; act as in GeluBackwardOp.
struct GeluBackwardRows {
    struct In {
        Vec<bf16, 8> g, x;
    };
    bf16 *dinp, *act;
    const bf16 *dout, *inp;
    int C, quick;
    __device__ void prepare() const {
        gelu_grad_prepare(quick);
        if (act) gelu_value_prepare(quick);
    }
    __device__ In load(int row, int vec) const {
        size_t o = (size_t)row * C + vec * 8;
        return In{load_vec<bf16, 8>(dout + o), load_vec<bf16, 8>(inp + o)};
    }
    __device__ uint4 apply(const In &in, int row, int vec, float *f) const {
        // act first: 113-121 registers at C = 2048-5120 on sm_90a, so 2 blocks of 256 per multiprocessor as without
        // act; written after dinp, 160 (1 block)
        if (act) store_vec<bf16, 8>(act + (size_t)row * C + vec * 8, gelu_vec<bf16, 8>(in.x, quick));
        Vec<bf16, 8> d;
        for (int i = 0; i < 8; i++) {
            f[i] = to_float(in.g.v[i]) * gelu_grad_bf16(gelu_grad_smem, bf16_bits(in.x.v[i]), gelu_tiny_slope(quick));
            d.v[i] = from_float<bf16>(f[i]);
        }
        store_vec<bf16, 8>(dinp + (size_t)row * C + vec * 8, d);
        return *(const uint4 *)&d;
    }
};

void gelu_backward_quantize_gpu(bf16 *dinp, bf16 *act, int8_t *q, float *qs, float *dbias, const bf16 *dout, const bf16 *inp,
                                int N, int C, int quick) {
    if (vec_width<bf16>(C, dinp, act, dout, inp, q) == 1) {
        fatal("gelu_backward_quantize_gpu: rows of %d must be 16-byte aligned", C);
    }
    if (N == 0) return;
    gelu_luts_init();
    int rows = rowwise_colsums_rows(N), chunks = ceil_div(N, rows);
    float *partial = colsum_partials((size_t)chunks * C);
    rowwise_colsums_run(q, qs, partial, GeluBackwardRows{dinp, act, dout, inp, C, quick}, N, C, rows, "gelu_backward_quantize_gpu", 0);
    colsum_finish_gpu(dbias, NULL, partial, chunks, C);
}

static int grid_for(size_t n) { return (int)(n / 256 + 1 < (size_t)16 * num_sms() ? n / 256 + 1 : (size_t)16 * num_sms()); }

template <typename T> void gelu_forward_gpu(T *out, const T *inp, size_t n, int quick) {
    if (n == 0) return;
    if (sizeof(T) == 2) gelu_luts_init();
    if (vec_width<T>(n, out, inp) > 1) gelu_forward_kernel<T, 16 / sizeof(T)><<<grid_for(n), 256>>>(out, inp, n, quick);
    else gelu_forward_kernel<T, 1><<<grid_for(n), 256>>>(out, inp, n, quick);
    cudaCheckLaunch();
}

template <typename T>
void gelu_backward_bias_gpu(T *dinp, T *act, float *dbias, const T *dout, const T *inp, int N, int C, int quick) {
    const int V = 16 / sizeof(T);
    if (sizeof(T) == 2) gelu_luts_init();
    if (vec_width<T>(C, dinp, act, dout, inp) > 1) colsum_run<V>(dbias, NULL, GeluBackwardOp<T, V>{dinp, act, dout, inp, C, quick}, N, C);
    else colsum_run<1>(dbias, NULL, GeluBackwardOp<T, 1>{dinp, act, dout, inp, C, quick}, N, C);
}

template void gelu_forward_gpu<float>(float *, const float *, size_t, int);
template void gelu_forward_gpu<bf16>(bf16 *, const bf16 *, size_t, int);
template void gelu_backward_bias_gpu<float>(float *, float *, float *, const float *, const float *, int, int, int);
template void gelu_backward_bias_gpu<bf16>(bf16 *, bf16 *, float *, const bf16 *, const bf16 *, int, int, int);
