// test_loader.c: the judgement of every fixture sample (each skip reason, image sizes, captions), and the
// threaded loader on the committed shards: eval passes in spec order with a short last batch, the same
// batches for 1 and 3 decode threads, resume from a saved position (also across an epoch and with another
// thread count), disjoint ranks, whole epochs, resampling, the pixel limit, statistics; the synthetic source
// through the same background filling (its draws, its eval pass, resume, a held batch left intact).
// Needs data/bpe_simple_vocab_16e6.txt.gz (scripts/get_vocab.sh); without it the shard tests are skipped.
#include <sys/wait.h>
#include <unistd.h>

#include "../data/loader.h"
#include "../data/sample.h"
#include "../data/synthetic.h"
#include "data_fixtures.h"
#include "test.h"

#define VOCAB "data/bpe_simple_vocab_16e6.txt.gz"
#define TRAIN_SPEC SHARD_DIR "train-{0..3}.tar"
#define TRAIN_GOOD 47  // 4 shards x 12 samples, one zero-byte image
enum { S = 16, T = 16, SAMPLE_BYTES = 3 * S * S + T * 4 };  // one sample in read_batches' output

static Tokenizer *tok;
static ManifestLine *manifest;
static int manifest_n;

static Config test_config(int workers, long buffer, uint64_t seed) {
    Config c;
    config_defaults(&c);
    c.image_size = S, c.context_length = T, c.data_workers = workers, c.shuffle_buffer = buffer, c.seed = seed;
    return c;
}

// Every sample of every fixture shard gets the manifest's verdict: ok with PIL's image size and the
// caption's tokens, or the expected skip reason.
static void test_sample_verdicts(void) {
    if (!tok) SKIP("no vocabulary (%s): run scripts/get_vocab.sh", VOCAB);
    SampleParams p = {tok, S, T, 100000000, IMAGE_ALPHA_DROP, 1};
    SampleScratch scratch = {0};
    uint8_t image[3 * S * S];
    int32_t tokens[T], want[T];
    ShardIndex idx = {0};
    char open_shard[64] = "";
    FILE *f = NULL;
    int s = 0, checked = 0, listed = 0, reasons_seen[SAMPLE_STATUSES] = {0};
    for (int i = 0; i < manifest_n; i++) {
        const ManifestLine *m = &manifest[i];
        if (!strcmp(m->status, "shard_error")) continue;
        listed++;
        if (strcmp(open_shard, m->shard) != 0) {
            if (f) fclose(f);
            char path[256];
            snprintf(path, sizeof(path), SHARD_DIR "%s", m->shard);
            f = fopenCheck(path, "rb");
            tar_index_shard(f, path, &idx);
            snprintf(open_shard, sizeof(open_shard), "%s", m->shard);
            s = 0;
        }
        while (s < idx.n && strcmp(shard_sample_key(&idx, s), m->key) != 0) s++;
        EXPECT(s < idx.n, "%s/%s not found", m->shard, m->key);
        if (s >= idx.n) continue;
        Rng r;
        rng_init(&r, 1, RNG_AUGMENT, (uint64_t)i);
        SampleResult res = sample_load(f, &idx.samples[s], &p, &r, &scratch, image, tokens);
        EXPECT(!strcmp(SAMPLE_STATUS_NAMES[res.status], m->status), "%s/%s: %s (%s), expected %s", m->shard, m->key,
               SAMPLE_STATUS_NAMES[res.status], res.why, m->status);
        reasons_seen[res.status]++;
        if (res.status == SAMPLE_OK && !strcmp(m->status, "ok")) {
            EXPECT(res.width == m->width && res.height == m->height, "%s/%s: %dx%d, PIL %dx%d", m->shard, m->key, res.width, res.height,
                   m->width, m->height);
            tokenizer_encode(tok, m->caption, want, T);
            EXPECT(!memcmp(tokens, want, sizeof(want)), "%s/%s: tokens differ from the caption's", m->shard, m->key);
            EXPECT(res.label == m->label, "%s/%s: label %d, expected %d", m->shard, m->key, res.label, m->label);
        }
        checked++;
    }
    if (f) fclose(f);
    for (int r = 0; r < SAMPLE_STATUSES; r++) EXPECT(reasons_seen[r] > 0, "no fixture sample has status %s", SAMPLE_STATUS_NAMES[r]);
    EXPECT(checked == listed && checked > 50, "%d of the manifest's %d samples checked", checked, listed);
    shard_index_free(&idx);
    sample_scratch_free(&scratch);
}

