// clip_cpu.c: the fp32 CPU CLIP: forward and backward of both towers and the loss, one op at a time.
#include "clip_cpu.h"

#include <math.h>
#include <string.h>

#include "ops_cpu.h"
#include "utils.h"

// ---------------------------------------------------------------- activation buffers

// Carves consecutive float arrays out of one allocation (or only counts them when base is NULL).
typedef struct {
    float *base;
    size_t used;
} Arena;

static float *take(Arena *a, size_t n) {
    float *p = a->base ? a->base + a->used : NULL;
    a->used += (n + 15) / 16 * 16;
    return p;
}

static void carve_block(Arena *a, BlockActs *k, int B, int T, int D, int H, int NH) {
    size_t N = (size_t)B * T;
    k->ln_1 = take(a, N * D), k->ln_1_mean = take(a, N), k->ln_1_rstd = take(a, N);
    k->qkv = take(a, N * 3 * D);
    k->att = take(a, (size_t)B * NH * T * T);
    k->att_y = take(a, N * D), k->attn = take(a, N * D), k->res_1 = take(a, N * D);
    k->ln_2 = take(a, N * D), k->ln_2_mean = take(a, N), k->ln_2_rstd = take(a, N);
    k->fc = take(a, N * H), k->fc_gelu = take(a, N * H), k->mlp = take(a, N * D), k->res_2 = take(a, N * D);
}

static void carve(Arena *a, ClipActs *x, const ClipCPU *m, int B) {
    const Config *c = &m->cfg;
    const TowerLayout *V = &m->layout.visual, *Tt = &m->layout.text;
    int S = c->image_size, P = c->patch_size, G2 = (S / P) * (S / P), E = c->embed_dim;
    x->B = B;
    x->images = take(a, (size_t)B * 3 * S * S);
    x->patches = take(a, (size_t)B * G2 * 3 * P * P);
    x->patch_emb = take(a, (size_t)B * G2 * V->width);
    x->v_embed = take(a, (size_t)B * V->tokens * V->width);
    x->ln_pre = take(a, (size_t)B * V->tokens * V->width);
    x->ln_pre_mean = take(a, (size_t)B * V->tokens), x->ln_pre_rstd = take(a, (size_t)B * V->tokens);
    for (int l = 0; l < V->layers; l++) carve_block(a, &x->v_blocks[l], B, V->tokens, V->width, V->mlp, V->heads);
    x->v_pooled = take(a, (size_t)B * V->width), x->ln_post = take(a, (size_t)B * V->width);
    x->ln_post_mean = take(a, B), x->ln_post_rstd = take(a, B);
    x->image_features = take(a, (size_t)B * E);
    x->t_embed = take(a, (size_t)B * Tt->tokens * Tt->width);
    for (int l = 0; l < Tt->layers; l++) carve_block(a, &x->t_blocks[l], B, Tt->tokens, Tt->width, Tt->mlp, Tt->heads);
    x->t_pooled = take(a, (size_t)B * Tt->width), x->ln_final = take(a, (size_t)B * Tt->width);
    x->ln_final_mean = take(a, B), x->ln_final_rstd = take(a, B);
    x->text_features = take(a, (size_t)B * E);
}

// Backward scratch: the larger tower's dres + d1 + d2 (N, D) and w1 + w2 (N, max(3D, H)); at least one
// transposed projection (the forward uses it as a temporary).
static size_t scratch_elems(const ClipCPU *m, int B) {
    size_t best = 0;
    const TowerLayout *towers[2] = {&m->layout.visual, &m->layout.text};
    for (int i = 0; i < 2; i++) {
        const TowerLayout *t = towers[i];
        size_t N = (size_t)B * t->tokens, wide = (size_t)t->mlp > 3 * (size_t)t->width ? (size_t)t->mlp : 3 * (size_t)t->width;
        size_t need = N * t->width * 3 + N * wide * 2;
        if (need > best) best = need;
    }
    size_t proj = (size_t)(m->layout.visual.width > m->layout.text.width ? m->layout.visual.width : m->layout.text.width) * m->cfg.embed_dim;
    return best > proj ? best : proj;
}

size_t clip_cpu_activation_bytes(const ClipCPU *m, int B) {
    Arena a = {NULL, 0};
    ClipActs x;
    BlockActs vb[m->layout.visual.layers], tb[m->layout.text.layers];
    x.v_blocks = vb, x.t_blocks = tb;
    carve(&a, &x, m, B);
    return (a.used + scratch_elems(m, B)) * sizeof(float) + (size_t)B * m->cfg.context_length * sizeof(int32_t);
}

