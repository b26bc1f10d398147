// bf16_gemm.cu: the bf16 GEMM with fused MLP epilogues (API and formulas in bf16_gemm.cuh); sm_90a only.
// The structure is int8_gemm.cu's wgmma kernel: persistent, warp-specialised, clusters of 2 CTAs taking adjacent
// 128-row tiles of one 256-column tile and multicasting the halves of B to each other; one producer thread issues
// TMA loads into 128-byte-swizzled shared memory, 4 stages of 128 x 64 A + 256 x 64 B; two consumer warpgroups run
// wgmma.m64n256k16.f32.bf16.bf16 on 64 rows each. B (N, K) is K-major like A; B (K, N) is N-major, loaded as
// 64 x 64 boxes and read by the wgmma transposed. A loader warp stages each tile's bias in shared memory (or, for
// the GELU backward, prefetches the tile's pre-activation into L2) while the tile's mainloop runs. The epilogue
// works from registers, each warp on its own 16 rows: bf16 results go through the warp's swizzled staging buffers
// (stmatrix) and TMA stores. The GELU backward's column sums are reduced over the warp's rows by shuffles, then over
// the CTA's 8 warps in the staging buffers once the warp's stores have read them.
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
#define BG_B_BOX_BYTES (BG_BK * 64 * 2)     // N-major B: a box of 64 k x 64 n
#define BG_Y_BOX_ROWS 16                    // output boxes of 16 x 64 bf16, one per warp at a time
#define BG_Y_BOX_COLS 64
#define BG_Y_BOX_BYTES (BG_Y_BOX_ROWS * BG_Y_BOX_COLS * 2)
#define BG_Y_BYTES (8 * 2 * BG_Y_BOX_BYTES)  // 32 KB: two staging buffers per consumer warp
#define BG_P_BYTES (BG_BN * 4)               // the tile's bias as fp32
// Shared memory: the stages, the staging buffers, the bias, the GELU tables the backward's epilogue looks up (value
// 8 KB, gradient 16 KB: from global memory they would miss L1, which the stages leave at ~28 KB) and the barriers.
// BIAS and GELU: 4 stages (225.1 KB of the 227 KB a block may have; GELU reads its 8 KB table through L1, measured
// faster than 3 stages and the table here); GELU_BWD 3 with the tables.
template <int EPI, int STAGES> struct BgLayout {
    static constexpr int VAL_BYTES = EPI == BF16_EPI_GELU_BWD ? 2 * GELU_LUT_N * 2 : 0;
    static constexpr int GRAD_BYTES = EPI == BF16_EPI_GELU_BWD ? 2 * GELU_LUT_N * 4 : 0;
    static constexpr int SMEM = STAGES * (BG_A_BYTES + BG_B_BYTES) + BG_Y_BYTES + BG_P_BYTES + VAL_BYTES + GRAD_BYTES + (2 * STAGES + 2) * 8;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// d (64 x 256 fp32, wgmma accumulator layout) (+)= A (64 x 16) . B (256 x 16)^T; TB: B N-major (transposed).
template <int TB> __device__ inline void wgmma_bf16(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" WG_ACC128 "}, %128, %129, p, 1, 1, 0, %131;\n}\n"
                 : WG_D64("+f", 0), WG_D64("+f", 64)
                 : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TB));
}

