// bench_layernorm.cu: the LayerNorm kernels (kernels/layernorm.cu) at the training step's shapes, per call and per
// step, against a device-to-device copy's bandwidth. Cases and their DRAM bytes per element (bf16 rows):
// the forward with the residual add (reads x and the branch, writes the residual and the output: 8), the same
// writing int8 rows for SwitchBack instead of the bf16 output (7), the backward (reads dout, inp and dinp, writes
// dinp: 8), with the branch bias sum (8) and with int8 rows too (9); statistics, parameters and partial sums are not
// counted. Per step: the calls a ViT-H/14 (batch 64) or ViT-B/16 (batch 256) step makes at each shape (two per
// residual block). Calls back to back between CUDA events (batches of reps, the median of 7 batches' means);
// inputs rotate over enough sets (each a fresh normal fill) that L2 holds none of them. Before timing it prints
// checksums of each case's outputs from fixed inputs, so two builds of the kernels can be compared bit for bit.
//   ./build/tests/bench_layernorm [reps]      (default 30)
#include "../kernels/layernorm.cuh"
#include "bench_gpu.h"

struct Shape {
    const char *model, *name;
    int N, C, calls;  // rows, width, calls of each case per step
};
static const Shape SHAPES[] = {{"ViT-H/14", "vision 64 x 257", 16448, 1280, 64},
                               {"ViT-H/14", "text 64 x 77", 4928, 1024, 48},
                               {"ViT-B/16", "vision 256 x 197", 50432, 768, 24},
                               {"ViT-B/16", "text 256 x 77", 19712, 512, 24}};
#define NSHAPES 4

enum { FWD, FWD_Q, BWD, BWD_BR, BWD_BR_Q, CASES };
static const char *CASE_NAMES[CASES] = {"forward (residual + LN)", "forward, int8 rows", "backward", "backward + branch bias",
                                        "backward + branch bias, int8 rows"};
static const double BYTES[CASES] = {8, 7, 8, 8, 9};

struct Set {
    bf16 *x, *f, *res, *out, *dout, *dinp;
    int8_t *q;
    float *mean, *rstd, *qs;
};

struct Params {
    float *w, *b, *dw, *db, *dbr;
};

static void run_case(int k, const Set *s, const Params *p, int N, int C) {
    BranchGrads<bf16> br = {p->dbr, NULL, NULL, NULL};
    switch (k) {
        case FWD: residual_layernorm_forward_gpu<bf16>(s->res, s->out, s->mean, s->rstd, s->x, s->f, NULL, p->w, p->b, N, C); break;
        case FWD_Q:
            residual_layernorm_forward_gpu<bf16>(s->res, NULL, s->mean, s->rstd, s->x, s->f, NULL, p->w, p->b, N, C, s->q, s->qs);
            break;
        case BWD: layernorm_backward_gpu<bf16>(s->dinp, p->dw, p->db, s->dout, s->res, p->w, s->mean, s->rstd, N, C); break;
        case BWD_BR: layernorm_backward_gpu<bf16>(s->dinp, p->dw, p->db, s->dout, s->res, p->w, s->mean, s->rstd, N, C, NULL, NULL, &br); break;
        default: layernorm_backward_gpu<bf16>(s->dinp, p->dw, p->db, s->dout, s->res, p->w, s->mean, s->rstd, N, C, s->q, s->qs, &br);
    }
}

template <typename T> static T *alloc(size_t n) {
    T *p;
    cudaCheck(cudaMalloc(&p, n * sizeof(T)));
    return p;
}

static void fill_set(Set *s, size_t n, uint64_t seed) {
    fill_normal(s->x, n, seed, 1.0f), fill_normal(s->f, n, seed + 1, 1.0f), fill_normal(s->dout, n, seed + 2, 1.0f);
    fill_normal(s->dinp, n, seed + 3, 1.0f);
}

