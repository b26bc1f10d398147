// bench_switchback.cu: times the SwitchBack kernels at CLIP shapes against cuBLAS: per shape the bf16 GEMM
// (cuBLASLt), the int8 GEMM of cuBLASLt (int32 out), ours (int8 + dequantize, bf16 out; the wgmma and the
// mma.sync kernel), the quantizers, and the whole linear layer forward + backward, SwitchBack versus bf16; at the
// fc1 shapes also the GELU producers with their int8 rows, fused against GELU then quantize_rowwise, and the GELU
// backwards that also write the recomputed GELU output (the model's backward at recompute >= 1).
// CUDA events around each op, the ops interleaved within each repetition (time_ops), warm-up first, the median of
// the repetitions; activations alternate
// between two sets of buffers (each larger than L2 at these shapes); random normal data (never zeros).
// Ends with a table. Usage: bench_switchback [reps [shape]]: shape, a part of a shape's name ("H/14 qkv"), times
// that shape alone; shape "step": the GEMMs of the training step's linears instead (batch x tokens rows of each
// tower of ViT-H/14 at batch 64 and ViT-L/14 at 128; forward x W^T and input gradient g W), cuBLAS bf16 as the bf16
// step calls it against ours at the tile width int8_gemm picks and at both widths, and each tower's sum per step
// (the smaller step shapes fit in L2, as they do in the step right after their producer).
// SB_BENCH_PROFILE=1: no timing; the three GEMMs of each shape run once, warm, between cudaProfilerStart and Stop
// (for `ncu --profile-from-start off`).
#include <cuda_profiler_api.h>
#include <string.h>
#include "../kernels/gelu.cuh"
#include "../kernels/hopper.cuh"
#include "../kernels/matmul.cuh"
#include "../kernels/switchback.cuh"
#include "bench_gpu.h"

typedef struct {
    const char *name;
    int M, K, N;
    int dx;      // step shapes: 1 for the input-gradient orientation (K, N: the layer's out and in)
    int layers;  // step shapes: how many of these GEMMs a step runs
} Shape;

static const Shape shapes[] = {
    {"ViT-B/16 qkv", 50432, 768, 2304},  {"ViT-L/14 fc1", 65792, 1024, 4096}, {"ViT-H/14 qkv", 65792, 1280, 3840},
    {"ViT-H/14 out", 65792, 1280, 1280}, {"ViT-H/14 fc1", 65792, 1280, 5120}, {"ViT-H/14 fc2", 65792, 5120, 1280},
};
#define NSHAPES (int)(sizeof(shapes) / sizeof(shapes[0]))

// The step's GEMMs: per tower, M = batch x tokens, each linear forward (K = in, N = out) and input gradient.
#define STEP_TOWER(tower, M, D, layers)                                                          \
    {tower " qkv", M, D, 3 * D, 0, layers}, {tower " qkv dx", M, 3 * D, D, 1, layers},           \
        {tower " out", M, D, D, 0, layers}, {tower " out dx", M, D, D, 1, layers},               \
        {tower " fc1", M, D, 4 * D, 0, layers}, {tower " fc1 dx", M, 4 * D, D, 1, layers},       \
        {tower " fc2", M, 4 * D, D, 0, layers}, {tower " fc2 dx", M, D, 4 * D, 1, layers}
static const Shape step_shapes[] = {
    STEP_TOWER("H/14 img", 64 * 257, 1280, 32), STEP_TOWER("H/14 txt", 64 * 77, 1024, 24),
    STEP_TOWER("L/14 img", 128 * 257, 1024, 24), STEP_TOWER("L/14 txt", 128 * 77, 768, 12),
};
#define NSTEP (int)(sizeof(step_shapes) / sizeof(step_shapes[0]))
#define MAXSHAPES (NSTEP > NSHAPES ? NSTEP : NSHAPES)


__global__ void count_diff_kernel(unsigned long long *count, const uint16_t *a, const uint16_t *b, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && a[i] != b[i]) atomicAdd(count, 1ull);
}


