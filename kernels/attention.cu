// attention.cu: self-attention forward and backward (see attention.cuh).
// fp32: one warp per query row, the reference's loops. bf16: flash attention (FlashAttention-2 scheme) with
// mma.sync.m16n8k16 (sm_80 and sm_90): a block of 4 warps owns a tile of 64 queries (forward, dq) or 64 keys
// (dk, dv), each warp 16 of its rows; the other side streams through shared memory in tiles of 64 rows,
// double-buffered with cp.async. The head dim is padded to HD, a multiple of 16, with zeros. The backward is
// two kernels (dq; dk and dv) that each recompute P: a single kernel adding dq with fp32 atomics measured
// 1.45-1.55x slower (docs/benchmarks.md, "Attention kernels"). Each kernel's launch bounds ask for as many
// blocks per SM as its shared memory allows, which caps the registers (a few bytes spill at HD 64-80): the
// occupancy bought more than the spills cost.
#include "attention.cuh"

// ---------------------------------------------------------------- fp32: the reference algorithm

__global__ void attention_forward_fp32_kernel(float *out, float *att, const float *qkv, int T, int C, int NH, int causal) {
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x;
    int hd = C / NH, nk = causal ? t + 1 : T;
    float scale = 1.0f / sqrtf((float)hd);
    const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hd;
    float *a = att + (((size_t)b * NH + h) * T + t) * T;
    float mx = -INFINITY;
    for (int t2 = lane; t2 < nk; t2 += 32) {
        const float *k = qkv + ((size_t)b * T + t2) * 3 * C + C + h * hd;
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
        for (int t2 = 0; t2 < nk; t2++) y += a[t2] * qkv[((size_t)b * T + t2) * 3 * C + 2 * C + h * hd + i];
        out[((size_t)b * T + t) * C + h * hd + i] = y;
    }
}

// Per query row: dpre (B, NH, T, T) = d(scaled scores), and dq.
__global__ void attention_backward_q_fp32_kernel(float *dqkv, float *dpre, const float *dout, const float *qkv,
                                                 const float *att, int T, int C, int NH, int causal) {
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x;
    int hd = C / NH, nk = causal ? t + 1 : T;
    float scale = 1.0f / sqrtf((float)hd);
    const float *a = att + (((size_t)b * NH + h) * T + t) * T, *dy = dout + ((size_t)b * T + t) * C + h * hd;
    float *dp = dpre + (((size_t)b * NH + h) * T + t) * T;
    float dsum = 0.0f;
    for (int t2 = lane; t2 < nk; t2 += 32) {
        const float *v = qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hd;
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
        for (int t2 = 0; t2 < nk; t2++) g += dp[t2] * qkv[((size_t)b * T + t2) * 3 * C + C + h * hd + i];
        dqkv[((size_t)b * T + t) * 3 * C + h * hd + i] = g;
    }
}

// Per key row t2: dk = sum_t dpre[t][t2] q[t], dv = sum_t att[t][t2] dy[t].
__global__ void attention_backward_kv_fp32_kernel(float *dqkv, const float *dpre, const float *dout, const float *qkv,
                                                  const float *att, int T, int C, int NH, int causal) {
    int t2 = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x;
    int hd = C / NH;
    size_t head = ((size_t)b * NH + h) * T;
    for (int i = lane; i < hd; i += 32) {
        float dk = 0.0f, dv = 0.0f;
        for (int t = causal ? t2 : 0; t < T; t++) {
            dk += dpre[(head + t) * T + t2] * qkv[((size_t)b * T + t) * 3 * C + h * hd + i];
            dv += att[(head + t) * T + t2] * dout[((size_t)b * T + t) * C + h * hd + i];
        }
        dqkv[((size_t)b * T + t2) * 3 * C + C + h * hd + i] = dk;
        dqkv[((size_t)b * T + t2) * 3 * C + 2 * C + h * hd + i] = dv;
    }
}

void attention_forward_gpu(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal) {
    if (B == 0) return;
    attention_forward_fp32_kernel<<<dim3(T, NH, B), 32>>>(out, att, qkv, T, C, NH, causal);
    cudaCheckLaunch();
}

void attention_backward_gpu(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *out, const float *att,
                        int B, int T, int C, int NH, int causal) {
    if (B == 0) return;
    attention_backward_q_fp32_kernel<<<dim3(T, NH, B), 32>>>(dqkv, scratch, dout, qkv, att, T, C, NH, causal);
    cudaCheckLaunch();
    attention_backward_kv_fp32_kernel<<<dim3(T, NH, B), 32>>>(dqkv, scratch, dout, qkv, att, T, C, NH, causal);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------- bf16: flash attention

#define FA_TILE 64
#define FA_THREADS 128  // 4 warps x 16 rows

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// Four 8x8 bf16 matrices from shared memory; each lane passes one row address (see the *_row/_col helpers).
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
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
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait(void) { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
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
        cp_async16(&dst.x[r][c], src + (ok ? t * ld + c : 0), ok ? 16 : 0);
    }
}

