// embed.cu: patch extraction, class/positional and token embeddings, pooling rows (see embed.cuh).
// Elementwise kernels, one thread per output element; the token-embedding backward sums each distinct
// token's rows in a fixed order (one block per token), so it is deterministic without atomics.
#include <string.h>

#include "../data/loader.h"
#include "embed.cuh"

template <typename T>
__global__ void patch_im2col_kernel(T *patches, const uint8_t *images, int B, int S, int P, float3 scale, float3 shift) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int G = S / P, K = 3 * P * P;
    if (idx >= (size_t)B * G * G * K) return;
    int k = (int)(idx % K);
    size_t row = idx / K;
    int gx = (int)(row % G), gy = (int)(row / G % G), b = (int)(row / G / G);
    int c = k / (P * P), ky = k / P % P, kx = k % P;
    float v = images[(((size_t)b * 3 + c) * S + gy * P + ky) * S + gx * P + kx];
    float sc = c == 0 ? scale.x : c == 1 ? scale.y : scale.z, sh = c == 0 ? shift.x : c == 1 ? shift.y : shift.z;
    patches[idx] = from_float<T>(v * sc - sh);
}

template <typename T>
__global__ void vision_embed_forward_kernel(T *x, const T *patch_emb, const float *class_emb, const float *pos, int B, int G2, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int Tn = G2 + 1;
    if (idx >= (size_t)B * Tn * D) return;
    int i = (int)(idx % D), t = (int)(idx / D % Tn);
    size_t b = idx / D / Tn;
    float src = t == 0 ? class_emb[i] : to_float(patch_emb[(b * G2 + t - 1) * D + i]);
    x[idx] = from_float<T>(src + pos[(size_t)t * D + i]);
}

template <typename T> __global__ void vision_embed_backward_kernel(T *dpatch_emb, const T *dx, int B, int G2, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * G2 * D) return;
    int i = (int)(idx % D);
    size_t row = idx / D, b = row / G2, p = row % G2;
    dpatch_emb[idx] = dx[(b * (G2 + 1) + p + 1) * D + i];
}

template <typename T>
__global__ void text_embed_forward_kernel(T *x, const int32_t *ids, const float *tok_emb, const float *pos, int B, int Tn, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * Tn * D) return;
    int i = (int)(idx % D), t = (int)(idx / D % Tn);
    size_t row = idx / D;
    x[idx] = from_float<T>(tok_emb[(size_t)ids[row] * D + i] + pos[(size_t)t * D + i]);
}

// One block per distinct token; threads over channels.
template <typename T>
__global__ void text_embed_backward_kernel(float *dtok_emb, const T *dx, const int *token, const int *start, const int *rows, int D) {
    int u = blockIdx.x;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float s = 0.0f;
        for (int k = start[u]; k < start[u + 1]; k++) s += to_float(dx[(size_t)rows[k] * D + i]);
        dtok_emb[(size_t)token[u] * D + i] += s;
    }
}

template <typename T> __global__ void gather_rows_kernel(float *out, const T *x, const int *index, int B, int Tn, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * D) return;
    int i = (int)(idx % D), b = (int)(idx / D), t = index ? index[b] : 0;
    out[idx] = to_float(x[((size_t)b * Tn + t) * D + i]);
}

template <typename T> __global__ void scatter_rows_kernel(T *dx, const float *dout, const int *index, int B, int Tn, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * D) return;
    int i = (int)(idx % D), b = (int)(idx / D), t = index ? index[b] : 0;
    dx[((size_t)b * Tn + t) * D + i] = from_float<T>(dout[idx]);
}

static int blocks_for(size_t n) { return (int)((n + 255) / 256); }

template <typename T> void patch_im2col_gpu(T *patches, const uint8_t *images, int B, int S, int P) {
    size_t n = (size_t)B * (S / P) * (S / P) * 3 * P * P;
    if (n == 0) return;
    // as images_normalize: x * (1 / (255 std)) - mean / std
    float sc[3], sh[3];
    for (int c = 0; c < 3; c++) sc[c] = 1.0f / (255.0f * CLIP_STD[c]), sh[c] = CLIP_MEAN[c] / CLIP_STD[c];
    patch_im2col_kernel<T><<<blocks_for(n), 256>>>(patches, images, B, S, P, make_float3(sc[0], sc[1], sc[2]),
                                                   make_float3(sh[0], sh[1], sh[2]));
    cudaCheckLaunch();
}

