// diagnostics.h: the paper's loss-spike diagnostics and the per-step log. The optimizer's per-tensor
// RMS (sqrt(mean(g^2 / u))) of watched tensors is kept for the last RMS_HISTORY steps; a loss spike (loss
// above spike_factor x a running reference) is logged as an event carrying that history, so the paper's
// finding -- spikes follow 1-8 steps after the patch embedding's RMS jumps well above 1 -- can be read
// off the log directly. Every step is one JSON line in <run_dir>/log.jsonl (a non-finite number is null; a
// skipped step has null RMS fields and stays out of the RMS history).
#pragma once
#include <stdio.h>

#include "../model/clip.h"
#include "../model/config.h"

#define RMS_HISTORY 10
#define MAX_WATCH 32

typedef struct {
    long step, samples;              // step just completed (1-based) and samples seen so far
    float loss, lr, logit_scale;     // logit_scale as exp(logit_scale)
    float grad_norm;
    double step_s, img_per_s, data_wait_s;
    int skipped;                     // the update was not applied (non-finite loss or gradient)
} StepRecord;

typedef struct {
    const ClipLayout *layout;
    int watch[MAX_WATCH], num_watch;                // tensor indices whose RMS is logged every step
    float history[RMS_HISTORY][MAX_WATCH];          // ring buffer of their RMS
    long history_step[RMS_HISTORY];
    int filled, pos;
    float spike_factor;
    double reference;                               // EMA of the loss over non-spike steps
    long observed, spikes;
    long log_failed_at;                             // step whose log write failed first (0: writes succeed)
} Diagnostics;

// watch_rms: "default" (patch embedding + first/last block qkv and c_fc of each tower) or a comma-separated
// list of open_clip tensor names (an unknown name stops with an error naming it).
void diag_init(Diagnostics *d, const Config *c, const ClipLayout *L);
// Record a finished step: RMS history, spike detection, one JSON line to f (and a spike event line).
// rms: the optimizer's per-tensor RMS (layout order). Returns 1 if the step's loss is a spike.
int diag_step(Diagnostics *d, FILE *f, const StepRecord *r, const float *rms);
// Opens the step log at path for a run that starts after step `start`: 0 starts it anew; a resumed run keeps the
// records of steps up to `start` and drops the rest (steps an earlier run logged after the checkpoint resumed, which
// this run logs again, and a last line cut off by a crash), and rebuilds the spike detector from the kept step
// records (reference, spike count, RMS history), so that detection goes on as in the uninterrupted run.
FILE *diag_open_log(Diagnostics *d, const char *path, long start);
// The console line of the spike diag_step just reported for r: the loss, its reference, and the first watched
// tensor's RMS over the steps before it (the event's, less the oldest when the history was full).
void diag_print_spike(const Diagnostics *d, FILE *out, const StepRecord *r);
// Index of the largest RMS.
int diag_rms_argmax(const Diagnostics *d, const float *rms);
// key, then v formatted with fmt as JSON has numbers: a non-finite value (a skipped step's loss, a diverged model's
// validation loss) is null, not nan or inf.
void json_num(FILE *f, const char *key, const char *fmt, double v);