// The A fragments of rows [r0, r0+16) of a [row][HD] tile (all HD/16 column blocks).
template <int HD> __device__ __forceinline__ void load_a_frags(uint32_t a[HD / 16][4], const FaTile<HD> &X, int r0, int lane) {
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) ldsm_x4(a[kk], &X.x[r0 + a_row(lane)][kk * 16 + a_col(lane)]);
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
                ldsm_x4(b, &Y.x[np * 16 + b_row(lane)][kk * 16 + b_col(lane)]);
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
        ldsm_x4_trans(b, &Y.x[kk * 16 + a_row(lane)][np * 16 + a_col(lane)]);
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

// 4 blocks per SM up to HD 80 (128 registers): at 143-165 registers (3 blocks) it ran 2-24% slower.
template <int HD>
__global__ void __launch_bounds__(FA_THREADS, HD <= 80 ? 4 : HD <= 96 ? 3 : 2)
    flash_forward_kernel(bf16 *out, float *lse, const bf16 *qkv, int T, int C, int NH, int causal, float scale_log2) {
    extern __shared__ __align__(16) unsigned char smem[];
    FaTile<HD> &Qs = *reinterpret_cast<FaTile<HD> *>(smem), *Ks = &Qs + 1, *Vs = &Qs + 3;
    int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int hd = C / NH, ld = 3 * C, q0 = qt * FA_TILE, r0 = warp * 16;
    const bf16 *qb = qkv + (size_t)b * T * ld + h * hd, *kb = qb + C, *vb = qb + 2 * C;
    int n_kt = (T + FA_TILE - 1) / FA_TILE;
    if (causal) n_kt = min(n_kt, qt + 1);
    load_tile<HD>(Qs, qb, ld, q0, T, hd);
    load_tile<HD>(Ks[0], kb, ld, 0, T, hd);
    load_tile<HD>(Vs[0], vb, ld, 0, T, hd);
    cp_async_commit();

    float o[HD / 8][4], m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < HD / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    uint32_t qf[HD / 16][4];  // this warp's 16 query rows, loaded from shared memory once
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
        if (j == 0) load_a_frags<HD>(qf, Qs, r0, lane);
        // key groups this warp needs: up to the sequence end and, causal, up to its last query; a warp of
        // padding rows only keeps the block's barriers
        int hi = groups_before(T, j * FA_TILE);
        if (causal) hi = min(hi, (q0 + r0 + 15 - j * FA_TILE) / 16 + 1);
        if (q0 + r0 < T) FOR_GROUPS(0, hi, {
            float s[8][4];
            mma_frags_by_tile<HD>(s, qf, Ks[j & 1], lane, 0, hi);
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
            float mx[2] = {-INFINITY, -INFINITY};
            _Pragma("unroll")
            for (int nt = 0; nt < 8; nt++)
                if (IN_GROUPS(nt >> 1, 0, hi))
                    _Pragma("unroll")
                    for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
            float alpha[2], base[2], rs[2] = {0.0f, 0.0f};
            _Pragma("unroll")
            for (int r = 0; r < 2; r++) {
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                float m_new = fmaxf(m_run[r], mx[r] * scale_log2);
                base[r] = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing unmasked yet stays at zero
                alpha[r] = fast_exp2(m_run[r] - base[r]);
                m_run[r] = m_new;
            }
            _Pragma("unroll")
            for (int nt = 0; nt < 8; nt++)
                if (IN_GROUPS(nt >> 1, 0, hi))
                    _Pragma("unroll")
                    for (int e = 0; e < 4; e++) {
                        s[nt][e] = fast_exp2(fmaf(s[nt][e], scale_log2, -base[e >> 1]));
                        rs[e >> 1] += s[nt][e];
                    }
            l_run[0] = l_run[0] * alpha[0] + rs[0];
            l_run[1] = l_run[1] * alpha[1] + rs[1];
            _Pragma("unroll")
            for (int i = 0; i < HD / 8; i++) o[i][0] *= alpha[0], o[i][1] *= alpha[0], o[i][2] *= alpha[1], o[i][3] *= alpha[1];
            mma_probs_by_tile<HD>(o, s, Vs[j & 1], lane, 0, hi);
        });
        __syncthreads();  // the next iteration's loads overwrite this buffer
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int query = q0 + r0 + C_ROW(lane, 2 * r);
        if (query >= T) continue;
        float inv = 1.0f / l_run[r];
        bf16 *y = out + ((size_t)b * T + query) * C + h * hd;
#pragma unroll
        for (int nt = 0; nt < HD / 8; nt++) {
            int col = C_COL(lane, nt, 0);
            if (col < hd) *reinterpret_cast<uint32_t *>(y + col) = pack_bf16(o[nt][2 * r] * inv, o[nt][2 * r + 1] * inv);
        }
        if ((lane & 3) == 0) lse[((size_t)b * NH + h) * T + query] = m_run[r] + log2f(l_run[r]);
    }
}