template <typename T> void vision_embed_forward_gpu(T *x, const T *patch_emb, const float *class_emb, const float *pos, int B, int G2, int D) {
    size_t n = (size_t)B * (G2 + 1) * D;
    if (n == 0) return;
    vision_embed_forward_kernel<T><<<blocks_for(n), 256>>>(x, patch_emb, class_emb, pos, B, G2, D);
    cudaCheckLaunch();
}

template <typename T> void vision_embed_backward_gpu(T *dpatch_emb, const T *dx, int B, int G2, int D) {
    size_t n = (size_t)B * G2 * D;
    if (n == 0) return;
    vision_embed_backward_kernel<T><<<blocks_for(n), 256>>>(dpatch_emb, dx, B, G2, D);
    cudaCheckLaunch();
}

template <typename T> void text_embed_forward_gpu(T *x, const int32_t *ids, const float *tok_emb, const float *pos, int B, int Tn, int D) {
    size_t n = (size_t)B * Tn * D;
    if (n == 0) return;
    text_embed_forward_kernel<T><<<blocks_for(n), 256>>>(x, ids, tok_emb, pos, B, Tn, D);
    cudaCheckLaunch();
}

void token_index_build(int *buf, const int32_t *ids, int n, int vocab, int *counts) {
    int *token = buf + 1, *start = token + n, *rows = start + n + 1;
    memset(counts, 0, (size_t)vocab * sizeof(int));
    for (int k = 0; k < n; k++) counts[ids[k]]++;
    int nu = 0, pos = 0;
    for (int v = 0; v < vocab; v++) {
        if (!counts[v]) continue;
        token[nu] = v, start[nu] = pos;
        pos += counts[v];
        counts[v] = start[nu];  // now the next free slot of token v
        nu++;
    }
    start[nu] = pos;
    for (int k = 0; k < n; k++) rows[counts[ids[k]]++] = k;  // increasing k: a fixed order within each token
    buf[0] = nu;
}

template <typename T> void text_embed_backward_gpu(float *dtok_emb, const T *dx, const int *index, int num_unique, int n, int D) {
    if (num_unique == 0) return;
    const int *token = index + 1, *start = token + n, *rows = start + n + 1;
    text_embed_backward_kernel<T><<<num_unique, min(256, (D + 31) / 32 * 32)>>>(dtok_emb, dx, token, start, rows, D);
    cudaCheckLaunch();
}

template <typename T> void gather_rows_gpu(float *out, const T *x, const int *index, int B, int Tn, int D) {
    if (B == 0) return;
    gather_rows_kernel<T><<<blocks_for((size_t)B * D), 256>>>(out, x, index, B, Tn, D);
    cudaCheckLaunch();
}

template <typename T> void scatter_rows_gpu(T *dx, const float *dout, const int *index, int B, int Tn, int D) {
    if (B == 0) return;
    scatter_rows_kernel<T><<<blocks_for((size_t)B * D), 256>>>(dx, dout, index, B, Tn, D);
    cudaCheckLaunch();
}

#define INSTANTIATE(T)                                                                                          \
    template void patch_im2col_gpu<T>(T *, const uint8_t *, int, int, int);                                          \
    template void vision_embed_forward_gpu<T>(T *, const T *, const float *, const float *, int, int, int);          \
    template void vision_embed_backward_gpu<T>(T *, const T *, int, int, int);                                       \
    template void text_embed_forward_gpu<T>(T *, const int32_t *, const float *, const float *, int, int, int);      \
    template void text_embed_backward_gpu<T>(float *, const T *, const int *, int, int, int);                        \
    template void gather_rows_gpu<T>(float *, const T *, const int *, int, int, int);                                \
    template void scatter_rows_gpu<T>(T *, const float *, const int *, int, int, int);
INSTANTIATE(float)
INSTANTIATE(bf16)