void clip_cpu_init(ClipCPU *m, const Config *c, int B) {
    memset(m, 0, sizeof(*m));
    m->cfg = *c;
    clip_layout_build(&m->layout, c);
    m->params = mallocCheck(m->layout.buffer_elems * sizeof(float));
    m->grads = callocCheck(m->layout.buffer_elems, sizeof(float));
    clip_init_params(&m->layout, m->params, c->seed);
    ClipActs *x = &m->acts;
    x->v_blocks = callocCheck((size_t)m->layout.visual.layers, sizeof(BlockActs));
    x->t_blocks = callocCheck((size_t)m->layout.text.layers, sizeof(BlockActs));
    Arena count = {NULL, 0};
    carve(&count, x, m, B);
    Arena a = {mallocCheck(count.used * sizeof(float)), 0};
    carve(&a, x, m, B);
    x->tokens = mallocCheck((size_t)B * c->context_length * sizeof(int32_t));
    x->eot = mallocCheck((size_t)B * sizeof(int));
    m->scratch = mallocCheck(scratch_elems(m, B) * sizeof(float));
    int wmax = m->layout.visual.width > m->layout.text.width ? m->layout.visual.width : m->layout.text.width;
    m->pooled_scratch = mallocCheck((size_t)2 * B * wmax * sizeof(float));
}

void clip_cpu_free(ClipCPU *m) {
    free(m->acts.images);  // the arena starts at the first carved array
    free(m->acts.tokens), free(m->acts.eot), free(m->acts.v_blocks), free(m->acts.t_blocks);
    free(m->params), free(m->grads), free(m->scratch), free(m->pooled_scratch);
    clip_layout_free(&m->layout);
}

// ---------------------------------------------------------------- forward

static const float *opt(const float *base, size_t off) { return off == NO_TENSOR ? NULL : base + off; }

// One pre-LN residual block: x -> res_2. x (B, T, D).
static void block_forward(const ClipCPU *m, const TowerLayout *t, const BlockLayout *w, BlockActs *k, const float *x, int B) {
    const float *P = m->params;
    int T = t->tokens, D = t->width, H = t->mlp, N = B * T;
    layernorm_forward(k->ln_1, k->ln_1_mean, k->ln_1_rstd, x, P + w->ln_1_w, P + w->ln_1_b, N, D);
    matmul_forward(k->qkv, k->ln_1, P + w->in_proj_w, P + w->in_proj_b, N, D, 3 * D);
    attention_forward(k->att_y, k->att, k->qkv, B, T, D, t->heads, t->causal);
    matmul_forward(k->attn, k->att_y, P + w->out_proj_w, P + w->out_proj_b, N, D, D);
    residual_forward(k->res_1, x, k->attn, opt(P, w->ls_1), N, D);
    layernorm_forward(k->ln_2, k->ln_2_mean, k->ln_2_rstd, k->res_1, P + w->ln_2_w, P + w->ln_2_b, N, D);
    matmul_forward(k->fc, k->ln_2, P + w->c_fc_w, P + w->c_fc_b, N, D, H);
    gelu_forward(k->fc_gelu, k->fc, (size_t)N * H, m->cfg.quick_gelu);
    matmul_forward(k->mlp, k->fc_gelu, P + w->c_proj_w, P + w->c_proj_b, N, H, D);
    residual_forward(k->res_2, k->res_1, k->mlp, opt(P, w->ls_2), N, D);
}

// Transpose a (R, C) projection so matmul_forward (which takes w as (OC, C)) can apply x @ proj.
static void project(float *out, const float *x, const float *proj, int B, int R, int C, float *tmp) {
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) tmp[(size_t)c * R + r] = proj[(size_t)r * C + c];
    matmul_forward(out, x, tmp, NULL, B, R, C);
}

static void check_batch(const ClipCPU *m, int B) {
    if (B < 1 || B > m->acts.B) fatal("clip_cpu: batch %d is outside 1..%d, the batch the model was built for", B, m->acts.B);
}