__device__ inline void named_barrier_consumers() { asm volatile("bar.sync 1, 256;" ::: "memory"); }

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
template <int EPI, int TB, int STAGES>
__global__ void __launch_bounds__(384, 1)
    bf16_gemm_kernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_b,
                     const __grid_constant__ CUtensorMap tma_y, const __grid_constant__ CUtensorMap tma_y2, const Bf16Gemm g,
                     const uint16_t *gelu_val, const float *gelu_grad) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) uint8_t smem[];
    if (smem_u32(smem) & 1023) __trap();
    uint8_t *sa = smem;                           // [stage] (128, 64) bf16
    typedef BgLayout<EPI, STAGES> L;
    uint8_t *sb = sa + STAGES * BG_A_BYTES;       // [stage] (256, 64) bf16, or 4 boxes of (64 k, 64 n)
    uint8_t *sy = sb + STAGES * BG_B_BYTES;       // [consumer warp][2 buffers] (16, 64) bf16
    float *p_col = (float *)(sy + BG_Y_BYTES);    // [256] the bias of the tile's columns (zeros past N)
    uint16_t *tab_val = (uint16_t *)(p_col + BG_BN);               // GELU: the value table
    float *tab_grad = (float *)((uint8_t *)tab_val + L::VAL_BYTES);  // GELU_BWD: the gradient table
    uint64_t *full = (uint64_t *)((uint8_t *)tab_grad + L::GRAD_BYTES), *empty = full + STAGES, *p_full = empty + STAGES,
             *p_empty = p_full + 1;
    uint32_t rank = cluster_rank();
    int m_tiles = (g.M + BG_BM - 1) / BG_BM, tiles_n = (g.N + BG_BN - 1) / BG_BN;
    int items = (m_tiles + 1) / 2 * tiles_n, cluster = blockIdx.x / BG_CLUSTER, clusters = gridDim.x / BG_CLUSTER;
    int ktiles = (g.K + BG_BK - 1) / BG_BK;
    int wg = threadIdx.x / 128, lane = threadIdx.x % 32, warp = threadIdx.x / 32 % 4;

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], 2 * BG_CLUSTER);
        }
        mbar_init(p_full, 32);
        mbar_init(p_empty, 8);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    if (EPI == BF16_EPI_GELU) tab_val = (uint16_t *)gelu_val;  // global memory
    for (int i = threadIdx.x; i < L::VAL_BYTES / 16; i += blockDim.x) ((uint4 *)tab_val)[i] = ((const uint4 *)gelu_val)[i];
    for (int i = threadIdx.x; i < L::GRAD_BYTES / 16; i += blockDim.x) ((uint4 *)tab_grad)[i] = ((const uint4 *)gelu_grad)[i];
    __syncthreads();
    cluster_sync();

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
        if (threadIdx.x == 0) {
            int it = 0;
            for (int item = cluster; item < items; item += clusters) {
                int mt = item / tiles_n * 2 + rank, n0 = item % tiles_n * BG_BN;
                int a_row = min(mt, m_tiles - 1) * BG_BM;
                for (int kt = 0; kt < ktiles; kt++, it++) {
                    int s = it % STAGES;
                    mbar_wait(&empty[s], ((it / STAGES) & 1) ^ 1);
                    mbar_expect_tx(&full[s], BG_A_BYTES + BG_B_BYTES);
                    tma_load_2d(sa + s * BG_A_BYTES, &tma_a, kt * BG_BK, a_row, &full[s]);
                    uint8_t *dst = sb + s * BG_B_BYTES + rank * (BG_B_BYTES / 2);
                    if (TB) {
                        tma_load_2d_multicast(dst, &tma_b, n0 + rank * 128, kt * BG_BK, &full[s], 3);
                        tma_load_2d_multicast(dst + BG_B_BOX_BYTES, &tma_b, n0 + rank * 128 + 64, kt * BG_BK, &full[s], 3);
                    } else {
                        tma_load_2d_multicast(dst, &tma_b, kt * BG_BK, n0 + rank * 128, &full[s], 3);
                    }
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
        float tiny = gelu_tiny_slope(g.quick);
        for (int item = cluster; item < items; item += clusters, ti++) {
            int m_tile = item / tiles_n * 2 + rank, m0 = m_tile * BG_BM, n0 = item % tiles_n * BG_BN;
            int row0 = m0 + c * 64 + warp * 16, r0 = row0 + lane / 4, rows_in = row0 < g.M;
            // GELU_BWD: the pre-activation pairs at rows r0, r0 + 8 of the tile's 32 8-column groups, loaded while the
            // mainloop runs
            uint32_t pre[BG_BN / 64][8][2];
            if (EPI == BF16_EPI_GELU_BWD)
#pragma unroll
                for (int b = 0; b < BG_BN / 64; b++)
#pragma unroll
                    for (int jj = 0; jj < 8; jj++)
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            int row = r0 + 8 * h, col = n0 + 64 * b + 8 * jj + 2 * (lane % 4);
                            pre[b][jj][h] = row < g.M && col < g.N ? *(const uint32_t *)(g.pre + (size_t)row * g.N + col) : 0u;
                        }
            for (int kt = 0; kt < ktiles; kt++, it++) {
                int s = it % STAGES;
                mbar_wait(&full[s], (it / STAGES) & 1);
                uint64_t da = wgmma_desc(smem_u32(sa + s * BG_A_BYTES + c * 64 * 128));
                uint64_t db = TB ? wgmma_desc_mn(smem_u32(sb + s * BG_B_BYTES), BG_B_BOX_BYTES)
                                 : wgmma_desc(smem_u32(sb + s * BG_B_BYTES));
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < BG_BK / 16; kk++)  // K-major: +32 bytes along the row; N-major: +16 rows of 128 bytes
                    wgmma_bf16<TB>(acc, da + 2 * kk, db + (TB ? 128 : 2) * kk, kt > 0 || kk > 0);
                wgmma_commit();
                wgmma_wait<1>();
                if (kt > 0 && leader)
                    for (int r = 0; r < BG_CLUSTER; r++) mbar_arrive_cluster(&empty[(it - 1) % STAGES], r);
            }
            wgmma_wait<0>();
            fence_regs(acc);
            if (leader)
                for (int r = 0; r < BG_CLUSTER; r++) mbar_arrive_cluster(&empty[(it - 1) % STAGES], r);

            mbar_wait(p_full, ti & 1);
            // GELU_BWD: the column sums of the warp's 16 rows; lane l keeps those of columns 8 (l / 4) + 2 (l % 4) + 0, 1
            // of each box (after the shuffles every lane holds all of them)
            float cs[BG_BN / 64][2];
#pragma unroll
            for (int b = 0; b < BG_BN / 64; b++) {
                int col_b = n0 + 64 * b, store = rows_in && col_b < g.N;
                uint32_t r[4][4], r2[4][4];
#pragma unroll
                for (int jj = 0; jj < 8; jj++) {
                    int j = 8 * b + jj, cl = 8 * j + 2 * (lane % 4);
                    float b0 = EPI == BF16_EPI_GELU_BWD ? 0.0f : p_col[cl], b1 = EPI == BF16_EPI_GELU_BWD ? 0.0f : p_col[cl + 1];
                    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        float y0 = acc[4 * j + 2 * h] + b0, y1 = acc[4 * j + 2 * h + 1] + b1;
                        uint32_t y = pack_bf16(y0, y1), out = y, out2 = 0;
                        if (EPI == BF16_EPI_GELU) {
                            out2 = pack_bf16(gelu_bf16(tab_val, y & 0xFFFF), gelu_bf16(tab_val, y >> 16));
                        } else if (EPI == BF16_EPI_GELU_BWD) {
                            uint32_t x = pre[b][jj][h];
                            float d0 = __uint_as_float(y << 16) * gelu_grad_bf16(tab_grad, x & 0xFFFF, tiny);
                            float d1 = __uint_as_float(y & 0xFFFF0000u) * gelu_grad_bf16(tab_grad, x >> 16, tiny);
                            out = pack_bf16(d0, d1), s0 += d0, s1 += d1;
                            if (g.out2)
                                out2 = pack_bf16(gelu_bf16(tab_val, x & 0xFFFF), gelu_bf16(tab_val, x >> 16));
                        }
                        r[jj / 2][2 * (jj % 2) + h] = out, r2[jj / 2][2 * (jj % 2) + h] = out2;
                    }
                    if (EPI == BF16_EPI_GELU_BWD) {  // over lane / 4: the warp's 8 row pairs
#pragma unroll
                        for (int o = 4; o < 32; o <<= 1)
                            s0 += __shfl_xor_sync(0xffffffffu, s0, o), s1 += __shfl_xor_sync(0xffffffffu, s1, o);
                        if (lane / 4 == jj) cs[b][0] = s0, cs[b][1] = s1;
                    }
                }
                store_box(r, bufs, round, &tma_y, col_b, row0, store, lane);
                if (EPI == BF16_EPI_GELU || (EPI == BF16_EPI_GELU_BWD && g.out2))
                    store_box(r2, bufs, round, &tma_y2, col_b, row0, store, lane);
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(p_empty);
            if (EPI == BF16_EPI_GELU_BWD) {
                // the 8 warps' sums through their staging buffers (1 KB each), once their stores have read them
                if (lane == 0) bulk_wait_read0();
                __syncwarp();
                float *red = (float *)bufs;
#pragma unroll
                for (int b = 0; b < BG_BN / 64; b++)
                    *(float2 *)&red[64 * b + 8 * (lane / 4) + 2 * (lane % 4)] = make_float2(cs[b][0], cs[b][1]);
                named_barrier_consumers();
                int t = threadIdx.x - 128, col = n0 + t;  // 256 consumer threads, one column each
                float s = 0.0f;
                for (int w = 0; w < 8; w++) s += ((const float *)(sy + w * 2 * BG_Y_BOX_BYTES))[t];
                if (col < g.N && m0 < g.M) g.colsum_partial[(size_t)m_tile * g.N + col] = s;
                named_barrier_consumers();  // the buffers are staging again
            }
        }
        if (lane == 0) bulk_wait();
    }
    cluster_sync();