// Samples that pass the index but not sample_load's own limits: a valid caption over the tokenizer's 64 KiB is
// named as too long (not "empty or not valid UTF-8"); the eval Resize of a strip whose longer side would pass
// 2^31 px (here 1,100,000 x 1 at 2048 px) is a too_large skip, not an int overflow and garbage pixels, while
// training crops it as torchvision does.
static void test_extreme_samples(void) {
    if (!tok) SKIP("no vocabulary");
    enum { BIG = 2048, LONG_CAPTION = 100000 };
    uint8_t *grey = mallocCheck((size_t)3 * 1100000);
    memset(grey, 128, (size_t)3 * 1100000);
    Bytes png = encode_png(grey, 1100000, 1, 3);
    size_t png_len = png.len;
    const char *caption = "a thin strip";
    size_t cap_len = strlen(caption), len = cap_len + LONG_CAPTION + png_len;
    uint8_t *shard = mallocCheck(len);  // short caption, long caption, image: read through spans as from a tar
    memcpy(shard, caption, cap_len);
    for (int i = 0; i < LONG_CAPTION; i++) shard[cap_len + i] = "word "[i % 5];
    memcpy(shard + cap_len + LONG_CAPTION, png.data, png_len);
    FILE *f = fmemopen(shard, len, "rb");
    WdsSample s = {0, {(int64_t)(cap_len + LONG_CAPTION), (int64_t)png_len}, {(int64_t)cap_len, LONG_CAPTION}, {0, -1}};
    SampleParams eval = {tok, BIG, T, 100000000, IMAGE_ALPHA_DROP, 0}, train = eval;
    train.is_train = 1;
    SampleScratch scratch = {0};
    uint8_t *image = mallocCheck((size_t)3 * BIG * BIG);
    int32_t tokens[T];
    Rng r;
    rng_init(&r, 1, RNG_AUGMENT, 0);
    SampleResult res = sample_load(f, &s, &eval, &r, &scratch, image, tokens);
    EXPECT(res.status == SKIP_BAD_CAPTION && strstr(res.why, "100000 bytes"), "long caption: %s (%s)", SAMPLE_STATUS_NAMES[res.status], res.why);
    // the limit itself: a caption of exactly SAMPLE_MAX_CAPTION bytes is the tokenizer's to take, one more byte is not
    s.txt = (TarSpan){(int64_t)cap_len, SAMPLE_MAX_CAPTION};
    res = sample_load(f, &s, &train, &r, &scratch, NULL, tokens);
    EXPECT(res.status == SAMPLE_OK, "caption of exactly %d bytes: %s (%s)", SAMPLE_MAX_CAPTION, SAMPLE_STATUS_NAMES[res.status], res.why);
    s.txt.size = SAMPLE_MAX_CAPTION + 1;
    res = sample_load(f, &s, &train, &r, &scratch, NULL, tokens);
    EXPECT(res.status == SKIP_BAD_CAPTION, "caption of %d bytes: %s (%s)", SAMPLE_MAX_CAPTION + 1, SAMPLE_STATUS_NAMES[res.status], res.why);
    s.txt = (TarSpan){0, (int64_t)cap_len};
    res = sample_load(f, &s, &eval, &r, &scratch, image, tokens);
    EXPECT(res.status == SKIP_TOO_LARGE && res.width == 1100000 && res.height == 1, "eval of the strip: %s (%s)", SAMPLE_STATUS_NAMES[res.status],
           res.why);
    res = sample_load(f, &s, &train, &r, &scratch, image, tokens);
    EXPECT(res.status == SAMPLE_OK && image[0] == 128 && image[3 * BIG * BIG - 1] == 128, "train on the strip: %s (%s), pixels %d %d",
           SAMPLE_STATUS_NAMES[res.status], res.why, image[0], image[3 * BIG * BIG - 1]);
    fclose(f);
    sample_scratch_free(&scratch);
    free(image), free(shard), free(png.data), free(grey);
}

