// clip_gpu.cu: the CLIP training step on one GPU (see clip_gpu.h): device buffers, forward and backward of
// both towers and the loss in the order of model/clip_cpu.c, gradient accumulation over micro-batches, the
// fused optimizer step, the memory plan and the per-family step-time profile. The model code is a template
// over the activation type T (float for precision fp32, bf16 for bf16 and int8_switchback, whose SwitchBack
// linears sit behind linear_forward / linear_backward and its halves); kernels live in kernels/. In a multi-GPU run
// (clip_dist.h) the same step takes this rank's share of the batch, computes the loss over the global batch,
// reduces the gradients over the ranks while backward runs, and optionally shards the optimizer (ZeRO-1).
#include <math.h>
#include <omp.h>
#include <string.h>

#include "../kernels/adamw.cuh"
#include "../kernels/attention.cuh"
#include "../kernels/bf16_gemm.cuh"
#include "../kernels/embed.cuh"
#include "../kernels/gelu.cuh"
#include "../kernels/hopper.cuh"
#include "../kernels/layernorm.cuh"
#include "../kernels/loss.cuh"
#include "../kernels/matmul.cuh"
#include "../kernels/reduce.cuh"
#include "../kernels/switchback.cuh"
#include "clip_dist.h"
#include "clip_gpu.h"
extern "C" {
#include "ops_cpu.h"
#include "utils.h"
}

#define PROF_EVENTS 8192
#define PROF_GAP (-1)  // an interval between API calls: not GPU work of any family

const char *const PROF_NAMES[PROF_FAMILIES] = {"GEMMs", "attention fwd", "attention bwd", "layernorm+residual fwd",
                                                "layernorm bwd", "GELU", "bias/ls grads", "embed/pool/memset", "loss",
                                                "optimizer", "input wait", "comm wait"};

// One residual block's saved activations (T-typed where void *). Under recompute (the block's own level: 0 for
// the first recompute_keep blocks of a tower), ln_1/ln_2 and fc_gelu point at shared scratch instead of
// per-layer storage; attn/mlp (the branch outputs) are kept only with layer-scale, whose gradient needs them.
// precision int8_switchback adds the int8 copies of the block's linear weights, and of the linears' inputs (xq,
// xs: saved per layer where the memory-efficient variant keeps them instead of the bf16 input, else shared
// scratch). block_plan sets what the block saves.
typedef struct {
    int recompute;               // this block's recompute level
    int sb_saved[SB_LINEARS];    // by SB_LINEAR_*: the linear saves its int8 input (not the bf16 one) for backward
    int in_bf16[SB_LINEARS];     // the linear's input producer writes the bf16 input (a GEMM or the backward reads it)
    void *ln_1, *qkv, *att_y, *attn, *res_1, *ln_2, *fc, *fc_gelu, *mlp, *res_2;  // (N, D), (N, 3D), (N, H) ...
    float *ln_1_mean, *ln_1_rstd, *ln_2_mean, *ln_2_rstd;                          // (N)
    float *att_stats;                                                              // attention_stats_elems
    int8_t *xq[SB_LINEARS];                                                        // (N, input width), by SB_LINEAR_*
    float *xs[SB_LINEARS];                                                         // (N) row maxima of the inputs
    SbWeight w8[SB_LINEARS];
} BlockBuf;

typedef struct {
    const TowerLayout *t;
    // The micro-batch in the buffers: B sequences of `tokens` rows each (N = B tokens rows), or, where seq is set (the
    // text tower, upload_text), `seqs` sequences packed one after another, sequence s at rows seq[s] .. seq[s + 1] - 1
    // (device), at most `tokens` each, N = rows.
    int tokens, rows, seqs;
    const int *seq;
    // The rows the tower is pooled at: row b pool_tn + pool[b] (pool on the device; NULL: + 0, the class token). The
    // last block runs its branch after attention on these rows only (tower_forward): pool_x, pool_att (mb, D) hold them.
    const int *pool;
    int pool_tn;
    void *pool_x, *pool_att;
    void *x0;                  // (N, D) residual stream entering block 0
    BlockBuf *blocks;
    float *pooled, *pooled_ln;  // (mb, D) the pooled rows and their LayerNorm (ln_post / ln_final), fp32
    float *pooled_mean, *pooled_rstd;
    size_t ln_w, ln_b, proj;   // layout offsets of that LayerNorm and the projection
} TowerBuf;

// The weight gradients that tower_backward runs on their own stream, by the event marking each one's end.
enum { WG_C_PROJ, WG_C_FC, WG_OUT_PROJ, WG_QKV, WG_EVENTS };

struct ClipGPU {
    Config cfg;
    const ClipLayout *L;
    int use_bf16, mb, max_batch, recompute, recompute_keep, has_ls;
    int fused_gelu;  // c_fc's GEMM computes the GELU in its epilogue (bf16_gemm): bf16 c_fc and c_proj on an sm_90 GPU
    char *arena;
    // parameters: fp32 master, the T-typed copy the GEMMs read (the master itself in fp32), gradients, moments
    float *params, *grads, *m, *u;
    bf16 *params_bf16;
    void *wts;
    AdamWPlan plan;
    // The weight-gradient GEMMs overwrite their gradients in a step's first backward micro-batch (accumulate = 0)
    // and add into them after; every other gradient is added into, from zero (grad_zero: the rest of the buffer).
    ZeroPlan grad_zero;
    int accumulate;
    float logit_scale_host;
    long stats_t;  // the optimizer step whose RMS sums clip_gpu_grad_norm made (0: none)
    // inputs of a micro-batch: [images | the packed text: ids, pooled rows, positions, sequences, token and position
    // indexes], two device buffers and two pinned host stages used alternately, copied on their own stream (upload_text)
    size_t input_bytes, off_tokens, off_eot, off_index, off_pos, off_seq, off_pos_index;
    char *inputs[2], *stage[2];
    cudaStream_t copy_stream;
    cudaEvent_t stage_free[2], consumed[2], text_ready, images_ready;
    int stage_next, cur, *vocab_counts;
    int num_unique[2], num_chunks[2], pos_unique[2], pos_chunks[2];  // of each input stage's token and position indexes
    float *tok_scratch;  // (mb * context_length, Dt) partial sums of the token-embedding backward
    // image tower front: patches (mb*G2, 3P^2), v_embed (N, Dv) and ln_pre's statistics
    void *patches, *v_embed;
    float *ln_pre_mean, *ln_pre_rstd;
    TowerBuf vis, txt;
    // scratch shared by both towers (sized for the larger)
    // d_qkv (N, 3D): attention's input gradient (qkv's output gradient); d_mlp (N, H): c_proj's input gradient (the GELU's
    // and c_fc's output gradient); one buffer when the weight gradients share the default stream (tower_backward)
    void *branch, *ln_scratch, *gelu_scratch, *dres, *d_a, *d_b, *d_qkv, *d_mlp;
    float *att_scratch, *dpool, *dpool_ln;
    // weight_grad_stream: the backward's weight-gradient GEMMs run on wg_stream (NULL: off); wg_fork orders one after the
    // default stream's work, wg_done[WG_*] marks the end of the last one of each kind (tower_backward)
    cudaStream_t wg_stream;
    cudaEvent_t wg_fork, wg_done[WG_EVENTS];
    // SwitchBack (precision int8_switchback): which linears (SB_LINEAR_*) run it (per block: which save their int8
    // input, whose producers write the bf16 input); the layer's scratch
    int sb_on[SB_LINEARS], sb_max_M, sb_max_C;
    SwitchBack sb;
    SbWeightBatch sb_batch;  // every SwitchBack weight, quantized with the optimizer's maxima (n = 0: not used)
    int8_t *xq_scratch;  // (N, max(D, H)) int8 inputs of the linears that do not save them
    float *xs_scratch;   // (N)
    // the whole batch: features, their gradients, loss
    float *img_feat, *txt_feat, *dimg, *dtxt, *loss_scratch, *loss, *norm;
    int last_batch;
    // profiling
    int prof_on, prof_n, prof_fam[PROF_EVENTS];
    cudaEvent_t prof_ev[PROF_EVENTS];
    double prof_ms[PROF_FAMILIES];
    // multi-GPU (clip_dist.h); a single process is rank 0 of 1 with dist NULL. This rank's max_batch pairs are
    // rows [rank max_batch, (rank + 1) max_batch) of the global batch.
    GpuDist *dist;
    int rank, world, zero, reducing, next_bucket, num_buckets;
    bf16 *grads_bf16;  // (buffer_elems) bf16 scratch of the gradient sum with grad_reduce = bf16, else NULL
    // Gradient buckets in the order backward finishes them (text head, text blocks last to first, text front,
    // then the image tower alike): ranges [lo, hi) of the flat buffers. With ZeRO-1 this rank owns
    // [own_lo, own_hi) of each, and keeps its moments at state_off of the compact m, u.
    size_t *bucket_lo, *bucket_hi, *own_lo, *own_hi, *state_off;
    // ZeRO-1: the parameters' all-gather after the update runs on the communicator's stream bucket by bucket in
    // gather_order (the order the next forward reads them); gathered[k] completes bucket k's parameters and bf16
    // copy, and the forward waits for it just before it first reads them (wait_params) while gather_pending[k].
    int *gather_order, *gather_pending, gathers_pending;
    cudaEvent_t *gathered;
    float *feat_n, *dfeat_n;  // (2, world max_batch, E): normalised [image | text] features of all ranks; their gradients
};

template <typename T> static inline T *as(void *p) { return (T *)p; }

// ---------------------------------------------------------------- profiling

static void prof_flush(ClipGPU *g) {
    if (g->prof_n < 2) return;
    cudaCheck(cudaEventSynchronize(g->prof_ev[g->prof_n - 1]));
    for (int i = 0; i + 1 < g->prof_n; i++) {
        if (g->prof_fam[i] == PROF_GAP) continue;
        float ms;
        cudaCheck(cudaEventElapsedTime(&ms, g->prof_ev[i], g->prof_ev[i + 1]));
        g->prof_ms[g->prof_fam[i]] += ms;
    }
    // the last event starts the next window (swapped, so every event handle stays in the pool)
    cudaEvent_t last = g->prof_ev[g->prof_n - 1];
    g->prof_ev[g->prof_n - 1] = g->prof_ev[0], g->prof_ev[0] = last;
    g->prof_fam[0] = g->prof_fam[g->prof_n - 1];
    g->prof_n = 1;
}

// The GPU work enqueued from here on (until the next mark) belongs to `family`.
static void mark(ClipGPU *g, int family) {
    if (!g->prof_on) return;
    if (g->prof_n == PROF_EVENTS) prof_flush(g);
    cudaCheck(cudaEventRecord(g->prof_ev[g->prof_n], 0));
    g->prof_fam[g->prof_n++] = family;
}

void clip_gpu_profile(ClipGPU *g, int on) {
    if (on && !g->prof_ev[0])
        for (int i = 0; i < PROF_EVENTS; i++) cudaCheck(cudaEventCreate(&g->prof_ev[i]));
    g->prof_on = on, g->prof_n = 0;
    memset(g->prof_ms, 0, sizeof(g->prof_ms));
}

void clip_gpu_profile_read(ClipGPU *g, double ms[PROF_FAMILIES]) {
    mark(g, PROF_GAP);
    prof_flush(g);
    memcpy(ms, g->prof_ms, sizeof(g->prof_ms));
}

// ---------------------------------------------------------------- multi-GPU: gradient buckets, shards, collectives

// Fills the buckets: ranges of the flat buffers whose gradients are final at one point of backward, in that
// order. They tile [0, buffer_elems): ln_1 opens each block's tensors and the layout runs vision front,
// vision blocks, vision head, text front, text blocks, text head, logit_scale (model/clip_layout.c).
static void build_buckets(ClipGPU *g) {
    const ClipLayout *L = g->L;
    const TowerLayout *V = &L->visual, *T = &L->text;
    int n = V->layers + T->layers + 4, k = 0;
    g->bucket_lo = (size_t *)callocCheck((size_t)n, sizeof(size_t)), g->bucket_hi = (size_t *)callocCheck((size_t)n, sizeof(size_t));
    g->own_lo = (size_t *)callocCheck((size_t)n, sizeof(size_t)), g->own_hi = (size_t *)callocCheck((size_t)n, sizeof(size_t));
    g->state_off = (size_t *)callocCheck((size_t)n, sizeof(size_t));
    g->gather_order = (int *)callocCheck((size_t)n, sizeof(int)), g->gather_pending = (int *)callocCheck((size_t)n, sizeof(int));
#define BUCKET(lo, hi) (g->bucket_lo[k] = (lo), g->bucket_hi[k] = (hi), k++)
    BUCKET(L->ln_final_w, L->buffer_elems);  // ln_final, text_projection, logit_scale (its gradient comes from the loss)
    for (int l = T->layers - 1; l >= 0; l--) BUCKET(T->blocks[l].ln_1_w, l + 1 < T->layers ? T->blocks[l + 1].ln_1_w : L->ln_final_w);
    BUCKET(L->token_embedding, T->blocks[0].ln_1_w);  // token embedding, positions
    BUCKET(L->ln_post_w, L->token_embedding);  // ln_post, proj
    for (int l = V->layers - 1; l >= 0; l--) BUCKET(V->blocks[l].ln_1_w, l + 1 < V->layers ? V->blocks[l + 1].ln_1_w : L->ln_post_w);
    BUCKET(0, V->blocks[0].ln_1_w);  // conv1, class embedding, positions, ln_pre
#undef BUCKET
    g->num_buckets = n;
    size_t covered = 0;
    for (int i = 0; i < n; i++) covered += g->bucket_hi[i] - g->bucket_lo[i];
    if (covered != L->buffer_elems) fatal("clip_gpu: gradient buckets cover %zu of %zu elements", covered, L->buffer_elems);
    // the forward's order: the text head first (it holds logit_scale, which the host reads after the update),
    // then text front, text blocks 0, 1, ..., image front, vision blocks 0, 1, ..., vision head
    int o = 0;
    g->gather_order[o++] = 0;
    for (int i = T->layers + 1; i >= 1; i--) g->gather_order[o++] = i;
    for (int i = n - 1; i >= T->layers + 2; i--) g->gather_order[o++] = i;
}