// delta (B, NH, T) = rowsum(dout * out) per head: the softmax backward's correction term.
__global__ void attention_delta_kernel(float *delta, const bf16 *out, const bf16 *dout, int B, int T, int C, int NH) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * NH) return;
    int h = (int)(idx % NH), t = (int)(idx / NH % T), b = (int)(idx / NH / T), hd = C / NH;
    size_t off = ((size_t)b * T + t) * C + h * hd;
    float s = 0.0f;
    for (int i = 0; i < hd; i += 8) {
        Vec<bf16, 8> o = load_vec<bf16, 8>(out + off + i), g = load_vec<bf16, 8>(dout + off + i);
        for (int k = 0; k < 8; k++) s += to_float(o.v[k]) * to_float(g.v[k]);
    }
    delta[((size_t)b * NH + h) * T + t] = s;
}

// dq for a tile of 64 queries: S = Q K^T, P = exp2(S - lse), dP = dO V^T, dS = P (dP - delta), dQ = scale dS K.
// 3 blocks per SM up to HD 80 (168 registers), as the dk/dv kernel.
template <int HD>
__global__ void __launch_bounds__(FA_THREADS, HD <= 80 ? 3 : 2)
    flash_backward_dq_kernel(bf16 *dqkv, const bf16 *qkv, const bf16 *dout, const float *lse, const float *delta, int T, int C,
                             int NH, int causal, float scale_log2, float scale) {
    extern __shared__ __align__(16) unsigned char smem[];
    FaTile<HD> &Qs = *reinterpret_cast<FaTile<HD> *>(smem), &dOs = *(&Qs + 1), *Ks = &Qs + 2, *Vs = &Qs + 4;
    int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int hd = C / NH, ld = 3 * C, q0 = qt * FA_TILE, r0 = warp * 16;
    const bf16 *qb = qkv + (size_t)b * T * ld + h * hd, *kb = qb + C, *vb = qb + 2 * C;
    const bf16 *ob = dout + (size_t)b * T * C + h * hd;
    int n_kt = (T + FA_TILE - 1) / FA_TILE;
    if (causal) n_kt = min(n_kt, qt + 1);
    load_tile<HD>(Qs, qb, ld, q0, T, hd);
    load_tile<HD>(dOs, ob, C, q0, T, hd);
    load_tile<HD>(Ks[0], kb, ld, 0, T, hd);
    load_tile<HD>(Vs[0], vb, ld, 0, T, hd);
    cp_async_commit();
    float row_lse[2], row_delta[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int query = q0 + r0 + C_ROW(lane, 2 * r);
        size_t i = ((size_t)b * NH + h) * T + min(query, T - 1);
        row_lse[r] = lse[i], row_delta[r] = delta[i];
    }
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
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int query = q0 + r0 + C_ROW(lane, 2 * r);
        if (query >= T) continue;
        bf16 *y = dqkv + ((size_t)b * T + query) * ld + h * hd;
#pragma unroll
        for (int nt = 0; nt < HD / 8; nt++) {
            int col = C_COL(lane, nt, 0);
            if (col < hd) *reinterpret_cast<uint32_t *>(y + col) = pack_bf16(dq[nt][2 * r] * scale, dq[nt][2 * r + 1] * scale);
        }
    }
}