// Everything one shape needs; [2]: the two alternating sets of activations.
typedef struct {
    Shape s;
    bf16 *x[2], *g[2], *w, *bias, *y, *y2, *y3, *dx;  // y3: the GELU backwards' recomputed output
    int8_t *xq[2];
    float *xs[2], *dw, *db;
    int32_t *y32;
    SbWeight qw;
    SwitchBack sb, sb_me;  // standard and memory-efficient scratch
} Bench;

typedef enum {
    OP_BF16_GEMM, OP_INT8_LT, OP_INT8_WGMMA, OP_INT8_MMA, OP_QUANT_ROWS, OP_QUANT_WEIGHT, OP_LAYER_BF16, OP_LAYER_SB,
    OP_LAYER_SB_MEMEFF, OP_GELU_FWD_Q, OP_GELU_FWD_FUSED, OP_GELU_FWD_FUSED_INT8, OP_GELU_BWD_Q, OP_GELU_BWD_FUSED,
    OP_GELU_FWD, OP_GELU_BWD, OP_GELU_BWD_ACT, OP_GELU_BWD_FUSED_ACT, OP_INT8_N256, OP_INT8_N128, NOPS
} Op;
static const char *op_names[NOPS] = {"cuBLAS bf16 GEMM", "cuBLASLt int8 GEMM (int32 out)", "ours int8 GEMM+dequant (wgmma)",
                                     "ours int8 GEMM+dequant (mma.sync)", "row-wise quantize of x", "weight quantize (+W^T)",
                                     "bf16 linear fwd+bwd (cuBLASLt)", "SwitchBack fwd+bwd", "SwitchBack memory-efficient fwd+bwd",
                                     "GELU fwd, then row quantize", "GELU fwd + int8 (fused)", "GELU fwd, int8 only (fused)",
                                     "GELU bwd + bias grad, then quantize", "GELU bwd + bias grad + int8 (fused)",
                                     "GELU fwd (bf16)", "GELU bwd + bias grad (bf16)", "GELU bwd + bias grad + fwd out (bf16)",
                                     "GELU bwd + bias grad + int8 + fwd out",
                                     "ours, 128 x 256 tiles", "ours, 128 x 128 tiles"};

static Int8Gemm forward_gemm(Bench *b, int set) {
    Int8Gemm f = {};
    f.out = b->y, f.out_type = INT8_OUT_BF16;
    f.a = b->xq[set], f.a_scale = b->xs[set];
    f.b = b->qw.q, f.b_scale = b->qw.absmax + b->s.N + b->s.K;  // tensor-wise
    f.bias = b->bias, f.M = b->s.M, f.N = b->s.N, f.K = b->s.K;
    return f;
}