// Moments a rank keeps under ZeRO-1 (the largest part of each bucket: every rank allocates the same).
static size_t shard_elems(const ClipGPU *g) {
    size_t n = 0, lo, hi;
    for (int k = 0; k < g->num_buckets; k++) dist_part(g->bucket_hi[k] - g->bucket_lo[k], g->world, 0, &lo, &hi), n += hi - lo;
    return n;
}

// Backward has finished the next bucket's gradients. In the last micro-batch's backward of a multi-GPU step they
// are reduced over the ranks on the communicator's stream while backward goes on: all-reduced, or with ZeRO-1
// reduce-scattered to the owners of their parts.
static void grads_done(ClipGPU *g) {
    if (!g->reducing) return;
    int k = g->next_bucket++;
    size_t lo = g->bucket_lo[k];
    gd_begin(g->dist);
    gd_reduce_grads(g->dist, g->grads + lo, g->grads_bf16 ? g->grads_bf16 + lo : NULL, g->bucket_hi[k] - lo, g->zero);
}

// ZeRO-1, after each rank updated its parts of the parameters: every part to every rank and the bf16 copy of
// the whole, bucket by bucket on the communicator's stream, so that the transfer runs beside the next forward.
static void gather_params(ClipGPU *g) {
    gd_begin(g->dist);
    for (int i = 0; i < g->num_buckets; i++) {
        int k = g->gather_order[i];
        size_t lo = g->bucket_lo[k], n = g->bucket_hi[k] - lo;
        gd_gather_parts(g->dist, g->params + lo, n);
        if (g->params_bf16) copy_to_bf16_gpu(g->params_bf16 + lo, g->params + lo, n, gd_stream(g->dist));
        cudaCheck(cudaEventRecord(g->gathered[k], gd_stream(g->dist)));
        g->gather_pending[k] = 1;
    }
    g->gathers_pending = g->num_buckets;
}

// The default stream's next work reads the parameters of bucket k / of the bucket holding layout offset off:
// it waits for their gather if one is pending.
static void wait_bucket(ClipGPU *g, int k) {
    if (!g->gather_pending[k]) return;
    mark(g, PROF_COMM);
    cudaCheck(cudaStreamWaitEvent(0, g->gathered[k], 0));
    g->gather_pending[k] = 0, g->gathers_pending--;
}
static void wait_params(ClipGPU *g, size_t off) {
    if (!g->gathers_pending) return;
    int k = 0;
    while (off < g->bucket_lo[k] || off >= g->bucket_hi[k]) k++;  // the buckets tile the buffer
    wait_bucket(g, k);
}
static void wait_all_params(ClipGPU *g) {
    for (int k = 0; k < g->num_buckets && g->gathers_pending; k++) wait_bucket(g, k);
}

// ZeRO-1: every rank's parts of full (buffer_elems, e.g. the parameters after each rank updated its parts) to
// every rank.
static void gather_parts(ClipGPU *g, float *full) {
    gd_begin(g->dist);
    for (int k = 0; k < g->num_buckets; k++) gd_gather_parts(g->dist, full + g->bucket_lo[k], g->bucket_hi[k] - g->bucket_lo[k]);
    gd_end(g->dist);
}

// ZeRO-1 moments: full (buffer_elems) from every rank's compact state (gathered into scratch full), or this
// rank's compact state from full.
static void unshard_state(ClipGPU *g, float *full, const float *state) {
    for (int k = 0; k < g->num_buckets; k++)
        cudaCheck(cudaMemcpyAsync(full + g->own_lo[k], state + g->state_off[k], (g->own_hi[k] - g->own_lo[k]) * sizeof(float),
                                  cudaMemcpyDeviceToDevice, 0));
    gather_parts(g, full);
}
static void shard_state(ClipGPU *g, float *state, const float *full) {
    for (int k = 0; k < g->num_buckets; k++)
        cudaCheck(cudaMemcpyAsync(state + g->state_off[k], full + g->own_lo[k], (g->own_hi[k] - g->own_lo[k]) * sizeof(float),
                                  cudaMemcpyDeviceToDevice, 0));
}

// ---------------------------------------------------------------- buffers

typedef struct {
    char *base;  // NULL: only count
    size_t used;
} Arena;

static void *take(Arena *a, size_t bytes, size_t *kind) {
    void *p = a->base ? a->base + a->used : NULL;
    bytes = (bytes + 255) / 256 * 256;
    a->used += bytes, *kind += bytes;
    return p;
}
#define TAKE_F(a, n, kind) ((float *)take(a, (size_t)(n) * sizeof(float), kind))

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static void carve_tower(ClipGPU *g, Arena *a, TowerBuf *tb, GpuMemoryPlan *p) {
    const TowerLayout *t = tb->t;
    size_t es = g->use_bf16 ? 2 : 4, N = (size_t)g->mb * t->tokens, D = t->width, H = t->mlp;
    size_t *act = &p->activations;
    tb->tokens = t->tokens, tb->seq = NULL, tb->pool = NULL, tb->pool_tn = t->tokens;
    tb->x0 = take(a, N * D * es, act);
    tb->pool_x = take(a, (size_t)g->mb * D * es, act), tb->pool_att = take(a, (size_t)g->mb * D * es, act);
    size_t in[SB_LINEARS] = {D, D, D, H}, out[SB_LINEARS] = {3 * D, D, H, D};  // the linears' widths
    for (int l = 0; l < t->layers; l++) {
        BlockBuf *k = &tb->blocks[l];
        int r = k->recompute;
        k->ln_1 = r < 2 && !k->sb_saved[SB_LINEAR_QKV] ? take(a, N * D * es, act) : g->ln_scratch;
        k->ln_1_mean = TAKE_F(a, N, act), k->ln_1_rstd = TAKE_F(a, N, act);
        k->qkv = take(a, N * 3 * D * es, act);
        k->att_y = take(a, N * D * es, act);
        k->att_stats = TAKE_F(a, attention_stats_elems(g->use_bf16, g->mb, t->tokens, t->heads), act);
        k->attn = g->has_ls ? take(a, N * D * es, act) : g->branch;
        k->res_1 = take(a, N * D * es, act);
        k->ln_2 = r < 2 && !k->sb_saved[SB_LINEAR_C_FC] ? take(a, N * D * es, act) : g->ln_scratch;
        k->ln_2_mean = TAKE_F(a, N, act), k->ln_2_rstd = TAKE_F(a, N, act);
        k->fc = take(a, N * H * es, act);
        k->fc_gelu = r < 1 && !k->sb_saved[SB_LINEAR_C_PROJ] ? take(a, N * H * es, act) : g->gelu_scratch;
        k->mlp = g->has_ls ? take(a, N * D * es, act) : g->branch;
        k->res_2 = take(a, N * D * es, act);
        for (int i = 0; i < SB_LINEARS; i++) {
            if (k->sb_saved[i]) k->xq[i] = (int8_t *)take(a, N * in[i], act), k->xs[i] = TAKE_F(a, N, act);
            else k->xq[i] = g->xq_scratch, k->xs[i] = g->xs_scratch;
            if (!g->sb_on[i]) continue;
            SbWeight *w8 = &k->w8[i];  // W (out, in) and W^T in int8, the maxima (out + in + 1)
            w8->N = (int)out[i], w8->K = (int)in[i];
            w8->q = (int8_t *)take(a, out[i] * in[i], &p->weights), w8->qt = (int8_t *)take(a, out[i] * in[i], &p->weights);
            w8->absmax = TAKE_F(a, out[i] + in[i] + 1, &p->weights);
        }
    }
    tb->pooled = TAKE_F(a, g->mb * D, &p->other), tb->pooled_ln = TAKE_F(a, g->mb * D, &p->other);
    tb->pooled_mean = TAKE_F(a, g->mb, &p->other), tb->pooled_rstd = TAKE_F(a, g->mb, &p->other);
}

// Lays every buffer out in one allocation (or only counts the bytes when a->base is NULL).
static void carve(ClipGPU *g, Arena *a, GpuMemoryPlan *p) {
    const ClipLayout *L = g->L;
    const Config *c = &g->cfg;
    size_t es = g->use_bf16 ? 2 : 4, n = L->buffer_elems, mb = g->mb, E = c->embed_dim;
    memset(p, 0, sizeof(*p));
    g->params = TAKE_F(a, n, &p->weights);
    g->params_bf16 = g->use_bf16 ? (bf16 *)take(a, n * 2, &p->weights) : NULL;
    g->grads = TAKE_F(a, n, &p->grads);
    g->grads_bf16 = g->world > 1 && c->grad_reduce == GRAD_REDUCE_BF16 ? (bf16 *)take(a, n * 2, &p->grads) : NULL;
    size_t state = g->zero ? shard_elems(g) : n;  // ZeRO-1: the moments of this rank's parts only
    g->m = TAKE_F(a, state, &p->optimizer), g->u = TAKE_F(a, state, &p->optimizer);
    p->optimizer += (size_t)(state / ADAMW_CHUNK + L->num_tensors + g->num_buckets) * 32;  // the plan's tables (adamw_plan_init)
    p->grads += (size_t)(n / ADAMW_CHUNK + L->num_tensors) * 12;                          // grad_zero's (zero_plan_init)

    // inputs: images uint8, then the packed text (upload_text): token ids, the pooled rows, positions, the sequences'
    // first rows (up to TEXT_PACK_ALIGN padding sequences after the captions), the token and position indexes
    int S = c->image_size, Tt = c->context_length;
    size_t text_rows = mb * Tt;
    g->off_tokens = (mb * 3 * S * S + 255) / 256 * 256;
    g->off_eot = g->off_tokens + (text_rows * sizeof(int32_t) + 255) / 256 * 256;
    g->off_pos = g->off_eot + (mb * sizeof(int) + 255) / 256 * 256;
    g->off_seq = g->off_pos + (text_rows * sizeof(int32_t) + 255) / 256 * 256;
    g->off_index = g->off_seq + ((mb + TEXT_PACK_ALIGN + 1) * sizeof(int) + 255) / 256 * 256;
    g->off_pos_index = g->off_index + (token_index_ints(text_rows) * sizeof(int) + 255) / 256 * 256;
    g->input_bytes = g->off_pos_index + token_index_ints(text_rows) * sizeof(int);
    g->inputs[0] = (char *)take(a, g->input_bytes, &p->other), g->inputs[1] = (char *)take(a, g->input_bytes, &p->other);
    g->tok_scratch = TAKE_F(a, mb * Tt * L->text.width, &p->other);

    // shared scratch, sized for the larger tower
    const TowerLayout *towers[2] = {&L->visual, &L->text};
    size_t nd = 0, nh = 0, n3d = 0, nwide = 0, att = 0, bd = 0, rows = 0, cols = 0;
    for (int i = 0; i < 2; i++) {
        const TowerLayout *t = towers[i];
        size_t N = mb * t->tokens;
        rows = max_sz(rows, N), cols = max_sz(cols, max_sz(3 * t->width, t->mlp));
        nd = max_sz(nd, N * t->width), nh = max_sz(nh, N * t->mlp), n3d = max_sz(n3d, N * 3 * t->width);
        nwide = max_sz(nwide, N * max_sz(3 * t->width, t->mlp));
        att = max_sz(att, attention_stats_elems(g->use_bf16, (int)mb, t->tokens, t->heads));
        bd = max_sz(bd, mb * t->width);
    }
    size_t *o = &p->other;
    g->branch = take(a, nd * es, o);  // also the patch embeddings (fewer rows than the vision tower)
    int int8 = c->precision == PRECISION_INT8_SWITCHBACK;
    // scratch for the recomputed activations, when some block recomputes (both towers' blocks past recompute_keep)
    int some = g->recompute_keep < L->visual.layers || g->recompute_keep < L->text.layers;
    g->ln_scratch = g->recompute >= 2 && some ? take(a, nd * es, o) : NULL;
    g->gelu_scratch = g->recompute >= 1 && some ? take(a, nh * es, o) : NULL;
    g->xq_scratch = int8 ? (int8_t *)take(a, nh, o) : NULL;
    g->xs_scratch = int8 ? TAKE_F(a, rows, o) : NULL;
    g->sb_max_M = (int)rows, g->sb_max_C = (int)cols;
    if (int8) *o += switchback_scratch_bytes((SwitchBackMode)c->switchback_variant, (int)rows, (int)cols);  // switchback_init's
    g->dres = take(a, nd * es, o), g->d_a = take(a, nd * es, o), g->d_b = take(a, nd * es, o);
    if (c->weight_grad_stream) g->d_qkv = take(a, n3d * es, o), g->d_mlp = take(a, nh * es, o);
    else g->d_qkv = g->d_mlp = take(a, nwide * es, o);
    g->att_scratch = TAKE_F(a, att, o);
    g->dpool = TAKE_F(a, bd, o), g->dpool_ln = TAKE_F(a, bd, o);

    // image tower front (saved for backward)
    int P = c->patch_size, G2 = (S / P) * (S / P);
    g->patches = take(a, mb * G2 * 3 * P * P * es, &p->activations);
    g->v_embed = take(a, mb * L->visual.tokens * L->visual.width * es, &p->activations);
    g->ln_pre_mean = TAKE_F(a, mb * L->visual.tokens, &p->activations);
    g->ln_pre_rstd = TAKE_F(a, mb * L->visual.tokens, &p->activations);
    carve_tower(g, a, &g->vis, p);
    carve_tower(g, a, &g->txt, p);

    // the whole batch: this rank's features (an encode takes up to batch_size), the global batch's for the loss
    size_t Bt = (size_t)g->max_batch, Ng = Bt * g->world;
    g->img_feat = TAKE_F(a, c->batch_size * E, o), g->txt_feat = TAKE_F(a, c->batch_size * E, o);
    g->dimg = TAKE_F(a, Bt * E, o), g->dtxt = TAKE_F(a, Bt * E, o);
    g->feat_n = TAKE_F(a, 2 * Ng * E, o), g->dfeat_n = TAKE_F(a, 2 * Ng * E, o);
    g->loss_scratch = TAKE_F(a, contrastive_loss_scratch_elems((int)Bt, (int)Ng), o);
    g->loss = TAKE_F(a, 1, o), g->norm = TAKE_F(a, 1, o);
    // cuBLASLt workspaces (one per stream running GEMMs), column-sum partials (allocated by the kernels)
    p->other += (32u << 20) * (c->weight_grad_stream ? 2 : 1) + COLSUM_PARTIAL_BYTES;
    p->total = p->weights + p->grads + p->optimizer + p->activations + p->other;
}

