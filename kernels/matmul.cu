// matmul.cu: cuBLASLt GEMMs (see matmul.cuh). Descriptors and the algorithm are cached per shape, so the
// steady state is one cublasLtMatmul call per GEMM. The algorithm is the heuristic's first choice, or with
// matmul_set_tuning the fastest of its first candidates, timed on the shape's first call.
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "matmul.cuh"

#define WORKSPACE_BYTES (32u << 20)  // cuBLASLt's recommendation for Hopper
#define MAX_PLANS 4096
#define PLAN_SLOTS (2 * MAX_PLANS)  // the plans' hash table: open addressing, a power of 2
#define MAX_CANDIDATES 16
#define TUNE_REPS 3

typedef struct {  // ints only: compared with memcmp and written to the choices file field by field
    int m, n, k, lda, ldb, ldd, trans_a, trans_b, ab_type, d_type, has_bias, align, sm_target;
} PlanKey;
#define KEY_FIELDS ((int)(sizeof(PlanKey) / sizeof(int)))

typedef struct {
    PlanKey key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
    int choice;          // algo's index in the heuristic's list
    int num_candidates;  // heuristic results not yet timed (0 once tuned, or without tuning)
    cublasLtMatmulAlgo_t candidates[MAX_CANDIDATES];
} Plan;

typedef struct {
    PlanKey key;
    int choice;
} Choice;

static cublasLtHandle_t handle;
// One workspace per stream that runs GEMMs: GEMMs on two streams (the backward's weight gradients beside the rest) may
// run at once. Slots are assigned to streams as they first run a GEMM; a stream past the last slot (the earlier ones
// destroyed, say, by a test making models one after another) waits for the GPU and takes the slots over from the start.
#define WORKSPACE_SLOTS 4
static cudaStream_t ws_stream[WORKSPACE_SLOTS];
static void *ws_ptr[WORKSPACE_SLOTS];
static int ws_used;
static Plan plans[MAX_PLANS];
static int num_plans;
static int plan_slot[PLAN_SLOTS];  // 1 + the index in plans of the key hashed there (or probed past it), 0 = empty
static int tune_candidates = 1;
static int tuned, tuned_changed, tuned_rejected;  // since the last matmul_tuning_report: shapes timed, how many took another
                                                  // algorithm, candidates rejected as computing otherwise
static double tuned_first_ms, tuned_best_ms;
static int sm_target;  // SMs the GEMMs are planned for; 0 = all (matmul_set_sm_target)
static Choice loaded[MAX_PLANS];  // matmul_tuning_load's choices for shapes not planned yet
static int num_loaded;

void matmul_set_sm_target(int sms) { sm_target = sms > 0 ? sms : 0; }

void matmul_set_tuning(int candidates) {
    tune_candidates = candidates < 1 ? 1 : candidates > MAX_CANDIDATES ? MAX_CANDIDATES : candidates;
}

void matmul_tuning_report(void) {
    if (!tuned) return;
    printf("gemm_tuning: timed %d GEMM shapes, %d run faster on another of cuBLASLt's candidates than its first choice "
           "(one call of each: %.2f -> %.2f ms); %d candidates rejected as computing otherwise\n", tuned, tuned_changed,
           tuned_first_ms, tuned_best_ms, tuned_rejected);
    tuned = tuned_changed = tuned_rejected = 0, tuned_first_ms = tuned_best_ms = 0;
}

static size_t type_size(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_32I ? 4 : t == CUDA_R_8I ? 1 : 2; }

// Largest power of two (<= 256) dividing the address and the leading-dimension stride in bytes.
static int alignment_of(const void *p, int ld, size_t elem) {
    int a = 256;
    while (a > 1 && (((uintptr_t)p % a) || ((size_t)ld * elem) % a)) a /= 2;
    return a;
}

