// test_gpu.h: what the GPU tests share: skipping without a GPU, fresh random inputs (the seed differs every
// run and is printed, so a failure can be replayed with TEST_SEED=...), device copies in float or bf16,
// NaN-poisoned outputs, and bf16 rounding of host data (so the CPU reference sees the same inputs).
#pragma once
#include <time.h>
#include <unistd.h>

#include "../kernels/common.cuh"
extern "C" {
#include "../model/ops_cpu.h"
#include "../model/rng.h"
#include "../model/utils.h"
}
#include "test.h"

#define SKIP_WITHOUT_GPU()                             \
    do {                                               \
        if (cuda_device_count() == 0) SKIP("no GPU"); \
    } while (0)

static Rng test_rng;

static void test_seed(void) {
    const char *env = getenv("TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    printf("  TEST_SEED=%llu\n", (unsigned long long)seed);
    rng_init(&test_rng, seed, RNG_TEST, 0);
}

// n values uniform in [-scale, scale)
static float *rand_host(size_t n, float scale) {
    float *x = (float *)mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)(2.0 * rng_uniform(&test_rng) - 1.0);
    return x;
}

static float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
static void round_bf16_(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = round_bf16(x[i]);
}
// Round to T's precision in place (identity for float).
template <typename T> static void round_to(float *x, size_t n) {
    if (sizeof(T) == 2) round_bf16_(x, n);
}

template <typename T> static T *to_device(const float *h, size_t n) {
    T *tmp = (T *)mallocCheck(n * sizeof(T)), *d;
    for (size_t i = 0; i < n; i++) tmp[i] = (T)h[i];
    cudaCheck(cudaMalloc(&d, n * sizeof(T) + 16));
    cudaCheck(cudaMemcpy(d, tmp, n * sizeof(T), cudaMemcpyHostToDevice));
    free(tmp);
    return d;
}

template <typename T> static void to_host(float *h, const T *d, size_t n) {
    T *tmp = (T *)mallocCheck(n * sizeof(T));
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(tmp, d, n * sizeof(T), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) h[i] = (float)tmp[i];
    free(tmp);
}

// A device buffer of n elements filled with NaN (all-ones bytes are NaN in float and bf16).
template <typename T> static T *poisoned(size_t n) {
    T *d;
    cudaCheck(cudaMalloc(&d, n * sizeof(T) + 16));
    cudaCheck(cudaMemset(d, 0xff, n * sizeof(T)));
    return d;
}

static float *zeros_host(size_t n) { return (float *)callocCheck(n, sizeof(float)); }
