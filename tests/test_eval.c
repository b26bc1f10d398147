// test_eval.c: the evaluation metrics on hand-made features with known answers: zero-shot top-1/top-5
// (ties count against the true class), retrieval recall at 1/5/10 in both directions, the class-name
// file reader, and the zero-shot classifier's prompt filling and averaging on the tiny CPU model.
#include <math.h>

#include "../model/eval.h"
#include "../model/safetensors.h"
#include "../data/synthetic.h"
#include "../model/ops_cpu.h"
#include "../model/utils.h"
#include "data_fixtures.h"
#include "test.h"

enum { E = 8 };

static void unit(float *x, int k) {
    memset(x, 0, E * sizeof(float));
    x[k] = 1;
}

static void test_zeroshot_accuracy_counts(void) {
    float classes[6 * E], img[4 * E];
    for (int c = 0; c < 6; c++) unit(classes + c * E, c);
    // image 0: exactly class 2 (top-1 hit); image 1: nearest class 0, true class 3 is 2nd (top-5 only);
    // image 2: true class 5 at a tie with class 1 (a miss at top-1); image 3: unlabelled (skipped)
    unit(img, 2);
    unit(img + E, 0), img[E + 3] = 0.5f;
    unit(img + 2 * E, 1), img[2 * E + 5] = 1;
    unit(img + 3 * E, 4);
    int32_t labels[4] = {2, 3, 5, -1};
    ZeroShotResult r = {0, 0, 0, 0, 0, 0};
    long seen[6] = {0}, hit[6] = {0};
    zeroshot_accuracy(&r, seen, hit, img, labels, 4, classes, 6, E);
    EXPECT(r.n == 3 && r.top1 == 1 && r.top5 == 3 && r.unlabelled == 1, "n %ld top1 %g top5 %g unlabelled %ld, want 3 1 3 1", r.n, r.top1,
           r.top5, r.unlabelled);
    EXPECT(seen[2] == 1 && hit[2] == 1 && seen[3] == 1 && hit[3] == 0 && seen[5] == 1 && hit[5] == 0 && seen[4] == 0,
           "per-class counts wrong");
}

static void test_retrieval_recall(void) {
    enum { N = 12 };
    float img[N * E], txt[N * E];
    // pair i lies on axis i % 8: pairs 0..3 and 8..11 share their axes, pairs 4..7 are unique
    for (int i = 0; i < N; i++) unit(img + i * E, i % E), unit(txt + i * E, i % E);
    RetrievalResult r;
    memset(&r, 0, sizeof(r));
    retrieval_recall(&r, img, txt, N, E);
    // images 0..3 share their axis with images 8..11: for those, the true text ties with another -> rank 1
    // (ties count against), so R@1 = 4/12 (images 4..7 are unique) and R@5 = R@10 = 1
    EXPECT(fabs(r.image_to_text[0] - 4.0 / 12) < 1e-12 && r.image_to_text[1] == 1 && r.image_to_text[2] == 1,
           "i2t recall %g %g %g", r.image_to_text[0], r.image_to_text[1], r.image_to_text[2]);
    EXPECT(fabs(r.text_to_image[0] - 4.0 / 12) < 1e-12 && r.n == N, "t2i R@1 %g n %ld", r.text_to_image[0], r.n);
}

static void normalize(float *x, int n) {
    double ss = 0;
    for (int k = 0; k < n; k++) ss += (double)x[k] * x[k];
    for (int k = 0; k < n; k++) x[k] /= (float)sqrt(ss);
}