// The `cls` member is a class index only when it is a whole decimal number in [0, 2^31) with nothing after it but
// white space (a line end); anything else is -1 (unlabelled), never a wrong class: '7x', '-1', '', ' ', '2^31'.
static void test_cls_parsing(void) {
    if (!tok) SKIP("no vocabulary");
    const struct {
        const char *text;
        int32_t label;
    } cases[] = {{"7", 7},       {"7\n", 7},         {"0", 0},          {"12 \r\n", 12},        {"2147483647", 2147483647},
                 {"7x", -1},     {"7 8", -1},        {"-1", -1},        {"", -1},               {" ", -1},
                 {"\n", -1},     {"x7", -1},         {"2147483648", -1}, {"4294967303", -1},     {"99999999999999999999", -1},
                 {"3.0", -1},       {"-3", -1}};
    uint8_t grey[3 * 4 * 4];
    memset(grey, 100, sizeof(grey));
    Bytes png = encode_png(grey, 4, 4, 3);
    const char *caption = "a grey square";
    SampleParams p = {tok, S, T, 100000000, IMAGE_ALPHA_DROP, 0};
    SampleScratch scratch = {0};
    uint8_t image[3 * S * S];
    int32_t tokens[T];
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        size_t cap_len = strlen(caption), cls_len = strlen(cases[k].text), len = cap_len + png.len + cls_len;
        uint8_t *buf = mallocCheck(len + 1);
        memcpy(buf, caption, cap_len), memcpy(buf + cap_len, png.data, png.len), memcpy(buf + cap_len + png.len, cases[k].text, cls_len);
        FILE *f = fmemopen(buf, len + 1, "rb");
        WdsSample ws = {0, {(int64_t)cap_len, (int64_t)png.len}, {0, (int64_t)cap_len}, {(int64_t)(cap_len + png.len), (int64_t)cls_len}};
        SampleResult r = sample_load(f, &ws, &p, NULL, &scratch, image, tokens);
        EXPECT(r.status == SAMPLE_OK && r.label == cases[k].label, "cls '%s': %s, label %d, want %d", cases[k].text, SAMPLE_STATUS_NAMES[r.status],
               r.label, cases[k].label);
        fclose(f);
        free(buf);
    }
    sample_scratch_free(&scratch);
    free(png.data);
}

// An eval batch carries each sample's `cls` label (-1 without one), in spec order.
static void test_labels(void) {
    if (!tok) SKIP("no vocabulary");
    Config c = test_config(2, 0, 0);
    Loader *l = loader_open(&c, SHARD_DIR "gnu.tar", 0, 16, 0, 1);
    Batch b;
    int n = loader_next(l, &b), k = 0, labelled = 0;
    for (int i = 0; i < manifest_n; i++)
        if (!strcmp(manifest[i].shard, "gnu.tar") && !strcmp(manifest[i].status, "ok")) {
            EXPECT(k < n && b.labels[k] == manifest[i].label, "sample %d: label %d, expected %d", k, k < n ? b.labels[k] : -2, manifest[i].label);
            labelled += manifest[i].label >= 0, k++;
        }
    EXPECT(n == k && labelled == 1, "%d samples, %d of the manifest's, %d labelled", n, k, labelled);
    loader_close(l);
}

// Reads n batches; returns a malloc'ed concatenation of (images, tokens) and the samples read.
static uint8_t *read_batches(Loader *l, int n, int B, int *samples) {
    uint8_t *out = callocCheck((size_t)n * B, SAMPLE_BYTES);
    *samples = 0;
    Batch b;
    for (int k = 0; k < n; k++) {
        int got = loader_next(l, &b);
        for (int i = 0; i < got; i++) {
            memcpy(out + (size_t)*samples * SAMPLE_BYTES, b.images + (size_t)i * 3 * S * S, (size_t)3 * S * S);
            memcpy(out + (size_t)*samples * SAMPLE_BYTES + 3 * S * S, b.tokens + (size_t)i * T, T * sizeof(int32_t));
            (*samples)++;
        }
        if (!got) break;
    }
    return out;
}

// read_batches of a fresh loader of TRAIN_SPEC (train or eval pass, batches of B, rank of world), closed after.
static uint8_t *load_batches(const Config *c, int is_train, int B, int rank, int world, int n, int *samples) {
    Loader *l = loader_open(c, TRAIN_SPEC, is_train, B, rank, world);
    uint8_t *out = read_batches(l, n, B, samples);
    loader_close(l);
    return out;
}

static int32_t *tokens_of(uint8_t *samples, int i) { return (int32_t *)(samples + (size_t)i * SAMPLE_BYTES + 3 * S * S); }

