// int8_gemm.cu: the int8 GEMM of SwitchBack with its fused dequantize epilogue (API and formula in int8_gemm.cuh).
// Two kernels, picked by the device's compute capability:
//  - sm_90a (H100): wgmma_gemm.cuh's persistent warp-specialised kernel (clusters of 2 CTAs multicasting B, TMA
//    stages, two consumer warpgroups) with wgmma.m64n256k32.s32.s8.s8 on 128 x 256 tiles (m64n128k32 on 128 x 128
//    where that fills the last wave better: small problems). The epilogue dequantizes from registers, each warp on
//    its own: bf16 output goes through the warp's staging buffers and TMA stores, other outputs directly.
//  - sm_80 / sm_89 (and a fallback on sm_90): 128 x 128 x 128 tiles, a 3-stage cp.async pipeline into the same
//    swizzled layout, ldmatrix + mma.sync.m16n8k32.s8, 8 warps of 64 x 32.
// Out-of-range rows and K columns are loaded as zeros (TMA's out-of-bounds fill, cp.async's zero fill), so M is
// arbitrary; the epilogue skips (or TMA clips) rows >= M and columns >= N.
#include <string.h>
#include "int8_gemm.cuh"
#include "wgmma_gemm.cuh"

typedef __nv_bfloat16 bf16;

// ------------------------------------------------------------------------------------------------ epilogue
// Both kernels own pairs of adjacent output columns: col is even and N % 16 == 0, so col + 1 < N too.
// sa = s_a[row]; sb_t = s_b[0] (tensor-wise); p = (bias, s_b) of columns col and col + 1. OUT (= g.out_type) is a
// template parameter so that each kernel's unrolled epilogue holds one output path only.

// (bias, s_b) of columns col, col + 1 from global memory (zeros past N: those outputs are never stored).
__device__ inline float4 column_params(const Int8Gemm &g, float sb_t, int col) {
    float4 p = make_float4(0.0f, sb_t, 0.0f, sb_t);
    if (col >= g.N) return p;
    if (g.bias) {
        float2 b = __bfloat1622float2(__ldg((const __nv_bfloat162 *)(g.bias + col)));
        p.x = b.x, p.z = b.y;
    }
    if (g.b_scale_per_col) p.y = __ldg(g.b_scale + col), p.w = __ldg(g.b_scale + col + 1);
    return p;
}

// Direct store of one pair to global memory (any output type, accumulation).
template <int OUT>
__device__ inline void store2(const Int8Gemm &g, int row, float sa, float4 p, int col, int v0, int v1) {
    if (row >= g.M || col >= g.N) return;
    size_t idx = (size_t)row * g.N + col;
    if (OUT == INT8_OUT_I32) {
        *(int2 *)((int32_t *)g.out + idx) = make_int2(v0, v1);
        return;
    }
    float y0 = sb_dequant_acc(v0, sa, p.y, p.x), y1 = sb_dequant_acc(v1, sa, p.w, p.z);
    if (OUT == INT8_OUT_F32) {
        float2 *o = (float2 *)((float *)g.out + idx);
        if (g.accumulate) {
            float2 old = *o;
            y0 += old.x, y1 += old.y;
        }
        *o = make_float2(y0, y1);
    } else {
        __nv_bfloat162 *o = (__nv_bfloat162 *)((bf16 *)g.out + idx);
        if (g.accumulate) {
            float2 old = __bfloat1622float2(*o);
            y0 += old.x, y1 += old.y;
        }
        *o = __floats2bfloat162_rn(y0, y1);
    }
}

template <int OUT> __device__ inline float row_scale(const Int8Gemm &g, int row) {
    return (OUT != INT8_OUT_I32 && row < g.M) ? __ldg(g.a_scale + row) : 0.0f;
}
template <int OUT> __device__ inline float tensor_scale(const Int8Gemm &g) {
    return (OUT != INT8_OUT_I32 && !g.b_scale_per_col) ? __ldg(g.b_scale) : 0.0f;
}

// Shared-memory tile layout of both kernels: rows of 128 bytes (128 int8 of K); 16-byte chunk c of row r is
// stored at chunk c ^ (r % 8). This is TMA's CU_TENSOR_MAP_SWIZZLE_128B pattern (which XORs address bits 4-6
// with bits 7-9, hence 1024-byte aligned tiles), and it makes ldmatrix on 8 rows conflict-free.
__device__ inline uint32_t swz(int row, int chunk) { return row * 128 + ((chunk ^ (row & 7)) << 4); }