static void run_op(Bench *b, Op op, int set) {
    int M = b->s.M, K = b->s.K, N = b->s.N;
    Int8Gemm f = forward_gemm(b, set);
    switch (op) {
    case OP_BF16_GEMM:  // a dx shape as the step computes it: y (M, N) = x (M, K) . w (K, N)
        if (b->s.dx) matmul_backward_input_gpu<bf16>(b->y, b->x[set], b->w, M, N, K);
        else matmul_forward_gpu<bf16>(b->y, b->x[set], b->w, NULL, M, K, N);
        break;
    // cuBLASLt int8 -> int32, y (M, N) = x (M, K) . w (N, K)^T in the "TN" form its int8 kernels need
    case OP_INT8_LT: matmul_cm(b->y32, CUDA_R_32I, N, b->qw.q, K, 1, b->xq[set], K, 0, CUDA_R_8I, NULL, N, M, K, 1.0f, 0.0f, 0); break;
    case OP_INT8_WGMMA: int8_gemm_path(&f, INT8_PATH_WGMMA, 0); break;
    case OP_INT8_MMA: int8_gemm_path(&f, INT8_PATH_MMA, 0); break;
    case OP_INT8_N256: int8_gemm_path(&f, INT8_PATH_WGMMA_N256, 0); break;
    case OP_INT8_N128: int8_gemm_path(&f, INT8_PATH_WGMMA_N128, 0); break;
    case OP_QUANT_ROWS: quantize_rowwise(b->xq[set], b->xs[set], b->x[set], M, K, 0); break;
    case OP_QUANT_WEIGHT: switchback_quantize_weight(&b->qw, b->w, SB_STANDARD, 0); break;
    case OP_LAYER_BF16:
        matmul_forward_gpu<bf16>(b->y, b->x[set], b->w, b->bias, M, K, N);          // y = x W^T + b
        matmul_backward_input_gpu<bf16>(b->dx, b->g[set], b->w, M, K, N);            // dx = g W
        matmul_cm(b->dw, CUDA_R_32F, K, b->x[set], K, 0, b->g[set], N, 1, CUDA_R_16BF, NULL, K, N, M, 1.0f, 0.0f, 0);  // dW = g^T x
        column_sums(b->db, b->sb.db_partial, b->g[set], M, N, 0, 0);
        break;
    // GELU of y (M, N) as c_fc's output, its input gradient from g; int8 rows into the layer's gq scratch
    case OP_GELU_FWD_Q:
        gelu_forward_gpu<bf16>(b->y2, b->y, (size_t)M * N, 0);
        quantize_rowwise(b->sb.gq, b->sb.gs, b->y2, M, N, 0);
        break;
    case OP_GELU_FWD_FUSED: gelu_forward_quantize_gpu(b->y2, b->sb.gq, b->sb.gs, b->y, M, N, 0); break;
    case OP_GELU_FWD_FUSED_INT8: gelu_forward_quantize_gpu(NULL, b->sb.gq, b->sb.gs, b->y, M, N, 0); break;
    case OP_GELU_BWD_Q:
        gelu_backward_bias_gpu<bf16>(b->y2, NULL, b->db, b->g[set], b->y, M, N, 0);
        quantize_rowwise(b->sb.gq, b->sb.gs, b->y2, M, N, 0);
        break;
    case OP_GELU_BWD_FUSED: gelu_backward_quantize_gpu(b->y2, NULL, b->sb.gq, b->sb.gs, b->db, b->g[set], b->y, M, N, 0); break;
    case OP_GELU_FWD: gelu_forward_gpu<bf16>(b->y2, b->y, (size_t)M * N, 0); break;
    case OP_GELU_BWD: gelu_backward_bias_gpu<bf16>(b->y2, NULL, b->db, b->g[set], b->y, M, N, 0); break;
    case OP_GELU_BWD_ACT: gelu_backward_bias_gpu<bf16>(b->y2, b->y3, b->db, b->g[set], b->y, M, N, 0); break;
    case OP_GELU_BWD_FUSED_ACT: gelu_backward_quantize_gpu(b->y2, b->y3, b->sb.gq, b->sb.gs, b->db, b->g[set], b->y, M, N, 0); break;
    case OP_LAYER_SB:
    case OP_LAYER_SB_MEMEFF: {
        SwitchBack *sb = op == OP_LAYER_SB ? &b->sb : &b->sb_me;
        switchback_forward(sb, b->y, b->xq[set], b->xs[set], b->x[set], &b->qw, b->bias, M, 0);
        switchback_backward(sb, b->dx, b->dw, b->db, b->g[set], op == OP_LAYER_SB ? b->x[set] : NULL, b->xq[set],
                            b->xs[set], &b->qw, M, 0, 0, 0);
        break;
    }
    default: break;
    }
}

