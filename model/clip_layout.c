// clip_layout.c: builds the parameter table of a CLIP config (names, shapes and init exactly as
// open_clip's CLIP with a ViT image tower and a causal text transformer) and initialises parameters.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "clip.h"
#include "rng.h"
#include "utils.h"

#define ALIGN_ELEMS 32

typedef struct {
    ClipLayout *L;
    int cap;
    size_t cursor;
} Builder;

static size_t add(Builder *b, const char *name, int tower, int kind, int init, float init_value, int ndim, int d0,
                  int d1, int d2, int d3) {
    ClipLayout *L = b->L;
    if (L->num_tensors == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        L->tensors = reallocCheck(L->tensors, (size_t)b->cap * sizeof(ParamTensor));
    }
    ParamTensor *t = &L->tensors[L->num_tensors++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    int dims[4] = {d0, d1, d2, d3};
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) t->shape[i] = dims[i], t->numel *= (size_t)dims[i];
    t->tower = tower;
    t->kind = kind;
    t->init = init;
    t->init_value = init_value;
    t->decay = ndim >= 2;
    t->offset = b->cursor;
    b->cursor += (t->numel + ALIGN_ELEMS - 1) / ALIGN_ELEMS * ALIGN_ELEMS;
    if (tower == TOWER_VISION) L->num_image_params += t->numel;
    if (tower == TOWER_TEXT) L->num_text_params += t->numel;
    return t->offset;
}

// The blocks of one tower. Text blocks use open_clip's TextTransformer.init_parameters (normal);
// vision blocks keep PyTorch's defaults (xavier for in_proj, kaiming-uniform Linear init).
static void add_tower_blocks(Builder *b, TowerLayout *T, const char *prefix, int tower, int text_init,
                             float ls_init, int has_ls) {
    int D = T->width, H = T->mlp;
    float lin_d = 1.0f / sqrtf((float)D), lin_h = 1.0f / sqrtf((float)H);
    float attn_std = powf((float)D, -0.5f), proj_std = attn_std * powf(2.0f * T->layers, -0.5f);
    float fc_std = powf(2.0f * D, -0.5f);
    T->blocks = callocCheck((size_t)T->layers, sizeof(BlockLayout));
    for (int l = 0; l < T->layers; l++) {
        BlockLayout *k = &T->blocks[l];
        char n[96];
#define NAME(s) (snprintf(n, sizeof(n), "%sresblocks.%d.%s", prefix, l, s), n)
        k->ln_1_w = add(b, NAME("ln_1.weight"), tower, KIND_OTHER, INIT_ONES, 0, 1, D, 0, 0, 0);
        k->ln_1_b = add(b, NAME("ln_1.bias"), tower, KIND_OTHER, INIT_ZEROS, 0, 1, D, 0, 0, 0);
        k->in_proj_w = text_init ? add(b, NAME("attn.in_proj_weight"), tower, KIND_QKV, INIT_NORMAL, attn_std, 2, 3 * D, D, 0, 0)
                                 : add(b, NAME("attn.in_proj_weight"), tower, KIND_QKV, INIT_UNIFORM,
                                       sqrtf(6.0f / (float)(D + 3 * D)), 2, 3 * D, D, 0, 0);
        k->in_proj_b = add(b, NAME("attn.in_proj_bias"), tower, KIND_OTHER, INIT_ZEROS, 0, 1, 3 * D, 0, 0, 0);
        k->out_proj_w = add(b, NAME("attn.out_proj.weight"), tower, KIND_OUT_PROJ, text_init ? INIT_NORMAL : INIT_UNIFORM,
                            text_init ? proj_std : lin_d, 2, D, D, 0, 0);
        k->out_proj_b = add(b, NAME("attn.out_proj.bias"), tower, KIND_OTHER, INIT_ZEROS, 0, 1, D, 0, 0, 0);
        k->ls_1 = has_ls ? add(b, NAME("ls_1.gamma"), tower, KIND_OTHER, INIT_CONST, ls_init, 1, D, 0, 0, 0) : NO_TENSOR;
        k->ln_2_w = add(b, NAME("ln_2.weight"), tower, KIND_OTHER, INIT_ONES, 0, 1, D, 0, 0, 0);
        k->ln_2_b = add(b, NAME("ln_2.bias"), tower, KIND_OTHER, INIT_ZEROS, 0, 1, D, 0, 0, 0);
        k->c_fc_w = add(b, NAME("mlp.c_fc.weight"), tower, KIND_C_FC, text_init ? INIT_NORMAL : INIT_UNIFORM,
                        text_init ? fc_std : lin_d, 2, H, D, 0, 0);
        k->c_fc_b = add(b, NAME("mlp.c_fc.bias"), tower, KIND_OTHER, INIT_UNIFORM, lin_d, 1, H, 0, 0, 0);
        k->c_proj_w = add(b, NAME("mlp.c_proj.weight"), tower, KIND_C_PROJ, text_init ? INIT_NORMAL : INIT_UNIFORM,
                          text_init ? proj_std : lin_h, 2, D, H, 0, 0);
        k->c_proj_b = add(b, NAME("mlp.c_proj.bias"), tower, KIND_OTHER, INIT_UNIFORM, lin_h, 1, D, 0, 0, 0);
        k->ls_2 = has_ls ? add(b, NAME("ls_2.gamma"), tower, KIND_OTHER, INIT_CONST, ls_init, 1, D, 0, 0, 0) : NO_TENSOR;
#undef NAME
    }
}

