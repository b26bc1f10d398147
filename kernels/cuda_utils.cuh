// cuda_utils.cuh: checked CUDA / cuBLAS calls (each failure names the call and file:line) and small
// device helpers shared by all kernels.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "../model/utils.h"

static inline void cuda_check(cudaError_t err, const char *call, const char *file, int line) {
    if (err == cudaSuccess) return;
    fflush(stdout);
    fprintf(stderr, "error: %s failed at %s:%d: %s (%s)\n", call, file, line, cudaGetErrorString(err), cudaGetErrorName(err));
    if (err == cudaErrorMemoryAllocation)
        fprintf(stderr, "hint: the GPU is out of memory; lower micro_batch_size or enable activation recompute\n");
    if (err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice)
        fprintf(stderr, "hint: no usable GPU/driver; run with --set device=cpu or update the NVIDIA driver\n");
    exit(1);
}
#define cudaCheck(call) cuda_check((call), #call, __FILE__, __LINE__)
// After a kernel launch: catches launch-configuration errors at the launch site.
#define cudaCheckLaunch() cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

static inline void cublas_check(cublasStatus_t st, const char *call, const char *file, int line) {
    if (st == CUBLAS_STATUS_SUCCESS) return;
    fatal("%s failed at %s:%d: cuBLAS status %d (%s)", call, file, line, (int)st, cublasGetStatusString(st));
}
#define cublasCheck(call) cublas_check((call), #call, __FILE__, __LINE__)

static inline int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

// Number of CUDA devices, 0 when there is none or no usable driver (never exits).
static inline int cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no device" error
        return 0;
    }
    return n;
}
