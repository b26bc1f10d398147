// layernorm.cu: LayerNorm forward fused with the residual add, backward, and the layer-scale branch
// gradient (see layernorm.cuh). One warp per row; lane l owns the vectors at columns (j * 32 + l) * V, and the
// per-column parameters beside them are loaded as vectors too (one scalar load per element made the L1 requests
// the limit). In the forward, rows of up to LN_MAX_VECS vectors per lane (C <= 1280 in bf16) stay in registers
// (NV > 0) and each input is read once; other widths (NV = 0) re-read the row from L1. The backward runs as one
// wave of blocks, each striding over its rows LN_BWD_WARPS at a time with the group's rows of dout and inp staged
// in shared memory, and sums in the same pass the columns the gradients need: its own weight and bias gradients
// and, for the residual branch below it (BranchGrads), the next linear's bias and layer-scale gradients. A thread
// keeps the sums of one column vector in registers where the width allows (NV > 0), else they go through shared
// memory; colsum_finish_gpu (reduce.cuh) adds the blocks' partial sums. Both can also emit their result quantized
// row-wise for SwitchBack (an extra pass over the row). (Slower: a sum per warp in shared memory, 4 C bytes each,
// which at C = 1280 left 40 warps per SM.)
#include "layernorm.cuh"
#include "quantize.cuh"
#include "reduce.cuh"

#define LN_EPS 1e-5f
#define ROWS_PER_BLOCK 8
#define LN_MAX_VECS 5
#ifndef LN_BWD_WARPS
#define LN_BWD_WARPS 8  // the backward's rows per group: warps per block
#endif
#ifndef LN_BWD_MIN_BLOCKS
#define LN_BWD_MIN_BLOCKS 2  // blocks per SM the backward's register use must allow (2: at most 128 registers)
#endif
#ifndef LN_FWD_MIN_BLOCKS
#define LN_FWD_MIN_BLOCKS 1  // the same for the forward (blocks of 32 * ROWS_PER_BLOCK threads)
#endif

// y = (x - m) * s * w + b for the V columns at c
template <typename T, int V>
__device__ __forceinline__ Vec<T, V> ln_apply(Vec<T, V> x, float m, float s, const float *w, const float *b, int c) {
    Vec<float, V> wv = load_floats<V>(w + c), bv = load_floats<V>(b + c);
    Vec<T, V> y;
    for (int i = 0; i < V; i++) y.v[i] = from_float<T>((to_float(x.v[i]) - m) * s * wv.v[i] + bv.v[i]);
    return y;
}

// recompute = 1: mean/rstd are read instead of computed (x is the LayerNorm input, f unused). out and q (with qs)
// are each optional.
template <typename T, int V, int NV>
__global__ void __launch_bounds__(32 * ROWS_PER_BLOCK, LN_FWD_MIN_BLOCKS)
    residual_layernorm_forward_kernel(T *res, T *out, int8_t *q, float *qs, float *mean, float *rstd, const T *x, const T *f,
                                      const float *ls, const float *w, const float *b, int N, int C, int recompute) {
    int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    size_t off = (size_t)row * C;
    int nvec = NV > 0 ? NV : (C / V + 31 - lane) / 32;  // vectors of this lane
    Vec<T, V> keep[NV > 0 ? NV : 1];
    float m, s;
    if (recompute) {
        m = mean[row], s = rstd[row];
    } else {
        // pass 1: the residual sum (stored rounded to T, so backward sees the same values) and its mean
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < nvec; j++) {
            int c = (j * 32 + lane) * V;
            Vec<T, V> xv = load_vec<T, V>(x + off + c);
            if (f) {
                Vec<T, V> fv = load_vec<T, V>(f + off + c);
                Vec<float, V> lv;
                if (ls) lv = load_floats<V>(ls + c);
                for (int i = 0; i < V; i++)
                    xv.v[i] = from_float<T>(to_float(xv.v[i]) + (ls ? lv.v[i] : 1.0f) * to_float(fv.v[i]));
                store_vec<T, V>(res + off + c, xv);
            }
            if (NV > 0) keep[j] = xv;
            for (int i = 0; i < V; i++) sum += to_float(xv.v[i]);
        }
        if (!w) return;
        if (f) x = res;  // re-reads see the rounded sum this lane wrote
        m = warp_sum(sum) / C;
        // pass 2: variance about the mean (two-pass, as the reference)
        float var = 0.0f;
#pragma unroll
        for (int j = 0; j < nvec; j++) {
            Vec<T, V> xv = NV > 0 ? keep[j] : load_vec<T, V>(x + off + (j * 32 + lane) * V);
            for (int i = 0; i < V; i++) {
                float d = to_float(xv.v[i]) - m;
                var += d * d;
            }
        }
        s = 1.0f / sqrtf(warp_sum(var) / C + LN_EPS);
        if (lane == 0) mean[row] = m, rstd[row] = s;
    }
    // pass 3: normalise, scale, shift (the outputs stay in keep for the quantizer)
    float am = 0.0f;