#endif
}

// ------------------------------------------------------------------------------------------------ host
template <int EPI, int TB, int STAGES> static void launch(const Bf16Gemm *g, cudaStream_t stream) {
    auto kernel = bf16_gemm_kernel<EPI, TB, STAGES>;
    const int SMEM = BgLayout<EPI, STAGES>::SMEM;
    static int max_clusters = 0;
    cudaLaunchAttribute cluster;
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = BG_CLUSTER, cluster.val.clusterDim.y = 1, cluster.val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.blockDim = dim3(384), cfg.dynamicSmemBytes = SMEM, cfg.stream = stream, cfg.attrs = &cluster, cfg.numAttrs = 1;
    if (!max_clusters) {
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
        cfg.gridDim = dim3(BG_CLUSTER);
        cudaCheck(cudaOccupancyMaxActiveClusters(&max_clusters, kernel, &cfg));
        if (max_clusters < 1) fatal("bf16_gemm: no cluster of %d CTAs with %d bytes of shared memory fits", BG_CLUSTER, SMEM);
    }
    CUtensorMap ta = make_tensor_map(g->a, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->M, g->K, BG_BM, BG_BK);
    CUtensorMap tb = TB ? make_tensor_map(g->b, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->K, g->N, BG_BK, 64)
                        : make_tensor_map(g->b, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->N, g->K, BG_BN / BG_CLUSTER, BG_BK);
    CUtensorMap ty = make_tensor_map(g->out, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->M, g->N, BG_Y_BOX_ROWS, BG_Y_BOX_COLS);
    CUtensorMap ty2 = g->out2 ? make_tensor_map(g->out2, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->M, g->N, BG_Y_BOX_ROWS, BG_Y_BOX_COLS) : ty;
    const uint16_t *val = NULL;
    const float *grad = NULL;
    if (EPI != BF16_EPI_BIAS) gelu_tables(g->quick, &val, &grad);
    int items = (ceil_div(g->M, BG_BM) + 1) / 2 * ceil_div(g->N, BG_BN);
    cfg.gridDim = dim3(BG_CLUSTER * (items < max_clusters ? items : max_clusters));
    cudaCheck(cudaLaunchKernelEx(&cfg, kernel, ta, tb, ty, ty2, *g, val, grad));
}