// ------------------------------------------------------------------------------------------------ sm_90a
// wgmma_gemm.cuh's kernel on int8 operands. The tile is 128 x BN, BN = 256 or 128 (int8_gemm picks by shape:
// int8_gemm_tile_width), with as many stages as fit: 4 (226.6 KB) at BN = 256, 6 (225.6 KB) at BN = 128. The
// loader warp puts (bias, s_b) of the tile's columns and s_a of its rows in shared memory (p: BN float2, then 128
// floats; zeros past N and M).
template <int OUT, int W> struct Int8Op {
    typedef int8_t Elem;
    typedef int Acc;
    static constexpr int BN = W, STAGES = W == 256 ? 4 : 6, P_BYTES = W * 8 + WGMMA_BM * 4;
    CUtensorMap tma_y;  // bf16 out in boxes of 16 x 64 (unused for other outputs and when accumulating)
    Int8Gemm g;
    int M, N, K;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// One wgmma.m64n<W>k32.s32.s8.s8. ACC: the accumulator's operands in the instruction, ...: their constraints; A, B, P:
// the numbers of the operands desc_a, desc_b and accumulate, which come after the accumulator's.
#define WGMMA_S8(W, ACC, A, B, P, ...)                                                                        \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #P ", 0;\n"                                            \
                 "wgmma.mma_async.sync.aligned.m64n" #W "k32.s32.s8.s8 {" ACC "}, %" #A ", %" #B ", p;\n}\n" \
                 : __VA_ARGS__                                                                                \
                 : "l"(desc_a), "l"(desc_b), "r"(accumulate))
    // d (64 x BN s32) (+)= A (64 x 32 s8) . B (BN x 32 s8)^T with the wgmma of that width.
    __device__ void mma(int (&d)[BN / 2], uint64_t desc_a, uint64_t desc_b, int accumulate) const {
        if constexpr (BN == 256) WGMMA_S8(256, WG_ACC128, 128, 129, 130, WG_D64("+r", 0), WG_D64("+r", 64));
        else WGMMA_S8(128, WG_ACC64, 64, 65, 66, WG_D64("+r", 0));
    }