void clip_cpu_encode_image(ClipCPU *m, const float *images, int B) {
    const Config *c = &m->cfg;
    const ClipLayout *L = &m->layout;
    const float *P = m->params;
    ClipActs *x = &m->acts;
    check_batch(m, B);
    int S = c->image_size, Ps = c->patch_size, G2 = (S / Ps) * (S / Ps);
    const TowerLayout *V = &L->visual;
    // patches @ conv1 -> + class token, positions -> ln_pre -> blocks -> ln_post(class token) @ proj
    memcpy(x->images, images, (size_t)B * 3 * S * S * sizeof(float));
    patch_extract(x->patches, x->images, B, S, Ps);
    matmul_forward(x->patch_emb, x->patches, P + L->conv1_w, NULL, B * G2, 3 * Ps * Ps, V->width);
    vision_embed_forward(x->v_embed, x->patch_emb, P + L->class_embedding, P + L->visual_pos, B, G2, V->width);
    layernorm_forward(x->ln_pre, x->ln_pre_mean, x->ln_pre_rstd, x->v_embed, P + L->ln_pre_w, P + L->ln_pre_b, B * V->tokens, V->width);
    const float *res = x->ln_pre;
    for (int l = 0; l < V->layers; l++) block_forward(m, V, &V->blocks[l], &x->v_blocks[l], res, B), res = x->v_blocks[l].res_2;
    int *zeros = callocCheck((size_t)B, sizeof(int));
    gather_rows(x->v_pooled, res, zeros, B, V->tokens, V->width);
    free(zeros);
    layernorm_forward(x->ln_post, x->ln_post_mean, x->ln_post_rstd, x->v_pooled, P + L->ln_post_w, P + L->ln_post_b, B, V->width);
    project(x->image_features, x->ln_post, P + L->visual_proj, B, V->width, c->embed_dim, m->scratch);
    x->B_image = B;
}

void clip_cpu_encode_text(ClipCPU *m, const int32_t *tokens, int B) {
    const Config *c = &m->cfg;
    const ClipLayout *L = &m->layout;
    const float *P = m->params;
    ClipActs *x = &m->acts;
    check_batch(m, B);
    const TowerLayout *Tt = &L->text;
    // token + position embeddings -> causal blocks -> ln_final at the EOT -> @ text_projection
    memcpy(x->tokens, tokens, (size_t)B * Tt->tokens * sizeof(int32_t));
    for (size_t i = 0; i < (size_t)B * Tt->tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size) fatal("token id %d at position %zu is outside the vocabulary (%d)", tokens[i], i, c->vocab_size);
    text_embed_forward(x->t_embed, x->tokens, P + L->token_embedding, P + L->text_pos, B, Tt->tokens, Tt->width);
    const float *res = x->t_embed;
    for (int l = 0; l < Tt->layers; l++) block_forward(m, Tt, &Tt->blocks[l], &x->t_blocks[l], res, B), res = x->t_blocks[l].res_2;
    eot_positions(x->eot, x->tokens, B, Tt->tokens);
    gather_rows(x->t_pooled, res, x->eot, B, Tt->tokens, Tt->width);
    layernorm_forward(x->ln_final, x->ln_final_mean, x->ln_final_rstd, x->t_pooled, P + L->ln_final_w, P + L->ln_final_b, B, Tt->width);
    project(x->text_features, x->ln_final, P + L->text_projection, B, Tt->width, c->embed_dim, m->scratch);
    x->B_text = B;
}

float clip_cpu_forward(ClipCPU *m, const float *images, const int32_t *tokens, int B) {
    clip_cpu_encode_image(m, images, B);
    clip_cpu_encode_text(m, tokens, B);
    ClipActs *x = &m->acts;
    x->loss = contrastive_loss(x->image_features, x->text_features, m->params[m->layout.logit_scale], B, m->cfg.embed_dim, NULL, NULL, NULL);
    return x->loss;
}

// ---------------------------------------------------------------- backward

static float *optg(float *base, size_t off) { return off == NO_TENSOR ? NULL : base + off; }

// Backward scratch of one tower: two (N, D) and two (N, max(3D, H)) gradient buffers.
typedef struct {
    float *d1, *d2, *w1, *w2;
} BlockScratch;

