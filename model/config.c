// config.c: the table of config keys and the parser for `key = value` files and `--set` overrides.
// Every key is declared once in KEYS below: type, default, range and the text that documents it.
// Any problem stops the program before work starts, with `file:line: key: reason` and exit code 2.
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../data/tokenizer.h"
#include "utils.h"

typedef enum { T_INT, T_LONG, T_U64, T_FLOAT, T_OPTFLOAT, T_BOOL, T_ENUM, T_STR } KeyType;

typedef struct {
    const char *name;
    KeyType type;
    size_t offset;        // into Config
    const char *def;      // default as written in a file; NULL = required
    double min, max;      // inclusive range for numbers; for strings min 1 = may not be empty
    const char *choices;  // for T_ENUM: "a|b|c", index = stored value
    const char *doc;
} Key;

#define OFF(f) offsetof(Config, f)
#define BIG 1e18
static const Key KEYS[] = {
    // model
    {"model", T_STR, OFF(model), "custom", 0, 0, NULL, "name shown in logs (e.g. ViT-B-32)"},
    {"embed_dim", T_INT, OFF(embed_dim), NULL, 1, 65536, NULL, "joint embedding width"},
    {"image_size", T_INT, OFF(image_size), "224", 1, 4096, NULL, "input image side in pixels"},
    {"patch_size", T_INT, OFF(patch_size), NULL, 1, 1024, NULL, "ViT patch side in pixels; must divide image_size"},
    {"vision_width", T_INT, OFF(vision_width), NULL, 1, 65536, NULL, "image tower width"},
    {"vision_layers", T_INT, OFF(vision_layers), NULL, 1, 1024, NULL, "image tower blocks"},
    {"vision_heads", T_INT, OFF(vision_heads), NULL, 1, 1024, NULL, "image tower attention heads; must divide vision_width"},
    {"vision_mlp_ratio", T_FLOAT, OFF(vision_mlp_ratio), "4", 0.01, 64, NULL, "image MLP hidden = int(vision_width * ratio), as open_clip"},
    {"context_length", T_INT, OFF(context_length), "77", 2, 4096, NULL, "text tokens per caption (SOT + text + EOT, padded)"},
    {"vocab_size", T_INT, OFF(vocab_size), "49408", 2, 1 << 24, NULL, "token vocabulary size (CLIP BPE: 49408; smaller only without tokenized captions: synthetic data, no zero-shot)"},
    {"text_width", T_INT, OFF(text_width), NULL, 1, 65536, NULL, "text tower width"},
    {"text_layers", T_INT, OFF(text_layers), NULL, 1, 1024, NULL, "text tower blocks"},
    {"text_heads", T_INT, OFF(text_heads), NULL, 1, 1024, NULL, "text tower attention heads; must divide text_width"},
    {"text_mlp_ratio", T_FLOAT, OFF(text_mlp_ratio), "4", 0.01, 64, NULL, "text MLP hidden = int(text_width * ratio)"},
    {"quick_gelu", T_BOOL, OFF(quick_gelu), "false", 0, 1, NULL, "QuickGELU x*sigmoid(1.702x) (OpenAI models) instead of exact erf GELU"},
    {"layer_scale_init", T_OPTFLOAT, OFF(layer_scale_init), "none", -BIG, BIG, NULL,
     "per-channel layer-scale (ls_1/ls_2.gamma) init value in both towers; none = no layer-scale; 0 = the paper's zero-init"},
    // training
    {"batch_size", T_LONG, OFF(batch_size), "16384", 1, BIG, NULL, "global batch per optimizer step, all ranks together (paper: 16384)"},
    {"micro_batch_size", T_LONG, OFF(micro_batch_size), "0", 0, BIG, NULL,
     "samples per rank per forward pass; 0 = batch_size / world size (no accumulation)"},
    {"steps", T_LONG, OFF(steps), "0", 0, BIG, NULL, "optimizer steps; set this or samples (a --set of either replaces the other from the files)"},
    {"samples", T_LONG, OFF(samples), "0", 0, BIG, NULL, "training samples; steps = ceil(samples / batch_size)"},
    {"lr", T_FLOAT, OFF(lr), "2e-3", 0, 1e3, NULL, "peak learning rate (paper: 2e-3)"},
    {"wd", T_FLOAT, OFF(wd), "0.2", 0, 1e3, NULL, "decoupled weight decay, not applied to tensors with ndim < 2 (paper: 0.2)"},
    {"beta1", T_FLOAT, OFF(beta1), "0.9", 0, 0.999999, NULL, "first-moment decay (paper: 0.9)"},
    {"beta2", T_FLOAT, OFF(beta2), "0.98", 0, 0.999999, NULL, "second-moment decay (paper: 0.98)"},
    {"eps", T_FLOAT, OFF(eps), "1e-6", 1e-30, 1, NULL, "Adam epsilon (paper: 1e-6)"},
    {"warmup", T_LONG, OFF(warmup), "5000", 0, BIG, NULL, "linear warmup steps (paper: 5000)"},
    {"schedule", T_ENUM, OFF(schedule), "cosine", 0, 0, "cosine|const", "after warmup: cosine decay to 0, or constant"},
    {"optimizer", T_ENUM, OFF(optimizer), "stable_adamw", 0, 0, "adamw|stable_adamw",
     "adamw, or stable_adamw = AdamW-Adafactor hybrid with per-tensor update clipping (the paper's)"},
    {"beta2_warmup_lambda", T_FLOAT, OFF(beta2_warmup_lambda), "0", 0, 10, NULL,
     "0 = off; else Adafactor-style beta2 at step t = 1 - t^-lambda (replaces the bias-corrected beta2)"},
    {"grad_clip", T_FLOAT, OFF(grad_clip), "0", 0, BIG, NULL, "global gradient-norm clipping threshold; 0 = off"},
    {"precision", T_ENUM, OFF(precision), "fp32", 0, 0, "fp32|bf16|int8_switchback",
     "fp32 (CPU reference / GPU parity), bf16, or int8_switchback (int8 linear layers)"},
    {"device", T_ENUM, OFF(device), "auto", 0, 0, "auto|cpu|cuda", "auto = the GPU when built with CUDA and one is present, else CPU"},
    {"recompute", T_INT, OFF(recompute), "1", 0, 2, NULL,
     "GPU activation recompute in backward (as llm.c -r): 0 none, 1 the GELU output, 2 also the LayerNorm outputs"},
    {"recompute_keep", T_INT, OFF(recompute_keep), "0", 0, 1000, NULL,
     "under recompute >= 1: the first N residual blocks of each tower keep all their activations (as recompute 0), spending memory for speed; on a GPU the memory plan printed at the start says up to which N fits"},
    {"weight_grad_stream", T_BOOL, OFF(weight_grad_stream), "false", 0, 1, NULL,
     "GPU: the backward's weight-gradient GEMMs run on a second CUDA stream, beside the LayerNorm, GELU and attention passes that do not need them (same results; ViT-H/14 2-3% faster on one H100 and ~1% on 2 H200s, ViT-L/14 about 1% slower: docs/benchmarks.md)"},
    {"gemm_tuning", T_INT, OFF(gemm_tuning), "0", 0, 16, NULL,
     "GPU: time this many of cuBLASLt's candidate algorithms per GEMM shape on its first call and keep the fastest (1-2% faster; kept in run_dir/gemm_choices.rank*.txt for an exact resume; experimental, see README); 0 or 1 = its first choice"},
    {"switchback_layers", T_STR, OFF(switchback_layers), "qkv,out_proj,c_fc,c_proj", 0, 0, NULL,
     "precision = int8_switchback: the transformer linears (both towers) that run SwitchBack, comma-separated subset of qkv,out_proj,c_fc,c_proj, or none"},
    {"switchback_variant", T_ENUM, OFF(switchback_variant), "standard", 0, 0, "standard|memory_efficient|vectorwise|int8_everywhere",
     "SwitchBack: standard; memory_efficient (int8 inputs + row scales saved for the weight gradient); vectorwise (per-output-channel weight scales); int8_everywhere (weight gradient in int8 too: the paper's losing baseline)"},
    {"seed", T_U64, OFF(seed), "0", 0, 1.8e19, NULL, "seed for init, data order and augmentation"},
    {"threads", T_INT, OFF(threads), "0", 0, 4096, NULL, "CPU threads for the CPU path; 0 = all cores (OMP_NUM_THREADS)"},
    {"zero", T_BOOL, OFF(zero), "false", 0, 1, NULL,
     "multi-GPU: ZeRO-1, each rank keeps and updates only its shard of the optimizer moments (less memory, same result)"},
    {"grad_reduce", T_ENUM, OFF(grad_reduce), "fp32", 0, 0, "fp32|bf16",
     "multi-GPU: sum the gradients over the ranks in fp32, or in bf16 (half the bytes; NCCL adds in bf16, about 3 significant digits)"},
    {"bind_cpus", T_BOOL, OFF(bind_cpus), "true", 0, 1, NULL,
     "multi-GPU: each rank of a node takes its own slice of the CPUs its cgroup allows (unless the launcher bound it) and an OpenMP pool of its share"},
    {"dist_timeout", T_FLOAT, OFF(dist_timeout), "600", 1, 1e7, NULL,
     "multi-GPU: seconds a rank waits for a collective, or for the other ranks at NCCL's start, before it stops the run "
     "with an error (a lost, hung or missing rank)"},
    // data
    {"data", T_STR, OFF(data), "synthetic", 1, 0, NULL,
     "training data: synthetic, or webdataset shards: dir/{00000..00099}.tar, a directory, several joined by ::"},
    {"val_data", T_STR, OFF(val_data), "", 0, 0, NULL, "validation shards (same syntax); empty = none"},
    {"val_max_pairs", T_LONG, OFF(val_max_pairs), "10000", 1, BIG, NULL, "validation pairs used for retrieval R@1/5/10 and the validation loss"},
    {"zeroshot_data", T_STR, OFF(zeroshot_data), "", 0, 0, NULL,
     "labelled eval shards (samples with a `cls` member holding the class index) for zero-shot classification; empty = none"},
    {"zeroshot_classnames", T_STR, OFF(zeroshot_classnames), "", 0, 0, NULL,
     "class names, one per line in class-index order (scripts/get_zeroshot_imagenet.sh writes ImageNet's)"},
    {"zeroshot_templates", T_STR, OFF(zeroshot_templates), "", 0, 0, NULL,
     "prompt templates, one per line, {} = the class name (e.g. data/openai_imagenet_templates.txt); empty = the name alone"},
    {"eval_every", T_LONG, OFF(eval_every), "0", 0, BIG, NULL, "steps between evaluations (zero-shot and/or retrieval); 0 = only at the end"},
    {"synthetic_size", T_LONG, OFF(synthetic_size), "4096", 1, BIG, NULL, "distinct samples the synthetic source cycles through"},
    {"data_workers", T_INT, OFF(data_workers), "4", 1, 1024, NULL, "decode threads per rank (for the synthetic source: drawing threads)"},
    {"shuffle_buffer", T_LONG, OFF(shuffle_buffer), "1000", 0, BIG, NULL, "samples held for shuffling (0 = shard order only)"},
    {"resampled", T_BOOL, OFF(resampled), "false", 0, 1, NULL, "draw shards with replacement (open_clip --dataset-resampled)"},
    {"image_alpha", T_ENUM, OFF(image_alpha), "drop", 0, 0, "drop|white",
     "transparent images: drop alpha as PIL's convert('RGB') and open_clip do (black-on-transparent art turns black), or composite onto white"},
    {"max_image_pixels", T_LONG, OFF(max_image_pixels), "100000000", 1, BIG, NULL, "images with more pixels are skipped"},
    // run
    {"run_dir", T_STR, OFF(run_dir), "runs/default", 1, 0, NULL, "directory for the log, the effective config and checkpoints"},
    {"log_every", T_LONG, OFF(log_every), "10", 1, BIG, NULL, "console log interval in steps"},
    {"tensorboard", T_BOOL, OFF(tensorboard), "false", 0, 1, NULL,
     "also write each log interval's scalars and the evaluation metrics as a TensorBoard event file in run_dir"},
    {"checkpoint_every", T_LONG, OFF(checkpoint_every), "1000", 0, BIG, NULL, "checkpoint interval in steps; 0 = only at the end"},
    {"keep_checkpoints", T_INT, OFF(keep_checkpoints), "3", 1, 1000000, NULL, "checkpoints kept; older ones are deleted"},
    {"resume", T_STR, OFF(resume), "", 0, 0, NULL, "empty = fresh start (refused where run_dir holds checkpoints, which it would overwrite); latest = newest complete checkpoint in run_dir; auto = latest where run_dir holds a checkpoint, else a fresh start (one command for a job's first start and its requeues); or a checkpoint path"},
    {"init_weights", T_STR, OFF(init_weights), "", 0, 0, NULL,
     "start from these weights (.safetensors with open_clip names, e.g. from scripts/convert_open_clip.py) with a fresh optimizer; ignored when resuming"},
    {"watch_rms", T_STR, OFF(watch_rms), "default", 1, 0, NULL,
     "tensors whose optimizer RMS is logged every step: default (visual.conv1.weight and the first/last block's qkv and c_fc of each tower) or comma-separated names"},
    {"spike_factor", T_FLOAT, OFF(spike_factor), "1.3", 1.0001, 1000, NULL,
     "a loss above spike_factor x the running loss reference is logged as a spike event with the watched tensors' RMS of the 10 steps before"},
    {"stop_after", T_LONG, OFF(stop_after), "0", 0, BIG, NULL,
     "stop with a checkpoint after this many steps of this invocation (job time slots); 0 = run to the end"},
    {"max_nonfinite_steps", T_INT, OFF(max_nonfinite_steps), "10", 1, 1000000, NULL,
     "consecutive steps with a non-finite loss or gradient (each skipped) before the run saves and stops"},
};
#undef OFF
#define NKEYS ((int)(sizeof(KEYS) / sizeof(KEYS[0])))