#undef WGMMA_S8

    __device__ void load_params(uint8_t *p, int m0, int n0, int lane) const {
        if (OUT == INT8_OUT_I32) return;
        float *p_col = (float *)p, *p_row = p_col + 2 * BN, sb_t = tensor_scale<OUT>(g);
#pragma unroll
        for (int i = 0; i < BN / 32; i++) {
            int c = lane + 32 * i, col = n0 + c;
            float bias = 0.0f, sbc = 0.0f;
            if (col < N) {
                bias = g.bias ? __bfloat162float(__ldg(g.bias + col)) : 0.0f;
                sbc = g.b_scale_per_col ? __ldg(g.b_scale + col) : sb_t;
            }
            *(float2 *)(p_col + 2 * c) = make_float2(bias, sbc);
        }
#pragma unroll
        for (int i = 0; i < WGMMA_BM / 32; i++) p_row[lane + 32 * i] = row_scale<OUT>(g, m0 + lane + 32 * i);
    }

    // bf16 output through the staging buffers: the warp's 16 rows x BN columns leave as BN / 64 boxes of 16 x 64.
    // sa0, sa1: s_a of the thread's rows; PER_COL 0: s_b is tensor-wise (p_col[1], that of the tile's first
    // column, which is < N), so the multiplier is computed once per row.
    template <int PER_COL>
    __device__ void epilogue_tma(const int (&acc)[BN / 2], const float *p_col, float sa0, float sa1, uint8_t *bufs,
                                 int &round, int row0, int rows_in, int n0, int lane) const {
        float m0 = sb_dequant_scale(sa0, p_col[1]), m1 = sb_dequant_scale(sa1, p_col[1]);
#pragma unroll
        for (int b = 0; b < BN / WGMMA_Y_BOX_COLS; b++) {
            float4 pb[8];  // (bias, s_b) of the thread's 2 columns in each 8-column group, loaded first (measured: +2-3%)
#pragma unroll
            for (int jj = 0; jj < 8; jj++) pb[jj] = *(const float4 *)(p_col + 2 * (8 * (8 * b + jj) + 2 * (lane % 4)));
            uint32_t r[4][4];
#pragma unroll
            for (int jp = 0; jp < 4; jp++) {
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int j = 8 * b + 2 * jp + h;
                    float4 q = pb[2 * jp + h];
                    float m00 = m0, m01 = m0, m10 = m1, m11 = m1;
                    if (PER_COL)
                        m00 = sb_dequant_scale(sa0, q.y), m01 = sb_dequant_scale(sa0, q.w),
                        m10 = sb_dequant_scale(sa1, q.y), m11 = sb_dequant_scale(sa1, q.w);
                    r[jp][2 * h] = pack_bf16(fmaf((float)acc[4 * j], m00, q.x), fmaf((float)acc[4 * j + 1], m01, q.z));
                    r[jp][2 * h + 1] = pack_bf16(fmaf((float)acc[4 * j + 2], m10, q.x), fmaf((float)acc[4 * j + 3], m11, q.z));
                }
            }
            int col = n0 + b * WGMMA_Y_BOX_COLS;
            store_box(r, bufs, round, &tma_y, col, row0, rows_in && col < N, lane);
        }
    }

    __device__ void epilogue(const int (&acc)[BN / 2], const uint8_t *p, uint8_t *bufs, int &round, int m0, int n0, int c,
                             int warp, int lane) const {
        const float *p_col = (const float *)p, *p_row = p_col + 2 * BN;
        int rl = warp * 16 + lane / 4, r0 = m0 + c * 64 + rl;
        float sa0 = p_row[c * 64 + rl], sa1 = p_row[c * 64 + rl + 8];
        if (OUT == INT8_OUT_BF16 && !g.accumulate) {
            int row0 = m0 + c * 64 + warp * 16, rows_in = row0 < M;
            if (g.b_scale_per_col) epilogue_tma<1>(acc, p_col, sa0, sa1, bufs, round, row0, rows_in, n0, lane);
            else epilogue_tma<0>(acc, p_col, sa0, sa1, bufs, round, row0, rows_in, n0, lane);
        } else {
#pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                int cl = 8 * j + 2 * (lane % 4);
                float4 q = *(const float4 *)(p_col + 2 * cl);
                store2<OUT>(g, r0, sa0, q, n0 + cl, acc[4 * j], acc[4 * j + 1]);
                store2<OUT>(g, r0 + 8, sa1, q, n0 + cl, acc[4 * j + 2], acc[4 * j + 3]);
            }
        }
    }
#endif
};

// ------------------------------------------------------------------------------------------------ sm_80
#define MM_BM 128
#define MM_BN 128
#define MM_BK 128
#define MM_STAGES 3
#define MM_STAGE_BYTES ((MM_BM + MM_BN) * MM_BK)
#define MM_SMEM (MM_STAGES * MM_STAGE_BYTES)  // 96 KB

// d (16 x 8 s32) += a (16 x 32 s8, row) . b (32 x 8 s8, col)
__device__ inline void mma_s8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// One stage: A rows m0.., B rows n0.., K columns k0..k0+127; 256 threads x 4 chunks of 16 bytes each operand.
__device__ inline void mma_load_stage(uint32_t sa, uint32_t sb, const Int8Gemm &g, int m0, int n0, int k0) {
    for (int i = 0; i < 4; i++) {
        int id = threadIdx.x + 256 * i, r = id / 8, ch = id % 8, k = k0 + ch * 16;
        bool va = k < g.K && m0 + r < g.M, vb = k < g.K && n0 + r < g.N;
        cp_async16(sa + swz(r, ch), va ? g.a + (size_t)(m0 + r) * g.K + k : g.a, va ? 16 : 0);
        cp_async16(sb + swz(r, ch), vb ? g.b + (size_t)(n0 + r) * g.K + k : g.b, vb ? 16 : 0);
    }
}

