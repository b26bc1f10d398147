// clip_cpu.h: the fp32 CPU reference CLIP (both towers, contrastive loss, backward) with all activations
// kept. It is the ground truth the GPU paths are checked against, and it trains the tiny config on a CPU.
#pragma once
#include <stdint.h>

#include "clip.h"
#include "config.h"

typedef struct {
    float *ln_1, *ln_1_mean, *ln_1_rstd;  // (N, D), (N), (N)
    float *qkv;                           // (N, 3D)
    float *att;                           // (B, NH, T, T) softmax probabilities
    float *att_y;                         // (N, D) attention output before out_proj
    float *attn;                          // (N, D) after out_proj (layer-scale needs it)
    float *res_1;                         // (N, D) x + ls_1 * attn
    float *ln_2, *ln_2_mean, *ln_2_rstd;  // (N, D), (N), (N)
    float *fc;                            // (N, H) c_fc output, before GELU
    float *fc_gelu;                       // (N, H)
    float *mlp;                           // (N, D) c_proj output
    float *res_2;                         // (N, D) block output
} BlockActs;

typedef struct {
    int B;                                     // batch the buffers were allocated for
    int B_image, B_text;                       // batch of the last image / text forward
    // image tower, N = B * Tv
    float *images;                             // (B, 3, S, S) normalised input
    float *patches;                            // (B, G*G, 3*P*P)
    float *patch_emb;                          // (B, G*G, Dv)
    float *v_embed;                            // (B, Tv, Dv) class + patches + positions
    float *ln_pre, *ln_pre_mean, *ln_pre_rstd; // (B, Tv, Dv): the residual stream entering block 0
    BlockActs *v_blocks;
    float *v_pooled;                           // (B, Dv) class token of the last block
    float *ln_post, *ln_post_mean, *ln_post_rstd;
    float *image_features;                     // (B, E) before normalisation
    // text tower, N = B * T
    int32_t *tokens;                           // (B, T)
    int *eot;                                  // (B) pooled position
    float *t_embed;                            // (B, T, Dt) residual stream entering block 0
    BlockActs *t_blocks;
    float *t_pooled;                           // (B, Dt)
    float *ln_final, *ln_final_mean, *ln_final_rstd;
    float *text_features;                      // (B, E)
    float loss;
} ClipActs;

typedef struct {
    Config cfg;
    ClipLayout layout;
    float *params;  // (layout.buffer_elems)
    float *grads;   // (layout.buffer_elems)
    ClipActs acts;
    float *scratch;        // backward work space: residual and block gradients
    float *pooled_scratch; // (2, B, max width): gradients of the pooled token and its LayerNorm
} ClipCPU;

// Build the layout, allocate params/grads (params initialised from cfg.seed) and activations for batch B.
void clip_cpu_init(ClipCPU *m, const Config *c, int B);
void clip_cpu_free(ClipCPU *m);
// Bytes of activations + scratch for batch B (for the memory plan).
size_t clip_cpu_activation_bytes(const ClipCPU *m, int B);
// One tower forward: images (B, 3, S, S) normalised -> acts.image_features (B, E);
// tokens (B, T) -> acts.text_features (B, E). Activations are kept for the backward.
void clip_cpu_encode_image(ClipCPU *m, const float *images, int B);
void clip_cpu_encode_text(ClipCPU *m, const int32_t *tokens, int B);
// One tower backward from the gradient of its features (B, E); ACCUMULATES into m->grads, so
// micro-batches and ranks can add up. Uses the activations of the last encode of that tower.
void clip_cpu_backward_image(ClipCPU *m, const float *dimg);
void clip_cpu_backward_text(ClipCPU *m, const float *dtxt);
// Both towers and the loss over B pairs. Sets acts.loss and both features.
float clip_cpu_forward(ClipCPU *m, const float *images, const int32_t *tokens, int B);
// Gradients of acts.loss w.r.t. every parameter into m->grads (overwritten). Call after clip_cpu_forward.
void clip_cpu_backward(ClipCPU *m);
