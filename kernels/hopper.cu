// hopper.cu: whether the current GPU runs this build's sm_90a code (see hopper.cuh's hopper_code_runs).
#include "hopper.cuh"

// 1 in the sm_90a code only. An sm_90 GPU loads that code when the build has it; a build for sm_90 without the
// 'a' (CUDA_ARCH=...code=sm_90) compiles every wgmma / TMA kernel body away, and its copy of this reads 0.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ int sm90a_code = 1;
#else
__device__ int sm90a_code = 0;
#endif

int hopper_code_runs(void) {
    static int runs = -1;
    if (runs < 0) {
        int dev, major = 0, loaded = 0;
        // no device (memory plans are made without one): 0, not an error
        if (cuda_device_count() > 0) {
            cudaCheck(cudaGetDevice(&dev));
            cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        }
        // no code for this GPU at all fails here; clip_gpu_unsupported names that case
        if (major == 9 && cudaMemcpyFromSymbol(&loaded, sm90a_code, sizeof(int)) != cudaSuccess) loaded = 0, cudaGetLastError();
        runs = major == 9 && loaded == 1;
    }
    return runs;
}
