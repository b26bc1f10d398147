// embed.cu: patch extraction, class/positional and token embeddings, pooling rows (see embed.cuh).
// Elementwise kernels, one thread per output element. The token-embedding backward sums chunks of at most
// TOKEN_CHUNK positions (one block each), then each token's chunks in order: deterministic without atomics,
// and a frequent token (padding) does not serialise on one block.
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

// One block per chunk of at most TOKEN_CHUNK positions of one token: partial (num_chunks, D).
template <typename T>
__global__ void token_chunk_sum_kernel(float *partial, const T *dx, const int *chunk_start, const int *rows, int D) {
    int c = blockIdx.x, k0 = chunk_start[c], k1 = chunk_start[c + 1];
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float s = 0.0f;
        for (int k = k0; k < k1; k++) s += to_float(dx[(size_t)rows[k] * D + i]);
        partial[(size_t)c * D + i] = s;
    }
}

// One block per distinct token: its chunks' partial sums in order, added to its embedding row's gradient.
__global__ void token_sum_kernel(float *dtok_emb, const float *partial, const int *token, const int *first_chunk, int D) {
    int u = blockIdx.x;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float s = 0.0f;
        for (int c = first_chunk[u]; c < first_chunk[u + 1]; c++) s += partial[(size_t)c * D + i];
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
    int *token = buf + 2, *first_chunk = token + n, *chunk_start = first_chunk + n + 1, *rows = chunk_start + n + 1;
    memset(counts, 0, (size_t)vocab * sizeof(int));
    for (int k = 0; k < n; k++) counts[ids[k]]++;
    int nu = 0, nc = 0, pos = 0;
    for (int v = 0; v < vocab; v++) {
        int cnt = counts[v];
        if (!cnt) continue;
        token[nu] = v, first_chunk[nu] = nc;
        for (int k = 0; k < cnt; k += TOKEN_CHUNK) chunk_start[nc++] = pos + k;
        counts[v] = pos;  // from here on: the next free slot of token v in rows
        pos += cnt;
        nu++;
    }
    chunk_start[nc] = n, first_chunk[nu] = nc;
    for (int k = 0; k < n; k++) rows[counts[ids[k]]++] = k;  // increasing k: a fixed order within each token
    buf[0] = nu, buf[1] = nc;
}

template <typename T>
void text_embed_backward_gpu(float *dtok_emb, float *scratch, const T *dx, const int *index, int num_unique, int num_chunks,
                             int n, int D) {
    if (num_unique == 0) return;
    const int *token = index + 2, *first_chunk = token + n, *chunk_start = first_chunk + n + 1, *rows = chunk_start + n + 1;
    int threads = min(256, (D + 31) / 32 * 32);
    token_chunk_sum_kernel<T><<<num_chunks, threads>>>(scratch, dx, chunk_start, rows, D);
    cudaCheckLaunch();
    token_sum_kernel<<<num_unique, threads>>>(dtok_emb, scratch, token, first_chunk, D);
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
    template void text_embed_backward_gpu<T>(float *, float *, const T *, const int *, int, int, int, int);          \
    template void gather_rows_gpu<T>(float *, const T *, const int *, int, int, int);                                \
    template void scatter_rows_gpu<T>(T *, const float *, const int *, int, int, int);
INSTANTIATE(float)
INSTANTIATE(bf16)
