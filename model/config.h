// config.h: the run configuration: every key a config file may set, its type, range, default and
// meaning (one table in config.c is the single source of truth), parsing of `key = value` files,
// `--set key=value` overrides, and the checks that stop a bad config before any work is done.
#pragma once
#include <stdint.h>
#include <stdio.h>

enum { SCHEDULE_COSINE, SCHEDULE_CONST };
enum { OPTIMIZER_ADAMW, OPTIMIZER_STABLE_ADAMW };
enum { PRECISION_FP32, PRECISION_BF16, PRECISION_INT8_SWITCHBACK };
enum { DEVICE_AUTO, DEVICE_CPU, DEVICE_CUDA };
enum { IMAGE_ALPHA_DROP, IMAGE_ALPHA_WHITE };
enum { GRAD_REDUCE_FP32, GRAD_REDUCE_BF16 };
// switchback_layers: bit (1 << i) for the i-th transformer linear, in this order (qkv, out_proj, c_fc, c_proj)
enum { SB_LINEAR_QKV, SB_LINEAR_OUT_PROJ, SB_LINEAR_C_FC, SB_LINEAR_C_PROJ, SB_LINEARS };
// switchback_variant: the same order as SwitchBackMode (kernels/switchback.cuh)
enum { SB_VARIANT_STANDARD, SB_VARIANT_MEMORY_EFFICIENT, SB_VARIANT_VECTORWISE, SB_VARIANT_INT8_EVERYWHERE };

#define CONFIG_STR 512

typedef struct {
    // ---- model (open_clip's model config) ----
    char model[CONFIG_STR];   // a name for logs, e.g. "ViT-B-32"
    int embed_dim;            // joint embedding width
    int image_size;           // input resolution (square)
    int patch_size;           // ViT patch size
    int vision_width;         // image tower width
    int vision_layers;        // image tower depth
    int vision_heads;         // image tower attention heads
    float vision_mlp_ratio;   // MLP hidden = int(width * ratio), as open_clip
    int context_length;       // text tokens per caption
    int vocab_size;           // token vocabulary
    int text_width;           // text tower width
    int text_layers;          // text tower depth
    int text_heads;           // text tower attention heads
    float text_mlp_ratio;     // MLP hidden = int(width * ratio)
    int quick_gelu;           // 1: x * sigmoid(1.702 x) (OpenAI weights); 0: exact erf GELU
    float layer_scale_init;   // NAN when there is no layer-scale; 0 is the paper's zero-init
    // ---- training ----
    long batch_size;          // global batch (all ranks, all micro-batches)
    long micro_batch_size;    // per rank per forward pass; 0 = batch_size / world_size
    long steps;               // optimizer steps (0: derived from samples)
    long samples;             // training samples (0: derived from steps)
    float lr, wd, beta1, beta2, eps;
    long warmup;              // linear warmup steps
    int schedule;             // SCHEDULE_*
    int optimizer;            // OPTIMIZER_*
    float beta2_warmup_lambda;// 0 = off; else beta2 at step t = 1 - t^-lambda
    float grad_clip;          // global-norm clipping threshold; 0 = off
    int precision;            // PRECISION_*
    int device;               // DEVICE_*
    int recompute;            // GPU activation recompute: 0 none, 1 GELU, 2 GELU + LayerNorms
    int recompute_keep;       // the first N blocks of each tower recompute nothing
    int weight_grad_stream;   // 1: the backward's weight-gradient GEMMs on their own CUDA stream (clip_gpu.cu)
    int gemm_tuning;          // GEMM algorithms timed per shape (matmul_set_tuning); 0/1 = cuBLASLt's first choice
    char switchback_layers[CONFIG_STR];  // int8_switchback: which linears, e.g. "qkv,out_proj,c_fc,c_proj" or "none"
    int switchback_mask;      // derived from switchback_layers: bit 1 << SB_LINEAR_*
    int switchback_variant;   // SB_VARIANT_*
    uint64_t seed;
    int threads;              // CPU threads for the fp32 path; 0 = OpenMP's default
    int zero;                 // ZeRO-1: optimizer moments sharded over the ranks
    int grad_reduce;          // GRAD_REDUCE_*: the type the gradients are summed over the ranks in
    int bind_cpus;            // multi-GPU: each rank on its own slice of the node's CPUs (dist_place_threads)
    float dist_timeout;       // seconds a rank waits on a collective before it stops the run
    int world_size;           // processes in the run: not a key, set from the launcher before config_finalize (1 by default)
    // ---- data ----
    char data[CONFIG_STR];    // "synthetic" or a shard spec
    char val_data[CONFIG_STR];// "" = none
    long val_max_pairs;       // pairs used for the retrieval eval
    char zeroshot_data[CONFIG_STR];       // labelled shards (a `cls` member per sample) for zero-shot eval
    char zeroshot_classnames[CONFIG_STR]; // one class name per line, in class-index order
    char zeroshot_templates[CONFIG_STR];  // one prompt per line with {} for the name; "" = the name alone
    long eval_every;          // steps between evaluations; 0 = only at the end
    long synthetic_size;      // samples in the synthetic pool
    int data_workers;         // decode threads per rank
    long shuffle_buffer;      // samples held for shuffling
    int resampled;            // draw shards with replacement
    long max_image_pixels;    // larger images are skipped
    int image_alpha;          // IMAGE_ALPHA_DROP (as PIL convert("RGB")) or IMAGE_ALPHA_WHITE
    // ---- run, logging, checkpoints ----
    char run_dir[CONFIG_STR];
    long log_every;
    int tensorboard;          // 1: also write the logged scalars as TensorBoard event files in run_dir
    long checkpoint_every;    // 0 = only at the end
    int keep_checkpoints;
    char resume[CONFIG_STR];  // "" = fresh start, "latest", or a checkpoint path
    char init_weights[CONFIG_STR];  // weights (.safetensors, open_clip names) to start from, fresh optimizer
    char watch_rms[CONFIG_STR];  // tensors whose RMS is logged each step ("default" or names)
    float spike_factor;       // a loss above spike_factor x the running reference is a spike event
    long stop_after;          // stop (with a checkpoint) after this many steps in this invocation; 0 = run to the end
    int max_nonfinite_steps;  // consecutive non-finite losses/gradients tolerated before the run stops
} Config;

// Fill every key with its default (required keys are left unset and flagged missing).
void config_defaults(Config *c);
// Read a config file; errors stop the program with `file:line: key: reason`.
void config_load_file(Config *c, const char *path);
// Apply one `key=value` override from the command line (arg_index only for error messages).
void config_set(Config *c, const char *assignment, int arg_index);
// Cross-key checks and derived values; call once after all files and overrides.
void config_finalize(Config *c);
// A config file as it stands: defaults, the file, finalize (tests and tools; no overrides).
void config_load(Config *c, const char *path);
// Print every key with its effective value and where it came from.
void config_print(const Config *c, FILE *out);
// Print the reference of all keys (name, type, default, meaning) as a Markdown table.
void config_print_reference(FILE *out);

// Derived sizes.
static inline int config_vision_mlp(const Config *c) { return (int)(c->vision_width * c->vision_mlp_ratio); }
static inline int config_text_mlp(const Config *c) { return (int)(c->text_width * c->text_mlp_ratio); }
static inline int config_vision_tokens(const Config *c) {
    int g = c->image_size / c->patch_size;
    return g * g + 1;
}
static inline int config_has_layer_scale(const Config *c) { return c->layer_scale_init == c->layer_scale_init; }