static void *workspace_for(cudaStream_t stream) {
    for (int i = 0; i < ws_used; i++)
        if (ws_stream[i] == stream) return ws_ptr[i];
    if (ws_used == WORKSPACE_SLOTS) {
        cudaCheck(cudaDeviceSynchronize());  // no GEMM still uses a slot
        ws_used = 0;
    }
    if (!ws_ptr[ws_used]) cudaCheck(cudaMalloc(&ws_ptr[ws_used], WORKSPACE_BYTES));
    ws_stream[ws_used] = stream;
    return ws_ptr[ws_used++];
}

// FNV-1a over the key's ints.
static uint32_t key_hash(const PlanKey *key) {
    const int *field = (const int *)key;
    uint32_t h = 2166136261u;
    for (int i = 0; i < KEY_FIELDS; i++) h = (h ^ (uint32_t)field[i]) * 16777619u;
    return h;
}

// The plan of a shape, made on its first call. A step calls a few hundred GEMMs, and the text tower's shapes vary
// with its micro-batch's caption lengths (its packed rows, a multiple of TEXT_PACK_ALIGN up to batch x context): looked
// up by hash.
static Plan *get_plan(const PlanKey *key) {
    uint32_t slot = key_hash(key) & (PLAN_SLOTS - 1);
    for (; plan_slot[slot]; slot = (slot + 1) & (PLAN_SLOTS - 1))
        if (!memcmp(&plans[plan_slot[slot] - 1].key, key, sizeof(PlanKey))) return &plans[plan_slot[slot] - 1];
    if (!handle) cublasCheck(cublasLtCreate(&handle));
    if (num_plans == MAX_PLANS) {
        fatal("matmul: more than %d GEMM shapes", MAX_PLANS);
    }
    Plan *p = &plans[num_plans];
    memset(p, 0, sizeof(*p));
    p->key = *key;
    cudaDataType_t abt = (cudaDataType_t)key->ab_type, dt = (cudaDataType_t)key->d_type;
    int int8 = abt == CUDA_R_8I;  // int8 operands accumulate and scale in int32
    cublasCheck(cublasLtMatmulDescCreate(&p->desc, int8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F, int8 ? CUDA_R_32I : CUDA_R_32F));
    cublasOperation_t ta = key->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = key->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    cublasLtEpilogue_t epi = key->has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    if (key->has_bias)
        cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &dt, sizeof(dt)));
    if (key->sm_target) {
        int32_t sms = key->sm_target;
        cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &sms, sizeof(sms)));
    }
    cublasCheck(cublasLtMatrixLayoutCreate(&p->la, abt, key->trans_a ? key->k : key->m, key->trans_a ? key->m : key->k, key->lda));
    cublasCheck(cublasLtMatrixLayoutCreate(&p->lb, abt, key->trans_b ? key->n : key->k, key->trans_b ? key->k : key->n, key->ldb));
    cublasCheck(cublasLtMatrixLayoutCreate(&p->ld, dt, key->m, key->n, key->ldd));
    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = WORKSPACE_BYTES;
    uint32_t align = (uint32_t)key->align;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align, sizeof(align)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align, sizeof(align)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align, sizeof(align)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align, sizeof(align)));
    cublasLtMatmulHeuristicResult_t results[MAX_CANDIDATES];
    int found = 0;
    cublasCheck(cublasLtMatmulAlgoGetHeuristic(handle, p->desc, p->la, p->lb, p->ld, p->ld, pref, tune_candidates, results, &found));
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    if (!found) {
        fatal("matmul: cuBLASLt has no algorithm for m=%d n=%d k=%d (trans %d%d, types %d->%d, bias %d, align %d)",
              key->m, key->n, key->k, key->trans_a, key->trans_b, key->ab_type, key->d_type, key->has_bias, key->align);
    }
    p->algo = results[0].algo;
    int cached = -1;
    for (int i = 0; i < num_loaded; i++)
        if (!memcmp(&loaded[i].key, key, sizeof(PlanKey))) cached = loaded[i].choice;
    if (cached >= 0 && cached < found) p->algo = results[cached].algo, p->choice = cached;
    else if (found > 1) {
        p->num_candidates = found;
        for (int i = 0; i < found; i++) p->candidates[i] = results[i].algo;
    }
    plan_slot[slot] = ++num_plans;
    return p;
}