int bf16_gemm_available(void) {
    static int avail = -1;
    if (avail < 0) {
        int dev, major;
        cudaFuncAttributes attr;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        // the kernel body exists only in sm_90a code; on an sm_90 device that code is what runs, if it was built
        avail = major == 9 && cudaFuncGetAttributes(&attr, bf16_gemm_kernel<BF16_EPI_BIAS, 0, 4>) == cudaSuccess &&
                attr.binaryVersion == 90;
        cudaGetLastError();
    }
    return avail;
}

void bf16_gemm(const Bf16Gemm *g, cudaStream_t stream) {
    const char *why = NULL;
    if (!bf16_gemm_available()) why = "needs an sm_90 GPU and a build with sm_90a code";
    else if (g->M < 1 || g->N < 16 || g->K < 16 || g->N % 16 || g->K % 16) why = "M >= 1 and N, K multiples of 16 (>= 16) are needed";
    else if ((uintptr_t)g->a % 16 || (uintptr_t)g->b % 16 || (uintptr_t)g->out % 16 || (uintptr_t)g->out2 % 16 || (uintptr_t)g->pre % 16)
        why = "pointers must be 16-byte aligned";
    else if (g->epilogue == BF16_EPI_GELU && !g->out2) why = "the GELU epilogue needs out2";
    else if (g->epilogue == BF16_EPI_GELU_BWD && (!g->pre || !g->colsum_partial || g->bias)) why = "the GELU backward needs pre and colsum_partial, no bias";
    if (why) fatal("bf16_gemm (M %d, N %d, K %d): %s", g->M, g->N, g->K, why);
    int tb = g->b_kn;
    switch (g->epilogue) {
    case BF16_EPI_BIAS: tb ? launch<BF16_EPI_BIAS, 1, 4>(g, stream) : launch<BF16_EPI_BIAS, 0, 4>(g, stream); break;
    case BF16_EPI_GELU: tb ? launch<BF16_EPI_GELU, 1, 4>(g, stream) : launch<BF16_EPI_GELU, 0, 4>(g, stream); break;
    case BF16_EPI_GELU_BWD: tb ? launch<BF16_EPI_GELU_BWD, 1, 3>(g, stream) : launch<BF16_EPI_GELU_BWD, 0, 3>(g, stream); break;
    }
    cudaCheckLaunch();
}