#pragma unroll
    for (int j = 0; j < nvec; j++) {
        int c = (j * 32 + lane) * V;
        Vec<T, V> xv = NV > 0 && !recompute ? keep[j] : load_vec<T, V>(x + off + c);
        Vec<T, V> y = ln_apply<T, V>(xv, m, s, w, b, c);
        if (out) store_vec<T, V>(out + off + c, y);
        if (q)
            for (int i = 0; i < V; i++) am = fmaxf(am, fabsf(to_float(y.v[i])));
        if (NV > 0) keep[j] = y;
    }
    if (!q) return;
    // pass 4: the outputs quantized row-wise for SwitchBack (quantize.cuh's formulas; the re-reading path
    // recomputes them, bit-identically)
    am = warp_max(am);
    float mult = sb_quant_mult(am);
#pragma unroll
    for (int j = 0; j < nvec; j++) {
        int c = (j * 32 + lane) * V;
        Vec<T, V> y = NV > 0 ? keep[j] : ln_apply<T, V>(load_vec<T, V>(x + off + c), m, s, w, b, c);
        Vec<int8_t, V> qv;
        for (int i = 0; i < V; i++) qv.v[i] = sb_quantize(to_float(y.v[i]), mult);
        store_vec<int8_t, V>(q + off + c, qv);
    }
    if (lane == 0) qs[row] = am;
}