// Where each key's value came from ("default", "file:line", "--set"), for errors and the printout.
static char key_source[NKEYS][1100];
static int key_given[NKEYS];
// Keys whose value config_finalize computed from others (steps from samples): printed as comments, so that the
// printout (run_dir/config.conf) loads again as a config.
static int key_derived[NKEYS];
// The order keys were last set in (0 = default), so that a check between two keys reports at the one set last.
static int key_order[NKEYS], keys_set;

#define CONFIG_EXIT 2
__attribute__((noreturn, format(printf, 3, 4))) static void config_error(const char *where, const char *key,
                                                                          const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "%s: %s: ", where, key);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(CONFIG_EXIT);
}

static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

static int find_key(const char *name) {
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].name, name) == 0) return i;
    return -1;
}

static void unknown_key(const char *where, const char *name) {
    for (int i = 0; i < NKEYS; i++)
        if (strcasecmp(name, KEYS[i].name) == 0) config_error(where, name, "unknown key (did you mean %s? keys are lower case)", KEYS[i].name);
    int best = -1, best_d = 2 + (int)strlen(name) / 4;  // suggest only close names
    for (int i = 0; i < NKEYS; i++) {
        int d = edit_distance(name, KEYS[i].name);
        if (d < best_d) best_d = d, best = i;
    }
    if (best >= 0) config_error(where, name, "unknown key (did you mean %s?)", KEYS[best].name);
    config_error(where, name, "unknown key (./train_clip --help-config lists them all)");
}

