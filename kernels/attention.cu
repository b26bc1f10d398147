// attention.cu: self-attention forward and backward (see attention.cuh).
// fp32: one warp per query row, the reference's loops. bf16: flash attention (FlashAttention-2 scheme) with
// mma.sync.m16n8k16 (sm_80 and sm_90): a block of 4 warps owns a tile of 64 queries (forward, dq) or 64 keys
// (dk, dv), each warp 16 of its rows; the other side streams through shared memory in tiles of 64 rows,
// double-buffered with cp.async. The head dim is padded to HD, a multiple of 16, with zeros. The backward is
// two kernels (dq, which also computes the softmax correction delta = rowsum(dO * O); dk and dv) that each
// recompute P: a single kernel adding dq with fp32 atomics measured 1.45-1.55x slower (docs/benchmarks.md,
// "Attention kernels"). Each kernel's launch bounds ask for as many blocks per SM as its shared memory allows,
// which caps the registers (a few bytes spill at HD 64-80): the occupancy bought more than the spills cost.
// On sm_90 GPUs, head dims 64 and 80 run the same three kernels built on wgmma (the last section; docs/benchmarks.md,
// "Attention on wgmma (sm_90a)").
#include "attention.cuh"
#include "hopper.cuh"

// Sequence b of a batch: rows b T .. b T + T - 1 (seq NULL), or rows seq[b] .. seq[b + 1] - 1 of a packed batch of
// sequences of up to T rows (the text tower's live positions). Returns the first row and sets T to the length.
__device__ __forceinline__ size_t seq_span(const int *seq, int b, int &T) {
    if (!seq) return (size_t)b * T;
    int s0 = seq[b];
    T = seq[b + 1] - s0;
    return (size_t)s0;
}

// ---------------------------------------------------------------- fp32: the reference algorithm

// Sequence b's probabilities are att[s0 NH Tmax + (h T + t) T + t2]: regions of NH Tmax^2 per Tmax rows, so that
// packed sequences of up to Tmax rows do not overlap.
__global__ void attention_forward_fp32_kernel(float *out, float *att, const float *qkv, int T, int C, int NH, int causal, const int *seq) {
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x, Tmax = T;
    size_t s0 = seq_span(seq, b, T);
    if (t >= T) return;
    int hd = C / NH, nk = causal ? t + 1 : T;
    float scale = 1.0f / sqrtf((float)hd);
    const float *q = qkv + (s0 + t) * 3 * C + h * hd;
    float *a = att + s0 * NH * Tmax + ((size_t)h * T + t) * T;
    float mx = -INFINITY;
    for (int t2 = lane; t2 < nk; t2 += 32) {
        const float *k = qkv + (s0 + t2) * 3 * C + C + h * hd;
        float dot = 0.0f;
        for (int i = 0; i < hd; i++) dot += q[i] * k[i];
        a[t2] = dot * scale;
        mx = fmaxf(mx, a[t2]);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int t2 = lane; t2 < nk; t2 += 32) a[t2] = expf(a[t2] - mx), sum += a[t2];
    sum = warp_sum(sum);
    for (int t2 = lane; t2 < T; t2 += 32) a[t2] = t2 < nk ? a[t2] / sum : 0.0f;
    __syncwarp();  // the row is read by every lane below
    for (int i = lane; i < hd; i += 32) {
        float y = 0.0f;
        for (int t2 = 0; t2 < nk; t2++) y += a[t2] * qkv[(s0 + t2) * 3 * C + 2 * C + h * hd + i];
        out[(s0 + t) * C + h * hd + i] = y;
    }
}

// Per query row: dpre (B, NH, T, T) = d(scaled scores), and dq.
__global__ void attention_backward_q_fp32_kernel(float *dqkv, float *dpre, const float *dout, const float *qkv,
                                                 const float *att, int T, int C, int NH, int causal, const int *seq) {
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x, Tmax = T;
    size_t s0 = seq_span(seq, b, T);
    if (t >= T) return;
    int hd = C / NH, nk = causal ? t + 1 : T;
    float scale = 1.0f / sqrtf((float)hd);
    size_t row = s0 * NH * Tmax + ((size_t)h * T + t) * T;
    const float *a = att + row, *dy = dout + (s0 + t) * C + h * hd;
    float *dp = dpre + row;
    float dsum = 0.0f;
    for (int t2 = lane; t2 < nk; t2 += 32) {
        const float *v = qkv + (s0 + t2) * 3 * C + 2 * C + h * hd;
        float d = 0.0f;
        for (int i = 0; i < hd; i++) d += dy[i] * v[i];
        dp[t2] = d;
        dsum += d * a[t2];
    }
    dsum = warp_sum(dsum);
    for (int t2 = lane; t2 < T; t2 += 32) dp[t2] = t2 < nk ? a[t2] * (dp[t2] - dsum) * scale : 0.0f;
    __syncwarp();
    for (int i = lane; i < hd; i += 32) {
        float g = 0.0f;
        for (int t2 = 0; t2 < nk; t2++) g += dp[t2] * qkv[(s0 + t2) * 3 * C + C + h * hd + i];
        dqkv[(s0 + t) * 3 * C + h * hd + i] = g;
    }
}

// Per key row t2: dk = sum_t dpre[t][t2] q[t], dv = sum_t att[t][t2] dy[t].
__global__ void attention_backward_kv_fp32_kernel(float *dqkv, const float *dpre, const float *dout, const float *qkv,
                                                  const float *att, int T, int C, int NH, int causal, const int *seq) {
    int t2 = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x, Tmax = T;
    size_t s0 = seq_span(seq, b, T);
    if (t2 >= T) return;
    int hd = C / NH;
    size_t head = s0 * NH * Tmax + (size_t)h * T * T;
    for (int i = lane; i < hd; i += 32) {
        float dk = 0.0f, dv = 0.0f;
        for (int t = causal ? t2 : 0; t < T; t++) {
            dk += dpre[head + (size_t)t * T + t2] * qkv[(s0 + t) * 3 * C + h * hd + i];
            dv += att[head + (size_t)t * T + t2] * dout[(s0 + t) * C + h * hd + i];
        }
        dqkv[(s0 + t2) * 3 * C + C + h * hd + i] = dk;
        dqkv[(s0 + t2) * 3 * C + 2 * C + h * hd + i] = dv;
    }
}

void attention_forward_gpu(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal, const int *seq,
                           AttnQueries) {
    if (B == 0) return;
    attention_forward_fp32_kernel<<<dim3(T, NH, B), 32>>>(out, att, qkv, T, C, NH, causal, seq);
    cudaCheckLaunch();
}

void attention_backward_gpu(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *out, const float *att,
                        int B, int T, int C, int NH, int causal, const int *seq, AttnQueries) {
    if (B == 0) return;
    attention_backward_q_fp32_kernel<<<dim3(T, NH, B), 32>>>(dqkv, scratch, dout, qkv, att, T, C, NH, causal, seq);
    cudaCheckLaunch();
    attention_backward_kv_fp32_kernel<<<dim3(T, NH, B), 32>>>(dqkv, scratch, dout, qkv, att, T, C, NH, causal, seq);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------- bf16: flash attention

#define FA_TILE 64
#define FA_THREADS 128  // 4 warps x 16 rows

// The query tile that holds sequence b's pooled row (AttnQueries, on), or NO_TILE when b has none (b >= count).
#define NO_TILE (1 << 30)
__device__ __forceinline__ int pooled_tile(const AttnQueries &q, int b, size_t s0) {
    return b < q.count ? (int)((size_t)q.stride * b + (q.rows ? q.rows[b] : 0) - s0) / FA_TILE : NO_TILE;
}

// dq = 0 on the rows [q0, q0 + FA_TILE) before T of one head (dq_h: its columns of the query part; hd % 8 == 0): a
// query tile whose dout is zero.
__device__ void zero_dq_rows(bf16 *dq_h, int ld, int q0, int T, int hd) {
    int per = hd / 8, n = min(FA_TILE, T - q0) * per;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        *reinterpret_cast<uint4 *>(dq_h + (size_t)(q0 + i / per) * ld + (i % per) * 8) = make_uint4(0, 0, 0, 0);
}

// c (16x8 fp32) += a (16x16 bf16, row) @ b (16x8 bf16, col)
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 2^x in one MUFU instruction (ex2.approx: ~2 ulp; 2^-inf = 0)
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
// Makes this thread's landed cp.async writes visible to the async proxy, through which wgmma reads shared memory.
__device__ __forceinline__ void fence_proxy_async(void) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    fence_async_smem();
#endif
}