void clip_layout_build(ClipLayout *L, const Config *c) {
    memset(L, 0, sizeof(*L));
    Builder b = {L, 0, 0};
    int E = c->embed_dim, P = c->patch_size;
    int has_ls = config_has_layer_scale(c);

    TowerLayout *V = &L->visual;
    V->width = c->vision_width, V->layers = c->vision_layers, V->heads = c->vision_heads;
    V->head_dim = V->width / V->heads, V->mlp = config_vision_mlp(c), V->tokens = config_vision_tokens(c), V->causal = 0;
    int Dv = V->width;
    float vscale = powf((float)Dv, -0.5f);
    L->conv1_w = add(&b, "visual.conv1.weight", TOWER_VISION, KIND_OTHER, INIT_UNIFORM, 1.0f / sqrtf(3.0f * P * P), 4, Dv, 3, P, P);
    L->class_embedding = add(&b, "visual.class_embedding", TOWER_VISION, KIND_OTHER, INIT_NORMAL, vscale, 1, Dv, 0, 0, 0);
    L->visual_pos = add(&b, "visual.positional_embedding", TOWER_VISION, KIND_OTHER, INIT_NORMAL, vscale, 2, V->tokens, Dv, 0, 0);
    L->ln_pre_w = add(&b, "visual.ln_pre.weight", TOWER_VISION, KIND_OTHER, INIT_ONES, 0, 1, Dv, 0, 0, 0);
    L->ln_pre_b = add(&b, "visual.ln_pre.bias", TOWER_VISION, KIND_OTHER, INIT_ZEROS, 0, 1, Dv, 0, 0, 0);
    add_tower_blocks(&b, V, "visual.transformer.", TOWER_VISION, 0, c->layer_scale_init, has_ls);
    L->ln_post_w = add(&b, "visual.ln_post.weight", TOWER_VISION, KIND_OTHER, INIT_ONES, 0, 1, Dv, 0, 0, 0);
    L->ln_post_b = add(&b, "visual.ln_post.bias", TOWER_VISION, KIND_OTHER, INIT_ZEROS, 0, 1, Dv, 0, 0, 0);
    L->visual_proj = add(&b, "visual.proj", TOWER_VISION, KIND_OTHER, INIT_NORMAL, vscale, 2, Dv, E, 0, 0);

    TowerLayout *T = &L->text;
    T->width = c->text_width, T->layers = c->text_layers, T->heads = c->text_heads;
    T->head_dim = T->width / T->heads, T->mlp = config_text_mlp(c), T->tokens = c->context_length, T->causal = 1;
    int Dt = T->width;
    L->token_embedding = add(&b, "token_embedding.weight", TOWER_TEXT, KIND_OTHER, INIT_NORMAL, 0.02f, 2, c->vocab_size, Dt, 0, 0);
    L->text_pos = add(&b, "positional_embedding", TOWER_TEXT, KIND_OTHER, INIT_NORMAL, 0.01f, 2, T->tokens, Dt, 0, 0);
    add_tower_blocks(&b, T, "transformer.", TOWER_TEXT, 1, c->layer_scale_init, has_ls);
    L->ln_final_w = add(&b, "ln_final.weight", TOWER_TEXT, KIND_OTHER, INIT_ONES, 0, 1, Dt, 0, 0, 0);
    L->ln_final_b = add(&b, "ln_final.bias", TOWER_TEXT, KIND_OTHER, INIT_ZEROS, 0, 1, Dt, 0, 0, 0);
    L->text_projection = add(&b, "text_projection", TOWER_TEXT, KIND_OTHER, INIT_NORMAL, powf((float)Dt, -0.5f), 2, Dt, E, 0, 0);

    L->logit_scale = add(&b, "logit_scale", TOWER_NONE, KIND_OTHER, INIT_CONST, logf(1.0f / 0.07f), 0, 0, 0, 0, 0);
    L->buffer_elems = b.cursor;
    L->num_params = L->num_image_params + L->num_text_params + 1;
}

void clip_layout_free(ClipLayout *L) {
    free(L->tensors);
    free(L->visual.blocks);
    free(L->text.blocks);
    memset(L, 0, sizeof(*L));
}

int clip_layout_find(const ClipLayout *L, const char *name) {
    for (int i = 0; i < L->num_tensors; i++)
        if (strcmp(L->tensors[i].name, name) == 0) return i;
    return -1;
}

void clip_init_params(const ClipLayout *L, float *params, uint64_t seed) {
    memset(params, 0, L->buffer_elems * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < L->num_tensors; i++) {
        const ParamTensor *t = &L->tensors[i];
        float *p = params + t->offset;
        Rng r;
        rng_init(&r, seed, RNG_INIT, (uint64_t)i);  // one stream per tensor: thread-count independent
        for (size_t j = 0; j < t->numel; j++) {
            switch (t->init) {
                case INIT_ZEROS: p[j] = 0.0f; break;
                case INIT_ONES: p[j] = 1.0f; break;
                case INIT_CONST: p[j] = t->init_value; break;
                case INIT_NORMAL: p[j] = t->init_value * (float)rng_normal(&r); break;
                case INIT_UNIFORM: p[j] = t->init_value * (float)(2.0 * rng_uniform(&r) - 1.0); break;
            }
        }
    }
}

// 2 FLOPs per multiply-add; per block: qkv, out_proj, c_fc, c_proj, and q k^T + att v.
static double tower_flops(const TowerLayout *t) {
    double T = t->tokens, D = t->width, H = t->mlp;
    return t->layers * (2 * T * (3 * D * D + D * D + 2 * D * H) + 4 * T * T * D);
}

double clip_forward_flops(const ClipLayout *L, const Config *c) {
    double G2 = (double)(c->image_size / c->patch_size) * (c->image_size / c->patch_size);
    double patch = 2 * G2 * 3 * c->patch_size * c->patch_size * L->visual.width;
    double proj = 2.0 * c->embed_dim * (L->visual.width + L->text.width);
    return patch + tower_flops(&L->visual) + tower_flops(&L->text) + proj;
}