// Parse `text` into the field of key k. Returns NULL on success or a reason.
static const char *parse_value(Config *c, int k, const char *text, char *reason, size_t rlen) {
    const Key *key = &KEYS[k];
    char *field = (char *)c + key->offset;
    char *end = NULL;
    if (key->type == T_STR) {
        if (strlen(text) >= CONFIG_STR) return "value too long";
        if (*text == '\0' && key->min > 0) return "empty value";
        strcpy(field, text);
        return NULL;
    }
    if (*text == '\0') return "empty value";
    if (key->type == T_BOOL) {
        if (!strcmp(text, "true") || !strcmp(text, "1") || !strcmp(text, "yes") || !strcmp(text, "on")) *(int *)field = 1;
        else if (!strcmp(text, "false") || !strcmp(text, "0") || !strcmp(text, "no") || !strcmp(text, "off")) *(int *)field = 0;
        else return "expected true or false";
        return NULL;
    }
    if (key->type == T_ENUM) {
        const char *p = key->choices;
        for (int idx = 0; *p; idx++) {
            const char *bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            if (strlen(text) == n && strncmp(text, p, n) == 0) {
                *(int *)field = idx;
                return NULL;
            }
            p += n + (bar ? 1 : 0);
        }
        snprintf(reason, rlen, "expected one of %s, got '%s'", key->choices, text);
        return reason;
    }
    if (key->type == T_U64) {
        errno = 0;
        unsigned long long u = strtoull(text, &end, 10);
        if (!isdigit((unsigned char)text[0]) || *end != '\0' || errno == ERANGE) {
            snprintf(reason, rlen, "expected a whole number >= 0, got '%s'", text);
            return reason;
        }
        *(uint64_t *)field = u;
        return NULL;
    }
    if (key->type == T_OPTFLOAT && strcmp(text, "none") == 0) {
        *(float *)field = NAN;
        return NULL;
    }
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v)) {
        snprintf(reason, rlen, "expected a number, got '%s'", text);
        return reason;
    }
    int integral = key->type == T_INT || key->type == T_LONG;
    if (integral && v != floor(v)) {
        snprintf(reason, rlen, "expected a whole number, got '%s'", text);
        return reason;
    }
    if (v < key->min || v > key->max) {
        snprintf(reason, rlen, "%s is out of range [%g, %g]", text, key->min, key->max);
        return reason;
    }
    if ((key->type == T_FLOAT || key->type == T_OPTFLOAT) && v != 0 && (float)v == 0) {
        snprintf(reason, rlen, "%s is too small for a float (it would be 0)", text);
        return reason;
    }
    switch (key->type) {
        case T_INT: *(int *)field = (int)v; break;
        case T_LONG: *(long *)field = (long)v; break;
        default: *(float *)field = (float)v; break;
    }
    return NULL;
}

