// bench_bf16_gemm.cu: c_fc's GEMM with the GELU, as a bf16 step runs it, cuBLASLt + gelu_forward_gpu against bf16_gemm's
// fused epilogue (kernels/bf16_gemm.cu), at the image and text towers' shapes of ViT-B/16 (batch 256) and ViT-H/14
// (batch 64):
//   fc1 fwd + GELU   cuBLAS x W^T + bias, then gelu_forward_gpu   vs  BF16_EPI_GELU (pre-activation and GELU out)
//   fc1 GEMM alone   cuBLAS x W^T + bias                          vs  BF16_EPI_BIAS
// Calls back to back between CUDA events (bench_call_ms: batches of reps, the median of 7). Each row also prints the
// largest difference between the two paths' pre-activations, relative to the largest |value| (the GEMMs sum in
// different orders: about a bf16 step, or 0 where no rounding flips at the largest values).
//   ./build/tests/bench_bf16_gemm [reps]      (default 20)
#include <math.h>
#include "../kernels/bf16_gemm.cuh"
#include "../kernels/hopper.cuh"
#include "../kernels/gelu.cuh"
#include "../kernels/matmul.cuh"
#include "bench_gpu.h"

struct Shape {
    const char *name;
    int M, D, H;  // rows (batch x tokens), width, MLP width
};
static const Shape SHAPES[] = {{"B/16 image", 256 * 197, 768, 3072},
                               {"B/16 text", 256 * 77, 512, 2048},
                               {"H/14 image", 64 * 257, 1280, 5120},
                               {"H/14 text", 64 * 77, 1024, 4096}};

template <typename T> static T *alloc(size_t n) {
    T *p;
    cudaCheck(cudaMalloc(&p, n * sizeof(T)));
    return p;
}

// max |x - y| / max |y| over n bf16
static double rel_diff(const bf16 *x, const bf16 *y, size_t n) {
    bf16 *hx = (bf16 *)malloc(n * 2), *hy = (bf16 *)malloc(n * 2);
    cudaCheck(cudaMemcpy(hx, x, n * 2, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(hy, y, n * 2, cudaMemcpyDeviceToHost));
    double md = 0, my = 0;
    for (size_t i = 0; i < n; i++) {
        double a = __bfloat162float(hx[i]), b = __bfloat162float(hy[i]);
        md = fmax(md, fabs(a - b)), my = fmax(my, fabs(b));
    }
    free(hx), free(hy);
    return my > 0 ? md / my : md;
}

int main(int argc, char **argv) {
    int reps = bench_reps(argc, argv, 1, 20, 1000);
    if (bench_no_gpu("bench_bf16_gemm")) return 0;
    cudaDeviceProp prop = bench_device();
    printf("GPU: %s (%d SMs); ms per call, median of %d batches of %d\n", prop.name, prop.multiProcessorCount, BENCH_TRIALS, reps);
    if (!hopper_code_runs()) {
        printf("bench_bf16_gemm: skipped: bf16_gemm needs an sm_90 GPU and sm_90a code\n");
        return 0;
    }
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    printf("| shape | op | M | K -> N | cuBLAS (+ kernel) ms | fused ms | cuBLAS / fused | TFLOP/s fused | rel diff |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (const Shape &s : SHAPES) {
        int M = s.M, D = s.D, H = s.H;
        size_t nx = (size_t)M * D, nh = (size_t)M * H;
        bf16 *x = alloc<bf16>(nx), *wfc = alloc<bf16>((size_t)H * D), *bfc = alloc<bf16>(H);
        bf16 *pre_a = alloc<bf16>(nh), *act_a = alloc<bf16>(nh), *pre_b = alloc<bf16>(nh), *act_b = alloc<bf16>(nh);
        fill_normal(x, nx, 1, 1.0f), fill_normal(wfc, (size_t)H * D, 2, 0.02f), fill_normal(bfc, H, 3, 0.02f);
        double flops = 2.0 * M * D * H;
        for (int op = 0; op < 2; op++) {
            Bf16Gemm g = {op == 0 ? BF16_EPI_GELU : BF16_EPI_BIAS, pre_b, op == 0 ? act_b : NULL, x, wfc, bfc, 0, M, H, D};
            auto ref = [&](int) {
                matmul_forward_gpu<bf16>(pre_a, x, wfc, bfc, M, D, H);
                if (op == 0) gelu_forward_gpu<bf16>(act_a, pre_a, nh, 0);
            };
            auto fused = [&](int) { bf16_gemm(&g, 0); };
            ref(0), fused(0);
            cudaCheck(cudaDeviceSynchronize());
            double diff = rel_diff(pre_b, pre_a, nh);
            float ms_ref = bench_call_ms(ref, reps, e0, e1), ms_fused = bench_call_ms(fused, reps, e0, e1);
            printf("| %s | %s | %d | %d -> %d | %.3f | %.3f | %.2f | %.0f | %.1e |\n", s.name, op == 0 ? "fc1 fwd + GELU" : "fc1 GEMM alone",
                   M, D, H, ms_ref, ms_fused, ms_ref / ms_fused, flops / ms_fused * 1e-9, diff);
            fflush(stdout);
        }
        cudaCheck(cudaFree(x)), cudaCheck(cudaFree(wfc)), cudaCheck(cudaFree(bfc));
        cudaCheck(cudaFree(pre_a)), cudaCheck(cudaFree(act_a)), cudaCheck(cudaFree(pre_b)), cudaCheck(cudaFree(act_b));
    }
    return 0;
}