// The classifier of the tiny CPU model: per class, the normalised mean of the normalised embeddings of
// its filled-in prompts (3 prompts with a model batch of 2: the prompts go in two calls).
static void test_classifier_averages_templates(void) {
    Config c;
    config_defaults(&c);
    config_load_file(&c, "configs/tiny.conf");
    config_set(&c, "batch_size=2", 1);
    config_set(&c, "device=cpu", 2);
    config_finalize(&c);
    ClipModel m;
    clip_model_init(&m, &c, DEVICE_CPU);
    Tokenizer *tok = tokenizer_load(NULL);
    // class 1 lists two alternative names: its embedding averages the prompts of both
    char *names[2] = {"wasp", "house|home"}, *templates[3] = {"a photo of a {}.", "{}", "clip art of a"};
    float *cls = zeroshot_classifier(&m, tok, names, 2, templates, 3);
    int E = c.embed_dim, T = c.context_length;
    const char *alternatives[2][2] = {{"wasp", NULL}, {"house", "home"}};
    for (int k = 0; k < 2; k++) {
        float *want = callocCheck((size_t)E, sizeof(float)), *f = mallocCheck((size_t)E * sizeof(float));
        int32_t *ids = mallocCheck((size_t)T * sizeof(int32_t));
        int A = alternatives[k][1] ? 2 : 1;
        for (int a = 0; a < A; a++) {
            const char *name = alternatives[k][a];
            char text[3][64];
            snprintf(text[0], 64, "a photo of a %s.", name), snprintf(text[1], 64, "%s", name), snprintf(text[2], 64, "clip art of a %s", name);
            for (int t = 0; t < 3; t++) {
                tokenizer_encode(tok, text[t], ids, T);
                clip_model_encode_texts(&m, ids, 1, f);
                normalize(f, E);
                for (int i = 0; i < E; i++) want[i] += f[i] / (3 * A);
            }
        }
        normalize(want, E);
        EXPECT(rel_err(cls + k * E, want, E) < 1e-5, "class %s embedding differs (rel err %.2e)", names[k], rel_err(cls + k * E, want, E));
        free(want), free(f), free(ids);
    }
    free(cls);
    tokenizer_free(tok);
    clip_model_free(&m);
}

// Non-finite features (a diverged model, an overflow) score NaN against everything: the true match must count as a
// miss, not as the top hit (NaN >= x is false, so a rank counted by ">=" came out 0: 100% top-1 and R@1).
static void test_nan_features_are_misses(void) {
    float classes[3 * E], img[2 * E], txt[2 * E];
    for (int c = 0; c < 3; c++) unit(classes + c * E, c);
    for (int k = 0; k < 2 * E; k++) img[k] = NAN, txt[k] = NAN;
    int32_t labels[2] = {0, 1};
    ZeroShotResult r = {0, 0, 0, 0, 0, 0};
    long seen[3] = {0}, hit[3] = {0};
    zeroshot_accuracy(&r, seen, hit, img, labels, 2, classes, 3, E);
    EXPECT(r.n == 2 && r.top1 == 0 && hit[0] == 0 && hit[1] == 0, "NaN images: top-1 hits %g of %ld, want 0", r.top1, r.n);
    RetrievalResult rr;
    memset(&rr, 0, sizeof(rr));
    retrieval_recall(&rr, img, txt, 2, E);
    EXPECT(rr.image_to_text[0] == 0 && rr.text_to_image[0] == 0, "NaN features: R@1 %g / %g, want 0", rr.image_to_text[0],
           rr.text_to_image[0]);
}

// The tiny CPU model with a given eval batch (and the loader settings the eval tests use).
static void tiny_model(Config *c, ClipModel *m, int batch, const char *extra) {
    config_defaults(c);
    config_load_file(c, "configs/tiny.conf");
    char kv[64];
    snprintf(kv, sizeof(kv), "batch_size=%d", batch);
    config_set(c, kv, 1);
    config_set(c, "device=cpu", 2);
    config_set(c, "data_workers=2", 3);
    if (extra) config_set(c, extra, 4);
    config_finalize(c);
    clip_model_init(m, c, DEVICE_CPU);
}

