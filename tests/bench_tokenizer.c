// bench_tokenizer.c: tokenizer_encode throughput, captions/s per thread, on the parity fixture's
// captions (all of them, and the plain-ASCII ones, which is what most alt-text is), with 1 thread and
// with one per core: the first pass (every word new to the thread's cache), then repeated passes for
// about 2 s (warm cache, as in training). Needs data/bpe_simple_vocab_16e6.txt.gz;
// TRAIN_CLIP_TOKENIZER_FIXTURE picks another file in the fixture's format.
#include <pthread.h>
#include <unistd.h>

#include "../data/tokenizer.h"
#include "../model/utils.h"

#define T 77

static char **captions;
static int n_captions;
static Tokenizer *tok;

typedef struct {
    char **set;
    int n;
    double first_seconds, seconds;
    long done;
} Job;

static void *run(void *arg) {
    Job *j = arg;
    int32_t ids[T];
    double t0 = now_seconds();
    for (int i = 0; i < j->n; i++) tokenizer_encode(tok, j->set[i], ids, T);
    j->first_seconds = now_seconds() - t0;
    t0 = now_seconds();
    do {
        for (int i = 0; i < j->n; i++) tokenizer_encode(tok, j->set[i], ids, T);
        j->done += j->n;
        j->seconds = now_seconds() - t0;
    } while (j->seconds < 2.0);
    return NULL;
}

// Prints captions/s per thread with `threads` threads on set[0..n): first pass, then warm.
static void measure(const char *name, char **set, int n, int threads) {
    pthread_t th[64];
    Job jobs[64];
    for (int i = 0; i < threads; i++) {
        jobs[i] = (Job){set, n, 0, 0, 0};
        int rc = pthread_create(&th[i], NULL, run, &jobs[i]);
        if (rc) fatal("pthread_create failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
    }
    double first = 0, warm = 0;
    for (int i = 0; i < threads; i++) {
        int rc = pthread_join(th[i], NULL);
        if (rc) fatal("pthread_join failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
        first += n / jobs[i].first_seconds / threads;
        warm += jobs[i].done / jobs[i].seconds / threads;
    }
    printf("%-22s %8d %8d %12.0f %12.0f\n", name, n, threads, first, warm);
}

int main(void) {
    const char *path = getenv("TRAIN_CLIP_TOKENIZER_FIXTURE");
    if (!path || !*path) path = "tests/fixtures/tokenizer_parity.tsv";
    FILE *f = fopenCheck(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (line[0] == '#') continue;
        char *tab = strrchr(line, '\t');
        if (!tab || strstr(line, "\\x")) continue;  // skip captions with escapes (controls, non-UTF-8)
        *tab = '\0';
        captions = reallocCheck(captions, (size_t)(n_captions + 1) * sizeof(char *));
        captions[n_captions] = strdup(line);
        if (!captions[n_captions++]) fatal("strdup failed at %s:%d", __FILE__, __LINE__);
    }
    free(line);
    fcloseCheck(f);
    char **ascii = mallocCheck((size_t)n_captions * sizeof(char *));
    int n_ascii = 0;
    for (int i = 0; i < n_captions; i++) {
        int plain = 1;
        for (const char *p = captions[i]; *p && plain; p++) plain = (unsigned char)*p < 0x80;
        if (plain) ascii[n_ascii++] = captions[i];
    }
    tok = tokenizer_load(NULL);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1 || cores > 64) cores = cores < 1 ? 1 : 64;
    printf("tokenizer_encode on %s, context 77: captions/s per thread\n", path);
    printf("%-22s %8s %8s %12s %12s\n", "captions", "count", "threads", "first pass", "warm cache");
    for (int threads = 1; threads <= cores; threads = threads < cores && 2 * threads > cores ? (int)cores : 2 * threads) {
        measure("all (no escapes)", captions, n_captions, threads);
        measure("plain ASCII", ascii, n_ascii, threads);
    }
    tokenizer_free(tok);
    for (int i = 0; i < n_captions; i++) free(captions[i]);
    free(captions);
    free(ascii);
    return 0;
}
