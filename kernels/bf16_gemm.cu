// bf16_gemm.cu: the bf16 GEMM with the GELU fused into its epilogue (API and formulas in bf16_gemm.cuh); sm_90a only.
// The structure is int8_gemm.cu's wgmma kernel: persistent, warp-specialised, clusters of 2 CTAs taking adjacent
// 128-row tiles of one 256-column tile and multicasting the halves of B to each other; one producer thread issues
// TMA loads into 128-byte-swizzled shared memory, 4 stages of 128 x 64 A + 256 x 64 B; two consumer warpgroups run
// wgmma.m64n256k16.f32.bf16.bf16 on 64 rows each. A loader warp stages each tile's bias in shared memory while the
// tile's mainloop runs. The epilogue works from registers, each warp on its own 16 rows: bf16 results go through
// the warp's swizzled staging buffers (stmatrix) and TMA stores, which drain while the next tile computes.
// The GELU's table (8 KB) is read through L1: 4 stages measured faster than 3 with the table in shared memory.
// The epilogue does not overlap the mainloop (both warpgroups share a tile), so work added to it costs tensor-core
// time: the GELU backward fused the same way (commit 84fe34c: N-major B, dgelu, the recompute, bias-gradient
// partials) measured 0.87-0.95x cuBLAS + the separate kernel, and was removed (docs/benchmarks.md).
#include "bf16_gemm.cuh"
#include "gelu.cuh"
#include "hopper.cuh"

typedef __nv_bfloat16 bf16;