static void assign(Config *c, const char *where, const char *name, const char *value) {
    int k = find_key(name);
    if (k < 0) unknown_key(where, name);
    char reason[256];
    const char *err = parse_value(c, k, value, reason, sizeof(reason));
    if (err) config_error(where, name, "%s", err);
    snprintf(key_source[k], sizeof(key_source[k]), "%s", where);
    key_given[k] = 1, key_derived[k] = 0, key_order[k] = ++keys_set;
}

void config_defaults(Config *c) {
    memset(c, 0, sizeof(*c));
    c->world_size = 1;
    for (int k = 0; k < NKEYS; k++) {
        key_given[k] = key_derived[k] = key_order[k] = 0;
        snprintf(key_source[k], sizeof(key_source[k]), "default");
        if (!KEYS[k].def) continue;
        char reason[256];
        if (parse_value(c, k, KEYS[k].def, reason, sizeof(reason))) fatal("config.c: bad default for %s", KEYS[k].name);
    }
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

// Cut a trailing `# comment` (outside double quotes) and surrounding quotes from a value. A comment's '#' starts the
// value or follows a space; one glued to the value (`data = /d/set#2.tar`) is an error, not a cut path.
static const char *strip_value(char *v, const char *where, const char *key) {
    if (*v == '"') {
        // the closing quote: the first one followed by nothing but spaces or a comment (a value may hold quotes)
        char *close = strchr(v + 1, '"');
        if (!close) config_error(where, key, "unterminated quote");
        for (char *q = close; q; q = strchr(q + 1, '"')) {
            const char *rest = q + 1 + strspn(q + 1, " \t\r\n\v\f");
            if (*rest == '\0' || *rest == '#') {
                *q = '\0';
                return v + 1;
            }
        }
        config_error(where, key, "text after the closing quote");
    }
    char *hash = strchr(v, '#');
    if (hash && hash > v && !isspace((unsigned char)hash[-1]))
        config_error(where, key, "'#' inside a value: write the value in double quotes (\"...\") to keep the '#', or put a space before a comment");
    if (hash) *hash = '\0';
    return trim(v);
}

// A config file that cannot be opened or read: `path: what`, after the `include` line that named it (from) if any.
__attribute__((noreturn)) static void file_error(const char *from, const char *path, const char *what) {
    if (from) config_error(from, "include", "%s: %s: %s", path, what, strerror(errno));
    fflush(stdout);
    fprintf(stderr, "%s: %s: %s\n", path, what, strerror(errno));
    exit(CONFIG_EXIT);
}

// from: where the `include` line naming this file is (NULL for -c's file).
static void load_file(Config *c, const char *path, int depth, const char *from) {
    if (depth > 8) config_error(from, "include", "nested more than 8 deep (%s)", path);
    FILE *f = fopen(path, "r");
    if (!f) file_error(from, path, "cannot open config file");
    char line[4096];
    int first_line[NKEYS] = {0};  // where this file set each key: a second time is an error (an include's keys may be set again)
    for (int lineno = 1; fgets(line, sizeof(line), f); lineno++) {
        char where[1100];
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        if (!strchr(line, '\n') && !feof(f)) config_error(where, "(line)", "line longer than %zu characters", sizeof(line) - 2);
        char *s = trim(lineno == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0 ? line + 3 : line);  // a UTF-8 byte order mark
        if (*s == '\0' || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) config_error(where, s, "expected `key = value`");
        *eq = '\0';
        char *name = trim(s);
        const char *value = strip_value(trim(eq + 1), where, name);
        if (*name == '\0') config_error(where, "(line)", "missing key before '='");
        if (strcmp(name, "include") == 0) {
            // relative to the including file's directory
            char inc[CONFIG_STR * 2];
            const char *slash = strrchr(path, '/');
            if (value[0] == '/' || !slash) snprintf(inc, sizeof(inc), "%s", value);
            else snprintf(inc, sizeof(inc), "%.*s/%s", (int)(slash - path), path, value);
            load_file(c, inc, depth + 1, where);
            continue;
        }
        int k = find_key(name);
        if (k >= 0 && first_line[k]) config_error(where, name, "set twice in this file (first at line %d)", first_line[k]);
        assign(c, where, name, value);
        first_line[k] = lineno;
    }
    if (ferror(f)) file_error(from, path, "cannot read config file");  // e.g. a directory: not an empty config
    if (fclose(f) != 0) file_error(from, path, "cannot close config file");
}

void config_load_file(Config *c, const char *path) { load_file(c, path, 0, NULL); }

void config_load(Config *c, const char *path) {
    config_defaults(c);
    config_load_file(c, path);
    config_finalize(c);
}

void config_set(Config *c, const char *assignment, int arg_index) {
    char where[64], buf[CONFIG_STR + 128];
    snprintf(where, sizeof(where), "--set:%d", arg_index);
    if (strlen(assignment) >= sizeof(buf)) config_error(where, "(argument)", "too long");
    strcpy(buf, assignment);
    char *eq = strchr(buf, '=');
    if (!eq) config_error(where, buf, "expected --set key=value");
    *eq = '\0';
    if (*trim(buf) == '\0') config_error(where, "(argument)", "missing key before '='");
    assign(c, where, trim(buf), trim(eq + 1));
}

static const char *source_of(const char *name) { return key_source[find_key(name)]; }

// A check between keys a and b failed: the error is at the one set last (the line most likely just changed) and names
// where the other came from.
__attribute__((noreturn, format(printf, 3, 4))) static void pair_error(const char *a, const char *b, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    int ka = find_key(a), kb = find_key(b), last = key_order[kb] > key_order[ka] ? kb : ka, other = last == ka ? kb : ka;
    config_error(key_source[last], KEYS[last].name, "%s (%s from %s)", msg, KEYS[other].name, key_source[other]);
}

// "qkv,c_fc" -> bits 1 << SB_LINEAR_*; "none" -> 0.
static int parse_linears(const char *list, const char *where) {
    static const char *names[SB_LINEARS] = {"qkv", "out_proj", "c_fc", "c_proj"};
    if (strcmp(list, "none") == 0) return 0;
    int mask = 0;
    for (const char *p = list;;) {
        while (*p == ' ') p++;
        size_t n = strcspn(p, ","), len = n;
        while (len && p[len - 1] == ' ') len--;
        int i = 0;
        while (i < SB_LINEARS && !(strlen(names[i]) == len && strncmp(p, names[i], len) == 0)) i++;
        if (i == SB_LINEARS)
            config_error(where, "switchback_layers", "'%.*s' is not one of qkv, out_proj, c_fc, c_proj (or the whole list: none)", (int)len, p);
        mask |= 1 << i;
        if (!p[n]) return mask;
        p += n + 1;
    }
}

void config_finalize(Config *c) {
    for (int k = 0; k < NKEYS; k++)
        if (!KEYS[k].def && !key_given[k]) config_error("config", KEYS[k].name, "missing required key");
    if (c->vision_width % c->vision_heads)
        pair_error("vision_heads", "vision_width", "vision_heads %d does not divide vision_width %d", c->vision_heads, c->vision_width);
    if (c->text_width % c->text_heads)
        pair_error("text_heads", "text_width", "text_heads %d does not divide text_width %d", c->text_heads, c->text_width);
    if (c->image_size % c->patch_size)
        pair_error("patch_size", "image_size", "patch_size %d does not divide image_size %d", c->patch_size, c->image_size);
    if (config_vision_mlp(c) < 1)
        pair_error("vision_mlp_ratio", "vision_width", "vision_width %d x vision_mlp_ratio %g gives an MLP width of 0", c->vision_width,
                   c->vision_mlp_ratio);
    if (config_text_mlp(c) < 1)
        pair_error("text_mlp_ratio", "text_width", "text_width %d x text_mlp_ratio %g gives an MLP width of 0", c->text_width, c->text_mlp_ratio);
    int steps_k = find_key("steps");
    if (key_derived[steps_k]) c->steps = 0;  // an earlier finalize's: derived again (batch_size may have changed)
    int samples_k = find_key("samples"), later = key_order[steps_k] > key_order[samples_k] ? steps_k : samples_k;
    if (c->steps > 0 && c->samples > 0 && !strncmp(key_source[later], "--set:", 6)) {
        // --set wins over the files: `--set steps=100` shortens a ViT config that sets samples, and the reverse
        int other = later == steps_k ? samples_k : steps_k;
        *(other == steps_k ? &c->steps : &c->samples) = 0;
        char by[sizeof(key_source[0])];
        snprintf(by, sizeof(by), "%s", key_source[later]);
        snprintf(key_source[other], sizeof(key_source[other]), "0: %.1000s sets %s", by, KEYS[later].name);
    }
    if (c->steps > 0 && c->samples > 0)
        config_error(source_of("samples"), "samples", "set steps or samples, not both (steps is set at %s)", source_of("steps"));
    if (c->steps == 0 && c->samples == 0) config_error("config", "steps", "missing required key (or set samples)");
    if (c->steps == 0) {
        c->steps = (c->samples + c->batch_size - 1) / c->batch_size;
        key_derived[steps_k] = 1;
        snprintf(key_source[steps_k], sizeof(key_source[steps_k]), "ceil(samples / batch_size)");
    }
    if (c->zeroshot_data[0] && !c->zeroshot_classnames[0])
        config_error(source_of("zeroshot_data"), "zeroshot_data", "needs zeroshot_classnames (a file of class names)");
    // captions tokenized with the CLIP BPE (shards, validation shards, zero-shot prompts) need its ids in the vocabulary
    // (otherwise the first batch, or the first evaluation hours in, stops on an id outside it)
    const char *tokenized = strcmp(c->data, "synthetic") ? "data" : c->val_data[0] && strcmp(c->val_data, "synthetic") ? "val_data"
                            : c->zeroshot_data[0] ? "zeroshot_data" : NULL;
    if (tokenized && c->vocab_size <= TOKEN_EOT)
        pair_error("vocab_size", tokenized, "vocab_size %d cannot hold the CLIP tokenizer's ids (up to %d), which %s uses", c->vocab_size,
                   TOKEN_EOT, tokenized);
    c->switchback_mask = parse_linears(c->switchback_layers, source_of("switchback_layers"));
    if (c->batch_size % c->world_size)
        config_error(source_of("batch_size"), "batch_size", "%ld is not a multiple of the %d ranks (each rank takes batch_size / ranks)",
                     c->batch_size, c->world_size);
    if (c->micro_batch_size > c->batch_size / c->world_size)
        pair_error("micro_batch_size", "batch_size", "micro_batch_size %ld is larger than the per-rank batch %ld (batch_size %ld / %d ranks)",
                   c->micro_batch_size, c->batch_size / c->world_size, c->batch_size, c->world_size);
}

// The shortest decimal that reads back as v (lr = 2e-3 prints 0.002, not %.9g's 0.00200000009).
static void format_float(char *out, size_t n, float v) {
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(out, n, "%.*g", digits, v);
        if ((float)strtod(out, NULL) == v) return;  // as parse_value reads it
    }
}

