// shards.h: which shard files a run reads and in what order. A spec is one or more sources joined by `::`;
// a source is a directory (its *.tar, sorted) or a path with brace ranges `shard-{00000..00999}.tar`
// (zero padding kept) and lists `{a,b}`. The plan says which shard a rank reads on its v-th visit and in
// which order a visited shard's samples come out of the shuffle buffer; both are pure functions of
// (seed, rank, world, visit), so the stream a rank reads never depends on its thread count.
#pragma once
#include <stdint.h>

typedef struct {
    char **paths;
    int n;
} ShardList;

// Expand a spec; a syntax error, a missing file or an empty result stops the program naming the culprit.
void shards_parse(const char *spec, ShardList *list);
void shards_free(ShardList *list);

typedef enum {
    PLAN_EVAL,       // one pass over the rank's shards (shards rank, rank + world, ...) in spec order
    PLAN_TRAIN,      // endless epochs; epoch e shuffles all shards from (seed, e), rank takes every world-th
    PLAN_RESAMPLED,  // endless draws with replacement from all shards (open_clip --dataset-resampled)
} PlanMode;

typedef struct {
    int n_shards;
    uint64_t seed;
    int rank, world;
    PlanMode mode;
    long per_epoch;    // visits per epoch of this rank (eval: the whole pass)
    int *perm;         // the shard permutation of epoch perm_epoch (PLAN_TRAIN)
    long perm_epoch;
} ShardPlan;

// Stops the program when a training rank would get no shard (fewer shards than ranks without resampling).
void shard_plan_init(ShardPlan *p, int n_shards, uint64_t seed, int rank, int world, PlanMode mode);
void shard_plan_free(ShardPlan *p);
// The shard of the rank's visit v (counting from 0 over all epochs); -1 past the end of an eval pass.
long shard_plan_visit(ShardPlan *p, uint64_t visit);
// order[i] = the sample of a visited shard (n samples) that comes out i-th from a shuffle buffer of
// `buffer` samples, as webdataset's shuffle: fill the buffer, then emit a random one per sample read,
// then drain. buffer <= 1 or an eval plan: the shard's order.
void shard_plan_order(const ShardPlan *p, uint64_t visit, int n, long buffer, int *order);
// The augmentation stream of one sample: rng_init(seed, RNG_AUGMENT, shard_plan_sample_stream(...)).
uint64_t shard_plan_sample_stream(const ShardPlan *p, uint64_t visit, int item);
