// loader.c: the Loader behind data/loader.h: the synthetic source, and webdataset shards read by one
// assembler thread and data_workers decode threads.
//
// Both sources fill two batch buffers from a background thread: the trainer reads one while the other is
// being filled, so drawing or decoding the next batch overlaps the training step.
//
// The shard pipeline. The assembler walks the rank's stream of items: visit v reads the shard
// shard_plan_visit(v), indexes its headers, and its samples come out in shard_plan_order(v) order (the
// shuffle buffer); item (v, i) is the i-th of them. Counting items from where the loader starts, item g
// goes to decode thread g % W (a per-thread ring of jobs), and the assembler collects the results in g
// order, copying good samples into the batch being filled and counting bad ones by reason. Two batch
// buffers alternate: the trainer reads one while the assembler fills the other.
//
// Determinism and position. Shard order, sample order and each sample's random crop are functions of
// (seed, rank, world, v, i) only, so the batches are the same for any thread count and any timing.
// The position after a batch is (v, i + 1) of its last sample: restoring it re-indexes shard visit v
// and continues from item i + 1 with the same shuffle and crops, so a resumed run neither repeats nor
// skips a sample. A saved position costs one shard index to restore, never a replay.
#include "loader.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "../model/rng.h"
#include "../model/utils.h"
#include "shards.h"
#include "synthetic.h"

#define SHOWN_WARNINGS 10     // per reason; the rest are only counted
#define NO_GOOD_SAMPLE 10000  // a training stream whose first this-many samples are all bad stops the run

typedef struct {
    // the job, written by the assembler
    const char *shard;
    WdsSample sample;
    char key[160];
    uint64_t visit;
    int item;
    uint64_t stream;  // augmentation stream
    // the result, written by the decode thread
    SampleResult result;
    uint8_t *image;  // (3, S, S)
    int32_t *tokens; // (T)
} Item;

typedef struct {
    Loader *l;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;              // a job was queued, a result is ready, or stop
    Item *ring;
    int cap;
    uint64_t queued, decoded, taken;  // ring cursors: [taken, decoded) done, [decoded, queued) to decode
    double busy_seconds;              // decoding time, for the throughput figure
} Worker;

typedef struct {
    Batch batch;
    int ready;
    uint64_t visit;  // the position after this batch (shards)
    int item;
    uint64_t position;  // the position after this batch (synthetic)
    LoaderStats stats;
} BatchSlot;

struct Loader {
    Config cfg;
    int is_train, batch_size, rank, world;
    LoaderStats stats;
    // synthetic source
    int synthetic;
    uint64_t position;  // samples this rank has drawn up to the last batch returned
    // webdataset shards
    char spec[CONFIG_STR];
    ShardList shards;
    ShardPlan plan;  // used by the assembler thread only
    PlanMode mode;
    Tokenizer *tok;
    SampleParams params;
    uint64_t visit;  // position after the last batch returned (or where the loader starts)
    int item;
    int n_workers, started;
    Worker *workers;
    pthread_t assembler;  // the thread that fills the batch slots (for either source)
    pthread_mutex_t mu;
    pthread_cond_t cond;  // a batch slot became ready or free, or stop
    BatchSlot slots[2];
    int next_slot, held_slot, finished;
    LoaderStats end_stats;  // the totals when finished
    atomic_int stop;
};

static void batch_alloc(Batch *b, int batch_size, int S, int T) {
    b->image_size = S, b->context_length = T;
    b->images = mallocCheck((size_t)batch_size * 3 * S * S);
    b->tokens = mallocCheck((size_t)batch_size * T * sizeof(int32_t));
    b->labels = mallocCheck((size_t)batch_size * sizeof(int32_t));
    for (int i = 0; i < batch_size; i++) b->labels[i] = -1;
}

static void batch_free(Batch *b) {
    free(b->images);
    free(b->tokens);
    free(b->labels);
}

// ---------------------------------------------------------------- decode threads

