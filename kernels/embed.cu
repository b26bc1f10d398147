// embed.cu: patch extraction, class/positional and token embeddings, pooling rows (see embed.cuh).
// The token-embedding backward sums chunks of at most TOKEN_CHUNK positions, then each token's chunks in order:
// deterministic without atomics, and a frequent token (padding) is summed by many threads, not serialised on a few.
#include <string.h>

#include <type_traits>

#include "../data/loader.h"
#include "embed.cuh"

// The elementwise kernels move V consecutive elements of a row per thread (16-byte accesses where the widths and
// pointers allow) and split the flat index with one 64-bit division per vector; the rest is 32-bit.

// V outputs of one patch row from k on; the (c, ky, kx) walk steps instead of dividing per element.
template <typename T, int V>
__global__ void patch_im2col_kernel(T *patches, const uint8_t *images, size_t nvec, int S, int P, float3 scale, float3 shift) {
    size_t v = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (v >= nvec) return;
    int G = S / P, PP = P * P, kv = 3 * PP / V;
    int row = (int)(v / kv), k = (int)(v % kv) * V;
    int gx = row % G, gy = row / G % G, b = row / (G * G);
    int c = k / PP, ky = k / P % P, kx = k % P;
    const uint8_t *img = images + (size_t)b * 3 * S * S + (size_t)gy * P * S + gx * P;  // channel 0's patch corner
    const uint8_t *src = img + ((size_t)c * S + ky) * S;
    Vec<T, V> out;
#pragma unroll
    for (int i = 0; i < V; i++) {
        float sc = c == 0 ? scale.x : c == 1 ? scale.y : scale.z, sh = c == 0 ? shift.x : c == 1 ? shift.y : shift.z;
        out.v[i] = from_float<T>(src[kx] * sc - sh);
        if (++kx == P) {
            kx = 0;
            if (++ky == P) ky = 0, c++;
            src = img + ((size_t)c * S + ky) * S;
        }
    }
    store_vec<T, V>(patches + v * V, out);
}

template <typename T, int V>
__global__ void vision_embed_forward_kernel(T *x, const T *patch_emb, const float *class_emb, const float *pos, size_t nvec, int G2,
                                            int D) {
    size_t v = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (v >= nvec) return;
    int dv = D / V, i = (int)(v % dv) * V;
    size_t row = v / dv;
    int t = (int)(row % (G2 + 1));
    Vec<float, V> p = load_floats<V>(pos + (size_t)t * D + i), src;
    if (t == 0) src = load_floats<V>(class_emb + i);
    else {
        Vec<T, V> e = load_vec<T, V>(patch_emb + (row - row / (G2 + 1) - 1) * D + i);  // patch t - 1 of image row / (G2 + 1)
        for (int j = 0; j < V; j++) src.v[j] = to_float(e.v[j]);
    }
    Vec<T, V> out;
    for (int j = 0; j < V; j++) out.v[j] = from_float<T>(src.v[j] + p.v[j]);
    store_vec<T, V>(x + v * V, out);
}

template <typename T, int V> __global__ void vision_embed_backward_kernel(T *dpatch_emb, const T *dx, size_t nvec, int G2, int D) {
    size_t v = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (v >= nvec) return;
    int dv = D / V, i = (int)(v % dv) * V;
    size_t row = v / dv;  // patch row: image row / G2, token row % G2 + 1
    store_vec<T, V>(dpatch_emb + v * V, load_vec<T, V>(dx + (row + row / G2 + 1) * D + i));
}

template <typename T, int V>
__global__ void text_embed_forward_kernel(T *x, const int32_t *ids, const int32_t *positions, const float *tok_emb, const float *pos,
                                          size_t nvec, int Tn, int D) {
    size_t v = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (v >= nvec) return;
    int dv = D / V, i = (int)(v % dv) * V;
    size_t row = v / dv;
    size_t t = positions ? (size_t)positions[row] : row % Tn;
    Vec<float, V> e = load_floats<V>(tok_emb + (size_t)ids[row] * D + i), p = load_floats<V>(pos + t * D + i);
    Vec<T, V> out;
    for (int j = 0; j < V; j++) out.v[j] = from_float<T>(e.v[j] + p.v[j]);
    store_vec<T, V>(x + v * V, out);
}

// The token sums run `lanes` threads per item (a chunk, a token), 256 / lanes items per block: thousands of items of
// one row each, which as blocks of their own would be bound by block scheduling.
// Chunk c (at most TOKEN_CHUNK positions of one token): partial (num_chunks, D).
template <typename T, int V>
__global__ void token_chunk_sum_kernel(float *partial, const T *dx, const int *chunk_start, const int *rows, int num_chunks, int D,
                                       int lanes) {
    int c = blockIdx.x * (blockDim.x / lanes) + threadIdx.x / lanes;
    if (c >= num_chunks) return;
    int k0 = chunk_start[c], k1 = chunk_start[c + 1];
    for (int i = threadIdx.x % lanes * V; i < D; i += lanes * V) {
        Vec<float, V> s;
        for (int j = 0; j < V; j++) s.v[j] = 0.0f;
        for (int k = k0; k < k1; k++) {
            Vec<T, V> x = load_vec<T, V>(dx + (size_t)rows[k] * D + i);
            for (int j = 0; j < V; j++) s.v[j] += to_float(x.v[j]);
        }
        store_floats<V>(partial + (size_t)c * D + i, s);
    }
}

