// bf16_gemm.cu: the bf16 GEMM with the GELU fused into its epilogue (API and formulas in bf16_gemm.cuh); sm_90a only.
// wgmma_gemm.cuh's kernel on bf16 operands: 128 x 256 tiles, 4 stages of 128 x 64 A + 256 x 64 B,
// wgmma.m64n256k16.f32.bf16.bf16. The loader warp stages each tile's bias in shared memory; the epilogue adds it,
// looks the GELU up in gelu.cu's table (8 KB, read through L1: 4 stages measured faster than 3 with the table in
// shared memory) and stores bf16 through the warps' staging buffers.
// The GELU backward fused the same way into c_proj's input gradient (commit 84fe34c: N-major B, dgelu, the
// recompute, bias-gradient partials) measured 0.87-0.95x cuBLAS + the separate kernel, with both warpgroups in the
// epilogue at once, and was removed (docs/benchmarks.md).
#include "bf16_gemm.cuh"
#include "gelu.cuh"
#include "wgmma_gemm.cuh"

typedef __nv_bfloat16 bf16;

template <int EPI> struct Bf16Op {
    typedef bf16 Elem;
    typedef float Acc;
    static constexpr int BN = 256, STAGES = 4, P_BYTES = BN * 4;  // p: the bias of the tile's columns as fp32
    CUtensorMap tma_y, tma_y2;  // out, out2 in boxes of 16 x 64
    const bf16 *bias;
    const uint16_t *gelu_val;
    int M, N, K;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // d (64 x 256 fp32) (+)= A (64 x 16) . B (256 x 16)^T.
    __device__ void mma(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int accumulate) const {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" WG_ACC128 "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
                     : WG_D64("+f", 0), WG_D64("+f", 64)
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
    __device__ void load_params(uint8_t *p, int m0, int n0, int lane) const {
        float *p_col = (float *)p;  // zeros past N
#pragma unroll
        for (int i = 0; i < BN / 32; i++) {
            int col = n0 + lane + 32 * i;
            p_col[lane + 32 * i] = bias && col < N ? __bfloat162float(__ldg(bias + col)) : 0.0f;
        }
    }
    __device__ void epilogue(const float (&acc)[128], const uint8_t *p, uint8_t *bufs, int &round, int m0, int n0, int c,
                             int warp, int lane) const {
        const float *p_col = (const float *)p;
        int row0 = m0 + c * 64 + warp * 16, rows_in = row0 < M;
#pragma unroll
        for (int b = 0; b < BN / 64; b++) {
            int col_b = n0 + 64 * b, store = rows_in && col_b < N;
            uint32_t r[4][4], r2[4][4];  // the stmatrix registers of y and gelu(y)
#pragma unroll
            for (int jj = 0; jj < 8; jj++) {
                int j = 8 * b + jj, cl = 8 * j + 2 * (lane % 4);
                float2 bs = *(const float2 *)&p_col[cl];
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    uint32_t y = pack_bf16(acc[4 * j + 2 * h] + bs.x, acc[4 * j + 2 * h + 1] + bs.y);
                    r[jj / 2][2 * (jj % 2) + h] = y;
                    if (EPI == BF16_EPI_GELU)
                        r2[jj / 2][2 * (jj % 2) + h] = pack_bf16(gelu_bf16(gelu_val, y & 0xFFFF), gelu_bf16(gelu_val, y >> 16));
                }
            }
            store_box(r, bufs, round, &tma_y, col_b, row0, store, lane);
            if (EPI == BF16_EPI_GELU) store_box(r2, bufs, round, &tma_y2, col_b, row0, store, lane);
        }
    }
#endif
};

// ------------------------------------------------------------------------------------------------ host
template <int EPI> static void launch(const Bf16Gemm *g, cudaStream_t stream) {
    typedef Bf16Op<EPI> Op;
    Op op;
    op.tma_y = make_tensor_map(g->out, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->M, g->N, WGMMA_Y_BOX_ROWS, WGMMA_Y_BOX_COLS);
    op.tma_y2 = EPI == BF16_EPI_GELU
                    ? make_tensor_map(g->out2, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->M, g->N, WGMMA_Y_BOX_ROWS, WGMMA_Y_BOX_COLS)
                    : op.tma_y;
    op.bias = g->bias, op.gelu_val = EPI == BF16_EPI_GELU ? gelu_value_table(g->quick) : NULL;
    op.M = g->M, op.N = g->N, op.K = g->K;
    CUtensorMap ta = make_tensor_map(g->a, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->M, g->K, WGMMA_BM, WGMMA_K_BYTES / 2);
    CUtensorMap tb = make_tensor_map(g->b, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->N, g->K, Op::BN / WGMMA_CLUSTER, WGMMA_K_BYTES / 2);
    wgmma_gemm_launch(op, ta, tb, "bf16_gemm", stream);
}

void bf16_gemm(const Bf16Gemm *g, cudaStream_t stream) {
    const char *why = NULL;
    if (!hopper_code_runs()) why = "needs an sm_90 GPU and a build with sm_90a code";
    else if (g->M < 1 || g->N < 16 || g->K < 16 || g->N % 16 || g->K % 16) why = "M >= 1 and N, K multiples of 16 (>= 16) are needed";
    else if ((uintptr_t)g->a % 16 || (uintptr_t)g->b % 16 || (uintptr_t)g->out % 16 || (uintptr_t)g->out2 % 16)
        why = "pointers must be 16-byte aligned";
    else if (g->epilogue == BF16_EPI_GELU && !g->out2) why = "the GELU epilogue needs out2";
    if (why) fatal("bf16_gemm (M %d, N %d, K %d): %s", g->M, g->N, g->K, why);
    if (g->epilogue == BF16_EPI_GELU) launch<BF16_EPI_GELU>(g, stream);
    else launch<BF16_EPI_BIAS>(g, stream);
    cudaCheckLaunch();
}