template <int OUT> __global__ void __launch_bounds__(256) int8_gemm_mma_kernel(const Int8Gemm g) {
    extern __shared__ __align__(128) uint8_t smem_mm[];
    uint32_t base = smem_u32(smem_mm);  // stage s: A (128, 128) at s * 32 KB, B (128, 128) 16 KB after it
    int m0 = blockIdx.y * MM_BM, n0 = blockIdx.x * MM_BN;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int wm = warp / 4 * 64, wn = warp % 4 * 32;  // this warp's 64 x 32 block of the tile
    int ktiles = (g.K + MM_BK - 1) / MM_BK;
    int acc[4][4][4] = {};  // [16-row tile][8-column tile][mma fragment]

    for (int s = 0; s < MM_STAGES - 1; s++) {
        if (s < ktiles) mma_load_stage(base + s * MM_STAGE_BYTES, base + s * MM_STAGE_BYTES + MM_BM * MM_BK, g, m0, n0, s * MM_BK);
        cp_async_commit();  // always commit, so that wait_group counts stay uniform
    }
    for (int kt = 0; kt < ktiles; kt++) {
        cp_async_wait<MM_STAGES - 2>();
        __syncthreads();  // stage kt is visible to all; everyone is done with stage kt - 1, refilled next
        int next = kt + MM_STAGES - 1;
        uint32_t sn = base + next % MM_STAGES * MM_STAGE_BYTES;
        if (next < ktiles) mma_load_stage(sn, sn + MM_BM * MM_BK, g, m0, n0, next * MM_BK);
        cp_async_commit();
        uint32_t sa = base + kt % MM_STAGES * MM_STAGE_BYTES, sb = sa + MM_BM * MM_BK;
#pragma unroll
        for (int ks = 0; ks < MM_BK / 32; ks++) {
            // ldmatrix.x4: lanes 8q..8q+7 address the rows of matrix q. A: q = (row half, k half) -> a0..a3;
            // B: q = (k half, n half) -> (b0, b1) of 8-column tile 2p, then of 2p + 1.
            uint32_t af[4][4], bfr[2][4];
#pragma unroll
            for (int mt = 0; mt < 4; mt++) ldmatrix_x4(af[mt], sa + swz(wm + mt * 16 + lane % 16, ks * 2 + lane / 16));
#pragma unroll
            for (int p = 0; p < 2; p++)
                ldmatrix_x4(bfr[p], sb + swz(wn + p * 16 + lane / 16 * 8 + lane % 8, ks * 2 + lane / 8 % 2));
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++) mma_s8(acc[mt][nt], af[mt], bfr[nt / 2][nt % 2 * 2], bfr[nt / 2][nt % 2 * 2 + 1]);
        }
    }

    // mma accumulator layout: d0, d1 at row lane / 4, columns 2 (lane % 4) + 0, 1; d2, d3 eight rows below.
    float sb_t = tensor_scale<OUT>(g);
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
        int r0 = m0 + wm + mt * 16 + lane / 4;
        float sa0 = row_scale<OUT>(g, r0), sa1 = row_scale<OUT>(g, r0 + 8);
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            int col = n0 + wn + nt * 8 + 2 * (lane % 4);
            float4 p = OUT == INT8_OUT_I32 ? make_float4(0.0f, 0.0f, 0.0f, 0.0f) : column_params(g, sb_t, col);
            store2<OUT>(g, r0, sa0, p, col, acc[mt][nt][0], acc[mt][nt][1]);
            store2<OUT>(g, r0 + 8, sa1, p, col, acc[mt][nt][2], acc[mt][nt][3]);
        }
    }
}

// ------------------------------------------------------------------------------------------------ host
static void check_args(const Int8Gemm *g) {
    const char *why = NULL;
    if (g->M < 1 || g->N < 16 || g->K < 16) why = "M >= 1, N >= 16 and K >= 16 are needed";
    else if (g->N % 16 || g->K % 16) why = "N and K must be multiples of 16";
    else if ((uintptr_t)g->a % 16 || (uintptr_t)g->b % 16 || (uintptr_t)g->out % 8) why = "a and b must be 16-byte aligned, out 8-byte aligned";
    else if (g->out_type != INT8_OUT_I32 && (!g->a_scale || !g->b_scale)) why = "a_scale and b_scale are needed";
    if (why) {
        fatal("int8_gemm (M %d, N %d, K %d): %s", g->M, g->N, g->K, why);
    }
}