static void format_value(const Config *c, int k, char *out, size_t n) {
    const Key *key = &KEYS[k];
    const char *field = (const char *)c + key->offset;
    switch (key->type) {
        case T_INT: snprintf(out, n, "%d", *(const int *)field); break;
        case T_LONG: snprintf(out, n, "%ld", *(const long *)field); break;
        case T_U64: snprintf(out, n, "%llu", (unsigned long long)*(const uint64_t *)field); break;
        case T_FLOAT: format_float(out, n, *(const float *)field); break;
        case T_OPTFLOAT: {
            float v = *(const float *)field;
            if (v != v) snprintf(out, n, "none");
            else format_float(out, n, v);
            break;
        }
        case T_BOOL: snprintf(out, n, "%s", *(const int *)field ? "true" : "false"); break;
        case T_ENUM: {
            const char *p = key->choices;
            for (int i = 0; i < *(const int *)field; i++) p = strchr(p, '|') + 1;
            snprintf(out, n, "%.*s", (int)strcspn(p, "|"), p);
            break;
        }
        case T_STR: {
            // quoted where the file syntax needs it (a '#', a leading quote, spaces at either end), so that it reads back
            size_t len = strlen(field);
            int quote = strchr(field, '#') || field[0] == '"' || (len && (isspace((unsigned char)field[0]) || isspace((unsigned char)field[len - 1])));
            snprintf(out, n, quote ? "\"%s\"" : "%s", field);
            break;
        }
    }
}

void config_print(const Config *c, FILE *out) {
    for (int k = 0; k < NKEYS; k++) {
        char v[CONFIG_STR + 8];
        format_value(c, k, v, sizeof(v));
        if (key_derived[k]) fprintf(out, "# %-18s = %-24s # %s\n", KEYS[k].name, v, key_source[k]);
        else fprintf(out, "%-20s = %-24s # %s\n", KEYS[k].name, v, key_source[k]);
    }
}

void config_print_reference(FILE *out) {
    fprintf(out, "| key | type | default | meaning |\n|---|---|---|---|\n");
    static const char *type_names[] = {"int", "int", "int", "float", "float or none", "bool", "enum", "string"};
    for (int k = 0; k < NKEYS; k++) {
        const Key *key = &KEYS[k];
        const char *type = key->type == T_ENUM ? key->choices : type_names[key->type];
        fprintf(out, "| `%s` | %s | %s | %s |\n", key->name, type, key->def ? (*key->def ? key->def : "(empty)") : "**required**", key->doc);
    }
}