// dinp += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * w; one warp per row, the block's
// LN_BWD_WARPS warps taking its rows_per_block rows (one wave of blocks) a group of LN_BWD_WARPS at a time.
// The column sums ride along, over the block's rows, into partial (reduce.cuh's layout, chunk = block): o = 0 the
// weight gradient dout * xhat, o = 1 the bias gradient dout; with BranchGrads (NOUT > 0) o = 2 round(dinp * ls) (ls
// NULL: the new dinp, rounded to T), o = 3 (NOUT 2, with ls) dinp * f. Each group's rows of dout, inp and dinp are
// loaded together (one DRAM round trip a row, not two) and staged in shared memory (exact: T values), the new dinp
// over the old; then each thread adds its columns' group sums, in row order, to the block's sums (shared memory
// too: a warp holds nothing across rows, so the rows in flight stay many).
// q (with qs), optional: the new dinp quantized row-wise for SwitchBack (from the stage).
template <typename T, int V, int NV, int NOUT>
__global__ void __launch_bounds__(32 * LN_BWD_WARPS, LN_BWD_MIN_BLOCKS)
    layernorm_backward_kernel(T *dinp, int8_t *q, float *qs, float *partial, const float *ls, const T *f, const T *dout,
                              const T *inp, const float *w, const float *mean, const float *rstd, int N, int C, int rows_per_block) {
    constexpr int S = 2 + NOUT;  // column sums
    static_assert(LN_MAX_VECS <= LN_BWD_WARPS, "NV > 0: a thread sums at most one column vector");
    // the block's sums: NV > 0 (C <= blockDim.x * V) those of the thread's column vector in acc, else S x C in
    // shared memory; then the group's rows of dout, inp (and dinp): LN_BWD_WARPS x C of T each
    extern __shared__ float sums[];
    __shared__ float st_m[LN_BWD_WARPS], st_s[LN_BWD_WARPS];
    T *st_g = (T *)(sums + (NV > 0 ? 0 : S * C)), *st_x = st_g + LN_BWD_WARPS * C, *st_d = st_x + LN_BWD_WARPS * C;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int nvec = NV > 0 ? NV : (C / V + 31 - lane) / 32;  // vectors of this lane
    float acc[S][V];
    for (int o = 0; o < S; o++)
        for (int i = 0; i < V; i++) acc[o][i] = 0.0f;
    if (NV == 0)
        for (int c = threadIdx.x; c < S * C; c += blockDim.x) sums[c] = 0.0f;
    int r_end = min(N, (blockIdx.x + 1) * rows_per_block);
    for (int r0 = blockIdx.x * rows_per_block; r0 < r_end; r0 += LN_BWD_WARPS) {
        int row = r0 + warp;
        if (row < r_end) {
            size_t off = (size_t)row * C;
            float m = mean[row], s = rstd[row], sum_d = 0.0f, sum_dx = 0.0f;
#pragma unroll
            for (int j = 0; j < nvec; j++) {
                int c = (j * 32 + lane) * V;
                Vec<T, V> g = load_vec<T, V>(dout + off + c), x = load_vec<T, V>(inp + off + c), d = load_vec<T, V>(dinp + off + c);
                Vec<float, V> wv = load_floats<V>(w + c);
                for (int i = 0; i < V; i++) {
                    float xhat = (to_float(x.v[i]) - m) * s, dxhat = to_float(g.v[i]) * wv.v[i];
                    sum_d += dxhat, sum_dx += dxhat * xhat;
                }
                store_vec<T, V>(st_g + warp * C + c, g), store_vec<T, V>(st_x + warp * C + c, x), store_vec<T, V>(st_d + warp * C + c, d);
            }
            if (lane == 0) st_m[warp] = m, st_s[warp] = s;
            sum_d = warp_sum(sum_d) / C, sum_dx = warp_sum(sum_dx) / C;
            float am = 0.0f;
#pragma unroll
            for (int j = 0; j < nvec; j++) {
                int c = (j * 32 + lane) * V;
                Vec<T, V> g = load_vec<T, V>(st_g + warp * C + c), x = load_vec<T, V>(st_x + warp * C + c);
                Vec<T, V> d = load_vec<T, V>(st_d + warp * C + c);
                Vec<float, V> wv = load_floats<V>(w + c);
                for (int i = 0; i < V; i++) {
                    float xhat = (to_float(x.v[i]) - m) * s;
                    d.v[i] = from_float<T>(to_float(d.v[i]) + s * (to_float(g.v[i]) * wv.v[i] - sum_d - xhat * sum_dx));
                    am = fmaxf(am, fabsf(to_float(d.v[i])));
                }
                store_vec<T, V>(dinp + off + c, d);
                if (NOUT || q) store_vec<T, V>(st_d + warp * C + c, d);  // read again by the column sums and the quantizer
            }
            if (q) {
                am = warp_max(am);
                float mult = sb_quant_mult(am);
#pragma unroll
                for (int j = 0; j < nvec; j++) {
                    int c = (j * 32 + lane) * V;
                    Vec<T, V> d = load_vec<T, V>(st_d + warp * C + c);
                    Vec<int8_t, V> qv;
                    for (int i = 0; i < V; i++) qv.v[i] = sb_quantize(to_float(d.v[i]), mult);
                    store_vec<int8_t, V>(q + off + c, qv);
                }
                if (lane == 0) qs[row] = am;
            }
        }
        __syncthreads();
        // the group's column sums; the branch's as the unfused passes would read them (the branch gradient as
        // layerscale_backward writes it, and dinp * f)
        int n = min(LN_BWD_WARPS, r_end - r0);
        for (int c = threadIdx.x * V; c < C; c += blockDim.x * V) {
            float a[S][V];
            for (int o = 0; o < S; o++)
                for (int i = 0; i < V; i++) a[o][i] = 0.0f;
            Vec<float, V> lv;
            if (NOUT == 2) lv = load_floats<V>(ls + c);
            for (int y = 0; y < n; y++) {
                Vec<T, V> g = load_vec<T, V>(st_g + y * C + c), x = load_vec<T, V>(st_x + y * C + c), d, fv;
                if (NOUT) d = load_vec<T, V>(st_d + y * C + c);
                if (NOUT == 2) fv = load_vec<T, V>(f + (size_t)(r0 + y) * C + c);
                float m = st_m[y], s = st_s[y];
                for (int i = 0; i < V; i++) {
                    float gi = to_float(g.v[i]);
                    a[0][i] += gi * ((to_float(x.v[i]) - m) * s), a[1][i] += gi;
                    if (NOUT == 2) a[2][i] += to_float(from_float<T>(to_float(d.v[i]) * lv.v[i])), a[3][i] += to_float(d.v[i]) * to_float(fv.v[i]);
                    else if (NOUT) a[2][i] += to_float(d.v[i]);
                }
            }
            for (int o = 0; o < S; o++)
                for (int i = 0; i < V; i++) {
                    if (NV > 0) acc[o][i] += a[o][i];
                    else sums[o * C + c + i] += a[o][i];
                }
        }
        __syncthreads();  // before the next group overwrites the stage
    }
    if (NV > 0) {
        int c = threadIdx.x * V;
        if (c < C)
            for (int o = 0; o < S; o++)
                for (int i = 0; i < V; i++) partial[((size_t)o * gridDim.x + blockIdx.x) * C + c + i] = acc[o][i];
    } else {
        for (int e = threadIdx.x; e < S * C; e += blockDim.x) partial[((size_t)(e / C) * gridDim.x + blockIdx.x) * C + e % C] = sums[e];
    }
}