static void test_eval_pass(void) {
    if (!tok) SKIP("no vocabulary");
    int n1, n3;
    Config c = test_config(1, 0, 0);
    Loader *l = loader_open(&c, TRAIN_SPEC, 0, 5, 0, 1);
    Batch b;
    int sizes[20], batches = 0;
    while (batches < 20 && (sizes[batches] = loader_next(l, &b)) > 0) batches++;
    EXPECT(batches == 10 && sizes[9] == TRAIN_GOOD - 45, "eval pass: %d batches, last %d", batches, batches ? sizes[batches - 1] : 0);
    EXPECT(loader_next(l, &b) == 0, "a finished eval loader returned more");
    LoaderStats st = loader_stats(l);
    EXPECT(st.samples == TRAIN_GOOD && st.skipped == 1 && st.skips[SKIP_EMPTY_MEMBER] == 1, "stats: %ld samples, %ld skipped", st.samples, st.skipped);
    loader_close(l);
    // the same samples in spec order with 1 and 3 threads
    uint8_t *one = load_batches(&c, 0, 5, 0, 1, 20, &n1);
    c.data_workers = 3;
    uint8_t *three = load_batches(&c, 0, 5, 0, 1, 20, &n3);
    EXPECT(n1 == TRAIN_GOOD && n3 == TRAIN_GOOD && !memcmp(one, three, (size_t)n1 * SAMPLE_BYTES), "eval differs with 3 threads");
    int32_t want[T];
    tokenizer_encode(tok, "training sample 0 0", want, T);
    EXPECT(!memcmp(tokens_of(one, 0), want, sizeof(want)), "the first eval sample is not the spec's first");
    tokenizer_encode(tok, "training sample 3 11", want, T);
    EXPECT(!memcmp(tokens_of(one, TRAIN_GOOD - 1), want, sizeof(want)), "the last eval sample is not the spec's last");
    free(one), free(three);
    // a rank with no shard in an eval split ends at once
    l = loader_open(&c, TRAIN_SPEC, 0, 5, 6, 8);
    EXPECT(loader_next(l, &b) == 0, "rank 6 of 8 has no eval shard but got samples");
    loader_close(l);
}

static void test_same_batches_any_thread_count(void) {
    if (!tok) SKIP("no vocabulary");
    int n1, n3;
    Config c = test_config(1, 5, 7);
    uint8_t *one = load_batches(&c, 1, 4, 0, 1, 30, &n1);
    c.data_workers = 3;
    uint8_t *three = load_batches(&c, 1, 4, 0, 1, 30, &n3);
    EXPECT(n1 == 120 && n3 == 120, "train loaders ended: %d %d", n1, n3);
    EXPECT(!memcmp(one, three, (size_t)n1 * SAMPLE_BYTES), "1 and 3 threads give different batches");
    c.seed = 8;
    uint8_t *other = load_batches(&c, 1, 4, 0, 1, 30, &n3);
    EXPECT(memcmp(one, other, (size_t)n1 * SAMPLE_BYTES) != 0, "seeds 7 and 8 give the same batches");
    free(one), free(three), free(other);
}

// The first epoch holds every good sample once, shuffled; later epochs reshuffle.
static void test_epochs(void) {
    if (!tok) SKIP("no vocabulary");
    int n, eval_n;
    Config c = test_config(2, 4, 3);
    uint8_t *eval = load_batches(&c, 0, TRAIN_GOOD, 0, 1, 1, &eval_n);
    uint8_t *train = load_batches(&c, 1, TRAIN_GOOD, 0, 1, 2, &n);
    int in_order = 0;
    for (int i = 0; i < TRAIN_GOOD; i++) {
        int found = 0;
        for (int j = 0; j < TRAIN_GOOD; j++) found += !memcmp(tokens_of(train, i), tokens_of(eval, j), T * 4);
        EXPECT(found == 1, "epoch 0 sample %d matches %d eval samples", i, found);
        in_order += !memcmp(tokens_of(train, i), tokens_of(eval, i), T * 4);
    }
    EXPECT(in_order < TRAIN_GOOD / 2, "the training order is the spec order (%d in place)", in_order);
    size_t epoch_bytes = (size_t)TRAIN_GOOD * SAMPLE_BYTES;
    EXPECT(n == 2 * TRAIN_GOOD && memcmp(train, train + epoch_bytes, epoch_bytes) != 0, "epochs 0 and 1 are identical");
    free(eval), free(train);
}

typedef struct {
    Config c;
    const char *state;
} RestoreArgs;

static void restore_in_child(void *arg) {
    RestoreArgs *a = arg;
    loader_restore(loader_open(&a->c, TRAIN_SPEC, 1, 4, 0, 1), a->state);
}

