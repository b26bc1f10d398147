// hopper.cuh: the sm_90a building blocks of the hand-written GEMM kernel (wgmma_gemm.cuh) and of the wgmma attention
// kernels (attention.cu): mbarriers, TMA loads and stores (tensor maps of row-major matrices in 128-byte-swizzled
// boxes), cluster barriers, wgmma descriptors and fences, stmatrix. The device helpers exist only where the compiler
// targets sm_90a, except smem_u32, pack_bf16 and the cp.async and ldmatrix helpers that the sm_80 kernels share.
#pragma once
#include <cuda.h>  // CUtensorMap and its enums (types only; the encoder is fetched through the runtime)
#include "cuda_utils.cuh"

// 1 when the current GPU runs this build's sm_90a code: an sm_90 GPU and a build with sm_90a code (the Makefile's
// default). The wgmma / TMA kernels (bf16_gemm, int8_gemm's wgmma path, the wgmma attention) run only then; their
// callers use the sm_80 kernels or cuBLASLt otherwise. Asked once per process (hopper.cu).
int hopper_code_runs(void);

__device__ inline uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
// Two floats as a bf16 pair (lo in the low half), each rounded to nearest even.
__device__ inline uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}
// cp.async (sm_80 and up): 16 bytes from global memory to the shared address dst; src_bytes 0 fills zeros.
__device__ inline void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ inline void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
// Four 8x8 16-bit matrices from the shared address addr (each lane passes one row's address), as they are or transposed.
__device__ inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
__device__ inline void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ inline void mbar_init(uint64_t *bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ inline void mbar_arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}
__device__ inline void mbar_expect_tx(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
// Arrives on the barrier at the same shared-memory offset in CTA `rank` of the cluster (this CTA included).
// Default (cta-scope release) semantics: a cluster-scope release would cost a GPU-wide memory barrier per arrive,
// and the stage's readers (wgmma) have already completed.
__device__ inline void mbar_arrive_cluster(uint64_t *bar, uint32_t rank) {
    asm volatile("{ .reg .b32 a; mapa.shared::cluster.u32 a, %0, %1; mbarrier.arrive.shared::cluster.b64 _, [a]; }" ::"r"(
                     smem_u32(bar)),
                 "r"(rank)
                 : "memory");
}
// The same barrier in every one of the cluster's first `ctas` CTAs (a consumer releasing a stage all of them fill).
__device__ inline void mbar_arrive_cluster_all(uint64_t *bar, int ctas) {
    for (int r = 0; r < ctas; r++) mbar_arrive_cluster(bar, r);
}
// Waits until the phase with this parity has completed (a fresh barrier counts its phase "1" as completed).
__device__ inline void mbar_wait(uint64_t *bar, uint32_t parity) {
    uint32_t done = 0;
    while (!done) {
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                     : "=r"(done)
                     : "r"(smem_u32(bar)), "r"(parity)
                     : "memory");
    }
}
__device__ inline uint32_t cluster_rank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ inline void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// Box at (inner coordinate k, row) of a 2D tensor map -> dst; completion counted in bytes on bar.
__device__ inline void tma_load_2d(void *dst, const CUtensorMap *map, int k, int row, uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
            smem_u32(dst)),
        "l"((uint64_t)map), "r"(k), "r"(row), "r"(smem_u32(bar))
        : "memory");
}
// The same box written to this offset of shared memory in every CTA of mask, completing on each one's bar.
__device__ inline void tma_load_2d_multicast(void *dst, const CUtensorMap *map, int k, int row, uint64_t *bar, uint16_t mask) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
                 " [%0], [%1, {%2, %3}], [%4], %5;" ::"r"(smem_u32(dst)),
                 "l"((uint64_t)map), "r"(k), "r"(row), "r"(smem_u32(bar)), "h"(mask)
                 : "memory");
}
// Shared memory -> the box at (col, row) of a tensor map (clipped at its edges); one bulk group per commit.
__device__ inline void tma_store_2d(const CUtensorMap *map, const void *src, int col, int row) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];" ::"l"((uint64_t)map),
                 "r"(col), "r"(row), "r"(smem_u32(src))
                 : "memory");
}
__device__ inline void bulk_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
// The newest bulk group may still be reading shared memory; all older ones have finished reading.
__device__ inline void bulk_wait_read1() { asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory"); }
__device__ inline void bulk_wait() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
// Orders this thread's ordinary shared-memory stores before later async-proxy (TMA) reads of them.
__device__ inline void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
// Stores four 8 x 8 b16 matrices from the mma accumulator fragment layout (register k: matrix k, lane l holding
// row l / 4, columns 2 (l % 4) and + 1); lane l gives the shared address of row l % 8 of matrix l / 8.
__device__ inline void stmatrix_x4(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(r0), "r"(r1), "r"(r2),
                 "r"(r3)
                 : "memory");
}