// ---------------------------------------------------------------- forward

// The pooled features are fp32 and the two projections use the fp32 master weights (tiny GEMMs).
// out (B, E) = x (B, C) @ proj (C, E)
static void proj_forward(float *out, const float *x, const float *proj, int B, int C, int E) {
    matmul_cm(out, CUDA_R_32F, E, proj, E, 0, x, C, 0, CUDA_R_32F, NULL, E, B, C, 1.0f, 0.0f, 0);
}
// dx (B, C) = dout (B, E) @ proj^T;  dproj (C, E) += x^T @ dout
static void proj_backward(float *dx, float *dproj, const float *dout, const float *x, const float *proj, int B, int C, int E,
                          int accumulate) {
    matmul_cm(dx, CUDA_R_32F, C, proj, E, 1, dout, E, 0, CUDA_R_32F, NULL, C, B, E, 1.0f, 0.0f, 0);
    matmul_cm(dproj, CUDA_R_32F, E, dout, E, 0, x, C, 1, CUDA_R_32F, NULL, E, C, B, 1.0f, accumulate ? 1.0f : 0.0f, 0);
}

static const float *opt_param(const ClipGPU *g, size_t off) { return off == NO_TENSOR ? NULL : g->params + off; }

// The transformer linears, i = SB_LINEAR_* of block k: y (N, OC) = x (N, C) @ W^T + b with W at layout offset w
// and b at b. SwitchBack (int8 x row-wise . int8 W tensor- or vector-wise) for the layers precision
// int8_switchback replaces, else the cuBLASLt GEMM of the T-typed weight copy. SwitchBack reads x's int8 copy from
// k->xq[i], k->xs[i] (the saved activation where sb_saved[i], else scratch): written there by x's producer
// (LayerNorm, GELU; x is then not read and may be unwritten), or for out_proj quantized here from x.
// res (N, OC), where not NULL: added in the GEMM's epilogue (y = the residual stream after the branch; cuBLASLt only,
// residual_in_gemm).
template <typename T>
static void linear_forward(ClipGPU *g, BlockBuf *k, int i, T *y, const T *x, size_t w, size_t b, int N, int C, int OC,
                           const T *res = NULL) {
    const T *W = (const T *)g->wts;
    const bf16 *xb = i == SB_LINEAR_OUT_PROJ ? (const bf16 *)x : NULL;
    if (g->sb_on[i]) switchback_forward(&g->sb, (bf16 *)y, k->xq[i], k->xs[i], xb, &k->w8[i], (const bf16 *)(W + b), N, 0);
    else matmul_forward_gpu<T>(y, x, W + w, W + b, N, C, OC, res);
}

// Whether the residual add after linear i (out_proj, c_proj) runs in its GEMM's epilogue: where the branch has no
// layer-scale (ls, a layout offset; the add needs ls * f) and the linear is cuBLASLt's. The LayerNorm after it then
// reads the residual stream alone: one (N, D) tensor less read and one less written than the fused add + LayerNorm.
static int residual_in_gemm(const ClipGPU *g, int i, size_t ls) { return ls == NO_TENSOR && !g->sb_on[i]; }

// Where a producer writes the quantized input of linear i (NULL where it does not run SwitchBack), and where the
// bf16 input (NULL where nothing reads it).
static int8_t *in_q(ClipGPU *g, BlockBuf *k, int i) { return g->sb_on[i] ? k->xq[i] : NULL; }
static float *in_s(ClipGPU *g, BlockBuf *k, int i) { return g->sb_on[i] ? k->xs[i] : NULL; }
template <typename T> static T *in_bf16(BlockBuf *k, void *p, int i) { return k->in_bf16[i] ? as<T>(p) : NULL; }

// Whether the weight gradients run on their own stream now: not while profiling, which times each op on its own.
static int wg_on(const ClipGPU *g) { return g->wg_stream && !g->prof_on; }

// The default stream waits for the weight gradients enqueued up to wg_done[e] (before it overwrites their inputs).
static void wg_join(ClipGPU *g, int e) {
    if (wg_on(g)) cudaCheck(cudaStreamWaitEvent(0, g->wg_done[e], 0));
}

// The backward of linear i of block k in two halves (tower_backward runs the GELU backward between c_proj's).
// The input half: dx (N, C) = dy (N, OC) @ W (overwritten), and db (OC) += the column sums of dy when db is given
// (c_fc's comes from the GELU backward, out_proj's and c_proj's from the LayerNorm backwards, tower_backward).
// SwitchBack: dx from int8 dy (row-wise; dy_q: already in g->sb.gq, gs, written by dy's producer, else quantized
// here with db from the same pass) and int8 W^T.
template <typename T>
static void linear_backward_input(ClipGPU *g, BlockBuf *k, int i, T *dx, float *db, const T *dy, int dy_q, size_t w, int N, int C,
                                  int OC) {
    int sb_db = g->sb_on[i] && !dy_q;
    if (g->sb_on[i]) switchback_backward_input(&g->sb, (bf16 *)dx, sb_db ? db : NULL, (const bf16 *)dy, &k->w8[i], N, 1, dy_q, 0);
    else matmul_backward_input_gpu<T>(dx, dy, (const T *)g->wts + w, N, C, OC);
    if (db && !sb_db) {
        mark(g, PROF_PARAM_GRADS);
        bias_grad_gpu<T>(db, dy, N, OC, OC);
    }
}

// The weight half: dW = dy^T @ x into the fp32 gradients (+= after the step's first micro-batch: g->accumulate).
// SwitchBack: in bf16 with fp32 accumulation; from the saved int8 x where sb_saved[i] (the bf16 x is not kept then).
// Reads neither dx nor g->sb.gq. done (WG_*, or -1): run on the weight-gradient stream, after the default stream's work
// so far, and mark wg_done[done]; the caller then wg_joins it before anything overwrites dy or x.
template <typename T>
static void linear_backward_weight(ClipGPU *g, BlockBuf *k, int i, const T *dy, const T *x, size_t w, int N, int C, int OC,
                                   int done = -1) {
    cudaStream_t s = done >= 0 && wg_on(g) ? g->wg_stream : 0;
    if (s) {
        cudaCheck(cudaEventRecord(g->wg_fork, 0));
        cudaCheck(cudaStreamWaitEvent(s, g->wg_fork, 0));
    }
    if (g->sb_on[i]) {
        switchback_backward_weight(&g->sb, g->grads + w, (const bf16 *)dy, k->sb_saved[i] ? NULL : (const bf16 *)x, k->xq[i],
                                   k->xs[i], &k->w8[i], N, g->accumulate, s);
    } else {
        matmul_backward_weight_gpu<T>(g->grads + w, dy, x, N, C, OC, g->accumulate, s);
    }
    if (s) cudaCheck(cudaEventRecord(g->wg_done[done], s));
}

// Both halves (the caller has marked PROF_GEMM).
template <typename T>
static void linear_backward(ClipGPU *g, BlockBuf *k, int i, T *dx, float *db, const T *dy, int dy_q, const T *x, size_t w, int N,
                            int C, int OC, int done = -1) {
    linear_backward_input<T>(g, k, i, dx, db, dy, dy_q, w, N, C, OC);
    mark(g, PROF_GEMM);  // the input half may have marked a bias gradient
    linear_backward_weight<T>(g, k, i, dy, x, w, N, C, OC, done);
}

// Remakes the int8 copies of the SwitchBack weights from the bf16 copy (after every optimizer step and upload).
// after_update: the optimizer step just wrote them with their maxima (adamw_apply_gpu's tensor_absmax), so the
// batch (when the mode and ZeRO allow it) quantizes them all in one launch without a pass for the maxima.
static void quantize_switchback_weights(ClipGPU *g, int after_update) {
    if (after_update && g->sb_batch.n) {
        switchback_quantize_weights(&g->sb_batch, 0);
        return;
    }
    TowerBuf *towers[2] = {&g->vis, &g->txt};
    for (int ti = 0; ti < 2; ti++)
        for (int l = 0; l < towers[ti]->t->layers; l++) {
            const BlockLayout *w = &towers[ti]->t->blocks[l];
            size_t off[SB_LINEARS] = {w->in_proj_w, w->out_proj_w, w->c_fc_w, w->c_proj_w};
            for (int i = 0; i < SB_LINEARS; i++)
                if (g->sb_on[i]) switchback_quantize_weight(&towers[ti]->blocks[l].w8[i], g->params_bf16 + off[i], g->sb.mode, 0);
        }
}

// The rows of micro-batch B in tb's buffers, and the sequences attention sees in them (TowerBuf).
static int tower_rows(const TowerBuf *tb, int B) { return tb->seq ? tb->rows : B * tb->tokens; }
static int tower_seqs(const TowerBuf *tb, int B) { return tb->seq ? tb->seqs : B; }

// The queries block l's attention computes for a micro-batch of B: in the last block only the B pooled rows' (the rest
// reach nothing the loss reads; attention.cuh's AttnQueries).
static AttnQueries block_queries(const TowerBuf *tb, int l, int B) {
    return l == tb->t->layers - 1 ? AttnQueries{1, tb->pool_tn, tb->pool, B} : ATTN_ALL_QUERIES;
}