// Median milliseconds of each op over reps. The ops are interleaved inside each repetition, and repetition i
// starts at op i % NOPS, so every op sees every position and the same clock / power state (timed one after the
// other, the ops timed later in a shape ran 10-12% slower than the same kernel timed first). 3 warm-up rounds.
static void time_ops(Bench *b, const int *use, int reps, float *med) {
    for (int i = 0; i < 3; i++)
        for (int op = 0; op < NOPS; op++)
            if (use[op]) run_op(b, (Op)op, i % 2);
    cudaEvent_t *ev = (cudaEvent_t *)mallocCheck(sizeof(cudaEvent_t) * 2 * NOPS * reps);
    float *ms = (float *)mallocCheck(sizeof(float) * NOPS * reps);
    for (int i = 0; i < 2 * NOPS * reps; i++) cudaCheck(cudaEventCreate(&ev[i]));
    for (int i = 0; i < reps; i++)
        for (int k = 0; k < NOPS; k++) {
            int op = (i + k) % NOPS;
            if (!use[op]) continue;
            cudaCheck(cudaEventRecord(ev[2 * (op * reps + i)], 0));
            run_op(b, (Op)op, i % 2);
            cudaCheck(cudaEventRecord(ev[2 * (op * reps + i) + 1], 0));
        }
    cudaCheck(cudaDeviceSynchronize());
    for (int op = 0; op < NOPS; op++) {
        med[op] = NAN;
        if (!use[op]) continue;
        float *t = ms + op * reps;
        for (int i = 0; i < reps; i++) cudaCheck(cudaEventElapsedTime(&t[i], ev[2 * (op * reps + i)], ev[2 * (op * reps + i) + 1]));
        med[op] = median(t, reps);
    }
    for (int i = 0; i < 2 * NOPS * reps; i++) cudaCheck(cudaEventDestroy(ev[i]));
    free(ev), free(ms);
}

static void *dmalloc(size_t bytes) {
    void *p;
    cudaCheck(cudaMalloc(&p, bytes));
    return p;
}

