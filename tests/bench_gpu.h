// bench_gpu.h: what the GPU benchmarks share: the start of main (the repetition count, the skip without a GPU, the
// device's properties); inputs filled on the device with normal values from a counter hash (splitmix64 +
// Box-Muller), so that filling gigabytes costs no host time and no host memory; the median of repeated timings; an
// order-independent checksum of device memory, to compare two builds bit for bit.
#pragma once
#include "../kernels/common.cuh"

// The repetition count from argv[i]: def where it is missing or outside 1..max.
static int bench_reps(int argc, char **argv, int i, int def, int max) {
    int reps = argc > i ? atoi(argv[i]) : def;
    return reps < 1 || reps > max ? def : reps;
}

// 1 where there is no GPU, after printing "NAME: skipped: no GPU" (the scripts look for that line): main returns 0.
static int bench_no_gpu(const char *name) {
    if (cuda_device_count() > 0) return 0;
    printf("%s: skipped: no GPU\n", name);
    return 1;
}

// The current device's properties, for the "GPU: ..." line each benchmark prints with its own settings.
static cudaDeviceProp bench_device(void) {
    int dev;
    cudaDeviceProp prop;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    return prop;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// The median of n timings (sorts them in place).
static float median(float *x, int n) {
    qsort(x, n, sizeof(float), cmp_float);
    return x[n / 2];
}

// GPU time of one call of run(r), ms: 3 warm-up calls, then BENCH_TRIALS batches of reps calls back to back (as a step
// enqueues them; r = 0 .. reps - 1, e.g. to rotate over input sets) between two events; the median of the batches'
// means.
#define BENCH_TRIALS 7
template <typename F> static float bench_call_ms(F run, int reps, cudaEvent_t e0, cudaEvent_t e1) {
    float ms[BENCH_TRIALS];
    for (int i = 0; i < 3; i++) run(i);
    for (int t = 0; t < BENCH_TRIALS; t++) {
        cudaCheck(cudaEventRecord(e0));
        for (int r = 0; r < reps; r++) run(r);
        cudaCheck(cudaEventRecord(e1));
        cudaCheck(cudaEventSynchronize(e1));
        cudaCheck(cudaEventElapsedTime(&ms[t], e0, e1));
        ms[t] /= reps;
    }
    return median(ms, BENCH_TRIALS);
}

// x[i] = std * normal(seed, i), or its square (a positive second moment) when square.
template <typename T> __global__ void fill_normal_kernel(T *x, size_t n, uint64_t seed, float std, int square) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ULL;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        float u1 = ((z >> 40) + 1) * (1.0f / 16777217.0f), u2 = ((z >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
        float v = std * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
        x[i] = (T)(square ? v * v : v);
    }
}

template <typename T> static void fill_normal(T *x, size_t n, uint64_t seed, float std, int square = 0) {
    long blocks = ceil_div((long)n, 256);
    fill_normal_kernel<T><<<blocks < 32L * num_sms() ? (int)blocks : 32 * num_sms(), 256>>>(x, n, seed, std, square);
    cudaCheckLaunch();
}

// *h += sum over i of a mix of (the 32-bit words of x, i): order-independent, so deterministic.
__global__ void checksum_kernel(unsigned long long *h, const uint32_t *x, size_t n) {
    unsigned long long s = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = ((uint64_t)x[i] << 32 | (uint32_t)i) * 0x9e3779b97f4a7c15ULL;
        s += z ^ (z >> 29);
    }
    atomicAdd(h, s);
}

static unsigned long long checksum(const void *x, size_t bytes) {
    unsigned long long *d, h;
    cudaCheck(cudaMalloc(&d, sizeof(*d)));
    cudaCheck(cudaMemset(d, 0, sizeof(*d)));
    checksum_kernel<<<16 * num_sms(), 256>>>(d, (const uint32_t *)x, bytes / 4);
    cudaCheckLaunch();
    cudaCheck(cudaMemcpy(&h, d, sizeof(h), cudaMemcpyDeviceToHost));
    cudaCheck(cudaFree(d));
    return h;
}