static void *worker_main(void *arg) {
    Worker *w = arg;
    Loader *l = w->l;
    SampleScratch scratch = {0};
    FILE *f = NULL;
    const char *open_shard = NULL;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->decoded == w->queued && !atomic_load(&l->stop)) pthread_cond_wait(&w->cond, &w->mu);
        if (atomic_load(&l->stop)) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        Item *it = &w->ring[w->decoded % w->cap];  // the assembler leaves it alone until it is decoded
        pthread_mutex_unlock(&w->mu);
        double t0 = now_seconds();
        if (it->shard != open_shard) {
            if (f) fclose(f);
            f = fopen(it->shard, "rb");
            open_shard = it->shard;
        }
        if (f) {
            Rng r;
            rng_init(&r, l->cfg.seed, RNG_AUGMENT, it->stream);
            it->result = sample_load(f, &it->sample, &l->params, &r, &scratch, it->image, it->tokens);
        } else {
            it->result = (SampleResult){SKIP_CORRUPT_IMAGE, 0, 0, -1, ""};
            snprintf(it->result.why, sizeof(it->result.why), "cannot reopen the shard: %s", strerror(errno));
        }
        pthread_mutex_lock(&w->mu);
        w->decoded++;
        w->busy_seconds += now_seconds() - t0;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->mu);
    }
    if (f) fclose(f);
    sample_scratch_free(&scratch);
    return NULL;
}

// ---------------------------------------------------------------- batch slots

// The filling thread's side of the two-slot handshake: wait until the trainer has released the slot
// (returns 0 on stop), and hand a filled slot over (n = 0: nothing more, an eval pass has ended).
static int slot_wait_free(Loader *l, BatchSlot *bs) {
    pthread_mutex_lock(&l->mu);
    while (bs->ready && !atomic_load(&l->stop)) pthread_cond_wait(&l->cond, &l->mu);
    pthread_mutex_unlock(&l->mu);
    return !atomic_load(&l->stop);
}

static void slot_publish(Loader *l, BatchSlot *bs, int n, int ended, const LoaderStats *st) {
    pthread_mutex_lock(&l->mu);
    bs->batch.size = n, bs->stats = *st;
    bs->ready = n > 0;
    l->finished = ended, l->end_stats = *st;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mu);
}

// ---------------------------------------------------------------- the assembler

typedef struct {  // where the assembler is in the stream
    uint64_t visit;
    int item, n;  // n = samples in the visit's shard; -1 = not indexed yet
    int ended;    // an eval pass has no more visits
    int empty_visits;
    uint64_t dispatched;
    ShardIndex idx;
    int *order;
    const char *shard;
} Cursor;

static void index_visit(Loader *l, Cursor *c, LoaderStats *st) {
    long shard = shard_plan_visit(&l->plan, c->visit);
    if (shard < 0) {
        c->ended = 1;
        return;
    }
    c->shard = l->shards.paths[shard];
    FILE *f = fopen(c->shard, "rb");
    if (!f) {
        c->idx.n = 0;
        snprintf(c->idx.error, sizeof(c->idx.error), "cannot open: %s", strerror(errno));
    } else {
        tar_index_shard(f, c->shard, &c->idx);
        fclose(f);
    }
    if (c->idx.error[0] && st->bad_shards++ < SHOWN_WARNINGS)
        fprintf(stderr, "warning: data: shard %s: %s; using the %d samples before it%s\n", c->shard, c->idx.error, c->idx.n,
                st->bad_shards == SHOWN_WARNINGS ? " (further bad shards are counted, not shown)" : "");
    c->n = c->idx.n;
    c->order = reallocCheck(c->order, (size_t)(c->n ? c->n : 1) * sizeof(int));
    shard_plan_order(&l->plan, c->visit, c->n, l->cfg.shuffle_buffer, c->order);
    // a training stream that finds nothing in a whole epoch of visits (or many draws) would spin forever
    long limit = l->mode == PLAN_RESAMPLED ? 20L * l->shards.n + 64 : l->plan.per_epoch;
    c->empty_visits = c->n ? 0 : c->empty_visits + 1;
    if (l->mode != PLAN_EVAL && c->empty_visits >= limit)
        fatal("data: %d shard visits in a row found no samples (last: %s%s%s)", c->empty_visits, c->shard,
              c->idx.error[0] ? ": " : "", c->idx.error);
}

// Queue jobs in stream order while the thread that gets the next one has room in its ring.
static void dispatch(Loader *l, Cursor *c, LoaderStats *st) {
    while (!c->ended && !atomic_load(&l->stop)) {
        if (c->n < 0) {
            index_visit(l, c, st);
            continue;
        }
        if (c->item >= c->n) {
            c->visit++, c->item = 0, c->n = -1;
            continue;
        }
        Worker *w = &l->workers[c->dispatched % (uint64_t)l->n_workers];
        pthread_mutex_lock(&w->mu);
        int full = w->queued - w->taken == (uint64_t)w->cap;
        if (!full) {
            Item *it = &w->ring[w->queued % w->cap];
            int s = c->order[c->item];
            it->shard = c->shard;
            it->sample = c->idx.samples[s];
            snprintf(it->key, sizeof(it->key), "%s", shard_sample_key(&c->idx, s));
            it->visit = c->visit, it->item = c->item;
            it->stream = shard_plan_sample_stream(&l->plan, c->visit, c->item);
            w->queued++;
            pthread_cond_broadcast(&w->cond);
        }
        pthread_mutex_unlock(&w->mu);
        if (full) break;
        c->item++, c->dispatched++;
    }
}