// dres (N, D): gradient w.r.t. the block output on entry, w.r.t. the block input x on return.
static void block_backward(ClipCPU *m, const TowerLayout *t, const BlockLayout *w, const BlockActs *k, const float *x, int B,
                           float *dres, const BlockScratch *s) {
    const float *P = m->params;
    float *G = m->grads;
    int T = t->tokens, D = t->width, H = t->mlp, N = B * T;
    size_t ND = (size_t)N * D * sizeof(float), NH = (size_t)N * H * sizeof(float);
    // res_2 = res_1 + ls_2 * mlp(ln_2(res_1))
    float *dres_1 = s->d1, *dmlp = s->d2;
    memset(dres_1, 0, ND), memset(dmlp, 0, ND);
    residual_backward(dres_1, dmlp, optg(G, w->ls_2), dres, k->mlp, opt(P, w->ls_2), N, D);
    float *dfc_gelu = s->w1, *dfc = s->w2, *dln_2 = s->d2;
    memset(dfc_gelu, 0, NH);
    matmul_backward(dfc_gelu, G + w->c_proj_w, G + w->c_proj_b, dmlp, k->fc_gelu, P + w->c_proj_w, N, H, D);
    memset(dfc, 0, NH);
    gelu_backward(dfc, dfc_gelu, k->fc, (size_t)N * H, m->cfg.quick_gelu);
    memset(dln_2, 0, ND);
    matmul_backward(dln_2, G + w->c_fc_w, G + w->c_fc_b, dfc, k->ln_2, P + w->c_fc_w, N, D, H);
    layernorm_backward(dres_1, G + w->ln_2_w, G + w->ln_2_b, dln_2, k->res_1, P + w->ln_2_w, k->ln_2_mean, k->ln_2_rstd, N, D);
    // res_1 = x + ls_1 * out_proj(attention(in_proj(ln_1(x))))
    float *dx = dres, *dattn = s->d2, *datt_y = s->w2, *dqkv = s->w1, *dln_1 = s->d2;
    memset(dx, 0, ND), memset(dattn, 0, ND);
    residual_backward(dx, dattn, optg(G, w->ls_1), dres_1, k->attn, opt(P, w->ls_1), N, D);
    memset(datt_y, 0, ND);
    matmul_backward(datt_y, G + w->out_proj_w, G + w->out_proj_b, dattn, k->att_y, P + w->out_proj_w, N, D, D);
    memset(dqkv, 0, 3 * ND);
    attention_backward(dqkv, datt_y, k->qkv, k->att, B, T, D, t->heads, t->causal);
    memset(dln_1, 0, ND);
    matmul_backward(dln_1, G + w->in_proj_w, G + w->in_proj_b, dqkv, k->ln_1, P + w->in_proj_w, N, D, 3 * D);
    layernorm_backward(dx, G + w->ln_1_w, G + w->ln_1_b, dln_1, x, P + w->ln_1_w, k->ln_1_mean, k->ln_1_rstd, N, D);
}

// d (x @ proj) for proj (R, C): dx (B, R) += dout @ proj^T, dproj (R, C) += x^T @ dout.
static void project_backward(float *dx, float *dproj, const float *dout, const float *x, const float *proj, int B, int R, int C) {
    for (int b = 0; b < B; b++)
        for (int r = 0; r < R; r++) {
            float s = 0.0f;
            for (int c = 0; c < C; c++) s += dout[(size_t)b * C + c] * proj[(size_t)r * C + c];
            dx[(size_t)b * R + r] += s;
        }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            float s = 0.0f;
            for (int b = 0; b < B; b++) s += x[(size_t)b * R + r] * dout[(size_t)b * C + c];
            dproj[(size_t)r * C + c] += s;
        }
}

// Backward through one tower's blocks; dres (B*T, D) holds d(last block output) and returns d(first input).
// Scratch layout after dres: d1, d2 (N, D), w1, w2 (N, max(3D, H)).
static void tower_backward(ClipCPU *m, const TowerLayout *t, BlockActs *acts, const float *input, int B, float *dres) {
    size_t N = (size_t)B * t->tokens, wide = t->mlp > 3 * t->width ? (size_t)t->mlp : 3 * (size_t)t->width;
    BlockScratch s;
    s.d1 = dres + N * t->width, s.d2 = s.d1 + N * t->width, s.w1 = s.d2 + N * t->width, s.w2 = s.w1 + N * wide;
    for (int l = t->layers - 1; l >= 0; l--)
        block_backward(m, t, &t->blocks[l], &acts[l], l == 0 ? input : acts[l - 1].res_2, B, dres, &s);
}