static void test_resume(void) {
    if (!tok) SKIP("no vocabulary");
    int n_ref, n_resumed, n_head;
    Config c = test_config(2, 6, 11);
    // 5 batches of 4, then 10 more: the continuation crosses the end of the first epoch (47 samples)
    Loader *l = loader_open(&c, TRAIN_SPEC, 1, 4, 0, 1);
    uint8_t *head = read_batches(l, 5, 4, &n_head);
    char state[256];
    loader_get_state(l, state, sizeof(state));
    uint8_t *ref = read_batches(l, 10, 4, &n_ref);
    loader_close(l);
    for (int workers = 1; workers <= 3; workers += 2) {
        c.data_workers = workers;
        l = loader_open(&c, TRAIN_SPEC, 1, 4, 0, 1);
        loader_restore(l, state);
        uint8_t *resumed = read_batches(l, 10, 4, &n_resumed);
        loader_close(l);
        EXPECT(n_ref == 40 && n_resumed == 40 && !memcmp(ref, resumed, (size_t)n_ref * SAMPLE_BYTES),
               "resumed with %d threads from '%s': batches differ", workers, state);
        free(resumed);
    }
    free(head), free(ref);
    // a position saved with other data settings (here the seed) is refused with a message
    char msg[2048];
    RestoreArgs args = {c, state};
    args.c.seed = 12;
    int rc = test_in_child(restore_in_child, &args, msg, sizeof(msg));
    EXPECT(rc > 0 && strstr(msg, "other data settings"), "restore with another seed: exit %d, '%s'", rc, msg);
}

static void test_ranks_disjoint(void) {
    if (!tok) SKIP("no vocabulary");
    int n0, n1;
    Config c = test_config(2, 3, 5);
    uint8_t *r0 = load_batches(&c, 1, 20, 0, 2, 1, &n0);
    uint8_t *r1 = load_batches(&c, 1, 20, 1, 2, 1, &n1);
    int shared = 0;
    for (int i = 0; i < n0; i++)
        for (int j = 0; j < n1; j++) shared += !memcmp(tokens_of(r0, i), tokens_of(r1, j), T * 4);
    EXPECT(n0 == 20 && n1 == 20 && shared == 0, "ranks share %d of their first 20 samples", shared);
    free(r0), free(r1);
}

static void test_resampled(void) {
    if (!tok) SKIP("no vocabulary");
    int n, again_n;
    Config c = test_config(2, 4, 9);
    c.resampled = 1;
    Loader *l = loader_open(&c, TRAIN_SPEC, 1, 8, 0, 1);
    uint8_t *a = read_batches(l, 12, 8, &n);
    char state[256];
    loader_get_state(l, state, sizeof(state));
    loader_close(l);
    uint8_t *b = load_batches(&c, 1, 8, 0, 1, 12, &again_n);
    EXPECT(n == 96 && again_n == 96 && !memcmp(a, b, (size_t)n * SAMPLE_BYTES), "resampled runs differ");
    EXPECT(strstr(state, "resampled=1") != NULL, "state '%s'", state);
    free(a), free(b);
}

static void test_limits_and_stats(void) {
    if (!tok) SKIP("no vocabulary");
    Config c = test_config(2, 0, 0);
    c.max_image_pixels = 20 * 20;  // the fixture images are 12-32 px a side
    Loader *l = loader_open(&c, TRAIN_SPEC, 0, 8, 0, 1);
    Batch b;
    while (loader_next(l, &b) > 0) {}
    LoaderStats st = loader_stats(l);
    EXPECT(st.skips[SKIP_TOO_LARGE] > 5 && st.samples > 5 && st.samples + st.skipped == 48, "pixel limit: %ld samples, %ld too large",
           st.samples, st.skips[SKIP_TOO_LARGE]);
    EXPECT(st.images_per_s > 0, "no decode rate");
    char line[512];
    loader_stats_format(&st, line, sizeof(line));
    EXPECT(strstr(line, "too_large") && strstr(line, "empty_member 1"), "stats line '%s'", line);
    loader_close(l);
    c = test_config(3, 0, 0);
    l = loader_open(&c, SHARD_DIR "bad.tar::" SHARD_DIR "truncated.tar::" SHARD_DIR "badchecksum.tar", 0, 4, 0, 1);
    while (loader_next(l, &b) > 0) {}
    st = loader_stats(l);
    EXPECT(st.samples == 2 + 3 + 2 && st.skipped == 12 && st.bad_shards == 2, "bad shards: %ld samples %ld skipped %ld bad shards", st.samples,
           st.skipped, st.bad_shards);
    EXPECT(st.skips[SKIP_CORRUPT_IMAGE] == 3 && st.skips[SKIP_BAD_CAPTION] == 3 && st.skips[SKIP_EMPTY_MEMBER] == 2 &&
               st.skips[SKIP_TOO_LARGE] == 1 && st.skips[SKIP_UNSUPPORTED] == 1,
           "skips by reason");
    loader_close(l);
}

