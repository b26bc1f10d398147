// matmul.cu: cuBLASLt GEMMs (see matmul.cuh). Descriptors and the heuristic's algorithm are cached per
// shape, so the steady state is one cublasLtMatmul call per GEMM.
#include <string.h>

#include "matmul.cuh"

#define WORKSPACE_BYTES (32u << 20)  // cuBLASLt's recommendation for Hopper
#define MAX_PLANS 512

typedef struct {
    int m, n, k, lda, ldb, ldd, trans_a, trans_b, ab_type, d_type, has_bias, align;
} PlanKey;

typedef struct {
    PlanKey key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
} Plan;

static cublasLtHandle_t handle;
static void *workspace;
static Plan plans[MAX_PLANS];
static int num_plans;

static size_t type_size(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_32I ? 4 : t == CUDA_R_8I ? 1 : 2; }

// Largest power of two (<= 256) dividing the address and the leading-dimension stride in bytes.
static int alignment_of(const void *p, int ld, size_t elem) {
    int a = 256;
    while (a > 1 && (((uintptr_t)p % a) || ((size_t)ld * elem) % a)) a /= 2;
    return a;
}

static Plan *get_plan(const PlanKey *key) {
    for (int i = 0; i < num_plans; i++)
        if (!memcmp(&plans[i].key, key, sizeof(PlanKey))) return &plans[i];
    if (!handle) {
        cublasCheck(cublasLtCreate(&handle));
        cudaCheck(cudaMalloc(&workspace, WORKSPACE_BYTES));
    }
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
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    cublasCheck(cublasLtMatmulAlgoGetHeuristic(handle, p->desc, p->la, p->lb, p->ld, p->ld, pref, 1, &result, &found));
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    if (!found) {
        fatal("matmul: cuBLASLt has no algorithm for m=%d n=%d k=%d (trans %d%d, types %d->%d, bias %d, align %d)",
              key->m, key->n, key->k, key->trans_a, key->trans_b, key->ab_type, key->d_type, key->has_bias, key->align);
    }
    p->algo = result.algo;
    num_plans++;
    return p;
}

void matmul_cm(void *d, cudaDataType_t d_type, int ldd, const void *a, int lda, int trans_a, const void *b, int ldb,
               int trans_b, cudaDataType_t ab_type, const void *bias, int m, int n, int k, float alpha, float beta,
               cudaStream_t stream) {
    if (m == 0 || n == 0) return;
    size_t ab = type_size(ab_type), ds = type_size(d_type);
    int align = alignment_of(a, lda, ab);
    align = min(align, alignment_of(b, ldb, ab));
    align = min(align, alignment_of(d, ldd, ds));
    if (bias) align = min(align, alignment_of(bias, 0, ds));
    PlanKey key = {m, n, k, lda, ldb, ldd, trans_a, trans_b, (int)ab_type, (int)d_type, bias != NULL, align};
    Plan *p = get_plan(&key);
    if (bias) cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    int32_t alpha_i = (int32_t)alpha, beta_i = (int32_t)beta;
    const void *pa = ab_type == CUDA_R_8I ? (const void *)&alpha_i : &alpha, *pb = ab_type == CUDA_R_8I ? (const void *)&beta_i : &beta;
    cublasCheck(cublasLtMatmul(handle, p->desc, pa, a, p->la, b, p->lb, pb, d, p->ld, d, p->ld, &p->algo, workspace,
                               WORKSPACE_BYTES, stream));
}

template <typename T> static cudaDataType_t type_of(void);
template <> cudaDataType_t type_of<float>(void) { return CUDA_R_32F; }
template <> cudaDataType_t type_of<bf16>(void) { return CUDA_R_16BF; }

// Row-major (N, OC) = column-major (OC, N): out^T = w (C, OC)^T-view @ inp^T
template <typename T> void matmul_forward_gpu(T *out, const T *inp, const T *w, const T *bias, int N, int C, int OC) {
    matmul_cm(out, type_of<T>(), OC, w, C, 1, inp, C, 0, type_of<T>(), bias, OC, N, C, 1.0f, 0.0f, 0);
}

template <typename T> void matmul_backward_input_gpu(T *dinp, const T *dout, const T *w, int N, int C, int OC) {
    matmul_cm(dinp, type_of<T>(), C, w, C, 0, dout, OC, 0, type_of<T>(), NULL, C, N, OC, 1.0f, 0.0f, 0);
}

template <typename T> void matmul_backward_weight_gpu(float *dw, const T *dout, const T *inp, int N, int C, int OC) {
    matmul_cm(dw, CUDA_R_32F, C, inp, C, 0, dout, OC, 1, type_of<T>(), NULL, C, OC, N, 1.0f, 1.0f, 0);
}

#define INSTANTIATE(T)                                                                        \
    template void matmul_forward_gpu<T>(T *, const T *, const T *, const T *, int, int, int);      \
    template void matmul_backward_input_gpu<T>(T *, const T *, const T *, int, int, int);         \
    template void matmul_backward_weight_gpu<T>(float *, const T *, const T *, int, int, int);
INSTANTIATE(float)
INSTANTIATE(bf16)
