// adamw.cu: fused multi-tensor AdamW / StableAdamW over a plan (all elements or a ZeRO-1 shard), the gradient
// statistics pass (sums of squares for the gradient norm, RMS sums), parameter copy, the zeroing of the gradients the
// backward adds into (see adamw.cuh).
#include <stdlib.h>

#include "adamw.cuh"

// Every chunk kernel runs ADAMW_THREADS threads per block; thread x visits the chunk's elements x, x + ADAMW_THREADS,
// ... in that order (the order of its share of the sums). chunk_for issues the loads of ADAMW_UNROLL of them
// first, then updates them in the same order: more bytes in flight than one element at a time, same arithmetic.
// On the H100 at ViT-H/14 (tests/bench_adamw.cu, docs/benchmarks.md) 16 at a time took the norm pass from 68% to
// 92% of DRAM bandwidth and moments/apply from 84-85% to 85-86%; 4 and 8 did less, 8 with 3 blocks per SM spilled.
// The results were bit-identical to the one-at-a-time loop there (bench_adamw's checksums); that rests on nvcc
// contracting the same expressions to the same FMAs, which is not promised (with 4, the norm's sum differed).
#define ADAMW_THREADS 512
#define ADAMW_UNROLL 16

// load(i, v) reads element i's N inputs into v; update(i, v) computes and stores element i.
template <int N, typename Load, typename Update> __device__ __forceinline__ void chunk_for(int len, Load load, Update update) {
    for (int base = threadIdx.x; base < len; base += ADAMW_UNROLL * ADAMW_THREADS) {
        float v[ADAMW_UNROLL][N];
#pragma unroll
        for (int k = 0; k < ADAMW_UNROLL; k++)
            if (base + k * ADAMW_THREADS < len) load(base + k * ADAMW_THREADS, v[k]);
#pragma unroll
        for (int k = 0; k < ADAMW_UNROLL; k++)
            if (base + k * ADAMW_THREADS < len) update(base + k * ADAMW_THREADS, v[k]);
    }
}

// The per-element arithmetic, shared by every kernel (FMAs written out, so that the stats pass and the moments
// pass compute the same u' and the same ratio whatever the compiler contracts).
__device__ __forceinline__ float adam_m(float m, float g, float b1t) { return __fmaf_rn(b1t, m, (1.0f - b1t) * g); }
__device__ __forceinline__ float adam_u(float u, float g, float b2t) { return __fmaf_rn(b2t, u, (1.0f - b2t) * g * g); }
__device__ __forceinline__ float rms_term(float g, float u, float eps) { return g * g / fmaxf(u, eps * eps); }
__device__ __forceinline__ float adam_p(float p, float m, float u, float decay, float lr_t, float eps) {
    return __fmaf_rn(p, decay, -(lr_t * m / (sqrtf(u) + eps)));
}

__global__ void __launch_bounds__(ADAMW_THREADS) adamw_moments_kernel(float *partial, const float *grads, float *m, float *u,
                                                                     const long *chunk_offset, const long *chunk_state, const int *chunk_len,
                                                                     float b1t, float b2t, float eps, float grad_scale) {
    int c = blockIdx.x;
    const float *gc = grads + chunk_offset[c];
    float *mc = m + chunk_state[c], *uc = u + chunk_state[c], ratio = 0.0f;
    chunk_for<3>(chunk_len[c], [&](int i, float *v) { v[0] = gc[i], v[1] = mc[i], v[2] = uc[i]; },
                 [&](int i, float *v) {
                     float g = v[0] * grad_scale, uk = adam_u(v[2], g, b2t);
                     mc[i] = adam_m(v[1], g, b1t), uc[i] = uk;
                     ratio += rms_term(g, uk, eps);
                 });
    ratio = block_sum(ratio);
    if (threadIdx.x == 0) partial[c] = ratio;
}