#define BG_BM 128
#define BG_BN 256
#define BG_BK 64  // bf16 elements: one 128-byte swizzle row
#define BG_CLUSTER 2
#define BG_A_BYTES (BG_BM * BG_BK * 2)      // 16 KB
#define BG_B_BYTES (BG_BN * BG_BK * 2)      // 32 KB, half from each CTA of the cluster
#define BG_Y_BOX_ROWS 16                    // output boxes of 16 x 64 bf16, one per warp at a time
#define BG_Y_BOX_COLS 64
#define BG_Y_BOX_BYTES (BG_Y_BOX_ROWS * BG_Y_BOX_COLS * 2)
#define BG_Y_BYTES (8 * 2 * BG_Y_BOX_BYTES)  // 32 KB: two staging buffers per consumer warp
#define BG_P_BYTES (BG_BN * 4)               // the tile's bias as fp32
#define BG_STAGES 4
// 4 * 48 KB + 32 KB + 1 KB + the barriers: 225.1 KB of the 227 KB a block may have.
#define BG_SMEM (BG_STAGES * (BG_A_BYTES + BG_B_BYTES) + BG_Y_BYTES + BG_P_BYTES + (2 * BG_STAGES + 2) * 8)

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// d (64 x 256 fp32, wgmma accumulator layout) (+)= A (64 x 16) . B (256 x 16)^T, both K-major.
__device__ inline void wgmma_bf16(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" WG_ACC128 "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
                 : WG_D64("+f", 0), WG_D64("+f", 64)
                 : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// One round of a warp's output: 16 x 64 bf16 (r[jp][4]: the stmatrix registers of 8-column groups 2 jp, 2 jp + 1)
// staged in buffer round % 2 and stored by TMA at (col, row0). The buffer is rewritten once the store issued from
// it two rounds ago has read it.
__device__ inline void store_box(const uint32_t (&r)[4][4], uint8_t *bufs, int &round, const CUtensorMap *map, int col,
                                 int row0, int store, int lane) {
    uint8_t *buf = bufs + (round % 2) * BG_Y_BOX_BYTES;
    if (lane == 0) bulk_wait_read1();
    __syncwarp();
#pragma unroll
    for (int jp = 0; jp < 4; jp++) {
        int m = lane / 8, row = (m & 1) * 8 + lane % 8, chunk = (2 * jp + (m >> 1)) ^ (row % 8);
        stmatrix_x4(smem_u32(buf) + row * 128 + chunk * 16, r[jp][0], r[jp][1], r[jp][2], r[jp][3]);
    }
    fence_async_smem();
    __syncwarp();
    if (lane == 0) {
        if (store) tma_store_2d(map, buf, col, row0);
        bulk_commit();  // one group per round, even an empty one: wait_read1 counts rounds
    }
    round++;
}
#endif

// Accumulator layout: register 4j + 2h + e holds row 16 warp + lane / 4 + 8h, column 8j + 2 (lane % 4) + e.
// Warpgroup 0: thread 0 issues the TMA loads, warp 1 stages the parameters; warpgroups 1-2 compute.
template <int EPI>
__global__ void __launch_bounds__(384, 1)
    bf16_gemm_kernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_b,
                     const __grid_constant__ CUtensorMap tma_y, const __grid_constant__ CUtensorMap tma_y2, const Bf16Gemm g,
                     const uint16_t *gelu_val) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) uint8_t smem[];
    if (smem_u32(smem) & 1023) __trap();
    uint8_t *sa = smem;                           // [stage] (128, 64) bf16
    uint8_t *sb = sa + BG_STAGES * BG_A_BYTES;    // [stage] (256, 64) bf16
    uint8_t *sy = sb + BG_STAGES * BG_B_BYTES;    // [consumer warp][2 buffers] (16, 64) bf16
    float *p_col = (float *)(sy + BG_Y_BYTES);    // [256] the bias of the tile's columns (zeros past N)
    uint64_t *full = (uint64_t *)(p_col + BG_BN), *empty = full + BG_STAGES, *p_full = empty + BG_STAGES,
             *p_empty = p_full + 1;
    uint32_t rank = cluster_rank();
    int m_tiles = (g.M + BG_BM - 1) / BG_BM, tiles_n = (g.N + BG_BN - 1) / BG_BN;
    int items = (m_tiles + 1) / 2 * tiles_n, cluster = blockIdx.x / BG_CLUSTER, clusters = gridDim.x / BG_CLUSTER;
    int ktiles = (g.K + BG_BK - 1) / BG_BK;
    int wg = threadIdx.x / 128, lane = threadIdx.x % 32, warp = threadIdx.x / 32 % 4;

    if (threadIdx.x == 0) {
        for (int s = 0; s < BG_STAGES; s++) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], 2 * BG_CLUSTER);
        }
        mbar_init(p_full, 32);
        mbar_init(p_empty, 8);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    cluster_sync();

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
        if (threadIdx.x == 0) {
            int it = 0;
            for (int item = cluster; item < items; item += clusters) {
                int mt = item / tiles_n * 2 + rank, n0 = item % tiles_n * BG_BN;
                int a_row = min(mt, m_tiles - 1) * BG_BM;
                for (int kt = 0; kt < ktiles; kt++, it++) {
                    int s = it % BG_STAGES;
                    mbar_wait(&empty[s], ((it / BG_STAGES) & 1) ^ 1);
                    mbar_expect_tx(&full[s], BG_A_BYTES + BG_B_BYTES);
                    tma_load_2d(sa + s * BG_A_BYTES, &tma_a, kt * BG_BK, a_row, &full[s]);
                    tma_load_2d_multicast(sb + s * BG_B_BYTES + rank * (BG_B_BYTES / 2), &tma_b, kt * BG_BK, n0 + rank * 128,
                                          &full[s], (1 << BG_CLUSTER) - 1);
                }
            }
        } else if (warp == 1) {
            int ti = 0;
            for (int item = cluster; item < items; item += clusters, ti++) {
                int n0 = item % tiles_n * BG_BN;
                mbar_wait(p_empty, (ti & 1) ^ 1);
#pragma unroll
                for (int i = 0; i < BG_BN / 32; i++) {
                    int col = n0 + lane + 32 * i;
                    p_col[lane + 32 * i] = g.bias && col < g.N ? __bfloat162float(__ldg(g.bias + col)) : 0.0f;
                }
                mbar_arrive(p_full);
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
        int c = wg - 1, leader = threadIdx.x % 128 == 0;
        float acc[128];
        int it = 0, ti = 0, round = 0;
        uint8_t *bufs = sy + (c * 4 + warp) * 2 * BG_Y_BOX_BYTES;
        for (int item = cluster; item < items; item += clusters, ti++) {
            int m0 = (item / tiles_n * 2 + rank) * BG_BM, n0 = item % tiles_n * BG_BN;
            for (int kt = 0; kt < ktiles; kt++, it++) {
                int s = it % BG_STAGES;
                mbar_wait(&full[s], (it / BG_STAGES) & 1);
                uint64_t da = wgmma_desc(smem_u32(sa + s * BG_A_BYTES + c * 64 * 128));
                uint64_t db = wgmma_desc(smem_u32(sb + s * BG_B_BYTES));
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < BG_BK / 16; kk++)  // +16 elements along K: +32 bytes, +2 in the address field
                    wgmma_bf16(acc, da + 2 * kk, db + 2 * kk, kt > 0 || kk > 0);
                wgmma_commit();
                wgmma_wait<1>();
                if (kt > 0 && leader)
                    mbar_arrive_cluster_all(&empty[(it - 1) % BG_STAGES], BG_CLUSTER);
            }
            wgmma_wait<0>();
            fence_regs(acc);
            if (leader)
                mbar_arrive_cluster_all(&empty[(it - 1) % BG_STAGES], BG_CLUSTER);

            int row0 = m0 + c * 64 + warp * 16, rows_in = row0 < g.M;
            mbar_wait(p_full, ti & 1);
#pragma unroll
            for (int b = 0; b < BG_BN / 64; b++) {
                int col_b = n0 + 64 * b, store = rows_in && col_b < g.N;
                uint32_t r[4][4], r2[4][4];  // the stmatrix registers of y and gelu(y)
#pragma unroll
                for (int jj = 0; jj < 8; jj++) {
                    int j = 8 * b + jj, cl = 8 * j + 2 * (lane % 4);
                    float2 bias = *(const float2 *)&p_col[cl];
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        uint32_t y = pack_bf16(acc[4 * j + 2 * h] + bias.x, acc[4 * j + 2 * h + 1] + bias.y);
                        r[jj / 2][2 * (jj % 2) + h] = y;
                        if (EPI == BF16_EPI_GELU)
                            r2[jj / 2][2 * (jj % 2) + h] = pack_bf16(gelu_bf16(gelu_val, y & 0xFFFF), gelu_bf16(gelu_val, y >> 16));
                    }
                }
                store_box(r, bufs, round, &tma_y, col_b, row0, store, lane);
                if (EPI == BF16_EPI_GELU) store_box(r2, bufs, round, &tma_y2, col_b, row0, store, lane);
            }
            __syncwarp();  // the warp's parameter reads are done
            if (lane == 0) mbar_arrive(p_empty);
        }
        if (lane == 0) bulk_wait();
    }
    cluster_sync();
