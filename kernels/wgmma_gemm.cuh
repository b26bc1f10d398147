// wgmma_gemm.cuh: the one Hopper GEMM kernel behind int8_gemm.cu and bf16_gemm.cu (sm_90a): C (M, N) = A (M, K) .
// B (N, K)^T with both operands K-major, persistent and warp-specialised, in clusters of 2 CTAs.
//  - Work items are pairs of adjacent 128-row tiles x one BN-column tile, one per cluster, numbered with N fastest
//    (the clusters running at one time share A rows, and all of B, in L2). The two CTAs of a cluster take the two
//    row tiles and share B: each loads half of the B tile and multicasts it to both.
//  - Warpgroup 0: one thread issues the TMA loads of each k-tile (128 bytes of K: 128 int8 or 64 bf16) into
//    128-byte-swizzled shared memory, STAGES deep, signalling "full" mbarriers; warp 1 loads each tile's epilogue
//    parameters (Op::load_params) into shared memory while the tile's mainloop runs.
//  - Warpgroups 1-2, the consumers, 64 rows each: Op::mma over the k-tile's four 32-byte k-steps, one k-tile of
//    wgmma kept in flight while the stage before it is released through "empty" mbarriers in both CTAs. Then
//    Op::epilogue from registers, each warp on its own 16 rows, through the warp's two staging buffers
//    (store_box: stmatrix, TMA store) which drain while the next tile computes. Both warpgroups are in the
//    epilogue at once; staggering them (one's epilogue beside the other's mainloop) measured slower
//    (docs/benchmarks.md, ninth session).
// An Op supplies: BN (256 or 128), STAGES, P_BYTES (its parameters per tile), Acc (int or float), int M, N, K, and
//   mma(acc, desc_a, desc_b, accumulate)      one 32-byte k-step: acc (64 x BN) (+)= A (64 rows) . B (BN rows)^T
//   load_params(p, m0, n0, lane)              the loader warp's lanes fill p (P_BYTES) for the tile at (m0, n0)
//   epilogue(acc, p, bufs, round, m0, n0, c, warp, lane)   consumer warpgroup c's warp `warp`: rows m0 + 64 c +
//                                             16 warp .. + 15 of the tile; bufs: its 2 staging buffers
// Accumulator layout (wgmma m64nN): register 4j + 2h + e holds row 16 warp + lane / 4 + 8h, column 8j + 2 (lane % 4) + e.
#pragma once
#include "hopper.cuh"

#define WGMMA_BM 128
#define WGMMA_K_BYTES 128                       // one swizzle row of K per k-tile
#define WGMMA_CLUSTER 2
#define WGMMA_A_BYTES (WGMMA_BM * WGMMA_K_BYTES)  // 16 KB
#define WGMMA_Y_BOX_ROWS 16                     // output boxes of 16 x 64 bf16 (128-byte rows, swizzled), one per warp
#define WGMMA_Y_BOX_COLS 64
#define WGMMA_Y_BOX_BYTES (WGMMA_Y_BOX_ROWS * WGMMA_Y_BOX_COLS * 2)
#define WGMMA_Y_BYTES (8 * 2 * WGMMA_Y_BOX_BYTES)  // 32 KB: two staging buffers per consumer warp

