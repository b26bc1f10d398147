// clip.h: the CLIP model definition shared by every execution path: the parameter table (open_clip's
// state_dict names and shapes, init rule, weight-decay flag) and the layout of all parameters in one flat
// buffer. A layout holds element offsets, so `base + layout.visual.blocks[l].in_proj_w` addresses a tensor
// in the fp32 parameters, the gradients, the optimizer moments, or a bf16 copy on the GPU alike.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define NO_TENSOR ((size_t)-1)  // offset of a tensor the config does not have (layer-scale off)

enum { TOWER_VISION, TOWER_TEXT, TOWER_NONE };
enum { INIT_ZEROS, INIT_ONES, INIT_CONST, INIT_NORMAL, INIT_UNIFORM };
// What a tensor is, so that precision choices (which linears are SwitchBack) can select by kind.
enum { KIND_OTHER, KIND_QKV, KIND_OUT_PROJ, KIND_C_FC, KIND_C_PROJ };

typedef struct {
    char name[96];     // open_clip state_dict key, e.g. "visual.transformer.resblocks.0.attn.in_proj_weight"
    int ndim;
    int shape[4];
    size_t offset;     // elements from the start of the flat buffer
    size_t numel;
    int tower;         // TOWER_*
    int kind;          // KIND_*
    int init;          // INIT_*
    float init_value;  // std (normal), bound (uniform) or the constant
    int decay;         // 1 if weight decay applies (ndim >= 2, as open_clip)
} ParamTensor;

// Offsets of one residual block's tensors. ls_1/ls_2 are NO_TENSOR without layer-scale.
typedef struct {
    size_t ln_1_w, ln_1_b;          // (D)
    size_t in_proj_w, in_proj_b;    // (3D, D), (3D)
    size_t out_proj_w, out_proj_b;  // (D, D), (D)
    size_t ls_1;                    // (D)
    size_t ln_2_w, ln_2_b;          // (D)
    size_t c_fc_w, c_fc_b;          // (H, D), (H)
    size_t c_proj_w, c_proj_b;      // (D, H), (D)
    size_t ls_2;                    // (D)
} BlockLayout;

typedef struct {
    int width, layers, heads, head_dim, mlp, tokens;
    int causal;
    BlockLayout *blocks;  // (layers)
} TowerLayout;

typedef struct {
    // image tower
    size_t conv1_w;            // (Dv, 3, P, P), no bias
    size_t class_embedding;    // (Dv)
    size_t visual_pos;         // (Tv, Dv)
    size_t ln_pre_w, ln_pre_b; // (Dv)
    size_t ln_post_w, ln_post_b;
    size_t visual_proj;        // (Dv, E)
    // text tower
    size_t token_embedding;    // (V, Dt)
    size_t text_pos;           // (T, Dt)
    size_t ln_final_w, ln_final_b;
    size_t text_projection;    // (Dt, E)
    size_t logit_scale;        // ()
    TowerLayout visual, text;

    ParamTensor *tensors;      // the table, in buffer order
    int num_tensors;
    size_t buffer_elems;       // flat buffer size including alignment padding
    size_t num_params;         // = image + text + 1 (logit_scale)
    size_t num_image_params, num_text_params;
} ClipLayout;

// Build the table and the offsets for a config. Offsets are aligned to 32 elements.
void clip_layout_build(ClipLayout *L, const Config *c);
void clip_layout_free(ClipLayout *L);
// Index of the tensor with an open_clip name, or -1.
int clip_layout_find(const ClipLayout *L, const char *name);
// Forward FLOPs of one image-text pair (matmuls and attention; training is about 3x this).
double clip_forward_flops(const ClipLayout *L, const Config *c);
// Fill params (buffer_elems floats) with open_clip's initialisation, deterministic for a seed
// whatever the thread count; padding is zero.
void clip_init_params(const ClipLayout *L, float *params, uint64_t seed);
