// shards.c: shard specs (brace expansion, directories, `::` lists, existence checks) and the shard plan
// (rank split, per-epoch shuffles, resampling, shuffle-buffer order, per-sample random streams).
#include "shards.h"

#include <ctype.h>
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#include "../model/rng.h"
#include "../model/utils.h"

#define MAX_SHARDS 100000000  // a spec expanding to more is a typo, not a dataset

static void list_add(ShardList *l, const char *path) {
    if (l->n >= MAX_SHARDS) fatal("data: the spec expands to more than %d shards", MAX_SHARDS);
    if ((l->n & (l->n - 1)) == 0)  // n is 0 or a power of two: the array is full, double it
        l->paths = reallocCheck(l->paths, (size_t)(l->n ? 2 * l->n : 1) * sizeof(char *));
    l->paths[l->n++] = strdup(path);
    if (!l->paths[l->n - 1]) fatal("strdup failed: out of host memory");
}

// The matching '}' of the '{' at s[open], or -1.
static int matching_brace(const char *s, int open) {
    int depth = 0;
    for (int i = open; s[i]; i++) {
        if (s[i] == '{') depth++;
        if (s[i] == '}' && --depth == 0) return i;
    }
    return -1;
}

// "a..b" with decimal a, b: fills the bounds and the zero-padded width (bash: the wider of the two when
// either has a leading zero). Returns 0 if the text is not a numeric range.
static int parse_range(const char *s, int len, long *a, long *b, int *width) {
    const char *dots = strstr(s, "..");
    if (!dots || dots - s >= len) return 0;
    int la = (int)(dots - s), lb = len - la - 2;
    for (int i = 0; i < la; i++)
        if (!isdigit((unsigned char)s[i])) return 0;
    for (int i = 0; i < lb; i++)
        if (!isdigit((unsigned char)dots[2 + i])) return 0;
    if (la == 0 || lb == 0 || la > 18 || lb > 18) return 0;
    *a = strtol(s, NULL, 10), *b = strtol(dots + 2, NULL, 10);
    int padded = (la > 1 && s[0] == '0') || (lb > 1 && dots[2] == '0');
    *width = padded ? (la > lb ? la : lb) : 0;
    return 1;
}

// Expands the first brace group of `pattern` and recurses on each alternative (nested and several groups).
static void expand_braces(const char *pattern, const char *spec, ShardList *out) {
    const char *brace = strchr(pattern, '{');
    if (!brace) {
        list_add(out, pattern);
        return;
    }
    int open = (int)(brace - pattern), close = matching_brace(pattern, open);
    if (close < 0) fatal("data: unbalanced '{' in '%s'", spec);
    const char *body = pattern + open + 1;
    int body_len = close - open - 1;
    size_t cap = strlen(pattern) + 32;
    char *buf = mallocCheck(cap);
    long a, b;
    int width;
    if (parse_range(body, body_len, &a, &b, &width)) {
        long step = a <= b ? 1 : -1;
        for (long v = a;; v += step) {
            snprintf(buf, cap, "%.*s%0*ld%s", open, pattern, width, v, pattern + close + 1);
            expand_braces(buf, spec, out);
            if (v == b) break;
        }
    } else {
        int depth = 0, start = 0, alternatives = 0;
        for (int i = 0; i <= body_len; i++) {
            if (i < body_len && body[i] == '{') depth++;
            if (i < body_len && body[i] == '}') depth--;
            if (i == body_len || (body[i] == ',' && depth == 0)) {
                snprintf(buf, cap, "%.*s%.*s%s", open, pattern, i - start, body + start, pattern + close + 1);
                expand_braces(buf, spec, out);
                start = i + 1, alternatives++;
            }
        }
        if (alternatives < 2) fatal("data: '{%.*s}' in '%s' is neither a range {a..b} nor a list {a,b}", body_len, body, spec);
    }
    free(buf);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void add_directory(const char *dir, ShardList *out) {
    DIR *d = opendir(dir);
    if (!d) fatal("data: cannot open directory '%s': %s", dir, strerror(errno));
    int first = out->n;
    struct dirent *e;
    char path[8192];
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".tar") != 0) continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        list_add(out, path);
    }
    closedir(d);
    if (out->n == first) fatal("data: directory '%s' has no .tar files", dir);
    qsort(out->paths + first, (size_t)(out->n - first), sizeof(char *), by_name);
}