// The blocks of one tower: x0 -> res_2 of the last block (its B pooled rows). The residual adds run in the epilogues of
// out_proj and c_proj (residual_in_gemm), else with the LayerNorm after them (a block's second with the next block's
// ln_1).
template <typename T> static void tower_forward(ClipGPU *g, TowerBuf *tb, int B) {
    const TowerLayout *t = tb->t;
    const float *P = g->params;
    int N = tower_rows(tb, B), nseq = tower_seqs(tb, B), D = t->width, H = t->mlp, quick = g->cfg.quick_gelu;
    const BlockLayout *w0 = &t->blocks[0];
    wait_params(g, w0->ln_1_w);
    mark(g, PROF_LAYERNORM);
    BlockBuf *k0 = &tb->blocks[0];
    residual_layernorm_forward_gpu<T>(NULL, in_bf16<T>(k0, k0->ln_1, SB_LINEAR_QKV), k0->ln_1_mean, k0->ln_1_rstd, as<T>(tb->x0),
                                      NULL, NULL, P + w0->ln_1_w, P + w0->ln_1_b, N, D, in_q(g, k0, SB_LINEAR_QKV),
                                      in_s(g, k0, SB_LINEAR_QKV));
    const T *x = as<T>(tb->x0);
    for (int l = 0; l < t->layers; l++) {
        const BlockLayout *w = &t->blocks[l];
        BlockBuf *k = &tb->blocks[l];
        mark(g, PROF_GEMM);
        linear_forward<T>(g, k, SB_LINEAR_QKV, as<T>(k->qkv), as<T>(k->ln_1), w->in_proj_w, w->in_proj_b, N, D, 3 * D);
        mark(g, PROF_ATTENTION);
        attention_forward_gpu(as<T>(k->att_y), k->att_stats, as<T>(k->qkv), nseq, tb->tokens, D, t->heads, t->causal, tb->seq,
                              block_queries(tb, l, B));
        // The last block: only the pooled rows reach the loss, so its attention computes their query tiles only
        // (block_queries), and out_proj, the residual, ln_2 and the MLP run on those B rows (its other rows' outputs
        // would be dead, as would their gradients).
        int Nb = N;
        const T *att_in = as<T>(k->att_y), *res_in = x;
        if (l == t->layers - 1) {
            mark(g, PROF_EMBED_OTHER);
            gather_rows_gpu<T>(as<T>(tb->pool_att), att_in, tb->pool, B, tb->pool_tn, D);
            gather_rows_gpu<T>(as<T>(tb->pool_x), x, tb->pool, B, tb->pool_tn, D);
            att_in = as<T>(tb->pool_att), res_in = as<T>(tb->pool_x), Nb = B;
        }
        mark(g, PROF_GEMM);
        int fuse_1 = residual_in_gemm(g, SB_LINEAR_OUT_PROJ, w->ls_1);
        linear_forward<T>(g, k, SB_LINEAR_OUT_PROJ, as<T>(fuse_1 ? k->res_1 : k->attn), att_in, w->out_proj_w, w->out_proj_b, Nb, D, D,
                          fuse_1 ? res_in : NULL);
        mark(g, PROF_LAYERNORM);
        residual_layernorm_forward_gpu<T>(fuse_1 ? NULL : as<T>(k->res_1), in_bf16<T>(k, k->ln_2, SB_LINEAR_C_FC), k->ln_2_mean,
                                          k->ln_2_rstd, fuse_1 ? as<T>(k->res_1) : res_in, fuse_1 ? NULL : as<T>(k->attn),
                                          opt_param(g, w->ls_1), P + w->ln_2_w, P + w->ln_2_b, Nb, D, in_q(g, k, SB_LINEAR_C_FC),
                                          in_s(g, k, SB_LINEAR_C_FC));
        mark(g, PROF_GEMM);
        if (g->fused_gelu) {  // fc (the pre-activation, kept for the backward) and fc_gelu from one pass
            const bf16 *W = (const bf16 *)g->wts;
            Bf16Gemm fc = {BF16_EPI_GELU, as<bf16>(k->fc), as<bf16>(k->fc_gelu), as<bf16>(k->ln_2), W + w->c_fc_w, W + w->c_fc_b,
                           quick, Nb, H, D};
            bf16_gemm(&fc, 0);
        } else {
            linear_forward<T>(g, k, SB_LINEAR_C_FC, as<T>(k->fc), as<T>(k->ln_2), w->c_fc_w, w->c_fc_b, Nb, D, H);
            mark(g, PROF_GELU);
            if (g->sb_on[SB_LINEAR_C_PROJ])
                gelu_forward_quantize_gpu(in_bf16<bf16>(k, k->fc_gelu, SB_LINEAR_C_PROJ), k->xq[SB_LINEAR_C_PROJ],
                                          k->xs[SB_LINEAR_C_PROJ], as<bf16>(k->fc), Nb, H, quick);
            else gelu_forward_gpu<T>(as<T>(k->fc_gelu), as<T>(k->fc), (size_t)Nb * H, quick);
        }
        mark(g, PROF_GEMM);
        int fuse_2 = residual_in_gemm(g, SB_LINEAR_C_PROJ, w->ls_2);
        linear_forward<T>(g, k, SB_LINEAR_C_PROJ, as<T>(fuse_2 ? k->res_2 : k->mlp), as<T>(k->fc_gelu), w->c_proj_w, w->c_proj_b, Nb, H,
                          D, fuse_2 ? as<T>(k->res_1) : NULL);
        if (l + 1 < t->layers) wait_params(g, t->blocks[l + 1].ln_1_w);  // read by the fused LayerNorm below
        mark(g, PROF_LAYERNORM);
        if (l + 1 < t->layers) {
            BlockBuf *kn = &tb->blocks[l + 1];
            const BlockLayout *wn = &t->blocks[l + 1];
            residual_layernorm_forward_gpu<T>(fuse_2 ? NULL : as<T>(k->res_2), in_bf16<T>(kn, kn->ln_1, SB_LINEAR_QKV), kn->ln_1_mean,
                                              kn->ln_1_rstd, as<T>(fuse_2 ? k->res_2 : k->res_1), fuse_2 ? NULL : as<T>(k->mlp),
                                              opt_param(g, w->ls_2), P + wn->ln_1_w, P + wn->ln_1_b, N, D, in_q(g, kn, SB_LINEAR_QKV),
                                              in_s(g, kn, SB_LINEAR_QKV));
        } else if (!fuse_2) {
            residual_layernorm_forward_gpu<T>(as<T>(k->res_2), (T *)NULL, NULL, NULL, as<T>(k->res_1), as<T>(k->mlp),
                                          opt_param(g, w->ls_2), NULL, NULL, Nb, D);
        }
        x = as<T>(k->res_2);
    }
}

// Pool (class token or EOT), LayerNorm, project: features (B, E) fp32.
template <typename T> static void tower_head_forward(ClipGPU *g, TowerBuf *tb, int B, float *features) {
    const TowerLayout *t = tb->t;
    const float *P = g->params;
    wait_params(g, tb->ln_w);
    mark(g, PROF_EMBED_OTHER);
    // the last block's output holds the pooled rows only (tower_forward): rows 0 .. B - 1
    gather_rows_gpu<T>(tb->pooled, as<T>(tb->blocks[t->layers - 1].res_2), NULL, B, 1, t->width);
    residual_layernorm_forward_gpu<float>(NULL, tb->pooled_ln, tb->pooled_mean, tb->pooled_rstd, tb->pooled, NULL, NULL,
                                      P + tb->ln_w, P + tb->ln_b, B, t->width);
    mark(g, PROF_GEMM);
    proj_forward(features, tb->pooled_ln, P + tb->proj, B, t->width, g->cfg.embed_dim);
}

static void begin_inputs(ClipGPU *g);
static void upload_text(ClipGPU *g, const Batch *b, int start, int B);
static void upload_images(ClipGPU *g, const Batch *b, int start, int B);
static void inputs_consumed(ClipGPU *g);

// Text tower of micro-batch [start, start + B): token + position embeddings -> causal blocks -> ln_final
// at the EOT -> @ text_projection into txt_feat rows start.. (activations saved).
template <typename T> static void forward_text(ClipGPU *g, const Batch *b, int start, int B) {
    const ClipLayout *L = g->L;
    const float *P = g->params;
    upload_text(g, b, start, B);
    const char *in = g->inputs[g->cur];
    wait_params(g, L->token_embedding);
    mark(g, PROF_EMBED_OTHER);
    text_embed_forward_gpu<T>(as<T>(g->txt.x0), (const int32_t *)(in + g->off_tokens), (const int32_t *)(in + g->off_pos),
                              P + L->token_embedding, P + L->text_pos, g->txt.rows, L->text.tokens, L->text.width);
    tower_forward<T>(g, &g->txt, B);
    tower_head_forward<T>(g, &g->txt, B, g->txt_feat + (size_t)start * g->cfg.embed_dim);
}

// Image tower of micro-batch [start, start + B): patches @ conv1 -> class token + positions -> ln_pre ->
// blocks -> ln_post(class) @ proj into img_feat rows start.. (activations saved).
template <typename T> static void forward_image(ClipGPU *g, const Batch *b, int start, int B) {
    const ClipLayout *L = g->L;
    const Config *c = &g->cfg;
    const float *P = g->params;
    const T *W = (const T *)g->wts;
    int S = c->image_size, Ps = c->patch_size, G2 = (S / Ps) * (S / Ps), Dv = L->visual.width, Nv = B * L->visual.tokens;
    upload_images(g, b, start, B);
    const char *in = g->inputs[g->cur];
    wait_params(g, L->conv1_w);
    mark(g, PROF_EMBED_OTHER);
    patch_im2col_gpu<T>(as<T>(g->patches), (const uint8_t *)in, B, S, Ps);
    mark(g, PROF_GEMM);
    matmul_forward_gpu<T>(as<T>(g->branch), as<T>(g->patches), W + L->conv1_w, (const T *)NULL, B * G2, 3 * Ps * Ps, Dv);
    mark(g, PROF_EMBED_OTHER);
    vision_embed_forward_gpu<T>(as<T>(g->v_embed), as<T>(g->branch), P + L->class_embedding, P + L->visual_pos, B, G2, Dv);
    mark(g, PROF_LAYERNORM);
    residual_layernorm_forward_gpu<T>(NULL, as<T>(g->vis.x0), g->ln_pre_mean, g->ln_pre_rstd, as<T>(g->v_embed), NULL, NULL,
                                      P + L->ln_pre_w, P + L->ln_pre_b, Nv, Dv);
    tower_forward<T>(g, &g->vis, B);
    tower_head_forward<T>(g, &g->vis, B, g->img_feat + (size_t)start * c->embed_dim);
}

// Forward of micro-batch [start, start + B) of the batch, both towers (the text tower runs while the images
// are copied): every activation saved, features written.
template <typename T> static void forward_micro(ClipGPU *g, const Batch *b, int start, int B) {
    begin_inputs(g);
    forward_text<T>(g, b, start, B);
    forward_image<T>(g, b, start, B);
    inputs_consumed(g);
}

// ---------------------------------------------------------------- backward

// What a LayerNorm backward sums for the residual branch ls * f above it (its new dinp is the branch's output
// gradient): the bias gradient of the branch's last linear (layout offset b), the layer-scale's (ls, or NO_TENSOR).
template <typename T> static BranchGrads<T> branch_grads(ClipGPU *g, size_t b, size_t ls, void *f) {
    int has = ls != NO_TENSOR;
    return BranchGrads<T>{g->grads + b, has ? g->grads + ls : NULL, has ? g->params + ls : NULL, has ? as<T>(f) : NULL};
}