// Shared memory of an Op's kernel: the stages, the staging buffers, the parameters and the barriers (full and
// empty per stage, p_full, p_empty); at most the 227 KB a block may have.
template <class Op> struct WgmmaSmem {
    static constexpr int B_BYTES = Op::BN * WGMMA_K_BYTES;  // half of it from each CTA of the cluster
    static constexpr int BYTES = Op::STAGES * (WGMMA_A_BYTES + B_BYTES) + WGMMA_Y_BYTES + Op::P_BYTES + (2 * Op::STAGES + 2) * 8;
    static_assert(BYTES <= 227 * 1024, "the stages, staging buffers and parameters exceed a block's shared memory");
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// One round of a warp's output: 16 x 64 bf16 (r[jp][4]: the stmatrix registers of 8-column groups 2 jp, 2 jp + 1,
// matrices (rows 0-7, 2 jp), (8-15, 2 jp), (0-7, 2 jp + 1), (8-15, 2 jp + 1)) staged in buffer round % 2 (chunk c of
// row r at c ^ (r % 8): conflict-free, and what the TMA store reads with SWIZZLE_128B) and stored by TMA at (col,
// row0) if `store`. The buffer is rewritten once the store issued from it two rounds ago has read it; only the warp
// synchronises.
__device__ inline void store_box(const uint32_t (&r)[4][4], uint8_t *bufs, int &round, const CUtensorMap *map, int col,
                                 int row0, int store, int lane) {
    uint8_t *buf = bufs + (round % 2) * WGMMA_Y_BOX_BYTES;
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

template <class Op>
__global__ void __launch_bounds__(384, 1)
    wgmma_gemm_kernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_b,
                      const __grid_constant__ Op op) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int BN = Op::BN, STAGES = Op::STAGES, B_BYTES = WgmmaSmem<Op>::B_BYTES;
    // No room for an alignment margin: the dynamic shared memory starts 1024-aligned (checked).
    extern __shared__ __align__(1024) uint8_t smem[];
    if (smem_u32(smem) & 1023) __trap();
    uint8_t *sa = smem;                         // [stage] (128 rows, 128 bytes of K)
    uint8_t *sb = sa + STAGES * WGMMA_A_BYTES;  // [stage] (BN rows, 128 bytes): the first BN / 2 rows from CTA 0
    uint8_t *sy = sb + STAGES * B_BYTES;        // [consumer warp][2 buffers] (16, 64) bf16
    uint8_t *p = sy + WGMMA_Y_BYTES;            // the tile's epilogue parameters
    uint64_t *full = (uint64_t *)(p + Op::P_BYTES), *empty = full + STAGES, *p_full = empty + STAGES,
             *p_empty = p_full + 1;
    uint32_t rank = cluster_rank();
    int m_tiles = (op.M + WGMMA_BM - 1) / WGMMA_BM, tiles_n = (op.N + BN - 1) / BN;
    int items = (m_tiles + 1) / 2 * tiles_n, cluster = blockIdx.x / WGMMA_CLUSTER, clusters = gridDim.x / WGMMA_CLUSTER;
    int ktiles = (op.K * (int)sizeof(typename Op::Elem) + WGMMA_K_BYTES - 1) / WGMMA_K_BYTES;
    int wg = threadIdx.x / 128, lane = threadIdx.x % 32, warp = threadIdx.x / 32 % 4;  // wg 0: producer, 1-2: consumers

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) {
            mbar_init(&full[s], 1);                   // this CTA's producer's arrive.expect_tx, then the TMA bytes
            mbar_init(&empty[s], 2 * WGMMA_CLUSTER);  // each consumer warpgroup of both CTAs
        }
        mbar_init(p_full, 32);  // the loader warp's lanes
        mbar_init(p_empty, 8);  // each consumer warp, done with the parameters
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    cluster_sync();  // the peer's barriers exist before anything is multicast or arrived on

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
        if (threadIdx.x == 0) {
            int it = 0;  // k-tiles loaded so far, over all tiles: stage it % STAGES, phase (it / STAGES) & 1
            for (int item = cluster; item < items; item += clusters) {
                int mt = item / tiles_n * 2 + rank, n0 = item % tiles_n * BN;
                int a_row = min(mt, m_tiles - 1) * WGMMA_BM;  // past the last M tile (odd count): load any valid tile
                for (int kt = 0; kt < ktiles; kt++, it++) {
                    int s = it % STAGES, k = kt * WGMMA_K_BYTES / (int)sizeof(typename Op::Elem);
                    mbar_wait(&empty[s], ((it / STAGES) & 1) ^ 1);       // both CTAs are done with stage s
                    mbar_expect_tx(&full[s], WGMMA_A_BYTES + B_BYTES);  // whole boxes, out-of-bounds zeros included
                    tma_load_2d(sa + s * WGMMA_A_BYTES, &tma_a, k, a_row, &full[s]);
                    tma_load_2d_multicast(sb + s * B_BYTES + rank * (B_BYTES / 2), &tma_b, k, n0 + rank * (BN / 2),
                                          &full[s], (1 << WGMMA_CLUSTER) - 1);
                }
            }
        } else if (warp == 1) {
            int ti = 0;
            for (int item = cluster; item < items; item += clusters, ti++) {
                int m0 = (item / tiles_n * 2 + rank) * WGMMA_BM, n0 = item % tiles_n * BN;
                mbar_wait(p_empty, (ti & 1) ^ 1);  // the consumers are done with the previous tile's parameters
                op.load_params(p, m0, n0, lane);
                mbar_arrive(p_full);  // release: the stores above are visible to the consumers' wait
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
        int c = wg - 1, leader = threadIdx.x % 128 == 0;
        typename Op::Acc acc[BN / 2];
        int it = 0, ti = 0, round = 0;  // k-tiles, tiles, output boxes so far (the box buffer is round % 2)
        uint8_t *bufs = sy + (c * 4 + warp) * 2 * WGMMA_Y_BOX_BYTES;
        for (int item = cluster; item < items; item += clusters, ti++) {
            int m0 = (item / tiles_n * 2 + rank) * WGMMA_BM, n0 = item % tiles_n * BN;
            for (int kt = 0; kt < ktiles; kt++, it++) {
                int s = it % STAGES;
                mbar_wait(&full[s], (it / STAGES) & 1);
                uint64_t da = wgmma_desc(smem_u32(sa + s * WGMMA_A_BYTES + c * 64 * WGMMA_K_BYTES));
                uint64_t db = wgmma_desc(smem_u32(sb + s * B_BYTES));
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < WGMMA_K_BYTES / 32; kk++)  // +32 bytes along K: +2 in the address field
                    op.mma(acc, da + 2 * kk, db + 2 * kk, kt > 0 || kk > 0);
                wgmma_commit();
                // Keep this k-tile's wgmma in flight while the previous k-tile's stage is released (measured: the
                // same speed as waiting for them and releasing this stage at once).
                wgmma_wait<1>();
                if (kt > 0 && leader)
                    mbar_arrive_cluster_all(&empty[(it - 1) % STAGES], WGMMA_CLUSTER);
            }
            wgmma_wait<0>();
            fence_regs(acc);
            if (leader)
                mbar_arrive_cluster_all(&empty[(it - 1) % STAGES], WGMMA_CLUSTER);

            mbar_wait(p_full, ti & 1);
            op.epilogue(acc, p, bufs, round, m0, n0, c, warp, lane);
            __syncwarp();  // the warp's parameter reads are done
            if (lane == 0) mbar_arrive(p_empty);
        }
        if (lane == 0) bulk_wait();  // the staging buffers must outlive the stores reading them
    }
    cluster_sync();  // no CTA exits while its peer may still arrive on its barriers