// The retrieval metrics against a brute-force reference: every pair encoded alone, recall from the full
// similarity matrix with ties against the true match, and the validation loss as open_clip's evaluate()
// computes it: each batch's contrastive loss weighted by its pairs (a last batch of one pair has loss 0 and
// must not weigh as much as a full batch). 5 synthetic pairs in eval batches of 4: batches of 4 and 1.
static void test_retrieval_against_reference(void) {
    Config c;
    ClipModel m;
    tiny_model(&c, &m, 4, "synthetic_size=5");
    int N = 5, E = c.embed_dim, S = c.image_size, T = c.context_length;
    Loader *l = loader_open(&c, "synthetic", 0, 4, 0, 1);
    RetrievalResult r = eval_retrieval(&m, l, 0);
    loader_close(l);
    // the reference: the same pairs, one at a time
    float *img = mallocCheck((size_t)N * E * sizeof(float)), *txt = mallocCheck((size_t)N * E * sizeof(float));
    uint8_t *image = mallocCheck((size_t)3 * S * S);
    int32_t *ids = mallocCheck((size_t)T * sizeof(int32_t));
    for (int i = 0; i < N; i++) {
        synthetic_sample(c.seed, (uint64_t)i, S, T, c.vocab_size, image, ids);
        clip_model_encode_images(&m, image, 1, img + (size_t)i * E);
        clip_model_encode_texts(&m, ids, 1, txt + (size_t)i * E);
    }
    float ls = clip_model_logit_scale(&m);
    double loss = (4 * contrastive_loss(img, txt, ls, 4, E, NULL, NULL, NULL) + 1 * contrastive_loss(img + 4 * E, txt + 4 * E, ls, 1, E, NULL, NULL, NULL)) / N;
    for (int i = 0; i < N; i++) normalize(img + (size_t)i * E, E), normalize(txt + (size_t)i * E, E);
    double want[2][3] = {{0}};
    for (int dir = 0; dir < 2; dir++)
        for (int i = 0; i < N; i++) {
            const float *q = dir ? txt : img, *keys = dir ? img : txt;
            double s[5];
            for (int j = 0; j < N; j++) {
                s[j] = 0;
                for (int k = 0; k < E; k++) s[j] += (double)q[(size_t)i * E + k] * keys[(size_t)j * E + k];
            }
            int above = 0;
            for (int j = 0; j < N; j++) above += j != i && !(s[j] < s[i]);
            for (int k = 0; k < 3; k++) want[dir][k] += (above < (int[]){1, 5, 10}[k]) / (double)N;
        }
    EXPECT(r.n == N, "pairs %ld, want %d", r.n, N);
    EXPECT(fabs(r.loss - loss) < 1e-4 * loss, "val loss %.6f, want %.6f (open_clip: each batch's loss weighted by its pairs)", r.loss, loss);
    for (int k = 0; k < 3; k++)
        EXPECT(fabs(r.image_to_text[k] - want[0][k]) < 1e-12 && fabs(r.text_to_image[k] - want[1][k]) < 1e-12,
               "R@%d %g/%g, want %g/%g", (int[]){1, 5, 10}[k], r.image_to_text[k], r.text_to_image[k], want[0][k], want[1][k]);
    // val_max_pairs = 3 cuts the first batch of 4 to its first 3 pairs
    l = loader_open(&c, "synthetic", 0, 4, 0, 1);
    RetrievalResult r3 = eval_retrieval(&m, l, 3);
    loader_close(l);
    double loss3 = contrastive_loss(img, txt, ls, 3, E, NULL, NULL, NULL);
    EXPECT(r3.n == 3 && fabs(r3.loss - loss3) < 1e-4 * loss3, "max_pairs 3: %ld pairs, loss %.6f; want 3, %.6f", r3.n, r3.loss, loss3);
    free(img), free(txt), free(image), free(ids);
    clip_model_free(&m);
}