// The gradient statistics pass: sum of g^2 per chunk (one FMA an element, with or without u: the ratio's g^2 must
// not become the sum's addend), and with u the RMS sum the moments pass would make (u read, not written: a step
// that turns out non-finite leaves the moments as they were).
__global__ void __launch_bounds__(ADAMW_THREADS) adamw_stats_kernel(float *partial_sq, float *partial, const float *grads, const float *u,
                                                                   const long *chunk_offset, const long *chunk_state,
                                                                   const int *chunk_len, float b2t, float eps) {
    int c = blockIdx.x;
    const float *gc = grads + chunk_offset[c], *uc = u ? u + chunk_state[c] : NULL;
    float sq = 0.0f, ratio = 0.0f;
    if (uc)
        chunk_for<2>(chunk_len[c], [&](int i, float *v) { v[0] = gc[i], v[1] = uc[i]; },
                     [&](int i, float *v) { sq = __fmaf_rn(v[0], v[0], sq), ratio += rms_term(v[0], adam_u(v[1], v[0], b2t), eps); });
    else chunk_for<1>(chunk_len[c], [&](int i, float *v) { v[0] = gc[i]; }, [&](int i, float *v) { sq = __fmaf_rn(v[0], v[0], sq); });
    sq = block_sum(sq);
    if (uc) ratio = block_sum(ratio);  // uniform over the block
    if (threadIdx.x == 0) partial_sq[c] = sq, partial[c] = ratio;
}

// One block per tensor: the sum (in chunk order) or the maximum of its chunks' partials (0 for a tensor with no
// chunk here).
template <int MAX> __global__ void tensor_reduce_kernel(float *out, const float *partial, const int *tensor_first_chunk) {
    int t = blockIdx.x;
    float s = 0.0f;
    for (int k = tensor_first_chunk[t] + threadIdx.x; k < tensor_first_chunk[t + 1]; k += blockDim.x)
        s = MAX ? fmaxf(s, partial[k]) : s + partial[k];
    s = MAX ? block_max(s) : block_sum(s);
    if (threadIdx.x == 0) out[t] = s;
}

__global__ void rms_kernel(float *rms, const float *tensor_sum, const long *tensor_numel, int num_tensors) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < num_tensors) rms[t] = sqrtf(tensor_sum[t] / (float)tensor_numel[t]);
}

// The parameter update of a chunk from its moments (read, or computed from the gradient first by the fused step:
// MOMENTS), with params_bf16 also its bf16 copy and chunk_absmax[c] = max |bf16 copy| over the chunk, and with
// partial (MOMENTS only) the chunk's RMS sum as adamw_moments_kernel makes it (same order, same bits).
template <bool MOMENTS>
__global__ void __launch_bounds__(ADAMW_THREADS) adamw_apply_kernel(float *params, bf16 *params_bf16, float *chunk_absmax, float *partial,
                                                                   const float *grads, float *m, float *u, const float *rms,
                                                                   const int *chunk_tensor, const long *chunk_offset, const long *chunk_state,
                                                                   const int *chunk_len, const float *tensor_wd, float b1t, float b2t,
                                                                   float lr, float eps, int clip) {
    int c = blockIdx.x, t = chunk_tensor[c];
    float lr_t = clip ? lr / fmaxf(1.0f, rms[t]) : lr, decay = __fmaf_rn(-lr, tensor_wd[t], 1.0f), am = 0.0f, ratio = 0.0f;
    float *pc = params + chunk_offset[c];
    bf16 *hc = params_bf16 ? params_bf16 + chunk_offset[c] : NULL;
    float *mc = m + chunk_state[c], *uc = u + chunk_state[c];
    const float *gc = MOMENTS ? grads + chunk_offset[c] : NULL;
    chunk_for<MOMENTS ? 4 : 3>(chunk_len[c],
                               [&](int i, float *v) {
                                   v[0] = pc[i], v[1] = mc[i], v[2] = uc[i];
                                   if constexpr (MOMENTS) v[3] = gc[i];
                               },
                               [&](int i, float *v) {
                                   if constexpr (MOMENTS) {
                                       v[1] = adam_m(v[1], v[3], b1t), v[2] = adam_u(v[2], v[3], b2t);
                                       mc[i] = v[1], uc[i] = v[2];
                                       if (partial) ratio += rms_term(v[3], v[2], eps);
                                   }
                                   float p = adam_p(v[0], v[1], v[2], decay, lr_t, eps);
                                   pc[i] = p;
                                   if (hc) {
                                       bf16 h = __float2bfloat16_rn(p);
                                       hc[i] = h;
                                       am = fmaxf(am, fabsf(__bfloat162float(h)));
                                   }
                               });
    if (partial) {  // uniform over the block, as params_bf16 below: the barriers in block_sum and block_max are safe
        ratio = block_sum(ratio);
        if (threadIdx.x == 0) partial[c] = ratio;
    }
    if (!params_bf16) return;
    am = block_max(am);
    if (threadIdx.x == 0) chunk_absmax[c] = am;
}

