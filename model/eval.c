// eval.c: zero-shot classification and retrieval evaluation (see eval.h).
#include "eval.h"

#include <math.h>
#include <string.h>

#include "ops_cpu.h"
#include "utils.h"

// The entries of a file (see read_lines); numbered: a blank line between two entries is an error (class names).
static char **read_entries(const char *path, int *count, int numbered) {
    FILE *f = fopenCheck(path, "r");
    char **lines = NULL, buf[4096];
    int n = 0, lineno = 0, blank = 0;  // blank: the last blank line after an entry
    while (fgets(buf, sizeof(buf), f)) {
        lineno++;
        size_t len = strlen(buf);
        if (len == sizeof(buf) - 1 && buf[len - 1] != '\n') fatal("%s:%d: line longer than %zu characters", path, lineno, sizeof(buf) - 2);
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = '\0';
        if (lineno == 1 && !strncmp(buf, "\xef\xbb\xbf", 3)) memmove(buf, buf + 3, (len -= 3) + 1);  // a UTF-8 byte order mark
        if (strspn(buf, " \t\r\v\f") == len) {
            if (n) blank = lineno;
            continue;
        }
        if (buf[0] == '#') continue;
        if (numbered && blank)
            fatal("%s:%d: blank line between class names: classes are numbered by their order, so it would shift every class "
                  "after it (or is a missing name); remove it or write the name", path, blank);
        lines = reallocCheck(lines, (size_t)(n + 1) * sizeof(char *));
        lines[n] = strdup(buf);
        if (!lines[n]) fatal("strdup failed at %s:%d", __FILE__, __LINE__);
        n++;
    }
    if (ferror(f)) fatal("%s: read error after line %d: %s", path, lineno, strerror(errno));
    fcloseCheck(f);
    if (n == 0) fatal("%s: no entries", path);
    *count = n;
    return lines;
}

char **read_lines(const char *path, int *count) { return read_entries(path, count, 0); }
char **read_classnames(const char *path, int *count) { return read_entries(path, count, 1); }

void free_lines(char **lines, int count) {
    for (int i = 0; i < count; i++) free(lines[i]);
    free(lines);
}

// The most samples one encode call takes: the model's training batch.
static int max_batch(const ClipModel *m) { return (int)m->cpu.cfg.batch_size; }

float *zeroshot_classifier(ClipModel *m, const Tokenizer *tok, char **classnames, int C, char **templates, int T) {
    int E = m->cpu.cfg.embed_dim, ctx = m->cpu.cfg.context_length, mb = max_batch(m);
    float *classifier = callocCheck((size_t)C * E, sizeof(float));
    int32_t *ids = mallocCheck((size_t)mb * ctx * sizeof(int32_t));
    float *feat = mallocCheck((size_t)mb * E * sizeof(float));
    char text[8192], names[8192];
    for (int c = 0; c < C; c++) {
        // the prompts of a class: every alternative name ("a|b|c") in every template
        snprintf(names, sizeof(names), "%s", classnames[c]);
        char *alt[256];
        int A = 0;
        for (char *save = NULL, *tok_s = strtok_r(names, "|", &save); tok_s; tok_s = strtok_r(NULL, "|", &save)) {
            if (A == 256) fatal("zeroshot_classnames: class %d ('%.40s...') has more than 256 alternative names", c, classnames[c]);
            alt[A++] = tok_s;
        }
        if (A == 0) fatal("zeroshot_classnames: class %d ('%s') has an empty name", c, classnames[c]);
        int P = A * T, filled = 0;
        for (int p = 0; p < P; p++) {
            const char *tpl = templates[p % T], *name = alt[p / T], *hole = strstr(tpl, "{}");
            if (hole) snprintf(text, sizeof(text), "%.*s%s%s", (int)(hole - tpl), tpl, name, hole + 2);
            else snprintf(text, sizeof(text), "%s %s", tpl, name);
            if (tokenizer_encode(tok, text, ids + (size_t)filled * ctx, ctx) < 0) fatal("zero-shot prompt '%s' (class %d of zeroshot_classnames) cannot be tokenized: not valid UTF-8, or empty", text, c);
            if (++filled < mb && p + 1 < P) continue;
            clip_model_encode_texts(m, ids, filled, feat);
            l2_normalize_forward(feat, NULL, feat, filled, E);
            for (int i = 0; i < filled; i++)
                for (int k = 0; k < E; k++) classifier[(size_t)c * E + k] += feat[(size_t)i * E + k] / P;
            filled = 0;
        }
    }
    l2_normalize_forward(classifier, NULL, classifier, C, E);
    free(ids), free(feat);
    return classifier;
}

// Rank of the true match (index i) among the n scores of row i; ties (and NaN scores) count against it.
static int rank_of(const double *row, long n, long i) {
    int rank = 0;
    for (long j = 0; j < n; j++) rank += j != i && !(row[j] < row[i]);
    return rank;
}

