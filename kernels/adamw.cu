// adamw.cu: fused multi-tensor AdamW / StableAdamW, global gradient norm, parameter copy (see adamw.cuh).
#include <stdlib.h>

#include "adamw.cuh"

__global__ void adamw_moments_kernel(float *partial, const float *grads, float *m, float *u, const long *chunk_offset,
                                     const int *chunk_len, float b1t, float b2t, float eps, float grad_scale) {
    int c = blockIdx.x;
    long off = chunk_offset[c];
    float ratio = 0.0f;
    for (int i = threadIdx.x; i < chunk_len[c]; i += blockDim.x) {
        long k = off + i;
        float g = grads[k] * grad_scale;
        float mk = b1t * m[k] + (1.0f - b1t) * g, uk = b2t * u[k] + (1.0f - b2t) * g * g;
        m[k] = mk, u[k] = uk;
        ratio += g * g / fmaxf(uk, eps * eps);
    }
    ratio = block_sum(ratio);
    if (threadIdx.x == 0) partial[c] = ratio;
}

__global__ void adamw_apply_kernel(float *params, bf16 *params_bf16, float *rms_out, const float *m, const float *u,
                                   const float *partial, const int *chunk_tensor, const long *chunk_offset,
                                   const int *chunk_len, const int *tensor_first_chunk, const long *tensor_numel,
                                   const float *tensor_wd, float lr, float eps, int clip) {
    int c = blockIdx.x, t = chunk_tensor[c];
    float ratio = 0.0f;
    for (int k = tensor_first_chunk[t] + threadIdx.x; k < tensor_first_chunk[t + 1]; k += blockDim.x) ratio += partial[k];
    float rms = sqrtf(block_sum(ratio) / (float)tensor_numel[t]);
    if (threadIdx.x == 0 && c == tensor_first_chunk[t]) rms_out[t] = rms;
    float lr_t = clip ? lr / fmaxf(1.0f, rms) : lr, decay = 1.0f - lr * tensor_wd[t];
    long off = chunk_offset[c];
    for (int i = threadIdx.x; i < chunk_len[c]; i += blockDim.x) {
        long k = off + i;
        float p = params[k] * decay - lr_t * m[k] / (sqrtf(u[k]) + eps);
        params[k] = p;
        if (params_bf16) params_bf16[k] = __float2bfloat16_rn(p);
    }
}

__global__ void sum_squares_kernel(float *partial, const float *g, size_t n) {
    float s = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) s += g[i] * g[i];
    s = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sqrt_of_sum_kernel(float *out, const float *partial, int n) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *out = sqrtf(s);
}

__global__ void copy_to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void clamp_scalar_kernel(float *x, float lo, float hi) { *x = fminf(fmaxf(*x, lo), hi); }

template <typename X> static X *upload(const X *h, size_t n) {
    X *d;
    cudaCheck(cudaMalloc(&d, n * sizeof(X)));
    cudaCheck(cudaMemcpy(d, h, n * sizeof(X), cudaMemcpyHostToDevice));
    return d;
}

void adamw_plan_init(AdamWPlan *p, int num_tensors, const size_t *offset, const size_t *numel, const int *decay, float wd) {
    int nc = 0;
    for (int t = 0; t < num_tensors; t++) nc += (int)((numel[t] + ADAMW_CHUNK - 1) / ADAMW_CHUNK);
    int *ct = (int *)malloc(nc * sizeof(int)), *cl = (int *)malloc(nc * sizeof(int)), *first = (int *)malloc((num_tensors + 1) * sizeof(int));
    long *co = (long *)malloc(nc * sizeof(long)), *tn = (long *)malloc(num_tensors * sizeof(long));
    float *twd = (float *)malloc(num_tensors * sizeof(float));
    if (!ct || !cl || !first || !co || !tn || !twd) {
        fprintf(stderr, "error: adamw_plan_init: out of host memory\n");
        exit(1);
    }
    int c = 0;
    for (int t = 0; t < num_tensors; t++) {
        first[t] = c, tn[t] = (long)numel[t], twd[t] = decay[t] ? wd : 0.0f;
        for (size_t s = 0; s < numel[t]; s += ADAMW_CHUNK, c++)
            ct[c] = t, co[c] = (long)(offset[t] + s), cl[c] = (int)(numel[t] - s < ADAMW_CHUNK ? numel[t] - s : ADAMW_CHUNK);
    }
    first[num_tensors] = c;
    p->num_tensors = num_tensors, p->num_chunks = nc;
    p->chunk_tensor = upload(ct, nc), p->chunk_offset = upload(co, nc), p->chunk_len = upload(cl, nc);
    p->tensor_first_chunk = upload(first, num_tensors + 1), p->tensor_numel = upload(tn, num_tensors);
    p->tensor_wd = upload(twd, num_tensors);
    cudaCheck(cudaMalloc(&p->partial, (nc ? nc : 1) * sizeof(float)));
    cudaCheck(cudaMalloc(&p->rms, num_tensors * sizeof(float)));
    cudaCheck(cudaMemset(p->rms, 0, num_tensors * sizeof(float)));
    free(ct), free(cl), free(first), free(co), free(tn), free(twd);
}

void adamw_plan_free(AdamWPlan *p) {
    cudaCheck(cudaFree(p->chunk_tensor)), cudaCheck(cudaFree(p->chunk_offset)), cudaCheck(cudaFree(p->chunk_len));
    cudaCheck(cudaFree(p->tensor_first_chunk)), cudaCheck(cudaFree(p->tensor_numel)), cudaCheck(cudaFree(p->tensor_wd));
    cudaCheck(cudaFree(p->partial)), cudaCheck(cudaFree(p->rms));
}

void adamw_step_gpu(const AdamWPlan *p, float *params, bf16 *params_bf16, const float *grads, float *m, float *u, float lr,
                float b1t, float b2t, float eps, float grad_scale, int clip) {
    if (p->num_chunks == 0) return;
    adamw_moments_kernel<<<p->num_chunks, 512>>>(p->partial, grads, m, u, p->chunk_offset, p->chunk_len, b1t, b2t, eps, grad_scale);
    cudaCheckLaunch();
    adamw_apply_kernel<<<p->num_chunks, 512>>>(params, params_bf16, p->rms, m, u, p->partial, p->chunk_tensor, p->chunk_offset,
                                               p->chunk_len, p->tensor_first_chunk, p->tensor_numel, p->tensor_wd, lr, eps, clip);
    cudaCheckLaunch();
}

void global_norm_gpu(float *norm, const float *g, size_t n, float *scratch) {
    sum_squares_kernel<<<GRAD_NORM_BLOCKS, 512>>>(scratch, g, n);
    cudaCheckLaunch();
    sqrt_of_sum_kernel<<<1, 512>>>(norm, scratch, GRAD_NORM_BLOCKS);
    cudaCheckLaunch();
}

void copy_to_bf16_gpu(bf16 *dst, const float *src, size_t n) {
    if (n == 0) return;
    copy_to_bf16_kernel<<<min(ceil_div((long)n, 512), 16 * num_sms()), 512>>>(dst, src, n);
    cudaCheckLaunch();
}

void clamp_scalar_gpu(float *x, float lo, float hi) {
    clamp_scalar_kernel<<<1, 1>>>(x, lo, hi);
    cudaCheckLaunch();
}