void shards_parse(const char *spec, ShardList *list) {
    memset(list, 0, sizeof(*list));
    char *copy = strdup(spec);
    if (!copy) fatal("strdup failed: out of host memory");
    for (char *src = copy; src;) {
        char *sep = strstr(src, "::");
        if (sep) *sep = '\0';
        struct stat st;
        if (!*src) fatal("data: empty source in '%s'", spec);
        if (stat(src, &st) == 0 && S_ISDIR(st.st_mode)) add_directory(src, list);
        else expand_braces(src, spec, list);
        src = sep ? sep + 2 : NULL;
    }
    free(copy);
    for (int i = 0; i < list->n; i++) {
        struct stat st;
        if (stat(list->paths[i], &st) != 0) fatal("data: shard '%s' not found (from '%s')", list->paths[i], spec);
        if (!S_ISREG(st.st_mode)) fatal("data: shard '%s' is not a regular file", list->paths[i]);
    }
}

void shards_free(ShardList *list) {
    for (int i = 0; i < list->n; i++) free(list->paths[i]);
    free(list->paths);
    memset(list, 0, sizeof(*list));
}

// ---------------------------------------------------------------- the plan

// Independent stream ids for (kind, a, b), so that shard order, sample order and augmentation never share
// random numbers.
enum { STREAM_EPOCH = 1, STREAM_RESAMPLE = 2, STREAM_ORDER = 3, STREAM_SAMPLE = 4 };
static uint64_t stream_id(uint64_t kind, uint64_t a, uint64_t b) {
    uint64_t x = kind;
    x = splitmix64(&x) ^ a;
    x = splitmix64(&x) ^ b;
    return splitmix64(&x);
}

void shard_plan_init(ShardPlan *p, int n_shards, uint64_t seed, int rank, int world, PlanMode mode) {
    memset(p, 0, sizeof(*p));
    p->n_shards = n_shards, p->seed = seed, p->rank = rank, p->world = world, p->mode = mode;
    p->per_epoch = rank < n_shards ? (n_shards - rank + world - 1) / world : 0;
    if (mode == PLAN_RESAMPLED) p->per_epoch = p->per_epoch ? p->per_epoch : 1;
    if (mode == PLAN_TRAIN && p->per_epoch == 0)
        fatal("data: %d shards cannot be split over %d ranks (rank %d gets none); use more shards or resampled = true",
              n_shards, world, rank);
    p->perm_epoch = -1;
}

void shard_plan_free(ShardPlan *p) {
    free(p->perm);
    p->perm = NULL;
}

long shard_plan_visit(ShardPlan *p, uint64_t visit) {
    Rng r;
    switch (p->mode) {
        case PLAN_EVAL: return (long)visit < p->per_epoch ? p->rank + (long)visit * p->world : -1;
        case PLAN_RESAMPLED:
            rng_init(&r, p->seed, RNG_DATA, stream_id(STREAM_RESAMPLE, (uint64_t)p->rank, visit));
            return (long)rng_below(&r, (uint64_t)p->n_shards);
        case PLAN_TRAIN: break;
    }
    long epoch = (long)(visit / (uint64_t)p->per_epoch), j = (long)(visit % (uint64_t)p->per_epoch);
    if (epoch != p->perm_epoch) {  // Fisher-Yates over all shards, the same on every rank
        if (!p->perm) p->perm = mallocCheck((size_t)p->n_shards * sizeof(int));
        rng_init(&r, p->seed, RNG_DATA, stream_id(STREAM_EPOCH, (uint64_t)epoch, 0));
        for (int i = 0; i < p->n_shards; i++) p->perm[i] = i;
        for (int i = p->n_shards - 1; i > 0; i--) {
            int k = (int)rng_below(&r, (uint64_t)i + 1), t = p->perm[i];
            p->perm[i] = p->perm[k], p->perm[k] = t;
        }
        p->perm_epoch = epoch;
    }
    return p->perm[p->rank + j * p->world];
}

void shard_plan_order(const ShardPlan *p, uint64_t visit, int n, long buffer, int *order) {
    if (buffer <= 1 || p->mode == PLAN_EVAL) {
        for (int i = 0; i < n; i++) order[i] = i;
        return;
    }
    Rng r;
    rng_init(&r, p->seed, RNG_DATA, stream_id(STREAM_ORDER, (uint64_t)p->rank, visit));
    int cap = buffer < n ? (int)buffer : n, held = 0, out = 0;
    int *buf = mallocCheck((size_t)(cap ? cap : 1) * sizeof(int));
    for (int i = 0; i < n; i++) {
        buf[held++] = i;
        if (held < cap) continue;
        int j = (int)rng_below(&r, (uint64_t)held);
        order[out++] = buf[j], buf[j] = buf[--held];
    }
    while (held > 0) {
        int j = (int)rng_below(&r, (uint64_t)held);
        order[out++] = buf[j], buf[j] = buf[--held];
    }
    free(buf);
}

uint64_t shard_plan_sample_stream(const ShardPlan *p, uint64_t visit, int item) {
    return stream_id(STREAM_SAMPLE, stream_id(STREAM_SAMPLE, (uint64_t)p->rank, visit), (uint64_t)item);
}
