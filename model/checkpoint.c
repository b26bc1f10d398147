// checkpoint.c: saving, finding, resuming and pruning checkpoints (see checkpoint.h).
#include "checkpoint.h"

#include <dirent.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include "utils.h"

#define STATE_FORMAT "train_clip-state-1"

int load_weights_by_name(const ClipLayout *L, float *params, const StFile *f, const char *prefix, char *err, size_t errlen) {
    for (int i = 0; i < L->num_tensors; i++) {
        const ParamTensor *t = &L->tensors[i];
        char name[256];
        snprintf(name, sizeof(name), "%s%s", prefix, t->name);
        const StTensor *s = st_find(f, name);
        if (!s) return snprintf(err, errlen, "%s: tensor %s is missing", f->path, name), -1;
        int same = s->ndim == t->ndim;
        for (int d = 0; d < t->ndim && same; d++) same = s->shape[d] == t->shape[d];
        if (!same) {
            char have[128] = "", need[128] = "";
            for (int d = 0, n = 0; d < s->ndim && n < (int)sizeof(have); d++) n += snprintf(have + n, sizeof(have) - n, "%s%lld", d ? ", " : "", (long long)s->shape[d]);
            for (int d = 0, n = 0; d < t->ndim; d++) n += snprintf(need + n, sizeof(need) - n, "%s%d", d ? ", " : "", t->shape[d]);
            return snprintf(err, errlen, "%s: tensor %s has shape (%s), the config needs (%s)", f->path, name, have, need), -1;
        }
        if (strcmp(s->dtype, "F32") && strcmp(s->dtype, "BF16") && strcmp(s->dtype, "F16") && strcmp(s->dtype, "F64"))
            return snprintf(err, errlen, "%s: tensor %s has dtype %s, not F32, BF16, F16 or F64", f->path, name, s->dtype), -1;
        st_read_f32(f, s, params + t->offset, t->numel);
    }
    return 0;
}

int check_no_extra_tensors(const ClipLayout *L, const StFile *f, const char *prefix, char *err, size_t errlen) {
    size_t n = strlen(prefix);
    for (int i = 0; i < f->num_tensors; i++) {
        const char *name = f->tensors[i].name;
        if (!strncmp(name, prefix, n) && clip_layout_find(L, name + n) < 0)
            return snprintf(err, errlen, "%s: tensor %s is not a parameter of this config (a different model or layer_scale_init?)", f->path, name), -1;
    }
    return 0;
}

static void add_tensors(StWriter *w, const ClipLayout *L, const float *base, const char *prefix) {
    for (int i = 0; i < L->num_tensors; i++) {
        const ParamTensor *t = &L->tensors[i];
        char name[256];
        int64_t shape[4];
        for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
        snprintf(name, sizeof(name), "%s%s", prefix, t->name);
        st_writer_add(w, name, "F32", t->ndim, shape, base + t->offset);
    }
}

int save_weights(const char *path, const ClipLayout *L, const float *params, const char *config_text, char *err, size_t errlen) {
    StWriter *w = st_writer_new();
    add_tensors(w, L, params, "");
    st_writer_meta(w, "format", "pt");  // what Hugging Face / open_clip loaders expect
    if (config_text) st_writer_meta(w, "train_clip_config", config_text);
    return st_write(w, path, err, errlen);
}

static void paths_for(const char *run_dir, long step, char *model, char *state, size_t n) {
    snprintf(model, n, "%s/checkpoints/step_%08ld.model.safetensors", run_dir, step);
    snprintf(state, n, "%s/checkpoints/step_%08ld.state.safetensors", run_dir, step);
}

int checkpoint_save(const char *run_dir, long step, const ClipLayout *L, const float *params, const Optimizer *opt,
                    const char *config_text, const char *loader_state, char *err, size_t errlen) {
    char dir[2048], model[2048], state[2048], num[32];
    snprintf(dir, sizeof(dir), "%s/checkpoints", run_dir);
    if (mkdir_p(dir) != 0) return snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno)), -1;
    paths_for(run_dir, step, model, state, sizeof(model));
    // an older checkpoint of this step (steps re-run after a fallback) stops being complete before its weights change
    if (unlink(state) != 0 && errno != ENOENT) return snprintf(err, errlen, "cannot delete the old %s: %s", state, strerror(errno)), -1;
    if (save_weights(model, L, params, config_text, err, errlen) != 0) return -1;
    StWriter *w = st_writer_new();
    add_tensors(w, L, opt->m, "exp_avg.");
    add_tensors(w, L, opt->u, "exp_avg_sq.");
    st_writer_meta(w, "format", STATE_FORMAT);
    snprintf(num, sizeof(num), "%ld", step), st_writer_meta(w, "step", num);
    snprintf(num, sizeof(num), "%ld", opt->t), st_writer_meta(w, "optimizer_t", num);
    st_writer_meta(w, "loader", loader_state ? loader_state : "");
    st_writer_meta(w, "config", config_text ? config_text : "");
    return st_write(w, state, err, errlen);
}