template <typename T, int V>
__global__ void layerscale_backward_kernel(T *df, const T *dout, const float *ls, size_t n, int C) {
    for (size_t j = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V; j < n; j += (size_t)gridDim.x * blockDim.x * V) {
        Vec<T, V> g = load_vec<T, V>(dout + j), y;
        int c = (int)(j % C);
        for (int i = 0; i < V; i++) y.v[i] = from_float<T>(to_float(g.v[i]) * ls[c + i]);
        store_vec<T, V>(df + j, y);
    }
}

// Vectors per lane for the register path (1 .. LN_MAX_VECS), or 0 for the re-reading path.
static int vecs_per_lane(int C, int V) { return C % (32 * V) == 0 && C / (32 * V) <= LN_MAX_VECS ? C / (32 * V) : 0; }

// Runs the statements given with NV a compile-time constant equal to nv.
#define DISPATCH_NV(nv, ...)                                                                               \
    switch (nv) {                                                                                          \
        case 1: { constexpr int NV = 1; __VA_ARGS__; } break;                                              \
        case 2: { constexpr int NV = 2; __VA_ARGS__; } break;                                              \
        case 3: { constexpr int NV = 3; __VA_ARGS__; } break;                                              \
        case 4: { constexpr int NV = 4; __VA_ARGS__; } break;                                              \
        case 5: { constexpr int NV = 5; __VA_ARGS__; } break;                                              \
        default: { constexpr int NV = 0; __VA_ARGS__; } break;                                             \
    }