int main(int argc, char **argv) {
    int reps = bench_reps(argc, argv, 1, 20, 64);
    const char *only = argc > 2 ? argv[2] : NULL;
    int step = only && strcmp(only, "step") == 0;
    const Shape *list = step ? step_shapes : shapes;
    int nshapes = step ? NSTEP : NSHAPES;
    if (step) only = NULL;
    int profile = getenv("SB_BENCH_PROFILE") && atoi(getenv("SB_BENCH_PROFILE"));
    if (bench_no_gpu("bench_switchback")) return 0;
    cudaDeviceProp prop = bench_device();
    int wgmma = hopper_code_runs();
    printf("GPU: %s (sm_%d%d, %d SMs, L2 %d MB), %d reps, median\n", prop.name, prop.major, prop.minor,
           prop.multiProcessorCount, prop.l2CacheSize >> 20, reps);
    float t[MAXSHAPES][NOPS];
    int done[MAXSHAPES] = {0};
    unsigned long long *d_count = (unsigned long long *)dmalloc(sizeof(unsigned long long));
    for (int si = 0; si < nshapes; si++) {
        if (only && !strstr(list[si].name, only)) continue;
        done[si] = 1;
        Bench b = {};
        b.s = list[si];
        int M = b.s.M, K = b.s.K, N = b.s.N, C = K > N ? K : N;
        size_t mk = (size_t)M * K, mn = (size_t)M * N, nk = (size_t)N * K;
        for (int i = 0; i < 2; i++) {
            b.x[i] = (bf16 *)dmalloc(sizeof(bf16) * mk), b.g[i] = (bf16 *)dmalloc(sizeof(bf16) * mn);
            b.xq[i] = (int8_t *)dmalloc(mk), b.xs[i] = (float *)dmalloc(sizeof(float) * M);
            fill_normal(b.x[i], mk, 11 + i, 1.0f);
            fill_normal(b.g[i], mn, 13 + i, 1e-3f);
        }
        b.w = (bf16 *)dmalloc(sizeof(bf16) * nk), b.bias = (bf16 *)dmalloc(sizeof(bf16) * N);
        fill_normal(b.w, nk, 17, 0.02f);
        fill_normal(b.bias, N, 19, 0.02f);
        b.y = (bf16 *)dmalloc(sizeof(bf16) * mn), b.y2 = (bf16 *)dmalloc(sizeof(bf16) * mn), b.y3 = (bf16 *)dmalloc(sizeof(bf16) * mn);
        b.dx = (bf16 *)dmalloc(sizeof(bf16) * mk);
        b.dw = (float *)dmalloc(sizeof(float) * nk), b.db = (float *)dmalloc(sizeof(float) * N);
        b.y32 = (int32_t *)dmalloc(sizeof(int32_t) * mn);
        sb_weight_alloc(&b.qw, N, K);
        switchback_init(&b.sb, SB_STANDARD, M, C);
        switchback_init(&b.sb_me, SB_MEMORY_EFFICIENT, M, C);
        switchback_quantize_weight(&b.qw, b.w, SB_STANDARD, 0);
        for (int i = 0; i < 2; i++) quantize_rowwise(b.xq[i], b.xs[i], b.x[i], M, K, 0);

        // Cross-check: our kernels must give identical bf16 outputs (same int32 sums, same epilogue); step shapes:
        // the two tile widths of the wgmma kernel.
        const char *check = "wgmma not run (not sm_90)";
        if (wgmma) {
            Int8Gemm f = forward_gemm(&b, 0);
            int8_gemm_path(&f, INT8_PATH_WGMMA_N256, 0);
            f.out = b.y2;
            int8_gemm_path(&f, step ? INT8_PATH_WGMMA_N128 : INT8_PATH_MMA, 0);
            cudaCheck(cudaMemset(d_count, 0, sizeof(unsigned long long)));
            count_diff_kernel<<<ceil_div((long)mn, 256), 256>>>(d_count, (uint16_t *)b.y, (uint16_t *)b.y2, mn);
            cudaCheckLaunch();
            unsigned long long diff;
            cudaCheck(cudaMemcpy(&diff, d_count, sizeof(diff), cudaMemcpyDeviceToHost));
            check = diff == 0 ? (step ? "128x256 == 128x128 tiles: identical" : "wgmma == mma.sync: identical")
                              : "MISMATCH between our kernels";
            if (diff) printf("  %llu of %zu outputs differ\n", diff, mn);
        }

        double flop = 2.0 * M * N * K;
        printf("\n%s: M %d, K %d -> N %d (%.1f GFLOP per GEMM); %s\n", b.s.name, M, K, N, flop * 1e-9, check);
        int use[NOPS];
        for (int op = 0; op < NOPS; op++)
            use[op] = step ? wgmma && (op == OP_BF16_GEMM || op == OP_INT8_WGMMA || op == OP_INT8_N256 || op == OP_INT8_N128)
                           : (op != OP_INT8_WGMMA || wgmma) && (op < OP_GELU_FWD_Q || (op <= OP_GELU_BWD_FUSED_ACT && strstr(b.s.name, "fc1")));
        fill_normal(b.y, mn, 23, 1.0f);  // c_fc's output for the GELU ops
        if (profile) {
            for (int rep = 0; rep < 2; rep++) {  // the first round warms up
                if (rep) cudaCheck(cudaProfilerStart());
                for (int op = OP_BF16_GEMM; op <= OP_INT8_WGMMA; op++)
                    if (use[op]) run_op(&b, (Op)op, 0);
                cudaCheck(cudaDeviceSynchronize());
                if (rep) cudaCheck(cudaProfilerStop());
            }
            for (int op = 0; op < NOPS; op++) use[op] = 0;
        }
        time_ops(&b, use, reps, t[si]);
        for (int op = 0; op < NOPS; op++) {
            if (!use[op]) continue;
            double tf = flop / (t[si][op] * 1e-3) * 1e-12;
            if (op <= OP_INT8_MMA || op >= OP_INT8_N256) printf("  %-38s %8.3f ms %7.1f TFLOP/s\n", op_names[op], t[si][op], tf);
            else if (op == OP_QUANT_ROWS)
                printf("  %-38s %8.3f ms %7.0f GB/s\n", op_names[op], t[si][op], (3.0 * mk + 4.0 * M) / (t[si][op] * 1e-3) * 1e-9);
            else if (op == OP_QUANT_WEIGHT)
                printf("  %-38s %8.3f ms %7.0f GB/s\n", op_names[op], t[si][op], (4.0 * nk) / (t[si][op] * 1e-3) * 1e-9);
            else if (op >= OP_GELU_FWD_Q) {  // the fewest bytes per element of the (fused) op: bf16 in, out, int8 out
                static const double bytes[] = {5, 5, 3, 7, 7, 4, 6, 8, 9};  // OP_GELU_FWD_Q ... OP_GELU_BWD_FUSED_ACT
                printf("  %-38s %8.3f ms %7.0f GB/s\n", op_names[op], t[si][op], bytes[op - OP_GELU_FWD_Q] * mn / (t[si][op] * 1e-3) * 1e-9);
            }
            else printf("  %-38s %8.3f ms (3 GEMMs: %.0f TFLOP/s effective)\n", op_names[op], t[si][op], 3 * flop / (t[si][op] * 1e-3) * 1e-12);
        }

        for (int i = 0; i < 2; i++) {
            cudaCheck(cudaFree(b.x[i]));
            cudaCheck(cudaFree(b.g[i]));
            cudaCheck(cudaFree(b.xq[i]));
            cudaCheck(cudaFree(b.xs[i]));
        }
        void *bufs[] = {b.w, b.bias, b.y, b.y2, b.y3, b.dx, b.dw, b.db, b.y32};
        for (int i = 0; i < 9; i++) cudaCheck(cudaFree(bufs[i]));
        sb_weight_free(&b.qw);
        switchback_free(&b.sb);
        switchback_free(&b.sb_me);
    }

    if (step && wgmma && !profile) {
        // Per shape, then per tower: the sum over the step's layers (ms per step of these GEMMs).
        printf("\nstep GEMMs: ms (median); ours = the width int8_gemm picks; per step = ms x layers\n");
        printf("%-16s %6s %11s %8s %8s %8s %8s %4s %7s\n", "shape", "M", "K -> N", "bf16", "ours", "128x256", "128x128",
               "pick", "bf/ours");
        double sum[4] = {0};
        for (int si = 0; si < nshapes; si++) {
            const Shape *s = &list[si];
            float *r = t[si];
            Int8Gemm f = {};
            f.M = s->M, f.N = s->N, f.K = s->K;
            printf("%-16s %6d %5d->%-5d %8.3f %8.3f %8.3f %8.3f %4d %7.2f\n", s->name, s->M, s->K, s->N, r[OP_BF16_GEMM],
                   r[OP_INT8_WGMMA], r[OP_INT8_N256], r[OP_INT8_N128], int8_gemm_tile_width(&f), r[OP_BF16_GEMM] / r[OP_INT8_WGMMA]);
            float v[4] = {r[OP_BF16_GEMM], r[OP_INT8_WGMMA], r[OP_INT8_N256], r[OP_INT8_N128]};
            for (int k = 0; k < 4; k++) sum[k] += v[k] * s->layers;
            if (si % 8 == 7) {
                printf("%-16.8s per step (x%d)  %8.2f %8.2f %8.2f %8.2f      %7.2f\n", s->name, s->layers, sum[0], sum[1], sum[2],
                       sum[3], sum[0] / sum[1]);
                for (int k = 0; k < 4; k++) sum[k] = 0;
            }
        }
    } else if (!step && !profile) {
        printf("\nTFLOP/s (2MNK / median time); fwd+bwd in ms, speed-up = bf16 / SwitchBack\n");
        printf("%-13s %9s %9s %9s %7s %9s %9s %9s %9s %7s %7s\n", "shape", "bf16", "int8 cuBL", "ours", "ours/bf", "ours mma",
               "quant GB/s", "bf16 f+b", "SB f+b", "SB x", "SBme x");
        for (int si = 0; si < NSHAPES; si++) {
            if (!done[si] || profile) continue;
            const Shape *s = &shapes[si];
            double flop = 2.0 * s->M * s->N * s->K;
            float *r = t[si];
            printf("%-13s %9.0f %9.0f %9.0f %7.2f %9.0f %9.0f %9.3f %9.3f %7.2f %7.2f\n", s->name, flop / r[OP_BF16_GEMM] * 1e-9,
                   flop / r[OP_INT8_LT] * 1e-9, flop / r[OP_INT8_WGMMA] * 1e-9, r[OP_BF16_GEMM] / r[OP_INT8_WGMMA],
                   flop / r[OP_INT8_MMA] * 1e-9, (3.0 * s->M * s->K + 4.0 * s->M) / r[OP_QUANT_ROWS] * 1e-6,
                   r[OP_LAYER_BF16], r[OP_LAYER_SB], r[OP_LAYER_BF16] / r[OP_LAYER_SB], r[OP_LAYER_BF16] / r[OP_LAYER_SB_MEMEFF]);
        }
    }
    cudaCheck(cudaFree(d_count));
    return 0;
}
