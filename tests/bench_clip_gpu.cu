// bench_clip_gpu.cu: the GPU training step (bf16, or int8_switchback and its variants) per model at the issue's
// per-GPU batches on synthetic inputs: step time, images/s, MFU (training FLOPs = 3 x forward, H100 dense bf16
// peak 989 TFLOP/s), GPU memory (used, and the plan's total and activations), and the split of the step by op
// family (GPU time between events around the ops). A step is what the trainer runs: forward + backward (with
// the input upload), gradient norm, optimizer, each ending in a host read as in train_clip. Prints a table;
// results go to docs/benchmarks.md by hand.
//   ./build/tests/bench_clip_gpu [model ...]     (default: b16 l14 h14)
//   models: b16 b16r0 l14 h14 h14r0 h14r2 (bf16); b16k h14k (bf16, recompute 1 with recompute_keep set so that the
//   GPU memory used is just below open_clip + torch.compile's at the same batch on the same H100, as
//   tests/bench_open_clip.py measures it: the equal-memory comparison); b16z h14z (bf16, ZeRO-1); suffix bf (b16bf b16zbf h14bf h14zbf)
//   = the gradients summed over the GPUs in bf16 (grad_reduce = bf16); suffix i8 = int8_switchback standard,
//   me = memory_efficient, vw = vectorwise, ev = int8_everywhere, mlp = standard on c_fc and c_proj only
//   (l14i8 l14me h14i8 h14me h14vw h14ev h14mlp h14r0i8 h14r0me)
//   BENCH_SET="key=value ..." applies more config settings to every model (e.g. BENCH_SET=grad_overlap=false).
//   BENCH_CAPTION_TOKENS=n: every caption n ids long, SOT and EOT included (open_clip's synthetic "Dummy caption"
//   is 4; 77: the text tower runs every position, as open_clip's does); default 5 to 76 at random.
// Multi-GPU: start one process per GPU (mpirun -np N, or scripts/run_local.sh N): the batch is per GPU, the
// global batch N times that; rank 0 prints, img/s is per GPU, and "comm wait" is the time the compute stream
// waits for collectives (communication not hidden by compute).
#include "bench_gpu.h"
#include "test_gpu.h"
extern "C" {
#include "../model/clip.h"
#include "../model/clip_dist.h"
#include "../model/clip_gpu.h"
#include "../model/config.h"
#include "../optim/optim.h"
}

#define PEAK_TFLOPS 989.0
#define WARMUP 3
#define STEPS 10

typedef struct {
    const char *name, *config;
    int batch, recompute, zero;                // batch per GPU
    const char *precision, *variant, *layers;  // layers: switchback_layers (NULL: all four)
    const char *reduce;                        // grad_reduce (NULL: fp32)
    int keep;                                  // recompute_keep
} BenchModel;

static const BenchModel MODELS[] = {
    {"b16", "configs/vit_b_16.conf", 256, 1, 0, "bf16", "standard"},
    {"b16r0", "configs/vit_b_16.conf", 256, 0, 0, "bf16", "standard"},
    {"b16k", "configs/vit_b_16.conf", 256, 1, 0, "bf16", "standard", NULL, NULL, 8},  // 20.3 GiB used; open_clip compiled 21.9
    {"b16z", "configs/vit_b_16.conf", 256, 1, 1, "bf16", "standard"},
    {"b16bf", "configs/vit_b_16.conf", 256, 1, 0, "bf16", "standard", NULL, "bf16"},
    {"b16zbf", "configs/vit_b_16.conf", 256, 1, 1, "bf16", "standard", NULL, "bf16"},
    {"l14", "configs/vit_l_14.conf", 128, 1, 0, "bf16", "standard"},
    {"l14i8", "configs/vit_l_14.conf", 128, 1, 0, "int8_switchback", "standard"},
    {"l14me", "configs/vit_l_14.conf", 128, 1, 0, "int8_switchback", "memory_efficient"},
    {"h14", "configs/vit_h_14.conf", 64, 1, 0, "bf16", "standard"},
    {"h14z", "configs/vit_h_14.conf", 64, 1, 1, "bf16", "standard"},
    {"h14bf", "configs/vit_h_14.conf", 64, 1, 0, "bf16", "standard", NULL, "bf16"},
    {"h14zbf", "configs/vit_h_14.conf", 64, 1, 1, "bf16", "standard", NULL, "bf16"},
    {"h14i8", "configs/vit_h_14.conf", 64, 1, 0, "int8_switchback", "standard"},
    {"h14me", "configs/vit_h_14.conf", 64, 1, 0, "int8_switchback", "memory_efficient"},
    {"h14vw", "configs/vit_h_14.conf", 64, 1, 0, "int8_switchback", "vectorwise"},
    {"h14ev", "configs/vit_h_14.conf", 64, 1, 0, "int8_switchback", "int8_everywhere"},
    {"h14mlp", "configs/vit_h_14.conf", 64, 1, 0, "int8_switchback", "standard", "c_fc,c_proj"},
    {"h14r0", "configs/vit_h_14.conf", 64, 0, 0, "bf16", "standard"},
    {"h14r0i8", "configs/vit_h_14.conf", 64, 0, 0, "int8_switchback", "standard"},
    {"h14r0me", "configs/vit_h_14.conf", 64, 0, 0, "int8_switchback", "memory_efficient"},
    {"h14r2", "configs/vit_h_14.conf", 64, 2, 0, "bf16", "standard"},
    {"h14k", "configs/vit_h_14.conf", 64, 1, 0, "bf16", "standard", NULL, NULL, 18},  // open_clip compiled: 39.5 GiB used
};