#endif
}

// ------------------------------------------------------------------------------------------------ host
template <int EPI> static void launch(const Bf16Gemm *g, cudaStream_t stream) {
    static int max_clusters = 0;
    if (!max_clusters) max_clusters = wgmma_max_clusters(bf16_gemm_kernel<EPI>, BG_CLUSTER, BG_SMEM, "bf16_gemm");
    cudaLaunchAttribute cluster;
    cudaLaunchConfig_t cfg = wgmma_launch_config(&cluster, BG_CLUSTER, BG_SMEM, stream);
    CUtensorMap ta = make_tensor_map(g->a, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->M, g->K, BG_BM, BG_BK);
    CUtensorMap tb = make_tensor_map(g->b, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->N, g->K, BG_BN / BG_CLUSTER, BG_BK);
    CUtensorMap ty = make_tensor_map(g->out, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->M, g->N, BG_Y_BOX_ROWS, BG_Y_BOX_COLS);
    CUtensorMap ty2 = EPI == BF16_EPI_GELU
                          ? make_tensor_map(g->out2, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->M, g->N, BG_Y_BOX_ROWS, BG_Y_BOX_COLS)
                          : ty;
    const uint16_t *val = EPI == BF16_EPI_GELU ? gelu_value_table(g->quick) : NULL;
    int items = (ceil_div(g->M, BG_BM) + 1) / 2 * ceil_div(g->N, BG_BN);
    cfg.gridDim = dim3(BG_CLUSTER * (items < max_clusters ? items : max_clusters));
    cudaCheck(cudaLaunchKernelEx(&cfg, bf16_gemm_kernel<EPI>, ta, tb, ty, ty2, *g, val));
}

int bf16_gemm_available(void) {
    static int avail = -1;
    if (avail < 0) {
        int dev, major = 0;
        cudaFuncAttributes attr;
        // no device (memory plans are made without one): 0, not an error
        if (cuda_device_count() > 0) {
            cudaCheck(cudaGetDevice(&dev));
            cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        }
        // the kernel body exists only in sm_90a code; on an sm_90 device that code is what runs, if it was built
        avail = major == 9 && cudaFuncGetAttributes(&attr, bf16_gemm_kernel<BF16_EPI_BIAS>) == cudaSuccess &&
                attr.binaryVersion == 90;
        cudaGetLastError();
    }
    return avail;
}

void bf16_gemm(const Bf16Gemm *g, cudaStream_t stream) {
    const char *why = NULL;
    if (!bf16_gemm_available()) why = "needs an sm_90 GPU and a build with sm_90a code";
    else if (g->M < 1 || g->N < 16 || g->K < 16 || g->N % 16 || g->K % 16) why = "M >= 1 and N, K multiples of 16 (>= 16) are needed";
    else if ((uintptr_t)g->a % 16 || (uintptr_t)g->b % 16 || (uintptr_t)g->out % 16 || (uintptr_t)g->out2 % 16)
        why = "pointers must be 16-byte aligned";
    else if (g->epilogue == BF16_EPI_GELU && !g->out2) why = "the GELU epilogue needs out2";
    if (why) fatal("bf16_gemm (M %d, N %d, K %d): %s", g->M, g->N, g->K, why);
    if (g->epilogue == BF16_EPI_GELU) launch<BF16_EPI_GELU>(g, stream);
    else launch<BF16_EPI_BIAS>(g, stream);
    cudaCheckLaunch();
}