#endif
}

// Launch configuration of Op's kernel: 384 threads in clusters of WGMMA_CLUSTER CTAs; *attr holds the cluster
// dimension and must outlive the launch.
template <class Op> static cudaLaunchConfig_t wgmma_gemm_config(cudaLaunchAttribute *attr, cudaStream_t stream) {
    cudaLaunchConfig_t cfg = {};
    attr->id = cudaLaunchAttributeClusterDimension;
    attr->val.clusterDim.x = WGMMA_CLUSTER, attr->val.clusterDim.y = 1, attr->val.clusterDim.z = 1;
    cfg.blockDim = dim3(384), cfg.dynamicSmemBytes = WgmmaSmem<Op>::BYTES, cfg.stream = stream;
    cfg.attrs = attr, cfg.numAttrs = 1;
    return cfg;
}

// How many clusters of Op's kernel run at once (fatal, naming `who`, when none fits). Asked once per Op.
template <class Op> static int wgmma_gemm_clusters(const char *who) {
    static int n = 0;
    if (!n) {
        cudaLaunchAttribute attr;
        cudaLaunchConfig_t cfg = wgmma_gemm_config<Op>(&attr, 0);
        cfg.gridDim = dim3(WGMMA_CLUSTER);
        cudaCheck(cudaFuncSetAttribute(wgmma_gemm_kernel<Op>, cudaFuncAttributeMaxDynamicSharedMemorySize, WgmmaSmem<Op>::BYTES));
        cudaCheck(cudaOccupancyMaxActiveClusters(&n, wgmma_gemm_kernel<Op>, &cfg));
        if (n < 1) fatal("%s: no cluster of %d CTAs with %d bytes of shared memory fits", who, WGMMA_CLUSTER, WgmmaSmem<Op>::BYTES);
    }
    return n;
}

// Work items (pairs of 128-row tiles x one bn-column tile) of an (M, N) output.
static inline int wgmma_gemm_items(int M, int N, int bn) { return (ceil_div(M, WGMMA_BM) + 1) / 2 * ceil_div(N, bn); }

// Launches Op's kernel on as many clusters as run at once (fewer for small problems). ta, tb: tensor maps of A
// (boxes of 128 rows x 128 bytes) and B (BN / 2 rows x 128 bytes).
template <class Op>
static void wgmma_gemm_launch(const Op &op, const CUtensorMap &ta, const CUtensorMap &tb, const char *who, cudaStream_t stream) {
    int max_clusters = wgmma_gemm_clusters<Op>(who), items = wgmma_gemm_items(op.M, op.N, Op::BN);
    cudaLaunchAttribute attr;
    cudaLaunchConfig_t cfg = wgmma_gemm_config<Op>(&attr, stream);
    cfg.gridDim = dim3(WGMMA_CLUSTER * (items < max_clusters ? items : max_clusters));
    cudaCheck(cudaLaunchKernelEx(&cfg, wgmma_gemm_kernel<Op>, ta, tb, op));
}