int main(int argc, char **argv) {
    int reps = bench_reps(argc, argv, 1, 30, 1000);
    if (bench_no_gpu("bench_layernorm")) return 0;
    cudaDeviceProp prop = bench_device();
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0)), cudaCheck(cudaEventCreate(&e1));
    // the copy ceiling: 512 MiB device to device, bytes read + written
    size_t cb = (size_t)512 << 20;
    char *c0 = alloc<char>(cb), *c1 = alloc<char>(cb);
    cudaCheck(cudaMemset(c0, 1, cb));
    float ct[10];
    for (int r = -2; r < 10; r++) {
        cudaCheck(cudaEventRecord(e0));
        cudaCheck(cudaMemcpyAsync(c1, c0, cb, cudaMemcpyDeviceToDevice));
        cudaCheck(cudaEventRecord(e1));
        cudaCheck(cudaEventSynchronize(e1));
        if (r >= 0) cudaCheck(cudaEventElapsedTime(&ct[r], e0, e1));
    }
    double copy_gbs = 2.0 * cb / (median(ct, 10) * 1e-3) / 1e9;
    cudaCheck(cudaFree(c0)), cudaCheck(cudaFree(c1));
    printf("GPU: %s (%d SMs); copy %.0f GB/s (read + write); batches of %d calls, median of %d\n", prop.name,
           prop.multiProcessorCount, copy_gbs, reps, BENCH_TRIALS);

    float med[NSHAPES][CASES];
    for (int si = 0; si < NSHAPES; si++) {
        const Shape *sh = &SHAPES[si];
        int N = sh->N, C = sh->C;
        size_t n = (size_t)N * C;
        int nsets = (int)ceil_div((long)(512 << 20), (long)(n * 13));  // 13 bytes per element in a set
        if (nsets < 2) nsets = 2;
        Params p = {alloc<float>(C), alloc<float>(C), alloc<float>(C), alloc<float>(C), alloc<float>(C)};
        fill_normal(p.w, C, 1, 1.0f), fill_normal(p.b, C, 2, 0.5f);
        Set *sets = (Set *)mallocCheck(nsets * sizeof(Set));
        for (int i = 0; i < nsets; i++) {
            Set *s = &sets[i];
            s->x = alloc<bf16>(n), s->f = alloc<bf16>(n), s->res = alloc<bf16>(n), s->out = alloc<bf16>(n);
            s->dout = alloc<bf16>(n), s->dinp = alloc<bf16>(n), s->q = alloc<int8_t>(n);
            s->mean = alloc<float>(N), s->rstd = alloc<float>(N), s->qs = alloc<float>(N);
            fill_set(s, n, 100 * i + 7);
            run_case(FWD, s, &p, N, C);  // the residual and statistics the backward reads
        }
        // checksums from fixed inputs: the forward's outputs, then the backward's from zeroed sums
        const Set *s = &sets[0];
        unsigned long long h[9];
        run_case(FWD_Q, s, &p, N, C);
        h[0] = checksum(s->q, n), h[1] = checksum(s->qs, N * 4);
        run_case(FWD, s, &p, N, C);
        h[2] = checksum(s->res, n * 2), h[3] = checksum(s->out, n * 2), h[4] = checksum(s->mean, N * 4) ^ checksum(s->rstd, N * 4);
        cudaCheck(cudaMemset(p.dw, 0, C * 4)), cudaCheck(cudaMemset(p.db, 0, C * 4)), cudaCheck(cudaMemset(p.dbr, 0, C * 4));
        run_case(BWD_BR_Q, s, &p, N, C);
        h[5] = checksum(s->dinp, n * 2), h[6] = checksum(s->q, n) ^ checksum(s->qs, N * 4);
        h[7] = checksum(p.dw, C * 4) ^ checksum(p.db, C * 4), h[8] = checksum(p.dbr, C * 4);
        printf("%s %s (%d x %d): checksums fwd int8 %016llx %016llx, fwd res %016llx out %016llx stats %016llx; "
               "bwd dinp %016llx int8 %016llx dw,db %016llx branch %016llx\n",
               sh->model, sh->name, N, C, h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]);
        for (int k = 0; k < CASES; k++)  // rotating over the sets
            med[si][k] = bench_call_ms([&](int r) { run_case(k, &sets[r % nsets], &p, N, C); }, reps, e0, e1);
        for (int i = 0; i < nsets; i++) {
            void *d[] = {sets[i].x, sets[i].f, sets[i].res, sets[i].out, sets[i].dout, sets[i].dinp, sets[i].q, sets[i].mean, sets[i].rstd, sets[i].qs};
            for (int j = 0; j < 10; j++) cudaCheck(cudaFree(d[j]));
        }
        void *d[] = {p.w, p.b, p.dw, p.db, p.dbr};
        for (int j = 0; j < 5; j++) cudaCheck(cudaFree(d[j]));
        free(sets);
    }

    printf("\n| model | rows | case | us/call | GB/s | x copy time | calls | ms/step |\n|---|---|---|---|---|---|---|---|\n");
    for (int si = 0; si < NSHAPES; si++) {
        const Shape *sh = &SHAPES[si];
        double n = (double)sh->N * sh->C;
        for (int k = 0; k < CASES; k++) {
            double t = med[si][k] * 1e-3, gbs = BYTES[k] * n / t / 1e9;
            printf("| %s | %s | %s | %.1f | %.0f | %.2f | %d | %.2f |\n", sh->model, sh->name, CASE_NAMES[k], t * 1e6, gbs,
                   copy_gbs / gbs, sh->calls, sh->calls * med[si][k]);
        }
    }
    // per step: the two shapes of each model
    printf("\n| model | case | ms/step | at copy bandwidth |\n|---|---|---|---|\n");
    for (int si = 0; si < NSHAPES; si += 2)
        for (int k = 0; k < CASES; k++) {
            double ms = 0, floor = 0;
            for (int j = si; j < si + 2; j++) {
                ms += SHAPES[j].calls * med[j][k];
                floor += SHAPES[j].calls * BYTES[k] * SHAPES[j].N * SHAPES[j].C / (copy_gbs * 1e9) * 1e3;
            }
            printf("| %s | %s | %.2f | %.2f |\n", SHAPES[si].model, CASE_NAMES[k], ms, floor);
        }
    cudaCheck(cudaEventDestroy(e0)), cudaCheck(cudaEventDestroy(e1));
    return 0;
}