__global__ void sum_kernel(float *out, const float *partial, int n) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *out = s;
}

// dst = src converted (to bf16: round to nearest even)
template <typename D, typename S> __global__ void convert_kernel(D *dst, const S *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = from_float<D>(to_float(src[i]));
}

__global__ void clamp_scalar_kernel(float *x, float lo, float hi) { *x = fminf(fmaxf(*x, lo), hi); }

template <typename X> static X *upload(const X *h, size_t n) {
    X *d;
    cudaCheck(cudaMalloc(&d, n * sizeof(X)));
    cudaCheck(cudaMemcpy(d, h, n * sizeof(X), cudaMemcpyHostToDevice));
    return d;
}

void adamw_plan_init(AdamWPlan *p, int num_tensors, const size_t *offset, const size_t *numel, const int *decay, float wd,
                     int num_segments, const size_t *seg_lo, const size_t *seg_hi) {
    // no segments: one covering every tensor, its moments at the flat offsets
    size_t all_hi = 0, zero = 0;
    for (int t = 0; t < num_tensors; t++) all_hi = offset[t] + numel[t] > all_hi ? offset[t] + numel[t] : all_hi;
    if (num_segments == 0) num_segments = 1, seg_lo = &zero, seg_hi = &all_hi;
    size_t *seg_state = (size_t *)malloc(num_segments * sizeof(size_t)), state = 0;
    for (int s = 0; s < num_segments; s++) seg_state[s] = state, state += seg_hi[s] - seg_lo[s];
    int cap = 0;  // chunks: one per ADAMW_CHUNK of each (tensor, segment) overlap
    for (int t = 0; t < num_tensors; t++)
        for (int s = 0; s < num_segments; s++) {
            size_t lo = offset[t] > seg_lo[s] ? offset[t] : seg_lo[s], hi = offset[t] + numel[t] < seg_hi[s] ? offset[t] + numel[t] : seg_hi[s];
            if (lo < hi) cap += (int)((hi - lo + ADAMW_CHUNK - 1) / ADAMW_CHUNK);
        }
    int *ct = (int *)malloc((cap + 1) * sizeof(int)), *cl = (int *)malloc((cap + 1) * sizeof(int)), *first = (int *)malloc((num_tensors + 1) * sizeof(int));
    long *co = (long *)malloc((cap + 1) * sizeof(long)), *cs = (long *)malloc((cap + 1) * sizeof(long)), *tn = (long *)malloc(num_tensors * sizeof(long));
    float *twd = (float *)malloc(num_tensors * sizeof(float));
    if (!seg_state || !ct || !cl || !first || !co || !cs || !tn || !twd) {
        fatal("adamw_plan_init: out of host memory");
    }
    int c = 0;
    for (int t = 0; t < num_tensors; t++) {
        first[t] = c, tn[t] = (long)numel[t], twd[t] = decay[t] ? wd : 0.0f;
        for (int s = 0; s < num_segments; s++) {
            size_t lo = offset[t] > seg_lo[s] ? offset[t] : seg_lo[s], hi = offset[t] + numel[t] < seg_hi[s] ? offset[t] + numel[t] : seg_hi[s];
            for (size_t k = lo; k < hi; k += ADAMW_CHUNK, c++)
                ct[c] = t, co[c] = (long)k, cs[c] = (long)(seg_state[s] + k - seg_lo[s]), cl[c] = (int)(hi - k < ADAMW_CHUNK ? hi - k : ADAMW_CHUNK);
        }
    }
    first[num_tensors] = c;
    p->num_tensors = num_tensors, p->num_chunks = c, p->state_elems = state;
    p->chunk_tensor = upload(ct, c + 1), p->chunk_offset = upload(co, c + 1), p->chunk_state = upload(cs, c + 1), p->chunk_len = upload(cl, c + 1);
    p->tensor_first_chunk = upload(first, num_tensors + 1), p->tensor_numel = upload(tn, num_tensors);
    p->tensor_wd = upload(twd, num_tensors);
    cudaCheck(cudaMalloc(&p->partial, (c + 1) * sizeof(float)));
    cudaCheck(cudaMalloc(&p->partial_sq, (c + 1) * sizeof(float)));
    cudaCheck(cudaMalloc(&p->tensor_sum, num_tensors * sizeof(float)));
    cudaCheck(cudaMalloc(&p->rms, num_tensors * sizeof(float)));
    cudaCheck(cudaMalloc(&p->chunk_absmax, (c + 1) * sizeof(float)));
    cudaCheck(cudaMalloc(&p->tensor_absmax, num_tensors * sizeof(float)));
    cudaCheck(cudaMemset(p->rms, 0, num_tensors * sizeof(float)));
    free(seg_state), free(ct), free(cl), free(first), free(co), free(cs), free(tn), free(twd);
}