// A shard of n samples: sample i has a random w x w PNG (corrupt bytes where bad[i]), a caption, and a `cls`
// member holding cls[i] (none where cls[i] is NULL).
static void write_shard(const char *path, int n, const char *const *cls, const int *bad) {
    FILE *f = fopenCheck(path, "wb");
    uint64_t state = 12345;
    for (int i = 0; i < n; i++) {
        int w = 20 + 7 * i;
        uint8_t *rgb = mallocCheck((size_t)w * w * 3);
        for (int k = 0; k < w * w * 3; k++) state = state * 6364136223846793005ULL + 1442695040888963407ULL, rgb[k] = (uint8_t)(state >> 56);
        Bytes png = encode_png(rgb, w, w, 3);
        char name[64], caption[64];
        snprintf(name, sizeof(name), "%06d.png", i);
        if (bad && bad[i]) tar_member(f, name, "not an image at all", 19);
        else tar_member(f, name, png.data, png.len);
        snprintf(name, sizeof(name), "%06d.txt", i), snprintf(caption, sizeof(caption), "a picture number %d", i);
        tar_member(f, name, caption, strlen(caption));
        if (cls && cls[i]) snprintf(name, sizeof(name), "%06d.cls", i), tar_member(f, name, cls[i], strlen(cls[i]));
        free(rgb), free(png.data);
    }
    static const char end[1024];
    fwriteCheck(end, 1, sizeof(end), f);
    fcloseCheck(f);
}