// The synthetic source is filled by a background thread like the shards: an eval pass yields the pool in
// order (sample k = synthetic_sample(seed, k)) with a short last batch, then 0; a train stream is the same
// for any thread count and resumes exactly; the batch handed out is not touched while the next one is drawn.
static void test_synthetic_source(void) {
    enum { B = 8, POOL = 50 };
    Config c = test_config(3, 0, 7);
    c.synthetic_size = POOL;
    size_t img = (size_t)3 * S * S;
    uint8_t want_img[3 * S * S];
    int32_t want_tok[T];
    Loader *ev = loader_open(&c, "synthetic", 0, B, 0, 1);
    Batch b;
    int seen = 0, n, batches = 0, wrong = 0;
    while ((n = loader_next(ev, &b)) > 0) {
        for (int i = 0; i < n; i++) {
            synthetic_sample(c.seed, (uint64_t)(seen + i), S, T, c.vocab_size, want_img, want_tok);
            wrong += memcmp(b.images + i * img, want_img, img) != 0 || memcmp(b.tokens + i * T, want_tok, sizeof(want_tok)) != 0;
        }
        seen += n, batches++;
        EXPECT(n == B || seen == POOL, "batch %d has %d samples", batches, n);
    }
    EXPECT(seen == POOL && batches == (POOL + B - 1) / B, "eval pass: %d samples in %d batches", seen, batches);
    EXPECT(wrong == 0, "%d eval samples differ from synthetic_sample", wrong);
    EXPECT(loader_next(ev, &b) == 0, "an ended eval pass stays ended");
    EXPECT(loader_stats(ev).samples == POOL, "stats count %ld samples", loader_stats(ev).samples);
    loader_close(ev);

    // train: 6 batches with 3 threads; the same with 1 thread after restoring the position after batch 2
    enum { N = 6 };
    uint8_t *imgs = mallocCheck(N * B * img);
    int32_t *toks = mallocCheck(N * B * T * sizeof(int32_t));
    char state[128] = "";
    Loader *tr = loader_open(&c, "synthetic", 1, B, 1, 2);
    for (int k = 0; k < N; k++) {
        EXPECT(loader_next(tr, &b) == B, "train batch %d is full", k);
        memcpy(imgs + k * B * img, b.images, B * img);
        memcpy(toks + k * B * T, b.tokens, B * T * sizeof(int32_t));
        if (k == 1) loader_get_state(tr, state, sizeof(state));
        if (k == 3) {  // the filling thread draws the next batch meanwhile; this one must stay as it was
            usleep(50000);
            EXPECT(memcmp(b.images, imgs + k * B * img, B * img) == 0, "the held batch changed while the next was drawn");
        }
    }
    loader_close(tr);
    c.data_workers = 1;
    Loader *re = loader_open(&c, "synthetic", 1, B, 1, 2);
    loader_restore(re, state);
    int differ = 0;
    for (int k = 2; k < N; k++) {
        loader_next(re, &b);
        differ += memcmp(b.images, imgs + k * B * img, B * img) != 0 || memcmp(b.tokens, toks + k * B * T, B * T * sizeof(int32_t)) != 0;
    }
    EXPECT(differ == 0, "%d of %d batches differ after restoring '%s' with another thread count", differ, N - 2, state);
    loader_close(re);
    free(imgs);
    free(toks);
}