void adamw_plan_free(AdamWPlan *p) {
    cudaCheck(cudaFree(p->chunk_tensor)), cudaCheck(cudaFree(p->chunk_offset)), cudaCheck(cudaFree(p->chunk_state));
    cudaCheck(cudaFree(p->chunk_len)), cudaCheck(cudaFree(p->tensor_first_chunk)), cudaCheck(cudaFree(p->tensor_numel));
    cudaCheck(cudaFree(p->tensor_wd)), cudaCheck(cudaFree(p->partial)), cudaCheck(cudaFree(p->partial_sq)), cudaCheck(cudaFree(p->tensor_sum)), cudaCheck(cudaFree(p->rms));
    cudaCheck(cudaFree(p->chunk_absmax)), cudaCheck(cudaFree(p->tensor_absmax));
}

// p->tensor_sum from the chunks' partial sums (p->partial).
static void tensor_sums(const AdamWPlan *p) {
    tensor_reduce_kernel<0><<<p->num_tensors, 256>>>(p->tensor_sum, p->partial, p->tensor_first_chunk);
    cudaCheckLaunch();
}

void adamw_moments_gpu(const AdamWPlan *p, const float *grads, float *m, float *u, float b1t, float b2t, float eps, float grad_scale) {
    if (p->num_chunks) {
        adamw_moments_kernel<<<p->num_chunks, ADAMW_THREADS>>>(p->partial, grads, m, u, p->chunk_offset, p->chunk_state, p->chunk_len, b1t,
                                                     b2t, eps, grad_scale);
        cudaCheckLaunch();
    }
    tensor_sums(p);
}

void adamw_rms_gpu(const AdamWPlan *p) {
    rms_kernel<<<ceil_div(p->num_tensors, 256), 256>>>(p->rms, p->tensor_sum, p->tensor_numel, p->num_tensors);
    cudaCheckLaunch();
}

// The parameter pass of adamw_apply_gpu (grads NULL: moments read) and adamw_step_gpu (moments updated from grads;
// without clipping, the RMS sums made by this pass, the RMS left to adamw_rms_gpu).
static void apply(const AdamWPlan *p, float *params, bf16 *params_bf16, const float *grads, float *m, float *u, float b1t, float b2t,
                  float lr, float eps, int clip) {
    int sums_here = grads && !clip;
    if (!sums_here) adamw_rms_gpu(p);
    if (p->num_chunks) {
        auto kernel = grads ? adamw_apply_kernel<true> : adamw_apply_kernel<false>;
        kernel<<<p->num_chunks, ADAMW_THREADS>>>(params, params_bf16, p->chunk_absmax, sums_here ? p->partial : NULL, grads, m, u, p->rms,
                                                 p->chunk_tensor, p->chunk_offset, p->chunk_state, p->chunk_len, p->tensor_wd, b1t, b2t,
                                                 lr, eps, clip);
        cudaCheckLaunch();
    }
    if (sums_here) tensor_sums(p);
    if (!params_bf16) return;
    tensor_reduce_kernel<1><<<p->num_tensors, 256>>>(p->tensor_absmax, p->chunk_absmax, p->tensor_first_chunk);
    cudaCheckLaunch();
}