// Distinct token u: its chunks' partial sums in order, added to its embedding row's gradient.
template <int V>
__global__ void token_sum_kernel(float *dtok_emb, const float *partial, const int *token, const int *first_chunk, int num_unique, int D,
                                 int lanes) {
    int u = blockIdx.x * (blockDim.x / lanes) + threadIdx.x / lanes;
    if (u >= num_unique) return;
    for (int i = threadIdx.x % lanes * V; i < D; i += lanes * V) {
        Vec<float, V> s;
        for (int j = 0; j < V; j++) s.v[j] = 0.0f;
        for (int c = first_chunk[u]; c < first_chunk[u + 1]; c++) {
            Vec<float, V> p = load_floats<V>(partial + (size_t)c * D + i);
            for (int j = 0; j < V; j++) s.v[j] += p.v[j];
        }
        float *d = dtok_emb + (size_t)token[u] * D + i;
        Vec<float, V> g = load_floats<V>(d);
        for (int j = 0; j < V; j++) g.v[j] += s.v[j];
        store_floats<V>(d, g);
    }
}

template <typename T, typename O> __global__ void gather_rows_kernel(O *out, const T *x, const int *index, int B, int Tn, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * D) return;
    int i = (int)(idx % D), b = (int)(idx / D), t = index ? index[b] : 0;
    out[idx] = from_float<O>(to_float(x[((size_t)b * Tn + t) * D + i]));
}

template <typename T, typename O> __global__ void scatter_rows_kernel(T *dx, const O *dout, const int *index, int B, int Tn, int D) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * D) return;
    int i = (int)(idx % D), b = (int)(idx / D), t = index ? index[b] : 0;
    dx[((size_t)b * Tn + t) * D + i] = from_float<T>(to_float(dout[idx]));
}

static int blocks_for(size_t n) { return (int)((n + 255) / 256); }

// The elements of T a thread moves at once over rows of `width`: 16 bytes where the width and every T pointer given
// allow it, else 8, else 1. f: fp32 parameters read beside them (load_floats: 16-byte aligned when V % 4 == 0).
template <typename T>
static int vec_elems(int width, const float *f0, const float *f1, const void *p0, const void *p1 = NULL) {
    const void *ps[2] = {p0, p1};
    for (int bytes = 16; bytes >= 8; bytes /= 2) {
        int v = bytes / (int)sizeof(T), ok = width % v == 0;
        for (int i = 0; i < 2; i++) ok = ok && (uintptr_t)ps[i] % bytes == 0;
        if (v % 4 == 0) ok = ok && (uintptr_t)f0 % 16 == 0 && (uintptr_t)f1 % 16 == 0;
        if (ok) return v;
    }
    return 1;
}

// launch(V) with V a compile-time constant equal to v (one of vec_elems' widths).
template <typename T, typename F> static void with_vec(int v, F launch) {
    if (v == 16 / (int)sizeof(T)) launch(std::integral_constant<int, 16 / sizeof(T)>{});
    else if (v == 8 / (int)sizeof(T)) launch(std::integral_constant<int, 8 / sizeof(T)>{});
    else launch(std::integral_constant<int, 1>{});
    cudaCheckLaunch();
}

template <typename T> void patch_im2col_gpu(T *patches, const uint8_t *images, int B, int S, int P) {
    size_t n = (size_t)B * (S / P) * (S / P) * 3 * P * P;
    if (n == 0) return;
    // as images_normalize: x * (1 / (255 std)) - mean / std
    float sc[3], sh[3];
    for (int c = 0; c < 3; c++) sc[c] = 1.0f / (255.0f * CLIP_STD[c]), sh[c] = CLIP_MEAN[c] / CLIP_STD[c];
    float3 scale = make_float3(sc[0], sc[1], sc[2]), shift = make_float3(sh[0], sh[1], sh[2]);
    with_vec<T>(vec_elems<T>(3 * P * P, NULL, NULL, patches), [&](auto V) {
        patch_im2col_kernel<T, V><<<blocks_for(n / V), 256>>>(patches, images, n / V, S, P, scale, shift);
    });
}

template <typename T> void vision_embed_forward_gpu(T *x, const T *patch_emb, const float *class_emb, const float *pos, int B, int G2, int D) {
    size_t n = (size_t)B * (G2 + 1) * D;
    if (n == 0) return;
    with_vec<T>(vec_elems<T>(D, class_emb, pos, x, patch_emb), [&](auto V) {
        vision_embed_forward_kernel<T, V><<<blocks_for(n / V), 256>>>(x, patch_emb, class_emb, pos, n / V, G2, D);
    });
}