// dk, dv for a tile of 64 keys, each warp 16 of them, over the query tiles that can see them:
// P^T = exp2(K Q^T - lse), dV += P^T dO, dP^T = V dO^T, dS^T = P^T (dP^T - delta), dK += scale dS^T Q.
// 3 blocks per SM up to HD 80 (168 registers): 6-13% faster than 2 blocks at 178-240 registers.
template <int HD>
__global__ void __launch_bounds__(FA_THREADS, HD <= 80 ? 3 : 2)
    flash_backward_dkdv_kernel(bf16 *dqkv, const bf16 *qkv, const bf16 *dout, const float *lse, const float *delta, int T, int C,
                               int NH, int causal, float scale_log2, float scale) {
    extern __shared__ __align__(16) unsigned char smem[];
    FaTile<HD> &Ks = *reinterpret_cast<FaTile<HD> *>(smem), &Vs = *(&Ks + 1), *Qs = &Ks + 2, *dOs = &Ks + 4;
    float(*lse_s)[FA_TILE] = reinterpret_cast<float(*)[FA_TILE]>(&Ks + 6), (*delta_s)[FA_TILE] = lse_s + 2;
    int kt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int hd = C / NH, ld = 3 * C, k0 = kt * FA_TILE, r0 = warp * 16;
    const bf16 *qb = qkv + (size_t)b * T * ld + h * hd, *kb = qb + C, *vb = qb + 2 * C;
    const bf16 *ob = dout + (size_t)b * T * C + h * hd;
    const float *lse_h = lse + ((size_t)b * NH + h) * T, *delta_h = delta + ((size_t)b * NH + h) * T;
    int n_qt = (T + FA_TILE - 1) / FA_TILE, i0 = causal ? kt : 0;
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
    LOAD_QUERY_TILE(i0);
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
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int key = k0 + r0 + C_ROW(lane, 2 * r);
        if (key >= T) continue;
        bf16 *yk = dqkv + ((size_t)b * T + key) * ld + C + h * hd, *yv = yk + C;
#pragma unroll
        for (int nt = 0; nt < HD / 8; nt++) {
            int col = C_COL(lane, nt, 0);
            if (col >= hd) continue;
            *reinterpret_cast<uint32_t *>(yk + col) = pack_bf16(dk[nt][2 * r] * scale, dk[nt][2 * r + 1] * scale);
            *reinterpret_cast<uint32_t *>(yv + col) = pack_bf16(dv[nt][2 * r], dv[nt][2 * r + 1]);
        }
    }
}

// Shared-memory bytes of each kernel, and the launch (the dynamic limit is raised once per kernel).
template <int HD> static void flash_forward(bf16 *out, float *lse, const bf16 *qkv, int B, int T, int C, int NH, int causal) {
    size_t smem = 5 * sizeof(FaTile<HD>);
    static int configured = 0;
    if (!configured) {
        cudaCheck(cudaFuncSetAttribute(flash_forward_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        configured = 1;
    }
    float scale_log2 = 1.4426950408889634f / sqrtf((float)(C / NH));
    flash_forward_kernel<HD><<<dim3(ceil_div(T, FA_TILE), NH, B), FA_THREADS, smem>>>(out, lse, qkv, T, C, NH, causal, scale_log2);
    cudaCheckLaunch();
}

template <int HD>
static void flash_backward(bf16 *dqkv, const float *delta, const bf16 *dout, const bf16 *qkv, const float *lse, int B, int T,
                           int C, int NH, int causal) {
    size_t smem_dq = 6 * sizeof(FaTile<HD>), smem_dkdv = 6 * sizeof(FaTile<HD>) + 4 * FA_TILE * sizeof(float);
    static int configured = 0;
    if (!configured) {
        cudaCheck(cudaFuncSetAttribute(flash_backward_dq_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_dq));
        cudaCheck(cudaFuncSetAttribute(flash_backward_dkdv_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_dkdv));
        configured = 1;
    }
    float scale = 1.0f / sqrtf((float)(C / NH)), scale_log2 = 1.4426950408889634f * scale;
    dim3 grid(ceil_div(T, FA_TILE), NH, B);
    flash_backward_dq_kernel<HD><<<grid, FA_THREADS, smem_dq>>>(dqkv, qkv, dout, lse, delta, T, C, NH, causal, scale_log2, scale);
    cudaCheckLaunch();
    flash_backward_dkdv_kernel<HD><<<grid, FA_THREADS, smem_dkdv>>>(dqkv, qkv, dout, lse, delta, T, C, NH, causal, scale_log2, scale);
    cudaCheckLaunch();
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

void attention_forward_gpu(bf16 *out, float *lse, const bf16 *qkv, int B, int T, int C, int NH, int causal) {
    if (B == 0) return;
    DISPATCH_HD(padded_head_dim(C, NH), flash_forward<HD>(out, lse, qkv, B, T, C, NH, causal));
}

void attention_backward_gpu(bf16 *dqkv, float *scratch, const bf16 *dout, const bf16 *qkv, const bf16 *out, const float *lse,
                        int B, int T, int C, int NH, int causal) {
    if (B == 0) return;
    int hd_pad = padded_head_dim(C, NH);
    size_t rows = (size_t)B * T * NH;
    attention_delta_kernel<<<ceil_div((long)rows, 256), 256>>>(scratch, out, dout, B, T, C, NH);
    cudaCheckLaunch();
    DISPATCH_HD(hd_pad, flash_backward<HD>(dqkv, scratch, dout, qkv, lse, B, T, C, NH, causal));
}

size_t attention_stats_elems(int bf16_path, int B, int T, int NH) {
    return bf16_path ? (size_t)B * NH * T : (size_t)B * NH * T * T;
}