// g->dres (N, D) holds d(last block output) on entry and d(x0) on return. The bias (and layer-scale) gradients of
// out_proj and c_proj come from the LayerNorm backwards that produce their output gradients (ln_2's, and the next
// block's ln_1's), but the last block's c_proj's, whose output gradient comes from the head. The MLP's backward:
// c_proj's input gradient, the GELU backward (which also writes the GELU output under recompute: no separate
// recompute pass), c_proj's weight gradient, c_fc's backward.
// With weight_grad_stream the weight gradients run on their own stream beside the memory-bound passes that follow them
// (c_proj's beside the GELU backward where that does not recompute its input, c_fc's beside ln_2's backward,
// out_proj's beside attention's, qkv's beside ln_1's and the next block's MLP), each joined before the default stream
// overwrites what it reads: c_proj's before ln_2's backward (dres, d_a), c_fc's and out_proj's after attention's (what
// follows overwrites dres, d_a and ln_scratch), qkv's before the next block's LayerNorm recompute (ln_scratch) and
// attention backward (d_qkv). A block's gradients are reduced (grads_done) once its qkv weight gradient is joined.
template <typename T> static void tower_backward(ClipGPU *g, TowerBuf *tb, int B) {
    const TowerLayout *t = tb->t;
    const float *P = g->params;
    float *G = g->grads;
    int N = tower_rows(tb, B), nseq = tower_seqs(tb, B), D = t->width, H = t->mlp, quick = g->cfg.quick_gelu;
    T *dres = as<T>(g->dres), *d_a = as<T>(g->d_a), *d_b = as<T>(g->d_b), *d_qkv = as<T>(g->d_qkv), *d_mlp = as<T>(g->d_mlp);
    // SwitchBack: the LayerNorm backwards also quantize the residual-stream gradient into g->sb.gq, gs where it is
    // the next linear's output gradient as it is (no layer-scale between): ln_2's for out_proj, ln_1's for the
    // previous block's c_proj (dres_q: gq holds dres for this block's c_proj); the GELU backward quantizes c_fc's.
    int dres_q = 0, qkv_pending = 0;  // qkv_pending: the previous block's qkv weight gradient is not joined yet
    int8_t *gq = g->sb.gq;
    float *gs = g->sb.gs;
    for (int l = t->layers - 1; l >= 0; l--) {
        const BlockLayout *w = &t->blocks[l];
        BlockBuf *k = &tb->blocks[l];
        int r = k->recompute, last = l == t->layers - 1;
        const T *x = as<T>(l ? tb->blocks[l - 1].res_2 : tb->x0);
        // the last block's branch after attention ran on the B pooled rows (tower_forward): dres holds those
        int Nb = last ? B : N;
        const T *att_in = last ? as<T>(tb->pool_att) : as<T>(k->att_y);
        // res_2 = res_1 + ls_2 * c_proj(gelu(c_fc(ln_2(res_1))))
        const T *dmlp = dres;
        mark(g, PROF_PARAM_GRADS);
        if (w->ls_2 != NO_TENSOR)
            layerscale_backward_gpu<T>(d_a, last ? G + w->ls_2 : NULL, dres, as<T>(k->mlp), P + w->ls_2, Nb, D), dmlp = d_a;
        mark(g, PROF_GEMM);
        linear_backward_input<T>(g, k, SB_LINEAR_C_PROJ, d_mlp, last ? G + w->c_proj_b : NULL, dmlp, dres_q, w->c_proj_w, Nb, H, D);
        if (r < 1) linear_backward_weight<T>(g, k, SB_LINEAR_C_PROJ, dmlp, as<T>(k->fc_gelu), w->c_proj_w, Nb, H, D, WG_C_PROJ);
        // The GELU backward, with c_fc's bias gradient (and its output gradient quantized), also writes the GELU output
        // for c_proj's weight gradient where the block did not keep it (recompute >= 1; such a block never saves c_proj's
        // int8 input instead: block_plan). It overwrites gq, gs, which only c_proj's input half read.
        mark(g, PROF_GELU);
        int fc_q = g->sb_on[SB_LINEAR_C_FC];
        T *act = r >= 1 ? as<T>(k->fc_gelu) : NULL;
        if (fc_q) gelu_backward_quantize_gpu(as<bf16>(d_mlp), (bf16 *)act, gq, gs, G + w->c_fc_b, as<bf16>(d_mlp), as<bf16>(k->fc), Nb, H, quick);
        else gelu_backward_bias_gpu<T>(d_mlp, act, G + w->c_fc_b, d_mlp, as<T>(k->fc), Nb, H, quick);
        mark(g, PROF_GEMM);
        if (r >= 1) linear_backward_weight<T>(g, k, SB_LINEAR_C_PROJ, dmlp, as<T>(k->fc_gelu), w->c_proj_w, Nb, H, D, WG_C_PROJ);
        if (qkv_pending) {  // the previous block's gradients are complete
            wg_join(g, WG_QKV);
            grads_done(g);
            qkv_pending = 0;
        }
        mark(g, PROF_LAYERNORM);
        if (r >= 2) layernorm_recompute_gpu<T>(as<T>(k->ln_2), as<T>(k->res_1), k->ln_2_mean, k->ln_2_rstd, P + w->ln_2_w, P + w->ln_2_b, Nb, D);
        mark(g, PROF_GEMM);
        linear_backward<T>(g, k, SB_LINEAR_C_FC, d_b, NULL, d_mlp, fc_q, as<T>(k->ln_2), w->c_fc_w, Nb, D, H, WG_C_FC);
        wg_join(g, WG_C_PROJ);
        mark(g, PROF_LAYERNORM_BACKWARD);
        int att_q = g->sb_on[SB_LINEAR_OUT_PROJ] && w->ls_1 == NO_TENSOR;
        BranchGrads<T> attn_grads = branch_grads<T>(g, w->out_proj_b, w->ls_1, k->attn);
        layernorm_backward_gpu<T>(dres, G + w->ln_2_w, G + w->ln_2_b, d_b, as<T>(k->res_1), P + w->ln_2_w, k->ln_2_mean, k->ln_2_rstd,
                                  Nb, D, att_q ? gq : NULL, gs, &attn_grads);
        // res_1 = x + ls_1 * out_proj(attention(in_proj(ln_1(x))))
        const T *dattn = dres;
        mark(g, PROF_PARAM_GRADS);
        if (w->ls_1 != NO_TENSOR) layerscale_backward_gpu<T>(d_a, NULL, dres, as<T>(k->attn), P + w->ls_1, Nb, D), dattn = d_a;
        mark(g, PROF_GEMM);
        linear_backward<T>(g, k, SB_LINEAR_OUT_PROJ, d_b, NULL, dattn, att_q, att_in, w->out_proj_w, Nb, D, D, WG_OUT_PROJ);
        const T *datt = d_b;
        if (last) {  // d(att_y) on all rows: the pooled rows' gradients, zeros elsewhere
            wg_join(g, WG_OUT_PROJ);  // dattn may be d_a
            mark(g, PROF_EMBED_OTHER);
            cudaCheck(cudaMemsetAsync(d_a, 0, (size_t)N * D * sizeof(T), 0));
            scatter_rows_gpu<T>(d_a, d_b, tb->pool, B, tb->pool_tn, D);
            datt = d_a;
        }
        mark(g, PROF_ATTENTION_BACKWARD);
        attention_backward_gpu(d_qkv, g->att_scratch, datt, as<T>(k->qkv), as<T>(k->att_y), k->att_stats, nseq, tb->tokens, D,
                               t->heads, t->causal, tb->seq, block_queries(tb, l, B));
        wg_join(g, WG_OUT_PROJ);  // and c_fc's, enqueued before it
        if (last) {  // d(x) through the residual, d(res_1), on all rows likewise
            mark(g, PROF_EMBED_OTHER);
            cudaCheck(cudaMemcpyAsync(d_b, dres, (size_t)B * D * sizeof(T), cudaMemcpyDeviceToDevice, 0));
            cudaCheck(cudaMemsetAsync(dres, 0, (size_t)N * D * sizeof(T), 0));
            scatter_rows_gpu<T>(dres, d_b, tb->pool, B, tb->pool_tn, D);
        }
        mark(g, PROF_LAYERNORM);
        if (r >= 2) layernorm_recompute_gpu<T>(as<T>(k->ln_1), x, k->ln_1_mean, k->ln_1_rstd, P + w->ln_1_w, P + w->ln_1_b, N, D);
        mark(g, PROF_GEMM);
        linear_backward<T>(g, k, SB_LINEAR_QKV, d_a, G + w->in_proj_b, d_qkv, 0, as<T>(k->ln_1), w->in_proj_w, N, D, 3 * D, WG_QKV);
        qkv_pending = 1;
        mark(g, PROF_LAYERNORM_BACKWARD);
        dres_q = l > 0 && g->sb_on[SB_LINEAR_C_PROJ] && t->blocks[l - 1].ls_2 == NO_TENSOR;
        BranchGrads<T> mlp_grads;  // the previous block's MLP branch
        if (l > 0) mlp_grads = branch_grads<T>(g, t->blocks[l - 1].c_proj_b, t->blocks[l - 1].ls_2, tb->blocks[l - 1].mlp);
        layernorm_backward_gpu<T>(dres, G + w->ln_1_w, G + w->ln_1_b, d_a, x, P + w->ln_1_w, k->ln_1_mean, k->ln_1_rstd, N, D,
                                  dres_q ? gq : NULL, gs, l > 0 ? &mlp_grads : NULL);
    }
    if (qkv_pending) {
        wg_join(g, WG_QKV);
        grads_done(g);
    }
}

// d features (B, E) -> projection, pooled LayerNorm -> g->dres = d(last block output): its B pooled rows.
template <typename T> static void tower_head_backward(ClipGPU *g, TowerBuf *tb, int B, const float *dfeat) {
    const TowerLayout *t = tb->t;
    const float *P = g->params;
    float *G = g->grads;
    int D = t->width;
    mark(g, PROF_GEMM);
    proj_backward(g->dpool_ln, G + tb->proj, dfeat, tb->pooled_ln, P + tb->proj, B, D, g->cfg.embed_dim, g->accumulate);
    mark(g, PROF_EMBED_OTHER);
    cudaCheck(cudaMemsetAsync(g->dpool, 0, (size_t)B * D * sizeof(float), 0));
    layernorm_backward_gpu<float>(g->dpool, G + tb->ln_w, G + tb->ln_b, g->dpool_ln, tb->pooled, P + tb->ln_w, tb->pooled_mean,
                              tb->pooled_rstd, B, D);
    scatter_rows_gpu<T>(as<T>(g->dres), g->dpool, NULL, B, 1, D);  // the last block's B pooled rows
}

// Backward of the micro-batch whose forward is in the buffers, from its slices of d features. The text tower
// goes first: in a multi-GPU step the reduction of its gradients (the token embedding is the largest bucket)
// then runs during the longer image backward, and only the small image front is reduced after backward.
template <typename T> static void backward_micro(ClipGPU *g, int B, const float *dimg, const float *dtxt) {
    const ClipLayout *L = g->L;
    const Config *c = &g->cfg;
    const float *P = g->params;
    float *G = g->grads;
    int S = c->image_size, Ps = c->patch_size, G2 = (S / Ps) * (S / Ps), Dv = L->visual.width, Tv = L->visual.tokens;
    // text tower
    const TowerLayout *Tt = &L->text;
    tower_head_backward<T>(g, &g->txt, B, dtxt);
    grads_done(g);
    tower_backward<T>(g, &g->txt, B);
    mark(g, PROF_EMBED_OTHER);
    const char *in = g->inputs[g->cur];
    text_embed_backward_gpu<T>(G + L->text_pos, g->tok_scratch, as<T>(g->dres), (const int *)(in + g->off_pos_index),
                               g->pos_unique[g->cur], g->pos_chunks[g->cur], g->txt.rows, Tt->width);
    text_embed_backward_gpu<T>(G + L->token_embedding, g->tok_scratch, as<T>(g->dres), (const int *)(in + g->off_index),
                               g->num_unique[g->cur], g->num_chunks[g->cur], g->txt.rows, Tt->width);
    grads_done(g);
    // image tower
    tower_head_backward<T>(g, &g->vis, B, dimg);
    grads_done(g);
    tower_backward<T>(g, &g->vis, B);
    mark(g, PROF_EMBED_OTHER);
    T *dembed = as<T>(g->d_a), *dpatch = as<T>(g->d_b);
    cudaCheck(cudaMemsetAsync(dembed, 0, (size_t)B * Tv * Dv * sizeof(T), 0));
    layernorm_backward_gpu<T>(dembed, G + L->ln_pre_w, G + L->ln_pre_b, as<T>(g->dres), as<T>(g->v_embed), P + L->ln_pre_w,
                          g->ln_pre_mean, g->ln_pre_rstd, B * Tv, Dv);
    bias_grad_gpu<T>(G + L->visual_pos, dembed, B, Tv * Dv, (long)Tv * Dv);       // positions: sum over images
    bias_grad_gpu<T>(G + L->class_embedding, dembed, B, Dv, (long)Tv * Dv);       // class token: row 0 of each image
    vision_embed_backward_gpu<T>(dpatch, dembed, B, G2, Dv);
    mark(g, PROF_GEMM);
    matmul_backward_weight_gpu<T>(G + L->conv1_w, dpatch, as<T>(g->patches), B * G2, 3 * Ps * Ps, Dv, g->accumulate);
    grads_done(g);
    inputs_consumed(g);
}

// ---------------------------------------------------------------- inputs

// Micro-batch [start, start + B) of the batch to the device, in two parts: the captions (with the EOT
// positions and the token index, computed on the host where the ids are) before the text tower, the images
// (tens of MB) after it has been enqueued, so that their host staging and copy overlap it. Device buffer
// and pinned stage k alternate between micro-batches; copies run on copy_stream, ordered by events.

// Selects the device input buffer and pinned stage of the next micro-batch (they alternate, so one can be
// filled while the other is read) and waits until both are free.
static void begin_inputs(ClipGPU *g) {
    int k = g->stage_next;
    g->stage_next ^= 1, g->cur = k;
    mark(g, PROF_INPUT);
    if (g->dist) gd_wait_event(g->dist, g->stage_free[k]);              // the last copies out of stage k are done
    else cudaCheck(cudaEventSynchronize(g->stage_free[k]));             // (polled with the timeout in a multi-GPU run)
    cudaCheck(cudaStreamWaitEvent(g->copy_stream, g->consumed[k], 0));  // kernels two micro-batches ago are done with it
}