static int newest_first(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

// Steps of complete checkpoints (state file present), newest first, in *steps (malloc'd; free it). Returns the count.
static int list_steps(const char *run_dir, long **steps) {
    char dir[2048];
    snprintf(dir, sizeof(dir), "%s/checkpoints", run_dir);
    *steps = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        char tail[64];
        if (sscanf(e->d_name, "step_%ld.%63s", &s, tail) == 2 && !strcmp(tail, "state.safetensors")) {
            if ((n & (n - 1)) == 0) *steps = reallocCheck(*steps, (size_t)(n ? 2 * n : 1) * sizeof(long));
            (*steps)[n++] = s;
        }
    }
    closedir(d);
    if (n) qsort(*steps, (size_t)n, sizeof(long), newest_first);
    return n;
}

// The value of key in a config text as config_print writes it ("key   = value   # where") into out; 0 if absent.
static int config_value(const char *text, const char *key, char *out, size_t cap) {
    size_t n = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, key, n) != 0 || (line[n] != ' ' && line[n] != '=')) continue;
        const char *v = line + n + strspn(line + n, " ");
        if (*v++ != '=') continue;
        v += strspn(v, " ");
        size_t len = strcspn(v, "#\n");
        while (len > 0 && v[len - 1] == ' ') len--;
        snprintf(out, cap, "%.*s", (int)len, v);
        return 1;
    }
    return 0;
}

// Compare the checkpoint's saved config with this run's: a different model (also in what the tensor shapes do not
// show: heads, activation) is an error (-1, err), changed training settings a warning.
static int compare_configs(const char *state, const char *saved, const char *current, char *err, size_t errlen) {
    static const char *model_keys[] = {"embed_dim", "image_size", "patch_size", "vision_width", "vision_layers", "vision_heads",
                                       "vision_mlp_ratio", "context_length", "vocab_size", "text_width", "text_layers", "text_heads",
                                       "text_mlp_ratio", "quick_gelu"};
    static const char *training_keys[] = {"precision", "optimizer", "batch_size"};
    char a[CONFIG_STR], b[CONFIG_STR];
    if (!saved || !current) return 0;
    for (size_t i = 0; i < sizeof(model_keys) / sizeof(model_keys[0]); i++)
        if (config_value(saved, model_keys[i], a, sizeof(a)) && config_value(current, model_keys[i], b, sizeof(b)) && strcmp(a, b) != 0)
            return snprintf(err, errlen, "%s: the checkpoint's model has %s = %s, this config %s: resume needs the same model", state,
                            model_keys[i], a, b), -1;
    for (size_t i = 0; i < sizeof(training_keys) / sizeof(training_keys[0]); i++)
        if (config_value(saved, training_keys[i], a, sizeof(a)) && config_value(current, training_keys[i], b, sizeof(b)) && strcmp(a, b) != 0)
            fprintf(stderr, "warning: resuming with %s = %s; the checkpoint was trained with %s (%s)\n", training_keys[i], b, a, state);
    return 0;
}

// Load one checkpoint (model + state files). Returns its step or -1.
static long load_pair(const char *model, const char *state, const char *config_text, const ClipLayout *L, float *params, Optimizer *opt,
                      char *loader_state, size_t cap, char *err, size_t errlen) {
    StFile fm, fs;
    if (st_load(&fs, state, err, errlen) != 0) return -1;
    const char *fmt = st_meta(&fs, "format"), *step_s = st_meta(&fs, "step"), *t_s = st_meta(&fs, "optimizer_t");
    if (!fmt || strcmp(fmt, STATE_FORMAT) != 0 || !step_s || !t_s) {
        snprintf(err, errlen, "%s: not a train_clip state file (format %s)", state, fmt ? fmt : "missing");
        st_free(&fs);
        return -1;
    }
    char *end1, *end2;
    errno = 0;
    long step_v = strtol(step_s, &end1, 10), t_v = strtol(t_s, &end2, 10);
    if (errno || end1 == step_s || *end1 || step_v < 1 || end2 == t_s || *end2 || t_v < 0) {
        snprintf(err, errlen, "%s: damaged metadata: step '%s', optimizer_t '%s' (whole numbers expected)", state, step_s, t_s);
        st_free(&fs);
        return -1;
    }
    if (compare_configs(state, st_meta(&fs, "config"), config_text, err, errlen) != 0) return st_free(&fs), -1;
    if (st_load(&fm, model, err, errlen) != 0) return st_free(&fs), -1;
    long step = -1;
    if (load_weights_by_name(L, params, &fm, "", err, errlen) == 0 && check_no_extra_tensors(L, &fm, "", err, errlen) == 0 &&
        load_weights_by_name(L, opt->m, &fs, "exp_avg.", err, errlen) == 0 && load_weights_by_name(L, opt->u, &fs, "exp_avg_sq.", err, errlen) == 0 &&
        check_no_extra_tensors(L, &fs, "exp_avg.", err, errlen) == 0 && check_no_extra_tensors(L, &fs, "exp_avg_sq.", err, errlen) == 0) {
        step = step_v;
        opt->t = t_v;
        snprintf(loader_state, cap, "%s", st_meta(&fs, "loader") ? st_meta(&fs, "loader") : "");
    }
    st_free(&fm), st_free(&fs);
    return step;
}

