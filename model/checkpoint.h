// checkpoint.h: checkpoints of a run. Each is two .safetensors files in <run_dir>/checkpoints/:
//   step_00001000.model.safetensors   the weights, F32, open_clip state_dict names (loads in open_clip)
//   step_00001000.state.safetensors   optimizer moments (exp_avg.<name>, exp_avg_sq.<name>) and metadata:
//                                     step, optimizer step count, loader position, the effective config
// Both are written atomically (temp file, fsync, rename), the state file last: a checkpoint is complete
// when its state file exists, so a crash mid-write never leaves a "latest" that cannot be resumed.
#pragma once
#include <stddef.h>

#include "../optim/optim.h"
#include "clip.h"
#include "safetensors.h"

// Copy every layout tensor from f (names = prefix + open_clip name) into params. Returns 0, or -1 with
// the first missing or mis-shaped tensor, or one whose dtype is not a float type, in err.
int load_weights_by_name(const ClipLayout *L, float *params, const StFile *f, const char *prefix, char *err, size_t errlen);
// -1 with the first tensor named prefix + something that is not in the layout (e.g. layer-scale weights for a
// config without layer-scale) in err, else 0.
int check_no_extra_tensors(const ClipLayout *L, const StFile *f, const char *prefix, char *err, size_t errlen);
// Write weights alone (e.g. an export) atomically.
int save_weights(const char *path, const ClipLayout *L, const float *params, const char *config_text, char *err, size_t errlen);

int checkpoint_save(const char *run_dir, long step, const ClipLayout *L, const float *params, const Optimizer *opt,
                    const char *config_text, const char *loader_state, char *err, size_t errlen);
// Resume from spec: "latest" (newest complete checkpoint in run_dir; corrupt ones are skipped with a
// warning) or the path of a .model.safetensors / .state.safetensors file. A checkpoint whose saved config
// differs from config_text (this run's, as config_print writes it; NULL: not compared) in a key of the model
// is refused; other differences in training settings are printed as a warning. Fills params, the optimizer
// and loader_state; returns the step to continue from, or -1 with the reason in err.
long checkpoint_resume(const char *run_dir, const char *spec, const char *config_text, const ClipLayout *L, float *params, Optimizer *opt,
                       char *loader_state, size_t cap, char *err, size_t errlen);
// The step of the newest complete checkpoint in run_dir (loadable or not), or -1 if there is none.
long checkpoint_newest_step(const char *run_dir);
// Delete all but the newest `keep` complete checkpoints up to `step` (the one just written), and what interrupted
// saves left older than them (weights without a state file, temporary files). Later ones (damaged ones that a
// resume = latest skipped) are neither counted nor deleted.
void checkpoint_prune(const char *run_dir, int keep, long step);