// The text of micro-batch [start, start + B), packed (text_pack in embed.cuh: each caption's positions up to its EOT),
// with the token and position indexes that let the backward sum the embeddings' gradients without atomics.
static void upload_text(ClipGPU *g, const Batch *b, int start, int B) {
    const Config *c = &g->cfg;
    int Tt = c->context_length, k = g->cur;
    char *h = g->stage[k];
    const int32_t *src = b->tokens + (size_t)start * Tt;
    for (size_t i = 0; i < (size_t)B * Tt; i++)
        if (src[i] < 0 || src[i] >= c->vocab_size)
            fatal("token id %d at position %zu is outside the vocabulary (%d)", src[i], (size_t)start * Tt + i, c->vocab_size);
    int32_t *ids = (int32_t *)(h + g->off_tokens), *pos = (int32_t *)(h + g->off_pos);
    int *pooled = (int *)(h + g->off_eot), *seq = (int *)(h + g->off_seq);
    eot_positions(pooled, src, B, Tt);
    TextPack tp = text_pack(ids, pos, seq, pooled, src, B, Tt, g->L->text.causal);
    int n = tp.rows;
    g->txt.rows = n, g->txt.seqs = tp.seqs, g->txt.tokens = tp.longest, g->txt.seq = (const int *)(g->inputs[k] + g->off_seq);
    g->txt.pool = (const int *)(g->inputs[k] + g->off_eot), g->txt.pool_tn = 0;
    int *index = (int *)(h + g->off_index), *pos_index = (int *)(h + g->off_pos_index);
    token_index_build(index, ids, n, c->vocab_size, g->vocab_counts);
    token_index_build(pos_index, pos, n, Tt, g->vocab_counts);
    g->num_unique[k] = index[0], g->num_chunks[k] = index[1], g->pos_unique[k] = pos_index[0], g->pos_chunks[k] = pos_index[1];
    size_t bytes = g->input_bytes - g->off_tokens;
    cudaCheck(cudaMemcpyAsync(g->inputs[k] + g->off_tokens, h + g->off_tokens, bytes, cudaMemcpyHostToDevice, g->copy_stream));
    cudaCheck(cudaEventRecord(g->text_ready, g->copy_stream));
    cudaCheck(cudaEventRecord(g->stage_free[k], g->copy_stream));
    cudaCheck(cudaStreamWaitEvent(0, g->text_ready, 0));
}

static void upload_images(ClipGPU *g, const Batch *b, int start, int B) {
    int S = g->cfg.image_size, k = g->cur;
    char *h = g->stage[k];
    size_t bytes = (size_t)B * 3 * S * S;
    const uint8_t *src = b->images + (size_t)start * 3 * S * S;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < 64; i++) {  // a parallel memcpy: tens of MB per micro-batch
        size_t lo = bytes * i / 64, hi = bytes * (i + 1) / 64;
        memcpy(h + lo, src + lo, hi - lo);
    }
    cudaCheck(cudaMemcpyAsync(g->inputs[k], h, bytes, cudaMemcpyHostToDevice, g->copy_stream));
    cudaCheck(cudaEventRecord(g->images_ready, g->copy_stream));
    cudaCheck(cudaEventRecord(g->stage_free[k], g->copy_stream));
    mark(g, PROF_INPUT);
    cudaCheck(cudaStreamWaitEvent(0, g->images_ready, 0));
}

// The kernels enqueued so far are the last to read the current input buffer (until its next upload).
static void inputs_consumed(ClipGPU *g) { cudaCheck(cudaEventRecord(g->consumed[g->cur], 0)); }

// ---------------------------------------------------------------- the step

// The contrastive loss over the global batch (contrastive_loss_rows in model/ops_cpu.h): this rank's b pairs
// are rows [rank b, (rank + 1) b) of N = world b. The normalised features of all ranks are all-gathered, each
// rank computes the loss terms of its rows with gradients w.r.t. all N features, and those gradients are
// reduce-scattered back to the features' owners; the loss is summed over the ranks, and logit_scale's
// gradient is reduced with the others. Leaves d(features) of this rank's pairs in g->dimg, g->dtxt.
static void global_loss(ClipGPU *g, int b) {
    const ClipLayout *L = g->L;
    int E = g->cfg.embed_dim, N = b * g->world;
    size_t own = (size_t)g->rank * b * E, all = (size_t)N * E;
    float *img_n = g->feat_n, *txt_n = img_n + all, *dimg_n = g->dfeat_n, *dtxt_n = dimg_n + all;
    mark(g, PROF_LOSS);
    contrastive_normalize_gpu(img_n + own, txt_n + own, g->img_feat, g->txt_feat, b, E, g->loss_scratch);
    if (g->dist) {
        mark(g, PROF_COMM);
        gd_begin(g->dist);
        gd_group(g->dist, 1), gd_allgather(g->dist, img_n, (size_t)b * E), gd_allgather(g->dist, txt_n, (size_t)b * E), gd_group(g->dist, 0);
        gd_end(g->dist);
        mark(g, PROF_LOSS);
    }
    contrastive_loss_rows_gpu(g->loss, dimg_n, dtxt_n, g->grads + L->logit_scale, img_n, txt_n, g->params + L->logit_scale, N, E,
                              g->rank * b, b, g->loss_scratch);
    if (g->dist) {
        mark(g, PROF_COMM);
        gd_begin(g->dist);
        gd_group(g->dist, 1);
        gd_reduce_scatter(g->dist, dimg_n, (size_t)b * E), gd_reduce_scatter(g->dist, dtxt_n, (size_t)b * E);
        gd_allreduce(g->dist, g->loss, 1);
        gd_group(g->dist, 0);
        gd_end(g->dist);
        mark(g, PROF_LOSS);
    }
    contrastive_normalize_backward_gpu(g->dimg, g->dtxt, dimg_n + own, dtxt_n + own, img_n + own, txt_n + own, b, E, g->loss_scratch);
}

template <typename T> static void forward_backward(ClipGPU *g, const Batch *b) {
    int total = b->size, mb = g->mb, nmicro = (total + mb - 1) / mb, E = g->cfg.embed_dim;
    mark(g, PROF_OPTIMIZER);
    zero_ranges_gpu(&g->grad_zero, g->grads);
    // pass 1: every micro-batch forward; the last one's activations stay for its backward
    for (int j = 0; j < nmicro; j++) {
        int start = j * mb, B = total - start < mb ? total - start : mb;
        forward_micro<T>(g, b, start, B);
    }
    global_loss(g, total);
    // The host waits for the loss's collectives here, with the timeout: a lost rank then ends the run now,
    // before pass 2 blocks on input buffers whose release depends on them.
    if (g->dist) gd_sync(g->dist);
    // pass 2: backward of each micro-batch (the others recomputed forward first), last to first; the last
    // one's backward reduces the gradients over the ranks, bucket by bucket as they are done
    for (int j = nmicro - 1; j >= 0; j--) {
        int start = j * mb, B = total - start < mb ? total - start : mb;
        if (j != nmicro - 1) forward_micro<T>(g, b, start, B);
        g->accumulate = j != nmicro - 1;
        g->reducing = g->dist && j == 0, g->next_bucket = 0;
        backward_micro<T>(g, B, g->dimg + (size_t)start * E, g->dtxt + (size_t)start * E);
    }
    if (g->dist) {
        if (g->next_bucket != g->num_buckets) fatal("clip_gpu: backward reduced %d of %d gradient buckets", g->next_bucket, g->num_buckets);
        g->reducing = 0;
        mark(g, PROF_COMM);
        gd_end(g->dist);
    }
    mark(g, PROF_GAP);
}

float clip_gpu_forward_backward(ClipGPU *g, const Batch *b) {
    if (b->size < 1 || b->size > g->max_batch) fatal("clip_gpu_forward_backward: batch of %d, the model holds at most %d", b->size, g->max_batch);
    if (b->image_size != g->cfg.image_size || b->context_length != g->cfg.context_length)
        fatal("clip_gpu_forward_backward: batch images %d px / %d tokens, the model takes %d / %d", b->image_size,
              b->context_length, g->cfg.image_size, g->cfg.context_length);
    if (g->use_bf16) forward_backward<bf16>(g, b);
    else forward_backward<float>(g, b);
    g->last_batch = b->size;
    if (g->dist) gd_sync(g->dist);
    float loss;
    cudaCheck(cudaMemcpy(&loss, g->loss, sizeof(float), cudaMemcpyDeviceToHost));
    return loss;
}

float clip_gpu_grad_norm(ClipGPU *g, const Optimizer *o) {
    mark(g, PROF_OPTIMIZER);
    // Without global-norm clipping the next step takes the gradients unscaled, so clip_gpu_update is a single pass:
    // for StableAdamW this pass (which reads the gradients anyway) also makes its RMS sums from u; plain AdamW's
    // pass makes them itself (its RMS is only reported), so u is not read here.
    g->stats_t = o && g->cfg.grad_clip == 0 ? o->t + 1 : 0;
    int sums = g->stats_t && o->kind == OPTIMIZER_STABLE_ADAMW;
    float b1t, b2t = 0;
    if (sums) optim_betas(o, g->stats_t, &b1t, &b2t);
    adamw_grad_stats_gpu(&g->plan, g->norm, g->grads, sums ? g->u : NULL, b2t, o ? o->eps : 0.0f);
    if (g->zero) {  // each rank holds the reduced gradients of its parts only: sums over the ranks
        mark(g, PROF_COMM);
        gd_begin(g->dist), gd_allreduce(g->dist, g->norm, 1);
        if (sums) gd_allreduce(g->dist, g->plan.tensor_sum, (size_t)g->L->num_tensors);
        gd_end(g->dist);
    }
    mark(g, PROF_GAP);
    if (g->dist) gd_sync(g->dist);
    float sum;
    cudaCheck(cudaMemcpy(&sum, g->norm, sizeof(float), cudaMemcpyDeviceToHost));
    return sqrtf(sum);
}

// The RMS of whole tensors under ZeRO-1: the ranks' partial sums (plan.tensor_sum) summed.
static void rms_sums_over_ranks(ClipGPU *g) {
    if (!g->zero) return;
    mark(g, PROF_COMM);
    gd_begin(g->dist), gd_allreduce(g->dist, g->plan.tensor_sum, (size_t)g->L->num_tensors), gd_end(g->dist);
    mark(g, PROF_OPTIMIZER);
}