void adamw_apply_gpu(const AdamWPlan *p, float *params, bf16 *params_bf16, const float *m, const float *u, float lr, float eps, int clip) {
    apply(p, params, params_bf16, NULL, (float *)m, (float *)u, 0.0f, 0.0f, lr, eps, clip);  // m, u only read without grads
}

void adamw_grad_stats_gpu(const AdamWPlan *p, float *norm_sq, const float *grads, const float *u, float b2t, float eps) {
    if (p->num_chunks) {
        adamw_stats_kernel<<<p->num_chunks, ADAMW_THREADS>>>(p->partial_sq, p->partial, grads, u, p->chunk_offset, p->chunk_state,
                                                             p->chunk_len, b2t, eps);
        cudaCheckLaunch();
    }
    sum_kernel<<<1, 1024>>>(norm_sq, p->partial_sq, p->num_chunks);
    cudaCheckLaunch();
    if (u) tensor_sums(p);
}

void adamw_step_gpu(const AdamWPlan *p, const float *grads, float *m, float *u, float *params, bf16 *params_bf16, float b1t, float b2t,
                    float lr, float eps, int clip) {
    apply(p, params, params_bf16, grads, m, u, b1t, b2t, lr, eps, clip);
}

template <typename D, typename S> static void convert_gpu(D *dst, const S *src, size_t n, cudaStream_t stream) {
    if (n == 0) return;
    convert_kernel<D, S><<<min(ceil_div((long)n, 512), 16 * num_sms()), 512, 0, stream>>>(dst, src, n);
    cudaCheckLaunch();
}
void copy_to_bf16_gpu(bf16 *dst, const float *src, size_t n, cudaStream_t stream) { convert_gpu(dst, src, n, stream); }
void copy_to_fp32_gpu(float *dst, const bf16 *src, size_t n, cudaStream_t stream) { convert_gpu(dst, src, n, stream); }

__global__ void zero_chunks_kernel(float *buf, const long *chunk_offset, const int *chunk_len) {
    float *b = buf + chunk_offset[blockIdx.x];
    for (int i = threadIdx.x, n = chunk_len[blockIdx.x]; i < n; i += blockDim.x) b[i] = 0.0f;
}

void zero_plan_init(ZeroPlan *z, int num_ranges, const size_t *lo, const size_t *hi) {
    int n = 0;
    for (int r = 0; r < num_ranges; r++) n += (int)((hi[r] - lo[r] + ADAMW_CHUNK - 1) / ADAMW_CHUNK);
    long *off = (long *)malloc((n + 1) * sizeof(long));
    int *len = (int *)malloc((n + 1) * sizeof(int)), c = 0;
    if (!off || !len) fatal("zero_plan_init: out of host memory");
    for (int r = 0; r < num_ranges; r++)
        for (size_t k = lo[r]; k < hi[r]; k += ADAMW_CHUNK, c++)
            off[c] = (long)k, len[c] = (int)(hi[r] - k < ADAMW_CHUNK ? hi[r] - k : ADAMW_CHUNK);
    z->num_chunks = n, z->chunk_offset = upload(off, n + 1), z->chunk_len = upload(len, n + 1);
    free(off), free(len);
}

void zero_plan_free(ZeroPlan *z) { cudaCheck(cudaFree(z->chunk_offset)), cudaCheck(cudaFree(z->chunk_len)); }

void zero_ranges_gpu(const ZeroPlan *z, float *buf) {
    if (!z->num_chunks) return;
    zero_chunks_kernel<<<z->num_chunks, 512>>>(buf, z->chunk_offset, z->chunk_len);
    cudaCheckLaunch();
}

void clamp_scalar_gpu(float *x, float lo, float hi) {
    clamp_scalar_kernel<<<1, 1>>>(x, lo, hi);
    cudaCheckLaunch();
}