void clip_cpu_backward_image(ClipCPU *m, const float *dimg) {
    const Config *c = &m->cfg;
    const ClipLayout *L = &m->layout;
    const float *P = m->params;
    float *G = m->grads;
    ClipActs *x = &m->acts;
    int B = x->B_image, E = c->embed_dim, S = c->image_size, Ps = c->patch_size, G2 = (S / Ps) * (S / Ps);
    const TowerLayout *V = &L->visual;
    size_t N = (size_t)B * V->tokens;
    // top down; dres (the residual gradient) is the first (N, D) of scratch, the pooled gradients follow it
    float *dres = m->scratch, *dpool = m->pooled_scratch, *dln = m->pooled_scratch + (size_t)B * V->width;
    memset(dpool, 0, (size_t)B * V->width * sizeof(float));
    project_backward(dpool, G + L->visual_proj, dimg, x->ln_post, P + L->visual_proj, B, V->width, E);
    memset(dln, 0, (size_t)B * V->width * sizeof(float));
    layernorm_backward(dln, G + L->ln_post_w, G + L->ln_post_b, dpool, x->v_pooled, P + L->ln_post_w, x->ln_post_mean, x->ln_post_rstd, B, V->width);
    memset(dres, 0, N * V->width * sizeof(float));
    int *zeros = callocCheck((size_t)B, sizeof(int));
    gather_rows_backward(dres, dln, zeros, B, V->tokens, V->width);
    free(zeros);
    tower_backward(m, V, x->v_blocks, x->ln_pre, B, dres);
    // dres = d ln_pre; through ln_pre into the embeddings (the block scratch after dres is free now)
    float *dembed = m->scratch + N * V->width;
    memset(dembed, 0, N * V->width * sizeof(float));
    layernorm_backward(dembed, G + L->ln_pre_w, G + L->ln_pre_b, dres, x->v_embed, P + L->ln_pre_w, x->ln_pre_mean, x->ln_pre_rstd, (int)N, V->width);
    float *dpatch = dres;  // (B * G2, Dv) fits in dres
    memset(dpatch, 0, (size_t)B * G2 * V->width * sizeof(float));
    vision_embed_backward(dpatch, G + L->class_embedding, G + L->visual_pos, dembed, B, G2, V->width);
    matmul_backward(NULL, G + L->conv1_w, NULL, dpatch, x->patches, P + L->conv1_w, B * G2, 3 * Ps * Ps, V->width);
}

void clip_cpu_backward_text(ClipCPU *m, const float *dtxt) {
    const Config *c = &m->cfg;
    const ClipLayout *L = &m->layout;
    const float *P = m->params;
    float *G = m->grads;
    ClipActs *x = &m->acts;
    int B = x->B_text, E = c->embed_dim;
    const TowerLayout *Tt = &L->text;
    float *dres = m->scratch, *dpool = m->pooled_scratch, *dln = m->pooled_scratch + (size_t)B * Tt->width;
    memset(dpool, 0, (size_t)B * Tt->width * sizeof(float));
    project_backward(dpool, G + L->text_projection, dtxt, x->ln_final, P + L->text_projection, B, Tt->width, E);
    memset(dln, 0, (size_t)B * Tt->width * sizeof(float));
    layernorm_backward(dln, G + L->ln_final_w, G + L->ln_final_b, dpool, x->t_pooled, P + L->ln_final_w, x->ln_final_mean, x->ln_final_rstd, B, Tt->width);
    memset(dres, 0, (size_t)B * Tt->tokens * Tt->width * sizeof(float));
    gather_rows_backward(dres, dln, x->eot, B, Tt->tokens, Tt->width);
    tower_backward(m, Tt, x->t_blocks, x->t_embed, B, dres);
    text_embed_backward(G + L->token_embedding, G + L->text_pos, dres, x->tokens, B, Tt->tokens, Tt->width, c->vocab_size);
}

void clip_cpu_backward(ClipCPU *m) {
    ClipActs *x = &m->acts;
    const ClipLayout *L = &m->layout;
    int B = x->B_image, E = m->cfg.embed_dim;
    if (x->B_text != B) fatal("clip_cpu_backward: the last image and text batches differ (%d vs %d)", B, x->B_text);
    memset(m->grads, 0, L->buffer_elems * sizeof(float));
    float *dimg = mallocCheck((size_t)B * E * sizeof(float)), *dtxt = mallocCheck((size_t)B * E * sizeof(float));
    contrastive_loss(x->image_features, x->text_features, m->params[L->logit_scale], B, E, dimg, dtxt, m->grads + L->logit_scale);
    clip_cpu_backward_image(m, dimg);
    clip_cpu_backward_text(m, dtxt);
    free(dimg), free(dtxt);
}
