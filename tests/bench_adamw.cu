// bench_adamw.cu: the optimizer passes of a GPU training step (kernels/adamw.cu) over a model's parameter layout
// (default ViT-H/14): the gradient zeroing before backward (cudaMemsetAsync, as clip_gpu does); the step with scaled
// gradients (global-norm clipping): the sum of squares for the gradient norm, StableAdamW's moments phase and its
// apply phase (with the bf16 copy and its per-tensor maxima); the unscaled step: the statistics pass (norm and RMS
// sums) and the one-pass step. Each pass's DRAM bytes per parameter: zeroing 4 (write g), norm 4 (read g), moments
// 20 (read g, m, u; write m, u), apply 18 (read p, m, u; write p and the bf16 copy), statistics 8 (read g, u), step
// 30 (read g, p, m, u; write p, m, u, the bf16 copy). CUDA events around each call, 2 warm-up rounds,
// the median of the repetitions; GB/s against the H100 SXM's 3.35 TB/s HBM3 peak. Inputs: random normal values
// from a counter hash (u = a square, so positive). Before timing it prints a checksum of one step's results
// from fixed inputs (bits of p, m, u, the bf16 copy, the RMS, the maxima and the norm's sum), so two builds of
// the kernels can be compared bit for bit.
//   ./build/tests/bench_adamw [config [reps]]     (default: configs/vit_h_14.conf 20)
#include "../kernels/adamw.cuh"
#include "bench_gpu.h"
extern "C" {
#include "../model/clip.h"
#include "../model/config.h"
#include "../model/utils.h"
}

#define PEAK_GBS 3350.0

enum { ZERO, NORM, MOMENTS, APPLY, STATS, STEP, PASSES };
static const char *NAMES[PASSES] = {"zero grads (memset)", "scaled: sum of squares (norm)", "scaled: moments", "scaled: apply + bf16 + maxima",
                                    "unscaled: norm + RMS sums", "unscaled: one-pass step + bf16 + maxima"};
static const double BYTES_PER_PARAM[PASSES] = {4, 4, 20, 18, 8, 30};