template <int OUT, int BN> static void launch_wgmma(const Int8Gemm *g, cudaStream_t stream) {
    Int8Op<OUT, BN> op;
    CUtensorMap ta = make_tensor_map(g->a, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, g->M, g->K, WGMMA_BM, WGMMA_K_BYTES);
    CUtensorMap tb = make_tensor_map(g->b, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, g->N, g->K, BN / WGMMA_CLUSTER, WGMMA_K_BYTES);
    // bf16 output without accumulation leaves through TMA stores; other outputs are stored directly (ta: unused).
    op.tma_y = OUT == INT8_OUT_BF16 && !g->accumulate
                   ? make_tensor_map(g->out, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g->M, g->N, WGMMA_Y_BOX_ROWS, WGMMA_Y_BOX_COLS)
                   : ta;
    op.g = *g, op.M = g->M, op.N = g->N, op.K = g->K;
    wgmma_gemm_launch(op, ta, tb, "int8_gemm", stream);
}

// The tile width by shape: 128 where the busiest cluster finishes sooner with it, counting ceil(items / clusters)
// tiles per cluster and a 128-wide tile as 0.6 of a 256-wide one (half the math, but the same A bytes per k-tile
// and epilogue rows). The last wave of a small problem is where it pays: the ViT-H/14 text tower's N = 1024
// (4,928 rows: 80 wide items on 66 clusters, 2 rounds; 160 narrow ones, 3 rounds of 0.6).
int int8_gemm_tile_width(const Int8Gemm *g) {
    int clusters = wgmma_gemm_clusters<Int8Op<INT8_OUT_BF16, 256>>("int8_gemm");  // the same for every output type
    double wide = ceil_div(wgmma_gemm_items(g->M, g->N, 256), clusters);
    double narrow = 0.6 * ceil_div(wgmma_gemm_items(g->M, g->N, 128), clusters);
    return narrow < wide ? 128 : 256;
}

template <int OUT> static void launch(const Int8Gemm *g, Int8GemmPath path, cudaStream_t stream) {
    if (path == INT8_PATH_WGMMA) path = int8_gemm_tile_width(g) == 128 ? INT8_PATH_WGMMA_N128 : INT8_PATH_WGMMA_N256;
    if (path == INT8_PATH_WGMMA_N256) {
        launch_wgmma<OUT, 256>(g, stream);
    } else if (path == INT8_PATH_WGMMA_N128) {
        launch_wgmma<OUT, 128>(g, stream);
    } else {
        static int smem_set = 0;  // the dynamic shared-memory limit is raised once per kernel
        if (!smem_set) {
            cudaCheck(cudaFuncSetAttribute(int8_gemm_mma_kernel<OUT>, cudaFuncAttributeMaxDynamicSharedMemorySize, MM_SMEM));
            smem_set = 1;
        }
        int8_gemm_mma_kernel<OUT><<<dim3(ceil_div(g->N, MM_BN), ceil_div(g->M, MM_BM)), 256, MM_SMEM, stream>>>(*g);
    }
    cudaCheckLaunch();
}

void int8_gemm_path(const Int8Gemm *g, Int8GemmPath path, cudaStream_t stream) {
    check_args(g);
    // SB_INT8_GEMM in the environment picks the kernel that int8_gemm runs (debugging, measurements): mma (the
    // portable kernel everywhere), n256 or n128 (the wgmma kernel with that tile width for every shape).
    static Int8GemmPath forced = (Int8GemmPath)-1;
    if ((int)forced < 0) {
        const char *e = getenv("SB_INT8_GEMM");
        forced = !e                       ? INT8_PATH_AUTO
                 : strcmp(e, "mma") == 0  ? INT8_PATH_MMA
                 : strcmp(e, "n256") == 0 ? INT8_PATH_WGMMA_N256
                 : strcmp(e, "n128") == 0 ? INT8_PATH_WGMMA_N128
                                          : INT8_PATH_AUTO;
    }
    if (path == INT8_PATH_AUTO) path = forced != INT8_PATH_AUTO ? forced : hopper_code_runs() ? INT8_PATH_WGMMA : INT8_PATH_MMA;
    if (path != INT8_PATH_MMA && !hopper_code_runs()) {
        fatal("int8_gemm: the wgmma kernel needs an sm_90 GPU and a build with sm_90a code");
    }
    switch (g->out_type) {
    case INT8_OUT_BF16: launch<INT8_OUT_BF16>(g, path, stream); break;
    case INT8_OUT_F32: launch<INT8_OUT_F32>(g, path, stream); break;
    case INT8_OUT_I32: launch<INT8_OUT_I32>(g, path, stream); break;
    }
}

void int8_gemm(const Int8Gemm *g, cudaStream_t stream) { int8_gemm_path(g, INT8_PATH_AUTO, stream); }
