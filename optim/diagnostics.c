// diagnostics.c: RMS history of watched tensors, the loss-spike detector and the JSON-lines step log.
#include "diagnostics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../model/utils.h"

static void watch_add(Diagnostics *d, const char *name, int required) {
    int i = clip_layout_find(d->layout, name);
    if (i < 0 && required) fatal("watch_rms: no tensor named '%s' (names are open_clip's, e.g. visual.conv1.weight)", name);
    if (i < 0 || d->num_watch == MAX_WATCH) return;
    for (int k = 0; k < d->num_watch; k++)
        if (d->watch[k] == i) return;
    d->watch[d->num_watch++] = i;
}

void diag_init(Diagnostics *d, const Config *c, const ClipLayout *L) {
    memset(d, 0, sizeof(*d));
    d->layout = L;
    d->spike_factor = c->spike_factor;
    if (strcmp(c->watch_rms, "default") == 0) {
        char name[128];
        const char *forms[] = {"visual.transformer.resblocks.%d.attn.in_proj_weight", "visual.transformer.resblocks.%d.mlp.c_fc.weight",
                               "transformer.resblocks.%d.attn.in_proj_weight", "transformer.resblocks.%d.mlp.c_fc.weight"};
        watch_add(d, "visual.conv1.weight", 1);
        for (int f = 0; f < 4; f++) {
            int last = (f < 2 ? L->visual.layers : L->text.layers) - 1;
            snprintf(name, sizeof(name), forms[f], 0), watch_add(d, name, 1);
            snprintf(name, sizeof(name), forms[f], last), watch_add(d, name, 1);
        }
        return;
    }
    char list[CONFIG_STR];
    snprintf(list, sizeof(list), "%s", c->watch_rms);
    for (char *save = NULL, *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) watch_add(d, tok, 1);
}

void diag_print_spike(const Diagnostics *d, FILE *out, const StepRecord *r) {
    fprintf(out, "loss spike at step %ld: %.4f vs reference %.4f; %s RMS over the steps before: ", r->step, r->loss, d->reference,
            d->layout->tensors[d->watch[0]].name);
    int n = d->filled, newest = (d->pos - 1 + RMS_HISTORY) % RMS_HISTORY;
    if (n > 0 && d->history_step[newest] == r->step) n--;  // diag_step has added the spike step's own RMS
    for (int k = 0; k < n; k++) fprintf(out, "%.2f ", d->history[(d->pos - d->filled + k + RMS_HISTORY) % RMS_HISTORY][0]);
    fprintf(out, "(see log.jsonl)\n");
}

int diag_rms_argmax(const Diagnostics *d, const float *rms) {
    int imax = 0;
    for (int i = 1; i < d->layout->num_tensors; i++)
        if (rms[i] > rms[imax]) imax = i;
    return imax;
}

void json_num(FILE *f, const char *key, const char *fmt, double v) {
    fprintf(f, "%s", key);
    if (isfinite(v)) fprintf(f, fmt, v);
    else fprintf(f, "null");
}

// The spike event: the watched tensors' RMS over the steps before the spike, oldest first.
static void write_spike(const Diagnostics *d, FILE *f, const StepRecord *r) {
    fprintf(f, "{\"event\":\"spike\",\"step\":%ld,\"loss\":%.6g,\"reference\":%.6g,\"steps_before\":[", r->step, r->loss, d->reference);
    int n = d->filled, first = (d->pos - n + RMS_HISTORY) % RMS_HISTORY;
    for (int k = 0; k < n; k++) fprintf(f, "%s%ld", k ? "," : "", d->history_step[(first + k) % RMS_HISTORY]);
    fprintf(f, "],\"rms_before\":{");
    for (int w = 0; w < d->num_watch; w++) {
        fprintf(f, "%s\"%s\":[", w ? "," : "", d->layout->tensors[d->watch[w]].name);
        for (int k = 0; k < n; k++) json_num(f, k ? "," : "", "%.4g", d->history[(first + k) % RMS_HISTORY][w]);
        fprintf(f, "]");
    }
    fprintf(f, "}}\n");
}

// A loss that is not a spike joins the reference (an EMA of the loss over non-spike steps).
static void reference_add(Diagnostics *d, double loss) {
    d->reference = d->observed == 0 ? loss : 0.95 * d->reference + 0.05 * loss;
    d->observed++;
}

// An applied step's RMS of the watched tensors (value[w] for watch[w]) joins the history.
static void history_add(Diagnostics *d, long step, const float *value) {
    for (int w = 0; w < d->num_watch; w++) d->history[d->pos][w] = value[w];
    d->history_step[d->pos] = step;
    d->pos = (d->pos + 1) % RMS_HISTORY;
    if (d->filled < RMS_HISTORY) d->filled++;
}