// A kernel's loop over its streamed tiles first .. n-1, double-buffered (tile first issued and committed by the
// caller, with the block's own tiles): load(i, buf) issues tile i's copies into buffer buf = (i - first) & 1,
// compute(i, buf) runs once tile i has landed, while tile i + 1's copies are in flight. ASYNC: wgmma reads the tiles.
// The forwards and the wgmma backward kernels loop through it; the mma.sync dq and dk/dv kernels keep loops of their
// own (through it they compiled 4-6% slower on an H100, docs/benchmarks.md).
template <bool ASYNC, typename Load, typename Compute>
__device__ __forceinline__ void stream_tiles(int first, int n, Load load, Compute compute) {
    for (int i = first; i < n; i++) {
        int buf = (i - first) & 1;
        if (i + 1 < n) {
            load(i + 1, buf ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        if constexpr (ASYNC) fence_proxy_async();  // the copies' writes before the wgmma's reads
        __syncthreads();
        compute(i, buf);
        __syncthreads();  // the next iteration's loads overwrite this buffer
    }
}
// Lane addresses for ldmatrix.x4 over a 16x16 block at (row0, col0) of a [row][col] tile:
// "A" order gives an mma A fragment (and, with .trans, the B fragments of two n-tiles when the tile is
// stored [k][n]); "B" order gives the B fragments of two n-tiles when the tile is stored [n][k].
__device__ __forceinline__ int a_row(int lane) { return (lane & 7) + ((lane >> 3) & 1) * 8; }
__device__ __forceinline__ int a_col(int lane) { return (lane >> 4) * 8; }
__device__ __forceinline__ int b_row(int lane) { return (lane & 7) + (lane >> 4) * 8; }
__device__ __forceinline__ int b_col(int lane) { return ((lane >> 3) & 1) * 8; }

template <int HD> struct FaTile {
    bf16 x[FA_TILE][HD + 8];  // +8: rows 16 bytes apart in bank terms, so ldmatrix is conflict-free
};
// Rows row0 .. row0+63 of a (T, ld) slice (src = row 0 of this sequence and head), hd real columns; rows
// past T and columns past hd are zero. The tile's 64 * HD/8 16-byte chunks are HD/16 per thread, unrolled.
template <int HD> __device__ __forceinline__ void load_tile(FaTile<HD> &dst, const bf16 *src, int ld, int row0, int T, int hd) {
    constexpr int CH = HD / 8;  // 16-byte chunks per row
    static_assert(FA_THREADS * (HD / 16) == FA_TILE * CH, "each thread copies HD/16 chunks");
#pragma unroll
    for (int k = 0; k < HD / 16; k++) {
        int i = threadIdx.x + k * FA_THREADS, r = i / CH, c = (i % CH) * 8, t = row0 + r;
        int ok = t < T && c < hd;
        cp_async16(smem_u32(&dst.x[r][c]), src + (ok ? t * ld + c : 0), ok ? 16 : 0);
    }
}

// The A fragments of rows [r0, r0+16) of a [row][HD] tile (all HD/16 column blocks).
template <int HD> __device__ __forceinline__ void load_a_frags(uint32_t a[HD / 16][4], const FaTile<HD> &X, int r0, int lane) {
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) ldmatrix_x4(a[kk], smem_u32(&X.x[r0 + a_row(lane)][kk * 16 + a_col(lane)]));
}

// The MMA helpers below take a range of 16-row groups [lo, hi) to compute (the others are masked out by every
// caller): padding past the sequence end and the causal mask's empty groups cost nothing. Each has a branch-free
// body for the full range, the common case: with a branch per group, every ldmatrix sat in its own basic
// block right before its MMAs, so its latency was never hidden (the SASS showed LDSM, HMMA, LDSM, HMMA...).
#define FOR_GROUPS(lo, hi, ...)                     \
    do {                                            \
        if ((lo) == 0 && (hi) == 4) {               \
            constexpr int all_ = 1;                 \
            __VA_ARGS__;                            \
        } else {                                    \
            constexpr int all_ = 0;                 \
            __VA_ARGS__;                            \
        }                                           \
    } while (0)
#define IN_GROUPS(g, lo, hi) (all_ || ((g) >= (lo) && (g) < (hi)))

// s (16 x 64) = a (16 x HD, A fragments) @ rows of Y^T (Y a [row][HD] tile), Y's groups [lo, hi) only (the
// rest of s is 0).
template <int HD>
__device__ __forceinline__ void mma_frags_by_tile(float s[8][4], const uint32_t a[HD / 16][4], const FaTile<HD> &Y, int lane, int lo, int hi) {
#pragma unroll
    for (int i = 0; i < 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    FOR_GROUPS(lo, hi, {
        _Pragma("unroll")
        for (int kk = 0; kk < HD / 16; kk++)
            _Pragma("unroll")
            for (int np = 0; np < 4; np++) {
                if (!IN_GROUPS(np, lo, hi)) continue;
                uint32_t b[4];
                ldmatrix_x4(b, smem_u32(&Y.x[np * 16 + b_row(lane)][kk * 16 + b_col(lane)]));
                mma_bf16(s[2 * np], a[kk], b[0], b[1]);
                mma_bf16(s[2 * np + 1], a[kk], b[2], b[3]);
            }
    });
}

// The same with the A rows [r0, r0+16) of a tile X.
template <int HD>
__device__ __forceinline__ void mma_rows_by_tile(float s[8][4], const FaTile<HD> &X, int r0, const FaTile<HD> &Y, int lane, int lo, int hi) {
    uint32_t a[HD / 16][4];
    load_a_frags<HD>(a, X, r0, lane);
    mma_frags_by_tile<HD>(s, a, Y, lane, lo, hi);
}

// acc (16 x HD) += a (16 x 16, A fragment) @ rows [16 kk, 16 kk + 16) of Y (a [row][HD] tile).
template <int HD>
__device__ __forceinline__ void mma_frag_by_rows(float acc[HD / 8][4], const uint32_t a[4], const FaTile<HD> &Y, int kk, int lane) {
#pragma unroll
    for (int np = 0; np < HD / 16; np++) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, smem_u32(&Y.x[kk * 16 + a_row(lane)][np * 16 + a_col(lane)]));
        mma_bf16(acc[2 * np], a, b[0], b[1]);
        mma_bf16(acc[2 * np + 1], a, b[2], b[3]);
    }
}

// acc (16 x HD) += p (16 x 64, mma C layout, converted to A fragments) @ Y (64 x HD), over Y's groups [lo, hi)
// (p is zero outside them).
template <int HD>
__device__ __forceinline__ void mma_probs_by_tile(float acc[HD / 8][4], const float p[8][4], const FaTile<HD> &Y, int lane, int lo, int hi) {
    FOR_GROUPS(lo, hi, {
        _Pragma("unroll")
        for (int kk = 0; kk < 4; kk++) {
            if (!IN_GROUPS(kk, lo, hi)) continue;
            uint32_t a[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                             pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]), pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
            mma_frag_by_rows<HD>(acc, a, Y, kk, lane);
        }
    });
}

// In the mma C layout a lane holds rows g = lane/4 and g+8, columns 2*(lane%4) + {0,1} of each n-tile.
#define C_ROW(lane, e) (((lane) >> 2) + ((e) >> 1) * 8)
#define C_COL(lane, nt, e) ((nt) * 8 + ((lane) & 3) * 2 + ((e) & 1))