template <typename T> void vision_embed_backward_gpu(T *dpatch_emb, const T *dx, int B, int G2, int D) {
    size_t n = (size_t)B * G2 * D;
    if (n == 0) return;
    with_vec<T>(vec_elems<T>(D, NULL, NULL, dpatch_emb, dx),
                [&](auto V) { vision_embed_backward_kernel<T, V><<<blocks_for(n / V), 256>>>(dpatch_emb, dx, n / V, G2, D); });
}

template <typename T>
void text_embed_forward_gpu(T *x, const int32_t *ids, const int32_t *positions, const float *tok_emb, const float *pos, int rows, int Tn,
                            int D) {
    size_t n = (size_t)rows * D;
    if (n == 0) return;
    with_vec<T>(vec_elems<T>(D, tok_emb, pos, x), [&](auto V) {
        text_embed_forward_kernel<T, V><<<blocks_for(n / V), 256>>>(x, ids, positions, tok_emb, pos, n / V, Tn, D);
    });
}

TextPack text_pack(int32_t *ids, int32_t *positions, int *seq, int *pooled, const int32_t *src, int B, int Tt, int causal) {
    TextPack p = {0, 0, 1};
    auto append = [&](const int32_t *from, int len) {  // one sequence of len rows: ids from `from`, or padding (NULL)
        seq[p.seqs++] = p.rows;
        if (from) memcpy(ids + p.rows, from, (size_t)len * sizeof(int32_t));
        else memset(ids + p.rows, 0, (size_t)len * sizeof(int32_t));
        for (int t = 0; t < len; t++) positions[p.rows + t] = t;
        p.rows += len, p.longest = len > p.longest ? len : p.longest;
    };
    for (int b = 0; b < B; b++) {
        int len = causal ? pooled[b] + 1 : Tt;
        pooled[b] += p.rows;
        append(src + (size_t)b * Tt, len);
    }
    int target = (p.rows + TEXT_PACK_ALIGN - 1) / TEXT_PACK_ALIGN * TEXT_PACK_ALIGN;
    if (target > B * Tt) target = B * Tt;
    while (p.rows < target) append(NULL, target - p.rows < Tt ? target - p.rows : Tt);
    seq[p.seqs] = p.rows;
    return p;
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
    with_vec<T>(vec_elems<T>(D, dtok_emb, scratch, dx), [&](auto V) {
        int lanes = 32;  // a power of two up to 256 (items of a block never share a thread)
        while (lanes < D / V && lanes < 256) lanes *= 2;
        int items = 256 / lanes;
        token_chunk_sum_kernel<T, V><<<ceil_div(num_chunks, items), 256>>>(scratch, dx, chunk_start, rows, num_chunks, D, lanes);
        cudaCheckLaunch();
        token_sum_kernel<V><<<ceil_div(num_unique, items), 256>>>(dtok_emb, scratch, token, first_chunk, num_unique, D, lanes);
    });
}

template <typename T, typename O> void gather_rows_gpu(O *out, const T *x, const int *index, int B, int Tn, int D) {
    if (B == 0) return;
    gather_rows_kernel<T, O><<<blocks_for((size_t)B * D), 256>>>(out, x, index, B, Tn, D);
    cudaCheckLaunch();
}

template <typename T, typename O> void scatter_rows_gpu(T *dx, const O *dout, const int *index, int B, int Tn, int D) {
    if (B == 0) return;
    scatter_rows_kernel<T, O><<<blocks_for((size_t)B * D), 256>>>(dx, dout, index, B, Tn, D);
    cudaCheckLaunch();
}

#define INSTANTIATE(T)                                                                                          \
    template void patch_im2col_gpu<T>(T *, const uint8_t *, int, int, int);                                          \
    template void vision_embed_forward_gpu<T>(T *, const T *, const float *, const float *, int, int, int);          \
    template void vision_embed_backward_gpu<T>(T *, const T *, int, int, int);                                       \
    template void text_embed_forward_gpu<T>(T *, const int32_t *, const int32_t *, const float *, const float *, int, int, int); \
    template void text_embed_backward_gpu<T>(float *, float *, const T *, const int *, int, int, int, int);          \
    template void gather_rows_gpu<T, float>(float *, const T *, const int *, int, int, int);                         \
    template void scatter_rows_gpu<T, float>(T *, const float *, const int *, int, int, int);
INSTANTIATE(float)
INSTANTIATE(bf16)
template void gather_rows_gpu<bf16, bf16>(bf16 *, const bf16 *, const int *, int, int, int);
template void scatter_rows_gpu<bf16, bf16>(bf16 *, const bf16 *, const int *, int, int, int);