template <typename T>
static void launch_forward(T *res, T *out, int8_t *q, float *qs, float *mean, float *rstd, const T *x, const T *f,
                           const float *ls, const float *w, const float *b, int N, int C, int recompute) {
    if (N == 0) return;
    int grid = ceil_div(N, ROWS_PER_BLOCK);
    if (vec_width<T>(C, res, out, x, f) > 1 && vec_width<T>(C, q) > 1 && vec_width<float>(C, w, b, ls) > 1) {
        constexpr int V = 16 / sizeof(T);
        DISPATCH_NV(vecs_per_lane(C, V), (residual_layernorm_forward_kernel<T, V, NV><<<grid, 32 * ROWS_PER_BLOCK>>>(
                                             res, out, q, qs, mean, rstd, x, f, ls, w, b, N, C, recompute)));
    } else {
        DISPATCH_NV(vecs_per_lane(C, 1), (residual_layernorm_forward_kernel<T, 1, NV><<<grid, 32 * ROWS_PER_BLOCK>>>(
                                             res, out, q, qs, mean, rstd, x, f, ls, w, b, N, C, recompute)));
    }
    cudaCheckLaunch();
}

template <typename T>
void residual_layernorm_forward_gpu(T *res, T *out, float *mean, float *rstd, const T *x, const T *f, const float *ls,
                                    const float *w, const float *b, int N, int C, int8_t *q, float *qs) {
    launch_forward(res, out, q, qs, mean, rstd, x, f, ls, w, b, N, C, 0);
}

template <typename T>
void layernorm_recompute_gpu(T *out, const T *inp, const float *mean, const float *rstd, const float *w, const float *b, int N, int C) {
    launch_forward<T>(NULL, out, NULL, NULL, (float *)mean, (float *)rstd, inp, NULL, NULL, w, b, N, C, 1);
}

// The backward kernel's dynamic shared memory at width C; its limit is raised to the GPU's once.
template <typename T, int V, int NV, int NOUT> static size_t backward_smem(int C) {
    static int smem_max = 0;
    if (!smem_max) {
        int dev;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
        cudaFuncAttributes fa;  // the limit counts the kernel's static shared memory too
        cudaCheck(cudaFuncGetAttributes(&fa, layernorm_backward_kernel<T, V, NV, NOUT>));
        smem_max -= (int)fa.sharedSizeBytes;
        cudaCheck(cudaFuncSetAttribute(layernorm_backward_kernel<T, V, NV, NOUT>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max));
    }
    size_t smem = (size_t)C * ((NV > 0 ? 0 : (2 + NOUT) * sizeof(float)) + 3 * LN_BWD_WARPS * sizeof(T));
    if (smem > (size_t)smem_max) fatal("layernorm_backward_gpu: C = %d needs %zu bytes of shared memory, the GPU has %d", C, smem, smem_max);
    return smem;
}

// One wave of blocks, each striding over its share of the rows, then the sums' finish. The row split, so the order
// of dw's and db's sums, is that of the kernel with the branch bias sum (the step's usual one) whichever runs: as
// many blocks as fit beside each other (the occupancy query is kept per width: it costs host time), at most
// COLSUM_PARTIAL_BYTES of partial sums for all four sums.
template <typename T, int V, int NV, int NOUT>
static void launch_backward(T *dinp, float *dw, float *db, int8_t *q, float *qs, const BranchGrads<T> *br, const T *dout,
                            const T *inp, const float *w, const float *mean, const float *rstd, int N, int C) {
    static int per_sm_C = -1, per_sm;
    if (C != per_sm_C) {
        cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, layernorm_backward_kernel<T, V, NV, 1>, 32 * LN_BWD_WARPS,
                                                                backward_smem<T, V, NV, 1>(C)));
        per_sm_C = C;
    }
    int blocks = min(max(per_sm, 1) * num_sms(), (int)(COLSUM_PARTIAL_BYTES / ((size_t)4 * C * sizeof(float))));
    int rows = max(LN_BWD_WARPS, ceil_div(N, blocks));
    blocks = ceil_div(N, rows);
    size_t smem = backward_smem<T, V, NV, NOUT>(C);
    float *partial = colsum_partials((size_t)(2 + NOUT) * blocks * C);
    layernorm_backward_kernel<T, V, NV, NOUT><<<blocks, 32 * LN_BWD_WARPS, smem>>>(
        dinp, q, qs, partial, br ? br->ls : NULL, br ? br->f : NULL, dout, inp, w, mean, rstd, N, C, rows);
    cudaCheckLaunch();
    colsum_finish_gpu(dw, db, partial, blocks, C, NOUT ? br->db : NULL, NOUT == 2 ? br->dls : NULL);
}