// wgmma descriptor of a K-major operand in shared memory as TMA writes it with 128-byte swizzle (rows of 128 bytes,
// 16-byte chunk c of row r at chunk c ^ (r % 8), 1024-byte aligned 8-row groups): start address >> 4 (bits 0-13),
// leading byte offset unused for swizzled K-major (1, bits 16-29), stride byte offset = 1024 between 8-row groups
// (bits 32-45), layout type 1 = 128-byte swizzle (bits 62-63).
__device__ inline uint64_t wgmma_desc(uint32_t addr) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | (1ull << 16) | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}
__device__ inline void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ inline void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ inline void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }
// Keeps the compiler from moving accumulator reads/writes across the asynchronous wgmma.
template <int R> __device__ inline void fence_regs(int (&d)[R]) {
#pragma unroll
    for (int i = 0; i < R; i++) asm volatile("" : "+r"(d[i])::"memory");
}
template <int R> __device__ inline void fence_regs(float (&d)[R]) {
#pragma unroll
    for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i])::"memory");
}
// The attention kernels' accumulators: R fragments of 4.
template <int R> __device__ inline void fence_regs(float (&d)[R][4]) {
#pragma unroll
    for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])::"memory");
}
#endif

// The wgmma's accumulator operands, spelled once for both widths: "%0, ..., %63" (WG_ACC64; WG_ACC128 goes on to
// %127) in the instruction and C(d[i]) as 64 constraints from d[i] (WG_D64; C = "+r" for s32, "+f" for f32).
#define WG_ACC64 \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31," \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47," \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define WG_ACC128 \
    WG_ACC64 "," \
    "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79," \
    "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95," \
    "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111," \
    "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define WG_D8(C, i) C(d[i]), C(d[i + 1]), C(d[i + 2]), C(d[i + 3]), C(d[i + 4]), C(d[i + 5]), C(d[i + 6]), C(d[i + 7])
#define WG_D64(C, i) WG_D8(C, i), WG_D8(C, i + 8), WG_D8(C, i + 16), WG_D8(C, i + 24), WG_D8(C, i + 32), WG_D8(C, i + 40), \
    WG_D8(C, i + 48), WG_D8(C, i + 56)

typedef CUresult (*TensorMapEncodeTiled)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                         const cuuint64_t *, const cuuint32_t *, const cuuint32_t *,
                                         CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion,
                                         CUtensorMapFloatOOBfill);

// Tensor map of a row-major (rows, cols) matrix read or written in boxes of (box_rows, box_cols), where a box row
// is 128 bytes and shared memory holds it 128-byte-swizzled.
static inline CUtensorMap make_tensor_map(const void *p, CUtensorMapDataType type, int elem_bytes, int rows, int cols,
                                   int box_rows, int box_cols) {
    static TensorMapEncodeTiled encode = NULL;
    if (!encode) {
        cudaDriverEntryPointQueryResult q;
        cudaCheck(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", (void **)&encode, 12000, cudaEnableDefault, &q));
        if (q != cudaDriverEntryPointSuccess || !encode) {
            fatal("tensor map: the driver has no cuTensorMapEncodeTiled");
        }
    }
    CUtensorMap map;
    cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows}, strides[1] = {(cuuint64_t)cols * elem_bytes};
    cuuint32_t box[2] = {(cuuint32_t)box_cols, (cuuint32_t)box_rows}, elem_strides[2] = {1, 1};
    CUresult r = encode(&map, type, 2, (void *)p, dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                        CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        fatal("cuTensorMapEncodeTiled failed (CUresult %d) for (%d, %d)", (int)r, rows, cols);
    }
    return map;
}