// Zero-shot top-1/top-5/per-class on shards against a reference that encodes the labelled images one at a time
// and ranks each image's true class among all (ties against it). The eval batch (4) is larger than the last
// batch and than the second shard; samples with no, a negative or a non-numeric `cls` are counted, not evaluated.
static void test_zeroshot_against_reference(void) {
    Config c;
    ClipModel m;
    tiny_model(&c, &m, 4, NULL);
    int E = c.embed_dim;
    const char *cls0[7] = {"0", "1", "2\n", NULL, "-1", "abc", "1"}, *cls1[1] = {"2"};
    int bad0[7] = {0, 0, 0, 0, 0, 0, 0};
    write_shard(test_path("zs-0.tar"), 7, cls0, bad0);
    write_shard(test_path("zs-1.tar"), 1, cls1, NULL);
    char spec[1024];
    snprintf(spec, sizeof(spec), "%s::%s", test_path("zs-0.tar"), test_path("zs-1.tar"));
    Tokenizer *tok = tokenizer_load(NULL);
    char *names[6] = {"cat", "dog|puppy", "car", "tree", "boat", "house"}, *templates[2] = {"a photo of a {}.", "art of"};
    float *classifier = zeroshot_classifier(&m, tok, names, 6, templates, 2);
    Loader *l = loader_open(&c, spec, 0, 4, 0, 1);
    ZeroShotResult r = eval_zeroshot(&m, classifier, 6, l);
    loader_close(l);
    // the reference: one image per batch
    l = loader_open(&c, spec, 0, 1, 0, 1);
    Batch b;
    float *f = mallocCheck((size_t)E * sizeof(float));
    double top1 = 0, top5 = 0, seen[6] = {0}, hit[6] = {0};
    int n = 0, labelled = 0;
    while (loader_next(l, &b) == 1) {
        n++;
        if (b.labels[0] < 0) continue;
        labelled++;
        clip_model_encode_images(&m, b.images, 1, f);
        normalize(f, E);
        double s[6];
        for (int k = 0; k < 6; k++) {
            s[k] = 0;
            for (int e = 0; e < E; e++) s[k] += (double)f[e] * classifier[k * E + e];
        }
        int above = 0, y = b.labels[0];
        for (int k = 0; k < 6; k++) above += k != y && !(s[k] < s[y]);
        top1 += above < 1, top5 += above < 5, seen[y]++, hit[y] += above < 1;
    }
    loader_close(l);
    double per_class = 0, majority = 0;
    int present = 0;
    for (int k = 0; k < 6; k++) {
        majority = fmax(majority, seen[k]);
        if (seen[k]) per_class += hit[k] / seen[k], present++;
    }
    EXPECT(n == 8 && labelled == 5, "reference: %d samples, %d labelled; want 8 and 5", n, labelled);
    EXPECT(r.n == 5 && r.unlabelled == 3, "evaluated %ld images, %ld counted as unlabelled; want 5 and 3", r.n, r.unlabelled);
    EXPECT(fabs(r.top1 - top1 / 5) < 1e-12 && fabs(r.top5 - top5 / 5) < 1e-12, "top-1/5 %g/%g, want %g/%g", r.top1, r.top5, top1 / 5, top5 / 5);
    EXPECT(fabs(r.per_class - per_class / present) < 1e-12 && fabs(r.majority - majority / 5) < 1e-12, "per-class %g majority %g, want %g %g",
           r.per_class, r.majority, per_class / present, majority / 5);
    // the untrained model may hit nothing (per-class 0 whatever it divides by): again with a classifier whose row k
    // is the first class-k image's own feature (that image is a hit) and zero rows for the absent classes 3..5,
    // so the mean over the 3 present classes is above 0 and differs from a mean over all 6
    float *rows = callocCheck((size_t)6 * E, sizeof(float));
    l = loader_open(&c, spec, 0, 1, 0, 1);
    while (loader_next(l, &b) == 1)
        if (b.labels[0] >= 0 && rows[b.labels[0] * E] == 0) clip_model_encode_images(&m, b.images, 1, rows + b.labels[0] * E), normalize(rows + b.labels[0] * E, E);
    loader_close(l);
    l = loader_open(&c, spec, 0, 4, 0, 1);
    r = eval_zeroshot(&m, rows, 6, l);
    loader_close(l);
    l = loader_open(&c, spec, 0, 1, 0, 1);
    memset(seen, 0, sizeof(seen)), memset(hit, 0, sizeof(hit));
    while (loader_next(l, &b) == 1) {
        int y = b.labels[0], above = 0;
        if (y < 0) continue;
        clip_model_encode_images(&m, b.images, 1, f);
        normalize(f, E);
        double s[6] = {0};
        for (int k = 0; k < 6; k++)
            for (int e = 0; e < E; e++) s[k] += (double)f[e] * rows[k * E + e];
        for (int k = 0; k < 6; k++) above += k != y && !(s[k] < s[y]);
        seen[y]++, hit[y] += above < 1;
    }
    loader_close(l);
    per_class = 0;
    for (int k = 0; k < 3; k++) per_class += seen[k] ? hit[k] / seen[k] : 0;
    EXPECT(seen[0] && seen[1] && seen[2] && hit[0] && hit[1] && hit[2], "the crafted classifier's own images are not all hits");
    EXPECT(fabs(r.per_class - per_class / 3) < 1e-12, "per-class %g with crafted rows, want %g (the mean over the 3 present classes)", r.per_class,
           per_class / 3);
    free(rows);
    free(f), free(classifier);
    tokenizer_free(tok);
    clip_model_free(&m);
}

// An eval set with no usable labelled image (every image corrupt): zero images, no NaN from 0 / 0.
static void test_zeroshot_no_valid_sample(void) {
    Config c;
    ClipModel m;
    tiny_model(&c, &m, 4, NULL);
    const char *cls[3] = {"0", "1", "0"};
    int bad[3] = {1, 1, 1};
    write_shard(test_path("zs-bad.tar"), 3, cls, bad);
    float *classifier = callocCheck((size_t)2 * c.embed_dim, sizeof(float));
    classifier[0] = 1, classifier[c.embed_dim + 1] = 1;
    Loader *l = loader_open(&c, test_path("zs-bad.tar"), 0, 4, 0, 1);
    ZeroShotResult r = eval_zeroshot(&m, classifier, 2, l);
    loader_close(l);
    EXPECT(r.n == 0 && r.top1 == 0 && r.top5 == 0 && r.per_class == 0 && r.majority == 0, "n %ld top1 %g top5 %g per-class %g majority %g",
           r.n, r.top1, r.top5, r.per_class, r.majority);
    free(classifier);
    clip_model_free(&m);
}