// stats[0] = max |x - ref|, stats[1] = max |ref| over n elements (non-negative floats compare as their bits)
template <typename T> __global__ void max_diff_kernel(unsigned *stats, const T *x, const T *ref, size_t n) {
    float d = 0.0f, r = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float xi = (float)x[i], ri = (float)ref[i];
        d = fmaxf(d, fabsf(xi - ri)), r = fmaxf(r, fabsf(ri));
    }
    if (d != d) d = INFINITY;  // NaN: as far off as can be
    atomicMax(&stats[0], __float_as_uint(d)), atomicMax(&stats[1], __float_as_uint(r));
}

// max |x - ref| / max |ref| of two outputs of type t
static double output_diff(unsigned *stats, const void *x, const void *ref, size_t bytes, cudaDataType_t t, cudaStream_t stream) {
    size_t n = bytes / type_size(t);
    cudaCheck(cudaMemsetAsync(stats, 0, 2 * sizeof(unsigned), stream));
    if (t == CUDA_R_32F) max_diff_kernel<<<512, 256, 0, stream>>>(stats, (const float *)x, (const float *)ref, n);
    else if (t == CUDA_R_16BF) max_diff_kernel<<<512, 256, 0, stream>>>(stats, (const bf16 *)x, (const bf16 *)ref, n);
    else max_diff_kernel<<<512, 256, 0, stream>>>(stats, (const int32_t *)x, (const int32_t *)ref, n);
    cudaCheckLaunch();
    unsigned h[2];
    cudaCheck(cudaMemcpyAsync(h, stats, sizeof(h), cudaMemcpyDeviceToHost, stream));
    cudaCheck(cudaStreamSynchronize(stream));
    float d, r;
    memcpy(&d, &h[0], 4), memcpy(&r, &h[1], 4);
    return r > 0 ? d / r : d;
}

// Runs each candidate once from a copy of C (the GEMM may accumulate into it; C is D itself there) and compares its
// output with the first choice's: one further off than rounding is not taken, with a warning. Then times the others (one
// warm-up call, then TUNE_REPS) on that scratch and keeps the fastest. Where the scratch cannot be had (memory
// planned to the byte), the first choice stays.
static void tune_plan(Plan *p, const void *alpha, const void *a, const void *b, const void *beta, const void *c, size_t d_bytes,
                      cudaStream_t stream) {
    int n = p->num_candidates;
    p->num_candidates = 0;
    char *scratch;
    size_t padded = (d_bytes + 255) / 256 * 256;
    if (cudaMalloc(&scratch, 2 * padded + 256) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    char *out = scratch, *ref = scratch + padded;
    unsigned *stats = (unsigned *)(scratch + 2 * padded);
    cudaDataType_t dt = (cudaDataType_t)p->key.d_type;
    double tol = dt == CUDA_R_16BF ? 1e-2 : 1e-3;  // bf16 outputs may round 1 ulp (2^-8) apart
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0)), cudaCheck(cudaEventCreate(&e1));
    float ms[MAX_CANDIDATES];
    int best = 0;
    for (int i = 0; i < n; i++) {
        cudaCheck(cudaMemcpyAsync(i ? out : ref, c, d_bytes, cudaMemcpyDeviceToDevice, stream));
        cublasCheck(cublasLtMatmul(handle, p->desc, alpha, a, p->la, b, p->lb, beta, i ? out : ref, p->ld, i ? out : ref, p->ld,
                                   &p->candidates[i], workspace_for(stream), WORKSPACE_BYTES, stream));
        double diff = i ? output_diff(stats, out, ref, d_bytes, dt, stream) : 0.0;
        ms[i] = INFINITY;
        if (diff > tol) {
            const PlanKey *k = &p->key;
            fprintf(stderr, "warning: gemm_tuning: cuBLASLt candidate %d of GEMM m %d n %d k %d (trans %d%d, types %d->%d, bias %d) "
                    "differs from its first choice by %.2e of the output's largest value: not used\n", i, k->m, k->n, k->k,
                    k->trans_a, k->trans_b, k->ab_type, k->d_type, k->has_bias, diff);
            tuned_rejected++;
            continue;
        }
        for (int r = 0; r <= TUNE_REPS; r++) {
            if (r == 1) cudaCheck(cudaEventRecord(e0, stream));
            cublasCheck(cublasLtMatmul(handle, p->desc, alpha, a, p->la, b, p->lb, beta, out, p->ld, out, p->ld,
                                       &p->candidates[i], workspace_for(stream), WORKSPACE_BYTES, stream));
        }
        cudaCheck(cudaEventRecord(e1, stream));
        cudaCheck(cudaEventSynchronize(e1));
        cudaCheck(cudaEventElapsedTime(&ms[i], e0, e1));
        ms[i] /= TUNE_REPS;
        if (ms[i] < ms[best]) best = i;
    }
    p->algo = p->candidates[best], p->choice = best;
    tuned++, tuned_changed += best != 0, tuned_first_ms += ms[0], tuned_best_ms += ms[best];
    cudaCheck(cudaEventDestroy(e0)), cudaCheck(cudaEventDestroy(e1));
    cudaCheck(cudaFree(scratch));
}

