// common.cuh: device helpers shared by the kernels: conversion between float and the storage types
// (float for the fp32 path, bf16 for the bf16 path), 16-byte vectors, warp and block reductions, and the
// host-side choice of a vector width. Kernels compute in fp32 whatever the storage type.
#pragma once
#include "cuda_utils.cuh"

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float x) { return __float2bfloat16_rn(x); }

// V elements of T moved as one access (16 bytes when V = 16 / sizeof(T)).
template <typename T, int V> struct alignas(sizeof(T) * V) Vec {
    T v[V];
};
template <typename T, int V> __device__ __forceinline__ Vec<T, V> load_vec(const T *p) {
    return *reinterpret_cast<const Vec<T, V> *>(p);
}
template <typename T, int V> __device__ __forceinline__ void store_vec(T *p, const Vec<T, V> &x) {
    *reinterpret_cast<Vec<T, V> *>(p) = x;
}
// V fp32 values (per-column parameters beside a Vec<T, V> of data): 16-byte loads when V % 4 == 0 (p 16-byte
// aligned), else one load each. A scalar load per element costs a warp as many L1 requests as the whole vector.
template <int V> __device__ __forceinline__ Vec<float, V> load_floats(const float *p) {
    Vec<float, V> r;
    if constexpr (V % 4 == 0) {
#pragma unroll
        for (int i = 0; i < V; i += 4) {
            float4 t = *reinterpret_cast<const float4 *>(p + i);
            r.v[i] = t.x, r.v[i + 1] = t.y, r.v[i + 2] = t.z, r.v[i + 3] = t.w;
        }
    } else {
        for (int i = 0; i < V; i++) r.v[i] = p[i];
    }
    return r;
}

// The store of load_floats.
template <int V> __device__ __forceinline__ void store_floats(float *p, const Vec<float, V> &x) {
    if constexpr (V % 4 == 0) {
#pragma unroll
        for (int i = 0; i < V; i += 4) *reinterpret_cast<float4 *>(p + i) = make_float4(x.v[i], x.v[i + 1], x.v[i + 2], x.v[i + 3]);
    } else {
        for (int i = 0; i < V; i++) p[i] = x.v[i];
    }
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
// Sum over the whole block (blockDim.x a multiple of 32); every thread gets the result. Fixed order.
__device__ __forceinline__ float block_sum(float x) {
    __shared__ float part[32];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    x = warp_sum(x);
    __syncthreads();  // part[] may still be read by a previous call
    if (lane == 0) part[warp] = x;
    __syncthreads();
    x = lane < nwarps ? part[lane] : 0.0f;
    return warp_sum(x);
}
// Max over the whole block, as block_sum.
__device__ __forceinline__ float block_max(float x) {
    __shared__ float part[32];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    x = warp_max(x);
    __syncthreads();
    if (lane == 0) part[warp] = x;
    __syncthreads();
    x = lane < nwarps ? part[lane] : -INFINITY;
    return warp_max(x);
}

// The widest vector (16 bytes, else 1 element) that rows of `row_elems` elements starting at every pointer
// given (NULL ones ignored) allow.
template <typename T> static inline int vec_width(size_t row_elems, const void *p0, const void *p1 = NULL,
                                                  const void *p2 = NULL, const void *p3 = NULL, const void *p4 = NULL) {
    const int V = 16 / (int)sizeof(T);
    const void *ps[5] = {p0, p1, p2, p3, p4};
    if (row_elems % V) return 1;
    for (int i = 0; i < 5; i++)
        if (ps[i] && ((uintptr_t)ps[i] % 16)) return 1;
    return V;
}

// Multiprocessors of the current device (read once).
static inline int num_sms(void) {
    static int n = 0;
    if (!n) {
        int dev;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    }
    return n;
}