void clip_gpu_update(ClipGPU *g, Optimizer *o, float lr, float grad_scale) {
    o->t++;
    float b1t, b2t;
    optim_betas(o, o->t, &b1t, &b2t);
    wait_all_params(g);  // the last gather is done (the forward in between waited for it)
    mark(g, PROF_OPTIMIZER);
    int clip = o->kind == OPTIMIZER_STABLE_ADAMW;
    bf16 *copy = g->zero ? NULL : g->params_bf16;
    if (g->stats_t == o->t && grad_scale == 1.0f) {  // one pass (StableAdamW: from the RMS sums clip_gpu_grad_norm made)
        adamw_step_gpu(&g->plan, g->grads, g->m, g->u, g->params, copy, b1t, b2t, lr, o->eps, clip);
        if (!clip) rms_sums_over_ranks(g), adamw_rms_gpu(&g->plan);  // AdamW: the pass made them
    } else {
        adamw_moments_gpu(&g->plan, g->grads, g->m, g->u, b1t, b2t, o->eps, grad_scale);
        rms_sums_over_ranks(g);
        adamw_apply_gpu(&g->plan, g->params, copy, g->m, g->u, lr, o->eps, clip);
    }
    g->stats_t = 0;
    float *ls = g->params + g->L->logit_scale;  // as open_clip: clamp to [0, ln 100] after every step (ZeRO-1: the
    clamp_scalar_gpu(ls, 0.0f, logf(100.0f));   // owner's value, gathered below over the others')
    if (g->zero) {  // each rank updated its parts: gathered beside the next forward; the host reads logit_scale
        mark(g, PROF_COMM);
        gather_params(g);
        wait_params(g, g->L->logit_scale);
        mark(g, PROF_OPTIMIZER);
        if (g->cfg.precision == PRECISION_INT8_SWITCHBACK) wait_all_params(g);  // the int8 weights from the bf16 copy
    }
    quantize_switchback_weights(g, 1);
    if (g->rank == 0) matmul_tuning_report();
    mark(g, PROF_GAP);
    if (g->dist) gd_sync(g->dist);
    cudaCheck(cudaMemcpy(o->rms, g->plan.rms, (size_t)g->L->num_tensors * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(&g->logit_scale_host, ls, sizeof(float), cudaMemcpyDeviceToHost));
}

float clip_gpu_logit_scale(const ClipGPU *g) { return g->logit_scale_host; }

// With ZeRO-1 every rank must call this (the gradients and moments are gathered from the ranks' parts, through
// the gradient buffer: its contents are gone afterwards).
void clip_gpu_download(ClipGPU *g, float *params, Optimizer *o, float *grads) {
    size_t bytes = g->L->buffer_elems * sizeof(float);
    wait_all_params(g);
    cudaCheck(cudaMemcpy(params, g->params, bytes, cudaMemcpyDeviceToHost));
    if (grads) {
        if (g->zero) gather_parts(g, g->grads), gd_sync(g->dist);
        cudaCheck(cudaMemcpy(grads, g->grads, bytes, cudaMemcpyDeviceToHost));
    }
    if (o && g->zero) {
        unshard_state(g, g->grads, g->m), gd_sync(g->dist);
        cudaCheck(cudaMemcpy(o->m, g->grads, bytes, cudaMemcpyDeviceToHost));
        unshard_state(g, g->grads, g->u), gd_sync(g->dist);
        cudaCheck(cudaMemcpy(o->u, g->grads, bytes, cudaMemcpyDeviceToHost));
    } else if (o) {
        cudaCheck(cudaMemcpy(o->m, g->m, bytes, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(o->u, g->u, bytes, cudaMemcpyDeviceToHost));
    }
}

// Every rank calls this in a multi-GPU run: rank 0's parameters and moments are broadcast, so the ranks start
// identical whatever they read (ZeRO-1: each keeps the moments of its parts, staged in the gradient buffer).
void clip_gpu_upload(ClipGPU *g, const float *params, const Optimizer *o) {
    size_t n = g->L->buffer_elems, bytes = n * sizeof(float);
    wait_all_params(g);
    cudaCheck(cudaMemcpy(g->params, params, bytes, cudaMemcpyHostToDevice));
    if (g->dist) gd_begin(g->dist), gd_broadcast(g->dist, g->params, n), gd_end(g->dist);
    if (g->params_bf16) copy_to_bf16_gpu(g->params_bf16, g->params, n);
    quantize_switchback_weights(g, 0);
    if (o) {
        float *host[2] = {o->m, o->u}, *dev[2] = {g->m, g->u};
        for (int i = 0; i < 2; i++) {
            float *dst = g->zero ? g->grads : dev[i];
            cudaCheck(cudaMemcpy(dst, host[i], bytes, cudaMemcpyHostToDevice));
            if (g->dist) gd_begin(g->dist), gd_broadcast(g->dist, dst, n), gd_end(g->dist);
            if (g->zero) shard_state(g, dev[i], g->grads), gd_sync(g->dist);  // the staging buffer is reused next
        }
    }
    g->logit_scale_host = params[g->L->logit_scale];
    if (g->dist) gd_sync(g->dist);
    cudaCheck(cudaDeviceSynchronize());
}

template <typename T> static void encode(ClipGPU *g, const Batch *b, int images, int texts) {
    for (int start = 0; start < b->size; start += g->mb) {
        int B = b->size - start < g->mb ? b->size - start : g->mb;
        begin_inputs(g);
        if (texts) forward_text<T>(g, b, start, B);
        if (images) forward_image<T>(g, b, start, B);
        inputs_consumed(g);
    }
}

void clip_gpu_encode(ClipGPU *g, const Batch *b, float *image_features, float *text_features) {
    if (b->size < 1 || b->size > g->cfg.batch_size)
        fatal("clip_gpu_encode: batch of %d, the model holds at most %ld", b->size, g->cfg.batch_size);
    if (g->use_bf16) encode<bf16>(g, b, image_features != NULL, text_features != NULL);
    else encode<float>(g, b, image_features != NULL, text_features != NULL);
    size_t bytes = (size_t)b->size * g->cfg.embed_dim * sizeof(float);
    if (image_features) cudaCheck(cudaMemcpy(image_features, g->img_feat, bytes, cudaMemcpyDeviceToHost));
    if (text_features) cudaCheck(cudaMemcpy(text_features, g->txt_feat, bytes, cudaMemcpyDeviceToHost));
}

void clip_gpu_features(ClipGPU *g, float *image_features, float *text_features) {
    size_t bytes = (size_t)g->last_batch * g->cfg.embed_dim * sizeof(float);
    cudaCheck(cudaMemcpy(image_features, g->img_feat, bytes, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(text_features, g->txt_feat, bytes, cudaMemcpyDeviceToHost));
}

// ---------------------------------------------------------------- setup, memory plan, errors

int clip_gpu_gemm_choices(const char *path, int save) {
    if (!save) return matmul_tuning_load(path);
    char err[1200];
    if (matmul_tuning_save(path, err, sizeof(err)) == 0) return 0;
    fprintf(stderr, "warning: gemm_tuning's choices not saved (%s): a resume from this checkpoint times the GEMMs again "
            "and may round differently\n", err);
    return -2;
}

double clip_gpu_peak_flops(void) {
    int dev;
    cudaDeviceProp prop;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    if (prop.major == 9) return strstr(prop.name, "PCIe") ? 756e12 : 989e12;  // H100/H200 SXM; H100 PCIe
    if (prop.major == 8 && prop.minor == 0) return 312e12;                     // A100
    return 0;
}

size_t clip_gpu_memory_used(void) {
    size_t free_b, total_b;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    return total_b - free_b;
}

const char *clip_gpu_unavailable(void) {
    static char why[256];
    int n = 0, runtime = 0, driver = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    cudaGetLastError();  // clear a sticky "no device"
    if (e == cudaSuccess && n > 0) return "";
    if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
    if (e == cudaErrorInsufficientDriver && driver == 0)  // the runtime found no libcuda at all
        snprintf(why, sizeof(why), "no NVIDIA driver found (libcuda.so is not installed or not on the library path; check nvidia-smi)");
    else if (e == cudaErrorInsufficientDriver)
        snprintf(why, sizeof(why), "the NVIDIA driver supports CUDA %d.%d but this build needs %d.%d: update the driver, or rebuild with an older CUDA toolkit",
                 driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
    else if (e == cudaSuccess || e == cudaErrorNoDevice)
        snprintf(why, sizeof(why), "no CUDA GPU found (check nvidia-smi and CUDA_VISIBLE_DEVICES)");
    else snprintf(why, sizeof(why), "CUDA cannot start: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    return why;
}

// An empty kernel built like every other: whether this build has code for the current GPU (the Makefile builds sm_80
// and sm_90a machine code, no PTX: other architectures fail at their first launch).
__global__ void arch_probe_kernel(void) {}

const char *clip_gpu_unsupported(void) {
    static char why[384];
    cudaFuncAttributes attr;
    cudaError_t e = cudaFuncGetAttributes(&attr, arch_probe_kernel);
    if (e == cudaSuccess) return "";
    cudaGetLastError();  // not sticky: clear it
    int dev;
    cudaDeviceProp prop;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    const char *a = prop.major == 9 && prop.minor == 0 ? "a" : "";  // Hopper: the wgmma kernels need sm_90a
    snprintf(why, sizeof(why), "this build has no code for the %s (compute capability %d.%d: %s); rebuild for it with "
             "make CUDA_ARCH=\"-gencode=arch=compute_%d%d%s,code=sm_%d%d%s\"", prop.name, prop.major, prop.minor, cudaGetErrorName(e),
             prop.major, prop.minor, a, prop.major, prop.minor, a);
    return why;
}

int clip_gpu_micro_batch(const Config *c) {
    return (int)(c->micro_batch_size ? c->micro_batch_size : c->batch_size / c->world_size);
}

// What block k saves at recompute level r. int8_switchback runs on the bf16 path with the switchback_layers through
// SwitchBack. The memory-efficient variant saves a layer's int8 input + row scales instead of its bf16 input only
// where the recompute level would save that input (ln_1 and ln_2 below recompute 2, the GELU output below 1), so it
// never costs memory; never out_proj's input, the attention output, which the attention backward keeps in bf16 anyway.
// SwitchBack's inputs but the attention output come quantized from their producers (LayerNorm, GELU); the bf16 copy
// is written only where the backward reads the saved one (not recomputed, not replaced by the int8 copy).
static void block_plan(const ClipGPU *g, BlockBuf *k, int r) {
    int me = g->cfg.switchback_variant == SB_VARIANT_MEMORY_EFFICIENT, kept[SB_LINEARS] = {r < 2, 0, r < 2, r < 1};
    k->recompute = r;
    for (int i = 0; i < SB_LINEARS; i++) {
        k->sb_saved[i] = me && g->sb_on[i] && kept[i];
        k->in_bf16[i] = !g->sb_on[i] || (kept[i] && !k->sb_saved[i]);
    }
}

// A model with its sizes set and no memory: enough to carve in counting mode. Per rank: max_batch pairs of
// the global batch_size.
static void init_shape(ClipGPU *g, const Config *c, const ClipLayout *L, int mb, int recompute) {
    memset(g, 0, sizeof(*g));
    g->cfg = *c, g->L = L;
    g->world = c->world_size, g->zero = c->zero && c->world_size > 1;
    g->use_bf16 = c->precision != PRECISION_FP32, g->mb = mb, g->max_batch = (int)(c->batch_size / c->world_size);
    g->recompute = recompute, g->recompute_keep = c->recompute_keep;
    g->has_ls = config_has_layer_scale(c);
    int sb = c->precision == PRECISION_INT8_SWITCHBACK;
    for (int i = 0; i < SB_LINEARS; i++) g->sb_on[i] = sb && (c->switchback_mask >> i & 1);
    g->fused_gelu = g->use_bf16 && !g->sb_on[SB_LINEAR_C_FC] && !g->sb_on[SB_LINEAR_C_PROJ] && L->visual.width % 16 == 0 &&
                    L->visual.mlp % 16 == 0 && L->text.width % 16 == 0 && L->text.mlp % 16 == 0 && hopper_code_runs();
    g->vis.t = &L->visual, g->txt.t = &L->text;
    g->vis.blocks = (BlockBuf *)callocCheck((size_t)L->visual.layers, sizeof(BlockBuf));
    g->txt.blocks = (BlockBuf *)callocCheck((size_t)L->text.layers, sizeof(BlockBuf));
    for (int l = 0; l < L->visual.layers; l++) block_plan(g, &g->vis.blocks[l], l < c->recompute_keep ? 0 : recompute);
    for (int l = 0; l < L->text.layers; l++) block_plan(g, &g->txt.blocks[l], l < c->recompute_keep ? 0 : recompute);
    g->vis.ln_w = L->ln_post_w, g->vis.ln_b = L->ln_post_b, g->vis.proj = L->visual_proj;
    g->txt.ln_w = L->ln_final_w, g->txt.ln_b = L->ln_final_b, g->txt.proj = L->text_projection;
    build_buckets(g);
}

static void free_shape(ClipGPU *g) {
    free(g->vis.blocks), free(g->txt.blocks);
    free(g->bucket_lo), free(g->bucket_hi), free(g->own_lo), free(g->own_hi), free(g->state_off);
    free(g->gather_order), free(g->gather_pending);
}

GpuMemoryPlan clip_gpu_memory_plan(const Config *c, const ClipLayout *L, int micro_batch, int recompute) {
    ClipGPU g;
    init_shape(&g, c, L, micro_batch, recompute);
    Arena a = {NULL, 0};
    GpuMemoryPlan p;
    carve(&g, &a, &p);
    free_shape(&g);
    return p;
}

// The optimizer's plan: every tensor, or with ZeRO-1 this rank's part of each bucket (the segments in address
// order, which is the order of their moments in m and u).
static void init_optimizer_plan(ClipGPU *g) {
    const ClipLayout *L = g->L;
    size_t *off = (size_t *)mallocCheck(L->num_tensors * sizeof(size_t)), *numel = (size_t *)mallocCheck(L->num_tensors * sizeof(size_t));
    int *decay = (int *)mallocCheck(L->num_tensors * sizeof(int)), nb = g->num_buckets, *order = (int *)mallocCheck(nb * sizeof(int));
    for (int i = 0; i < L->num_tensors; i++) off[i] = L->tensors[i].offset, numel[i] = L->tensors[i].numel, decay[i] = L->tensors[i].decay;
    size_t *seg_lo = (size_t *)mallocCheck(nb * sizeof(size_t)), *seg_hi = (size_t *)mallocCheck(nb * sizeof(size_t));
    for (int k = 0; k < nb; k++) {
        dist_part(g->bucket_hi[k] - g->bucket_lo[k], g->world, g->rank, &g->own_lo[k], &g->own_hi[k]);
        g->own_lo[k] += g->bucket_lo[k], g->own_hi[k] += g->bucket_lo[k];
        order[k] = k;
    }
    for (int a = 1; a < nb; a++)  // buckets by address
        for (int b = a; b > 0 && g->bucket_lo[order[b]] < g->bucket_lo[order[b - 1]]; b--) {
            int t = order[b];
            order[b] = order[b - 1], order[b - 1] = t;
        }
    size_t state = 0;
    for (int i = 0; i < nb; i++) {
        int k = order[i];
        seg_lo[i] = g->own_lo[k], seg_hi[i] = g->own_hi[k], g->state_off[k] = state, state += g->own_hi[k] - g->own_lo[k];
    }
    adamw_plan_init(&g->plan, L->num_tensors, off, numel, decay, g->cfg.wd, g->zero ? nb : 0, seg_lo, seg_hi);
    free(off), free(numel), free(decay), free(order), free(seg_lo), free(seg_hi);
}

// Whether the backward writes tensor t's gradient with a weight-gradient GEMM, which overwrites it in the step's
// first micro-batch: the blocks' linears (the tensors of a linear kind) and conv1 and the two projections.
static int grad_from_gemm(const ClipLayout *L, const ParamTensor *t) {
    return t->kind != KIND_OTHER || t->offset == L->conv1_w || t->offset == L->visual_proj || t->offset == L->text_projection;
}

// grad_zero: everything in the gradient buffer but the GEMM-written tensors (the padding between tensors too).
static void init_grad_zero(ClipGPU *g) {
    const ClipLayout *L = g->L;
    size_t *lo = (size_t *)mallocCheck((L->num_tensors + 1) * sizeof(size_t)), *hi = (size_t *)mallocCheck((L->num_tensors + 1) * sizeof(size_t));
    size_t cursor = 0;
    int n = 0;
    for (int i = 0; i < L->num_tensors; i++) {  // tensors in address order
        const ParamTensor *t = &L->tensors[i];
        if (!grad_from_gemm(L, t)) continue;
        if (t->offset > cursor) lo[n] = cursor, hi[n++] = t->offset;
        cursor = t->offset + t->numel;
    }
    if (L->buffer_elems > cursor) lo[n] = cursor, hi[n++] = L->buffer_elems;
    zero_plan_init(&g->grad_zero, n, lo, hi);
    free(lo), free(hi);
}

// The SwitchBack weight batch: every weight of a SwitchBack linear with its tensor's maximum in the optimizer plan.
static void init_weight_batch(ClipGPU *g) {
    const ClipLayout *L = g->L;
    int cap = SB_LINEARS * (L->visual.layers + L->text.layers), n = 0;
    SbWeight **w = (SbWeight **)mallocCheck(cap * sizeof(SbWeight *));
    const bf16 **W = (const bf16 **)mallocCheck(cap * sizeof(bf16 *));
    const float **mx = (const float **)mallocCheck(cap * sizeof(float *));
    TowerBuf *towers[2] = {&g->vis, &g->txt};
    for (int ti = 0; ti < 2; ti++)
        for (int l = 0; l < towers[ti]->t->layers; l++) {
            const BlockLayout *b = &towers[ti]->t->blocks[l];
            size_t off[SB_LINEARS] = {b->in_proj_w, b->out_proj_w, b->c_fc_w, b->c_proj_w};
            for (int i = 0; i < SB_LINEARS; i++) {
                if (!g->sb_on[i]) continue;
                int t = 0;
                while (t < L->num_tensors && L->tensors[t].offset != off[i]) t++;
                if (t == L->num_tensors) fatal("clip_gpu: no tensor at offset %zu for a SwitchBack weight", off[i]);
                w[n] = &towers[ti]->blocks[l].w8[i], W[n] = g->params_bf16 + off[i], mx[n] = g->plan.tensor_absmax + t, n++;
            }
        }
    sb_weight_batch_init(&g->sb_batch, w, W, mx, n);
    free(w), free(W), free(mx);
}

static double gib(size_t b) { return (double)b / (1u << 30); }

// Largest micro-batch (up to batch_size) whose plan fits in `avail` bytes, 0 if none.
static int largest_fit(const Config *c, const ClipLayout *L, int recompute, size_t avail) {
    int lo = 0, hi = (int)(c->batch_size / c->world_size);
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (clip_gpu_memory_plan(c, L, mid, recompute).total <= avail) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// The blocks of the deeper tower: recompute_keep at this keeps every block.
static int most_blocks(const ClipLayout *L) { return max(L->visual.layers, L->text.layers); }

int clip_gpu_largest_keep(const Config *c, const ClipLayout *L, int mb, size_t avail) {
    Config k = *c;
    int lo = c->recompute_keep - 1, hi = most_blocks(L);
    if (lo + 1 > hi) return c->recompute_keep;
    while (lo < hi) {
        k.recompute_keep = lo + (hi - lo + 1) / 2;
        if (clip_gpu_memory_plan(&k, L, mb, c->recompute).total <= avail) lo = k.recompute_keep;
        else hi = k.recompute_keep - 1;
    }
    return lo;
}

// Of free_b free bytes, what the plan may take: 256 MiB stay for what the CUDA libraries allocate later (cuBLASLt's
// workspace, NCCL's buffers, lazily loaded modules), so that a plan that does not fit stops at the start, not in step 1.
static size_t usable_memory(size_t free_b) { return free_b > (256u << 20) ? free_b - (256u << 20) : 0; }

int clip_gpu_print_memory_plan(const Config *c, const ClipLayout *L) {
    int mb = clip_gpu_micro_batch(c);
    GpuMemoryPlan p = clip_gpu_memory_plan(c, L, mb, c->recompute);
    size_t free_b = 0, total_b = 0;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    size_t avail = usable_memory(free_b);
    printf("memory plan (GPU, %s, micro-batch %d, recompute %d, recompute_keep %d): weights %.2f GiB, grads %.2f GiB, optimizer %.2f GiB, "
           "activations %.2f GiB, other %.2f GiB = %.2f GiB of %.2f GiB free\n",
           c->precision == PRECISION_FP32 ? "fp32" : c->precision == PRECISION_BF16 ? "bf16" : "int8_switchback", mb, c->recompute, c->recompute_keep, gib(p.weights), gib(p.grads), gib(p.optimizer),
           gib(p.activations), gib(p.other), gib(p.total), gib(free_b));
    printf("largest micro-batch that fits: recompute 0: %d, 1: %d, 2: %d (batch per rank %ld)\n", largest_fit(c, L, 0, avail),
           largest_fit(c, L, 1, avail), largest_fit(c, L, 2, avail), c->batch_size / c->world_size);
    int keep = c->recompute >= 1 ? clip_gpu_largest_keep(c, L, mb, avail) : -1;
    if (keep > c->recompute_keep)  // memory left over: the blocks kept skip their recompute (faster)
        printf("recompute_keep that fits at micro-batch %d: up to %d (%d keeps every block; now %d)\n", mb, keep, most_blocks(L),
               c->recompute_keep);
    return p.total <= avail;
}

ClipGPU *clip_gpu_create(const Config *c, const ClipLayout *L, const float *params) {
    GpuDist *dist = c->world_size > 1 ? gpu_dist() : NULL;
    if (c->world_size > 1 && (!dist || gd_world(dist) != c->world_size))
        fatal("clip_gpu_create: world_size %d needs the process's communicator of as many ranks (gpu_dist_init)", c->world_size);
    const char *why = clip_gpu_unavailable();
    if (!*why) why = clip_gpu_unsupported();  // this rank's GPU, selected by now
    if (*why) fatal("device = cuda: %s", why);
    int dev, major;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    if (major == 9 && !hopper_code_runs() && (!dist || gd_rank(dist) == 0))
        fprintf(stderr, "warning: this build has no sm_90a code, so the Hopper kernels (wgmma GEMM and attention) are off and the "
                "step is slower: build with the Makefile's CUDA_ARCH (-gencode=arch=compute_90a,code=sm_90a)\n");
    int mb = clip_gpu_micro_batch(c);
    if (c->precision != PRECISION_FP32) {
        const TowerLayout *ts[2] = {&L->visual, &L->text};
        for (int i = 0; i < 2; i++) {
            if (ts[i]->head_dim % 8 || ts[i]->head_dim > 128)
                fatal("precision = bf16/int8_switchback: attention head dim %d (%s tower) must be a multiple of 8 up to 128",
                      ts[i]->head_dim, i ? "text" : "image");
            if (c->precision == PRECISION_INT8_SWITCHBACK && (ts[i]->width % 16 || ts[i]->mlp % 16))
                fatal("precision = int8_switchback: the %s tower's width %d and MLP width %d must be multiples of 16 (int8 GEMM)",
                      i ? "text" : "image", ts[i]->width, ts[i]->mlp);
        }
    }
    ClipGPU *g = (ClipGPU *)callocCheck(1, sizeof(ClipGPU));
    init_shape(g, c, L, mb, c->recompute);
    g->dist = dist, g->rank = dist ? gd_rank(dist) : 0;
    matmul_set_tuning(c->gemm_tuning);
    Arena count = {NULL, 0};
    GpuMemoryPlan p;
    carve(g, &count, &p);
    size_t free_b, total_b;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    if (p.total > usable_memory(free_b)) {
        int fit = largest_fit(c, L, c->recompute, usable_memory(free_b));
        fatal("out of GPU memory: micro-batch %d needs %.2f GiB, %.2f GiB are free (0.25 GiB kept for the CUDA libraries). Largest micro-batch that fits with "
              "recompute = %d: %d; set micro_batch_size (gradient accumulation keeps the batch), recompute = 2 or a smaller recompute_keep",
              mb, gib(p.total), gib(free_b), c->recompute, fit);
    }
    if (g->dist) g->arena = (char *)gd_alloc(g->dist, count.used);  // a window for the copy engines' gathers
    else cudaCheck(cudaMalloc(&g->arena, count.used));
    Arena a = {g->arena, 0};
    carve(g, &a, &p);
    g->wts = g->use_bf16 ? (void *)g->params_bf16 : (void *)g->params;
    init_optimizer_plan(g);
    init_grad_zero(g);
    // NaN bytes: a gradient that the step fails to write shows in the first step (a non-finite norm), not as zeros
    cudaCheck(cudaMemset(g->grads, 0xFF, L->buffer_elems * sizeof(float)));
    if (g->zero) {
        g->gathered = (cudaEvent_t *)callocCheck((size_t)g->num_buckets, sizeof(cudaEvent_t));
        for (int k = 0; k < g->num_buckets; k++) cudaCheck(cudaEventCreateWithFlags(&g->gathered[k], cudaEventDisableTiming));
    }
    size_t state = g->zero ? shard_elems(g) : L->buffer_elems;
    cudaCheck(cudaMemset(g->m, 0, state * sizeof(float)));
    cudaCheck(cudaMemset(g->u, 0, state * sizeof(float)));
    if (c->precision == PRECISION_INT8_SWITCHBACK) {
        switchback_init(&g->sb, (SwitchBackMode)c->switchback_variant, g->sb_max_M, g->sb_max_C);
        if (!g->zero && g->sb.mode != SB_VECTORWISE) init_weight_batch(g);  // ZeRO-1 has no full bf16 update here
    }
    clip_gpu_upload(g, params, NULL);
    cudaCheck(cudaStreamCreateWithFlags(&g->copy_stream, cudaStreamNonBlocking));
    if (c->weight_grad_stream) {
        cudaCheck(cudaStreamCreateWithFlags(&g->wg_stream, cudaStreamNonBlocking));
        cudaCheck(cudaEventCreateWithFlags(&g->wg_fork, cudaEventDisableTiming));
        for (int e = 0; e < WG_EVENTS; e++) cudaCheck(cudaEventCreateWithFlags(&g->wg_done[e], cudaEventDisableTiming));
    }
    cudaCheck(cudaEventCreateWithFlags(&g->text_ready, cudaEventDisableTiming));
    cudaCheck(cudaEventCreateWithFlags(&g->images_ready, cudaEventDisableTiming));
    for (int k = 0; k < 2; k++) {
        cudaCheck(cudaMallocHost(&g->stage[k], g->input_bytes));
        cudaCheck(cudaEventCreateWithFlags(&g->stage_free[k], cudaEventDisableTiming));
        cudaCheck(cudaEventCreateWithFlags(&g->consumed[k], cudaEventDisableTiming));
        cudaCheck(cudaEventRecord(g->stage_free[k], 0));
        cudaCheck(cudaEventRecord(g->consumed[k], 0));
    }
    // token_index_build's counts: of the token ids (vocab_size) and of the positions (context_length), in turn
    g->vocab_counts = (int *)mallocCheck((size_t)(c->vocab_size > c->context_length ? c->vocab_size : c->context_length) * sizeof(int));
    cudaCheck(cudaDeviceSynchronize());
    return g;
}

void clip_gpu_free(ClipGPU *g) {
    if (!g) return;
    cudaCheck(cudaDeviceSynchronize());
    for (int k = 0; k < 2; k++) {
        cudaCheck(cudaFreeHost(g->stage[k]));
        cudaCheck(cudaEventDestroy(g->stage_free[k])), cudaCheck(cudaEventDestroy(g->consumed[k]));
    }
    cudaCheck(cudaEventDestroy(g->text_ready)), cudaCheck(cudaEventDestroy(g->images_ready));
    cudaCheck(cudaStreamDestroy(g->copy_stream));
    if (g->wg_stream) {
        cudaCheck(cudaStreamDestroy(g->wg_stream));
        cudaCheck(cudaEventDestroy(g->wg_fork));
        for (int e = 0; e < WG_EVENTS; e++) cudaCheck(cudaEventDestroy(g->wg_done[e]));
    }
    if (g->prof_ev[0])
        for (int i = 0; i < PROF_EVENTS; i++) cudaCheck(cudaEventDestroy(g->prof_ev[i]));
    adamw_plan_free(&g->plan), zero_plan_free(&g->grad_zero);
    for (int k = 0; g->gathered && k < g->num_buckets; k++) cudaCheck(cudaEventDestroy(g->gathered[k]));
    free(g->gathered);
    if (g->cfg.precision == PRECISION_INT8_SWITCHBACK) switchback_free(&g->sb);
    if (g->sb_batch.jobs) sb_weight_batch_free(&g->sb_batch);
    if (g->dist) gd_free(g->dist, g->arena);
    else cudaCheck(cudaFree(g->arena));
    free_shape(g), free(g->vocab_counts);
    free(g);
}