int diag_step(Diagnostics *d, FILE *f, const StepRecord *r, const float *rms) {
    // spike test against the reference built from earlier steps (20 steps of warm-in first)
    int spike = 0;
    if (!r->skipped && isfinite(r->loss)) {
        spike = d->observed >= 20 && r->loss > d->spike_factor * d->reference;
        if (spike) {
            d->spikes++;
            write_spike(d, f, r);
        } else {
            reference_add(d, r->loss);
        }
    }
    const ClipLayout *L = d->layout;
    fprintf(f, "{\"step\":%ld,\"samples\":%ld", r->step, r->samples);
    json_num(f, ",\"loss\":", "%.6g", r->loss), json_num(f, ",\"lr\":", "%.6g", r->lr);
    json_num(f, ",\"logit_scale\":", "%.6g", r->logit_scale), json_num(f, ",\"grad_norm\":", "%.6g", r->grad_norm);
    json_num(f, ",\"step_s\":", "%.4g", r->step_s), json_num(f, ",\"img_per_s\":", "%.4g", r->img_per_s);
    json_num(f, ",\"data_wait_s\":", "%.4g", r->data_wait_s);
    if (r->skipped) fprintf(f, ",\"skipped\":\"non-finite\"");
    if (spike) fprintf(f, ",\"spike\":true");
    if (r->skipped) {  // the optimizer did not run: rms still holds the step before's, which this step has none of
        fprintf(f, ",\"rms_max\":null,\"rms_max_tensor\":null,\"rms\":{");
        for (int w = 0; w < d->num_watch; w++) fprintf(f, "%s\"%s\":null", w ? "," : "", L->tensors[d->watch[w]].name);
    } else {
        int imax = diag_rms_argmax(d, rms);
        json_num(f, ",\"rms_max\":", "%.4g", rms[imax]);
        fprintf(f, ",\"rms_max_tensor\":\"%s\",\"rms\":{", L->tensors[imax].name);
        for (int w = 0; w < d->num_watch; w++) {
            fprintf(f, "%s\"%s\":", w ? "," : "", L->tensors[d->watch[w]].name);
            json_num(f, "", "%.4g", rms[d->watch[w]]);
        }
    }
    fprintf(f, "}}\n");
    // A failed write (a full disk, a network file system's hiccup) does not stop the run, which checkpoints keep: it is
    // said once, and the log misses records until writes succeed again (the next checkpoint may fail the same way).
    if (fflush(f) != 0 || ferror(f)) {
        if (!d->log_failed_at) {
            fprintf(stderr, "warning: writing the step log failed at step %ld: %s; training goes on, the log misses records "
                    "until writes succeed\n", r->step, strerror(errno));
            d->log_failed_at = r->step;
        }
        clearerr(f);
    } else if (d->log_failed_at) {
        fprintf(stderr, "note: the step log is written again from step %ld (records of steps %ld-%ld are missing or cut)\n",
                r->step, d->log_failed_at, r->step - 1);
        d->log_failed_at = 0;
    }
    if (r->skipped) return spike;
    // this step's RMS joins the history after the spike test, so an event shows the steps before it
    float value[MAX_WATCH];
    for (int w = 0; w < d->num_watch; w++) value[w] = rms[d->watch[w]];
    history_add(d, r->step, value);
    return spike;
}

// One step record of an earlier run's log, as diag_step would have taken it: a spike (its "spike" flag) counts,
// another finite loss joins the reference, and an applied step's watched RMS joins the history (a tensor the
// record lacks, watched only now, as NaN: null in an event).
static void replay(Diagnostics *d, const char *line) {
    if (strstr(line, "\"skipped\":")) return;
    const char *l = strstr(line, "\"loss\":"), *rms = strstr(line, "\"rms\":{");
    double loss = l ? strtod(l + 7, NULL) : NAN;
    if (!isfinite(loss)) return;
    if (strstr(line, "\"spike\":true")) d->spikes++;
    else reference_add(d, loss);
    float value[MAX_WATCH];
    char key[sizeof(d->layout->tensors[0].name) + 4];
    for (int w = 0; w < d->num_watch; w++) {
        snprintf(key, sizeof(key), "\"%s\":", d->layout->tensors[d->watch[w]].name);
        const char *v = rms ? strstr(rms, key) : NULL;
        value[w] = v ? (float)strtod(v + strlen(key), NULL) : NAN;
    }
    history_add(d, strtol(line + 8, NULL, 10), value);
}

FILE *diag_open_log(Diagnostics *d, const char *path, long start) {
    if (start <= 0) return fopenCheck(path, "w");
    FILE *f = fopen(path, "r+");
    if (!f && errno == ENOENT) return fopenCheck(path, "a");
    if (!f) fatal("cannot open the step log %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    long keep = 0;
    for (ssize_t len; (len = getline(&line, &cap, f)) > 0; keep += len) {
        if (line[len - 1] != '\n' || line[0] != '{') break;  // the last line, cut by a crash
        const char *s = strstr(line, "\"step\":");
        if (s && strtol(s + 7, NULL, 10) > start) break;   // written after the checkpoint: this run writes it again
        if (strncmp(line, "{\"step\":", 8) == 0) replay(d, line);
    }
    if (ferror(f)) fatal("reading the step log %s failed: %s", path, strerror(errno));
    free(line);
    if (fseek(f, 0, SEEK_END) != 0) fatal("seeking in the step log %s failed: %s", path, strerror(errno));
    long size = ftell(f);
    if (size < 0) fatal("ftell on the step log %s failed: %s", path, strerror(errno));
    if (size > keep) {
        if (ftruncate(fileno(f), keep) != 0) fatal("truncating the step log %s failed: %s", path, strerror(errno));
        printf("log.jsonl: dropped %ld bytes after step %ld's records (written after the checkpoint resumed, or cut off)\n", size - keep, start);
    }
    fcloseCheck(f);
    return fopenCheck(path, "a");
}