// The file: a line naming the GPU and cuBLASLt (choices made elsewhere are ignored), then one line per shape:
// the PlanKey's KEY_FIELDS fields in order and the index of the algorithm in the heuristic's list.
static void tuning_header(char *buf, size_t n) {
    cudaDeviceProp prop;
    int dev;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    snprintf(buf, n, "# train_clip GEMM choices: %s, cuBLASLt %zu\n", prop.name, cublasLtGetVersion());
}

int matmul_tuning_load(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char want[256], line[256];
    tuning_header(want, sizeof(want));
    if (!fgets(line, sizeof(line), f) || strcmp(line, want)) {
        fclose(f);
        return -1;
    }
    int lineno = 1;
    num_loaded = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        Choice c;
        int *field = (int *)&c.key, ok = 1, used = 0;
        const char *p = line;
        for (int i = 0; i <= KEY_FIELDS && ok; i++, p += used)
            ok = sscanf(p, "%d%n", i < KEY_FIELDS ? &field[i] : &c.choice, &used) == 1;
        if (!ok || c.choice < 0 || c.choice >= MAX_CANDIDATES)
            fatal("%s:%d: expected %d numbers of a GEMM shape and an algorithm index below %d", path, lineno, KEY_FIELDS,
                  MAX_CANDIDATES);
        if (num_loaded == MAX_PLANS) fatal("%s: more than %d GEMM shapes", path, MAX_PLANS);
        loaded[num_loaded++] = c;
    }
    fclose(f);
    return num_loaded;
}