static void report_skip(const Item *it, LoaderStats *st) {
    SampleStatus s = it->result.status;
    st->skipped++;
    if (st->skips[s]++ < SHOWN_WARNINGS)
        fprintf(stderr, "warning: data: skipped %s/%s: %s: %s%s\n", it->shard, it->key, SAMPLE_STATUS_NAMES[s], it->result.why,
                st->skips[s] == SHOWN_WARNINGS ? " (further skips of this kind are counted, not shown)" : "");
}

static double decode_rate(Loader *l) {
    double rate = 0;
    for (int i = 0; i < l->n_workers; i++) {
        Worker *w = &l->workers[i];
        pthread_mutex_lock(&w->mu);
        if (w->busy_seconds > 0) rate += (double)w->decoded / w->busy_seconds;
        pthread_mutex_unlock(&w->mu);
    }
    return rate;
}

static void *assembler_main(void *arg) {
    Loader *l = arg;
    int S = l->cfg.image_size, T = l->cfg.context_length, W = l->n_workers;
    size_t image_bytes = (size_t)3 * S * S;
    Cursor c = {.visit = l->visit, .item = l->item, .n = -1};
    LoaderStats st = {0};
    uint64_t collected = 0, bad_in_a_row = 0, visit = l->visit;
    int item = l->item;
    for (int slot = 0;; slot ^= 1) {
        BatchSlot *bs = &l->slots[slot];
        if (!slot_wait_free(l, bs)) break;
        int n = 0, ended = 0;
        while (n < l->batch_size && !atomic_load(&l->stop)) {
            dispatch(l, &c, &st);
            if (c.ended && collected == c.dispatched) {
                ended = 1;
                break;
            }
            Worker *w = &l->workers[collected % (uint64_t)W];
            pthread_mutex_lock(&w->mu);
            while (w->taken == w->decoded && !atomic_load(&l->stop)) pthread_cond_wait(&w->cond, &w->mu);
            pthread_mutex_unlock(&w->mu);
            if (atomic_load(&l->stop)) break;
            Item *it = &w->ring[w->taken % w->cap];
            if (it->result.status == SAMPLE_OK) {
                memcpy(bs->batch.images + (size_t)n * image_bytes, it->image, image_bytes);
                memcpy(bs->batch.tokens + (size_t)n * T, it->tokens, (size_t)T * sizeof(int32_t));
                bs->batch.labels[n] = it->result.label;
                n++, st.samples++, bad_in_a_row = 0;
            } else {
                report_skip(it, &st);
                if (++bad_in_a_row >= NO_GOOD_SAMPLE && st.samples == 0 && l->mode != PLAN_EVAL)
                    fatal("data: none of the first %d samples of '%s' could be used (see the warnings above)", NO_GOOD_SAMPLE,
                          l->spec);
            }
            visit = it->visit, item = it->item + 1;
            pthread_mutex_lock(&w->mu);
            w->taken++;
            pthread_mutex_unlock(&w->mu);
            collected++;
        }
        if (atomic_load(&l->stop)) break;
        st.images_per_s = decode_rate(l);
        bs->visit = visit, bs->item = item;
        slot_publish(l, bs, n, ended, &st);
        if (ended) break;
    }
    shard_index_free(&c.idx);
    free(c.order);
    return NULL;
}

// ---------------------------------------------------------------- synthetic source