// Runs ./train_clip on the tiny config (CPU, batch 8, synthetic training data) with more arguments; returns its
// exit code (-1 if it did not exit), with stdout and stderr together in out.
static void write_text(const char *path, const char *text) {
    FILE *f = fopenCheck(path, "wb");
    fwriteCheck(text, 1, strlen(text), f);
    fcloseCheck(f);
}

static int run_train(const char *args, char *out, size_t cap) {
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "./train_clip -c configs/tiny.conf --set device=cpu --set batch_size=8 --set steps=2 --set log_every=1 %s 2>&1",
             args);
    return run_command(cmd, out, cap);
}

// Missing eval inputs (val_data or zeroshot_data shards, the class names file) stop the run before it trains,
// naming the file, not at the first evaluation after hours of training; --eval-only with nothing to evaluate is an
// error naming the keys.
static void test_missing_eval_inputs_stop_at_start(void) {
    const char *cls[1] = {"0"};
    write_shard(test_path("zs-ok.tar"), 1, cls, NULL);
    write_text(test_path("two.txt"), "cat\ndog\n");
    char args[3][1024], out[16384];
    snprintf(args[0], sizeof(args[0]), "--set val_data=%s --set run_dir=%s", test_path("missing-val.tar"), test_path("run_missing0"));
    snprintf(args[1], sizeof(args[1]), "--set zeroshot_data=%s --set zeroshot_classnames=%s --set run_dir=%s", test_path("zs-ok.tar"),
             test_path("missing-classes.txt"), test_path("run_missing1"));
    snprintf(args[2], sizeof(args[2]), "--set zeroshot_data=%s --set zeroshot_classnames=%s --set run_dir=%s", test_path("missing-zs.tar"),
             test_path("two.txt"), test_path("run_missing2"));
    const char *missing[3] = {"missing-val.tar", "missing-classes.txt", "missing-zs.tar"};
    for (int k = 0; k < 3; k++) {
        int rc = run_train(args[k], out, sizeof(out));
        EXPECT(rc == 1 && strstr(out, missing[k]) && !strstr(out, "step      1/"), "%s: exit %d, want 1 before the first step; output:\n%s",
               missing[k], rc, out);
    }
    snprintf(args[0], sizeof(args[0]), "--eval-only --set run_dir=%s", test_path("run_nothing"));
    int rc = run_train(args[0], out, sizeof(out));
    EXPECT(rc == 1 && strstr(out, "val_data") && strstr(out, "zeroshot_data"), "--eval-only without eval data: exit %d; output:\n%s", rc, out);
}

// An evaluation that stops the run (here a class index beyond the class names) comes after the step's
// checkpoint: the training it ends is saved.
static void test_checkpoint_before_eval(void) {
    const char *cls[2] = {"0", "5"};
    write_shard(test_path("zs-5.tar"), 2, cls, NULL);
    write_text(test_path("two.txt"), "cat\ndog\n");
    char args[1024], out[16384];
    snprintf(args, sizeof(args), "--set checkpoint_every=0 --set zeroshot_data=%s --set zeroshot_classnames=%s --set run_dir=%s",
             test_path("zs-5.tar"), test_path("two.txt"), test_path("run_ckpt"));
    int rc = run_train(args, out, sizeof(out));
    EXPECT(rc == 1 && strstr(out, "class 5") && strstr(out, "zeroshot_classnames"), "exit %d, want 1 naming class 5 and zeroshot_classnames; output:\n%s",
           rc, out);
    FILE *st = fopen(test_path("run_ckpt/checkpoints/step_00000002.state.safetensors"), "rb");
    EXPECT(st != NULL, "no checkpoint of step 2 before the evaluation stopped the run; output:\n%s", out);
    if (st) fclose(st);
}

