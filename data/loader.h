// loader.h: the batch interface between data and trainer. A Loader yields batches of (image, caption
// tokens) from the synthetic source or from webdataset shards, decoded by background threads.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../model/config.h"

// OpenAI CLIP normalisation, applied by the model to the uint8 images.
static const float CLIP_MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float CLIP_STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

typedef struct {
    int size;            // samples in this batch (B); an eval loader's last batch may be short
    int image_size;      // S
    int context_length;  // T
    uint8_t *images;     // (B, 3, S, S) RGB after the train/eval transform, before mean/std
    int32_t *tokens;     // (B, T) SOT ... EOT then 0 padding
    int32_t *labels;     // (B) class index from a sample's `cls` member (zero-shot eval); -1 if none
} Batch;

typedef struct {
    long samples;         // samples delivered
    long skipped;         // bad samples skipped (all reasons)
    double wait_seconds;  // time loader_next spent waiting for a batch
    double images_per_s;  // decode throughput of the worker threads
} LoaderStats;

typedef struct Loader Loader;

// spec: "synthetic" or a shard spec. is_train: random crop + shuffling + endless epochs; else
// the eval transform, one pass in order. rank/world: this process's share of the shards.
Loader *loader_open(const Config *c, const char *spec, int is_train, int batch_size, int rank, int world);
// Fills *b with the next batch (memory owned by the loader, valid until the next call).
// Returns the number of samples; 0 when an eval loader has no more data (a train loader never ends).
int loader_next(Loader *l, Batch *b);
LoaderStats loader_stats(const Loader *l);
// The loader's position as a short text (saved in checkpoints) and its restore, so a resumed run
// neither repeats nor skips samples. loader_restore must be called before the first loader_next.
void loader_get_state(const Loader *l, char *buf, size_t cap);
void loader_restore(Loader *l, const char *state);
void loader_close(Loader *l);

// uint8 (B, 3, S, S) -> float (B, 3, S, S) normalised with CLIP_MEAN/CLIP_STD.
void images_normalize(const uint8_t *in, float *out, int B, int S);