static void run(const BenchModel *bm, int world) {
    Config c;
    config_defaults(&c);
    config_load_file(&c, bm->config);
    char sets[9][64];
    snprintf(sets[0], 64, "batch_size=%d", bm->batch * world), snprintf(sets[1], 64, "micro_batch_size=0");
    snprintf(sets[2], 64, "recompute=%d", bm->recompute), snprintf(sets[3], 64, "precision=%s", bm->precision);
    snprintf(sets[4], 64, "switchback_variant=%s", bm->variant);
    snprintf(sets[5], 64, "switchback_layers=%s", bm->layers ? bm->layers : "qkv,out_proj,c_fc,c_proj");
    snprintf(sets[6], 64, "zero=%d", bm->zero), snprintf(sets[7], 64, "grad_reduce=%s", bm->reduce ? bm->reduce : "fp32");
    snprintf(sets[8], 64, "recompute_keep=%d", bm->keep);
    for (int i = 0; i < 9; i++) config_set(&c, sets[i], i + 1);
    char extra[256];  // BENCH_SET="key=value ...": more settings for every model, e.g. grad_overlap=false
    snprintf(extra, sizeof(extra), "%s", getenv("BENCH_SET") ? getenv("BENCH_SET") : "");
    for (char *save, *kv = strtok_r(extra, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) config_set(&c, kv, 0);
    c.world_size = world;
    config_finalize(&c);
    ClipLayout L;
    clip_layout_build(&L, &c);
    float *params = (float *)mallocCheck(L.buffer_elems * sizeof(float));
    clip_init_params(&L, params, c.seed);
    // synthetic inputs: random pixels, captions SOT + words + EOT of 5 to T - 1 ids at random (the packed text tower
    // runs ~0.53 of its positions), or of BENCH_CAPTION_TOKENS ids each
    int B = bm->batch, S = c.image_size, T = c.context_length;
    const char *cap = getenv("BENCH_CAPTION_TOKENS");
    int cap_len = cap ? atoi(cap) : 0;
    if (cap && (cap_len < 2 || cap_len > T)) fatal("BENCH_CAPTION_TOKENS=%s: 2 to %d ids", cap, T);
    Batch b = {B, S, T, (uint8_t *)mallocCheck((size_t)B * 3 * S * S), (int32_t *)callocCheck((size_t)B * T, sizeof(int32_t))};
    for (size_t i = 0; i < (size_t)B * 3 * S * S; i++) b.images[i] = (uint8_t)rng_below(&test_rng, 256);
    for (int i = 0; i < B; i++) {
        int len = cap_len ? cap_len : 5 + (int)rng_below(&test_rng, T - 5);
        b.tokens[(size_t)i * T] = 49406, b.tokens[(size_t)i * T + len - 1] = 49407;
        for (int t = 1; t < len - 1; t++) b.tokens[(size_t)i * T + t] = 1 + (int32_t)rng_below(&test_rng, 49405);
    }
    clip_gpu_print_memory_plan(&c, &L);
    ClipGPU *g = clip_gpu_create(&c, &L, params);
    Optimizer o;
    optim_init(&o, &c, &L);
    double t0 = 0;
    float loss = 0;
    for (int s = 0; s < WARMUP + STEPS; s++) {
        if (s == WARMUP) t0 = now_seconds();
        loss = clip_gpu_forward_backward(g, &b);
        float norm = clip_gpu_grad_norm(g, &o);
        clip_gpu_update(g, &o, 1e-4f, 1.0f);
        if (!isfinite(loss) || !isfinite(norm)) printf("  warning: non-finite loss %g / norm %g\n", loss, norm);
    }
    double step_s = (now_seconds() - t0) / STEPS;
    size_t free_b, total_b;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    GpuMemoryPlan plan = clip_gpu_memory_plan(&c, &L, B, bm->recompute);
    double ms[PROF_FAMILIES], sum = 0;
    clip_gpu_profile(g, 1);
    for (int s = 0; s < 3; s++) {
        clip_gpu_forward_backward(g, &b);
        clip_gpu_grad_norm(g, &o);
        clip_gpu_update(g, &o, 1e-4f, 1.0f);
    }
    clip_gpu_profile_read(g, ms);
    clip_gpu_profile(g, 0);
    double flops = 3 * clip_forward_flops(&L, &c) * B;
    printf("| %s | %s | %d | %d | %d | %d keep %d | %.1f | %.0f | %.1f%% | %.2f | %.2f | %.2f |", c.model, bm->name, world, c.zero, B,
           bm->recompute, c.recompute_keep, step_s * 1e3, B / step_s, 100 * flops / step_s / (PEAK_TFLOPS * 1e12),
           (double)(total_b - free_b) / (1u << 30), (double)plan.total / (1u << 30), (double)plan.activations / (1u << 30));
    for (int f = 0; f < PROF_FAMILIES; f++) sum += ms[f] / 3;
    for (int f = 0; f < PROF_FAMILIES; f++) printf(" %.1f (%.0f%%) |", ms[f] / 3, 100 * ms[f] / 3 / sum);
    printf(" %.1f | loss %.3f\n", step_s * 1e3 - sum, loss);
    fflush(stdout);
    optim_free(&o);
    clip_gpu_free(g);
    free(params), free(b.images), free(b.tokens);
    clip_layout_free(&L);
}

int main(int argc, char **argv) {
    if (bench_no_gpu("bench_clip_gpu")) return 0;
    Dist d;
    dist_init(&d);
    if (d.rank != 0 && !freopen("/dev/null", "w", stdout)) return 1;
    if (d.world > 1) dist_place_threads(&d, 0), gpu_dist_init(&d, 300);
    test_seed();
    cudaDeviceProp prop = bench_device();
    printf("GPU: %s, %d SMs, %.1f GiB; %d GPU(s)\n", prop.name, prop.multiProcessorCount, (double)prop.totalGlobalMem / (1u << 30), d.world);
    const char *cap = getenv("BENCH_CAPTION_TOKENS");
    printf("captions: %s ids (the text tower runs each caption's positions up to its EOT; MFU counts every position of the context)\n",
           cap ? cap : "5 to 76");
    printf("| model | variant | GPUs | ZeRO | batch/GPU | recompute | step ms | img/s/GPU | MFU | GPU mem used GiB | plan GiB | plan activations GiB |");
    for (int f = 0; f < PROF_FAMILIES; f++) printf(" %s ms |", PROF_NAMES[f]);
    printf(" host/gaps ms |\n");
    const char *defaults[] = {"b16", "l14", "h14"};
    int n = argc > 1 ? argc - 1 : 3;
    for (int i = 0; i < n; i++) {
        const char *want = argc > 1 ? argv[i + 1] : defaults[i];
        int found = 0;
        for (size_t k = 0; k < sizeof(MODELS) / sizeof(MODELS[0]); k++)
            if (!strcmp(MODELS[k].name, want)) run(&MODELS[k], d.world), found = 1;
        if (!found) fprintf(stderr, "unknown model %s\n", want);
    }
    gpu_dist_finalize();
    dist_finalize(&d);
    return 0;
}