int matmul_tuning_save(const char *path, char *err, size_t errlen) {
    char tmp[1100], header[256];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    tuning_header(header, sizeof(header));
    FILE *f = fopen(tmp, "w");
    if (!f) return snprintf(err, errlen, "%s: %s", tmp, strerror(errno)), -1;
    int bad = fputs(header, f) < 0;
    for (int i = 0; i < num_plans && !bad; i++) {
        const int *field = (const int *)&plans[i].key;
        for (int j = 0; j < KEY_FIELDS && !bad; j++) bad = fprintf(f, "%d ", field[j]) < 0;
        bad = bad || fprintf(f, "%d\n", plans[i].choice) < 0;
    }
    bad = fclose(f) != 0 || bad;
    if (bad || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", bad ? tmp : path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

// D = alpha op(A) op(B) + beta C (+ bias), C either D itself (c NULL) or the matrix c of D's type and layout.
static void gemm(void *d, const void *c, cudaDataType_t d_type, int ldd, const void *a, int lda, int trans_a, const void *b, int ldb,
                 int trans_b, cudaDataType_t ab_type, const void *bias, int m, int n, int k, float alpha, float beta,
                 cudaStream_t stream) {
    if (m == 0 || n == 0) return;
    size_t ab = type_size(ab_type), ds = type_size(d_type);
    int align = alignment_of(a, lda, ab);
    align = min(align, alignment_of(b, ldb, ab));
    align = min(align, alignment_of(d, ldd, ds));
    if (c) align = min(align, alignment_of(c, ldd, ds));
    else c = d;
    if (bias) align = min(align, alignment_of(bias, 0, ds));
    PlanKey key = {m, n, k, lda, ldb, ldd, trans_a, trans_b, (int)ab_type, (int)d_type, bias != NULL, align, sm_target};
    Plan *p = get_plan(&key);
    if (bias) cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    int32_t alpha_i = (int32_t)alpha, beta_i = (int32_t)beta;
    const void *pa = ab_type == CUDA_R_8I ? (const void *)&alpha_i : &alpha, *pb = ab_type == CUDA_R_8I ? (const void *)&beta_i : &beta;
    if (p->num_candidates) tune_plan(p, pa, a, b, pb, c, (size_t)ldd * (n - 1) * ds + (size_t)m * ds, stream);
    cublasCheck(cublasLtMatmul(handle, p->desc, pa, a, p->la, b, p->lb, pb, c, p->ld, d, p->ld, &p->algo, workspace_for(stream),
                               WORKSPACE_BYTES, stream));
}

void matmul_cm(void *d, cudaDataType_t d_type, int ldd, const void *a, int lda, int trans_a, const void *b, int ldb,
               int trans_b, cudaDataType_t ab_type, const void *bias, int m, int n, int k, float alpha, float beta,
               cudaStream_t stream) {
    gemm(d, NULL, d_type, ldd, a, lda, trans_a, b, ldb, trans_b, ab_type, bias, m, n, k, alpha, beta, stream);
}

template <typename T> static cudaDataType_t type_of(void);
template <> cudaDataType_t type_of<float>(void) { return CUDA_R_32F; }
template <> cudaDataType_t type_of<bf16>(void) { return CUDA_R_16BF; }

// Row-major (N, OC) = column-major (OC, N): out^T = w (C, OC)^T-view @ inp^T
template <typename T>
void matmul_forward_gpu(T *out, const T *inp, const T *w, const T *bias, int N, int C, int OC, const T *residual) {
    gemm(out, residual, type_of<T>(), OC, w, C, 1, inp, C, 0, type_of<T>(), bias, OC, N, C, 1.0f, residual ? 1.0f : 0.0f, 0);
}

template <typename T> void matmul_backward_input_gpu(T *dinp, const T *dout, const T *w, int N, int C, int OC) {
    matmul_cm(dinp, type_of<T>(), C, w, C, 0, dout, OC, 0, type_of<T>(), NULL, C, N, OC, 1.0f, 0.0f, 0);
}

template <typename T>
void matmul_backward_weight_gpu(float *dw, const T *dout, const T *inp, int N, int C, int OC, int accumulate, cudaStream_t stream) {
    matmul_cm(dw, CUDA_R_32F, C, inp, C, 0, dout, OC, 1, type_of<T>(), NULL, C, OC, N, 1.0f, accumulate ? 1.0f : 0.0f, stream);
}

#define INSTANTIATE(T)                                                                        \
    template void matmul_forward_gpu<T>(T *, const T *, const T *, const T *, int, int, int, const T *); \
    template void matmul_backward_input_gpu<T>(T *, const T *, const T *, int, int, int);         \
    template void matmul_backward_weight_gpu<T>(float *, const T *, const T *, int, int, int, int, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(bf16)