// Fills the slots with draws from the pool, data_workers-wide (OpenMP). Train: an endless stream of draws,
// disjoint across ranks; eval: one ordered pass over the pool.
static void *synthetic_main(void *arg) {
    Loader *l = arg;
    const Config *c = &l->cfg;
    int S = c->image_size, T = c->context_length;
    uint64_t pool = (uint64_t)c->synthetic_size, position = l->position;
    LoaderStats st = {0};
    for (int slot = 0;; slot ^= 1) {
        BatchSlot *bs = &l->slots[slot];
        if (!slot_wait_free(l, bs)) break;
        int n = l->batch_size;
        if (!l->is_train) n = position >= pool ? 0 : (int)(pool - position < (uint64_t)n ? pool - position : (uint64_t)n);
        double t0 = now_seconds();
#pragma omp parallel for schedule(static) num_threads(c->data_workers)
        for (int i = 0; i < n; i++) {
            uint64_t k = position + (uint64_t)i, index = k;
            if (l->is_train) {
                Rng r;
                rng_init(&r, c->seed, RNG_DATA, k * (uint64_t)l->world + (uint64_t)l->rank);
                index = rng_below(&r, pool);
            }
            synthetic_sample(c->seed, index, S, T, c->vocab_size, bs->batch.images + (size_t)i * 3 * S * S,
                             bs->batch.tokens + (size_t)i * T);
        }
        double dt = now_seconds() - t0;
        position += (uint64_t)n;
        st.samples += n;
        if (n > 0 && dt > 0) st.images_per_s = n / dt;
        bs->position = position;
        slot_publish(l, bs, n, n == 0, &st);
        if (n == 0) break;
    }
    return NULL;
}

// ---------------------------------------------------------------- the API

static void start_threads(Loader *l) {
    if (l->synthetic) {
        if (pthread_create(&l->assembler, NULL, synthetic_main, l)) fatal("pthread_create failed for the synthetic data source");
        l->started = 1;
        return;
    }
    int B = l->batch_size, W = l->n_workers, S = l->cfg.image_size, T = l->cfg.context_length;
    l->workers = callocCheck((size_t)W, sizeof(Worker));
    for (int i = 0; i < W; i++) {
        Worker *w = &l->workers[i];
        w->l = l;
        w->cap = (B + W - 1) / W + 1;  // about one batch of decoding ahead of the assembler
        w->ring = callocCheck((size_t)w->cap, sizeof(Item));
        for (int k = 0; k < w->cap; k++) {
            w->ring[k].image = mallocCheck((size_t)3 * S * S);
            w->ring[k].tokens = mallocCheck((size_t)T * sizeof(int32_t));
        }
        if (pthread_mutex_init(&w->mu, NULL) || pthread_cond_init(&w->cond, NULL)) fatal("pthread mutex/cond init failed");
        if (pthread_create(&w->thread, NULL, worker_main, w)) fatal("pthread_create failed for data worker %d", i);
    }
    if (pthread_create(&l->assembler, NULL, assembler_main, l)) fatal("pthread_create failed for the data assembler");
    l->started = 1;
}

Loader *loader_open(const Config *c, const char *spec, int is_train, int batch_size, int rank, int world) {
    if (batch_size < 1) fatal("loader_open: batch size %d", batch_size);
    Loader *l = callocCheck(1, sizeof(Loader));
    l->cfg = *c;
    l->is_train = is_train, l->batch_size = batch_size, l->rank = rank, l->world = world;
    l->synthetic = strcmp(spec, "synthetic") == 0;
    if (!l->synthetic) {
        snprintf(l->spec, sizeof(l->spec), "%s", spec);
        shards_parse(spec, &l->shards);
        l->mode = !l->is_train ? PLAN_EVAL : c->resampled ? PLAN_RESAMPLED : PLAN_TRAIN;
        shard_plan_init(&l->plan, l->shards.n, c->seed, l->rank, l->world, l->mode);
        l->tok = tokenizer_load(NULL);
        l->params = (SampleParams){l->tok, c->image_size, c->context_length, c->max_image_pixels, c->image_alpha, l->is_train};
        l->n_workers = c->data_workers;
    }
    l->held_slot = -1;
    for (int k = 0; k < 2; k++) batch_alloc(&l->slots[k].batch, l->batch_size, c->image_size, c->context_length);
    if (pthread_mutex_init(&l->mu, NULL) || pthread_cond_init(&l->cond, NULL)) fatal("pthread mutex/cond init failed");
    return l;
}