// 16-row groups of a tile starting at row0 that hold rows before T (at most 4).
__device__ __forceinline__ int groups_before(int T, int row0) { return max(0, min(4, (T - row0 + 15) / 16)); }

// One online-softmax step over scores s of 16 rows in the mma C layout (NT tiles of 8 columns; unless ALL, column
// groups of 16 at or past hi are neither read nor written): s becomes p = 2^(s scale_log2 - m) with the running row
// max m (log2 domain), l (this lane's part of the row sums) adds p, and the running output o is rescaled.
template <int NT, int ALL, int HD>
__device__ __forceinline__ void online_softmax(float (&s)[NT][4], float (&o)[HD / 8][4], float m_run[2], float l_run[2], float scale_log2,
                                               int hi) {
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
        if (ALL || (nt >> 1) < hi)
#pragma unroll
            for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
    float alpha[2], base[2], rs[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        float m_new = fmaxf(m_run[r], mx[r] * scale_log2);
        base[r] = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing unmasked yet stays at zero
        alpha[r] = fast_exp2(m_run[r] - base[r]);
        m_run[r] = m_new;
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
        if (ALL || (nt >> 1) < hi)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[nt][e] = fast_exp2(fmaf(s[nt][e], scale_log2, -base[e >> 1]));
                rs[e >> 1] += s[nt][e];
            }
    l_run[0] = l_run[0] * alpha[0] + rs[0];
    l_run[1] = l_run[1] * alpha[1] + rs[1];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) o[i][0] *= alpha[0], o[i][1] *= alpha[0], o[i][2] *= alpha[1], o[i][3] *= alpha[1];
}

// Rows row0 + C_ROW(lane, 2 r) (r = 0, 1) of acc (16 x HD, mma C layout) times mul[r] to dst (row stride ld), the
// first hd columns, rows before T only.
template <int HD>
__device__ __forceinline__ void store_rows(bf16 *dst, int ld, const float (&acc)[HD / 8][4], const float mul[2], int row0, int T,
                                           int hd, int lane) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int t = row0 + C_ROW(lane, 2 * r);
        if (t >= T) continue;
        bf16 *y = dst + (size_t)t * ld;
#pragma unroll
        for (int nt = 0; nt < HD / 8; nt++) {
            int col = C_COL(lane, nt, 0);
            if (col < hd) *reinterpret_cast<uint32_t *>(y + col) = pack_bf16(acc[nt][2 * r] * mul[r], acc[nt][2 * r + 1] * mul[r]);
        }
    }
}

// The forward's output rows (scaled by 1 / l) and their log-sum-exp m + log2(l).
template <int HD>
__device__ __forceinline__ void store_out_lse(bf16 *out_h, float *lse_h, const float (&o)[HD / 8][4], const float m_run[2],
                                              float l_run[2], int row0, int T, int C, int hd, int lane) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    }
    const float inv[2] = {1.0f / l_run[0], 1.0f / l_run[1]};
    store_rows<HD>(out_h, C, o, inv, row0, T, hd, lane);
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int t = row0 + C_ROW(lane, 2 * r);
        if (t < T && (lane & 3) == 0) lse_h[t] = m_run[r] + log2f(l_run[r]);
    }
}

// dk (times scale) and dv rows of the backward; dk_h: this head's columns of the key part of dqkv (dv: C further).
template <int HD>
__device__ __forceinline__ void store_dk_dv(bf16 *dk_h, const float (&dk)[HD / 8][4], const float (&dv)[HD / 8][4], float scale,
                                            int row0, int T, int C, int hd, int lane) {
    const float mk[2] = {scale, scale}, mv[2] = {1.0f, 1.0f};
    store_rows<HD>(dk_h, 3 * C, dk, mk, row0, T, hd, lane);
    store_rows<HD>(dk_h + C, 3 * C, dv, mv, row0, T, hd, lane);
}

// 4 blocks per SM up to HD 80 (128 registers): at 143-165 registers (3 blocks) it ran 2-24% slower.
template <int HD, bool POOLED>
__global__ void __launch_bounds__(FA_THREADS, HD <= 80 ? 4 : HD <= 96 ? 3 : 2)
    flash_forward_kernel(bf16 *out, float *lse, const bf16 *qkv, int T, int C, int NH, int causal, float scale_log2, const int *seq,
                         AttnQueries queries) {
    extern __shared__ __align__(1024) unsigned char smem[];
    FaTile<HD> &Qs = *reinterpret_cast<FaTile<HD> *>(smem), *Ks = &Qs + 1, *Vs = &Qs + 3;
    int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int hd = C / NH, ld = 3 * C, q0 = qt * FA_TILE, r0 = warp * 16;
    size_t s0 = seq_span(seq, b, T);
    if (q0 >= T || (POOLED && qt != pooled_tile(queries, b, s0))) return;
    const bf16 *qb = qkv + s0 * ld + h * hd, *kb = qb + C, *vb = qb + 2 * C;
    int n_kt = (T + FA_TILE - 1) / FA_TILE;
    if (causal) n_kt = min(n_kt, qt + 1);
    auto load_kv = [&](int j, int buf) {
        load_tile<HD>(Ks[buf], kb, ld, j * FA_TILE, T, hd);
        load_tile<HD>(Vs[buf], vb, ld, j * FA_TILE, T, hd);
    };
    load_tile<HD>(Qs, qb, ld, q0, T, hd);
    load_kv(0, 0);
    cp_async_commit();

    float o[HD / 8][4], m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < HD / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    uint32_t qf[HD / 16][4];  // this warp's 16 query rows, loaded from shared memory once
    stream_tiles<false>(0, n_kt, load_kv, [&](int j, int buf) {
        if (j == 0) load_a_frags<HD>(qf, Qs, r0, lane);
        // key groups this warp needs: up to the sequence end and, causal, up to its last query; a warp of
        // padding rows only keeps the block's barriers
        int hi = groups_before(T, j * FA_TILE);
        if (causal) hi = min(hi, (q0 + r0 + 15 - j * FA_TILE) / 16 + 1);
        if (q0 + r0 < T) FOR_GROUPS(0, hi, {
            float s[8][4];
            mma_frags_by_tile<HD>(s, qf, Ks[buf], lane, 0, hi);
            // mask padding keys and the causal future (only the last tile and the causal diagonal have any), then
            // the online softmax in the log2 domain: p = 2^(s scale_log2 - m), one FFMA and one ex2 per score;
            // columns past group hi are neither computed nor read
            if ((j + 1) * FA_TILE > T || (causal && j == qt)) {
                _Pragma("unroll")
                for (int nt = 0; nt < 8; nt++)
                    _Pragma("unroll")
                    for (int e = 0; e < 4; e++) {
                        int key = j * FA_TILE + C_COL(lane, nt, e), query = q0 + r0 + C_ROW(lane, e);
                        if (key >= T || (causal && key > query)) s[nt][e] = -INFINITY;
                    }
            }
            online_softmax<8, all_, HD>(s, o, m_run, l_run, scale_log2, hi);
            mma_probs_by_tile<HD>(o, s, Vs[buf], lane, 0, hi);
        });
    });
    store_out_lse<HD>(out + s0 * C + h * hd, lse + (s0 * NH + (size_t)h * T), o, m_run, l_run, q0 + r0, T, C, hd, lane);
}

// delta = rowsum(dout * out) of this thread's two rows in the mma C layout (rows row0 + C_ROW(lane, 2 r); the
// wgmma accumulator of a warp has the same layout): the softmax backward's correction term. The four lanes of a row
// each sum every fourth 16-byte chunk; the dq kernels compute it for their queries (no pass of its own) and write it
// to delta (B, NH, T) for the dk/dv kernel. Rows past T get 0.
__device__ __forceinline__ void row_deltas(float d[2], float *delta_h, const bf16 *out_b, const bf16 *dout_b, int C, int row0,
                                           int T, int hd, int lane) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int t = row0 + C_ROW(lane, 2 * r);
        float s = 0.0f;
        if (t < T)
            for (int c = (lane & 3) * 8; c < hd; c += 32) {
                Vec<bf16, 8> o = load_vec<bf16, 8>(out_b + (size_t)t * C + c), g = load_vec<bf16, 8>(dout_b + (size_t)t * C + c);
#pragma unroll
                for (int k = 0; k < 8; k++) s += to_float(o.v[k]) * to_float(g.v[k]);
            }
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        d[r] = s;
        if (t < T && (lane & 3) == 0) delta_h[t] = s;
    }
}

