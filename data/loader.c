// loader.c: the Loader behind data/loader.h. This version serves the synthetic source only;
// webdataset shards plug in here (data/shards.c, data/image.c, data/tokenizer.c).
#include "loader.h"

#include <stdio.h>
#include <string.h>

#include "../model/rng.h"
#include "../model/utils.h"
#include "synthetic.h"

struct Loader {
    Config cfg;
    int is_train, batch_size, rank, world;
    uint64_t position;  // samples this rank has drawn so far
    Batch batch;
    LoaderStats stats;
};

Loader *loader_open(const Config *c, const char *spec, int is_train, int batch_size, int rank, int world) {
    if (strcmp(spec, "synthetic") != 0) fatal("data '%s': only data = synthetic is supported by this build", spec);
    Loader *l = callocCheck(1, sizeof(Loader));
    l->cfg = *c;
    l->is_train = is_train, l->batch_size = batch_size, l->rank = rank, l->world = world;
    int S = c->image_size, T = c->context_length;
    l->batch.image_size = S, l->batch.context_length = T;
    l->batch.images = mallocCheck((size_t)batch_size * 3 * S * S);
    l->batch.tokens = mallocCheck((size_t)batch_size * T * sizeof(int32_t));
    l->batch.labels = mallocCheck((size_t)batch_size * sizeof(int32_t));
    for (int i = 0; i < batch_size; i++) l->batch.labels[i] = -1;
    return l;
}

int loader_next(Loader *l, Batch *b) {
    const Config *c = &l->cfg;
    int S = c->image_size, T = c->context_length;
    uint64_t pool = (uint64_t)c->synthetic_size;
    // eval: one ordered pass over the pool; train: an endless stream of draws, disjoint across ranks
    if (!l->is_train && l->position >= pool) return 0;
    int n = l->batch_size;
    if (!l->is_train && l->position + (uint64_t)n > pool) n = (int)(pool - l->position);
    double t0 = now_seconds();
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        uint64_t k = l->position + (uint64_t)i;
        uint64_t index = k;
        if (l->is_train) {
            Rng r;
            rng_init(&r, c->seed, RNG_DATA, k * (uint64_t)l->world + (uint64_t)l->rank);
            index = rng_below(&r, pool);
        }
        synthetic_sample(c->seed, index, S, T, c->vocab_size, l->batch.images + (size_t)i * 3 * S * S,
                         l->batch.tokens + (size_t)i * T);
    }
    double dt = now_seconds() - t0;
    l->position += (uint64_t)n;
    l->stats.samples += n;
    l->stats.wait_seconds += dt;
    l->stats.images_per_s = dt > 0 ? n / dt : 0;
    l->batch.size = n;
    *b = l->batch;
    return n;
}

LoaderStats loader_stats(const Loader *l) { return l->stats; }

void loader_get_state(const Loader *l, char *buf, size_t cap) { snprintf(buf, cap, "synthetic position=%llu", (unsigned long long)l->position); }

void loader_restore(Loader *l, const char *state) {
    unsigned long long pos;
    if (sscanf(state, "synthetic position=%llu", &pos) != 1) fatal("loader state '%s' is not a synthetic-source position", state);
    l->position = pos;
}

void loader_close(Loader *l) {
    free(l->batch.images);
    free(l->batch.tokens);
    free(l->batch.labels);
    free(l);
}

void images_normalize(const uint8_t *in, float *out, int B, int S) {
    size_t plane = (size_t)S * S;
#pragma omp parallel for schedule(static)
    for (long bc = 0; bc < (long)B * 3; bc++) {
        int ch = (int)(bc % 3);
        float scale = 1.0f / (255.0f * CLIP_STD[ch]), shift = CLIP_MEAN[ch] / CLIP_STD[ch];
        for (size_t p = 0; p < plane; p++) out[bc * plane + p] = in[bc * plane + p] * scale - shift;
    }
}