int loader_next(Loader *l, Batch *b) {
    if (!l->started) start_threads(l);
    double t0 = now_seconds();
    pthread_mutex_lock(&l->mu);
    if (l->held_slot >= 0) {  // the trainer is done with the previous batch
        l->slots[l->held_slot].ready = 0;
        l->held_slot = -1;
        pthread_cond_broadcast(&l->cond);
    }
    BatchSlot *bs = &l->slots[l->next_slot];
    while (!bs->ready && !l->finished) pthread_cond_wait(&l->cond, &l->mu);
    double waited = l->stats.wait_seconds;
    int n = 0;
    if (bs->ready) {
        l->stats = bs->stats;
        l->held_slot = l->next_slot, l->next_slot ^= 1;
        l->visit = bs->visit, l->item = bs->item, l->position = bs->position;
        *b = bs->batch;
        n = b->size;
    } else {
        l->stats = l->end_stats;  // the end of an eval pass, whose last attempt may have skipped samples
    }
    l->stats.wait_seconds = waited;
    pthread_mutex_unlock(&l->mu);
    l->stats.wait_seconds += now_seconds() - t0;
    return n;
}

LoaderStats loader_stats(const Loader *l) { return l->stats; }

void loader_stats_format(const LoaderStats *s, char *buf, size_t cap) {
    int len = snprintf(buf, cap, "samples %ld skipped %ld", s->samples, s->skipped);
    const char *sep = " (";
    for (int r = 1; r < SAMPLE_STATUSES; r++)
        if (s->skips[r] && len >= 0 && (size_t)len < cap) len += snprintf(buf + len, cap - len, "%s%s %ld", sep, SAMPLE_STATUS_NAMES[r], s->skips[r]), sep = ", ";
    if (*sep == ',' && len >= 0 && (size_t)len < cap) len += snprintf(buf + len, cap - len, ")");
    if (len >= 0 && (size_t)len < cap)
        snprintf(buf + len, cap - len, " bad_shards %ld wait %.1fs decode %.0f img/s", s->bad_shards, s->wait_seconds, s->images_per_s);
}

void loader_get_state(const Loader *l, char *buf, size_t cap) {
    if (l->synthetic) {
        snprintf(buf, cap, "synthetic position=%llu", (unsigned long long)l->position);
        return;
    }
    snprintf(buf, cap, "shards n=%d seed=%llu world=%d rank=%d resampled=%d shuffle_buffer=%ld visit=%llu item=%d", l->shards.n,
             (unsigned long long)l->cfg.seed, l->world, l->rank, l->mode == PLAN_RESAMPLED, l->cfg.shuffle_buffer,
             (unsigned long long)l->visit, l->item);
}

void loader_restore(Loader *l, const char *state) {
    if (l->started) fatal("loader_restore: called after the first loader_next");
    if (l->synthetic) {
        unsigned long long pos;
        if (sscanf(state, "synthetic position=%llu", &pos) != 1) fatal("loader state '%s' is not a synthetic-source position", state);
        l->position = pos;
        return;
    }
    unsigned long long seed, visit;
    int n, world, rank, resampled, item;
    long buffer;
    if (sscanf(state, "shards n=%d seed=%llu world=%d rank=%d resampled=%d shuffle_buffer=%ld visit=%llu item=%d", &n, &seed, &world,
               &rank, &resampled, &buffer, &visit, &item) != 8)
        fatal("loader state '%s' is not a shard position", state);
    char mine[256];
    loader_get_state(l, mine, sizeof(mine));
    if (n != l->shards.n || seed != l->cfg.seed || world != l->world || rank != l->rank || resampled != (l->mode == PLAN_RESAMPLED) ||
        buffer != l->cfg.shuffle_buffer)
        fatal("loader state '%s' was saved with other data settings than this run's ('%s'): the same shards, seed, world "
              "size, resampled and shuffle_buffer are needed to resume the data stream",
              state, mine);
    l->visit = visit, l->item = item;
}

void loader_close(Loader *l) {
    atomic_store(&l->stop, 1);
    if (l->started) {
        for (int i = 0; i < l->n_workers; i++) {
            pthread_mutex_lock(&l->workers[i].mu);
            pthread_cond_broadcast(&l->workers[i].cond);
            pthread_mutex_unlock(&l->workers[i].mu);
        }
        pthread_mutex_lock(&l->mu);
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->assembler, NULL);
        for (int i = 0; i < l->n_workers; i++) {
            Worker *w = &l->workers[i];
            pthread_join(w->thread, NULL);
            for (int k = 0; k < w->cap; k++) free(w->ring[k].image), free(w->ring[k].tokens);
            free(w->ring);
            pthread_mutex_destroy(&w->mu);
            pthread_cond_destroy(&w->cond);
        }
        free(l->workers);
    }
    for (int k = 0; k < 2; k++) batch_free(&l->slots[k].batch);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cond);
    if (!l->synthetic) {
        tokenizer_free(l->tok);
        shard_plan_free(&l->plan);
        shards_free(&l->shards);
    }
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