// A zero-shot set without one classifiable image reports that, not a top-1 of 0% (which reads as a score), and
// logs no accuracies.
static void test_zeroshot_without_images(void) {
    const char *cls[2] = {NULL, "abc"};
    write_shard(test_path("zs-none.tar"), 2, cls, NULL);
    write_text(test_path("two.txt"), "cat\ndog\n");
    char args[1024], out[16384];
    snprintf(args, sizeof(args), "--set zeroshot_data=%s --set zeroshot_classnames=%s --set run_dir=%s", test_path("zs-none.tar"),
             test_path("two.txt"), test_path("run_none"));
    int rc = run_train(args, out, sizeof(out));
    EXPECT(rc == 0 && strstr(out, "no images with a class") && !strstr(out, "zero-shot top-1"), "exit %d; output:\n%s", rc, out);
    FILE *f = fopen(test_path("run_none/log.jsonl"), "r");
    char line[4096];
    int logged_top1 = 0, logged_n0 = 0;
    while (f && fgets(line, sizeof(line), f)) logged_top1 |= strstr(line, "zeroshot_top1") != NULL, logged_n0 |= strstr(line, "\"zeroshot_n\":0") != NULL;
    if (f) fclose(f);
    EXPECT(logged_n0 && !logged_top1, "log.jsonl: zeroshot_n 0 %s, zeroshot_top1 %s", logged_n0 ? "present" : "missing", logged_top1 ? "present" : "absent");
}

static void read_classnames_of(void *path) {
    int n;
    read_classnames(path, &n);
}

// Class names are numbered by their order: CRLF endings, a missing final newline, trailing blank lines, comments
// and UTF-8 are fine, but a blank line between two names would silently shift every class after it (or be a
// missing name), so it is an error naming the file and line. Whitespace-only lines count as blank.
static void test_read_classnames(void) {
    const char *ok[5] = {"cat\r\ndog\r\nbird\r\n\r\n", "cat\ndog\nbird", "# animals\n\ncat\n# pets\ndog\nbird\n  \n\n",
                         "cat\ndog\nbird\n\t\n", "cat\nd\xc3\xa9j\xc3\xa0 vu\nbird\n"};
    for (int k = 0; k < 5; k++) {
        write_text(test_path("names.txt"), ok[k]);
        int n;
        char **names = read_classnames(test_path("names.txt"), &n);
        EXPECT(n == 3 && !strcmp(names[0], "cat") && !strcmp(names[2], "bird") && (k == 4 || !strcmp(names[1], "dog")),
               "file %d: %d names, want cat dog bird", k, n);
        free_lines(names, n);
    }
    // a UTF-8 byte order mark (Windows editors write one) is not part of the first line: a comment stays a comment
    write_text(test_path("names.txt"), "\xef\xbb\xbf# animals\r\ncat\r\ndog\r\n");
    int n;
    char **names = read_classnames(test_path("names.txt"), &n);
    EXPECT(n == 2 && !strcmp(names[0], "cat") && !strcmp(names[1], "dog"), "file with a BOM: %d names, the first '%s'", n, names[0]);
    free_lines(names, n);
    const char *bad[2] = {"cat\n\ndog\nbird\n", "cat\ndog\n   \r\nbird\n"};
    int bad_line[2] = {2, 3};
    for (int k = 0; k < 2; k++) {
        write_text(test_path("names.txt"), bad[k]);
        char msg[1024], want[600];
        int rc = test_in_child(read_classnames_of, (void *)test_path("names.txt"), msg, sizeof(msg));
        snprintf(want, sizeof(want), "%s:%d", test_path("names.txt"), bad_line[k]);
        EXPECT(rc == 1 && strstr(msg, want), "blank line %d of file %d: exit %d, message '%s' (want it to name %s)", bad_line[k], k, rc, msg, want);
    }
}