// ./train_clip --inspect-data: stdout is one line per usable sample in spec order, key<TAB>WxH (as stored)<TAB>caption
// (tabs and line ends made spaces), against the manifest; then the totals line with each skip reason and the damaged
// shards. --limit N stops after N usable samples; the config's pixel limit applies; no usable sample is exit status 1.
static void test_inspect_data(void) {
    if (!tok) SKIP("no vocabulary");
    const char *shards[] = {"gnu.tar", "bad.tar", "truncated.tar"};
    char want[8192] = "", cmd[1024], *out = mallocCheck(1 << 16);
    size_t len = 0;
    int lines = 0;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < manifest_n; i++) {
            const ManifestLine *m = &manifest[i];
            if (strcmp(m->shard, shards[s]) != 0 || strcmp(m->status, "ok") != 0) continue;
            char caption[512];
            snprintf(caption, sizeof(caption), "%s", m->caption);
            for (char *q = caption; *q; q++)
                if (*q == '\t' || *q == '\n' || *q == '\r') *q = ' ';
            len += (size_t)snprintf(want + len, sizeof(want) - len, "%s\t%dx%d\t%s\n", m->key, m->width, m->height, caption);
            lines++;
        }
    const char *totals = "samples: 11 skipped: 12 corrupt_image: 3 bad_caption: 3 missing_image: 1 missing_caption: 1 too_large: 1 "
                         "empty_member: 2 unsupported: 1 bad_shards: 1\n";
    EXPECT(lines == 11, "the manifest has %d usable samples in these shards, want 11", lines);
    snprintf(cmd, sizeof(cmd), "./train_clip --inspect-data '" SHARD_DIR "gnu.tar::" SHARD_DIR "bad.tar::" SHARD_DIR "truncated.tar' 2>/dev/null");
    int rc = run_command(cmd, out, 1 << 16);
    size_t body = strlen(want);
    EXPECT(rc == 0 && !strncmp(out, want, body) && !strcmp(out + (strncmp(out, want, body) ? 0 : body), totals),
           "--inspect-data: rc %d, output\n%s\nwant\n%s%s", rc, out, want, totals);
    // --limit 4: the first 4 usable lines (all from gnu.tar), nothing judged after them
    char *fourth = want;
    for (int k = 0; k < 4; k++) fourth = strchr(fourth, '\n') + 1;
    snprintf(cmd, sizeof(cmd), "./train_clip --inspect-data '" SHARD_DIR "gnu.tar::" SHARD_DIR "bad.tar' --limit 4 2>/dev/null");
    rc = run_command(cmd, out, 1 << 16);
    size_t head = (size_t)(fourth - want);
    EXPECT(rc == 0 && !strncmp(out, want, head) && !strncmp(out + head, "samples: 4 skipped: 0 ", 22), "--limit 4: rc %d, output\n%s", rc, out);
    // the config's pixel limit: every image is over 1 pixel, so nothing is usable and the exit status is 1
    snprintf(cmd, sizeof(cmd), "./train_clip --inspect-data '" SHARD_DIR "gnu.tar' --set max_image_pixels=1 2>/dev/null");
    rc = run_command(cmd, out, 1 << 16);
    EXPECT(rc == 1 && strstr(out, "samples: 0 skipped: 6 ") == out && strstr(out, " too_large: 6 "), "max_image_pixels = 1: rc %d, '%s'", rc, out);
    free(out);
}