template <typename T, int V>
static void launch_backward(T *dinp, float *dw, float *db, int8_t *q, float *qs, const BranchGrads<T> *br, const T *dout,
                            const T *inp, const float *w, const float *mean, const float *rstd, int N, int C) {
    DISPATCH_NV(vecs_per_lane(C, V), {
        if (!br) launch_backward<T, V, NV, 0>(dinp, dw, db, q, qs, br, dout, inp, w, mean, rstd, N, C);
        else if (!br->ls) launch_backward<T, V, NV, 1>(dinp, dw, db, q, qs, br, dout, inp, w, mean, rstd, N, C);
        else launch_backward<T, V, NV, 2>(dinp, dw, db, q, qs, br, dout, inp, w, mean, rstd, N, C);
    });
}

template <typename T>
void layernorm_backward_gpu(T *dinp, float *dw, float *db, const T *dout, const T *inp, const float *w, const float *mean,
                            const float *rstd, int N, int C, int8_t *q, float *qs, const BranchGrads<T> *br) {
    if (N == 0) return;
    if (br && (!br->db || !br->ls != !br->dls || !br->ls != !br->f)) fatal("layernorm_backward_gpu: BranchGrads needs db, and ls, dls, f together");
    if (vec_width<T>(C, dinp, dout, inp, br ? br->f : NULL) > 1 && vec_width<T>(C, q) > 1 && vec_width<float>(C, w) > 1)
        launch_backward<T, 16 / sizeof(T)>(dinp, dw, db, q, qs, br, dout, inp, w, mean, rstd, N, C);
    else launch_backward<T, 1>(dinp, dw, db, q, qs, br, dout, inp, w, mean, rstd, N, C);
}

template <typename T> void layerscale_backward_gpu(T *df, float *dls, const T *dout, const T *f, const float *ls, int N, int C) {
    size_t n = (size_t)N * C;
    if (n == 0) return;
    if (dls) product_colsum_gpu<T>(dls, dout, f, N, C);  // before df is written: df may alias dout
    int grid = min(ceil_div((long)n, 256), 8 * num_sms());
    if (vec_width<T>(C, df, dout) > 1) layerscale_backward_kernel<T, 16 / sizeof(T)><<<grid, 256>>>(df, dout, ls, n, C);
    else layerscale_backward_kernel<T, 1><<<grid, 256>>>(df, dout, ls, n, C);
    cudaCheckLaunch();
}

#define INSTANTIATE(T)                                                                                                   \
    template void residual_layernorm_forward_gpu<T>(T *, T *, float *, float *, const T *, const T *, const float *,      \
                                                    const float *, const float *, int, int, int8_t *, float *);          \
    template void layernorm_recompute_gpu<T>(T *, const T *, const float *, const float *, const float *, const float *, \
                                             int, int);                                                                  \
    template void layernorm_backward_gpu<T>(T *, float *, float *, const T *, const T *, const float *, const float *,    \
                                            const float *, int, int, int8_t *, float *, const BranchGrads<T> *);         \
    template void layerscale_backward_gpu<T>(T *, float *, const T *, const T *, const float *, int, int);
INSTANTIATE(float)
INSTANTIATE(bf16)