// A class line with more alternative names than the classifier takes (256) is an error, not silently cut.
// (Through ./train_clip: a forked child of this process would deadlock in OpenMP, which the parent has used.)
static void test_too_many_alternatives(void) {
    const char *cls[1] = {"0"};
    write_shard(test_path("zs-alt.tar"), 1, cls, NULL);
    FILE *f = fopenCheck(test_path("alt.txt"), "w");
    for (int a = 0; a < 300; a++) fprintf(f, "%sn%d", a ? "|" : "", a);
    fprintf(f, "\n");
    fcloseCheck(f);
    char args[1024], out[16384];
    snprintf(args, sizeof(args), "--eval-only --set zeroshot_data=%s --set zeroshot_classnames=%s --set run_dir=%s", test_path("zs-alt.tar"),
             test_path("alt.txt"), test_path("run_alt"));
    int rc = run_train(args, out, sizeof(out));
    EXPECT(rc == 1 && strstr(out, "256") && strstr(out, "zeroshot_classnames"), "300 alternatives: exit %d; output:\n%s", rc, out);
}

static void test_read_lines(void) {
    write_text(test_path("classes.txt"), "# classes\nanimals\n\nbuildings\r\nfood\n");
    int n;
    char **lines = read_lines(test_path("classes.txt"), &n);
    EXPECT(n == 3 && !strcmp(lines[0], "animals") && !strcmp(lines[1], "buildings") && !strcmp(lines[2], "food"), "read %d lines", n);
    free_lines(lines, n);
}

// A diverged model's validation loss (NaN) is logged as null: log.jsonl stays JSON (a NaN would print as nan).
static void test_nan_val_loss_is_null(void) {
    char args[1024], out[16384], model[1024], err[512];
    snprintf(args, sizeof(args), "--set run_dir=%s", test_path("run_nan"));
    EXPECT(run_train(args, out, sizeof(out)) == 0, "training the weights failed:\n%s", out);
    snprintf(model, sizeof(model), "%s", test_path("run_nan/checkpoints/step_00000002.model.safetensors"));
    size_t len;
    uint8_t *bytes = read_whole_file(model, &len);
    StFile f;
    EXPECT(bytes && st_load(&f, model, err, sizeof(err)) == 0, "%s: %s", model, err);
    if (!bytes || !f.num_tensors) return free(bytes);
    const StTensor *t = st_find(&f, "visual.proj");  // every image embedding NaN
    EXPECT(t && !strcmp(t->dtype, "F32"), "%s: no F32 visual.proj", model);
    float nan = NAN;
    for (size_t i = t ? t->begin : 0; t && i < t->end; i += 4) memcpy(bytes + (f.data - (const uint8_t *)f.map) + i, &nan, 4);
    st_free(&f);
    FILE *w = fopenCheck(test_path("nan.safetensors"), "wb");
    fwriteCheck(bytes, 1, len, w);
    fcloseCheck(w);
    free(bytes);
    snprintf(args, sizeof(args), "--eval-only --set init_weights=%s --set val_data=synthetic --set run_dir=%s", test_path("nan.safetensors"),
             test_path("run_nan_eval"));
    int rc = run_train(args, out, sizeof(out));
    FILE *log = fopen(test_path("run_nan_eval/log.jsonl"), "r");
    char line[4096] = "";
    while (log && fgets(line, sizeof(line), log)) {}
    if (log) fclose(log);
    EXPECT(rc == 0 && strstr(line, "\"val_loss\":null") && !strstr(line, "nan"), "exit %d; eval record: %s", rc, line);
}

int main(void) {
    RUN(test_zeroshot_accuracy_counts);
    RUN(test_retrieval_recall);
    RUN(test_classifier_averages_templates);
    RUN(test_read_lines);
    RUN(test_read_classnames);
    RUN(test_too_many_alternatives);
    RUN(test_nan_features_are_misses);
    RUN(test_retrieval_against_reference);
    RUN(test_zeroshot_against_reference);
    RUN(test_zeroshot_no_valid_sample);
    RUN(test_missing_eval_inputs_stop_at_start);
    RUN(test_checkpoint_before_eval);
    RUN(test_zeroshot_without_images);
    RUN(test_nan_val_loss_is_null);
    TEST_EXIT();
}