// synthetic_sample against its caption, with the names, colours and token ids written out here: tokens are SOT
// (vocab - 2), colour 1 + c and shape 9 + s for each object named, EOT (vocab - 1), then zeros, truncated to keep EOT
// last and nothing written past T; each named (non-grey) colour is in the picture with its exact RGB in planes R, G, B,
// and the objects are named left to right (their pixels' mean x increases, up to occlusion).
static void test_synthetic_content(void) {
    enum { SS = 32, TT = 16, V = 49408, SAMPLES = 300 };
    const char *colors[8] = {"red", "green", "blue", "yellow", "white", "black", "orange", "purple"};
    const char *shapes[4] = {"square", "disc", "bar", "triangle"};
    const uint8_t rgb[8][3] = {{220, 30, 30}, {30, 180, 40}, {30, 60, 220}, {230, 220, 40}, {245, 245, 245}, {15, 15, 15}, {240, 140, 20}, {140, 40, 180}};
    uint8_t image[3 * SS * SS];
    int32_t tokens[TT + 1];
    int bad_tokens = 0, bad_colors = 0, ordered = 0, orderable = 0, truncated_ok = 0, truncated = 0;
    for (int idx = 0; idx < SAMPLES; idx++) {
        char caption[256];
        synthetic_caption(3, (uint64_t)idx, SS, caption, sizeof(caption));
        int color[3], shape[3], n = 0;
        for (char *w = strtok(caption, " "); w && n < 3; w = strtok(NULL, " ")) {
            int c = -1, sh = -1;
            for (int k = 0; k < 8; k++) c = strcmp(w, colors[k]) ? c : k;
            char *w2 = strtok(NULL, " ");
            for (int k = 0; w2 && k < 4; k++) sh = strcmp(w2, shapes[k]) ? sh : k;
            if (c < 0 || sh < 0) break;
            color[n] = c, shape[n++] = sh;
        }
        EXPECT(n >= 1, "sample %d: caption not read", idx);
        tokens[TT] = 12345;
        synthetic_sample(3, (uint64_t)idx, SS, TT, V, image, tokens);
        int32_t want[TT] = {V - 2};
        for (int k = 0; k < n; k++) want[1 + 2 * k] = 1 + color[k], want[2 + 2 * k] = 9 + shape[k];
        want[1 + 2 * n] = V - 1;
        bad_tokens += memcmp(tokens, want, sizeof(want)) != 0 || tokens[TT] != 12345;
        // T = 4: SOT, two words, EOT; nothing past tokens[3]
        tokens[4] = 12345;
        synthetic_sample(3, (uint64_t)idx, SS, 4, V, image, tokens);
        if (n >= 2) truncated++, truncated_ok += tokens[0] == V - 2 && tokens[1] == 1 + color[0] && tokens[2] == 9 + shape[0] && tokens[3] == V - 1 && tokens[4] == 12345;
        double mean_x[3];
        int distinct = 1;
        for (int k = 0; k < n; k++) {
            long sum = 0, count = 0;
            for (int y = 0; y < SS; y++)
                for (int x = 0; x < SS; x++) {
                    const uint8_t *c = rgb[color[k]];
                    if (image[y * SS + x] == c[0] && image[SS * SS + y * SS + x] == c[1] && image[2 * SS * SS + y * SS + x] == c[2]) sum += x, count++;
                }
            if (color[k] != 4 && color[k] != 5) bad_colors += count == 0;  // white and black are grey like the noise
            mean_x[k] = count ? (double)sum / count : -1;
            distinct &= color[k] != 4 && color[k] != 5 && count > 0;
            for (int j = 0; j < k; j++) distinct &= color[j] != color[k];
        }
        if (n >= 2 && distinct) {
            orderable++;
            int up = 1;
            for (int k = 1; k < n; k++) up &= mean_x[k] >= mean_x[k - 1];
            ordered += up;
        }
    }
    EXPECT(bad_tokens == 0, "%d of %d samples' tokens differ from their caption's", bad_tokens, SAMPLES);
    EXPECT(truncated > 0 && truncated_ok == truncated, "T = 4: %d of %d truncated samples right", truncated_ok, truncated);
    EXPECT(bad_colors <= SAMPLES / 50, "%d named colours missing from their pictures (an object hidden by later ones: a few)", bad_colors);
    EXPECT(orderable > 50 && ordered >= 0.9 * orderable, "objects named left to right in %d of %d pictures", ordered, orderable);
}

// images_normalize: (x / 255 - mean[c]) / std[c] per channel plane of (B, 3, S, S), with open_clip's mean and std
// written out here, on every channel of two 16x16 images.
static void test_images_normalize(void) {
    enum { B = 2, S = 16 };
    const double mean[3] = {0.48145466, 0.4578275, 0.40821073}, std[3] = {0.26862954, 0.26130258, 0.27577711};
    uint8_t in[B * 3 * S * S];
    float out[B * 3 * S * S];
    for (int i = 0; i < B * 3 * S * S; i++) in[i] = (uint8_t)(i * 7 + i / (S * S));
    images_normalize(in, out, B, S);
    double worst = 0;
    for (int i = 0; i < B * 3 * S * S; i++) {
        int c = i / (S * S) % 3;
        worst = fmax(worst, fabs(out[i] - (in[i] / 255.0 - mean[c]) / std[c]));
    }
    EXPECT(worst < 1e-5, "normalised pixels differ from (x / 255 - mean) / std by up to %.2e", worst);
}

int main(void) {
    if (access(VOCAB, R_OK) == 0) tok = tokenizer_load(VOCAB);
    manifest_n = read_manifest(&manifest);
    RUN(test_images_normalize);
    RUN(test_sample_verdicts);
    RUN(test_extreme_samples);
    RUN(test_eval_pass);
    RUN(test_labels);
    RUN(test_cls_parsing);
    RUN(test_same_batches_any_thread_count);
    RUN(test_epochs);
    RUN(test_resume);
    RUN(test_ranks_disjoint);
    RUN(test_resampled);
    RUN(test_limits_and_stats);
    RUN(test_synthetic_source);
    RUN(test_synthetic_content);
    RUN(test_inspect_data);
    if (tok) tokenizer_free(tok);
    free(manifest);
    TEST_EXIT();
}