int main(int argc, char **argv) {
    const char *config = argc > 1 ? argv[1] : "configs/vit_h_14.conf";
    int reps = bench_reps(argc, argv, 2, 20, 1000);
    if (bench_no_gpu("bench_adamw")) return 0;
    Config c;
    config_defaults(&c);
    config_load_file(&c, config);
    config_finalize(&c);
    ClipLayout L;
    clip_layout_build(&L, &c);
    size_t n = L.buffer_elems, np = 0;
    size_t *off = (size_t *)mallocCheck(L.num_tensors * sizeof(size_t)), *numel = (size_t *)mallocCheck(L.num_tensors * sizeof(size_t));
    int *decay = (int *)mallocCheck(L.num_tensors * sizeof(int));
    for (int i = 0; i < L.num_tensors; i++) off[i] = L.tensors[i].offset, numel[i] = L.tensors[i].numel, decay[i] = L.tensors[i].decay, np += numel[i];
    AdamWPlan plan;
    adamw_plan_init(&plan, L.num_tensors, off, numel, decay, 0.1f, 0, NULL, NULL);
    float *p, *g, *m, *u, *norm;
    bf16 *pb;
    cudaCheck(cudaMalloc(&p, n * sizeof(float))), cudaCheck(cudaMalloc(&g, n * sizeof(float)));
    cudaCheck(cudaMalloc(&m, n * sizeof(float))), cudaCheck(cudaMalloc(&u, n * sizeof(float)));
    cudaCheck(cudaMalloc(&pb, n * sizeof(bf16))), cudaCheck(cudaMalloc(&norm, sizeof(float)));
    fill_normal(p, n, 1, 0.02f), fill_normal(g, n, 2, 1e-3f), fill_normal(m, n, 3, 1e-4f), fill_normal(u, n, 4, 1e-3f, 1);
    cudaDeviceProp prop = bench_device();
    printf("GPU: %s (%d SMs); %s: %d tensors, %zu parameters (%d chunks of <= %d), %d reps, median\n", prop.name,
           prop.multiProcessorCount, c.model, L.num_tensors, np, plan.num_chunks, ADAMW_CHUNK, reps);
    // one step from the fixed inputs (lr large enough that the clipping and the bf16 rounding both matter)
    adamw_grad_stats_gpu(&plan, norm, g, NULL, 0.0f, 0.0f);
    adamw_moments_gpu(&plan, g, m, u, 0.9f, 0.95f, 1e-6f, 0.5f);
    adamw_apply_gpu(&plan, p, pb, m, u, 1e-3f, 1e-6f, 1);
    unsigned long long hs[7] = {checksum(p, n * 4), checksum(m, n * 4), checksum(u, n * 4), checksum(pb, n * 2 / 4 * 4),
                                checksum(plan.rms, L.num_tensors * 4), checksum(plan.tensor_absmax, L.num_tensors * 4), checksum(norm, 4)};
    printf("checksum p %016llx m %016llx u %016llx bf16 %016llx rms %016llx max %016llx norm %016llx\n", hs[0], hs[1], hs[2],
           hs[3], hs[4], hs[5], hs[6]);
    // events: before/after the zeroing, then around norm, moments, apply, and (fresh gradients again) statistics, step
    cudaEvent_t ev[9];
    for (int k = 0; k < 9; k++) cudaCheck(cudaEventCreate(&ev[k]));
    float *ms = (float *)mallocCheck((size_t)reps * PASSES * sizeof(float)), med[PASSES];
    for (int r = -2; r < reps; r++) {  // as in a step: zeroing, (backward), norm, moments, apply; (backward), stats, step
        cudaCheck(cudaEventRecord(ev[0]));
        cudaCheck(cudaMemsetAsync(g, 0, n * sizeof(float)));
        cudaCheck(cudaEventRecord(ev[1]));
        fill_normal(g, n, 10 + r, 1e-3f);
        cudaCheck(cudaEventRecord(ev[2]));
        adamw_grad_stats_gpu(&plan, norm, g, NULL, 0.0f, 0.0f);
        cudaCheck(cudaEventRecord(ev[3]));
        adamw_moments_gpu(&plan, g, m, u, 0.9f, 0.95f, 1e-6f, 0.5f);
        cudaCheck(cudaEventRecord(ev[4]));
        adamw_apply_gpu(&plan, p, pb, m, u, 1e-4f, 1e-6f, 1);
        cudaCheck(cudaEventRecord(ev[5]));
        fill_normal(g, n, 1000 + r, 1e-3f);
        cudaCheck(cudaEventRecord(ev[6]));
        adamw_grad_stats_gpu(&plan, norm, g, u, 0.95f, 1e-6f);
        cudaCheck(cudaEventRecord(ev[7]));
        adamw_step_gpu(&plan, g, m, u, p, pb, 0.9f, 0.95f, 1e-4f, 1e-6f, 1);
        cudaCheck(cudaEventRecord(ev[8]));
        cudaCheck(cudaEventSynchronize(ev[8]));
        if (r < 0) continue;
        cudaCheck(cudaEventElapsedTime(&ms[ZERO * reps + r], ev[0], ev[1]));
        for (int k = NORM; k <= APPLY; k++) cudaCheck(cudaEventElapsedTime(&ms[k * reps + r], ev[k + 1], ev[k + 2]));
        for (int k = STATS; k <= STEP; k++) cudaCheck(cudaEventElapsedTime(&ms[k * reps + r], ev[k + 2], ev[k + 3]));
    }
    printf("| pass | bytes/param | ms | GB/s | of %.0f GB/s |\n|---|---|---|---|---|\n", PEAK_GBS);
    for (int k = 0; k < PASSES; k++) {
        med[k] = median(ms + k * reps, reps);
        double gbs = BYTES_PER_PARAM[k] * np / (med[k] * 1e-3) / 1e9;
        printf("| %s | %.0f | %.3f | %.0f | %.1f%% |\n", NAMES[k], BYTES_PER_PARAM[k], med[k], gbs, 100 * gbs / PEAK_GBS);
    }
    const int ways[2][4] = {{ZERO, NORM, MOMENTS, APPLY}, {ZERO, STATS, STEP, -1}};  // the optimizer family of a step, each way
    for (int w = 0; w < 2; w++) {
        double total = 0, bytes = 0;
        for (int i = 0; i < 4 && ways[w][i] >= 0; i++) total += med[ways[w][i]], bytes += BYTES_PER_PARAM[ways[w][i]];
        double gbs = bytes * np / (total * 1e-3) / 1e9;
        printf("| %s step, all passes | %.0f | %.3f | %.0f | %.1f%% |\n", w ? "unscaled" : "scaled", bytes, total, gbs, 100 * gbs / PEAK_GBS);
    }
    for (int k = 0; k < 9; k++) cudaCheck(cudaEventDestroy(ev[k]));
    adamw_plan_free(&plan);
    cudaCheck(cudaFree(p)), cudaCheck(cudaFree(g)), cudaCheck(cudaFree(m)), cudaCheck(cudaFree(u)), cudaCheck(cudaFree(pb));
    cudaCheck(cudaFree(norm));
    free(ms), free(off), free(numel), free(decay);
    clip_layout_free(&L);
    return 0;
}