void zeroshot_accuracy(ZeroShotResult *r, long *seen, long *hit, const float *img_n, const int32_t *labels, int n,
                       const float *classifier, int C, int E) {
    double *score = mallocCheck((size_t)C * sizeof(double));
    for (int i = 0; i < n; i++) {
        int label = labels[i];
        if (label < 0) {
            r->unlabelled++;
            continue;
        }
        if (label >= C) fatal("zero-shot eval: an image of zeroshot_data has class %d, but zeroshot_classnames lists only %d classes (0..%d)", label, C, C - 1);
        for (int c = 0; c < C; c++) {
            double d = 0;
            for (int k = 0; k < E; k++) d += (double)img_n[(size_t)i * E + k] * classifier[(size_t)c * E + k];
            score[c] = d;
        }
        int rank = rank_of(score, C, label);
        r->top1 += rank < 1, r->top5 += rank < 5, r->n++;
        seen[label]++, hit[label] += rank < 1;
    }
    free(score);
}

ZeroShotResult eval_zeroshot(ClipModel *m, const float *classifier, int C, Loader *loader) {
    ZeroShotResult r = {0, 0, 0, 0, 0, 0};
    long *seen = callocCheck((size_t)C, sizeof(long)), *hit = callocCheck((size_t)C, sizeof(long));
    int E = m->cpu.cfg.embed_dim;
    float *feat = mallocCheck((size_t)max_batch(m) * E * sizeof(float));
    Batch b;
    int n;
    while ((n = loader_next(loader, &b)) > 0) {
        if (n > max_batch(m)) fatal("eval_zeroshot: loader batch %d exceeds the model's %d", n, max_batch(m));
        clip_model_encode_images(m, b.images, n, feat);
        l2_normalize_forward(feat, NULL, feat, n, E);
        zeroshot_accuracy(&r, seen, hit, feat, b.labels, n, classifier, C, E);
    }
    int present = 0;
    for (int c = 0; c < C; c++) {
        r.majority = fmax(r.majority, (double)seen[c]);
        if (seen[c]) r.per_class += (double)hit[c] / seen[c], present++;
    }
    if (r.n) r.top1 /= r.n, r.top5 /= r.n, r.majority /= r.n, r.per_class /= present;
    free(seen), free(hit);
    free(feat);
    return r;
}

void retrieval_recall(RetrievalResult *r, const float *img_n, const float *txt_n, long n, int E) {
    static const int ks[3] = {1, 5, 10};
    long hits_i2t[3] = {0}, hits_t2i[3] = {0};
#pragma omp parallel for schedule(dynamic, 16) reduction(+ : hits_i2t[:3], hits_t2i[:3])
    for (long i = 0; i < n; i++) {
        double *row = mallocCheck((size_t)n * sizeof(double)), *col = mallocCheck((size_t)n * sizeof(double));
        for (long j = 0; j < n; j++) {
            double a = 0, c = 0;
            for (int k = 0; k < E; k++) a += (double)img_n[i * E + k] * txt_n[j * E + k], c += (double)txt_n[i * E + k] * img_n[j * E + k];
            row[j] = a, col[j] = c;
        }
        int ri = rank_of(row, n, i), rt = rank_of(col, n, i);
        for (int k = 0; k < 3; k++) hits_i2t[k] += ri < ks[k], hits_t2i[k] += rt < ks[k];
        free(row), free(col);
    }
    for (int k = 0; k < 3; k++) r->image_to_text[k] = (double)hits_i2t[k] / n, r->text_to_image[k] = (double)hits_t2i[k] / n;
    r->n = n;
}

RetrievalResult eval_retrieval(ClipModel *m, Loader *loader, long max_pairs) {
    RetrievalResult r;
    memset(&r, 0, sizeof(r));
    int E = m->cpu.cfg.embed_dim;
    float *img = NULL, *txt = NULL;
    long n = 0, cap = 0;
    Batch b;
    int got;
    while ((max_pairs == 0 || n < max_pairs) && (got = loader_next(loader, &b)) > 0) {
        if (got > max_batch(m)) fatal("eval_retrieval: loader batch %d exceeds the model's %d", got, max_batch(m));
        if (max_pairs && n + got > max_pairs) got = (int)(max_pairs - n);
        if (n + got > cap) {
            cap = 2 * (n + got);
            img = reallocCheck(img, (size_t)cap * E * sizeof(float)), txt = reallocCheck(txt, (size_t)cap * E * sizeof(float));
        }
        clip_model_encode_images(m, b.images, got, img + (size_t)n * E);
        clip_model_encode_texts(m, b.tokens, got, txt + (size_t)n * E);
        // the loss of each batch, as training computes it, weighted by its pairs (open_clip's evaluate(): a short
        // last batch, whose loss is lower for having fewer negatives, counts for its pairs only)
        r.loss += (double)got * contrastive_loss(img + (size_t)n * E, txt + (size_t)n * E, clip_model_logit_scale(m), got, E, NULL, NULL, NULL);
        n += got;
    }
    if (n > 0) {
        r.loss /= n;
        l2_normalize_forward(img, NULL, img, (int)n, E), l2_normalize_forward(txt, NULL, txt, (int)n, E);
        retrieval_recall(&r, img, txt, n, E);
    }
    free(img), free(txt);
    return r;
}