long checkpoint_resume(const char *run_dir, const char *spec, const char *config_text, const ClipLayout *L, float *params, Optimizer *opt,
                       char *loader_state, size_t cap, char *err, size_t errlen) {
    char model[2048], state[2048];
    if (strcmp(spec, "latest") != 0) {
        // an explicit file: accept either half of the pair
        size_t len = strlen(spec);
        const char *suffix = len > 18 && !strcmp(spec + len - 18, ".model.safetensors")   ? ".model.safetensors"
                             : len > 18 && !strcmp(spec + len - 18, ".state.safetensors") ? ".state.safetensors"
                                                                                          : NULL;
        if (!suffix) return snprintf(err, errlen, "resume = %s: expected latest or a step_*.model.safetensors / .state.safetensors path", spec), -1;
        size_t stem = strlen(spec) - strlen(suffix);
        snprintf(model, sizeof(model), "%.*s.model.safetensors", (int)stem, spec);
        snprintf(state, sizeof(state), "%.*s.state.safetensors", (int)stem, spec);
        return load_pair(model, state, config_text, L, params, opt, loader_state, cap, err, errlen);
    }
    long *steps;
    int n = list_steps(run_dir, &steps);
    if (n == 0) return snprintf(err, errlen, "resume = latest: no complete checkpoint in %s/checkpoints", run_dir), -1;
    for (int i = 0; i < n; i++) {
        paths_for(run_dir, steps[i], model, state, sizeof(model));
        long step = load_pair(model, state, config_text, L, params, opt, loader_state, cap, err, errlen);
        if (step >= 0) return free(steps), step;
        fprintf(stderr, "warning: skipping checkpoint step %ld: %s\n", steps[i], err);
    }
    char last[1024];
    snprintf(last, sizeof(last), "%s", err);
    snprintf(err, errlen, "resume = latest: none of the %d checkpoints in %s/checkpoints could be loaded (step %ld: %s)", n, run_dir,
             steps[n - 1], last);
    free(steps);
    return -1;
}

long checkpoint_newest_step(const char *run_dir) {
    long *steps, newest = list_steps(run_dir, &steps) > 0 ? steps[0] : -1;
    free(steps);
    return newest;
}

void checkpoint_prune(const char *run_dir, int keep, long step) {
    long *steps;
    int n = list_steps(run_dir, &steps), first = 0;
    while (first < n && steps[first] > step) first++;  // newer than the run (skipped when it resumed): neither kept nor deleted
    int last_kept = first + keep < n ? first + keep - 1 : n - 1;
    long oldest_kept = first < n ? steps[last_kept] : -1;
    for (int i = last_kept + 1; i < n; i++) {
        char model[2048], state[2048];
        paths_for(run_dir, steps[i], model, state, sizeof(model));
        // state first: a half-deleted checkpoint is then never taken for a complete one
        if (unlink(state) != 0 || (unlink(model) != 0 && errno != ENOENT))
            fprintf(stderr, "warning: could not delete old checkpoint step %ld: %s\n", steps[i], strerror(errno));
    }
    free(steps);
    // what interrupted saves left before the oldest kept checkpoint: weights without a state file, temporary files
    char dir[2048], path[2400];
    snprintf(dir, sizeof(dir), "%s/checkpoints", run_dir);
    DIR *d = oldest_kept > 0 ? opendir(dir) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        long s;
        char tail[64];
        if (sscanf(e->d_name, "step_%ld.%63s", &s, tail) != 2 || s >= oldest_kept) continue;
        size_t len = strlen(tail);
        if (strcmp(tail, "model.safetensors") != 0 && (len < 4 || strcmp(tail + len - 4, ".tmp") != 0)) continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (unlink(path) != 0) fprintf(stderr, "warning: could not delete %s: %s\n", path, strerror(errno));
    }
    if (d) closedir(d);
}