// dq for a tile of 64 queries: S = Q K^T, P = exp2(S - lse), dP = dO V^T, dS = P (dP - delta), dQ = scale dS K; delta
// computed here and written for the dk/dv kernel. 3 blocks per SM up to HD 80 (168 registers), as the dk/dv kernel.
template <int HD, bool POOLED>
__global__ void __launch_bounds__(FA_THREADS, HD <= 80 ? 3 : 2)
    flash_backward_dq_kernel(bf16 *dqkv, float *delta, const bf16 *qkv, const bf16 *out, const bf16 *dout, const float *lse,
                             int T, int C, int NH, int causal, float scale_log2, float scale, const int *seq, AttnQueries queries) {
    extern __shared__ __align__(1024) unsigned char smem[];
    FaTile<HD> &Qs = *reinterpret_cast<FaTile<HD> *>(smem), &dOs = *(&Qs + 1), *Ks = &Qs + 2, *Vs = &Qs + 4;
    int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int hd = C / NH, ld = 3 * C, q0 = qt * FA_TILE, r0 = warp * 16;
    size_t s0 = seq_span(seq, b, T);
    if (q0 >= T) return;
    if (POOLED && qt != pooled_tile(queries, b, s0)) return zero_dq_rows(dqkv + s0 * ld + h * hd, ld, q0, T, hd);
    const bf16 *qb = qkv + s0 * ld + h * hd, *kb = qb + C, *vb = qb + 2 * C;
    const bf16 *ob = dout + s0 * C + h * hd;
    int n_kt = (T + FA_TILE - 1) / FA_TILE;
    if (causal) n_kt = min(n_kt, qt + 1);
    load_tile<HD>(Qs, qb, ld, q0, T, hd);
    load_tile<HD>(dOs, ob, C, q0, T, hd);
    load_tile<HD>(Ks[0], kb, ld, 0, T, hd);
    load_tile<HD>(Vs[0], vb, ld, 0, T, hd);
    cp_async_commit();
    float row_lse[2], row_delta[2];
    row_deltas(row_delta, delta + (s0 * NH + (size_t)h * T), out + s0 * C + h * hd, ob, C, q0 + r0, T, hd, lane);
#pragma unroll
    for (int r = 0; r < 2; r++) row_lse[r] = lse[(s0 * NH + (size_t)h * T) + min(q0 + r0 + C_ROW(lane, 2 * r), T - 1)];
    float dq[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;
    for (int j = 0; j < n_kt; j++) {
        if (j + 1 < n_kt) {
            load_tile<HD>(Ks[(j + 1) & 1], kb, ld, (j + 1) * FA_TILE, T, hd);
            load_tile<HD>(Vs[(j + 1) & 1], vb, ld, (j + 1) * FA_TILE, T, hd);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        // key groups this warp needs (as in the forward); a warp of padding queries only keeps the barriers
        int hi = groups_before(T, j * FA_TILE);
        if (causal) hi = min(hi, (q0 + r0 + 15 - j * FA_TILE) / 16 + 1);
        if (q0 + r0 < T) FOR_GROUPS(0, hi, {
            float s[8][4], dp[8][4];
            mma_rows_by_tile<HD>(s, Qs, r0, Ks[j & 1], lane, 0, hi);
            mma_rows_by_tile<HD>(dp, dOs, r0, Vs[j & 1], lane, 0, hi);
            // P = 2^(s scale_log2 - lse); padding keys and the causal future masked (last tile and diagonal only);
            // padding queries need no mask: their dq is not written
            int edge = (j + 1) * FA_TILE > T || (causal && j == qt);
            _Pragma("unroll")
            for (int nt = 0; nt < 8; nt++)
                if (IN_GROUPS(nt >> 1, 0, hi))
                    _Pragma("unroll")
                    for (int e = 0; e < 4; e++) {
                        float p = fast_exp2(fmaf(s[nt][e], scale_log2, -row_lse[e >> 1]));
                        if (edge) {
                            int key = j * FA_TILE + C_COL(lane, nt, e), query = q0 + r0 + C_ROW(lane, e);
                            if (key >= T || (causal && key > query)) p = 0.0f;
                        }
                        s[nt][e] = p * (dp[nt][e] - row_delta[e >> 1]);
                    }
            mma_probs_by_tile<HD>(dq, s, Ks[j & 1], lane, 0, hi);
        });
        __syncthreads();
    }
    const float mul[2] = {scale, scale};
    store_rows<HD>(dqkv + s0 * ld + h * hd, ld, dq, mul, q0 + r0, T, hd, lane);
}

// dk, dv for a tile of 64 keys, each warp 16 of them, over the query tiles that can see them:
// P^T = exp2(K Q^T - lse), dV += P^T dO, dP^T = V dO^T, dS^T = P^T (dP^T - delta), dK += scale dS^T Q.
// 3 blocks per SM up to HD 80 (168 registers): 6-13% faster than 2 blocks at 178-240 registers.
template <int HD, bool POOLED>
__global__ void __launch_bounds__(FA_THREADS, HD <= 80 ? 3 : 2)
    flash_backward_dkdv_kernel(bf16 *dqkv, const bf16 *qkv, const bf16 *dout, const float *lse, const float *delta, int T, int C,
                               int NH, int causal, float scale_log2, float scale, const int *seq, AttnQueries queries) {
    extern __shared__ __align__(1024) unsigned char smem[];
    FaTile<HD> &Ks = *reinterpret_cast<FaTile<HD> *>(smem), &Vs = *(&Ks + 1), *Qs = &Ks + 2, *dOs = &Ks + 4;
    float(*lse_s)[FA_TILE] = reinterpret_cast<float(*)[FA_TILE]>(&Ks + 6), (*delta_s)[FA_TILE] = lse_s + 2;
    int kt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int hd = C / NH, ld = 3 * C, k0 = kt * FA_TILE, r0 = warp * 16;
    size_t s0 = seq_span(seq, b, T);
    if (k0 >= T) return;
    const bf16 *qb = qkv + s0 * ld + h * hd, *kb = qb + C, *vb = qb + 2 * C;
    const bf16 *ob = dout + s0 * C + h * hd;
    const float *lse_h = lse + (s0 * NH + (size_t)h * T), *delta_h = delta + (s0 * NH + (size_t)h * T);
    int n_qt = (T + FA_TILE - 1) / FA_TILE, i0 = causal ? kt : 0;
    if constexpr (POOLED) {  // the other query tiles' dout is zero (maybe no tile is left)
        int pt = pooled_tile(queries, b, s0);
        i0 = max(i0, pt), n_qt = min(n_qt, pt + 1);
    }
    load_tile<HD>(Ks, kb, ld, k0, T, hd);
    load_tile<HD>(Vs, vb, ld, k0, T, hd);
    // query tile i goes to buffer (i - i0) & 1, with its lse and delta
#define LOAD_QUERY_TILE(i)                                                                 \
    do {                                                                                   \
        int buf_ = ((i) - i0) & 1, t_ = (i) * FA_TILE + threadIdx.x;                       \
        load_tile<HD>(Qs[buf_], qb, ld, (i) * FA_TILE, T, hd);                             \
        load_tile<HD>(dOs[buf_], ob, C, (i) * FA_TILE, T, hd);                             \
        if (threadIdx.x < FA_TILE) {                                                       \
            lse_s[buf_][threadIdx.x] = t_ < T ? lse_h[t_] : 0.0f;                           \
            delta_s[buf_][threadIdx.x] = t_ < T ? delta_h[t_] : 0.0f;                       \
        }                                                                                  \
    } while (0)
    if (i0 < n_qt) LOAD_QUERY_TILE(i0);
    cp_async_commit();
    float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[i][e] = dv[i][e] = 0.0f;
    for (int i = i0; i < n_qt; i++) {
        int buf = (i - i0) & 1;
        if (i + 1 < n_qt) {
            LOAD_QUERY_TILE(i + 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        // query groups this warp's keys need: up to the sequence end and, causal, from its first key on; a warp
        // of padding keys only keeps the barriers
        int lo = causal ? max(0, (k0 + r0 - i * FA_TILE) / 16) : 0, hi = groups_before(T, i * FA_TILE);
        if (k0 + r0 < T) FOR_GROUPS(lo, hi, {
            float s[8][4], dp[8][4];
            mma_rows_by_tile<HD>(s, Ks, r0, Qs[buf], lane, lo, hi);  // S^T: rows are keys, columns queries
            // P^T = 2^(s scale_log2 - lse); padding queries and, causal, queries before the key masked (last query
            // tile and the diagonal only); padding keys need no mask: their dk, dv are not written
            int edge = (i + 1) * FA_TILE > T || (causal && i == kt);
            _Pragma("unroll")
            for (int nt = 0; nt < 8; nt++)
                if (IN_GROUPS(nt >> 1, lo, hi))
                    _Pragma("unroll")
                    for (int e = 0; e < 4; e++) {
                        int qcol = C_COL(lane, nt, e);
                        float p = fast_exp2(fmaf(s[nt][e], scale_log2, -lse_s[buf][qcol]));
                        if (edge) {
                            int query = i * FA_TILE + qcol, key = k0 + r0 + C_ROW(lane, e);
                            if (query >= T || (causal && key > query)) p = 0.0f;
                        }
                        s[nt][e] = p;
                    }
            mma_probs_by_tile<HD>(dv, s, dOs[buf], lane, lo, hi);
            mma_rows_by_tile<HD>(dp, Vs, r0, dOs[buf], lane, lo, hi);
            _Pragma("unroll")
            for (int nt = 0; nt < 8; nt++)
                if (IN_GROUPS(nt >> 1, lo, hi))
                    _Pragma("unroll")
                    for (int e = 0; e < 4; e++) s[nt][e] *= dp[nt][e] - delta_s[buf][C_COL(lane, nt, e)];
            mma_probs_by_tile<HD>(dk, s, Qs[buf], lane, lo, hi);
        });
        __syncthreads();
    }
#undef LOAD_QUERY_TILE
    store_dk_dv<HD>(dqkv + s0 * ld + C + h * hd, dk, dv, scale, k0 + r0, T, C, hd, lane);
}

// ---------------------------------------------------------------- bf16 on sm_90a: wgmma
// The same three kernels with warpgroup MMAs (wgmma.mma_async, Hopper only; built in the sm_90a pass, empty in the
// sm_80 one): one warpgroup (4 warps) per block owns 64 rows; the score products S = X Y^T read both operands from
// shared memory, the products with probabilities (O += P V, dQ += dS K, dV += P^T dO, dK += dS^T Q) take P or dS
// from registers as A (the accumulator layout of a warp's 16 rows is the mma.sync A layout) and the other tile as an
// MN-major B. One swizzled tile layout serves both as a K-major operand (reduction over the head dim) and as an
// MN-major one (reduction over the rows), so each tile is loaded once. The last tile of the streamed side is
// computed 16 columns wide when it holds at most 16 rows (T = 197, 257: one 64-wide product of mostly padding
// saved per tile). Head dims 64 and 80 only (CLIP's vision towers); the others stay on mma.sync.

// Tile of 64 rows x HD (64 or 80). Columns 0-63: 64 rows of 128 bytes, 16-byte chunk j of row r at chunk j ^ (r % 8)
// (the 128-byte swizzle); at HD 80, columns 64-79 from element 4096: 64 rows of 32 bytes, chunk j of row r at
// j ^ (r / 4 % 2) (the 32-byte swizzle). Both spread the 8 rows of a core matrix over all banks (the unswizzled
// core-matrix layout measured 73% excess shared-memory wavefronts) and keep a row's chunks together, so that the
// threads copying a row read it in whole sectors. Tiles start at multiples of 1024 bytes (the swizzles are on
// address bits).
template <int HD> struct WgTile {
    static_assert(HD == 64 || HD == 80, "wgmma attention: head dims 64 and 80");
    bf16 x[FA_TILE * HD];
};
// Rows row0 .. row0+63 of a (T, ld) slice; rows past T are zero. Eight threads copy a row's first 128 bytes.
template <int HD> __device__ __forceinline__ void wg_load_tile(WgTile<HD> &dst, const bf16 *src, int ld, int row0, int T) {
#pragma unroll
    for (int k = 0; k < 4; k++) {
        int i = threadIdx.x + k * FA_THREADS, r = i >> 3, j = i & 7, t = row0 + r;
        cp_async16(smem_u32(&dst.x[r * 64 + ((j ^ (r & 7)) << 3)]), src + (t < T ? (size_t)t * ld + j * 8 : 0), t < T ? 16 : 0);
    }
    if constexpr (HD == 80) {
        int r = threadIdx.x >> 1, j = threadIdx.x & 1, t = row0 + r;
        cp_async16(smem_u32(&dst.x[4096 + r * 16 + ((j ^ ((r >> 2) & 1)) << 3)]), src + (t < T ? (size_t)t * ld + 64 + j * 8 : 0),
                   t < T ? 16 : 0);
    }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Shared-memory matrix descriptor: start address >> 4 (bits 0-13), leading byte offset unused by these swizzled
// layouts (1, bits 16-29), stride byte offset between 8-row groups (bits 32-45), layout (bits 62-63: 1 = 128-byte
// swizzle, 3 = 32-byte swizzle).
__device__ __forceinline__ uint64_t wg_desc(const bf16 *p, uint32_t sbo, uint64_t layout) {
    return (uint64_t)((smem_u32(p) & 0x3FFFF) >> 4) | (1ull << 16) | ((uint64_t)(sbo >> 4) << 32) | (layout << 62);
}
// Columns [16 kk, 16 kk + 16) of a tile's rows from row0 on (a multiple of 8) as a K-major operand (rows = M or N,
// reduction over the head dim).
template <int HD> __device__ __forceinline__ uint64_t desc_k(const WgTile<HD> &X, int kk, int row0 = 0) {
    return kk < 4 ? wg_desc(X.x + row0 * 64 + kk * 16, 1024, 1) : wg_desc(X.x + 4096 + row0 * 16, 256, 3);
}
// Rows [16 kk, 16 kk + 16) of a tile as an MN-major operand (reduction over the rows): columns 0-63, and 64-79.
template <int HD> __device__ __forceinline__ uint64_t desc_mn_lo(const WgTile<HD> &X, int kk) {
    return wg_desc(X.x + kk * 16 * 64, 1024, 1);
}
template <int HD> __device__ __forceinline__ uint64_t desc_mn_hi(const WgTile<HD> &X, int kk) {
    return wg_desc(X.x + 4096 + kk * 16 * 16, 256, 3);
}

// d (64 x 16) (+)= A (64 x 16, K-major descriptor) . B (16 x 16, K-major descriptor)^T; accumulate = 0 overwrites.
__device__ __forceinline__ void wgmma_ss_n16(float (&d)[2][4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7"
        "}, %8, %9, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3])
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
// d (64 x 32) (+)= A (64 x 16, K-major descriptor) . B (32 x 16, K-major descriptor)^T; accumulate = 0 overwrites.
__device__ __forceinline__ void wgmma_ss_n32(float (&d)[4][4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, %16, %17, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
// d (64 x 64) (+)= A (64 x 16, K-major descriptor) . B (64 x 16, K-major descriptor)^T; accumulate = 0 overwrites.
__device__ __forceinline__ void wgmma_ss_n64(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
// d (64 x 16) += A (64 x 16, registers) . B (16 x 16, MN-major descriptor).
__device__ __forceinline__ void wgmma_rs_n16(float (&d)[2][4], const uint32_t (&a)[4], uint64_t desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7"
        "}, {%8, %9, %10, %11}, %12, p, 1, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(1));
}
// d (64 x 64) += A (64 x 16, registers) . B (16 x 64, MN-major descriptor).
__device__ __forceinline__ void wgmma_rs_n64(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(1));
}

// s (64 x N) = X (64 x HD) . Y (N x HD)^T for N = 16, 32 or 64 (Y's rows from y0 on), both tiles K-major.
template <int N, int HD>
__device__ __forceinline__ void wg_scores(float (&s)[N / 8][4], const WgTile<HD> &X, const WgTile<HD> &Y, int y0 = 0) {
    wgmma_fence();  // s's registers were read since the last wgmma that wrote them
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        if constexpr (N == 16) wgmma_ss_n16(s, desc_k(X, kk), desc_k(Y, kk, y0), kk > 0);
        else if constexpr (N == 32) wgmma_ss_n32(s, desc_k(X, kk), desc_k(Y, kk, y0), kk > 0);
        else wgmma_ss_n64(s, desc_k(X, kk), desc_k(Y, kk, y0), kk > 0);
    }
}
// Commits the wgmmas issued and waits for them; a and b are their accumulators.
template <int NA, int NB> __device__ __forceinline__ void wg_commit_wait(float (&a)[NA][4], float (&b)[NB][4]) {
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(a);
    fence_regs(b);
}
// s = X1 Y1^T and dp = X2 Y2^T (64 x N each; the Y rows from y0 on), issued together and waited for (the backward's S
// and dP).
template <int N, int HD>
__device__ __forceinline__ void wg_score_pair(float (&s)[N / 8][4], const WgTile<HD> &X1, const WgTile<HD> &Y1, float (&dp)[N / 8][4],
                                              const WgTile<HD> &X2, const WgTile<HD> &Y2, int y0 = 0) {
    wg_scores<N>(s, X1, Y1, y0);
    wg_scores<N>(dp, X2, Y2, y0);
    wg_commit_wait(s, dp);
}
// acc (64 x HD) += p (64 x N, accumulator layout, rounded to bf16) . rows [y0, y0 + N) of Y (y0 a multiple of 16; at
// HD 80, columns 64-79 as a second, 16 wide product into acc[8..9]).
template <int N, int HD>
__device__ __forceinline__ void wg_probs(float (&acc)[HD / 8][4], const float (&p)[N / 8][4], const WgTile<HD> &Y, int y0 = 0) {
    uint32_t a[N / 16][4];
#pragma unroll
    for (int kk = 0; kk < N / 16; kk++) {
        a[kk][0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]), a[kk][1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
        a[kk][2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]), a[kk][3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
    }
    wgmma_fence();  // orders the writes of a (and of acc, rescaled by the forward) before the wgmma that reads them
    float(&lo)[8][4] = *reinterpret_cast<float(*)[8][4]>(&acc[0]);
#pragma unroll
    for (int kk = 0; kk < N / 16; kk++) {
        wgmma_rs_n64(lo, a[kk], desc_mn_lo(Y, kk + y0 / 16));
        if constexpr (HD == 80) wgmma_rs_n16(*reinterpret_cast<float(*)[2][4]>(&acc[8]), a[kk], desc_mn_hi(Y, kk + y0 / 16));
    }
}
#endif

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// One key tile of the forward (N = 16 or 64 keys from key0) for rows query0 + C_ROW: S, the mask (edge tiles only),
// the online softmax, O += P V.
template <int N, int HD>
__device__ __forceinline__ void wg_forward_tile(float (&o)[HD / 8][4], float m_run[2], float l_run[2], const WgTile<HD> &Qs,
                                                const WgTile<HD> &K, const WgTile<HD> &V, int key0, int query0, int edge, int T,
                                                int causal, float scale_log2, int lane) {
    float s[N / 8][4];
    wg_scores<N>(s, Qs, K);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(s);
    if (edge) {
#pragma unroll
        for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = key0 + C_COL(lane, nt, e), query = query0 + C_ROW(lane, e);
                if (key >= T || (causal && key > query)) s[nt][e] = -INFINITY;
            }
    }
    online_softmax<N / 8, 1, HD>(s, o, m_run, l_run, scale_log2, 4);
    wg_probs<N>(o, s, V);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(o);
}
#endif

// 4 blocks per SM (5 tiles of shared memory, at most 128 registers).
template <int HD, bool POOLED>
__global__ void __launch_bounds__(FA_THREADS, 4)
    flash_forward_wgmma_kernel(bf16 *out, float *lse, const bf16 *qkv, int T, int C, int NH, int causal, float scale_log2,
                               const int *seq, AttnQueries queries) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) unsigned char smem[];
    WgTile<HD> &Qs = *reinterpret_cast<WgTile<HD> *>(smem), *Ks = &Qs + 1, *Vs = &Qs + 3;
    if (smem_u32(smem) & 1023) __trap();  // the swizzles need 1024-byte aligned tiles
    int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x % 32;
    int ld = 3 * C, q0 = qt * FA_TILE, r0 = threadIdx.x / 32 * 16;
    size_t s0 = seq_span(seq, b, T);
    if (q0 >= T || (POOLED && qt != pooled_tile(queries, b, s0))) return;
    const bf16 *qb = qkv + s0 * ld + h * HD, *kb = qb + C, *vb = qb + 2 * C;
    int n_kt = (T + FA_TILE - 1) / FA_TILE;
    if (causal) n_kt = min(n_kt, qt + 1);
    auto load_kv = [&](int j, int buf) {
        wg_load_tile<HD>(Ks[buf], kb, ld, j * FA_TILE, T);
        wg_load_tile<HD>(Vs[buf], vb, ld, j * FA_TILE, T);
    };
    wg_load_tile<HD>(Qs, qb, ld, q0, T);
    load_kv(0, 0);
    cp_async_commit();
    float o[HD / 8][4], m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < HD / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    stream_tiles<true>(0, n_kt, load_kv, [&](int j, int buf) {
        int key0 = j * FA_TILE, edge = key0 + FA_TILE > T || (causal && j == qt);
        if (T - key0 <= 16)
            wg_forward_tile<16, HD>(o, m_run, l_run, Qs, Ks[buf], Vs[buf], key0, q0 + r0, edge, T, causal, scale_log2, lane);
        else
            wg_forward_tile<64, HD>(o, m_run, l_run, Qs, Ks[buf], Vs[buf], key0, q0 + r0, edge, T, causal, scale_log2, lane);
    });
    store_out_lse<HD>(out + s0 * C + h * HD, lse + (s0 * NH + (size_t)h * T), o, m_run, l_run, q0 + r0, T, C, HD, lane);
#endif
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// One key tile of dq: S = Q K^T, dP = dO V^T, dS = P (dP - delta) with P = 2^(S scale_log2 - lse) (masked on edge
// tiles), dQ += dS K.
template <int N, int HD>
__device__ __forceinline__ void wg_dq_tile(float (&dq)[HD / 8][4], const WgTile<HD> &Qs, const WgTile<HD> &dOs, const WgTile<HD> &K,
                                           const WgTile<HD> &V, const float row_lse[2], const float row_delta[2], int key0,
                                           int query0, int edge, int T, int causal, float scale_log2, int lane) {
    float s[N / 8][4], dp[N / 8][4];
    wg_score_pair<N>(s, Qs, K, dp, dOs, V);
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float p = fast_exp2(fmaf(s[nt][e], scale_log2, -row_lse[e >> 1]));
            if (edge) {
                int key = key0 + C_COL(lane, nt, e), query = query0 + C_ROW(lane, e);
                if (key >= T || (causal && key > query)) p = 0.0f;
            }
            s[nt][e] = p * (dp[nt][e] - row_delta[e >> 1]);
        }
    wg_probs<N>(dq, s, K);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(dq);
}
#endif

// dq (and delta) for a tile of 64 queries, as flash_backward_dq_kernel. 3 blocks per SM (6 tiles of shared memory).
template <int HD, bool POOLED>
__global__ void __launch_bounds__(FA_THREADS, 3)
    flash_backward_dq_wgmma_kernel(bf16 *dqkv, float *delta, const bf16 *qkv, const bf16 *out, const bf16 *dout, const float *lse,
                                   int T, int C, int NH, int causal, float scale_log2, float scale, const int *seq,
                                   AttnQueries queries) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) unsigned char smem[];
    WgTile<HD> &Qs = *reinterpret_cast<WgTile<HD> *>(smem), &dOs = *(&Qs + 1), *Ks = &Qs + 2, *Vs = &Qs + 4;
    if (smem_u32(smem) & 1023) __trap();  // the swizzles need 1024-byte aligned tiles
    int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x % 32;
    int ld = 3 * C, q0 = qt * FA_TILE, r0 = threadIdx.x / 32 * 16;
    size_t s0 = seq_span(seq, b, T);
    if (q0 >= T) return;
    if (POOLED && qt != pooled_tile(queries, b, s0)) return zero_dq_rows(dqkv + s0 * ld + h * HD, ld, q0, T, HD);
    const bf16 *qb = qkv + s0 * ld + h * HD, *kb = qb + C, *vb = qb + 2 * C;
    const bf16 *ob = dout + s0 * C + h * HD;
    int n_kt = (T + FA_TILE - 1) / FA_TILE;
    if (causal) n_kt = min(n_kt, qt + 1);
    auto load_kv = [&](int j, int buf) {
        wg_load_tile<HD>(Ks[buf], kb, ld, j * FA_TILE, T);
        wg_load_tile<HD>(Vs[buf], vb, ld, j * FA_TILE, T);
    };
    wg_load_tile<HD>(Qs, qb, ld, q0, T);
    wg_load_tile<HD>(dOs, ob, C, q0, T);
    load_kv(0, 0);
    cp_async_commit();
    float row_lse[2], row_delta[2];
    row_deltas(row_delta, delta + (s0 * NH + (size_t)h * T), out + s0 * C + h * HD, ob, C, q0 + r0, T, HD, lane);
#pragma unroll
    for (int r = 0; r < 2; r++) row_lse[r] = lse[(s0 * NH + (size_t)h * T) + min(q0 + r0 + C_ROW(lane, 2 * r), T - 1)];
    float dq[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;
    stream_tiles<true>(0, n_kt, load_kv, [&](int j, int buf) {
        int key0 = j * FA_TILE, edge = key0 + FA_TILE > T || (causal && j == qt);
        if (T - key0 <= 16)
            wg_dq_tile<16, HD>(dq, Qs, dOs, Ks[buf], Vs[buf], row_lse, row_delta, key0, q0 + r0, edge, T, causal, scale_log2, lane);
        else
            wg_dq_tile<64, HD>(dq, Qs, dOs, Ks[buf], Vs[buf], row_lse, row_delta, key0, q0 + r0, edge, T, causal, scale_log2, lane);
    });
    const float mul[2] = {scale, scale};
    store_rows<HD>(dqkv + s0 * ld + h * HD, ld, dq, mul, q0 + r0, T, HD, lane);
#endif
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// N queries of a query tile (rows y0 .. y0 + N - 1 of the tiles from query0: N = 16, 32 or 64) for dk, dv of keys
// key0 + C_ROW: S^T = K Q^T, dP^T = V dO^T, P^T = 2^(S^T scale_log2 - lse) (masked on edge tiles), dV += P^T dO,
// dK += P^T (dP^T - delta) Q.
template <int N, int HD>
__device__ __forceinline__ void wg_dkdv_tile(float (&dk)[HD / 8][4], float (&dv)[HD / 8][4], const WgTile<HD> &Ks, const WgTile<HD> &Vs,
                                             const WgTile<HD> &Q, const WgTile<HD> &dO, const float *lse_s, const float *delta_s,
                                             int query0, int y0, int key0, int edge, int T, int causal, float scale_log2, int lane) {
    float s[N / 8][4], dp[N / 8][4];
    wg_score_pair<N>(s, Ks, Q, dp, Vs, dO, y0);
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int qcol = y0 + C_COL(lane, nt, e);
            float p = fast_exp2(fmaf(s[nt][e], scale_log2, -lse_s[qcol]));
            if (edge) {
                int query = query0 + qcol, key = key0 + C_ROW(lane, e);
                if (query >= T || (causal && key > query)) p = 0.0f;
            }
            s[nt][e] = p;
            dp[nt][e] = p * (dp[nt][e] - delta_s[qcol]);
        }
    wg_probs<N>(dv, s, dO, y0);
    wg_probs<N>(dk, dp, Q, y0);
    wg_commit_wait(dv, dk);
}
#endif

// dk, dv for a tile of 64 keys, as flash_backward_dkdv_kernel. 3 blocks per SM (6 tiles of shared memory): at HD 80
// the 168 registers this leaves held dk, dv and a 64-query tile's S^T and dP^T only with 96 bytes of spills and the
// wgmmas serialized by ptxas (216 us at ViT-H/14, against 230 with 2 blocks and 186 registers); in halves of 32
// queries it needs 159 registers, no spills, and the backward (dq + dk/dv) took 0.366 against 0.385 ms.
template <int HD, bool POOLED>
__global__ void __launch_bounds__(FA_THREADS, 3)
    flash_backward_dkdv_wgmma_kernel(bf16 *dqkv, const bf16 *qkv, const bf16 *dout, const float *lse, const float *delta, int T,
                                     int C, int NH, int causal, float scale_log2, float scale, const int *seq, AttnQueries queries) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) unsigned char smem[];
    WgTile<HD> &Ks = *reinterpret_cast<WgTile<HD> *>(smem), &Vs = *(&Ks + 1), *Qs = &Ks + 2, *dOs = &Ks + 4;
    if (smem_u32(smem) & 1023) __trap();  // the swizzles need 1024-byte aligned tiles
    float(*lse_s)[FA_TILE] = reinterpret_cast<float(*)[FA_TILE]>(&Ks + 6), (*delta_s)[FA_TILE] = lse_s + 2;
    int kt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x % 32;
    int ld = 3 * C, k0 = kt * FA_TILE, r0 = threadIdx.x / 32 * 16;
    size_t s0 = seq_span(seq, b, T);
    if (k0 >= T) return;
    const bf16 *qb = qkv + s0 * ld + h * HD, *kb = qb + C, *vb = qb + 2 * C;
    const bf16 *ob = dout + s0 * C + h * HD;
    const float *lse_h = lse + (s0 * NH + (size_t)h * T), *delta_h = delta + (s0 * NH + (size_t)h * T);
    int n_qt = (T + FA_TILE - 1) / FA_TILE, i0 = causal ? kt : 0;
    if constexpr (POOLED) {  // the other query tiles' dout is zero (maybe no tile is left)
        int pt = pooled_tile(queries, b, s0);
        i0 = max(i0, pt), n_qt = min(n_qt, pt + 1);
    }
    wg_load_tile<HD>(Ks, kb, ld, k0, T);
    wg_load_tile<HD>(Vs, vb, ld, k0, T);
    auto load_q = [&](int i, int buf) {  // query tile i with its lse and delta
        int t = i * FA_TILE + threadIdx.x;
        wg_load_tile<HD>(Qs[buf], qb, ld, i * FA_TILE, T);
        wg_load_tile<HD>(dOs[buf], ob, C, i * FA_TILE, T);
        if (threadIdx.x < FA_TILE) {
            lse_s[buf][threadIdx.x] = t < T ? lse_h[t] : 0.0f;
            delta_s[buf][threadIdx.x] = t < T ? delta_h[t] : 0.0f;
        }
    };
    if (i0 < n_qt) load_q(i0, 0);
    cp_async_commit();
    float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[i][e] = dv[i][e] = 0.0f;
    stream_tiles<true>(i0, n_qt, load_q, [&](int i, int buf) {
        int query0 = i * FA_TILE, edge = query0 + FA_TILE > T || (causal && i == kt);
        if (T - query0 <= 16) {
            wg_dkdv_tile<16, HD>(dk, dv, Ks, Vs, Qs[buf], dOs[buf], lse_s[buf], delta_s[buf], query0, 0, k0 + r0, edge, T, causal,
                                 scale_log2, lane);
        } else if constexpr (HD == 80) {  // in halves of 32 queries: S^T and dP^T of 64 x 64 beside dk and dv overflow 168 registers
            for (int y0 = 0; y0 < min(FA_TILE, T - query0); y0 += 32)
                wg_dkdv_tile<32, HD>(dk, dv, Ks, Vs, Qs[buf], dOs[buf], lse_s[buf], delta_s[buf], query0, y0, k0 + r0, edge, T, causal,
                                     scale_log2, lane);
        } else {
            wg_dkdv_tile<64, HD>(dk, dv, Ks, Vs, Qs[buf], dOs[buf], lse_s[buf], delta_s[buf], query0, 0, k0 + r0, edge, T, causal,
                                 scale_log2, lane);
        }
    });
    store_dk_dv<HD>(dqkv + s0 * ld + C + h * HD, dk, dv, scale, k0 + r0, T, C, HD, lane);
#endif
}

// Kernel family of the bf16 path: set by attention_set_kernels, else ATTENTION_KERNELS=mma in the environment forces
// mma.sync (measurements), else wgmma on sm_90 GPUs at head dims 64 and 80.
static AttnKernels attn_kernels = ATTN_KERNELS_AUTO;

void attention_set_kernels(AttnKernels k) { attn_kernels = k; }

static int use_wgmma(int hd) {
    static int sm90 = -1, env_mma = 0;
    if (sm90 < 0) {
        sm90 = hopper_code_runs();
        const char *e = getenv("ATTENTION_KERNELS");
        env_mma = e && strcmp(e, "mma") == 0;
    }
    if (attn_kernels == ATTN_KERNELS_MMA || (attn_kernels == ATTN_KERNELS_AUTO && env_mma)) return 0;
    return sm90 && (hd == 64 || hd == 80);
}

// Launches kernel on grid (tiles of T, NH, B) with smem dynamic bytes (its limit raised on the first call).
template <typename Kernel, typename... Args>
static void launch(Kernel kernel, int &configured, size_t smem, int B, int T, int NH, Args... args) {
    if (!configured) {
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        configured = 1;
    }
    kernel<<<dim3(ceil_div(T, FA_TILE), NH, B), FA_THREADS, smem>>>(args...);
    cudaCheckLaunch();
}

template <int HD, bool POOLED>
static void flash_forward(bf16 *out, float *lse, const bf16 *qkv, int B, int T, int C, int NH, int causal, const int *seq,
                          AttnQueries q) {
    float scale_log2 = 1.4426950408889634f / sqrtf((float)(C / NH));
    static int configured[2];
    if constexpr (HD == 64 || HD == 80)
        if (use_wgmma(C / NH)) {
            launch(flash_forward_wgmma_kernel<HD, POOLED>, configured[1], 5 * sizeof(WgTile<HD>), B, T, NH, out, lse, qkv, T, C, NH,
                   causal, scale_log2, seq, q);
            return;
        }
    launch(flash_forward_kernel<HD, POOLED>, configured[0], 5 * sizeof(FaTile<HD>), B, T, NH, out, lse, qkv, T, C, NH, causal,
           scale_log2, seq, q);
}

// delta: (B, NH, T) scratch, written by the dq kernel and read by the dk/dv kernel.
template <int HD, bool POOLED>
static void flash_backward(bf16 *dqkv, float *delta, const bf16 *dout, const bf16 *qkv, const bf16 *out, const float *lse, int B,
                           int T, int C, int NH, int causal, const int *seq, AttnQueries q) {
    float scale = 1.0f / sqrtf((float)(C / NH)), scale_log2 = 1.4426950408889634f * scale;
    static int configured[4];
    if constexpr (HD == 64 || HD == 80)
        if (use_wgmma(C / NH)) {
            launch(flash_backward_dq_wgmma_kernel<HD, POOLED>, configured[2], 6 * sizeof(WgTile<HD>), B, T, NH, dqkv, delta, qkv, out,
                   dout, lse, T, C, NH, causal, scale_log2, scale, seq, q);
            launch(flash_backward_dkdv_wgmma_kernel<HD, POOLED>, configured[3], 6 * sizeof(WgTile<HD>) + 4 * FA_TILE * sizeof(float), B,
                   T, NH, dqkv, qkv, dout, lse, (const float *)delta, T, C, NH, causal, scale_log2, scale, seq, q);
            return;
        }
    launch(flash_backward_dq_kernel<HD, POOLED>, configured[0], 6 * sizeof(FaTile<HD>), B, T, NH, dqkv, delta, qkv, out, dout, lse, T,
           C, NH, causal, scale_log2, scale, seq, q);
    launch(flash_backward_dkdv_kernel<HD, POOLED>, configured[1], 6 * sizeof(FaTile<HD>) + 4 * FA_TILE * sizeof(float), B, T, NH, dqkv,
           qkv, dout, lse, (const float *)delta, T, C, NH, causal, scale_log2, scale, seq, q);
}

static int padded_head_dim(int C, int NH) {
    int hd = C / NH;
    if (hd % 8 || hd > 128) {
        fatal("bf16 attention supports head dims that are multiples of 8 up to 128, got %d", hd);
    }
    return (hd + 15) / 16 * 16;
}

#define DISPATCH_HD(hd_pad, call)                                                                                \
    switch (hd_pad) {                                                                                            \
        case 16: { constexpr int HD = 16; call; } break;                                                         \
        case 32: { constexpr int HD = 32; call; } break;                                                         \
        case 48: { constexpr int HD = 48; call; } break;                                                         \
        case 64: { constexpr int HD = 64; call; } break;                                                         \
        case 80: { constexpr int HD = 80; call; } break;                                                         \
        case 96: { constexpr int HD = 96; call; } break;                                                         \
        case 112: { constexpr int HD = 112; call; } break;                                                       \
        default: { constexpr int HD = 128; call; } break;                                                        \
    }

void attention_forward_gpu(bf16 *out, float *lse, const bf16 *qkv, int B, int T, int C, int NH, int causal, const int *seq,
                           AttnQueries q) {
    if (B == 0) return;
    if (q.on) {
        DISPATCH_HD(padded_head_dim(C, NH), (flash_forward<HD, true>(out, lse, qkv, B, T, C, NH, causal, seq, q)));
    } else {
        DISPATCH_HD(padded_head_dim(C, NH), (flash_forward<HD, false>(out, lse, qkv, B, T, C, NH, causal, seq, q)));
    }
}

void attention_backward_gpu(bf16 *dqkv, float *scratch, const bf16 *dout, const bf16 *qkv, const bf16 *out, const float *lse,
                        int B, int T, int C, int NH, int causal, const int *seq, AttnQueries q) {
    if (B == 0) return;
    if (q.on) {
        DISPATCH_HD(padded_head_dim(C, NH), (flash_backward<HD, true>(dqkv, scratch, dout, qkv, out, lse, B, T, C, NH, causal, seq, q)));
    } else {
        DISPATCH_HD(padded_head_dim(C, NH), (flash_backward<HD, false>(dqkv, scratch, dout, qkv, out, lse, B, T, C, NH, causal, seq, q)));
    }
}

size_t attention_stats_elems(int bf16_path, int B, int T, int NH) {
    return bf16_path ? (size_t)B * NH * T : (size_t)B * NH * T * T;
}
